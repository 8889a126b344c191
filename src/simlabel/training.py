"""Heads on embedding folders and label files: ``simlabel train`` and ``simlabel evaluate``,
and the heads the label methods are handed.

* :func:`train`: a head (:class:`~simlabel.heads.EmbeddingClassifier`) on the embeddings of
  the labelled ids, with soft targets (paper 002) and image + title fusion on request;
* :func:`evaluate`: per-class P/R/F1, accuracy, confusion matrix and HM (paper 000), top-k,
  the semantic neighbourhood metric and mistake severity (paper 002);
* :func:`oof_predictor`: the out-of-fold heads paper 003's stage 2 is handed
  (:func:`simlabel.labels.side_info.side_info_weights`);
* :func:`multilabel_pretrain`: the multi-label head SELF-ML's classifier starts from
  (:func:`simlabel.labels.flipping.flip`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simlabel.errors import InputError, MissingIdsError
from simlabel.files import atomic_write_json
from simlabel.heads import (
    EmbeddingClassifier,
    HeadConfig,
    MultiLabelClassifier,
    MultiLabelHeadConfig,
    out_of_fold_proba,
    read_model_meta,
)
from simlabel.labels.io import read_labels
from simlabel.labels.smoothing import SmoothingConfig, target_schedule
from simlabel.metrics import (
    classification_report,
    mistake_severity,
    semantic_neighborhood_hits,
    topk_accuracy,
)
from simlabel.progress import task
from simlabel.semantics.names import embed_label_names, label_similarity, nearest_labels
from simlabel.semantics.taxonomy import taxonomy_matrix
from simlabel.store import Embeddings, as_embeddings

if TYPE_CHECKING:  # the label methods' modules import faiss and scikit-learn: not on `simlabel train`'s path
    from simlabel.labels.pseudo import PseudoConfig
    from simlabel.labels.selfml import Pretrain, SelfMLConfig
    from simlabel.labels.side_info import Predictor
    from simlabel.labels.suspects import SuspectsConfig, SuspectsResult
    from simlabel.selection import SelectConfig, Selection

__all__ = ["evaluate", "gather_training_labels", "load_features", "multilabel_pretrain", "oof_predictor", "save_flip_model",
           "select", "train", "train_multilabel"]

INPUTS = ("image", "text", "image+text")
FUSIONS = ("none", "attention")


def gather_training_labels(
    labels: str | os.PathLike | pd.DataFrame,
    extra: Sequence[str | os.PathLike | pd.DataFrame] = (),
    *,
    known_ids: Sequence[str] | None = None,
    label_col: str = "label",
) -> pd.DataFrame:
    """The training table: ``labels`` first, then each ``extra`` file's rows for ids not seen yet
    (so a verified label always wins over an augmented one). Adds an ``origin`` column.
    ``label_col`` names the label column of ``labels`` (the ``extra`` files are simlabel's own
    outputs, with ``label``)."""
    frames = []
    for i, src in enumerate([labels, *extra]):
        col = label_col if i == 0 else "label"
        df = src.copy() if isinstance(src, pd.DataFrame) else read_labels(src, label_col=col, known_ids=known_ids, keep_rows=True)
        df["origin"] = str(src) if not isinstance(src, pd.DataFrame) else ("labels" if i == 0 else f"extra{i}")
        df["origin_row"] = df["_row"] if "_row" in df.columns else np.arange(len(df))
        frames.append(df.drop(columns="_row", errors="ignore"))
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(subset="id", keep="first").reset_index(drop=True)


#: how training ids are recorded: 64-bit hashes, so that `evaluate` can find an overlap without the
#: model folder holding a catalog's ids (8 bytes an id; a false match has probability ~ n m / 2^64)
ID_HASH = "pandas.util.hash_array (SipHash-2-4, key 0123456789123456), sorted uint64"
TRAINING_IDS_FILE = "training_ids.npy"


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """Sorted unique 64-bit hashes of ids (:data:`ID_HASH`)."""
    arr = np.asarray([str(i) for i in ids], dtype=object)
    return np.unique(pd.util.hash_array(arr, categorize=False))


def ids_fingerprint(ids: Sequence[str]) -> str:
    """A short digest of a set of ids (order-free)."""
    import hashlib

    return hashlib.sha256(hash_ids(ids).tobytes()).hexdigest()[:16]


def holdouts_named_by(label_files: Sequence[str | os.PathLike | pd.DataFrame]) -> list[Path]:
    """Holdout files a training run can see: the ``holdout_file`` an augmentation's summary
    (``OUT.summary.json`` beside ``OUT``) names, for each label file that has one. A named
    holdout that no longer exists warns (its ids cannot be checked)."""
    import warnings

    from simlabel.errors import SimlabelWarning
    from simlabel.files import read_json

    found = []
    for src in label_files:
        if isinstance(src, pd.DataFrame):
            continue
        summary = Path(str(src) + ".summary.json")
        if not summary.is_file():
            continue
        name = read_json(summary, "augmentation summary").get("holdout_file")
        if not name:
            continue
        candidates = [Path(name)] if Path(name).is_absolute() else [summary.parent / name, Path(name)]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            warnings.warn(f"{summary} names the holdout {name}, which is not there: its ids cannot be kept out of "
                          "training (give it with `holdout`)", SimlabelWarning, stacklevel=3)
            continue
        found.append(hit)
    return found


def holdout_id_set(holdouts: Sequence[str | os.PathLike | pd.DataFrame]) -> set[str]:
    """Every id of the holdouts (files or tables)."""
    from simlabel.labels.io import read_holdout

    ids: set[str] = set()
    for h in holdouts:
        ids |= set((h["id"] if isinstance(h, pd.DataFrame) else read_holdout(h)["id"]).astype(str))
    return ids


def drop_holdout_ids(table: pd.DataFrame, holdouts: Sequence[str | os.PathLike | pd.DataFrame],
                     *, on_overlap: str = "drop") -> tuple[pd.DataFrame, int]:
    """The training table without the ids of any holdout (``on_overlap="drop"``, with a warning
    naming the holdout and the count), or an :class:`~simlabel.errors.InputError`
    (``"error"``). Returns the table and the number of rows dropped."""
    import warnings

    from simlabel.errors import SimlabelWarning
    from simlabel.labels.io import read_holdout

    if on_overlap not in ("drop", "error"):
        raise InputError(f"on_overlap must be drop or error; got {on_overlap!r}")
    dropped = 0
    for h in holdouts:
        if isinstance(h, pd.DataFrame):
            ids, name = h["id"].astype(str), "table"
        else:
            ids, name = read_holdout(h)["id"], str(h)
        leak = table["id"].isin(set(ids))
        n = int(leak.sum())
        if not n:
            continue
        shown = ", ".join(table.loc[leak, "id"].head(3))
        origins = ", ".join(sorted(table.loc[leak, "origin"].astype(str).unique()))
        msg = (f"{n:,} training id(s) are in the holdout {name} (e.g. {shown}; from {origins}): a model trained on "
               "them would be scored on its own training data")
        if on_overlap == "error":
            raise InputError(msg)
        warnings.warn(msg + "; they are left out of training", SimlabelWarning, stacklevel=3)
        table = table[~leak].reset_index(drop=True)
        dropped += n
    return table, dropped


def load_features(
    emb: str | os.PathLike | Embeddings,
    text_emb: str | os.PathLike | Embeddings | None = None,
    *,
    inputs: str = "image",
) -> tuple[Embeddings, list[int]]:
    """The features a head sees, as ``(Embeddings, input_dims)``, for ``inputs`` ``image``
    (``emb``), ``text`` (``text_emb``) or ``image+text`` (both, concatenated per id; ids present
    in both only)."""
    if inputs not in INPUTS:
        raise InputError(f"inputs must be one of {', '.join(INPUTS)}; got {inputs!r}")
    if inputs != "image" and text_emb is None:
        raise InputError(f"inputs {inputs!r} need text embeddings (`text_emb`, e.g. EMB_DIR/text)")
    if inputs == "text":
        text = as_embeddings(text_emb)
        return text, [text.dim]
    image = as_embeddings(emb)
    if inputs == "image":
        return image, [image.dim]
    text = as_embeddings(text_emb)
    both = image.ids[text.has(image.ids)]
    joined = np.concatenate([image.rows(both).matrix, text.rows(both).matrix], axis=1)
    # a space of its own: a graph or index of the images alone must not pass for one of the joined features
    meta = {k: v for k, v in image.meta.items() if k not in ("space", "fingerprint")}
    meta.update({k: f"{image.meta.get(k, '?')}+{text.meta.get(k, '?')}" for k in ("model", "model_version")})
    meta.update(modality="image+text", text_path=text.meta.get("path"))
    return Embeddings(both, joined, meta), [image.dim, text.dim]


def _source(emb: str | os.PathLike | Embeddings | None) -> str | None:
    if emb is None:
        return None
    if isinstance(emb, Embeddings):
        path = emb.meta.get("path")
        return str(Path(path).resolve()) if path and Path(path).exists() else emb.source
    return str(Path(emb).resolve())


def train(
    emb: str | os.PathLike | Embeddings,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    extra: Sequence[str | os.PathLike | pd.DataFrame] = (),
    out: str | os.PathLike | None = None,
    config: HeadConfig | None = None,
    weight_col: str | None = None,
    text_emb: str | os.PathLike | Embeddings | None = None,
    inputs: str | None = None,
    fusion: str = "none",
    smoothing: SmoothingConfig | None = None,
    similarity: np.ndarray | None = None,
    label_col: str = "label",
    holdout: str | os.PathLike | pd.DataFrame | Sequence[str | os.PathLike | pd.DataFrame] | None = None,
    on_holdout: str = "drop",
    input_dims: Sequence[int] | None = None,
    progress_label: str = "train",
    pseudo: "str | PseudoConfig | None" = None,
    graph=None,
    calibration: str = "temperature",
    calibration_folds: int = 5,
) -> EmbeddingClassifier:
    """Train a head on the embeddings of the labelled ids (plus ``extra`` label files).

    ``simlabel train`` as a function: the label files are gathered into one table (``labels``
    first, then each ``extra`` file's rows for ids not seen yet), the ids of every holdout are
    left out, and an :class:`~simlabel.heads.EmbeddingClassifier` is fitted on the embeddings of
    the rest (classes in sorted order). With ``inputs="image"`` every labelled id must have an
    embedding; with text inputs, ids without one are left out (and counted in ``config.json``).

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The image embeddings: a folder or a loaded :class:`~simlabel.store.Embeddings` (with
        ``input_dims``: the features, several inputs side by side).
    labels : str, os.PathLike or pandas.DataFrame
        The label file or table (``id``, ``label``); it wins over ``extra`` for the same id.
        A file may be a catalog (file or folder) whose ``label_col`` holds the labels.
    extra : sequence of str, os.PathLike or pandas.DataFrame, default ()
        More label files or tables (simlabel's own outputs, with ``label``, e.g. augmented
        labels): their rows for ids not in ``labels`` or an earlier ``extra``.
    out : str or os.PathLike, optional
        The model folder to write (``config.json``, ``weights.pt`` and ``training_ids.npy``,
        the 64-bit hashes of the training ids that :func:`evaluate` checks for overlap);
        ``None``: nothing is written.
    config : HeadConfig, optional
        The head and its training (``None``: :class:`~simlabel.heads.HeadConfig`'s defaults).
    weight_col : str, optional
        A per-row sample-weight column of the label files: numbers >= 0, not all 0; an empty
        cell weighs 1.
    text_emb : str, os.PathLike or Embeddings, optional
        The title embeddings, for ``inputs`` ``text`` or ``image+text``.
    inputs : {"image", "text", "image+text"}, optional
        What the head sees: ``image`` (default), ``text``, or ``image+text`` (both,
        concatenated per id, ids present in both only; the default when the head fuses and
        ``text_emb`` is given, or with ``input_dims``).
    fusion : {"none", "attention"}, default "none"
        ``attention``: paper 002's attention fusion of image and title (sets the head to
        ``fusion`` and the inputs to ``image+text``).
    smoothing : SmoothingConfig, optional
        Soft targets (paper 002; :class:`~simlabel.labels.smoothing.SmoothingConfig`), unless
        its ``kind`` is ``none``.
    similarity : ndarray of shape (C, C), optional
        A precomputed label similarity for ``smoothing``, in sorted-class order.
    label_col : str, default "label"
        The label column of ``labels`` when it is a file (the ``extra`` files use ``label``;
        a table must have ``id`` and ``label`` columns).
    holdout : str, os.PathLike, pandas.DataFrame or sequence of them, optional
        Ids that must not be trained on: a holdout file or table (``id`` column), or a list
        of them. Every holdout an augmentation summary names for one of the label files
        (``aug.csv.summary.json`` -> ``aug.csv.holdout.csv``) is checked too.
    on_holdout : {"drop", "error"}, default "drop"
        Training ids found in a holdout are dropped with a warning (``drop``) or refused
        (``error``).
    input_dims : sequence of int, optional
        With ``emb`` already holding several inputs side by side (what :func:`load_features`
        returns; an experiment joins image and title once for all its models), their widths.
    progress_label : str, default "train"
        How the epochs' progress is named (an experiment names the model it trains).

    pseudo : str or PseudoConfig, optional
        Pseudo-labels from the unlabelled catalog (:mod:`simlabel.labels.pseudo`): ``"none"`` (default),
        ``"augment"``, ``"propagate"``, ``"spread"``, or ``"auto"``, which chooses the mode and the weight's
        scale by out-of-fold validation on the human labels only (:func:`choose_pseudo`); each pseudo-label
        weighs its certainty, class-balanced, never more than a human label. The choice and the candidates'
        figures go to ``config.json``. The neighbours are those of the features the head sees (with
        ``inputs="image+text"``, images and titles side by side).
    graph : optional
        A k-NN graph of ``emb`` the pseudo-label methods read their neighbours from.
    calibration : {"temperature", "vector", "none"}, default "temperature"
        Guo et al. 2017 (:mod:`simlabel.calibration`), fitted on held-out predictions of the rows of ``labels``
        (made labels never calibrate): the probabilities then mean what they say, and the same held-out rows
        give :meth:`~simlabel.heads.EmbeddingClassifier.thresholds` for ``predict``'s ``min_precision``.
    calibration_folds : int, default 5
        Where the held-out predictions come from: ``K >= 2``, out of fold, from ``K`` heads of the same config
        each trained on the other folds' rows of ``labels`` with their hard labels (no extra files, pseudo-labels
        nor soft targets; every labelled row held out once: unbiased and many, as
        scikit-learn's ``CalibratedClassifierCV(ensemble=False)``; costs ``K`` more trainings); ``0``, the
        head's own validation split (biased: early stopping chose the epoch on it; nothing calibrated without
        one). ``config.json`` records which, and why nothing was calibrated when so.

    Returns
    -------
    EmbeddingClassifier
        The fitted head, its ``training_ids_`` the hashes of the ids trained on; with ``out``,
        also saved there, ``config.json`` recording the embeddings, inputs, label files,
        holdouts checked, the training ids' fingerprint, the learning rate and the rows per
        class and per origin.

    Raises
    ------
    InputError
        An unknown ``fusion``, ``inputs`` or ``on_holdout``; text inputs without
        ``text_emb``; training ids in a holdout with ``on_holdout="error"``; no rows left
        once the holdout ids are out; no labelled id with an embedding; a ``weight_col`` that
        is missing or holds a value that is not a number >= 0 (or only 0s); what the head
        raises in training (fewer than two classes, a diverging loss, ...).
    MissingIdsError
        With ``inputs="image"``, labelled ids that have no embedding.
    LabelFileError
        A label or holdout file that cannot be read or breaks its rules (an empty id, an
        id with two labels, no labelled row, ...).
    StoreError
        An embedding folder, or an augmentation summary, that cannot be read.
    ModelError
        ``config.device="cuda"`` where torch sees no CUDA device.
    LockedError
        ``out`` is being written by another process.

    Warns
    -----
    SimlabelWarning
        Training ids found in a holdout and dropped; a holdout named by an augmentation
        summary that is not there; label rows without a label.

    See Also
    --------
    evaluate : Score the head on labelled ids.
    EmbeddingClassifier : The head itself.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from simlabel import Embeddings, HeadConfig, train
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"item{i}" for i in range(40)]
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> table = pd.DataFrame({"id": ids, "label": ["shirt"] * 20 + ["shoe"] * 20})
    >>> clf = train(Embeddings(ids, X), table, config=HeadConfig(max_epochs=20))
    >>> clf.classes_, len(clf.training_ids_)
    (array(['shirt', 'shoe'], dtype=object), 40)
    >>> clf = train("emb/", "labels.csv", holdout="holdout.csv", out="model/")  # doctest: +SKIP
    """
    if fusion not in FUSIONS:
        raise InputError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    config = config or HeadConfig()
    if fusion == "attention":
        config, inputs = replace(config, head="fusion"), "image+text"
    if input_dims is not None:
        image, text = as_embeddings(emb), None
        features, dims, inputs = image, [int(d) for d in input_dims], inputs or "image+text"
    else:
        if inputs is None:
            inputs = "image+text" if (text_emb is not None and config.head == "fusion") else "image"
        # each store is read once, here, and passed on as a value
        image = as_embeddings(emb) if inputs != "text" else None
        text = as_embeddings(text_emb) if text_emb is not None else None
        features, dims = load_features(image, text, inputs=inputs)
    table = gather_training_labels(labels, extra, label_col=label_col)
    holdouts = [] if holdout is None else [holdout] if isinstance(holdout, (str, os.PathLike, pd.DataFrame)) else list(holdout)
    seen = {Path(h).resolve() for h in holdouts if isinstance(h, (str, os.PathLike))}
    holdouts += [h for h in holdouts_named_by([labels, *extra]) if h.resolve() not in seen]
    table, n_dropped = drop_holdout_ids(table, holdouts, on_overlap=on_holdout)
    if table.empty:
        raise InputError("no training rows are left once the holdout ids are left out")
    found = features.has(table["id"])
    if not found.any():
        raise InputError(f"none of the {len(table)} labelled ids has {inputs} embeddings in {features.source}")
    n_missing = int((~found).sum())
    if n_missing and inputs == "image":
        raise MissingIdsError(table["id"][~found].tolist(), features.source, "labelled id(s) have no embedding")
    table = table[found].reset_index(drop=True)
    X = features.rows(table["id"]).matrix
    weights = None if not weight_col else sample_weights(table, weight_col)
    classes = sorted(table["label"].unique())
    pseudo_record = None
    if pseudo is not None and (pseudo if isinstance(pseudo, str) else pseudo.mode) != "none":
        X, labels_all, weights, table, pseudo_record = _with_pseudo_labels(
            features, table, X, weights, pseudo, config, graph=graph, holdouts=holdouts, inputs=inputs)
    else:
        labels_all = table["label"].to_numpy()
    targets = None
    if smoothing is not None and smoothing.kind != "none":
        targets = target_schedule(classes, smoothing, similarity=similarity, device=config.device)
    clf = EmbeddingClassifier(config, progress_label=progress_label).fit(
        X, labels_all, sample_weight=weights, classes=classes, soft_targets=targets, input_dims=dims,
    )
    _calibrate(clf, X, labels_all, table, calibration, "labels" if isinstance(labels, pd.DataFrame) else str(labels),
               folds=calibration_folds, config=config, input_dims=dims, weights=weights)
    clf.training_ids_ = hash_ids(table["id"])
    clf.pseudo_ = pseudo_record  # what pseudo=auto chose, also in config.json
    if out is not None:
        meta = (image if inputs != "text" else text).meta
        clf.save(
            out,
            extra={
                "embeddings": _source(image if image is not None else emb),
                "text_embeddings": _source(text),
                "embedding_space": image.space if inputs != "text" else None,
                "text_embedding_space": text.space if text is not None else None,
                "inputs": inputs,
                "embedding_model": meta.get("model"),
                "embedding_version": meta.get("model_version"),
                "smoothing": asdict(smoothing) if smoothing else None,
                "labels": str(labels) if not isinstance(labels, pd.DataFrame) else "DataFrame",
                "label_col": label_col,
                "extra": [str(e) if not isinstance(e, pd.DataFrame) else "DataFrame" for e in extra],
                "holdouts_checked": [str(h) if isinstance(h, (str, os.PathLike)) else "ids" for h in holdouts],
                "n_dropped_in_holdout": n_dropped,
                "training_ids": {"n": int(len(table)), "fingerprint": ids_fingerprint(table["id"]),
                                 "file": TRAINING_IDS_FILE, "hash": ID_HASH},
                "lr": config.learning_rate,
                "n_train": {str(k): int(v) for k, v in table["label"].value_counts().sort_index().items()},
                "n_by_origin": {str(k): int(v) for k, v in table["origin"].value_counts().items()},
                "n_without_embeddings": n_missing,
                "pseudo": pseudo_record,
            },
        )
    return clf


def train_multilabel(
    emb: str | os.PathLike | Embeddings,
    labels: "str | os.PathLike | pd.DataFrame",
    *,
    attributes: Sequence[str] | None = None,
    labels_col: str = "labels",
    config: MultiLabelHeadConfig | None = None,
    threshold: float = 0.5,
    min_count: int = 1,
    out: str | os.PathLike | None = None,
) -> MultiLabelClassifier:
    """Train the multi-label head (paper 004's classifier: one sigmoid per label, focal loss) on labelled ids.

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The image embeddings.
    labels : str, os.PathLike or pandas.DataFrame
        A catalog or CSV with ``id`` and either ``attributes`` columns (one binary label ``attr=value`` per
        value) or ``labels_col``, ``|``-separated labels (``gender=Men|usage=Casual``).
    attributes : sequence of str, optional
        The attribute columns; ``None``: read ``labels_col``.
    labels_col : str, default "labels"
        Without ``attributes``: the ``|``-separated label column.
    config : MultiLabelHeadConfig, optional
        The head and its training.
    threshold : float, default 0.5
        A label is set where its probability reaches this (kept with the model; ``predict`` uses it).
    min_count : int, default 1
        With ``attributes``: labels with fewer positives are left out.
    out : str or os.PathLike, optional
        The model folder (``kind: MultiLabelClassifier``), which ``simlabel predict`` reads.

    Returns
    -------
    MultiLabelClassifier
        Fitted, with its label names (:meth:`~simlabel.heads.MultiLabelClassifier.label_names`).

    Raises
    ------
    InputError
        No labelled id has an embedding; no label at all.
    CatalogError
        ``labels`` cannot be read or lacks the columns.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from simlabel import Embeddings, MultiLabelHeadConfig, train_multilabel
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> ids = [f"i{k}" for k in range(40)]
    >>> table = pd.DataFrame({"id": ids, "gender": np.where(X[:, 0] > 0, "Men", "Women"),
    ...                       "usage": np.where(X[:, 1] > 0, "Sports", "Casual")})
    >>> clf = train_multilabel(Embeddings(ids, X), table, attributes=["gender", "usage"],
    ...                        config=MultiLabelHeadConfig(epochs=3))
    >>> clf.label_names()
    ['gender=Men', 'gender=Women', 'usage=Casual', 'usage=Sports']
    """
    from simlabel.catalog import load_catalog
    from simlabel.labels.multilabel import from_attributes, from_labels_column

    table = labels if isinstance(labels, pd.DataFrame) else load_catalog(labels, require=("id",)).table
    ml = from_attributes(table, attributes, min_count=min_count) if attributes else from_labels_column(table, labels_col)
    if not ml.labels:
        raise InputError(f"{_source(labels) if not isinstance(labels, pd.DataFrame) else 'labels'}: no label to train on")
    features = as_embeddings(emb)
    keep = features.has(ml.ids)
    if not keep.any():
        raise InputError(f"none of the labelled ids has an embedding in {features.source}")
    X = features.rows(ml.ids[keep]).matrix
    clf = MultiLabelClassifier(config, threshold=threshold).fit(X, ml.Y[keep], label_names=ml.labels)
    if out is not None:
        clf.save(out, extra={**_multilabel_record(features.meta, features.space, _source(emb)),
                             "labels_file": str(labels) if not isinstance(labels, pd.DataFrame) else "DataFrame",
                             "attributes": list(attributes) if attributes else None, "labels_col": labels_col,
                             "n_train": int(keep.sum()), "n_without_embeddings": int((~keep).sum()),
                             "positives": {n: int(v) for n, v in zip(ml.labels, ml.Y[keep].sum(axis=0))}})
    return clf


def save_flip_model(flipped, out: str | os.PathLike, *, threshold: float = 0.5) -> MultiLabelClassifier:
    """Save the multi-label classifier SELF-ML trained jointly in :func:`simlabel.labels.flipping.flip`
    (``clean`` given) as a model folder ``simlabel predict`` reads (``flip --model-out``).

    Parameters
    ----------
    flipped : Flipped
        What :func:`~simlabel.labels.flipping.flip` returned for a joint run.
    out : str or os.PathLike
        The model folder (``kind: MultiLabelClassifier``, the label names, the embeddings it read).
    threshold : float, default 0.5
        A label is set where its probability reaches this.

    Returns
    -------
    MultiLabelClassifier
        The saved head.

    Raises
    ------
    InputError
        A run that trained no classifier (strategy 1: the basis exported or the direct rule).

    Examples
    --------
    >>> from simlabel import flip, multilabel_pretrain, save_flip_model
    >>> made = flip("emb/", "catalog.csv", attributes=["gender"], clean="clean.csv",
    ...             pretrain=multilabel_pretrain())  # doctest: +SKIP
    >>> save_flip_model(made, "attributes-model/").label_names()  # doctest: +SKIP
    ['gender=Men', 'gender=Women']
    """
    if flipped.classifier is None:
        raise InputError("this flip run trained no classifier: only joint SELF-ML (a `clean` set) does")
    clf = MultiLabelClassifier.from_module(flipped.classifier, flipped.label_names, threshold=threshold)
    meta = flipped.embeddings_meta or {}
    clf.save(out, extra={**_multilabel_record(meta, meta.get("space"), meta.get("source")), "trained_by": "flip",
                         "flip_summary": flipped.summary})
    return clf


def _multilabel_record(meta: dict, space: str | None, source: str | None) -> dict:
    """What a multi-label model folder records of its embeddings (as :func:`train` does)."""
    return {"embeddings": source, "embedding_space": space, "inputs": "image", "embedding_model": meta.get("model"),
            "embedding_version": meta.get("model_version")}


def _calibrate(clf: EmbeddingClassifier, X: np.ndarray, labels: np.ndarray, table: pd.DataFrame, method: str,
               primary: str, *, folds: int, config: HeadConfig, input_dims, weights) -> None:
    """Calibrate ``clf`` on held-out predictions of the rows from ``labels`` itself (``primary``, their origin):
    the rows of ``extra`` files (augmented, propagated labels) and pseudo-labels were made, and never calibrate."""
    from simlabel.calibration import CALIBRATIONS

    if method not in CALIBRATIONS:
        raise InputError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {method!r}")
    if folds < 0 or folds == 1:
        raise InputError(f"calibration_folds must be 0 (the validation split) or >= 2; got {folds}")
    if method == "none":
        clf.calibration_ = {"method": "none", "why": "not asked"}
        return
    human = np.flatnonzero(table["origin"].to_numpy()[: len(X)] == primary) if "origin" in table.columns else np.arange(len(X))
    if folds == 0:
        val = clf.validation_index_
        val = None if val is None else val[np.isin(val, human)]
        if val is None or not len(val):
            clf.calibration_ = {"method": "none", "why": "no validation rows (the head held none out): the "
                                                        "probabilities are the plain softmax"}
            return
        clf.calibrate(X[val], labels[val], method)
        clf.calibration_["source"] = "validation split"
        return
    counts = pd.Series(labels[human]).value_counts()
    if len(human) < 2 * folds or len(counts) < 2:
        clf.calibration_ = {"method": "none", "why": f"{len(human)} labelled rows: too few for {folds} folds"}
        return
    from simlabel.heads import out_of_fold_proba

    # the held-out probabilities of every labelled row, from heads of the same config that never saw it; softmax is
    # blind to a constant per row, so their logs stand for the logits the calibration scales
    cfg = replace(config, seed=config.seed + 1)

    class _Fold(EmbeddingClassifier):
        """A fold's head: the final head's config and inputs (the fusion head needs their widths)."""

        def fit(self, X, y, **kw):
            return super().fit(X, y, input_dims=input_dims, **kw)

    proba = out_of_fold_proba(lambda: _Fold(cfg, progress_label="train: calibration folds"), X[human],
                              labels[human].astype(str), classes=[str(c) for c in clf.classes_],
                              sample_weight=None if weights is None else weights[human], folds=folds, seed=config.seed)
    clf.calibrate_logits(np.log(np.clip(proba, 1e-12, None)), labels[human], method)
    clf.calibration_.update(source=f"{folds} folds out of fold")


def _with_pseudo_labels(features: Embeddings, table: pd.DataFrame, X: np.ndarray, weights: np.ndarray | None,
                        pseudo: "str | PseudoConfig", head: HeadConfig, *, graph, holdouts, inputs: str):
    """The training rows with the pseudo-labels appended (chosen by ``auto`` when asked), their weights,
    the table they came from, and what ``config.json`` records."""
    # the pseudo-labels come from the features the head sees (images, titles, or both side by side): a graph
    # given must be of those features (the neighbour resolver refuses one of other embeddings)
    from simlabel.graph import as_graph
    from simlabel.labels.pseudo import PseudoConfig, make_pseudo_labels, pseudo_weights

    cfg = pseudo if isinstance(pseudo, PseudoConfig) else PseudoConfig(mode=pseudo)
    graph = as_graph(graph) if graph is not None else None  # read once: every fold and mode reads it
    hold = holdout_id_set(holdouts)
    if cfg.mode == "auto":
        choice = choose_pseudo(features, table, cfg, head, graph=graph, holdout_ids=hold)
    else:
        choice = {"mode": cfg.mode, "scale": cfg.scales[-1], "why": "asked for", "candidates": []}
    record = {"asked": cfg.mode, **choice, "n": 0}
    if choice["mode"] == "none":
        return X, table["label"].to_numpy(), weights, table, record
    blocked = _embedded(features, hold)
    made = make_pseudo_labels(features, table[["id", "label"]], choice["mode"], cfg, graph=graph, exclude=blocked)
    made = made[~made["id"].isin(set(table["id"]))]
    w_pseudo = pseudo_weights(made["label"], made["certainty"], choice["scale"])
    human_w = np.ones(len(table), np.float32) if weights is None else np.asarray(weights, np.float32)
    record.update(n=int(len(made)), mean_weight=round(float(w_pseudo.mean()), 4) if len(made) else None)
    pseudo_rows = made.assign(origin="pseudo")[["id", "label", "origin"]]
    full = pd.concat([table, pseudo_rows], ignore_index=True)
    X_all = np.concatenate([X, features.rows(made["id"]).matrix]) if len(made) else X
    return X_all, full["label"].to_numpy(), np.concatenate([human_w, w_pseudo]), full, record


def sample_weights(table: pd.DataFrame, column: str) -> np.ndarray:
    """The per-row weights of a training table's ``column``: numbers, finite, >= 0, not all 0.

    Empty cells weigh 1. An error names the label file, its line and the column.
    """
    from simlabel.heads import check_sample_weights

    if column not in table.columns:
        raise InputError(f"no column {column!r} in the label files (columns: {', '.join(c for c in table.columns if c != 'origin_row')})")
    raw = table[column].astype(str).str.strip()
    values = pd.to_numeric(raw.where(raw != "", "1"), errors="coerce").to_numpy(np.float64)

    def where(i: int) -> str:
        return f"{table['origin'].iloc[i]}, line {int(table['origin_row'].iloc[i]) + 2}, column {column!r}"

    unparsable = np.flatnonzero(np.isnan(values) & ~raw.str.lower().isin(["nan"]).to_numpy())
    if len(unparsable):
        i = int(unparsable[0])
        raise InputError(f"{where(i)}: sample weight {raw.iloc[i]!r} is not a number")
    check_sample_weights(values, where)
    return values.astype(np.float32)


def check_space(model_meta: dict, features: Embeddings, model: str | os.PathLike, inputs: str) -> None:
    """Refuse to score a model on embeddings of another space than it was trained on."""
    key = "text_embedding_space" if inputs == "text" else "embedding_space"
    trained = model_meta.get(key)
    if trained and trained != features.space and inputs != "image+text":
        raise InputError(
            f"the model {model} was trained on embeddings of {trained} (from {model_meta.get('embeddings')}), "
            f"but {features.source} holds {features.space}; embed the data with the model's encoder"
        )


def evaluate(
    model: str | os.PathLike | EmbeddingClassifier,
    emb: str | os.PathLike | Embeddings,
    labels: str | os.PathLike | pd.DataFrame,
    *,
    positive: str | None = None,
    json_out: str | os.PathLike | None = None,
    text_emb: str | os.PathLike | Embeddings | None = None,
    inputs: str | None = None,
    semantic: int | None = None,
    label_model: str = "minilm",
    taxonomy: str | os.PathLike | None = None,
    label_neighbors: np.ndarray | None = None,
    taxonomy_distance: np.ndarray | None = None,
    device: str = "auto",
    label_col: str = "label",
    warn: bool = True,
    min_precision: float | None = None,
    html_out: str | os.PathLike | None = None,
    precision_confidence: float = 0.95,
    precision_scope: str = "all",
) -> dict:
    """Per-class P/R/F1, accuracy, confusion matrix and HM of a head on labelled ids.

    ``simlabel evaluate`` as a function: the head predicts the embeddings of the labelled ids,
    scored by :func:`~simlabel.metrics.classification_report` over the model's classes.
    When some of the ids are among the model's training ids (``training_ids.npy``), the
    report's ``n_in_training`` says how many and a warning says that the figures score the
    model on its own training data. Multi-class reports add top-1/top-5 accuracy. Paper 002's
    metrics on request:

    * ``semantic=K``: how many of the top-5 predictions fall in the true label's ``K``
      nearest labels plus itself (class names embedded by ``label_model``); or give the
      ``(C, K+1)`` index matrix over the model's classes as ``label_neighbors``;
    * ``taxonomy`` (a CSV ``label,path``): the mistake severity, the mean tree distance of
      wrong top-1 predictions; or give the ``(C, C)`` distances as ``taxonomy_distance``.

    Parameters
    ----------
    model : str, os.PathLike or EmbeddingClassifier
        A model folder (written by :func:`train` with ``out``) or a fitted head.
    emb : str, os.PathLike or Embeddings
        The image embeddings: a folder or a loaded :class:`~simlabel.store.Embeddings`.
    labels : str, os.PathLike or pandas.DataFrame
        The labelled ids to score on (``id``, ``label``). A file may be a catalog (file or
        folder) whose ``label_col`` holds the labels.
    positive : str, optional
        For a binary model, the + class: the report adds ``+P, +R, -P, -R``.
    json_out : str or os.PathLike, optional
        Write the report there as JSON.
    text_emb : str, os.PathLike or Embeddings, optional
        The title embeddings for text inputs (default: those the model folder records).
    inputs : {"image", "text", "image+text"}, optional
        What the head sees (default: what the model was trained on, as its folder records;
        for a head, ``image+text`` when it has several inputs, else ``image``).
    semantic : int, optional
        ``K`` of the semantic neighbourhood metric (clipped to ``C - 1``).
    label_model : str, default "minilm"
        The text encoder that embeds the class names for ``semantic``.
    taxonomy : str or os.PathLike, optional
        A CSV ``label,path`` for the mistake severity.
    label_neighbors : ndarray of shape (C, K+1), optional
        The semantic neighbourhoods as class indices (instead of ``semantic``).
    taxonomy_distance : ndarray of shape (C, C), optional
        The class distances of the mistake severity (instead of ``taxonomy``).
    device : str, default "auto"
        Where ``label_model`` runs (``cpu``, ``cuda``, ``auto``).
    label_col : str, default "label"
        The label column of ``labels`` when it is a file (a table must have ``label``).
    warn : bool, default True
        ``False`` keeps the never-predicted classes in the report only (experiments that
        evaluate dozens of models report them in their tables instead).
    min_precision : float, optional
        Also score abstention: each class's threshold for this precision, chosen on the
        model's held-out rows (:meth:`~simlabel.heads.EmbeddingClassifier.thresholds`), applied
        to these items: the precision reached, the coverage, and the recall it costs, per class.
    precision_confidence : float, default 0.95
        How sure the held-out rows must make ``min_precision`` (``alpha = 1 - precision_confidence``).
    precision_scope : {"all", "each"}, default "all"
        ``all``: every class at once; ``each``: each class on its own (:mod:`simlabel.calibration`).
    html_out : str or os.PathLike, optional
        Write the report as a page: the per-class table, the reliability diagram before and
        after calibration, the coverage/precision curve and the abstention table.

    Returns
    -------
    dict
        :func:`~simlabel.metrics.classification_report`'s keys, plus:

        * ``top1``, ``top5`` (more than two classes): the share of items whose class is
          among the 1 or 5 most probable (never, for a class the model never saw);
        * ``semantic`` (:func:`~simlabel.metrics.semantic_neighborhood_hits`):
          ``mean_in_top``, the mean over items of ``|top-5 & N(y)|`` with ``N(y)`` the true
          class's neighbourhood, ``share_all_in``, the share with all five in, ``top``, ``k``;
        * ``severity`` (:func:`~simlabel.metrics.mistake_severity`): ``mistake_severity``,
          the mean ``D[y, y_pred]`` over wrong top-1 predictions, ``mean_distance``, the same
          sum over all items, ``n_mistakes``, ``n``;
        * ``n_in_training``, when the model records its training ids;
        * ``calibration``: the model's calibration (``method``, its parameters) and the expected
          calibration error (15 bins) before and after it, with the reliability bins
          (:func:`~simlabel.calibration.expected_calibration_error`);
        * ``coverage_precision``: precision against the share of the most confident items kept;
        * ``abstention`` (with ``min_precision``): ``coverage``, ``precision`` of the kept, and per
          class ``threshold``, ``precision``, ``recall`` with abstention and ``recall_without``.

        ``semantic`` and ``severity`` count the items of the model's classes only.

    Raises
    ------
    InputError
        An unknown ``inputs``, or text inputs without text embeddings; embeddings of another
        space than the model folder's or of another width than the model takes; an unknown
        ``label_model``; classes missing from ``taxonomy``.
    FileNotFoundError
        ``model`` is not a model folder (``config.json`` and ``weights.pt``).
    StoreError
        The model's ``config.json`` or an embedding folder cannot be read.
    MissingIdsError
        Labelled ids that have no embedding.
    LabelFileError
        A label file that cannot be read or breaks its rules.
    ModelError
        ``label_model`` cannot be loaded or run (a missing model, ``cuda`` without a CUDA
        device).
    ValueError
        A ``positive`` class that is not one of a binary model's two classes.

    Warns
    -----
    SimlabelWarning
        Evaluation ids among the model's training ids; with ``warn``, classes never
        predicted; label rows without a label.

    See Also
    --------
    train : The head and its model folder.
    classification_report : The report itself.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from simlabel import Embeddings, HeadConfig, evaluate, train
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"item{i}" for i in range(40)]
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> table = pd.DataFrame({"id": ids, "label": ["shirt"] * 20 + ["shoe"] * 20})
    >>> clf = train(Embeddings(ids, X), table.iloc[::2], config=HeadConfig(max_epochs=20))
    >>> report = evaluate(clf, Embeddings(ids, X), table.iloc[1::2])  # the other half
    >>> report["accuracy"], report["n_in_training"]
    (1.0, 0)
    >>> report = evaluate("model/", "emb/", "holdout.csv", json_out="report.json")  # doctest: +SKIP
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
    features, _ = load_features(emb, text_emb, inputs=inputs)
    if meta is not None:
        check_space(meta, features, model, inputs)
    if features.dim != clf.dim_:
        raise InputError(f"the model {model if meta is not None else ''} takes {clf.dim_}-d inputs but {features.source} "
                         f"holds {features.dim}-d embeddings ({features.space})")
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels, label_col=label_col)
    n_in_training = None
    if clf.training_ids_ is not None:
        n_in_training = int(np.isin(hash_ids(table["id"]), clf.training_ids_).sum())
        if n_in_training:
            import warnings

            from simlabel.errors import SimlabelWarning

            warnings.warn(f"{n_in_training:,} of the {len(table):,} evaluation ids were in the model's training set: "
                          "the figures are inflated (evaluate on a holdout the model never saw)", SimlabelWarning, stacklevel=2)
    X = features.rows(table["id"]).matrix
    if semantic is not None and label_neighbors is None:
        sim = label_similarity(embed_label_names(clf.classes_, label_model, device=device))
        label_neighbors = nearest_labels(sim, min(semantic, len(clf.classes_) - 1) + 1, include_self=True)
    if taxonomy is not None and taxonomy_distance is None:
        taxonomy_distance = taxonomy_matrix(clf.classes_, taxonomy)
    proba = clf.predict_proba(X)
    pred = np.asarray(clf.classes_, dtype=object)[proba.argmax(axis=1)]
    report = classification_report(table["label"].to_numpy(), pred, labels=clf.classes_, positive=positive, warn=warn)
    code = {c: i for i, c in enumerate(clf.classes_)}
    # -1 for a class the model never saw: never among the top k, an error
    y = table["label"].map(code).fillna(-1).astype(int).to_numpy()
    if len(clf.classes_) > 2:
        report["top1"] = topk_accuracy(proba, y, 1)
        report["top5"] = topk_accuracy(proba, y, 5)
    seen = y >= 0
    if label_neighbors is not None and seen.any():
        report["semantic"] = semantic_neighborhood_hits(proba[seen], y[seen], label_neighbors, top=5)
    if taxonomy_distance is not None and seen.any():
        report["severity"] = mistake_severity(proba[seen].argmax(axis=1), y[seen], taxonomy_distance)
    if n_in_training is not None:
        report["n_in_training"] = n_in_training
        if n_in_training:
            report.setdefault("notes", []).append(
                f"{n_in_training:,} of the {len(table):,} evaluated ids were trained on: these figures are not a test")
    report.update(_calibration_report(clf, X, proba, y, min_precision, confidence=precision_confidence,
                                      scope=precision_scope))
    if json_out is not None:
        atomic_write_json(json_out, report)
    if html_out is not None:
        from simlabel.report import write_evaluation_html

        write_evaluation_html(report, html_out, model=str(model) if meta is not None else None)
    return report


