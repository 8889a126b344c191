"""Writing files atomically, and reading the small CSV files users hand simlabel.

Every file simlabel writes goes to a temporary name in the target's folder and is
renamed into place (``os.replace`` is atomic on POSIX), so a crash never leaves a half
written file under the final name. Every small CSV it reads (label files, holdouts,
descriptions, synset overrides, taxonomies) goes through :func:`read_csv_table`, whose
messages name the file, and the row and column where it can.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from simlabel.errors import LabelFileError

__all__ = ["atomic_path", "atomic_write", "atomic_write_json", "atomic_write_text", "read_csv_table"]


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed onto ``final``.

    On any exception the temporary file is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (unknown types via ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_csv_table(path: str | os.PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    """A small CSV as strings, empty cells as ``""``, with the ``columns`` it must have.

    Parameters
    ----------
    path
        The CSV file.
    columns
        Columns that must be present (others are kept).
    what
        What the file is, for messages (``"label file"``, ``"holdout file"`` ...).

    Raises
    ------
    LabelFileError
        Naming the file when it is missing or a folder, cannot be parsed, has no header,
        or lacks one of ``columns``.
    """
    p = Path(path)
    if p.is_dir():
        raise LabelFileError(f"{p}: is a folder; expected a {what} (a CSV file)")
    if not p.exists():
        raise LabelFileError(f"{p}: {what} not found")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LabelFileError(f"{p}: {what} is empty (no header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LabelFileError(f"{p}: cannot parse {what} as CSV: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelFileError(
            f"{p}: {what} is missing column(s) {', '.join(missing)}; columns are {', '.join(map(str, df.columns))}"
        )
    return df
