"""Embedding store: a folder of Parquet shards.

Layout of an embedding folder::

    EMB_DIR/
      part-00000.parquet   id: string, embedding: fixed_size_list<float32>[d]
      part-00001.parquet   (file metadata: model, dim, normalized, created, version, modality)
      ...
      errors.csv           id,path,reason of the items that could not be embedded
      manifest.json        what the folder holds and how it was made (for resuming)
      text/                title embeddings, same layout, when embedded with --text-col

Every file is written to a temporary name in the same folder and renamed into
place (``os.replace`` is atomic on POSIX), so a crash never leaves a half
written shard that looks finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"


class StoreError(ValueError):
    """An embedding folder is missing, empty or inconsistent."""


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def embeddings_table(ids: np.ndarray | list[str], matrix: np.ndarray, metadata: dict | None = None) -> pa.Table:
    """Build the Arrow table of one shard (``id``, ``embedding``) with file metadata."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be 2-D; got shape {matrix.shape}")
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} embeddings")
    dim = matrix.shape[1]
    values = pa.array(matrix.reshape(-1), type=pa.float32())
    emb = pa.FixedSizeListArray.from_arrays(values, dim)
    table = pa.table({"id": pa.array([str(i) for i in ids], type=pa.string()), "embedding": emb})
    meta = {"dim": str(dim), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return table.replace_schema_metadata({k.encode(): str(v).encode() for k, v in meta.items()})


def write_shard(path: str | os.PathLike, ids: np.ndarray | list[str], matrix: np.ndarray, metadata: dict | None = None) -> Path:
    """Write one shard atomically."""
    table = embeddings_table(ids, matrix, metadata)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def list_shards(path: str | os.PathLike) -> list[Path]:
    """The shard files of an embedding folder, in order (or the file itself)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise StoreError(f"{p}: embedding folder not found (make one with `simlabel embed CATALOG --out {p}`)")
    return sorted(f for f in p.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}") if not f.name.startswith("."))


def read_metadata(path: str | os.PathLike) -> dict:
    """The file metadata of an embedding folder's first shard, decoded."""
    shards = list_shards(path)
    if not shards:
        raise StoreError(f"{path}: no embedding shards ({SHARD_PREFIX}*{SHARD_SUFFIX}) in it")
    raw = pq.read_schema(shards[0]).metadata or {}
    meta: dict = {}
    for k, v in raw.items():
        key = k.decode()
        if key.startswith("ARROW:") or key == "pandas":
            continue
        text = v.decode()
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            meta[key] = text
    return meta


def _table_matrix(table: pa.Table, source: Path) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        raise StoreError(f"{source}: column 'embedding' must be fixed_size_list<float32>; got {col.type}")
    dim = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(col), dim)


def iter_embeddings(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids, matrix)`` per shard, so a huge store never needs to fit in memory."""
    for shard in list_shards(path):
        table = pq.read_table(shard, columns=["id", "embedding"])
        yield table.column("id").to_numpy(zero_copy_only=False).astype(object), _table_matrix(table, shard)


def load_embeddings(path: str | os.PathLike, *, ids: list[str] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load an embedding folder (or one Parquet file) as ``(ids, matrix)``.

    ``ids`` is an object array of strings, ``matrix`` a ``(n, d) float32`` array,
    rows in shard order. With ``ids=`` the rows are returned in that order and an
    unknown id raises ``KeyError`` naming it.
    """
    parts = list(iter_embeddings(path))
    if not parts:
        raise StoreError(f"{path}: no embedding shards in it")
    dims = {m.shape[1] for _, m in parts if len(m)}
    if len(dims) > 1:
        raise StoreError(f"{path}: shards have different dimensions {sorted(dims)}")
    all_ids = np.concatenate([i for i, _ in parts]) if parts else np.array([], dtype=object)
    dim = dims.pop() if dims else parts[0][1].shape[1]
    matrix = np.concatenate([m.reshape(-1, dim) for _, m in parts], axis=0)
    if ids is None:
        return all_ids, matrix
    import pandas as pd

    index = pd.Index(all_ids)
    pos = index.get_indexer(pd.Index([str(i) for i in ids]))
    if (pos < 0).any():
        unknown = [str(ids[i]) for i in np.flatnonzero(pos < 0)[:5]]
        raise KeyError(f"{path}: {int((pos < 0).sum())} id(s) have no embedding, e.g. {', '.join(unknown)}")
    return np.asarray([str(i) for i in ids], dtype=object), matrix[pos]
