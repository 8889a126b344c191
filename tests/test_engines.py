"""Inference engines against fp32 torch on real images, the agreement gate, the cached probe, the decoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.engines import (
    GATE,
    Calibration,
    agreement,
    check_engine,
    choose_engine,
    cpu_flags,
    make_engine,
    parse_gate,
    passes,
    quantize_int8,
)
from simlabel.errors import InputError, SimlabelWarning
from tests.helpers import slice_catalog


@pytest.fixture(scope="module")
def real_pixels(tmp_path_factory):
    """120 real clothing-small photos, preprocessed for EfficientNet-Lite0, with their labels."""
    from simlabel.encoders.efficientnet import EfficientNetLiteEncoder
    from simlabel.images import load_image

    tmp = tmp_path_factory.mktemp("engines")
    df = slice_catalog("clothing-small", 120, tmp, stratify="label")
    enc = EfficientNetLiteEncoder(backend="onnx", threads=2)
    X = np.stack([load_image(p, draft_size=224, transform=enc.preprocess) for p in df["image"]])
    torch_enc = EfficientNetLiteEncoder(backend="torch", threads=2)
    ref = torch_enc.features(X)
    return enc, X, df["label"].to_numpy(), ref, df["id"].tolist()


def _has(*flags: str) -> bool:
    return any(f in cpu_flags().split() for f in flags)


@pytest.mark.parametrize(("backend", "precision", "min_cos", "min_recall"), [
    ("onnx", "fp32", 0.99999, 0.999), ("openvino", "fp32", 0.9999, 0.98), ("openvino", "bf16", 0.99, 0.85),
    ("onnx", "int8", 0.97, 0.7), ("openvino", "int8", 0.97, 0.7)])
def test_each_engine_against_fp32_torch_on_real_images(real_pixels, backend, precision, min_cos, min_recall):
    if precision == "bf16" and not _has("avx512_bf16", "amx_bf16"):
        pytest.skip("bf16 needs AVX512-BF16 or AMX (this CPU has neither: OpenVINO would run it as fp32)")
    if precision == "int8" and not _has("avx512_vnni", "avx_vnni", "amx_int8", "avx2"):
        pytest.skip("int8 kernels need AVX2 at least")
    pytest.importorskip("openvino") if backend == "openvino" else None
    enc, X, labels, ref, ids = real_pixels
    int8 = quantize_int8(enc.export_onnx(), Calibration(X[:60], ids[:60], 0)) if precision == "int8" else None
    eng = make_engine(backend, precision, enc.export_onnx(), 2, int8)
    got = eng(X[60:])
    fig = agreement(ref[60:], got, labels[60:])
    assert fig["cosine"] >= min_cos and fig["recall_at_10"] >= min_recall, fig
    assert got.shape == (60, 1280) and got.dtype == np.float32


def test_agreement_and_the_gate_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 8)).astype(np.float32)
    same = agreement(a, a * 3.0)  # a scale is not a disagreement
    assert same["cosine"] == pytest.approx(1.0) and same["recall_at_10"] == 1.0 and same["probe_top1"] == 1.0
    noisy = agreement(a, a + rng.normal(scale=2.0, size=a.shape).astype(np.float32))
    assert noisy["cosine"] < 0.8 and noisy["recall_at_10"] < 0.6
    assert passes(same) == (True, "")
    ok, why = passes(noisy)
    assert not ok and why.startswith("cosine ")
    assert passes({"cosine": 1, "recall_at_10": 0.9, "probe_top1": 1}) == (False, f"recall_at_10 0.9000 < {GATE['recall_at_10']}")
    with pytest.raises(InputError, match="same shape"):
        agreement(a, a[:10])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(24, 120), noise=st.floats(0.0, 3.0), size=st.integers(1, 10**7), seed=st.integers(0, 99))
def test_agreement_figures_are_bounded_and_the_extrapolation_never_raises_recall(n, noise, size, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = a + rng.normal(scale=noise, size=a.shape).astype(np.float32)
    fig = agreement(a, b, catalog_size=size)
    assert -1 <= fig["cosine"] <= 1 + 1e-6 and 0 <= fig["recall_at_10"] <= fig["recall_at_10_sample"] <= 1
    assert 0 <= fig["probe_top1"] <= 1 and fig["recall_at_10_se"] >= 0


def test_the_recall_must_clear_its_floor_by_its_standard_error():
    close = {"cosine": 1, "recall_at_10": 0.955, "recall_at_10_se": 0.01, "probe_top1": 1}
    ok, why = passes(close)  # 0.955 - 1 x 0.01 < 0.95: not confidently above the floor
    assert not ok and why == "recall_at_10 0.9550 - 1 x 0.0100 (its standard error) < 0.95"
    assert passes(close, {"sigmas": 0}) == (True, "")  # the point estimate alone
    assert passes({**close, "recall_at_10_se": 0.004}) == (True, "")
    assert passes(close, {"recall_at_10": 0.9})[0]  # a partial gate overrides only its floors


def test_check_engine_names_the_impossible_pairs():
    for b, p, msg in (("onnx", "bf16", "bf16 runs on --backend openvino"), ("torch", "int8", "--backend torch runs fp32"),
                      ("cuda", "fp32", "backend must be one of"), ("onnx", "fp16", "precision must be one of")):
        with pytest.raises(InputError, match=msg):
            check_engine(b, p)


def test_a_failed_gate_falls_back_to_fp32_with_the_figure(real_pixels):
    enc, X, labels, _, ids = real_pixels
    strict = {"cosine": 1.5}  # no reduced precision can reach it
    with pytest.warns(SimlabelWarning, match=r"onnx int8 failed the agreement gate against fp32 \(cosine 0\.9\d+ < 1\.5\)"):
        eng, choice = choose_engine(enc.export_onnx(), enc.version, (ids, X, labels), backend="onnx", precision="int8",
                                    gate=strict)
    assert (choice.backend, choice.precision) == ("onnx", "fp32") and choice.reason.startswith("fallback: cosine")
    assert [c["passes"] for c in choice.candidates] == [False, True]
    assert choice.calibration["n"] == 60 and choice.calibration["seed"] == 0  # the calibration set is recorded
    with pytest.warns(SimlabelWarning, match="too few to calibrate and gate"):
        _, small = choose_engine(enc.export_onnx(), enc.version, (ids[:20], X[:20], labels[:20]), precision="int8")
    assert small.precision == "fp32"


def test_auto_reuses_its_measured_speeds_and_a_new_model_measures_again(real_pixels, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, _, ids = real_pixels
    calls = []
    real_speed = E._speed
    monkeypatch.setattr(E, "_speed", lambda eng, px, **k: calls.append(eng) or real_speed(eng, px, seconds=0.2))
    _, first = choose_engine(enc.export_onnx(), "model-v1", (ids, X, labels), backend="onnx")
    n = len(calls)
    assert n == 2 and not first.cached  # fp32 and int8 measured once ...
    _, again = choose_engine(enc.export_onnx(), "model-v1", (ids, X, labels), backend="onnx")
    assert len(calls) == n and again.cached  # ... and reused on this machine for this model
    assert (again.backend, again.precision) == (first.backend, first.precision)
    _, other = choose_engine(enc.export_onnx(), "model-v2", (ids, X, labels), backend="onnx")
    assert len(calls) == n + 2 and not other.cached  # another model version: measured again


def test_embed_with_a_reduced_precision_records_it_and_resumes_with_it(tmp_path: Path):
    from simlabel.embedding import embed
    from simlabel.store import load_embeddings

    more = slice_catalog("clothing-small", 100, tmp_path, stratify="label")
    more.to_csv(tmp_path / "c.csv", index=False)
    res = embed(tmp_path / "c.csv", tmp_path / "emb", precision="int8", backend="onnx", gate={"cosine": 0.9, "recall_at_10": 0.5,
                "probe_top1": 0.5}, progress=False, cache=False)
    assert (res.engine["backend"], res.engine["precision"]) == ("onnx", "int8")
    e = load_embeddings(tmp_path / "emb")
    assert "/int8-" in e.meta["model_version"] and e.space != load_embeddings_fp32(tmp_path, more).space
    summary = json.loads((tmp_path / "emb" / "summary.json").read_text())
    assert summary["engine"]["calibration"]["n"] == 50 and summary["engine"]["gate"]["cosine"] > 0.9
    again = embed(tmp_path / "c.csv", tmp_path / "emb", progress=False, cache=False)  # auto, resuming: keeps int8
    assert again.engine["precision"] == "int8" and again.n_resumed == 100


def load_embeddings_fp32(tmp_path: Path, df: pd.DataFrame):
    from simlabel.embedding import embed
    from simlabel.store import load_embeddings

    res = embed(tmp_path / "c.csv", tmp_path / "emb32", precision="fp32", progress=False, cache=False)
    assert res.engine == {"backend": "onnx", "precision": "fp32", "reason": "fp32 asked for"}  # no sample, no gate
    return load_embeddings(tmp_path / "emb32")


def test_the_gate_extrapolates_recall_to_the_catalog_size(real_pixels):
    enc, X, labels, ref, ids = real_pixels
    rng = np.random.default_rng(1)
    cand = ref + rng.normal(scale=0.15 * np.abs(ref).mean(), size=ref.shape).astype(np.float32)
    here = agreement(ref, cand, labels)
    bigger = agreement(ref, cand, labels, catalog_size=100_000)
    assert here["recall_at_10"] == here["recall_at_10_sample"] == bigger["recall_at_10_sample"]
    assert bigger["recall_at_10"] <= here["recall_at_10"]  # recall never improves as the catalog grows
    assert agreement(ref, cand, labels, catalog_size=50)["recall_at_10"] == here["recall_at_10"]
    # the split-half standard error: positive for a noisy candidate, zero for an identical one
    assert 0 < bigger["recall_at_10_se"] < 0.2
    assert agreement(ref, ref.copy(), labels, catalog_size=100_000)["recall_at_10_se"] == pytest.approx(0.0, abs=1e-12)


def test_gate_settings_parse_and_name_what_is_wrong():
    assert parse_gate("recall_at_10=0.93, sigmas=0") == {"recall_at_10": 0.93, "sigmas": 0.0}
    assert parse_gate("") == {}
    for text, msg in (("recall=0.9", "names among cosine, recall_at_10"), ("cosine", "name=value pairs"),
                      ("cosine=high", "cosine must be a number; got 'high'"), ("probe_top1=1.5", r"in \[0, 1\]; got 1.5"),
                      ("sigmas=-1", ">= 0; got -1")):
        with pytest.raises(InputError, match=msg):
            parse_gate(text)


def test_embed_gate_option_reaches_the_gate(tmp_path: Path):
    from typer.testing import CliRunner

    from simlabel.cli import app

    slice_catalog("clothing-small", 100, tmp_path, stratify="label").to_csv(tmp_path / "c.csv", index=False)
    res = CliRunner().invoke(app, ["embed", str(tmp_path / "c.csv"), "--out", str(tmp_path / "emb"), "--backend", "onnx",
                                   "--precision", "int8", "--gate", "cosine=0.999999", "--no-progress", "--no-cache"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "emb" / "summary.json").read_text())
    assert summary["engine"]["precision"] == "fp32" and summary["engine"]["reason"].startswith("fallback: cosine 0.9")
    bad = CliRunner().invoke(app, ["embed", str(tmp_path / "c.csv"), "--out", str(tmp_path / "x"), "--gate", "recal=1"])
    assert bad.exit_code == 1 and "error: --gate takes name=value pairs" in bad.output


def test_a_clear_failure_is_refused_on_the_screen_and_fp32_is_only_checked(real_pixels, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, ref, ids = real_pixels
    int8 = quantize_int8(enc.export_onnx(), Calibration(X[:60], ids[:60], 0))
    eng = make_engine("onnx", "int8", enc.export_onnx(), 2, int8)
    monkeypatch.setattr(E, "SCREEN", 40)
    clear = E._gated(eng, ref[60:], X[60:], labels[60:], 0, None, {"recall_at_10": 1.5})  # no recall reaches 1.5
    assert clear["screened"] == 40 and clear["n"] == 40
    close = E._gated(eng, ref[60:], X[60:], labels[60:], 0, None, {"recall_at_10": 0.5})
    assert "screened" not in close and close["n"] == 60  # not clearly failing: gated on every image
    figures, ok, why = E._fp32_check(ref, make_engine("onnx", "fp32", enc.export_onnx(), 2), X)  # vs torch fp32
    assert ok and why == "" and figures["n"] == E.FP32_CHECK and figures["cosine"] > 0.9999
    figures, ok, why = E._fp32_check(ref, eng, X)  # int8 posing as fp32 computes other vectors
    assert not ok and why.startswith("cosine 0.99") and "fp32 must compute fp32's vectors" in why


def test_a_resumed_store_keeps_its_fp32_engine_without_a_probe(tmp_path: Path, monkeypatch):
    import simlabel.embedding as embedding
    from simlabel.embedding import embed
    from simlabel.engines import available

    if not available("openvino"):
        pytest.skip("openvino is not installed")
    slice_catalog("clothing-small", 60, tmp_path).to_csv(tmp_path / "c.csv", index=False)
    first = embed(tmp_path / "c.csv", tmp_path / "emb", backend="openvino", precision="fp32", progress=False, cache=False)
    assert (first.engine["backend"], first.engine["precision"]) == ("openvino", "fp32")
    decoded = []
    real = embedding.load_image
    monkeypatch.setattr(embedding, "load_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    again = embed(tmp_path / "c.csv", tmp_path / "emb", progress=False, cache=False)  # auto, resuming
    assert again.engine == {"backend": "openvino", "precision": "fp32", "reason": "the store was started with it",
                            "calibration": {"key": None}}
    assert again.n_resumed == 60 and decoded == []  # no sample decoded for a store that keeps its engine
