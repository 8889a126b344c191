"""simlabel.auditing.core: each issue type on hand-made cases, and its score's monotonicity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.auditing.core import class_distances, class_imbalance, leakage, near_duplicates, non_iid, outliers, pixel_twins, robust_scores
from simlabel.errors import InputError
from simlabel.graph import GraphConfig, build_graph
from simlabel.store import Embeddings


def _graph(X: np.ndarray, k: int = 5):
    e = Embeddings(np.array([f"i{j}" for j in range(len(X))], dtype=object), X.astype(np.float32), {"path": "mem", "model": "t"})
    return build_graph(e, None, GraphConfig(k=k, recall_sample=0), progress=False)


def _cloud(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    X = centres[rng.integers(6, size=n)] + 0.35 * rng.normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_known_copies_form_groups_and_nothing_else_does():
    X = _cloud()
    X[10] = X[3]  # an exact copy
    X[20] = X[7] + 1e-2 * np.random.default_rng(1).normal(size=X.shape[1])  # a re-encoded one
    X[20] /= np.linalg.norm(X[20])
    g = _graph(X)
    r = near_duplicates(g.neighbors, g.similarities)
    assert r.group[3] == r.group[10] >= 0 and r.group[7] == r.group[20] >= 0 and r.group[3] != r.group[7]
    assert (r.group >= 0).sum() == 4
    assert r.score[3] == r.score[10] == 0.0 and 0 < r.score[20] < r.score[50]
    # the cut is the data's: a fraction of the median nearest-neighbour distance
    assert r.cut == pytest.approx(0.13 * np.median(1 - g.similarities[:, 0]), rel=1e-6)


def test_a_leak_across_the_split_is_the_test_twin_only():
    X = _cloud()
    X[11] = X[4]
    g = _graph(X)
    groups = near_duplicates(g.neighbors, g.similarities).group
    split = np.where(np.arange(len(X)) % 2 == 0, "train", "test")  # 4 in train, 11 in test
    leaked = leakage(groups, split)
    assert leaked.tolist().count(True) == 1 and leaked[11]
    with pytest.raises(InputError, match="one length"):
        leakage(groups, split[:-1])


def test_an_outlier_far_from_every_cluster_is_flagged_and_scores_worst():
    X = _cloud()
    X[0] = -X.mean(0) / np.linalg.norm(X.mean(0))  # away from all the clusters
    g = _graph(X)
    score, flagged, d, cut = outliers(g.similarities)
    assert flagged[0] and score[0] == score.min() and d[0] > cut
    assert flagged.mean() < 0.05


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=5, max_size=40), st.sampled_from(["low", "high", "both"]))
def test_robust_scores_are_monotone_in_the_bad_direction(values, side):
    x = np.array(values)
    score, flagged, _ = robust_scores(x, side=side)
    assert ((0 <= score) & (score <= 1)).all()
    order = np.argsort(x)
    if side == "low":  # lower values: lower (worse) scores
        assert (np.diff(score[order]) >= -1e-12).all()
    elif side == "high":
        assert (np.diff(score[order]) <= 1e-12).all()
    # flagged is a cut of the score: every flagged row scores below every row left alone
    if flagged.any() and (~flagged).any():
        assert score[flagged].max() <= score[~flagged].min()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16))
def test_outlier_scores_fall_as_distances_grow(seed):
    s = np.sort(np.random.default_rng(seed).uniform(-1, 1, size=(30, 4)), axis=1)[:, ::-1]
    score, _, d, _ = outliers(s)
    order = np.argsort(d)
    assert (np.diff(score[order]) <= 1e-12).all()


def test_a_dark_image_among_normal_ones_is_flagged_by_the_catalogs_own_spread():
    rng = np.random.default_rng(0)
    dark = np.concatenate([rng.normal(0.9, 0.03, size=200), [0.2]])
    score, flagged, cut = robust_scores(dark, side="low")
    assert flagged.tolist().count(True) == 1 and flagged[-1] and 0.2 < cut < 0.9


def test_class_imbalance_flags_the_rare_and_the_tiny():
    counts, score, flagged = class_imbalance(np.array(["a"] * 500 + ["b"] * 480 + ["c"] * 6 + ["d"] * 14), min_count=10)
    assert counts == {"a": 500, "b": 480, "c": 6, "d": 14}
    assert flagged == ["c", "d"] and score["a"] == 1.0  # c: under 10 items; d: under 0.1 / K of them
    assert class_imbalance(np.array(["a"] * 30 + ["b"] * 3), min_count=5)[2] == ["b"]


def test_non_iid_sees_a_catalog_sorted_by_cluster_and_not_a_shuffled_one():
    X = _cloud(400)
    labels = np.argmax(X @ _cloud(6, seed=5).T, axis=1)
    sorted_X = X[np.argsort(labels, kind="stable")]
    p_sorted, stat_sorted, score, flagged = non_iid(_graph(sorted_X).neighbors)
    p_shuffled, stat_shuffled, _, flagged2 = non_iid(_graph(X).neighbors)
    assert p_sorted < 0.05 < p_shuffled and stat_sorted > stat_shuffled
    assert flagged.sum() == 1 and score[flagged][0] == score.min() and not flagged2.any()


def test_a_clump_of_foreign_photos_is_far_from_every_class_though_the_knn_rule_misses_it():
    """Photos from another shop sit close to each other, so their k nearest are each other and the k-NN rule sees
    nothing; each is still far from every labelled class, whatever label it was given."""
    rng = np.random.default_rng(0)
    d = 16
    centres = 3 * rng.normal(size=(4, d))
    codes = rng.integers(4, size=400)
    X = centres[codes] + rng.normal(size=(400, d))
    foreign = 3 * rng.normal(size=d) + 6.0 + 0.1 * rng.normal(size=(12, d))  # one tight clump
    X = np.r_[X, foreign]
    codes = np.r_[codes, rng.integers(4, size=12)]  # labelled as if they belonged
    g = _graph(X / np.linalg.norm(X, axis=1, keepdims=True), k=10)
    _, knn_flagged, _, _ = outliers(g.similarities)
    assert not knn_flagged[400:].any()
    dist, nearest = class_distances(X, codes, 4)
    _, flagged, _ = robust_scores(dist, side="high")
    assert flagged[400:].all() and flagged[:400].mean() < 0.02
    assert set(nearest[:400] == codes[:400]) == {True}  # every clean row's nearest class is its own


def test_class_distances_hand_worked_with_identity_covariance():
    # two classes of two points each: means (0, 0) and (4, 0), residuals (+-1, 0) and (0, +-1): within-class
    # covariance diag(0.5, 0.5), which Ledoit-Wolf leaves as it is (already a multiple of the identity)
    X = np.array([[1.0, 0], [-1, 0], [4, 1], [4, -1], [2, 0]])
    codes = np.array([0, 0, 1, 1, -1])
    dist, nearest = class_distances(X, codes, 2, min_count=2)
    # (2, 0) is 2 from either mean: sqrt(4 / 0.5)
    assert dist[4] == pytest.approx(np.sqrt(8)) and dist[0] == pytest.approx(np.sqrt(2))
    assert nearest[:4].tolist() == [0, 0, 1, 1]
    # a class under min_count makes no mean; with none, nothing is scored
    d0, n0 = class_distances(X, codes, 2, min_count=3)
    assert np.isnan(d0).all() and (n0 == -1).all()
    with pytest.raises(InputError, match="codes"):
        class_distances(X, np.array([0, 0, 1, 1, 2]), 2)


@settings(max_examples=25, deadline=None)
@given(st.floats(1.0, 50.0), st.floats(0.1, 50.0))
def test_class_distance_grows_as_a_point_moves_away_from_every_class(start, step):
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + [5, 0, 0]]
    codes = np.r_[np.zeros(60, int), np.ones(60, int)]
    direction = np.array([0.0, 0.0, 1.0])  # away from both means alike
    probes = np.array([[2.5, 0, 0] + start * direction, [2.5, 0, 0] + (start + step) * direction])
    d, _ = class_distances(np.r_[X, probes], np.r_[codes, -1, -1], 2)
    assert d[-1] > d[-2]


def test_a_resized_copy_far_in_the_embedding_joins_its_original_by_its_pixels():
    X = _cloud()
    X[40] = X[5] + 0.06 * np.random.default_rng(2).normal(size=X.shape[1])  # a copy the resize moved far
    X[40] /= np.linalg.norm(X[40])
    g = _graph(X)
    assert 5 in g.neighbors[40]  # still a graph neighbour, but not near enough for the distance cut
    assert near_duplicates(g.neighbors, g.similarities).group[40] == -1
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 256, size=(len(X), 32), dtype=np.uint8)  # unrelated photos: about half the bits differ
    hashes[40] = hashes[5]
    hashes[40, 0] ^= 0b101  # two bits of 256 moved by the re-encoding
    measured = np.ones(len(X), bool)
    twins, cut, median = pixel_twins(g.neighbors, hashes, measured)
    assert 110 < median < 146 and cut == pytest.approx(0.13 * median)
    assert twins[40][g.neighbors[40] == 5].all() and twins.sum() == (g.neighbors[40] == 5).sum() + (g.neighbors[5] == 40).sum()
    r = near_duplicates(g.neighbors, g.similarities, witness=twins)
    assert r.group[40] == r.group[5] >= 0 and (r.group >= 0).sum() == 2
    # a row without a hash is never a twin
    measured[40] = False
    assert not pixel_twins(g.neighbors, hashes, measured)[0].any()
    with pytest.raises(InputError, match="witness"):
        near_duplicates(g.neighbors, g.similarities, witness=twins[:, :2])
