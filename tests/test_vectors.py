"""The content-addressed vector cache: same bytes + same encoder -> embedded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.embedding import embed
from simlabel.store import load_embeddings
from simlabel.vectors import VectorCache, content_hash, encoder_key
from tests.helpers import slice_catalog


def test_lookup_and_add_by_hand(tmp_path: Path) -> None:
    cache = VectorCache("toy", 3, root=tmp_path)
    a, b, c = (bytes([i]) * 16 for i in (1, 2, 3))
    cache.add([a, b, a], np.array([[1, 0, 0], [0, 1, 0], [9, 9, 9]], np.float32))  # a repeated: the first one counts
    found, vecs = cache.lookup([c, b, a])
    assert found.tolist() == [False, True, True]
    assert vecs.tolist() == [[0, 1, 0], [1, 0, 0]]
    cache.add([a, c], np.array([[5, 5, 5], [0, 0, 1]], np.float32))  # a known hash is not rewritten
    again = VectorCache("toy", 3, root=tmp_path)
    found, vecs = again.lookup([a, c])
    assert found.all() and vecs.tolist() == [[1, 0, 0], [0, 0, 1]] and len(again) == 3
    assert len(VectorCache("toy", 4, root=tmp_path)) == 0  # another width is another encoder's


def test_a_part_without_its_hashes_is_ignored(tmp_path: Path) -> None:
    cache = VectorCache("toy", 2, root=tmp_path)
    cache.add([b"x" * 16], np.ones((1, 2), np.float32))
    (tmp_path / "toy" / "killed.vectors.npy").write_bytes(b"half a file")
    (tmp_path / "toy" / "broken.hashes.npy").write_bytes(b"not npy")
    assert len(VectorCache("toy", 2, root=tmp_path)) == 1


def test_encoder_key_ignores_the_device_but_not_the_weights() -> None:
    base = {"model": "efficientnet-lite0", "version": "w1", "dim": 1280, "resize": "center-crop", "device": "cpu"}
    assert encoder_key(base) == encoder_key({**base, "device": "cuda"})
    assert encoder_key(base) != encoder_key({**base, "version": "w2"})
    assert encoder_key(base) != encoder_key({**base, "resize": "pad"})


def test_embedding_into_a_new_folder_reuses_the_vectors(tmp_path: Path, image_encoder, monkeypatch) -> None:
    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path / "cache"))  # an empty cache for this test
    df = slice_catalog("clothing-small", 12, tmp_path)
    df.to_csv(tmp_path / "catalog.csv", index=False)
    first = embed(tmp_path / "catalog.csv", tmp_path / "a", image_encoder=image_encoder, progress=False)
    assert first.n_from_cache == 0 and first.n_embedded == 12
    # the same photos under other ids, in another folder: no image is decoded or embedded again
    df.assign(id=["x" + i for i in df["id"]]).to_csv(tmp_path / "other.csv", index=False)
    second = embed(tmp_path / "other.csv", tmp_path / "b", image_encoder=image_encoder, progress=False)
    assert second.n_from_cache == 12 and "12 from the cache" in second.summary_line()
    a, b = load_embeddings(tmp_path / "a"), load_embeddings(tmp_path / "b")
    assert np.array_equal(a.matrix, b.matrix) and b.ids.tolist() == ["x" + i for i in df["id"]]
    # a changed file is a new file; --no-cache embeds everything
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(Path(df["image"][0]).read_bytes() + b"\0")
    assert content_hash(edited) != content_hash(df["image"][0])
    pd.DataFrame({"id": ["e"], "image": [str(edited)]}).to_csv(tmp_path / "e.csv", index=False)
    assert embed(tmp_path / "e.csv", tmp_path / "e", image_encoder=image_encoder, progress=False).n_from_cache == 0
    assert embed(tmp_path / "catalog.csv", tmp_path / "c", image_encoder=image_encoder, progress=False, cache=False).n_from_cache == 0
