from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.errors import MissingIdsError, StoreError
from simlabel.store import (
    Embeddings,
    as_embeddings,
    load_embeddings,
    read_metadata,
    shard_name,
    write_shard,
)


def test_round_trip_schema_and_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((5, 7)).astype(np.float32)
    write_shard(tmp_path / shard_name(0), ["a", "b", "c", "d", "e"], m, {"model": "toy", "normalized": True})
    schema = pq.read_schema(tmp_path / shard_name(0))
    assert schema.field("id").type == pa.string()
    vector = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(vector) and vector.list_size == 7 and vector.value_type == pa.float32()
    # no nulls stored: Parquet keeps no definition levels, which makes a shard 3x faster to read
    assert not vector.value_field.nullable and not schema.field("embedding").nullable and not schema.field("id").nullable
    meta = read_metadata(tmp_path)
    assert meta["model"] == "toy" and meta["dim"] == 7 and meta["normalized"] is True and "created" in meta
    ids, x = load_embeddings(tmp_path)
    assert list(ids) == ["a", "b", "c", "d", "e"]
    assert x.dtype == np.float32 and np.array_equal(x, m)
    # no temporary files left behind by the atomic write
    assert [p.name for p in tmp_path.iterdir()] == [shard_name(0)]


def test_shards_concatenate_in_order_and_ids_select(tmp_path: Path) -> None:
    write_shard(tmp_path / shard_name(1), ["c"], np.full((1, 2), 3, np.float32))
    write_shard(tmp_path / shard_name(0), ["a", "b"], np.array([[1, 1], [2, 2]], np.float32))
    ids, x = load_embeddings(tmp_path)
    assert list(ids) == ["a", "b", "c"] and x[:, 0].tolist() == [1, 2, 3]
    ids, x = load_embeddings(tmp_path, ids=["c", "a"])
    assert list(ids) == ["c", "a"] and x[:, 0].tolist() == [3, 1]
    with pytest.raises(MissingIdsError, match=r"1 id\(s\) have no embedding: 'zz'") as err:
        load_embeddings(tmp_path, ids=["a", "zz"])
    assert str(tmp_path) in str(err.value) and err.value.missing == ["zz"]
    assert isinstance(err.value, KeyError) and not str(err.value).startswith('"')  # no KeyError quotes


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        load_embeddings(tmp_path / "nope")
    with pytest.raises(StoreError, match="no embedding shards"):
        load_embeddings(tmp_path)


def test_mismatched_dims_rejected(tmp_path: Path) -> None:
    write_shard(tmp_path / shard_name(0), ["a"], np.ones((1, 2), np.float32))
    write_shard(tmp_path / shard_name(1), ["b"], np.ones((1, 3), np.float32))
    with pytest.raises(StoreError, match="different dimensions"):
        load_embeddings(tmp_path)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), d=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, n: int, d: int, seed: int) -> None:
    folder = tmp_path_factory.mktemp("rt")
    m = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    ids = [f"id{i}" for i in range(n)]
    write_shard(folder / shard_name(0), ids, m)
    got_ids, got = load_embeddings(folder)
    assert list(got_ids) == ids and got.shape == (n, d) and np.array_equal(got, m)


