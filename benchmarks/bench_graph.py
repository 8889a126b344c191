"""Issues 14 and 29: the k-NN graph at the recall asked for, the label methods on it, spreading against scikit-learn.

1. ``simlabel.graph.build_graph`` over N x 384 clustered unit vectors (bench_augment's mixture) at the default
   ``recall=0.95`` (``auto``: the IVF join of ``simlabel.allpairs`` tuned on 500 rows), for each ``--ks``, in
   its own process: wall time, peak RSS, peak anonymous memory, the lists and probes chosen, and recall@k
   against exact search on 1,000 fresh rows. With ``--on-disk`` the same build with ``on_disk=True`` beside it.
2. With ``--compare``: the index families at N, each in its own process, recall@10 measured the same way:
   FAISS's IVF-flat *search* (queries in list order) on the join's own lists and probes; IVF with SQ8 codes and
   with PQ codes (48 x 8 bits), their probes tuned on 500 rows to the target where they reach it; HNSW
   (``index="hnsw"``, efSearch tuned); FAISS's NN-descent (``IndexNNDescentFlat``, its graph read directly).
3. On the k = 10 graph, each label method in its own process, the graph loaded first and timed apart, and
   the memory above it: ``augment``, ``propagate`` (4 steps), ``propagate --method spread``, ``suspects``
   (every row labelled, 10% of the labels flipped) and ``select`` (ProbCover, which reads the vectors for its
   k-means; the graph for everything else). Each is given the graph alone (``emb=None``): no vector is read.
4. ``propagate --method spread`` with its graph built at the tuned recall, end to end, against scikit-learn's
   ``LabelSpreading(kernel='knn')`` on ``--small`` rows: time ratio and label agreement.

``--cap avx2`` runs every child process with the AVX-512 kernels of OpenBLAS (``OPENBLAS_CORETYPE=Haswell``),
FAISS (``FAISS_OPT_LEVEL=avx2``) and numpy (``NPY_DISABLE_CPU_FEATURES``) switched off: an emulation of the AVX2
kind on an AVX-512 machine (the caches and clocks stay this machine's).

Usage: python benchmarks/bench_graph.py [--n 1000000] [--small 50000] [--ks 10] [--on-disk] [--compare]
       [--cap avx2] [--ray --ray-n 200000] [--skip-methods | --only-spread] [--root DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402

#: what ``--cap avx2`` sets in every child process
AVX2_CAP = {"OPENBLAS_CORETYPE": "Haswell", "FAISS_OPT_LEVEL": "avx2",
            "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
CAP: dict = {}

#: peak anonymous memory (RssAnon: what cannot be paged out), sampled every 0.05 s, and RSS now
_WATCH = """
import threading, time, resource
_peak = [0]
def _watch():
    while True:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    _peak[0] = max(_peak[0], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=_watch, daemon=True).start()
def _rss_now():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) / 2**20
def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
"""


def in_process(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter; add its wall time."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WATCH + code], capture_output=True, text=True,
                         env={**os.environ, **CAP, "PYTHONPATH": str(HERE.parent / "src")})
    seconds = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"failed:\n{code}\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["seconds"] = round(seconds, 2)
    return out


def bench_build(root: Path, k: int, on_disk: bool = False, name: str | None = None) -> dict:
    name = name or f"graph{k}" + ("-disk" if on_disk else "")
    code = ("import json\nfrom simlabel.graph import build_graph, GraphConfig\n"
            f"g = build_graph({str(root / 'emb')!r}, {str(root / name)!r}, GraphConfig(k={k}, on_disk={on_disk}), progress=False)\n"
            "t = {key: v for key, v in g.meta['tuning'].items() if key != 'trials'}\n"
            "print(json.dumps({'kind': g.meta['index']['kind'], 'recall': g.meta['recall_at_k'], 'tuning': t, "
            "'trials': g.meta['tuning'].get('trials'), 'short_rows': g.meta.get('rows_searched_exactly', 0), "
            "'rss_gib': _peak_rss(), 'anon_gib': _peak[0] / 2**20}))")
    r = in_process(code)
    print(f"graph k={k}{' on disk' if on_disk else ''}: {r['seconds']:.1f} s, peak RSS {r['rss_gib']:.2f} GiB, "
          f"peak anonymous {r['anon_gib']:.2f} GiB, {r['kind']} {r['tuning']}, recall@{k} {r['recall']:.4f}", flush=True)
    return r


_FAISS_COMMON = """
import json, time, numpy as np, faiss
from simlabel.store import open_store
from simlabel.allpairs import exact_sample, lower_bound, unit
from simlabel.index import recall_per_row
rows = open_store({emb!r})
n, k = len(rows), 10
X = np.empty((n, rows.dim), np.float32)
for s, B in rows.blocks(65536):
    X[s:s + len(B)] = unit(B)
