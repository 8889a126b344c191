"""simlabel's own errors: the ones a user can cause and fix.

Every exception simlabel raises on purpose for bad input derives from
:class:`SimlabelError`, and keeps the built-in base it always had (a bad catalog is
still a ``ValueError``, a missing data folder still a ``FileNotFoundError``), so code
that caught those keeps working. The command line prints a ``SimlabelError`` (or an
``OSError``) as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CatalogError",
    "ConfigError",
    "DataNotFound",
    "EmbedItemError",
    "InputError",
    "LabelFileError",
    "LockedError",
    "MissingIdsError",
    "ModelError",
    "SimlabelError",
    "SimlabelWarning",
    "StoreError",
]

#: how many offending ids a message lists before "and N more"
SHOW = 5


class SimlabelError(Exception):
    """Base of every error simlabel raises for input a user can fix."""


class SimlabelWarning(UserWarning):
    """Something a user should know about their input that does not stop the run."""


class InputError(SimlabelError, ValueError):
    """An argument or a value read from a file is out of its domain (the message says which)."""


class ConfigError(InputError):
    """A configuration field fails its declared check (see :mod:`simlabel.checks`)."""


class CatalogError(InputError):
    """The catalog cannot be used: the message names the file, row and column."""


class StoreError(InputError):
    """An embedding folder is missing, empty or inconsistent."""


class LabelFileError(InputError):
    """A label file cannot be used: the message names the file, row and id."""


class ModelError(SimlabelError, RuntimeError):
    """A model cannot be loaded or run as asked (missing weights, no CUDA device, an offline hub name)."""


class LockedError(SimlabelError, RuntimeError):
    """Another simlabel process is writing the same output (the message names its pid and start time)."""


class DataNotFound(SimlabelError, FileNotFoundError):
    """No data where simlabel was told (or expected) to find it."""


class EmbedItemError(SimlabelError, RuntimeError):
    """Raised in ``strict`` mode for the first item that cannot be embedded."""

    def __init__(self, item_id: str, path: str, reason: str, message: str) -> None:
        super().__init__(f"id {item_id!r} ({path}): {reason}: {message}")
        self.item_id, self.path, self.reason = item_id, path, reason


class MissingIdsError(SimlabelError, KeyError):
    """Ids asked for that an artifact (embeddings, an index, a graph) does not hold.

    A ``KeyError`` for code that catches one, but printed without ``KeyError``'s quotes.
    ``missing`` holds every missing id, ``source`` the artifact that lacks them.
    """

    def __init__(self, missing: Sequence[str], source: str, what: str = "id(s) not in it") -> None:
        self.missing = [str(m) for m in missing]
        self.source = source
        shown = ", ".join(repr(m) for m in self.missing[:SHOW])
        more = f" and {len(self.missing) - SHOW} more" if len(self.missing) > SHOW else ""
        self.message = f"{source}: {len(self.missing)} {what}: {shown}{more}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message
