"""Where a run finds its data and keeps its files.

* :func:`find_default_data`: ``--data``, else ``$SIMLABEL_DATA``, else the shared
  ``clothing-small`` dataset beside the checkout (what ``make demo`` uses).
* :func:`default_run_dir`: a cached run folder per catalog (path and ids) and model, so
  a second run on the same data reuses its embeddings.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from simlabel.cache import cache_dir
from simlabel.catalog import Catalog
from simlabel.errors import DataNotFound

__all__ = ["DATA_ENV", "DEFAULT_DATASET", "default_run_dir", "find_default_data", "safe_name"]

DATA_ENV = "SIMLABEL_DATA"
DEFAULT_DATASET = "clothing-small"


def find_default_data(data: str | os.PathLike | None = None) -> Path:
    """``data``, else ``$SIMLABEL_DATA``, else ``../shared/datasets/clothing-small`` next to
    the working directory or next to this source checkout.

    Raises
    ------
    DataNotFound
        Saying where simlabel looked and how to point it elsewhere.
    """
    if data:
        p = Path(data)
        if not p.exists():
            raise DataNotFound(f"`data` {p}: not found")
        return p
    if os.environ.get(DATA_ENV):
        p = Path(os.environ[DATA_ENV])
        if not p.exists():
            raise DataNotFound(f"${DATA_ENV}={p}: not found")
        return p
    here = Path(__file__).resolve()
    candidates = [Path.cwd() / ".." / "shared" / "datasets" / DEFAULT_DATASET]
    candidates += [parent / ".." / "shared" / "datasets" / DEFAULT_DATASET for parent in here.parents]
    for c in candidates:
        if (c / "catalog.csv").exists():
            return c.resolve()
    raise DataNotFound(
        "no data found: pass `data` (a catalog file or a folder with catalog.csv), "
        f"or set ${DATA_ENV}; by default simlabel looks for ../shared/datasets/{DEFAULT_DATASET}"
    )


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, ``_.-`` replaced, cut to 60 characters (a folder name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def default_run_dir(catalog: Catalog, model: str) -> Path:
    """``<cache>/runs/<dataset>-<model>-<hash of catalog path, ids and model>``."""
    key = hashlib.sha256(f"{catalog.path}|{catalog.fingerprint()}|{model}".encode()).hexdigest()[:12]
    name = safe_name(catalog.path.parent.name if catalog.path else "catalog")
    return cache_dir("runs") / f"{name}-{safe_name(model)}-{key}"
