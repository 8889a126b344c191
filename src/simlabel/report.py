"""Self-contained HTML reports: tables, matplotlib charts and image grids in one file.

Charts are PNGs and thumbnails JPEGs, both inlined as base64, so a report can
be mailed or attached to a ticket and still show everything.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from jinja2 import Environment, select_autoescape

from simlabel.files import atomic_write_text
from simlabel.images import ImageError, load_image
from simlabel.remote import redact
from simlabel.sources import FetchError, is_remote_source, read_source

if TYPE_CHECKING:
    from PIL import Image

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left} table.setup td{text-align:left}
.note{color:#555;font-size:.9rem;max-width:900px}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}
.cell{width:{{ thumb }}px;font-size:.7rem;text-align:center;overflow-wrap:anywhere}
.cell img{width:{{ thumb }}px;height:{{ thumb }}px;object-fit:contain;background:#fafafa;border:1px solid #eee}
.pair{display:flex;gap:2px;border:1px solid #ccc;padding:2px;border-radius:3px;max-width:100%;overflow-x:auto}
.meta{color:#777;font-size:.8rem}
.scroll{overflow-x:auto;max-width:100%}
.missing{display:flex;align-items:center;justify-content:center;background:#fbe9e7;color:#a33;border:1px dashed #d99;font-size:.7rem}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5rem .8rem;max-width:900px}
img[alt=chart]{max-width:100%;height:auto}
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">simlabel {{ version }} &middot; {{ created }}</p>
{% if missing %}<p class="warn"><b>{{ missing }} image{{ "s" if missing > 1 else "" }} could not be read</b> and
show as red squares{% if missing_example %} (e.g. {{ missing_example }}){% endif %}.{% if "://" in (missing_example or "") %} An
image URL that cannot be fetched is in the embedding folder's errors.csv with the reason (http-404, timeout ...).{% else %}
Relative image paths are resolved against the catalog's folder; a catalog copied elsewhere needs absolute paths or its
images beside it.{% endif %}</p>{% endif %}
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

    @property
    def missing_images(self) -> list[str]:
        """The image paths the page's grids could not read (each shows as a red square)."""
        return [m for s in self.sections for m in _MISSING.findall(s.html)]

    def render(self) -> str:
        from simlabel import __version__

        env = Environment(autoescape=select_autoescape(["html"]))
        missing = self.missing_images
        return env.from_string(_TEMPLATE).render(
            title=self.title,
            sections=self.sections,
            thumb=self.thumb,
            version=__version__,
            created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            missing=len(missing),
            missing_example=html.unescape(missing[0]) if missing else "",
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page; a page with images that could not be read says so at its top and
        warns (:class:`~simlabel.errors.SimlabelWarning`), so a command never reports a page of
        empty squares as a success."""
        missing = self.missing_images
        if missing:
            import warnings

            from simlabel.errors import SimlabelWarning

            warnings.warn(f"{path}: {len(missing)} image(s) could not be read (e.g. {html.unescape(missing[0])}); "
                          "the page marks them", SimlabelWarning, stacklevel=2)
        return atomic_write_text(path, self.render())


def _count_column(col: pd.Series) -> bool:
    """A numeric column of whole numbers that are not all 0/1 (counts, sizes): shown as integers."""
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return False
    v = col.dropna().to_numpy(dtype=float)
    return bool(len(v)) and bool((v == v.round()).all()) and bool((abs(v) > 1).any())


def table_html(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A table that scrolls inside the page when wide; whole-number columns as integers
    (``1,991``, not ``1991.000``), other floats with ``float_format``."""
    counts = {c for c in df.columns if _count_column(df[c])}

    def column(c):
        if c in counts:
            return df[c].map(lambda v: "" if v != v else f"{int(round(v)):,}")
        return df[c].map(lambda v: ("" if v != v else float_format.format(v)) if isinstance(v, float) else v)

    shown = pd.DataFrame({c: column(c) for c in df.columns}, index=df.index) if len(df.columns) else df
    shown.columns = df.columns
    return '<div class="scroll">' + shown.to_html(escape=True, border=0) + "</div>"


def setup_table(items: dict) -> str:
    """What an experiment ran with, as a two-column table (values that are dicts become
    ``key: value`` lists; whole numbers get thousands separators)."""

    def show(v) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{k}: {show(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(map(show, v))
        if isinstance(v, bool) or v is None:
            return str(v)
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) > 1):
            return f"{int(v):,}"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(show(v))}</td></tr>" for k, v in items.items())
    return f'<div class="scroll"><table class="setup">{rows}</table></div>'


