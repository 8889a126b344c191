"""`simlabel embed`: catalog -> embedding store, resumable, failure-tolerant.

The catalog is cut into shards of ``shard_size`` rows in catalog order. Each
shard is embedded and written atomically (``part-NNNNN.parquet``); its per-item
failures go to ``_errors/part-NNNNN.csv`` first. A shard whose Parquet file
exists is finished, so a killed run started again skips it: no id is embedded
twice and none is lost. ``manifest.json`` pins what the folder is for (model
version, ids fingerprint, shard size), so a resume never mixes two jobs.

Images are decoded and preprocessed in worker threads (the decoders release the GIL)
a bounded window ahead of the model, so decoding overlaps inference and memory stays
flat whatever the catalog size; a pixel budget shared by the decoding threads
(:class:`~simlabel.images.PixelBudget`) keeps a run of huge photos from being decoded
at once. Images given as URLs (``https://``, ``s3://``...) are fetched by a
:class:`~simlabel.sources.Fetcher` a further window ahead (``FetchConfig.window``), so the
network overlaps decoding and inference and a retry's backoff is over before its image's turn;
a failed fetch is a row of ``errors.csv`` with its reason, the URL redacted.

``out`` may be an object storage URL: the job writes a local working copy and publishes each
shard as it is written (:func:`simlabel.remote.checkpoint`), the file list last, under a lease.

One writer per folder: the job holds an OS lock on ``out`` (:func:`simlabel.files.exclusive`),
so a second ``embed`` into the same folder fails at once (or waits, ``wait=True``) instead
of mixing its shards in. ``retry_failed`` embeds again the items ``errors.csv`` lists (after
their files were fixed) into extra shards ``part-rNNNN.parquet``, listed in the manifest,
without redoing the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from simlabel.catalog import Catalog, load_catalog
from simlabel.encoders import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    ImageEncoder,
    TextEncoder,
    get_image_encoder,
    get_text_encoder,
    is_image_model,
    parse_spec,
)
from simlabel.engines import engine_for_store
from simlabel.errors import CatalogError, EmbedItemError, InputError, StoreError
from simlabel.files import atomic_write_text, exclusive, kill_point
from simlabel.images import DEFAULT_MAX_PIXELS, ImageError, PixelBudget, load_image
from simlabel.progress import progress_bar
from simlabel.quality import QUALITY_FIELDS, QUALITY_VERSION, image_quality, pixel_signature
from simlabel.remote import adopt, checkpoint, destination, redact, shown, writes_to_url
from simlabel.sources import FetchConfig, Fetcher, FetchError, is_remote_source
from simlabel.store import (
    APPEND_PREFIX,
    ERRORS_DIR,
    MANIFEST,
    QUALITY_DIR,
    RETRY_PREFIX,
    SHARD_SUFFIX,
    append_shard_name,
    check_complete,
    clear_store,
    errors_csv_text,
    list_shards,
    merge_errors,
    read_error_rows,
    read_manifest,
    shard_name,
    write_manifest,
    write_quality,
    write_shard,
    write_summary,
)
from simlabel.vectors import VectorCache, bytes_hash, content_hash, encoder_key

TEXT_SUBDIR = "text"


class _ItemFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class EmbedResult:
    """What an embedding run did (also written to ``summary.json``).

    Returned by :func:`simlabel.embed`; counts are of the whole folder where they say so,
    of this run otherwise.

    Parameters
    ----------
    out : str
        The embedding folder.
    model : str
        The encoder's name (its model spec).
    modality : str
        ``"image"`` or ``"text"``.
    dim : int
        The embedding width.
    n_items : int
        Rows of the catalog.
    n_embedded : int
        Rows the folder's shards hold after the run (earlier runs and retry shards included).
    n_failed : int
        Items that could not be embedded: the rows of ``errors.csv``.
    n_resumed : int
        Rows of shards an earlier run had finished, skipped by this one.
    seconds : float
        Time this run spent embedding.
    items_per_s : float
        Items this run embedded or failed, per second (``0.0`` when it had nothing to do).
    errors_path : str
        The folder's ``errors.csv`` (``id,path,reason`` of each failed item).
    text : EmbedResult or None, default None
        The result of the text embeddings when a text column was embedded with the images.
    encoder : dict, default {}
        The encoder's description (name, version, width, its settings).
    n_from_cache : int, default 0
        Items whose vector came from the content-addressed cache (the same file embedded before).
    engine : dict, default {}
        The inference engine and precision, and the figures they were chosen by
        (:mod:`simlabel.engines`); empty where none was chosen.
    appended : dict or None, default None
        With ``append``: the generation this run added to the store (``generation``, ``n_new``,
        ``n_embedded``, ``shards``), as ``manifest.json`` lists it; ``None`` when no row was new.

    Examples
    --------
    >>> from simlabel import EmbedResult
    >>> result = EmbedResult(out="emb", model="efficientnet-lite0", modality="image", dim=1280, n_items=3,
    ...                      n_embedded=2, n_failed=1, n_resumed=0, seconds=0.5, items_per_s=6.0,
    ...                      errors_path="emb/errors.csv")
    >>> print(result.summary_line())
    image embeddings (efficientnet-lite0, 1280-d) -> emb: 2 of 3 embedded, 1 failed (see emb/errors.csv), 6.0 items/s
    """

    out: str
    model: str
    modality: str
    dim: int
    n_items: int
    n_embedded: int
    n_failed: int
    n_resumed: int
    seconds: float
    items_per_s: float
    errors_path: str
    text: "EmbedResult | None" = None
    encoder: dict = field(default_factory=dict)
    #: items whose vector came from the content-addressed cache (the same file embedded before)
    n_from_cache: int = 0
    #: the inference engine and precision, and the figures they were chosen by (:mod:`simlabel.engines`)
    engine: dict = field(default_factory=dict)
    #: with ``append``: the generation this run added (``n_new`` rows, its shards); ``None``: nothing was new
    appended: dict | None = None

    def summary_line(self) -> str:
        """One line saying what the run did (and a second for the text embeddings, if any)."""
        line = (
            f"{self.modality} embeddings ({self.model}, {self.dim}-d) -> {self.out}: {self.n_embedded:,} of "
            f"{self.n_items:,} embedded, {self.n_failed:,} failed"
            + (f" (see {self.errors_path})" if self.n_failed else "")
            + (f", {self.n_resumed:,} already done" if self.n_resumed else "")
            + (f", {self.n_from_cache:,} from the cache (embedded before)" if self.n_from_cache else "")
            + (f", {self.appended['n_new']:,} new rows appended (generation {self.appended['generation']})"
               if self.appended else "")
            + f", {self.items_per_s:,.1f} items/s"
            + (f" ({self.engine['backend']} {self.engine['precision']}: {self.engine['reason']})" if self.engine else "")
        )
        return line + ("\n" + self.text.summary_line() if self.text else "")

    def to_dict(self) -> dict:
        """The fields as a plain dict (what ``summary.json`` holds)."""
        return asdict(self)


@dataclass
class _Job:
    out: Path
    ids: np.ndarray
    paths: np.ndarray  # image path or text, for errors.csv and loading
    load: Callable[[int], object]
    encode: Callable[[list], np.ndarray]
    manifest: dict
    modality: str
    workers: int
    #: the content-addressed vectors of this encoder (images only; None: off)
    cache: VectorCache | None = None
    cached: list[int] = field(default_factory=lambda: [0])
    #: the images' quality records by content hash (with ``cache``), so a cached image needs no decode either
    quality_cache: VectorCache | None = None
    #: an append job: the rows the store has not seen, in shards of a new generation (None: the whole catalog)
    append: "_Append | None" = None
    #: start fetching a position's bytes (URL sources), called ``ahead`` positions before it is decoded
    start: Callable[[int], None] | None = None
    ahead: int = 0
    #: rows of the shards Ray workers put straight to object storage this run (not in the working copy)
    remote_rows: int = 0

    def stream(self, positions: Sequence[int], batch_size: int) -> Iterator[tuple[int, object]]:
        """``(position, payload or _ItemFailure)`` in order: fetched ``ahead``, decoded a window ahead of the model."""
        if self.start is not None:
            positions = _started_ahead(positions, self.start, self.ahead)
        return _ordered_prefetch(self.load, positions, self.workers, window=max(2 * batch_size, 8))


@dataclass
class _Append:
    """Adding the rows of a grown catalog to a finished store (``embed(..., append=True)``).

    The store's ``manifest.json`` keeps the first job (its ids, shard size, model version) and lists each
    append as a generation: ``{"generation", "catalog", "ids_sha256", "n_new", "shards", "created"}``, written
    when the generation is complete. Its shards are ``part-x<generation>-<k>.parquet`` (after every shard of
    the first job in the store's order, so the old rows keep their positions). A killed append resumes: the
    rows its written shards hold are seen, and the next shard number follows them.
    """

    generation: int
    seen: np.ndarray  # the ids the store holds or failed on, before this run
    existing: list[str]  # this generation's shards written by a killed run

    def plan(self, ids: np.ndarray, shard_size: int) -> list[tuple[str, list[int]]]:
        import pandas as pd

        new = np.flatnonzero(~pd.Index(ids.astype(str)).isin(self.seen))
        first = len(self.existing)
        return [(append_shard_name(self.generation, first + k), new[s : s + shard_size].tolist())
                for k, s in enumerate(range(0, len(new), shard_size))]


class _Cached:
    """A decoded-and-embedded-before item: its vector (and its image's quality record), found by its file's content
    hash."""

    __slots__ = ("vector", "quality")

    def __init__(self, vector: np.ndarray, quality: tuple | None = None) -> None:
        self.vector, self.quality = vector, quality


class _Fresh:
    """A decoded item to embed, with its content hash (to cache its vector; None: not computed) and its image's
    quality record ``(measures, content hash, pixel hash)`` (:mod:`simlabel.quality`; None for text)."""

    __slots__ = ("payload", "digest", "quality")

    def __init__(self, payload: object, digest: bytes | None, quality: tuple | None = None) -> None:
        self.payload, self.digest, self.quality = payload, digest, quality


def _remove_killed_writes(out: Path) -> None:
    """Remove what a killed write left in the store folder; the caller holds its lock."""
    for stale in out.glob(".*.tmp") if out.is_dir() else []:
        stale.unlink(missing_ok=True)


def _differences(old: dict, new: dict, keys: Sequence[str]) -> dict[str, str]:
    """Each of ``keys`` the two manifests disagree on, with ``key: old != new`` to say so."""
    return {k: f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)}


def _generation_shards(out: Path, generation: int) -> list[str]:
    """The names of an append generation's shards in ``out``, in order."""
    return sorted(p.name for p in out.glob(f"{APPEND_PREFIX}{generation:04d}-*{SHARD_SUFFIX}"))


def _check_append(out: Path, manifest: dict) -> "_Append | None":
    """The append generation to write into ``out``, checked against its first job (``None``: the folder holds
    no store yet, so the whole catalog is embedded as usual)."""
    path = out / MANIFEST
    if not path.exists():
        if out.exists() and list_shards(out):
            raise StoreError(f"{out} has embedding shards but no {MANIFEST}: nothing simlabel can append to")
        return None
    old = read_manifest(out)
    diff = _differences(old, manifest, ("model_version", "shard_size", "modality", "source_column"))
    if diff:
        raise StoreError(f"cannot append to {out}: it was embedded otherwise ({', '.join(diff.values())}); "
                         "append with the same model, engine and shard size, or embed into another `out` folder")
    check_complete(out)  # the first job finished (the error says how to finish it)
    _remove_killed_writes(out)
    generation = len(old.get("appends", [])) + 1
    existing = _generation_shards(out, generation)
    seen = [_shard_ids(p) for p in list_shards(out)]
    failed = [r[0] for f in sorted((out / ERRORS_DIR).glob("*.csv")) for r in read_error_rows(f)]
    seen.append(np.asarray(failed, dtype=object))
    return _Append(generation, np.concatenate(seen).astype(str), existing)


def _record_append(out: Path, job: "_Job", catalog: Catalog) -> dict | None:
    """Write the finished generation into the manifest (the store's fingerprint changes with its ids)."""
    shards = _generation_shards(out, job.append.generation)
    if not shards:
        return None  # nothing was new
    error_files = [out / ERRORS_DIR / f"{name}.csv" for name in shards]
    errors = [r for f in error_files if f.exists() for r in read_error_rows(f)]
    rows = sum(_count_rows(out / name) for name in shards)
    record = {"generation": job.append.generation, "catalog": str(catalog.path) if catalog.path else None,
              "ids_sha256": catalog.fingerprint(), "n_new": rows + len(errors), "n_embedded": rows,
              "shards": shards, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest = read_manifest(out)
    write_manifest(out, {**manifest, "appends": [*manifest.get("appends", []), record]})
    return record


def _check_manifest(out: Path, manifest: dict, overwrite: bool) -> None:
    path = out / MANIFEST
    if overwrite and out.exists():
        clear_store(out)
    _remove_killed_writes(out)
    if path.exists():
        old = read_manifest(out)
        diff = _differences(old, manifest, ("model_version", "ids_sha256", "shard_size", "modality", "source_column"))
        if diff:
            raise StoreError(
                f"{out} holds a different embedding job ({', '.join(diff.values())}); "
                "use another `out` folder, or `overwrite` to start again"
                + ("; to add the rows of a grown catalog to this store, embed it with `append`"
                   if list(diff) == ["ids_sha256"] else "")
            )
    elif out.exists() and list_shards(out):
        raise StoreError(f"{out} has embedding shards but no {MANIFEST}; use another `out` folder or `overwrite`")
    out.mkdir(parents=True, exist_ok=True)
    if path.exists():
        manifest["retry_shards"] = old.get("retry_shards", [])
        manifest["created"] = old.get("created", manifest["created"])
    write_manifest(out, manifest)


def _started_ahead(positions: Sequence[int] | Iterator[int], start: Callable[[int], None], ahead: int) -> Iterator[int]:
    """Yield ``positions`` in order, each ``ahead`` positions after ``start`` was called on it (its fetch begun)."""
    started: deque[int] = deque()
    for p in positions:
        start(p)
        started.append(p)
        if len(started) > ahead:
            yield started.popleft()
    yield from started


def _ordered_prefetch(load: Callable[[int], object], positions: Sequence[int], workers: int, window: int) -> Iterator[tuple[int, object]]:
    """Yield ``(position, load(position) or _ItemFailure)`` in order, ``window`` items ahead."""
    if workers <= 0:
        for p in positions:
            yield p, _safe(load, p)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simlabel-decode") as pool:
        pending: deque[tuple[int, Future]] = deque()
        it = iter(positions)
        try:
            for p in it:
                pending.append((p, pool.submit(_safe, load, p)))
                if len(pending) >= window:
                    q, fut = pending.popleft()
                    yield q, fut.result()
            while pending:
                q, fut = pending.popleft()
                yield q, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def _safe(load: Callable[[int], object], p: int) -> object:
    try:
        return load(p)
    except (ImageError, FetchError) as e:
        return _ItemFailure(e.reason, str(e))
    except _ItemFailure as e:
        return e
    except Exception as e:  # one bad item never kills the run: record it and go on
        return _ItemFailure("error", f"{type(e).__name__}: {e}")


def _encode_items(
    job: _Job, items: Iterator[tuple[int, object]], batch_size: int, strict: bool, advance: Callable[[int], None]
) -> tuple[list[int], np.ndarray, list[tuple[str, str, str]], dict[int, tuple]]:
    """Encode decoded ``(position, payload)`` items in batches; failures are recorded (or raised
    with ``strict``). Returns the embedded positions, their ``(m, dim)`` matrix, the errors and the images'
    quality records by position."""
    ok_pos: list[int] = []
    vectors: list[np.ndarray] = []
    errors: list[tuple[str, str, str]] = []
    batch: list = []
    batch_pos: list[int] = []
    digests: dict[int, bytes] = {}
    quality: dict[int, tuple] = {}
    for p, payload in items:
        if isinstance(payload, _ItemFailure):
            if strict:
                raise EmbedItemError(str(job.ids[p]), redact(str(job.paths[p])), payload.reason, str(payload))
            errors.append((str(job.ids[p]), redact(str(job.paths[p])), payload.reason))
            advance(1)
            continue
        if isinstance(payload, _Cached):
            if payload.quality is not None:
                quality[p] = payload.quality
            vectors.append(payload.vector[None, :])
            ok_pos.append(p)
            job.cached[0] += 1
            advance(1)
            continue
        if isinstance(payload, _Fresh):
            if payload.digest is not None:
                digests[p] = payload.digest
            if payload.quality is not None:
                quality[p] = payload.quality
            payload = payload.payload
        batch.append(payload)
        batch_pos.append(p)
        if len(batch) >= batch_size:
            _flush(job.encode, batch, batch_pos, vectors, ok_pos, advance)
    _flush(job.encode, batch, batch_pos, vectors, ok_pos, advance)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, job.manifest["dim"]), np.float32)
    # cached items skip the batches: put the rows back in catalog order
    order = np.argsort(np.asarray(ok_pos, dtype=np.int64), kind="stable")
    ok_pos, matrix = [ok_pos[i] for i in order], matrix[order]
    if job.cache is not None and digests:
        fresh = [i for i, p in enumerate(ok_pos) if p in digests]
        job.cache.add([digests[ok_pos[i]] for i in fresh], matrix[fresh])
        if job.quality_cache is not None:
            measured = [p for p in (ok_pos[i] for i in fresh) if p in quality]
            if measured:
                job.quality_cache.add([digests[p] for p in measured],
                                      np.stack([_quality_row(quality[p]) for p in measured]))
    return ok_pos, matrix, errors, quality


#: the pixel signature's 48 bytes (simlabel.quality.pixel_signature) as float32 slots of a quality cache row
_SIGNATURE_FLOATS = 12


def _quality_row(record: tuple) -> np.ndarray:
    """A quality record as one float32 row of the quality cache: the measures, then the pixel signature's 48 bytes."""
    return np.concatenate([record[0], np.frombuffer(record[2], dtype=np.float32)])


def _quality_record(row: np.ndarray, digest: bytes) -> tuple:
    n = len(QUALITY_FIELDS)
    return np.asarray(row[:n], dtype=np.float32), digest, np.ascontiguousarray(row[n:], dtype=np.float32).tobytes()


def _write_quality(job: _Job, name: str, ok_pos: list[int], quality: dict[int, tuple]) -> None:
    """The shard's quality file (``_quality/<shard>.parquet``), before the shard: a finished shard has one."""
    if job.modality != "image":
        return
    rows = [p for p in ok_pos if p in quality]
    records = [quality[p] for p in rows]
    (job.out / QUALITY_DIR).mkdir(exist_ok=True)
    write_quality(job.out / QUALITY_DIR / name, job.ids[rows] if rows else [],
                  np.stack([r[0] for r in records]) if records else np.zeros((0, len(QUALITY_FIELDS)), np.float32),
                  [r[1] for r in records], [r[2] for r in records], QUALITY_FIELDS, QUALITY_VERSION)


def _flush(encode: Callable[[list], np.ndarray], batch: list, batch_pos: list[int], vectors: list[np.ndarray],
           ok_pos: list[int], advance: Callable[[int], None]) -> None:
    """Encode the pending batch into ``vectors`` and empty it."""
    if batch:
        vectors.append(np.asarray(encode(batch), dtype=np.float32))
        ok_pos.extend(batch_pos)
        advance(len(batch))
        batch.clear()
        batch_pos.clear()


def _unfinished(job: _Job, shard_size: int) -> tuple[list[tuple[str, list[int]]], int, list[int], Path, dict]:
    """The shards still to write (name and catalog positions), the rows already written (resumed), the rows to
    embed, the errors folder and the shards' metadata: what the local and the Ray runner share. An append job
    (``job.append``) plans the catalog rows the store has not seen instead, in shards of its generation."""
    n = len(job.ids)
    errors_dir = job.out / ERRORS_DIR
    errors_dir.mkdir(exist_ok=True)
    meta = {k: job.manifest[k] for k in ("model", "model_version", "modality", "normalized", "source_column")}
    if job.append is not None:
        plan = job.append.plan(job.ids, shard_size)
        return plan, n - sum(len(p) for _, p in plan), [p for _, pos in plan for p in pos], errors_dir, meta
    n_shards = max(1, -(-n // shard_size))
    done = {p.name for p in list_shards(job.out)}
    todo = [(shard_name(s), list(range(s * shard_size, min(n, (s + 1) * shard_size))))
            for s in range(n_shards) if shard_name(s) not in done]
    resumed = n - sum(len(pos) for _, pos in todo)
    positions = [p for _, pos in todo for p in pos]
    return todo, resumed, positions, errors_dir, meta


def _run(job: _Job, *, batch_size: int, shard_size: int, strict: bool, progress: bool, label: str) -> tuple[int, int, int, float]:
    """Embed every unfinished shard; return (embedded, failed, resumed, seconds)."""
    n = len(job.ids)
    todo, resumed, positions, errors_dir, meta = _unfinished(job, shard_size)
    embedded = failed = 0
    start = time.perf_counter()
    # a finished job has nothing to show: no bar stuck at 100% and "0.0 items/s"
    with progress_bar(label, total=n, completed=resumed, enabled=progress and bool(todo)) as advance:
        stream = job.stream(positions, batch_size)
        for name, pos in todo:
            ok_pos, matrix, errors, quality = _encode_items(job, (next(stream) for _ in pos), batch_size, strict, advance)
            # errors and quality first: a shard's Parquet file is what marks it finished.
            atomic_write_text(errors_dir / f"{name}.csv", errors_csv_text(errors))
            _write_quality(job, name, ok_pos, quality)
            kill_point("embed:between-errors-and-shard")
            write_shard(job.out / name, job.ids[ok_pos], matrix, {**meta, "dim": job.manifest["dim"]})
            kill_point("embed:after-shard")
            checkpoint()  # an output on object storage: publish the shard (a resume starts after it)
            kill_point("embed:after-publish")
            embedded += len(ok_pos)
            failed += len(errors)
    return embedded, failed, resumed, time.perf_counter() - start


def _run_ray(job: _Job, *, batch_size: int, shard_size: int, strict: bool, progress: bool, label: str,
             ray_job: dict) -> tuple[int, int, int, float]:
    """:func:`_run` on Ray (:mod:`simlabel.distributed`): the same shards, errors and resume rule, each shard written
    by a Ray worker (to ``out``, or put straight to the object storage it is published to); the driver only lists
    them and publishes."""
    from simlabel.distributed import run_ray_image_job

    n = len(job.ids)
    todo, resumed, _, _, meta = _unfinished(job, shard_size)
    where = destination(job.out)
    if where is not None and job.append is not None:
        raise InputError("`append` on Ray to an object storage output is not supported: append with engine local")
    write = {"dest": str(job.out), "meta": {**meta, "dim": job.manifest["dim"]}, "dim": job.manifest["dim"],
             **(where or {})}
    state = {"embedded": 0, "failed": 0}
    start = time.perf_counter()
    with progress_bar(label + " (ray)", total=n, completed=resumed, enabled=progress and bool(todo)) as advance:

        def on_shard(result: dict) -> None:
            errors = result["errors"]
            if strict and errors:
                i, path, reason = errors[0]
                raise EmbedItemError(i, path, reason, reason)
            if where is not None:  # the worker put the files; the driver keeps errors.csv's parts and lists the rest
                atomic_write_text(job.out / ERRORS_DIR / f"{result['name']}.csv", errors_csv_text(errors))
                adopt({rel: info for rel, info in result["files"].items() if not rel.startswith(ERRORS_DIR)}, at=job.out)
                job.remote_rows += result["n_ok"]
            kill_point("embed:after-shard")
            checkpoint()
            state["embedded"] += result["n_ok"]
            state["failed"] += len(errors)
            advance(result["n_ok"] + len(errors))

        run_ray_image_job(shards=todo, ids=job.ids, paths=job.paths, batch_size=batch_size, write=write,
                          on_shard=on_shard, strict=strict, **ray_job)
    return state["embedded"], state["failed"], resumed, time.perf_counter() - start


def _retry_failed(job: _Job, *, batch_size: int, strict: bool, progress: bool) -> tuple[int, int]:
    """Embed again the items the per-shard error files list; the ones that now work go into a
    new shard ``part-rNNNN.parquet`` (listed in the manifest) and leave the error files.
    Returns (embedded, still failing)."""
    errors_dir = job.out / ERRORS_DIR
    done = {str(i) for shard in list_shards(job.out) for i in _shard_ids(shard)}
    failed: dict[str, list[list[str]]] = {}
    for f in sorted(errors_dir.glob("*.csv")):
        failed[f.name] = [r for r in read_error_rows(f) if r[0] not in done]
    todo_ids = [r[0] for rows in failed.values() for r in rows]
    if not todo_ids:
        return 0, 0
    pos_of = {str(i): p for p, i in enumerate(job.ids)}
    positions = [pos_of[i] for i in todo_ids if i in pos_of]
    with progress_bar(f"retry {job.modality}", total=len(positions), enabled=progress) as advance:
        stream = job.stream(positions, batch_size)
        ok_pos, matrix, errors, quality = _encode_items(job, stream, batch_size, strict, advance)
    if ok_pos:
        manifest = read_manifest(job.out)
        retry = list(manifest.get("retry_shards", []))
        name = f"{RETRY_PREFIX}{len(retry):04d}.parquet"
        meta = {k: job.manifest[k] for k in ("model", "model_version", "modality", "normalized", "source_column")}
        _write_quality(job, name, ok_pos, quality)
        write_shard(job.out / name, job.ids[ok_pos], matrix, {**meta, "dim": job.manifest["dim"]})
        kill_point("embed:after-retry-shard")
        write_manifest(job.out, {**manifest, "retry_shards": retry + [name]})
    fixed = {str(job.ids[p]) for p in ok_pos}
    for fname, rows in failed.items():
        atomic_write_text(errors_dir / fname, errors_csv_text([tuple(r) for r in rows if r[0] not in fixed]))
    return len(ok_pos), len(errors)


def _shard_ids(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["id"]).column("id").to_numpy(zero_copy_only=False)


def _embed_one(
    out: Path,
    ids: np.ndarray,
    sources: np.ndarray,
    load: Callable[[int], object],
    encode: Callable[[list], np.ndarray],
    encoder: ImageEncoder | TextEncoder,
    *,
    modality: str,
    source_column: str,
    catalog: Catalog,
    batch_size: int,
    shard_size: int,
    workers: int,
    strict: bool,
    overwrite: bool,
    progress: bool,
    retry_failed: bool = False,
    vector_cache: VectorCache | None = None,
    quality_cache: VectorCache | None = None,
    ray_job: dict | None = None,
    engine: dict | None = None,
    append: bool = False,
    start: Callable[[int], None] | None = None,
    ahead: int = 0,
) -> EmbedResult:
    manifest = {
        "model": encoder.name,
        "model_version": encoder.version,
        "dim": encoder.dim,
        "modality": modality,
        "normalized": True,
        "source_column": source_column,
        "catalog": str(catalog.path) if catalog.path else None,
        "n_items": int(len(ids)),
        "ids_sha256": catalog.fingerprint(),
        "shard_size": shard_size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if engine:
        manifest["engine"] = {k: engine.get(k) for k in ("backend", "precision")} | {
            "calibration": engine.get("calibration", {}).get("key")}
    adding = _check_append(out, manifest) if append and not overwrite else None
    if adding is None:
        _check_manifest(out, manifest, overwrite)
    job = _Job(out, ids, sources, load, encode, manifest, modality, workers, cache=vector_cache, append=adding,
               quality_cache=quality_cache, start=start, ahead=ahead)
    if ray_job is not None:
        embedded, failed, resumed, seconds = _run_ray(job, batch_size=batch_size, shard_size=shard_size, strict=strict,
                                                      progress=progress, label=f"embed {modality}", ray_job=ray_job)
    else:
        embedded, failed, resumed, seconds = _run(
            job, batch_size=batch_size, shard_size=shard_size, strict=strict, progress=progress, label=f"embed {modality}"
        )
    appended = _record_append(out, job, catalog) if adding is not None else None
    if retry_failed:
        fixed, _ = _retry_failed(job, batch_size=batch_size, strict=strict, progress=progress)
        embedded += fixed
    errors_path, n_errors = merge_errors(out)
    # shards a Ray worker put straight to object storage are listed, not copied here
    n_ok = sum(_count_rows(p) for p in list_shards(out)) + job.remote_rows
    result = EmbedResult(
        out=shown(out),
        model=encoder.name,
        modality=modality,
        dim=encoder.dim,
        n_items=len(ids),
        n_embedded=n_ok,
        n_failed=n_errors,
        n_resumed=resumed,
        seconds=round(seconds, 3),
        items_per_s=round((embedded + failed) / seconds, 2) if seconds > 0 else 0.0,
        errors_path=shown(errors_path),
        encoder=encoder.describe(),
        n_from_cache=job.cached[0],
        engine=engine or {},
        appended=appended,
    )
    write_summary(out, result.to_dict())
    return result


def log_line(message: str) -> None:
    """One line on stderr (the engine probe's findings)."""
    import sys

    print(message, file=sys.stderr, flush=True)


def _count_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def default_workers() -> int:
    """Decoding threads: one per core, at most 4. The engine's threads take the same cores; on 2 cores one
    thread measured 8-20% slower end to end than 2, and 2 against 4 was within the noise (RESULTS.md §14)."""
    return max(1, min(4, os.cpu_count() or 1))


@writes_to_url("out")
def embed(
    catalog: str | os.PathLike | Catalog,
    out: str | os.PathLike,
    *,
    model: str = DEFAULT_IMAGE_MODEL,
    text_col: str | None = None,
    text_model: str | None = None,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    gate: dict | None = None,
    batch_size: int = 32,
    shard_size: int = 1024,
    workers: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    columns: Mapping[str, str | None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resize: str = "center-crop",
    progress: bool = True,
    image_encoder: ImageEncoder | None = None,
    text_encoder: TextEncoder | None = None,
    retry_failed: bool = False,
    wait: bool = False,
    pixel_budget: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    engine: str = "local",
    address: str | None = None,
    actors: int | None = None,
    append: bool = False,
    fetch: FetchConfig | None = None,
) -> EmbedResult:
    """Embed a catalog's images (and optionally a text column) into ``out``.

    The catalog is cut into shards of ``shard_size`` rows, each written atomically with its
    failures, so a killed run started again resumes at the first unfinished shard; the
    folder's ``manifest.json`` pins the job (model version, ids, shard size, modality, source
    column), so a resume never mixes two jobs. Items that cannot be read or embedded are
    recorded in ``errors.csv`` and the run goes on (unless ``strict``). One writer per
    folder: the job holds a lock on ``out`` while it runs.

    The catalog's images may be local paths, ``http(s)://`` URLs or object storage URLs (``s3://``, ``gs://``...):
    URLs are fetched concurrently ahead of decoding (:mod:`simlabel.sources`, settings in ``fetch``), and a
    failed fetch is a row of ``errors.csv`` with its reason (``http-404``, ``timeout``, ``too-large``...). ``out``
    may be an object storage URL too: the store is written to a local working copy and published shard by shard,
    its file list last, under a one-writer lease (:mod:`simlabel.remote`).

    Parameters
    ----------
    catalog : str, os.PathLike or Catalog
        A catalog file/folder or a loaded :class:`~simlabel.catalog.Catalog`.
    out : str or os.PathLike
        The embedding folder, or an object storage URL (``s3://bucket/run/emb``). Image embeddings go to ``out``;
        text embeddings to ``out/text`` (or to ``out`` itself when ``model`` is a text model).
    model : str, default "efficientnet-lite0"
        Image model spec (see :mod:`simlabel.encoders`), or a text model spec
        (``minilm``, ``st:...``) to embed only ``text_col``.
    text_col : str, optional
        Catalog column to embed as text (e.g. ``title``); empty cells are recorded as failures
        (``empty-text``).
    text_model : str, optional
        Text model spec; default: the CLIP text tower when ``model`` is
        CLIP (same space as the images), otherwise ``minilm``.
    device : str, default "auto"
        ``cpu``, ``cuda`` or ``auto`` (CUDA when visible), for the encoders built from specs.
    backend, precision : str, default "auto"
        The inference engine of a model with an ONNX export (EfficientNet-Lite0, ``skill:`` models) on the
        CPU: ``backend`` ``onnx``, ``openvino``, ``torch`` or ``auto``; ``precision`` ``fp32``, ``bf16``
        (OpenVINO), ``int8`` (calibrated on the catalog's own images) or ``auto``. Anything but fp32 is used
        only after it passes the agreement gate on a sample of the catalog (:mod:`simlabel.engines`); ``auto``
        takes the fastest engine that passes, on a CPU where a reduced precision can win
        (:func:`simlabel.engines.cpu_rules_out`) and a catalog large enough to pay for the probe
        (:func:`simlabel.engines.probe_pays`); elsewhere ONNX Runtime fp32 at once. The choice and its figures
        go to ``summary.json``; a store being resumed keeps the engine it was started with. A ready-made
        ``image_encoder`` runs as it is. A model with no ONNX export here runs as its encoder was built
        (a :class:`~simlabel.errors.SimlabelWarning` says so when another engine was asked for).
    gate : dict, optional
        Other floors for the agreement gate (default :data:`simlabel.engines.GATE`).
    batch_size : int, default 32
        Items per model call (text: at least 256).
    shard_size : int, default 1024
        Rows per shard (text: at least 256), rounded up to a multiple of ``batch_size`` so
        batches stay full. A resumed folder must have been started with the same shard size.
    workers : int, optional
        Image decoding threads, which run a bounded window ahead of the model; default one per
        core, at most 4; ``0`` decodes in the calling thread.
    strict : bool, default False
        Stop at the first item that cannot be embedded (raises :class:`~simlabel.errors.EmbedItemError`).
    overwrite : bool, default False
        Delete what ``out`` holds instead of resuming.
    columns : Mapping of str to str or None, optional
        Column mapping used to load ``catalog`` when it is a path (see :func:`simlabel.load_catalog`).
    max_pixels : int, default 89_478_485
        Refuse (record as failed) images whose declared ``width * height`` exceeds this.
    resize : str, default "center-crop"
        How EfficientNet-Lite0 fits an image to its input: ``center-crop``, ``squash`` or ``pad``.
    progress : bool, default True
        Show progress bars.
    image_encoder, text_encoder : ImageEncoder, TextEncoder, optional
        Ready-made encoders (skip building from specs).
    retry_failed : bool, default False
        Embed again the items ``errors.csv`` lists (e.g. after their files were fixed),
        without redoing the rest; the ones that now work go into extra shards ``part-rNNNN.parquet``.
    wait : bool, default False
        When another process is writing ``out``, wait for it instead of failing at once.
    pixel_budget : int, default 89_478_485
        At most this many decoded pixels in flight across the decoding threads.
    cache : bool, default True
        Look images up in (and add them to) the content-addressed vector cache
        (:mod:`simlabel.vectors`): a file embedded before by the same encoder is not decoded
        or embedded again, whatever folder or id it comes with.
    engine : str, default "local"
        ``local`` (threads on this machine) or ``ray`` (:mod:`simlabel.distributed`: decoding in
        Ray tasks, the encoder in an actor pool of ``actors``; the same store and resume
        contract). A model given as ``image_encoder`` runs locally (an actor builds its model from ``model``).
    address : str, optional
        The Ray cluster for ``engine="ray"`` (``auto``, ``HOST:PORT``; default a local Ray).
    actors : int, optional
        The size of the Ray actor pool for ``engine="ray"``.
    fetch : FetchConfig, optional
        How image URLs are fetched: concurrency, per-host limit, timeout, retries, byte limit, a byte cache
        (default :class:`~simlabel.sources.FetchConfig`). On Ray each decoding task fetches its own images.
    append : bool, default False
        ``catalog`` is the grown catalog of the store in ``out``: embed only its rows the store does not hold
        (nor failed on) into the same store, as a new generation of shards ``part-x<generation>-<k>.parquet``
        listed in ``manifest.json`` (``appends``). Only vectors the vector cache has not seen are computed. The
        old rows keep their shards and order; the store's fingerprint changes with its ids, so graphs and
        indexes built before say so (``simlabel graph EMB --update OLD_GRAPH`` adds the new rows to a graph).
        Rows dropped from the catalog stay in the store. A killed append resumes; an append with nothing new
        writes nothing. The model, engine and shard size must be the store's. Without a store in ``out``, the
        whole catalog is embedded.

    Returns
    -------
    EmbedResult
        What the run did, with ``.text`` set when text was embedded too.

    Raises
    ------
    InputError
        ``batch_size`` or ``shard_size`` below 1, an unknown ``engine``, ``backend``, ``precision``,
        ``device`` or model spec, ``engine="ray"`` with an ``image_encoder``, a text model without
        ``text_col``, or a ``text_col`` that is not a column.
    CatalogError
        The catalog cannot be loaded, or has no rows.
    StoreError
        ``out`` holds another embedding job, or shards without a manifest (use another folder
        or ``overwrite``).
    LockedError
        Another simlabel process is writing ``out`` (and ``wait`` is false), or holds its lease on object storage.
    EmbedItemError
        With ``strict``, for the first item that cannot be embedded.
    ModelError
        A model cannot be loaded or run as asked (missing weights, no CUDA device, an offline hub name).

    Examples
    --------
    >>> import simlabel
    >>> result = simlabel.embed("shop/catalog.csv", "emb/", text_col="title", progress=False)  # doctest: +SKIP
    >>> print(result.summary_line())  # doctest: +SKIP
    >>> emb = simlabel.load_embeddings("emb/")  # doctest: +SKIP
    """
    if batch_size < 1 or shard_size < 1:
        raise InputError("batch_size and shard_size must be >= 1")
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be local or ray; got {engine!r}")
    if engine == "ray" and image_encoder is not None:
        raise InputError("engine='ray' builds the model in each actor from its spec: pass model=..., not image_encoder=")
    if shard_size % batch_size:
        # Shards cut batches short otherwise; round up so batches stay full.
        shard_size = -(-shard_size // batch_size) * batch_size
    out = Path(out)
    family, _ = parse_spec(model)
    image_mode = image_encoder is not None or is_image_model(model)
    if not image_mode and not text_col:
        raise InputError(f"{model!r} is a text model: name the text column to embed with `text_col`")
    require = ("id", "image") if image_mode else ("id",)
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, columns=columns, require=require)
    if len(cat) == 0:
        raise CatalogError(f"{cat.path or 'catalog'}: has no rows to embed")
    if text_col and text_col not in cat.table.columns:
        cols = ", ".join(map(str, cat.table.columns))
        raise InputError(f"{cat.path or 'catalog'}: `text_col` {text_col!r} is not a column; columns are {cols}")
    workers = default_workers() if workers is None else workers
    ids = cat.ids
    if append and overwrite:
        raise InputError("`append` adds the new rows to the store in `out`; `overwrite` starts it again: not both")
    common = dict(catalog=cat, batch_size=batch_size, shard_size=shard_size, strict=strict, overwrite=overwrite,
                  progress=progress, retry_failed=retry_failed, append=append)
    fetch = fetch or FetchConfig()
    with exclusive(out, wait=wait):
        return _embed_locked(out, cat, ids, common, image_mode=image_mode, family=family, model=model, text_col=text_col,
                             text_model=text_model, device=device, backend=backend, precision=precision, resize=resize,
                             workers=workers, gate=gate,
                             max_pixels=max_pixels, pixel_budget=pixel_budget, batch_size=batch_size, shard_size=shard_size,
                             image_encoder=image_encoder, text_encoder=text_encoder, cache=cache,
                             engine=engine, address=address, actors=actors, fetch=fetch)


def _embed_locked(out, cat, ids, common, *, image_mode, family, model, text_col, text_model, device, backend, resize,
                  workers, max_pixels, pixel_budget, batch_size, shard_size, image_encoder, text_encoder,
                  cache: bool = True, engine: str = "local", address: str | None = None,
                  actors: int | None = None, precision: str = "auto", gate: dict | None = None,
                  fetch: FetchConfig | None = None) -> EmbedResult:
    from simlabel.engines import check_engine

    check_engine(backend, precision)
    paths = cat.image_paths() if image_mode else None
    remote = paths is not None and any(is_remote_source(p) for p in paths)
    with Fetcher(fetch) if remote else contextlib.nullcontext() as fetcher:
        return _embed_sources(out, cat, ids, common, paths, fetcher, image_mode=image_mode, family=family, model=model,
                              text_col=text_col, text_model=text_model, device=device, backend=backend, resize=resize,
                              workers=workers, max_pixels=max_pixels, pixel_budget=pixel_budget, batch_size=batch_size,
                              shard_size=shard_size, image_encoder=image_encoder, text_encoder=text_encoder, cache=cache,
                              engine=engine, address=address, actors=actors, precision=precision, gate=gate)


def _embed_sources(out, cat, ids, common, paths, fetcher, *, image_mode, family, model, text_col, text_model, device,
                   backend, resize, workers, max_pixels, pixel_budget, batch_size, shard_size, image_encoder, text_encoder,
                   cache, engine, address, actors, precision, gate) -> EmbedResult:
    """:func:`embed` once the lock is held and the image sources' fetcher (None: no URL among them) is up."""
    image_result = None
    choice = None
    if image_mode:
        if image_encoder is None:
            if family == "clip" and text_col and text_encoder is None and not text_model:
                from simlabel.encoders.hf import load_clip

                image_encoder, text_encoder = load_clip(parse_spec(model)[1], device)
            else:
                # the encoder itself runs ONNX Runtime fp32 (or torch); other engines are chosen below
                enc_backend = "torch" if backend == "torch" else "auto"
                opts = {"backend": enc_backend, "resize": resize} if family == "efficientnet-lite0" else {}
                image_encoder = get_image_encoder(model, device, **opts)
            if backend != "torch":
                choice = engine_for_store(out, cat, image_encoder, backend=backend, precision=precision, max_pixels=max_pixels,
                                          overwrite=bool(common.get("overwrite")), gate=gate, log=log_line, fetcher=fetcher)
                if choice is None and (backend, precision) not in (("auto", "auto"), ("auto", "fp32")):
                    import warnings

                    from simlabel.errors import SimlabelWarning

                    warnings.warn(f"{model} has no exported ONNX model here (device {device}): `backend` {backend} "
                                  f"`precision` {precision} cannot run; embedding with torch fp32", SimlabelWarning,
                                  stacklevel=2)
        enc = image_encoder
        draft = enc.image_size
        budget = PixelBudget(pixel_budget)
        vcache = VectorCache(encoder_key(enc.describe()), enc.dim) if cache else None
        # the images' quality measures do not depend on the encoder, only on the pixels decoded at this scale
        qcache = VectorCache(f"image-quality-v{QUALITY_VERSION}-d{draft}", len(QUALITY_FIELDS) + _SIGNATURE_FLOATS) \
            if cache else None

        def measure(rgb, size):  # in the decode pass: every pixel is read once, for the model and the audit
            return enc.preprocess(rgb), (image_quality(rgb, size), pixel_signature(rgb))

        fetching: dict[int, Future] = {}

        def start_fetch(p: int) -> None:
            if is_remote_source(paths[p]):
                fetching[p] = fetcher.submit(paths[p])

        def load_img(p: int) -> object:
            digest = None
            pending = fetching.pop(p, None)
            data = None if pending is None else pending.result()  # a FetchError is the item's failure
            if vcache is not None:
                try:
                    digest = content_hash(paths[p]) if data is None else bytes_hash(data)
                except OSError:
                    digest = None  # the decoder names what is wrong with the file
                if digest is not None:
                    found, vec = vcache.lookup([digest])
                    q_found, q_row = qcache.lookup([digest])
                    if found[0] and q_found[0]:
                        return _Cached(vec[0], _quality_record(q_row[0], digest))
            pixels, (quality, pixels_digest) = load_image(paths[p], max_pixels=max_pixels, draft_size=draft, budget=budget,
                                                          transform=measure, with_size=True, data=data)
            return _Fresh(pixels, digest, (quality, digest, pixels_digest))

        def encode_img(batch: list) -> np.ndarray:
            return enc(np.stack(batch))

        ray_job = None
        if engine == "ray":
            ray_job = {"spec": model, "device": enc.device if hasattr(enc, "device") else device,
                       "options": {"backend": "torch" if backend == "torch" else "auto", "resize": resize}
                       if family == "efficientnet-lite0" else {},
                       "engine": None if choice is None else choice[1],
                       "draft": draft, "max_pixels": max_pixels, "address": address, "actors": actors,
                       "fetch": None if fetcher is None else dataclasses.asdict(fetcher.config),
                       "storage_options": None if fetcher is None else fetcher.options}
            vcache = None
        image_result = _embed_one(
            out, ids, paths, load_img, encode_img, enc, modality="image", source_column="image", workers=workers,
            vector_cache=vcache, quality_cache=qcache if vcache is not None else None, ray_job=ray_job,
            engine=None if choice is None else choice[0], start=start_fetch if fetcher is not None else None,
            ahead=fetcher.config.window if fetcher is not None else 0, **common
        )

    if text_col:
        if text_encoder is None:
            spec = text_model or (model if not image_mode else (model if family == "clip" else DEFAULT_TEXT_MODEL))
            text_encoder = get_text_encoder(spec, device)
        tenc = text_encoder
        texts = cat.table[text_col].astype(str).to_numpy(dtype=object)

        def load_text(p: int) -> str:
            t = texts[p].strip()
            if not t or t.lower() == "nan":
                raise _ItemFailure("empty-text", f"empty {text_col!r}")
            return t

        text_out = out / TEXT_SUBDIR if image_mode else out
        text_result = _embed_one(
            text_out, ids, texts, load_text, tenc, tenc, modality="text", source_column=text_col, workers=0,
            **{**common, "batch_size": max(batch_size, 256), "shard_size": max(shard_size, 256)},
        )
        if image_result is None:
            return text_result
        image_result.text = text_result
        write_summary(out, image_result.to_dict())
    assert image_result is not None
    return image_result
