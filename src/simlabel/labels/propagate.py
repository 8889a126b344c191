"""Label propagation on a k-NN graph (Zhu & Ghahramani, 2002): the baseline of paper 000.

Graph: ``A[u, v] = 1`` iff ``v`` is one of the ``k`` nearest neighbours of ``u``
(directed, as in paper 000; ``symmetric=True`` uses ``max(A, A^T)``). The
transition matrix is the row-normalised ``P = D^-1 A``. With label
distributions ``Y`` (one row per node, one-hot for labeled nodes) each step is::

    Y <- P Y ;  Y[L] <- Y_L          (labeled nodes clamped)

Run to convergence this reaches the harmonic solution
``Y_U = (I - P_UU)^-1 P_UL Y_L`` (Zhu & Ghahramani 2002, section 2.3); paper
000 runs as many steps as its augmentation took, so ``steps`` is an argument.
Everything is ``scipy.sparse``: memory is ``O(n k + n C)``.

``method="spread"`` solves the closed form of label spreading instead (Zhou et al. 2004;
Iscen et al., CVPR 2019, who use ``k = 50`` and similarities to the power 3)::

    W = max(s, 0) ** power, symmetric      S = D^-1/2 W D^-1/2      (I - alpha S) Z = Y

for every class at once by conjugate gradient (:func:`spread_labels`; ``I - alpha S`` is
symmetric positive definite for ``alpha < 1``). A node's label is the argmax of its row of
``Z``; classes without seeds and components without a seed get nothing; each node's
confidence is its winning share and Iscen's weight ``1 - H(z) / log C``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from simlabel.errors import InputError
from simlabel.files import exclusive
from simlabel.index import NeighborIndex
from simlabel.labels.augment import UNLABELED
from simlabel.labels.io import read_labels, write_labels
from simlabel.store import Embeddings

if TYPE_CHECKING:
    from simlabel.graph import KnnGraph


def knn_adjacency(neighbors: np.ndarray, n: int | None = None, *, symmetric: bool = False) -> sp.csr_matrix:
    """Binary adjacency from a ``(n, k)`` neighbour-position matrix (``-1`` = none)."""
    from simlabel.graph import knn_csr

    nb = np.asarray(neighbors)
    a = knn_csr(nb, np.ones(nb.shape, dtype=np.float32), n)
    a.sum_duplicates()  # a neighbour listed twice is one edge
    a.data[:] = 1.0
    if symmetric:
        a = a.maximum(a.T).tocsr()
    return a


def similarity_adjacency(neighbors: np.ndarray, similarities: np.ndarray, n: int | None = None, *,
                         power: float = 3.0) -> sp.csr_matrix:
    """``W = max(W_d, W_d^T)`` with ``W_d[i, j] = max(s_ij, 0) ** power`` for ``j`` among ``i``'s neighbours
    (Iscen et al. 2019's affinity; ``-1`` neighbours are skipped): :func:`simlabel.graph.similarity_affinity`."""
    from simlabel.graph import similarity_affinity

    return similarity_affinity(neighbors, similarities, n, power=power)


def _row_of_entries(a: sp.csr_matrix) -> np.ndarray:
    """The row of each stored entry of ``a`` (what scaling by a diagonal needs, without a sparse product)."""
    return np.repeat(np.arange(a.shape[0], dtype=np.int32), np.diff(a.indptr))


def row_normalize(a: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1 A``; rows with no edge stay zero."""
    a = sp.csr_matrix(a, copy=True)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg, dtype=np.float64), where=deg > 0).astype(np.float32)
    a.data *= inv[_row_of_entries(a)]
    return a


def threaded_product(s: sp.csr_matrix, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``v -> s @ v`` for ``(n, C)`` blocks on ``threads`` threads (default: the cores, at most 8): the rows cut
    into one slice per thread and each column a single-vector product (scipy's, which releases the GIL; its
    several-column product is twice slower per column). Each row is summed as ``s @ v`` sums it, so the result
    is the same, bit for bit."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    s = sp.csr_matrix(s)
    threads = max(1, min(threads or os.cpu_count() or 1, 8))
    cuts = np.linspace(0, s.shape[0], threads + 1).astype(int)
    parts = [(a, b, s[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def product(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        out = np.empty((s.shape[0],) + v.shape[1:], dtype=np.result_type(s.dtype, v.dtype))
        cols = [None] if v.ndim == 1 else range(v.shape[1])

        def one(job):
            (a, b, part), j = job
            if j is None:
                out[a:b] = part @ v
            else:
                out[a:b, j] = part @ np.ascontiguousarray(v[:, j])
        jobs = [(p, j) for p in parts for j in cols]
        if len(jobs) == 1:
            one(jobs[0])
        else:
            with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
                list(pool.map(one, jobs))
        return out
    return product


@dataclass
class PropagationResult:
    """``distribution`` (n, C) after the last step; ``label`` its argmax where a node
    received any mass (``-1`` otherwise); ``confidence`` the winning share."""

    distribution: np.ndarray
    label: np.ndarray
    confidence: np.ndarray
    steps: int
    converged: bool
    #: Iscen et al.'s per-node weight ``1 - H / log C`` (``method="spread"`` only)
    weight: np.ndarray | None = None


@dataclass
class Propagated:
    """What :func:`propagate` made: the propagated labels, the raw result and a summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        ``id, label, confidence, source`` (``source`` ``"propagated"``; and ``weight``, Iscen et
        al.'s ``1 - H / log C``, with ``method="spread"``): the unlabelled nodes a label reached.
        ``confidence`` is the winning class's share of the node's distribution.
    result : PropagationResult
        The distributions over every node of the graph (labelled nodes first, then the
        unlabelled sample), their argmax and confidence, the steps and whether they converged.
    summary : dict
        ``method``, ``k``, the nodes (``n_nodes``, ``n_labelled``, ``n_unlabelled``), the
        ``classes``, ``n_labels`` (rows of ``labels``), ``steps``, ``converged`` and
        ``neighbours`` (where the neighbours came from).

    Notes
    -----
    Unpacking it as the 2-tuple ``(labels, result)`` that :func:`propagate` returned before still
    works, with a :class:`DeprecationWarning`.

    Examples
    --------
    Built by hand here (``result`` left as ``None``); :func:`propagate` makes it.

    >>> import pandas as pd
    >>> from simlabel import Propagated
    >>> labels = pd.DataFrame({"id": ["b"], "label": ["Shirts"], "confidence": [0.8], "source": ["propagated"]})
    >>> made = Propagated(labels, None, {"method": "iterate", "k": 10})
    >>> made.labels["id"].tolist()
    ['b']
    """

    labels: pd.DataFrame
    result: PropagationResult
    summary: dict

    def __iter__(self):
        # scripts written for the 2-tuple this function returned before (README, issue 23) keep working
        warnings.warn("propagate() returns a Propagated (labels, result, summary); unpacking it as (labels, result) "
                      "is deprecated", DeprecationWarning, stacklevel=2)
        return iter((self.labels, self.result))


def propagate_labels(
    transition: sp.csr_matrix,
    labels: np.ndarray,
    n_classes: int | None = None,
    *,
    steps: int | None = 10,
    tol: float = 1e-6,
    max_steps: int = 1000,
    callback: Callable[[int, float], None] | None = None,
) -> PropagationResult:
    """Iterate ``Y <- P Y`` with labeled rows clamped.

    ``labels`` holds a class code per node, ``-1`` for unlabeled. ``steps=None``
    iterates until the largest change is below ``tol`` (or ``max_steps``).
    """
    labels = np.asarray(labels)
    n = transition.shape[0]
    if labels.shape != (n,):
        raise InputError(f"labels must have shape ({n},); got {labels.shape}")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    is_labeled = labels != UNLABELED
    y_l = np.zeros((int(is_labeled.sum()), n_classes), dtype=np.float32)
    y_l[np.arange(len(y_l)), labels[is_labeled]] = 1.0
    y = np.zeros((n, n_classes), dtype=np.float32)
    y[is_labeled] = y_l
    limit = max_steps if steps is None else steps
    converged = False
    done = 0
    for done in range(1, limit + 1):
        new = transition @ y
        new[is_labeled] = y_l
        delta = float(np.abs(new - y).max()) if n else 0.0
        y = new
        if callback:
            callback(done, delta)
        if delta < tol:
            converged = True
            break
    mass = y.sum(axis=1)
    label = np.where(mass > 0, y.argmax(axis=1), UNLABELED).astype(np.int32)
    conf = np.divide(y.max(axis=1), mass, out=np.zeros_like(mass), where=mass > 0)
    return PropagationResult(y, label, conf, done, converged)


def normalized_affinity(w: sp.csr_matrix) -> sp.csr_matrix:
    """``S = D^-1/2 W D^-1/2`` with the diagonal of ``W`` removed; isolated nodes get a zero row."""
    w = sp.csr_matrix(w, dtype=np.float64, copy=True)
    rows = _row_of_entries(w)
    diagonal = rows == w.indices
    if diagonal.any():  # a k-NN graph has none (each row's own position is left out)
        w.data[diagonal] = 0.0
        w.eliminate_zeros()
        rows = _row_of_entries(w)
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    w.data *= inv[rows]
    w.data *= inv[w.indices]
    return w


def block_cg(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, *, tol: float = 1e-6, max_iter: int = 500,
             callback: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, int, bool]:
    """Conjugate gradient on ``A X = B`` for every column of ``B`` at once (``A`` symmetric positive
    definite, given by ``matvec(X) = A X``); columns stop when ``|r| <= tol |b|``. Returns
    ``(X, iterations, converged)``. Each iteration is one sparse-dense product over all columns; the
    updates run in place (a million rows: no new arrays per iteration)."""
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    step = np.empty_like(b)
    rs = np.einsum("ij,ij->j", r, r)
    target = (tol * np.linalg.norm(b, axis=0)) ** 2
    active = rs > target
    it = 0
    for it in range(1, max_iter + 1):
        if not active.any():
            return x, it - 1, True
        ap = matvec(p)
        pap = np.einsum("ij,ij->j", p, ap)
        a = np.divide(rs, pap, out=np.zeros_like(rs), where=active & (pap > 0))
        np.multiply(p, a, out=step)
        x += step
        np.multiply(ap, a, out=step)
        r -= step
        rs_new = np.einsum("ij,ij->j", r, r)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 0)
        p *= beta
        p += r
        rs = rs_new
        active = rs > target
        if callback:
            callback(it, float(np.sqrt(rs.max())) if rs.size else 0.0)
    return x, it, not active.any()


def spread_labels(weights: sp.csr_matrix, labels: np.ndarray, n_classes: int | None = None, *, alpha: float = 0.99,
                  tol: float = 1e-6, max_iter: int = 500,
                  callback: Callable[[int, float], None] | None = None) -> PropagationResult:
    """Label spreading's closed form ``Z = (I - alpha S)^-1 Y`` (Zhou et al. 2004), by block CG.

    ``weights``: a symmetric non-negative ``(n, n)`` affinity. ``labels``: a class code per node,
    ``-1`` for unlabeled. ``alpha`` in (0, 1). Returns a :class:`PropagationResult` whose
    ``distribution`` is ``Z`` (non-negative; a row of zeros where no seed reaches),
    ``confidence`` the winning share of the row, and ``weight`` ``1 - H(z/|z|) / log C``.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1); got {alpha}")
    labels = np.asarray(labels)
    n = weights.shape[0]
    if weights.shape != (n, n) or labels.shape != (n,):
        raise InputError(f"weights must be (n, n) and labels (n,); got {weights.shape} and {labels.shape}")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    s = normalized_affinity(weights)
    y = np.zeros((n, n_classes))
    lab = labels != UNLABELED
    y[np.flatnonzero(lab), labels[lab]] = 1.0
    product = threaded_product(s)

    def system(v: np.ndarray) -> np.ndarray:  # (I - alpha S) v
        out = product(v)
        out *= -alpha
        out += v
        return out

    z, iters, converged = block_cg(system, y, tol=tol, max_iter=max_iter, callback=callback)
    z = np.maximum(z, 0.0)  # exact Z is non-negative; CG's round-off is not
    mass = z.sum(axis=1)
    label = np.where(mass > 1e-12, z.argmax(axis=1), UNLABELED).astype(np.int32)
    share = np.divide(z, mass[:, None], out=np.zeros_like(z), where=mass[:, None] > 1e-12)
    conf = share.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(share > 0, share * np.log(share), 0.0).sum(axis=1)
    weight = np.where(mass > 1e-12, 1.0 - ent / np.log(max(n_classes, 2)), 0.0)
    res = PropagationResult(z.astype(np.float32), label, conf.astype(np.float32), iters, converged)
    res.weight = weight.astype(np.float32)
    return res


def harmonic_solution(transition: sp.csr_matrix, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """The closed form ``Y_U = (I - P_UU)^-1 P_UL Y_L`` (a sparse solve); rows of labeled nodes are one-hot."""
    import scipy.sparse.linalg as spla

    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    lab = labels != UNLABELED
    u = ~lab
    p = transition.tocsr()
    p_uu = p[u][:, u]
    p_ul = p[u][:, lab]
    y_l = np.zeros((int(lab.sum()), n_classes))
    y_l[np.arange(len(y_l)), labels[lab]] = 1.0
    a = (sp.identity(int(u.sum()), format="csc") - p_uu).tocsc()
    rhs = p_ul @ y_l
    y_u = spla.spsolve(a, rhs) if int(u.sum()) else np.zeros((0, n_classes))
    y = np.zeros((len(labels), n_classes))
    y[lab] = y_l
    y[u] = np.asarray(y_u).reshape(int(u.sum()), n_classes)
    return y


# -- files in, files out ------------------------------------------------------------------------


def propagate(
    emb: str | os.PathLike | Embeddings | None,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    k: int = 10,
    steps: int | None = 10,
    unlabeled_sample: int | None = None,
    symmetric: bool = False,
    exclude: Sequence[str] | None = None,
    seed: int = 0,
    index_kind: str = "auto",
    index: str | os.PathLike | NeighborIndex | None = None,
    out: str | os.PathLike | None = None,
    label_col: str = "label",
    graph: "str | os.PathLike | KnnGraph | None" = None,
    method: str = "iterate",
    alpha: float = 0.99,
    power: float = 3.0,
    tol: float = 1e-6,
) -> Propagated:
    """Label propagation over the k-NN graph of the labelled ids plus an unlabelled sample.

    As paper 000 (Zhu & Ghahramani 2002): the graph's nodes are the labelled points and
    ``unlabeled_sample`` points drawn (seeded) from the rest of the universe, never from
    ``exclude``. Edges are each node's ``k`` nearest neighbours among the nodes
    (``A[u, v] = 1``). With ``method="iterate"`` the label distributions ``F`` (one-hot on the
    labelled nodes) follow ``F <- P F`` with ``P = D^-1 A`` the row-normalised adjacency, the
    labelled rows clamped after each step; run to convergence this is the harmonic solution
    ``F_U = (I - P_UU)^-1 P_UL Y_L``. With ``"spread"``, Zhou et al.'s closed form
    ``F = (I - alpha S)^-1 Y`` (``S = D^-1/2 W D^-1/2`` for the symmetric affinity
    ``W = max(s, 0) ** power``; Iscen et al. 2019), solved by conjugate gradients. A node's label
    is the argmax of its row; a node no label reached gets none.

    Parameters
    ----------
    emb : str, os.PathLike, Embeddings or None
        The embeddings: a store folder or loaded :class:`~simlabel.store.Embeddings`. With a ``graph`` its
        vectors are read only for a node whose graph row holds fewer than ``k`` nodes (a sample or an
        ``exclude`` left others out), and it may be ``None`` where none does
        (:func:`simlabel.graph.graph_rows`).
    labels : str, os.PathLike or pandas.DataFrame
        The human labels: a CSV (``id,label``), a catalog with ``label_col`` (both read by
        :func:`read_labels`), or a table with ``id`` and ``label``.
    k : int, default 10
        Neighbours per node; must be less than the number of nodes.
    steps : int or None, default 10
        Iterations of ``iterate`` (paper 000 runs as many as its augmentation took); ``None``:
        until the largest change is below ``1e-6`` (at most 1000 steps).
    unlabeled_sample : int, optional
        How many unlabelled points join the graph (``None``: all of them).
    symmetric : bool, default False
        ``iterate`` on the symmetrised graph (``max(A, A^T)``) instead of the directed one.
    exclude : sequence of str, optional
        Ids never drawn as unlabelled nodes (e.g. the holdout); ids without an embedding are
        ignored.
    seed : int, default 0
        Seed of the unlabelled sample.
    index_kind : str, default "auto"
        With neither ``graph`` nor ``index``: the kind of the index built over the nodes
        (``flat``, ``ivf``, ``hnsw`` or ``auto``).
    index : str, os.PathLike or NeighborIndex, optional
        A saved or built index over ``emb`` (used as is when every point is a node).
    out : str or os.PathLike, optional
        Write the propagated labels there as CSV (atomically, under a lock on ``out``).
    label_col : str, default "label"
        The label column when ``labels`` is a catalog.
    graph : str, os.PathLike or KnnGraph, optional
        A k-NN graph of ``emb``: each node's ``k`` best neighbours among the nodes, with exact
        search among the nodes for a node whose graph row holds fewer than ``k`` of them.
        ``graph``, ``index`` and ``index_kind`` follow :func:`simlabel.graph.neighbour_source`'s
        one rule (a graph, else an index, else a new index over the nodes); all three give the
        same edges for exact search.
    method : {"iterate", "spread"}, default "iterate"
        ``iterate`` (paper 000's clamped steps) or ``spread`` (the closed form; ``steps`` and
        ``symmetric`` are then ignored).
    alpha : float, default 0.99
        ``spread``'s clamping, in ``(0, 1)``.
    power : float, default 3.0
        ``spread``: the exponent of the similarities in the affinity.
    tol : float, default 1e-6
        ``spread``: conjugate gradient stops when every class's residual is at most ``tol`` times its
        start (:func:`block_cg`). On the 1M-row benchmark graph ``1e-4`` takes 30 iterations instead of 55
        and gives the same labels, with confidences within 0.06 (RESULTS.md §12).

    Returns
    -------
    Propagated
        ``labels``: ``id,label,confidence,source`` (+ ``weight`` with ``spread``) for the
        unlabelled nodes a label reached; ``result``: the raw :class:`PropagationResult`;
        ``summary``: the counts, steps and convergence (``neighbours`` says where they came from).

    Raises
    ------
    InputError
        An unknown ``method``, ``k`` of at least the number of nodes, ``alpha`` outside
        ``(0, 1)``, both ``graph`` and ``index``, or a graph/index of other embeddings.
    LabelFileError
        A label file that cannot be read.
    MissingIdsError
        Labelled ids without an embedding.
    StoreError
        ``emb`` is not a complete embedding folder.
    LockedError
        Another process is writing ``out``.

    See Also
    --------
    augment : The label augmentation paper 000 compares with this baseline.

    Examples
    --------
    >>> from simlabel import propagate
    >>> made = propagate("emb/", "seeds.csv", k=10, unlabeled_sample=20_000)  # doctest: +SKIP
    >>> made.labels.head()  # doctest: +SKIP

    The clamped iteration itself on a chain of four nodes, labelled at both ends:

    >>> import numpy as np
    >>> from simlabel.labels.propagate import knn_adjacency, propagate_labels, row_normalize
    >>> P = row_normalize(knn_adjacency(np.array([[1, -1], [0, 2], [1, 3], [2, -1]])))
    >>> res = propagate_labels(P, np.array([0, -1, -1, 1]), steps=None)
    >>> res.label.tolist(), [round(float(c), 2) for c in res.confidence]
    ([0, 0, 1, 1], [1.0, 0.67, 0.67, 1.0])
    """
    from simlabel.graph import graph_rows, neighbour_source

    if method not in ("iterate", "spread"):
        raise InputError(f"method must be iterate or spread; got {method!r}")
    # with a graph, its rows: the store's vectors are read only for a node whose graph row holds too few nodes
    embeddings, graph = graph_rows(emb, graph)
    ids = embeddings.ids
    lab = labels if isinstance(labels, pd.DataFrame) else read_labels(labels, known_ids=ids, label_col=label_col)
    classes = sorted(lab["label"].unique())
    lab_pos = embeddings.positions(lab["id"])
    blocked = np.zeros(len(ids), dtype=bool)
    blocked[lab_pos] = True
    if exclude is not None and len(exclude):
        ex = embeddings.positions(np.asarray(exclude)[embeddings.has(exclude)])
        blocked[ex] = True
    pool = np.flatnonzero(~blocked)
    rng = np.random.default_rng(seed)
    if unlabeled_sample is not None and unlabeled_sample < len(pool):
        pool = np.sort(rng.choice(pool, size=unlabeled_sample, replace=False))
    nodes = np.concatenate([lab_pos, pool])
    code = {c: i for i, c in enumerate(classes)}
    node_labels = np.concatenate([lab["label"].map(code).to_numpy(np.int32), np.full(len(pool), UNLABELED, np.int32)])
    if k >= len(nodes):
        raise InputError(f"k={k} is too large: the graph has {len(nodes):,} nodes ({len(lab_pos):,} labelled + "
                         f"{len(pool):,} unlabelled), so each has at most {len(nodes) - 1:,} neighbours")
    # the k nearest nodes of each node: from the graph (exact search for a node whose graph row
    # holds fewer than k nodes), the index, or a new index over the nodes: one rule, one answer
    knn = neighbour_source(embeddings, k, among=nodes, graph=graph, index=index, kind=index_kind)
    nbr, sims = knn(nodes)
    if method == "iterate":
        p = row_normalize(knn_adjacency(nbr, len(nodes), symmetric=symmetric))
        res = propagate_labels(p, node_labels, len(classes), steps=steps)
    else:
        res = spread_labels(similarity_adjacency(nbr, sims, len(nodes), power=power), node_labels, len(classes),
                            alpha=alpha, tol=tol)
    unl = np.arange(len(lab_pos), len(nodes))
    got = unl[res.label[unl] >= 0]
    table = pd.DataFrame(
        {
            "id": ids[nodes[got]],
            "label": np.asarray(classes, dtype=object)[res.label[got]],
            "confidence": np.round(res.confidence[got], 6),
            "source": "propagated",
        }
    )
    if res.weight is not None:
        table["weight"] = np.round(res.weight[got], 6)
    if out is not None:
        with exclusive(out):
            write_labels(table, out)
    summary = {"method": method, "k": k, "n_nodes": int(len(nodes)), "n_labelled": int(len(lab_pos)),
               "n_unlabelled": int(len(pool)), "classes": [str(c) for c in classes], "n_labels": int(len(table)),
               "steps": int(res.steps), "converged": bool(res.converged),
               "neighbours": knn.summary}
    return Propagated(table, res, summary)
