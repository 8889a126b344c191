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
    """Base of every error simlabel raises for input a user can fix.

    Catch it to handle every such error in one place: the command line prints it as one
    line and exits non-zero, while any other exception is a bug and keeps its traceback.
    Each subclass also keeps the built-in base it always had (``ValueError``,
    ``KeyError``, ``FileNotFoundError`` ...), so code that caught those keeps working.

    Examples
    --------
    >>> from simlabel import SimlabelError, load_catalog
    >>> try:
    ...     load_catalog("no-such-catalog.csv")
    ... except SimlabelError as e:
    ...     print(type(e).__name__, "-", e)
    CatalogError - no-such-catalog.csv: file not found
    """


class SimlabelWarning(UserWarning):
    """Something a user should know about their input that does not stop the run."""


class InputError(SimlabelError, ValueError):
    """An argument or a value read from a file is out of its domain (the message says which)."""


class ConfigError(InputError):
    """A configuration field fails its declared check (see :mod:`simlabel.checks`)."""


class CatalogError(InputError):
    """Raised when a catalog cannot be used; the message names the file, row and column.

    Raised by :func:`simlabel.load_catalog` (a missing or unreadable file, a missing or
    unknown column, an empty or duplicated id, a bad ``rank`` or ``clean`` value ...) and
    by the functions that read a catalog through it. A ``ValueError`` (through
    :class:`InputError`).

    Examples
    --------
    >>> from simlabel import CatalogError, load_catalog
    >>> try:
    ...     load_catalog("no-such-catalog.csv")
    ... except CatalogError as e:
    ...     print(e)
    no-such-catalog.csv: file not found
    >>> issubclass(CatalogError, ValueError)
    True
    """


class StoreError(InputError):
    """Raised when an embedding folder (or an artifact made from one) is missing, empty or inconsistent.

    For example: no such folder, no shards in it, an unfinished ``embed`` job, shards of
    different widths, an id in two rows, a folder that holds another job, or an index or
    graph whose files disagree. A ``ValueError`` (through :class:`InputError`).

    Examples
    --------
    >>> from simlabel import StoreError, load_embeddings
    >>> try:
    ...     load_embeddings("no-such-folder")
    ... except StoreError as e:
    ...     print(e)
    no-such-folder: embedding folder not found (make one with `simlabel embed CATALOG --out no-such-folder`)
    """


class LabelFileError(InputError):
    """Raised when a label file cannot be used; the message names the file, row and id.

    For example: a missing file or column, an empty id, one id given two different labels,
    an id that is not in the embeddings, a file with no labelled row (see
    :func:`simlabel.read_labels`). A ``ValueError`` (through :class:`InputError`).

    Examples
    --------
    >>> from simlabel import LabelFileError, read_labels
    >>> try:
    ...     read_labels("no-such-labels.csv")
    ... except LabelFileError as e:
    ...     print(e)
    no-such-labels.csv: label file not found
    """


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
    """Raised for ids asked for that an artifact (embeddings, an index, a graph) does not hold.

    A ``KeyError`` for code that catches one, but printed without ``KeyError``'s quotes.
    The message gives the source, the number of missing ids and the first few of them
    (then "and N more").

    Parameters
    ----------
    missing : Sequence of str
        Every id asked for and not found; kept, as strings, in the attribute ``missing``.
    source : str
        The artifact that lacks them (e.g. an embedding folder), kept as ``source``.
    what : str, default "id(s) not in it"
        What the message says of the ids after their count.

    Attributes
    ----------
    missing : list of str
        Every missing id.
    source : str
        The artifact that lacks them.
    message : str
        The message ``str(error)`` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings, MissingIdsError
    >>> emb = Embeddings(["a", "b"], np.eye(2, dtype=np.float32), {"path": "emb/"})
    >>> try:
    ...     emb.rows(["b", "x", "y"])
    ... except MissingIdsError as e:
    ...     print(e)
    ...     print(e.missing, isinstance(e, KeyError))
    emb/: 2 id(s) have no embedding: 'x', 'y'
    ['x', 'y'] True
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
