"""Train SkiLL (paper 001): DINO self-distillation over the paper's augmentation space.

One step, for a batch of ``B`` products (:func:`train_ssl`)::

    views  = 2 global + c low-resolution views per product       (augment.make_views, eq. 1-2)
    h      = trunk(views)                                          (frozen, shared, ONNX Runtime on CPU)
    s      = head_s(top_s(h[all views]))                           (student: every view)
    t      = head_t(top_t(h[global views]))                        (teacher: the global views, no grad)
    loss   = dino_loss(s, t, centre, tau_s, tau_t(step))          (eq. 3-5, same-view pairs excluded)
    theta <- AdamW(theta, grad clipped per tensor)                 (last layer frozen at first)
    phi   <- m(step) phi + (1 - m(step)) theta                     (EMA, m: cosine 0.996 -> 1)
    c     <- 0.9 c + 0.1 mean(t)                                   (centring)

Output folder (written as one unit when training ends; ``OUT.partial/`` holds the run until
then, with a checkpoint every ``checkpoint_every`` steps and at every epoch's end)::

    OUT/config.json      every option, the catalog, the seed, what the encoder needs
    OUT/student.pt       student backbone + head state dicts
    OUT/teacher.pt       teacher backbone + head (the teacher's backbone is the embedding, as in DINO)
    OUT/backbone.onnx    the exported backbone, for ``simlabel embed --model skill:OUT``
    OUT/history.json     per-step loss, schedules and collapse monitors
    OUT/failures.csv     images that could not be read (id, image, reason)

``resume=True`` continues ``OUT.partial`` from its last checkpoint: the data order and every
augmentation draw are functions of (seed, epoch, step, sample), and the optimiser, EMA, centre
and step are restored, so the resumed run reaches the weights the uninterrupted one would.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from simlabel.catalog import Catalog, load_catalog
from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import ConfigError, InputError, SimlabelWarning
from simlabel.files import atomic_dir, atomic_path, atomic_write_json, exclusive, kill_point, run_record
from simlabel.images import ImageError, crop_to_product, load_image, resize_center_crop
from simlabel.progress import task
from simlabel.ssl.augment import LocalSpace, ViewConfig, global_ops, kornia_colour, make_views
from simlabel.ssl.backbones import BACKBONES, Backbone, OnnxTrunk, build_backbone, export_onnx, trunk_trains
from simlabel.ssl.contrastive import LinearProjector, info_nce_loss
from simlabel.ssl.dino import (
    DINOHead,
    cancel_last_layer_gradients,
    clip_gradients,
    collapse_monitors,
    cosine_schedule,
    dino_loss,
    ema_update,
    teacher_temperature_schedule,
    update_center,
)
from simlabel.ssl.distill import feature_distillation_loss
from simlabel.ssl.whitening import WhiteningProjector, WhiteningStats, learned_whitening, signed_power

__all__ = ["SSLConfig", "SSLResult", "SkillNetwork", "train_ssl"]

FORMAT = "simlabel.skill"
FORMAT_VERSION = 1


@dataclass
class SSLConfig:
    """Every option of a SkiLL / DINO run (saved in ``config.json``).

    CPU defaults are sized to fit a 2-core machine (``benchmarks/RESULTS.md`` §11): global views
    of 128 px and 4 views of 64 px, the last 2 EfficientNet blocks trainable, a 4,096-prototype
    head. The paper's resolutions are ``views.global_size=224, views.local_size=96``.
    """

    backbone: str = "efficientnet-lite0"
    #: trainable backbone blocks from the top (an int) or ``"all"``
    train_blocks: int | str = 2
    #: the ViT's shape (dim, depth, heads, patch) for ``backbone="vit-tiny"``
    vit: dict = field(default_factory=dict)
    views: ViewConfig = field(default_factory=lambda: ViewConfig(global_size=128, local_size=64, local_crops=4))
    #: YAML/JSON file of the local augmentation space (None: simlabel's fashion default)
    local_config: str | None = None
    #: catalog column naming each row's product type T_i (None: every row gets the default A_i)
    task_col: str | None = None
    #: catalog column grouping images of one product: eq. 1's positives (None: two views of one image)
    product_col: str | None = None
    epochs: int = 1
    #: steps per epoch (None: one pass over the catalog)
    steps_per_epoch: int | None = None
    batch_size: int = 16
    #: peak learning rate (AdamW), reached after the warm-up, then cosine to ``min_lr``; at 2e-4 the
    #: teacher's outputs stayed near uniform over a CPU-sized run of fashion-products (RESULTS.md §11)
    lr: float = 1e-3
    min_lr: float = 1e-6
    #: linear warm-up steps (None: 10% of the run)
    warmup_steps: int | None = None
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    out_dim: int = 4096
    head_hidden: int = 1024
    head_bottleneck: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    #: teacher-temperature warm-up steps (None: 30% of the run, DINO's 30 of 100 epochs)
    teacher_temp_warmup_steps: int | None = None
    center_momentum: float = 0.9
    clip_grad: float = 3.0
    #: steps the head's last layer stays frozen (None: the first epoch, at most 10% of the run)
    freeze_last_layer_steps: int | None = None
    #: ``global``: the teacher sees the global views, the student all (DINO, the paper's text);
    #: ``local``: the teacher sees the low-resolution views, the student the global ones (eq. 3 as printed)
    teacher_views: str = "global"
    #: eq. 5's sum as the ``mean`` over its terms (DINO) or the plain ``sum``
    reduction: str = "mean"
    seed: int = 0
    checkpoint_every: int = 50
    #: ``auto``: bf16 autocast where the device computes it natively (CUDA; AVX512-BF16 or AMX CPUs,
    #: measured 1.3x faster there, RESULTS.md §11), else fp32
    precision: str = "auto"
    #: frozen trunk through ``onnx`` Runtime or ``torch`` (``auto``: ONNX on CPU, torch on CUDA)
    trunk_backend: str = "auto"
    #: colour set in the decode threads with ``pillow`` or on the device batch with ``kornia``
    #: (``auto``: Pillow on CPU, kornia on CUDA)
    colour_backend: str = "auto"
    #: decoding threads (None: all cores)
    workers: int | None = None
    #: side of the images the exported encoder embeds (None: 224 for EfficientNet, the global size for a ViT)
    embed_size: int | None = None
    #: which network becomes the encoder: the ``teacher`` (DINO's evaluation choice), the ``student``, or the
    #: teacher's ``projection`` (the DINO head's MLP up to its bottleneck, on the frozen backbone: a colour-invariant
    #: projection trained on top of the pretrained encoder, :mod:`simlabel.ssl.recipes`)
    export: str = "teacher"
    #: weight of the distillation to the frozen pretrained encoder on the un-jittered view (``--keep``,
    #: :mod:`simlabel.ssl.distill`); 0: none
    keep: float = 0.0
    #: the loss: ``dino`` (self-distillation with centring, paper 001), ``infonce`` (SimCLR's contrastive loss
    #: between the two global views, and each low-resolution view against the second: :mod:`simlabel.ssl.contrastive`)
    #: or ``whitening`` (no steps: a map fitted in closed form on the frozen encoder, :mod:`simlabel.ssl.whitening`)
    objective: str = "dino"
    #: ``infonce``: its temperature
    nce_temp: float = 0.1
    #: what the loss trains on the backbone: DINO's ``dino-head`` (MLP, bottleneck, prototypes) or a ``linear``
    #: square map initialised to the identity (:class:`~simlabel.ssl.contrastive.LinearProjector`)
    projector: str = "dino-head"
    #: ``whitening``: augmented views per image, each paired with its un-jittered view (:mod:`simlabel.ssl.whitening`)
    pair_views: int = 2
    #: ``whitening``: the strongest directions of the view pairs' scatter removed outright (the colour subspace)
    nuisance_dims: int = 96
    #: ``whitening``: how far the matching pairs' scatter is pulled to a multiple of the identity
    shrinkage: float = 0.1
    #: ``whitening``: the signed power applied to the pooled features first (1: none)
    power: float = 0.5
    #: ``whitening``: the embedding's dimension (None: every direction left)
    whiten_dims: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.views, Mapping):
            self.views = ViewConfig(**self.views)
        one_of(self.backbone, BACKBONES, "backbone")
        if self.train_blocks != "all":
            positive_int(self.train_blocks, "train_blocks", minimum=0)
        for name in ("epochs", "batch_size", "out_dim", "head_hidden", "head_bottleneck", "head_layers", "checkpoint_every"):
            positive_int(getattr(self, name), name)
        positive_int(self.steps_per_epoch, "steps_per_epoch", allow_none=True)
        for name in ("warmup_steps", "teacher_temp_warmup_steps", "freeze_last_layer_steps"):
            positive_int(getattr(self, name), name, minimum=0, allow_none=True)
        for name in ("lr", "student_temp", "teacher_temp", "warmup_teacher_temp"):
            in_range(getattr(self, name), name, 0, math.inf, lo_open=True)
        in_range(self.min_lr, "min_lr", 0, self.lr)
        in_range(self.momentum_teacher, "momentum_teacher", 0, 1)
        in_range(self.center_momentum, "center_momentum", 0, 1)
        in_range(self.weight_decay, "weight_decay", 0)
        in_range(self.weight_decay_end, "weight_decay_end", 0)
        in_range(self.clip_grad, "clip_grad", 0)
        one_of(self.teacher_views, ("global", "local"), "teacher_views")
        one_of(self.reduction, ("mean", "sum"), "reduction")
        one_of(self.precision, ("auto", "fp32", "bf16"), "precision")
        one_of(self.trunk_backend, ("auto", "onnx", "torch"), "trunk_backend")
        one_of(self.colour_backend, ("auto", "pillow", "kornia"), "colour_backend")
        one_of(self.export, ("teacher", "student", "projection"), "export")
        in_range(self.keep, "keep", 0)
        one_of(self.objective, ("dino", "infonce", "whitening"), "objective")
        positive_int(self.pair_views, "pair_views")
        positive_int(self.nuisance_dims, "nuisance_dims", minimum=0)
        in_range(self.shrinkage, "shrinkage", 0, 1)
        in_range(self.power, "power", 0, 1, lo_open=True)
        positive_int(self.whiten_dims, "whiten_dims", allow_none=True)
        if self.objective == "whitening" and self.keep:
            raise ConfigError("objective='whitening' fits a map on the frozen encoder: `keep` has nothing to anchor")
        one_of(self.projector, ("dino-head", "linear"), "projector")
        in_range(self.nce_temp, "nce_temp", 0, math.inf, lo_open=True)
        if self.projector == "linear" and self.objective == "dino":
            raise ConfigError("the linear projector has no prototypes for DINO's loss: use objective='infonce'")
        if self.export == "projection" and self.keep:
            raise ConfigError("export='projection' trains the head on a frozen backbone: `keep` has nothing to anchor")
        positive_int(self.workers, "workers", allow_none=True)
        positive_int(self.embed_size, "embed_size", minimum=8, allow_none=True)
        if self.teacher_views == "local" and self.views.local_crops == 0:
            raise ConfigError("teacher_views='local' needs local_crops >= 1")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["views"] = self.views.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SSLConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown SSL options {sorted(unknown)}")
        d = dict(d)
        if "views" in d:
            d["views"] = ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["views"].items()})
        return cls(**d)


class SkillNetwork(nn.Module):
    """A backbone and its DINO head: ``forward(x) -> head(backbone(x))``."""

    def __init__(self, backbone: Backbone, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@dataclass
class SSLResult:
    """What :func:`train_ssl` made."""

    out: Path
    steps: int
    images: int
    seconds: float
    images_per_s: float
    history: list[dict]
    failures: list[dict]
    warnings: list[str]
    config: dict


# -- data ----------------------------------------------------------------------------------------


class _Samples:
    """The catalog as arrays: image paths, product types, and each product's other images."""

    def __init__(self, catalog: Catalog, cfg: SSLConfig) -> None:
        t = catalog.table
        for col, what in ((cfg.task_col, "`task_col`"), (cfg.product_col, "`product_col`")):
            if col is not None and col not in t.columns:
                where = catalog.path or catalog.root
                raise InputError(f"{where}: {what} {col!r} is not a column; columns are {', '.join(map(str, t.columns))}")
        if "image" not in t.columns:
            raise InputError(f"{catalog.path or catalog.root}: the catalog has no image column")
        self.ids = t["id"].astype(str).to_numpy()
        self.paths = catalog.image_paths()
        self.types = t[cfg.task_col].astype(str).to_numpy() if cfg.task_col else None
        if cfg.product_col:
            codes, _ = pd.factorize(t[cfg.product_col].astype(str))
            order = np.argsort(codes, kind="stable")
            counts = np.bincount(codes)
            starts = np.concatenate([[0], np.cumsum(counts)])
            self.order, self.starts, self.codes, self.counts = order, starts, codes, counts
        else:
            self.codes = None

    def __len__(self) -> int:
        return len(self.ids)

    def partner(self, i: int, rng: np.random.Generator) -> int | None:
        """Another image of row ``i``'s product, uniformly (None when the product has one image)."""
        if self.codes is None:
            return None
        c = self.codes[i]
        n = self.counts[c]
        if n < 2:
            return None
        members = self.order[self.starts[c]:self.starts[c] + n]
        others = members[members != i]
        return int(others[rng.integers(len(others))])


