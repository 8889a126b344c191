"""The k-NN graph: built once, at the recall asked for, in blocks, resumable, and reused by every label method.

A graph over an embedding store holds, for each row, its ``k`` nearest neighbours by cosine
similarity (itself excluded), best first; ties are broken by the neighbour's row position
(lower first), so one store, one ``k`` and one index setting always give one graph. The
index is exact (``flat``) for small stores or ``recall=1``, and above an IVF join
(:mod:`simlabel.allpairs`) tuned on a sample to the cheapest lists and probes whose
recall@k reaches ``GraphConfig.recall`` (0.95 by default); the recall measured afterwards
on a fresh sample is recorded.

Folder layout (``GRAPH_DIR``)::

    graph.json              format, k, index kind and parameters, the recall asked for and the
                            tuning that reached it, the embeddings' fingerprint, block size,
                            measured recall@k against exact search on a fresh sample,
                            state ("building" until the last block is in, then "complete")
    ids.parquet             the row ids, in the store's order (neighbours are int32 positions)
    blocks/part-NNNNN.parquet   a block of rows (a range of rows, or the rows of a range of IVF
                            lists): ``row`` int64 (ascending), ``neighbors`` fixed-size
                            list<int32>, ``similarities`` fixed-size list<float32>
    index.faiss (+ sidecars), index/   while building: the index or the join's plan
                            (``centroids.npy``, ``tuning.json``; ``lists.npy`` with ``on_disk``),
                            so a resumed build neither trains nor tunes again; removed when complete

Each block is written atomically, so a killed build resumes at the first missing block.
:class:`KnnGraph` answers ``knn_positions(positions, k)`` like a
:class:`~simlabel.index.NeighborIndex`, so ``augment`` and ``propagate`` take either; a graph
with a smaller ``k`` than asked is an error, a larger one is truncated. ``adjacency`` and
``reverse`` give the sparse matrices (symmetric, or who has x among its neighbours) without new
queries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import ConfigError, InputError, MissingIdsError, StoreError
from simlabel.files import atomic_dir, atomic_path, atomic_write_json, exclusive, read_json, run_record
from simlabel.index import IndexConfig, NeighborIndex, Neighbors, auto_kind, check_index_matches, recall_at_k
from simlabel.progress import task
from simlabel.remote import checkpoint, is_url, local_copy, writes_to_url
from simlabel.store import Embeddings, StoreRows, as_embeddings, grew_into, open_store

if TYPE_CHECKING:
    import scipy.sparse

__all__ = [
    "GRAPH_FLAT_MAX", "GraphConfig", "GraphRows", "KnnGraph", "NeighbourSource", "build_graph", "graph_kind",
    "graph_rows", "load_graph", "neighbour_source", "neighbours_among", "neighbours_for", "neighbours_within",
    "sort_rows",
]

FORMAT = "simlabel.graph"
FORMAT_VERSION = 1
META = "graph.json"
#: up to this many rows ``auto`` searches exactly: there the exact product (``n^2 d``) costs about what
#: tuning an IVF join and measuring its recall do (``(tune_sample + recall_sample) n d``)
GRAPH_FLAT_MAX = 5000


@dataclass
class GraphConfig:
    """How a graph is built."""

    k: int = 50
    #: the recall@k to reach, in ``(0, 1]``: the index is tuned to the cheapest setting that reaches it on
    #: ``tune_sample`` rows (``1.0``: exact search)
    recall: float = 0.95
    #: ``flat`` (exact), ``ivf`` (the IVF join of :mod:`simlabel.allpairs`), ``hnsw`` or ``auto``
    #: (:func:`graph_kind`: exact up to ``GRAPH_FLAT_MAX`` rows or for ``recall=1``, the IVF join above)
    index: str = "auto"
    #: rows queried (and written) per block: memory is bounded by ``block_rows * k``
    block_rows: int = 65536
    #: rows whose neighbours are checked against exact search for the recorded recall@k (none of the tuning rows)
    recall_sample: int = 1000
    #: rows whose exact neighbours tune the index to ``recall`` (IVF lists and probes, HNSW ``efSearch``)
    tune_sample: int = 500
    seed: int = 0
    threads: int | None = None
    index_options: dict = field(default_factory=dict)
    #: ``local`` or ``ray`` (the index built once and shared through the object store, each
    #: block a Ray task writing its own file: the folder must be on storage every node sees)
    engine: str = "local"
    #: Ray cluster for ``engine="ray"`` (``auto``, ``HOST:PORT``; default a local Ray)
    address: str | None = None
    #: a store larger than memory: the IVF join's rows laid out list by list in a memory-mapped file
    #: under ``out/index`` instead of memory (the store is read block by block in both)
    on_disk: bool = False

    def __post_init__(self) -> None:
        one_of(self.engine, ("local", "ray"), "engine")
        positive_int(self.k, "k")
        one_of(self.index, ("auto", "flat", "ivf", "hnsw"), "index")
        positive_int(self.block_rows, "block_rows")
        positive_int(self.recall_sample, "recall_sample", minimum=0)
        positive_int(self.tune_sample, "tune_sample")
        in_range(self.recall, "recall", 0.0, 1.0, lo_open=True)
        positive_int(self.threads, "threads", allow_none=True)
        if self.on_disk and self.index not in ("auto", "ivf"):
            raise ConfigError(f"on_disk builds an IVF index; index={self.index!r} keeps its vectors in memory "
                              "(use index='ivf' or 'auto')")


def sort_rows(neighbors: np.ndarray, similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows best first: similarity descending, ties by neighbour position ascending; ``-1``
    (fewer than k found) last."""
    nb = np.asarray(neighbors)
    sim = np.where(nb < 0, -np.inf, np.asarray(similarities, dtype=np.float32))
    key_pos = np.where(nb < 0, np.iinfo(np.int64).max, nb.astype(np.int64))
    order = np.lexsort((key_pos, -sim), axis=-1)
    nb = np.take_along_axis(nb, order, axis=1)
    sim = np.take_along_axis(np.asarray(similarities, dtype=np.float32), order, axis=1)
    return nb, sim


def knn_csr(neighbors: np.ndarray, values: np.ndarray, n: int | None = None) -> scipy.sparse.csr_matrix:
    """The ``(n, n)`` sparse matrix holding ``values[i, j]`` at ``(i, neighbors[i, j])`` (``-1`` skipped),
    built straight from the rows (no COO conversion), its column indices then sorted within each row."""
    import scipy.sparse as sp

    nb = np.asarray(neighbors)
    n = nb.shape[0] if n is None else n
    ok = nb >= 0
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:nb.shape[0] + 1] = np.cumsum(ok.sum(axis=1))
    indptr[nb.shape[0] + 1:] = indptr[nb.shape[0]]
    # boolean indexing walks the rows in order, so each row's entries land in its slice of indptr
    m = sp.csr_matrix((np.asarray(values)[ok], nb[ok].astype(np.int32), indptr), shape=(n, n))
    m.sort_indices()  # canonical: scipy's elementwise max and transpose are several times faster on it
    return m


def similarity_affinity(neighbors: np.ndarray, similarities: np.ndarray, n: int | None = None, *, power: float = 1.0,
                        symmetric: bool = True, combine: str = "max", dtype=np.float64) -> scipy.sparse.csr_matrix:
    """``W[i, j] = max(s_ij, 0) ** power`` for ``j`` among row ``i``'s neighbours (``-1``: skipped), ``(n, n)``;
    ``symmetric``: ``max(W, W^T)`` (``combine="max"``) or ``(W + W^T) / 2`` (``"mean"``)."""
    vals = np.maximum(np.asarray(similarities, dtype=dtype), 0.0)
    if float(power).is_integer() and 1 <= power <= 4:  # by products: pow() is 10x slower on ten million entries
        base = vals.copy()
        for _ in range(int(power) - 1):
            vals *= base
    else:
        vals = vals ** power
    w = knn_csr(neighbors, vals.astype(dtype, copy=False), n)
    if not symmetric:
        return w
    one_of(combine, ("max", "mean"), "combine")
    return (w.maximum(w.T) if combine == "max" else (w + w.T) * 0.5).tocsr()


