"""Embedding throughput and memory benchmarks (issue: foundation).

1. End-to-end embedding (JPEG decode + resize + model) of every clothing-small image,
   ONNX Runtime vs torch eager, side by side in one run, through the same `simlabel.embed`
   pipeline (same decoding threads, same batches); only the backend differs.
2. Peak resident memory of the `simlabel embed` command on the whole fashion-products
   catalog (images and titles), measured from the child process' ru_maxrss.

Usage: python benchmarks/bench_embed.py [--data ../shared/datasets] [--json out.json] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
            "--out", tmp, "--text-col", "title", "--no-progress", "--device", "cpu",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"embed failed: {proc.stderr[-3000:]}")
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(proc.stdout.strip())
    gib = peak_kib / 2**20
    print(f"peak RSS of `simlabel embed` on fashion-products (+titles): {gib:.2f} GiB in {wall:.0f} s", flush=True)
    return {"peak_rss_gib": round(gib, 3), "seconds": round(wall, 1), "stdout": proc.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--backends", default="onnx,torch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

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
