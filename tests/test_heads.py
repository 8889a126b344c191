from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.heads import (
    EmbeddingClassifier,
    HeadConfig,
    MultiLabelClassifier,
    MultiLabelHeadConfig,
    out_of_fold_proba,
)
from simlabel.metrics import top_k_predictions
from tests.helpers import blobs


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_fits_separable_data_and_round_trips(tmp_path: Path, head: str) -> None:
    X, y = blobs(60, ["a", "b", "c"])
    clf = EmbeddingClassifier(HeadConfig(head=head, max_epochs=300, patience=15, device="cpu")).fit(X, y)
    assert (clf.predict(X) == y).mean() > 0.97
    proba = clf.predict_proba(X)
    assert proba.shape == (180, 3) and np.allclose(proba.sum(axis=1), 1)
    clf.save(tmp_path / "m")
    again = EmbeddingClassifier.load(tmp_path / "m")
    assert list(again.classes_) == ["a", "b", "c"]
    assert np.allclose(again.predict_proba(X), proba, atol=1e-6)


def test_binary_uses_one_logistic_output() -> None:
    X, y = blobs(50, ["neg", "pos"])
    clf = EmbeddingClassifier(HeadConfig(device="cpu")).fit(X, y)
    assert clf.decision_scores(X).shape == (100, 1)
    assert (clf.predict(X) == y).mean() > 0.97


def test_early_stopping_restores_best_epoch() -> None:
    X, y = blobs(40, ["a", "b"], spread=3.0)  # noisy: validation loss turns up early
    clf = EmbeddingClassifier(HeadConfig(max_epochs=500, patience=5, lr=1e-2, device="cpu")).fit(X, y)
    assert len(clf.history_) < 500
    vals = [h["val_loss"] for h in clf.history_]
    assert clf.best_epoch_ == int(np.argmin(vals))


def test_deterministic_with_seed() -> None:
    X, y = blobs(30, ["a", "b", "c"])
    a = EmbeddingClassifier(HeadConfig(seed=3, device="cpu")).fit(X, y).predict_proba(X)
    b = EmbeddingClassifier(HeadConfig(seed=3, device="cpu")).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="two classes"):
        EmbeddingClassifier().fit(np.zeros((3, 2)), ["a", "a", "a"])
    with pytest.raises(ValueError, match="head"):
        HeadConfig(head="resnet")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):
        EmbeddingClassifier().predict(np.zeros((1, 2)))


