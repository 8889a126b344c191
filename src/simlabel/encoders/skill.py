"""A trained SkiLL / DINO model folder (``simlabel ssl train``) as an image encoder: ``skill:DIR``.

The folder's ``config.json`` says how to feed it (``encoder``: image size, mean/std,
pre-processing) and ``backbone.onnx`` is the exported backbone, L2-normalised, run with ONNX
Runtime on the CPU (no training code is needed to embed). The pre-processing the model trained
with is applied here too: with ``product-crop`` each image is first cropped to its product on
the white background (:func:`simlabel.images.crop_to_product`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from simlabel.encoders.base import ImageEncoder, l2_normalize, onnx_session
from simlabel.errors import InputError, ModelError
from simlabel.images import crop_to_product, resize_center_crop, to_chw_float

FORMAT = "simlabel.skill"


class SkillEncoder(ImageEncoder):
    """The exported backbone of a SkiLL model folder."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto", *, threads: int | None = None) -> None:
        self.dir = Path(model_dir)
        if not self.dir.is_dir():
            raise InputError(f"skill:{model_dir}: no such model folder (made by `simlabel ssl train --out DIR`)")
        cfg_path, onnx_path = self.dir / "config.json", self.dir / "backbone.onnx"
        for p in (cfg_path, onnx_path):
            if not p.is_file():
                partial = self.dir.with_name(self.dir.name + ".partial")
                hint = f"; training is unfinished: resume it with `simlabel ssl train --resume` (found {partial})" if partial.exists() else ""
                raise ModelError(f"skill:{model_dir}: missing {p.name}, not a complete SkiLL model folder{hint}")
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{cfg_path}: unreadable SkiLL config: {e}") from e
        if meta.get("format") != FORMAT or "encoder" not in meta:
            raise ModelError(f"{cfg_path}: not a SkiLL model config (format {meta.get('format')!r})")
        enc = meta["encoder"]
        self.dim = int(enc["dim"])
        self.image_size = int(enc["image_size"])
        self.mean, self.std = tuple(enc["mean"]), tuple(enc["std"])
        self.product_crop = enc.get("preprocess") == "product-crop"
        self.name = f"skill:{self.dir.resolve()}"
        digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
        self.version = f"skill/{digest}/{enc.get('preprocess')}/{self.image_size}"
        self.device = "cpu"  # ONNX Runtime's CPU provider; a CUDA request still embeds correctly, on the CPU
        self.threads = threads or os.cpu_count() or 1
        self._onnx_path = onnx_path
        self._session = onnx_session(onnx_path, self.threads, what="exported SkiLL backbone")
        self._out = self._session.get_outputs()[0].name
        self._engine, self.backend, self.precision = None, "onnx", "fp32"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if self.product_crop:
            image = crop_to_product(image)
        return to_chw_float(resize_center_crop(image, self.image_size), self.mean, self.std)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels must be (B, 3, H, W); got {pixels.shape}")
        if self._engine is not None:
            return l2_normalize(self._engine(pixels))
        return l2_normalize(self._session.run([self._out], {"pixels": pixels})[0])

    def describe(self) -> dict:
        d = super().describe()
        d.update(backend=self.backend, device=self.device, preprocess="product-crop" if self.product_crop else "none",
                 precision=self.precision)
        return d

    def onnx_model(self) -> Path:
        return self._onnx_path

    def use_engine(self, engine, backend: str, precision: str, tag: str = "") -> None:
        self._set_engine(engine, backend, precision, tag)
