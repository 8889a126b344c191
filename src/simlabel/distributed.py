"""Embedding on Ray: the same store, written shard by shard, when one machine is not enough.

``simlabel embed --engine ray [--address auto|HOST:PORT]`` runs the image job as a Ray Data
pipeline:

1. the positions of the unfinished shards, one input block per shard;
2. fetching and decoding in Ray tasks (``map_batches`` of :func:`_decode_batch`): URLs (``http(s)://``,
   ``s3://``...) are fetched by the task itself (:mod:`simlabel.sources`, with the run's fetch settings and
   ``storage_options``); each image is decoded at a reduced JPEG scale near the model's input
   (``load_image(draft_size=...)``); a file that cannot be read becomes a failure row with its reason, never a
   failed task;
3. the encoder in an actor pool (``map_batches(_EncoderActor,
   compute=ActorPoolStrategy(size=N))``, ``num_gpus=1`` per actor with ``--device cuda``): each
   actor builds the model once, preprocesses and embeds its batches;
4. the driver reads only the output blocks' row counts (``iter_internal_ref_bundles``; with ``preserve_order``
   the blocks come in position order) and hands each shard's block references to a :func:`_write_shard` task,
   which writes the shard's errors file, quality file and Parquet shard, in that order, exactly as the local
   path names them: into the output folder, or straight to the object storage the output is published to
   (``--out s3://...``), returning each file's size and digest for the driver to list
   (:func:`simlabel.remote.adopt`). The driver, the output's one writer, keeps the lease, writes the manifest
   and the published list, and reports the shards in order, so a killed job resumes at the first unfinished
   shard, on Ray or locally.

No image and no vector passes through the driver, and with URL images and an object storage output no shared
filesystem is needed (local image paths must be on storage every node sees; a local ``out`` too). The vector
cache is not consulted on this path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from simlabel.errors import InputError
from simlabel.remote import redact

__all__ = ["ray_session", "run_ray_image_job"]


def ray_session(address: str | None = None, *, num_cpus: int | None = None):
    """``ray.init`` unless Ray is already up (then the running session is used and left running).

    ``address``: ``None`` starts a local Ray on this machine; ``auto`` joins the cluster
    ``ray start --head`` started; ``HOST:PORT`` a given head. Returns ``(ray, started_here)``.
    """
    try:
        import ray
    except ImportError as e:
        raise InputError("`engine` ray needs Ray: pip install 'simlabel[ray]'") from e
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    return ray, True


def _decode_batch(batch: dict, *, draft: int, max_pixels: int, fetch: dict | None = None,
                  storage_options: dict | None = None) -> dict:
    """Ray task: fetch (URLs, :mod:`simlabel.sources`: the worker reads the source itself, nothing passes through
    the driver) and decode the images of a batch of ``(pos, path)`` rows, measuring each image's quality in the
    same pass (:mod:`simlabel.quality`); failures carry their reason."""
    from simlabel.images import ImageError, load_image
    from simlabel.quality import QUALITY_FIELDS, image_quality, pixel_signature
    from simlabel.sources import FetchConfig, Fetcher, FetchError, is_remote_source

    def measure(rgb, size):
        return np.asarray(rgb, dtype=np.uint8), image_quality(rgb, size), pixel_signature(rgb).hex()

    pos = np.asarray(batch["pos"], dtype=np.int64)
    paths = [str(p) for p in batch["path"]]
    fetcher = Fetcher(FetchConfig(**(fetch or {})), storage_options) if any(map(is_remote_source, paths)) else None
    # the batch's fetches all in flight at once (bounded by the fetcher), then decoded in order
    futures = [fetcher.submit(p) if fetcher is not None and is_remote_source(p) else None for p in paths]
    images, reasons, quality, hashes = [], [], [], []
    for path, fut in zip(paths, futures):
        try:
            data = None if fut is None else fut.result()
            img, q, h = load_image(path, max_pixels=max_pixels, draft_size=draft,
                                   transform=measure, with_size=True, data=data)
            images.append(img)
            quality.append(q)
            hashes.append(h)
            reasons.append("")
        except Exception as e:  # noqa: BLE001 - one bad image never fails the job
            images.append(np.zeros((1, 1, 3), np.uint8))
            quality.append(np.full(len(QUALITY_FIELDS), np.nan, np.float32))
            hashes.append("")
            reasons.append(e.reason if isinstance(e, (ImageError, FetchError)) else f"error: {type(e).__name__}")
    if fetcher is not None:
        fetcher.close()
    out = np.empty(len(images), dtype=object)
    out[:] = images
    return {"pos": pos, "image": out, "reason": np.asarray(reasons, dtype=object), "quality": np.stack(quality),
            "pixel_hash": np.asarray(hashes, dtype=object)}


class _EncoderActor:
    """Ray actor: the model, built once; preprocesses and embeds decoded images."""

    def __init__(self, spec: str, device: str, options: dict, engine: dict | None = None) -> None:
        from simlabel.encoders import get_image_encoder

        self.encoder = get_image_encoder(spec, device, **options)
        here = (getattr(self.encoder, "backend", None), getattr(self.encoder, "precision", "fp32"))
        if engine and engine.get("backend") and (engine["backend"], engine["precision"]) != here:
            # the engine the driver chose and gated, rebuilt here (an int8 file on storage every node sees)
            from simlabel.engines import make_engine

            eng = make_engine(engine["backend"], engine["precision"], self.encoder.onnx_model(),
                              int8_path=engine.get("int8_path"))
            self.encoder.use_engine(eng, engine["backend"], engine["precision"], engine.get("tag", ""))

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            pixels = np.stack([self.encoder.preprocess(Image.fromarray(im)) for im, good in zip(batch["image"], ok) if good])
            vectors[ok] = self.encoder(pixels)
        return {"pos": batch["pos"], "vector": vectors, "reason": batch["reason"], "quality": batch["quality"],
                "pixel_hash": batch["pixel_hash"]}


def _write_shard(write: dict, name: str, positions: np.ndarray, ids: np.ndarray, paths: np.ndarray, strict: bool,
                 *blocks: Any) -> dict:
    """Ray task: one shard's files from the encoder actors' blocks (a block may hold rows of the next shard too),
    written by this worker to the output (a folder, or an object storage URL): errors first, then the images'
    quality, then the Parquet shard, which marks it finished. Returns the counts, the error rows and, for a URL,
    each file's size and BLAKE2b (what the driver lists in the published set)."""
    import tempfile
    from pathlib import Path

    from ray.data.block import BlockAccessor

    from simlabel.files import atomic_write_text
    from simlabel.quality import QUALITY_FIELDS, QUALITY_VERSION
    from simlabel.remote import RemoteFolder, file_info
    from simlabel.store import ERRORS_DIR, QUALITY_DIR, errors_csv_text, write_quality, write_shard

    parts = [BlockAccessor.for_block(b).to_numpy() for b in blocks]
    if not parts:  # a shard with no rows
        parts = [{"pos": np.zeros(0, np.int64), "vector": np.zeros((0, write["dim"]), np.float32),
                  "reason": np.zeros(0, object), "quality": np.zeros((0, 0), np.float32), "pixel_hash": np.zeros(0, object)}]
    pos = np.concatenate([np.asarray(d["pos"], dtype=np.int64) for d in parts])
    keep = np.flatnonzero(np.isin(pos, positions))
    keep = keep[np.argsort(pos[keep], kind="stable")]
    col = {k: np.concatenate([np.asarray(d[k]) for d in parts])[keep] for k in ("vector", "reason", "quality", "pixel_hash")}
    row_of = {int(p): i for i, p in enumerate(positions)}
    rows = np.asarray([row_of[int(p)] for p in pos[keep]], dtype=np.int64)
    ok = np.asarray([r == "" for r in col["reason"]], dtype=bool)
    errors = [(str(ids[r]), redact(str(paths[r])), str(why)) for r, why in zip(rows[~ok], col["reason"][~ok])]
    result = {"name": name, "n_ok": int(ok.sum()), "errors": errors, "files": {}}
    if strict and errors:
        return result  # the driver stops at the first failure; nothing of this shard is written
    dest = write["dest"]
    remote = write.get("url")
    with tempfile.TemporaryDirectory(prefix="simlabel-shard-") as tmp:
        root = Path(tmp) if remote else Path(dest)
        (root / ERRORS_DIR).mkdir(parents=True, exist_ok=True)
        (root / QUALITY_DIR).mkdir(parents=True, exist_ok=True)
        names = [f"{ERRORS_DIR}/{name}.csv", f"{QUALITY_DIR}/{name}", name]
        atomic_write_text(root / names[0], errors_csv_text(errors))
        q = np.asarray(col["quality"], dtype=np.float32)[ok].reshape(-1, len(QUALITY_FIELDS))
        write_quality(root / names[1], ids[rows[ok]], q, [None] * int(ok.sum()),
                      [bytes.fromhex(h) for h in col["pixel_hash"][ok]], QUALITY_FIELDS, QUALITY_VERSION)
        write_shard(root / names[2], ids[rows[ok]], np.asarray(col["vector"], dtype=np.float32)[ok].reshape(int(ok.sum()), -1)
                    if ok.any() else np.zeros((0, write["dim"]), np.float32), write["meta"])
        if remote:  # the quality, then the shard; the driver writes the errors' part (it merges errors.csv) and lists all
            folder = RemoteFolder(remote, Path(tmp), write.get("storage_options"))
            for rel in names[1:]:
                folder.fs.put_file(str(root / rel), f"{folder.root}/{rel}")
                result["files"][rel] = file_info(root / rel)
    return result