def _batch_rows(n: int, batch: int, seed: int, epoch: int, step_in_epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)
    start = (step_in_epoch * batch) % n
    idx = np.arange(start, start + batch) % n  # wraps when steps_per_epoch outruns the catalog
    return perm[idx]


def _sample_views(samples: _Samples, cfg: SSLConfig, space: LocalSpace, row: int, seed: int, epoch: int, step: int,
                  j: int, colour: bool) -> tuple[list[np.ndarray] | None, list[dict]]:
    rng = np.random.default_rng([seed, epoch, step, j])
    other = samples.partner(row, rng)
    draft = max(cfg.views.global_size, 64)
    failures = []
    try:
        first = load_image(samples.paths[row], draft_size=draft)
    except ImageError as e:
        return None, [{"id": samples.ids[row], "image": str(samples.paths[row]), "reason": e.reason}]
    second = None
    if other is not None:
        try:
            second = load_image(samples.paths[other], draft_size=draft)
        except ImageError as e:
            failures.append({"id": samples.ids[other], "image": str(samples.paths[other]), "reason": e.reason})
    ptype = samples.types[row] if samples.types is not None else None
    return make_views(first, second, ptype, cfg.views, space, rng, colour=colour, clean=cfg.keep > 0), failures


def _load_batch(pool: ThreadPoolExecutor, samples: _Samples, cfg: SSLConfig, space: LocalSpace, epoch: int,
                step_in_epoch: int, global_step: int, colour: bool) -> tuple[list[np.ndarray], list[dict]]:
    rows = _batch_rows(len(samples), cfg.batch_size, cfg.seed, epoch, step_in_epoch)
    results = list(pool.map(lambda a: _sample_views(samples, cfg, space, a[1], cfg.seed, epoch, global_step, a[0], colour),
                            enumerate(rows)))
    failures = [f for _, fs in results for f in fs]
    views = [v for v, _ in results if v is not None]
    if not views:
        return [], failures
    n_views = len(views[0])
    return [np.stack([v[k] for v in views]) for k in range(n_views)], failures


