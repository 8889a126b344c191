"""simlabel.ssl.augment: view shapes and ranges, firing rates, the local space by type, product positives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from simlabel.catalog import Catalog, design_groups
from simlabel.errors import ConfigError, InputError
from simlabel.images import crop_to_product
from simlabel.ssl.augment import LocalSpace, ViewConfig, global_ops, kornia_colour, make_views, random_resized_crop
from tests.helpers import dataset


def _photo(seed: int = 0, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(a)


def _product_on_white(w: int = 120, h: int = 80, box=(30, 20, 70, 60), colour=(200, 30, 30)) -> Image.Image:
    a = np.full((h, w, 3), 255, np.uint8)
    a[box[1]:box[3], box[0]:box[2]] = colour
    return Image.fromarray(a)


def test_views_shapes_and_range():
    cfg = ViewConfig(global_size=64, local_size=32, local_crops=3)
    views = make_views(_photo(), None, None, cfg, LocalSpace(), np.random.default_rng(0))
    assert [v.shape for v in views] == [(64, 64, 3)] * 2 + [(32, 32, 3)] * 3
    assert all(v.dtype == np.uint8 for v in views)
    from simlabel.ssl.train import _to_tensor

    x = _to_tensor(np.stack([views[0]]), "cpu")
    assert x.shape == (1, 3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1


@settings(max_examples=30, deadline=None)
@given(w=st.integers(8, 300), h=st.integers(8, 300), size=st.integers(8, 64), seed=st.integers(0, 1000))
def test_random_resized_crop_any_shape(w, h, size, seed):
    out = random_resized_crop(Image.new("RGB", (w, h)), size, (0.05, 1.0), np.random.default_rng(seed))
    assert out.size == (size, size)


def _rate(cfg: ViewConfig, changed, n: int = 400) -> float:
    img = _photo(1, 48)
    rng = np.random.default_rng(123)
    hits = sum(changed(img, global_ops(img, cfg, rng)) for _ in range(n))
    return hits / n


def _within_binomial(rate: float, p: float, n: int = 400) -> bool:
    return abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_grey_fires_at_p1(p):
    cfg = ViewConfig(p_gray=p, p_jitter=0, p_blur=0, p_flip=0)
    def grey(_, out):
        a = np.asarray(out).astype(int)
        return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
    assert _within_binomial(_rate(cfg, grey), p)


@pytest.mark.parametrize("p", [0.8, 0.1])
def test_jitter_fires_at_p2(p):
    cfg = ViewConfig(p_gray=0, p_jitter=p, p_blur=0, p_flip=0)
    assert _within_binomial(_rate(cfg, lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b))), p)


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_blur_fires_at_p3(p):
    cfg = ViewConfig(p_gray=0, p_jitter=0, p_blur=p, p_flip=0, blur_sigma=(1.0, 2.0))
    def blurred(a, b):
        # blur lowers the variance of a noise image
        return np.asarray(b).astype(float).std() < 0.9 * np.asarray(a).astype(float).std()
    assert _within_binomial(_rate(cfg, blurred), p)


def test_dino_preset_and_checks():
    d = ViewConfig.dino()
    assert (d.p_gray, d.p_jitter, d.use_local_space, d.preprocess) == (0.2, 0.8, False, "none")
    with pytest.raises(ConfigError, match="p_gray"):
        ViewConfig(p_gray=1.5)
    with pytest.raises(ConfigError, match="preprocess"):
        ViewConfig(preprocess="crop")


def test_local_space_is_chosen_by_type():
    space = LocalSpace(default=[], types={"Tops": [{"op": "vflip", "p": 1.0}]})
    img = _photo(2, 16)
    a = np.asarray(img)
    rng = np.random.default_rng(0)
    assert np.array_equal(np.asarray(space.apply(img, "Tops", rng)), a[::-1])
    assert np.array_equal(np.asarray(space.apply(img, "Shoes", rng)), a)  # unknown type: the default (nothing)
    assert space.ops_for(None) == [] and space.ops_for("Tops")[0]["op"] == "vflip"


def test_local_space_drives_the_views():
    # a type whose A_i crops the pattern region: its views see only the middle of the image
    space = LocalSpace(default=[], types={"Dress": [{"op": "pattern_crop", "p": 1.0, "scale": [0.3, 0.3]}]})
    a = np.zeros((100, 100, 3), np.uint8)
    a[20:80, 20:80] = (0, 200, 0)  # the "pattern" in the middle, black around it
    img = Image.fromarray(a)
    cfg = ViewConfig(global_size=32, local_size=16, local_crops=2, p_gray=0, p_jitter=0, p_blur=0, preprocess="none")
    dress = make_views(img, None, "Dress", cfg, space, np.random.default_rng(0))
    shoe = make_views(img, None, "Shoes", cfg, space, np.random.default_rng(0))
    green = lambda v: (v[..., 1] > 100).mean()  # noqa: E731
    assert min(green(v) for v in dress) > 0.9
    assert np.mean([green(v) for v in shoe]) < np.mean([green(v) for v in dress])


def test_shipped_local_space_and_file_errors(tmp_path):
    space = LocalSpace.load()
    assert space.ops_for("Topwear")[0]["op"] == "pattern_crop"
    assert space.ops_for("Not A Type") == space.default
    bad = tmp_path / "bad.yaml"
    bad.write_text("types:\n  Tops:\n    - {op: explode, p: 0.5}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*unknown op 'explode'"):
        LocalSpace.load(bad)
    with pytest.raises(InputError, match="is a folder"):
        LocalSpace.load(tmp_path)
    js = tmp_path / "a.json"
    js.write_text('{"default": [{"op": "hflip", "p": 1}], "types": {}}')
    assert LocalSpace.load(js).default[0]["op"] == "hflip"


def test_crop_to_product_by_hand():
    out = crop_to_product(_product_on_white(), margin=0.0)
    # the 40 x 40 red box, already square
    assert out.size == (40, 40) and np.asarray(out)[..., 0].min() == 200
    tall = crop_to_product(_product_on_white(box=(50, 10, 60, 70)), margin=0.0)
    assert tall.size == (60, 60)  # 10 x 60 padded to a square with white
    assert (np.asarray(tall)[:, :20] == 255).all()
    blank = Image.new("RGB", (30, 20), (255, 255, 255))
    assert crop_to_product(blank).size == (30, 30)


def test_product_positives_come_from_two_images_of_one_product():
    red, blue = _product_on_white(colour=(220, 0, 0)), _product_on_white(colour=(0, 0, 220))
    cfg = ViewConfig(global_size=24, local_size=12, local_crops=2, p_gray=0, p_jitter=0, p_blur=0, global_scale=(0.9, 1.0),
                     local_scale=(0.9, 1.0))
    v = make_views(red, blue, None, cfg, None, np.random.default_rng(0))
    mean = [x.reshape(-1, 3).mean(0) for x in v]
    assert mean[0][0] > mean[0][2] and mean[1][2] > mean[1][0]  # x1 from x', x2 from x''
    assert all(m[0] > m[2] for m in mean[2:])  # the low-resolution views are of x'


def test_partners_are_other_images_of_the_product(tmp_path):
    from simlabel.ssl.train import SSLConfig, _Samples

    t = pd.DataFrame({"id": list("abcde"), "image": ["x.jpg"] * 5, "product": ["p", "p", "p", "q", "r"]})
    cat = Catalog(t, tmp_path)
    s = _Samples(cat, SSLConfig(product_col="product"))
    rng = np.random.default_rng(0)
    seen = {s.partner(0, rng) for _ in range(50)}
    assert seen == {1, 2}
    assert s.partner(3, rng) is None and s.partner(4, rng) is None
    assert _Samples(cat, SSLConfig()).partner(0, rng) is None
    with pytest.raises(InputError, match="`product_col` 'sku' is not a column"):
        _Samples(cat, SSLConfig(product_col="sku"))


def test_design_groups_by_hand_and_on_fashion():
    t = pd.DataFrame({
        "id": ["1", "2", "3", "4", "5"],
        "title": ["Puma Men Green Heroes Tee", "Puma Men Black Heroes Tee", "Puma Men Heroes Tee Navy Blue", "Nike Red Cap", "Nike Red Cap"],
        "base_colour": ["Green", "Black", "Navy Blue", "Red", "Red"],
    })
    p = design_groups(t)
    assert p[0] == p[1] == p[2] and p[0].startswith("design-")
    assert list(p[3:]) == ["4", "5"]  # same title, one colour: not colour variants
    full = pd.read_csv(dataset("fashion-products") / "catalog.csv", dtype=str, keep_default_na=False)
    vc = design_groups(full).value_counts()
    assert (vc >= 2).sum() == 1330 and vc[vc >= 2].sum() == 6543


def test_kornia_colour_on_a_batch():
    import torch

    x = torch.rand(8, 3, 32, 32)
    y = kornia_colour(x, ViewConfig(p_gray=1.0, p_jitter=0.0, p_blur=0.0), generator_seed=0)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-5)  # grey everywhere at p1 = 1
    a = kornia_colour(x, ViewConfig(), generator_seed=3)
    b = kornia_colour(x, ViewConfig(), generator_seed=3)
    assert torch.equal(a, b)
