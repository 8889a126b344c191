"""The label-efficiency curve: accuracy against the number of human labels, for every way simlabel can
spend them (``simlabel experiment efficiency``).

A simulated reviewer answers from the catalog's own labels. For each budget, repetition, selection
strategy (``random``, ``typiclust``, ``probcover``, ``auto``) and pseudo-label mode (``none``, ``auto``, or a
fixed one), the labels are chosen (in one shot, or in ``rounds`` that each see the labels so far), a head
is trained on them (``train(..., pseudo=...)``) and scored on a fixed test set: the catalog's ``test`` split
where it has one, else a stratified 20% drawn once with a recorded seed, never selected nor pseudo-labelled.
``random + none`` is today's baseline (seeds only). The reference lines are the head on every pool label
(the ceiling) and scikit-learn's LogisticRegression and LabelSpreading (k-NN kernel) on random labels.

With ``positive`` the task is one class against the rest, scored by average precision.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog
from simlabel.checks import in_range, one_of, positive_int
from simlabel.experiments._common import fixed_split, jsonable, mean_sd, open_experiment
from simlabel.files import atomic_write_json
from simlabel.graph import GraphConfig, build_graph
from simlabel.head_config import HeadConfig
from simlabel.progress import task
from simlabel.selection import SelectConfig, select_items
from simlabel.store import Embeddings

__all__ = ["FEW_LABEL_HEAD", "EfficiencyConfig", "run_efficiency_experiment", "simulate_rounds", "summary_table", "write_html"]

STRATEGIES = ("random", "typiclust", "probcover", "auto")
PSEUDO = ("none", "auto", "augment", "propagate", "spread")
REST = "rest"
#: the head for a few labels per class: every label trains (a validation split of 34 labels costs 4-5 points of
#: accuracy on clothing-small, more than early stopping saves), a fixed 100 epochs, balanced class weights
#: (RESULTS.md §16: +0.6 to +5 points over the default head from 17 to 341 random labels)
FEW_LABEL_HEAD = HeadConfig(head="linear", val_frac=0.0, max_epochs=100, class_weight="balanced")


@dataclass
class EfficiencyConfig:
    """What ``simlabel experiment efficiency`` runs.

    Parameters
    ----------
    label_col : str, optional
        The catalog column holding the labels (default ``label``).
    budgets : tuple of int, default ()
        Human labels per pipeline; empty: ``budget_fracs`` of the pool (the catalog less the test set).
    budget_fracs : tuple of float, default (0.005, 0.01, 0.03, 0.1)
        The budgets as shares of the pool (clothing-small: 17, 34, 102, 341; fashion-products: 38, 76, 228, 762).
    strategies : tuple of str, default ("random", "typiclust", "probcover", "auto")
        How the labels are chosen.
    pseudo : tuple of str, default ("none", "auto")
        The pseudo-label modes trained with.
    rounds : int, default 1
        Labelling rounds per budget (1: one shot); each round selects with the labels so far.
    repeats : int, default 5
        Repetitions (seeds 0..repeats-1).
    test_frac, test_seed : float and int, default 0.2 and 0
        Without a ``test`` split: the stratified test share, drawn once with this seed.
    positive : str, optional
        One class against the rest, scored by average precision.
    head : HeadConfig, default :data:`FEW_LABEL_HEAD`
        The head every pipeline trains (and pseudo=auto validates with).
    k : int, default 100
        The k-NN graph's neighbours (built once, read by selection and pseudo-labels; ProbCover's balls
        need about 100).
    references : bool, default True
        Also the ceiling and scikit-learn's lines.
    device : str, default "auto"
        Where embedding and heads run.
    limit : int, optional
        The catalog's first rows only.
    text_col : str, optional
        A title column: its MiniLM embeddings join the images' side by side
        (:func:`~simlabel.training.load_features`, ``inputs="image+text"``), and every pipeline (the
        selection, the graph, the pseudo-labels, the heads and the references) works on both.

    Examples
    --------
    >>> from simlabel.experiments.efficiency import EfficiencyConfig
    >>> EfficiencyConfig(budgets=(34,), strategies=("random", "auto")).pipelines()
    ['random+none', 'random+auto', 'auto+none', 'auto+auto']
    """

    label_col: str | None = None
    budgets: tuple[int, ...] = ()
    budget_fracs: tuple[float, ...] = (0.005, 0.01, 0.03, 0.1)
    strategies: tuple[str, ...] = STRATEGIES
    pseudo: tuple[str, ...] = ("none", "auto")
    rounds: int = 1
    repeats: int = 5
    test_frac: float = 0.2
    test_seed: int = 0
    positive: str | None = None
    head: HeadConfig = field(default_factory=lambda: FEW_LABEL_HEAD)
    k: int = 100
    references: bool = True
    device: str = "auto"
    limit: int | None = None
    text_col: str | None = None

    def __post_init__(self) -> None:
        self.budgets = tuple(int(b) for b in self.budgets)
        for b in self.budgets:
            positive_int(b, "budgets")
        for f in self.budget_fracs:
            in_range(f, "budget_fracs", 0, 1, lo_open=True)
        for s in self.strategies:
            one_of(s, STRATEGIES, "strategies")
        for p in self.pseudo:
            one_of(p, PSEUDO, "pseudo")
        positive_int(self.rounds, "rounds")
        positive_int(self.repeats, "repeats")
        in_range(self.test_frac, "test_frac", 0, 1, lo_open=True, hi_open=True)
        positive_int(self.k, "k")

    def pipelines(self) -> list[str]:
        """The pipelines' names, ``strategy+pseudo``."""
        return [f"{s}+{p}" for s in self.strategies for p in self.pseudo]


