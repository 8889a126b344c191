"""Outputs and stores on object storage (``s3://``, ``gs://``, ``az://``, ...), through fsspec.

Every producer (``embed``, ``graph``, ``predict``, ``audit``) writes a local folder with the guarantees of
:mod:`simlabel.files`: atomic files, a manifest written last, one writer. On object storage there is no
rename and no ``flock``, so a URL ``out`` is *staged*:

* the producer writes a local working copy (``$SIMLABEL_CACHE/remote/out/<key>``) as it always does;
* :meth:`RemoteFolder.publish` puts the files that changed since the last publish, each with one PUT (an
  object is whole or absent: a reader never sees half of one), then the folder's **published set**
  ``_simlabel_files.json`` (every file's size and BLAKE2b digest) *last*. A file is part of the output only
  once the published set lists it, so a key put by a writer that was killed before publishing is never read;
  objects no longer listed are deleted after the set is published. ``embed`` publishes after every shard, so
  a resume loses at most one shard;
* readers (and a resuming writer) trust the published set, not a listing: :meth:`RemoteFolder.pull` fetches
  the files it lists into the working copy, checks each digest, and removes local files it does not list.
  A file replaced between the set and the read (a writer publishing meanwhile) fails its digest; the set is
  read again (three times at most).

One writer per output: a **lease object** ``_simlabel_lease.json`` created with a conditional put
(``If-None-Match: *``: the second writer's put fails) and renewed with ``If-Match`` on its ETag while the
writer runs. A lease whose holder stopped renewing it (``LEASE_SECONDS``) or whose process is gone (same host,
dead pid: a killed run resumed on its machine) is taken over, again conditionally. S3 (and S3-protocol
stores: MinIO, R2, moto) offer these puts; on a filesystem that does not (``gs://``, ``az://`` through
fsspec, ``memory://``) an output is refused unless the caller promises one writer (``single_writer``, the
command line's ``--single-writer``).

Options: fsspec's ``storage_options`` (credentials, ``client_kwargs={"endpoint_url": ...}``) from
:data:`simlabel.context.STORAGE_OPTIONS` (the command line's ``--storage-options JSON``); without them, the
filesystem's own defaults: the standard environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``...).
No URL is written with its credentials: :func:`redact`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from simlabel.cache import cache_dir
from simlabel.context import SINGLE_WRITER, STORAGE_OPTIONS, WAIT_FOR_LOCKS
from simlabel.errors import InputError, LockedError, StoreError
from simlabel.files import atomic_path, exclusive, kill_point

__all__ = [
    "LEASE_NAME",
    "LEASE_SECONDS",
    "PUBLISHED_NAME",
    "RemoteFolder",
    "adopt",
    "checkpoint",
    "destination",
    "file_info",
    "filesystem",
    "is_url",
    "lease",
    "local_copy",
    "redact",
    "shown",
    "staged_output",
    "writes_to_url",
]

#: the published set: the files of the output, their sizes and digests; written last
PUBLISHED_NAME = "_simlabel_files.json"
PUBLISHED_FORMAT = "simlabel.published-set"
#: the one-writer lease object
LEASE_NAME = "_simlabel_lease.json"
#: a lease not renewed for this long is taken over (renewed every third of it)
LEASE_SECONDS = 60.0
#: filesystems whose conditional puts make the lease safe (fsspec protocol names)
CONDITIONAL_PUT = ("s3", "s3a")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SKIP = {PUBLISHED_NAME, LEASE_NAME}
_CURRENT: ContextVar["RemoteFolder | None"] = ContextVar("simlabel_remote_folder", default=None)


def is_url(value: object) -> bool:
    """Whether ``value`` is a URL (``scheme://...``) rather than a local path; ``file://`` is a URL too."""
    return isinstance(value, str) and bool(_URL.match(value))


def redact(uri: str) -> str:
    """``uri`` without its credentials: the user and password, the query string and the fragment.

    A signed URL's query holds its signature (``X-Amz-Signature``, ``sig``, ``token``); every URL simlabel
    writes (``errors.csv``, manifests, logs, error messages) goes through here.

    Examples
    --------
    >>> redact("https://user:secret@cdn.shop.com/img/1.jpg?X-Amz-Signature=abc#x")
    'https://cdn.shop.com/img/1.jpg?<redacted>'
    >>> redact("s3://bucket/a.jpg")
    's3://bucket/a.jpg'
    >>> redact("/data/img/1.jpg")
    '/data/img/1.jpg'
    """
    if not is_url(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "<redacted>" if parts.query else "", ""))


