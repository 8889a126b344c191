"""Paper 001's metrics: R@90 / R@95 and colour entropy, on hand cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.metrics import cluster_label_entropy, recall_at_precision


def test_recall_at_precision_by_hand():
    y = np.array([0, 0, 1, 1])
    s0 = np.array([0.9, 0.6, 0.8, 0.1])
    scores = np.stack([s0, 1 - s0], axis=1)
    # class 0 ranked: pos (P 1, R .5), neg (1/2), pos (2/3, R 1), neg (2/4)
    r90 = recall_at_precision(y, scores, 0.9)
    assert r90["per_class"].tolist() == [0.5, 0.5] and r90["macro"] == 0.5
    # at precision 0.6 class 0 reaches recall 1 at the third item (2/3); class 1 ranked pos, neg, pos (2/3): 1
    assert recall_at_precision(y, scores, 0.6)["macro"] == 1.0


def test_recall_at_precision_never_reached_ties_and_absent_classes():
    y = np.array([0, 1, 1, 1])
    scores = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    r = recall_at_precision(y, scores, 0.9)
    assert r["per_class"][0] == 0.0  # class 0's only item ranks last: precision 1/4 at best
    tied = recall_at_precision(np.array([0, 1, 0, 1]), np.full((4, 2), 0.5), 0.5)
    assert tied["per_class"].tolist() == [1.0, 1.0]  # one threshold keeps all: precision 1/2
    absent = recall_at_precision(np.array([0, 0]), np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]]), 0.9)
    assert absent["absent"] == [1, 2] and absent["macro"] == 1.0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), c=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_recall_at_precision_properties(n, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    s = rng.random((n, c))
    r90, r50 = recall_at_precision(y, s, 0.9), recall_at_precision(y, s, 0.5)
    ok = ~np.isnan(r90["per_class"])
    assert ((0 <= r90["per_class"][ok]) & (r90["per_class"][ok] <= 1)).all()
    assert (r50["per_class"][ok] >= r90["per_class"][ok] - 1e-12).all()  # a lower bar never lowers recall
    # perfect scores: every class reaches recall 1 at any precision
    perfect = np.eye(c)[y]
    assert recall_at_precision(y, perfect, 0.95)["macro"] == pytest.approx(1.0)
    # monotone transforms of the scores change nothing
    assert np.allclose(recall_at_precision(y, np.exp(3 * s), 0.9)["per_class"][ok], r90["per_class"][ok])


def test_cluster_entropy_by_hand():
    # cluster 0: {a, b} -> ln 2; cluster 1: {a, a} -> 0; equal sizes
    assert cluster_label_entropy(np.array([0, 0, 1, 1]), np.array(list("abaa")))["weighted"] == pytest.approx(0.5 * math.log(2))
    # sizes 3 and 1: 3/4 ln 3 weighted, ln 3 / 2 unweighted
    r = cluster_label_entropy(np.array([0, 0, 0, 1]), np.array(list("abca")))
    assert r["weighted"] == pytest.approx(0.75 * math.log(3)) and r["mean"] == pytest.approx(math.log(3) / 2)
    assert r["overall"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 6), v=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_cluster_entropy_properties(n, k, v, seed):
    rng = np.random.default_rng(seed)
    cl, lab = rng.integers(0, k, n), rng.integers(0, v, n)
    r = cluster_label_entropy(cl, lab)
    assert -1e-12 <= r["weighted"] <= math.log(v) + 1e-9
    assert r["weighted"] <= r["overall"] + 1e-9  # conditioning never raises entropy
    perm = rng.permutation(n)
    assert cluster_label_entropy(cl[perm], lab[perm])["weighted"] == pytest.approx(r["weighted"])
    assert cluster_label_entropy(np.arange(n), lab)["weighted"] == 0.0  # singletons hold one colour each
