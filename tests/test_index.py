"""Tests for simlabel.index (cosine k-NN over FAISS)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simlabel.index import (
    IndexConfig,
    NeighborIndex,
    drop_self_matches,
    exact_knn,
    recall_at_k,
)

KINDS = ["flat", "hnsw", "ivf"]


def unit_circle(degrees: list[float]) -> np.ndarray:
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def gaussian_mixture(n: int, d: int, centers: int, spread: float, seed: int = 0) -> np.ndarray:
    """Unit-normalised points around ``centers`` random unit directions."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    X = c[rng.integers(0, centers, n)] + spread / np.sqrt(d) * rng.standard_normal((n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


# Points on the unit circle at known angles: cosine similarity = cos(angle difference).
ANGLES = [0.0, 10.0, 30.0, 100.0, 180.0]
ANGLE_IDS = ["a0", "a10", "a30", "a100", "a180"]


@pytest.fixture(params=KINDS)
def circle_index(request) -> NeighborIndex:
    return NeighborIndex.build(ANGLE_IDS, unit_circle(ANGLES), IndexConfig(kind=request.param))


def test_known_neighbours_on_circle(circle_index: NeighborIndex) -> None:
    pos, sims = circle_index.knn_positions(np.arange(5), k=2)
    # Nearest by angle, self excluded.
    expected = [[1, 2], [0, 2], [1, 0], [2, 4], [3, 2]]
    np.testing.assert_array_equal(pos, expected)
    want = np.cos(np.deg2rad([[10, 30], [10, 20], [20, 30], [70, 80], [80, 150]]))
    np.testing.assert_allclose(sims, want, atol=1e-6)
    assert sims.dtype == np.float32 and pos.dtype == np.int64
    assert not (pos == np.arange(5)[:, None]).any()

    nb, s = circle_index.knn_ids(["a0", "a180"], k=1)
    assert nb.dtype == object
    assert nb.tolist() == [["a10"], ["a100"]]
    np.testing.assert_allclose(s[:, 0], np.cos(np.deg2rad([10, 80])), atol=1e-6)


def test_without_self_exclusion_self_comes_first(circle_index: NeighborIndex) -> None:
    pos, sims = circle_index.knn_positions(np.arange(5), k=2, exclude_self=False)
    np.testing.assert_array_equal(pos[:, 0], np.arange(5))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-6)


def test_search_and_knn_vectors_normalise_queries() -> None:
    index = NeighborIndex.build(ANGLE_IDS, unit_circle(ANGLES))
    q = 7.0 * unit_circle([12.0])  # unnormalised query: cosine must not care
    pos, sims = index.search(q, k=3)
    np.testing.assert_array_equal(pos, [[1, 0, 2]])
    np.testing.assert_allclose(sims, np.cos(np.deg2rad([[2, 12, 18]])), atol=1e-6)
    ids, sims2 = index.knn_vectors(q, k=3)
    assert ids.tolist() == [["a10", "a0", "a30"]]
    np.testing.assert_array_equal(sims, sims2)
    # Without self-exclusion, k may be n.
    assert index.search(q, k=5).neighbors.shape == (1, 5)


