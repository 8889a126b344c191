"""The ``simlabel`` command line: a thin layer over the Python API.

Every command calls one public function (``simlabel.embed``, ``simlabel.build_index``,
``simlabel.run_demo`` ...), prints a readable summary and exits non-zero when
the run cannot go on (bad catalog, inconsistent folder, ``--strict`` failure).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="simlabel",
    help=(
        "Turn a product catalog with few or noisy labels into image classifiers, "
        "using semantic similarity as supervision.\n\n"
        "The spine: catalog -> embed -> index -> labels -> classifier -> report."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda when present).")


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _known_errors() -> tuple[type[BaseException], ...]:
    from simlabel.catalog import CatalogError
    from simlabel.demo import DataNotFound
    from simlabel.embedding import EmbedItemError
    from simlabel.store import StoreError

    return (CatalogError, StoreError, EmbedItemError, DataNotFound, FileNotFoundError, KeyError, ValueError, RuntimeError)


def _columns(**mapping: Optional[str]) -> dict[str, str]:
    return {k: v for k, v in mapping.items() if v}


@app.command()
def embed(
    catalog: Path = typer.Argument(..., help="Catalog CSV/Parquet file, or a folder holding catalog.csv."),
    out: Path = typer.Option(..., "--out", "-o", help="Embedding folder to write (Parquet shards)."),
    model: str = typer.Option(
        "efficientnet-lite0",
        "--model",
        "-m",
        help="Image model (efficientnet-lite0, clip:NAME_OR_PATH, dino:NAME_OR_PATH) or a text model "
        "(minilm, st:NAME_OR_PATH) to embed only --text-col.",
    ),
    text_col: Optional[str] = typer.Option(None, "--text-col", help="Also embed this column as text, into OUT/text."),
    text_model: Optional[str] = typer.Option(
        None, "--text-model", help="Text model for --text-col (default: minilm, or the CLIP text tower with a CLIP --model)."
    ),
    device: str = DeviceOpt,
    backend: str = typer.Option("auto", "--backend", help="EfficientNet inference: onnx, torch, or auto (onnx on CPU)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per model call."),
    shard_size: int = typer.Option(1024, "--shard-size", help="Rows per Parquet shard (the unit of resuming)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image decoding threads (default: cores, at most 4)."),
    resize: str = typer.Option("center-crop", "--resize", help="center-crop, squash or pad (EfficientNet)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be embedded."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming what OUT holds."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Catalog column holding the ids."),
    image_col: Optional[str] = typer.Option(None, "--image-col", help="Catalog column holding the image paths."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Embed a catalog's images (and titles) into a resumable Parquet store.

    Images that cannot be read are listed in OUT/errors.csv (id, path, reason) and
    the run goes on; run the same command again after a crash to finish it.

    Example: simlabel embed ../shared/datasets/fashion-products/catalog.csv --out emb/ --text-col title
    """
    from simlabel.embedding import embed as embed_fn

    try:
        result = embed_fn(
            catalog,
            out,
            model=model,
            text_col=text_col,
            text_model=text_model,
            device=device,
            backend=backend,
            batch_size=batch_size,
            shard_size=shard_size,
            workers=workers,
            strict=strict,
            overwrite=overwrite,
            resize=resize,
            columns=_columns(id=id_col, image=image_col),
            progress=progress,
        )
    except _known_errors() as e:
        _fail(str(e))
    out_console.print(result.summary_line(), highlight=False, soft_wrap=True)


@app.command()
def index(
    emb_dir: Path = typer.Argument(..., help="Embedding folder written by `simlabel embed`."),
    out: Path = typer.Option(..., "--out", "-o", help="Index file to write, e.g. index.faiss."),
    kind: str = typer.Option("flat", "--kind", help="flat (exact), hnsw or ivf (approximate)."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", help="HNSW links per node."),
    ef_search: int = typer.Option(64, "--ef-search", help="HNSW search breadth."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF lists (default about 4*sqrt(n))."),
    nprobe: int = typer.Option(16, "--nprobe", help="IVF lists searched per query."),
) -> None:
    """Build a cosine k-NN index (FAISS) over an embedding folder.

    Example: simlabel index emb/ --out emb/index.faiss --kind hnsw
    """
    from simlabel.index import IndexConfig, build_index

    try:
        config = IndexConfig(kind=kind, hnsw_m=hnsw_m, hnsw_ef_search=ef_search, ivf_nlist=nlist, ivf_nprobe=nprobe)
        idx = build_index(emb_dir, out, config)
    except _known_errors() as e:
        _fail(str(e))
    out_console.print(f"{idx.kind} index of {len(idx):,} x {idx.dim} -> {out}", highlight=False, soft_wrap=True)


@app.command()
def neighbors(
    index_path: Path = typer.Argument(..., help="Index file written by `simlabel index`."),
    ids: list[str] = typer.Argument(..., help="Ids to look up."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per id (the id itself excluded)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the k nearest neighbours of some ids (cosine similarity).

    Example: simlabel neighbors emb/index.faiss 10000 10001 --k 5
    """
    from simlabel.index import NeighborIndex

    try:
        idx = NeighborIndex.load(index_path)
        nbr_ids, sims = idx.knn_ids(ids, k)
    except _known_errors() as e:
        _fail(str(e))
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


@app.command()
def demo(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Catalog file or folder (default: $SIMLABEL_DATA or ../shared/datasets/clothing-small)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: a cached folder per data+model)."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m", help="Image model."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours for the k-NN accuracy."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run the main job: embed the data (cached), index it, report k-NN accuracy.

    Example: simlabel demo            (uses ../shared/datasets/clothing-small)
    """
    from simlabel.demo import run_demo

    try:
        rep = run_demo(data, out=out, model=model, label_col=label_col, k=k, device=device, progress=progress)
    except _known_errors() as e:
        _fail(str(e))
    t = Table(title="simlabel demo", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("data", rep.data)
    t.add_row("model", rep.model)
    t.add_row("items / embedded / failed", f"{rep.n_items:,} / {rep.n_embedded:,} / {rep.n_failed:,}")
    t.add_row("throughput", "cached (embedded earlier)" if rep.resumed else f"{rep.items_per_s:,.1f} images/s")
    t.add_row("index", rep.index_path)
    t.add_row("train / test", f"{rep.n_train:,} / {rep.n_test:,}")
    acc = "n/a" if rep.knn_accuracy is None else f"{rep.knn_accuracy:.3f}"
    t.add_row(f"test-vs-train {rep.k}-NN accuracy", acc)
    out_console.print(t)
    if rep.per_class_accuracy:
        pc = Table(title="k-NN accuracy per class")
        pc.add_column("class")
        pc.add_column("accuracy", justify="right")
        for c, a in rep.per_class_accuracy.items():
            pc.add_row(c, f"{a:.3f}")
        out_console.print(pc)
    out_console.print(f"report: {Path(rep.out) / 'demo_report.json'}", highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
