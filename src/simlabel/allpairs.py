"""All-pairs k-NN by an inverted-file join, and the tuning that sets it for a recall.

The k-NN graph asks for the neighbours of *every* stored row among the stored rows. An IVF
index answers that one query at a time: each query scans ``nprobe`` inverted lists, touching
``nprobe * n / nlist`` vectors scattered in memory, so at 1M x 384 the scan is bound by memory
traffic, not arithmetic. Here the queries are the rows themselves, so the search is turned
around (a *join*): the rows are laid out list by list, and for each list ``L`` every query that
probes ``L`` is compared with all of ``L``'s members in one matrix product (FAISS's
``knn``: BLAS and a top-k heap). The arithmetic is that of the IVF search,
``n * nprobe * n / nlist * d`` multiply-adds, plus ``n * nlist * d`` to assign the rows,
done at matrix-product speed. With ``nprobe = nlist`` every row meets every row: the join is
exact.

**The recall asked for, not more** (:func:`plan_ivf`). For a query ``q`` whose true
neighbours are ``T_q``, the join at ``nprobe = p`` finds exactly the ``t in T_q`` whose list is
among the ``p`` lists nearest ``q`` (the join is exact within the lists it probes), so

.. math::  \\mathrm{recall}(p) = \\frac{1}{m} \\sum_q \\frac{|\\{t \\in T_q : \\mathrm{list}(t) \\in A_q[:p]\\}|}{k}

is read off a tuning sample's exact neighbours for every ``p`` at once, without a search.
``nprobe`` is the smallest ``p`` whose lower bound (mean minus two standard errors over the
sample's rows) reaches the target; ``nlist`` starts at ``sqrt(n)`` and moves to ``sqrt(p n)``,
which balances the assignment (``n nlist``) against the join (``n p n / nlist``), keeping the
cheaper of the two by the cost model. The graph's recall is then measured again on a fresh
sample (:func:`exact_sample`), which is what ``graph.json`` records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simlabel.errors import InputError
from simlabel.index import Neighbors, drop_self_matches
from simlabel.store import StoreRows
from simlabel.threads import faiss_threads

__all__ = ["IvfLayout", "IvfPlan", "exact_sample", "join_lists", "join_units", "lay_out", "lower_bound", "plan_ivf"]

#: training rows per list (FAISS's k-means warns under 39)
TRAIN_PER_LIST = 40
KMEANS_ITERATIONS = 10
#: standard errors between the tuning sample's mean recall and the target
Z = 2.0


def unit(X: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1 (float32, C order): inner product is then cosine similarity."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` among ``base`` (FAISS: BLAS, then a heap)."""
    import faiss

    return faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)


def exact_sample(rows: StoreRows, sample: np.ndarray, k: int, *, block_rows: int = 65536,
                 threads: int | None = None) -> Neighbors:
    """The exact ``k`` nearest rows of each row at ``sample`` (itself left out), the store scanned
    block by block (FAISS's ``knn_ground_truth``): what a recall is measured against.

    Parameters
    ----------
    rows : StoreRows
        The store (opened, or a loaded matrix wrapped by :meth:`StoreRows.from_embeddings`).
    sample : numpy.ndarray
        Sorted row positions.
    k : int
        Neighbours per row.
    block_rows : int, default 65536
        Rows read per block.
    threads : int, optional
        FAISS threads (``None``: as set).

    Returns
    -------
    Neighbors
        ``(len(sample), k)`` positions and cosines, best first.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel.store import StoreRows
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> rows = StoreRows(np.arange(4).astype(str).astype(object), {}, 2, matrix=X)
    >>> exact_sample(rows, np.array([0, 2]), 1).neighbors.tolist()
    [[1], [3]]
    """
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    sample = np.asarray(sample, dtype=np.int64)
    with faiss_threads(threads):
        sims, pos = knn_ground_truth(unit(rows.take(sample)), (unit(X) for _, X in rows.blocks(block_rows)),
                                     min(k + 1, len(rows)), metric_type=faiss.METRIC_INNER_PRODUCT)
    sims, pos = drop_self_matches(sims, pos, sample)
    return Neighbors(pos, sims)


