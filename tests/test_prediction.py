"""simlabel predict: predictions equal evaluate's, probabilities that sum to one, abstention at the model's
thresholds, a store streamed shard by shard equal to the loaded embeddings, a killed run that resumes without a
duplicate or lost row, --ids, --explain, a catalog embedded with the model's own encoder, models of titles, and
the output as a review queue whose decisions export as labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.errors import InputError
from simlabel.head_config import HeadConfig
from simlabel.prediction import predict, read_predictions
from simlabel.store import Embeddings, iter_embeddings, load_embeddings, write_shard
from simlabel.training import evaluate, train
from tests.helpers import ROOT, blobs

FAST = HeadConfig(max_epochs=60, patience=60, device="cpu", seed=0)


def _store(tmp_path: Path, n_per: int = 80, shard: int = 70) -> tuple[Path, pd.DataFrame]:
    """Four overlapping classes written as a real store of several shards (the layout `embed` writes)."""
    X, y = blobs(n_per, ["a", "b", "c", "d"], dim=12, spread=1.6)
    ids = np.array([f"p{j:04d}" for j in range(len(X))], dtype=object)
    folder = tmp_path / "emb"
    folder.mkdir()
    for k, s in enumerate(range(0, len(ids), shard)):
        write_shard(folder / f"part-{k:05d}.parquet", ids[s : s + shard], X[s : s + shard],
                    {"model": "test", "model_version": "test/1", "modality": "image", "normalized": False})
    return folder, pd.DataFrame({"id": ids, "label": y})


def test_predictions_equal_evaluate_and_probabilities_sum_to_one(tmp_path: Path) -> None:
    folder, truth = _store(tmp_path)
    emb = load_embeddings(folder)
    test = truth.iloc[::5]
    model = tmp_path / "m"
    clf = train(folder, truth.drop(index=test.index), config=FAST, out=model)
    made = predict(model, folder, out=tmp_path / "p", top_k=4, progress=False)
    rows = made.table().set_index("id")
    assert len(rows) == len(truth) and not rows.index.duplicated().any() and made.summary["parts"] == 5
    assert len(pd.read_parquet(tmp_path / "p")) == len(truth)  # a Parquet dataset as it stands
    # the same labels and probabilities as the model's own, row for row
    proba = clf.predict_proba(emb.rows(rows.index).matrix)
    assert (rows["label"].to_numpy() == clf.classes_[proba.argmax(1)]).all()
    assert np.allclose(rows["probability"], proba.max(1), atol=1e-6)
    tops = np.stack(rows["top_probabilities"].to_numpy())
    assert np.allclose(tops.sum(1), 1.0, atol=1e-5) and (np.diff(tops, axis=1) <= 1e-7).all()  # all 4 classes: sum 1
    assert np.allclose(rows["margin"], tops[:, 0] - tops[:, 1], atol=1e-6)
    assert (rows["model"] == made.summary["fingerprint"]).all()
    # evaluate on the test ids agrees with the predictions
    rep = evaluate(model, folder, test)
    got = (rows.loc[test["id"], "label"].to_numpy() == test["label"].to_numpy()).mean()
    assert got == pytest.approx(rep["accuracy"])
    # the loaded embeddings give the same rows as the store streamed shard by shard
    again = predict(clf, emb, top_k=4, progress=False).table().set_index("id").loc[rows.index]
    assert (again["label"] == rows["label"]).all() and np.allclose(again["probability"], rows["probability"])


def test_abstention_follows_the_model_thresholds_and_ids_restrict(tmp_path: Path) -> None:
    folder, truth = _store(tmp_path)
    clf = train(folder, truth, config=FAST)
    t = clf.thresholds(0.9)
    made = predict(clf, folder, min_precision=0.9, progress=False)
    rows = made.table()
    cut = rows["label"].map({c: (np.inf if v["threshold"] is None else v["threshold"]) for c, v in t.items()})
    assert ((rows["probability"] < cut) == rows["abstain"]).all()
    assert 0 < rows["abstain"].sum() < len(rows) and made.summary["abstained"] == rows["abstain"].sum()
    assert made.summary["thresholds"] == t and made.summary["precision_scope"] == "all"
    # every class at once asks more of each class than each on its own: never a lower threshold
    each = predict(clf, folder, min_precision=0.9, precision_scope="each", progress=False)
    for c, v in t.items():
        mine = each.summary["thresholds"][c]["threshold"]
        assert v["threshold"] is None or (mine is not None and v["threshold"] >= mine)
    assert each.summary["abstained"] < made.summary["abstained"]
    some = truth["id"].iloc[[3, 150, 300]].tolist()
    only = predict(clf, folder, ids=some + ["not-in-the-store"], progress=False)
    assert sorted(only.table()["id"]) == sorted(some) and only.summary["ids_asked"] == 4
    with pytest.raises(InputError, match="top_k"):
        predict(clf, folder, top_k=0)
    with pytest.raises(InputError, match="either `emb`"):
        predict(clf)
    uncalibrated = train(folder, truth.groupby("label").head(5), config=HeadConfig(max_epochs=10, device="cpu"),
                         calibration="none")
    with pytest.raises(InputError, match="no held-out rows"):
        predict(uncalibrated, folder, min_precision=0.9)


def test_a_killed_predict_resumes_without_duplicate_or_lost_rows(tmp_path: Path) -> None:
    folder, truth = _store(tmp_path)
    model = tmp_path / "m"
    train(folder, truth, config=FAST, out=model)
    out = tmp_path / "p"
    cmd = [sys.executable, "-m", "simlabel.cli", "predict", "--model", str(model), "--emb", str(folder), "--out", str(out),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    killed = subprocess.run(cmd, env={**env, "SIMLABEL_TEST_KILL_AT": "predict:after-part"}, capture_output=True, text=True)
    assert killed.returncode == -9
    assert [p.name for p in out.glob("*.parquet")] == ["part-00000.parquet"] and not (out / "_manifest.json").exists()
    with pytest.raises(Exception, match="not a finished prediction folder"):
        read_predictions(out)
    first = (out / "part-00000.parquet").stat().st_mtime_ns
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = read_predictions(out)
    assert len(rows) == len(truth) and set(rows["id"]) == set(truth["id"]) and not rows["id"].duplicated().any()
    assert (out / "part-00000.parquet").stat().st_mtime_ns == first  # kept, not recomputed
    import json

    assert json.loads((out / "_summary.json").read_text())["parts_reused"] == 1
    # other options are another output: no part of the first run is reused
    other = predict(model, folder, out=out, top_k=1, progress=False)
    assert other.summary["parts_reused"] == 0 and len(read_predictions(out)) == len(truth)
    # a store rewritten with other vectors is another input: its parts are made again, not read from the last run
    first_ids, first_X = next(iter_embeddings(folder))
    write_shard(folder / "part-00000.parquet", first_ids, first_X[::-1].copy(),
                {"model": "test", "model_version": "test/1", "modality": "image", "normalized": False})
    redone = predict(model, folder, out=out, top_k=1, progress=False)
    assert redone.summary["parts_reused"] == 0


def test_explain_and_the_review_queue_it_makes(tmp_path: Path) -> None:
    from simlabel.catalog import load_catalog
    from simlabel.review.export import export_decisions
    from simlabel.review.queues import read_queues
    from simlabel.review.server import ReviewSession
    from tests.helpers import slice_catalog

    df = slice_catalog("fashion-products", 30, tmp_path)
    df.to_csv(tmp_path / "catalog.csv", index=False)
    ids = df["id"].astype(str).tolist()
    X, _ = blobs(10, ["a", "b", "c"], dim=8, spread=1.5)
    emb = Embeddings(np.array(ids, dtype=object), X, {"path": "mem", "model": "test"})
    labels = pd.DataFrame({"id": ids[::2], "label": np.array(["a", "b", "c"])[np.arange(30)[::2] // 10]})
    clf = train(emb, labels, config=FAST)
    made = predict(clf, emb, out=tmp_path / "p", explain=3, explain_labels=labels, progress=False)
    rows = made.table().set_index("id")
    first = rows.loc[ids[1]]
    near = first["neighbor_ids"].split("|")
    assert len(near) == 3 and set(near) <= set(labels["id"]) and ids[1] not in near
    sims = [float(v) for v in first["neighbor_similarities"].split("|")]
    assert sims == sorted(sims, reverse=True)
    with pytest.raises(InputError, match="explain_labels"):
        predict(clf, emb, explain=3)
    # the folder is a review queue: least sure first, grouped by the proposed label
    items = read_queues([tmp_path / "p"], max_items=10)
    assert len(items) == 10 and set(items["kind"]) == {"predict"}
    margins = rows.loc[items.sort_values("order")["id"], "margin"].to_numpy()
    assert (np.diff(margins) >= 0).all() and margins.max() <= np.sort(rows["margin"].to_numpy())[9]
    assert items["explain"].map(len).eq(3).all()
    session = ReviewSession(items, load_catalog(tmp_path / "catalog.csv", require=("id",)), tmp_path / "d.jsonl")
    a, b = items["id"].iloc[0], items["id"].iloc[1]
    session.decide("p", [a], "accept")
    session.decide("p", [b], "relabel", "c")
    out = export_decisions(tmp_path / "d.jsonl", tmp_path / "labels.csv").set_index("id")["label"]
    assert out.to_dict() == {a: rows.loc[a, "label"], b: "c"}


def test_a_model_of_titles_names_the_inputs_it_needs(tmp_path: Path) -> None:
    X, y = blobs(30, ["a", "b"], dim=6)
    ids = np.array([f"i{j}" for j in range(len(X))], dtype=object)
    image = Embeddings(ids, X, {"path": "img", "model": "img"})
    text = Embeddings(ids[5:], X[5:, :4] * 2, {"path": "txt", "model": "txt", "modality": "text"})
    both = train(image, pd.DataFrame({"id": ids[5:], "label": y[5:]}), text_emb=text, inputs="image+text", config=FAST,
                 out=tmp_path / "m")
    with pytest.raises(InputError, match="image\\+text inputs: give the titles' embeddings"):
        predict(both, image, progress=False)
    made = predict(tmp_path / "m", image, text_emb=text, progress=False)
    assert len(made.table()) == len(ids) - 5 and made.summary["without_text"] == 5  # no title vector: not predicted


@pytest.mark.slow
def test_predict_a_catalog_with_the_model_encoder(tmp_path: Path, image_encoder) -> None:
    """--catalog embeds with the model's encoder and engine, then predicts: the same as from the store."""
    from simlabel.embedding import embed
    from tests.helpers import slice_catalog

    df = slice_catalog("clothing-small", 40, tmp_path, stratify="label")
    df.to_csv(tmp_path / "catalog.csv", index=False)
    embed(tmp_path / "catalog.csv", tmp_path / "emb", image_encoder=image_encoder, progress=False)
    model = tmp_path / "m"
    train(tmp_path / "emb", tmp_path / "catalog.csv", config=FAST, out=model)
    from simlabel.cli import app

    res = CliRunner().invoke(app, ["predict", "--model", str(model), "--catalog", str(tmp_path / "catalog.csv"),
                                   "--out", str(tmp_path / "p"), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "items predicted" in res.output and (tmp_path / "p.embeddings" / "manifest.json").is_file()
    from_catalog = read_predictions(tmp_path / "p").set_index("id").sort_index()
    from_store = predict(model, tmp_path / "emb", progress=False).table().set_index("id").sort_index()
    assert (from_catalog["label"] == from_store["label"]).all()
    assert np.allclose(from_catalog["probability"], from_store["probability"], atol=1e-5)
    # a store of another encoder is refused
    other = Embeddings(from_store.index.to_numpy(), np.zeros((len(from_store), 1280), np.float32),
                       {"path": "other", "model": "other-encoder", "modality": "image"})
    with pytest.raises(InputError, match="trained on embeddings of"):
        predict(model, other, progress=False)


def test_multi_label_predict_gives_every_label_probability(tmp_path: Path) -> None:
    """A multi-label model (paper 004's head) saved, loaded and predicted: one probability per attribute value,
    the labels set where they reach the model's threshold, equal to the head's own; the CLI trains it."""
    from simlabel.cli import app
    from simlabel.heads import MultiLabelClassifier, load_model
    from simlabel.prediction import MULTILABEL_COLUMNS

    folder, table = _store(tmp_path)
    emb = load_embeddings(folder)
    X = emb.rows(table["id"]).matrix
    # two attributes of the four blobs: gender splits them one way, usage the other
    catalog = table.assign(gender=table["label"].map({"a": "Men", "b": "Men", "c": "Women", "d": "Women"}),
                           usage=table["label"].map({"a": "Casual", "b": "Sports", "c": "Casual", "d": "Sports"}))
    catalog.loc[::7, "usage"] = ""  # a missing value sets no label of that attribute
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    r = CliRunner().invoke(app, ["train", "--emb", str(folder), "--labels", str(tmp_path / "catalog.csv"),
                                 "--attributes", "gender,usage", "--out", str(tmp_path / "ml"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    clf = load_model(tmp_path / "ml")
    assert isinstance(clf, MultiLabelClassifier)
    names = ["gender=Men", "gender=Women", "usage=Casual", "usage=Sports"]
    assert clf.label_names() == names
    made = predict(tmp_path / "ml", folder, out=tmp_path / "pred", progress=False)
    got = read_predictions(tmp_path / "pred").set_index("id").loc[table["id"]]
    assert tuple(got.reset_index().columns) == MULTILABEL_COLUMNS
    P = np.stack(got["probabilities"].to_numpy())
    assert P.shape == (len(table), 4)
    np.testing.assert_allclose(P, clf.predict_proba(X), atol=1e-6)
    on = P >= clf.threshold
    assert [list(v) for v in got["labels"]] == [[n for n, o in zip(names, row) if o] for row in on]
    assert (got["label"] == ["|".join(n for n, o in zip(names, row) if o) for row in on]).all()
    np.testing.assert_allclose(got["margin"], np.abs(P - clf.threshold).min(axis=1), atol=1e-6)
    assert made.summary["kind"] == "multi-label" and made.summary["classes"] == names
    assert made.summary["labels"] == {n: int(c) for n, c in zip(names, on.sum(axis=0)) if c}
    # it learnt the attributes (overlapping blobs, a short focal-loss fit): every label well above chance
    truth = np.stack([catalog["gender"] == "Men", catalog["gender"] == "Women",
                      catalog["usage"] == "Casual", catalog["usage"] == "Sports"], axis=1)
    assert (on == truth)[catalog["usage"] != ""].mean(axis=0).min() > 0.7
    with pytest.raises(InputError, match="multi-label"):
        predict(tmp_path / "ml", folder, min_precision=0.9, progress=False)
    from simlabel.errors import LabelFileError
    from simlabel.review.queues import read_queue

    with pytest.raises(LabelFileError, match="multi-label model"):
        read_queue(tmp_path / "pred")