def _to_tensor(batch: np.ndarray, device: str) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> ``float (B, 3, H, W)`` in [0, 1] on the device."""
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)


# -- training ------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, params: list[nn.Parameter]) -> list[dict]:
    wanted = {id(p) for p in params}
    regular, plain = [], []
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        # DINO: no weight decay on biases and norms
        (plain if p.ndim <= 1 or name.endswith(".bias") else regular).append(p)
    return [{"params": regular}, {"params": plain, "weight_decay": 0.0}]


def _resolve(cfg: SSLConfig, device: str) -> dict:
    from simlabel.encoders.base import resolve_precision

    precision = resolve_precision(cfg.precision, device)
    trunk = cfg.trunk_backend if cfg.trunk_backend != "auto" else ("torch" if device == "cuda" else "onnx")
    colour = cfg.colour_backend if cfg.colour_backend != "auto" else ("kornia" if device == "cuda" else "pillow")
    return {"precision": precision, "trunk_backend": trunk, "colour_backend": colour}


def _schedules(cfg: SSLConfig, total: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.1 * total)
    temp_warm = cfg.teacher_temp_warmup_steps if cfg.teacher_temp_warmup_steps is not None else int(0.3 * total)
    return {
        "lr": cosine_schedule(cfg.lr, cfg.min_lr, total, warmup_steps=warmup),
        "wd": cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total),
        "momentum": cosine_schedule(cfg.momentum_teacher, 1.0, total),
        "teacher_temp": teacher_temperature_schedule(cfg.warmup_teacher_temp, cfg.teacher_temp, total, temp_warm),
        "freeze_last": np.array(cfg.freeze_last_layer_steps if cfg.freeze_last_layer_steps is not None
                                else min(steps_per_epoch, int(0.1 * total))),
    }


def _build(cfg: SSLConfig, device: str) -> tuple[SkillNetwork, SkillNetwork]:
    with torch.random.fork_rng(devices=[]):  # the head's initialisation, without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg.backbone, train_blocks=cfg.train_blocks, image_size=cfg.views.global_size, vit=cfg.vit)
        if cfg.projector == "linear":
            head: nn.Module = LinearProjector(backbone.dim)
        else:
            head = DINOHead(backbone.dim, cfg.out_dim, hidden_dim=cfg.head_hidden, bottleneck_dim=cfg.head_bottleneck,
                            n_layers=cfg.head_layers, norm_last_layer=cfg.norm_last_layer)
    if cfg.export == "projection":  # the pretrained backbone stays as it is: only the projection (head) trains
        for p in backbone.parameters():
            p.requires_grad_(False)
    student = SkillNetwork(backbone, head).to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    kill_point("ssl:checkpoint")


def _catalog_of(catalog: str | os.PathLike | Catalog) -> Catalog:
    if isinstance(catalog, Catalog):
        return catalog
    return load_catalog(catalog)


def _monitor_warnings(history: list[dict], log_k: float) -> list[str]:
    late = [h for h in history[len(history) // 2:] if h.get("entropy") is not None]
    if not late:
        return []
    ent = float(np.mean([h["entropy"] for h in late]))
    div = float(np.mean([h["diversity"] for h in late]))
    out = []
    if ent > 0.97 * log_k:
        out.append(f"training collapsed to uniform outputs: teacher entropy {ent:.2f} of log K = {log_k:.2f} "
                   "over the second half; try a lower teacher temperature or a larger centre momentum")
    if div < 0.1:
        out.append(f"training collapsed to one prototype: the teacher sends the images of a batch to {div:.0%} distinct "
                   "outputs; try a higher teacher temperature or more steps of warm-up")
    return out


def train_ssl(catalog: str | os.PathLike | Catalog, out: str | os.PathLike, config: SSLConfig | None = None, *,
              device: str = "auto", resume: bool = False, restart: bool = False, progress: bool = True,
              max_steps: int | None = None) -> SSLResult:
    """Train a SkiLL (or, with its options, vanilla DINO) model on a catalog's images.

    Parameters
    ----------
    catalog
        a catalog file/folder, or a loaded :class:`~simlabel.catalog.Catalog`.
    out
        the model folder to write (see the module docstring).
    config
        the run's options (:class:`SSLConfig`).
    device
        ``cpu``, ``cuda`` or ``auto``.
    resume
        continue ``OUT.partial`` from its last checkpoint.
    restart
        discard an interrupted run in ``OUT.partial`` and start over.
    max_steps
        stop (with a checkpoint, without writing ``OUT``) after this many steps in total: a
        run split across calls, each with ``resume=True``.

    Returns
    -------
    SSLResult
    """
    from simlabel.encoders.base import resolve_device

    cfg = config or SSLConfig()
    device = resolve_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; `out` takes a model folder")
    partial = _partial_dir(out)
    ckpt_path = partial / "checkpoint.pt"
    with exclusive(out):
        if resume and not ckpt_path.exists():
            raise InputError(f"`resume`: {partial} holds no checkpoint to resume from"
                             + (f"; {out} is already complete" if (out / "config.json").exists() else ""))
        if ckpt_path.exists() and not resume:
            if not restart:
                step = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("step", 0)
                raise InputError(f"{partial} holds an interrupted run at step {step}: pass `resume` to continue it "
                                 "or `restart` to discard it")
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        if cfg.objective == "whitening":
            return _fit_whitening(_catalog_of(catalog), out, partial, ckpt_path, cfg, device, resume, progress,
                                  max_steps)
        return _train(_catalog_of(catalog), out, partial, ckpt_path, cfg, device, resume, progress, max_steps)


def _train(cat: Catalog, out: Path, partial: Path, ckpt_path: Path, cfg: SSLConfig, device: str, resume: bool,
           progress: bool, max_steps: int | None) -> SSLResult:
    samples = _Samples(cat, cfg)
    space = LocalSpace.load(cfg.local_config)
    res = _resolve(cfg, device)
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(samples) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = _schedules(cfg, total, steps_per_epoch)

    student, teacher = _build(cfg, device)
    # the distillation's target: the backbone as built, i.e. the pretrained one, frozen (before a resume loads
    # the trained weights into the student)
    anchor = None
    if cfg.keep > 0:
        anchor = copy.deepcopy(student.backbone).eval()
        for p in anchor.parameters():
            p.requires_grad_(False)
    params = student.backbone.trainable_parameters() + [p for p in student.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(student, params), lr=cfg.lr, weight_decay=cfg.weight_decay)
    center = torch.zeros(1, cfg.out_dim, device=device)
    history: list[dict] = []
    failures: list[dict] = []
    step = 0
    seconds_before = 0.0
    if resume:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state["config"] != json.loads(json.dumps(cfg.to_dict())):
            raise InputError(f"{ckpt_path}: the checkpoint was made with other options; resume with the same ones "
                             "or pass `restart`")
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        center.copy_(state["center"])
        history, failures, step = state["history"], state["failures"], state["step"]
        seconds_before = state.get("seconds", 0.0)
    frozen_trunk = not trunk_trains(student.backbone)
    trunk = student.backbone.trunk
    if frozen_trunk and res["trunk_backend"] == "onnx" and len(list(trunk.parameters())):
        trunk = OnnxTrunk(trunk, partial / "trunk.onnx", threads=cfg.workers)
    n_global = 2
    n_local = cfg.views.local_crops
    mean = torch.tensor(student.backbone.normalization[0], device=device).view(1, 3, 1, 1)
    std = torch.tensor(student.backbone.normalization[1], device=device).view(1, 3, 1, 1)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=res["precision"] == "bf16")
    colour_on_device = res["colour_backend"] == "kornia"
    log_k = math.log(cfg.out_dim)
    workers = cfg.workers or os.cpu_count() or 1
    stop_at = total if max_steps is None else min(total, max_steps)

    def state_dict() -> dict:
        return {"step": step, "student": student.state_dict(), "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(), "center": center.detach().cpu(), "history": history,
                "failures": failures, "config": json.loads(json.dumps(cfg.to_dict())),
                "seconds": seconds_before + (time.perf_counter() - t0)}

    n_augmented = 2 + cfg.views.local_crops  # then, with keep, the un-jittered view

    def prepare(batch: list[np.ndarray], seed: int) -> list[torch.Tensor]:
        xs = [_to_tensor(b, device) for b in batch]
        if colour_on_device:  # never on the un-jittered view
            xs = [kornia_colour(x, cfg.views, generator_seed=seed + k) if k < n_augmented else x for k, x in enumerate(xs)]
        return [(x - mean) / std for x in xs]

    t0 = time.perf_counter()
    images = 0
    student.train()
    teacher.train()
    # per-sample view making in ``pool``; the next batch is assembled by ``prefetch`` while this one trains
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as prefetch, \
            task("ssl train", total, unit="steps", completed=step, enabled=progress) as bar:
        def fetch(s: int):
            e, k = divmod(s, steps_per_epoch)
            return prefetch.submit(_load_batch, pool, samples, cfg, space, e, k, s, not colour_on_device)

        pending = fetch(step) if step < stop_at else None
        while step < stop_at:
            batch, bad = pending.result()
            pending = fetch(step + 1) if step + 1 < stop_at else None
            failures.extend(bad)
            if batch:
                xs = prepare(batch, cfg.seed * 1_000_003 + step * 97)
                b = xs[0].shape[0]
                lr, wd = float(sched["lr"][step]), float(sched["wd"][step])
                for i, g in enumerate(optimizer.param_groups):
                    g["lr"] = lr
                    if i == 0:
                        g["weight_decay"] = wd
                clean = xs[n_augmented] if anchor is not None else None
                globals_ = torch.cat(xs[:n_global])
                locals_ = torch.cat(xs[n_global:n_augmented]) if n_local else None
                keep_loss = None
                with amp:
                    if frozen_trunk:
                        with torch.no_grad():
                            hg = trunk(globals_).to(device)
                            hl = trunk(locals_).to(device) if locals_ is not None else None
                            hc = trunk(clean).to(device) if clean is not None else None
                        s_global = student.head(student.backbone.top(hg))
                        s_local = student.head(student.backbone.top(hl)) if hl is not None else None
                        with torch.no_grad():
                            t_in = hg if cfg.teacher_views == "global" else hl
                            t_out = teacher.head(teacher.backbone.top(t_in))
                        if hc is not None:
                            with torch.no_grad():
                                target = anchor.top(hc)
                            keep_loss = feature_distillation_loss(student.backbone.top(hc), target)
                    else:
                        s_global = student(globals_)
                        s_local = student(locals_) if locals_ is not None else None
                        with torch.no_grad():
                            t_out = teacher(globals_ if cfg.teacher_views == "global" else locals_)
                        if clean is not None:
                            with torch.no_grad():
                                target = anchor(clean)
                            keep_loss = feature_distillation_loss(student.backbone(clean), target)
                temp = float(sched["teacher_temp"][step])
                if cfg.objective == "infonce":
                    # the two global views of each product, then each low-resolution view against the second
                    z1, z2 = s_global[:b], s_global[b:2 * b]
                    pairs = [(z1, z2)] + [(s_local[k * b:(k + 1) * b], z2) for k in range(n_local)] if s_local is not None \
                        else [(z1, z2)]
                    loss = sum(info_nce_loss(x, y, cfg.nce_temp) for x, y in pairs) / len(pairs)
                else:
                    if cfg.teacher_views == "global":
                        s_out = torch.cat([s_global] + ([s_local] if s_local is not None else []))
                        n_s, n_t, shared = n_global + n_local, n_global, n_global
                    else:
                        s_out, n_s, n_t, shared = s_global, n_global, n_local, 0
                    loss = dino_loss(s_out, t_out, center, n_student_views=n_s, n_teacher_views=n_t,
                                     student_temp=cfg.student_temp, teacher_temp=temp, shared_views=shared,
                                     reduction=cfg.reduction)
                dino_part = float(loss.detach())
                if keep_loss is not None:
                    loss = loss + cfg.keep * keep_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss is {float(loss)} at step {step}: lower `lr`")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_gradients(student, cfg.clip_grad)
                if step < int(sched["freeze_last"]) and isinstance(student.head, DINOHead):
                    cancel_last_layer_gradients(student.head)
                optimizer.step()
                ema_update(teacher, student, float(sched["momentum"][step]))
                if cfg.objective == "dino":
                    mon = collapse_monitors(t_out, center, temp)
                    update_center(center, t_out, cfg.center_momentum)
                    # share of distinct prototypes among the teacher's choices: 1/rows when all agree
                    diversity = float(torch.unique(t_out.argmax(-1)).numel()) / t_out.shape[0]
                else:  # no prototypes, no centre: nothing of DINO's to watch
                    mon, diversity = {"entropy": None, "kl_uniform": None, "center_norm": None}, None
                images += b
                elapsed = seconds_before + time.perf_counter() - t0
                history.append({"step": step, "epoch": step // steps_per_epoch, "loss": loss.item(), "lr": lr,
                                "momentum": float(sched["momentum"][step]), "teacher_temp": temp,
                                "entropy": mon["entropy"], "kl_uniform": mon["kl_uniform"],
                                "center_norm": mon["center_norm"], "diversity": diversity, "batch": b,
                                "seconds": elapsed, "dino_loss": dino_part,
                                **({"keep_loss": float(keep_loss.detach())} if keep_loss is not None else {})})
            step += 1
            rate = images / max(time.perf_counter() - t0, 1e-9)
            last = history[-1] if history else {}
            nan = float("nan")
            bar.advance(1, loss=f"{last.get('loss', nan):.3f}", **{"products/s": f"{rate:.1f}"},
                        H=f"{last.get('entropy') if last.get('entropy') is not None else nan:.2f}",
                        KL=f"{last.get('kl_uniform') if last.get('kl_uniform') is not None else nan:.2f}",
                        c=f"{last.get('center_norm') if last.get('center_norm') is not None else nan:.2f}")
            if step % cfg.checkpoint_every == 0 or step % steps_per_epoch == 0 or step == stop_at:
                _save_checkpoint(ckpt_path, state_dict())
    seconds = seconds_before + time.perf_counter() - t0
    if step < total:  # a split run: the checkpoint holds it
        return SSLResult(partial, step, images, seconds, images / max(time.perf_counter() - t0, 1e-9), history,
                         failures, [], cfg.to_dict())
    messages = _monitor_warnings(history, log_k)
    for m in messages:
        warnings.warn(m, SimlabelWarning, stacklevel=2)
    n_images = int(sum(h["batch"] for h in history))
    ips = n_images / max(seconds, 1e-9)
    export_net = teacher if cfg.export == "teacher" else student
    projector = copy.deepcopy(teacher.head.mlp).cpu().float().eval() if cfg.export == "projection" else None
    exported = _Exported(copy.deepcopy(export_net.backbone).cpu().float().eval(), projector)
    _write_model(out, partial, cat, cfg, res, exported, {"student.pt": student.state_dict(), "teacher.pt": teacher.state_dict()},
                 history, failures, messages, seconds, ips)
    return SSLResult(out, step, n_images, seconds, ips, history, failures, messages, cfg.to_dict())


def _embed_size(cfg: SSLConfig) -> int:
    return cfg.embed_size or (224 if cfg.backbone == "efficientnet-lite0" else cfg.views.global_size)


def _write_model(out: Path, partial: Path, cat: Catalog, cfg: SSLConfig, res: dict, exported: _Exported,
                 states: dict[str, dict], history: list[dict], failures: list[dict], messages: list[str],
                 seconds: float, ips: float) -> None:
    """Write the model folder (module docstring) as one unit: ``states`` (file name -> state dict) and the
    exported encoder."""
    embed_size = _embed_size(cfg)
    backbone = exported.backbone
    seen = {}
    for f in failures:
        seen.setdefault(f["id"], f)
    with atomic_dir(out) as tmp:
        for name, state in states.items():
            torch.save(state, tmp / name)
        export_onnx(exported, tmp / "backbone.onnx", image_size=embed_size)
        atomic_write_json(tmp / "history.json", history)
        pd.DataFrame(list(seen.values()), columns=["id", "image", "reason"]).to_csv(tmp / "failures.csv", index=False)
        atomic_write_json(tmp / "config.json", {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "options": cfg.to_dict(), "resolved": res,
            "catalog": str(cat.path or cat.root), "n_catalog_rows": len(cat), "seed": cfg.seed,
            "encoder": {"dim": exported.dim, "image_size": embed_size, "mean": list(backbone.normalization[0]),
                        "std": list(backbone.normalization[1]), "preprocess": cfg.views.preprocess,
                        "network": "whitening" if cfg.objective == "whitening" else cfg.export,
                        "backbone": cfg.backbone},
            "steps": len(history), "seconds": seconds, "images_per_s": ips, "n_failures": len(seen),
            "warnings": messages, "run": run_record(),
        })
    shutil.rmtree(partial, ignore_errors=True)


def _pair_views(samples: _Samples, cfg: SSLConfig, row: int, size: int) -> tuple[list[np.ndarray] | None, list[dict]]:
    """Row ``row``'s un-jittered view, then ``pair_views`` views of it through the colour-agnostic set (flip, jitter,
    grey, blur, solarize at the view config's probabilities), as ``uint8 (size, size, 3)``."""
    rng = np.random.default_rng([cfg.seed, row, 0x3417E])
    try:
        image = load_image(samples.paths[row], draft_size=size)
    except ImageError as e:
        return None, [{"id": samples.ids[row], "image": str(samples.paths[row]), "reason": e.reason}]
    if cfg.views.preprocess == "product-crop":
        image = crop_to_product(image)
    clean = resize_center_crop(image, size)
    views = [clean] + [global_ops(clean, cfg.views, rng) for _ in range(cfg.pair_views)]
    return [np.asarray(v.convert("RGB"), dtype=np.uint8) for v in views], []


