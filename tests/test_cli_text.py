"""User data printed by the CLI is text, never rich markup: brackets, backslashes and control characters go
through every command's error path and come out as written (control characters as escapes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.cli._common import Table, printable

runner = CliRunner()
SLICE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clothing-small"

#: one failing invocation per command; {p} is a missing path whose name is the generated text
COMMANDS = {
    "embed": ["embed", "{p}", "--out", "{o}"],
    "index": ["index", "{p}", "--out", "{o}"],
    "graph": ["graph", "{p}", "--out", "{o}"],
    "neighbors": ["neighbors", "{p}", "x"],
    "labels sample": ["labels", "sample", "{p}", "--label-col", "label", "--out", "{o}"],
    "augment": ["augment", "--emb", "{p}", "--labels", "{p}", "--out", "{o}"],
    "propagate": ["propagate", "--emb", "{p}", "--labels", "{p}", "--out", "{o}"],
    "search": ["search", "{p}", "--out", "{o}"],
    "categories": ["categories", "--labels", "{p}"],
    "side-info": ["side-info", "--emb", "{p}", "--labels", "{p}", "--out", "{o}"],
    "flip": ["flip", "--emb", "{p}", "--catalog", "{p}", "--out", "{o}"],
    "suspects": ["suspects", "--emb", "{p}", "--labels", "{p}", "--out", "{o}"],
    "select": ["select", "--emb", "{p}", "--budget", "3", "--out", "{o}"],
    "train": ["train", "--emb", "{p}", "--labels", "{p}", "--out", "{o}"],
    "evaluate": ["evaluate", "--model", "{p}", "--emb", "{p}", "--labels", "{p}"],
    "predict": ["predict", "--model", "{p}", "--emb", "{p}", "--out", "{o}"],
    "export": ["export", "--model", "{p}", "--out", "{o}"],
    "demo": ["demo", "--data", "{p}"],
    "review export": ["review", "export", "{p}", "--out", "{o}"],
    "ssl train": ["ssl", "train", "--data", "{p}", "--out", "{o}"],
    "experiment augment": ["experiment", "augment", "--data", "{p}"],
}

#: what users put in names: brackets (rich markup), backslashes, quotes, and control characters (no NUL or
#: newline: neither can be in a command-line argument or a one-line message)
NASTY = st.text(st.one_of(st.sampled_from(list("[]/\\=:'\" ab\x1b\x07\t\r")),
                          st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n")),
                min_size=1, max_size=12)


def _shown(output: str, text: str) -> bool:
    """Whether ``text`` appears in ``output`` as the CLI prints it: as written (control characters escaped), or
    as the message's repr of it."""
    return printable(text).plain in output or printable(repr(text)[1:-1]).plain in output


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(COMMANDS)), text=NASTY)
def test_every_command_prints_user_text_as_written(tmp_path: Path, name: str, text: str) -> None:
    path = f"/nonexistent/x{text}"
    argv = [a.format(p=path, o=str(tmp_path / "out")) for a in COMMANDS[name]]
    res = runner.invoke(app, argv)
    assert res.exit_code == 1, (name, text, res.output)
    assert res.output.startswith("error: ") and "Traceback" not in res.output, res.output
    # as written, or as the path it names ('a//b' is 'a/b')
    assert _shown(res.output, path) or _shown(res.output, str(Path(path))), (name, text, res.output)
    assert "\x1b" not in res.output and "\x07" not in res.output  # no control sequence reaches the terminal


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=NASTY)
def test_a_column_name_with_brackets_is_named_as_written(text: str) -> None:
    if not SLICE.exists():
        pytest.skip("../shared/datasets is not beside this checkout")
    res = runner.invoke(app, ["embed", str(SLICE), "--out", "/nonexistent/out", "--text-col", text])
    assert res.exit_code == 1 and res.output.startswith("error: "), res.output
    assert _shown(res.output, text), (text, res.output)


def test_the_bracketed_cases_of_the_issue() -> None:
    """issue 23: 'title[/x]' ended in a MarkupError traceback, 'price[eur]' printed as 'price'."""
    if not SLICE.exists():
        pytest.skip("../shared/datasets is not beside this checkout")
    for col in ("title[/x]", "price[eur]"):
        res = runner.invoke(app, ["embed", str(SLICE), "--out", "/nonexistent/out", "--text-col", col])
        assert res.exit_code == 1 and f"--text-col '{col}' is not a column" in res.output, res.output


def test_table_cells_and_titles_are_text() -> None:
    from rich.console import Console

    t = Table(title="labels of [b]shop[/b]")
    t.add_column("label")
    t.add_row("dress[red]")
    t.add_row("a\x1bb")
    console = Console(record=True, width=80)
    console.print(t)
    shown = console.export_text()
    assert "[b]shop[/b]" in shown and "dress[red]" in shown and "a\\x1bb" in shown  # the title wraps at the column


def test_the_library_names_parameters_and_the_command_line_its_flags(tmp_path: Path) -> None:
    from simlabel import SampleConfig, sample_labels
    from simlabel.cli._common import as_flags, option_flags
    from simlabel.cli.embed import embed as embed_command
    from simlabel.errors import InputError

    if not SLICE.exists():
        pytest.skip("../shared/datasets is not beside this checkout")
    with pytest.raises(InputError, match="^`holdout_frac` needs `holdout_out`"):  # Python: the parameters' names
        sample_labels(SLICE, SampleConfig(holdout_frac=0.2), out=tmp_path / "s.csv")
    res = runner.invoke(app, ["labels", "sample", str(SLICE), "--holdout-frac", "0.2", "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 1 and res.output.startswith("error: --holdout-frac needs --holdout-out:"), res.output
    flags = option_flags(embed_command)
    assert flags["text_col"] == "--text-col" and flags["out"] == "--out" and flags["progress"] == "--progress"
    # a parameter this command lacks, and a command to run, stay as written
    said = "`text_col` 'x', `nothing`, or run `simlabel graph --k 10`"
    assert as_flags(said, flags) == "--text-col 'x', `nothing`, or run `simlabel graph --k 10`"
    assert as_flags(said) == said
