"""Paper 001's evaluation of frozen embeddings: probes (Acc, R@90, R@95) and colour entropy.

* :func:`probe`: a linear or one-hidden-layer (``mlp``) head trained on the frozen embeddings
  to predict a categorical column, scored on a stratified held-out split: accuracy and R@90 /
  R@95 (:func:`simlabel.metrics.recall_at_precision`: per class the largest recall at a
  threshold whose precision is >= 0.90 / 0.95, 0 for a class that never gets there, averaged
  over classes). The colour probe is the same on ``base_colour``: a colour-agnostic embedding
  predicts colour worse while its design accuracy (``article_type``) holds.
* :func:`colour_entropy`: k-means on the L2-normalised embeddings (FAISS, several seeds) and
  the entropy (nats) of the colour distribution inside each cluster, averaged over clusters
  weighted by their size (:func:`simlabel.metrics.cluster_label_entropy`). Higher: clusters
  mix colours, the embedding groups designs regardless of colour.
* :func:`design_recall`: what a shop uses SkiLL for, finding the same design in other colours. For
  each query item of a design group (:func:`simlabel.catalog.design_groups`), the share of its
  group's items *of another colour* that are among its ``k`` nearest neighbours in the whole
  catalog (recall@k), averaged over the queries. :func:`split_designs` holds half the groups out
  (seeded): training may see the other half as product positives (:func:`hide_designs`), and the
  recall is measured on the held-out half, whose pairs no run was given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from simlabel.errors import InputError
from simlabel.heads import EmbeddingClassifier, HeadConfig, stratified_split
from simlabel.metrics import cluster_label_entropy, recall_at_precision
from simlabel.store import Embeddings, as_embeddings

__all__ = ["colour_entropy", "design_recall", "hide_designs", "probe", "split_designs"]


def _aligned(emb: str | os.PathLike | Embeddings, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    e = as_embeddings(emb)
    lab = labels.dropna().astype(str)  # before astype: NaN would become the class "nan"
    lab = lab[(lab != "") & (lab.str.upper() != "NA")]
    pos = pd.Index(e.ids.astype(str)).get_indexer(lab.index.astype(str))
    keep = pos >= 0
    if not keep.any():
        raise InputError("no labelled id has an embedding: are the labels and embeddings of one catalog?")
    return e.matrix[pos[keep]], lab.to_numpy()[keep]


def probe(emb: str | os.PathLike | Embeddings, labels: pd.Series, *, kind: str = "linear", test_frac: float = 0.3,
          min_count: int = 10, seed: int = 0, device: str = "cpu", progress: bool = False) -> dict:
    """Train a probe on frozen embeddings and score it on a held-out split.

    Parameters
    ----------
    emb
        an embedding folder or a loaded :class:`~simlabel.store.Embeddings`.
    labels
        one label per id (the Series' index): e.g. ``table.set_index("id")["article_type"]``.
        Empty and ``NA`` labels are left out.
    kind
        ``linear`` (a dense layer) or ``mlp`` (one hidden layer of 512, the paper's "non-linear").
    test_frac
        share of each class held out (stratified, seeded).
    min_count
        classes with fewer rows are left out (too few to split); their number is reported.

    Returns
    -------
    dict
        ``accuracy``, ``r90``, ``r95``, ``n_train``, ``n_test``, ``n_classes``, ``n_classes_dropped``.
    """
    if kind not in ("linear", "mlp"):
        raise InputError(f"kind must be linear or mlp; got {kind!r}")
    X, y = _aligned(emb, labels)
    classes, counts = np.unique(y, return_counts=True)
    kept = set(classes[counts >= min_count])
    mask = np.isin(y, list(kept))
    X, y = X[mask], y[mask]
    if len(kept) < 2:
        raise InputError(f"fewer than two classes with at least {min_count} rows to probe")
    codes = np.searchsorted(np.array(sorted(kept)), y)
    train, test = stratified_split(codes, int(round(test_frac * len(y))), seed)
    clf = EmbeddingClassifier(HeadConfig(head=kind, seed=seed, device=device), progress_label=f"probe {kind}")
    clf.fit(X[train], y[train])
    proba = clf.predict_proba(X[test])
    order = pd.Index(clf.classes_).get_indexer(sorted(kept))
    proba = proba[:, order]
    pred = proba.argmax(1)
    return {
        "accuracy": float((pred == codes[test]).mean()),
        "r90": recall_at_precision(codes[test], proba, 0.90)["macro"],
        "r95": recall_at_precision(codes[test], proba, 0.95)["macro"],
        "n_train": int(len(train)), "n_test": int(len(test)), "n_classes": len(kept),
        "n_classes_dropped": int(len(classes) - len(kept)),
    }


def colour_entropy(emb: str | os.PathLike | Embeddings, colours: pd.Series, *, k: int = 50,
                   seeds: Sequence[int] = (0, 1, 2), niter: int = 25) -> dict:
    """Size-weighted mean entropy of ``colours`` inside k-means clusters of the embeddings.

    Returns ``{"mean": ..., "sd": ..., "per_seed": [...], "overall": H(colours), "k": k}``.
    """
    import faiss

    X, c = _aligned(emb, colours)
    X = np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12), dtype=np.float32)
    if k < 2 or k > len(X):
        raise InputError(f"k must be in 2..{len(X)} (the rows with a colour); got {k}")
    values = []
    for s in seeds:
        km = faiss.Kmeans(X.shape[1], k, niter=niter, seed=int(s) + 1, spherical=True, verbose=False)
        km.train(X)
        _, assign = km.index.search(X, 1)
        values.append(cluster_label_entropy(assign[:, 0], c)["weighted"])
    v = np.asarray(values)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "per_seed": v.tolist(),
            "overall": cluster_label_entropy(np.zeros(len(c)), c)["weighted"], "k": int(k)}


def split_designs(products: pd.Series, *, seed: int = 0, held_frac: float = 0.5) -> tuple[list[str], list[str]]:
    """The design groups (product values held by two rows or more) split at random into a training half and a
    held-out half, by ``seed``.

    Returns
    -------
    (train, held) : list of str, list of str
        The group values, each sorted. ``held`` holds ``round(held_frac * groups)`` of them.

    Examples
    --------
    >>> import pandas as pd
    >>> train, held = split_designs(pd.Series(["d1", "d1", "d2", "d2", "x", "d3", "d3", "d4", "d4"]), seed=0)
    >>> len(train), len(held), sorted(train + held)
    (2, 2, ['d1', 'd2', 'd3', 'd4'])
    """
    if not 0 < held_frac < 1:
        raise InputError(f"held_frac must lie in (0, 1); got {held_frac}")
    counts = products.astype(str).value_counts()
    groups = np.array(sorted(counts.index[counts >= 2]), dtype=object)
    order = np.random.default_rng(seed).permutation(len(groups))
    n_held = int(round(held_frac * len(groups)))
    held = sorted(groups[order[:n_held]].tolist())
    return sorted(groups[order[n_held:]].tolist()), held


def hide_designs(products: pd.Series, ids: pd.Series, held: Sequence[str]) -> pd.Series:
    """The product column training may see: each row of a ``held`` design group becomes a product of its own (its
    id), so no run is given a held-out pair; every other value is kept."""
    values = products.astype(str)
    hidden = values.isin(set(held)).to_numpy()
    return pd.Series(np.where(hidden, ids.astype(str).to_numpy(), values.to_numpy()), index=products.index,
                     name=products.name)


def design_recall(neighbors: np.ndarray, queries: np.ndarray, design: np.ndarray, colour: np.ndarray) -> dict:
    """Recall@k of same-design-other-colour items (module docstring), from the queries' nearest neighbours.

    Parameters
    ----------
    neighbors : ndarray of shape (m, k)
        Each query's ``k`` nearest rows (positions; itself excluded; ``-1`` where fewer).
    queries : ndarray of shape (m,)
        The queries' row positions.
    design : ndarray of shape (n,)
        Each row's design group (any hashable code; rows of no group may hold unique values).
    colour : ndarray of shape (n,)
        Each row's colour.

    Returns
    -------
    dict
        ``recall`` (the mean over queries with at least one item of their design in another colour), ``hit``
        (the share of those queries with at least one such item among their neighbours), ``n_queries``, ``k``.

    Examples
    --------
    Row 0's design has two items of another colour (rows 1 and 2) and one of its colour (row 3); its 3 neighbours
    hold row 1 and row 3: a recall of 1/2. Row 1 (blue) finds rows 0, 2 and 3, all of its design in other colours: 3/3.

    >>> import numpy as np
    >>> design = np.array(["a", "a", "a", "a", "b"])
    >>> colour = np.array(["red", "blue", "green", "red", "red"])
    >>> nb = np.array([[1, 3, 4], [0, 2, 3]])
    >>> design_recall(nb, np.array([0, 1]), design, colour)["recall"]
    0.75
    """
    nb = np.asarray(neighbors, dtype=np.int64)
    q = np.asarray(queries, dtype=np.int64)
    d = pd.factorize(pd.Series(np.asarray(design, dtype=object)).astype(str))[0]
    c = pd.factorize(pd.Series(np.asarray(colour, dtype=object)).astype(str))[0]
    if nb.ndim != 2 or len(nb) != len(q):
        raise InputError(f"neighbors must be (len(queries), k); got {nb.shape} for {len(q)} queries")
    # items of the query's design in another colour: the design's size less its items of the query's colour
    pairs = pd.DataFrame({"d": d, "c": c})
    size = pairs.groupby("d")["c"].transform("size").to_numpy()
    same_colour = pairs.groupby(["d", "c"])["c"].transform("size").to_numpy()
    relevant = (size - same_colour)[q]
    safe = np.maximum(nb, 0)
    hit = (nb >= 0) & (d[safe] == d[q][:, None]) & (c[safe] != c[q][:, None])
    ok = relevant > 0
    if not ok.any():
        raise InputError("no query has an item of its design in another colour")
    found = hit.sum(axis=1)[ok]
    return {"recall": float((found / relevant[ok]).mean()), "hit": float((found > 0).mean()),
            "n_queries": int(ok.sum()), "k": int(nb.shape[1])}

