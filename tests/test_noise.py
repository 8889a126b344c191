"""Simulated missing labels and the clean/noisy split (paper 004)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.labels.multilabel import MultiLabels, from_attributes
from simlabel.labels.noise import clean_noisy_split, simulate_missing_labels

CATALOG = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-products" / "catalog.csv"


def _random_Y(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Two frequent attributes and one rare one, one-hot per attribute like a catalog."""
    rng = np.random.default_rng(seed)
    n = 20_000
    blocks, attrs = [], []
    for name, n_values, present in (("common", 3, 1.0), ("mid", 4, 0.6), ("rare", 2, 0.1)):
        onehot = np.eye(n_values, dtype=np.uint8)[rng.integers(0, n_values, n)]
        onehot[rng.random(n) >= present] = 0
        blocks.append(onehot)
        attrs += [name] * n_values
    return np.hstack(blocks), attrs


def test_simulate_realised_rates_match_requested() -> None:
    Y, attrs = _random_Y()
    noisy, info = simulate_missing_labels(Y, attrs, drop_rate={"common": 0.2, "mid": 0.5, "rare": 0.9}, false_positive_rate=0.0)
    assert info["drop_rates"] == {"common": 0.2, "mid": 0.5, "rare": 0.9}
    for a, r in info["drop_rates"].items():
        assert info["realised_drop_rates"][a] == pytest.approx(r, abs=0.03)
    assert not (noisy.astype(bool) & ~Y.astype(bool)).any()  # no false positives asked for
    assert info["n_false_positive"] == 0


def test_simulate_range_gives_rarest_the_highest_rate() -> None:
    Y, attrs = _random_Y()
    noisy, info = simulate_missing_labels(Y, attrs, seed=3)
    rates = info["drop_rates"]
    assert all(0.2 <= r <= 0.8 for r in rates.values())
    assert rates["rare"] > rates["mid"] > rates["common"]
    for a, r in rates.items():
        assert info["realised_drop_rates"][a] == pytest.approx(r, abs=0.04)
    # Scalar rate only when the range is switched off.
    _, info2 = simulate_missing_labels(Y, attrs, drop_rate=0.3, drop_rates_range=None)
    assert set(info2["drop_rates"].values()) == {0.3}


def test_simulate_false_positives_only_add_at_the_rate() -> None:
    Y, attrs = _random_Y()
    noisy, info = simulate_missing_labels(Y, attrs, drop_rate=0.0, drop_rates_range=None, false_positive_rate=0.05)
    Yb, Nb = Y.astype(bool), noisy.astype(bool)
    assert (Nb[Yb]).all()  # no positive lost
    changed = Nb != Yb
    assert not (changed & Yb).any()  # every change is 0 -> 1
    assert changed.sum() / (~Yb).sum() == pytest.approx(0.05, abs=0.005)
    assert info["realised_false_positive_rate"] == pytest.approx(changed.sum() / (~Yb).sum())


def test_simulate_is_seeded_and_loses_positives() -> None:
    Y, attrs = _random_Y()
    a, ia = simulate_missing_labels(Y, attrs, seed=7)
    b, ib = simulate_missing_labels(Y, attrs, seed=7)
    c, _ = simulate_missing_labels(Y, attrs, seed=8)
    np.testing.assert_array_equal(a, b)
    assert ia == ib
    assert (a != c).any()
    assert a.dtype == np.uint8 and a.shape == Y.shape
    assert ia["positives_per_image_noisy"] < ia["positives_per_image_clean"]
    assert ia["positives_per_image_clean"] == pytest.approx(Y.sum(1).mean())
    assert ia["positives_per_image_noisy"] == pytest.approx(a.sum(1).mean())


def test_simulate_rejects_bad_input() -> None:
    Y, attrs = _random_Y()
    with pytest.raises(ValueError, match="attribute_of has"):
        simulate_missing_labels(Y, attrs[:-1])
    with pytest.raises(ValueError, match="must hold only 0 and 1"):
        simulate_missing_labels(Y * 2, attrs)
    with pytest.raises(ValueError, match="must name every attribute"):
        simulate_missing_labels(Y, attrs, drop_rate={"common": 0.5})


def test_clean_noisy_split() -> None:
    s = clean_noisy_split(1000, 50, seed=1)
    assert list(s) == ["clean_train", "clean_test", "noisy_train", "noisy_test"]
    assert [len(v) for v in s.values()] == [38, 12, 712, 238]  # round(0.25 * 50) = 12, round(237.5) = 238
    allidx = np.concatenate(list(s.values()))
    assert len(np.unique(allidx)) == 1000  # disjoint ...
    np.testing.assert_array_equal(np.sort(allidx), np.arange(1000))  # ... and covering
    assert all((np.diff(v) > 0).all() for v in s.values())
    again = clean_noisy_split(1000, 50, seed=1)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(s["clean_train"], clean_noisy_split(1000, 50, seed=2)["clean_train"])
    with pytest.raises(ValueError, match="need 0 <= n_clean <= n"):
        clean_noisy_split(10, 11)


@pytest.mark.skipif(not CATALOG.exists(), reason="fashion-products catalog not available")
def test_real_catalog_defaults_lose_positives() -> None:
    catalog = pd.read_csv(CATALOG)
    ml = from_attributes(catalog, ["gender", "usage", "season", "sub_category"])
    assert isinstance(ml, MultiLabels)
    assert len(ml.ids) == len(catalog)
    assert all("=" in lab for lab in ml.labels)
    assert ml.attributes == ["gender", "season", "sub_category", "usage"]
    # Every image has one value per attribute, less the few missing ones.
    assert 3.9 < ml.positives_per_image() <= 4.0
    noisy, info = simulate_missing_labels(ml.Y, ml.attribute_of)
    # Paper 004: 3.40 clean vs 1.28 noisy positives per image; the defaults lose about half.
    assert info["positives_per_image_noisy"] < 0.9 * info["positives_per_image_clean"]
    counts = info["positives_per_attribute"]
    rates = info["drop_rates"]
    assert max(rates, key=rates.get) == min(counts, key=counts.get)
    split = clean_noisy_split(len(ml.ids), round(0.05 * len(ml.ids)))
    assert len(split["clean_train"]) + len(split["clean_test"]) == round(0.05 * len(ml.ids))


def test_drop_systematically_removes_whole_groups() -> None:
    from simlabel.labels.noise import drop_systematically

    rng = np.random.default_rng(0)
    Y = (rng.random((400, 4)) < 0.5).astype(np.uint8)
    attribute_of = ["a", "a", "b", "b"]
    groups = np.repeat(["g0", "g1", "g2", "g3"], 100)
    out, info = drop_systematically(Y, attribute_of, groups, share=0.5, seed=1)
    for attr, cols in (("a", [0, 1]), ("b", [2, 3])):
        lost = info["groups_without"][attr]
        assert len(lost) == 2
        in_lost = np.isin(groups, lost)
        assert out[np.ix_(in_lost, cols)].sum() == 0  # never labelled there
        assert np.array_equal(out[np.ix_(~in_lost, cols)], Y[np.ix_(~in_lost, cols)])  # untouched elsewhere
    assert info["n_dropped"] == int(Y.sum() - out.sum())
    again, _ = drop_systematically(Y, attribute_of, groups, share=0.5, seed=1)
    assert np.array_equal(out, again)

