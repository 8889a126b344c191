"""simlabel.remote: outputs and stores on object storage, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel import build_graph, embed, load_embeddings, load_graph
from simlabel.context import modes
from simlabel.errors import LockedError, StoreError
from simlabel.files import KILL_ENV
from simlabel.remote import LEASE_NAME, PUBLISHED_NAME, RemoteFolder, lease, local_copy, staged_output
from tests.helpers import slice_catalog
from tests.servers import moto_server


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server and an s3fs filesystem on it, with a bucket ``shop``."""
    import s3fs

    with moto_server() as opts:
        # a fresh instance: fsspec keeps one per options, and a server of an earlier test may have had this port
        fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
        fs.mkdir("shop")
        yield opts, fs


def _folder(opts: dict, url: str, tmp_path: Path) -> RemoteFolder:
    return RemoteFolder(url, tmp_path / "copy", opts)


def test_publish_then_pull_moves_only_the_published_set(s3, tmp_path: Path) -> None:
    opts, fs = s3
    w = _folder(opts, "s3://shop/t1", tmp_path / "w")
    (w.local / "sub").mkdir()
    (w.local / "a.txt").write_text("one")
    (w.local / "sub" / "b.txt").write_text("two")
    assert w.publish() == 2
    assert w.publish() == 0, "nothing changed: nothing put"
    (w.local / "a.txt").write_text("three")
    (w.local / "sub" / "b.txt").unlink()
    assert w.publish() == 1
    assert not fs.exists("shop/t1/sub/b.txt"), "a file no longer published is deleted after the set"
    # an object put by a writer that died before publishing is not part of the output
    fs.pipe_file("shop/t1/stray.txt", b"half")
    r = _folder(opts, "s3://shop/t1", tmp_path / "r")
    (r.local / "old.txt").write_text("left from before")
    r.pull()
    assert sorted(p.name for p in r.local.rglob("*") if p.is_file()) == ["a.txt"]
    assert (r.local / "a.txt").read_text() == "three"
    # a file that differs from its listed digest is refused
    fs.pipe_file("shop/t1/a.txt", b"tampered")
    with pytest.raises(StoreError, match="differ from the published set"):
        _folder(opts, "s3://shop/t1", tmp_path / "r2").pull(attempts=1)


def test_lease_keeps_a_second_writer_out_and_a_dead_holders_is_taken_over(s3, tmp_path: Path) -> None:
    opts, fs = s3
    f = _folder(opts, "s3://shop/t2", tmp_path)
    with lease(f) as held:
        assert held is not None and fs.exists(f"shop/t2/{LEASE_NAME}")
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with lease(_folder(opts, "s3://shop/t2", tmp_path / "b")):
                pass
    assert not fs.exists(f"shop/t2/{LEASE_NAME}"), "released"
    # a holder that died on this host (a pid that is not running) leaves its lease: the next writer takes it over
    body = {"host": os.uname().nodename, "pid": 2 ** 22 + 17, "expires": time.time() + 3600, "since": "then"}
    fs.pipe_file(f"shop/t2/{LEASE_NAME}", json.dumps(body).encode())
    with lease(f) as held:
        assert json.loads(fs.cat_file(f"shop/t2/{LEASE_NAME}"))["pid"] == os.getpid()
    # a live holder elsewhere whose lease has expired is taken over too; one that has not is not
    body = {"host": "another-machine", "pid": 1, "expires": time.time() - 1}
    fs.pipe_file(f"shop/t2/{LEASE_NAME}", json.dumps(body).encode())
    with lease(f):
        pass
    fs.pipe_file(f"shop/t2/{LEASE_NAME}", json.dumps({**body, "expires": time.time() + 3600}).encode())
    with pytest.raises(LockedError, match="another-machine"):
        with lease(f):
            pass


def test_a_store_without_conditional_puts_needs_single_writer(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="single_writer"):
        with staged_output("memory://bucket/out"):
            pass
    with staged_output("memory://bucket/out", single_writer=True) as folder:
        (folder.local / "x.txt").write_text("x")
    assert RemoteFolder("memory://bucket/out", tmp_path / "c").published()["files"].keys() == {"x.txt"}


