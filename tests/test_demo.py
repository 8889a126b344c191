from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.demo import knn_vote, run_demo
from simlabel.errors import DataNotFound
from simlabel.runs import find_default_data


def test_knn_vote_hand_case() -> None:
    train = np.array(["a", "a", "b", "c"])
    pos = np.array([[0, 2, 3], [2, 3, 1], [3, -1, -1]])
    sims = np.array([[0.9, 0.5, 0.45], [0.6, 0.3, 0.2], [0.8, 0.0, 0.0]])
    # row 0: a=0.9 vs b=0.5, c=0.45 -> a; row 1: b=0.6 > c=0.3, a=0.2 -> b; row 2: only c
    assert list(knn_vote(train, pos, sims)) == ["a", "b", "c"]
    # unweighted: row 0 is a tie a/b/c -> the first class code, deterministic
    assert list(knn_vote(train, pos, sims, weighted=False)) == ["a", "a", "c"]


def test_find_default_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMLABEL_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataNotFound, match="SIMLABEL_DATA"):
        find_default_data()
    monkeypatch.setenv("SIMLABEL_DATA", str(tmp_path))
    assert find_default_data() == tmp_path
    assert find_default_data(tmp_path) == tmp_path
    with pytest.raises(DataNotFound, match="`data`"):
        find_default_data(tmp_path / "nope")


def test_demo_on_a_real_slice(clothing_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = pd.read_csv(clothing_slice, dtype=str)
    # a test split of real images: every 4th good image
    good = ~df["id"].str.startswith(("bad-", "ok-"))
    df.loc[good & (df.index % 4 == 0), "split"] = "test"
    df.loc[good & (df.index % 4 != 0), "split"] = "train"
    df.to_csv(clothing_slice, index=False)
    rep = run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, experiment=False, efficiency=False)
    assert rep.n_items == 47 and rep.n_failed == 5 and rep.n_embedded == 42
    assert rep.n_test == 10 and rep.knn_accuracy is not None
    # 10 classes, 3 train images each: ImageNet features must beat chance (0.1) clearly
    assert rep.knn_accuracy >= 0.3
    assert (tmp_path / "run" / "index.faiss").exists() and (tmp_path / "run" / "demo_report.json").exists()
    again = run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, labeled_frac=0.9, budget_frac=0.3, repeats=1)
    assert again.resumed and again.knn_accuracy == rep.knn_accuracy
    # the fewest-labels comparison: seeds only and simlabel on as many human labels, on the test split, both printed
    few = again.fewest_labels()
    pool = again.n_train  # the labelled rows outside the test split
    assert few["budget"] == round(0.3 * pool) and few["pool"] == pool and few["repeats"] == 1
    assert 0 <= few["seeds_only"] <= 1 and 0 <= few["simlabel"] <= 1
    assert again.efficiency["test"]["rule"] == "the catalog's test split" and again.efficiency["test"]["n"] == again.n_test
    assert {r["pipeline"] for r in again.efficiency["summary"]} == {"random+none", "random+auto", "auto+none", "auto+auto"}
    import json

    assert json.loads((tmp_path / "run" / "demo_report.json").read_text())["fewest_labels"] == few
    assert (tmp_path / "run" / "experiment_efficiency.html").exists()
    # the small paper-000 experiment ran on the same embeddings, the test split held out
    exp = again.experiment["encoders"]["efficientnet-lite0"]
    assert exp["embeddings"] == str(tmp_path / "run" / "embeddings")
    assert set(exp["runs"][0]["metrics"]) == {"seeds", "aug", "prop", "auto"}
    assert (tmp_path / "run" / "experiment_augment.html").exists()
    assert not again.experiment_cached
    # a third demo with the same inputs and code reads the experiment's results instead of rerunning it
    import simlabel.demo as demo_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("the experiment ran again")

    monkeypatch.setattr(demo_module, "run_augment_experiment", must_not_run)
    monkeypatch.setattr(demo_module, "run_efficiency_experiment", must_not_run)
    third = run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, labeled_frac=0.9, budget_frac=0.3, repeats=1)
    from simlabel.experiments._common import jsonable

    m = "efficientnet-lite0"
    assert third.experiment_cached and third.efficiency_cached and third.fewest_labels() == few
    # the command prints both figures (from the cache here)
    from typer.testing import CliRunner

    from simlabel.cli import app

    res = CliRunner().invoke(app, ["demo", "--data", str(clothing_slice), "--out", str(tmp_path / "run"), "-k", "3",
                                   "--labeled-frac", "0.9", "--budget-frac", "0.3", "--repeats", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"simlabel {few['simlabel']:.3f} vs seeds only {few['seeds_only']:.3f}" in res.output
    assert "seeds only: random labels, trained alone" in res.output
    cached = pd.DataFrame(third.experiment["encoders"][m]["mean"]).sort_index().sort_index(axis=1)
    fresh = pd.DataFrame(jsonable(again.experiment)["encoders"][m]["mean"]).sort_index().sort_index(axis=1)
    assert cached.equals(fresh)
    # other inputs (here the labelled share) are another experiment
    with pytest.raises(AssertionError, match="ran again"):
        run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, labeled_frac=0.8, efficiency=False)


def test_demo_knn_accuracy_is_the_same_from_a_graph(clothing_slice: Path, tmp_path: Path) -> None:
    from simlabel.graph import GraphConfig, build_graph, neighbours_among
    from simlabel.store import load_embeddings

    rep = run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, experiment=False, efficiency=False)
    emb = load_embeddings(tmp_path / "run" / "embeddings")
    # a small graph (k = 4): most test rows lack 3 training neighbours in it and are queried instead
    for gk in (4, 30):
        g = build_graph(emb, tmp_path / f"g{gk}", GraphConfig(k=gk), progress=False)
        via = run_demo(clothing_slice, out=tmp_path / "run", k=3, progress=False, experiment=False, efficiency=False, graph=g)
        assert via.knn_accuracy == rep.knn_accuracy and via.per_class_accuracy == rep.per_class_accuracy
    # the helper by hand: allowed rows only, best first, never the row itself
    allowed = np.zeros(len(g), dtype=bool)
    allowed[::2] = True
    nb, sims = neighbours_among(g, np.arange(6), allowed, 3, vectors=emb.matrix)
    assert allowed[nb].all() and (nb != np.arange(6)[:, None]).all() and (np.diff(sims, axis=1) <= 1e-6).all()
