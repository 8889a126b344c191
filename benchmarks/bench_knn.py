"""All-to-all k-NN benchmark: FAISS flat vs scikit-learn brute, then HNSW and IVF.

For n x dim seeded random unit vectors, every point's k nearest neighbours
(cosine, the point itself excluded) are computed

1. exactly with :class:`simlabel.index.NeighborIndex` (FAISS ``IndexFlatIP``);
2. exactly with ``sklearn.neighbors.NearestNeighbors(n_neighbors=k+1,
   algorithm="brute", metric="cosine")``, self dropped the same way;
3. approximately with HNSW and IVF, scored by recall@k against (1).

Both exact methods run in the same process on the same matrix, so their times
are directly comparable; their results are compared as neighbour sets
(identical, and identical up to ties within ``--tie-tol`` in float64 cosine).

    python benchmarks/bench_knn.py --n 100000 --dim 384 --k 10 --out knn.json

``--data mixture`` swaps the uniform vectors for a clustered Gaussian mixture,
which is closer to real embeddings; uniform random vectors in high dimension
are the worst case for approximate indexes (every point is almost equally far
from every other).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import faiss
import numpy as np
import sklearn
from sklearn.neighbors import NearestNeighbors

from simlabel.index import IndexConfig, NeighborIndex, drop_self_matches, recall_at_k


def make_data(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        X = rng.standard_normal((n, dim), dtype=np.float32)  # isotropic -> uniform on the sphere
    else:
        centers = rng.standard_normal((max(2, int(np.sqrt(n))), dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        X = centers[rng.integers(0, len(centers), n)]
        X += rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def cosine64(X: np.ndarray, pos: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """float64 cosine of each row with its listed neighbours (arbiter for ties)."""
    out = np.empty(pos.shape, dtype=np.float64)
    for s in range(0, len(pos), chunk):
        q = X[s : s + chunk].astype(np.float64)
        nb = X[pos[s : s + chunk]].astype(np.float64)
        out[s : s + chunk] = np.einsum("id,ikd->ik", q, nb)
    return out


def compare_exact(X: np.ndarray, a_pos: np.ndarray, a_sims: np.ndarray, b_pos: np.ndarray, b_sims: np.ndarray, tol: float) -> dict[str, float]:
    same_set = (np.sort(a_pos, axis=1) == np.sort(b_pos, axis=1)).all(axis=1)
    # Two correct top-k answers can differ only by swapping points of (nearly)
    # equal similarity at the k-th place; then their sorted float64 similarity
    # lists agree to within rounding.
    sa = -np.sort(-cosine64(X, a_pos), axis=1)
    sb = -np.sort(-cosine64(X, b_pos), axis=1)
    same_up_to_ties = np.abs(sa - sb).max(axis=1) <= tol
    return {
        "identical_sets": float(same_set.mean()),
        "identical_up_to_ties": float(same_up_to_ties.mean()),
        "rows_differing": int((~same_set).sum()),
        "max_abs_sim_diff": float(np.abs(a_sims.astype(np.float64) - b_sims).max()),
    }


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def machine_info() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:  # informational only
            return f"<{exc}>"

    return {
        "nproc": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "faiss_compile": faiss.get_compile_options(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=["uniform", "mixture"], default="uniform")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all)")
    p.add_argument("--hnsw-m", type=int, default=IndexConfig.hnsw_m)
    p.add_argument("--hnsw-ef-construction", type=int, default=IndexConfig.hnsw_ef_construction)
    p.add_argument("--hnsw-ef-search", type=int, default=IndexConfig.hnsw_ef_search)
    p.add_argument("--ivf-nlist", type=int, default=None)
    p.add_argument("--ivf-nprobe", type=int, default=IndexConfig.ivf_nprobe)
    p.add_argument("--hnsw-ef-sweep", default="128,256,512",
                   help="extra efSearch values measured on --sweep-queries queries of the same HNSW graph")
    p.add_argument("--ivf-nprobe-sweep", default="64,256",
                   help="extra nprobe values measured on --sweep-queries queries of the same IVF index")
    p.add_argument("--sweep-queries", type=int, default=10_000)
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--tie-tol", type=float, default=1e-5)
    p.add_argument("--out", default=None, help="write results as JSON here")
    args = p.parse_args(argv)

    n, dim, k = args.n, args.dim, args.k
    info = machine_info()
    print(f"# {n} x {dim} {args.data} unit vectors, k={k}, seed={args.seed}", flush=True)
    print(f"# {json.dumps(info)}", flush=True)
    X = make_data(args.data, n, dim, args.seed)
    ids = [str(i) for i in range(n)]
    everyone = np.arange(n, dtype=np.int64)
    common = dict(threads=args.threads)
    rows: list[dict[str, Any]] = []

    # --- exact: FAISS flat through NeighborIndex -------------------------------
    flat, t_build = timed(NeighborIndex.build, ids, X, IndexConfig(kind="flat", **common))
    (f_pos, f_sims), t_query = timed(flat.knn_positions, everyone, k, batch_size=args.batch_size)
    rows.append({"method": "faiss flat (NeighborIndex)", "build_s": t_build, "query_s": t_query, "recall": 1.0})
    print(f"flat: build {t_build:.2f}s query {t_query:.2f}s", flush=True)
    del flat

    # --- exact: scikit-learn brute cosine ---------------------------------------
    comparison: dict[str, Any] = {}
    if not args.skip_sklearn:
        nn, t_fit = timed(NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit, X)
        (dist, ind), t_kn = timed(nn.kneighbors, X)
        s_sims, s_pos = drop_self_matches((1.0 - dist).astype(np.float32), ind.astype(np.int64), everyone)
        del nn, dist, ind
        comparison = compare_exact(X, f_pos, f_sims, s_pos, s_sims, args.tie_tol)
        sk_recall = recall_at_k(s_pos, f_pos)
        rows.append({"method": "sklearn brute cosine", "build_s": t_fit, "query_s": t_kn, "recall": sk_recall})
        comparison["sklearn_over_faiss_time"] = (t_fit + t_kn) / (t_build + t_query)
        print(f"sklearn: fit {t_fit:.2f}s kneighbors {t_kn:.2f}s; {json.dumps(comparison)}", flush=True)

    # --- approximate ---------------------------------------------------------------
    approx = [
        ("hnsw", f"faiss HNSW (M={args.hnsw_m}, efC={args.hnsw_ef_construction}, efS={args.hnsw_ef_search})",
         IndexConfig(kind="hnsw", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction,
                     hnsw_ef_search=args.hnsw_ef_search, **common)),
        ("ivf", None, IndexConfig(kind="ivf", ivf_nlist=args.ivf_nlist, ivf_nprobe=args.ivf_nprobe, seed=args.seed, **common)),
    ]
    for kind, label, cfg in approx:
        if label is None:
            label = f"faiss IVF (nlist={cfg.nlist_for(n)}, nprobe={cfg.ivf_nprobe})"
        index, tb = timed(NeighborIndex.build, ids, X, cfg)
        (a_pos, _), tq = timed(index.knn_positions, everyone, k, batch_size=args.batch_size)
        r = recall_at_k(a_pos, f_pos)
        rows.append({"method": label, "build_s": tb, "query_s": tq, "recall": r})
        print(f"{kind}: build {tb:.2f}s query {tq:.2f}s recall@{k} {r:.4f}", flush=True)
        # The recall/speed trade-off of the same index: search breadth swept on a query sample,
        # query time scaled to all n queries (search cost is linear in the number of queries).
        sweep = args.hnsw_ef_sweep if kind == "hnsw" else args.ivf_nprobe_sweep
        sample = np.random.default_rng(args.seed).choice(n, size=min(args.sweep_queries, n), replace=False)
        for value in [int(v) for v in sweep.split(",") if v.strip()]:
            if kind == "hnsw":
                index.config.hnsw_ef_search = value
                name = f"faiss HNSW (same graph, efS={value}; {len(sample):,}-query sample)"
            else:
                index.config.ivf_nprobe = value
                name = f"faiss IVF (same index, nprobe={value}; {len(sample):,}-query sample)"
            index._apply_search_params()
            (s_pos, _), ts = timed(index.knn_positions, sample, k, batch_size=args.batch_size)
            rs = recall_at_k(s_pos, f_pos[sample])
            rows.append({"method": name, "build_s": tb, "query_s": ts * n / len(sample), "recall": rs})
            print(f"{kind} sweep {value}: query {ts:.2f}s on {len(sample)} recall@{k} {rs:.4f}", flush=True)
        del index

    flat_total = rows[0]["build_s"] + rows[0]["query_s"]
    for row in rows:
        row["total_s"] = row["build_s"] + row["query_s"]
        row["speedup_vs_flat"] = flat_total / row["total_s"]
        row["query_speedup_vs_flat"] = rows[0]["query_s"] / row["query_s"]

    cmd = "python benchmarks/bench_knn.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print()
    print(f"`{cmd}` — {n:,} x {dim} {args.data} unit vectors, k={k}, self excluded, "
          f"{info['nproc']} cores, faiss {info['faiss']}")
    print()
    print(f"| method | build s | query s | total s | speed-up vs flat (total) | speed-up vs flat (query) | recall@{k} vs flat |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['build_s']:.2f} | {row['query_s']:.2f} | {row['total_s']:.2f} | "
              f"{row['speedup_vs_flat']:.2f}x | {row['query_speedup_vs_flat']:.2f}x | {row['recall']:.4f} |")
    if comparison:
        print()
        print(f"sklearn / faiss-flat time: {comparison['sklearn_over_faiss_time']:.2f}x; "
              f"identical neighbour sets: {comparison['identical_sets']:.5f} "
              f"({comparison['rows_differing']} rows differ); identical up to ties (float64 cosine within "
              f"{args.tie_tol:g}): {comparison['identical_up_to_ties']:.5f}; max |sim diff| "
              f"{comparison['max_abs_sim_diff']:.2e}")

    result = {"args": vars(args), "command": cmd, "machine": info, "rows": rows, "exact_comparison": comparison}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
