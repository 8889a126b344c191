"""simlabel.graph: the k-NN graph as a file, reused by the label methods, and its sparse views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.errors import InputError, StoreError
from simlabel.graph import GraphConfig, build_graph, load_graph, sort_rows
from simlabel.store import Embeddings
from tests.helpers import ROOT


def _emb(n: int = 300, d: int = 16, seed: int = 0, clusters: int = 5) -> Embeddings:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 3
    X = (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Embeddings(np.array([f"i{j}" for j in range(n)], dtype=object), X, {"path": "mem", "model": "test"})


def test_sort_rows_tie_rule_by_hand():
    nb = np.array([[5, 2, 9, -1], [1, 0, 3, 2]])
    sim = np.array([[0.5, 0.5, 0.9, 0.0], [0.1, 0.2, 0.2, 0.2]], dtype=np.float32)
    got_nb, got_sim = sort_rows(nb, sim)
    assert got_nb.tolist() == [[9, 2, 5, -1], [0, 2, 3, 1]]
    assert got_sim[0].tolist() == pytest.approx([0.9, 0.5, 0.5, 0.0])


def test_graph_matches_exact_search_and_excludes_self(tmp_path: Path):
    e = _emb()
    g = build_graph(e, tmp_path / "g", GraphConfig(k=8, block_rows=64), progress=False)
    assert g.k == 8 and len(g) == 300 and g.meta["index"]["kind"] == "flat" and g.meta["recall_at_k"] == 1.0
    S = e.matrix @ e.matrix.T
    np.fill_diagonal(S, -np.inf)
    exact = np.argsort(-S, axis=1, kind="stable")[:, :8]
    assert (g.neighbors != np.arange(300)[:, None]).all()
    assert np.array_equal(np.sort(g.neighbors, 1), np.sort(exact, 1))
    assert (np.diff(g.similarities, axis=1) <= 1e-6).all()  # best first
    again = load_graph(tmp_path / "g")
    assert np.array_equal(again.neighbors, g.neighbors) and again.ids.tolist() == e.ids.tolist()
    assert len(list((tmp_path / "g" / "blocks").glob("*.parquet"))) == 5 and not list((tmp_path / "g").glob("index.faiss*"))


def test_graph_k_rules_and_truncation(tmp_path: Path):
    g = build_graph(_emb(), None, GraphConfig(k=6, recall_sample=0), progress=False)
    assert g.truncate(3).neighbors.tolist() == g.neighbors[:, :3].tolist()
    with pytest.raises(InputError, match="holds k = 6 neighbours per row, but 10 are asked for; rebuild it with `simlabel graph --k 10`"):
        g.knn_positions(np.arange(3), 10)
    with pytest.raises(InputError, match="k = 300 needs more than 300 rows"):
        build_graph(_emb(), None, GraphConfig(k=300), progress=False)
    # an unknown id is a MissingIdsError naming it (it was a TypeError from the error's own constructor)
    from simlabel.errors import MissingIdsError

    with pytest.raises(MissingIdsError, match="nope"):
        g.knn_ids(["i0", "nope"], 2)


def test_other_embeddings_and_other_options_are_refused(tmp_path: Path):
    e = _emb()
    g = build_graph(e, tmp_path / "g", GraphConfig(k=5), progress=False)
    other = Embeddings(e.ids, _emb(seed=1).matrix, {"path": "other", "model": "other"})
    with pytest.raises(InputError, match="built from other embeddings"):
        g.check_matches(other)
    with pytest.raises(StoreError, match="holds a graph of other options"):
        build_graph(e, tmp_path / "g", GraphConfig(k=7), progress=False)
    (tmp_path / "half").mkdir()
    import json

    (tmp_path / "half" / "graph.json").write_text(json.dumps({"format": "simlabel.graph", "state": "building"}))
    with pytest.raises(StoreError, match="still being built or its build was killed"):
        load_graph(tmp_path / "half")


def test_a_killed_build_resumes_without_redoing_blocks(tmp_path: Path):
    e = _emb(n=400)
    np.save(tmp_path / "X.npy", e.matrix)
    code = ("import sys, numpy as np\n"
            "import simlabel.graph as G\n"
            "from simlabel.store import Embeddings\n"
            "X = np.load(sys.argv[1])\n"
            "e = Embeddings(np.array([f'i{j}' for j in range(len(X))], dtype=object), X, {'path': 'mem', 'model': 'test'})\n"
            "orig, count = G._write_block, [0]\n"
            "def dying(path, start, nb, sim):\n"
            "    orig(path, start, nb, sim); count[0] += 1\n"
            "    if count[0] == 2:\n"
            "        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
            "G._write_block = dying\n"
            "G.build_graph(e, sys.argv[2], G.GraphConfig(k=5, block_rows=100), progress=False)\n")
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "X.npy"), str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-1500:]
    done = sorted(p.name for p in (out / "blocks").glob("*.parquet"))
    assert done == ["part-00000.parquet", "part-00001.parquet"]
    mtimes = {p: (out / "blocks" / p).stat().st_mtime_ns for p in done}
    with pytest.raises(StoreError, match="still being built"):
        load_graph(out)
    g = build_graph(e, out, GraphConfig(k=5, block_rows=100), progress=False)
    assert {p: (out / "blocks" / p).stat().st_mtime_ns for p in done} == mtimes  # not redone
    whole = build_graph(e, None, GraphConfig(k=5, block_rows=100, recall_sample=0), progress=False)
    assert np.array_equal(g.neighbors, whole.neighbors) and g.meta["state"] == "complete"


def test_sparse_views_and_cleanlab_reads_the_graph():
    e = _emb(n=120)
    g = build_graph(e, None, GraphConfig(k=5), progress=False)
    W = g.adjacency()
    assert (W != W.T).nnz == 0 and W.diagonal().sum() == 0
    R = g.reverse()
    j = int(g.neighbors[0, 0])
    assert R[j, 0] == pytest.approx(max(float(g.similarities[0, 0]), 0.0))
    assert int((R.getnnz(axis=1)).sum()) == 120 * 5  # every edge once, reversed
    D = g.distance_csr()
    assert D.shape == (120, 120) and (D.getnnz(axis=1) == 5).all()
    from cleanlab import Datalab

    labels = np.array([f"c{i % 3}" for i in range(120)])
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(knn_graph=D, issue_types={"outlier": {}, "near_duplicate": {}})
    issues = lab.get_issues()
    assert len(issues) == 120 and "outlier_score" in issues.columns


@settings(max_examples=20, deadline=None)
@given(n=st.integers(8, 60), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_graph_properties(n, k, seed):
    e = _emb(n=n, d=6, seed=seed, clusters=3)
    g = build_graph(e, None, GraphConfig(k=min(k, n - 1), recall_sample=0), progress=False)
    nb = g.neighbors
    assert (nb != np.arange(n)[:, None]).all() and (nb >= 0).all()
    assert all(len(set(r)) == len(r) for r in nb.tolist())
    # similarities are the cosines of the pairs
    assert np.allclose(g.similarities, np.einsum("id,ikd->ik", e.matrix, e.matrix[nb]), atol=1e-5)


def test_augment_and_propagate_give_the_same_labels_with_the_graph(tmp_path: Path):
    from simlabel.labels.augment import augment
    from simlabel.labels.propagate import propagate

    e = _emb(n=400)
    rng = np.random.default_rng(0)
    cls = (np.argmax(e.matrix[:, :3], axis=1)).astype(str)
    seeds = pd.DataFrame({"id": e.ids[rng.choice(400, 40, replace=False)]})
    seeds["label"] = cls[pd.Index(e.ids).get_indexer(seeds["id"])]
    g = build_graph(e, tmp_path / "g", GraphConfig(k=12), progress=False)
    direct = augment(e, seeds, k=10).labels
    via = augment(e, seeds, k=10, graph=tmp_path / "g").labels
    pd.testing.assert_frame_equal(direct, via)
    with pytest.raises(InputError, match="rebuild it with `simlabel graph --k 20`"):
        augment(e, seeds, k=20, graph=g)
    p_direct = propagate(e, seeds, k=10, steps=5).labels
    p_via = propagate(e, seeds, k=10, steps=5, graph=g).labels
    pd.testing.assert_frame_equal(p_direct, p_via)
    s_direct = propagate(e, seeds, k=10, method="spread").labels
    spread = propagate(e, seeds, k=10, method="spread", graph=g)
    s_via, res = spread.labels, spread.result
    pd.testing.assert_frame_equal(s_direct, s_via)
    assert res.converged and "weight" in s_via.columns


def test_cli_graph_then_augment_with_it(tmp_path: Path):
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.store import write_shard

    e = _emb(n=200)
    store = tmp_path / "emb"
    write_shard(store / "part-00000.parquet", e.ids, e.matrix, {"model": "test", "dim": 16})
    runner = CliRunner()
    res = runner.invoke(app, ["graph", str(store), "--k", "8", "--out", str(tmp_path / "g"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "k = 8 graph of 200 rows (flat, chosen by auto; recall@8 1.000" in res.output
    seeds = pd.DataFrame({"id": e.ids[:20], "label": ["a", "b"] * 10})
    seeds.to_csv(tmp_path / "seeds.csv", index=False)
    res = runner.invoke(app, ["augment", "--emb", str(store), "--labels", str(tmp_path / "seeds.csv"), "--k", "10",
                              "--graph", str(tmp_path / "g"), "--out", str(tmp_path / "aug.csv")])
    assert res.exit_code == 1 and "holds k = 8 neighbours per row, but 10 are asked for" in res.output
    res = runner.invoke(app, ["propagate", "--emb", str(store), "--labels", str(tmp_path / "seeds.csv"), "--k", "5",
                              "--graph", str(tmp_path / "g"), "--method", "spread", "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert "iterations (converged)" in " ".join(res.output.split())
    assert "weight" in pd.read_csv(tmp_path / "p.csv").columns


def test_augment_records_the_graph_it_read(tmp_path: Path):
    import json

    from simlabel.labels.augment import augment

    e = _emb(n=200)
    build_graph(e, tmp_path / "g", GraphConfig(k=10), progress=False)
    seeds = pd.DataFrame({"id": e.ids[:20], "label": ["a", "b"] * 10})
    augment(e, seeds, k=10, graph=tmp_path / "g", out=tmp_path / "aug.csv")
    summary = json.loads((tmp_path / "aug.csv.summary.json").read_text())
    assert summary["neighbours"]["source"] == "graph" and summary["neighbours"]["path"] == str(tmp_path / "g")
    assert summary["neighbours"]["graph_k"] == 10
    augment(e, seeds, k=10, out=tmp_path / "aug2.csv")
    assert json.loads((tmp_path / "aug2.csv.summary.json").read_text())["neighbours"] == {"source": "built", "kind": "flat"}


def test_neighbours_within_a_subset_by_hand():
    from simlabel.graph import KnnGraph, neighbours_within

    # rows 0..4 on a line at 0, 1, 2, 3, 10 (1-d cosine is useless, so similarities are given by hand)
    ids = np.array(list("abcde"), dtype=object)
    nb = np.array([[1, 2, 3], [0, 2, 3], [1, 3, 0], [2, 1, 0], [3, 2, 1]], dtype=np.int32)
    sim = np.array([[0.9, 0.8, 0.7], [0.9, 0.9, 0.8], [0.9, 0.9, 0.8], [0.9, 0.8, 0.7], [0.3, 0.2, 0.1]], np.float32)
    g = KnnGraph(ids, nb, sim, {"k": 3})
    # the subset {0, 2, 3}: row 0 keeps 2, 3 (1 is not a member); row 2 keeps 3, 0; row 3 keeps 2, 0
    got, s = neighbours_within(g, np.array([0, 2, 3]), 2)
    assert got.tolist() == [[1, 2], [2, 0], [1, 0]]  # positions into the subset
    assert np.allclose(s, [[0.8, 0.7], [0.9, 0.8], [0.9, 0.7]])
    # {0, 4}: neither row holds the other among its graph neighbours -> exact search needs the vectors
    with pytest.raises(InputError, match="fewer than 1 allowed neighbours in the graph; pass the vectors"):
        neighbours_within(g, np.array([0, 4]), 1)
    X = np.eye(5, dtype=np.float32)
    X[4] = X[0] * 0.6 + X[1] * 0.8
    got, s = neighbours_within(g, np.array([0, 4]), 1, vectors=X)
    assert got.tolist() == [[1], [0]] and s.ravel().tolist() == pytest.approx([0.6, 0.6])
    with pytest.raises(InputError, match="distinct"):
        neighbours_within(g, np.array([0, 0]), 1)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(30, 120), frac=st.floats(0.2, 1.0), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_neighbours_within_equals_exact_search_among_the_subset(n, frac, k, seed):
    from simlabel.graph import neighbours_within
    from simlabel.index import exact_knn

    e = _emb(n=n, seed=seed)
    rows = np.sort(np.random.default_rng(seed).choice(n, max(k + 1, int(frac * n)), replace=False))
    g = build_graph(e, None, GraphConfig(k=min(8, n - 1), recall_sample=0), progress=False)
    got, s = neighbours_within(g, rows, k, vectors=e.matrix)
    want, ws = exact_knn(e.matrix[rows], k, exclude_self=True)
    assert np.array_equal(np.sort(got, 1), np.sort(want, 1))
    assert np.allclose(s, ws, atol=1e-5)


# ----------------------------------------------------------------------------- the one resolver


def test_neighbour_source_one_rule_by_hand(tmp_path: Path):
    from simlabel.graph import neighbour_source, neighbours_for
    from simlabel.index import IndexConfig, NeighborIndex

    # two pairs: 0~1, 2~3 (cosines 0.99 and 0.99; across the pairs at most 0.11)
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    e = Embeddings(np.array(["a", "b", "c", "d"], dtype=object), X, {"path": "mem", "model": "test"})
    g = build_graph(e, None, GraphConfig(k=3, recall_sample=0), progress=False)
    idx = NeighborIndex.build(e.ids, X, IndexConfig(kind="flat"))
    for where in ({}, {"graph": g}, {"index": idx}):
        assert neighbours_for(e, 1, **where).neighbors.ravel().tolist() == [1, 0, 3, 2]
        # among {a, c, d}: a's nearest is d (cos 0.11 > 0); the answers are positions into `among`
        sub = neighbours_for(e, 1, among=np.array([0, 2, 3]), **where)
        assert sub.neighbors.ravel().tolist() == [2, 2, 1]
        # a query outside `among` (b) is answered among the allowed rows: a, at position 0
        assert neighbour_source(e, 1, among=np.array([0, 2, 3]), **where)(np.array([1])).neighbors.tolist() == [[0]]
    assert neighbour_source(e, 1, graph=g).summary["source"] == "graph"
    assert neighbour_source(e, 1, index=idx).summary["source"] == "index"
    assert neighbour_source(e, 1).summary == {"source": "built", "kind": "flat"}
    # an index holds every row: among a strict subset it is searched over the subset, and says so
    assert "subset" in neighbour_source(e, 1, index=idx, among=np.array([0, 2])).summary["why"]
    with pytest.raises(InputError, match="either `graph` or `index`"):
        neighbour_source(e, 1, graph=g, index=idx)
    with pytest.raises(InputError, match="k = 3 neighbours per row, but 4"):
        neighbour_source(e, 4, graph=g)
    other = Embeddings(e.ids[::-1].copy(), X, {"path": "other", "model": "test"})
    with pytest.raises(InputError, match="other embeddings|same order"):
        neighbour_source(other, 1, graph=g)
    with pytest.raises(InputError, match="other embeddings|same order"):
        neighbour_source(other, 1, index=idx)
    with pytest.raises(InputError, match="distinct"):
        neighbour_source(e, 1, among=np.array([0, 0]))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(20, 100), frac=st.floats(0.15, 1.0), k=st.integers(1, 6), graph_k=st.integers(1, 10),
       seed=st.integers(0, 1000))
def test_graph_index_and_built_give_one_answer(n, frac, k, graph_k, seed):
    """Whatever the source, the neighbours among any subset are exact search among the subset."""
    from simlabel.graph import neighbours_for
    from simlabel.index import IndexConfig, NeighborIndex, exact_knn

    e = _emb(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    among = np.sort(rng.choice(n, max(k + 1, int(frac * n)), replace=False))
    g = build_graph(e, None, GraphConfig(k=max(k, min(graph_k, n - 1)), recall_sample=0), progress=False)
    idx = NeighborIndex.build(e.ids, e.matrix, IndexConfig(kind="flat"))
    want, ws = exact_knn(e.matrix[among], k, exclude_self=True)
    for where in ({}, {"graph": g}, {"index": idx}):
        got, s = neighbours_for(e, k, among=among, **where)
        assert np.array_equal(np.sort(got, 1), np.sort(want, 1)), where
        assert np.allclose(s, ws, atol=1e-5)


def test_propagate_with_a_graph_and_a_sample_equals_the_queries(tmp_path: Path):
    """The graph's neighbours among a sample of nodes are the on-the-fly ones (exact search where a
    node's graph row holds fewer than k nodes), not a graph with missing edges."""
    from simlabel.labels.propagate import propagate

    e = _emb(n=400, seed=3)
    cls = (np.argmax(e.matrix[:, :3], axis=1)).astype(str)
    seeds = pd.DataFrame({"id": e.ids[:40], "label": cls[:40]})
    g = build_graph(e, None, GraphConfig(k=10, recall_sample=0), progress=False)
    direct = propagate(e, seeds, k=8, steps=5, unlabeled_sample=120, seed=1)
    via = propagate(e, seeds, k=8, steps=5, unlabeled_sample=120, seed=1, graph=g)
    assert len(direct.labels) > 100
    pd.testing.assert_frame_equal(direct.labels, via.labels)
    assert via.summary["neighbours"]["source"] == "graph"