def _fit_whitening(cat: Catalog, out: Path, partial: Path, ckpt_path: Path, cfg: SSLConfig, device: str, resume: bool,
                   progress: bool, max_steps: int | None) -> SSLResult:
    """The ``whitening`` recipe: one pass of the frozen encoder over every image and its view pairs, in product order,
    summed into :class:`~simlabel.ssl.whitening.WhiteningStats`; then the closed-form map. A step is a batch of
    rows; the sums are checkpointed like training's steps, so a killed fit resumes where it stopped."""
    samples = _Samples(cat, cfg)
    res = _resolve(cfg, device)
    size = _embed_size(cfg)
    # rows of one product consecutive, so each group's mean closes as its last row passes
    order = samples.order if samples.codes is not None else np.arange(len(samples))
    codes = samples.codes[order] if samples.codes is not None else None
    total = max(1, math.ceil(len(samples) / cfg.batch_size))
    stop_at = total if max_steps is None else min(total, max_steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg.backbone, train_blocks=0, image_size=size, vit=cfg.vit).eval()
    stats = WhiteningStats(backbone.dim)
    history: list[dict] = []
    failures: list[dict] = []
    step, seconds_before = 0, 0.0
    wanted = json.loads(json.dumps(cfg.to_dict()))
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["config"] != wanted:
            raise InputError(f"{ckpt_path}: the checkpoint was made with other options; resume with the same ones "
                             "or pass `restart`")
        stats = WhiteningStats.from_state(state["stats"])
        history, failures, step = state["history"], state["failures"], state["step"]
        seconds_before = state.get("seconds", 0.0)
    if res["trunk_backend"] == "onnx":
        net = OnnxTrunk(backbone, partial / "encoder.onnx", threads=cfg.workers)
    else:
        net = backbone.to(device)
    mean = torch.tensor(backbone.normalization[0], device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.normalization[1], device=device).view(1, 3, 1, 1)
    workers = cfg.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    images = 0

    def load(s: int) -> tuple[np.ndarray, list, list[dict]]:
        rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        got = list(pool.map(lambda r: _pair_views(samples, cfg, int(r), size), rows))
        keep = np.array([v is not None for v, _ in got], dtype=bool)
        return keep, [v for v, _ in got if v is not None], [f for _, fs in got for f in fs]

    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as prefetch, \
            task("ssl fit", total, unit="steps", completed=step, enabled=progress) as bar:
        pending = prefetch.submit(load, step) if step < stop_at else None
        while step < stop_at:
            keep, views, bad = pending.result()
            pending = prefetch.submit(load, step + 1) if step + 1 < stop_at else None
            failures.extend(bad)
            if views:
                m, v = len(views), len(views[0])
                x = _to_tensor(np.stack([a for vs in views for a in vs]), device)
                with torch.no_grad():
                    f = net((x - mean) / std).float().cpu().numpy().astype(np.float64)
                f = signed_power(f, cfg.power).reshape(m, v, -1)
                block_codes = codes[step * cfg.batch_size:(step + 1) * cfg.batch_size][keep] if codes is not None else None
                stats.add(f[:, 0], f[:, 1:], block_codes)
                images += m
            step += 1
            elapsed = seconds_before + time.perf_counter() - t0
            history.append({"step": step - 1, "batch": len(views), "seconds": elapsed, "loss": None, "entropy": None,
                            "kl_uniform": None, "center_norm": None})
            bar.advance(1, **{"images/s": f"{images / max(time.perf_counter() - t0, 1e-9):.1f}"})
            if step % cfg.checkpoint_every == 0 or step == stop_at:
                _save_checkpoint(ckpt_path, {"step": step, "stats": stats.state_dict(), "history": history,
                                             "failures": failures, "config": wanted,
                                             "seconds": seconds_before + time.perf_counter() - t0})
    seconds = seconds_before + time.perf_counter() - t0
    if step < total:
        return SSLResult(partial, step, images, seconds, images / max(time.perf_counter() - t0, 1e-9), history,
                         failures, [], cfg.to_dict())
    stats.finish()
    mu, data, same, view_cov = stats.covariances()
    weight = learned_whitening(mu, data, same, view_cov, shrinkage=cfg.shrinkage, nuisance_dims=cfg.nuisance_dims,
                               dims=cfg.whiten_dims)
    exported = _Exported(backbone.cpu().float().eval(), WhiteningProjector(mu, weight, cfg.power))
    fitted = {"mean": mu, "weight": weight, "power": cfg.power, "n_images": stats.n, "n_view_pairs": stats.n_views,
              "n_grouped_images": stats.n_grouped}
    n_images = int(sum(h["batch"] for h in history))
    ips = n_images / max(seconds, 1e-9)
    _write_model(out, partial, cat, cfg, res, exported, {"whitening.pt": fitted}, history, failures, [], seconds, ips)
    return SSLResult(out, step, n_images, seconds, ips, history, failures, [], cfg.to_dict())


