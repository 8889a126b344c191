from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.labels.augment import (
    augment,
    augment_positions,
    root_seeds,
    split_holdout,
)


def graph_knn(neighbours: dict[int, list[int]]):
    """A knn function over a hand-made directed graph; similarity falls with rank."""

    def knn(positions: np.ndarray, k: int):
        pos = np.array([neighbours[int(p)][:k] for p in positions], dtype=np.int64)
        sims = np.tile(np.linspace(0.9, 0.5, k, dtype=np.float32), (len(positions), 1))
        return pos, sims

    return knn


# positions 0..9; P_0 = {0}, N_0 = {5}; 9 is held out; k = 2
TOY = {0: [1, 2], 1: [3, 0], 2: [4, 9], 3: [0, 1], 4: [6, 7], 5: [6, 8], 6: [4, 5], 7: [8, 4], 8: [5, 7], 9: [2, 0]}


def test_toy_graph_shrink_rule_by_hand() -> None:
    calls = []
    knn = graph_knn(TOY)
    res = augment_positions(lambda p, k: (calls.append(sorted(p.tolist())), knn(p, k))[1], 10, [np.array([0]), np.array([5])], k=2, holdout=np.array([9]))
    # step 1: P'={1,2}, N'={6,8}            -> P_1={1,2}, N_1={6,8}     (grew: go on)
    # step 2: P'={3,4,9}, N'={4,7}; 4 is contested, 9 held out -> P_2={3}, N_2={7} (shrank: stop, kept)
    assert res.stop_reason == "shrink" and res.n_steps == 2
    assert res.sizes.tolist() == [[1, 1], [2, 2], [1, 1]]
    assert res.conflicts.tolist() == [0, 0, 1]
    assert sorted(np.flatnonzero(res.label == 0)) == [0, 1, 2, 3]
    assert sorted(np.flatnonzero(res.label == 1)) == [5, 6, 7, 8]
    assert res.label[4] == -1 and res.label[9] == -1
    assert res.step.tolist() == [0, 1, 1, 2, -1, 0, 1, 2, 1, -1]
    assert res.via[[1, 2, 3, 6, 7, 8]].tolist() == [0, 0, 1, 5, 8, 5]
    # only each step's frontier was queried
    assert calls == [[0], [5], [1, 2], [6, 8]]


def test_toy_graph_grow_rule_as_printed() -> None:
    res = augment_positions(graph_knn(TOY), 10, [np.array([0]), np.array([5])], k=2, holdout=np.array([9]), stop="grow")
    # step 1 already grows (1 -> 2): stop there, step 1 kept
    assert res.stop_reason == "grow" and res.n_steps == 1
    assert sorted(np.flatnonzero(res.label == 0)) == [0, 1, 2]
    assert sorted(np.flatnonzero(res.label == 1)) == [5, 6, 8]


def test_contested_point_can_be_labeled_later() -> None:
    g = {0: [2, 4], 1: [2, 5], 2: [0, 1], 4: [2, 6], 5: [7, 8], 6: [4, 2], 7: [5, 8], 8: [7, 5]}
    res = augment_positions(graph_knn(g), 9, [np.array([0]), np.array([1])], k=2, max_steps=2)
    # step 1: both reach 2 -> unlabeled; step 2: only P reaches it again -> P
    assert res.conflicts.tolist() == [0, 1, 0]
    assert res.label[2] == 0 and res.step[2] == 2 and res.via[2] == 4
    assert res.stop_reason == "max_steps"


def test_three_classes_and_exhaustion() -> None:
    g = {0: [3], 1: [3], 2: [4], 3: [0], 4: [5], 5: [4], 6: [6]}
    res = augment_positions(graph_knn(g), 7, [np.array([0]), np.array([1]), np.array([2])], k=1)
    # 3 is reached by classes 0 and 1 -> unlabeled, and class 0/1 frontiers shrink to 0 -> stop
    assert res.label[3] == -1 and res.label[4] == 2
    assert res.stop_reason == "shrink"


def test_seed_validation() -> None:
    knn = graph_knn(TOY)
    with pytest.raises(ValueError, match="two classes"):
        augment_positions(knn, 10, [np.array([0]), np.array([0])])
    with pytest.raises(ValueError, match="holdout"):
        augment_positions(knn, 10, [np.array([0]), np.array([5])], holdout=np.array([5]))
    with pytest.raises(ValueError, match="stop"):
        augment_positions(knn, 10, [np.array([0])], stop="never")


