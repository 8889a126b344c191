from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

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
    table, res = propagate(tmp_path / "emb", seeds, k=5, steps=20, unlabeled_sample=30, exclude=["a5", "b5"], out=tmp_path / "p.csv")
    assert len(table) <= 30 and not {"a5", "b5", "a0", "b0"} & set(table["id"])
    assert (table["label"] == table["id"].str[0].str.upper()).mean() > 0.9
    assert list(pd.read_csv(tmp_path / "p.csv").columns[:2]) == ["id", "label"]
