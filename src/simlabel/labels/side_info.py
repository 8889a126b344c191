r"""Sample weights for noisy web labels from side information (paper 003, Cheng et al., Alibaba).

The talk trains on images found by searching the web with each category name: every
result is labelled with its query, so many labels are wrong. It weights each image with
side information in two stages; its slides sketch them without formulas, so the
functions below are our reading, each choice an option (README, "paper 003").

Stage 1, image weighting ("image rank + WordNet KNN categories"). For image ``i`` with
search label :math:`y_i` and rank :math:`r_i` among its query's :math:`R` results:

* rank weight, a decreasing function of rank (:func:`rank_weight`), with
  :math:`u_i = (r_i - 1) / R`:

  - ``linear``: :math:`f = 1 - u`;  ``exp``: :math:`f = e^{-u/\tau}`;
  - ``dcg``: :math:`f = 1 / \log_2(1 + r)` (absolute rank, as in DCG);  ``none``: :math:`f = 1`;

  and :math:`w^{rank}_i = \phi + (1 - \phi) f` with a floor :math:`\phi`, so that a deep
  result is trusted less but never dropped on rank alone;

* neighbour agreement (:func:`neighbour_agreement`): over the :math:`k` nearest images
  :math:`N(i)` in image-embedding space,

  .. math:: a_i = \frac{\sum_{j \in N(i)} \omega_{ij} \, G[y_i, y_j]}{\sum_{j \in N(i)} \omega_{ij}},
     \qquad G[c, c'] = \begin{cases} 1 & c' = c \\ S[c, c'] & c' \in K(c) \\ 0 & \text{otherwise} \end{cases}

  where :math:`S` is the blended WordNet + text-encoder category similarity and
  :math:`K(c)` the K nearest categories of :math:`c` (:mod:`simlabel.labels.categories`):
  neighbours with the same or a related category support the label, neighbours with an
  unrelated one count against it (they add to the denominator only); :math:`\omega_{ij}`
  is 1 or the neighbour's cosine similarity;

* the stage-1 weight (:func:`stage1_weights`): ``product`` :math:`w_i = w^{rank}_i a_i` or
  ``mean`` :math:`w_i = \lambda w^{rank}_i + (1 - \lambda) a_i`. Both lie in ``[0, 1]``.

Stage 2, re-weighting by text matching. A model trained with the stage-1 weights predicts
every training image (out of fold, so it cannot simply echo the label it was trained on).
"Predict scores of a good sample should reflect label relation": for a good *apple* the
top predictions are *apple* and related fruit, for a noisy one they are unrelated. With
:math:`\tilde p_{ic}` the predicted probabilities renormalised over the top :math:`m`
classes, and keywords :math:`k \in T_i` extracted from the image's text,

.. math::
   s^{pred}_i = \sum_{c \in \mathrm{top}_m(i)} \tilde p_{ic} \, S[y_i, c], \qquad
   s^{kw}_i = \max_{k \in T_i} \max(0, \cos(e_k, e_{y_i})), \qquad
   s(x_i) = (1 - \gamma) \, s^{pred}_i + \gamma \, s^{kw}_i

(:func:`prediction_match`, :func:`keyword_match`, :func:`text_match_score`), and the loss
becomes :math:`L(x_i) = s(x_i) L_{ce}(x_i)` (the talk's formula), here multiplied by the
stage-1 weight unless ``stage2_combine="replace"``.

The numerical cores take arrays and return arrays; :func:`stage1_table` /
:func:`stage2_scores` add the k-NN search and keyword extraction, and
:func:`side_info_weights` reads and writes files for ``simlabel side-info``. Stage 2 needs
predictions of models trained with the stage-1 weights: this module never trains them, it
is handed a predictor (:data:`Predictor`; :func:`simlabel.training.oof_predictor` makes the
out-of-fold one the talk implies).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.files import MANIFEST_SUFFIX, exclusive, write_set
from simlabel.index import NeighborIndex, Neighbors
from simlabel.labels.io import read_labels
from simlabel.metrics import top_k_predictions
from simlabel.progress import task
from simlabel.semantics.categories import CategorySemantics, category_semantics
from simlabel.semantics.names import clean_label_name
from simlabel.store import Embeddings, as_embeddings

if TYPE_CHECKING:
    from simlabel.graph import KnnGraph

RANK_WEIGHTS = ("linear", "exp", "dcg", "none")
#: ``predictor(X, labels, weights, categories) -> (top classes (n, m) int64, probabilities (n, m))``:
#: each row's most probable categories (codes into ``categories``) from models trained with
#: ``weights`` that never saw the row (out of fold), or ``(n, C)`` probabilities.
Predictor = Callable[[np.ndarray, Sequence[str], np.ndarray, Sequence[str]], "np.ndarray | tuple[np.ndarray, np.ndarray]"]

@dataclass
class SideInfoConfig:
    """Options of both stages of paper 003's side-information weights (defaults: our reading of the talk).

    Stage 1 weighs image ``i`` (search label ``y_i``, rank ``r_i`` of its query's ``R`` results)
    by its rank, ``w_rank = phi + (1 - phi) f(u)`` with ``u = (r_i - 1) / R``, and by the
    agreement ``a_i`` of its ``k`` nearest images with its label through the category relations
    (the module docstring gives the formulas); stage 2 re-weighs by text matching,
    ``s(x_i) = (1 - gamma) s_pred + gamma s_kw``.

    Parameters
    ----------
    rank_weight : {"linear", "exp", "dcg", "none"}, default "linear"
        ``f`` of :func:`rank_weight`: ``linear`` ``1 - u``; ``exp`` ``exp(-u / tau)``; ``dcg``
        ``1 / log2(1 + r)`` (absolute rank, as in DCG); ``none`` 1.
    rank_floor : float, default 0.2
        ``phi`` in ``[0, 1]``, so that a deep result is trusted less but never dropped on rank
        alone.
    rank_tau : float, default 0.5
        ``tau`` of the ``exp`` rank weight (``> 0``).
    knn : int, default 10
        Visual neighbours per image.
    index : {"auto", "flat", "ivf", "hnsw"}, default "auto"
        How the neighbours are found without a graph or index: ``flat`` (exact), ``ivf`` or
        ``hnsw`` (FAISS, approximate), ``auto`` = :func:`simlabel.index.auto_kind` (flat up to
        200,000 images, IVF above: the one rule every k-NN user shares).
    neighbor_weighting : {"uniform", "similarity"}, default "uniform"
        ``omega_ij`` of the agreement: 1, or each neighbour's cosine similarity.
    combine : {"product", "mean"}, default "product"
        The stage-1 weight (:func:`stage1_weights`): ``product`` ``w_rank a_i`` or ``mean``
        ``lambda w_rank + (1 - lambda) a_i``.
    rank_share : float, default 0.5
        ``lambda`` of ``mean``, in ``[0, 1]``.
    sharpness : float, default 1.0
        Exponent on the neighbour agreement and on ``s(x)`` (``> 0``; 1: as defined; larger
        pushes the weights of disputed labels towards 0, as in the talk's table where noisy
        images get 0-0.15).
    top_predictions : int, default 5
        Stage 2: ``m``, the top predicted classes whose renormalised probabilities weigh their
        similarity to the label in ``s_pred``.
    keyword_weight : float, default 0.3
        Stage 2: ``gamma``, the share of the keyword match ``s_kw`` in ``s(x)``, in ``[0, 1]``.
    keywords : int, default 5
        Stage 2: keywords extracted per text (the highest TF-IDF words).
    stage2_folds : int, default 3
        Stage 2: folds of the out-of-fold predictions the predictor makes
        (:func:`simlabel.training.oof_predictor`); 0: the stage-1 model predicts its own
        training images; never 1.
    stage2_combine : {"multiply", "replace"}, default "multiply"
        The final weight: the stage-1 weight times ``s(x)``, or ``s(x)`` alone.

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field), or
        ``stage2_folds=1``.

    Examples
    --------
    >>> from simlabel import SideInfoConfig
    >>> cfg = SideInfoConfig(rank_weight="exp", knn=20)
    >>> cfg.rank_weight, cfg.knn, cfg.combine
    ('exp', 20, 'product')
    """

    rank_weight: Literal["linear", "exp", "dcg", "none"] = "linear"
    rank_floor: float = 0.2
    rank_tau: float = 0.5
    knn: int = 10
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    neighbor_weighting: Literal["uniform", "similarity"] = "uniform"
    combine: Literal["product", "mean"] = "product"
    rank_share: float = 0.5
    sharpness: float = 1.0
    top_predictions: int = 5
    keyword_weight: float = 0.3
    keywords: int = 5
    stage2_folds: int = 3
    stage2_combine: Literal["multiply", "replace"] = "multiply"

    def __post_init__(self) -> None:
        one_of(self.rank_weight, RANK_WEIGHTS, "rank_weight")
        in_range(self.rank_floor, "rank_floor", 0, 1)
        in_range(self.rank_tau, "rank_tau", 0, lo_open=True)
        positive_int(self.knn, "knn")
        one_of(self.index, ("auto", "flat", "ivf", "hnsw"), "index")
        one_of(self.neighbor_weighting, ("uniform", "similarity"), "neighbor_weighting")
        one_of(self.combine, ("product", "mean"), "combine")
        in_range(self.rank_share, "rank_share", 0, 1)
        in_range(self.sharpness, "sharpness", 0, lo_open=True)
        positive_int(self.top_predictions, "top_predictions")
        in_range(self.keyword_weight, "keyword_weight", 0, 1)
        positive_int(self.keywords, "keywords")
        if self.stage2_folds == 1:
            raise InputError("stage2_folds must be 0 (in-sample) or >= 2; got 1")
        positive_int(self.stage2_folds, "stage2_folds", minimum=0)
        one_of(self.stage2_combine, ("multiply", "replace"), "stage2_combine")


# -- stage 1: rank --------------------------------------------------------------------------------


def rank_weight(
    rank: np.ndarray | Sequence[float],
    *,
    kind: str = "linear",
    depth: float | np.ndarray | None = None,
    tau: float = 0.5,
    floor: float = 0.2,
) -> np.ndarray:
    r"""Trust in a search result from its rank: :math:`\phi + (1 - \phi) f(r)` in ``[floor, 1]``.

    ``rank`` is 1-based (1 = best). ``depth`` is the number of results of the item's query
    (scalar or one per item; default: the largest rank given), so ``linear`` and ``exp`` see
    the relative rank :math:`u = (r - 1) / depth` and queries of different depths are treated
    alike. ``dcg`` uses the absolute rank. A missing rank (NaN) gets weight 1: no side
    information, no penalty. See the module docstring for the formulas.
    """
    if kind not in RANK_WEIGHTS:
        raise InputError(f"rank weight kind must be one of {', '.join(RANK_WEIGHTS)}; got {kind!r}")
    if not 0 <= floor <= 1:
        raise InputError(f"floor must be in [0, 1]; got {floor}")
    if tau <= 0:
        raise InputError(f"tau must be > 0; got {tau}")
    r = np.asarray(rank, dtype=np.float64)
    known = ~np.isnan(r)
    if (r[known] < 1).any():
        bad = np.flatnonzero(known & (r < 1))[0]
        raise InputError(f"ranks are 1-based; row {bad} has rank {r[bad]:g}")
    if depth is None:
        depth = float(np.nanmax(r)) if known.any() else 1.0
    d = np.broadcast_to(np.asarray(depth, dtype=np.float64), r.shape)
    if (d[known] <= 0).any():
        raise InputError("depth must be > 0")
    u = np.clip((r - 1.0) / d, 0.0, 1.0)
    if kind == "linear":
        f = 1.0 - u
    elif kind == "exp":
        f = np.exp(-u / tau)
    elif kind == "dcg":
        f = 1.0 / np.log2(1.0 + r)
    else:
        f = np.ones_like(r)
    w = floor + (1.0 - floor) * f
    return np.where(known, w, 1.0)


# -- stage 1: neighbours --------------------------------------------------------------------------


def credit_matrix(similarity: np.ndarray, related: np.ndarray, *, unrelated: float = 0.0) -> np.ndarray:
    """``G``: how much a neighbour labelled ``c'`` supports the label ``c``.

    ``G[c, c] = 1``; ``G[c, c'] = similarity[c, c']`` for ``c'`` among ``related[c]`` (the K
    nearest categories of ``c``); ``unrelated`` (default 0) elsewhere. ``(C, C)`` float64 in
    ``[0, 1]`` (similarities are clipped).
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise InputError(f"similarity must be (C, C); got {s.shape}")
    rel = np.asarray(related, dtype=np.int64)
    c = s.shape[0]
    if rel.ndim != 2 or rel.shape[0] != c:
        raise InputError(f"related must be (C, K) with C = {c}; got {rel.shape}")
    if rel.size and (rel.min() < 0 or rel.max() >= c):
        raise InputError(f"related category indices must lie in [0, {c})")
    if not 0 <= unrelated <= 1:
        raise InputError(f"unrelated must be in [0, 1]; got {unrelated}")
    g = np.full((c, c), float(unrelated))
    rows = np.repeat(np.arange(c), rel.shape[1])
    cols = rel.ravel()
    g[rows, cols] = np.clip(s[rows, cols], 0.0, 1.0)
    np.fill_diagonal(g, 1.0)
    return g


