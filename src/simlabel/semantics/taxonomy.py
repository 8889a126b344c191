"""Label trees: reading a taxonomy and the tree distance between classes.

A taxonomy gives each class a path from (below) the root, e.g.
``Apparel > Topwear > Tshirts``; the distance of two classes is the number of edges
between them through their lowest common ancestor. Paper 002 turns it into soft
targets (:func:`simlabel.labels.smoothing.taxonomy_targets`) and simlabel reports
the mistake severity of a classifier with it (:func:`simlabel.metrics.mistake_severity`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simlabel.errors import InputError, LabelFileError
from simlabel.files import read_csv_table

__all__ = ["TAXONOMY_SEPARATOR", "read_taxonomy", "taxonomy_distance", "taxonomy_from_columns", "taxonomy_matrix"]

TAXONOMY_SEPARATOR = ">"


def taxonomy_distance(paths: Sequence[Sequence[str]]) -> np.ndarray:
    """Tree distance between classes: ``(C, C)`` int32, the number of edges between two
    nodes through their lowest common ancestor.

    ``paths[i]`` is the path of class ``i`` from (below) the root, e.g.
    ``("Apparel", "Topwear", "Tshirts")``; all top levels hang from one implicit root.
    With ``l`` the length of the common prefix of two paths of depths ``a`` and ``b``,
    ``d = (a - l) + (b - l)``: 0 for the same node, 2 for siblings, 4 for cousins,
    ``a + b`` across top levels. Paths may have different depths (``("A", "x")`` and
    ``("A", "B", "y")`` are 3 apart; a class may even be an ancestor of another, 1 apart
    from its child); two classes may not share a path.
    """
    paths = list(paths)
    if not paths:
        raise InputError("no taxonomy paths")
    tuples = []
    for i, p in enumerate(paths):
        if isinstance(p, str):
            # a str is a Sequence[str] of characters: almost surely "A/B/C" not split
            raise TypeError(f"taxonomy path {i} is the string {p!r}; give a sequence of levels, e.g. {tuple(p.split('/'))!r}")
        t = tuple(str(x) for x in p)
        if not t:
            raise InputError(f"taxonomy path {i} is empty")
        tuples.append(t)
    first: dict[tuple[str, ...], int] = {}
    for i, t in enumerate(tuples):
        if t in first:
            raise InputError(f"classes {first[t]} and {i} have the same taxonomy path {t!r}")
        first[t] = i
    depth = np.array([len(t) for t in tuples], dtype=np.int32)
    max_depth = int(depth.max())
    # node id of each class's ancestor at every level (-1 below its own depth); since a
    # node's id fixes all its ancestors, the common prefix length is the number of
    # levels at which the ids agree
    ids = np.full((len(tuples), max_depth), -1, dtype=np.int64)
    for level in range(max_depth):
        codes: dict[tuple[str, ...], int] = {}
        for i, t in enumerate(tuples):
            if len(t) > level:
                ids[i, level] = codes.setdefault(t[: level + 1], len(codes))
    common = np.zeros((len(tuples), len(tuples)), dtype=np.int32)
    for level in range(max_depth):
        col = ids[:, level]
        common += (col[:, None] == col[None, :]) & (col[:, None] >= 0)
    return (depth[:, None] + depth[None, :] - 2 * common).astype(np.int32)




def read_taxonomy(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """A CSV ``label,path`` (``path`` levels separated by ``>``) as label -> path tuple."""
    p = Path(path)
    df = read_csv_table(p, ("label", "path"), "taxonomy file")
    out: dict[str, tuple[str, ...]] = {}
    for row, (label, tree_path) in enumerate(zip(df["label"].str.strip(), df["path"])):
        parts = tuple(x.strip() for x in tree_path.split(TAXONOMY_SEPARATOR) if x.strip())
        if not label or not parts:
            raise LabelFileError(f"{p}, line {row + 2}: empty label or path")
        if label in out:
            raise LabelFileError(f"{p}, line {row + 2}: label {label!r} given twice")
        out[label] = parts
    return out


def taxonomy_from_columns(table, columns: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Label -> path from catalog columns ordered root to leaf (the last is the label), e.g.
    ``["master_category", "sub_category", "article_type"]``; each label takes its most frequent path."""
    cols = list(columns)
    counts = table[cols].astype(str).value_counts()
    out: dict[str, tuple[str, ...]] = {}
    for path in counts.index:  # most frequent first
        out.setdefault(path[-1], tuple(path))
    return out


def taxonomy_matrix(classes: Sequence[str], taxonomy: str | os.PathLike | Mapping[str, Sequence[str]]) -> np.ndarray:
    """The (C, C) tree distance between ``classes`` given a taxonomy file or mapping.

    A class missing from the taxonomy is an error naming it, since a silent default
    distance would bias both the targets and the mistake-severity metric.
    """
    mapping = read_taxonomy(taxonomy) if isinstance(taxonomy, (str, os.PathLike)) else taxonomy
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise InputError(f"{len(missing)} class(es) not in the taxonomy, e.g. {', '.join(map(str, missing[:5]))}")
    return taxonomy_distance([tuple(mapping[c]) for c in classes])
