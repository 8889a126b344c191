"""``simlabel audit``: everything wrong with a catalog, from the one graph (:func:`simlabel.audit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simlabel.auditing import AuditConfig
from simlabel.cli._common import Table, command, default, graph_option, out_console, progress_option, say, written
from simlabel.remote import is_url

app = typer.Typer()


@command(app)
def audit(
    catalog: Path = typer.Argument(..., help="The catalog (file or folder): ids, images and the --split-col column."),
    emb: str = typer.Option(..., "--emb", help="Its image embedding folder (simlabel embed) or its object storage URL: the vectors, errors.csv and the images' quality measures."),
    out: str = typer.Option(..., "--out", "-o", help="AUDIT_DIR (a folder or an object storage URL): issues.parquet, summary.json, map.parquet, queues/ (one review queue per type) and, with --html, report.html."),
    graph: Optional[str] = graph_option("each item's neighbours"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels to audit: CSV id,label, or a catalog with --label-col (default: the catalog's --label-col column, if any)."),
    label_col: str = typer.Option("label", "--label-col", help="The column holding the labels."),
    split_col: Optional[str] = typer.Option(None, "--split-col", help="The catalog column of each item's split (train, test ...): leakage is a near-duplicate group across it."),
    train_split: str = typer.Option(default(AuditConfig, "train_split"), "--train-split", help="The --split-col value that is training."),
    k: int = typer.Option(default(AuditConfig, "k"), "--k", "-k", help="Neighbours per item."),
    near_duplicate_fraction: float = typer.Option(default(AuditConfig, "near_duplicate_fraction"), "--near-duplicate-fraction", help="Near duplicates: edges closer than this fraction of the median nearest-neighbour distance (Datalab's 0.13), or whose photos' perceptual hashes differ in fewer than this fraction of the median nearest neighbour's bits."),
    z: float = typer.Option(default(AuditConfig, "z"), "--z", help="Image quality and distance to the labels: the modified z-score beyond which a value is flagged, on its bad side."),
    min_class_size: int = typer.Option(default(AuditConfig, "min_class_size"), "--min-class-size", help="A class with fewer labelled items is flagged."),
    label_mode: str = typer.Option(default(AuditConfig, "label_mode"), "--label-mode", help="The label type's k-NN mode: rank (SimiFeat's noise-rate ranking; its estimate grows as the cube of the classes: ~6 s for 141) or vote."),
    html: bool = typer.Option(False, "--html", help="Write report.html: each type's worst items beside their evidence, the catalog's map."),
    seed: int = typer.Option(0, "--seed"),
    progress: bool = progress_option(),  # noqa: ARG001 - every command takes it; the audit's steps take seconds
) -> None:
    """Everything wrong with a catalog, from the one graph: duplicates, leakage, outliers, image quality, labels, balance, order.

    Types: unreadable images (the decoder's reason); exact duplicates (the same decoded pixels, or bytes); near duplicates (graph edges under a cut chosen from the data, or between photos whose perceptual hashes nearly agree); leakage (a near-duplicate group across --split-col, with the k-NN accuracy on the test items with and without); outliers (Datalab's k-NN score); items far from every labelled class; dark, bright, low-information, blurry, greyscale, odd aspect ratio and odd size (measured in embed's decode pass, judged against the catalog's own spread); suspected labels (simlabel suspects); too small or too rare classes; non-IID order. Scores lie in [0, 1], lower is worse, as in cleanlab's Datalab.

    Cost: no image is read again; a k-NN search when no --graph is given (none with it); seconds for 10k items.

    Example: simlabel audit catalog.csv --emb emb/ --graph graph/ --split-col split --out audit/ --html
    then: simlabel review audit/queues/*.csv --catalog catalog.csv ; simlabel review export ... --format exclude
    """
    from simlabel.auditing import audit as audit_fn

    cfg = AuditConfig(k=k, near_duplicate_fraction=near_duplicate_fraction, z=z, min_class_size=min_class_size,
                      train_split=train_split, label_mode=label_mode, seed=seed)
    res = audit_fn(catalog, emb, graph=graph, labels=labels, label_col=label_col, split_col=split_col, config=cfg,
                   out=out, html=html)
    table = Table(title=f"audit of {res.summary['n_items']:,} items: {res.summary['flagged_items']:,} flagged by a type")
    table.add_column("issue")
    table.add_column("flagged", justify="right")
    for issue, n in res.summary["counts"].items():
        table.add_row(issue, f"{n:,}")
    out_console.print(table)
    if "leakage" in res.summary:
        lk = res.summary["leakage"]
        say(f"leakage: {lk['n_leaked']:,} of {lk['n_other']:,} items outside '{train_split}' have a near-twin in it"
            + (f"; k-NN accuracy {lk['knn_accuracy_all']:.3f} on the labelled test items, "
               f"{lk['knn_accuracy_without_leaked']:.3f} without the leaked"
               if lk.get("knn_accuracy_without_leaked") is not None else ""))
    if res.summary.get("n_stale_measures"):
        say(f"{res.summary['n_stale_measures']:,} images were measured by an older simlabel.quality and are left out of "
            f"the image types: embed {emb} again (through the vector cache only their measures are taken again)")
    if not res.summary.get("n_measured"):
        say(f"no image measures in {emb}: embed it again with this version of simlabel (a cached re-embed decodes "
            "nothing new) for the image-quality and exact-duplicate types")
    folder = out if is_url(out) else Path(out)  # a URL is named as given; a local folder as the platform joins it
    written(*(f"{str(folder).rstrip('/')}/{name}" if is_url(out) else folder / name
              for name in ("issues.parquet", "summary.json", "queues", "report.html" if html else None) if name))
