"""Choosing what a person labels next: cold start (TypiClust, ProbCover), uncertainty x diversity (BADGE),
the ``auto`` rule between them, and the queue with its stopping signal (:func:`select_items`).

Its floor is the label producers': it stands on the graph and the embeddings and is handed a model's
probabilities, never trains a head and never renders a page (contract in ``pyproject.toml``).
"""

from simlabel.selection.cold import coverage_threshold, kmeans_clusters, probcover, typicality, typiclust
from simlabel.selection.queue import PREDICTIONS_SUFFIX, SelectConfig, Selection, prediction_change, select_items
from simlabel.selection.uncertainty import badge, margin_uncertainty

__all__ = [
    "PREDICTIONS_SUFFIX", "SelectConfig", "Selection", "badge", "coverage_threshold", "kmeans_clusters",
    "margin_uncertainty", "prediction_change", "probcover", "select_items", "typicality", "typiclust",
]
