"""Real servers on 127.0.0.1 for the tests and benchmarks of URL catalogs and object storage.

* :class:`ImageServer`: the standard library's threaded HTTP server, serving real image files from a folder,
  with planted faults under fixed prefixes (the test asks for what it plants):

  ``/img/NAME``      the file, 200;
  ``/404/NAME``      404;  ``/403/NAME`` 403;  ``/500/NAME`` 500, always;
  ``/429/NAME``      429 with ``Retry-After: 1`` the first time a name is asked, then the file;
  ``/slow/NAME``     waits ``slow_seconds`` before answering (past the client's timeout);
  ``/big/NAME``      200 with a body of ``big_bytes`` bytes (past the byte limit);
  ``/loop/NAME``     a redirect to itself;
  ``/flaky/NAME``    503 for a share ``fail_rate`` of the requests (seeded), else the file;
  ``/sig/NAME?...``  the file, whatever the query (a signed URL).

  ``requests`` counts the requests per path (duplicates show as counts above one).
* :func:`moto_server`: moto's S3 server (``moto[server]``, the way s3fs tests itself), with the
  ``storage_options`` that point s3fs at it.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client that gave up
            super().handle_error(request, client_address)


class ImageServer:
    def __init__(self, root: Path, *, slow_seconds: float = 3.0, big_bytes: int = 2 << 20, fail_rate: float = 0.2,
                 seed: int = 0) -> None:
        self.root = Path(root)
        self.slow_seconds, self.big_bytes, self.fail_rate = slow_seconds, big_bytes, fail_rate
        self.requests: Counter[str] = Counter()
        self.served = 0
        self._asked_429: set[str] = set()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                server._answer(self)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        with self._lock:
            self.requests[path] += 1
        kind, _, name = path.lstrip("/").partition("/")
        file = self.root / name
        if kind in ("404", "403", "500"):
            return self._send(h, int(kind), b"no")
        if kind == "429":
            with self._lock:
                first = name not in self._asked_429
                self._asked_429.add(name)
            if first:
                return self._send(h, 429, b"slow down", {"Retry-After": "1"})
        if kind == "slow":
            self._stop.wait(self.slow_seconds)
        if kind == "big":
            return self._send(h, 200, b"\xff" * self.big_bytes, {"Content-Type": "image/jpeg"})
        if kind == "loop":
            return self._send(h, 302, b"", {"Location": path})
        if kind == "flaky":
            with self._lock:
                fail = self._rng.random() < self.fail_rate
            if fail:
                return self._send(h, 503, b"busy")
        if not file.is_file():
            return self._send(h, 404, b"no such file")
        with self._lock:
            self.served += 1
        return self._send(h, 200, file.read_bytes(), {"Content-Type": "image/jpeg"})


@contextlib.contextmanager
def moto_server() -> Iterator[dict]:
    """moto's S3 server on 127.0.0.1 (a free port); yields fsspec's ``storage_options`` for it."""
    import logging

    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")  # the server logs every request at INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    finally:
        server.stop()
        quiet.setLevel(level)
        time.sleep(0.05)


if __name__ == "__main__":  # a server in its own process (the benchmarks: no GIL shared with the embedder)
    import argparse
    import signal

    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["http", "s3"])
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--fail-rate", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if args.kind == "http":
        with ImageServer(args.root, fail_rate=args.fail_rate, seed=args.seed) as srv:
            print(srv.url, flush=True)
            done.wait()
            print(f"requests {sum(srv.requests.values())} served {srv.served}", flush=True)
    else:
        import json

        with moto_server() as opts:
            print(json.dumps(opts), flush=True)
            done.wait()
