"""Robust image decoding and preprocessing for the embedding pipeline.

The pipeline decodes millions of product photos scraped from catalogs, so a
few of them are always broken: missing, zero bytes, HTML error pages saved as
``.jpg``, downloads cut short, decompression bombs. :func:`load_image` turns
every per-file failure into one exception type, :class:`ImageError`, whose
``reason`` is a short stable code, so a driver can ``except ImageError``,
count failures by reason and carry on; anything else that escapes is a bug in
the caller (bad arguments) or in this module, not a bad file.

Damage a lenient decoder lets through is caught too:

* JPEGs are decoded by libjpeg-turbo through ``simplejpeg`` in strict mode, which
  turns libjpeg's warnings ("Corrupt JPEG data: premature end of data segment", a
  corrupt middle section) into errors (``corrupt``; a file cut short is ``truncated``).
  Its output is pixel-identical to Pillow's, DCT-domain draft scaling included.
  CMYK JPEGs and every other format go through Pillow.
* A PNG whose compressed data ends early but cleanly decodes without complaint
  into an image black below the last row present; :func:`load_image` checks the
  decompressed length against the header and reports ``truncated``.

Memory: a :class:`PixelBudget` bounds the pixels being decoded at once across the
decoding threads, so a batch of huge photos cannot hold several hundred-megabyte
buffers together; ``transform`` runs inside the budget, so the full-size image is
gone before the next one is admitted.

:func:`resize_center_crop` and :func:`to_chw_float` then turn a decoded RGB
image into the ``(3, H, W) float32`` array the encoders stack into batches.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Final, Literal, get_args

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

try:  # strict libjpeg-turbo decoding; without it JPEGs fall back to Pillow (lenient)
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency, but a broken install should still run
    simplejpeg = None

from simlabel.errors import InputError
from simlabel.remote import redact

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_ERROR_REASONS",
    "ImageError",
    "PixelBudget",
    "Reason",
    "ResizeMode",
    "load_image",
    "resize_center_crop",
    "to_chw_float",
]

Reason = Literal["missing", "empty", "not-an-image", "truncated", "corrupt", "too-large", "unreadable"]
#: Every value :attr:`ImageError.reason` can take.
IMAGE_ERROR_REASONS: Final[tuple[str, ...]] = get_args(Reason)

ResizeMode = Literal["center-crop", "squash", "pad"]
_RESIZE_MODES: Final[tuple[str, ...]] = get_args(ResizeMode)

#: Pillow's own default for ``Image.MAX_IMAGE_PIXELS`` (about 0.25 GB of RGB
#: pixels).  Spelled out rather than read from Pillow so that another library
#: loosening the global at import time cannot silently loosen ours.
DEFAULT_MAX_PIXELS: Final[int] = 89_478_485

# Product photos are shot on white, so transparent regions are shown as white
# rather than the black a plain ``convert("RGB")`` would leave behind.
_BACKGROUND: Final[tuple[int, int, int]] = (255, 255, 255)

# Signatures of formats this Pillow build decodes.  When Pillow cannot identify
# a file that *starts* like one of these, the file is a damaged image
# ("corrupt"), not some other kind of file ("not-an-image").
_IMAGE_SIGNATURES: Final[tuple[bytes, ...]] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",  # BMP
)

# Modes that hold more than 8 bits of grey per pixel; Pillow's own convert()
# clips these at 255 instead of scaling, turning most of a 16-bit image white.
_WIDE_GREY_MODES: Final[frozenset[str]] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES: Final[frozenset[str]] = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


class ImageError(Exception):
    """A per-item decoding failure. `.reason` is a short stable code, `.path` the file.

    ``reason`` is one of :data:`IMAGE_ERROR_REASONS`:

    * ``missing`` -- no file at that path;
    * ``empty`` -- the file has zero bytes;
    * ``not-an-image`` -- Pillow does not recognise the contents as an image;
    * ``truncated`` -- the image data ends early (an interrupted download);
    * ``corrupt`` -- any other damage found while decoding;
    * ``too-large`` -- more pixels than the caller's limit (decompression bomb);
    * ``unreadable`` -- the file exists but cannot be read (permissions,
      a directory, an I/O error).

    ``str(err)`` names the path and the cause.  The exception survives
    pickling, so it can cross a process pool's boundary intact.
    """

    reason: str
    path: str
    detail: str

    def __init__(self, reason: str, path: str | os.PathLike[str], detail: str) -> None:
        if reason not in IMAGE_ERROR_REASONS:
            # A typo here would silently create a new failure bucket in reports.
            raise InputError(f"unknown ImageError reason {reason!r}; expected one of {IMAGE_ERROR_REASONS}")
        self.reason = reason
        self.path = os.fsdecode(path)
        self.detail = detail
        super().__init__(f"cannot load image {self.path!r} ({reason}): {detail}")

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # The default reduce replays ``self.args`` (the message alone) into
        # ``__init__``, which would fail when a worker process sends it back.
        return (type(self), (self.reason, self.path, self.detail))


class PixelBudget:
    """At most ``capacity`` pixels being decoded at once, across threads.

    ``reserve(n)`` blocks until ``n`` pixels (clipped to the capacity, so one huge
    image still gets through, alone) are free, and gives them back on exit.
    """

    def __init__(self, capacity: int = DEFAULT_MAX_PIXELS) -> None:
        if capacity < 1:
            raise InputError(f"pixel budget must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.free = int(capacity)
        self.peak = 0  # the most pixels ever reserved at once (for tests and benchmarks)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        n = max(1, min(int(n), self.capacity))
        with self._cond:
            while self.free < n:
                self._cond.wait()
            self.free -= n
            self.peak = max(self.peak, self.capacity - self.free)
        try:
            yield
        finally:
            with self._cond:
                self.free += n
                self._cond.notify_all()


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    budget: PixelBudget | None = None,
    transform: Callable[..., Any] | None = None,
    with_size: bool = False,
    data: bytes | None = None,
) -> Any:
    """Open, fully decode and return an RGB image.

    The image is decoded completely before returning (so damage is reported
    here, not later in a resize), turned upright according to its EXIF
    orientation and converted to 8-bit ``RGB``: transparency is composited onto
    white, 16-bit grey is scaled (not clipped) into 0..255.  The returned image
    does not reference the file, whose handle is closed before returning.

    Parameters
    ----------
    path
        the image file; with ``data``, only the name errors give (a fetched URL, redacted).
    max_pixels
        refuse images whose declared ``width * height`` exceeds
        this, before any pixel data is decoded.  Pillow's own bomb check in
        ``Image.open`` still applies whatever this says: an image over
        ``Image.MAX_IMAGE_PIXELS`` makes Pillow warn, one over twice that
        makes it refuse; a refusal (or the warning, where warnings are
        errors) is reported as ``too-large``.
    draft_size
        when set and the file is a JPEG, let libjpeg decode at a
        reduced DCT scale (1/2, 1/4 or 1/8) whose shorter side is still at
        least ``draft_size`` (or the full size, when the photo is smaller
        than that).  Much faster for large photos that will be shrunk to
        ``draft_size`` anyway; ignored for other formats.
    budget
        a :class:`PixelBudget` shared by the decoding threads: the decoded pixels of
        this image are reserved for its decode and ``transform``.
    transform
        applied to the RGB image inside the budget (e.g. an encoder's ``preprocess``);
        its result is returned instead of the image.
    with_size
        call ``transform(image, (width, height))`` with the file's size from its header (turned as the
        EXIF orientation turns the image), not the draft-decoded image's.
    data
        the image's bytes, already read (fetched from a URL by :mod:`simlabel.sources`): decoded with the
        same checks as a file.

    Returns
    -------
    PIL.Image.Image or the result of ``transform``

    Raises
    ------
    ImageError
        for anything wrong with this particular file.
    ValueError
        for invalid ``max_pixels`` or ``draft_size``.
    """
    if max_pixels < 1:
        raise InputError(f"max_pixels must be positive, got {max_pixels}")
    if draft_size is not None and draft_size < 1:
        raise InputError(f"draft_size must be positive or None, got {draft_size}")

    name = redact(os.fsdecode(path))  # a URL is never named with its credentials
    if data is not None:
        if not data:
            raise ImageError("empty", name, "no bytes (an empty body)")
        return _decode_classified(io.BytesIO(data), name, max_pixels, draft_size, budget, transform, with_size)
    _check_regular_file(name)
    try:
        # Our own handle (rather than Image.open(path)) guarantees it is closed
        # on every path out, including exceptions raised mid-decode.
        fh = open(name, "rb")
    except OSError as exc:
        raise _os_error(name, exc) from exc
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            # Checked on the open handle so a file emptied after the stat above
            # is still reported as empty, not as an unidentifiable image.
            raise ImageError("empty", name, "file is empty (0 bytes)")
        return _decode_classified(fh, name, max_pixels, draft_size, budget, transform, with_size)


def _decode_classified(fh: IO[bytes], name: str, max_pixels: int, draft_size: int | None, budget: PixelBudget | None,
                       transform: Callable[..., Any] | None, with_size: bool) -> Any:
    """:func:`_decode`, whatever goes wrong turned into the :class:`ImageError` that names it."""
    try:
        return _decode(fh, name, max_pixels, draft_size, budget, transform, with_size)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file must never kill a run
        raise _classify(exc, fh, name) from exc


def resize_center_crop(image: Image.Image, size: int, *, mode: str = "center-crop") -> Image.Image:
    """Return a ``size x size`` RGB image.

    mode 'center-crop': resize shorter side to `size` (bilinear, antialiased as
    Pillow's resize does) then crop the centre size x size; 'squash': resize
    straight to size x size; 'pad': resize longer side to size and pad to a
    square with white.

    Non-RGB input is first converted the way :func:`load_image` converts it
    (transparency onto white, 16-bit grey scaled), so that transparent pixels'
    hidden colours cannot bleed into their neighbours while resampling.
    """
    if size < 1:
        raise InputError(f"size must be positive, got {size}")
    if mode not in _RESIZE_MODES:
        raise InputError(f"mode must be one of {_RESIZE_MODES}, got {mode!r}")
    image = _to_rgb(image)
    w, h = image.size
    bilinear = Image.Resampling.BILINEAR

    if mode == "squash":
        return image.resize((size, size), bilinear)

    if mode == "pad":
        scale = size / max(w, h)
        new_w = min(size, max(1, round(w * scale)))
        new_h = min(size, max(1, round(h * scale)))
        canvas = Image.new("RGB", (size, size), _BACKGROUND)
        canvas.paste(image.resize((new_w, new_h), bilinear), ((size - new_w) // 2, (size - new_h) // 2))
        return canvas

    # center-crop.  Equivalent to resizing the whole image so its shorter side
    # is `size` and cropping the middle, but resamples only the kept region:
    # Pillow's `box` reads filter taps from outside the box, so the pixels
    # match the resize-then-crop result while a 3:1 panorama costs a third.
    scale = size / min(w, h)
    new_w = max(size, round(w * scale))
    new_h = max(size, round(h * scale))
    left = (new_w - size) // 2
    top = (new_h - size) // 2
    sx = w / new_w  # source pixels per output pixel, per axis as Pillow computes it
    sy = h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return image.resize((size, size), bilinear, box=box)


def crop_to_product(image: Image.Image, *, threshold: int = 240, margin: float = 0.04, min_fraction: float = 0.02) -> Image.Image:
    """Crop a studio photo to its product's bounding box on a near-white background, padded to a square.

    A pixel is background when all three channels are ``>= threshold``; the box holds every other
    pixel, grown by ``margin`` of its longer side and padded with white to a square so the
    product keeps its shape. An image whose non-background area is below ``min_fraction`` of the
    image (a white product, a blank photo) or that has no white background is returned as it is,
    squared the same way. SkiLL's pre-processing "H" (paper 001 §6), our reading of it:
    :mod:`simlabel.ssl.augment`.
    """
    image = _to_rgb(image)
    a = np.asarray(image)
    fg = (a < threshold).any(axis=2)
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    h, w = fg.shape
    if rows.size == 0 or fg.sum() < min_fraction * h * w:
        top, bottom, left, right = 0, h, 0, w
    else:
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        grow = int(round(margin * max(bottom - top, right - left)))
        top, left = max(0, top - grow), max(0, left - grow)
        bottom, right = min(h, bottom + grow), min(w, right + grow)
    box = image.crop((int(left), int(top), int(right), int(bottom)))
    side = max(box.size)
    if box.size == (side, side):
        return box
    canvas = Image.new("RGB", (side, side), _BACKGROUND)
    canvas.paste(box, ((side - box.size[0]) // 2, (side - box.size[1]) // 2))
    return canvas


def to_chw_float(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 image -> (3, H, W) float32, (x/255 - mean)/std, vectorised numpy.

    ``mean`` and ``std`` are per channel (R, G, B), in the 0..1 scale, as
    published with ImageNet-style models.  The result is C-contiguous so that
    batches can be stacked without another copy.
    """
    mean_arr = np.asarray(mean, dtype=np.float64)
    std_arr = np.asarray(std, dtype=np.float64)
    if mean_arr.shape != (3,) or std_arr.shape != (3,):
        raise InputError(f"mean and std need 3 values each, got {mean_arr.shape} and {std_arr.shape}")
    if np.any(std_arr == 0):
        raise InputError("std must not contain zeros")
    if image.mode != "RGB":
        image = _to_rgb(image)
    # Folding /255, -mean and /std into one multiply-add per pixel keeps this
    # to two passes over float32 memory instead of three.
    scale = (1.0 / (255.0 * std_arr)).astype(np.float32)[:, None, None]
    shift = (mean_arr / std_arr).astype(np.float32)[:, None, None]
    chw = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
    chw *= scale
    chw -= shift
    return chw


# --------------------------------------------------------------------------- #
# decoding


def _check_regular_file(name: str) -> None:
    """Report missing paths, directories and special files before opening."""
    try:
        st = os.stat(name)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ImageError("missing", name, "file does not exist") from exc
    except OSError as exc:
        raise _os_error(name, exc) from exc
    if not stat.S_ISREG(st.st_mode):
        # Opening a FIFO would block the worker forever, and a directory or
        # device is never a photo.
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ImageError("unreadable", name, kind)


def _decode(
    fh: IO[bytes],
    name: str,
    max_pixels: int,
    draft_size: int | None,
    budget: PixelBudget | None,
    transform: Callable[..., Any] | None,
    with_size: bool = False,
) -> Any:
    """Decode the open file into a fresh RGB image that no longer needs ``fh`` (then ``transform`` it)."""
    with Image.open(fh) as im:
        w, h = im.size
        if transform is not None and with_size:
            inner = transform

            def transform(rgb: Image.Image) -> Any:
                # the header's size, turned as the EXIF orientation turned the pixels
                turned = (rgb.width >= rgb.height) != (w >= h) and w != h
                return inner(rgb, (h, w) if turned else (w, h))
        if w * h > max_pixels:
            raise ImageError("too-large", name, f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
        is_jpeg = isinstance(im, JpegImagePlugin.JpegImageFile)
        scale = _draft_scale(w, h, draft_size) if is_jpeg else 1
        out_w, out_h = -(-w // scale), -(-h // scale)
        with budget.reserve(out_w * out_h) if budget is not None else contextlib.nullcontext():
            try:
                if is_jpeg and simplejpeg is not None and im.mode in ("RGB", "L"):
                    rgb = _orient(_strict_jpeg(fh, name, out_w, out_h), im)
                    return rgb if transform is None else transform(rgb)
                return _pillow_decode(im, fh, name, draft_size if is_jpeg else None, transform)
            finally:
                if transform is not None and out_w * out_h >= _TRIM_PIXELS:
                    _release_freed_memory()


#: after decoding an image this large, hand freed memory back to the OS (see _release_freed_memory)
_TRIM_PIXELS = 16_000_000


def _libc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _libc_trim()


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``).

    Each decoding thread has its own malloc arena; the buffers of a huge image, once freed,
    stay in that arena, so eight threads that each decoded one 89-megapixel photo keep
    about 2 GB resident between them although no image is alive. Trimming after each huge
    decode keeps the peak at what the pixel budget admits (benchmarks/RESULTS.md §9).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _pillow_decode(im: Image.Image, fh: IO[bytes], name: str, draft_size: int | None,
                   transform: Callable[[Image.Image], Any] | None) -> Any:
    decoded = im
    if draft_size is not None:
        decoded = _drafted(im, fh, draft_size)
    try:
        decoded.load()
        if isinstance(im, PngImagePlugin.PngImageFile):
            _check_png_complete(fh, name)
        rgb = _to_rgb(_orient(decoded, decoded))
        if transform is not None:
            return transform(rgb)  # while the file is open: no copy of a full-size image
        # closing the caller's context invalidates `im`; hand back an image of our own
        return rgb.copy() if rgb is decoded or rgb is im else rgb
    finally:
        if decoded is not im:
            decoded.close()


def _drafted(im: Image.Image, fh: IO[bytes], draft_size: int) -> Image.Image:
    """Ask libjpeg (through Pillow) for a reduced-scale decode whose shorter side stays >= ``draft_size``.

    Pillow picks the largest scale with ``size // scale >= requested`` on both axes, so
    this holds today; it is re-checked because a centre crop at ``draft_size`` of a
    too-small draft would silently upsample. A draft cannot be undone on the same object,
    so the fallback reopens the file.
    """
    wanted = min(draft_size, *im.size)  # a photo smaller than draft_size stays full size
    im.draft("RGB", (draft_size, draft_size))
    if min(im.size) >= wanted:
        return im
    fh.seek(0)
    return Image.open(fh)


def _draft_scale(w: int, h: int, draft_size: int | None) -> int:
    """Pillow's draft rule: the largest of 8, 4, 2, 1 that keeps both sides >= ``draft_size``."""
    if draft_size is None:
        return 1
    s = min(w // draft_size, h // draft_size)
    return next((c for c in (8, 4, 2) if c <= s), 1)


def _strict_jpeg(fh: IO[bytes], name: str, out_w: int, out_h: int) -> Image.Image:
    """libjpeg-turbo in strict mode: its warnings about corrupt data are errors here."""
    fh.seek(0)
    data = fh.read()
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="rgb", min_height=out_h, min_width=out_w, strict=True)
    except ValueError as exc:
        message = str(exc)
        reason = "truncated" if "premature end of jpeg file" in message.lower() else "corrupt"
        raise ImageError(reason, name, message) from exc
    return Image.fromarray(arr)


_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(rgb: Image.Image, header: Image.Image) -> Image.Image:
    """Apply ``header``'s EXIF orientation to ``rgb`` (decoded elsewhere) as ``ImageOps.exif_transpose``
    does, but with no copy when there is nothing to turn (``exif_transpose`` copies a full-size image
    even then). Broken EXIF metadata is common in scraped photos and the pixels are still good: an
    unturned photo beats losing the item."""
    try:
        method = _ORIENTATION.get(header.getexif().get(0x0112))
    except Exception:  # noqa: BLE001 - broken EXIF: the pixels are still good
        method = None
    return rgb.transpose(method) if method is not None else rgb


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(w: int, h: int, depth: int, colour: int, interlaced: bool) -> int:
    bits = depth * _PNG_CHANNELS.get(colour, 4)

    def rows(width: int, height: int) -> int:
        return 0 if width == 0 or height == 0 else height * (1 + math.ceil(width * bits / 8))

    if not interlaced:
        return rows(w, h)
    return sum(rows(-(-(w - x0) // dx), -(-(h - y0) // dy)) for x0, y0, dx, dy in _ADAM7)


def _check_png_complete(fh: IO[bytes], name: str) -> None:
    """Raise ``truncated`` when a PNG's image data decompresses to fewer rows than its header says.

    Streams the file chunk by chunk and counts the decompressed bytes a megabyte at a time:
    neither the compressed file nor the decompressed image is held.
    """
    fh.seek(8)
    inflate, got, expected = zlib.decompressobj(), 0, None
    while True:
        head = fh.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fh.read(13))
            expected = _png_raw_size(w, h, depth, colour, bool(interlace))
            fh.seek(length - 13 + 4, os.SEEK_CUR)
        elif kind == b"IDAT" and expected is not None:
            remaining = length
            while remaining and not inflate.eof and got <= expected:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
                while chunk and got <= expected:
                    got += len(inflate.decompress(chunk, 1 << 20))
                    chunk = inflate.unconsumed_tail
            fh.seek(remaining + 4, os.SEEK_CUR)
        elif kind == b"IEND":
            break
        else:
            fh.seek(length + 4, os.SEEK_CUR)
    if expected is not None and got < expected:
        raise ImageError("truncated", name, f"image data ends early: {got:,} of {expected:,} bytes of pixel rows")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with sensible values.

    May return ``im`` itself when it is already RGB.
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_rgb(im)
    if mode == "F":
        # Pillow's convention: "F" is on the same 0..255 scale as "L"
        # (L -> F -> L round-trips).  NaN is mapped to black, not to noise.
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.rint(np.clip(arr, 0.0, 255.0)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "La":
        # Pillow cannot convert premultiplied La straight to RGB(A).
        im = im.convert("LA")
        mode = "LA"
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P, CMYK, YCbCr, RGBX, LAB, HSV: Pillow's converters are right.
    return im.convert("RGB")


def _has_alpha(im: Image.Image) -> bool:
    """True when the image carries any transparency (channel, tRNS or palette alpha).

    Written out rather than using ``Image.has_transparency_data``, which
    changed from a method to a property across supported Pillow versions.
    """
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode.endswith("A")


def _wide_grey_to_rgb(im: Image.Image) -> Image.Image:
    """Scale 16-bit (and 32-bit ``I``) grey to 8 bits: 0 -> 0, 65535 -> 255.

    ``I`` is read as 16-bit data because that is what 16-bit PNG/TIFF files
    decode to in older Pillow versions; values outside 0..65535 are clipped.
    A fixed scale (rather than stretching each image's own min..max) keeps the
    same pixel value meaning the same brightness across the whole catalog.
    """
    raw = np.asarray(im)
    wide = np.clip(raw.astype(np.int64), 0, 65535)
    grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(x / 257)
    rgb = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    trns = im.info.get("transparency")
    if isinstance(trns, int):
        # A PNG tRNS entry for grey images names one fully transparent value.
        rgb.paste(_BACKGROUND, mask=Image.fromarray(((raw == trns) * 255).astype(np.uint8)))
    return rgb


# --------------------------------------------------------------------------- #
# error classification


def _os_error(name: str, exc: OSError) -> ImageError:
    """Map an error from stat/open/read of the file itself to a reason."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return ImageError("missing", name, "file does not exist")
    return ImageError("unreadable", name, exc.strerror or str(exc) or type(exc).__name__)


def _classify(exc: Exception, fh: IO[bytes], name: str) -> ImageError:
    """Map an exception raised while identifying or decoding to a reason."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow's own guard fired inside Image.open (the warning arrives here
        # only when warnings are configured as errors).
        return ImageError("too-large", name, str(exc))
    if isinstance(exc, MemoryError):
        # Under the pixel limit yet still too big to hold: treat like a bomb.
        return ImageError("too-large", name, "out of memory while decoding")
    if isinstance(exc, UnidentifiedImageError):
        if _starts_like_image(fh):
            return ImageError("corrupt", name, "has an image signature but its header cannot be parsed")
        return ImageError("not-an-image", name, "not a recognised image format")
    if isinstance(exc, OSError) and exc.errno is not None:
        # Pillow's decoder errors carry no errno; one with an errno came from
        # the operating system reading the file (EIO, ESTALE on NFS, ...).
        return ImageError("unreadable", name, exc.strerror or str(exc))
    message = str(exc) or type(exc).__name__
    if isinstance(exc, (OSError, EOFError)) and ("truncated" in message.lower() or isinstance(exc, EOFError)):
        return ImageError("truncated", name, message)
    # ValueError, SyntaxError, struct.error, decoder errors, ...: Pillow's
    # plugins use many exception types for malformed data.
    return ImageError("corrupt", name, f"{type(exc).__name__}: {message}")


def _starts_like_image(fh: IO[bytes]) -> bool:
    """True when the file begins with the signature of a format Pillow reads."""
    try:
        fh.seek(0)
        head = fh.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head.startswith(_IMAGE_SIGNATURES)