def test_build_normalises_rows_and_keeps_unit_input_uncopied() -> None:
    X = unit_circle(ANGLES)
    scaled = NeighborIndex.build(ANGLE_IDS, (X * np.arange(1, 6)[:, None]).astype(np.float64))
    plain = NeighborIndex.build(ANGLE_IDS, X)
    for a, b in zip(scaled.knn_positions(np.arange(5), 3), plain.knn_positions(np.arange(5), 3)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(plain.index.reconstruct_n(0, 5), axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicates_return_each_other_never_self(kind: str) -> None:
    X = unit_circle([0.0, 0.0, 45.0, 90.0, 135.0, 180.0])
    ids = [f"p{i}" for i in range(len(X))]
    index = NeighborIndex.build(ids, X, IndexConfig(kind=kind))
    pos, sims = index.knn_positions(np.array([0, 1]), k=1)
    np.testing.assert_array_equal(pos[:, 0], [1, 0])
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-6)
    pos, sims = index.knn_positions(np.arange(len(X)), k=3)
    assert not (pos == np.arange(len(X))[:, None]).any()


def test_drop_self_matches_anywhere_or_last() -> None:
    D = np.array([[1.0, 1.0, 0.5], [0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    I = np.array([[7, 3, 5], [1, 2, 9], [4, 2, 6]])
    # Row 0: self (3) ranked second after a duplicate; row 1: self at rank 0;
    # row 2: self absent (approximate miss) -> drop the worst column.
    d, i = drop_self_matches(D, I, np.array([3, 1, 8]))
    np.testing.assert_array_equal(i, [[7, 5], [2, 9], [4, 2]])
    np.testing.assert_array_equal(d, np.float32([[1.0, 0.5], [0.8, 0.7], [0.9, 0.8]]))


def test_many_identical_points_self_never_returned() -> None:
    # More copies than k+1: the query itself may fall outside the k+1 returned.
    X = np.ones((12, 3), dtype=np.float32)
    X[10:] = [[1, 0, 0], [0, 1, 0]]
    index = NeighborIndex.build([str(i) for i in range(12)], X)
    pos, sims = index.knn_positions(np.arange(10), k=3)
    assert not (pos == np.arange(10)[:, None]).any()
    assert (pos < 10).all()
    np.testing.assert_allclose(sims, 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_knn_ids_agree_with_knn_positions(kind: str) -> None:
    X = gaussian_mixture(300, 8, centers=5, spread=1.0, seed=1)
    ids = [f"sku-{i:04d}" for i in range(len(X))]
    index = NeighborIndex.build(ids, X, IndexConfig(kind=kind))
    query_ids = ids[::7]
    nb_ids, sims_i = index.knn_ids(query_ids, k=5)
    pos, sims_p = index.knn_positions(index.positions_of(query_ids), k=5)
    np.testing.assert_array_equal(index.positions_of(query_ids), np.arange(0, 300, 7))
    np.testing.assert_array_equal(nb_ids, np.asarray(ids, dtype=object)[pos])
    np.testing.assert_array_equal(sims_i, sims_p)


def test_unknown_ids_raise_key_error_naming_them() -> None:
    index = NeighborIndex.build(ANGLE_IDS, unit_circle(ANGLES))
    with pytest.raises(KeyError, match="2 unknown id.*'nope'.*'missing'"):
        index.knn_ids(["a0", "nope", "missing"], k=1)
    with pytest.raises(KeyError, match="nope"):
        index.positions_of(["nope"])
    with pytest.raises(TypeError, match="single str"):
        index.positions_of("a0")


def test_validation_errors_name_the_offender() -> None:
    X = unit_circle(ANGLES)
    with pytest.raises(ValueError, match=r"'a10' at rows \[1, 3\]"):
        NeighborIndex.build(["a0", "a10", "x", "a10", "y"], X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*row 3 \(id 'a100'\)"):
        NeighborIndex.build(ANGLE_IDS, bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"non-finite.*row 3"):
        NeighborIndex.build(ANGLE_IDS, bad)
    zero = X.copy()
    zero[2] = 0
    with pytest.raises(ValueError, match=r"all-zero.*row 2 \(id 'a30'\)"):
        NeighborIndex.build(ANGLE_IDS, zero)
    with pytest.raises(ValueError, match="2D"):
        NeighborIndex.build(ANGLE_IDS, X[:, 0])
    with pytest.raises(ValueError, match="dim 3"):
        NeighborIndex.build(ANGLE_IDS, X[:, :, None])
    with pytest.raises(ValueError, match="5 rows but 4 ids"):
        NeighborIndex.build(ANGLE_IDS[:4], X)
    with pytest.raises(ValueError, match=r"empty id.*row\(s\) 2"):
        NeighborIndex.build(["a", "b", "", "c", "d"], X)
    with pytest.raises(TypeError, match=r"ids\[1\]=7"):
        NeighborIndex.build(["a", 7, "c", "d", "e"], X)
    with pytest.raises(ValueError, match="kind must be one of"):
        IndexConfig(kind="annoy")  # type: ignore[arg-type]

    index = NeighborIndex.build(ANGLE_IDS, X)
    with pytest.raises(ValueError, match="n=5"):
        index.knn_positions(np.arange(2), k=5)
    with pytest.raises(ValueError, match="positive integer"):
        index.knn_positions(np.arange(2), k=0)
    with pytest.raises(IndexError, match=r"positions\[1\]=5"):
        index.knn_positions(np.array([0, 5]), k=1)
    with pytest.raises(TypeError, match="integers"):
        index.knn_positions(np.array([0.0, 1.0]), k=1)
    with pytest.raises(ValueError, match="3 columns but the index has dim 2"):
        index.search(np.ones((1, 3)), k=1)
    with pytest.raises(ValueError, match=r"query vectors.*non-finite.*row 0"):
        index.search(np.array([[np.nan, 1.0]]), k=1)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path, kind: str) -> None:
    X = gaussian_mixture(500, 16, centers=8, spread=1.0, seed=2)
    ids = [f"id{i}" for i in range(len(X))]
    index = NeighborIndex.build(ids, X, IndexConfig(kind=kind, hnsw_ef_search=40), metadata={"encoder": "e5"})
    path = tmp_path / "sub" / "index.faiss"
    index.save(path)
    for name in ("index.faiss", "index.faiss.ids.parquet", "index.faiss.json"):
        assert (tmp_path / "sub" / name).is_file()
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]
    meta = json.loads((tmp_path / "sub" / "index.faiss.json").read_text())
    assert meta["kind"] == kind and meta["n"] == 500 and meta["dim"] == 16
    assert meta["metadata"] == {"encoder": "e5"} and meta["config"]["hnsw_ef_search"] == 40

    loaded = NeighborIndex.load(str(path))
    assert len(loaded) == 500 and loaded.dim == 16 and loaded.kind == kind
    assert loaded.config == index.config and loaded.metadata == {"encoder": "e5"}
    np.testing.assert_array_equal(loaded.ids, index.ids)
    for a, b in zip(index.knn_ids(ids[:50], k=7), loaded.knn_ids(ids[:50], k=7)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(index.search(X[:20], k=7), loaded.search(X[:20], k=7)):
        np.testing.assert_array_equal(a, b)


def test_load_reports_missing_or_inconsistent_sidecars(tmp_path) -> None:
    index = NeighborIndex.build(ANGLE_IDS, unit_circle(ANGLES))
    path = tmp_path / "index.faiss"
    index.save(path)
    meta_path = tmp_path / "index.faiss.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "n": 6}))
    with pytest.raises(ValueError, match="disagree.*faiss index=5.*index.faiss.json=6"):
        NeighborIndex.load(path)
    (tmp_path / "index.faiss.ids.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.faiss\.ids\.parquet"):
        NeighborIndex.load(path)


def test_flat_equals_numpy_argsort_reference() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 24))
    ids = [f"r{i}" for i in range(len(X))]
    k = 8
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    ref_pos = np.argsort(-S, axis=1, kind="stable")[:, :k]
    ref_sims = np.take_along_axis(S, ref_pos, axis=1)

    pos, sims = NeighborIndex.build(ids, X).knn_positions(np.arange(len(X)), k)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    rows = np.arange(len(X))[:, None]
    # Equal positions, or a float32-vs-float64 near-tie swap at equal similarity.
    assert ((pos == ref_pos) | (np.abs(S[rows, pos] - S[rows, ref_pos]) < 1e-5)).all()
    assert (pos == ref_pos).mean() > 0.99

    pos2, sims2 = exact_knn(X, k)
    np.testing.assert_array_equal(pos2, pos)
    np.testing.assert_array_equal(sims2, sims)
    assert (exact_knn(X, k, exclude_self=False).neighbors[:, 0] == np.arange(len(X))).all()


def test_recall_at_k() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 1], [5, -1, -1, -1]])
    assert recall_at_k(approx, exact) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[1, 2]]), np.array([[2, -1]])) == 1.0


