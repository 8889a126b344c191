from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simlabel.labels.smoothing import (
    CURRICULUM_SCHEDULES,
    SMOOTHING_KINDS,
    build_targets,
    clean_label_name,
    curriculum_alpha,
    embed_label_names,
    label_similarity,
    load_descriptions,
    nearest_labels,
    one_hot_targets,
    smoothing_weights,
    soft_targets,
    taxonomy_distance,
    taxonomy_targets,
)

# A hand-made similarity over 4 classes. With K = 2 the neighbours are
#   0: 1 (.8), 2 (.5)     1: 0 (.8), 3 (.6)     2: 0 (.5), 3 (.4)     3: 1 (.6), 2 (.4)
S4 = np.array(
    [
        [1.0, 0.8, 0.5, 0.2],
        [0.8, 1.0, 0.3, 0.6],
        [0.5, 0.3, 1.0, 0.4],
        [0.2, 0.6, 0.4, 1.0],
    ]
)
NBR4 = [[1, 2], [0, 3], [0, 3], [1, 2]]


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


def test_nearest_labels_of_hand_matrix() -> None:
    assert nearest_labels(S4, 2).tolist() == NBR4


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


def test_nearest_labels_ties_and_self() -> None:
    s = np.array(
        [
            [1.0, 0.3, 0.7, 0.3, 0.7],
            [0.3, 1.0, 0.2, 0.2, 0.2],
            [0.7, 0.2, 1.0, 0.9, 0.1],
            [0.3, 0.2, 0.9, 1.0, 0.9],
            [0.7, 0.2, 0.1, 0.9, 1.0],
        ]
    )
    full = [[2, 4, 1, 3], [0, 2, 3, 4], [3, 0, 1, 4], [2, 4, 0, 1], [3, 0, 1, 2]]
    for k in range(5):
        assert nearest_labels(s, k).tolist() == [r[:k] for r in full]
    # a tie across the cut: 1 and 3 both 0.3 for row 0, the lower index wins
    assert nearest_labels(s, 3)[0].tolist() == [2, 4, 1]
    assert nearest_labels(s, 99).shape == (5, 4)  # clipped to C - 1
    with_self = nearest_labels(s, 3, include_self=True)
    assert with_self.tolist() == [[i] + r[:2] for i, r in enumerate(full)]
    assert nearest_labels(s, 99, include_self=True).shape == (5, 5)
    # include_self puts i first even where another label is more similar than i itself
    odd = np.array([[0.1, 0.9], [0.9, 0.1]])
    assert nearest_labels(odd, 2, include_self=True).tolist() == [[0, 1], [1, 0]]
    assert nearest_labels(odd, 1).tolist() == [[1], [0]]
    assert nearest_labels(s, 0).shape == (5, 0)
    with pytest.raises(ValueError):
        nearest_labels(s[:3], 2)


def _reference_nearest(s: np.ndarray, k: int, include_self: bool) -> np.ndarray:
    out = []
    for i in range(len(s)):
        others = sorted((j for j in range(len(s)) if j != i), key=lambda j: (-s[i, j], j))
        out.append(([i] if include_self else []) + others)
    k = min(k, len(s) if include_self else len(s) - 1)
    return np.array([r[:k] for r in out], dtype=np.int64).reshape(len(s), k)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), c=st.integers(2, 25), include_self=st.booleans())
def test_nearest_labels_matches_sorted_reference(data, c: int, include_self: bool) -> None:
    # values from a small set, so ties are common (including across the k-th place)
    s = data.draw(hnp.arrays(np.float64, (c, c), elements=st.sampled_from([-0.5, 0.0, 0.25, 0.5, 1.0])))
    k = data.draw(st.integers(0, c + 1))
    assert np.array_equal(nearest_labels(s, k, include_self=include_self), _reference_nearest(s, k, include_self))


def test_nearest_labels_large_matches_argsort() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    s = label_similarity(x)
    s = np.round(s, 2)  # plenty of ties
    ref = np.argsort(-np.where(np.eye(400, dtype=bool), -np.inf, s), axis=1, kind="stable")[:, :20]
    assert np.array_equal(nearest_labels(s, 20), ref)


