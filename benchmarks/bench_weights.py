"""Scale benchmark for paper 003's pieces: search, stage-1 weights, stage-2 text matching.

Each task runs in its own process, so its wall time and peak memory (ru_maxrss) are its own:

* ``search``: BM25 over the fashion-products titles repeated to ``--titles`` rows (default
  958,300), 75 article-type queries, top 1,000 each (`simlabel.labels.search.search_labels`).
* ``stage1``: stage-1 weights (rank + neighbour agreement) of ``--n`` (default 1,000,000)
  search-labelled items, 384-d embeddings drawn from a mixture of ``--categories`` (1,000)
  clusters, 25% of the labels replaced by a random category and pushed down the ranks
  (`simlabel.labels.side_info.stage1_table`, ``index="auto"``: IVF at this size).
* ``exact-vs-ivf``: stage 1 at ``--small`` (100,000) items with the exact flat search and with
  IVF, side by side: time ratio and agreement difference.
* ``stage2``: the stage-2 numerical core on ``--n`` items: keyword extraction over titles,
  prediction match from top-5 predictions (`extract_keywords`, `prediction_match`).

Usage: python benchmarks/bench_weights.py [--n 1000000] [--small 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FASHION = HERE.parent.parent / "shared" / "datasets" / "fashion-products" / "catalog.csv"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthetic(n: int, dim: int, n_cat: int, seed: int = 0, noise: float = 0.25):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_cat, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, n_cat, n)
    X = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        c = truth[s : s + 100_000]
        block = centres[c] + rng.standard_normal((len(c), dim)).astype(np.float32) * (1.8 / np.sqrt(dim))
        X[s : s + 100_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    wrong = rng.random(n) < noise
    labels = np.where(wrong, rng.integers(0, n_cat, n), truth)
    wrong = labels != truth
    depth = 1000
    rank = np.where(wrong, rng.integers(depth // 3, depth + 1, n), rng.integers(1, depth + 1, n)).astype(float)
    return X, labels, truth, rank, wrong


def semantics(n_cat: int, k: int = 5, seed: int = 1):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n_cat, 64))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = np.clip(e @ e.T, 0, 1)
    np.fill_diagonal(s, 1.0)
    from simlabel.semantics.names import nearest_labels

    return s, nearest_labels(s, k)


def task_search(args) -> dict:
    from simlabel.labels.search import SearchConfig, search_labels

    df = pd.read_csv(FASHION, dtype=str, keep_default_na=False)
    reps = -(-args.titles // len(df))
    titles = np.tile(df["title"].to_numpy(), reps)[: args.titles]
    ids = np.arange(len(titles)).astype(str)
    cats = sorted(df["article_type"].unique())
    t0 = time.perf_counter()
    out = search_labels(ids, titles, cats, SearchConfig(top_r=1000)).labels
    return {"task": "search", "titles": len(titles), "queries": len(cats), "rows": len(out),
            "seconds": time.perf_counter() - t0, "peak_gib": peak_gib()}


def task_stage1(args, n: int, index: str) -> dict:
    from sklearn.metrics import roc_auc_score

    from simlabel.labels.side_info import SideInfoConfig, stage1_table

    X, labels, truth, rank, wrong = synthetic(n, 384, args.categories)
    s, related = semantics(args.categories)
    cats = [f"c{i:04d}" for i in range(args.categories)]
    names = np.array(cats)[labels]
    t0 = time.perf_counter()
    t = stage1_table(X, names, rank, cats, s, related, SideInfoConfig(index=index), depth=1000.0)
    secs = time.perf_counter() - t0
    np.save(Path(args.tmp) / f"agree-{n}-{index}.npy", t["agreement"].to_numpy())
    return {"task": f"stage1-{index}", "n": n, "categories": args.categories, "seconds": secs, "peak_gib": peak_gib(),
            "noise_rate": float(wrong.mean()), "auc_weight": float(roc_auc_score(~wrong, t["weight"])),
            "auc_agreement": float(roc_auc_score(~wrong, t["agreement"]))}


def task_stage2(args) -> dict:
    from simlabel.labels.side_info import extract_keywords, prediction_match

    df = pd.read_csv(FASHION, dtype=str, keep_default_na=False)
    titles = np.tile(df["title"].to_numpy(), -(-args.n // len(df)))[: args.n]
    rng = np.random.default_rng(0)
    c = args.categories
    s, _ = semantics(c)
    t0 = time.perf_counter()
    kw, vocab = extract_keywords(titles, top=5)
    t_kw = time.perf_counter() - t0
    idx = rng.integers(0, c, (args.n, 5))
    p = rng.dirichlet(np.ones(5), args.n).astype(np.float32)
    y = rng.integers(0, c, args.n)
    t1 = time.perf_counter()
    pm = prediction_match((idx, p), y, s)
    t_pm = time.perf_counter() - t1
    return {"task": "stage2-core", "n": args.n, "vocabulary": len(vocab), "keywords_seconds": t_kw,
            "prediction_match_seconds": t_pm, "mean_match": float(pm.mean()), "peak_gib": peak_gib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--titles", type=int, default=958_300)
    ap.add_argument("--categories", type=int, default=1000)
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.task:
        name, *rest = args.task.split(":")
        if name == "search":
            res = task_search(args)
        elif name == "stage1":
            res = task_stage1(args, int(rest[0]), rest[1])
        else:
            res = task_stage2(args)
        print("RESULT " + json.dumps(res), flush=True)
        return
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = ["search", f"stage1:{args.n}:auto", f"stage1:{args.small}:flat", f"stage1:{args.small}:ivf", "stage2"]
        for task in tasks:
            cmd = [sys.executable, __file__, "--task", task, "--n", str(args.n), "--small", str(args.small),
                   "--titles", str(args.titles), "--categories", str(args.categories), "--tmp", tmp]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            print(json.dumps(res), flush=True)
            results.append(res)
        flat = np.load(Path(tmp) / f"agree-{args.small}-flat.npy")
        ivf = np.load(Path(tmp) / f"agree-{args.small}-ivf.npy")
        by = {r["task"]: r for r in results if r.get("n") == args.small}
        side = {"task": "exact-vs-ivf", "n": args.small,
                "speedup_ivf_over_flat": by["stage1-flat"]["seconds"] / by["stage1-ivf"]["seconds"],
                "mean_abs_agreement_diff": float(np.abs(flat - ivf).mean())}
        print(json.dumps(side))
        results.append(side)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
