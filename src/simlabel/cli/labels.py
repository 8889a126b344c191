"""The label producers: ``augment``, ``propagate``, ``search``, ``categories``, ``side-info``, ``flip``, ``suspects``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from simlabel.cli._common import (
    Table,
    columns,
    comma_list,
    command,
    default,
    device_option,
    graph_option,
    index_kind_option,
    index_option,
    index_or_kind,
    log,
    normalize_option,
    out_console,
    param_default,
    partial_option,
    progress_option,
    say,
    wait_option,
    written,
)
from simlabel.labels.augment import augment as augment_fn
from simlabel.labels.propagate import propagate as propagate_fn
from simlabel.labels.search import SearchConfig
from simlabel.labels.selfml import SelfMLConfig
from simlabel.labels.side_info import SideInfoConfig
from simlabel.labels.suspects import SuspectsConfig
from simlabel.selection.queue import STRATEGIES, SelectConfig
from simlabel.semantics.categories import category_semantics

app = typer.Typer()
labels_app = typer.Typer(help="Make label files from a catalog: seeds, holdouts, clean sets, noisy copies.", no_args_is_help=True)


def label_col_option() -> str:
    return typer.Option("label", "--label-col", help="Column of --labels holding the labels, e.g. article_type when "
                        "--labels is a catalog (file or folder); default 'label'.")


@command(labels_app, "sample")
def labels_sample(
    catalog: Path = typer.Argument(..., help="Catalog file or folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Label file to write: id,label (id,labels for multi-labels)."),
    label_col: str = typer.Option("label", "--label-col", help="Single labels from this column (e.g. article_type)."),
    labels_col: Optional[str] = typer.Option(None, "--labels-col", help="Or multi-labels from a '|'-separated column."),
    attributes: Optional[str] = typer.Option(None, "--attributes", help="Or multi-labels attr=value from these columns (gender,usage,season)."),
    frac: Optional[float] = typer.Option(None, "--frac", help="Share of each class's labelled rows to draw (default: all)."),
    n: Optional[int] = typer.Option(None, "--n", help="Or this many rows in all (spread over the classes with --stratify)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Or this many rows of each class."),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Draw each class in proportion (every class keeps at least one row with --frac)."),
    holdout_out: Optional[Path] = typer.Option(None, "--holdout-out", help="Also write a holdout (id,label), drawn first and never sampled."),
    holdout_frac: Optional[float] = typer.Option(None, "--holdout-frac", help="Share of each class held out into --holdout-out."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="CSV with an id column: rows never drawn (e.g. an earlier holdout)."),
    noise: float = typer.Option(0.0, "--noise", help="A noisy copy: this share of the single labels replaced by another class (uniform); multi-labels: each positive dropped with this probability."),
    keep_columns: bool = typer.Option(False, "--keep-columns", help="Write every catalog column too (image paths made absolute): a catalog copy, e.g. a noisy catalog for flip."),
    truth_out: Optional[Path] = typer.Option(None, "--truth-out", help="With --noise: write the true labels of the sample here."),
    seed: int = typer.Option(0, "--seed", help="Seed of every draw."),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Draw seeds, a holdout, a clean set or a noisy copy from a catalog's own labels.

    Cost: reading the catalog (seconds for millions of rows).

    Examples:
      simlabel labels sample ../shared/datasets/fashion-products --label-col article_type --frac 0.1 --holdout-frac 0.2 --holdout-out test.csv --out seeds.csv
      simlabel labels sample catalog.csv --attributes gender,usage,season --n 500 --out clean.csv
      simlabel labels sample catalog.csv --attributes gender,usage,season --noise 0.5 --keep-columns --out noisy.csv
    """
    from simlabel.labels.sample import SampleConfig, sample_labels

    cfg = SampleConfig(label_col=label_col, labels_col=labels_col, attributes=tuple(comma_list(attributes)), frac=frac, n=n,
                       per_class=per_class, stratify=stratify, holdout_frac=holdout_frac, noise=noise,
                       keep_columns=keep_columns, seed=seed)
    res = sample_labels(catalog, cfg, out=out, holdout_out=holdout_out, truth_out=truth_out, exclude=exclude)
    counts = pd.Series(res.counts)
    t = Table(title=f"{len(res.sample):,} of {res.n_labelled:,} labelled rows drawn, {len(counts)} classes"
                    + (" (by rarest label)" if cfg.multilabel else ""))
    for col in ("class", "rows", "class", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    items = list(counts.sort_values(ascending=False).items())
    half = (len(items) + 1) // 2
    shown = items[:40] if len(items) > 80 else items
    half = min(half, 20) if len(items) > 80 else half
    for i in range(half):
        left = shown[i] if i < len(shown) else ("", "")
        right = shown[half + i] if half + i < len(shown) else ("", "")
        t.add_row(str(left[0]), f"{left[1]:,}" if left[1] != "" else "", str(right[0]), f"{right[1]:,}" if right[1] != "" else "")
    if len(items) > 80:
        t.caption = f"the 40 largest of {len(items)} classes"
    out_console.print(t)
    if res.n_noisy:
        say(f"noise: {res.n_noisy:,} of {len(res.sample):,} rows changed")
    written(out, truth_out)
    if res.holdout is not None:
        say(f"holdout: {len(res.holdout):,} rows -> {holdout_out}")


@command(app)
def augment(
    emb: str = typer.Option(..., "--emb", help="Embedding folder (the universe: every id in it)."),
    labels: Path = typer.Option(..., "--labels", help="Seed labels: CSV with id,label (simlabel labels sample makes one), or a catalog with --label-col."),
    out: Path = typer.Option(..., "--out", "-o", help="Augmented labels CSV: id,label,step,source,via."),
    label_col: str = label_col_option(),
    k: int = typer.Option(param_default(augment_fn, "k"), "--k", "-k", help="Neighbours per point (n_k)."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Labels to hold out (never labeled), CSV id,label."),
    holdout_frac: Optional[float] = typer.Option(None, "--holdout-frac", help="Hold out this share of the seeds instead (stratified)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --holdout-frac."),
    stop: str = typer.Option(param_default(augment_fn, "stop"), "--stop", help="shrink: stop when a frontier shrinks (default); grow: the rule as printed in paper 000."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="At most this many steps."),
    graph: Optional[str] = graph_option("the neighbours (no queries at all)"),
    index_path: Optional[Path] = index_option(),
    index_kind: str = index_kind_option(param_default(augment_fn, "index_kind")),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Grow seed labels through nearest neighbours (paper 000, section 3).

    Writes OUT, OUT.summary.json (sizes per class and step) and, with --holdout-frac, OUT.holdout.csv.
    Cost: one k-NN query per point labelled at each step (the frontier), not the whole catalog.

    Example: simlabel augment --emb emb/ --labels seeds.csv --k 10 --holdout-frac 0.3 --out aug.csv
    """
    made = augment_fn(
        emb, labels, k=k, holdout=holdout, holdout_frac=holdout_frac, seed=seed, stop=stop,
        max_steps=max_steps, index=index_path, index_kind=index_kind, out=out, label_col=label_col, graph=graph,
    )
    table, result = made.labels, made.result
    out_console.print(augment_sizes_table(result, f"augmentation sizes (k={k}, stop={stop}: {result.stop_reason} after "
                                                  f"{result.n_steps} steps)", summary=f"{out}.summary.json"))
    say(f"{len(table):,} labels ({int((table['source'] == 'augmented').sum()):,} augmented) -> {out}")


def augment_sizes_table(result, title: str, *, summary: str, max_rows: int = 25) -> Table:
    """The sizes per class and step, one class per row (a class per column is unreadable beyond a
    few); the largest ``max_rows`` classes, the rest in the summary JSON."""
    sizes = result.size_table()
    conflicts = sizes.pop("conflicts")
    by_class = sizes.T  # rows: classes; columns: step 0.., seeds, augmented, total
    steps = [c for c in by_class.columns if str(c).startswith("step ")][1:]
    by_class = by_class[["seeds", *steps, "augmented", "total"]].sort_values("total", ascending=False)
    t = Table(title=title)
    t.add_column("class")
    for c in by_class.columns:
        t.add_column(str(c), justify="right")
    for name, row in by_class.head(max_rows).iterrows():
        t.add_row(str(name), *["" if v != v else f"{int(v):,}" for v in row])
    if len(by_class) > max_rows:
        t.add_row(f"... {len(by_class) - max_rows} more classes", *[""] * len(by_class.columns), style="dim")
    t.add_row("all classes", *[f"{int(v):,}" for v in by_class.sum()], style="bold")
    contested = [f"step {i}: {int(conflicts.iloc[i]):,}" for i in range(1, result.n_steps + 1) if conflicts.iloc[i]]
    notes = [f"points reached by two classes in one step, left unlabeled: {', '.join(contested)}"] if contested else []
    if len(by_class) > max_rows:
        notes.append(f"the {max_rows} largest of {len(by_class)} classes; every class and step in {summary}")
    t.caption = "\n".join(notes) or None
    return t


@command(app)
def propagate(
    emb: str = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Labeled ids, CSV with id,label (clamped), or a catalog with --label-col."),
    out: Path = typer.Option(..., "--out", "-o", help="Propagated labels CSV: id,label,confidence."),
    label_col: str = label_col_option(),
    k: int = typer.Option(param_default(propagate_fn, "k"), "--k", "-k", help="Neighbours per node in the graph."),
    steps: int = typer.Option(param_default(propagate_fn, "steps"), "--steps", help="Propagation steps (paper 000: as many as the augmentation took)."),
    unlabeled_sample: Optional[int] = typer.Option(None, "--unlabeled-sample", help="Unlabeled nodes to sample (default: all)."),
    symmetric: bool = typer.Option(False, "--symmetric", help="Use the symmetrised k-NN graph instead of the directed one."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="CSV with an id column of points to keep out of the graph (e.g. a holdout)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the unlabeled sample."),
    graph: Optional[str] = graph_option("the nodes' neighbours"),
    index_path: Optional[Path] = index_option(),
    index_kind: str = index_kind_option(param_default(propagate_fn, "index_kind")),
    method: str = typer.Option(param_default(propagate_fn, "method"), "--method", help="iterate (paper 000's clamped steps) or spread (the closed form (I - alpha S) Z = Y by conjugate gradient, Zhou et al. 2004)."),
    alpha: float = typer.Option(param_default(propagate_fn, "alpha"), "--alpha", help="spread: weight of the graph against the seeds, in (0, 1)."),
    power: float = typer.Option(param_default(propagate_fn, "power"), "--power", help="spread: edge weight = similarity ** power (Iscen et al. 2019: 3)."),
    tol: float = typer.Option(param_default(propagate_fn, "tol"), "--tol", help="spread: CG stops when each class's residual is this share of its start (1e-4: about half the iterations at 1M rows, the same labels, confidences within a few hundredths)."),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Label propagation on the k-NN graph (Zhu & Ghahramani 2002), the baseline of paper 000.

    Cost: building the k-NN graph of the labelled + sampled nodes (none with --graph), then one sparse product per step (or per CG iteration with --method spread).

    Example: simlabel propagate --emb emb/ --labels seeds.csv --k 10 --steps 4 --unlabeled-sample 5000 --out prop.csv
    """
    from simlabel.labels.io import read_id_list

    ex = read_id_list(exclude, what="exclude file") if exclude else None
    made = propagate_fn(emb, labels, k=k, steps=steps, unlabeled_sample=unlabeled_sample, symmetric=symmetric,
                        exclude=ex, seed=seed, out=out, label_col=label_col, graph=graph, index=index_path,
                        index_kind=index_kind, method=method, alpha=alpha, power=power, tol=tol)
    table, res = made.labels, made.result
    counts = table["label"].value_counts()
    how = f"{res.steps} steps" if method == "iterate" else f"{res.steps} CG iterations ({'converged' if res.converged else 'not converged'})"
    t = Table(title=f"{len(table):,} propagated labels after {how}")
    for col in ("class", "labels", "mean confidence"):
        t.add_column(col, justify="left" if col == "class" else "right")
    conf = table.groupby("label")["confidence"].mean() if "confidence" in table.columns else None
    for c, n in counts.head(25).items():
        t.add_row(str(c), f"{n:,}", "" if conf is None else f"{conf[c]:.3f}")
    if len(counts) > 25:
        t.caption = f"the 25 largest of {len(counts)} classes; every label in {out}"
    out_console.print(t)
    say(f"{len(table):,} propagated labels -> {out}")


@command(app)
def search(
    catalog: Path = typer.Argument(..., help="Catalog file or folder with a text column (e.g. titles)."),
    out: Path = typer.Option(..., "--out", "-o", help="Label CSV to write: id,label,rank,score,query."),
    categories: Optional[str] = typer.Option(None, "--categories", help="Comma-separated category names to query (default: the values of --label-col)."),
    label_col: str = typer.Option("label", "--label-col", help="Catalog column whose distinct values are the queries (when --categories is not given)."),
    text_col: str = typer.Option("title", "--text-col", help="Catalog column searched."),
    top_r: int = typer.Option(default(SearchConfig, "top_r"), "--top-r", help="Results kept per query (R)."),
    method: str = typer.Option(default(SearchConfig, "method"), "--method", help="bm25 (default), tfidf, or embedding (MiniLM cosine)."),
    exclude_split: Optional[str] = typer.Option(None, "--exclude-split", help="Leave out the catalog rows of this split (e.g. test) from the searchable pool."),
    duplicates: str = typer.Option(default(SearchConfig, "duplicates"), "--duplicates", help="An item found by several queries keeps the best-ranked one (best) or all (keep)."),
    device: str = device_option(),
    wait: bool = wait_option(),
) -> None:
    """Noisy web-style labels from a real search (paper 003): each category name queries the titles.

    The top R results of each query are labelled with the query, with their rank.
    Cost: one BM25 (or TF-IDF, or MiniLM) query per category over the titles (seconds for 10k titles).

    Example: simlabel search ../shared/datasets/fashion-products --label-col article_type --top-r 100 --out search.csv
    """
    from simlabel.catalog import load_catalog
    from simlabel.labels.search import build_search_labels

    cat = load_catalog(catalog, columns=columns(label=label_col if label_col != "label" else None), require=("id",))
    cfg = SearchConfig(method=method, top_r=top_r, duplicates=duplicates, device=device)
    labels = build_search_labels(cat, categories=comma_list(categories) or None, text_col=text_col, config=cfg, out=out,
                                 exclude_split=exclude_split).labels
    counts = labels["label"].value_counts()
    say(f"{len(labels):,} labelled items from {counts.size} queries (median {int(counts.median())} per query) -> {out}")


@command(app)
def categories(
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV (or a catalog with --label-col): its distinct labels are the categories."),
    label_col: str = label_col_option(),
    names: Optional[str] = typer.Option(None, "--names", help="Or comma-separated category names."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the semantics as JSON (for simlabel side-info --semantics)."),
    measure: str = typer.Option(param_default(category_semantics, "measure"), "--measure", help="WordNet similarity: wup (Wu-Palmer), lin (Lin, Brown IC) or path."),
    text_weight: float = typer.Option(param_default(category_semantics, "text_weight"), "--text-weight", help="Blend: (1-w) WordNet + w text-encoder similarity of the names (1: text only)."),
    k: int = typer.Option(param_default(category_semantics, "k"), "--k", help="Nearest categories kept per category."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="CSV category,synset: your synset for names the automatic mapping gets wrong."),
    sense: str = typer.Option(param_default(category_semantics, "sense"), "--sense", help="Word sense: context (disambiguated by the other categories) or first (WordNet's most frequent)."),
    text_model: str = typer.Option("minilm", "--text-model", help="Text encoder for the names ('none': WordNet only)."),
    device: str = device_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Category semantic relationships (paper 003): WordNet synsets, text similarity, K nearest.

    Each category name is mapped to a WordNet synset; the WordNet similarity is updated with a
    text encoder's, and each category keeps its K nearest categories.
    Cost: WordNet look-ups and one text-encoder pass over the names (seconds).

    Example: simlabel categories --labels search.csv --out semantics.json
    """
    from simlabel.errors import InputError
    from simlabel.labels.io import read_labels
    from simlabel.semantics.categories import read_overrides

    if (labels is None) == (names is None):
        raise InputError("give the categories with exactly one of --labels FILE or --names A,B,C")
    cats = sorted(read_labels(labels, label_col=label_col)["label"].unique()) if labels else comma_list(names)
    sem = category_semantics(cats, measure=measure, text_weight=text_weight, k=k, sense=sense,
                             text_encoder=None if text_model == "none" else text_model,
                             overrides=read_overrides(overrides) if overrides else None, device=device)
    if out:
        sem.save(out)
    t = Table(title=f"{len(cats)} categories: WordNet {measure} + {text_model} (text weight {text_weight}), K = {k}")
    for col in ("category", "synset", "how", "nearest categories (similarity)"):
        t.add_column(col, overflow="fold")
    for i, name in enumerate(sem.names):
        near = ", ".join(f"{sem.names[j]} ({sem.similarity[i, j]:.2f})" for j in sem.neighbors[i])
        t.add_row(name, sem.mapping.synsets[i] or "-", sem.mapping.how[i], near)
    out_console.print(t)
    written(out)


# paper 003's knobs, shared by `side-info` and `experiment side-info`
RANK_WEIGHT = typer.Option(default(SideInfoConfig, "rank_weight"), "--rank-weight", help="linear, exp, dcg or none: how trust falls with rank.")
RANK_FLOOR = typer.Option(default(SideInfoConfig, "rank_floor"), "--rank-floor", help="The weight of the deepest rank (rank alone never drops an item).")
KNN = typer.Option(default(SideInfoConfig, "knn"), "--knn", help="Visual neighbours per image (stage 1).")
COMBINE = typer.Option(default(SideInfoConfig, "combine"), "--combine", help="Stage 1: product or mean of rank weight and neighbour agreement.")
KEYWORD_WEIGHT = typer.Option(default(SideInfoConfig, "keyword_weight"), "--keyword-weight", help="Stage 2: share of the keyword match in s(x).")
FOLDS = typer.Option(default(SideInfoConfig, "stage2_folds"), "--folds", help="Stage 2: out-of-fold heads (0: in-sample).")


def side_info(
    emb: str = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    labels: Path = typer.Option(..., "--labels", help="Noisy labels: CSV id,label and optionally rank (from simlabel search or your own search logs), or a catalog with --label-col."),
    label_col: str = label_col_option(),
    out: Path = typer.Option(..., "--out", "-o", help="The labels with their weights (column 'weight' for simlabel train --weight-col weight)."),
    stage: int = typer.Option(1, "--stage", help="1: rank + visual neighbours; 2: also text matching of out-of-fold predictions."),
    semantics: Optional[Path] = typer.Option(None, "--semantics", help="JSON from simlabel categories (default: built from the label names)."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Stage 2: the catalog whose --text-col gives each item's keywords."),
    text_col: str = typer.Option("title", "--text-col", help="Stage 2: text column for keywords (title, description or tags)."),
    rank_weight: str = RANK_WEIGHT,
    rank_floor: float = RANK_FLOOR,
    knn: int = KNN,
    graph: Optional[str] = graph_option("the neighbours among the labelled images"),
    index_path: Optional[str] = index_option(),
    index_kind: str = index_kind_option(default(SideInfoConfig, "index")),
    combine: str = COMBINE,
    keyword_weight: float = KEYWORD_WEIGHT,
    folds: int = FOLDS,
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Per-image weights for noisy labels from side information (paper 003).

    Cost: stage 1 is one k-NN query per image (seconds for 10k; none with --graph); stage 2 trains --folds MLP heads out of fold (about 10 s each on 10k rows, 2 cores) and embeds the keywords.

    Example: simlabel side-info --emb emb/ --labels search.csv --stage 2 --catalog catalog.csv --out weighted.csv
    then: simlabel train --emb emb/ --labels weighted.csv --weight-col weight --out model/
    """
    from simlabel.catalog import load_catalog
    from simlabel.labels.side_info import side_info_weights
    from simlabel.training import oof_head, oof_predictor

    index_path, index_kind = index_or_kind(index_path, index_kind)
    cfg = SideInfoConfig(rank_weight=rank_weight, rank_floor=rank_floor, knn=knn, index=index_kind, combine=combine,
                         keyword_weight=keyword_weight, stage2_folds=folds)
    texts = load_catalog(catalog, require=("id",)).texts(text_col) if stage == 2 and catalog is not None else None
    predictor = None
    if stage == 2:
        predictor = oof_predictor(oof_head(device), folds=cfg.stage2_folds, seed=seed, top=cfg.top_predictions)
    made = side_info_weights(emb, labels, semantics=semantics, config=cfg, stage=stage, texts=texts, predictor=predictor,
                             out=out, device=device, log=log, label_col=label_col, graph=graph, index=index_path)
    w = made.summary["weight"]
    say(f"{made.summary['n']:,} weights (stage {stage}): mean {w['mean']:.3f}, p10 {w['p10']:.3f}, "
        f"median {w['median']:.3f}, p90 {w['p90']:.3f} -> {out}")


command(app, "side-info")(side_info)
# the command's first name, kept for scripts that use it
command(app, "weights", hidden=True)(side_info)


@command(app)
def flip(
    emb: str = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    catalog: Path = typer.Option(..., "--catalog", help="Catalog with the (noisy) multi-labels."),
    attributes: Optional[str] = typer.Option(None, "--attributes", help="Comma-separated attribute columns: one binary label per value (e.g. gender,usage,season)."),
    labels_col: str = typer.Option("labels", "--labels-col", help="Or a '|'-separated multi-label column."),
    clean: Optional[Path] = typer.Option(None, "--clean", help="CSV id,labels: verified labels of a few items (trains the flipping model)."),
    export_basis: Optional[Path] = typer.Option(None, "--export-basis", help="No clean set: write the images nearest the used basis vectors, to be labelled."),
    basis_labels: Optional[Path] = typer.Option(None, "--basis-labels", help="The labelled --export-basis file: flips by the direct rule Y_B c_i."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="FLIPS.csv: id,label,attribute,old,new,confidence,basis,weights,basis_labels."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of image grids: each flip beside the basis images that explain it."),
    model_out: Optional[Path] = typer.Option(None, "--model-out", help="With --clean: save the multi-label classifier SELF-ML trained jointly as a model folder (simlabel predict --model reads it)."),
    n_basis: int = typer.Option(default(SelfMLConfig, "n_basis"), "--n-basis", help="Basis size n_B."),
    joint_steps: int = typer.Option(default(SelfMLConfig, "joint_steps"), "--joint-steps", help="Joint training steps."),
    threshold: float = typer.Option(default(SelfMLConfig, "threshold"), "--threshold", help="Label threshold of the flipping model / direct rule."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder the catalog's relative image paths start from (default: the catalog's folder)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
) -> None:
    """Explainable noisy-label flipping for multi-label attributes (SELF-ML, paper 004).

    Cost: the reconstruction's pre-training (15 epochs of the 1000-vector basis over every image) and 500 joint steps: about 20 s for fashion-products' 9.6k images on 2 cores.

    Example: simlabel flip --emb emb/ --catalog catalog.csv --attributes gender,usage,season --clean clean.csv --out flips.csv --html explain.html
    """
    from simlabel.catalog import load_catalog
    from simlabel.encoders.base import resolve_device
    from simlabel.labels.flipping import flip as flip_fn
    from simlabel.report import write_flip_html
    from simlabel.training import multilabel_pretrain

    if model_out is not None and clean is None:
        from simlabel.errors import InputError

        raise InputError("--model-out needs --clean: only joint SELF-ML (a clean set) trains a classifier")
    cfg = SelfMLConfig(n_basis=n_basis, joint_steps=joint_steps, threshold=threshold, seed=seed, device=resolve_device(device))
    cat = load_catalog(catalog, require=("id",), root=image_root)
    made = flip_fn(emb, cat, attributes=comma_list(attributes) or None, labels_col=labels_col, clean=clean,
                   basis_labels=basis_labels, export_basis=export_basis, out=out, html=html_out,
                   render=lambda t, p: write_flip_html(t, cat, p), config=cfg, pretrain=multilabel_pretrain(cfg))
    if made.basis_to_label is not None:
        say(f"{len(made.basis_to_label):,} basis images to label -> {export_basis} (fill the labels column, then "
            "--basis-labels)")
        return
    s = made.summary
    say(f"{s['flips']:,} labels flipped ({s['added']:,} added, {s['removed']:,} removed)" + (f" -> {out}" if out else ""))
    if html_out:
        say(f"explanations: {html_out}")
    if model_out is not None:
        from simlabel.training import save_flip_model

        save_flip_model(made, model_out, threshold=threshold)
        say(f"the jointly trained multi-label classifier -> {model_out} (simlabel predict --model {model_out})")


@command(app)
def suspects(
    emb: str = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    labels: Path = typer.Option(..., "--labels", help="The labels to check: CSV id,label (seller-given), or a catalog with --label-col."),
    label_col: str = label_col_option(),
    out: Path = typer.Option(..., "--out", "-o", help="SUSPECTS.csv: id,label,suggested,score,rank,method and the nearest labelled neighbours that explain it."),
    method: str = typer.Option(default(SuspectsConfig, "method"), "--method", help="knn (training-free votes of the labelled neighbours), cleanlab (find_label_issues on out-of-fold probabilities of a head) or both."),
    k: int = typer.Option(default(SuspectsConfig, "k"), "--k", "-k", help="Labelled neighbours that vote."),
    mode: str = typer.Option(default(SuspectsConfig, "mode"), "--mode", help="knn: rank (per-class noise rates estimated from the neighbours' label consensus, SimiFeat's ranking) or vote (another label wins the vote)."),
    weighting: str = typer.Option(default(SuspectsConfig, "weighting"), "--weighting", help="knn: similarity (each vote weighs its cosine) or uniform."),
    duplicate_threshold: float = typer.Option(default(SuspectsConfig, "duplicate_threshold"), "--duplicate-threshold", help="Cosine at or above which two items are one product (one vote); 1.0 or more: no grouping."),
    graph: Optional[str] = graph_option("the neighbours among the labelled items"),
    index_path: Optional[Path] = index_option(),
    index_kind: str = index_kind_option(default(SuspectsConfig, "index")),
    folds: int = typer.Option(3, "--folds", help="cleanlab: out-of-fold heads."),
    all_items: bool = typer.Option(False, "--all", help="Write every item (rank empty for those not suspected), not only the suspects."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of the top suspects, each beside the neighbours that explain it."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="The catalog whose images the page shows (default: --labels when it has an image column)."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="CSV with an id column: check these items alone (e.g. today's new products); every labelled item still votes."),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Suspected label errors in a single-label file: k-NN votes (SimiFeat) and/or cleanlab, each explained.

    Cost: knn is one k-NN query per labelled item (none with --graph) and a small fit of the noise rates (seconds for 10k items); cleanlab trains --folds MLP heads (about 10 s each on 10k rows, 2 cores).

    Example: simlabel suspects --emb emb/ --labels catalog.csv --label-col article_type --out suspects.csv --html suspects.html
    then: simlabel review suspects.csv --catalog catalog.csv
    """
    from simlabel.labels.io import read_id_list
    from simlabel.training import find_suspects

    threshold = None if duplicate_threshold >= 1.0 else duplicate_threshold
    cfg = SuspectsConfig(method=method, k=k, mode=mode, weighting=weighting, duplicate_threshold=threshold, seed=seed,
                         index=index_kind)
    found = find_suspects(emb, labels, cfg, graph=graph, index=index_path, out=out, label_col=label_col, all_items=all_items, folds=folds,
                          device=device, html=html_out, catalog=catalog,
                          ids=read_id_list(ids, what="ids file") if ids else None)
    summary, shown = found.summary, found.suspects
    say(f"{summary['n_suspects']:,} of {summary.get('n_checked', summary['n']):,} labels suspected ({method}"
        + (f", estimated noise rate {summary['noise_rate_estimate']:.3f}" if "noise_rate_estimate" in summary else "")
        + f"; {summary['n_duplicate_groups']:,} near-duplicate groups, {summary['n_duplicate_conflicts']:,} members "
          f"disagreeing) -> {out}")
    t = Table(title="top suspects")
    for col in ("rank", "id", "label", "suggested", "score", "method", "nearest labelled neighbours"):
        t.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for _, r in shown.head(10).iterrows():
        counts = pd.Series(str(r["neighbor_labels"]).split("|")).value_counts()
        nbrs = ", ".join(f"{lab} x{n}" for lab, n in counts.items())
        t.add_row(str(r["rank"]), str(r["id"]), str(r["label"]), str(r["suggested"]), f"{r['score']:.3f}",
                  str(r["method"]), nbrs)
    out_console.print(t)
    written(html_out)


@command(app)
def select(
    emb: str = typer.Option(..., "--emb", help="Embedding folder of the catalog (every item may be chosen but the labelled and the excluded)."),
    budget: int = typer.Option(..., "--budget", "-n", help="How many items to choose for labelling."),
    out: Path = typer.Option(..., "--out", "-o", help="TO_LABEL.csv: id, rank, strategy, reason, the model's proposal and the nearest labelled neighbours (a review queue)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="The labels so far (CSV id,label, or a catalog with --label-col): never chosen again; a model is trained on them when --model is not given."),
    label_col: str = label_col_option(),
    model: Optional[Path] = typer.Option(None, "--model", help="A model folder made by `simlabel train` over EMB: its probabilities drive uncertainty and the proposals."),
    strategy: str = typer.Option(default(SelectConfig, "strategy"), "--strategy", help=f"{', '.join(STRATEGIES)}. auto: --cold until a model exists and the labels reach --cold-per-class per class, then badge (uncertainty x diversity, Ash et al. 2020)."),
    cold: str = typer.Option(default(SelectConfig, "cold"), "--cold", help="The cold start auto uses: typiclust (the most typical item of each uncovered cluster, Hacohen et al. 2022) or probcover (greedy max coverage of delta-balls, Yehuda et al. 2022)."),
    cold_per_class: float = typer.Option(default(SelectConfig, "cold_per_class"), "--cold-per-class", help="auto switches to badge at this many labels per class."),
    graph: Optional[str] = graph_option("the neighbours (typicality, coverage balls, nearest labelled)"),
    index_path: Optional[Path] = index_option(),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="CSV with an id column of items never chosen (a test set)."),
    text_emb: Optional[str] = typer.Option(None, "--text-emb", help="Title embeddings (e.g. EMB_DIR/text): choose on images and titles side by side (neighbours searched over both: no --graph of the images alone; then train with --inputs image+text)."),
    previous: Optional[Path] = typer.Option(None, "--previous", help="The previous round's TO_LABEL.csv: prints the share of the catalog whose prediction changed since (the stopping signal)."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="CSV with an id column: choose among these items alone (e.g. today's new products); the rest of the catalog still shapes the choice."),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """What to label next: typical and covering items first, then uncertain and diverse ones (a review queue).

    Writes OUT, OUT.summary.json (the strategy and why, ProbCover's radius, the stopping signal) and, with a model, OUT.predictions.parquet (the next round's --previous).
    Cost: k-means over the catalog (TypiClust) or one k-NN graph (ProbCover; none with --graph); with labels, one head trained on them (seconds for 10k).

    Example: simlabel select --emb emb/ --budget 34 --exclude test.csv --out round1.csv
    then, with the answers: simlabel select --emb emb/ --labels labelled.csv --budget 34 --previous round1.csv --out round2.csv
    """
    from simlabel.labels.io import read_id_list
    from simlabel.training import select as select_fn

    cfg = SelectConfig(strategy=strategy, cold=cold, cold_per_class=cold_per_class, seed=seed)
    ex = read_id_list(exclude, what="exclude file") if exclude else None
    made = select_fn(emb, budget, cfg, labels=labels, model=model, graph=graph, index=index_path, exclude=ex,
                     previous=previous, out=out, label_col=label_col, device=device, text_emb=text_emb,
                     ids=read_id_list(ids, what="ids file") if ids else None)
    s, q = made.summary, made.labels
    say(f"{len(q):,} items to label ({s['strategy']}: {s['why']}) -> {out}")
    if "coverage" in s:
        say(f"coverage: {s['coverage']:.1%} of the catalog within cosine {s['threshold']:.3f} of a chosen or labelled item")
    if "changed" in s:
        say(f"stopping signal: {s['changed']:.1%} of {s['compared']:,} items changed their predicted label since {previous}")
    t = Table(title="to label next")
    for col in ("rank", "id", "reason", "proposal", "nearest labelled"):
        t.add_column(col, justify="right" if col == "rank" else "left")
    for row in q.head(20).itertuples():
        near = ", ".join(f"{lab} {float(v):.2f}" for lab, v in zip(str(row.neighbor_labels).split("|")[:3],
                                                                  str(row.neighbor_similarities).split("|")[:3]) if lab)
        prop = "" if not row.proposal else f"{row.proposal} ({row.proposal_score:.2f})"
        t.add_row(str(row.rank), str(row.id), str(row.reason), prop, near)
    if len(q) > 20:
        t.caption = f"the first 20 of {len(q)}; all in {out}"
    out_console.print(t)
