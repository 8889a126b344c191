r"""Training losses for hard, soft and semantically smoothed labels (torch).

Every loss returns one value per sample, then reduces it (``reduction``):

* ``"none"``: the per-sample losses ``w_i l_i`` (shape ``(n,)``);
* ``"sum"``:  :math:`\sum_i w_i l_i`;
* ``"mean"`` (default): :math:`\sum_i w_i l_i / \sum_i w_i`, the weighted mean,
  which is the plain mean when no ``weight`` is given. A batch whose weights are
  all 0 gives 0 (not 0/0 = nan), so it leaves the parameters alone; the same
  convention as :mod:`simlabel.heads`.

``weight`` is an optional per-sample weight ``(n,)``, >= 0; a sample with weight
0 is removed exactly (its loss is not even multiplied, so an inf there cannot
turn into nan).

Losses (``z``: logits ``(n, C)``, ``p = softmax(z)``; ``y``: class index;
``t``: target distribution or multi-label targets):

* **focal loss** (Lin et al., "Focal Loss for Dense Object Detection", ICCV
  2017, eq. 5), multi-class with softmax:
  :math:`FL = -\alpha_{y} (1 - p_{y})^\gamma \log p_{y}`. With
  :math:`\gamma = 0` and no :math:`\alpha` it is cross-entropy.
* **binary focal loss**, multi-label with one sigmoid per label (paper 004,
  section 2: :math:`\gamma = 2, \alpha = 0.6`), summed over the labels:
  :math:`\sum_j -\alpha_t (1 - p_t)^\gamma \,\mathrm{BCE}(z_j, t_j)` with
  :math:`p_t = p t + (1 - p)(1 - t)`, :math:`\alpha_t = \alpha t + (1 - \alpha)(1 - t)`;
  for hard targets :math:`\mathrm{BCE} = -\log p_t`, which is Lin's eq. 5.
* **soft cross-entropy**: :math:`-\sum_c t_c \log p_c`.
* **KL to soft targets**: :math:`T^2 \, \mathrm{KL}(t \,\|\, \mathrm{softmax}(z/T))
  = T^2 \sum_c t_c (\log t_c - \log \mathrm{softmax}(z/T)_c)`, with
  :math:`0 \log 0 = 0`. The :math:`T^2` factor is Hinton, Vinyals & Dean,
  "Distilling the Knowledge in a Neural Network" (2015), section 2: with soft
  targets from a teacher tempered alike, the gradients of the KL term scale as
  :math:`1/T^2`, and the factor keeps its weight relative to a hard-label loss
  roughly unchanged when :math:`T` is changed. Here the targets are given
  probabilities (not tempered), so the gradient is
  :math:`\partial l / \partial z = T (\mathrm{softmax}(z/T) - t)`.
* **semantic label smoothing** (paper 002): a hard-label loss (focal or
  cross-entropy) plus ``kl_weight`` times the KL term, whose soft targets are the
  rows of the label-similarity target matrix for each item's class.
* **weighted cross-entropy** (paper 003): :math:`s(x_i) \, L_{ce}(x_i)`, with
  :math:`s(x_i)` a per-sample trust score (e.g. text-matching score).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["none", "mean", "sum"]

__all__ = [
    "binary_focal_loss",
    "focal_loss",
    "kl_to_targets",
    "smoothing_loss",
    "soft_cross_entropy",
    "weighted_cross_entropy",
]


# --------------------------------------------------------------------------- checks


def _check_logits(logits: Tensor, name: str = "logits") -> tuple[int, int]:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {logits.dtype}")
    return logits.shape[0], logits.shape[1]


def _check_target(target: Tensor, n: int, c: int) -> None:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(f"target must be 1-D of length n={n} (class indices), got shape {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got {target.dtype}")
    # An out-of-range index would otherwise fail deep inside gather with a less helpful message.
    if n and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(f"target class indices must lie in [0, {c}), got [{int(target.min())}, {int(target.max())}]")


def _check_same_shape(logits: Tensor, targets: Tensor, name: str) -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape:
        raise ValueError(f"{name} must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _as_weight(weight, n: int, like: Tensor) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"weight must be 1-D of length n={n} (one per sample), got shape {tuple(w.shape)}")
    if n and bool((w < 0).any()):
        raise ValueError("weight must be non-negative")
    return w


def _reduce(per_sample: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Apply per-sample weights and the reduction (see the module docstring)."""
    if weight is None:
        if reduction == "none":
            return per_sample
        return per_sample.mean() if reduction == "mean" else per_sample.sum()
    # where() rather than w * l: a zero weight must remove the sample even when its loss is inf.
    weighted = torch.where(weight != 0, weight * per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    wsum = weight.sum()
    # All-zero weights: total is 0, divide by 1 instead of 0 so value and gradient stay 0, not nan.
    return total / torch.where(wsum > 0, wsum, torch.ones_like(wsum))


def _modulating(one_minus_pt: Tensor, gamma: float) -> Tensor:
    """The focal factor (1 - p_t)^gamma, with a finite gradient at p_t = 1.

    For gamma < 1 the derivative of x^gamma is infinite at x = 0, and the
    product rule multiplies it by -log p_t = 0 there: inf * 0 = nan. The true
    limit of the loss's gradient is 0, which flooring x at the smallest normal
    number gives (clamp passes no gradient below its floor); the loss value is
    unchanged, since the factor multiplies -log p_t = 0.
    """
    return one_minus_pt.clamp_min(torch.finfo(one_minus_pt.dtype).tiny).pow(gamma)


# --------------------------------------------------------------------------- losses


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Multi-class (softmax) focal loss, Lin et al. 2017, eq. 5.

    .. math:: FL(p_t) = -\alpha_t (1 - p_t)^\gamma \log p_t,
              \quad p_t = \mathrm{softmax}(z)_{y}

    ``alpha``: ``None`` -> 1; a float -> the same for every class; a tensor
    ``(C,)`` -> per-class, :math:`\alpha_t = \alpha[y]`. With ``gamma=0`` and
    ``alpha=None`` this equals ``F.cross_entropy`` exactly.

    Parameters
    ----------
    logits
        ``(n, C)`` unnormalised scores.
    target
        ``(n,)`` integer class indices.
    gamma
        focusing parameter, >= 0 (down-weights easy samples).
    weight
        optional per-sample weights ``(n,)``.
    reduction
        ``"none"``, ``"mean"`` (weighted mean) or ``"sum"``.
    """
    n, c = _check_logits(logits)
    _check_target(target, n, c)
    _check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    w = _as_weight(weight, n, logits)
    if gamma == 0 and alpha is None and w is None:
        # Plain cross-entropy: let torch reduce it too, so the mean/sum match F.cross_entropy bit for bit.
        return F.cross_entropy(logits, target, reduction=reduction)

    # log p_t from log_softmax: softmax then log underflows to -inf for confident wrong predictions.
    logpt = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    loss = -logpt
    if gamma != 0:
        # 1 - p_t as -expm1(log p_t): exact near p_t = 1, where 1 - exp() cancels to 0 too early.
        loss = _modulating(-torch.expm1(logpt), gamma) * loss
    if alpha is not None:
        if isinstance(alpha, Tensor):
            a = alpha.to(dtype=logits.dtype, device=logits.device)
            if a.ndim != 1 or a.shape[0] != c:
                raise ValueError(f"alpha tensor must be 1-D of length C={c}, got shape {tuple(a.shape)}")
            loss = a[target] * loss
        else:
            loss = float(alpha) * loss
    return _reduce(loss, w, reduction)


def binary_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.6,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Multi-label focal loss: one sigmoid per label, summed over the labels.

    Lin et al. 2017, eq. 5 in its general (soft-target) form, as torchvision's
    ``sigmoid_focal_loss``:

    .. math:: l_i = \sum_j \alpha_t (1 - p_t)^\gamma \, \mathrm{BCE}(z_{ij}, t_{ij}),
              \quad p_t = p t + (1 - p)(1 - t),
              \quad \alpha_t = \alpha t + (1 - \alpha)(1 - t)

    where :math:`p = \sigma(z)`. For hard targets BCE is :math:`-\log p_t`.
    Defaults :math:`\gamma = 2, \alpha = 0.6` follow paper 004 (section 2).
    ``alpha=None`` means no alpha weighting (:math:`\alpha_t = 1`), so with
    ``gamma=0`` the per-sample loss is ``F.binary_cross_entropy_with_logits``
    summed over the labels.

    Parameters
    ----------
    logits
        ``(n, L)`` one logit per label.
    targets
        ``(n, L)`` in [0, 1]; may be soft.
    gamma
        focusing parameter, >= 0.
    alpha
        weight of positives (negatives get ``1 - alpha``), or ``None``.
    weight
        optional per-sample weights ``(n,)``.
    reduction
        ``"none"``, ``"mean"`` (weighted mean) or ``"sum"``.
    """
    n, _ = _check_logits(logits)
    _check_same_shape(logits, targets, "targets")
    _check_reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    w = _as_weight(weight, n, logits)
    t = targets.to(logits.dtype)

    # BCE with logits is the stable form of -[t log p + (1-t) log(1-p)] (log-sum-exp inside).
    loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    if gamma != 0:
        # 1 - p_t = p (1 - t) + (1 - p) t, with 1 - p = sigmoid(-z): no cancellation when p_t ~ 1.
        one_minus_pt = torch.sigmoid(logits) * (1 - t) + torch.sigmoid(-logits) * t
        loss = _modulating(one_minus_pt, gamma) * loss
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss.sum(dim=-1), w, reduction)


