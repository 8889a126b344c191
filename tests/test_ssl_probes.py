"""simlabel.ssl.probes and the experiment: probes on separable data, colour entropy, an end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError
from simlabel.ssl.probes import colour_entropy, probe
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


@pytest.mark.slow
def test_experiment_end_to_end_on_a_fashion_slice(tmp_path: Path):
    from simlabel.experiments.ssl import SSLExperimentConfig, probe_table, run_ssl_experiment, write_html
    from tests.helpers import check_page, dataset, slice_catalog

    df = slice_catalog("fashion-products", 150, tmp_path, stratify="sub_category")
    cat = tmp_path / "catalog.csv"
    df.to_csv(cat, index=False)
    cfg = SSLExperimentConfig(variants=("pretrained", "skill"), epochs=1, steps_per_epoch=2, batch_size=8, global_size=64, local_size=32,
                              local_crops=2, train_blocks=1, probe_cols=("master_category",), clusters=4,
                              cluster_seeds=(0,), extra={"out_dim": 128, "head_hidden": 64, "head_bottleneck": 32})
    res = run_ssl_experiment(cat, cfg, out=tmp_path / "run", progress=False)
    assert set(res["variants"]) == {"pretrained", "skill"}
    sk = res["variants"]["skill"]
    assert sk["training"]["steps"] == 2 and len(sk["training"]["curve"]) == 2
    for v in res["variants"].values():
        lin = v["probes"]["master_category"]["linear"]
        assert 0 <= lin["r95"] <= lin["r90"] <= 1 and 0 < lin["accuracy"] <= 1
        assert v["colour"]["entropy"]["mean"] > 0
    assert probe_table(res).shape == (2, 6)
    assert res["neighbours"]["skill"] and len(next(iter(res["neighbours"]["skill"].values()))) == 5
    # a second run reuses the trained model (same options) instead of training again
    mtime = (tmp_path / "run" / "ssl" / "skill" / "teacher.pt").stat().st_mtime_ns
    run_ssl_experiment(cat, cfg, out=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "ssl" / "skill" / "teacher.pt").stat().st_mtime_ns == mtime
    json.dumps(res)

    from simlabel.catalog import load_catalog

    page = write_html(res, tmp_path / "ssl.html", load_catalog(cat))
    facts = check_page(page, tmp_path / "shots")
    assert facts["images"] >= 12
    assert dataset("fashion-products")


def test_missing_labels_are_left_out_not_a_class():
    emb, design, _ = _blobs()
    gaps = design.copy().astype(object)
    gaps.iloc[::7] = np.nan
    gaps.iloc[1::7] = ""
    r = probe(emb, gaps)
    assert r["n_classes"] == 4 and r["n_train"] + r["n_test"] == len(design) - 2 * len(design[::7])
