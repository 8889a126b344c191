"""The optimiser every simlabel head and SELF-ML module trains with.

:class:`AdamW` is Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) over a module's
parameters, computed by torch's own functional implementation (``torch.optim.adam.adam``), with
``zero_grad`` and ``step`` as ``torch.optim.AdamW``.

Why not ``torch.optim.AdamW`` itself: every ``torch.optim.Optimizer`` imports ``torch._dynamo``
when it is built (1.3 s on 2 cores, more than a linear head's whole fit), and a command trains
one head per process. The update is the same code (``decoupled=True`` is AdamW;
``decoupled=False`` is Adam with L2 weight decay, ``weight_decay=0`` plain Adam): torch's fused
kernel, as ``torch.optim.AdamW(fused=True)``, for float parameters on CPU or CUDA (one pass over
each tensor, 5x faster than the default for-loop on a 1000 x 1280 basis), and
``tests/test_optim.py`` checks that the trajectories are identical to ``torch.optim``'s.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["AdamW"]


class AdamW:
    """Adam / AdamW by ``torch.optim.adam.adam``; see the module docstring.

    ``weight_decay`` defaults to ``torch.optim.AdamW``'s 0.01; ``betas`` and ``eps`` as torch's.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, *, weight_decay: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, decoupled: bool = True) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps, self.decoupled = lr, weight_decay, betas, eps, decoupled
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # torch's fused kernel (one pass over each tensor; 5x faster on CPU for a 1000 x 1280
        # basis) where it exists, its for-loop implementation elsewhere
        self.fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in self.params)
        self.steps = [torch.tensor(0.0, device=p.device if self.fused and p.device.type == "cuda" else "cpu")
                      for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        from torch.optim.adam import adam

        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        adam([self.params[i] for i in live], [self.params[i].grad for i in live], [self.exp_avg[i] for i in live],
             [self.exp_avg_sq[i] for i in live], [], [self.steps[i] for i in live],
             fused=self.fused or None, decoupled_weight_decay=self.decoupled, amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr,
             weight_decay=self.weight_decay, eps=self.eps, maximize=False)
