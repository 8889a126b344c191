"""A content-addressed cache of image embeddings: the same bytes under the same encoder are
embedded once, whatever the catalog, the folder or the id they come with.

``simlabel embed`` (and the demo and experiments, which embed through it) looks every image up
by the BLAKE2b-128 digest of its file's bytes before decoding it; a hit skips decoding and the
model. New vectors are added after each shard. So embedding a catalog into a new folder, or a
catalog that shares photos with one embedded before, costs a file read per known image.

Layout: ``<cache>/vectors/<encoder key>/`` holds parts ``<name>.vectors.npy`` (``(n, d)``
float32) and ``<name>.hashes.npy`` (``(n,)`` ``S16``), the hashes written last, so a part
without its hashes (a killed run) is ignored. The encoder key digests what decides the vector:
the model, its version (weights), width, backend, resize and normalisation. Parts are memory
mapped: a lookup reads only the rows it returns. Several processes may add parts at once (each
writes its own, uniquely named).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from simlabel.cache import cache_dir
from simlabel.files import atomic_path

__all__ = ["VectorCache", "content_hash", "encoder_key"]

#: fields of an encoder's ``describe()`` that do not change its vectors
_RUNTIME_FIELDS = ("device", "threads", "providers")


def bytes_hash(data: bytes) -> bytes:
    """BLAKE2b-128 of bytes in hand (a fetched URL's): equal to :func:`content_hash` of a file holding them."""
    return hashlib.blake2b(data, digest_size=16).digest()


def content_hash(path: str | os.PathLike) -> bytes:
    """BLAKE2b-128 of a file's bytes (16 bytes); raises ``OSError`` like ``open``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def encoder_key(description: dict) -> str:
    """A folder name for an encoder: its name and a digest of everything that shapes its vectors."""
    kept = {k: v for k, v in sorted(description.items()) if k not in _RUNTIME_FIELDS}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(description.get("model", "model")))[:40]
    return f"{name}-{digest}"


class VectorCache:
    """The cached vectors of one encoder (see the module docstring).

    ``lookup(hashes)`` returns a ``found`` mask and the found rows' vectors; ``add(hashes,
    vectors)`` writes a new part. Hashes are 16-byte ``bytes``.
    """

    def __init__(self, key: str, dim: int, root: str | os.PathLike | None = None) -> None:
        self.dim = int(dim)
        self.folder = Path(root) / key if root is not None else cache_dir("vectors") / key
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._hashes = np.zeros(0, dtype="S16")
        self._where = np.zeros((0, 2), dtype=np.int64)  # (part, row) of each sorted hash
        self.reload()

    def reload(self) -> None:
        """Read the parts on disk (those complete, and of this width)."""
        parts, hashes, where = [], [], []
        if self.folder.is_dir():
            for hfile in sorted(self.folder.glob("*.hashes.npy")):
                vfile = hfile.with_name(hfile.name[: -len(".hashes.npy")] + ".vectors.npy")
                try:
                    h = np.load(hfile, allow_pickle=False)
                    v = np.load(vfile, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError):
                    continue  # a damaged part is a miss, not an error: the image is embedded again
                if v.ndim != 2 or v.shape != (len(h), self.dim) or h.dtype != np.dtype("S16"):
                    continue
                hashes.append(h)
                where.append(np.stack([np.full(len(h), len(parts)), np.arange(len(h))], axis=1))
                parts.append((h, v))
        self._parts = parts
        if hashes:
            allh = np.concatenate(hashes)
            order = np.argsort(allh, kind="stable")
            self._hashes, self._where = allh[order], np.concatenate(where)[order]
        else:
            self._hashes, self._where = np.zeros(0, dtype="S16"), np.zeros((0, 2), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, hashes: list[bytes] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found (n,) bool, vectors (found.sum(), d) float32)`` for ``hashes`` in order."""
        q = np.asarray(hashes, dtype="S16")
        found = np.zeros(len(q), dtype=bool)
        if not len(self._hashes) or not len(q):
            return found, np.zeros((0, self.dim), np.float32)
        at = np.searchsorted(self._hashes, q)
        at_ok = at < len(self._hashes)
        found[at_ok] = self._hashes[at[at_ok]] == q[at_ok]
        rows = self._where[at[found]]
        out = np.empty((int(found.sum()), self.dim), dtype=np.float32)
        for i, (part, row) in enumerate(rows):
            out[i] = self._parts[part][1][row]
        return found, out

    def add(self, hashes: list[bytes] | np.ndarray, vectors: np.ndarray) -> None:
        """Write ``vectors`` (rows in the order of ``hashes``) as a new part; known hashes are skipped."""
        q = np.asarray(hashes, dtype="S16")
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(q) != len(vectors) or (len(q) and vectors.shape[1] != self.dim):
            raise ValueError(f"{len(q)} hashes for vectors of shape {vectors.shape} (dim {self.dim})")
        found, _ = self.lookup(q)
        _, first = np.unique(q, return_index=True)
        keep = np.zeros(len(q), dtype=bool)
        keep[first] = True
        keep &= ~found
        if not keep.any():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with atomic_path(self.folder / f"{name}.vectors.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, vectors[keep])
        with atomic_path(self.folder / f"{name}.hashes.npy") as tmp:  # last: it marks the part complete
            with open(tmp, "wb") as f:
                np.save(f, q[keep])
        self.reload()
