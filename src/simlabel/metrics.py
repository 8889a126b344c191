"""Evaluation metrics.

Single-label: per-class precision, recall, F1, support; accuracy; the confusion
matrix; and **HM**, the harmonic mean of the per-class precisions and recalls
(paper 000, Table 2: with two classes, HM of +P, +R, -P, -R).

Three cases a report states instead of hiding (:func:`classification_report`):

* a class with **no test items** has no recall: it is reported as "not in the test set"
  and left out of HM and macro F1 (a 0/0/0 row would read as a failure it is not);
* a class that is **never predicted** has an undefined precision, taken as 0
  (scikit-learn's ``zero_division=0``), so HM is 0: the harmonic mean punishes a
  collapsed class, which is its point; the report flags it, with a warning as
  scikit-learn's ``UndefinedMetricWarning`` does;
* test items whose true class the model **never saw** cannot be right: they count as
  errors in the accuracy and are reported apart (``unseen``), outside the per-class table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (the limit), nan for no values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan")
    if (v <= 0).any():
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def classification_report(
    y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None, *, positive=None, warn: bool = True
) -> dict:
    """Per-class P/R/F1, accuracy, confusion matrix and HM, as a JSON-ready dict.

    Labels are compared as ``str``. The per-class table and the confusion matrix count the
    items whose true class is in ``labels``; items of other classes (``unseen``: the model
    never saw them) are errors in the accuracy only. For class ``c`` (``TP_c`` its items
    predicted ``c``, ``support_c`` its items, ``predicted_c`` the items predicted ``c``)::

        precision_c = TP_c / predicted_c   (0 for a class never predicted)
        recall_c    = TP_c / support_c
        f1_c        = 2 precision_c recall_c / (precision_c + recall_c)   (0 when both are 0)
        accuracy    = #{i : y_pred_i == y_true_i} / n
        macro_f1    = mean of f1_c over the m classes in the test set (support_c > 0)
        hm          = 2m / sum_c (1 / precision_c + 1 / recall_c)   over the same m classes

    HM is the harmonic mean of the ``2m`` precisions and recalls (paper 000, Table 2: with
    two classes, HM of +P, +R, -P, -R), 0 when any of them is 0 (its limit), nan for no
    class. The three cases the report states instead of hiding are in the module docstring.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted class names.
    labels : sequence, optional
        The classes (a model's): their order, and what counts as a known class (default:
        sorted union of both).
    positive : str, optional
        For a binary task, the + class: the report adds ``binary`` with ``+P, +R, -P, -R``.
    warn : bool, default True
        Warn (:class:`~simlabel.errors.SimlabelWarning`) about classes in the test set that
        are never predicted.

    Returns
    -------
    dict
        ``n``, ``labels``; ``accuracy`` over every item (items of unseen classes are errors;
        nan for no item); ``per_class`` for ``labels``: ``precision``, ``recall``, ``f1``,
        ``support``, ``in_test`` (support > 0) and ``never_predicted`` (in the test set, never
        predicted); ``hm`` and ``macro_f1`` over the classes in the test set (``hm_classes``
        of them); ``absent_classes``, ``never_predicted``; ``unseen``
        (``{"n": .., "classes": {name: count}}``); ``notes``, what a reader must know to read
        the numbers; ``confusion_matrix`` (rows true, columns predicted, in ``labels``
        order); with ``positive``, ``binary``.

    Raises
    ------
    ValueError
        ``y_true`` and ``y_pred`` of different lengths, or a ``positive`` class that is not
        one of the two classes of a binary task.

    Warns
    -----
    SimlabelWarning
        With ``warn``, when a class in the test set is never predicted.

    See Also
    --------
    simlabel.training.evaluate : This report for a head on labelled ids.

    Examples
    --------
    >>> from simlabel import classification_report
    >>> r = classification_report(["cat", "cat", "dog", "dog"], ["cat", "dog", "dog", "dog"])
    >>> r["accuracy"], r["confusion_matrix"]
    (0.75, [[1, 1], [0, 2]])
    >>> r["per_class"]["cat"]["recall"], round(r["hm"], 3)
    (0.5, 0.727)
    >>> classification_report(["cat", "dog"], ["cat", "dog"], positive="dog")["binary"]
    {'positive': 'dog', 'negative': 'cat', '+P': 1.0, '+R': 1.0, '-P': 1.0, '-R': 1.0}

    A class the model never saw (``bird``) and one absent from the test set (``dog``):

    >>> r = classification_report(["cat", "bird"], ["cat", "cat"], labels=["cat", "dog"])
    >>> r["accuracy"], r["unseen"], r["absent_classes"]
    (0.5, {'n': 1, 'classes': {'bird': 1}}, ['dog'])
    """
    import warnings

    from simlabel.errors import SimlabelWarning

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} != {len(y_pred)}")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred))
    labels = [str(c) for c in labels]
    known = np.isin(y_true, labels)
    unseen_names, unseen_counts = np.unique(y_true[~known], return_counts=True)
    yt, yp = y_true[known], y_pred[known]
    # imported here: sklearn.metrics costs 0.3 s, and the heads that import this module only need top-k
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=labels, zero_division=0) if len(yt) else (
        np.zeros(len(labels)),) * 3 + (np.zeros(len(labels), int),)
    predicted = np.isin(labels, y_pred)
    cm = confusion_matrix(yt, yp, labels=labels) if len(yt) else np.zeros((len(labels), len(labels)), int)
    in_test = np.asarray(s) > 0
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
            "in_test": bool(in_test[i]), "never_predicted": bool(in_test[i] and not predicted[i])}
        for i, c in enumerate(labels)
    }
    absent = [c for c, m in per_class.items() if not m["in_test"]]
    never = [c for c, m in per_class.items() if m["never_predicted"]]
    notes = []
    if absent:
        notes.append(f"{len(absent)} class(es) not in the test set, left out of HM and macro F1: {', '.join(absent[:8])}"
                     + (" ..." if len(absent) > 8 else ""))
    if never:
        notes.append(f"{len(never)} class(es) never predicted (precision taken as 0, so HM is 0): {', '.join(never[:8])}"
                     + (" ..." if len(never) > 8 else ""))
        if warn:
            warnings.warn(notes[-1], SimlabelWarning, stacklevel=2)
    if len(unseen_names):
        notes.append(f"{int(unseen_counts.sum())} test item(s) of {len(unseen_names)} class(es) the model never saw, "
                     f"counted as errors: " + ", ".join(f"{n} ({c})" for n, c in zip(unseen_names[:8], unseen_counts[:8])))
    report = {
        "n": int(len(y_true)),
        "labels": labels,
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean(np.asarray(f)[in_test])) if in_test.any() else float("nan"),
        "hm": harmonic_mean(list(np.asarray(p)[in_test]) + list(np.asarray(r)[in_test])),
        "hm_classes": int(in_test.sum()),
        "per_class": per_class,
        "absent_classes": absent,
        "never_predicted": never,
        "unseen": {"n": int(unseen_counts.sum()), "classes": {str(n): int(c) for n, c in zip(unseen_names, unseen_counts)}},
        "notes": notes,
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

    Returns
    -------
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

    Returns
    -------
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


# --- Multi-label metrics (paper 004, SELF-ML, Table 1) --------------------------------------------
#
# ``Y_true`` and ``Y_pred`` are (n, L) 0/1 matrices (images x labels), ``scores`` an (n, L) real matrix.


def check_binary_matrix(Y: np.ndarray, name: str = "Y") -> np.ndarray:
    """A 2-D 0/1 label matrix as bool; ValueError naming ``name`` otherwise."""
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, L), got shape {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return Y.astype(bool)


def _score_matrix(scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != shape:
        raise ValueError(f"scores must have Y_true's shape {shape}, got {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; their rank is undefined")
    return s


def precision_recall_f1_at_k(Y_true: np.ndarray, scores: np.ndarray) -> dict:
    r"""Table 1's P@k*, R@k*, F1@k*: top-k with k the image's own number of true labels.

    For image :math:`i` with true set :math:`T_i`, :math:`k_i = |T_i|` and
    predicted set :math:`P_i` = its :math:`k_i` best-scored labels (ties broken
    by the lower label index),

    .. math:: P_i = \frac{|P_i \cap T_i|}{k_i}, \quad R_i = \frac{|P_i \cap T_i|}{|T_i|}, \quad
              F_i = \frac{2 P_i R_i}{P_i + R_i} \ (0 \text{ if } P_i = R_i = 0)

    and the reported numbers are means over images. With :math:`k_i = |T_i|`
    the three are equal per image (Table 1's three columns differ slightly; the
    paper does not say why); they are computed as defined all the same. Images with no true label have k = 0 and no defined
    precision or recall: they are **skipped** and counted in ``n_skipped``.

    Returns
    -------
        ``{"precision_at_k", "recall_at_k", "f1_at_k", "n_images", "n_skipped"}``;
        the means are nan when every image was skipped.
    """
    T = check_binary_matrix(Y_true, "Y_true")
    s = _score_matrix(scores, T.shape)
    k = T.sum(axis=1)
    keep = k > 0
    T, s, k = T[keep], s[keep], k[keep]
    n_skipped = int((~keep).sum())
    if not len(k):
        nan = float("nan")
        return {"precision_at_k": nan, "recall_at_k": nan, "f1_at_k": nan, "n_images": 0, "n_skipped": n_skipped}
    # Rank of every label within its row (0 = best); a stable sort of -scores breaks ties by index.
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(len(s), axis=0), axis=1)
    hits = ((rank < k[:, None]) & T).sum(axis=1)
    p = hits / k
    r = hits / T.sum(axis=1)
    denom = p + r
    f = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return {
        "precision_at_k": float(p.mean()),
        "recall_at_k": float(r.mean()),
        "f1_at_k": float(f.mean()),
        "n_images": int(len(k)),
        "n_skipped": n_skipped,
    }


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Step-wise AP of one ranking, nan without positives (same value as scikit-learn's)."""
    from sklearn.metrics import average_precision_score

    if not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


