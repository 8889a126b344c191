"""Once a model exists: uncertain items, and one batch spread over the catalog.

**BADGE** (Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds", ICLR 2020). Each item's *gradient embedding* is the gradient of the
cross-entropy at the model's own prediction ``y_hat`` with respect to the last layer's weights::

    g(x) = (p(x) - e_{y_hat}) (outer) h(x)

Its norm grows with the uncertainty (``||p - e_{y_hat}||``) and its direction says where the item is;
k-means++ seeding over the ``g`` (the first centre the largest ``||g||``, then each next item drawn
with probability proportional to its squared distance to the nearest centre) picks a batch that is
uncertain and diverse at once. ``g`` is ``C x d`` wide, so it is never built: with ``a = p - e_{y_hat}``,

    ||g_i - g_j||^2 = ||a_i||^2 ||h_i||^2 + ||a_j||^2 ||h_j||^2 - 2 (a_i . a_j)(h_i . h_j)

costs ``C + d`` per pair. ``h`` is the item's embedding (the input of simlabel's linear head: exact for
it; for an MLP head the paper would take the penultimate layer). The candidates are the ``pool`` least
certain items (by margin), so a batch from a million items costs ``pool x budget``, not ``n x budget``;
and an item whose cosine to a chosen one reaches ``duplicate_threshold`` is never drawn: one batch never
holds two near-duplicates.
"""

from __future__ import annotations

import numpy as np

from simlabel.errors import InputError

__all__ = ["badge", "margin_uncertainty"]


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """``1 - (p_(1) - p_(2))``: one minus the margin between the two likeliest classes, in ``[0, 1]``
    (1: a tie). For one class against the rest (``(n, 2)``) it is ``1 - |2 p - 1|``."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError(f"proba must be (n, C >= 2); got {p.shape}")
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def badge(X: np.ndarray, proba: np.ndarray, budget: int, *, candidates: np.ndarray | None = None,
          pool: int = 0, duplicate_threshold: float = 0.95, seed: int = 0) -> np.ndarray:
    """BADGE's k-means++ seeding over the gradient embeddings of the most uncertain items.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings (unit rows).
    proba
        ``(n, C)`` the model's class probabilities.
    budget
        Items to choose.
    candidates
        Positions that may be chosen (default: all).
    pool
        Keep only this many least-certain candidates (``0``: ``max(20 budget, 5000)``).
    duplicate_threshold
        Never choose an item whose cosine to an already chosen one is at least this (``> 1``: off).
    seed
        The draws' seed.

    Returns
    -------
    ndarray
        The chosen positions in the order drawn (fewer than ``budget`` only when the candidates run out).
    """
    X = np.asarray(X, dtype=np.float32)
    p = np.asarray(proba, dtype=np.float64)
    if len(X) != len(p):
        raise InputError(f"{len(X)} embeddings for {len(p)} rows of probabilities")
    cand = np.arange(len(X)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(cand) == 0 or budget <= 0:
        return np.zeros(0, dtype=np.int64)
    size = pool or max(20 * budget, 5000)
    u = margin_uncertainty(p[cand])
    if len(cand) > size:
        keep = np.argpartition(-u, size - 1)[:size]
        cand = cand[np.sort(keep)]
    a = p[cand].copy()
    a[np.arange(len(cand)), np.argmax(a, axis=1)] -= 1.0  # p - e_{y_hat}
    h = X[cand].astype(np.float64)
    an = (a * a).sum(axis=1)
    hn = (h * h).sum(axis=1)
    norm2 = an * hn
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    d2 = np.full(len(cand), np.inf)
    alive = np.ones(len(cand), dtype=bool)
    hu = h / np.sqrt(np.maximum(hn, 1e-24))[:, None]
    for _ in range(min(budget, len(cand))):
        if not alive.any():
            break
        if not chosen:
            i = int(np.argmax(np.where(alive, norm2, -np.inf)))
        else:
            w = np.where(alive, np.maximum(d2, 0.0), 0.0)
            total = w.sum()
            # all remaining gradient embeddings equal a centre's: any of them adds as little
            i = int(rng.choice(len(cand), p=w / total)) if total > 0 else int(np.flatnonzero(alive)[0])
        chosen.append(i)
        alive[i] = False
        dist = norm2 + norm2[i] - 2.0 * (a @ a[i]) * (h @ h[i])
        d2 = np.minimum(d2, dist)
        if duplicate_threshold <= 1.0:
            alive &= (hu @ hu[i]) < duplicate_threshold
    return cand[np.asarray(chosen, dtype=np.int64)]
