"""Search labels (paper 003): label tables from the retrieval's result lists, the duplicate policy, and a real
slice of the fashion catalog where the noise comes from the retrieval itself. The engine is tested in
test_retrieval.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlabel.errors import CatalogError
from simlabel.labels.io import read_labels
from simlabel.labels.search import SearchConfig, build_search_labels, search_labels, search_noise_report
from simlabel.retrieval import RetrievalConfig, text_search
from tests.test_retrieval import CORPUS

FASHION = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-products" / "catalog.csv"

# ----------------------------------------------------------------------------- hand cases


def test_search_labels_ranks_and_columns() -> None:
    ids = [f"p{i}" for i in range(len(CORPUS))]
    with pytest.warns(UserWarning, match="p6"):
        made = search_labels(ids, CORPUS, ["Watches", "Casual_Shoes", "Belts"], SearchConfig(top_r=5, duplicates="keep"))
    df = made.labels
    assert list(df.columns) == ["id", "label", "rank", "score", "query"]
    assert set(df.loc[df.label == "Casual_Shoes", "query"]) == {"Casual Shoes"}
    for _, g in df.groupby("label"):
        assert list(g["rank"]) == list(range(1, len(g) + 1))  # 1-based, contiguous, sorted
    assert list(df.loc[df.label == "Watches", "id"]) == ["p1", "p0"]
    assert list(df["label"]) == sorted(df["label"])
    assert "p6" not in set(df["id"])
    assert made.summary["n_empty_text"] == 1 and made.summary["categories"] == ["Watches", "Casual_Shoes", "Belts"]


def test_duplicates_best_keeps_the_better_rank() -> None:
    ids = [f"p{i}" for i in range(len(CORPUS))]
    texts = CORPUS[:6]
    # "Shoes": p3 (rank 1), p4 (rank 2). "Sports Shoes": p4 (rank 1), p3 (rank 2).
    keep = search_labels(ids[:6], texts, ["Shoes", "Sports Shoes"], SearchConfig(duplicates="keep")).labels
    assert len(keep) == 4 and keep.groupby("id").size().to_dict() == {"p3": 2, "p4": 2}
    best = search_labels(ids[:6], texts, ["Shoes", "Sports Shoes"], SearchConfig(duplicates="best")).labels
    assert dict(zip(best["id"], best["label"])) == {"p3": "Shoes", "p4": "Sports Shoes"}
    assert best["id"].is_unique
    # Same rank (1) in both: the higher score wins ("Casual Shoes" matches two terms of p3).
    best = search_labels(ids[:6], texts, ["Shoes", "Casual Shoes"]).labels
    assert best.set_index("id").loc["p3", "label"] == "Casual Shoes"
    # Same rank and score ("Tshirt" and "Tshirts" stem alike): the category listed first wins.
    a = search_labels(ids[:6], texts, ["Tshirt", "Tshirts"]).labels
    b = search_labels(ids[:6], texts, ["Tshirts", "Tshirt"]).labels
    assert a.set_index("id").loc["p2", "label"] == "Tshirt"
    assert b.set_index("id").loc["p2", "label"] == "Tshirts"


# ----------------------------------------------------------------------------- real slice


@pytest.fixture(scope="module")
def fashion_slice() -> pd.DataFrame:
    if not FASHION.exists():
        pytest.skip(f"shared dataset not found at {FASHION}")
    return pd.read_csv(FASHION, dtype=str, keep_default_na=False).head(1500)


def test_real_slice_noise_is_real(fashion_slice: pd.DataFrame) -> None:
    df = fashion_slice
    cats = sorted(df["article_type"].unique())
    truth = pd.Series(df["article_type"].to_numpy(), index=df["id"].to_numpy())
    made = search_labels(df["id"], df["title"], cats, SearchConfig(top_r=50))
    labels = made.labels
    assert len(labels) > 0 and labels["id"].is_unique
    assert set(labels["label"]) <= set(cats)
    assert labels["rank"].between(1, 50).all()
    rep = search_noise_report(made, truth)  # the categories searched come with what the search made
    assert 0 < rep["noise_rate"] < 0.5  # real noise, but most search labels are right
    assert rep["n_catalog"] == 1500 and 0 < rep["coverage"] < 1
    assert rep["n_labelled"] == len(labels) and rep["n_unknown"] == 0
    assert rep["n_categories"] == len(cats)
    assert rep["categories_without_results"] == len(rep["empty_categories"])
    rates = [c["noise_rate"] for c in rep["by_category"]]
    assert rates == sorted(rates, reverse=True)
    assert [b["ranks"] for b in rep["by_rank"]] == ["1-10", "11-25", "26-50", "51-100", "101+"]
    assert sum(b["n"] for b in rep["by_rank"]) == len(labels)

    # Rank is informative on the result lists themselves (one row per (item, query)). After
    # duplicates="best" it need not be: de-duplication moves items to the query that ranks
    # them best, and only the big, clean categories have deep ranks, so there the deep
    # buckets can be cleaner than the top one (a composition effect, not a search effect).
    lists = search_labels(df["id"], df["title"], cats, SearchConfig(top_r=50, duplicates="keep"))
    by_rank = [b for b in search_noise_report(lists, truth)["by_rank"] if b["n"]]
    assert by_rank[0]["ranks"] == "1-10" and len(by_rank) > 1
    assert by_rank[0]["noise_rate"] <= by_rank[-1]["noise_rate"]


def test_build_search_labels_excludes_and_writes(fashion_slice: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    fashion_slice.to_csv(path, index=False)
    cfg = SearchConfig(top_r=20)
    first = build_search_labels(path, label_col="article_type", config=cfg, progress=False).labels
    excluded = set(first["id"].iloc[::2])  # half of what a search finds, e.g. a test split
    out = tmp_path / "labels" / "search.csv"
    made = build_search_labels(path, label_col="article_type", config=cfg, exclude_ids=excluded, out=out, progress=False)
    df = made.labels
    assert len(df) > 0 and not (set(df["id"]) & excluded)
    assert made.summary["n_excluded"] == len(excluded)
    back = read_labels(out)
    assert list(back.columns) == ["id", "label", "rank", "score", "query"]
    assert list(back["id"]) == list(df["id"]) and list(back["label"]) == list(df["label"])
    assert list(back["rank"].astype(int)) == list(df["rank"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


# ----------------------------------------------------------------------------- errors


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 ids but 2 texts"):
        search_labels(["a", "b", "c"], ["x", "y"], ["Shirts"])
    with pytest.raises(ValueError, match="category 'Shirts' appears twice"):
        search_labels(["a"], ["x"], ["Shirts", "Tops", "Shirts"])
    with pytest.raises(ValueError, match="same query"):
        search_labels(["a"], ["x"], ["Flip Flops", "Flip_Flops"])
    with pytest.raises(ValueError, match="no categories"):
        search_labels(["a"], ["x"], [])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        search_labels(["a", "a"], ["x", "y"], ["Shirts"])
    with pytest.raises(ValueError, match="method"):
        SearchConfig(method="google")
    with pytest.raises(ValueError, match="top_r"):
        SearchConfig(top_r=0)
    with pytest.raises(ValueError, match="duplicates"):
        SearchConfig(duplicates="first")
    with pytest.raises(ValueError, match=r"b \(BM25 length normalisation\) must be in"):
        SearchConfig(b=1.5)
    with pytest.raises(ValueError, match="text_embeddings must have shape"):
        text_search(["a", "b"], ["q"], SearchConfig(method="embedding"), text_embeddings=np.ones((3, 2)), query_embeddings=np.ones((1, 2)))

    path = tmp_path / "cat.csv"
    pd.DataFrame({"id": ["1", "2"], "name": ["Blue Shirt", "Red Top"], "article_type": ["Shirts", "Tops"]}).to_csv(path, index=False)
    with pytest.raises(CatalogError, match="no text column 'title'") as e:
        build_search_labels(path, label_col="article_type", progress=False)
    assert "'title'" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(CatalogError, match="`label_col` 'category' is not a column") as e:
        build_search_labels(path, label_col="category", text_col="name", progress=False)
    assert "'category'" in str(e.value) and str(path) in str(e.value)
    ok = build_search_labels(path, label_col="article_type", text_col="name", progress=False).labels
    assert dict(zip(ok["id"], ok["label"])) == {"1": "Shirts", "2": "Tops"}


def test_retrieval_takes_its_own_config_and_search_labels_add_the_duplicate_policy() -> None:
    """The engine (simlabel.retrieval) knows nothing of labels; SearchConfig is its config plus `duplicates`."""
    plain = text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=3))
    same = text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=3, duplicates="keep"))
    assert np.array_equal(plain.doc, same.doc) and np.array_equal(plain.score, same.score)
    assert not hasattr(RetrievalConfig(), "duplicates") and isinstance(SearchConfig(), RetrievalConfig)
    with pytest.raises(ValueError, match="duplicates"):
        SearchConfig(duplicates="all")
