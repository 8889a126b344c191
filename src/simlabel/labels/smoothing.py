"""Soft targets from label semantics (paper 002: Yang, "Semantic Label Representation
with an Application on Multimodal Product Categorization", Walmart Global Tech, 2022).

Class names are embedded with a text encoder (the paper uses CLIP's text tower; the
default here is the offline ``minilm``), and the cosine similarity ``s_ij`` between
label embeddings says which classes are close. Row ``i`` of a target matrix ``T``
(``C x C``, row-stochastic) is the soft target of an item whose true class is ``i``;
a classifier is trained against it with a KL loss (next to its multi-class loss).

The paper's five approaches ("Experimental Results", list 1-5), with ``N_K(i)`` the
``K`` labels most similar to ``i`` other than ``i`` (``K = 20`` in the paper) and
``alpha = 0.1``::

    1. one-hot (baseline)        T = I
    2. uniform smoothing         T_ii = 1 - alpha,  T_ij = alpha / (C - 1)             (j != i)
    3. uniform over the top K    T_ii = 1 - alpha,  T_ij = alpha / K                   (j in N_K(i))
    4. semantic over the top K   T_ii = 1 - alpha,  T_ij = alpha s+_ij / sum_{k in N_K(i)} s+_ik
                                                                                         (j in N_K(i))
    5. approach 4 with a curriculum: alpha_t falls to 0 over training, so the targets
       harden towards one-hot (Dogan et al. 2020, the paper's reference [8])

with ``s+ = max(s, 0)`` and every entry not listed equal to 0. Approaches 2-4 are all
``T = (1 - alpha) I + alpha W`` for a weight matrix ``W`` with zero diagonal and rows
summing to 1 (:func:`smoothing_weights`, :func:`soft_targets`).

Controlled weights. The paper says it "controls the weights in the soft label
representations" so that the approaches are comparable, but the table that says how
is an image that did not survive. Our reading: **the weights of approaches 2-4 are
controlled so that they differ only in where the smoothing mass alpha goes: the true
class always keeps 1 - alpha.** In particular approach 4 is *not* the full row-normalised
similarity matrix of the paper's first illustration (where the true class's share
would depend on how many close labels it has), and approach 2 gives ``alpha / (C - 1)``
to each other class as the paper describes it ("the remaining weight alpha will be
distributed equally to each of the other classes"), not the ``alpha / C`` to every class
of Szegedy et al.'s label smoothing.

Curriculum (approach 5). The paper gives no schedule; :func:`curriculum_alpha` offers
linear, cosine, step and exponential annealing after an optional warmup. Because
``T(a) = (1 - a) I + a W`` is linear in ``a``, the targets of epoch ``t`` are
``I + (a_t / a) (T(a) - I)``, or simply ``build_targets(..., alpha=a_t)``.

Taxonomy targets. The paper also derives targets from a distance ("adjacency") matrix
with a softmax, "resembling how soft targets are constructed in knowledge distillation".
:func:`taxonomy_targets` does this with the tree distance of :func:`taxonomy_distance`,
``T_ij = softmax_j(-beta d_ij)``, the soft labels of Bertinetto et al. 2020 (the paper's
reference [1]) with edge counts as the distance.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the encoders pull in torch; only embed_label_names needs them
    from simlabel.encoders.base import TextEncoder

SMOOTHING_KINDS: tuple[str, ...] = ("none", "uniform", "uniform-topk", "semantic", "semantic-curriculum", "taxonomy")
WEIGHT_KINDS: tuple[str, ...] = ("uniform", "uniform-topk", "semantic")
CURRICULUM_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "step", "exp")

__all__ = [
    "CURRICULUM_SCHEDULES",
    "SMOOTHING_KINDS",
    "SmoothingConfig",
    "WEIGHT_KINDS",
    "build_targets",
    "clean_label_name",
    "curriculum_alpha",
    "embed_label_names",
    "label_similarity",
    "load_descriptions",
    "nearest_labels",
    "one_hot_targets",
    "read_taxonomy",
    "smoothing_weights",
    "soft_targets",
    "target_schedule",
    "taxonomy_distance",
    "taxonomy_from_columns",
    "taxonomy_matrix",
    "taxonomy_targets",
]


# -- label embeddings -------------------------------------------------------------------------

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
    names = list(names)
    if not names:
        raise ValueError("no label names to embed")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise TypeError(f"label name {i} is {type(n).__name__}, not str: {n!r}")
        if n in seen:
            raise ValueError(f"label name {n!r} appears twice (positions {seen[n]} and {i})")
        seen[n] = i
    texts = []
    for n in names:
        clean = clean_label_name(n)
        if not clean:
            raise ValueError(f"label name {n!r} is empty once cleaned")
        desc = (descriptions or {}).get(n)
        desc = desc.strip() if isinstance(desc, str) else ""
        texts.append(f"{clean}: {desc}" if desc else clean)
    if isinstance(encoder, str):
        from simlabel.encoders import get_text_encoder

        encoder = get_text_encoder(encoder, device)
    emb = np.asarray(encoder(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ValueError(f"the text encoder returned shape {emb.shape} for {len(names)} names; expected ({len(names)}, d)")
    if not np.isfinite(emb).all():
        raise ValueError("the text encoder returned non-finite values")
    norms = np.linalg.norm(emb, axis=1)
    if (norms == 0).any():
        raise ValueError(f"the text encoder returned a zero vector for {names[int(np.argmin(norms))]!r}")
    # normalise again: an encoder object need not normalise, and float32 drift is cheap to remove
    return emb / norms[:, None]


def load_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """Read label descriptions from a CSV with columns ``label,description`` (others ignored).

    Labels and descriptions are stripped; rows with an empty description are dropped
    (the name alone is embedded). Raises :class:`~simlabel.labels.io.LabelFileError`
    (a ``ValueError``) naming the file and line for a missing file or column, an empty
    label, or a label given twice.
    """
    from simlabel.labels.io import LabelFileError, read_csv_table

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


def _square(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{what} must be a square (C, C) matrix; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has non-finite values")
    return a


def label_similarity(label_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of label embeddings: ``S = X X^T`` over unit rows, ``(C, C)`` float64.

    Rows are normalised here (so any embedding works), the result is made exactly
    symmetric, clipped to ``[-1, 1]`` and given a diagonal of exactly 1.
    """
    x = np.asarray(label_embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"label embeddings must be (C, d); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("label embeddings have non-finite values")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"label embedding {int(np.argmin(norms))} is all zeros")
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
    s = _square(similarity, "similarity")
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
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


# -- where the smoothing mass goes -------------------------------------------------------------


def smoothing_weights(
    kind: str,
    *,
    n_classes: int | None = None,
    similarity: np.ndarray | None = None,
    neighbors: int | None = None,
) -> np.ndarray:
    """The weight matrix ``W`` (``(C, C)`` float64, zero diagonal, rows summing to 1):
    where the smoothing mass of approaches 2-4 goes.

    ``"uniform"`` (approach 2)
        ``W_ij = 1 / (C - 1)`` for every ``j != i``; needs ``n_classes`` (or ``similarity``).
    ``"uniform-topk"`` (approach 3)
        ``W_ij = 1 / K`` for ``j`` in ``N_K(i)``, the ``K = neighbors`` labels most similar
        to ``i`` (:func:`nearest_labels`, ``K`` clipped to ``C - 1``).
    ``"semantic"`` (approach 4)
        ``W_ij = s+_ij / sum_{k in N_K(i)} s+_ik`` for ``j`` in ``N_K(i)``, ``s+ = max(s, 0)``:
        a negative cosine says "unrelated", never "anti-target". A row whose ``K``
        neighbour similarities are all ``<= 0`` falls back to ``1 / K`` on its neighbours.

    All other entries are 0. Needs at least 2 classes (with one there is nowhere to put mass).
    """
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"unknown smoothing weights {kind!r}; use one of {', '.join(WEIGHT_KINDS)}")
    s = None
    if similarity is not None:
        s = _square(similarity, "similarity")
        if n_classes is not None and n_classes != s.shape[0]:
            raise ValueError(f"n_classes = {n_classes} but similarity is {s.shape[0]} x {s.shape[0]}")
        n_classes = s.shape[0]
    if kind == "uniform":
        if n_classes is None:
            raise ValueError("uniform smoothing weights need n_classes (or similarity)")
        c = int(n_classes)
        if c < 2:
            raise ValueError(f"smoothing needs at least 2 classes; got {c}")
        w = np.full((c, c), 1.0 / (c - 1))
        np.fill_diagonal(w, 0.0)
        return w
    if s is None:
        raise ValueError(f"{kind} smoothing weights need similarity (a (C, C) label similarity matrix)")
    if neighbors is None:
        raise ValueError(f"{kind} smoothing weights need neighbors (K, the number of nearest labels)")
    if neighbors < 1:
        raise ValueError(f"neighbors must be >= 1; got {neighbors}")
    c = s.shape[0]
    if c < 2:
        raise ValueError(f"smoothing needs at least 2 classes; got {c}")
    nbr = nearest_labels(s, neighbors)
    k = nbr.shape[1]
    rows = np.arange(c)[:, None]
    if kind == "uniform-topk":
        vals = np.full((c, k), 1.0 / k)
    else:
        sims = np.maximum(s[rows, nbr], 0.0)
        total = sims.sum(axis=1, keepdims=True)
        ok = total > 0
        vals = np.where(ok, sims / np.where(ok, total, 1.0), 1.0 / k)
    w = np.zeros((c, c))
    w[rows, nbr] = vals
    return w


