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
    assert g.ids.tolist() == e.ids.tolist() and g.meta["recall_at_k"] == 1.0 and g.meta["n_blocks"] == 4
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


@pytest.mark.parametrize("stage", ["parts", "blocks"])
def test_a_killed_on_disk_build_resumes(tmp_path: Path, stage: str):
    e = _emb(n=1200, clusters=6)
    store = _sharded_store(tmp_path / "emb", e, [500, 500, 200])
    fn = "_index_part" if stage == "parts" else "_write_block"
    code = ("import sys\n"
            "import simlabel.graph as G\n"
            f"orig, count = G.{fn}, [0]\n"
            "def dying(*a, **k):\n"
            "    orig(*a, **k); count[0] += 1\n"
            "    if count[0] == 2:\n"
            "        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
            f"G.{fn} = dying\n"
            "G.build_graph(sys.argv[1], sys.argv[2], G.GraphConfig(k=5, block_rows=300, on_disk=True, "
            "index_options={'ivf_nlist': 8}), progress=False)\n")
    out = tmp_path / "g"
    proc = subprocess.run([sys.executable, "-c", code, str(store), str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-1500:]
    kept = sorted((out / "index").glob("part-*.faiss")) if stage == "parts" else sorted((out / "blocks").glob("*.parquet"))
    assert len(kept) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    trained = (out / "index" / "trained.faiss").stat().st_mtime_ns
    with pytest.raises(StoreError, match="still being built"):
        load_graph(out)
    if stage == "blocks":
        assert (out / "index" / "lists.faiss").exists()  # merged before the first block: reused, not rebuilt
    import simlabel.graph
    import simlabel.index

    calls: dict[str, list] = {"train": [], "parts": []}
    orig_train, orig_part = simlabel.index.train_ivf_file, simlabel.graph._index_part
    simlabel.index.train_ivf_file = lambda *a, **k: calls["train"].append(a) or orig_train(*a, **k)
    simlabel.graph._index_part = lambda *a, **k: calls["parts"].append(a[3]) or orig_part(*a, **k)
    try:
        g = build_graph(store, out, GraphConfig(k=5, block_rows=300, on_disk=True, index_options={"ivf_nlist": 8}),
                        progress=False)
    finally:
        simlabel.index.train_ivf_file, simlabel.graph._index_part = orig_train, orig_part
    assert calls["train"] == []  # the trained index was kept, not trained again
    # only the parts the killed run had not written are built (rows 600.., 900..); none once merged
    assert calls["parts"] == ([600, 900] if stage == "parts" else [])
    assert g.meta["state"] == "complete"
    fresh = build_graph(store, tmp_path / "fresh", GraphConfig(k=5, block_rows=300, on_disk=True,
                        index_options={"ivf_nlist": 8}), progress=False)
    assert np.array_equal(g.neighbors, fresh.neighbors)
    if stage == "blocks":
        assert {p: p.stat().st_mtime_ns for p in kept} == mtimes  # finished blocks not redone
    assert (out / "graph.json").stat().st_mtime_ns > trained


def test_cli_graph_on_disk(tmp_path: Path):
    from typer.testing import CliRunner

    from simlabel.cli import app

    e = _emb(n=600)
    store = _sharded_store(tmp_path / "emb", e, [250, 350])
    res = CliRunner().invoke(app, ["graph", str(store), "--k", "5", "--out", str(tmp_path / "g"), "--on-disk",
                                   "--nlist", "8", "--nprobe", "8", "--block-rows", "200", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "k = 5 graph of 600 rows (ivf, chosen by auto, lists on disk; recall@5 1.000" in " ".join(res.output.split())
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
