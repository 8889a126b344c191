"""Run-wide switches, set for a block and restored after (``contextvars``, so threads and
async tasks see the value of the context they were started in).

The command line sets them from ``--wait``, ``--allow-partial``, ``--normalize-labels``,
``--storage-options`` and ``--single-writer``; in Python, ``with simlabel.context.modes(wait=True): ...``.
Each is read where it applies: the one-writer lock (:func:`simlabel.files.exclusive`), the completeness
check of embedding stores (:func:`simlabel.store.load_embeddings`), label cleaning
(:func:`simlabel.catalog.clean_label_values`), object storage (:mod:`simlabel.remote`, its credentials,
endpoint and one-writer rule).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

__all__ = ["ALLOW_PARTIAL", "NORMALIZE_LABELS", "SINGLE_WRITER", "STORAGE_OPTIONS", "WAIT_FOR_LOCKS", "modes", "setting"]

#: wait for another writer's lock instead of failing at once
WAIT_FOR_LOCKS: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_wait_for_locks", default=False)
#: read embedding stores whose embed job has not finished
ALLOW_PARTIAL: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_allow_partial", default=False)
#: fold label spellings that differ only in case or spaces
NORMALIZE_LABELS: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_normalize_labels", default=False)
#: fsspec's options for object storage URLs (credentials, ``client_kwargs={"endpoint_url": ...}``); empty: the
#: filesystem's own defaults, i.e. the standard environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...)
STORAGE_OPTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("simlabel_storage_options", default=None)
#: write to object storage that offers no conditional put, on the promise that no other process writes there
SINGLE_WRITER: contextvars.ContextVar[bool] = contextvars.ContextVar("simlabel_single_writer", default=False)


@contextlib.contextmanager
def setting(var: contextvars.ContextVar[Any], value: Any = True) -> Iterator[None]:
    """``var`` is ``value`` inside the block."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@contextlib.contextmanager
def modes(*, wait: bool = False, allow_partial: bool = False, normalize_labels: bool = False,
          storage_options: dict | None = None, single_writer: bool | None = None) -> Iterator[None]:
    """The switches for a block (what one command's options ask for); ``storage_options`` and ``single_writer``
    left ``None`` keep the value around the block (the command line's, set for the whole invocation)."""
    with contextlib.ExitStack() as stack:
        for var, value in ((WAIT_FOR_LOCKS, wait), (ALLOW_PARTIAL, allow_partial), (NORMALIZE_LABELS, normalize_labels),
                           (STORAGE_OPTIONS, storage_options), (SINGLE_WRITER, single_writer)):
            if value is not None:
                stack.enter_context(setting(var, value))
        yield
