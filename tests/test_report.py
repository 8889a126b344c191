"""Self-contained HTML reports: escaping, tables, thumbnails, the flip explanation page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simlabel.catalog import load_catalog
from simlabel.report import Report, image_cell, image_grid, table_html, thumbnail_uri, write_flip_html
from tests.helpers import check_page


def photo(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def test_report_escapes_catalog_text_and_formats_tables(tmp_path: Path) -> None:
    rep = Report("flips <for> review")
    rep.add_table("t", pd.DataFrame({"name": ["<script>alert(1)</script>"], "x": [0.123456], "n": [3]}), note="a & b")
    html = rep.render()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "flips &lt;for&gt; review" in html and "a &amp; b" in html
    assert "0.123" in html and "0.123456" not in html
    out = rep.write(tmp_path / "r.html")
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert table_html(pd.DataFrame({"v": [float("nan")]})).count("<td></td>") == 1


def test_thumbnails_and_placeholders(tmp_path: Path) -> None:
    uri = thumbnail_uri(photo(tmp_path / "a.jpg"), size=32)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    assert thumbnail_uri(tmp_path / "missing.jpg") is None
    cell = image_cell(str(tmp_path / "missing.jpg"), "caption <b>", 40)
    assert "<img" not in cell and 'class="missing"' in cell and "image not found" in cell and "caption &lt;b&gt;" in cell
    grid = image_grid([(str(tmp_path / "a.jpg"), "ok"), (None, "none")], size=32)
    assert grid.count('class="cell"') == 2 and grid.count("<img") == 1


def test_flip_page_shows_each_flip_beside_its_basis_images(tmp_path: Path) -> None:
    for name, colour in (("x", (255, 0, 0)), ("b1", (0, 255, 0)), ("b2", (0, 0, 255))):
        photo(tmp_path / f"{name}.jpg", colour)
    pd.DataFrame({"id": ["x", "b1", "b2"], "image": ["x.jpg", "b1.jpg", "b2.jpg"]}).to_csv(tmp_path / "cat.csv", index=False)
    cat = load_catalog(tmp_path / "cat.csv")
    flips = pd.DataFrame({"id": ["x"], "label": ["usage=Casual"], "attribute": ["usage"], "old": [0], "new": [1],
                          "confidence": [0.9], "basis": ["b1;b2"], "weights": ["0.700;0.300"], "basis_labels": ["1;1"]})
    html = write_flip_html(flips, cat, tmp_path / "f.html").read_text()
    assert html.count("<img") == 3 and "basis b1 w=0.700" in html and "usage=Casual 0-&gt;1" in html
    empty = write_flip_html(flips.iloc[0:0], cat, tmp_path / "e.html").read_text()
    assert "no flips" in empty and np.char.count(empty, "<img") == 0


def test_flip_page_resolves_relative_paths_against_the_catalogs_folder(tmp_path: Path) -> None:
    """A catalog in another folder than the cwd still shows its images; one whose images are not
    beside it says so on the page and in a warning (never a silent page of grey squares)."""
    from simlabel.errors import SimlabelWarning

    data = tmp_path / "shop"
    (data / "images").mkdir(parents=True)
    for name in ("x", "b1"):
        photo(data / "images" / f"{name}.jpg")
    pd.DataFrame({"id": ["x", "b1"], "image": ["images/x.jpg", "images/b1.jpg"]}).to_csv(data / "catalog.csv", index=False)
    flips = pd.DataFrame({"id": ["x"], "label": ["usage=Casual"], "attribute": ["usage"], "old": [0], "new": [1],
                          "confidence": [0.9], "basis": ["b1"], "weights": ["1.000"], "basis_labels": ["1"]})
    page = write_flip_html(flips, load_catalog(data / "catalog.csv"), tmp_path / "ok.html").read_text()
    assert page.count("<img") == 2 and "could not be read" not in page
    # the same rows copied into a folder without the images: relative paths break, and it is said
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()
    pd.read_csv(data / "catalog.csv").to_csv(elsewhere / "noisy.csv", index=False)
    with pytest.warns(SimlabelWarning, match="2 image"):
        broken = write_flip_html(flips, load_catalog(elsewhere / "noisy.csv"), tmp_path / "broken.html").read_text()
    assert "2 images could not be read" in broken and broken.count('class="missing"') == 2
    assert check_page(tmp_path / "broken.html", tmp_path / "shots")["missing"] == 2  # marked, not broken <img>s
    # --image-root points the copy at the images again
    fixed = write_flip_html(flips, load_catalog(elsewhere / "noisy.csv", root=data), tmp_path / "fixed.html").read_text()
    assert fixed.count("<img") == 2


def test_counts_print_as_integers_and_setups_as_tables() -> None:
    from simlabel.report import setup_table

    html = table_html(pd.DataFrame({"n": [1991.0, 12.0], "precision": [0.5, 1.0], "flag": [0.0, 1.0]}))
    assert "1,991" in html and "1991.000" not in html and "0.500" in html and "1.000" in html
    assert html.startswith('<div class="scroll">')
    setup = setup_table({"sizes": {"clean_used": 500, "noisy_train": 6687}, "alpha": 0.1, "seeds": [0, 1]})
    assert "clean_used: 500, noisy_train: 6,687" in setup and "{" not in setup and "<th>alpha</th><td>0.1</td>" in setup


def test_image_cells_of_urls_hold_the_pixels_never_the_url(tmp_path: Path) -> None:
    """A thumbnail of an http:// image is fetched when the page is written (a data URI); a URL that fails is the
    red square, and neither the page nor its marker holds the URL's (signed) query."""
    from tests.helpers import slice_catalog
    from tests.servers import ImageServer

    photo = slice_catalog("clothing-small", 1, tmp_path)["image"].iloc[0]
    with ImageServer(tmp_path) as srv:
        ok = image_cell(f"{srv.url}/sig/{photo}?X-Amz-Signature=s3cr3t", "a photo")
        gone = image_cell(f"{srv.url}/404/{photo}?X-Amz-Signature=s3cr3t", "gone")
    assert 'src="data:image/jpeg;base64,' in ok and "s3cr3t" not in ok
    assert 'class="missing"' in gone and "s3cr3t" not in gone and "?&lt;redacted&gt;" in gone
