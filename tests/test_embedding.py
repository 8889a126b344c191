from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.embedding import embed
from simlabel.errors import EmbedItemError, StoreError
from simlabel.store import load_embeddings, read_metadata


def test_embed_survives_bad_files_and_records_them(clothing_slice: Path, image_encoder, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    res = embed(clothing_slice, out, image_encoder=image_encoder, shard_size=16, batch_size=8, progress=False)
    cat = pd.read_csv(clothing_slice, dtype=str)
    bad = {"bad-corrupt", "bad-truncated", "bad-empty", "bad-text", "bad-missing"}
    assert res.n_items == len(cat) == 47
    assert res.n_failed == 5 and res.n_embedded == 42
    errors = pd.read_csv(out / "errors.csv", dtype=str)
    assert list(errors.columns) == ["id", "path", "reason"]
    reasons = dict(zip(errors["id"], errors["reason"]))
    assert set(reasons) == bad
    assert reasons["bad-empty"] == "empty"
    assert reasons["bad-missing"] == "missing"
    assert reasons["bad-text"] == "not-an-image"
    assert reasons["bad-truncated"] == "truncated"
    assert reasons["bad-corrupt"] in {"corrupt", "truncated"}
    ids, x = load_embeddings(out)
    # catalog order, no bad ids, CMYK and RGBA embedded, unit norm
    assert list(ids) == [i for i in cat["id"] if i not in bad]
    assert {"ok-cmyk", "ok-rgba"} <= set(ids)
    assert x.shape == (42, 1280) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    meta = read_metadata(out)
    assert meta["model"] == "efficientnet-lite0" and meta["dim"] == 1280 and meta["normalized"] is True
    assert "created" in meta
    assert "failed" in res.summary_line() and "items/s" in res.summary_line()


def test_fashion_slice_with_planted_bad_files(fashion_slice: Path, image_encoder, tmp_path: Path) -> None:
    from tests.helpers import plant_bad_files

    df = pd.read_csv(fashion_slice, dtype=str)
    planted = plant_bad_files(tmp_path, df["image"].iloc[0])
    df = pd.concat([df, pd.DataFrame(planted).drop(columns="expect")], ignore_index=True)
    df.to_csv(tmp_path / "with_bad.csv", index=False)
    res = embed(tmp_path / "with_bad.csv", tmp_path / "emb", image_encoder=image_encoder, text_col="title", progress=False)
    assert res.n_embedded == 42 and res.n_failed == 5
    reasons = pd.read_csv(tmp_path / "emb" / "errors.csv").set_index("id")["reason"].to_dict()
    expected = {p["id"]: p["expect"] for p in planted if p["expect"] not in ("ok", "fail")}
    assert {k: reasons[k] for k in expected} == expected
    # the planted rows have no title: recorded as text failures, the real titles all embedded
    assert res.text.n_embedded == 40 and res.text.n_failed == 7


def test_strict_stops_at_first_failure(clothing_slice: Path, image_encoder, tmp_path: Path) -> None:
    with pytest.raises(EmbedItemError, match="bad-corrupt"):
        embed(clothing_slice, tmp_path / "emb", image_encoder=image_encoder, strict=True, progress=False)


def test_title_embeddings_and_text_only_model(fashion_slice: Path, image_encoder, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    res = embed(fashion_slice, out, image_encoder=image_encoder, text_col="title", progress=False)
    assert res.text is not None and res.text.dim == 384 and res.text.n_embedded == 40
    ids, t = load_embeddings(out / "text")
    img_ids, _ = load_embeddings(out)
    assert list(ids) == list(img_ids) and t.shape == (40, 384)
    assert read_metadata(out / "text")["source_column"] == "title"
    only = embed(fashion_slice, tmp_path / "titles", model="minilm", text_col="title", progress=False)
    assert only.modality == "text" and np.allclose(load_embeddings(tmp_path / "titles")[1], t, atol=1e-6)
    with pytest.raises(ValueError, match="text model"):
        embed(fashion_slice, tmp_path / "x", model="minilm", progress=False)
    with pytest.raises(ValueError, match="`text_col` 'nope'"):
        embed(fashion_slice, tmp_path / "y", image_encoder=image_encoder, text_col="nope", progress=False)


def test_resume_skips_finished_shards_and_refuses_other_jobs(fashion_slice: Path, image_encoder, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    first = embed(fashion_slice, out, image_encoder=image_encoder, shard_size=16, batch_size=8, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = embed(fashion_slice, out, image_encoder=image_encoder, shard_size=16, batch_size=8, progress=False)
    assert again.n_resumed == first.n_items == 40 and again.n_embedded == 40
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == mtimes
    # a different catalog (other ids) must not be mixed into the same folder
    other = pd.read_csv(fashion_slice, dtype=str).head(10)
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(StoreError, match="different embedding job"):
        embed(tmp_path / "other.csv", out, image_encoder=image_encoder, shard_size=16, batch_size=8, progress=False)
    redone = embed(tmp_path / "other.csv", out, image_encoder=image_encoder, shard_size=16, batch_size=8, overwrite=True, progress=False)
    assert redone.n_embedded == 10 and len(load_embeddings(out)[0]) == 10


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "simlabel.cli", *args]


def test_killed_run_resumes_to_the_same_result(fashion_slice: Path, tmp_path: Path) -> None:
    """Kill `simlabel embed` with SIGKILL after its first shard, run it again, compare."""
    args = ["embed", str(fashion_slice), "--shard-size", "8", "--batch-size", "4", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_cli(*args, "--out", str(full)), check=True, env=env, capture_output=True)

    part = tmp_path / "part"
    # --no-cache: the first run filled the vector cache, and a run served from it ends before any kill
    proc = subprocess.Popen(_cli(*args, "--out", str(part), "--workers", "1", "--no-cache"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (part / "part-00000.parquet").exists():
        if proc.poll() is not None:
            pytest.fail(f"embed ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in part.glob("part-*.parquet"))
    assert 1 <= len(done_before) < 5, "the kill should land midway"

    res = subprocess.run(_cli(*args, "--out", str(part), "--no-cache"), env=env, capture_output=True, text=True, check=True)
    assert "already done" in res.stdout
    ids_full, x_full = load_embeddings(full)
    ids_part, x_part = load_embeddings(part)
    assert list(ids_part) == list(ids_full) and len(set(ids_part)) == 40
    np.testing.assert_allclose(x_part, x_full, atol=1e-5)
    assert not list(part.glob(".*tmp")), "no temporary files survive"


def test_append_embeds_only_the_new_rows_into_the_same_store(fashion_slice: Path, image_encoder, tmp_path: Path) -> None:
    """A grown catalog (reordered, 16 new rows, one a broken file) appended to the store equals a store embedded
    from scratch, row for row; the old shards are untouched; a killed append resumes; a second append adds nothing;
    a graph of the old store says it is stale, and updated it equals a rebuild."""
    from simlabel.errors import InputError
    from simlabel.files import KILL_ENV
    from simlabel.graph import GraphConfig, build_graph, update_graph
    from simlabel.store import read_manifest

    df = pd.read_csv(fashion_slice, dtype=str)
    df.head(24).to_csv(tmp_path / "day1.csv", index=False)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    grown = pd.concat([df.iloc[::-1], df.head(1).assign(id="broken-1", image=str(bad))], ignore_index=True)
    grown.to_csv(tmp_path / "day2.csv", index=False)
    kw = dict(image_encoder=image_encoder, shard_size=8, batch_size=4, progress=False, cache=False, text_col="title")
    out = tmp_path / "emb"
    embed(tmp_path / "day1.csv", out, **kw)
    old_graph = build_graph(out, config=GraphConfig(k=5), progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    with pytest.raises(StoreError, match="append"):  # a plain embed of the grown catalog is another job
        embed(tmp_path / "day2.csv", out, **kw)

    # killed after the first appended shard, then run again: it resumes, no row twice
    env = {**os.environ, KILL_ENV: "embed:after-shard", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(_cli("embed", str(tmp_path / "day2.csv"), "--out", str(out), "--append", "--shard-size", "8",
                               "--batch-size", "4", "--no-cache", "--no-progress", "--device", "cpu", "--text-col", "title"), env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in out.glob("part-x0001-*.parquet")] == ["part-x0001-00000.parquet"]
    made = embed(tmp_path / "day2.csv", out, **kw, append=True)
    assert made.appended is not None and made.appended["generation"] == 1
    assert made.appended["n_new"] == 17 and made.appended["n_embedded"] == 16  # the broken file is recorded
    assert made.n_failed == 1 and "broken-1" in pd.read_csv(out / "errors.csv")["id"].tolist()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-0*.parquet")} == mtimes  # old shards untouched
    assert made.text is not None and made.text.appended["n_embedded"] == 17  # the titles too (the broken row has one)

    ids, X = load_embeddings(out)
    assert len(ids) == len(set(ids)) == 40
    assert list(ids[:24]) == df["id"].head(24).tolist()  # the old rows keep their positions
    fresh = tmp_path / "fresh"
    embed(tmp_path / "day2.csv", fresh, **kw)
    ref = load_embeddings(fresh)
    np.testing.assert_allclose(X, ref.rows(ids).matrix, atol=1e-5)
    man = read_manifest(out)
    assert len(man["appends"]) == 1 and man["appends"][0]["shards"][0] == "part-x0001-00000.parquet"

    again = embed(tmp_path / "day2.csv", out, **kw, append=True)
    assert again.appended is None and again.n_embedded == 40 and len(read_manifest(out)["appends"]) == 1

    grown_emb = load_embeddings(out)
    assert grown_emb.fingerprint != old_graph.fingerprint
    with pytest.raises(InputError, match="grew.*--update"):
        old_graph.check_matches(grown_emb)
    updated = update_graph(old_graph, grown_emb, progress=False)
    rebuilt = build_graph(grown_emb, config=GraphConfig(k=5), progress=False)
    assert list(updated.ids) == list(rebuilt.ids)
    np.testing.assert_array_equal(updated.neighbors, rebuilt.neighbors)

    # the day's new rows alone: checked for label errors, chosen from, predicted
    from typer.testing import CliRunner

    from simlabel.cli import app

    new_ids = sorted(set(ids) - set(df["id"].head(24)))
    pd.DataFrame({"id": new_ids}).to_csv(tmp_path / "new.csv", index=False)
    grown[grown["id"] != "broken-1"].assign(label=grown["master_category"]).to_csv(tmp_path / "labels.csv", index=False)
    run = CliRunner()
    r = run.invoke(app, ["suspects", "--emb", str(out), "--labels", str(tmp_path / "labels.csv"), "--k", "3", "--all",
                         "--ids", str(tmp_path / "new.csv"), "--out", str(tmp_path / "sus.csv"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert sorted(pd.read_csv(tmp_path / "sus.csv", dtype=str)["id"]) == new_ids
    r = run.invoke(app, ["select", "--emb", str(out), "--budget", "4", "--strategy", "typiclust", "--ids",
                         str(tmp_path / "new.csv"), "--out", str(tmp_path / "q.csv"), "--no-progress"])
    assert r.exit_code == 0, r.output
    chosen = pd.read_csv(tmp_path / "q.csv", dtype=str)["id"]
    assert len(chosen) == 4 and set(chosen) <= set(new_ids)