def test_a_folder_inside_an_output_reads_through_the_output(tmp_path: Path) -> None:
    """``local_copy`` of ``OUT/text`` (a store's text sub-store) pulls OUT's published set and returns its text/."""
    with staged_output("memory://bucket/emb2", single_writer=True) as folder:
        (folder.local / "text").mkdir()
        (folder.local / "text" / "manifest.json").write_text("{}")
        (folder.local / "manifest.json").write_text("{}")
    sub = local_copy("memory://bucket/emb2/text")
    assert sub.name == "text" and sorted(p.name for p in sub.iterdir()) == ["manifest.json"]
    with pytest.raises(StoreError, match="nothing published"):
        local_copy("memory://bucket/emb2/nothing-here")


def test_lost_lease_stops_publishing(s3, tmp_path: Path) -> None:
    opts, _ = s3
    with modes(storage_options=opts):
        with pytest.raises(LockedError, match="lease was lost"):
            with staged_output("s3://shop/t3") as folder:
                folder.lease.lost = "taken over"
                (folder.local / "x.txt").write_text("x")
        assert _folder(opts, "s3://shop/t3", tmp_path).published() is None


@pytest.fixture(scope="module")
def s3_catalog(s3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """24 real clothing-small photos put on S3: the catalog by s3:// URL, and the same by local path."""
    opts, fs = s3
    tmp = tmp_path_factory.mktemp("s3cat")
    df = slice_catalog("clothing-small", 24, tmp, stratify="label")
    for p in df["image"]:
        fs.put_file(p, f"shop/img/{Path(p).name}")
    df.to_csv(tmp / "local.csv", index=False)
    df.assign(image=[f"s3://shop/img/{Path(p).name}" for p in df["image"]]).to_csv(tmp / "s3.csv", index=False)
    return tmp / "s3.csv", tmp / "local.csv"


@pytest.mark.slow
def test_embed_from_and_to_s3_then_graph_and_predict_read_it(s3, s3_catalog, image_encoder, tmp_path: Path) -> None:
    opts, fs = s3
    s3_csv, local_csv = s3_catalog
    local = embed(local_csv, tmp_path / "local", image_encoder=image_encoder, progress=False, cache=False)
    with modes(storage_options=opts):
        res = embed(s3_csv, "s3://shop/run1/emb", image_encoder=image_encoder, progress=False, cache=False,
                    shard_size=8, batch_size=8)
        assert res.out == "s3://shop/run1/emb" and res.n_embedded == 24
        published = json.loads(fs.cat_file(f"shop/run1/emb/{PUBLISHED_NAME}"))["files"]
        assert {"manifest.json", "part-00000.parquet", "part-00002.parquet", "errors.csv"} <= set(published)
        emb = load_embeddings("s3://shop/run1/emb")
        ref = load_embeddings(tmp_path / "local")
        np.testing.assert_allclose(emb.rows(ref.ids).matrix, ref.matrix, atol=1e-6)
        assert local.n_embedded == 24
        g = build_graph("s3://shop/run1/emb", "s3://shop/run1/graph", k=10)
        assert fs.exists(f"shop/run1/graph/{PUBLISHED_NAME}")
        assert np.array_equal(load_graph("s3://shop/run1/graph").neighbors, g.neighbors)

        from simlabel import train
        from simlabel.prediction import predict

        labels = pd.read_csv(local_csv, dtype=str)[["id", "label"]]
        labels.to_csv(tmp_path / "labels.csv", index=False)
        train("s3://shop/run1/emb", tmp_path / "labels.csv", out=tmp_path / "model")
        made = predict(tmp_path / "model", "s3://shop/run1/emb", out="s3://shop/run1/pred", progress=False)
        assert made.summary["rows"] == 24
        parts = [p for p in json.loads(fs.cat_file(f"shop/run1/pred/{PUBLISHED_NAME}"))["files"] if p.endswith(".parquet")]
        assert parts, "the predictions are published"
        copy = local_copy("s3://shop/run1/pred")
        assert len(pd.read_parquet(copy)) == 24

        from simlabel import audit

        audited = audit(local_csv, "s3://shop/run1/emb", graph="s3://shop/run1/graph", out="s3://shop/run1/audit")
        assert audited.summary["n_items"] == 24
        listed = json.loads(fs.cat_file(f"shop/run1/audit/{PUBLISHED_NAME}"))["files"]
        assert {"issues.parquet", "summary.json"} <= set(listed)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "simlabel.cli", *args]


