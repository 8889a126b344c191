"""Issue 25: `simlabel predict` at catalog scale, calibration on the shared datasets, and predict --catalog's speed.

1. ``--n``: predict from an N x 1280 store (a mixture of 75 classes, unit vectors, written in shards of
   ``--shard`` rows as `embed` writes them) with a linear head over 75 classes (calibrated, thresholds for 0.9),
   in a fresh process: wall time, rows/s and peak memory. The store is written beforehand (not timed).
2. ``--calibration``: on clothing-small (its test split) and fashion-products (article_type, a stratified 20%
   test set, seed 0), a linear head trained on the rest (`train`, temperature scaling out of fold; then vector
   scaling): the test set's expected calibration error (15 bins) before and after, and under ``min_precision``
   0.9 (every class at once, the default, and each class on its own) the lowest test precision over the classes
   with at least 20 test items.
3. ``--catalog-speed``: on clothing-small, `embed` against `predict --catalog` (both without the vector cache,
   into fresh folders), side by side in one run: images/s.
4. ``--export``: a model trained on clothing-small's embeddings, exported to ONNX (`simlabel export`), run on the
   catalog's first 100 images with ONNX Runtime and OpenVINO against the model's own probabilities (the largest
   difference), the graph's images/s on pre-processed pixels, and `predict --catalog` on the same 100 images.
5. ``--export-titles``: image+title models of fashion-products (article_type; concatenated, and attention fusion)
   exported as one graph of three inputs (pixels, input_ids, attention_mask), checked the same way on the first
   100 items with their titles.

Usage: python benchmarks/bench_predict.py [--n 1000000] [--shard 1024] [--calibration] [--catalog-speed]
       [--export] [--export-titles] [--cs-emb DIR] [--fp-emb DIR] [--fp-text-emb DIR] [--json out.json]
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
from bench_graph import in_process  # noqa: E402
from machine import cpu_flags  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets"


def write_store(folder: Path, n: int, dim: int, classes: int, shard: int, seed: int = 0) -> pd.DataFrame:
    """An N x dim mixture of ``classes`` unit-vector clusters as a store; returns 200 labelled rows per class."""
    from simlabel.store import shard_name, write_shard

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    labelled = []
    for k, s in enumerate(range(0, n, shard)):
        m = min(shard, n - s)
        y = rng.integers(0, classes, m)
        X = centres[y] + 1.5 * rng.standard_normal((m, dim)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        ids = np.array([f"p{i}" for i in range(s, s + m)], dtype=object)
        write_shard(folder / shard_name(k), ids, X, {"model": "synthetic-mixture", "model_version": "mixture/1",
                                                     "modality": "image", "normalized": True})
        if sum(len(t) for t in labelled) < 200 * classes:
            labelled.append(pd.DataFrame({"id": ids, "label": [f"class{c:02d}" for c in y]}))
    return pd.concat(labelled, ignore_index=True).head(200 * classes)


def bench_scale(n: int, shard: int, work: Path) -> dict:
    from simlabel.head_config import HeadConfig
    from simlabel.store import Embeddings, iter_embeddings, read_metadata
    from simlabel.training import train

    t0 = time.perf_counter()
    labels = write_store(work / "emb", n, 1280, 75, shard)
    write_s = time.perf_counter() - t0
    # the labelled rows only (the first shards), as a value of the store's space: this process never holds the store
    got, blocks = 0, []
    for ids, X in iter_embeddings(work / "emb"):
        blocks.append((ids, X))
        got += len(ids)
        if got >= len(labels):
            break
    part = Embeddings(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]),
                      {**read_metadata(work / "emb"), "path": str(work / "emb")})
    train(part, labels, config=HeadConfig(device="cpu"), out=work / "model")
    # the peak of the predicting process alone: VmHWM of its own address space (ru_maxrss survives exec on Linux,
    # so a child's would start at this process's peak)
    code = f"""
import json, time
from simlabel.prediction import predict
t = time.perf_counter()
made = predict({str(work / 'model')!r}, {str(work / 'emb')!r}, out={str(work / 'pred')!r}, min_precision=0.9, progress=False)
s = time.perf_counter() - t
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({{"rows": made.summary["rows"], "parts": made.summary["parts"], "abstained": made.summary["abstained"],
                  "predict_s": s, "rows_per_s": made.summary["rows"] / s, "peak_rss_gib": hwm / 2**20}}))
