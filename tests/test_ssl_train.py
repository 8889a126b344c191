"""simlabel.ssl.train: a kill-and-resume run, the end-to-end path to `embed --model skill:DIR`, bad input."""

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
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.errors import InputError
from simlabel.ssl import SSLConfig, ViewConfig, train_ssl
from simlabel.ssl.train import _monitor_warnings
from tests.helpers import ROOT, slice_catalog

runner = CliRunner()


def _tiny(**kw) -> SSLConfig:
    """A ViT of 2 blocks of width 16 on 32 px views: every step in milliseconds."""
    base = dict(backbone="vit-tiny", train_blocks="all", vit={"dim": 16, "depth": 2, "heads": 2, "patch": 8},
                views=ViewConfig(global_size=32, local_size=16, local_crops=2), batch_size=4, steps_per_epoch=4,
                out_dim=64, head_hidden=32, head_bottleneck=16, checkpoint_every=2, workers=1, task_col="sub_category",
                product_col="product", lr=1e-3)
    base.update(kw)
    return SSLConfig(**base)


@pytest.fixture
def ssl_catalog(tmp_path: Path) -> Path:
    from simlabel.catalog import design_groups

    df = slice_catalog("fashion-products", 24, tmp_path, stratify="sub_category")
    df["product"] = design_groups(df).to_numpy()
    df.loc[0:2, "product"] = "same-product"  # three images of one product, so positives pair up
    path = tmp_path / "catalog.csv"
    df.to_csv(path, index=False)
    return path


