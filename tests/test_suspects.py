"""Suspected label errors: hand cases from the definitions, invariants, near-duplicates, a real slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.errors import InputError
from simlabel.labels.suspects import (
    SuspectsConfig,
    clean_given_noisy,
    duplicate_groups,
    estimate_noise_transition,
    find_suspects,
    knn_votes,
    rank_flags,
)
from simlabel.store import Embeddings

# -- cores by hand ---------------------------------------------------------------------------------


def test_knn_votes_by_hand():
    codes = np.array([0, 0, 1, 1])
    nb = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    sim = np.array([[0.9, 0.3], [0.9, 0.6], [0.8, 0.2], [0.8, 0.4]])
    v = knn_votes(codes, nb, sim, 2)
    # row 0: label 0 from row 1 (0.9), label 1 from row 2 (0.3) -> [0.75, 0.25]
    # row 1: 0.9 for 0, 0.6 for 1 -> [0.6, 0.4]; row 2: 0.8 for 1, 0.2 for 0 -> [0.2, 0.8]
    assert np.allclose(v, [[0.75, 0.25], [0.6, 0.4], [0.2, 0.8], [1 / 3, 2 / 3]])
    assert np.allclose(knn_votes(codes, nb, sim, 2, weighting="uniform"), [[0.5, 0.5]] * 4)


def test_a_near_duplicate_group_votes_once_and_never_for_its_members():
    # rows 0, 1, 2: one product photographed three times (labels 1, 1, 0); row 3 (label 0) and row 4 (label 0)
    codes = np.array([1, 1, 0, 0, 0])
    groups = np.array([0, 0, 0, 1, 2])
    nb = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 4], [0, 1, 4], [0, 3, 2]])
    sim = np.array([[0.99, 0.99, 0.5], [0.99, 0.99, 0.5], [0.99, 0.99, 0.4], [0.7, 0.6, 0.5], [0.8, 0.5, 0.4]])
    v = knn_votes(codes, nb, sim, 2, groups=groups)
    # rows 0-2 see their own group (skipped) and one outsider each: all of it for label 0
    assert np.allclose(v[:3], [[1, 0]] * 3)
    # row 3: the group once (0.7, labels {1: 2/3, 0: 1/3}), row 4 (0.5, label 0):
    # label 0: 0.7/3 + 0.5 = 0.7333, label 1: 0.4667, over 1.2
    assert np.allclose(v[3], [(0.7 / 3 + 0.5) / 1.2, (0.7 * 2 / 3) / 1.2])
    # row 4: the group at its best similarity (0.8; rows 0 and 2 count once), row 3 (0.5)
    assert np.allclose(v[4], [(0.8 / 3 + 0.5) / 1.3, (0.8 * 2 / 3) / 1.3])
    # without groups, rows 0 and 1 would each be counted
    assert not np.allclose(knn_votes(codes, nb, sim, 2)[3], v[3])


def test_duplicate_groups_by_hand():
    nb = np.array([[1, 2], [0, 2], [3, 1], [2, 0], [0, -1]])
    sim = np.array([[0.99, 0.5], [0.99, 0.4], [0.985, 0.3], [0.985, 0.2], [0.6, 0.0]])
    g = duplicate_groups(nb, sim, 0.98)
    assert g[0] == g[1] and g[2] == g[3] and g[0] != g[2] and len(set(g)) == 3
    assert duplicate_groups(nb, sim, None).tolist() == [0, 1, 2, 3, 4]


def test_rank_flags_and_clean_given_noisy_by_hand():
    codes = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    # class 0: round(3 * 1/3) = 1 lowest (row 1); class 1: round(2 * 0.5) = 1 (row 3)
    assert rank_flags(codes, scores, np.array([2 / 3, 0.5])).tolist() == [False, True, False, True, False]
    assert rank_flags(codes, scores, np.array([1.0, 1.0])).sum() == 0
    T = np.array([[0.8, 0.2], [0.1, 0.9]])
    p = np.array([0.5, 0.5])
    # P(y=0 | noisy 0) = 0.5 * 0.8 / (0.5 * 0.8 + 0.5 * 0.1)
    assert np.allclose(clean_given_noisy(T, p), [0.4 / 0.45, 0.45 / 0.55])


def test_hoc_recovers_a_known_transition_matrix():
    rng = np.random.default_rng(0)
    T = np.array([[0.8, 0.15, 0.05], [0.1, 0.85, 0.05], [0.05, 0.05, 0.9]])
    n = 30000
    true = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    noisy = np.array([rng.choice(3, p=T[t]) for t in true])
    # 2-NN clusterability: each row's two neighbours share its true class
    by_class = [np.flatnonzero(true == c) for c in range(3)]
    nn2 = np.stack([rng.choice(by_class[t], 2) for t in true])
    T_hat, p_hat = estimate_noise_transition(noisy, nn2, 3, steps=1500)
    assert np.abs(T_hat - T).max() < 0.03 and np.abs(p_hat - [0.5, 0.3, 0.2]).max() < 0.03


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 40), k=st.integers(1, 6), c=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_votes_are_shares_and_a_pure_neighbourhood_votes_for_its_label(n, k, c, seed):
    rng = np.random.default_rng(seed)
    k = min(k, n - 1)
    codes = rng.integers(0, c, n)
    nb = np.stack([rng.choice([j for j in range(n) if j != i], k, replace=False) for i in range(n)])
    nb[rng.random(nb.shape) < 0.1] = -1
    sim = rng.uniform(0.01, 1, nb.shape)
    v = knn_votes(codes, nb, sim, c)
    assert ((v >= 0) & (v <= 1 + 1e-12)).all()
    voted = (nb >= 0).any(axis=1)
    assert np.allclose(v[voted].sum(1), 1) and np.allclose(v[~voted], 0)
    same = np.zeros(n, dtype=np.int64)
    assert np.allclose(knn_votes(same, nb, sim, c)[voted, 0], 1)
    # flags never exceed the quota of their class
    flags = rank_flags(codes, v[np.arange(n), codes], np.full(c, 0.7))
    for cl in range(c):
        assert flags[codes == cl].sum() == np.rint((codes == cl).sum() * (1 - 0.7))


# -- the method ------------------------------------------------------------------------------------


def _clusters(n_per: int = 60, c: int = 3, d: int = 16, seed: int = 0) -> tuple[Embeddings, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 4
    y = np.repeat(np.arange(c), n_per)
    X = (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Embeddings(np.array([f"p{i}" for i in range(len(y))], dtype=object), X, {"path": "mem", "model": "t"}), y


def test_find_suspects_flags_planted_errors_and_explains_them(tmp_path: Path):
    e, y = _clusters()
    names = np.array(["bag", "hat", "shoe"])
    noisy = y.copy()
    wrong = np.array([3, 70, 150])
    noisy[wrong] = (y[wrong] + 1) % 3
    labels = pd.DataFrame({"id": e.ids, "label": names[noisy]})
    for mode in ("vote", "rank"):
        found = find_suspects(e, labels, SuspectsConfig(k=8, mode=mode), out=tmp_path / f"s-{mode}.csv")
        s = found.labels
        assert set(e.ids[wrong]) <= set(s["id"]), mode
        top = s.set_index("id").loc[e.ids[wrong]]
        assert (top["suggested"].to_numpy() == names[y[wrong]]).all()  # the true label is suggested
        assert (top["method"] == "knn").all() and (top["score"] < 0.5).all()
        assert s["rank"].tolist() == list(range(1, len(s) + 1))
        # the explanation: the nearest labelled neighbours, their labels and similarities
        row = top.iloc[0]
        assert len(row["neighbor_ids"].split("|")) == 5 and set(row["neighbor_labels"].split("|")) <= set(names)
        assert pd.read_csv(tmp_path / f"s-{mode}.csv")["id"].tolist() == s["id"].tolist()
    assert found.summary["noise_rate_estimate"] < 0.15
    everything = find_suspects(e, labels, SuspectsConfig(k=8, mode="vote"), all_items=True).labels
    assert len(everything) == len(e.ids) and everything["rank"].isna().sum() == len(e.ids) - everything["rank"].notna().sum()
    # only the new items are checked; every labelled item still votes (so the votes are those of the whole file)
    new = list(e.ids[60:])
    some = find_suspects(e, labels, SuspectsConfig(k=8, mode="vote"), only=new)
    assert set(some.labels["id"]) == set(e.ids[[70, 150]]) and some.summary["n_checked"] == len(new)
    whole = find_suspects(e, labels, SuspectsConfig(k=8, mode="vote")).labels.set_index("id")
    assert (some.labels.set_index("id")["score"] == whole.loc[some.labels["id"], "score"]).all()
    assert some.labels["rank"].tolist() == [1, 2]
    checked = find_suspects(e, labels, SuspectsConfig(k=8, mode="vote"), only=new, all_items=True).labels
    assert sorted(checked["id"]) == sorted(new)


def test_conflicting_duplicates_are_suspects_of_their_own():
    e, y = _clusters(seed=1)
    names = np.array(["bag", "hat", "shoe"])
    X = e.matrix.copy()
    # item 5 photographed twice more (near-identical vectors), one copy labelled otherwise
    X = np.vstack([X, X[5:6] + 2e-4, X[5:6] - 2e-4])
    ids = np.array([f"p{i}" for i in range(len(X))], dtype=object)
    lab = np.concatenate([names[y], [names[y[5]], names[(y[5] + 1) % 3]]])
    e2 = Embeddings(ids, X / np.linalg.norm(X, axis=1, keepdims=True), {"path": "mem", "model": "t"})
    # (the clusters are tight: pairs of distinct items reach 0.98, so near-identical means 0.9999 here)
    cfg = SuspectsConfig(k=8, mode="vote", duplicate_threshold=0.9999)
    found = find_suspects(e2, pd.DataFrame({"id": ids, "label": lab}), cfg, all_items=True)
    r = found.labels.set_index("id")
    assert r.loc[ids[-1], "method"] in ("duplicates", "knn") and r.loc[ids[-1], "suggested"] == names[y[5]]
    assert found.summary["n_duplicate_groups"] == 1 and found.summary["n_duplicate_conflicts"] == 1
    assert r.loc[ids[-2], "method"] == "" and r.loc[ids[5], "method"] == ""  # the majority copies are fine
    off = find_suspects(e2, pd.DataFrame({"id": ids, "label": lab}), SuspectsConfig(k=8, mode="vote", duplicate_threshold=None)).labels
    assert "duplicates" not in set(off["method"])


def test_find_suspects_errors_name_the_problem():
    e, y = _clusters()
    with pytest.raises(InputError, match="at least 2 classes"):
        find_suspects(e, pd.DataFrame({"id": e.ids, "label": "bag"}))
    with pytest.raises(InputError, match="needs a predictor"):
        find_suspects(e, pd.DataFrame({"id": e.ids, "label": y.astype(str)}), SuspectsConfig(method="cleanlab"))
    with pytest.raises(InputError, match="method must be one of"):
        SuspectsConfig(method="magic")
    from simlabel.errors import MissingIdsError

    with pytest.raises(MissingIdsError, match="nope"):
        find_suspects(e, pd.DataFrame({"id": ["nope", "p1", "p2"], "label": ["a", "b", "a"]}))


def test_the_graph_gives_the_same_suspects():
    from simlabel.graph import GraphConfig, build_graph

    e, y = _clusters(seed=2)
    noisy = y.copy()
    noisy[[1, 2, 90]] = 2
    labels = pd.DataFrame({"id": e.ids[::2], "label": noisy[::2].astype(str)})  # half the store labelled
    g = build_graph(e, None, GraphConfig(k=20), progress=False)
    direct = find_suspects(e, labels, SuspectsConfig(k=6, index="flat"))
    via = find_suspects(e, labels, SuspectsConfig(k=6), graph=g)
    pd.testing.assert_frame_equal(direct.labels, via.labels)
    assert direct.summary == via.summary


# -- a real slice ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_noisy(tmp_path_factory, image_encoder):
    from tests.helpers import embedded_fashion_types

    tmp = tmp_path_factory.mktemp("suspects")
    df = embedded_fashion_types(tmp, 3000, ["Tshirts", "Casual Shoes", "Watches", "Handbags", "Sunglasses", "Jeans"], 50,
                                image_encoder)
    from simlabel.labels.sample import flip_labels

    noisy, wrong = flip_labels(df["article_type"].to_numpy(), 0.15, seed=0)
    pd.DataFrame({"id": df["id"], "label": noisy}).to_csv(tmp / "noisy.csv", index=False)
    return tmp, df["id"].astype(str).to_numpy()[wrong]


def test_planted_noise_on_a_real_slice_knn_and_cleanlab(fashion_noisy):
    from simlabel.heads import HeadConfig
    from simlabel.training import oof_predictor

    tmp, wrong = fashion_noisy
    assert len(wrong) > 20

    def pr(s: pd.DataFrame) -> tuple[float, float]:
        hit = np.isin(s["id"].astype(str), wrong)
        return hit.mean(), hit.sum() / len(wrong)

    knn_p, knn_r = pr(find_suspects(tmp / "emb", tmp / "noisy.csv", SuspectsConfig(k=10)).labels)
    predictor = oof_predictor(HeadConfig(head="mlp", max_epochs=60, patience=6), folds=3, seed=0, top=None)
    both = find_suspects(tmp / "emb", tmp / "noisy.csv", SuspectsConfig(method="both", k=10), predictor=predictor).labels
    cl_p, cl_r = pr(both[both["method"].isin(["cleanlab", "knn+cleanlab"])])
    # on these studio photos, training-free votes find the planted flips as well as cleanlab's trained heads
    assert knn_r > 0.85 and knn_p > 0.5, (knn_p, knn_r)
    assert cl_r > 0.5 and knn_r >= cl_r - 0.05, (cl_p, cl_r, knn_r)
    inter = both[both["method"] == "knn+cleanlab"]
    assert len(inter) and np.isin(inter["id"].astype(str), wrong).mean() >= knn_p  # agreeing flags are the surest
    assert "cleanlab_score" in both.columns


def test_cli_suspects_with_its_page(fashion_noisy, tmp_path: Path):
    from typer.testing import CliRunner

    from simlabel.cli import app
    from tests.helpers import check_page

    tmp, wrong = fashion_noisy
    res = CliRunner().invoke(app, ["suspects", "--emb", str(tmp / "emb"), "--labels", str(tmp / "noisy.csv"),
                                   "--out", str(tmp_path / "s.csv"), "--html", str(tmp_path / "s.html"),
                                   "--catalog", str(tmp / "catalog.csv"), "--mode", "vote"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "labels suspected (knn" in out and "top suspects" in out
    s = pd.read_csv(tmp_path / "s.csv", dtype={"id": str})
    assert list(s.columns[:6]) == ["id", "label", "suggested", "score", "rank", "method"]
    facts = check_page(tmp_path / "s.html", tmp_path / "shots")
    assert facts["images"] > 10 and facts["missing"] == 0
    # the table and its page are one output set, as every label job writes its files
    manifest = json.loads((tmp_path / "s.csv.summary.json").read_text())
    assert {Path(m).name for m in manifest["members"]} == {"s.csv", "s.html"}
    assert manifest["summary"]["n_suspects"] == int(s["rank"].notna().sum())
    res = CliRunner().invoke(app, ["suspects", "--emb", str(tmp / "emb"), "--labels", str(tmp / "catalog.csv"),
                                   "--label-col", "nope", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "nope" in res.output
