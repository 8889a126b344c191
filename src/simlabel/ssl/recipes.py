"""How SkiLL trains from a pretrained encoder: the recipes ``simlabel ssl train --recipe`` names.

Paper 001 fine-tunes its encoder with DINO over SkiLL's views. On a CPU-sized budget that run loses what the
pretrained encoder knew (RESULTS.md §11: 5-7 points of article_type accuracy, and fewer same-design items among an
item's neighbours), so the recipes below keep the start and learn the colour invariance beside it. Each is a set of
:class:`~simlabel.ssl.train.SSLConfig` options over the same views, loss and budget:

``paper``
    Paper 001 as printed (and DINO, Caron et al. 2021): the last 2 EfficientNet blocks and the head trained at a
    peak learning rate of 1e-3; the EMA teacher's backbone is the encoder.
``gentle``
    The same fine-tuning, smaller steps: 1 block at a peak learning rate of 3e-4, the usual first remedy when
    fine-tuning forgets ("How transferable are features...", Yosinski et al. 2014; lower rates for pretrained
    layers, "Universal Language Model Fine-tuning", Howard & Ruder 2018).
``keep``
    The paper's fine-tuning plus distillation of the frozen pretrained encoder on the un-jittered view
    (:mod:`simlabel.ssl.distill`, after CaSSLe, Fini et al. 2022): ``keep`` = 1.
``projection``
    The pretrained encoder frozen whole; a square linear map on its features, initialised to the identity
    (:class:`~simlabel.ssl.contrastive.LinearProjector`), trains with SimCLR's InfoNCE (Chen et al. 2020) between
    SkiLL's views of a product (the two global views come from two colour variants of a design where the catalog
    has them), without weight decay (which would pull the map to zero, away from the start). The encoder is the
    EMA teacher's map of the frozen features, L2-normalised: a colour-invariant projection learnt on top of what
    the start knew. Cheap on a CPU: the trunk runs in ONNX Runtime and nothing under the map is differentiated.
    (DINO's own head as the projection, 4,096 prototypes, stayed near its uniform start over one CPU epoch and
    lost design retrieval: RESULTS.md §11.)
``whitening``
    The pretrained encoder frozen whole; a linear map on its power-normalised features fitted in closed form from
    matching pairs, SkiLL's views of each image and, with a product column, the images of each product: learned
    whitening (Radenović, Tolias & Chum 2018, §3.4) with the colour subspace removed (:mod:`simlabel.ssl.whitening`).
    One pass of the encoder over each image and 2 views of it, at 288 px (the trunk's features at a larger side
    than its 224 px training; chosen on the training half of the design groups, RESULTS.md §11c). No steps, no
    learning rate: the fit is the same on a CPU and a GPU, and takes minutes.

:data:`DEFAULT_RECIPE` is what ``ssl train`` runs unless told otherwise: ``whitening``, the one that measured best on
fashion-products (RESULTS.md §11c, issue 26): held-out same-design-other-colour recall@10 29.9% -> 38.3% (1.28x the
pretrained encoder), article_type accuracy kept, the colour probe 56.6% -> 42.5%, in about 10 minutes on 2 cores,
where no fine-tuning recipe beat the pretrained encoder over a CPU epoch. ``paper`` stays available, and is what
``simlabel experiment ssl``'s ``skill`` variant runs.
"""

from __future__ import annotations

from simlabel.checks import one_of

__all__ = ["DEFAULT_RECIPE", "RECIPES", "recipe_options"]

#: each recipe's options over :class:`~simlabel.ssl.train.SSLConfig`'s defaults
RECIPES: dict[str, dict] = {
    "paper": {},
    "gentle": {"train_blocks": 1, "lr": 3e-4},
    "keep": {"keep": 1.0},
    "projection": {"train_blocks": 0, "export": "projection", "objective": "infonce", "projector": "linear",
                   "weight_decay": 0.0, "weight_decay_end": 0.0},
    "whitening": {"objective": "whitening", "train_blocks": 0, "embed_size": 288, "batch_size": 64,
                  "checkpoint_every": 20},
}
DEFAULT_RECIPE = "whitening"


def recipe_options(name: str) -> dict:
    """The :class:`~simlabel.ssl.train.SSLConfig` options of recipe ``name`` (a copy).

    Examples
    --------
    >>> recipe_options("keep")
    {'keep': 1.0}
    """
    one_of(name, tuple(RECIPES), "recipe")
    return dict(RECIPES[name])
