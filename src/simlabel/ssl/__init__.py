"""Self-supervised design embeddings: SkiLL (paper 001) on DINO's self-distillation.

* :mod:`~simlabel.ssl.dino`: head, loss, centring, EMA, schedules, collapse monitors;
* :mod:`~simlabel.ssl.augment`: pre-processing, the global colour-agnostic space, the local
  space per product type;
* :mod:`~simlabel.ssl.backbones`: EfficientNet-Lite0 (partly trainable) and a small ViT;
* :mod:`~simlabel.ssl.train`: :func:`train_ssl`, checkpoints, resume, the exported encoder;
* :mod:`~simlabel.ssl.probes`: linear / one-hidden-layer probes (accuracy, R@90, R@95) and
  colour entropy.

A trained folder is an encoder: ``simlabel embed --model skill:DIR``.
"""

from simlabel.ssl.augment import LocalSpace, ViewConfig
from simlabel.ssl.train import SSLConfig, SSLResult, train_ssl

__all__ = ["LocalSpace", "SSLConfig", "SSLResult", "ViewConfig", "train_ssl"]