def _calibration_report(clf: EmbeddingClassifier, X: np.ndarray, proba: np.ndarray, y: np.ndarray,
                        min_precision: float | None, *, confidence: float = 0.95, scope: str = "all") -> dict:
    """Evaluate's calibration figures: ECE before and after, the coverage/precision curve, abstention."""
    from simlabel.calibration import apply_calibration, coverage_precision, expected_calibration_error

    raw = apply_calibration(clf.decision_scores(X), None)
    before, bins_before = expected_calibration_error(raw, y)
    after, bins_after = expected_calibration_error(proba, y)
    cal = dict(clf.calibration_ or {"method": "none", "why": "the model was not calibrated"})
    out = {"calibration": {**cal, "ece_before": before, "ece_after": after, "bins_before": bins_before,
                           "bins_after": bins_after},
           "coverage_precision": coverage_precision(proba, y)}
    if min_precision is None:
        return out
    th = clf.thresholds(min_precision, confidence=confidence, scope=scope)
    cut = np.array([np.inf if th[str(c)]["threshold"] is None else th[str(c)]["threshold"] for c in clf.classes_])
    pred, conf = proba.argmax(axis=1), proba.max(axis=1)
    keep = conf >= cut[pred]
    right = pred == y
    per = {}
    for c, name in enumerate(clf.classes_):
        mine, kept = y == c, keep & (pred == c)
        per[str(name)] = {"threshold": th[str(name)]["threshold"], "support": int(mine.sum()), "kept": int(kept.sum()),
                          "precision": float(right[kept].mean()) if kept.any() else None,
                          "recall": float((right & keep & mine).sum() / mine.sum()) if mine.any() else None,
                          "recall_without": float((right & mine).sum() / mine.sum()) if mine.any() else None}
    out["abstention"] = {"min_precision": min_precision, "confidence": confidence, "scope": scope,
                         "coverage": float(keep.mean()),
                         "precision": float(right[keep].mean()) if keep.any() else None, "per_class": per}
    return out


