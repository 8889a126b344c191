from __future__ import annotations

import numpy as np
import pytest

from simlabel.semantics.taxonomy import (
    read_taxonomy,
    taxonomy_distance,
    taxonomy_from_columns,
    taxonomy_matrix,
)
from tests.helpers import TREE

# -- hand-computed rows ------------------------------------------------------------------------


def test_taxonomy_distance_by_hand() -> None:
    d = taxonomy_distance(TREE)
    assert d.shape == (6, 6) and np.issubdtype(d.dtype, np.integer)
    assert (np.diag(d) == 0).all() and np.array_equal(d, d.T)
    assert d[0, 1] == 2  # siblings
    assert d[0, 2] == 4 and d[1, 2] == 4  # cousins
    assert d[0, 3] == 3 and d[2, 3] == 3  # Tshirts -> Topwear -> Apparel -> Dresses
    assert d[0, 4] == 6  # through the implicit root
    assert d[3, 5] == 4 and d[4, 5] == 5
    # a class may be an ancestor of another
    assert taxonomy_distance([("A",), ("A", "B"), ("A", "B", "C")]).tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]


def test_taxonomy_distance_errors() -> None:
    with pytest.raises(TypeError, match="sequence of levels"):
        taxonomy_distance(["Apparel/Topwear/Tshirts", "Apparel/Topwear/Shirts"])
    with pytest.raises(ValueError, match="same taxonomy path"):
        taxonomy_distance([("A", "x"), ("A", "y"), ("A", "x")])
    with pytest.raises(ValueError, match="empty"):
        taxonomy_distance([("A",), ()])


def test_taxonomy_files_and_columns(tmp_path) -> None:
    import pandas as pd

    from simlabel.labels.io import LabelFileError

    (tmp_path / "t.csv").write_text("label,path\nTshirts,Apparel > Topwear > Tshirts\nShirts,Apparel > Topwear > Shirts\nWatches,Accessories > Watches\n")
    tax = read_taxonomy(tmp_path / "t.csv")
    assert tax["Tshirts"] == ("Apparel", "Topwear", "Tshirts")
    d = taxonomy_matrix(["Tshirts", "Shirts", "Watches"], tmp_path / "t.csv")
    assert d[0, 1] == 2 and d[0, 2] == 5
    with pytest.raises(ValueError, match="not in the taxonomy"):
        taxonomy_matrix(["Tshirts", "Socks"], tax)
    (tmp_path / "bad.csv").write_text("label,path\nA,X > A\nA,Y > A\n")
    with pytest.raises(LabelFileError, match="line 3"):
        read_taxonomy(tmp_path / "bad.csv")
    table = pd.DataFrame({"m": ["A", "A", "A", "B"], "s": ["x", "x", "y", "x"]})
    # each leaf takes its most frequent path
    assert taxonomy_from_columns(table, ["m", "s"]) == {"x": ("A", "x"), "y": ("A", "y")}
