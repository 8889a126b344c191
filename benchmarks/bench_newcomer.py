"""Issue 12's speed targets, side by side with an earlier checkout in one run on one machine.

For each job the earlier code (``--baseline-src``, the ``src`` folder of a checkout, e.g.
``git worktree add /tmp/pre12 fa961bc`` for the code before issue 12) and this checkout run the
same command on fashion-products, one after the other, with the same inputs; the script reports
wall times, their ratio and the job's metric (mean and sd over seeds) for both:

* ``train``: ``simlabel train`` on 80% of fashion-products (article_type, 75 classes), test
  accuracy by ``simlabel evaluate`` on the other 20%; 3 seeds;
* ``flip``: ``simlabel flip`` at its defaults on a noisy copy of the catalog (each positive of
  gender, usage, season dropped with probability 0.5) with 500 clean rows; the flips' precision
  and recall against the true labels on the noisy rows; 3 seeds;
* ``smoothing``: ``simlabel experiment smoothing`` at its defaults (36 models, 3 seeds), top-1
  per approach.

Every input is made once by this checkout (``simlabel labels sample``; the embeddings are
embedded before the clocks start), so the two codes read the same files.

Usage: python benchmarks/bench_newcomer.py --baseline-src /tmp/pre12/src [--only train flip smoothing]
       [--seeds 0 1 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "datasets" / "fashion-products"
ATTRS = ["gender", "usage", "season"]



def simlabel(src: Path | None, *args, timed: bool = True) -> float:
    """Run ``simlabel ARGS`` with ``src`` first on the path (None: this checkout); wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(src) if src else str(ROOT / "src")}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "simlabel.cli", *map(str, args)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode:
        raise SystemExit(f"simlabel {' '.join(map(str, args))} failed ({src or 'this checkout'}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return seconds


def mean_sd(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f} ±{v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def prepare(work: Path) -> dict:
    """The shared inputs, made by this checkout: embeddings, a split, a noisy copy and a clean set."""
    emb = work / "emb"
    simlabel(None, "embed", DATA, "--out", emb, "--no-progress")
    simlabel(None, "labels", "sample", DATA, "--label-col", "article_type", "--holdout-frac", "0.2", "--holdout-out",
             work / "test.csv", "--out", work / "train.csv")
    simlabel(None, "labels", "sample", DATA, "--attributes", ",".join(ATTRS), "--noise", "0.5", "--keep-columns",
             "--out", work / "noisy.csv")
    simlabel(None, "labels", "sample", DATA, "--attributes", ",".join(ATTRS), "--n", "500", "--seed", "1",
             "--out", work / "clean.csv")
    return {"emb": emb, "train": work / "train.csv", "test": work / "test.csv", "noisy": work / "noisy.csv", "clean": work / "clean.csv"}


def bench_train(code: dict, inputs: dict, work: Path, seeds: list[int]) -> dict:
    out = {}
    for name, src in code.items():
        times, accs = [], []
        for seed in seeds:
            model = work / f"model-{name}-{seed}"
            times.append(simlabel(src, "train", "--emb", inputs["emb"], "--labels", inputs["train"], "--out", model,
                                  "--seed", seed, *(["--no-progress"] if name == "new" else [])))
            simlabel(src, "evaluate", "--model", model, "--emb", inputs["emb"], "--labels", inputs["test"],
                     "--json", work / f"eval-{name}-{seed}.json")
            rep = json.loads((work / f"eval-{name}-{seed}.json").read_text())
            accs.append(rep["accuracy"])
            meta = json.loads((model / "config.json").read_text())
            print(f"  train {name} seed {seed}: {times[-1]:.2f} s, accuracy {accs[-1]:.4f}, "
                  f"best epoch {meta['best_epoch']} of {len(meta['history'])}", flush=True)
        out[name] = {"seconds": times, "accuracy": accs}
    return out


def flip_quality(flips_csv: Path, noisy_csv: Path, clean_csv: Path) -> tuple[float, float]:
    """Precision and recall of the flips against the true labels, on the noisy (not clean) rows."""
    truth = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False).set_index("id")
    noisy = pd.read_csv(noisy_csv, dtype=str, keep_default_na=False).set_index("id")
    clean_ids = set(pd.read_csv(clean_csv, dtype=str)["id"])
    flips = pd.read_csv(flips_csv, dtype=str, keep_default_na=False)
    rows = [i for i in noisy.index if i not in clean_ids]
    labels = sorted({f"{a}={v}" for a in ATTRS for v in noisy[a].unique() if v})
    def matrix(table):
        t = table.loc[rows]
        return np.stack([(t[a] == v).to_numpy() for a, v in (lab.split("=", 1) for lab in labels)], axis=1)
    T, N = matrix(truth), matrix(noisy)
    F = N.copy()
    pos = pd.Index(rows).get_indexer(flips["id"])
    lab = pd.Index(labels).get_indexer(flips["label"])
    keep = (pos >= 0) & (lab >= 0)
    F[pos[keep], lab[keep]] = flips["new"].to_numpy()[keep] == "1"
    flipped, wrong = F != N, N != T
    return float((flipped & wrong).sum() / max(flipped.sum(), 1)), float((flipped & wrong).sum() / max(wrong.sum(), 1))


def bench_flip(code: dict, inputs: dict, work: Path, seeds: list[int]) -> dict:
    out = {}
    for name, src in code.items():
        times, prec, rec = [], [], []
        for seed in seeds:
            flips = work / f"flips-{name}-{seed}.csv"
            times.append(simlabel(src, "flip", "--emb", inputs["emb"], "--catalog", inputs["noisy"], "--attributes", ",".join(ATTRS),
                                  "--clean", inputs["clean"], "--out", flips, "--seed", seed,
                                  *(["--no-progress"] if name == "new" else [])))
            p, r = flip_quality(flips, inputs["noisy"], inputs["clean"])
            prec.append(p)
            rec.append(r)
            print(f"  flip {name} seed {seed}: {times[-1]:.1f} s, precision {p:.4f}, recall {r:.4f}", flush=True)
        out[name] = {"seconds": times, "precision": prec, "recall": rec}
    return out


def bench_smoothing(code: dict, inputs: dict, work: Path, seeds: list[int]) -> dict:
    out = {}
    # embed the titles once, outside the clocks (both codes read the same cached run folder)
    simlabel(None, "experiment", "smoothing", "--data", DATA, "--repeats", "1", "--approaches", "none", "--inputs", "image",
             "--json", work / "warmup.json", "--no-progress")
    for name, src in code.items():
        seconds = simlabel(src, "experiment", "smoothing", "--data", DATA, "--repeats", str(len(seeds)), "--json",
                           work / f"smoothing-{name}.json", "--no-progress")
        res = json.loads((work / f"smoothing-{name}.json").read_text())
        runs = pd.DataFrame(res["runs"])
        print(f"  smoothing {name}: {seconds:.0f} s for {len(runs)} models", flush=True)
        out[name] = {"seconds": [seconds], "runs": res["runs"]}
    return out


def report(results: dict) -> None:
    print()
    for job, res in results.items():
        old, new = res["old"], res["new"]
        ratio = np.mean(old["seconds"]) / np.mean(new["seconds"])
        print(f"{job}: old {np.mean(old['seconds']):.1f} s, new {np.mean(new['seconds']):.1f} s per run -> {ratio:.1f}x faster")
        if job == "smoothing":
            o, n = pd.DataFrame(old["runs"]), pd.DataFrame(new["runs"])
            table = pd.concat({"old": o.groupby(["inputs", "approach"])["top1"].agg(["mean", "std"]),
                               "new": n.groupby(["inputs", "approach"])["top1"].agg(["mean", "std"])}, axis=1)
            print(table.round(4).to_string())
        else:
            for key in [k for k in old if k != "seconds"]:
                print(f"  {key}: old {mean_sd(old[key])}, new {mean_sd(new[key])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-src", type=Path, required=True, help="src/ of the earlier checkout to compare with")
    ap.add_argument("--only", nargs="+", default=["train", "flip", "smoothing"], choices=["train", "flip", "smoothing"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--work", type=Path, help="where the inputs and outputs go (default: a temporary folder)")
    args = ap.parse_args()
    if not (args.baseline_src / "simlabel").is_dir():
        raise SystemExit(f"{args.baseline_src}: not a src/ folder holding simlabel")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    print(f"baseline: {args.baseline_src}; this checkout: {ROOT / 'src'}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-newcomer-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = prepare(work)
    code = {"old": args.baseline_src.resolve(), "new": None}
    jobs = {"train": bench_train, "flip": bench_flip, "smoothing": bench_smoothing}
    results = {}
    for job in args.only:
        print(f"{job}:", flush=True)
        results[job] = jobs[job](code, inputs, work, args.seeds)
    report(results)
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_flags(), "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
