"""Soft targets from label semantics (paper 002: Yang, "Semantic Label Representation
with an Application on Multimodal Product Categorization", Walmart Global Tech, 2022).

Class names are embedded with a text encoder (the paper uses CLIP's text tower; the
default here is the offline ``minilm``), and the cosine similarity ``s_ij`` between
label embeddings says which classes are close. Row ``i`` of a target matrix ``T``
(``C x C``, row-stochastic) is the soft target of an item whose true class is ``i``;
a classifier is trained against it with a KL loss (next to its multi-class loss).

The paper's five approaches ("Experimental Results", list 1-5), with ``N_K(i)`` the
``K`` labels most similar to ``i`` other than ``i`` (``K = 20`` in the paper) and
``alpha = 0.1``::

    1. one-hot (baseline)        T = I
    2. uniform smoothing         T_ii = 1 - alpha,  T_ij = alpha / (C - 1)             (j != i)
    3. uniform over the top K    T_ii = 1 - alpha,  T_ij = alpha / K                   (j in N_K(i))
    4. semantic over the top K   T_ii = 1 - alpha,  T_ij = alpha s+_ij / sum_{k in N_K(i)} s+_ik
                                                                                         (j in N_K(i))
    5. approach 4 with a curriculum: alpha_t falls to 0 over training, so the targets
       harden towards one-hot (Dogan et al. 2020, the paper's reference [8])

with ``s+ = max(s, 0)`` and every entry not listed equal to 0. Approaches 2-4 are all
``T = (1 - alpha) I + alpha W`` for a weight matrix ``W`` with zero diagonal and rows
summing to 1 (:func:`smoothing_weights`, :func:`soft_targets`).

Controlled weights. The paper says it "controls the weights in the soft label
representations" so that the approaches are comparable, but the table that says how
is an image that did not survive. Our reading: **the weights of approaches 2-4 are
controlled so that they differ only in where the smoothing mass alpha goes: the true
class always keeps 1 - alpha.** In particular approach 4 is *not* the full row-normalised
similarity matrix of the paper's first illustration (where the true class's share
would depend on how many close labels it has), and approach 2 gives ``alpha / (C - 1)``
to each other class as the paper describes it ("the remaining weight alpha will be
distributed equally to each of the other classes"), not the ``alpha / C`` to every class
of Szegedy et al.'s label smoothing.

Curriculum (approach 5). The paper gives no schedule; :func:`curriculum_alpha` offers
linear, cosine, step and exponential annealing after an optional warmup. Because
``T(a) = (1 - a) I + a W`` is linear in ``a``, the targets of epoch ``t`` are
``I + (a_t / a) (T(a) - I)``, or simply ``build_targets(..., alpha=a_t)``.

Taxonomy targets. The paper also derives targets from a distance ("adjacency") matrix
with a softmax, "resembling how soft targets are constructed in knowledge distillation".
:func:`taxonomy_targets` does this with the tree distance of
:func:`simlabel.semantics.taxonomy.taxonomy_distance`,
``T_ij = softmax_j(-beta d_ij)``, the soft labels of Bertinetto et al. 2020 (the paper's
reference [1]) with edge counts as the distance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.semantics.names import (
    embed_label_names,
    label_similarity,
    load_descriptions,
    nearest_labels,
    square_matrix,
)
from simlabel.semantics.taxonomy import taxonomy_matrix

SMOOTHING_KINDS: tuple[str, ...] = ("none", "uniform", "uniform-topk", "semantic", "semantic-curriculum", "taxonomy")
WEIGHT_KINDS: tuple[str, ...] = ("uniform", "uniform-topk", "semantic")
CURRICULUM_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "step", "exp")

__all__ = [
    "CURRICULUM_SCHEDULES",
    "SMOOTHING_KINDS",
    "SmoothingConfig",
    "WEIGHT_KINDS",
    "build_targets",
    "curriculum_alpha",
    "one_hot_targets",
    "smoothing_weights",
    "soft_targets",
    "target_schedule",
    "taxonomy_targets",
]


# -- where the smoothing mass goes -------------------------------------------------------------


def smoothing_weights(
    kind: str,
    *,
    n_classes: int | None = None,
    similarity: np.ndarray | None = None,
    neighbors: int | None = None,
) -> np.ndarray:
    """The weight matrix ``W`` (``(C, C)`` float64, zero diagonal, rows summing to 1):
    where the smoothing mass of approaches 2-4 goes.

    ``"uniform"`` (approach 2)
        ``W_ij = 1 / (C - 1)`` for every ``j != i``; needs ``n_classes`` (or ``similarity``).
    ``"uniform-topk"`` (approach 3)
        ``W_ij = 1 / K`` for ``j`` in ``N_K(i)``, the ``K = neighbors`` labels most similar
        to ``i`` (:func:`nearest_labels`, ``K`` clipped to ``C - 1``).
    ``"semantic"`` (approach 4)
        ``W_ij = s+_ij / sum_{k in N_K(i)} s+_ik`` for ``j`` in ``N_K(i)``, ``s+ = max(s, 0)``:
        a negative cosine says "unrelated", never "anti-target". A row whose ``K``
        neighbour similarities are all ``<= 0`` falls back to ``1 / K`` on its neighbours.

    All other entries are 0. Needs at least 2 classes (with one there is nowhere to put mass).
    """
    if kind not in WEIGHT_KINDS:
        raise InputError(f"unknown smoothing weights {kind!r}; use one of {', '.join(WEIGHT_KINDS)}")
    s = None
    if similarity is not None:
        s = square_matrix(similarity, "similarity")
        if n_classes is not None and n_classes != s.shape[0]:
            raise InputError(f"n_classes = {n_classes} but similarity is {s.shape[0]} x {s.shape[0]}")
        n_classes = s.shape[0]
    if kind == "uniform":
        if n_classes is None:
            raise InputError("uniform smoothing weights need n_classes (or similarity)")
        c = int(n_classes)
        if c < 2:
            raise InputError(f"smoothing needs at least 2 classes; got {c}")
        w = np.full((c, c), 1.0 / (c - 1))
        np.fill_diagonal(w, 0.0)
        return w
    if s is None:
        raise InputError(f"{kind} smoothing weights need similarity (a (C, C) label similarity matrix)")
    if neighbors is None:
        raise InputError(f"{kind} smoothing weights need neighbors (K, the number of nearest labels)")
    if neighbors < 1:
        raise InputError(f"neighbors must be >= 1; got {neighbors}")
    c = s.shape[0]
    if c < 2:
        raise InputError(f"smoothing needs at least 2 classes; got {c}")
    nbr = nearest_labels(s, neighbors)
    k = nbr.shape[1]
    rows = np.arange(c)[:, None]
    if kind == "uniform-topk":
        vals = np.full((c, k), 1.0 / k)
    else:
        sims = np.maximum(s[rows, nbr], 0.0)
        total = sims.sum(axis=1, keepdims=True)
        ok = total > 0
        vals = np.where(ok, sims / np.where(ok, total, 1.0), 1.0 / k)
    w = np.zeros((c, c))
    w[rows, nbr] = vals
    return w


def soft_targets(weights: np.ndarray, alpha: float) -> np.ndarray:
    """``T = (1 - alpha) I + alpha W``: the true class keeps ``1 - alpha`` (exactly, when
    ``W`` has a zero diagonal as :func:`smoothing_weights` makes it) and ``alpha`` is
    spread as ``W`` says. ``W`` must be non-negative with rows summing to 1; ``alpha``
    in ``[0, 1]``.
    """
    w = square_matrix(weights, "weights")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1]; got {alpha}")
    if (w < 0).any():
        raise InputError("weights must be non-negative")
    if not np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-9):
        raise InputError("weights must have rows summing to 1")
    t = alpha * w
    t[np.diag_indices_from(t)] += 1.0 - alpha
    return t


def one_hot_targets(n_classes: int) -> np.ndarray:
    """Approach 1, the baseline: ``T = I`` (``(C, C)`` float64)."""
    if n_classes < 1:
        raise InputError(f"n_classes must be >= 1; got {n_classes}")
    return np.eye(int(n_classes))


# -- taxonomy ----------------------------------------------------------------------------------


def taxonomy_targets(distance: np.ndarray, beta: float) -> np.ndarray:
    """Soft targets from a distance matrix: ``T_ij = exp(-beta d_ij) / sum_k exp(-beta d_ik)``.

    ``d_ii = 0`` and ``d_ij >= 0``, so the true class keeps the most mass (strictly, for
    ``beta > 0`` and distinct classes); ``beta = 0`` is uniform over all classes and a
    large ``beta`` tends to one-hot. Computed as ``exp(-beta (d - min_j d_ij))``, which
    cannot overflow and does not underflow to an all-zero row.
    """
    d = square_matrix(distance, "distance")
    if not (math.isfinite(beta) and beta >= 0):
        raise InputError(f"beta must be finite and >= 0; got {beta}")
    if (d < 0).any():
        raise InputError("distances must be non-negative")
    if (np.diagonal(d) != 0).any():
        raise InputError("distances must have a zero diagonal (a class is at distance 0 from itself)")
    z = -beta * (d - d.min(axis=1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- curriculum --------------------------------------------------------------------------------


def curriculum_alpha(epoch: int, n_epochs: int, alpha: float, *, schedule: str = "linear", warmup: int = 0) -> float:
    """The smoothing mass of epoch ``epoch`` (0-based) for approach 5: targets harden over training.

    With ``last = n_epochs - 1``, ``w = min(warmup, last)``, the annealing span
    ``L = last - w`` and ``t = epoch - w``: ``alpha`` for ``epoch <= w`` (the warmup
    epochs, and the first annealing step, ``t = 0``), exactly ``0.0`` for
    ``epoch >= last``, and in between, with ``u = t / L``:

    ``"linear"``  ``alpha (1 - u)``
    ``"cosine"``  ``alpha (1 + cos(pi u)) / 2``
    ``"step"``    ``alpha`` while ``u < 1/2``, then ``0``
    ``"exp"``     ``alpha 0.5 ** (t / h)`` with half-life ``h = L / 5`` (so ``alpha / 32``
                  just before the end, then the final ``0``)

    Every schedule starts at ``alpha``, never increases and ends at exactly 0.0. The one
    exception is ``n_epochs == 1``: there is nothing to anneal and epoch 0 gets
    ``alpha`` (annealing it away would make approach 5 plain one-hot).
    """
    if schedule not in CURRICULUM_SCHEDULES:
        raise InputError(f"unknown curriculum schedule {schedule!r}; use one of {', '.join(CURRICULUM_SCHEDULES)}")
    if n_epochs < 1:
        raise InputError(f"n_epochs must be >= 1; got {n_epochs}")
    if epoch < 0:
        raise InputError(f"epoch must be >= 0 (0-based); got {epoch}")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0; got {warmup}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1]; got {alpha}")
    last = n_epochs - 1
    if n_epochs == 1 and epoch == 0:
        return float(alpha)
    if epoch >= last:
        return 0.0
    start = min(warmup, last)
    if epoch <= start:
        return float(alpha)
    span = last - start
    t = epoch - start
    u = t / span
    if schedule == "linear":
        return float(alpha * (1.0 - u))
    if schedule == "cosine":
        return float(alpha * 0.5 * (1.0 + math.cos(math.pi * u)))
    if schedule == "step":
        return float(alpha) if u < 0.5 else 0.0
    return float(alpha * 0.5 ** (t / (span / 5.0)))


# -- one entry point ---------------------------------------------------------------------------


def build_targets(
    kind: str,
    *,
    n_classes: int,
    alpha: float = 0.1,
    similarity: np.ndarray | None = None,
    neighbors: int = 20,
    taxonomy: np.ndarray | None = None,
    beta: float = 1.0,
) -> np.ndarray:
    """The ``(C, C)`` row-stochastic soft-target matrix of one of paper 002's approaches.

    Row ``i`` is the target of an item whose true class is ``i``. With ``N_K(i)`` the ``K``
    labels most similar to ``i`` (other than ``i``) and ``s+ = max(s, 0)``, approaches 2-4 are
    ``T = (1 - alpha) I + alpha W``: the true class keeps ``1 - alpha`` and ``W`` (zero diagonal,
    rows summing to 1) says where the smoothing mass goes::

        "none"                 T = I                                   (approach 1, one-hot)
        "uniform"              W_ij = 1 / (C - 1)        for j != i    (approach 2)
        "uniform-topk"         W_ij = 1 / K              for j in N_K(i)  (approach 3)
        "semantic"             W_ij = s+_ij / sum_{k in N_K(i)} s+_ik  for j in N_K(i)  (approach 4)
        "semantic-curriculum"  the epoch-0 targets, the same as "semantic" (approach 5)
        "taxonomy"             T_ij = exp(-beta d_ij) / sum_k exp(-beta d_ik)

    For the curriculum, later epochs call this again with ``alpha=curriculum_alpha(...)``
    (:func:`target_schedule` does it). A ``semantic`` row whose neighbour similarities are all
    ``<= 0`` falls back to ``1 / K`` on its neighbours.

    Parameters
    ----------
    kind : str
        One of :data:`SMOOTHING_KINDS`: ``none``, ``uniform``, ``uniform-topk``, ``semantic``,
        ``semantic-curriculum``, ``taxonomy``.
    n_classes : int
        ``C``, the number of classes (``>= 1``; ``>= 2`` for the smoothing kinds).
    alpha : float, default 0.1
        The smoothing mass, in ``[0, 1]`` (the paper's 0.1); unused by ``none`` and ``taxonomy``.
    similarity : numpy.ndarray, optional
        The ``(C, C)`` label similarity (e.g. the cosine of the class names' embeddings,
        ``label_similarity(embed_label_names(names))``); needed by ``uniform-topk``,
        ``semantic`` and ``semantic-curriculum``.
    neighbors : int, default 20
        ``K``, the nearest labels that share the mass (the paper's 20; clipped to ``C - 1``).
    taxonomy : numpy.ndarray, optional
        ``taxonomy``: the ``(C, C)`` distance matrix ``d`` (non-negative, zero diagonal), e.g. the
        tree distance of :func:`~simlabel.semantics.taxonomy.taxonomy_distance`.
    beta : float, default 1.0
        ``taxonomy``: the softmax's sharpness (finite, ``>= 0``; 0 is uniform over all classes,
        a large ``beta`` tends to one-hot).

    Returns
    -------
    numpy.ndarray
        ``(C, C)`` float64, rows summing to 1.

    Raises
    ------
    InputError
        An unknown ``kind``; ``n_classes < 1``, or fewer than 2 classes to smooth over;
        ``similarity`` or ``taxonomy`` missing where needed, not ``(C, C)`` or non-finite;
        ``alpha`` outside ``[0, 1]``; ``neighbors < 1``; a negative or non-finite ``beta``;
        negative distances or a non-zero diagonal in ``taxonomy``.

    See Also
    --------
    target_schedule : The targets a trainer takes for a :class:`SmoothingConfig`.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import build_targets
    >>> build_targets("uniform", n_classes=3, alpha=0.1).round(3).tolist()
    [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
    >>> s = np.array([[1.0, 0.8, 0.2], [0.8, 1.0, 0.4], [0.2, 0.4, 1.0]])
    >>> build_targets("semantic", n_classes=3, similarity=s, neighbors=2).round(3).tolist()
    [[0.9, 0.08, 0.02], [0.067, 0.9, 0.033], [0.033, 0.067, 0.9]]
    """
    if kind not in SMOOTHING_KINDS:
        raise InputError(f"unknown smoothing kind {kind!r}; use one of {', '.join(SMOOTHING_KINDS)}")
    if n_classes < 1:
        raise InputError(f"n_classes must be >= 1; got {n_classes}")
    if kind == "none":
        return one_hot_targets(n_classes)
    if kind == "taxonomy":
        if taxonomy is None:
            raise InputError("kind 'taxonomy' needs taxonomy (a (C, C) distance matrix, e.g. from taxonomy_distance)")
        if np.shape(taxonomy) != (n_classes, n_classes):
            raise InputError(f"taxonomy has shape {np.shape(taxonomy)}; expected ({n_classes}, {n_classes})")
        return taxonomy_targets(taxonomy, beta)
    if kind == "uniform":
        return soft_targets(smoothing_weights("uniform", n_classes=n_classes), alpha)
    if similarity is None:
        raise InputError(
            f"kind {kind!r} needs similarity (a (C, C) label similarity matrix, "
            "e.g. label_similarity(embed_label_names(names)))"
        )
    if np.shape(similarity) != (n_classes, n_classes):
        raise InputError(f"similarity has shape {np.shape(similarity)}; expected ({n_classes}, {n_classes})")
    weight_kind = "uniform-topk" if kind == "uniform-topk" else "semantic"
    w = smoothing_weights(weight_kind, similarity=similarity, neighbors=neighbors)
    return soft_targets(w, alpha)


# -- what a trainer needs: a config, a taxonomy, and targets per epoch -------------------------


@dataclass
class SmoothingConfig:
    """Soft targets for training a classifier (paper 002): which approach, and its settings.

    :func:`target_schedule` turns it into what the trainer takes (:func:`build_targets` gives the
    formulas of each approach).

    Parameters
    ----------
    kind : str, default "none"
        One of :data:`SMOOTHING_KINDS`: ``none`` (one-hot, approach 1), ``uniform`` (2),
        ``uniform-topk`` (3), ``semantic`` (4), ``semantic-curriculum`` (5: approach 4 with
        ``alpha`` annealed to 0 over training) or ``taxonomy`` (a softmax of the tree distance).
    alpha : float, default 0.1
        The smoothing mass, in ``[0, 1]``: the true class keeps ``1 - alpha``.
    neighbors : int, default 20
        ``K``, the nearest labels that share the mass (``uniform-topk`` and the semantic kinds).
    label_model : str, default "minilm"
        The text model that embeds the class names (``minilm``, ``st:...``, or ``clip:...`` for
        the CLIP text tower, as the paper does).
    descriptions : str, optional
        A CSV ``label,description``: a described class is embedded as ``"<name>: <description>"``,
        which disambiguates short or cryptic names.
    taxonomy : str or mapping of str to sequence of str, optional
        ``taxonomy``: a CSV ``label,path`` with ``path`` like ``Apparel > Topwear > Tshirts``, or
        a mapping label -> path tuple; every class must be in it.
    beta : float, default 1.0
        ``taxonomy``: the sharpness of ``T_ij = softmax_j(-beta d_ij)`` (``>= 0``).
    curriculum_epochs : int, default 30
        ``semantic-curriculum``: the epochs over which ``alpha`` anneals to exactly 0 at the last
        one.
    schedule : {"linear", "cosine", "step", "exp"}, default "linear"
        ``semantic-curriculum``: how ``alpha`` anneals (:func:`curriculum_alpha`).
    warmup : int, default 0
        ``semantic-curriculum``: epochs at the full ``alpha`` before annealing starts.

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field).

    Examples
    --------
    >>> from simlabel import SmoothingConfig
    >>> cfg = SmoothingConfig(kind="semantic-curriculum", schedule="cosine")
    >>> cfg.alpha, cfg.neighbors, cfg.curriculum_epochs
    (0.1, 20, 30)
    """

    kind: str = "none"
    alpha: float = 0.1
    neighbors: int = 20
    label_model: str = "minilm"
    descriptions: str | None = None
    taxonomy: str | Mapping[str, Sequence[str]] | None = None
    beta: float = 1.0
    curriculum_epochs: int = 30
    schedule: str = "linear"
    warmup: int = 0

    def __post_init__(self) -> None:
        one_of(self.kind, SMOOTHING_KINDS, "smoothing")
        one_of(self.schedule, CURRICULUM_SCHEDULES, "schedule")
        in_range(self.alpha, "alpha", 0, 1)
        positive_int(self.neighbors, "neighbors")
        in_range(self.beta, "beta", 0)
        positive_int(self.curriculum_epochs, "curriculum_epochs")
        positive_int(self.warmup, "warmup", minimum=0)


def target_schedule(
    classes: Sequence[str],
    config: SmoothingConfig,
    *,
    similarity: np.ndarray | None = None,
    device: str = "auto",
):
    """The soft targets for ``config``, as :meth:`EmbeddingClassifier.fit` takes them (``soft_targets``).

    Parameters
    ----------
    classes : sequence of str
        The class names, in the order of the classifier's outputs.
    config : SmoothingConfig
        Which approach and its settings.
    similarity : numpy.ndarray, optional
        The ``(C, C)`` label similarity, e.g. computed once for several runs; otherwise, where
        the kind needs it, the class names (with ``config.descriptions``) are embedded with
        ``config.label_model`` and compared by cosine.
    device : str, default "auto"
        Where the class names are embedded.

    Returns
    -------
    None, numpy.ndarray or callable
        ``None`` for ``none`` (approach 1 trains on the hard loss alone: a KL to one-hot targets
        would just add a second cross-entropy); a ``(C, C)`` matrix (:func:`build_targets`) for
        approaches 2-4 and ``taxonomy``; and for the curriculum (approach 5) a function
        ``epoch -> (C, C) matrix`` (0-based epochs) whose smoothing mass is ``curriculum_alpha(epoch,
        config.curriculum_epochs, config.alpha, schedule=config.schedule, warmup=config.warmup)``.

    Raises
    ------
    InputError
        ``taxonomy`` without ``config.taxonomy`` or with classes missing from it; a
        ``similarity`` that is not ``(C, C)``; fewer than two classes to smooth over.
    LabelFileError
        A taxonomy or descriptions file that cannot be read.
    ModelError
        The label model cannot be loaded.

    Examples
    --------
    >>> import numpy as np
    >>> from simlabel import SmoothingConfig, target_schedule
    >>> s = np.array([[1.0, 0.8, 0.2], [0.8, 1.0, 0.4], [0.2, 0.4, 1.0]])
    >>> cfg = SmoothingConfig(kind="semantic-curriculum", neighbors=2, curriculum_epochs=3)
    >>> at_epoch = target_schedule(["Shirts", "Tshirts", "Shoes"], cfg, similarity=s)
    >>> at_epoch(0).round(3).tolist()
    [[0.9, 0.08, 0.02], [0.067, 0.9, 0.033], [0.033, 0.067, 0.9]]
    >>> at_epoch(2).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> target_schedule(["Shirts", "Shoes"], SmoothingConfig()) is None
    True
    """
    kind = config.kind
    if kind == "none":
        return None
    n = len(classes)
    if kind == "taxonomy" and config.taxonomy is None:
        raise InputError("smoothing 'taxonomy' needs a taxonomy (`taxonomy`, a CSV label,path)")
    taxonomy = taxonomy_matrix(classes, config.taxonomy) if kind == "taxonomy" else None
    if kind in ("uniform-topk", "semantic", "semantic-curriculum") and similarity is None:
        desc = load_descriptions(config.descriptions) if config.descriptions else None
        similarity = label_similarity(embed_label_names(classes, config.label_model, descriptions=desc, device=device))
    common = dict(n_classes=n, similarity=similarity, neighbors=config.neighbors, taxonomy=taxonomy, beta=config.beta)
    if kind != "semantic-curriculum":
        return build_targets(kind, alpha=config.alpha, **common)
    weights = smoothing_weights("semantic", similarity=similarity, neighbors=min(config.neighbors, n - 1))

    def at_epoch(epoch: int) -> np.ndarray:
        a = curriculum_alpha(epoch, config.curriculum_epochs, config.alpha, schedule=config.schedule, warmup=config.warmup)
        return soft_targets(weights, a)

    return at_epoch
