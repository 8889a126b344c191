"""The review page: a local Starlette app over review queues, a catalog and a decisions file.

Endpoints (JSON unless said):

``GET /``                     the page (HTML; the session token is in it)
``GET /api/items``            the queued items with their standing decision; ``queue``, ``group``,
                              ``min_score``, ``max_score``, ``status`` (``open``/``decided``/``all``) filter
``GET /api/item``             one item in full (``queue``, ``item``): title, explanation, alternatives, history
``GET /api/progress``         counts by queue and group
``GET /api/labels``           a labelling queue's labels, in the order keys 1-9 pick them (``queue``)
``GET /api/similar``          "more like this": an item's nearest neighbours in the catalog (``queue``, ``id``)
``GET /api/search``           the catalog's items whose title holds every word of ``q`` (``queue``, ``q``)
``GET /image/{id}``           the image of a catalog id (``?size=thumb|full``); only catalog ids, never a path
``POST /api/decide``          ``{"queue", "items": [...], "action", "label"?}``: decisions appended and synced
                              before the answer
``POST /api/undo``            takes back the latest request's decisions of this queue still standing
``GET /static/...``           the page's own JavaScript and CSS, shipped in the package

A labelling queue (kind ``select``) may label any catalog item, not only its own: "more like this" and the
title search find the rest of a class. The other kinds decide their queued items only.

Security: a state-changing request needs the session's token (header ``X-Review-Token``) and must come
from the page's own origin (``Origin``, or ``Referer`` without it, matching the host it was sent to).
Every text reaches the page through ``textContent`` or jinja2's autoescape. Bad requests get a 4xx with a
message; a server error is logged with its traceback and answered 500 without it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from simlabel.errors import InputError
from simlabel.review.decisions import DecisionLog, standing
from simlabel.review.finder import Finder
from simlabel.review.thumbs import Thumbnails

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
log = logging.getLogger("simlabel.review")


class ReviewSession:
    """What the server serves: the items (:func:`~simlabel.review.queues.read_queues`), the catalog's
    images and titles, the decisions file and the token.

    ``emb`` (with ``graph`` or ``index``) gives "more like this"; ``labels`` (``id,label``, e.g. the labels
    known before ``select``) seeds the label list of a labelling queue.
    """

    def __init__(self, items: pd.DataFrame, catalog, decisions: str | os.PathLike, *, thumbs: Thumbnails | None = None,
                 token: str | None = None, emb=None, graph: str | os.PathLike | None = None,
                 index: str | os.PathLike | None = None, labels: pd.DataFrame | None = None) -> None:
        self.items = items.reset_index(drop=True)
        self.catalog = catalog
        ids = catalog.table["id"].astype(str)
        self.paths = dict(zip(ids, catalog.image_paths())) if "image" in catalog.table.columns else {}
        self.titles = catalog.texts("title") if "title" in catalog.table.columns else {}
        self.ids = set(ids)
        missing = sorted(set(self.items["id"]) - self.ids)
        if missing:
            raise InputError(f"{catalog.path}: {len(missing)} queued id(s) are not in the catalog, e.g. "
                             f"{', '.join(missing[:5])}; give the catalog the queue was made from")
        self.log = DecisionLog(decisions)
        self.thumbs = thumbs or Thumbnails(Path(self.log.path).with_name(Path(self.log.path).stem + ".thumbs"))
        self.token = token or secrets.token_urlsafe(24)
        self._key = {(q, i): n for n, (q, i) in enumerate(zip(self.items["queue"], self.items["item"]))}
        self.kinds = dict(zip(self.items["queue"], self.items["kind"]))
        if emb is None and (graph is not None or index is not None):
            raise InputError("`graph` and `index` are of embeddings: give `emb` with them")
        self.finder = Finder(self.titles, emb, graph=graph, index=index)
        if emb is not None:
            self.finder.emb.positions(sorted(set(self.items["id"])))  # every queued item must have a vector
        # the label list: the queue's proposals and alternatives by how often they come, then the known labels';
        # labels typed on the page join it at the end, so the keys 1-9 never move under the reviewer's hands
        known = [] if labels is None else list(labels["label"].astype(str).value_counts().index)
        self._vocab = {}
        for q, rows in self.items.groupby("queue", sort=False):
            offered = pd.Series([*rows["proposed"], *(a for alts in rows["alternatives"] for a in alts)], dtype=object)
            self._vocab[q] = list(dict.fromkeys([*offered[offered != ""].value_counts().index, *known]))

    def is_labelling(self, queue: str) -> bool:
        """A labelling queue (``select``'s): its reviewer labels any catalog item."""
        return self.kinds.get(queue) == "select"

    def labels(self, queue: str, state: dict | None = None) -> list[str]:
        """The labels of a queue in a fixed order: those offered at the start, then those given since."""
        state = self.standing() if state is None else state
        given = sorted((d for (q, _), d in state.items() if q == queue and d.get("new")), key=lambda d: d["time"])
        return list(dict.fromkeys([*self._vocab.get(queue, []), *(d["new"] for d in given)]))

    def rows_of(self, queue: str, ids: list[str]) -> pd.DataFrame:
        """Review rows for catalog ids in a labelling queue: the queued row where there is one, else a fresh,
        unqueued row (no proposal)."""
        out = []
        for i in ids:
            n = self._key.get((queue, i))
            if n is not None:
                out.append(self.items.iloc[n].to_dict())
            else:
                out.append({"queue": queue, "kind": self.kinds.get(queue, "select"), "id": i, "item": i, "old": "",
                            "proposed": "", "group": "", "score": np.nan, "order": -1, "explain": [],
                            "alternatives": [], "basis_index": ""})
        return pd.DataFrame(out, columns=self.items.columns)

    def standing(self) -> dict:
        return self.log.state()

    def view(self, rows: pd.DataFrame, state: dict) -> list[dict]:
        out = []
        for r in rows.itertuples(index=False):
            d = state.get((r.queue, r.item))
            out.append({"queue": r.queue, "kind": r.kind, "id": r.id, "item": r.item, "old": r.old,
                        "proposed": r.proposed, "group": r.group,
                        "score": None if not r.score == r.score else round(float(r.score), 4),
                        "order": int(r.order), "title": self.titles.get(r.id, ""),
                        "decision": None if d is None else {"action": d["action"], "new": d.get("new", "")}})
        return out

    def progress(self, state: dict) -> dict:
        done = np.array([(q, i) in state for q, i in zip(self.items["queue"], self.items["item"])])
        by = pd.DataFrame({"queue": self.items["queue"], "group": self.items["group"], "done": done})
        queues = by.groupby("queue", sort=False)["done"].agg(["size", "sum"])
        groups = by.groupby(["queue", "group"], sort=False)["done"].agg(["size", "sum"])
        # items labelled beyond a labelling queue's own (found by "more like this" or the search)
        beyond = pd.Series([q for (q, i) in state if (q, i) not in self._key], dtype=object).value_counts()
        return {"total": int(len(by)), "decided": int(done.sum()),
                "queues": [{"queue": q, "total": int(r["size"]), "decided": int(r["sum"]),
                            "beyond": int(beyond.get(q, 0))} for q, r in queues.iterrows()],
                "groups": [{"queue": q, "group": g, "total": int(r["size"]), "decided": int(r["sum"])}
                           for (q, g), r in groups.iterrows()]}

    def decide(self, queue: str, items: list[str], action: str, label: str | None = None) -> list[dict]:
        """Validate and append one decision per item; returns the records written."""
        if action not in ("accept", "reject", "relabel", "skip"):
            raise InputError(f"action must be accept, reject, relabel or skip; got {action!r}")
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise InputError("items must be a non-empty list of item keys")
        if action == "relabel" and (not isinstance(label, str) or not label.strip()):
            raise InputError("relabel needs a label")
        if action == "relabel" and self.is_labelling(queue) and any(c in label for c in "|\n\r"):
            # one label per item here ('|' separates the labels of a multi-label file)
            raise InputError(f"a label holds no '|' nor line break; got {label!r}")
        unqueued = [it for it in items if (queue, it) not in self._key]
        if unqueued:
            if not self.is_labelling(queue):
                raise InputError(f"no item {unqueued[0]!r} in queue {queue!r}")
            bad = [it for it in unqueued if it not in self.ids]
            if bad:
                raise InputError(f"{bad[0]!r} is not an id of the catalog {self.catalog.path}")
        rows = self.rows_of(queue, items) if unqueued else self.items.iloc[[self._key[(queue, it)] for it in items]]
        # one request is one step back for undo: every decision it writes carries its batch
        batch = secrets.token_hex(8)
        recs = []
        for it, (_, r) in zip(items, rows.iterrows()):
            if action == "accept":
                new = r["proposed"]
                if r["kind"] == "basis":
                    raise InputError("a basis image is labelled with relabel (its labels), not accepted")
                if not new:
                    raise InputError(f"{it!r} has no proposal to accept; give it a label")
            elif action == "reject":
                new = r["old"] if r["kind"] in ("suspects", "flip") else ""
            elif action == "relabel":
                new = label.strip()
            else:
                new = ""
            rec = {"id": r["id"], "queue": queue, "kind": r["kind"], "item": it, "old": r["old"], "new": new,
                   "proposed": r["proposed"], "action": action, "batch": batch}
            if r["kind"] == "basis":
                rec["basis_index"] = r["basis_index"]
            recs.append(rec)
        return self.log.append(recs)

    def undo(self, queue: str) -> tuple[dict | None, int]:
        """Take back the latest step of ``queue``: every standing decision written by the request of the
        latest standing decision (by time). Returns that decision and how many were taken back."""
        standing = [d for (q, _), d in self.standing().items() if q == queue]
        if not standing:
            return None, 0
        last = max(standing, key=lambda d: d["time"])
        step = [d for d in standing if last.get("batch") and d.get("batch") == last["batch"]] or [last]
        self.log.append([{k: d[k] for k in ("id", "queue", "kind", "item")} | {"action": "undo"} for d in step])
        return last, len(step)


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def create_app(session: ReviewSession):
    """The Starlette application of a :class:`ReviewSession`."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

    def checked(request: Request) -> None:
        if request.headers.get("x-review-token") != session.token:
            raise HTTPException(403, "missing or wrong session token (reload the page)")
        origin = request.headers.get("origin") or request.headers.get("referer")
        host = request.headers.get("host", "")
        if not origin or urlparse(origin).netloc != host:
            raise HTTPException(403, "cross-origin request refused")

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(400, "the request body must be JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "the request body must be a JSON object")
        return data

    async def page(request: Request):
        queues = [(q, session.kinds[q]) for q in dict.fromkeys(session.items["queue"])]
        html = env.get_template("review.html").render(token=session.token, queues=queues,
                                                      decisions=str(session.log.path),
                                                      can_search=session.finder.can_search,
                                                      can_find_similar=session.finder.can_find_similar)
        return HTMLResponse(html)

    async def items(request: Request):
        q = request.query_params
        rows = session.items
        if q.get("queue"):
            rows = rows[rows["queue"] == q["queue"]]
        if q.get("group"):
            rows = rows[rows["group"] == q["group"]]
        try:
            lo, hi = float(q.get("min_score", "-inf")), float(q.get("max_score", "inf"))
        except ValueError:
            raise HTTPException(400, "min_score and max_score must be numbers") from None
        if lo > -np.inf or hi < np.inf:
            rows = rows[(rows["score"] >= lo) & (rows["score"] <= hi)]
        state = session.standing()
        status = q.get("status", "all")
        if status not in ("all", "open", "decided"):
            raise HTTPException(400, "status must be all, open or decided")
        if status != "all":
            done = np.array([(a, b) in state for a, b in zip(rows["queue"], rows["item"])], dtype=bool)
            rows = rows[done if status == "decided" else ~done]
        rows = rows.sort_values(["queue", "order"], kind="stable")
        return JSONResponse({"items": session.view(rows, state), "progress": session.progress(state)})

    async def item(request: Request):
        q = request.query_params
        queue, key = q.get("queue", ""), q.get("item", "")
        n = session._key.get((queue, key))
        if n is not None:
            rows = session.items.iloc[[n]]
        elif session.is_labelling(queue) and key in session.ids:
            rows = session.rows_of(queue, [key])  # found by "more like this" or the search
        else:
            raise HTTPException(404, "no such item in that queue")
        r = rows.iloc[0]
        records = session.log.records()  # read once: the standing decisions and this item's history
        state = standing(records)
        history = [d for d in records if d.get("queue") == r["queue"] and d.get("item") == r["item"]]
        out = session.view(rows, state)[0]
        out.update(explain=[{"id": i, "caption": c, "image": i in session.paths} for i, c in r["explain"]],
                   alternatives=list(r["alternatives"]), history=history)
        return JSONResponse(out)

    async def progress(request: Request):
        return JSONResponse(session.progress(session.standing()))

    def labelling_queue(request: Request) -> str:
        queue = request.query_params.get("queue", "")
        if not session.is_labelling(queue):
            raise HTTPException(400, f"{queue!r} is not a labelling queue (one made by select)")
        return queue

    def found(queue: str, ids: list[str], group: str, captions: dict | None = None) -> JSONResponse:
        state = session.standing()
        view = session.view(session.rows_of(queue, ids), state)
        for v in view:
            v["group"] = group  # the page shows what was found as one grid
            if captions:
                v["found"] = captions.get(v["id"], "")
        return JSONResponse({"items": view, "progress": session.progress(state)})

    async def labels(request: Request):
        queue = labelling_queue(request)
        return JSONResponse({"labels": session.labels(queue)})

    async def similar(request: Request):
        queue = labelling_queue(request)
        ident = request.query_params.get("id", "")
        if ident not in session.ids:
            raise HTTPException(404, "no such id in the catalog")
        try:
            near = session.finder.similar(ident)
        except InputError as e:
            raise HTTPException(400, str(e)) from None
        return found(queue, [ident, *(i for i, _ in near)], f"more like {ident}",
                     {ident: "this item", **{i: f"similarity {s:.3f}" for i, s in near}})

    async def search(request: Request):
        queue = labelling_queue(request)
        try:
            ids, n = session.finder.search(request.query_params.get("q", ""))
        except InputError as e:
            raise HTTPException(400, str(e)) from None
        text = request.query_params.get("q", "").strip()
        return found(queue, ids, f"titles with “{text}” ({n:,}{'' if n <= len(ids) else f', first {len(ids)}'})")

    async def image(request: Request):
        ident = request.path_params["id"]
        size = request.query_params.get("size", "thumb")
        if size not in ("thumb", "full"):
            raise HTTPException(400, "size must be thumb or full")
        path = session.paths.get(ident)  # only ids of the catalog: a request never names a path
        if path is None:
            raise HTTPException(404, "no image for that id in the catalog")
        try:
            f = session.thumbs.get(ident, path, 160 if size == "thumb" else 1024)
        except OSError as e:
            raise HTTPException(404, f"the image of {ident} cannot be read ({type(e).__name__})") from None
        return FileResponse(f, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def decide(request: Request):
        checked(request)
        data = await body(request)
        try:
            recs = session.decide(str(data.get("queue", "")), data.get("items"), str(data.get("action", "")),
                                  data.get("label"))
        except InputError as e:
            raise HTTPException(400, str(e)) from None
        return JSONResponse({"written": len(recs), "progress": session.progress(session.standing())})

    async def undo(request: Request):
        checked(request)
        data = await body(request)
        last, n = session.undo(str(data.get("queue", "")))
        return JSONResponse({"undone": last, "count": n, "progress": session.progress(session.standing())})

    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception):
        log.exception("review server error on %s", request.url.path)
        return _error(500, "internal error (see the server's log)")

    routes = [
        Route("/", page),
        Route("/api/items", items),
        Route("/api/item", item),
        Route("/api/progress", progress),
        Route("/api/labels", labels),
        Route("/api/similar", similar),
        Route("/api/search", search),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/image/{id:path}", image),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def serve(session: ReviewSession, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run the page with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(session), host=host, port=port, log_level=log_level)