def average_precision_all(Y_true: np.ndarray, scores: np.ndarray) -> float:
    r"""Table 1's AP_all: one average precision over all (image, label) pairs (micro).

    .. math:: \mathrm{AP} = \sum_j (R_j - R_{j-1}) P_j

    over the thresholds of the flattened scores, i.e. scikit-learn's
    ``average_precision_score(Y_true.ravel(), scores.ravel())``. Frequent labels
    weigh more here than in :func:`mean_average_precision`. nan without positives.
    """
    T = check_binary_matrix(Y_true, "Y_true")
    s = _score_matrix(scores, T.shape)
    return _average_precision(T.ravel(), s.ravel())


def mean_average_precision(Y_true: np.ndarray, scores: np.ndarray, *, groups: Sequence[str] | None = None) -> dict:
    r"""Table 1's MAP: average precision per label (column), then the mean over labels.

    Labels with no positive image have no defined AP: they get nan in
    ``per_label`` and are left out of the means (``n_labels_skipped``).
    ``groups`` names the attribute of each label (e.g. ``"gender"`` for
    ``"gender=Men"``); then ``per_group`` holds the mean AP of each attribute's
    labels and ``map_over_attributes`` the mean of those group means, so an
    attribute with many values (sub-category) does not outweigh one with few.

    Returns
    -------
        ``{"map", "per_label", "n_labels_scored", "n_labels_skipped"}`` plus
        ``{"per_group", "map_over_attributes"}`` with ``groups``.
    """
    T = check_binary_matrix(Y_true, "Y_true")
    s = _score_matrix(scores, T.shape)
    ap = np.array([_average_precision(T[:, j], s[:, j]) for j in range(T.shape[1])], dtype=float)
    scored = ~np.isnan(ap)
    out: dict = {
        "map": float(ap[scored].mean()) if scored.any() else float("nan"),
        "per_label": [float(a) for a in ap],
        "n_labels_scored": int(scored.sum()),
        "n_labels_skipped": int((~scored).sum()),
    }
    if groups is not None:
        groups = [str(g) for g in groups]
        if len(groups) != T.shape[1]:
            raise ValueError(f"groups has {len(groups)} entries for {T.shape[1]} labels")
        g_arr = np.array(groups, dtype=object)
        per_group = {}
        for g in dict.fromkeys(groups):
            vals = ap[(g_arr == g) & scored]
            per_group[g] = float(vals.mean()) if len(vals) else float("nan")
        means = [v for v in per_group.values() if not np.isnan(v)]
        out["per_group"] = per_group
        out["map_over_attributes"] = float(np.mean(means)) if means else float("nan")
    return out


