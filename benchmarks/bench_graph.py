"""Issue 14: the k-NN graph at scale, the label methods on it, and label spreading against scikit-learn.

1. `simlabel.graph.build_graph` over N x 384 clustered unit vectors (bench_augment's mixture), k = 10 and
   k = 50, each in its own process: wall time, peak memory (ru_maxrss), the index chosen by `auto`, and
   recall@k against exact search on 1,000 rows.
2. On the k = 10 graph: `augment --graph` and `propagate --graph` (2,000 seeds per class), each in its own
   process: wall time and peak memory, against the same methods making their own queries (RESULTS §3).
3. `propagate --method spread` (block CG on the graph) against scikit-learn's `LabelSpreading(kernel='knn')`
   side by side on `--small` rows: time ratio and label agreement.

4. With ``--ray``: the overhead of ``--engine ray`` against ``--engine local`` on this one machine, side by
   side: embedding clothing-small (vector cache off) and the graph of ``--ray-n`` vectors.

5. With ``--on-disk``: the graph of ``--n`` vectors with its IVF lists in memory against ``on_disk=True``
   (the store read block by block, the lists merged on disk and memory-mapped), side by side in fresh
   processes: time, peak RSS, peak anonymous memory (what cannot be paged out: RSS minus the mapped
   files), recall@k and how far the two graphs agree.

Usage: python benchmarks/bench_graph.py [--n 1000000] [--small 50000] [--ray --ray-n 200000] [--on-disk] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def in_process(code: str) -> dict:
    """Run ``code`` (which prints one JSON line) in a fresh interpreter; add its wall time and peak RSS."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})
    seconds = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"failed:\n{code}\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.update(seconds=seconds, children_max_rss_gib=usage.ru_maxrss / 2**20)
    return out


def bench_spread(small: Path) -> dict:
    """``propagate --method spread`` on an exact and an IVF graph against ``LabelSpreading(kernel='knn')``."""
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
    for kind in ("flat", "ivf"):
        t0 = time.perf_counter()
        g = build_graph(e, None, GraphConfig(k=10, index=kind), progress=False)
        graph_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        made = propagate(e, seeds, k=10, method="spread", graph=g, alpha=0.99, power=1.0)
        table, res = made.labels, made.result
        solve_s = time.perf_counter() - t0
        got = pd.Index(e.ids).get_indexer(table["id"])
        agree = float((ls.transduction_[got] == (table["label"] == "pos").to_numpy().astype(int)).mean())
        out[kind] = {"graph_s": graph_s, "solve_s": solve_s, "recall": g.meta["recall_at_k"], "agreement": agree,
                     "labels": len(table), "cg_iterations": res.steps,
                     "ratio_solve": out["sklearn_s"] / solve_s, "ratio_end_to_end": out["sklearn_s"] / (graph_s + solve_s)}
        print(f"spread on a {kind} graph: graph {graph_s:.1f} s + solve {solve_s:.2f} s vs LabelSpreading {out['sklearn_s']:.1f} s "
              f"(solve {out['sklearn_s'] / solve_s:.0f}x, end to end {out['sklearn_s'] / (graph_s + solve_s):.1f}x), "
              f"agreement {agree:.4f} on {len(table):,} labels", flush=True)
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


_PEAK_ANON = """
import threading, time
_peak = [0]
def _watch():
    while True:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    _peak[0] = max(_peak[0], int(line.split()[1]))
        time.sleep(0.1)
threading.Thread(target=_watch, daemon=True).start()
"""