def scroll(html_text: str) -> str:
    """Wrap HTML (a pandas ``to_html`` table) so that it scrolls inside the page when wide."""
    return f'<div class="scroll">{html_text}</div>'


def figure_html(fig) -> str:
    """A matplotlib figure as an inline PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def open_image(path: str | os.PathLike, size: int) -> Image.Image:
    """The image at a path or a URL (fetched here: a page holds its pixels, never the URL, which may be signed),
    decoded near ``size`` for a thumbnail.

    Raises
    ------
    ImageError, FetchError
        The file cannot be decoded, or the URL fetched.
    """
    return load_image(path, draft_size=size, data=read_source(str(path)) if is_remote_source(path) else None)


def thumbnail_uri(path: str | os.PathLike, size: int = 112) -> str | None:
    """A small JPEG data URI of an image (a path or a URL), or None when it cannot be read."""
    try:
        img = open_image(path, size)
    except (ImageError, FetchError):
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


_MISSING = re.compile(r'<div class="missing" data-path="([^"]*)"')


def image_cell(path: str | None, caption: str, size: int = 112) -> str:
    """One thumbnail with its caption (escaped); a red square saying so when the image cannot be
    read (the page counts them: :attr:`Report.missing_images`)."""
    uri = thumbnail_uri(path, size) if path else None
    if uri:
        img = f'<img src="{uri}" alt="{html.escape(caption)}">'
    else:
        img = (f'<div class="missing" data-path="{html.escape(redact(str(path or "")))}" style="width:{size}px;height:{size}px">'
               "image not found</div>")
    return f'<div class="cell">{img}<br>{html.escape(caption)}</div>'


def array_cell(pixels, caption: str, size: int = 112) -> str:
    """One thumbnail of an ``(H, W, 3)`` uint8 array (e.g. an augmented view) with its caption."""
    from PIL import Image

    img = Image.fromarray(pixels)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return f'<div class="cell"><img src="{uri}" alt="{html.escape(caption)}"><br>{html.escape(caption)}</div>'


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
    returns it, ``catalog`` a :class:`~simlabel.catalog.Catalog` for the image paths, relative
    ones resolved against its folder, or its ``root``). Images that cannot be read are marked on
    the page and warned about."""
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
    if len(table):
        counts = table.groupby(["attribute", "new"]).size().unstack(fill_value=0)
        counts = counts.rename(columns={0: "removed (1 -> 0)", 1: "added (0 -> 1)"})
        counts.columns.name = None
        counts.index.name = None
        rep.add("Flips per attribute", table_html(counts.astype(int)))
    else:
        rep.add("Flips per attribute", "<p>no flips</p>")
    if "image" not in catalog.table.columns:
        rep.add("Images", f"<p class=\"warn\">{html.escape(str(catalog.path))} has no image column: the flips are listed "
                "without their images.</p>")
    rep.add(f"The {len(shown)} most confident flips", '<div class="grid">' + "".join(rows_html) + "</div>")
    return rep.write(path)


