"""Issue 16: JPEG decoding, libjpeg-turbo through simplejpeg (DCT-domain scaling, strict) against Pillow's draft
decoding, side by side on every image of both shared datasets, single-threaded, to the encoder's 224 px input.

Usage: python benchmarks/bench_decode.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import simlabel.images as images
    from simlabel.catalog import load_catalog
    from simlabel.encoders import get_image_encoder

    enc = get_image_encoder("efficientnet-lite0", "cpu")
    decoder = images.simplejpeg
    out: dict = {"cpu_flags": cpu_flags()}
    print(f"CPU flags: {cpu_flags()}", flush=True)
    for name in ("clothing-small", "fashion-products"):
        paths = load_catalog(DATA / name / "catalog.csv").image_paths()
        row = {}
        for label, dec in (("simplejpeg", decoder), ("pillow draft", None)):
            images.simplejpeg = dec
            for stage, fn in (("decode", lambda p: images.load_image(p, draft_size=224)),
                              ("decode + preprocess", lambda p: images.load_image(p, draft_size=224, transform=enc.preprocess))):
                t0 = time.perf_counter()
                for p in paths:
                    fn(p)
                rate = len(paths) / (time.perf_counter() - t0)
                row[f"{label}: {stage}"] = round(rate, 1)
                print(f"{name} {label} {stage}: {rate:.0f} images/s (one thread)", flush=True)
        images.simplejpeg = decoder
        out[name] = row
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