def test_side_info_weights_are_the_same_with_the_graph(tmp_path: Path):
    from simlabel.labels.side_info import SideInfoConfig, side_info_weights
    from simlabel.semantics.categories import category_semantics
    from simlabel.store import write_shard

    e = _emb(n=400, clusters=4)
    store = tmp_path / "emb"
    write_shard(store / "part-00000.parquet", e.ids, e.matrix, {"model": "test", "dim": 16})
    rng = np.random.default_rng(3)
    cats = ["shirt", "shoe", "watch", "bag"]
    picked = rng.choice(400, 250, replace=False)  # a search log over part of the store ...
    labels = pd.DataFrame({"id": e.ids[picked], "label": np.array(cats)[np.argmax(e.matrix[picked, :4], 1)],
                           "rank": rng.integers(1, 50, 250)})
    again = labels.sample(30, random_state=0).assign(label="bag")  # ... with 30 images found by a second query
    labels = pd.concat([labels, again], ignore_index=True)
    sem = category_semantics(cats, text_encoder=None, k=2)
    cfg = SideInfoConfig(knn=6, index="flat")
    made = side_info_weights(store, labels, semantics=sem, config=cfg)
    direct = made.labels
    assert made.summary["neighbours"] == {"source": "built", "kind": "flat"} and made.summary["n_images"] == 250
    g = build_graph(store, tmp_path / "g", GraphConfig(k=20), progress=False)
    via = side_info_weights(store, labels, semantics=sem, config=cfg, graph=tmp_path / "g")
    pd.testing.assert_frame_equal(direct, via.labels)
    assert via.summary["neighbours"]["source"] == "graph"
    assert direct["agreement"].std() > 0.05  # the neighbours decide something
    # an image found twice is one image: it is never its own neighbour under the other label
    dup = labels["id"].duplicated(keep=False)
    assert dup.sum() == 60 and not direct.loc[dup, "agreement"].isna().any()
    with pytest.raises(InputError, match="rebuild it with `simlabel graph --k 6`"):
        side_info_weights(store, labels, semantics=sem, config=cfg, graph=g.truncate(4))
    # the command passes --graph through
    from typer.testing import CliRunner

    from simlabel.cli import app

    sem.save(tmp_path / "sem.json")
    labels.drop_duplicates("id").to_csv(tmp_path / "labels.csv", index=False)
    res = CliRunner().invoke(app, ["side-info", "--emb", str(store), "--labels", str(tmp_path / "labels.csv"),
                                   "--semantics", str(tmp_path / "sem.json"), "--knn", "6", "--graph", str(tmp_path / "g"),
                                   "--out", str(tmp_path / "w.csv")])
    assert res.exit_code == 0, res.output
    want = side_info_weights(store, tmp_path / "labels.csv", semantics=sem, config=cfg).labels
    assert np.allclose(pd.read_csv(tmp_path / "w.csv")["weight"], want["weight"], atol=1e-5)
    assert json.loads((tmp_path / "w.csv.summary.json").read_text())["neighbours"]["source"] == "graph"
    # --index is a saved index; the old spelling `--index flat` (the kind) still runs, with a warning
    from simlabel.index import build_index

    build_index(store, tmp_path / "all.faiss", kind="flat")
    for extra in (["--index", str(tmp_path / "all.faiss")], ["--index", "flat"]):
        res = CliRunner().invoke(app, ["side-info", "--emb", str(store), "--labels", str(tmp_path / "labels.csv"),
                                       "--semantics", str(tmp_path / "sem.json"), "--knn", "6", *extra,
                                       "--out", str(tmp_path / "w2.csv")])
        assert res.exit_code == 0, res.output
        assert np.allclose(pd.read_csv(tmp_path / "w2.csv")["weight"], want["weight"], atol=1e-5)
        assert ("--index-kind flat" in res.output) == (extra[1] == "flat")


