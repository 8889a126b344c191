"""`simlabel demo`: the main job on the default data, as a sanity check of the spine.

catalog -> image embeddings (cached, resumable) -> FAISS index -> a report:
counts, failures, throughput, and the k-NN accuracy of the test split against
the train split (each test image takes the similarity-weighted majority label
of its ``k`` nearest train images). Then, on the same embeddings, two small
experiments: paper 000's (augmentation vs propagation, and ``pseudo=auto``, at
``labeled_frac``) and the label-efficiency comparison at ``budget_frac`` of the
catalog: the seeds-only baseline (random labels, trained alone) against what
simlabel does with the same number of human labels (``select`` in two rounds,
``train --pseudo auto``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simlabel.catalog import load_catalog
from simlabel.embedding import embed
from simlabel.encoders import DEFAULT_IMAGE_MODEL
from simlabel.errors import CatalogError, SimlabelError
from simlabel.experiments.augment import AugmentExperimentConfig, run_augment_experiment
from simlabel.experiments.efficiency import EfficiencyConfig, run_efficiency_experiment
from simlabel.files import atomic_write_json, read_json
from simlabel.index import IndexConfig, NeighborIndex
from simlabel.runs import default_run_dir, find_default_data
from simlabel.store import load_embeddings

if TYPE_CHECKING:
    from simlabel.graph import KnnGraph


def knn_vote(
    train_labels: np.ndarray, neighbor_pos: np.ndarray, neighbor_sims: np.ndarray, *, weighted: bool = True
) -> np.ndarray:
    """Label each query by the (similarity-weighted) majority of its neighbours' labels.

    ``neighbor_pos`` (n, k) indexes ``train_labels``; ``-1`` entries are ignored.
    Ties go to the label of the nearer neighbour block, i.e. to the smallest class code
    among the tied, which is deterministic.
    """
    classes, codes = np.unique(train_labels, return_inverse=True)
    valid = neighbor_pos >= 0
    lab = codes[np.where(valid, neighbor_pos, 0)]
    w = np.where(valid, np.maximum(neighbor_sims, 0) if weighted else 1.0, 0.0)
    scores = np.zeros((neighbor_pos.shape[0], len(classes)))
    np.add.at(scores, (np.repeat(np.arange(len(lab)), lab.shape[1]), lab.ravel()), w.ravel())
    return classes[scores.argmax(axis=1)]


@dataclass
class DemoReport:
    data: str
    out: str
    model: str
    n_items: int
    n_embedded: int
    n_failed: int
    items_per_s: float
    resumed: bool
    index_path: str
    k: int
    n_train: int
    n_test: int
    knn_accuracy: float | None
    per_class_accuracy: dict[str, float]
    experiment: dict | None = None
    #: the experiment's results were read from an earlier run with the same inputs and code
    experiment_cached: bool = False
    #: the label-efficiency comparison (:func:`~simlabel.experiments.efficiency.run_efficiency_experiment`'s results)
    efficiency: dict | None = None
    efficiency_cached: bool = False

    def fewest_labels(self) -> dict | None:
        """The efficiency comparison in short: the budget, the seeds-only baseline (``random+none``) and
        simlabel's pipeline (``auto+auto``), mean and sd over the repetitions."""
        if not self.efficiency:
            return None
        by = {(r["pipeline"], r["budget"]): r for r in self.efficiency["summary"]}
        budget = self.efficiency["budgets"][0]
        base, best = by[("random+none", budget)], by[("auto+auto", budget)]
        return {"budget": budget, "pool": self.efficiency["pool"], "repeats": self.efficiency["config"]["repeats"],
                "seeds_only": base["score"], "seeds_only_sd": base.get("score sd"),
                "simlabel": best["score"], "simlabel_sd": best.get("score sd")}