def storage_options(options: dict | None = None) -> dict:
    """``options``, else the block's :data:`~simlabel.context.STORAGE_OPTIONS`, else ``{}``."""
    chosen = STORAGE_OPTIONS.get() if options is None else options
    if chosen is not None and not isinstance(chosen, dict):
        raise InputError(f"storage_options must be a dict (fsspec's options); got {type(chosen).__name__}")
    return dict(chosen or {})


def filesystem(url: str, options: dict | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it (``bucket/key``).

    Raises
    ------
    InputError
        No fsspec filesystem for the URL's scheme (the message names the package to install).
    """
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **storage_options(options))
    except ImportError as e:  # e.g. gcsfs missing for gs://
        raise InputError(f"{redact(url)}: no filesystem for this scheme here ({e}); install its fsspec package") from None
    except ValueError as e:
        raise InputError(f"{redact(url)}: {e}") from None


_STORAGE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "google", "azure")


@contextlib.contextmanager
def _storage_errors(url: str, doing: str) -> Iterator[None]:
    """The store's own failures (no credentials, no bucket, access denied, no connection) as a
    :class:`~simlabel.errors.StoreError` naming the URL; anything else (a bug) keeps its traceback."""
    try:
        yield
    except (StoreError, LockedError):
        raise
    except Exception as e:
        if isinstance(e, OSError) or type(e).__module__.split(".")[0] in _STORAGE_MODULES:
            raise StoreError(f"{redact(url)}: cannot {doing} ({type(e).__name__}: {e}); check the URL, the credentials "
                             "and `storage_options` (--storage-options)") from e
        raise


def _key(url: str, options: dict) -> str:
    # two servers may hold a bucket of one name (an endpoint in the options): the options are in the key
    text = json.dumps([url.rstrip("/"), options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_info(path: str | os.PathLike) -> dict:
    """A file's entry in a published set: its size and BLAKE2b-128 (hex)."""
    return {"size": Path(path).stat().st_size, "blake2b": _digest(Path(path))}


def _local_files(root: Path) -> dict[str, os.stat_result]:
    """Every file of the working copy by its relative POSIX path, but locks and killed writes' leftovers."""
    found = {}
    for p in root.rglob("*"):
        name = p.name
        if name.endswith((".lock", ".tmp", ".old")) or name in _SKIP or not p.is_file():
            continue
        found[p.relative_to(root).as_posix()] = p.stat()
    return found


class RemoteFolder:
    """A folder on object storage and its local working copy (see the module docstring).

    Parameters
    ----------
    url : str
        The folder, e.g. ``s3://bucket/run/emb``.
    local : pathlib.Path
        The working copy.
    options : dict, optional
        fsspec's storage options (default: :func:`storage_options`).
    """

    def __init__(self, url: str, local: Path, options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = storage_options(options)
        self.fs, self.root = filesystem(self.url, self.options)
        self.root = self.root.rstrip("/")
        self.local = Path(local)
        self.local.mkdir(parents=True, exist_ok=True)
        self._sent: dict[str, tuple[int, int, str]] = {}  # relpath -> (size, mtime_ns, digest) as published
        self.lease: Lease | None = None
        self.last_published = time.monotonic()
        #: files put by other processes (Ray workers) straight to the store, listed without a local copy
        self._adopted: dict[str, dict] = {}

    def __repr__(self) -> str:
        return f"RemoteFolder({redact(self.url)!r}, local={str(self.local)!r})"

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def published(self) -> dict | None:
        """The published set (``{"files": {relpath: {"size", "blake2b"}}, ...}``), or None before the first."""
        try:
            with _storage_errors(self.url, "read its published set"):
                raw = self.fs.cat_file(self._remote(PUBLISHED_NAME))
        except StoreError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None
            raise
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{redact(self.url)}/{PUBLISHED_NAME}: not JSON; the output's published set is damaged") from None
        if doc.get("format") != PUBLISHED_FORMAT or not isinstance(doc.get("files"), dict):
            raise StoreError(f"{redact(self.url)}/{PUBLISHED_NAME}: not a simlabel published set")
        return doc

    def pull(self, *, attempts: int = 3) -> int:
        """Make the working copy what the published set lists; return the number of files fetched.

        Raises
        ------
        StoreError
            A file still differs from its listed digest after ``attempts`` reads of the set, or the store
            cannot be read.
        """
        with _storage_errors(self.url, "read"):
            return self._pull(attempts)

    def _pull(self, attempts: int) -> int:
        self._adopted.clear()  # every listed file is fetched below
        for attempt in range(attempts):
            doc = self.published()
            listed = {} if doc is None else doc["files"]
            here = _local_files(self.local)
            for rel in set(here) - set(listed):  # written by a run that never published it: not part of the output
                (self.local / rel).unlink()
            fetched, stale = 0, []
            for rel, info in sorted(listed.items()):
                target = self.local / rel
                st = here.get(rel)
                if st is not None and st.st_size == info["size"] and _digest(target) == info["blake2b"]:
                    self._sent[rel] = (st.st_size, st.st_mtime_ns, info["blake2b"])
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    try:
                        self.fs.get_file(self._remote(rel), str(tmp))
                    except FileNotFoundError:
                        stale.append(rel)
                        continue
                    if _digest(tmp) != info["blake2b"]:
                        stale.append(rel)
                        continue
                st = target.stat()
                self._sent[rel] = (st.st_size, st.st_mtime_ns, info["blake2b"])
                fetched += 1
            if not stale:
                return fetched
            time.sleep(0.2 * (attempt + 1))  # a writer was publishing: read its new set
        raise StoreError(f"{redact(self.url)}: {len(stale)} file(s) differ from the published set after {attempts} reads "
                         f"(first: {stale[0]}); is another process writing it?")

    def adopt(self, files: dict[str, dict]) -> None:
        """List ``files`` (relpath -> :func:`file_info`), put to the store by another process, at the next publish."""
        self._adopted.update(files)

    def publish(self) -> int:
        """Put the files that changed since the last publish, then the published set; return the files put.

        Raises
        ------
        LockedError
            The lease was lost (taken over by another writer): nothing is published.
        StoreError
            The store cannot be written.
        """
        with _storage_errors(self.url, "write"):
            return self._publish()

    def _publish(self) -> int:
        if self.lease is not None:
            self.lease.check()
        here = _local_files(self.local)
        files, put = {}, 0
        for rel, st in sorted(here.items()):
            sent = self._sent.get(rel)
            if sent is not None and sent[:2] == (st.st_size, st.st_mtime_ns):
                files[rel] = {"size": sent[0], "blake2b": sent[2]}
                continue
            digest = _digest(self.local / rel)
            if sent is None or sent[2] != digest:
                self.fs.put_file(str(self.local / rel), self._remote(rel))
                put += 1
            self._sent[rel] = (st.st_size, st.st_mtime_ns, digest)
            files[rel] = {"size": st.st_size, "blake2b": digest}
        for rel, info in self._adopted.items():
            files.setdefault(rel, info)
        kill_point("remote:before-published-set")
        if self.lease is not None:
            self.lease.check()
        doc = {"format": PUBLISHED_FORMAT, "files": files,
               "published": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.fs.pipe_file(self._remote(PUBLISHED_NAME), json.dumps(doc, indent=1, sort_keys=True).encode())
        self.last_published = time.monotonic()
        gone = [rel for rel in list(self._sent) if rel not in here and rel not in self._adopted]
        for rel in gone:  # after the set: a reader of the old set may still be fetching them until then
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._remote(rel))
            del self._sent[rel]
        return put


class Lease:
    """A held lease object (see :func:`lease`): renewed in a thread; :meth:`check` raises once it is lost."""

    def __init__(self, fs: Any, key: str, url: str, etag: str, ttl: float) -> None:
        self.fs, self.key, self.url, self.etag, self.ttl = fs, key, url, etag, ttl
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="simlabel-lease", daemon=True)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def check(self) -> None:
        if self.lost:
            raise LockedError(f"{redact(self.url)}: the one-writer lease was lost ({self.lost}); nothing more is published")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.etag = _put_lease(self.fs, self.key, self.ttl, if_match=self.etag)
            except Exception as e:  # noqa: BLE001 - a lost lease stops the writer at its next publish
                self.lost = f"{type(e).__name__}: {e}"
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self.lost:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.key)