def soft_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Cross-entropy against a target distribution: :math:`-\sum_c t_c \log \mathrm{softmax}(z)_c`.

    ``targets`` ``(n, C)`` is used as given (rows are expected to sum to 1; one-hot
    rows give ``F.cross_entropy``). It equals :math:`H(t) + \mathrm{KL}(t \| p)`,
    so it has the gradient of :func:`kl_to_targets` (at ``T = 1``) but not its zero.
    """
    n, _ = _check_logits(logits)
    _check_same_shape(logits, targets, "targets")
    _check_reduction(reduction)
    w = _as_weight(weight, n, logits)
    t = targets.to(logits.dtype)
    # where(): a target of 0 against log p = -inf must add 0, not 0 * -inf = nan.
    logp = F.log_softmax(logits, dim=-1)
    loss = -torch.where(t != 0, t * logp, torch.zeros_like(logp)).sum(dim=-1)
    return _reduce(loss, w, reduction)


def kl_to_targets(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Distillation-style KL divergence from soft targets to the tempered prediction.

    .. math:: l_i = T^2 \sum_c t_c \left(\log t_c - \log \mathrm{softmax}(z / T)_c\right),
              \quad 0 \log 0 = 0

    The :math:`T^2` factor follows Hinton et al. 2015 ("Distilling the Knowledge
    in a Neural Network", section 2): when teacher and student are tempered
    alike, the gradient of the KL term shrinks as :math:`1/T^2`, and the factor
    keeps its size comparable to a hard-label loss across temperatures. Only the
    prediction is tempered here: ``targets`` are already probabilities (the rows
    of a label-similarity target matrix), so they are used as given, and the
    gradient is :math:`\partial l_i / \partial z_i = T (\mathrm{softmax}(z_i/T) - t_i)`
    (for rows of ``t`` summing to 1). The result is >= 0, and 0 when
    ``targets == softmax(z/T)``.
    """
    n, _ = _check_logits(logits)
    _check_same_shape(logits, targets, "targets")
    _check_reduction(reduction)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    w = _as_weight(weight, n, logits)
    t = targets.to(logits.dtype)
    logq = F.log_softmax(logits / temperature, dim=-1)
    # xlogy gives t log t with 0 log 0 = 0; the where() stops 0 * (-inf) from a saturated logit.
    per_class = torch.where(t != 0, torch.xlogy(t, t) - t * logq, torch.zeros_like(logq))
    loss = per_class.sum(dim=-1) * (temperature**2)
    return _reduce(loss, w, reduction)


