r"""Probabilities that mean what they say: calibration, its error, and abstaining below a precision.

A head trained with cross-entropy is over-confident (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern
Neural Networks", ICML 2017). These are the numerical cores (arrays in, arrays out) that fix and measure it.

**Temperature scaling** (Guo et al., section 4.2): one scalar :math:`T > 0` divides every logit,
:math:`\hat p = \mathrm{softmax}(z / T)`, chosen to minimise the negative log-likelihood of held-out labels.
The NLL is convex in :math:`\beta = 1/T` (a log-sum-exp of functions linear in :math:`\beta`, less one linear
term), so a bounded scalar search finds the optimum. The ranking of the classes of each item, so every
prediction and accuracy, is unchanged. A logistic (one-logit) head is the two-class case, :math:`\sigma(z / T)`.

**Vector scaling** (the same section): :math:`\hat p = \mathrm{softmax}(w \odot z + b)`, one scale and one bias
per class, fitted by L-BFGS on the same NLL from :math:`w = 1, b = 0`. It can change predictions, and it needs
more held-out rows than temperature scaling (2C parameters instead of one).

**Expected calibration error** (Naeini et al. 2015; Guo et al., eq. 3): the items are binned by confidence
(their top probability) into ``n_bins`` equal-width bins of :math:`[0, 1]`, and

.. math:: \mathrm{ECE} = \sum_b \frac{|B_b|}{n}\,\bigl|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\bigr|.

The bins are the reliability diagram.

**Abstaining below a precision.** For each class :math:`c`, among the held-out items predicted :math:`c`, sorted
by confidence, the threshold :math:`t_c` is the lowest confidence whose items at or above it reach the precision
``min_precision`` (the largest such set: the most coverage). "Reach" is, by default, with confidence: the lower
end of the one-sided Wilson score interval at level :math:`1 - \alpha` (``alpha`` 0.05) of the set's precision
must be at least ``min_precision``,

.. math:: \frac{\hat p + \frac{z^2}{2k} - z\sqrt{\frac{\hat p(1-\hat p)}{k} + \frac{z^2}{4k^2}}}{1 + z^2/k}
          \ \ge\ P, \qquad z = \Phi^{-1}(1 - \alpha),

for :math:`k` items of which a share :math:`\hat p` are right. Taking the largest set whose *observed* precision
passes (``alpha=None``) picks the point where chance lifted it most, and a class's precision on new items then
falls short (on fashion-products' 26 classes with 20 or more test items, to 0.74 at ``min_precision`` 0.9). An
item predicted :math:`c` with confidence below :math:`t_c` abstains. A class with no held-out prediction, or
whose best set never passes, always abstains (its threshold is ``None``) and says so.

**Every class at once** (``scope="all"``, the default). "Each class's precision is at least :math:`P`" is one
claim per class, :math:`m` claims for the :math:`m` classes with held-out predictions; at level :math:`1-\alpha`
each, some class misses about :math:`m\alpha` times in all. The default holds them together (Bonferroni): each
class's bound is taken at :math:`\alpha / m`, so that with confidence :math:`1 - \alpha` *every* class reaches
:math:`P`. It keeps fewer items (on fashion-products, 56% of the test set instead of 75% at :math:`P = 0.9`) and
there every class with 20 or more test items reached 0.90 or more, where one at a time two classes fell to 0.65
and 0.72 (RESULTS.md §17). ``scope="each"`` takes each class at :math:`\alpha` on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simlabel.errors import InputError

__all__ = ["CALIBRATIONS", "SCOPES", "apply_calibration", "coverage_precision", "expected_calibration_error", "fit_calibration",
           "fit_temperature", "fit_vector_scaling", "precision_thresholds", "softmax", "thresholds_from_predictions",
           "wilson_lower"]

#: the calibrations :func:`fit_calibration` fits
CALIBRATIONS = ("temperature", "vector", "none")


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, C)`` logits, or the two-class probabilities of ``(n, 1)`` logistic logits."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise InputError(f"need (n, C) logits and n class codes, n > 0; got {z.shape} and {y.shape}")
    n_cls = max(z.shape[1], 2)
    if (y < 0).any() or (y >= n_cls).any():
        raise InputError(f"class codes must lie in [0, {n_cls}); got {y.min()}..{y.max()}")
    if not np.isfinite(z).all():
        raise InputError("the logits hold NaN or infinite values")
    return z, y


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    p = softmax(z)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature :math:`T` minimising the NLL of ``softmax(logits / T)`` on labels ``y``.

    Parameters
    ----------
    logits : ndarray of shape (n, C) or (n, 1)
        Held-out raw head outputs (``(n, 1)``: a logistic head's).
    y : ndarray of shape (n,)
        Their true class codes (columns of ``logits``; 0 or 1 for a logistic head).
    bounds : tuple of float, default (0.05, 20.0)
        The range searched for :math:`T`.

    Returns
    -------
    float
        :math:`T` (above 1: the head was over-confident).

    Raises
    ------
    InputError
        Shapes that do not match, class codes out of range, or non-finite logits.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    >>> round(fit_temperature(z, np.array([0, 1, 1, 2])), 4)  # one confident mistake in four: 4 / ln 6
    2.2324
    """
    from scipy.optimize import minimize_scalar

    z, y = _check(logits, y)
    lo, hi = bounds
    # NLL(beta) is convex in beta = 1 / T: a bounded scalar search finds its minimum
    res = minimize_scalar(lambda beta: _nll(z * beta, y), bounds=(1.0 / hi, 1.0 / lo), method="bounded",
                          options={"xatol": 1e-6})
    return float(1.0 / res.x)


