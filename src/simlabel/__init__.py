"""simlabel: semantic similarity as supervision for product-image classifiers.

The public API (imported lazily, so ``import simlabel`` stays cheap)::

    cat = simlabel.load_catalog(path, columns={"label": "article_type"})
    simlabel.embed(cat, "emb/", model="efficientnet-lite0", text_col="title")
    emb = simlabel.load_embeddings("emb/")             # Embeddings: ids, matrix, meta
    index = simlabel.build_index(emb, "index.faiss", kind="hnsw")
    nbr_ids, sims = index.knn_ids(emb.ids[:5], k=10)    # Neighbors(ids, similarities)

    aug = simlabel.augment(emb, "seeds.csv", k=10)            # paper 000: Augmented(labels, holdout, result, summary)
    prop = simlabel.propagate(emb, "seeds.csv", k=10, steps=4)  # Propagated(labels, result, summary)
    clf = simlabel.train(emb, "seeds.csv", extra=[aug.augmented], out="model/")
    report = simlabel.evaluate(clf, emb, "holdout.csv")

Every function that takes an embedding folder also takes a loaded ``Embeddings``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # catalogs, embeddings, indexes
    "Catalog": "simlabel.catalog",
    "load_catalog": "simlabel.catalog",
    "embed": "simlabel.embedding",
    "FetchConfig": "simlabel.sources",
    "EmbedResult": "simlabel.embedding",
    "Embeddings": "simlabel.store",
    "as_embeddings": "simlabel.store",
    "load_embeddings": "simlabel.store",
    "read_metadata": "simlabel.store",
    "KnnGraph": "simlabel.graph",
    "build_graph": "simlabel.graph",
    "update_graph": "simlabel.graph",
    "load_graph": "simlabel.graph",
    "neighbours_for": "simlabel.graph",
    "neighbour_source": "simlabel.graph",
    "NeighborIndex": "simlabel.index",
    "Neighbors": "simlabel.index",
    "IndexConfig": "simlabel.index",
    "build_index": "simlabel.index",
    "get_image_encoder": "simlabel.encoders",
    "get_text_encoder": "simlabel.encoders",
    # errors
    "SimlabelError": "simlabel.errors",
    "CatalogError": "simlabel.errors",
    "LabelFileError": "simlabel.errors",
    "MissingIdsError": "simlabel.errors",
    "StoreError": "simlabel.errors",
    # label files and producers
    "read_labels": "simlabel.labels.io",
    "write_labels": "simlabel.labels.io",
    "augment": "simlabel.labels.augment",
    "Augmented": "simlabel.labels.augment",
    "propagate": "simlabel.labels.propagate",
    "Propagated": "simlabel.labels.propagate",
    "PseudoConfig": "simlabel.labels.pseudo",
    "SmoothingConfig": "simlabel.labels.smoothing",
    "build_targets": "simlabel.labels.smoothing",
    "target_schedule": "simlabel.labels.smoothing",
    "SideInfoConfig": "simlabel.labels.side_info",
    "side_info_weights": "simlabel.labels.side_info",
    "SideInfoWeights": "simlabel.labels.side_info",
    "SearchConfig": "simlabel.labels.search",
    "search_labels": "simlabel.labels.search",
    "SearchLabels": "simlabel.labels.search",
    "build_search_labels": "simlabel.labels.search",
    "SelfMLConfig": "simlabel.labels.selfml",
    "flip": "simlabel.labels.flipping",
    "Flipped": "simlabel.labels.flipping",
    "SuspectsConfig": "simlabel.labels.suspects",
    "SuspectsResult": "simlabel.labels.suspects",
    "find_suspects": "simlabel.training",
    "audit": "simlabel.auditing",
    "AuditConfig": "simlabel.auditing",
    "AuditResult": "simlabel.auditing",
    "select": "simlabel.training",
    "SelectConfig": "simlabel.selection",
    "Selection": "simlabel.selection",
    "SampleConfig": "simlabel.labels.sample",
    "sample_labels": "simlabel.labels.sample",
    "category_semantics": "simlabel.semantics.categories",
    # heads, training, evaluation
    "HeadConfig": "simlabel.heads",
    "EmbeddingClassifier": "simlabel.heads",
    "MultiLabelHeadConfig": "simlabel.heads",
    "MultiLabelClassifier": "simlabel.heads",
    "out_of_fold_proba": "simlabel.heads",
    "train": "simlabel.training",
    "train_multilabel": "simlabel.training",
    "save_flip_model": "simlabel.training",
    "load_model": "simlabel.heads",
    "evaluate": "simlabel.training",
    "predict": "simlabel.prediction",
    "export_classifier": "simlabel.export",
    "Predictions": "simlabel.prediction",
    "oof_predictor": "simlabel.training",
    "multilabel_pretrain": "simlabel.training",
    "classification_report": "simlabel.metrics",
    "run_demo": "simlabel.demo",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'simlabel' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
