from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simlabel.encoders import (
    get_image_encoder,
    get_text_encoder,
    is_text_model,
    parse_spec,
    resolve_device,
)
from simlabel.images import load_image
from tests.helpers import dataset


def real_batch(encoder, n: int = 8) -> np.ndarray:
    root = dataset("clothing-small") / "images"
    files = sorted(root.glob("*.jpg"))[:n]
    return np.stack([encoder.preprocess(load_image(f)) for f in files])


def test_onnx_and_torch_agree_on_real_images(image_encoder) -> None:
    torch_encoder = get_image_encoder("efficientnet-lite0", "cpu", backend="torch")
    assert image_encoder.backend == "onnx" and torch_encoder.backend == "torch"
    x = real_batch(image_encoder)
    a, b = image_encoder(x), torch_encoder(x)
    assert a.shape == (8, 1280) and a.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    fa, fb = image_encoder.features(x), torch_encoder.features(x)
    assert np.abs(fa - fb).max() / np.abs(fb).max() < 1e-4


def test_embeddings_are_unit_norm_and_discriminative(image_encoder) -> None:
    root = dataset("clothing-small")
    import pandas as pd

    df = pd.read_csv(root / "catalog.csv")
    shoes = df[df.label == "shoes"].image.head(4)
    pants = df[df.label == "pants"].image.head(4)
    x = np.stack([image_encoder.preprocess(load_image(root / p)) for p in list(shoes) + list(pants)])
    e = image_encoder(x)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    sim = e @ e.T
    within = (sim[:4, :4].sum() - 4 + sim[4:, 4:].sum() - 4) / 24
    between = sim[:4, 4:].mean()
    # ImageNet features put shoes with shoes and pants with pants
    assert within > between + 0.05


def test_onnx_export_is_cached(image_encoder) -> None:
    path = image_encoder.onnx_path()
    assert path.exists() and path.suffix == ".onnx"
    mtime = path.stat().st_mtime_ns
    get_image_encoder("efficientnet-lite0", "cpu")
    assert path.stat().st_mtime_ns == mtime  # not exported again


def test_minilm_offline_and_semantic() -> None:
    enc = get_text_encoder("minilm", "cpu")
    assert enc.dim == 384 and enc.name == "minilm"
    e = enc(["Turtle Check Men Navy Blue Shirt", "navy blue shirt for men", "red running shoes"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert enc([]).shape == (0, 384)


def test_spec_parsing_and_errors() -> None:
    assert parse_spec("clip:openai/clip-vit-base-patch32") == ("clip", "openai/clip-vit-base-patch32")
    assert parse_spec("efficientnet-lite0") == ("efficientnet-lite0", None)
    assert is_text_model("minilm") and is_text_model("clip:x") and not is_text_model("dino:x")
    with pytest.raises(ValueError, match="unknown model"):
        parse_spec("resnet50")
    with pytest.raises(ValueError, match="needs a name or path"):
        parse_spec("clip:")
    with pytest.raises(ValueError, match="text model"):
        get_image_encoder("minilm")


def test_device_resolution() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_custom_weights_path_is_used(tmp_path: Path) -> None:
    import torch

    from simlabel.encoders.efficientnet import default_weights_path

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    state = {k: (v * 0 if k == "_conv_head.weight" else v) for k, v in state.items()}
    torch.save(state, tmp_path / "zeroed.pth")
    enc = get_image_encoder(f"efficientnet-lite0:{tmp_path / 'zeroed.pth'}", "cpu", backend="torch")
    assert "zeroed.pth" in enc.name and enc.version != get_image_encoder("efficientnet-lite0", "cpu", backend="torch").version
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        get_image_encoder(f"efficientnet-lite0:{tmp_path / 'missing.pth'}", "cpu")
