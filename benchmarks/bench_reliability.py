"""Reliability of simlabel's writers and readers (issue 11), as a table for benchmarks/RESULTS.md.

1. Kills: each command is killed (SIGKILL) at every one of its kill points and at random
   moments, then run again; the final output must equal an uninterrupted run's, and no
   reader may have accepted a mixed or partial state in between.
2. Fuzz: label files and catalogs drawn by hypothesis; every outcome is a success or a clean
   error (no traceback, no NaN model), counted by the class of error.
3. Memory: peak RSS of `simlabel embed` on 8 images at the pixel limit, with the pixel budget
   and without it (budget = 8 x the limit), side by side.

Usage: python benchmarks/bench_reliability.py [--random-kills 8] [--fuzz 300] [--only kills fuzz memory]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets" / "clothing-small"
KILL_ENV = "SIMLABEL_TEST_KILL_AT"


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return platform.processor()
    keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")]
    return " ".join(keep)


def run(args: list[str], env: dict | None = None, kill_after: float | None = None) -> int:
    p = subprocess.Popen([sys.executable, "-m", "simlabel.cli", *args], env={**os.environ, **(env or {})},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is None:
        return p.wait()
    try:
        return p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        return p.wait()


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and f.name not in ("summary.json", "manifest.json", "config.json"):
                    h.update(f.relative_to(p).as_posix().encode())
                    h.update(f.read_bytes() if f.suffix != ".parquet" else _parquet_rows(f))
        elif p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def _parquet_rows(f: Path) -> bytes:
    import pyarrow.parquet as pq

    t = pq.read_table(f)
    return repr(t.column("id").to_pylist()).encode() + np.asarray(t.column("embedding").combine_chunks().values).tobytes()


def readers_accept(kind: str, work: Path) -> str:
    """What a reader makes of the state a kill left: 'refused', 'ok' or 'MIXED' (never allowed)."""
    from simlabel.errors import SimlabelError

    try:
        if kind == "embed":
            from simlabel.store import load_embeddings

            load_embeddings(work / "emb")
        elif kind == "index":
            from simlabel.index import NeighborIndex

            NeighborIndex.load(work / "i.faiss")
        elif kind == "augment":
            from simlabel.labels.io import read_holdout, read_labels

            read_labels(work / "aug.csv")
            if (work / "aug.csv.holdout.csv").exists():
                read_holdout(work / "aug.csv.holdout.csv")
        elif kind == "train":
            from simlabel.heads import EmbeddingClassifier

            EmbeddingClassifier.load(work / "m")
    except (SimlabelError, FileNotFoundError):
        return "refused"
    return "ok"


def kill_campaign(random_kills: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="simlabel-kills-"))
    cat = pd.read_csv(DATA / "catalog.csv", dtype=str).head(300)
    cat["image"] = [str(DATA / p) for p in cat["image"]]
    cat.to_csv(base / "catalog.csv", index=False)
    seeds = cat[["id", "label"]].iloc[::5]
    seeds.to_csv(base / "seeds.csv", index=False)
    emb = base / "ref" / "emb"
    run(["embed", str(base / "catalog.csv"), "--out", str(emb), "--shard-size", "64", "--no-progress", "--device", "cpu"])
    commands = {
        "embed": (["embed", str(base / "catalog.csv"), "--out", "{w}/emb", "--shard-size", "64", "--no-progress", "--device", "cpu"],
                  ["embed:between-errors-and-shard", "embed:after-shard", "set:writing"], ["emb"]),
        "index": (["index", str(emb), "--out", "{w}/i.faiss", "--kind", "ivf", "--nlist", "8"],
                  ["set:writing", "set:member-0", "set:member-1"], ["i.faiss", "i.faiss.ids.parquet"]),
        "augment": (["augment", "--emb", str(emb), "--labels", str(base / "seeds.csv"), "--k", "5", "--holdout-frac", "0.3",
                     "--out", "{w}/aug.csv"], ["set:writing", "set:member-0", "set:member-1"], ["aug.csv", "aug.csv.holdout.csv"]),
        "train": (["train", "--emb", str(emb), "--labels", str(base / "seeds.csv"), "--out", "{w}/m", "--epochs", "30"],
                  ["train:between-weights-and-config", "dir:swapped-out"], ["m"]),
    }
    rows = []
    for name, (argv, points, outputs) in commands.items():
        ref = base / f"ref-{name}"
        ref.mkdir(exist_ok=True)
        run([a.format(w=ref) for a in argv])
        want = digest([ref / o for o in outputs])
        survived = mixed = refused = 0
        trials = [(p, None) for p in points] + [(None, rng.uniform(0.5, 6.0)) for _ in range(random_kills)]
        t0 = time.perf_counter()
        for point, after in trials:
            work = base / f"w-{name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            if name != "embed":  # an earlier complete output that the killed run replaces
                run([a.format(w=work) for a in argv])
            run([a.format(w=work) for a in argv], env={KILL_ENV: point} if point else None, kill_after=after)
            state = readers_accept(name, work)
            if state == "ok" and digest([work / o for o in outputs]) not in (want,):
                mixed += 1  # a reader accepted something that is not a complete run's output
            refused += state == "refused"
            run([a.format(w=work) for a in argv])
            survived += digest([work / o for o in outputs]) == want
        rows.append({"command": name, "kills": len(trials), "at kill points": len(points), "at random moments": random_kills,
                     "identical after rerun": survived, "partial state refused": refused, "mixed state accepted": mixed,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return rows


def fuzz_campaign(n: int) -> dict:
    """The test suite's fuzzers with ``n`` examples each; outcomes counted by class of error."""
    report = Path(tempfile.mkdtemp()) / "fuzz.json"
    env = {**os.environ, "SIMLABEL_FUZZ_EXAMPLES": str(n), "SIMLABEL_FUZZ_REPORT": str(report)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
                   env=env, cwd=HERE.parent, check=True)
    return json.loads(report.read_text())


