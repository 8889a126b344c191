from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from simlabel.cli import app

runner = CliRunner()


def test_help_explains_every_command() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("embed", "index", "neighbors", "demo"):
        assert cmd in res.output
    res = runner.invoke(app, ["embed", "--help"])
    assert res.exit_code == 0 and "--text-col" in res.output and "--strict" in res.output


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
