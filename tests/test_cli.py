from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from simlabel.cli import app

runner = CliRunner()


COMMANDS = ["embed", "index", "graph", "neighbors", "labels", "augment", "propagate", "search", "categories", "side-info", "flip", "suspects", "select", "audit",
            "train", "evaluate", "predict", "export", "demo"]
EXPERIMENTS = ["augment", "smoothing", "flipping", "side-info", "ssl"]


def test_help_explains_every_command() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in [*COMMANDS, "experiment", "ssl", "review"]:
        assert cmd in res.output, cmd
    assert "│ weights" not in res.output  # the old name of side-info still works, but is not advertised
    for argv in [[c] for c in COMMANDS if c != "labels"] + [["experiment", e] for e in EXPERIMENTS] + [["weights"], ["labels", "sample"], ["ssl", "train"], ["review", "serve"], ["review", "export"]]:
        res = runner.invoke(app, [*argv, "--help"])
        assert res.exit_code == 0, (argv, res.output)
        assert "Example" in res.output and "--" in res.output, argv
    assert "--text-col" in runner.invoke(app, ["embed", "--help"]).output
    assert "--weight-col" in runner.invoke(app, ["train", "--help"]).output


def test_the_lazy_registry_lists_every_command_with_its_own_help() -> None:
    """`simlabel --help` reads the registry without importing the stages: it must match them."""
    import importlib

    import typer.main

    from simlabel.cli import COMMANDS as REGISTRY
    from simlabel.cli import HIDDEN

    assert set(REGISTRY) - HIDDEN == set(COMMANDS) | {"experiment", "ssl", "review"}
    registered = set()
    for module in ("embed", "labels", "train", "experiments", "audit"):
        stage = importlib.import_module(f"simlabel.cli.{module}")
        registered |= {c.name or c.callback.__name__ for c in stage.app.registered_commands}
    assert registered | {"labels", "experiment", "ssl", "review"} == set(REGISTRY)
    for name, (module, attr, line) in REGISTRY.items():
        stage = getattr(importlib.import_module(f"simlabel.cli.{module}"), attr)
        doc = typer.main.get_group(stage).commands[name].help if attr == "app" else stage.info.help
        assert " ".join(doc.strip().split("\n\n")[0].split()) == line, name


def test_a_command_imports_only_its_stage() -> None:
    """`simlabel train` never pays for the label methods' libraries (faiss, scikit-learn)."""
    import subprocess
    import sys

    code = ("import sys; from simlabel.cli import app\n"
            "try:\n    app(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('faiss', 'sklearn', 'scipy.stats', 'simlabel.labels.flipping', 'simlabel.labels.selfml', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_simlabel_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path: Path, monkeypatch) -> None:
    res = runner.invoke(app, ["train", "--emb", str(tmp_path / "nope"), "--labels", str(tmp_path / "l.csv"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and res.output.strip().startswith("error:") and "Traceback" not in res.output
    assert "not found" in res.output

    import simlabel.labels.augment as aug

    def bug(*args, **kwargs):
        return {}["programming error"]

    monkeypatch.setattr(aug, "augment_positions", bug)
    from simlabel.store import shard_name, write_shard

    write_shard(tmp_path / "emb" / shard_name(0), ["a", "b", "c"], np.eye(3, dtype=np.float32))
    (tmp_path / "s.csv").write_text("id,label\na,x\nb,y\n")
    res = runner.invoke(app, ["augment", "--emb", str(tmp_path / "emb"), "--labels", str(tmp_path / "s.csv"), "--k", "1", "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)  # not swallowed into a one-line message
    assert "error:" not in res.output


def test_embed_index_neighbors_end_to_end(fashion_slice: Path, tmp_path: Path) -> None:
    emb = tmp_path / "emb"
    res = runner.invoke(app, ["embed", str(fashion_slice), "--out", str(emb), "--text-col", "title", "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "40 of 40 embedded" in res.output and "text embeddings (minilm, 384-d)" in res.output
    for kind in ("flat", "hnsw", "ivf"):
        idx = tmp_path / f"{kind}.faiss"
        res = runner.invoke(app, ["index", str(emb), "--out", str(idx), "--kind", kind, "--nlist", "2"])
        assert res.exit_code == 0, res.output
        assert f"{kind} index of 40 x 1280" in res.output
    first_id = pd.read_csv(fashion_slice, dtype=str)["id"].iloc[0]
    res = runner.invoke(app, ["neighbors", str(tmp_path / "flat.faiss"), first_id, "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert len(payload[first_id]) == 3 and all(n["id"] != first_id for n in payload[first_id])
    sims = [n["similarity"] for n in payload[first_id]]
    assert sims == sorted(sims, reverse=True)


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path: Path, clothing_slice: Path) -> None:
    bad = tmp_path / "dup.csv"
    bad.write_text("id,image\nA,a.jpg\nA,b.jpg\n")
    res = runner.invoke(app, ["embed", str(bad), "--out", str(tmp_path / "e"), "--no-progress"])
    assert res.exit_code == 1 and "duplicate id 'A'" in res.output
    res = runner.invoke(app, ["embed", str(clothing_slice), "--out", str(tmp_path / "s"), "--strict", "--no-progress"])
    assert res.exit_code == 1 and "bad-corrupt" in res.output
    res = runner.invoke(app, ["index", str(tmp_path / "nothing"), "--out", str(tmp_path / "i.faiss")])
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(app, ["embed", str(bad), "--out", str(tmp_path / "e"), "--model", "resnet"])
    assert res.exit_code == 1 and "unknown model" in res.output


def test_demo_without_data_says_where_to_point_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SIMLABEL_DATA", str(tmp_path / "nowhere"))
    res = runner.invoke(app, ["demo", "--no-progress"])
    assert res.exit_code == 1 and "SIMLABEL_DATA" in res.output and "not found" in res.output
