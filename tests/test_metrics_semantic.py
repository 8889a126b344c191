from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.metrics import (
    mistake_severity,
    semantic_neighborhood_hits,
    top_k_predictions,
    topk_accuracy,
)

# 3 items, 4 classes; each label's neighbour set includes itself (simlabel's convention)
SCORES = np.array(
    [
        [0.90, 0.05, 0.03, 0.02],  # top-2: 0, 1
        [0.10, 0.20, 0.30, 0.40],  # top-2: 3, 2
        [0.50, 0.10, 0.10, 0.30],  # top-2: 0, 3
    ]
)
Y = np.array([0, 1, 3])
NEIGHBORS = np.array([[0, 1], [1, 0], [2, 3], [3, 2]])


def test_top_k_predictions_order() -> None:
    assert top_k_predictions(SCORES, 2).tolist() == [[0, 1], [3, 2], [0, 3]]
    assert top_k_predictions(SCORES, 4).tolist() == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 3, 1, 2]]
    assert top_k_predictions(SCORES, 10).shape == (3, 4)  # clipped to C, as topk_accuracy
    assert top_k_predictions(np.array([[1, 5, 3]], dtype=np.uint8), 2).tolist() == [[1, 2]]  # no wrap-around


def test_top_k_predictions_ties_lower_index_first() -> None:
    s = np.array([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 2.0, 1.0, 2.0], [2.0, 0.0, 2.0, 2.0]])
    assert top_k_predictions(s, 1).tolist() == [[1], [0], [1], [0]]
    assert top_k_predictions(s, 2).tolist() == [[1, 2], [0, 1], [1, 3], [0, 2]]
    assert top_k_predictions(s, 3).tolist() == [[1, 2, 0], [0, 1, 2], [1, 3, 2], [0, 2, 3]]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.integers(1, 12), st.integers(1, 12), st.integers(1, 4))
def test_top_k_predictions_is_a_stable_sort(seed: int, n: int, c: int, k: int, levels: int) -> None:
    # few distinct score values: many ties, also at the cut
    s = np.random.default_rng(seed).integers(0, levels + 1, (n, c)).astype(float)
    expected = np.argsort(-s, axis=1, kind="stable")[:, : min(k, c)]
    np.testing.assert_array_equal(top_k_predictions(s, k), expected)


def test_top_k_consistent_with_topk_accuracy() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((200, 30))
    y = rng.integers(0, 30, 200)
    for k in (1, 3, 5, 30):
        hit = (top_k_predictions(s, k) == y[:, None]).any(axis=1).mean()
        assert hit == pytest.approx(topk_accuracy(s, y, k))