def write_suspects_html(table: pd.DataFrame, catalog, path: str | os.PathLike, *, summary: dict | None = None,
                        max_rows: int = 60) -> Path:
    """The page of ``simlabel suspects``: the top suspects, each beside the labelled neighbours
    that explain it (``table`` as :func:`simlabel.labels.suspects.find_suspects` returns it,
    ``catalog`` a :class:`~simlabel.catalog.Catalog` for the images), with the counts by method
    and by given label."""
    paths = dict(zip(catalog.table["id"].astype(str), catalog.image_paths())) if "image" in catalog.table.columns else {}
    rep = Report("Suspected label errors")
    flagged = table[table["rank"].notna()].sort_values("rank")
    s = summary or {}
    facts = {"items checked": s.get("n", len(table)), "suspected": len(flagged), "method": s.get("method", ""),
             "k": s.get("k", ""), "mode": s.get("mode", "")}
    if "noise_rate_estimate" in s:
        facts["estimated noise rate"] = f"{s['noise_rate_estimate']:.3f}"
    facts["near-duplicate groups"] = s.get("n_duplicate_groups", "")
    rep.add("Summary", setup_table(facts))
    if len(flagged):
        by = flagged.groupby(["label", "method"]).size().unstack(fill_value=0)
        by["all"] = by.sum(axis=1)
        by = by.sort_values("all", ascending=False).head(25)
        by.columns.name = None
        by.index.name = None
        rep.add("Suspects by given label (top 25)", scroll(table_html(by.astype(int))))
    rows_html = []
    for _, r in flagged.head(max_rows).iterrows():
        cells = [image_cell(paths.get(str(r["id"])), f"#{r['rank']} {r['id']}: {r['label']} -> {r['suggested']} "
                            f"(score {r['score']:.2f}, {r['method']})", 112)]
        nids = [x for x in str(r["neighbor_ids"]).split("|") if x]
        for nid, lab, sim in zip(nids, str(r["neighbor_labels"]).split("|"), str(r["neighbor_similarities"]).split("|")):
            cells.append(image_cell(paths.get(nid), f"{nid}: {lab} ({sim})", 96))
        rows_html.append('<div class="pair">' + "".join(cells) + "</div>")
    if "image" not in catalog.table.columns:
        rep.add("Images", f"<p class=\"warn\">{html.escape(str(catalog.path))} has no image column: pass --catalog "
                "with the images to see them.</p>")
    rep.add(f"The top {len(rows_html)} suspects, each beside its nearest labelled neighbours",
            '<div class="grid">' + "".join(rows_html) + "</div>" if rows_html else "<p>no suspects</p>")
    return rep.write(path)


def write_evaluation_html(report: dict, path: str | os.PathLike, *, model: str | None = None) -> Path:
    """The page of :func:`simlabel.training.evaluate`'s report: the per-class table, the reliability diagram before
    and after calibration, the coverage/precision curve and, when asked, what abstaining costs per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = report.get("calibration", {})
    rep = Report("Evaluation: how right, and how sure")
    setup = {"model": model or "(in memory)", "items": report["n"], "accuracy": round(report["accuracy"], 4),
             "macro F1": round(report["macro_f1"], 4), "calibration": cal.get("method", "none")}
    if cal.get("method") == "temperature":
        setup["temperature"] = round(cal["temperature"], 4)
    if cal:
        setup["ECE (15 bins) before / after"] = f"{cal['ece_before']:.4f} / {cal['ece_after']:.4f}"
    rep.add("Setup", setup_table(setup))
    per = pd.DataFrame(report["per_class"]).T
    cols = [c for c in ("precision", "recall", "f1", "support") if c in per.columns]
    rep.add_table("Per class", per[cols].astype(float), note="support: test items of the class")
    if cal:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
        for ax, key, title in ((axes[0], "bins_before", f"before (ECE {cal['ece_before']:.3f})"),
                               (axes[1], "bins_after", f"after {cal.get('method', 'none')} (ECE {cal['ece_after']:.3f})")):
            bins = cal[key]
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
            ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=[b["hi"] - b["lo"] for b in bins],
                   align="edge", alpha=0.6, edgecolor="black", label="accuracy")
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3", ms=4,
                    label="mean confidence")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_title(title)
        axes[0].set_ylabel("accuracy")
        axes[1].legend(loc="upper left")
        rep.add("Reliability diagram", figure_html(fig),
                note="each bar: the items whose top probability falls in the bin; a calibrated model's bars meet the diagonal")
    curve = report.get("coverage_precision")
    if curve:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot([c["coverage"] for c in curve], [c["precision"] for c in curve], marker=".")
        ab = report.get("abstention")
        if ab and ab.get("precision") is not None:
            ax.plot([ab["coverage"]], [ab["precision"]], "s", color="C3", label=f"per-class thresholds for {ab['min_precision']:g}")
            ax.legend(loc="lower left")
        ax.set_xlabel("coverage (share of items kept, most confident first)")
        ax.set_ylabel("precision of the kept")
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
        rep.add("Coverage and precision", figure_html(fig))
    ab = report.get("abstention")
    if ab:
        t = pd.DataFrame(ab["per_class"]).T
        rep.add_table(f"Abstaining below precision {ab['min_precision']:g} (coverage {ab['coverage']:.3f}, precision "
                      f"{(ab['precision'] or float('nan')):.3f})", t.astype(float),
                      note="threshold: chosen on the model's held-out rows (empty: the class always abstains); recall: "
                           "with abstention; recall_without: without it")
    return rep.write(path)
