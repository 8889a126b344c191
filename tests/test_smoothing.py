from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simlabel.labels.smoothing import (
    CURRICULUM_SCHEDULES,
    SMOOTHING_KINDS,
    build_targets,
    curriculum_alpha,
    one_hot_targets,
    smoothing_weights,
    soft_targets,
    taxonomy_targets,
)
from simlabel.semantics.names import nearest_labels
from simlabel.semantics.taxonomy import taxonomy_distance
from tests.helpers import NBR4, S4, TREE

# -- hand-computed rows ------------------------------------------------------------------------


def test_one_hot() -> None:
    assert np.array_equal(one_hot_targets(3), np.eye(3))
    assert np.array_equal(build_targets("none", n_classes=3, alpha=0.5), np.eye(3))


def test_uniform_rows_by_hand() -> None:
    t = build_targets("uniform", n_classes=4, alpha=0.1)
    for i in range(4):
        assert t[i, i] == 1 - 0.1 == 0.9
        others = np.delete(t[i], i)
        assert np.allclose(others, 0.1 / 3, rtol=1e-15, atol=0)
    assert np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    w = smoothing_weights("uniform", n_classes=4)
    assert np.array_equal(np.diag(w), np.zeros(4)) and np.allclose(w.sum(axis=1), 1)


def test_uniform_topk_rows_by_hand() -> None:
    t = build_targets("uniform-topk", n_classes=4, alpha=0.1, similarity=S4, neighbors=2)
    for i, nbr in enumerate(NBR4):
        expect = np.zeros(4)
        expect[i] = 0.9
        expect[nbr] = 0.05
        assert t[i, i] == 0.9
        assert np.allclose(t[i], expect, rtol=1e-15, atol=0)
        other = [j for j in range(4) if j != i and j not in nbr]
        assert (t[i, other] == 0).all()  # non-neighbours exactly 0
    assert np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_semantic_rows_by_hand() -> None:
    t = build_targets("semantic", n_classes=4, alpha=0.1, similarity=S4, neighbors=2)
    expect = np.array(
        [
            [0.9, 0.1 * 0.8 / 1.3, 0.1 * 0.5 / 1.3, 0.0],
            [0.1 * 0.8 / 1.4, 0.9, 0.0, 0.1 * 0.6 / 1.4],
            [0.1 * 0.5 / 0.9, 0.0, 0.9, 0.1 * 0.4 / 0.9],
            [0.0, 0.1 * 0.6 / 1.0, 0.1 * 0.4 / 1.0, 0.9],
        ]
    )
    assert np.allclose(t, expect, rtol=1e-14, atol=0)
    assert (np.diag(t) == 0.9).all()  # the true class keeps exactly 1 - alpha
    assert (t[expect == 0] == 0).all()  # non-neighbours exactly 0
    assert np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # approach 5 starts from approach 4
    assert np.array_equal(build_targets("semantic-curriculum", n_classes=4, alpha=0.1, similarity=S4, neighbors=2), t)


