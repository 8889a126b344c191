"""labels/sample.py: seeds, holdouts, clean sets and noisy copies from a catalog's own columns: the quotas by
hand and by property, symmetric noise, the file job and the command, on a real 60-row slice of fashion-products."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simlabel import SampleConfig, sample_labels
from simlabel.cli import app
from simlabel.errors import InputError
from simlabel.labels.sample import flip_labels, sample_mask
from tests.helpers import shop_slice

runner = CliRunner()


@pytest.fixture(scope="module")
def shop_catalog(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 60-row fashion-products slice (10 per master category), no embeddings."""
    return shop_slice(tmp_path_factory.mktemp("shop"))


def run(*argv: str) -> str:
    res = runner.invoke(app, [str(a) for a in argv])
    assert res.exit_code == 0, res.output
    return res.output


def test_sample_mask_quotas_by_hand() -> None:
    labels = np.array(["a"] * 10 + ["b"] * 5 + ["c"] * 1 + [""] * 4, dtype=object)
    m = sample_mask(labels, frac=0.2, seed=0)
    # round(0.2 * 10) = 2, round(0.2 * 5) = 1, and a class of 1 keeps its one row (never 0)
    assert pd.Series(labels[m]).value_counts().to_dict() == {"a": 2, "b": 1, "c": 1}
    assert not m[-4:].any()  # unlabelled rows are never drawn
    by_n = sample_mask(labels, n=8, seed=0)
    # 8 * (10, 5, 1) / 16 = 5, 2.5, 0.5: floors 5, 2, 0 and the largest remainder (b's .5, first) gets one
    assert pd.Series(labels[by_n]).value_counts().to_dict() == {"a": 5, "b": 3}
    assert pd.Series(labels[sample_mask(labels, per_class=3, seed=1)]).value_counts().to_dict() == {"a": 3, "b": 3, "c": 1}
    with pytest.raises(InputError, match="exactly one"):
        sample_mask(labels, frac=0.1, n=3)


def test_flip_labels_is_symmetric_noise() -> None:
    y = np.array(["a", "b", "c", "d"] * 2500)
    noisy, flipped = flip_labels(y, 0.3, seed=0)
    assert abs(flipped.mean() - 0.3) < 0.02
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    # each wrong class equally likely: rate / (C - 1) of the a's become each of b, c, d
    wrong_of_a = pd.Series(noisy[(y == "a") & flipped]).value_counts(normalize=True)
    assert set(wrong_of_a.index) == {"b", "c", "d"} and (abs(wrong_of_a - 1 / 3) < 0.06).all()


def test_sample_labels_holdout_is_disjoint_and_drawn_first(shop_catalog, tmp_path: Path) -> None:
    cfg = SampleConfig(label_col="master_category", frac=0.5, holdout_frac=0.2, seed=3)
    res = sample_labels(shop_catalog["catalog"], cfg, out=tmp_path / "seeds.csv", holdout_out=tmp_path / "test.csv")
    seeds, test = pd.read_csv(tmp_path / "seeds.csv", dtype=str), pd.read_csv(tmp_path / "test.csv", dtype=str)
    assert list(seeds.columns) == ["id", "label"] and list(test.columns) == ["id", "label"]
    assert not set(seeds["id"]) & set(test["id"])
    counts = shop_catalog["table"]["master_category"].value_counts()
    held = {c: max(int(np.round(0.2 * n)), 1) for c, n in counts.items() if n > 1}  # a class of one row stays out
    assert test["label"].value_counts().to_dict() == held
    rest = counts - pd.Series(held).reindex(counts.index).fillna(0)
    assert len(seeds) == sum(max(int(np.round(0.5 * n)), 1) for n in rest if n)
    assert set(seeds["label"]) == set(shop_catalog["table"]["master_category"]) and res.n_labelled == 60
    with pytest.raises(InputError, match="`holdout_out`"):
        sample_labels(shop_catalog["catalog"], SampleConfig(label_col="master_category", holdout_frac=0.2), out=tmp_path / "x.csv")


