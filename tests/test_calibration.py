"""Calibration (simlabel.calibration) and the head that carries it: temperature scaling by hand, vector scaling,
the expected calibration error and its bins by hand, per-class thresholds that reach a precision on a planted
case, and train's calibration on its validation split, saved with the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simlabel.calibration import (
    apply_calibration,
    coverage_precision,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    fit_vector_scaling,
    precision_thresholds,
    softmax,
    wilson_lower,
)
from simlabel.errors import InputError
from simlabel.head_config import HeadConfig
from simlabel.heads import EmbeddingClassifier
from simlabel.store import Embeddings
from simlabel.training import train
from tests.helpers import blobs


def test_temperature_by_hand_on_three_classes() -> None:
    # four items with logits 4 on one class: three right, one wrong. NLL(beta) = mean of 3 (log(e^{4b} + 2) - 4b)
    # and one log(e^{4b} + 2); its derivative vanishes where e^{4b} / (e^{4b} + 2) = 3/4, e^{4b} = 6: T = 4 / ln 6
    z = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    y = np.array([0, 1, 1, 2])
    T = fit_temperature(z, y)
    assert T == pytest.approx(4 / np.log(6), abs=1e-4)
    p = apply_calibration(z, {"method": "temperature", "temperature": T})
    assert p[0, 0] == pytest.approx(0.75, abs=1e-4)  # calibrated: the confidence is the accuracy, 3 of 4
    # all right and confident: no softening (T at the low bound: sharper)
    assert fit_temperature(z[:1], y[:1]) < 1
    with pytest.raises(InputError, match="class codes"):
        fit_temperature(z, np.array([0, 1, 1, 3]))
    with pytest.raises(InputError, match=r"\(n, C\)"):
        fit_temperature(z, y[:2])


def test_a_logistic_head_is_the_two_class_case() -> None:
    z = np.array([[3.0], [3.0], [-3.0], [3.0]])  # sigma(3) = 0.95 for class 1; one of the three is wrong
    y = np.array([1, 0, 0, 1])
    T = fit_temperature(z, y)
    p = apply_calibration(z, {"method": "temperature", "temperature": T})
    assert p.shape == (4, 2) and np.allclose(p.sum(1), 1)
    # NLL is minimised where sigma(3 / T) matches the mixture: 2 of 3 right at logit 3 and 1 of 1 at -3
    assert 0.66 < p[0, 1] < 0.9 and T > 1


def test_vector_scaling_fixes_a_biased_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    z = rng.normal(0, 1, (600, 3)) + 3 * np.eye(3)[y]
    z[:, 2] += 2.0  # a bias toward class 2: wrong predictions temperature cannot fix
    w, b = fit_vector_scaling(z, y)
    rec = fit_calibration(z, y, "vector")
    assert rec["nll_after"] < fit_calibration(z, y, "temperature")["nll_after"] < rec["nll_before"]
    assert b[2] - b[:2].mean() < -1.0  # the bias learned back
    acc_before = (z.argmax(1) == y).mean()
    acc_after = (apply_calibration(z, rec).argmax(1) == y).mean()
    assert acc_after > acc_before + 0.05
    with pytest.raises(InputError, match="calibration must be one of"):
        fit_calibration(z, y, "isotonic")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(2, 6)), elements=st.floats(-20, 20)),
       st.floats(0.1, 10))
def test_temperature_never_changes_a_prediction_and_probabilities_sum_to_one(z: np.ndarray, T: float) -> None:
    p = apply_calibration(z, {"method": "temperature", "temperature": T})
    assert np.allclose(p.sum(axis=1), 1.0)
    top = np.sort(z, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-9  # ties may break either way
    assert (p.argmax(1) == z.argmax(1))[clear].all()


def test_ece_and_the_reliability_bins_by_hand() -> None:
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.95, 0.05]])
    y = np.array([0, 1, 0, 1, 0])
    ece, bins = expected_calibration_error(p, y, n_bins=10)
    # bins (0.8, 0.9]: two items, conf 0.9, acc 0.5; (0.5, 0.6]: two, conf 0.6, acc 1; (0.9, 1.0]: one, 0.95 right
    assert [(b["lo"], b["n"], b["accuracy"]) for b in bins] == [(pytest.approx(0.5), 2, 1.0), (pytest.approx(0.8), 2, 0.5),
                                                               (pytest.approx(0.9), 1, 1.0)]
    assert ece == pytest.approx((2 * 0.4 + 2 * 0.4 + 1 * 0.05) / 5)
    # labels drawn from the probabilities themselves: calibrated, ECE near 0
    rng = np.random.default_rng(0)
    q = softmax(rng.normal(0, 2, (20000, 4)))
    draw = np.array([rng.choice(4, p=r) for r in q])
    assert expected_calibration_error(q, draw)[0] < 0.02


def test_thresholds_reach_the_precision_on_a_planted_case() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.integers(0, 3, n)
    conf = rng.uniform(0.34, 1.0, n)
    right = rng.uniform(size=n) < conf  # right with probability = confidence: precision rises with the cut
    pred = np.where(right, y, (y + 1) % 3)
    p = np.full((n, 3), 0.0)
    p[np.arange(n), pred] = conf
    p[np.arange(n), (pred + 1) % 3] = 1 - conf
    t = precision_thresholds(p, y, 0.9, ["a", "b", "c"], alpha=None)  # the observed precision
    # with 95% confidence (Wilson's lower bound): every class at once (each at 0.05 / 3), or each on its own
    sure = precision_thresholds(p, y, 0.9, ["a", "b", "c"])
    each = precision_thresholds(p, y, 0.9, ["a", "b", "c"], scope="each")
    for name, c in zip("abc", range(3)):
        kept_sure = (p.argmax(1) == c) & (p.max(1) >= sure[name]["threshold"])
        k, right = kept_sure.sum(), (y[kept_sure] == c).sum()
        assert wilson_lower(np.array([right]), np.array([k]), 0.05 / 3)[0] >= 0.9
        kept_each = (p.argmax(1) == c) & (p.max(1) >= each[name]["threshold"])
        k, right = kept_each.sum(), (y[kept_each] == c).sum()
        assert wilson_lower(np.array([right]), np.array([k]), 0.05)[0] >= 0.9
        assert sure[name]["threshold"] >= each[name]["threshold"] > t[name]["threshold"]
        rec = t[name]
        kept = (p.argmax(1) == c) & (p.max(1) >= rec["threshold"])
        assert (y[kept] == c).mean() >= 0.9 and rec["precision"] >= 0.9  # reached on these items
        assert 0.75 < rec["threshold"] < 0.95  # confidence ~ accuracy: the cut sits near where the mean passes 0.9
        # the largest such set: one item more (the next below the threshold) falls under the precision
        below = (p.argmax(1) == c) & (p.max(1) < rec["threshold"])
        nxt = np.flatnonzero(below)[np.argmax(p.max(1)[below])]
        assert (y[kept | (np.arange(n) == nxt)] == c).mean() < 0.9 + 1e-3
        assert 0 < rec["recall_kept"] < 1
    # unreachable: a class that is always wrong always abstains, and says why
    q = np.array([[0.9, 0.1], [0.8, 0.2]])
    never = precision_thresholds(q, np.array([1, 1]), 0.5, ["a", "b"])
    assert never["a"]["threshold"] is None and "no confidence cut" in never["a"]["why"]
    assert never["b"]["threshold"] is None and "no held-out item" in never["b"]["why"]
    with pytest.raises(InputError, match="min_precision"):
        precision_thresholds(q, np.array([1, 1]), 1.5)
    with pytest.raises(InputError, match="scope"):
        precision_thresholds(q, np.array([1, 1]), 0.5, scope="some")


def test_coverage_precision_by_hand() -> None:
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    curve = coverage_precision(p, np.array([0, 0, 1, 0]), points=4)
    assert [(c["coverage"], c["precision"]) for c in curve] == [(0.25, 1.0), (0.5, 1.0), (0.75, 2 / 3), (1.0, 0.75)]


def _overconfident(n_per: int = 150):
    """Three overlapping blobs: a long-trained head is over-confident on them."""
    X, y = blobs(n_per, ["a", "b", "c"], dim=8, spread=2.5)
    ids = np.array([f"i{j}" for j in range(len(X))], dtype=object)
    return Embeddings(ids, X.astype(np.float32), {"path": "mem", "model": "test"}), pd.DataFrame({"id": ids, "label": y})


def test_train_calibrates_on_its_validation_split_and_the_model_keeps_it(tmp_path) -> None:
    e, truth = _overconfident()
    rng = np.random.default_rng(0)
    test = rng.permutation(len(truth))[:150]
    train_rows = truth.drop(index=test)
    # no validation split: 150 epochs of an MLP on overlapping classes, over-confident
    cfg = HeadConfig(head="mlp", max_epochs=150, val_frac=0.0, lr=3e-3, device="cpu", seed=0)
    raw = train(e, train_rows, config=cfg, calibration="none")
    cal = train(e, train_rows, config=cfg, out=tmp_path / "m")
    assert cal.calibration_["method"] == "temperature" and cal.calibration_["temperature"] > 1  # over-confident before
    # out of fold: every labelled row held out once, by heads of the same config
    assert cal.calibration_["n"] == len(train_rows) and cal.calibration_["source"] == "5 folds out of fold"
    X, y = e.rows(truth["id"].iloc[test]).matrix, truth["label"].iloc[test].to_numpy()
    codes = np.searchsorted(cal.classes_, y)
    before = expected_calibration_error(raw.predict_proba(X), codes)[0]
    after = expected_calibration_error(cal.predict_proba(X), codes)[0]
    assert after < before
    assert (raw.predict(X) == cal.predict(X)).all()  # temperature scaling never changes a prediction
    # saved with the model: the same probabilities and thresholds after a load
    back = EmbeddingClassifier.load(tmp_path / "m")
    assert np.allclose(back.predict_proba(X), cal.predict_proba(X)) and back.calibration_ == cal.calibration_
    assert back.thresholds(0.9) == cal.thresholds(0.9)
    t = cal.thresholds(0.9)
    assert set(t) == {"a", "b", "c"} and any(v["threshold"] is not None for v in t.values())
    assert all(v["threshold"] is None or v["threshold"] > 0.5 for v in t.values())
    # from the head's own validation split (calibration_folds=0): none without one, and the record says why
    split = train(e, train_rows, config=HeadConfig(device="cpu"), calibration_folds=0)
    assert split.calibration_["source"] == "validation split" and split.calibration_["n"] == len(split.validation_index_)
    few = train(e, train_rows.groupby("label").head(10), config=HeadConfig(val_frac=0.0, max_epochs=20, device="cpu"),
                calibration_folds=0)
    assert few.calibration_["method"] == "none" and "no validation rows" in few.calibration_["why"]
    with pytest.raises(InputError, match="no held-out rows"):
        few.thresholds(0.9)
    with pytest.raises(InputError, match="calibration must be one of"):
        train(e, train_rows, config=cfg, calibration="platt")


def test_evaluate_reports_calibration_and_abstention_with_a_page(tmp_path) -> None:
    from typer.testing import CliRunner

    from simlabel.cli import app
    from tests.helpers import check_page

    e, truth = _overconfident(60)
    test = truth.iloc[::4]
    model = tmp_path / "m"
    train(e, truth.drop(index=test.index), config=HeadConfig(device="cpu"), out=model)
    from simlabel.training import evaluate

    rep = evaluate(model, e, test, min_precision=0.9, html_out=tmp_path / "eval.html")
    cal = rep["calibration"]
    assert cal["method"] == "temperature" and 0 <= cal["ece_after"] <= 1 and sum(b["n"] for b in cal["bins_after"]) == len(test)
    ab = rep["abstention"]
    kept = sum(m["kept"] for m in ab["per_class"].values())
    assert ab["coverage"] == pytest.approx(kept / len(test))
    for m in ab["per_class"].values():
        assert m["recall"] <= m["recall_without"]  # abstaining never adds a right answer
    curve = rep["coverage_precision"]
    assert curve[-1]["coverage"] == 1.0 and curve[-1]["precision"] == pytest.approx(rep["accuracy"])
    facts = check_page(tmp_path / "eval.html", tmp_path / "shots")
    assert facts["images"] >= 2 and facts["missing"] == 0  # the reliability diagram and the curve
    html = (tmp_path / "eval.html").read_text()
    assert "Reliability diagram" in html and "Abstaining below precision 0.9" in html
    # emb given as a store value is not a folder for the CLI: write the store to run the command
    from simlabel.store import write_shard

    (tmp_path / "emb").mkdir()
    write_shard(tmp_path / "emb" / "part-00000.parquet", e.ids, e.matrix, {"model": "test"})
    test.to_csv(tmp_path / "test.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--emb", str(tmp_path / "emb"), "--labels",
                                   str(tmp_path / "test.csv"), "--min-precision", "0.9"])
    assert res.exit_code == 0, res.output
    assert "expected calibration error (15 bins)" in res.output and "abstaining below precision 0.9" in res.output
