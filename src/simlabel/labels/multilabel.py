r"""Multi-labels: the binary matrix :math:`Y \in \{0,1\}^{n \times L}` and the one ``|`` parser.

A multi-label is one binary label per value of an attribute (``"gender=Men"``,
``"usage=Casual"``; :func:`from_attributes`) or a set of names in one ``|``-separated
column (``"red|cotton"``; :func:`from_labels_column`). Every multi-label text simlabel
reads (catalog columns, clean sets, basis labels) goes through :func:`split_labels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simlabel.errors import CatalogError, LabelFileError
from simlabel.files import read_csv_table

__all__ = [
    "SEPARATOR",
    "MultiLabels",
    "from_attributes",
    "from_labels_column",
    "label_lists",
    "read_multilabel_file",
    "split_labels",
]

#: what separates the labels of one multi-label cell
SEPARATOR = "|"


@dataclass
class MultiLabels:
    """A binary multi-label matrix with its row ids and label names.

    ``Y[i, l] = 1`` when image ``ids[i]`` carries label ``labels[l]``, which is a
    value of attribute ``attribute_of[l]``.
    """

    ids: np.ndarray  # (n,) str
    Y: np.ndarray  # (n, L) uint8 0/1
    labels: list[str]  # L label names, e.g. "gender=Men"
    attribute_of: list[str]  # L attribute names, e.g. "gender"

    def __post_init__(self) -> None:
        if self.Y.ndim != 2 or self.Y.shape != (len(self.ids), len(self.labels)):
            raise ValueError(f"Y must have shape (len(ids), len(labels)) = ({len(self.ids)}, {len(self.labels)}), got {self.Y.shape}")
        if len(self.attribute_of) != len(self.labels):
            raise ValueError(f"attribute_of has {len(self.attribute_of)} entries for {len(self.labels)} labels")

    @property
    def attributes(self) -> list[str]:
        """Distinct attributes, in label order."""
        return list(dict.fromkeys(self.attribute_of))

    def positives_per_image(self) -> float:
        """Mean number of labels per image (paper 004: 3.40 clean, 1.28 noisy)."""
        return float(self.Y.sum(axis=1).mean()) if len(self.ids) else float("nan")


def split_labels(cell: object, sep: str = SEPARATOR) -> list[str]:
    """The labels of one cell: split on ``sep``, stripped, empty pieces and repeats dropped,
    sorted. NaN/None/blank give ``[]``."""
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return []
    return sorted({p.strip() for p in str(cell).split(sep)} - {""})


def _clean_values(column: pd.Series) -> np.ndarray:
    """Values as stripped strings, ``""`` for NaN/None/blank (they give no label)."""
    s = column.astype(object)
    missing = s.isna().to_numpy()
    vals = s.astype(str).str.strip().to_numpy(dtype=object)
    vals[missing] = ""
    return vals


def _check_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CatalogError(f"no column(s) {', '.join(missing)}; columns are {', '.join(map(str, table.columns))}")


def from_attributes(
    table: pd.DataFrame, attributes: Sequence[str], *, id_col: str = "id", min_count: int = 1
) -> MultiLabels:
    """One binary label ``"attr=value"`` per value of each attribute column.

    Empty or NaN values give no label (the image simply has fewer positives).
    Labels with fewer than ``min_count`` positives are dropped. Labels are
    sorted by attribute name, then by value, so the order does not depend on
    the order of ``attributes`` or of the rows.
    """
    _check_columns(table, [id_col, *attributes])
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    n = len(table)
    blocks: list[tuple[str, str, np.ndarray]] = []
    for attr in sorted(set(attributes)):
        vals = _clean_values(table[attr])
        present = vals != ""
        # One-hot by integer codes: codes index the sorted distinct values of the column.
        uniq, codes = np.unique(vals[present].astype(str), return_inverse=True)
        onehot = np.zeros((n, len(uniq)), dtype=np.uint8)
        onehot[np.flatnonzero(present), codes] = 1
        for j, v in enumerate(uniq):
            blocks.append((attr, str(v), onehot[:, j]))
    kept = [b for b in blocks if int(b[2].sum()) >= min_count]
    Y = np.stack([b[2] for b in kept], axis=1) if kept else np.zeros((n, 0), dtype=np.uint8)
    return MultiLabels(
        ids=table[id_col].astype(str).to_numpy(),
        Y=Y.astype(np.uint8, copy=False),
        labels=[f"{a}={v}" for a, v, _ in kept],
        attribute_of=[a for a, _, _ in kept],
    )


def from_labels_column(table: pd.DataFrame, column: str = "labels", sep: str = SEPARATOR, id_col: str = "id") -> MultiLabels:
    """Labels from one ``sep``-separated column, e.g. ``"gender=Men|usage=Casual"``.

    Labels are sorted; ``attribute_of`` is the part before the first ``=``, or
    the label itself when it has none. Empty/NaN cells and empty pieces give no
    label; a label repeated in a cell counts once.
    """
    _check_columns(table, [column, id_col])
    rows = [split_labels(cell, sep) for cell in table[column]]
    labels = sorted({lab for r in rows for lab in r})
    pos = {lab: j for j, lab in enumerate(labels)}
    Y = np.zeros((len(table), len(labels)), dtype=np.uint8)
    ri = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    ci = np.fromiter((pos[lab] for r in rows for lab in r), dtype=np.intp, count=len(ri))
    Y[ri, ci] = 1
    return MultiLabels(
        ids=table[id_col].astype(str).to_numpy(),
        Y=Y,
        labels=labels,
        attribute_of=[lab.split("=", 1)[0] if "=" in lab else lab for lab in labels],
    )


def read_multilabel_file(
    path: str | os.PathLike, labels: Sequence[str], *, id_col: str = "id", col: str = "labels", what: str = "label file"
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A CSV ``id,labels`` (``|``-separated label names) as ``(ids, Y, table)``.

    ``Y`` is ``(n, L)`` uint8 over ``labels`` (in that order); ``table`` the file as read,
    for its other columns. A label name not in ``labels`` is an error naming the file
    and line.
    """
    df = read_csv_table(path, (id_col, col), what)
    index = {name: j for j, name in enumerate(labels)}
    Y = np.zeros((len(df), len(labels)), np.uint8)
    for r, value in enumerate(df[col]):
        for name in split_labels(value):
            if name not in index:
                shown = ", ".join(list(labels)[:8])
                raise LabelFileError(f"{path}, line {r + 2}: unknown label {name!r} (known: {shown} ...)")
            Y[r, index[name]] = 1
    return df[id_col].str.strip().to_numpy(dtype=object), Y, df


def label_lists(Y: np.ndarray) -> list[list[int]]:
    """Each row's positive label indices, the format cleanlab's multi-label functions take."""
    Y = np.asarray(Y)
    rows, cols = np.nonzero(Y)
    splits = np.searchsorted(rows, np.arange(1, Y.shape[0]))
    return [part.tolist() for part in np.split(cols, splits)]
