"""Tests for simlabel.images: every failure reason, every colour mode, EXIF,
resizing, normalisation and JPEG draft decoding, on files planted in tmp_path."""

from __future__ import annotations

import errno
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, JpegImagePlugin

from simlabel import images
from simlabel.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_ERROR_REASONS,
    ImageError,
    load_image,
    resize_center_crop,
    to_chw_float,
)

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- #
# helpers


def _photo(w: int, h: int) -> Image.Image:
    """A smooth but non-constant RGB image, so JPEG has real entropy to code."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x + y) * 7) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _plant(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs: object) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def _pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, 3)]


def _reason(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageError, match="cannot load image") as info:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.reason in IMAGE_ERROR_REASONS
    return err.reason


# --------------------------------------------------------------------------- #
# failure reasons


def test_missing(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.jpg") == "missing"
    assert _reason(tmp_path / "nodir" / "nope.jpg") == "missing"


def test_empty(tmp_path: Path) -> None:
    assert _reason(_plant(tmp_path, "empty.jpg", b"")) == "empty"


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    html = b"<html><body>404 Not Found</body></html>\n"
    assert _reason(_plant(tmp_path, "page.jpg", html)) == "not-an-image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_file_cut_in_half_is_truncated(tmp_path: Path, fmt: str) -> None:
    data = _encode(_photo(160, 120), fmt)
    path = _plant(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    assert _reason(path) == "truncated"


def test_corrupt_bytes_in_jpeg_header(tmp_path: Path) -> None:
    data = bytearray(_encode(_photo(96, 64), "JPEG", quality=90))
    dqt = data.index(b"\xff\xdb")  # first quantisation table, mid-header
    data[dqt : dqt + 8] = b"\xff" * 8
    assert _reason(_plant(tmp_path, "bad.jpg", bytes(data))) == "corrupt"


def test_unparseable_header_with_image_signature_is_corrupt(tmp_path: Path) -> None:
    png = _encode(_photo(8, 8), "PNG")
    garbage = png[:8] + b"\x00" * 40  # PNG magic, then no valid IHDR
    assert _reason(_plant(tmp_path, "bad.png", garbage)) == "corrupt"


def test_too_large(tmp_path: Path) -> None:
    path = _save(tmp_path, "big.png", _photo(20, 10))
    assert _reason(path, max_pixels=199) == "too-large"
    assert load_image(path, max_pixels=200).size == (20, 10)  # the limit itself is allowed
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # the global was left alone


def test_pillow_bomb_error_is_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's own guard inside Image.open fires before ours can.
    path = _save(tmp_path, "big.png", _photo(20, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    assert _reason(path, max_pixels=10_000) == "too-large"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    assert _reason(tmp_path / "dir.jpg") == "unreadable"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_unreadable(tmp_path: Path) -> None:
    path = _save(tmp_path, "locked.png", _photo(4, 4))
    path.chmod(0)
    try:
        assert _reason(path) == "unreadable"
    finally:
        path.chmod(0o644)


def test_open_permission_error_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs even as root, where chmod 0 does not stop reads.
    path = _save(tmp_path, "ok.png", _photo(4, 4))

    def denied(*args: object, **kwargs: object) -> io.BufferedReader:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(images, "open", denied, raising=False)
    assert _reason(path) == "unreadable"


def test_io_error_while_decoding_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, "ok.png", _photo(4, 4))

    def failing_open(*args: object, **kwargs: object) -> Image.Image:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Image, "open", failing_open)
    assert _reason(path) == "unreadable"


def test_image_error_pickles_and_validates_reason(tmp_path: Path) -> None:
    err = ImageError("truncated", tmp_path / "x.jpg", "image file is truncated")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.path, str(back)) == (err.reason, err.path, str(err))
    with pytest.raises(ValueError, match="unknown ImageError reason"):
        ImageError("bogus", "x.jpg", "")


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    path = _save(tmp_path, "ok.png", _photo(4, 4))
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        load_image(path, max_pixels=0)
    with pytest.raises(ValueError, match="draft_size must be positive"):
        load_image(path, draft_size=0)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
def test_no_file_descriptor_leaks(tmp_path: Path) -> None:
    good = _save(tmp_path, "good.jpg", _photo(64, 48))
    jpeg = good.read_bytes()
    bad = [
        _plant(tmp_path, "cut.jpg", jpeg[: len(jpeg) // 2]),
        _plant(tmp_path, "text.jpg", b"hello"),
        _plant(tmp_path, "empty.jpg", b""),
    ]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(good)
        load_image(good, draft_size=16)
        for path in bad:
            with pytest.raises(ImageError, match="cannot load image"):
                load_image(path)
        with pytest.raises(ImageError, match="too-large"):
            load_image(good, max_pixels=10)
    assert len(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- #
# colour modes


def _load_saved(tmp_path: Path, image: Image.Image, name: str, **kwargs: object) -> Image.Image:
    out = load_image(_save(tmp_path, name, image, **kwargs))
    assert out.mode == "RGB"
    assert out.size == image.size
    return out


@pytest.mark.parametrize(
    ("mode", "name"),
    [("I;16", "g16.png"), ("I;16B", "g16b.tiff"), ("I", "g32.tiff")],
)
def test_wide_grey_scaled_not_clipped(tmp_path: Path, mode: str, name: str) -> None:
    values = [0, 1000, 32768, 65535]
    if mode == "I":
        image = Image.fromarray(np.array([values], dtype=np.int32))
    else:
        image = Image.frombytes(mode, (4, 1), np.array(values, dtype=">u2" if mode.endswith("B") else "<u2").tobytes())
    out = _load_saved(tmp_path, image, name)
    assert [p[0] for p in _pixels(out)] == [0, 4, 128, 255]
    assert all(p[0] == p[1] == p[2] for p in _pixels(out))


def test_wide_grey_with_trns_is_white(tmp_path: Path) -> None:
    image = Image.frombytes("I;16", (2, 1), np.array([1000, 20000], dtype="<u2").tobytes())
    out = _load_saved(tmp_path, image, "g16t.png", transparency=20000)
    assert _pixels(out) == [(4, 4, 4), (255, 255, 255)]


def test_float_mode(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0.0, 127.6, 255.0, 300.0, np.nan]], dtype=np.float32))
    out = _load_saved(tmp_path, image, "f.tiff")
    assert [p[0] for p in _pixels(out)] == [0, 128, 255, 255, 0]


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red: background shows
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black: mid grey
    out = _load_saved(tmp_path, image, "rgba.png")
    px = _pixels(out)
    assert px[0] == (255, 255, 255)
    assert px[1] == (255, 0, 0)
    assert all(abs(v - 127) <= 1 for v in px[2])


def test_la_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (0, 255))
    assert _pixels(_load_saved(tmp_path, image, "la.png")) == [(255, 255, 255), (0, 0, 0)]


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    assert _pixels(_load_saved(tmp_path, image, "p.png")) == [(0, 0, 0), (255, 0, 0)]
    # index 0 (black) transparent -> background white
    assert _pixels(_load_saved(tmp_path, image, "pt.png", transparency=0)) == [(255, 255, 255), (255, 0, 0)]
    assert _pixels(_load_saved(tmp_path, image, "pt.gif", transparency=0)) == [(255, 255, 255), (255, 0, 0)]


def test_palette_with_alpha_palette() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0, 0, 255] + [0] * (254 * 4), rawmode="RGBA")
    image.putpixel((1, 0), 1)
    # A palette entry with alpha 0 (index 0 here) is transparent, so white.
    assert _pixels(resize_center_crop(image, 2, mode="squash").crop((0, 0, 2, 1))) == [(255, 255, 255), (255, 0, 0)]


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tiff"])
def test_cmyk(tmp_path: Path, name: str) -> None:
    image = Image.new("CMYK", (2, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 255))
    px = _pixels(_load_saved(tmp_path, image, name, **({"quality": 100} if name.endswith("jpg") else {})))
    assert all(v >= 250 for v in px[0])
    assert all(v <= 5 for v in px[1])


def test_bilevel_grey_and_ycbcr(tmp_path: Path) -> None:
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert _pixels(_load_saved(tmp_path, bilevel, "b.png")) == [(0, 0, 0), (255, 255, 255)]
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert _pixels(_load_saved(tmp_path, grey, "l.png")) == [(0, 0, 0), (77, 77, 77), (255, 255, 255)]
    ycc = Image.new("YCbCr", (1, 1), (255, 128, 128))  # full luma, no chroma: white
    assert all(v >= 253 for v in _pixels(_load_saved(tmp_path, ycc, "ycc.tiff"))[0])


def test_rgb_roundtrip_and_result_outlives_file(tmp_path: Path) -> None:
    image = _photo(10, 6)
    path = _save(tmp_path, "rgb.png", image)
    out = load_image(path)
    path.unlink()  # the returned image must not depend on the file
    assert np.array_equal(np.asarray(out), np.asarray(image))


# --------------------------------------------------------------------------- #
# EXIF orientation


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, "red", "blue"), (8, "blue", "red")])
def test_exif_orientation(tmp_path: Path, orientation: int, top: str, bottom: str) -> None:
    # 40x20 landscape: left half red, right half blue.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(_save(tmp_path, "rot.jpg", image, exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    # 6 = rotate 90 deg clockwise to view (left edge goes to the top); 8 = anticlockwise.
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for (x, y), name in (((10, 5), top), ((10, 34), bottom)):
        got = np.array(out.getpixel((x, y)), dtype=int)
        assert np.abs(got - colours[name]).max() < 40, (orientation, name, got)


# --------------------------------------------------------------------------- #
# resize_center_crop


@pytest.mark.parametrize("w,h", [(300, 100), (100, 300), (77, 41)])
@pytest.mark.parametrize("mode", ["center-crop", "squash", "pad"])
def test_resize_output_sizes(w: int, h: int, mode: str) -> None:
    out = resize_center_crop(_photo(w, h), 32, mode=mode)
    assert out.size == (32, 32)
    assert out.mode == "RGB"


def _three_bands(w: int, h: int, horizontal: bool) -> Image.Image:
    """Red quarter | green half | blue quarter along the long side."""
    image = Image.new("RGB", (w, h), (0, 255, 0))
    if horizontal:
        image.paste((255, 0, 0), (0, 0, w // 4, h))
        image.paste((0, 0, 255), (3 * w // 4, 0, w, h))
    else:
        image.paste((255, 0, 0), (0, 0, w, h // 4))
        image.paste((0, 0, 255), (0, 3 * h // 4, w, h))
    return image


@pytest.mark.parametrize("horizontal", [True, False])
def test_center_crop_keeps_the_centre(horizontal: bool) -> None:
    size = (300, 100) if horizontal else (100, 300)
    out = np.asarray(resize_center_crop(_three_bands(*size, horizontal), 50))
    # 300x100 -> 150x50, crop x 50..100 of a green band at 37..112: only green survives.
    assert (out == (0, 255, 0)).all()


def test_pad_centres_on_white() -> None:
    out = np.asarray(resize_center_crop(Image.new("RGB", (300, 100), (0, 0, 0)), 60, mode="pad"))
    assert (out[:20] == 255).all() and (out[40:] == 255).all()  # white bands above and below
    assert (out[20:40] == 0).all()  # the 60x20 content in the middle


def test_squash_keeps_everything() -> None:
    out = np.asarray(resize_center_crop(_three_bands(300, 100, True), 30, mode="squash"))
    assert tuple(out[15, 2]) == (255, 0, 0) and tuple(out[15, 27]) == (0, 0, 255)


def test_resize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        resize_center_crop(_photo(10, 10), 8, mode="stretch")
    with pytest.raises(ValueError, match="size must be positive"):
        resize_center_crop(_photo(10, 10), 0)


def test_resize_flattens_transparency_on_white() -> None:
    image = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    assert (np.asarray(resize_center_crop(image, 8)) == 255).all()


_MODES = ["RGB", "L", "RGBA", "LA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr"]


@settings(max_examples=80, deadline=None)
@given(
    w=st.integers(1, 400),
    h=st.integers(1, 400),
    size=st.integers(1, 64),
    resize_mode=st.sampled_from(["center-crop", "squash", "pad"]),
    image_mode=st.sampled_from(_MODES),
)
def test_resize_always_square_rgb(w: int, h: int, size: int, resize_mode: str, image_mode: str) -> None:
    out = resize_center_crop(Image.new(image_mode, (w, h)), size, mode=resize_mode)
    assert out.size == (size, size)
    assert out.mode == "RGB"


@settings(max_examples=40, deadline=None)
@given(w=st.integers(8, 300), h=st.integers(8, 300), size=st.integers(4, 64), seed=st.integers(0, 2**32 - 1))
def test_center_crop_matches_resize_then_crop(w: int, h: int, size: int, seed: int) -> None:
    # The implementation resamples only the kept box; it must equal the
    # textbook "resize shorter side, then crop the centre".
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    naive = image.resize((new_w, new_h), Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))
    got = resize_center_crop(image, size)
    diff = np.abs(np.asarray(got, dtype=int) - np.asarray(naive, dtype=int))
    assert diff.max() <= 1


# --------------------------------------------------------------------------- #
# to_chw_float


def test_to_chw_float_matches_hand_computation() -> None:
    arr = np.array([[[0, 128, 255], [10, 20, 30], [255, 255, 255]], [[1, 2, 3], [100, 150, 200], [0, 0, 0]]], dtype=np.uint8)
    out = to_chw_float(Image.fromarray(arr), IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (3, 2, 3)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    for c in range(3):
        for y in range(2):
            for x in range(3):
                want = (arr[y, x, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                assert abs(float(out[c, y, x]) - want) < 1e-5


def test_to_chw_float_rejects_bad_stats() -> None:
    image = _photo(4, 4)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        to_chw_float(image, (0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std must not contain zeros"):
        to_chw_float(image, (0.5, 0.5, 0.5), (0.5, 0.0, 0.5))


# --------------------------------------------------------------------------- #
# draft decoding


@pytest.mark.parametrize(
    ("w", "h", "draft", "expected"),
    [
        (800, 600, 100, (200, 150)),  # 1/4 scale
        (800, 600, 64, (100, 75)),  # 1/8 scale
        (1000, 250, 100, (500, 125)),  # the short side limits the scale
        (250, 1000, 100, (125, 500)),
        (800, 600, 300, (400, 300)),  # 1/2 scale lands exactly on the requested side
        (120, 90, 200, (120, 90)),  # smaller than asked: full size, never upsampled
    ],
)
def test_draft_keeps_short_side(tmp_path: Path, w: int, h: int, draft: int, expected: tuple[int, int]) -> None:
    path = _save(tmp_path, "big.jpg", _photo(w, h), quality=85)
    out = load_image(path, draft_size=draft)
    assert out.mode == "RGB"
    assert min(out.size) >= min(draft, w, h)
    assert out.size == expected


def test_draft_only_applies_to_jpeg(tmp_path: Path) -> None:
    image = _photo(800, 600)
    assert load_image(_save(tmp_path, "big.jpg", image), draft_size=100).size == (200, 150)
    assert load_image(_save(tmp_path, "big.png", image), draft_size=100).size == (800, 600)


def test_draft_that_undershoots_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a Pillow whose draft picks too small a scale: load_image must
    # fall back to a full decode rather than hand back a too-small image.
    original = JpegImagePlugin.JpegImageFile.draft

    def greedy_draft(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        return original(self, mode, (size[0] // 4, size[1] // 4) if size else size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", greedy_draft)
    monkeypatch.setattr(images, "simplejpeg", None)  # the Pillow path (CMYK JPEGs, no simplejpeg)
    path = _save(tmp_path, "big.jpg", _photo(800, 600))
    assert load_image(path, draft_size=300).size == (800, 600)


@pytest.mark.parametrize(("w", "h", "draft"), [(800, 600, 100), (700, 700, 224), (450, 449, 224), (230, 900, 224), (64, 48, None)])
def test_strict_jpeg_decoding_is_pixel_identical_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, w, h, draft) -> None:
    path = _save(tmp_path, "p.jpg", _photo(w, h), quality=90)
    strict = np.asarray(load_image(path, draft_size=draft))
    monkeypatch.setattr(images, "simplejpeg", None)
    assert np.array_equal(strict, np.asarray(load_image(path, draft_size=draft)))


def test_damage_pillow_lets_through_is_recorded(tmp_path: Path) -> None:
    import io
    import struct
    import zlib

    photo = _photo(64, 80)
    # a JPEG whose middle section is zeroed: Pillow decodes it without a word
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    mid = len(data) // 2
    data[mid : mid + 300] = bytes(300)
    (tmp_path / "mid.jpg").write_bytes(bytes(data))
    assert _reason(tmp_path / "mid.jpg") == "corrupt"
    # a PNG whose compressed rows end cleanly after 10 of 80: Pillow gives an image black below
    arr = np.asarray(photo)
    raw = b"".join(b"\x00" + arr[r].tobytes() for r in range(10))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 80, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    (tmp_path / "short.png").write_bytes(png)
    assert _reason(tmp_path / "short.png") == "truncated"
    # complete PNGs of every kind still load, interlaced included
    for name, im, kw in (("rgba.png", photo.convert("RGBA"), {}), ("l.png", photo.convert("L"), {}),
                         ("p.png", photo.convert("P"), {}), ("i.png", photo, {"interlace": 1}), ("bw.png", photo.convert("1"), {})):
        im.save(tmp_path / name, **kw)
        assert load_image(tmp_path / name).size == (64, 80), name
    # a GIF cut short
    photo.convert("P").save(tmp_path / "g.gif")
    g = (tmp_path / "g.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(g[: len(g) // 2])
    assert _reason(tmp_path / "cut.gif") == "truncated"


def test_pixel_budget_bounds_pixels_in_flight() -> None:
    import threading
    import time

    budget = images.PixelBudget(100)
    inside, top = [0], [0]
    lock = threading.Lock()

    def work(n: int) -> None:
        with budget.reserve(n):
            with lock:
                inside[0] += n
                top[0] = max(top[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= n

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 250, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert top[0] <= 250 and budget.peak <= 100 and budget.free == 100  # 250 is clipped to the whole budget, alone


def test_draft_then_center_crop_never_upsamples(tmp_path: Path) -> None:
    path = _save(tmp_path, "tall.jpg", _photo(500, 1700))
    out = load_image(path, draft_size=224)
    assert min(out.size) >= 224
    assert resize_center_crop(out, 224).size == (224, 224)


# --------------------------------------------------------------------------- #
# a real catalog photo


def test_real_dataset_photo() -> None:
    folder = DATASETS / "clothing-small" / "images"
    if not folder.is_dir():
        pytest.skip(f"shared dataset not present at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    if not files:
        pytest.skip(f"no JPEGs in {folder}")
    out = load_image(files[0])
    assert out.mode == "RGB"
    w, h = out.size
    assert abs(w - 400) <= 20 and abs(h - 533) <= 27, out.size
    arr = np.asarray(out)
    assert arr.std() > 5  # a real photo, not a flat fill
    chw = to_chw_float(resize_center_crop(out, 224), IMAGENET_MEAN, IMAGENET_STD)
    assert chw.shape == (3, 224, 224) and np.isfinite(chw).all()
    drafted = load_image(files[0], draft_size=100)
    assert min(drafted.size) >= 100
