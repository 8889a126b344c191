"""Self-contained HTML reports: escaping, tables, thumbnails, the flip explanation page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from simlabel.catalog import load_catalog
from simlabel.report import Report, image_cell, image_grid, table_html, thumbnail_uri, write_flip_html


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
    assert "<img" not in cell and "background:#eee" in cell and "caption &lt;b&gt;" in cell
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
