from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.experiments.flipping import (
    FlippingExperimentConfig,
    run_flipping_experiment,
)
from simlabel.labels.selfml import SelfMLConfig
from tests.helpers import check_page, slice_catalog

SMALL = SelfMLConfig(n_basis=32, pretrain_epochs=5, flip_pretrain_epochs=10, joint_steps=60, hidden=64)


@pytest.fixture
def fashion_120(tmp_path: Path) -> Path:
    df = slice_catalog("fashion-products", 120, tmp_path, stratify="sub_category")
    df.to_csv(tmp_path / "catalog.csv", index=False)
    return tmp_path / "catalog.csv"


def test_experiment_end_to_end(fashion_120: Path, tmp_path: Path) -> None:
    cfg = FlippingExperimentConfig(attributes=("gender", "usage", "season"), n_clean=30, min_count=2, selfml=SMALL,
                                   head_epochs=5, finetune_epochs=3, device="cpu", systematic_share=0.3)
    res = run_flipping_experiment(fashion_120, cfg, out=tmp_path / "run", json_out=tmp_path / "f.json", html_out=tmp_path / "f.html", progress=False)
    table = pd.DataFrame(res["table"]).set_index("method")
    assert list(table.index) == ["baseline0", "baseline1", "selfml"]
    assert {"P@k", "R@k", "F1@k", "AP_all", "mAP attributes", "Jaccard", "0-1 exact match"} <= set(table.columns)
    assert ((table >= 0) & (table <= 100)).all().all()
    run = res["runs"][0]
    assert run["sizes"]["clean_used"] == 30
    # the simulated loss leaves fewer positives per image than the truth, as in the paper
    assert run["noise"]["positives_per_image_noisy"] < run["noise"]["positives_per_image_clean"]
    assert set(run["noise"]["systematic"]["groups_without"]) == {"gender", "usage", "season"}
    assert 0 <= run["cleanlab"]["precision"] <= 1 and run["cleanlab"]["truly_wrong"] > 0
    assert json.loads((tmp_path / "f.json").read_text())["labels"][0].startswith("gender=")
    html = (tmp_path / "f.html").read_text()
    assert check_page(tmp_path / "f.html", tmp_path / "shots")["images"] >= 1
    assert "Table 1" in html and "Figure 4" in html


def test_flip_cli_with_a_clean_set_and_with_an_oracle(fashion_120: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    emb = tmp_path / "emb"
    assert runner.invoke(app, ["embed", str(fashion_120), "--out", str(emb), "--no-progress", "--device", "cpu"]).exit_code == 0
    cat = pd.read_csv(fashion_120, dtype=str)
    # noisy catalog: usage dropped for half of the rows; a clean file for 20 rows with all their labels
    noisy = cat.copy()
    noisy.loc[noisy.index % 2 == 0, "usage"] = ""
    noisy.to_csv(tmp_path / "noisy.csv", index=False)
    clean = cat.iloc[:20]
    pd.DataFrame({"id": clean["id"], "labels": [f"gender={g}|usage={u}" for g, u in zip(clean["gender"], clean["usage"])]}).to_csv(tmp_path / "clean.csv", index=False)
    common = ["--emb", str(emb), "--catalog", str(tmp_path / "noisy.csv"), "--attributes", "gender,usage",
              "--n-basis", "24", "--joint-steps", "40", "--device", "cpu"]
    res = runner.invoke(app, ["flip", *common, "--clean", str(tmp_path / "clean.csv"), "--out", str(tmp_path / "flips.csv"), "--html", str(tmp_path / "x.html")])
    assert res.exit_code == 0, res.output
    flips = pd.read_csv(tmp_path / "flips.csv", dtype=str, keep_default_na=False)
    assert list(flips.columns) == ["id", "label", "attribute", "old", "new", "confidence", "basis", "weights", "basis_labels"]
    assert not set(flips["id"]) & set(clean["id"])  # the clean rows are not flipped, they teach
    # half the usage labels were dropped: the flipping model must restore some of them
    assert len(flips) > 0 and (flips["new"] == "1").any()
    for cell in flips["weights"]:
        w = [float(v) for v in cell.split(";")]
        assert w == sorted(w, reverse=True) and all(0 < v <= 1 for v in w)
    assert "SELF-ML label flips" in (tmp_path / "x.html").read_text()
    facts = check_page(tmp_path / "x.html", tmp_path / "shots")
    assert facts["images"] > 0 and facts["missing"] == 0
    # strategy 1: export the basis images, "label" them from the truth, flip by the direct rule
    res = runner.invoke(app, ["flip", *common, "--export-basis", str(tmp_path / "basis.csv")])
    assert res.exit_code == 0, res.output
    basis = pd.read_csv(tmp_path / "basis.csv", dtype=str, keep_default_na=False)
    assert {"id", "basis_index", "labels"} <= set(basis.columns) and basis["id"].is_unique
    truth = cat.set_index("id")
    basis["labels"] = [f"gender={truth.loc[i, 'gender']}|usage={truth.loc[i, 'usage']}" for i in basis["id"]]
    basis.to_csv(tmp_path / "basis_labelled.csv", index=False)
    res = runner.invoke(app, ["flip", *common, "--basis-labels", str(tmp_path / "basis_labelled.csv"), "--out", str(tmp_path / "f2.csv")])
    assert res.exit_code == 0, res.output
    f2 = pd.read_csv(tmp_path / "f2.csv", dtype=str, keep_default_na=False)
    # the direct rule restores dropped usage labels: most added usage labels are the true ones
    added = f2[(f2["new"] == "1") & (f2["attribute"] == "usage")]
    assert len(added) > 0
    correct = np.mean([lab == f"usage={truth.loc[i, 'usage']}" for i, lab in zip(added["id"], added["label"])])
    assert correct > 0.5
    res = runner.invoke(app, ["flip", *common])
    assert res.exit_code == 1 and "--export-basis" in res.output
