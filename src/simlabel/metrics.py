"""Evaluation metrics.

Single-label: per-class precision, recall, F1, support; accuracy; the confusion
matrix; and **HM**, the harmonic mean of all per-class precisions and recalls
(paper 000, Table 2: with two classes, HM of +P, +R, -P, -R). A class that is
never predicted has precision 0 (scikit-learn's ``zero_division=0``), and then
HM is 0: the harmonic mean punishes any collapsed class, which is its point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (the limit), nan for no values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan")
    if (v <= 0).any():
        return 0.0
    return float(hmean(v))


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None, *, positive=None) -> dict:
    """Per-class P/R/F1, accuracy, confusion matrix and HM, as a JSON-ready dict.

    ``labels`` fixes the class order (default: sorted union of both). For a binary
    task, ``positive`` names the + class and the report adds ``+P, +R, -P, -R``.
    """
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} != {len(y_pred)}")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred))
    labels = [str(c) for c in labels]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(labels)
    }
    report = {
        "n": int(len(y_true)),
        "labels": labels,
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean(f)) if len(f) else float("nan"),
        "hm": harmonic_mean(list(p) + list(r)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if positive is not None:
        positive = str(positive)
        if len(labels) != 2 or positive not in labels:
            raise ValueError(f"positive={positive!r} needs a binary task with that class; labels are {labels}")
        negative = labels[1 - labels.index(positive)]
        report["binary"] = {
            "positive": positive,
            "negative": negative,
            "+P": per_class[positive]["precision"],
            "+R": per_class[positive]["recall"],
            "-P": per_class[negative]["precision"],
            "-R": per_class[negative]["recall"],
        }
    return report


def topk_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of rows whose true class code is among the ``k`` highest scores."""
    scores = np.asarray(scores)
    y_true = np.asarray(y_true)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def top_k_predictions(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best classes per row, best first: an ``(n, min(k, C))`` index matrix.

    ``argpartition`` finds the ``k`` best in O(C) per row, then only those ``k``
    are sorted. Ties are broken by the lower class index (as a stable sort of
    ``-scores`` would), also at the cut, so the result is reproducible: the rows
    where ``argpartition`` left a tied class out are redone with a stable sort.
    ``k`` larger than the number of classes is clipped to it, as in
    :func:`topk_accuracy`.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, C), got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # negating unsigned ints would wrap around
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; their rank is undefined")
    n, c = scores.shape
    k = min(k, c)
    neg = -scores  # ascending order of -scores is best first
    if k == c:
        cand = np.broadcast_to(np.arange(c), (n, c)).copy()
    else:
        cand = np.argpartition(neg, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(neg, cand, axis=1)
    if n and k < c:
        # A row is ambiguous when some class tied with the k-th best was left out.
        kth = vals.max(axis=1, keepdims=True)
        ragged = (neg == kth).sum(axis=1) > (vals == kth).sum(axis=1)
        if ragged.any():
            rows = np.flatnonzero(ragged)
            cand[rows] = np.argsort(neg[rows], axis=1, kind="stable")[:, :k]
            vals[rows] = np.take_along_axis(neg[rows], cand[rows], axis=1)
    # Sort the k candidates by score, then by class index for ties (lexsort: last key is primary).
    order = np.lexsort((cand, vals), axis=1)
    return np.take_along_axis(cand, order, axis=1)


def _class_codes(y: np.ndarray, n: int, c: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be 1-D of length {n}, got shape {y.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class codes, got {y.dtype}")
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{name} class codes must lie in [0, {c}), got [{y.min()}, {y.max()}]")
    return y.astype(np.intp, copy=False)


def semantic_neighborhood_hits(scores: np.ndarray, y_true: np.ndarray, neighbors: np.ndarray, *, top: int = 5) -> dict:
    r"""How many of the ``top`` predictions fall in the true label's semantic neighbourhood (paper 002).

    For item :math:`i` with true class :math:`y_i` and top predictions
    :math:`P_i` (the ``top`` best classes by score),

    .. math:: h_i = |P_i \cap N(y_i)|, \qquad
              \text{mean\_in\_top} = \frac{1}{n}\sum_i h_i, \qquad
              \text{share\_all\_in} = \frac{1}{n}\sum_i [h_i = \text{top}]

    where :math:`N(y)` is row ``neighbors[y]`` of a ``(C, K)`` class-index
    matrix; negative entries are padding (for labels with fewer neighbours).
    Whether a label is its own neighbour is the caller's choice, made by
    listing it. **simlabel's convention includes it**: ``K = 20 + 1``, the
    label's 20 nearest labels by embedding cosine similarity plus the label
    itself, so a correct top-1 prediction counts as a hit and a perfect,
    semantically coherent top-5 scores 5. Paper 002 (Table 2) reports both
    numbers for top-5 (e.g. baseline: 2.25 on average, 1.55 % with all five in).

    ``top`` larger than the number of classes is clipped, and the returned
    ``top`` is the one used. Implementation: the neighbour rows of the true
    labels ``(n, K)`` are compared with the predictions ``(n, top)`` by
    broadcasting, which needs ``n * top * K`` booleans rather than a ``(C, C)``
    membership matrix (large for the tens of thousands of categories paper 002
    has in mind).

    Returns:
        ``{"mean_in_top": float, "share_all_in": float, "top": int, "k": K}``;
        the means are nan for no items.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n, C), got shape {scores.shape}")
    n, c = scores.shape
    y = _class_codes(y_true, n, c, "y_true")
    nb = np.asarray(neighbors)
    if nb.ndim != 2 or nb.shape[0] != c:
        raise ValueError(f"neighbors must be 2-D (C, K) with C={c} rows, got shape {nb.shape}")
    if nb.size and not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbors must hold integer class codes, got {nb.dtype}")
    if nb.size and nb.max() >= c:
        raise ValueError(f"neighbors class codes must be < {c} (negative = padding), got {nb.max()}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    top = min(top, c)
    k = int(nb.shape[1])
    if n == 0:
        return {"mean_in_top": float("nan"), "share_all_in": float("nan"), "top": top, "k": k}
    pred = top_k_predictions(scores, top)  # (n, top), distinct classes
    # Predictions are distinct and padding (< 0) never equals a class, so "any" counts each hit once
    # even if a neighbour row repeats an entry.
    hits = (pred[:, :, None] == nb[y][:, None, :]).any(axis=2).sum(axis=1)
    return {
        "mean_in_top": float(hits.mean()),
        "share_all_in": float((hits == top).mean()),
        "top": top,
        "k": k,
    }


def mistake_severity(y_pred: np.ndarray, y_true: np.ndarray, distance: np.ndarray) -> dict:
    r"""How bad the top-1 mistakes are: taxonomy distance between prediction and truth.

    Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies
    with Deep Networks", CVPR 2020. With :math:`D` a ``(C, C)`` class distance
    (e.g. height of the lowest common ancestor in the taxonomy, or 1 - cosine
    similarity of label embeddings) and :math:`M = \{i : \hat y_i \ne y_i\}`:

    .. math:: \text{mistake\_severity} = \frac{1}{|M|} \sum_{i \in M} D[y_i, \hat y_i], \qquad
              \text{mean\_distance} = \frac{1}{n} \sum_{i \in M} D[y_i, \hat y_i]

    ``mistake_severity`` is nan when there are no mistakes; ``mean_distance``
    (Bertinetto's average hierarchical distance at k = 1) counts a correct
    prediction as 0 whatever the diagonal of ``distance`` holds, and is nan for
    no items.

    Returns:
        ``{"mistake_severity": float, "mean_distance": float, "n_mistakes": int, "n": int}``.
    """
    d = np.asarray(distance, dtype=float)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance must be a square (C, C) matrix, got shape {d.shape}")
    c = d.shape[0]
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    yt = _class_codes(y_true, len(y_true), c, "y_true")
    yp = _class_codes(y_pred, len(yt), c, "y_pred")
    wrong = yp != yt
    n_mistakes = int(wrong.sum())
    dist = d[yt[wrong], yp[wrong]]
    return {
        "mistake_severity": float(dist.mean()) if n_mistakes else float("nan"),
        "mean_distance": float(dist.sum() / len(yt)) if len(yt) else float("nan"),
        "n_mistakes": n_mistakes,
        "n": int(len(yt)),
    }
