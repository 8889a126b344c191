"""`simlabel train` / `simlabel evaluate`: heads on embedding folders and label files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.heads import EmbeddingClassifier, HeadConfig
from simlabel.labels.io import read_labels
from simlabel.metrics import classification_report
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


def train(
    emb: str | os.PathLike,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    extra: Sequence[str | os.PathLike | pd.DataFrame] = (),
    out: str | os.PathLike | None = None,
    config: HeadConfig | None = None,
    weight_col: str | None = None,
) -> EmbeddingClassifier:
    """Train a head on the embeddings of the labeled ids (plus ``extra`` label files).

    ``weight_col`` names a per-row sample-weight column of the label files.
    With ``out`` the model folder is written (``config.json`` + ``weights.pt``).
    """
    ids, matrix = load_embeddings(emb)
    table = gather_training_labels(labels, extra, known_ids=ids)
    pos = pd.Index(ids).get_indexer(table["id"])
    weights = None
    if weight_col:
        if weight_col not in table.columns:
            raise ValueError(f"no column {weight_col!r} in the label files")
        weights = pd.to_numeric(table[weight_col], errors="raise").fillna(1.0).to_numpy(np.float32)
    clf = EmbeddingClassifier(config or HeadConfig()).fit(matrix[pos], table["label"].to_numpy(), sample_weight=weights)
    if out is not None:
        meta = read_metadata(emb)
        clf.save(
            out,
            extra={
                "embeddings": str(Path(emb).resolve()),
                "embedding_model": meta.get("model"),
                "embedding_version": meta.get("model_version"),
                "labels": str(labels) if not isinstance(labels, pd.DataFrame) else "DataFrame",
                "extra": [str(e) if not isinstance(e, pd.DataFrame) else "DataFrame" for e in extra],
                "n_train": {str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()},
                "n_by_origin": {str(k): int(v) for k, v in table["origin"].value_counts().items()},
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
) -> dict:
    """Per-class P/R/F1, accuracy, confusion matrix and HM of a head on labeled ids."""
    clf = model if isinstance(model, EmbeddingClassifier) else EmbeddingClassifier.load(model)
    ids, matrix = load_embeddings(emb)
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels, known_ids=ids)
    pos = pd.Index(ids).get_indexer(table["id"])
    if (pos < 0).any():
        raise KeyError(f"{int((pos < 0).sum())} evaluated id(s) have no embedding, e.g. {table['id'][pos < 0].iloc[0]}")
    unknown = sorted(set(table["label"]) - set(clf.classes_))
    if unknown:
        raise ValueError(f"labels the model was not trained on: {unknown[:5]}; its classes are {clf.classes_}")
    pred = clf.predict(matrix[pos])
    report = classification_report(table["label"].to_numpy(), pred, labels=clf.classes_, positive=positive)
    if json_out is not None:
        atomic_write_json(json_out, report)
    return report
