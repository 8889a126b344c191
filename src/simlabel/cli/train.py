"""``simlabel train``, ``simlabel evaluate`` and ``simlabel predict``: heads on frozen embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simlabel.cli._common import (
    Table,
    command,
    default,
    device_option,
    normalize_option,
    out_console,
    partial_option,
    progress_option,
    say,
    wait_option,
)
from simlabel.head_config import DEFAULT_LR, HeadConfig
from simlabel.labels.pseudo import PSEUDO_MODES
from simlabel.labels.smoothing import SmoothingConfig

app = typer.Typer()


def _confidence_option():
    return typer.Option(0.95, "--confidence", help="With --min-precision: how sure the held-out rows must make it (alpha = 1 - confidence).")


def _each_class_option():
    return typer.Option(False, "--each-class", help="With --min-precision: vouch for each class on its own (more coverage; some class then misses more often) instead of every class at once (Bonferroni over the classes, the default).")


@command(app)
def train(
    emb: str = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Training labels: CSV with id,label, or a catalog (file or folder) with --label-col."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (config.json + weights.pt + training_ids.npy)."),
    extra: list[Path] = typer.Option([], "--extra", help="More label files (augmented, propagated); --labels wins on conflicts."),
    label_col: str = typer.Option("label", "--label-col", help="Column of --labels holding the labels (e.g. article_type)."),
    holdout: list[Path] = typer.Option([], "--holdout", help="Ids never to train on (a test set; repeatable). Holdouts that an augment summary names are checked too."),
    holdout_overlap: str = typer.Option("drop", "--holdout-overlap", help="Training ids found in a holdout: drop (with a warning) or error."),
    head: str = typer.Option(default(HeadConfig, "head"), "--head", help="linear (one dense layer) or mlp (one hidden layer)."),
    hidden: int = typer.Option(default(HeadConfig, "hidden"), "--hidden", help="MLP hidden width."),
    text_emb: Optional[str] = typer.Option(None, "--text-emb", help="Title embeddings (e.g. EMB_DIR/text) for --inputs text or image+text."),
    inputs: Optional[str] = typer.Option(None, "--inputs", help="image (default), text, or image+text (concatenated, or fused with --fusion attention)."),
    fusion: str = typer.Option("none", "--fusion", help="none, or attention: paper 002's attention fusion of image and title (implies --inputs image+text)."),
    smoothing: str = typer.Option(default(SmoothingConfig, "kind"), "--smoothing", help="Soft targets (paper 002): none, uniform, uniform-topk, semantic, semantic-curriculum, taxonomy."),
    alpha: float = typer.Option(default(SmoothingConfig, "alpha"), "--alpha", help="Smoothing mass moved off the true class."),
    neighbors: int = typer.Option(default(SmoothingConfig, "neighbors"), "--neighbors", help="K nearest labels for the top-K smoothing kinds."),
    label_model: str = typer.Option(default(SmoothingConfig, "label_model"), "--label-model", help="Text model embedding the class names (minilm, st:..., clip:...)."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="CSV label,description: richer text per class for its embedding."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="CSV label,path ('Apparel > Topwear > Tshirts') for --smoothing taxonomy."),
    beta: float = typer.Option(default(SmoothingConfig, "beta"), "--beta", help="Taxonomy targets: softmax(-beta * tree distance)."),
    curriculum_epochs: int = typer.Option(default(SmoothingConfig, "curriculum_epochs"), "--curriculum-epochs", help="semantic-curriculum: epochs over which alpha anneals to 0."),
    schedule: str = typer.Option(default(SmoothingConfig, "schedule"), "--schedule", help="semantic-curriculum: linear, cosine, step or exp."),
    loss: str = typer.Option(default(HeadConfig, "loss"), "--loss", help="ce (cross-entropy) or focal."),
    focal_gamma: float = typer.Option(default(HeadConfig, "focal_gamma"), "--focal-gamma", help="Focal loss gamma."),
    focal_alpha: Optional[float] = typer.Option(None, "--focal-alpha", help="Focal loss alpha (a weight on every class; default none)."),
    kl_weight: float = typer.Option(default(HeadConfig, "kl_weight"), "--kl-weight", help="Weight of the KL term to the soft targets."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (AdamW); default per head: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items()) + "."),
    batch_size: int = typer.Option(default(HeadConfig, "batch_size"), "--batch-size", help="Rows per optimiser step."),
    epochs: int = typer.Option(default(HeadConfig, "max_epochs"), "--epochs", help="At most this many epochs."),
    patience: int = typer.Option(default(HeadConfig, "patience"), "--patience", help="Early stopping: epochs without a better validation score."),
    monitor: str = typer.Option(default(HeadConfig, "monitor"), "--monitor", help="Early stopping watches the validation loss or accuracy."),
    val_frac: float = typer.Option(default(HeadConfig, "val_frac"), "--val-frac", help="Share of the training rows used for early stopping."),
    balanced: bool = typer.Option(False, "--balanced", help="Weight classes inversely to their frequency."),
    weight_col: Optional[str] = typer.Option(None, "--weight-col", help="Per-row sample weights column of the label files."),
    seed: int = typer.Option(default(HeadConfig, "seed"), "--seed"),
    precision: str = typer.Option(default(HeadConfig, "precision"), "--precision", help="auto (bfloat16 where the CPU or GPU computes it natively: AVX512-BF16, AMX, CUDA), fp32 or bf16."),
    pseudo: str = typer.Option("none", "--pseudo", help=f"Pseudo-labels from the unlabelled catalog, weighted by their certainty, class-balanced: {', '.join(('auto', *PSEUDO_MODES))}. auto chooses the mode and weight by out-of-fold validation on the human labels only (never a holdout) and records it in config.json."),
    graph: Optional[Path] = typer.Option(None, "--graph", help="A k-NN graph of EMB (`simlabel graph`) the pseudo-label methods read their neighbours from."),
    attributes: Optional[str] = typer.Option(None, "--attributes", help="A multi-label model instead (paper 004's head: one sigmoid per label, focal loss): one binary label attr=value per value of these comma-separated catalog columns (e.g. gender,usage,season). simlabel predict gives every label's probability."),
    multi_label: bool = typer.Option(False, "--multi-label", help="A multi-label model from --label-col holding '|'-separated labels (gender=Men|usage=Casual)."),
    calibration: str = typer.Option("temperature", "--calibration", help="Calibrate the probabilities on the validation split: temperature (one T, Guo et al. 2017; predictions unchanged), vector (a scale and bias per class) or none. The held-out rows also give predict --min-precision its thresholds."),
    device: str = device_option(),
    progress: bool = progress_option(),
    wait: bool = wait_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Train a classifier head on frozen embeddings, with early stopping.

    Cost: the epochs over the labelled rows' embeddings, held in memory: about 1-2 s for a linear head on 8k rows on 2 cores (30-60 epochs until early stopping), 5 s for --head mlp, 10 s for --fusion attention; plus 2-3 s of start-up (torch). --pseudo auto trains one head per candidate and fold (3 folds x 7 candidates).

    Examples:
      simlabel train --emb emb/ --labels seeds.csv --extra aug.csv --out model/
      simlabel train --emb emb/ --labels seeds.csv --pseudo auto --graph graph/ --holdout test.csv --out model/
      simlabel train --emb emb/ --text-emb emb/text --labels train.csv --fusion attention --smoothing semantic --loss focal --out model/
      simlabel train --emb emb/ --labels catalog.csv --attributes gender,usage,season --out attributes-model/
    """
    from simlabel.training import train as train_fn

    if attributes or multi_label:
        from simlabel.head_config import MultiLabelHeadConfig
        from simlabel.training import train_multilabel

        ml = train_multilabel(emb, labels, attributes=[a.strip() for a in attributes.split(",") if a.strip()] if attributes else None,
                              labels_col=label_col if label_col != "label" else "labels",
                              config=MultiLabelHeadConfig(seed=seed, device=device), out=out)
        say(f"multi-label head over {len(ml.label_names())} labels ({', '.join(ml.label_names()[:6])}"
            f"{' ...' if len(ml.label_names()) > 6 else ''}), {len(ml.history_)} epochs -> {out}")
        return
    cfg = HeadConfig(head=head, hidden=hidden, lr=lr, batch_size=batch_size, max_epochs=epochs, patience=patience, val_frac=val_frac,
                     class_weight="balanced" if balanced else None, loss=loss, focal_gamma=focal_gamma,
                     focal_alpha=focal_alpha, kl_weight=kl_weight, monitor=monitor, seed=seed, device=device,
                     precision=precision)
    smooth = SmoothingConfig(kind=smoothing, alpha=alpha, neighbors=neighbors, label_model=label_model,
                             descriptions=str(descriptions) if descriptions else None,
                             taxonomy=str(taxonomy) if taxonomy else None, beta=beta,
                             curriculum_epochs=curriculum_epochs, schedule=schedule)
    clf = train_fn(emb, labels, extra=extra, out=out, config=cfg, weight_col=weight_col, text_emb=text_emb,
                   inputs=inputs, fusion=fusion, smoothing=smooth, label_col=label_col, holdout=holdout,
                   on_holdout=holdout_overlap, pseudo=pseudo, graph=graph, calibration=calibration)
    if pseudo != "none" and out is not None:
        import json

        record = json.loads((Path(out) / "config.json").read_text()).get("pseudo") or {}
        say(f"pseudo-labels: {record.get('mode')} (x{record.get('scale', 0):g}, {record.get('n', 0):,} items): {record.get('why')}")
    cal = clf.calibration_ or {}
    if cal.get("method", "none") != "none":
        what = f"T = {cal['temperature']:.3f}" if "temperature" in cal else "a scale and bias per class"
        say(f"calibrated by {cal['method']} scaling on {cal['n']:,} validation rows ({what}): NLL {cal['nll_before']:.4f} -> "
            f"{cal['nll_after']:.4f}")
    elif cal.get("why"):
        say(f"not calibrated: {cal['why']}")
    stopped = "early stop" if len(clf.history_) < cfg.max_epochs else "no early stop: raise --epochs or --lr"
    say(f"{clf.config_.head} head over {len(clf.classes_)} classes ({smoothing} smoothing, {loss} loss) on "
        f"{len(clf.training_ids_):,} rows: best epoch {clf.best_epoch_} of {len(clf.history_)} ({stopped}) -> {out}")


