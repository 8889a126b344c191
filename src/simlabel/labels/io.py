"""Label files: CSV with ``id,label`` and, where a method makes them, more columns
(``step,source,via`` from augment, ``confidence`` from propagate, ``weight`` ...)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


class LabelFileError(ValueError):
    """A label file cannot be used: the message names the file, row and id."""


def read_csv_table(path: str | os.PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    """A small CSV (e.g. label descriptions, synset overrides) as strings, empty cells as ``""``.

    Raises :class:`LabelFileError` naming the file when it is missing (``"<path>: <what> not
    found"``), cannot be parsed, or lacks one of ``columns``.
    """
    p = Path(path)
    if not p.exists():
        raise LabelFileError(f"{p}: {what} not found")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LabelFileError(f"{p}: cannot parse as CSV: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelFileError(
            f"{p}: missing column(s) {', '.join(missing)}; need {','.join(columns)}; columns are {', '.join(map(str, df.columns))}"
        )
    return df


def read_labels(
    path: str | os.PathLike,
    *,
    label_col: str = "label",
    id_col: str = "id",
    known_ids: Sequence[str] | None = None,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """Read a label CSV as a DataFrame with string ``id`` and ``label`` (other columns kept).

    Errors name the file and row: missing columns, empty ids or labels, one id
    given two different labels. Exact duplicate rows are dropped. With
    ``known_ids`` every id must be among them (e.g. the ids of an embedding
    folder) unless ``allow_missing``, in which case unknown ids are dropped.
    """
    p = Path(path)
    if not p.exists():
        raise LabelFileError(f"{p}: label file not found")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LabelFileError(f"{p}: cannot parse as CSV: {e}") from e
    missing = [c for c in (id_col, label_col) if c not in df.columns]
    if missing:
        raise LabelFileError(f"{p}: missing column(s) {', '.join(missing)}; columns are {', '.join(df.columns)}")
    df = df.rename(columns={id_col: "id", label_col: "label"})
    df["id"] = df["id"].str.strip()
    df["label"] = df["label"].str.strip()
    for col in ("id", "label"):
        empty = (df[col] == "").to_numpy().nonzero()[0]
        if len(empty):
            r = int(empty[0])
            raise LabelFileError(f"{p}, row {r} (line {r + 2}): empty {col}")
    df = df.drop_duplicates(subset=["id", "label"]).reset_index(drop=True)
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        first = df.loc[dup, "id"].iloc[0]
        labels = sorted(df.loc[df["id"] == first, "label"])
        raise LabelFileError(f"{p}: id {first!r} has two labels: {', '.join(labels)}")
    if known_ids is not None:
        known = pd.Index(known_ids)
        unknown = ~df["id"].isin(known)
        if unknown.any():
            if not allow_missing:
                shown = ", ".join(df.loc[unknown, "id"].head(5))
                raise LabelFileError(f"{p}: {int(unknown.sum())} id(s) not in the embeddings, e.g. {shown}")
            df = df[~unknown].reset_index(drop=True)
    return df


def write_labels(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a label table atomically (``id,label`` first)."""
    from simlabel.store import atomic_write_text

    cols = ["id", "label"] + [c for c in df.columns if c not in ("id", "label")]
    buf = io.StringIO()
    df[cols].to_csv(buf, index=False)
    return atomic_write_text(path, buf.getvalue())
