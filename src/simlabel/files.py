"""Writing files so that nothing half written or mixed is ever read, and reading small CSVs.

* :func:`atomic_path` / :func:`atomic_write`: one file, written to a temporary name in its
  folder and renamed into place (``os.replace`` is atomic on POSIX), with the user's
  normal permissions (umask), never ``mkstemp``'s 0600.
* :func:`write_set`: files that belong together (a label file, its summary and its
  holdout; an index and its two sidecars). The manifest (the summary) is first marked
  ``writing``, then the members are renamed into place, then the manifest is written with
  every member's digest and the run that made it. A member the run does not write is
  removed, so no stale companion of an earlier run survives. :func:`check_member` refuses
  a file whose manifest is incomplete or does not match it.
* :func:`atomic_dir`: a folder (a model) built beside its target and swapped in.
* :func:`exclusive`: one writer per output: an OS lock (released when the process dies);
  a second writer fails at once with the holder's pid and start time, or waits.
* :func:`read_csv_table`: every small CSV users hand simlabel, with messages that name the
  file, and the row and column where they can.

Kill tests set ``$SIMLABEL_TEST_KILL_AT`` to a point name (:func:`kill_point`) to die
exactly between two writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from simlabel.context import WAIT_FOR_LOCKS
from simlabel.errors import LabelFileError, LockedError, StoreError

__all__ = [
    "KILL_ENV",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_member",
    "verify_member",
    "exclusive",
    "file_digest",
    "kill_point",
    "read_csv_table",
    "read_json",
    "run_record",
    "write_set",
]

KILL_ENV = "SIMLABEL_TEST_KILL_AT"
SET_FORMAT = "simlabel.fileset"
#: companions a main output may have, named ``<main><suffix>``; a member's manifest is ``<main>.summary.json``
COMPANION_SUFFIXES = (".summary.json", ".holdout.csv")
MANIFEST_SUFFIX = ".summary.json"
_DIGEST_FULL_MAX = 256 << 20  # hash whole files up to 256 MiB; larger ones by size, head and tail


def _read_umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(old)
    return old


_UMASK = _read_umask()


def kill_point(name: str) -> None:
    """For tests: die here (SIGKILL, no cleanup) when ``$SIMLABEL_TEST_KILL_AT`` is ``name``."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _new_temp(final: Path, *, directory: bool = False) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def remove_stale_temps(final: str | os.PathLike) -> int:
    """Remove what killed writes of ``final`` left beside it (``.<name>.*.tmp``, ``.<name>.*.old``).

    Call it while holding :func:`exclusive` on ``final``: then no live writer owns them.
    """
    final = Path(final)
    n = 0
    for pattern in (f".{final.name}.*.tmp", f".{final.name}.*.old"):
        for p in final.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed onto ``final``.

    The file gets the permissions a plain ``open()`` would give (``0o666 & ~umask``). On any
    exception the temporary file is removed and ``final`` is left as it was.
    """
    final = Path(final)
    tmp = _new_temp(final)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (unknown types via ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, what: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable or malformed file is an error naming it."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{p}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{p}: {what} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{p}: {what} is not a JSON object")
    return obj


# -- provenance --------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (of its size, first and last 4 MiB when larger than 256 MiB)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        if size <= _DIGEST_FULL_MAX:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(4 << 20))
            f.seek(-(4 << 20), os.SEEK_END)
            h.update(f.read(4 << 20))
    return h.hexdigest()


def run_record() -> dict:
    """Which run made an output: a fresh id, the time, pid, host and command line."""
    return {
        "id": uuid.uuid4().hex[:12],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "argv": list(sys.argv),
    }


# -- sets of files -----------------------------------------------------------------------------


def write_set(
    manifest: str | os.PathLike,
    members: Mapping[str | os.PathLike, Callable[[Path], None] | None],
    info: Mapping | None = None,
) -> dict:
    """Write files that belong together so that a reader never takes a mixed set.

    Parameters
    ----------
    manifest
        The set's manifest (e.g. ``OUT.summary.json``): it lists every member with its digest
        and the run that made it, plus ``info`` (the summary).
    members
        final path -> ``write(tmp_path)``, or ``None`` for a companion this run does not make:
        an old file there is removed, so no earlier run's companion survives beside new ones.
    info
        More keys for the manifest.

    Returns
    -------
    dict
        The manifest written.

    Order: every member is written to a temporary file; the manifest is marked ``writing``;
    the members are renamed into place (and the unmade ones removed); the manifest is written
    with the digests. A kill at any point leaves either the old complete set, or a set whose
    manifest says ``writing`` or does not match: :func:`check_member` refuses both.
    """
    manifest = Path(manifest)
    temps: dict[Path, Path] = {}
    try:
        for final, write in members.items():
            if write is not None:
                final = Path(final)
                tmp = _new_temp(final)
                write(tmp)
                os.chmod(tmp, 0o666 & ~_UMASK)
                temps[final] = tmp
        run = run_record()
        atomic_write_json(manifest, {"format": SET_FORMAT, "state": "writing", "run": run})
        kill_point("set:writing")
        for i, (final, tmp) in enumerate(temps.items()):
            os.replace(tmp, final)
            kill_point(f"set:member-{i}")
        for final, write in members.items():
            if write is None:
                Path(final).unlink(missing_ok=True)
        record = {
            **dict(info or {}),
            "format": SET_FORMAT,
            "state": "complete",
            "run": run,
            "members": {str(Path(f).name): {"sha256": file_digest(f)} for f in temps},
        }
        atomic_write_json(manifest, record)
        return record
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def manifest_of(path: str | os.PathLike) -> Path | None:
    """The manifest ``<main>.summary.json`` a file belongs to, if there is one."""
    p = Path(path)
    name = p.name
    candidates = [p.with_name(name + MANIFEST_SUFFIX)]
    for suffix in COMPANION_SUFFIXES:
        if name.endswith(suffix):
            candidates.append(p.with_name(name[: -len(suffix)] + MANIFEST_SUFFIX))
    for c in candidates:
        if c.is_file() and c != p:
            return c
    return None


def check_member(path: str | os.PathLike, error: type[Exception] = StoreError) -> dict | None:
    """Refuse ``path`` when it belongs to an output set that is incomplete or mixed.

    A file without a manifest (one a user made) passes and gives ``None``; otherwise the
    manifest is returned. Raises ``error`` naming the file, the manifest and what to do.
    """
    p = Path(path)
    m = manifest_of(p)
    if m is None:
        return None
    try:
        record = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"{m}: the summary of {p.name} is not valid JSON ({e}); rerun the command that wrote {p.name}") from None
    if not isinstance(record, dict) or record.get("format") != SET_FORMAT:
        return None  # an older simlabel's summary, or someone else's file: no claim to check
    verify_member(record, m, p, error)
    return record


def verify_member(record: dict, manifest: Path, path: Path, error: type[Exception] = StoreError) -> None:
    """Raise ``error`` unless ``record`` (a complete set manifest read from ``manifest``) lists
    ``path`` with its current digest."""
    if record.get("state") != "complete":
        raise error(f"{path}: the run that wrote it (see {manifest.name}) did not finish; rerun it")
    member = record.get("members", {}).get(path.name)
    if member is None:
        raise error(f"{path}: not written by the run recorded in {manifest.name} (a stale file of an earlier run); rerun the command")
    if file_digest(path) != member.get("sha256"):
        raise error(
            f"{path}: does not match {manifest.name} (another run, or an edit, changed it after); rerun the command, "
            f"or delete {manifest.name} if you edited the file on purpose"
        )


# -- folders -----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it replaces ``final``.

    The old folder is moved aside, the new one renamed in, the old one deleted: a reader sees
    the old folder, no folder, or the new one, never a mix. On an exception the temporary
    folder is removed and ``final`` stays.
    """
    final = Path(final)
    tmp = _new_temp(final, directory=True)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.rename(final, old)
        kill_point("dir:swapped-out")
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- one writer per output ---------------------------------------------------------------------






