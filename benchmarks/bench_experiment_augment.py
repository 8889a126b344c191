"""Paper 000's experiment (Tables 1 and 2) on the shared datasets, written as markdown.

Runs `simlabel.experiments.augment.run_augment_experiment` for:
  * clothing-small, one-vs-rest for each of the 10 classes (binary, as the paper's +/-CLUTTER);
  * clothing-small, all 10 classes at once;
  * fashion-products, sub_category (30 classes).
Each with `--labeled-frac` of the catalog labeled (the rest unlabeled in the universe), the catalog's test
split held out where it has one (else 30% of the labeled), k = 10, several repetition seeds.

Usage: python benchmarks/bench_experiment_augment.py [--labeled-frac 0.1] [--repeats 3] [--paper-head] [--out results.md]
(balanced class weights by default; --paper-head for the paper's plain dense layer)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.experiments.augment import AugmentExperimentConfig, precision_table, run_augment_experiment
from simlabel.heads import HeadConfig

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets"


def to_markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def fmt(mean: float, sd: float | None) -> str:
    return f"{mean:.3f}" if sd is None or np.isnan(sd) else f"{mean:.3f} ±{sd:.3f}"


def binary_rows(results: dict, positive: str) -> list[dict]:
    rows = []
    enc = next(iter(results["encoders"].values()))
    runs = enc["runs"]
    sizes = pd.concat([pd.DataFrame(r["sizes"]) for r in runs]).groupby(level=0).mean()
    prec = precision_table(results)
    for method in ("seeds", "aug", "prop"):
        m, s = enc["mean"][method], enc["std"][method]
        row = {"class": positive, "method": method}
        for key in ("+P", "+R", "-P", "-R", "HM"):
            row[key] = fmt(m[key], s[key] if len(runs) > 1 else None)
        rows.append(row)
    size_row = {
        "class": positive,
        "+ seeds": int(round(sizes.loc[positive, "seeds"])),
        "- seeds": int(round(sizes.loc[f"not {positive}", "seeds"])),
        "+ augmented": int(round(sizes.loc[positive, "augmented"])),
        "- augmented": int(round(sizes.loc[f"not {positive}", "augmented"])),
        "+ propagated": int(round(sizes.loc[positive, "propagated"])),
        "- propagated": int(round(sizes.loc[f"not {positive}", "propagated"])),
        "+ validation": int(round(sizes.loc[positive, "validation"])),
        "- validation": int(round(sizes.loc[f"not {positive}", "validation"])),
        "aug precision": f"{prec['precision'].iloc[0]:.3f}",
        "prop precision": f"{prec['precision'].iloc[1]:.3f}",
        "steps": float(np.mean([r["n_steps"] for r in runs])),
    }
    return rows, size_row


def multiclass_rows(results: dict, name: str) -> list[dict]:
    enc = next(iter(results["encoders"].values()))
    runs = enc["runs"]
    prec = precision_table(results)
    sizes = pd.concat([pd.DataFrame(r["sizes"]) for r in runs]).groupby(level=0).mean().sum()
    rows = []
    for method in ("seeds", "aug", "prop"):
        m, s = enc["mean"][method], enc["std"][method]
        sd = (lambda k, s=s: s[k]) if len(runs) > 1 else (lambda k: None)
        rows.append(
            {
                "task": name,
                "method": method,
                "accuracy": fmt(m["accuracy"], sd("accuracy")),
                "macro F1": fmt(m["macro_f1"], sd("macro_f1")),
                "HM": fmt(m["HM"], sd("HM")),
                "train labels": int(round(sizes["seeds"] + (sizes["augmented"] if method == "aug" else sizes["propagated"] if method == "prop" else 0))),
                "precision of added labels": "" if method == "seeds" else f"{prec['precision'].iloc[0 if method == 'aug' else 1]:.3f}",
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeled-frac", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paper-head", action="store_true", help="the paper's plain dense layer (no class weights)")
    ap.add_argument("--balanced", action="store_true", help="balanced class weights (the default since issue 12; kept for old command lines)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    head = HeadConfig()
    common = dict(labeled_frac=args.labeled_frac, repeats=list(range(args.repeats)), head=head, device="cpu",
                  paper_head=args.paper_head)
    t0 = time.perf_counter()
    md: list[str] = []
    everything: dict = {}

    cs = DATA / "clothing-small"
    classes = sorted(pd.read_csv(cs / "catalog.csv")["label"].unique())
    metric_rows, size_rows = [], []
    for c in classes:
        res = run_augment_experiment(cs, AugmentExperimentConfig(positive=c, holdout_split="test", **common), progress=False)
        everything[f"clothing-small/{c}"] = res
        rows, size_row = binary_rows(res, c)
        metric_rows += rows
        size_rows.append(size_row)
        print(f"{c}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    md += ["### clothing-small, one-vs-rest per class: sizes (Table 1 shape, mean over repeats)", "",
           to_markdown(pd.DataFrame(size_rows)), ""]
    md += ["### clothing-small, one-vs-rest per class: test-split metrics (Table 2 shape, mean ±sd)", "",
           to_markdown(pd.DataFrame(metric_rows)), ""]

    multi = []
    res = run_augment_experiment(cs, AugmentExperimentConfig(holdout_split="test", **common), progress=False)
    everything["clothing-small/all"] = res
    multi += multiclass_rows(res, "clothing-small, 10 classes")
    fp = DATA / "fashion-products"
    res = run_augment_experiment(fp, AugmentExperimentConfig(label_col="sub_category", **common), progress=False)
    everything["fashion-products/sub_category"] = res
    multi += multiclass_rows(res, "fashion-products, sub_category")
    md += ["### Multi-class (mean ±sd over repeats)", "", to_markdown(pd.DataFrame(multi)), ""]
    md.append(f"Total time: {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(md)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(everything, default=str))


if __name__ == "__main__":
    main()
