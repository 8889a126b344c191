"""The label producers: ``augment``, ``propagate``, ``search``, ``categories``, ``side-info``, ``flip``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from simlabel.cli._common import (
    columns,
    comma_list,
    command,
    default,
    device_option,
    log,
    normalize_option,
    out_console,
    param_default,
    partial_option,
    say,
    wait_option,
    written,
)
from simlabel.labels.augment import augment as augment_fn
from simlabel.labels.flipping import SelfMLConfig
from simlabel.labels.propagate import propagate as propagate_fn
from simlabel.labels.search import SearchConfig
from simlabel.labels.side_info import SideInfoConfig
from simlabel.semantics.categories import category_semantics

app = typer.Typer()


@command(app)
def augment(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder (the universe: every id in it)."),
    labels: Path = typer.Option(..., "--labels", help="Seed labels, CSV with id,label."),
    out: Path = typer.Option(..., "--out", "-o", help="Augmented labels CSV: id,label,step,source,via."),
    k: int = typer.Option(param_default(augment_fn, "k"), "--k", "-k", help="Neighbours per point (n_k)."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Labels to hold out (never labeled), CSV id,label."),
    holdout_frac: Optional[float] = typer.Option(None, "--holdout-frac", help="Hold out this share of the seeds instead (stratified)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --holdout-frac."),
    stop: str = typer.Option(param_default(augment_fn, "stop"), "--stop", help="shrink: stop when a frontier shrinks (default); grow: the rule as printed in paper 000."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="At most this many steps."),
    index_path: Optional[Path] = typer.Option(None, "--index", help="Reuse an index built by `simlabel index` over EMB."),
    index_kind: str = typer.Option(param_default(augment_fn, "index_kind"), "--index-kind", help="auto (flat up to 200k points, else ivf), flat, hnsw, ivf."),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Grow seed labels through nearest neighbours (paper 000, section 3).

    Writes OUT, OUT.summary.json (sizes per class and step) and, with --holdout-frac, OUT.holdout.csv.
    Cost: one k-NN query per point labelled at each step (the frontier), not the whole catalog.

    Example: simlabel augment --emb emb/ --labels seeds.csv --k 10 --holdout-frac 0.3 --out aug.csv
    """
    table, result, _ = augment_fn(
        emb, labels, k=k, holdout=holdout, holdout_frac=holdout_frac, seed=seed, stop=stop,
        max_steps=max_steps, index=index_path, index_kind=index_kind, out=out,
    )
    sizes = result.size_table()
    t = Table(title=f"augmentation sizes (k={k}, stop={stop}: {result.stop_reason} after {result.n_steps} steps)")
    t.add_column("")
    for c in sizes.columns:
        t.add_column(str(c), justify="right")
    for name, row in sizes.iterrows():
        t.add_row(str(name), *["" if v != v else f"{int(v):,}" for v in row])
    out_console.print(t)
    say(f"{len(table):,} labels ({int((table['source'] == 'augmented').sum()):,} augmented) -> {out}")


