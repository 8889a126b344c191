"""Thumbnails made once with Pillow and kept on disk, keyed by the image file, its size and time."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from simlabel.files import atomic_path
from simlabel.images import ImageError
from simlabel.report import open_image
from simlabel.sources import FetchError, is_remote_source


class Thumbnails:
    """``get(id, path, size)`` -> a JPEG file of the image at most ``size`` pixels on its long side, made on
    first use under ``folder`` and reused while the source file is unchanged."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def get(self, ident: str, path: str | os.PathLike, size: int) -> Path:
        remote = is_remote_source(path)
        if remote:  # a URL: fetched once, kept by URL (its image may change: a new review session fetches again)
            key = hashlib.blake2b(f"{path}|{size}".encode(), digest_size=12).hexdigest()
        else:
            st = os.stat(path)
            key = hashlib.blake2b(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{size}".encode(), digest_size=12).hexdigest()
        out = self.folder / key[:2] / f"{key}.jpg"
        if out.exists():
            return out
        try:
            img = open_image(path, size)
        except (ImageError, FetchError) as e:
            raise OSError(str(e)) from None
        img.thumbnail((size, size))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            img.save(tmp, format="JPEG", quality=85)
        return out
