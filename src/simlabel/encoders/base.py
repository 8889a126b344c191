"""Encoder interfaces shared by every model family.

Encoders are plain callables over *batches* so that they can be mapped over
data by any executor (a thread pool here, Ray Data across machines later):

* an :class:`ImageEncoder` turns a batch of preprocessed pixels
  ``(B, 3, H, W) float32`` into L2-normalised embeddings ``(B, d) float32``;
  its :meth:`ImageEncoder.preprocess` turns one decoded RGB ``PIL.Image`` into
  the ``(3, H, W) float32`` array the batch is stacked from, so decoding and
  preprocessing can run in worker threads while the model runs;
* a :class:`TextEncoder` turns a list of strings into ``(B, d) float32``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
from PIL import Image

from simlabel.errors import InputError, ModelError

Device = Literal["cpu", "cuda", "auto"]


PRECISIONS = ("auto", "fp32", "bf16")


#: the CPU flags that decide which kernels run (what the benchmarks print and the engine probe keys on)
CPU_FLAGS = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")

#: the flags of :data:`CPU_FLAGS` that oneDNN may use under each ``ONEDNN_MAX_CPU_ISA`` cap (its documented
#: values; a value not listed here caps nothing, as oneDNN treats it)
_ISA_CAPS = {
    "SSE41": (), "AVX": (), "AVX2": ("avx2",), "AVX2_VNNI": ("avx2", "avx_vnni"), "AVX2_VNNI_2": ("avx2", "avx_vnni"),
    "AVX512_CORE": ("avx2", "avx512f"), "AVX512_CORE_VNNI": ("avx2", "avx_vnni", "avx512f", "avx512_vnni"),
    "AVX512_CORE_BF16": ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"),
    "AVX512_CORE_FP16": ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"),
    "AVX10_1_512": ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16"),
}


def isa_cap() -> str | None:
    """The ISA oneDNN is capped at by ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``), upper-cased,
    or ``None``. OpenVINO's CPU plugin and torch run their kernels through oneDNN, so under ``AVX2`` they run as
    on an AVX2-only machine (how the test suite emulates that machine kind: ``make test-avx2``)."""
    import os

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def cpu_flags() -> str:
    """The CPU's SIMD / matrix-unit flags among :data:`CPU_FLAGS`, space-separated (read from
    ``/proc/cpuinfo``; ``""`` where it cannot be read), less those above an ``ONEDNN_MAX_CPU_ISA`` cap
    (:func:`isa_cap`): the flags the kernels may use, not merely the ones the silicon has."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration, IndexError):
        return ""
    allowed = _ISA_CAPS.get(isa_cap() or "", CPU_FLAGS)
    return " ".join(f for f in flags if f in CPU_FLAGS and f in allowed)


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively: a CUDA GPU that supports
    them, or a CPU with AVX512-BF16 or AMX (:func:`cpu_flags`; elsewhere: no)."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    flags = cpu_flags().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16` (2-3x faster head training measured on
    AVX512-BF16, at equal accuracy: ``benchmarks/RESULTS.md`` §10), else ``fp32``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a CUDA device is visible, else ``cpu``.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when
    ``cuda`` is asked for and none is present.
    """
    import torch

    if device not in ("cpu", "cuda", "auto"):
        raise InputError(f"device must be one of cpu, cuda, auto; got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("`device` cuda was asked for but torch sees no CUDA device; use `device` cpu or auto")
    return device


def onnx_session(path, threads: int | None = None, *, spin: bool = False, what: str = "ONNX model"):
    """An ONNX Runtime CPU session over ``path``: all graph optimisations, ``threads`` intra-op
    threads (default: all cores), no busy-waiting between runs unless ``spin`` (spinning threads
    take the cores the decoding threads need). A file that does not load is a ``ModelError``."""
    import os

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a damaged or half-written file, a disk error
        raise ModelError(f"cannot load the {what} {path}: {e}; delete it to re-export") from e


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (rows of zeros stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


class ImageEncoder(ABC):
    """A batch image encoder: ``encoder(pixels) -> (B, d)`` L2-normalised."""

    #: registry spec that recreates this encoder, e.g. ``"efficientnet-lite0"``
    name: str
    #: embedding width
    dim: int
    #: string that changes whenever the weights or preprocessing change (cache keys)
    version: str
    #: side of the square input the model takes
    image_size: int

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image -> ``(3, image_size, image_size) float32``."""

    @abstractmethod
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W) float32`` -> ``(B, dim) float32``, rows of unit norm."""

    def describe(self) -> dict:
        return {"model": self.name, "dim": self.dim, "version": self.version, "modality": "image"}

    def pixel_level(self) -> np.ndarray:
        """One 8-bit pixel level in this encoder's input space, per channel (R, G, B): ``1 / (255 std)`` for
        inputs normalised as ``(x / 255 - mean) / std`` (the engine gate's noise floor moves pixels by half of
        it). Read from the encoder's ``std``; an encoder without one states its own."""
        std = getattr(self, "std", None)
        if std is None:
            raise ModelError(f"{type(self).__name__} does not say how its pixels are normalised (no std)")
        return 1.0 / (255.0 * np.asarray(std, dtype=np.float64))

    def onnx_model(self):
        """The fp32 ONNX file this encoder runs (exported if need be), for other engines; ``None``: it has none."""
        return None

    def use_engine(self, engine, backend: str, precision: str, tag: str = "") -> None:
        """Run the model with ``engine`` (``pixels -> features``, :mod:`simlabel.engines`) from now on. A
        reduced precision joins :attr:`version` (``/int8-<calibration>``), so its vectors are never mixed
        with fp32 ones (vector cache, resume, an index's space)."""
        raise ModelError(f"{type(self).__name__} has no exported model to run on another engine")

    def _set_engine(self, engine, backend: str, precision: str, tag: str) -> None:
        self._engine, self.backend, self.precision = engine, backend, precision
        if precision != "fp32":
            self.version = f"{self.version}/{precision}" + (f"-{tag}" if tag else "")


class TextEncoder(ABC):
    """A batch text encoder: ``encoder(list_of_str) -> (B, d)`` L2-normalised."""

    name: str
    dim: int
    version: str

    @abstractmethod
    def __call__(self, texts: list[str]) -> np.ndarray:
        """``B`` strings -> ``(B, dim) float32``, rows of unit norm."""

    def describe(self) -> dict:
        return {"model": self.name, "dim": self.dim, "version": self.version, "modality": "text"}
