from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simlabel.labels.smoothing import (
    build_targets,
)
from simlabel.semantics.names import (
    clean_label_name,
    embed_label_names,
    label_similarity,
    load_descriptions,
    nearest_labels,
)
from tests.helpers import NBR4, S4

# -- hand-computed rows ------------------------------------------------------------------------


def _reference_nearest(s: np.ndarray, k: int, include_self: bool) -> np.ndarray:
    out = []
    for i in range(len(s)):
        others = sorted((j for j in range(len(s)) if j != i), key=lambda j: (-s[i, j], j))
        out.append(([i] if include_self else []) + others)
    k = min(k, len(s) if include_self else len(s) - 1)
    return np.array([r[:k] for r in out], dtype=np.int64).reshape(len(s), k)


def test_nearest_labels_of_hand_matrix() -> None:
    assert nearest_labels(S4, 2).tolist() == NBR4


def test_nearest_labels_ties_and_self() -> None:
    s = np.array(
        [
            [1.0, 0.3, 0.7, 0.3, 0.7],
            [0.3, 1.0, 0.2, 0.2, 0.2],
            [0.7, 0.2, 1.0, 0.9, 0.1],
            [0.3, 0.2, 0.9, 1.0, 0.9],
            [0.7, 0.2, 0.1, 0.9, 1.0],
        ]
    )
    full = [[2, 4, 1, 3], [0, 2, 3, 4], [3, 0, 1, 4], [2, 4, 0, 1], [3, 0, 1, 2]]
    for k in range(5):
        assert nearest_labels(s, k).tolist() == [r[:k] for r in full]
    # a tie across the cut: 1 and 3 both 0.3 for row 0, the lower index wins
    assert nearest_labels(s, 3)[0].tolist() == [2, 4, 1]
    assert nearest_labels(s, 99).shape == (5, 4)  # clipped to C - 1
    with_self = nearest_labels(s, 3, include_self=True)
    assert with_self.tolist() == [[i] + r[:2] for i, r in enumerate(full)]
    assert nearest_labels(s, 99, include_self=True).shape == (5, 5)
    # include_self puts i first even where another label is more similar than i itself
    odd = np.array([[0.1, 0.9], [0.9, 0.1]])
    assert nearest_labels(odd, 2, include_self=True).tolist() == [[0, 1], [1, 0]]
    assert nearest_labels(odd, 1).tolist() == [[1], [0]]
    assert nearest_labels(s, 0).shape == (5, 0)
    with pytest.raises(ValueError, match="similarity must be a square"):
        nearest_labels(s[:3], 2)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), c=st.integers(2, 25), include_self=st.booleans())
def test_nearest_labels_matches_sorted_reference(data, c: int, include_self: bool) -> None:
    # values from a small set, so ties are common (including across the k-th place)
    s = data.draw(hnp.arrays(np.float64, (c, c), elements=st.sampled_from([-0.5, 0.0, 0.25, 0.5, 1.0])))
    k = data.draw(st.integers(0, c + 1))
    assert np.array_equal(nearest_labels(s, k, include_self=include_self), _reference_nearest(s, k, include_self))


def test_nearest_labels_large_matches_argsort() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    s = label_similarity(x)
    s = np.round(s, 2)  # plenty of ties
    ref = np.argsort(-np.where(np.eye(400, dtype=bool), -np.inf, s), axis=1, kind="stable")[:, :20]
    assert np.array_equal(nearest_labels(s, 20), ref)


def test_label_similarity() -> None:
    x = np.array([[3.0, 4.0], [1.0, 0.0], [-2.0, 0.0]])
    s = label_similarity(x)
    assert s.dtype == np.float64 and s.shape == (3, 3)
    assert np.array_equal(s, s.T) and (np.diag(s) == 1).all()
    assert s[0, 1] == pytest.approx(0.6) and s[1, 2] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="zeros"):
        label_similarity(np.array([[1.0, 0.0], [0.0, 0.0]]))


# -- taxonomy ----------------------------------------------------------------------------------