def fit_vector_scaling(logits: np.ndarray, y: np.ndarray, *, max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scales ``w`` and biases ``b`` minimising the NLL of ``softmax(w * logits + b)``.

    Parameters
    ----------
    logits : ndarray of shape (n, C) or (n, 1)
        Held-out raw head outputs (``(n, 1)``: Platt scaling of a logistic head).
    y : ndarray of shape (n,)
        Their true class codes.
    max_iter : int, default 200
        L-BFGS iterations.

    Returns
    -------
    w, b : ndarray of shape (C,)
        The scales and biases (``(1,)`` each for a logistic head).

    Raises
    ------
    InputError
        As :func:`fit_temperature`.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    >>> w, b = fit_vector_scaling(z, np.array([0, 1, 1, 0]))
    >>> w.shape, b.shape
    ((2,), (2,))
    """
    import torch

    z, y = _check(logits, y)
    zt, yt = torch.tensor(z), torch.tensor(y)
    w = torch.ones(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss_fn():
        s = zt * w + b
        if s.shape[1] == 1:  # Platt scaling of a logistic head
            loss = torch.nn.functional.binary_cross_entropy_with_logits(s[:, 0], yt.double())
        else:
            loss = torch.nn.functional.cross_entropy(s, yt)
        return loss

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with torch.random.fork_rng(devices=[]):
        opt.step(closure)
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def fit_calibration(logits: np.ndarray, y: np.ndarray, method: str = "temperature") -> dict:
    """Fit ``method`` (one of :data:`CALIBRATIONS`) on held-out logits; returns what :func:`apply_calibration` takes.

    The record holds ``method``, its parameters (``temperature``, or ``scale`` and ``bias``), ``n`` (the rows it
    was fitted on) and the held-out NLL before and after.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> rec = fit_calibration(z, np.array([0, 1, 1, 0]))
    >>> rec["method"], rec["nll_after"] < rec["nll_before"]
    ('temperature', True)
    """
    if method not in CALIBRATIONS:
        raise InputError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {method!r}")
    z, y = _check(logits, y)
    rec: dict = {"method": method, "n": int(len(y)), "nll_before": round(_nll(z, y), 6)}
    if method == "temperature":
        rec["temperature"] = fit_temperature(z, y)
    elif method == "vector":
        w, b = fit_vector_scaling(z, y)
        rec["scale"], rec["bias"] = w.tolist(), b.tolist()
    rec["nll_after"] = round(_nll(_scaled(z, rec), y), 6)
    return rec


def _scaled(z: np.ndarray, calibration: dict | None) -> np.ndarray:
    if not calibration or calibration.get("method", "none") == "none":
        return z
    if calibration["method"] == "temperature":
        return z / float(calibration["temperature"])
    return z * np.asarray(calibration["scale"]) + np.asarray(calibration["bias"])


def apply_calibration(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated probabilities of raw head outputs (``calibration``: :func:`fit_calibration`'s record, or
    ``None`` for the plain softmax).

    Examples
    --------
    >>> import numpy as np
    >>> apply_calibration(np.array([[2.0, 0.0]]), {"method": "temperature", "temperature": 2.0}).round(3)
    array([[0.731, 0.269]])
    """
    return softmax(_scaled(np.asarray(logits, dtype=np.float64), calibration))


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> tuple[float, list[dict]]:
    """The expected calibration error of ``proba`` against class codes ``y``, and its reliability bins.

    Parameters
    ----------
    proba : ndarray of shape (n, C)
        Probabilities, rows summing to one.
    y : ndarray of shape (n,)
        True class codes (columns of ``proba``; ``-1`` for a class the model lacks: always wrong).
    n_bins : int, default 15
        Equal-width confidence bins of [0, 1] (Guo et al. use 15).

    Returns
    -------
    ece : float
        :math:`\\sum_b |B_b| / n \\, |acc(B_b) - conf(B_b)|`.
    bins : list of dict
        The non-empty bins: ``lo``, ``hi``, ``n``, ``confidence`` (mean), ``accuracy``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    >>> ece, bins = expected_calibration_error(p, np.array([0, 1, 0, 1]), n_bins=10)
    >>> round(ece, 3), [(b["n"], b["accuracy"]) for b in bins]  # (2 |0.5 - 0.9| + 2 |1 - 0.6|) / 4
    (0.4, [(2, 1.0), (2, 0.5)])
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2 or len(p) != len(y) or not len(y):
        raise InputError(f"need (n, C) probabilities and n labels, n > 0; got {p.shape} and {y.shape}")
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (lo, hi] bins, 0 in the first
    ece, bins = 0.0, []
    for b in range(n_bins):
        m = which == b
        if not m.any():
            continue
        acc, c = float(right[m].mean()), float(conf[m].mean())
        ece += m.sum() / len(y) * abs(acc - c)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()), "confidence": c, "accuracy": acc})
    return float(ece), bins


def wilson_lower(right: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """The lower end of the one-sided Wilson score interval at level ``1 - alpha`` of ``right / n``.

    Examples
    --------
    >>> import numpy as np
    >>> wilson_lower(np.array([9, 90]), np.array([10, 100]), 0.05).round(3)  # 90% seen: surer on more items
    array([0.652, 0.84 ])
    """
    from scipy.stats import norm

    z = norm.ppf(1 - alpha)
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(right, dtype=np.float64) / n
    return (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


#: how many classes a precision bound holds for at once: every class together (Bonferroni), or each on its own
SCOPES = ("all", "each")


def precision_thresholds(proba: np.ndarray, y: np.ndarray, min_precision: float,
                         classes: Sequence[str] | None = None, *, alpha: float | None = 0.05,
                         scope: str = "all") -> dict[str, dict]:
    """Per-class confidence thresholds under which a prediction abstains, so that each class's precision on these
    held-out items is at least ``min_precision`` (module docstring).

    Parameters
    ----------
    proba : ndarray of shape (n, C)
        Held-out (calibrated) probabilities.
    y : ndarray of shape (n,)
        Their true class codes.
    min_precision : float
        In (0, 1].
    classes : sequence of str, optional
        The class names, in column order (default ``"0"``, ``"1"``, ...).
    alpha : float or None, default 0.05
        The precision must be reached with confidence ``1 - alpha`` (the Wilson lower bound; module docstring);
        ``None``: the observed precision.
    scope : {"all", "each"}, default "all"
        ``all``: with confidence ``1 - alpha`` every class at once (each class's bound at ``alpha / m`` for the
        ``m`` classes with held-out predictions); ``each``: each class on its own at ``alpha``.

    Returns
    -------
    dict
        Per class: ``threshold`` (``None``: always abstains; JSON has no infinity), ``n`` (held-out items predicted the class),
        ``kept`` (of those, at or above the threshold), ``precision`` (of the kept; ``None`` when none),
        ``recall_kept`` (the share of the class's right predictions kept: what abstaining costs), and ``why``
        where the class always abstains.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])
    >>> t = precision_thresholds(p, np.array([0, 0, 1, 0, 1]), 0.75, ["a", "b"], alpha=None)
    >>> t["a"]["threshold"], t["a"]["kept"], t["a"]["precision"]  # 3 of the 4 'a' predictions are right
    (0.7, 4, 0.75)
    >>> t["b"]["threshold"], t["b"]["kept"]
    (0.8, 1)
    """
    p = np.asarray(proba, dtype=np.float64)
    names = list(classes) if classes is not None else [str(c) for c in range(p.shape[1])]
    return thresholds_from_predictions(p.argmax(axis=1), p.max(axis=1), y, min_precision, names, alpha=alpha,
                                       scope=scope)


def thresholds_from_predictions(pred: np.ndarray, conf: np.ndarray, y: np.ndarray, min_precision: float,
                                classes: Sequence[str], *, alpha: float | None = 0.05,
                                scope: str = "all") -> dict[str, dict]:
    """:func:`precision_thresholds` from each held-out row's predicted class code ``pred`` and its confidence
    ``conf`` alone (what a model keeps of its held-out rows), ``classes`` naming the codes.

    Examples
    --------
    >>> import numpy as np
    >>> t = thresholds_from_predictions(np.array([0, 0, 0, 0, 1]), np.array([0.95, 0.9, 0.8, 0.7, 0.8]),
    ...                                 np.array([0, 0, 1, 0, 1]), 0.75, ["a", "b"], alpha=None)
    >>> t["a"]["threshold"], t["b"]["threshold"]
    (0.7, 0.8)
    """
    if not 0 < min_precision <= 1:
        raise InputError(f"`min_precision` must lie in (0, 1]; got {min_precision}")
    if scope not in SCOPES:
        raise InputError(f"`scope` must be one of {', '.join(SCOPES)}; got {scope!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise InputError(f"`alpha` must lie in (0, 1); got {alpha}")
    pred, conf, y = np.asarray(pred), np.asarray(conf, dtype=np.float64), np.asarray(y)
    if alpha is not None and scope == "all":  # one claim per class with held-out predictions (Bonferroni)
        alpha = alpha / max(1, int(np.isin(np.arange(len(classes)), pred).sum()))
    out = {}
    for c, name in enumerate(classes):
        m = pred == c
        if not m.any():
            out[str(name)] = {"threshold": None, "n": 0, "kept": 0, "precision": None, "recall_kept": None,
                              "why": "no held-out item is predicted this class: it always abstains"}
            continue
        order = np.argsort(-conf[m], kind="stable")
        c_sorted, right = conf[m][order], (y[m] == c)[order]
        kept_n = np.arange(1, len(right) + 1)
        prec = np.cumsum(right) / kept_n
        sure = prec if alpha is None else wilson_lower(np.cumsum(right), kept_n, alpha)
        # a threshold keeps every item of equal confidence: only the last of a run of ties is a possible cut
        last_of_tie = np.r_[c_sorted[1:] < c_sorted[:-1], True]
        ok = np.flatnonzero((sure >= min_precision - 1e-12) & last_of_tie)
        if not len(ok):
            out[str(name)] = {"threshold": None, "n": int(m.sum()), "kept": 0, "precision": None, "recall_kept": 0.0,
                              "why": f"no confidence cut reaches precision {min_precision:g} on the held-out items"}
            continue
        k = int(ok[-1])  # the largest set: the most coverage at the precision asked
        out[str(name)] = {"threshold": float(c_sorted[k]), "n": int(m.sum()), "kept": k + 1, "precision": float(prec[k]),
                          "recall_kept": float(right[: k + 1].sum() / max(right.sum(), 1))}
    return out


def coverage_precision(proba: np.ndarray, y: np.ndarray, points: int = 50) -> list[dict]:
    """Precision (accuracy of the kept) against coverage (the share kept) when only the most confident items are
    kept, at ``points`` coverages from 1/points to 1.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    >>> [(c["coverage"], c["precision"]) for c in coverage_precision(p, np.array([0, 0, 1, 0]), points=2)]
    [(0.5, 1.0), (1.0, 0.75)]
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    order = np.argsort(-p.max(axis=1), kind="stable")
    right = (p.argmax(axis=1) == y)[order]
    prec = np.cumsum(right) / np.arange(1, len(right) + 1)
    out = []
    for q in np.linspace(1.0 / points, 1.0, points):
        k = max(1, int(round(q * len(right))))
        out.append({"coverage": round(k / len(right), 6), "precision": float(prec[k - 1]),
                    "confidence": float(p.max(axis=1)[order][k - 1])})
    return out
