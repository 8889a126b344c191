"""Fuzzed catalogs, label files and sample weights: every outcome is a success or a clean
simlabel error (one ``error:`` line, exit 1), never a traceback, never a NaN model."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simlabel.catalog import load_catalog
from simlabel.errors import SimlabelError
from simlabel.heads import EmbeddingClassifier
from tests.test_reliability import store

runner = CliRunner()
OUTCOMES: dict[str, int] = {}
#: ``benchmarks/bench_reliability.py`` runs these fuzzers longer and collects the outcomes by class
EXAMPLES = int(os.environ.get("SIMLABEL_FUZZ_EXAMPLES", "0")) or None
REPORT = os.environ.get("SIMLABEL_FUZZ_REPORT")


def count(kind: str, outcome: str) -> None:
    OUTCOMES[f"{kind} {outcome}"] = OUTCOMES.get(f"{kind} {outcome}", 0) + 1

cells = st.one_of(
    st.sampled_from(["", " ", "NaN", "nan", "None", "NULL", "N/A", "null", "0", "-1", "1e400", "inf", "-inf", "1.5",
                     "a,b", 'q"uote', "dress", "DRESS", "dress ", "\u00e9t\u00e9", "\u202e", "0x1F", "[1, 2]"]),
    st.text(max_size=8),
)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def classify(res) -> str:
    """What happened: ok, or a clean error; anything else fails the test with the traceback."""
    if res.exit_code == 0:
        return "ok"
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), f"not a clean error:\n{res.output}\n{res.exception!r}"
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:") and "Traceback" not in res.output, res.output
    assert all(ln.startswith(("error:", "warning:")) or ln.startswith(" ") for ln in lines), res.output
    return "error: " + error_class(lines[-1])


def error_class(message: str) -> str:
    """An error message with its file, row, ids and values taken out: the kind of error."""
    m = message.removeprefix("error:").strip()
    m = re.sub(r"^\S*/\S+?(, row \d+)?( \(line \d+\))?(, line \d+)?(, column '[^']*')?:\s*", "", m)
    m = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", m)
    m = re.sub(r"\d[\d,.]*", "N", m)
    m = re.sub(r"\([^)]*\)", "(…)", m)
    return re.split(r"[:;]", m)[0].strip()[:70]


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("fuzz") / "emb"
    return path, store(path, n=40)


@st.composite
def label_files(draw) -> tuple[list[str], list[list[str]]]:
    """Mostly well-formed label files (known ids, a few classes, numeric weights), each cell
    with a chance of being replaced by a fuzzed value, and sometimes a wrong header."""
    header = draw(st.sampled_from([["id", "label", "weight"]] * 6 + [["label", "id", "weight"], ["id", "lab", "weight"], ["id", "label"]]))
    ids = draw(st.lists(st.sampled_from([f"i{i}" for i in range(40)]), max_size=25, unique=True))
    if ids and draw(st.integers(0, 4)) == 0:
        ids.append(ids[0])  # a repeated id, sometimes
    rows = []
    for i in ids:
        row = {"id": i, "label": draw(st.sampled_from(["x", "y", "z"])),
               "weight": draw(st.sampled_from(["1", "0.5", "2", ""])), "lab": "x"}
        if draw(st.integers(0, 9)) == 0:
            row[draw(st.sampled_from(["id", "label", "weight"]))] = draw(cells)
        rows.append([row.get(h, "") for h in header])
    return header, rows


def test_train_on_fuzzed_label_files(fuzz_store, tmp_path_factory) -> None:
    from simlabel.cli import app

    emb, _ = fuzz_store
    seen: list[str] = []

    @settings(max_examples=EXAMPLES or 60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(file=label_files(), weight=st.booleans())
    def case(file, weight) -> None:
        d = tmp_path_factory.mktemp("case")
        header, rows = file
        (d / "l.csv").write_text(csv_text(header, rows), encoding="utf-8")
        argv = ["train", "--emb", str(emb), "--labels", str(d / "l.csv"), "--out", str(d / "m"), "--epochs", "3"]
        if weight:
            argv += ["--weight-col", "weight"]
        outcome = classify(runner.invoke(app, argv))
        seen.append(outcome)
        count("train", outcome if outcome == "ok" else "error")
        if REPORT:
            count("train", outcome)
        if outcome == "ok":
            clf = EmbeddingClassifier.load(d / "m")
            assert all(torch.isfinite(p).all() for p in clf.module_.state_dict().values())  # never a NaN model
            assert np.isfinite(clf.predict_proba(np.ones((2, clf.dim_), np.float32))).all()

    case()
    # the fuzzer reached both outcomes: the checks above ran on models that trained, and errors were met
    assert "ok" in seen and any(o != "ok" for o in seen), {o: seen.count(o) for o in set(seen)}
    _report()


@st.composite
def catalogs(draw) -> tuple[list[str], list[list[str]]]:
    """Catalog files: usually an id column and distinct ids, with fuzzed cells, headers and row lengths."""
    extra = draw(st.lists(st.sampled_from(["image", "label", "labels", "split", "rank", "clean", "title", "x"]), max_size=4))
    header = (["id"] if draw(st.integers(0, 4)) else []) + extra
    rows = []
    for i in range(draw(st.integers(0, 8))):
        row = [f"p{i}" if h == "id" else draw(cells) if draw(st.booleans()) else "" for h in header]
        if header and draw(st.integers(0, 9)) == 0:
            row = row + [draw(cells)]  # a ragged row
        rows.append(row)
    return header, rows


def test_load_fuzzed_catalogs(tmp_path_factory) -> None:
    seen: list[str] = []

    @settings(max_examples=EXAMPLES or 80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(file=catalogs())
    def case(file) -> None:
        header, rows = file
        d = tmp_path_factory.mktemp("cat")
        (d / "c.csv").write_text(csv_text(header, rows) if header else "", encoding="utf-8")
        try:
            cat = load_catalog(d / "c.csv", require=("id",))
        except SimlabelError as e:
            assert str(d / "c.csv") in str(e) or "catalog" in str(e), str(e)
            seen.append("error")
            count("catalog", "error")
            if REPORT:
                count("catalog", "error: " + error_class(str(e)))
            return
        assert len(cat) > 0 and cat.table["id"].is_unique and (cat.table["id"] != "").all()
        seen.append("ok")
        count("catalog", "ok")

    case()
    # both outcomes reached: the checks of a loaded catalog ran, and bad ones were refused
    assert "ok" in seen and "error" in seen, {o: seen.count(o) for o in set(seen)}
    _report()


def _report() -> None:
    """``benchmarks/bench_reliability.py`` collects the outcomes by class (``$SIMLABEL_FUZZ_REPORT``)."""
    if REPORT:
        Path(REPORT).write_text(json.dumps(OUTCOMES, indent=2))
