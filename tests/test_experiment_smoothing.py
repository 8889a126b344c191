from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.experiments.smoothing import (
    SmoothingExperimentConfig,
    fixed_split,
    run_smoothing_experiment,
)
from simlabel.heads import HeadConfig
from tests.helpers import check_page, slice_catalog


@pytest.fixture
def fashion_150(tmp_path: Path) -> Path:
    df = slice_catalog("fashion-products", 150, tmp_path, stratify="sub_category")
    df.to_csv(tmp_path / "catalog.csv", index=False)
    return tmp_path / "catalog.csv"


def test_fixed_split_keeps_small_classes_in_train() -> None:
    labels = pd.Series(["a"] * 10 + ["b"] * 4 + ["c"])
    test = fixed_split(labels, 0.2, seed=0)
    assert test[:10].sum() == 2 and test[10:14].sum() == 0 and not test[14]
    assert np.array_equal(test, fixed_split(labels, 0.2, seed=0))


def test_experiment_end_to_end(fashion_150: Path, tmp_path: Path) -> None:
    cfg = SmoothingExperimentConfig(
        label_col="sub_category", taxonomy_cols=("master_category", "sub_category"), repeats=[0], test_frac=0.3,
        neighbors=5, head=HeadConfig(head="mlp", monitor="accuracy", max_epochs=15, patience=5), device="cpu",
    )
    res = run_smoothing_experiment(fashion_150, cfg, out=tmp_path / "run", json_out=tmp_path / "s.json", html_out=tmp_path / "s.html", progress=False)
    summary = pd.DataFrame(res["summary"])
    assert len(summary) == 12  # 6 approaches x 2 inputs
    assert set(summary["approach"]) == {"none", "uniform", "uniform-topk", "semantic", "semantic-curriculum", "taxonomy"}
    assert ((summary["in_top5"] >= 0) & (summary["in_top5"] <= 5)).all()
    assert (summary["top5"] >= summary["top1"]).all()
    # the fused model sees titles: on product categories it must beat chance by far
    fused = summary[summary["inputs"] == "image+text"]
    assert fused["top1"].max() > 0.5
    assert json.loads((tmp_path / "s.json").read_text())["neighbors"] == 5
    html = (tmp_path / "s.html").read_text()
    assert check_page(tmp_path / "s.html", tmp_path / "shots")["images"] >= 1
    assert "Semantic label smoothing" in html and "data:image/png;base64" in html


def test_cli_train_fusion_smoothing_and_semantic_evaluate(fashion_150: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    emb = tmp_path / "emb"
    res = runner.invoke(app, ["embed", str(fashion_150), "--out", str(emb), "--text-col", "title", "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    cat = pd.read_csv(fashion_150, dtype=str)
    labels = cat[["id", "sub_category"]].rename(columns={"sub_category": "label"})
    labels.iloc[:110].to_csv(tmp_path / "train.csv", index=False)
    test = labels.iloc[110:]
    test[test["label"].isin(set(labels.iloc[:110]["label"]))].to_csv(tmp_path / "test.csv", index=False)
    tax = cat.groupby("sub_category")["master_category"].first()
    pd.DataFrame({"label": tax.index, "path": [f"{m} > {s}" for s, m in tax.items()]}).to_csv(tmp_path / "tax.csv", index=False)
    res = runner.invoke(app, ["train", "--emb", str(emb), "--text-emb", str(emb / "text"), "--labels", str(tmp_path / "train.csv"),
                              "--fusion", "attention", "--smoothing", "semantic", "--neighbors", "5", "--loss", "focal",
                              "--epochs", "20", "--out", str(tmp_path / "model"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "fusion head" in res.output and "semantic smoothing" in res.output
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["inputs"] == "image+text" and meta["smoothing"]["kind"] == "semantic"
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--emb", str(emb), "--labels", str(tmp_path / "test.csv"),
                              "--semantic", "5", "--taxonomy", str(tmp_path / "tax.csv"), "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "ev.json").read_text())
    assert 0 <= rep["semantic"]["mean_in_top"] <= 5 and "top5" in rep and "severity" in rep
    res = runner.invoke(app, ["train", "--emb", str(emb), "--labels", str(tmp_path / "train.csv"), "--smoothing", "taxonomy",
                              "--out", str(tmp_path / "m2"), "--device", "cpu"])
    assert res.exit_code == 1 and "taxonomy" in res.output
