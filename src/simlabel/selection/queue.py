"""What a person should label next: the queue ``simlabel select`` writes, and the rule that picks its method.

``auto`` starts cold (TypiClust, :mod:`simlabel.selection.cold`) and switches to uncertainty x diversity
(BADGE, :mod:`simlabel.selection.uncertainty`) once a model exists and the labels reach
``cold_per_class`` per class on average: with fewer, a model's margins say more about the model than
about the items. Each round also says how far the model still moves: the share of the catalog whose
predicted label changed since the previous round's predictions, the stopping signal (labelling more
pays little once it stays near zero).

This room never trains a head: the model's probabilities over the catalog are handed in
(:func:`simlabel.training.select` trains or loads the model and calls :func:`select_items`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.files import MANIFEST_SUFFIX, exclusive, write_set
from simlabel.labels.io import labels_csv, read_labels
from simlabel.selection.cold import MAX_CLUSTERS, coverage_threshold, kmeans_clusters, probcover, typiclust
from simlabel.selection.uncertainty import badge, margin_uncertainty
from simlabel.store import Embeddings

__all__ = ["PREDICTIONS_SUFFIX", "SelectConfig", "Selection", "prediction_change", "select_items"]

PREDICTIONS_SUFFIX = ".predictions.parquet"
Strategy = Literal["auto", "typiclust", "probcover", "badge", "random"]
STRATEGIES = ("auto", "typiclust", "probcover", "badge", "random")


@dataclass
class SelectConfig:
    """How :func:`select_items` chooses.

    Parameters
    ----------
    strategy : {"auto", "typiclust", "probcover", "badge", "random"}, default "auto"
        ``auto``: ``cold`` until a model exists and the labels reach ``cold_per_class`` per class on
        average, then ``badge``.
    cold : {"typiclust", "probcover"}, default "typiclust"
        The cold-start method ``auto`` uses.
    cold_per_class : float, default 3.0
        ``auto`` switches to ``badge`` at this many labels per class (mean over the classes).
    typicality_k : int, default 20
        TypiClust's typicality neighbours.
    max_clusters : int, default 500
        TypiClust's most clusters.
    purity : float, default 0.95
        ProbCover's share of pure balls that sets the radius.
    coverage_k : int, default 100
        Neighbours per item ProbCover's balls are read from (at most the graph's ``k``): a ball holding more
        items than this is cut to them, so a dense region's balls all look alike and the greedy choice
        loses its point; give a graph of ``k >= 100``.
    pool : int, default 0
        BADGE's candidates, the least certain items (``0``: ``max(20 budget, 5000)``).
    duplicate_threshold : float, default 0.95
        BADGE never puts two items of at least this cosine in one batch.
    neighbours : int, default 5
        Nearest labelled neighbours listed beside each item.
    seed : int, default 0
        k-means, BADGE's draws and ``random``.

    Examples
    --------
    >>> from simlabel.selection import SelectConfig
    >>> SelectConfig(strategy="probcover", purity=0.9).purity
    0.9
    """

    strategy: Strategy = "auto"
    cold: Literal["typiclust", "probcover"] = "typiclust"
    cold_per_class: float = 3.0
    typicality_k: int = 20
    max_clusters: int = MAX_CLUSTERS
    purity: float = 0.95
    coverage_k: int = 100
    pool: int = 0
    duplicate_threshold: float = 0.95
    neighbours: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        one_of(self.strategy, STRATEGIES, "strategy")
        one_of(self.cold, ("typiclust", "probcover"), "cold")
        in_range(self.cold_per_class, "cold_per_class", 0)
        positive_int(self.typicality_k, "typicality_k")
        positive_int(self.max_clusters, "max_clusters")
        in_range(self.purity, "purity", 0, 1, lo_open=True)
        positive_int(self.coverage_k, "coverage_k")
        positive_int(self.pool, "pool", minimum=0)
        in_range(self.duplicate_threshold, "duplicate_threshold", 0)
        positive_int(self.neighbours, "neighbours", minimum=0)


@dataclass
class Selection:
    """What :func:`select_items` chose.

    Parameters
    ----------
    labels : pandas.DataFrame
        The queue, best first: ``id, rank, strategy, reason, cluster, typicality, gain, uncertainty,
        proposal, proposal_score, neighbor_ids, neighbor_labels, neighbor_similarities`` (the columns a
        strategy does not fill are empty).
    summary : dict
        The strategy used and why, the counts, ProbCover's radius and coverage, and ``changed``: the
        share of the catalog whose prediction moved since ``previous`` (the stopping signal).
    predictions : pandas.DataFrame or None
        ``id, prediction``: the model's label of every catalog item (``None`` without a model), for the
        next round's ``previous``.

    Examples
    --------
    >>> import pandas as pd
    >>> from simlabel.selection import Selection
    >>> Selection(pd.DataFrame({"id": ["a"]}), {"strategy": "typiclust"}, None).summary["strategy"]
    'typiclust'
    """

    labels: pd.DataFrame
    summary: dict
    predictions: pd.DataFrame | None = None


def prediction_change(previous: pd.DataFrame, current: pd.DataFrame) -> tuple[float, int]:
    """The share of the ids in both tables (``id, prediction``) whose prediction differs, and how many
    ids were compared."""
    both = current.merge(previous, on="id", suffixes=("", "_before"))
    if both.empty:
        return float("nan"), 0
    return float((both["prediction"].astype(str) != both["prediction_before"].astype(str)).mean()), int(len(both))


def _previous(previous: str | os.PathLike | pd.DataFrame | Selection | None) -> pd.DataFrame | None:
    if previous is None:
        return None
    if isinstance(previous, Selection):
        return previous.predictions
    if isinstance(previous, pd.DataFrame):
        return previous
    p = Path(previous)
    if p.suffix != ".parquet":  # the previous queue: its predictions sit beside it
        p = p.with_name(p.name + PREDICTIONS_SUFFIX)
    if not p.exists():
        raise InputError(f"{p}: no predictions of a previous round (select writes OUT{PREDICTIONS_SUFFIX} when it "
                         "has a model)")
    return pd.read_parquet(p)


def select_items(
    emb: str | os.PathLike | Embeddings | None,
    budget: int,
    config: SelectConfig | None = None,
    *,
    labels: str | os.PathLike | pd.DataFrame | None = None,
    proba: np.ndarray | None = None,
    classes: list[str] | None = None,
    graph=None,
    index=None,
    exclude: list[str] | None = None,
    previous: str | os.PathLike | pd.DataFrame | Selection | None = None,
    out: str | os.PathLike | None = None,
    label_col: str = "label",
    only: "list[str] | None" = None,
) -> Selection:
    """Choose ``budget`` items of the catalog for a person to label.

    Parameters
    ----------
    emb : str, os.PathLike, Embeddings or None
        The catalog's embeddings (every item may be chosen but the labelled and the excluded). With a
        ``graph`` its vectors are read only by k-means (TypiClust, ProbCover's purity threshold) and BADGE, and
        it may be ``None`` for the rest (:func:`simlabel.graph.graph_rows`).
    budget : int
        How many items to choose.
    config : SelectConfig, optional
        The strategy and its settings.
    labels : str, os.PathLike or pandas.DataFrame, optional
        The labels known so far (``id,label``): never chosen again; they steer TypiClust to the
        clusters with fewest labels, cover ProbCover's balls first, and explain each item by its
        nearest labelled neighbours.
    proba, classes : ndarray and list of str, optional
        A model's ``(n, C)`` class probabilities for every row of ``emb``, columns in ``classes``
        order: BADGE's input, each item's proposal, and the predictions the stopping signal compares.
    graph, index
        Where neighbours come from (:func:`simlabel.graph.neighbour_source`'s rule).
    exclude : list of str, optional
        Ids never chosen (a test set).
    only : list of str, optional
        Choose among these ids alone (e.g. the products that arrived today); the rest of the catalog still
        shapes the choice (clusters, ProbCover's balls, the model), as the excluded do.
    previous : path, pandas.DataFrame or Selection, optional
        The previous round (its queue file, its predictions table or its :class:`Selection`): the summary's
        ``changed`` is the share of the catalog whose prediction moved since.
    out : str or os.PathLike, optional
        Write the queue as CSV, with ``<out>.summary.json`` and (with a model) ``<out>.predictions.parquet``,
        one output set.
    label_col : str, default "label"
        The label column when ``labels`` is a catalog.

    Returns
    -------
    Selection
        The queue, the summary, and the model's predictions.

    Raises
    ------
    InputError
        A budget larger than the items that may be chosen, probabilities of another shape, ``badge``
        without probabilities, or a graph or index of other embeddings.
    MissingIdsError
        Labelled ids without an embedding.

    Examples
    --------
    >>> from simlabel.selection import SelectConfig, select_items
    >>> chosen = select_items("emb/", 50, SelectConfig(strategy="typiclust"))  # doctest: +SKIP
    >>> chosen.labels[["id", "reason"]].head()  # doctest: +SKIP
    """
    from simlabel.graph import graph_rows, neighbour_source, neighbours_for
    from simlabel.index import NeighborIndex

    cfg = config or SelectConfig()
    index = NeighborIndex.load(index) if index is not None and not isinstance(index, NeighborIndex) else index
    positive_int(budget, "budget")
    # a graph folder read once (TypiClust asks for neighbours once per cluster it visits); with a graph the
    # store's vectors are read only by what needs them: k-means (TypiClust, ProbCover's purity) and BADGE
    e, graph = graph_rows(emb, graph)
    n = len(e.ids)
    known = (labels if isinstance(labels, pd.DataFrame) else read_labels(labels, label_col=label_col)) \
        if labels is not None else pd.DataFrame({"id": [], "label": []})
    lab_pos = e.positions(known["id"].astype(str)) if len(known) else np.zeros(0, dtype=np.int64)
    ex = np.asarray([str(i) for i in (exclude or [])], dtype=object)
    ex_pos = e.positions(ex[e.has(ex)]) if len(ex) else np.zeros(0, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    if only is not None:  # everything else may not be chosen: excluded, not covered
        free = pd.Index(e.ids.astype(str)).isin([str(i) for i in only])
        ex_pos = np.union1d(ex_pos, np.flatnonzero(~free)).astype(np.int64)
    free[lab_pos] = False
    free[ex_pos] = False
    if budget > free.sum():
        raise InputError(f"`budget` {budget} is more than the {int(free.sum()):,} items that may be chosen "
                         f"({n:,} in the catalog, {len(lab_pos):,} labelled, {len(ex_pos):,} excluded)")
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float32)  # a million rows x C: float32 is plenty for argmax and margins
        if proba.shape[0] != n or classes is None or proba.shape[1] != len(classes):
            raise InputError(f"`proba` must be ({n}, len(classes)) for the rows of {e.source}; got {proba.shape}")
    n_classes = known["label"].nunique() if len(known) else 0
    per_class = len(known) / n_classes if n_classes else 0.0
    strategy, why = cfg.strategy, "asked for"
    if strategy == "auto":
        if proba is None:
            strategy, why = cfg.cold, "no model yet"
        elif per_class < cfg.cold_per_class:
            strategy, why = cfg.cold, f"{per_class:.1f} labels per class, fewer than cold_per_class {cfg.cold_per_class:g}"
        else:
            strategy, why = "badge", f"a model and {per_class:.1f} labels per class (cold_per_class {cfg.cold_per_class:g})"
    if strategy == "badge" and proba is None:
        raise InputError("strategy `badge` needs a model's probabilities (`proba`): train one on the labels first")
    summary: dict = {"strategy": strategy, "why": why, "budget": int(budget), "n": int(n), "n_labelled": int(len(lab_pos)),
                     "n_excluded": int(len(ex_pos)), "classes": int(n_classes), "labels_per_class": round(per_class, 3)}
    cols: dict[str, np.ndarray] = {}
    if strategy == "typiclust":
        n_clusters = int(min(len(lab_pos) + budget, cfg.max_clusters, n))
        clusters = kmeans_clusters(e.matrix, n_clusters, seed=cfg.seed)
        near = lambda rows, k: neighbours_for(e, k, among=rows, graph=graph, index=index).similarities  # noqa: E731
        chosen, where, typ = typiclust(clusters, budget, near, labelled=lab_pos, exclude=ex_pos, k=cfg.typicality_k)
        cols = {"cluster": where, "typicality": np.round(typ, 4)}
        reasons = [f"typical of cluster {c} ({int((clusters == c).sum())} items, {int((clusters[lab_pos] == c).sum())} "
                   "labelled)" for c in where]
        summary["n_clusters"] = n_clusters
    elif strategy == "probcover":
        k = cfg.coverage_k
        if graph is not None:
            k = min(k, graph.k)
        nb, sims = neighbours_for(e, k, graph=graph, index=index)
        clusters = kmeans_clusters(e.matrix, int(max(n_classes, min(budget, cfg.max_clusters), 2)), seed=cfg.seed)
        t = coverage_threshold(nb, sims, clusters, cfg.purity)
        chosen, gain, coverage = probcover(nb, sims, t, budget, labelled=lab_pos, exclude=ex_pos, seed=cfg.seed)
        cols = {"gain": gain}
        reasons = [f"covers {g} new items" if g else "all covered: a dense ball" for g in gain]
        summary.update(threshold=round(t, 6), delta=round(float(np.sqrt(max(2 - 2 * t, 0.0))), 6),
                       coverage=round(coverage, 6), coverage_k=int(k))
    elif strategy == "badge":
        chosen = badge(e.matrix, proba, budget, candidates=np.flatnonzero(free), pool=cfg.pool,
                       duplicate_threshold=cfg.duplicate_threshold, seed=cfg.seed)
        u = margin_uncertainty(proba[chosen])
        cols = {"uncertainty": np.round(u, 4)}
        reasons = [f"margin {1 - v:.3f}, unlike the batch" for v in u]
    else:  # random
        chosen = np.random.default_rng(cfg.seed).choice(np.flatnonzero(free), size=budget, replace=False)
        reasons = ["at random"] * len(chosen)
    if len(chosen) < budget:
        summary["short"] = f"only {len(chosen)} items could be chosen"
    table = pd.DataFrame({"id": e.ids[chosen].astype(str), "rank": np.arange(1, len(chosen) + 1),
                          "strategy": strategy, "reason": reasons})
    for name in ("cluster", "typicality", "gain", "uncertainty"):
        table[name] = cols.get(name, np.full(len(chosen), np.nan))
    predictions = None
    if proba is not None:
        best = np.argmax(proba, axis=1)
        cls = np.asarray(classes, dtype=object)
        table["proposal"] = cls[best[chosen]]
        table["proposal_score"] = np.round(proba[chosen, best[chosen]], 4)
        predictions = pd.DataFrame({"id": e.ids.astype(str), "prediction": cls[best]})
        before = _previous(previous)
        if before is not None:
            changed, compared = prediction_change(before, predictions)
            summary.update(changed=round(changed, 6), compared=compared)
    else:
        table["proposal"], table["proposal_score"] = "", np.nan
    if len(lab_pos) and cfg.neighbours and len(chosen):
        k = min(cfg.neighbours, len(lab_pos))
        src = neighbour_source(e, k, among=lab_pos, graph=graph, index=index)
        nb, sims = src(chosen)
        lab_ids = known["id"].astype(str).to_numpy()
        lab_labels = known["label"].astype(str).to_numpy()
        ok = nb >= 0
        table["neighbor_ids"] = ["|".join(lab_ids[r[m]]) for r, m in zip(nb, ok)]
        table["neighbor_labels"] = ["|".join(lab_labels[r[m]]) for r, m in zip(nb, ok)]
        table["neighbor_similarities"] = ["|".join(f"{v:.4f}" for v in s[m]) for s, m in zip(sims, ok)]
        summary["neighbours"] = src.summary
    else:
        table["neighbor_ids"] = table["neighbor_labels"] = table["neighbor_similarities"] = ""
    summary["embeddings_fingerprint"] = e.fingerprint
    result = Selection(table, summary, predictions)
    if out is not None:
        out = Path(out)
        members = {out: lambda tmp: tmp.write_text(labels_csv(table), encoding="utf-8"),
                   out.with_name(out.name + PREDICTIONS_SUFFIX):
                       (lambda tmp: predictions.to_parquet(tmp, index=False)) if predictions is not None else None}
        with exclusive(out):
            write_set(out.with_name(out.name + MANIFEST_SUFFIX), members, summary)
    return result