def _lease_body(ttl: float) -> bytes:
    now = time.time()
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "expires": now + ttl}).encode()


def _bucket_key(key: str) -> tuple[str, str]:
    bucket, _, rest = key.partition("/")
    return bucket, rest


def _put_lease(fs: Any, key: str, ttl: float, *, if_match: str | None = None, create: bool = False) -> str:
    """Put the lease conditionally (``If-None-Match: *`` or ``If-Match: etag``); return its new ETag."""
    bucket, path = _bucket_key(key)
    cond = {"IfNoneMatch": "*"} if create else {"IfMatch": if_match}
    out = fs.call_s3("put_object", Bucket=bucket, Key=path, Body=_lease_body(ttl), **cond)
    return out["ETag"]


def _precondition_failed(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}"
    return isinstance(e, FileExistsError) or "PreconditionFailed" in text or "pre-condition" in text or "412" in text


def _holder_gone(info: dict) -> bool:
    """Whether the lease's holder is a process of this host that no longer runs, or one that stopped renewing."""
    if time.time() > float(info.get("expires", 0)):
        return True
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


@contextlib.contextmanager
def lease(folder: RemoteFolder, *, wait: bool | None = None, single_writer: bool | None = None,
          ttl: float = LEASE_SECONDS, poll: float = 1.0) -> Iterator[Lease | None]:
    """Hold the one-writer lease of ``folder`` for the block (``None`` with ``single_writer`` on a store
    without conditional puts).

    Raises
    ------
    LockedError
        Another live writer holds it (and ``wait`` is false), naming its host and pid.
    StoreError
        The store offers no conditional put and ``single_writer`` is false.
    """
    wait = WAIT_FOR_LOCKS.get() if wait is None else wait
    single = SINGLE_WRITER.get() if single_writer is None else single_writer
    protocol = folder.fs.protocol if isinstance(folder.fs.protocol, str) else folder.fs.protocol[0]
    if protocol not in CONDITIONAL_PUT or not hasattr(folder.fs, "call_s3"):
        if not single:
            raise StoreError(
                f"{redact(folder.url)}: {protocol}:// offers no conditional put here, so simlabel cannot keep a second "
                "writer out; pass `single_writer` (--single-writer) if no other process writes this output")
        yield None
        return
    key = folder._remote(LEASE_NAME)
    with _storage_errors(folder.url, "take its one-writer lease"):
        held = _acquire(folder, key, wait, ttl, poll)
    held.start()
    try:
        yield held
    finally:
        held.release()


