"""Classifier heads on frozen embeddings, with early stopping (paper 000: "a single dense layer").

:class:`EmbeddingClassifier` is a scikit-learn-style estimator (``fit``,
``predict_proba``, ``predict``, ``save``/``load``):

* ``head="linear"``: one dense layer; softmax over the classes, or a single
  logistic output when there are two (as paper 000);
* ``head="mlp"``: one hidden layer (ReLU, dropout) before it.

Training: AdamW on mini-batches, cross-entropy (optionally per-sample weights
and balanced class weights), early stopping on the loss of a validation split
(stratified, ``val_frac`` of the training rows unless one is given), restoring
the best epoch. Deterministic for a given ``seed`` on CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from simlabel.encoders.base import resolve_device


@dataclass
class HeadConfig:
    head: Literal["linear", "mlp"] = "linear"
    hidden: int = 512
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10
    val_frac: float = 0.15
    class_weight: Literal["balanced"] | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp'; got {self.head!r}")
        if not 0 <= self.val_frac < 1:
            raise ValueError(f"val_frac must be in [0, 1); got {self.val_frac}")


def _build_module(head: str, dim: int, n_out: int, hidden: int, dropout: float):
    import torch.nn as nn

    if head == "linear":
        return nn.Linear(dim, n_out)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))


@dataclass
class EmbeddingClassifier:
    """A dense (or MLP) head over frozen embeddings. See the module docstring."""

    config: HeadConfig = field(default_factory=HeadConfig)
    classes_: list[str] = field(default_factory=list)
    history_: list[dict] = field(default_factory=list)
    best_epoch_: int = -1
    dim_: int = 0
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
    ) -> "EmbeddingClassifier":
        import torch
        import torch.nn.functional as F
        from sklearn.model_selection import train_test_split

        cfg = self.config
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(y).astype(str)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) with one label per row; got X {X.shape}, y {y.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X has NaN or infinite values")
        self.classes_ = sorted(set(y)) if classes is None else [str(c) for c in classes]
        if len(self.classes_) < 2:
            raise ValueError(f"need at least two classes to train; got {self.classes_}")
        code = {c: i for i, c in enumerate(self.classes_)}
        unknown = sorted(set(y) - set(code))
        if unknown:
            raise ValueError(f"labels not in classes: {unknown[:5]}")
        t = np.array([code[v] for v in y], dtype=np.int64)
        w = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
        if X_val is None and cfg.val_frac > 0:
            counts = np.bincount(t, minlength=len(self.classes_))
            n_val = max(1, int(round(cfg.val_frac * len(t))))
            n_cls = len(self.classes_)
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
        n_out = 1 if self.binary else len(self.classes_)
        self.dim_ = X.shape[1]
        module = _build_module(cfg.head, self.dim_, n_out, cfg.hidden, cfg.dropout).to(device)
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        cw = None
        if cfg.class_weight == "balanced":
            counts = np.bincount(t, minlength=len(self.classes_)).astype(np.float32)
            cw = torch.tensor(len(t) / (len(self.classes_) * np.maximum(counts, 1)), device=device)

        def loss_of(logits, target, weight):
            if self.binary:
                per = F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float(), reduction="none")
            else:
                per = F.cross_entropy(logits, target, reduction="none")
            if cw is not None:
                per = per * cw[target]
            return (per * weight).sum() / weight.sum().clamp_min(1e-12)

        Xt = torch.from_numpy(X).to(device)
        tt = torch.from_numpy(t).to(device)
        wt = torch.from_numpy(w).to(device)
        if Xv is not None:
            Xvt, tvt, wvt = torch.from_numpy(Xv).to(device), torch.from_numpy(tv).to(device), torch.from_numpy(wv).to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        best, best_state, bad_epochs = float("inf"), None, 0
        self.history_ = []
        for epoch in range(cfg.max_epochs):
            module.train()
            perm = torch.randperm(len(Xt), generator=gen).to(device)
            total = 0.0
            for start in range(0, len(perm), cfg.batch_size):
                b = perm[start : start + cfg.batch_size]
                opt.zero_grad()
                loss = loss_of(module(Xt[b]), tt[b], wt[b])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            record = {"epoch": epoch, "train_loss": total / max(1, len(perm))}
            if Xv is not None:
                module.eval()
                with torch.no_grad():
                    val = float(loss_of(module(Xvt), tvt, wvt))
                record["val_loss"] = val
                if val < best - 1e-6:
                    best, bad_epochs, self.best_epoch_ = val, 0, epoch
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
        return np.concatenate(outs) if outs else np.zeros((0, 1 if self.binary else len(self.classes_)), np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities, columns in ``classes_`` order."""
        z = self.decision_scores(X)
        if self.binary:
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
        clf = cls(config=cfg, classes_=list(meta["classes"]), history_=meta.get("history", []), best_epoch_=meta.get("best_epoch", -1), dim_=int(meta["dim"]))
        n_out = 1 if clf.binary else len(clf.classes_)
        module = _build_module(cfg.head, clf.dim_, n_out, cfg.hidden, cfg.dropout)
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        module.eval()
        clf.module_ = module
        return clf


def read_model_meta(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
