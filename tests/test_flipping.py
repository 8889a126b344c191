"""The flipping job (simlabel.labels.flipping): explanations of each flip, and ``flip`` on a catalog, returning a
Flipped with its summary, through both of paper 004's strategies. SELF-ML's method is tested in test_selfml.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError
from simlabel.labels.flipping import Explanation, Flipped, explain_flips, flip
from simlabel.labels.selfml import SelfMLConfig, coefficients, correct_labels
from simlabel.store import Embeddings
from simlabel.training import multilabel_pretrain
from tests.test_selfml import FAST, TRAIN, baseline, data, make_data, result  # noqa: F401  (fixtures)

# --------------------------------------------------------------------------- explanations


def test_explain_flips_one_per_change(data, result):  # noqa: F811  (the fixtures of test_selfml)
    X, _, Yn, _ = data
    fixed, probs = correct_labels(result, X[TRAIN], Yn[TRAIN])
    C = coefficients(result.reconstruction, X[TRAIN])
    ex = explain_flips(C, Yn[TRAIN], fixed, probs, result.Y_B, top=3)
    changed = np.argwhere(Yn[TRAIN] != fixed)
    assert len(ex) == len(changed) > 0
    assert [(e.row, e.label) for e in ex] == [tuple(rc) for rc in changed.tolist()]
    for e in ex:
        assert isinstance(e, Explanation)
        assert e.old == Yn[TRAIN][e.row, e.label] and e.new == fixed[e.row, e.label] != e.old
        assert 1 <= len(e.basis) <= 3 and len(e.weights) == len(e.basis) == len(e.basis_labels)
        assert e.weights == sorted(e.weights, reverse=True) and all(w > 0 for w in e.weights)
        np.testing.assert_allclose(e.weights[0], C[e.row].max(), rtol=1e-6)
        assert e.basis_labels == result.Y_B[e.basis, e.label].tolist()
        assert 0.5 <= e.confidence <= 1.0


def test_explain_flips_hand_case():
    C = np.array([[0.1, 0.6, 0.0, 0.3], [0.25, 0.25, 0.25, 0.25]], dtype=np.float32)
    Y_B = np.array([[1, 0], [1, 1], [0, 0], [1, 1]], dtype=np.uint8)
    Y_old = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    Y_new = np.array([[1, 1], [1, 1]], dtype=np.uint8)
    probs = np.array([[0.8, 0.9], [0.9, 0.9]], dtype=np.float32)
    (e,) = explain_flips(C, Y_old, Y_new, probs, Y_B, top=2)
    assert (e.row, e.label, e.old, e.new) == (0, 0, 0, 1)
    assert e.basis == [1, 3] and e.basis_labels == [1, 1]
    np.testing.assert_allclose(e.weights, [0.6, 0.3], rtol=1e-6)
    assert e.confidence == pytest.approx(0.8)
    assert explain_flips(C, Y_old, Y_old, probs, Y_B) == []


# --------------------------------------------------------------------------- the job


NAMES = ["a=0", "a=1", "b=0", "b=1", "c"]


def _cells(Y: np.ndarray) -> list[str]:
    return ["|".join(NAMES[j] for j in np.flatnonzero(row)) for row in Y]


def _noisy_catalog(tmp_path: Path, n: int, seed: int, n_clean: int):
    """Planted multi-labels: the embeddings, the catalog of noisy labels, and a clean set of the first ``n_clean``."""
    X, Y, Yn, _ = make_data(seed=seed, n=n)
    ids = [f"p{i}" for i in range(n)]
    emb = Embeddings(np.array(ids, dtype=object), X, {"path": "mem", "model": "test"})
    cat = tmp_path / "catalog.csv"
    pd.DataFrame({"id": ids, "labels": _cells(Yn)}).to_csv(cat, index=False)
    pd.DataFrame({"id": ids[:n_clean], "labels": _cells(Y[:n_clean])}).to_csv(tmp_path / "clean.csv", index=False)
    return X, Y, ids, emb, cat


def test_flip_returns_flips_with_their_summary_by_both_strategies(tmp_path: Path) -> None:
    # strategy 2: a clean set of 60 items teaches the flipping model
    X, Y, ids, emb, cat = _noisy_catalog(tmp_path, 400, seed=1, n_clean=60)
    cfg = SelfMLConfig(**FAST)
    made = flip(emb, cat, clean=tmp_path / "clean.csv", config=cfg, pretrain=multilabel_pretrain(cfg),
                out=tmp_path / "flips.csv")
    assert isinstance(made, Flipped) and made.basis_to_label is None
    s = made.summary
    assert s["mode"] == "joint" and s["n_items"] == 400 and s["n_checked"] == 340 and s["n_labels"] == len(NAMES)
    assert s["flips"] == len(made.labels) > 0 and s["added"] + s["removed"] == s["flips"]
    assert sum(s["by_attribute"].values()) == s["flips"]
    assert not set(made.labels["id"]) & set(ids[:60])  # the clean rows teach, they are not flipped
    # most flips restore a dropped positive: the truth agrees with the new value
    row = made.labels["id"].str[1:].astype(int).to_numpy()
    col = made.labels["label"].map(NAMES.index).to_numpy()
    assert (Y[row, col] == made.labels["new"].to_numpy()).mean() > 0.7
    assert len(pd.read_csv(tmp_path / "flips.csv", dtype=str, keep_default_na=False)) == s["flips"]
    assert json.loads((tmp_path / "flips.csv.summary.json").read_text())["flips"] == s["flips"]
    with pytest.warns(DeprecationWarning, match="Flipped"):
        assert list(made["id"]) == list(made.labels["id"])  # the old DataFrame result, still indexable
    # strategy 1: the basis images to label are a catalog; labelled from the truth, the direct rule flips
    exported = flip(emb, cat, config=cfg, export_basis=tmp_path / "basis.csv")
    assert exported.summary["mode"] == "export" and exported.labels.empty
    b = exported.basis_to_label
    assert b is not None and b["id"].is_unique and len(b) == exported.summary["basis_images"] > 0
    truth = dict(zip(ids, _cells(Y)))
    b.assign(labels=b["id"].map(truth)).to_csv(tmp_path / "answers.csv", index=False)
    direct = flip(emb, cat, config=cfg, basis_labels=tmp_path / "answers.csv")
    assert direct.summary["mode"] == "direct" and direct.summary["n_checked"] == 400 and direct.summary["flips"] > 0


def test_conflicting_asks_fail_before_any_training(tmp_path: Path) -> None:
    X, _, Yn, _ = make_data(seed=2, n=60)
    ids = [f"p{i}" for i in range(60)]
    emb = Embeddings(np.array(ids, dtype=object), X, {"path": "mem", "model": "test"})
    cat = tmp_path / "catalog.csv"
    pd.DataFrame({"id": ids, "labels": _cells(Yn)}).to_csv(cat, index=False)
    clean = tmp_path / "clean.csv"
    pd.DataFrame({"id": ids[:5], "labels": _cells(Yn[:5])}).to_csv(clean, index=False)
    asks = [
        (dict(clean=clean), "pretrain"),
        (dict(clean=clean, export_basis=tmp_path / "b.csv"), "not both"),
        (dict(export_basis=tmp_path / "b.csv", out=tmp_path / "f.csv"), "flips nothing"),
        (dict(basis_labels=clean, html=tmp_path / "x.html"), "`html` needs `render`"),
    ]
    for kwargs, message in asks:
        with pytest.raises(InputError, match=message):
            flip(emb, cat, config=SelfMLConfig(**FAST), **kwargs)
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "f.csv").exists()


def test_the_jointly_trained_classifier_is_saved_and_predicts(tmp_path: Path) -> None:
    """flip --model-out: SELF-ML's classifier as a model folder that predict reads, giving its probabilities."""
    import torch

    from simlabel.heads import MultiLabelClassifier, load_model
    from simlabel.prediction import predict
    from simlabel.training import save_flip_model

    X, _, ids, emb, cat = _noisy_catalog(tmp_path, 300, seed=2, n_clean=50)
    cfg = SelfMLConfig(**FAST)
    made = flip(emb, cat, clean=tmp_path / "clean.csv", config=cfg, pretrain=multilabel_pretrain(cfg))
    assert made.classifier is not None
    save_flip_model(made, tmp_path / "model")
    clf = load_model(tmp_path / "model")
    assert isinstance(clf, MultiLabelClassifier) and clf.label_names() == made.label_names
    with torch.no_grad():
        want = torch.sigmoid(made.classifier.cpu()(torch.from_numpy(X))).numpy()
    got = predict(tmp_path / "model", emb, progress=False).table()
    np.testing.assert_allclose(np.stack(got["probabilities"].to_numpy()), want, atol=1e-6)
    direct = flip(emb, cat, config=cfg, export_basis=tmp_path / "basis.csv")
    with pytest.raises(InputError, match="joint"):
        save_flip_model(direct, tmp_path / "none")
