"""What an image's pixels say about its quality, measured once while it is decoded (issue 27's image issues).

:func:`image_quality` reads one decoded RGB image (and its size in the file's header) and returns the
:data:`QUALITY_FIELDS`, cheap enough to run beside an encoder's preprocessing on every image:

``width``, ``height``
    the header's size, in pixels (odd size, odd aspect ratio);
``dark``
    the 99th percentile of each pixel's value ``max(R, G, B)`` in 0..1: a dark photo has even its brightest pixels
    dark (CleanVision's dark score reads the same percentile). The value, not the luma: a garment on a saturated red
    background has a low luma (0.3) but is not a dark photo;
``bright``
    the 5th percentile of perceived brightness ``0.299 R + 0.587 G + 0.114 B``: a washed-out photo has even its
    darkest pixels bright;
``entropy``
    the Shannon entropy (bits, 0..8) of the 256-bin grey histogram: a blank or low-information image has little;
``blur``
    ``log10(1e-3 + var(Laplacian) / max(var(grey), 1))`` on the grey image resized to :data:`BLUR_SIDE` px on its
    longer side: a blurry photo has few edges (Pech-Pacheco et al. 2000, the "variance of the Laplacian"); the fixed
    size makes photos of any resolution comparable, and dividing by the grey variance makes it blind to contrast, so
    a dark (dimmer, not softer) photo is not called blurry;
``colour``
    the mean absolute difference between the channels (0..1): 0 for a greyscale photo.

Whether a value is an issue is decided against the catalog's own distribution, never by a constant
(:func:`simlabel.auditing.core.robust_scores`).
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

__all__ = ["BLUR_SIDE", "QUALITY_FIELDS", "QUALITY_VERSION", "image_quality", "pixel_hash"]

QUALITY_FIELDS = ("width", "height", "dark", "bright", "entropy", "blur", "colour")
#: bumped whenever a measure changes: the quality cache of ``embed`` is keyed by it, so no stale measure is reused
QUALITY_VERSION = 3
#: the longer side of the grey thumbnail the Laplacian is measured on
BLUR_SIDE = 128

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels (0..255 grey)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    return float(lap.var())


def image_quality(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """The :data:`QUALITY_FIELDS` of one image, as ``float32``.

    Parameters
    ----------
    image : PIL.Image.Image
        The decoded image (any mode; converted to RGB). It may be a draft-scale decode of the file.
    size : (width, height), optional
        The file's size from its header (default: the image's).

    Returns
    -------
    ndarray of shape (7,)

    Examples
    --------
    A black square: its brightest pixel is black, nothing varies, no colour.

    >>> from PIL import Image
    >>> q = dict(zip(QUALITY_FIELDS, image_quality(Image.new("RGB", (40, 20)))))
    >>> [round(float(q[f]), 3) for f in ("width", "height", "dark", "entropy", "blur", "colour")]
    [40.0, 20.0, 0.0, 0.0, -3.0, 0.0]
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    w, h = size if size is not None else image.size
    luma = rgb @ _LUMA
    dark = np.percentile(rgb.max(axis=2), 99)
    bright = np.percentile(luma, 5)
    hist = np.bincount(np.clip(np.rint(luma * 255), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no negative zero for a blank image
    scale = BLUR_SIDE / max(image.size)
    thumb = image.convert("L").resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
                                      Image.Resampling.BILINEAR)
    grey = np.asarray(thumb, dtype=np.float32)
    blur = np.log10(1e-3 + _laplacian_variance(grey) / max(float(grey.var()), 1.0))
    colour = float(np.abs(rgb - rgb[..., [1, 2, 0]]).mean())
    return np.array([w, h, dark, bright, entropy, blur, colour], dtype=np.float32)


def pixel_hash(image: Image.Image) -> bytes:
    """BLAKE2b-128 of the decoded RGB pixels and their size: the same photo saved twice (other metadata, another
    lossless encoding) hashes alike where its file bytes do not (issue 27's exact duplicates after decoding)."""
    rgb = image.convert("RGB")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{rgb.width}x{rgb.height}".encode())
    h.update(rgb.tobytes())
    return h.digest()