def test_labels_sample_command_makes_seeds_clean_sets_and_noisy_copies(shop_catalog, tmp_path: Path) -> None:
    out = run("labels", "sample", shop_catalog["catalog"], "--label-col", "article_type", "--n", "20", "--out", tmp_path / "s.csv")
    assert "20 of 60 labelled rows drawn" in out and len(pd.read_csv(tmp_path / "s.csv")) == 20
    run("labels", "sample", shop_catalog["catalog"], "--attributes", "gender,usage,season", "--n", "12", "--out", tmp_path / "clean.csv")
    clean = pd.read_csv(tmp_path / "clean.csv", dtype=str)
    assert list(clean.columns) == ["id", "labels"] and clean["labels"].str.contains("gender=").all()
    out = run("labels", "sample", shop_catalog["catalog"], "--attributes", "gender,usage,season", "--noise", "0.5", "--keep-columns",
              "--out", tmp_path / "noisy.csv")
    noisy = pd.read_csv(tmp_path / "noisy.csv", dtype=str, keep_default_na=False)
    assert "noise:" in out and len(noisy) == 60 and noisy["image"].map(lambda p: Path(p).is_absolute()).all()
    truth = shop_catalog["table"].set_index("id")
    kept = noisy.set_index("id")
    lost = (kept["gender"] == "") & (truth.loc[kept.index, "gender"] != "")
    assert lost.any() and (kept.loc[~lost, "gender"] == truth.loc[kept.index[~lost], "gender"]).all()
    run("labels", "sample", shop_catalog["catalog"], "--label-col", "master_category", "--noise", "0.4", "--out", tmp_path / "n1.csv",
        "--truth-out", tmp_path / "t1.csv")
    n1, t1 = pd.read_csv(tmp_path / "n1.csv"), pd.read_csv(tmp_path / "t1.csv")
    assert (n1["id"] == t1["id"]).all() and 0 < (n1["label"] != t1["label"]).sum() < 60


labels_st = st.lists(st.sampled_from(["a", "b", "c", "d", ""]), min_size=1, max_size=80).map(lambda v: np.array(v, dtype=object))


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, frac=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_frac_quotas_are_rounded_shares_of_each_class_at_least_one(labels, frac, seed) -> None:
    m = sample_mask(labels, frac=frac, seed=seed)
    assert not m[labels == ""].any()  # unlabelled rows are never drawn
    for c in set(labels) - {""}:
        n_c = int((labels == c).sum())
        want = min(max(int(np.round(frac * n_c)), 1), n_c) if frac > 0 else 0
        assert int(m[labels == c].sum()) == want
    assert np.array_equal(m, sample_mask(labels, frac=frac, seed=seed))  # the seed decides every draw


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, share=st.floats(0.0, 1.0), k=st.integers(1, 30), seed=st.integers(0, 99))
def test_n_and_per_class_quotas(labels, share, k, seed) -> None:
    labelled = int((labels != "").sum())
    n = int(share * labelled)
    by_n = sample_mask(labels, n=n, seed=seed)
    assert int(by_n.sum()) == n and not by_n[labels == ""].any()  # the largest-remainder quotas add up to n
    per = sample_mask(labels, per_class=k, seed=seed)
    for c in set(labels) - {""}:
        assert int(per[labels == c].sum()) == min(k, int((labels == c).sum()))
    eligible = np.arange(len(labels)) % 2 == 0
    assert not sample_mask(labels, per_class=k, eligible=eligible, seed=seed)[~eligible].any()
    with pytest.raises(InputError, match="more than the"):
        sample_mask(labels, n=labelled + 1)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=60), rate=st.floats(0.0, 1.0),
       seed=st.integers(0, 99))
def test_flipped_labels_change_and_the_rest_stay(labels, rate, seed) -> None:
    y = np.array(labels)
    if len(set(labels)) < 2:
        with pytest.raises(InputError, match="two classes") if rate > 0 else contextlib.nullcontext():
            flip_labels(y, rate, seed=seed)
        return
    noisy, flipped = flip_labels(y, rate, seed=seed)
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert set(noisy) <= set(y)  # only the classes there are
    if rate == 0:
        assert not flipped.any()
