"""Image bytes from where a catalog says they are: ``http(s)://`` URLs and fsspec URLs (``s3://``, ``gs://``...).

A shop's product feed lists its photos as URLs (``image_link``) or as keys in object storage. A
:class:`Fetcher` reads them concurrently, a bounded number at once, so the network overlaps decoding and
inference (the embedder asks for the bytes of items a window ahead of the model):

* **HTTP** through one aiohttp session on an event loop of its own (a pool of kept-alive connections; a third of
  the CPU per request of a thread per request, RESULTS.md §19): at most :attr:`FetchConfig.concurrency`
  requests at once and :attr:`FetchConfig.per_host` to one host; a connect / read timeout; redirects followed up to :attr:`FetchConfig.max_redirects`; a body read only up to
  :attr:`FetchConfig.max_bytes` (a ``Content-Length`` above it is refused before the body is read).
* **Retries** on what a retry can fix: 408, 429 and 5xx answers, timeouts and broken connections, with
  exponential backoff and jitter (``backoff * 2**attempt``, times a uniform factor in [0.5, 1.5), at most
  ``max_backoff``). A ``Retry-After`` (seconds or an HTTP date) is honoured when it asks for longer; one
  over ``max_retry_after`` is not waited for (the item fails ``http-429`` and ``--retry-failed`` takes it later).
* **Object storage** through fsspec (``storage_options`` from :data:`simlabel.context.STORAGE_OPTIONS` or the
  standard environment variables), with the same byte limit and retries on its transient errors.
* **Failures** raise :class:`FetchError` with a short reason a user can act on: ``http-404``, ``http-403``,
  ``http-500``... (``http-<status>``), ``timeout``, ``dns``, ``connection``, ``too-large``, ``redirects``,
  ``missing`` and ``forbidden`` (object storage), ``bad-url``. The embedder records it in ``errors.csv``
  and goes on.
* **A byte cache** (:attr:`FetchConfig.cache_dir`, the command line's ``--fetch-cache DIR``) keeps what was
  fetched, by a digest of the full URL, written atomically; a URL found there is not fetched again.

Every URL this module names in a message is :func:`simlabel.remote.redact`-ed (no userinfo, no query).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import json
import random
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from simlabel.checks import in_range, positive_int
from simlabel.errors import InputError
from simlabel.files import atomic_write
from simlabel.remote import filesystem, is_url, redact, storage_options

__all__ = ["FETCH_REASONS", "FetchConfig", "FetchError", "Fetcher", "is_remote_source", "read_source"]

#: the fixed reasons of :class:`FetchError` (and ``http-<status>`` for any other HTTP answer)
FETCH_REASONS: Final[tuple[str, ...]] = ("timeout", "dns", "connection", "too-large", "redirects", "missing",
                                         "forbidden", "bad-url", "unreadable")
_RETRY_STATUS: Final[frozenset[int]] = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_remote_source(source: object) -> bool:
    """Whether an image source is a URL to fetch (``http(s)://``, ``s3://``...) rather than a local path."""
    return is_url(source)


class FetchError(Exception):
    """A source that could not be fetched: ``.reason`` (see :data:`FETCH_REASONS`), ``.uri`` (redacted), ``.detail``."""

    def __init__(self, reason: str, uri: str, detail: str) -> None:
        if reason not in FETCH_REASONS and not (reason.startswith("http-") and reason[5:].isdigit()):
            raise InputError(f"unknown FetchError reason {reason!r}")
        self.reason, self.uri, self.detail = reason, redact(uri), detail
        super().__init__(f"cannot fetch {self.uri!r} ({reason}): {detail}")

    def __reduce__(self) -> tuple[type[FetchError], tuple[str, str, str]]:  # survives a process pool's pickling
        return (type(self), (self.reason, self.uri, self.detail))


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How images are fetched (see the module docstring).

    Parameters
    ----------
    concurrency : int, default 32
        Fetches in flight at once.
    per_host : int, default 32
        Of them, at most this many to one host (be kind to a small shop's server: lower it).
    timeout : float, default 30
        Seconds to connect, and between two reads of a body.
    retries : int, default 4
        Tries after the first, on 408/425/429/5xx answers, timeouts and broken connections.
    backoff, max_backoff : float, default 0.5 and 30
        The first retry waits about ``backoff`` seconds, each next one twice as long, at most ``max_backoff``.
    max_retry_after : float, default 120
        A ``Retry-After`` asking for longer than this is not waited for: the item fails with its status.
    max_bytes : int, default 64 MiB
        A body larger than this is not read (``too-large``): the pixel budget guards decoding, this the download.
    max_redirects : int, default 5
        Redirects followed before ``redirects``.
    cache_dir : str, optional
        Keep the fetched bytes here, by URL; a URL found here is not fetched again.
    window : int, default 256
        Images fetched ahead of the one being decoded. The lead lets a retry (its backoff) finish before its
        image's turn (RESULTS.md §19). Memory: at most ``window`` fetched bodies, each at most ``max_bytes``
        (for product photos of ~50 KB, about 13 MB).

    Examples
    --------
    >>> from simlabel import FetchConfig
    >>> FetchConfig(concurrency=64, per_host=8, retries=6).timeout
    30.0
    >>> result = simlabel.embed("feed.csv", "s3://shop/emb", fetch=FetchConfig(per_host=8))  # doctest: +SKIP
    """

    concurrency: int = 32
    per_host: int = 32
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    max_bytes: int = 64 << 20
    max_redirects: int = 5
    cache_dir: str | None = None
    window: int = 256

    def __post_init__(self) -> None:
        positive_int(self.concurrency, "concurrency")
        positive_int(self.per_host, "per_host")
        in_range(self.timeout, "timeout", 0, lo_open=True)
        positive_int(self.retries, "retries", minimum=0)
        in_range(self.backoff, "backoff", 0)
        in_range(self.max_backoff, "max_backoff", 0)
        in_range(self.max_retry_after, "max_retry_after", 0)
        positive_int(self.max_bytes, "max_bytes")
        positive_int(self.max_redirects, "max_redirects", minimum=0)
        positive_int(self.window, "window")


class _Retry(Exception):
    """A transient failure: try again after ``wait`` seconds (or the backoff), else fail with ``error``."""

    def __init__(self, error: FetchError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.wait = error, wait


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date (RFC 9110 §10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class Fetcher:
    """Fetch image bytes by URL, concurrently (see the module docstring). Use as a context manager, or ``close()``.

    ``fetch(uri)`` blocks and returns the bytes (or raises :class:`FetchError`); ``submit(uri)`` returns a
    ``concurrent.futures.Future`` of them. HTTP runs on one event loop in a thread of its own (aiohttp: a
    connection pool with ``concurrency`` connections, ``per_host`` to one host; a retry's backoff holds no
    thread); object storage on a pool of ``concurrency`` threads through fsspec.

    Parameters
    ----------
    config : FetchConfig, optional
    options : dict, optional
        fsspec's storage options for object storage URLs (default :data:`simlabel.context.STORAGE_OPTIONS`).
    """

    def __init__(self, config: FetchConfig | None = None, options: dict | None = None) -> None:
        self.config = config or FetchConfig()
        self.options = storage_options(options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.stats = {"fetched": 0, "retries": 0, "from_cache": 0, "bytes": 0}
        if self.config.cache_dir:
            Path(self.config.cache_dir).mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the loop and the threads; fetches still queued are cancelled."""
        with self._lock:
            pool, self._pool = self._pool, None
            loop, self._loop = self._loop, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=30)
            loop.close()

    async def _shutdown(self) -> None:
        # fetches still running (a run stopped early) are cancelled, then the connections closed
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def submit(self, uri: str) -> Future:
        """Start fetching ``uri``; the future's result is its bytes, or raises :class:`FetchError`."""
        cached = self._cache_path(uri)
        if cached is not None and cached.is_file() or not uri.lower().startswith(("http://", "https://")):
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="simlabel-fetch")
                return self._pool.submit(self.fetch, uri)
        return asyncio.run_coroutine_threadsafe(self._fetch_http(uri), self._event_loop())

    def fetch(self, uri: str) -> bytes:
        """The bytes at ``uri``, with retries (see the module docstring).

        Raises
        ------
        FetchError
            The source cannot be fetched; ``.reason`` says why.
        """
        cached = self._cache_path(uri)
        if cached is not None and cached.is_file():
            self._count("from_cache", 1)
            return cached.read_bytes()
        if uri.lower().startswith(("http://", "https://")):
            return asyncio.run_coroutine_threadsafe(self._fetch_http(uri), self._event_loop()).result()
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                data = self._fsspec(uri)
                break
            except _Retry as r:
                if attempt == cfg.retries:
                    raise r.error from None
                self._count("retries", 1)
                time.sleep(self._backoff(attempt, r.wait))
        return self._done(uri, data)

    def _backoff(self, attempt: int, asked: float | None) -> float:
        cfg = self.config
        return max(min(cfg.max_backoff, cfg.backoff * 2 ** attempt) * (0.5 + random.random()), asked or 0.0)

    def _done(self, uri: str, data: bytes) -> bytes:
        self._count("fetched", 1)
        self._count("bytes", len(data))
        cached = self._cache_path(uri)
        if cached is not None:
            atomic_write(cached, lambda tmp: Path(tmp).write_bytes(data))
        return data

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.stats[key] += n

    def _cache_path(self, uri: str) -> Path | None:
        if not self.config.cache_dir:
            return None
        digest = hashlib.blake2b(uri.encode(), digest_size=16).hexdigest()
        return Path(self.config.cache_dir) / digest[:2] / digest

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="simlabel-fetch-loop", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    async def _client(self) -> Any:
        import aiohttp

        if self._session is None:  # made on the loop (its only thread): no lock needed
            cfg = self.config
            self._slots = asyncio.Semaphore(cfg.concurrency)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.per_host),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.timeout, sock_read=cfg.timeout),
                headers={"User-Agent": "simlabel (catalog image fetcher)"})
        return self._session

    async def _fetch_http(self, uri: str) -> bytes:
        session = await self._client()
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                async with self._slots:
                    data = await self._http(session, uri)
                break
            except _Retry as r:
                if attempt == cfg.retries or (r.wait is not None and r.wait > cfg.max_retry_after):
                    raise r.error from None
                self._count("retries", 1)
                await asyncio.sleep(self._backoff(attempt, r.wait))
        return self._done(uri, data)

    async def _http(self, session: Any, uri: str) -> bytes:
        import aiohttp

        cfg = self.config
        host = urlsplit(uri).hostname or ""
        if not host:
            raise FetchError("bad-url", uri, "no host in the URL")
        try:
            async with session.get(uri, max_redirects=cfg.max_redirects) as r:
                if r.status >= 400:
                    error = FetchError(f"http-{r.status}", uri, f"the server answered {r.status} {r.reason}")
                    if r.status in _RETRY_STATUS:
                        raise _Retry(error, _retry_after(r.headers.get("Retry-After")))
                    raise error
                if r.content_length is not None and r.content_length > cfg.max_bytes:
                    raise FetchError("too-large", uri, f"{r.content_length:,} bytes declared; the limit (`max_bytes`) is {cfg.max_bytes:,}")
                chunks, size = [], 0
                async for chunk in r.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > cfg.max_bytes:
                        raise FetchError("too-large", uri, f"more than {cfg.max_bytes:,} bytes (`max_bytes`)")
                    chunks.append(chunk)
                return b"".join(chunks)
        except aiohttp.TooManyRedirects:
            raise FetchError("redirects", uri, f"more than {cfg.max_redirects} redirects (`max_redirects`)") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _Retry(FetchError("timeout", uri, f"no answer within {cfg.timeout:g} s ({type(e).__name__})")) from None
        except aiohttp.ClientConnectorError as e:
            if _is_dns(e):
                raise _Retry(FetchError("dns", uri, f"the host {host!r} cannot be resolved")) from None
            raise _Retry(FetchError("connection", uri, f"cannot connect ({e})")) from None
        except aiohttp.InvalidURL as e:
            raise FetchError("bad-url", uri, str(e)) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise _Retry(FetchError("connection", uri, f"the connection broke ({type(e).__name__}: {e})")) from None

    def _fsspec(self, uri: str) -> bytes:
        cfg = self.config
        try:
            fs, path = filesystem(uri, self.options)
        except InputError as e:
            raise FetchError("bad-url", uri, str(e)) from None
        try:  # one ranged GET (no HEAD first): the byte limit read, and one byte more to tell
            data = fs.cat_file(path, start=0, end=cfg.max_bytes + 1)
        except FileNotFoundError:
            raise FetchError("missing", uri, "no object at this key") from None
        except PermissionError as e:
            raise FetchError("forbidden", uri, f"access denied ({e})") from None
        except IsADirectoryError:
            raise FetchError("unreadable", uri, "a folder, not an object") from None
        except (TimeoutError, ConnectionError) as e:
            raise _Retry(FetchError("timeout" if isinstance(e, TimeoutError) else "connection", uri, str(e))) from None
        except OSError as e:
            raise _Retry(FetchError("unreadable", uri, f"{type(e).__name__}: {e}")) from None
        if len(data) > cfg.max_bytes:
            raise FetchError("too-large", uri, f"more than {cfg.max_bytes:,} bytes (`max_bytes`)")
        return data


@functools.lru_cache(maxsize=4)
def _shared(options: str) -> Fetcher:
    fetcher = Fetcher(FetchConfig(), json.loads(options))
    atexit.register(fetcher.close)  # its connections closed before the interpreter goes
    return fetcher


def read_source(uri: str) -> bytes:
    """The bytes at ``uri`` with the default :class:`FetchConfig` and the block's storage options: one image at a
    time (a page's thumbnails), through a fetcher kept for the process so its connections are reused.

    Raises
    ------
    FetchError
        The source cannot be fetched.
    """
    return _shared(json.dumps(storage_options(), sort_keys=True, default=str)).fetch(uri)


def _is_dns(e: Exception) -> bool:
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(e).lower()
    return "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text
