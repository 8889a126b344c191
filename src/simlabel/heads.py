"""Classifier heads on frozen embeddings, with early stopping (paper 000: "a single dense layer").

:class:`EmbeddingClassifier` is a scikit-learn-style estimator (``fit``,
``predict_proba``, ``predict``, ``save``/``load``):

* ``head="linear"``: one dense layer; softmax over the classes, or a single
  logistic output when there are two (as paper 000);
* ``head="mlp"``: one hidden layer (ReLU, dropout) before it;
* ``head="fusion"``: paper 002's image + title fusion: each embedding projected to one width,
  multi-head attention over the modality tokens, then an MLP.

Training: AdamW on mini-batches, cross-entropy (optionally per-sample weights
and balanced class weights), early stopping on the loss of a validation split
(stratified, ``val_frac`` of the training rows unless one is given), restoring
the best epoch. Deterministic for a given ``seed`` on CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from simlabel.encoders.base import resolve_device


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
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
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

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp", "fusion"):
            raise ValueError(f"head must be 'linear', 'mlp' or 'fusion'; got {self.head!r}")
        if self.loss not in ("ce", "focal"):
            raise ValueError(f"loss must be 'ce' or 'focal'; got {self.loss!r}")
        if self.monitor not in ("loss", "accuracy"):
            raise ValueError(f"monitor must be 'loss' or 'accuracy'; got {self.monitor!r}")
        if not 0 <= self.val_frac < 1:
            raise ValueError(f"val_frac must be in [0, 1); got {self.val_frac}")


def _fusion_module(input_dims: Sequence[int], n_out: int, cfg: HeadConfig):
    """Paper 002's fusion: each modality's embedding projected to one width, a multi-head
    self-attention layer over the modality tokens, mean-pooled, then an MLP."""
    import torch
    import torch.nn as nn

    class AttentionFusion(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dims = list(input_dims)
            self.proj = nn.ModuleList(nn.Linear(d, cfg.fusion_width) for d in self.dims)
            self.modality = nn.Parameter(torch.zeros(len(self.dims), cfg.fusion_width))
            self.attn = nn.MultiheadAttention(cfg.fusion_width, cfg.fusion_heads, dropout=cfg.dropout, batch_first=True)
            self.norm = nn.LayerNorm(cfg.fusion_width)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.fusion_width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out)
            )

        def forward(self, x):
            parts = torch.split(x, self.dims, dim=1)
            tokens = torch.stack([p(part) for p, part in zip(self.proj, parts)], dim=1) + self.modality
            attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)
            return self.mlp(self.norm(tokens + attended).mean(dim=1))

    return AttentionFusion()


def _build_module(cfg: HeadConfig, input_dims: Sequence[int], n_out: int):
    import torch.nn as nn

    dim = int(sum(input_dims))
    if cfg.head == "linear":
        return nn.Linear(dim, n_out)
    if cfg.head == "mlp":
        return nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, n_out))
    if len(input_dims) < 2:
        raise ValueError("the fusion head needs at least two inputs (image and text embeddings)")
    return _fusion_module(input_dims, n_out, cfg)


SoftTargets = np.ndarray | Callable[[int], np.ndarray]


@dataclass
class EmbeddingClassifier:
    """A dense, MLP or attention-fusion head over frozen embeddings. See the module docstring."""

    config: HeadConfig = field(default_factory=HeadConfig)
    classes_: list[str] = field(default_factory=list)
    history_: list[dict] = field(default_factory=list)
    best_epoch_: int = -1
    dim_: int = 0
    input_dims_: list[int] = field(default_factory=list)
    logistic_: bool = False
    module_: object = None

    @property
    def binary(self) -> bool:
        return len(self.classes_) == 2

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
        import torch
        from sklearn.model_selection import train_test_split

        from simlabel.losses import focal_loss, kl_to_targets

        cfg = self.config
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(y).astype(str)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) with one label per row; got X {X.shape}, y {y.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X has NaN or infinite values")
        self.input_dims_ = [int(d) for d in input_dims] if input_dims else [X.shape[1]]
        if sum(self.input_dims_) != X.shape[1]:
            raise ValueError(f"input_dims {self.input_dims_} do not add up to the width of X ({X.shape[1]})")
        self.classes_ = sorted(set(y)) if classes is None else [str(c) for c in classes]
        if len(self.classes_) < 2:
            raise ValueError(f"need at least two classes to train; got {self.classes_}")
        code = {c: i for i, c in enumerate(self.classes_)}
        unknown = sorted(set(y) - set(code))
        if unknown:
            raise ValueError(f"labels not in classes: {unknown[:5]}")
        n_cls = len(self.classes_)
        target_at = None
        if soft_targets is not None:
            target_at = soft_targets if callable(soft_targets) else (lambda epoch, m=np.asarray(soft_targets): m)
            first = np.asarray(target_at(0))
            if first.shape != (n_cls, n_cls):
                raise ValueError(f"soft targets must be ({n_cls}, {n_cls}); got {first.shape}")
        # paper 000's logistic output for two classes; soft targets and focal loss need the softmax
        self.logistic_ = self.binary and target_at is None and cfg.loss == "ce"
        t = np.array([code[v] for v in y], dtype=np.int64)
        w = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        if len(w) != len(y):
            raise ValueError(f"{len(w)} sample weights for {len(y)} rows")
        if X_val is None and cfg.val_frac > 0:
            counts = np.bincount(t, minlength=n_cls)
            n_val = max(1, int(round(cfg.val_frac * len(t))))
            # stratify when every class can appear on both sides; tiny sets fall back to a plain split
            strat = t if counts.min() >= 2 and n_val >= n_cls and len(t) - n_val >= n_cls else None
            idx_tr, idx_va = train_test_split(np.arange(len(t)), test_size=n_val, random_state=cfg.seed, stratify=strat)
            Xv, tv, wv = X[idx_va], t[idx_va], w[idx_va]
            X, t, w = X[idx_tr], t[idx_tr], w[idx_tr]
        elif X_val is not None:
            Xv = np.ascontiguousarray(X_val, dtype=np.float32)
            tv = np.array([code[str(v)] for v in y_val], dtype=np.int64)
            wv = np.ones(len(tv), np.float32)
        else:
            Xv = tv = wv = None

        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.dim_ = X.shape[1]
        module = _build_module(cfg, self.input_dims_, 1 if self.logistic_ else n_cls).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        cw = None
        if cfg.class_weight == "balanced":
            counts = np.bincount(t, minlength=n_cls).astype(np.float32)
            cw = torch.tensor(len(t) / (n_cls * np.maximum(counts, 1)), device=device)

        def objective(logits, target, weight, targets_matrix):
            import torch.nn.functional as F

            if self.logistic_:
                per = F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float(), reduction="none")
            elif cfg.loss == "focal":
                per = focal_loss(logits, target, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, reduction="none")
            else:
                per = F.cross_entropy(logits, target, reduction="none")
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
        self.history_ = []
        for epoch in range(cfg.max_epochs):
            tm = None
            if target_at is not None:
                tm = torch.as_tensor(np.asarray(target_at(epoch), dtype=np.float32), device=device)
            module.train()
            perm = torch.randperm(len(Xt), generator=gen).to(device)
            total = 0.0
            for start in range(0, len(perm), cfg.batch_size):
                b = perm[start : start + cfg.batch_size]
                opt.zero_grad()
                loss = objective(module(Xt[b]), tt[b], wt[b], tm)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            record = {"epoch": epoch, "train_loss": total / max(1, len(perm))}
            if Xv is not None:
                module.eval()
                with torch.no_grad():
                    logits = module(Xvt)
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
            self.history_.append(record)
            if Xv is not None and bad_epochs >= cfg.patience:
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        else:
            self.best_epoch_ = len(self.history_) - 1
        module.eval()
        self.module_ = module.cpu()
        return self

    def decision_scores(self, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        import torch

        if self.module_ is None:
            raise RuntimeError("the classifier is not fitted")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim_:
            raise ValueError(f"X must be (n, {self.dim_}); got {X.shape}")
        outs = []
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                outs.append(self.module_(torch.from_numpy(X[s : s + batch_size])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 1 if self.logistic_ else len(self.classes_)), np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities, columns in ``classes_`` order."""
        z = self.decision_scores(X)
        if self.logistic_:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0].astype(np.float64)))
            return np.stack([1 - p1, p1], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_, dtype=object)[self.predict_proba(X).argmax(axis=1)]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``config.json`` (what was trained, how, on what) and ``weights.pt`` into a folder."""
        import torch

        from simlabel.store import atomic_write, atomic_write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "weights.pt", lambda tmp: torch.save(self.module_.state_dict(), tmp))
        meta = {
            "kind": "EmbeddingClassifier",
            "config": asdict(self.config),
            "classes": self.classes_,
            "dim": self.dim_,
            "input_dims": self.input_dims_,
            "logistic": self.logistic_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
            **(extra or {}),
        }
        atomic_write_json(path / "config.json", meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddingClassifier":
        import torch

        path = Path(path)
        if not (path / "config.json").exists() or not (path / "weights.pt").exists():
            raise FileNotFoundError(f"{path}: not a model folder (config.json and weights.pt expected)")
        meta = json.loads((path / "config.json").read_text())
        cfg = HeadConfig(**meta["config"])
        clf = cls(
            config=cfg,
            classes_=list(meta["classes"]),
            history_=meta.get("history", []),
            best_epoch_=meta.get("best_epoch", -1),
            dim_=int(meta["dim"]),
            input_dims_=[int(d) for d in meta.get("input_dims", [meta["dim"]])],
            logistic_=bool(meta.get("logistic", len(meta["classes"]) == 2)),
        )
        module = _build_module(cfg, clf.input_dims_, 1 if clf.logistic_ else len(clf.classes_))
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        module.eval()
        clf.module_ = module
        return clf


def read_model_meta(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
