"""Shared fixtures: real slices of ../shared/datasets with planted bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import plant_bad_files, slice_catalog


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

