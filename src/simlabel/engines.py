"""Inference engines for an exported ONNX image model, and the agreement gate every reduced precision passes.

One ONNX file (the fp32 export of an encoder) runs on:

* ``onnx``: ONNX Runtime's CPU provider, ``fp32``, or ``int8``: the model statically quantised by ONNX Runtime
  (QDQ, per-channel int8 weights, uint8 activations) after calibration on a few hundred of the catalog's own
  images (:func:`quantize_int8`; the calibration set's ids and seed are recorded, and the quantised file is
  cached beside the fp32 export, keyed by the calibration set). Dynamic quantisation is never used for
  convnets: it measured slower than fp32.
* ``openvino``: OpenVINO's CPU plugin on the same file, ``fp32`` (``INFERENCE_PRECISION_HINT=f32``), ``bf16``
  (``INFERENCE_PRECISION_HINT=bf16``: AMX or AVX512-BF16 matrix units), or ``int8`` (the QDQ file above).

A reduced-precision engine is used only after the **agreement gate** (:func:`agreement`) on real images of the
catalog, against fp32: recall@10 of the k-NN lists within the sample (what every simlabel method consumes), the
top-1 agreement of a linear probe trained on the fp32 embeddings (catalog labels, or k-means clusters without
them), and the mean cosine of the two embeddings of each image (reported; a floor only when asked for).
Defaults: :data:`GATE`. The recall is the one estimated for the whole catalog. Its default floor follows the
data's own noise (:func:`noise_floor`): the recall@10 of fp32 against itself when every pixel moves by up to half
an 8-bit level, the rounding every photo already carries, less one standard error. A reduced precision need not
be steadier than the photos themselves (issue 22: no int8 EfficientNet-Lite0 reached a fixed 0.95, and half a
pixel level of noise alone moved fp32 to 0.960 on clothing-small and 0.924 on fashion-products). fp32 on
another runtime is no reduced precision: it is only checked to compute ONNX Runtime fp32's vectors.

**The CPU decides first** (:func:`cpu_rules_out`): without VNNI, AVX512-BF16 or AMX, int8 and bf16 run no
faster than fp32 (measured on the AVX2-only kind: int8 0.97x ONNX Runtime fp32 end to end, OpenVINO bf16
0.52x), so ``auto`` is ONNX Runtime fp32 at once, with no probe.

The CLIP and DINO image towers (:mod:`simlabel.encoders.hf`) and ``skill:`` models export to the same kind of
file, so every engine here runs them too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simlabel.encoders.base import cpu_flags
from simlabel.errors import InputError, ModelError
from simlabel.files import atomic_path

if TYPE_CHECKING:
    from simlabel.catalog import Catalog
    from simlabel.encoders.base import ImageEncoder
    from simlabel.sources import Fetcher

BACKENDS = ("auto", "onnx", "openvino", "torch")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: (backend, precision) pairs an exported model can run as
ENGINES = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
#: the agreement gate: every figure must reach its floor. ``recall_at_10``: ``"noise"`` (the floor is fp32's own
#: recall under :data:`NOISE_LEVELS` of pixel noise, :func:`noise_floor`) or a number (an absolute floor);
#: ``cosine`` gates only when given (``cosine=0.99`` was issue 16's floor)
GATE = {"recall_at_10": "noise", "probe_top1": 0.97, "sigmas": 1.0}
#: every name a gate may set; ``sigmas``: standard errors (:func:`passes`)
GATE_NAMES = ("cosine", "recall_at_10", "probe_top1", "sigmas")
#: the pixel noise of the default recall floor: uniform in +-0.5 of an 8-bit level, the photos' own rounding
NOISE_LEVELS = 0.5
#: the CPU units that let a reduced precision beat fp32: int8 dot products (VNNI), bf16 dot products, AMX tiles
FAST_UNITS = ("avx_vnni", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
#: the units each reduced precision needs to run natively (``auto`` tries it only where one is present)
PRECISION_UNITS = {"int8": ("avx_vnni", "avx512_vnni", "amx_int8"), "bf16": ("avx512_bf16", "amx_bf16")}


def parse_gate(text: str) -> dict:
    """Gate settings from ``"name=value,..."`` (``simlabel embed --gate``): floors for the figures of
    :data:`GATE_NAMES` and ``sigmas``; the names left out keep their defaults. ``recall_at_10=noise`` is the
    default floor, ``recall_at_10=0.95`` an absolute one; ``"sigmas=0"`` gates on the estimates alone."""
    gate: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in GATE_NAMES:
            raise InputError(f"`gate` takes name=value pairs with names among {', '.join(GATE_NAMES)}; got {part!r}")
        if name == "recall_at_10" and value.strip().lower() == "noise":
            gate[name] = "noise"
            continue
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"`gate` {name} must be a number; got {value.strip()!r}") from None
        if not (number >= 0 and (name == "sigmas" or number <= 1)):
            raise InputError(f"`gate` {name} must be {'>= 0' if name == 'sigmas' else 'in [0, 1]'}; got {number:g}")
        gate[name] = number
    return gate


def check_engine(backend: str, precision: str) -> None:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if backend == "onnx" and precision == "bf16":
        raise InputError("bf16 runs on `backend` openvino (ONNX Runtime's CPU provider has no bf16 kernels)")
    if backend == "torch" and precision not in ("auto", "fp32"):
        raise InputError("`backend` torch runs fp32; reduced precisions run on onnx (int8) or openvino (bf16, int8)")


def cpu_rules_out(flags: str | None = None) -> str | None:
    """Why no reduced precision can beat fp32 on this CPU, or ``None`` where one may.

    int8 needs VNNI (or AMX) to multiply faster than fp32, and bf16 needs AVX512-BF16 (or AMX); without any of
    :data:`FAST_UNITS` both are emulated or widened (measured on the 2-core AVX2-only kind: ONNX Runtime int8
    90 images/s and OpenVINO bf16 48 against ONNX Runtime fp32's 93, model only). ``flags``: space-separated,
    :func:`~simlabel.encoders.base.cpu_flags` (which honours an ``ONEDNN_MAX_CPU_ISA`` cap) by default."""
    flags = cpu_flags() if flags is None else flags
    if any(f in FAST_UNITS for f in flags.split()):
        return None
    return (f"this CPU has no VNNI, AVX512-BF16 or AMX (flags: {flags or 'none read'}): no reduced precision can "
            "beat fp32 here, so ONNX Runtime fp32 runs without a probe")


class OnnxRuntimeEngine:
    """ONNX Runtime on the CPU: ``engine(pixels) -> features``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32") -> None:
        from simlabel.encoders.base import onnx_session

        self.path, self.precision, self.backend = Path(path), precision, "onnx"
        self.session = onnx_session(self.path, threads, what=f"{precision} ONNX model")
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


class OpenVinoEngine:
    """OpenVINO's CPU plugin on an ONNX file; ``precision`` sets ``INFERENCE_PRECISION_HINT`` (``f32`` or
    ``bf16``; an int8 file runs its quantised ops whatever the hint)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise ModelError("`backend` openvino needs the openvino package (pip install 'simlabel[openvino]')") from e
        self.path, self.precision, self.backend = Path(path), precision, "openvino"
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  # one stream: the batches come one at a time, and the decoding threads need the other core time
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1)}
        try:
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses
            raise ModelError(f"OpenVINO cannot compile {self.path}: {e}") from e
        self.request = self.compiled.create_infer_request()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        return np.array(next(iter(out.values())), dtype=np.float32, copy=True)


def make_engine(backend: str, precision: str, fp32_path: str | os.PathLike, threads: int | None = None,
                int8_path: str | os.PathLike | None = None):
    """The engine for ``(backend, precision)`` over an exported model (``int8_path``: the quantised file)."""
    check_engine(backend, precision)
    path = int8_path if precision == "int8" else fp32_path
    if precision == "int8" and int8_path is None:
        raise InputError("int8 needs the quantised model (quantize_int8) of this export")
    if backend == "onnx":
        return OnnxRuntimeEngine(path, threads, precision)
    if backend == "openvino":
        return OpenVinoEngine(path, threads, precision)
    raise InputError(f"no ONNX engine for backend {backend!r}")


# -- int8 ------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """The images an int8 model was calibrated on: their ``pixels`` ``(N, 3, H, W)``, ids and seed."""

    pixels: np.ndarray
    ids: list[str]
    seed: int

    @property
    def key(self) -> str:
        return hashlib.sha256(("|".join(self.ids) + f"|{self.seed}").encode()).hexdigest()[:12]


def quantize_int8(fp32_path: str | os.PathLike, calibration: Calibration, *, batch: int = 4, keep_fp32: int = 3) -> Path:
    """Static QDQ quantisation of an ONNX model (per-channel int8 weights, uint8 activations, MinMax
    calibration on ``calibration``), cached beside the fp32 file as ``<name>.int8-<key>.onnx``.

    The first and last ``keep_fp32`` convolutions (the stem and the head, the layers most sensitive to
    quantisation) stay fp32: on EfficientNet-Lite0 that raised the gate's recall@10 from 0.894 to 0.927 and
    the cosine from 0.992 to 0.996 on clothing-small, for 15% of the int8 speed (measured; RESULTS.md §14).
    Percentile and entropy calibration measured no better than MinMax there, and took 7-9x longer. The
    calibration runs ``batch`` images at a time: the global minima and maxima do not depend on it, the memory
    does (0.87 GiB peak at 4, 2.1 GiB at 16, measured)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(fp32_path)
    out = int8_model_path(src, calibration.key)
    if out.exists():
        return out
    name = _input_name(src)
    X = np.ascontiguousarray(calibration.pixels, dtype=np.float32)
    if len(X) == 0:
        raise InputError("int8 calibration needs at least one decoded image")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: X[i:i + batch]} for i in range(0, len(X), batch)])

        def get_next(self):
            return next(self.batches, None)

    import onnx

    with atomic_path(src.with_name(src.stem + ".pre.onnx")) as pre, atomic_path(out) as tmp:
        # shape inference and graph fusions first, as ONNX Runtime's quantisation guide asks
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        keep = convs[:keep_fp32] + convs[-keep_fp32:] if keep_fp32 and len(convs) > 2 * keep_fp32 else []
        quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
    src.with_name(src.stem + ".pre.onnx").unlink(missing_ok=True)
    return out


