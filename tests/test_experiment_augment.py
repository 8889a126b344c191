from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.experiments.augment import (
    AugmentExperimentConfig,
    label_precision,
    labeled_table,
    run_augment_experiment,
)
from simlabel.heads import HeadConfig
from tests.helpers import check_page, slice_catalog


@pytest.fixture
def clothing_80(tmp_path: Path) -> Path:
    df = slice_catalog("clothing-small", 80, tmp_path, stratify="label")
    df.to_csv(tmp_path / "catalog.csv", index=False)
    return tmp_path / "catalog.csv"


def test_label_precision_by_hand() -> None:
    made = pd.DataFrame({"id": ["a", "b", "c", "z"], "label": ["x", "x", "y", "y"]})
    truth = pd.Series({"a": "x", "b": "y", "c": "y"})
    p = label_precision(made, truth)
    assert p["n"] == 3 and p["precision"] == pytest.approx(2 / 3)
    assert p["per_class"]["x"]["precision"] == 0.5 and p["per_class"]["y"]["precision"] == 1.0


def test_experiment_end_to_end_binary(clothing_80: Path, tmp_path: Path) -> None:
    cfg = AugmentExperimentConfig(positive="shoes", labeled_frac=0.5, repeats=[0], device="cpu", head=HeadConfig(max_epochs=60))
    res = run_augment_experiment(clothing_80, cfg, out=tmp_path / "run", json_out=tmp_path / "r.json", html_out=tmp_path / "r.html", progress=False)
    enc = res["encoders"]["efficientnet-lite0"]
    run = enc["runs"][0]
    assert set(run["metrics"]) == {"seeds", "aug", "prop", "auto"}
    # the method a user should run: pseudo=auto, chosen on the seeds alone. Here the seeds alone are perfect out
    # of fold, so no mode can beat them by its margin: auto keeps them, and its model is the seeds' model
    assert run["pseudo_auto"]["mode"] == "none" and "beat the human labels alone" in run["pseudo_auto"]["why"]
    assert run["metrics"]["auto"] == run["metrics"]["seeds"]
    for m in run["metrics"].values():
        assert {"+P", "+R", "-P", "-R", "HM", "accuracy"} <= set(m)
        assert 0 <= m["HM"] <= 1
    sizes = pd.DataFrame(run["sizes"])
    # 40 labeled (half of 80): 30% of them held out, the rest are seeds
    assert sizes["seeds"].sum() + sizes["validation"].sum() == 40
    assert sizes["augmented"].sum() > 0
    # propagation sampled as many unlabeled points as were augmented; it labels at most that many
    assert sizes["propagated"].sum() <= sizes["augmented"].sum()
    assert run["label_precision"]["augmented"]["n"] > 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["config"]["positive"] == "shoes"
    html = (tmp_path / "r.html").read_text()
    facts = check_page(tmp_path / "r.html", tmp_path / "shots")
    assert facts["images"] > 2 and facts["missing"] == 0  # the chart and the image grids
    assert "Table 1" in html and "Table 2" in html and "data:image/png;base64" in html and "data:image/jpeg;base64" in html


def test_experiment_cli_multiclass(clothing_80: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["experiment", "augment", "--data", str(clothing_80), "--labeled-frac", "0.6", "--out", str(tmp_path / "run"),
         "--json", str(tmp_path / "m.json"), "--no-progress", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    assert "Table 1: sizes" in res.output and "Table 2: holdout metrics" in res.output
    data = json.loads((tmp_path / "m.json").read_text())
    metrics = data["encoders"]["efficientnet-lite0"]["runs"][0]["metrics"]["seeds"]
    assert "shoes P" in metrics and "dress R" in metrics


def test_labeled_table_validation(clothing_80: Path) -> None:
    from simlabel.catalog import load_catalog

    cat = load_catalog(clothing_80)
    assert set(labeled_table(cat, "hat")["label"]) == {"hat", "not hat"}
    with pytest.raises(ValueError, match="not a label"):
        labeled_table(cat, "sofa")


def test_cli_augment_propagate_train_evaluate(fashion_slice: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    emb = tmp_path / "emb"
    assert runner.invoke(app, ["embed", str(fashion_slice), "--out", str(emb), "--no-progress", "--device", "cpu"]).exit_code == 0
    cat = pd.read_csv(fashion_slice, dtype=str)
    seeds = cat[["id", "master_category"]].rename(columns={"master_category": "label"})
    seeds = seeds[seeds["label"].isin(["Apparel", "Footwear"])]
    seeds.head(12).to_csv(tmp_path / "seeds.csv", index=False)
    res = runner.invoke(app, ["augment", "--emb", str(emb), "--labels", str(tmp_path / "seeds.csv"), "--k", "3", "--holdout-frac", "0.3", "--out", str(tmp_path / "aug.csv")])
    assert res.exit_code == 0, res.output
    assert "augmentation sizes" in res.output and (tmp_path / "aug.csv.holdout.csv").exists()
    res = runner.invoke(app, ["propagate", "--emb", str(emb), "--labels", str(tmp_path / "seeds.csv"), "--steps", "3", "--k", "3", "--out", str(tmp_path / "prop.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--emb", str(emb), "--labels", str(tmp_path / "seeds.csv"), "--extra", str(tmp_path / "aug.csv"), "--out", str(tmp_path / "model"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--emb", str(emb), "--labels", str(tmp_path / "aug.csv.holdout.csv"), "--positive", "Footwear", "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    assert "HM" in res.output and "+P" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\nnope,Apparel\n")
    res = runner.invoke(app, ["augment", "--emb", str(emb), "--labels", str(bad), "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "not in the embeddings" in res.output


def test_one_repetition_is_the_same_on_the_graph_as_on_an_index(clothing_80: Path, tmp_path: Path) -> None:
    """The experiment reads its augmentation's neighbours from one graph per encoder: same labels as an index."""
    from simlabel.catalog import load_catalog
    from simlabel.embedding import embed
    from simlabel.experiments.augment import run_one
    from simlabel.graph import GraphConfig, build_graph
    from simlabel.index import IndexConfig, NeighborIndex
    from simlabel.store import load_embeddings

    embed(clothing_80, tmp_path / "emb", progress=False)
    emb = load_embeddings(tmp_path / "emb")
    labeled = labeled_table(load_catalog(clothing_80), None)
    cfg = AugmentExperimentConfig(labeled_frac=0.5, repeats=[0], device="cpu", head=HeadConfig(max_epochs=5))
    on_index = run_one(emb, labeled, cfg, 0, tmp_path / "a", index=NeighborIndex.build(emb.ids, emb.matrix, IndexConfig(kind="flat")))
    on_graph = run_one(emb, labeled, cfg, 0, tmp_path / "b", graph=build_graph(emb, None, GraphConfig(k=cfg.k), progress=False))
    a, b = pd.read_csv(tmp_path / "a" / "aug.csv"), pd.read_csv(tmp_path / "b" / "aug.csv")
    assert len(a) > 40
    pd.testing.assert_frame_equal(a, b)
    assert on_index["sizes"] == on_graph["sizes"]
