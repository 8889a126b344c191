"""The multi-label data model: binary matrices from attribute columns or a |-separated column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.errors import CatalogError, LabelFileError
from simlabel.labels.multilabel import (
    from_attributes,
    from_labels_column,
    label_lists,
    read_multilabel_file,
    split_labels,
)


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "usage": ["Casual", "Formal", np.nan, "Casual"],
            "gender": ["Men", "Women", "Men", " "],
        }
    )


def test_split_labels_by_hand() -> None:
    assert split_labels("red|cotton") == ["cotton", "red"]
    assert split_labels(" red | |red|") == ["red"]
    assert split_labels("") == [] and split_labels(None) == [] and split_labels(np.nan) == []
    assert split_labels("a;b", sep=";") == ["a", "b"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4), min_size=1, max_size=12))
def test_label_lists_invert_the_matrix(rows: list[list[str]]) -> None:
    df = pd.DataFrame({"id": [str(i) for i in range(len(rows))], "labels": ["|".join(r) for r in rows]})
    ml = from_labels_column(df)
    lists = label_lists(ml.Y)
    assert len(lists) == len(rows)
    for r, got in zip(rows, lists):
        assert [ml.labels[j] for j in got] == sorted(set(r))


def test_read_multilabel_file_and_its_errors(tmp_path: Path) -> None:
    p = tmp_path / "clean.csv"
    p.write_text("id,labels,note\n a ,red|cotton,x\nb,,y\n")
    ids, Y, df = read_multilabel_file(p, ["cotton", "red", "wool"])
    assert ids.tolist() == ["a", "b"] and Y.tolist() == [[1, 1, 0], [0, 0, 0]] and list(df["note"]) == ["x", "y"]
    p.write_text("id,labels\na,red|silk\n")
    with pytest.raises(LabelFileError, match=r"clean\.csv, line 2: unknown label 'silk'"):
        read_multilabel_file(p, ["cotton", "red"])
    p.write_text("id,tags\na,red\n")
    with pytest.raises(LabelFileError, match=r"missing column\(s\) labels"):
        read_multilabel_file(p, ["red"])


def test_missing_columns_are_named(table: pd.DataFrame) -> None:
    with pytest.raises(CatalogError, match="no column.*season"):
        from_attributes(table, ["season"])
    with pytest.raises(CatalogError, match="no column.*labels"):
        from_labels_column(table)


def test_from_attributes_labels_order_and_missing(table: pd.DataFrame) -> None:
    ml = from_attributes(table, ["usage", "gender"])
    assert ml.labels == ["gender=Men", "gender=Women", "usage=Casual", "usage=Formal"]
    assert ml.attribute_of == ["gender", "gender", "usage", "usage"]
    assert ml.ids.tolist() == ["1", "2", "3", "4"]
    assert ml.Y.dtype == np.uint8
    np.testing.assert_array_equal(ml.Y, [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert ml.attributes == ["gender", "usage"]
    assert ml.positives_per_image() == pytest.approx(6 / 4)


def test_from_attributes_min_count(table: pd.DataFrame) -> None:
    ml = from_attributes(table, ["gender", "usage"], min_count=2)
    assert ml.labels == ["gender=Men", "usage=Casual"]
    np.testing.assert_array_equal(ml.Y, [[1, 1], [0, 0], [1, 0], [0, 1]])
    with pytest.raises(CatalogError, match="no column.*colour"):
        from_attributes(table, ["colour"])


def test_from_labels_column() -> None:
    t = pd.DataFrame({"id": ["a", "b", "c"], "labels": ["usage=Casual|gender=Men", np.nan, "sale| sale |gender=Men|"]})
    ml = from_labels_column(t)
    assert ml.labels == ["gender=Men", "sale", "usage=Casual"]
    assert ml.attribute_of == ["gender", "sale", "usage"]
    np.testing.assert_array_equal(ml.Y, [[1, 0, 1], [0, 0, 0], [1, 1, 0]])
