"""Issue 24: what else moves accuracy at a few labels per class, on the same chosen labels (RESULTS.md §16).

For each budget and seed, the labels are chosen as `experiment efficiency` chooses them (`select` auto in
`--rounds` rounds, answered from the catalog: `simulate_rounds`), then every head and feature transform below
is trained on those same labels and scored on the same fixed test set:

* ``few-head``: the few-label head the experiment ships (`FEW_LABEL_HEAD`), on the features as stored;
* ``few-head-cl2n``: the same on centred, re-normalised features (the catalog's mean removed: SimpleShot's CL2N,
  Wang et al. 2019);
* ``logreg-cl2n``: scikit-learn's LogisticRegression (C = 1, balanced) on CL2N;
* ``centroid-cl2n``: the nearest class mean on CL2N;
* ``logreg-pca64``: LogisticRegression on PCA-64 of the features;
* and the **oracle bound**: with the true classes known (what no user has), k-means within each class and the
  most central item of each cluster, as many labels per class as the budget allows, the few-label head.

Usage: python benchmarks/bench_few_label_heads.py --data ../shared/datasets/clothing-small [--label-col label]
       [--budgets 34,102] [--seeds 5] [--rounds 2] [--emb EMB_DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402


def cl2n(X: np.ndarray) -> np.ndarray:
    """Centre on the catalog's mean, then unit length (SimpleShot's CL2N)."""
    Z = X - X.mean(axis=0)
    return (Z / np.linalg.norm(Z, axis=1, keepdims=True)).astype(np.float32)


def heads(X: np.ndarray, Xc: np.ndarray, Xp: np.ndarray, L: np.ndarray, y: np.ndarray, test: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    from simlabel.experiments.efficiency import FEW_LABEL_HEAD
    from simlabel.heads import EmbeddingClassifier

    yl = y[L]

    def acc(pred) -> float:
        return float((np.asarray(pred) == y[test]).mean())

    def few(F):
        return acc(EmbeddingClassifier(FEW_LABEL_HEAD, progress_label="").fit(F[L], yl).predict(F[test]))

    def logreg(F):
        return acc(LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(F[L], yl).predict(F[test]))

    cls = np.unique(yl)
    means = np.stack([Xc[L][yl == c].mean(0) for c in cls])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return {"few-head": few(X), "few-head-cl2n": few(Xc), "logreg-cl2n": logreg(Xc),
            "centroid-cl2n": acc(cls[(Xc[test] @ means.T).argmax(1)]), "logreg-pca64": logreg(Xp)}


def oracle(X: np.ndarray, Xc: np.ndarray, pool: np.ndarray, y: np.ndarray, test: np.ndarray, budget: int) -> float:
    from sklearn.cluster import KMeans

    from simlabel.experiments.efficiency import FEW_LABEL_HEAD
    from simlabel.heads import EmbeddingClassifier

    classes = np.unique(y[pool])
    per = max(1, budget // len(classes))
    L = []
    for c in classes:
        idx = pool[y[pool] == c]
        k = min(per, len(idx))
        km = KMeans(k, n_init=3, random_state=0).fit(Xc[idx])
        for j in range(k):
            L.append(idx[np.argmin(((Xc[idx] - km.cluster_centers_[j]) ** 2).sum(1))])
    L = np.asarray(L)
    clf = EmbeddingClassifier(FEW_LABEL_HEAD, progress_label="").fit(X[L], y[L])
    return float((clf.predict(X[test]) == y[test]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--label-col", default=None)
    ap.add_argument("--budgets", default="34,102")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--emb", default=None, help="the catalog's EfficientNet-Lite0 embeddings (default: embedded, cached)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from sklearn.decomposition import PCA

    from simlabel.experiments._common import fixed_split, open_experiment
    from simlabel.experiments.efficiency import FEW_LABEL_HEAD, simulate_rounds
    from simlabel.graph import GraphConfig, build_graph

    t0 = time.perf_counter()
    ex = open_experiment(args.data, model="efficientnet-lite0", label_col=args.label_col, embeddings=args.emb, progress=False)
    emb = ex.embeddings
    table = ex.catalog.table.set_index("id").loc[emb.ids.astype(str)]
    y = table["label"].astype(str).to_numpy(dtype=object)
    has = y != ""
    if "split" in table.columns and (table["split"] == "test").any():
        is_test = (table["split"] == "test").to_numpy() & has
    else:  # the experiment's fixed stratified 20%, seed 0
        is_test = np.zeros(len(y), dtype=bool)
        is_test[np.flatnonzero(has)] = fixed_split(pd.Series(y[has]), 0.2, 0)
    pool, test = np.flatnonzero(has & ~is_test), np.flatnonzero(is_test)
    truth = pd.Series(y, index=emb.ids.astype(str))
    never = list(emb.ids[np.setdiff1d(np.arange(len(y)), pool)].astype(str))
    graph = build_graph(emb, ex.run_dir / f"graph-k100-{emb.fingerprint[:8]}", GraphConfig(k=min(100, len(y) - 1), recall_sample=0),
                        progress=False)
    X = emb.matrix.astype(np.float32)
    Xc = cl2n(X)
    Xp = PCA(64, random_state=0).fit_transform(X).astype(np.float32)
    Xp /= np.linalg.norm(Xp, axis=1, keepdims=True)
    pos = pd.Index(emb.ids.astype(str))
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        for seed in range(args.seeds):
            chosen, _ = simulate_rounds(emb, budget, "auto", args.rounds, seed, truth, never, graph, FEW_LABEL_HEAD)
            got = heads(X, Xc, Xp, pos.get_indexer(chosen["id"]), y, test)
            rows += [{"budget": budget, "seed": seed, "head": k, "accuracy": v} for k, v in got.items()]
        rows.append({"budget": budget, "seed": -1, "head": "oracle (true classes)", "accuracy": oracle(X, Xc, pool, y, test, budget)})
    df = pd.DataFrame(rows)
    summary = df.groupby(["head", "budget"], sort=False)["accuracy"].mean().unstack("budget").round(3)
    out = {"data": str(ex.root), "cpu_flags": cpu_flags(), "seeds": args.seeds, "rounds": args.rounds,
           "test": int(len(test)), "pool": int(len(pool)), "seconds": round(time.perf_counter() - t0, 1),
           "summary": {h: {str(b): v for b, v in r.items()} for h, r in summary.iterrows()}, "runs": rows}
    print(f"CPU flags: {out['cpu_flags']}; {ex.root}; test {len(test):,}, pool {len(pool):,}; seeds {args.seeds}")
    print(summary.to_string())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
