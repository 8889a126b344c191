"""Cosine k-nearest-neighbour index over L2-normalised embeddings.

Everything downstream (label augmentation over k-NN graphs, label propagation
on ~1M x 384 matrices) asks the same question: *for these stored points, who
are their k nearest neighbours, not counting themselves?*  This module answers
it with a thin layer over FAISS:

* vectors are validated once at the boundary (scikit-learn style), normalised
  so that inner product == cosine similarity, and added in batches so peak
  memory is the index itself plus one batch;
* queries go through FAISS in batches as well, and self-exclusion is done with
  array operations on whole batches (no Python loop per row);
* an index is saved as ``<path>`` (the FAISS index) plus two sidecars,
  ``<path>.ids.parquet`` and ``<path>.json``, each written atomically.

Three index kinds are offered (:class:`IndexConfig`):

``flat``  exact (``IndexFlatIP``); the reference and the default.
``hnsw``  graph index (``IndexHNSWFlat``); sub-linear queries, slow to build.
``ivf``   inverted file (``IndexIVFFlat``); fast to build, recall depends on
          how clustered the data is.

Every query returns a :class:`Neighbors` pair, ``(neighbours, similarities)``: the
neighbours as positions (``search``, ``knn_positions``, :func:`exact_knn`) or ids
(``knn_ids``, ``knn_vectors``), and their float32 cosines, best first. Where an
approximate index finds fewer than ``k`` neighbours the position is ``-1`` (the id
``None``) and the similarity ``-inf``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import faiss
import numpy as np
import pandas as pd

from simlabel.checks import one_of, positive_int
from simlabel.errors import InputError, MissingIdsError, StoreError
from simlabel.files import SET_FORMAT, exclusive, read_json, verify_member, write_set
from simlabel.threads import faiss_threads

if TYPE_CHECKING:
    from simlabel.store import Embeddings

__all__ = [
    "AUTO_FLAT_MAX",
    "Neighbors",
    "IndexConfig",
    "auto_kind",
    "build_index",
    "check_index_matches",
    "IndexKind",
    "NeighborIndex",
    "drop_self_matches",
    "exact_knn",
    "recall_at_k",
    "recall_per_row",
]

IndexKind = Literal["flat", "hnsw", "ivf"]
_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")

#: rows whose norm is within this of 1 are taken as already normalised; float32
#: normalisation leaves errors around sqrt(d) * 6e-8 (~1e-6 at d=384), so 1e-5
#: accepts encoder output as is while still catching unnormalised input.
_NORM_TOL = 1e-5
#: how many offending rows/ids an error message lists before "..."
_SHOW = 5
_IDS_SUFFIX = ".ids.parquet"
_META_SUFFIX = ".json"
_FORMAT_VERSION = 1
_IVF_TRAIN_PER_LIST = 64
#: up to this many vectors ``auto`` searches exactly; above it, with IVF
AUTO_FLAT_MAX = 200_000
_IVF_KMEANS_ITERATIONS = 10


def auto_kind(n: int, flat_max: int = AUTO_FLAT_MAX) -> str:
    """The index kind ``auto`` means for ``n`` vectors: ``flat`` (exact) up to ``flat_max``, ``ivf`` above."""
    return "flat" if n <= flat_max else "ivf"


class Neighbors(NamedTuple):
    """The answer of every k-NN query: the neighbours of each query row and their similarities.

    A NamedTuple, so ``neighbors, sims = index.knn_ids(ids, k)`` unpacks it. Where an
    approximate index finds fewer than ``k`` neighbours the position is ``-1`` (the id
    ``None``) and the similarity ``-inf``.

    Parameters
    ----------
    neighbors : numpy.ndarray
        ``(m, k)`` neighbours, best first: int64 positions (``search``, ``knn_positions``,
        :func:`exact_knn`) or an object array of ids (``knn_ids``, ``knn_vectors``).
    similarities : numpy.ndarray
        ``(m, k)`` float32 cosine similarities of those neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import NeighborIndex
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> index = NeighborIndex.build(["a", "b", "c", "d"], X)
    >>> neighbors, sims = index.knn_ids(["a", "c"], k=1)
    >>> print(neighbors.ravel(), sims.ravel().round(3))
    ['b' 'd'] [0.994 0.994]
    """

    neighbors: np.ndarray
    similarities: np.ndarray


@dataclass
class IndexConfig:
    """How to build a :class:`NeighborIndex`.

    Defaults are chosen for 384-d sentence/image embeddings, 1e4 to 1e6 rows. Every field
    is checked when the config is made.

    Parameters
    ----------
    kind : {"flat", "hnsw", "ivf"}, default "flat"
        ``flat``: exact (``IndexFlatIP``), the reference. ``hnsw``: graph index
        (``IndexHNSWFlat``), sub-linear queries, slow to build. ``ivf``: inverted file
        (``IndexIVFFlat``), fast to build, recall depends on how clustered the data is.
    hnsw_m : int, default 32
        Links per node. 16-48 is the usual range for 128-1024-d data; 32 gives high recall
        on 384-d embeddings at a graph overhead of ~2*M*4 = 256 bytes/vector (vs 1536 bytes
        for the vector itself).
    hnsw_ef_construction : int, default 80
        Twice FAISS's default of 40. Graph quality (and hence recall at a given
        ``ef_search``) improves noticeably up to ~80-100 for M=32 and flattens after, while
        build time grows linearly.
    hnsw_ef_search : int, default 64
        Candidate list at query time; must be >= k+1 and comfortably above it for recall
        (FAISS uses ``max(ef_search, k)``). Raise it for better recall at proportionally
        slower queries.
    ivf_nlist : int, optional
        Number of IVF lists. ``None``: about ``4*sqrt(n)`` lists, clipped to ``[1, n // 39]``
        because k-means wants >= 39 training points per list (:meth:`nlist_for`).
    ivf_nprobe : int, default 16
        Lists visited per query (clipped to ``nlist``).
    threads : int, optional
        OpenMP threads for FAISS during build and search; the previous setting is restored
        afterwards, so it does not leak into the rest of the process. ``None`` leaves FAISS's
        default (all cores).
    seed : int, default 0
        Seeds the IVF training sample and k-means, so IVF builds are reproducible. (HNSW
        insertion runs in parallel, so a multi-threaded HNSW build is not bit-for-bit
        reproducible; use ``threads=1`` if that matters.)

    Raises
    ------
    ConfigError
        An unknown ``kind``, or a count that is not a positive integer (``ivf_nlist`` and
        ``threads`` may also be ``None``).

    Examples
    --------
    >>> from simlabel import IndexConfig
    >>> config = IndexConfig(kind="ivf", ivf_nprobe=32)
    >>> config.nlist_for(10_000)  # 4 * sqrt(n) = 400, clipped to n // 39
    256
    >>> try:
    ...     IndexConfig(kind="lsh")
    ... except ValueError as e:
    ...     print(e)
    kind must be one of flat, hnsw, ivf; got 'lsh'
    """

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        one_of(self.kind, _KINDS, "kind")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            positive_int(getattr(self, name), name)
        positive_int(self.ivf_nlist, "ivf_nlist", allow_none=True)
        positive_int(self.threads, "threads", allow_none=True)

    def nlist_for(self, n: int) -> int:
        """Number of IVF lists used for ``n`` vectors."""
        if self.ivf_nlist is not None:
            return self.ivf_nlist
        return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))


class NeighborIndex:
    """Cosine k-NN over a fixed set of vectors, addressed by position or id.

    Build with :meth:`build` or :meth:`load` (or :func:`build_index` over an embedding
    store).  Position ``i`` is row ``i`` of the vectors given to :meth:`build` and
    ``ids[i]`` its id. Vectors are stored L2-normalised, so the inner product FAISS
    computes is the cosine similarity ``cos(q, x) = q.x / (|q| |x|)``. Queries of stored
    points (:meth:`knn_positions`, :meth:`knn_ids`) leave the point itself out. The
    constructor is internal and trusts its arguments: use :meth:`build` or :meth:`load`.

    Parameters
    ----------
    index : faiss.Index
        The FAISS index holding the normalised vectors, FAISS ids == positions.
    ids : numpy.ndarray
        ``(n,)`` object array of ``str``, one per stored vector.
    config : IndexConfig
        The configuration it was built with; its search parameters (``hnsw_ef_search``,
        ``ivf_nprobe``) are applied to ``index``.
    metadata : dict, optional
        Free-form, JSON-serialisable; saved alongside the index.

    Attributes
    ----------
    ids : np.ndarray
        ``(n,)`` object array of ``str``.
    dim : int
        Vector width.
    kind : str
        ``"flat"``, ``"hnsw"`` or ``"ivf"``.
    config : IndexConfig
    metadata : dict
        Free-form, JSON-serialisable; saved alongside the index.
    index : faiss.Index
        The underlying FAISS index (vectors stored normalised, FAISS ids ==
        positions).

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import IndexConfig, NeighborIndex
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> index = NeighborIndex.build(["a", "b", "c", "d"], X, IndexConfig(kind="flat"))
    >>> index
    NeighborIndex(kind='flat', n=4, dim=2)
    >>> index.knn_ids(["a", "c"], k=1).neighbors.ravel().tolist()
    ['b', 'd']
    >>> index.knn_positions(np.array([0]), k=2).neighbors.tolist()
    [[1, 3]]
    >>> index.save("index.faiss")  # also index.faiss.ids.parquet and index.faiss.json  # doctest: +SKIP
    >>> index = NeighborIndex.load("index.faiss")  # doctest: +SKIP
    """

    def __init__(
        self,
        index: faiss.Index,
        ids: np.ndarray,
        config: IndexConfig,
        metadata: dict | None = None,
    ) -> None:
        # Internal: use build() or load(); this trusts its arguments.
        self.index = index
        self.ids = ids
        self.dim = int(index.d)
        self.kind = config.kind
        self.config = config
        self.metadata = dict(metadata or {})
        self._id_index: pd.Index | None = None
        self._apply_search_params()

    def __getstate__(self) -> dict:
        # FAISS indexes are SWIG objects: ship them as bytes (Ray's object store, multiprocessing)
        state = {k: v for k, v in self.__dict__.items() if k not in ("index", "_id_index")}
        state["index_bytes"] = faiss.serialize_index(self.index)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        index = faiss.deserialize_index(state.pop("index_bytes"))
        self.__dict__.update(state, index=index, _id_index=None)
        self._apply_search_params()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        vectors: np.ndarray,
        config: IndexConfig | None = None,
        *,
        metadata: dict | None = None,
    ) -> NeighborIndex:
        """Index ``vectors`` (row ``i`` has id ``ids[i]``).

        ``vectors`` must be a 2-D float matrix of finite values with no zero
        rows; rows are L2-normalised unless they already are (float32,
        C-contiguous, unit-norm input is added without a copy).  ``ids`` must
        be unique non-empty strings, one per row.  Errors name the offending
        rows/ids.
        """
        config = config if config is not None else IndexConfig()
        X = _check_matrix(vectors, "vectors")
        n, d = X.shape
        id_arr = _check_ids(ids, n)
        sq_norms = _validated_sq_norms(X, "vectors", ids=id_arr)
        if metadata is not None:
            _check_json(metadata, "metadata")

        with faiss_threads(config.threads):
            index = _new_faiss_index(config, d, n)
            if config.kind == "ivf":
                _train_ivf(index, X, sq_norms, config)
            _reserve_flat_storage(index, n)
            for start, stop in _batches(n, _ADD_BATCH):
                index.add(_normalised(X[start:stop], sq_norms[start:stop]))
        return cls(index, id_arr, config, metadata)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"NeighborIndex(kind={self.kind!r}, n={len(self)}, dim={self.dim})"

    # ----------------------------------------------------------------- search
    def search(self, vectors: np.ndarray, k: int, *, batch_size: int = 8192) -> Neighbors:
        """k nearest stored points of arbitrary query vectors.

        Queries are normalised like the stored vectors.  Returns
        :class:`Neighbors` of ``(m, k)`` int64 positions and float32 cosines,
        best first; ``-1`` / ``-inf`` where fewer than ``k`` were found.
        """
        Q = _check_matrix(vectors, "query vectors")
        if Q.shape[1] != self.dim:
            raise InputError(f"query vectors have {Q.shape[1]} columns but the index has dim {self.dim}")
        _check_k(k, len(self), exclude_self=False)
        positive_int(batch_size, "batch_size")
        sq_norms = _validated_sq_norms(Q, "query vectors")
        with faiss_threads(self.config.threads):
            return _search_batched(
                self.index,
                Q.shape[0],
                lambda a, b: _normalised(Q[a:b], sq_norms[a:b]),
                k,
                batch_size,
            )

    def knn_positions(
        self,
        positions: np.ndarray,
        k: int,
        *,
        exclude_self: bool = True,
        batch_size: int = 8192,
    ) -> Neighbors:
        """k nearest neighbours of stored points, given by position.

        With ``exclude_self`` each query asks for ``k+1`` and its own position
        is dropped wherever it appears in the row (see
        :func:`drop_self_matches`), so duplicates of a point are returned but
        the point itself never is.  Returns :class:`Neighbors` of positions,
        like :meth:`search`.
        """
        pos = self._check_positions(positions)
        _check_k(k, len(self), exclude_self=exclude_self)
        positive_int(batch_size, "batch_size")
        with faiss_threads(self.config.threads):
            return _search_batched(
                self.index,
                pos.shape[0],
                # Read query vectors back from the index rather than keeping a
                # second copy of the matrix around: one batch at a time.
                lambda a, b: self.index.reconstruct_batch(pos[a:b]),
                k,
                batch_size,
                query_positions=pos if exclude_self else None,
            )

    def knn_ids(
        self,
        ids: Sequence[str],
        k: int,
        *,
        exclude_self: bool = True,
        batch_size: int = 8192,
    ) -> Neighbors:
        """k nearest neighbours of stored points, given by id.

        Returns :class:`Neighbors` of an ``(m, k)`` object array of ids
        (``None`` where fewer than ``k`` were found) and ``(m, k)`` float32
        similarities.  Unknown ids raise :class:`~simlabel.errors.MissingIdsError`.
        """
        pos, sims = self.knn_positions(self.positions_of(ids), k, exclude_self=exclude_self, batch_size=batch_size)
        return Neighbors(self._ids_at(pos), sims)

    def knn_vectors(self, vectors: np.ndarray, k: int) -> Neighbors:
        """k nearest stored ids of arbitrary query vectors: :class:`Neighbors` of ids."""
        pos, sims = self.search(vectors, k)
        return Neighbors(self._ids_at(pos), sims)

    def positions_of(self, ids: Sequence[str]) -> np.ndarray:
        """Positions of ``ids`` as an int64 array; :class:`~simlabel.errors.MissingIdsError`
        (a ``KeyError``) names unknown ids."""
        if isinstance(ids, str):
            # A bare string is a Sequence[str] of characters: almost surely a bug.
            raise TypeError("ids must be a sequence of str, not a single str; wrap it in a list")
        if self._id_index is None:
            # Built lazily: hashing 1M ids takes a moment and not every caller needs it.
            self._id_index = pd.Index(self.ids, dtype=object)
        query = pd.Index(np.asarray(ids, dtype=object).ravel(), dtype=object)
        pos = self._id_index.get_indexer(query)
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            source = self.metadata.get("embeddings") or "the index"
            raise MissingIdsError([query[i] for i in missing], str(source), "unknown id(s)")
        return pos.astype(np.int64, copy=False)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` with sidecars ``path + '.ids.parquet'`` and ``path + '.json'``.

        The three files are one output set (:func:`simlabel.files.write_set`): the JSON sidecar
        is the manifest, marked ``writing`` before the other two are renamed into place and
        written last with their digests, so :meth:`load` refuses a mixed or half-written set.
        The caller holds the lock when several processes may write the same path.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(os.fspath(path))
        meta = {
            "format_version": _FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "n": len(self),
            "config": dataclasses.asdict(self.config),
            "metadata": self.metadata,
            "created": datetime.now(timezone.utc).isoformat(),
            "faiss_version": faiss.__version__,
        }
        write_set(
            _sidecar(path, _META_SUFFIX),
            {
                path: lambda tmp: faiss.write_index(self.index, str(tmp)),
                _sidecar(path, _IDS_SUFFIX): lambda tmp: pq.write_table(pa.table({"id": pa.array(self.ids, type=pa.string())}), tmp),
            },
            meta,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeighborIndex:
        """Read an index written by :meth:`save`.

        Raises ``FileNotFoundError`` naming any missing file and
        :class:`~simlabel.errors.StoreError` when the index, ids and JSON disagree
        on count, dim or kind.
        """
        import pyarrow.parquet as pq

        path = Path(os.fspath(path))
        ids_path, meta_path = _sidecar(path, _IDS_SUFFIX), _sidecar(path, _META_SUFFIX)
        missing = [str(p) for p in (path, ids_path, meta_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                "cannot load NeighborIndex: missing file(s) " + ", ".join(missing)
                + " (an index is saved as <path>, <path>.ids.parquet and <path>.json)"
            )
        meta = read_json(meta_path, "index sidecar")
        if meta.get("format") == SET_FORMAT:  # written as one set: refuse a mixed or unfinished one
            verify_member(meta, meta_path, path, StoreError)
            verify_member(meta, meta_path, ids_path, StoreError)
        table = pq.read_table(ids_path, columns=["id"])
        ids = table.column("id").to_numpy(zero_copy_only=False).astype(object, copy=False)
        index = faiss.read_index(str(path))

        counts = {"faiss index": int(index.ntotal), str(ids_path.name): len(ids), str(meta_path.name): meta.get("n")}
        if len(set(counts.values())) != 1:
            raise StoreError(
                f"index files at {path} disagree on the number of vectors: "
                + ", ".join(f"{k}={v}" for k, v in counts.items())
            )
        if meta.get("dim") != int(index.d):
            raise StoreError(f"{meta_path.name} says dim={meta.get('dim')} but the faiss index has dim={index.d}")
        fields = {f.name for f in dataclasses.fields(IndexConfig)}
        config = IndexConfig(**{k: v for k, v in meta.get("config", {}).items() if k in fields})
        if meta.get("kind") != config.kind or _faiss_kind(index) != config.kind:
            raise StoreError(
                f"{meta_path.name} says kind={meta.get('kind')!r} (config {config.kind!r}) "
                f"but the faiss index is {type(index).__name__}"
            )
        return cls(index, ids, config, meta.get("metadata") or {})

    # -------------------------------------------------------------- internals
    def _apply_search_params(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.config.hnsw_ef_search
        elif self.kind == "ivf":
            self.index.nprobe = min(self.config.ivf_nprobe, self.index.nlist)

    def _check_positions(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions)
        if pos.ndim != 1:
            raise InputError(f"positions must be 1-D; got shape {pos.shape}")
        if pos.size and not np.issubdtype(pos.dtype, np.integer):
            raise TypeError(f"positions must be integers; got dtype {pos.dtype}")
        pos = np.ascontiguousarray(pos, dtype=np.int64)
        bad = np.flatnonzero((pos < 0) | (pos >= len(self)))
        if bad.size:
            shown = ", ".join(f"positions[{i}]={pos[i]}" for i in bad[:_SHOW])
            raise IndexError(f"{bad.size} position(s) out of range [0, {len(self)}): {shown}")
        return pos

    def _ids_at(self, pos: np.ndarray) -> np.ndarray:
        out = self.ids.take(np.maximum(pos, 0))  # -1 would silently wrap to the last id
        out[pos < 0] = None
        return out


# ---------------------------------------------------------------------------
# module-level helpers


def drop_self_matches(
    sims: np.ndarray, positions: np.ndarray, query_positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row's own position from a ``(m, k+1)`` result, giving ``(m, k)``.

    The query's own position is removed wherever it appears in its row, not
    only at rank 0: with duplicate vectors (or ties) another point can rank
    first, and an approximate index may place the query lower or miss it
    altogether.  Where it is absent the last (worst) column is dropped, so
    every row keeps its best ``k`` non-self results, still best first.
    """
    m, kp1 = positions.shape
    is_self = positions == np.asarray(query_positions, dtype=np.int64)[:, None]
    has_self = is_self.any(axis=1)
    drop = np.where(has_self, is_self.argmax(axis=1), kp1 - 1)
    keep = np.ones((m, kp1), dtype=bool)
    keep[np.arange(m), drop] = False
    # Boolean indexing walks rows in order, so each row's survivors stay sorted.
    return sims[keep].reshape(m, kp1 - 1), positions[keep].reshape(m, kp1 - 1)


def exact_knn(vectors: np.ndarray, k: int, *, exclude_self: bool = True, batch_size: int = 8192) -> Neighbors:
    """Exact all-to-all cosine k-NN of the rows of ``vectors``.

    A convenience for a matrix without ids (FAISS flat inner product after
    normalisation).  Returns :class:`Neighbors` of ``(n, k)`` positions.
    """
    X = _check_matrix(vectors, "vectors")
    n, d = X.shape
    _check_k(k, n, exclude_self=exclude_self)
    positive_int(batch_size, "batch_size")
    sq_norms = _validated_sq_norms(X, "vectors")
    index = faiss.IndexFlatIP(d)
    _reserve_flat_storage(index, n)
    for start, stop in _batches(n, _ADD_BATCH):
        index.add(_normalised(X[start:stop], sq_norms[start:stop]))
    all_pos = np.arange(n, dtype=np.int64)
    return _search_batched(
        index,
        n,
        lambda a, b: index.reconstruct_batch(all_pos[a:b]),
        k,
        batch_size,
        query_positions=all_pos if exclude_self else None,
    )


def recall_per_row(approx_positions: np.ndarray, exact_positions: np.ndarray) -> np.ndarray:
    """``|approx_i ∩ exact_i| / |exact_i|`` for each row, ``-1`` entries ignored; a row with no valid
    exact neighbour counts 1 (there was nothing to find).

    The per-row recalls whose mean :func:`recall_at_k` is, and whose spread bounds it (the graph's tuning).
    """
    A = np.asarray(approx_positions, dtype=np.int64)
    E = np.asarray(exact_positions, dtype=np.int64)
    if A.ndim != 2 or E.ndim != 2 or A.shape[0] != E.shape[0]:
        raise InputError(f"expected two 2-D arrays with the same number of rows; got {A.shape} and {E.shape}")
    # Broadcast compare (m, ka, 1) vs (m, 1, ke): a vectorised set intersection,
    # cheap for the small k used here (positions within a row are unique).
    # Chunked so the (rows, ka, ke) temporary stays small for m ~ 1e6.
    valid_e = E >= 0
    hits = np.empty(A.shape[0], dtype=np.int64)
    for start, stop in _batches(A.shape[0], 65536):
        a, e = A[start:stop, :, None], E[start:stop, None, :]
        hit = ((a == e) & (a >= 0)).any(axis=1) & valid_e[start:stop]
        hits[start:stop] = hit.sum(axis=1)
    denom = valid_e.sum(axis=1)
    return np.divide(hits, denom, out=np.ones(len(E)), where=denom > 0)


def recall_at_k(approx_positions: np.ndarray, exact_positions: np.ndarray) -> float:
    """Mean over rows of ``|approx ∩ exact| / k``, ignoring ``-1`` entries.

    ``k`` is the number of valid (non ``-1``) exact neighbours in the row, so
    an approximate index that returns fewer results is penalised for them.
    Rows with no valid exact neighbour are skipped.
    """
    per_row = recall_per_row(approx_positions, exact_positions)
    if per_row.shape[0] == 0:
        raise InputError("recall_at_k needs at least one row")
    rows = (np.asarray(exact_positions) >= 0).any(axis=1)
    if not rows.any():
        raise InputError("exact_positions has no valid (non -1) entries")
    return float(np.mean(per_row[rows]))


# ---------------------------------------------------------------------------
# private helpers

#: rows per add() call: ~12 MiB of float32 at d=384, small next to any index.
_ADD_BATCH = 8192


def _check_k(k: Any, n: int, *, exclude_self: bool) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer; got {k!r}")
    if exclude_self and k >= n:
        raise InputError(f"k={k} is too large: excluding the query itself leaves at most n-1 = {n - 1} neighbours (n={n})")
    if not exclude_self and k > n:
        raise InputError(f"k={k} is larger than the number of indexed vectors n={n}")


def _check_matrix(vectors: Any, name: str) -> np.ndarray:
    # check_array gives the familiar sklearn messages for wrong shapes and
    # non-numeric input; finiteness is checked separately so that the error can
    # name the rows.  float32/float64 pass through without a copy; conversion
    # to float32 C-order happens batch by batch later. Imported here: sklearn costs a second
    # to import, and `simlabel train` imports this module without building an index.
    from sklearn.utils.validation import check_array

    return check_array(
        vectors,
        dtype=[np.float32, np.float64],
        order=None,
        copy=False,
        ensure_all_finite=False,
        ensure_2d=True,
        input_name=name,
    )


def _check_ids(ids: Sequence[str], n: int) -> np.ndarray:
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of str, not a single str")
    arr = np.asarray(ids, dtype=object)
    if arr.ndim != 1:
        raise InputError(f"ids must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"vectors has {n} rows but {arr.shape[0]} ids were given")
    if pd.api.types.infer_dtype(arr, skipna=False) != "string":
        bad = [i for i, v in enumerate(arr[: 10 * _SHOW]) if not isinstance(v, str)]
        if not bad:  # non-string further down: find it (rare path, a loop is fine)
            bad = [i for i, v in enumerate(arr) if not isinstance(v, str)]
        shown = ", ".join(f"ids[{i}]={arr[i]!r}" for i in bad[:_SHOW])
        raise TypeError(f"ids must all be str; got {shown}")
    empty = np.flatnonzero(arr == "")
    if empty.size:
        raise InputError(f"{empty.size} empty id(s) at row(s) {_list(empty)}")
    dup = pd.Index(arr).duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup)
        groups = pd.Series(rows).groupby(arr[rows], sort=False).agg(list)
        shown = "; ".join(f"{key!r} at rows {v}" for key, v in list(groups.items())[:_SHOW])
        more = f" (and {len(groups) - _SHOW} more)" if len(groups) > _SHOW else ""
        raise InputError(f"ids must be unique; {len(groups)} duplicated: {shown}{more}")
    return arr


def _list(rows: np.ndarray) -> str:
    s = ", ".join(str(int(r)) for r in rows[:_SHOW])
    return s + (f" (and {rows.size - _SHOW} more)" if rows.size > _SHOW else "")


def _describe_rows(rows: np.ndarray, ids: np.ndarray | None) -> str:
    parts = [f"row {int(r)}" + (f" (id {ids[r]!r})" if ids is not None else "") for r in rows[:_SHOW]]
    more = f" (and {rows.size - _SHOW} more)" if rows.size > _SHOW else ""
    return ", ".join(parts) + more


def _validated_sq_norms(X: np.ndarray, name: str, ids: np.ndarray | None = None) -> np.ndarray:
    """Squared row norms (float64), raising for non-finite or all-zero rows.

    One pass over the data in batches: float64 accumulation so large finite
    values do not overflow, and only a batch-sized temporary at a time.
    """
    n = X.shape[0]
    sq = np.empty(n, dtype=np.float64)
    for start, stop in _batches(n, _ADD_BATCH):
        sq[start:stop] = np.einsum("ij,ij->i", X[start:stop], X[start:stop], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(sq))
    if bad.size:
        raise InputError(
            f"{name} contain non-finite values (NaN or inf) in {bad.size} row(s): {_describe_rows(bad, ids)}"
        )
    zero = np.flatnonzero(sq == 0.0)
    if zero.size:
        raise InputError(
            f"{name} have {zero.size} all-zero row(s), for which cosine similarity is undefined: "
            f"{_describe_rows(zero, ids)}"
        )
    return sq


def _normalised(batch: np.ndarray, sq_norms: np.ndarray) -> np.ndarray:
    """float32 C-contiguous unit rows; no copy when the batch already is."""
    if (
        batch.dtype == np.float32
        and batch.flags.c_contiguous
        and np.all(np.abs(sq_norms - 1.0) <= 2 * _NORM_TOL)
    ):
        return batch
    out = batch / np.sqrt(sq_norms)[:, None]  # float64 when batch is float64: divide before narrowing
    return np.ascontiguousarray(out, dtype=np.float32)


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _new_faiss_index(config: IndexConfig, d: int, n: int) -> faiss.Index:
    if config.kind == "flat":
        return faiss.IndexFlatIP(d)
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index
    nlist = config.nlist_for(n)
    if nlist > n:
        raise InputError(f"ivf_nlist={nlist} is larger than the number of vectors n={n}")
    quantizer = faiss.IndexFlatIP(d)
    # (FAISS's Python wrapper keeps a reference to the quantizer for us.)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = config.seed
    # Unit vectors under inner product: centroids should live on the sphere too.
    index.cp.spherical = True
    # Positions -> stored vectors lookups (reconstruct) need a direct map.
    index.set_direct_map_type(faiss.DirectMap.Array)
    return index


def _train_ivf(index: faiss.Index, X: np.ndarray, sq_norms: np.ndarray, config: IndexConfig) -> None:
    n = X.shape[0]
    # 64 points per list is well above FAISS's minimum of 39 and keeps training time (which grows
    # with sample x nlist) to about a minute at n = 1M; more buys little for k-NN recall.
    size = min(n, _IVF_TRAIN_PER_LIST * index.nlist)
    rng = np.random.default_rng(config.seed)
    # Sorted sample: deterministic for a seed, and gathers rows in memory order.
    sample = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
    train = np.empty((size, X.shape[1]), dtype=np.float32)
    for start, stop in _batches(size, _ADD_BATCH):
        rows = sample[start:stop]
        train[start:stop] = _normalised(X[rows], sq_norms[rows])
    # We have already subsampled; stop FAISS from subsampling again (and warning).
    index.cp.max_points_per_centroid = max(_IVF_TRAIN_PER_LIST, -(-size // index.nlist))
    index.cp.niter = _IVF_KMEANS_ITERATIONS
    if index.nlist == 1:
        # One list is just the mean; FAISS's "at least 39 points" warning
        # (printed for n < 39) is noise there.
        index.cp.min_points_per_centroid = 1
    index.train(train)


def _reserve_flat_storage(index: faiss.Index, n: int) -> None:
    """Pre-size flat vector storage so batched adds do not over-allocate.

    FAISS grows its code vector with std::vector::resize on each add, i.e.
    geometric growth: with batched adds each reallocation copies everything
    added so far, so resident memory can briefly reach ~2x the data when n is
    just past a doubling.  Resizing to the final size and back to 0 keeps the
    capacity (shrinking a std::vector never reallocates), so every later add
    fits in place: one allocation of exactly n vectors, no copies.
    """
    storage = index
    if isinstance(index, faiss.IndexHNSW):
        storage = faiss.downcast_index(index.storage)
    if not isinstance(storage, faiss.IndexFlatCodes) or storage.ntotal != 0:
        return
    codes = getattr(storage, "codes", None)
    if codes is None or not hasattr(codes, "resize"):
        return
    codes.resize(int(n) * int(storage.code_size))
    codes.resize(0)


def _search_batched(
    index: faiss.Index,
    m: int,
    get_queries: Callable[[int, int], np.ndarray],
    k: int,
    batch_size: int,
    query_positions: np.ndarray | None = None,
) -> Neighbors:
    """Run ``index.search`` over ``m`` queries in batches into preallocated output.

    With ``query_positions`` each batch asks for ``k+1`` and drops self-matches.
    """
    sims = np.empty((m, k), dtype=np.float32)
    pos = np.empty((m, k), dtype=np.int64)
    k_search = k + 1 if query_positions is not None else k
    for start, stop in _batches(m, batch_size):
        q = np.ascontiguousarray(get_queries(start, stop), dtype=np.float32)
        D, I = index.search(q, k_search)
        if query_positions is not None:
            D, I = drop_self_matches(D, I, query_positions[start:stop])
        sims[start:stop] = D
        pos[start:stop] = I
    # FAISS pads missing results with -FLT_MAX; -inf says "none" unambiguously.
    sims[pos < 0] = -np.inf
    return Neighbors(pos, sims)


# -- IVF larger than memory: trained once, filled in parts, merged on disk ----------------------------


def _faiss_kind(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "flat"


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _check_json(obj: Any, name: str) -> None:
    try:
        json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable: {exc}") from None


def build_index(
    emb_dir: "str | os.PathLike | Embeddings",
    out: str | os.PathLike | None = None,
    config: IndexConfig | None = None,
    *,
    kind: IndexKind | None = None,
    wait: bool = False,
) -> NeighborIndex:
    """Build an index over an embedding folder written by ``simlabel embed``.

    The embeddings' model metadata (``model``, ``model_version``, ``modality``), their
    space and fingerprint and where they came from are kept in the index metadata, so an
    index knows its source and is refused over other embeddings.

    Parameters
    ----------
    emb_dir : str, os.PathLike or Embeddings
        An embedding folder or a loaded :class:`~simlabel.store.Embeddings`.
    out : str or os.PathLike, optional
        Save the index there (see :meth:`NeighborIndex.save`: ``out``,
        ``out.ids.parquet`` and ``out.json``), holding ``out``'s one-writer lock while
        writing. ``None``: in memory only.
    config : IndexConfig, optional
        How to build it; default ``IndexConfig(kind=kind or "flat")``.
    kind : {"flat", "hnsw", "ivf"}, optional
        A shortcut for ``IndexConfig(kind=kind)``; with ``config`` it replaces its kind.
    wait : bool, default False
        When another process is writing ``out``, wait for it instead of failing at once.

    Returns
    -------
    NeighborIndex
        The built index (also saved at ``out`` when given).

    Raises
    ------
    StoreError
        The embeddings cannot be loaded (see :func:`simlabel.load_embeddings`), or there
        are none.
    ConfigError
        An unknown ``kind``.
    InputError
        Vectors the index cannot hold: non-finite values, all-zero rows (their cosine is
        undefined), or more IVF lists than vectors.
    LockedError
        Another simlabel process is writing ``out`` (and ``wait`` is false).

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings, build_index
    >>> emb = Embeddings(["a", "b", "c", "d"], np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]), {"path": "mem"})
    >>> index = build_index(emb, kind="flat")
    >>> index, index.metadata["embeddings"]
    (NeighborIndex(kind='flat', n=4, dim=2), 'mem')
    >>> index = build_index("emb/", "index.faiss", kind="hnsw")  # doctest: +SKIP
    """
    from simlabel.store import as_embeddings

    if config is None:
        config = IndexConfig(kind=kind or "flat")
    elif kind is not None:
        config = dataclasses.replace(config, kind=kind)
    emb = as_embeddings(emb_dir)
    if len(emb.ids) == 0:
        raise StoreError(f"{emb.source}: no embeddings to index")
    path = emb.meta.get("path")
    where = str(Path(path).resolve()) if path and Path(path).exists() else emb.source
    source = {"embeddings": where, "embeddings_fingerprint": emb.fingerprint, "space": emb.space,
              **{k: emb.meta[k] for k in ("model", "model_version", "modality") if k in emb.meta}}
    index = NeighborIndex.build(emb.ids, emb.matrix, config, metadata=source)
    if out is not None:
        with exclusive(out, wait=wait):
            index.save(out)
    return index


def check_index_matches(index: NeighborIndex, emb: "Embeddings", what: str = "index") -> None:
    """Refuse an index built from other embeddings than ``emb`` (another model, or other rows).

    Indexes that record the embeddings' fingerprint are checked against it; older ones by
    width and ids.
    """
    recorded = index.metadata.get("embeddings_fingerprint")
    source = index.metadata.get("embeddings") or "?"
    if recorded is not None and recorded != emb.fingerprint:
        from simlabel.store import grew_into

        if grew_into(index.ids, index.metadata.get("space"), emb):
            raise InputError(
                f"the {what} was built from an earlier version of {emb.source}: the store grew from {len(index):,} to "
                f"{len(emb.ids):,} rows since; build it again: simlabel index {emb.source} --out INDEX"
            )
        raise InputError(
            f"the {what} was built from other embeddings ({source}, {index.metadata.get('space', '?')}) than "
            f"{emb.source} ({emb.space}); build it from these: simlabel index {emb.source} --out INDEX"
        )
    if index.dim != emb.dim or len(index) != len(emb.ids) or not np.array_equal(index.ids, emb.ids):
        raise InputError(
            f"the {what} ({len(index):,} x {index.dim}, from {source}) does not hold the rows of {emb.source} "
            f"({len(emb.ids):,} x {emb.dim}) in the same order; rebuild it"
        )
