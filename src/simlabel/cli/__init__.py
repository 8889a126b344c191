"""The ``simlabel`` command line: a thin layer over the Python API.

Every command calls one public function (``simlabel.embed``, ``simlabel.build_index``,
``simlabel.augment`` ...), prints a readable summary and exits non-zero when the run
cannot go on. simlabel's own errors (:class:`~simlabel.errors.SimlabelError`) and OS
errors print as one line; anything else is a bug and keeps its traceback.

The commands live by stage: :mod:`.embed` (embed, index, neighbors), :mod:`.labels`
(augment, propagate, search, categories, side-info, flip, suspects, and the ``labels`` group),
:mod:`.train` (train, evaluate) and :mod:`.experiments` (demo, experiment ...). A stage
module is imported only when one of its commands runs (torch alone costs a second), so
``simlabel --help`` and ``simlabel train`` do not pay for the label methods' libraries.
"""

from __future__ import annotations

import functools
import json
from importlib import import_module
from typing import Optional

import click
import typer
import typer.core
import typer.main

from simlabel.context import SINGLE_WRITER, STORAGE_OPTIONS

#: command -> (stage module, attribute of its Typer app, one-line help shown by ``simlabel --help``);
#: tests check each line against the command's own help
COMMANDS: dict[str, tuple[str, str, str]] = {
    "embed": ("embed", "app", "Embed a catalog's images (and titles) into a resumable Parquet store."),
    "index": ("embed", "app", "Build a cosine k-NN index (FAISS) over an embedding folder."),
    "graph": ("embed", "app", "Build the k-NN graph of an embedding folder once, for every label method (augment, propagate ... --graph)."),
    "neighbors": ("embed", "app", "Print the k nearest neighbours of some ids (cosine similarity)."),
    "labels": ("labels", "labels_app", "Make label files from a catalog: seeds, holdouts, clean sets, noisy copies."),
    "augment": ("labels", "app", "Grow seed labels through nearest neighbours (paper 000, section 3)."),
    "propagate": ("labels", "app", "Label propagation on the k-NN graph (Zhu & Ghahramani 2002), the baseline of paper 000."),
    "search": ("labels", "app", "Noisy web-style labels from a real search (paper 003): each category name queries the titles."),
    "categories": ("labels", "app", "Category semantic relationships (paper 003): WordNet synsets, text similarity, K nearest."),
    "side-info": ("labels", "app", "Per-image weights for noisy labels from side information (paper 003)."),
    "weights": ("labels", "app", "Per-image weights for noisy labels from side information (paper 003)."),
    "flip": ("labels", "app", "Explainable noisy-label flipping for multi-label attributes (SELF-ML, paper 004)."),
    "suspects": ("labels", "app", "Suspected label errors in a single-label file: k-NN votes (SimiFeat) and/or cleanlab, each explained."),
    "select": ("labels", "app", "What to label next: typical and covering items first, then uncertain and diverse ones (a review queue)."),
    "audit": ("audit", "app", "Everything wrong with a catalog, from the one graph: duplicates, leakage, outliers, image quality, labels, balance, order."),
    "review": ("review", "review_app", "Review simlabel's labels in the browser; the decisions flow back (review export)."),
    "train": ("train", "app", "Train a classifier head on frozen embeddings, with early stopping."),
    "evaluate": ("train", "app", "Per-class P/R/F1, accuracy, confusion matrix and HM of a model on labelled ids, and how calibrated it is."),
    "export": ("train", "app", "Ship the classifier: one ONNX graph from an image tensor to class probabilities."),
    "predict": ("train", "app", "Classify every item of a catalog with a trained model: the label, how sure, and whether to abstain."),
    "ssl": ("ssl", "ssl_app", "Self-supervised, colour-agnostic design embeddings (SkiLL, paper 001): ssl train."),
    "demo": ("experiments", "app", "Run the main job: embed the data (cached), index it, report k-NN accuracy and a small paper-000 experiment."),
    "experiment": ("experiments", "experiment_app", "Reproduce the papers' experiments on a catalog."),
}
#: kept for scripts that use the first names; not listed
HIDDEN = {"weights"}


class LazyGroup(typer.core.TyperGroup):
    """A group that imports a command's stage module only when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if name not in HIDDEN]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        stage = getattr(import_module(f"simlabel.cli.{module}"), attr)
        group = typer.main.get_group(stage)
        if attr != "app":  # a sub-group (`experiment`, `labels`) is the command itself
            group.name = name
            return group
        return group.get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="simlabel",
    cls=LazyGroup,
    help=(
        "Turn a product catalog with few or noisy labels into image classifiers, "
        "using semantic similarity as supervision.\n\n"
        "The spine: catalog -> embed -> index -> labels -> classifier -> report."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    storage_options: Optional[str] = typer.Option(
        None, "--storage-options", envvar="SIMLABEL_STORAGE_OPTIONS",
        help="JSON of fsspec's options for object storage URLs (s3://, gs://, az://) in any command, e.g. "
             '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}, "anon": false}\'. Without it, the standard '
             "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_PROFILE, "
             "GOOGLE_APPLICATION_CREDENTIALS ...)."),
    single_writer: bool = typer.Option(
        False, "--single-writer",
        help="Write an output on object storage that offers no conditional put (gs://, az://), promising that no "
             "other process writes it. S3 needs no promise: a lease object keeps a second writer out."),
) -> None:
    """Turn a product catalog with few or noisy labels into image classifiers, using semantic
    similarity as supervision.

    The spine: catalog -> embed -> index -> labels -> classifier -> report.
    """
    # for the one command this invocation runs; put back when the invocation ends
    for var, value in ((STORAGE_OPTIONS, _storage_options(storage_options)), (SINGLE_WRITER, single_writer)):
        ctx.call_on_close(functools.partial(var.reset, var.set(value)))


def _storage_options(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise typer.BadParameter(f"not JSON ({e})", param_hint="--storage-options") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--storage-options")
    return value


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
