"""Review queues: any file simlabel writes that holds items to check, recognised by its columns.

Each queue becomes a table of review items, one row per item, with the same columns whatever the
source:

``queue``       the queue's name (the file's stem, unique among the files given)
``kind``        ``suspects``, ``augment``, ``flip``, ``weights`` or ``basis``
``id``          the catalog id of the item
``item``        the key of a decision: the id, or ``id|label`` for a flip (one image, several labels)
``old``         the label the item has now (empty where it has none)
``proposed``    what simlabel proposes (the suggested label, the augmented label, the flipped label's
                new state ``label=1`` / ``label=0``, the weighted label; empty for a basis image)
``group``       the proposal shared by the items shown in one grid
``score``       how sure simlabel is (higher: surer; ``NaN`` where there is none)
``order``       the position in the queue (lowest weight, highest rank ... first)
``explain``     the explanation as ``[(id, caption), ...]``: the via chain, the basis images, the neighbours
``alternatives``  other labels to offer (best first)
``basis_index`` for a basis image, the basis vectors it answers for (empty otherwise)

What each kind reads (the columns that recognise it):

* ``suspects`` (``simlabel suspects``: ``suggested, score, neighbor_ids``): the suggested label, the
  neighbours that explain it, the given label as the first alternative;
* ``augment`` (``simlabel augment``: ``step, source, via``): the augmented label (seeds are not
  queued), its ``via`` chain back to the seed as images;
* ``flip`` (``simlabel flip``: ``attribute, old, new, basis``): the flipped label with the basis images and
  weights that explain it;
* ``weights`` (``simlabel side-info``: ``weight, agreement``): the label as given, lowest weight first;
* ``basis`` (``flip --export-basis``: ``basis_index, labels``): basis images to label (free labels);
* ``select`` (``simlabel select``: ``strategy, reason``): items to label, in the queue's order, with the model's
  proposal (if any) and the nearest labelled neighbours as the explanation and the first alternatives;
* ``predict`` (a ``simlabel predict`` folder: ``probability, margin, abstain``): what the model is least sure of,
  lowest margin first (the ``max_items`` least sure of the whole catalog, read part by part), grouped by the
  proposed label, its other top labels as alternatives and, with ``--explain``, its nearest labelled
  neighbours as the explanation. Accepted and corrected items export as labels for the next ``train``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.errors import InputError, LabelFileError
from simlabel.files import read_csv_table

KINDS = {
    "suspects": ("suggested", "score", "neighbor_ids"),
    "augment": ("step", "source", "via"),
    "flip": ("attribute", "old", "new", "basis"),
    "weights": ("weight", "agreement"),
    "basis": ("basis_index", "labels"),
    "select": ("strategy", "reason"),
    "predict": ("probability", "margin", "abstain"),
    "audit": ("issue", "flagged", "evidence"),
}
COLUMNS = ["queue", "kind", "id", "item", "old", "proposed", "group", "score", "order", "explain", "alternatives",
           "basis_index"]


def queue_kind(columns: Sequence[str], path: str | os.PathLike = "queue") -> str:
    """The kind of a queue file from its columns; an unknown file is an error naming what is read."""
    cols = set(columns)
    for kind, needed in KINDS.items():
        if set(needed) <= cols:
            return kind
    known = "; ".join(f"{k}: {', '.join(v)}" for k, v in KINDS.items())
    raise LabelFileError(f"{path}: not a review queue (columns {', '.join(columns)}); simlabel reads files with "
                         f"the columns of: {known}")


def _split(cell: object) -> list[str]:
    text = "" if cell is None or (isinstance(cell, float) and np.isnan(cell)) else str(cell)
    return [v for v in text.replace(";", "|").split("|") if v != ""]


def _column(t: pd.DataFrame, name: str) -> pd.Series:
    """A column of the queue, or empty cells where the file has none."""
    return t[name] if name in t.columns else pd.Series([""] * len(t), index=t.index)


def _neighbours(t: pd.DataFrame) -> list[list[tuple[str, str]]]:
    """Each row's nearest labelled neighbours as ``(id, "label (similarity)")`` from its ``neighbor_ids``,
    ``neighbor_labels`` and ``neighbor_similarities`` cells (none where the file has no such columns)."""
    return [[(i, f"{lab} ({s})") for i, lab, s in zip(_split(a), _split(b), _split(c))]
            for a, b, c in zip(_column(t, "neighbor_ids"), _column(t, "neighbor_labels"), _column(t, "neighbor_similarities"))]


def _suspects(t: pd.DataFrame) -> pd.DataFrame:
    exp = _neighbours(t)
    score = 1.0 - pd.to_numeric(t["score"], errors="coerce")  # a low vote for the given label: sure it is wrong
    order = pd.to_numeric(t["rank"], errors="coerce") if "rank" in t.columns else pd.Series(np.arange(len(t)))
    # the suggestion, the given label, then the neighbours' labels by how many of them carry it
    alts = [list(dict.fromkeys([s, g, *pd.Series(_split(nl)).value_counts().index]))
            for s, g, nl in zip(t["suggested"], t["label"], t["neighbor_labels"])]
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": t["label"], "proposed": t["suggested"],
                         "group": t["suggested"], "score": score, "order": order.to_numpy(), "explain": exp,
                         "alternatives": alts})


def _augment(t: pd.DataFrame) -> pd.DataFrame:
    seeds = set(t.loc[t["source"].astype(str) == "seed", "id"]) if "source" in t.columns else set()
    t = t[~t["id"].isin(seeds)]
    via = dict(zip(t["id"], t["via"].astype(str)))
    sim = dict(zip(t["id"], t["via_similarity"].astype(str))) if "via_similarity" in t.columns else {}
    exp = []
    for i in t["id"]:
        # the chain back to the seed: each hop with the similarity that pulled the item before it in
        chain, at, prev, seen = [], via.get(i), i, {i}
        while at and at not in seen and at != "nan":
            chain.append((at, f"{'seed' if at not in via else 'augmented'}, similarity {sim.get(prev, '?')}"))
            seen.add(at)
            prev, at = at, via.get(at)
        exp.append(chain)
    score = pd.to_numeric(t["via_similarity"], errors="coerce") if "via_similarity" in t.columns else pd.Series(np.nan, t.index)
    step = pd.to_numeric(t["step"], errors="coerce").fillna(0).to_numpy()
    # earliest steps first, the most similar first within a step
    order = np.lexsort((-np.nan_to_num(score.to_numpy(dtype=float), nan=0.0), step)).argsort()
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": "", "proposed": t["label"], "group": t["label"],
                         "score": score, "order": order, "explain": exp, "alternatives": [[lab] for lab in t["label"]]})


def _flip(t: pd.DataFrame) -> pd.DataFrame:
    new = pd.to_numeric(t["new"], errors="coerce").fillna(0).astype(int)
    exp = [[(b, f"w={w} has: {lab}") for b, w, lab in zip(_split(a), _split(ws), str(bl).split(";"))]
           for a, ws, bl in zip(t["basis"], t["weights"], t["basis_labels"])]
    proposed = [f"{lab}={n}" for lab, n in zip(t["label"], new)]
    old = [f"{lab}={1 - n}" for lab, n in zip(t["label"], new)]
    group = [f"{'add' if n else 'remove'} {lab}" for lab, n in zip(t["label"], new)]
    score = pd.to_numeric(t["confidence"], errors="coerce") if "confidence" in t.columns else np.nan
    return pd.DataFrame({"id": t["id"], "item": [f"{i}|{lab}" for i, lab in zip(t["id"], t["label"])], "old": old,
                         "proposed": proposed, "group": group, "score": score,
                         "order": (-np.asarray(score, dtype=float)).argsort().argsort(), "explain": exp,
                         "alternatives": [[p, o] for p, o in zip(proposed, old)]})


def _weights(t: pd.DataFrame) -> pd.DataFrame:
    w = pd.to_numeric(t["weight"], errors="coerce")
    key = t["id"] if not t["id"].duplicated().any() else t["id"] + "|" + t["label"].astype(str)
    return pd.DataFrame({"id": t["id"], "item": key, "old": t["label"], "proposed": t["label"], "group": t["label"],
                         "score": w, "order": w.rank(method="first").to_numpy() - 1, "explain": [[] for _ in range(len(t))],
                         "alternatives": [[lab] for lab in t["label"]]})


def _basis(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": t["labels"].fillna("").astype(str), "proposed": "",
                         "group": "basis images to label", "score": np.nan, "order": np.arange(len(t)),
                         "explain": [[] for _ in range(len(t))], "alternatives": [[] for _ in range(len(t))],
                         "basis_index": t["basis_index"].astype(str)})


def _select(t: pd.DataFrame) -> pd.DataFrame:
    exp = _neighbours(t)
    proposal = _column(t, "proposal").fillna("").astype(str)
    alts = [[v for v in dict.fromkeys([p, *pd.Series(_split(nl)).value_counts().index]) if v]
            for p, nl in zip(proposal, _column(t, "neighbor_labels"))]
    order = pd.to_numeric(t["rank"], errors="coerce") - 1 if "rank" in t.columns else pd.Series(np.arange(len(t)))
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": "", "proposed": proposal,
                         "group": [p or "to label" for p in proposal],
                         "score": pd.to_numeric(_column(t, "proposal_score"), errors="coerce"), "order": order.to_numpy(),
                         "explain": exp, "alternatives": alts})


def _predict(t: pd.DataFrame) -> pd.DataFrame:
    exp = _neighbours(t)
    margin = pd.to_numeric(t["margin"], errors="coerce")
    alts = [[str(v) for v in (list(tl) if tl is not None and not isinstance(tl, str) else _split(tl))]
            for tl in (t["top_labels"] if "top_labels" in t.columns else t["label"])]
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": "", "proposed": t["label"], "group": t["label"],
                         "score": pd.to_numeric(t["probability"], errors="coerce"),
                         "order": margin.rank(method="first").to_numpy() - 1, "explain": exp, "alternatives": alts})


def read_prediction_queue(path: str | os.PathLike, max_items: int = 2000) -> pd.DataFrame:
    """The ``max_items`` least sure rows (lowest margin) of a ``simlabel predict`` folder, read part by part so a
    catalog of millions is never held whole."""
    import pyarrow.parquet as pq

    from simlabel.files import read_json

    p = Path(path)
    man = read_json(p / "_manifest.json", "prediction manifest")
    if man.get("kind") == "multi-label" or (p / "_summary.json").is_file() and \
            read_json(p / "_summary.json", "prediction summary").get("kind") == "multi-label":
        raise LabelFileError(f"{p}: the predictions of a multi-label model (a label per attribute value, each set by its "
                             "own probability) are not a review queue; review attribute labels with `simlabel flip "
                             "--html`, or read the folder with pandas")
    best = None
    for name in man.get("parts", []):
        part = pq.read_table(p / name).to_pandas()
        best = part if best is None else pd.concat([best, part], ignore_index=True)
        best = best.nsmallest(max_items, "margin", keep="first")
    return (best if best is not None else pd.DataFrame(columns=["id", "label", "probability", "margin", "abstain"])).reset_index(drop=True)


def _audit(t: pd.DataFrame) -> pd.DataFrame:
    """A ``simlabel audit`` queue (``AUDIT_DIR/queues/<issue>.csv``): each flagged item, proposed for exclusion, with
    the items its evidence names (``related``: the twin, the nearest items), the evidence and the measured value."""
    score = pd.to_numeric(t["score"], errors="coerce")
    exp = []
    for related, ev, value in zip(_column(t, "related"), t["evidence"].fillna("").astype(str), _column(t, "value")):
        why = [(i, "named by the evidence") for i in _split(related)]
        if ev:
            why.append(("", ev))
        if str(value) not in ("", "nan"):
            why.append(("", f"measured {float(value):.4g}"))
        exp.append(why)
    issue = t["issue"].astype(str)
    return pd.DataFrame({"id": t["id"], "item": t["id"], "old": _column(t, "label").fillna("").astype(str),
                         "proposed": "exclude", "group": issue, "score": score,
                         "order": score.rank(method="first").fillna(0).to_numpy() - 1, "explain": exp,
                         "alternatives": [["exclude", "keep"] for _ in range(len(t))]})


READERS = {"audit": _audit, "predict": _predict, "select": _select, "suspects": _suspects, "augment": _augment, "flip": _flip, "weights": _weights, "basis": _basis}


def read_queue(path: str | os.PathLike, name: str | None = None, *, max_items: int = 2000) -> pd.DataFrame:
    """One queue file (or a ``simlabel predict`` folder, its ``max_items`` least sure rows) as review items (see
    the module docstring)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "_manifest.json").is_file():
            raise LabelFileError(f"{p}: a folder, but not a finished `simlabel predict` output (no _manifest.json)")
        t = read_prediction_queue(p, max_items)
    else:
        t = read_csv_table(p, ("id",), "review queue")
    kind = queue_kind(list(t.columns), p)
    if "label" not in t.columns and kind not in ("basis", "select"):
        raise LabelFileError(f"{p}: a {kind} queue needs a label column")
    t = t.copy()
    t["id"] = t["id"].astype(str)
    if "label" in t.columns:
        t["label"] = t["label"].fillna("").astype(str)
    items = READERS[kind](t.reset_index(drop=True))
    items.insert(0, "kind", kind)
    items.insert(0, "queue", name or p.stem)
    items["order"] = pd.to_numeric(items["order"], errors="coerce").fillna(0).astype(int)
    if kind in ("suspects", "augment", "weights", "select", "predict"):
        # then the queue's most common labels, so 1-9 can always pick another class
        common = pd.concat([items["proposed"], items["old"]]).loc[lambda v: v != ""].value_counts().index.tolist()
        items["alternatives"] = [list(dict.fromkeys([*a, *common]))[:9] for a in items["alternatives"]]
    if "basis_index" not in items.columns:
        items["basis_index"] = ""
    return items[COLUMNS]


def read_queues(paths: Sequence[str | os.PathLike], *, max_items: int = 2000) -> pd.DataFrame:
    """Every queue file given, as one table of review items; queue names are the file stems, made unique
    (``max_items``: of a ``simlabel predict`` folder, the least sure rows read)."""
    if not paths:
        raise InputError("give at least one queue file (suspects, augment, flip, side-info weights or a basis export)")
    names: dict[str, int] = {}
    parts = []
    for p in paths:
        stem = Path(p).stem
        names[stem] = names.get(stem, 0) + 1
        parts.append(read_queue(p, stem if names[stem] == 1 else f"{stem}-{names[stem]}", max_items=max_items))
    items = pd.concat(parts, ignore_index=True)
    dup = items.duplicated(["queue", "item"])
    if dup.any():
        raise LabelFileError(f"{paths[0]}: item {items.loc[dup, 'item'].iloc[0]!r} is queued twice in one file")
    return items