#: the head of every out-of-fold predictor simlabel trains for its own use (side information's stage 2, the
#: cleanlab peer of suspects): a one-hidden-layer MLP, early-stopped (patience 8 of at most 100 epochs)
def _embedded(features: Embeddings, ids: "set[str]") -> list[str]:
    """The ``ids`` that have an embedding, sorted (the label methods take only those as ``exclude``)."""
    if not ids:
        return []
    ordered = np.asarray(sorted(ids), dtype=object)
    return list(ordered[features.has(ordered)])


def choose_pseudo(features: Embeddings, table: pd.DataFrame, config: "PseudoConfig", head: HeadConfig, *,
                  graph=None, holdout_ids: "set[str] | None" = None, progress: bool = True) -> dict:
    """``pseudo="auto"``: the pseudo-label mode and scale with the best out-of-fold accuracy on the human labels.

    The human labels are split into ``config.folds`` stratified folds. For each fold, the pseudo-labels of
    every mode are made from the other folds' labels only, never on the fold's ids nor on a holdout's; each
    candidate (``none``, or a mode at each of ``config.scales``) trains ``head`` on the other folds (plus its
    pseudo-labels) and is scored on the fold. The best mean accuracy wins, ``none`` unless a mode beats it by
    more than ``config.margin``. Classes with fewer labels than folds are never validated on (their rows
    always train), so a long tail does not stop the validation; with fewer than ``config.min_per_class``
    labels per class on average there is nothing to validate on: ``config.fallback`` at
    ``config.fallback_scale``.

    Parameters
    ----------
    features : Embeddings
        The image embeddings.
    table : pandas.DataFrame
        The human labels (``id, label``), holdout ids already left out.
    config : PseudoConfig
        The candidates, folds and rules.
    head : HeadConfig
        The head every candidate trains (the one ``train`` trains).
    graph : optional
        A k-NN graph of ``features`` for the label methods.
    holdout_ids : set of str, optional
        Ids that must be in no fold (an error) and are never pseudo-labelled.
    progress : bool, default True
        Report each fold.

    Returns
    -------
    dict
        ``mode``, ``scale``, ``why`` and ``candidates``: each candidate's mean and per-fold accuracy.

    Raises
    ------
    InputError
        A holdout id among the labels: the validation would score on the holdout.

    Examples
    --------
    >>> from simlabel.labels.pseudo import PseudoConfig
    >>> choice = choose_pseudo(emb, labels, PseudoConfig(), HeadConfig())  # doctest: +SKIP
    >>> choice["mode"], choice["scale"]  # doctest: +SKIP
    """
    from sklearn.model_selection import StratifiedKFold

    from simlabel.labels.pseudo import PSEUDO_MODES, make_pseudo_labels, pseudo_weights

    hold = set(holdout_ids or ())
    leak = table["id"].astype(str).isin(hold)
    if leak.any():
        raise InputError(f"{int(leak.sum())} holdout id(s) among the labels pseudo=auto validates on "
                         f"(e.g. {table.loc[leak, 'id'].iloc[0]}): it never validates on a holdout")
    counts = table["label"].value_counts()
    if counts.mean() < config.min_per_class or len(table) < 2 * config.folds:
        return {"mode": config.fallback, "scale": config.fallback_scale, "candidates": [],
                "why": f"{counts.mean():.1f} human labels per class, fewer than min_per_class {config.min_per_class}: "
                       "too few to validate; the fallback rule"}
    modes = [m for m in PSEUDO_MODES if m != "none"]
    candidates = [("none", 0.0)] + [(m, sc) for m in modes for sc in config.scales]
    scores = {c: [] for c in candidates}
    ids = table["id"].astype(str).to_numpy()
    y = table["label"].astype(str).to_numpy()
    hold_known = _embedded(features, hold)
    # a long tail: the classes with fewer labels than folds are never validated on, their rows always train
    folded = np.flatnonzero(table["label"].map(counts).to_numpy() >= config.folds)
    always = np.setdiff1d(np.arange(len(ids)), folded)
    with warnings.catch_warnings():
        # many classes with a few labels each read to scikit-learn like a regression target: they are classes
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        splits = [(np.concatenate([folded[a], always]), folded[b]) for a, b in
                  StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed).split(folded, y[folded])]
    with task("pseudo=auto: folds", total=config.folds, unit="folds", enabled=progress) as bar:
        for tr, va in splits:
            part = table.iloc[tr][["id", "label"]]
            X_tr, y_tr = features.rows(ids[tr]).matrix, y[tr]
            X_va = features.rows(ids[va]).matrix
            blocked = list(ids[va]) + hold_known
            made = {m: make_pseudo_labels(features, part, m, config, graph=graph, exclude=blocked) for m in modes}
            for mode, scale in candidates:
                if mode == "none":
                    X, yy, w = X_tr, y_tr, np.ones(len(tr), np.float32)
                else:
                    p = made[mode]
                    X = np.concatenate([X_tr, features.rows(p["id"]).matrix]) if len(p) else X_tr
                    yy = np.concatenate([y_tr, p["label"].astype(str).to_numpy()])
                    w = np.concatenate([np.ones(len(tr), np.float32), pseudo_weights(p["label"], p["certainty"], scale)])
                clf = EmbeddingClassifier(head, progress_label=f"pseudo=auto {mode} x{scale:g}").fit(
                    X, yy, sample_weight=w, classes=sorted(set(y)))
                scores[(mode, scale)].append(float((clf.predict(X_va) == y[va]).mean()))
            bar.advance(1)
    table_out = [{"mode": m, "scale": sc, "accuracy": float(np.mean(v)), "folds": [round(a, 4) for a in v]}
                 for (m, sc), v in scores.items()]
    none_acc = table_out[0]["accuracy"]
    best = max(table_out, key=lambda r: (r["accuracy"], r["mode"] == "none"))
    if best["mode"] != "none" and best["accuracy"] > none_acc + config.margin:
        why = f"out-of-fold accuracy {best['accuracy']:.4f} against {none_acc:.4f} without pseudo-labels"
        return {"mode": best["mode"], "scale": best["scale"], "why": why, "candidates": table_out}
    return {"mode": "none", "scale": 0.0, "candidates": table_out,
            "why": f"no mode beat the human labels alone ({none_acc:.4f}) out of fold"}


