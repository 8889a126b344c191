"""Cold start: which items to label first when there is no model yet (or too few labels to trust one).

Two methods from the low-budget active-learning literature, both on the catalog's embeddings only:

* **TypiClust** (Hacohen, Dekel & Weinshall, "Active Learning on a Budget", ICML 2022). Cluster the
  catalog into ``|L| + B`` clusters (k-means, at most 500), visit the clusters with the fewest labelled
  items first (larger first among equals, clusters of 5 items or fewer left out), and take from each the
  most *typical* unlabelled item::

      typicality(x) = 1 / (mean_{x_i in kNN(x)} ||x - x_i||_2 + 1e-5),   K = min(20, |cluster| / 2)

  with the neighbours found among the cluster's unlabelled items, as the paper's code does.
* **ProbCover** (Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering Lens",
  NeurIPS 2022). Each item covers the ball ``B(x, delta)``; greedily take the item whose ball holds the
  most uncovered items (the labelled items' balls are covered first). ``delta`` is the largest radius at
  which a share ``alpha`` (0.95) of the balls are *pure*: hold only items of one k-means cluster, with as
  many clusters as classes.

On a catalog the balls are read from the k-NN graph (:func:`simlabel.graph.neighbour_source`): a ball is
an item's graph neighbours closer than ``delta`` (and the item itself), exact while the ball holds fewer
items than the graph's ``k``. With unit vectors ``||x - y||^2 = 2 - 2 s`` (``s`` the cosine), so the
radius is a similarity threshold ``t = 1 - delta^2 / 2``; purity at ``t`` is the share of items whose
nearest neighbour of another cluster has ``s <= t``, and the threshold with purity ``alpha`` is that
quantile, computed once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from simlabel.errors import InputError

__all__ = ["coverage_threshold", "kmeans_clusters", "probcover", "typicality", "typiclust"]

#: the paper code's constants (TypiClust): neighbours of typicality, smallest cluster kept, most clusters
TYPICALITY_K = 20
MIN_CLUSTER_SIZE = 5
MAX_CLUSTERS = 500


def kmeans_clusters(X: np.ndarray, n_clusters: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """k-means cluster of each row (FAISS; cosine on the unit vectors), ``(n,)`` int64.

    FAISS trains on at most 256 rows per centroid (a sample, seeded) and assigns every row, so a
    million rows cost one pass over the catalog, not ``niter``.
    """
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    if not 1 <= n_clusters <= len(X):
        raise InputError(f"n_clusters must be in 1..{len(X)} (the rows); got {n_clusters}")
    if n_clusters == 1:
        return np.zeros(len(X), dtype=np.int64)
    # min_points_per_centroid=1: a small catalog is clustered without FAISS warning that it is small
    km = faiss.Kmeans(X.shape[1], int(n_clusters), niter=niter, seed=int(seed) + 1, spherical=True, verbose=False,
                      min_points_per_centroid=1)
    km.train(X)
    _, assign = km.index.search(X, 1)
    return assign[:, 0].astype(np.int64)


def typicality(similarities: np.ndarray) -> np.ndarray:
    """TypiClust's typicality from each row's neighbour similarities ``(m, K)`` (``-inf`` or NaN: none).

    ``1 / (mean L2 distance + 1e-5)`` with ``L2 = sqrt(2 - 2 s)`` (unit vectors); a row with no
    neighbour has typicality 0.
    """
    s = np.asarray(similarities, dtype=np.float64)
    ok = np.isfinite(s)
    d = np.sqrt(np.clip(2.0 - 2.0 * np.where(ok, s, 0.0), 0.0, None))
    n = ok.sum(axis=1)
    mean = np.where(n > 0, (d * ok).sum(axis=1) / np.maximum(n, 1), np.inf)
    return np.where(n > 0, 1.0 / (mean + 1e-5), 0.0)


def typiclust(clusters: np.ndarray, budget: int, neighbours, *, labelled: np.ndarray | None = None,
              exclude: np.ndarray | None = None, k: int = TYPICALITY_K,
              min_cluster_size: int = MIN_CLUSTER_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TypiClust's selection over given clusters.

    Parameters
    ----------
    clusters
        ``(n,)`` cluster of each item (:func:`kmeans_clusters` into ``|L| + budget`` clusters).
    budget
        Items to choose.
    neighbours
        ``neighbours(rows, k) -> (similarities (len(rows), k))``: each row's ``k`` nearest among
        ``rows`` themselves (:func:`simlabel.graph.neighbours_for` with ``among=rows``).
    labelled, exclude
        Positions already labelled (they count for their cluster and are never chosen) and positions
        never chosen (a test set).
    k, min_cluster_size
        Typicality's neighbours (``min(k, size // 2)`` in a small cluster) and the smallest cluster kept
        (clusters of at most this many items are visited only when no other is left).

    Returns
    -------
    chosen, cluster, typicality : ndarray
        The chosen positions in order, the cluster of each and its typicality there.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    n = len(clusters)
    taken = np.zeros(n, dtype=bool)
    counts = np.zeros(int(clusters.max()) + 1, dtype=np.int64)
    if labelled is not None and len(labelled):
        taken[labelled] = True
        np.add.at(counts, clusters[labelled], 1)
    if exclude is not None and len(exclude):
        taken[exclude] = True
    sizes = np.bincount(clusters, minlength=len(counts))
    ids = np.flatnonzero(sizes)
    big = ids[sizes[ids] > min_cluster_size]
    order = big if len(big) else ids
    # fewest labelled first, then the largest (the paper's order), ties by cluster number
    order = order[np.lexsort((order, -sizes[order], counts[order]))]
    chosen, where, typ = [], [], []
    exhausted: set[int] = set()
    i = 0
    while len(chosen) < budget and len(exhausted) < len(order):
        c = int(order[i % len(order)])
        i += 1
        if c in exhausted:
            continue
        members = np.flatnonzero((clusters == c) & ~taken)
        if len(members) == 0:
            exhausted.add(c)
            continue
        kk = min(k, len(members) // 2)
        if kk >= 1:
            t = typicality(neighbours(members, kk))
        else:  # one or two items left: either is as typical
            t = np.ones(len(members))
        best = int(np.argmax(t))
        chosen.append(int(members[best]))
        where.append(c)
        typ.append(float(t[best]))
        taken[members[best]] = True
    return np.asarray(chosen, dtype=np.int64), np.asarray(where, dtype=np.int64), np.asarray(typ)


def coverage_threshold(neighbors: np.ndarray, similarities: np.ndarray, clusters: np.ndarray,
                       purity: float = 0.95) -> float:
    """ProbCover's ball radius as a cosine threshold ``t``: the smallest ``t`` at which a share
    ``purity`` of the balls ``{j : s_ij > t}`` hold only items of their centre's cluster.

    A ball at ``t`` is pure iff the centre's most similar neighbour of another cluster has
    ``s <= t``; the threshold is that similarity's ``purity`` quantile (rows with no neighbour of
    another cluster in the graph are pure at any ``t``).
    """
    if not 0 < purity <= 1:
        raise InputError(f"purity must be in (0, 1]; got {purity}")
    nb = np.asarray(neighbors, dtype=np.int64)
    sim = np.asarray(similarities, dtype=np.float64)
    cl = np.asarray(clusters, dtype=np.int64)
    other = (nb >= 0) & (cl[np.maximum(nb, 0)] != cl[:, None])
    first = np.where(other.any(axis=1), np.where(other, sim, -np.inf).max(axis=1), -np.inf)
    v = np.sort(first)
    return float(v[max(int(np.ceil(purity * len(v))) - 1, 0)])


def _balls(neighbors: np.ndarray, similarities: np.ndarray, threshold: float) -> sp.csr_matrix:
    """``F[x, y] = 1`` iff ``y`` is in ``x``'s ball (its graph neighbours with ``s > threshold``, and ``x``)."""
    nb = np.asarray(neighbors, dtype=np.int64)
    n = len(nb)
    inside = (nb >= 0) & (np.asarray(similarities) > threshold)
    rows = np.concatenate([np.repeat(np.arange(n), inside.sum(axis=1)), np.arange(n)])
    cols = np.concatenate([nb[inside], np.arange(n)])
    f = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    f.data[:] = 1  # an item listed as its own neighbour is one edge
    return f


