"""Label files: reading (every error path names the file and row) and writing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from simlabel.errors import LabelFileError
from simlabel.labels.io import read_id_list, read_labels, write_labels


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_strings_strips_and_keeps_other_columns(tmp_path: Path) -> None:
    df = read_labels(write(tmp_path, "id,label,rank\n 007 , Shirts ,3\n008,Tops,\n"))
    assert df["id"].tolist() == ["007", "008"] and df["label"].tolist() == ["Shirts", "Tops"] and df["rank"].tolist() == ["3", ""]


def test_other_column_names_and_exact_duplicates(tmp_path: Path) -> None:
    df = read_labels(write(tmp_path, "sku,cat\na,x\na,x\nb,y\n"), id_col="sku", label_col="cat")
    assert df[["id", "label"]].values.tolist() == [["a", "x"], ["b", "y"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\na,x\n,y\n", r"labels\.csv, row 1 \(line 3\): empty id"),
        ("id,label\na,\nb,NaN\n", "no row has a label"),
        ("id,label\na,x\na,y\n", "id 'a' has two labels: x, y"),
        ("id,category\na,x\n", r"missing column\(s\) label; columns are id, category"),
        ("", "label file is empty"),
    ],
)
def test_errors_name_the_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelFileError, match=message):
        read_labels(write(tmp_path, text))


def test_missing_labels_are_left_out_and_spellings_warn(tmp_path: Path) -> None:
    from simlabel.context import NORMALIZE_LABELS, setting
    from simlabel.errors import SimlabelWarning

    p = write(tmp_path, "id,label\na,dress\nb,\nc,NaN\nd,None\ne,NULL\nf,N/A\ng,DRESS\nh,dress \ni,shirt\nj,dress\n")
    with pytest.warns(SimlabelWarning) as record:
        df = read_labels(p)
    messages = [str(w.message) for w in record]
    assert any("5 row(s) have no label" in m and "line 3" in m for m in messages)
    assert any("'dress' / 'DRESS'" in m and "`normalize_labels`" in m for m in messages)
    assert df["id"].tolist() == ["a", "g", "h", "i", "j"] and set(df["label"]) == {"dress", "DRESS", "shirt"}
    with setting(NORMALIZE_LABELS):
        folded = read_labels(p)
    assert folded["label"].tolist() == ["dress", "dress", "dress", "shirt", "dress"]
    assert read_labels(p, normalize=True)["label"].tolist() == folded["label"].tolist()


def test_missing_file_folder_and_unknown_ids(tmp_path: Path) -> None:
    with pytest.raises(LabelFileError, match="nope.csv: label file not found"):
        read_labels(tmp_path / "nope.csv")
    with pytest.raises(LabelFileError, match="is a folder"):
        read_labels(tmp_path)
    p = write(tmp_path, "id,label\na,x\nb,y\nc,y\n")
    with pytest.raises(LabelFileError, match=r"2 id\(s\) not in the embeddings, e.g. b, c"):
        read_labels(p, known_ids=["a"])
    assert read_labels(p, known_ids=["a", "c"], allow_missing=True)["id"].tolist() == ["a", "c"]


def test_id_lists_and_round_trip(tmp_path: Path) -> None:
    assert read_id_list(write(tmp_path, "id,label,x\na,1,\n , ,\nb,,\n", "h.csv")) == ["a", "b"]
    with pytest.raises(LabelFileError, match=r"missing column\(s\) id"):
        read_id_list(write(tmp_path, "sku\na\n", "h.csv"))
    out = write_labels(pd.DataFrame({"step": [1], "label": ["x"], "id": ["007"]}), tmp_path / "o.csv")
    assert out.read_text().splitlines()[0] == "id,label,step"
    assert read_labels(out)["id"].tolist() == ["007"]