def int8_model_path(fp32_path: str | os.PathLike, key: str) -> Path:
    """Where :func:`quantize_int8` keeps the int8 model of an export calibrated on the set ``key``."""
    src = Path(fp32_path)
    return src.with_name(f"{src.stem}.int8-{key}.onnx")


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


# -- the gate --------------------------------------------------------------------------------------


def fit_probe(reference: np.ndarray, labels: np.ndarray | None = None, *, seed: int = 0):
    """The linear probe of :func:`agreement`: logistic regression on the L2-normalised ``reference`` with
    ``labels`` (k-means clusters of the reference where there are none, or one class only). Fitted once per
    probe and applied to every candidate: the fit is most of :func:`agreement`'s time (measured 2-3 s of
    3.5 s on 768 fashion-products images)."""
    from sklearn.linear_model import LogisticRegression

    r = np.asarray(reference, dtype=np.float32)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    if labels is None or len(set(labels)) < 2:
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=min(10, len(r) // 5), n_init=3, random_state=seed).fit_predict(r)
    return LogisticRegression(max_iter=500).fit(r, labels)


def agreement(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None, *, k: int = 10,
              seed: int = 0, catalog_size: int | None = None, halvings: int = 10, probe=None) -> dict:
    r"""How far ``candidate`` embeddings agree with the fp32 ``reference`` of the same images (rows aligned).

    ``cosine``: mean cosine of each image's two embeddings; ``recall_at_10``: of each image's ``k`` nearest
    other images by the reference, the share also among its ``k`` nearest by the candidate; ``probe_top1``:
    top-1 agreement of a logistic-regression probe fitted on the reference with ``labels`` (k-means clusters of
    the reference when there are none), applied to both.

    Recall@k falls as the set grows (the neighbours get closer, so small errors reorder them more): measured
    on EfficientNet-Lite0 int8 over fashion-products, 0.962 among 96 images, 0.952 among 384, 0.931 among 1,536,
    0.908 over all 9,583: close to a line in log2 of the size (about -0.007 a doubling). With ``catalog_size`` larger than
    the sample, ``recall_at_10`` is the recall extrapolated to that size,

    .. math:: \hat r(N) = r(n) + \min(0, b)\,\log_2(N / n),

    where :math:`r(n)` is the recall within the sample of :math:`n` rows and :math:`b` the least-squares slope
    of the recalls of its first :math:`n/4`, :math:`n/2` and :math:`n` rows against :math:`\log_2` of their
    size; ``recall_at_10_sample`` is :math:`r(n)`. ``recall_at_10_se`` is the estimate's standard error by
    split halves: the spread of the same estimate from each half of ``halvings`` random halvings of the
    sample, divided by :math:`\sqrt 2`. Over 12 random samples of 768 images for each of 12 candidates x
    datasets (``benchmarks/bench_gate.py``, RESULTS.md §14) it was 0.004-0.010 where the estimates' own
    spread was 0.003-0.013. :func:`passes` takes ``GATE["sigmas"]`` of it off the estimate.

    ``probe``: the probe fitted on the reference (:func:`fit_probe`), to apply instead of fitting one here; the
    reference rows it was fitted on may be more than these (the screen applies the whole sample's probe to its
    first rows); ``False`` leaves ``probe_top1`` out.
    """
    ref = np.asarray(reference, dtype=np.float32)
    cand = np.asarray(candidate, dtype=np.float32)
    if ref.shape != cand.shape or len(ref) < k + 2:
        raise InputError(f"agreement needs two (n, d) arrays of the same shape with n > {k + 1}; got {ref.shape}, {cand.shape}")
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    cos = float((r * c).sum(axis=1).mean())
    # the two similarity matrices once: every recall below (subsets, halves) reads a block of them
    sr, sc = r @ r.T, c @ c.T
    size = catalog_size if catalog_size is not None and catalog_size > len(r) else len(r)
    sample_recall, recall = _recall_at(sr, sc, np.arange(len(r)), k, size)
    se = 0.0
    if halvings and len(r) >= 8 * (k + 2):
        rng = np.random.default_rng(seed)
        halves = []
        for _ in range(halvings):
            p = rng.permutation(len(r))
            halves += [_recall_at(sr, sc, np.sort(q), k, size)[1] for q in (p[: len(r) // 2], p[len(r) // 2:])]
        se = float(np.std(halves, ddof=1) / np.sqrt(2))
    figures = {"cosine": cos, "recall_at_10": recall, "n": int(len(r)), "recall_at_10_sample": sample_recall,
               "recall_at_10_se": se}
    if probe is not False:
        probe = fit_probe(r, labels, seed=seed) if probe is None else probe
        figures["probe_top1"] = float((probe.predict(r) == probe.predict(c)).mean())
    return figures


def _recall_at(sr: np.ndarray, sc: np.ndarray, rows: np.ndarray, k: int, size: int) -> tuple[float, float]:
    """recall@k among ``rows`` (of the similarity matrices ``sr``, ``sc``), and that recall extrapolated to a
    set of ``size`` rows (:func:`agreement`)."""
    n = len(rows)
    here = _recall_sims(sr[np.ix_(rows, rows)], sc[np.ix_(rows, rows)], k)
    if size <= n or n < 4 * (k + 2):
        return here, here
    sizes = np.array([n // 4, n // 2, n])
    recalls = np.array([_recall_sims(sr[np.ix_(rows[:m], rows[:m])], sc[np.ix_(rows[:m], rows[:m])], k)
                        for m in sizes[:2]] + [here])
    slope = min(0.0, float(np.polyfit(np.log2(sizes), recalls, 1)[0]))
    return here, float(max(0.0, here + slope * np.log2(size / n)))


def noise_floor(engine, pixels: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None, *,
                pixel_level: float | np.ndarray = 2 / 255, seed: int = 0, catalog_size: int | None = None) -> dict:
    r"""How far fp32 agrees with itself when the photos move by their own rounding: the default recall floor.

    Each pixel of ``pixels`` (preprocessed, ``(n, 3, H, W)``) moves by :math:`u\,\ell_c` with
    :math:`u \sim U(-0.5, 0.5)` (:data:`NOISE_LEVELS`) and :math:`\ell_c = 1 / (255\,\sigma_c)` one 8-bit level in
    the model's input space (``pixel_level``; :math:`\sigma_c` the channel's normalisation std). ``engine`` (the
    fp32 engine) embeds the moved pixels, and :func:`agreement` compares them with ``reference``, the same
    engine's vectors of the unmoved pixels, measured exactly as a candidate is (same sample, same extrapolation
    to ``catalog_size``, same split-half standard error). Returns ``noise_recall_at_10``,
    ``noise_recall_at_10_se`` and ``noise_cosine`` (the probe's agreement is not part of the floor: none is fitted).

    An 8-bit photo is already its scene rounded to the nearest level: an engine whose k-NN lists differ from
    fp32's no more than this rounding moves them is as faithful as the photos allow.
    """
    step = np.asarray(pixel_level, dtype=np.float32).reshape(-1, 1, 1)
    rng = np.random.default_rng(seed + 1)
    moved = []
    for a in range(0, len(pixels), 32):
        x = np.asarray(pixels[a:a + 32], dtype=np.float32)
        moved.append(engine(x + rng.uniform(-NOISE_LEVELS, NOISE_LEVELS, x.shape).astype(np.float32) * step))
    fig = agreement(reference, np.concatenate(moved), labels, seed=seed, catalog_size=catalog_size, probe=False)
    return {"noise_recall_at_10": fig["recall_at_10"], "noise_recall_at_10_se": fig["recall_at_10_se"],
            "noise_cosine": fig["cosine"]}


def recall_floor(gate: dict | None = None, noise: dict | None = None) -> float:
    """The recall@10 floor of ``gate`` (:data:`GATE` where it is silent): a number as given, or for
    ``"noise"`` fp32's own recall under pixel noise (``noise``, :func:`noise_floor`) less ``sigmas`` of its
    standard error."""
    gate = {**GATE, **(gate or {})}
    floor = gate["recall_at_10"]
    if floor != "noise":
        return float(floor)
    if not noise or "noise_recall_at_10" not in noise:
        raise ValueError("the noise floor was not measured: pass noise_floor()'s figures")
    return float(noise["noise_recall_at_10"] - float(gate.get("sigmas", 0.0)) * noise["noise_recall_at_10_se"])


def passes(figures: dict, gate: dict | None = None) -> tuple[bool, str]:
    """Whether the figures reach the gate, and the first figure that does not (for the warning).

    ``recall_at_10`` against the default ``"noise"`` floor passes when it reaches fp32's own recall under pixel
    noise (``figures["noise_recall_at_10"]``, :func:`noise_floor`) less ``gate["sigmas"]`` of that figure's
    standard error: an engine is refused only when it moves the k-NN lists clearly more than the photos' own
    rounding does. Against an absolute floor (``recall_at_10=0.95``) the recall must instead clear it by
    ``gate["sigmas"]`` of its own standard error (``recall_at_10_se``): a fixed floor says nothing of the data,
    so the estimate must be above it with about 84% confidence at the default 1 (an estimate 0.018 too high let
    bf16 through on clothing-small before; RESULTS.md §14). ``cosine`` gates only when the gate names it."""
    gate = {**GATE, **(gate or {})}
    sigmas = float(gate.get("sigmas", 0.0))
    for name in GATE_NAMES:
        if name == "sigmas" or name not in gate:
            continue
        floor, value = gate[name], figures.get(name, 0.0)
        if name == "recall_at_10" and floor == "noise":
            floor = recall_floor(gate, figures)
            if value < floor:
                return False, (f"recall_at_10 {value:.4f} < {floor:.4f} (fp32's own recall under +-{NOISE_LEVELS:g} "
                               f"pixel-level noise, {figures['noise_recall_at_10']:.4f}, less {sigmas:g} x "
                               f"{figures['noise_recall_at_10_se']:.4f}, its standard error)")
            continue
        se = figures.get(f"{name}_se", 0.0) * sigmas
        if value - se < floor:
            return False, (f"{name} {value:.4f} < {floor}" if not se else
                           f"{name} {value:.4f} - {sigmas:g} x {se / sigmas:.4f} (its standard error) < {floor}")
    return True, ""


def _knn_recall(ref: np.ndarray, cand: np.ndarray, k: int) -> float:
    """recall@k of the candidate's k-NN lists against the reference's, within the (normalised) rows."""
    return _recall_sims(ref @ ref.T, cand @ cand.T, k)


def _recall_sims(sr: np.ndarray, sc: np.ndarray, k: int) -> float:
    """recall@k from the two similarity matrices (exact; the sample is a few hundred rows)."""
    def knn(s: np.ndarray) -> np.ndarray:
        s = s.copy()
        np.fill_diagonal(s, -np.inf)
        return np.argpartition(-s, k, axis=1)[:, :k]

    a, b = knn(sr), knn(sc)
    hits = (a[:, :, None] == b[:, None, :]).any(axis=2).sum()
    return float(hits / a.size)


# -- choosing an engine ----------------------------------------------------------------------------

#: fewer decodable sample images than this: no calibration or gate is trusted, fp32 runs
MIN_SAMPLE = 48
#: images that calibrate int8 (the first of the sample); the rest are the gate's
CALIBRATION = 128
#: gate images a reduced precision is screened on first (:func:`_gated`)
SCREEN = 256
#: images on which an fp32 engine is checked against ONNX Runtime fp32, and the mean cosine it must reach
FP32_CHECK, FP32_COSINE = 32, 0.9999


def available(backend: str) -> bool:
    if backend == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False
    return True


@dataclass
class EngineChoice:
    """What :func:`choose_engine` decided, with the figures it decided by (written to ``summary.json``)."""

    backend: str
    precision: str
    reason: str
    gate: dict
    candidates: list
    calibration: dict
    cpu_flags: str
    cached: bool = False
    #: the recall floor the candidates were gated against: its rule (``noise`` or ``absolute``), its value,
    #: and for ``noise`` fp32's own figures under pixel noise (:func:`noise_floor`)
    floor: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _batched(engine, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """``engine`` over ``pixels`` in batches: one call on hundreds of images would hold all their
    activations at once (EfficientNet-Lite0 on 512 images: over 10 GB)."""
    return np.concatenate([engine(pixels[a:a + batch]) for a in range(0, len(pixels), batch)])


def _speed(engine, pixels: np.ndarray, batch: int = 32, seconds: float = 1.5) -> float:
    """Images/s of ``engine`` on ``pixels``, after a warm-up batch."""
    import time

    engine(pixels[:batch])
    n, t0 = 0, time.perf_counter()
    while True:
        for a in range(0, len(pixels), batch):
            engine(pixels[a:a + batch])
            n += len(pixels[a:a + batch])
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def choose_engine(fp32_path: str | os.PathLike, model_version: str, sample: tuple[list[str], np.ndarray, np.ndarray | None],
                  *, backend: str = "auto", precision: str = "auto", threads: int | None = None, seed: int = 0,
                  gate: dict | None = None, log=None, catalog_size: int | None = None,
                  pixel_level: float | np.ndarray = 2 / 255, decode_seconds: float = 0.0) -> tuple[object, EngineChoice]:
    """Pick the engine an exported model embeds with (see the module docstring) and build it.

    Parameters
    ----------
    fp32_path, model_version
        The fp32 ONNX export and the version string its speeds are cached under.
    sample
        ``(ids, pixels, labels)`` of catalog images, decoded and preprocessed (labels may be ``None``); the
        first :data:`CALIBRATION` (at most half) calibrate int8, the rest are the gate's, whose recall is
        extrapolated to ``catalog_size`` (:func:`agreement`).
    backend, precision
        ``auto`` tries every engine it allows and keeps the fastest that passes the gate; the speeds are
        measured once per machine and model and cached (the gate runs on each catalog). ``precision="auto"``
        on a CPU without :data:`FAST_UNITS` tries fp32 only (:func:`cpu_rules_out`), and with ``backend`` auto
        or onnx returns ONNX Runtime fp32 at once. A fixed choice that fails the gate falls back to ONNX
        Runtime fp32 with a warning naming the figure.
    gate
        Floors over :data:`GATE` (:func:`parse_gate`).
    pixel_level
        One 8-bit level in the model's input space, per channel or one number (``1 / (255 std)``;
        :meth:`~simlabel.encoders.base.ImageEncoder.pixel_level`): the scale of :func:`noise_floor`.
    decode_seconds
        What decoding ``sample`` cost the caller: with the time spent here, the probe's cost that ``auto``
        records for :func:`probe_pays`.

    Returns
    -------
    engine, EngineChoice
        The engine built, and what was decided with every candidate's figures.
    """
    import time
    import warnings

    from simlabel.errors import SimlabelWarning
    from simlabel.files import atomic_write_json

    started = time.perf_counter()
    check_engine(backend, precision)
    say = log or (lambda m: None)
    ids, pixels, labels = sample
    flags = cpu_flags()
    calib_n = min(CALIBRATION, len(ids) // 2)
    fp32 = OnnxRuntimeEngine(fp32_path, threads)
    slow_cpu = cpu_rules_out(flags) if precision == "auto" else None
    wanted = _wanted(backend, precision, flags)
    if slow_cpu and backend in ("auto", "onnx"):
        say(f"engine onnx fp32: {slow_cpu}")
        return fp32, EngineChoice("onnx", "fp32", slow_cpu, {}, [], {}, flags)
    if precision == "fp32" and backend in ("auto", "onnx") or not wanted:
        return fp32, EngineChoice("onnx", "fp32", "fp32 asked for" if precision == "fp32" else "no other engine here",
                                  {}, [], {}, flags)
    if len(ids) < MIN_SAMPLE:
        warnings.warn(f"only {len(ids)} sample images could be decoded (< {MIN_SAMPLE}): too few to calibrate and "
                      "gate a reduced precision; embedding with ONNX Runtime fp32", SimlabelWarning, stacklevel=2)
        return fp32, EngineChoice("onnx", "fp32", f"{len(ids)} sample images < {MIN_SAMPLE}", {}, [], {}, flags)
    half = calib_n
    calib = Calibration(pixels[:half], list(ids[:half]), seed)
    gate_px, gate_labels = pixels[half:], (None if labels is None else np.asarray(labels)[half:])
    ref = _batched(fp32, gate_px)
    speeds_path = _speeds_path(model_version, flags)
    speeds = _read_speeds(speeds_path)
    measuring = 0.0  # seconds spent measuring speeds, which a later probe reads from the cache instead
    cached = all(f"{b}/{p}" in speeds for b, p in [("onnx", "fp32"), *wanted])
    if "onnx/fp32" not in speeds:
        timed = time.perf_counter()
        speeds["onnx/fp32"] = _speed(fp32, gate_px)
        measuring += time.perf_counter() - timed
    int8_path = None
    candidates = []
    built = {}
    noise: dict = {}
    probe = None
    rule = "noise" if {**GATE, **(gate or {})}["recall_at_10"] == "noise" else "absolute"
    if cached:
        # the speeds are known: gate the fastest first and stop at the first that passes (the rest are slower)
        wanted = sorted(wanted, key=lambda e: -speeds[f"{e[0]}/{e[1]}"])
    for b, p in wanted:
        if cached and any(c["passes"] for c in candidates):
            candidates.append({"backend": b, "precision": p, "images_per_s": round(speeds[f"{b}/{p}"], 1),
                               "passes": False, "failed": "not gated: slower than a passing engine"})
            continue
        try:
            if p == "int8" and int8_path is None:
                int8_path = quantize_int8(fp32_path, calib)
            eng = make_engine(b, p, fp32_path, threads, int8_path)
            eng(gate_px[:2].astype(np.float32))  # a runtime that cannot run this model here says so now
        except (RuntimeError, OSError) as e:  # ModelError, OpenVINO's and ONNX Runtime's errors; not a bug's
            why = f"could not run here: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
            candidates.append({"backend": b, "precision": p, "images_per_s": 0.0, "passes": False, "failed": why})
            say(f"engine {b} {p}: {why}")
            continue
        if p == "fp32":
            figures, ok, why = _fp32_check(ref, eng, gate_px)
        else:
            if rule == "noise" and not noise:  # once, for every reduced precision: fp32 on the same images, moved
                noise = noise_floor(fp32, gate_px, ref, gate_labels, pixel_level=pixel_level, seed=seed,
                                    catalog_size=catalog_size)
                say(f"gate floor: fp32's own recall@10 under +-{NOISE_LEVELS:g} pixel-level noise "
                    f"{noise['noise_recall_at_10']:.3f} (se {noise['noise_recall_at_10_se']:.3f}): floor "
                    f"{recall_floor(gate, noise):.3f}")
            probe = fit_probe(ref, gate_labels, seed=seed) if probe is None else probe  # once, for every candidate
            figures = {**_gated(eng, ref, gate_px, gate_labels, seed, catalog_size, recall_floor(gate, noise), probe),
                       **noise}
            ok, why = passes(figures, gate)
        if f"{b}/{p}" not in speeds:
            timed = time.perf_counter()
            speeds[f"{b}/{p}"] = _speed(eng, gate_px)
            measuring += time.perf_counter() - timed
        candidates.append({"backend": b, "precision": p, "images_per_s": round(speeds[f"{b}/{p}"], 1), **figures,
                           "passes": ok, "failed": why})
        # keep only the fastest passing engine built so far: each compiled model holds its own buffers
        kept = next(iter(built), None)
        if ok and (kept is None or speeds[f"{b}/{p}"] > speeds[f"{kept[0]}/{kept[1]}"]):
            built = {(b, p): eng}
        del eng
        say(f"engine {b} {p}: {speeds[f'{b}/{p}']:.0f} img/s (model only), " + (
            f"cosine {figures['cosine']:.6f} to ONNX Runtime fp32 on {figures['n']} images" if p == "fp32" else
            f"cosine {figures['cosine']:.4f}, recall@10 {figures['recall_at_10']:.3f} (se {figures['recall_at_10_se']:.3f}), "
            f"probe {figures['probe_top1']:.3f}" + (f", screened on {figures['screened']} images" if figures.get("screened") else ""))
            + ("" if ok else f": fails ({why})"))
    if backend == "auto" and precision == "auto":
        # what this probe cost, decoding included and measuring speeds not (the next probe reads them from the
        # cache): the next catalog's probe_pays weighs it against the saving
        speeds["probe_s"] = round(decode_seconds + time.perf_counter() - started - measuring, 2)
    atomic_write_json(speeds_path, speeds)
    if not any((c["backend"], c["precision"]) == ("onnx", "fp32") for c in candidates):
        candidates.append({"backend": "onnx", "precision": "fp32", "images_per_s": round(speeds["onnx/fp32"], 1),
                           "cosine": 1.0, "recall_at_10": 1.0, "probe_top1": 1.0, "n": len(gate_px), "passes": True,
                           "failed": ""})
    calibration = {"ids": calib.ids, "seed": seed, "key": calib.key, "n": len(calib.ids)} if int8_path else {}
    passing = [c for c in candidates if c["passes"]]
    best = max(passing, key=lambda c: c["images_per_s"])
    failed = [c for c in candidates if not c["passes"] and not c["failed"].startswith("not gated")]
    if (best["backend"], best["precision"]) == ("onnx", "fp32") and failed and (backend != "auto" or precision != "auto"):
        what = "could not run" if failed[0]["failed"].startswith("could not run") else "failed the agreement gate against fp32"
        warnings.warn(f"{failed[0]['backend']} {failed[0]['precision']} {what} ({failed[0]['failed']}); embedding with "
                      "ONNX Runtime fp32", SimlabelWarning, stacklevel=2)
    chosen_fp32 = (best["backend"], best["precision"]) == ("onnx", "fp32")
    if backend == "auto" or precision == "auto":
        reason = "fastest engine that passes the gate" if not chosen_fp32 else "no faster engine passes the gate"
    else:
        reason = "asked for; passes the gate" if not chosen_fp32 else f"fallback: {failed[0]['failed']}" if failed else "asked for"
    gate_fig = {k: best[k] for k in ("cosine", "recall_at_10", "recall_at_10_se", "probe_top1", "n") if k in best}
    floor = ({"rule": rule, "recall_at_10": round(recall_floor(gate, noise), 6), **noise}
             if rule == "absolute" or noise else {})
    choice = EngineChoice(best["backend"], best["precision"], reason, gate_fig, candidates, calibration, flags, cached,
                          floor)
    engine = fp32 if chosen_fp32 else built[(best["backend"], best["precision"])]
    return engine, choice


def _fp32_check(ref: np.ndarray, engine, pixels: np.ndarray) -> tuple[dict, bool, str]:
    """fp32 on another runtime is not a reduced precision and passes no gate; it is only checked to compute
    the same vectors as ONNX Runtime fp32 (mean cosine >= :data:`FP32_COSINE` on :data:`FP32_CHECK` images)."""
    m = min(FP32_CHECK, len(pixels))
    a, b = ref[:m], _batched(engine, pixels[:m])
    cos = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())
    ok = cos >= FP32_COSINE
    return {"cosine": cos, "n": m}, ok, "" if ok else f"cosine {cos:.6f} < {FP32_COSINE} (fp32 must compute fp32's vectors)"


def _gated(engine, ref: np.ndarray, pixels: np.ndarray, labels, seed: int, catalog_size: int | None,
           floor: float, probe=None) -> dict:
    """The agreement of ``engine`` with ``ref`` on the gate's images. The first :data:`SCREEN` are gated first:
    an engine whose recall is more than three standard errors under ``floor`` (:func:`recall_floor`) there is
    refused without the rest (int8 on EfficientNet-Lite0: an estimate of 0.88 +- 0.015 at 256 images), which
    saves most of its share of the probe."""
    s = min(SCREEN, len(pixels))
    got = _batched(engine, pixels[:s])
    if s < len(pixels):
        first = agreement(ref[:s], got, None if labels is None else labels[:s], seed=seed, catalog_size=catalog_size,
                          probe=probe)
        if first["recall_at_10"] + 3 * first["recall_at_10_se"] < floor:
            return {**first, "screened": s}
        got = np.concatenate([got, _batched(engine, pixels[s:])])
    return agreement(ref, got, labels, seed=seed, catalog_size=catalog_size, probe=probe)


def _wanted(backend: str, precision: str, flags: str) -> list[tuple[str, str]]:
    """The engines ``(backend, precision)`` may choose among here: those installed, and with ``precision``
    auto, fp32 and the reduced precisions whose units this CPU has (:data:`PRECISION_UNITS`; none where
    :func:`cpu_rules_out`): int8 without VNNI, or bf16 without AVX512-BF16, is emulated and cannot win."""
    slow_cpu = cpu_rules_out(flags) if precision == "auto" else None
    have = set(flags.split())

    def allowed(p: str) -> bool:
        return precision != "auto" or p == "fp32" or (not slow_cpu and bool(have & set(PRECISION_UNITS[p])))

    return [(b, p) for b, p in ENGINES if (backend == "auto" or b == backend) and (precision == "auto" or p == precision)
            and available(b) and allowed(p)]


def _speeds_path(model_version: str, flags: str) -> Path:
    """The cache file of the engines' measured speeds (and the last probe's cost) for this model, CPU and
    runtime versions."""
    from simlabel.cache import cache_dir

    key = hashlib.sha256(f"{model_version}|{flags}|{_versions()}".encode()).hexdigest()[:16]
    return cache_dir("engines") / f"speeds-{key}.json"


def _read_speeds(path: Path) -> dict:
    import json

    try:
        speeds = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is measured again
    return speeds if isinstance(speeds, dict) else {}


#: ``auto`` probes a catalog this large at least when this machine has no measured speeds for the model yet
#: (the first probe also measures the speeds every later catalog is weighed with)
PROBE_MIN_ITEMS = 2000


def probe_pays(model_version: str, n_items: int, *, backend: str = "auto", precision: str = "auto",
               flags: str | None = None) -> tuple[bool, str]:
    r"""Whether ``auto``'s engine probe can pay for itself on a catalog of ``n_items`` images, and why not.

    With this machine's speeds for the model cached by an earlier probe (model only, images/s, :math:`v`) and
    that probe's wall time :math:`t_p`, the most the fastest engine can save is

    .. math:: n\,(1 / v_{\mathrm{fp32}} - 1 / v_{\max}),

    an upper bound (decoding shares the cores, so end to end saves less). The probe runs only when that exceeds
    :math:`t_p`. Without cached speeds it runs on catalogs of :data:`PROBE_MIN_ITEMS` images or more. Measured on
    a 2-core AVX512-BF16 machine (RESULTS.md §14): a first probe of about 50 s (speed measurements included)
    against at most 3.2 ms saved an image on fashion-products, so about 15,000 images before it pays there.
    """
    flags = cpu_flags() if flags is None else flags
    speeds = _read_speeds(_speeds_path(model_version, flags))
    known = [speeds.get(f"{b}/{p}") for b, p in [("onnx", "fp32"), *_wanted(backend, precision, flags)]]
    if "probe_s" not in speeds or not all(isinstance(v, (int, float)) and v > 0 for v in known):
        if n_items >= PROBE_MIN_ITEMS:
            return True, ""
        return False, f"{n_items:,} images < {PROBE_MIN_ITEMS:,}: too few to pay for the engine probe"
    fastest, fp32 = max(known), speeds["onnx/fp32"]
    saving = n_items * (1 / fp32 - 1 / fastest)
    if saving > speeds["probe_s"]:
        return True, ""
    return False, (f"the engine probe (last {speeds['probe_s']:.0f} s on this machine) would cost more than the fastest "
                   f"engine here ({fastest:.0f} images/s model only, ONNX Runtime fp32 {fp32:.0f}) can save on "
                   f"{n_items:,} images (at most {saving:.0f} s)")


def _versions() -> str:
    import onnxruntime

    try:
        import openvino

        ov = openvino.__version__
    except ImportError:
        ov = "-"
    return f"ort{onnxruntime.__version__}|ov{ov}"


# -- the policy of embed ----------------------------------------------------------------------------

#: catalog images decoded to calibrate int8 (the first 128) and to gate every engine (the other 768): at 384
#: gated images the recall estimate's spread was 0.008-0.017, at 768 0.003-0.013 (RESULTS.md §14)
ENGINE_SAMPLE = 896
#: what a Ray actor needs to run ONNX Runtime fp32 (a torch tower switches to it too)
ONNX_FP32 = {"backend": "onnx", "precision": "fp32", "int8_path": None, "tag": ""}


def engine_for_store(out: str | os.PathLike, cat: "Catalog", enc: "ImageEncoder", *, backend: str = "auto",
                     precision: str = "auto", max_pixels: int | None = None, overwrite: bool = False,
                     gate: dict | None = None, log=None, fetcher: "Fetcher | None" = None) -> tuple[dict, dict] | None:
    """The engine policy of ``embed``: choose and install the engine ``enc`` embeds ``cat`` into the store
    ``out`` with.

    In order: a store being resumed keeps the engine its manifest records (an int8 one re-derives its model
    from the same calibration images, or is refused); ``precision`` auto on a CPU that :func:`cpu_rules_out`
    runs ONNX Runtime fp32 at once; ``auto`` on a catalog too small to pay for the probe (:func:`probe_pays`)
    too; an explicit fp32 needs no gate and decodes nothing; otherwise :func:`choose_engine` probes on a
    seeded sample of :data:`ENGINE_SAMPLE` of the catalog's images (decoded with ``max_pixels``; URLs among
    them fetched with ``fetcher``).

    Returns
    -------
    tuple or None
        The choice (for ``summary.json``) and what a Ray actor needs to rebuild the engine (``backend``,
        ``precision``, ``int8_path``, ``tag``); ``None`` when ``enc`` has no ONNX export.
    """
    import time

    from simlabel.encoders.base import cpu_flags
    from simlabel.errors import StoreError
    from simlabel.images import DEFAULT_MAX_PIXELS, ImageError, load_image
    from simlabel.sources import FetchError, is_remote_source
    from simlabel.store import recorded_engine

    out = Path(out)
    say = log or (lambda m: None)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    fp32_path = enc.onnx_model()
    if fp32_path is None:
        return None
    old = None if overwrite else recorded_engine(out)
    slow_cpu = cpu_rules_out() if precision == "auto" and backend in ("auto", "onnx") else None
    if old is None and slow_cpu:
        # the CPU decides first: no reduced precision can win here, so no sample is decoded and nothing probed
        say(f"engine onnx fp32: {slow_cpu}")
        _run_onnx_fp32(enc, fp32_path)
        return {"backend": "onnx", "precision": "fp32", "reason": slow_cpu, "probe": False,
                "cpu_flags": cpu_flags()}, dict(ONNX_FP32)
    pays, why_not = probe_pays(enc.version, len(cat)) if old is None and backend == precision == "auto" else (True, "")
    if not pays:
        say(f"engine onnx fp32: {why_not}")
        _run_onnx_fp32(enc, fp32_path)
        return {"backend": "onnx", "precision": "fp32", "reason": why_not, "probe": False}, dict(ONNX_FP32)
    threads = getattr(enc, "threads", None)
    if old is None and precision == "fp32":
        # fp32 is not a reduced precision: no gate, so no sample to decode
        if backend in ("auto", "onnx"):
            _run_onnx_fp32(enc, fp32_path)
            return {"backend": "onnx", "precision": "fp32", "reason": "fp32 asked for"}, dict(ONNX_FP32)
        eng = make_engine(backend, "fp32", fp32_path, threads)
        enc.use_engine(eng, backend, "fp32")
        return ({"backend": backend, "precision": "fp32", "reason": "asked for (fp32: no gate)"},
                {**ONNX_FP32, "backend": backend})
    if old is not None and old.get("precision", "fp32") != "int8":
        # a resumed store keeps its engine; only int8 needs the sample (its calibration set must be the store's)
        b, pr = old.get("backend", "onnx"), old.get("precision", "fp32")
        if (b, pr) == ("onnx", "fp32"):
            _run_onnx_fp32(enc, fp32_path)
            return {"backend": "onnx", "precision": "fp32", "reason": "the store was started with it"}, dict(ONNX_FP32)
        enc.use_engine(make_engine(b, pr, fp32_path, threads), b, pr, old.get("calibration") or "")
        return ({"backend": b, "precision": pr, "reason": "the store was started with it",
                 "calibration": {"key": old.get("calibration")}},
                {**ONNX_FP32, "backend": b, "precision": pr, "tag": old.get("calibration") or ""})
    decode_started = time.perf_counter()
    paths = cat.image_paths()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(paths))[: ENGINE_SAMPLE * 2]
    ids = []
    labels = cat.table["label"].astype(str).to_numpy() if "label" in cat.table.columns else None
    keep = []
    # float16 halves the sample (896 images: 270 MB, not 540): the engines take float32 batch by batch, and
    # fp32 and the candidate see the same rounded pixels, so the agreement is unchanged
    X = np.zeros((min(ENGINE_SAMPLE, len(order)), 3, enc.image_size, enc.image_size), np.float16)
    # URLs: the sample's fetches all in flight at once (the fetcher bounds them)
    fetched = {p: fetcher.submit(paths[p]) for p in order if fetcher is not None and is_remote_source(paths[p])}
    for p in order:
        if len(ids) >= ENGINE_SAMPLE:
            break
        try:
            data = fetched[p].result() if p in fetched else None
            X[len(ids)] = load_image(paths[p], max_pixels=max_pixels,
                                     draft_size=enc.image_size, transform=enc.preprocess, data=data)
        except (ImageError, FetchError):
            continue
        ids.append(str(cat.ids[p]))
        keep.append(p)
    X = X[: len(ids)]
    y = None if labels is None else labels[keep]
    if old is not None:  # a resumed int8 store
        b = old.get("backend", "onnx")
        half = min(CALIBRATION, len(ids) // 2)
        calib = Calibration(X[:half], ids[:half], 0)
        if old.get("calibration") and calib.key != old["calibration"]:
            raise StoreError(f"{out}: was started with an int8 model calibrated on other images ({old['calibration']}); "
                             "finish it with the same catalog, or `overwrite`")
        int8 = quantize_int8(fp32_path, calib)
        enc.use_engine(make_engine(b, "int8", fp32_path, threads, int8), b, "int8", old.get("calibration") or "")
        return ({"backend": b, "precision": "int8", "reason": "the store was started with it",
                 "calibration": {"key": old.get("calibration")}},
                {"backend": b, "precision": "int8", "int8_path": str(int8), "tag": old.get("calibration") or ""})
    eng, choice = choose_engine(fp32_path, enc.version, (ids, X, y), backend=backend, precision=precision,
                                threads=threads, log=say, gate=gate, catalog_size=len(cat),
                                pixel_level=enc.pixel_level(), decode_seconds=time.perf_counter() - decode_started)
    tag = choice.calibration.get("key", "") if choice.precision == "int8" else ""
    if (choice.backend, choice.precision) != ("onnx", "fp32"):
        enc.use_engine(eng, choice.backend, choice.precision, tag)
    else:
        _run_onnx_fp32(enc, fp32_path, eng)
    int8_path = str(int8_model_path(fp32_path, tag)) if choice.precision == "int8" else None
    return choice.to_dict(), {"backend": choice.backend, "precision": choice.precision, "int8_path": int8_path, "tag": tag}


def _run_onnx_fp32(enc: "ImageEncoder", fp32_path: Path, engine=None) -> None:
    """Run ``enc`` on ONNX Runtime fp32 unless it already does (EfficientNet-Lite's own session); a torch
    tower (CLIP, DINO) exported to ONNX runs faster there, with the same fp32 vectors."""
    if getattr(enc, "backend", None) == "onnx" and getattr(enc, "precision", "fp32") == "fp32":
        return
    enc.use_engine(engine or OnnxRuntimeEngine(fp32_path, getattr(enc, "threads", None)), "onnx", "fp32")
