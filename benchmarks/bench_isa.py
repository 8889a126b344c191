"""OpenVINO's engines with oneDNN capped at AVX2: an emulation of the AVX2-only machine kind (issue 16).

``ONEDNN_MAX_CPU_ISA=AVX2`` makes the oneDNN kernels inside OpenVINO's CPU plugin use AVX2 code only, as on a
2-core AMD EPYC. This measures the model-only speed (preprocessed clothing-small batches of 32, the probe's
``engines._speed``) of OpenVINO fp32 and int8 (the product's quantised model, calibrated on 128 catalog
images), natively and capped, each in its own process, alternating twice. bf16 does not run under the cap
(OpenVINO still sees the CPU's BF16 flag and fails to initialise the kernels), and ONNX Runtime has no such cap:
its kernels follow the CPU's flags. An emulation, not the machine: the caches, clocks and memory stay this one's.

Usage: python benchmarks/bench_isa.py [--data ../shared/datasets] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(pixels: Path, fp32: str, int8: str) -> None:
    import numpy as np

    from simlabel.engines import OpenVinoEngine, _speed

    X = np.load(pixels)
    out = {}
    for name, path in (("openvino fp32", fp32), ("openvino int8", int8)):
        out[name] = round(_speed(OpenVinoEngine(path, 2, name.split()[1]), X, seconds=3.0), 1)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], args.child[2])
        return

    import tempfile

    import numpy as np

    sys.path.insert(0, str(HERE))
    from machine import cpu_flags
    from simlabel.catalog import load_catalog
    from simlabel.encoders import get_image_encoder
    from simlabel.engines import Calibration, quantize_int8
    from simlabel.images import load_image

    flags = cpu_flags()
    print(f"isa: CPU flags {flags}", flush=True)
    cat = load_catalog(args.data / "clothing-small" / "catalog.csv")
    enc = get_image_encoder("efficientnet-lite0", "cpu")
    paths = cat.image_paths()
    order = np.random.default_rng(0).permutation(len(paths))[:384]
    X = np.stack([load_image(paths[i], draft_size=enc.image_size, transform=enc.preprocess) for i in order])
    fp32 = enc.onnx_model()
    int8 = quantize_int8(fp32, Calibration(X[:128], [str(cat.ids[i]) for i in order[:128]], 0))
    runs: dict = {"native": [], "AVX2 cap": []}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "px.npy", X[128:])
        for _ in range(2):
            for kind in runs:
                env = dict(os.environ, **({"ONEDNN_MAX_CPU_ISA": "AVX2"} if kind == "AVX2 cap" else {}))
                proc = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / "px.npy"), str(fp32), str(int8)],
                                      env=env, capture_output=True, text=True, check=True)
                runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(kind, runs[kind][-1], flush=True)
    result = {"cpu_flags": flags, "runs": runs}
    for kind, rs in runs.items():
        fp, i8 = (float(np.mean([r[k] for r in rs])) for k in ("openvino fp32", "openvino int8"))
        result[kind] = {"openvino fp32": round(fp, 1), "openvino int8": round(i8, 1), "int8_over_fp32": round(i8 / fp, 2)}
        print(f"{kind}: OpenVINO fp32 {fp:.0f}, int8 {i8:.0f} images/s (model only): int8 {i8 / fp:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