def test_label_similarity() -> None:
    x = np.array([[3.0, 4.0], [1.0, 0.0], [-2.0, 0.0]])
    s = label_similarity(x)
    assert s.dtype == np.float64 and s.shape == (3, 3)
    assert np.array_equal(s, s.T) and (np.diag(s) == 1).all()
    assert s[0, 1] == pytest.approx(0.6) and s[1, 2] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="zeros"):
        label_similarity(np.array([[1.0, 0.0], [0.0, 0.0]]))


# -- taxonomy ----------------------------------------------------------------------------------

TREE = [
    ("Apparel", "Topwear", "Tshirts"),  # 0
    ("Apparel", "Topwear", "Shirts"),  # 1 sibling of 0
    ("Apparel", "Bottomwear", "Jeans"),  # 2 cousin of 0 and 1
    ("Apparel", "Dresses"),  # 3 shallower
    ("Footwear", "Shoes", "Casual Shoes"),  # 4 other top level
    ("Accessories", "Watches"),  # 5
]


def test_taxonomy_distance_by_hand() -> None:
    d = taxonomy_distance(TREE)
    assert d.shape == (6, 6) and np.issubdtype(d.dtype, np.integer)
    assert (np.diag(d) == 0).all() and np.array_equal(d, d.T)
    assert d[0, 1] == 2  # siblings
    assert d[0, 2] == 4 and d[1, 2] == 4  # cousins
    assert d[0, 3] == 3 and d[2, 3] == 3  # Tshirts -> Topwear -> Apparel -> Dresses
    assert d[0, 4] == 6  # through the implicit root
    assert d[3, 5] == 4 and d[4, 5] == 5
    # a class may be an ancestor of another
    assert taxonomy_distance([("A",), ("A", "B"), ("A", "B", "C")]).tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]


def test_taxonomy_distance_errors() -> None:
    with pytest.raises(TypeError, match="sequence of levels"):
        taxonomy_distance(["Apparel/Topwear/Tshirts", "Apparel/Topwear/Shirts"])
    with pytest.raises(ValueError, match="same taxonomy path"):
        taxonomy_distance([("A", "x"), ("A", "y"), ("A", "x")])
    with pytest.raises(ValueError, match="empty"):
        taxonomy_distance([("A",), ()])


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