rows = type(rows)(rows.ids, {{**rows.meta, 'space': rows.space, 'fingerprint': rows.fingerprint}}, rows.dim, matrix=X)
rng = np.random.default_rng(1)
tune = np.sort(rng.choice(n, 500, replace=False))
fresh = np.sort(np.random.default_rng(0).choice(np.setdiff1d(np.arange(n), tune), 1000, replace=False))
ex_tune, ex_fresh = exact_sample(rows, tune, k), exact_sample(rows, fresh, k)
t0 = time.perf_counter()
def search_all(index):
    order = np.argsort(index.quantizer.search(X, 1)[1].ravel(), kind='stable')  # queries in list order
    I = np.empty((n, k + 1), np.int64)
    for a in range(0, n, 65536):
        I[order[a:a + 65536]] = index.search(X[order[a:a + 65536]], k + 1)[1]
    return I
def drop_self(I, q):
    return np.array([[j for j in r if j != s][:k] for r, s in zip(I, q)])
def smallest_reaching(index, set_param, values):
    # the first setting whose recall's lower bound on the tuning rows reaches the target (else the last)
    for v in values:
        set_param(v)
        low = lower_bound(recall_per_row(drop_self(index.search(X[tune], k + 1)[1], tune), ex_tune.neighbors))
        if low >= {target}:
            break
    return v, low
