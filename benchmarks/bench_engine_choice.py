"""What ``embed --backend auto --precision auto`` costs and gives, side by side with explicit fp32 (issue 22).

1. **The probe's cost**: ``auto`` against ``--precision fp32`` on a 2,500-image catalog (a seeded sample of
   fashion-products), vector cache off, in one run: fp32, auto with the engine speeds not yet cached on this
   machine (the first catalog), auto with them cached (every later one), fp32 again. Wall time of the whole
   ``simlabel.embed`` call, probe included. ``--capped`` repeats it in a child process with the CPU capped at
   AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2`` ..., as ``make test-avx2``): there ``auto`` must cost no more than 1.05x fp32.
2. **auto against ONNX Runtime fp32 end to end** on both whole datasets, and the gate's floor on each
   (``summary.json``'s ``engine.floor``: fp32's own recall@10 under +-0.5 pixel-level noise, less one standard
   error), with every candidate's figures.
3. **Downstream agreement** on fashion-products, fp32 vectors against the chosen engine's: the labels
   ``augment`` makes (10% seeds per article type, k = 10, the same seeds on both stores) and the top 100 of
   ``suspects`` (10% symmetric noise planted on the article types, k-NN rank mode).

The CPU flags are printed with every figure. Usage:
    python benchmarks/bench_engine_choice.py [--data ../shared/datasets] [--json out.json] [--capped] [--skip-full]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import cpu_flags  # noqa: E402

#: the AVX2-only kind, emulated (the Makefile's test-avx2 cap)
AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
            "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


@contextlib.contextmanager
def fresh_cache():
    """``$SIMLABEL_CACHE`` set to an empty folder for the block (no export, speeds or probe cost cached yet),
    and restored after it."""
    before = os.environ.get("SIMLABEL_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SIMLABEL_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if before is None:
                os.environ.pop("SIMLABEL_CACHE", None)
            else:
                os.environ["SIMLABEL_CACHE"] = before


def _embed(cat, folder: Path, **kw) -> tuple[float, dict, float]:
    from simlabel.embedding import embed

    t0 = time.perf_counter()
    r = embed(cat, folder, progress=False, cache=False, **kw)
    return time.perf_counter() - t0, r.engine, r.items_per_s


def probe_cost(data: Path, n: int = 2500) -> dict:
    """auto against explicit fp32 on an ``n``-image catalog, side by side, the speed cache cold then warm."""
    import numpy as np

    from simlabel.catalog import load_catalog

    full = load_catalog(data / "fashion-products" / "catalog.csv", columns={"label": "article_type"})
    rows = np.sort(np.random.default_rng(0).choice(len(full), n, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        cat_path = Path(tmp) / "catalog.csv"
        table = full.table.iloc[rows].copy()
        table["image"] = [str(p) for p in full.image_paths()[rows]]
        table.to_csv(cat_path, index=False)
        cat = load_catalog(cat_path)
        with fresh_cache():  # a machine that has never probed this model
            runs = _probe_runs(cat, table, Path(tmp))
    fp32 = (runs[0]["seconds"] + runs[3]["seconds"]) / 2
    out = {"cpu_flags": cpu_flags(), "n": n, "runs": runs, "fp32_mean_s": round(fp32, 2),
           "auto_cold_over_fp32": round(runs[1]["seconds"] / fp32, 3), "auto_cached_over_fp32": round(runs[2]["seconds"] / fp32, 3)}
    print(f"probe cost [{cpu_flags()}]: auto / fp32 = {out['auto_cold_over_fp32']} (speeds not cached), "
          f"{out['auto_cached_over_fp32']} (cached)", flush=True)
    return out


def _probe_runs(cat, table, tmp: Path) -> list[dict]:
    """fp32, auto (speeds not cached), auto (cached), fp32 again: the wall time of each whole embed call."""
    from simlabel.catalog import load_catalog

    table.head(64).to_csv(tmp / "warm.csv", index=False)
    _embed(load_catalog(tmp / "warm.csv"), tmp / "warm", precision="fp32")  # the ONNX export, untimed
    runs = []
    for i, (name, kw) in enumerate((("fp32", {"precision": "fp32"}), ("auto, speeds not cached", {}),
                                    ("auto, speeds cached", {}), ("fp32 again", {"precision": "fp32"}))):
        wall, engine, rate = _embed(cat, tmp / f"run{i}", **kw)
        runs.append({"run": name, "seconds": round(wall, 2), "engine": f"{engine.get('backend')} {engine.get('precision')}",
                     "reason": engine.get("reason", ""), "images_per_s_job": round(rate, 1)})
        print(f"probe cost [{cpu_flags()}]: {name}: {wall:.1f} s ({runs[-1]['engine']}: {runs[-1]['reason']})", flush=True)
    return runs


def full_datasets(data: Path, keep: Path) -> dict:
    """ONNX Runtime fp32 and auto end to end on both whole datasets, each from an empty cache: auto on a machine
    that never probed the model (``auto``), then again with the speeds and the probe's cost known (``auto
    again``). The stores are kept in ``keep``."""
    from simlabel.catalog import Catalog, load_catalog

    out: dict = {}
    for name, col in (("clothing-small", "label"), ("fashion-products", "article_type")):
        cat = load_catalog(data / name / "catalog.csv", columns={"label": col})
        res = {}
        with fresh_cache():
            _embed(Catalog(cat.table.head(64).reset_index(drop=True), cat.root), keep / name / "warm", precision="fp32")
            for run, kw in (("onnx fp32", {"precision": "fp32"}), ("auto", {}), ("auto again", {})):
                res[run] = _full_run(cat, keep / name / run.replace(" ", "-"), name, run, kw)
        auto = res["auto"]
        res["auto_over_fp32"] = round(auto["images_per_s"] / res["onnx fp32"]["images_per_s"], 2)
        res["auto_over_fp32_job"] = round(auto["images_per_s_job"] / res["onnx fp32"]["images_per_s_job"], 2)
        res["auto_again_over_fp32"] = round(res["auto again"]["images_per_s"] / res["onnx fp32"]["images_per_s"], 2)
        for c in auto["candidates"] or []:
            print(f"  {c['backend']} {c['precision']}: {c['images_per_s']} img/s model only, recall@10 "
                  f"{c.get('recall_at_10', float('nan')):.3f}, probe {c.get('probe_top1', float('nan')):.3f}, "
                  f"cosine {c.get('cosine', float('nan')):.4f}: {'passes' if c['passes'] else c['failed']}", flush=True)
        if auto["floor"]:
            f = auto["floor"]
            print(f"  floor ({f['rule']}): {f['recall_at_10']:.4f}" + (
                f" = fp32 under noise {f['noise_recall_at_10']:.4f} - se {f['noise_recall_at_10_se']:.4f}" if f["rule"] == "noise" else ""))
        print(f"{name}: auto / ONNX Runtime fp32 = {res['auto_over_fp32']} end to end with the probe, "
              f"{res['auto_over_fp32_job']} the job alone; auto again {res['auto_again_over_fp32']}", flush=True)
        out[name] = res
    return out


def _full_run(cat, folder: Path, name: str, run: str, kw: dict) -> dict:
    """One whole-dataset embed: its wall time (probe included), the job's own rate, and the engine's figures."""
    wall, engine, rate = _embed(cat, folder, **kw)
    row = {"seconds": round(wall, 1), "images_per_s": round(len(cat) / wall, 1), "images_per_s_job": round(rate, 1),
           "engine": f"{engine.get('backend')} {engine.get('precision')}", "reason": engine.get("reason"),
           "floor": engine.get("floor"), "candidates": engine.get("candidates")}
    print(f"{name} {run} [{cpu_flags()}]: {row['images_per_s']} images/s with the probe "
          f"({row['images_per_s_job']} the job alone), {row['engine']}: {row['reason']}", flush=True)
    return row


def downstream(data: Path, keep: Path) -> dict:
    """augment's labels and suspects' top 100 on fashion-products, from fp32 vectors and from auto's."""
    import numpy as np

    from simlabel import augment
    from simlabel.catalog import load_catalog
    from simlabel.labels.sample import SampleConfig, flip_labels, sample_labels
    from simlabel.labels.suspects import find_suspects
    from simlabel.store import load_embeddings

    cat = load_catalog(data / "fashion-products" / "catalog.csv", columns={"label": "article_type"})
    fp32 = load_embeddings(keep / "fashion-products" / "onnx-fp32")
    chosen = load_embeddings(keep / "fashion-products" / "auto")
    engine = chosen.meta.get("model_version", "")
    split = sample_labels(cat, SampleConfig(label_col="article_type", frac=0.1, holdout_frac=0.2, seed=0))
    truth = cat.table.set_index("id")["label"].astype(str)
    made = {}
    for name, emb in (("fp32", fp32), ("chosen", chosen)):
        a = augment(emb, split.sample, k=10, holdout=split.holdout).augmented.set_index("id")["label"].astype(str)
        made[name] = a
    a, b = made["fp32"], made["chosen"]
    both = a.index.intersection(b.index)
    aug_res = {"n_fp32": len(a), "n_chosen": len(b), "ids_jaccard": round(len(both) / len(a.index.union(b.index)), 4),
               "same_label_on_common": round(float((a.loc[both] == b.loc[both]).mean()), 4),
               "precision_fp32": round(float((a == truth.loc[a.index]).mean()), 4),
               "precision_chosen": round(float((b == truth.loc[b.index]).mean()), 4)}
    labelled = cat.table[["id", "label"]].dropna()
    noisy, flipped = flip_labels(labelled["label"].astype(str).to_numpy(), 0.1, seed=0)
    noisy_df = labelled.assign(label=noisy)
    tops = {}
    for name, emb in (("fp32", fp32), ("chosen", chosen)):
        tops[name] = find_suspects(emb, noisy_df).suspects["id"].head(100).tolist()
    planted = set(labelled["id"][flipped])
    sus = {"top100_overlap": len(set(tops["fp32"]) & set(tops["chosen"])),
           "top100_planted_fp32": len(set(tops["fp32"]) & planted), "top100_planted_chosen": len(set(tops["chosen"]) & planted)}
    print(f"downstream on fashion-products [{cpu_flags()}], fp32 vs {engine}:", flush=True)
    print(f"  augment: {aug_res['n_fp32']} vs {aug_res['n_chosen']} labels made, ids Jaccard {aug_res['ids_jaccard']}, "
          f"same label on the common ids {aug_res['same_label_on_common']}, precision {aug_res['precision_fp32']} vs "
          f"{aug_res['precision_chosen']}", flush=True)
    print(f"  suspects: top 100 in common {sus['top100_overlap']}, planted errors among them {sus['top100_planted_fp32']} "
          f"vs {sus['top100_planted_chosen']}", flush=True)
    return {"engine": engine, "augment": aug_res, "suspects": sus,
            "seeds": int(len(split.sample)), "noise": 0.1, "n_noisy": int(np.sum(flipped))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--capped", action="store_true", help="also the probe cost with the CPU capped at AVX2 (a child process)")
    ap.add_argument("--probe-only", action="store_true", help="the probe cost alone (what the capped child runs)")
    ap.add_argument("--skip-full", action="store_true", help="skip the whole-dataset and downstream runs")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, flags: {cpu_flags()}", flush=True)
    result: dict = {"cpu_flags": cpu_flags(), "probe_cost": probe_cost(args.data)}
    if args.probe_only:
        print(json.dumps(result))
        return
    if args.capped:
        child = subprocess.run([sys.executable, __file__, "--probe-only", "--data", str(args.data)],
                               env={**os.environ, **AVX2_CAP}, capture_output=True, text=True, check=True)
        print(child.stdout.rsplit("\n", 2)[0], flush=True)
        result["probe_cost_avx2_capped"] = json.loads(child.stdout.strip().splitlines()[-1])["probe_cost"]
    if not args.skip_full:
        with tempfile.TemporaryDirectory() as tmp:
            result["datasets"] = full_datasets(args.data, Path(tmp))
            result["downstream"] = downstream(args.data, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
