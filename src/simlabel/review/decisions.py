"""The reviewer's decisions: an append-only JSON-lines file, durable line by line.

Each decision is one line ``{"id", "queue", "kind", "item", "old", "new", "proposed", "action", "time", ...}``:

* ``accept``: the proposal is right (``new`` = the proposal);
* ``reject``: the proposal is wrong (``new`` = the given label for a suspect or a flip, which then stands;
  empty for an augmented or weighted label, which is wrong with no replacement known);
* ``relabel``: the reviewer chose ``new`` (a label from the alternatives, or typed for a basis image);
* ``skip``: looked at, left open;
* ``undo``: takes back the item's latest decision.

A write appends whole lines under an exclusive ``flock`` on the file, then ``fsync``: a killed server loses
no decision it answered, and two servers (or two tabs) on one file never interleave a line. A line cut by a
crash mid-write is the last one and is ignored on reading (said in :attr:`DecisionLog.damaged`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from simlabel.errors import InputError

ACTIONS = ("accept", "reject", "relabel", "skip", "undo")


class DecisionLog:
    """``decisions.jsonl``: :meth:`append` decisions, :meth:`records` read them back, :meth:`state` the
    latest decision of every item."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; `decisions` takes a .jsonl file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.damaged = 0

    def append(self, records: Iterable[dict]) -> list[dict]:
        """Append decisions (each gets ``time``), durably, and return them as written."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        out = []
        for r in records:
            if r.get("action") not in ACTIONS:
                raise InputError(f"action must be one of {', '.join(ACTIONS)}; got {r.get('action')!r}")
            out.append({**r, "time": r.get("time") or now})
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                # a line cut by a crash must not swallow the next one: start on a fresh line
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return out

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def records(self) -> list[dict]:
        """Every decision in order (a damaged line, from a crash mid-write, is skipped and counted)."""
        if not self.path.exists():
            return []
        out, self.damaged = [], 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    self.damaged += 1
                    continue
                if isinstance(rec, dict) and rec.get("action") in ACTIONS:
                    out.append(rec)
                else:
                    self.damaged += 1
        return out

    def state(self) -> dict[tuple[str, str], dict]:
        """``(queue, item) -> the item's standing decision``: the latest, undos taken back in order,
        skips not counted as decisions."""
        return standing(self.records())


def standing(records: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """The standing decision of each item from a log's records (see :class:`DecisionLog`)."""
    stacks: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        key = (str(r.get("queue")), str(r.get("item", r.get("id"))))
        if r["action"] == "undo":
            if stacks.get(key):
                stacks[key].pop()
        elif r["action"] != "skip":
            stacks.setdefault(key, []).append(r)
    return {k: v[-1] for k, v in stacks.items() if v}
