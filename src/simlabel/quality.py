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

Beside the measures, :func:`pixel_signature` records what the duplicate types compare: :func:`pixel_hash`, a digest
of the decoded pixels (equal only for the same photo), followed by :func:`perceptual_hash`, a DCT hash of a small grey
thumbnail (Zauner 2010, "pHash") that a re-encoded or resized copy keeps within a few bits.

Whether a value is an issue is decided against the catalog's own distribution, never by a constant
(:func:`simlabel.auditing.core.robust_scores`).
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

__all__ = ["BLUR_SIDE", "PHASH_BITS", "QUALITY_FIELDS", "QUALITY_VERSION", "hamming", "image_quality",
           "perceptual_hash", "pixel_hash", "pixel_signature", "split_signature"]

QUALITY_FIELDS = ("width", "height", "dark", "bright", "entropy", "blur", "colour")
#: bumped whenever a measure changes: the quality cache of ``embed`` is keyed by it, so no stale measure is reused
QUALITY_VERSION = 4
#: the bits of :func:`perceptual_hash`: the 16 x 16 lowest DCT frequencies of a 64 x 64 grey thumbnail, the constant
#: term left out
PHASH_BITS = 255
_PHASH_SIDE = 16
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


def perceptual_hash(image: Image.Image) -> bytes:
    """A DCT perceptual hash (32 bytes, :data:`PHASH_BITS` bits used): the image in grey at 64 x 64, its 2-D DCT, and
    for each of the 16 x 16 lowest frequencies but the constant one, whether it exceeds their median (Zauner 2010).

    A copy re-encoded, resized or slightly recoloured keeps its low frequencies, so its hash stays within a few bits
    of the original's; two different product photos differ in tens of bits even when their embeddings are close.

    Examples
    --------
    >>> from PIL import Image, ImageDraw
    >>> im = Image.new("RGB", (120, 160), "white")
    >>> ImageDraw.Draw(im).ellipse((20, 30, 100, 140), fill="navy")
    >>> smaller = im.resize((96, 128))
    >>> other = im.transpose(Image.Transpose.ROTATE_90).resize((120, 160))
    >>> hamming(perceptual_hash(im), perceptual_hash(smaller)) <= 4, hamming(perceptual_hash(im), perceptual_hash(other)) > 20
    (True, True)
    """
    from scipy.fft import dctn

    side = 4 * _PHASH_SIDE
    grey = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)
    low = dctn(grey, norm="ortho")[:_PHASH_SIDE, :_PHASH_SIDE].ravel()[1:]
    bits = np.append(low > np.median(low), False)
    return np.packbits(bits).tobytes()


def hamming(a: bytes, b: bytes) -> int:
    """The number of bits in which two hashes of one length differ."""
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def pixel_signature(image: Image.Image) -> bytes:
    """What the duplicate types compare, as ``embed`` records it (the store's ``pixel_hash`` column, in hex): the
    :func:`pixel_hash` digest (16 bytes) followed by the :func:`perceptual_hash` (32 bytes)."""
    return pixel_hash(image) + perceptual_hash(image)


def split_signature(hex_signatures) -> tuple[np.ndarray, np.ndarray]:
    """The stored signatures (hex, as :func:`pixel_signature`) as ``(digest hex (n,), perceptual hash (n, 32) uint8)``;
    a signature without a perceptual hash (empty, or written before it was recorded) gives zero bytes there."""
    sig = [h if isinstance(h, str) else "" for h in hex_signatures]
    digest = np.array([h[:32] for h in sig], dtype=object)
    packed = np.zeros((len(sig), 32), dtype=np.uint8)
    for i, h in enumerate(sig):
        if len(h) == 96:
            packed[i] = np.frombuffer(bytes.fromhex(h[32:]), np.uint8)
    return digest, packed
