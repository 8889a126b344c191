"""The review page: queues read from every kind of file, a crash-safe decisions file, the server's endpoints
and its security, a kill -9 of the server, the export back into label files, and the page in a real browser."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.catalog import load_catalog
from simlabel.errors import InputError, LabelFileError
from simlabel.review.decisions import DecisionLog, standing
from simlabel.review.export import export_decisions
from simlabel.review.queues import queue_kind, read_queue, read_queues
from tests.helpers import ROOT, slice_catalog


@pytest.fixture()
def shop(tmp_path: Path) -> dict:
    """A real 40-image slice and one queue file of each kind, as the commands write them."""
    df = slice_catalog("fashion-products", 40, tmp_path)
    df.loc[3, "title"] = '<img src=x onerror="document.body.dataset.pwned=1"> Shirt & Co'
    df.to_csv(tmp_path / "catalog.csv", index=False)
    ids, types = df["id"].tolist(), df["article_type"].tolist()
    s = pd.DataFrame({"id": ids[:12], "label": types[:12], "suggested": ["Tshirts"] * 6 + ["Watches"] * 6,
                      "score": np.linspace(0, 0.4, 12).round(3), "rank": range(1, 13), "method": "knn",
                      "neighbor_ids": [f"{ids[20]}|{ids[21]}"] * 12, "neighbor_labels": ["Tshirts|Tshirts"] * 12,
                      "neighbor_similarities": ["0.910|0.880"] * 12})
    s.to_csv(tmp_path / "suspects.csv", index=False)
    a = pd.DataFrame({"id": ids[12:18], "label": "Shirts", "step": [0, 0, 1, 1, 2, 2],
                      "source": ["seed", "seed", "augmented", "augmented", "augmented", "augmented"],
                      "via": ["", "", ids[12], ids[13], ids[14], ids[15]], "via_similarity": ["", "", 0.9, 0.8, 0.85, 0.7]})
    a.to_csv(tmp_path / "aug.csv", index=False)
    f = pd.DataFrame({"id": ids[18:22], "label": ["gender=Men", "gender=Men", "usage=Casual", "usage=Casual"],
                      "attribute": ["gender", "gender", "usage", "usage"], "old": [0, 0, 1, 1], "new": [1, 1, 0, 0],
                      "confidence": [0.9, 0.8, 0.7, 0.6], "basis": [f"{ids[30]};{ids[31]}"] * 4,
                      "weights": ["0.600;0.400"] * 4, "basis_labels": ["gender=Men|usage=Casual;gender=Men"] * 4})
    f.to_csv(tmp_path / "flips.csv", index=False)
    w = pd.DataFrame({"id": ids[22:28], "label": types[22:28], "rank": range(1, 7), "weight": [0.9, 0.1, 0.5, 0.05, 0.7, 0.3],
                      "agreement": 0.5, "stage1_weight": 0.5})
    w.to_csv(tmp_path / "weighted.csv", index=False)
    b = pd.DataFrame({"id": ids[28:32], "image": df["image"][28:32], "basis_index": ["0", "1;4", "2", "3"], "labels": ""})
    b.to_csv(tmp_path / "basis.csv", index=False)
    return {"root": tmp_path, "df": df, "ids": ids, "queues": [tmp_path / n for n in
            ("suspects.csv", "aug.csv", "flips.csv", "weighted.csv", "basis.csv")]}


# -- queues ----------------------------------------------------------------------------------------


def test_every_queue_kind_is_recognised_and_read(shop):
    items = read_queues(shop["queues"])
    assert items.groupby("queue")["kind"].first().to_dict() == {
        "suspects": "suspects", "aug": "augment", "flips": "flip", "weighted": "weights", "basis": "basis"}
    ids = shop["ids"]
    aug = read_queue(shop["root"] / "aug.csv").set_index("id")
    assert ids[12] not in aug.index  # seeds are not queued
    # the via chain back to the seed, as images: ids[16] <- ids[14] <- ids[12] (seed)
    assert [i for i, _ in aug.loc[ids[16], "explain"]] == [ids[14], ids[12]]
    assert aug.loc[ids[16], "explain"][-1][1].startswith("seed")
    w = read_queue(shop["root"] / "weighted.csv").sort_values("order")
    assert w["score"].tolist() == [0.05, 0.1, 0.3, 0.5, 0.7, 0.9]  # lowest weights first
    f = read_queue(shop["root"] / "flips.csv")
    assert f["item"].iloc[0] == f"{ids[18]}|gender=Men" and f["proposed"].iloc[0] == "gender=Men=1"
    assert f["explain"].iloc[0] == [(ids[30], "w=0.600 has: gender=Men|usage=Casual"), (ids[31], "w=0.400 has: gender=Men")]
    s = read_queue(shop["root"] / "suspects.csv")
    assert s["alternatives"].iloc[0][0] == "Tshirts" and s["score"].iloc[0] == 1.0
    assert read_queue(shop["root"] / "basis.csv")["basis_index"].tolist() == ["0", "1;4", "2", "3"]
    # a select queue: no label yet; the proposal first, then the nearest labelled neighbours' labels
    pd.DataFrame({"id": ids[32:35], "rank": [1, 2, 3], "strategy": "badge", "reason": "margin 0.1, unlike the batch",
                  "proposal": ["Shirts", "Watches", ""], "proposal_score": [0.6, 0.4, np.nan],
                  "neighbor_ids": [f"{ids[20]}|{ids[21]}"] * 3, "neighbor_labels": ["Tshirts|Shirts"] * 3,
                  "neighbor_similarities": ["0.910|0.880"] * 3}).to_csv(shop["root"] / "to_label.csv", index=False)
    q = read_queue(shop["root"] / "to_label.csv")
    assert q["kind"].iloc[0] == "select" and q["order"].tolist() == [0, 1, 2] and (q["old"] == "").all()
    assert q["alternatives"].iloc[0][:3] == ["Shirts", "Tshirts", "Watches"] and q["group"].iloc[2] == "to label"
    assert q["explain"].iloc[0] == [(ids[20], "Tshirts (0.910)"), (ids[21], "Shirts (0.880)")]
    with pytest.raises(LabelFileError, match="not a review queue"):
        queue_kind(["id", "foo"], "x.csv")
    (shop["root"] / "other.csv").write_text("id,foo\n1,2\n")
    with pytest.raises(LabelFileError, match=r"other.csv: not a review queue \(columns id, foo\)"):
        read_queue(shop["root"] / "other.csv")


# -- decisions -------------------------------------------------------------------------------------


def test_decisions_append_undo_and_survive_a_cut_line(tmp_path: Path):
    log = DecisionLog(tmp_path / "d.jsonl")
    log.append([{"id": "1", "queue": "q", "item": "1", "action": "accept", "new": "a"}])
    log.append([{"id": "2", "queue": "q", "item": "2", "action": "reject", "new": ""},
                {"id": "1", "queue": "q", "item": "1", "action": "relabel", "new": "b"}])
    assert {k: v["new"] for k, v in log.state().items()} == {("q", "1"): "b", ("q", "2"): ""}
    log.append([{"id": "1", "queue": "q", "item": "1", "action": "undo"}])
    assert log.state()[("q", "1")]["new"] == "a"  # back to the accept
    # a crash mid-write leaves a cut line: it is ignored, and the next append starts a fresh line
    with open(tmp_path / "d.jsonl", "a") as f:
        f.write('{"id": "3", "queue": "q", "ite')
    log.append([{"id": "4", "queue": "q", "item": "4", "action": "accept", "new": "c"}])
    recs = log.records()
    assert log.damaged == 1 and [r["id"] for r in recs] == ["1", "2", "1", "1", "4"]
    assert standing(recs)[("q", "4")]["new"] == "c"
    with pytest.raises(InputError, match="action must be one of"):
        log.append([{"id": "1", "queue": "q", "item": "1", "action": "maybe"}])


def test_two_writers_on_one_file_never_interleave(tmp_path: Path):
    code = ("import sys\nfrom simlabel.review.decisions import DecisionLog\n"
            "log = DecisionLog(sys.argv[1])\n"
            "for i in range(150):\n"
            "    log.append([{'id': sys.argv[2] + str(i), 'queue': 'q', 'item': sys.argv[2] + str(i), 'action': 'accept',"
            " 'new': 'x' * 500}])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d.jsonl"), tag], env=env) for tag in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    log = DecisionLog(tmp_path / "d.jsonl")
    recs = log.records()
    assert log.damaged == 0 and len(recs) == 300 and len(log.state()) == 300


# -- the server ------------------------------------------------------------------------------------


def _client(shop, decisions: Path | None = None):
    from starlette.testclient import TestClient

    from simlabel.review.server import ReviewSession, create_app

    cat = load_catalog(shop["root"] / "catalog.csv", require=("id",))
    session = ReviewSession(read_queues(shop["queues"]), cat, decisions or shop["root"] / "decisions.jsonl")
    client = TestClient(create_app(session), base_url="http://127.0.0.1:8765", raise_server_exceptions=False)
    return client, session


def test_every_endpoint_and_the_decisions_it_writes(shop):
    client, session = _client(shop)
    page = client.get("/")
    assert page.status_code == 200 and session.token in page.text and "/static/review.js" in page.text
    assert client.get("/static/review.js").status_code == 200
    items = client.get("/api/items", params={"queue": "suspects"}).json()
    assert len(items["items"]) == 12 and items["progress"]["total"] == 12 + 4 + 4 + 6 + 4
    assert client.get("/api/items", params={"queue": "suspects", "group": "Watches"}).json()["items"][0]["group"] == "Watches"
    assert len(client.get("/api/items", params={"queue": "suspects", "min_score": "0.8"}).json()["items"]) == 6
    ids = shop["ids"]
    detail = client.get("/api/item", params={"queue": "suspects", "item": ids[0]}).json()
    assert detail["explain"][0] == {"id": ids[20], "caption": "Tshirts (0.910)", "image": True}
    assert detail["alternatives"][0] == "Tshirts" and detail["title"] == shop["df"]["title"][0]
    img = client.get(f"/image/{ids[0]}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
    assert client.get(f"/image/{ids[0]}", params={"size": "full"}).status_code == 200
    assert list(session.thumbs.folder.rglob("*.jpg"))  # made once, kept on disk
    headers = {"X-Review-Token": session.token, "Origin": "http://127.0.0.1:8765"}
    r = client.post("/api/decide", json={"queue": "suspects", "items": ids[:6], "action": "accept"}, headers=headers)
    assert r.status_code == 200 and r.json()["written"] == 6
    r = client.post("/api/decide", json={"queue": "suspects", "items": [ids[6]], "action": "relabel", "label": "Shirts"},
                    headers=headers)
    assert r.status_code == 200
    state = DecisionLog(shop["root"] / "decisions.jsonl").state()
    assert state[("suspects", ids[0])]["new"] == "Tshirts" and state[("suspects", ids[6])]["new"] == "Shirts"
    assert len(client.get("/api/items", params={"queue": "suspects", "status": "open"}).json()["items"]) == 5
    undone = client.post("/api/undo", json={"queue": "suspects"}, headers=headers).json()["undone"]
    assert undone["item"] == ids[6]
    assert client.get("/api/progress").json()["decided"] == 6


def test_security_and_bad_requests(shop):
    client, session = _client(shop)
    ok = {"X-Review-Token": session.token, "Origin": "http://127.0.0.1:8765"}
    body = {"queue": "suspects", "items": [shop["ids"][0]], "action": "accept"}
    assert client.post("/api/decide", json=body).status_code == 403  # no token
    assert client.post("/api/decide", json=body, headers={**ok, "X-Review-Token": "guess"}).status_code == 403
    r = client.post("/api/decide", json=body, headers={**ok, "Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "cross-origin request refused"
    assert client.post("/api/decide", json=body, headers={"X-Review-Token": session.token}).status_code == 403  # no origin
    assert not (shop["root"] / "decisions.jsonl").exists()  # nothing written by any of them
    # images by catalog id only: no path from the request is ever opened
    for bad in ("../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", shop["df"]["image"][0], "nope"):
        r = client.get(f"/image/{bad}")
        assert r.status_code == 404 and "passwd" not in r.text.replace(bad, ""), bad
    assert client.get(f"/image/{shop['ids'][0]}", params={"size": "huge"}).status_code == 400
    r = client.post("/api/decide", content=b"{not json", headers={**ok, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "the request body must be JSON"
    for bad_body, msg in (({**body, "action": "delete"}, "action must be"), ({**body, "items": "x"}, "non-empty list"),
                          ({**body, "items": ["nope"]}, "no item 'nope'"), ({**body, "action": "relabel"}, "needs a label")):
        r = client.post("/api/decide", json=bad_body, headers=ok)
        assert r.status_code == 400 and msg in r.json()["error"] and "Traceback" not in r.text
    assert client.get("/api/item", params={"queue": "suspects", "item": "nope"}).status_code == 404
    assert client.get("/api/items", params={"min_score": "abc"}).status_code == 400
    # catalog text is escaped: the title with markup reaches the page only as JSON text
    page = client.get("/").text
    assert "onerror" not in page
    title = client.get("/api/items", params={"queue": "suspects"}).json()["items"][3]["title"]
    assert title.startswith("<img")  # raw in JSON; the page sets it with textContent (checked in the browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(shop, port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "simlabel.cli", "review", *map(str, shop["queues"]), "--catalog", str(shop["root"] / "catalog.csv"),
           "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    import httpx

    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/progress", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read()) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the review server did not start")


def test_decisions_survive_a_kill_9_of_the_server_and_it_resumes(shop):
    import re

    import httpx

    port = _free_port()
    proc = _start(shop, port)
    base = f"http://127.0.0.1:{port}"
    try:
        token = re.search(r'name="review-token" content="([^"]+)"', httpx.get(base + "/").text).group(1)
        headers = {"X-Review-Token": token, "Origin": base}
        for i in shop["ids"][:5]:
            assert httpx.post(base + "/api/decide", json={"queue": "suspects", "items": [i], "action": "accept"},
                              headers=headers).status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -9
    state = DecisionLog(shop["root"] / "decisions.jsonl").state()
    assert sorted(i for _, i in state) == sorted(shop["ids"][:5])  # every answered decision is on disk
    proc = _start(shop, port)
    try:
        open_items = httpx.get(base + "/api/items", params={"queue": "suspects", "status": "open"}).json()["items"]
        assert [it["item"] for it in open_items] == shop["ids"][5:12]  # resumes where the reviewer stopped
    finally:
        proc.kill()
        proc.wait(timeout=30)


# -- export ----------------------------------------------------------------------------------------


def test_export_into_the_files_the_commands_read(shop):
    client, session = _client(shop)
    ids = shop["ids"]
    session.decide("suspects", ids[:2], "accept")
    session.decide("suspects", [ids[2]], "reject")  # the given label stands
    session.decide("aug", [ids[14]], "accept")
    session.decide("aug", [ids[15]], "reject")  # wrong, no replacement
    session.decide("flips", [f"{ids[18]}|gender=Men"], "accept")
    session.decide("basis", [ids[29]], "relabel", "gender=Men|usage=Casual")
    root = shop["root"]
    labels = export_decisions(root / "decisions.jsonl", root / "seeds.csv")
    assert labels.set_index("id")["label"].to_dict() == {ids[0]: "Tshirts", ids[1]: "Tshirts",
                                                         ids[2]: shop["df"]["article_type"][2], ids[14]: "Shirts"}
    from simlabel.labels.io import read_labels

    assert len(read_labels(root / "seeds.csv")) == 4  # a label file the commands read
    clean = export_decisions(root / "decisions.jsonl", root / "clean.csv", format="clean").set_index("id")["clean"]
    assert clean[ids[15]] == 0 and clean[ids[14]] == 1
    basis = export_decisions(root / "decisions.jsonl", root / "basis-labels.csv", format="basis-labels")
    assert basis.to_dict("records") == [{"id": ids[29], "basis_index": "1;4", "labels": "gender=Men|usage=Casual"}]
    flips = export_decisions(root / "decisions.jsonl", root / "f.csv", format="flips")
    assert flips.to_dict("records") == [{"id": ids[18], "label": "gender=Men", "old": "0", "new": "1", "action": "accept"}]
    tasks = export_decisions(root / "decisions.jsonl", root / "ls.json", format="label-studio", queues=shop["queues"][:1],
                             catalog=load_catalog(root / "catalog.csv"))
    assert len(tasks) == 12 and json.loads((root / "ls.json").read_text()) == tasks
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["Tshirts"]
    assert tasks[0]["predictions"][0]["score"] == 1.0 and tasks[0]["annotations"][0]["result"][0]["value"]["choices"] == ["Tshirts"]
    assert tasks[0]["data"]["image"].startswith("file://") and "annotations" not in tasks[5]
    with pytest.raises(InputError, match="format must be one of"):
        export_decisions(root / "decisions.jsonl", root / "x.csv", format="xml")


# -- the page in a real browser --------------------------------------------------------------------


def test_a_select_queue_labelled_and_exported_for_the_next_round(shop):
    """simlabel select's queue: accept the proposal or give a label; the labels feed train and the next select."""
    ids = shop["ids"]
    pd.DataFrame({"id": ids[32:35], "rank": [1, 2, 3], "strategy": "typiclust", "reason": "typical of cluster 1",
                  "proposal": ["Shirts", "", ""], "proposal_score": [0.6, np.nan, np.nan]}).to_csv(
        shop["root"] / "to_label.csv", index=False)
    client, session = _client({**shop, "queues": [shop["root"] / "to_label.csv"]})
    session.decide("to_label", [ids[32]], "accept")
    session.decide("to_label", [ids[33]], "relabel", "Watches")
    labels = export_decisions(shop["root"] / "decisions.jsonl", shop["root"] / "labelled.csv")
    assert labels.set_index("id")["label"].to_dict() == {ids[32]: "Shirts", ids[33]: "Watches"}
    assert set(labels["kind"]) == {"select"}