def test_semantic_negative_similarities_clip_and_fall_back() -> None:
    s = np.array(
        [
            [1.0, -0.2, -0.5],
            [-0.2, 1.0, 0.3],
            [-0.5, 0.3, 1.0],
        ]
    )
    w = smoothing_weights("semantic", similarity=s, neighbors=2)
    # row 0: both neighbours negative -> uniform over them
    assert w[0].tolist() == [0.0, 0.5, 0.5]
    # row 1: neighbours 2 (.3) and 0 (-.2 -> 0): all the mass on 2, none on 0
    assert w[1].tolist() == [0.0, 0.0, 1.0]
    assert w[2].tolist() == [0.0, 1.0, 0.0]
    # a single neighbour of similarity exactly 0 also falls back
    z = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert smoothing_weights("semantic", similarity=z, neighbors=1).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_neighbors_clipped_and_errors() -> None:
    t = build_targets("uniform-topk", n_classes=4, alpha=0.1, similarity=S4, neighbors=20)
    assert np.allclose(t, build_targets("uniform", n_classes=4, alpha=0.1), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="similarity"):
        build_targets("semantic", n_classes=4)
    with pytest.raises(ValueError, match="similarity"):
        build_targets("uniform-topk", n_classes=4)
    with pytest.raises(ValueError, match="taxonomy"):
        build_targets("taxonomy", n_classes=4)
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        build_targets("semantic", n_classes=3, similarity=S4)
    with pytest.raises(ValueError, match="unknown smoothing kind"):
        build_targets("label-smoothing", n_classes=4)
    with pytest.raises(ValueError, match="alpha"):
        build_targets("uniform", n_classes=4, alpha=1.5)
    with pytest.raises(ValueError, match="neighbors"):
        smoothing_weights("semantic", similarity=S4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        smoothing_weights("uniform", n_classes=1)
    with pytest.raises(ValueError, match="rows summing to 1"):
        soft_targets(np.eye(2) * 0.5, 0.1)


# -- nearest labels ----------------------------------------------------------------------------


def test_taxonomy_targets_by_hand() -> None:
    d = taxonomy_distance([("A", "x"), ("A", "y"), ("B", "z")])
    assert d.tolist() == [[0, 2, 4], [2, 0, 4], [4, 4, 0]]
    t = taxonomy_targets(d, 1.0)
    z = 1 + math.exp(-2) + math.exp(-4)
    assert np.allclose(t[0], [1 / z, math.exp(-2) / z, math.exp(-4) / z], rtol=1e-14, atol=0)
    z2 = 1 + 2 * math.exp(-4)
    assert np.allclose(t[2], [math.exp(-4) / z2, math.exp(-4) / z2, 1 / z2], rtol=1e-14, atol=0)
    assert np.allclose(t.sum(axis=1), 1, rtol=0, atol=1e-15)
    assert np.array_equal(build_targets("taxonomy", n_classes=3, taxonomy=d, beta=1.0), t)
    # stable for huge beta and distances, uniform for beta = 0
    big = taxonomy_targets(taxonomy_distance(TREE) * 1000, 50.0)
    assert np.isfinite(big).all() and np.allclose(big, np.eye(6))
    assert np.allclose(taxonomy_targets(d, 0.0), 1 / 3)
    with pytest.raises(ValueError, match="zero diagonal"):
        taxonomy_targets(d + 1, 1.0)


paths_strategy = st.lists(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=4).map(tuple), min_size=2, max_size=20, unique=True
)


@settings(max_examples=50, deadline=None)
@given(paths=paths_strategy, beta=st.floats(0.01, 20))
def test_taxonomy_properties(paths, beta: float) -> None:
    d = taxonomy_distance(paths)
    assert np.array_equal(d, d.T) and (np.diag(d) == 0).all()
    assert (d[~np.eye(len(paths), dtype=bool)] >= 1).all()
    # a tree metric: the triangle inequality holds
    assert (d[:, None, :] <= d[:, :, None] + d[None, :, :]).all()
    t = taxonomy_targets(d, beta)
    assert (t >= 0).all() and np.allclose(t.sum(axis=1), 1, rtol=0, atol=1e-12)
    off = np.where(np.eye(len(paths), dtype=bool), -np.inf, t)
    assert (np.diag(t) > off.max(axis=1)).all()  # the true class keeps the most mass


# -- curriculum --------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", CURRICULUM_SCHEDULES)
def test_curriculum_shapes(schedule: str) -> None:
    alpha, n, warm = 0.1, 10, 2
    a = [curriculum_alpha(e, n, alpha, schedule=schedule, warmup=warm) for e in range(n + 2)]
    assert a[: warm + 1] == [alpha] * (warm + 1)  # held through the warmup, then annealing starts at alpha
    assert all(x >= y for x, y in zip(a, a[1:]))
    assert a[n - 1] == 0.0 and a[n] == 0.0 and a[n + 1] == 0.0
    assert 0 < a[warm + 1] <= alpha if schedule != "step" else a[warm + 1] == alpha