def neighbour_agreement(
    labels: np.ndarray,
    neighbors: np.ndarray,
    credit: np.ndarray,
    *,
    neighbor_weights: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    r"""How well each item's visual neighbours agree with its label: :math:`a_i \in [0, 1]`.

    ``labels`` ``(n,)`` category codes; ``neighbors`` ``(n, k)`` positions of each item's
    neighbours among the same ``n`` items (``-1`` = none); ``credit`` the ``(C, C)`` matrix
    of :func:`credit_matrix`; ``neighbor_weights`` optional ``(n, k)`` non-negative weights
    (e.g. cosine similarities; negative values count as 0). An item with no usable
    neighbour gets 1 (no evidence against its label).

    ``groups``: when one image carries several labels (web search: the same image returned
    by several queries, one row per (image, query)), ``groups`` ``(n,)`` gives each row's
    image in ``[0, m)``, and ``neighbors``/``neighbor_weights`` are ``(m, k)`` over images. A
    neighbouring image then supports label ``c`` by the mean credit of its labels,
    :math:`H[j, c] = \frac{1}{|L_j|} \sum_{l \in L_j} G[c, l]`; with one label per image this
    is the single-label rule.
    """
    y = np.asarray(labels, dtype=np.int64)
    nb = np.asarray(neighbors, dtype=np.int64)
    g = np.asarray(credit, dtype=np.float64)
    n = len(y)
    if y.size and (y.min() < 0 or y.max() >= g.shape[0]):
        raise InputError(f"labels must be codes in [0, {g.shape[0]})")
    if groups is None:  # one label per image: row i is image i
        if nb.ndim != 2 or nb.shape[0] != n:
            raise InputError(f"neighbors must be (n, k) with n = {n}; got {nb.shape}")
        groups = np.arange(n)
    groups = np.asarray(groups, dtype=np.int64)
    if nb.ndim != 2:
        raise InputError(f"neighbors must be (m, k); got {nb.shape}")
    m, k = nb.shape
    if groups.shape != (n,):
        raise InputError(f"groups must give one image per row ({n}); got shape {groups.shape}")
    if n and (groups.min() < 0 or groups.max() >= m):
        raise InputError(f"groups must be image positions in [0, {m}) (the rows of neighbors)")
    if nb.size and nb.max() >= m:
        raise InputError(f"neighbour positions must be < {m}")
    valid = nb >= 0
    safe = np.where(valid, nb, 0)
    omega = valid.astype(np.float64)
    if neighbor_weights is not None:
        w = np.asarray(neighbor_weights, dtype=np.float64)
        if w.shape != nb.shape:
            raise InputError(f"neighbor_weights must have the shape of neighbors {nb.shape}; got {w.shape}")
        omega = omega * np.clip(np.nan_to_num(w, nan=0.0), 0.0, None)
    # each image's labels: rows order[start[j] : start[j] + per_image[j]] of y
    per_image = np.bincount(groups, minlength=m)
    order = np.argsort(groups, kind="stable")
    start = np.cumsum(per_image) - per_image
    # images without labels (no rows) give no evidence either way
    omega = omega * (per_image[safe] > 0)
    # expand every (row, neighbour) pair into one entry per label of that neighbour, so the
    # support H[j, y_i] = mean_l G[y_i, l] is summed without an (images x categories) matrix
    pair_image = safe[groups].ravel()  # (n k,)
    count = per_image[pair_image] * valid[groups].ravel()
    pair = np.repeat(np.arange(n * k), count)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    neighbour_label = y[order[start[pair_image[pair]] + offset]]
    contrib = g[y[pair // max(k, 1)], neighbour_label] / per_image[pair_image[pair]]
    support = np.bincount(pair, weights=contrib, minlength=n * k).reshape(n, k)
    rows_omega = omega[groups]
    total = rows_omega.sum(axis=1)
    agree = (rows_omega * support).sum(axis=1)
    out = np.ones(n, dtype=np.float64)
    has = total > 0
    out[has] = agree[has] / total[has]
    return np.clip(out, 0.0, 1.0)


def stage1_weights(
    rank_weights: np.ndarray, agreement: np.ndarray, *, combine: str = "product", rank_share: float = 0.5
) -> np.ndarray:
    r"""Stage-1 weight: ``product`` :math:`w^{rank} a` or ``mean`` :math:`\lambda w^{rank} + (1 - \lambda) a`."""
    rw = np.asarray(rank_weights, dtype=np.float64)
    a = np.asarray(agreement, dtype=np.float64)
    if rw.shape != a.shape:
        raise InputError(f"rank weights {rw.shape} and agreement {a.shape} differ in shape")
    for name, v in (("rank weights", rw), ("agreement", a)):
        if v.size and (np.isnan(v).any() or v.min() < 0 or v.max() > 1):
            raise InputError(f"{name} must lie in [0, 1]")
    if combine == "product":
        return rw * a
    if combine == "mean":
        if not 0 <= rank_share <= 1:
            raise InputError(f"rank_share must be in [0, 1]; got {rank_share}")
        return rank_share * rw + (1.0 - rank_share) * a
    raise InputError(f"combine must be 'product' or 'mean'; got {combine!r}")


# -- stage 2: text matching -----------------------------------------------------------------------


def prediction_match(
    proba: np.ndarray | tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
    similarity: np.ndarray,
    *,
    top: int = 5,
) -> np.ndarray:
    r""":math:`s^{pred}_i = \sum_{c \in top_m(i)} \tilde p_{ic} S[y_i, c]` in ``[0, 1]``.

    ``proba`` ``(n, C)`` predicted probabilities (any non-negative scores: each row's top
    ``top`` are renormalised to sum to 1), or already the top predictions as a pair
    ``(classes (n, m), probabilities (n, m))`` (what :func:`simlabel.heads.out_of_fold_proba` returns with
    ``top=``, so a million items x thousands of classes never sit in memory);
    ``labels`` ``(n,)`` codes of the given labels; ``similarity`` the ``(C, C)`` category
    similarity with diagonal 1 (clipped to [0, 1]). A confident prediction of the given
    label scores 1, of a related category its similarity, of unrelated ones about 0.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.clip(np.asarray(similarity, dtype=np.float64), 0.0, 1.0)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise InputError(f"similarity must be (C, C); got {s.shape}")
    c = s.shape[0]
    if isinstance(proba, tuple):
        top_idx = np.asarray(proba[0], dtype=np.int64)
        top_p = np.asarray(proba[1], dtype=np.float64)
        if top_idx.shape != top_p.shape or top_idx.ndim != 2 or len(top_idx) != len(y):
            raise InputError(f"top predictions must be two (n, m) arrays for n = {len(y)} labels; got "
                             f"{top_idx.shape} and {top_p.shape}")
        if top_idx.size and (top_idx.min() < 0 or top_idx.max() >= c):
            raise InputError(f"predicted classes must be codes in [0, {c})")
        m = top_idx.shape[1]
    else:
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim != 2 or len(p) != len(y):
            raise InputError(f"proba must be (n, C) with one row per label; got {p.shape} for {len(y)} labels")
        if p.shape[1] != c:
            raise InputError(f"similarity must be ({p.shape[1]}, {p.shape[1]}); got {s.shape}")
        m = int(min(max(top, 1), c))
        top_idx = top_k_predictions(p, m)
        top_p = np.take_along_axis(p, top_idx, axis=1)
    if y.size and (y.min() < 0 or y.max() >= c):
        raise InputError(f"labels must be codes in [0, {c})")
    if (top_p < 0).any() or not np.isfinite(top_p).all():
        raise InputError("proba must be finite and non-negative")
    mass = top_p.sum(axis=1, keepdims=True)
    top_p = np.where(mass > 0, top_p / np.where(mass > 0, mass, 1.0), 1.0 / max(m, 1))
    return np.clip((top_p * s[y[:, None], top_idx]).sum(axis=1), 0.0, 1.0)


def extract_keywords(
    texts: Sequence[str], *, top: int = 5, max_features: int = 100_000, min_length: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` highest-TF-IDF words of each text (English stop words removed).

    Returns ``(keywords, vocabulary)``: ``keywords`` ``(n, top)`` int64 indices into
    ``vocabulary`` (``-1`` pads texts with fewer words), best first; ``vocabulary`` the
    words (lower-cased, letters only, at least ``min_length`` long). Vectorised over the
    sparse TF-IDF matrix (no loop over texts).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in texts]
    n = len(docs)
    vec = TfidfVectorizer(
        lowercase=True, stop_words="english", token_pattern=rf"(?u)\b[^\W\d_]{{{min_length},}}\b",
        sublinear_tf=True, max_features=max_features,
    )
    try:
        m = vec.fit_transform(docs).tocsr()
    except ValueError:  # every text empty or stop words only
        return np.full((n, top), -1, dtype=np.int64), np.array([], dtype=object)
    vocab = vec.get_feature_names_out().astype(object)
    rows = np.repeat(np.arange(n), np.diff(m.indptr))
    # rank the non-zeros inside each row: by row, then weight descending, then word index
    order = np.lexsort((m.indices, -m.data, rows))
    rows_o, cols_o = rows[order], m.indices[order]
    start = m.indptr[:-1]
    pos_in_row = np.arange(len(order)) - start[rows_o]
    keep = pos_in_row < top
    out = np.full((n, top), -1, dtype=np.int64)
    out[rows_o[keep], pos_in_row[keep]] = cols_o[keep]
    return out, vocab


def keyword_match(keywords: np.ndarray, labels: np.ndarray, keyword_label_similarity: np.ndarray) -> np.ndarray:
    r""":math:`s^{kw}_i = \max_{k \in T_i} \max(0, \mathrm{sim}(k, y_i))`; NaN for items without keywords.

    ``keywords`` ``(n, t)`` vocabulary indices (``-1`` = none); ``labels`` ``(n,)`` codes;
    ``keyword_label_similarity`` ``(V, C)``, e.g. cosine of text embeddings of each keyword
    and each category name.
    """
    kw = np.asarray(keywords, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    sim = np.asarray(keyword_label_similarity, dtype=np.float64)
    if kw.ndim != 2 or len(kw) != len(y):
        raise InputError(f"keywords must be (n, t) with one row per label; got {kw.shape} for {len(y)} labels")
    if sim.ndim != 2:
        raise InputError(f"keyword_label_similarity must be (V, C); got {sim.shape}")
    if kw.size and kw.max() >= sim.shape[0]:
        raise InputError(f"keyword indices must be < V = {sim.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= sim.shape[1]):
        raise InputError(f"labels must be codes in [0, {sim.shape[1]})")
    valid = kw >= 0
    if sim.shape[0] == 0:
        return np.full(len(y), np.nan)
    vals = np.clip(sim[np.where(valid, kw, 0), y[:, None]], 0.0, 1.0)
    vals = np.where(valid, vals, -np.inf)
    best = vals.max(axis=1) if kw.shape[1] else np.full(len(y), -np.inf)
    return np.where(np.isfinite(best), best, np.nan)


def text_match_score(pred_match: np.ndarray, kw_match: np.ndarray | None = None, *, keyword_weight: float = 0.3) -> np.ndarray:
    r""":math:`s(x_i) = (1 - \gamma) s^{pred}_i + \gamma s^{kw}_i` in ``[0, 1]``; items without
    keywords (NaN) use :math:`s^{pred}_i` alone, as does ``kw_match=None``."""
    pm = np.asarray(pred_match, dtype=np.float64)
    if not 0 <= keyword_weight <= 1:
        raise InputError(f"keyword_weight must be in [0, 1]; got {keyword_weight}")
    if kw_match is None:
        return np.clip(pm, 0.0, 1.0)
    km = np.asarray(kw_match, dtype=np.float64)
    if km.shape != pm.shape:
        raise InputError(f"keyword match {km.shape} and prediction match {pm.shape} differ in shape")
    mixed = (1.0 - keyword_weight) * pm + keyword_weight * km
    return np.clip(np.where(np.isnan(km), pm, mixed), 0.0, 1.0)


# -- putting stage 1 and 2 together on embeddings -------------------------------------------------


def _codes(labels: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    index = pd.Index(list(categories))
    codes = index.get_indexer(pd.Index([str(v) for v in labels]))
    if (codes < 0).any():
        unknown = sorted({str(v) for v, c in zip(labels, codes) if c < 0})
        raise InputError(f"labels not among the categories: {', '.join(unknown[:5])}")
    return codes.astype(np.int64)


def stage1_table(
    X: np.ndarray,
    labels: Sequence[str],
    rank: np.ndarray | None,
    categories: Sequence[str],
    similarity: np.ndarray,
    related: np.ndarray,
    config: SideInfoConfig | None = None,
    *,
    depth: np.ndarray | float | None = None,
    ids: Sequence[str] | None = None,
    neighbors: Neighbors | None = None,
) -> pd.DataFrame:
    """Stage-1 weights of ``n`` labelled items with embeddings ``X`` ``(n, d)``.

    ``ids``: with one row per (image, label) pair, rows of the same id are one image: the
    neighbours are other images (never the same image under another label), each
    supporting a label by the mean credit of its labels (see :func:`neighbour_agreement`).

    ``rank``: search ranks (NaN or None = unknown); ``depth``: results of each item's query
    (default: the largest rank seen with its label). ``similarity``/``related``: category
    similarity and K nearest categories, in the order of ``categories``. The neighbours are
    the ``config.knn`` nearest among the same items (cosine; ``config.index``). Returns a frame
    with ``label, rank, rank_weight, agreement, weight`` and ``neighbors`` (positions) in
    the order of the input.

    ``neighbors``: the images' neighbours found elsewhere (e.g. read from a k-NN graph by
    :func:`simlabel.graph.neighbours_within`): positions into the distinct images (the rows in
    order of first appearance of their id) and similarities, ``(m, >= config.knn)``; no query is
    made.
    """
    cfg = config or SideInfoConfig()
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    labels = [str(v) for v in labels]
    if len(labels) != n:
        raise InputError(f"{len(labels)} labels for {n} embeddings")
    y = _codes(labels, categories)
    r = np.full(n, np.nan) if rank is None else np.asarray(rank, dtype=np.float64)
    if len(r) != n:
        raise InputError(f"{len(r)} ranks for {n} embeddings")
    if depth is None:
        depth_per_label = pd.Series(r).groupby(y).transform("max").to_numpy()
        depth = np.where(np.isnan(depth_per_label), 1.0, depth_per_label)
    rw = rank_weight(r, kind=cfg.rank_weight, depth=depth, tau=cfg.rank_tau, floor=cfg.rank_floor)
    groups = None
    X_img = X
    if ids is not None:
        if len(ids) != n:
            raise InputError(f"{len(ids)} ids for {n} embeddings")
        codes, uniques = pd.factorize(pd.Index([str(i) for i in ids]))
        if len(uniques) < n:
            groups = codes.astype(np.int64)
            first = pd.Series(np.arange(n)).groupby(codes).first().to_numpy()
            X_img = X[first]
    m = len(X_img)
    k = min(cfg.knn, m - 1)
    if neighbors is not None:
        nb, sims = np.asarray(neighbors[0], dtype=np.int64), np.asarray(neighbors[1], dtype=np.float32)
        if nb.shape[0] != m or nb.shape[1] < k or sims.shape != nb.shape:
            raise InputError(f"neighbors must be ({m}, >= {k}) over the distinct images; got {nb.shape}")
        nb, sims = nb[:, :k], sims[:, :k]
    elif k >= 1:
        from simlabel.graph import neighbours_for

        nb, sims = neighbours_for(X_img, k, kind=cfg.index)
    else:
        sims, nb = np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
    credit = credit_matrix(similarity, related)
    agree = neighbour_agreement(
        y, nb, credit, neighbor_weights=sims if cfg.neighbor_weighting == "similarity" else None, groups=groups
    )
    if cfg.sharpness != 1:
        agree = agree**cfg.sharpness
    if groups is not None:
        nb = nb[groups]
    w = stage1_weights(rw, agree, combine=cfg.combine, rank_share=cfg.rank_share)
    return pd.DataFrame({"label": labels, "rank": r, "rank_weight": rw, "agreement": agree, "weight": w,
                         "neighbors": list(nb)})


def keyword_label_similarity(
    vocabulary: Sequence[str], categories: Sequence[str], encoder=None, *, device: str = "auto",
    batch_size: int = 4096,
) -> np.ndarray:
    """Cosine ``(V, C)`` between text embeddings of keywords and of category names (the
    cleaned names, as :func:`simlabel.semantics.names.embed_label_names` embeds them)."""
    if isinstance(encoder, str) or encoder is None:
        from simlabel.encoders import get_text_encoder

        encoder = get_text_encoder(encoder or "minilm", device)
    vocab = [str(v) for v in vocabulary]
    if not vocab:
        return np.zeros((0, len(categories)))
    names = np.asarray(encoder([clean_label_name(c) for c in categories]), dtype=np.float64)
    names /= np.linalg.norm(names, axis=1, keepdims=True).clip(1e-12)
    out = np.empty((len(vocab), len(names)))
    with task("keywords", len(vocab), unit="keywords") as bar:
        for start in range(0, len(vocab), batch_size):
            e = np.asarray(encoder(vocab[start : start + batch_size]), dtype=np.float64)
            e /= np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)
            out[start : start + len(e)] = e @ names.T
            bar.advance(len(e))
    return out


def keyword_scores(
    texts: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[str],
    config: SideInfoConfig | None = None,
    *,
    encoder=None,
    device: str = "auto",
) -> pd.DataFrame:
    """The keyword half of stage 2, which depends on the texts and labels only (not on any
    model, so it is computed once per label set): ``keyword_match`` (NaN for a text without
    keywords) and ``keywords`` (space-separated), one row per item."""
    cfg = config or SideInfoConfig()
    y = _codes(labels, categories)
    if len(texts) != len(y):
        raise InputError(f"{len(texts)} texts for {len(y)} labels")
    kw, vocab = extract_keywords(texts, top=cfg.keywords)
    used = np.unique(kw[kw >= 0])
    remap = np.full(len(vocab) + 1, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    kw_used = np.where(kw >= 0, remap[np.where(kw >= 0, kw, len(vocab))], -1)
    sim = keyword_label_similarity(vocab[used], categories, encoder, device=device)
    words = np.append(vocab, "").astype(object)
    return pd.DataFrame({
        "keyword_match": keyword_match(kw_used, y, sim),
        "keywords": [" ".join(w for w in row if w) for row in words[np.where(kw >= 0, kw, len(vocab))]],
    })


def stage2_scores(
    proba: np.ndarray | tuple[np.ndarray, np.ndarray],
    labels: Sequence[str],
    categories: Sequence[str],
    similarity: np.ndarray,
    config: SideInfoConfig | None = None,
    *,
    texts: Sequence[str] | None = None,
    keywords: pd.DataFrame | None = None,
    encoder=None,
    device: str = "auto",
) -> pd.DataFrame:
    """Stage-2 text-matching scores: ``pred_match``, ``keyword_match`` (NaN without text),
    ``keywords`` (space-separated) and ``score`` = s(x_i), one row per item.

    The keyword half comes from ``keywords`` (a :func:`keyword_scores` frame, e.g. computed
    once for several models) or is computed here from ``texts``."""
    cfg = config or SideInfoConfig()
    y = _codes(labels, categories)
    pm = prediction_match(proba, y, similarity, top=cfg.top_predictions)
    if keywords is None and texts is not None and cfg.keyword_weight > 0:
        keywords = keyword_scores(texts, labels, categories, cfg, encoder=encoder, device=device)
    if keywords is not None and len(keywords) != len(y):
        raise InputError(f"{len(keywords)} keyword rows for {len(y)} labels")
    km = None if keywords is None or cfg.keyword_weight == 0 else keywords["keyword_match"].to_numpy()
    score = text_match_score(pm, km, keyword_weight=cfg.keyword_weight)
    if cfg.sharpness != 1:
        score = score**cfg.sharpness
    return pd.DataFrame({
        "pred_match": pm,
        "keyword_match": np.full(len(y), np.nan) if km is None else km,
        "keywords": [""] * len(y) if km is None else keywords["keywords"].tolist(),
        "score": score,
    })


def final_weights(stage1: np.ndarray, score: np.ndarray, combine: str = "multiply") -> np.ndarray:
    """The stage-2 training weight: ``multiply`` (stage-1 weight times s) or ``replace`` (s)."""
    if combine == "multiply":
        return np.asarray(stage1, dtype=np.float64) * np.asarray(score, dtype=np.float64)
    if combine == "replace":
        return np.asarray(score, dtype=np.float64).copy()
    raise InputError(f"stage2_combine must be 'multiply' or 'replace'; got {combine!r}")


def weight_separation(weights: Mapping[str, np.ndarray], correct: np.ndarray) -> pd.DataFrame:
    """How well each weight separates correct from wrong labels (known from held-out truth):
    per weight, mean / median / quartiles for correct and wrong labels, and the ROC AUC of
    the weight as a detector of correct labels (0.5 = no better than chance)."""
    from sklearn.metrics import roc_auc_score

    ok = np.asarray(correct, dtype=bool)
    rows = []
    for name, w in weights.items():
        w = np.asarray(w, dtype=np.float64)
        if w.shape != ok.shape:
            raise InputError(f"weight {name!r} has shape {w.shape}, correctness {ok.shape}")
        row = {"weight": name}
        for tag, mask in (("correct", ok), ("wrong", ~ok)):
            v = w[mask]
            row[f"{tag} n"] = int(mask.sum())
            row[f"{tag} mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{tag} median"] = float(np.median(v)) if len(v) else float("nan")
            row[f"{tag} q25"] = float(np.quantile(v, 0.25)) if len(v) else float("nan")
            row[f"{tag} q75"] = float(np.quantile(v, 0.75)) if len(v) else float("nan")
        row["auc"] = float(roc_auc_score(ok, w)) if 0 < ok.sum() < len(ok) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# -- files: simlabel weights ----------------------------------------------------------------------


@dataclass
class SideInfoWeights:
    """What :func:`side_info_weights` made: the weighted labels and a summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        The input's columns plus ``rank_weight, agreement, stage1_weight`` (+ ``pred_match,
        keyword_match, keywords, text_score`` at stage 2) and ``weight``, the column to train with.
    summary : dict
        ``stage``, the counts (``n`` rows, ``n_images``), the ``categories``, ``knn``, where the
        ``neighbours`` came from, the weights' mean and quantiles (``weight``: ``mean``, ``p10``,
        ``median``, ``p90``) and the embeddings' fingerprint: what ``<out>.summary.json`` records.

    Notes
    -----
    Indexing it directly (as the table :func:`side_info_weights` returned before) still works,
    with a :class:`DeprecationWarning`.

    Examples
    --------
    Built by hand here; :func:`side_info_weights` makes it.

    >>> import pandas as pd
    >>> from simlabel import SideInfoWeights
    >>> table = pd.DataFrame({"id": ["1", "2"], "label": ["Watches", "Watches"], "weight": [0.9, 0.1]})
    >>> made = SideInfoWeights(table, {"stage": 1, "n": 2})
    >>> made.labels["weight"].tolist()
    [0.9, 0.1]
    """

    labels: pd.DataFrame
    summary: dict

    def __getitem__(self, key):
        # side_info_weights returned the table itself before; scripts indexing it keep working
        warnings.warn("side_info_weights() returns a SideInfoWeights (labels, summary); index its .labels",
                      DeprecationWarning, stacklevel=2)
        return self.labels[key]


def side_info_weights(
    emb: str | os.PathLike | Embeddings,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    semantics: CategorySemantics | str | os.PathLike | None = None,
    config: SideInfoConfig | None = None,
    stage: int = 1,
    texts: Mapping[str, str] | None = None,
    predictor: Predictor | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    text_encoder=None,
    log: Callable[[str], None] | None = None,
    label_col: str = "label",
    graph: "str | os.PathLike | KnnGraph | None" = None,
    index: "str | os.PathLike | NeighborIndex | None" = None,
) -> SideInfoWeights:
    """Paper 003's sample weights for noisy search labels, from rank, neighbours and text.

    Stage 1 weighs each labelled image by its search rank and by how well its visual neighbours'
    labels agree with its own through the category relations; stage 2 multiplies (or replaces)
    that by a text-matching score of a model's predictions and of the image's keywords (the
    formulas are in :class:`SideInfoConfig` and the module docstring). Rows of one id are one
    image found under several labels (a search log): it is never its own neighbour.

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The images' embedding folder, or a loaded :class:`~simlabel.store.Embeddings`.
    labels : str, os.PathLike or pandas.DataFrame
        The noisy labels: ``id,label`` and optionally ``rank`` (the search rank), as a CSV, a
        catalog with ``label_col`` or a table.
    semantics : CategorySemantics, str or os.PathLike, optional
        The category relations: a :class:`~simlabel.semantics.categories.CategorySemantics`, a
        path to one saved as JSON, or ``None`` (built here from the label names with the
        defaults).
    config : SideInfoConfig, optional
        The method's settings; default ``SideInfoConfig()``.
    stage : {1, 2}, default 1
        1 (rank + neighbours) or 2 (also text matching).
    texts : mapping of str to str, optional
        Stage 2: id -> text (title) for the keywords; ``None``: the predictions alone.
    predictor : callable, optional
        Stage 2 (required): a :data:`Predictor` trained with the stage-1 weights
        (:func:`simlabel.training.oof_predictor` gives the out-of-fold heads).
    out : str or os.PathLike, optional
        Write the weighted labels there as CSV, with ``<out>.summary.json`` (one output set),
        under a lock on ``out``.
    device : str, default "auto"
        Where the category names (and stage 2's keywords) are embedded.
    text_encoder : str or callable, optional
        The text model that embeds them (a spec such as ``"minilm"``, the default, or an
        encoder).
    log : callable, optional
        Called with a line of progress text.
    label_col : str, default "label"
        The label column when ``labels`` is a catalog.
    graph : str, os.PathLike or KnnGraph, optional
        A k-NN graph of ``emb`` (a folder made by ``simlabel graph`` or a
        :class:`~simlabel.graph.KnnGraph`, ``k >= config.knn``); images with fewer than ``knn``
        labelled graph neighbours are searched exactly among the labelled images.
    index : str, os.PathLike or NeighborIndex, optional
        A saved or built index over ``emb``, used when no graph is given. ``graph``, ``index``
        and ``config.index`` follow :func:`simlabel.graph.neighbour_source`'s one rule (a graph,
        else an index, else a new index of kind ``config.index`` over the labelled images); the
        weights are the same for an exact graph or index.

    Returns
    -------
    SideInfoWeights
        ``labels``: the input's columns plus ``rank_weight, agreement, stage1_weight`` (+
        ``pred_match, keyword_match, keywords, text_score``) and ``weight``, the column to train
        with (``simlabel train --weight-col weight``); ``summary``: what the JSON records.

    Raises
    ------
    InputError
        A stage other than 1 or 2, stage 2 without a predictor, categories missing from the
        semantics or an unreadable semantics file, ranks below 1, both ``graph`` and ``index``,
        or a graph/index of other embeddings.
    LabelFileError
        A label file that cannot be read.
    MissingIdsError
        Labelled ids without an embedding.
    StoreError
        ``emb`` is not a complete embedding folder.
    ModelError
        The text model cannot be loaded.
    LockedError
        Another process is writing ``out``.

    Examples
    --------
    >>> from simlabel import side_info_weights
    >>> made = side_info_weights("emb/", "search.csv", stage=1, out="weighted.csv")  # doctest: +SKIP
    >>> made.labels["weight"].describe()  # doctest: +SKIP
    """
    cfg = config or SideInfoConfig()
    if stage not in (1, 2):
        raise InputError(f"stage must be 1 or 2; got {stage}")
    if stage == 2 and predictor is None:
        raise InputError("stage 2 needs a predictor trained with the stage-1 weights (simlabel.training.oof_predictor)")
    table = labels.copy() if isinstance(labels, pd.DataFrame) else read_labels(labels, label_col=label_col)
    embeddings = as_embeddings(emb)
    X = embeddings.rows(table["id"].astype(str)).matrix
    categories = sorted(table["label"].astype(str).unique())
    if semantics is None:
        semantics = category_semantics(categories, text_encoder=text_encoder or "minilm", device=device)
    elif not isinstance(semantics, CategorySemantics):
        semantics = CategorySemantics.load(semantics)
    missing_cats = sorted(set(categories) - set(semantics.names))
    if missing_cats:
        raise InputError(f"categories missing from the semantics: {', '.join(missing_cats[:5])}")
    order = pd.Index(semantics.names).get_indexer(categories)
    sim = semantics.similarity[np.ix_(order, order)]
    related_full = semantics.neighbors
    # keep only related categories present in this label set, re-coded
    recode = np.full(len(semantics.names), -1, dtype=np.int64)
    recode[order] = np.arange(len(categories))
    rel = recode[related_full[order]]
    rel = np.where(rel >= 0, rel, np.arange(len(categories))[:, None])  # absent -> self (no extra credit)
    rank = pd.to_numeric(table["rank"], errors="coerce").to_numpy() if "rank" in table.columns else None
    item_ids = table["id"].astype(str).tolist()
    # each distinct image's neighbours among the labelled images, by the one rule (graph, index, or built)
    from simlabel.graph import neighbour_source

    distinct = pd.unique(pd.Series(item_ids))
    nbrs = None
    if len(distinct) > 1 and cfg.knn >= 1:
        knn = neighbour_source(embeddings, min(cfg.knn, len(distinct) - 1), among=embeddings.positions(distinct),
                               graph=graph, index=index, kind=cfg.index)
        nbrs = knn(embeddings.positions(distinct))
    # rows of one id are one image found under several labels (a search log): never its own neighbour
    s1 = stage1_table(X, table["label"].astype(str).tolist(), rank, categories, sim, rel, cfg, ids=item_ids,
                      neighbors=nbrs)
    result = table.drop(columns="weight", errors="ignore")
    result["rank_weight"] = s1["rank_weight"].to_numpy()
    result["agreement"] = s1["agreement"].to_numpy()
    result["stage1_weight"] = s1["weight"].to_numpy()
    result["weight"] = result["stage1_weight"]
    if stage == 2:
        if log:
            log(f"stage 2: out-of-fold predictions ({cfg.stage2_folds or 'in-sample'} folds)")
        y = result["label"].astype(str).tolist()
        proba = predictor(X, y, result["stage1_weight"].to_numpy(), categories)
        item_texts = None if texts is None else [texts.get(str(i), "") for i in result["id"]]
        s2 = stage2_scores(proba, y, categories, sim, cfg, texts=item_texts, encoder=text_encoder, device=device)
        result["pred_match"] = s2["pred_match"].to_numpy()
        result["keyword_match"] = s2["keyword_match"].to_numpy()
        result["keywords"] = s2["keywords"].to_numpy()
        result["text_score"] = s2["score"].to_numpy()
        result["weight"] = final_weights(result["stage1_weight"], result["text_score"], cfg.stage2_combine)
    w = result["weight"].to_numpy(dtype=np.float64)
    summary = {
        "stage": stage,
        "n": int(len(result)),
        "n_images": int(len(distinct)),
        "categories": [str(c) for c in categories],
        "knn": cfg.knn,
        "neighbours": None if nbrs is None else knn.summary,
        "weight": ({"mean": float(w.mean()), "p10": float(np.quantile(w, 0.1)), "median": float(np.median(w)),
                    "p90": float(np.quantile(w, 0.9))} if len(w) else None),
        "embeddings_fingerprint": embeddings.fingerprint,
    }
    if out is not None:
        out = Path(out)
        with exclusive(out):
            write_set(out.with_name(out.name + MANIFEST_SUFFIX),
                      {out: lambda tmp: result.to_csv(tmp, index=False, float_format="%.6g")}, summary)
    return SideInfoWeights(result, summary)
