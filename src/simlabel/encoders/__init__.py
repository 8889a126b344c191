"""Encoders by name.

=================================== ===== ===== ======================================================
spec                                image text  what
=================================== ===== ===== ======================================================
``efficientnet-lite0``              yes         ImageNet EfficientNet-Lite0, 1280-d, offline (default)
``efficientnet-lite0:/path/w.pth``  yes         the same architecture with other weights
``minilm``                                yes   all-MiniLM-L6-v2, 384-d, offline (default text)
``st:NAME_OR_PATH``                       yes   any sentence-transformers model
``clip:NAME_OR_PATH``               yes   yes   Hugging Face CLIP, image and text towers in one space
``dino:NAME_OR_PATH``               yes         Hugging Face DINO / DINOv2 CLS features
``skill:MODEL_DIR``                 yes         a model trained by ``simlabel ssl train`` (paper 001)
=================================== ===== ===== ======================================================
"""

from __future__ import annotations

from simlabel.encoders.base import (
    ImageEncoder,
    TextEncoder,
    l2_normalize,
    resolve_device,
)
from simlabel.errors import InputError

DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
DEFAULT_TEXT_MODEL = "minilm"
IMAGE_FAMILIES = ("efficientnet-lite0", "clip", "dino", "skill")
TEXT_FAMILIES = ("minilm", "st", "clip")

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEXT_MODEL",
    "ImageEncoder",
    "TextEncoder",
    "get_image_encoder",
    "get_text_encoder",
    "is_image_model",
    "is_text_model",
    "l2_normalize",
    "parse_spec",
    "resolve_device",
]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"clip:openai/clip-vit-base-patch32"`` -> ``("clip", "openai/clip-vit-base-patch32")``."""
    family, sep, arg = spec.partition(":")
    family = family.strip().lower()
    if family not in set(IMAGE_FAMILIES) | set(TEXT_FAMILIES):
        raise InputError(
            f"unknown model {spec!r}: use one of efficientnet-lite0, minilm, st:NAME, clip:NAME_OR_PATH, dino:NAME_OR_PATH, skill:MODEL_DIR"
        )
    if family in ("clip", "dino", "st", "skill") and not arg:
        raise InputError(f"model {spec!r} needs a name or path after '{family}:', e.g. {family}:/path/to/model")
    return family, (arg or None)


def is_image_model(spec: str) -> bool:
    return parse_spec(spec)[0] in IMAGE_FAMILIES


def is_text_model(spec: str) -> bool:
    return parse_spec(spec)[0] in TEXT_FAMILIES


def get_image_encoder(spec: str = DEFAULT_IMAGE_MODEL, device: str = "auto", **options) -> ImageEncoder:
    """Build the image encoder a spec names.

    The specs are listed in the table of :mod:`simlabel.encoders`: ``efficientnet-lite0``
    (optionally ``:/path/weights.pth``), ``clip:NAME_OR_PATH``, ``dino:NAME_OR_PATH`` and
    ``skill:MODEL_DIR``.

    Parameters
    ----------
    spec : str, default "efficientnet-lite0"
        The model spec: a family name, with ``:NAME_OR_PATH`` where the family needs one.
    device : str, default "auto"
        ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees a device, else the CPU).
    **options
        Keyword arguments for the family's constructor: ``backend`` (``onnx``, ``torch`` or
        ``auto``), ``resize`` (``center-crop``, ``squash`` or ``pad``), ``threads`` and the
        others of EfficientNet-Lite; only ``threads`` for ``skill:`` models; none for CLIP
        and DINO.

    Returns
    -------
    ImageEncoder
        A batch encoder: ``encoder(pixels)`` maps ``(B, 3, H, W)`` float32 pixels (made one
        image at a time by ``encoder.preprocess``) to ``(B, encoder.dim)`` float32 rows of
        unit norm; ``name``, ``version`` and ``image_size`` describe it.

    Raises
    ------
    InputError
        An unknown spec, a family without its name or path, a text model, an unknown device,
        or an option value out of its domain.
    ModelError
        The model cannot be loaded or run as asked (missing or mismatched weights, ``cuda``
        without a CUDA device, a hub name that is not available offline).
    FileNotFoundError
        EfficientNet-Lite weights that are not at the path given.

    Examples
    --------
    >>> from simlabel import get_image_encoder
    >>> enc = get_image_encoder("efficientnet-lite0", "cpu")  # doctest: +SKIP
    >>> enc.dim, enc.image_size  # doctest: +SKIP
    (1280, 224)
    >>> try:
    ...     get_image_encoder("minilm")
    ... except ValueError as e:
    ...     print(e)
    'minilm' is a text model, not an image model
    """
    family, arg = parse_spec(spec)
    if family == "efficientnet-lite0":
        from simlabel.encoders.efficientnet import EfficientNetLiteEncoder

        return EfficientNetLiteEncoder("efficientnet-lite0", device, weights_path=arg, **options)
    if family == "clip":
        from simlabel.encoders.hf import CLIPImageEncoder

        return CLIPImageEncoder(arg, device)
    if family == "dino":
        from simlabel.encoders.hf import DINOImageEncoder

        return DINOImageEncoder(arg, device)
    if family == "skill":
        from simlabel.encoders.skill import SkillEncoder

        return SkillEncoder(arg, device, **{k: v for k, v in options.items() if k == "threads"})
    raise InputError(f"{spec!r} is a text model, not an image model")


def get_text_encoder(spec: str = DEFAULT_TEXT_MODEL, device: str = "auto") -> TextEncoder:
    """Build the text encoder a spec names.

    Parameters
    ----------
    spec : str, default "minilm"
        The model spec: ``minilm`` (all-MiniLM-L6-v2, 384-d, offline), ``st:NAME_OR_PATH``
        (any sentence-transformers model) or ``clip:NAME_OR_PATH`` (CLIP's text tower, in the
        space of its image tower).
    device : str, default "auto"
        ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees a device, else the CPU).

    Returns
    -------
    TextEncoder
        A batch encoder: ``encoder(texts)`` maps a list of ``B`` strings to
        ``(B, encoder.dim)`` float32 rows of unit norm; ``name`` and ``version`` describe it.

    Raises
    ------
    InputError
        An unknown spec, a family without its name or path, an image model, or an unknown
        device.
    ModelError
        The model cannot be loaded or run as asked (a missing package or model folder,
        ``cuda`` without a CUDA device, a hub name that is not available offline).

    Examples
    --------
    >>> from simlabel import get_text_encoder
    >>> enc = get_text_encoder("minilm", "cpu")  # doctest: +SKIP
    >>> enc(["red cotton dress", "blue denim jeans"]).shape  # doctest: +SKIP
    (2, 384)
    >>> try:
    ...     get_text_encoder("efficientnet-lite0")
    ... except ValueError as e:
    ...     print(e)
    'efficientnet-lite0' is an image model, not a text model
    """
    family, arg = parse_spec(spec)
    if family == "minilm":
        from simlabel.encoders.text import load_minilm

        return load_minilm(device)
    if family == "st":
        from simlabel.encoders.text import SentenceTransformerTextEncoder

        return SentenceTransformerTextEncoder(arg, device)
    if family == "clip":
        from simlabel.encoders.hf import CLIPTextEncoder

        return CLIPTextEncoder(arg, device)
    raise InputError(f"{spec!r} is an image model, not a text model")
