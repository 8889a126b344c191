"""Catalogs on the web and in object storage (issue 28): the cost of the network path, the model held equal.

Side by side in one run, on every image of both datasets (clothing-small, fashion-products), through the same
``simlabel.embed`` (EfficientNet-Lite0, ONNX Runtime fp32 asked for explicitly: no engine probe; vector cache
off; the same decoding threads and batches):

1. **local**: the catalog's own paths;
2. **http**: the same files as ``http://127.0.0.1`` URLs from the standard library's threaded HTTP server
   (``tests/servers.py``, in a process of its own), fetched 32 at a time (``FetchConfig(concurrency=32)``);
3. **s3**: the same files as ``s3://`` keys in moto's S3 server on 127.0.0.1 (its own process), fetched through
   s3fs (one ranged GET each), 32 at a time.

The servers run on the same 2 cores as the embedder, so their own CPU is part of the figure (a real CDN's or
S3's is not): moto, a Python emulation of S3 (request parsing, signatures, XML), costs far more CPU per request
than the standard library's file server.

4. **retries**: the http run again with the server answering 503 to a seeded 20% of its requests: every item must
   be embedded, once (no duplicate ids, each image body sent once), and the time it cost against (2) is printed.

Each figure is printed with the machine's CPU flags.

5. With ``--client-cpu``: the fetching client's own CPU per request, side by side (simlabel's Fetcher on aiohttp,
   and a thread per request with httpx and with urllib3): why the Fetcher runs HTTP on one event loop.

Usage: python benchmarks/bench_fetch.py [--data ../shared/datasets] [--json out.json] [--only clothing-small]
       python benchmarks/bench_fetch.py --client-cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/servers.py: the same servers the tests start
sys.path.insert(0, str(HERE))


def _run(catalog: Path, encoder, out: Path, fetch=None) -> dict:
    from simlabel.embedding import embed

    t0 = time.perf_counter()
    res = embed(catalog, out, image_encoder=encoder, backend="onnx", precision="fp32", cache=False, progress=False,
                fetch=fetch)
    wall = time.perf_counter() - t0
    return {"images": res.n_items, "embedded": res.n_embedded, "failed": res.n_failed, "seconds": round(wall, 2),
            "images_per_s": round(res.n_items / wall, 1)}


@contextlib.contextmanager
def _server(kind: str, **options: object) -> Iterator[tuple[str, dict]]:
    """``tests/servers.py`` in a process of its own (no GIL shared with the embedder); yields its first line (the
    URL, or the storage options as JSON) and fills the dict with its request counts when it stops."""
    args = [sys.executable, "-m", "tests.servers", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    proc = subprocess.Popen(args, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
    counts: dict = {"pid": proc.pid}

    try:
        yield proc.stdout.readline().strip(), counts
    finally:
        # the server's own CPU (it shares the 2 cores with the embedder; a real CDN's or S3's would not)
        t = psutil.Process(proc.pid).cpu_times()
        counts["server_cpu_seconds"] = round(t.user + t.system, 1)
        proc.send_signal(signal.SIGTERM)
        tail = proc.communicate(timeout=60)[0].split()
        if tail[:1] == ["requests"]:
            counts.update(requests=int(tail[1]), served=int(tail[3]))


def bench_dataset(name: str, data: Path, encoder, work: Path) -> dict:
    import numpy as np
    import pandas as pd
    import s3fs

    from machine import cpu_flags
    from simlabel.context import modes
    from simlabel.sources import FetchConfig
    from simlabel.store import load_embeddings

    root = data / name
    df = pd.read_csv(root / "catalog.csv", dtype=str, keep_default_na=False)
    df["image"] = [str((root / p).resolve()) for p in df["image"]]
    local_csv = work / f"{name}-local.csv"
    df.to_csv(local_csv, index=False)
    fetch = FetchConfig(concurrency=32, per_host=32)
    out: dict = {"cpu_flags": cpu_flags(), "concurrency": 32}

    # a warm-up pass over 64 images: page cache, ONNX Runtime's first calls
    df.head(64).to_csv(work / "warm.csv", index=False)
    _run(work / "warm.csv", encoder, work / f"{name}-warm")

    out["local"] = _run(local_csv, encoder, work / f"{name}-local")
    print(f"[{name}] local paths: {out['local']}  (cpu flags: {out['cpu_flags']})", flush=True)

    with _server("http") as (url, counts):
        http_csv = work / f"{name}-http.csv"
        df.assign(image=[f"{url}/img{p}" for p in df["image"]]).to_csv(http_csv, index=False)
        out["http"] = _run(http_csv, encoder, work / f"{name}-http", fetch)
    out["http"]["server_cpu_seconds"] = counts["server_cpu_seconds"]
    print(f"[{name}] http, 32 concurrent: {out['http']}", flush=True)

    with _server("http", fail_rate=0.2, seed=7) as (url, counts):
        flaky_csv = work / f"{name}-flaky.csv"
        df.assign(image=[f"{url}/flaky{p}" for p in df["image"]]).to_csv(flaky_csv, index=False)
        out["retries"] = _run(flaky_csv, encoder, work / f"{name}-flaky",
                              FetchConfig(concurrency=32, per_host=32, retries=8, backoff=0.2, max_backoff=5))
    emb = load_embeddings(work / f"{name}-flaky")
    out["retries"]["server_cpu_seconds"] = counts["server_cpu_seconds"]
    out["retries"].update({"requests": counts["requests"], "answered_503": counts["requests"] - counts["served"],
                           "bodies_sent": counts["served"], "unique_ids": int(len(set(emb.ids))), "rows": int(len(emb.ids))})
    print(f"[{name}] http, 20% of requests failing: {out['retries']}", flush=True)

    with _server("s3") as (line, counts):
        opts = json.loads(line)
        fs = s3fs.S3FileSystem(**opts)
        fs.mkdir("bench")
        t0 = time.perf_counter()
        keys = [f"bench/{name}/{Path(p).name}" for p in df["image"]]
        fs.put(list(df["image"]), keys)
        out["s3_upload_seconds"] = round(time.perf_counter() - t0, 1)
        s3_csv = work / f"{name}-s3.csv"
        df.assign(image=[f"s3://{k}" for k in keys]).to_csv(s3_csv, index=False)
        server = psutil.Process(counts["pid"])
        before = sum(server.cpu_times()[:2])  # the upload's CPU left out
        with modes(storage_options=opts):
            out["s3"] = _run(s3_csv, encoder, work / f"{name}-s3", fetch)
        out["s3"]["server_cpu_seconds"] = round(sum(server.cpu_times()[:2]) - before, 1)
    print(f"[{name}] s3 (moto), 32 concurrent: {out['s3']}", flush=True)

    ref = load_embeddings(work / f"{name}-local")
    for kind in ("http", "s3", "retries"):
        got = load_embeddings(work / f"{name}-{'flaky' if kind == 'retries' else kind}")
        out[kind]["max_abs_diff_vs_local"] = float(np.abs(got.rows(ref.ids).matrix - ref.matrix).max())
        out[kind]["ratio_to_local"] = round(out[kind]["images_per_s"] / out["local"]["images_per_s"], 3)
    print(f"[{name}] throughput against local paths: http {out['http']['ratio_to_local']:.3f}, "
          f"s3 {out['s3']['ratio_to_local']:.3f}, http with 20% failing {out['retries']['ratio_to_local']:.3f} "
          f"(cpu flags: {out['cpu_flags']})", flush=True)
    return out


def client_cpu(data: Path, n: int = 3000) -> dict:
    """The fetching client's own CPU per request, side by side: simlabel's Fetcher (aiohttp on one event loop),
    a thread per request with httpx (what the Fetcher first was), and with urllib3; ``n`` fashion-products images
    from the local HTTP server (in its own process), 32 at a time."""
    import resource
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import pandas as pd
    import urllib3

    from machine import cpu_flags
    from simlabel.sources import FetchConfig, Fetcher

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    root = data / "fashion-products"
    df = pd.read_csv(root / "catalog.csv", dtype=str).head(n)
    out: dict = {"cpu_flags": cpu_flags(), "requests": n, "concurrency": 32}
    with _server("http") as (url, _):
        urls = [f"{url}/img{(root / p).resolve()}" for p in df["image"]]
        with Fetcher(FetchConfig(concurrency=32)) as f:
            f.fetch(urls[0])
            c0, t0 = cpu(), time.perf_counter()
            got = sum(len(x.result()) for x in [f.submit(u) for u in urls])
            out["simlabel Fetcher (aiohttp, one loop)"] = (round(time.perf_counter() - t0, 2), round(cpu() - c0, 2), got)
        clients = {"httpx, a thread per request": httpx.Client(limits=httpx.Limits(max_connections=32)),
                   "urllib3, a thread per request": urllib3.PoolManager(maxsize=32)}
        with ThreadPoolExecutor(32) as pool:
            for name, client in clients.items():
                get = (lambda u, c=client: c.get(u).content) if name.startswith("httpx") else \
                    (lambda u, c=client: c.request("GET", u).data)
                get(urls[0])
                c0, t0 = cpu(), time.perf_counter()
                got = sum(len(x.result()) for x in [pool.submit(get, u) for u in urls])
                out[name] = (round(time.perf_counter() - t0, 2), round(cpu() - c0, 2), got)
    for name, (wall, used, got) in list(out.items())[3:]:
        print(f"{name}: {n} requests in {wall} s, {used} CPU-s in this process ({1000 * used / n:.2f} ms a request; "
              f"{got:,} bytes)  (cpu flags: {out['cpu_flags']})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", choices=["clothing-small", "fashion-products"])
    ap.add_argument("--client-cpu", action="store_true", help="only the HTTP clients' CPU per request, side by side")
    args = ap.parse_args()
    if args.client_cpu:
        result = client_cpu(args.data)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return
    os.environ.setdefault("SIMLABEL_CACHE", tempfile.mkdtemp(prefix="bench-fetch-cache-"))
    from simlabel.encoders import get_image_encoder

    encoder = get_image_encoder("efficientnet-lite0", "cpu", backend="onnx")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else ["clothing-small", "fashion-products"]:
            results[name] = bench_dataset(name, args.data, encoder, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
