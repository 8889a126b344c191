"""Hugging Face ``transformers`` encoders: CLIP (image + text) and DINO (image).

Every encoder is built from ``name_or_path``, which is either a Hugging Face
hub id (``openai/clip-vit-base-patch32``, ``facebook/dinov2-small``,
``facebook/dino-vits16``) or a local directory written by
``save_pretrained`` (config, weights, ``preprocessor_config.json`` and, for
CLIP text, the tokenizer files).

* :class:`CLIPImageEncoder` / :class:`CLIPTextEncoder` return the *projected*
  CLIP embeddings (``get_image_features`` / ``get_text_features``), so images
  and texts land in one space of width ``projection_dim``;
  :func:`load_clip` loads model and processors once and shares them between
  the two towers.
* :class:`DINOImageEncoder` returns the CLS token of ``last_hidden_state``
  (after the backbone's final layernorm) of a DINOv2 (``Dinov2Model``) or
  DINO v1 (``ViTModel``) checkpoint, width ``hidden_size``.

Hub downloads need network access.  When ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` is set the encoders only look in the local cache
(no network retries), and every loading failure is re-raised as a
``RuntimeError`` (or ``ValueError`` for a malformed name) that names the model
and says that a local directory can be passed instead.

``transformers`` is imported lazily, so importing this module is cheap.
Images are preprocessed with the slow PIL/numpy image processors
(``backend="pil"``): the "fast" ones need ``torchvision``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simlabel.errors import InputError, ModelError

from .base import ImageEncoder, TextEncoder, l2_normalize, resolve_device

__all__ = ["CLIPImageEncoder", "CLIPTextEncoder", "DINOImageEncoder", "load_clip"]

#: texts per forward pass inside :meth:`CLIPTextEncoder.__call__`
TEXT_BATCH_SIZE = 256

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_SNAPSHOT_RE = re.compile(r"snapshots[\\/]([0-9a-fA-F]{40})(?:[\\/]|$)")
_TRUE = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- #
# loading helpers
# --------------------------------------------------------------------------- #


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the clip:/dino: encoders need the `transformers` package (and torch); install it with "
            "`pip install transformers`"
        ) from exc
    return transformers


def _offline() -> bool:
    """True when the user asked for offline mode (read at call time, not import time)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:  # pragma: no cover
        return False


def _looks_like_path(s: str) -> bool:
    return (
        s.startswith(("/", "./", "../", "~", "."))
        or "\\" in s
        or s.count("/") > 1
        or s.endswith("/")
        or (len(s) > 1 and s[1] == ":")  # windows drive
    )


def _resolve_source(name_or_path: str | os.PathLike, kind: str) -> tuple[str, bool]:
    """Return ``(source, is_local)``; raise ``ValueError`` for an impossible name."""
    raw = os.fspath(name_or_path)
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(f"{kind} model name must be a non-empty hub id or directory path, got {name_or_path!r}")
    path = Path(raw).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"{kind} model {raw!r}: local directory has no config.json; pass a directory written by "
                f"save_pretrained (config.json, weights, preprocessor_config.json) or a Hugging Face hub id"
            )
        return str(path), True
    if path.exists():
        raise InputError(
            f"{kind} model {raw!r} is a file; pass a directory written by save_pretrained "
            f"(config.json, weights, preprocessor_config.json) or a Hugging Face hub id"
        )
    plausible_hub_id = not _looks_like_path(raw)
    if plausible_hub_id:
        try:
            from huggingface_hub.utils import validate_repo_id

            validate_repo_id(raw)
        except ImportError:  # pragma: no cover
            plausible_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", raw) is not None
        except ValueError:
            plausible_hub_id = False
    if not plausible_hub_id:
        raise InputError(
            f"{kind} model {raw!r}: no such local directory, and it is not a valid Hugging Face hub id "
            f"(like 'openai/clip-vit-base-patch32'). Pass an existing directory containing a model saved with "
            f"save_pretrained, or a hub id (hub downloads need network access)."
        )
    return raw, False