"""


def bench_family(root: Path, family: str, target: float, join: dict) -> dict:
    """One index family at n, in its own process: build + every row's k + 1 neighbours, recall on fresh rows."""
    body = {
        "ivf-flat search": f"""
q = faiss.IndexFlatIP(X.shape[1]); index = faiss.IndexIVFFlat(q, X.shape[1], {join['nlist']}, faiss.METRIC_INNER_PRODUCT)
index.train(X[rng.choice(n, 40 * {join['nlist']}, replace=False)]); index.add(X); index.nprobe = {join['nprobe']}
I = search_all(index); setting = {{'nlist': {join['nlist']}, 'nprobe': {join['nprobe']}}}
""",
        "ivf-sq8": f"""
q = faiss.IndexFlatIP(X.shape[1]); index = faiss.IndexIVFScalarQuantizer(q, X.shape[1], {join['nlist']}, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
index.train(X[rng.choice(n, 40 * {join['nlist']}, replace=False)]); index.add(X)
p, low = smallest_reaching(index, lambda v: setattr(index, 'nprobe', v), (1, 2, 4, 8, 16, 32))
I = search_all(index); setting = {{'nlist': {join['nlist']}, 'nprobe': p, 'tuned_recall_low': low}}
""",
        "ivf-pq48": f"""
q = faiss.IndexFlatIP(X.shape[1]); index = faiss.IndexIVFPQ(q, X.shape[1], {join['nlist']}, 48, 8, faiss.METRIC_INNER_PRODUCT)
index.train(X[rng.choice(n, min(n, max(40 * {join["nlist"]}, 65536)), replace=False)]); index.add(X)
p, low = smallest_reaching(index, lambda v: setattr(index, 'nprobe', v), (1, 2, 4, 8, 16, 32))
I = search_all(index); setting = {{'nlist': {join['nlist']}, 'nprobe': p, 'tuned_recall_low': low}}
""",
        "hnsw": """
index = faiss.IndexHNSWFlat(X.shape[1], 32, faiss.METRIC_INNER_PRODUCT); index.hnsw.efConstruction = 80; index.add(X)
tb = time.perf_counter() - t0
ef, low = smallest_reaching(index, lambda v: setattr(index.hnsw, 'efSearch', v), (16, 32, 64, 128, 256))
I = np.empty((n, k + 1), np.int64)
for a in range(0, n, 65536):
    I[a:a + 65536] = index.search(X[a:a + 65536], k + 1)[1]
setting = {'M': 32, 'efConstruction': 80, 'efSearch': ef, 'tuned_recall_low': low, 'build_s': round(tb, 1)}
""",
        "nndescent": """
index = faiss.IndexNNDescentFlat(X.shape[1], 32, faiss.METRIC_INNER_PRODUCT); index.add(X)
G = faiss.vector_to_array(index.nndescent.final_graph).reshape(n, -1)
I = np.concatenate([np.arange(n)[:, None], G[:, :k]], axis=1)  # its graph holds no self: put one in to drop
setting = {'K': 32, 'iterations': int(index.nndescent.iter)}
""",
    }[family]
    code = (_FAISS_COMMON.format(emb=str(root / "emb"), target=target) + body +
            "secs = time.perf_counter() - t0\n"
            "nb = drop_self(I[fresh], fresh)\n"
            "print(json.dumps({'family': %r, 'index_and_query_s': round(secs, 1), 'setting': setting, "
            "'recall': float(recall_per_row(nb, ex_fresh.neighbors).mean()), 'rss_gib': _peak_rss(), "
            "'anon_gib': _peak[0] / 2**20}))" % family)
    r = in_process(code)
    print(f"{family}: index + queries {r['index_and_query_s']:.1f} s (process {r['seconds']:.0f} s), recall@10 "
          f"{r['recall']:.4f}, {r['setting']}, peak anonymous {r['anon_gib']:.2f} GiB", flush=True)
    return r


def bench_methods(root: Path, graph: Path) -> dict:
    """Each method on the graph alone (``emb=None``), in its own process: the graph's load timed apart, and the
    memory above it (peak RSS minus the RSS with the graph loaded)."""
    out: dict = {}
    calls = {
        "augment": "from simlabel.labels.augment import augment\nm = lambda: augment(None, SEEDS, k=10, graph=g)",
        "propagate": "from simlabel.labels.propagate import propagate\nm = lambda: propagate(None, SEEDS, k=10, steps=4, graph=g)",
        "spread": "from simlabel.labels.propagate import propagate\nm = lambda: propagate(None, SEEDS, k=10, method='spread', graph=g)",
        "spread (tol 1e-4)": "from simlabel.labels.propagate import propagate\n"
                             "m = lambda: propagate(None, SEEDS, k=10, method='spread', graph=g, tol=1e-4)",
        "suspects": "from simlabel.labels.suspects import find_suspects, SuspectsConfig\n"
                    "m = lambda: find_suspects(None, NOISY, SuspectsConfig(k=10), graph=g)",
        "select (probcover)": "from simlabel.selection import select_items, SelectConfig\n"
                              f"m = lambda: select_items({str(root / 'emb')!r}, 100, SelectConfig(strategy='probcover'), labels=SEEDS, graph=g)",
    }
    for name, call in calls.items():
        code = ("import json, time\nfrom simlabel.graph import load_graph\n"
                f"SEEDS, NOISY = {str(root / 'seeds.csv')!r}, {str(root / 'noisy.csv')!r}\n"
                f"t = time.perf_counter(); g = load_graph({str(graph)!r}); load_s = time.perf_counter() - t\n"
                f"base = _rss_now()\n{call}\n"
                "t = time.perf_counter(); r = m(); s = time.perf_counter() - t\n"
                "print(json.dumps({'load_s': load_s, 'method_s': s, 'labels': len(r.labels if hasattr(r, 'labels') else r.table), "
                "'graph_rss_gib': base, 'above_graph_gib': _peak_rss() - base}))")
        r = in_process(code)
        out[name] = r
        print(f"{name}: graph loaded in {r['load_s']:.2f} s ({r['graph_rss_gib']:.2f} GiB), method {r['method_s']:.2f} s, "
              f"{r['above_graph_gib']:.2f} GiB above the graph, {r['labels']:,} rows out", flush=True)
    return out


