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

__all__ = ["colour_entropy", "probe"]


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