def bench_on_disk(n: int, k: int = 10) -> dict:
    """The graph with its IVF lists in memory against ``on_disk=True``, side by side, each in a fresh process."""
    from bench_augment import write_universe

    out: dict = {"n": n, "k": k}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_universe(root, n, 384, 2, 10)
        for mode, opts in (("in_memory", "index='ivf'"), ("on_disk", "on_disk=True")):
            code = (_PEAK_ANON + "import json, resource\nfrom simlabel.graph import build_graph, GraphConfig\n"
                    f"g = build_graph({str(root / 'emb')!r}, {str(root / mode)!r}, GraphConfig(k={k}, {opts}), progress=False)\n"
                    "print(json.dumps({'recall': g.meta['recall_at_k'], 'index': g.meta['index'], "
                    "'rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 'anon_gib': _peak[0] / 2**20}))")
            r = in_process(code)
            out[mode] = r
            print(f"graph of {n:,} (k={k}) {mode}: {r['seconds']:.0f} s, peak RSS {r['rss_gib']:.2f} GiB, "
                  f"peak anonymous {r['anon_gib']:.2f} GiB, recall@{k} {r['recall']:.3f}", flush=True)
        from simlabel.graph import load_graph

        a, b = load_graph(root / "in_memory"), load_graph(root / "on_disk")
        same = (np.sort(a.neighbors, 1) == np.sort(b.neighbors, 1)).all(axis=1)
        out["rows_identical"] = float(same.mean())
        out["store_gib"] = sum(p.stat().st_size for p in (root / "emb").glob("part-*.parquet")) / 2**30
        print(f"rows with identical neighbours: {out['rows_identical']:.4f}; store {out['store_gib']:.2f} GiB on disk", flush=True)
    out["time_on_disk_over_in_memory"] = out["on_disk"]["seconds"] / out["in_memory"]["seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--ray", action="store_true", help="also measure --engine ray against local")
    ap.add_argument("--ray-n", type=int, default=200_000)
    ap.add_argument("--on-disk", action="store_true", help="also measure the on-disk graph against the in-memory one at --n")
    ap.add_argument("--skip-scale", action="store_true", help="only the Ray / on-disk comparisons")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from bench_augment import write_universe

    print(f"machine: {os.cpu_count()} cores, flags: {cpu_flags()}", flush=True)
    results: dict = {"machine": cpu_flags(), "n": args.n}
    if args.ray:
        results["ray"] = bench_ray(args.ray_n)
    if args.on_disk:
        results["on_disk"] = bench_on_disk(args.n)
    if args.skip_scale:
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        results["universe"] = write_universe(root, args.n, 384, 0, 2000)
        for k in args.ks:
            code = (f"import json, resource; from simlabel.graph import build_graph, GraphConfig\n"
                    f"g = build_graph({str(root / 'emb')!r}, {str(root / f'graph{k}')!r}, GraphConfig(k={k}), progress=False)\n"
                    "print(json.dumps({'kind': g.meta['index']['kind'], 'recall': g.meta['recall_at_k'], "
                    "'rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))")
            r = in_process(code)
            results[f"graph_k{k}"] = r
            print(f"graph k={k}: {r['seconds']:.0f} s, {r['rss_gib']:.2f} GiB, {r['kind']}, recall@{k} {r['recall']:.3f}", flush=True)
        g10 = root / f"graph{min(args.ks)}"
        for name, call in (("augment", f"augment({str(root / 'emb')!r}, {str(root / 'seeds.csv')!r}, k=10, graph={str(g10)!r})"),
                           ("propagate", f"propagate({str(root / 'emb')!r}, {str(root / 'seeds.csv')!r}, k=10, steps=4, graph={str(g10)!r})"),
                           ("spread", f"propagate({str(root / 'emb')!r}, {str(root / 'seeds.csv')!r}, k=10, method='spread', graph={str(g10)!r})")):
            code = ("import json, resource\nfrom simlabel.labels.augment import augment\nfrom simlabel.labels.propagate import propagate\n"
                    f"out = {call}\n"
                    "print(json.dumps({'labels': len(out.labels), 'rss_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))")
            r = in_process(code)
            results[f"{name}_graph"] = r
            print(f"{name} --graph: {r['seconds']:.1f} s, {r['rss_gib']:.2f} GiB, {r['labels']:,} labels", flush=True)

        # 3. spreading against scikit-learn on the small universe: the graph and the solve timed apart
        small = root / "small"
        write_universe(small, args.small, 384, 1, 2000)
        results["vs_sklearn"] = bench_spread(small)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
