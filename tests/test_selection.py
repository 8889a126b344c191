"""Choosing what to label (simlabel.selection): TypiClust and ProbCover on hand-made clusters where the chosen
points are known, BADGE's batches never holding near-duplicates, the auto rule, the stopping signal, and
`simlabel select` in rounds on a real slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simlabel.errors import ConfigError, InputError
from simlabel.graph import neighbours_for
from simlabel.selection import (
    SelectConfig,
    badge,
    coverage_threshold,
    margin_uncertainty,
    prediction_change,
    probcover,
    select_items,
    typicality,
    typiclust,
)
from simlabel.store import Embeddings
from tests.helpers import slice_catalog


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _blobs(sizes: list[int], spread: float = 0.05):
    """Blobs around orthogonal directions, each its centre and pairs ``centre +- spread e_j`` on axes of their own:
    the centre is nearer every other member (``spread``) than they are to each other (``spread sqrt 2``, or
    ``2 spread``), so each blob's first row is its most typical."""
    extra = max(sizes) // 2 + 1
    d = len(sizes) + extra
    rows, cluster = [], []
    for c, m in enumerate(sizes):
        centre = np.zeros(d)
        centre[c] = 1.0
        pts = [centre]
        for j in range(m - 1):
            axis = np.zeros(d)
            axis[len(sizes) + j // 2] = spread if j % 2 == 0 else -spread
            pts.append(centre + axis)
        rows.append(np.array(pts))
        cluster += [c] * m
    X = _unit(np.vstack(rows))
    return X, np.asarray(cluster), np.cumsum([0] + sizes[:-1])


# ----------------------------------------------------------------------------- TypiClust


def test_typicality_by_hand() -> None:
    # neighbours at cosine 1 (distance 0) and 0.5 (distance 1): mean distance 0.5 -> 1 / (0.5 + 1e-5)
    t = typicality(np.array([[1.0, 0.5], [0.5, -np.inf]]))
    assert t[0] == pytest.approx(1 / (0.5 + 1e-5)) and t[1] == pytest.approx(1 / (1 + 1e-5))
    assert typicality(np.array([[-np.inf, -np.inf]]))[0] == 0  # no neighbour: not typical


def test_typiclust_takes_each_clusters_centre_largest_cluster_first() -> None:
    X, clusters, centres = _blobs([30, 20, 12])
    near = lambda rows, k: neighbours_for(X, k, among=rows).similarities  # noqa: E731
    chosen, where, _ = typiclust(clusters, 3, near)
    assert chosen.tolist() == centres.tolist() and where.tolist() == [0, 1, 2]
    # a cluster that already has a label is visited last; an excluded row is never chosen
    chosen, where, _ = typiclust(clusters, 3, near, labelled=np.array([31]), exclude=np.array([0]))
    assert where.tolist() == [0, 2, 1] and 0 not in chosen and 31 not in chosen
    # clusters of 5 items or fewer are left out while others remain
    X2, c2, _ = _blobs([30, 4])
    chosen, where, _ = typiclust(c2, 2, lambda rows, k: neighbours_for(X2, k, among=rows).similarities)
    assert where.tolist() == [0, 0]


# ----------------------------------------------------------------------------- ProbCover


def test_coverage_threshold_by_hand() -> None:
    # four rows; the most similar neighbour of another cluster has cosine 0.9, 0.5, 0.2 and none
    nb = np.array([[1, 2], [0, 3], [3, 0], [2, -1]])
    sim = np.array([[0.95, 0.9], [0.95, 0.5], [0.8, 0.2], [0.8, -np.inf]])
    clusters = np.array([0, 0, 1, 1])
    # first other-cluster similarities: 0.9, 0.5, 0.2, -inf; sorted -inf, 0.2, 0.5, 0.9
    assert coverage_threshold(nb, sim, clusters, purity=0.5) == 0.2
    assert coverage_threshold(nb, sim, clusters, purity=0.75) == 0.5
    assert coverage_threshold(nb, sim, clusters, purity=1.0) == 0.9


def test_probcover_greedy_covers_the_largest_ball_first() -> None:
    X, clusters, centres = _blobs([30, 20, 12], spread=0.02)
    nb, sim = neighbours_for(X, 35)
    t = coverage_threshold(nb, sim, clusters, 0.95)
    chosen, gain, coverage = probcover(nb, sim, t, 3)
    assert sorted(clusters[chosen].tolist()) == [0, 1, 2]  # one ball per blob
    assert gain.tolist() == sorted(gain.tolist(), reverse=True) and gain[0] >= 28
    assert coverage > 0.9
    # the labelled items' balls are covered first: the blob holding a label is chosen last
    chosen, gain, _ = probcover(nb, sim, t, 3, labelled=np.array([centres[0]]))
    assert clusters[chosen].tolist()[:2] == [1, 2] and centres[0] not in chosen


def test_probcover_breaks_ties_at_random_not_in_catalog_order() -> None:
    # 40 isolated points (each covers only itself), the first 20 of "class" a: in catalog order the first
    # 10 picks would all be a; drawn at random they come from both halves
    X = _unit(np.eye(40) + 0.0)
    nb, sim = neighbours_for(X, 5)
    chosen, gain, _ = probcover(nb, sim, 0.5, 10, seed=0)
    assert (gain == 1).all() and (chosen < 20).any() and (chosen >= 20).any()
    again, _, _ = probcover(nb, sim, 0.5, 10, seed=0)
    assert chosen.tolist() == again.tolist()  # seeded


# ----------------------------------------------------------------------------- BADGE


def test_margin_uncertainty_by_hand() -> None:
    u = margin_uncertainty(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(u, [0.5, 1.0, 0.0])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(10, 60), budget=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_badge_never_puts_near_duplicates_in_one_batch(n: int, budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = _unit(rng.standard_normal((n, 6)))
    X = np.vstack([X, _unit(X + 0.01 * rng.standard_normal(X.shape))])  # every row has a near-twin
    p = rng.dirichlet(np.ones(3), size=len(X))
    chosen = badge(X, p, budget, duplicate_threshold=0.95, seed=seed)
    assert len(chosen) == len(set(chosen.tolist())) > 0
    cos = X[chosen] @ X[chosen].T
    assert (cos[~np.eye(len(chosen), dtype=bool)] < 0.95).all()


def test_badge_starts_from_the_largest_gradient_and_prefers_uncertain_items() -> None:
    X, _, _ = _blobs([20, 20, 20])
    sure = np.tile([0.98, 0.01, 0.01], (60, 1))
    unsure = sure.copy()
    unsure[45] = [0.34, 0.33, 0.33]  # the least certain row: the largest ||p - e_yhat||
    assert badge(X, unsure, 1)[0] == 45
    # with a pool of the 10 least certain rows, the batch is drawn among them
    p = np.random.default_rng(0).dirichlet(np.ones(3) * 5, size=60)
    pool = np.argsort(-margin_uncertainty(p))[:10]
    assert set(badge(X, p, 5, pool=10).tolist()) <= set(pool.tolist())


# ----------------------------------------------------------------------------- the job


def _emb(X: np.ndarray) -> Embeddings:
    return Embeddings(np.array([f"i{j}" for j in range(len(X))], dtype=object), X, {"path": "mem", "model": "test"})


def test_auto_rule_and_the_stopping_signal(tmp_path: Path) -> None:
    X, clusters, _ = _blobs([30, 30, 30], spread=0.5)
    e = _emb(X)
    labels = pd.DataFrame({"id": ["i1", "i31", "i61"], "label": ["a", "b", "c"]})
    proba = np.eye(3)[clusters] * 0.8 + 0.2 / 3
    cfg = SelectConfig()
    assert select_items(e, 3, cfg).summary["strategy"] == "typiclust"  # no model yet
    few = select_items(e, 3, cfg, labels=labels, proba=proba, classes=["a", "b", "c"])
    assert few.summary["strategy"] == "typiclust" and "fewer than cold_per_class" in few.summary["why"]
    many = pd.DataFrame({"id": [f"i{j}" for j in range(0, 90, 9)], "label": [["a", "b", "c"][j // 30] for j in range(0, 90, 9)]})
    made = select_items(e, 4, cfg, labels=many, proba=proba, classes=["a", "b", "c"], exclude=["i2", "i3"],
                        out=tmp_path / "q.csv")
    assert made.summary["strategy"] == "badge"
    q = made.labels
    assert not set(q["id"]) & (set(many["id"]) | {"i2", "i3"})
    assert list(q["rank"]) == [1, 2, 3, 4] and q["proposal"].isin(["a", "b", "c"]).all()
    assert (q["neighbor_labels"].str.count(r"\|") == 4).all()  # 5 nearest labelled neighbours, explained
    assert json.loads((tmp_path / "q.csv.summary.json").read_text())["strategy"] == "badge"
    # the stopping signal: the share of the catalog whose prediction moved since the previous round
    moved = proba.copy()
    moved[:9] = np.roll(moved[:9], 1, axis=1)  # 9 of 90 rows now predict another class
    nxt = select_items(e, 4, cfg, labels=many, proba=moved, classes=["a", "b", "c"], previous=tmp_path / "q.csv")
    assert nxt.summary["changed"] == pytest.approx(0.1) and nxt.summary["compared"] == 90
    assert prediction_change(made.predictions, made.predictions) == (0.0, 90)
    # the new rows alone may be chosen; the rest of the catalog still clusters and covers
    new = [f"i{j}" for j in range(80, 90)]
    for strategy in ("typiclust", "probcover", "badge"):
        only = select_items(e, 3, SelectConfig(strategy=strategy, coverage_k=20), labels=many, proba=proba, classes=["a", "b", "c"],
                            only=new)
        assert len(only.labels) == 3 and set(only.labels["id"]) <= set(new) - set(many["id"]), strategy
    with pytest.raises(InputError, match="`budget` 20 is more than"):
        select_items(e, 20, cfg, only=new)
    with pytest.raises(InputError, match="`budget` 200 is more than"):
        select_items(e, 200, cfg)
    with pytest.raises(InputError, match="needs a model"):
        select_items(e, 2, SelectConfig(strategy="badge"))
    with pytest.raises(ConfigError, match="strategy"):
        SelectConfig(strategy="best")


@pytest.mark.slow
def test_select_in_rounds_on_a_real_slice(tmp_path: Path) -> None:
    from simlabel.cli import app

    df = slice_catalog("clothing-small", 120, tmp_path, stratify="label")
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    runner = CliRunner()
    emb = tmp_path / "emb"
    res = runner.invoke(app, ["embed", str(cat), "--out", str(emb), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    test_ids = df["id"].iloc[::6]  # a test set the rounds never touch
    test_ids.to_frame().to_csv(tmp_path / "test.csv", index=False)
    truth = df.set_index("id")["label"]
    labelled = pd.DataFrame(columns=["id", "label"])
    for r, strategy in enumerate(["auto", "probcover", "badge"], start=1):
        args = ["select", "--emb", str(emb), "--budget", "10", "--strategy", strategy, "--exclude", str(tmp_path / "test.csv"),
                "--out", str(tmp_path / f"r{r}.csv"), "--no-progress", "--device", "cpu"]
        if len(labelled):
            labelled.to_csv(tmp_path / "labels.csv", index=False)
            args += ["--labels", str(tmp_path / "labels.csv")]
        if r == 3:
            args += ["--previous", str(tmp_path / "r2.csv")]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        q = pd.read_csv(tmp_path / f"r{r}.csv", dtype=str, keep_default_na=False)
        assert len(q) == 10 and q["id"].is_unique
        assert not set(q["id"]) & (set(labelled["id"]) | set(test_ids))  # never a labelled or a test item
        labelled = pd.concat([labelled, pd.DataFrame({"id": q["id"], "label": truth[q["id"]].to_numpy()})])
    assert "stopping signal" in res.output and (tmp_path / "r2.csv.predictions.parquet").exists()
    # the first round, with no labels, spreads over the catalog: TypiClust's 10 items cover most classes
    first = pd.read_csv(tmp_path / "r1.csv", dtype=str)
    assert truth[first["id"]].nunique() >= 5


def test_a_graph_folder_is_read_once_per_selection(tmp_path: Path, monkeypatch) -> None:
    """TypiClust asks for neighbours once per cluster it visits: the graph folder is read once, not each time."""
    import simlabel.graph as graph_module
    from simlabel.graph import GraphConfig, build_graph

    X, _, _ = _blobs([20, 20, 20], spread=0.3)
    e = _emb(X)
    build_graph(e, tmp_path / "g", GraphConfig(k=10, recall_sample=0), progress=False)
    reads = []
    real = graph_module.load_graph
    monkeypatch.setattr(graph_module, "load_graph", lambda *a, **kw: reads.append(1) or real(*a, **kw))
    labels = pd.DataFrame({"id": ["i0", "i20"], "label": ["a", "b"]})
    chosen = select_items(e, 6, SelectConfig(strategy="typiclust"), labels=labels, graph=tmp_path / "g")
    assert len(chosen.labels) == 6 and chosen.summary["neighbours"]["source"] == "graph"
    assert len(reads) == 1


def test_select_on_images_and_titles_side_by_side() -> None:
    """With the titles' embeddings, the items are chosen and the round model trained on both; a model of images
    and titles is taken with them and refused without."""
    from simlabel.head_config import HeadConfig
    from simlabel.training import select, train

    X, clusters, _ = _blobs([30, 30, 30], spread=0.5)
    image = _emb(0.2 * np.random.default_rng(3).normal(size=X.shape).astype(np.float32))  # images that carry no class
    text = Embeddings(image.ids, X, {"path": "titles", "model": "txt", "modality": "text"})
    many = pd.DataFrame({"id": [f"i{j}" for j in range(0, 90, 3)], "label": [["a", "b", "c"][j // 30] for j in range(0, 90, 3)]})
    made = select(image, 6, labels=many, text_emb=text, device="cpu")
    blind = select(image, 6, labels=many, device="cpu")
    assert made.summary["strategy"] == "badge" and len(made.labels) == 6
    # the round model saw the titles: its predictions over the catalog follow them; on the images alone they cannot
    truth = np.array(["a", "b", "c"])[clusters]

    def accuracy(sel) -> float:
        return float((sel.predictions["prediction"].to_numpy() == truth[image.positions(sel.predictions["id"])]).mean())

    assert accuracy(made) > 0.9 and accuracy(blind) < 0.7
    both = train(image, many, text_emb=text, inputs="image+text", config=HeadConfig(max_epochs=30, device="cpu"))
    assert len(select(image, 3, labels=many, model=both, text_emb=text).labels) == 3
    with pytest.raises(InputError, match="give `text_emb`"):
        select(image, 3, labels=many, model=both)
