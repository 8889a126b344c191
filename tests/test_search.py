"""Search labels (paper 003): hand-worked BM25 cases, the top-R core as a property, and a
real slice of the fashion catalog where the noise comes from the retrieval itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simlabel.errors import CatalogError
from simlabel.labels.io import read_labels
from simlabel.labels.search import SearchConfig, build_search_labels, search_labels, search_noise_report
from simlabel.retrieval import RetrievalConfig, _blockwise_top, analyze, text_search

FASHION = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fashion-products" / "catalog.csv"

# Hand corpus. Analysed lengths (stop words none here): 0:7, 1:3, 2:3, 3:3, 4:3, 5:3, 6:0, 7:2, 8:3.
CORPUS = [
    "Analog Watch Black Dial Steel Strap Men",  # 0: watch once, long
    "Kids Watch Watch",  # 1: watch twice, short
    "Men Blue Tshirt",  # 2
    "Women Casual Shoes",  # 3: casual + shoes
    "Men Sports Shoes",  # 4: shoes only
    "Men Casual Shirt",  # 5: casual only
    "",  # 6: empty title: matches nothing, not in the statistics
    "Leather Belt",  # 7
    "Kids Running Shoes",  # 8: shoes only (shoes is more common than casual)
]


def bm25_lucene(corpus: list[str], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """BM25 worked from its definition (Lucene variant, as bm25s scores): for each query term
    idf = ln(1 + (N - df + 0.5) / (df + 0.5)), times tf / (tf + k1 (1 - b + b dl / avgdl));
    N and avgdl over the non-empty documents."""
    docs = [analyze(t) for t in corpus]
    live = [d for d in docs if d]
    n, avgdl = len(live), sum(map(len, live)) / len(live)
    out = np.zeros(len(docs))
    for term in set(analyze(query)):
        df = sum(term in d for d in live)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(term)
            if tf:
                out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return out


def results(res, q: int) -> list[int]:
    return [int(p) for p in res.doc[q] if p >= 0]


# ----------------------------------------------------------------------------- hand cases


def test_bm25_ranks_as_worked_by_hand() -> None:
    res = text_search(CORPUS, ["Watches", "Casual Shoes", "Belts", "Gloves"], SearchConfig(top_r=5))
    # "Watches" -> stem "watch": the short title with it twice beats the long one with it once;
    # nothing else is returned (bm25s alone would pad to k results with score 0).
    assert results(res, 0) == [1, 0]
    # "Casual Shoes": both terms first; then "casual" alone (df 2, rarer) above "shoes" alone
    # (df 3); the two "shoes"-only titles of equal length tie and keep catalog order.
    assert results(res, 1) == [3, 5, 4, 8]
    assert results(res, 2) == [7]
    assert results(res, 3) == []  # no title mentions gloves: no results, not 5 zero-score ones
    for q, query in enumerate(["Watches", "Casual Shoes", "Belts"]):
        expected = bm25_lucene(CORPUS, query)
        got = res.score[q][res.doc[q] >= 0]
        np.testing.assert_allclose(got, expected[results(res, q)], rtol=1e-5)
    assert res.doc.shape == (4, 5) and res.doc.dtype == np.int64 and res.score.dtype == np.float32
    assert np.isnan(res.score[res.doc < 0]).all() and not np.isnan(res.score[res.doc >= 0]).any()
    assert res.score[1, 2] == res.score[1, 3]  # the tie really is a tie


def test_stemming_is_what_matches_plurals() -> None:
    assert results(text_search(CORPUS, ["Watches"], SearchConfig(top_r=5, stem=True)), 0) == [1, 0]
    assert results(text_search(CORPUS, ["Watches"], SearchConfig(top_r=5, stem=False)), 0) == []
    assert analyze("Tshirts Watches") == ["tshirt", "watch"]
    # Lucene's short stop list: "top" is a product word here, not a stop word
    assert analyze("Women Black Tops", stem=False) == ["women", "black", "tops"]


def test_min_score_and_top_r_cut() -> None:
    full = text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=10))
    s = full.score[0]
    cut = float((s[0] + s[1]) / 2)
    assert results(text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=10, min_score=cut)), 0) == [3]
    assert results(text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=2)), 0) == [3, 5]
    # a tie at the cut goes to the earlier position
    assert results(text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=3)), 0) == [3, 5, 4]
    # top_r larger than the corpus pads
    assert text_search(CORPUS, ["Casual Shoes"], SearchConfig(top_r=50)).doc.shape == (1, 50)


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


def test_tfidf_agrees_with_bm25_on_an_unambiguous_case() -> None:
    queries = ["Watches", "Casual Shoes", "Belts", "Tshirts"]
    bm = text_search(CORPUS, queries, SearchConfig(method="bm25", top_r=3))
    tf = text_search(CORPUS, queries, SearchConfig(method="tfidf", top_r=3))
    assert list(bm.doc[:, 0]) == list(tf.doc[:, 0]) == [1, 3, 7, 2]
    assert results(tf, 0) == [1, 0]  # tfidf also returns nothing without a matching term
    assert np.all(np.diff(tf.score[1][tf.doc[1] >= 0]) <= 0)


# ----------------------------------------------------------------------------- top R as a property


def brute_force(scores: np.ndarray, r: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    q, n = scores.shape
    pos = np.full((q, r), -1, dtype=np.int64)
    val = np.full((q, r), np.nan, dtype=np.float32)
    for i in range(q):
        keep = [j for j in range(n) if scores[i, j] > min_score]
        keep.sort(key=lambda j: (-scores[i, j], j))
        keep = keep[:r]
        pos[i, : len(keep)] = keep
        val[i, : len(keep)] = scores[i, keep]
    return pos, val


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    q=st.integers(1, 4),
    n=st.integers(1, 30),
    r=st.integers(1, 40),
    block=st.integers(1, 35),
    min_score=st.sampled_from([-np.inf, 0.0, 1.0]),
)
def test_blockwise_top_equals_brute_force_with_ties(data, q, n, r, block, min_score) -> None:
    # small integers: many exact ties, exact arithmetic, so the comparison is exact
    scores = data.draw(hnp.arrays(np.float32, (q, n), elements=st.integers(-3, 3).map(float)))
    pos, val = _blockwise_top(lambda a, b: scores[:, a:b], n, q, r, min_score, block)
    val = np.where(pos < 0, np.nan, val)
    exp_pos, exp_val = brute_force(scores, r, min_score)
    np.testing.assert_array_equal(pos, exp_pos)
    np.testing.assert_array_equal(val, exp_val)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    q=st.integers(1, 4),
    n=st.integers(1, 25),
    d=st.integers(1, 4),
    r=st.integers(1, 30),
    block=st.integers(1, 30),
)
def test_embedding_search_equals_numpy_argsort(data, q, n, d, r, block) -> None:
    elems = st.floats(-2, 2, allow_nan=False, width=32).filter(lambda x: x == 0 or abs(x) > 1e-3)
    te = data.draw(hnp.arrays(np.float32, (n, d), elements=elems))
    qe = data.draw(hnp.arrays(np.float32, (q, d), elements=elems))
    cfg = SearchConfig(method="embedding", top_r=r, min_score=-np.inf)
    texts = [f"t{i}" for i in range(n)]
    res = text_search(texts, [f"q{i}" for i in range(q)], cfg, text_embeddings=te, query_embeddings=qe, block_size=block)
    with np.errstate(invalid="ignore", divide="ignore"):
        tn = te / np.linalg.norm(te, axis=1, keepdims=True)
        qn = qe / np.linalg.norm(qe, axis=1, keepdims=True)
    cos = (qn.astype(np.float64) @ tn.astype(np.float64).T)
    for i in range(q):
        ok = np.flatnonzero(~np.isnan(cos[i]))  # zero vectors match nothing
        order = ok[np.lexsort((ok, -cos[i, ok]))][:r]
        got = res.doc[i][res.doc[i] >= 0]
        assert len(got) == len(order)
        np.testing.assert_allclose(res.score[i][: len(got)], cos[i, order], atol=1e-5)
        # same documents, except where two scores are equal up to rounding
        for g, e in zip(got, order):
            assert g == e or abs(cos[i, g] - cos[i, e]) < 1e-5
    # the default cut (cosine > 0) only drops
    cut = text_search(texts, [f"q{i}" for i in range(q)], SearchConfig(method="embedding", top_r=r), text_embeddings=te, query_embeddings=qe)
    assert np.all(np.nan_to_num(cut.score, nan=1.0) > 0)


def test_embedding_with_an_encoder_callable() -> None:
    vocab = ["watch", "shoe", "shirt", "belt"]

    def encoder(texts: list[str]) -> np.ndarray:
        return np.array([[float(w in t.lower()) for w in vocab] for t in texts], dtype=np.float32)

    res = text_search(CORPUS, ["watch", "belt"], SearchConfig(method="embedding", top_r=3), encoder=encoder)
    assert results(res, 0) == [0, 1]
    assert results(res, 1) == [7]


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
