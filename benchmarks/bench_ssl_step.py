"""Issue 26, part 4: where a SkiLL training step's time goes on 2 CPU cores, natively and with oneDNN capped at AVX2.

One step at the CPU defaults (16 products; 2 x 128 px + 4 x 64 px views; the frozen EfficientNet-Lite0 trunk in
ONNX Runtime), for each recipe that trains the top (``paper``: 2 blocks, ``gentle``: 1 block) and ``projection``
(nothing under the map). Timed separately, each the mean of ``--steps`` steps after one warm-up, on fashion-products'
first 512 products:

* ``decode``: the product's image(s) read at a draft scale near the view size (one thread, per product);
* ``views``: the six views made from them: product crop, local space, random resized crops, the colour set
  (Pillow; one thread, per product);
* ``batch``: decode and views for the whole batch in the thread pool training uses (what a step waits for);
* ``trunk``: the frozen trunk on the step's views (ONNX Runtime);
* ``top``: the trained top and head forward, the DINO (or InfoNCE) loss, backward and the AdamW step (torch,
  bf16 autocast where the CPU has AVX512-BF16 or AMX, else fp32).

Run twice, each setting in its own process: natively, and with ``ONEDNN_MAX_CPU_ISA=AVX2`` and fp32 (torch's oneDNN
kernels limited to AVX2 code: an emulation of the AVX2-only machine kind; ONNX Runtime has no such cap).

Usage: python benchmarks/bench_ssl_step.py [--steps 6] [--json out.json]
"""

from __future__ import annotations

import argparse
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

DATA = HERE.parent.parent / "shared" / "datasets" / "fashion-products"


def child(steps: int, precision: str) -> dict:
    import numpy as np
    import torch

    from simlabel.catalog import design_groups, load_catalog
    from simlabel.images import load_image
    from simlabel.ssl.augment import LocalSpace, make_views
    from simlabel.ssl.backbones import OnnxTrunk
    from simlabel.ssl.contrastive import info_nce_loss
    from simlabel.ssl.dino import dino_loss
    from simlabel.ssl.recipes import recipe_options
    from simlabel.ssl.train import SSLConfig, _build, _load_batch, _Samples, _to_tensor

    cat = load_catalog(DATA / "catalog.csv")
    cat.table["product"] = design_groups(cat).to_numpy()
    cat = cat.head(512)
    out = {}
    for recipe in ("paper", "gentle", "projection"):
        cfg = SSLConfig(task_col="sub_category", product_col="product", precision=precision, **recipe_options(recipe))
        samples, space = _Samples(cat, cfg), LocalSpace.load(None)
        student, teacher = _build(cfg, "cpu")
        params = student.backbone.trainable_parameters() + [p for p in student.head.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" or (
            cfg.precision == "auto" and "avx512_bf16" in cpu_flags()))
        with tempfile.TemporaryDirectory() as d:
            trunk = OnnxTrunk(student.backbone.trunk, Path(d) / "trunk.onnx")
            times = {k: [] for k in ("decode", "views", "batch", "trunk", "top")}
            center = torch.zeros(1, cfg.out_dim)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                for step in range(steps + 1):
                    rows = np.random.default_rng(step).choice(len(samples), cfg.batch_size, replace=False)
                    t0 = time.perf_counter()
                    imgs = [load_image(samples.paths[r], draft_size=cfg.views.global_size) for r in rows]
                    t1 = time.perf_counter()
                    rng = np.random.default_rng(step)
                    for r, im in zip(rows, imgs):
                        make_views(im, None, samples.types[r], cfg.views, space, rng)
                    t2 = time.perf_counter()
                    batch, _ = _load_batch(pool, samples, cfg, space, 0, step, step, True)
                    t3 = time.perf_counter()
                    xs = [_to_tensor(b, "cpu") for b in batch]
                    g, loc = torch.cat(xs[:2]), torch.cat(xs[2:])
                    hg, hl = trunk(g), trunk(loc)
                    t4 = time.perf_counter()
                    with amp:
                        sg, sl = student.head(student.backbone.top(hg)), student.head(student.backbone.top(hl))
                        if cfg.objective == "infonce":
                            b = len(batch[0])
                            loss = info_nce_loss(sg[:b], sg[b:]) + info_nce_loss(sl[:b], sg[b:])
                        else:
                            with torch.no_grad():
                                t_out = teacher.head(teacher.backbone.top(hg))
                            loss = dino_loss(torch.cat([sg, sl]), t_out, center, n_student_views=6, n_teacher_views=2,
                                             student_temp=0.1, teacher_temp=0.04, shared_views=2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    t5 = time.perf_counter()
                    if step:  # the first is the warm-up
                        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                            times[k].append(v)
        mean = {k: float(np.mean(v)) for k, v in times.items()}
        step_s = mean["batch"] + mean["trunk"] + mean["top"]  # training overlaps the next batch's making
        out[recipe] = {**{f"{k}_s": v for k, v in mean.items()}, "serial_step_s": step_s,
                       "products_per_s_serial": cfg.batch_size / step_s,
                       "products_per_s_overlapped": cfg.batch_size / max(mean["batch"], mean["trunk"] + mean["top"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.steps, args.child)))
        return
    res = {"cpu_flags": cpu_flags()}
    print(f"CPU flags: {res['cpu_flags']}")
    for name, env, precision in (("native", {}, "auto"), ("avx2-emulated", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "fp32")):
        proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", precision],
                              env={**os.environ, **env}, capture_output=True, text=True, check=True)
        res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps(res[name], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