def test_embeddings_is_a_value_with_rows_positions_and_meta(tmp_path: Path) -> None:
    import pickle

    write_shard(tmp_path / shard_name(0), ["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2), {"model": "toy"})
    emb = load_embeddings(tmp_path)
    ids, X = emb  # unpacks as (ids, matrix), as before
    assert isinstance(emb, tuple) and len(emb) == 2 and emb.meta["model"] == "toy" and emb.meta["path"] == str(tmp_path)
    assert emb.dim == 2 and emb.source == str(tmp_path)
    assert emb.positions(["c", "a"]).tolist() == [2, 0]
    sub = emb.rows(["c", "a"])
    assert sub.ids.tolist() == ["c", "a"] and sub.matrix[:, 0].tolist() == [4, 0] and sub.meta["model"] == "toy"
    assert emb.has(["a", "zz"]).tolist() == [True, False]
    assert emb.rows(["zz", "b", "yy"], missing="drop").ids.tolist() == ["b"]
    with pytest.raises(MissingIdsError, match=r"2 id\(s\) have no embedding: 'zz', 'yy'"):
        emb.rows(["zz", "b", "yy"])
    with pytest.raises(ValueError, match="missing must be"):
        emb.rows(["a"], missing="ignore")
    with pytest.raises(TypeError, match="not one str"):
        emb.positions("a")
    # a value survives pickling (process pools, Ray) with its metadata, and as_embeddings passes it through
    back = pickle.loads(pickle.dumps(emb))
    assert back.meta == emb.meta and np.array_equal(back.matrix, X) and back.ids.tolist() == ids.tolist()
    assert as_embeddings(emb) is emb
    assert np.array_equal(as_embeddings(tmp_path).matrix, X)
    assert emb._replace(ids=np.array(["x", "y", "z"], dtype=object)).meta["model"] == "toy"
    plain = as_embeddings((["p", "q"], np.eye(2)))
    assert isinstance(plain, Embeddings) and plain.matrix.dtype == np.float32


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_rows_of_a_permutation_is_the_permuted_matrix(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = Embeddings([f"id{i}" for i in range(n)], rng.normal(size=(n, 3)).astype(np.float32), {"path": "mem"})
    perm = rng.permutation(n)
    sub = emb.rows(emb.ids[perm])
    assert np.array_equal(sub.matrix, emb.matrix[perm]) and sub.ids.tolist() == emb.ids[perm].tolist()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(lambda s: sum(s) > 0), a=st.integers(0, 200), b=st.integers(0, 200),
       seed=st.integers(0, 1000))
def test_open_store_reads_row_ranges_across_shards(tmp_path_factory: pytest.TempPathFactory, sizes, a, b, seed) -> None:
    from simlabel.store import open_store

    tmp = tmp_path_factory.mktemp("rows")
    n = sum(sizes)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    ids = np.array([f"i{j}" for j in range(n)], dtype=object)
    at = 0
    for s, size in enumerate(sizes):
        write_shard(tmp / f"part-{s:05d}.parquet", ids[at:at + size], X[at:at + size], {"model": "m", "dim": 4})
        at += size
    rows = open_store(tmp)
    loaded = load_embeddings(tmp)
    assert rows.ids.tolist() == loaded.ids.tolist() and rows.fingerprint == loaded.fingerprint and len(rows) == n
    start, stop = sorted((a % (n + 1), b % (n + 1)))
    assert np.array_equal(rows.read(start, stop), X[start:stop])
    pick = np.sort(rng.choice(n, size=min(n, 7), replace=False))
    assert np.array_equal(rows.take(pick), X[pick])
    for size in (1, 9, 1000):  # shards cut or joined, each read once: the blocks are the rows, in order
        blocks = list(rows.blocks(size))
        assert np.array_equal(np.concatenate([m for _, m in blocks]), X)
        assert [s for s, _ in blocks] == list(np.cumsum([0] + [len(m) for _, m in blocks[:-1]]))
        assert all(0 < len(m) < 2 * size + 40 for _, m in blocks)


def test_open_store_refuses_what_load_embeddings_refuses(tmp_path: Path) -> None:
    import json

    from simlabel.store import open_store

    X = np.eye(3, dtype=np.float32)
    write_shard(tmp_path / "dup" / "part-00000.parquet", ["a", "b", "c"], X, {"model": "m"})
    write_shard(tmp_path / "dup" / "part-00001.parquet", ["c"], X[:1], {"model": "m"})
    with pytest.raises(StoreError, match=r"id 'c' is in more than one row \(part-00000.parquet, part-00001.parquet"):
        open_store(tmp_path / "dup")
    write_shard(tmp_path / "half" / "part-00000.parquet", ["a", "b", "c"], X, {"model": "m"})
    (tmp_path / "half" / "manifest.json").write_text(json.dumps({"n_items": 6, "shard_size": 3}))
    with pytest.raises(StoreError, match="incomplete embedding store: 1 of 2 shards written"):
        open_store(tmp_path / "half")
    assert len(open_store(tmp_path / "half", allow_partial=True)) == 3


def test_the_store_owns_its_files_formats(tmp_path: Path) -> None:
    from simlabel.store import (
        ERRORS,
        ERRORS_DIR,
        MANIFEST,
        SUMMARY,
        clear_store,
        errors_csv_text,
        merge_errors,
        read_error_rows,
        read_manifest,
        write_manifest,
        write_summary,
    )

    rows = [["a", "x/a.jpg", "missing"], ["b,c", 'y/"b".jpg', "corrupt"]]  # commas and quotes survive
    (tmp_path / ERRORS_DIR).mkdir()
    (tmp_path / ERRORS_DIR / "part-00001.csv").write_text(errors_csv_text(rows[1:]), encoding="utf-8")
    (tmp_path / ERRORS_DIR / "part-00000.csv").write_text(errors_csv_text(rows[:1]), encoding="utf-8")
    path, n = merge_errors(tmp_path)
    assert path == tmp_path / ERRORS and n == 2 and read_error_rows(path) == rows  # shard order
    write_manifest(tmp_path, {"n_items": 2})
    write_summary(tmp_path, {"n_failed": 2})
    assert read_manifest(tmp_path) == {"n_items": 2} and (tmp_path / SUMMARY).is_file()
    clear_store(tmp_path)
    assert not any((tmp_path / f).exists() for f in (ERRORS, ERRORS_DIR, MANIFEST, SUMMARY))
