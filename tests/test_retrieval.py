"""Title retrieval (simlabel.retrieval): BM25 worked by hand, stemming, the top-R cut, TF-IDF against BM25,
and the blockwise top-R core and embedding search as properties."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simlabel.retrieval import RetrievalConfig, _blockwise_top, analyze, text_search

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


def test_bm25_ranks_as_worked_by_hand() -> None:
    res = text_search(CORPUS, ["Watches", "Casual Shoes", "Belts", "Gloves"], RetrievalConfig(top_r=5))
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
    assert results(text_search(CORPUS, ["Watches"], RetrievalConfig(top_r=5, stem=True)), 0) == [1, 0]
    assert results(text_search(CORPUS, ["Watches"], RetrievalConfig(top_r=5, stem=False)), 0) == []
    assert analyze("Tshirts Watches") == ["tshirt", "watch"]
    # Lucene's short stop list: "top" is a product word here, not a stop word
    assert analyze("Women Black Tops", stem=False) == ["women", "black", "tops"]


def test_min_score_and_top_r_cut() -> None:
    full = text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=10))
    s = full.score[0]
    cut = float((s[0] + s[1]) / 2)
    assert results(text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=10, min_score=cut)), 0) == [3]
    assert results(text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=2)), 0) == [3, 5]
    # a tie at the cut goes to the earlier position
    assert results(text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=3)), 0) == [3, 5, 4]
    # top_r larger than the corpus pads
    assert text_search(CORPUS, ["Casual Shoes"], RetrievalConfig(top_r=50)).doc.shape == (1, 50)


def test_tfidf_agrees_with_bm25_on_an_unambiguous_case() -> None:
    queries = ["Watches", "Casual Shoes", "Belts", "Tshirts"]
    bm = text_search(CORPUS, queries, RetrievalConfig(method="bm25", top_r=3))
    tf = text_search(CORPUS, queries, RetrievalConfig(method="tfidf", top_r=3))
    assert list(bm.doc[:, 0]) == list(tf.doc[:, 0]) == [1, 3, 7, 2]
    assert results(tf, 0) == [1, 0]  # tfidf also returns nothing without a matching term
    assert np.all(np.diff(tf.score[1][tf.doc[1] >= 0]) <= 0)


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
    cfg = RetrievalConfig(method="embedding", top_r=r, min_score=-np.inf)
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
    cut = text_search(texts, [f"q{i}" for i in range(q)], RetrievalConfig(method="embedding", top_r=r), text_embeddings=te, query_embeddings=qe)
    assert np.all(np.nan_to_num(cut.score, nan=1.0) > 0)


def test_embedding_with_an_encoder_callable() -> None:
    vocab = ["watch", "shoe", "shirt", "belt"]

    def encoder(texts: list[str]) -> np.ndarray:
        return np.array([[float(w in t.lower()) for w in vocab] for t in texts], dtype=np.float32)

    res = text_search(CORPUS, ["watch", "belt"], RetrievalConfig(method="embedding", top_r=3), encoder=encoder)
    assert results(res, 0) == [0, 1]
    assert results(res, 1) == [7]