OOF_HEAD = HeadConfig(head="mlp", patience=8, max_epochs=100)


def oof_head(device: str = "auto") -> HeadConfig:
    """:data:`OOF_HEAD` on ``device``."""
    return replace(OOF_HEAD, device=device)


def find_suspects(emb: "str | os.PathLike | Embeddings", labels: "str | os.PathLike | pd.DataFrame",
                  config: "SuspectsConfig | None" = None, *, graph=None, index=None,
                  out: "str | os.PathLike | None" = None,
                  label_col: str = "label", all_items: bool = False, folds: int = 3, device: str = "auto",
                  html: "str | os.PathLike | None" = None, catalog=None,
                  ids: "Sequence[str] | None" = None) -> "SuspectsResult":
    """Suspected label errors, as ``simlabel suspects`` finds them, in one call.

    :func:`simlabel.labels.suspects.find_suspects` with, for ``config.method`` ``cleanlab`` or ``both``, its
    peer predictor built here: :data:`OOF_HEAD` heads on ``device`` predicting every labelled item out of
    ``folds`` folds (:func:`oof_predictor`); and with ``html``, the page drawn by
    :func:`simlabel.report.write_suspects_html`.

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The items' embedding folder or a loaded :class:`~simlabel.store.Embeddings`.
    labels : str, os.PathLike or pandas.DataFrame
        ``id,label`` (a CSV, a catalog with ``label_col``, or a table).
    config : SuspectsConfig, optional
        The method and its settings (``None``: :class:`~simlabel.labels.suspects.SuspectsConfig`'s
        defaults); ``config.seed`` also seeds the cleanlab peer's heads and folds.
    graph : str, os.PathLike or KnnGraph, optional
        A k-NN graph of ``emb`` (``k >= config.k``) that the neighbours among the labelled
        items come from (exact search among them for an item whose graph row holds fewer).
    index : str, os.PathLike or NeighborIndex, optional
        Without ``graph``: a saved or built index over ``emb``; with neither, a new index of
        kind ``config.index`` over the labelled items.
    out : str or os.PathLike, optional
        Write the table there (CSV), with ``<out>.summary.json``.
    label_col : str, default "label"
        The label column of ``labels`` when it is a file.
    all_items : bool, default False
        Return every item (``rank`` empty for the unflagged), not only the suspects.
    folds : int, default 3
        Out-of-fold heads of the cleanlab peer.
    device : str, default "auto"
        Where those heads train (``cpu``, ``cuda``, ``auto``).
    html : str or os.PathLike, optional
        Write the page of the top suspects beside their neighbours there.
    catalog : str, os.PathLike or Catalog, optional
        The images of that page: a catalog path or :class:`~simlabel.catalog.Catalog`
        (default ``labels`` when it is a catalog with images).
    ids : sequence of str, optional
        Check these items alone (e.g. the products that arrived today, with their sellers' labels): every
        labelled item still votes and trains the peer, but only these are flagged and returned.

    Returns
    -------
    SuspectsResult
        ``labels``: the suspects (every item with ``all_items``), explained by their nearest labelled
        neighbours; ``summary``: the counts.

    Raises
    ------
    InputError
        No labelled items, an id labelled twice, fewer than two classes, too few items for
        k-NN votes, or what the cleanlab peer's heads raise.
    LabelFileError
        A label file that cannot be read or breaks its rules.
    MissingIdsError
        Labelled ids that have no embedding.
    StoreError
        An embedding folder that cannot be read.
    CatalogError
        With ``html``, a catalog that cannot be read.
    ModelError
        ``device="cuda"`` where torch sees no CUDA device (cleanlab peer).

    See Also
    --------
    simlabel.labels.suspects.find_suspects : The method, with any predictor.

    Examples
    --------
    >>> from simlabel import SuspectsConfig, find_suspects
    >>> found = find_suspects("emb/", "catalog.csv", SuspectsConfig(method="cleanlab"))  # doctest: +SKIP
    >>> found.suspects.head()  # doctest: +SKIP
    """
    from simlabel.labels.suspects import SuspectsConfig
    from simlabel.labels.suspects import find_suspects as find

    cfg = config or SuspectsConfig()
    predictor = (oof_predictor(oof_head(device), folds=folds, seed=cfg.seed, top=None)
                 if cfg.method in ("cleanlab", "both") else None)
    render = None
    if html is not None:
        from simlabel.catalog import Catalog, load_catalog
        from simlabel.report import write_suspects_html

        source = catalog if catalog is not None else labels
        cat = source if isinstance(source, Catalog) else load_catalog(source, require=("id",))
        render = lambda found, path: write_suspects_html(found.labels, cat, path, summary=found.summary)  # noqa: E731
    return find(emb, labels, cfg, graph=graph, index=index, predictor=predictor, out=out, label_col=label_col, all_items=all_items,
                html=html, render=render, only=ids)


