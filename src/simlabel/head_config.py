"""The configurations of the heads (:mod:`simlabel.heads`): what is built and how it trains.

Apart from the heads themselves so that the command line reads its defaults without importing torch's
training loop or scikit-learn (``simlabel train --help`` stays quick), and so that a config can be made,
checked and saved anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simlabel.checks import in_range, one_of, positive_int

__all__ = ["DEFAULT_LR", "HeadConfig", "MultiLabelHeadConfig"]


@dataclass
class HeadConfig:
    """How a head is built and trained.

    ``loss``: ``ce`` (cross-entropy) or ``focal`` (Lin et al. 2017; ``focal_gamma``, ``focal_alpha``).
    With soft targets (paper 002) the objective adds ``kl_weight * KL(T[y] || softmax(z / temperature))``.
    ``monitor``: what early stopping watches on the validation split, ``loss`` (the objective) or
    ``accuracy`` (fairer when the objective itself changes between runs, e.g. curriculum targets).
    """

    head: Literal["linear", "mlp", "fusion"] = "linear"
    hidden: int = 512
    dropout: float = 0.2
    fusion_width: int = 256
    fusion_heads: int = 4
    #: None: :data:`DEFAULT_LR` of the head (resolved at fit time, so ``replace(cfg, head=...)`` keeps it right)
    lr: float | None = None
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 200
    patience: int = 10
    val_frac: float = 0.15
    class_weight: Literal["balanced"] | None = None
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    kl_weight: float = 1.0
    temperature: float = 1.0
    monitor: Literal["loss", "accuracy"] = "loss"
    seed: int = 0
    device: str = "auto"
    #: matrix products of training in bfloat16 (autocast; weights, optimiser and loss stay
    #: float32): ``auto`` where the device computes bf16 natively, ``fp32`` or ``bf16``
    precision: str = "auto"

    def __post_init__(self) -> None:
        one_of(self.head, ("linear", "mlp", "fusion"), "head")
        one_of(self.precision, ("auto", "fp32", "bf16"), "precision")
        one_of(self.loss, ("ce", "focal"), "loss")
        one_of(self.monitor, ("loss", "accuracy"), "monitor")
        one_of(self.class_weight, ("balanced", None), "class_weight")
        in_range(self.val_frac, "val_frac", 0, 1, hi_open=True)
        if self.lr is not None:
            in_range(self.lr, "lr", 0, lo_open=True)
        in_range(self.dropout, "dropout", 0, 1, hi_open=True)
        in_range(self.temperature, "temperature", 0, lo_open=True)
        in_range(self.kl_weight, "kl_weight", 0)
        for name in ("hidden", "fusion_width", "fusion_heads", "batch_size", "max_epochs", "patience"):
            positive_int(getattr(self, name), name)


    @property
    def learning_rate(self) -> float:
        """``lr``, or the head's default."""
        return DEFAULT_LR[self.head] if self.lr is None else float(self.lr)


#: AdamW learning rates per head with batches of 512 rows, tuned on fashion-products (75 classes)
#: and clothing-small (10): the largest that keeps the test accuracy of the old 1e-3 / 256-row
#: setting within its seed spread (``benchmarks/bench_training.py``)
DEFAULT_LR = {"linear": 0.05, "mlp": 0.01, "fusion": 0.001}


@dataclass
class MultiLabelHeadConfig:
    """The multi-label head: ``hidden`` 0 for one dense layer (else one hidden ReLU layer of that
    width), one sigmoid per label, binary focal loss (paper 004: ``focal_gamma`` 2,
    ``focal_alpha`` 0.6), Adam on shuffled mini-batches for ``epochs`` passes."""

    hidden: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    focal_gamma: float = 2.0
    focal_alpha: float = 0.6
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive_int(self.hidden, "hidden", minimum=0)
        positive_int(self.batch_size, "batch_size")
        positive_int(self.epochs, "epochs", minimum=0)
        in_range(self.lr, "lr", 0, lo_open=True)
        in_range(self.focal_gamma, "focal_gamma", 0)
        in_range(self.focal_alpha, "focal_alpha", 0, 1)