class KnnGraph:
    """A k-NN graph in memory: for each row, its ``k`` nearest neighbours and their similarities.

    Made by :func:`build_graph` or :func:`load_graph`. Each row's neighbours are itself
    excluded and best first (similarity descending, ties by neighbour position ascending).
    It answers ``knn_positions(positions, k)`` like a :class:`~simlabel.index.NeighborIndex`,
    so ``augment`` and ``propagate`` take either; asking for more neighbours than the graph
    holds is an error, fewer truncates. ``adjacency`` and ``reverse`` give the sparse
    matrices without new queries.

    Parameters
    ----------
    ids : numpy.ndarray
        ``(n,)`` row ids, in the store's order (made an object array).
    neighbors : numpy.ndarray
        ``(n, k)`` neighbour positions into ``ids`` (made int32), ``-1`` where fewer than
        ``k`` were found.
    similarities : numpy.ndarray
        ``(n, k)`` cosine similarities of those neighbours (made float32).
    meta : dict, optional
        What ``graph.json`` records (``k``, the index kind and parameters, the embeddings'
        fingerprint, recall@k ...) and the folder's ``path``; copied.

    Raises
    ------
    InputError
        ``neighbors`` and ``similarities`` of different shapes, or not one row per id.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings, build_graph
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> graph = build_graph(Embeddings(["a", "b", "c", "d"], X, {"path": "mem"}), k=2, progress=False)
    >>> graph
    KnnGraph(4 rows, k=2, flat)
    >>> graph.neighbors.tolist()
    [[1, 3], [0, 3], [3, 1], [2, 1]]
    >>> graph.knn_positions(np.array([0, 2]), k=1).neighbors.tolist()
    [[1], [3]]
    >>> graph.adjacency(k=1).toarray().round(3)
    array([[0.   , 0.994, 0.   , 0.   ],
           [0.994, 0.   , 0.   , 0.   ],
           [0.   , 0.   , 0.   , 0.994],
           [0.   , 0.   , 0.994, 0.   ]], dtype=float32)
    """

    def __init__(self, ids: np.ndarray, neighbors: np.ndarray, similarities: np.ndarray, meta: dict | None = None) -> None:
        self.ids = np.asarray(ids, dtype=object)
        self.neighbors = np.asarray(neighbors, dtype=np.int32)
        self.similarities = np.asarray(similarities, dtype=np.float32)
        if self.neighbors.shape != self.similarities.shape or self.neighbors.shape[0] != len(self.ids):
            raise InputError(f"graph arrays disagree: {len(self.ids)} ids, neighbours {self.neighbors.shape}, "
                             f"similarities {self.similarities.shape}")
        self.meta = dict(meta or {})
        self._pos: pd.Index | None = None
        self._matched: np.ndarray | None = None  # the ids array check_matches last accepted

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"KnnGraph({len(self):,} rows, k={self.k}, {self.meta.get('index', {}).get('kind', '?')})"

    @property
    def k(self) -> int:
        """Neighbours held per row."""
        return int(self.neighbors.shape[1])

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the embeddings the graph was built from (``None`` where not recorded)."""
        return self.meta.get("embeddings_fingerprint")

    @property
    def metadata(self) -> dict:  # what check_index_matches reads on an index
        return self.meta

    def _lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Each id's row position, ``-1`` for an id not in the graph (the hash of the ids built once)."""
        if self._pos is None:
            self._pos = pd.Index(self.ids, dtype=object)  # object: an Arrow string index converts each id on lookup
        return self._pos.get_indexer(pd.Index([str(i) for i in ids], dtype=object))

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """``(m,)`` bool: which of ``ids`` are rows of the graph."""
        return self._lookup(ids) >= 0

    def positions_of(self, ids: Sequence[str]) -> np.ndarray:
        """The row positions of ``ids``, in the order asked."""
        pos = self._lookup(ids)
        if (pos < 0).any():
            missing = np.asarray(ids)[pos < 0]
            raise MissingIdsError([str(i) for i in missing], f"the graph {self.meta.get('path', '(in memory)')}",
                                  "id(s) not in the graph")
        return pos

    def check_k(self, k: int) -> None:
        """A method asking for more neighbours than the graph holds is an error naming the fix."""
        if k > self.k:
            raise InputError(f"the graph {self.meta.get('path') or '(in memory)'} holds k = {self.k} neighbours per row, but {k} are "
                             f"asked for; rebuild it with `simlabel graph --k {k}` (or more)")

    def truncate(self, k: int) -> KnnGraph:
        """The graph of the ``k`` best neighbours of each row (``k <= self.k``)."""
        self.check_k(k)
        return KnnGraph(self.ids, self.neighbors[:, :k], self.similarities[:, :k], {**self.meta, "k": k})

    def knn_positions(self, positions: np.ndarray, k: int, *, exclude_self: bool = True, batch_size: int = 0) -> Neighbors:
        """The ``k`` best neighbours of the rows at ``positions`` (self is never among them)."""
        if not exclude_self:
            raise InputError("a k-NN graph excludes each row itself; exclude_self=False needs an index")
        self.check_k(k)
        pos = np.asarray(positions, dtype=np.int64)
        return Neighbors(self.neighbors[pos, :k].astype(np.int64), self.similarities[pos, :k])

    def knn_ids(self, ids: Sequence[str], k: int) -> Neighbors:
        """The ``k`` best neighbours of the rows of ``ids``, as ids (``None`` where fewer exist)."""
        nb, sim = self.knn_positions(self.positions_of(ids), k)
        out = np.full(nb.shape, None, dtype=object)
        ok = nb >= 0
        out[ok] = self.ids[nb[ok]]
        return Neighbors(out, sim)

    def check_matches(self, emb: Embeddings, what: str = "graph") -> None:
        """Refuse a graph built from other embeddings than ``emb``."""
        if self.fingerprint is not None and self.fingerprint != emb.fingerprint:
            if grew_into(self.ids, self.meta.get("space"), emb):  # the store grew since (embed append)
                raise InputError(
                    f"the {what} {self.meta.get('path') or '(in memory)'} was built from an earlier version of "
                    f"{emb.source}: the store grew from {len(self):,} to {len(emb.ids):,} rows since; add the new rows: "
                    f"simlabel graph {emb.source} --update {self.meta.get('path') or 'GRAPH_DIR'} --out GRAPH_DIR")
            raise InputError(f"the {what} {self.meta.get('path') or '(in memory)'} was built from other embeddings "
                             f"({self.meta.get('embeddings', '?')}) than {emb.source}; build it from these: "
                             f"simlabel graph {emb.source} --out GRAPH_DIR")
        if self._matched is emb.ids:
            return  # these very ids were compared already (a method asking many times: TypiClust per cluster)
        if len(self) != len(emb.ids) or not np.array_equal(self.ids.astype(str), emb.ids.astype(str)):
            raise InputError(f"the {what} ({len(self):,} rows) does not hold the rows of {emb.source} "
                             f"({len(emb.ids):,}) in the same order; rebuild it")
        self._matched = emb.ids

    # -- sparse views, no new queries ------------------------------------------------------------
    def adjacency(self, *, k: int | None = None, power: float = 1.0, symmetric: bool = True,
                  combine: str = "max") -> scipy.sparse.csr_matrix:
        """``W`` (n, n): ``W[i, j] = max(s_ij, 0) ** power`` for ``j`` among the ``k`` neighbours of ``i``.

        ``symmetric``: ``max(W, W^T)`` (``combine="max"``) or ``(W + W^T) / 2`` (``"mean"``), the
        undirected graph label propagation needs.
        """
        g = self if k is None else self.truncate(k)
        return similarity_affinity(g.neighbors, g.similarities, power=power, symmetric=symmetric, combine=combine,
                                   dtype=np.float32)

    def reverse(self, *, k: int | None = None) -> scipy.sparse.csr_matrix:
        """Row ``j`` lists the rows that have ``j`` among their neighbours (with the similarity)."""
        return self.adjacency(k=k, symmetric=False).T.tocsr()

    def distance_csr(self, *, k: int | None = None) -> scipy.sparse.csr_matrix:
        """The graph as scikit-learn / cleanlab expect a precomputed ``knn_graph``: cosine distances
        ``1 - s``, each row's ``k`` entries sorted by distance."""
        import scipy.sparse as sp

        g = self if k is None else self.truncate(k)
        if (g.neighbors < 0).any():
            raise InputError("the graph has rows with fewer than k neighbours; a knn_graph needs k in every row")
        n, kk = g.neighbors.shape
        dist = np.clip(1.0 - g.similarities, 0.0, None).astype(np.float32)
        return sp.csr_matrix((dist.ravel(), g.neighbors.ravel(), np.arange(0, n * kk + 1, kk)), shape=(n, n))


