"""Issue 27: what ``simlabel audit`` finds of issues planted in real catalogs, and how it compares with cleanlab's Datalab.

1. **Planted issues on real data.** A slice of each shared dataset (``--n`` rows, by ``--seed``), and planted with
   Pillow by the same seed: exact copies under new ids; re-encoded (JPEG quality 60) and resized (0.8x) copies;
   darkened, blurred, blank and tiny images; photos from the other dataset; re-encoded near-twins of training
   items placed in the test split. Embedded (EfficientNet-Lite0, the cache off), a k = 10 graph, then the audit.
   Per type: recall and precision of what was planted (precision counts a flag on a planted item of that type,
   or on the original a copy was made from, as right).
2. **Unplanted**: what the audit flags on each slice before planting, the counts and the top of each list.
3. **Datalab, side by side** on the same embeddings and graph: ``Datalab.find_issues(features=X, knn_graph=G)``
   for outlier, near_duplicate, non_iid and class_imbalance; the agreement of the flagged sets (Jaccard) and the
   time of each, against simlabel's core functions given the same graph. Then on ``--scale`` synthetic rows
   (a Gaussian mixture, 384-d, the exact graph) for the times alone.
4. **The audit alone at scale** (``--memory 1000000``): a synthetic store written as ``embed`` writes one (shards with
   their image measures), its catalog and its graph on disk; the audit runs in a process of its own, whose peak
   resident memory and time are reported (target < 8 GiB at 1M rows).
5. **CleanVision** (``pip install 'simlabel[bench]'``), where it installs: its Imagelab on the same planted files,
   the agreement per image-quality and duplicate type, its recall of the plants, and its time (it reads every image
   again; the audit reads none).

Nothing is copied into the repository: the slices and planted files live in a temporary folder.

Usage: python benchmarks/bench_audit.py [--n 1500] [--scale 100000] [--memory 1000000] [--no-planted] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_flags  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets"
PLANTS = 20


def _slice(name: str, n: int, seed: int) -> pd.DataFrame:
    from simlabel.catalog import load_catalog

    cat = load_catalog(DATA / name / "catalog.csv", columns={"label": "article_type"} if name == "fashion-products" else None)
    t = cat.table.copy()
    t["image"] = cat.image_paths()
    t = t.sample(n=min(n, len(t)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    t["split"] = np.where(rng.random(len(t)) < 0.2, "test", "train")
    return t[["id", "image", "label", "split"]]


def _plant(t: pd.DataFrame, other: pd.DataFrame, folder: Path, seed: int) -> tuple[pd.DataFrame, dict[str, set]]:
    """The slice with the planted rows; and per audit type, the ids that should be flagged (copies with their
    originals for the duplicate types)."""
    from simlabel.images import load_image

    rng = np.random.default_rng(seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    train = t[t["split"] == "train"]
    picks = iter(rng.permutation(len(train)))
    rows, truth = [], {k: set() for k in ("exact_duplicate", "near_duplicate", "leakage", "dark", "blurry",
                                          "low_information", "odd_size", "outlier", "derived")}

    def add(kind: str, i: int, path: Path, src: pd.Series, split: str = "train", label: str | None = None) -> str:
        pid = f"planted-{kind}-{i}"
        rows.append({"id": pid, "image": str(path), "label": label if label is not None else src["label"], "split": split})
        return pid

    def nxt() -> pd.Series:
        return train.iloc[int(next(picks))]

    for i in range(PLANTS):
        s = nxt()
        p = folder / f"copy-{i}.jpg"
        p.write_bytes(Path(s["image"]).read_bytes())
        pid = add("copy", i, p, s)
        truth["exact_duplicate"] |= {pid, s["id"]}
        truth["near_duplicate"] |= {pid, s["id"]}
    for i in range(PLANTS):
        s = nxt()
        img = load_image(s["image"])
        p = folder / f"reenc-{i}.jpg"
        (img if i % 2 == 0 else img.resize((int(img.width * 0.8), int(img.height * 0.8)))).save(p, quality=60)
        truth["near_duplicate"] |= {add("reencoded", i, p, s), s["id"]}
    for i in range(PLANTS):
        s = nxt()
        p = folder / f"twin-{i}.jpg"
        load_image(s["image"]).save(p, quality=70)
        pid = add("twin", i, p, s, split="test")
        truth["leakage"].add(pid)
        truth["near_duplicate"] |= {pid, s["id"]}
    for kind, make in (("dark", lambda im: ImageEnhance.Brightness(im).enhance(0.12)),
                       ("blurry", lambda im: im.filter(ImageFilter.GaussianBlur(radius=max(im.size) / 60))),
                       ("low_information", lambda im: Image.new("RGB", im.size, (255, 255, 255))),
                       ("odd_size", lambda im: im.resize((max(8, im.width // 8), max(8, im.height // 8))))):
        for i in range(PLANTS):
            s = nxt()
            p = folder / f"{kind}-{i}.jpg"
            make(load_image(s["image"])).save(p, quality=92)
            pid = add(kind, i, p, s)
            truth[kind].add(pid)
            if kind != "low_information":  # a darkened, blurred or shrunk copy is still a copy of its original
                truth["derived"] |= {pid, s["id"]}
    for i, (_, s) in enumerate(other.sample(n=PLANTS, random_state=seed).iterrows()):
        p = folder / f"foreign-{i}.jpg"
        p.write_bytes(Path(s["image"]).read_bytes())
        truth["outlier"].add(add("foreign", i, p, s, label=str(t["label"].iloc[i % len(t)])))
    out = pd.concat([t, pd.DataFrame(rows)], ignore_index=True)
    # blank images of one size are one photo: duplicates of each other, as the audit rightly says
    blanks = out[out["id"].isin(truth["low_information"])]
    sizes = blanks["image"].map(lambda p: Image.open(p).size)
    for _, same in blanks.groupby(sizes):
        if len(same) >= 2:
            truth["exact_duplicate"] |= set(same["id"])
            truth["near_duplicate"] |= set(same["id"])
    return out, truth


def _score(found: dict[str, set], truth: dict[str, set], planted_ids: set) -> dict:
    """Recall of each type's plants; precision over the flags that are not on a plant of another type (a blank
    photo is blurry too, a photo from the other shop has an odd size here: those flags are counted apart)."""
    out = {}
    for issue, want in truth.items():
        got = found.get(issue, set())
        other_plants = (got & planted_ids) - want
        judged = got - other_plants
        out[issue] = {"planted": len(want), "flagged": len(got), "found": len(got & want),
                      "recall": len(got & want) / len(want) if want else None,
                      "precision": len(judged & want) / len(judged) if judged else None,
                      "on_other_plants": len(other_plants), "on_unplanted_items": len(judged - want)}
    return out


def planted_run(name: str, other: str, n: int, seed: int, work: Path) -> dict:
    from simlabel.auditing import audit
    from simlabel.embedding import embed
    from simlabel.graph import GraphConfig, build_graph

    t = _slice(name, n, seed)
    before = work / f"{name}-clean.csv"
    t.to_csv(before, index=False)
    emb0 = work / f"{name}-clean-emb"
    embed(before, emb0, progress=False, cache=False)
    t0 = time.perf_counter()
    clean = audit(before, emb0, split_col="split")
    clean_s = time.perf_counter() - t0
    unplanted = {"counts": clean.summary["counts"], "seconds": clean_s,
                 "top": {k: clean.flagged(k)["id"].head(5).tolist() for k, v in clean.summary["counts"].items() if v}}
    planted, truth = _plant(t, _slice(other, 400, seed + 7), work / f"{name}-planted", seed)
    cat = work / f"{name}-planted.csv"
    planted.to_csv(cat, index=False)
    emb = work / f"{name}-emb"
    embed(cat, emb, progress=False, cache=False)
    graph = build_graph(emb, work / f"{name}-graph", GraphConfig(k=10, recall_sample=0), progress=False)
    t0 = time.perf_counter()
    res = audit(cat, emb, graph=graph, split_col="split", out=work / f"{name}-audit")
    seconds = time.perf_counter() - t0
    from simlabel.auditing.page import write_audit_html
    from simlabel.catalog import load_catalog

    t0 = time.perf_counter()
    write_audit_html(res, load_catalog(cat), work / f"{name}-audit" / "report.html")
    page_seconds = time.perf_counter() - t0
    found = {k: set(res.flagged(k)["id"]) for k in res.summary["counts"]}
    # the issue's outliers are both rules: the k-NN distance, and far from every labelled class
    found["outlier_or_far"] = found.get("outlier", set()) | found.get("far_from_labels", set())
    truth = {**truth, "far_from_labels": truth["outlier"], "outlier_or_far": truth["outlier"]}
    # the darkened, blurred and shrunk plants are copies of training photos too: a pixel witness rightly joins them
    # to their originals; scored apart, with those pairs counted as right
    derived = truth.pop("derived")
    truth["near_duplicate_with_derived"] = truth["near_duplicate"] | derived
    found["near_duplicate_with_derived"] = found.get("near_duplicate", set())
    planted_ids = set(planted["id"][planted["id"].str.startswith("planted-")])
    # where the other shop's photos rank by the outlier score (percentile, 0 = the worst)
    o = res.issues[res.issues["issue"] == "outlier"].set_index("id")["score"].rank(pct=True)
    foreign = o[o.index.str.startswith("planted-foreign")]
    cleanvision = cleanvision_side_by_side(cat, found, truth, seconds)
    return {"dataset": name, "n": len(t), "n_planted": len(planted_ids), "audit_seconds": seconds, "page_seconds": page_seconds,
            "cleanvision": cleanvision,
            "scores": _score(found, truth, planted_ids), "leakage": res.summary.get("leakage"),
            "foreign_outlier_percentile": {"median": float(foreign.median()), "best": float(foreign.min())},
            "cuts": res.summary["types"], "unplanted": unplanted, "report": str(work / f"{name}-audit" / "report.html")}


#: CleanVision's issue columns against simlabel's types
CLEANVISION = {"dark": "dark", "light": "bright", "blurry": "blurry", "low_information": "low_information",
               "grayscale": "grayscale", "odd_aspect_ratio": "odd_aspect_ratio", "odd_size": "odd_size",
               "exact_duplicates": "exact_duplicate", "near_duplicates": "near_duplicate"}


def cleanvision_side_by_side(catalog: Path, found: dict[str, set], truth: dict[str, set], seconds_simlabel: float) -> dict:
    """CleanVision's Imagelab on the same files (it reads every image again): agreement with the audit's flags,
    its recall of the plants, and its time."""
    try:
        from cleanvision import Imagelab
    except ImportError:
        return {"installed": False, "note": "pip install 'simlabel[bench]' (cleanvision) to compare"}
    t = pd.read_csv(catalog, dtype=str)
    t = t[t["image"].map(lambda p: Path(p).stat().st_size > 100)]  # CleanVision refuses what is not an image
    t0 = time.perf_counter()
    lab = Imagelab(filepaths=t["image"].tolist())
    lab.find_issues(verbose=False)
    seconds = time.perf_counter() - t0
    issues = lab.issues
    by_path = dict(zip(t["image"], t["id"]))
    ids = np.array([by_path[p] for p in issues.index])
    out = {"installed": True, "seconds": seconds, "simlabel_audit_seconds": seconds_simlabel, "types": {}}
    for theirs, ours in CLEANVISION.items():
        col = f"is_{theirs}_issue"
        if col not in issues.columns:
            continue
        cv = set(ids[issues[col].to_numpy(dtype=bool)])
        mine = found.get(ours, set())
        union = cv | mine
        want = truth.get(ours)
        out["types"][ours] = {"cleanvision": len(cv), "simlabel": len(mine), "both": len(cv & mine),
                              "jaccard": len(cv & mine) / len(union) if union else 1.0,
                              "cleanvision_recall": len(cv & want) / len(want) if want else None}
    return out


def datalab_side_by_side(X: np.ndarray, labels: np.ndarray, nb: np.ndarray, sim: np.ndarray) -> dict:
    """cleanlab's Datalab and simlabel's core on the same features and graph: agreement and time per type."""
    from cleanlab import Datalab
    from scipy.sparse import csr_matrix

    from simlabel.auditing.core import class_imbalance, near_duplicates, non_iid, outliers

    n, k = nb.shape
    dist = np.clip(1.0 - sim, 0.0, None).astype(np.float64)
    graph = csr_matrix((dist.ravel(), nb.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    out: dict = {"n": n, "k": k}
    t0 = time.perf_counter()
    lab = Datalab(data={"label": labels.astype(str)}, label_name="label", verbosity=0)
    lab.find_issues(features=X, knn_graph=graph, issue_types={"outlier": {}, "near_duplicate": {}, "non_iid": {},
                                                               "class_imbalance": {}})
    out["datalab_seconds"] = time.perf_counter() - t0
    issues = lab.get_issues()
    ours: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    ours["near_duplicate"] = near_duplicates(nb, sim).group >= 0
    ours["outlier"] = outliers(sim)[1]
    ours["non_iid"] = non_iid(nb)[3]
    _, _, small = class_imbalance(labels)
    ours["class_imbalance"] = np.isin(labels.astype(str), small)
    out["simlabel_seconds"] = time.perf_counter() - t0
    out["speedup"] = out["datalab_seconds"] / max(out["simlabel_seconds"], 1e-9)
    out["agreement"] = {}
    for issue, mine in ours.items():
        col = f"is_{issue}_issue"
        theirs = issues[col].to_numpy(dtype=bool) if col in issues.columns else np.zeros(n, bool)
        union = (mine | theirs).sum()
        out["agreement"][issue] = {"simlabel": int(mine.sum()), "datalab": int(theirs.sum()), "both": int((mine & theirs).sum()),
                                   "jaccard": float((mine & theirs).sum() / union) if union else 1.0}
    return out


def scale_run(n: int, seed: int) -> dict:
    from simlabel.graph import GraphConfig, build_graph
    from simlabel.store import Embeddings

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, 384)).astype(np.float32)
    c = rng.integers(200, size=n)
    X = centres[c] + 0.6 * rng.normal(size=(n, 384)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = (c % 10).astype(str)
    e = Embeddings(np.array([f"s{i}" for i in range(n)], dtype=object), X, {"path": "mem", "model": "synthetic"})
    t0 = time.perf_counter()
    g = build_graph(e, None, GraphConfig(k=10, recall_sample=0), progress=False)
    graph_s = time.perf_counter() - t0
    res = datalab_side_by_side(X, labels, g.neighbors, g.similarities)
    res["graph_seconds"] = graph_s
    return res


_MEMORY_CHILD = """
import json, resource, sys, time
from simlabel import AuditConfig, audit
work = sys.argv[1]
t0 = time.perf_counter()
r = audit(work + "/mem-catalog.csv", work + "/mem-emb", graph=work + "/mem-graph", split_col="split",
          config=AuditConfig(k=10), out=work + "/mem-audit", html=True)
