"""Atomic writes and the small-CSV reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simlabel.errors import LabelFileError
from simlabel.files import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_csv_table,
)


def test_atomic_writes_leave_only_the_final_file(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    assert p.read_text() == "hello" and [f.name for f in (tmp_path / "sub").iterdir()] == ["a.txt"]
    atomic_write_json(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": [1, 2], "z": 1}


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["t.txt"]


def test_read_csv_table_names_the_file_and_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    with pytest.raises(LabelFileError, match=r"x\.csv: label file not found"):
        read_csv_table(p, ("id",), "label file")
    with pytest.raises(LabelFileError, match="is a folder; expected a label file"):
        read_csv_table(tmp_path, ("id",), "label file")
    p.write_text("")
    with pytest.raises(LabelFileError, match="label file is empty"):
        read_csv_table(p, ("id",), "label file")
    p.write_text("id,label\n00123,a\n,b\n")
    df = read_csv_table(p, ("id",), "label file")
    assert df["id"].tolist() == ["00123", ""]  # text, empty cells as ""
    with pytest.raises(LabelFileError, match=r"missing column\(s\) weight; columns are id, label"):
        read_csv_table(p, ("id", "weight"), "label file")
    p.write_bytes(b"id,label\n\xff\xfe,a\n")
    with pytest.raises(LabelFileError, match="cannot parse"):
        read_csv_table(p, ("id",), "label file")