def soft_targets(weights: np.ndarray, alpha: float) -> np.ndarray:
    """``T = (1 - alpha) I + alpha W``: the true class keeps ``1 - alpha`` (exactly, when
    ``W`` has a zero diagonal as :func:`smoothing_weights` makes it) and ``alpha`` is
    spread as ``W`` says. ``W`` must be non-negative with rows summing to 1; ``alpha``
    in ``[0, 1]``.
    """
    w = _square(weights, "weights")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    if not np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-9):
        raise ValueError("weights must have rows summing to 1")
    t = alpha * w
    t[np.diag_indices_from(t)] += 1.0 - alpha
    return t


def one_hot_targets(n_classes: int) -> np.ndarray:
    """Approach 1, the baseline: ``T = I`` (``(C, C)`` float64)."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    return np.eye(int(n_classes))


# -- taxonomy ----------------------------------------------------------------------------------


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
        raise ValueError("no taxonomy paths")
    tuples = []
    for i, p in enumerate(paths):
        if isinstance(p, str):
            # a str is a Sequence[str] of characters: almost surely "A/B/C" not split
            raise TypeError(f"taxonomy path {i} is the string {p!r}; give a sequence of levels, e.g. {tuple(p.split('/'))!r}")
        t = tuple(str(x) for x in p)
        if not t:
            raise ValueError(f"taxonomy path {i} is empty")
        tuples.append(t)
    first: dict[tuple[str, ...], int] = {}
    for i, t in enumerate(tuples):
        if t in first:
            raise ValueError(f"classes {first[t]} and {i} have the same taxonomy path {t!r}")
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


def taxonomy_targets(distance: np.ndarray, beta: float) -> np.ndarray:
    """Soft targets from a distance matrix: ``T_ij = exp(-beta d_ij) / sum_k exp(-beta d_ik)``.

    ``d_ii = 0`` and ``d_ij >= 0``, so the true class keeps the most mass (strictly, for
    ``beta > 0`` and distinct classes); ``beta = 0`` is uniform over all classes and a
    large ``beta`` tends to one-hot. Computed as ``exp(-beta (d - min_j d_ij))``, which
    cannot overflow and does not underflow to an all-zero row.
    """
    d = _square(distance, "distance")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be finite and >= 0; got {beta}")
    if (d < 0).any():
        raise ValueError("distances must be non-negative")
    if (np.diagonal(d) != 0).any():
        raise ValueError("distances must have a zero diagonal (a class is at distance 0 from itself)")
    z = -beta * (d - d.min(axis=1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- curriculum --------------------------------------------------------------------------------


def curriculum_alpha(epoch: int, n_epochs: int, alpha: float, *, schedule: str = "linear", warmup: int = 0) -> float:
    """The smoothing mass of epoch ``epoch`` (0-based) for approach 5: targets harden over training.

    With ``last = n_epochs - 1``, ``w = min(warmup, last)``, the annealing span
    ``L = last - w`` and ``t = epoch - w``: ``alpha`` for ``epoch <= w`` (the warmup
    epochs, and the first annealing step, ``t = 0``), exactly ``0.0`` for
    ``epoch >= last``, and in between, with ``u = t / L``:

    ``"linear"``  ``alpha (1 - u)``
    ``"cosine"``  ``alpha (1 + cos(pi u)) / 2``
    ``"step"``    ``alpha`` while ``u < 1/2``, then ``0``
    ``"exp"``     ``alpha 0.5 ** (t / h)`` with half-life ``h = L / 5`` (so ``alpha / 32``
                  just before the end, then the final ``0``)

    Every schedule starts at ``alpha``, never increases and ends at exactly 0.0. The one
    exception is ``n_epochs == 1``: there is nothing to anneal and epoch 0 gets
    ``alpha`` (annealing it away would make approach 5 plain one-hot).
    """
    if schedule not in CURRICULUM_SCHEDULES:
        raise ValueError(f"unknown curriculum schedule {schedule!r}; use one of {', '.join(CURRICULUM_SCHEDULES)}")
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1; got {n_epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0-based); got {epoch}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    last = n_epochs - 1
    if n_epochs == 1 and epoch == 0:
        return float(alpha)
    if epoch >= last:
        return 0.0
    start = min(warmup, last)
    if epoch <= start:
        return float(alpha)
    span = last - start
    t = epoch - start
    u = t / span
    if schedule == "linear":
        return float(alpha * (1.0 - u))
    if schedule == "cosine":
        return float(alpha * 0.5 * (1.0 + math.cos(math.pi * u)))
    if schedule == "step":
        return float(alpha) if u < 0.5 else 0.0
    return float(alpha * 0.5 ** (t / (span / 5.0)))


# -- one entry point ---------------------------------------------------------------------------


def build_targets(
    kind: str,
    *,
    n_classes: int,
    alpha: float = 0.1,
    similarity: np.ndarray | None = None,
    neighbors: int = 20,
    taxonomy: np.ndarray | None = None,
    beta: float = 1.0,
) -> np.ndarray:
    """The ``(C, C)`` row-stochastic target matrix a trainer uses for ``kind``:

    ``"none"``                 one-hot (approach 1); ``alpha`` unused
    ``"uniform"``              approach 2
    ``"uniform-topk"``         approach 3 over the ``neighbors`` nearest labels; needs ``similarity``
    ``"semantic"``             approach 4; needs ``similarity``
    ``"semantic-curriculum"``  approach 5: the epoch-0 targets, the same as ``"semantic"``;
                               later epochs call this again with ``alpha=curriculum_alpha(...)``
    ``"taxonomy"``             :func:`taxonomy_targets` of the distance matrix ``taxonomy``
                               (:func:`taxonomy_distance`) with ``beta``; ``alpha`` unused

    ``similarity`` and ``taxonomy`` must be ``n_classes x n_classes``.
    """
    if kind not in SMOOTHING_KINDS:
        raise ValueError(f"unknown smoothing kind {kind!r}; use one of {', '.join(SMOOTHING_KINDS)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    if kind == "none":
        return one_hot_targets(n_classes)
    if kind == "taxonomy":
        if taxonomy is None:
            raise ValueError("kind 'taxonomy' needs taxonomy (a (C, C) distance matrix, e.g. from taxonomy_distance)")
        if np.shape(taxonomy) != (n_classes, n_classes):
            raise ValueError(f"taxonomy has shape {np.shape(taxonomy)}; expected ({n_classes}, {n_classes})")
        return taxonomy_targets(taxonomy, beta)
    if kind == "uniform":
        return soft_targets(smoothing_weights("uniform", n_classes=n_classes), alpha)
    if similarity is None:
        raise ValueError(
            f"kind {kind!r} needs similarity (a (C, C) label similarity matrix, "
            "e.g. label_similarity(embed_label_names(names)))"
        )
    if np.shape(similarity) != (n_classes, n_classes):
        raise ValueError(f"similarity has shape {np.shape(similarity)}; expected ({n_classes}, {n_classes})")
    weight_kind = "uniform-topk" if kind == "uniform-topk" else "semantic"
    w = smoothing_weights(weight_kind, similarity=similarity, neighbors=neighbors)
    return soft_targets(w, alpha)


# -- what a trainer needs: a config, a taxonomy, and targets per epoch -------------------------


@dataclass
class SmoothingConfig:
    """Soft targets for training (paper 002). ``kind`` is one of :data:`SMOOTHING_KINDS`.

    ``label_model`` embeds the class names (``minilm``, ``st:...``, or ``clip:...`` for the CLIP
    text tower); ``descriptions`` a CSV ``label,description``; ``taxonomy`` a CSV ``label,path`` with
    ``path`` like ``Apparel > Topwear > Tshirts`` (or a mapping label -> path tuple);
    ``curriculum_epochs``/``schedule``/``warmup``: how approach 5 anneals alpha to 0.
    """

    kind: str = "none"
    alpha: float = 0.1
    neighbors: int = 20
    label_model: str = "minilm"
    descriptions: str | None = None
    taxonomy: str | Mapping[str, Sequence[str]] | None = None
    beta: float = 1.0
    curriculum_epochs: int = 30
    schedule: str = "linear"
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SMOOTHING_KINDS:
            raise ValueError(f"unknown smoothing {self.kind!r}; use one of {', '.join(SMOOTHING_KINDS)}")
        if self.schedule not in CURRICULUM_SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {', '.join(CURRICULUM_SCHEDULES)}")


TAXONOMY_SEPARATOR = ">"


def read_taxonomy(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """A CSV ``label,path`` (``path`` levels separated by ``>``) as label -> path tuple."""
    import pandas as pd

    from simlabel.labels.io import LabelFileError

    p = Path(path)
    if not p.exists():
        raise LabelFileError(f"{p}: taxonomy file not found")
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    missing = [c for c in ("label", "path") if c not in df.columns]
    if missing:
        raise LabelFileError(f"{p}: missing column(s) {', '.join(missing)}; columns are {', '.join(df.columns)}")
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
        raise ValueError(f"{len(missing)} class(es) not in the taxonomy, e.g. {', '.join(map(str, missing[:5]))}")
    return taxonomy_distance([tuple(mapping[c]) for c in classes])


def target_schedule(
    classes: Sequence[str],
    config: SmoothingConfig,
    *,
    similarity: np.ndarray | None = None,
    device: str = "auto",
):
    """What :meth:`EmbeddingClassifier.fit` takes as ``soft_targets`` for ``config``:

    ``None`` for ``none`` (approach 1 trains on the hard loss alone: a KL to one-hot targets
    would just add a second cross-entropy), a (C, C) matrix for approaches 2-4 and the
    taxonomy variant, and ``epoch -> matrix`` for the curriculum (approach 5).
    ``similarity`` may be given (e.g. computed once for several runs); otherwise the class
    names are embedded with ``config.label_model``.
    """
    kind = config.kind
    if kind == "none":
        return None
    n = len(classes)
    if kind == "taxonomy" and config.taxonomy is None:
        raise ValueError("smoothing 'taxonomy' needs a taxonomy (--taxonomy, a CSV label,path)")
    taxonomy = taxonomy_matrix(classes, config.taxonomy) if kind == "taxonomy" else None
    if kind in ("uniform-topk", "semantic", "semantic-curriculum") and similarity is None:
        desc = load_descriptions(config.descriptions) if config.descriptions else None
        similarity = label_similarity(embed_label_names(classes, config.label_model, descriptions=desc, device=device))
    common = dict(n_classes=n, similarity=similarity, neighbors=config.neighbors, taxonomy=taxonomy, beta=config.beta)
    if kind != "semantic-curriculum":
        return build_targets(kind, alpha=config.alpha, **common)
    weights = smoothing_weights("semantic", similarity=similarity, neighbors=min(config.neighbors, n - 1))

    def at_epoch(epoch: int) -> np.ndarray:
        a = curriculum_alpha(epoch, config.curriculum_epochs, config.alpha, schedule=config.schedule, warmup=config.warmup)
        return soft_targets(weights, a)

    return at_epoch
