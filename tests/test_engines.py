"""Inference engines against fp32 torch on real images, the agreement gate, the cached probe, the decoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.encoders.base import isa_cap
from simlabel.engines import (
    Calibration,
    agreement,
    check_engine,
    choose_engine,
    cpu_flags,
    cpu_rules_out,
    make_engine,
    noise_floor,
    parse_gate,
    passes,
    probe_pays,
    quantize_int8,
    recall_floor,
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
    fixed = {"cosine": 0.99, "recall_at_10": 0.95}  # issue 16's absolute floors
    assert passes(same, fixed) == (True, "")
    ok, why = passes(noisy, fixed)
    assert not ok and why.startswith("cosine ")
    assert passes({"cosine": 1, "recall_at_10": 0.9, "probe_top1": 1}, fixed) == (False, "recall_at_10 0.9000 < 0.95")
    with pytest.raises(ValueError, match="noise floor was not measured"):
        passes(same)  # the default floor is the data's own noise: it must have been measured
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
    fixed = {"recall_at_10": 0.95}
    close = {"cosine": 1, "recall_at_10": 0.955, "recall_at_10_se": 0.01, "probe_top1": 1}
    ok, why = passes(close, fixed)  # 0.955 - 1 x 0.01 < 0.95: not confidently above the floor
    assert not ok and why == "recall_at_10 0.9550 - 1 x 0.0100 (its standard error) < 0.95"
    assert passes(close, {**fixed, "sigmas": 0}) == (True, "")  # the point estimate alone
    assert passes({**close, "recall_at_10_se": 0.004}, fixed) == (True, "")
    assert passes(close, {"recall_at_10": 0.9})[0]  # a partial gate overrides only its floors
    assert not passes({**close, "probe_top1": 0.96}, {"recall_at_10": 0.9})[0]  # the probe's default floor stays


def test_the_noise_floor_by_hand():
    # fp32 keeps 0.930 of its 10-NN lists (se 0.006) when the pixels move by half a level: the floor is 0.924
    noise = {"noise_recall_at_10": 0.930, "noise_recall_at_10_se": 0.006}
    assert recall_floor(None, noise) == pytest.approx(0.924)
    assert recall_floor({"sigmas": 0}, noise) == pytest.approx(0.930)
    assert recall_floor({"recall_at_10": 0.95}, noise) == 0.95  # an absolute floor ignores the noise
    int8 = {"cosine": 0.985, "recall_at_10": 0.925, "recall_at_10_se": 0.02, "probe_top1": 0.98, **noise}
    assert passes(int8) == (True, "")  # no steadier than the photos' own rounding is asked: cosine gates no more
    ok, why = passes({**int8, "recall_at_10": 0.92})
    assert not ok and why.startswith("recall_at_10 0.9200 < 0.9240 (fp32's own recall under +-0.5 pixel-level noise")
    assert not passes(int8, {"cosine": 0.99})[0]  # a cosine floor gates when asked for
    assert not passes({**int8, "probe_top1": 0.96})[0]
    assert not passes(int8, {"recall_at_10": 0.95})[0]


def test_the_noise_floor_measures_fp32_against_itself(real_pixels):
    enc, X, labels, _, ids = real_pixels
    assert enc.pixel_level() == pytest.approx([2 / 255] * 3)  # std 0.5: one level is 2/255 of the input range
    fp32 = make_engine("onnx", "fp32", enc.export_onnx(), 2)
    ref = fp32(X)
    still = noise_floor(fp32, X, ref, labels, pixel_level=0.0)
    assert still["noise_recall_at_10"] == 1.0 and still["noise_cosine"] == pytest.approx(1.0, abs=1e-6)
    moved = noise_floor(fp32, X, ref, labels, pixel_level=enc.pixel_level())
    assert 0.5 < moved["noise_recall_at_10"] < 1.0 and moved["noise_recall_at_10_se"] > 0
    louder = noise_floor(fp32, X, ref, labels, pixel_level=8 * enc.pixel_level())
    assert louder["noise_recall_at_10"] < moved["noise_recall_at_10"]  # more noise, fewer lists kept
    bigger = noise_floor(fp32, X, ref, labels, pixel_level=enc.pixel_level(), catalog_size=100_000)
    assert bigger["noise_recall_at_10"] <= moved["noise_recall_at_10"]  # extrapolated as a candidate's recall is


def test_the_cpu_decides_first(monkeypatch):
    for flags in ("", "avx2", "avx2 avx512f"):
        assert "no VNNI, AVX512-BF16 or AMX" in cpu_rules_out(flags)
    for flags in ("avx2 avx_vnni", "avx2 avx512f avx512_vnni", "avx2 avx512f avx512_bf16", "avx2 amx_tile amx_int8"):
        assert cpu_rules_out(flags) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # how the suite emulates the AVX2-only kind
    assert isa_cap() == "AVX2" and set(cpu_flags().split()) <= {"avx2"} and cpu_rules_out() is not None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert cpu_flags() == ""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")  # no cap
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    native = cpu_flags()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_flags() == native


def test_auto_on_a_cpu_without_fast_units_is_fp32_at_once(real_pixels, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, _, ids = real_pixels
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    measured = []
    monkeypatch.setattr(E, "_speed", lambda eng, px, **k: measured.append(eng) or 1.0)
    eng, choice = choose_engine(enc.export_onnx(), "model-avx2", (ids, X, labels), log=measured.append)
    assert (choice.backend, choice.precision) == ("onnx", "fp32") and choice.candidates == []
    assert "no VNNI, AVX512-BF16 or AMX" in choice.reason and choice.cpu_flags in ("", "avx2")
    assert measured == [f"engine onnx fp32: {choice.reason}"]  # said once; nothing quantised, gated or timed
    _, asked = choose_engine(enc.export_onnx(), "model-avx2", (ids, X, labels), precision="int8", backend="onnx",
                             gate={"recall_at_10": 0.0, "probe_top1": 0.0})
    assert asked.precision == "int8"  # a precision asked for is still tried and gated


def test_check_engine_names_the_impossible_pairs():
    for b, p, msg in (("onnx", "bf16", "bf16 runs on `backend` openvino"), ("torch", "int8", "`backend` torch runs fp32"),
                      ("cuda", "fp32", "backend must be one of"), ("onnx", "fp16", "precision must be one of")):
        with pytest.raises(InputError, match=msg):
            check_engine(b, p)


def test_a_failed_gate_falls_back_to_fp32_with_the_figure(real_pixels):
    enc, X, labels, _, ids = real_pixels
    strict = {"cosine": 1.5}  # no reduced precision can reach it
    with pytest.warns(SimlabelWarning, match=r"onnx int8 failed the agreement gate against fp32 \(cosine [\d.]+ < 1\.5\)"):
        eng, choice = choose_engine(enc.export_onnx(), enc.version, (ids, X, labels), backend="onnx", precision="int8",
                                    gate=strict)
    assert (choice.backend, choice.precision) == ("onnx", "fp32") and choice.reason.startswith("fallback: cosine")
    assert [c["passes"] for c in choice.candidates] == [False, True]
    assert choice.calibration["n"] == 60 and choice.calibration["seed"] == 0  # the calibration set is recorded
    with pytest.warns(SimlabelWarning, match="too few to calibrate and gate"):
        _, small = choose_engine(enc.export_onnx(), enc.version, (ids[:20], X[:20], labels[:20]), precision="int8")
    assert small.precision == "fp32"


def test_the_probe_reuses_its_measured_speeds_and_a_new_model_measures_again(real_pixels, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, _, ids = real_pixels
    calls = []
    real_speed = E._speed
    monkeypatch.setattr(E, "_speed", lambda eng, px, **k: calls.append(eng) or real_speed(eng, px, seconds=0.2))
    # int8 asked for: the probe runs on every machine kind (auto would skip it on one without VNNI)
    _, first = choose_engine(enc.export_onnx(), "model-v1", (ids, X, labels), backend="onnx", precision="int8")
    n = len(calls)
    assert n == 2 and not first.cached  # fp32 and int8 measured once ...
    _, again = choose_engine(enc.export_onnx(), "model-v1", (ids, X, labels), backend="onnx", precision="int8")
    assert len(calls) == n and again.cached  # ... and reused on this machine for this model
    assert (again.backend, again.precision) == (first.backend, first.precision)
    _, other = choose_engine(enc.export_onnx(), "model-v2", (ids, X, labels), backend="onnx", precision="int8")
    assert len(calls) == n + 2 and not other.cached  # another model version: measured again


def test_embed_with_a_reduced_precision_records_it_and_resumes_with_it(tmp_path: Path):
    from simlabel.embedding import embed
    from simlabel.store import load_embeddings

    more = slice_catalog("clothing-small", 100, tmp_path, stratify="label")
    more.to_csv(tmp_path / "c.csv", index=False)
    # the gate's outcome is forced (floors of 0), not hoped for: its figures on 100 images decide nothing here
    res = embed(tmp_path / "c.csv", tmp_path / "emb", precision="int8", backend="onnx", gate={"recall_at_10": 0.0,
                "probe_top1": 0.0, "sigmas": 0}, progress=False, cache=False)
    assert (res.engine["backend"], res.engine["precision"]) == ("onnx", "int8")
    e = load_embeddings(tmp_path / "emb")
    assert "/int8-" in e.meta["model_version"] and e.space != load_embeddings_fp32(tmp_path, more).space
    summary = json.loads((tmp_path / "emb" / "summary.json").read_text())
    assert summary["engine"]["calibration"]["n"] == 50 and 0 < summary["engine"]["gate"]["cosine"] <= 1 + 1e-6
    assert summary["engine"]["floor"] == {"rule": "absolute", "recall_at_10": 0.0}
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
    assert summary["engine"]["precision"] == "fp32" and summary["engine"]["reason"].startswith("fallback: cosine ")
    assert summary["engine"]["floor"]["rule"] == "noise"  # the default floor was measured and recorded
    assert 0 < summary["engine"]["floor"]["noise_recall_at_10"] <= 1
    bad = CliRunner().invoke(app, ["embed", str(tmp_path / "c.csv"), "--out", str(tmp_path / "x"), "--gate", "recal=1"])
    assert bad.exit_code == 1 and "error: --gate takes name=value pairs" in bad.output


def test_a_clear_failure_is_refused_on_the_screen_and_fp32_is_only_checked(real_pixels, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, ref, ids = real_pixels
    int8 = quantize_int8(enc.export_onnx(), Calibration(X[:60], ids[:60], 0))
    eng = make_engine("onnx", "int8", enc.export_onnx(), 2, int8)
    monkeypatch.setattr(E, "SCREEN", 40)
    clear = E._gated(eng, ref[60:], X[60:], labels[60:], 0, None, 1.5)  # no recall reaches 1.5
    assert clear["screened"] == 40 and clear["n"] == 40
    close = E._gated(eng, ref[60:], X[60:], labels[60:], 0, None, 0.5)
    assert "screened" not in close and close["n"] == 60  # not clearly failing: gated on every image
    figures, ok, why = E._fp32_check(ref, make_engine("onnx", "fp32", enc.export_onnx(), 2), X)  # vs torch fp32
    assert ok and why == "" and figures["n"] == E.FP32_CHECK and figures["cosine"] > 0.9999
    figures, ok, why = E._fp32_check(ref, eng, X)  # int8 posing as fp32 computes other vectors
    # refused, and the reason names the figure; its digits are the CPU's (0.995 with VNNI, 0.986 on AVX2)
    assert not ok and figures["cosine"] < E.FP32_COSINE
    assert why == f"cosine {figures['cosine']:.6f} < {E.FP32_COSINE} (fp32 must compute fp32's vectors)"


def test_a_resumed_store_keeps_its_fp32_engine_without_a_probe(tmp_path: Path, monkeypatch):
    from simlabel.embedding import embed
    from simlabel.engines import available

    if not available("openvino"):
        pytest.skip("openvino is not installed")
    slice_catalog("clothing-small", 60, tmp_path).to_csv(tmp_path / "c.csv", index=False)
    first = embed(tmp_path / "c.csv", tmp_path / "emb", backend="openvino", precision="fp32", progress=False, cache=False)
    assert (first.engine["backend"], first.engine["precision"]) == ("openvino", "fp32")
    decoded = _count_decodes(monkeypatch)
    again = embed(tmp_path / "c.csv", tmp_path / "emb", progress=False, cache=False)  # auto, resuming
    assert again.engine == {"backend": "openvino", "precision": "fp32", "reason": "the store was started with it",
                            "calibration": {"key": None}}
    assert again.n_resumed == 60 and decoded == []  # no sample decoded for a store that keeps its engine


def _count_decodes(monkeypatch) -> list:
    """Every image decoded from now on, by the embedding job or by the engine probe's sample."""
    import simlabel.embedding as embedding
    import simlabel.images as images

    decoded: list = []
    real = images.load_image
    counted = lambda *a, **k: decoded.append(a[0]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(embedding, "load_image", counted)
    monkeypatch.setattr(images, "load_image", counted)  # what the engine policy decodes its sample with
    return decoded


def test_embed_auto_without_fast_units_decodes_no_probe_sample_and_says_so(tmp_path: Path, monkeypatch, capfd):
    from simlabel.embedding import embed

    slice_catalog("clothing-small", 60, tmp_path).to_csv(tmp_path / "c.csv", index=False)
    monkeypatch.setattr("simlabel.engines.PROBE_MIN_ITEMS", 10)  # a catalog this size would otherwise be probed
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the AVX2-only kind
    decoded = _count_decodes(monkeypatch)
    res = embed(tmp_path / "c.csv", tmp_path / "emb", progress=False, cache=False)
    assert (res.engine["backend"], res.engine["precision"], res.engine["probe"]) == ("onnx", "fp32", False)
    assert "no VNNI, AVX512-BF16 or AMX" in res.engine["reason"]
    summary = json.loads((tmp_path / "emb" / "summary.json").read_text())
    assert summary["engine"] == res.engine and summary["engine"]["cpu_flags"] in ("", "avx2")
    assert len(decoded) == 60  # the catalog's own images, once each: no probe sample
    assert "engine onnx fp32: this CPU has no VNNI" in capfd.readouterr().err


def test_the_probe_runs_only_where_it_can_pay_for_itself(tmp_path: Path, monkeypatch):
    import simlabel.engines as E

    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path / "cache"))
    flags = "avx2 avx512f avx512_vnni"
    # no speeds measured on this machine yet: the size rule
    assert probe_pays("m1", E.PROBE_MIN_ITEMS, flags=flags) == (True, "")
    ok, why = probe_pays("m1", E.PROBE_MIN_ITEMS - 1, flags=flags)
    assert not ok and why == f"{E.PROBE_MIN_ITEMS - 1:,} images < {E.PROBE_MIN_ITEMS:,}: too few to pay for the engine probe"
    # measured: fp32 100 images/s, the fastest 200, the last probe 20 s: at most 5 ms an image saved, so 4,000 images
    speeds = {"onnx/fp32": 100.0, "onnx/int8": 150.0, "openvino/fp32": 110.0, "openvino/bf16": 180.0,
              "openvino/int8": 200.0, "probe_s": 20.0}
    E._speeds_path("m1", flags).write_text(json.dumps(speeds))
    assert probe_pays("m1", 4001, flags=flags) == (True, "")
    ok, why = probe_pays("m1", 3999, flags=flags)
    assert not ok and why.startswith("the engine probe (last 20 s on this machine) would cost more than the fastest engine")
    assert "at most 20 s" in why
    # another model, or a speed missing for an engine auto would try: the size rule again
    assert probe_pays("m2", 3999, flags=flags)[0]
    E._speeds_path("m1", flags).write_text(json.dumps({k: v for k, v in speeds.items() if k != "openvino/int8"}))
    assert E.available("openvino")  # make test installs it: OpenVINO int8 is an engine auto tries with VNNI
    assert probe_pays("m1", 3999, flags=flags) == (True, "")
    # bf16 is no candidate without AVX512-BF16 or AMX: its missing speed leaves the cache complete
    E._speeds_path("m1", flags).write_text(json.dumps({k: v for k, v in speeds.items() if k != "openvino/bf16"}))
    assert not probe_pays("m1", 3999, flags=flags)[0]


