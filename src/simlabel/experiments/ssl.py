"""Paper 001's experiment: SkiLL against vanilla DINO and its ablations, on identical budgets.

Variants (each a :class:`~simlabel.ssl.train.SSLConfig` from the same base: backbone, steps,
batch, resolutions, learning rate, seed):

============== =================================================================================
pretrained     the pretrained encoder (EfficientNet-Lite0, ImageNet) without SSL
dino           vanilla DINO: grey 0.2, jitter 0.8, blur 0.5, solarize 0.2; no local space, no
               pre-processing, two views of one image
skill          SkiLL: product-crop pre-processing, the local space per ``task_col`` type, the
               colour-agnostic set (p1 = 0.5 grey, p2 = 0.8 jitter, p3 = 0.5 blur), positives
               from two images of one product (``design_groups``: colour variants of a design)
skill-L        SkiLL \\ L: no local augmentations
skill-H        SkiLL \\ H: no pre-processing
skill-colour   SkiLL with p1 = p2 = p3 = 0.1 (the paper's colour ablation)
skill-P        SkiLL without product positives (no product column at all: two views of one image)
skill-gentle   SkiLL by the ``gentle`` recipe (:mod:`simlabel.ssl.recipes`): 1 block, peak lr 3e-4
skill-keep     SkiLL by the ``keep`` recipe: distillation to the frozen pretrained encoder (λ = 1)
skill-proj     SkiLL by the ``projection`` recipe: the encoder frozen, a colour-invariant projection trained
skill-white    SkiLL by the ``whitening`` recipe (``ssl train``'s default): learned whitening of the frozen
               encoder's features from SkiLL's view pairs and the training half's products
               (:mod:`simlabel.ssl.whitening`)
skill-white-P  the same with no product column at all: the view pairs alone
dino-white     the whitening recipe over vanilla DINO's views, no product column: DINO at the same budget
============== =================================================================================

The ``skill`` variant runs the ``paper`` recipe; the recipes change only how the encoder trains, on the same
views, loss and budget.

**Design retrieval**, what a shop uses SkiLL for (:func:`simlabel.ssl.probes.design_recall`): the design groups
(colour variants of one title) are split 50/50 by ``design_seed``; training sees the first half as product
positives and never the second (its rows are products of their own); each variant is scored by the recall@10
of same-design-other-colour items for the held-out half's items, searched in the whole catalog.

Each trained model is embedded through ``skill:DIR`` (the same resumable pipeline as any
encoder) and scored by probes on frozen embeddings (linear and one hidden layer; accuracy,
R@90, R@95) for ``probe_cols``, a linear colour probe, and colour entropy (k-means, size-weighted
mean entropy of ``base_colour`` inside the clusters). SSL uses no labels but trains on every
catalog image, the probes' test rows included (transductive, as a catalog would run it).

A killed experiment resumes: a finished model folder whose options match is reused, an
interrupted one continues from its checkpoint, embeddings resume as ``embed`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog, design_groups
from simlabel.checks import one_of, positive_int
from simlabel.embedding import embed
from simlabel.encoders import get_image_encoder
from simlabel.experiments._common import jsonable, open_experiment
from simlabel.progress import task
from simlabel.ssl.augment import ViewConfig
from simlabel.ssl.probes import colour_entropy, design_recall, hide_designs, probe, split_designs
from simlabel.ssl.recipes import recipe_options
from simlabel.ssl.train import SSLConfig, train_ssl
from simlabel.store import Embeddings, load_embeddings

__all__ = ["SSLExperimentConfig", "VARIANTS", "run_ssl_experiment", "variant_config", "write_html"]

VARIANTS = ("pretrained", "dino", "skill", "skill-L", "skill-H", "skill-colour", "skill-P", "skill-gentle", "skill-keep",
            "skill-proj", "skill-white", "skill-white-P", "dino-white")
#: the variants that are a :mod:`simlabel.ssl.recipes` recipe of SkiLL (``-P``: no product column; ``dino-white``:
#: the whitening recipe over vanilla DINO's views and no product column, the comparison of paper 001's claim)
RECIPE_VARIANTS = {"skill-gentle": "gentle", "skill-keep": "keep", "skill-proj": "projection",
                   "skill-white": "whitening", "skill-white-P": "whitening", "dino-white": "whitening"}


@dataclass
class SSLExperimentConfig:
    """The shared budget and the evaluation; defaults fit about an hour on 2 CPU cores."""

    variants: tuple[str, ...] = VARIANTS
    backbone: str = "efficientnet-lite0"
    train_blocks: int | str = 2
    epochs: int = 3
    #: steps per epoch (None: one pass over the catalog)
    steps_per_epoch: int | None = None
    batch_size: int = 16
    global_size: int = 128
    local_size: int = 64
    local_crops: int = 4
    lr: float = 1e-3
    task_col: str = "sub_category"
    title_col: str = "title"
    colour_col: str = "base_colour"
    probe_cols: tuple[str, ...] = ("article_type", "usage")
    clusters: int = 50
    cluster_seeds: tuple[int, ...] = (0, 1, 2)
    #: the design groups' 50/50 split (training sees the first half's pairs; recall is measured on the second)
    design_seed: int = 0
    held_frac: float = 0.5
    design_k: int = 10
    seed: int = 0
    limit: int | None = None
    device: str = "auto"
    workers: int | None = None
    model: str = "efficientnet-lite0"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.variants = tuple(self.variants)
        for v in self.variants:
            one_of(v, VARIANTS, "variant")
        positive_int(self.epochs, "epochs")
        positive_int(self.steps_per_epoch, "steps_per_epoch", allow_none=True)
        positive_int(self.clusters, "clusters", minimum=2)


def variant_config(variant: str, cfg: SSLExperimentConfig) -> SSLConfig:
    """The :class:`SSLConfig` of one variant on the experiment's shared budget."""
    views = dict(global_size=cfg.global_size, local_size=cfg.local_size, local_crops=cfg.local_crops)
    base = dict(backbone=cfg.backbone, train_blocks=cfg.train_blocks, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
                batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, workers=cfg.workers, **cfg.extra)
    if variant == "dino":
        return SSLConfig(views=ViewConfig.dino(**views), **base)
    if variant == "dino-white":
        return SSLConfig(views=ViewConfig.dino(**views), **{**base, **recipe_options("whitening")})
    skill = dict(task_col=cfg.task_col, product_col=None if variant.endswith("-P") else "product")
    if variant in RECIPE_VARIANTS:
        return SSLConfig(views=ViewConfig(**views), **skill, **{**base, **recipe_options(RECIPE_VARIANTS[variant])})
    v = {"skill": {}, "skill-L": {"use_local_space": False}, "skill-H": {"preprocess": "none"},
         "skill-colour": {"p_gray": 0.1, "p_jitter": 0.1, "p_blur": 0.1}, "skill-P": {}}[variant]
    return SSLConfig(views=ViewConfig(**views, **v), **skill, **base)


