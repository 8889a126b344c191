"""Multi-label metrics of paper 004's Table 1, and the quality of label flips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score, jaccard_score

from simlabel.metrics import (
    average_precision_all,
    exact_match,
    flip_quality,
    jaccard_similarity,
    mean_average_precision,
    multilabel_report,
    precision_recall_f1_at_k,
)

Y = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]])
S = np.array(
    [
        [0.9, 0.1, 0.8, 0.0],  # k=2: top {0, 2}, 1 hit
        [0.2, 0.3, 0.7, 0.1],  # k=1: top {2}, 1 hit
        [0.5, 0.6, 0.4, 0.1],  # k=3: top {1, 0, 2}, 2 hits
        [0.9, 0.9, 0.9, 0.9],  # no true label: skipped
    ]
)


def test_precision_recall_f1_at_k_by_hand() -> None:
    r = precision_recall_f1_at_k(Y, S)
    expected = np.mean([1 / 2, 1, 2 / 3])
    assert r["precision_at_k"] == pytest.approx(expected)
    assert r["recall_at_k"] == pytest.approx(expected)
    assert r["f1_at_k"] == pytest.approx(expected)
    assert r["n_images"] == 3 and r["n_skipped"] == 1


def test_precision_at_k_breaks_ties_by_label_index() -> None:
    r = precision_recall_f1_at_k([[0, 1, 0]], [[0.5, 0.5, 0.5]])
    assert r["precision_at_k"] == 0.0  # k = 1 picks label 0 of the three tied
    r = precision_recall_f1_at_k([[1, 0, 0]], [[0.5, 0.5, 0.5]])
    assert r["precision_at_k"] == 1.0
    r = precision_recall_f1_at_k(np.zeros((2, 3)), np.zeros((2, 3)))
    assert np.isnan(r["f1_at_k"]) and r["n_skipped"] == 2


def test_average_precision_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    T = (rng.random((200, 6)) < 0.3).astype(int)
    T[:, 5] = 0  # a label with no positive
    s = T * 0.4 + rng.random(T.shape)
    s[:50] = np.round(s[:50], 1)  # ties
    assert average_precision_all(T, s) == pytest.approx(average_precision_score(T.ravel(), s.ravel()))
    m = mean_average_precision(T, s)
    per = [average_precision_score(T[:, j], s[:, j]) for j in range(5)]
    np.testing.assert_allclose(m["per_label"][:5], per)
    assert np.isnan(m["per_label"][5])
    assert m["map"] == pytest.approx(np.mean(per))
    assert m["n_labels_scored"] == 5 and m["n_labels_skipped"] == 1


def test_map_groups() -> None:
    T = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    s = np.array([[0.9, 0.1, 0.2], [0.8, 0.7, 0.9], [0.1, 0.2, 0.3]])
    m = mean_average_precision(T, s, groups=["gender", "gender", "usage"])
    ap = [average_precision_score(T[:, j], s[:, j]) for j in range(3)]
    assert m["per_group"]["gender"] == pytest.approx((ap[0] + ap[1]) / 2)
    assert m["per_group"]["usage"] == pytest.approx(ap[2])
    assert m["map_over_attributes"] == pytest.approx(((ap[0] + ap[1]) / 2 + ap[2]) / 2)
    assert m["map"] == pytest.approx(np.mean(ap))
    with pytest.raises(ValueError, match="groups has 1 entries"):
        mean_average_precision(T, s, groups=["gender"])


def test_jaccard_and_exact_match_by_hand() -> None:
    T = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    P = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    # 1/2, both empty -> 1, 1, 0
    assert jaccard_similarity(T, P) == pytest.approx(2.5 / 4)
    assert exact_match(T, P) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="differ in shape"):
        jaccard_similarity(T, P[:, :2])


def test_jaccard_matches_sklearn_samples() -> None:
    rng = np.random.default_rng(1)
    T = (rng.random((300, 7)) < 0.3).astype(int)
    P = (rng.random((300, 7)) < 0.3).astype(int)
    T[:, 0] = 1  # no row with both sets empty
    assert jaccard_similarity(T, P) == pytest.approx(jaccard_score(T, P, average="samples"))


def test_multilabel_report() -> None:
    r = multilabel_report(Y, S, threshold=0.5, groups=["a", "a", "b", "b"])
    P = (S >= 0.5).astype(int)
    assert r["jaccard"] == pytest.approx(jaccard_similarity(Y, P))
    assert r["exact_match"] == pytest.approx(exact_match(Y, P))
    assert r["ap_all"] == pytest.approx(average_precision_all(Y, S))
    assert r["map"] == pytest.approx(mean_average_precision(Y, S)["map"])
    assert r["precision_at_k"] == pytest.approx(precision_recall_f1_at_k(Y, S)["precision_at_k"])
    assert set(r["per_group"]) == {"a", "b"}
    assert r["n"] == 4 and r["n_labels"] == 4


def test_flip_quality_by_hand() -> None:
    true = np.array([[1, 1, 0, 0], [1, 0, 1, 0]])
    noisy = np.array([[1, 0, 0, 1], [0, 0, 0, 0]])  # wrong: (0,1) (1,0) (1,2) missing; (0,3) spurious
    new = np.array([[1, 1, 1, 0], [0, 0, 0, 1]])  # flips: (0,1) fix, (0,2) break, (0,3) fix, (1,3) break
    q = flip_quality(noisy, new, true)
    up, down = q["0->1"], q["1->0"]
    assert (up["n_flips"], up["n_fixed"], up["n_broken"], up["n_wrong_before"]) == (3, 1, 2, 3)
    assert up["precision"] == pytest.approx(1 / 3) and up["recall"] == pytest.approx(1 / 3)
    assert (down["n_flips"], down["n_fixed"], down["precision"], down["recall"]) == (1, 1, 1.0, 1.0)
    assert q["all"]["n_flips"] == 4 and q["all"]["precision"] == pytest.approx(2 / 4)
    assert q["all"]["recall"] == pytest.approx(2 / 4)
    assert q["errors_before"] == 4 and q["errors_after"] == 4
    q0 = flip_quality(noisy, noisy, true)
    assert q0["all"]["n_flips"] == 0 and np.isnan(q0["all"]["precision"]) and q0["all"]["recall"] == 0.0


def _in_unit(v: float) -> bool:
    return bool(np.isnan(v) or 0.0 <= v <= 1.0 + 1e-12)


@st.composite
def _case(draw):
    n = draw(st.integers(1, 8))
    L = draw(st.integers(1, 5))
    b = arrays(np.int8, (n, L), elements=st.integers(0, 1))
    s = arrays(np.float64, (n, L), elements=st.floats(-3, 3, allow_nan=False, width=32))
    return draw(b), draw(b), draw(b), draw(s)


@settings(max_examples=60, deadline=None)
@given(_case())
def test_every_metric_in_unit_interval(case) -> None:
    T, P, N, s = case
    r = multilabel_report(T, s, threshold=0.0)
    for key in ("precision_at_k", "recall_at_k", "f1_at_k", "ap_all", "map", "jaccard", "exact_match"):
        assert _in_unit(r[key]), key
    assert all(_in_unit(v) for v in r["per_label"])
    assert _in_unit(jaccard_similarity(T, P)) and _in_unit(exact_match(T, P))
    q = flip_quality(N, P, T)
    for part in ("all", "0->1", "1->0"):
        assert _in_unit(q[part]["precision"]) and _in_unit(q[part]["recall"])
