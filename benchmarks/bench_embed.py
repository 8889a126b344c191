"""Embedding throughput and memory benchmarks (issue: foundation).

1. End-to-end embedding (JPEG decode + resize + model) of every clothing-small image,
   ONNX Runtime vs torch eager, side by side in one run, through the same `simlabel.embed`
   pipeline (same decoding threads, same batches); only the backend differs.
2. Peak resident memory of the `simlabel embed` command on the whole fashion-products
   catalog (images and titles), measured from the child process' ru_maxrss.

3. With ``--engines`` (issue 16): every engine and precision end to end through ``simlabel.embed`` on all of
   clothing-small and fashion-products, side by side in one run (vector cache off): ONNX Runtime fp32 (the old
   default) and int8, OpenVINO fp32, bf16 and int8, torch eager (clothing-small only: ~20 images/s), and
   ``auto`` (probe included). Beside each speed its agreement with fp32 over the whole catalog: mean cosine,
   recall@10 of the k-NN lists, top-1 agreement of a linear probe. Also the decode-only ceiling (the same job
   with the model removed), each engine's model-only speed, the decoding-thread split, and the peak memory of
   ``auto`` on fashion-products. The CPU flags are printed with the figures.

Usage: python benchmarks/bench_embed.py [--data ../shared/datasets] [--json out.json] [--skip-memory] [--engines]
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

HERE = Path(__file__).resolve().parent


def throughput(data: Path, backends: list[str], batch_size: int, workers: int | None) -> dict:
    from simlabel.catalog import load_catalog
    from simlabel.embedding import embed
    from simlabel.encoders import get_image_encoder

    catalog = load_catalog(data / "clothing-small" / "catalog.csv")
    results = {}
    for backend in backends:
        encoder = get_image_encoder("efficientnet-lite0", "cpu", backend=backend)
        # warm-up outside the timing: the first call allocates and (torch) picks kernels
        import numpy as np

        encoder(np.zeros((batch_size, 3, 224, 224), np.float32))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = embed(catalog, tmp, image_encoder=encoder, batch_size=batch_size, workers=workers, progress=False)
            wall = time.perf_counter() - t0
        results[backend] = {
            "images": res.n_items,
            "embedded": res.n_embedded,
            "failed": res.n_failed,
            "seconds": round(wall, 2),
            "images_per_s": round(res.n_items / wall, 1),
        }
        print(f"{backend:>5}: {res.n_items} images in {wall:.1f} s = {res.n_items / wall:.1f} images/s", flush=True)
    return results


def peak_memory(data: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "simlabel.cli", "embed", str(data / "fashion-products" / "catalog.csv"),
            "--out", tmp, "--text-col", "title", "--no-progress", "--device", "cpu", "--no-cache",
        ]
        t0 = time.perf_counter()
        with open(Path(tmp) / "stdout", "w+") as so, open(Path(tmp) / "stderr", "w+") as se:
            proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
            # this child's own peak: RUSAGE_CHILDREN would also count any child forked earlier from this
            # (by then large) process, whose RSS at the fork is charged to it (3.6 GiB after --engines)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"embed failed: {stderr[-3000:]}")
        peak_kib = usage.ru_maxrss
    print(stdout.strip())
    gib = peak_kib / 2**20
    print(f"peak RSS of `simlabel embed` on fashion-products (+titles): {gib:.2f} GiB in {wall:.0f} s", flush=True)
    return {"peak_rss_gib": round(gib, 3), "seconds": round(wall, 1), "stdout": stdout.strip()}


class _DecodeOnly:
    """The decode-only ceiling: the encoder's own decoding and preprocessing, and no model (benchmark only)."""

    def __init__(self, encoder) -> None:
        self.inner = encoder
        self.name, self.dim, self.image_size = encoder.name, encoder.dim, encoder.image_size
        self.version = encoder.version + "/decode-only"
        self.device = "cpu"

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def __call__(self, pixels):
        import numpy as np

        out = np.zeros((len(pixels), self.dim), np.float32)
        out[:, 0] = 1.0
        return out

    def describe(self) -> dict:
        return {"model": self.name, "dim": self.dim, "version": self.version, "modality": "image"}