def select(emb: "str | os.PathLike | Embeddings", budget: int, config: "SelectConfig | None" = None, *,
           labels: "str | os.PathLike | pd.DataFrame | None" = None, model: "str | os.PathLike | EmbeddingClassifier | None" = None,
           graph=None, index=None, exclude: "Sequence[str] | None" = None, previous=None,
           out: "str | os.PathLike | None" = None, label_col: str = "label", device: str = "auto",
           text_emb: "str | os.PathLike | Embeddings | None" = None, ids: "Sequence[str] | None" = None) -> "Selection":
    """What a person should label next, as ``simlabel select`` chooses it, in one call.

    :func:`simlabel.selection.select_items` handed the model's probabilities over the catalog: those of
    ``model`` (a folder made by ``simlabel train`` or a fitted :class:`~simlabel.heads.EmbeddingClassifier`
    on image embeddings), else of an :data:`OOF_HEAD` head trained here on ``labels`` (when they hold two
    classes or more); without either, the cold-start strategies only.

    Parameters
    ----------
    emb, budget, config, labels, graph, index, exclude, previous, out, label_col
        As :func:`simlabel.selection.select_items`.
    ids : sequence of str, optional
        Choose among these items alone (e.g. the products that arrived today): ``select_items``' ``only``.
    model : str, os.PathLike or EmbeddingClassifier, optional
        The current model; default: one trained on ``labels``.
    device : str, default "auto"
        Where that head trains and predicts.
    text_emb : str, os.PathLike or Embeddings, optional
        The titles' embeddings: then items are chosen, and the model trained, on images and titles side by
        side (:func:`load_features` with ``inputs="image+text"``; items without a title vector are not
        chosen), and a ``graph`` must be one of those joined features. On fashion-products they choose
        and classify better than the images alone (RESULTS.md §16).

    Returns
    -------
    Selection
        The queue (``id``, the reason, the model's proposal, the nearest labelled neighbours), the
        summary (strategy, why, the stopping signal ``changed``) and the catalog's predictions.

    Raises
    ------
    InputError
        A model on other inputs than these image embeddings, or as :func:`simlabel.selection.select_items`.
    MissingIdsError
        Labelled ids without an embedding.
    LabelFileError
        A label file that cannot be read.

    Examples
    --------
    >>> from simlabel import select
    >>> first = select("emb/", 34, out="round1.csv")  # doctest: +SKIP
    >>> nxt = select("emb/", 34, labels="labelled.csv", previous="round1.csv", out="round2.csv")  # doctest: +SKIP
    >>> nxt.summary["changed"]  # doctest: +SKIP
    """
    from simlabel.graph import GraphRows, graph_rows
    from simlabel.selection import select_items

    if text_emb is not None:
        e = load_features(emb, text_emb, inputs="image+text")[0]
    elif graph is not None and model is None:
        e, graph = graph_rows(emb, graph)  # a cold start reads the graph; a model to train loads the vectors below
    else:
        e = as_embeddings(emb)
    what = "image embeddings" if text_emb is None else "image and title embeddings side by side"
    table = None
    if labels is not None:
        table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels, known_ids=e.ids, label_col=label_col)
    clf = None
    if model is not None:
        clf = model if isinstance(model, EmbeddingClassifier) else EmbeddingClassifier.load(model)
        if clf.dim_ != e.dim or (text_emb is None and len(clf.input_dims_) > 1):
            raise InputError(f"the model {model if not isinstance(model, EmbeddingClassifier) else ''} takes "
                             f"{clf.input_dims_} inputs; select reads {e.dim}-d {what} ({e.source})"
                             + ("" if text_emb is not None else "; give `text_emb` for a model of images and titles"))
    elif table is not None and table["label"].nunique() >= 2:
        e = e.embeddings() if isinstance(e, GraphRows) else e
        clf = train(e, table, config=oof_head(device), progress_label="select: model", calibration="none")
    proba = classes = None
    if clf is not None:
        proba = clf.predict_proba(e.matrix)
        classes = [str(c) for c in clf.classes_]
    return select_items(e, budget, config, labels=table, proba=proba, classes=classes, graph=graph, index=index,
                        exclude=list(exclude) if exclude is not None else None, previous=previous, out=out,
                        only=[str(i) for i in ids] if ids is not None else None)


