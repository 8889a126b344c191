"""Paper 003's ablation: Baseline / + Stage 1 / + Stage 1 + Stage 2 on noisy web-style labels.

1. The catalog's true labels (e.g. fashion-products' 75 ``article_type``) are split into a
   held-out test split (kept clean) and a pool.
2. Noisy training labels come from a real search: each category name queries the pool's
   titles (BM25 by default) and its top R results are labelled with the query, with their
   rank (:mod:`simlabel.labels.search`); or from a given label file with ``rank`` (a shop's own
   search logs). Their noise rate against the truth is measured, never planted.
3. Category semantics: WordNet synsets + text-encoder similarity, K nearest categories
   (:mod:`simlabel.semantics.categories`).
4. For each seed the same head is trained three times on the search labels: plain
   cross-entropy (Baseline), weighted by the stage-1 weights (rank + visual neighbours),
   and weighted by stage 1 x the stage-2 text-matching score s(x_i) computed from
   out-of-fold predictions of stage-1 heads (:mod:`simlabel.labels.side_info`). A fourth
   reference row trains on the correct search labels only (the wrong ones dropped, which
   only the held-out truth allows): the ceiling any weighting could reach.
5. Top-1 / top-5 on the clean test split, and how each weight separates correct from wrong
   labels (distributions and ROC AUC).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.experiments._common import fixed_split, mean_sd, open_experiment
from simlabel.files import atomic_write, atomic_write_json, read_csv_table
from simlabel.heads import EmbeddingClassifier, HeadConfig
from simlabel.labels.search import (
    SearchConfig,
    build_search_labels,
    search_noise_report,
)
from simlabel.labels.side_info import (
    SideInfoConfig,
    final_weights,
    keyword_scores,
    stage1_table,
    stage2_scores,
    weight_separation,
)
from simlabel.metrics import topk_accuracy
from simlabel.progress import task
from simlabel.semantics.categories import category_semantics, read_overrides
from simlabel.training import oof_head, oof_predictor

METHODS = ("baseline", "stage1", "stage1+stage2", "oracle-clean")


@dataclass
class SideInfoExperimentConfig:
    """``label_col``: the true labels, whose names are also the search queries. ``labels``:
    a ready label file (``id,label,rank``) to use instead of searching. ``methods``: which
    rows to train (``oracle-clean`` is the reference that drops the wrong labels)."""

    label_col: str = "article_type"
    text_col: str = "title"
    top_r: int = 100
    search_method: str = "bm25"
    #: an item found by several queries: one row per (item, query) as a web crawl gives (``keep``),
    #: or only its best-ranked query (``best``)
    duplicates: str = "keep"
    labels: str | None = None
    side: SideInfoConfig = field(default_factory=SideInfoConfig)
    measure: str = "wup"
    text_weight: float = 0.5
    related_k: int = 5
    overrides: str | None = None
    methods: Sequence[str] = METHODS
    repeats: Sequence[int] = (0, 1, 2)
    test_frac: float = 0.2
    split_seed: int = 0
    image_model: str = "efficientnet-lite0"
    text_model: str = "minilm"
    head: HeadConfig = field(default_factory=oof_head)
    device: str = "auto"
    limit: int | None = None
    #: stage 1's neighbours read from a k-NN graph of the image embeddings (a folder made by
    #: ``simlabel graph`` over them, or ``"run"``: built once with ``k = side.knn`` and kept in the
    #: run folder); ``None``: queried among the labelled images. The same weights for an exact graph.
    graph: str | None = None

    def __post_init__(self) -> None:
        positive_int(self.top_r, "top_r")
        one_of(self.search_method, ("bm25", "tfidf", "embedding"), "search_method")
        one_of(self.duplicates, ("keep", "best"), "duplicates")
        one_of(self.measure, ("wup", "lin", "path"), "measure")
        in_range(self.text_weight, "text_weight", 0, 1)
        positive_int(self.related_k, "related_k", minimum=0)
        for m in self.methods:
            one_of(m, METHODS, "method")
        in_range(self.test_frac, "test_frac", 0, 1, lo_open=True, hi_open=True)
        positive_int(self.limit, "limit", allow_none=True)


def summarize(runs: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(runs)
    out = mean_sd(df, "method", ["top1", "top5"])[["top1", "top5", "top1 sd", "top5 sd"]]
    base = out.loc["baseline"] if "baseline" in out.index else None
    if base is not None:
        out["top1 gain"] = out["top1"] - base["top1"]
        out["top5 gain"] = out["top5"] - base["top5"]
    out["runs"] = df.groupby("method", sort=False).size()
    return out


def run_side_info_experiment(
    data: str | os.PathLike | None = None,
    config: SideInfoExperimentConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    json_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: bool = True,
    log=None,
) -> dict:
    cfg = config or SideInfoExperimentConfig()
    say = log or (lambda msg: None)
    exp = open_experiment(data, model=cfg.image_model, label_col=cfg.label_col, limit=cfg.limit, out=out,
                          device=cfg.device, progress=progress)
    root, catalog, run_dir, emb = exp.root, exp.catalog, exp.run_dir, exp.embeddings
    table = catalog.table
    if cfg.labels is None and cfg.text_col not in table.columns:
        raise InputError(f"{catalog.path}: no text column {cfg.text_col!r} to search (or pass a label file with ranks)")
    say(f"{len(emb.ids):,} image embeddings ({emb.source})")

    truth_all = table[["id", "label"]].copy()
    truth_all["label"] = truth_all["label"].astype(str)
    truth_all = truth_all[truth_all["label"].str.len() > 0].reset_index(drop=True)
    test_mask = fixed_split(truth_all["label"], cfg.test_frac, cfg.split_seed)
    test_df = truth_all[test_mask].reset_index(drop=True)
    test_df = test_df[emb.has(test_df["id"])].reset_index(drop=True)
    truth = truth_all.set_index("id")["label"]

    if cfg.labels:
        # not read_labels: a search log may list one item under several queries
        noisy = read_csv_table(cfg.labels, ("id", "label"), "search log")
        noisy = noisy[~noisy["id"].isin(set(test_df["id"]))].reset_index(drop=True)
        source = f"label file {cfg.labels}"
    else:
        categories_q = sorted(truth_all["label"].unique())
        say(f"searching {len(table):,} titles with {len(categories_q)} category names (top {cfg.top_r}, {cfg.search_method})")
        noisy = build_search_labels(
            catalog, categories=categories_q, text_col=cfg.text_col,
            config=SearchConfig(method=cfg.search_method, top_r=cfg.top_r, duplicates=cfg.duplicates), exclude_ids=set(test_df["id"]),
            progress=progress,
        ).labels
        source = f"{cfg.search_method} search of '{cfg.text_col}', top {cfg.top_r} per category (duplicates: {cfg.duplicates})"
    found = emb.has(noisy["id"].astype(str))
    n_no_emb = int((~found).sum())
    noisy = noisy[found].reset_index(drop=True)
    if noisy.empty:
        raise InputError("the search returned no labelled items with embeddings")
    noise = search_noise_report(noisy, truth[~truth.index.isin(set(test_df["id"]))])
    true_of = truth.reindex(noisy["id"].astype(str)).to_numpy()
    correct = noisy["label"].astype(str).to_numpy() == true_of
    say(f"{len(noisy):,} search labels, noise rate {1 - correct.mean():.3f}")

    categories = sorted(noisy["label"].astype(str).unique())
    overrides = read_overrides(cfg.overrides) if cfg.overrides else None
    say(f"category semantics for {len(categories)} categories (WordNet {cfg.measure} + {cfg.text_model}, w = {cfg.text_weight})")
    sem = category_semantics(categories, measure=cfg.measure, text_weight=cfg.text_weight, k=cfg.related_k,
                             text_encoder=cfg.text_model, overrides=overrides, device=cfg.device)
    sim, related = sem.similarity, sem.neighbors

    X = emb.rows(noisy["id"].astype(str)).matrix
    y = noisy["label"].astype(str).to_numpy()
    rank = pd.to_numeric(noisy["rank"], errors="coerce").to_numpy() if "rank" in noisy.columns else None
    nbrs = None
    if cfg.graph is not None:
        from simlabel.graph import GraphConfig, as_graph, build_graph, neighbours_for

        if cfg.graph == "run":
            g = build_graph(emb, run_dir / f"graph-k{cfg.side.knn}-{emb.fingerprint[:8]}",
                            GraphConfig(k=cfg.side.knn, recall=1.0, recall_sample=0), progress=progress)
        else:
            g = as_graph(cfg.graph)
        distinct = pd.unique(noisy["id"].astype(str))
        nbrs = neighbours_for(emb, min(cfg.side.knn, len(distinct) - 1), among=emb.positions(distinct), graph=g)
        say(f"stage-1 neighbours from the graph {g.meta.get('path', '(in memory)')}")
    s1 = stage1_table(X, y, rank, categories, sim, related, cfg.side, ids=noisy["id"].astype(str).tolist(),
                      neighbors=nbrs)
    w1 = s1["weight"].to_numpy()
    keywords = None
    if cfg.text_col in table.columns and cfg.side.keyword_weight > 0 and "stage1+stage2" in cfg.methods:
        texts = table.set_index("id")[cfg.text_col].reindex(noisy["id"].astype(str)).fillna("").astype(str).tolist()
        keywords = keyword_scores(texts, y, categories, cfg.side, encoder=cfg.text_model, device=cfg.device)

    X_test = emb.rows(test_df["id"]).matrix
    # -1 for a true class the head does not have: never among the top k, so always a miss
    test_codes = pd.Index(categories).get_indexer(test_df["label"].astype(str))
    head = replace(cfg.head, device=cfg.device)
    runs: list[dict] = []
    separation_runs: list[pd.DataFrame] = []
    stage2_first: pd.DataFrame | None = None
    with task("experiment side-info", len(cfg.repeats) * len(cfg.methods), unit="models", enabled=progress) as bar:
        for seed in cfg.repeats:
            hc = replace(head, seed=seed)

            def fit_eval(method: str, weights: np.ndarray | None, keep: np.ndarray | None = None, hc=hc, seed=seed) -> None:
                rows = np.arange(len(y)) if keep is None else np.flatnonzero(keep)
                clf = EmbeddingClassifier(hc, progress_label=f"{method} seed {seed}").fit(
                    X[rows], y[rows], sample_weight=None if weights is None else weights[rows], classes=categories
                )
                scores = clf.predict_proba(X_test)
                runs.append({
                    "method": method, "seed": seed,
                    "top1": topk_accuracy(scores, test_codes, 1), "top5": topk_accuracy(scores, test_codes, 5),
                    "epochs": len(clf.history_), "best_epoch": clf.best_epoch_,
                })
                say(f"seed {seed} {method}: top-1 {runs[-1]['top1']:.4f} top-5 {runs[-1]['top5']:.4f}")
                bar.advance(1)

            if "baseline" in cfg.methods:
                fit_eval("baseline", None)
            if "stage1" in cfg.methods:
                fit_eval("stage1", w1)
            if "stage1+stage2" in cfg.methods:
                predict = oof_predictor(hc, folds=cfg.side.stage2_folds, seed=seed, top=cfg.side.top_predictions)
                proba = predict(X, y, w1, categories)
                s2 = stage2_scores(proba, y, categories, sim, cfg.side, keywords=keywords)
                w2 = final_weights(w1, s2["score"].to_numpy(), cfg.side.stage2_combine)
                fit_eval("stage1+stage2", w2)
                sep = weight_separation({
                    "rank weight": s1["rank_weight"], "neighbour agreement": s1["agreement"], "stage-1 weight": w1,
                    "s(x): prediction match": s2["pred_match"],
                    **({"s(x): keyword match": s2["keyword_match"].fillna(0.0)} if s2["keyword_match"].notna().any() else {}),
                    "s(x)": s2["score"], "stage-2 weight": w2,
                }, correct)
                sep["seed"] = seed
                separation_runs.append(sep)
                if stage2_first is None:
                    stage2_first = s2.assign(stage2_weight=w2)
            if "oracle-clean" in cfg.methods:
                fit_eval("oracle-clean", None, keep=correct)

    if not separation_runs:
        separation_runs.append(weight_separation(
            {"rank weight": s1["rank_weight"], "neighbour agreement": s1["agreement"], "stage-1 weight": w1}, correct))
    separation = pd.concat(separation_runs).groupby("weight", sort=False).mean(numeric_only=True).reset_index()
    separation = separation.drop(columns="seed", errors="ignore")
    for col in ("correct n", "wrong n"):
        separation[col] = separation[col].round().astype(int)

    summary = summarize(runs)
    per_item = noisy[["id", "label"] + (["rank"] if "rank" in noisy.columns else [])].copy()
    per_item["true_label"] = true_of
    per_item["correct"] = correct
    per_item["rank_weight"] = s1["rank_weight"].to_numpy()
    per_item["agreement"] = s1["agreement"].to_numpy()
    per_item["stage1_weight"] = w1
    if stage2_first is not None:
        per_item["text_score"] = stage2_first["score"].to_numpy()
        per_item["keywords"] = stage2_first["keywords"].to_numpy()
        per_item["stage2_weight"] = stage2_first["stage2_weight"].to_numpy()
    weights_csv = run_dir / "side_info_weights.csv"
    atomic_write(weights_csv, lambda tmp: per_item.to_csv(tmp, index=False, float_format="%.5g"))

    results = {
        "data": str(root),
        "config": {**{k: v for k, v in asdict(cfg).items() if k not in ("head", "side")},
                   "side": asdict(cfg.side), "head": asdict(cfg.head)},
        "source": source,
        "n_catalog": int(len(table)),
        "n_test": int(len(test_df)),
        "n_train": int(len(noisy)),
        "n_without_embeddings": n_no_emb,
        "n_categories": len(categories),
        "noise_rate": float(1 - correct.mean()),
        "noise": noise,
        "semantics": sem.to_frame().to_dict(orient="records"),
        "unmapped": [n for n, s in zip(sem.names, sem.mapping.synsets) if s is None],
        "runs": runs,
        "summary": summary.reset_index().to_dict(orient="records"),
        "separation": separation.to_dict(orient="records"),
        "weights_csv": str(weights_csv),
    }
    if json_out:
        atomic_write_json(json_out, results)
    if html_out:
        images = dict(zip(table["id"].astype(str), catalog.image_paths())) if "image" in table.columns else {}
        write_html(results, summary, separation, per_item, images, html_out)
    return results


def _weight_examples(per_item: pd.DataFrame, column: str, n_categories: int = 6, n_each: int = 6) -> pd.DataFrame:
    """The talk's table: for the largest categories whose search results mix right and wrong
    labels (noise rate 10-90%), the weights of their highest- and lowest-weighted items, with
    whether each label is right."""
    stats = per_item.groupby("label")["correct"].agg(["mean", "size"])
    mixed = stats[(stats["size"] >= 10) & stats["mean"].between(0.1, 0.9)]
    noisiest = mixed.sort_values("size", ascending=False).head(n_categories).index
    rows = []
    for cat in noisiest:
        g = per_item[per_item["label"] == cat].sort_values(column, ascending=False)
        top, bottom = g.head(n_each), g.tail(n_each)
        fmt = lambda d: "  ".join(f"{w:.2f}{'' if ok else '*'}" for w, ok in zip(d[column], d["correct"]))  # noqa: E731
        rows.append({"category": cat, "noise rate": 1 - g["correct"].mean(), "highest weights": fmt(top),
                     "lowest weights": fmt(bottom)})
    return pd.DataFrame(rows)


def write_html(results: dict, summary: pd.DataFrame, separation: pd.DataFrame, per_item: pd.DataFrame,
               images: dict[str, str], path: str | os.PathLike) -> Path:
    """The report: ``images`` maps ids to absolute image paths (for the grids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simlabel.report import Report, figure_html, image_grid, setup_table, table_html

    rep = Report("Re-weighting noisy web labels with side information (paper 003)")
    cfg = results["config"]
    rep.add("Setup", setup_table({
        "data": f"{results['data']} ({results['n_catalog']:,} items)",
        "clean test split": f"{results['n_test']:,} items with their true '{cfg['label_col']}' labels",
        "training labels": f"{results['source']}: {results['n_train']:,} items in {results['n_categories']} categories",
        "noise rate": f"{results['noise_rate']:.3f}", "head": cfg["head"]["head"], "seeds": list(cfg["repeats"]),
        "category semantics": f"WordNet {cfg['measure']} blended with {cfg['text_model']} (text weight {cfg['text_weight']}), "
                              f"K = {cfg['related_k']}",
        "unmapped categories": ", ".join(results["unmapped"]) or "none",
    }))
    rep.add_table("Top-1 / top-5 on the clean test split (mean over seeds)", summary, float_format="{:.4f}",
                  note="baseline: plain cross-entropy on the search labels; stage1: weighted by rank and visual "
                       "neighbours; stage1+stage2: also by the text-matching score s(x); oracle-clean: the wrong "
                       "search labels dropped (needs the truth, a ceiling, not a method).")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    for a, key in zip(ax, ("top1", "top5")):
        summary[key].plot.bar(ax=a, rot=20, yerr=summary[f"{key} sd"], color="#4c72b0")
        lo = summary[key].min()
        a.set_ylim(max(0.0, lo - 0.05), min(1.0, summary[key].max() + 0.02))
        a.set_title(key)
    rep.add("Chart", figure_html(fig))
    rep.add_table("How each weight separates correct from wrong labels", separation.set_index("weight"),
                  note="Known from the held-out truth. auc: ROC AUC of the weight as a detector of correct labels "
                       "(0.5 = chance, 1 = perfect).")
    cols = [c for c in ("rank_weight", "agreement", "stage1_weight", "text_score", "stage2_weight") if c in per_item]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.3 * len(cols), 2.4))
    for a, c in zip(np.atleast_1d(axes), cols):
        bins = np.linspace(0, 1, 21)
        a.hist(per_item.loc[per_item["correct"], c], bins=bins, alpha=0.6, density=True, label="correct")
        a.hist(per_item.loc[~per_item["correct"], c], bins=bins, alpha=0.6, density=True, label="wrong")
        a.set_title(c)
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5))  # beside the histograms, not over them
    rep.add("Weight distributions, correct vs wrong labels", figure_html(fig))
    final = "stage2_weight" if "stage2_weight" in per_item else "stage1_weight"
    rep.add_table(f"Categories with mixed search results: highest and lowest {final} (* = wrong label)",
                  _weight_examples(per_item, final).set_index("category"), note="As the talk's table: wrong labels collect at the bottom.")
    noise = results["noise"]
    by_rank = pd.DataFrame(noise.get("by_rank", []))
    if not by_rank.empty:
        rep.add_table("Noise rate of the search labels by rank", by_rank.set_index(by_rank.columns[0]))
    by_cat = pd.DataFrame(noise.get("by_category", []))
    if not by_cat.empty:
        rep.add_table("Noisiest categories of the search", by_cat.head(15).set_index("label"))
    if images:
        low = per_item.sort_values(final).head(24)
        rep.add("Lowest-weighted training images", image_grid(
            [(str(images.get(i)), f"{lab} ({w:.2f}); truth {t}") for i, lab, w, t in
             zip(low["id"], low["label"], low[final], low["true_label"])]))
        high = per_item.sort_values(final, ascending=False).groupby("label").head(1).head(24)
        rep.add("Highest-weighted image per category", image_grid(
            [(str(images.get(i)), f"{lab} ({w:.2f})") for i, lab, w in zip(high["id"], high["label"], high[final])]))
    sem = pd.DataFrame(results["semantics"])
    if not sem.empty:
        near_cols = [c for c in sem.columns if c.startswith("neighbor_")]
        compact = pd.DataFrame({
            "category": sem["category"], "synset": sem["synset"].fillna("-"), "how": sem["how"],
            "nearest categories (blended similarity)": [
                ", ".join(f"{row[c]} ({row[c.replace('neighbor', 'similarity')]:.2f})" for c in near_cols
                          if isinstance(row[c], str)) for _, row in sem.iterrows()],
        }).set_index("category")
        rep.add("Category semantics (WordNet synset and nearest categories)", table_html(compact))
    return rep.write(path)