"""
    out = in_process(code)
    out.pop("children_max_rss_gib", None)  # inherited across exec from this process: not the predicting one's
    out.update(n=n, dim=1280, classes=75, shard_rows=shard, store_write_s=round(write_s, 1))
    return out


def _split(name: str, emb_dir: str | None):
    from simlabel.experiments._common import fixed_split, open_experiment

    col = None if name == "clothing-small" else "article_type"
    ex = open_experiment(DATA / name, model="efficientnet-lite0", label_col=col, embeddings=emb_dir, progress=False)
    t = ex.catalog.table.set_index("id").loc[ex.embeddings.ids.astype(str)]
    y = t["label"].astype(str)
    has = (y != "").to_numpy()
    if "split" in t.columns and (t["split"] == "test").any():
        test = (t["split"] == "test").to_numpy() & has
    else:
        test = np.zeros(len(y), bool)
        test[np.flatnonzero(has)] = fixed_split(y[has], 0.2, 0)
    table = pd.DataFrame({"id": t.index.astype(str), "label": y.to_numpy()})
    return ex.embeddings, table[has & ~test], table[test]


def bench_calibration(cs_emb: str | None, fp_emb: str | None) -> dict:
    from simlabel.head_config import HeadConfig
    from simlabel.training import evaluate, train

    out = {}
    for name, emb_dir in (("clothing-small", cs_emb), ("fashion-products", fp_emb)):
        emb, pool, test = _split(name, emb_dir)
        for method in ("temperature", "vector"):
            clf = train(emb, pool, config=HeadConfig(device="cpu"), calibration=method, progress_label=f"{name} {method}")
            for scope in ("all", "each"):  # every class at once (the default), or each class on its own
                rep = evaluate(clf, emb, test, min_precision=0.9, warn=False, precision_scope=scope)
                per = rep["abstention"]["per_class"]
                big = {c: m for c, m in per.items() if m["support"] >= 20}
                precisions = [m["precision"] for m in big.values() if m["precision"] is not None]
                out[f"{name}/{method}/{scope}"] = {
                    "test": int(len(test)), "accuracy": rep["accuracy"],
                    "calibration": {k: v for k, v in rep["calibration"].items() if not k.startswith("bins")},
                    "ece_before": rep["calibration"]["ece_before"], "ece_after": rep["calibration"]["ece_after"],
                    "abstain_coverage": rep["abstention"]["coverage"], "abstain_precision": rep["abstention"]["precision"],
                    "classes_20_plus": len(big), "min_class_precision_20_plus": min(precisions) if precisions else None,
                    "classes_under_088_20_plus": sum(p < 0.88 for p in precisions),
                    "classes_always_abstaining_20_plus": sum(m["kept"] == 0 for m in big.values()),
                }
    return out


def bench_catalog_speed(work: Path) -> dict:
    from simlabel.embedding import embed
    from simlabel.head_config import HeadConfig
    from simlabel.prediction import predict
    from simlabel.training import train

    cat = DATA / "clothing-small" / "catalog.csv"
    t0 = time.perf_counter()
    res = embed(cat, work / "emb", cache=False, progress=False, device="cpu")
    embed_s = time.perf_counter() - t0
    table = pd.read_csv(cat, dtype=str)
    train(work / "emb", table[["id", "label"]], config=HeadConfig(device="cpu"), out=work / "model")
    t0 = time.perf_counter()
    made = predict(work / "model", catalog=cat, out=work / "pred", cache=False, progress=False, device="cpu")
    predict_s = time.perf_counter() - t0
    return {"images": res.n_items, "embed_s": embed_s, "embed_images_per_s": res.n_items / embed_s,
            "predict_catalog_s": predict_s, "predict_catalog_images_per_s": made.summary["rows"] / predict_s,
            "ratio": (made.summary["rows"] / predict_s) / (res.n_items / embed_s)}


def bench_export(work: Path, cs_emb: str | None) -> dict:
    from simlabel.export import check_export, export_classifier
    from simlabel.head_config import HeadConfig
    from simlabel.prediction import predict
    from simlabel.training import train

    cat = pd.read_csv(DATA / "clothing-small" / "catalog.csv", dtype=str)
    emb = cs_emb or None
    if emb is None:
        from simlabel.embedding import embed

        embed(DATA / "clothing-small" / "catalog.csv", work / "emb", progress=False, device="cpu")
        emb = work / "emb"
    train(emb, cat[["id", "label"]], config=HeadConfig(device="cpu"), out=work / "model")
    t0 = time.perf_counter()
    export_classifier(work / "model", work / "classifier.onnx")
    export_s = time.perf_counter() - t0
    first = cat.head(100).assign(image=lambda d: [str(DATA / "clothing-small" / p) for p in d["image"]])
    first.to_csv(work / "first100.csv", index=False)
    res = check_export(work / "classifier.onnx", work / "model", work / "first100.csv")
    t0 = time.perf_counter()
    predict(work / "model", catalog=work / "first100.csv", out=work / "pred100", cache=False, progress=False, device="cpu")
    res.update(export_s=export_s, predict_catalog_images_per_s=100 / (time.perf_counter() - t0),
               onnx_mib=(work / "classifier.onnx").stat().st_size / 2**20)
    return res


def bench_export_titles(work: Path, fp_emb: str | None, fp_text_emb: str | None) -> dict:
    """An image+title model of fashion-products (article_type) exported as one graph of three inputs, checked on the
    catalog's first 100 items against the model (simlabel's encoders, then the head)."""
    from simlabel.export import check_export, export_classifier
    from simlabel.head_config import HeadConfig
    from simlabel.training import train

    cat = pd.read_csv(DATA / "fashion-products" / "catalog.csv", dtype=str, keep_default_na=False)
    if fp_emb is None or fp_text_emb is None:
        from simlabel.embedding import embed

        embed(DATA / "fashion-products" / "catalog.csv", work / "emb", text_col="title", progress=False, device="cpu")
        fp_emb, fp_text_emb = str(work / "emb"), str(work / "emb" / "text")
    labels = cat[["id", "article_type"]].rename(columns={"article_type": "label"})
    out = {}
    for fusion in ("none", "attention"):
        model = work / f"model-{fusion}"
        train(fp_emb, labels, text_emb=fp_text_emb, inputs="image+text", fusion=fusion, config=HeadConfig(device="cpu"),
              out=model)
        t0 = time.perf_counter()
        export_classifier(model, work / f"{fusion}.onnx")
        export_s = time.perf_counter() - t0
        first = cat.head(100).assign(image=lambda d: [str(DATA / "fashion-products" / p) for p in d["image"]])
        first.to_csv(work / "first100.csv", index=False)
        res = check_export(work / f"{fusion}.onnx", model, work / "first100.csv")
        out[fusion] = {**res, "export_s": export_s, "onnx_mib": (work / f"{fusion}.onnx").stat().st_size / 2**20}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--shard", type=int, default=1024)
    ap.add_argument("--calibration", action="store_true")
    ap.add_argument("--catalog-speed", action="store_true")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--cs-emb", default=None)
    ap.add_argument("--fp-emb", default=None)
    ap.add_argument("--fp-text-emb", default=None)
    ap.add_argument("--export-titles", action="store_true")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out: dict = {"cpu_flags": cpu_flags()}
    print(f"CPU flags: {out['cpu_flags']}")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        if args.n:
            out["scale"] = bench_scale(args.n, args.shard, work / "scale")
            print(json.dumps(out["scale"], indent=1))
        if args.calibration:
            out["calibration"] = bench_calibration(args.cs_emb, args.fp_emb)
            print(json.dumps(out["calibration"], indent=1))
        if args.export:
            out["export"] = bench_export(work / "export", args.cs_emb)
            print(json.dumps(out["export"], indent=1))
        if args.export_titles:
            out["export_titles"] = bench_export_titles(work / "export_titles", args.fp_emb, args.fp_text_emb)
            print(json.dumps(out["export_titles"], indent=1))
        if args.catalog_speed:
            out["catalog_speed"] = bench_catalog_speed(work / "speed")
            print(json.dumps(out["catalog_speed"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
