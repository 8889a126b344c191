"""Helpers the tests share: real slices of ../shared/datasets, planted bad files, small fixed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"

#: A hand-made similarity over 4 classes. With K = 2 the neighbours are
#:   0: 1 (.8), 2 (.5)     1: 0 (.8), 3 (.6)     2: 0 (.5), 3 (.4)     3: 1 (.6), 2 (.4)
S4 = np.array(
    [
        [1.0, 0.8, 0.5, 0.2],
        [0.8, 1.0, 0.3, 0.6],
        [0.5, 0.3, 1.0, 0.4],
        [0.2, 0.6, 0.4, 1.0],
    ]
)
NBR4 = [[1, 2], [0, 3], [0, 3], [1, 2]]

#: a small label tree: paths of 6 classes from below the root
TREE = [
    ("Apparel", "Topwear", "Tshirts"),  # 0
    ("Apparel", "Topwear", "Shirts"),  # 1 sibling of 0
    ("Apparel", "Bottomwear", "Jeans"),  # 2 cousin of 0 and 1
    ("Apparel", "Dresses"),  # 3 shallower
    ("Footwear", "Shoes", "Casual Shoes"),  # 4 other top level
    ("Accessories", "Watches"),  # 5
]


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


def embedded_fashion_types(dest: Path, n: int, types: list[str], per_type: int, image_encoder) -> pd.DataFrame:
    """The first ``per_type`` rows of each article type in ``types`` among fashion-products' first ``n``,
    written to ``dest/catalog.csv`` and embedded into ``dest/emb``."""
    from simlabel.embedding import embed

    df = slice_catalog("fashion-products", n, dest)
    df = df[df["article_type"].isin(types)].groupby("article_type").head(per_type).reset_index(drop=True)
    df.to_csv(dest / "catalog.csv", index=False)
    embed(dest / "catalog.csv", dest / "emb", image_encoder=image_encoder, progress=False)
    return df


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


CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")


def chromium() -> str:
    """Debian's chromium (never `playwright install`: it downloads a browser). Skips without it."""
    import shutil

    pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is not installed")
    found = next((p for p in CHROMIUM_PATHS if Path(p).exists()), None) or shutil.which("chromium")
    if not found:
        pytest.skip("no chromium browser (apt-get install -y chromium): page checks skipped")
    return found


def check_page(page: Path, shots: Path, *, width: int = 1280) -> dict:
    """Load an HTML page in headless Chromium as a user would and assert it reads well: no broken
    image (every <img> decoded, natural width > 0), no horizontal overflow of the page body (wide
    tables scroll inside it). Keeps a full-page screenshot in ``shots``; returns what it measured."""
    from playwright.sync_api import sync_playwright

    exe = chromium()
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": width, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(Path(page).resolve().as_uri())
            tab.wait_for_load_state("load")
            facts = tab.evaluate(
                """() => ({
                    images: document.images.length,
                    broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60)),
                    bodyWidth: document.body.scrollWidth,
                    viewport: window.innerWidth,
                    missing: document.querySelectorAll('.missing').length,
                    title: document.title,
                })"""
            )
            tab.screenshot(path=str(shots / (Path(page).stem + ".png")), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert facts["broken"] == [], f"{page}: broken images {facts['broken'][:5]}"
    assert facts["bodyWidth"] <= facts["viewport"], f"{page}: the body overflows ({facts['bodyWidth']} > {facts['viewport']} px)"
    assert (shots / (Path(page).stem + ".png")).stat().st_size > 0
    return facts


def blobs(n_per: int, classes: list[str], dim: int = 16, spread: float = 0.4, seed: int = 0):
    """Well-separated Gaussian blobs, ``n_per`` rows of each class: ``(X float32, y)``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(classes), dim)) * 2
    X = np.concatenate([c + spread * rng.standard_normal((n_per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(classes, n_per)
    return X, y


def shop_slice(root: Path) -> dict:
    """A 60-row fashion-products slice (10 per master category) written to ``root/catalog.csv``: its ``root``,
    ``catalog`` path and ``table``."""
    df = slice_catalog("fashion-products", 60, root, stratify="master_category")
    df.to_csv(root / "catalog.csv", index=False)
    return {"root": root, "catalog": root / "catalog.csv", "table": df}
