from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.errors import InputError
from simlabel.labels.propagate import (
    harmonic_solution,
    knn_adjacency,
    propagate,
    propagate_labels,
    row_normalize,
)


def test_adjacency_directed_and_symmetric() -> None:
    nbr = np.array([[1, 2], [0, -1], [1, 1]])
    a = knn_adjacency(nbr).toarray()
    assert a.tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]
    s = knn_adjacency(nbr, symmetric=True).toarray()
    assert (s == s.T).all() and s[2, 0] == 1
    p = row_normalize(sp.csr_matrix(a)).toarray()
    assert np.allclose(p.sum(axis=1), 1) and p[0, 1] == 0.5


def test_chain_by_hand() -> None:
    # 0 (class 0) - 1 - 2 - 3 (class 1), symmetric chain: harmonic values are linear: 2/3, 1/3
    a = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    labels = np.array([0, -1, -1, 1])
    h = harmonic_solution(row_normalize(a), labels)
    assert np.allclose(h[1], [2 / 3, 1 / 3]) and np.allclose(h[2], [1 / 3, 2 / 3])
    one = propagate_labels(row_normalize(a), labels, steps=1)
    # after one step node 1 has half of class 0 mass, node 2 half of class 1
    assert np.allclose(one.distribution[1], [0.5, 0]) and np.allclose(one.distribution[2], [0, 0.5])


def test_iterations_converge_to_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = X @ X.T
    np.fill_diagonal(s, -np.inf)
    nbr = np.argsort(-s, axis=1)[:, :6]
    p = row_normalize(knn_adjacency(nbr, symmetric=True))
    labels = np.full(60, -1)
    labels[:5], labels[5:10] = 0, 1
    it = propagate_labels(p, labels, steps=None, tol=1e-10, max_steps=20_000)
    closed = harmonic_solution(p, labels)
    assert it.converged
    assert np.abs(it.distribution - closed).max() < 1e-4
    assert (it.label[10:] == closed[10:].argmax(axis=1)).all()


def test_propagate_files(tmp_path: Path) -> None:
    from simlabel.store import shard_name, write_shard

    rng = np.random.default_rng(0)
    c = rng.standard_normal((2, 8))
    X = np.concatenate([c[0] + 0.3 * rng.standard_normal((40, 8)), c[1] + 0.3 * rng.standard_normal((40, 8))])
    ids = [f"a{i}" for i in range(40)] + [f"b{i}" for i in range(40)]
    write_shard(tmp_path / "emb" / shard_name(0), ids, (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32))
    seeds = pd.DataFrame({"id": ["a0", "a1", "b0", "b1"], "label": ["A", "A", "B", "B"]})
    made = propagate(tmp_path / "emb", seeds, k=5, steps=20, unlabeled_sample=30, exclude=["a5", "b5"], out=tmp_path / "p.csv")
    table = made.labels
    assert made.summary["n_nodes"] == 34 and made.summary["n_labels"] == len(table) and made.result.steps == 20
    with pytest.warns(DeprecationWarning, match="unpacking it as"):
        old_table, old_res = made  # what scripts written for the tuple do
    assert old_table is table and old_res is made.result
    assert len(table) <= 30 and not {"a5", "b5", "a0", "b0"} & set(table["id"])
    assert (table["label"] == table["id"].str[0].str.upper()).mean() > 0.9
    assert list(pd.read_csv(tmp_path / "p.csv").columns[:2]) == ["id", "label"]


# -- label spreading's closed form (Zhou et al. 2004) by block CG ------------------------------


def _random_graph(n: int, k: int, seed: int) -> sp.csr_matrix:
    from simlabel.labels.propagate import similarity_adjacency

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nb = np.argsort(-S, axis=1)[:, :k]
    return similarity_adjacency(nb, np.take_along_axis(S, nb, 1), n, power=3.0)


