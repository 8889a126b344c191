"""The audit's numerical core: arrays in, arrays out, one function per issue type (issue 27).

Every score lies in [0, 1] and *lower means worse*, as in cleanlab's Datalab; every cut is taken from the
catalog's own distribution, and returned so the report can show it.

* :func:`near_duplicates`: the graph's edges closer than ``fraction`` x the median nearest-neighbour distance
  (Datalab's ``near_duplicate`` rule, fraction 0.13), joined into groups; score ``1 - exp(-d1 / median d1)``.
* :func:`pixel_twins`: the graph's edges whose two photos have perceptual hashes closer than ``fraction`` x the median
  Hamming distance to the nearest neighbour (the same 0.13): a second witness of a near duplicate, in the pixels, for
  the copies a resize moved far in the embedding.
* :func:`outliers`: the mean cosine distance to the ``k`` nearest neighbours ``d``; score ``exp(-d / median d)``,
  flagged above ``Q3 + (1 / t - 1) IQR`` (Datalab's ``outlier`` rule on features, ``t = 0.37037``).
* :func:`class_distances`: each item's Mahalanobis distance to the nearest labelled class, under one within-class
  covariance shrunk by Ledoit & Wolf (2004): the class-conditional Gaussian rule of Lee, Lee, Lee & Shin (NeurIPS
  2018) for inputs unlike every class. Items far from every class are flagged by :func:`robust_scores`.
* :func:`robust_scores`: a value against the catalog's median and median absolute deviation (the modified z-score,
  Iglewicz & Hoaglin 1993, flagged beyond 3.5), on the bad side only: the image-quality types.
* :func:`leakage`: near-duplicate groups that span the training split and another.
* :func:`class_imbalance`: classes under ``threshold / K`` of the items (Datalab's ``class_imbalance``), or under
  ``min_count`` items.
* :func:`non_iid`: whether neighbours sit near each other in the catalog's order more than chance allows (a
  Kolmogorov-Smirnov statistic against the order-distance of random pairs, its p-value by permutation; Datalab's
  ``non_iid`` test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import ndtr

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError

__all__ = ["EVIDENCE_IDS", "NearDuplicates", "class_distances", "class_imbalance", "ids_in", "leakage", "near_duplicates", "non_iid", "outliers", "pixel_twins",
           "related_ids", "robust_scores"]

_EPS = 1e-12


def _distances(similarities: np.ndarray) -> np.ndarray:
    """Cosine distances ``1 - s`` (clipped at 0), NaN where a row has fewer neighbours (``-inf`` or ``-1`` slots)."""
    s = np.asarray(similarities, dtype=np.float64)
    d = np.clip(1.0 - s, 0.0, 2.0)
    d[~np.isfinite(s)] = np.nan
    return d


@dataclass
class NearDuplicates:
    """What :func:`near_duplicates` found."""

    #: each row's group (-1: none); groups are numbered 0.. by their smallest row
    group: np.ndarray
    #: each row's distance to its nearest neighbour
    nn_distance: np.ndarray
    #: ``1 - exp(-d1 / median d1)``: 0 for an exact copy
    score: np.ndarray
    #: the cut: edges at or below this distance join a group
    cut: float
    median_nn_distance: float


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint16)


def pixel_twins(neighbors: np.ndarray, hashes: np.ndarray, measured: np.ndarray, *, fraction: float = 0.13,
                block: int = 65_536) -> tuple[np.ndarray, float, float]:
    """The graph's edges between photos whose perceptual hashes nearly agree, at a cut chosen from the data.

    Parameters
    ----------
    neighbors : ndarray of shape (n, k)
        The k-NN graph's positions (``-1`` where fewer).
    hashes : ndarray of shape (n, b) uint8
        Each row's packed perceptual hash (:func:`simlabel.quality.perceptual_hash`).
    measured : ndarray of shape (n,) bool
        The rows that have a hash; an edge touching another row is never a twin.
    fraction : float
        The cut as a fraction of the median Hamming distance of a row to its nearest neighbour.

    Returns
    -------
    (twins, cut, median)
        ``(n, k)`` bool, the cut in bits (an edge at or below it is a twin) and the median.

    Examples
    --------
    Rows 0 and 1 share a hash; rows 2 and 3 differ from everything in half their bits:

    >>> h = np.array([[0, 0], [0, 0], [255, 0], [15, 240]], dtype=np.uint8)
    >>> nb = np.array([[1], [0], [3], [2]])
    >>> twins, cut, median = pixel_twins(nb, h, np.ones(4, bool))
    >>> twins.ravel().tolist(), cut
    ([True, True, False, False], 0.52)
    """
    in_range(fraction, "fraction", 0, 1)
    nb = np.asarray(neighbors)
    h = np.asarray(hashes, dtype=np.uint8)
    ok_row = np.asarray(measured, dtype=bool)
    n, k = nb.shape
    bits = np.zeros((n, k), dtype=np.int32)
    for i in range(0, n, block):
        sub = nb[i:i + block]
        bits[i:i + block] = _POPCOUNT[h[i:i + block, None, :] ^ h[np.maximum(sub, 0)]].sum(axis=-1)
    valid = (nb >= 0) & ok_row[:, None] & ok_row[np.maximum(nb, 0)]
    first = bits[:, 0][valid[:, 0]] if k else np.zeros(0)
    median = float(np.median(first)) if len(first) else 0.0
    cut = fraction * median
    return valid & (bits <= cut), float(cut), median


def near_duplicates(neighbors: np.ndarray, similarities: np.ndarray, *, fraction: float = 0.13,
                    witness: np.ndarray | None = None) -> NearDuplicates:
    """Groups of near-duplicates along the graph's edges, at a distance chosen from the data.

    Parameters
    ----------
    neighbors, similarities : ndarray of shape (n, k)
        The k-NN graph (positions, ``-1`` where fewer; cosine similarities, best first).
    fraction : float
        The cut as a fraction of the median nearest-neighbour distance (Datalab's 0.13).
    witness : ndarray of shape (n, k) bool, optional
        Edges that join a group whatever their distance (:func:`pixel_twins`: the photos' pixels agree).

    Examples
    --------
    Rows 0 and 1 are copies (similarity 1), row 2 is near row 3 as the others are near each other:

    >>> nb = np.array([[1, 2], [0, 2], [3, 0], [2, 0]])
    >>> s = np.array([[1.0, 0.5], [1.0, 0.5], [0.6, 0.5], [0.6, 0.4]])
    >>> r = near_duplicates(nb, s)
    >>> r.group.tolist(), r.score.round(3).tolist()
    ([0, 0, -1, -1], [0.0, 0.0, 0.865, 0.865])
    """
    in_range(fraction, "fraction", 0, 1)
    nb = np.asarray(neighbors)
    d = _distances(similarities)
    if nb.shape != d.shape or nb.ndim != 2:
        raise InputError(f"neighbors and similarities must be (n, k) of one shape; got {nb.shape} and {d.shape}")
    n = len(nb)
    d1 = d[:, 0] if d.shape[1] else np.full(n, np.nan)
    median = float(np.nanmedian(d1)) if np.isfinite(d1).any() else 0.0
    cut = fraction * median
    keep = (nb >= 0) & np.isfinite(d) & (d <= cut)
    if witness is not None:
        if np.shape(witness) != nb.shape:
            raise InputError(f"witness must be (n, k) as neighbors {nb.shape}; got {np.shape(witness)}")
        keep |= np.asarray(witness, dtype=bool) & (nb >= 0)
    rows = np.repeat(np.arange(n), nb.shape[1])[keep.ravel()]
    cols = nb.ravel()[keep.ravel()]
    _, comp = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=True,
                                   connection="weak")
    sizes = np.bincount(comp, minlength=n)
    in_group = sizes[comp] >= 2
    # number the groups 0.. in the order of their first row
    first = {c: i for i, c in enumerate(dict.fromkeys(comp[in_group]))}
    group = np.full(n, -1, dtype=np.int64)
    group[in_group] = [first[c] for c in comp[in_group]]
    score = 1.0 - np.exp(-np.nan_to_num(d1, nan=np.inf) / max(median, _EPS))
    score[np.isclose(np.nan_to_num(d1, nan=1.0), 0.0)] = 0.0
    return NearDuplicates(group, d1, score, float(cut), median)


def outliers(similarities: np.ndarray, *, k: int | None = None, threshold: float = 0.37037
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Datalab's k-NN outlier score on the graph's distances.

    Returns
    -------
    (score, flagged, mean_distance, cut)
        ``score = exp(-d / median d)`` with ``d`` each row's mean distance to its ``k`` nearest; ``flagged`` where
        ``d > Q3 + (1 / threshold - 1) IQR``.

    Examples
    --------
    >>> s = np.array([[0.9, 0.9], [0.9, 0.8], [0.85, 0.9], [0.9, 0.9], [0.1, 0.0]])
    >>> score, flagged, d, cut = outliers(s)
    >>> flagged.tolist(), round(float(score[-1]), 3)
    ([False, False, False, False, True], 0.001)
    """
    in_range(threshold, "threshold", 0, 1, lo_open=True)
    d = _distances(similarities)
    if k is not None:
        positive_int(k, "k")
        d = d[:, :k]
    mean = np.nanmean(np.where(np.isfinite(d), d, np.nan), axis=1) if d.shape[1] else np.full(len(d), np.nan)
    mean = np.where(np.isfinite(mean), mean, np.nanmax(mean) if np.isfinite(mean).any() else 1.0)
    median = max(float(np.median(mean)), 100 * np.finfo(np.float64).eps)
    q1, q3 = np.percentile(mean, [25, 75])
    cut = float(q3 + (1.0 / threshold - 1.0) * (q3 - q1))
    return np.exp(-mean / median), mean > cut, mean, cut


def class_distances(X: np.ndarray, codes: np.ndarray, n_classes: int, *, min_count: int = 5, sample: int = 50_000,
                    seed: int = 0, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Each row's Mahalanobis distance to the nearest labelled class (Lee et al., NeurIPS 2018).

    Each class ``c`` with ``min_count`` or more labelled rows is a Gaussian of mean :math:`\\mu_c`, all sharing one
    within-class covariance :math:`\\Sigma` (of the residuals :math:`x_i - \\mu_{y_i}`, shrunk towards a multiple
    of the identity by Ledoit & Wolf's intensity, so it inverts where the dimension exceeds the rows). A row's
    distance is

    .. math:: d(x) = \\min_c \\sqrt{(x - \\mu_c)^\\top \\Sigma^{-1} (x - \\mu_c)}.

    A photo unlike every class is far from all of them, even where a few such photos sit close together (which
    hides them from the k-NN rule of :func:`outliers`), and whatever label it was given. The covariance is fitted on
    at most ``sample`` residuals drawn by ``seed``; every row is scored, ``block`` rows at a time.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The embeddings.
    codes : ndarray of shape (n,)
        Label codes in ``[0, n_classes)``, ``-1`` for an unlabelled row (scored, not fitted on).
    n_classes : int
    min_count : int
        Fewer labelled rows than this do not make a class (their mean is the rows themselves).

    Returns
    -------
    (distance, nearest)
        ``(n,)`` distances, and the nearest class's code (``-1`` and NaN where no class has ``min_count`` rows).

    Examples
    --------
    Two classes around (0, 0) and (4, 0); a point at (2, 6) is far from both, whatever its label:

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + [4, 0], [[2.0, 6.0]]]
    >>> codes = np.r_[np.zeros(50, int), np.ones(50, int), 0]
    >>> d, nearest = class_distances(X, codes, 2)
    >>> bool(d[-1] > 4 * np.median(d[:-1])), int(nearest[-1]), nearest[:3].tolist()
    (True, 0, [0, 0, 0])
    """
    from sklearn.covariance import ledoit_wolf

    positive_int(n_classes, "n_classes")
    positive_int(min_count, "min_count")
    X = np.asarray(X)
    y = np.asarray(codes, dtype=np.int64)
    if X.ndim != 2 or len(y) != len(X):
        raise InputError(f"X must be (n, d) with one code per row; got {X.shape} and {y.shape}")
    if (y >= n_classes).any() or (y < -1).any():
        raise InputError(f"codes must be in [-1, {n_classes})")
    n, dim = X.shape
    lab = np.flatnonzero(y >= 0)
    counts = np.bincount(y[lab], minlength=n_classes)
    kept = np.flatnonzero(counts >= min_count)
    if len(kept) == 0:
        return np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    sums = np.zeros((n_classes, dim))
    for i in range(0, len(lab), block):
        rows = lab[i:i + block]
        np.add.at(sums, y[rows], X[rows].astype(np.float64))
    means = sums[kept] / counts[kept, None]
    # residuals of a sample of the rows of kept classes, for the shared covariance
    fit_rows = lab[np.isin(y[lab], kept)]
    rng = np.random.default_rng(seed)
    if len(fit_rows) > sample:
        fit_rows = np.sort(rng.choice(fit_rows, size=sample, replace=False))
    slot = np.full(n_classes, -1, dtype=np.int64)
    slot[kept] = np.arange(len(kept))
    resid = X[fit_rows].astype(np.float64) - means[slot[y[fit_rows]]]
    cov, _ = ledoit_wolf(resid, assume_centered=True)
    evals, evecs = np.linalg.eigh(cov)
    whiten = evecs / np.sqrt(np.maximum(evals, _EPS * max(float(evals.max()), _EPS)))
    mw = means @ whiten
    m2 = (mw * mw).sum(axis=1)
    dist = np.empty(n)
    nearest = np.empty(n, dtype=np.int64)
    for i in range(0, n, block):
        z = X[i:i + block].astype(np.float64) @ whiten
        d2 = (z * z).sum(axis=1)[:, None] - 2.0 * z @ mw.T + m2[None, :]
        j = d2.argmin(axis=1)
        dist[i:i + block] = np.sqrt(np.maximum(d2[np.arange(len(j)), j], 0.0))
        nearest[i:i + block] = kept[j]
    return dist, nearest


def robust_scores(values: np.ndarray, *, side: str = "low", z: float = 3.5, min_scale: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """How far each value lies on the bad side of the catalog's own distribution.

    The modified z-score ``0.6745 (x - median) / MAD`` (MAD: median absolute deviation; where it is 0, the mean
    absolute deviation x 1.2533), taken on the bad ``side`` (``low``, ``high`` or ``both``). ``min_scale`` bounds the
    spread from below, for a measure most items share exactly (a catalog of one photo size must not flag a pixel).

    Returns
    -------
    (score, flagged, cut)
        ``score = 2 Phi(-z_bad)`` in [0, 1] (1 on the good side, lower = worse); ``flagged`` where ``z_bad > z``;
        ``cut`` the value at which flagging starts (for ``both``, the low one).

    Examples
    --------
    >>> score, flagged, cut = robust_scores(np.array([10.0, 11, 9, 10, 12, 8, 10, 0]), side="low")
    >>> flagged.tolist(), round(cut, 2)
    ([False, False, False, False, False, False, False, True], 4.81)
    """
    one_of(side, ("low", "high", "both"), "side")
    in_range(z, "z", 0, np.inf, lo_open=True)
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.ones(len(x)), np.zeros(len(x), dtype=bool), float("nan")
    med = float(np.median(x[ok]))
    mad = float(np.median(np.abs(x[ok] - med)))
    scale = mad / 0.6745 if mad > 0 else 1.2533 * float(np.mean(np.abs(x[ok] - med)))
    scale = max(scale, min_scale, _EPS)
    zs = (x - med) / scale
    bad = {"low": -zs, "high": zs, "both": np.abs(zs)}[side]
    bad = np.where(ok, np.maximum(bad, 0.0), 0.0)
    cut = med + z * scale if side == "high" else med - z * scale
    return 2 * ndtr(-bad), bad > z, float(cut)


def leakage(group: np.ndarray, split: np.ndarray, *, train: str = "train") -> np.ndarray:
    """The rows outside ``train`` that have a near-twin (a member of their near-duplicate group) in ``train``.

    Examples
    --------
    >>> leakage(np.array([0, 0, 1, 1, -1]), np.array(["train", "test", "test", "test", "test"])).tolist()
    [False, True, False, False, False]
    """
    g = np.asarray(group)
    sp = np.asarray(split).astype(str)
    if g.shape != sp.shape:
        raise InputError(f"group and split must have one length; got {g.shape} and {sp.shape}")
    in_train = (sp == train) & (g >= 0)
    trained_groups = np.unique(g[in_train])
    return (g >= 0) & (sp != train) & np.isin(g, trained_groups)


def class_imbalance(labels: np.ndarray, *, threshold: float = 0.1, min_count: int = 5
                    ) -> tuple[dict[str, int], dict[str, float], list[str]]:
    """Each class's count and score ``min(1, K * share)``; the classes flagged, those under ``threshold / K`` of
    the items or with fewer than ``min_count`` (Datalab flags only the rarest class, under the same bound).

    Examples
    --------
    >>> counts, score, flagged = class_imbalance(np.array(["a"] * 50 + ["b"] * 48 + ["c"] * 2))
    >>> counts["c"], round(score["c"], 2), flagged
    (2, 0.06, ['c'])
    """
    in_range(threshold, "threshold", 0, 1)
    positive_int(min_count, "min_count", minimum=0)
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    k, n = len(values), int(counts.sum())
    share = counts / max(n, 1)
    score = {str(v): float(min(1.0, k * s)) for v, s in zip(values, share)}
    flagged = [str(v) for v, s, c in zip(values, share, counts) if s < threshold / k or c < min_count]
    return {str(v): int(c) for v, c in zip(values, counts)}, score, flagged


def _ks_against_random_pairs(gaps: np.ndarray, n: int) -> float:
    """KS distance between the gaps |i - j| of the edges and those of random distinct pairs of n rows, whose CDF
    is ``P(gap <= g) = g (2n - g - 1) / (n (n - 1))``. Both are step functions on the integers, so the largest
    difference is at an integer: one pass of counts, no sort.

    Examples
    --------
    Edges only between neighbours in the order (every gap 1) in a catalog of 4: P(gap <= 1) is 1 against 0.5.

    >>> _ks_against_random_pairs(np.array([1, 1, 1]), 4)
    0.5
    """
    if len(gaps) == 0 or n < 2:
        return 0.0
    emp = np.cumsum(np.bincount(gaps, minlength=n)[:n]) / len(gaps)
    g = np.arange(n, dtype=np.float64)
    null = g * (2 * n - g - 1) / (n * (n - 1))
    return float(np.max(np.abs(emp - null)))


def non_iid(neighbors: np.ndarray, *, permutations: int = 20, seed: int = 0, alpha: float = 0.05
            ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Whether items near in the embedding are near in the catalog's order (rows in file order).

    Returns
    -------
    (p_value, statistic, score, flagged)
        ``statistic``: the KS distance of the edges' order gaps from random pairs'; ``p_value``: the share of
        ``permutations`` random orders that give at least as large a statistic (with the add-one rule);
        ``score``: each row's mean gap to its neighbours over the random pairs' mean ``(n + 1) / 3``, at most 1;
        ``flagged``: where ``p_value < alpha``, the row of the lowest score, as Datalab flags it (the finding is
        the catalog's: its order is not random; the scores say where it shows most).
    """
    positive_int(permutations, "permutations")
    nb = np.asarray(neighbors)
    n = len(nb)
    valid = nb >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], nb.shape)
    gaps = np.abs(rows - nb)[valid]
    stat = _ks_against_random_pairs(gaps, n)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(n)  # the position each row would have in a shuffled catalog
        exceed += _ks_against_random_pairs(np.abs(order[rows] - order[np.where(valid, nb, 0)])[valid], n) >= stat
    p = (exceed + 1) / (permutations + 1)
    with np.errstate(invalid="ignore"):
        mean_gap = np.where(valid, np.abs(rows - nb), 0).sum(1) / np.maximum(valid.sum(1), 1)
    score = np.minimum(1.0, mean_gap / max((n + 1) / 3, _EPS))
    flagged = np.zeros(n, dtype=bool)
    if p < alpha and n:
        flagged[int(np.argmin(score))] = True
    return float(p), stat, score, flagged


#: the types whose evidence names other items (shown beside the flagged one, and in its review queue)
EVIDENCE_IDS = ("exact_duplicate", "near_duplicate", "leakage", "outlier", "far_from_labels", "label")


def ids_in(values, universe) -> np.ndarray:
    """Whether each of ``values`` is in ``universe``, through a hash table of Python objects (pandas 3's
    Arrow-backed strings test membership one Python scalar at a time: seconds per call at a million ids).

    Examples
    --------
    >>> ids_in(["a", "b", "c"], ["c", "a"]).tolist()
    [True, False, True]
    """
    import pandas as pd

    return pd.Index(np.asarray(values, dtype=object), dtype=object).isin(np.asarray(list(universe), dtype=object))


def related_ids(issue: str, evidence: str) -> list[str]:
    """The ids an evidence string names (``a|b|c``, ``same bytes: a|b``, ``a:0.9|b:0.8``, ``x -> y; a|b``).

    Examples
    --------
    >>> related_ids("outlier", "a:0.91|b:0.80"), related_ids("label", "shirt -> dress; a|b"), related_ids("dark", "")
    (['a', 'b'], ['a', 'b'], [])
    """
    if issue not in EVIDENCE_IDS or not evidence:
        return []
    tail = str(evidence).split("; ")[-1].split(": ", 1)[-1]
    return [t.split(":")[0].split(" (")[0] for t in tail.split("|") if t]
