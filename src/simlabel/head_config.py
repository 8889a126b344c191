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
    """How a head is built and trained: the hyper-parameters of an :class:`~simlabel.heads.EmbeddingClassifier`.

    One object, so that the command line, the experiments and a model's ``config.json`` share
    it. Every value is checked when the config is made.

    Parameters
    ----------
    head : {"linear", "mlp", "fusion"}, default "linear"
        ``linear``: one dense layer (a softmax over the classes, or a single logistic output
        for two classes with ``loss="ce"`` and no soft targets); ``mlp``: one hidden ReLU
        layer with dropout before it; ``fusion``: paper 002's attention fusion of several
        inputs side by side (image + title embeddings).
    hidden : int, default 512
        Width of the ``mlp`` head's hidden layer, and of the hidden layer of the MLP after
        the ``fusion`` head's attention.
    dropout : float, default 0.2
        Dropout probability of the ``mlp`` and ``fusion`` heads (the fusion head's attention
        too), in [0, 1). simlabel's dropout layers take it on the CPU to the nearest
        multiple of 1/256 (0.2 -> 0.1992).
    fusion_width : int, default 256
        The width each input of the ``fusion`` head is projected to (the attention's width).
    fusion_heads : int, default 4
        Attention heads of the ``fusion`` head; torch requires it to divide ``fusion_width``.
    lr : float or None, default None
        The AdamW learning rate, > 0. ``None``: :data:`DEFAULT_LR` of the head (resolved at
        fit time, so ``replace(cfg, head=...)`` keeps it right; see :attr:`learning_rate`).
    weight_decay : float, default 1e-4
        AdamW's (decoupled) weight decay.
    batch_size : int, default 512
        Rows per mini-batch.
    max_epochs : int, default 200
        The most epochs trained (all of them when there is no validation split).
    patience : int, default 10
        Early stopping: training stops after this many epochs in a row in which the
        monitored validation score did not improve (by more than 1e-6); the best epoch's
        weights are kept.
    val_frac : float, default 0.15
        The share of the training rows held out for validation (stratified) when ``fit`` is
        given no ``X_val``, in [0, 1); 0: no validation split, so no early stopping.
    class_weight : {"balanced"} or None, default None
        ``balanced``: each row's loss is multiplied by ``n / (C * n_c)``, with ``n_c`` the
        training rows of its class (scikit-learn's ``class_weight="balanced"``); ``None``:
        every class weighs 1.
    loss : {"ce", "focal"}, default "ce"
        ``ce``: cross-entropy; ``focal``: the focal loss (Lin et al. 2017),
        ``-alpha * (1 - p_y)**gamma * log(p_y)`` with ``p = softmax(z)``.
    focal_gamma : float, default 2.0
        The focal loss's focusing parameter ``gamma``, >= 0 (0 with no ``focal_alpha``:
        cross-entropy).
    focal_alpha : float or None, default None
        The focal loss's ``alpha``, one factor for every class; ``None``: 1.
    kl_weight : float, default 1.0
        With soft targets (paper 002), the weight of the KL term the objective adds,
        ``kl_weight * temperature**2 * KL(T[y] || softmax(z / temperature))`` with ``T[y]``
        the target row of the item's class; >= 0 (0: the hard labels alone).
    temperature : float, default 1.0
        The temperature of that KL term, > 0.
    monitor : {"loss", "accuracy"}, default "loss"
        What early stopping watches on the validation split: ``loss`` (the objective) or
        ``accuracy`` (fairer when the objective itself changes between runs, e.g.
        curriculum targets).
    seed : int, default 0
        Seeds the initial weights, the order of the mini-batches and the validation split.
    device : str, default "auto"
        Where the head trains: ``cpu``, ``cuda``, or ``auto`` (``cuda`` when torch sees a
        CUDA device, else ``cpu``).
    precision : {"auto", "fp32", "bf16"}, default "auto"
        Matrix products of training in bfloat16 (autocast; weights, optimiser and loss stay
        float32): ``auto`` where the device computes bf16 natively, ``fp32`` or ``bf16``.

    Raises
    ------
    ConfigError
        (:class:`~simlabel.errors.ConfigError`, a ``ValueError``) naming the field, for a
        ``head``, ``loss``, ``monitor``, ``class_weight`` or ``precision`` not among its
        choices, ``val_frac`` or ``dropout`` outside [0, 1), ``lr`` or ``temperature`` not
        > 0, a negative ``kl_weight``, or ``hidden``, ``fusion_width``, ``fusion_heads``,
        ``batch_size``, ``max_epochs`` or ``patience`` not a positive integer.

    See Also
    --------
    simlabel.heads.EmbeddingClassifier : The head this configures.
    MultiLabelHeadConfig : The multi-label head's configuration.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from simlabel import HeadConfig
    >>> cfg = HeadConfig(head="mlp", max_epochs=50)
    >>> cfg.learning_rate  # lr=None: the mlp head's default
    0.01
    >>> replace(cfg, head="linear").learning_rate
    0.05
    >>> HeadConfig(val_frac=1.0)
    Traceback (most recent call last):
    ...
    simlabel.errors.ConfigError: val_frac must be in [0, 1); got 1.0
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
    """How the multi-label head is built and trained (:class:`~simlabel.heads.MultiLabelClassifier`).

    ``hidden`` 0 for one dense layer (else one hidden ReLU layer of that width), one sigmoid
    per label, binary focal loss (paper 004: ``focal_gamma`` 2, ``focal_alpha`` 0.6), Adam
    on shuffled mini-batches for ``epochs`` passes (no validation split, no early stopping).
    Per row, summed over the labels ``j`` (``p = sigmoid(z)``, ``t`` the 0/1 target)::

        l = sum_j alpha_t * (1 - p_t)**gamma * BCE(z_j, t_j)
        p_t = p t + (1 - p)(1 - t),  alpha_t = alpha t + (1 - alpha)(1 - t)

    averaged over the rows of a mini-batch.

    Parameters
    ----------
    hidden : int, default 0
        0: one dense layer ``d -> L``; else the width of one hidden ReLU layer before it.
    lr : float, default 1e-3
        Adam's learning rate, > 0 (no weight decay).
    batch_size : int, default 64
        Rows per mini-batch.
    epochs : int, default 30
        Passes over the rows, >= 0.
    focal_gamma : float, default 2.0
        The focusing parameter ``gamma``, >= 0.
    focal_alpha : float, default 0.6
        ``alpha``, the weight of a positive entry (a negative one weighs ``1 - alpha``), in
        [0, 1].
    seed : int, default 0
        Seeds the initial weights and the order of the mini-batches.
    device : str, default "cpu"
        Where the head trains: ``cpu``, ``cuda`` or ``auto``.

    Raises
    ------
    ConfigError
        (:class:`~simlabel.errors.ConfigError`, a ``ValueError``) naming the field, for a
        negative ``hidden`` or ``epochs``, a ``batch_size`` that is not a positive integer,
        ``lr`` not > 0, a negative ``focal_gamma`` or ``focal_alpha`` outside [0, 1].

    See Also
    --------
    HeadConfig : The single-label heads' configuration.

    Examples
    --------
    >>> from simlabel import MultiLabelHeadConfig
    >>> cfg = MultiLabelHeadConfig(hidden=128, epochs=10)
    >>> cfg.focal_gamma, cfg.focal_alpha
    (2.0, 0.6)
    >>> MultiLabelHeadConfig(focal_alpha=1.5)
    Traceback (most recent call last):
    ...
    simlabel.errors.ConfigError: focal_alpha must be in [0, 1]; got 1.5
    """

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
