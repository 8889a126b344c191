"""``simlabel embed``, ``simlabel index``, ``simlabel neighbors``: catalog -> embeddings -> k-NN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from simlabel.cli._common import (
    Table,
    columns,
    command,
    default,
    device_option,
    out_console,
    param_default,
    partial_option,
    progress_option,
    say,
    wait_option,
)
from simlabel.embedding import embed as embed_fn
from simlabel.engines import parse_gate
from simlabel.graph import GraphConfig
from simlabel.index import IndexConfig
from simlabel.sources import FetchConfig

app = typer.Typer()


@command(app)
def embed(
    catalog: Path = typer.Argument(..., help="Catalog CSV/Parquet file, or a folder holding catalog.csv."),
    out: str = typer.Option(..., "--out", "-o", help="Embedding folder to write (Parquet shards), or an object storage URL (s3://bucket/run/emb: published shard by shard, under a one-writer lease)."),
    model: str = typer.Option(
        param_default(embed_fn, "model"),
        "--model",
        "-m",
        help="Image model (efficientnet-lite0, clip:NAME_OR_PATH, dino:NAME_OR_PATH) or a text model "
        "(minilm, st:NAME_OR_PATH) to embed only --text-col.",
    ),
    text_col: Optional[str] = typer.Option(None, "--text-col", help="Also embed this column as text, into OUT/text."),
    text_model: Optional[str] = typer.Option(
        None, "--text-model", help="Text model for --text-col (default: minilm, or the CLIP text tower with a CLIP --model)."
    ),
    device: str = device_option(),
    backend: str = typer.Option(param_default(embed_fn, "backend"), "--backend", help="Inference engine of the exported model (EfficientNet-Lite0, skill:, the clip:/dino: image towers): onnx (ONNX Runtime), openvino, torch, or auto (the fastest that passes the agreement gate here)."),
    precision: str = typer.Option(param_default(embed_fn, "precision"), "--precision", help="fp32, bf16 (openvino), int8 (calibrated on the catalog's images), or auto. Anything but fp32 must pass the agreement gate against fp32 on a sample (else fp32, with a warning)."),
    gate: Optional[str] = typer.Option(None, "--gate", help="Agreement gate settings, name=value pairs: recall_at_10 (default 'noise': fp32's own recall@10 when the pixels move by +-0.5 of a level, less sigmas standard errors of it; or a number: an absolute floor the recall must clear by sigmas of its own standard error), probe_top1 (default 0.97), cosine (no floor unless given) and sigmas (default 1). E.g. --gate recall_at_10=0.95 for a fixed floor."),
    batch_size: int = typer.Option(param_default(embed_fn, "batch_size"), "--batch-size", help="Images per model call."),
    shard_size: int = typer.Option(param_default(embed_fn, "shard_size"), "--shard-size", help="Rows per Parquet shard (the unit of resuming)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image decoding threads (default: cores, at most 4)."),
    resize: str = typer.Option(param_default(embed_fn, "resize"), "--resize", help="center-crop, squash or pad (EfficientNet)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be embedded."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming what OUT holds."),
    append: bool = typer.Option(False, "--append", help="CATALOG has grown: embed only the rows OUT does not hold into the same store (a new generation of shards; only vectors never seen are computed). Then `simlabel graph OUT --update OLD_GRAPH` adds them to the graph."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Catalog column holding the ids."),
    image_col: Optional[str] = typer.Option(None, "--image-col", help="Catalog column holding the image paths."),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Embed again the items errors.csv lists (after fixing their files), without redoing the rest."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse the vectors of image files this encoder embedded before (by content hash, whatever their folder or id), and add the new ones."),
    engine: str = typer.Option(param_default(embed_fn, "engine"), "--engine", help="local (threads here) or ray (decoding in Ray tasks, the model in an actor pool; same store, same resume; pip install 'simlabel[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster for --engine ray: auto (the one `ray start` runs) or HOST:PORT; default a local Ray."),
    actors: Optional[int] = typer.Option(None, "--actors", help="Model actors for --engine ray (default: half the cluster's CPUs; one GPU each with --device cuda)."),
    fetch_concurrency: int = typer.Option(default(FetchConfig, "concurrency"), "--fetch-concurrency", help="Image URLs (http(s)://, s3://...): fetches in flight at once."),
    fetch_per_host: int = typer.Option(default(FetchConfig, "per_host"), "--fetch-per-host", help="Of them, at most this many to one host."),
    fetch_timeout: float = typer.Option(default(FetchConfig, "timeout"), "--fetch-timeout", help="Seconds to connect, and between two reads of a body."),
    fetch_retries: int = typer.Option(default(FetchConfig, "retries"), "--fetch-retries", help="Retries of a fetch on 408/429/5xx, timeouts and broken connections (exponential backoff with jitter; Retry-After honoured)."),
    max_bytes: int = typer.Option(default(FetchConfig, "max_bytes"), "--max-bytes", help="A fetched image larger than this many bytes is not read (too-large in errors.csv)."),
    fetch_cache: Optional[Path] = typer.Option(None, "--fetch-cache", help="Keep the fetched bytes in this folder (by URL); a URL found there is not fetched again."),
    fetch_window: int = typer.Option(default(FetchConfig, "window"), "--fetch-window", help="Images fetched ahead of decoding: the lead that lets retries finish before their turn (memory: at most this many fetched images)."),
) -> None:
    """Embed a catalog's images (and titles) into a resumable Parquet store.

    The image column may hold local paths, http(s):// URLs or object storage URLs (s3://, gs://, az://), and
    --out may be an object storage URL; credentials come from --storage-options or the standard environment
    variables (see `simlabel --help`). A URL that cannot be fetched is a row of errors.csv with its reason
    (http-404, timeout, too-large, dns ...), its query string and credentials redacted; --retry-failed tries them again.

    Images that cannot be read are listed in OUT/errors.csv (id, path, reason) and
    the run goes on; run the same command again after a crash to finish it.
    Cost: image decoding and the model, about 130-290 images/s on 2 cores at fp32 (by machine kind) (OpenVINO fp32 1.2x ONNX Runtime; bf16 1.8-1.9x where it passes the agreement gate); --precision auto probes the engines first (about 50 s on 2 cores the first time, on a catalog of 2,000+ images; later only where the fastest engine can save more than the last probe cost), and only on a CPU with VNNI, AVX512-BF16 or AMX: without them no reduced precision can win, and ONNX Runtime fp32 runs at once.

    Examples:
      simlabel embed ../shared/datasets/fashion-products/catalog.csv --out emb/ --text-col title
      simlabel embed grown-catalog.csv --out emb/ --text-col title --append
      simlabel --storage-options '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}' embed feed.csv --out s3://shop/emb
    """
    result = embed_fn(
        catalog, out, model=model, text_col=text_col, text_model=text_model, device=device, backend=backend, precision=precision,
        gate=parse_gate(gate) if gate else None,
        batch_size=batch_size, shard_size=shard_size, workers=workers, strict=strict, overwrite=overwrite,
        resize=resize, columns=columns(id=id_col, image=image_col), retry_failed=retry_failed, cache=cache,
        engine=engine, address=address, actors=actors, append=append,
        fetch=FetchConfig(concurrency=fetch_concurrency, per_host=fetch_per_host, timeout=fetch_timeout, retries=fetch_retries,
                          max_bytes=max_bytes, cache_dir=str(fetch_cache) if fetch_cache else None, window=fetch_window),
    )
    say(result.summary_line())


@command(app)
def index(
    emb_dir: str = typer.Argument(..., help="Embedding folder written by `simlabel embed`."),
    out: Path = typer.Option(..., "--out", "-o", help="Index file to write, e.g. index.faiss."),
    kind: str = typer.Option(default(IndexConfig, "kind"), "--kind", help="flat (exact), hnsw or ivf (approximate)."),
    hnsw_m: int = typer.Option(default(IndexConfig, "hnsw_m"), "--hnsw-m", help="HNSW links per node."),
    ef_search: int = typer.Option(default(IndexConfig, "hnsw_ef_search"), "--ef-search", help="HNSW search breadth."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF lists (default about 4*sqrt(n))."),
    nprobe: int = typer.Option(default(IndexConfig, "ivf_nprobe"), "--nprobe", help="IVF lists searched per query."),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
) -> None:
    """Build a cosine k-NN index (FAISS) over an embedding folder.

    Cost: flat is a copy of the vectors (instant); hnsw about 10 s per 100k vectors on 2 cores, ivf a k-means over a sample.

    Example: simlabel index emb/ --out emb/index.faiss --kind hnsw
    """
    from simlabel.index import build_index

    config = IndexConfig(kind=kind, hnsw_m=hnsw_m, hnsw_ef_search=ef_search, ivf_nlist=nlist, ivf_nprobe=nprobe)
    idx = build_index(emb_dir, out, config)
    say(f"{idx.kind} index of {len(idx):,} x {idx.dim} -> {out}")


@command(app)
def graph(
    emb_dir: str = typer.Argument(..., help="Embedding folder written by `simlabel embed`, or its object storage URL (s3://...)."),
    out: str = typer.Option(..., "--out", "-o", help="Graph folder to write (resumable: run again to finish a killed build), or an object storage URL."),
    k: int = typer.Option(default(GraphConfig, "k"), "--k", "-k", help="Neighbours per row (itself excluded)."),
    recall: float = typer.Option(default(GraphConfig, "recall"), "--recall", help="The recall@k to reach, in (0, 1]: the index is tuned on a sample to the cheapest setting that reaches it, and the recall measured on a fresh sample is recorded. 1: exact search."),
    index: str = typer.Option(default(GraphConfig, "index"), "--index", help="auto (exact up to 5,000 rows or for --recall 1, an IVF join above), flat, ivf or hnsw."),
    block_rows: int = typer.Option(default(GraphConfig, "block_rows"), "--block-rows", help="Rows queried and written per block (bounds memory)."),
    recall_sample: int = typer.Option(default(GraphConfig, "recall_sample"), "--recall-sample", help="Rows checked against exact search for the recorded recall@k (0: skip)."),
    engine: str = typer.Option(default(GraphConfig, "engine"), "--engine", help="local, or ray: the index built once and shared, each block a Ray task (OUT on storage every node sees)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster for --engine ray: auto or HOST:PORT (default a local Ray)."),
    on_disk: bool = typer.Option(False, "--on-disk", help="For stores larger than memory: the IVF join's rows laid out list by list in a memory-mapped file under OUT/index instead of memory (the store is read block by block either way)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF: number of lists (default: tuned, from sqrt(n))."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF: lists each row visits (default: tuned to --recall; fixed here, the recall it gives is measured)."),
    update: Optional[Path] = typer.Option(None, "--update", help="The graph of this store before it grew: add the new rows to it (their k nearest, and the old rows whose lists they enter) instead of building again; exact when it was flat. OUT may be the same folder."),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    progress: bool = progress_option(),
) -> None:
    """Build the k-NN graph of an embedding folder once, for every label method (augment, propagate ... --graph).

    Cost: exact search is n^2 d multiply-adds (seconds for 10k rows, minutes for 200k on 2 cores); the IVF join tuned to --recall 0.95 costs about n d (nlist + nprobe n / nlist) with nlist near sqrt(nprobe n): about a minute for 1M x 384 on 2 cores.

    Example: simlabel graph emb/ --k 50 --out graph/   (a store larger than memory: add --on-disk)

    Example: simlabel graph emb/ --update graph/ --out graph/   (the store grew: the new rows join the graph)
    """
    from simlabel.graph import build_graph

    if update is not None:
        from simlabel.graph import update_graph

        g = update_graph(update, emb_dir, out, block_rows=min(block_rows, 8192), recall_sample=recall_sample, progress=progress)
        rec = g.meta.get("recall_at_k")
        say(f"{g.meta['new_rows']:,} new rows joined the k = {g.k} graph, now {len(g):,} rows"
            + (f" (recall@{g.k} {rec:.3f} against exact search on {g.meta['recall_sample']:,} rows)" if rec is not None else "")
            + f" -> {out}")
        return

    ivf = {name: v for name, v in (("ivf_nlist", nlist), ("ivf_nprobe", nprobe)) if v is not None}
    g = build_graph(emb_dir, out, GraphConfig(k=k, recall=recall, index=index, block_rows=block_rows,
                                              recall_sample=recall_sample, engine=engine, address=address, on_disk=on_disk,
                                              index_options=ivf))
    rec, tuning, kind = g.meta.get("recall_at_k"), g.meta.get("tuning") or {}, g.meta["index"]["kind"]
    how = (f"ivf join: {tuning['nlist']:,} lists, {tuning['nprobe']:,} probed" if kind == "ivf" and "nlist" in tuning
           else f"hnsw, efSearch {tuning['ef_search']}" if "ef_search" in tuning else kind)
    say(f"k = {g.k} graph of {len(g):,} rows ({how}"
        + (", chosen by auto" if g.meta["index"].get("chosen_by") == "auto" else "")
        + (", lists on disk" if g.meta["index"].get("on_disk") else "")
        + (f"; recall@{g.k} {rec:.3f} against exact search on {g.meta['recall_sample']:,} rows, target {g.meta['recall_target']}"
           if rec is not None else "")
        + f") -> {out}")


@command(app)
def neighbors(
    index_path: Path = typer.Argument(..., help="Index file written by `simlabel index`."),
    ids: list[str] = typer.Argument(..., help="Ids to look up."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per id (the id itself excluded)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the k nearest neighbours of some ids (cosine similarity).

    Cost: loading the index (its file size from disk) and one search per id.

    Example: simlabel neighbors emb/index.faiss 10000 10001 --k 5
    """
    from simlabel.index import NeighborIndex

    nbr_ids, sims = NeighborIndex.load(index_path).knn_ids(ids, k)
    if as_json:
        payload = {q: [{"id": str(n), "similarity": float(s)} for n, s in zip(nbr_ids[i], sims[i])] for i, q in enumerate(ids)}
        out_console.print_json(json.dumps(payload))
        return
    for i, q in enumerate(ids):
        t = Table(title=f"neighbours of {q}", show_lines=False)
        t.add_column("rank", justify="right")
        t.add_column("id")
        t.add_column("cosine", justify="right")
        for r, (n, s) in enumerate(zip(nbr_ids[i], sims[i]), 1):
            t.add_row(str(r), str(n), f"{s:.4f}")
        out_console.print(t)