def bench_spread(small: Path) -> dict:
    """``simlabel graph`` (tuned to recall 0.95) + ``propagate --method spread`` end to end against
    ``LabelSpreading(kernel='knn')``, both from the same vectors, in this process."""
    from sklearn.semi_supervised import LabelSpreading

    from simlabel.graph import GraphConfig, build_graph
    from simlabel.labels.propagate import propagate
    from simlabel.store import load_embeddings

    e = load_embeddings(small / "emb")
    seeds = pd.read_csv(small / "seeds.csv", dtype=str)
    y = np.full(len(e.ids), -1)
    y[pd.Index(e.ids).get_indexer(seeds["id"])] = (seeds["label"] == "pos").to_numpy().astype(int)
    t0 = time.perf_counter()
    ls = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.99, max_iter=1000).fit(e.matrix, y)
    out: dict = {"n": len(e.ids), "sklearn_s": time.perf_counter() - t0}
    for recall in (0.95, 1.0):
        t0 = time.perf_counter()
        g = build_graph(e, None, GraphConfig(k=10, recall=recall), progress=False)
        graph_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        made = propagate(e, seeds, k=10, method="spread", graph=g, alpha=0.99, power=1.0)
        solve_s = time.perf_counter() - t0
        got = pd.Index(e.ids).get_indexer(made.labels["id"])
        agree = float((ls.transduction_[got] == (made.labels["label"] == "pos").to_numpy().astype(int)).mean())
        out[f"recall_{recall}"] = {
            "graph_s": graph_s, "solve_s": solve_s, "kind": g.meta["index"]["kind"], "recall": g.meta["recall_at_k"],
            "tuning": {key: v for key, v in (g.meta.get("tuning") or {}).items() if key != "trials"},
            "agreement": agree, "labels": len(made.labels), "cg_iterations": made.result.steps,
            "ratio_end_to_end": out["sklearn_s"] / (graph_s + solve_s)}
    return out


def bench_ray(n: int) -> dict:
    """--engine ray against local on this machine, each in its own process, side by side."""
    from bench_augment import write_universe

    data = HERE.parent.parent / "shared" / "datasets" / "clothing-small"
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for engine in ("local", "ray"):
            code = ("import json\nfrom simlabel.embedding import embed\n"
                    f"r = embed({str(data)!r}, {str(root / ('emb-' + engine))!r}, progress=False, cache=False, engine={engine!r})\n"
                    "print(json.dumps({'n': r.n_embedded}))")
            out[f"embed_{engine}"] = in_process(code)
            print(f"embed clothing-small --engine {engine}: {out[f'embed_{engine}']['seconds']:.1f} s", flush=True)
        write_universe(root / "u", n, 384, 3, 10)
        for engine in ("local", "ray"):
            code = ("import json\nfrom simlabel.graph import build_graph, GraphConfig\n"
                    f"g = build_graph({str(root / 'u' / 'emb')!r}, {str(root / ('g-' + engine))!r}, "
                    f"GraphConfig(k=10, engine={engine!r}, recall_sample=0), progress=False)\n"
                    "print(json.dumps({'kind': g.meta['index']['kind']}))")
            out[f"graph_{engine}"] = in_process(code)
            print(f"graph of {n:,} --engine {engine}: {out[f'graph_{engine}']['seconds']:.1f} s", flush=True)
    out["embed_ray_over_local"] = out["embed_ray"]["seconds"] / out["embed_local"]["seconds"]
    out["graph_ray_over_local"] = out["graph_ray"]["seconds"] / out["graph_local"]["seconds"]
    return out