def _load(kind: str, what: str, name_or_path: str, is_local: bool, fn, *args, **kwargs):
    """Call a ``from_pretrained`` and turn loading failures into one clear error."""
    offline = _offline()
    if offline or is_local:
        kwargs.setdefault("local_files_only", True)
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_local:
            msg = (
                f"could not load the {what} of {kind} model from local directory {name_or_path!r}: {detail}. "
                f"The directory must hold what save_pretrained writes (config.json, weights, "
                f"preprocessor_config.json and, for CLIP text, the tokenizer files)."
            )
        else:
            why = (
                "offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) and it is not in the local cache"
                if offline
                else "it could not be fetched from the Hugging Face hub"
            )
            msg = (
                f"could not load the {what} of {kind} model {name_or_path!r}: {why} ({detail}). "
                f"Downloading from the Hugging Face hub needs network access; without it, pass a local "
                f"directory holding the model saved with save_pretrained instead of the hub id."
            )
        raise ModelError(msg) from exc


def _weights_version(source: str, is_local: bool, config: Any) -> str:
    """A short string that changes whenever the weights / preprocessing files change."""
    if is_local:
        return "local-" + _dir_fingerprint(Path(source))
    commit = None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        if isinstance(cached, str):
            m = _SNAPSHOT_RE.search(cached)
            if m:
                commit = m.group(1)
    except Exception:  # pragma: no cover - best effort only
        commit = None
    commit = commit or getattr(config, "_commit_hash", None)
    return f"{source}@{commit}" if commit else source


def _dir_fingerprint(directory: Path) -> str:
    """sha256 over small files' bytes and weight files' (name, size, mtime)."""
    h = hashlib.sha256()
    for p in sorted(directory.iterdir()):
        if not p.is_file():
            continue
        st = p.stat()
        h.update(p.name.encode() + b"\0")
        if p.suffix.lower() in _WEIGHT_SUFFIXES or st.st_size > 4 * 1024 * 1024:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _image_processor(kind: str, source: str, is_local: bool):
    tr = _transformers()
    major = int(tr.__version__.split(".")[0])
    # "fast" (torchvision) processors cannot be used here: ask for the PIL/numpy one.
    backend_kw = {"backend": "pil"} if major >= 5 else {"use_fast": False}
    return _load(kind, "image processor", source, is_local, tr.AutoImageProcessor.from_pretrained, source, **backend_kw)


def _tokenizer(kind: str, source: str, is_local: bool):
    tr = _transformers()
    tok = _load(kind, "tokenizer", source, is_local, tr.AutoTokenizer.from_pretrained, source)
    # transformers 5.x builds an empty tokenizer (special tokens only) when no tokenizer
    # files are present instead of failing: every text would then encode to <unk>.
    specials = set(getattr(tok, "all_special_tokens", []) or [])
    if len(tok) <= max(len(specials), 1):
        where = f"local directory {source!r}" if is_local else f"{source!r}"
        raise ModelError(
            f"could not load the tokenizer of {kind} model {where}: no tokenizer files found "
            f"(tokenizer.json or vocab.json + merges.txt); the loaded vocabulary has only {len(tok)} tokens"
        )
    return tok


