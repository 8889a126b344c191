"""The newcomer's path (issue 12): label files made from the catalog, --label-col on every command
that reads labels, no holdout leaking into training, progress lines in logs, clear messages for a
folder given where a file is expected. On a real 60-row slice of fashion-products."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.errors import InputError, LabelFileError, SimlabelWarning
from simlabel.heads import HeadConfig
from simlabel.labels.io import read_labels
from simlabel.labels.sample import SampleConfig, sample_labels
from simlabel.training import evaluate, train
from tests.helpers import shop_slice

runner = CliRunner()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 60-row fashion-products slice (10 per master category) with its image embeddings."""
    shop = shop_slice(tmp_path_factory.mktemp("shop"))
    res = runner.invoke(app, ["embed", str(shop["catalog"]), "--out", str(shop["root"] / "emb"), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return {**shop, "emb": shop["root"] / "emb"}


def run(*argv: str) -> str:
    res = runner.invoke(app, [str(a) for a in argv])
    assert res.exit_code == 0, res.output
    return res.output


# -- labels straight from the catalog ----------------------------------------------------------


def test_label_col_reads_a_catalog_file_or_folder(shop) -> None:
    a = read_labels(shop["catalog"], label_col="master_category")
    b = read_labels(shop["root"], label_col="master_category")  # the folder holds catalog.csv
    assert a[["id", "label"]].equals(b[["id", "label"]]) and a["label"].nunique() == 6
    with pytest.raises(LabelFileError, match="`label_col`"):
        read_labels(shop["catalog"])  # the catalog has no `label` column: say which option picks one
    with pytest.raises(LabelFileError, match="is a folder with no catalog"):
        read_labels(shop["emb"])


def test_label_col_on_every_command_that_reads_labels(shop, tmp_path: Path) -> None:
    cat, emb = shop["catalog"], shop["emb"]
    seeds = tmp_path / "seeds.csv"
    shop["table"].iloc[::3][["id", "master_category", "title"]].to_csv(seeds, index=False)  # the catalog's own columns
    lc = ["--label-col", "master_category"]
    assert "labels (" in run("augment", "--emb", emb, "--labels", seeds, *lc, "--k", "3", "--out", tmp_path / "aug.csv")
    assert "propagated labels" in run("propagate", "--emb", emb, "--labels", seeds, *lc, "--k", "3", "--steps", "2",
                                      "--out", tmp_path / "prop.csv")
    assert "head over 6 classes" in run("train", "--emb", emb, "--labels", cat, *lc, "--out", tmp_path / "model",
                                        "--epochs", "30", "--no-progress")
    assert "accuracy" in run("evaluate", "--model", tmp_path / "model", "--emb", emb, "--labels", seeds, *lc)
    assert "6 categories" in run("categories", "--labels", cat, *lc, "--text-model", "none")
    assert "weights (stage 1)" in run("side-info", "--emb", emb, "--labels", cat, *lc, "--knn", "3", "--out", tmp_path / "w.csv")
    # flip reads multi-labels: its catalog column is --labels-col (here one made by labels sample)
    run("labels", "sample", cat, "--attributes", "gender,usage", "--keep-columns", "--out", tmp_path / "ml.csv")
    run("labels", "sample", cat, "--attributes", "gender,usage", "--n", "10", "--out", tmp_path / "clean.csv")
    out = run("flip", "--emb", emb, "--catalog", tmp_path / "ml.csv", "--labels-col", "labels", "--clean", tmp_path / "clean.csv",
              "--n-basis", "16", "--joint-steps", "20", "--out", tmp_path / "flips.csv", "--no-progress")
    assert "labels flipped" in out


def test_a_folder_where_a_file_is_expected_is_a_clean_message(shop, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--emb", str(shop["emb"]), "--labels", str(shop["emb"]), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and res.output.startswith("error:") and "folder" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--emb", str(shop["catalog"]), "--labels", str(shop["catalog"]), "--label-col",
                              "master_category", "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and res.output.startswith("error:") and "Errno" not in res.output


# -- honest results ----------------------------------------------------------------------------


def test_train_leaves_out_the_holdout_an_augmentation_drew(shop, tmp_path: Path) -> None:
    """The README's old recipe: augment --holdout-frac, then train on seeds + aug, trained on the holdout."""
    seeds = tmp_path / "seeds.csv"
    sample_labels(shop["catalog"], SampleConfig(label_col="master_category", frac=0.6), out=seeds)
    run("augment", "--emb", shop["emb"], "--labels", seeds, "--k", "3", "--holdout-frac", "0.3", "--out", tmp_path / "aug.csv")
    holdout = pd.read_csv(tmp_path / "aug.csv.holdout.csv", dtype=str)
    with pytest.warns(SimlabelWarning, match=f"{len(holdout)} training id"):
        clf = train(shop["emb"], seeds, extra=[tmp_path / "aug.csv"], out=tmp_path / "model", config=HeadConfig(max_epochs=20))
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["n_dropped_in_holdout"] == len(holdout) and meta["training_ids"]["n"] == len(clf.training_ids_)
    with pytest.raises(InputError, match="in the holdout"):
        train(shop["emb"], seeds, holdout=tmp_path / "aug.csv.holdout.csv", on_holdout="error", config=HeadConfig(max_epochs=5))
    res = runner.invoke(app, ["train", "--emb", str(shop["emb"]), "--labels", str(seeds), "--holdout", str(tmp_path / "aug.csv.holdout.csv"),
                              "--holdout-overlap", "error", "--out", str(tmp_path / "m2")])
    assert res.exit_code == 1 and "in the holdout" in res.output


def test_evaluate_warns_when_it_scores_training_ids(shop, tmp_path: Path) -> None:
    labels = read_labels(shop["catalog"], label_col="master_category")
    train(shop["emb"], labels.iloc[:40], out=tmp_path / "model", config=HeadConfig(max_epochs=20))
    with pytest.warns(SimlabelWarning, match="30 of the 30 evaluation ids were in the model's training set"):
        rep = evaluate(tmp_path / "model", shop["emb"], labels.iloc[10:40])
    assert rep["n_in_training"] == 30 and any("not a test" in n for n in rep["notes"])
    rep = evaluate(tmp_path / "model", shop["emb"], labels.iloc[40:])
    assert rep["n_in_training"] == 0
    out = run("evaluate", "--model", tmp_path / "model", "--emb", shop["emb"], "--labels", shop["catalog"], "--label-col", "master_category")
    assert "warning: 40 of the 60 evaluation ids were in the model's training set" in out


# -- progress in logs --------------------------------------------------------------------------


def test_long_commands_print_progress_lines_when_not_on_a_terminal(shop, tmp_path: Path) -> None:
    out = run("train", "--emb", shop["emb"], "--labels", shop["catalog"], "--label-col", "master_category", "--out", tmp_path / "m")
    assert "train: 1/200 epochs" in out and "epochs/s" in out and "early stop" in out
    run("labels", "sample", shop["catalog"], "--attributes", "gender,usage", "--keep-columns", "--out", tmp_path / "ml.csv")
    run("labels", "sample", shop["catalog"], "--attributes", "gender,usage", "--n", "10", "--out", tmp_path / "clean.csv")
    out = run("flip", "--emb", shop["emb"], "--catalog", tmp_path / "ml.csv", "--attributes", "gender,usage", "--clean",
              tmp_path / "clean.csv", "--n-basis", "16", "--joint-steps", "20", "--out", tmp_path / "f.csv", "--no-progress")
    for phase in ("multi-label head: 15/15 epochs", "reconstruction: 15/15 epochs", "flipping model: 50/50 epochs",
                  "joint training: 20/20 steps"):
        assert phase in out, phase
    out = run("experiment", "augment", "--data", shop["catalog"], "--label-col", "master_category", "--out", tmp_path / "exp",
              "--no-progress")
    assert "experiment augment all classes (efficientnet-lite0): 4/4 models" in out
    assert "experiment augment all classes (efficientnet-lite0) > seeds seed 0: 1/200 epochs" in out
