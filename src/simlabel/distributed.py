"""Embedding on Ray: the same store, written shard by shard, when one machine is not enough.

``simlabel embed --engine ray [--address auto|HOST:PORT]`` runs the image job as a Ray Data
pipeline:

1. the positions of the unfinished shards, in blocks (``ray.data.range``);
2. decoding in Ray tasks (``map_batches`` of :func:`_decode_batch`): each image is decoded at a
   reduced JPEG scale near the model's input (``load_image(draft_size=...)``); a file that
   cannot be read becomes a failure row with its reason, never a failed task;
3. the encoder in an actor pool (``map_batches(_EncoderActor,
   compute=ActorPoolStrategy(size=N))``, ``num_gpus=1`` per actor with ``--device cuda``): each
   actor builds the model once, preprocesses and embeds its batches;
4. the driver streams the results in order (``preserve_order``) and writes each shard as it
   completes, with its errors file first, exactly as the local path does (same names, manifest,
   ``errors.csv``), so a killed job resumes at the first unfinished shard, on Ray or locally.

Images are read by the workers from the sources in the catalog: ``http(s)://`` and object storage URLs
(``s3://``...) are fetched by each decoding task itself (:mod:`simlabel.sources`, with the run's fetch
settings and ``storage_options``), so no image passes through the driver and no shared filesystem is needed;
local paths must be on storage every node sees. The vectors come back to the driver, which writes the
shards (and, with ``--out s3://...``, publishes each to object storage: :mod:`simlabel.remote`). The vector
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
            img, q, h = load_image(path if fut is None else redact(path), max_pixels=max_pixels, draft_size=draft,
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


def run_ray_image_job(*, positions: list[int], paths: np.ndarray, spec: str, device: str, options: dict, draft: int,
                      max_pixels: int, batch_size: int, on_result: Callable[..., None],
                      address: str | None = None, actors: int | None = None, engine: dict | None = None,
                      fetch: dict | None = None, storage_options: dict | None = None) -> None:
    """Embed the images at ``positions`` on Ray; ``on_result(pos, vectors, reasons, quality, pixel_hashes)``
    receives the results in position order, batch by batch (the caller writes the shards and their quality).
    URLs among ``paths`` are fetched by the decoding tasks with ``fetch`` (:class:`simlabel.sources.FetchConfig`'s
    fields) and ``storage_options``."""
    if not positions:
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

        pos = np.asarray(positions, dtype=np.int64)
        # the paths travel with their rows, block by block
        rows = pd.DataFrame({"pos": pos, "path": np.asarray(paths, dtype=object)[pos].astype(str)})
        n_blocks = max(1, min(len(rows) // max(batch_size, 1), 4 * cpus))
        bounds = np.linspace(0, len(rows), n_blocks + 1).astype(int)
        ds = rd.from_pandas([rows.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        ds = ds.map_batches(_decode_batch, batch_size=batch_size, batch_format="numpy",
                            fn_kwargs={"draft": draft, "max_pixels": max_pixels, "fetch": fetch,
                                       "storage_options": storage_options})
        gpus = 1 if device == "cuda" else 0
        ds = ds.map_batches(_EncoderActor, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"spec": spec, "device": device, "options": options, "engine": engine},
                            compute=rd.ActorPoolStrategy(size=n_actors), num_gpus=gpus)
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            on_result(np.asarray(b["pos"], dtype=np.int64), np.asarray(b["vector"], dtype=np.float32),
                      np.asarray(b["reason"], dtype=object), np.asarray(b["quality"], dtype=np.float32),
                      np.asarray(b["pixel_hash"], dtype=object))
    finally:
        if started:
            ray.shutdown()