@command(app)
def propagate(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Labeled ids, CSV with id,label (clamped)."),
    out: Path = typer.Option(..., "--out", "-o", help="Propagated labels CSV: id,label,confidence."),
    k: int = typer.Option(param_default(propagate_fn, "k"), "--k", "-k", help="Neighbours per node in the graph."),
    steps: int = typer.Option(param_default(propagate_fn, "steps"), "--steps", help="Propagation steps (paper 000: as many as the augmentation took)."),
    unlabeled_sample: Optional[int] = typer.Option(None, "--unlabeled-sample", help="Unlabeled nodes to sample (default: all)."),
    symmetric: bool = typer.Option(False, "--symmetric", help="Use the symmetrised k-NN graph instead of the directed one."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="CSV with an id column of points to keep out of the graph (e.g. a holdout)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the unlabeled sample."),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Label propagation on the k-NN graph (Zhu & Ghahramani 2002), the baseline of paper 000.

    Cost: building the k-NN graph of the labelled + sampled nodes, then one sparse product per step.

    Example: simlabel propagate --emb emb/ --labels seeds.csv --k 10 --steps 4 --unlabeled-sample 5000 --out prop.csv
    """
    from simlabel.labels.io import read_id_list

    ex = read_id_list(exclude, what="exclude file") if exclude else None
    table, res = propagate_fn(emb, labels, k=k, steps=steps, unlabeled_sample=unlabeled_sample, symmetric=symmetric,
                              exclude=ex, seed=seed, out=out)
    counts = ", ".join(f"{c}: {n:,}" for c, n in table["label"].value_counts().sort_index().items())
    say(f"{len(table):,} propagated labels after {res.steps} steps ({counts}) -> {out}")


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
    """Noisy web-style labels from a real search (paper 003): each category name queries the
    titles; its top R results are labelled with the query, with their rank.

    Example: simlabel search ../shared/datasets/fashion-products --label-col article_type --top-r 100 --out search.csv
    """
    from simlabel.catalog import load_catalog
    from simlabel.labels.search import build_search_labels

    cat = load_catalog(catalog, columns=columns(label=label_col if label_col != "label" else None), require=("id",))
    cfg = SearchConfig(method=method, top_r=top_r, duplicates=duplicates, device=device)
    labels = build_search_labels(cat, categories=comma_list(categories) or None, text_col=text_col, config=cfg, out=out,
                                 exclude_split=exclude_split)
    counts = labels["label"].value_counts()
    say(f"{len(labels):,} labelled items from {counts.size} queries (median {int(counts.median())} per query) -> {out}")


@command(app)
def categories(
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV: its distinct labels are the categories."),
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
    """Category semantic relationships (paper 003): WordNet synsets of the category names,
    similarity updated with a text encoder, and each category's K nearest categories.

    Example: simlabel categories --labels search.csv --out semantics.json
    """
    from simlabel.errors import InputError
    from simlabel.labels.io import read_labels
    from simlabel.semantics.categories import read_overrides

    if (labels is None) == (names is None):
        raise InputError("give the categories with exactly one of --labels FILE or --names A,B,C")
    cats = sorted(read_labels(labels)["label"].unique()) if labels else comma_list(names)
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
    emb: Path = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    labels: Path = typer.Option(..., "--labels", help="Noisy labels: CSV id,label and optionally rank (from simlabel search or your own search logs)."),
    out: Path = typer.Option(..., "--out", "-o", help="The labels with their weights (column 'weight' for simlabel train --weight-col weight)."),
    stage: int = typer.Option(1, "--stage", help="1: rank + visual neighbours; 2: also text matching of out-of-fold predictions."),
    semantics: Optional[Path] = typer.Option(None, "--semantics", help="JSON from simlabel categories (default: built from the label names)."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Stage 2: the catalog whose --text-col gives each item's keywords."),
    text_col: str = typer.Option("title", "--text-col", help="Stage 2: text column for keywords (title, description or tags)."),
    rank_weight: str = RANK_WEIGHT,
    rank_floor: float = RANK_FLOOR,
    knn: int = KNN,
    index_kind: str = typer.Option(default(SideInfoConfig, "index"), "--index", help="How neighbours are found: flat (exact), ivf, hnsw, or auto (flat up to 100k images, ivf above)."),
    combine: str = COMBINE,
    keyword_weight: float = KEYWORD_WEIGHT,
    folds: int = FOLDS,
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Per-image weights for noisy labels from side information (paper 003).

    Cost: stage 1 is one k-NN query per image; stage 2 trains --folds heads.

    Example: simlabel side-info --emb emb/ --labels search.csv --stage 2 --catalog catalog.csv --out weighted.csv
    then: simlabel train --emb emb/ --labels weighted.csv --weight-col weight --out model/
    """
    from simlabel.catalog import load_catalog
    from simlabel.heads import HeadConfig
    from simlabel.labels.side_info import side_info_weights
    from simlabel.training import oof_predictor

    cfg = SideInfoConfig(rank_weight=rank_weight, rank_floor=rank_floor, knn=knn, index=index_kind, combine=combine,
                         keyword_weight=keyword_weight, stage2_folds=folds)
    texts = load_catalog(catalog, require=("id",)).texts(text_col) if stage == 2 and catalog is not None else None
    predictor = None
    if stage == 2:
        head = HeadConfig(head="mlp", patience=8, max_epochs=100, device=device)
        predictor = oof_predictor(head, folds=cfg.stage2_folds, seed=seed, top=cfg.top_predictions)
    table = side_info_weights(emb, labels, semantics=semantics, config=cfg, stage=stage, texts=texts, predictor=predictor,
                              out=out, device=device, log=log)
    w = table["weight"]
    q = w.quantile([0.1, 0.5, 0.9])
    say(f"{len(table):,} weights (stage {stage}): mean {w.mean():.3f}, p10 {q[0.1]:.3f}, median {q[0.5]:.3f}, p90 {q[0.9]:.3f} -> {out}")


command(app, "side-info")(side_info)
# the command's first name, kept for scripts that use it
command(app, "weights", hidden=True)(side_info)


@command(app)
def flip(
    emb: Path = typer.Option(..., "--emb", help="Embedding folder of the catalog's images."),
    catalog: Path = typer.Option(..., "--catalog", help="Catalog with the (noisy) multi-labels."),
    attributes: Optional[str] = typer.Option(None, "--attributes", help="Comma-separated attribute columns: one binary label per value (e.g. gender,usage,season)."),
    labels_col: str = typer.Option("labels", "--labels-col", help="Or a '|'-separated multi-label column."),
    clean: Optional[Path] = typer.Option(None, "--clean", help="CSV id,labels: verified labels of a few items (trains the flipping model)."),
    export_basis: Optional[Path] = typer.Option(None, "--export-basis", help="No clean set: write the images nearest the used basis vectors, to be labelled."),
    basis_labels: Optional[Path] = typer.Option(None, "--basis-labels", help="The labelled --export-basis file: flips by the direct rule Y_B c_i."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="FLIPS.csv: id,label,attribute,old,new,confidence,basis,weights,basis_labels."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of image grids: each flip beside the basis images that explain it."),
    n_basis: int = typer.Option(default(SelfMLConfig, "n_basis"), "--n-basis", help="Basis size n_B."),
    joint_steps: int = typer.Option(default(SelfMLConfig, "joint_steps"), "--joint-steps", help="Joint training steps."),
    threshold: float = typer.Option(default(SelfMLConfig, "threshold"), "--threshold", help="Label threshold of the flipping model / direct rule."),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
) -> None:
    """Explainable noisy-label flipping for multi-label attributes (SELF-ML, paper 004).

    Cost: pre-training and joint training of three small modules on the embeddings (minutes).

    Example: simlabel flip --emb emb/ --catalog catalog.csv --attributes gender,usage,season --clean clean.csv --out flips.csv --html explain.html
    """
    from simlabel.catalog import load_catalog
    from simlabel.encoders.base import resolve_device
    from simlabel.labels.flipping import flip as flip_fn
    from simlabel.report import write_flip_html
    from simlabel.training import multilabel_pretrain

    cfg = SelfMLConfig(n_basis=n_basis, joint_steps=joint_steps, threshold=threshold, seed=seed, device=resolve_device(device))
    cat = load_catalog(catalog, require=("id",))
    table = flip_fn(emb, cat, attributes=comma_list(attributes) or None, labels_col=labels_col, clean=clean,
                    basis_labels=basis_labels, export_basis=export_basis, out=out, html=html_out,
                    render=lambda t, p: write_flip_html(t, cat, p), config=cfg, pretrain=multilabel_pretrain(cfg))
    if export_basis is not None:
        say(f"{len(table):,} basis images to label -> {export_basis} (fill the labels column, then --basis-labels)")
        return
    added, removed = int((table["new"] == 1).sum()), int((table["new"] == 0).sum())
    say(f"{len(table):,} labels flipped ({added:,} added, {removed:,} removed)" + (f" -> {out}" if out else ""))
    if html_out:
        say(f"explanations: {html_out}")
