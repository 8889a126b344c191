"""The audit's page: the counts, the catalog's map with what was flagged, and a section per issue type showing its
worst items beside their evidence (the duplicate beside its twin, the outlier beside its nearest items)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.auditing.core import ids_in, related_ids
from simlabel.catalog import Catalog
from simlabel.report import Report, figure_html, image_cell, scroll, setup_table, table_html

__all__ = ["write_audit_html"]

#: what each type means, under its section's title
NOTES = {
    "unreadable": "Files the decoder could not read, with its reason; they have no vector.",
    "exact_duplicate": "The same photo under several ids: the same decoded pixels (and, where said, the same bytes).",
    "near_duplicate": "Groups joined along the graph's edges closer than the cut chosen from the data, or whose "
                      "photos' perceptual hashes nearly agree (below).",
    "leakage": "Items outside the training split whose near-twin is in it: a test set with them overstates accuracy.",
    "outlier": "Items far from their nearest neighbours (Datalab's k-NN score); shown beside their nearest items.",
    "far_from_labels": "Items far from every labelled class (the Mahalanobis distance to the nearest class), shown "
                       "beside their nearest labelled items.",
    "label": "Labels the k-NN vote of their neighbours disagrees with (simlabel suspects).",
    "class_imbalance": "Classes with too few labelled items.",
    "non_iid": "Whether neighbours sit together in the catalog's order (a permutation test).",
}


def _grid(cells: list[str]) -> str:
    return '<div class="pair">' + "".join(cells) + "</div>"


#: the most points the catalog's map draws
MAP_POINTS = 20_000


def write_audit_html(result, catalog: Catalog, path: str | os.PathLike, *, per_type: int = 8) -> Path:
    """Write the audit's page for :class:`~simlabel.auditing.run.AuditResult` ``result``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.summary
    paths = dict(zip(catalog.table["id"].astype(str), catalog.image_paths())) if "image" in catalog.table.columns else {}
    titles = dict(zip(catalog.table["id"].astype(str), catalog.table.get("title", catalog.table["id"]).astype(str)))
    rep = Report("Catalog audit")
    facts = {"items embedded": s["n_items"], "catalog rows": s["n_catalog"], "items with image measures": s["n_measured"],
             "neighbours per item": s["k"], "items flagged by any type": s["flagged_items"]}
    if "label_health" in s:
        facts["label health (share not suspected)"] = f"{s['label_health']:.3f}"
    if "leakage" in s:
        lk = s["leakage"]
        facts["leakage"] = (f"{lk['n_leaked']} of {lk['n_other']} items outside training have a near-twin in it"
                            + (f"; {lk['accuracy_model']} accuracy {lk['knn_accuracy_all']:.3f} on all labelled test items, "
                               f"{lk['knn_accuracy_without_leaked']:.3f} without the leaked"
                               if lk.get("knn_accuracy_without_leaked") is not None else ""))
    nid = s["types"]["non_iid"]
    facts["order (non-IID)"] = f"p = {nid['p_value']:.3f} (KS {nid['ks_statistic']:.3f}, {nid['permutations']} permutations)"
    rep.add("Summary", setup_table(facts))
    counts = pd.DataFrame({"flagged": pd.Series(s["counts"])})
    counts["how it is decided"] = [_rule(s, t) for t in counts.index]
    rep.add("Issues by type", scroll(table_html(counts)))

    flagged_ids = set(result.issues.loc[result.issues["flagged"], "id"])
    if result.coords is not None and len(result.coords):
        fig, ax = plt.subplots(figsize=(8, 5.5))
        lab = catalog.table.set_index(catalog.table["id"].astype(str)).get("label")
        c = result.coords
        # a page draws at most MAP_POINTS points (a uniform sample, every flagged item among them marked): a million
        # dots are one blot, and seconds of drawing
        if len(c) > MAP_POINTS:
            c = c.sample(n=MAP_POINTS, random_state=0).sort_index()
        colour = lab.reindex(c["id"]).fillna("").astype(str).to_numpy() if lab is not None else np.full(len(c), "")
        for v in pd.unique(colour)[:20]:
            m = colour == v
            ax.scatter(c["x"][m], c["y"][m], s=6, alpha=0.6, label=v or "(none)")
        m = ids_in(c["id"], flagged_ids)
        ax.scatter(c["x"][m], c["y"][m], s=22, facecolors="none", edgecolors="black", linewidths=0.7, label="flagged")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        sampled = f" ({len(c):,} of {len(result.coords):,} items drawn, by chance)" if len(c) < len(result.coords) else ""
        rep.add("The catalog's map", figure_html(fig), note="The embeddings' first two principal components" + sampled + ", coloured "
                "by label; a ring marks an item flagged by any type.")
    if "nn_distance_histogram" in s:
        nd = s["types"]["near_duplicate"]
        fig, ax = plt.subplots(figsize=(7, 2.8))
        d = result.issues.loc[result.issues["issue"] == "near_duplicate", "value"].dropna()
        ax.hist(d, bins=60, color="#4a78a8")
        ax.axvline(nd["cut_distance"], color="crimson", label=f"cut {nd['cut_distance']:.4f}")
        ax.axvline(nd["median_nn_distance"], color="gray", ls="--", label=f"median {nd['median_nn_distance']:.4f}")
        ax.set_xlabel("cosine distance to the nearest neighbour")
        ax.legend(fontsize=8)
        fig.tight_layout()
        rep.add("How near duplicates are cut", figure_html(fig), note=f"Items are near duplicates when their edge is "
                f"closer than {nd['rule']}: {nd['cut_distance']:.4f} here" + (
                    f", {nd['pixel_rule']} (the median is {nd['pixel_median_bits']:.0f} bits)." if "pixel_rule" in nd
                    else "."))
    if "classes" in s:
        cls = pd.DataFrame(s["classes"]).T.sort_values("health")
        rep.add("Label health per class", scroll(table_html(cls.head(40), "{:.3f}")),
                note="health: the share of the class's labelled items not suspected; flagged: too few or too rare.")
    exact_ids = set(result.flagged("exact_duplicate")["id"])
    for issue in counts.index:
        rows = result.flagged(issue)
        if not len(rows):
            continue
        if issue == "near_duplicate" and exact_ids:
            # the exact copies have their own section: the near ones (re-encoded, resized, joined by their pixels)
            # are what this one is for, so they come first
            rows = rows.assign(_exact=ids_in(rows["id"], exact_ids)).sort_values(["_exact", "score"], kind="stable")
        body = []
        seen_groups: set = set()
        for _, r in rows.iterrows():
            if r["group"] >= 0 and issue in ("exact_duplicate", "near_duplicate", "leakage"):
                if r["group"] in seen_groups:
                    continue
                seen_groups.add(r["group"])
            cap = f"{r['id']}: {titles.get(r['id'], '')[:40]}"
            if np.isfinite(r["value"]):
                cap += f" ({r['value']:.3g})"
            cells = [image_cell(paths.get(r["id"]), cap, 112)]
            for other in [i for i in related_ids(issue, r["evidence"]) if i != r["id"]][:4]:
                cells.append(image_cell(paths.get(other), f"{other}: {titles.get(other, '')[:30]}", 96))
            if r["evidence"] and issue in ("unreadable", "label", "far_from_labels", "class_imbalance"):
                cells.append(f"<div class='meta'>{html.escape(str(r['evidence'])[:160])}</div>")
            body.append(_grid(cells))
            if len(body) >= per_type:
                break
        rep.add(f"{issue.replace('_', ' ')}: {len(rows)} flagged", '<div class="grid">' + "".join(body) + "</div>",
                note=NOTES.get(issue, s["types"].get(issue, {}).get("measure", "")))
    return rep.write(path)


def _rule(s: dict, issue: str) -> str:
    t = s["types"].get(issue, {})
    if "rule" in t:
        return str(t["rule"])
    if "measure" in t:
        return f"{t['measure']}: {'below' if t['side'] == 'low' else 'beyond'} {t['cut']:.4g} (median {t['median']:.4g})"
    return {"unreadable": "the decoder's failures (errors.csv)", "exact_duplicate": "one pixel hash",
            "leakage": "a near-duplicate group across the split", "label": "simlabel suspects (k-NN)"}.get(issue, "")
