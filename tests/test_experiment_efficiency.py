"""The label-efficiency experiment end to end on a real slice: the simulated reviewer, the fixed test set never
selected, the curve's JSON, table and page (checked in Chromium), and the one-vs-rest version by average precision."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.errors import ConfigError, InputError
from simlabel.experiments.efficiency import EfficiencyConfig, run_efficiency_experiment, summary_table
from tests.helpers import check_page, slice_catalog


def test_config_names_its_pipelines_and_refuses_unknown_ones() -> None:
    cfg = EfficiencyConfig(strategies=("random", "auto"), pseudo=("none",))
    assert cfg.pipelines() == ["random+none", "auto+none"]
    with pytest.raises(ConfigError, match="strategies"):
        EfficiencyConfig(strategies=("oracle",))
    with pytest.raises(ConfigError, match="pseudo"):
        EfficiencyConfig(pseudo=("magic",))


@pytest.mark.slow
def test_the_curve_end_to_end_on_a_slice(tmp_path: Path) -> None:
    from simlabel.cli import app

    df = slice_catalog("fashion-products", 90, tmp_path, stratify="master_category")
    df = df.drop(columns=[c for c in ("split",) if c in df.columns])
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    res = CliRunner().invoke(app, ["experiment", "efficiency", "--data", str(cat), "--label-col", "master_category",
                                   "--budgets", "6,12", "--strategies", "random,typiclust,auto", "--pseudo", "none,auto",
                                   "--rounds", "2", "--repeats", "2", "--out", str(tmp_path / "run"),
                                   "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
                                   "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["test"]["rule"].startswith("a stratified 20%") and r["test"]["n"] > 0
    runs = pd.DataFrame(r["runs"])
    assert len(runs) == 2 * 2 * 3 * 2 and set(runs["pipeline"]) == {f"{s}+{p}" for s in ("random", "typiclust", "auto")
                                                                    for p in ("none", "auto")}
    assert runs["score"].between(0, 1).all() and (runs["rounds"] == 2).all()
    # both rounds ran: auto's strategy is recorded per round
    assert all(len(u) == 2 for u in runs.loc[runs["strategy"] == "auto", "used"])
    assert 0 < r["references"]["ceiling"] <= 1
    t = summary_table(r)
    assert "random+none" in t.index and "all pool labels (ceiling)" in t.index and list(t.columns) == ["6", "12"]
    assert "label efficiency" in res.output
    facts = check_page(tmp_path / "r.html", tmp_path / "shots")
    assert facts["images"] > 3 and facts["missing"] == 0  # the curve and the items each strategy chose


@pytest.mark.slow
def test_one_class_against_the_rest_by_average_precision(tmp_path: Path) -> None:
    df = slice_catalog("fashion-products", 90, tmp_path, stratify="master_category")
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    counts = df["master_category"].value_counts()
    rare = counts[counts >= 10].index[-1]  # the rarest class the 20% test set still holds
    r = run_efficiency_experiment(cat, EfficiencyConfig(label_col="master_category", positive=rare, budgets=(10,),
                                                        strategies=("random", "typiclust"), pseudo=("none",), repeats=1,
                                                        references=False, device="cpu"),
                                  out=tmp_path / "run", progress=False)
    assert r["metric"] == "average precision" and "references" not in r
    assert all(0 <= row["score"] <= 1 for row in r["runs"])
    assert any(row["score"] > 0 for row in r["runs"])


@pytest.mark.slow
def test_titles_beside_images_in_every_pipeline(tmp_path: Path) -> None:
    """--text-col: the titles' MiniLM embeddings join the images' (1280 + 384), for the selection, the graph, the
    pseudo-labels, the heads and the references alike."""
    df = slice_catalog("fashion-products", 90, tmp_path, stratify="master_category")
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    r = run_efficiency_experiment(cat, EfficiencyConfig(label_col="master_category", budgets=(8,), strategies=("random", "auto"),
                                                        pseudo=("none", "auto"), rounds=2, repeats=1, device="cpu",
                                                        text_col="title"),
                                  out=tmp_path / "run", progress=False)
    assert r["features"]["inputs"] == "image+text" and r["features"]["dim"] == 1280 + 384
    assert "+" in r["features"]["space"].split("|")[0]  # a space of its own: the images' graph is not reused
    graphs = [p.name for p in (tmp_path / "run").glob("graph-k*")]
    assert len(graphs) == 1
    assert len(r["runs"]) == 4 and all(0 <= row["score"] <= 1 for row in r["runs"]) and 0 < r["references"]["ceiling"] <= 1
    with pytest.raises(InputError, match="text_embeddings"):
        run_efficiency_experiment(cat, EfficiencyConfig(label_col="master_category", text_col="title"),
                                  embeddings=tmp_path / "run" / "embeddings", progress=False)
