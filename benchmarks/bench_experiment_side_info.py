"""Paper 003's ablation (Baseline / + Stage 1 / + Stage 1 + Stage 2) on fashion-products, as markdown.

Noisy training labels come from a real BM25 search of the product titles with each category
name (top R per category, test split excluded from the pool); the held-out test split keeps
the true labels. For each label column and R the script runs
`simlabel.experiments.side_info.run_side_info_experiment` and prints the accuracy table, the
noise rate and how each weight separates correct from wrong labels.

Usage: python benchmarks/bench_experiment_side_info.py [--label-col article_type] [--top-r 100 200]
       [--repeats 3] [--head mlp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from simlabel.experiments.side_info import SideInfoExperimentConfig, run_side_info_experiment
from simlabel.heads import HeadConfig
from simlabel.labels.side_info import SideInfoConfig

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "fashion-products"


def to_markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--label-col", nargs="+", default=["article_type"])
    ap.add_argument("--top-r", nargs="+", type=int, default=[100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--head", default="mlp")
    ap.add_argument("--rank-weight", default="linear")
    ap.add_argument("--combine", default="product")
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--keyword-weight", type=float, default=0.3)
    ap.add_argument("--text-weight", type=float, default=0.5)
    ap.add_argument("--measure", default="wup")
    ap.add_argument("--overrides", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    all_results = []
    for label_col in args.label_col:
        for top_r in args.top_r:
            cfg = SideInfoExperimentConfig(
                label_col=label_col, top_r=top_r, repeats=list(range(args.repeats)),
                side=SideInfoConfig(rank_weight=args.rank_weight, combine=args.combine, knn=args.knn,
                                    keyword_weight=args.keyword_weight),
                text_weight=args.text_weight, measure=args.measure, overrides=args.overrides,
                head=HeadConfig(head=args.head, patience=8, max_epochs=100), device="cpu",
            )
            t0 = time.perf_counter()
            res = run_side_info_experiment(args.data, cfg, progress=False, log=lambda m: print("  " + m, flush=True))
            secs = time.perf_counter() - t0
            all_results.append(res)
            print(f"\n### {label_col}, top R = {top_r}: {res['n_train']:,} search labels in {res['n_categories']} "
                  f"categories, noise rate {res['noise_rate']:.3f}; {res['n_test']:,} clean test items; {secs:.0f} s\n")
            summary = pd.DataFrame(res["summary"])
            table = pd.DataFrame({
                "method": summary["method"],
                "top-1": [f"{100 * m:.2f} ±{100 * s:.2f}" for m, s in zip(summary["top1"], summary["top1 sd"])],
                "top-5": [f"{100 * m:.2f} ±{100 * s:.2f}" for m, s in zip(summary["top5"], summary["top5 sd"])],
                "top-1 gain": [f"{100 * g:+.2f}" for g in summary["top1 gain"]],
                "top-5 gain": [f"{100 * g:+.2f}" for g in summary["top5 gain"]],
            })
            print(to_markdown(table) + "\n")
            sep = pd.DataFrame(res["separation"])
            cols = ["weight", "correct mean", "wrong mean", "correct median", "wrong median", "auc"]
            print(to_markdown(sep[cols].round(3)) + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1, default=str))


if __name__ == "__main__":
    main()
