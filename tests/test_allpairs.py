"""simlabel.allpairs: the IVF join, the recall it predicts for each probe count, and the tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.allpairs import (
    IvfPlan,
    exact_sample,
    join_lists,
    join_units,
    lay_out,
    lower_bound,
    plan_ivf,
    unit,
)
from simlabel.index import recall_per_row
from simlabel.store import StoreRows


def _rows(n: int, d: int = 8, clusters: int = 6, noise: float = 0.5, seed: int = 0) -> StoreRows:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(clusters, d))[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return StoreRows(np.array([f"r{i}" for i in range(n)], dtype=object), {"path": "mem"}, d,
                     matrix=unit(X.astype(np.float32)))


def _join(rows: StoreRows, plan: IvfPlan, k: int, block_rows: int = 10_000, path: Path | None = None):
    layout = lay_out(rows, plan, block_rows=97, path=path)
    nb = np.full((len(rows), k), -2, dtype=np.int64)
    sims = np.zeros((len(rows), k), dtype=np.float32)
    for a, b in join_units(layout.offsets, block_rows):
        r, got, s = join_lists(layout.vectors, layout.offsets, layout.probes, layout.order, a, b, k, at=layout.at)
        nb[r], sims[r] = got, s
    assert (nb != -2).all()  # every row answered once
    return nb, sims


def test_join_by_hand_two_lists_one_probe():
    """Four points on two axes, a list each: with one probe a row meets only its own list (the other list's
    rows are -1), with two it meets every row, best first, itself left out."""
    X = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    rows = StoreRows(np.array(list("abcd"), dtype=object), {}, 2, matrix=X)
    plan = IvfPlan(np.array([[1, 0], [0, 1]], dtype=np.float32), nprobe=1)
    nb, sims = _join(rows, plan, 2)
    assert nb.tolist() == [[1, -1], [0, -1], [3, -1], [2, -1]]
    assert sims[0, 0] == pytest.approx(0.8)
    plan.nprobe = 2
    nb, sims = _join(rows, plan, 2)
    assert nb.tolist() == [[1, 3], [3, 0], [3, 1], [1, 2]]
    assert sims[1].tolist() == pytest.approx([0.96, 0.8])


def test_recall_and_its_lower_bound_by_hand():
    assert recall_per_row(np.array([[1, 2], [5, -1]]), np.array([[2, 3], [5, 6]])).tolist() == [0.5, 0.5]
    assert recall_per_row(np.array([[1]]), np.array([[-1]])).tolist() == [1.0]  # nothing to find: found
    per_row = np.array([1.0, 0.5, 1.0, 0.5])
    # mean 0.75, sample sd 0.2887, two standard errors 0.2887
    assert lower_bound(per_row) == pytest.approx(0.75 - 2 * 0.288675 / 2, abs=1e-5)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(n=st.integers(200, 1500), k=st.integers(1, 12), nlist=st.integers(2, 40), seed=st.integers(0, 1000))
def test_the_predicted_recall_is_the_joins_and_every_probe_is_exact(n, k, nlist, seed):
    """The recall read off the lists of the true neighbours (no search) is the join's own recall on the tuning
    rows, for the probes the plan weighed; with every list probed the join is exact search."""
    rows = _rows(n, seed=seed)
    k = min(k, n - 1)
    tune = np.sort(np.random.default_rng(seed).choice(n, size=min(100, n), replace=False))
    exact = exact_sample(rows, tune, k)
    nlist = min(nlist, n // 40 or 1)
    for nprobe in sorted({1, max(1, nlist // 2)}):
        plan = plan_ivf(rows, k, 0.5, tune, exact, nlist=nlist, nprobe=nprobe, seed=seed)
        assert plan.nlist == nlist and plan.nprobe == nprobe
        nb, _ = _join(rows, plan, k, block_rows=150)
        assert recall_per_row(nb[tune], exact.neighbors).mean() == pytest.approx(plan.tuned_recall, abs=1e-4)
    plan = plan_ivf(rows, k, 0.5, tune, exact, nlist=nlist, nprobe=nlist, seed=seed)
    nb, sims = _join(rows, plan, k, block_rows=150)
    whole = exact_sample(rows, np.arange(n), k)
    assert recall_per_row(nb, whole.neighbors).mean() > 0.999 and (nb != np.arange(n)[:, None]).all()
    assert np.allclose(np.sort(sims, axis=1), np.sort(whole.similarities, axis=1), atol=1e-5)


def test_tuning_picks_the_fewest_probes_that_reach_the_target():
    rows = _rows(3000, d=12, clusters=30, noise=0.7, seed=3)
    tune = np.sort(np.random.default_rng(0).choice(3000, 400, replace=False))
    exact = exact_sample(rows, tune, 10)
    plan = plan_ivf(rows, 10, 0.9, tune, exact, seed=0)
    chosen = next(t for t in plan.trials if t["nlist"] == plan.nlist)
    assert chosen["nprobe"] == plan.nprobe and chosen["recall_low"] >= 0.9
    # one probe fewer (at the same lists) does not reach it
    if plan.nprobe > 1:
        fewer = plan_ivf(rows, 10, 0.9, tune, exact, nlist=plan.nlist, nprobe=plan.nprobe - 1, seed=0)
        assert fewer.tuned_recall_low < 0.9
    with pytest.raises(ValueError, match="recall"):
        plan_ivf(rows, 10, 1.5, tune, exact)


def test_units_cover_every_list_once_and_hold_about_block_rows():
    offsets = np.array([0, 5, 5, 40, 41, 60, 100])
    units = join_units(offsets, 20)
    assert units[0][0] == 0 and units[-1][1] == 6 and all(a[1] == b[0] for a, b in zip(units, units[1:]))
    for a, b in units:  # over block_rows only when one list alone is larger
        assert offsets[b] - offsets[a] <= 20 or b == a + 1


def test_the_laid_out_file_gives_the_same_join(tmp_path: Path):
    rows = _rows(800, seed=5)
    tune = np.arange(0, 800, 8)
    plan = plan_ivf(rows, 5, 0.9, tune, exact_sample(rows, tune, 5), seed=0)
    memory = _join(rows, plan, 5)
    disk = _join(rows, plan, 5, path=tmp_path / "lists.npy")
    assert (tmp_path / "lists.npy").exists() and not (tmp_path / "lists.npy.partial").exists()
    assert np.array_equal(memory[0], disk[0]) and np.allclose(memory[1], disk[1])
    again = lay_out(rows, plan, path=tmp_path / "lists.npy")  # a whole file is reused, not written again
    assert isinstance(again.vectors, np.memmap) and again.at is None
