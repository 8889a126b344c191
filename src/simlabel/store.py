"""Embedding store: a folder of Parquet shards, and the :class:`Embeddings` value it loads as.

Layout of an embedding folder::

    EMB_DIR/
      part-00000.parquet   id: string, embedding: fixed_size_list<float32>[d]
      part-00001.parquet   (file metadata: model, dim, normalized, created, version, modality)
      ...
      errors.csv           id,path,reason of the items that could not be embedded
      manifest.json        what the folder holds and how it was made (for resuming)
      text/                title embeddings, same layout, when embedded with --text-col

Every file is written to a temporary name in the same folder and renamed into
place (:mod:`simlabel.files`), so a crash never leaves a half written shard that
looks finished.

Loaded, a folder is an :class:`Embeddings` value: ``(ids, matrix)`` plus its metadata.
Every function that takes an embedding folder also takes a loaded value, through
:func:`as_embeddings`, so a caller that needs the same store twice reads it once.

Only a complete store loads: a folder whose ``manifest.json`` names shards that are not
there (an ``embed`` that was killed, or is still running) is refused with the counts and
the command that finishes it, unless ``allow_partial=True`` (``--allow-partial``).

Provenance. A loaded value carries two keys every artifact made from it records:
``space`` (model, model version, width, modality: embeddings of one space can be compared
and scored by one head) and ``fingerprint`` (the space plus the ids in order: an index or
a graph is only valid for the very same rows).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simlabel.context import ALLOW_PARTIAL
from simlabel.errors import InputError, MissingIdsError, StoreError
from simlabel.files import atomic_write
from simlabel.remote import is_url, local_copy

SHARD_PREFIX = "part-"
SHARD_SUFFIX = ".parquet"



def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}{SHARD_SUFFIX}"


#: the shards of ``embed(..., append=True)``: ``part-x<generation>-<k>.parquet``, after the first job's in order
APPEND_PREFIX = "part-x"


def append_shard_name(generation: int, index: int) -> str:
    return f"{APPEND_PREFIX}{generation:04d}-{index:05d}{SHARD_SUFFIX}"


def embeddings_table(ids: np.ndarray | list[str], matrix: np.ndarray, metadata: dict | None = None) -> pa.Table:
    """Build the Arrow table of one shard (``id``, ``embedding``) with file metadata."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise InputError(f"embeddings must be 2-D; got shape {matrix.shape}")
    if len(ids) != matrix.shape[0]:
        raise InputError(f"{len(ids)} ids for {matrix.shape[0]} embeddings")
    dim = matrix.shape[1]
    # not nullable: a shard has no missing id or value, and Parquet then stores no definition levels to decode
    vector = pa.list_(pa.field("item", pa.float32(), nullable=False), dim)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), type=vector)
    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("embedding", vector, nullable=False)])
    table = pa.table({"id": pa.array([str(i) for i in ids], type=pa.string()), "embedding": emb}, schema=schema)
    meta = {"dim": str(dim), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return table.replace_schema_metadata({k.encode(): str(v).encode() for k, v in meta.items()})


#: how a shard's columns are written: the vectors plain, with neither compression nor a dictionary (zstd saves
#: 8% of unit float32 vectors, a dictionary nothing), so a memory-mapped read hands them over without decoding
#: into fresh memory: 0.14 s against 0.5-0.7 s per 131k x 384 shard, and the graph reads a store in passes
SHARD_WRITE = {"compression": {"id": "zstd", "embedding": "none"}, "use_dictionary": False}


def write_shard(path: str | os.PathLike, ids: np.ndarray | list[str], matrix: np.ndarray, metadata: dict | None = None) -> Path:
    """Write one shard atomically."""
    table = embeddings_table(ids, matrix, metadata)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, **SHARD_WRITE))