def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, *, wait: bool | None = None, poll: float = 0.5) -> Iterator[Path]:
    """Hold the one-writer lock of ``target`` (a file or folder) for the block.

    The lock is ``.<name>.lock`` beside the target, an OS lock (``flock``) that the kernel
    releases when the process dies, so a crash never leaves it held; the file is removed
    when the lock is let go (a killed holder leaves it, and the next writer takes it over).
    Leftovers of killed writes of ``target`` are removed once the lock is held.

    Raises
    ------
    LockedError
        When another process holds it and ``wait`` is false, naming that process.
    """
    target = Path(target)
    wait = WAIT_FOR_LOCKS.get() if wait is None else wait
    lock = _lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            os.close(fd)
            if not wait:
                raise LockedError(f"{target} is being written by another simlabel process ({holder}); "
                                  "wait for it to finish, or pass `wait`") from None
            time.sleep(poll)
            continue
        try:  # the holder before us may have removed the file as it let go: then lock the new one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "argv": sys.argv}).encode())
        remove_stale_temps(target)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still held: a waiter that locked the old file retries on the new one
        os.close(fd)  # releases the lock


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "holder unknown"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


# -- small CSV files ---------------------------------------------------------------------------


def read_csv_table(path: str | os.PathLike, columns: Sequence[str], what: str, *, allow_empty: bool = False) -> pd.DataFrame:
    """A small CSV as strings, empty cells as ``""``, with the ``columns`` it must have.

    Parameters
    ----------
    path
        The CSV file.
    columns
        Columns that must be present (others are kept).
    what
        What the file is, for messages (``"label file"``, ``"holdout file"`` ...).
    allow_empty
        Accept a file with a header and no rows.

    Raises
    ------
    LabelFileError
        Naming the file when it is missing or a folder, cannot be parsed, has no header or no
        rows, lacks one of ``columns``, or belongs to an incomplete output set
        (:func:`check_member`).
    """
    p = Path(path)
    if p.is_dir():
        raise LabelFileError(f"{p}: is a folder; expected a {what} (a CSV file)")
    if not p.exists():
        raise LabelFileError(f"{p}: {what} not found")
    check_member(p, LabelFileError)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LabelFileError(f"{p}: {what} is empty (no header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LabelFileError(f"{p}: cannot parse {what} as CSV: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelFileError(
            f"{p}: {what} is missing column(s) {', '.join(missing)}; columns are {', '.join(map(str, df.columns))}"
        )
    if df.empty and not allow_empty:
        raise LabelFileError(f"{p}: {what} has a header ({', '.join(map(str, df.columns))}) but no rows")
    return df
