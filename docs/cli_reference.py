"""The CLI reference page, generated from every command's ``--help`` (the typer app walked as a tree).

typer vendors its own click, which sphinx-click does not recognise, so the page is written here as
Markdown when the build starts: one section per command, its help text verbatim."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from typer.testing import CliRunner

from simlabel.cli import app


def _walk(command, path: list[str], ctx) -> list[list[str]]:
    out = [path]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                out += _walk(sub, [*path, name], ctx)
    return out


def commands() -> list[list[str]]:
    """Every command path (``[]`` the top, ``["labels", "sample"]`` a subcommand), in the order ``--help`` lists them."""
    root = typer.main.get_command(app)
    with root.make_context("simlabel", [], resilient_parsing=True) as ctx:
        return _walk(root, [], ctx)


def write_page(path: Path) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb"}
    parts = ["# CLI reference", "",
             "Every command's `--help`, generated when these pages are built. What each command does and why is in",
             "[Commands, explained](commands.md).", ""]
    for cmd in commands():
        res = runner.invoke(app, [*cmd, "--help"], env=env, prog_name="simlabel")
        if res.exit_code != 0:
            raise RuntimeError(f"simlabel {' '.join(cmd)} --help failed: {res.output}")
        title = " ".join(["simlabel", *cmd])
        parts += [f"## `{title}`", "", "```text", res.output.rstrip(), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
