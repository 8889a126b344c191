from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from simlabel.catalog import ids_fingerprint, load_catalog
from simlabel.errors import CatalogError
from tests.helpers import dataset


def write(tmp_path: Path, text: str, name: str = "catalog.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shared_catalogs_load_as_they_are() -> None:
    clothing = load_catalog(dataset("clothing-small") / "catalog.csv")
    assert len(clothing) == 3781
    assert set(clothing.table["split"]) == {"train", "validation", "test"}
    assert clothing.labels().nunique() == 10
    assert Path(clothing.image_paths()[0]).exists()

    fashion = load_catalog(dataset("fashion-products"), columns={"label": "article_type"})
    assert len(fashion) == 9583
    assert fashion.labels().nunique() == 75
    # the source column is copied, not renamed
    assert (fashion.table["article_type"] == fashion.table["label"]).all()
    assert fashion.table["id"].iloc[0] == "10000" and isinstance(fashion.ids[0], str)


def test_ids_keep_leading_zeros_and_paths_resolve(tmp_path: Path) -> None:
    p = write(tmp_path, "id,image\n007,a.jpg\n008,/abs/b.jpg\n")
    cat = load_catalog(p)
    assert list(cat.ids) == ["007", "008"]
    assert cat.image_paths()[0] == str(tmp_path.resolve() / "a.jpg")
    assert cat.image_paths()[1] == "/abs/b.jpg"


def test_column_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "sku,path,article_type,pos\nA,a.jpg,Shirts,1\nB,b.jpg,Shoes,2\n")
    cat = load_catalog(p, columns={"id": "sku", "image": "path", "label": "article_type", "rank": "pos"})
    assert list(cat.ids) == ["A", "B"]
    assert list(cat.labels()) == ["Shirts", "Shoes"]
    assert list(cat.table["rank"]) == [1, 2]
    with pytest.raises(CatalogError, match="`label_col` 'nope' is not a column"):
        load_catalog(p, columns={"id": "sku", "image": "path", "label": "nope"})


def test_missing_required_column_names_it(tmp_path: Path) -> None:
    p = write(tmp_path, "sku,image\nA,a.jpg\n")
    with pytest.raises(CatalogError, match=r"missing required column\(s\) id.*--id-col"):
        load_catalog(p)


def test_duplicate_ids_name_rows(tmp_path: Path) -> None:
    p = write(tmp_path, "id,image\nA,a.jpg\nB,b.jpg\nA,c.jpg\n")
    with pytest.raises(CatalogError, match="duplicate id 'A'") as err:
        load_catalog(p)
    msg = str(err.value)
    assert "duplicate id 'A'" in msg and "row 0 (line 2)" in msg and "row 2 (line 4)" in msg


def test_empty_id_names_row(tmp_path: Path) -> None:
    p = write(tmp_path, "id,image\nA,a.jpg\n  ,b.jpg\n")
    with pytest.raises(CatalogError, match=r"column 'id': empty id at row 1 \(line 3\)"):
        load_catalog(p)


def test_bad_rank_and_clean_values(tmp_path: Path) -> None:
    p = write(tmp_path, "id,image,rank\nA,a.jpg,1\nB,b.jpg,first\n")
    with pytest.raises(CatalogError, match=r"row 1 \(line 3\), column 'rank': not a number: 'first'"):
        load_catalog(p)
    p = write(tmp_path, "id,image,clean\nA,a.jpg,yes\nB,b.jpg,maybe\n")
    with pytest.raises(CatalogError, match=r"row 1 \(line 3\), column 'clean'"):
        load_catalog(p)
    p = write(tmp_path, "id,image,clean\nA,a.jpg,yes\nB,b.jpg,0\nC,c.jpg,\n")
    assert list(load_catalog(p).table["clean"]) == [True, False, None]


def test_parquet_and_folder_and_unknown_format(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["1", "2"], "image": ["a.jpg", "b.jpg"], "labels": ["red|cotton", ""]})
    df.to_parquet(tmp_path / "catalog.parquet")
    cat = load_catalog(tmp_path)  # a folder with catalog.parquet
    assert list(cat.ids) == ["1", "2"]
    assert list(cat.table["labels"]) == ["red|cotton", ""]
    with pytest.raises(CatalogError, match="unsupported catalog format"):
        load_catalog(write(tmp_path, "x", "catalog.xlsx"))
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.csv")


def test_image_column_only_required_when_asked(tmp_path: Path) -> None:
    p = write(tmp_path, "id,title\nA,red shirt\n")
    assert len(load_catalog(p, require=("id",))) == 1
    with pytest.raises(CatalogError, match="image"):
        load_catalog(p)


def test_fingerprint_depends_on_ids_and_order() -> None:
    assert ids_fingerprint(["a", "b"]) != ids_fingerprint(["b", "a"])
    assert ids_fingerprint(["a", "b"]) == ids_fingerprint(["a", "b"])
