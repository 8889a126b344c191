"""Pseudo-labels for training: labels made from the unlabelled catalog, each weighted by how sure it is.

Made labels enter training beside the human ones, never with a human label's weight. Each pseudo-label
gets a *certainty* from the method that made it:

* ``spread`` (Zhou et al.'s closed form on the k-NN graph, as Iscen, Tolias, Avrithis & Chum, "Label
  Propagation for Deep Semi-supervised Learning", CVPR 2019): ``1 - H(z) / log C`` of the item's
  normalised class scores ``z`` (1: one class only; 0: all alike);
* ``propagate`` (paper 000's clamped iterations): the winning class's share of the item's distribution;
* ``augment`` (paper 000's recurrence): the cosine to the neighbour the label came through.

and a *class balance* as Iscen's loss has it (each class's pseudo-labels weigh as much in total, whatever
their number)::

    w_i = min(1, scale * certainty_i * b_{y_i}),   b_j = mean_k |U_k| / |U_j|

``|U_j|`` the pseudo-labels of class ``j``. ``scale`` is what :func:`simlabel.training.train`'s
``pseudo="auto"`` chooses, with the mode, by out-of-fold validation on the human labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int

__all__ = ["PSEUDO_MODES", "PseudoConfig", "make_pseudo_labels", "pseudo_weights"]

#: the modes that make labels (``none`` makes none; ``auto`` chooses among all of them)
PSEUDO_MODES = ("none", "augment", "propagate", "spread")


@dataclass
class PseudoConfig:
    """How ``train`` adds pseudo-labels.

    Parameters
    ----------
    mode : {"auto", "none", "augment", "propagate", "spread"}, default "auto"
        ``auto``: the candidate (a mode and a ``scale``, or none) with the best out-of-fold accuracy on the
        human labels; ``none`` unless one beats it by more than ``margin``.
    scales : tuple of float, default (0.5, 1.0)
        The candidates' weight scales.
    folds : int, default 3
        ``auto``'s folds over the human labels.
    min_per_class : int, default 5
        Fewer human labels than this per class on average: too few to validate, and ``auto`` takes
        ``fallback`` (classes with fewer labels than ``folds`` are never validated on: they always train).
        From RESULTS.md §16: with 3.4 labels per class (clothing-small, 34 labels) the out-of-fold choice
        cost 4.6 points of test accuracy against the human labels alone.
    fallback : {"none", "augment", "propagate", "spread"}, default "none"
        What ``auto`` takes when it cannot validate (the rule of ``benchmarks/RESULTS.md``'s efficiency runs).
    fallback_scale : float, default 0.5
        Its scale.
    margin : float, default 0.01
        A mode must beat ``none``'s validation accuracy by more than this to be chosen (one point: the
        folds' accuracies on a few labels move by about that much with the seed).
    k : int, default 10
        Neighbours per node of the label methods.
    max_steps : int, default 10
        ``augment``'s and ``propagate``'s steps.
    unlabeled_sample : int or None, default 20000
        Unlabelled items the graph methods label (drawn, seeded; ``None``: all).
    seed : int, default 0
        Folds and samples.

    Examples
    --------
    >>> from simlabel.labels.pseudo import PseudoConfig
    >>> PseudoConfig(mode="spread", scales=(1.0,)).mode
    'spread'
    """

    mode: Literal["auto", "none", "augment", "propagate", "spread"] = "auto"
    scales: tuple[float, ...] = field(default=(0.5, 1.0))
    folds: int = 3
    min_per_class: int = 5
    fallback: Literal["none", "augment", "propagate", "spread"] = "none"
    fallback_scale: float = 0.5
    margin: float = 0.01
    k: int = 10
    max_steps: int = 10
    unlabeled_sample: int | None = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        one_of(self.mode, ("auto", *PSEUDO_MODES), "mode")
        one_of(self.fallback, PSEUDO_MODES, "fallback")
        self.scales = tuple(float(s) for s in self.scales)
        for s in self.scales:
            in_range(s, "scales", 0, lo_open=True)
        in_range(self.fallback_scale, "fallback_scale", 0, lo_open=True)
        positive_int(self.folds, "folds", minimum=2)
        positive_int(self.min_per_class, "min_per_class")
        in_range(self.margin, "margin", 0)
        positive_int(self.k, "k")
        positive_int(self.max_steps, "max_steps")
        positive_int(self.unlabeled_sample, "unlabeled_sample", allow_none=True)


def pseudo_weights(labels: np.ndarray, certainty: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``min(1, scale * certainty * b_label)`` with the class balance ``b_j = mean_k |U_k| / |U_j|``.

    Examples
    --------
    >>> import numpy as np
    >>> pseudo_weights(np.array(["a", "a", "a", "b"]), np.array([1.0, 0.5, 1.0, 0.5]), 1.0).round(3).tolist()
    [0.667, 0.333, 0.667, 1.0]
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.float32)
    names, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    balance = counts.mean() / counts
    w = scale * np.clip(np.asarray(certainty, dtype=np.float64), 0.0, 1.0) * balance[codes]
    return np.minimum(w, 1.0).astype(np.float32)


def make_pseudo_labels(emb, labels: pd.DataFrame, mode: str, config: PseudoConfig | None = None, *, graph=None,
                       exclude: list[str] | None = None) -> pd.DataFrame:
    """Pseudo-labels for unlabelled items: ``id, label, certainty`` (one row per item a label reached).

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The catalog's embeddings.
    labels : pandas.DataFrame
        The human labels (``id, label``): the seeds.
    mode : {"augment", "propagate", "spread"}
        The label method.
    config : PseudoConfig, optional
        ``k``, ``max_steps``, ``unlabeled_sample`` and ``seed``.
    graph : optional
        A k-NN graph of ``emb`` (:func:`simlabel.graph.neighbour_source`'s rule).
    exclude : list of str, optional
        Ids never pseudo-labelled (a holdout, a validation fold).

    Returns
    -------
    pandas.DataFrame
        ``id, label, certainty``; the seeds and ``exclude`` are never in it.
    """
    from simlabel.labels.augment import augment
    from simlabel.labels.propagate import propagate

    cfg = config or PseudoConfig()
    one_of(mode, PSEUDO_MODES[1:], "mode")
    blocked = set(map(str, exclude or []))
    seeds = labels[["id", "label"]]
    if mode == "augment":
        # the holdout argument keeps the excluded ids unlabelled (they may still be neighbours)
        hold = pd.DataFrame({"id": sorted(blocked)}) if blocked else None
        made = augment(emb, seeds, k=cfg.k, holdout=hold, max_steps=cfg.max_steps, graph=graph).labels
        made = made[made["source"] == "augmented"]
        out = pd.DataFrame({"id": made["id"], "label": made["label"], "certainty": made["via_similarity"].clip(0, 1)})
    else:
        made = propagate(emb, seeds, k=cfg.k, steps=cfg.max_steps, unlabeled_sample=cfg.unlabeled_sample,
                         exclude=sorted(blocked), seed=cfg.seed, graph=graph,
                         method="spread" if mode == "spread" else "iterate").labels
        certainty = made["weight"] if mode == "spread" else made["confidence"]
        out = pd.DataFrame({"id": made["id"], "label": made["label"], "certainty": certainty})
    out = out[~out["id"].astype(str).isin(blocked)]
    return out.reset_index(drop=True)
