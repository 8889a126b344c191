"""Shared fixtures: real slices of ../shared/datasets with planted bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not write into the user's cache; one cache per session keeps the
    # ONNX export to a single time.
    if "SIMLABEL_TEST_KEEP_CACHE" not in os.environ:
        os.environ["SIMLABEL_CACHE"] = str(tmp_path_factory.mktemp("simlabel-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The heads in these tests are tiny: with torch's default of one thread per core, each small op
    # pays OpenMP hand-offs, and on a shared 2-core machine those waits dominate (several x slower).
    import torch

    torch.set_num_threads(1)


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not (path / "catalog.csv").exists():
        pytest.skip(f"shared dataset {name} not found at {path}")
    return path


def slice_catalog(name: str, n: int, dest: Path, *, stratify: str | None = None) -> pd.DataFrame:
    """The first ``n`` rows (or ``n`` spread over ``stratify`` groups) with absolute image paths."""
    root = dataset(name)
    df = pd.read_csv(root / "catalog.csv", dtype=str, keep_default_na=False)
    if stratify:
        # round-robin over the groups, so every class is present and the slice has n rows
        order = df.groupby(stratify).cumcount()
        df = df.assign(_r=order).sort_values(["_r", stratify], kind="stable").head(n).drop(columns="_r")
    else:
        df = df.head(n)
    df = df.copy()
    df["image"] = [str(root / p) for p in df["image"]]
    dest.mkdir(parents=True, exist_ok=True)
    return df.reset_index(drop=True)


def plant_bad_files(dest: Path, good_image: str) -> list[dict]:
    """Bad files of every kind we promise to survive, plus CMYK and RGBA images that must embed."""
    bad = dest / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    data = Path(good_image).read_bytes()
    (bad / "corrupt.jpg").write_bytes(data[:200] + b"\x00" * 50 + b"garbage" * 40)
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("<html>404 not found</html>\n")
    with Image.open(good_image) as im:
        im.convert("CMYK").save(bad / "cmyk.jpg")
        rgba = im.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(bad / "rgba.png")
    return [
        {"id": "bad-corrupt", "image": str(bad / "corrupt.jpg"), "expect": "fail"},
        {"id": "bad-truncated", "image": str(bad / "truncated.jpg"), "expect": "truncated"},
        {"id": "bad-empty", "image": str(bad / "empty.jpg"), "expect": "empty"},
        {"id": "bad-text", "image": str(bad / "text.jpg"), "expect": "not-an-image"},
        {"id": "bad-missing", "image": str(bad / "does-not-exist.jpg"), "expect": "missing"},
        {"id": "ok-cmyk", "image": str(bad / "cmyk.jpg"), "expect": "ok"},
        {"id": "ok-rgba", "image": str(bad / "rgba.png"), "expect": "ok"},
    ]


@pytest.fixture
def clothing_slice(tmp_path: Path) -> Path:
    """40 real clothing-small images (4 per class, with splits) + planted bad files, as catalog.csv."""
    df = slice_catalog("clothing-small", 40, tmp_path, stratify="label")
    planted = pd.DataFrame(plant_bad_files(tmp_path, df["image"].iloc[0])).drop(columns="expect")
    planted["label"] = "dress"
    planted["split"] = "train"
    out = pd.concat([df, planted], ignore_index=True)
    path = tmp_path / "catalog.csv"
    out.to_csv(path, index=False)
    return path


@pytest.fixture
def fashion_slice(tmp_path: Path) -> Path:
    """40 real fashion-products rows with titles, as catalog.csv."""
    df = slice_catalog("fashion-products", 40, tmp_path, stratify="master_category")
    path = tmp_path / "catalog.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def image_encoder():
    """The default EfficientNet-Lite0 encoder (ONNX Runtime), built once per session."""
    from simlabel.encoders import get_image_encoder

    return get_image_encoder("efficientnet-lite0", "cpu")