def engines(data: Path, workers: int | None) -> dict:
    """Every engine end to end on both datasets, with its agreement against fp32 over the whole catalog."""

    sys.path.insert(0, str(HERE))
    from machine import cpu_flags
    from simlabel.catalog import load_catalog
    from simlabel.embedding import embed
    from simlabel.encoders import get_image_encoder
    from simlabel.engines import agreement
    from simlabel.store import load_embeddings

    print(f"engines: CPU flags {cpu_flags()}", flush=True)
    out: dict = {"cpu_flags": cpu_flags(), "datasets": {}}
    runs = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
            ("torch", "fp32"), ("auto", "auto")]
    lax = {"cosine": 0.0, "recall_at_10": 0.0, "probe_top1": 0.0}  # measure every engine, whatever its agreement
    for name, label_col in (("clothing-small", "label"), ("fashion-products", "article_type")):
        catalog = data / name / "catalog.csv"
        cat = load_catalog(catalog, columns={"label": label_col})
        res: dict = {}
        auto_candidates: list = []
        with tempfile.TemporaryDirectory() as tmp:
            ref = None
            for backend, precision in runs:
                if backend == "torch" and name != "clothing-small":
                    continue
                folder = Path(tmp) / f"{backend}-{precision}"
                t0 = time.perf_counter()
                r = embed(cat, folder, backend=backend, precision=precision, gate=None if backend == "auto" else lax,
                          workers=workers, progress=False, cache=False)
                wall = time.perf_counter() - t0
                e = load_embeddings(folder)
                if ref is None:
                    ref = e
                X = e.rows(ref.ids).matrix
                labels = cat.table.set_index("id").loc[ref.ids, "label"].astype(str).to_numpy()
                fig = agreement(ref.matrix, X, labels) if (backend, precision) != ("onnx", "fp32") else {
                    "cosine": 1.0, "recall_at_10": 1.0, "probe_top1": 1.0}
                # images_per_s: the embedding job itself (decode, model, writes); with_probe: the wall time with the
                # engine probe (sample decoding, int8 calibration, the gate) that runs before it
                row = {"images": r.n_items, "seconds": round(wall, 1), "images_per_s": round(r.items_per_s, 1),
                       "with_probe_per_s": round(r.n_items / wall, 1), "probe_s": round(wall - r.seconds, 1),
                       "engine": f"{r.engine.get('backend', backend)} {r.engine.get('precision', precision)}",
                       "model_only_per_s": next((c["images_per_s"] for c in r.engine.get("candidates", [])
                                                 if (c["backend"], c["precision"]) == (backend, precision)), None),
                       **{k: round(v, 4) for k, v in fig.items() if k != "n"}}
                res[f"{backend} {precision}"] = row
                if backend == "auto":
                    auto_candidates = r.engine.get("candidates", [])
                print(f"{name} {backend} {precision}: {row['images_per_s']} images/s end to end ({row['engine']}; "
                      f"{row['with_probe_per_s']} with the {row['probe_s']} s probe), "
                      f"cosine {row['cosine']}, recall@10 {row['recall_at_10']}, probe {row['probe_top1']}", flush=True)
            enc = get_image_encoder("efficientnet-lite0", "cpu")
            t0 = time.perf_counter()
            r = embed(cat, Path(tmp) / "decode", image_encoder=_DecodeOnly(enc), workers=workers, progress=False, cache=False)
            res["decode only"] = {"images": r.n_items, "seconds": round(time.perf_counter() - t0, 1),
                                  "images_per_s": round(r.items_per_s, 1)}
            print(f"{name} decode only: {res['decode only']['images_per_s']} images/s", flush=True)
        # fp32 runs decode no sample and gate nothing, so their model-only speeds come from auto's probe
        for c in auto_candidates:
            row = res.get(f"{c['backend']} {c['precision']}")
            if row is not None and row.get("model_only_per_s") is None:
                row["model_only_per_s"] = c["images_per_s"]
        base = res["onnx fp32"]["images_per_s"]
        for row in res.values():
            row["over_onnx_fp32"] = round(row["images_per_s"] / base, 2)
        if "torch fp32" in res:
            res["auto_over_torch"] = round(res["auto auto"]["images_per_s"] / res["torch fp32"]["images_per_s"], 2)
        out["datasets"][name] = res
    # decoding threads against engine threads, for the auto engine on clothing-small
    split = {}
    cat = load_catalog(data / "clothing-small" / "catalog.csv")
    for w in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            r = embed(cat, tmp, workers=w, progress=False, cache=False)
            split[w] = round(r.items_per_s, 1)
        print(f"decoding threads {w}: {split[w]} images/s end to end ({r.engine.get('backend')} {r.engine.get('precision')})", flush=True)
    out["decode_threads"] = split
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--backends", default="onnx,torch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--engines", action="store_true", help="every engine and precision on both datasets (issue 16)")
    args = ap.parse_args()
    if args.engines:
        res = {"engines": engines(args.data, args.workers)}
        if not args.skip_memory:
            res["memory"] = peak_memory(args.data)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return

    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS")}
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "env": env}
    out: dict = {"machine": machine}
    out["throughput"] = throughput(args.data, args.backends.split(","), args.batch_size, args.workers)
    if {"onnx", "torch"} <= set(out["throughput"]):
        ratio = out["throughput"]["onnx"]["images_per_s"] / out["throughput"]["torch"]["images_per_s"]
        out["onnx_over_torch"] = round(ratio, 2)
        print(f"ONNX Runtime / torch eager: {ratio:.2f}x")
    if not args.skip_memory:
        out["memory"] = peak_memory(args.data)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
