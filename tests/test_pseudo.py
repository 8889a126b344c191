"""Pseudo-labels (simlabel.labels.pseudo) and train's pseudo=auto: the weights by hand on a 6-node graph,
auto choosing by out-of-fold validation on the human labels only (never a holdout), and what config.json records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import ConfigError, InputError
from simlabel.head_config import HeadConfig
from simlabel.labels.pseudo import PseudoConfig, make_pseudo_labels, pseudo_weights
from simlabel.store import Embeddings
from simlabel.training import choose_pseudo, hash_ids, train
from tests.helpers import blobs

FAST = HeadConfig(head="linear", max_epochs=30, patience=5, device="cpu", seed=0)


def _seven() -> Embeddings:
    """Two groups on orthogonal axes, each a centre and points around it nearer the centre than each other:
    a0 = (1, 0, 0) with a1..a3 at 0.02 from it, 120 degrees apart; b0 = (0, 1, 0) with b1, b2 on either side."""
    X = np.array([[1, 0, 0], [1, 0.02, 0], [1, -0.01, 0.0173], [1, -0.01, -0.0173],
                  [0, 1, 0], [0.02, 1, 0], [-0.02, 1, 0]], dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array(["a0", "a1", "a2", "a3", "b0", "b1", "b2"], dtype=object)
    return Embeddings(ids, X, {"path": "mem", "model": "test"})


def test_pseudo_weights_by_hand_on_a_small_graph() -> None:
    e = _seven()
    seeds = pd.DataFrame({"id": ["a0", "b0"], "label": ["a", "b"]})
    made = make_pseudo_labels(e, seeds, "propagate", PseudoConfig(k=2, max_steps=5, unlabeled_sample=None))
    # each node's two nearest are in its own group, the centre first: a1..a3 become a, b1, b2 become b, surely
    assert dict(zip(made["id"], made["label"])) == {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b"}
    assert np.allclose(made["certainty"], 1.0)
    # class balance: 3 pseudo-labels of a, 2 of b, mean 2.5 -> b_a = 2.5 / 3, b_b = 2.5 / 2
    w = pseudo_weights(made["label"], made["certainty"], 0.6)
    assert np.allclose(w[made["label"] == "a"], 0.5) and np.allclose(w[made["label"] == "b"], 0.75)
    assert pseudo_weights(np.array(["a", "b"]), np.array([1.0, 1.0]), 5.0).tolist() == [1.0, 1.0]  # never above 1
    # spread: Iscen's 1 - H / log C is 1 where one class alone reaches the node
    spread = make_pseudo_labels(e, seeds, "spread", PseudoConfig(k=2, unlabeled_sample=None))
    assert set(spread["id"]) == {"a1", "a2", "a3", "b1", "b2"} and (spread["certainty"] > 0.99).all()
    # augment: the cosine to the neighbour the label came through; an excluded id is never labelled
    aug = make_pseudo_labels(e, seeds, "augment", PseudoConfig(k=2), exclude=["a3"])
    assert "a3" not in set(aug["id"]) and (aug["certainty"] > 0.99).all()
    with pytest.raises(ConfigError, match="mode"):
        PseudoConfig(mode="everything")


def _catalog(n_per: int = 60) -> tuple[Embeddings, pd.DataFrame]:
    X, y = blobs(n_per, ["a", "b", "c"], spread=1.2)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"i{j}" for j in range(len(X))], dtype=object)
    return Embeddings(ids, X, {"path": "mem", "model": "test"}), pd.DataFrame({"id": ids, "label": y})


def test_auto_never_validates_on_a_holdout_and_records_its_choice(tmp_path: Path) -> None:
    e, truth = _catalog()
    labels = truth.iloc[::6].reset_index(drop=True)  # 30 human labels, 10 per class
    hold = truth.iloc[1::6]
    with pytest.raises(InputError, match="never validates on a holdout"):
        choose_pseudo(e, pd.concat([labels, hold.head(1)]), PseudoConfig(), FAST, holdout_ids=set(hold["id"]))
    clf = train(e, labels, config=FAST, pseudo="auto", holdout=hold, out=tmp_path / "m")
    record = json.loads((tmp_path / "m" / "config.json").read_text())["pseudo"]
    assert record["asked"] == "auto" and record["mode"] in ("none", "augment", "propagate", "spread")
    assert len(record["candidates"]) == 7 and all(len(c["folds"]) == 3 for c in record["candidates"])
    best = max(c["accuracy"] for c in record["candidates"])
    chosen = [c for c in record["candidates"] if c["mode"] == record["mode"] and (record["mode"] == "none" or c["scale"] == record["scale"])]
    assert chosen and chosen[0]["accuracy"] == pytest.approx(best)
    # the holdout is never trained on, not even with a pseudo-label
    assert not np.isin(hash_ids(hold["id"]), clf.training_ids_).any()
    # pseudo-labels were added when a mode was chosen
    n_human = len(labels)
    assert len(clf.training_ids_) == n_human + record["n"]


def test_too_few_labels_to_validate_take_the_stated_rule() -> None:
    e, truth = _catalog(20)
    labels = truth.groupby("label").head(4)  # 4 per class on average: fewer than min_per_class 5
    choice = choose_pseudo(e, labels, PseudoConfig(fallback="spread", fallback_scale=0.25), FAST)
    assert (choice["mode"], choice["scale"], choice["candidates"]) == ("spread", 0.25, [])
    assert "too few to validate" in choice["why"]


def test_a_long_tail_is_trained_on_never_validated_on() -> None:
    e, truth = _catalog(20)
    labels = pd.concat([truth[truth["label"] != "c"].groupby("label").head(8), truth[truth["label"] == "c"].head(1)])
    choice = choose_pseudo(e, labels, PseudoConfig(scales=(1.0,)), FAST)
    # class c has one label: validation still runs on a and b (3 folds), c's row always trains
    assert len(choice["candidates"]) == 4 and all(len(c["folds"]) == 3 for c in choice["candidates"])


def test_titles_beside_images_have_their_own_space_and_take_pseudo_labels(tmp_path: Path) -> None:
    """Images that do not separate the classes, titles that do: the joined features label by both, and no graph
    of the images alone passes for one of the joined features."""
    from simlabel.graph import GraphConfig, build_graph
    from simlabel.training import load_features

    e, truth = _catalog(30)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=e.matrix.shape).astype(np.float32)
    image = Embeddings(e.ids, noise / np.linalg.norm(noise, axis=1, keepdims=True), {"path": "img", "model": "img-model"})
    text = Embeddings(e.ids, e.matrix, {"path": "txt", "model": "txt-model", "modality": "text"})
    image.fingerprint  # noqa: B018 - cached in the metadata once read: the joined features must not inherit it
    joined, dims = load_features(image, text, inputs="image+text")
    assert dims == [e.dim, e.dim] and joined.dim == 2 * e.dim and joined.fingerprint != image.fingerprint
    assert joined.meta["model"] == "img-model+txt-model" and joined.meta["modality"] == "image+text"
    image_graph = build_graph(image, tmp_path / "g", GraphConfig(k=5, recall_sample=0), progress=False)
    labels = truth.iloc[::6].reset_index(drop=True)
    with pytest.raises(InputError, match="other embeddings|fingerprint|does not match"):
        train(image, labels, text_emb=text, inputs="image+text", config=FAST, pseudo="propagate", graph=image_graph)
    clf = train(image, labels, text_emb=text, inputs="image+text", config=FAST, pseudo="propagate")
    assert clf.pseudo_["mode"] == "propagate" and clf.pseudo_["n"] > 0
    assert len(clf.training_ids_) == len(labels) + clf.pseudo_["n"]
    # the pseudo-labels follow the titles (which separate the classes), so the model does too
    acc = (clf.predict(joined.rows(truth["id"]).matrix) == truth["label"].to_numpy()).mean()
    assert acc > 0.9
