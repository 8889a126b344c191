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