class RecordingEncoder:
    """A fake text encoder: remembers what it was asked to embed, returns unnormalised vectors."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts = list(texts)
        return np.array([[len(t), 1.0 + sum(map(ord, t)) % 7, 2.0] for t in texts])


@pytest.fixture(scope="module")
def minilm():
    from simlabel.encoders import get_text_encoder

    return get_text_encoder("minilm", "cpu")


def test_clean_and_embed_texts() -> None:
    assert clean_label_name("Tshirts") == "Tshirts"
    assert clean_label_name("casual_shoes") == "casual shoes"
    assert clean_label_name(" T-shirts__and--tops ") == "T shirts and tops"
    enc = RecordingEncoder()
    e = embed_label_names(["casual_shoes", "Tshirts", "Flip-Flops"], enc, descriptions={"Flip-Flops": " open sandals ", "other": "x"})
    assert enc.texts == ["casual shoes", "Tshirts", "Flip Flops: open sandals"]
    assert e.shape == (3, 3) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="twice"):
        embed_label_names(["a", "b", "a"], enc)
    with pytest.raises(ValueError, match="empty"):
        embed_label_names(["a", "__"], enc)
    with pytest.raises(ValueError, match="shape"):
        embed_label_names(["a", "b"], lambda texts: np.ones((1, 3)))


FASHION = ["Casual Shoes", "Sports Shoes", "Formal Shoes", "Tshirts", "Shirts", "Watches"]


def test_embed_fashion_names_with_minilm(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    e = embed_label_names(FASHION, minilm)
    assert e.shape == (6, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    s = label_similarity(e)
    nn = nearest_labels(s, 2)
    shoes = {0, 1, 2}
    for i in shoes:
        assert set(nn[i].tolist()) == shoes - {i}  # a shoe's two nearest are the other shoes
    assert FASHION[nn[3, 0]] == "Shirts" and FASHION[nn[4, 0]] == "Tshirts"
    t = build_targets("semantic", n_classes=6, similarity=s, neighbors=2)
    assert t[0, 3:].sum() == 0 and t[0, 1:3].sum() == pytest.approx(0.1)

    # descriptions change that label's embedding only
    d = embed_label_names(FASHION, minilm, descriptions={"Tshirts": "short-sleeved casual tops"})
    assert float(d[3] @ e[3]) < 0.99
    assert np.allclose(np.delete(d, 3, axis=0), np.delete(e, 3, axis=0), atol=1e-6)

    # a spec string goes through get_text_encoder with the device
    import simlabel.encoders as encoders

    calls = []
    monkeypatch.setattr(encoders, "get_text_encoder", lambda spec, device: (calls.append((spec, device)), minilm)[1])
    assert np.allclose(embed_label_names(FASHION[:2], "minilm", device="cpu"), e[:2], atol=1e-6)
    assert calls == [("minilm", "cpu")]


# -- descriptions file -------------------------------------------------------------------------


def test_load_descriptions(tmp_path: Path) -> None:
    p = tmp_path / "desc.csv"
    p.write_text("label,description,source\nTshirts, short-sleeved tops ,a\nWatches,,b\nCasual Shoes,everyday shoes,c\n")
    assert load_descriptions(p) == {"Tshirts": "short-sleeved tops", "Casual Shoes": "everyday shoes"}


def test_load_descriptions_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_descriptions(tmp_path / "nope.csv")
    p = tmp_path / "cols.csv"
    p.write_text("label,text\nTshirts,tops\n")
    with pytest.raises(ValueError, match=r"cols\.csv: description file is missing column\(s\) description"):
        load_descriptions(p)
    p = tmp_path / "dup.csv"
    p.write_text("label,description\nTshirts,tops\nShirts,collared\nTshirts,tees\n")
    with pytest.raises(ValueError, match=r"dup\.csv: label 'Tshirts' is described twice \(lines 2, 4\)"):
        load_descriptions(p)
    p = tmp_path / "empty.csv"
    p.write_text("label,description\nTshirts,tops\n ,nothing\n")
    with pytest.raises(ValueError, match=r"empty\.csv, row 1 \(line 3\): empty label"):
        load_descriptions(p)


# -- the trainer-facing helpers ------------------------------------------------------------------