def run_ray_image_job(*, shards: list[tuple[str, list[int]]], ids: np.ndarray, paths: np.ndarray, spec: str,
                      device: str, options: dict, draft: int, max_pixels: int, batch_size: int, write: dict,
                      on_shard: Callable[[dict], None], strict: bool = False, address: str | None = None,
                      actors: int | None = None, engine: dict | None = None, fetch: dict | None = None,
                      storage_options: dict | None = None) -> None:
    """Embed the planned ``shards`` (name, catalog positions) on Ray, each shard written by a worker.

    Decoding tasks fetch (URLs among ``paths``, with ``fetch``, :class:`simlabel.sources.FetchConfig`'s fields, and
    ``storage_options``) and decode the images; the encoder actors embed them; the driver reads only the blocks'
    row counts (their order is the positions' order) and hands each shard's blocks to a :func:`_write_shard` task,
    which writes its files to ``write["dest"]`` (or puts them to ``write["url"]``). ``on_shard(result)`` is called
    in shard order as each is written: no image and no vector passes through the driver."""
    if not shards:
        return
    ray, started = ray_session(address)
    try:
        import ray.data as rd

        ctx = rd.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = actors or max(1, cpus // 2)
        import pandas as pd

        paths = np.asarray(paths, dtype=object)
        # one input block per shard: the blocks that come out hold one shard each, so a writer fetches only its rows
        blocks = [pd.DataFrame({"pos": np.asarray(pos, dtype=np.int64), "path": paths[np.asarray(pos, dtype=np.int64)].astype(str)})
                  for _, pos in shards if len(pos)]
        ds = rd.from_pandas(blocks or [pd.DataFrame({"pos": np.zeros(0, np.int64), "path": np.zeros(0, object)})])
        ds = ds.map_batches(_decode_batch, batch_size=batch_size, batch_format="numpy",
                            fn_kwargs={"draft": draft, "max_pixels": max_pixels, "fetch": fetch,
                                       "storage_options": storage_options})
        gpus = 1 if device == "cuda" else 0
        ds = ds.map_batches(_EncoderActor, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"spec": spec, "device": device, "options": options, "engine": engine},
                            compute=rd.ActorPoolStrategy(size=n_actors), num_gpus=gpus)
        writer = ray.remote(_write_shard)
        ends = np.cumsum([len(pos) for _, pos in shards])  # shard k holds rows [ends[k-1], ends[k]) of the stream
        k, seen, held, pending = 0, 0, [], []
        ids = np.asarray(ids, dtype=object)

        def submit(k: int) -> None:
            name, pos = shards[k]
            pos = np.asarray(pos, dtype=np.int64)
            pending.append(writer.remote(write, name, pos, ids[pos], paths[pos], strict, *[ref for ref, _, _ in held]))

        def drain(block: bool) -> None:  # the finished writes, in shard order
            while pending and (block or ray.wait(pending[:1], timeout=0)[0]):
                on_shard(ray.get(pending.pop(0)))

        for bundle in ds.iter_internal_ref_bundles():
            for ref, meta in zip(bundle.block_refs, bundle.metadata):
                held.append((ref, seen, seen + meta.num_rows))
                seen += meta.num_rows
                while k < len(shards) and seen >= ends[k]:
                    submit(k)
                    k += 1
                    start = ends[k - 1]
                    held = [h for h in held if h[2] > start]  # a block reaching into the next shard goes to it too
            drain(block=False)
        while k < len(shards):  # shards with no rows left (an empty plan's tail)
            submit(k)
            k += 1
        drain(block=True)
    finally:
        if started:
            ray.shutdown()
