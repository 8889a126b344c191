"""How well the agreement gate of ``simlabel.engines`` judges a reduced precision (issue 16).

For each dataset, every image is decoded once (to a float16 memory-mapped file in a temporary folder: the
catalog never sits in memory) and embedded by ONNX Runtime fp32 (the reference), OpenVINO bf16 (where the CPU
computes bf16), the product's int8 model (ONNX Runtime static QDQ, calibrated on 128 of the catalog's images,
first and last 3 convolutions fp32), an int8 variant that keeps the first 10 fp32, NNCF's post-training int8 with
full bias correction (only when ``nncf`` is importable: it is not a simlabel dependency), and fp32 on pixels
with uniform noise of +-0.25 and +-0.5 of a pixel level (the rounding every 8-bit photo already carries: a
noise floor for recall@10). Then:

1. each candidate's whole-catalog cosine and recall@10 against fp32;
2. the true recall among random subsets of 96 ... 3,072 images (how recall falls as the set grows);
3. the gate's estimate (``engines.agreement`` with ``catalog_size``) on ``--reps`` (12) random samples of 384 and of 768
   images: its bias and spread against the whole-catalog recall, the mean split-half standard error it reports,
   and how often ``engines.passes`` (the estimate minus ``GATE["sigmas"]`` standard errors) passes.

Usage: python benchmarks/bench_gate.py [--data ../shared/datasets] [--json out.json] [--reps 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def decode_all(cat, enc, path: Path) -> np.ndarray:
    from simlabel.images import ImageError, load_image

    paths = cat.image_paths()
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(paths), 3, enc.image_size, enc.image_size))
    ok = np.ones(len(paths), bool)

    def one(i: int) -> None:
        try:
            X[i] = load_image(paths[i], draft_size=enc.image_size, transform=enc.preprocess)
        except ImageError:
            ok[i] = False

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(len(paths))))
    X.flush()
    return np.load(path, mmap_mode="r"), ok


def run(engine, X: np.ndarray, noise: float = 0.0, std: float = 0.5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for a in range(0, len(X), 64):
        x = np.asarray(X[a:a + 64], dtype=np.float32)
        if noise:
            # a pixel level is 1/255 of [0, 1], i.e. 1/(255 std) after the encoder's normalisation
            x = x + rng.uniform(-noise, noise, x.shape).astype(np.float32) / (255 * std)
        out.append(engine(x))
    e = np.concatenate(out)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def ort_int8(fp32: Path, calib: np.ndarray, first: int, last: int, out: Path) -> Path:
    """The product's quantisation (engines.quantize_int8) with ``first``/``last`` convolutions kept fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    g = onnx.load(str(pre)).graph
    convs = [n.name for n in g.node if n.op_type == "Conv"]
    keep = convs[:first] + convs[len(convs) - last:]
    name = g.input[0].name
    batches = iter([{name: calib[i:i + 4]} for i in range(0, len(calib), 4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
    return out


def nncf_int8(fp32: Path, calib: np.ndarray, out: Path) -> Path | None:
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return None
    model = ov.Core().read_model(str(fp32))
    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution")]
    q = nncf.quantize(model, nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]), subset_size=len(calib),
                      preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=False,
                      ignored_scope=nncf.IgnoredScope(names=convs[:3] + convs[-3:]))
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def candidates(fp32: Path, X: np.ndarray, calib: np.ndarray, tmp: Path, bf16: bool):
    """``(tag, normalised embeddings or None)`` of each engine compared with fp32, built one at a time."""
    from simlabel.engines import OnnxRuntimeEngine, OpenVinoEngine

    if bf16:
        yield "openvino bf16", run(OpenVinoEngine(fp32, precision="bf16"), X)
    for first, last in ((3, 3), (10, 3)):
        tag = "int8 (product: first/last 3 fp32)" if (first, last) == (3, 3) else f"int8, first {first} / last {last} fp32"
        yield tag, run(OnnxRuntimeEngine(ort_int8(fp32, calib, first, last, tmp / f"q{first}-{last}.onnx")), X)
    p = nncf_int8(fp32, calib, tmp / "nncf.xml")
    yield "nncf int8 (bias correction)", None if p is None else run(OpenVinoEngine(p), X)
    for lsb in (0.25, 0.5):
        yield f"fp32, pixel noise +-{lsb}", run(OnnxRuntimeEngine(fp32), X, noise=lsb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=12)
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from machine import cpu_flags
    from simlabel.catalog import load_catalog
    from simlabel.encoders import get_image_encoder
    from simlabel.engines import GATE, OnnxRuntimeEngine, _knn_recall, agreement, available, passes

    flags = cpu_flags()
    print(f"gate: CPU flags {flags}", flush=True)
    enc = get_image_encoder("efficientnet-lite0", "cpu")
    fp32 = Path(enc.onnx_model())
    result: dict = {"cpu_flags": flags, "gate": GATE, "datasets": {}}
    bf16 = available("openvino") and ("avx512_bf16" in flags or "amx_bf16" in flags)
    for name, label_col in (("clothing-small", "label"), ("fashion-products", "article_type")):
        cat = load_catalog(args.data / name / "catalog.csv", columns={"label": label_col})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            X, ok = decode_all(cat, enc, Path(tmp) / "pixels.npy")
            X = X[np.flatnonzero(ok)] if not ok.all() else X
            labels = cat.table["label"].astype(str).to_numpy()[ok]
            print(f"{name}: {len(X)} images decoded in {time.perf_counter() - t0:.0f} s", flush=True)
            rng = np.random.default_rng(0)
            calib = np.asarray(X[np.sort(rng.permutation(len(X))[:128])], dtype=np.float32)
            ref = run(OnnxRuntimeEngine(fp32), X)
            rows = {}
            for tag, c in candidates(fp32, X, calib, Path(tmp), bf16):
                if c is None:
                    print(f"{name} {tag}: skipped (not importable)", flush=True)
                    continue
                true = _knn_recall(ref, c, 10)
                row = {"cosine": round(float((ref * c).sum(1).mean()), 5), "recall_at_10": round(true, 4)}
                curve = {}
                for m in (96, 192, 384, 768, 1536, 3072):
                    if m < len(X):
                        curve[m] = round(float(np.mean([_knn_recall(ref[i], c[i], 10) for i in
                                                        (rng.choice(len(X), m, replace=False) for _ in range(5))])), 4)
                row["recall_by_size"] = curve
                for s in (384, 768):
                    est, ses, passed = [], [], 0
                    for _ in range(args.reps):
                        i = rng.choice(len(X), s, replace=False)
                        fig = agreement(ref[i], c[i], labels[i], catalog_size=len(X))
                        est.append(fig["recall_at_10"])
                        ses.append(fig["recall_at_10_se"])
                        passed += passes({**fig, "cosine": 1, "probe_top1": 1})[0]  # the recall's verdict alone
                    err = np.array(est) - true
                    row[f"sample_{s}"] = {"bias": round(float(err.mean()), 4), "sd": round(float(err.std()), 4),
                                          "max_over": round(float(err.max()), 4), "mean_se": round(float(np.mean(ses)), 4),
                                          "passes": f"{passed}/{args.reps}"}
                rows[tag] = row
                print(f"{name} {tag}: {json.dumps(row)}", flush=True)
            result["datasets"][name] = {"images": len(X), "candidates": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
