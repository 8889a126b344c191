"""simlabel.distributed: `embed --engine ray` writes the store the local path writes, and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError
from tests.helpers import ROOT

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'simlabel[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from simlabel.distributed import ray_session

    r, started = ray_session(num_cpus=2)
    yield r
    if started:
        r.shutdown()


@pytest.mark.slow
def test_ray_embed_equals_the_local_path(local_ray, clothing_slice: Path, tmp_path: Path):
    from simlabel.embedding import embed
    from simlabel.store import load_embeddings

    local = embed(clothing_slice, tmp_path / "local", shard_size=16, batch_size=8, progress=False, cache=False)
    on_ray = embed(clothing_slice, tmp_path / "ray", shard_size=16, batch_size=8, progress=False, engine="ray", actors=1)
    a, b = load_embeddings(tmp_path / "local"), load_embeddings(tmp_path / "ray")
    assert a.ids.tolist() == b.ids.tolist() and len(a.ids) == local.n_embedded == on_ray.n_embedded
    assert np.allclose(a.matrix, b.matrix, atol=1e-5)
    ea = pd.read_csv(tmp_path / "local" / "errors.csv").sort_values("id")
    eb = pd.read_csv(tmp_path / "ray" / "errors.csv").sort_values("id")
    assert len(ea) >= 4 and ea["id"].tolist() == eb["id"].tolist()  # one bad image never fails the job
    assert set(eb["reason"]) == set(ea["reason"])
    assert sorted(p.name for p in (tmp_path / "ray").glob("part-*.parquet")) == \
        sorted(p.name for p in (tmp_path / "local").glob("part-*.parquet"))
    # the images' quality is measured in Ray's decode pass too, the same as the local path's
    from simlabel.quality import QUALITY_FIELDS
    from simlabel.store import read_quality

    qa, qb = (read_quality(tmp_path / d).set_index("id").sort_index() for d in ("local", "ray"))
    assert qa.index.tolist() == qb.index.tolist() == sorted(a.ids.tolist())
    assert np.allclose(qa[list(QUALITY_FIELDS)], qb[list(QUALITY_FIELDS)], atol=1e-5)
    assert (qa["pixel_hash"] == qb["pixel_hash"]).all() and (qb["content_hash"] == "").all()


@pytest.mark.slow
def test_a_killed_ray_job_resumes(clothing_slice: Path, tmp_path: Path):
    from simlabel.embedding import embed
    from simlabel.store import load_embeddings

    out = tmp_path / "emb"
    code = ("import sys\nfrom simlabel.embedding import embed\n"
            "embed(sys.argv[1], sys.argv[2], shard_size=8, batch_size=8, progress=False, engine='ray', actors=1)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SIMLABEL_TEST_KILL_AT": "embed:after-shard",
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "-c", code, str(clothing_slice), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    # the driver died after its first shard was reported; a writer task already running may still finish the next
    # one (a whole shard: written atomically), never a part of one
    assert "part-00000.parquet" in [p.name for p in out.glob("part-*.parquet")]
    res = embed(clothing_slice, out, shard_size=8, batch_size=8, progress=False, cache=False)  # finish it locally
    assert 8 <= res.n_resumed < 40 and res.n_resumed % 8 == 0
    whole = embed(clothing_slice, tmp_path / "whole", shard_size=8, batch_size=8, progress=False, cache=False)
    a, b = load_embeddings(out), load_embeddings(tmp_path / "whole")
    assert a.ids.tolist() == b.ids.tolist() and np.allclose(a.matrix, b.matrix, atol=1e-5)
    assert whole.n_embedded == res.n_embedded


def test_engine_errors(clothing_slice: Path, tmp_path: Path, image_encoder):
    from simlabel.embedding import embed
    from simlabel.errors import InputError

    with pytest.raises(InputError, match="engine must be local or ray"):
        embed(clothing_slice, tmp_path / "x", engine="spark")
    with pytest.raises(InputError, match="builds the model in each actor"):
        embed(clothing_slice, tmp_path / "y", engine="ray", image_encoder=image_encoder, progress=False)


def test_ray_graph_equals_the_local_graph(local_ray, tmp_path: Path):
    import pickle

    from simlabel.graph import GraphConfig, build_graph
    from simlabel.index import IndexConfig, NeighborIndex
    from simlabel.store import Embeddings

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    e = Embeddings(np.array([f"r{i}" for i in range(500)], dtype=object), X, {"path": "mem", "model": "test"})
    idx = NeighborIndex.build(e.ids, X, IndexConfig(kind="ivf", ivf_nlist=8))
    back = pickle.loads(pickle.dumps(idx))  # what the object store does with it
    assert np.array_equal(back.knn_positions(np.arange(20), 5).neighbors, idx.knn_positions(np.arange(20), 5).neighbors)
    local = build_graph(e, tmp_path / "local", GraphConfig(k=6, block_rows=128), progress=False)
    on_ray = build_graph(e, tmp_path / "ray", GraphConfig(k=6, block_rows=128, engine="ray"), progress=False)
    assert np.array_equal(local.neighbors, on_ray.neighbors) and np.allclose(local.similarities, on_ray.similarities)
    assert len(list((tmp_path / "ray" / "blocks").glob("*.parquet"))) == 4


def test_ray_on_disk_graph_equals_the_local_one(local_ray, tmp_path: Path):
    """Parts added in parallel Ray tasks, merged on disk, blocks queried by tasks reading their own rows."""
    from simlabel.graph import GraphConfig, build_graph
    from simlabel.store import write_shard

    rng = np.random.default_rng(1)
    X = rng.normal(size=(900, 16)).astype(np.float32)
    ids = np.array([f"r{i}" for i in range(900)], dtype=object)
    for s in range(3):
        write_shard(tmp_path / "emb" / f"part-{s:05d}.parquet", ids[300 * s:300 * (s + 1)], X[300 * s:300 * (s + 1)],
                    {"model": "test", "dim": 16})
    cfg = GraphConfig(k=6, block_rows=256, on_disk=True, index_options={"ivf_nlist": 8})
    local = build_graph(tmp_path / "emb", tmp_path / "local", cfg, progress=False)
    on_ray = build_graph(tmp_path / "emb", tmp_path / "ray", GraphConfig(**{**cfg.__dict__, "engine": "ray"}), progress=False)
    assert np.array_equal(local.neighbors, on_ray.neighbors) and np.allclose(local.similarities, on_ray.similarities)
    assert on_ray.meta["recall_at_k"] == local.meta["recall_at_k"] > 0.5


def test_ray_predict_equals_the_local_path(local_ray, tmp_path: Path):
    """predict --engine ray: each shard a Ray task writing its part; the same rows, parts and summary as the local
    path; a part already written is kept (resume), and the CLI runs it."""
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.prediction import predict, read_predictions
    from simlabel.training import train
    from tests.test_prediction import FAST, _store

    folder, table = _store(tmp_path)
    model = tmp_path / "model"
    train(folder, table.iloc[::2], config=FAST, out=model)
    local = predict(model, folder, out=tmp_path / "local", min_precision=0.8, progress=False)
    on_ray = predict(model, folder, out=tmp_path / "ray", min_precision=0.8, progress=False, engine="ray")
    a, b = read_predictions(tmp_path / "local"), read_predictions(tmp_path / "ray")
    assert len(a) == len(table) and a["id"].tolist() == b["id"].tolist()
    pd.testing.assert_frame_equal(a, b)
    for key in ("rows", "abstained", "labels", "parts", "thresholds"):
        assert local.summary[key] == on_ray.summary[key], key
    # a killed run's parts are kept: remove one part and the manifest, run again on Ray
    (tmp_path / "ray" / "part-00002.parquet").unlink()
    (tmp_path / "ray" / "_manifest.json").unlink()
    again = predict(model, folder, out=tmp_path / "ray", min_precision=0.8, progress=False, engine="ray")
    assert again.summary["parts_reused"] == again.summary["parts"] - 1
    pd.testing.assert_frame_equal(read_predictions(tmp_path / "ray"), a)
    r = CliRunner().invoke(app, ["predict", "--model", str(model), "--emb", str(folder), "--out", str(tmp_path / "cli"),
                                 "--engine", "ray", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert read_predictions(tmp_path / "cli")["label"].tolist() == a["label"].tolist()
    with pytest.raises(InputError, match="engine"):
        predict(model, folder, progress=False, engine="ray")  # no out: nothing for the tasks to write


@pytest.mark.slow
def test_ray_workers_fetch_image_urls_themselves(local_ray, tmp_path: Path):
    """`embed --engine ray` over http:// URLs from a server on 127.0.0.1: the decoding tasks fetch the images
    (each body sent once, none by the driver before them), the vectors equal the local paths', a 404 is recorded."""
    from simlabel.embedding import embed
    from simlabel.sources import FetchConfig
    from simlabel.store import load_embeddings
    from tests.helpers import slice_catalog
    from tests.servers import ImageServer

    df = slice_catalog("clothing-small", 12, tmp_path, stratify="label")
    df.to_csv(tmp_path / "local.csv", index=False)
    with ImageServer(tmp_path) as srv:
        urls = df.assign(image=[f"{srv.url}/img/{p}" for p in df["image"]])
        urls.loc[len(urls)] = {**urls.iloc[0].to_dict(), "id": "gone", "image": f"{srv.url}/404/{df['image'].iloc[0]}"}
        urls.to_csv(tmp_path / "urls.csv", index=False)
        on_ray = embed(tmp_path / "urls.csv", tmp_path / "ray", shard_size=8, batch_size=4, progress=False, engine="ray",
                       actors=1, fetch=FetchConfig(timeout=5, retries=1, backoff=0.01))
        assert srv.served == 12
    local = embed(tmp_path / "local.csv", tmp_path / "local", shard_size=8, batch_size=4, progress=False, cache=False)
    a, b = load_embeddings(tmp_path / "local"), load_embeddings(tmp_path / "ray")
    assert on_ray.n_embedded == local.n_embedded == 12 and on_ray.n_failed == 1
    np.testing.assert_allclose(b.rows(a.ids).matrix, a.matrix, atol=1e-5)
    assert pd.read_csv(tmp_path / "ray" / "errors.csv").set_index("id")["reason"].to_dict() == {"gone": "http-404"}