def experiment_key(cfg: "AugmentExperimentConfig | EfficiencyConfig", embeddings, catalog) -> str:
    """What the demo's experiment results depend on: its config, the embeddings (fingerprint),
    the catalog's labels and splits, and simlabel's code (a digest of its source files, so any
    change of the code reruns it)."""
    import hashlib
    from dataclasses import asdict

    import simlabel

    code = hashlib.sha256()
    for f in sorted(Path(simlabel.__file__).parent.rglob("*.py")):
        code.update(f.read_bytes())
    cols = [c for c in ("id", "label", "split") if c in catalog.table.columns]
    labels = pd.util.hash_pandas_object(catalog.table[cols], index=False).to_numpy().tobytes()
    parts = [json.dumps(asdict(cfg), sort_keys=True, default=str), embeddings.fingerprint, code.hexdigest(),
             hashlib.sha256(labels).hexdigest()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _cached_run(run_dir: Path, name: str, cfg, embeddings, catalog, run) -> tuple[dict, bool]:
    """An experiment's results from ``run_dir/experiment_<name>.{json,html}`` when they were made from the same
    inputs and code (:func:`experiment_key`), else ``run(json_path, html_path)``'s, keyed for the next demo;
    and whether they were read from the cache."""
    json_path, html_path = run_dir / f"experiment_{name}.json", run_dir / f"experiment_{name}.html"
    key = experiment_key(cfg, embeddings, catalog)
    cached = _cached_experiment(json_path, html_path, key)
    if cached is not None:
        return cached, True
    results = run(json_path, html_path)
    atomic_write_json(json_path, {**read_json(json_path, f"{name} experiment results"), "cache_key": key})
    return results, False


def _cached_experiment(json_path: Path, html_path: Path, key: str) -> dict | None:
    if not (json_path.is_file() and html_path.is_file()):
        return None
    try:
        results = read_json(json_path, "experiment results")
    except SimlabelError:
        return None
    return results if results.get("cache_key") == key else None


def run_demo(
    data: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    model: str = DEFAULT_IMAGE_MODEL,
    label_col: str | None = None,
    k: int = 10,
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
    experiment: bool = True,
    labeled_frac: float = 0.1,
    graph: "str | os.PathLike | KnnGraph | None" = None,
    efficiency: bool = True,
    budget_frac: float = 0.01,
    repeats: int = 3,
) -> DemoReport:
    """Embed the default (or given) data, index it and measure test-vs-train k-NN accuracy.

    The main job end to end, as a sanity check: the catalog's images are embedded into
    ``out/embeddings`` (cached and resumable, see :func:`simlabel.embed`), an exact (flat)
    index over them is saved as ``out/index.faiss``, and each labelled test image takes the
    similarity-weighted majority label of its ``k`` nearest labelled training images. The
    train and test rows are the catalog's ``split`` column when it holds both ``train`` and
    ``test``; otherwise a seeded 20% of the rows is held out. The report (without the
    experiment) is written to ``out/demo_report.json``.

    With ``experiment`` it then runs a small version of paper 000's experiment on the
    same embeddings: ``labeled_frac`` of the catalog keeps its labels, the test split
    (or 30% of the labeled rows) is held out, and a dense layer is trained on the seeds,
    seeds + augmented and seeds + propagated labels. Its results are cached in the run folder
    (``experiment_augment.json`` and ``.html``), keyed by :func:`experiment_key`: a second
    demo with the same inputs and code reads them.

    Parameters
    ----------
    data : str or os.PathLike, optional
        A catalog file or a folder holding ``catalog.csv``. Default: ``$SIMLABEL_DATA``, else
        the shared ``clothing-small`` dataset (``../shared/datasets/clothing-small`` next to
        the working directory or to the source checkout).
    out : str or os.PathLike, optional
        The run folder. Default: a cached folder per catalog (path and ids) and model,
        ``<cache>/runs/<dataset>-<model>-<hash>``, so a second run reuses its embeddings.
    model : str, default "efficientnet-lite0"
        The image model spec (see :mod:`simlabel.encoders`).
    label_col : str, optional
        The catalog column holding the labels, when it is not ``label``.
    k : int, default 10
        Nearest training images each test image's vote takes.
    device : str, default "auto"
        ``cpu``, ``cuda`` or ``auto`` (CUDA when visible), for embedding and the experiment.
    progress : bool, default True
        Show progress bars.
    seed : int, default 0
        Seeds the 20% holdout of a catalog without a train/test split, and the experiment's
        one repeat.
    experiment : bool, default True
        Also run (or read from the cache) the small augmentation experiment.
    labeled_frac : float, default 0.1
        The fraction of the catalog that keeps its labels in the experiment.
    efficiency : bool, default True
        Also compare, at ``budget_frac`` of the catalog, the seeds-only baseline (random labels, the
        head on them alone) with simlabel's pipeline on as many human labels (``select``'s ``auto``
        in two rounds, ``train --pseudo auto``), over ``repeats`` seeds; cached like the experiment
        (``experiment_efficiency.json`` and ``.html``). Needs a label column; uses the catalog's
        ``test`` split when it has one, else a stratified 20%.
    budget_frac : float, default 0.01
        The human labels of that comparison, as a share of the pool (clothing-small: 34 labels, where
        the choice of labels matters most; RESULTS.md §16).
    repeats : int, default 3
        Its repetitions.
    graph : str, os.PathLike or KnnGraph, optional
        A k-NN graph (a :class:`~simlabel.graph.KnnGraph` or folder over these embeddings):
        gives the test rows' training neighbours without new queries
        (:func:`simlabel.graph.neighbour_source`: rows whose graph row holds fewer than ``k``
        training neighbours are searched exactly), the same accuracy as the train-only index.
        Default: exact search among the training rows.

    Returns
    -------
    DemoReport
        Counts (items, embedded, failed, train and test rows), throughput, whether the
        embeddings were all resumed, the index path, ``k``, the k-NN accuracy overall and per
        class (``None`` and empty unless there are more than ``k`` labelled training rows and
        a labelled test row), and the experiment's results (``experiment``; ``None`` without
        it) with ``experiment_cached`` saying whether they were read from an earlier run, and the
        label-efficiency comparison (``efficiency``, :meth:`DemoReport.fewest_labels`).

    Raises
    ------
    DataNotFound
        No data where ``data`` (or ``$SIMLABEL_DATA``, or the default) points.
    CatalogError
        The catalog cannot be used, or has no label column (map one with ``label_col``).
    InputError
        A bad model spec, device or other argument value, or a ``graph`` of other embeddings
        (or holding fewer than ``k`` neighbours per row).
    StoreError
        The run folder's embeddings belong to another job, or the ``graph`` folder is
        unfinished or broken.
    ModelError
        The model cannot be loaded or run as asked (e.g. ``cuda`` without a CUDA device).
    LockedError
        Another simlabel process is writing the same embedding folder.

    Examples
    --------
    >>> import simlabel
    >>> report = simlabel.run_demo(experiment=False, progress=False)  # doctest: +SKIP
    >>> report.n_test, report.knn_accuracy  # doctest: +SKIP
    """
    root = find_default_data(data)
    catalog = load_catalog(root, columns={"label": label_col} if label_col else None)
    if "label" not in catalog.table.columns:
        raise CatalogError(f"{catalog.path}: the demo needs a label column (map one with `label_col`)")
    run_dir = Path(out) if out else default_run_dir(catalog, model)
    emb_dir = run_dir / "embeddings"
    result = embed(catalog, emb_dir, model=model, device=device, progress=progress)
    embeddings = load_embeddings(emb_dir)
    ids, matrix = embeddings
    index = NeighborIndex.build(ids, matrix, IndexConfig(kind="flat"), metadata={"embeddings": str(emb_dir)})
    index_path = run_dir / "index.faiss"
    index.save(index_path)

    table = catalog.table.set_index("id").loc[ids]
    labels = table["label"].astype(str).to_numpy()
    if "split" in table.columns and {"train", "test"} <= set(table["split"]):
        is_train = (table["split"] == "train").to_numpy()
        is_test = (table["split"] == "test").to_numpy()
    else:  # no split: hold out a seeded 20%
        rng = np.random.default_rng(seed)
        is_test = rng.random(len(ids)) < 0.2
        is_train = ~is_test
    has_label = labels != ""
    is_train = is_train & has_label
    is_test = is_test & has_label
    acc: float | None = None
    per_class: dict[str, float] = {}
    if is_train.sum() > k and is_test.any():
        from simlabel.graph import neighbour_source

        # the test rows' nearest training rows: from the graph, or exact search among the training rows
        train_rows = neighbour_source(embeddings, k, among=np.flatnonzero(is_train), graph=graph)
        pos, sims = train_rows(np.flatnonzero(is_test))
        pred = knn_vote(labels[is_train], pos, sims)
        truth = labels[is_test]
        acc = float((pred == truth).mean())
        per_class = {
            str(c): float(g) for c, g in pd.Series(pred == truth).groupby(truth).mean().sort_index().items()
        }
    report = DemoReport(
        data=str(root),
        out=str(run_dir),
        model=result.model,
        n_items=result.n_items,
        n_embedded=result.n_embedded,
        n_failed=result.n_failed,
        items_per_s=result.items_per_s,
        resumed=result.n_resumed == result.n_items,
        index_path=str(index_path),
        k=k,
        n_train=int(is_train.sum()),
        n_test=int(is_test.sum()),
        knn_accuracy=acc,
        per_class_accuracy=per_class,
    )
    if experiment:
        has_test = "split" in catalog.table.columns and (catalog.table["split"] == "test").any()
        cfg = AugmentExperimentConfig(
            label_col=label_col, encoders=[model], labeled_frac=labeled_frac,
            holdout_split="test" if has_test else None, repeats=[seed], device=device,
        )
        report.experiment, report.experiment_cached = _cached_run(
            run_dir, "augment", cfg, embeddings, catalog,
            lambda j, h: run_augment_experiment(root, cfg, out=run_dir, json_out=j, html_out=h, progress=progress,
                                                embeddings={model: embeddings}))
    if efficiency:
        ecfg = EfficiencyConfig(label_col=label_col, budget_fracs=(budget_frac,), strategies=("random", "auto"),
                                pseudo=("none", "auto"), rounds=2, repeats=repeats, references=False, device=device)
        report.efficiency, report.efficiency_cached = _cached_run(
            run_dir, "efficiency", ecfg, embeddings, catalog,
            lambda j, h: run_efficiency_experiment(root, ecfg, out=run_dir, json_out=j, html_out=h, progress=progress,
                                                   embeddings=embeddings))
    written = {k: v for k, v in report.__dict__.items() if k not in ("experiment", "efficiency")}
    atomic_write_json(run_dir / "demo_report.json", {**written, "fewest_labels": report.fewest_labels()})
    return report
