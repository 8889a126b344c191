"""DINO's self-distillation pieces, in plain torch: head, loss with centring, EMA, schedules.

Design after facebookresearch/dino (``main_dino.py``, ``utils.py``, ``vision_transformer.py``;
Apache-2.0, Copyright (c) Facebook, Inc. and its affiliates). Nothing is copied verbatim; the
structure (bottleneck head with a weight-normalised last layer, centring with momentum,
teacher-temperature warm-up, cosine schedules, per-parameter gradient clipping, last layer
frozen during the first epoch) follows that code, which SkiLL (paper 001) builds on.

Paper 001's equations, as implemented:

* eq. 3: ``o_s = softmax(S_theta(x) / tau_s)``, ``o_t = softmax(C_e(T_phi(y)) / tau_t)``, with
  ``C_e(z) = z - c`` the centring of :func:`update_center`;
* eq. 5: ``L = sum over (teacher view, student view) pairs of -o_t . log o_s``.

Which views go where: the paper's eq. 3 gives the high-resolution views ``x`` to the student and
the low-resolution ``y`` to the teacher; its text (and DINO) says the teacher sees only the
global (high-resolution) views and the student sees every view. We follow the text and DINO
(``teacher_views="global"``, the default of :class:`simlabel.ssl.train.SSLConfig`); the printed
equation is available as ``teacher_views="local"`` (the teacher sees the low-resolution views,
the student the two global ones). Pairs of one view with itself are excluded, as in DINO.

The sum in eq. 5 is averaged over its terms (``reduction="mean"``, DINO's choice), which only
rescales the gradient relative to ``"sum"``.

EMA: the paper prints ``phi <- lambda * theta + (1 - lambda) * phi``; DINO writes
``phi <- m * phi + (1 - m) * theta``. They are one update with ``lambda = 1 - m``: DINO's
``m = 0.996`` is the paper's ``lambda = 0.004``. :func:`ema_update` takes ``m``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DINOHead",
    "cancel_last_layer_gradients",
    "clip_gradients",
    "collapse_monitors",
    "cosine_schedule",
    "dino_loss",
    "ema_update",
    "teacher_temperature_schedule",
    "update_center",
]


class DINOHead(nn.Module):
    """Projection head: MLP ``in -> hidden -> ... -> bottleneck``, L2-normalised, then a
    weight-normalised linear layer to ``out_dim`` prototypes (DINO's ``DINOHead``).

    ``norm_last_layer=True`` fixes the weight norm's magnitude ``g`` at 1 (DINO's default, which
    stabilises training); the direction ``v`` trains.
    """

    def __init__(self, in_dim: int, out_dim: int = 4096, *, hidden_dim: int = 1024, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = True) -> None:
        super().__init__()
        n_layers = max(n_layers, 1)
        if n_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(n_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor, *, n_student_views: int,
              n_teacher_views: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
              shared_views: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy between the centred, sharpened teacher and the student over view pairs.

    Parameters
    ----------
    student_out
        ``(n_student_views * B, K)`` student logits, view-major (view 0's batch first).
    teacher_out
        ``(n_teacher_views * B, K)`` teacher logits, view-major; no gradient flows into them.
    center
        ``(1, K)`` the running centre ``c`` (eq. 3's ``C_e``).
    n_student_views, n_teacher_views
        how many views each output holds.
    shared_views
        teacher view ``i`` and student view ``i`` are the same crop for ``i < shared_views``;
        those pairs are skipped. Default: ``n_teacher_views`` when the teacher's views are the
        student's first ones (DINO), i.e. ``min(n_teacher_views, n_student_views)``.
    reduction
        ``"mean"`` over the pairs (DINO) or ``"sum"`` (eq. 5 as printed).

    Returns
    -------
    torch.Tensor
        the scalar loss ``sum_{t, s != t} mean_b sum_k -softmax((T_t - c)/tau_t) log softmax(S_s/tau_s)``
        (divided by the number of pairs under ``"mean"``).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum; got {reduction!r}")
    if shared_views is None:
        shared_views = min(n_teacher_views, n_student_views)
    log_s = F.log_softmax(student_out.float() / student_temp, dim=-1).chunk(n_student_views)
    q = F.softmax((teacher_out.detach().float() - center) / teacher_temp, dim=-1).chunk(n_teacher_views)
    total = student_out.new_zeros((), dtype=torch.float32)
    terms = 0
    for t, qt in enumerate(q):
        for s, ls in enumerate(log_s):
            if t == s and t < shared_views:
                continue
            total = total + torch.sum(-qt * ls, dim=-1).mean()
            terms += 1
    if terms == 0:
        raise ValueError("no (teacher view, student view) pair to compare: give the student more views")
    return total / terms if reduction == "mean" else total


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """``c <- m c + (1 - m) mean_b T(y_b)`` in place (DINO's ``update_center``); returns ``center``."""
    batch_center = teacher_out.float().mean(dim=0, keepdim=True)
    center.mul_(momentum).add_(batch_center, alpha=1.0 - momentum)
    return center


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``phi <- m phi + (1 - m) theta`` for every parameter (the paper's ``lambda = 1 - m``)."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student differ in their parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


def cosine_schedule(base: float, final: float, total_steps: int, *, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """Per-step values: a linear warm-up ``warmup_start -> base``, then a half cosine ``base -> final``
    (DINO's ``cosine_scheduler``, counted in steps rather than epochs)."""
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    warm = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    rest = total_steps - warmup_steps
    i = np.arange(rest)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / max(rest, 1)))
    return np.concatenate([warm, cos]).astype(np.float64)


def teacher_temperature_schedule(start: float, final: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """Linear warm-up of the teacher temperature ``start -> final`` (0.04 -> 0.07 in DINO), then constant."""
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    return np.concatenate([np.linspace(start, final, warmup_steps, endpoint=False),
                           np.full(total_steps - warmup_steps, final)]).astype(np.float64)


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> None:
    """Rescale each parameter's gradient to norm at most ``clip`` (DINO's per-tensor clipping)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or clip <= 0:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(clip / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


def cancel_last_layer_gradients(head: DINOHead) -> None:
    """Drop the last layer's gradients (DINO freezes it during the first epoch)."""
    for p in head.last_layer.parameters():
        p.grad = None


@torch.no_grad()
def collapse_monitors(teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> dict[str, float]:
    """The signs of the two collapses DINO's centring and sharpening balance.

    * ``entropy``: mean entropy of the teacher's output distributions (nats). Near ``log K``:
      every output uniform (collapse to uniform).
    * ``kl_uniform``: ``KL(mean teacher distribution || uniform) = log K - H(mean)``. Near
      ``log K``: every image sent to the same prototype (collapse to one dimension).
    * ``center_norm``: L2 norm of the centre.
    """
    p = F.softmax((teacher_out.float() - center) / teacher_temp, dim=-1)
    k = p.shape[-1]
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
    mean = p.mean(0)
    h_mean = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return {"entropy": float(ent), "kl_uniform": float(math.log(k) - h_mean), "center_norm": float(center.norm()),
            "log_k": math.log(k)}
