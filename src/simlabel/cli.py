"""The ``simlabel`` command line: a thin layer over the Python API.

Every command calls one public function (``simlabel.embed``, ``simlabel.build_index``,
``simlabel.run_demo`` ...), prints a readable summary and exits non-zero when
the run cannot go on (bad catalog, inconsistent folder, ``--strict`` failure).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd
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
def augment(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder (the universe: every id in it)."),
    labels: Path = typer.Option(..., "--labels", help="Seed labels, CSV with id,label."),
    out: Path = typer.Option(..., "--out", "-o", help="Augmented labels CSV: id,label,step,source,via."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per point (n_k)."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Labels to hold out (never labeled), CSV id,label."),
    holdout_frac: Optional[float] = typer.Option(None, "--holdout-frac", help="Hold out this share of the seeds instead (stratified)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --holdout-frac."),
    stop: str = typer.Option("shrink", "--stop", help="shrink: stop when a frontier shrinks (default); grow: the rule as printed in paper 000."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="At most this many steps."),
    index_path: Optional[Path] = typer.Option(None, "--index", help="Reuse an index built by `simlabel index` over EMB."),
    index_kind: str = typer.Option("auto", "--index-kind", help="auto (flat up to 200k points, else ivf), flat, hnsw, ivf."),
) -> None:
    """Grow seed labels through nearest neighbours (paper 000, section 3).

    Writes OUT, OUT.summary.json (sizes per class and step) and, with --holdout-frac, OUT.holdout.csv.

    Example: simlabel augment --emb emb/ --labels seeds.csv --k 10 --holdout-frac 0.3 --out aug.csv
    """
    from simlabel.labels.augment import augment as augment_fn

    try:
        table, result, hold = augment_fn(
            emb, labels, k=k, holdout=holdout, holdout_frac=holdout_frac, seed=seed, stop=stop,
            max_steps=max_steps, index=index_path, index_kind=index_kind, out=out,
        )
    except _known_errors() as e:
        _fail(str(e))
    sizes = result.size_table()
    t = Table(title=f"augmentation sizes (k={k}, stop={stop}: {result.stop_reason} after {result.n_steps} steps)")
    t.add_column("")
    for c in sizes.columns:
        t.add_column(str(c), justify="right")
    for name, row in sizes.iterrows():
        t.add_row(str(name), *["" if v != v else f"{int(v):,}" for v in row])
    out_console.print(t)
    out_console.print(f"{len(table):,} labels ({int((table['source'] == 'augmented').sum()):,} augmented) -> {out}", highlight=False, soft_wrap=True)


@app.command()
def propagate(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Labeled ids, CSV with id,label (clamped)."),
    out: Path = typer.Option(..., "--out", "-o", help="Propagated labels CSV: id,label,confidence."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per node in the graph."),
    steps: int = typer.Option(10, "--steps", help="Propagation steps (paper 000: as many as the augmentation took)."),
    unlabeled_sample: Optional[int] = typer.Option(None, "--unlabeled-sample", help="Unlabeled nodes to sample (default: all)."),
    symmetric: bool = typer.Option(False, "--symmetric", help="Use the symmetrised k-NN graph instead of the directed one."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="CSV with an id column of points to keep out of the graph (e.g. a holdout)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the unlabeled sample."),
) -> None:
    """Label propagation on the k-NN graph (Zhu & Ghahramani 2002), the baseline of paper 000.

    Example: simlabel propagate --emb emb/ --labels seeds.csv --k 10 --steps 4 --unlabeled-sample 5000 --out prop.csv
    """
    import pandas as pd

    from simlabel.labels.propagate import propagate as propagate_fn

    try:
        ex = pd.read_csv(exclude, dtype=str)["id"].tolist() if exclude else None
        table, res = propagate_fn(emb, labels, k=k, steps=steps, unlabeled_sample=unlabeled_sample, symmetric=symmetric, exclude=ex, seed=seed, out=out)
    except _known_errors() as e:
        _fail(str(e))
    counts = ", ".join(f"{c}: {n:,}" for c, n in table["label"].value_counts().sort_index().items())
    out_console.print(f"{len(table):,} propagated labels after {res.steps} steps ({counts}) -> {out}", highlight=False, soft_wrap=True)


@app.command()
def train(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Training labels, CSV with id,label."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (config.json + weights.pt)."),
    extra: list[Path] = typer.Option([], "--extra", help="More label files (augmented, propagated); --labels wins on conflicts."),
    head: str = typer.Option("linear", "--head", help="linear (one dense layer) or mlp (one hidden layer)."),
    hidden: int = typer.Option(512, "--hidden", help="MLP hidden width."),
    text_emb: Optional[Path] = typer.Option(None, "--text-emb", help="Title embeddings (e.g. EMB_DIR/text) for --inputs text or image+text."),
    inputs: Optional[str] = typer.Option(None, "--inputs", help="image (default), text, or image+text (concatenated, or fused with --fusion attention)."),
    fusion: str = typer.Option("none", "--fusion", help="none, or attention: paper 002's attention fusion of image and title (implies --inputs image+text)."),
    smoothing: str = typer.Option("none", "--smoothing", help="Soft targets (paper 002): none, uniform, uniform-topk, semantic, semantic-curriculum, taxonomy."),
    alpha: float = typer.Option(0.1, "--alpha", help="Smoothing mass moved off the true class."),
    neighbors: int = typer.Option(20, "--neighbors", help="K nearest labels for the top-K smoothing kinds."),
    label_model: str = typer.Option("minilm", "--label-model", help="Text model embedding the class names (minilm, st:..., clip:...)."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="CSV label,description: richer text per class for its embedding."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="CSV label,path ('Apparel > Topwear > Tshirts') for --smoothing taxonomy."),
    beta: float = typer.Option(1.0, "--beta", help="Taxonomy targets: softmax(-beta * tree distance)."),
    curriculum_epochs: int = typer.Option(30, "--curriculum-epochs", help="semantic-curriculum: epochs over which alpha anneals to 0."),
    schedule: str = typer.Option("linear", "--schedule", help="semantic-curriculum: linear, cosine, step or exp."),
    loss: str = typer.Option("ce", "--loss", help="ce (cross-entropy) or focal."),
    focal_gamma: float = typer.Option(2.0, "--focal-gamma", help="Focal loss gamma."),
    focal_alpha: Optional[float] = typer.Option(None, "--focal-alpha", help="Focal loss alpha (a weight on every class; default none)."),
    kl_weight: float = typer.Option(1.0, "--kl-weight", help="Weight of the KL term to the soft targets."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (AdamW)."),
    epochs: int = typer.Option(200, "--epochs", help="At most this many epochs."),
    patience: int = typer.Option(10, "--patience", help="Early stopping: epochs without a better validation score."),
    monitor: str = typer.Option("loss", "--monitor", help="Early stopping watches the validation loss or accuracy."),
    val_frac: float = typer.Option(0.15, "--val-frac", help="Share of the training rows used for early stopping."),
    balanced: bool = typer.Option(False, "--balanced", help="Weight classes inversely to their frequency."),
    weight_col: Optional[str] = typer.Option(None, "--weight-col", help="Per-row sample weights column of the label files."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
) -> None:
    """Train a classifier head on frozen embeddings, with early stopping.

    Examples:
      simlabel train --emb emb/ --labels seeds.csv --extra aug.csv --out model/
      simlabel train --emb emb/ --text-emb emb/text --labels train.csv --fusion attention --smoothing semantic --loss focal --out model/
    """
    from simlabel.heads import HeadConfig
    from simlabel.labels.smoothing import SmoothingConfig
    from simlabel.probe import train as train_fn

    try:
        if fusion not in ("none", "attention"):
            raise ValueError(f"--fusion must be none or attention; got {fusion!r}")
        if fusion == "attention":
            head, inputs = "fusion", "image+text"
        cfg = HeadConfig(head=head, hidden=hidden, lr=lr, max_epochs=epochs, patience=patience, val_frac=val_frac,
                         class_weight="balanced" if balanced else None, loss=loss, focal_gamma=focal_gamma,
                         focal_alpha=focal_alpha, kl_weight=kl_weight, monitor=monitor, seed=seed, device=device)
        smooth = SmoothingConfig(kind=smoothing, alpha=alpha, neighbors=neighbors, label_model=label_model,
                                 descriptions=str(descriptions) if descriptions else None,
                                 taxonomy=str(taxonomy) if taxonomy else None, beta=beta,
                                 curriculum_epochs=curriculum_epochs, schedule=schedule)
        clf = train_fn(emb, labels, extra=extra, out=out, config=cfg, weight_col=weight_col, text_emb=text_emb,
                       inputs=inputs, smoothing=smooth)
    except _known_errors() as e:
        _fail(str(e))
    out_console.print(
        f"{cfg.head} head over {len(clf.classes_)} classes ({smoothing} smoothing, {loss} loss), best epoch "
        f"{clf.best_epoch_} of {len(clf.history_)} -> {out}",
        highlight=False, soft_wrap=True,
    )


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Model folder written by `simlabel train`."),
    emb: Path = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Test labels, CSV with id,label."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The + class of a binary task (adds +P, +R, -P, -R)."),
    text_emb: Optional[Path] = typer.Option(None, "--text-emb", help="Title embeddings, for a model trained on text (default: the ones it was trained with)."),
    semantic: Optional[int] = typer.Option(None, "--semantic", help="Add paper 002's metric with this many nearest labels (e.g. 20)."),
    label_model: str = typer.Option("minilm", "--label-model", help="Text model embedding the class names for --semantic."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="CSV label,path: adds the mistake severity (mean tree distance of wrong predictions)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """Per-class precision/recall/F1, accuracy, confusion matrix and HM (paper 000, Table 2);
    top-1/top-5, the semantic neighbourhood metric and mistake severity (paper 002) on request.

    Example: simlabel evaluate --model model/ --emb emb/ --labels holdout.csv --json report.json
    """
    from simlabel.heads import EmbeddingClassifier
    from simlabel.labels.smoothing import embed_label_names, label_similarity, nearest_labels, taxonomy_matrix
    from simlabel.probe import evaluate as evaluate_fn

    try:
        nbrs = dist = None
        if semantic is not None or taxonomy is not None:
            classes = EmbeddingClassifier.load(model).classes_
            if semantic is not None:
                sim = label_similarity(embed_label_names(classes, label_model))
                nbrs = nearest_labels(sim, min(semantic, len(classes) - 1) + 1, include_self=True)
            if taxonomy is not None:
                dist = taxonomy_matrix(classes, taxonomy)
        rep = evaluate_fn(model, emb, labels, positive=positive, json_out=json_out, text_emb=text_emb,
                          label_neighbors=nbrs, taxonomy_distance=dist)
    except _known_errors() as e:
        _fail(str(e))
    out_console.print(metrics_table(rep))
    extras = []
    if "top5" in rep:
        extras.append(f"top-1 {rep['top1']:.3f}, top-5 {rep['top5']:.3f}")
    if "semantic" in rep:
        extras.append(f"top-5 inside the true label's {semantic} nearest + itself: {rep['semantic']['mean_in_top']:.2f} of 5, "
                      f"all 5 inside: {rep['semantic']['share_all_in']:.3f}")
    if "severity" in rep:
        extras.append(f"mistake severity (mean tree distance of wrong top-1): {rep['severity']['mistake_severity']:.3f}")
    for line in extras:
        out_console.print(line, highlight=False, soft_wrap=True)
    if json_out:
        out_console.print(f"report: {json_out}", highlight=False, soft_wrap=True)


def metrics_table(rep: dict, title: str = "evaluation") -> Table:
    t = Table(title=f"{title}: accuracy {rep['accuracy']:.3f}, macro F1 {rep['macro_f1']:.3f}, HM {rep['hm']:.3f} (n={rep['n']:,})")
    t.add_column("class")
    for c in ("precision", "recall", "f1", "support"):
        t.add_column(c, justify="right")
    for c, m in rep["per_class"].items():
        t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", f"{m['support']:,}")
    if "binary" in rep:
        b = rep["binary"]
        t.caption = f"+P {b['+P']:.3f}  +R {b['+R']:.3f}  -P {b['-P']:.3f}  -R {b['-R']:.3f}  (+ = {b['positive']})"
    return t


@app.command()
def flip(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    catalog: Path = typer.Option(..., "--catalog", help="Catalog with the (noisy) multi-labels."),
    attributes: Optional[str] = typer.Option(None, "--attributes", help="Comma-separated attribute columns: one binary label per value (e.g. gender,usage,season)."),
    labels_col: str = typer.Option("labels", "--labels-col", help="Or a '|'-separated multi-label column."),
    clean: Optional[Path] = typer.Option(None, "--clean", help="CSV id,labels: verified labels of a few items (trains the flipping model)."),
    export_basis: Optional[Path] = typer.Option(None, "--export-basis", help="No clean set: write the images nearest the used basis vectors, to be labelled."),
    basis_labels: Optional[Path] = typer.Option(None, "--basis-labels", help="The labelled --export-basis file: flips by the direct rule Y_B c_i."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="FLIPS.csv: id,label,attribute,old,new,confidence,basis,weights,basis_labels."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of image grids: each flip beside the basis images that explain it."),
    n_basis: int = typer.Option(1000, "--n-basis", help="Basis size n_B."),
    joint_steps: int = typer.Option(2000, "--joint-steps", help="Joint training steps."),
    threshold: float = typer.Option(0.5, "--threshold", help="Label threshold of the flipping model / direct rule."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
) -> None:
    """Explainable noisy-label flipping for multi-label attributes (SELF-ML, paper 004).

    Example: simlabel flip --emb emb/ --catalog catalog.csv --attributes gender,usage,season --clean clean.csv --out flips.csv --html explain.html
    """
    from simlabel.encoders.base import resolve_device
    from simlabel.labels.flipping import SelfMLConfig, flip as flip_fn

    try:
        cfg = SelfMLConfig(n_basis=n_basis, joint_steps=joint_steps, threshold=threshold, seed=seed, device=resolve_device(device))
        attrs = [a.strip() for a in attributes.split(",") if a.strip()] if attributes else None
        table = flip_fn(emb, catalog, attributes=attrs, labels_col=labels_col, clean=clean, basis_labels=basis_labels,
                        export_basis=export_basis, out=out, html=html_out, config=cfg)
    except _known_errors() as e:
        _fail(str(e))
    if export_basis is not None:
        out_console.print(f"{len(table):,} basis images to label -> {export_basis} (fill the labels column, then --basis-labels)", highlight=False, soft_wrap=True)
        return
    added, removed = int((table["new"] == 1).sum()), int((table["new"] == 0).sum())
    out_console.print(f"{len(table):,} labels flipped ({added:,} added, {removed:,} removed)" + (f" -> {out}" if out else ""), highlight=False, soft_wrap=True)
    if html_out:
        out_console.print(f"explanations: {html_out}", highlight=False, soft_wrap=True)


@app.command()
def search(
    catalog: Path = typer.Argument(..., help="Catalog file or folder with a text column (e.g. titles)."),
    out: Path = typer.Option(..., "--out", "-o", help="Label CSV to write: id,label,rank,score,query."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated category names to query (default: the values of --label-col)."),
    label_col: str = typer.Option("label", "--label-col", help="Catalog column whose distinct values are the queries (when --categories is not given)."),
    text_col: str = typer.Option("title", "--text-col", help="Catalog column searched."),
    top_r: int = typer.Option(100, "--top-r", help="Results kept per query (R)."),
    method: str = typer.Option("bm25", "--method", help="bm25 (default), tfidf, or embedding (MiniLM cosine)."),
    exclude_split: Optional[str] = typer.Option(None, "--exclude-split", help="Leave out the catalog rows of this split (e.g. test) from the searchable pool."),
    duplicates: str = typer.Option("best", "--duplicates", help="An item found by several queries keeps the best-ranked one (best) or all (keep)."),
    device: str = DeviceOpt,
) -> None:
    """Noisy web-style labels from a real search (paper 003): each category name queries the
    titles; its top R results are labelled with the query, with their rank.

    Example: simlabel search ../shared/datasets/fashion-products --label-col article_type --top-r 100 --out search.csv
    """
    from simlabel.catalog import load_catalog
    from simlabel.search import SearchConfig, build_search_labels

    try:
        cat = load_catalog(catalog, columns=_columns(label=label_col if label_col != "label" else None))
        exclude = None
        if exclude_split:
            if "split" not in cat.table.columns:
                raise ValueError(f"{cat.path}: --exclude-split needs a split column")
            exclude = set(cat.table.loc[cat.table["split"].astype(str) == exclude_split, "id"])
        cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        cfg = SearchConfig(method=method, top_r=top_r, duplicates=duplicates)
        labels = build_search_labels(cat, categories=cats, text_col=text_col, config=cfg, out=out, exclude_ids=exclude)
    except _known_errors() as e:
        _fail(str(e))
    counts = labels["label"].value_counts()
    out_console.print(
        f"{len(labels):,} labelled items from {counts.size} queries (median {int(counts.median())} per query) -> {out}",
        highlight=False, soft_wrap=True)


@app.command()
def categories(
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV: its distinct labels are the categories."),
    names: Optional[str] = typer.Option(None, "--names", help="Or comma-separated category names."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the semantics as JSON (for simlabel weights --semantics)."),
    measure: str = typer.Option("wup", "--measure", help="WordNet similarity: wup (Wu-Palmer), lin (Lin, Brown IC) or path."),
    text_weight: float = typer.Option(0.5, "--text-weight", help="Blend: (1-w) WordNet + w text-encoder similarity of the names (1: text only)."),
    k: int = typer.Option(5, "--k", help="Nearest categories kept per category."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="CSV category,synset: your synset for names the automatic mapping gets wrong."),
    sense: str = typer.Option("context", "--sense", help="Word sense: context (disambiguated by the other categories) or first (WordNet's most frequent)."),
    text_model: str = typer.Option("minilm", "--text-model", help="Text encoder for the names ('none': WordNet only)."),
    device: str = DeviceOpt,
) -> None:
    """Category semantic relationships (paper 003): WordNet synsets of the category names,
    similarity updated with a text encoder, and each category's K nearest categories.

    Example: simlabel categories --labels search.csv --out semantics.json
    """
    from simlabel.labels.categories import category_semantics, read_overrides
    from simlabel.labels.io import read_labels

    try:
        if (labels is None) == (names is None):
            raise ValueError("give the categories with exactly one of --labels FILE or --names A,B,C")
        cats = sorted(read_labels(labels)["label"].unique()) if labels else [n.strip() for n in names.split(",") if n.strip()]
        sem = category_semantics(cats, measure=measure, text_weight=text_weight, k=k, sense=sense,
                                 text_encoder=None if text_model == "none" else text_model,
                                 overrides=read_overrides(overrides) if overrides else None, device=device)
        if out:
            sem.save(out)
    except _known_errors() as e:
        _fail(str(e))
    t = Table(title=f"{len(cats)} categories: WordNet {measure} + {text_model} (text weight {text_weight}), K = {k}")
    for col in ("category", "synset", "how", "nearest categories (similarity)"):
        t.add_column(col, overflow="fold")
    for i, name in enumerate(sem.names):
        near = ", ".join(f"{sem.names[j]} ({sem.similarity[i, j]:.2f})" for j in sem.neighbors[i])
        t.add_row(name, sem.mapping.synsets[i] or "-", sem.mapping.how[i], near)
    out_console.print(t)
    if out:
        out_console.print(f"written: {out}", highlight=False, soft_wrap=True)


@app.command()
def weights(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    labels: Path = typer.Option(..., "--labels", help="Noisy labels: CSV id,label and optionally rank (from simlabel search or your own search logs)."),
    out: Path = typer.Option(..., "--out", "-o", help="The labels with their weights (column 'weight' for simlabel train --weight-col weight)."),
    stage: int = typer.Option(1, "--stage", help="1: rank + visual neighbours; 2: also text matching of out-of-fold predictions."),
    semantics: Optional[Path] = typer.Option(None, "--semantics", help="JSON from simlabel categories (default: built from the label names)."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Stage 2: the catalog whose --text-col gives each item's keywords."),
    text_col: str = typer.Option("title", "--text-col", help="Stage 2: text column for keywords (title, description or tags)."),
    rank_weight: str = typer.Option("linear", "--rank-weight", help="linear, exp, dcg or none: how trust falls with rank."),
    rank_floor: float = typer.Option(0.2, "--rank-floor", help="The weight of the deepest rank (rank alone never drops an item)."),
    knn: int = typer.Option(10, "--knn", help="Visual neighbours per image."),
    index_kind: str = typer.Option("auto", "--index", help="How neighbours are found: flat (exact), ivf, hnsw, or auto (flat up to 100k images, ivf above)."),
    combine: str = typer.Option("product", "--combine", help="Stage 1: product or mean of rank weight and neighbour agreement."),
    keyword_weight: float = typer.Option(0.3, "--keyword-weight", help="Stage 2: share of the keyword match in s(x)."),
    folds: int = typer.Option(3, "--folds", help="Stage 2: out-of-fold heads (0: in-sample)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
) -> None:
    """Per-image weights for noisy labels from side information (paper 003).

    Example: simlabel weights --emb emb/ --labels search.csv --stage 2 --catalog catalog.csv --out weighted.csv
    then: simlabel train --emb emb/ --labels weighted.csv --weight-col weight --out model/
    """
    from simlabel.heads import HeadConfig
    from simlabel.labels.weighting import SideInfoConfig, compute_weights

    try:
        cfg = SideInfoConfig(rank_weight=rank_weight, rank_floor=rank_floor, knn=knn, index=index_kind, combine=combine,
                             keyword_weight=keyword_weight, stage2_folds=folds)
        texts = None
        if stage == 2 and catalog is not None:
            from simlabel.catalog import load_catalog

            cat = load_catalog(catalog)
            if text_col not in cat.table.columns:
                raise ValueError(f"{cat.path}: no text column {text_col!r}; columns are {', '.join(map(str, cat.table.columns))}")
            texts = dict(zip(cat.table["id"].astype(str), cat.table[text_col].fillna("").astype(str)))
        table = compute_weights(emb, labels, semantics=semantics, config=cfg, stage=stage, texts=texts,
                                head_config=HeadConfig(head="mlp", patience=8, max_epochs=100, device=device),
                                seed=seed, out=out, device=device,
                                log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    except _known_errors() as e:
        _fail(str(e))
    w = table["weight"]
    q = w.quantile([0.1, 0.5, 0.9])
    out_console.print(
        f"{len(table):,} weights (stage {stage}): mean {w.mean():.3f}, p10 {q[0.1]:.3f}, median {q[0.5]:.3f}, p90 {q[0.9]:.3f} -> {out}",
        highlight=False, soft_wrap=True)


@app.command()
def demo(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Catalog file or folder (default: $SIMLABEL_DATA or ../shared/datasets/clothing-small)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: a cached folder per data+model)."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m", help="Image model."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours for the k-NN accuracy."),
    experiment: bool = typer.Option(True, "--experiment/--no-experiment", help="Also run a small paper-000 experiment (augmentation vs propagation)."),
    labeled_frac: float = typer.Option(0.1, "--labeled-frac", help="Share of the catalog kept labeled in that experiment."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run the main job: embed the data (cached), index it, report k-NN accuracy,
    then a small label-augmentation experiment (paper 000) on the same embeddings.

    Example: simlabel demo            (uses ../shared/datasets/clothing-small)
    """
    from simlabel.demo import run_demo

    try:
        rep = run_demo(data, out=out, model=model, label_col=label_col, k=k, device=device, progress=progress,
                       experiment=experiment, labeled_frac=labeled_frac)
    except _known_errors() as e:
        _fail(str(e))
    t = Table(title="simlabel demo", show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
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
    if rep.experiment:
        out_console.print(
            f"\n[bold]Label augmentation (paper 000)[/]: {labeled_frac:.0%} of the catalog keeps its labels; "
            "a dense layer trained on the seeds, seeds + augmented, seeds + propagated labels:",
            soft_wrap=True,
        )
        _print_augment_tables(rep.experiment)
        out_console.print(f"experiment report: {Path(rep.out) / 'experiment_augment.html'}", highlight=False, soft_wrap=True)
    out_console.print(f"report: {Path(rep.out) / 'demo_report.json'}", highlight=False, soft_wrap=True)


experiment_app = typer.Typer(help="Reproduce the papers' experiments on a catalog.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("augment")
def experiment_augment(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder (default: $SIMLABEL_DATA or ../shared/datasets/clothing-small)."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Binary one-vs-rest for this class; 'each' runs every class in turn."),
    encoders: str = typer.Option("efficientnet-lite0", "--encoders", help="Comma-separated image models to compare."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per point."),
    holdout_frac: float = typer.Option(0.3, "--holdout-frac", help="Share of the labeled examples held out for validation."),
    holdout_split: Optional[str] = typer.Option(None, "--holdout-split", help="Hold out this catalog split (e.g. test) instead of --holdout-frac."),
    labeled_frac: float = typer.Option(1.0, "--labeled-frac", help="Keep only this share of the catalog labeled; the rest stay unlabeled in the universe."),
    stop: str = typer.Option("shrink", "--stop", help="Augmentation stop rule: shrink or grow."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    repeats: int = typer.Option(1, "--repeats", help="Repetitions with different seeds (mean and sd reported)."),
    head: str = typer.Option("linear", "--head", help="linear or mlp."),
    balanced: bool = typer.Option(False, "--balanced", help="Class weights inverse to frequency (rare positives)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (tables, chart, image grids)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Paper 000: seeds vs seeds+augmented vs seeds+propagated, a dense layer on frozen embeddings.

    Example: simlabel experiment augment --data ../shared/datasets/clothing-small --positive shoes --labeled-frac 0.1 --html aug.html
    """
    from simlabel.experiments.augment import AugmentExperimentConfig, labeled_table, run_augment_experiment
    from simlabel.heads import HeadConfig

    try:
        positives: list[Optional[str]] = [positive]
        if positive == "each":
            from simlabel.catalog import load_catalog
            from simlabel.demo import find_default_data

            cat = load_catalog(find_default_data(data), columns={"label": label_col} if label_col else None)
            positives = sorted(labeled_table(cat, None)["label"].unique())
        all_results = {}
        for pos in positives:
            cfg = AugmentExperimentConfig(
                label_col=label_col, positive=pos, encoders=[e.strip() for e in encoders.split(",") if e.strip()], k=k,
                holdout_frac=holdout_frac, holdout_split=holdout_split, labeled_frac=labeled_frac, stop=stop, max_steps=max_steps,
                repeats=list(range(repeats)), head=HeadConfig(head=head, class_weight="balanced" if balanced else None),
                device=device, limit=limit,
            )
            suffix = "" if len(positives) == 1 else f".{pos}"
            res = run_augment_experiment(
                data, cfg, out=out,
                json_out=json_out.with_suffix(f"{suffix}{json_out.suffix}") if json_out and suffix else json_out,
                html_out=html_out.with_suffix(f"{suffix}{html_out.suffix}") if html_out and suffix else html_out,
                progress=progress,
            )
            all_results[pos or "all"] = res
            _print_augment_tables(res)
    except _known_errors() as e:
        _fail(str(e))
    for path in (json_out, html_out):
        if path:
            out_console.print(f"written: {path}" + (" (one file per class)" if len(positives) > 1 else ""), highlight=False, soft_wrap=True)


@experiment_app.command("smoothing")
def experiment_smoothing(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with titles (e.g. ../shared/datasets/fashion-products)."),
    label_col: str = typer.Option("article_type", "--label-col", help="Catalog column holding the labels."),
    text_col: str = typer.Option("title", "--text-col", help="Catalog column holding the titles."),
    taxonomy_cols: str = typer.Option("master_category,sub_category,article_type", "--taxonomy-cols", help="Label tree columns, root to leaf (empty: no taxonomy variant)."),
    approaches: str = typer.Option(",".join(("none", "uniform", "uniform-topk", "semantic", "semantic-curriculum", "taxonomy")), "--approaches"),
    inputs: str = typer.Option("image,image+text", "--inputs", help="Comma-separated: image, text, image+text (fused by attention)."),
    alpha: float = typer.Option(0.1, "--alpha"),
    neighbors: int = typer.Option(20, "--neighbors"),
    loss: str = typer.Option("focal", "--loss", help="focal or ce."),
    repeats: int = typer.Option(3, "--repeats", help="Training seeds (the split is fixed)."),
    label_model: str = typer.Option("minilm", "--label-model", help="Text model for the class names."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (table, charts)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Paper 002: the five smoothing approaches (+ taxonomy) on image and fused image+title inputs.

    Example: simlabel experiment smoothing --data ../shared/datasets/fashion-products --html smoothing.html
    """
    from simlabel.experiments.smoothing import SmoothingExperimentConfig, run_smoothing_experiment

    try:
        cfg = SmoothingExperimentConfig(
            label_col=label_col, text_col=text_col,
            taxonomy_cols=[c.strip() for c in taxonomy_cols.split(",") if c.strip()],
            approaches=[a.strip() for a in approaches.split(",") if a.strip()],
            inputs=[i.strip() for i in inputs.split(",") if i.strip()], alpha=alpha, neighbors=neighbors,
            loss=loss, repeats=list(range(repeats)), label_model=label_model, device=device, limit=limit,
        )
        res = run_smoothing_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out, progress=progress)
    except _known_errors() as e:
        _fail(str(e))
    df = pd.DataFrame(res["summary"])
    t = Table(title=f"semantic label smoothing: {res['n_classes']} classes, {res['n_train']:,} train / {res['n_test']:,} test, K = {res['neighbors']}")
    for col in ("inputs", "approach", "top-1", "top-5", "top-5 in nbhd", "all 5 in", "severity"):
        t.add_column(col, justify="left" if col in ("inputs", "approach") else "right")
    sd = repeats > 1
    for _, r in df.iterrows():
        cell = lambda k, f="{:.3f}": f.format(r[k]) + (f" ±{r[k + ' sd']:.3f}" if sd else "")
        t.add_row(r["inputs"], r["approach"], cell("top1"), cell("top5"), cell("in_top5", "{:.2f}"), cell("all5_in"), cell("severity"))
    t.caption = "top-5 in nbhd: mean number of the top-5 predictions inside the true label's K nearest labels + itself; severity: mean tree distance of wrong top-1"
    out_console.print(t)
    for path in (json_out, html_out):
        if path:
            out_console.print(f"written: {path}", highlight=False, soft_wrap=True)


@experiment_app.command("flipping")
def experiment_flipping(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with attribute columns (e.g. ../shared/datasets/fashion-products)."),
    attributes: str = typer.Option("gender,usage,season,sub_category", "--attributes", help="Comma-separated attribute columns."),
    n_clean: int = typer.Option(500, "--clean", help="Clean samples used for fine-tuning / the flipping model."),
    systematic: float = typer.Option(0.0, "--systematic", help="Also drop each attribute entirely for this share of the article types (content-dependent loss)."),
    n_basis: int = typer.Option(1000, "--n-basis"),
    joint_steps: int = typer.Option(2000, "--joint-steps"),
    repeats: int = typer.Option(1, "--repeats"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Table 1, the flips, cleanlab, and the per-label AP gain chart (Figure 4)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Paper 004: Baseline 0 (noisy only), Baseline 1 (fine-tuned on clean), SELF-ML, and cleanlab as a peer.

    Example: simlabel experiment flipping --data ../shared/datasets/fashion-products --clean 500 --html flipping.html
    """
    from simlabel.experiments.flipping import FlippingExperimentConfig, run_flipping_experiment
    from simlabel.labels.flipping import SelfMLConfig

    try:
        cfg = FlippingExperimentConfig(
            attributes=[a.strip() for a in attributes.split(",") if a.strip()], n_clean=n_clean, systematic_share=systematic,
            selfml=SelfMLConfig(n_basis=n_basis, joint_steps=joint_steps), repeats=list(range(repeats)), device=device, limit=limit,
        )
        res = run_flipping_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out, progress=progress)
    except _known_errors() as e:
        _fail(str(e))
    df = pd.DataFrame(res["table"]).set_index("method")
    t = Table(title=f"Table 1 (in %): {len(res['labels'])} labels, {n_clean} clean samples")
    t.add_column("method")
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for m, row in df.iterrows():
        t.add_row(str(m), *[f"{v:.2f}" for v in row])
    out_console.print(t)
    run = res["runs"][0]
    fq = run["flips_noisy_train"]["all"]
    out_console.print(
        f"SELF-ML flips on N_train: {fq['n_flips']:,} flips, precision {fq['precision']:.3f}, recall {fq['recall']:.3f} "
        f"(wrong noisy entries: {fq['n_wrong_before']:,})", highlight=False, soft_wrap=True)
    for name, q in (("SELF-ML (any flip)", run["selfml_image_level"]), ("cleanlab find_label_issues", run["cleanlab"])):
        out_console.print(
            f"images with wrong labels found by {name}: {q['flagged']:,} flagged, precision {q['precision']:.3f}, "
            f"recall {q['recall']:.3f} (of {q['truly_wrong']:,})", highlight=False, soft_wrap=True)
    for path in (json_out, html_out):
        if path:
            out_console.print(f"written: {path}", highlight=False, soft_wrap=True)


@experiment_app.command("side-info")
def experiment_side_info(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with titles and true labels (e.g. ../shared/datasets/fashion-products)."),
    label_col: str = typer.Option("article_type", "--label-col", help="True labels; their names are the search queries."),
    text_col: str = typer.Option("title", "--text-col", help="Text searched, and the keywords of stage 2."),
    top_r: int = typer.Option(100, "--top-r", help="Search results kept per category (R)."),
    search_method: str = typer.Option("bm25", "--search", help="bm25, tfidf or embedding."),
    duplicates: str = typer.Option("keep", "--duplicates", help="An item found by several queries: one row per query (keep, as a web crawl) or its best-ranked query only (best)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Use this label file (id,label,rank: e.g. your search logs) instead of searching."),
    methods: str = typer.Option(",".join(("baseline", "stage1", "stage1+stage2", "oracle-clean")), "--methods"),
    rank_weight: str = typer.Option("linear", "--rank-weight", help="linear, exp, dcg or none."),
    rank_floor: float = typer.Option(0.2, "--rank-floor"),
    knn: int = typer.Option(10, "--knn", help="Visual neighbours per image (stage 1)."),
    combine: str = typer.Option("product", "--combine", help="Stage 1: product or mean."),
    keyword_weight: float = typer.Option(0.3, "--keyword-weight", help="Stage 2: share of the keyword match in s(x)."),
    folds: int = typer.Option(3, "--folds", help="Stage 2: out-of-fold heads (0: in-sample)."),
    measure: str = typer.Option("wup", "--measure", help="WordNet similarity: wup, lin or path."),
    text_weight: float = typer.Option(0.5, "--text-weight", help="Blend of text-encoder similarity into WordNet's."),
    related_k: int = typer.Option(5, "--related-k", help="WordNet-K-nearest categories that support a label."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="CSV category,synset for names the automatic mapping gets wrong."),
    head: str = typer.Option("mlp", "--head", help="linear or mlp."),
    repeats: int = typer.Option(3, "--repeats", help="Training seeds (split and search are fixed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (tables, weight histograms, image grids)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = DeviceOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Paper 003: Baseline / + Stage 1 / + Stage 1 + Stage 2 on labels from a real title search.

    Example: simlabel experiment side-info --data ../shared/datasets/fashion-products --label-col article_type --top-r 100 --html side.html
    """
    from simlabel.experiments.side_info import SideInfoExperimentConfig, run_side_info_experiment
    from simlabel.heads import HeadConfig
    from simlabel.labels.weighting import SideInfoConfig

    try:
        side = SideInfoConfig(rank_weight=rank_weight, rank_floor=rank_floor, knn=knn, combine=combine,
                              keyword_weight=keyword_weight, stage2_folds=folds)
        cfg = SideInfoExperimentConfig(
            label_col=label_col, text_col=text_col, top_r=top_r, search_method=search_method, duplicates=duplicates,
            labels=str(labels) if labels else None, side=side, measure=measure, text_weight=text_weight,
            related_k=related_k, overrides=str(overrides) if overrides else None,
            methods=[m.strip() for m in methods.split(",") if m.strip()], repeats=list(range(repeats)),
            head=HeadConfig(head=head, patience=8, max_epochs=100), device=device, limit=limit,
        )
        res = run_side_info_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out, progress=progress,
                                       log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    except _known_errors() as e:
        _fail(str(e))
    df = pd.DataFrame(res["summary"])
    t = Table(title=f"side information: {res['n_train']:,} search labels in {res['n_categories']} categories "
                    f"(noise rate {res['noise_rate']:.3f}), {res['n_test']:,} clean test items")
    for col in ("method", "top-1", "top-5", "top-1 gain", "top-5 gain"):
        t.add_column(col, justify="left" if col == "method" else "right")
    sd = repeats > 1
    for _, r in df.iterrows():
        cell = lambda k: f"{100 * r[k]:.2f}" + (f" ±{100 * r[k + ' sd']:.2f}" if sd else "")
        gain = lambda k: f"{100 * r[k]:+.2f}" if k in r and r[k] == r[k] else ""
        t.add_row(r["method"], cell("top1"), cell("top5"), gain("top1 gain"), gain("top5 gain"))
    t.caption = "accuracy in %, mean (±sd) over seeds; oracle-clean drops the wrong labels using the truth (a ceiling)"
    out_console.print(t)
    sep = pd.DataFrame(res["separation"])
    t2 = Table(title="weights of correct vs wrong search labels")
    for col in ("weight", "correct mean", "wrong mean", "correct median", "wrong median", "AUC"):
        t2.add_column(col, justify="left" if col == "weight" else "right")
    for _, r in sep.iterrows():
        t2.add_row(r["weight"], *(f"{r[k]:.3f}" for k in ("correct mean", "wrong mean", "correct median", "wrong median", "auc")))
    out_console.print(t2)
    for path in (json_out, html_out):
        if path:
            out_console.print(f"written: {path}", highlight=False, soft_wrap=True)


def _print_augment_tables(res: dict) -> None:
    from simlabel.experiments.augment import metrics_table as exp_metrics, precision_table, sizes_table

    title = res["config"].get("positive") or "all classes"
    binary = bool(res["config"].get("positive"))
    metrics = exp_metrics(res)
    keys = ["+P", "+R", "-P", "-R", "HM", "accuracy"] if binary else ["accuracy", "macro_f1", "HM"]
    compact = pd.DataFrame(index=metrics.index)
    for key in keys:
        sd = metrics.get(f"{key} sd")
        compact[key] = [
            f"{m:.3f}" + (f" ±{s:.3f}" if sd is not None else "") for m, s in zip(metrics[key], sd if sd is not None else metrics[key])
        ]
    sizes = sizes_table(res)
    if sizes.shape[1] > 4:  # many classes read better as rows
        sizes = sizes.T
        if len(res["encoders"]) == 1:
            sizes.columns = [c[1] for c in sizes.columns]
        else:
            sizes.columns = [" / ".join(c) for c in sizes.columns]
    sizes = sizes.map(lambda v: f"{v:,.0f}")
    prec = precision_table(res)
    prec = pd.DataFrame({"labels with known truth": prec.iloc[:, 0].map(lambda v: f"{v:,.0f}"), "precision": prec["precision"].map(lambda v: f"{v:.3f}")})
    for name, df in (("Table 1: sizes", sizes), ("Table 2: holdout metrics (mean ±sd over repeats)", compact), ("precision of the labels made", prec)):
        t = Table(title=f"{name} — {title}")
        for col in ["", *map(str, df.columns)]:
            t.add_column(col, justify="right" if col else "left")
        single = len(res["encoders"]) == 1
        for idx, row in df.iterrows():
            parts = list(idx) if isinstance(idx, tuple) else [idx]
            label = " / ".join(map(str, parts[1:] if single and len(parts) > 1 else parts))
            t.add_row(label, *map(str, row))
        if single:
            t.caption = f"encoder: {next(iter(res['encoders']))}"
        out_console.print(t)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