@pytest.mark.slow
def test_killed_embed_to_s3_resumes_from_the_published_set(s3, s3_catalog, tmp_path: Path) -> None:
    """`simlabel embed --out s3://...` killed (SIGKILL) right after publishing its first shard; the same command
    takes over the dead run's lease and finishes from the published set, to the vectors of a run never killed."""
    opts, fs = s3
    s3_csv, _ = s3_catalog
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["--storage-options", json.dumps(opts), "embed", str(s3_csv), "--shard-size", "4", "--batch-size", "4",
            "--no-progress", "--device", "cpu", "--no-cache", "--workers", "1"]
    subprocess.run(_cli(*base, "--out", "s3://shop/full"), check=True, env=env, capture_output=True)
    killed = subprocess.run(_cli(*base, "--out", "s3://shop/part"), env={**env, KILL_ENV: "embed:after-publish"},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    fs.invalidate_cache()
    assert fs.exists(f"shop/part/{LEASE_NAME}"), "the killed run left its lease"
    published = json.loads(fs.cat_file(f"shop/part/{PUBLISHED_NAME}"))["files"]
    assert [p for p in published if p.startswith("part-")] == ["part-00000.parquet"]

    res = subprocess.run(_cli(*base, "--out", "s3://shop/part"), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    with modes(storage_options=opts):
        full, part = load_embeddings("s3://shop/full"), load_embeddings("s3://shop/part")
    assert list(part.ids) == list(full.ids) and len(set(part.ids)) == 24
    np.testing.assert_allclose(part.matrix, full.matrix, atol=1e-5)
    fs.invalidate_cache()
    summary = json.loads(fs.cat_file("shop/part/summary.json"))
    assert summary["n_resumed"] == 4 and summary["out"] == "s3://shop/part"
    assert not fs.exists(f"shop/part/{LEASE_NAME}"), "released at the end"


def test_a_second_writer_process_is_refused(s3, s3_catalog, tmp_path: Path) -> None:
    """One process holds the output's lease; `simlabel embed` to the same URL fails at once, naming it."""
    opts, fs = s3
    s3_csv, _ = s3_catalog
    go = tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time, pathlib\n"
        "from simlabel.remote import staged_output\n"
        "from simlabel.context import modes\n"
        f"with modes(storage_options=json.loads({json.dumps(json.dumps(opts))})), staged_output('s3://shop/held'):\n"
        "    print('held', flush=True)\n"
        f"    while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.05)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(_cli("--storage-options", json.dumps(opts), "embed", str(s3_csv), "--out", "s3://shop/held",
                                     "--no-progress"), capture_output=True, text=True)
        assert second.returncode == 1
        assert f"pid {holder.pid}" in second.stderr and "being written by another simlabel process" in second.stderr
    finally:
        go.touch()
        holder.wait(timeout=30)
    assert holder.returncode == 0


def test_cli_storage_options_and_single_writer(clothing_slice: Path, tmp_path: Path) -> None:
    """--storage-options must be a JSON object; an output on a store without conditional puts is refused, naming
    --single-writer, and written with it (in process: memory:// lives in this interpreter)."""
    from typer.testing import CliRunner

    from simlabel.cli import app
    from simlabel.context import SINGLE_WRITER, STORAGE_OPTIONS

    runner = CliRunner()
    bad = runner.invoke(app, ["--storage-options", "{not json", "embed", str(clothing_slice), "--out", "x"])
    assert bad.exit_code == 2 and "--storage-options" in bad.output
    args = ["embed", str(clothing_slice), "--out", "memory://shop/emb", "--no-progress", "--shard-size", "64"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--single-writer" in refused.output, refused.output
    done = runner.invoke(app, ["--single-writer", *args])
    assert done.exit_code == 0, done.output
    assert "-> memory://shop/emb" in done.output
    assert STORAGE_OPTIONS.get() is None and SINGLE_WRITER.get() is False, "the invocation's options are put back"
    emb = load_embeddings("memory://shop/emb")
    assert len(emb.ids) == 42  # the slice's 40 photos and its two planted readable ones (CMYK, RGBA)
