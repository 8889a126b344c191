"""Issue 24: `select` at scale, and `train --pseudo auto` on fashion-products.

1. `simlabel.selection.select_items` on N x 384 clustered unit vectors (bench_augment's mixture) with a k-NN
   graph built once (k = 100, not timed: every method reads it): `typiclust`, `probcover` and `badge` (with
   probabilities of a 2-class model over the catalog), each in its own process: wall time and peak memory.
2. `train(..., pseudo="auto")` on fashion-products' embeddings (the shared dataset embedded once, every
   label of the pool but a 20% test set): wall time against `pseudo="none"`, in one process, side by side.

Usage: python benchmarks/bench_select.py [--n 1000000] [--budget 1000] [--fashion EMB_DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_augment import write_universe  # noqa: E402
from bench_graph import in_process  # noqa: E402
from machine import cpu_flags  # noqa: E402


def bench_select(n: int, budget: int, work: Path) -> dict:
    info = write_universe(work, n, 384, 0, 10)
    graph_code = f"""
import json, time
from simlabel.graph import GraphConfig, build_graph
t = time.perf_counter()
g = build_graph({str(work / 'emb')!r}, {str(work / 'graph')!r}, GraphConfig(k=100, recall_sample=0), progress=False)
print(json.dumps({{"index": g.meta.get("index", {{}}).get("kind"), "build_s": time.perf_counter() - t}}))
"""
    out = {"universe": info, "graph": in_process(graph_code)}
    for strategy in ("typiclust", "probcover", "badge"):
        code = f"""
import json, time
import numpy as np
from simlabel.graph import load_graph
from simlabel.selection import SelectConfig, select_items
from simlabel.store import load_embeddings
e = load_embeddings({str(work / 'emb')!r})
g = load_graph({str(work / 'graph')!r})
proba = classes = None
if {strategy!r} == "badge":  # a model's probabilities: a logistic score of the first coordinate
    p = 1 / (1 + np.exp(-8 * e.matrix[:, 0]))
    proba, classes = np.stack([1 - p, p], axis=1).astype(np.float32), ["neg", "pos"]
t = time.perf_counter()
sel = select_items(e, {budget}, SelectConfig(strategy={strategy!r}), proba=proba, classes=classes, graph=g)
import resource
print(json.dumps({{"select_s": time.perf_counter() - t, "n_chosen": int(len(sel.labels)),
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  **{{k: v for k, v in sel.summary.items() if k in ("n_clusters", "coverage", "threshold")}}}}))
"""
        out[strategy] = in_process(code)
    return out


def bench_pseudo(emb_dir: str) -> dict:
    code = f"""
import json, time
import numpy as np, pandas as pd
from simlabel.experiments._common import fixed_split
from simlabel.experiments.efficiency import FEW_LABEL_HEAD
from simlabel.head_config import HeadConfig
from simlabel.store import load_embeddings
from simlabel.training import train
e = load_embeddings({emb_dir!r})
cat = pd.read_csv("{HERE.parent.parent / 'shared/datasets/fashion-products/catalog.csv'}", dtype=str, keep_default_na=False)
lab = cat.set_index("id").loc[e.ids.astype(str), "article_type"]
test = fixed_split(lab, 0.2, 0)
pool = pd.DataFrame({{"id": e.ids[~test].astype(str), "label": lab.to_numpy()[~test]}})
hold = pd.DataFrame({{"id": e.ids[test].astype(str)}})
out = {{}}
for mode in ("none", "auto"):
    t = time.perf_counter()
    clf = train(e, pool, config=HeadConfig(head="linear", device="cpu"), holdout=hold, pseudo=mode, progress_label=mode)
    out[mode] = {{"seconds": time.perf_counter() - t, "chosen": (clf.pseudo_ or {{}}).get("mode")}}
print(json.dumps(out))
"""
    return in_process(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--fashion", help="fashion-products' embedding folder (skip the pseudo benchmark without it)")
    ap.add_argument("--json")
    args = ap.parse_args()
    res: dict = {"cpu_flags": cpu_flags(), "cores": os.cpu_count()}
    print(f"CPU flags: {res['cpu_flags']}; {res['cores']} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-select-") as tmp:
        res["select"] = bench_select(args.n, args.budget, Path(tmp))
    for s in ("typiclust", "probcover", "badge"):
        r = res["select"][s]
        print(f"select {s} on {args.n:,} x 384 (graph k = 100): {r['select_s']:.1f} s in the call, "
              f"{r['seconds']:.1f} s with loading, peak {r['peak_gib']:.2f} GiB", flush=True)
    if args.fashion:
        res["pseudo"] = bench_pseudo(args.fashion)
        p = res["pseudo"]
        print(f"train on fashion-products: pseudo=none {p['none']['seconds']:.1f} s, pseudo=auto {p['auto']['seconds']:.1f} s "
              f"(chose {p['auto']['chosen']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