def with_products(catalog: Catalog, cfg: SSLExperimentConfig, *, required: bool = True) -> Catalog:
    """The catalog with ``design`` (colour variants of one title: ``design_groups``), ``design_split`` (``train``,
    ``held`` or empty for a row of no group) and ``product``, the positives training may see: the design of a
    training-half group, the row's own id for a held-out group's row (:func:`simlabel.ssl.probes.hide_designs`).
    Without the title or colour column: an error, or (``required=False``) one product per row."""
    table = catalog.table.copy()
    if required or {cfg.title_col, cfg.colour_col} <= set(table.columns):
        table["design"] = design_groups(table, cfg.title_col, cfg.colour_col).to_numpy()
    else:
        table["design"] = table["id"]
    train, held = split_designs(table["design"], seed=cfg.design_seed, held_frac=cfg.held_frac)
    table["design_split"] = np.select([table["design"].isin(train), table["design"].isin(held)], ["train", "held"], "")
    table["product"] = hide_designs(table["design"], table["id"], held).to_numpy()
    return dataclasses.replace(catalog, table=table)


def design_retrieval(emb: Embeddings, table: pd.DataFrame, cfg: SSLExperimentConfig, split: str = "held") -> dict:
    """Recall@``design_k`` of same-design-other-colour items for the rows of one half of the design groups,
    searched among every row of ``emb`` (:func:`simlabel.ssl.probes.design_recall`)."""
    from simlabel.graph import neighbours_for

    rows = table[(table["design_split"] == split) & emb.has(table["id"].astype(str))]
    if rows.empty:
        return {"recall": None, "n_queries": 0, "k": cfg.design_k}
    by_id = table.set_index(table["id"].astype(str))
    ids = emb.ids.astype(str)
    design = by_id["design"].reindex(ids).fillna(pd.Series(ids, index=ids)).to_numpy()
    colour = by_id[cfg.colour_col].reindex(ids).fillna("").astype(str).to_numpy()
    queries = emb.positions(rows["id"].astype(str))
    nb = neighbours_for(emb, cfg.design_k, rows=queries, kind="flat").neighbors
    return design_recall(nb, queries, design, colour)