def test_auto_records_what_its_probe_cost(real_pixels, tmp_path: Path, monkeypatch):
    import simlabel.engines as E

    enc, X, labels, _, ids = real_pixels
    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path / "cache"))
    import time

    measured = []
    # each speed measurement takes 0.3 s here; a later probe reads the speeds from the cache instead
    monkeypatch.setattr(E, "_speed", lambda eng, px, **k: measured.append(time.sleep(0.3)) or 100.0)
    monkeypatch.setattr(E, "cpu_rules_out", lambda flags=None: None)  # let auto probe on any machine kind
    choose_engine(enc.export_onnx(), "model-cost", (ids, X, labels), backend="onnx", decode_seconds=7.0)
    assert "probe_s" not in E._read_speeds(E._speeds_path("model-cost", cpu_flags()))  # only a whole auto probe counts
    before, t0 = len(measured), time.perf_counter()
    choose_engine(enc.export_onnx(), "model-cost", (ids, X, labels), decode_seconds=7.0)
    wall, timed = time.perf_counter() - t0, 0.3 * (len(measured) - before)
    speeds = E._read_speeds(E._speeds_path("model-cost", cpu_flags()))
    assert timed > 0 and speeds["onnx/fp32"] == 100.0
    # the decoding it was told of, and its own time less the speed measurements
    assert 7.0 < speeds["probe_s"] <= 7.0 + wall - timed + 0.05