def _sharded_store(path: Path, e: Embeddings, sizes: list[int]) -> Path:
    from simlabel.store import write_shard

    at = 0
    for s, size in enumerate(sizes):
        write_shard(path / f"part-{s:05d}.parquet", e.ids[at:at + size], e.matrix[at:at + size], {"model": "test", "dim": e.dim})
        at += size
    return path


def test_on_disk_graph_never_loads_the_store_and_equals_exact_search(tmp_path: Path, monkeypatch):
    import simlabel.store

    e = _emb(n=2000, clusters=8)
    store = _sharded_store(tmp_path / "emb", e, [700, 700, 600])
    exact = build_graph(store, None, GraphConfig(k=7, index="flat", recall_sample=0), progress=False)

    def refuse(*a, **k):
        raise AssertionError("the on-disk build loaded the whole store")

    monkeypatch.setattr(simlabel.store, "load_embeddings", refuse)
    # nprobe = nlist: the IVF search visits every list, so it is exact and the graphs must agree
    cfg = GraphConfig(k=7, block_rows=512, on_disk=True, recall_sample=300, index_options={"ivf_nlist": 16, "ivf_nprobe": 16})
    g = build_graph(store, tmp_path / "g", cfg, progress=False)
    assert g.meta["index"] == {"kind": "ivf", "chosen_by": "auto", "ivf_nlist": 16, "ivf_nprobe": 16, "on_disk": True}
    assert g.ids.tolist() == e.ids.tolist() and g.meta["recall_at_k"] == 1.0
    assert g.meta["n_blocks"] == 5 == len(list((tmp_path / "g" / "blocks").glob("*.parquet")))  # units of lists, <= 512 rows
    assert g.meta["tuning"]["nlist"] == 16 and g.meta["tuning"]["nprobe"] == 16
    assert np.array_equal(g.neighbors, exact.neighbors) and np.allclose(g.similarities, exact.similarities, atol=1e-5)
    assert g.fingerprint == exact.fingerprint  # the same provenance as the loaded store's
    assert not (tmp_path / "g" / "index").exists()  # the on-disk lists go once the graph is whole
    # approximate (few lists probed): the measured recall says so, from the streamed exact search
    approx = build_graph(store, tmp_path / "g2", GraphConfig(k=7, block_rows=512, on_disk=True,
                         index_options={"ivf_nlist": 32, "ivf_nprobe": 1}), progress=False)
    assert 0.3 < approx.meta["recall_at_k"] < 1.0
    from simlabel.index import recall_at_k

    assert abs(recall_at_k(approx.neighbors.astype(np.int64), exact.neighbors.astype(np.int64)) - approx.meta["recall_at_k"]) < 0.05
    with pytest.raises(InputError, match="on_disk builds an IVF index"):
        GraphConfig(on_disk=True, index="flat")
    with pytest.raises(InputError, match="on_disk writes its blocks to files"):
        build_graph(store, None, GraphConfig(k=5, on_disk=True), progress=False)