def _acquire(folder: RemoteFolder, key: str, wait: bool, ttl: float, poll: float) -> Lease:
    while True:
        try:
            held = Lease(folder.fs, key, folder.url, _put_lease(folder.fs, key, ttl, create=True), ttl)
            break
        except Exception as e:
            if not _precondition_failed(e):
                raise
        try:  # read afresh (fsspec caches listings; a stale ETag would never match)
            info = folder.fs.info(key, refresh=True)
            body = json.loads(folder.fs.cat_file(key))
        except FileNotFoundError:
            continue  # released meanwhile: try again
        if _holder_gone(body):
            try:  # take it over, conditionally: of two takers, one wins
                held = Lease(folder.fs, key, folder.url, _put_lease(folder.fs, key, ttl, if_match=info["ETag"]), ttl)
                break
            except Exception as e:
                if not _precondition_failed(e):
                    raise
                continue
        if not wait:
            raise LockedError(f"{redact(folder.url)} is being written by another simlabel process (host "
                              f"{body.get('host')}, pid {body.get('pid')}, since {body.get('since')}); wait for it to "
                              "finish, or pass `wait`")
        time.sleep(poll * (0.5 + random.random()))
    return held


def _copy_dir(kind: str, url: str, options: dict) -> Path:
    return cache_dir("remote", kind, _key(url, options))


@contextlib.contextmanager
def staged_output(url: str, *, wait: bool | None = None, single_writer: bool | None = None,
                  options: dict | None = None) -> Iterator[RemoteFolder]:
    """Hold ``url``'s lease, pull what it has published into the working copy, yield the folder, and publish
    it when the block ends without an error (:func:`checkpoint` publishes within it)."""
    opts = storage_options(options)
    folder = RemoteFolder(url, _copy_dir("out", url, opts), opts)
    with lease(folder, wait=wait, single_writer=single_writer) as held:
        folder.lease = held
        folder.pull()
        token = _CURRENT.set(folder)
        try:
            yield folder
            folder.publish()
        finally:
            _CURRENT.reset(token)


