"""``simlabel ssl train``: SkiLL / DINO self-supervised design embeddings (paper 001)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simlabel.cli._common import command, default, device_option, progress_option, say
from simlabel.ssl.augment import ViewConfig
from simlabel.ssl.recipes import DEFAULT_RECIPE, RECIPES, recipe_options
from simlabel.ssl.train import SSLConfig

RECIPE_HELP = [f"{name} ({', '.join(f'{k}={v}' for k, v in opts.items()) or 'the paper as printed'})"
               for name, opts in RECIPES.items()]

ssl_app = typer.Typer(help="Self-supervised, colour-agnostic design embeddings (SkiLL, paper 001): ssl train.", no_args_is_help=True)


def _blocks(text: str) -> int | str:
    return "all" if text == "all" else int(text)


@command(ssl_app, "train")
def ssl_train(
    data: Path = typer.Option(..., "--data", help="Catalog file or folder (images; --task-col and --product-col columns)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder: weights, config.json, backbone.onnx (then: simlabel embed --model skill:OUT)."),
    task_col: Optional[str] = typer.Option(None, "--task-col", help="Column naming each row's product type T_i: picks its local augmentations (e.g. sub_category)."),
    product_col: Optional[str] = typer.Option(None, "--product-col", help="Column grouping images of one product: positives are two different images of it (eq. 1)."),
    design_from: Optional[str] = typer.Option(None, "--design-from", help="TITLE_COL,COLOUR_COL: derive the product column from colour variants of one title (design_groups), e.g. title,base_colour."),
    local_config: Optional[Path] = typer.Option(None, "--local-config", help="YAML/JSON file of the local augmentation space per type (default: simlabel's for fashion sub-categories)."),
    backbone: str = typer.Option(default(SSLConfig, "backbone"), "--backbone", help="efficientnet-lite0 (pretrained, the default encoder) or vit-tiny (random init)."),
    recipe: str = typer.Option(DEFAULT_RECIPE, "--recipe", help="How the encoder trains (simlabel.ssl.recipes): " + "; ".join(RECIPE_HELP) + ". --train-blocks, --lr, --keep, --batch-size, --checkpoint-every and --embed-size override it."),
    train_blocks: Optional[str] = typer.Option(None, "--train-blocks", help="Backbone blocks trained, from the top, or 'all'; the frozen rest runs through ONNX Runtime on CPU (default: the recipe's)."),
    keep: Optional[float] = typer.Option(None, "--keep", help="Weight of the distillation to the frozen pretrained encoder on the un-jittered view (default: the recipe's; 0: none)."),
    epochs: int = typer.Option(default(SSLConfig, "epochs"), "--epochs"),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Steps per epoch (default: one pass over the catalog)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Products per step (default: the recipe's, else 16)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (AdamW; warm-up then cosine; default: the recipe's)."),
    global_size: Optional[int] = typer.Option(None, "--global-size", help="Side of the 2 global views (default: the paper's 224 on CUDA, 128 on CPU)."),
    local_size: Optional[int] = typer.Option(None, "--local-size", help="Side of the low-resolution views (default: the paper's 96 on CUDA, 64 on CPU)."),
    local_crops: Optional[int] = typer.Option(None, "--local-crops", help="Number of low-resolution views c (default: 6 on CUDA, 4 on CPU)."),
    p_gray: float = typer.Option(default(ViewConfig, "p_gray"), "--p-gray", help="p1: RandomGray probability."),
    p_jitter: float = typer.Option(default(ViewConfig, "p_jitter"), "--p-jitter", help="p2: ColorJitter probability."),
    p_blur: float = typer.Option(default(ViewConfig, "p_blur"), "--p-blur", help="p3: GaussianBlur probability."),
    preprocess: str = typer.Option(default(ViewConfig, "preprocess"), "--preprocess", help="product-crop (crop to the product on its white background) or none (SkiLL \\ H)."),
    no_local: bool = typer.Option(False, "--no-local", help="No local augmentations (SkiLL \\ L)."),
    dino: bool = typer.Option(False, "--dino", help="Vanilla DINO's augmentations (grey 0.2, jitter 0.8, solarize 0.2; no local space, no pre-processing)."),
    teacher_views: str = typer.Option(default(SSLConfig, "teacher_views"), "--teacher-views", help="global: the teacher sees the global views (DINO, the paper's text); local: eq. 3 as printed."),
    out_dim: int = typer.Option(default(SSLConfig, "out_dim"), "--out-dim", help="Prototypes K of the DINO head."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints (and one at every epoch's end; default: the recipe's, else 50)."),
    embed_size: Optional[int] = typer.Option(None, "--embed-size", help="Side of the images the model embeds (default: the recipe's; else 224 for EfficientNet)."),
    precision: str = typer.Option(default(SSLConfig, "precision"), "--precision", help="auto (bf16 autocast where the device computes it natively: CUDA, AVX512-BF16 or AMX CPUs; else fp32), fp32 or bf16."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding threads (default: all cores)."),
    seed: int = typer.Option(default(SSLConfig, "seed"), "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT.partial from its last checkpoint."),
    restart: bool = typer.Option(False, "--restart", help="Discard an interrupted run in OUT.partial and start over."),
    device: str = device_option(),
    progress: bool = progress_option(),
) -> None:
    """Train SkiLL (or vanilla DINO with --dino) design embeddings: by default (--recipe whitening) a colour-invariant map fitted on the frozen pretrained encoder from SkiLL's views and the product groups; the other recipes fine-tune a student and its EMA teacher over the global and per-type local augmentations.

    For the training recipes the bar shows the loss, products/s and the collapse monitors (H: teacher entropy, KL: KL(mean teacher || uniform), c: centre norm); the command warns when training collapses.

    Cost on 2 cores (RESULTS.md §11c). whitening (the default): one pass of the encoder over each image and 2 views of it at 288 px, about 10 minutes for fashion-products' 9,583 images on the AMD EPYC kind (the same work on any CPU: fp32 ONNX Runtime, no training). The fine-tuning recipes at the CPU defaults (2 x 128 px + 4 x 64 px over an ONNX trunk), measured with AVX512-BF16: gentle 59 products/s, paper 52, keep 35, projection 77, a pass over fashion-products 2.5-4.5 min; on an AVX2-only CPU (fp32) about 21 products/s (8 min a pass). The paper's 224/96 px with 6 views cost about 3x more; a GPU runs them.

    Examples:
      simlabel ssl train --data ../shared/datasets/fashion-products --task-col sub_category --design-from title,base_colour --out skill/
      simlabel embed ../shared/datasets/fashion-products --model skill:skill/ --out emb-skill/
    """
    from simlabel.encoders.base import resolve_device
    from simlabel.ssl.train import train_ssl

    device = resolve_device(device)
    paper = device == "cuda"  # the paper's resolutions where there is a GPU to run them
    views_kw = dict(global_size=global_size or (224 if paper else 128), local_size=local_size or (96 if paper else 64),
                    local_crops=local_crops if local_crops is not None else (6 if paper else 4))
    catalog = data
    if design_from:
        from simlabel.catalog import design_groups, load_catalog
        from simlabel.errors import InputError

        cols = [c.strip() for c in design_from.split(",")]
        if len(cols) != 2 or not all(cols):
            raise InputError(f"--design-from takes TITLE_COL,COLOUR_COL; got {design_from!r}")
        catalog = load_catalog(data)
        if product_col is None:
            product_col = "product"
        catalog.table[product_col] = design_groups(catalog, cols[0], cols[1]).to_numpy()
    if dino:
        views = ViewConfig.dino(**views_kw)
    else:
        views = ViewConfig(**views_kw, p_gray=p_gray, p_jitter=p_jitter, p_blur=p_blur, preprocess=preprocess,
                           use_local_space=not no_local)
    options = recipe_options(recipe)
    for name, value in (("train_blocks", _blocks(train_blocks) if train_blocks is not None else None), ("lr", lr),
                        ("keep", keep), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                        ("embed_size", embed_size)):
        if value is not None:
            options[name] = value
    cfg = SSLConfig(backbone=backbone, views=views,
                    local_config=str(local_config) if local_config else None, task_col=task_col, product_col=product_col,
                    epochs=epochs, steps_per_epoch=steps_per_epoch, out_dim=out_dim,
                    teacher_views=teacher_views, precision=precision, workers=workers,
                    seed=seed, **options)
    res = train_ssl(catalog, out, cfg, device=device, resume=resume, restart=restart)
    if cfg.objective == "whitening":
        say(f"fitted the whitening on {res.images:,} images and {cfg.pair_views} views of each in {res.seconds:.0f} s "
            f"({res.images_per_s:.1f} images/s)"
            + (f"; {len(res.failures)} unreadable image(s) listed in {res.out / 'failures.csv'}" if res.failures else "")
            + f" -> {res.out}")
        say(f"embed with it: simlabel embed {data} --model skill:{res.out} --out EMB_DIR")
        return
    last = res.history[-1] if res.history else {}
    say(f"{res.steps} steps, {res.images:,} products in {res.seconds:.0f} s ({res.images_per_s:.1f}/s); final loss "
        f"{last.get('loss', float('nan')):.3f}, teacher entropy {last.get('entropy', float('nan')):.2f}"
        + (f"; {len(res.failures)} unreadable image(s) listed in {res.out / 'failures.csv'}" if res.failures else "")
        + f" -> {res.out}")
    say(f"embed with it: simlabel embed {data} --model skill:{res.out} --out EMB_DIR")
