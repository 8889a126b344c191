r"""Keeping what the start knew: feature distillation to the frozen pretrained encoder (``SSLConfig.keep``).

Fine-tuning a pretrained encoder with a self-supervised loss alone drifts from what the start knew: on
fashion-products every SkiLL variant lost 5-7 points of article_type accuracy against the ImageNet
EfficientNet-Lite0 it starts from (RESULTS.md §11). The remedy of continual learning is to distil the start into
the new model while it learns: "Learning without Forgetting" (Li & Hoiem, 2016) keeps the old model's outputs on
the new data; CaSSLe ("Self-Supervised Models are Continual Learners", Fini et al., CVPR 2022) adds, beside the SSL
loss, a term that keeps the new features predictive of the frozen old ones. Here the term is the cosine distance
between the student's features and the frozen pretrained encoder's, on the *un-jittered* view of each product
(its product crop resized to the global size: no crop, no colour augmentation), weighted by :math:`\lambda`:

.. math:: L = L_{\mathrm{DINO}} + \lambda \, \frac{1}{B} \sum_i \Big(1 - \cos\big(f_\theta(\bar x_i),
          f_0(\bar x_i)\big)\Big)

where :math:`f_\theta` is the student's backbone and :math:`f_0` the pretrained one (frozen). The DINO term still
sees only the jittered views, so colour invariance is learnt there; the distillation term anchors the features of
clean images, where the pretrained encoder's design knowledge lives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["feature_distillation_loss"]


def feature_distillation_loss(student: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance ``1 - cos(student_i, anchor_i)`` over the rows (``anchor`` is not differentiated).

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> a = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # row 0 points the same way, row 1 at a right angle
    >>> float(feature_distillation_loss(s, a))
    0.5
    """
    if student.shape != anchor.shape:
        raise ValueError(f"student and anchor features differ in shape: {tuple(student.shape)} vs {tuple(anchor.shape)}")
    return (1.0 - F.cosine_similarity(student.float(), anchor.detach().float(), dim=-1)).mean()