class RecordingEncoder:
    """A fake text encoder: remembers what it was asked to embed, returns unnormalised vectors."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts = list(texts)
        return np.array([[len(t), 1.0 + sum(map(ord, t)) % 7, 2.0] for t in texts])


def test_clean_and_embed_texts() -> None:
    assert clean_label_name("Tshirts") == "Tshirts"
    assert clean_label_name("casual_shoes") == "casual shoes"
    assert clean_label_name(" T-shirts__and--tops ") == "T shirts and tops"
    enc = RecordingEncoder()
    e = embed_label_names(["casual_shoes", "Tshirts", "Flip-Flops"], enc, descriptions={"Flip-Flops": " open sandals ", "other": "x"})
    assert enc.texts == ["casual shoes", "Tshirts", "Flip Flops: open sandals"]
    assert e.shape == (3, 3) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="twice"):
        embed_label_names(["a", "b", "a"], enc)
    with pytest.raises(ValueError, match="empty"):
        embed_label_names(["a", "__"], enc)
    with pytest.raises(ValueError, match="shape"):
        embed_label_names(["a", "b"], lambda texts: np.ones((1, 3)))


FASHION = ["Casual Shoes", "Sports Shoes", "Formal Shoes", "Tshirts", "Shirts", "Watches"]


@pytest.fixture(scope="module")
def minilm():
    from simlabel.encoders import get_text_encoder

    return get_text_encoder("minilm", "cpu")


def test_embed_fashion_names_with_minilm(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    e = embed_label_names(FASHION, minilm)
    assert e.shape == (6, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    s = label_similarity(e)
    nn = nearest_labels(s, 2)
    shoes = {0, 1, 2}
    for i in shoes:
        assert set(nn[i].tolist()) == shoes - {i}  # a shoe's two nearest are the other shoes
    assert FASHION[nn[3, 0]] == "Shirts" and FASHION[nn[4, 0]] == "Tshirts"
    t = build_targets("semantic", n_classes=6, similarity=s, neighbors=2)
    assert t[0, 3:].sum() == 0 and t[0, 1:3].sum() == pytest.approx(0.1)

    # descriptions change that label's embedding only
    d = embed_label_names(FASHION, minilm, descriptions={"Tshirts": "short-sleeved casual tops"})
    assert float(d[3] @ e[3]) < 0.99
    assert np.allclose(np.delete(d, 3, axis=0), np.delete(e, 3, axis=0), atol=1e-6)

    # a spec string goes through get_text_encoder with the device
    import simlabel.encoders as encoders

    calls = []
    monkeypatch.setattr(encoders, "get_text_encoder", lambda spec, device: (calls.append((spec, device)), minilm)[1])
    assert np.allclose(embed_label_names(FASHION[:2], "minilm", device="cpu"), e[:2], atol=1e-6)
    assert calls == [("minilm", "cpu")]


# -- descriptions file -------------------------------------------------------------------------


def test_load_descriptions(tmp_path: Path) -> None:
    p = tmp_path / "desc.csv"
    p.write_text("label,description,source\nTshirts, short-sleeved tops ,a\nWatches,,b\nCasual Shoes,everyday shoes,c\n")
    assert load_descriptions(p) == {"Tshirts": "short-sleeved tops", "Casual Shoes": "everyday shoes"}


def test_load_descriptions_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_descriptions(tmp_path / "nope.csv")
    p = tmp_path / "cols.csv"
    p.write_text("label,text\nTshirts,tops\n")
    with pytest.raises(ValueError, match=r"cols\.csv: missing column\(s\) description"):
        load_descriptions(p)
    p = tmp_path / "dup.csv"
    p.write_text("label,description\nTshirts,tops\nShirts,collared\nTshirts,tees\n")
    with pytest.raises(ValueError, match=r"dup\.csv: label 'Tshirts' is described twice \(lines 2, 4\)"):
        load_descriptions(p)
    p = tmp_path / "empty.csv"
    p.write_text("label,description\nTshirts,tops\n ,nothing\n")
    with pytest.raises(ValueError, match=r"empty\.csv, row 1 \(line 3\): empty label"):
        load_descriptions(p)


# -- the trainer-facing helpers ------------------------------------------------------------------


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
    with pytest.raises(ValueError, match="unknown smoothing"):
        SmoothingConfig(kind="label-noise")


def test_taxonomy_files_and_columns(tmp_path) -> None:
    import pandas as pd

    from simlabel.labels.io import LabelFileError
    from simlabel.labels.smoothing import read_taxonomy, taxonomy_from_columns, taxonomy_matrix

    (tmp_path / "t.csv").write_text("label,path\nTshirts,Apparel > Topwear > Tshirts\nShirts,Apparel > Topwear > Shirts\nWatches,Accessories > Watches\n")
    tax = read_taxonomy(tmp_path / "t.csv")
    assert tax["Tshirts"] == ("Apparel", "Topwear", "Tshirts")
    d = taxonomy_matrix(["Tshirts", "Shirts", "Watches"], tmp_path / "t.csv")
    assert d[0, 1] == 2 and d[0, 2] == 5
    with pytest.raises(ValueError, match="not in the taxonomy"):
        taxonomy_matrix(["Tshirts", "Socks"], tax)
    (tmp_path / "bad.csv").write_text("label,path\nA,X > A\nA,Y > A\n")
    with pytest.raises(LabelFileError, match="line 3"):
        read_taxonomy(tmp_path / "bad.csv")
    table = pd.DataFrame({"m": ["A", "A", "A", "B"], "s": ["x", "x", "y", "x"]})
    # each leaf takes its most frequent path
    assert taxonomy_from_columns(table, ["m", "s"]) == {"x": ("A", "x"), "y": ("A", "y")}