def write_quality(path: str | os.PathLike, ids: Sequence[str], quality: np.ndarray, content_hash: Sequence[bytes | None],
                  pixel_hash: Sequence[bytes], fields: Sequence[str], version: int) -> Path:
    """Write one shard's image-quality file atomically: ``id``, one column per field, the hashes in hex
    (``content_hash``: the file's bytes, empty where not computed; ``pixel_hash``: the decoded pixels'
    :func:`simlabel.quality.pixel_signature`, their digest then their perceptual hash) and the
    ``quality_version`` the measures were taken by (a reader refuses other versions' measures)."""
    q = np.asarray(quality, dtype=np.float32).reshape(len(ids), len(fields))
    cols = {"id": pa.array([str(i) for i in ids], pa.string())}
    cols.update({f: pa.array(q[:, j]) for j, f in enumerate(fields)})
    cols["content_hash"] = pa.array([h.hex() if h else "" for h in content_hash], pa.string())
    cols["pixel_hash"] = pa.array([h.hex() for h in pixel_hash], pa.string())
    cols["quality_version"] = pa.array(np.full(len(ids), version, dtype=np.int32))
    table = pa.table(cols)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_quality(path: str | os.PathLike) -> pd.DataFrame:
    """The image-quality measures an embedding folder recorded while it decoded (:mod:`simlabel.quality`), one row
    per embedded image, in shard order; empty (with an ``id`` column) where none were recorded."""
    files = sorted((Path(path) / QUALITY_DIR).glob("*.parquet"))
    if not files:
        return pd.DataFrame({"id": pd.Series(dtype=str)})
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def list_shards(path: str | os.PathLike) -> list[Path]:
    """The shard files of an embedding folder, in order (or the file itself)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise StoreError(f"{p}: embedding folder not found (make one with `simlabel embed CATALOG --out {p}`)")
    return sorted(f for f in p.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}") if not f.name.startswith("."))


def read_metadata(path: str | os.PathLike) -> dict:
    """The file metadata of an embedding folder's first shard, decoded.

    Each shard records what made it (``model``, ``model_version``, ``dim``, ``modality``,
    ``normalized``, ``source_column``, ``created`` ...); this reads them without reading any
    vector. Values that parse as JSON are decoded (``dim`` an ``int``, ``normalized`` a
    ``bool``); the others stay strings.

    Parameters
    ----------
    path : str or os.PathLike
        An embedding folder written by ``simlabel embed``, or a single shard file.

    Returns
    -------
    dict
        The metadata keys and values (Arrow's and pandas' own keys left out).

    Raises
    ------
    StoreError
        No such folder, or no shards in it.

    Examples
    --------
    >>> from simlabel import read_metadata
    >>> meta = read_metadata("emb/")  # doctest: +SKIP
    >>> meta["model"], meta["dim"], meta["modality"]  # doctest: +SKIP
    ('efficientnet-lite0', 1280, 'image')
    """
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


MANIFEST = "manifest.json"
#: the items that could not be embedded (``id,path,reason``), merged from :data:`ERRORS_DIR`'s per-shard files
ERRORS = "errors.csv"
#: one ``id,path,reason`` file per shard, written with the shard (so a resumed job keeps them)
ERRORS_DIR = "_errors"
#: one Parquet file of per-image quality measures per shard (``simlabel.quality``), written before the shard
QUALITY_DIR = "_quality"
#: what the last run did (counts, time, items/s, the engine)
SUMMARY = "summary.json"
#: the shards of ``retry_failed`` runs: ``part-r0000.parquet`` ...
RETRY_PREFIX = "part-r"


def errors_csv_text(rows: Sequence[Sequence[str]]) -> str:
    """``id,path,reason`` rows as the text of an errors file (with its header)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "path", "reason"])
    w.writerows(rows)
    return buf.getvalue()


def read_error_rows(path: str | os.PathLike) -> list[list[str]]:
    """The ``id,path,reason`` rows of an errors file (its header left out)."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return [r for r in list(csv.reader(fh))[1:] if r]


def merge_errors(out: str | os.PathLike) -> tuple[Path, int]:
    """Write :data:`ERRORS` from the per-shard files of :data:`ERRORS_DIR`; its path and row count."""
    from simlabel.files import atomic_write_text

    out = Path(out)
    rows = [r for f in sorted((out / ERRORS_DIR).glob("*.csv")) for r in read_error_rows(f)]
    atomic_write_text(out / ERRORS, errors_csv_text(rows))
    return out / ERRORS, len(rows)


def read_manifest(out: str | os.PathLike) -> dict:
    """A store's :data:`MANIFEST` (an error naming the file when it is broken)."""
    from simlabel.files import read_json

    return read_json(Path(out) / MANIFEST, "embedding manifest")