def test_top_k_validation() -> None:
    with pytest.raises(ValueError, match="2-D"):
        top_k_predictions(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_predictions(SCORES, 0)
    with pytest.raises(ValueError, match="NaN"):
        top_k_predictions(np.array([[0.1, np.nan]]), 1)


def test_semantic_neighborhood_hits_by_hand() -> None:
    # item 0: y=0, N={0,1}, top-2 {0,1} -> 2; item 1: y=1, N={1,0}, top-2 {3,2} -> 0;
    # item 2: y=3, N={3,2}, top-2 {0,3} -> 1
    r = semantic_neighborhood_hits(SCORES, Y, NEIGHBORS, top=2)
    assert r == {"mean_in_top": pytest.approx(1.0), "share_all_in": pytest.approx(1 / 3), "top": 2, "k": 2}
    # top-1: only item 0's best class is in its neighbourhood
    r1 = semantic_neighborhood_hits(SCORES, Y, NEIGHBORS, top=1)
    assert r1["mean_in_top"] == pytest.approx(1 / 3) and r1["share_all_in"] == pytest.approx(1 / 3)
    # all four predictions of item 0 and 2, but only two neighbours each
    r4 = semantic_neighborhood_hits(SCORES, Y, NEIGHBORS, top=4)
    assert r4["mean_in_top"] == pytest.approx(2.0) and r4["share_all_in"] == 0.0
    # default top=5 is clipped to the 4 classes
    assert semantic_neighborhood_hits(SCORES, Y, NEIGHBORS)["top"] == 4


def test_semantic_neighborhood_hits_padding_and_self() -> None:
    # without the label itself, a correct top-1 is no hit: the convention is the caller's
    no_self = np.array([[1, -1], [0, -1], [3, -1], [2, -1]])
    r = semantic_neighborhood_hits(SCORES, Y, no_self, top=2)
    # item 0: {1} & {0,1} -> 1; item 1: {0} & {3,2} -> 0; item 2: {2} & {0,3} -> 0
    assert r["mean_in_top"] == pytest.approx(1 / 3) and r["share_all_in"] == 0.0 and r["k"] == 2
    # duplicates in a neighbour row count once
    dup = np.array([[0, 0, 1], [1, 1, 0], [2, 3, 3], [3, 3, 2]])
    assert semantic_neighborhood_hits(SCORES, Y, dup, top=2)["mean_in_top"] == pytest.approx(1.0)


def test_semantic_neighborhood_hits_self_only_is_topk_accuracy() -> None:
    rng = np.random.default_rng(1)
    s = rng.random((100, 12))
    y = rng.integers(0, 12, 100)
    self_only = np.arange(12)[:, None]
    for top in (1, 5):
        r = semantic_neighborhood_hits(s, y, self_only, top=top)
        assert r["mean_in_top"] == pytest.approx(topk_accuracy(s, y, top))


def test_semantic_neighborhood_hits_validation_and_empty() -> None:
    with pytest.raises(ValueError, match="neighbors"):
        semantic_neighborhood_hits(SCORES, Y, NEIGHBORS[:3])
    with pytest.raises(ValueError, match="< 4"):
        semantic_neighborhood_hits(SCORES, Y, NEIGHBORS + 1)
    with pytest.raises(ValueError, match="y_true"):
        semantic_neighborhood_hits(SCORES, np.array([0, 1, 4]), NEIGHBORS)
    with pytest.raises(ValueError, match="y_true"):
        semantic_neighborhood_hits(SCORES, Y[:2], NEIGHBORS)
    with pytest.raises(ValueError, match="top"):
        semantic_neighborhood_hits(SCORES, Y, NEIGHBORS, top=0)
    r = semantic_neighborhood_hits(np.zeros((0, 4)), np.zeros(0, dtype=int), NEIGHBORS)
    assert math.isnan(r["mean_in_top"]) and math.isnan(r["share_all_in"])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.integers(1, 15), st.integers(1, 6), st.integers(1, 8))
def test_mean_in_top_within_bounds(seed: int, n: int, c: int, k: int, top: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, c))
    y = rng.integers(0, c, n)
    nb = rng.integers(-1, c, (c, k))  # with padding and repeats
    r = semantic_neighborhood_hits(s, y, nb, top=top)
    assert r["top"] == min(top, c)
    assert 0.0 <= r["mean_in_top"] <= r["top"]
    assert 0.0 <= r["share_all_in"] <= 1.0
    # every item with all predictions inside contributes `top` to the mean
    assert r["mean_in_top"] >= r["share_all_in"] * r["top"] - 1e-12


# --------------------------------------------------------------------------- mistake severity

DIST = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 2.0, 0.0]])


def test_mistake_severity_by_hand() -> None:
    # mistakes: (true 0, pred 1) -> 1, (1, 2) -> 2, (2, 0) -> 2; one correct
    r = mistake_severity(np.array([0, 1, 2, 0]), np.array([0, 0, 1, 2]), DIST)
    assert r == {
        "mistake_severity": pytest.approx(5 / 3),
        "mean_distance": pytest.approx(5 / 4),
        "n_mistakes": 3,
        "n": 4,
    }


def test_mistake_severity_no_mistakes_and_diagonal() -> None:
    # a correct prediction counts 0 even if the distance matrix's diagonal is not 0
    r = mistake_severity(np.array([0, 2]), np.array([0, 2]), DIST + 5.0)
    assert math.isnan(r["mistake_severity"]) and r["mean_distance"] == 0.0 and r["n_mistakes"] == 0
    r = mistake_severity(np.array([], dtype=int), np.array([], dtype=int), DIST)
    assert math.isnan(r["mean_distance"]) and r["n"] == 0


def test_mistake_severity_validation() -> None:
    with pytest.raises(ValueError, match="square"):
        mistake_severity(np.array([0]), np.array([0]), DIST[:2])
    with pytest.raises(ValueError, match="y_pred"):
        mistake_severity(np.array([0, 1]), np.array([0]), DIST)
    with pytest.raises(ValueError, match="y_pred"):
        mistake_severity(np.array([3]), np.array([0]), DIST)
