"""simlabel.quality: what an image's pixels say of its quality."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageFilter

from simlabel.images import load_image
from simlabel.quality import QUALITY_FIELDS, image_quality
from tests.helpers import dataset


def _q(image: Image.Image, **kw) -> dict:
    return dict(zip(QUALITY_FIELDS, map(float, image_quality(image, **kw))))


def test_a_real_photo_darkened_blurred_greyed_and_blanked_moves_the_right_measure():
    path = sorted((dataset("fashion-products") / "images").glob("*.jpg"))[0]
    photo = load_image(path)
    base = _q(photo)
    assert base["width"] == photo.size[0] and base["entropy"] > 1 and base["blur"] > 1 and base["colour"] > 0
    dark = _q(ImageEnhance.Brightness(photo).enhance(0.15))
    assert dark["dark"] < 0.2 < base["dark"]
    assert _q(photo.filter(ImageFilter.GaussianBlur(6)))["blur"] < base["blur"] - 0.5
    assert _q(photo.convert("L"))["colour"] == 0.0
    blank = _q(Image.new("RGB", photo.size, (255, 255, 255)))
    assert blank["entropy"] == 0.0 and blank["bright"] == 1.0 and blank["blur"] == 0.0
    # the header's size is what the file says, whatever scale it was decoded at
    assert _q(photo.reduce(4), size=photo.size)["width"] == photo.size[0]


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.integers(0, 2**16))
def test_darker_never_scores_brighter(a, b, seed):
    """The dark measure is monotone in the image's brightness."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8))
    lo, hi = sorted((a, b))
    assert _q(ImageEnhance.Brightness(img).enhance(lo))["dark"] <= _q(ImageEnhance.Brightness(img).enhance(hi))["dark"] + 1e-6