@pytest.mark.parametrize("stage", ["layout", "blocks"])
def test_a_killed_on_disk_build_resumes(tmp_path: Path, stage: str):
    """Killed while laying the rows out, or after two blocks: the run again tunes nothing (the plan is kept),
    keeps the laid-out file and the finished blocks, and gives the graph a fresh build gives."""
    e = _emb(n=1200, clusters=6)
    store = _sharded_store(tmp_path / "emb", e, [500, 500, 200])
    target = "simlabel.allpairs.lay_out" if stage == "layout" else "simlabel.graph._write_block"
    module, fn = target.rsplit(".", 1)
    code = ("import sys, importlib\n"
            "import simlabel.graph as G\n"
            f"mod = importlib.import_module({module!r})\n"
            f"orig, count = mod.{fn}, [0]\n"
            "def dying(*a, **k):\n"
            f"    if {stage == 'layout'}:\n"
            "        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
            "    orig(*a, **k); count[0] += 1\n"
            "    if count[0] == 2:\n"
            "        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
            f"mod.{fn} = dying\n"
            "G.build_graph(sys.argv[1], sys.argv[2], G.GraphConfig(k=5, block_rows=300, on_disk=True, recall=0.9), "
            "progress=False)\n")
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, "-c", code, str(store), str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-1500:]
    assert (out / "index" / "centroids.npy").exists() and (out / "index" / "tuning.json").exists()
    kept = sorted((out / "blocks").glob("*.parquet"))
    assert len(kept) == (0 if stage == "layout" else 2)
    assert (out / "index" / "lists.npy").exists() == (stage == "blocks")
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    with pytest.raises(StoreError, match="still being built"):
        load_graph(out)
    import simlabel.allpairs

    calls = []
    orig = simlabel.allpairs.plan_ivf
    simlabel.allpairs.plan_ivf = lambda *a, **k: calls.append(a) or orig(*a, **k)
    try:
        g = build_graph(store, out, GraphConfig(k=5, block_rows=300, on_disk=True, recall=0.9), progress=False)
    finally:
        simlabel.allpairs.plan_ivf = orig
    assert calls == []  # the plan was kept, not tuned again
    assert g.meta["state"] == "complete" and not (out / "index").exists()
    fresh = build_graph(store, tmp_path / "fresh", GraphConfig(k=5, block_rows=300, on_disk=True, recall=0.9),
                        progress=False)
    assert np.array_equal(g.neighbors, fresh.neighbors) and g.meta["tuning"] == fresh.meta["tuning"]
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes  # finished blocks not redone