def oof_predictor(head_config: HeadConfig | None = None, *, folds: int = 3, seed: int = 0, top: int | None = 5) -> "Predictor":
    """Paper 003's stage-2 predictor: out-of-fold heads trained with the stage-1 weights.

    The heads predict every item out of ``folds`` folds (``0``: in-sample), keeping each
    item's ``top`` classes: :func:`~simlabel.heads.out_of_fold_proba` with an
    :class:`~simlabel.heads.EmbeddingClassifier` per fold, the stage-1 weights as sample
    weights. Also the cleanlab peer of :func:`find_suspects` (``top=None``).

    Parameters
    ----------
    head_config : HeadConfig, optional
        The heads (``None``: :class:`~simlabel.heads.HeadConfig`'s defaults); its ``seed`` is
        replaced by ``seed``.
    folds : int, default 3
        ``>= 2``: out-of-fold predictions; ``0``: one head trained on every item predicts
        them (in-sample).
    seed : int, default 0
        Seeds the heads and the folds.
    top : int or None, default 5
        Keep each item's ``top`` most probable classes; ``None``: every class.

    Returns
    -------
    Predictor
        ``predict(X, labels, weights, categories)``: ``X`` ``(n, d)``, one label and one
        weight per row, ``categories`` the classes; returns ``(indices into categories
        (n, top) int64, probabilities (n, top) float32)``, or with ``top=None`` the ``(n, C)``
        float64 probabilities.

    Raises
    ------
    InputError
        Raised by ``predict`` when called: ``folds`` negative or 1, or what the heads raise
        in training (weights that are not finite numbers >= 0, a fold with one class, ...).

    See Also
    --------
    simlabel.labels.side_info.side_info_weights : Paper 003's method that takes it.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import HeadConfig, oof_predictor
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> labels = ["shirt"] * 20 + ["shoe"] * 20
    >>> predict = oof_predictor(HeadConfig(max_epochs=20), folds=2, top=1)
    >>> idx, p = predict(X, labels, np.ones(40), ["shirt", "shoe"])
    >>> idx.shape, p.shape
    ((40, 1), (40, 1))
    >>> bool((idx[:, 0] == np.repeat([0, 1], 20)).all())
    True
    """
    cfg = replace(head_config or HeadConfig(), seed=seed)

    def predict(X: np.ndarray, labels: Sequence[str], weights: np.ndarray, categories: Sequence[str]):
        return out_of_fold_proba(lambda: EmbeddingClassifier(cfg), X, labels, classes=categories, sample_weight=weights,
                                 folds=folds, seed=seed, top=top)

    return predict


