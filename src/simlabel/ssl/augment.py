"""SkiLL's augmentation space (paper 001, §3.2): pre-processing, a global space, a local space per product type.

For one image ``x'`` (and ``x''``, another image of the same product when there is one) a
training sample is

* ``x1, x2 = G_h o A_i(x'), G_h o A_i(x'')``: two high-resolution *global* views (eq. 1);
* ``y1 .. yc = G_l o A_i(x')``: ``c`` low-resolution views (eq. 2), DINO's "local crops".

``A_i`` is the *local augmentation space* of the sample's product type ``T_i`` (a list of
operations read from a YAML/JSON file, :class:`LocalSpace`); ``G_h``/``G_l`` are random
resized crops at two resolutions followed by the colour-agnostic set: RandomGray (p1 = 0.5),
ColorJitter (p2 = 0.8) and GaussianBlur (p3 = 0.5), the paper's probabilities (§6).

Pre-processing ("H" in the ablation SkiLL \\ H, never defined by the paper): for studio product
photos the most plausible reading is to crop the image to the product's bounding box on its
white background and pad it back to a square, so random crops land on the product rather than
on empty background. :func:`simlabel.images.crop_to_product` does it; ``preprocess="none"`` is
the ablation.

Two implementations of the colour set: Pillow per image, in the decoding threads (the CPU
path: measured faster than kornia on CPU batches, ``benchmarks/RESULTS.md`` §11), and kornia
on a device batch (:func:`kornia_colour`, used on CUDA). Every random draw of the Pillow path
comes from a ``numpy.random.Generator`` seeded by (seed, epoch, sample), so a resumed run
sees exactly the views an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import ConfigError, InputError
from simlabel.images import crop_to_product, resize_center_crop

__all__ = [
    "LOCAL_OPS",
    "LocalSpace",
    "ViewConfig",
    "colour_jitter",
    "gaussian_blur",
    "kornia_colour",
    "make_views",
    "random_resized_crop",
]

RESAMPLE = Image.Resampling.BICUBIC
WHITE = (255, 255, 255)


@dataclass
class ViewConfig:
    """How the views of one sample are made (the global space ``G`` and pre-processing ``H``).

    Defaults are SkiLL's (paper 001 §6; resolutions of Figure 5 are ``global_size=224,
    local_size=96``; the CPU defaults of :class:`simlabel.ssl.train.SSLConfig` are smaller).
    :meth:`dino` gives vanilla DINO's colour set (grey 0.2, jitter 0.8) without a local space.
    """

    global_size: int = 224
    local_size: int = 96
    local_crops: int = 6
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    #: p1: RandomGray
    p_gray: float = 0.5
    #: p2: ColorJitter
    p_jitter: float = 0.8
    #: p3: GaussianBlur (on every view; DINO uses 1.0 / 0.1 on its two global views, 0.5 on local ones)
    p_blur: float = 0.5
    #: brightness, contrast, saturation, hue strengths of ColorJitter (DINO's)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    p_flip: float = 0.5
    #: DINO solarizes its second global view with p = 0.2; SkiLL does not mention it
    p_solarize: float = 0.0
    #: "product-crop" (crop to the product on its white background) or "none" (SkiLL \ H)
    preprocess: str = "product-crop"
    #: the per-type local augmentation space; False: none (SkiLL \ L, vanilla DINO)
    use_local_space: bool = True

    def __post_init__(self) -> None:
        positive_int(self.global_size, "global_size", minimum=8)
        positive_int(self.local_size, "local_size", minimum=8)
        positive_int(self.local_crops, "local_crops", minimum=0)
        for name in ("p_gray", "p_jitter", "p_blur", "p_flip", "p_solarize"):
            in_range(getattr(self, name), name, 0, 1)
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            in_range(lo, f"{name}[0]", 0, 1, lo_open=True)
            in_range(hi, f"{name}[1]", lo, 1)
        one_of(self.preprocess, ("product-crop", "none"), "preprocess")
        self.global_scale = tuple(self.global_scale)
        self.local_scale = tuple(self.local_scale)
        self.jitter = tuple(self.jitter)
        self.blur_sigma = tuple(self.blur_sigma)

    @classmethod
    def dino(cls, **overrides: Any) -> ViewConfig:
        """Vanilla DINO's augmentations: grey 0.2, jitter 0.8, blur 0.5, solarize 0.2, no local
        space and no pre-processing."""
        base = dict(p_gray=0.2, p_jitter=0.8, p_blur=0.5, p_solarize=0.2, preprocess="none", use_local_space=False)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


# -- the colour-agnostic global set (Pillow) -----------------------------------------------------


def random_resized_crop(image: Image.Image, size: int, scale: tuple[float, float], rng: np.random.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """torchvision's RandomResizedCrop sampling (10 tries, then the central crop), bicubic."""
    w, h = image.size
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return image.resize((size, size), RESAMPLE, box=(left, top, left + cw, top + ch))
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.resize((size, size), RESAMPLE, box=(left, top, left + cw, top + ch))