def memory_campaign() -> list[dict]:
    from PIL import Image

    from simlabel.images import DEFAULT_MAX_PIXELS

    base = Path(tempfile.mkdtemp(prefix="simlabel-mem-"))
    side = int(DEFAULT_MAX_PIXELS**0.5)  # 9,459 x 9,459 = just under the limit
    rows = []
    for i in range(8):
        Image.new("RGB", (side, side), (20 * i, 120, 200)).save(base / f"huge{i}.png", compress_level=1)
        rows.append({"id": f"h{i}", "image": str(base / f"huge{i}.png")})
    pd.DataFrame(rows).to_csv(base / "catalog.csv", index=False)
    out = []
    for label, budget in (("pixel budget (default: the limit)", DEFAULT_MAX_PIXELS), ("no budget (8 x the limit)", 8 * DEFAULT_MAX_PIXELS)):
        code = (
            "import resource, sys; from simlabel.embedding import embed; "
            f"r = embed({str(base / 'catalog.csv')!r}, {str(base / ('emb' + str(budget)))!r}, workers=8, pixel_budget={budget}, "
            "progress=False, device='cpu'); "
            "print(r.n_embedded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        n, kb = res.stdout.split()[-2:]
        out.append({"run": label, "images": int(n), "pixels each": side * side, "peak RSS GiB": round(int(kb) / 2**20, 2),
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(out[-1], flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random-kills", type=int, default=8)
    ap.add_argument("--fuzz", type=int, default=300)
    ap.add_argument("--only", nargs="+", choices=["kills", "fuzz", "memory"], default=["kills", "fuzz", "memory"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    if "kills" in args.only:
        print("\n### Kills\n\n" + markdown(kill_campaign(args.random_kills, args.seed)))
    if "fuzz" in args.only:
        fuzz = fuzz_campaign(args.fuzz)
        print("\n### Fuzz outcomes\n\n" + markdown([{"outcome": k, "count": v} for k, v in sorted(fuzz.items(), key=lambda kv: -kv[1])]))
    if "memory" in args.only:
        print("\n### Memory\n\n" + markdown(memory_campaign()))


if __name__ == "__main__":
    main()