def _metric(clf, X: np.ndarray, y: np.ndarray, positive: str | None) -> float:
    if positive is None:
        return float((clf.predict(X) == y).mean())
    from sklearn.metrics import average_precision_score

    col = list(clf.classes_).index(positive) if positive in clf.classes_ else None
    if col is None:
        return 0.0
    return float(average_precision_score(y == positive, clf.predict_proba(X)[:, col]))


def simulate_rounds(emb: Embeddings, budget: int, strategy: str, rounds: int, seed: int, truth: pd.Series,
                    exclude: list[str], graph, head: HeadConfig) -> tuple[pd.DataFrame, list[str]]:
    """The simulated labelling: ``rounds`` selections adding up to ``budget``, each answered from ``truth``.

    Round ``r`` selects ``round(budget (r + 1) / rounds)`` less the labels so far, with ``strategy`` and
    (for ``auto``, from two classes on) a ``head`` trained on the labels so far; ``exclude`` ids are never
    chosen. Returns the labels (``id``, ``label``) and the strategy each round used."""
    from simlabel.heads import EmbeddingClassifier

    labelled = pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=str)})
    used = []
    for r in range(rounds):
        b = int(round(budget * (r + 1) / rounds)) - len(labelled)
        if b <= 0:
            continue
        proba = classes = None
        if strategy == "auto" and labelled["label"].nunique() >= 2:
            clf = EmbeddingClassifier(head, progress_label="efficiency: round model").fit(
                emb.rows(labelled["id"]).matrix, labelled["label"].to_numpy(), classes=sorted(labelled["label"].unique()))
            proba, classes = clf.predict_proba(emb.matrix), [str(c) for c in clf.classes_]
        sel = select_items(emb, b, SelectConfig(strategy=strategy, seed=seed + 1000 * r), labels=labelled if len(labelled) else None,
                           proba=proba, classes=classes, graph=graph, exclude=exclude)
        used.append(sel.summary["strategy"])
        got = sel.labels["id"].astype(str)
        labelled = pd.concat([labelled, pd.DataFrame({"id": got, "label": truth.loc[got].to_numpy()})], ignore_index=True)
    return labelled, used


