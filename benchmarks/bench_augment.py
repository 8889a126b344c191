"""Scale benchmark for paper 000's label methods (issue: paper 000 end to end).

1. Augmentation and propagation on N x 384 synthetic clustered unit vectors (a Gaussian mixture), k = 10,
   2,000 seeds per class for 2 classes, through the public file API (`simlabel.labels.augment.augment`,
   `simlabel.labels.propagate.propagate`) on an embedding folder written with `simlabel.store`.
   Each task runs in its own process so its wall time and peak memory (ru_maxrss) are its own.
2. scikit-learn `LabelSpreading(kernel='knn', n_neighbors=10)` side by side with `propagate` on a
   smaller universe (default 50,000): time ratio and agreement of the labels.

Usage: python benchmarks/bench_augment.py [--n 1000000] [--small 50000] [--index-kind ivf] [--json out.json]
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


def mixture(n: int, dim: int, n_clusters: int, seed: int, noise: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``n_clusters`` random centres (noise of norm ``noise`` against centres of
    norm 1, so clusters overlap and some neighbours cross them); class = cluster parity."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, n)
    X = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        c = cluster[s : s + 100_000]
        block = centres[c] + rng.standard_normal((len(c), dim)).astype(np.float32) * (noise / np.sqrt(dim))
        X[s : s + 100_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return X, (cluster % 2).astype(np.int64)


def write_universe(folder: Path, n: int, dim: int, seed: int, seeds_per_class: int) -> dict:
    from simlabel.store import shard_name, write_shard

    X, y = mixture(n, dim, max(2, n // 1000), seed)
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    shard = 131_072
    for s in range(0, n, shard):
        write_shard(folder / "emb" / shard_name(s // shard), ids[s : s + shard], X[s : s + shard], {"model": "synthetic-mixture"})
    rng = np.random.default_rng(seed + 1)
    seeds = np.concatenate([rng.choice(np.flatnonzero(y == c), seeds_per_class, replace=False) for c in (0, 1)])
    pd.DataFrame({"id": ids[seeds], "label": np.where(y[seeds] == 1, "pos", "neg")}).to_csv(folder / "seeds.csv", index=False)
    pd.DataFrame({"id": ids, "label": np.where(y == 1, "pos", "neg")}).to_csv(folder / "truth.csv", index=False)
    return {"n": n, "dim": dim, "clusters": max(2, n // 1000)}


def task(args: argparse.Namespace) -> None:
    """Run one method in this process and print a JSON line with its figures."""
    folder = Path(args.folder)
    t0 = time.perf_counter()
    if args.task == "augment":
        from simlabel.labels.augment import augment

        made = augment(folder / "emb", folder / "seeds.csv", k=args.k, index_kind=args.index_kind, out=folder / "aug.csv")
        table, res = made.labels, made.result
        out = {"steps": res.n_steps, "stop_reason": res.stop_reason, "sizes": res.sizes.tolist(), "labels": int(len(table))}
    else:
        from simlabel.labels.propagate import propagate

        made = propagate(
            folder / "emb", folder / "seeds.csv", k=args.k, steps=args.steps, unlabeled_sample=args.sample,
            symmetric=args.symmetric, index_kind=args.index_kind, out=folder / "prop.csv",
        )
        table, res = made.labels, made.result
        out = {"steps": res.steps, "labels": int(len(table))}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    truth = pd.read_csv(folder / "truth.csv").set_index("id")["label"]
    made = table[~table["id"].isin(pd.read_csv(folder / "seeds.csv")["id"])]
    out["precision_vs_truth"] = round(float((made["label"].to_numpy() == truth.loc[made["id"]].to_numpy()).mean()), 4) if len(made) else None
    print("RESULT " + json.dumps(out), flush=True)


def run_task(name: str, folder: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--task", name, "--folder", str(folder), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def label_spreading_side_by_side(n: int, dim: int, k: int, seed: int, seeds_per_class: int) -> dict:
    from sklearn.semi_supervised import LabelSpreading

    from simlabel.labels.propagate import propagate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_universe(folder, n, dim, seed, seeds_per_class)
        from simlabel.store import load_embeddings

        ids, X = load_embeddings(folder / "emb")
        seeds = pd.read_csv(folder / "seeds.csv")
        truth = pd.read_csv(folder / "truth.csv").set_index("id")["label"]
        y = np.full(n, -1)
        pos = pd.Index(ids).get_indexer(seeds["id"])
        y[pos] = (seeds["label"] == "pos").astype(int)
        t0 = time.perf_counter()
        ls = LabelSpreading(kernel="knn", n_neighbors=k, max_iter=30).fit(X, y)
        t_ls = time.perf_counter() - t0
        ls_label = np.where(ls.transduction_ == 1, "pos", "neg")
        t0 = time.perf_counter()
        made = propagate(folder / "emb", seeds, k=k, steps=None, symmetric=True, index_kind="flat")
        table, res = made.labels, made.result
        t_ours = time.perf_counter() - t0
        ours = pd.Series(table["label"].to_numpy(), index=table["id"])
        common = ours.index
        agree = float((ours.to_numpy() == pd.Series(ls_label, index=ids).loc[common].to_numpy()).mean())
        return {
            "n": n,
            "label_spreading_s": round(t_ls, 2),
            "propagate_s": round(t_ours, 2),
            "speedup": round(t_ls / t_ours, 2),
            "agreement": round(agree, 4),
            "labeled_by_propagate": int(len(table)),
            "precision_label_spreading": round(float((pd.Series(ls_label, index=ids).loc[common] == truth.loc[common]).mean()), 4),
            "precision_propagate": round(float((ours == truth.loc[common]).mean()), 4),
            "propagate_steps": res.steps,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds-per-class", type=int, default=2000)
    ap.add_argument("--small", type=int, default=50_000, help="universe size for the LabelSpreading comparison (0: skip)")
    ap.add_argument("--index-kind", default="ivf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    # internal: one task in a child process
    ap.add_argument("--task", choices=["augment", "propagate"], default=None)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sample", type=int, default=None)
    ap.add_argument("--symmetric", action="store_true")
    args = ap.parse_args()
    if args.task:
        task(args)
        return

    results: dict = {"machine": {"cores": os.cpu_count()}, "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        results["universe"] = write_universe(folder, args.n, args.dim, args.seed, args.seeds_per_class)
        results["universe"]["write_s"] = round(time.perf_counter() - t0, 1)
        print(f"universe {args.n:,} x {args.dim} written in {results['universe']['write_s']} s", flush=True)
        common = ["--k", str(args.k), "--index-kind", args.index_kind]
        aug = run_task("augment", folder, common)
        print(f"augment: {json.dumps(aug)}", flush=True)
        n_aug = aug["labels"] - 2 * args.seeds_per_class
        prop = run_task("propagate", folder, common + ["--steps", str(max(1, aug["steps"])), "--sample", str(max(1, n_aug))])
        print(f"propagate: {json.dumps(prop)}", flush=True)
        results["augment"], results["propagate"] = aug, prop
    if args.small:
        side = label_spreading_side_by_side(args.small, args.dim, args.k, args.seed, min(args.seeds_per_class, args.small // 20))
        print(f"LabelSpreading vs propagate at {args.small:,}: {json.dumps(side)}", flush=True)
        results["label_spreading"] = side
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