def lower_bound(per_row: np.ndarray, z: float = Z) -> float:
    """Mean minus ``z`` standard errors: how low the recall of the whole set may plausibly be."""
    per_row = np.asarray(per_row, dtype=np.float64)
    if len(per_row) < 2:
        return float(per_row.mean()) if len(per_row) else 0.0
    return float(per_row.mean() - z * per_row.std(ddof=1) / math.sqrt(len(per_row)))


@dataclass
class IvfPlan:
    """The lists and probes of a join, and how they were chosen.

    ``centroids`` ``(nlist, d)`` unit rows; ``nprobe`` lists each row visits; ``tuned_recall``
    the mean recall on the tuning sample at that setting (its lower bound ``tuned_recall_low``);
    ``trials``: every ``(nlist, nprobe)`` weighed, with its recall and modelled cost.
    """

    centroids: np.ndarray
    nprobe: int
    tuned_recall: float | None = None
    tuned_recall_low: float | None = None
    trials: list[dict] = field(default_factory=list)

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    def record(self) -> dict:
        """What ``graph.json`` keeps of it."""
        return {"nlist": self.nlist, "nprobe": int(self.nprobe), "tuned_recall": self.tuned_recall,
                "tuned_recall_low": self.tuned_recall_low, "trials": self.trials}


