"""Classify the catalog: every item's label, how sure, and whether to abstain (``simlabel predict``).

A model trained by :func:`simlabel.training.train` is applied to an embedding store (or to a catalog, embedded
first with the model's own encoder and engine). The store is read shard by shard and each shard's predictions
are one Parquet part of the output folder, written atomically, so that

* memory is bounded by a shard (its vectors and its ``(rows, classes)`` probabilities), never the catalog;
* a killed run started again skips the parts already written for this model and these inputs (their
  metadata names the shard, the model's fingerprint and the options), and never writes a row twice;
* ``_manifest.json``, written last, says the folder is complete (a reader trusts it, not a listing).

Each row: ``id``, ``label`` (the most probable class), ``probability`` (its calibrated probability),
``margin`` (the first probability less the second: small, unsure), the ``top_k`` labels and probabilities,
``abstain`` (with ``min_precision``: the probability is under the class's threshold, chosen on the model's
held-out rows, :meth:`~simlabel.heads.EmbeddingClassifier.thresholds`), ``model`` (its fingerprint), and with
``explain`` the nearest labelled neighbours (``neighbor_ids``, ``neighbor_labels``, ``neighbor_similarities``,
``|``-separated, best first). The folder is also a review queue (``simlabel review``): least sure first.

A multi-label model (:class:`~simlabel.heads.MultiLabelClassifier`: paper 004's classifier, trained by
:func:`simlabel.training.train_multilabel` or SELF-ML's flipping) gives instead ``labels``, every label whose
probability reaches its threshold, and ``probabilities``, one per label (the summary's ``classes``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simlabel.errors import InputError, StoreError
from simlabel.files import atomic_write, atomic_write_json, exclusive, kill_point, read_json
from simlabel.heads import EmbeddingClassifier, MultiLabelClassifier, load_model, model_fingerprint, read_model_meta
from simlabel.progress import task
from simlabel.remote import checkpoint, writes_to_url
from simlabel.store import Embeddings, as_embeddings, iter_embeddings, list_shards, readable

__all__ = ["MULTILABEL_COLUMNS", "PREDICTION_COLUMNS", "Predictions", "model_fingerprint", "predict", "predict_block",
           "predict_multilabel_block", "read_predictions"]

#: the columns of every prediction part of a single-label model (``explain`` adds the neighbour columns)
PREDICTION_COLUMNS = ("id", "label", "probability", "margin", "top_labels", "top_probabilities", "abstain", "model")
#: the columns of a multi-label model's parts: ``probabilities`` holds one per label, in the order of the
#: summary's ``classes``
MULTILABEL_COLUMNS = ("id", "labels", "label", "probabilities", "margin", "abstain", "model")
BLOCK_ROWS = 65536  # rows per part when the embeddings are given loaded (a store is read by its own shards)
MANIFEST = "_manifest.json"  # "_": pyarrow (and pandas.read_parquet on the folder) skip it


def predict_block(clf: EmbeddingClassifier, X: np.ndarray, ids: np.ndarray, *, top_k: int = 3,
                  cut: np.ndarray | None = None, fingerprint: str = "") -> pa.Table:
    """The prediction rows of one block: ``X`` ``(n, d)`` features of ``ids`` (module docstring's columns).

    ``cut``: per class (in ``clf.classes_`` order) the probability under which a prediction abstains.
    """
    proba = clf.predict_proba(X).astype(np.float32)
    n, n_cls = proba.shape
    k = min(top_k, n_cls)
    # the k most probable classes, best first, without sorting every column
    top = np.argpartition(-proba, k - 1, axis=1)[:, :k] if k < n_cls else np.tile(np.arange(n_cls), (n, 1))
    order = np.argsort(-np.take_along_axis(proba, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_p = np.take_along_axis(proba, top, axis=1)
    second = top_p[:, 1] if k > 1 else np.zeros(n, np.float32)
    names = np.asarray([str(c) for c in clf.classes_], dtype=object)
    abstain = np.zeros(n, dtype=bool) if cut is None else top_p[:, 0] < cut[top[:, 0]]
    return pa.table({
        "id": pa.array([str(i) for i in ids], type=pa.string()),
        "label": pa.array(names[top[:, 0]], type=pa.string()),
        "probability": pa.array(top_p[:, 0], type=pa.float32()),
        "margin": pa.array(top_p[:, 0] - second, type=pa.float32()),
        "top_labels": pa.array(names[top].tolist(), type=pa.list_(pa.string())),
        "top_probabilities": pa.array(top_p.tolist(), type=pa.list_(pa.float32())),
        "abstain": pa.array(abstain, type=pa.bool_()),
        "model": pa.array([fingerprint] * n, type=pa.string()),
    })


def predict_multilabel_block(clf: MultiLabelClassifier, X: np.ndarray, ids: np.ndarray, *,
                             fingerprint: str = "") -> pa.Table:
    """The prediction rows of one block for a multi-label head: ``labels``, every label whose probability
    reaches the head's threshold (``label``: them ``|``-joined, for tables and the review queue),
    ``probabilities``, one per label in :meth:`~simlabel.heads.MultiLabelClassifier.label_names` order, and
    ``margin``, the distance of the least sure label from the threshold (small: unsure)."""
    proba = clf.predict_proba(X).astype(np.float32)
    n, n_lab = proba.shape
    names = np.asarray(clf.label_names(), dtype=object)
    on = proba >= clf.threshold
    rows, cols = np.nonzero(on)
    # one list per row from the set cells (row-major, so each row's labels stay in label order)
    offsets = np.concatenate([[0], np.cumsum(on.sum(axis=1))]).astype(np.int32)
    labels = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(names[cols], pa.string()))
    flat = pa.array(proba.reshape(-1), pa.float32())
    return pa.table({
        "id": pa.array([str(i) for i in ids], type=pa.string()),
        "labels": labels,
        "label": pa.array(["|".join(names[on[r]]) for r in range(n)], type=pa.string()),
        "probabilities": pa.FixedSizeListArray.from_arrays(flat, n_lab) if n_lab else pa.array([[]] * n, pa.list_(pa.float32())),
        "margin": pa.array(np.abs(proba - clf.threshold).min(axis=1) if n_lab else np.zeros(n, np.float32), pa.float32()),
        "abstain": pa.array(np.zeros(n, dtype=bool), type=pa.bool_()),
        "model": pa.array([fingerprint] * n, type=pa.string()),
    })


@dataclass
class Predictions:
    """What :func:`predict` made.

    Parameters
    ----------
    path : pathlib.Path or None
        The output folder (Parquet parts, ``_summary.json``, ``_manifest.json``); ``None`` when nothing was
        written.
    summary : dict
        ``rows``, ``abstained``, the count per ``labels``, the model's ``fingerprint``, its ``inputs`` and
        ``calibration``, the ``thresholds`` of ``min_precision``, ``seconds``.
    rows : pandas.DataFrame, optional
        The rows, when they were kept in memory (``out`` not given).

    Examples
    --------
    Built by hand here; :func:`predict` makes it.

    >>> import pandas as pd
    >>> from simlabel import Predictions
    >>> made = Predictions(None, {"rows": 1}, pd.DataFrame({"id": ["a"], "label": ["shoe"]}))
    >>> made.table()["label"].tolist()
    ['shoe']
    """

    path: Path | None
    summary: dict
    rows: pd.DataFrame | None = field(default=None, repr=False)

    def table(self) -> pd.DataFrame:
        """Every row (read from the folder when it was written): for small outputs and tests."""
        return self.rows if self.rows is not None else read_predictions(self.path)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A complete prediction folder as one table (an error when its manifest is missing: unfinished)."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise StoreError(f"{p}: not a finished prediction folder (no {MANIFEST}; run `simlabel predict` again to resume)")
    man = read_json(p / MANIFEST, "prediction manifest")
    parts = [p / name for name in man["parts"]]
    return pd.concat([pq.read_table(f).to_pandas() for f in parts], ignore_index=True) if parts else pd.DataFrame(
        columns=list(PREDICTION_COLUMNS))


def _blocks(source: "str | os.PathLike | Embeddings", block_rows: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, ids, matrix)`` per store shard (a folder) or per ``block_rows`` rows (loaded embeddings)."""
    if isinstance(source, Embeddings):
        for s in range(0, len(source.ids), block_rows):
            yield f"rows-{s:012d}", source.ids[s : s + block_rows], source.matrix[s : s + block_rows]
        return
    for shard, (ids, X) in zip(list_shards(source), iter_embeddings(source)):
        yield shard.stem, ids, X


def _model_source(model) -> "tuple[EmbeddingClassifier | MultiLabelClassifier, dict | None]":
    if isinstance(model, (EmbeddingClassifier, MultiLabelClassifier)):
        return model, None
    return load_model(model), read_model_meta(model)


def _embed_catalog(catalog, meta: dict | None, inputs: str, out: Path, text_col: str, device: str, progress: bool,
                   cache: bool, engine: str = "local", address: str | None = None):
    """Embed ``catalog`` with the model's own encoder (and text encoder), engine and pre-processing."""
    from simlabel.embedding import TEXT_SUBDIR, embed
    from simlabel.store import read_manifest

    if meta is None:
        raise InputError("`catalog` needs a model folder (it records the encoder to embed with); give `emb` for a head")
    source = meta.get("embeddings")
    recorded = {}
    if source and Path(source, "manifest.json").is_file():
        recorded = read_manifest(source)
    image_model = meta.get("embedding_model") or (meta.get("embedding_space") or "?").split("|")[0]
    run_on, engine = engine, recorded.get("engine") or {}
    kw = dict(device=device, progress=progress, backend=engine.get("backend") or "auto",
              precision=engine.get("precision") or "auto", cache=cache, engine=run_on, address=address)
    if inputs == "image":
        embed(catalog, out, model=image_model, **kw)
        return out, None
    text_space = meta.get("text_embedding_space") or ""
    text_model = text_space.split("|")[0] if text_space else None
    if inputs == "text":
        embed(catalog, out, model=text_model or "minilm", text_col=text_col, **kw)
        return None, out
    embed(catalog, out, model=image_model, text_col=text_col, text_model=text_model, **kw)
    return out, out / TEXT_SUBDIR


@writes_to_url("out")
def predict(
    model: "str | os.PathLike | EmbeddingClassifier",
    emb: "str | os.PathLike | Embeddings | None" = None,
    *,
    catalog=None,
    text_emb: "str | os.PathLike | Embeddings | None" = None,
    out: str | os.PathLike | None = None,
    top_k: int = 3,
    min_precision: float | None = None,
    ids: Sequence[str] | None = None,
    explain: int = 0,
    explain_labels: "str | os.PathLike | pd.DataFrame | None" = None,
    graph=None,
    text_col: str = "title",
    embeddings_out: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    cache: bool = True,
    engine: str = "local",
    address: str | None = None,
    precision_confidence: float = 0.95,
    precision_scope: str = "all",
) -> Predictions:
    """Predict every item of an embedding store (or of a catalog) with a trained model.

    Parameters
    ----------
    model : str, os.PathLike, EmbeddingClassifier or MultiLabelClassifier
        A model folder written by ``simlabel train`` (its encoder, inputs and calibration recorded), by
        ``simlabel train --attributes`` / ``flip --model-out`` (a multi-label model: the rows have the
        :data:`MULTILABEL_COLUMNS`), or a head.
    emb : str, os.PathLike or Embeddings, optional
        The catalog's embeddings (a folder is read shard by shard). Of the space the model was trained on.
    catalog : str, os.PathLike or Catalog, optional
        Instead of ``emb``: a catalog, embedded first with the model's encoder, engine and pre-processing into
        ``embeddings_out`` (default: beside ``out``, ``<out stem>.embeddings``; resumable, cached by content).
    text_emb : str, os.PathLike or Embeddings, optional
        The titles' embeddings, for a model of titles or of images and titles (default: the ones it records,
        or with ``catalog`` the ``text_col`` embedded by the model's text encoder).
    out : str or os.PathLike, optional
        The output folder (Parquet parts, then ``_summary.json`` and ``_manifest.json``); ``None``: the rows are returned in memory.
    top_k : int, default 3
        Labels and probabilities kept per item.
    min_precision : float, optional
        Abstain where the probability is under the predicted class's threshold for this precision (chosen on
        the model's held-out rows; a class the held-out rows cannot vouch for always abstains).
    precision_confidence : float, default 0.95
        How sure the held-out rows must make ``min_precision``.
    precision_scope : {"all", "each"}, default "all"
        ``all``: every class reaches ``min_precision`` at once with that confidence; ``each``: each class on its
        own (more coverage, and some class misses more often; :mod:`simlabel.calibration`).
    ids : sequence of str, optional
        Predict these items only (e.g. the products that arrived today).
    explain : int, default 0
        Add each item's ``explain`` nearest labelled neighbours (loads the embeddings whole).
    explain_labels : str, os.PathLike or DataFrame, optional
        The labelled items ``explain`` searches (default: the label file the model records).
    graph : optional
        A k-NN graph of ``emb`` the explanation reads (:func:`simlabel.graph.neighbour_source`).
    text_col : str, default "title"
        The catalog's title column, for a model with title inputs and ``catalog``.
    embeddings_out : str or os.PathLike, optional
        Where ``catalog`` is embedded.
    device : str, default "auto"
        Where embedding runs (``cpu``, ``cuda``, ``auto``).
    progress : bool, default True
        Report the shards.
    cache : bool, default True
        With ``catalog``: reuse the vectors of images embedded before (the vector cache, by content).
    engine : str, default "local"
        ``local``, or ``ray``: each shard of the store is a Ray task that reads it, predicts it and writes its
        part (the head put once in the object store), for catalogs past one machine; the same parts, rows and
        resume rule as the local path (``catalog`` is embedded with ``embed``'s Ray engine too). Needs ``out``
        and a store folder, and no ``explain``. The store and ``out`` must be on storage every node sees.
    address : str, optional
        The Ray cluster for ``engine="ray"`` (``auto``, ``HOST:PORT``; default a local Ray).

    Returns
    -------
    Predictions
        The folder, the summary (rows, abstained, per label, the model's fingerprint, the thresholds, the time)
        and, without ``out``, the rows.

    Raises
    ------
    InputError
        Neither or both of ``emb`` and ``catalog``; embeddings of another space or width than the model's; a
        model of titles without title embeddings (the inputs it needs are named); a ``top_k`` under 1; a model
        without held-out rows and ``min_precision``; ``explain`` without labels to explain with.
    StoreError
        An embedding folder that cannot be read; an unfinished output folder of other inputs.
    FileNotFoundError
        ``model`` is not a model folder.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from simlabel import Embeddings, HeadConfig, train, predict
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"item{i}" for i in range(40)]
    >>> X = np.vstack([rng.normal(-2, 1, (20, 4)), rng.normal(2, 1, (20, 4))]).astype(np.float32)
    >>> clf = train(Embeddings(ids, X), pd.DataFrame({"id": ids[::2], "label": ["shirt"] * 10 + ["shoe"] * 10}),
    ...             config=HeadConfig(max_epochs=20, val_frac=0.0))
    >>> got = predict(clf, Embeddings(ids, X), progress=False).table()
    >>> got[["id", "label"]].head(2).to_dict("records")
    [{'id': 'item0', 'label': 'shirt'}, {'id': 'item1', 'label': 'shirt'}]
    >>> predict("model/", "emb/", out="predictions/", min_precision=0.95)  # doctest: +SKIP
    """
    from simlabel.training import check_space, load_features

    if (emb is None) == (catalog is None):
        raise InputError("give either `emb` (an embedding store) or `catalog` (embedded with the model's encoder)")
    if top_k < 1:
        raise InputError(f"`top_k` must be at least 1; got {top_k}")
    if engine not in ("local", "ray"):
        raise InputError(f"`engine` must be local or ray; got {engine!r}")
    clf, meta = _model_source(model)
    inputs = (meta or {}).get("inputs") or ("image+text" if len(clf.input_dims_) > 1 else "image")
    multilabel = isinstance(clf, MultiLabelClassifier)
    if multilabel and (min_precision is not None or explain):
        raise InputError("a multi-label model sets each label where its probability reaches the model's threshold: "
                         "`min_precision` and `explain` are for single-label models")
    t0 = time.perf_counter()
    if catalog is not None:
        where = Path(embeddings_out) if embeddings_out else (
            Path(out).with_name(Path(out).stem + ".embeddings") if out else None)
        if where is None:
            raise InputError("`catalog` needs `out` or `embeddings_out`: where its embeddings are kept")
        emb, embedded_text = _embed_catalog(catalog, meta, inputs, where, text_col, device, progress, cache, engine, address)
        text_emb = text_emb if text_emb is not None else embedded_text
        if inputs == "text":
            emb = embedded_text
    if inputs != "image" and text_emb is None and meta and meta.get("text_embeddings"):
        text_emb = meta["text_embeddings"]
    if inputs != "image" and text_emb is None:
        raise InputError(f"the model takes {inputs} inputs: give the titles' embeddings (`text_emb`), or a catalog "
                         f"whose `{text_col}` column they are made from")
    # what the model reads: image rows streamed from their store; titles (small) loaded once and joined per block
    text = as_embeddings(text_emb) if text_emb is not None else None
    streamed: "str | os.PathLike | Embeddings" = emb if inputs != "text" else text
    if isinstance(streamed, (str, os.PathLike)):
        streamed = readable(streamed)  # a store on object storage: read through its local copy
    if explain or not isinstance(streamed, (str, os.PathLike)):
        streamed = as_embeddings(streamed)
    probe = streamed if isinstance(streamed, Embeddings) else _first_rows(streamed)
    features = probe if inputs != "image+text" else load_features(probe, text, inputs="image+text")[0]
    if meta is not None:  # the rows streamed are of the space the model was trained on
        check_space(meta, probe, model, "text" if inputs == "text" else "image")
    if features.dim != clf.dim_:
        raise InputError(f"the model takes {clf.dim_}-d inputs ({inputs}) but {features.source} gives {features.dim}-d "
                         f"({features.space})")
    fingerprint = model_fingerprint(clf)
    cut, thresholds = None, None
    if min_precision is not None:
        thresholds = clf.thresholds(min_precision, confidence=precision_confidence, scope=precision_scope)
        cut = np.array([np.inf if thresholds[str(c)]["threshold"] is None else thresholds[str(c)]["threshold"]
                        for c in clf.classes_], dtype=np.float64)
    wanted = None if ids is None else pd.Index(pd.unique(np.asarray([str(i) for i in ids], dtype=object)))
    explainer = _explainer(clf, meta, streamed, explain, explain_labels, graph) if explain else None
    options = {"top_k": int(top_k), "min_precision": min_precision, "inputs": inputs, "explain": int(explain),
               "precision": [precision_confidence, precision_scope] if min_precision is not None else None,
               "ids": None if wanted is None else hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()[:16],
               "source": [_source_key(streamed), _source_key(text)]}
    writer = _PartWriter(Path(out), fingerprint, options) if out is not None else None
    kept, stats = [], _Stats()
    total = -(-len(streamed.ids) // BLOCK_ROWS) if isinstance(streamed, Embeddings) else len(list_shards(streamed))
    work = _Work(clf, multilabel, inputs, text, wanted, top_k, cut, fingerprint)
    if engine == "ray" and (out is None or isinstance(streamed, Embeddings) or explainer is not None):
        raise InputError("`engine` ray predicts a store's shards in Ray tasks that write their parts: give `emb` as a "
                         "folder and `out`, without `explain`")
    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(exclusive(Path(out)))  # one writer per output folder
        if engine == "ray":
            _predict_on_ray(work, streamed, writer, stats, total, progress, address)
        else:
            with task("predict", total, unit="shards", enabled=progress) as bar:
                for name, block_ids, X in _blocks(streamed, BLOCK_ROWS):
                    if writer is not None and writer.done(name):
                        part = writer.read_done(name)
                    else:
                        part = work(block_ids, X)
                        if explainer is not None:
                            part = explainer(part, work.kept_ids)
                        if writer is not None:
                            writer.write(name, part)
                    stats.add(part, multilabel)
                    if writer is None:
                        kept.append(part)
                    bar.advance(1, last=f"{stats.rows:,} rows")
        n_rows, n_abstain, counts, n_without_text = stats.rows, stats.abstained, stats.counts, work.without_text
        summary = {"model": str(model) if meta is not None else "(in memory)", "fingerprint": fingerprint,
                   "inputs": inputs, "rows": n_rows, "abstained": n_abstain, "labels": dict(sorted(counts.items())),
                   "top_k": int(top_k), "min_precision": min_precision, "thresholds": thresholds,
                   "precision_confidence": precision_confidence if min_precision is not None else None,
                   "precision_scope": precision_scope if min_precision is not None else None,
                   "calibration": clf.calibration_, "seconds": round(time.perf_counter() - t0, 3)}
        if multilabel:  # the order of each row's probabilities, and what sets a label
            summary.update(kind="multi-label", classes=clf.label_names(), threshold=float(clf.threshold))
        if wanted is not None:
            summary["ids_asked"] = int(len(wanted))
        if inputs == "image+text":
            summary["without_text"] = n_without_text
        if writer is not None:
            summary["parts"], summary["parts_reused"] = len(writer.parts), writer.reused
            writer.finish(summary)
    rows = pa.concat_tables(kept).to_pandas() if writer is None and kept else None
    if writer is None and not kept:
        rows = pd.DataFrame(columns=list(MULTILABEL_COLUMNS if multilabel else PREDICTION_COLUMNS))
    return Predictions(Path(out) if out is not None else None, summary, rows)


@dataclass
class _Stats:
    """The summary's counts, added up part by part."""

    rows: int = 0
    abstained: int = 0
    counts: dict = field(default_factory=dict)

    def add(self, part: pa.Table, multilabel: bool) -> None:
        self.rows += part.num_rows
        named = part.column("labels" if multilabel else "label")
        for entry in pc.value_counts(pc.list_flatten(named) if multilabel else named).to_pylist():
            self.counts[entry["values"]] = self.counts.get(entry["values"], 0) + int(entry["counts"])
        self.abstained += int(np.asarray(part.column("abstain")).sum())


@dataclass
class _Work:
    """One block's prediction rows, the same in this process and in a Ray task: the ids asked for, the title
    vectors joined (an item without one is left out and counted), the head."""

    clf: "EmbeddingClassifier | MultiLabelClassifier"
    multilabel: bool
    inputs: str
    text: "Embeddings | None"
    wanted: "pd.Index | None"
    top_k: int
    cut: "np.ndarray | None"
    fingerprint: str
    without_text: int = 0
    kept_ids: "np.ndarray | None" = None

    def __call__(self, block_ids: np.ndarray, X: np.ndarray) -> pa.Table:
        if self.wanted is not None:
            keep = pd.Index(block_ids.astype(str)).isin(self.wanted)
            block_ids, X = block_ids[keep], X[keep]
        if self.inputs == "image+text" and len(block_ids):
            have = self.text.has(block_ids)  # an item without a title vector cannot be predicted
            self.without_text += int((~have).sum())
            block_ids, X = block_ids[have], np.concatenate([X[have], self.text.rows(block_ids[have]).matrix], axis=1)
        self.kept_ids = block_ids
        if self.multilabel:
            return predict_multilabel_block(self.clf, X, block_ids, fingerprint=self.fingerprint)
        return predict_block(self.clf, X, block_ids, top_k=self.top_k, cut=self.cut, fingerprint=self.fingerprint)


def _ray_part(work: _Work, out: str, key: str, shard: str, name: str) -> tuple[str, bytes, int]:
    """A Ray task: one store shard's part, written atomically to ``out`` (as the local path writes it); returns
    the part's name, its Arrow IPC bytes for the driver's counts (no vectors), and the rows left without titles."""
    from simlabel.store import iter_embeddings as read

    ids, X = next(read(shard))
    part = work(ids, X)
    _write_part(Path(out), name, key, part)
    sink = pa.BufferOutputStream()
    slim = part.select(["label", "labels", "abstain"] if work.multilabel else ["label", "abstain"])
    with pa.ipc.new_stream(sink, slim.schema) as w:
        w.write_table(slim)
    return name, sink.getvalue().to_pybytes(), work.without_text


def _predict_on_ray(work: _Work, store, writer: "_PartWriter", stats: _Stats, total: int, progress: bool,
                    address: str | None) -> None:
    """Every shard not predicted yet, as a Ray task writing its own part; the driver adds up the counts and
    keeps the parts in the store's order."""
    from simlabel.distributed import ray_session

    shards = list_shards(store)
    todo = []
    for shard in shards:
        if writer.done(shard.stem):
            stats.add(writer.read_done(shard.stem), work.multilabel)
        else:
            todo.append(shard)
    ray, started = ray_session(address)
    try:
        shared = ray.put(work)  # the head (and the titles) once in the object store
        remote = ray.remote(_ray_part)
        pending = [remote.remote(shared, str(writer.out), writer.key, str(shard), shard.stem) for shard in todo]
        with task("predict (ray)", total, unit="shards", completed=total - len(todo), enabled=progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for name, ipc, without in ray.get(done):
                    stats.add(pa.ipc.open_stream(ipc).read_all(), work.multilabel)
                    work.without_text += without
                    writer.parts.append(f"{name}.parquet")
                    kill_point("predict:after-part")
                    checkpoint()  # an output on object storage: publish the part
                bar.advance(len(done), last=f"{stats.rows:,} rows")
    finally:
        if started:
            ray.shutdown()
    order = {f"{p.stem}.parquet": i for i, p in enumerate(shards)}
    writer.parts.sort(key=order.__getitem__)


def _write_part(out: Path, name: str, key: str, part: pa.Table) -> None:
    table = part.replace_schema_metadata({**(part.schema.metadata or {}), b"simlabel.predict": key.encode()})
    atomic_write(out / f"{name}.parquet", lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _source_key(source: "str | os.PathLike | Embeddings | None") -> str | None:
    """What the rows come from, so that a part made from other vectors is never reused: loaded embeddings'
    fingerprint; a store's job (its manifest: model version, ids, retried shards), or without a manifest its
    shard files' names, sizes and times."""
    if source is None:
        return None
    if isinstance(source, Embeddings):
        return source.fingerprint
    from simlabel.store import read_manifest

    if (Path(source) / "manifest.json").is_file():
        man = read_manifest(source)
        return json.dumps([man.get(k) for k in ("model_version", "ids_sha256", "retry_shards")])
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in list_shards(source)]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def _first_rows(path: str | os.PathLike) -> Embeddings:
    """The first shard of a store as :class:`Embeddings` carrying the store's metadata: its space and width."""
    from simlabel.store import read_metadata

    ids, X = next(iter_embeddings(path))
    return Embeddings(ids, X, {**read_metadata(path), "path": str(path)})


def _explainer(clf: EmbeddingClassifier, meta: dict | None, emb: Embeddings, k: int, labels, graph):
    """A function adding each row's ``k`` nearest labelled neighbours to a prediction part."""
    from simlabel.graph import neighbour_source
    from simlabel.labels.io import read_labels

    if labels is None:
        recorded = (meta or {}).get("labels")
        if not recorded or recorded == "DataFrame" or not Path(recorded).exists():
            raise InputError("`explain` needs the labelled items to explain with (`explain_labels`): the model records "
                             f"none that can be read ({recorded!r})")
        labels = read_labels(recorded, label_col=(meta or {}).get("label_col", "label"))
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels)
    table = table[emb.has(table["id"].astype(str))]
    if table.empty:
        raise InputError("none of the labelled items given to `explain` has an embedding")
    among = emb.positions(table["id"].astype(str))
    lab = table["label"].astype(str).to_numpy()
    source = neighbour_source(emb, min(k, len(among)), among=among, graph=graph)

    def add(part: pa.Table, block_ids: np.ndarray) -> pa.Table:
        if not len(block_ids):
            return part.append_column("neighbor_ids", pa.array([], pa.string())).append_column(
                "neighbor_labels", pa.array([], pa.string())).append_column("neighbor_similarities", pa.array([], pa.string()))
        nb = source(emb.positions(block_ids))
        cols = {"neighbor_ids": [], "neighbor_labels": [], "neighbor_similarities": []}
        for row, sims in zip(nb.neighbors, nb.similarities):
            ok = row >= 0
            cols["neighbor_ids"].append("|".join(str(i) for i in emb.ids[among[row[ok]]]))
            cols["neighbor_labels"].append("|".join(lab[row[ok]]))
            cols["neighbor_similarities"].append("|".join(f"{s:.3f}" for s in sims[ok]))
        for name, values in cols.items():
            part = part.append_column(name, pa.array(values, pa.string()))
        return part

    return add


class _PartWriter:
    """One Parquet part per input block (named after the store's shard, or ``rows-<first row>``), written
    atomically; ``_manifest.json`` last. A part is reused on a resume only when its metadata names the same
    model and options."""

    def __init__(self, out: Path, fingerprint: str, options: dict) -> None:
        self.out, self.fingerprint, self.options = out, fingerprint, options
        self.key = json.dumps({"model": fingerprint, **options}, sort_keys=True)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder (`out` is a folder of Parquet parts)")
        out.mkdir(parents=True, exist_ok=True)
        manifest = out / MANIFEST
        if manifest.is_file():  # a finished folder is replaced only when asked again with other inputs
            manifest.unlink()
        self.parts: list[str] = []
        self.reused = 0

    def _path(self, name: str) -> Path:
        return self.out / f"{name}.parquet"

    def done(self, name: str) -> bool:
        p = self._path(name)
        if not p.is_file():
            return False
        try:
            meta = pq.read_schema(p).metadata or {}
        except (pa.ArrowInvalid, OSError):
            return False
        return meta.get(b"simlabel.predict") == self.key.encode()

    def read_done(self, name: str) -> pa.Table:
        self.parts.append(self._path(name).name)
        self.reused += 1
        return pq.read_table(self._path(name))

    def write(self, name: str, part: pa.Table) -> None:
        _write_part(self.out, name, self.key, part)
        self.parts.append(self._path(name).name)
        kill_point("predict:after-part")
        checkpoint()  # an output on object storage: publish the part

    def finish(self, summary: dict) -> None:
        # parts of an earlier run with other inputs are not this folder's: remove them
        for stale in self.out.glob("*.parquet"):
            if stale.name not in set(self.parts):
                stale.unlink()
        atomic_write_json(self.out / "_summary.json", summary)
        atomic_write_json(self.out / MANIFEST, {"format": "simlabel.predictions", "parts": self.parts,
                                                "rows": summary["rows"], "model": self.fingerprint,
                                                "options": self.options})
