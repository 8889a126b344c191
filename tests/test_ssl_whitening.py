"""The whitening recipe (simlabel.ssl.whitening): the closed-form map, its streamed sums, the fit over a catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.errors import InputError
from simlabel.ssl import SSLConfig, train_ssl
from simlabel.ssl.recipes import recipe_options
from simlabel.ssl.whitening import WhiteningProjector, WhiteningStats, learned_whitening, signed_power
from tests.helpers import ROOT, slice_catalog

runner = CliRunner()


def test_the_map_removes_the_view_directions_and_whitens_what_is_left():
    """By hand, in 3 dimensions: axis 0 is what a view changes (colour); axes 1 and 2 vary between images, axis 2
    also between a product's images. Removing r = 1 direction drops axis 0; the rest is scaled so the matching
    pairs' scatter is the identity, then rotated so the data's variance comes first."""
    views = np.diag([9.0, 0.04, 0.01])
    same = np.diag([9.0, 0.04, 0.25])  # the product pairs add variance along axis 2
    data = np.diag([9.0, 1.0, 1.0])
    W = learned_whitening(np.zeros(3), data, same, views, shrinkage=0.0, nuisance_dims=1)
    assert W.shape == (3, 2)
    assert np.allclose(W[0], 0)  # nothing of axis 0 reaches the embedding
    # whitened: axis 1 scaled by 1/sqrt(0.04) = 5, axis 2 by 1/sqrt(0.25) = 2; the data's variance 25 > 4 comes first
    assert np.allclose(np.abs(W[1:]), [[5.0, 0.0], [0.0, 2.0]])
    assert np.allclose(W.T @ same @ W, np.eye(2))
    cov = W.T @ data @ W
    assert np.allclose(cov, np.diag(np.diag(cov))) and cov[0, 0] >= cov[1, 1]
    # dims keeps the leading directions; shrinkage pulls the scatter towards a multiple of the identity
    assert learned_whitening(np.zeros(3), data, same, views, shrinkage=0.0, nuisance_dims=1, dims=1).shape == (3, 1)
    shrunk = learned_whitening(np.zeros(3), data, same, views, shrinkage=1.0, nuisance_dims=1)
    assert np.allclose(np.abs(shrunk[1:]) / np.abs(shrunk[1:]).max(), np.eye(2))
    with pytest.raises(InputError, match="nuisance_dims"):
        learned_whitening(np.zeros(3), data, same, views, nuisance_dims=3)
    with pytest.raises(InputError, match="dims"):
        learned_whitening(np.zeros(3), data, same, views, nuisance_dims=1, dims=3)
    with pytest.raises(InputError, match="singular"):
        learned_whitening(np.zeros(3), data, np.diag([1.0, 1.0, 0.0]), views, shrinkage=0.0, nuisance_dims=0)


def test_the_projector_is_the_formula():
    rng = np.random.default_rng(0)
    mean, W = rng.normal(size=5), rng.normal(size=(5, 3))
    f = np.abs(rng.normal(size=(4, 5)))
    got = WhiteningProjector(mean, W, 0.5)(torch.from_numpy(f).float()).detach().numpy()
    assert np.allclose(got, (signed_power(f, 0.5) - mean) @ W, atol=1e-5)


def _direct(f: np.ndarray, views: np.ndarray, codes: np.ndarray):
    """The covariances of the module docstring computed at once from every row."""
    mean = f.mean(0)
    data = (f - mean).T @ (f - mean) / len(f)
    d = ((f[:, None] - views) / 2).reshape(-1, f.shape[1])
    dev = [f[codes == c] - f[codes == c].mean(0) for c in np.unique(codes) if c >= 0 and (codes == c).sum() >= 2]
    e = np.concatenate(dev) if dev else np.zeros((0, f.shape[1]))
    return mean, data, (d.T @ d + e.T @ e) / (len(d) + len(e)), d.T @ d / len(d)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1, 4), min_size=3, max_size=30), st.lists(st.integers(1, 29), max_size=4),
       st.integers(0, 2**16))
def test_streamed_sums_equal_the_direct_covariances_wherever_the_blocks_cut(codes, cuts, seed):
    """Rows in product order (a group consecutive, -1: no product), cut into blocks anywhere: the sums give the
    covariances computed from all rows at once, a group split across blocks included."""
    codes = np.sort(np.array(codes))
    n = len(codes)
    rng = np.random.default_rng(seed)
    f, views = rng.normal(size=(n, 4)), rng.normal(size=(n, 2, 4))
    bounds = [0, *sorted({c for c in cuts if c < n}), n]
    stats = WhiteningStats(4)
    for a, b in zip(bounds[:-1], bounds[1:]):
        stats.add(f[a:b], views[a:b], codes[a:b])
        stats = WhiteningStats.from_state(stats.state_dict())  # a checkpoint between any two blocks
    stats.finish()
    for got, want in zip(stats.covariances(), _direct(f, views, codes)):
        assert np.allclose(got, want)


def test_stats_refuse_an_open_group_and_too_little():
    s = WhiteningStats(2)
    s.add(np.ones((2, 2)), np.zeros((2, 1, 2)), np.array([0, 0]))
    with pytest.raises(InputError, match="still open"):
        s.covariances()
    with pytest.raises(InputError, match="2\\+ images"):
        WhiteningStats(2).covariances()


@pytest.fixture
def white_catalog(tmp_path: Path) -> Path:
    from simlabel.catalog import design_groups

    df = slice_catalog("fashion-products", 24, tmp_path, stratify="sub_category")
    df["product"] = design_groups(df).to_numpy()
    df.loc[0:2, "product"] = "same-product"
    df.loc[5, "image"] = str(tmp_path / "missing.jpg")  # one unreadable image: recorded, the fit goes on
    path = tmp_path / "catalog.csv"
    df.to_csv(path, index=False)
    return path


def _cfg(**kw) -> SSLConfig:
    return SSLConfig(product_col="product", **{**recipe_options("whitening"), "batch_size": 8, "checkpoint_every": 1,
                                               "embed_size": 64, "nuisance_dims": 4, "workers": 1, **kw})


@pytest.mark.slow
def test_the_fit_on_a_real_slice_embeds_through_skill_and_resumes_after_a_kill(white_catalog: Path, tmp_path: Path):
    """recipe whitening on 24 fashion-products images: the pretrained EfficientNet untouched, the map fitted from
    the view pairs and the product groups; `skill:DIR` embeds (power, offset, map, L2) through ONNX Runtime; a fit
    killed after its first checkpoint resumes to the same map; the unreadable image is listed."""
    from simlabel.encoders import get_image_encoder
    from simlabel.images import load_image
    from simlabel.ssl.backbones import build_backbone
    from simlabel.store import load_embeddings

    cfg = _cfg()
    model = tmp_path / "white"
    res = train_ssl(white_catalog, model, cfg, device="cpu", progress=False)
    assert res.steps == 3 and res.images == 23
    failures = pd.read_csv(model / "failures.csv")
    assert failures["reason"].notna().all() and failures["image"].str.endswith("missing.jpg").tolist() == [True]
    fitted = torch.load(model / "whitening.pt", weights_only=False)
    assert fitted["n_images"] == 23 and fitted["n_view_pairs"] == 46 and fitted["n_grouped_images"] >= 3
    meta = json.loads((model / "config.json").read_text())
    assert meta["encoder"]["network"] == "whitening" and meta["encoder"]["image_size"] == 64

    enc = get_image_encoder(f"skill:{model}", "cpu")
    df = pd.read_csv(white_catalog, dtype=str)
    x = np.stack([enc.preprocess(load_image(p)) for p in df["image"][:4]])
    with torch.no_grad():
        f = build_backbone("efficientnet-lite0", train_blocks=0).eval()(torch.from_numpy(x)).numpy().astype(np.float64)
    y = (signed_power(f, 0.5) - fitted["mean"]) @ fitted["weight"]
    want = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert enc.dim == 1276 and np.allclose(enc(x), want, atol=1e-4)

    killed = tmp_path / "killed"
    script = (
        "import sys, json; from simlabel.ssl import SSLConfig, train_ssl\n"
        "train_ssl(sys.argv[2], sys.argv[3], SSLConfig.from_dict(json.loads(sys.argv[1])), device='cpu', progress=False)\n"
    )
    env = {**os.environ, "SIMLABEL_TEST_KILL_AT": "ssl:checkpoint", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cfg.to_dict()), str(white_catalog), str(killed)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert torch.load(tmp_path / "killed.partial" / "checkpoint.pt", weights_only=False)["step"] == 1
    with pytest.raises(InputError, match="other options"):
        train_ssl(white_catalog, killed, _cfg(shrinkage=0.2), device="cpu", progress=False, resume=True)
    train_ssl(white_catalog, killed, cfg, device="cpu", progress=False, resume=True)
    again = torch.load(killed / "whitening.pt", weights_only=False)
    assert np.allclose(again["weight"], fitted["weight"]) and np.allclose(again["mean"], fitted["mean"])

    r = runner.invoke(app, ["embed", str(white_catalog), "--model", f"skill:{model}", "--out", str(tmp_path / "emb"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    assert load_embeddings(tmp_path / "emb").matrix.shape == (23, 1276)


def test_cli_ssl_train_runs_the_whitening_recipe_by_default(white_catalog: Path, tmp_path: Path):
    out = tmp_path / "cli-white"
    r = runner.invoke(app, ["ssl", "train", "--data", str(white_catalog), "--out", str(out), "--product-col", "product",
                            "--embed-size", "64", "--batch-size", "12", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "fitted the whitening on 23 images and 2 views of each" in r.output and "1 unreadable image" in r.output
    assert f"--model skill:{out}" in r.output
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["objective"] == "whitening" and options["batch_size"] == 12 and options["embed_size"] == 64


def test_the_experiments_whitening_variants():
    from simlabel.experiments.ssl import SSLExperimentConfig, variant_config

    cfg = SSLExperimentConfig(variants=("skill-white", "skill-white-P", "dino-white"))
    skill, alone, dino = (variant_config(v, cfg) for v in cfg.variants)
    assert skill.objective == alone.objective == dino.objective == "whitening"
    assert skill.product_col == "product" and alone.product_col is None and dino.product_col is None
    assert skill.views.preprocess == "product-crop" and skill.views.p_gray == 0.5
    assert dino.views.preprocess == "none" and dino.views.p_gray == 0.2 and dino.views.p_solarize == 0.2
    assert skill.batch_size == 64 and skill.embed_size == 288
