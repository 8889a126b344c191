"""Where simlabel keeps derived files: ``$SIMLABEL_CACHE`` or the user cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_root() -> Path:
    env = os.environ.get("SIMLABEL_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("simlabel"))


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache root, created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