class _Exported(nn.Module):
    """The backbone as the encoder runs it: features (or, with a projector, their projection), L2-normalised."""

    def __init__(self, backbone: Backbone, projector: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector
        last = [m for m in projector.modules() if isinstance(m, nn.Linear)][-1] if projector is not None else None
        self.dim = int(last.out_features) if last is not None else int(backbone.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.projector is not None:
            f = self.projector(f)
        return torch.nn.functional.normalize(f, dim=-1)


def read_config(model_dir: str | os.PathLike) -> dict:
    """A trained model's ``config.json`` (checked to be simlabel's)."""
    from simlabel.files import read_json

    p = Path(model_dir)
    meta = read_json(p / "config.json", "SkiLL model config")
    if meta.get("format") != FORMAT:
        raise InputError(f"{p}: not a SkiLL model folder (config.json format {meta.get('format')!r})")
    return meta


def iter_views(catalog: str | os.PathLike | Catalog, config: SSLConfig | None = None, *, n: int = 8,
               epoch: int = 0, step: int = 0) -> Iterator[tuple[str, list[np.ndarray]]]:
    """The views training would make for the first ``n`` samples of a step (for pages and tests)."""
    cfg = config or SSLConfig()
    cat = _catalog_of(catalog)
    samples = _Samples(cat, cfg)
    space = LocalSpace.load(cfg.local_config)
    rows = _batch_rows(len(samples), cfg.batch_size, cfg.seed, epoch, step)[:n]
    for j, row in enumerate(rows):
        views, _ = _sample_views(samples, cfg, space, int(row), cfg.seed, epoch, step, j, True)
        if views is not None:
            yield str(samples.ids[row]), views
