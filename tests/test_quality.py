"""simlabel.quality: what an image's pixels say of its quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageFilter

from simlabel.images import load_image
from simlabel.quality import QUALITY_FIELDS, hamming, image_quality, perceptual_hash, pixel_hash, pixel_signature, split_signature
from tests.helpers import dataset


def _q(image: Image.Image, **kw) -> dict:
    return dict(zip(QUALITY_FIELDS, map(float, image_quality(image, **kw))))


def test_a_real_photo_darkened_blurred_greyed_and_blanked_moves_the_right_measure():
    path = sorted((dataset("fashion-products") / "images").glob("*.jpg"))[0]
    photo = load_image(path)
    base = _q(photo)
    assert base["width"] == photo.size[0] and base["entropy"] > 1 and base["colour"] > 0
    dark = _q(ImageEnhance.Brightness(photo).enhance(0.15))
    assert dark["dark"] < 0.2 < base["dark"]
    # a saturated red photo has a low luma but is not dark: the measure reads each pixel's value, max(R, G, B)
    assert _q(Image.new("RGB", (40, 40), (220, 10, 10)))["dark"] > 0.8
    assert _q(photo.filter(ImageFilter.GaussianBlur(6)))["blur"] < base["blur"] - 0.5
    assert _q(photo.convert("L"))["colour"] == 0.0
    blank = _q(Image.new("RGB", photo.size, (255, 255, 255)))
    assert blank["entropy"] == 0.0 and blank["bright"] == 1.0 and blank["blur"] == -3.0  # log10 of the 1e-3 floor
    # blur is blind to contrast: the darkened photo keeps its edges' share
    assert abs(dark["blur"] - base["blur"]) < 0.3
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


def _planted(tmp_path):
    """12 real clothing-small photos plus: an exact copy under a new id, the same pixels saved twice as PNG with
    other metadata, a darkened and a blurred copy."""
    from PIL import PngImagePlugin

    from tests.helpers import slice_catalog

    df = slice_catalog("clothing-small", 12, tmp_path, stratify="label")[["id", "image", "label"]]
    photo = load_image(df["image"].iloc[0])
    extra = []
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(Path(df["image"].iloc[1]).read_bytes())
    extra.append(("copy", copy))
    for k in (1, 2):
        info = PngImagePlugin.PngInfo()
        info.add_text("saved", f"time {k}")
        photo.save(tmp_path / f"same-{k}.png", pnginfo=info)
        extra.append((f"png-{k}", tmp_path / f"same-{k}.png"))
    ImageEnhance.Brightness(photo).enhance(0.1).save(tmp_path / "dark.jpg")
    photo.filter(ImageFilter.GaussianBlur(8)).save(tmp_path / "blurred.jpg")
    extra += [("dark", tmp_path / "dark.jpg"), ("blurred", tmp_path / "blurred.jpg")]
    df = pd.concat([df, pd.DataFrame({"id": [i for i, _ in extra], "image": [str(p) for _, p in extra], "label": "x"})],
                   ignore_index=True)
    path = tmp_path / "catalog.csv"
    df.to_csv(path, index=False)
    return path, df


def test_embed_records_each_images_quality_beside_its_vector_and_a_cached_run_repeats_it(tmp_path, image_encoder):
    """The decode pass measures every image once: `_quality/<shard>.parquet` beside each shard, the file's and the
    pixels' digests with it; a second store of the same images comes from the caches, decoding nothing, and
    records the same."""
    from simlabel.embedding import embed
    from simlabel.store import QUALITY_DIR, list_shards, read_quality

    catalog, df = _planted(tmp_path)
    first = embed(catalog, tmp_path / "a", image_encoder=image_encoder, shard_size=8, progress=False)
    q = read_quality(tmp_path / "a").set_index("id")
    assert sorted(q.index) == sorted(df["id"]) and list(q.columns[:7]) == list(QUALITY_FIELDS)
    assert len(list((tmp_path / "a" / QUALITY_DIR).glob("*.parquet"))) == len(list_shards(tmp_path / "a"))
    assert q.loc["copy", "content_hash"] == q.loc[df["id"].iloc[1], "content_hash"] != ""
    assert q.loc["png-1", "pixel_hash"] == q.loc["png-2", "pixel_hash"]
    assert q.loc["png-1", "content_hash"] != q.loc["png-2", "content_hash"]
    assert q["dark"].idxmin() == "dark"
    # the blurred copy has lost its edges; the darkened one has not (dimmer, not softer)
    assert q["blur"].idxmin() == "blurred"
    assert q.loc["blurred", "blur"] < q.loc[df["id"].iloc[0], "blur"] - 0.5
    assert (q["width"] > 0).all() and first.n_embedded == len(df)
    again = embed(catalog, tmp_path / "b", image_encoder=image_encoder, shard_size=8, progress=False)
    assert again.n_from_cache == len(df)
    pd.testing.assert_frame_equal(read_quality(tmp_path / "b").set_index("id").loc[q.index], q)
    # without the cache the file is not hashed: the measures and the pixels' digest are still recorded
    embed(catalog, tmp_path / "c", image_encoder=image_encoder, shard_size=8, progress=False, cache=False)
    c = read_quality(tmp_path / "c").set_index("id").loc[q.index]
    assert (c["content_hash"] == "").all() and (c["pixel_hash"] == q["pixel_hash"]).all()
    assert np.allclose(c[list(QUALITY_FIELDS)], q[list(QUALITY_FIELDS)])


def test_a_resized_or_reencoded_copy_keeps_its_perceptual_hash_and_another_photo_does_not():
    import io

    paths = sorted((dataset("fashion-products") / "images").glob("*.jpg"))[:6]
    photo = load_image(paths[0])
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=60)
    reencoded = Image.open(io.BytesIO(buf.getvalue()))
    resized = photo.resize((int(photo.width * 0.8), int(photo.height * 0.8)))
    h = perceptual_hash(photo)
    assert len(h) == 32 and hamming(h, h) == 0
    copies = [hamming(h, perceptual_hash(reencoded)), hamming(h, perceptual_hash(resized))]
    others = [hamming(h, perceptual_hash(load_image(p))) for p in paths[1:]]
    # a few bits of 255 for a copy; other product photos of the same shop several times as many
    assert max(copies) <= 16 and min(others) >= 2 * max(copies, default=0) + 1, (copies, others)
    # the stored signature is the pixels' digest, then the perceptual hash; split back apart
    sig = pixel_signature(photo)
    assert sig[:16] == pixel_hash(photo) and sig[16:] == h
    digest, packed = split_signature([sig.hex(), "", pixel_hash(photo).hex()])
    assert digest.tolist() == [pixel_hash(photo).hex(), "", pixel_hash(photo).hex()]
    assert packed[0].tobytes() == h and not packed[1:].any()  # no perceptual hash recorded: zeros, not compared


@settings(max_examples=15, deadline=None)
@given(st.floats(0.5, 1.0))
def test_a_copy_resized_by_any_factor_stays_within_a_few_bits(factor):
    photo = load_image(sorted((dataset("clothing-small") / "images").glob("*.jpg"))[0])
    small = photo.resize((max(8, int(photo.width * factor)), max(8, int(photo.height * factor))))
    assert hamming(perceptual_hash(photo), perceptual_hash(small)) <= 16  # of 255; other photos differ in ~100