@pytest.fixture(scope="module")
def mixture_20k() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    X = gaussian_mixture(20_000, 64, centers=100, spread=1.0, seed=0)
    ids = [f"m{i}" for i in range(len(X))]
    queries = np.arange(0, len(X), 5)
    exact, _ = NeighborIndex.build(ids, X).knn_positions(queries, k=10)
    return ids, X, queries, exact


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_on_clustered_data(mixture_20k, kind: str) -> None:
    ids, X, queries, exact = mixture_20k
    index = NeighborIndex.build(ids, X, IndexConfig(kind=kind))
    pos, sims = index.knn_positions(queries, k=10)
    recall = recall_at_k(pos, exact)
    print(f"\n{kind} recall@10 vs flat on 20,000 x 64 mixture: {recall:.4f}")
    assert recall >= 0.9
    assert not (pos == queries[:, None]).any()


def test_ivf_nlist_default_and_determinism() -> None:
    assert IndexConfig().nlist_for(20_000) == 512  # 4*sqrt(n)=566 clipped to n//39
    assert IndexConfig().nlist_for(1_000_000) == 4000
    assert IndexConfig().nlist_for(10) == 1
    X = gaussian_mixture(3000, 16, centers=10, spread=1.0, seed=4)
    ids = [str(i) for i in range(len(X))]
    cfg = IndexConfig(kind="ivf", ivf_nprobe=2, seed=7)
    a = NeighborIndex.build(ids, X, cfg).knn_positions(np.arange(200), k=5)
    b = NeighborIndex.build(ids, X, cfg).knn_positions(np.arange(200), k=5)
    np.testing.assert_array_equal(a[1], b[1])