def write_manifest(out: str | os.PathLike, manifest: dict) -> None:
    """Write a store's :data:`MANIFEST` atomically."""
    from simlabel.files import atomic_write_json

    atomic_write_json(Path(out) / MANIFEST, manifest)


def write_summary(out: str | os.PathLike, summary: dict) -> None:
    """Write a store's :data:`SUMMARY` atomically."""
    from simlabel.files import atomic_write_json

    atomic_write_json(Path(out) / SUMMARY, summary)


def clear_store(out: str | os.PathLike) -> None:
    """Remove what a store's files are (shards, manifest, errors, summary), to start it again."""
    import shutil

    out = Path(out)
    for f in list_shards(out) if out.is_dir() else []:
        f.unlink()
    for name in (MANIFEST, ERRORS, SUMMARY):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ERRORS_DIR, ignore_errors=True)
    shutil.rmtree(out / QUALITY_DIR, ignore_errors=True)


def recorded_engine(path: str | os.PathLike) -> dict | None:
    """The engine a store was started with (its manifest's ``engine``: ``backend``, ``precision``, ``calibration``),
    ``{"backend": "onnx", "precision": "fp32"}`` for a store started before engines were chosen, or ``None`` where
    there is no manifest (a new store) or it cannot be read (the job's own checks report that)."""
    import json

    man = Path(path) / MANIFEST
    if not man.exists():
        return None
    try:
        recorded = json.loads(man.read_text()).get("engine")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded or {"backend": "onnx", "precision": "fp32"}





def embedding_space(meta: dict, dim: int) -> str:
    """``model|model_version|dim|modality``: embeddings of one space are comparable."""
    return "|".join(str(meta.get(k, "?")) for k in ("model", "model_version")) + f"|{dim}|{meta.get('modality', '?')}"