@contextlib.contextmanager
def _review_page(shop, *extra: str):
    """The review server of ``shop``'s queues (``extra``: more options), started on a free port of 127.0.0.1, and a
    tab of Debian's Chromium on its page: ``(tab, errors)``, ``errors`` the page's uncaught errors. The browser
    and the server stop on leaving."""
    from playwright.sync_api import sync_playwright

    from tests.helpers import chromium

    exe = chromium()
    port = _free_port()
    proc = _start(shop, port, *extra)
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(f"http://127.0.0.1:{port}/")
            yield tab, errors
            browser.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _to_label(shop, n: int = 30, proposals: dict | None = None) -> Path:
    """select's queue of the slice's first ``n`` items (``proposals``: position -> proposed label)."""
    ids = shop["ids"][:n]
    prop = [(proposals or {}).get(i, "") for i in range(n)]
    path = shop["root"] / "to_label.csv"
    pd.DataFrame({"id": ids, "rank": range(1, n + 1), "strategy": "typiclust", "reason": "typical of its cluster",
                  "proposal": prop, "proposal_score": [0.7 if p else np.nan for p in prop]}).to_csv(path, index=False)
    return path


def test_a_labelling_queue_labels_any_catalog_item_by_batch(shop):
    """A select queue: labels by request, undone as one step; items found beyond the queue can be labelled;
    the other kinds still decide their own items only."""
    from starlette.testclient import TestClient

    from simlabel.review.server import ReviewSession, create_app
    from simlabel.store import Embeddings

    ids = shop["ids"]
    queue = _to_label(shop, 30, {0: "Watches", 1: "Watches", 2: "Tshirts"})
    known = pd.DataFrame({"id": ids[36:40], "label": ["Shirts", "Shirts", "Shirts", "Jeans"]})
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    emb = Embeddings(np.array(ids, dtype=object), X, {"path": "mem", "model": "test"})
    cat = load_catalog(shop["root"] / "catalog.csv", require=("id",))
    session = ReviewSession(read_queues([queue, shop["queues"][0]]), cat, shop["root"] / "d.jsonl", emb=emb, labels=known)
    client = TestClient(create_app(session), base_url="http://127.0.0.1:8765", raise_server_exceptions=False)
    headers = {"X-Review-Token": session.token, "Origin": "http://127.0.0.1:8765"}

    def post(path: str, **payload):
        return client.post(path, json={"queue": "to_label", **payload}, headers=headers)

    # the label list: the queue's proposals by count, then the known labels by count; typed labels join at the end
    assert client.get("/api/labels", params={"queue": "to_label"}).json()["labels"] == ["Watches", "Tshirts", "Shirts", "Jeans"]
    assert post("/api/decide", items=ids[:24], action="relabel", label="Watches").json()["written"] == 24
    assert post("/api/decide", items=[ids[33], ids[34]], action="relabel", label="Belts").status_code == 200  # beyond the queue
    assert client.get("/api/labels", params={"queue": "to_label"}).json()["labels"][-1] == "Belts"
    prog = client.get("/api/progress").json()["queues"][0]
    assert (prog["decided"], prog["total"], prog["beyond"]) == (24, 30, 2)
    undone = post("/api/undo").json()
    assert undone["count"] == 2 and undone["undone"]["new"] == "Belts"  # the last request, as one step
    assert post("/api/undo").json()["count"] == 24
    assert client.get("/api/progress").json()["decided"] == 0
    # what is refused, with the reason
    assert "no proposal to accept" in post("/api/decide", items=[ids[5]], action="accept").json()["error"]
    assert post("/api/decide", items=[ids[0]], action="accept").status_code == 200  # a proposal is accepted
    assert "not an id of the catalog" in post("/api/decide", items=["nope"], action="relabel", label="X").json()["error"]
    assert "no '|'" in post("/api/decide", items=[ids[6]], action="relabel", label="a|b").json()["error"]
    r = client.post("/api/decide", json={"queue": "suspects", "items": [ids[30]], "action": "relabel", "label": "X"}, headers=headers)
    assert r.status_code == 400 and "no item" in r.json()["error"]  # a suspects queue decides its own items only
    assert client.get("/api/labels", params={"queue": "suspects"}).status_code == 400
    # more like this: the item itself first, then its nearest neighbours by cosine, exactly
    near = client.get("/api/similar", params={"queue": "to_label", "id": ids[7]}).json()["items"]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = Xn @ Xn[7]
    sims[7] = -np.inf
    assert [it["id"] for it in near] == [ids[7], *[ids[j] for j in np.argsort(-sims)[:24]]]
    assert near[0]["found"] == "this item" and near[1]["found"] == f"similarity {np.sort(sims)[::-1][0]:.3f}"
    assert near[1]["kind"] == "select" and near[1]["group"] == f"more like {ids[7]}"
    detail = client.get("/api/item", params={"queue": "to_label", "item": ids[35]})  # an item beyond the queue
    assert detail.status_code == 200 and detail.json()["title"] == shop["df"]["title"][35]
    # the title search: every word starts a word of the title
    found = client.get("/api/search", params={"queue": "to_label", "q": "MEN shirt"}).json()["items"]
    assert found, "the slice holds men's shirts"
    for it in found:
        words = it["title"].lower().replace("-", " ").split()
        assert any(w.startswith("men") for w in words) and any(w.startswith("shirt") for w in words), it["title"]
    assert client.get("/api/search", params={"queue": "to_label", "q": "  "}).status_code == 400
    assert client.get("/api/search", params={"queue": "to_label", "q": "(["}).status_code == 200  # escaped, no pattern
    with pytest.raises(InputError, match="give `emb`"):
        ReviewSession(read_queues([queue]), cat, shop["root"] / "d.jsonl", graph=shop["root"] / "graph")


