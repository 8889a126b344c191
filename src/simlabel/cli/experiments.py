"""``simlabel demo`` and ``simlabel experiment ...``: the papers' experiments on a catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from simlabel.cli._common import (
    Table,
    comma_list,
    command,
    default,
    device_option,
    log,
    out_console,
    progress_option,
    say,
    written,
)
from simlabel.cli.labels import COMBINE, FOLDS, KEYWORD_WEIGHT, KNN, RANK_FLOOR, RANK_WEIGHT
from simlabel.experiments.augment import AugmentExperimentConfig
from simlabel.experiments.efficiency import EfficiencyConfig
from simlabel.experiments.flipping import FlippingExperimentConfig
from simlabel.experiments.side_info import METHODS as SIDE_INFO_METHODS
from simlabel.experiments.side_info import SideInfoExperimentConfig
from simlabel.experiments.smoothing import SmoothingExperimentConfig
from simlabel.experiments.ssl import VARIANTS, SSLExperimentConfig
from simlabel.head_config import HeadConfig
from simlabel.labels.selfml import SelfMLConfig
from simlabel.labels.side_info import SideInfoConfig

app = typer.Typer()
experiment_app = typer.Typer(help="Reproduce the papers' experiments on a catalog.", no_args_is_help=True)
DataOpt = "Catalog file or folder (default: $SIMLABEL_DATA or ../shared/datasets/clothing-small)."


@command(app)
def demo(
    data: Optional[Path] = typer.Option(None, "--data", help=DataOpt),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: a cached folder per data+model)."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m", help="Image model."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours for the k-NN accuracy."),
    experiment: bool = typer.Option(True, "--experiment/--no-experiment", help="Also run a small paper-000 experiment (augmentation vs propagation)."),
    labeled_frac: float = typer.Option(0.1, "--labeled-frac", help="Share of the catalog kept labeled in that experiment."),
    graph: Optional[Path] = typer.Option(None, "--graph", help="A k-NN graph of the run's embeddings (`simlabel graph`): the k-NN accuracy reads its neighbours instead of new queries."),
    efficiency: bool = typer.Option(True, "--efficiency/--no-efficiency", help="Also compare seeds only (random labels) with simlabel's select + train --pseudo auto on as many human labels."),
    budget_frac: float = typer.Option(0.01, "--budget-frac", help="The human labels of that comparison, as a share of the catalog (less its test set)."),
    repeats: int = typer.Option(3, "--repeats", help="Repetitions of that comparison (mean and sd)."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Run the main job: embed the data (cached), index it, report k-NN accuracy and a small paper-000 experiment.

    The experiment (label augmentation, paper 000, and train --pseudo auto) runs on the same embeddings, then
    the fewest-labels comparison: at 1% of the catalog, seeds only (random labels, trained alone) against
    simlabel (select in two rounds, train --pseudo auto) with as many human labels.

    Cost: embedding the catalog the first time (about 30 s for clothing-small on 2 cores), then about a minute
    for the experiments (cached: a second demo with the same inputs and code reads them).

    Example: simlabel demo            (uses ../shared/datasets/clothing-small)
    """
    from simlabel.demo import run_demo

    rep = run_demo(data, out=out, model=model, label_col=label_col, k=k, device=device,
                   experiment=experiment, labeled_frac=labeled_frac, graph=graph, efficiency=efficiency,
                   budget_frac=budget_frac, repeats=repeats)
    t = Table(title="simlabel demo", show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("data", rep.data)
    t.add_row("model", rep.model)
    t.add_row("items / embedded / failed", f"{rep.n_items:,} / {rep.n_embedded:,} / {rep.n_failed:,}")
    t.add_row("throughput", "cached (embedded earlier)" if rep.resumed else f"{rep.items_per_s:,.1f} images/s")
    t.add_row("index", rep.index_path)
    t.add_row("train / test", f"{rep.n_train:,} / {rep.n_test:,}")
    acc = "n/a" if rep.knn_accuracy is None else f"{rep.knn_accuracy:.3f}"
    t.add_row(f"test-vs-train {rep.k}-NN accuracy", acc)
    out_console.print(t)
    if rep.per_class_accuracy:
        pc = Table(title="k-NN accuracy per class")
        pc.add_column("class")
        pc.add_column("accuracy", justify="right")
        for c, a in rep.per_class_accuracy.items():
            pc.add_row(c, f"{a:.3f}")
        out_console.print(pc)
    if rep.experiment:
        out_console.print(
            f"\n[bold]Label augmentation (paper 000)[/]: {labeled_frac:.0%} of the catalog keeps its labels; "
            "a dense layer trained on the seeds, seeds + augmented, seeds + propagated labels:",
            soft_wrap=True,
        )
        _print_augment_tables(rep.experiment)
        say(f"experiment report: {Path(rep.out) / 'experiment_augment.html'}")
    few = rep.fewest_labels()
    if few:
        from simlabel.experiments.efficiency import summary_table

        out_console.print(f"\n[bold]The fewest human labels[/]: {few['budget']:,} labels ({few['budget'] / few['pool']:.1%} of "
                          f"{few['pool']:,}), test accuracy, mean ± sd of {few['repeats']} seeds:", soft_wrap=True)
        t = Table(show_header=True)
        t.add_column("pipeline")
        t.add_column("accuracy", justify="right")
        cells = summary_table(rep.efficiency).iloc[:, 0]
        names = {"random+none": "seeds only: random labels, trained alone (the baseline)",
                 "random+auto": "random labels + train --pseudo auto",
                 "auto+none": "select --strategy auto (2 rounds), trained alone",
                 "auto+auto": "simlabel: select --strategy auto (2 rounds) + train --pseudo auto"}
        for name, cell in cells.items():
            t.add_row(names.get(str(name), str(name)), str(cell))
        out_console.print(t)
        gain = few["simlabel"] - few["seeds_only"]
        say(f"simlabel {few['simlabel']:.3f} vs seeds only {few['seeds_only']:.3f} with the same {few['budget']:,} human "
            f"labels: {gain * 100:+.1f} points")
        say(f"efficiency report: {Path(rep.out) / 'experiment_efficiency.html'}")
    say(f"report: {Path(rep.out) / 'demo_report.json'}")


@command(experiment_app, "augment")
def experiment_augment(
    data: Optional[Path] = typer.Option(None, "--data", help=DataOpt),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Binary one-vs-rest for this class; 'each' runs every class in turn."),
    encoders: str = typer.Option(",".join(default(AugmentExperimentConfig, "encoders")), "--encoders", help="Comma-separated image models to compare."),
    k: int = typer.Option(default(AugmentExperimentConfig, "k"), "--k", "-k", help="Neighbours per point."),
    holdout_frac: float = typer.Option(default(AugmentExperimentConfig, "holdout_frac"), "--holdout-frac", help="Share of the labeled examples held out for validation."),
    holdout_split: Optional[str] = typer.Option(None, "--holdout-split", help="Hold out this catalog split (e.g. test) instead of --holdout-frac."),
    labeled_frac: float = typer.Option(default(AugmentExperimentConfig, "labeled_frac"), "--labeled-frac", help="Keep only this share of the catalog labeled; the rest stay unlabeled in the universe."),
    stop: str = typer.Option(default(AugmentExperimentConfig, "stop"), "--stop", help="Augmentation stop rule: shrink or grow."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    repeats: int = typer.Option(1, "--repeats", help="Repetitions with different seeds (mean and sd reported)."),
    head: str = typer.Option(default(HeadConfig, "head"), "--head", help="linear or mlp."),
    paper_head: bool = typer.Option(False, "--paper-head", help="The paper's plain dense layer, without class weights: one-vs-rest on a rare class then often predicts no positive at all (the tables say so)."),
    balanced: bool = typer.Option(True, "--balanced", hidden=True, help="Class weights inverse to frequency (the default)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (tables, chart, image grids)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Paper 000: seeds vs seeds+augmented vs seeds+propagated, a dense layer on frozen embeddings.

    The dense layer has balanced class weights; --paper-head trains it as printed in the paper.
    Cost: per repetition one augmentation, one propagation and three small heads (about 10 s for clothing-small on 2 cores; --positive each runs it once per class).

    Example: simlabel experiment augment --data ../shared/datasets/clothing-small --positive shoes --labeled-frac 0.1 --html aug.html
    """
    from simlabel.experiments.augment import run_augment_experiment, run_one_vs_rest

    cfg = AugmentExperimentConfig(
        label_col=label_col, positive=None if positive == "each" else positive, encoders=comma_list(encoders), k=k,
        holdout_frac=holdout_frac, holdout_split=holdout_split, labeled_frac=labeled_frac, stop=stop, max_steps=max_steps,
        repeats=list(range(repeats)), head=HeadConfig(head=head), paper_head=paper_head,
        device=device, limit=limit,
    )
    common = dict(json_out=json_out, html_out=html_out, out=out)
    if positive == "each":
        results = run_one_vs_rest(data, cfg, **common)
    else:
        results = {positive or "all": run_augment_experiment(data, cfg, **common)}
    from simlabel.experiments.augment import suffixed_path

    for res in results.values():
        _print_augment_tables(res)
    for path in (json_out, html_out):
        if path and positive == "each":
            say(f"written, one file per class: {', '.join(str(suffixed_path(path, c)) for c in results)}")
        elif path:
            say(f"written: {path}")


@command(experiment_app, "smoothing")
def experiment_smoothing(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with titles (e.g. ../shared/datasets/fashion-products)."),
    label_col: str = typer.Option(default(SmoothingExperimentConfig, "label_col"), "--label-col", help="Catalog column holding the labels."),
    text_col: str = typer.Option(default(SmoothingExperimentConfig, "text_col"), "--text-col", help="Catalog column holding the titles."),
    taxonomy_cols: str = typer.Option(",".join(default(SmoothingExperimentConfig, "taxonomy_cols")), "--taxonomy-cols", help="Label tree columns, root to leaf (empty: no taxonomy variant)."),
    approaches: str = typer.Option(",".join(default(SmoothingExperimentConfig, "approaches")), "--approaches"),
    inputs: str = typer.Option(",".join(default(SmoothingExperimentConfig, "inputs")), "--inputs", help="Comma-separated: image, text, image+text (fused by attention)."),
    alpha: float = typer.Option(default(SmoothingExperimentConfig, "alpha"), "--alpha"),
    neighbors: int = typer.Option(default(SmoothingExperimentConfig, "neighbors"), "--neighbors"),
    loss: str = typer.Option(default(SmoothingExperimentConfig, "loss"), "--loss", help="focal or ce."),
    repeats: int = typer.Option(len(default(SmoothingExperimentConfig, "repeats")), "--repeats", help="Training seeds (the split is fixed)."),
    label_model: str = typer.Option(default(SmoothingExperimentConfig, "label_model"), "--label-model", help="Text model for the class names."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (table, charts)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Paper 002: the five smoothing approaches (+ taxonomy) on image and fused image+title inputs.

    Cost: 12 heads per seed (36 at the default 3 seeds), each a few seconds on embeddings in memory: about 4 minutes for fashion-products on 2 cores, plus embedding the titles once.

    Example: simlabel experiment smoothing --data ../shared/datasets/fashion-products --html smoothing.html
    """
    from simlabel.experiments.smoothing import run_smoothing_experiment

    cfg = SmoothingExperimentConfig(
        label_col=label_col, text_col=text_col, taxonomy_cols=comma_list(taxonomy_cols), approaches=comma_list(approaches),
        inputs=comma_list(inputs), alpha=alpha, neighbors=neighbors, loss=loss, repeats=list(range(repeats)),
        label_model=label_model, device=device, limit=limit,
    )
    res = run_smoothing_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out)
    df = pd.DataFrame(res["summary"])
    t = Table(title=f"semantic label smoothing: {res['n_classes']} classes, {res['n_train']:,} train / {res['n_test']:,} test, K = {res['neighbors']}")
    for col in ("inputs", "approach", "top-1", "top-5", "top-5 in nbhd", "all 5 in", "severity"):
        t.add_column(col, justify="left" if col in ("inputs", "approach") else "right")
    sd = repeats > 1
    for _, r in df.iterrows():
        cells = [_mean_sd(r, k, sd, fmt) for k, fmt in (("top1", "{:.3f}"), ("top5", "{:.3f}"), ("in_top5", "{:.2f}"),
                                                       ("all5_in", "{:.3f}"), ("severity", "{:.3f}"))]
        t.add_row(r["inputs"], r["approach"], *cells)
    t.caption = "top-5 in nbhd: mean number of the top-5 predictions inside the true label's K nearest labels + itself; severity: mean tree distance of wrong top-1"
    out_console.print(t)
    written(json_out, html_out)


@command(experiment_app, "flipping")
def experiment_flipping(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with attribute columns (e.g. ../shared/datasets/fashion-products)."),
    attributes: str = typer.Option(",".join(default(FlippingExperimentConfig, "attributes")), "--attributes", help="Comma-separated attribute columns."),
    n_clean: int = typer.Option(default(FlippingExperimentConfig, "n_clean"), "--clean", help="Clean samples used for fine-tuning / the flipping model."),
    systematic: float = typer.Option(default(FlippingExperimentConfig, "systematic_share"), "--systematic", help="Also drop each attribute entirely for this share of the article types (content-dependent loss)."),
    n_basis: int = typer.Option(default(SelfMLConfig, "n_basis"), "--n-basis"),
    joint_steps: int = typer.Option(default(SelfMLConfig, "joint_steps"), "--joint-steps"),
    repeats: int = typer.Option(1, "--repeats"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Table 1, the flips, cleanlab, and the per-label AP gain chart (Figure 4)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Paper 004: Baseline 0 (noisy only), Baseline 1 (fine-tuned on clean), SELF-ML, and cleanlab as a peer.

    Cost: per repetition two multi-label heads, SELF-ML (its reconstruction's pre-training dominates) and two out-of-fold heads for cleanlab: about 1-2 minutes for fashion-products.

    Example: simlabel experiment flipping --data ../shared/datasets/fashion-products --clean 500 --html flipping.html
    """
    from simlabel.experiments.flipping import run_flipping_experiment

    cfg = FlippingExperimentConfig(
        attributes=comma_list(attributes), n_clean=n_clean, systematic_share=systematic,
        selfml=SelfMLConfig(n_basis=n_basis, joint_steps=joint_steps), repeats=list(range(repeats)), device=device, limit=limit,
    )
    res = run_flipping_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out)
    df = pd.DataFrame(res["table"]).set_index("method")
    t = Table(title=f"Table 1 (in %): {len(res['labels'])} labels, {n_clean} clean samples")
    t.add_column("method", no_wrap=True)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for m, row in df.iterrows():
        t.add_row(str(m), *[f"{v:.2f}" for v in row])
    out_console.print(t)
    run = res["runs"][0]
    fq = run["flips_noisy_train"]["all"]
    say(f"SELF-ML flips on N_train: {fq['n_flips']:,} flips, precision {fq['precision']:.3f}, recall {fq['recall']:.3f} "
        f"(wrong noisy entries: {fq['n_wrong_before']:,})")
    for name, q in (("SELF-ML (any flip)", run["selfml_image_level"]), ("cleanlab find_label_issues", run["cleanlab"])):
        say(f"images with wrong labels found by {name}: {q['flagged']:,} flagged, precision {q['precision']:.3f}, "
            f"recall {q['recall']:.3f} (of {q['truly_wrong']:,})")
    written(json_out, html_out)


@command(experiment_app, "side-info")
def experiment_side_info(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog file or folder with titles and true labels (e.g. ../shared/datasets/fashion-products)."),
    label_col: str = typer.Option(default(SideInfoExperimentConfig, "label_col"), "--label-col", help="True labels; their names are the search queries."),
    text_col: str = typer.Option(default(SideInfoExperimentConfig, "text_col"), "--text-col", help="Text searched, and the keywords of stage 2."),
    top_r: int = typer.Option(default(SideInfoExperimentConfig, "top_r"), "--top-r", help="Search results kept per category (R)."),
    search_method: str = typer.Option(default(SideInfoExperimentConfig, "search_method"), "--search", help="bm25, tfidf or embedding."),
    duplicates: str = typer.Option(default(SideInfoExperimentConfig, "duplicates"), "--duplicates", help="An item found by several queries: one row per query (keep, as a web crawl) or its best-ranked query only (best)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Use this label file (id,label,rank: e.g. your search logs) instead of searching."),
    methods: str = typer.Option(",".join(SIDE_INFO_METHODS), "--methods"),
    rank_weight: str = RANK_WEIGHT,
    rank_floor: float = RANK_FLOOR,
    knn: int = KNN,
    combine: str = COMBINE,
    keyword_weight: float = KEYWORD_WEIGHT,
    folds: int = FOLDS,
    measure: str = typer.Option(default(SideInfoExperimentConfig, "measure"), "--measure", help="WordNet similarity: wup, lin or path."),
    text_weight: float = typer.Option(default(SideInfoExperimentConfig, "text_weight"), "--text-weight", help="Blend of text-encoder similarity into WordNet's."),
    related_k: int = typer.Option(default(SideInfoExperimentConfig, "related_k"), "--related-k", help="WordNet-K-nearest categories that support a label."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="CSV category,synset for names the automatic mapping gets wrong."),
    head: str = typer.Option(default(SideInfoExperimentConfig, "head").head, "--head", help="linear or mlp."),
    repeats: int = typer.Option(len(default(SideInfoExperimentConfig, "repeats")), "--repeats", help="Training seeds (split and search are fixed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (tables, weight histograms, image grids)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    graph: Optional[str] = typer.Option(None, "--graph", help="Stage 1's neighbours from a k-NN graph: a folder made by `simlabel graph` over the experiment's embeddings, or 'run' to build one (k = --knn) in the run folder and reuse it."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Paper 003: Baseline / + Stage 1 / + Stage 1 + Stage 2 on labels from a real title search.

    Cost: per seed four MLP heads plus stage 2's three out-of-fold heads (about 10 s each on 10k rows, 2 cores); the search and stage 1 run once.

    Example: simlabel experiment side-info --data ../shared/datasets/fashion-products --label-col article_type --top-r 100 --html side.html
    """
    from dataclasses import replace

    from simlabel.experiments.side_info import run_side_info_experiment

    side = SideInfoConfig(rank_weight=rank_weight, rank_floor=rank_floor, knn=knn, combine=combine,
                          keyword_weight=keyword_weight, stage2_folds=folds)
    cfg = SideInfoExperimentConfig(
        label_col=label_col, text_col=text_col, top_r=top_r, search_method=search_method, duplicates=duplicates,
        labels=str(labels) if labels else None, side=side, measure=measure, text_weight=text_weight,
        related_k=related_k, overrides=str(overrides) if overrides else None, methods=comma_list(methods),
        repeats=list(range(repeats)), head=replace(default(SideInfoExperimentConfig, "head"), head=head),
        device=device, limit=limit, graph=graph,
    )
    res = run_side_info_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out, log=log)
    df = pd.DataFrame(res["summary"])
    t = Table(title=f"side information: {res['n_train']:,} search labels in {res['n_categories']} categories "
                    f"(noise rate {res['noise_rate']:.3f}), {res['n_test']:,} clean test items")
    for col in ("method", "top-1", "top-5", "top-1 gain", "top-5 gain"):
        t.add_column(col, justify="left" if col == "method" else "right")
    sd = repeats > 1
    for _, r in df.iterrows():
        gains = [f"{100 * r[k]:+.2f}" if k in r and r[k] == r[k] else "" for k in ("top1 gain", "top5 gain")]
        t.add_row(r["method"], _mean_sd(r, "top1", sd, "{:.2f}", 100), _mean_sd(r, "top5", sd, "{:.2f}", 100), *gains)
    t.caption = "accuracy in %, mean (±sd) over seeds; oracle-clean drops the wrong labels using the truth (a ceiling)"
    out_console.print(t)
    sep = pd.DataFrame(res["separation"])
    t2 = Table(title="weights of correct vs wrong search labels")
    for col in ("weight", "correct mean", "wrong mean", "correct median", "wrong median", "AUC"):
        t2.add_column(col, justify="left" if col == "weight" else "right")
    for _, r in sep.iterrows():
        t2.add_row(r["weight"], *(f"{r[k]:.3f}" for k in ("correct mean", "wrong mean", "correct median", "wrong median", "auc")))
    out_console.print(t2)
    written(json_out, html_out)


def _mean_sd(row, key: str, with_sd: bool, fmt: str, scale: float = 1.0) -> str:
    """``mean`` or ``mean ±sd`` of ``key`` in a summary row (``"<key> sd"`` holds the sd)."""
    text = fmt.format(scale * row[key])
    return text + (" ±" + fmt.format(scale * row[f"{key} sd"]) if with_sd else "")


def _print_augment_tables(res: dict) -> None:
    from simlabel.experiments.augment import metrics_table as exp_metrics
    from simlabel.experiments.augment import precision_table, sizes_table

    title = res["config"].get("positive") or "all classes"
    binary = bool(res["config"].get("positive"))
    metrics = exp_metrics(res)
    keys = ["+P", "+R", "-P", "-R", "HM", "accuracy"] if binary else ["accuracy", "macro_f1", "HM"]
    compact = pd.DataFrame(index=metrics.index)
    for key in keys:
        sd = metrics.get(f"{key} sd")
        compact[key] = [
            f"{m:.3f}" + (f" ±{s:.3f}" if sd is not None else "") for m, s in zip(metrics[key], sd if sd is not None else metrics[key])
        ]
    if binary and "no_positive" in metrics.columns:
        n_runs = len(res["config"]["repeats"])
        compact[""] = ["" if not share else ("no positive predicted" if share == 1 else
                       f"no positive predicted in {round(share * n_runs)} of {n_runs} runs") for share in metrics["no_positive"]]
    sizes = sizes_table(res)
    if sizes.shape[1] > 4:  # many classes read better as rows
        sizes = sizes.T
        if len(res["encoders"]) == 1:
            sizes.columns = [c[1] for c in sizes.columns]
        else:
            sizes.columns = [" / ".join(c) for c in sizes.columns]
    sizes = sizes.map(lambda v: f"{v:,.0f}")
    prec = precision_table(res)
    prec = pd.DataFrame({"labels with known truth": prec.iloc[:, 0].map(lambda v: f"{v:,.0f}"), "precision": prec["precision"].map(lambda v: f"{v:.3f}")})
    for name, df in (("Table 1: sizes", sizes), ("Table 2: holdout metrics (mean ±sd over repeats)", compact), ("precision of the labels made", prec)):
        t = Table(title=f"{name} — {title}")
        for col in ["", *map(str, df.columns)]:
            t.add_column(col, justify="right" if col else "left")
        single = len(res["encoders"]) == 1
        for idx, row in df.iterrows():
            parts = list(idx) if isinstance(idx, tuple) else [idx]
            label = " / ".join(map(str, parts[1:] if single and len(parts) > 1 else parts))
            t.add_row(label, *map(str, row))
        if single:
            t.caption = f"encoder: {next(iter(res['encoders']))}"
        out_console.print(t)


@command(experiment_app, "ssl")
def experiment_ssl(
    data: Optional[Path] = typer.Option(None, "--data", help="Catalog with images, titles, base_colour and a product-type column (e.g. ../shared/datasets/fashion-products)."),
    variants: str = typer.Option(",".join(VARIANTS), "--variants", help="Comma-separated: " + ", ".join(VARIANTS) + "."),
    epochs: int = typer.Option(default(SSLExperimentConfig, "epochs"), "--epochs", help="Epochs per variant (the same budget for all)."),
    steps_per_epoch: Optional[int] = typer.Option(default(SSLExperimentConfig, "steps_per_epoch"), "--steps-per-epoch", help="Steps per epoch (0: one pass over the catalog)."),
    batch_size: int = typer.Option(default(SSLExperimentConfig, "batch_size"), "--batch-size"),
    global_size: int = typer.Option(default(SSLExperimentConfig, "global_size"), "--global-size", help="Global views' side (the paper: 224)."),
    local_size: int = typer.Option(default(SSLExperimentConfig, "local_size"), "--local-size", help="Low-resolution views' side (the paper: 96)."),
    local_crops: int = typer.Option(default(SSLExperimentConfig, "local_crops"), "--local-crops"),
    train_blocks: str = typer.Option(str(default(SSLExperimentConfig, "train_blocks")), "--train-blocks", help="EfficientNet blocks trained from the top, or 'all'."),
    lr: float = typer.Option(default(SSLExperimentConfig, "lr"), "--lr"),
    task_col: str = typer.Option(default(SSLExperimentConfig, "task_col"), "--task-col", help="Product-type column choosing the local space."),
    probe_cols: str = typer.Option(",".join(default(SSLExperimentConfig, "probe_cols")), "--probe-cols", help="Attributes the probes predict."),
    clusters: int = typer.Option(default(SSLExperimentConfig, "clusters"), "--clusters", help="k of the k-means behind colour entropy."),
    design_seed: int = typer.Option(default(SSLExperimentConfig, "design_seed"), "--design-seed", help="Splits the design groups 50/50: training sees the first half as product positives, design retrieval is measured on the second."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: cached per data and model); a killed run resumes there."),
    json_out: Optional[Path] = typer.Option(None, "--json"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Probe table, colour entropy, training curves, nearest-neighbour grids."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N catalog rows only."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding threads (default: all cores)."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Paper 001: pretrained vs vanilla DINO vs SkiLL and its ablations (\\L, \\H, colour p = 0.1, no product positives) on identical budgets, scored by design retrieval, probes and colour invariance.

    Cost: the five trainings dominate: at the defaults (3 passes over the catalog in steps of 16 products, 2 x 128 px + 4 x 64 px views) about 50 products/s on 2 cores with AVX512-BF16, i.e. 10 min each for fashion-products' 9,583 images, then an embedding pass (1-2 min each) and the probes; about an hour in all.

    Example: simlabel experiment ssl --data ../shared/datasets/fashion-products --json ssl.json --html ssl.html
    """
    import json as _json

    from simlabel.experiments.ssl import probe_table, run_ssl_experiment
    from simlabel.experiments.ssl import write_html as ssl_html

    cfg = SSLExperimentConfig(
        variants=tuple(comma_list(variants)), epochs=epochs, steps_per_epoch=steps_per_epoch or None, batch_size=batch_size,
        global_size=global_size, local_size=local_size, local_crops=local_crops,
        train_blocks="all" if train_blocks == "all" else int(train_blocks), lr=lr, task_col=task_col,
        probe_cols=tuple(comma_list(probe_cols)), clusters=clusters, seed=seed, limit=limit, device=device, workers=workers,
        design_seed=design_seed,
    )
    res = run_ssl_experiment(data, cfg, out=out)
    df = probe_table(res)
    for col in dict.fromkeys(c[0] for c in df.columns):  # one table per attribute: 6 columns fit a terminal
        t = Table(title=f"{col}: probes on frozen embeddings (%)")
        t.add_column("variant", no_wrap=True)
        sub = df[col]
        for kind, metric in sub.columns:
            t.add_column(f"{'lin' if kind == 'linear' else 'mlp'} {metric}", justify="right")
        for v, row in sub.iterrows():
            t.add_row(str(v), *[f"{x:.1f}" for x in row])
        out_console.print(t)
    for v, r in res["variants"].items():
        e = r["colour"]["entropy"]
        tr = r.get("training")
        held = (r.get("design") or {}).get("held") or {}
        design = (f"design R@10 {100 * held['recall']:.1f}% on {held['n_queries']:,} held-out items, "
                  if held.get("recall") is not None else "")
        say(f"{v}: {design}colour entropy {e['mean']:.3f} ±{e['sd']:.3f}, colour probe {100 * r['colour']['probe']['accuracy']:.1f}%"
            + (f", trained {tr['steps']} steps at {tr['images_per_s']:.1f} products/s" if tr else "")
            + ("".join(f"; WARNING {w}" for w in tr["warnings"]) if tr else ""))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(_json.dumps(res, indent=1))
    if html_out:
        from simlabel.catalog import load_catalog
        from simlabel.runs import find_default_data

        ssl_html(res, html_out, load_catalog(find_default_data(data)))
    written(json_out, html_out)


@command(experiment_app, "efficiency")
def experiment_efficiency(
    data: Optional[Path] = typer.Option(None, "--data", help=DataOpt),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Catalog column holding the labels."),
    budgets: Optional[str] = typer.Option(None, "--budgets", help="Comma-separated human-label budgets (default: 0.5%, 1%, 3% and 10% of the pool)."),
    strategies: str = typer.Option(",".join(default(EfficiencyConfig, "strategies")), "--strategies", help="Comma-separated: random, typiclust, probcover, auto."),
    pseudo: str = typer.Option(",".join(default(EfficiencyConfig, "pseudo")), "--pseudo", help="Comma-separated pseudo-label modes: none, auto, augment, propagate, spread."),
    rounds: int = typer.Option(default(EfficiencyConfig, "rounds"), "--rounds", help="Labelling rounds per budget (1: one shot)."),
    repeats: int = typer.Option(default(EfficiencyConfig, "repeats"), "--repeats", help="Repetitions (seeds 0..N-1)."),
    positive: Optional[str] = typer.Option(None, "--positive", help="One class against the rest, scored by average precision (e.g. a rare class)."),
    references: bool = typer.Option(True, "--references/--no-references", help="Also the all-labels ceiling and scikit-learn's LogisticRegression and LabelSpreading."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the catalog's first N rows only."),
    text_col: Optional[str] = typer.Option(None, "--text-col", help="A title column: its embeddings join the images' side by side, for the selection, the graph, the pseudo-labels and the heads."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (embeddings, the graph)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write the page: the curve with sd bands, the table, the items chosen."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """The label-efficiency curve: accuracy against human labels for each selection strategy x pseudo-label mode.

    A simulated reviewer answers from the catalog's labels; the test set is the catalog's test split or a stratified 20% (seed 0), never selected.
    Cost: one head per pipeline, budget and repetition (plus pseudo=auto's 21 out-of-fold heads): about 10 minutes for clothing-small at the defaults on 2 cores.

    Example: simlabel experiment efficiency --data ../shared/datasets/clothing-small --budgets 17,34,102,341 --rounds 2 --html efficiency.html
    """
    from simlabel.experiments.efficiency import run_efficiency_experiment, summary_table

    cfg = EfficiencyConfig(label_col=label_col, budgets=tuple(int(b) for b in comma_list(budgets)),
                           strategies=tuple(comma_list(strategies)), pseudo=tuple(comma_list(pseudo)), rounds=rounds,
                           repeats=repeats, positive=positive, references=references, device=device, limit=limit,
                           text_col=text_col)
    res = run_efficiency_experiment(data, cfg, out=out, json_out=json_out, html_out=html_out, progress=progress)
    t = Table(title=f"label efficiency: {res['metric']} on {res['test']['rule']} ({res['test']['n']:,} items)")
    table = summary_table(res)
    t.add_column("pipeline")
    for c in table.columns:
        t.add_column(f"{c} labels", justify="right")
    for name, row in table.iterrows():
        t.add_row(str(name), *map(str, row.to_numpy()))
    out_console.print(t)
    written(json_out, html_out)
