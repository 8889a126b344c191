"""Paper 000's experiment: seeds vs seeds + augmented vs seeds + propagated labels.

Protocol (section 4 of the paper), per encoder and per repetition seed:

1. Labeled examples: the catalog rows with a label (one-vs-rest ``positive`` vs
   ``not <positive>`` when a positive class is named). To mimic "a handful of
   labels among a myriad of unlabeled photos", ``labeled_frac`` keeps that
   share of them labeled (stratified); the rest stay in the universe unlabeled,
   and their hidden true labels measure the precision of the labels made.
2. Hold out ``holdout_frac`` (30%) of the labeled examples; the rest are seeds.
3. Augment the seeds with k = 10 over the universe (every embedded image).
4. Sample an unlabeled set as large as the augmented set; propagate the seeds'
   labels over the k-NN graph of seeds + sample, for as many steps as the
   augmentation took.
5. Train the same dense layer on seeds only, seeds + augmented, seeds +
   propagated; evaluate each on the holdout: per-class precision and recall
   and their harmonic mean HM (Table 2).

Beside the paper's three, the row ``auto`` is what a user should run: ``train(..., pseudo="auto")``
on the seeds alone, which chooses out of fold, on the seeds only, whether pseudo-labels from the
unlabelled catalog (augment, propagate or spread, certainty-weighted) help, and otherwise trains
on the seeds (:func:`simlabel.training.choose_pseudo`). Its choice is in each run's ``pseudo_auto``.

The head: the paper's "single dense layer" with balanced class weights by default. Without them
(``paper_head=True``, ``--paper-head``: the protocol as printed) a one-vs-rest run on a rare class
predicts no positive at all for most classes (HM 0; clothing-small: 9 of 10 classes), which the
tables then say ("no positive predicted").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog, load_catalog
from simlabel.checks import in_range, one_of, positive_int
from simlabel.embedding import embed
from simlabel.errors import CatalogError, InputError
from simlabel.experiments._common import jsonable, mean_sd
from simlabel.files import atomic_write_json
from simlabel.graph import GraphConfig, KnnGraph, build_graph
from simlabel.heads import HeadConfig
from simlabel.index import NeighborIndex
from simlabel.labels.augment import augment, root_seeds, split_holdout
from simlabel.labels.propagate import propagate
from simlabel.progress import task
from simlabel.runs import default_run_dir, find_default_data, safe_name
from simlabel.store import Embeddings, as_embeddings, load_embeddings
from simlabel.training import evaluate, train

METHODS = ("seeds", "aug", "prop", "auto")


@dataclass
class AugmentExperimentConfig:
    """Paper 000's protocol (module docstring). ``positive``: a class for one-vs-rest, or
    ``None`` for every class at once."""

    label_col: str | None = None
    positive: str | None = None
    encoders: Sequence[str] = ("efficientnet-lite0",)
    k: int = 10
    holdout_frac: float = 0.3
    labeled_frac: float = 1.0
    stop: str = "shrink"
    max_steps: int | None = None
    repeats: Sequence[int] = (0,)
    #: the dense layer; its class weights are balanced unless ``paper_head`` (module docstring)
    head: HeadConfig = field(default_factory=HeadConfig)
    paper_head: bool = False
    device: str = "auto"
    limit: int | None = None  # first N catalog rows (for quick runs and tests)
    #: hold out every row of this catalog split (e.g. "test") instead of ``holdout_frac`` of the labeled rows
    holdout_split: str | None = None

    def __post_init__(self) -> None:
        positive_int(self.k, "k")
        in_range(self.holdout_frac, "holdout_frac", 0, 1, hi_open=True)
        in_range(self.labeled_frac, "labeled_frac", 0, 1, lo_open=True)
        one_of(self.stop, ("shrink", "grow"), "stop")
        positive_int(self.max_steps, "max_steps", allow_none=True)
        positive_int(self.limit, "limit", allow_none=True)


def _negative_name(positive: str) -> str:
    return f"not {positive}"


def labeled_table(catalog: Catalog, positive: str | None) -> pd.DataFrame:
    """``id, label[, split]`` of the labeled rows (binary one-vs-rest when ``positive`` is given)."""
    if "label" not in catalog.table.columns:
        raise CatalogError(f"{catalog.path}: the experiment needs labels (map a column with `label_col`)")
    df = catalog.table[[c for c in ("id", "label", "split") if c in catalog.table.columns]]
    df = df[df["label"].astype(str).str.len() > 0].reset_index(drop=True)
    if positive is not None:
        if positive not in set(df["label"]):
            raise InputError(f"`positive` {positive!r} is not a label; labels are {sorted(df['label'].unique())[:20]}")
        df = df.assign(label=np.where(df["label"] == positive, positive, _negative_name(positive)))
    return df


def label_precision(made: pd.DataFrame, truth: pd.Series) -> dict:
    """Precision of made labels against hidden true labels (only ids whose truth we hold)."""
    known = made[made["id"].isin(truth.index)]
    if known.empty:
        return {"n": 0, "precision": float("nan"), "per_class": {}}
    correct = known["label"].to_numpy() == truth.loc[known["id"]].to_numpy()
    per = pd.Series(correct).groupby(known["label"].to_numpy()).agg(["mean", "size"])
    return {
        "n": int(len(known)),
        "precision": float(correct.mean()),
        "per_class": {str(c): {"precision": float(r["mean"]), "n": int(r["size"])} for c, r in per.iterrows()},
    }


def _metric_row(rep: dict, classes: list[str], positive: str | None) -> dict:
    row = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "HM": rep["hm"],
           # 1 when the model predicts no holdout item as the positive class (HM is 0 then)
           "no_positive": float(positive is not None and rep["per_class"].get(positive, {}).get("never_predicted", False))}
    if positive is not None and "binary" in rep:
        for key in ("+P", "+R", "-P", "-R"):
            row[key] = rep["binary"][key]
    else:
        for c in classes:
            row[f"{c} P"] = rep["per_class"][c]["precision"]
            row[f"{c} R"] = rep["per_class"][c]["recall"]
    return row


def run_one(
    emb: Embeddings,
    labeled: pd.DataFrame,
    cfg: AugmentExperimentConfig,
    rep_seed: int,
    work: Path,
    index: NeighborIndex | None = None,
    bar=None,
    graph: KnnGraph | None = None,
) -> dict:
    """One encoder, one repetition: returns sizes, label precisions, metrics and samples.

    ``graph`` (or ``index``): the k-NN graph (index) of the universe, built once per encoder and
    shared by the repetitions (built here when neither is given). The augmentation reads its
    neighbours from the graph; the propagation builds the graph of its own nodes (the seeds and
    a sample, paper 000's protocol), which a graph of the whole universe cannot give."""
    ids = emb.ids
    labeled = labeled[emb.has(labeled["id"])].reset_index(drop=True)
    truth_all = labeled.set_index("id")["label"]
    fixed_hold = None
    if cfg.holdout_split:
        if "split" not in labeled.columns or not (labeled["split"] == cfg.holdout_split).any():
            raise InputError(f"`holdout_split` {cfg.holdout_split!r}: no catalog row has that split")
        in_split = (labeled["split"] == cfg.holdout_split).to_numpy()
        fixed_hold, labeled = labeled[in_split][["id", "label"]], labeled[~in_split]
    labeled = labeled[["id", "label"]]
    if cfg.labeled_frac < 1:
        keep, _ = split_holdout(labeled, 1 - cfg.labeled_frac, seed=rep_seed)
        known = keep
    else:
        known = labeled
    if fixed_hold is not None:
        seeds, hold = known, fixed_hold.reset_index(drop=True)
    else:
        seeds, hold = split_holdout(known, cfg.holdout_frac, seed=rep_seed)
    hidden_truth = truth_all.drop(pd.Index(seeds["id"]).append(pd.Index(hold["id"])))
    seed_classes = set(seeds["label"])
    if len(seed_classes) < 2:
        raise InputError(f"only {len(seed_classes)} class among the seeds: label more of the catalog (`labeled_frac`)")
    # a class with no seed cannot be predicted: leave its holdout rows out, and say how many
    n_hold_unseen = int((~hold["label"].isin(seed_classes)).sum())
    hold = hold[hold["label"].isin(seed_classes)].reset_index(drop=True)
    work.mkdir(parents=True, exist_ok=True)
    made = augment(emb, seeds, k=cfg.k, holdout=hold, stop=cfg.stop, max_steps=cfg.max_steps,
                   index=index if graph is None else None, graph=graph, out=work / "aug.csv")
    result, augmented = made.result, made.augmented
    prop = propagate(
        emb, seeds, k=cfg.k, steps=max(1, result.n_steps), unlabeled_sample=max(1, len(augmented)),
        exclude=hold["id"].tolist(), seed=rep_seed, out=work / "prop.csv",
    ).labels
    classes = sorted(seeds["label"].unique())
    head = HeadConfig(**{**asdict(cfg.head), "seed": rep_seed, "device": cfg.device,
                         "class_weight": None if cfg.paper_head else (cfg.head.class_weight or "balanced")})
    metrics, reports = {}, {}
    chosen = None
    for method, extra in (("seeds", []), ("aug", [augmented[["id", "label"]]]), ("prop", [prop[["id", "label"]]]),
                          ("auto", [])):
        mode = {"pseudo": "auto", "graph": graph, "holdout": hold} if method == "auto" else {}
        clf = train(emb, seeds[["id", "label"]], extra=extra, config=head, progress_label=f"{method} seed {rep_seed}",
                    calibration="none", **mode)  # accuracy only: calibrating would not change it
        if method == "auto":
            chosen = getattr(clf, "pseudo_", None)
        rep = evaluate(clf, emb, hold, positive=cfg.positive, warn=False)
        reports[method] = rep
        metrics[method] = _metric_row(rep, classes, cfg.positive)
        if bar is not None:
            bar.advance(1)
    sizes = pd.DataFrame(
        {
            "seeds": seeds["label"].value_counts(),
            "augmented": augmented["label"].value_counts(),
            "propagated": prop["label"].value_counts(),
            "validation": hold["label"].value_counts(),
        }
    ).reindex(classes).fillna(0).astype(int)
    # samples for the image grids: augmented points beside the seed their via chain starts from
    roots = root_seeds(result.via, result.step)
    samples = []
    for c in classes:
        part = augmented[augmented["label"] == c]
        pick = part.sample(n=min(8, len(part)), random_state=rep_seed) if len(part) else part
        for p, (_, r) in zip(emb.positions(pick["id"]), pick.iterrows()):
            samples.append({"id": r["id"], "label": c, "step": int(r["step"]), "seed_id": str(ids[roots[p]]),
                            "truth": str(hidden_truth.get(r["id"], ""))})
    return {
        "seed": rep_seed,
        "n_steps": result.n_steps,
        "stop_reason": result.stop_reason,
        "holdout_rows_of_unseeded_classes": n_hold_unseen,
        "step_sizes": result.size_table().reset_index().rename(columns={"index": "row"}).to_dict(orient="list"),
        "sizes": sizes.to_dict(),
        "label_precision": {
            "augmented": label_precision(augmented, hidden_truth),
            "propagated": label_precision(prop, hidden_truth),
        },
        "metrics": metrics,
        "pseudo_auto": chosen,
        "reports": reports,
        "samples": samples,
        "classes": classes,
    }


def _aggregate(runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.DataFrame([{"method": method, **m} for run in runs for method, m in run["metrics"].items()])
    keys = [c for c in df.columns if c != "method"]
    both = mean_sd(df, "method", keys)
    return both[keys], both[[f"{k} sd" for k in keys]].rename(columns=lambda c: c[: -len(" sd")])


def _open(data: str | os.PathLike | None, cfg: AugmentExperimentConfig) -> tuple[Path, Catalog]:
    root = find_default_data(data)
    catalog = load_catalog(root, columns={"label": cfg.label_col} if cfg.label_col else None)
    return root, catalog.head(cfg.limit) if cfg.limit else catalog


def _embeddings(catalog: Catalog, model: str, out, cfg: AugmentExperimentConfig, progress: bool, given) -> Embeddings:
    """The encoder's embeddings of the catalog: ``given[model]`` if there, else embedded (cached)."""
    if given and model in given:
        return as_embeddings(given[model])
    run_dir = Path(out) if out else default_run_dir(catalog, model)
    emb_dir = run_dir / "embeddings" if not out else run_dir / "embeddings" / safe_name(model)
    embed(catalog, emb_dir, model=model, device=cfg.device, progress=progress)
    return load_embeddings(emb_dir)


def run_augment_experiment(
    data: str | os.PathLike | None = None,
    config: AugmentExperimentConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    json_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: bool = True,
    embeddings: dict[str, str | os.PathLike | Embeddings] | None = None,
) -> dict:
    """Run the paper-000 experiment on a catalog; returns (and optionally writes) the results.

    ``embeddings`` maps an encoder to its embeddings of this catalog (a folder or a loaded
    :class:`~simlabel.store.Embeddings`), which skips embedding.
    """
    cfg = config or AugmentExperimentConfig()
    root, catalog = _open(data, cfg)
    labeled = labeled_table(catalog, cfg.positive)
    results: dict = {
        "data": str(root),
        "config": {**asdict(cfg), "head": asdict(cfg.head)},
        "encoders": {},
    }
    for model in cfg.encoders:
        run_dir = Path(out) if out else default_run_dir(catalog, model)
        emb = _embeddings(catalog, model, out, cfg, progress, embeddings)
        # one graph per encoder (kept in the run folder, so a second run reuses it), read by every repetition
        graph = build_graph(emb, run_dir / f"graph-k{cfg.k}-{emb.fingerprint[:8]}", GraphConfig(k=cfg.k, recall=1.0, recall_sample=0),
                            progress=progress)
        tag = safe_name(f"{cfg.positive or 'all'}")
        with task(f"experiment augment {cfg.positive or 'all classes'} ({model})", len(cfg.repeats) * len(METHODS),
                  unit="models", enabled=progress) as bar:
            runs = [
                run_one(emb, labeled, cfg, s, run_dir / "experiment-augment" / tag / f"seed{s}", graph=graph, bar=bar)
                for s in cfg.repeats
            ]
        mean, std = _aggregate(runs)
        results["encoders"][model] = {
            "embeddings": emb.source,
            "runs": runs,
            "mean": mean.to_dict(orient="index"),
            "std": std.to_dict(orient="index"),
        }
    if json_out:
        atomic_write_json(json_out, jsonable(results))
    if html_out:
        write_html(results, catalog, html_out)
    return results


def run_one_vs_rest(
    data: str | os.PathLike | None = None,
    config: AugmentExperimentConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    json_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: bool = True,
    embeddings: dict[str, str | os.PathLike | Embeddings] | None = None,
) -> dict[str, dict]:
    """The binary experiment for every class in turn (``--positive each``): one result per
    class, written to ``JSON.<class>.json`` and ``HTML.<class>.html``. The embeddings are
    made (or loaded) once and shared by every class."""
    cfg = config or AugmentExperimentConfig()
    root, catalog = _open(data, cfg)
    classes = sorted(labeled_table(catalog, None)["label"].unique())
    shared = {model: _embeddings(catalog, model, out, cfg, progress, embeddings) for model in cfg.encoders}
    results = {}
    with task("experiment augment, one class vs the rest", len(classes), unit="classes", enabled=progress) as bar:
        for c in classes:
            results[c] = run_augment_experiment(root, replace(cfg, positive=c), out=out, json_out=suffixed_path(json_out, c),
                                                html_out=suffixed_path(html_out, c), progress=progress, embeddings=shared)
            bar.advance(1, last=c)
    return results


def suffixed_path(path: str | os.PathLike | None, cls: str) -> Path | None:
    """``report.html`` -> ``report.<class>.html``: the file of one class of ``--positive each``."""
    return None if path is None else Path(path).with_suffix(f".{safe_name(cls)}{Path(path).suffix}")


def sizes_table(results: dict) -> pd.DataFrame:
    """Table 1: class sizes (mean over repetitions) per encoder."""
    frames = []
    for model, r in results["encoders"].items():
        df = pd.concat([pd.DataFrame(run["sizes"]) for run in r["runs"]]).groupby(level=0).mean()
        df.columns = pd.MultiIndex.from_product([[model], df.columns])
        frames.append(df.T)
    return pd.concat(frames)


def metrics_table(results: dict) -> pd.DataFrame:
    """Table 2: metrics (mean, and std over repetitions) per encoder and method."""
    rows = []
    for model, r in results["encoders"].items():
        for method, m in r["mean"].items():
            row = {"encoder": model, "method": method}
            for key, v in m.items():
                row[key] = v
                if len(r["runs"]) > 1:
                    row[f"{key} sd"] = r["std"][method][key]
            rows.append(row)
    return pd.DataFrame(rows).set_index(["encoder", "method"])


def precision_table(results: dict) -> pd.DataFrame:
    rows = []
    for model, r in results["encoders"].items():
        for kind in ("augmented", "propagated"):
            vals = [run["label_precision"][kind] for run in r["runs"]]
            rows.append(
                {
                    "encoder": model,
                    "labels": kind,
                    "n with known truth": float(np.mean([v["n"] for v in vals])),
                    "precision": float(np.nanmean([v["precision"] for v in vals])) if any(v["n"] for v in vals) else float("nan"),
                }
            )
    return pd.DataFrame(rows).set_index(["encoder", "labels"])


def _auto_choices(results: dict) -> str:
    """What ``pseudo=auto`` chose in each run, e.g. ``none in 2 runs, spread in 1``."""
    modes = [(run.get("pseudo_auto") or {}).get("mode", "none") for r in results["encoders"].values() for run in r["runs"]]
    counts = pd.Series(modes, dtype=object).value_counts()
    return ", ".join(f"{m} in {n} run{'s' if n > 1 else ''}" for m, n in counts.items())


def write_html(results: dict, catalog: Catalog, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simlabel.report import Report, figure_html, pair_grid, setup_table

    cfg = results["config"]
    title = "Similarity label augmentation vs propagation"
    if cfg.get("positive"):
        title += f" — {cfg['positive']} vs rest"
    rep = Report(title)
    rep.add("Setup", setup_table({
        "data": results["data"], "k": cfg["k"], "stop rule": cfg["stop"],
        "holdout": f"the '{cfg['holdout_split']}' split" if cfg.get("holdout_split") else f"{cfg['holdout_frac']:.0%} of the labeled",
        "labeled share": f"{cfg['labeled_frac']:.0%}", "repetitions": list(cfg["repeats"]),
        "head": f"{cfg['head']['head']}" + (" (the paper's: no class weights)" if cfg.get("paper_head") else ", balanced class weights"),
    }))
    sizes = sizes_table(results)
    rep.add_table("Table 1: sizes per class (mean over repetitions)", sizes.T if sizes.shape[1] > 12 else sizes,
                  float_format="{:.0f}")
    mt = metrics_table(results)
    if "no_positive" in mt.columns:
        flagged = mt.index[mt["no_positive"] > 0]
        mt = mt.drop(columns=[c for c in mt.columns if c.startswith("no_positive")])
        if len(flagged):
            rep.add("Warning", "<p class=\"warn\">No holdout item was predicted positive by: "
                    + ", ".join(f"{e} / {m}" for e, m in flagged) + " (HM 0). Class weights (the default) fix this; "
                    "--paper-head trains without them.</p>")
    rep.add_table("Table 2: holdout metrics", mt, note="seeds: trained on the seeds only; aug: seeds + augmented labels; prop: seeds + propagated labels; auto: train --pseudo auto on the seeds (the mode chosen out of fold on the seeds alone: " + _auto_choices(results) + "). HM: harmonic mean of all per-class precisions and recalls.")
    rep.add_table("Precision of the labels made (against the hidden true labels)", precision_table(results))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    cols = ["HM", "accuracy", "macro_f1"]
    plot = mt[cols]
    plot.index = [f"{e} / {m}" for e, m in plot.index]
    plot.plot.bar(ax=ax, rot=20)
    ax.set_ylim(0, 1)
    ax.set_title("holdout metrics")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    rep.add("Chart", figure_html(fig))
    paths = dict(zip(catalog.table["id"], catalog.image_paths()))
    for model, r in results["encoders"].items():
        samples = r["runs"][0]["samples"]
        pairs = [
            ((paths.get(s["id"]), f"{s['label']} (step {s['step']})" + (f", truly {s['truth']}" if s["truth"] else "")),
             (paths.get(s["seed_id"]), "seed"))
            for s in samples
        ]
        rep.add(f"Augmented images beside the seed that pulled them in ({model})", pair_grid(pairs))
    return rep.write(path)
