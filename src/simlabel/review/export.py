"""Reviewed decisions back into the files the commands read (``simlabel review export``).

Formats:

* ``labels``: ``id,label,clean,queue,kind,action,old`` for the items whose label a person settled: the
  accepted proposal, the chosen label, or the given label a rejected suggestion leaves standing. It is a label
  file for ``augment --labels`` (corrected seeds), ``train --labels`` (clean labels) and ``evaluate``. Items
  whose label was rejected with no replacement are left out (they are in ``clean``).
* ``clean``: ``id,clean``: 1 where a person confirmed the label, 0 where they rejected it; a catalog's
  ``clean`` column (join it on ``id``).
* ``basis-labels``: ``id,basis_index,labels`` for ``flip --basis-labels``, from the decisions on a basis queue.
* ``flips``: ``id,label,old,new,action`` for the reviewed flips (``new``: the state a person settled).
* ``exclude``: ``id,issue,queue,action`` for the items of ``simlabel audit`` queues a person confirmed as an issue
  (the proposal ``exclude`` accepted): the duplicates to drop and the photos to leave out of training.
* ``label-studio``: Label Studio tasks (JSON), one per queued item, with simlabel's proposal as a
  ``prediction`` with its score, and a person's decision as an ``annotation`` where there is one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from simlabel.errors import InputError
from simlabel.files import atomic_write, atomic_write_text, exclusive
from simlabel.remote import is_url, redact
from simlabel.review.decisions import DecisionLog, standing

FORMATS = ("labels", "clean", "basis-labels", "flips", "exclude", "label-studio")


def decisions_table(decisions: str | os.PathLike | DecisionLog) -> pd.DataFrame:
    """The standing decision of every item as a table (empty columns where none)."""
    log = decisions if isinstance(decisions, DecisionLog) else DecisionLog(decisions)
    if not log.path.exists():
        raise InputError(f"{log.path}: no decisions file (the review server writes it)")
    rows = list(standing(log.records()).values())
    cols = ["id", "queue", "kind", "item", "old", "new", "proposed", "action", "time", "basis_index"]
    t = pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols)
    return t.astype(object).fillna("").astype({"id": str})


def export_decisions(decisions: str | os.PathLike | DecisionLog, out: str | os.PathLike, *, format: str = "labels",
                     queues: Sequence[str | os.PathLike] = (), catalog=None) -> pd.DataFrame | list:
    """Write the reviewed decisions in one of :data:`FORMATS` (see the module docstring) to ``out``."""
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    t = decisions_table(decisions)
    if format == "label-studio":
        tasks = label_studio_tasks(queues, t, catalog)
        with exclusive(out):
            atomic_write_text(out, json.dumps(tasks, indent=1, ensure_ascii=False))
        return tasks
    single = t[t["kind"].isin(["suspects", "augment", "weights", "select", "predict"])]
    if format == "labels":
        res = single[single["new"] != ""].assign(label=lambda d: d["new"], clean=1)
        res = res[["id", "label", "clean", "queue", "kind", "action", "old"]]
        if res["id"].duplicated().any():  # one item decided in two queues: the latest decision stands
            res = res.loc[single.loc[res.index].sort_values("time").drop_duplicates("id", keep="last").index]
    elif format == "clean":
        res = single.assign(clean=(single["new"] != "").astype(int)).sort_values("time").drop_duplicates("id", keep="last")
        res = res[["id", "clean"]]
    elif format == "exclude":
        a = t[(t["kind"] == "audit") & (t["new"] == "exclude")]
        res = pd.DataFrame({"id": a["id"], "issue": a["queue"], "queue": a["queue"], "action": a["action"]})
    elif format == "basis-labels":
        res = t[t["kind"] == "basis"].rename(columns={"new": "labels"})[["id", "basis_index", "labels"]]
        if res.empty:
            raise InputError(f"{decisions}: no decisions on a basis queue (flip --export-basis) to export")
    else:
        f = t[t["kind"] == "flip"]
        res = pd.DataFrame({"id": f["id"], "label": f["item"].str.split("|").str[-1],
                            "old": f["old"].str.rsplit("=", n=1).str[-1], "new": f["new"].str.rsplit("=", n=1).str[-1],
                            "action": f["action"]})
    res = res.reset_index(drop=True)
    with exclusive(out):
        atomic_write(out, lambda tmp: res.to_csv(tmp, index=False))
    return res


def label_studio_tasks(queues: Sequence[str | os.PathLike], decided: pd.DataFrame, catalog=None) -> list[dict]:
    """Label Studio's import format: ``data`` (image, id, title), ``predictions`` (simlabel's proposal,
    with its score) and ``annotations`` (the reviewer's decision, where there is one)."""
    from simlabel.review.queues import read_queues

    if not queues:
        raise InputError("`format` label-studio needs the queue files (`queues`): the tasks are their items")
    items = read_queues(queues)
    paths, titles = {}, {}
    if catalog is not None:
        if "image" in catalog.table.columns:
            paths = dict(zip(catalog.table["id"].astype(str), catalog.image_paths()))
        if "title" in catalog.table.columns:
            titles = catalog.texts("title")
    by_key = {(r["queue"], r["item"]): r for _, r in decided.iterrows()}
    tasks = []

    def choice(value: str) -> list[dict]:
        return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [value]}}]

    for _, it in items.iterrows():
        task = {"data": {"image": _image_uri(paths[it["id"]]) if it["id"] in paths else "",
                         "id": it["id"], "title": titles.get(it["id"], ""), "queue": it["queue"],
                         "given_label": it["old"]}}
        if it["proposed"]:
            score = float(it["score"]) if it["score"] == it["score"] else None
            task["predictions"] = [{"model_version": f"simlabel {it['kind']}", "score": score,
                                    "result": choice(str(it["proposed"]))}]
        d = by_key.get((it["queue"], it["item"]))
        if d is not None and d["new"]:
            task["annotations"] = [{"result": choice(str(d["new"])), "was_cancelled": False,
                                    "meta": {"simlabel_action": d["action"], "time": d["time"]}}]
        tasks.append(task)
    return tasks


def _image_uri(path: str) -> str:
    """A task's image for Label Studio: a local file as a ``file://`` URI, a URL as it is but its credentials
    (a signed URL's query is never written: Label Studio's own storage settings sign it again)."""
    return redact(path) if is_url(path) else Path(path).resolve().as_uri()
