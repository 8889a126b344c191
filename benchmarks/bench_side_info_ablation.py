"""Which of paper 003's choices matter: each option changed alone, on fashion-products article types.

Runs `simlabel.experiments.side_info.run_side_info_experiment` (BM25, top R = 100, 3 seeds) once per
variant below and prints top-1 / top-5 of + Stage 1 and + Stage 1 + Stage 2 with the AUC of the
final weights; the baseline (plain CE on the same search labels) is trained only where the search
labels change (the ``best`` duplicates variant).

Usage: python benchmarks/bench_side_info_ablation.py [--repeats 3] [--only NAME ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from simlabel.experiments.side_info import SideInfoExperimentConfig, run_side_info_experiment
from simlabel.labels.side_info import SideInfoConfig

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "fashion-products"

BASE = SideInfoExperimentConfig(methods=["stage1", "stage1+stage2"], device="cpu")
SIDE = SideInfoConfig()
VARIANTS = {
    "defaults": BASE,
    "rank weight none (neighbours only)": replace(BASE, side=replace(SIDE, rank_weight="none")),
    "rank weight exp": replace(BASE, side=replace(SIDE, rank_weight="exp")),
    "combine mean": replace(BASE, side=replace(SIDE, combine="mean")),
    "no related categories (K = 0)": replace(BASE, related_k=0),
    "WordNet only (text weight 0)": replace(BASE, text_weight=0.0),
    "text encoder only (text weight 1)": replace(BASE, text_weight=1.0),
    "Lin similarity": replace(BASE, measure="lin"),
    "knn 20": replace(BASE, side=replace(SIDE, knn=20)),
    "no keywords (keyword weight 0)": replace(BASE, side=replace(SIDE, keyword_weight=0.0)),
    "stage 2 in-sample (folds 0)": replace(BASE, side=replace(SIDE, stage2_folds=0)),
    "duplicates best": replace(BASE, duplicates="best", methods=["baseline", "stage1", "stage1+stage2", "oracle-clean"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows, raw = [], {}
    print("| variant | method | top-1 | top-5 | AUC of the weights | noise rate |\n|---|---|---|---|---|---|", flush=True)
    for name, cfg in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = replace(cfg, repeats=list(range(args.repeats)))
        t0 = time.perf_counter()
        res = run_side_info_experiment(args.data, cfg, progress=False)
        raw[name] = {"summary": res["summary"], "separation": res["separation"], "noise_rate": res["noise_rate"],
                     "seconds": time.perf_counter() - t0}
        auc = {d["weight"]: d["auc"] for d in res["separation"]}
        for s in res["summary"]:
            w = {"stage1": "stage-1 weight", "stage1+stage2": "stage-2 weight"}.get(s["method"])
            line = (f"| {name} | {s['method']} | {100 * s['top1']:.2f} ±{100 * s['top1 sd']:.2f} | "
                    f"{100 * s['top5']:.2f} ±{100 * s['top5 sd']:.2f} | {auc.get(w, float('nan')):.3f} | "
                    f"{res['noise_rate']:.3f} |")
            rows.append(line)
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
