"""Label files: CSV with ``id,label`` and, where a method makes them, more columns
(``step,source,via`` from augment, ``confidence`` from propagate, ``weight`` ...)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import catalog_file, clean_label_values, read_table
from simlabel.errors import LabelFileError, SimlabelWarning
from simlabel.files import atomic_write_text, read_csv_table

__all__ = ["LabelFileError", "labels_csv", "read_holdout", "read_id_list", "read_labels", "write_labels"]


def known(ids: pd.Series | Sequence[str], known_ids: Sequence[str] | np.ndarray | pd.Index) -> np.ndarray:
    """``(len(ids),)`` bool: which of ``ids`` are among ``known_ids``, by one hash of the known ids as Python
    objects (``Series.isin`` on pandas' Arrow strings converts every known id first: 2.5 s at a million)."""
    index = known_ids if isinstance(known_ids, pd.Index) and known_ids.dtype == object else \
        pd.Index(np.asarray(known_ids, dtype=object), dtype=object)
    return pd.Index(np.asarray(ids, dtype=object), dtype=object).isin(index)


def read_labels(
    path: str | os.PathLike,
    *,
    label_col: str = "label",
    id_col: str = "id",
    known_ids: Sequence[str] | None = None,
    allow_missing: bool = False,
    keep_rows: bool = False,
    normalize: bool | None = None,
) -> pd.DataFrame:
    r"""Read a label file as a DataFrame with string ``id`` and ``label`` columns (other columns kept).

    Rows whose label is missing (empty, ``NaN``, ``None``, ``NULL``, ``N/A``, ``NA``, ``<NA>``, in
    any case) are unlabelled: they are left out, with a :class:`~simlabel.errors.SimlabelWarning` saying
    how many and the line of the first. Exact duplicate rows (same ``id`` and ``label``) are
    dropped silently. Ids and labels are stripped of surrounding spaces; every value is read as
    text, so an id like ``007`` keeps its zeros.

    Parameters
    ----------
    path : str or os.PathLike
        The label CSV, or a catalog: a CSV/TSV/Parquet table or a folder with ``catalog.csv`` or
        ``catalog.parquet`` (so a catalog with ``label_col="article_type"`` needs no hand-made
        label file).
    label_col : str, default "label"
        The column holding the labels; renamed to ``label`` (a catalog's own ``label`` column is
        dropped when another one is asked for).
    id_col : str, default "id"
        The column holding the ids; renamed to ``id``.
    known_ids : sequence of str, optional
        When given, every id must be among them (e.g. the ids of an embedding folder), unless
        ``allow_missing``.
    allow_missing : bool, default False
        With ``known_ids``: drop the ids not among them instead of raising.
    keep_rows : bool, default False
        Keep a ``_row`` column: the 0-based data row of the file each row came from (for
        messages about rows after some were dropped).
    normalize : bool, optional
        Fold spellings of one label that differ only in case or spaces into the most frequent
        one; without it they give a warning naming them. ``None`` (default): as set by
        :func:`simlabel.context.modes` (off by default).

    Returns
    -------
    pandas.DataFrame
        One row per labelled id: ``id`` and ``label`` (str), then the file's other columns
        (as text), and ``_row`` with ``keep_rows``.

    Raises
    ------
    LabelFileError
        Naming the file and row: a missing file or column, an empty file or one with a header
        and no rows, an empty id, one id given two different labels, an id not in
        ``known_ids``, a file with no labelled row, or a file of an incomplete output set.
    CatalogError
        A TSV or Parquet catalog that cannot be read (unparsable, not UTF-8, wrong column types).

    See Also
    --------
    write_labels : Write a label table.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from simlabel import read_labels
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "seeds.csv"
    >>> _ = path.write_text("id,label,note\n007, Shirts ,a\n008,Shoes,\n008,Shoes,\n")
    >>> read_labels(path)
        id   label note
    0  007  Shirts    a
    1  008   Shoes
    >>> read_labels(path, known_ids=["007"], allow_missing=True)["id"].tolist()
    ['007']
    >>> tmp.cleanup()
    """
    df, p = read_label_table(path, (id_col, label_col), label_col=label_col)
    if label_col != "label" and "label" in df.columns:
        df = df.drop(columns="label")  # the catalog's own `label` column is not the one asked for
    df = df.rename(columns={id_col: "id", label_col: "label"})
    df["_row"] = np.arange(len(df))  # the file's row, for messages after rows are dropped
    df["id"] = df["id"].str.strip()
    empty = (df["id"] == "").to_numpy().nonzero()[0]
    if len(empty):
        r = int(empty[0])
        raise LabelFileError(f"{p}, row {r} (line {r + 2}): empty id")
    df["label"] = clean_label_values(df["label"], str(p), normalize=normalize)
    unlabelled = (df["label"] == "").to_numpy()
    if unlabelled.any():
        if unlabelled.all():
            raise LabelFileError(f"{p}: no row has a label (every {label_col!r} cell is empty, NaN, None, NULL or N/A)")
        first = int(np.flatnonzero(unlabelled)[0])
        warnings.warn(f"{p}: {int(unlabelled.sum())} row(s) have no label (empty, NaN, None, NULL or N/A; the first at "
                      f"line {first + 2}) and are left out", SimlabelWarning, stacklevel=2)
        df = df[~unlabelled].reset_index(drop=True)
    df = df.drop_duplicates(subset=["id", "label"]).reset_index(drop=True)
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup, "id"].iloc[0]
        labels = sorted(df.loc[df["id"] == first, "label"])
        raise LabelFileError(f"{p}: id {first!r} has two labels: {', '.join(labels)}")
    if known_ids is not None:
        unknown = ~known(df["id"], known_ids)
        if unknown.any():
            if not allow_missing:
                shown = ", ".join(df.loc[unknown, "id"].head(5))
                raise LabelFileError(f"{p}: {int(unknown.sum())} id(s) not in the embeddings, e.g. {shown}")
            df = df[~unknown].reset_index(drop=True)
    return df if keep_rows else df.drop(columns="_row")


