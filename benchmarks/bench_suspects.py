"""Issue 15: suspected label errors on both shared datasets with planted corruption.

Labels are corrupted two ways at two rates, with a fixed seed:

* ``uniform``: a corrupted item's label becomes any other class, uniformly;
* ``look-alike``: it becomes the class most similar to its true class (the nearest class centroid of the
  image embeddings: the mistake a seller makes between look-alike categories).

For each setting, ``simlabel.labels.suspects.find_suspects`` with ``knn`` (rank mode, the default; and vote
mode), ``cleanlab`` (find_label_issues on 3-fold out-of-fold MLP heads) and ``both`` (its union, and the
items both flag) is scored against the known corruption: precision, recall and F1 of the flagged items, and
the wall time of each (the embedding, shared by every method, is not counted; ``both`` is timed as one run).
On the uncorrupted labels it also reports how many items each knn mode flags: the datasets' own disagreement
between look-alike classes (and their real label errors), which bounds the precision any detector reaches.

Usage: python benchmarks/bench_suspects.py [--rates 0.1 0.3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets"
SETS = {"clothing-small": "label", "fashion-products": "article_type"}


def corrupt(truth: np.ndarray, X: np.ndarray, rate: float, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The noisy labels and the mask of corrupted items."""
    rng = np.random.default_rng(seed)
    classes = np.array(sorted(set(truth)))
    code = pd.Index(classes).get_indexer(truth)
    wrong = rng.random(len(truth)) < rate
    if kind == "uniform":
        shift = rng.integers(1, len(classes), len(truth))
        new = (code + shift) % len(classes)
    else:
        centroids = np.stack([X[code == c].mean(0) for c in range(len(classes))])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        sim = centroids @ centroids.T
        np.fill_diagonal(sim, -np.inf)
        new = sim.argmax(axis=1)[code]
    noisy = np.where(wrong, classes[new], truth)
    return noisy, wrong


def prf(flag: np.ndarray, wrong: np.ndarray) -> dict:
    tp = int((flag & wrong).sum())
    p = tp / max(int(flag.sum()), 1)
    r = tp / max(int(wrong.sum()), 1)
    return {"flagged": int(flag.sum()), "precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from simlabel.embedding import embed
    from simlabel.heads import HeadConfig
    from simlabel.labels.suspects import SuspectsConfig, find_suspects
    from simlabel.store import load_embeddings
    from simlabel.training import oof_predictor

    print(f"machine: flags {cpu_flags()}", flush=True)
    results: dict = {"machine": cpu_flags(), "runs": []}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, col in SETS.items():
            catalog = DATA / name / "catalog.csv"
            embed(catalog, Path(d) / name, progress=False)  # the vector cache makes a second run instant
            e = load_embeddings(Path(d) / name)
            table = pd.read_csv(catalog, dtype={"id": str}).set_index("id").loc[e.ids]
            truth = table[col].astype(str).to_numpy()
            clean = pd.DataFrame({"id": e.ids, "label": truth})
            for label, cfg in (("knn (rank)", SuspectsConfig(k=10)), ("knn (vote)", SuspectsConfig(k=10, mode="vote"))):
                found0 = find_suspects(e, clean, cfg)
                s0 = found0.labels
                results.setdefault("clean", []).append({"data": name, "method": label, "flagged": len(s0),
                                                        "share": len(s0) / len(e.ids),
                                                        "noise_estimate": found0.summary.get("noise_rate_estimate")})
                print(f"{name:16s} clean labels: {label} flags {len(s0):,} ({len(s0) / len(e.ids):.1%})", flush=True)
            for kind in ("uniform", "look-alike"):
                for rate in args.rates:
                    noisy, wrong = corrupt(truth, e.matrix, rate, kind)
                    labels = pd.DataFrame({"id": e.ids, "label": noisy})
                    setting = {"data": name, "n": len(e.ids), "classes": len(set(truth)), "corruption": kind,
                               "rate": rate, "corrupted": int(wrong.sum())}
                    runs = {}
                    for mode in ("rank", "vote"):
                        t0 = time.perf_counter()
                        found = find_suspects(e, labels, SuspectsConfig(k=10, mode=mode), all_items=True)
                        runs[f"knn ({mode})"] = (found, time.perf_counter() - t0)
                    predictor = oof_predictor(HeadConfig(head="mlp", patience=8, max_epochs=100), folds=3, seed=0, top=None)
                    t0 = time.perf_counter()
                    find_suspects(e, labels, SuspectsConfig(method="cleanlab", k=10), predictor=predictor)
                    t_cleanlab = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    both = find_suspects(e, labels, SuspectsConfig(method="both", k=10), predictor=predictor, all_items=True).labels
                    t_both = time.perf_counter() - t0
                    pos = pd.Index(e.ids)
                    for label, (found, secs) in runs.items():
                        flag = np.zeros(len(e.ids), bool)
                        flag[pos.get_indexer(found.suspects["id"])] = True
                        rows.append({**setting, "method": label, "seconds": secs, **prf(flag, wrong),
                                     "noise_estimate": found.summary.get("noise_rate_estimate")})
                    m = both.set_index("id")["method"].reindex(e.ids).to_numpy()
                    for label, flag, secs in (("cleanlab", np.isin(m, ["cleanlab", "knn+cleanlab"]), t_cleanlab),
                                              ("both: union", np.isin(m, ["knn", "cleanlab", "knn+cleanlab", "duplicates"]), t_both),
                                              ("both: flagged by both", m == "knn+cleanlab", t_both)):
                        rows.append({**setting, "method": label, "seconds": secs, **prf(flag, wrong)})
                    for r in rows[-5:]:
                        print(f"{name:16s} {kind:10s} {rate:.0%} {r['method']:22s} P {r['precision']:.3f} R {r['recall']:.3f} "
                              f"F1 {r['f1']:.3f} ({r['flagged']:,} flagged, {r['seconds']:.1f} s)", flush=True)
    results["runs"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