def two_modalities(n_per: int = 60, seed: int = 0):
    """4 classes: modality A tells {a,b} from {c,d}, modality B tells {a,c} from {b,d}; only both tell all four."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(["a", "b", "c", "d"], n_per)
    bit_a = np.isin(classes, ["c", "d"]).astype(float)
    bit_b = np.isin(classes, ["b", "d"]).astype(float)
    A = np.outer(bit_a * 2 - 1, np.ones(8)) + 0.5 * rng.standard_normal((len(classes), 8))
    B = np.outer(bit_b * 2 - 1, np.ones(6)) + 0.5 * rng.standard_normal((len(classes), 6))
    return A.astype(np.float32), B.astype(np.float32), classes


def test_attention_fusion_needs_both_modalities(tmp_path: Path) -> None:
    A, B, y = two_modalities()
    X = np.concatenate([A, B], axis=1)
    cfg = HeadConfig(head="fusion", fusion_width=16, fusion_heads=2, hidden=32, max_epochs=150, patience=20, lr=3e-3, device="cpu")
    fused = EmbeddingClassifier(cfg).fit(X, y, input_dims=[8, 6])
    assert (fused.predict(X) == y).mean() > 0.95
    image_only = EmbeddingClassifier(HeadConfig(head="mlp", device="cpu")).fit(A, y)
    assert (image_only.predict(A) == y).mean() < 0.75  # one modality cannot separate b from a
    fused.save(tmp_path / "f")
    again = EmbeddingClassifier.load(tmp_path / "f")
    assert again.input_dims_ == [8, 6] and np.allclose(again.predict_proba(X), fused.predict_proba(X), atol=1e-5)
    with pytest.raises(ValueError, match="two inputs"):
        EmbeddingClassifier(cfg).fit(A, y)
    with pytest.raises(ValueError, match="add up"):
        EmbeddingClassifier(cfg).fit(X, y, input_dims=[8, 5])


def test_soft_targets_move_mass_to_the_neighbour() -> None:
    X, y = blobs(60, ["a", "b", "c"], spread=0.8)
    # class a's soft target leans on b, never on c
    T = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    base = EmbeddingClassifier(HeadConfig(head="mlp", loss="focal", device="cpu", max_epochs=80)).fit(X, y)
    soft = EmbeddingClassifier(HeadConfig(head="mlp", loss="focal", device="cpu", max_epochs=80)).fit(X, y, soft_targets=T)
    a = y == "a"
    assert soft.predict_proba(X[a])[:, 1].mean() > base.predict_proba(X[a])[:, 1].mean() + 0.05
    assert (soft.predict(X) == y).mean() > 0.9


def test_curriculum_targets_are_asked_per_epoch() -> None:
    X, y = blobs(30, ["a", "b", "c"])
    seen = []

    def targets(epoch: int) -> np.ndarray:
        seen.append(epoch)
        return np.eye(3) * 0.9 + 0.1 / 3

    clf = EmbeddingClassifier(HeadConfig(max_epochs=7, patience=100, device="cpu")).fit(X, y, soft_targets=targets)
    # once up front to check the shape, then once per epoch
    assert seen == [0, *range(7)] and len(clf.history_) == 7
    with pytest.raises(ValueError, match="soft targets must be"):
        EmbeddingClassifier(HeadConfig(device="cpu")).fit(X, y, soft_targets=np.eye(2))


def test_binary_with_focal_uses_softmax_and_early_stops_on_accuracy() -> None:
    X, y = blobs(40, ["neg", "pos"])
    clf = EmbeddingClassifier(HeadConfig(loss="focal", monitor="accuracy", device="cpu")).fit(X, y)
    assert not clf.logistic_ and clf.decision_scores(X).shape == (80, 2)
    assert "val_accuracy" in clf.history_[0]


def test_out_of_fold_top_predictions_match_the_full_matrix() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    y = np.repeat(np.arange(4), 30)
    X = (centers[y] + 0.5 * rng.normal(size=(120, 16))).astype(np.float32)
    labels = np.array(list("abcd"))[y]
    cfg = HeadConfig(max_epochs=25, patience=5, lr=0.05, batch_size=64)
    make = lambda: EmbeddingClassifier(cfg)  # noqa: E731
    full = out_of_fold_proba(make, X, labels, classes=list("abcd"), folds=3, seed=1)
    idx, p = out_of_fold_proba(make, X, labels, classes=list("abcd"), folds=3, seed=1, top=2, batch_size=7)
    assert np.array_equal(idx, top_k_predictions(full, 2))
    assert np.allclose(p, np.take_along_axis(full, idx, axis=1), atol=1e-6)
    assert (idx[:, 0] == y).mean() > 0.9  # held-out predictions of separable clusters


def test_training_leaves_the_global_torch_rng_alone() -> None:
    import torch

    X, y = blobs(20, ["a", "b", "c"])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    EmbeddingClassifier(HeadConfig(head="mlp", max_epochs=3, seed=7)).fit(X, y)
    MultiLabelClassifier(MultiLabelHeadConfig(epochs=2, seed=7)).fit(X, np.eye(3, dtype=np.uint8)[np.repeat([0, 1, 2], 20)])
    assert torch.equal(torch.rand(3), expected)


def test_multilabel_head_learns_fine_tunes_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0], axis=1).astype(np.uint8)
    cfg = MultiLabelHeadConfig(epochs=40, lr=0.01, seed=3)
    a = MultiLabelClassifier(cfg).fit(X, Y)
    b = MultiLabelClassifier(cfg).fit(X, Y)
    pa = a.predict_proba(X)
    assert pa.shape == (300, 3) and ((pa >= 0) & (pa <= 1)).all()
    assert np.array_equal(pa, b.predict_proba(X))
    assert ((pa >= 0.5) == Y).mean() > 0.9
    assert len(a.history_) == 40 and a.history_[-1]["loss"] < a.history_[0]["loss"]
    # fine-tuning starts from a copy: the head it started from is left as it was
    before = a.predict_proba(X)
    tuned = MultiLabelClassifier(MultiLabelHeadConfig(epochs=5, lr=0.01, seed=3)).fit(X[:50], 1 - Y[:50], init=a)
    assert np.array_equal(a.predict_proba(X), before)
    assert not np.allclose(tuned.predict_proba(X), before)
    with pytest.raises(ValueError, match="0/1 labels"):
        MultiLabelClassifier(cfg).fit(X, Y * 2)
    with pytest.raises(ValueError, match="epochs must be"):
        MultiLabelHeadConfig(epochs=-1)


def test_out_of_fold_multilabel_never_predicts_a_training_row() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    Y = (X[:, :2] > 0).astype(np.uint8)
    # a head trained on all rows, in-sample, fits them better than held-out heads predict them
    make = lambda: MultiLabelClassifier(MultiLabelHeadConfig(epochs=60, lr=0.05, hidden=32, seed=0))  # noqa: E731
    oof = out_of_fold_proba(make, X, Y, folds=3, seed=0)
    ins = out_of_fold_proba(make, X, Y, folds=0, seed=0)
    assert oof.shape == ins.shape == (90, 2)
    loss = lambda p: -np.mean(Y * np.log(p + 1e-9) + (1 - Y) * np.log(1 - p + 1e-9))  # noqa: E731
    assert loss(ins) < loss(oof)
    with pytest.raises(ValueError, match="folds must be 0"):
        out_of_fold_proba(make, X, Y, folds=1)



def test_stratified_split_by_hand() -> None:
    from simlabel.heads import stratified_split

    t = np.array([0] * 6 + [1] * 3 + [2] * 1)
    tr, va = stratified_split(t, 3, seed=0)
    # quotas 6*0.3 = 1.8, 3*0.3 = 0.9, 0.1: floors 1, 0, 0; the two largest remainders (0.9, 0.8) get one each
    assert np.bincount(t[va], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(10))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=80), st.floats(0.05, 0.9), st.integers(0, 3))
def test_stratified_split_properties(codes: list[int], frac: float, seed: int) -> None:
    from simlabel.heads import stratified_split

    t = np.asarray(codes)
    n_val = max(1, int(round(frac * len(t))))
    tr, va = stratified_split(t, n_val, seed)
    assert len(va) == n_val and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(t)
    counts = np.bincount(t, minlength=6)
    got = np.bincount(t[va], minlength=6)
    # every class within one row of its exact share
    assert (np.abs(got - counts * n_val / len(t)) < 1 + 1e-9).all()
    assert np.array_equal(stratified_split(t, n_val, seed)[1], va)  # deterministic


def test_default_learning_rate_follows_the_head() -> None:
    from dataclasses import replace

    from simlabel.heads import DEFAULT_LR

    cfg = HeadConfig()
    assert cfg.lr is None and cfg.learning_rate == DEFAULT_LR["linear"]
    assert replace(cfg, head="fusion").learning_rate == DEFAULT_LR["fusion"]
    assert HeadConfig(lr=0.2).learning_rate == 0.2


def test_a_linear_head_early_stops() -> None:
    """'best epoch 199 of 200' was a head that never converged: with the default rate it stops."""
    X, y = blobs(200, [f"c{i}" for i in range(10)], dim=64, spread=1.5)
    clf = EmbeddingClassifier(HeadConfig(device="cpu")).fit(X, y)
    assert len(clf.history_) < clf.config.max_epochs
    assert clf.best_epoch_ < len(clf.history_) - 1


def test_fast_dropout_keeps_the_expectation_and_the_rate() -> None:
    import torch

    from simlabel.heads import Dropout

    x = torch.ones(400, 500)
    d = Dropout(0.2).train()
    y = d(x)
    kept = (y > 0).float().mean().item()
    # p is taken to 51/256: the kept share within a binomial tolerance of 205/256, the mean exact in expectation
    assert abs(kept - 205 / 256) < 4 * (0.2 * 0.8 / x.numel()) ** 0.5
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(d.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)


def test_precision_auto_follows_the_hardware(monkeypatch) -> None:
    import simlabel.encoders.base as base

    monkeypatch.setattr(base, "native_bf16", lambda device: True)
    assert base.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(base, "native_bf16", lambda device: False)
    assert base.resolve_precision("auto", "cpu") == "fp32" and base.resolve_precision("bf16", "cpu") == "bf16"
    X, y = blobs(40, ["a", "b", "c"])
    for precision in ("fp32", "bf16"):
        clf = EmbeddingClassifier(HeadConfig(precision=precision, device="cpu")).fit(X, y)
        assert clf.precision_ == precision and (clf.predict(X) == y).mean() > 0.95
