"""Issue 11's guarantees: complete artifacts only, output sets that appear together, checked
provenance, one writer per output, inputs validated where they enter. Each test fails on the
code before them; kills are injected at the exact point between two writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simlabel.cli import app
from simlabel.errors import CatalogError, InputError, LabelFileError, LockedError, StoreError
from simlabel.files import KILL_ENV, exclusive
from simlabel.store import load_embeddings, shard_name, write_shard

runner = CliRunner()


def cli(*args: str, kill: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The real command line in a fresh process (so a kill point can SIGKILL it)."""
    env = {**os.environ, **({KILL_ENV: kill} if kill else {})}
    res = subprocess.run([sys.executable, "-m", "simlabel.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def store(path: Path, n: int = 60, dim: int = 8, model: str = "toy", seed: int = 0, prefix: str = "i") -> list[str]:
    """A complete embedding store (with the manifest embed writes) of ``n`` clustered rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 3
    X = (centres[np.arange(n) % 3] + rng.normal(size=(n, dim))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = [f"{prefix}{i}" for i in range(n)]
    write_shard(path / shard_name(0), ids, X, {"model": model, "model_version": f"{model}-v1", "modality": "image"})
    (path / "manifest.json").write_text(json.dumps({"n_items": n, "shard_size": 1024, "model_version": f"{model}-v1"}))
    return ids


def seeds_file(path: Path, ids: list[str], n: int = 12) -> Path:
    pd.DataFrame({"id": ids[:n], "label": [f"c{i % 3}" for i in range(n)]}).to_csv(path, index=False)
    return path


# -- 1. complete artifacts that belong to their inputs --------------------------------------------


def test_a_partial_store_is_refused_with_the_counts_and_the_resume_command(clothing_slice: Path, tmp_path: Path) -> None:
    emb = tmp_path / "emb"
    res = cli("embed", str(clothing_slice), "--out", str(emb), "--shard-size", "16", "--batch-size", "8",
              "--no-progress", "--device", "cpu", kill="embed:after-shard")
    assert res.returncode == -9  # killed after its first shard
    with pytest.raises(StoreError, match=r"incomplete embedding store: 1 of 3 shards written .* of 47 rows.*simlabel embed .*--out"):
        load_embeddings(emb)
    assert len(load_embeddings(emb, allow_partial=True).ids) <= 16
    for argv in (["index", str(emb), "--out", str(tmp_path / "i.faiss")],
                 ["train", "--emb", str(emb), "--labels", str(clothing_slice), "--out", str(tmp_path / "m")]):
        r = runner.invoke(app, argv)
        assert r.exit_code == 1 and "incomplete embedding store" in r.output, r.output
    assert runner.invoke(app, ["index", str(emb), "--out", str(tmp_path / "i.faiss"), "--allow-partial"]).exit_code == 0
    # the same command finishes the job, and then the store loads
    cli("embed", str(clothing_slice), "--out", str(emb), "--shard-size", "16", "--batch-size", "8", "--no-progress", "--device", "cpu", check=True)
    assert len(load_embeddings(emb).ids) == 42  # 47 rows, 5 planted bad files


def test_provenance_a_model_or_an_index_of_other_embeddings_is_refused(tmp_path: Path) -> None:
    ids = store(tmp_path / "a", model="toy")
    store(tmp_path / "b", model="other", seed=1)  # same ids, same width, another model
    seeds_file(tmp_path / "s.csv", ids, 30)
    assert runner.invoke(app, ["train", "--emb", str(tmp_path / "a"), "--labels", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")]).exit_code == 0
    r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--emb", str(tmp_path / "b"), "--labels", str(tmp_path / "s.csv")])
    assert r.exit_code == 1 and "was trained on embeddings of toy|toy-v1|8|image" in r.output and "other|other-v1" in r.output
    assert runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--emb", str(tmp_path / "a"), "--labels", str(tmp_path / "s.csv")]).exit_code == 0
    # an index of other embeddings, same width or not
    store(tmp_path / "c", dim=4)
    for other in ("b", "c"):
        assert runner.invoke(app, ["index", str(tmp_path / other), "--out", str(tmp_path / f"{other}.faiss")]).exit_code == 0
        r = runner.invoke(app, ["augment", "--emb", str(tmp_path / "a"), "--labels", str(tmp_path / "s.csv"),
                                "--index", str(tmp_path / f"{other}.faiss"), "--out", str(tmp_path / "aug.csv")])
        assert r.exit_code == 1 and "built from other embeddings" in r.output, r.output


def test_no_stale_companions_the_command_owns_its_whole_output_set(tmp_path: Path) -> None:
    ids = store(tmp_path / "e")
    seeds_file(tmp_path / "s.csv", ids, 30)
    base = ["augment", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--k", "3", "--out", str(tmp_path / "aug.csv")]
    assert runner.invoke(app, [*base, "--holdout-frac", "0.3"]).exit_code == 0
    first = json.loads((tmp_path / "aug.csv.summary.json").read_text())
    assert (tmp_path / "aug.csv.holdout.csv").exists() and first["state"] == "complete"
    assert runner.invoke(app, base).exit_code == 0
    second = json.loads((tmp_path / "aug.csv.summary.json").read_text())
    assert not (tmp_path / "aug.csv.holdout.csv").exists()  # the earlier run's holdout is gone with it
    assert second["run"]["id"] != first["run"]["id"] and second["holdout"] == 0
    assert set(second["members"]) == {"aug.csv"}


# -- 2. outputs that belong together appear together ------------------------------------------------


@pytest.mark.parametrize("point", ["set:writing", "set:member-0"])
def test_a_kill_inside_an_augment_set_leaves_nothing_that_loads_as_valid(tmp_path: Path, point: str) -> None:
    ids = store(tmp_path / "e")
    seeds_file(tmp_path / "s.csv", ids, 30)
    base = ["augment", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--k", "3", "--out", str(tmp_path / "aug.csv")]
    cli(*base, "--holdout-frac", "0.3", check=True)
    res = cli(*base, "--holdout-frac", "0.5", "--seed", "1", kill=point)
    assert res.returncode == -9
    for member in ("aug.csv", "aug.csv.holdout.csv"):
        r = runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / member), "--out", str(tmp_path / "m")])
        assert r.exit_code == 1 and ("did not finish" in r.output or "does not match" in r.output), r.output
    cli(*base, "--holdout-frac", "0.5", "--seed", "1", check=True)  # a rerun repairs it
    assert runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "aug.csv"), "--out", str(tmp_path / "m")]).exit_code == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or lock file left


def test_a_kill_inside_an_index_set_is_refused_on_load(tmp_path: Path) -> None:
    from simlabel.index import NeighborIndex

    store(tmp_path / "e")
    store(tmp_path / "f", n=40, seed=2)
    cli("index", str(tmp_path / "e"), "--out", str(tmp_path / "i.faiss"), check=True)
    assert cli("index", str(tmp_path / "f"), "--out", str(tmp_path / "i.faiss"), kill="set:member-0").returncode == -9
    with pytest.raises(StoreError, match="did not finish"):
        NeighborIndex.load(tmp_path / "i.faiss")
    cli("index", str(tmp_path / "f"), "--out", str(tmp_path / "i.faiss"), check=True)
    assert len(NeighborIndex.load(tmp_path / "i.faiss")) == 40


@pytest.mark.parametrize("point", ["train:between-weights-and-config", "dir:swapped-out"])
def test_a_kill_while_a_model_is_written_never_mixes_two_runs(tmp_path: Path, point: str) -> None:
    from simlabel.heads import EmbeddingClassifier

    ids = store(tmp_path / "e")
    seeds_file(tmp_path / "s.csv", ids, 30)
    base = ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")]
    cli(*base, "--epochs", "5", check=True)
    before = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cli(*base, "--epochs", "7", "--head", "mlp", kill=point).returncode == -9
    if (tmp_path / "m").exists():  # killed before the swap: the old model, whole
        assert json.loads((tmp_path / "m" / "config.json").read_text()) == before
        EmbeddingClassifier.load(tmp_path / "m")
    else:  # killed between the two renames: no model at all, never a mixed one
        with pytest.raises(FileNotFoundError, match="not a model folder"):
            EmbeddingClassifier.load(tmp_path / "m")
    cli(*base, "--epochs", "7", "--head", "mlp", check=True)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["head"] == "mlp"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # leftovers were cleaned


def test_outputs_get_the_users_permissions(tmp_path: Path) -> None:
    ids = store(tmp_path / "e")
    seeds_file(tmp_path / "s.csv", ids, 30)
    old = os.umask(0o022)
    try:
        assert runner.invoke(app, ["augment", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--k", "3",
                                   "--holdout-frac", "0.3", "--out", str(tmp_path / "aug.csv")]).exit_code == 0
        assert runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")]).exit_code == 0
    finally:
        os.umask(old)
    for p in ("aug.csv", "aug.csv.holdout.csv", "aug.csv.summary.json", "m/config.json", "m/weights.pt"):
        assert stat.S_IMODE((tmp_path / p).stat().st_mode) == 0o644, p
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755


# -- 3. one writer per output -----------------------------------------------------------------------


def test_a_second_writer_fails_at_once_naming_the_holder_or_waits(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with exclusive(target):
        with pytest.raises(LockedError, match=rf"being written by another simlabel process \(pid {os.getpid()} .*`wait`"):
            with exclusive(target):
                pass
        ids = store(tmp_path / "e")
        seeds_file(tmp_path / "s.csv", ids, 30)
        r = cli("augment", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--out", str(target))
        assert r.returncode == 1 and f"pid {os.getpid()}" in r.stderr
    got: list[float] = []

    def hold() -> None:
        with exclusive(target):
            time.sleep(0.5)

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    with exclusive(target, wait=True, poll=0.05):
        got.append(time.monotonic() - start)
    t.join()
    assert got[0] > 0.2  # it waited for the holder instead of failing


# -- 4. inputs validated where they enter -----------------------------------------------------------


@pytest.mark.parametrize(("cell", "message"), [("nan", "is not a finite number >= 0"), ("-1", "is not a finite number >= 0"),
                                              ("inf", "is not a finite number >= 0"), ("heavy", "is not a number")])
def test_bad_sample_weights_name_the_file_and_line(tmp_path: Path, cell: str, message: str) -> None:
    ids = store(tmp_path / "e")
    df = pd.DataFrame({"id": ids[:30], "label": [f"c{i % 3}" for i in range(30)], "weight": ["1"] * 30})
    df.loc[7, "weight"] = cell
    df.to_csv(tmp_path / "w.csv", index=False)
    r = runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "w.csv"), "--weight-col", "weight", "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "w.csv, line 9, column 'weight'" in r.output and message in r.output, r.output
    df["weight"] = "0"
    df.to_csv(tmp_path / "w.csv", index=False)
    r = runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "w.csv"), "--weight-col", "weight", "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "every sample weight is 0 (all weights zero)" in r.output
    assert not (tmp_path / "m").exists()


def test_a_handful_of_labels_per_class_is_trained_and_reported(tmp_path: Path) -> None:
    from simlabel.heads import EmbeddingClassifier, HeadConfig

    rng = np.random.default_rng(0)
    X = rng.normal(size=(14, 6)).astype(np.float32)
    y = np.array(["a"] * 6 + ["b"] * 6 + ["rare1", "rare2"])
    for seed in range(20):
        clf = EmbeddingClassifier(HeadConfig(max_epochs=5, seed=seed)).fit(X, y)
        assert set(clf.classes_) == {"a", "b", "rare1", "rare2"}
        # a class of one is never taken out of training: it is reported instead
        assert {"rare1", "rare2"} <= set(clf.classes_without_validation_)
        assert any("too few rows to validate" in w for w in clf.warnings_)


def test_divergence_is_an_error_not_a_nan_model() -> None:
    from simlabel.heads import EmbeddingClassifier, HeadConfig

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(40, 4)) * 1e30).astype(np.float32)
    y = np.array(["a", "b"] * 20)
    with pytest.raises(InputError, match=r"training diverged at epoch \d+ \(loss (inf|nan)\)"):
        EmbeddingClassifier(HeadConfig(lr=1e6, max_epochs=5)).fit(X, y)


def test_parquet_column_types_are_checked_at_load(tmp_path: Path) -> None:
    from simlabel.catalog import load_catalog

    p = tmp_path / "c.parquet"
    pd.DataFrame({"id": ["a", "b"], "image": [1.5, np.nan]}).to_parquet(p)
    with pytest.raises(CatalogError, match=r"column 'image' \(image\) must hold text; it holds double"):
        load_catalog(p)
    pd.DataFrame({"id": [["1834fc07"], ["x"]], "image": ["a.jpg", "b.jpg"]}).to_parquet(p)
    with pytest.raises(CatalogError, match=r"column 'id' \(id\) must hold text; it holds list<element: string>"):
        load_catalog(p)
    pd.DataFrame({"id": ["a"], "image": [b"\xff\xd8"]}).to_parquet(p)
    with pytest.raises(CatalogError, match="holds binary .*decode them to text"):
        load_catalog(p)
    pd.DataFrame({"id": [7, 8], "image": ["a.jpg", "b.jpg"]}).to_parquet(p)  # integer ids are fine
    assert load_catalog(p).ids.tolist() == ["7", "8"]


def test_empty_and_header_only_inputs_say_so(tmp_path: Path) -> None:
    from simlabel.catalog import load_catalog
    from simlabel.labels.io import read_labels

    (tmp_path / "h.csv").write_text("id,image,label\n")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(CatalogError, match=r"h\.csv: has a header \(id, image, label\) but no rows"):
        load_catalog(tmp_path / "h.csv")
    with pytest.raises(CatalogError, match=r"e\.csv: is empty"):
        load_catalog(tmp_path / "e.csv")
    with pytest.raises(LabelFileError, match=r"h\.csv: label file has a header .* but no rows"):
        read_labels(tmp_path / "h.csv")
    r = runner.invoke(app, ["embed", str(tmp_path / "h.csv"), "--out", str(tmp_path / "emb"), "--no-progress"])
    assert r.exit_code == 1 and "but no rows" in r.output


def test_holdout_is_a_list_of_ids_and_k_is_checked(tmp_path: Path) -> None:
    ids = store(tmp_path / "e", n=30)
    seeds_file(tmp_path / "s.csv", ids, 12)
    pd.DataFrame({"id": ids[:3], "note": ["x"] * 3}).to_csv(tmp_path / "h.csv", index=False)
    r = runner.invoke(app, ["augment", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--k", "3",
                            "--holdout", str(tmp_path / "h.csv"), "--out", str(tmp_path / "aug.csv")])
    assert r.exit_code == 0, r.output
    aug = pd.read_csv(tmp_path / "aug.csv", dtype=str)
    assert not set(aug["id"]) & set(ids[:3])  # held out: never labelled
    r = runner.invoke(app, ["propagate", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--k", "40",
                            "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 1 and "k=40 is too large: the graph has 30 nodes" in r.output


def test_errors_name_their_file(tmp_path: Path) -> None:
    ids = store(tmp_path / "e")
    seeds_file(tmp_path / "s.csv", ids, 30)
    assert runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")]).exit_code == 0
    (tmp_path / "m" / "config.json").write_text("{not json")
    r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv")])
    assert r.exit_code == 1 and "config.json: model config is not valid JSON" in r.output
    (tmp_path / "sem.json").write_text("[1, 2")
    r = runner.invoke(app, ["side-info", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--semantics",
                            str(tmp_path / "sem.json"), "--out", str(tmp_path / "w.csv")])
    assert r.exit_code == 1 and "sem.json" in r.output and "Traceback" not in r.output
    (tmp_path / "x.csv").write_text("sku\na\n")
    r = runner.invoke(app, ["propagate", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--exclude",
                            str(tmp_path / "x.csv"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 1 and "x.csv: exclude file is missing column(s) id" in r.output


def test_duplicate_ids_across_shards_are_refused_once_at_load(tmp_path: Path) -> None:
    write_shard(tmp_path / "e" / shard_name(0), ["a", "b"], np.eye(2, dtype=np.float32))
    write_shard(tmp_path / "e" / shard_name(1), ["c", "a"], np.eye(2, dtype=np.float32))
    with pytest.raises(StoreError, match=r"id 'a' is in more than one row \(part-00000.parquet, part-00001.parquet"):
        load_embeddings(tmp_path / "e")
    pd.DataFrame({"id": ["a", "b"], "label": ["x", "y"]}).to_csv(tmp_path / "s.csv", index=False)
    r = runner.invoke(app, ["train", "--emb", str(tmp_path / "e"), "--labels", str(tmp_path / "s.csv"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 1 and "more than one row" in r.output


# -- 5. damaged images and retries ------------------------------------------------------------------


def test_retry_failed_embeds_the_fixed_items_into_a_new_shard(clothing_slice: Path, tmp_path: Path) -> None:
    df = pd.read_csv(clothing_slice, dtype=str)
    good = df["image"].iloc[0]
    emb = tmp_path / "emb"
    base = ["embed", str(clothing_slice), "--out", str(emb), "--no-progress", "--device", "cpu"]
    assert runner.invoke(app, base).exit_code == 0
    before = pd.read_csv(emb / "errors.csv", dtype=str)
    assert "bad-missing" in set(before["id"])
    missing = df.set_index("id").loc["bad-missing", "image"]
    Path(missing).write_bytes(Path(good).read_bytes())  # the file is fixed
    r = runner.invoke(app, [*base, "--retry-failed"])
    assert r.exit_code == 0, r.output
    after = pd.read_csv(emb / "errors.csv", dtype=str)
    assert set(after["id"]) == set(before["id"]) - {"bad-missing"}
    assert json.loads((emb / "manifest.json").read_text())["retry_shards"] == ["part-r0000.parquet"]
    loaded = load_embeddings(emb)
    assert "bad-missing" in set(loaded.ids) and len(loaded.ids) == len(df) - len(after)
    # nothing to retry: no new shard
    assert runner.invoke(app, [*base, "--retry-failed"]).exit_code == 0
    assert json.loads((emb / "manifest.json").read_text())["retry_shards"] == ["part-r0000.parquet"]


def test_embedding_records_damage_pillow_lets_through(tmp_path: Path) -> None:
    from tests.helpers import slice_catalog
    from tests.test_images import _photo

    df = slice_catalog("clothing-small", 4, tmp_path)
    data = bytearray(Path(df["image"].iloc[0]).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 400] = bytes(400)
    (tmp_path / "mid.jpg").write_bytes(bytes(data))
    _photo(40, 40).convert("P").save(tmp_path / "g.gif")
    g = (tmp_path / "g.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(g[: len(g) // 2])
    extra = pd.DataFrame({"id": ["mid", "cut"], "image": [str(tmp_path / "mid.jpg"), str(tmp_path / "cut.gif")]})
    pd.concat([df[["id", "image"]], extra]).to_csv(tmp_path / "c.csv", index=False)
    assert runner.invoke(app, ["embed", str(tmp_path / "c.csv"), "--out", str(tmp_path / "emb"), "--no-progress", "--device", "cpu"]).exit_code == 0
    errors = pd.read_csv(tmp_path / "emb" / "errors.csv", dtype=str).set_index("id")["reason"].to_dict()
    assert errors == {"mid": "corrupt", "cut": "truncated"}


def test_decoding_is_bounded_by_pixels(tmp_path: Path, image_encoder) -> None:
    from PIL import Image

    from simlabel.embedding import embed
    from simlabel.images import PixelBudget

    rows = []
    for i in range(6):
        Image.new("RGB", (1200, 1000), (i * 40, 80, 160)).save(tmp_path / f"big{i}.png")
        rows.append({"id": f"b{i}", "image": str(tmp_path / f"big{i}.png")})
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    seen = []
    original = PixelBudget.reserve

    def spy(self, n):
        seen.append(self)
        return original(self, n)

    pytest.MonkeyPatch().setattr(PixelBudget, "reserve", spy)
    try:
        res = embed(tmp_path / "c.csv", tmp_path / "emb", image_encoder=image_encoder, workers=4, pixel_budget=2_500_000, progress=False)
    finally:
        pytest.MonkeyPatch().undo()
    assert res.n_embedded == 6
    budget = seen[0]
    assert budget.capacity == 2_500_000 and 1_200_000 <= budget.peak <= 2_500_000  # at most two of the six at once
