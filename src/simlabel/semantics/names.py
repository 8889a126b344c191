r"""Class names as text: cleaning, one check, embedding, similarity and nearest labels.

Papers 002 and 003 both stand on this: paper 002 turns the similarity of category-name
embeddings into soft targets (:mod:`simlabel.labels.smoothing`), paper 003 blends it
with WordNet (:mod:`simlabel.semantics.categories`) and the title search queries with
the cleaned names (:mod:`simlabel.labels.search`).

With :math:`e_i` the text embedding of class name :math:`i`, the label similarity is
the cosine :math:`s_{ij} = e_i^\top e_j / (\|e_i\| \|e_j\|)`, and :math:`N_K(i)` the
:math:`K` labels of largest :math:`s_{ij}`, :math:`j \ne i`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simlabel.errors import InputError, LabelFileError
from simlabel.files import read_csv_table

if TYPE_CHECKING:  # the encoders pull in torch; only embed_label_names needs them
    from simlabel.encoders.base import TextEncoder

__all__ = [
    "check_names",
    "clean_label_name",
    "embed_label_names",
    "label_similarity",
    "load_descriptions",
    "nearest_labels",
    "square_matrix",
]


def check_names(names: Sequence[str], what: str = "label name", plural: str | None = None) -> list[str]:
    """The one check of a list of class names: a non-empty sequence of distinct strings,
    none empty once cleaned (:func:`clean_label_name`). Returns them as a list.

    Raises
    ------
    TypeError
        For a bare string (a sequence of characters) or a name that is not a ``str``.
    InputError
        For an empty list, a blank name or a name given twice, naming its positions.
    """
    if isinstance(names, str):
        raise TypeError(f"{plural or what + 's'} must be a sequence of names, not one string: {names!r}")
    names = list(names)
    if not names:
        raise InputError(f"no {plural or what + 's'}")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise TypeError(f"{what} {i} is {type(n).__name__}, not str: {n!r}")
        if not clean_label_name(n):
            raise InputError(f"{what} {i} ({n!r}) is empty")
        if n in seen:
            raise InputError(f"{what} {n!r} appears twice (positions {seen[n]} and {i})")
        seen[n] = i
    return names


_SEPARATORS = re.compile(r"[_\-]+")
_SPACES = re.compile(r"\s+")


def clean_label_name(name: str) -> str:
    """The text embedded for a class name: underscores and hyphens become spaces,
    runs of whitespace one space, ends stripped (``"casual_shoes"`` -> ``"casual shoes"``).
    Words are left alone (``"Tshirts"`` stays ``"Tshirts"``): the encoder's tokenizer
    handles case and compounds better than any rule here would."""
    return _SPACES.sub(" ", _SEPARATORS.sub(" ", str(name))).strip()


def embed_label_names(
    names: Sequence[str],
    encoder: TextEncoder | str = "minilm",
    *,
    descriptions: Mapping[str, str] | None = None,
    device: str = "auto",
) -> np.ndarray:
    """Embed class names: ``(C, d)`` float32, rows of unit norm, in the order of ``names``.

    Each name is cleaned with :func:`clean_label_name`. When ``descriptions`` has a
    non-empty entry for a name (keyed by the name as given), the text embedded is
    ``"<cleaned name>: <description>"`` instead, which disambiguates short or cryptic
    names (e.g. ``"Flip Flops: open rubber sandals"``). Descriptions of names not in
    ``names`` are ignored, so one file can serve several label sets.

    ``encoder`` is a spec for :func:`simlabel.encoders.get_text_encoder` (``"minilm"``,
    ``"clip:NAME_OR_PATH"``, ...; built on ``device``) or an encoder object, any callable
    ``list[str] -> (C, d)``.
    """
    names = check_names(names)
    texts = []
    for n in names:
        clean = clean_label_name(n)
        desc = (descriptions or {}).get(n)
        desc = desc.strip() if isinstance(desc, str) else ""
        texts.append(f"{clean}: {desc}" if desc else clean)
    if isinstance(encoder, str):
        from simlabel.encoders import get_text_encoder

        encoder = get_text_encoder(encoder, device)
    emb = np.asarray(encoder(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise InputError(f"the text encoder returned shape {emb.shape} for {len(names)} names; expected ({len(names)}, d)")
    if not np.isfinite(emb).all():
        raise InputError("the text encoder returned non-finite values")
    norms = np.linalg.norm(emb, axis=1)
    if (norms == 0).any():
        raise InputError(f"the text encoder returned a zero vector for {names[int(np.argmin(norms))]!r}")
    # normalise again: an encoder object need not normalise, and float32 drift is cheap to remove
    return emb / norms[:, None]


def load_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """Read label descriptions from a CSV with columns ``label,description`` (others ignored).

    Labels and descriptions are stripped; rows with an empty description are dropped
    (the name alone is embedded). Raises :class:`~simlabel.errors.LabelFileError`
    (a ``ValueError``) naming the file and line for a missing file or column, an empty
    label, or a label given twice.
    """
    p = Path(path)
    df = read_csv_table(p, ("label", "description"), "description file")
    labels = df["label"].str.strip()
    descs = df["description"].str.strip()
    empty = np.flatnonzero((labels == "").to_numpy())
    if len(empty):
        r = int(empty[0])
        raise LabelFileError(f"{p}, row {r} (line {r + 2}): empty label")
    dup = labels.duplicated(keep=False).to_numpy()
    if dup.any():
        first = labels[dup].iloc[0]
        lines = [int(r) + 2 for r in np.flatnonzero((labels == first).to_numpy())]
        raise LabelFileError(f"{p}: label {first!r} is described twice (lines {', '.join(map(str, lines))})")
    return {lab: d for lab, d in zip(labels, descs) if d}


# -- similarity and neighbours ----------------------------------------------------------------


def square_matrix(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` as a finite square float64 matrix, or an error naming ``what``."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InputError(f"{what} must be a square (C, C) matrix; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{what} has non-finite values")
    return a


def label_similarity(label_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of label embeddings: ``S = X X^T`` over unit rows, ``(C, C)`` float64.

    Rows are normalised here (so any embedding works), the result is made exactly
    symmetric, clipped to ``[-1, 1]`` and given a diagonal of exactly 1.
    """
    x = np.asarray(label_embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"label embeddings must be (C, d); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("label embeddings have non-finite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise InputError(f"label embedding {int(np.argmin(norms))} is all zeros")
    x = x / norms[:, None]
    s = x @ x.T
    # float rounding leaves s slightly asymmetric and |s| slightly above 1; both would
    # leak into neighbour order and weights
    s = np.clip(0.5 * (s + s.T), -1.0, 1.0)
    np.fill_diagonal(s, 1.0)
    return s


def nearest_labels(similarity: np.ndarray, k: int, *, include_self: bool = False) -> np.ndarray:
    """The ``k`` most similar labels of each label: ``(C, k)`` int64, most similar first.

    Row ``i`` ranks ``similarity[i]`` in decreasing order; equal similarities are ordered
    by index (a stable order, so the neighbour sets do not depend on the sort algorithm).
    Label ``i`` itself is left out, or, with ``include_self``, put first whatever its
    similarity. ``k`` is clipped to ``C - 1`` (``C`` with ``include_self``).
    """
    s = square_matrix(similarity, "similarity")
    if k < 0:
        raise InputError(f"k must be >= 0; got {k}")
    c = s.shape[0]
    k = int(min(k, c if include_self else c - 1))
    if k == 0:
        return np.zeros((c, 0), dtype=np.int64)
    s = s.copy()
    np.fill_diagonal(s, np.inf if include_self else -np.inf)
    if k >= c - 1:
        # (nearly) everything is wanted: one stable sort of -s ranks by value then index
        return np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.int64)
    # Large C, small k: keep the entries at least as similar as the row's k-th largest
    # value (all ties included), then order those by (row, -s, index) and take k per row.
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(s >= kth[:, None])
    order = np.lexsort((cols, -s[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    start = np.searchsorted(rows, np.arange(c))
    rank = np.arange(len(rows)) - start[rows]
    return cols[rank < k].reshape(c, k).astype(np.int64)