def _references(emb: Embeddings, pool: np.ndarray, test: np.ndarray, y: np.ndarray, budgets: list[int],
                seeds: list[int], cfg: EfficiencyConfig) -> dict:
    """The ceiling (the head on every pool label) and scikit-learn on random labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading

    from simlabel.heads import EmbeddingClassifier

    X = emb.matrix
    ceiling = EmbeddingClassifier(cfg.head, progress_label="efficiency: ceiling").fit(X[pool], y[pool])
    out: dict = {"ceiling": _metric(ceiling, X[test], y[test], cfg.positive), "logistic": {}, "label_spreading": {}}
    for b in budgets:
        lr_scores, ls_scores = [], []
        for s in seeds:
            pick = np.random.default_rng(s).choice(pool, size=b, replace=False)
            if len(np.unique(y[pick])) < 2:
                continue
            lr = LogisticRegression(max_iter=1000).fit(X[pick], y[pick])
            lr_scores.append(_metric(lr, X[test], y[test], cfg.positive))
            codes = {c: i for i, c in enumerate(sorted(set(y)))}
            target = np.full(len(pool), -1)
            at = pd.Index(pool).get_indexer(pick)
            target[at] = [codes[v] for v in y[pick]]
            ls = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=100).fit(X[pool], target)
            names = np.asarray(sorted(set(y)), dtype=object)
            if cfg.positive is None:
                ls_scores.append(float((names[ls.predict(X[test])] == y[test]).mean()))
            else:
                from sklearn.metrics import average_precision_score

                col = codes.get(cfg.positive)
                ls_scores.append(float(average_precision_score(y[test] == cfg.positive, ls.predict_proba(X[test])[:, col])))
        out["logistic"][str(b)] = float(np.mean(lr_scores)) if lr_scores else None
        out["label_spreading"][str(b)] = float(np.mean(ls_scores)) if ls_scores else None
    return out


def run_efficiency_experiment(
    data: str | os.PathLike | None = None,
    config: EfficiencyConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    json_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: bool = True,
    embeddings: "str | os.PathLike | Embeddings | None" = None,
    text_embeddings: "str | os.PathLike | Embeddings | None" = None,
) -> dict:
    """Run the label-efficiency experiment on a catalog; returns (and optionally writes) the results.

    Parameters
    ----------
    data : str or os.PathLike, optional
        The catalog (default: ``$SIMLABEL_DATA`` or the shared clothing-small).
    config : EfficiencyConfig, optional
        Budgets, strategies, pseudo modes, rounds, repetitions.
    out : str or os.PathLike, optional
        The run folder (embeddings and the graph are kept there).
    json_out, html_out : str or os.PathLike, optional
        Write the results as JSON and the page with the curve.
    progress : bool, default True
        Report the pipelines.
    embeddings : str, os.PathLike or Embeddings, optional
        The catalog's embeddings, instead of embedding it.
    text_embeddings : str, os.PathLike or Embeddings, optional
        With ``config.text_col`` and ``embeddings``: the titles' embeddings (else they are made).

    Returns
    -------
    dict
        ``config``, ``test`` (how the test set was made), ``runs`` (one row per pipeline, budget and seed),
        ``summary`` (mean and sd per pipeline and budget) and ``references``.

    Raises
    ------
    InputError
        A ``positive`` class the catalog does not hold, a budget larger than the pool, or ``text_col``
        with ``embeddings`` but no ``text_embeddings``.

    Examples
    --------
    >>> from simlabel.experiments.efficiency import EfficiencyConfig, run_efficiency_experiment
    >>> res = run_efficiency_experiment("../shared/datasets/clothing-small",
    ...                                 EfficiencyConfig(budgets=(34,), repeats=1))  # doctest: +SKIP
    """
    from simlabel.errors import InputError
    from simlabel.training import load_features, train

    cfg = config or EfficiencyConfig()
    if cfg.text_col and embeddings is not None and text_embeddings is None:
        raise InputError("`text_col` with `embeddings` needs the titles' embeddings too (`text_embeddings`)")
    ex = open_experiment(data, model="efficientnet-lite0", label_col=cfg.label_col, limit=cfg.limit, out=out,
                         embeddings=embeddings, device=cfg.device, progress=progress, text_col=cfg.text_col)
    emb, catalog = ex.embeddings, ex.catalog
    if cfg.text_col:
        emb = load_features(emb, text_embeddings if text_embeddings is not None else ex.text, inputs="image+text")[0]
    table = catalog.table.set_index("id").loc[emb.ids.astype(str)]
    has = table["label"].astype(str).str.len() > 0
    labels = table["label"].astype(str)
    if cfg.positive is not None:
        if cfg.positive not in set(labels):
            raise InputError(f"`positive` {cfg.positive!r} is not a label of {catalog.path}")
        labels = labels.where(labels == cfg.positive, REST)
    if "split" in table.columns and (table["split"] == "test").any():
        is_test = (table["split"] == "test").to_numpy() & has.to_numpy()
        test_how = {"rule": "the catalog's test split", "n": int(is_test.sum())}
    else:
        is_test = np.zeros(len(table), dtype=bool)
        is_test[np.flatnonzero(has)] = fixed_split(labels[has], cfg.test_frac, cfg.test_seed)
        test_how = {"rule": f"a stratified {cfg.test_frac:.0%}, seed {cfg.test_seed}", "n": int(is_test.sum())}
    pool = np.flatnonzero(has.to_numpy() & ~is_test)
    test = np.flatnonzero(is_test)
    y = labels.to_numpy(dtype=object)
    budgets = list(cfg.budgets) or sorted({max(2, int(round(f * len(pool)))) for f in cfg.budget_fracs})
    if max(budgets) > len(pool):
        raise InputError(f"a budget of {max(budgets)} is more than the pool's {len(pool)} labelled items")
    truth = pd.Series(y, index=emb.ids.astype(str))
    # never chosen: the test set and the items without a label (the reviewer could not answer)
    never = list(emb.ids[np.setdiff1d(np.arange(len(y)), pool)].astype(str))
    test_df = pd.DataFrame({"id": emb.ids[test].astype(str), "label": y[test]})
    run_dir = ex.run_dir
    k = min(cfg.k, len(emb.ids) - 1)  # a small catalog holds fewer neighbours than asked
    graph = build_graph(emb, run_dir / f"graph-k{k}-{emb.fingerprint[:8]}", GraphConfig(k=k, recall=1.0, recall_sample=0),
                        progress=progress)
    seeds = list(range(cfg.repeats))
    runs = []
    total = len(budgets) * len(seeds) * len(cfg.strategies) * len(cfg.pseudo)
    with task("experiment efficiency", total, unit="pipelines", enabled=progress) as bar:
        for budget in budgets:
            for seed in seeds:
                for strategy in cfg.strategies:
                    chosen, used = simulate_rounds(emb, budget, strategy, cfg.rounds, seed, truth, never, graph, cfg.head)
                    for mode in cfg.pseudo:
                        head = HeadConfig(**{**asdict(cfg.head), "seed": seed})
                        row = {"pipeline": f"{strategy}+{mode}", "strategy": strategy, "pseudo": mode, "budget": budget,
                               "seed": seed, "rounds": cfg.rounds, "used": used, "classes_labelled": int(chosen["label"].nunique())}
                        if budget == budgets[0] and seed == seeds[0] and mode == cfg.pseudo[0]:
                            row["chosen"] = chosen["id"].tolist()[:24]  # the page's image grid
                        if chosen["label"].nunique() < 2:
                            row.update(score=0.0, pseudo_mode="none", note="one class labelled: no classifier")
                        else:
                            clf = train(emb, chosen, config=head, holdout=test_df, pseudo=mode, graph=graph, calibration="none",
                                        progress_label=f"efficiency {strategy}+{mode} {budget}")
                            row["score"] = _metric(clf, emb.matrix[test], y[test], cfg.positive)
                            row["n_trained"] = int(len(clf.training_ids_))
                            if mode == "auto":
                                row["pseudo_mode"] = (getattr(clf, "pseudo_", None) or {}).get("mode")
                        runs.append(row)
                        bar.advance(1, last=f"{strategy}+{mode} @ {budget}: {row['score']:.3f}")
    runs_df = pd.DataFrame(runs)
    summary = mean_sd(runs_df, ["pipeline", "budget"], ["score"]).reset_index()
    results = {
        "data": str(ex.root), "config": jsonable({**asdict(cfg), "head": asdict(cfg.head)}),
        "metric": "average precision" if cfg.positive else "accuracy", "test": test_how,
        "pool": int(len(pool)), "classes": int(len(set(y[pool]))), "budgets": budgets,
        "features": {"inputs": "image+text" if cfg.text_col else "image", "dim": int(emb.dim), "space": emb.space},
        "runs": runs, "summary": summary.to_dict(orient="records"),
    }
    if cfg.references:
        results["references"] = _references(emb, pool, test, y, budgets, seeds, cfg)
    if json_out:
        atomic_write_json(json_out, jsonable(results))
    if html_out:
        write_html(results, catalog, html_out, emb=emb)
    return results


def summary_table(results: dict) -> pd.DataFrame:
    """Pipelines x budgets: ``mean ± sd`` of the score, with the reference lines."""
    s = pd.DataFrame(results["summary"])
    cells = s.assign(cell=[f"{m:.3f} ± {d:.3f}" for m, d in zip(s["score"], s["score sd"])])
    t = cells.pivot(index="pipeline", columns="budget", values="cell")
    order = [p for p in dict.fromkeys(s["pipeline"])]
    t = t.loc[order]
    ref = results.get("references")
    if ref:
        t.loc["LogisticRegression, random (sklearn)"] = [f"{ref['logistic'].get(str(b)) or float('nan'):.3f}" for b in t.columns]
        t.loc["LabelSpreading, random (sklearn)"] = [f"{ref['label_spreading'].get(str(b)) or float('nan'):.3f}" for b in t.columns]
        t.loc["all pool labels (ceiling)"] = [f"{ref['ceiling']:.3f}"] * len(t.columns)
    t.columns = [str(c) for c in t.columns]
    return t


def write_html(results: dict, catalog: Catalog, path: str | os.PathLike, *, emb: Embeddings | None = None) -> Path:
    """The page: the setup, the curve with sd bands and the reference lines, the table, and the first
    items each strategy chose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simlabel.report import Report, figure_html, image_grid, setup_table

    cfg = results["config"]
    rep = Report("Label efficiency: accuracy against human labels")
    rep.add("Setup", setup_table({
        "data": results["data"], "metric": results["metric"], "test set": f"{results['test']['rule']} ({results['test']['n']:,} items)",
        "pool": f"{results['pool']:,} items, {results['classes']} classes", "budgets": results["budgets"],
        "rounds": cfg["rounds"], "repetitions": cfg["repeats"], "head": cfg["head"]["head"],
        "one class against the rest": cfg.get("positive") or "no",
        "features": (f"{f['inputs']}, {f['dim']}-d" + (f" (titles: {cfg['text_col']})" if cfg.get("text_col") else "")
                     if (f := results.get("features")) else "image+text" if cfg.get("text_col") else "image"),
    }))
    s = pd.DataFrame(results["summary"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, g in s.groupby("pipeline", sort=False):
        g = g.sort_values("budget")
        line, = ax.plot(g["budget"], g["score"], marker="o", label=name, lw=2 if name.startswith("random+none") else 1.3)
        ax.fill_between(g["budget"], g["score"] - g["score sd"], g["score"] + g["score sd"], color=line.get_color(), alpha=0.15)
    ref = results.get("references")
    if ref:
        b = results["budgets"]
        ax.plot(b, [ref["logistic"].get(str(x)) for x in b], ls="--", color="grey", label="LogisticRegression (sklearn)")
        ax.plot(b, [ref["label_spreading"].get(str(x)) for x in b], ls=":", color="grey", label="LabelSpreading (sklearn)")
        ax.axhline(ref["ceiling"], color="black", ls="-.", lw=1, label="all pool labels")
    ax.set_xscale("log")
    ax.set_xlabel("human labels")
    ax.set_ylabel(results["metric"])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    rep.add("The curve (mean over repetitions, bands: ± 1 sd)", figure_html(fig))
    rep.add_table("Mean ± sd per pipeline and budget", summary_table(results), note="random+none is training on "
                  "randomly chosen human labels alone, today's baseline.")
    runs = pd.DataFrame(results["runs"])
    paths = dict(zip(catalog.table["id"].astype(str), catalog.image_paths()))
    truth = dict(zip(catalog.table["id"].astype(str), catalog.table["label"].astype(str)))
    if "chosen" in runs.columns:
        for _, r in runs.dropna(subset=["chosen"]).iterrows():
            items = [(paths.get(i), truth.get(i, "")) for i in r["chosen"]]
            rep.add(f"The first {len(items)} items {r['strategy']} chose (budget {r['budget']}, seed {r['seed']})",
                    image_grid(items, size=96))
    if "used" in runs.columns:
        auto = runs[runs["strategy"] == "auto"]
        if len(auto):
            rep.add_table("What auto used, round by round", auto.drop_duplicates(["budget", "seed"])
                          .assign(used=lambda d: d["used"].map(lambda v: " > ".join(v)))[["budget", "seed", "used"]].head(30))
    return rep.write(path)