def checkpoint(min_interval: float = 0.0) -> None:
    """Publish the staged output of this block, if any (a producer calls it after each durable unit: a shard),
    unless it was published less than ``min_interval`` seconds ago (units of a second or less: a graph's blocks)."""
    folder = _CURRENT.get()
    if folder is not None and time.monotonic() - folder.last_published >= min_interval:
        folder.publish()


def _staged(path: str | os.PathLike) -> tuple[RemoteFolder, str] | None:
    """This block's staged output and ``path``'s place in it (``""`` or ``"/sub/name"``), when ``path`` lies in its
    working copy."""
    folder = _CURRENT.get()
    if folder is None:
        return None
    local, text = str(folder.local), str(path)
    if text != local and not text.startswith(local + os.sep):
        return None
    return folder, text[len(local):].replace(os.sep, "/")


def destination(path: str | os.PathLike) -> dict | None:
    """Where another process (a Ray worker) puts files meant for ``path``: ``{"url", "storage_options"}`` when
    ``path`` lies in this block's staged output (the folder it is published to), else None (write ``path`` itself)."""
    staged = _staged(path)
    if staged is None:
        return None
    folder, rest = staged
    return {"url": folder.url + rest, "storage_options": folder.options}


def adopt(files: dict[str, dict], at: str | os.PathLike) -> None:
    """List ``files`` (relpath -> :func:`file_info`, relative to the local folder ``at`` of this block's staged
    output), which another process put straight to the store, at the output's next publish."""
    staged = _staged(at)
    if staged is not None:
        folder, rest = staged
        folder.adopt({f"{rest}/{rel}".lstrip("/"): info for rel, info in files.items()})


def shown(path: str | os.PathLike) -> str:
    """How to name ``path`` to a user: its URL when it lies in this block's staged output, else itself."""
    staged = _staged(path)
    if staged is None:
        return str(path)
    folder, rest = staged
    return redact(folder.url) + rest


def local_copy(url: str, options: dict | None = None) -> Path:
    """A local copy of the output published at ``url`` (an embedding store, a graph), refreshed from its
    published set; the copy is kept (``$SIMLABEL_CACHE/remote/in``), so a second read fetches only what changed.

    Raises
    ------
    StoreError
        Nothing is published at ``url``.
    """
    opts = storage_options(options)
    url = url.rstrip("/")
    # a folder inside an output (a store's text/ sub-store) is read through the output that published it
    head, inside = url, ""
    for _ in range(3):
        folder = RemoteFolder(head, _copy_dir("in", head, opts), opts)
        doc = folder.published()
        if doc is not None and (not inside or any(f.startswith(inside + "/") for f in doc["files"])):
            break
        parent, _, name = head.rpartition("/")
        if not parent or parent.endswith(":/"):
            doc = None
            break
        head, inside = parent, f"{name}/{inside}".rstrip("/")
    if doc is None:
        raise StoreError(f"{redact(url)}: nothing published there (no {PUBLISHED_NAME}); was it written by simlabel "
                         "and did the writer finish a first unit?")
    with exclusive(folder.local, wait=True):  # two readers in this machine share the copy
        folder.pull()
    return folder.local / inside if inside else folder.local


F = TypeVar("F", bound=Callable[..., Any])


def writes_to_url(param: str = "out") -> Callable[[F], F]:
    """Decorate a producer so that its ``param`` may be a URL: the call runs on the staged working copy
    (:func:`staged_output`) and publishes it at the end; a local ``param`` calls the producer as it is."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            target = bound.arguments.get(param)
            if isinstance(target, str) and target.startswith("file://"):
                bound.arguments[param] = urlsplit(target).path  # a local folder: the local guarantees apply
                return fn(*bound.args, **bound.kwargs)
            if not is_url(target):
                return fn(*args, **kwargs)
            wait = bound.arguments.get("wait")
            with staged_output(str(target), wait=wait if isinstance(wait, bool) else None) as folder:
                bound.arguments[param] = folder.local
                return fn(*bound.args, **bound.kwargs)

        return call  # type: ignore[return-value]

    return wrap
