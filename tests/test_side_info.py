"""Paper 003's sample weights: hand cases from the definitions, invariants, and a real slice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simlabel.labels.side_info import (
    SideInfoConfig,
    credit_matrix,
    extract_keywords,
    final_weights,
    keyword_match,
    neighbour_agreement,
    prediction_match,
    rank_weight,
    stage1_table,
    stage1_weights,
    text_match_score,
    weight_separation,
)

S3 = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 1.0]])
REL3 = np.array([[1], [0], [1]])  # each category's single nearest other category


# -- rank ------------------------------------------------------------------------------------------


def test_rank_weight_linear_by_hand() -> None:
    r = np.array([1, 2, 3, 4, 5])
    assert np.allclose(rank_weight(r, kind="linear", depth=5, floor=0.0), [1.0, 0.8, 0.6, 0.4, 0.2])
    # the floor lifts the curve: 0.5 + 0.5 f
    assert np.allclose(rank_weight(r, kind="linear", depth=5, floor=0.5), [1.0, 0.9, 0.8, 0.7, 0.6])
    # the default depth is the deepest rank given
    assert np.allclose(rank_weight(r, kind="linear", floor=0.0), [1.0, 0.8, 0.6, 0.4, 0.2])


def test_rank_weight_exp_dcg_none_and_missing_by_hand() -> None:
    assert rank_weight([3], kind="exp", depth=4, tau=0.5, floor=0.0)[0] == pytest.approx(np.exp(-1.0))
    assert np.allclose(rank_weight([1, 3, 7], kind="dcg", floor=0.0), [1.0, 0.5, 1 / 3])
    assert np.allclose(rank_weight([1, 50], kind="none"), [1.0, 1.0])
    # no rank = no side information = no penalty; per-item depths
    assert np.allclose(rank_weight([np.nan, 2, 2], kind="linear", depth=[1, 2, 4], floor=0.0), [1.0, 0.5, 0.75])


def test_rank_weight_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="1-based"):
        rank_weight([0, 1])
    with pytest.raises(ValueError, match="kind"):
        rank_weight([1], kind="sigmoid")
    with pytest.raises(ValueError, match="floor"):
        rank_weight([1], floor=1.5)


@settings(max_examples=60, deadline=None)
@given(
    ranks=arrays(np.float64, st.integers(2, 40), elements=st.floats(1, 500)),
    kind=st.sampled_from(["linear", "exp", "dcg"]),
    floor=st.floats(0, 1),
)
def test_rank_weight_is_bounded_and_never_rises_with_rank(ranks: np.ndarray, kind: str, floor: float) -> None:
    w = rank_weight(ranks, kind=kind, floor=floor, depth=500)
    assert (w >= floor - 1e-12).all() and (w <= 1 + 1e-12).all()
    order = np.argsort(ranks, kind="stable")
    assert (np.diff(w[order]) <= 1e-12).all()


# -- neighbours ------------------------------------------------------------------------------------


def test_credit_matrix_by_hand() -> None:
    g = credit_matrix(S3, REL3)
    assert np.allclose(g, [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.2, 1.0]])


def test_neighbour_agreement_by_hand() -> None:
    g = credit_matrix(S3, REL3)
    labels = np.array([0, 0, 1, 2])
    neighbors = np.array([[1, 2], [0, 3], [0, -1], [-1, -1]])
    a = neighbour_agreement(labels, neighbors, g)
    # item 0: neighbours labelled 0 (same: 1) and 1 (related: 0.8) -> 0.9
    # item 1: 0 (same) and 2 (unrelated: counts against) -> 0.5
    # item 2 (label 1): one neighbour labelled 0, related to 1 -> 0.8
    # item 3: no neighbour -> 1 (no evidence)
    assert np.allclose(a, [0.9, 0.5, 0.8, 1.0])
    # similarity-weighted: item 1's same-label neighbour weighs 3x the unrelated one -> 0.75
    w = np.array([[1.0, 1.0], [0.6, 0.2], [1.0, 0.0], [0.0, 0.0]])
    assert neighbour_agreement(labels, neighbors, g, neighbor_weights=w)[1] == pytest.approx(0.75)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 30),
    k=st.integers(1, 6),
    c=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_neighbour_agreement_is_in_unit_interval_and_one_for_pure_neighbourhoods(n: int, k: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    neighbors = rng.integers(-1, n, (n, k))
    s = rng.uniform(0, 1, (c, c))
    s = (s + s.T) / 2
    related = np.array([rng.permutation(c)[: max(c - 1, 1)] for _ in range(c)])
    g = credit_matrix(s, related)
    a = neighbour_agreement(labels, neighbors, g)
    assert ((a >= 0) & (a <= 1)).all()
    same = np.zeros(n, dtype=np.int64)
    assert np.allclose(neighbour_agreement(same, neighbors, g), 1.0)


def test_stage1_weights_by_hand() -> None:
    rw, a = np.array([1.0, 0.5, 0.2]), np.array([0.9, 0.5, 1.0])
    assert np.allclose(stage1_weights(rw, a), [0.9, 0.25, 0.2])
    assert np.allclose(stage1_weights(rw, a, combine="mean", rank_share=0.25), [0.925, 0.5, 0.8])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        stage1_weights(np.array([1.2]), np.array([0.5]))


# -- stage 2 ---------------------------------------------------------------------------------------


def test_prediction_match_by_hand() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    # top-2 renormalised: 7/9 and 2/9 on categories 0 and 1
    s = prediction_match(p, np.array([0, 2]), S3, top=2)
    assert s[0] == pytest.approx((0.7 * 1.0 + 0.2 * 0.8) / 0.9)  # an "apple" predicted apple / fruit: high
    assert s[1] == pytest.approx((0.7 * 0.1 + 0.2 * 0.2) / 0.9)  # labelled 2, predicted unrelated: low
    # all three classes: the plain expectation of S[y, .] under p
    assert prediction_match(p[:1], np.array([1]), S3, top=3)[0] == pytest.approx(0.7 * 0.8 + 0.2 * 1.0 + 0.1 * 0.2)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), c=st.integers(2, 8), top=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_prediction_match_bounds_and_certainty(n: int, c: int, top: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), n)
    y = rng.integers(0, c, n)
    s = rng.uniform(0, 1, (c, c))
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    m = prediction_match(p, y, s, top=top)
    assert ((m >= 0) & (m <= 1 + 1e-12)).all()
    certain = np.eye(c)[y]
    assert np.allclose(prediction_match(certain, y, s, top=top), 1.0)


def test_extract_keywords_by_hand() -> None:
    kw, vocab = extract_keywords(["Red red shirt", "the blue shoe 2012", "", "and the"], top=2)
    words = [[vocab[i] for i in row if i >= 0] for row in kw]
    assert words[0] == ["red", "shirt"]  # sublinear tf: "red" twice outweighs "shirt" once (same idf)
    assert sorted(words[1]) == ["blue", "shoe"]  # stop words and numbers are not keywords
    assert words[2] == [] and words[3] == []


def test_keyword_match_and_text_score_by_hand() -> None:
    # vocabulary: 0 "shirt", 1 "denim"; categories: 0 Shirts, 1 Jeans
    sim = np.array([[0.9, 0.1], [-0.2, 0.7]])
    kw = np.array([[0, 1], [1, -1], [-1, -1]])
    km = keyword_match(kw, np.array([0, 0, 1]), sim)
    assert km[0] == pytest.approx(0.9) and km[1] == pytest.approx(0.0) and np.isnan(km[2])
    s = text_match_score(np.array([0.5, 0.5, 0.4]), km, keyword_weight=0.3)
    assert np.allclose(s, [0.7 * 0.5 + 0.3 * 0.9, 0.35, 0.4])


def test_final_weights_and_separation() -> None:
    assert np.allclose(final_weights([0.5, 1.0], [0.5, 0.2]), [0.25, 0.2])
    assert np.allclose(final_weights([0.5, 1.0], [0.5, 0.2], "replace"), [0.5, 0.2])
    table = weight_separation({"w": np.array([0.9, 0.8, 0.1, 0.85])}, np.array([True, True, False, True]))
    row = table.iloc[0]
    assert row["auc"] == pytest.approx(1.0) and row["wrong n"] == 1 and row["correct mean"] == pytest.approx(0.85)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="rank_weight"):
        SideInfoConfig(rank_weight="steep")
    with pytest.raises(ValueError, match="stage2_folds"):
        SideInfoConfig(stage2_folds=1)


# -- a real slice: planted wrong labels get lower weights ------------------------------------------


@pytest.fixture(scope="module")
def fashion_embedded(tmp_path_factory, image_encoder):
    from simlabel.store import load_embeddings
    from tests.helpers import embedded_fashion_types

    tmp = tmp_path_factory.mktemp("fashion-weights")
    df = embedded_fashion_types(tmp, 2000, ["Tshirts", "Shirts", "Casual Shoes", "Watches", "Handbags", "Sunglasses"], 40,
                                image_encoder)
    ids, X = load_embeddings(tmp / "emb")
    df = df.set_index("id").loc[ids].reset_index()
    return df, X


def test_planted_wrong_labels_get_lower_weights_on_a_real_slice(fashion_embedded) -> None:
    df, X = fashion_embedded
    rng = np.random.default_rng(0)
    cats = sorted(df["article_type"].unique())
    truth = df["article_type"].to_numpy()
    wrong = rng.random(len(df)) < 0.25
    noisy = truth.copy()
    for i in np.flatnonzero(wrong):
        noisy[i] = rng.choice([c for c in cats if c != truth[i]])
    # wrong labels also sit deeper in the (simulated) search results
    rank = np.where(wrong, rng.integers(20, 41, len(df)), rng.integers(1, 41, len(df))).astype(float)
    s = np.eye(len(cats))
    s[cats.index("Tshirts"), cats.index("Shirts")] = s[cats.index("Shirts"), cats.index("Tshirts")] = 0.8
    related = np.array([[cats.index("Shirts")] if c == "Tshirts" else [cats.index("Tshirts")] if c == "Shirts"
                        else [(i + 1) % len(cats)] for i, c in enumerate(cats)])
    t = stage1_table(X, noisy, rank, cats, s, related, SideInfoConfig(knn=8))
    w = t["weight"].to_numpy()
    assert ((w >= 0) & (w <= 1)).all()
    assert w[wrong].mean() < 0.6 * w[~wrong].mean()
    assert t["agreement"][wrong].mean() < t["agreement"][~wrong].mean() - 0.3
    sep = weight_separation({"agreement": t["agreement"], "weight": w}, ~wrong).set_index("weight")
    assert sep.loc["weight", "auc"] > 0.85

    # stage 2 on top: out-of-fold predictions of a head trained with the stage-1 weights
    from simlabel.heads import HeadConfig
    from simlabel.labels.side_info import stage2_scores
    from simlabel.training import oof_predictor

    proba = oof_predictor(HeadConfig(max_epochs=40, patience=5), folds=3, seed=0, top=None)(X, noisy, w, cats)
    assert proba.shape == (len(df), len(cats)) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    s2 = stage2_scores(proba, noisy, cats, s, SideInfoConfig(keyword_weight=0.0))
    sep2 = weight_separation({"s": s2["score"]}, ~wrong).set_index("weight")
    assert s2["score"][wrong].mean() < 0.8 * s2["score"][~wrong].mean()
    assert sep2.loc["s", "auc"] > 0.7


def test_grouped_agreement_by_hand_and_equal_to_single_label_without_duplicates() -> None:
    g = credit_matrix(S3, REL3)
    # rows: image 0 labelled 0 and 2 (found by two queries), image 1 labelled 1, image 2 labelled 0
    labels = np.array([0, 2, 1, 0])
    groups = np.array([0, 0, 1, 2])
    nb_img = np.array([[1, 2], [0, 2], [0, 1]])
    a = neighbour_agreement(labels, nb_img, g, groups=groups)
    # row 0 (image 0, label 0): image 1 (label 1: G[0,1] = .8), image 2 (label 0: 1) -> .9
    # row 1 (image 0, label 2): image 1 (G[2,1] = .2), image 2 (G[2,0] = 0) -> .1
    # row 2 (image 1, label 1): image 0 has labels {0, 2}: (G[1,0] + G[1,2]) / 2 = .4; image 2: .8 -> .6
    # row 3 (image 2, label 0): image 0 {0, 2}: (1 + 0) / 2 = .5; image 1 (G[0,1] = .8) -> .65
    assert np.allclose(a, [0.9, 0.1, 0.6, 0.65])
    # one label per image: the grouped rule is the single-label rule
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 12)
    nb = np.array([rng.choice([j for j in range(12) if j != i], 3, replace=False) for i in range(12)])
    assert np.allclose(neighbour_agreement(y, nb, g, groups=np.arange(12)), neighbour_agreement(y, nb, g))


def test_stage1_table_never_counts_the_same_image_under_another_label() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 8)).astype(np.float32)
    # image "a" appears twice (two queries); its copy must not be its own neighbour
    Xr = np.vstack([X, X[:1]])
    ids = ["a", "b", "c", "d", "e", "f", "a"]
    labels = ["x", "x", "x", "y", "y", "y", "y"]
    t = stage1_table(Xr, labels, None, ["x", "y"], np.eye(2), np.array([[1], [0]]), SideInfoConfig(knn=2), ids=ids)
    first = [n.tolist() for n in t["neighbors"]]
    assert first[0] == first[6]  # the same image, the same neighbours
    assert all(0 not in nb for nb in first[:1])  # positions are over images; image 0 is "a" itself


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 15), c=st.integers(2, 8), top=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_prediction_match_from_top_predictions_equals_full_matrix(n: int, c: int, top: int, seed: int) -> None:
    from simlabel.metrics import top_k_predictions

    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), n)
    y = rng.integers(0, c, n)
    s = rng.uniform(0, 1, (c, c))
    idx = top_k_predictions(p, top)
    assert (np.diff(np.take_along_axis(p, idx, axis=1), axis=1) <= 0).all()  # largest first
    pair = (idx, np.take_along_axis(p, idx, axis=1))
    assert np.allclose(prediction_match(pair, y, s), prediction_match(p, y, s, top=top))


def test_stage1_approximate_indexes_agree_with_exact() -> None:
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(5, 32))
    y = np.repeat(np.arange(5), 200)
    X = (centers[y] + 0.3 * rng.normal(size=(1000, 32))).astype(np.float32)
    noisy = np.where(rng.random(1000) < 0.2, rng.integers(0, 5, 1000), y).astype(str)
    cats = [str(i) for i in range(5)]
    related = np.array([[(i + 1) % 5] for i in range(5)])
    exact = stage1_table(X, noisy, None, cats, np.eye(5), related, SideInfoConfig(index="flat"))["agreement"]
    for kind in ("ivf", "hnsw"):
        approx = stage1_table(X, noisy, None, cats, np.eye(5), related, SideInfoConfig(index=kind))["agreement"]
        assert np.abs(approx - exact).mean() < 0.02, kind