def test_curriculum_values_by_hand() -> None:
    # n = 10, warmup 2: annealing over epochs 2..9, span 7
    assert curriculum_alpha(5, 10, 0.1, warmup=2) == pytest.approx(0.1 * 4 / 7)
    assert curriculum_alpha(5, 10, 0.1, schedule="cosine", warmup=2) == pytest.approx(0.05 * (1 + math.cos(math.pi * 3 / 7)))
    assert [curriculum_alpha(e, 10, 0.1, schedule="step", warmup=2) for e in range(10)] == [0.1] * 6 + [0.0] * 4
    assert curriculum_alpha(4, 10, 0.1, schedule="exp", warmup=2) == pytest.approx(0.1 * 0.5 ** (2 / 1.4))
    assert curriculum_alpha(0, 1, 0.1) == 0.1  # a single epoch keeps alpha
    # a warmup reaching the end holds alpha until the last epoch
    assert [curriculum_alpha(e, 4, 0.2, warmup=10) for e in range(4)] == [0.2, 0.2, 0.2, 0.0]
    with pytest.raises(ValueError, match="schedule"):
        curriculum_alpha(0, 10, 0.1, schedule="sigmoid")


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 40),
    warmup=st.integers(0, 45),
    alpha=st.floats(0, 1),
    schedule=st.sampled_from(CURRICULUM_SCHEDULES),
)
def test_curriculum_properties(n: int, warmup: int, alpha: float, schedule: str) -> None:
    a = [curriculum_alpha(e, n, alpha, schedule=schedule, warmup=warmup) for e in range(n)]
    assert a[0] == alpha
    assert all(0 <= y <= x for x, y in zip(a, a[1:]))
    if n > 1:
        assert a[-1] == 0.0
        assert a[min(warmup, n - 2)] == alpha


# -- properties over random similarity matrices ------------------------------------------------


@st.composite
def similarity_case(draw):
    c = draw(st.integers(2, 30))
    raw = draw(hnp.arrays(np.float64, (c, c), elements=st.floats(-1, 1, allow_subnormal=False)))
    s = (raw + raw.T) / 2
    np.fill_diagonal(s, 1.0)
    k = draw(st.integers(1, c - 1))
    alpha = draw(st.floats(0, 1))
    return s, k, alpha


@settings(max_examples=100, deadline=None)
@given(case=similarity_case())
def test_targets_properties(case) -> None:
    s, k, alpha = case
    c = len(s)
    nbr = nearest_labels(s, k)
    is_nbr = np.zeros((c, c), dtype=bool)
    is_nbr[np.arange(c)[:, None], nbr] = True
    for kind in SMOOTHING_KINDS:
        if kind == "taxonomy":
            continue
        t = build_targets(kind, n_classes=c, alpha=alpha, similarity=s, neighbors=k)
        assert t.shape == (c, c) and t.dtype == np.float64
        assert (t >= 0).all()
        assert np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        if kind == "none":
            assert np.array_equal(t, np.eye(c))
            continue
        assert (np.diag(t) == 1 - alpha).all()
        if kind != "uniform":
            off = ~is_nbr & ~np.eye(c, dtype=bool)
            assert (t[off] == 0).all()
    # semantic weights follow the neighbour order (more similar, at least as much mass)
    w = smoothing_weights("semantic", similarity=s, neighbors=k)
    along = w[np.arange(c)[:, None], nbr]
    assert (np.diff(along, axis=1) <= 1e-15).all()
    assert (np.diag(w) == 0).all() and np.allclose(w.sum(axis=1), 1, rtol=0, atol=1e-12)


# -- label names -------------------------------------------------------------------------------


def test_target_schedule_kinds() -> None:
    from simlabel.labels.smoothing import SmoothingConfig, target_schedule

    classes = ["a", "b", "c", "d"]
    sim = np.array([[1, 0.9, 0.1, 0.0], [0.9, 1, 0.2, 0.1], [0.1, 0.2, 1, 0.8], [0.0, 0.1, 0.8, 1]])
    assert target_schedule(classes, SmoothingConfig(kind="none")) is None
    t = target_schedule(classes, SmoothingConfig(kind="semantic", alpha=0.2, neighbors=1), similarity=sim)
    assert np.allclose(t[0], [0.8, 0.2, 0, 0]) and np.allclose(t[2], [0, 0, 0.8, 0.2])
    f = target_schedule(classes, SmoothingConfig(kind="semantic-curriculum", alpha=0.2, neighbors=1, curriculum_epochs=5), similarity=sim)
    assert np.allclose(f(0), t) and np.allclose(f(4), np.eye(4)) and np.allclose(f(100), np.eye(4))
    tax = {"a": ("X", "a"), "b": ("X", "b"), "c": ("Y", "c"), "d": ("Y", "d")}
    tt = target_schedule(classes, SmoothingConfig(kind="taxonomy", taxonomy=tax, beta=1.0))
    assert np.allclose(tt.sum(axis=1), 1) and tt[0, 1] > tt[0, 2]
    with pytest.raises(ValueError, match="needs a taxonomy"):
        target_schedule(classes, SmoothingConfig(kind="taxonomy"))
    with pytest.raises(ValueError, match="smoothing must be one of"):
        SmoothingConfig(kind="label-noise")
