"""The review page: a local Starlette app over review queues, a catalog and a decisions file.

Endpoints (JSON unless said):

``GET /``                     the page (HTML; the session token is in it)
``GET /api/items``            the queued items with their standing decision; ``queue``, ``group``,
                              ``min_score``, ``max_score``, ``status`` (``open``/``decided``/``all``) filter
``GET /api/item``             one item in full (``queue``, ``item``): title, explanation, alternatives, history
``GET /api/progress``         counts by queue and group
``GET /image/{id}``           the image of a catalog id (``?size=thumb|full``); only catalog ids, never a path
``POST /api/decide``          ``{"queue", "items": [...], "action", "label"?}``: decisions appended and synced
                              before the answer
``POST /api/undo``            takes back the latest decision of this queue still standing
``GET /static/...``           the page's own JavaScript and CSS, shipped in the package

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
from simlabel.review.thumbs import Thumbnails

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
log = logging.getLogger("simlabel.review")


class ReviewSession:
    """What the server serves: the items (:func:`~simlabel.review.queues.read_queues`), the catalog's
    images and titles, the decisions file and the token."""

    def __init__(self, items: pd.DataFrame, catalog, decisions: str | os.PathLike, *, thumbs: Thumbnails | None = None,
                 token: str | None = None) -> None:
        self.items = items.reset_index(drop=True)
        self.catalog = catalog
        ids = catalog.table["id"].astype(str)
        self.paths = dict(zip(ids, catalog.image_paths())) if "image" in catalog.table.columns else {}
        self.titles = catalog.texts("title") if "title" in catalog.table.columns else {}
        missing = sorted(set(self.items["id"]) - set(ids))
        if missing:
            raise InputError(f"{catalog.path}: {len(missing)} queued id(s) are not in the catalog, e.g. "
                             f"{', '.join(missing[:5])}; give the catalog the queue was made from")
        self.log = DecisionLog(decisions)
        self.thumbs = thumbs or Thumbnails(Path(self.log.path).with_name(Path(self.log.path).stem + ".thumbs"))
        self.token = token or secrets.token_urlsafe(24)
        self._key = {(q, i): n for n, (q, i) in enumerate(zip(self.items["queue"], self.items["item"]))}

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
        return {"total": int(len(by)), "decided": int(done.sum()),
                "queues": [{"queue": q, "total": int(r["size"]), "decided": int(r["sum"])} for q, r in queues.iterrows()],
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
        recs = []
        for it in items:
            n = self._key.get((queue, it))
            if n is None:
                raise InputError(f"no item {it!r} in queue {queue!r}")
            r = self.items.iloc[n]
            if action == "accept":
                new = r["proposed"]
                if r["kind"] == "basis":
                    raise InputError("a basis image is labelled with relabel (its labels), not accepted")
            elif action == "reject":
                new = r["old"] if r["kind"] in ("suspects", "flip") else ""
            elif action == "relabel":
                new = label.strip()
            else:
                new = ""
            rec = {"id": r["id"], "queue": queue, "kind": r["kind"], "item": it, "old": r["old"], "new": new,
                   "proposed": r["proposed"], "action": action}
            if r["kind"] == "basis":
                rec["basis_index"] = r["basis_index"]
            recs.append(rec)
        return self.log.append(recs)

    def undo(self, queue: str) -> dict | None:
        """Take back the latest standing decision of ``queue`` (by time)."""
        standing = [d for (q, _), d in self.standing().items() if q == queue]
        if not standing:
            return None
        last = max(standing, key=lambda d: d["time"])
        self.log.append([{k: last[k] for k in ("id", "queue", "kind", "item")} | {"action": "undo"}])
        return last


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
        queues = list(dict.fromkeys(session.items["queue"]))
        html = env.get_template("review.html").render(token=session.token, queues=queues,
                                                      decisions=str(session.log.path))
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
        n = session._key.get((q.get("queue", ""), q.get("item", "")))
        if n is None:
            raise HTTPException(404, "no such item in that queue")
        r = session.items.iloc[n]
        records = session.log.records()  # read once: the standing decisions and this item's history
        state = standing(records)
        history = [d for d in records if d.get("queue") == r["queue"] and d.get("item") == r["item"]]
        out = session.view(session.items.iloc[[n]], state)[0]
        out.update(explain=[{"id": i, "caption": c, "image": i in session.paths} for i, c in r["explain"]],
                   alternatives=list(r["alternatives"]), history=history)
        return JSONResponse(out)

    async def progress(request: Request):
        return JSONResponse(session.progress(session.standing()))

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
        last = session.undo(str(data.get("queue", "")))
        return JSONResponse({"undone": last, "progress": session.progress(session.standing())})

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
