r"""A contrastive objective for SkiLL's views: InfoNCE between two views of a product, and the linear projector it
trains on a frozen encoder (``SSLConfig(objective="infonce", projector="linear")``, the ``projection`` recipe).

SimCLR's NT-Xent loss (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
2020; van den Oord et al. 2018's InfoNCE): for a batch of ``B`` products with L2-normalised embeddings
:math:`a_i, b_i` of two of their views, each :math:`a_i` must pick out its own :math:`b_i` among the batch,

.. math:: \ell(a, b) = -\frac{1}{B} \sum_i \log \frac{\exp(a_i \cdot b_i / \tau)}{\sum_j \exp(a_i \cdot b_j / \tau)},
          \qquad L = \tfrac12 \big(\ell(a, b) + \ell(b, a)\big).

With SkiLL's views the two global views of a product come from two *colour variants* of its design where the
catalog has them (eq. 1's positives) and are colour-jittered and greyed otherwise, so what survives the loss is the
design; the other products of the batch keep the embedding from collapsing (the uniformity SimCLR's negatives
give, without DINO's centring and sharpening, which a CPU-sized run does not bring out of its near-uniform start).

:class:`LinearProjector` is a square linear map initialised to the identity: training starts from the frozen
encoder's own geometry (what it knew), and the loss bends it only where two colours of one design disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearProjector", "info_nce_loss"]


def info_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between the rows of ``a`` and ``b`` ``(B, d)``: row ``i`` of each is the other's positive.

    Examples
    --------
    Two products whose views agree perfectly and are orthogonal to each other: the loss is the smallest it can be
    at this temperature, ``log(1 + e^{-1/tau})``.

    >>> import math, torch
    >>> a = torch.eye(2)
    >>> round(float(info_nce_loss(a, a, temperature=0.5)), 4) == round(math.log(1 + math.exp(-2.0)), 4)
    True
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (B, d) alike; got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class LinearProjector(nn.Module):
    """``x -> W x + c``, square, initialised to the identity (``mlp``: the layer, as the export reads a head)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Linear(dim, dim)
        with torch.no_grad():
            self.mlp.weight.copy_(torch.eye(dim))
            self.mlp.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