def neighbours_among(graph: KnnGraph, queries: np.ndarray, allowed: np.ndarray, k: int,
                     vectors: np.ndarray | Callable[[], np.ndarray] | None = None) -> Neighbors:
    """The ``k`` nearest *allowed* rows of each query row (e.g. training rows of test rows), from the graph.

    Each query keeps its graph neighbours that are allowed, best first; a query whose graph row
    holds fewer than ``k`` allowed neighbours is answered by exact search among the allowed rows
    (``vectors``: the store's matrix, or a function loading it, called only then), so the answer is the
    one a query over the allowed rows would give (for an exact graph; ties aside); where that function
    returns ``None`` (a graph given without its store) such a row keeps the allowed neighbours the graph
    holds, ``-1`` after them. Returns positions into the graph's rows.
    """
    allowed = np.asarray(allowed, dtype=bool)
    q = np.asarray(queries, dtype=np.int64)
    nb = graph.neighbors[q].astype(np.int64)
    sim = graph.similarities[q]
    if allowed.all() and k <= graph.k and (nb[:, :k] >= 0).all():
        return Neighbors(nb[:, :k], sim[:, :k])  # every row allowed: the graph's rows as they are
    ok = (nb >= 0) & allowed[np.maximum(nb, 0)] & (nb != q[:, None])
    # stable: the kept neighbours stay in graph order (best first)
    order = np.argsort(~ok, axis=1, kind="stable")
    nb_k = np.take_along_axis(nb, order, axis=1)[:, :k]
    sim_k = np.take_along_axis(sim, order, axis=1)[:, :k]
    short = ok.sum(axis=1) < k
    if short.any():
        if vectors is None:
            raise InputError(f"{int(short.sum())} rows have fewer than {k} allowed neighbours in the graph; "
                             "pass the vectors to query them")
        X = vectors() if callable(vectors) else vectors
        if X is None:  # the graph alone (no store given): those rows keep the allowed neighbours it holds
            nb_k = np.where(np.take_along_axis(ok, order, axis=1)[:, :k], nb_k, -1)
            sim_k = np.where(nb_k >= 0, sim_k, -np.inf).astype(np.float32)
        else:
            nb_k[short], sim_k[short] = _exact_neighbours(X, np.flatnonzero(allowed), q[short], k)
    return Neighbors(nb_k, sim_k)


def neighbours_within(graph: KnnGraph, rows: np.ndarray, k: int, vectors: np.ndarray | None = None) -> Neighbors:
    """The ``k`` nearest neighbours of each of ``rows`` among ``rows`` themselves, as positions
    into ``rows`` (``-1``: none), from the graph.

    The k-NN graph of a subset (the labelled images of paper 003's stage 1, say) read from the
    graph of the whole store: :func:`neighbours_among` with the subset as both the queries and
    the allowed rows (rows whose graph row holds fewer than ``k`` members of the subset are
    answered by exact search among them, with ``vectors``).
    """
    rows = np.asarray(rows, dtype=np.int64)
    allowed = np.zeros(len(graph), dtype=bool)
    allowed[rows] = True
    if int(allowed.sum()) != len(rows):  # a row given twice (a mask count: no sort of the rows)
        raise InputError("neighbours_within: rows must be distinct graph rows")
    nb, sims = neighbours_among(graph, rows, allowed, k, vectors=vectors)
    member = np.full(len(graph), -1, dtype=np.int64)
    member[rows] = np.arange(len(rows))
    return Neighbors(np.where(nb >= 0, member[np.maximum(nb, 0)], -1), sims)


# -- the one neighbour resolver ------------------------------------------------------------------