def evaluate_embeddings(emb: Embeddings, table: pd.DataFrame, cfg: SSLExperimentConfig, *, device: str = "cpu") -> dict:
    """Probes for each ``probe_cols`` (linear and mlp), the colour probe and colour entropy."""
    by_id = table.set_index(table["id"].astype(str))
    out: dict = {"probes": {}, "colour": {}}
    for col in cfg.probe_cols:
        out["probes"][col] = {kind: probe(emb, by_id[col], kind=kind, seed=cfg.seed, device=device) for kind in ("linear", "mlp")}
    out["colour"]["probe"] = probe(emb, by_id[cfg.colour_col], kind="linear", seed=cfg.seed, device=device)
    out["colour"]["entropy"] = colour_entropy(emb, by_id[cfg.colour_col], k=cfg.clusters, seeds=cfg.cluster_seeds)
    if "design_split" in table.columns:
        out["design"] = {half: design_retrieval(emb, table, cfg, half) for half in ("held", "train")}
    return out


def _train_variant(variant: str, cat: Catalog, run_dir: Path, cfg: SSLExperimentConfig, device: str,
                   progress: bool) -> tuple[Path, dict]:
    scfg = variant_config(variant, cfg)
    model_dir = run_dir / "ssl" / variant
    wanted = json.loads(json.dumps(scfg.to_dict()))
    done = model_dir / "config.json"
    if done.exists() and json.loads(done.read_text()).get("options") == wanted:
        return model_dir, json.loads(done.read_text())
    partial = model_dir.with_name(model_dir.name + ".partial")
    resume = (partial / "checkpoint.pt").exists()
    try:
        train_ssl(cat, model_dir, scfg, device=device, resume=resume, progress=progress)
    except Exception as e:  # an interrupted run with other options: start that variant over
        from simlabel.errors import InputError

        if not (resume and isinstance(e, InputError) and "other options" in str(e)):
            raise
        train_ssl(cat, model_dir, scfg, device=device, restart=True, progress=progress)
    return model_dir, json.loads(done.read_text())


def run_ssl_experiment(data: str | os.PathLike | None = None, config: SSLExperimentConfig | None = None, *,
                       out: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Train every variant, embed, probe; return the results (see the module docstring)."""
    from simlabel.encoders.base import resolve_device

    cfg = config or SSLExperimentConfig()
    device = resolve_device(cfg.device)
    exp = open_experiment(data, model=cfg.model, limit=cfg.limit, out=out, device=device, progress=progress)
    cat = with_products(exp.catalog, cfg)
    table = cat.table
    n_designs = int((table["design"].value_counts() >= 2).sum())
    results: dict = {"data": str(exp.root), "config": jsonable(dataclasses.asdict(cfg)), "variants": {},
                     "n_images": len(table), "n_design_groups": n_designs,
                     "n_grouped_images": int(table["design"].duplicated(keep=False).sum()),
                     "design_split": {"seed": cfg.design_seed, "train_groups": int(table.loc[table["design_split"] == "train", "design"].nunique()),
                                      "held_groups": int(table.loc[table["design_split"] == "held", "design"].nunique()),
                                      "held_images": int((table["design_split"] == "held").sum())}}
    embeddings: dict[str, Embeddings] = {}
    with task("experiment ssl", len(cfg.variants), unit="variants", enabled=progress) as bar:
        for variant in cfg.variants:
            if variant == "pretrained":
                emb, train_meta = exp.embeddings, None
            else:
                model_dir, train_meta = _train_variant(variant, cat, exp.run_dir, cfg, device, progress)
                enc = get_image_encoder(f"skill:{model_dir}", device="cpu")
                emb_dir = exp.run_dir / "ssl" / f"{variant}-{enc.version.split('/')[1]}.embeddings"
                embed(cat, emb_dir, image_encoder=enc, progress=progress, device="cpu")
                emb = load_embeddings(emb_dir)
            embeddings[variant] = emb
            res = evaluate_embeddings(emb, table, cfg, device=device)
            if train_meta is not None:
                hist = json.loads((exp.run_dir / "ssl" / variant / "history.json").read_text())
                res["training"] = {"steps": train_meta["steps"], "seconds": train_meta["seconds"],
                                   "images_per_s": train_meta["images_per_s"], "warnings": train_meta["warnings"],
                                   "n_failures": train_meta["n_failures"], "resolved": train_meta["resolved"],
                                   "curve": [{k: h[k] for k in ("step", "loss", "entropy", "kl_uniform", "center_norm")}
                                             for h in hist]}
            results["variants"][variant] = res
            bar.advance(1)
    results["neighbours"] = _neighbours(embeddings, table, cfg)
    return jsonable(results)


def _neighbours(embeddings: dict[str, Embeddings], table: pd.DataFrame, cfg: SSLExperimentConfig, n_queries: int = 6,
                k: int = 5) -> dict:
    """Top-k cosine neighbours of a few grouped products, per variant (for the page's image grid)."""
    grouped = table[table["design_split"] == "held"] if "design_split" in table.columns else table.iloc[:0]
    if grouped.empty:  # no colour variants in this catalog: any products will do
        grouped = table
    rng = np.random.default_rng(cfg.seed)
    firsts = grouped.drop_duplicates("design" if "design" in grouped.columns else "product")
    queries = firsts["id"].astype(str).to_numpy()[rng.permutation(len(firsts))[:n_queries]]
    from simlabel.graph import neighbours_for

    out = {}
    for variant, emb in embeddings.items():
        top = neighbours_for(emb, k, rows=emb.positions(queries), kind="flat").neighbors
        out[variant] = {q: emb.ids[row[row >= 0]].astype(str).tolist() for q, row in zip(queries, top)}
    return out


def _views_html(catalog: Catalog, cfg: dict, array_cell, n: int = 4) -> str:
    from simlabel.ssl.train import iter_views

    known = {f.name for f in dataclasses.fields(SSLExperimentConfig)}
    exp_cfg = SSLExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in known})
    catalog = with_products(catalog, exp_cfg, required=False)
    table = catalog.table
    scfg = variant_config("skill", exp_cfg)
    if exp_cfg.task_col not in table.columns:
        scfg = dataclasses.replace(scfg, task_col=None)
    rows = []
    for pid, views in iter_views(catalog, scfg, n=n):
        ptype = table.loc[table["id"].astype(str) == pid, exp_cfg.task_col].iloc[0] if scfg.task_col else ""
        cells = [array_cell(v, ("global " if i < 2 else "low-res ") + str(i + 1), 96) for i, v in enumerate(views)]
        rows.append(f"<div class='meta'>{pid} ({ptype})</div><div class='grid'>{''.join(cells)}</div>")
    return "".join(rows)