def brute_knn(X: np.ndarray):
    sims_all = X @ X.T
    np.fill_diagonal(sims_all, -np.inf)

    def knn(positions, k):
        s = sims_all[positions]
        # stable order: by similarity, then by position
        order = np.lexsort((np.tile(np.arange(s.shape[1]), (len(s), 1)), -s), axis=1)[:, :k]
        return np.take_along_axis(s, order, 1).astype(np.float32), order.astype(np.int64)

    return knn


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(12, 60),
    k=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    stop=st.sampled_from(["shrink", "grow"]),
    n_classes=st.integers(2, 3),
)
def test_properties(n: int, k: int, seed: int, stop: str, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    perm = rng.permutation(n)
    seeds = [perm[2 * c : 2 * c + 2] for c in range(n_classes)]
    holdout = perm[2 * n_classes : 2 * n_classes + 3]
    knn = brute_knn(X)
    res = augment_positions(knn, n, seeds, k=k, holdout=holdout, stop=stop, max_steps=20)
    again = augment_positions(knn, n, seeds, k=k, holdout=holdout, stop=stop, max_steps=20)
    assert np.array_equal(res.label, again.label) and np.array_equal(res.via, again.via)  # deterministic
    assert (res.label[holdout] == -1).all()  # holdout never labeled
    for c, s in enumerate(seeds):  # seeds kept, at step 0
        assert (res.label[s] == c).all() and (res.step[s] == 0).all()
    lab = res.labeled_positions()
    aug = lab[res.step[lab] > 0]
    # via is a point of the previous step, of the same class, and lists the point as a neighbour
    assert (res.step[res.via[aug]] == res.step[aug] - 1).all()
    assert (res.label[res.via[aug]] == res.label[aug]).all()
    _, nbrs = knn(res.via[aug], k)
    assert (nbrs == aug[:, None]).any(axis=1).all()
    # every via chain leads to a seed of the same class
    roots = root_seeds(res.via, res.step)
    assert (res.step[roots[lab]] == 0).all() and (res.label[roots[lab]] == res.label[lab]).all()
    # sizes are consistent with the labels (classes disjoint by construction: one label per point)
    assert res.sizes.sum() == len(lab)


def test_split_holdout_is_stratified() -> None:
    df = pd.DataFrame({"id": [str(i) for i in range(100)], "label": ["a"] * 70 + ["b"] * 30})
    seeds, hold = split_holdout(df, 0.3, seed=1)
    assert len(hold) == 30 and (hold["label"] == "a").sum() == 21
    assert not set(seeds["id"]) & set(hold["id"])


def test_augment_files_end_to_end(tmp_path: Path) -> None:
    from simlabel.store import shard_name, write_shard

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 8))
    X = np.concatenate([centres[0] + 0.3 * rng.standard_normal((50, 8)), centres[1] + 0.3 * rng.standard_normal((50, 8))])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    write_shard(tmp_path / "emb" / shard_name(0), ids, X.astype(np.float32))
    pd.DataFrame({"id": ["a0", "a1", "a2", "b0", "b1", "b2"], "label": ["A"] * 3 + ["B"] * 3}).to_csv(tmp_path / "seeds.csv", index=False)
    pd.DataFrame({"id": ["a3", "b3"], "label": ["A", "B"]}).to_csv(tmp_path / "hold.csv", index=False)
    made = augment(tmp_path / "emb", tmp_path / "seeds.csv", k=5, holdout=tmp_path / "hold.csv", out=tmp_path / "aug.csv")
    written = pd.read_csv(tmp_path / "aug.csv", dtype=str, keep_default_na=False)
    assert list(written.columns[:5]) == ["id", "label", "step", "source", "via"]
    assert written["id"].is_unique and not {"a3", "b3"} & set(written["id"])
    assert (written.loc[written["source"] == "seed", "step"] == "0").all()
    aug = written[written["source"] == "augmented"]
    assert len(aug) > 6
    # well separated clusters: augmented labels follow the cluster
    assert (aug["label"] == aug["id"].str[0].str.upper()).mean() > 0.95
    assert (tmp_path / "aug.csv.summary.json").exists()
    # the value is the files: labels, the augmented rows, the holdout and the summary written beside them
    assert made.labels["id"].tolist() == written["id"].tolist() and made.augmented["id"].tolist() == aug["id"].tolist()
    assert made.holdout["id"].tolist() == ["a3", "b3"] and made.summary["holdout"] == 2
    written_summary = json.loads((tmp_path / "aug.csv.summary.json").read_text())
    assert written_summary["n_steps"] == made.summary["n_steps"] == made.result.n_steps
    with pytest.warns(DeprecationWarning, match="unpacking it as"):
        table, result, holdout = made  # what scripts written for the 3-tuple do
    assert table is made.labels and result is made.result and holdout is made.holdout