def write_noisy(root: Path, rate: float = 0.1, seed: int = 0) -> None:
    """Every row labelled by its class, ``rate`` of the labels flipped: what ``suspects`` looks through."""
    truth = pd.read_csv(root / "truth.csv", dtype=str)
    flip = np.random.default_rng(seed).random(len(truth)) < rate
    truth.loc[flip, "label"] = np.where(truth.loc[flip, "label"] == "pos", "neg", "pos")
    truth.to_csv(root / "noisy.csv", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[10])
    ap.add_argument("--on-disk", action="store_true", help="also build the graph with on_disk=True beside the in-memory one")
    ap.add_argument("--compare", action="store_true", help="also measure the other index families at --n")
    ap.add_argument("--cap", choices=["avx2"], help="run the children with the AVX-512 kernels switched off")
    ap.add_argument("--ray", action="store_true", help="also measure --engine ray against local")
    ap.add_argument("--ray-n", type=int, default=200_000)
    ap.add_argument("--skip-methods", action="store_true", help="the graphs only")
    ap.add_argument("--only-spread", action="store_true", help="only spreading against scikit-learn at --small")
    ap.add_argument("--root", type=Path, help="keep the universe here (written once, reused)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from bench_augment import write_universe

    if args.cap:
        CAP.update(AVX2_CAP)
    flags = cpu_flags() + (f" (children capped to AVX2: {' '.join(f'{k}={v}' for k, v in AVX2_CAP.items())})" if args.cap else "")
    print(f"machine: {os.cpu_count()} cores, flags: {flags}", flush=True)
    results: dict = {"machine": flags, "n": args.n}
    if args.ray:
        results["ray"] = bench_ray(args.ray_n)
    with tempfile.TemporaryDirectory() as d:
        root = args.root or Path(d)
        if not (root / "emb").exists():
            results["universe"] = write_universe(root, args.n, 384, 0, 2000)
        write_noisy(root)
        for k in ([] if args.only_spread else args.ks):
            results[f"graph_k{k}"] = bench_build(root, k)
            if args.on_disk:
                results[f"graph_k{k}_on_disk"] = bench_build(root, k, on_disk=True)
                results[f"graph_k{k}_on_disk"]["over_in_memory"] = (results[f"graph_k{k}_on_disk"]["seconds"]
                                                                    / results[f"graph_k{k}"]["seconds"])
        if args.compare:
            join = results[f"graph_k{args.ks[0]}"]["tuning"]
            results["families"] = {f: bench_family(root, f, 0.95, join)
                                   for f in ("ivf-flat search", "ivf-sq8", "ivf-pq48", "nndescent", "hnsw")}
        if not args.skip_methods:
            if not args.only_spread:
                results["methods"] = bench_methods(root, root / f"graph{min(args.ks)}")
            small = root / "small"
            if not (small / "emb").exists():
                write_universe(small, args.small, 384, 1, 2000)
            code = (f"import sys, json\nsys.path.insert(0, {str(HERE)!r})\nfrom pathlib import Path\n"
                    f"from bench_graph import bench_spread\nprint(json.dumps(bench_spread(Path({str(small)!r}))))")
            results["vs_sklearn"] = vs = in_process(code)
            for key in ("recall_0.95", "recall_1.0"):
                r = vs[key]
                print(f"spread, graph at {key.replace('_', ' ')} ({r['kind']}, measured {r['recall']:.3f}, {r['tuning']}): "
                      f"graph {r['graph_s']:.2f} s + solve {r['solve_s']:.2f} s vs LabelSpreading {vs['sklearn_s']:.1f} s: "
                      f"{r['ratio_end_to_end']:.1f}x end to end, agreement {r['agreement']:.4f} on {r['labels']:,} labels",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
