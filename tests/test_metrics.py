from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from simlabel.metrics import classification_report, harmonic_mean, topk_accuracy


def test_binary_report_by_hand() -> None:
    y = ["+", "+", "+", "-", "-", "-", "-", "-"]
    p = ["+", "+", "-", "+", "-", "-", "-", "-"]
    r = classification_report(y, p, positive="+")
    # +P = 2/3, +R = 2/3, -P = 4/5, -R = 4/5
    b = r["binary"]
    assert b["+P"] == pytest.approx(2 / 3) and b["+R"] == pytest.approx(2 / 3)
    assert b["-P"] == pytest.approx(0.8) and b["-R"] == pytest.approx(0.8)
    assert r["hm"] == pytest.approx(4 / (3 / 2 + 3 / 2 + 5 / 4 + 5 / 4))
    assert r["labels"] == ["+", "-"] and r["confusion_matrix"] == [[2, 1], [1, 4]]  # rows: truth, cols: prediction


def test_matches_sklearn_multiclass() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice(list("abcd"), 200)
    p = np.where(rng.random(200) < 0.7, y, rng.choice(list("abcd"), 200))
    r = classification_report(y, p)
    pr, rc, f1, s = precision_recall_fscore_support(y, p, labels=list("abcd"), zero_division=0)
    for i, c in enumerate("abcd"):
        assert r["per_class"][c]["precision"] == pytest.approx(pr[i])
        assert r["per_class"][c]["recall"] == pytest.approx(rc[i])
        assert r["per_class"][c]["f1"] == pytest.approx(f1[i])
    assert r["accuracy"] == pytest.approx(accuracy_score(y, p))


def test_hm_is_zero_when_a_class_collapses() -> None:
    assert classification_report(["a", "b"], ["a", "a"])["hm"] == 0.0
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)


def test_topk() -> None:
    s = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    assert topk_accuracy(s, np.array([2, 2]), 1) == 0.0
    assert topk_accuracy(s, np.array([2, 2]), 2) == 0.5


def test_topk_counts_true_classes_the_model_lacks_as_misses() -> None:
    # code -1: a test item whose true class the head was never trained on (side-info experiment)
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    assert topk_accuracy(scores, np.array([1, 1, -1]), 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, np.array([1, 1, -1]), 2) == pytest.approx(2 / 3)


def test_classes_without_test_items_never_predicted_and_unseen_are_reported_apart() -> None:
    import pytest

    from simlabel.errors import SimlabelWarning

    # classes a, b, c; c has no test item; b is never predicted; "z" is a class the model never saw
    y_true = ["a", "a", "b", "b", "z"]
    y_pred = ["a", "a", "a", "a", "a"]
    with pytest.warns(SimlabelWarning, match="1 class\\(es\\) never predicted .*: b"):
        rep = classification_report(y_true, y_pred, labels=["a", "b", "c"])
    assert rep["per_class"]["c"]["in_test"] is False and rep["absent_classes"] == ["c"]
    assert rep["per_class"]["b"]["never_predicted"] and rep["never_predicted"] == ["b"]
    assert rep["hm_classes"] == 2 and rep["hm"] == 0.0  # b's precision is 0; c is left out, not a 0/0/0 row
    assert rep["unseen"] == {"n": 1, "classes": {"z": 1}}
    assert rep["accuracy"] == 2 / 5  # the unseen item counts as an error
    # macro F1 over the classes in the test set only: a (P 2/4, R 1 -> 2/3) and b (0)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert len(rep["notes"]) == 3 and "not in the test set" in rep["notes"][0]
    # the HM of a task where every class is predicted is the hand-computed harmonic mean
    good = classification_report(["a", "a", "b"], ["a", "b", "b"], labels=["a", "b"], warn=False)
    assert good["hm"] == pytest.approx(harmonic_mean([1.0, 0.5, 0.5, 1.0]))