def test_auto_tries_only_the_precisions_this_cpu_runs_natively():
    import simlabel.engines as E

    def precisions(flags: str) -> set[str]:
        return {p for _, p in E._wanted("auto", "auto", flags)}

    assert precisions("avx2") == {"fp32"}
    assert precisions("avx2 avx512f avx512_vnni") == {"fp32", "int8"}  # VNNI: int8 can win, bf16 is emulated
    assert precisions("avx2 avx512f avx512_vnni avx512_bf16") == {"fp32", "int8", "bf16"}
    assert precisions("avx2 amx_tile amx_bf16") == {"fp32", "bf16"}
    assert {p for _, p in E._wanted("openvino", "bf16", "avx2")} == {"bf16"}  # asked for: tried wherever


def test_an_engine_that_cannot_run_here_is_refused_not_fatal(real_pixels, tmp_path: Path, monkeypatch):
    """OpenVINO under a oneDNN ISA cap below what it detects fails at its first inference ('Convolution node ...
    is not initialized'): a candidate that cannot run is recorded and skipped, and fp32 embeds."""
    import simlabel.engines as E

    enc, X, labels, _, ids = real_pixels
    monkeypatch.setenv("SIMLABEL_CACHE", str(tmp_path / "cache"))
    real = E.make_engine

    def failing(b, p, *a, **k):
        if (b, p) == ("onnx", "int8"):
            raise RuntimeError("[CPU] Convolution node with name '/_conv_stem/Conv' object is not initialized")
        return real(b, p, *a, **k)

    monkeypatch.setattr(E, "make_engine", failing)
    with pytest.warns(SimlabelWarning, match=r"onnx int8 could not run \(could not run here: RuntimeError: .*not initialized\)"):
        _, choice = choose_engine(enc.export_onnx(), "model-broken", (ids, X, labels), backend="onnx", precision="int8")
    assert (choice.backend, choice.precision) == ("onnx", "fp32") and choice.reason.startswith("fallback: could not run")
    assert [c["passes"] for c in choice.candidates] == [False, True]