print(json.dumps({"audit_seconds": time.perf_counter() - t0, "counts": r.summary["counts"],
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def memory_run(n: int, seed: int, work: Path, shard: int = 100_000) -> dict:
    """The audit alone, in its own process, of an ``n``-row synthetic store as ``embed`` writes one (shards of
    vectors, each with its image measures) with its graph on disk: its peak resident memory and time."""
    import subprocess

    from simlabel.graph import GraphConfig, build_graph
    from simlabel.quality import QUALITY_FIELDS, QUALITY_VERSION
    from simlabel.store import QUALITY_DIR, shard_name, write_quality, write_shard

    rng = np.random.default_rng(seed)
    store, graph = work / "mem-emb", work / "mem-graph"
    if not (work / "mem-catalog.csv").exists():
        centres = rng.normal(size=(200, 384)).astype(np.float32)
        (store / QUALITY_DIR).mkdir(parents=True, exist_ok=True)
        tables = []
        for s, start in enumerate(range(0, n, shard)):
            m = min(shard, n - start)
            c = rng.integers(200, size=m)
            X = centres[c] + 0.6 * rng.normal(size=(m, 384)).astype(np.float32)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            ids = np.array([f"s{i}" for i in range(start, start + m)])
            # image measures spread as a catalog's are; one photo in a thousand a copy of the one before it
            q = np.column_stack([rng.integers(200, 2000, m), rng.integers(200, 2000, m), rng.uniform(0.5, 1, m),
                                 rng.uniform(0, 0.5, m), rng.uniform(1, 7, m), rng.lognormal(3, 1, m),
                                 rng.uniform(0, 0.3, m)]).astype(np.float32)
            # pixel signatures as embed records them: a 16-byte digest, then a 32-byte perceptual hash
            pix = [rng.bytes(48) for _ in range(m)]
            for j in range(1, m, 1000):
                pix[j] = pix[j - 1]
            write_quality(store / QUALITY_DIR / shard_name(s), ids, q, [None] * m, pix, QUALITY_FIELDS,
                          QUALITY_VERSION)
            write_shard(store / shard_name(s), ids, X, {"model": "synthetic", "dim": 384})
            tables.append(pd.DataFrame({"id": ids, "image": [f"img/{i}.jpg" for i in ids],
                                        "label": (c % 50).astype(str), "split": np.where(rng.random(m) < 0.2,
                                                                                        "test", "train")}))
        pd.concat(tables).to_csv(work / "mem-catalog.csv", index=False)
    t0 = time.perf_counter()
    build_graph(store, graph, GraphConfig(k=10, recall_sample=0), progress=False)
    graph_s = time.perf_counter() - t0
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(work)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    r.update({"n": n, "graph_seconds": graph_s})
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, nargs="*", default=[100_000])
    ap.add_argument("--memory", type=int, nargs="*", default=[],
                    help="rows of a synthetic store whose audit alone is measured in its own process")
    ap.add_argument("--no-planted", action="store_true", help="skip the planted runs")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the slices, stores and reports here (default: a temporary folder)")
    args = ap.parse_args()
    out: dict = {"cpu_flags": cpu_flags(), "planted": [], "datalab": [], "scale": [], "memory": []}
    print("cpu flags:", out["cpu_flags"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in args.memory:
            r = memory_run(n, args.seed, work)
            out["memory"].append(r)
            print(json.dumps(r, indent=1), flush=True)
        for name, other in (() if args.no_planted else (("clothing-small", "fashion-products"),
                                                          ("fashion-products", "clothing-small"))):
            r = planted_run(name, other, args.n, args.seed, work)
            out["planted"].append(r)
            print(json.dumps({"dataset": name, "scores": r["scores"], "audit_seconds": round(r["audit_seconds"], 2)}, indent=1),
                  flush=True)
            from simlabel.graph import load_graph
            from simlabel.store import load_embeddings

            e = load_embeddings(work / f"{name}-emb")
            g = load_graph(work / f"{name}-graph")
            labels = pd.read_csv(work / f"{name}-planted.csv", dtype=str).set_index("id").loc[e.ids.astype(str), "label"]
            d = datalab_side_by_side(e.matrix, labels.to_numpy(), g.neighbors, g.similarities)
            d["dataset"] = name
            out["datalab"].append(d)
            print(json.dumps(d, indent=1), flush=True)
    for n in args.scale:
        r = scale_run(n, args.seed)
        out["scale"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
