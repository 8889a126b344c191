"""simlabel.ssl.probes and the experiment: probes on separable data, colour entropy, an end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError
from simlabel.ssl.probes import colour_entropy, design_recall, hide_designs, probe, split_designs
from simlabel.store import Embeddings


def _blobs(n_per: int = 40, seed: int = 0) -> tuple[Embeddings, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:4] * 5
    X = np.concatenate([c + rng.normal(0, 0.3, (n_per, 8)) for c in centres]).astype(np.float32)
    ids = np.array([f"r{i}" for i in range(len(X))], dtype=object)
    design = pd.Series(np.repeat(list("abcd"), n_per), index=ids)
    # colour independent of the clusters: two colours alternate inside every blob
    colour = pd.Series(np.tile(["red", "blue"], 2 * n_per), index=ids)
    return Embeddings(ids, X, {"path": "blobs"}), design, colour


def test_probe_on_separable_blobs():
    emb, design, colour = _blobs()
    for kind in ("linear", "mlp"):
        r = probe(emb, design, kind=kind)
        assert r["accuracy"] == 1.0 and r["r90"] == 1.0 and r["r95"] == 1.0
        assert r["n_classes"] == 4 and r["n_test"] == 48
    # colour is noise to this embedding: the colour probe is near chance
    assert probe(emb, colour)["accuracy"] < 0.75
    with pytest.raises(InputError, match="kind must be linear or mlp"):
        probe(emb, design, kind="svm")


def test_colour_entropy_ranks_colour_blind_above_colour_coding():
    emb, design, colour = _blobs()
    blind = colour_entropy(emb, colour, k=4, seeds=(0, 1))
    # every blob mixes red and blue half and half: ln 2 in each cluster
    assert blind["mean"] == pytest.approx(np.log(2), abs=0.05) and blind["overall"] == pytest.approx(np.log(2))
    # an embedding whose blobs are the colours: each cluster is one colour
    coded = Embeddings(emb.ids, np.where((colour == "red").to_numpy()[:, None], 5.0, -5.0).astype(np.float32)
                       + np.random.default_rng(1).normal(0, 0.1, emb.matrix.shape).astype(np.float32), {})
    assert colour_entropy(coded, colour, k=2, seeds=(0,))["mean"] < 0.05
    with pytest.raises(InputError, match="k must be in 2.."):
        colour_entropy(emb, colour, k=1000)


def test_design_recall_by_hand_and_its_extremes():
    # the docstring's case, and a design group whose items all share one colour asks nothing
    design = np.array(["a", "a", "a", "a", "b", "c", "c"])
    colour = np.array(["red", "blue", "green", "red", "red", "red", "red"])
    r = design_recall(np.array([[1, 3, 4], [0, 2, 3], [5, 6, 4]]), np.array([0, 1, 5]), design, colour)
    assert r["recall"] == pytest.approx(0.75) and r["n_queries"] == 2 and r["hit"] == 1.0 and r["k"] == 3
    # an embedding that groups designs whatever the colour finds them all; one that groups colours, none
    emb, blob, colour2 = _blobs(n_per=10)
    from simlabel.graph import neighbours_for

    q = np.arange(len(emb.ids))
    by_design = neighbours_for(emb, 9, rows=q, kind="flat").neighbors
    assert design_recall(by_design, q, blob.to_numpy(), colour2.to_numpy())["recall"] == pytest.approx(1.0)
    coded = Embeddings(emb.ids, np.where((colour2 == "red").to_numpy()[:, None], 5.0, -5.0).astype(np.float32)
                       + np.random.default_rng(1).normal(0, 0.1, emb.matrix.shape).astype(np.float32), {})
    by_colour = neighbours_for(coded, 9, rows=q, kind="flat").neighbors
    assert design_recall(by_colour, q, blob.to_numpy(), colour2.to_numpy())["recall"] == 0.0
    with pytest.raises(InputError, match="another colour"):
        design_recall(np.array([[6]]), np.array([5]), design, colour)


def test_the_held_out_design_groups_never_reach_training():
    """A planted design group that the split holds out: training sees each of its rows as a product of its own,
    so the sampler never pairs them; the training half keeps its pairs."""
    from simlabel.catalog import Catalog
    from simlabel.experiments.ssl import SSLExperimentConfig, with_products
    from simlabel.ssl.train import SSLConfig, _Samples

    titles = [f"Brand Men Design{g} Tshirts" for g in range(8) for _ in range(2)] + ["Lone Shirt"]
    colours = ["Red", "Blue"] * 8 + ["Red"]
    table = pd.DataFrame({"id": [f"p{i}" for i in range(17)], "image": ["x.jpg"] * 17,
                          "title": [t.replace("Tshirts", f"{c} Tshirts") for t, c in zip(titles, colours)],
                          "base_colour": colours})
    for seed in (0, 1, 2):
        cat = with_products(Catalog(table, Path("."), None, {}), SSLExperimentConfig(design_seed=seed))
        t = cat.table
        assert (t["design_split"] == "held").sum() == 8 and (t["design_split"] == "train").sum() == 8
        held = t[t["design_split"] == "held"]
        assert held["design"].nunique() == 4 and held["product"].is_unique and (held["product"] == held["id"]).all()
        train = t[t["design_split"] == "train"]
        assert (train["product"] == train["design"]).all() and train["product"].nunique() == 4
        samples, rng = _Samples(cat, SSLConfig(product_col="product")), np.random.default_rng(seed)
        for i in np.flatnonzero((t["design_split"] == "held").to_numpy()):
            assert samples.partner(i, rng) is None, "a held-out row must have no other image of its product"
        for i in np.flatnonzero((t["design_split"] == "train").to_numpy()):
            j = samples.partner(i, rng)
            assert j is not None and t["design"].iloc[j] == t["design"].iloc[i] and j != i
    # the split is the seed's: the same seed gives the same halves, and the seeds do not all agree
    halves = [tuple(split_designs(t["design"], seed=sd)[1]) for sd in (0, 0, 1, 2, 3)]
    assert halves[0] == halves[1] and len(set(halves)) > 1
    hidden = hide_designs(pd.Series(["a", "a", "b", "b"]), pd.Series(["1", "2", "3", "4"]), ["b"])
    assert hidden.tolist() == ["a", "a", "3", "4"]


@pytest.mark.slow
def test_experiment_end_to_end_on_a_fashion_slice(tmp_path: Path):
    from simlabel.catalog import design_groups
    from simlabel.experiments.ssl import SSLExperimentConfig, probe_table, run_ssl_experiment, write_html
    from tests.helpers import check_page, dataset, slice_catalog

    df = slice_catalog("fashion-products", 120, tmp_path, stratify="sub_category")
    # and 16 design groups whole (colour variants of one title), for design retrieval
    full = slice_catalog("fashion-products", 10**6, tmp_path)
    groups = design_groups(full)
    firsts = groups[groups.duplicated(keep=False)].drop_duplicates().head(16)
    df = pd.concat([df, full[groups.isin(set(firsts))]]).drop_duplicates("id").reset_index(drop=True)
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    cfg = SSLExperimentConfig(variants=("pretrained", "skill", "skill-P"), epochs=1, steps_per_epoch=2, batch_size=8, global_size=64, local_size=32,
                              local_crops=2, train_blocks=1, probe_cols=("master_category",), clusters=4,
                              cluster_seeds=(0,), extra={"out_dim": 128, "head_hidden": 64, "head_bottleneck": 32})
    res = run_ssl_experiment(cat, cfg, out=tmp_path / "run", progress=False)
    assert set(res["variants"]) == {"pretrained", "skill", "skill-P"}
    split = res["design_split"]
    assert split["held_groups"] + split["train_groups"] == res["n_design_groups"] >= 16
    assert split["held_groups"] == round(res["n_design_groups"] / 2) and split["held_images"] >= 2 * split["held_groups"]
    for v in res["variants"].values():
        held = v["design"]["held"]
        assert held["n_queries"] == split["held_images"] and 0 <= held["recall"] <= 1 and held["k"] == 10
    assert res["variants"]["skill-P"]["training"]["resolved"] is not None
    assert json.loads((tmp_path / "run" / "ssl" / "skill-P" / "config.json").read_text())["options"]["product_col"] is None
    sk = res["variants"]["skill"]
    assert sk["training"]["steps"] == 2 and len(sk["training"]["curve"]) == 2
    for v in res["variants"].values():
        lin = v["probes"]["master_category"]["linear"]
        assert 0 <= lin["r95"] <= lin["r90"] <= 1 and 0 < lin["accuracy"] <= 1
        assert v["colour"]["entropy"]["mean"] > 0
    assert probe_table(res).shape == (3, 6)
    assert res["neighbours"]["skill"] and len(next(iter(res["neighbours"]["skill"].values()))) == 5
    # a second run reuses the trained model (same options) instead of training again
    mtime = (tmp_path / "run" / "ssl" / "skill" / "teacher.pt").stat().st_mtime_ns
    run_ssl_experiment(cat, cfg, out=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "ssl" / "skill" / "teacher.pt").stat().st_mtime_ns == mtime
    json.dumps(res)

    from simlabel.catalog import load_catalog

    page = write_html(res, tmp_path / "ssl.html", load_catalog(cat))
    facts = check_page(page, tmp_path / "shots")
    assert facts["images"] >= 12 and "Design R@10" in page.read_text()
    assert dataset("fashion-products")


def test_missing_labels_are_left_out_not_a_class():
    emb, design, _ = _blobs()
    gaps = design.copy().astype(object)
    gaps.iloc[::7] = np.nan
    gaps.iloc[1::7] = ""
    r = probe(emb, gaps)
    assert r["n_classes"] == 4 and r["n_train"] + r["n_test"] == len(design) - 2 * len(design[::7])
