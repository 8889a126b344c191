"""simlabel export: one ONNX graph from pixels to the model's probabilities, equal to predict --catalog's through
ONNX Runtime and OpenVINO on real images; its metadata; models of titles refused with nothing written; and the
README's reference script run in a fresh environment that holds only onnxruntime, Pillow and numpy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import InputError
from simlabel.head_config import HeadConfig
from tests.helpers import ROOT, slice_catalog


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, image_encoder) -> dict:
    """A calibrated model on 40 real clothing photos, its predictions from the catalog, and its export."""
    from simlabel.embedding import embed
    from simlabel.export import export_classifier
    from simlabel.prediction import predict
    from simlabel.training import train

    root = tmp_path_factory.mktemp("export")
    df = slice_catalog("clothing-small", 40, root, stratify="label")
    df.to_csv(root / "catalog.csv", index=False)
    embed(root / "catalog.csv", root / "emb", image_encoder=image_encoder, progress=False)
    train(root / "emb", root / "catalog.csv", config=HeadConfig(device="cpu"), out=root / "model")
    rows = predict(root / "model", catalog=root / "catalog.csv", out=root / "pred", progress=False, device="cpu").table()
    made = export_classifier(root / "model", root / "classifier.onnx")
    return {"root": root, "df": df, "rows": rows.set_index("id"), "made": made}


def _pixels(df: pd.DataFrame, root: Path) -> np.ndarray:
    from simlabel.encoders import get_image_encoder
    from simlabel.images import load_image

    enc = get_image_encoder("efficientnet-lite0", "cpu")
    return np.stack([enc.preprocess(load_image(root / p)) for p in df["image"]])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_export_equals_predict_on_real_images(shipped, runtime: str) -> None:
    from simlabel.export import read_exported, run_exported

    root, df, rows = shipped["root"], shipped["df"], shipped["rows"]
    meta = read_exported(root / "classifier.onnx")
    got = run_exported(root / "classifier.onnx", _pixels(df, root), runtime=runtime)
    assert got.shape == (len(df), len(meta["classes"])) and np.allclose(got.sum(1), 1, atol=1e-5)
    want = rows.loc[df["id"].astype(str)]
    assert np.abs(got.max(1) - want["probability"].to_numpy()).max() < 1e-4
    assert (np.asarray(meta["classes"])[got.argmax(1)] == want["label"].to_numpy()).all()
    assert meta["fingerprint"] == want["model"].iloc[0] and meta["calibration"]["method"] == "temperature"
    assert meta["preprocess"]["image_size"] == 224 and meta["preprocess"]["resize"] == "center-crop"


@pytest.mark.slow
def test_the_readme_script_runs_with_onnxruntime_and_pillow_alone(shipped, tmp_path: Path) -> None:
    """A fresh venv (no pip, no site packages) given only onnxruntime, Pillow and numpy (onnxruntime's one
    dependency at import) runs the README's script, and it prints the model's labels and probabilities."""
    text = (ROOT / "README.md").read_text()
    script = re.search(r"<!-- reference-script -->\n```python\n(.*?)```\n<!-- /reference-script -->", text, re.S).group(1)
    assert len(script.strip().splitlines()) <= 25
    (tmp_path / "classify.py").write_text(script)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    import numpy
    import onnxruntime
    import PIL

    for module in (onnxruntime, PIL, numpy):
        folder = Path(module.__file__).parent
        shutil.copytree(folder, site / folder.name)
        libs = folder.with_name(f"{'pillow' if module is PIL else folder.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name)
    root, df, rows = shipped["root"], shipped["df"].head(6), shipped["rows"]
    paths = [str(root / p) for p in df["image"]]
    res = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-I", str(tmp_path / "classify.py"),
                          str(root / "classifier.onnx"), *paths], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    printed = [line.rsplit(" ", 2) for line in res.stdout.strip().splitlines()]
    want = rows.loc[df["id"].astype(str)]
    assert [p[1] for p in printed] == want["label"].tolist()
    assert np.allclose([float(p[2]) for p in printed], want["probability"], atol=1e-3)


def test_a_model_of_titles_alone_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    from simlabel.export import export_classifier
    from simlabel.store import Embeddings
    from simlabel.training import train
    from tests.helpers import blobs

    X, y = blobs(20, ["a", "b"], dim=6)
    ids = np.array([f"i{j}" for j in range(len(X))], dtype=object)
    train(Embeddings(ids, X, {"model": "img"}), pd.DataFrame({"id": ids, "label": y}),
          text_emb=Embeddings(ids, X, {"model": "txt", "modality": "text"}), inputs="text",
          config=HeadConfig(max_epochs=5, device="cpu"), out=tmp_path / "m")
    with pytest.raises(InputError, match="text inputs"):
        export_classifier(tmp_path / "m", tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.slow
def test_an_image_and_title_model_exports_as_one_graph_with_two_inputs(tmp_path: Path, image_encoder) -> None:
    """Images and titles (paper 002's inputs, concatenated or fused by attention): one graph taking the pixels and
    the tokenised title, equal to the model on real products through ONNX Runtime and OpenVINO."""
    from simlabel.embedding import embed
    from simlabel.export import check_export, export_classifier, read_exported, run_exported
    from simlabel.training import train

    df = slice_catalog("fashion-products", 40, tmp_path, stratify="master_category")
    df.to_csv(tmp_path / "catalog.csv", index=False)
    embed(tmp_path / "catalog.csv", tmp_path / "emb", image_encoder=image_encoder, text_col="title", progress=False)
    labels = df[["id", "master_category"]].rename(columns={"master_category": "label"})
    for fusion in ("none", "attention"):
        model = tmp_path / f"model-{fusion}"
        train(tmp_path / "emb", labels, text_emb=tmp_path / "emb" / "text", inputs="image+text", fusion=fusion,
              config=HeadConfig(max_epochs=10, device="cpu"), out=model)
        export_classifier(model, tmp_path / f"{fusion}.onnx")
        meta = read_exported(tmp_path / f"{fusion}.onnx")
        assert meta["inputs"] == ["pixels", "input_ids", "attention_mask"] and meta["title_encoder"]["name"] == "minilm"
        assert meta["tokenizer"].startswith("{")  # the tokenizers JSON travels with the graph
        check = check_export(tmp_path / f"{fusion}.onnx", model, tmp_path / "catalog.csv", n=12)
        assert check["images"] == 12 and set(check["max_abs_diff"]) == {"onnxruntime", "openvino"}
        assert max(check["max_abs_diff"].values()) < 1e-4, (fusion, check)
    with pytest.raises(InputError, match="titles"):  # the pixels alone are not enough
        run_exported(tmp_path / "none.onnx", np.zeros((1, 3, 224, 224), np.float32))


@pytest.mark.slow
def test_export_command_checks_itself(shipped, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from simlabel.cli import app

    root = shipped["root"]
    res = CliRunner().invoke(app, ["export", "--model", str(root / "model"), "--out", str(tmp_path / "c.onnx"),
                                   "--check", str(root / "catalog.csv")])
    assert res.exit_code == 0, res.output
    diffs = [float(m) for m in re.findall(r"largest difference from the model's probabilities ([0-9.e+-]+)", res.output)]
    assert len(diffs) == 2 and max(diffs) < 1e-4  # ONNX Runtime and OpenVINO
