"""Issue 13's CPU design choices for SkiLL, measured side by side in one run on this machine.

1. The colour-agnostic set (ColorJitter p 0.8, grey 0.5, blur 0.5) on 32 images of 224 px:
   Pillow per image (simlabel's CPU path, in the decoding threads) against kornia on the batch.
2. The frozen EfficientNet-Lite0 trunk (all but the last 2 blocks) on one step's views
   (2 x 16 at 128 px + 4 x 16 at 64 px): torch eager against ONNX Runtime.
3. Training steps at the CPU defaults (16 products, 2 x 128 + 4 x 64 px): products/s with the
   trunk in ONNX Runtime and fp32, with bf16 autocast, and with the trunk in torch.

Usage: python benchmarks/bench_ssl.py [--steps 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "fashion-products"



def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_colour(images: list[Image.Image]) -> dict:
    from simlabel.ssl.augment import ViewConfig, global_ops, kornia_colour

    cfg = ViewConfig(p_flip=0.0)
    rng = np.random.default_rng(0)
    pil = best(lambda: [global_ops(im, cfg, rng) for im in images])
    batch = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    kor = best(lambda: kornia_colour(batch, cfg, generator_seed=0))
    return {"pillow_s": pil, "kornia_s": kor, "kornia_over_pillow": kor / pil}


def bench_trunk() -> dict:
    from simlabel.ssl.backbones import EfficientNetBackbone, OnnxTrunk

    bb = EfficientNetBackbone(train_blocks=2)
    g, loc = torch.randn(32, 3, 128, 128), torch.randn(64, 3, 64, 64)
    with torch.inference_mode():
        eager = best(lambda: (bb.trunk(g), bb.trunk(loc)))
    with tempfile.TemporaryDirectory() as d:
        ort = OnnxTrunk(bb.trunk, Path(d) / "trunk.onnx")
        onnx = best(lambda: (ort(g), ort(loc)))
    return {"torch_s": eager, "onnx_s": onnx, "torch_over_onnx": eager / onnx}


def bench_training(catalog: Path, steps: int) -> dict:
    from simlabel.progress import progress_mode
    from simlabel.ssl import SSLConfig, train_ssl

    out = {}
    variants = {
        "onnx trunk, fp32 (default)": {},
        "onnx trunk, bf16 autocast": {"precision": "bf16"},
        "torch trunk, fp32": {"trunk_backend": "torch"},
    }
    for name, kw in variants.items():
        with tempfile.TemporaryDirectory() as d, progress_mode("off"):
            cfg = SSLConfig(steps_per_epoch=steps, task_col="sub_category", product_col="product", checkpoint_every=1000, **kw)
            res = train_ssl(catalog, Path(d) / "m", cfg, device="cpu", progress=False)
        # the first 2 steps include the ONNX export and warm-up: rate over the rest
        hist = res.history
        rate = sum(h["batch"] for h in hist[2:]) / (hist[-1]["seconds"] - hist[1]["seconds"])
        out[name] = {"products_per_s": rate, "steps": len(hist), "final_loss": hist[-1]["loss"]}
        print(f"  {name}: {rate:.2f} products/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from simlabel.catalog import design_groups
    from simlabel.images import load_image

    print(f"machine: {os.cpu_count()} cores, flags: {cpu_flags()}, torch threads {torch.get_num_threads()}", flush=True)
    t = pd.read_csv(DATA / "catalog.csv", dtype=str, keep_default_na=False)
    t["product"] = design_groups(t).to_numpy()
    t["image"] = [str(DATA / p) for p in t["image"]]
    images = [load_image(p).resize((224, 224)) for p in t["image"][:32]]
    res = {"machine": cpu_flags(), "cores": os.cpu_count()}
    res["colour"] = bench_colour(images)
    print(f"colour set, 32 x 224 px: Pillow {res['colour']['pillow_s']:.3f} s, kornia {res['colour']['kornia_s']:.3f} s "
          f"({res['colour']['kornia_over_pillow']:.1f}x Pillow's time)", flush=True)
    res["trunk"] = bench_trunk()
    print(f"frozen trunk, one step's views: torch {res['trunk']['torch_s']:.3f} s, ONNX Runtime {res['trunk']['onnx_s']:.3f} s "
          f"({res['trunk']['torch_over_onnx']:.1f}x)", flush=True)
    with tempfile.TemporaryDirectory() as d:
        cat = Path(d) / "catalog.csv"
        t.to_csv(cat, index=False)
        res["training"] = bench_training(cat, args.steps)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
