"""Run-wide switches, set for a block and restored after (``contextvars``, so threads and
async tasks see the value of the context they were started in).

The command line sets them from ``--wait``, ``--allow-partial`` and ``--normalize-labels``;
in Python, ``with simlabel.context.modes(wait=True): ...``. Each is read where it applies:
the one-writer lock (:func:`simlabel.files.exclusive`), the completeness check of embedding
stores (:func:`simlabel.store.load_embeddings`), label cleaning
(:func:`simlabel.catalog.clean_label_values`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["ALLOW_PARTIAL", "NORMALIZE_LABELS", "WAIT_FOR_LOCKS", "modes", "setting"]

#: wait for another writer's lock instead of failing at once
WAIT_FOR_LOCKS: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_wait_for_locks", default=False)
#: read embedding stores whose embed job has not finished
ALLOW_PARTIAL: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_allow_partial", default=False)
#: fold label spellings that differ only in case or spaces
NORMALIZE_LABELS: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_normalize_labels", default=False)


@contextlib.contextmanager
def setting(var: contextvars.ContextVar[bool], value: bool = True) -> Iterator[None]:
    """``var`` is ``value`` inside the block."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@contextlib.contextmanager
def modes(*, wait: bool = False, allow_partial: bool = False, normalize_labels: bool = False) -> Iterator[None]:
    """All three switches for a block (what one command's options ask for)."""
    with setting(WAIT_FOR_LOCKS, wait), setting(ALLOW_PARTIAL, allow_partial), setting(NORMALIZE_LABELS, normalize_labels):
        yield
