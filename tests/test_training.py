"""train / evaluate on embedding folders and values, and the heads the label methods are handed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError, MissingIdsError
from simlabel.heads import HeadConfig
from simlabel.store import Embeddings, load_embeddings, shard_name, write_shard
from simlabel.training import evaluate, gather_training_labels, oof_predictor, train
from tests.test_heads import blobs


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[str], np.ndarray]:
    X, y = blobs(40, ["a", "b", "c"], dim=8)
    ids = [f"i{i}" for i in range(len(X))]
    write_shard(tmp_path / "emb" / shard_name(0), ids, X, {"model": "toy", "model_version": "v1"})
    return tmp_path / "emb", ids, y


def test_train_and_evaluate_files(tmp_path: Path) -> None:
    X, y = blobs(40, ["a", "b"], dim=8)
    ids = [f"i{i}" for i in range(80)]
    write_shard(tmp_path / "emb" / shard_name(0), ids, X)
    tr = pd.DataFrame({"id": ids[:10] + ids[40:50], "label": list(y[:10]) + list(y[40:50])})
    ex = pd.DataFrame({"id": ids[5:30] + ids[45:70], "label": ["b"] * 5 + list(y[10:30]) + list(y[45:70])})
    tr.to_csv(tmp_path / "train.csv", index=False)
    ex.to_csv(tmp_path / "aug.csv", index=False)
    table = gather_training_labels(tmp_path / "train.csv", [tmp_path / "aug.csv"])
    # the verified labels win over the extra file's (ids 5..9 are 'a', the extra says 'b')
    assert (table.set_index("id").loc[ids[5:10], "label"] == "a").all() and len(table) == 60
    train(tmp_path / "emb", tmp_path / "train.csv", extra=[tmp_path / "aug.csv"], out=tmp_path / "model", config=HeadConfig(device="cpu"))
    test = pd.DataFrame({"id": ids[30:40] + ids[70:80], "label": list(y[30:40]) + list(y[70:80])})
    rep = evaluate(tmp_path / "model", tmp_path / "emb", test, positive="b", json_out=tmp_path / "r.json")
    assert rep["accuracy"] > 0.9 and set(rep["binary"]) >= {"+P", "+R", "-P", "-R"}
    assert (tmp_path / "r.json").exists() and (tmp_path / "model" / "config.json").exists()



def test_a_loaded_value_gives_the_same_model_as_the_folder(folder, tmp_path: Path) -> None:
    emb_dir, ids, y = folder
    labels = pd.DataFrame({"id": ids[::2], "label": y[::2]})
    cfg = HeadConfig(max_epochs=20, device="cpu")
    from_dir = train(emb_dir, labels, config=cfg, out=tmp_path / "m")
    value = load_embeddings(emb_dir)
    from_value = train(value, labels, config=cfg)
    X = value.matrix
    assert np.array_equal(from_dir.predict_proba(X), from_value.predict_proba(X))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["embeddings"] == str(emb_dir.resolve()) and meta["embedding_model"] == "toy"
    test = pd.DataFrame({"id": ids[1::2], "label": y[1::2]})
    assert evaluate(tmp_path / "m", value, test)["accuracy"] == evaluate(from_value, emb_dir, test)["accuracy"]


def test_missing_ids_and_unknown_labels_are_named(folder) -> None:
    emb_dir, ids, y = folder
    with pytest.raises(MissingIdsError, match=r"emb: 2 labelled id\(s\) have no embedding: 'x1', 'x2'"):
        train(emb_dir, pd.DataFrame({"id": ["i0", "i50", "x1", "x2"], "label": ["a", "b", "x", "y"]}))
    clf = train(emb_dir, pd.DataFrame({"id": ids[:80], "label": y[:80]}), config=HeadConfig(max_epochs=3))
    # items of a class the model never saw are errors of their own, reported apart
    rep = evaluate(clf, emb_dir, pd.DataFrame({"id": ids[78:83], "label": y[78:83]}))
    assert rep["unseen"] == {"n": 3, "classes": {"c": 3}} and rep["accuracy"] <= 2 / 5
    assert "c" not in rep["per_class"] and any("never saw" in n for n in rep["notes"])
    with pytest.raises(InputError, match="fusion must be one of none, attention"):
        train(emb_dir, pd.DataFrame({"id": ids, "label": y}), fusion="late")


def test_fusion_option_trains_the_attention_head_on_both_modalities(tmp_path: Path) -> None:
    from tests.test_heads import two_modalities

    A, B, y = two_modalities(n_per=30)
    ids = np.asarray([f"p{i}" for i in range(len(y))], dtype=object)
    image, text = Embeddings(ids, A, {"path": "img"}), Embeddings(ids[::-1], B[::-1], {"path": "txt"})
    cfg = HeadConfig(fusion_width=16, fusion_heads=2, hidden=32, max_epochs=100, patience=20, lr=3e-3)
    clf = train(image, pd.DataFrame({"id": ids, "label": y}), text_emb=text, fusion="attention", config=cfg, out=tmp_path / "f")
    assert clf.config.head == "fusion" and clf.input_dims_ == [8, 6]
    rep = evaluate(clf, image, pd.DataFrame({"id": ids, "label": y}), text_emb=text)
    assert rep["accuracy"] > 0.9


def test_evaluate_adds_the_semantic_metric_and_severity(folder, tmp_path: Path) -> None:
    emb_dir, ids, y = folder
    clf = train(emb_dir, pd.DataFrame({"id": ids, "label": y}), config=HeadConfig(max_epochs=30))
    tax = tmp_path / "tax.csv"
    tax.write_text("label,path\na,X > a\nb,X > b\nc,Y > c\n")
    nbrs = np.array([[0, 1], [1, 0], [2, 1]])
    rep = evaluate(clf, emb_dir, pd.DataFrame({"id": ids, "label": y}), label_neighbors=nbrs, taxonomy=tax)
    assert {"top1", "top5", "semantic", "severity"} <= set(rep)
    assert rep["top5"] == 1.0 and rep["semantic"]["mean_in_top"] <= 2


def test_oof_predictor_returns_each_items_top_classes(folder) -> None:
    emb_dir, ids, y = folder
    emb = load_embeddings(emb_dir)
    predict = oof_predictor(HeadConfig(max_epochs=30, patience=5), folds=3, seed=0, top=2)
    idx, p = predict(emb.matrix, y, np.ones(len(y)), ["a", "b", "c"])
    assert idx.shape == p.shape == (len(y), 2) and (p[:, 0] >= p[:, 1]).all()
    assert (np.asarray(["a", "b", "c"])[idx[:, 0]] == y).mean() > 0.9
    assert gather_training_labels(pd.DataFrame({"id": ["a"], "label": ["x"]}))["origin"].tolist() == ["labels"]
