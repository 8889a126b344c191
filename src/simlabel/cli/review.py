"""``simlabel review``: the review page (``review QUEUE...``, i.e. ``review serve``) and ``review export``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
import typer
import typer.core

from simlabel.cli._common import command, say


class _ServeByDefault(typer.core.TyperGroup):
    """``simlabel review QUEUE...`` is ``simlabel review serve QUEUE...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


review_app = typer.Typer(cls=_ServeByDefault, no_args_is_help=True,
                         help="Review simlabel's labels in the browser; the decisions flow back (review export).\n\n"
                              "`simlabel review QUEUE... --catalog CATALOG` is `simlabel review serve ...`.")


@command(review_app, "serve")
def serve(
    queues: list[Path] = typer.Argument(..., help="Files to review: select's items to label, a predict output folder (the least sure first), suspects, augment or flip outputs, side-info weights, a flip --export-basis file."),
    catalog: Path = typer.Option(..., "--catalog", help="The catalog the queues were made from (images by id, titles)."),
    decisions: Optional[Path] = typer.Option(None, "--decisions", help="Decisions file (JSON lines, appended; default: decisions.jsonl beside the first queue). Restart on it to resume."),
    emb: Optional[str] = typer.Option(None, "--emb", help="Embedding folder (checked to hold every queued id): gives a queue of items to label 'more like this', the nearest neighbours of an item."),
    graph: Optional[Path] = typer.Option(None, "--graph", help="A k-NN graph of --emb (simlabel graph): 'more like this' reads it instead of searching."),
    index: Optional[Path] = typer.Option(None, "--index", help="A saved index of --emb, used without --graph (default: one built on the first question)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels known so far (id,label), e.g. select's --labels: they join the label list a queue to label offers on keys 1-9."),
    max_items: int = typer.Option(2000, "--max-items", help="Of a predict output folder: how many of the least sure items (lowest margin) to review."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only; anything else warns)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder the catalog's relative image paths start from (default: the catalog's folder)."),
) -> None:
    """Serve a review page of the given queues on this machine and print its URL.

    A queue from `simlabel select` is a labelling queue: select items (click, shift-click, ctrl+a), give them a label with 1-9 or by typing one (a new one too), and find more of a class with 'more like this' (--emb) and the title search. A `simlabel predict` folder shows its least sure items first (--max-items).

    Cost: reading the queues and the catalog (and --emb); thumbnails are made once (Pillow) and kept beside the decisions file.

    Example: simlabel review suspects.csv aug.csv --catalog catalog.csv   then: simlabel review export decisions.jsonl --out reviewed.csv

    Example: simlabel review to_label.csv --catalog catalog.csv --emb emb --graph graph   then: simlabel review export decisions.jsonl --out labels.csv
    """
    import warnings

    from simlabel.catalog import load_catalog
    from simlabel.errors import SimlabelWarning
    from simlabel.review.queues import read_queues
    from simlabel.review.server import ReviewSession
    from simlabel.review.server import serve as run

    items = read_queues(queues, max_items=max_items)
    cat = load_catalog(catalog, require=("id",), root=image_root)
    known = None
    if labels is not None:
        from simlabel.labels.io import read_labels

        known = read_labels(labels)
    decisions = decisions or Path(queues[0]).with_name("decisions.jsonl")
    session = ReviewSession(items, cat, decisions, emb=emb, graph=graph, index=index, labels=known)
    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(f"--host {host}: the review page is reachable from other machines; anyone who can reach it "
                      "and load the page can record decisions", SimlabelWarning, stacklevel=1)
    state = session.standing()
    say(f"{len(items):,} items in {items['queue'].nunique()} queue(s), {len(state):,} decided in {decisions}")
    say(f"review page: http://{host}:{port}/   (? for the keys; Ctrl-C stops the server, nothing is lost)")
    run(session, host=host, port=port)


@command(review_app, "export")
def export(
    decisions: Path = typer.Argument(..., help="The decisions file the review page wrote."),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write."),
    format: str = typer.Option("labels", "--format", help="labels (id,label: seeds for augment, clean labels for train), clean (id,clean: a catalog's clean column), basis-labels (for flip --basis-labels), flips, or label-studio (tasks JSON with simlabel's proposals as predictions)."),
    queue: Optional[list[Path]] = typer.Option(None, "--queue", help="label-studio: the queue files whose items become tasks."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="label-studio: the catalog for image paths and titles."),
) -> None:
    """Turn the reviewed decisions into the files the commands read.

    Cost: reading the decisions file (and, for label-studio, the queues).

    Example: simlabel review export decisions.jsonl --out seeds.csv   then: simlabel augment --labels seeds.csv ...
    """
    from simlabel.review.export import export_decisions

    cat = None
    if catalog is not None:
        from simlabel.catalog import load_catalog

        cat = load_catalog(catalog, require=("id",))
    res = export_decisions(decisions, out, format=format, queues=queue or [], catalog=cat)
    say(f"{len(res):,} {'tasks' if format == 'label-studio' else 'rows'} ({format}) -> {out}")