def multilabel_pretrain(config: "MultiLabelHeadConfig | SelfMLConfig | None" = None) -> "Pretrain":
    """SELF-ML's classifier pre-training: the multi-label head trained on the noisy rows.

    Parameters
    ----------
    config : MultiLabelHeadConfig, SelfMLConfig or None, default None
        The head (``None``: :class:`~simlabel.heads.MultiLabelHeadConfig`'s defaults). Given
        a :class:`~simlabel.labels.selfml.SelfMLConfig`, the head (one dense layer) takes its
        learning rate, batch size, focal parameters, ``pretrain_epochs``, device and
        ``seed + 2`` (the seed stream SELF-ML has always pre-trained its classifier with).

    Returns
    -------
    Pretrain
        ``pretrain(X, Y) -> torch.nn.Module``: a :class:`~simlabel.heads.MultiLabelClassifier`
        fitted on ``X`` ``(n, d)`` and the 0/1 labels ``Y`` ``(n, L)``; its module, ``(n, d)``
        to ``(n, L)`` logits, in eval mode.

    Raises
    ------
    InputError
        Raised by ``pretrain`` when called: ``Y`` not a 0/1 matrix with one row per row of
        ``X``, or an unknown device.
    ValueError
        Raised by ``pretrain``: ``X`` not a finite 2-D array of numbers.
    ModelError
        Raised by ``pretrain``: device ``cuda`` where torch sees no CUDA device.

    See Also
    --------
    simlabel.labels.flipping.flip : SELF-ML's label flipping, which takes it.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import MultiLabelHeadConfig, multilabel_pretrain
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> pretrain = multilabel_pretrain(MultiLabelHeadConfig(epochs=3))
    >>> pretrain(X, (X[:, :2] > 0).astype(int))  # two labels
    Linear(in_features=4, out_features=2, bias=True)
    """
    from simlabel.labels.selfml import SelfMLConfig

    if isinstance(config, SelfMLConfig):
        config = MultiLabelHeadConfig(
            lr=config.lr, batch_size=config.batch_size, epochs=config.pretrain_epochs, focal_gamma=config.focal_gamma,
            focal_alpha=config.focal_alpha, seed=config.seed + 2, device=config.device,
        )
    cfg = config or MultiLabelHeadConfig()
    return lambda X, Y: MultiLabelClassifier(cfg).fit(X, Y).module_