def test_missing_results_are_minus_one_and_minus_inf() -> None:
    # One probed list of many cannot always supply k+1 candidates.
    X = gaussian_mixture(2000, 16, centers=40, spread=0.3, seed=5)
    index = NeighborIndex.build([str(i) for i in range(len(X))], X, IndexConfig(kind="ivf", ivf_nlist=50, ivf_nprobe=1))
    pos, sims = index.knn_positions(np.arange(len(X)), k=100)
    assert (pos == -1).any()
    assert np.array_equal(pos == -1, sims == -np.inf)
    ids, _ = index.knn_ids([str(i) for i in range(len(X))], k=100)
    assert np.array_equal(pos == -1, ids == None)  # noqa: E711 (elementwise)


def _matrices() -> st.SearchStrategy[np.ndarray]:
    shapes = st.tuples(st.integers(2, 25), st.integers(1, 6))
    elements = st.floats(-100, 100, width=32, allow_subnormal=False)
    return shapes.flatmap(lambda s: arrays(np.float32, s, elements=elements))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(X=_matrices(), kind=st.sampled_from(KINDS), data=st.data())
def test_property_neighbours_exclude_self_sorted_and_bounded(X: np.ndarray, kind: str, data) -> None:
    assume((np.linalg.norm(X.astype(np.float64), axis=1) > 1e-3).all())
    n = X.shape[0]
    k = data.draw(st.integers(1, n - 1), label="k")
    index = NeighborIndex.build([f"i{j}" for j in range(n)], X, IndexConfig(kind=kind))
    pos, sims = index.knn_positions(np.arange(n), k)
    assert sims.shape == pos.shape == (n, k)
    assert not (pos == np.arange(n)[:, None]).any()
    found = pos >= 0
    assert (sims[found] >= -1 - 1e-5).all() and (sims[found] <= 1 + 1e-5).all()
    assert (np.diff(sims, axis=1) <= 0).all()
    # Positions in a row are distinct.
    sorted_pos = np.sort(np.where(found, pos, -np.arange(1, k + 1)), axis=1)
    assert (np.diff(sorted_pos, axis=1) != 0).all()
    if kind == "flat":
        assert found.all()