def _hue_shift(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def colour_jitter(image: Image.Image, strengths: Sequence[float], rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, saturation and hue jitter in a random order (torchvision's ColorJitter)."""
    b, c, s, hue = strengths
    ops: list[Callable[[Image.Image], Image.Image]] = []
    if b:
        f = rng.uniform(max(0.0, 1 - b), 1 + b)
        ops.append(lambda im, f=f: ImageEnhance.Brightness(im).enhance(f))
    if c:
        f = rng.uniform(max(0.0, 1 - c), 1 + c)
        ops.append(lambda im, f=f: ImageEnhance.Contrast(im).enhance(f))
    if s:
        f = rng.uniform(max(0.0, 1 - s), 1 + s)
        ops.append(lambda im, f=f: ImageEnhance.Color(im).enhance(f))
    if hue:
        f = rng.uniform(-hue, hue)
        ops.append(lambda im, f=f: _hue_shift(im, f))
    for i in rng.permutation(len(ops)):
        image = ops[i](image)
    return image


def gaussian_blur(image: Image.Image, sigma: tuple[float, float], rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(*sigma))))


def global_ops(image: Image.Image, cfg: ViewConfig, rng: np.random.Generator, *, colour: bool = True) -> Image.Image:
    """Flip, then the colour-agnostic set at p2 (jitter), p1 (grey), p3 (blur), then solarize."""
    if rng.random() < cfg.p_flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Every draw happens whether or not colour ops run here, so the Pillow and kornia paths
    # consume one RNG stream identically.
    fire = rng.random(4) < (cfg.p_jitter, cfg.p_gray, cfg.p_blur, cfg.p_solarize)
    if not colour:
        return image
    if fire[0]:
        image = colour_jitter(image, cfg.jitter, rng)
    if fire[1]:
        image = image.convert("L").convert("RGB")
    if fire[2]:
        image = gaussian_blur(image, cfg.blur_sigma, rng)
    if fire[3]:
        image = ImageOps.solarize(image, threshold=128)
    return image


# -- the local space A_i -------------------------------------------------------------------------


def _pattern_crop(image: Image.Image, rng: np.random.Generator, scale: Sequence[float] = (0.3, 0.6),
                  **_: Any) -> Image.Image:
    """A square from the middle of the product (where a garment's print or weave is)."""
    w, h = image.size
    side = int(min(w, h) * rng.uniform(*scale))
    side = max(side, 8)
    cx = w / 2 + rng.uniform(-0.15, 0.15) * w
    cy = h / 2 + rng.uniform(-0.15, 0.15) * h
    left = int(np.clip(cx - side / 2, 0, w - side))
    top = int(np.clip(cy - side / 2, 0, h - side))
    return image.crop((left, top, left + side, top + side))


def _hflip(image: Image.Image, rng: np.random.Generator, **_: Any) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _vflip(image: Image.Image, rng: np.random.Generator, **_: Any) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def _rotate(image: Image.Image, rng: np.random.Generator, degrees: float = 30.0, **_: Any) -> Image.Image:
    return image.rotate(float(rng.uniform(-degrees, degrees)), resample=Image.Resampling.BILINEAR, fillcolor=WHITE)


def _rotate90(image: Image.Image, rng: np.random.Generator, **_: Any) -> Image.Image:
    k = int(rng.integers(1, 4))
    return image.rotate(90 * k, expand=True)


def _sharpen(image: Image.Image, rng: np.random.Generator, factor: Sequence[float] = (1.0, 2.0), **_: Any) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(float(rng.uniform(*factor)))


#: the local augmentation space: name -> op(image, rng, **params)
LOCAL_OPS: dict[str, Callable[..., Image.Image]] = {
    "pattern_crop": _pattern_crop,
    "hflip": _hflip,
    "vflip": _vflip,
    "rotate": _rotate,
    "rotate90": _rotate90,
    "sharpen": _sharpen,
}


@dataclass
class LocalSpace:
    """``A_i`` for each product type ``T_i``: a list of operations, each ``{op, p, ...params}``.

    A type missing from ``types`` gets ``default``. File format (YAML or JSON)::

        default:
          - {op: hflip, p: 0.5}
        types:
          Topwear:
            - {op: pattern_crop, p: 0.5, scale: [0.3, 0.6]}
            - {op: hflip, p: 0.5}
    """

    default: list[dict] = field(default_factory=lambda: [{"op": "hflip", "p": 0.5}])
    types: dict[str, list[dict]] = field(default_factory=dict)
    source: str = "built-in"

    def __post_init__(self) -> None:
        for name, ops in [("default", self.default), *((f"types.{k}", v) for k, v in self.types.items())]:
            if not isinstance(ops, list):
                raise ConfigError(f"{self.source}: {name} must be a list of operations; got {type(ops).__name__}")
            for i, op in enumerate(ops):
                if not isinstance(op, Mapping) or "op" not in op:
                    raise ConfigError(f"{self.source}: {name}[{i}] must be a mapping with an 'op' key; got {op!r}")
                if op["op"] not in LOCAL_OPS:
                    raise ConfigError(f"{self.source}: {name}[{i}]: unknown op {op['op']!r}; use one of {', '.join(LOCAL_OPS)}")
                in_range(op.get("p", 1.0), f"{self.source}: {name}[{i}].p", 0, 1)

    def ops_for(self, product_type: str | None) -> list[dict]:
        """The list ``A_i`` of the type (``default`` when the type is unknown or missing)."""
        if product_type is None:
            return self.default
        return self.types.get(str(product_type), self.default)

    def apply(self, image: Image.Image, product_type: str | None, rng: np.random.Generator) -> Image.Image:
        for op in self.ops_for(product_type):
            # one draw per op whether it fires or not: the stream does not depend on the image
            if rng.random() < op.get("p", 1.0):
                params = {k: v for k, v in op.items() if k not in ("op", "p")}
                image = LOCAL_OPS[op["op"]](image, rng, **params)
        return image

    def to_dict(self) -> dict:
        return {"default": self.default, "types": self.types, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "dict") -> LocalSpace:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a local space must be a mapping with 'default' and 'types'")
        unknown = set(data) - {"default", "types", "source"}
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; use default and types")
        return cls(default=list(data.get("default", [{"op": "hflip", "p": 0.5}])), types=dict(data.get("types", {})),
                   source=source)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> LocalSpace:
        """Read a YAML or JSON file; ``None``: the shipped default for fashion-products' sub-categories."""
        if path is None:
            text = resources.files("simlabel.ssl").joinpath("local_fashion.yaml").read_text(encoding="utf-8")
            source = "simlabel/ssl/local_fashion.yaml"
        else:
            p = Path(path)
            if p.is_dir():
                raise InputError(f"{p} is a folder; `local_config` takes a YAML or JSON file")
            try:
                text = p.read_text(encoding="utf-8")
            except OSError as e:
                raise InputError(f"cannot read the local augmentation file {p}: {e.strerror or e}") from e
            source = str(p)
        try:
            if source.endswith(".json"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # noqa: BLE001 - any parse error is the file's fault
            raise ConfigError(f"{source}: not valid YAML/JSON: {e}") from e
        return cls.from_dict(data or {}, source=source)


# -- one sample's views --------------------------------------------------------------------------


def make_views(first: Image.Image, second: Image.Image | None, product_type: str | None, cfg: ViewConfig,
               space: LocalSpace | None, rng: np.random.Generator, *, colour: bool = True,
               clean: bool = False) -> list[np.ndarray]:
    """The ``2 + local_crops`` views of one sample as ``uint8 (H, W, 3)`` arrays: two global views
    (from ``first`` and ``second``, the product's other image, or ``first`` again), then the
    low-resolution views of ``first``. ``colour=False`` leaves the colour set to :func:`kornia_colour`.
    ``clean=True`` appends the un-jittered view of ``first``: its pre-processing only, resized and
    centre-cropped to the global size, no augmentation (the distillation target's input,
    :mod:`simlabel.ssl.distill`).
    """
    if second is None:
        second = first
    if cfg.preprocess == "product-crop":
        first = crop_to_product(first)
        second = first if second is first else crop_to_product(second)
    local = space if (cfg.use_local_space and space is not None) else None
    views = []
    for k in range(2 + cfg.local_crops):
        src = second if k == 1 else first
        if local is not None:
            src = local.apply(src, product_type, rng)
        size, scale = (cfg.global_size, cfg.global_scale) if k < 2 else (cfg.local_size, cfg.local_scale)
        view = global_ops(random_resized_crop(src, size, scale, rng), cfg, rng, colour=colour)
        views.append(np.asarray(view, dtype=np.uint8))
    if clean:
        views.append(np.asarray(resize_center_crop(first.convert("RGB"), cfg.global_size), dtype=np.uint8))
    return views


def kornia_colour(batch: Any, cfg: ViewConfig, *, generator_seed: int | None = None) -> Any:
    """The colour-agnostic set on a ``(B, 3, H, W)`` float batch in [0, 1] with kornia (the GPU path)."""
    import kornia.augmentation as K
    import torch

    b, c, s, h = cfg.jitter
    kernel = max(3, (batch.shape[-1] // 10) | 1)  # DINO/BYOL: 10% of the side, odd
    aug = torch.nn.Sequential(
        K.ColorJitter(b, c, s, h, p=cfg.p_jitter),
        K.RandomGrayscale(p=cfg.p_gray),
        K.RandomGaussianBlur((kernel, kernel), cfg.blur_sigma, p=cfg.p_blur),
        *( [K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.p_solarize)] if cfg.p_solarize else [] ),
    )
    if generator_seed is not None:
        with torch.random.fork_rng(devices=[batch.device] if batch.is_cuda else []):
            torch.manual_seed(generator_seed)
            return aug(batch).clamp(0, 1)
    return aug(batch).clamp(0, 1)