@pytest.mark.slow
def test_ray_workers_write_their_shards_to_s3(local_ray, tmp_path: Path):
    """`embed --engine ray --out s3://...` from http:// URLs: the workers fetch the images and put the shards to S3
    themselves (the driver's working copy holds no shard: no vector passed through it); the driver lists them, last;
    the store read back from S3 equals the local path's, and its errors.csv holds the 404."""
    import json

    import s3fs

    from simlabel.context import modes
    from simlabel.embedding import embed
    from simlabel.remote import PUBLISHED_NAME
    from simlabel.sources import FetchConfig
    from simlabel.store import load_embeddings
    from tests.helpers import slice_catalog
    from tests.servers import ImageServer, moto_server

    df = slice_catalog("clothing-small", 12, tmp_path, stratify="label")
    df.to_csv(tmp_path / "local.csv", index=False)
    with ImageServer(tmp_path) as srv, moto_server() as opts:
        s3fs.S3FileSystem(**opts, skip_instance_cache=True).mkdir("rayshop")
        urls = df.assign(image=[f"{srv.url}/img/{p}" for p in df["image"]])
        urls.loc[len(urls)] = {**urls.iloc[0].to_dict(), "id": "gone", "image": f"{srv.url}/404/{df['image'].iloc[0]}"}
        urls.to_csv(tmp_path / "urls.csv", index=False)
        with modes(storage_options=opts):
            res = embed(tmp_path / "urls.csv", "s3://rayshop/ray-emb", shard_size=4, batch_size=4, progress=False,
                        engine="ray", actors=1, fetch=FetchConfig(timeout=5, retries=1, backoff=0.01))
            assert res.n_embedded == 12 and res.n_failed == 1 and res.out == "s3://rayshop/ray-emb"
            fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
            listed = json.loads(fs.cat_file(f"rayshop/ray-emb/{PUBLISHED_NAME}"))["files"]
            shards = sorted(f for f in listed if f.startswith("part-"))
            assert shards == [f"part-{i:05d}.parquet" for i in range(4)]
            assert all(f"_quality/{s}" in listed for s in shards)
            from simlabel.remote import _copy_dir  # the driver's working copy, to look inside

            copy = _copy_dir("out", "s3://rayshop/ray-emb", opts)
            assert not list(copy.glob("part-*.parquet")), "no shard was written by the driver"
            emb = load_embeddings("s3://rayshop/ray-emb")
            errors = pd.read_csv(Path(emb.meta["path"]) / "errors.csv")
            assert errors[["id", "reason"]].values.tolist() == [["gone", "http-404"]]
            with pytest.raises(InputError, match="append with engine local"):
                embed(tmp_path / "urls.csv", "s3://rayshop/ray-emb", shard_size=4, batch_size=4, progress=False,
                      engine="ray", actors=1, append=True)
    embed(tmp_path / "local.csv", tmp_path / "local", shard_size=4, batch_size=4, progress=False, cache=False)
    ref = load_embeddings(tmp_path / "local")
    np.testing.assert_allclose(emb.rows(ref.ids).matrix, ref.matrix, atol=1e-5)
