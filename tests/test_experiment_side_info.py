"""Paper 003 end to end on a real fashion-products slice: search -> semantics -> weights -> heads -> report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.experiments.side_info import (
    SideInfoExperimentConfig,
    run_side_info_experiment,
)
from simlabel.heads import HeadConfig
from simlabel.labels.side_info import SideInfoConfig
from tests.helpers import check_page, slice_catalog

TYPES = ["Tshirts", "Shirts", "Casual Shoes", "Sports Shoes", "Watches", "Handbags", "Heels", "Flip Flops"]


@pytest.fixture(scope="module")
def fashion_400(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("side-info")
    df = slice_catalog("fashion-products", 3000, tmp)
    df = df[df["article_type"].isin(TYPES)].groupby("article_type").head(50).reset_index(drop=True)
    # relative image paths, as real catalogs have them (the report must resolve them)
    (tmp / "images").mkdir()
    for i, src in zip(df["id"], df["image"]):
        shutil.copyfile(src, tmp / "images" / f"{i}.jpg")
    df["image"] = [f"images/{i}.jpg" for i in df["id"]]
    df.to_csv(tmp / "catalog.csv", index=False)
    return tmp / "catalog.csv"


def test_experiment_end_to_end(fashion_400: Path, tmp_path: Path) -> None:
    cfg = SideInfoExperimentConfig(
        top_r=40, repeats=[0], test_frac=0.3, related_k=3, side=SideInfoConfig(knn=5, stage2_folds=2),
        head=HeadConfig(head="mlp", max_epochs=100, patience=8), device="cpu",
    )
    res = run_side_info_experiment(fashion_400, cfg, out=tmp_path / "run", json_out=tmp_path / "r.json",
                                   html_out=tmp_path / "r.html", progress=False)
    summary = pd.DataFrame(res["summary"]).set_index("method")
    assert list(summary.index) == ["baseline", "stage1", "stage1+stage2", "oracle-clean"]
    assert (summary["top5"] >= summary["top1"]).all()
    # the search labels are real and noisy ("Shoes" titles answer both shoe queries), yet mostly right
    assert 0.02 < res["noise_rate"] < 0.5
    assert summary.loc["baseline", "top1"] > 0.5  # 8 classes: far above chance
    sep = pd.DataFrame(res["separation"]).set_index("weight")
    # the whole point of the method: wrong search labels get lower weights than correct ones
    for w in ("neighbour agreement", "stage-1 weight", "s(x)", "stage-2 weight"):
        assert sep.loc[w, "wrong mean"] < sep.loc[w, "correct mean"], w
        assert sep.loc[w, "auc"] > 0.6, w
    per_item = pd.read_csv(res["weights_csv"], dtype={"id": str})
    assert {"id", "label", "rank", "true_label", "correct", "stage1_weight", "stage2_weight"} <= set(per_item.columns)
    assert per_item["stage2_weight"].between(0, 1).all()
    assert json.loads((tmp_path / "r.json").read_text())["n_categories"] == res["n_categories"]
    html = (tmp_path / "r.html").read_text()
    facts = check_page(tmp_path / "r.html", tmp_path / "shots")
    assert facts["images"] > 2 and facts["missing"] == 0
    assert "side information" in html and "data:image/png;base64" in html and "data:image/jpeg;base64" in html


def test_cli_search_categories_weights_train(fashion_400: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    search_csv = tmp_path / "search.csv"
    r = runner.invoke(app, ["search", str(fashion_400), "--label-col", "article_type", "--top-r", "30", "--out", str(search_csv)])
    assert r.exit_code == 0, r.output
    labels = pd.read_csv(search_csv, dtype={"id": str})
    assert {"id", "label", "rank"} <= set(labels.columns) and labels["id"].is_unique
    sem_json = tmp_path / "sem.json"
    r = runner.invoke(app, ["categories", "--labels", str(search_csv), "--k", "3", "--out", str(sem_json)])
    assert r.exit_code == 0, r.output
    assert "shoe.n.01" in r.output
    emb = tmp_path / "emb"
    assert runner.invoke(app, ["embed", str(fashion_400), "--out", str(emb), "--no-progress"]).exit_code == 0
    weighted = tmp_path / "weighted.csv"
    r = runner.invoke(app, ["weights", "--emb", str(emb), "--labels", str(search_csv), "--semantics", str(sem_json),
                            "--stage", "2", "--catalog", str(fashion_400), "--folds", "2", "--knn", "5", "--out", str(weighted)])
    assert r.exit_code == 0, r.output
    w = pd.read_csv(weighted, dtype={"id": str})
    assert len(w) == len(labels) and w["weight"].between(0, 1).all()
    assert {"rank_weight", "agreement", "stage1_weight", "text_score", "keywords"} <= set(w.columns)
    r = runner.invoke(app, ["train", "--emb", str(emb), "--labels", str(weighted), "--weight-col", "weight",
                            "--out", str(tmp_path / "model")])
    assert r.exit_code == 0, r.output


def test_cli_errors_name_the_problem(fashion_400: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["search", str(fashion_400), "--text-col", "description", "--label-col", "article_type",
                            "--out", str(tmp_path / "s.csv")])
    assert r.exit_code != 0 and "description" in r.output
    r = runner.invoke(app, ["categories", "--names", "Shirts,Watches", "--overrides", str(tmp_path / "missing.csv")])
    assert r.exit_code != 0 and "missing.csv" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("category,synset\nShirts,shirtt.n.99\n")
    r = runner.invoke(app, ["categories", "--names", "Shirts,Watches", "--overrides", str(bad)])
    assert r.exit_code != 0 and "shirtt.n.99" in r.output


def test_experiment_on_a_given_search_log_with_repeated_items(fashion_400: Path, tmp_path: Path) -> None:
    from simlabel.labels.search import SearchConfig, build_search_labels

    log = build_search_labels(fashion_400, label_col="article_type", config=SearchConfig(top_r=100, duplicates="keep"),
                              out=tmp_path / "log.csv", progress=False).labels
    assert log["id"].duplicated().any()  # the same item answered several queries
    cfg = SideInfoExperimentConfig(
        labels=str(tmp_path / "log.csv"), methods=["baseline", "stage1"], repeats=[0], test_frac=0.3, related_k=3,
        side=SideInfoConfig(knn=5), head=HeadConfig(head="mlp", max_epochs=100, patience=8), device="cpu",
    )
    res = run_side_info_experiment(fashion_400, cfg, out=tmp_path / "run", progress=False)
    assert res["source"].startswith("label file")
    # held-out test items are never trained on, even when the log lists them
    per_item = pd.read_csv(res["weights_csv"], dtype={"id": str})
    assert len(per_item) < len(log) and res["n_test"] > 0
    sep = pd.DataFrame(res["separation"]).set_index("weight")
    assert sep.loc["neighbour agreement", "auc"] > 0.6
    # stage 1 from a k-NN graph of the store (built once in the run folder): the same weights and results
    from dataclasses import replace

    again = run_side_info_experiment(fashion_400, replace(cfg, graph="run"), out=tmp_path / "run", progress=False)
    assert list((tmp_path / "run").glob("graph-k5-*/graph.json"))
    pd.testing.assert_frame_equal(pd.read_csv(again["weights_csv"], dtype={"id": str}), per_item)
    assert again["summary"] == res["summary"]