def probe_table(results: dict) -> pd.DataFrame:
    """Rows: variants; columns: (attribute, linear/non-linear, Acc/R@90/R@95) in %."""
    rows = {}
    for variant, res in results["variants"].items():
        row = {}
        for col, kinds in res["probes"].items():
            for kind, m in kinds.items():
                name = "linear" if kind == "linear" else "non-linear"
                for key, label in (("accuracy", "Acc"), ("r90", "R@90"), ("r95", "R@95")):
                    row[(col, name, label)] = 100 * m[key]
        rows[variant] = row
    df = pd.DataFrame(rows).T
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def colour_table(results: dict) -> pd.DataFrame:
    rows = []
    for variant, res in results["variants"].items():
        e = res["colour"]["entropy"]
        held = (res.get("design") or {}).get("held") or {}
        rows.append({"variant": variant, "design R@10 held-out %": 100 * held["recall"] if held.get("recall") is not None else np.nan,
                     "colour entropy": e["mean"], "sd": e["sd"],
                     "colour probe Acc %": 100 * res["colour"]["probe"]["accuracy"],
                     "design (article_type) linear Acc %": 100 * res["probes"].get("article_type", {}).get("linear", {}).get("accuracy", np.nan),
                     "products/s": res.get("training", {}).get("images_per_s", np.nan)})
    return pd.DataFrame(rows).set_index("variant")


