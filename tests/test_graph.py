"""simlabel.graph: the k-NN graph as a file, reused by the label methods, and its sparse views."""

from __future__ import annotations

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
    with pytest.raises(InputError, match="holds k = 6 neighbours per row, but 10 are asked for; rebuild it with --k 10"):
        g.knn_positions(np.arange(3), 10)
    with pytest.raises(InputError, match="k = 300 needs more than 300 rows"):
        build_graph(_emb(), None, GraphConfig(k=300), progress=False)


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
    direct, _, _ = augment(e, seeds, k=10)
    via, _, _ = augment(e, seeds, k=10, graph=tmp_path / "g")
    pd.testing.assert_frame_equal(direct, via)
    with pytest.raises(InputError, match="rebuild it with --k 20"):
        augment(e, seeds, k=20, graph=g)
    p_direct, _ = propagate(e, seeds, k=10, steps=5)
    p_via, _ = propagate(e, seeds, k=10, steps=5, graph=g)
    pd.testing.assert_frame_equal(p_direct, p_via)
    s_direct, _ = propagate(e, seeds, k=10, method="spread")
    s_via, res = propagate(e, seeds, k=10, method="spread", graph=g)
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
    assert summary["neighbours"]["graph"] == str(tmp_path / "g") and summary["neighbours"]["k"] == 10
    augment(e, seeds, k=10, out=tmp_path / "aug2.csv")
    assert json.loads((tmp_path / "aug2.csv.summary.json").read_text())["neighbours"] == {"index": "flat"}