def read_label_table(path: str | os.PathLike, columns: Sequence[str], *, label_col: str = "label",
                     what: str = "label file") -> tuple[pd.DataFrame, Path]:
    """The table behind a label input and the file it came from: a CSV read as text, or a
    catalog (a Parquet/TSV file, or a folder holding ``catalog.csv`` / ``catalog.parquet``).

    The errors name the file and, when a column is missing, say which option selects it.
    """
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in (".parquet", ".pq", ".tsv"):
        p = catalog_file(p, LabelFileError)
        if p.suffix.lower() == ".csv":
            df = read_csv_table(p, (), what)
        else:
            df = read_table(p)
            if df.empty:
                raise LabelFileError(f"{p}: {what} has a header ({', '.join(map(str, df.columns))}) but no rows")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise LabelFileError(f"{p}: no column {missing[0]!r}; columns are {', '.join(map(str, df.columns))}"
                                 + (" (choose the labels with `label_col`)" if missing[0] == label_col else ""))
        for c in columns:
            df[c] = df[c].astype(str)
        return df, p
    try:
        return read_csv_table(p, columns, what), p
    except LabelFileError as e:
        if "missing column" not in str(e) or label_col not in str(e).split(";")[0]:
            raise
        raise LabelFileError(f"{e} (choose the label column with `label_col`)") from None


def read_id_list(path: str | os.PathLike, *, id_col: str = "id", what: str = "id list") -> list[str]:
    """The ids of a CSV with an ``id`` column (other columns ignored), stripped, blanks dropped."""
    df = read_csv_table(path, (id_col,), what)
    ids = df[id_col].str.strip()
    return ids[ids != ""].tolist()


def labels_csv(df: pd.DataFrame) -> str:
    """A label table as CSV text, ``id`` (and ``label``, when there is one) first."""
    first = [c for c in ("id", "label") if c in df.columns]
    buf = io.StringIO()
    df[first + [c for c in df.columns if c not in first]].to_csv(buf, index=False)
    return buf.getvalue()


def write_labels(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a label table as CSV, atomically, with ``id`` and ``label`` first.

    The text goes to a temporary file beside ``path`` that is then renamed onto it, so a reader
    never sees half a file; the other columns follow in their order, without the index.

    Parameters
    ----------
    df : pandas.DataFrame
        The label table: ``id`` and (when there is one) ``label`` are written first.
    path : str or os.PathLike
        The CSV file to write (missing folders are made); an existing file is replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OSError
        When the file cannot be written (the old file, if any, is left as it was).

    See Also
    --------
    read_labels : Read a label file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> from simlabel import write_labels
    >>> tmp = tempfile.TemporaryDirectory()
    >>> table = pd.DataFrame({"score": [0.9], "label": ["Shirts"], "id": ["007"]})
    >>> print(write_labels(table, Path(tmp.name) / "labels.csv").read_text(), end="")
    id,label,score
    007,Shirts,0.9
    >>> tmp.cleanup()
    """
    return atomic_write_text(path, labels_csv(df))


def read_holdout(path: str | os.PathLike, *, known_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """A holdout file: a list of ids (``id`` column; other columns, e.g. ``label``, kept).

    Ids not in ``known_ids`` are an error naming them; blank ids are dropped; a repeated id
    counts once.
    """
    p = Path(path)
    df = read_csv_table(p, ("id",), "holdout file")
    df["id"] = df["id"].str.strip()
    df = df[df["id"] != ""].drop_duplicates(subset="id").reset_index(drop=True)
    if known_ids is not None:
        unknown = ~known(df["id"], known_ids)
        if unknown.any():
            shown = ", ".join(df.loc[unknown, "id"].head(5))
            raise LabelFileError(f"{p}: {int(unknown.sum())} holdout id(s) not in the embeddings, e.g. {shown}")
    if "label" in df.columns:
        df["label"] = df["label"].str.strip()
    return df
