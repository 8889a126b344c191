"""Issue 25: `simlabel graph --update` against a rebuild, side by side in one run.

An N x D mixture store (bench_augment's unit vectors) grows by ``--new`` (1%) rows at the end; the k-NN graph of
the old rows, built once (not timed), is updated with the new rows (`update_graph`) and, for comparison, the
grown store's graph is built again with the same index. Wall time, the ratio, and (with the flat index) whether
every list is identical; with IVF, the recall@k of both.

Usage: python benchmarks/bench_graph_update.py [--n 200000] [--dim 384] [--new 0.01] [--k 10] [--index flat]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_augment import mixture  # noqa: E402
from machine import cpu_flags  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--new", type=float, default=0.01)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--index", default="flat")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from simlabel.graph import GraphConfig, build_graph, update_graph
    from simlabel.store import Embeddings

    X, _ = mixture(args.n, args.dim, max(2, args.n // 1000), 0)
    X = np.ascontiguousarray(X, dtype=np.float32)
    ids = np.array([f"p{i}" for i in range(args.n)], dtype=object)
    n_old = args.n - int(round(args.new * args.n))
    meta = {"path": "bench", "model": "synthetic-mixture"}
    old, grown = Embeddings(ids[:n_old], X[:n_old], meta), Embeddings(ids, X, meta)
    cfg = GraphConfig(k=args.k, index=args.index, recall_sample=1000)
    t0 = time.perf_counter()
    g_old = build_graph(old, config=cfg, progress=False)
    old_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    up = update_graph(g_old, grown, progress=False)
    update_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = build_graph(grown, config=cfg, progress=False)
    rebuild_s = time.perf_counter() - t0
    out = {"cpu_flags": cpu_flags(), "n": args.n, "dim": args.dim, "new_rows": args.n - n_old, "k": args.k,
           "index": args.index, "old_build_s": old_s, "update_s": update_s, "rebuild_s": rebuild_s,
           "speedup": rebuild_s / update_s, "identical_lists": float((up.neighbors == again.neighbors).mean()),
           "recall_update": up.meta["recall_at_k"], "recall_rebuild": again.meta["recall_at_k"]}
    print(f"CPU flags: {out['cpu_flags']}")
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
