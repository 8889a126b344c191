"""Thread counts of the numerical libraries, changed for a block and restored after.

No simlabel function changes a process-wide setting for good: FAISS's OpenMP pool and
torch's intra-op pool are set for the block that needs them (``threads=None`` leaves
them alone) and put back on the way out, exceptions included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["faiss_threads", "scoped_setting", "torch_threads"]


@contextlib.contextmanager
def scoped_setting(get: Callable[[], int], set_: Callable[[int], None], value: int | None) -> Iterator[None]:
    """``set_(value)`` for the block, then ``set_(get())`` as it was before; ``None`` changes nothing."""
    if value is None:
        yield
        return
    previous = get()
    set_(int(value))
    try:
        yield
    finally:
        set_(previous)


def torch_threads(threads: int | None) -> contextlib.AbstractContextManager[None]:
    """torch's intra-op thread count for the block."""
    import torch

    return scoped_setting(torch.get_num_threads, torch.set_num_threads, threads)


def faiss_threads(threads: int | None) -> contextlib.AbstractContextManager[None]:
    """FAISS's OpenMP thread count for the block."""
    import faiss

    return scoped_setting(faiss.omp_get_max_threads, faiss.omp_set_num_threads, threads)