def test_label_a_grid_of_24_undo_reload_and_resume_in_a_real_browser(shop, tmp_path: Path, image_encoder):
    """The labelling loop as a reviewer runs it: 24 items in two keystrokes, a new label typed with completion,
    undo, a reload that resumes, more like this, the title search; the labels export for train."""
    from simlabel.embedding import embed

    root, ids = shop["root"], shop["ids"]
    embed(root / "catalog.csv", root / "emb", image_encoder=image_encoder, progress=False)
    queue = _to_label(shop, 30)
    pd.DataFrame({"id": ids[36:40], "label": ["Shirts", "Shirts", "Tshirts", "Watches"]}).to_csv(root / "known.csv", index=False)
    progress = "document.querySelector('#progress').textContent"
    with _review_page({**shop, "queues": [queue]}, "--emb", str(root / "emb"), "--labels",
                      str(root / "known.csv")) as (tab, errors):
        tab.wait_for_selector("#grid .card")
        assert tab.locator("#grid .card").count() == 24 and "1-24 of 30" in tab.inner_text("#grid-title")
        assert tab.locator("#label-keys .chip").all_inner_texts() == ["1Shirts", "2Tshirts", "3Watches"]
        tab.wait_for_function("Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth > 0)")
        tab.screenshot(path=str(tmp_path / "label-grid.png"))
        tab.keyboard.press("Control+a")  # the whole grid
        assert tab.inner_text("#selected-count") == "24 selected"
        tab.keyboard.press("1")  # ... is labelled Shirts
        tab.wait_for_function(f"{progress}.startsWith('24 / 30')")
        tab.wait_for_function("document.querySelectorAll('#grid .card').length === 6")
        cards = tab.locator("#grid .card")
        cards.nth(0).click()
        cards.nth(3).click(modifiers=["Shift"])  # four, by range
        assert tab.inner_text("#selected-count") == "4 selected"
        tab.keyboard.press("l")
        tab.keyboard.type("Sunglass cases")  # a new label
        tab.keyboard.press("Enter")
        tab.wait_for_function(f"{progress}.startsWith('28 / 30')")
        tab.wait_for_function("document.querySelectorAll('#label-keys .chip').length === 4")
        assert tab.locator("#label-keys .chip").nth(3).inner_text() == "4Sunglass cases"
        tab.keyboard.press("u")  # the four, as one step
        tab.wait_for_function(f"{progress}.startsWith('24 / 30')")
        tab.reload()  # resume: the six still open, nothing lost
        tab.wait_for_function(f"{progress}.startsWith('24 / 30')")
        tab.wait_for_function("document.querySelectorAll('#grid .card').length === 6")
        first = tab.locator("#grid .card").nth(0).get_attribute("data-item")
        tab.keyboard.press("m")  # more like the focused item
        tab.wait_for_function(f"document.querySelector('#grid-title').textContent.startsWith('more like {first}')")
        assert tab.locator("#grid .card").count() == 24 and not tab.locator("#back").is_hidden()
        beyond = [c for c in tab.locator("#grid .card").evaluate_all("cs => cs.map(c => c.dataset.item)") if c not in ids[:30]]
        assert beyond, "some neighbours lie beyond the queue"
        tab.locator(f"#grid .card[data-item='{beyond[0]}']").click()
        tab.keyboard.press("3")
        tab.wait_for_function(f"{progress}.includes('+1 more labelled')")
        tab.wait_for_function(f"document.querySelector(\"#grid .card[data-item='{beyond[0]}']\").textContent.includes('→ Watches')")
        tab.keyboard.press("/")
        tab.keyboard.type("shirt")
        tab.keyboard.press("Enter")
        tab.wait_for_function("document.querySelector('#grid-title').textContent.startsWith('titles with')")
        titles = tab.locator("#grid .card .why").all_inner_texts()
        assert titles and all("shirt" in t.lower() for t in titles)
        tab.keyboard.press("b")
        tab.wait_for_function("document.querySelectorAll('#grid .card').length === 6")
        tab.screenshot(path=str(tmp_path / "label-after.png"), full_page=True)
    assert not errors, errors
    labels = export_decisions(root / "decisions.jsonl", root / "labelled.csv").set_index("id")["label"]
    assert labels.to_dict() == {**{i: "Shirts" for i in ids[:24]}, beyond[0]: "Watches"}


