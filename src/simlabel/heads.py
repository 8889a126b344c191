"""Classifier heads on frozen embeddings, with early stopping (paper 000: "a single dense layer").

:class:`EmbeddingClassifier` is a scikit-learn-style estimator (``fit``,
``predict_proba``, ``predict``, ``save``/``load``):

* ``head="linear"``: one dense layer; softmax over the classes, or a single
  logistic output when there are two (as paper 000);
* ``head="mlp"``: one hidden layer (ReLU, dropout) before it;
* ``head="fusion"``: paper 002's image + title fusion: each embedding projected to one width,
  multi-head attention over the modality tokens, then an MLP.

Training: AdamW on large mini-batches (512 rows) of tensors made once, cross-entropy
(optionally per-sample weights and balanced class weights), early stopping on the loss of a
validation split (stratified, ``val_frac`` of the training rows unless one is given),
restoring the best epoch. The learning rate defaults per head (:data:`DEFAULT_LR`): a linear
head on 6.5k fashion-products rows converges in ~50 epochs (1.3 s on 2 cores) instead of
running all 200 at the old ``1e-3`` on batches of 256 (``benchmarks/RESULTS.md`` §10). Deterministic for a given ``seed`` on CPU; the caller's global torch
RNG is left as it was (:func:`torch.random.fork_rng`).

:class:`MultiLabelClassifier` is the one multi-label head (one sigmoid per label,
binary focal loss, paper 004): the baselines of the flipping experiment and
SELF-ML's classifier are all this head.

:func:`out_of_fold_proba` predicts every row with heads that never saw it, the
counterpart of scikit-learn's ``cross_val_predict(method="predict_proba")``; it serves
paper 003's stage 2 and the cleanlab peer of paper 004.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from simlabel.calibration import apply_calibration, fit_calibration, thresholds_from_predictions
from simlabel.encoders.base import resolve_device, resolve_precision
from simlabel.errors import InputError
from simlabel.files import atomic_dir, atomic_write_json, exclusive, kill_point, read_json

# the configs live in their own room (the command line reads them without torch or scikit-learn); they are
# part of this module's API too
from simlabel.head_config import DEFAULT_LR as DEFAULT_LR
from simlabel.head_config import HeadConfig, MultiLabelHeadConfig
from simlabel.losses import binary_focal_loss, focal_loss, kl_to_targets
from simlabel.metrics import top_k_predictions
from simlabel.optim import AdamW
from simlabel.progress import task


class Dropout(nn.Module):
    """Inverted dropout, ``x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)``, as ``nn.Dropout``
    but 7x faster on CPU, where torch's Bernoulli sampling took a sixth of an MLP head's
    training time: the mask compares random bytes (four per 64-bit draw of torch's generator)
    with ``round(256 p)``, so ``p`` is taken to the nearest multiple of 1/256 (0.2 -> 0.1992)
    and the scale is exact for it. On CUDA it is ``nn.functional.dropout``. No parameters, so
    saved models load either way.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.threshold = int(round(256 * self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(0, 2**32)
        keep = words.to(torch.int32).view(torch.uint8)[:n].view(x.shape) >= self.threshold
        return x * keep.to(x.dtype) * (256.0 / (256 - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.threshold}/256"


class AttentionFusion(nn.Module):
    """Paper 002's fusion: each modality's embedding projected to one width, a multi-head
    self-attention layer over the modality tokens, mean-pooled, then an MLP.

    ``forward(x)`` takes the modalities concatenated, ``x = [x_1 | x_2 | ...]`` with widths
    ``input_dims``, and returns ``(n, n_out)`` logits.
    """

    def __init__(self, input_dims: Sequence[int], n_out: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.dims = [int(d) for d in input_dims]
        self.proj = nn.ModuleList(nn.Linear(d, cfg.fusion_width) for d in self.dims)
        self.modality = nn.Parameter(torch.zeros(len(self.dims), cfg.fusion_width))
        self.attn = nn.MultiheadAttention(cfg.fusion_width, cfg.fusion_heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(cfg.fusion_width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.fusion_width, cfg.hidden), nn.ReLU(), Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.dims, dim=1)
        tokens = torch.stack([p(part) for p, part in zip(self.proj, parts)], dim=1) + self.modality
        attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.mlp(self.norm(tokens + attended).mean(dim=1))


def _build_module(cfg: HeadConfig, input_dims: Sequence[int], n_out: int) -> nn.Module:
    dim = int(sum(input_dims))
    if cfg.head == "linear":
        return nn.Linear(dim, n_out)
    if cfg.head == "mlp":
        return nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out))
    if len(input_dims) < 2:
        raise InputError("the fusion head needs at least two inputs (image and text embeddings)")
    return AttentionFusion(input_dims, n_out, cfg)


SoftTargets = np.ndarray | Callable[[int], np.ndarray]


def check_sample_weights(w: np.ndarray, where: Callable[[int], str] | None = None) -> None:
    """Sample weights must be finite and >= 0, and not all 0 (a model trained on nothing).

    ``where(i)`` names row ``i`` in the message (e.g. the file and line); default ``row i``.
    """
    w = np.asarray(w, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        i = int(bad[0])
        name = where(i) if where else f"row {i}"
        more = f" ({len(bad)} such rows)" if len(bad) > 1 else ""
        raise InputError(f"{name}: sample weight {float(w[i])!r} is not a finite number >= 0{more}")
    if len(w) and not (w > 0).any():
        raise InputError("every sample weight is 0 (all weights zero): there is nothing to train on")


def stratified_split(t: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` row indices with ``n_val`` validation rows spread over the
    classes of ``t`` in proportion to their size (largest remainders get the rounding), each
    class's rows drawn at random.

    scikit-learn's ``train_test_split(stratify=...)`` does the same, but importing
    ``sklearn.model_selection`` costs 0.9 s, more than fitting a linear head.
    """
    t = np.asarray(t)
    classes, code, counts = np.unique(t, return_inverse=True, return_counts=True)
    exact = counts * (n_val / len(t))
    quota = np.floor(exact).astype(np.int64)
    short = int(n_val - quota.sum())
    if short > 0:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    # rank of each row inside its class under a random order: the first `quota` ranks validate
    order = np.lexsort((rng.random(len(t)), code))
    rank = np.empty(len(t), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(t)) - np.repeat(starts, counts)
    val = rank < quota[code]
    return np.flatnonzero(~val), np.flatnonzero(val)


def keep_every_class(t: np.ndarray, train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move one row of each class that has no training row from ``val`` back to ``train``, so a
    validation split never takes a class's only examples out of training."""
    val = np.asarray(val)
    missing = np.setdiff1d(np.unique(t[val]), t[train])
    back = np.array([val[t[val] == c][0] for c in missing], dtype=np.int64)
    if len(back):
        train = np.sort(np.concatenate([train, back]))
        val = val[~np.isin(val, back)]
    return train, val


class EmbeddingClassifier(ClassifierMixin, BaseEstimator):
    """A dense, MLP or attention-fusion head over frozen embeddings, as a scikit-learn classifier.

    See the module docstring for the heads and the training. ``sklearn.base.clone``,
    ``cross_val_score`` and ``Pipeline`` take it as they take ``LogisticRegression``.
    :meth:`fit` trains on ``X`` ``(n, d)`` and one label per row; :meth:`predict_proba`,
    :meth:`predict` and :meth:`decision_scores` use the trained head; :meth:`save` and
    :meth:`load` write and read a model folder (``config.json``, ``weights.pt``).
    Deterministic for a given ``config.seed`` on the CPU.

    Parameters
    ----------
    config : HeadConfig, optional
        Every hyper-parameter of the head and its training (:class:`HeadConfig`; ``None``: its
        defaults). One object, so that the CLI, the experiments and ``config.json`` share it.
    progress_label : str, default "train"
        How the epochs' progress is labelled (``train``; an experiment names its model).

    Attributes
    ----------
    classes_ : ndarray
        The classes, in the order of :meth:`predict_proba`'s columns: the sorted distinct
        labels (of the labels' own type), or, when ``fit`` is given ``classes``, those
        names as an object array of ``str``.
    config_ : HeadConfig
        The configuration the head was trained with (``config`` or the defaults).
    module_ : torch.nn.Module
        The trained head, on the CPU.
    n_features_in_, dim_ : int
        The width of ``X``.
    input_dims_ : list of int
        The widths of the concatenated inputs (the fusion head's modalities).
    logistic_ : bool
        Two classes with cross-entropy and no soft targets: one logistic output (paper 000),
        not a softmax of two.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` and, with a validation split, ``val_loss`` and
        ``val_accuracy``.
    best_epoch_ : int
        The epoch (from 0) whose weights were kept: the best validation score, or the last
        epoch without a validation split.
    precision_ : str
        The precision training ran in (``fp32`` or ``bf16``; ``config.precision`` resolved).
    warnings_ : list of str
        What went wrong but not fatally (no validation improvement after the first epoch,
        too few rows to validate, ...).
    classes_without_validation_ : list of str
        Classes with too few rows to hold any out for validation: trained on, not validated.
    training_ids_ : ndarray of uint64 or None
        Sorted 64-bit hashes of the ids trained on (set by :func:`simlabel.training.train`),
        saved as ``training_ids.npy`` so that an evaluation can find its ids among them;
        ``None`` for a head fitted directly.
    validation_index_ : ndarray of int64 or None
        The rows of ``fit``'s ``X`` held out for early stopping (``None``: no split), which
        :func:`simlabel.training.train` calibrates on.
    calibration_ : dict or None
        Set by :meth:`calibrate`: :func:`simlabel.calibration.fit_calibration`'s record
        (temperature or vector scaling, fitted on held-out rows), applied by
        :meth:`predict_proba`; ``None``: the plain softmax.
    held_out_ : dict of ndarray or None
        Set by :meth:`calibrate`: each held-out row's predicted class code, calibrated
        confidence and whether it was right, from which :meth:`thresholds` chooses the
        per-class abstention thresholds for any precision (saved as ``held_out.npz``).

    Raises
    ------
    ValueError
        From scikit-learn's input validation: ``X`` not a finite 2-D array of numbers, ``y``
        not one class label per row, or, at prediction, ``X`` of another width than ``fit`` saw.
    InputError
        From :meth:`fit`: fewer than two classes,
        labels not in ``classes``, ``input_dims`` that do not add up to the width of ``X``
        (or one input for the fusion head), soft targets that are not ``(C, C)``, sample
        weights that are not finite numbers >= 0 or all 0, an unknown ``config.device``,
        or a training loss that is no longer finite (diverged).
    ModelError
        ``config.device="cuda"`` where torch sees no CUDA device.
    sklearn.exceptions.NotFittedError
        :meth:`predict`, :meth:`predict_proba`, :meth:`decision_scores` or :meth:`save`
        before :meth:`fit`.

    See Also
    --------
    simlabel.training.train : A head on an embedding folder and label files.
    MultiLabelClassifier : The multi-label head.
    out_of_fold_proba : Probabilities from heads that never saw the row.

    Notes
    -----
    The objective is the weighted mean of per-row losses, ``sum_i w_i l_i / sum_i w_i``
    (``w_i`` the sample weight, 1 without), where for a row of class ``y`` with logits ``z``::

        l = c_y * (base(z, y) + kl_weight * temperature**2 * KL(T[y] || softmax(z / temperature)))

    ``base`` is the binary cross-entropy of the logistic output (``logistic_``), the focal
    loss ``-alpha * (1 - p_y)**gamma * log(p_y)`` (``loss="focal"``) or the cross-entropy
    ``-log(softmax(z)_y)``; the KL term is there only with soft targets ``T`` (``fit``'s
    ``soft_targets``, a ``(C, C)`` row-stochastic matrix); ``c_y = n / (C * n_y)`` with
    ``class_weight="balanced"``, else 1. Early stopping watches the same objective (or the
    accuracy, ``monitor``) on the validation split.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import EmbeddingClassifier, HeadConfig
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> y = np.array(["shirt"] * 20 + ["shoe"] * 20)
    >>> clf = EmbeddingClassifier(HeadConfig(max_epochs=20)).fit(X, y)
    >>> clf.classes_
    array(['shirt', 'shoe'], dtype='<U5')
    >>> clf.predict(X[[0, -1]])
    array(['shirt', 'shoe'], dtype='<U5')
    >>> clf.predict_proba(X).shape
    (40, 2)
    >>> clf.logistic_  # two classes, cross-entropy: one logistic output
    True
    >>> from sklearn.model_selection import cross_val_score
    >>> cross_val_score(EmbeddingClassifier(HeadConfig(max_epochs=20)), X, y, cv=2).round(2)
    array([1., 1.])
    """

    #: set by :func:`simlabel.training.train`; ``None`` for a head fitted directly
    training_ids_: np.ndarray | None = None
    validation_index_: np.ndarray | None = None
    calibration_: dict | None = None
    held_out_: dict | None = None

    def __init__(self, config: HeadConfig | None = None, progress_label: str = "train") -> None:
        self.config = config
        self.progress_label = progress_label

    @property
    def binary(self) -> bool:
        return len(self.classes_) == 2

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # dense embeddings only
        tags.non_deterministic = False  # seeded: the same config gives the same head
        return tags

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        classes: list[str] | None = None,
        soft_targets: SoftTargets | None = None,
        input_dims: Sequence[int] | None = None,
    ) -> "EmbeddingClassifier":
        """Train on ``X`` (n, d) with labels ``y``.

        ``soft_targets``: a (C, C) row-stochastic matrix (row c is the target of an item of class
        ``classes_[c]``), or a function ``epoch -> matrix`` (curriculum). ``input_dims``: widths of
        the concatenated inputs in ``X`` (e.g. ``[1280, 384]`` for image + title), needed by the
        fusion head.
        """
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import validate_data

        self.config_ = cfg = self.config if self.config is not None else HeadConfig()
        # scikit-learn's validation: finite float32 (n, d), one label per row (a column vector warns), n_features_in_
        with warnings.catch_warnings():
            # a few labels over many classes read to scikit-learn like a regression target: here they are classes
            warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
            X, y = validate_data(self, X, y, dtype=np.float32, order="C", ensure_min_samples=1)
            check_classification_targets(y)
        self.input_dims_ = [int(d) for d in input_dims] if input_dims else [X.shape[1]]
        if sum(self.input_dims_) != X.shape[1]:
            raise InputError(f"input_dims {self.input_dims_} do not add up to the width of X ({X.shape[1]})")
        if classes is None:
            self.classes_ = np.unique(y)  # the labels' own type, as scikit-learn's classifiers keep it
        else:  # simlabel's label files: classes named as text
            self.classes_, y = np.asarray([str(c) for c in classes], dtype=object), y.astype(str)
        if len(self.classes_) < 2:
            raise InputError(f"need at least two classes to train (got one class: {list(self.classes_)})")
        code = {c: i for i, c in enumerate(self.classes_)}
        unknown = sorted(map(str, set(y) - set(code)))
        if unknown:
            raise InputError(f"labels not in classes: {unknown[:5]}")
        n_cls = len(self.classes_)
        target_at = None
        if soft_targets is not None:
            target_at = soft_targets if callable(soft_targets) else (lambda epoch, m=np.asarray(soft_targets): m)
            first = np.asarray(target_at(0))
            if first.shape != (n_cls, n_cls):
                raise InputError(f"soft targets must be ({n_cls}, {n_cls}); got {first.shape}")
        # paper 000's logistic output for two classes; soft targets and focal loss need the softmax
        self.logistic_ = self.binary and target_at is None and cfg.loss == "ce"
        t = np.array([code[v] for v in y], dtype=np.int64)
        if sample_weight is None:
            w = np.ones(len(y), np.float32)
        else:
            from sklearn.utils.validation import _check_sample_weight

            w = _check_sample_weight(sample_weight, X, dtype=np.float32)  # 1-D, one per row, named errors
        check_sample_weights(w)
        self.warnings_, self.classes_without_validation_ = [], []
        self.validation_index_, self.calibration_, self.held_out_ = None, None, None
        if X_val is None and cfg.val_frac > 0:
            counts = np.bincount(t, minlength=n_cls)
            n_val = max(1, int(round(cfg.val_frac * len(t))))
            if counts.min() >= 2 and n_val >= n_cls and len(t) - n_val >= n_cls:
                # every class can appear on both sides: a stratified split
                idx_tr, idx_va = stratified_split(t, n_val, cfg.seed)
            else:
                # few labels: a plain split, then every class the split took out of training whole gets a row back
                perm = np.random.default_rng(cfg.seed).permutation(len(t))
                idx_tr, idx_va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
                idx_tr, idx_va = keep_every_class(t, idx_tr, idx_va)
                self.classes_without_validation_ = [str(self.classes_[c]) for c in range(n_cls) if counts[c] and not (t[idx_va] == c).any()]
            if len(idx_va) == 0:
                self.warnings_.append("too few labelled rows to hold any out for validation: trained for the full "
                                      f"{cfg.max_epochs} epochs without early stopping")
                Xv = tv = wv = None
            else:
                self.validation_index_ = np.asarray(idx_va, dtype=np.int64)
                Xv, tv, wv = X[idx_va], t[idx_va], w[idx_va]
                X, t, w = X[idx_tr], t[idx_tr], w[idx_tr]
                if wv.sum() == 0:
                    wv = np.ones_like(wv)  # validation rows all weighted 0: judge them unweighted
            if self.classes_without_validation_:
                shown = ", ".join(self.classes_without_validation_[:5])
                self.warnings_.append(f"{len(self.classes_without_validation_)} class(es) have too few rows to validate "
                                      f"(trained on, not validated): {shown}")
        elif X_val is not None:
            Xv = np.ascontiguousarray(X_val, dtype=np.float32)
            # the validation labels in the training labels' own type (text when classes were named)
            yv = np.asarray(y_val).astype(str) if classes is not None else np.asarray(y_val)
            unknown_val = sorted(map(str, set(yv.tolist()) - set(code)))
            if unknown_val:
                raise InputError(f"validation labels not in classes: {unknown_val[:5]}")
            tv = np.array([code[v] for v in yv], dtype=np.int64)
            wv = np.ones(len(tv), np.float32)
        else:
            Xv = tv = wv = None

        device = resolve_device(cfg.device)
        self.dim_ = self.n_features_in_ = X.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            module = _build_module(cfg, self.input_dims_, 1 if self.logistic_ else n_cls).to(device)
            self._train(module, device, X, t, w, Xv, tv, wv, target_at, n_cls)
        return self

    def _train(self, module, device, X, t, w, Xv, tv, wv, target_at, n_cls) -> None:
        cfg = self.config_
        self.precision_ = resolve_precision(cfg.precision, device)
        amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.precision_ == "bf16")
        opt = AdamW(module.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        cw = None
        if cfg.class_weight == "balanced":
            counts = np.bincount(t, minlength=n_cls).astype(np.float32)
            cw = torch.tensor(len(t) / (n_cls * np.maximum(counts, 1)), device=device)

        def objective(logits, target, weight, targets_matrix):
            if self.logistic_:
                per = nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), target.float(), reduction="none")
            elif cfg.loss == "focal":
                per = focal_loss(logits, target, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, reduction="none")
            else:
                per = nn.functional.cross_entropy(logits, target, reduction="none")
            if targets_matrix is not None and cfg.kl_weight:
                per = per + cfg.kl_weight * kl_to_targets(logits, targets_matrix[target], temperature=cfg.temperature, reduction="none")
            if cw is not None:
                per = per * cw[target]
            return (per * weight).sum() / weight.sum().clamp_min(1e-12)

        Xt, tt, wt = (torch.from_numpy(a).to(device) for a in (X, t, w))
        if Xv is not None:
            Xvt, tvt, wvt = (torch.from_numpy(a).to(device) for a in (Xv, tv, wv))
        gen = torch.Generator().manual_seed(cfg.seed)
        best, best_state, bad_epochs = float("inf"), None, 0
        self.history_, self.best_epoch_ = [], -1
        tm, tm_source = None, None
        with task(self.progress_label, cfg.max_epochs, unit="epochs") as bar:
            for epoch in range(cfg.max_epochs):
                if target_at is not None:
                    m = target_at(epoch)
                    if m is not tm_source:  # a curriculum changes its targets; fixed ones are made once
                        tm, tm_source = torch.as_tensor(np.asarray(m, dtype=np.float32), device=device), m
                module.train()
                perm = torch.randperm(len(Xt), generator=gen).to(device)
                total = torch.zeros((), device=device)
                for start in range(0, len(perm), cfg.batch_size):
                    b = perm[start : start + cfg.batch_size]
                    opt.zero_grad()
                    with amp:
                        logits = module(Xt[b])
                    loss = objective(logits.float(), tt[b], wt[b], tm)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(b)
                record = {"epoch": epoch, "train_loss": float(total) / max(1, len(perm))}
                if not np.isfinite(record["train_loss"]):
                    raise InputError(f"training diverged at epoch {epoch} (loss {record['train_loss']}): "
                                     "lower the learning rate (`lr`) or check the sample weights")
                shown = {"loss": f"{record['train_loss']:.4f}"}
                if Xv is not None:
                    module.eval()
                    with torch.no_grad():
                        with amp:
                            logits = module(Xvt).float()
                        val = float(objective(logits, tvt, wvt, tm))
                        if self.logistic_:
                            acc = float(((logits.squeeze(1) > 0).long() == tvt).float().mean())
                        else:
                            acc = float((logits.argmax(1) == tvt).float().mean())
                    record["val_loss"], record["val_accuracy"] = val, acc
                    score = val if cfg.monitor == "loss" else -acc
                    if score < best - 1e-6:
                        best, bad_epochs, self.best_epoch_ = score, 0, epoch
                        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    else:
                        bad_epochs += 1
                    shown.update({"val_loss": f"{val:.4f}", "val_acc": f"{acc:.4f}", "best": self.best_epoch_})
                self.history_.append(record)
                bar.advance(1, **shown)
                if Xv is not None and bad_epochs >= cfg.patience:
                    bar.finish(f"early stop, best epoch {self.best_epoch_}")
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
            if self.best_epoch_ == 0 and len(self.history_) > 1:
                self.warnings_.append(
                    "the validation score never improved after the first epoch: the model kept is one epoch old "
                    "(check the learning rate, the labels and the sample weights)")
        else:
            self.best_epoch_ = len(self.history_) - 1
        module.eval()
        self.module_ = module.cpu()

    def decision_scores(self, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """The head's raw outputs: ``(n, 1)`` logits for a logistic head, else ``(n, n_classes)``."""
        from sklearn.utils.validation import validate_data

        check_is_fitted(self, "module_")
        # writable: torch will not take a read-only array (a Parquet shard's vectors are read without a copy)
        X = np.require(validate_data(self, X, dtype=np.float32, reset=False, ensure_min_samples=0), requirements=["C", "W"])
        outs = []
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                outs.append(self.module_(torch.from_numpy(X[s : s + batch_size])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 1 if self.logistic_ else len(self.classes_)), np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities, columns in ``classes_`` order (calibrated when :meth:`calibrate` ran)."""
        z = self.decision_scores(X)
        if self.calibration_ is not None and self.calibration_.get("method", "none") != "none":
            return apply_calibration(z, self.calibration_)
        if self.logistic_:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0].astype(np.float64)))
            return np.stack([1 - p1, p1], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class of each row."""
        best = self.predict_proba(X).argmax(axis=1)  # first: an unfitted head says so before classes_ is read
        return self.classes_[best]

    def calibrate(self, X: np.ndarray, y: np.ndarray, method: str = "temperature") -> "EmbeddingClassifier":
        """Fit ``method`` (``temperature``, ``vector`` or ``none``; :mod:`simlabel.calibration`) on held-out rows
        ``X`` with labels ``y``, and keep what :meth:`thresholds` needs. Returns the head.

        Raises
        ------
        InputError
            An unknown ``method``, no rows, or labels that are not classes of the head.
        """
        check_is_fitted(self, "module_")
        self.calibration_ = None
        return self.calibrate_logits(self.decision_scores(X), y, method)

    def calibrate_logits(self, logits: np.ndarray, y: np.ndarray, method: str = "temperature") -> "EmbeddingClassifier":
        """As :meth:`calibrate`, from held-out logits (``(n, C)``; log-probabilities do as well, softmax being
        blind to a constant per row), e.g. those of heads that never saw the rows (out of fold)."""
        check_is_fitted(self, "module_")
        code = {str(c): i for i, c in enumerate(self.classes_)}
        y = np.asarray(y).astype(str)
        unknown = sorted(set(y) - set(code))
        if unknown:
            raise InputError(f"calibration labels not in the head's classes: {unknown[:5]}")
        t = np.array([code[v] for v in y], dtype=np.int64)
        z = np.asarray(logits, dtype=np.float64)
        if self.logistic_ and z.shape[1] == 2:  # a logistic head scales its one logit, z1 - z0
            z = z[:, 1:] - z[:, :1]
        self.calibration_ = fit_calibration(z, t, method)
        p = apply_calibration(z, self.calibration_)
        self.held_out_ = {"pred": p.argmax(axis=1).astype(np.int32), "confidence": p.max(axis=1).astype(np.float64),
                          "true": t.astype(np.int32)}
        return self

    def thresholds(self, min_precision: float, *, confidence: float = 0.95, scope: str = "all") -> dict[str, dict]:
        """Per-class confidence thresholds for ``min_precision`` on the held-out rows :meth:`calibrate` kept
        (:func:`simlabel.calibration.thresholds_from_predictions`, ``alpha = 1 - confidence``; ``scope`` ``all``:
        every class at once, ``each``: one at a time); an error when there are none."""
        if self.held_out_ is None:
            raise InputError("the model keeps no held-out rows to choose thresholds on (train it with a validation "
                             "split, or call `calibrate` on held-out rows)")
        h = self.held_out_
        return thresholds_from_predictions(h["pred"], h["confidence"], h["true"], min_precision,
                                           [str(c) for c in self.classes_], alpha=1.0 - confidence, scope=scope)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: dict | None = None, *, wait: bool = False) -> Path:
        """Write the model folder: ``config.json`` (what was trained, how, on what) and ``weights.pt``.

        The folder is built beside ``path`` and swapped in whole (:func:`simlabel.files.atomic_dir`)
        under a lock on ``path``, so a reader never pairs one run's weights with another's config.
        """
        check_is_fitted(self, "module_")
        path = Path(path)
        meta = {
            "kind": "EmbeddingClassifier",
            "config": asdict(self.config_),
            "classes": [str(c) for c in self.classes_],
            "dim": self.dim_,
            "input_dims": self.input_dims_,
            "logistic": self.logistic_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
            "warnings": self.warnings_,
            "classes_without_validation": self.classes_without_validation_,
            "precision": self.precision_,
            "calibration": self.calibration_,
            **(extra or {}),
        }
        with exclusive(path, wait=wait), atomic_dir(path) as tmp:
            torch.save(self.module_.state_dict(), tmp / "weights.pt")
            if self.training_ids_ is not None:
                np.save(tmp / "training_ids.npy", np.asarray(self.training_ids_, dtype=np.uint64))
            if self.held_out_ is not None:
                np.savez(tmp / "held_out.npz", **self.held_out_)
            kill_point("train:between-weights-and-config")
            atomic_write_json(tmp / "config.json", meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddingClassifier":
        path, meta = _model_folder(path)
        cfg = HeadConfig(**meta["config"])
        clf = cls(config=cfg)
        clf.config_ = cfg
        clf.classes_ = np.asarray([str(c) for c in meta["classes"]], dtype=object)
        clf.history_ = meta.get("history", [])
        clf.best_epoch_ = meta.get("best_epoch", -1)
        clf.dim_ = clf.n_features_in_ = int(meta["dim"])
        clf.input_dims_ = [int(d) for d in meta.get("input_dims", [meta["dim"]])]
        clf.logistic_ = bool(meta.get("logistic", len(meta["classes"]) == 2))
        clf.warnings_ = list(meta.get("warnings", []))
        clf.classes_without_validation_ = list(meta.get("classes_without_validation", []))
        clf.precision_ = meta.get("precision", "fp32")
        module = _build_module(cfg, clf.input_dims_, 1 if clf.logistic_ else len(clf.classes_))
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        module.eval()
        clf.module_ = module
        if (path / "training_ids.npy").is_file():
            clf.training_ids_ = np.load(path / "training_ids.npy", allow_pickle=False)
        clf.calibration_ = meta.get("calibration")
        if (path / "held_out.npz").is_file():
            with np.load(path / "held_out.npz", allow_pickle=False) as f:
                clf.held_out_ = {k: f[k] for k in ("pred", "confidence", "true")}
        return clf


def model_fingerprint(clf: "EmbeddingClassifier | MultiLabelClassifier") -> str:
    """16 hex digits of the head's weights, classes (label names) and calibration (threshold): what every
    prediction row records."""
    h = hashlib.sha256()
    for name, tensor in sorted(clf.module_.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    if isinstance(clf, MultiLabelClassifier):
        h.update(json.dumps([clf.label_names(), float(clf.threshold)]).encode())
    else:
        h.update(json.dumps([str(c) for c in clf.classes_]).encode())
        h.update(json.dumps(clf.calibration_, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def read_model_meta(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a model folder (an error naming the file when it is broken)."""
    return read_json(Path(path) / "config.json", "model config")


def _model_folder(path: str | os.PathLike) -> tuple[Path, dict]:
    """A model folder's path and ``config.json``; an error when it lacks its config or weights."""
    path = Path(path)
    if not (path / "config.json").exists() or not (path / "weights.pt").exists():
        raise FileNotFoundError(f"{path}: not a model folder (config.json and weights.pt expected)")
    return path, read_model_meta(path)


def load_model(path: str | os.PathLike) -> "EmbeddingClassifier | MultiLabelClassifier":
    """The head of a model folder, of the kind its ``config.json`` records (single- or multi-label).

    Parameters
    ----------
    path : str or os.PathLike
        A model folder (``config.json`` and ``weights.pt``).

    Returns
    -------
    EmbeddingClassifier or MultiLabelClassifier
        :class:`EmbeddingClassifier` for ``kind: EmbeddingClassifier`` (``simlabel train``),
        :class:`MultiLabelClassifier` for ``kind: MultiLabelClassifier`` (``train --attributes``, ``flip --model-out``).

    Raises
    ------
    FileNotFoundError
        ``path`` is not a model folder.
    InputError
        An unknown ``kind``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from simlabel import MultiLabelClassifier, MultiLabelHeadConfig, load_model
    >>> X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    >>> clf = MultiLabelClassifier(MultiLabelHeadConfig(epochs=1)).fit(X, X[:, :2] > 0, label_names=["x", "y"])
    >>> folder = clf.save(tempfile.mkdtemp() + "/model")
    >>> type(load_model(folder)).__name__, load_model(folder).label_names()
    ('MultiLabelClassifier', ['x', 'y'])
    """
    path, meta = _model_folder(path)
    kind = meta.get("kind", "EmbeddingClassifier")
    if kind == "MultiLabelClassifier":
        return MultiLabelClassifier.load(path)
    if kind != "EmbeddingClassifier":
        raise InputError(f"{path / 'config.json'}: unknown model kind {kind!r}")
    return EmbeddingClassifier.load(path)


# -- multi-label ------------------------------------------------------------------------------


def multilabel_module(dim: int, n_labels: int, hidden: int = 0) -> nn.Module:
    """``d -> L`` logits: one dense layer, or one hidden ReLU layer of width ``hidden`` first."""
    if hidden:
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))
    return nn.Linear(dim, n_labels)


def _as_binary(Y: np.ndarray, n: int) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"Y must be 2-D (n={n}, L); got shape {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise InputError("Y must hold 0/1 labels")
    return Y.astype(np.float32)


class MultiLabelClassifier(ClassifierMixin, BaseEstimator):
    """The one multi-label head on frozen embeddings, as a scikit-learn multi-label classifier.

    One sigmoid per label, trained with the binary focal loss (paper 004; the formula is in
    :class:`MultiLabelHeadConfig`) by Adam on shuffled mini-batches for ``config.epochs``
    epochs: the baselines of the flipping experiment and SELF-ML's classifier are all this
    head. :meth:`fit` takes ``X`` ``(n, d)`` and a 0/1 label matrix ``Y`` ``(n, L)``. With
    ``init`` (a fitted :class:`MultiLabelClassifier` or a torch module), :meth:`fit`
    continues from a copy of it: fine-tuning, as paper 004's Baseline 1. The module
    (``module_``) maps ``(n, d)`` to ``(n, L)`` logits; SELF-ML trains it further jointly.
    Deterministic for a given ``seed``; the caller's global torch RNG is left untouched.

    Parameters
    ----------
    config : MultiLabelHeadConfig, optional
        The head and its training (``None``: the defaults).
    threshold : float, default 0.5
        :meth:`predict` sets a label where its probability reaches this (``p >= threshold``).
    progress_label : str, default "multi-label head"
        How the epochs' progress is labelled.

    Attributes
    ----------
    classes_ : ndarray of int
        ``0 .. L-1``, one per column of ``Y``.
    config_ : MultiLabelHeadConfig
        The configuration trained with (``config`` or the defaults).
    module_ : torch.nn.Module
        ``(n, d)`` to ``(n, L)`` logits, in eval mode, on ``config.device``.
    n_features_in_ : int
        The width of ``X``.
    history_ : list of dict
        Per epoch: ``epoch`` (from 1) and ``loss``, the mean loss over the epoch's rows.

    Raises
    ------
    ValueError
        From scikit-learn's ``check_array``: ``X`` not a finite 2-D array of numbers with at
        least one row and one column.
    InputError
        ``Y`` not a 0/1 matrix with one row per row of ``X`` (:meth:`fit`), ``X`` of another
        width than ``fit`` saw (:meth:`predict_proba`, :meth:`predict`), or an unknown
        ``config.device``.
    ModelError
        ``config.device="cuda"`` where torch sees no CUDA device.
    sklearn.exceptions.NotFittedError
        :meth:`predict_proba` or :meth:`predict` before :meth:`fit`.

    See Also
    --------
    EmbeddingClassifier : The single-label head.
    simlabel.training.multilabel_pretrain : SELF-ML's pre-training with this head.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import MultiLabelClassifier, MultiLabelHeadConfig
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 4)).astype(np.float32)
    >>> Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)  # two labels
    >>> clf = MultiLabelClassifier(MultiLabelHeadConfig(epochs=5)).fit(X, Y)
    >>> clf.classes_
    array([0, 1])
    >>> clf.predict_proba(X).shape, clf.predict(X).shape  # (n, L) probabilities, 0/1 labels
    ((40, 2), (40, 2))
    >>> tuned = MultiLabelClassifier(MultiLabelHeadConfig(epochs=2)).fit(X, Y, init=clf)  # fine-tuning
    >>> len(tuned.history_)
    2
    """

    def __init__(self, config: MultiLabelHeadConfig | None = None, threshold: float = 0.5,
                 progress_label: str = "multi-label head") -> None:
        self.config = config
        self.threshold = threshold
        self.progress_label = progress_label

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.target_tags.multi_output = True
        tags.classifier_tags.multi_label = True
        return tags

    def fit(self, X: np.ndarray, Y: np.ndarray, *, init: "MultiLabelClassifier | nn.Module | None" = None,
            label_names: Sequence[str] | None = None) -> "MultiLabelClassifier":
        """Train on ``X`` ``(n, d)`` and 0/1 labels ``Y`` ``(n, L)`` for ``config.epochs`` epochs
        (``label_names``: the ``L`` columns' names, kept for :meth:`save` and prediction)."""
        self.config_ = cfg = self.config if self.config is not None else MultiLabelHeadConfig()
        X = _check_X(X)
        Yf = _as_binary(Y, len(X))
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.arange(Yf.shape[1])
        self.label_names_ = _names(label_names, Yf.shape[1])
        device = resolve_device(cfg.device)
        rng = np.random.default_rng(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if init is None:
                module = multilabel_module(X.shape[1], Yf.shape[1], cfg.hidden)
            else:
                module = copy.deepcopy(init.module_ if isinstance(init, MultiLabelClassifier) else init)
            module = module.to(device).train()
            tX, tY = torch.from_numpy(X).to(device), torch.from_numpy(Yf).to(device)
            opt = AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.0, decoupled=False)
            self.history_ = []
            with task(self.progress_label, cfg.epochs, unit="epochs") as bar:
                for epoch in range(1, cfg.epochs + 1):
                    total = torch.zeros((), device=device)
                    perm = rng.permutation(len(X))
                    for start in range(0, len(X), cfg.batch_size):
                        idx = perm[start : start + cfg.batch_size]
                        loss = binary_focal_loss(module(tX[idx]), tY[idx], gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        total += loss.detach() * len(idx)
                    self.history_.append({"epoch": epoch, "loss": float(total) / max(len(X), 1)})
                    bar.advance(1, loss=f"{self.history_[-1]['loss']:.4f}")
        self.module_ = module.eval()
        return self

    def predict_proba(self, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """``sigmoid(logits)``: ``(n, L)`` float32 label probabilities."""
        check_is_fitted(self, "module_")
        device = next(self.module_.parameters()).device
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X must be (n, {self.n_features_in_}); got {X.shape}")
        if not X.flags.writeable:  # torch cannot wrap a read-only array (a block read from Parquet)
            X = X.copy()
        parts = []
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                parts.append(torch.sigmoid(self.module_(torch.from_numpy(X[s : s + batch_size]).to(device))).cpu().numpy())
        n_out = self.module_(torch.zeros(1, X.shape[1], device=device)).shape[1] if not parts else parts[0].shape[1]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, n_out), np.float32)


    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n, L)`` 0/1 labels: each probability at or above ``threshold``."""
        return (self.predict_proba(X) >= self.threshold).astype(np.int64)

    def label_names(self) -> list[str]:
        """The names of the ``L`` labels (``attr=value``), in column order (``"0" .. "L-1"`` when none were given)."""
        check_is_fitted(self, "module_")
        return list(getattr(self, "label_names_", None) or _names(None, len(self.classes_)))

    @classmethod
    def from_module(cls, module: nn.Module, label_names: Sequence[str], *, config: MultiLabelHeadConfig | None = None,
                    threshold: float = 0.5) -> "MultiLabelClassifier":
        """A fitted head around a trained ``(n, d) -> (n, L)`` logit module (e.g. SELF-ML's jointly trained
        classifier, :attr:`simlabel.labels.selfml.SelfMLResult.classifier`)."""
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        first, last = linears[0], linears[-1]
        if last.out_features != len(label_names):
            raise InputError(f"the module gives {last.out_features} labels; {len(label_names)} names were given")
        clf = cls(config=config, threshold=threshold)
        clf.config_ = config or MultiLabelHeadConfig(hidden=first.out_features if first is not last else 0)
        clf.module_ = copy.deepcopy(module).cpu().eval()
        clf.n_features_in_ = int(first.in_features)
        clf.classes_ = np.arange(len(label_names))
        clf.label_names_ = _names(label_names, len(label_names))
        clf.history_ = []
        return clf

    def save(self, path: str | os.PathLike, extra: dict | None = None, *, wait: bool = False) -> Path:
        """Write the model folder: ``config.json`` (``kind: MultiLabelClassifier``, the label names, the
        threshold, what was trained on) and ``weights.pt``, swapped in whole as :meth:`EmbeddingClassifier.save`."""
        check_is_fitted(self, "module_")
        path = Path(path)
        meta = {"kind": "MultiLabelClassifier", "config": asdict(self.config_), "labels": self.label_names(),
                "classes": self.label_names(), "dim": int(self.n_features_in_), "threshold": float(self.threshold),
                "history": getattr(self, "history_", []), "inputs": "image", **(extra or {})}
        with exclusive(path, wait=wait), atomic_dir(path) as tmp:
            torch.save(self.module_.state_dict(), tmp / "weights.pt")
            atomic_write_json(tmp / "config.json", meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MultiLabelClassifier":
        """The head of a folder :meth:`save` wrote."""
        path, meta = _model_folder(path)
        if meta.get("kind") != "MultiLabelClassifier":
            raise InputError(f"{path / 'config.json'}: not a multi-label model (kind {meta.get('kind')!r})")
        cfg = MultiLabelHeadConfig(**meta["config"])
        clf = cls(config=cfg, threshold=float(meta.get("threshold", 0.5)))
        clf.config_ = cfg
        names = [str(v) for v in meta["labels"]]
        module = multilabel_module(int(meta["dim"]), len(names), cfg.hidden)
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        clf.module_ = module.eval()
        clf.n_features_in_ = int(meta["dim"])
        clf.classes_ = np.arange(len(names))
        clf.label_names_ = names
        clf.history_ = meta.get("history", [])
        return clf

    # what prediction reads of every head (a multi-label head has no calibration nor held-out rows)
    calibration_ = None
    held_out_ = None

    @property
    def dim_(self) -> int:
        return int(self.n_features_in_)

    @property
    def input_dims_(self) -> list[int]:
        return [int(self.n_features_in_)]


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    names = [str(v) for v in names]
    if len(names) != n or len(set(names)) != n:
        raise InputError(f"label_names must be {n} distinct names, one per column of Y; got {len(names)}")
    return names


def _check_X(X) -> np.ndarray:
    """``X`` as a C-contiguous finite float32 ``(n, d)`` matrix with at least one row and column (scikit-learn's
    ``check_array``: its messages name what is wrong)."""
    from sklearn.utils.validation import check_array

    return np.ascontiguousarray(check_array(X, dtype=np.float32, accept_sparse=False, ensure_all_finite=True))


def _check_Xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_check_X` and one label per row (``y`` 1-D)."""
    X = _check_X(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        else:
            raise InputError(f"X must be (n, d) with one label per row; got X {X.shape}, y {y.shape}")
    return X, y


# -- out of fold --------------------------------------------------------------------------------


def out_of_fold_proba(
    make_estimator: Callable[[], object],
    X: np.ndarray,
    y: np.ndarray | Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    sample_weight: np.ndarray | None = None,
    folds: int = 3,
    seed: int = 0,
    top: int | None = None,
    batch_size: int = 65_536,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Probabilities for every row from estimators that did not train on it.

    The counterpart of ``sklearn.model_selection.cross_val_predict(method="predict_proba")``
    for simlabel's heads: ``make_estimator()`` builds a fresh, unfitted estimator per fold,
    which is fitted on the other folds and predicts this one. It serves paper 003's stage 2
    and the cleanlab peer of paper 004.

    Parameters
    ----------
    make_estimator : callable
        ``() -> estimator``; an :class:`EmbeddingClassifier` for single labels (``y`` 1-D of
        class names), a :class:`MultiLabelClassifier` for multi-labels (``y`` an ``(n, L)``
        0/1 matrix). A single-label estimator's ``fit`` must take ``sample_weight`` and
        ``classes``.
    X : array-like of shape (n, d)
        The features (taken as float32).
    y : array-like of shape (n,) or (n, L)
        One class name per row (taken as ``str``), or a 0/1 label matrix (multi-label).
    classes : sequence of str, optional
        Single labels: the columns of the result (default: the sorted distinct labels). A
        fold whose training rows lack a class predicts 0 for it.
    sample_weight : array-like of shape (n,), optional
        Single labels: per-row training weights.
    folds : int, default 3
        ``>= 2``: stratified folds where every class has ``folds`` rows (plain shuffled folds
        otherwise; multi-labels: always plain shuffled folds); ``0``: one estimator trained
        on every row predicts them (in-sample).
    seed : int, default 0
        Shuffles the rows into folds.
    top : int, optional
        Single labels: keep only each row's ``top`` most probable classes (clipped to
        [1, C]) and return ``(classes (n, top) int64, probabilities (n, top) float32)``,
        predicted in blocks of ``batch_size``: memory O(n top), not O(n C).
    batch_size : int, default 65536
        Single labels: the rows predicted at once.

    Returns
    -------
    ndarray or tuple of ndarray
        ``(n, C)`` float64 probabilities, columns in ``classes`` order (multi-labels:
        ``(n, L)``); with ``top``, the pair ``(indices into classes, probabilities)``, best
        first (a fold whose estimator knows fewer than ``top`` classes leaves index 0 with
        probability 0 in the columns it cannot fill).

    Raises
    ------
    InputError
        ``folds`` negative or 1, ``top`` with multi-labels, or what the estimators' ``fit``
        raises (e.g. a fold's training rows with a single class).
    ValueError
        A training label not among ``classes``, or more folds than rows (scikit-learn's
        ``KFold``).

    See Also
    --------
    simlabel.training.oof_predictor : Paper 003's stage-2 predictor built on this.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import EmbeddingClassifier, HeadConfig, out_of_fold_proba
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> y = ["shirt"] * 20 + ["shoe"] * 20
    >>> P = out_of_fold_proba(lambda: EmbeddingClassifier(HeadConfig(max_epochs=20)), X, y, folds=2)
    >>> P.shape
    (40, 2)
    >>> bool((P.argmax(axis=1) == np.repeat([0, 1], 20)).all())
    True
    >>> idx, p = out_of_fold_proba(lambda: EmbeddingClassifier(HeadConfig(max_epochs=20)), X, y, folds=2, top=1)
    >>> idx.shape, p.dtype
    ((40, 1), dtype('float32'))
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 0 or folds == 1:
        raise InputError(f"folds must be 0 (in-sample) or >= 2; got {folds}")
    X = np.asarray(X, dtype=np.float32)
    multilabel = np.ndim(y) == 2
    if multilabel:
        Y = np.asarray(y)
        if top is not None:
            raise InputError("top= is for single labels")
        proba = np.zeros(Y.shape, dtype=np.float64)

        def fit_predict(train_idx: np.ndarray, pred_idx: np.ndarray) -> None:
            est = make_estimator().fit(X[train_idx], Y[train_idx])
            proba[pred_idx] = est.predict_proba(X[pred_idx])

        splits = KFold(folds, shuffle=True, random_state=seed).split(X) if folds else None
    else:
        labels = np.asarray([str(v) for v in y])
        cats = sorted(set(labels)) if classes is None else [str(c) for c in classes]
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
        if top is None:
            proba = np.zeros((len(X), len(cats)), dtype=np.float64)
        else:
            m = int(min(max(top, 1), len(cats)))
            top_idx = np.zeros((len(X), m), dtype=np.int64)
            top_p = np.zeros((len(X), m), dtype=np.float32)

        def fit_predict(train_idx: np.ndarray, pred_idx: np.ndarray) -> None:
            present = sorted(set(labels[train_idx]))
            est = make_estimator().fit(
                X[train_idx], labels[train_idx], sample_weight=None if w is None else w[train_idx], classes=present
            )
            cols = np.asarray([cats.index(c) for c in est.classes_], dtype=np.int64)
            for start in range(0, len(pred_idx), batch_size):
                rows = pred_idx[start : start + batch_size]
                p = est.predict_proba(X[rows])
                if top is None:
                    proba[np.ix_(rows, cols)] = p
                else:
                    local = top_k_predictions(p, min(m, p.shape[1]))
                    top_idx[rows, : local.shape[1]] = cols[local]
                    top_p[rows, : local.shape[1]] = np.take_along_axis(p, local, axis=1)

        splits = None
        if folds:
            counts = np.unique(labels, return_counts=True)[1]
            if counts.min() >= folds:
                splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, labels)
            else:
                splits = KFold(folds, shuffle=True, random_state=seed).split(X)
    if splits is None:
        fit_predict(np.arange(len(X)), np.arange(len(X)))
    else:
        with task("out-of-fold", folds, unit="folds") as bar:
            for train_idx, pred_idx in splits:
                fit_predict(train_idx, pred_idx)
                bar.advance(1)
    if multilabel or top is None:
        return proba
    return top_idx, top_p