def ids_digest(ids: Sequence[str] | np.ndarray) -> str:
    """sha256 of the ids in order, 16 hex digits."""
    h = hashlib.sha256()
    for start in range(0, len(ids), 65536):
        h.update("\n".join(map(str, ids[start : start + 65536])).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def fingerprint_of(space: str, ids: Sequence[str] | np.ndarray) -> str:
    """The space and the ids in order, 16 hex digits: what an index or graph over these rows records."""
    return hashlib.sha256(f"{space}|{ids_digest(ids)}".encode()).hexdigest()[:16]


def grew_into(ids: Sequence[str] | np.ndarray, space: str | None, emb: "Embeddings") -> bool:
    """Whether rows ``ids`` of ``space`` (what a graph or index was built from) are an earlier version of ``emb``:
    the same space, every row still there, and more rows now (``embed(..., append=True)``)."""
    return (space == emb.space and len(emb.ids) > len(ids)
            and bool(pd.Index(np.asarray(ids).astype(str)).isin(emb.ids.astype(str)).all()))


def _refuse_duplicates(path: str | os.PathLike, shards: Sequence[Path], per_shard: Sequence[np.ndarray]) -> np.ndarray:
    """The ids of all shards in order; an id in more than one row is an error naming its shards."""
    all_ids = np.concatenate(per_shard) if per_shard else np.empty(0, dtype=object)
    dup = pd.Index(all_ids).duplicated()
    if dup.any():
        first = str(all_ids[int(np.flatnonzero(dup)[0])])
        where = [s.name for s, i in zip(shards, per_shard) if first in set(i)]
        raise StoreError(f"{path}: id {first!r} is in more than one row ({', '.join(where)}; {int(dup.sum())} duplicated rows in all)")
    return all_ids


def readable(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` itself, or for a URL (``s3://bucket/run/emb``) the local copy of what it published
    (:func:`simlabel.remote.local_copy`): every reader of a store opens it through here."""
    return local_copy(path) if is_url(path) else path


def check_complete(path: str | os.PathLike) -> dict | None:
    """Refuse an embedding folder whose manifest names shards that are not written.

    Returns the manifest (``None`` for a folder without one, e.g. shards written by hand).
    """
    folder = Path(readable(path))
    man = folder / MANIFEST
    if not folder.is_dir() or not man.exists():
        return None
    from simlabel.files import read_json

    m = read_json(man, "embedding manifest")
    try:
        n, size = int(m["n_items"]), int(m["shard_size"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"{man}: not an embedding manifest (no n_items / shard_size)") from None
    expected = [shard_name(s) for s in range(max(1, -(-n // size)))] if n else []
    expected += [name for record in m.get("appends", []) for name in record.get("shards", [])]
    present = {p.name for p in list_shards(folder)}
    missing = [e for e in expected if e not in present]
    if missing:
        done = len(expected) - len(missing)
        rows = sum(pq.ParquetFile(folder / e).metadata.num_rows for e in expected if e in present)
        source = m.get("catalog") or "CATALOG"
        raise StoreError(
            f"{folder}: incomplete embedding store: {done} of {len(expected)} shards written ({rows:,} of {n:,} rows); "
            f"the embed job was interrupted or is still running. Finish it with `simlabel embed {source} --out {folder}` "
            "(the same command resumes), or pass `allow_partial` to read what is there"
        )
    return m


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
        try:
            table = pq.read_table(shard, columns=["id", "embedding"], memory_map=True)
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise StoreError(f"{shard}: not an embedding shard ({e})") from None
        if not pa.types.is_string(table.schema.field("id").type) and not pa.types.is_large_string(table.schema.field("id").type):
            raise StoreError(f"{shard}: column 'id' must be string; got {table.schema.field('id').type}")
        yield table.column("id").to_numpy(zero_copy_only=False).astype(object), _table_matrix(table, shard)


Missing = Literal["raise", "drop"]


class _Provenance:
    """``space``, ``fingerprint`` and ``source`` of rows that carry ``ids``, ``meta`` and ``dim``: what
    :class:`Embeddings` and :class:`StoreRows` both record in the artifacts made from them."""

    @property
    def space(self) -> str:
        """Model, model version, width and modality (:func:`embedding_space`)."""
        return self.meta.get("space") or embedding_space(self.meta, self.dim)

    @property
    def fingerprint(self) -> str:
        """The space and the ids in order: what an index or graph over these rows must match."""
        fp = self.meta.get("fingerprint")
        if fp is None:
            fp = self.meta["fingerprint"] = fingerprint_of(self.space, self.ids)
        return fp

    @property
    def source(self) -> str:
        """Where these embeddings came from (the folder, or ``"embeddings"``), for messages."""
        return str(self.meta.get("path") or "embeddings")


class _EmbeddingsFields(NamedTuple):
    ids: np.ndarray
    matrix: np.ndarray


class Embeddings(_EmbeddingsFields, _Provenance):
    """A loaded embedding store: ids, their vectors in the same order, and where they came from.

    A NamedTuple of ``(ids, matrix)``, so ``ids, X = load_embeddings(path)`` keeps
    working; ``meta`` travels beside the two fields (and through :meth:`rows`).
    Usually made by :func:`load_embeddings` or :func:`as_embeddings`.

    Parameters
    ----------
    ids : numpy.ndarray or Sequence of str
        ``(n,)`` ids; a sequence that is not an array is made an object array of ``str``
        (an array is kept as it is).
    matrix : numpy.ndarray
        ``(n, d)`` vectors (float32 when loaded), row ``i`` the embedding of ``ids[i]``;
        kept as it is.
    meta : dict, optional
        The shards' metadata (``model``, ``model_version``, ``dim``, ``modality`` ...) and
        ``path``, the folder it came from; copied.

    Attributes
    ----------
    dim : int
        The vector width ``d``.
    space : str
        Model, model version, width and modality: embeddings of one space are comparable.
    fingerprint : str
        The space and the ids in order: what an index or graph over these rows records and
        must match.
    source : str
        Where these embeddings came from (the folder, or ``"embeddings"``), for messages.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings
    >>> emb = Embeddings(["a", "b", "c"], np.eye(3, dtype=np.float32), {"path": "mem"})
    >>> ids, X = emb
    >>> ids, X.shape, emb.dim
    (array(['a', 'b', 'c'], dtype=object), (3, 3), 3)
    >>> emb.rows(["c", "a"]).matrix
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    >>> emb.rows(["c", "x"], missing="drop").ids
    array(['c'], dtype=object)
    """

    meta: dict

    def __new__(cls, ids: np.ndarray | Sequence[str], matrix: np.ndarray, meta: dict | None = None) -> "Embeddings":
        ids = np.asarray([str(i) for i in ids], dtype=object) if not isinstance(ids, np.ndarray) else ids
        self = super().__new__(cls, ids, matrix)
        self.meta = dict(meta or {})
        self._id_index = None
        return self

    def __reduce__(self) -> tuple:  # pickling (Ray, multiprocessing) keeps meta
        return (Embeddings, (self.ids, self.matrix, self.meta))

    def _replace(self, **changes) -> "Embeddings":
        meta = changes.pop("meta", self.meta)
        return Embeddings(changes.get("ids", self.ids), changes.get("matrix", self.matrix), meta)

    @property
    def dim(self) -> int:
        """The vector width ``d``."""
        return int(self.matrix.shape[1])

    def _index(self) -> pd.Index:
        # Built on first use and kept: hashing a million ids takes a moment.
        if self._id_index is None:
            self._id_index = pd.Index(self.ids, dtype=object)
        return self._id_index

    def has(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """``(m,)`` bool: which of ``ids`` have an embedding."""
        return self._index().get_indexer(pd.Index([str(i) for i in ids], dtype=object)) >= 0

    def positions(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` (int64, in the order asked).

        Raises
        ------
        MissingIdsError
            Naming the ids that have no embedding and the folder.
        """
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of str, not one str; wrap it in a list")
        query = [str(i) for i in ids]
        pos = self._index().get_indexer(pd.Index(query, dtype=object))
        if (pos < 0).any():
            raise MissingIdsError([query[i] for i in np.flatnonzero(pos < 0)], self.source, "id(s) have no embedding")
        return pos.astype(np.int64)

    def rows(self, ids: Sequence[str] | np.ndarray, missing: Missing = "raise") -> "Embeddings":
        """The embeddings of ``ids``, in that order.

        ``missing="raise"`` (default) raises :class:`~simlabel.errors.MissingIdsError` for an
        id without an embedding; ``"drop"`` leaves such ids out (the result's ``ids`` say
        which were kept).
        """
        if missing not in ("raise", "drop"):
            raise InputError(f"missing must be 'raise' or 'drop'; got {missing!r}")
        if missing == "drop":
            keep = self.has(ids)
            ids = [str(i) for i, k in zip(ids, keep) if k]
        pos = self.positions(ids)
        # the rows are another set of ids: same space, other fingerprint
        meta = {k: v for k, v in self.meta.items() if k != "fingerprint"}
        return Embeddings(self.ids[pos], self.matrix[pos], {**meta, "space": self.space})


def _store_meta(path: str | os.PathLike, dim: int) -> dict:
    """A folder's shard metadata, its path and its space: the ``meta`` of what it loads or opens as."""
    meta = {**read_metadata(path), "path": str(path)}
    meta["space"] = embedding_space(meta, dim)
    return meta


def load_embeddings(
    path: str | os.PathLike, *, ids: Sequence[str] | np.ndarray | None = None, allow_partial: bool | None = None
) -> Embeddings:
    """Load an embedding folder (or one Parquet shard) as an :class:`Embeddings` value.

    Only a complete store loads: a folder whose ``manifest.json`` names shards that are not
    written (an ``embed`` that was killed, or is still running) is refused with the counts
    and the command that finishes it, unless ``allow_partial``.

    Parameters
    ----------
    path : str or os.PathLike
        A folder written by ``simlabel embed`` (or a single shard file), or the URL of one published on object
        storage (``s3://bucket/run/emb``: read through a local copy of its published files, :mod:`simlabel.remote`).
    ids : Sequence of str or numpy.ndarray, optional
        Return these rows, in this order; an id without an embedding raises
        :class:`~simlabel.errors.MissingIdsError` naming it and the folder.
    allow_partial : bool, optional
        Read a store whose embed job has not finished (otherwise an error says how far it got).
        ``None``: as set by :func:`simlabel.context.modes` (off by default).

    Returns
    -------
    Embeddings
        ``ids`` an object array of ``str``, ``matrix`` ``(n, d)`` float32 in shard order,
        ``meta`` the shards' metadata with the folder's ``path``.

    Raises
    ------
    StoreError
        No such folder, no shards in it, an unfinished store, a file that is not an
        embedding shard, shards of different widths, or an id in more than one row.
    MissingIdsError
        An id of ``ids`` that has no embedding.

    Examples
    --------
    >>> from simlabel import load_embeddings
    >>> emb = load_embeddings("emb/")  # doctest: +SKIP
    >>> ids, X = emb  # doctest: +SKIP
    >>> sub = load_embeddings("emb/", ids=["sku-1", "sku-7"])  # those two rows, in that order  # doctest: +SKIP
    """
    path = readable(path)
    if not (ALLOW_PARTIAL.get() if allow_partial is None else allow_partial):
        check_complete(path)
    shards = list_shards(path)
    if not shards:
        raise StoreError(f"{path}: no embedding shards in it")
    # each shard is copied into one matrix sized from the files' footers: a store is held once, not twice (the
    # shards and their concatenation)
    try:
        total = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{path}: a shard is not a Parquet file ({e})") from None
    per_shard, matrix, at, dims = [], None, 0, set()
    for shard_ids, m in iter_embeddings(path):
        per_shard.append(shard_ids)
        if len(m):
            dims.add(m.shape[1])
            if len(dims) > 1:
                raise StoreError(f"{path}: shards have different dimensions {sorted(dims)}")
        if matrix is None or (at == 0 and len(m)):
            matrix = np.empty((total, m.shape[1]), dtype=np.float32)
        matrix[at:at + len(m)] = m
        at += len(m)
    all_ids = _refuse_duplicates(path, shards, per_shard)
    # Arrow keeps the pages it read the shards into for its next allocation; nothing else here will use them
    pa.default_memory_pool().release_unused()
    dim = matrix.shape[1]
    emb = Embeddings(all_ids, matrix[:at], _store_meta(path, dim))
    return emb if ids is None else emb.rows(ids)


class StoreRows(_Provenance):
    """An embedding store opened without reading its vectors: the ids, the provenance of
    :class:`Embeddings` (``space``, ``fingerprint``, ``source``) and row ranges read on demand,
    so a job over a store larger than memory holds one block at a time.

    Made by :func:`open_store` (a folder) or :meth:`from_embeddings` (a loaded value).
    """

    def __init__(self, ids: np.ndarray, meta: dict, dim: int, shards: Sequence[Path] = (),
                 counts: Sequence[int] = (), matrix: np.ndarray | None = None) -> None:
        self.ids, self.meta, self.dim = ids, meta, int(dim)
        self.shards = list(shards)
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)
        self._matrix = matrix

    @classmethod
    def from_embeddings(cls, emb: Embeddings) -> "StoreRows":
        return cls(emb.ids, {**emb.meta, "space": emb.space, "fingerprint": emb.fingerprint}, emb.dim, matrix=emb.matrix)

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a ``(stop - start, d)`` float32 matrix (only the shards they span are read)."""
        if self._matrix is not None:
            return self._matrix[start:stop]
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts, at = [], start
        for s in range(max(first, 0), len(self.shards)):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            if lo >= stop:
                break
            table = pq.read_table(self.shards[s], columns=["embedding"], memory_map=True)
            parts.append(_table_matrix(table, self.shards[s])[max(at, lo) - lo : min(stop, hi) - lo])
            at = hi
        return np.concatenate(parts, axis=0) if parts else np.empty((0, self.dim), dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at sorted positions ``rows`` (a training or recall sample), read shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._matrix is not None:
            return self._matrix[rows]
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            m = _table_matrix(pq.read_table(self.shards[s], columns=["embedding"], memory_map=True), self.shards[s])
            out[sel] = m[rows[sel] - self.offsets[s]]
        return out

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` blocks of about ``size`` rows, in order, each shard read once: a shard larger
        than ``size`` is cut into blocks of ``size``, smaller ones are joined up to ``size`` (so a pass over
        a store of 1,024-row shards makes few large blocks, and one of large shards reads each once)."""
        if self._matrix is not None:
            for start in range(0, len(self), size):
                yield start, self._matrix[start:start + size]
            return
        pending: list[np.ndarray] = []
        at = 0
        for shard in self.shards:
            m = _table_matrix(pq.read_table(shard, columns=["embedding"], memory_map=True), shard)
            for a in range(0, len(m), size):
                pending.append(m[a:a + size])
                if sum(len(p) for p in pending) >= size:
                    block = pending[0] if len(pending) == 1 else np.concatenate(pending)
                    yield at, block
                    at, pending = at + len(block), []
        if pending:
            yield at, np.concatenate(pending)


def open_store(emb: "str | os.PathLike | Embeddings", *, allow_partial: bool | None = None) -> StoreRows:
    """Open an embedding folder as :class:`StoreRows` (its ids and provenance, the vectors left on
    disk), with the checks of :func:`load_embeddings`; a loaded value is wrapped as it is."""
    if isinstance(emb, Embeddings):
        return StoreRows.from_embeddings(emb)
    emb = readable(emb)
    if not (ALLOW_PARTIAL.get() if allow_partial is None else allow_partial):
        check_complete(emb)
    shards = list_shards(emb)
    if not shards:
        raise StoreError(f"{emb}: no embedding shards in it")
    ids, counts, dims = [], [], set()
    for shard in shards:
        try:
            f = pq.ParquetFile(shard)
            field_ = f.schema_arrow.field("embedding")
            table = f.read(columns=["id"])
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise StoreError(f"{shard}: not an embedding shard ({e})") from None
        if not pa.types.is_fixed_size_list(field_.type):
            raise StoreError(f"{shard}: column 'embedding' must be fixed_size_list<float32>; got {field_.type}")
        if table.num_rows:
            dims.add(field_.type.list_size)
        ids.append(table.column("id").to_numpy(zero_copy_only=False).astype(object))
        counts.append(table.num_rows)
    if len(dims) > 1:
        raise StoreError(f"{emb}: shards have different dimensions {sorted(dims)}")
    all_ids = _refuse_duplicates(emb, shards, ids)
    dim = dims.pop() if dims else pq.ParquetFile(shards[0]).schema_arrow.field("embedding").type.list_size
    return StoreRows(all_ids, _store_meta(emb, dim), dim, shards, counts)


def as_embeddings(emb: "str | os.PathLike | Embeddings", *, allow_partial: bool | None = None) -> Embeddings:
    """``emb`` itself if it is already loaded, else :func:`load_embeddings` of the folder.

    The one entry point every function taking embeddings uses, so a path and a loaded
    value are interchangeable (a caller that needs the same store twice reads it once).

    Parameters
    ----------
    emb : str, os.PathLike, Embeddings or tuple
        An embedding folder (or one ``.parquet`` shard), a loaded :class:`Embeddings`
        (returned as it is), or a plain ``(ids, matrix)`` pair (the matrix made float32).
    allow_partial : bool, optional
        For a folder: read a store whose embed job has not finished (see
        :func:`load_embeddings`). ``None``: as set by :func:`simlabel.context.modes`.

    Returns
    -------
    Embeddings
        The loaded value.

    Raises
    ------
    StoreError
        ``emb`` is a file other than a ``.parquet`` shard, or the folder cannot be loaded
        (see :func:`load_embeddings`).

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import as_embeddings
    >>> emb = as_embeddings((["a", "b"], np.eye(2)))
    >>> emb.ids, emb.matrix.dtype
    (array(['a', 'b'], dtype=object), dtype('float32'))
    >>> as_embeddings(emb) is emb
    True
    >>> emb = as_embeddings("emb/")  # doctest: +SKIP
    """
    if isinstance(emb, Embeddings):
        return emb
    if isinstance(emb, tuple) and len(emb) == 2:  # a plain (ids, matrix) pair
        return Embeddings(emb[0], np.asarray(emb[1], dtype=np.float32), {"path": "embeddings"})
    if isinstance(emb, (str, os.PathLike)) and not is_url(emb) and Path(emb).is_file() and Path(emb).suffix != ".parquet":
        raise StoreError(f"{emb}: is a file; expected an embedding folder written by `simlabel embed`")
    return load_embeddings(emb, allow_partial=allow_partial)