def test_review_a_grid_with_the_keyboard_in_a_real_browser(shop, tmp_path: Path):
    shots = tmp_path / "shots"
    shots.mkdir()
    with _review_page(shop) as (tab, errors):
        tab.wait_for_selector("#grid .card")
        assert tab.locator("#grid .card").count() == 6  # the 'Tshirts' proposals first
        assert "0 / 12 decided" in tab.inner_text("#progress")
        tab.wait_for_function("Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth > 0)")
        tab.screenshot(path=str(shots / "grid.png"))
        tab.keyboard.press("a")  # accept the whole grid
        tab.wait_for_function("document.querySelector('#progress').textContent.startsWith('6 / 12')")
        tab.wait_for_function("document.querySelector('#grid-title').textContent.startsWith('Watches')")
        tab.locator("#grid .card").first.click()  # leave one out
        assert "out" in tab.locator("#grid .card").first.get_attribute("class")
        tab.keyboard.press("r")  # reject the other five
        tab.wait_for_function("document.querySelector('#progress').textContent.startsWith('11 / 12')")
        # the one left out: open it, choose label 1
        tab.keyboard.press("Enter")
        tab.wait_for_selector("#detail-view:not([hidden])")
        assert tab.locator("#explain .card").count() == 2
        tab.keyboard.press("?")
        assert tab.locator("#help").is_visible()
        tab.keyboard.press("Escape")
        tab.keyboard.press("1")
        tab.wait_for_function("document.querySelector('#progress').textContent.startsWith('12 / 12')")
        tab.keyboard.press("u")  # undo it
        tab.wait_for_function("document.querySelector('#progress').textContent.startsWith('11 / 12')")
        tab.keyboard.press("Escape")
        # the title with markup was shown as text, never run
        tab.select_option("#status", "all")
        tab.wait_for_function("document.querySelectorAll('#grid .card').length > 0")
        assert tab.evaluate("document.body.dataset.pwned") is None
        tab.screenshot(path=str(shots / "after.png"), full_page=True)
    assert not errors, errors
    ids = shop["ids"]
    state = DecisionLog(shop["root"] / "decisions.jsonl").state()
    assert {i for (q, i), d in state.items() if d["action"] == "accept"} == set(ids[:6])
    rejected = {i for (q, i), d in state.items() if d["action"] == "reject"}
    assert len(rejected) == 5 and ids[6] not in rejected and (("suspects", ids[6]) not in state)
    labels = export_decisions(shop["root"] / "decisions.jsonl", tmp_path / "reviewed.csv")
    assert len(labels) == 11 and (shots / "after.png").stat().st_size > 0


def test_a_grid_never_decides_more_than_it_shows(shop, tmp_path: Path):
    """30 items of one proposal: the first grid shows 24, and 'a' accepts those 24 only."""
    ids = shop["ids"][:30]
    pd.DataFrame({"id": ids, "label": "Shirts", "suggested": "Tshirts", "score": 0.1, "rank": range(1, 31), "method": "knn",
                  "neighbor_ids": "", "neighbor_labels": "", "neighbor_similarities": ""}).to_csv(shop["root"] / "many.csv", index=False)
    shop = {**shop, "queues": [shop["root"] / "many.csv"]}
    with _review_page(shop) as (tab, _):
        tab.wait_for_selector("#grid .card")
        assert tab.locator("#grid .card").count() == 24 and "1-24 of 30" in tab.inner_text("#grid-title")
        tab.keyboard.press("a")
        tab.wait_for_function("document.querySelector('#progress').textContent.startsWith('24 / 30')")
        tab.wait_for_function("document.querySelectorAll('#grid .card').length === 6")
    state = DecisionLog(shop["root"] / "decisions.jsonl").state()
    assert sorted(i for _, i in state) == sorted(ids[:24])