def write_html(results: dict, path: str | os.PathLike, catalog: Catalog | None = None) -> Path:
    """The page: setup, the probe table, colour entropy and colour probe, training curves, and
    nearest-neighbour grids (pretrained against SkiLL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simlabel.report import Report, array_cell, figure_html, image_grid, scroll, setup_table, table_html

    cfg = results["config"]
    rep = Report("SkiLL: self-supervised, colour-agnostic design embeddings (paper 001)")
    rep.add("Setup", setup_table({
        "data": results["data"], "images": results["n_images"],
        "design groups (colour variants of one title)": f"{results['n_design_groups']} groups, {results['n_grouped_images']} images",
        "design split": (lambda d: f"seed {d['seed']}: {d['train_groups']} groups given to training as positives, "
                                   f"{d['held_groups']} held out ({d['held_images']} images, never given)")(
            results.get("design_split") or {"seed": "?", "train_groups": "?", "held_groups": "?", "held_images": "?"}),
        "budget per variant": f"{cfg['epochs']} epoch(s) x {cfg['steps_per_epoch'] or 'all'} steps of {cfg['batch_size']} products"
                              " (the whitening variants: no steps, one pass over each image and 2 views of it at 288 px)",
        "views": f"2 x {cfg['global_size']} px + {cfg['local_crops']} x {cfg['local_size']} px",
        "backbone": f"{cfg['backbone']}, last {cfg['train_blocks']} blocks trained (the recipe variants: their own, "
                    "simlabel.ssl.recipes)",
        "local space by": cfg["task_col"], "probes": ", ".join(cfg["probe_cols"]),
        "colour entropy": f"k-means k = {cfg['clusters']}, seeds {list(cfg['cluster_seeds'])}, size-weighted, nats",
    }))
    probes = probe_table(results)
    rep.add("Probes on frozen embeddings (%)", scroll(table_html(probes, "{:.1f}")),
            note="Linear: one dense layer; non-linear: one hidden layer of 512. R@90 / R@95: per class, the largest recall at a "
                 "threshold with precision >= 0.90 / 0.95 (0 when never reached), averaged over classes. Stratified 70/30 split.")
    rep.add_table("Design retrieval and colour invariance", colour_table(results), float_format="{:.3f}",
                  note="Design R@10: for each item of a held-out design group (never given to training), the share of its "
                       "group's items in other colours among its 10 nearest neighbours in the whole catalog, averaged; "
                       "what a shop uses SkiLL for. Colour entropy: mean entropy of base_colour inside k-means clusters, "
                       "weighted by cluster size; higher = clusters mix colours. The colour probe predicts base_colour: "
                       "lower = less colour in the embedding.")
    # a whitening fit takes no steps: it has no curve to draw
    trained = {v: r["training"] for v, r in results["variants"].items()
               if "training" in r and any(c.get("loss") is not None for c in r["training"]["curve"])}
    if trained:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        for v, t in trained.items():
            curve = pd.DataFrame(t["curve"]).apply(pd.to_numeric, errors="coerce")  # InfoNCE runs have no entropy
            window = max(1, len(curve) // 60)  # per-step values of small batches are noisy: a running mean
            smooth = curve.rolling(window, min_periods=1).mean()
            for ax, key in zip(axes, ("loss", "entropy", "center_norm")):
                ax.plot(curve["step"], smooth[key], label=v, lw=1.2)
        for ax, title in zip(axes, ("loss (running mean; DINO's, or InfoNCE's)", "teacher entropy (nats, DINO)",
                                    "centre norm (DINO)")):
            ax.set_title(title)
            ax.set_xlabel("step")
        axes[2].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
        fig.tight_layout()
        rep.add("Training curves", figure_html(fig), note="Collapse shows as the entropy pinned at log K (uniform) or near 0 "
                "with every image on one prototype; warnings, if any, are listed under each variant in the JSON.")
    if catalog is not None:
        rep.add("The views SkiLL trains on", _views_html(catalog, cfg, array_cell),
                note="Per product: the two global views (x1 from the image, x2 from another image of the same design when "
                     "there is one), then the low-resolution views, after pre-processing, the product type's local "
                     "augmentations and the colour-agnostic set; drawn as training step 0 draws them.")
    nn = results.get("neighbours", {})
    if nn and catalog is not None:
        paths = dict(zip(catalog.table["id"].astype(str), catalog.image_paths()))
        title = dict(zip(catalog.table["id"].astype(str), catalog.table.get("title", catalog.table["id"]).astype(str)))
        # the pretrained encoder against the SkiLL that ``ssl train`` makes by default, else the paper's
        shown = ([v for v in ("pretrained",) if v in nn] + [v for v in ("skill-white", "skill") if v in nn][:1]) or list(nn)[:2]
        body = []
        for q in nn[shown[0]]:
            body.append(f"<h3 style='font-size:1rem'>{title.get(q, q)}</h3>")
            for v in shown:
                items = [(paths.get(q), f"query {q}")] + [(paths.get(i), title.get(i, i)[:40]) for i in nn[v][q]]
                body.append(f"<div class='meta'>{v}</div>" + image_grid(items, size=96))
        rep.add("Nearest neighbours: pretrained against SkiLL", "".join(body),
                note="First image: the query (a product with colour variants); then its 5 nearest neighbours by cosine similarity.")
    return rep.write(path)
