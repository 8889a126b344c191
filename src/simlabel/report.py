"""Self-contained HTML reports: tables, matplotlib charts and image grids in one file.

Charts are PNGs and thumbnails JPEGs, both inlined as base64, so a report can
be mailed or attached to a ticket and still show everything.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

from simlabel.files import atomic_write_text
from simlabel.images import ImageError, load_image

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9rem;max-width:900px}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}
.cell{width:{{ thumb }}px;font-size:.7rem;text-align:center;word-break:break-all}
.cell img{width:{{ thumb }}px;height:{{ thumb }}px;object-fit:contain;background:#fafafa;border:1px solid #eee}
.pair{display:flex;gap:2px;border:1px solid #ccc;padding:2px;border-radius:3px}
.meta{color:#777;font-size:.8rem}
img[alt=chart]{max-width:100%;height:auto}
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">simlabel {{ version }} &middot; {{ created }}</p>
{% for s in sections %}<h2>{{ s.title }}</h2>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{{ s.html | safe }}
{% endfor %}
</body></html>
"""


@dataclass
class Section:
    title: str
    html: str
    note: str = ""


@dataclass
class Report:
    """Collects sections, then :meth:`write` renders one HTML file."""

    title: str
    sections: list[Section] = field(default_factory=list)
    thumb: int = 112

    def add(self, title: str, body_html: str, note: str = "") -> None:
        self.sections.append(Section(title, body_html, note))

    def add_table(self, title: str, df: pd.DataFrame, note: str = "", float_format: str = "{:.3f}") -> None:
        self.add(title, table_html(df, float_format), note)

    def render(self) -> str:
        from simlabel import __version__

        env = Environment(autoescape=select_autoescape(["html"]))
        return env.from_string(_TEMPLATE).render(
            title=self.title,
            sections=self.sections,
            thumb=self.thumb,
            version=__version__,
            created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )

    def write(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.render())


def table_html(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if v != v else float_format.format(v)
        return v

    return df.map(fmt).to_html(escape=True, border=0)


def figure_html(fig) -> str:
    """A matplotlib figure as an inline PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def thumbnail_uri(path: str | os.PathLike, size: int = 112) -> str | None:
    """A small JPEG data URI of an image, or None when it cannot be read."""
    try:
        img = load_image(path, draft_size=size)
    except ImageError:
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def image_cell(path: str | None, caption: str, size: int = 112) -> str:
    """One thumbnail with its caption (escaped); a grey square when the image cannot be read."""
    uri = thumbnail_uri(path, size) if path else None
    img = f'<img src="{uri}" alt="">' if uri else f'<div style="width:{size}px;height:{size}px;background:#eee"></div>'
    return f'<div class="cell">{img}<br>{html.escape(caption)}</div>'


def image_grid(items: Sequence[tuple[str | None, str]], size: int = 112) -> str:
    """A grid of (image path, caption) thumbnails."""
    return '<div class="grid">' + "".join(image_cell(p, c, size) for p, c in items) + "</div>"


def pair_grid(pairs: Sequence[tuple[tuple[str | None, str], tuple[str | None, str]]], size: int = 96) -> str:
    """A grid of image pairs, e.g. an augmented image beside the seed that pulled it in."""
    cells = "".join(f'<div class="pair">{image_cell(a, ac, size)}{image_cell(b, bc, size)}</div>' for (a, ac), (b, bc) in pairs)
    return '<div class="grid">' + cells + "</div>"


def write_flip_html(table: pd.DataFrame, catalog, path: str | os.PathLike, max_rows: int = 60) -> Path:
    """The explanation page of ``simlabel flip``: each flipped label beside the basis images
    that reconstruct its image, with their weights (``table`` as :func:`simlabel.labels.flipping.flip`
    returns it, ``catalog`` a :class:`~simlabel.catalog.Catalog` for the image paths)."""
    paths = dict(zip(catalog.table["id"], catalog.image_paths())) if "image" in catalog.table.columns else {}
    rep = Report("SELF-ML label flips, explained")
    shown = table.sort_values("confidence", ascending=False).head(max_rows)
    rows_html = []
    for _, r in shown.iterrows():
        cells = [image_cell(paths.get(r["id"]), f"{r['id']}: {r['label']} {r['old']}->{r['new']} ({r['confidence']:.2f})", 112)]
        for b, w, lab in zip(str(r["basis"]).split(";"), str(r["weights"]).split(";"), str(r["basis_labels"]).split(";")):
            if b:
                cells.append(image_cell(paths.get(b), f"basis {b} w={w} has label: {lab}", 96))
        rows_html.append('<div class="pair">' + "".join(cells) + "</div>")
    counts = table.groupby(["attribute", "new"]).size().unstack(fill_value=0) if len(table) else table
    rep.add("Flips per attribute (new value 1 = label added, 0 = removed)", counts.to_html(border=0) if len(table) else "<p>no flips</p>")
    rep.add(f"The {len(shown)} most confident flips", '<div class="grid">' + "".join(rows_html) + "</div>")
    return rep.write(path)