def test_kill_and_resume_reaches_the_uninterrupted_weights(ssl_catalog: Path, tmp_path: Path):
    cfg = _tiny()
    whole = train_ssl(ssl_catalog, tmp_path / "whole", cfg, device="cpu", progress=False)
    assert whole.steps == 4 and (tmp_path / "whole" / "teacher.pt").exists()

    killed = tmp_path / "killed"
    script = (
        "import torch, sys; torch.set_num_threads(1)\n"
        "from simlabel.ssl import SSLConfig, train_ssl\n"
        "import json; cfg = SSLConfig.from_dict(json.loads(sys.argv[1]))\n"
        "train_ssl(sys.argv[2], sys.argv[3], cfg, device='cpu', progress=False)\n"
    )
    env = {**os.environ, "SIMLABEL_TEST_KILL_AT": "ssl:checkpoint", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cfg.to_dict()), str(ssl_catalog), str(killed)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL right after the first checkpoint (step 2)
    assert not killed.exists() and (tmp_path / "killed.partial" / "checkpoint.pt").exists()
    assert torch.load(tmp_path / "killed.partial" / "checkpoint.pt", weights_only=False)["step"] == 2

    with pytest.raises(InputError, match="interrupted run at step 2: pass `resume`"):
        train_ssl(ssl_catalog, killed, cfg, device="cpu", progress=False)
    with pytest.raises(InputError, match="other options"):
        train_ssl(ssl_catalog, killed, _tiny(lr=5e-4), device="cpu", progress=False, resume=True)
    resumed = train_ssl(ssl_catalog, killed, cfg, device="cpu", progress=False, resume=True)
    assert resumed.steps == 4 and not (tmp_path / "killed.partial").exists()
    a = torch.load(tmp_path / "whole" / "teacher.pt", weights_only=True)
    b = torch.load(killed / "teacher.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


def test_split_run_and_resume_errors(ssl_catalog: Path, tmp_path: Path):
    out = tmp_path / "m"
    with pytest.raises(InputError, match="holds no checkpoint"):
        train_ssl(ssl_catalog, out, _tiny(), device="cpu", progress=False, resume=True)
    part = train_ssl(ssl_catalog, out, _tiny(), device="cpu", progress=False, max_steps=2)
    assert part.steps == 2 and not out.exists()
    fresh = train_ssl(ssl_catalog, out, _tiny(), device="cpu", progress=False, restart=True)
    assert fresh.steps == 4 and out.is_dir()
    with pytest.raises(InputError, match="`task_col` 'kind' is not a column"):
        train_ssl(ssl_catalog, tmp_path / "x", _tiny(task_col="kind"), device="cpu", progress=False)


def test_collapse_warnings():
    k = 64
    uniform = [{"entropy": np.log(k) * 0.99, "diversity": 0.8}] * 10
    assert "uniform" in _monitor_warnings(uniform, np.log(k))[0]
    one = [{"entropy": 0.1, "diversity": 1 / 32}] * 10
    assert "one prototype" in _monitor_warnings(one, np.log(k))[0]
    assert _monitor_warnings([{"entropy": 2.0, "diversity": 0.7}] * 10, np.log(k)) == []


@pytest.mark.slow
def test_end_to_end_efficientnet_to_embed(ssl_catalog: Path, tmp_path: Path):
    """The pretrained EfficientNet, last block trained over its ONNX trunk, then `simlabel embed --model skill:DIR`."""
    df = pd.read_csv(ssl_catalog, dtype=str, keep_default_na=False)
    bad = df.iloc[[3]].copy()
    bad["id"], bad["image"] = "bad-missing", str(tmp_path / "nope.jpg")
    cat = tmp_path / "with-bad.csv"
    pd.concat([df, bad]).to_csv(cat, index=False)
    cfg = SSLConfig(train_blocks=1, views=ViewConfig(global_size=64, local_size=32, local_crops=2), batch_size=25,
                    steps_per_epoch=2, out_dim=128, head_hidden=64, head_bottleneck=32, task_col="sub_category",
                    product_col="product")
    res = train_ssl(cat, tmp_path / "skill", cfg, device="cpu", progress=False)
    model = tmp_path / "skill"
    meta = json.loads((model / "config.json").read_text())
    assert meta["resolved"]["trunk_backend"] == "onnx" and meta["encoder"]["dim"] == 1280
    assert meta["options"]["task_col"] == "sub_category" and meta["seed"] == 0
    fails = pd.read_csv(model / "failures.csv")
    assert fails["id"].tolist() == ["bad-missing"] and fails["reason"].tolist() == ["missing"]
    assert res.images == 2 * 24  # the bad row left each of its batches, the run went on

    emb = tmp_path / "emb"
    r = runner.invoke(app, ["embed", str(ssl_catalog), "--model", f"skill:{model}", "--out", str(emb), "--no-progress"])
    assert r.exit_code == 0, r.output
    from simlabel.store import load_embeddings

    e = load_embeddings(emb)
    assert e.matrix.shape == (24, 1280) and np.allclose(np.linalg.norm(e.matrix, axis=1), 1, atol=1e-5)
    assert e.meta.get("model", "").startswith("skill:")

    # a classifier on SkiLL embeddings ships as one ONNX graph (its backbone, the head), as an EfficientNet one does
    from simlabel.export import check_export, export_classifier
    from simlabel.head_config import HeadConfig
    from simlabel.training import train

    labels = df[["id", "sub_category"]].rename(columns={"sub_category": "label"})
    train(emb, labels, config=HeadConfig(max_epochs=5, val_frac=0.0, device="cpu"), calibration="none",
          out=tmp_path / "head")
    shipped = export_classifier(tmp_path / "head", tmp_path / "skill.onnx")
    assert shipped.metadata["encoder"]["name"].startswith("skill:") and "before" in shipped.metadata["preprocess"]
    check = check_export(tmp_path / "skill.onnx", tmp_path / "head", ssl_catalog, n=8)
    assert check["images"] == 8 and max(check["max_abs_diff"].values()) < 1e-4, check

    # the ONNX export computes what the trained teacher's backbone computes
    from simlabel.encoders import get_image_encoder
    from simlabel.images import load_image
    from simlabel.ssl.train import _build

    enc = get_image_encoder(f"skill:{model}", "cpu")
    _, teacher = _build(cfg, "cpu")
    teacher.load_state_dict(torch.load(model / "teacher.pt", weights_only=True))
    teacher.eval()
    x = np.stack([enc.preprocess(load_image(p)) for p in df["image"][:3]])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(teacher.backbone(torch.from_numpy(x)), dim=-1).numpy()
    assert np.allclose(enc(x), ref, atol=1e-4)
    # it starts from the pretrained encoder and has moved from it (2 steps, the teacher by EMA: a little)
    pre = get_image_encoder("efficientnet-lite0", "cpu")
    gap = np.abs(enc(x) - pre(x)).max()
    assert 1e-6 < gap < 0.05


def test_skill_spec_errors(tmp_path: Path):
    from simlabel.encoders import get_image_encoder
    from simlabel.errors import ModelError

    with pytest.raises(InputError, match="no such model folder"):
        get_image_encoder(f"skill:{tmp_path / 'none'}", "cpu")
    (tmp_path / "half").mkdir()
    (tmp_path / "half.partial").mkdir()
    with pytest.raises(ModelError, match="unfinished: resume it with `simlabel ssl train --resume`"):
        get_image_encoder(f"skill:{tmp_path / 'half'}", "cpu")
    with pytest.raises(InputError, match="needs a name or path"):
        get_image_encoder("skill", "cpu")


def test_cli_ssl_train_prints_progress_lines_and_embeds(ssl_catalog: Path, tmp_path: Path):
    """`simlabel ssl train` in a log (not a terminal): one line per unit with the loss, rate and monitors."""
    out = tmp_path / "cli-model"
    args = ["ssl", "train", "--data", str(ssl_catalog), "--out", str(out), "--task-col", "sub_category", "--product-col", "product",
            "--train-blocks", "1", "--global-size", "64", "--local-size", "32", "--local-crops", "2", "--batch-size", "4",
            "--steps-per-epoch", "2", "--out-dim", "128", "--recipe", "gentle", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "ssl train: 2/2 steps" in res.output and "loss" in res.output and "H " in res.output and "KL " in res.output
    assert f"--model skill:{out}" in res.output
    # the recipe (gentle) sets what the command line leaves: its learning rate, and the blocks given
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["lr"] == 3e-4 and options["train_blocks"] == 1 and options["keep"] == 0.0
    kept = runner.invoke(app, [*args[:-1], "--out", str(tmp_path / "keep"), "--recipe", "keep", "--keep", "0.5",
                               "--no-progress"])
    assert kept.exit_code == 0, kept.output
    options = json.loads((tmp_path / "keep" / "config.json").read_text())["options"]
    assert options["keep"] == 0.5 and options["lr"] == 1e-3 and options["train_blocks"] == 1
    unknown = runner.invoke(app, [*args[:-1], "--out", str(tmp_path / "x"), "--recipe", "fast"])
    assert unknown.exit_code != 0 and "recipe" in unknown.output
    again = runner.invoke(app, args + ["--resume"])
    assert again.exit_code == 1 and "holds no checkpoint" in again.output and "already complete" in again.output
    bad = runner.invoke(app, [*args[:-1], "--task-col", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("error:") and "'nope' is not a column" in bad.output
    wrong = runner.invoke(app, [*args[:-1], "--design-from", "title"])
    assert wrong.exit_code == 1 and "--design-from takes TITLE_COL,COLOUR_COL" in wrong.output


def test_distillation_keeps_the_student_near_the_pretrained_encoder(ssl_catalog: Path, tmp_path: Path):
    """keep > 0: the un-jittered view's features are pulled to the frozen start's; the larger the weight, the
    nearer the trained backbone stays (a tiny ViT, its random start standing in for the pretrained one)."""
    from simlabel.images import load_image
    from simlabel.ssl.augment import make_views
    from simlabel.ssl.train import _build

    df = pd.read_csv(ssl_catalog, dtype=str)
    start = _build(_tiny(), "cpu")[0].backbone.eval()
    drift = {}
    for keep in (0.0, 50.0):
        cfg = _tiny(keep=keep, steps_per_epoch=8, lr=5e-3)
        res = train_ssl(ssl_catalog, tmp_path / f"k{keep:g}", cfg, device="cpu", progress=False)
        assert ("keep_loss" in res.history[-1]) == (keep > 0)
        trained = _build(cfg, "cpu")[0]  # the student: the network the loss trains (the EMA teacher follows it)
        trained.load_state_dict(torch.load(tmp_path / f"k{keep:g}" / "student.pt", weights_only=True))
        rng = np.random.default_rng(0)
        clean = [make_views(load_image(p), None, None, cfg.views, None, rng, clean=True)[-1] for p in df["image"][:8]]
        x = torch.from_numpy(np.stack(clean)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            drift[keep] = float((1 - torch.nn.functional.cosine_similarity(trained.backbone.eval()(x), start(x))).mean())
    assert drift[50.0] < 0.5 * drift[0.0], drift
    # the clean view is the product crop resized, no augmentation: the same image gives the same view
    img = load_image(df["image"][0])
    a = make_views(img, None, None, _tiny().views, None, np.random.default_rng(1), clean=True)[-1]
    b = make_views(img, None, None, _tiny().views, None, np.random.default_rng(2), clean=True)[-1]
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    from simlabel.errors import ConfigError

    with pytest.raises(ConfigError, match="keep"):
        _tiny(keep=1.0, export="projection")


@pytest.mark.slow
def test_the_projection_recipe_trains_a_head_on_the_frozen_encoder_and_embeds(ssl_catalog: Path, tmp_path: Path):
    """recipe projection: the pretrained EfficientNet frozen whole, an identity-initialised linear map trained by
    InfoNCE over SkiLL's views; the encoder is the teacher's map of the pretrained features, L2-normalised, and
    `simlabel embed --model skill:DIR` runs it."""
    from simlabel.encoders import get_image_encoder
    from simlabel.images import load_image
    from simlabel.ssl.recipes import recipe_options
    from simlabel.ssl.train import _build
    from simlabel.store import load_embeddings

    cfg = SSLConfig(views=ViewConfig(global_size=64, local_size=32, local_crops=2), batch_size=8, steps_per_epoch=3,
                    out_dim=128, head_hidden=64, head_bottleneck=32, task_col="sub_category", product_col="product",
                    **recipe_options("projection"))
    model = tmp_path / "proj"
    train_ssl(ssl_catalog, model, cfg, device="cpu", progress=False)
    start, teacher = _build(cfg, "cpu")
    teacher.load_state_dict(torch.load(model / "teacher.pt", weights_only=True))
    for (name, p0), p1 in zip(start.backbone.state_dict().items(), teacher.backbone.state_dict().values()):
        assert torch.allclose(p0, p1, rtol=0, atol=1e-5), f"{name} moved: the projection recipe must leave the encoder as it was"
    enc = get_image_encoder(f"skill:{model}", "cpu")
    df = pd.read_csv(ssl_catalog, dtype=str)
    x = np.stack([enc.preprocess(load_image(p)) for p in df["image"][:4]])
    with torch.no_grad():
        want = torch.nn.functional.normalize(teacher.head.mlp(teacher.backbone.eval()(torch.from_numpy(x))), dim=-1).numpy()
    assert enc.dim == 1280 and np.allclose(enc(x), want, atol=1e-4)
    # it trained: the map moved from the identity it started at
    assert not torch.allclose(teacher.head.mlp.weight, torch.eye(1280), atol=1e-6)
    r = runner.invoke(app, ["embed", str(ssl_catalog), "--model", f"skill:{model}", "--out", str(tmp_path / "emb"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    assert load_embeddings(tmp_path / "emb").matrix.shape == (24, 1280)


def test_info_nce_prefers_a_products_own_view_and_the_projector_starts_at_the_identity():
    from simlabel.ssl.contrastive import LinearProjector, info_nce_loss

    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=g)
    b = a + 0.05 * torch.randn(16, 8, generator=g)  # each row's positive: a near copy of it
    assert float(info_nce_loss(a, b)) < float(info_nce_loss(a, b[torch.randperm(16, generator=g)]))
    assert float(info_nce_loss(a, b)) == pytest.approx(float(info_nce_loss(b, a)), abs=1e-6)  # symmetric
    x = torch.randn(4, 8, generator=g)
    assert torch.allclose(LinearProjector(8)(x), x)
    with pytest.raises(ValueError, match="alike"):
        info_nce_loss(a, b[:3])
    from simlabel.errors import ConfigError

    with pytest.raises(ConfigError, match="infonce"):
        SSLConfig(projector="linear")

