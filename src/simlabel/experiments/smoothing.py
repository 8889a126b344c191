"""Paper 002's experiment: semantic label smoothing and image + title fusion.

On a catalog with a label column (e.g. fashion-products' 75 ``article_type``), titles and a label tree,
every approach is trained with identical mechanics (same split, head, optimiser, epochs, early
stopping on validation accuracy) and differs only in its targets:

1. ``none``: one-hot, the hard (focal) loss alone;
2. ``uniform``: alpha spread over all other classes, + KL;
3. ``uniform-topk``: alpha spread over the K nearest labels, + KL;
4. ``semantic``: alpha spread over the K nearest labels by similarity, + KL;
5. ``semantic-curriculum``: 4 with alpha annealed to 0;
6. ``taxonomy``: softmax(-beta * tree distance), + KL;

on image embeddings alone and on image + title embeddings fused by attention. Metrics on the
held-out test split: top-1, top-5, the mean number of top-5 predictions inside the true label's
neighbourhood (its K nearest labels plus itself) and the share with all 5 inside, and the mean
taxonomy distance of wrong top-1 predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.experiments._common import fixed_split, mean_sd, open_experiment
from simlabel.files import atomic_write_json
from simlabel.heads import HeadConfig
from simlabel.labels.smoothing import (
    CURRICULUM_SCHEDULES,
    SMOOTHING_KINDS,
    SmoothingConfig,
)
from simlabel.progress import task
from simlabel.semantics.names import embed_label_names, label_similarity, nearest_labels
from simlabel.semantics.taxonomy import taxonomy_from_columns, taxonomy_matrix
from simlabel.training import INPUTS as HEAD_INPUTS
from simlabel.training import evaluate, load_features, train

INPUTS = ("image", "image+text")


@dataclass
class SmoothingExperimentConfig:
    label_col: str = "article_type"
    text_col: str = "title"
    #: catalog columns root -> leaf for the taxonomy variant and mistake severity (empty: skip both)
    taxonomy_cols: Sequence[str] = ("master_category", "sub_category", "article_type")
    approaches: Sequence[str] = SMOOTHING_KINDS
    inputs: Sequence[str] = INPUTS
    alpha: float = 0.1
    neighbors: int = 20
    beta: float = 1.0
    curriculum_epochs: int = 30
    schedule: str = "linear"
    loss: str = "focal"
    focal_gamma: float = 2.0
    kl_weight: float = 1.0
    repeats: Sequence[int] = (0, 1, 2)
    test_frac: float = 0.2
    split_seed: int = 0
    image_model: str = "efficientnet-lite0"
    text_model: str = "minilm"
    label_model: str = "minilm"
    head: HeadConfig = field(default_factory=lambda: HeadConfig(head="mlp", monitor="accuracy", patience=8, max_epochs=100))
    device: str = "auto"
    limit: int | None = None

    def __post_init__(self) -> None:
        for a in self.approaches:
            one_of(a, SMOOTHING_KINDS, "approach")
        for i in self.inputs:
            one_of(i, HEAD_INPUTS, "inputs")
        in_range(self.alpha, "alpha", 0, 1)
        positive_int(self.neighbors, "neighbors")
        in_range(self.test_frac, "test_frac", 0, 1, lo_open=True, hi_open=True)
        one_of(self.loss, ("ce", "focal"), "loss")
        one_of(self.schedule, CURRICULUM_SCHEDULES, "schedule")
        positive_int(self.limit, "limit", allow_none=True)


def summarize(runs: list[dict]) -> pd.DataFrame:
    """Mean and sd over repetitions per (inputs, approach)."""
    return mean_sd(pd.DataFrame(runs), ["inputs", "approach"], ["top1", "top5", "in_top5", "all5_in", "severity"])


def run_smoothing_experiment(
    data: str | os.PathLike | None = None,
    config: SmoothingExperimentConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    json_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    cfg = config or SmoothingExperimentConfig()
    needs_text = any(i != "image" for i in cfg.inputs)
    exp = open_experiment(data, model=cfg.image_model, label_col=cfg.label_col, limit=cfg.limit, out=out,
                          text_col=cfg.text_col if needs_text else None, text_model=cfg.text_model,
                          device=cfg.device, progress=progress)
    root, catalog, image, text = exp.root, exp.catalog, exp.embeddings, exp.text

    table = catalog.table[["id", "label"]][catalog.table["label"].astype(str).str.len() > 0].reset_index(drop=True)
    test = fixed_split(table["label"], cfg.test_frac, cfg.split_seed)
    train_df, test_df = table[~test].reset_index(drop=True), table[test].reset_index(drop=True)
    classes = sorted(train_df["label"].unique())
    test_df = test_df[test_df["label"].isin(classes)].reset_index(drop=True)

    similarity = label_similarity(embed_label_names(classes, cfg.label_model, device=cfg.device))
    k = min(cfg.neighbors, len(classes) - 1)
    # the true label counts as its own neighbour (simlabel's convention for the metric)
    neighborhood = nearest_labels(similarity, k + 1, include_self=True)
    taxonomy = None
    distance = None
    if cfg.taxonomy_cols and all(c in catalog.table.columns for c in cfg.taxonomy_cols):
        taxonomy = taxonomy_from_columns(catalog.table, cfg.taxonomy_cols)
        distance = taxonomy_matrix(classes, taxonomy)
    approaches = [a for a in cfg.approaches if a != "taxonomy" or taxonomy is not None]

    runs = []
    n_models = len(cfg.inputs) * len(approaches) * len(cfg.repeats)
    with task("experiment smoothing", n_models, unit="models", enabled=progress) as bar:
        for inputs in cfg.inputs:
            head = replace(cfg.head, head="fusion" if inputs == "image+text" else cfg.head.head, loss=cfg.loss,
                           focal_gamma=cfg.focal_gamma, kl_weight=cfg.kl_weight, device=cfg.device)
            # the features of these inputs, joined once for all their models
            features, dims = load_features(image, text, inputs=inputs)
            for approach in approaches:
                smoothing = SmoothingConfig(kind=approach, alpha=cfg.alpha, neighbors=k, beta=cfg.beta, taxonomy=taxonomy,
                                            curriculum_epochs=cfg.curriculum_epochs, schedule=cfg.schedule,
                                            label_model=cfg.label_model)
                for seed in cfg.repeats:
                    name = f"{inputs} {approach} seed {seed}"
                    clf = train(features, train_df, config=replace(head, seed=seed), input_dims=dims, inputs=inputs,
                                smoothing=smoothing, similarity=similarity, progress_label=name, calibration="none")
                    rep = evaluate(clf, features, test_df, inputs="image", label_neighbors=neighborhood,
                                   taxonomy_distance=distance, warn=False)
                    bar.advance(1, last=f"{name}: top-1 {rep['top1']:.3f}")
                    runs.append({
                        "inputs": inputs, "approach": approach, "seed": seed,
                        "top1": rep["top1"], "top5": rep["top5"],
                        "in_top5": rep["semantic"]["mean_in_top"], "all5_in": rep["semantic"]["share_all_in"],
                        "severity": rep["severity"]["mistake_severity"] if distance is not None else float("nan"),
                        "epochs": len(clf.history_), "best_epoch": clf.best_epoch_,
                    })
    summary = summarize(runs)
    nn_names = {classes[i]: [classes[j] for j in neighborhood[i][1:6]] for i in range(len(classes))}
    results = {
        "data": str(root),
        "config": {**{k2: v for k2, v in asdict(cfg).items() if k2 != "head"}, "head": asdict(cfg.head)},
        "n_classes": len(classes), "n_train": int(len(train_df)), "n_test": int(len(test_df)),
        "neighbors": k,
        "runs": runs,
        "summary": summary.reset_index().to_dict(orient="records"),
        "label_neighbours_top5": nn_names,
    }
    if json_out:
        atomic_write_json(json_out, results)
    if html_out:
        write_html(results, summary, html_out)
    return results


def write_html(results: dict, summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simlabel.report import Report, figure_html, setup_table, table_html

    rep = Report("Semantic label smoothing and image + title fusion")
    cfg = results["config"]
    head = cfg["head"]
    rep.add("Setup", setup_table({
        "data": results["data"], "classes": results["n_classes"], "train / test items": f"{results['n_train']:,} / {results['n_test']:,}",
        "alpha": cfg["alpha"], "K nearest labels": f"{results['neighbors']} ({cfg['label_model']})",
        "loss": f"{cfg['loss']} + KL (weight {cfg['kl_weight']})", "repeats": list(cfg["repeats"]),
        "heads": f"{head['head']} on images, attention fusion on image + title; early stopping on validation {head['monitor']} "
                 f"(patience {head['patience']}), batches of {head['batch_size']}",
    }))
    rep.add(
        "Results (mean over repeats; sd columns)",
        table_html(summary),
        note="top1/top5: accuracy. in_top5: mean number of the top-5 predictions inside the true label's neighbourhood "
        "(its K nearest labels plus itself). all5_in: share of items with all 5 inside. severity: mean taxonomy "
        "distance of wrong top-1 predictions (lower is better).",
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, key in zip(axes, ("top1", "in_top5", "severity")):
        piv = summary[key].unstack(0)
        piv.plot.bar(ax=ax, rot=30, legend=False)
        ax.set_title(key)
    # one legend for the three charts, beside them rather than over the bars
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), title="inputs")
    rep.add("Charts", figure_html(fig))
    nn = pd.DataFrame({k: ", ".join(v) for k, v in results["label_neighbours_top5"].items()}, index=["5 nearest labels"]).T
    rep.add("Label neighbourhoods (5 nearest of K)", table_html(nn))
    return rep.write(path)