def _size_side(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    h, w = get("height", None), get("width", None)
    if h and w:
        if int(h) != int(w):
            return None
        return int(h)
    se = get("shortest_edge", None)
    return int(se) if se else None


def _processor_image_size(proc: Any, fallback: int | None) -> int:
    crop = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
    for candidate in (crop, getattr(proc, "size", None)):
        side = _size_side(candidate)
        if side:
            return side
    if fallback:
        return int(fallback)
    raise InputError(f"cannot tell the input size of image processor {type(proc).__name__}")


def _square_kwargs(proc: Any, side: int) -> dict:
    """Extra call kwargs so the processor returns exactly ``side x side``."""
    if getattr(proc, "do_center_crop", False) and _size_side(getattr(proc, "crop_size", None)) == side:
        return {}
    size = getattr(proc, "size", None)
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    if size is not None and get("height", None) and get("width", None):
        return {}
    # shortest-edge resize without a crop keeps the aspect ratio: resize to a square instead
    return {"size": {"height": side, "width": side}, "do_center_crop": False}


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _pooled(out: Any):
    """``get_*_features`` returns a tensor (transformers 4.x) or a ModelOutput (5.x)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled
    if isinstance(out, (tuple, list)) and len(out) > 1:
        return out[1]
    raise TypeError(f"unexpected output type from CLIP feature function: {type(out).__name__}")


def _check_pixels(pixels: np.ndarray, name: str) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise InputError(f"{name}: expected pixels of shape (B, 3, H, W), got {pixels.shape}")
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _prepare_model(model, device: str):
    model = model.to(device)
    model.eval()
    return model


def _load_clip_parts(name_or_path: str, device: str, *, need_image: bool, need_text: bool):
    tr = _transformers()
    import torch

    source, is_local = _resolve_source(name_or_path, "CLIP")
    model = _load("CLIP", "weights", source, is_local, tr.CLIPModel.from_pretrained, source, dtype=torch.float32)
    model = _prepare_model(model, resolve_device(device))
    image_proc = _image_processor("CLIP", source, is_local) if need_image else None
    tokenizer = _tokenizer("CLIP", source, is_local) if need_text else None
    return source, is_local, model, image_proc, tokenizer


# --------------------------------------------------------------------------- #
# CLIP
# --------------------------------------------------------------------------- #


class _CLIPBase:
    def _setup(self, name_or_path, device, model, kind_need_image: bool, kind_need_text: bool):
        raw = os.fspath(name_or_path)
        self.name = "clip:" + raw
        if model is None:
            source, is_local, model, image_proc, tokenizer = _load_clip_parts(
                raw, device, need_image=kind_need_image, need_text=kind_need_text
            )
        else:
            source, is_local = _resolve_source(raw, "CLIP")
            model = _prepare_model(model, resolve_device(device))
            image_proc = tokenizer = None
        self._source, self._is_local = source, is_local
        self.model = model
        self.device = str(next(model.parameters()).device)
        self.dim = int(model.config.projection_dim)
        self.version = _weights_version(source, is_local, model.config)
        return image_proc, tokenizer


class _HFImageTower:
    """What every Hugging Face image encoder shares: the processor's preprocessing, a batched, no-grad
    forward whose features (``_features``) are L2-normalised, and the tower exported to ONNX for the other
    engines (:mod:`simlabel.engines`: OpenVINO fp32/bf16, int8) on the CPU."""

    _engine = None
    backend, precision = "torch", "fp32"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        out = self.processor(images=_to_rgb(image), return_tensors="np", **self._proc_kwargs)
        return np.asarray(out["pixel_values"][0], dtype=np.float32)

    def pixel_level(self) -> np.ndarray:
        """One 8-bit level in the processor's output space: its rescale factor (1/255) over its std."""
        rescale = float(getattr(self.processor, "rescale_factor", 1 / 255) or 1 / 255)
        std = getattr(self.processor, "image_std", None) if getattr(self.processor, "do_normalize", True) else None
        return rescale / np.asarray(std if std is not None else (1.0, 1.0, 1.0), dtype=np.float64)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        pixels = _check_pixels(pixels, self.name)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._engine is not None:
            return l2_normalize(self._engine(pixels))
        with torch.inference_mode():
            feats = self._features(torch.from_numpy(pixels).to(self.device))
        return l2_normalize(feats.float().cpu().numpy())

    def onnx_model(self) -> Path | None:
        """The image tower as ONNX (opset 17, any batch size), exported once into the cache, keyed by the
        weights' version and the torch/onnx versions; ``None`` off the CPU (CUDA runs the torch model)."""
        if not str(self.device).startswith("cpu"):
            return None
        import onnx
        import torch

        from simlabel.cache import cache_dir
        from simlabel.files import atomic_path

        key = hashlib.sha256(self.version.encode()).hexdigest()[:16]
        family = self.name.split(":", 1)[0]
        path = cache_dir("onnx") / f"{family}-{key}-{self.image_size}-torch{torch.__version__}-onnx{onnx.__version__}.onnx"
        if path.exists():
            return path
        tower = self

        class Tower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = tower.model  # registered, so the export sees its weights

            def forward(self, x):
                return tower._features(x)

        import warnings

        dummy = torch.zeros(2, 3, self.image_size, self.image_size)
        try:
            with atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(Tower().eval(), (dummy,), str(tmp), input_names=["pixels"], output_names=["features"],
                                  dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                                  dynamo=False)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the torch model still runs
            warnings.warn(f"{self.name}: cannot export the image tower to ONNX ({type(e).__name__}: {e}); "
                          "embedding with torch", stacklevel=2)
            return None
        return path

    def use_engine(self, engine, backend: str, precision: str, tag: str = "") -> None:
        self._set_engine(engine, backend, precision, tag)


class CLIPImageEncoder(_HFImageTower, _CLIPBase, ImageEncoder):
    """CLIP image tower: ``(B, 3, S, S) -> (B, projection_dim)``, L2-normalised."""

    def __init__(self, name_or_path: str, device: str = "auto", *, model=None, processor=None):
        image_proc, _ = self._setup(name_or_path, device, model, True, False)
        if processor is not None:
            image_proc = getattr(processor, "image_processor", processor)
        if image_proc is None:
            image_proc = _image_processor("CLIP", self._source, self._is_local)
        self.processor = image_proc
        self.image_size = _processor_image_size(image_proc, getattr(self.model.config.vision_config, "image_size", None))
        self._proc_kwargs = _square_kwargs(image_proc, self.image_size)

    def _features(self, x):
        return _pooled(self.model.get_image_features(pixel_values=x))


class CLIPTextEncoder(_CLIPBase, TextEncoder):
    """CLIP text tower: ``list[str] -> (B, projection_dim)``, L2-normalised."""

    def __init__(self, name_or_path: str, device: str = "auto", *, model=None, processor=None):
        _, tokenizer = self._setup(name_or_path, device, model, False, True)
        if processor is not None:
            tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer is None:
            tokenizer = _tokenizer("CLIP", self._source, self._is_local)
        self.tokenizer = tokenizer
        limits = [int(getattr(self.model.config.text_config, "max_position_embeddings", 77))]
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        self.max_length = min(limits)
        self.batch_size = TEXT_BATCH_SIZE

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError(f"{self.name}: expected a list of strings, got a single str")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{self.name}: texts[{i}] is {type(t).__name__}, expected str")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                kwargs = {"input_ids": enc["input_ids"].to(self.device)}
                if "attention_mask" in enc:
                    kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
                feats = _pooled(self.model.get_text_features(**kwargs))
                chunks.append(feats.float().cpu().numpy())
        return l2_normalize(np.concatenate(chunks, axis=0))


def load_clip(name_or_path: str, device: str = "auto") -> tuple[CLIPImageEncoder, CLIPTextEncoder]:
    """Load a CLIP checkpoint once and return its image and text encoders (sharing the model)."""
    dev = resolve_device(device)
    _, _, model, image_proc, tokenizer = _load_clip_parts(
        os.fspath(name_or_path), dev, need_image=True, need_text=True
    )
    image = CLIPImageEncoder(name_or_path, dev, model=model, processor=image_proc)
    text = CLIPTextEncoder(name_or_path, dev, model=model, processor=tokenizer)
    return image, text


# --------------------------------------------------------------------------- #
# DINO
# --------------------------------------------------------------------------- #


class DINOImageEncoder(_HFImageTower, ImageEncoder):
    """DINOv2 / DINO v1 backbone: CLS token of ``last_hidden_state``, L2-normalised."""

    def __init__(self, name_or_path: str, device: str = "auto"):
        tr = _transformers()
        import torch

        raw = os.fspath(name_or_path)
        self.name = "dino:" + raw
        source, is_local = _resolve_source(raw, "DINO")
        model = _load("DINO", "weights", source, is_local, tr.AutoModel.from_pretrained, source, dtype=torch.float32)
        if not hasattr(model.config, "hidden_size") or hasattr(model, "get_image_features"):
            raise InputError(
                f"DINO model {raw!r} loaded as {type(model).__name__}, which is not a ViT-style backbone "
                f"(expected e.g. Dinov2Model or ViTModel)"
            )
        self.model = _prepare_model(model, resolve_device(device))
        self.device = str(next(self.model.parameters()).device)
        self.processor = _image_processor("DINO", source, is_local)
        self.dim = int(model.config.hidden_size)
        self.image_size = _processor_image_size(self.processor, getattr(model.config, "image_size", None))
        self._proc_kwargs = _square_kwargs(self.processor, self.image_size)
        self.version = _weights_version(source, is_local, model.config)

    def _features(self, x):
        return self.model(pixel_values=x).last_hidden_state[:, 0]