class GraphRows:
    """The rows a label method works on when it is handed a graph: the graph's ids and the provenance
    of the store it was built from, read from the graph folder; the vectors are read only if the method
    asks for them (``matrix``, ``rows``: exact search for a row with too few allowed neighbours, a model's
    features), from ``emb``.

    Made by :func:`graph_rows`. It answers ``ids``, ``positions``, ``has``, ``source``, ``fingerprint``
    and ``space`` as :class:`~simlabel.store.Embeddings` does.
    """

    def __init__(self, graph: KnnGraph, emb: str | os.PathLike | Embeddings | None = None) -> None:
        self.graph = graph
        self.ids = graph.ids
        self._emb = emb
        self._loaded: Embeddings | None = emb if isinstance(emb, Embeddings) else None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"GraphRows({len(self):,} rows of {self.source})"

    @property
    def source(self) -> str:
        return str(self.graph.meta.get("embeddings") or self.graph.meta.get("path") or "the graph's embeddings")

    @property
    def fingerprint(self) -> str | None:
        return self.graph.fingerprint

    @property
    def space(self) -> str | None:
        return self.graph.meta.get("space")

    def positions(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return self.graph.positions_of(ids).astype(np.int64)

    def has(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return self.graph.contains(ids)

    @property
    def has_vectors(self) -> bool:
        """Whether the store was given (so its vectors can be read when asked)."""
        return self._emb is not None

    def embeddings(self) -> Embeddings:
        """The store's vectors, loaded on first use (and checked against the graph)."""
        if self._loaded is None:
            if self._emb is None:
                raise InputError(f"this needs the vectors of {self.source}, not only its graph: pass `emb`")
            self._loaded = as_embeddings(self._emb)
            self.graph.check_matches(self._loaded)
        return self._loaded

    @property
    def matrix(self) -> np.ndarray:
        return self.embeddings().matrix

    def rows(self, ids: Sequence[str] | np.ndarray, missing: str = "raise") -> Embeddings:
        return self.embeddings().rows(ids, missing=missing)


def graph_rows(emb: str | os.PathLike | Embeddings | None, graph: str | os.PathLike | KnnGraph | None
               ) -> tuple[Embeddings | GraphRows, KnnGraph | None]:
    """The rows a label method works on, and its graph: with a graph, :class:`GraphRows` (the store's
    vectors left unread); without, the loaded embeddings.

    With a graph, ``emb`` may be ``None`` (the graph records which store it was built from): no vector is then
    read, and where a method asks for the neighbours among a subset (the labelled items, a sample), a row
    whose graph row holds fewer than ``k`` of them keeps those it holds instead of an exact search. Given as a
    folder, it is checked without reading its vectors: its row count (from the shards' footers) and space,
    and its path against the graph's record; only where these differ are its ids read and compared (the
    refusal of :meth:`KnnGraph.check_matches`, which names a store that grew since). Loaded embeddings are
    compared by their ids.

    Raises
    ------
    InputError
        Neither given; a graph of other embeddings.
    """
    if graph is None:
        if emb is None:
            raise InputError("give the embeddings (`emb`) or a graph of them (`graph`)")
        return as_embeddings(emb), None
    g = as_graph(graph)
    if isinstance(emb, Embeddings):
        g.check_matches(emb)
    elif emb is not None and not _same_store(g, emb):
        g.check_matches(open_store(emb))  # the ids only, never the vectors
    return GraphRows(g, emb), g


def _same_store(graph: KnnGraph, emb: str | os.PathLike) -> bool:
    """Whether the folder ``emb`` is the one ``graph`` was built from, as far as its footers tell: the same
    path, row count and space (an appended or re-embedded store differs in one of them)."""
    from simlabel.store import embedding_space, list_shards, read_metadata, readable

    recorded = graph.meta.get("embeddings")
    folder = readable(emb)
    if recorded is None or is_url(recorded) or Path(recorded).resolve() != Path(folder).resolve():
        return False
    shards = list_shards(folder)
    if not shards:
        return False
    n = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    dim = pq.ParquetFile(shards[0]).schema_arrow.field("embedding").type.list_size
    return n == len(graph) and embedding_space(read_metadata(folder), dim) == graph.meta.get("space")



class NeighbourSource:
    """Where a label method's neighbours come from, resolved once by :func:`neighbour_source`.

    ``source(rows)`` returns the ``k`` nearest allowed neighbours of each query row (positions
    into the vectors), itself excluded, best first, as :class:`~simlabel.index.Neighbors` of
    positions into the vectors (no ``among``) or into ``among``; ``-1`` where fewer exist.
    ``summary`` says where they came from, for the method's summary JSON.
    """

    def __init__(self, query, k: int, summary: dict, rows: np.ndarray) -> None:
        self._query = query
        self.k = int(k)
        self.summary = summary
        self.rows = rows  # the default queries: the allowed rows

    def __call__(self, rows: np.ndarray, k: int | None = None) -> Neighbors:
        # ``k`` lets a source stand where ``NeighborIndex.knn_positions(rows, k)`` is expected
        if k is not None and k > self.k:
            raise InputError(f"{k} neighbours asked of a source resolved for k = {self.k}")
        nb, sim = self._query(np.asarray(rows, dtype=np.int64))
        return Neighbors(nb, sim) if k is None or k == self.k else Neighbors(nb[:, :k], sim[:, :k])

    def __repr__(self) -> str:
        return f"NeighbourSource(k={self.k}, {self.summary})"


def neighbour_source(emb: str | os.PathLike | Embeddings | GraphRows | np.ndarray | None, k: int, *,
                     among: np.ndarray | None = None,
                     graph: str | os.PathLike | KnnGraph | None = None,
                     index: str | os.PathLike | NeighborIndex | None = None,
                     kind: str = "auto", seed: int = 0) -> NeighbourSource:
    """The one rule by which every label method finds neighbours.

    Parameters
    ----------
    emb
        The embeddings (a store folder, loaded :class:`~simlabel.store.Embeddings`, or a plain
        ``(n, d)`` matrix for the numerical cores). With a ``graph`` it may be ``None`` or
        :class:`GraphRows`: the neighbours are then read from the graph and the vectors only where
        exact search is needed, and never without the store (:func:`graph_rows`).
    k
        Neighbours per query row.
    among
        Positions (into ``emb``) of the rows that may be neighbours, e.g. the labelled items;
        ``None``: every row. With ``among`` the answers are positions into ``among``.
    graph
        A k-NN graph of ``emb`` (a folder made by ``simlabel graph`` or a :class:`KnnGraph`).
        Used first when given; its ``k`` must be at least ``k``. With ``among``, each row keeps its
        graph neighbours that are allowed, and a row with fewer than ``k`` of them is answered
        by exact search among the allowed rows (:func:`neighbours_among`), so the answer is the
        one a query would give (for an exact graph).
    index
        A k-NN index over ``emb`` (a saved file or a built
        :class:`~simlabel.index.NeighborIndex`), used when no graph is given. An index holds
        every row and cannot restrict its search, so with ``among`` a strict subset the
        neighbours are searched in a new index over the subset (the summary says so).
    kind
        With neither: the index built over the allowed rows, ``flat`` (exact), ``ivf``,
        ``hnsw`` or ``auto`` (:func:`~simlabel.index.auto_kind` of their number).
    seed
        The built index's seed (IVF training).

    Returns
    -------
    NeighbourSource
        Called with query rows, it returns their :class:`~simlabel.index.Neighbors`.

    Raises
    ------
    InputError
        Both ``graph`` and ``index`` given; no such ``graph`` folder; a graph or index of other
        embeddings (or, for a plain matrix, of another number of rows); a graph holding fewer
        than ``k`` neighbours per row; rows of ``among`` that are not distinct.
    ConfigError
        ``k`` not a positive integer, or an unknown ``kind``.
    StoreError
        The embeddings or the graph folder cannot be loaded, or a saved index's files disagree.
    FileNotFoundError
        A saved ``index`` with a missing file.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import neighbour_source
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> source = neighbour_source(X, 1)
    >>> source(np.arange(4)).neighbors.ravel().tolist()
    [1, 0, 3, 2]
    >>> source.summary
    {'source': 'built', 'kind': 'flat'}
    """
    positive_int(k, "k")
    one_of(kind, ("auto", "flat", "ivf", "hnsw"), "kind")
    if graph is not None and index is not None:
        raise InputError("give either `graph` or `index`, not both: a graph already holds the neighbours")
    plain = isinstance(emb, np.ndarray)
    if plain:
        e = None
    elif isinstance(emb, GraphRows):
        e = emb
    else:  # with a graph, its rows: the vectors are read only if a query needs them
        e, graph = graph_rows(emb, graph)
    X = emb if plain else None
    n = len(emb) if plain else len(e.ids)
    allowed_pos = None if among is None else np.asarray(among, dtype=np.int64)
    mask = None
    if allowed_pos is not None:
        mask = np.zeros(n, dtype=bool)
        mask[allowed_pos] = True
        if int(mask.sum()) != len(allowed_pos):  # a row given twice (a mask count: np.unique hashed 0.5 s a million)
            raise InputError("among: the allowed rows must be distinct")
    whole = allowed_pos is None or len(allowed_pos) == n
    rows_ok = np.arange(n) if allowed_pos is None else allowed_pos
    member = None
    if allowed_pos is not None:
        member = np.full(n, -1, dtype=np.int64)
        member[allowed_pos] = np.arange(len(allowed_pos))

    def into_among(nb: Neighbors) -> Neighbors:
        if member is None:
            return nb
        return Neighbors(np.where(nb.neighbors >= 0, member[np.maximum(nb.neighbors, 0)], -1), nb.similarities)

    def vectors() -> np.ndarray | None:
        if isinstance(e, GraphRows) and not e.has_vectors:
            return None  # a graph alone: rows short of allowed neighbours keep what the graph holds
        return X if plain else e.matrix

    if graph is not None:
        g = as_graph(graph)
        if plain:
            if len(g) != n:
                raise InputError(f"the graph ({len(g):,} rows) does not hold the {n:,} rows of the vectors")
        elif not (isinstance(e, GraphRows) and e.graph is g):
            g.check_matches(e)
        g.check_k(k)
        summary = {"source": "graph", "path": g.meta.get("path"), "graph_k": g.k, "index": g.meta.get("index")}
        if allowed_pos is None:
            return NeighbourSource(lambda rows: g.knn_positions(rows, k), k, summary, rows_ok)
        return NeighbourSource(lambda rows: into_among(neighbours_among(g, rows, mask, k, vectors=vectors)), k,
                               summary, rows_ok)
    if index is not None:
        idx = index if isinstance(index, NeighborIndex) else NeighborIndex.load(index)
        if plain:
            if len(idx) != n:
                raise InputError(f"the index ({len(idx):,} rows) does not hold the {n:,} rows of the vectors")
        else:
            check_index_matches(idx, e, "index" if isinstance(index, NeighborIndex) else f"index {index}")
        if whole:
            return NeighbourSource(lambda rows: into_among(idx.knn_positions(rows, k)), k,
                                   {"source": "index", "kind": idx.kind,
                                    "path": None if isinstance(index, NeighborIndex) else str(index)}, rows_ok)
    chosen = kind if kind != "auto" else auto_kind(len(rows_ok))
    ids = np.arange(n).astype(str) if plain else e.ids
    built = NeighborIndex.build(ids[rows_ok], vectors()[rows_ok], IndexConfig(kind=chosen, seed=seed))
    summary = {"source": "built", "kind": chosen}
    if index is not None:
        summary["why"] = "the index holds every row; the neighbours among a subset are searched over the subset"
    own = np.arange(n) if member is None else member

    def query(rows: np.ndarray) -> Neighbors:
        at = own[rows]
        inside = at >= 0
        if inside.all():
            return built.knn_positions(at, k)
        nb = np.full((len(rows), k), -1, dtype=np.int64)
        sim = np.full((len(rows), k), -np.inf, dtype=np.float32)
        if inside.any():
            nb[inside], sim[inside] = built.knn_positions(at[inside], k)
        got = built.search(vectors()[rows[~inside]], min(k, len(built)))
        w = got.neighbors.shape[1]
        nb[~inside, :w], sim[~inside, :w] = got.neighbors, got.similarities
        return Neighbors(nb, sim)

    return NeighbourSource(query, k, summary, rows_ok)


def neighbours_for(emb: str | os.PathLike | Embeddings | np.ndarray, k: int, *, rows: np.ndarray | None = None,
                   among: np.ndarray | None = None, graph: str | os.PathLike | KnnGraph | None = None,
                   index: str | os.PathLike | NeighborIndex | None = None, kind: str = "auto",
                   seed: int = 0) -> Neighbors:
    """The ``k`` nearest neighbours of ``rows`` (default: every row, or every row of ``among``),
    by :func:`neighbour_source`'s one rule.

    Parameters
    ----------
    emb, k, among, graph, index, kind, seed
        As :func:`neighbour_source`.
    rows
        Query rows, positions into ``emb``; ``None``: ``among`` (the k-NN graph of a subset), or
        every row.

    Returns
    -------
    Neighbors
        ``(len(rows), k)`` positions (into ``emb``, or into ``among`` when given) and cosine
        similarities, best first, ``-1`` where fewer exist.

    Raises
    ------
    InputError, ConfigError, StoreError, FileNotFoundError
        As :func:`neighbour_source`.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import neighbours_for
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> neighbours_for(X, 1, among=np.array([0, 2, 3])).neighbors.ravel().tolist()
    [2, 2, 1]
    """
    src = neighbour_source(emb, k, among=among, graph=graph, index=index, kind=kind, seed=seed)
    return src(src.rows if rows is None else rows)


# -- building ------------------------------------------------------------------------------------


def _block_path(out: Path, b: int) -> Path:
    return out / "blocks" / f"part-{b:05d}.parquet"


def _write_block(path: Path, rows: np.ndarray, nb: np.ndarray, sim: np.ndarray) -> None:
    """One block of the folder: ``rows`` (store positions, ascending) and their neighbours."""
    k = nb.shape[1]
    table = pa.table({
        "row": pa.array(np.asarray(rows, dtype=np.int64)),
        "neighbors": pa.FixedSizeListArray.from_arrays(pa.array(nb.ravel().astype(np.int32)), k),
        "similarities": pa.FixedSizeListArray.from_arrays(pa.array(sim.ravel().astype(np.float32)), k),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _read_block(path: Path, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # memory-mapped: the block's buffers are the file's pages, copied once into the graph's arrays
    t = pq.read_table(path, memory_map=True)
    rows = t.column("row").to_numpy()
    nb = t.column("neighbors").combine_chunks().flatten().to_numpy().reshape(-1, k)
    sim = t.column("similarities").combine_chunks().flatten().to_numpy().reshape(-1, k)
    return rows, nb, sim


def _exact_neighbours(vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search: the ``k`` nearest of ``rows`` (positions into ``vectors``) to each query position,
    the query itself left out (:func:`~simlabel.index.drop_self_matches`); ``-1`` where fewer exist."""
    from simlabel.index import drop_self_matches

    rows = np.asarray(rows, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    flat = NeighborIndex.build(rows.astype(str), vectors[rows], IndexConfig(kind="flat"))
    pos, sims = flat.search(vectors[queries], min(k + 1, len(rows)))
    pos = np.where(pos >= 0, rows[np.maximum(pos, 0)], -1)
    sims, pos = drop_self_matches(sims, pos, queries)
    short = k - pos.shape[1]
    if short > 0:
        pos = np.pad(pos, ((0, 0), (0, short)), constant_values=-1)
        sims = np.pad(sims, ((0, 0), (0, short)), constant_values=-np.inf)
    return pos[:, :k], sims[:, :k]


def graph_kind(n: int, recall: float, index: str = "auto", on_disk: bool = False) -> str:
    """The index a graph of ``n`` rows is built with: ``index`` unless ``auto``; ``auto`` is exact
    (``flat``) for a recall of 1 or up to :data:`GRAPH_FLAT_MAX` rows, where the exact product costs
    less than tuning and measuring an IVF join, and the IVF join above (always with ``on_disk``)."""
    if on_disk:
        return "ivf"
    if index != "auto":
        return index
    return "flat" if recall >= 1.0 or n <= GRAPH_FLAT_MAX else "ivf"


@writes_to_url("out")
def build_graph(emb: str | os.PathLike | Embeddings, out: str | os.PathLike | None = None,
                config: GraphConfig | None = None, *, progress: bool = True, **options) -> KnnGraph:
    """Build the k-NN graph of an embedding store at the recall asked for (see the module docstring).

    ``index="auto"`` (the default) searches exactly up to :data:`GRAPH_FLAT_MAX` rows (or for
    ``recall=1``) and above by an IVF join (:mod:`simlabel.allpairs`): the rows laid out list by
    list and each list compared with every row that probes it in one matrix product. Its list
    count and probes are tuned on ``tune_sample`` rows to the cheapest setting whose recall@k
    reaches ``recall`` (HNSW's ``efSearch`` likewise with ``index="hnsw"``), and the graph's
    recall@k is measured again against exact search on ``recall_sample`` other rows, recorded in
    ``meta["recall_at_k"]`` (and ``graph.json``); ``meta["tuning"]`` keeps the settings weighed.
    Each row's own position is left out and its neighbours sorted best first (ties by
    neighbour position). With ``out``, each block is written atomically, so a killed build
    resumes at the first missing block, and a folder holding the complete graph of the same job
    is loaded instead of rebuilt.

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        An embedding folder or a loaded :class:`~simlabel.store.Embeddings`.
    out : str or os.PathLike, optional
        The graph folder to write (resumable), holding its one-writer lock while building;
        ``None``: in memory only.
    config : GraphConfig, optional
        How to build it (default ``GraphConfig()``: ``k=50``, ``recall=0.95``, ``index="auto"``).
    progress : bool, default True
        Show a progress bar.
    **options
        Fields of :class:`GraphConfig` that override ``config``'s (``k=10, recall=0.99``):
        ``k``, ``recall``, ``index``, ``block_rows``, ``recall_sample``, ``tune_sample``, ``seed``,
        ``threads``, ``index_options``, ``engine``, ``address``, ``on_disk``.

    Returns
    -------
    KnnGraph
        The complete graph (its ``meta["path"]`` the folder, with ``out``).

    Raises
    ------
    InputError
        ``k`` not smaller than the number of rows; ``on_disk`` or ``engine="ray"`` without
        ``out``; ``out`` a file.
    ConfigError
        A config field out of its domain (e.g. ``k`` not a positive integer, ``recall`` outside
        ``(0, 1]``, an unknown ``index`` or ``engine``, ``on_disk`` with an index other than IVF).
    StoreError
        The embeddings cannot be loaded; ``out`` holds a graph of other options or
        embeddings, or a block that does not hold the rows it should.
    LockedError
        Another simlabel process is writing ``out``.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings, build_graph
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> graph = build_graph(Embeddings(["a", "b", "c", "d"], X, {"path": "mem"}), k=1, progress=False)
    >>> graph.neighbors.ravel().tolist(), graph.meta["recall_at_k"]
    ([1, 0, 3, 2], 1.0)
    >>> graph = build_graph("emb/", "graph/", k=50, recall=0.95)  # doctest: +SKIP

    Notes
    -----
    The IVF join opens the store without loading it (:func:`~simlabel.store.open_store`) and
    reads it block by block: its memory is the rows laid out once (``n * d * 4`` bytes), the
    graph's own ``n * k * 8`` bytes and one block. With ``on_disk`` the laid-out rows are a
    memory-mapped file under ``out/index/`` (removed when the graph is complete), so the memory
    that cannot be paged out is the graph and one block, whatever the store's size.
    """
    cfg = config or GraphConfig()
    if options:
        cfg = GraphConfig(**{**cfg.__dict__, **options})
    rows = open_store(emb)
    n = len(rows)
    if cfg.k >= n:
        raise InputError(f"k = {cfg.k} needs more than {cfg.k} rows; {rows.source} has {n:,}")
    kind = graph_kind(n, cfg.recall, cfg.index, cfg.on_disk)
    params = {"kind": kind, "chosen_by": "auto" if cfg.index == "auto" else "user", **cfg.index_options}
    if cfg.on_disk:
        params["on_disk"] = True
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "k": cfg.k, "n": n, "index": params,
            "recall_target": cfg.recall, "block_rows": cfg.block_rows, "embeddings": rows.source,
            "embeddings_fingerprint": rows.fingerprint, "space": rows.space,
            "tie_rule": "similarity descending, then neighbour position ascending",
            "neighbors": "int32 row positions into ids.parquet; -1 where fewer than k were found"}
    build = _build_ivf if kind == "ivf" else _build
    if out is None:
        if cfg.on_disk or cfg.engine == "ray":
            raise InputError(f"{'on_disk' if cfg.on_disk else 'engine=ray'} writes its blocks to files: give an out folder")
        return build(rows, emb, None, cfg, meta, progress)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; `out` takes a graph folder")
    with exclusive(out):
        done = _start(out, meta, rows.ids)
        if done is not None:
            return done
        return build(rows, emb, out, cfg, meta, progress)


def _same_job(old: dict, new: dict) -> bool:
    keys = ("k", "n", "index", "recall_target", "block_rows", "embeddings_fingerprint")
    return all(old.get(k) == new.get(k) for k in keys)


def _serves(old: dict, new: dict) -> bool:
    """Whether a complete graph already answers an ``auto`` request: the same rows and ``k``, and exact (``flat``)
    or measured at the recall asked for or more (a graph folder of an earlier version, or built at a higher
    target, is reused rather than refused)."""
    same_rows = all(old.get(key) == new.get(key) for key in ("k", "n", "embeddings_fingerprint"))
    asked_auto = new["index"].get("chosen_by") == "auto" and not new["index"].keys() - {"kind", "chosen_by", "on_disk"}
    kind = (old.get("index") or {}).get("kind")
    good = kind == "flat" or (old.get("recall_at_k") or 0.0) >= new["recall_target"]
    return same_rows and asked_auto and good


def _start(out: Path, meta: dict, ids: np.ndarray) -> KnnGraph | None:
    """Open (or resume) the graph folder: the complete graph if it is there, else ``None``."""
    meta_path = out / META
    if meta_path.exists():
        old = read_json(meta_path, "graph metadata")
        if old.get("state") == "complete" and _serves(old, meta):
            return load_graph(out)
        if not _same_job(old, meta):
            raise StoreError(f"{out} holds a graph of other options or embeddings (k {old.get('k')}, "
                             f"{old.get('index', {}).get('kind')}, recall {old.get('recall_target')}, "
                             f"{old.get('embeddings')}); choose another `out` or delete it")
        if old.get("state") == "complete":
            return load_graph(out)
    (out / "blocks").mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, {**meta, "state": "building", "run": run_record()})
    ids_path = out / "ids.parquet"
    if not ids_path.exists():
        with atomic_path(ids_path) as tmp:
            pq.write_table(pa.table({"id": pa.array(ids.astype(str))}), tmp)
    return None


def _finish(out: Path | None, rows: StoreRows, nb_all: np.ndarray, sim_all: np.ndarray, meta: dict, cfg: GraphConfig,
            n_blocks: int, tune_rows: np.ndarray) -> KnnGraph:
    """The graph's recall measured on a fresh sample (none of the tuning rows), its meta written last."""
    sample = _recall_sample(len(rows), cfg, tune_rows)
    recall = None
    if len(sample):
        from simlabel.allpairs import exact_sample

        exact = exact_sample(rows, sample, cfg.k, block_rows=cfg.block_rows, threads=cfg.threads)
        recall = float(recall_at_k(nb_all[sample].astype(np.int64), exact.neighbors))
    return _complete(out, rows.ids, nb_all, sim_all, meta, recall, n_blocks, len(sample))


def _complete(out: Path | None, ids: np.ndarray, nb_all: np.ndarray, sim_all: np.ndarray, meta: dict, recall: float | None,
              n_blocks: int, sample_size: int) -> KnnGraph:
    meta = {**meta, "recall_at_k": recall, "recall_sample": sample_size, "state": "complete", "n_blocks": n_blocks}
    graph = KnnGraph(ids, nb_all, sim_all, meta)
    if out is not None:
        atomic_write_json(out / META, {**meta, "run": run_record()})
        for p in out.glob("index.faiss*"):
            p.unlink()
        import shutil

        shutil.rmtree(out / "index", ignore_errors=True)
        graph.meta["path"] = str(out)
    return graph


def _recall_sample(n: int, cfg: GraphConfig, not_in: np.ndarray | None = None) -> np.ndarray:
    """The rows the recall is measured on: ``recall_sample`` drawn from those not in ``not_in``."""
    pool = np.arange(n) if not_in is None or not len(not_in) else np.setdiff1d(np.arange(n), not_in)
    if len(pool) == 0:  # a tiny store tuned on every row: measure on them all the same
        pool = np.arange(n)
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(pool, size=min(cfg.recall_sample, len(pool)), replace=False))


def _tuning_rows(rows: StoreRows, cfg: GraphConfig):
    """The tuning sample and its exact neighbours (drawn apart from the recall sample's seed)."""
    from simlabel.allpairs import exact_sample

    n = len(rows)
    tune = np.sort(np.random.default_rng(cfg.seed + 1).choice(n, size=min(cfg.tune_sample, n), replace=False))
    return tune, exact_sample(rows, tune, cfg.k, block_rows=cfg.block_rows, threads=cfg.threads)


def _build(rows: StoreRows, emb, out: Path | None, cfg: GraphConfig, meta: dict, progress: bool) -> KnnGraph:
    """A graph queried block by block from one index over the loaded store (``flat`` or ``hnsw``)."""
    e = as_embeddings(emb)
    n, k = len(e.ids), cfg.k
    index_path = out / "index.faiss" if out is not None else None
    starts = list(range(0, n, cfg.block_rows))
    todo = [b for b, s in enumerate(starts) if out is None or not _block_path(out, b).exists()]
    index = None
    tune_rows = np.empty(0, dtype=np.int64)
    tuning = _read_tuning(out)
    if todo:
        if index_path is not None and index_path.exists():
            index = NeighborIndex.load(index_path)
        else:
            index = NeighborIndex.build(e.ids, e.matrix, IndexConfig(kind=meta["index"]["kind"], threads=cfg.threads,
                                        **cfg.index_options))
            if index.kind == "hnsw" and "hnsw_ef_search" not in cfg.index_options:
                tune_rows, tuning = _tune_hnsw(index, rows, cfg)
            if index_path is not None:
                _write_tuning(out, tuning)
                index.save(index_path)
    if tuning is not None:
        tune_rows = np.asarray(tuning["rows"], dtype=np.int64)
        meta = {**meta, "tuning": {key: v for key, v in tuning.items() if key != "rows"}}
    nb_all = np.empty((n, k), dtype=np.int32)
    sim_all = np.empty((n, k), dtype=np.float32)
    # one task per block (in this process, or Ray tasks sharing the index through the object store); each
    # block's rows come back to fill the graph, so only the blocks of an earlier run are read from disk
    calls = [(None if out is None else str(_block_path(out, b)), starts[b], min(starts[b] + cfg.block_rows, n), k)
             for b in todo]
    _map(_query_block, (index,), calls, cfg, "graph", len(starts), progress, on_result=_filler(nb_all, sim_all))
    done = [(b, np.arange(s, min(s + cfg.block_rows, n))) for b, s in enumerate(starts) if b not in set(todo)]
    _read_done_blocks(out, done, k, nb_all, sim_all)
    return _finish(out, rows, nb_all, sim_all, meta, cfg, len(starts), tune_rows)


def _tune_hnsw(index: NeighborIndex, rows: StoreRows, cfg: GraphConfig) -> tuple[np.ndarray, dict]:
    """HNSW's ``efSearch``: the smallest of 16, 32, ... 4096 (at least ``k + 1``) whose recall@k on the
    tuning sample reaches ``cfg.recall`` (its lower bound); set on ``index``."""
    import dataclasses

    from simlabel.allpairs import lower_bound
    from simlabel.index import recall_per_row

    tune, exact = _tuning_rows(rows, cfg)
    trials = []
    ef = max(16, cfg.k + 1)
    while True:
        index.config = dataclasses.replace(index.config, hnsw_ef_search=ef)
        index._apply_search_params()
        per_row = recall_per_row(index.knn_positions(tune, cfg.k).neighbors, exact.neighbors)
        trials.append({"ef_search": ef, "recall": round(float(per_row.mean()), 4), "recall_low": round(lower_bound(per_row), 4)})
        if trials[-1]["recall_low"] >= cfg.recall or ef >= 4096:
            break
        ef *= 2
    return tune, {"ef_search": ef, "tuned_recall": trials[-1]["recall"], "tuned_recall_low": trials[-1]["recall_low"],
                  "sample": int(len(tune)), "trials": trials, "rows": tune.tolist()}


def _write_tuning(out: Path | None, tuning: dict | None) -> None:
    """The tuning a resumed build reads back instead of tuning again (under ``out/index``, removed when whole)."""
    if out is not None and tuning is not None:
        (out / "index").mkdir(exist_ok=True)
        atomic_write_json(out / "index" / "tuning.json", tuning)


def _read_tuning(out: Path | None) -> dict | None:
    path = None if out is None else out / "index" / "tuning.json"
    return read_json(path, "graph tuning") if path is not None and path.exists() else None


def _build_ivf(rows: StoreRows, emb, out: Path | None, cfg: GraphConfig, meta: dict, progress: bool) -> KnnGraph:
    """The graph by an IVF join (:mod:`simlabel.allpairs`), its lists and probes tuned to ``cfg.recall``;
    the store read block by block, never loaded whole."""
    from simlabel.allpairs import IvfPlan, join_units, lay_out, plan_ivf, unit

    n, k = len(rows), cfg.k
    if not cfg.on_disk:
        # in memory: the store read once, as unit rows, for the tuning, the join and the recall alike
        unit_rows = np.empty((n, rows.dim), dtype=np.float32)
        with task("graph: reading", n, unit="rows", enabled=progress) as bar:
            for start, X in rows.blocks(cfg.block_rows):
                unit_rows[start:start + len(X)] = unit(X)
                bar.advance(len(X))
        rows = StoreRows(rows.ids, {**rows.meta, "space": rows.space, "fingerprint": rows.fingerprint}, rows.dim,
                         matrix=unit_rows)
    work = None if out is None else out / "index"
    tuning = _read_tuning(out)
    plan_file = None if work is None else work / "centroids.npy"
    if tuning is not None and plan_file.exists():  # a resumed build: the plan it chose, not tuned again
        plan = IvfPlan(np.load(plan_file), int(tuning["nprobe"]), tuning["tuned_recall"], tuning["tuned_recall_low"],
                       tuning["trials"])
        tune_rows = np.asarray(tuning["rows"], dtype=np.int64)
    else:
        opts = cfg.index_options
        with task("graph: tuning the lists", 1, unit="steps", enabled=progress) as bar:
            tune_rows, exact = _tuning_rows(rows, cfg)
            fixed_probe = opts.get("ivf_nprobe")
            if fixed_probe is None and cfg.recall >= 1.0:
                fixed_probe = n  # every list: exact
            plan = plan_ivf(rows, k, cfg.recall, tune_rows, exact, nlist=opts.get("ivf_nlist"),
                            nprobe=fixed_probe, seed=cfg.seed, threads=cfg.threads)
            bar.advance(1)
        tuning = {**plan.record(), "sample": int(len(tune_rows)), "rows": tune_rows.tolist()}
        if work is not None:
            work.mkdir(exist_ok=True)
            with atomic_path(plan_file) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, plan.centroids)
            _write_tuning(out, tuning)
    with task("graph: lists", 2 * n if cfg.on_disk else n, unit="rows", enabled=progress) as bar:
        layout = lay_out(rows, plan, block_rows=cfg.block_rows, threads=cfg.threads, on_block=bar.advance,
                         path=work / "lists.npy" if cfg.on_disk else None)
    units = join_units(layout.offsets, cfg.block_rows)
    expected = [np.sort(layout.order[layout.offsets[a]:layout.offsets[b]]) for a, b in units]
    todo = [u for u in range(len(units)) if out is None or not _block_path(out, u).exists()]
    nb_all = np.empty((n, k), dtype=np.int32)
    sim_all = np.empty((n, k), dtype=np.float32)
    # workers of an on-disk build map the laid-out file themselves; in memory the array is shared
    vectors = str(work / "lists.npy") if cfg.on_disk else layout.vectors
    calls = [(None if out is None else str(_block_path(out, u)), units[u][0], units[u][1], k) for u in todo]
    _map(_join_block, (vectors, layout.offsets, layout.probes, layout.order, layout.at, cfg.threads), calls, cfg, "graph",
         len(units), progress, on_result=_filler(nb_all, sim_all))
    _read_done_blocks(out, [(u, expected[u]) for u in range(len(units)) if u not in set(todo)], k, nb_all, sim_all)
    short = np.flatnonzero((nb_all < 0).any(axis=1))
    if len(short):
        # rows whose probed lists hold fewer than k others (a small list far from the rest): exact search, and
        # their blocks written again, so every row has k neighbours (a resumed build finds and mends them alike)
        from simlabel.allpairs import exact_sample

        exact = exact_sample(rows, short, k, block_rows=cfg.block_rows, threads=cfg.threads)
        nb_all[short], sim_all[short] = sort_rows(exact.neighbors, exact.similarities)
        for u, members in enumerate(expected):
            if out is not None and np.isin(members, short).any():
                _write_block(_block_path(out, u), members, nb_all[members], sim_all[members])
        meta = {**meta, "rows_searched_exactly": int(len(short))}
    del layout, vectors
    meta = {**meta, "tuning": {key: v for key, v in tuning.items() if key != "rows"}}
    return _finish(out, rows, nb_all, sim_all, meta, cfg, len(units), tune_rows)


def _join_block(vectors, offsets: np.ndarray, probes: np.ndarray, order: np.ndarray, at: np.ndarray | None,
                threads: int | None, path: str | None, a: int, b: int, k: int) -> tuple:
    """One unit of the join (lists ``[a, b)``): its rows' neighbours, sorted, written (``path`` None: in
    memory only); a Ray task, or local."""
    from simlabel.allpairs import join_lists
    from simlabel.threads import faiss_threads

    if isinstance(vectors, str):
        vectors = np.load(vectors, mmap_mode="r")
    with faiss_threads(threads):
        rows, nb, sim = join_lists(vectors, offsets, probes, order, a, b, k, at=at)
    at = np.argsort(rows)
    rows, (nb, sim) = rows[at], sort_rows(nb[at], sim[at])
    if path is not None:
        _write_block(Path(path), rows, nb, sim)
    return rows, nb, sim


def _checked_block(out: Path, b: int, expected: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, nb, sim = _read_block(_block_path(out, b), k)
    if not np.array_equal(rows, expected):
        raise StoreError(f"{_block_path(out, b)}: holds rows {rows[:3].tolist()}.. ({len(rows)}), expected "
                         f"{expected[:3].tolist()}.. ({len(expected)}); delete it to rebuild that block")
    return nb, sim


def _query_block(index: NeighborIndex, path: str | None, start: int, stop: int, k: int) -> tuple:
    """One block: query, sort, write (``path`` None: in memory only); a Ray task, or local."""
    nb, sim = sort_rows(*index.knn_positions(np.arange(start, stop), k))
    rows = np.arange(start, stop)
    if path is not None:
        _write_block(Path(path), rows, nb, sim)
    return rows, nb, sim


def _filler(nb_all: np.ndarray, sim_all: np.ndarray):
    """An ``on_result`` for :func:`_map`: a queried block's rows into the graph's arrays."""
    def fill(result: tuple) -> None:
        rows, nb, sim = result
        nb_all[rows], sim_all[rows] = nb, sim
    return fill


def _read_done_blocks(out: Path | None, done: list[tuple[int, np.ndarray]], k: int, nb_all: np.ndarray,
                      sim_all: np.ndarray) -> None:
    """The blocks an earlier (killed) run wrote (``(block, its rows)``), read into the graph's arrays."""
    for b, expected in done:
        nb_all[expected], sim_all[expected] = _checked_block(out, b, expected, k)


def _map(fn, shared: tuple, calls: list[tuple], cfg: GraphConfig, label: str, total: int, progress: bool, *,
         completed: int | None = None, on_result=None) -> None:
    """``fn(*shared, *call)`` for every call: in this process, or as Ray tasks (``cfg.engine``) with
    the shared arguments put once in the object store. Each call writes its own file; ``on_result`` gets
    each call's result here, in the driver."""
    completed = total - len(calls) if completed is None else completed
    if cfg.engine != "ray":
        with task(label, total, unit="blocks", completed=completed, enabled=progress) as bar:
            for call in calls:
                result = fn(*shared, *call)
                if on_result is not None:
                    on_result(result)
                bar.advance(1)
                checkpoint(min_interval=30.0)  # an output on object storage: the blocks so far, every 30 s
        return
    from simlabel.distributed import ray_session

    ray, started = ray_session(cfg.address)
    try:
        refs = [ray.put(x) for x in shared]  # built once, shared by every task through the object store
        remote = ray.remote(fn)
        pending = [remote.remote(*refs, *call) for call in calls]
        with task(f"{label} (ray)", total, unit="blocks", completed=completed, enabled=progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for result in ray.get(done):
                    if on_result is not None:
                        on_result(result)
                bar.advance(len(done))
                checkpoint(min_interval=30.0)
    finally:
        if started:
            ray.shutdown()


def load_graph(path: str | os.PathLike, *, k: int | None = None) -> KnnGraph:
    """Read a complete graph folder written by :func:`build_graph` (or ``simlabel graph``).

    Parameters
    ----------
    path : str or os.PathLike
        The graph folder, or the URL of one published on object storage (``s3://bucket/run/graph``).
    k : int, optional
        Truncate to the ``k`` best neighbours of each row (at most the graph's ``k``);
        ``None``: every neighbour the graph holds.

    Returns
    -------
    KnnGraph
        The graph, its ``meta`` what ``graph.json`` records plus the folder's ``path``.

    Raises
    ------
    InputError
        No such folder, or ``k`` larger than the graph's.
    StoreError
        ``graph.json`` missing or not valid, not a simlabel graph, a graph still being built
        (or whose build was killed: run ``simlabel graph`` again with the same options), or
        a missing block.

    Examples
    --------
    >>> from simlabel import load_graph
    >>> graph = load_graph("graph/", k=10)  # doctest: +SKIP
    >>> neighbors, sims = graph.knn_ids(["sku-1"], 10)  # doctest: +SKIP
    """
    p = Path(local_copy(path) if is_url(path) else path)  # a graph published on object storage: its local copy
    if not p.is_dir():
        raise InputError(f"{p}: no such graph folder (made by `simlabel graph EMB_DIR --out {p}`)")
    meta = read_json(p / META, "graph metadata")
    if meta.get("format") != FORMAT:
        raise StoreError(f"{p / META}: not a simlabel graph (format {meta.get('format')!r})")
    if meta.get("state") != "complete":
        raise StoreError(f"{p}: the graph is still being built or its build was killed; run `simlabel graph` "
                         "again with the same options to finish it")
    ids = pq.read_table(p / "ids.parquet").column("id").to_numpy(zero_copy_only=False).astype(object)
    kk = int(meta["k"])
    nb = np.empty((len(ids), kk), dtype=np.int32)
    sim = np.empty((len(ids), kk), dtype=np.float32)
    for b in range(int(meta["n_blocks"])):
        bp = _block_path(p, b)
        if not bp.exists():
            raise StoreError(f"{bp}: missing block of a graph marked complete; rebuild the graph")
        rows, bn, bs = _read_block(bp, kk)
        nb[rows], sim[rows] = bn, bs
    g = KnnGraph(ids, nb, sim, {**meta, "path": str(p)})
    return g.truncate(k) if k is not None else g


def as_graph(graph: str | os.PathLike | KnnGraph) -> KnnGraph:
    return graph if isinstance(graph, KnnGraph) else load_graph(graph)


def update_graph(graph: str | os.PathLike | KnnGraph, emb: str | os.PathLike | Embeddings,
                 out: str | os.PathLike | None = None, *, block_rows: int = 8192, recall_sample: int = 1000,
                 seed: int = 0, progress: bool = True) -> KnnGraph:
    r"""Add a grown store's new rows to an existing k-NN graph, without building it again.

    ``emb`` holds every row of ``graph`` (by id, in any order) and new ones. Each new row gets its ``k``
    nearest neighbours among all the rows by exact search; each old row keeps its list, into which the new
    rows enter where they are nearer than its ``k``-th neighbour: the product of the old rows and the new ones
    is taken in blocks of ``block_rows`` old rows, and each row's list is the best ``k`` of its old list and
    its best ``k`` new rows. With an exact graph (``flat``) the result is the graph a rebuild would give
    (identical lists, up to the order of equal similarities); with IVF or HNSW, the old rows' lists keep the
    recall they had and the new rows' are exact; the recall@k is measured again on ``recall_sample`` rows.
    The cost is :math:`O(n \, m \, d)` for ``m`` new rows, against :math:`O(n^2 d)` for an exact rebuild.

    Parameters
    ----------
    graph : str, os.PathLike or KnnGraph
        The graph of the store before it grew (a folder made by ``simlabel graph``, or loaded).
    emb : str, os.PathLike or Embeddings
        The grown store (the same space as the graph's).
    out : str or os.PathLike, optional
        The graph folder to write (written whole beside and swapped in, under a lock: it may be ``graph``'s own
        folder); ``None``: in memory only.
    block_rows : int, default 8192
        Old rows per block of the product (memory ``block_rows * m * 4`` bytes).
    recall_sample : int, default 1000
        Rows whose recall@k against exact search is measured (``0``: not measured).
    seed : int, default 0
        Draws that sample.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    KnnGraph
        The graph of the grown store, in its row order; ``meta["updated_from"]`` names the graph it grew from
        (its embeddings' fingerprint), ``meta["new_rows"]`` how many rows were added.

    Raises
    ------
    InputError
        Ids of the graph missing from ``emb`` (an update adds rows; it cannot drop them), embeddings of another
        space, ``block_rows`` under 1, or ``out`` a file.
    StoreError
        A graph folder that cannot be read.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import Embeddings, build_graph
    >>> from simlabel.graph import update_graph
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.95, 0.05]], dtype=np.float32)
    >>> old = build_graph(Embeddings(list("abcd"), X[:4], {"path": "mem"}), k=1, index="flat", progress=False)
    >>> new = update_graph(old, Embeddings(list("abcde"), X, {"path": "mem"}), progress=False)
    >>> new.neighbors.ravel().tolist()  # e enters a's and b's lists; its own nearest is a
    [4, 4, 3, 2, 0]
    """
    if block_rows < 1:
        raise InputError(f"`block_rows` must be at least 1; got {block_rows}")
    g = as_graph(graph)
    e = as_embeddings(emb)
    if g.meta.get("space") and g.meta["space"] != e.space:
        raise InputError(f"the graph was built from embeddings of {g.meta['space']}; {e.source} holds {e.space}")
    k, n = g.k, len(e.ids)
    at = pd.Index(e.ids.astype(str)).get_indexer(g.ids.astype(str))  # old position -> position in the grown store
    if (at < 0).any():
        missing = g.ids[at < 0]
        raise InputError(f"{len(missing):,} ids of the graph are not in {e.source}, e.g. {', '.join(map(str, missing[:5]))}: "
                         "an update adds rows, it cannot drop them (build the graph again)")
    is_old = np.zeros(n, dtype=bool)
    is_old[at] = True
    new_rows = np.flatnonzero(~is_old)
    nb_all = np.full((n, k), -1, dtype=np.int32)
    sim_all = np.full((n, k), -np.inf, dtype=np.float32)
    nb_all[at] = np.where(g.neighbors >= 0, at[np.maximum(g.neighbors, 0)], -1)
    sim_all[at] = g.similarities
    X = np.ascontiguousarray(e.matrix, dtype=np.float32)
    if len(new_rows):
        nb_new, sim_new = _exact_neighbours(X, np.arange(n), new_rows, k)
        # cosine, as the index computes it: unit rows (a store's are unit already; a matrix handed over may not be)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        nb_all[new_rows], sim_all[new_rows] = nb_new, sim_new
        Xn = X[new_rows]
        kk = min(k, len(new_rows))
        blocks = range(0, len(at), block_rows)
        with task("graph update", len(blocks), unit="blocks", enabled=progress) as bar:
            for start in blocks:
                rows = at[start : start + block_rows]
                S = X[rows] @ Xn.T
                # only rows with a new row nearer than their k-th neighbour change (about k m of n, few of them)
                enters = S.max(axis=1) > np.where(nb_all[rows, -1] < 0, -np.inf, sim_all[rows, -1])
                if not enters.any():
                    bar.advance(1)
                    continue
                rows, S = rows[enters], S[enters]
                top = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < S.shape[1] else np.tile(np.arange(kk), (len(rows), 1))
                cand_nb = np.concatenate([nb_all[rows], new_rows[top].astype(np.int32)], axis=1)
                cand_sim = np.concatenate([sim_all[rows], np.take_along_axis(S, top, axis=1)], axis=1)
                nb_s, sim_s = sort_rows(cand_nb, cand_sim)
                nb_all[rows], sim_all[rows] = nb_s[:, :k], sim_s[:, :k]
                bar.advance(1)
    recall = None
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(recall_sample, n), replace=False)) if recall_sample else np.array([], int)
    if recall_sample:
        from simlabel.allpairs import exact_sample

        exact = exact_sample(StoreRows.from_embeddings(e), sample, k)
        recall = float(recall_at_k(nb_all[sample].astype(np.int64), exact.neighbors))
    meta = {**{key: v for key, v in g.meta.items() if key not in ("path", "run")}, "n": n,
            "embeddings": e.source, "embeddings_fingerprint": e.fingerprint, "space": e.space,
            "updated_from": {"embeddings_fingerprint": g.meta.get("embeddings_fingerprint"), "n": len(g.ids),
                             "path": g.meta.get("path")},
            "new_rows": int(len(new_rows)), "block_rows": int(block_rows)}
    if out is None:
        return _complete(None, e.ids, nb_all, sim_all, meta, recall, 0, len(sample))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; `out` takes a graph folder")
    with exclusive(out), atomic_dir(out) as tmp:
        with atomic_path(tmp / "ids.parquet") as f:
            pq.write_table(pa.table({"id": pa.array(e.ids.astype(str))}), f)
        starts = range(0, n, block_rows)  # the blocks of the product are the folder's blocks too
        for b, s in enumerate(starts):
            _write_block(_block_path(tmp, b), np.arange(s, min(s + block_rows, n)), nb_all[s : s + block_rows],
                         sim_all[s : s + block_rows])
        made = _complete(tmp, e.ids, nb_all, sim_all, meta, recall, len(starts), len(sample))
    made.meta["path"] = str(out)
    return made
