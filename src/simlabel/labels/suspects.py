r"""Suspected label errors in single-label catalogs: k-NN votes (SimiFeat), cleanlab as the peer.

The most common case in a shop: every product has one seller-given label, and some are wrong.

**knn** (Zhu, Dong & Liu, "Detecting Corrupted Labels Without Training a Model to Predict",
ICML 2022; implemented from the paper). An item's labelled neighbours vote for its label:

.. math::

    v_i(c) = \frac{\sum_{j \in N_k(i)} w_{ij}\, D_{g(j)}(c)}{\sum_{j \in N_k(i)} w_{ij}},
    \qquad \mathrm{score}_i = v_i(\tilde y_i),

with :math:`N_k(i)` the item's ``k`` nearest labelled neighbours, :math:`w_{ij} = \max(s_{ij}, 0)`
(cosine; ``weighting="uniform"``: 1) and :math:`D_g` the label distribution of the neighbour's
near-duplicate group (one-hot for an item without duplicates).

* ``mode="vote"`` (the paper's local voting): an item is suspect when another label wins the vote.
* ``mode="rank"`` (the paper's ranking): within each given class :math:`j`, the
  :math:`\lfloor n_j (1 - P(y = j \mid \tilde y = j)) \rceil` items of lowest score are suspect. The
  clean-given-noisy rate comes from the noise transition matrix :math:`T_{ab} = P(\tilde y = b \mid
  y = a)` and the clean prior :math:`p`, :math:`P(y=j \mid \tilde y=j) = p_j T_{jj} / \sum_a p_a T_{aj}`,
  both estimated by HOC (Zhu, Song & Liu, ICML 2021) from the label consensus of each item and its
  two nearest neighbours, which are assumed to share its true class (2-NN clusterability):
  :math:`e_1 = p^\top T`, :math:`e_2[b,c] = \sum_a p_a T_{ab} T_{ac}`,
  :math:`e_3[b,c,d] = \sum_a p_a T_{ab} T_{ac} T_{ad}`, fitted by least squares over the simplex
  (:func:`estimate_noise_transition`).

**Near-duplicates.** Items whose embeddings are near-identical (cosine >= ``duplicate_threshold``
along graph edges, grouped by connected components) are one product: a group votes once, with
the distribution of its members' labels, and never for its own members. A group whose members
carry different labels is reported on its own (``method="duplicates"``): the members whose label
differs from the group's majority (all of them on a tie).

**cleanlab** (the peer): :func:`cleanlab.filter.find_label_issues` on out-of-fold probabilities
(a :data:`~simlabel.labels.side_info.Predictor`, e.g. :func:`simlabel.training.oof_predictor`);
the score is the self-confidence :math:`\hat p_i(\tilde y_i)`.

Every suspect is explained by its nearest labelled neighbours, their labels and similarities.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.files import MANIFEST_SUFFIX, exclusive, write_set
from simlabel.index import NeighborIndex, Neighbors
from simlabel.labels.io import read_labels
from simlabel.store import Embeddings

if TYPE_CHECKING:
    from simlabel.graph import KnnGraph
    from simlabel.labels.side_info import Predictor

__all__ = [
    "SuspectsConfig",
    "duplicate_groups",
    "estimate_noise_transition",
    "find_suspects",
    "knn_votes",
    "rank_flags",
]

METHODS = ("knn", "cleanlab", "both")
OUTPUT_COLUMNS = ["id", "label", "suggested", "score", "rank", "method", "neighbor_ids", "neighbor_labels",
                  "neighbor_similarities"]


@dataclass
class SuspectsConfig:
    r"""How suspected label errors are found: k-NN votes (SimiFeat), cleanlab, or both.

    An item's labelled neighbours vote for its label, ``v_i(c) = sum_j w_ij D_g(j)(c) / sum_j w_ij``
    over its ``k`` nearest labelled neighbours ``j`` (``D_g`` the label distribution of the
    neighbour's near-duplicate group), and its score is ``v_i(y_i)``, the share of its own label
    (the module docstring gives the details).

    Parameters
    ----------
    method : {"knn", "cleanlab", "both"}, default "knn"
        ``knn``: the neighbours' votes (Zhu, Dong & Liu, ICML 2022); ``cleanlab``: cleanlab's
        ``find_label_issues`` on out-of-fold probabilities (needs a predictor); ``both``.
    k : int, default 10
        Labelled neighbours that vote (at most the number of labelled items minus one).
    mode : {"rank", "vote"}, default "rank"
        ``rank``: within each given class ``j``, the ``round(n_j (1 - P(y = j | y~ = j)))`` items
        of lowest score are suspect, the clean-given-noisy rates estimated by HOC from the noise
        transition matrix ``T`` and the clean prior ``p``; ``vote``: an item is suspect when
        another label wins the vote.
    weighting : {"similarity", "uniform"}, default "similarity"
        ``similarity``: each vote weighs its cosine, ``w_ij = max(s_ij, 0)``; ``uniform``: 1.
    duplicate_threshold : float or None, default 0.98
        Near-duplicates: a cosine at or above it (in ``(0, 1]``) joins two items into one
        product, which votes once and never for its own members; a group whose members disagree
        is reported (``method`` ``duplicates``). ``None``: off.
    index : {"auto", "flat", "ivf", "hnsw"}, default "auto"
        How neighbours are found without a graph or index (:func:`simlabel.index.auto_kind`).
    hoc_steps : int, default 1500
        HOC: gradient (Adam) steps of the least-squares fit of ``T`` and ``p``.
    cleanlab_filter : str, default "prune_by_noise_rate"
        cleanlab's ``filter_by``: ``prune_by_noise_rate``, ``prune_by_class``, ``both``,
        ``confident_learning`` or ``predicted_neq_given``.
    seed : int, default 0
        Seed of the HOC fit and of a built index.

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field).

    Examples
    --------
    >>> from simlabel import SuspectsConfig
    >>> cfg = SuspectsConfig(mode="vote", k=20)
    >>> cfg.method, cfg.k, cfg.duplicate_threshold
    ('knn', 20, 0.98)
    """

    method: str = "knn"
    #: labelled neighbours that vote
    k: int = 10
    #: ``rank`` (per-class noise rates, estimated by HOC) or ``vote`` (another label wins)
    mode: str = "rank"
    #: ``similarity`` (each vote weighs its cosine) or ``uniform``
    weighting: str = "similarity"
    #: near-duplicates: cosine at or above this joins two items into one product; ``None``: off
    duplicate_threshold: float | None = 0.98
    #: how neighbours are found without a graph (:func:`simlabel.index.auto_kind`)
    index: str = "auto"
    #: HOC: gradient steps of the least-squares fit of ``T`` and ``p``
    hoc_steps: int = 1500
    #: cleanlab's ``filter_by``
    cleanlab_filter: str = "prune_by_noise_rate"
    seed: int = 0

    def __post_init__(self) -> None:
        one_of(self.method, METHODS, "method")
        positive_int(self.k, "k")
        one_of(self.mode, ("rank", "vote"), "mode")
        one_of(self.weighting, ("similarity", "uniform"), "weighting")
        if self.duplicate_threshold is not None:
            in_range(self.duplicate_threshold, "duplicate_threshold", 0.0, 1.0, lo_open=True)
        one_of(self.index, ("auto", "flat", "ivf", "hnsw"), "index")
        positive_int(self.hoc_steps, "hoc_steps")
        one_of(self.cleanlab_filter, ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                                      "predicted_neq_given"), "cleanlab_filter")


# -- pure cores ------------------------------------------------------------------------------------


def duplicate_groups(neighbors: np.ndarray, similarities: np.ndarray, threshold: float | None) -> np.ndarray:
    """``(n,)`` group of each row: connected components of the edges with similarity >= ``threshold``
    (``neighbors`` ``(n, k)`` positions, ``-1`` none); ``None``: every row its own group."""
    nb = np.asarray(neighbors, dtype=np.int64)
    n = nb.shape[0]
    if threshold is None or nb.size == 0:
        return np.arange(n, dtype=np.int64)
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    sim = np.asarray(similarities)
    keep = (nb >= 0) & (sim >= threshold)
    rows = np.repeat(np.arange(n), nb.shape[1])[keep.ravel()]
    cols = nb.ravel()[keep.ravel()]
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, groups = connected_components(adj, directed=True, connection="weak")
    return groups.astype(np.int64)


def _descending_within_rows(row: np.ndarray, w: np.ndarray) -> bool:
    """Whether ``w`` never rises within a run of equal ``row`` (a graph's best-first rows: no sort needed)."""
    same = row[1:] == row[:-1]
    return bool((w[1:][same] <= w[:-1][same]).all())


def knn_votes(codes: np.ndarray, neighbors: np.ndarray, similarities: np.ndarray, n_classes: int, *,
              groups: np.ndarray | None = None, weighting: str = "similarity") -> np.ndarray:
    """``(n, C)`` vote shares :math:`v_i(c)` of each row's neighbours (see the module docstring).

    ``codes`` ``(n,)`` label codes in ``[0, C)``; ``neighbors``/``similarities`` ``(n, k)`` over the
    same rows (``-1``: none). ``groups``: near-duplicate groups (:func:`duplicate_groups`): a group
    votes once, with its members' label distribution, at its best similarity, and never for its
    own members. A row without a vote gets all zeros.
    """
    y = np.asarray(codes, dtype=np.int64)
    nb = np.asarray(neighbors, dtype=np.int64)
    n, k = nb.shape
    if len(y) != n:
        raise InputError(f"{len(y)} labels for {n} neighbour rows")
    if ((y < 0) | (y >= n_classes)).any():
        raise InputError(f"label codes must be in [0, {n_classes})")
    one_of(weighting, ("similarity", "uniform"), "weighting")
    g = np.arange(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    n_groups = int(g.max()) + 1 if n else 0
    # label distribution of each group, sparse: a group of one is one label, and a dense (rows x k, C) product
    # would take gigabytes at a million rows
    size = np.bincount(g, minlength=n_groups).astype(np.float64)
    dist = csr_matrix((1.0 / size[g], (g, y)), shape=(n_groups, n_classes))
    w = np.ones((n, k)) if weighting == "uniform" else np.maximum(np.asarray(similarities, dtype=np.float64), 0.0)
    row = np.repeat(np.arange(n), k)
    ng = np.where(nb >= 0, g[np.maximum(nb, 0)], -1).ravel()
    wv = w.ravel()
    ok = (ng >= 0) & (ng != g[row])
    row, ng, wv = row[ok], ng[ok], wv[ok]
    # one vote per (row, group): its highest weight. The entries sorted by weight (descending) within each
    # row, then by (row, group) as one int64 key with a stable sort, so each pair's first entry is its best:
    # a single-key sort where a three-key lexsort took 5 s at a million rows
    by_weight = np.lexsort((-wv, row)) if not _descending_within_rows(row, wv) else None
    if by_weight is not None:
        row, ng, wv = row[by_weight], ng[by_weight], wv[by_weight]
    order = np.argsort(row * np.int64(max(n_groups, 1)) + ng, kind="stable")
    row, ng, wv = row[order], ng[order], wv[order]
    first = np.ones(len(row), dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (ng[1:] != ng[:-1])
    row, ng, wv = row[first], ng[first], wv[first]
    votes = (csr_matrix((wv, (row, ng)), shape=(n, n_groups)) @ dist).toarray()
    total = votes.sum(axis=1, keepdims=True)
    votes /= np.where(total > 0, total, 1.0)  # a row without a vote stays all zeros
    return votes


def _consensus(codes: np.ndarray, nn2: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HOC's first-, second- and third-order label consensus of each row and its two neighbours."""
    y = np.asarray(codes, dtype=np.int64)
    ok = (nn2 >= 0).all(axis=1)
    a, b, c = y[ok], y[nn2[ok, 0]], y[nn2[ok, 1]]
    m = max(len(a), 1)
    e1 = np.bincount(a, minlength=n_classes) / m
    e2 = np.bincount(a * n_classes + b, minlength=n_classes**2).reshape(n_classes, n_classes) / m
    e3 = np.bincount((a * n_classes + b) * n_classes + c, minlength=n_classes**3).reshape((n_classes,) * 3) / m
    return e1, e2, e3


def estimate_noise_transition(codes: np.ndarray, nn2: np.ndarray, n_classes: int, *, steps: int = 1500,
                              seed: int = 0, init_diagonal: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """HOC (Zhu, Song & Liu, ICML 2021): the noise transition matrix ``T`` ``(C, C)`` (rows: the
    true class, sums 1) and the clean prior ``p`` ``(C,)`` that best explain the label consensus
    of each row and its two nearest neighbours ``nn2`` ``(n, 2)``.

    Minimises :math:`\\lVert p^\\top T - e_1\\rVert^2 + \\lVert T^\\top \\mathrm{diag}(p) T - e_2\\rVert^2
    + \\lVert \\sum_a p_a T_a \\otimes T_a \\otimes T_a - e_3\\rVert^2` with ``T`` and ``p`` as softmaxes
    (rows on the simplex), from ``T = init_diagonal`` on the diagonal and ``p = e_1`` (Adam).
    """
    import torch

    e1, e2, e3 = (torch.as_tensor(e, dtype=torch.float64) for e in _consensus(codes, np.asarray(nn2), n_classes))
    c = n_classes
    off = (1 - init_diagonal) / max(c - 1, 1)
    t0 = np.full((c, c), off) + np.eye(c) * (init_diagonal - off)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t_logit = torch.tensor(np.log(np.maximum(t0, 1e-6)), dtype=torch.float64, requires_grad=True)
        p_logit = torch.tensor(np.log(np.maximum(e1.numpy(), 1e-6)), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([t_logit, p_logit], lr=0.05)
        for _ in range(steps):
            T = torch.softmax(t_logit, dim=1)
            p = torch.softmax(p_logit, dim=0)
            pt = p[:, None] * T
            loss = ((pt.sum(0) - e1) ** 2).sum() + ((T.T @ pt - e2) ** 2).sum()
            loss = loss + ((torch.einsum("ab,ac,ad->bcd", pt, T, T) - e3) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return torch.softmax(t_logit, 1).detach().numpy(), torch.softmax(p_logit, 0).detach().numpy()


def clean_given_noisy(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """:math:`P(y = j \\mid \\tilde y = j) = p_j T_{jj} / \\sum_a p_a T_{aj}` for each class ``j``."""
    noisy = p @ T
    return np.divide(p * np.diag(T), noisy, out=np.ones_like(noisy), where=noisy > 0)


def rank_flags(codes: np.ndarray, scores: np.ndarray, clean_rate: np.ndarray) -> np.ndarray:
    """SimiFeat's ranking: within each given class ``j``, flag the ``round(n_j (1 - clean_rate[j]))``
    rows of lowest score (ties by row order)."""
    y = np.asarray(codes, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((np.arange(len(y)), s, y))  # by class, then score ascending
    sy = y[order]
    start = np.searchsorted(sy, sy, side="left")
    within = np.arange(len(y)) - start  # rank inside the class
    n_c = np.bincount(y, minlength=len(clean_rate))
    quota = np.rint(n_c * (1.0 - np.clip(clean_rate, 0.0, 1.0))).astype(np.int64)
    flags = np.zeros(len(y), dtype=bool)
    flags[order] = within < quota[sy]
    return flags


# -- the method on embeddings ----------------------------------------------------------------------


def _labelled_neighbours(emb: Embeddings, ids: Sequence[str], k: int, cfg: SuspectsConfig,
                         graph: "str | os.PathLike | KnnGraph | None",
                         index: "str | os.PathLike | NeighborIndex | None") -> Neighbors:
    """Each labelled item's ``k`` nearest labelled items (positions into ``ids``), by the one rule."""
    from simlabel.graph import neighbours_for

    return neighbours_for(emb, k, among=emb.positions(ids), graph=graph, index=index, kind=cfg.index, seed=cfg.seed)


def _explain(ids: np.ndarray, labels: np.ndarray, nb: np.ndarray, sims: np.ndarray, top: int = 5) -> dict[str, list[str]]:
    nb, sims = nb[:, :top], sims[:, :top]
    ok = nb >= 0
    id_s = np.where(ok, ids[np.maximum(nb, 0)], "").astype(object)
    lab_s = np.where(ok, labels[np.maximum(nb, 0)], "").astype(object)
    sim_s = np.char.mod("%.3f", np.where(ok, sims, 0.0)).astype(object)

    def join(a: np.ndarray) -> list[str]:
        # column by column over object arrays (C loops of str concatenation), the present ones "|"-separated
        out = np.full(len(a), "", dtype=object)
        for j in range(a.shape[1]):
            out = np.where(ok[:, j], np.where(out == "", a[:, j], out + "|" + a[:, j]), out)
        return out.tolist()
    return {"neighbor_ids": join(id_s), "neighbor_labels": join(lab_s), "neighbor_similarities": join(sim_s)}


@dataclass
class SuspectsResult:
    """What :func:`find_suspects` found: the suspected label errors, explained, and a summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        ``id, label, suggested, score, rank, method`` (and ``cleanlab_score`` with ``both``) and
        the explanation ``neighbor_ids, neighbor_labels, neighbor_similarities`` (the nearest
        labelled neighbours, ``|``-separated, best first), suspects first by ``rank`` (every item
        with ``all_items``, ``rank`` empty for the unflagged). ``method`` says who flagged the
        item: ``knn``, ``cleanlab``, ``knn+cleanlab`` or ``duplicates``.
    summary : dict
        The counts (``n`` items, ``classes``, ``n_suspects``, ``n_knn``, ``n_cleanlab``,
        ``n_both``, ``n_duplicate_groups``, ``n_duplicate_conflicts``), ``k``, ``mode``,
        ``method``, and in rank mode the estimated noise rates (``noise_rate_estimate``,
        ``noise_rate_by_class``): what the JSON and the page report.

    Attributes
    ----------
    suspects : pandas.DataFrame
        The flagged rows of ``labels`` (those with a ``rank``), best first.

    Examples
    --------
    Built by hand here; :func:`find_suspects` makes it.

    >>> import pandas as pd
    >>> from simlabel import SuspectsResult
    >>> table = pd.DataFrame({"id": ["3", "8"], "label": ["Shirts", "Shoes"], "suggested": ["Tshirts", "Shoes"],
    ...                       "score": [0.1, 0.9], "rank": pd.array([1, None], dtype="Int64"), "method": ["knn", ""]})
    >>> made = SuspectsResult(table, {"n": 2, "n_suspects": 1})
    >>> made.suspects["id"].tolist()
    ['3']
    """

    labels: pd.DataFrame
    summary: dict

    @property
    def suspects(self) -> pd.DataFrame:
        """The flagged rows, best first."""
        return self.labels[self.labels["rank"].notna()]


def find_suspects(
    emb: str | os.PathLike | Embeddings | None,
    labels: str | os.PathLike | pd.DataFrame,
    config: SuspectsConfig | None = None,
    *,
    graph: "str | os.PathLike | KnnGraph | None" = None,
    index: "str | os.PathLike | NeighborIndex | None" = None,
    predictor: "Predictor | None" = None,
    out: str | os.PathLike | None = None,
    label_col: str = "label",
    all_items: bool = False,
    html: str | os.PathLike | None = None,
    render: "Callable[[SuspectsResult, Path], None] | None" = None,
    only: "Sequence[str] | None" = None,
) -> SuspectsResult:
    """Suspected label errors of a single-label file (see the module docstring).

    Parameters
    ----------
    emb
        The items' embedding folder or a loaded :class:`~simlabel.store.Embeddings`. With a ``graph`` its
        vectors are read only for ``cleanlab``'s model or an item whose graph row holds fewer than ``k``
        labelled items (when every item is labelled, never), and it may be ``None``
        (:func:`simlabel.graph.graph_rows`).
    labels
        ``id,label`` (a CSV, a catalog with ``label_col``, or a table).
    graph, index
        Where the neighbours among the labelled items come from (:func:`simlabel.graph.neighbour_source`'s
        one rule): a k-NN graph of ``emb`` (``k >= config.k``; exact search among the labelled items for an
        item whose graph row holds fewer), else a saved or built index over ``emb``, else a new index of
        kind ``config.index`` over the labelled items.
    predictor
        For ``cleanlab`` and ``both``: out-of-fold class probabilities
        (:func:`simlabel.training.oof_predictor` with ``top=None``).
    all_items
        Return every item (``rank`` empty for the unflagged), not only the suspects.
    only
        Check these ids alone (e.g. the products that arrived today): every labelled item still votes and
        trains the peer, but only these are flagged, ranked and returned. Ids without a label are ignored
        (``summary["n_checked"]`` counts the others).
    out, html, render
        Write the table to ``out`` (CSV) and the page to ``html``, drawn by ``render(result, path)``
        (e.g. :func:`simlabel.report.write_suspects_html`: this module never renders HTML). With ``out``
        the two are one output set, ``<out>.summary.json`` its manifest with the summary (as every
        label job writes its files).

    Returns
    -------
    SuspectsResult
        ``labels``: ``id, label, suggested, score, rank, method`` and the explanation ``neighbor_ids,
        neighbor_labels, neighbor_similarities`` (``|``-separated, best first), suspects first by
        rank; ``method`` is ``knn``, ``cleanlab``, ``knn+cleanlab`` or ``duplicates``. ``summary``: the
        counts and, in rank mode, the estimated noise rates. Written as CSV when ``out`` is set.
    """
    cfg = config or SuspectsConfig()
    if html is not None and render is None:  # before the work, not after it
        raise InputError("`html` needs `render` (a function drawing the page, e.g. simlabel.report.write_suspects_html)")
    table = labels.copy() if isinstance(labels, pd.DataFrame) else read_labels(labels, label_col=label_col)
    if table.empty:
        raise InputError(f"{labels if not isinstance(labels, pd.DataFrame) else 'labels'}: no labelled items")
    from simlabel.graph import graph_rows

    # with a graph, its rows: the vectors are read only for cleanlab's model or a row with too few labelled neighbours
    e, graph = graph_rows(emb, graph)
    ids = table["id"].astype(str).to_numpy(dtype=object)
    if pd.Index(ids).duplicated().any():
        raise InputError("labels: one label per id (an id appears twice)")
    lab = table["label"].astype(str).to_numpy(dtype=object)
    classes = sorted(set(lab))
    if len(classes) < 2:
        raise InputError(f"labels: suspects need at least 2 classes; got {classes}")
    y = pd.Index(classes).get_indexer(lab)
    n, c = len(ids), len(classes)
    k = min(cfg.k, n - 1)
    if k < 2 and cfg.method != "cleanlab":
        raise InputError(f"labels: {n} labelled items are too few for k-NN votes")
    if cfg.method in ("cleanlab", "both") and predictor is None:
        raise InputError("method cleanlab needs a predictor of out-of-fold probabilities (simlabel.training.oof_predictor)")
    nb, sims = _labelled_neighbours(e, ids, k, cfg, graph, index)
    groups = duplicate_groups(nb, sims, cfg.duplicate_threshold)
    summary: dict = {"n": n, "classes": c, "k": k, "mode": cfg.mode, "method": cfg.method}
    suggested = np.full(n, -1)
    score = np.full(n, np.nan)
    # the suggested label's support, to order suspects of equal score (the surest first)
    support = np.zeros(n)
    flag_knn = np.zeros(n, dtype=bool)
    if cfg.method in ("knn", "both"):
        votes = knn_votes(y, nb, sims, c, groups=groups, weighting=cfg.weighting)
        score = votes[np.arange(n), y]
        has_vote = votes.sum(axis=1) > 0
        # ties keep the given label: it wins where its share equals the best
        best = np.where(score >= votes.max(axis=1), y, votes.argmax(axis=1))
        suggested = np.where(has_vote, best, y)
        if cfg.mode == "vote":
            flag_knn = has_vote & (suggested != y)
        else:
            # HOC on each item's two nearest other groups
            first2 = _first_groups(nb, groups, 2)
            T, p = estimate_noise_transition(y, first2, c, steps=cfg.hoc_steps, seed=cfg.seed)
            clean = clean_given_noisy(T, p)
            flag_knn = rank_flags(y, np.where(has_vote, score, np.inf), clean) & has_vote
            summary["noise_rate_estimate"] = float(1 - (clean * np.bincount(y, minlength=c)).sum() / n)
            summary["noise_rate_by_class"] = {cl: float(1 - r) for cl, r in zip(classes, clean)}
            # a flagged item suggests the best other label
            # (in place and restored: a copy of the votes is gigabytes at a million rows)
            own = votes[np.arange(n), y].copy()
            votes[np.arange(n), y] = -1
            suggested = np.where(flag_knn, votes.argmax(axis=1), suggested)
            votes[np.arange(n), y] = own
        support = votes[np.arange(n), np.where(suggested >= 0, suggested, y)]
    flag_cl = np.zeros(n, dtype=bool)
    cl_score = np.full(n, np.nan)
    if cfg.method in ("cleanlab", "both"):
        from cleanlab.filter import find_label_issues

        proba = np.asarray(predictor(e.rows(ids).matrix, list(lab), np.ones(n), classes))
        issues = find_label_issues(y, proba, filter_by=cfg.cleanlab_filter)
        flag_cl = np.asarray(issues, dtype=bool)
        cl_score = proba[np.arange(n), y]
        if cfg.method == "cleanlab":
            score = cl_score
            suggested = np.where(flag_cl, proba.argmax(axis=1), y)
            support = proba.max(axis=1)
        else:
            # where only cleanlab flags, its suggestion
            suggested = np.where(flag_cl & ~flag_knn, proba.argmax(axis=1), suggested)
    # near-duplicate groups whose members disagree: the members off the group's majority
    dup_flag, dup_suggest = _duplicate_conflicts(y, groups, c)
    checked = np.ones(n, dtype=bool) if only is None else pd.Index(ids).isin([str(i) for i in only])
    if only is not None:  # the others voted and trained; they are not the ones asked about
        flag_knn, flag_cl, dup_flag = flag_knn & checked, flag_cl & checked, dup_flag & checked
        summary["n_checked"] = int(checked.sum())
    method = np.full(n, "", dtype=object)
    method[flag_knn] = "knn"
    method[flag_cl & ~flag_knn] = "cleanlab"
    method[flag_cl & flag_knn] = "knn+cleanlab"
    only_dup = dup_flag & (method == "")
    method[only_dup] = "duplicates"
    suggested = np.where(only_dup, np.where(dup_suggest >= 0, dup_suggest, suggested), suggested)
    flagged = method != ""
    summary.update(n_suspects=int(flagged.sum()), n_knn=int(flag_knn.sum()), n_cleanlab=int(flag_cl.sum()),
                   n_both=int((flag_knn & flag_cl).sum()), n_duplicate_conflicts=int(dup_flag.sum()),
                   n_duplicate_groups=int((np.bincount(groups) > 1).sum()))
    # rank: both methods first, then by score ascending (the least supported label first), then by
    # the suggested label's support descending
    tier = np.select([method == "knn+cleanlab", method == "duplicates"], [0, 2], 1)
    key = np.where(np.isnan(score), np.inf, score)
    order = np.lexsort((np.arange(n), -support, key, tier, ~flagged))
    rank = np.full(n, np.nan)
    rank[order[: int(flagged.sum())]] = np.arange(1, int(flagged.sum()) + 1)
    suggested_names = np.asarray(classes, dtype=object)[np.where(suggested >= 0, suggested, y)]
    # the rows written, in rank order: the suspects, or every (checked) item with all_items; only they are explained
    keep = order[flagged[order]] if not all_items else order[checked[order]] if only is not None else order
    result = pd.DataFrame({"id": ids[keep], "label": lab[keep], "suggested": suggested_names[keep],
                           "score": np.round(score[keep], 6), "rank": rank[keep], "method": method[keep],
                           **_explain(ids, lab, nb[keep], sims[keep])})
    if cfg.method == "both":
        result.insert(4, "cleanlab_score", np.round(cl_score[keep], 6))
    result["rank"] = result["rank"].astype("Int64")
    found = SuspectsResult(result, summary)
    if out is not None:
        out = Path(out)
        members = {out: lambda tmp: result.to_csv(tmp, index=False),
                   **({Path(html): lambda tmp: render(found, tmp)} if html is not None else {})}
        with exclusive(out):
            write_set(out.with_name(out.name + MANIFEST_SUFFIX), members,
                      {"summary": summary, "html": str(html) if html is not None else None})
    elif html is not None:
        render(found, Path(html))
    return found


def _first_groups(nb: np.ndarray, groups: np.ndarray, m: int) -> np.ndarray:
    """Each row's first ``m`` neighbours of another group than its own (``-1`` where fewer)."""
    n, k = nb.shape
    ng = np.where(nb >= 0, groups[np.maximum(nb, 0)], -1)
    other = (nb >= 0) & (ng != groups[:, None])
    pos = np.argsort(~other, axis=1, kind="stable")[:, :m]
    got = np.take_along_axis(nb, pos, axis=1)
    ok = np.take_along_axis(other, pos, axis=1)
    out = np.where(ok, got, -1)
    if out.shape[1] < m:
        out = np.pad(out, ((0, 0), (0, m - out.shape[1])), constant_values=-1)
    return out


def _duplicate_conflicts(y: np.ndarray, groups: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Members of near-duplicate groups whose label is not the group's single majority label
    (every member on a tie), and that majority (``-1`` on a tie)."""
    n_groups = int(groups.max()) + 1
    counts = np.zeros((n_groups, n_classes), dtype=np.int64)
    np.add.at(counts, (groups, y), 1)
    top = counts.max(axis=1)
    majority = counts.argmax(axis=1)
    tie = (counts == top[:, None]).sum(axis=1) > 1
    mixed = (counts > 0).sum(axis=1) > 1
    g = groups
    flag = mixed[g] & (tie[g] | (y != majority[g]))
    return flag, np.where(tie[g], -1, majority[g])