@command(app)
def evaluate(
    model: Path = typer.Option(..., "--model", help="Model folder written by `simlabel train`."),
    emb: str = typer.Option(..., "--emb", help="Embedding folder."),
    labels: Path = typer.Option(..., "--labels", help="Test labels: CSV with id,label, or a catalog with --label-col."),
    label_col: str = typer.Option("label", "--label-col", help="Column of --labels holding the labels."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The + class of a binary task (adds +P, +R, -P, -R)."),
    text_emb: Optional[str] = typer.Option(None, "--text-emb", help="Title embeddings, for a model trained on text (default: the ones it was trained with)."),
    semantic: Optional[int] = typer.Option(None, "--semantic", help="Add paper 002's metric with this many nearest labels (e.g. 20)."),
    label_model: str = typer.Option("minilm", "--label-model", help="Text model embedding the class names for --semantic."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="CSV label,path: adds the mistake severity (mean tree distance of wrong predictions)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a page: the per-class table, the reliability diagram before and after calibration, the coverage/precision curve, abstention."),
    min_precision: Optional[float] = typer.Option(None, "--min-precision", help="Also score abstaining below this precision per class (thresholds from the model's held-out rows): coverage, precision and the recall it costs."),
    confidence: float = _confidence_option(),
    each_class: bool = _each_class_option(),
    device: str = device_option(),
    allow_partial: bool = partial_option(),
    normalize_labels: bool = normalize_option(),
) -> None:
    """Per-class P/R/F1, accuracy, confusion matrix and HM of a model on labelled ids, and how calibrated it is.

    Paper 000's Table 2 metrics; top-1/top-5, the semantic neighbourhood metric and mistake severity (paper 002) on request. The expected calibration error before and after the model's calibration; with --min-precision, what abstaining below it costs per class; --html draws the reliability diagram and the coverage/precision curve. Warns when evaluation ids were trained on.

    Cost: one forward pass over the test rows (well under a second); --semantic embeds the class names.

    Example: simlabel evaluate --model model/ --emb emb/ --labels holdout.csv --json report.json
    """
    from simlabel.training import evaluate as evaluate_fn

    rep = evaluate_fn(model, emb, labels, positive=positive, json_out=json_out, text_emb=text_emb, semantic=semantic,
                      label_model=label_model, taxonomy=taxonomy, device=device, label_col=label_col,
                      min_precision=min_precision, html_out=html_out, precision_confidence=confidence,
                      precision_scope="each" if each_class else "all")
    out_console.print(metrics_table(rep))
    if "top5" in rep:
        say(f"top-1 {rep['top1']:.3f}, top-5 {rep['top5']:.3f}")
    if "semantic" in rep:
        say(f"top-5 inside the true label's {semantic} nearest + itself: {rep['semantic']['mean_in_top']:.2f} of 5, "
            f"all 5 inside: {rep['semantic']['share_all_in']:.3f}")
    if "severity" in rep:
        say(f"mistake severity (mean tree distance of wrong top-1): {rep['severity']['mistake_severity']:.3f}")
    cal = rep["calibration"]
    say(f"expected calibration error (15 bins): {cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after "
        f"{cal['method']}" + (f" (T = {cal['temperature']:.3f})" if cal.get("temperature") else "")
        + (f": {cal['why']}" if cal.get("why") else ""))
    ab = rep.get("abstention")
    if ab:
        prec = "n/a" if ab["precision"] is None else f"{ab['precision']:.3f}"
        say(f"abstaining below precision {ab['min_precision']:g} per class: {ab['coverage']:.1%} of the items kept, "
            f"precision {prec}")
        worst = sorted(((c, m) for c, m in ab["per_class"].items() if m["recall"] is not None and m["recall_without"]),
                       key=lambda cm: cm[1]["recall"] - cm[1]["recall_without"])[:5]
        for c, m in worst:
            cut = "always abstains" if m["threshold"] is None else f"threshold {m['threshold']:.3f}"
            say(f"  {c}: recall {m['recall_without']:.3f} -> {m['recall']:.3f} ({cut})")
    for path in (json_out, html_out):
        if path:
            say(f"report: {path}")


@command(app)
def predict(
    model: Path = typer.Option(..., "--model", help="Model folder written by `simlabel train` (single-label, or multi-label with --attributes) or `flip --model-out`."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder (or an object storage URL, s3://...): Parquet parts (id, label, probability, margin, top labels, abstain, model; a multi-label model: labels and one probability per value), _summary.json and _manifest.json; pandas.read_parquet reads it; also a review queue."),
    emb: Optional[str] = typer.Option(None, "--emb", help="Embedding folder of the catalog (read shard by shard), or its object storage URL."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Instead of --emb: a catalog, embedded first with the model's encoder and engine (resumable) into --embeddings-out."),
    text_emb: Optional[str] = typer.Option(None, "--text-emb", help="Title embeddings, for a model of titles or of images and titles (default: the ones it records)."),
    top_k: int = typer.Option(3, "--top-k", help="Labels and probabilities kept per item."),
    min_precision: Optional[float] = typer.Option(None, "--min-precision", help="Abstain below each class's threshold for this precision (chosen on the model's held-out rows; by default every class reaches it at once with 95% confidence)."),
    confidence: float = _confidence_option(),
    each_class: bool = _each_class_option(),
    ids: Optional[Path] = typer.Option(None, "--ids", help="CSV with an id column: predict these items only (e.g. today's new products)."),
    explain: int = typer.Option(0, "--explain", help="Add each item's N nearest labelled neighbours (ids, labels, similarity)."),
    explain_labels: Optional[Path] = typer.Option(None, "--explain-labels", help="The labelled items --explain searches (default: the label file the model records)."),
    graph: Optional[str] = typer.Option(None, "--graph", help="A k-NN graph of --emb that --explain reads (a folder or its object storage URL)."),
    text_col: str = typer.Option("title", "--text-col", help="With --catalog and a model of titles: the title column."),
    embeddings_out: Optional[Path] = typer.Option(None, "--embeddings-out", help="With --catalog: where its embeddings go (default: OUT's name + .embeddings)."),
    engine: str = typer.Option("local", "--engine", help="local, or ray: each store shard is a Ray task that predicts it and writes its part (same rows; --catalog embeds on Ray too); pip install 'simlabel[ray]'."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster for --engine ray: auto or HOST:PORT; default a local Ray."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Classify every item of a catalog with a trained model: the label, how sure, and whether to abstain.

    Streams the store shard by shard into one Parquet part each (memory bounded by a shard); a killed run started again keeps the parts already written. The output folder is a review queue: `simlabel review OUT` shows the least sure first.

    Cost: one forward pass of the head (1M x 1280 rows in about 21 s on 2 cores for a linear head over 75 classes, 0.5 GiB), plus embedding with --catalog.

    Example: simlabel predict --model model/ --emb emb/ --out predictions/ --min-precision 0.95
    """
    from simlabel.labels.io import read_id_list
    from simlabel.prediction import predict as predict_fn

    wanted = read_id_list(ids, what="ids file") if ids else None
    made = predict_fn(model, emb, catalog=catalog, text_emb=text_emb, out=out, top_k=top_k, min_precision=min_precision,
                      ids=wanted, explain=explain, explain_labels=explain_labels, graph=graph, text_col=text_col,
                      embeddings_out=embeddings_out, device=device, progress=progress, engine=engine, address=address,
                      precision_confidence=confidence, precision_scope="each" if each_class else "all")
    s = made.summary
    rate = s["rows"] / s["seconds"] if s["seconds"] else 0.0
    say(f"{s['rows']:,} items predicted in {s['seconds']:.1f} s ({rate:,.0f} items/s) by model {s['fingerprint']} -> {out}")
    if min_precision is not None:
        say(f"abstained below precision {min_precision:g}: {s['abstained']:,} items ({s['abstained'] / max(s['rows'], 1):.1%})")
        never = [c for c, t in (s["thresholds"] or {}).items() if t["threshold"] is None]
        if never:
            say(f"always abstaining (the held-out rows cannot vouch for them): {', '.join(never[:10])}")
    t = Table(title="predicted labels")
    t.add_column("label")
    t.add_column("items", justify="right")
    for lab, n in sorted(s["labels"].items(), key=lambda kv: -kv[1])[:20]:
        t.add_row(lab, f"{n:,}")
    out_console.print(t)
    if s.get("kind") != "multi-label":
        say(f"review the least sure: simlabel review {out} --catalog CATALOG")


@command(app)
def export(
    model: Path = typer.Option(..., "--model", help="Model folder written by `simlabel train` on image embeddings."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file: pixels (B, 3, S, S) in, probabilities (B, C) out."),
    check: Optional[Path] = typer.Option(None, "--check", help="A catalog: run the exported graph on its first 100 images with ONNX Runtime (and OpenVINO when installed) and compare with the model's own probabilities."),
) -> None:
    """Ship the classifier: one ONNX graph from an image tensor to class probabilities.

    The model's encoder (its ONNX export), L2 normalisation, the head, the calibration and the softmax, joined. Class names and the exact pre-processing are in the graph's metadata; the README's "Ship the classifier" section runs it with onnxruntime and Pillow alone. Models of titles are refused (their text encoder has no ONNX export): nothing is written.

    Cost: exporting the encoder once (cached), a few seconds.

    Example: simlabel export --model model/ --out classifier.onnx --check catalog.csv
    """
    from simlabel.export import check_export, export_classifier

    made = export_classifier(model, out)
    meta = made.metadata
    say(f"{len(meta['classes'])} classes, encoder {meta['encoder']['name']}, calibration "
        f"{(meta['calibration'] or {}).get('method', 'none')}, model {meta['fingerprint']} -> {out}")
    pre = meta["preprocess"]
    say(f"input pixels: (batch, 3, {pre['image_size']}, {pre['image_size']}) float32 RGB, {pre['resize']}, "
        f"(x / 255 - {pre['mean']}) / {pre['std']}")
    if check is not None:
        res = check_export(out, model, check)
        for runtime, diff in res["max_abs_diff"].items():
            say(f"{runtime}: {res['images']} images, largest difference from the model's probabilities {diff:.2e}, "
                f"{res['images_per_s'][runtime]:.1f} images/s")


def metrics_table(rep: dict, title: str = "evaluation") -> Table:
    """The per-class table of an evaluation report, with what a reader must know beneath it."""
    t = Table(title=f"{title}: accuracy {rep['accuracy']:.3f}, macro F1 {rep['macro_f1']:.3f}, "
                    f"HM {rep['hm']:.3f} over {rep.get('hm_classes', len(rep['per_class']))} classes (n={rep['n']:,})")
    t.add_column("class", no_wrap=True)
    for c in ("precision", "recall", "f1", "support"):
        t.add_column(c, justify="right")
    t.add_column("")
    for c, m in rep["per_class"].items():
        if not m.get("in_test", True):
            t.add_row(c, "", "", "", "0", "not in the test set", style="dim")
            continue
        flag = "never predicted" if m.get("never_predicted") else ""
        t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", f"{m['support']:,}", flag)
    for name, n in rep.get("unseen", {}).get("classes", {}).items():
        t.add_row(name, "", "0.000", "", f"{n:,}", "a class the model never saw: all errors", style="yellow")
    captions = list(rep.get("notes", []))
    if "binary" in rep:
        b = rep["binary"]
        captions.insert(0, f"+P {b['+P']:.3f}  +R {b['+R']:.3f}  -P {b['-P']:.3f}  -R {b['-R']:.3f}  (+ = {b['positive']})")
    t.caption = "\n".join(captions) or None
    return t