def test_spreading_by_hand_on_a_path() -> None:
    from simlabel.labels.propagate import spread_labels

    # 0 - 1 - 2 with unit weights; seed 0 in class 0, seed 2 in class 1; alpha 1/2
    W = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    res = spread_labels(W, np.array([0, -1, 1]), 2, alpha=0.5, tol=1e-12)
    d = np.array([1, 2, 1.0])
    S = W.toarray() / np.sqrt(np.outer(d, d))
    Z = np.linalg.solve(np.eye(3) - 0.5 * S, np.array([[1, 0], [0, 0], [0, 1.0]]))
    assert np.allclose(res.distribution, Z, atol=1e-6)
    assert res.label.tolist() == [0, 0, 1] or res.label.tolist() == [0, 1, 1]  # node 1 is a tie
    assert res.distribution[1, 0] == pytest.approx(res.distribution[1, 1])
    assert res.converged


def test_spreading_equals_the_dense_solve_and_sklearn() -> None:
    from sklearn.semi_supervised import LabelSpreading

    from simlabel.labels.propagate import normalized_affinity, spread_labels

    n, alpha = 150, 0.9
    W = _random_graph(n, 8, 0)
    rng = np.random.default_rng(1)
    labels = np.full(n, -1)
    seeds = rng.choice(n, 20, replace=False)
    labels[seeds] = rng.integers(0, 3, 20)
    res = spread_labels(W, labels, 3, alpha=alpha, tol=1e-10)
    S = normalized_affinity(W).toarray()
    Y = np.zeros((n, 3))
    Y[seeds, labels[seeds]] = 1
    dense = np.linalg.solve(np.eye(n) - alpha * S, Y)
    assert np.allclose(res.distribution, np.maximum(dense, 0), atol=1e-5)
    # scikit-learn's LabelSpreading on the same affinity (a callable kernel) reaches (1 - alpha) times ours
    dense_w = W.toarray()
    ls = LabelSpreading(kernel=lambda a, b: dense_w, alpha=alpha, max_iter=5000, tol=1e-12).fit(np.zeros((n, 1)), labels)
    reached = res.label >= 0
    assert (ls.transduction_[reached] == res.label[reached]).mean() == 1.0


def test_spreading_leaves_seedless_components_and_classes_unlabelled() -> None:
    from simlabel.labels.propagate import spread_labels

    W = sp.block_diag([_random_graph(30, 4, 2), _random_graph(20, 4, 3)]).tocsr()
    labels = np.full(50, -1)
    labels[:3] = [0, 1, 0]  # seeds only in the first component; class 2 has none
    res = spread_labels(W, labels, 3, alpha=0.99)
    assert (res.label[30:] == -1).all() and (res.label[:30] >= 0).all()
    assert (res.distribution[:, 2] == 0).all()
    assert ((0 <= res.weight) & (res.weight <= 1)).all() and (res.weight[30:] == 0).all()
    with pytest.raises(InputError, match="alpha must be in"):
        spread_labels(W, labels, 3, alpha=1.0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 60), seed=st.integers(0, 1000), alpha=st.floats(0.05, 0.98))
def test_block_cg_solves_spd_systems(n, seed, alpha) -> None:
    from simlabel.labels.propagate import block_cg, normalized_affinity

    S = normalized_affinity(_random_graph(n, min(4, n - 1), seed))
    rng = np.random.default_rng(seed)
    B = rng.random((n, 3))
    X, _, ok = block_cg(lambda v: v - alpha * (S @ v), B, tol=1e-10, max_iter=10 * n)
    assert ok
    assert np.allclose(X - alpha * (S @ X), B, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 80), cols=st.integers(0, 3), threads=st.integers(1, 4), seed=st.integers(0, 1000))
def test_the_threaded_product_is_the_product_bit_for_bit(n, cols, threads, seed) -> None:
    """Rows cut between threads and one column at a time: each row summed as ``S @ v`` sums it."""
    from simlabel.labels.propagate import threaded_product

    rng = np.random.default_rng(seed)
    S = sp.random(n, n, density=0.2, format="csr", random_state=seed)
    v = rng.normal(size=(n,) if cols == 0 else (n, cols))
    assert np.array_equal(threaded_product(S, threads)(v), S @ v)