def jaccard_similarity(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    r"""Mean over images of :math:`|T_i \cap P_i| / |T_i \cup P_i|`, 1 when both sets are empty.

    Equals scikit-learn's ``jaccard_score(average="samples")`` wherever that is
    defined (no row with both sets empty); nan for no images.
    """
    T = check_binary_matrix(Y_true, "Y_true")
    P = check_binary_matrix(Y_pred, "Y_pred")
    if T.shape != P.shape:
        raise ValueError(f"Y_true and Y_pred differ in shape: {T.shape} != {P.shape}")
    if not len(T):
        return float("nan")
    inter = (T & P).sum(axis=1)
    union = (T | P).sum(axis=1)
    j = np.divide(inter, union, out=np.ones(len(T)), where=union > 0)
    return float(j.mean())


def exact_match(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """0-1 exact match ratio (subset accuracy): share of images whose whole label row is right."""
    T = check_binary_matrix(Y_true, "Y_true")
    P = check_binary_matrix(Y_pred, "Y_pred")
    if T.shape != P.shape:
        raise ValueError(f"Y_true and Y_pred differ in shape: {T.shape} != {P.shape}")
    return float((T == P).all(axis=1).mean()) if len(T) else float("nan")


def multilabel_report(
    Y_true: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5, groups: Sequence[str] | None = None
) -> dict:
    """All of Table 1's metrics in one JSON-ready dict.

    The ranking metrics (P/R/F1@k*, AP_all, MAP) use ``scores``; the set
    metrics (Jaccard, exact match) use ``Y_pred = scores >= threshold``.
    """
    T = check_binary_matrix(Y_true, "Y_true")
    s = _score_matrix(scores, T.shape)
    P = s >= threshold
    report = {
        "n": int(T.shape[0]),
        "n_labels": int(T.shape[1]),
        "threshold": float(threshold),
        **precision_recall_f1_at_k(T, s),
        "ap_all": average_precision_all(T, s),
        **mean_average_precision(T, s, groups=groups),
        "jaccard": jaccard_similarity(T, P),
        "exact_match": exact_match(T, P),
        "true_per_image": float(T.sum(axis=1).mean()) if len(T) else float("nan"),
        "predicted_per_image": float(P.sum(axis=1).mean()) if len(T) else float("nan"),
    }
    return report


def flip_quality(Y_noisy: np.ndarray, Y_new: np.ndarray, Y_true: np.ndarray) -> dict:
    r"""How good the label flips themselves are (paper 004's label flipping module, Fig. 5).

    A flip is an entry with ``Y_new != Y_noisy``. For each direction
    :math:`a \to b` (``"0->1"``: a missing label added, ``"1->0"``: a spurious
    label removed), and for all flips together (``"all"``):

    .. math:: \text{precision} = \frac{\#\{\text{flips } a \to b \text{ with } y = b\}}{\#\{\text{flips } a \to b\}}, \qquad
              \text{recall} = \frac{\#\{\text{flips } a \to b \text{ with } y = b\}}{\#\{\tilde y = a,\ y = b\}}

    i.e. the share of flips that moved to the true value, and the share of the
    noisy entries wrong in that way that got fixed. ``n_broken`` counts flips
    that made a right entry wrong. Precision is nan without flips, recall nan
    without wrong entries. ``errors_before`` / ``errors_after`` count wrong entries.
    """
    N = check_binary_matrix(Y_noisy, "Y_noisy")
    F = check_binary_matrix(Y_new, "Y_new")
    T = check_binary_matrix(Y_true, "Y_true")
    if not N.shape == F.shape == T.shape:
        raise ValueError(f"shapes differ: Y_noisy {N.shape}, Y_new {F.shape}, Y_true {T.shape}")
    flipped = N != F
    wrong = N != T

    def _stats(sel_flips: np.ndarray, sel_wrong: np.ndarray) -> dict:
        n_flips = int(sel_flips.sum())
        n_fixed = int((sel_flips & wrong).sum())  # a flip of a wrong binary entry lands on the truth
        n_wrong = int(sel_wrong.sum())
        return {
            "n_flips": n_flips,
            "n_fixed": n_fixed,
            "n_broken": n_flips - n_fixed,
            "n_wrong_before": n_wrong,
            "precision": n_fixed / n_flips if n_flips else float("nan"),
            "recall": n_fixed / n_wrong if n_wrong else float("nan"),
        }

    return {
        "all": _stats(flipped, wrong),
        "0->1": _stats(flipped & ~N, wrong & ~N),
        "1->0": _stats(flipped & N, wrong & N),
        "errors_before": int(wrong.sum()),
        "errors_after": int((F != T).sum()),
    }


# -- paper 001: recall at precision, colour entropy --------------------------------------------


def recall_at_precision(y_true: np.ndarray, scores: np.ndarray, precision: float = 0.9) -> dict:
    """R@P (paper 001's R@90, R@95): per class, the largest recall whose precision is >= ``precision``.

    For class ``c`` the items are ranked by ``scores[:, c]``; each threshold ``t`` (every
    distinct score, ties kept together) keeps the items scoring ``>= t``, with precision
    ``TP(t) / kept(t)`` and recall ``TP(t) / P_c``. R@P of the class is the largest recall among
    the thresholds whose precision reaches ``precision``; a class that reaches it at no threshold
    scores 0. The result averages over the classes with at least one true item (macro); classes
    absent from ``y_true`` are left out and listed.

    Parameters
    ----------
    y_true
        ``(n,)`` integer class codes in ``0 .. C-1``.
    scores
        ``(n, C)`` scores (probabilities), higher meaning more likely.
    precision
        the precision bar, in (0, 1].

    Returns
    -------
    dict
        ``{"macro": float, "per_class": (C,) array with NaN for absent classes, "absent": [codes]}``
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or len(s) != len(y):
        raise ValueError(f"scores must be (n, C) with one row per label; got {s.shape} for {len(y)} labels")
    if not 0 < precision <= 1:
        raise ValueError(f"precision must be in (0, 1]; got {precision}")
    n, c = s.shape
    per = np.full(c, np.nan)
    for k in range(c):
        pos = y == k
        n_pos = int(pos.sum())
        if n_pos == 0:
            continue
        order = np.argsort(-s[:, k], kind="stable")
        sorted_scores, hits = s[order, k], pos[order]
        tp = np.cumsum(hits)
        kept = np.arange(1, n + 1)
        # a threshold keeps whole tie groups: evaluate at the last item of each group
        last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
        ok = last & (tp / kept >= precision - 1e-12)
        per[k] = float(tp[ok].max() / n_pos) if ok.any() else 0.0
    present = ~np.isnan(per)
    return {"macro": float(per[present].mean()) if present.any() else float("nan"), "per_class": per,
            "absent": np.flatnonzero(~present).tolist()}


def cluster_label_entropy(clusters: np.ndarray, labels: np.ndarray) -> dict:
    """Paper 001's colour entropy: the entropy (nats) of the label distribution inside each cluster,
    averaged over clusters weighted by their size.

    ``H = sum_j (n_j / n) * (-sum_v p_jv ln p_jv)``, with ``p_jv`` the share of label ``v`` in
    cluster ``j``. With ``labels`` the colours, a higher value means clusters mix colours: the
    embedding groups designs regardless of colour. Also returned: the unweighted mean over
    clusters and the entropy of the labels overall (the ceiling a colour-blind clustering nears).
    """
    cl = np.asarray(clusters)
    lab = np.asarray(labels)
    if cl.shape != lab.shape or cl.ndim != 1:
        raise ValueError(f"clusters and labels must be 1-d of one length; got {cl.shape} and {lab.shape}")
    if len(cl) == 0:
        raise ValueError("no items")
    _, ci = np.unique(cl, return_inverse=True)
    _, li = np.unique(lab, return_inverse=True)
    counts = np.zeros((ci.max() + 1, li.max() + 1))
    np.add.at(counts, (ci, li), 1)
    sizes = counts.sum(1)
    p = counts / sizes[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    overall = np.bincount(li) / len(li)
    return {"weighted": float((sizes / sizes.sum()) @ h), "mean": float(h.mean()),
            "overall": float(-(overall * np.log(overall)).sum()), "n_clusters": int(len(sizes))}