def _train(rows: StoreRows, nlist: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means on ``TRAIN_PER_LIST * nlist`` rows: the centroids and the list sizes it
    predicts for the whole store (counts in the training sample, scaled)."""
    import faiss

    n = len(rows)
    size = min(n, TRAIN_PER_LIST * nlist)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    X = unit(rows.take(sample))
    km = faiss.Kmeans(X.shape[1], nlist, niter=KMEANS_ITERATIONS, seed=seed, spherical=True,
                      max_points_per_centroid=TRAIN_PER_LIST, min_points_per_centroid=1)
    km.train(X)
    centroids = unit(km.centroids)
    _, first = _knn(X, centroids, 1)
    sizes = np.bincount(first.ravel(), minlength=nlist) * (n / size)
    return centroids, sizes


def plan_ivf(rows: StoreRows, k: int, recall: float, tune_rows: np.ndarray, exact: Neighbors, *,
             nlist: int | None = None, nprobe: int | None = None, seed: int = 0,
             threads: int | None = None) -> IvfPlan:
    """The cheapest ``(nlist, nprobe)`` whose join reaches ``recall`` on the tuning rows.

    Parameters
    ----------
    rows : StoreRows
        The store.
    k : int
        Neighbours per row.
    recall : float
        The target recall@k, in ``(0, 1]``.
    tune_rows : numpy.ndarray
        Sorted positions of the tuning sample.
    exact : Neighbors
        Their exact neighbours (:func:`exact_sample`).
    nlist, nprobe : int, optional
        Fixed by the user: not tuned (``nprobe`` fixed: the recall it gives is measured, not aimed).
    seed : int, default 0
        Seeds the k-means samples.
    threads : int, optional
        FAISS threads.

    Returns
    -------
    IvfPlan
        The centroids, the probes and the trials behind them.

    Raises
    ------
    InputError
        ``recall`` outside ``(0, 1]``.
    """
    if not 0 < recall <= 1:
        raise InputError(f"`recall` must be in (0, 1]; got {recall}")
    n = len(rows)
    cap = max(1, n // TRAIN_PER_LIST)
    Q = unit(rows.take(tune_rows))
    T = np.asarray(exact.neighbors, dtype=np.int64)
    valid = T >= 0
    uniq, inverse = np.unique(np.where(valid, T, 0), return_inverse=True)
    TV = unit(rows.take(uniq))
    trials: list[dict] = []
    best: tuple[float, IvfPlan] | None = None
    with faiss_threads(threads):
        todo = [min(nlist, n)] if nlist is not None else [int(min(cap, max(1, round(math.sqrt(n)))))]
        seen: set[int] = set()
        while todo:
            nl = todo.pop()
            seen.add(nl)
            centroids, sizes = _train(rows, nl, seed)
            probes_max = nl if nl <= 256 else max(256, min(nl, 4 * (nprobe or 0)))
            _, A = _knn(Q, centroids, probes_max)                        # each tuning row's lists, nearest first
            _, lt = _knn(TV, centroids, 1)
            lists_of_t = lt.ravel()[inverse.reshape(T.shape)]             # the list of each true neighbour
            # rank of each true neighbour's list among the query's probes (probes_max: not probed)
            match = A[:, None, :] == lists_of_t[:, :, None]
            rank = np.where(match.any(axis=2), match.argmax(axis=2), probes_max)
            denom = np.maximum(valid.sum(axis=1), 1)
            scanned = np.cumsum(sizes[A], axis=1).mean(axis=0)             # rows scanned per query at p = 1..
            chosen = None
            for p in ([min(nprobe, nl)] if nprobe is not None else range(1, probes_max + 1)):
                per_row = ((rank < p) & valid).sum(axis=1) / denom
                low = lower_bound(per_row)
                cost = n * nl + n * scanned[min(p, probes_max) - 1] + KMEANS_ITERATIONS * TRAIN_PER_LIST * nl * nl
                trial = {"nlist": nl, "nprobe": int(p), "recall": round(float(per_row.mean()), 4),
                         "recall_low": round(low, 4), "cost": float(cost)}
                if nprobe is not None or low >= recall or p == nl:
                    chosen = trial
                    break
            if chosen is None:  # the target lies beyond the probes weighed: visit every list (exact)
                chosen = {"nlist": nl, "nprobe": nl, "recall": 1.0, "recall_low": 1.0,
                          "cost": float(n * nl + n * n + KMEANS_ITERATIONS * TRAIN_PER_LIST * nl * nl)}
            trials.append(chosen)
            plan = IvfPlan(centroids, chosen["nprobe"], chosen["recall"], chosen["recall_low"])
            if best is None or chosen["cost"] < best[0]:
                best = (chosen["cost"], plan)
            if nlist is None:
                # sqrt(p n) lists balance the assignment against the join at p probes
                nxt = int(min(cap, max(1, round(math.sqrt(chosen["nprobe"] * n)))))
                # worth training only if its assignment and training alone cost less than the best so far
                floor = n * nxt + KMEANS_ITERATIONS * TRAIN_PER_LIST * nxt * nxt
                if nxt not in seen and abs(nxt - nl) > 0.3 * nl and len(seen) < 2 and floor < best[0]:
                    todo.append(nxt)
    plan = best[1]
    plan.trials = trials
    return plan


@dataclass
class IvfLayout:
    """The rows grouped list by list for the join.

    List ``L`` is the rows ``offsets[L]:offsets[L + 1]`` of the list order; ``order[i]`` is the store
    position of row ``i`` of that order; ``probes`` ``(n, nprobe)``: the lists each row (in list order)
    visits, nearest first (its own list first). ``vectors``: the unit rows, either in store order in
    memory (``at`` is then ``order``: row ``i`` of the list order is ``vectors[order[i]]``) or copied into
    list order in a memory-mapped file (``at`` ``None``: row ``i`` is ``vectors[i]``, and a list is one
    contiguous read).
    """

    vectors: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    probes: np.ndarray
    at: np.ndarray | None = None


def lay_out(rows: StoreRows, plan: IvfPlan, *, block_rows: int = 65536, path: str | Path | None = None,
            threads: int | None = None, on_block: Callable[[int], None] | None = None) -> IvfLayout:
    """Assign every row to its ``nprobe`` nearest lists and group the rows by list.

    One pass over ``rows`` assigns. ``path`` ``None``: ``rows`` are in memory (unit rows,
    :meth:`StoreRows.from_embeddings` or a loaded matrix) and are used where they are. ``path``: a second
    pass copies each row to its slot in that ``.npy`` file (memory-mapped; written under a temporary name
    and renamed when whole, so a file there is complete and is reused). ``on_block(rows)`` after each
    block of either pass.
    """
    n, d = len(rows), rows.dim
    probes = np.empty((n, plan.nprobe), dtype=np.int32)
    with faiss_threads(threads):
        for start, X in rows.blocks(block_rows):
            probes[start:start + len(X)] = _knn(unit(X), plan.centroids, plan.nprobe)[1]
            if on_block:
                on_block(len(X))
    order = np.argsort(probes[:, 0], kind="stable")
    offsets = np.searchsorted(probes[order, 0], np.arange(plan.nlist + 1)).astype(np.int64)
    if path is None:
        return IvfLayout(rows.read(0, n), order, offsets, probes[order], at=order)
    final = Path(path)
    if final.exists():
        vectors = np.load(final, mmap_mode="r")
        if vectors.shape != (n, d):
            raise InputError(f"{final}: holds {vectors.shape}, expected {(n, d)}; delete it")
        return IvfLayout(vectors, order, offsets, probes[order])
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n)
    tmp = final.with_name(final.name + ".partial")
    vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for start, X in rows.blocks(block_rows):
        vectors[slot[start:start + len(X)]] = unit(X)
        if on_block:
            on_block(len(X))
    vectors.flush()
    del vectors
    tmp.replace(final)
    return IvfLayout(np.load(final, mmap_mode="r"), order, offsets, probes[order])


def join_units(offsets: np.ndarray, block_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of lists ``[a, b)`` holding about ``block_rows`` rows each: the join's
    units of work (each a block of the graph's folder)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    nlist = len(offsets) - 1
    units, a = [], 0
    while a < nlist:
        # the last list b whose end stays within block_rows of the unit's start (at least one list)
        b = int(np.searchsorted(offsets, offsets[a] + block_rows, side="right")) - 1
        b = min(max(b, a + 1), nlist)
        units.append((a, b))
        a = b
    return units


def join_lists(vectors: np.ndarray, offsets: np.ndarray, probes: np.ndarray, order: np.ndarray, a: int, b: int,
               k: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row of lists ``[a, b)``, among the lists each visits.

    ``vectors``, ``offsets``, ``probes``, ``order`` and ``at`` are an :class:`IvfLayout`'s. Returns
    ``(rows, neighbours, similarities)``: the rows' store positions ``(m,)``, their neighbours' store
    positions ``(m, k)`` (``-1`` where the lists probed hold fewer) and cosines, best first, each row
    itself left out.
    """
    def take(lo: int, hi: int) -> np.ndarray:
        return np.asarray(vectors[lo:hi] if at is None else vectors[at[lo:hi]])

    q0, q1 = int(offsets[a]), int(offsets[b])
    m = q1 - q0
    Q = take(q0, q1)
    P = np.asarray(probes[q0:q1])
    best_d = np.full((m, k + 1), -np.inf, dtype=np.float32)
    best_i = np.full((m, k + 1), -1, dtype=np.int64)
    lists = P.ravel()
    who = np.repeat(np.arange(m), P.shape[1])
    by_list = np.argsort(lists, kind="stable")
    lists, who = lists[by_list], who[by_list]
    cuts = np.flatnonzero(np.diff(lists)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(lists)]):
        if lo == hi:
            continue
        L = int(lists[lo])
        s0, s1 = int(offsets[L]), int(offsets[L + 1])
        if s0 == s1:
            continue
        qs = who[lo:hi]
        d, i = _knn(Q[qs], take(s0, s1), min(k + 1, s1 - s0))
        i = np.where(i >= 0, i + s0, -1)
        # the best k + 1 of what the row had and what this list gives
        cd = np.concatenate([best_d[qs], d], axis=1)
        ci = np.concatenate([best_i[qs], i], axis=1)
        top = np.argpartition(-cd, k, axis=1)[:, :k + 1]
        best_d[qs] = np.take_along_axis(cd, top, axis=1)
        best_i[qs] = np.take_along_axis(ci, top, axis=1)
    rows = np.asarray(order[q0:q1], dtype=np.int64)
    nb = np.where(best_i >= 0, np.asarray(order)[np.maximum(best_i, 0)], -1)
    # best first before the row itself is dropped (drop_self_matches keeps the order)
    rank = np.argsort(-best_d, axis=1, kind="stable")
    best_d, nb = np.take_along_axis(best_d, rank, axis=1), np.take_along_axis(nb, rank, axis=1)
    sims, nb = drop_self_matches(best_d, nb, rows)
    return rows, nb, sims
