"""simlabel: semantic similarity as supervision for product-image classifiers.

The public API (imported lazily, so ``import simlabel`` stays cheap)::

    simlabel.load_catalog(path, columns={"label": "article_type"})
    simlabel.embed(catalog, out, model="efficientnet-lite0", text_col="title")
    ids, X = simlabel.load_embeddings(out)
    index = simlabel.build_index(out, "index.faiss", kind="hnsw")
    nbr_ids, sims = index.knn_ids(ids[:5], k=10)
    simlabel.run_demo()
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Catalog": "simlabel.catalog",
    "CatalogError": "simlabel.catalog",
    "load_catalog": "simlabel.catalog",
    "embed": "simlabel.embedding",
    "EmbedResult": "simlabel.embedding",
    "load_embeddings": "simlabel.store",
    "read_metadata": "simlabel.store",
    "NeighborIndex": "simlabel.index",
    "IndexConfig": "simlabel.index",
    "build_index": "simlabel.index",
    "get_image_encoder": "simlabel.encoders",
    "get_text_encoder": "simlabel.encoders",
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
