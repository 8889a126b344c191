"""What every experiment opens with: find the data, load the catalog once, embed it once, and
the fixed split and mean/sd summary they share."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog, load_catalog
from simlabel.embedding import TEXT_SUBDIR, embed
from simlabel.errors import InputError
from simlabel.runs import default_run_dir, find_default_data
from simlabel.store import Embeddings, as_embeddings, load_embeddings

__all__ = ["ExperimentData", "fixed_split", "jsonable", "mean_sd", "open_experiment"]


@dataclass
class ExperimentData:
    """A catalog ready for an experiment: where it came from, where the run keeps its files,
    and its embeddings, loaded once (``text`` when titles were embedded too)."""

    root: Path
    catalog: Catalog
    run_dir: Path
    embeddings: Embeddings
    text: Embeddings | None = None


def open_experiment(
    data: str | os.PathLike | None,
    *,
    model: str,
    label_col: str | None = None,
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    text_col: str | None = None,
    text_model: str | None = None,
    embeddings: "str | os.PathLike | Embeddings | None" = None,
    device: str = "auto",
    progress: bool = True,
) -> ExperimentData:
    """Find the data (:func:`~simlabel.runs.find_default_data`), load its catalog (``label_col``
    mapped to ``label``; the first ``limit`` rows), and embed it into ``out/embeddings`` (default:
    a cached run folder per catalog and model), or take the given ``embeddings``."""
    root = find_default_data(data)
    catalog = load_catalog(root, columns={"label": label_col} if label_col else None)
    if limit:
        catalog = catalog.head(limit)
    if text_col and text_col not in catalog.table.columns:
        raise InputError(f"{catalog.path}: no text column {text_col!r}; columns are {', '.join(map(str, catalog.table.columns))}")
    run_dir = Path(out) if out else default_run_dir(catalog, model)
    text = None
    if embeddings is not None:
        image = as_embeddings(embeddings)
    else:
        emb_dir = run_dir / "embeddings"
        embed(catalog, emb_dir, model=model, text_col=text_col, text_model=text_model, device=device, progress=progress)
        image = load_embeddings(emb_dir)
        if text_col:
            text = load_embeddings(emb_dir / TEXT_SUBDIR)
    return ExperimentData(root, catalog, run_dir, image, text)


def fixed_split(labels: pd.Series, test_frac: float, seed: int) -> np.ndarray:
    """Boolean test mask: ``floor(test_frac * n)`` of each class (so classes of 1-4 items stay in train)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for _, idx in pd.Series(np.arange(len(labels))).groupby(labels.to_numpy()).groups.items():
        idx = rng.permutation(np.asarray(idx))
        test[idx[: int(np.floor(test_frac * len(idx)))]] = True
    return test


def mean_sd(runs: pd.DataFrame, by: str | Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """Mean of ``keys`` over the runs of each ``by`` group (groups in first-seen order), with a
    ``"<key> sd"`` column each (sample sd; 0 for a single run)."""
    g = runs.groupby(by, sort=False)[list(keys)]
    out = g.mean()
    sd = g.std().fillna(0.0)
    for k in keys:
        out[f"{k} sd"] = sd[k]
    return out


def jsonable(obj):
    """``obj`` with numpy scalars and other non-JSON values made plain (for ``--json``)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
