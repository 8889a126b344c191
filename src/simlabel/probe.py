"""`simlabel train` / `simlabel evaluate`: heads on embedding folders and label files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.heads import EmbeddingClassifier, HeadConfig, read_model_meta
from simlabel.labels.io import read_labels
from simlabel.labels.smoothing import SmoothingConfig, target_schedule
from simlabel.metrics import classification_report, mistake_severity, semantic_neighborhood_hits, topk_accuracy
from simlabel.store import atomic_write_json, load_embeddings, read_metadata


def gather_training_labels(
    labels: str | os.PathLike | pd.DataFrame,
    extra: Sequence[str | os.PathLike | pd.DataFrame] = (),
    *,
    known_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The training table: ``labels`` first, then each ``extra`` file's rows for ids not seen yet
    (so a verified label always wins over an augmented one). Adds a ``origin`` column."""
    frames = []
    for i, src in enumerate([labels, *extra]):
        df = src.copy() if isinstance(src, pd.DataFrame) else read_labels(src, known_ids=known_ids)
        df["origin"] = "labels" if i == 0 else (str(src) if not isinstance(src, pd.DataFrame) else f"extra{i}")
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(subset="id", keep="first").reset_index(drop=True)


def load_features(
    emb: str | os.PathLike,
    text_emb: str | os.PathLike | None = None,
    *,
    inputs: str = "image",
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(ids, X, input_dims)`` for ``inputs`` ``image`` (``emb``), ``text`` (``text_emb``) or
    ``image+text`` (both, concatenated per id; ids present in both only)."""
    if inputs not in ("image", "text", "image+text"):
        raise ValueError(f"inputs must be image, text or image+text; got {inputs!r}")
    if inputs != "image" and text_emb is None:
        raise ValueError(f"inputs {inputs!r} need text embeddings (--text-emb DIR, e.g. EMB_DIR/text)")
    if inputs == "text":
        ids, X = load_embeddings(text_emb)
        return ids, X, [X.shape[1]]
    ids, X = load_embeddings(emb)
    if inputs == "image":
        return ids, X, [X.shape[1]]
    tids, T = load_embeddings(text_emb)
    pos = pd.Index(tids).get_indexer(ids)
    keep = pos >= 0
    return ids[keep], np.concatenate([X[keep], T[pos[keep]]], axis=1), [X.shape[1], T.shape[1]]


def train(
    emb: str | os.PathLike,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    extra: Sequence[str | os.PathLike | pd.DataFrame] = (),
    out: str | os.PathLike | None = None,
    config: HeadConfig | None = None,
    weight_col: str | None = None,
    text_emb: str | os.PathLike | None = None,
    inputs: str | None = None,
    smoothing: SmoothingConfig | None = None,
    similarity: np.ndarray | None = None,
) -> EmbeddingClassifier:
    """Train a head on the embeddings of the labeled ids (plus ``extra`` label files).

    ``inputs``: ``image`` (default), ``text`` or ``image+text`` (default when ``text_emb`` is
    given with the fusion head). ``smoothing``: soft targets (paper 002); ``similarity`` a
    precomputed label similarity in sorted-class order. ``weight_col`` names a per-row
    sample-weight column of the label files. With ``out`` the model folder is written
    (``config.json`` + ``weights.pt``).
    """
    config = config or HeadConfig()
    if inputs is None:
        inputs = "image+text" if (text_emb is not None and config.head == "fusion") else "image"
    ids, matrix, dims = load_features(emb, text_emb, inputs=inputs)
    table = gather_training_labels(labels, extra, known_ids=None)
    pos = pd.Index(ids).get_indexer(table["id"])
    if (pos < 0).all():
        raise KeyError(f"none of the {len(table)} labeled ids has {inputs} embeddings")
    n_missing = int((pos < 0).sum())
    if n_missing and inputs == "image":
        missing = table["id"][pos < 0].head(5).tolist()
        raise KeyError(f"{n_missing} labeled id(s) have no embedding in {emb}, e.g. {', '.join(missing)}")
    table, pos = table[pos >= 0].reset_index(drop=True), pos[pos >= 0]
    weights = None
    if weight_col:
        if weight_col not in table.columns:
            raise ValueError(f"no column {weight_col!r} in the label files")
        weights = pd.to_numeric(table[weight_col], errors="raise").fillna(1.0).to_numpy(np.float32)
    classes = sorted(table["label"].unique())
    targets = None
    if smoothing is not None and smoothing.kind != "none":
        targets = target_schedule(classes, smoothing, similarity=similarity, device=config.device)
    clf = EmbeddingClassifier(config).fit(
        matrix[pos], table["label"].to_numpy(), sample_weight=weights, classes=classes,
        soft_targets=targets, input_dims=dims,
    )
    if out is not None:
        meta = read_metadata(emb)
        clf.save(
            out,
            extra={
                "embeddings": str(Path(emb).resolve()),
                "text_embeddings": str(Path(text_emb).resolve()) if text_emb else None,
                "inputs": inputs,
                "embedding_model": meta.get("model"),
                "embedding_version": meta.get("model_version"),
                "smoothing": asdict(smoothing) if smoothing else None,
                "labels": str(labels) if not isinstance(labels, pd.DataFrame) else "DataFrame",
                "extra": [str(e) if not isinstance(e, pd.DataFrame) else "DataFrame" for e in extra],
                "n_train": {str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()},
                "n_by_origin": {str(k): int(v) for k, v in table["origin"].value_counts().items()},
                "n_without_embeddings": n_missing,
            },
        )
    return clf


def evaluate(
    model: str | os.PathLike | EmbeddingClassifier,
    emb: str | os.PathLike,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    positive: str | None = None,
    json_out: str | os.PathLike | None = None,
    text_emb: str | os.PathLike | None = None,
    inputs: str | None = None,
    label_neighbors: np.ndarray | None = None,
    taxonomy_distance: np.ndarray | None = None,
) -> dict:
    """Per-class P/R/F1, accuracy, confusion matrix and HM of a head on labeled ids.

    Multi-class reports add top-1/top-5 accuracy. With ``label_neighbors`` (a (C, K) index
    matrix over the model's classes, the label itself included) the report adds paper 002's
    neighbourhood metric; with ``taxonomy_distance`` (C, C) the mistake severity.
    """
    meta = None
    if isinstance(model, EmbeddingClassifier):
        clf = model
    else:
        clf = EmbeddingClassifier.load(model)
        meta = read_model_meta(model)
    if inputs is None:
        inputs = (meta or {}).get("inputs") or ("image+text" if len(clf.input_dims_) > 1 else "image")
    if inputs != "image" and text_emb is None and meta and meta.get("text_embeddings"):
        text_emb = meta["text_embeddings"]
    ids, matrix, _ = load_features(emb, text_emb, inputs=inputs)
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels)
    pos = pd.Index(ids).get_indexer(table["id"])
    if (pos < 0).any():
        raise KeyError(f"{int((pos < 0).sum())} evaluated id(s) have no embedding, e.g. {table['id'][pos < 0].iloc[0]}")
    unknown = sorted(set(table["label"]) - set(clf.classes_))
    if unknown:
        raise ValueError(f"labels the model was not trained on: {unknown[:5]}; its classes are {clf.classes_}")
    proba = clf.predict_proba(matrix[pos])
    pred = np.asarray(clf.classes_, dtype=object)[proba.argmax(axis=1)]
    report = classification_report(table["label"].to_numpy(), pred, labels=clf.classes_, positive=positive)
    code = {c: i for i, c in enumerate(clf.classes_)}
    y = table["label"].map(code).to_numpy()
    if len(clf.classes_) > 2:
        report["top1"] = topk_accuracy(proba, y, 1)
        report["top5"] = topk_accuracy(proba, y, 5)
    if label_neighbors is not None:
        report["semantic"] = semantic_neighborhood_hits(proba, y, label_neighbors, top=5)
    if taxonomy_distance is not None:
        report["severity"] = mistake_severity(proba.argmax(axis=1), y, taxonomy_distance)
    if json_out is not None:
        atomic_write_json(json_out, report)
    return report