def probcover(neighbors: np.ndarray, similarities: np.ndarray, threshold: float, budget: int, *,
              labelled: np.ndarray | None = None, exclude: np.ndarray | None = None, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """ProbCover's greedy max coverage on the k-NN graph.

    Parameters
    ----------
    neighbors, similarities
        The graph: ``(n, k)`` neighbour positions (``-1``: none) and cosine similarities.
    threshold
        The balls' cosine threshold (:func:`coverage_threshold`).
    budget
        Items to choose.
    labelled, exclude
        Positions already labelled (their balls are covered first; never chosen) and never chosen.
    seed
        Ties of the largest gain are broken at random (seeded), as the paper's selection is: once the
        dense regions are covered many items cover only themselves, and taking them in catalog order
        would take them from one part of the catalog (a catalog sorted by class: one class).

    Returns
    -------
    chosen, gain, coverage
        The chosen positions in order, how many uncovered items each one covered, and the share of
        the catalog covered at the end.
    """
    f = _balls(neighbors, similarities, threshold)
    n = f.shape[0]
    reverse = f.T.tocsr()
    covered = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    if labelled is not None and len(labelled):
        covered[f[np.asarray(labelled)].indices] = True
        blocked[labelled] = True
    if exclude is not None and len(exclude):
        blocked[exclude] = True
    degree = np.asarray(f @ (~covered).astype(np.int64)).ravel()
    first_degree = degree.copy()
    chosen, gain = [], []
    rng = np.random.default_rng(seed)
    for _ in range(min(budget, int((~blocked).sum()))):
        score = np.where(blocked, -1, degree)
        top = np.flatnonzero(score == score.max())
        cur = int(top[rng.integers(len(top))]) if len(top) > 1 else int(top[0])
        if score[cur] <= 0:
            # everything a free item can cover is covered: the rest go to the densest balls left
            rest = np.flatnonzero(~blocked)
            rest = rest[np.lexsort((rng.random(len(rest)), -first_degree[rest]))][: budget - len(chosen)]
            chosen += rest.tolist()
            gain += [0] * len(rest)
            break
        new = f[cur].indices[~covered[f[cur].indices]]
        covered[new] = True
        # every ball holding a newly covered item now covers one fewer new item
        np.add.at(degree, reverse[new].indices, -1)
        blocked[cur] = True
        chosen.append(cur)
        gain.append(len(new))
    return np.asarray(chosen, dtype=np.int64), np.asarray(gain, dtype=np.int64), float(covered.mean())