def test_cli_graph_on_disk(tmp_path: Path):
    from typer.testing import CliRunner

    from simlabel.cli import app

    e = _emb(n=600)
    store = _sharded_store(tmp_path / "emb", e, [250, 350])
    res = CliRunner().invoke(app, ["graph", str(store), "--k", "5", "--out", str(tmp_path / "g"), "--on-disk",
                                   "--nlist", "8", "--nprobe", "8", "--block-rows", "200", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "k = 5 graph of 600 rows (ivf join: 8 lists, 8 probed, chosen by auto, lists on disk; recall@5 1.000" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["graph", str(store), "--k", "5", "--out", str(tmp_path / "h"), "--on-disk",
                                   "--index", "hnsw"])
    assert res.exit_code == 1 and "on_disk builds an IVF index" in res.output


def test_update_adds_new_rows_as_a_rebuild_would(tmp_path: Path) -> None:
    """A grown store (reordered, 2% new rows): the updated flat graph equals the flat graph built again, list for
    list; written in place; the rows it cannot drop and another space are refused."""
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.graph import update_graph
    from simlabel.store import write_shard

    rng = np.random.default_rng(3)
    X = rng.standard_normal((1500, 24)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"r{j}" for j in range(1500)], dtype=object)
    old = Embeddings(ids[:1470], X[:1470], {"path": "old", "model": "test"})
    order = rng.permutation(1500)
    grown = Embeddings(ids[order], X[order], {"path": "grown", "model": "test"})
    before = build_graph(old, tmp_path / "g", GraphConfig(k=8, index="flat", recall_sample=0), progress=False)
    after = update_graph(tmp_path / "g", grown, tmp_path / "g", block_rows=256, progress=False)  # in place
    again = build_graph(grown, config=GraphConfig(k=8, index="flat", recall_sample=0), progress=False)
    assert (after.neighbors == again.neighbors).all() and np.allclose(after.similarities, again.similarities, atol=1e-5)
    assert after.meta["new_rows"] == 30 and after.meta["recall_at_k"] == 1.0
    assert after.meta["updated_from"]["embeddings_fingerprint"] == before.meta["embeddings_fingerprint"]
    assert after.fingerprint == grown.fingerprint != before.fingerprint  # provenance follows the grown store
    back = load_graph(tmp_path / "g")
    assert (back.neighbors == again.neighbors).all() and list(back.ids) == list(grown.ids)
    # some old rows took new neighbours: the update is not only the new rows' lists
    old_at = pd.Index(grown.ids.astype(str)).get_indexer(ids[:1470].astype(str))
    new_at = set(np.flatnonzero(~np.isin(np.arange(1500), old_at)))
    assert any(set(row) & new_at for row in after.neighbors[old_at])
    with pytest.raises(InputError, match="cannot drop them"):
        update_graph(before, Embeddings(ids[5:1470], X[5:1470], {"path": "fewer", "model": "test"}), progress=False)
    with pytest.raises(InputError, match="built from embeddings of"):
        update_graph(before, Embeddings(ids, X, {"path": "other", "model": "another-encoder"}), progress=False)
    # the command, on stores on disk
    for name, e in (("old", old), ("grown", grown)):
        (tmp_path / name).mkdir()
        write_shard(tmp_path / name / "part-00000.parquet", e.ids, e.matrix, {"model": "test"})
    build_graph(tmp_path / "old", tmp_path / "g2", GraphConfig(k=8, index="flat", recall_sample=0), progress=False)
    res = CliRunner().invoke(app, ["graph", str(tmp_path / "grown"), "--update", str(tmp_path / "g2"), "--out",
                                   str(tmp_path / "g3"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "30 new rows joined the k = 8 graph, now 1,500 rows" in res.output
    assert (load_graph(tmp_path / "g3").neighbors == again.neighbors).all()


def test_update_of_an_ivf_graph_measures_its_recall(tmp_path: Path) -> None:
    from simlabel.graph import update_graph

    e = _emb(n=2000, seed=4)
    old = Embeddings(e.ids[:1900], e.matrix[:1900], e.meta)
    g = build_graph(old, config=GraphConfig(k=10, index="ivf", recall_sample=200, index_options={"ivf_nlist": 16}),
                    progress=False)
    up = update_graph(g, e, recall_sample=300, progress=False)
    assert up.meta["new_rows"] == 100 and 0.5 < up.meta["recall_at_k"] <= 1.0 and up.meta["recall_sample"] == 300
    exact = build_graph(e, config=GraphConfig(k=10, index="flat", recall_sample=0), progress=False)
    assert (up.neighbors[1900:] == exact.neighbors[1900:]).all()  # the new rows' lists are exact


def _clustered(n: int, d: int, clusters: int, noise: float, seed: int) -> Embeddings:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    X = (centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Embeddings(np.array([f"i{j}" for j in range(n)], dtype=object), X, {"path": "mem", "model": "test"})


def _exact_all(e: Embeddings, k: int) -> np.ndarray:
    S = e.matrix @ e.matrix.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


@settings(max_examples=12, deadline=None, derandomize=True)
@given(n=st.integers(1500, 5000), k=st.integers(1, 15), target=st.sampled_from([0.8, 0.9, 0.95]),
       kind=st.sampled_from(["ivf", "hnsw"]), seed=st.integers(0, 10_000))
def test_the_tuned_graph_meets_its_recall_on_every_row(n, k, target, kind, seed):
    """The index tuned on 300 rows reaches the target on all the others (0.02 below: five standard errors of a
    300-row sample from its own lower bound), and what it records of a fresh sample is that recall."""
    from simlabel.index import recall_at_k

    e = _clustered(n, 12, 20, 0.6, seed)
    g = build_graph(e, None, GraphConfig(k=k, recall=target, index=kind, tune_sample=300, recall_sample=400, seed=seed),
                    progress=False)
    exact = _exact_all(e, k)
    tuned_on = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed + 1)
    tuned_on[rng.choice(n, size=300, replace=False)] = True
    whole = recall_at_k(g.neighbors[~tuned_on].astype(np.int64), exact[~tuned_on])
    assert whole >= target - 0.02, (whole, g.meta["tuning"])
    assert abs(g.meta["recall_at_k"] - recall_at_k(g.neighbors.astype(np.int64), exact)) < 0.05
    assert (g.neighbors != np.arange(n)[:, None]).all() and g.meta["recall_target"] == target
    tuning = g.meta["tuning"]
    assert tuning["tuned_recall_low"] >= target or tuning.get("nprobe") == tuning.get("nlist") or tuning.get("ef_search") == 4096


def test_tuning_by_hand_cheaper_settings_for_lower_targets_and_exact_at_one(tmp_path: Path):
    """On clustered rows a lower target probes fewer lists; the cost model's trials are recorded; recall 1 is exact
    (auto: flat; ivf: every list probed), equal to the exact graph; the CLI takes --recall."""
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.store import write_shard

    e = _clustered(8000, 16, 40, 0.5, 0)
    low = build_graph(e, None, GraphConfig(k=10, recall=0.8), progress=False)
    high = build_graph(e, None, GraphConfig(k=10, recall=0.99), progress=False)
    assert low.meta["index"]["kind"] == high.meta["index"]["kind"] == "ivf"  # auto above GRAPH_FLAT_MAX rows
    assert low.meta["tuning"]["nprobe"] < high.meta["tuning"]["nprobe"] < high.meta["tuning"]["nlist"]
    assert 0.8 <= low.meta["recall_at_k"] < high.meta["recall_at_k"] and high.meta["recall_at_k"] >= 0.98
    assert all({"nlist", "nprobe", "recall", "recall_low", "cost"} <= set(t) for t in high.meta["tuning"]["trials"])
    exact = build_graph(e, None, GraphConfig(k=10, recall=1.0), progress=False)
    assert exact.meta["index"]["kind"] == "flat" and exact.meta["recall_at_k"] == 1.0
    joined = build_graph(e, None, GraphConfig(k=10, recall=1.0, index="ivf"), progress=False)
    assert joined.meta["tuning"]["nprobe"] == joined.meta["tuning"]["nlist"]
    assert np.array_equal(joined.neighbors, exact.neighbors) and np.allclose(joined.similarities, exact.similarities, atol=1e-5)
    (tmp_path / "emb").mkdir()
    write_shard(tmp_path / "emb" / "part-00000.parquet", e.ids, e.matrix, {"model": "test"})
    res = CliRunner().invoke(app, ["graph", str(tmp_path / "emb"), "--k", "10", "--recall", "0.9", "--out",
                                   str(tmp_path / "g"), "--no-progress"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    nl, npr = load_graph(tmp_path / "g").meta["tuning"]["nlist"], load_graph(tmp_path / "g").meta["tuning"]["nprobe"]
    assert f"(ivf join: {nl} lists, {npr} probed, chosen by auto; recall@10" in said and "target 0.9" in said
    res = CliRunner().invoke(app, ["graph", str(tmp_path / "emb"), "--recall", "1.5", "--out", str(tmp_path / "h")])
    assert res.exit_code == 1 and "recall" in res.output
    # a folder holding an exact graph of these rows serves a lower target as it is; an approximate one a higher not
    build_graph(tmp_path / "emb", tmp_path / "exact", GraphConfig(k=10, recall=1.0), progress=False)
    again = build_graph(tmp_path / "emb", tmp_path / "exact", GraphConfig(k=10, recall=0.9), progress=False)
    assert again.meta["index"]["kind"] == "flat" and again.meta["recall_target"] == 1.0
    with pytest.raises(StoreError, match="holds a graph of other options"):
        build_graph(tmp_path / "emb", tmp_path / "g", GraphConfig(k=10, recall=0.999), progress=False)


def test_rows_of_a_small_far_list_are_mended_by_exact_search(tmp_path: Path, monkeypatch):
    """Eight rows far from the rest, a list of their own (the plan's lists: the cluster centres and theirs): with
    one probe they find 7 neighbours of the 10 asked, so they are searched exactly, and the block holding them
    is written again."""
    import simlabel.allpairs
    from simlabel.allpairs import IvfPlan, unit

    centres = np.random.default_rng(1).normal(size=(10, 16))  # those of _clustered(.., 10, .., seed 1)
    far = np.random.default_rng(0).normal(size=(8, 16)) * 0.05 + 10 * np.eye(16)[0]
    X = unit(np.concatenate([_clustered(3000, 16, 10, 0.5, 1).matrix, far]))
    e = Embeddings(np.array([f"i{j}" for j in range(len(X))], dtype=object), X, {"path": "mem", "model": "test"})
    plan = IvfPlan(unit(np.concatenate([centres, np.eye(16)[:1]])), nprobe=1, tuned_recall=0.0, tuned_recall_low=0.0)
    monkeypatch.setattr(simlabel.allpairs, "plan_ivf", lambda *a, **k: plan)
    g = build_graph(e, tmp_path / "g", GraphConfig(k=10, index="ivf"), progress=False)
    assert g.meta["rows_searched_exactly"] == 8 and (g.neighbors >= 0).all()
    exact = _exact_all(e, 10)
    assert np.array_equal(np.sort(g.neighbors[-8:], 1), np.sort(exact[-8:], 1))
    assert np.array_equal(load_graph(tmp_path / "g").neighbors, g.neighbors)  # the blocks on disk hold them mended


def test_methods_given_a_graph_read_no_vector_and_give_the_output_of_the_queries(tmp_path: Path, monkeypatch):
    """augment, propagate (both methods), suspects and select on a graph folder whose store was deleted: the
    labels, steps and via of augment, and the distributions of propagate and spread (within 1e-6), are those the
    same methods give with the vectors loaded and the neighbours searched exactly (what they gave before)."""
    import shutil

    import simlabel.graph
    import simlabel.store
    from simlabel.labels.augment import augment
    from simlabel.labels.propagate import propagate
    from simlabel.labels.suspects import SuspectsConfig, find_suspects
    from simlabel.selection import SelectConfig, select_items
    from simlabel.store import write_shard

    e = _clustered(1500, 16, 8, 0.6, 2)
    store = tmp_path / "emb"
    store.mkdir()
    write_shard(store / "part-00000.parquet", e.ids[:700], e.matrix[:700], {"model": "test"})
    write_shard(store / "part-00001.parquet", e.ids[700:], e.matrix[700:], {"model": "test"})
    graph = tmp_path / "g"
    build_graph(store, graph, GraphConfig(k=8, recall=1.0), progress=False)
    cluster = np.argmax(e.matrix @ np.linalg.qr(np.random.default_rng(0).normal(size=(16, 16)))[0][:, :2], axis=1)
    rng = np.random.default_rng(1)
    seeds = pd.DataFrame({"id": e.ids[rng.choice(1500, 60, replace=False)]})
    seeds["label"] = np.where(cluster[pd.Index(e.ids).get_indexer(seeds["id"])] == 0, "a", "b")
    noisy = pd.DataFrame({"id": e.ids, "label": np.where(cluster == 0, "a", "b")})
    noisy.loc[rng.random(1500) < 0.1, "label"] = "a"
    # what the methods give with the vectors, their neighbours by exact queries
    ref = {"augment": augment(e, seeds, k=8, index_kind="flat"),
           "iterate": propagate(e, seeds, k=8, steps=4, index_kind="flat"),
           "spread": propagate(e, seeds, k=8, method="spread", index_kind="flat"),
           "suspects": find_suspects(e, noisy, SuspectsConfig(k=8, index="flat"))}
    shutil.rmtree(store)

    def refuse(*a, **k):
        raise AssertionError("a method given a graph opened the embedding store")

    for module, name in ((simlabel.store, "load_embeddings"), (simlabel.store, "open_store"),
                         (simlabel.graph, "open_store"), (simlabel.graph, "as_embeddings")):
        monkeypatch.setattr(module, name, refuse)
    got = augment(None, seeds, k=8, graph=graph)
    for col in ("id", "label", "step", "via"):
        assert got.labels[col].tolist() == ref["augment"].labels[col].tolist()
    assert got.summary["neighbours"]["source"] == "graph"
    for method in ("iterate", "spread"):
        made = propagate(None, seeds, k=8, steps=4, method=method, graph=graph)
        assert np.abs(made.result.distribution - ref[method].result.distribution).max() < 1e-6
        assert made.labels["label"].tolist() == ref[method].labels["label"].tolist()
    sus = find_suspects(None, noisy, SuspectsConfig(k=8), graph=graph)
    assert sus.suspects["id"].tolist() == ref["suspects"].suspects["id"].tolist() and len(sus.suspects)
    chosen = select_items(None, 10, SelectConfig(strategy="random"), labels=seeds, graph=graph)
    # the labelled neighbours shown are those among each row's graph neighbours (no exact search without the store)
    shown = [i for cell in chosen.labels["neighbor_ids"] for i in cell.split("|") if i]
    assert len(chosen.labels) == 10 and shown and set(shown) <= set(seeds["id"])
    with pytest.raises(InputError, match="needs the vectors"):  # TypiClust's k-means cannot run on a graph alone
        select_items(None, 10, SelectConfig(strategy="typiclust"), graph=graph)


def test_a_store_given_beside_its_graph_is_checked_by_its_footers(tmp_path: Path, monkeypatch):
    """The folder the graph was built from is accepted without reading its ids or vectors; a store that grew
    since (another row count) is read for its ids and refused with the update command."""
    import simlabel.graph
    import simlabel.store
    from simlabel.labels.augment import augment
    from simlabel.store import write_shard

    e = _emb(n=400)
    store = tmp_path / "emb"
    store.mkdir()
    write_shard(store / "part-00000.parquet", e.ids, e.matrix, {"model": "test"})
    graph = build_graph(store, tmp_path / "g", GraphConfig(k=5), progress=False)
    seeds = pd.DataFrame({"id": ["i0", "i1"], "label": ["x", "y"]})
    with monkeypatch.context() as m:
        for module, name in ((simlabel.store, "load_embeddings"), (simlabel.store, "open_store"),
                             (simlabel.graph, "open_store"), (simlabel.graph, "as_embeddings")):
            m.setattr(module, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("read the store")))
        assert len(augment(store, seeds, k=5, graph=tmp_path / "g").labels) > 2
    more = _emb(n=30, seed=9)
    write_shard(store / "part-00001.parquet", np.array([f"new{j}" for j in range(30)], dtype=object), more.matrix,
                {"model": "test"})
    with pytest.raises(InputError, match="the store grew from 400 to 430 rows"):
        augment(store, seeds, k=5, graph=graph)