def smoothing_loss(
    logits: Tensor,
    target: Tensor,
    soft_targets_rows: Tensor,
    *,
    loss: Literal["focal", "ce"] = "focal",
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    kl_weight: float = 1.0,
    temperature: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Semantic label smoothing objective (paper 002): hard-label loss + KL to soft targets.

    .. math:: l_i = L_{hard}(z_i, y_i) + \lambda \, T^2 \, \mathrm{KL}(S_{y_i} \,\|\, \mathrm{softmax}(z_i / T))

    where :math:`S` is the ``(C, C)`` soft-target matrix (each label spread over
    its nearest neighbours by label-embedding similarity) and
    ``soft_targets_rows`` is :math:`S_{y_i}` for each item, ``(n, C)`` (e.g.
    ``S[target]``). :math:`L_{hard}` is :func:`focal_loss` (``loss="focal"``,
    with ``gamma`` and ``alpha``) or cross-entropy (``loss="ce"``: the same with
    :math:`\gamma = 0`; ``alpha`` still applies as a class weight). ``kl_weight``
    is :math:`\lambda`; with 0 the result is exactly the hard loss.
    """
    n, c = _check_logits(logits)
    _check_target(target, n, c)
    _check_same_shape(logits, soft_targets_rows, "soft_targets_rows")
    _check_reduction(reduction)
    if loss not in ("focal", "ce"):
        raise ValueError(f"loss must be 'focal' or 'ce', got {loss!r}")
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    w = _as_weight(weight, n, logits)
    hard = focal_loss(logits, target, gamma=gamma if loss == "focal" else 0.0, alpha=alpha, reduction="none")
    if kl_weight != 0:
        # Skipped at 0 rather than multiplied by 0, so kl_weight=0 is the hard loss bit for bit.
        hard = hard + kl_weight * kl_to_targets(logits, soft_targets_rows, temperature=temperature, reduction="none")
    return _reduce(hard, w, reduction)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Cross-entropy with per-sample weights (paper 003: :math:`L = s(x_i) \, L_{ce}(x_i)`).

    ``weight`` ``(n,)`` is the per-sample trust :math:`s(x_i)` (e.g. how well the
    item's text matches its label); ``"mean"`` is :math:`\sum_i s_i L_i / \sum_i s_i`.
    ``weight=None`` gives plain ``F.cross_entropy``.
    """
    return focal_loss(logits, target, gamma=0.0, alpha=None, weight=weight, reduction=reduction)
