"""The ``simlabel`` command line: a thin layer over the Python API.

Every command calls one public function (``simlabel.embed``, ``simlabel.build_index``,
``simlabel.augment`` ...), prints a readable summary and exits non-zero when the run
cannot go on. simlabel's own errors (:class:`~simlabel.errors.SimlabelError`) and OS
errors print as one line; anything else is a bug and keeps its traceback.

The commands live by stage: :mod:`.embed` (embed, index, neighbors), :mod:`.labels`
(augment, propagate, search, categories, side-info, flip), :mod:`.train` (train,
evaluate) and :mod:`.experiments` (demo, experiment ...).
"""

from __future__ import annotations

import typer

from simlabel.cli import embed, experiments, labels, train

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
for stage in (embed, labels, train, experiments):
    app.registered_commands.extend(stage.app.registered_commands)
app.add_typer(experiments.experiment_app, name="experiment")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
