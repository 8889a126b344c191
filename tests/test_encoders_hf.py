"""Tests for the Hugging Face CLIP / DINO encoders.

No network: tiny randomly initialised models (plus image processors and a tiny
byte-level CLIP tokenizer) are written with ``save_pretrained`` into temporary
directories and loaded back through the public functions, i.e. the same code
path a user takes with a real checkpoint directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from simlabel.encoders.hf import (  # noqa: E402
    CLIPImageEncoder,
    CLIPTextEncoder,
    DINOImageEncoder,
    load_clip,
)

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
IMAGES_DIR = DATASETS / "fashion-products" / "images"

PROJ_DIM = 16
HIDDEN = 32
SIDE = 32
TEXTS = ["a red cotton shirt", "blue jeans", "", "a photo of a watch " * 20]


# --------------------------------------------------------------------------- #
# tiny model fixtures
# --------------------------------------------------------------------------- #


def _tiny_clip_tokenizer():
    """A CLIP BPE tokenizer with the 256 byte-level symbols (and their ``</w>`` forms), no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def _pil_processor(name: str):
    """The PIL-backend class in transformers 5.x (no torchvision), the plain one before."""
    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPModel

    out = tmp_path_factory.mktemp("tiny-clip")
    tok = _tiny_clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=SIDE,
            patch_size=8,
        ),
        projection_dim=PROJ_DIM,
    )
    CLIPModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    _pil_processor("CLIPImageProcessor")(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    out = tmp_path_factory.mktemp("tiny-dinov2")
    torch.manual_seed(1)
    config = Dinov2Config(
        hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIDE, patch_size=8
    )
    Dinov2Model(config).save_pretrained(out)
    _pil_processor("BitImageProcessor")(
        size={"shortest_edge": SIDE + 4}, crop_size={"height": SIDE, "width": SIDE}
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vit_dino_dir(tmp_path_factory) -> Path:
    """DINO v1 checkpoints are plain ViTModel weights with a ViTImageProcessor."""
    from transformers import ViTConfig, ViTModel

    out = tmp_path_factory.mktemp("tiny-dino-v1")
    torch.manual_seed(2)
    config = ViTConfig(
        hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIDE, patch_size=8
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(out)
    _pil_processor("ViTImageProcessor")(size={"height": SIDE, "width": SIDE}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip_pair(clip_dir):
    return load_clip(str(clip_dir), device="cpu")


@pytest.fixture(scope="module")
def dino(dino_dir):
    return DINOImageEncoder(str(dino_dir), device="cpu")


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 3, SIDE, SIDE)).astype(np.float32)


def _real_jpeg() -> Image.Image:
    if not IMAGES_DIR.is_dir():
        pytest.skip(f"dataset images not present at {IMAGES_DIR}")
    jpgs = sorted(IMAGES_DIR.glob("*.jpg"))[:1]
    if not jpgs:
        pytest.skip(f"no JPEGs in {IMAGES_DIR}")
    with Image.open(jpgs[0]) as im:
        return im.convert("RGB")


def _assert_embeddings(e: np.ndarray, n: int, dim: int) -> None:
    assert e.shape == (n, dim)
    assert e.dtype == np.float32
    assert np.all(np.isfinite(e))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- #
# CLIP
# --------------------------------------------------------------------------- #


def test_clip_attributes(clip_pair, clip_dir):
    image, text = clip_pair
    assert isinstance(image, CLIPImageEncoder) and isinstance(text, CLIPTextEncoder)
    for enc in (image, text):
        assert enc.name == f"clip:{clip_dir}"
        assert enc.dim == PROJ_DIM
        assert enc.version.startswith("local-") and len(enc.version) > len("local-")
    assert image.version == text.version
    assert image.image_size == SIDE
    assert image.model is text.model  # loaded once, shared
    assert not image.model.training
    assert image.describe() == {"model": image.name, "dim": PROJ_DIM, "version": image.version, "modality": "image"}
    assert text.describe()["modality"] == "text"


def test_clip_image_embeddings(clip_pair, pixels):
    image, _ = clip_pair
    e = image(pixels)
    _assert_embeddings(e, 3, PROJ_DIM)
    np.testing.assert_array_equal(e, image(pixels))  # deterministic
    assert image(pixels[:0]).shape == (0, PROJ_DIM)
    with pytest.raises(ValueError, match="expected pixels of shape"):
        image(pixels[0])  # not a batch


def test_clip_text_embeddings(clip_pair):
    _, text = clip_pair
    e = text(TEXTS)  # includes an empty string and one longer than max_length
    _assert_embeddings(e, len(TEXTS), PROJ_DIM)
    np.testing.assert_array_equal(e, text(TEXTS))
    assert text([]).shape == (0, PROJ_DIM)
    # internal batching gives the same rows as one batch
    old = text.batch_size
    try:
        text.batch_size = 1
        np.testing.assert_allclose(text(TEXTS), e, atol=1e-5)
    finally:
        text.batch_size = old
    with pytest.raises(TypeError, match="expected a list of strings"):
        text("not a list")


def test_clip_image_and_text_share_the_projection_space(clip_pair, clip_dir, pixels):
    """Cosine(image, text) equals the dot product of the model's own normalised projected features."""
    from transformers import AutoTokenizer, CLIPModel

    image, text = clip_pair
    sims = image(pixels) @ text(TEXTS).T

    ref = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)

    def pooled(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    with torch.inference_mode():
        img = pooled(ref.get_image_features(pixel_values=torch.from_numpy(pixels)))
        enc = tok(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        txt = pooled(ref.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    np.testing.assert_allclose(sims, (img @ txt.T).numpy(), atol=1e-5)


def test_clip_towers_built_separately_match_load_clip(clip_pair, clip_dir, pixels):
    image, text = clip_pair
    image2 = CLIPImageEncoder(str(clip_dir), device="cpu")
    text2 = CLIPTextEncoder(str(clip_dir), device="cpu")
    assert image2.version == image.version and text2.dim == text.dim
    np.testing.assert_allclose(image2(pixels), image(pixels), atol=1e-6)
    np.testing.assert_allclose(text2(TEXTS), text(TEXTS), atol=1e-6)


def test_clip_preprocess_real_jpeg(clip_pair):
    image, text = clip_pair
    jpeg = _real_jpeg()
    x = image.preprocess(jpeg)
    assert x.shape == (3, image.image_size, image.image_size)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, image.preprocess(jpeg))
    gray = image.preprocess(jpeg.convert("L"))  # non-RGB input is converted
    assert gray.shape == x.shape
    e = image(np.stack([x, gray]))
    _assert_embeddings(e, 2, PROJ_DIM)
    assert (e @ text(["a shirt"]).T).shape == (2, 1)


# --------------------------------------------------------------------------- #
# DINO
# --------------------------------------------------------------------------- #


def test_dinov2_attributes_and_embeddings(dino, dino_dir, pixels):
    from transformers import Dinov2Model

    assert dino.name == f"dino:{dino_dir}"
    assert dino.dim == HIDDEN
    assert dino.image_size == SIDE
    assert dino.version.startswith("local-")
    assert DINOImageEncoder(str(dino_dir), device="cpu").version == dino.version  # stable
    e = dino(pixels)
    _assert_embeddings(e, 3, HIDDEN)
    np.testing.assert_array_equal(e, dino(pixels))
    # CLS token of the (final-layernormed) last_hidden_state
    ref = Dinov2Model.from_pretrained(dino_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        cls = ref(pixel_values=torch.from_numpy(pixels)).last_hidden_state[:, 0]
    np.testing.assert_allclose(e, torch.nn.functional.normalize(cls, dim=-1).numpy(), atol=1e-5)


def test_dino_preprocess_real_jpeg(dino):
    x = dino.preprocess(_real_jpeg())
    assert x.shape == (3, dino.image_size, dino.image_size)
    assert x.dtype == np.float32
    _assert_embeddings(dino(x[None]), 1, HIDDEN)


def test_dino_v1_vit_checkpoint(vit_dino_dir, pixels):
    enc = DINOImageEncoder(str(vit_dino_dir), device="cpu")
    assert type(enc.model).__name__ == "ViTModel"
    assert enc.dim == HIDDEN and enc.image_size == SIDE
    _assert_embeddings(enc(pixels), 3, HIDDEN)
    x = enc.preprocess(Image.new("RGB", (50, 20), (200, 10, 10)))
    assert x.shape == (3, SIDE, SIDE)


def test_versions_differ_between_checkpoints(clip_pair, dino):
    assert clip_pair[0].version != dino.version


# --------------------------------------------------------------------------- #
# errors: no network needed, and no hanging on it
# --------------------------------------------------------------------------- #


def test_missing_local_path_raises_value_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no" / "such" / "model"
    for build in (lambda s: load_clip(s, "cpu"), lambda s: DINOImageEncoder(s, "cpu")):
        with pytest.raises(ValueError, match="no such local directory"):
            build(str(missing))


def test_unknown_hub_id_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="could not load") as info:
        load_clip("simlabel-test-nobody/no-such-model-xyz", "cpu")
    msg = str(info.value)
    assert "simlabel-test-nobody/no-such-model-xyz" in msg
    assert "network" in msg and "local directory" in msg
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(RuntimeError, match="network"):
        DINOImageEncoder("simlabel-test-nobody/no-such-model-xyz", "cpu")
    assert time.monotonic() - t0 < 15


def test_incomplete_local_dir_raises_clear_errors(tmp_path, clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        DINOImageEncoder(str(empty), "cpu")
    partial = tmp_path / "weights-only"
    partial.mkdir()
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy2(clip_dir / f, partial / f)
    with pytest.raises(RuntimeError, match="tokenizer"):
        load_clip(str(partial), "cpu")


def test_hub_id_from_local_cache_records_commit(tmp_path, clip_dir):
    """A hub id resolved from the HF cache (offline) loads, and its version names the snapshot commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--simlabel-test--tiny-clip"
    shutil.copytree(clip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = textwrap.dedent(
        """
        from simlabel.encoders.hf import load_clip
        image, text = load_clip("simlabel-test/tiny-clip", "cpu")
        print("VERSION", image.version, image.name, text(["x"]).shape)
        """
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    env.pop("HF_HOME", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("VERSION")][0]
    assert line == f"VERSION simlabel-test/tiny-clip@{commit} clip:simlabel-test/tiny-clip (1, {PROJ_DIM})"


# ---------------------------------------------------------------------------
# through the embed pipeline and the CLI, as a user names them
# ---------------------------------------------------------------------------


def test_embed_with_clip_and_dino_specs(clip_dir, dino_dir, fashion_slice, tmp_path):
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.store import load_embeddings, read_metadata

    runner = CliRunner()
    out = tmp_path / "clip"
    res = runner.invoke(app, ["embed", str(fashion_slice), "--out", str(out), "--model", f"clip:{clip_dir}",
                              "--text-col", "title", "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ids, img = load_embeddings(out)
    tids, txt = load_embeddings(out / "text")
    # CLIP's text tower is the default text model with a CLIP image model: one space, one width
    assert img.shape == (40, 16) and txt.shape == (40, 16) and list(ids) == list(tids)
    assert read_metadata(out)["model"] == f"clip:{clip_dir}" and read_metadata(out / "text")["model"] == f"clip:{clip_dir}"
    res = runner.invoke(app, ["embed", str(fashion_slice), "--out", str(tmp_path / "dino"), "--model", f"dino:{dino_dir}",
                              "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert load_embeddings(tmp_path / "dino")[1].shape == (40, 32)


@pytest.mark.parametrize("family", ["clip", "dino"])
def test_a_classifier_on_clip_or_dino_embeddings_exports_as_one_graph(family, clip_dir, dino_dir, fashion_slice, tmp_path):
    """simlabel export: the image tower's ONNX export joined to the head, equal to the model on real images."""
    from simlabel.embedding import embed
    from simlabel.export import check_export, export_classifier, read_exported
    from simlabel.head_config import HeadConfig
    from simlabel.training import train

    spec = f"{family}:{clip_dir if family == 'clip' else dino_dir}"
    embed(fashion_slice, tmp_path / "emb", model=spec, device="cpu", progress=False, cache=False,
          text_col="title" if family == "clip" else None)
    table = pd.read_csv(fashion_slice, dtype=str)[["id", "master_category"]].rename(columns={"master_category": "label"})
    train(tmp_path / "emb", table, config=HeadConfig(max_epochs=5, val_frac=0.0, device="cpu"), calibration="none",
          out=tmp_path / "head")
    export_classifier(tmp_path / "head", tmp_path / "c.onnx")
    meta = read_exported(tmp_path / "c.onnx")
    assert meta["encoder"]["name"] == spec and meta["preprocess"]["image_size"] == SIDE
    check = check_export(tmp_path / "c.onnx", tmp_path / "head", fashion_slice, n=10)
    assert check["images"] == 10 and max(check["max_abs_diff"].values()) < 1e-4, check
    if family == "clip":  # CLIP's text tower has no export here: an image+title model says so and writes nothing
        from simlabel.errors import InputError

        train(tmp_path / "emb", table, text_emb=tmp_path / "emb" / "text", inputs="image+text",
              config=HeadConfig(max_epochs=5, val_frac=0.0, device="cpu"), calibration="none", out=tmp_path / "both")
        with pytest.raises(InputError, match="cannot export"):
            export_classifier(tmp_path / "both", tmp_path / "both.onnx")
        assert not (tmp_path / "both.onnx").exists()


# --------------------------------------------------------------------------- #
# the towers on the other engines
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_clip_and_dino_towers_export_to_onnx_and_run_on_the_engines(clip_dir, dino_dir, vit_dino_dir, backend, tmp_path,
                                                                     monkeypatch):
    from simlabel.engines import available, make_engine

    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, SIDE, SIDE)).astype(np.float32)  # another batch size than the export's
    for enc in (CLIPImageEncoder(str(clip_dir), device="cpu"), DINOImageEncoder(str(dino_dir), device="cpu"),
                DINOImageEncoder(str(vit_dino_dir), device="cpu")):
        path = enc.onnx_model()
        assert path is not None and path.exists() and path.parent.parent == tmp_path
        assert enc.onnx_model() == path  # exported once
        want = enc(x)
        enc.use_engine(make_engine(backend, "fp32", path, 1), backend, "fp32")
        got = enc(x)
        _assert_embeddings(got, 5, enc.dim)
        np.testing.assert_allclose(got, want, atol=2e-4)  # fp32 on another engine: the same vectors
        assert enc.backend == backend and "/int8" not in enc.version


def test_embed_runs_a_dino_tower_on_the_engine_asked_for(dino_dir, fashion_slice, tmp_path, monkeypatch):
    from simlabel.embedding import embed
    from simlabel.engines import available
    from simlabel.store import load_embeddings

    if not available("openvino"):
        pytest.skip("openvino is not installed")
    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path / "cache"))
    torch_run = embed(fashion_slice, tmp_path / "torch", model=f"dino:{dino_dir}", device="cpu", backend="torch",
                      progress=False, cache=False)
    ov_run = embed(fashion_slice, tmp_path / "ov", model=f"dino:{dino_dir}", device="cpu", backend="openvino",
                   precision="fp32", progress=False, cache=False)
    assert torch_run.engine == {} or torch_run.engine.get("backend") in (None, "torch")
    assert (ov_run.engine["backend"], ov_run.engine["precision"]) == ("openvino", "fp32")
    a, b = load_embeddings(tmp_path / "torch"), load_embeddings(tmp_path / "ov")
    assert list(a.ids) == list(b.ids) and len(a.ids) == 40
    np.testing.assert_allclose(b.matrix, a.matrix, atol=2e-4)
