"""Search labels: noisy training labels from querying a catalog with each category name
(paper 003's web-supervision setting, reproduced on a real product catalog).

What the paper did. Paper 003 trains on web images collected by sending every category
name as a query to an image search engine (Google / Flickr image search) and labelling
every returned image with the query that found it. Nobody checks the results, so the
labels are noisy: a search for "jaguar" returns cars as well as cats. What the engine
does give for free is the *rank* of every result, and results near the top are more
often right than results deep in the list; the rank is side information the method uses
(Stage 1 weighs or filters the web labels by it).

What we do. Same recipe on a product catalog whose titles play the role of the web
page text: for each category (e.g. the 75 ``article_type`` values of the fashion
catalog) the cleaned category name (:func:`simlabel.semantics.names.clean_label_name`,
``"Flip_Flops"`` -> ``"Flip Flops"``) is the query, the product titles are the
searchable documents, the top ``R`` results are kept with their rank and score, and
each result is labelled with its query. The noise is whatever the retrieval gets wrong,
never planted: a multi-word query matches any of its words, so "Shoe Accessories"
returns shoes and "Duffel Bag" returns handbags; "Shirts" returns "T-shirt" titles
(the tokenizer splits "T-shirt" into "t" + "shirt"); "Footballs" returns "Football
Jersey" T-shirts.
:func:`search_noise_report` measures that noise against the catalog's true labels.

Why BM25 by default. A search engine ranks by lexical relevance first, and BM25 is the
standard lexical ranking function (Lucene / Elasticsearch default): term frequency
saturates (``k1``), long titles are discounted (``b``), rare query terms count more than
common ones (IDF), and a document containing no query term scores 0 and is not returned
(``min_score=0`` keeps only scores strictly above 0), which is what a real engine does.
TF-IDF cosine is offered as a simpler lexical baseline, and ``embedding`` (cosine between
a text encoder's embeddings of the query and the titles) as a "semantic search" engine
that also retrieves items whose titles never mention the category.

Analysis (bm25 and tfidf share it): lowercase, scikit-learn's token pattern
(``\\b\\w\\w+\\b``, so one-letter tokens like the "t" of "T-shirt" are dropped), Lucene's
33 English stop words (``bm25s.stopwords.STOPWORDS_EN``; scikit-learn's 318-word list
would drop "top", "bottom", "back", "front", words that are product types here), then
the Snowball English stemmer (``stem=True``) so "Tshirts" matches "Tshirt" and
"Watches" matches "Watch".

Output. :func:`search_labels` returns one row per (item, query) with columns
``id, label, rank, score, query``; ``rank`` is 1-based within its query (1 = best). With
``duplicates="best"`` (default) an item found by several queries keeps only the query
where it ranked best, so the result is a valid simlabel label file (one label per id)
whose ``rank`` column is the side information Stage 1 uses. Ranks are those of the
original result lists, so after de-duplication a query's ranks can have gaps.

Layers: :func:`text_search` is the pure core (texts and queries in, ``(Q, R)`` arrays out),
:func:`search_labels` turns it into a label table, :func:`build_search_labels` runs it
on a catalog file and writes the CSV atomically.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import CatalogError, InputError
from simlabel.files import atomic_write_text, exclusive
from simlabel.semantics.names import check_names, clean_label_name

if TYPE_CHECKING:
    from simlabel.catalog import Catalog

__all__ = [
    "DEFAULT_RANK_BUCKETS",
    "SearchConfig",
    "SearchResults",
    "analyze",
    "build_search_labels",
    "format_search_noise_report",
    "search_labels",
    "text_search",
    "search_noise_report",
]

SearchMethod = Literal["bm25", "tfidf", "embedding"]
DuplicatePolicy = Literal["best", "keep"]
Encoder = Callable[[list[str]], np.ndarray]

_METHODS = ("bm25", "tfidf", "embedding")
_DUPLICATES = ("best", "keep")
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
#: upper ends of the rank buckets of :func:`search_noise_report` (the last bucket is open)
DEFAULT_RANK_BUCKETS: tuple[int, ...] = (10, 25, 50, 100)
#: scores computed at once by the blockwise top-R (queries x texts), ~64 MB of float32
_MAX_BLOCK_CELLS = 1 << 24


@dataclass
class SearchConfig:
    """How the catalog is searched.

    method:
        ``"bm25"`` (default, via the ``bm25s`` library), ``"tfidf"`` (scikit-learn
        ``TfidfVectorizer`` with sublinear tf + cosine) or ``"embedding"`` (cosine between
        text embeddings of the queries and of the titles).
    top_r:
        results kept per query (the paper's "top R search results").
    min_score:
        keep only results scoring strictly above it. With bm25/tfidf ``0`` means "at least
        one query term matched"; with ``embedding`` it is a cosine (``-inf`` keeps all).
    stem:
        Snowball-stem tokens (bm25/tfidf), so "Watches" matches "Watch".
    duplicates:
        ``"best"``: an item found by several queries keeps the one where it ranked best
        (one label per id); ``"keep"``: one row per (item, query).
    k1, b:
        BM25 term-frequency saturation and length normalisation.
    text_model, device:
        the encoder spec (:func:`simlabel.encoders.get_text_encoder`) and device of the
        ``embedding`` method, used when neither embeddings nor an encoder are passed in.
    """

    method: SearchMethod = "bm25"
    top_r: int = 100
    min_score: float = 0.0
    stem: bool = True
    duplicates: DuplicatePolicy = "best"
    k1: float = 1.5
    b: float = 0.75
    text_model: str = "minilm"
    device: str = "auto"

    def __post_init__(self) -> None:
        one_of(self.method, _METHODS, "search method")
        one_of(self.duplicates, _DUPLICATES, "duplicates")
        self.top_r = int(positive_int(self.top_r, "top_r (results kept per query)"))
        # -inf keeps every result; NaN is never a threshold
        self.min_score = float(in_range(self.min_score, "min_score"))
        self.k1 = float(in_range(self.k1, "k1 (BM25 term-frequency saturation)", 0, math.inf, hi_open=True))
        self.b = float(in_range(self.b, "b (BM25 length normalisation)", 0, 1))
        if not isinstance(self.text_model, str) or not self.text_model.strip():
            raise InputError(f"text_model must be a non-empty encoder spec such as 'minilm'; got {self.text_model!r}")


@dataclass
class SearchResults:
    """The result lists of ``Q`` queries over ``n`` texts.

    ``doc[q, r]`` is the position (into the searched texts) of the ``r+1``-th result of
    query ``q`` and ``score[q, r]`` its score; rows are sorted by score descending, then
    position ascending, and padded with ``-1`` / ``NaN`` where a query has fewer than
    ``R`` results (valid results always come first, so ranks are contiguous).
    """

    doc: np.ndarray
    score: np.ndarray
    queries: list[str] = field(default_factory=list)

    @property
    def counts(self) -> np.ndarray:
        """Number of results per query, ``(Q,)`` int64."""
        return (self.doc >= 0).sum(axis=1).astype(np.int64)

    def to_frame(self, ids: Sequence[str] | np.ndarray, categories: Sequence[str]) -> pd.DataFrame:
        """Long table ``id, label, rank, score, query``: one row per result, ``rank`` 1-based,
        rows in query order then rank order. ``ids`` are aligned with the searched texts and
        ``categories`` with the queries."""
        ids_arr = np.asarray(ids, dtype=object)
        cats = list(categories)
        if len(cats) != self.doc.shape[0]:
            raise InputError(f"{len(cats)} categories for {self.doc.shape[0]} queries")
        qs, rs = np.nonzero(self.doc >= 0)  # row-major: query order, then rank order
        pos = self.doc[qs, rs]
        if len(pos) and int(pos.max()) >= len(ids_arr):
            raise InputError(f"{len(ids_arr)} ids for results at position up to {int(pos.max())}")
        queries = self.queries if len(self.queries) == len(cats) else [clean_label_name(c) for c in cats]
        return pd.DataFrame(
            {
                "id": ids_arr[pos] if len(pos) else np.array([], dtype=object),
                "label": np.asarray(cats, dtype=object)[qs] if len(qs) else np.array([], dtype=object),
                "rank": (rs + 1).astype(np.int64),
                "score": self.score[qs, rs].astype(np.float32),
                "query": np.asarray(queries, dtype=object)[qs] if len(qs) else np.array([], dtype=object),
            }
        )


# ----------------------------------------------------------------------------- analysis


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


class _Analyzer:
    """lowercase -> ``\\b\\w\\w+\\b`` tokens -> minus stop words -> Snowball stems (cached)."""

    def __init__(self, stem: bool) -> None:
        self.stop = _stopwords()
        self.cache: dict[str, str] = {}
        self.stemmer = None
        if stem:
            from nltk.stem.snowball import SnowballStemmer

            self.stemmer = SnowballStemmer("english")

    def __call__(self, text: str) -> list[str]:
        tokens = [t for t in _TOKEN.findall(text.lower()) if t not in self.stop]
        if self.stemmer is None:
            return tokens
        out = []
        cache = self.cache
        for t in tokens:
            s = cache.get(t)
            if s is None:
                s = cache[t] = self.stemmer.stem(t)
            out.append(s)
        return out


def analyze(text: str, *, stem: bool = True) -> list[str]:
    """The tokens bm25/tfidf index for ``text`` (lowercase, stop words dropped, stemmed)."""
    return _Analyzer(stem)(str(text))


# ----------------------------------------------------------------------------- top R


def _top_block(scores: np.ndarray, offset: int, r: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Top ``r`` of each row of ``scores`` (q, m) among those ``> min_score``.

    Returns ``(pos, score)`` of shape (q, r): positions are ``offset + column``; rows
    sorted by score descending then position ascending; padding ``-1`` / ``-inf``. Ties
    at the cut are resolved towards smaller positions, so the result never depends on
    how ``argpartition`` orders equal values.
    """
    q, m = scores.shape
    s = np.where(scores > min_score, scores, -np.inf).astype(np.float32, copy=False)
    # NaN scores (e.g. a zero-norm embedding) never pass ``> min_score`` and are dropped above.
    if m > r:
        kth = -np.partition(-s, r - 1, axis=1)[:, r - 1 : r]  # r-th largest per row, (q, 1)
        valid = s > -np.inf
        above = (s > kth) & valid
        at = (s == kth) & valid
        room = r - above.sum(axis=1, keepdims=True)
        keep = above | (at & (np.cumsum(at, axis=1, dtype=np.int32) <= room))
    else:
        keep = s > -np.inf
    rows, cols = np.nonzero(keep)
    counts = np.bincount(rows, minlength=q)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.full((q, r), -1, dtype=np.int64)
    val = np.full((q, r), -np.inf, dtype=np.float32)
    pos[rows, slot] = cols.astype(np.int64) + offset
    val[rows, slot] = s[rows, cols]
    return _sort_rows(pos, val, r)


def _sort_rows(pos: np.ndarray, val: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by score desc, position asc (padding last) and keep ``r`` columns."""
    key_pos = np.where(pos < 0, np.iinfo(np.int64).max, pos)
    order = np.lexsort((key_pos, -val.astype(np.float64)), axis=-1)[:, :r]
    return np.take_along_axis(pos, order, axis=1), np.take_along_axis(val, order, axis=1)


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], r: int) -> tuple[np.ndarray, np.ndarray]:
    return _sort_rows(np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1), r)


def _blockwise_top(
    score_block: Callable[[int, int], np.ndarray],
    n: int,
    q: int,
    r: int,
    min_score: float,
    block_size: int | None,
    advance: Callable[[int], None] = lambda k: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Running top ``r`` over texts ``[0, n)`` scored block by block (``score_block(start, stop)``
    returns the (q, stop - start) scores), so memory stays ``O(q * block)`` for any ``n``."""
    if block_size is None:
        block_size = max(1024, _MAX_BLOCK_CELLS // max(q, 1))
    best = (np.full((q, r), -1, dtype=np.int64), np.full((q, r), -np.inf, dtype=np.float32))
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        block = np.asarray(score_block(start, stop), dtype=np.float32)
        best = _merge(best, _top_block(block, start, r, min_score), r)
        advance(stop - start)
    return best


def _finish(pos: np.ndarray, val: np.ndarray, queries: list[str]) -> SearchResults:
    score = val.astype(np.float32)
    score[pos < 0] = np.nan
    return SearchResults(doc=pos.astype(np.int64), score=score, queries=queries)


# ----------------------------------------------------------------------------- methods


def _bm25_top(
    docs_tokens: list[list[str]],
    query_tokens: list[list[str]],
    config: SearchConfig,
    r: int,
    advance: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray]:
    import bm25s

    n, q = len(docs_tokens), len(query_tokens)
    pos = np.full((q, r), -1, dtype=np.int64)
    val = np.full((q, r), -np.inf, dtype=np.float32)
    retriever = bm25s.BM25(k1=config.k1, b=config.b)
    retriever.index(docs_tokens, show_progress=False)
    vocab = retriever.vocab_dict
    # bm25s.retrieve(k=...) returns k documents even where they score 0 and breaks ties
    # however argpartition does; its per-query scores with our own top R give the
    # min_score cut and deterministic ties.
    ids = [[vocab[t] for t in toks if t in vocab and t != ""] for toks in query_tokens]
    batch = max(1, min(q, _MAX_BLOCK_CELLS // max(n, 1)))
    for start in range(0, q, batch):
        stop = min(q, start + batch)
        scores = np.zeros((stop - start, n), dtype=np.float32)
        for i in range(start, stop):
            if ids[i]:
                scores[i - start] = retriever.get_scores_from_ids(ids[i])
            else:
                scores[i - start] = -np.inf  # no query term in the vocabulary: nothing matches
        p, v = _top_block(scores, 0, r, config.min_score)
        pos[start:stop], val[start:stop] = p, v
        advance(stop - start)
    return pos, val


def _tfidf_top(
    docs: list[str],
    queries: list[str],
    analyzer: _Analyzer,
    config: SearchConfig,
    r: int,
    block_size: int | None,
    advance: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, norm="l2", dtype=np.float32)
    try:
        d = vec.fit_transform(docs).tocsr()
    except ValueError:  # empty vocabulary: no document has a single indexable token
        q = len(queries)
        return np.full((q, r), -1, dtype=np.int64), np.full((q, r), -np.inf, dtype=np.float32)
    qm = vec.transform(queries).tocsr()
    qt = qm.T.tocsc()  # (V, Q)

    def block(start: int, stop: int) -> np.ndarray:
        return (d[start:stop] @ qt).toarray().T  # (Q, m)

    return _blockwise_top(block, d.shape[0], len(queries), r, config.min_score, block_size, advance)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, x / np.where(norms > 0, norms, 1), np.nan).astype(np.float32)


def _embedding_top(
    text_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    config: SearchConfig,
    r: int,
    block_size: int | None,
    advance: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray]:
    qe = _unit_rows(query_embeddings)
    n = text_embeddings.shape[0]

    def block(start: int, stop: int) -> np.ndarray:
        # zero-norm rows become NaN and never pass the score cut
        return qe @ _unit_rows(text_embeddings[start:stop]).T

    return _blockwise_top(block, n, qe.shape[0], r, config.min_score, block_size, advance)


def _as_text(value: object) -> str:
    if value is None or (np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def text_search(
    texts: Sequence[str],
    queries: Sequence[str],
    config: SearchConfig | None = None,
    *,
    text_embeddings: np.ndarray | None = None,
    query_embeddings: np.ndarray | None = None,
    encoder: Encoder | None = None,
    block_size: int | None = None,
    progress: bool = False,
) -> SearchResults:
    """Search ``texts`` with each of ``queries`` and keep the top ``config.top_r`` results.

    The pure core: queries are used as given (no cleaning). Empty / missing texts are
    empty documents that match nothing (they are left out of the BM25/TF-IDF statistics).
    For ``method="embedding"`` the cosine similarity is computed between
    ``query_embeddings`` (Q, d) and ``text_embeddings`` (n, d); either one that is not
    given is computed with ``encoder`` (a callable ``list[str] -> (m, d)``), or with
    ``simlabel.encoders.get_text_encoder(config.text_model, config.device)``. Texts are
    scored ``block_size`` rows at a time with a running top R (default: about 2^24 scores
    per block), so memory stays bounded for millions of texts.

    Returns a :class:`SearchResults` with ``doc``/``score`` of shape (Q, R), rows sorted by
    score descending then position ascending.
    """
    config = config or SearchConfig()
    texts = [_as_text(t) for t in texts]
    queries = [_as_text(q) for q in queries]
    n, q, r = len(texts), len(queries), config.top_r
    if block_size is not None and (isinstance(block_size, bool) or int(block_size) < 1):
        raise InputError(f"block_size must be a positive integer; got {block_size!r}")
    empty_result = (np.full((q, r), -1, dtype=np.int64), np.full((q, r), -np.inf, dtype=np.float32))
    if q == 0 or n == 0:
        return _finish(*empty_result, queries)

    from simlabel.progress import progress_bar

    if config.method == "embedding":
        if text_embeddings is None or query_embeddings is None:
            if encoder is None:
                from simlabel.encoders import get_text_encoder

                encoder = get_text_encoder(config.text_model, config.device)
            if query_embeddings is None:
                query_embeddings = np.asarray(encoder(queries), dtype=np.float32)
            if text_embeddings is None:
                text_embeddings = np.asarray(encoder(texts), dtype=np.float32)
        te = np.asarray(text_embeddings)
        qe = np.asarray(query_embeddings)
        if te.ndim != 2 or te.shape[0] != n:
            raise InputError(f"text_embeddings must have shape ({n}, d) for {n} texts; got {te.shape}")
        if qe.ndim != 2 or qe.shape[0] != q:
            raise InputError(f"query_embeddings must have shape ({q}, d) for {q} queries; got {qe.shape}")
        if te.shape[1] != qe.shape[1]:
            raise InputError(f"text embeddings have dimension {te.shape[1]} but query embeddings {qe.shape[1]}")
        # Missing titles match nothing, whatever the encoder made of an empty string.
        nonempty = np.array([bool(t.strip()) for t in texts])
        if not nonempty.all():
            te = te[nonempty]
        keep_pos = np.flatnonzero(nonempty)
        with progress_bar("search (embedding)", len(te), enabled=progress) as advance:
            pos, val = _embedding_top(te, qe, config, r, block_size, advance)
        return _finish(*_restore(pos, val, keep_pos), queries)

    analyzer = _Analyzer(config.stem)
    docs_tokens = [analyzer(t) for t in texts]
    keep_pos = np.flatnonzero([bool(toks) for toks in docs_tokens])
    if len(keep_pos) == 0:
        return _finish(*empty_result, queries)
    if config.method == "bm25":
        query_tokens = [analyzer(s) for s in queries]
        with progress_bar("search (bm25)", q, enabled=progress) as advance:
            pos, val = _bm25_top([docs_tokens[i] for i in keep_pos], query_tokens, config, min(r, len(keep_pos)), advance)
    else:
        with progress_bar("search (tfidf)", len(keep_pos), enabled=progress) as advance:
            pos, val = _tfidf_top([texts[i] for i in keep_pos], queries, analyzer, config, min(r, len(keep_pos)), block_size, advance)
    pos, val = _restore(pos, val, keep_pos)
    if pos.shape[1] < r:  # fewer searchable texts than top_r
        pad = r - pos.shape[1]
        pos = np.concatenate([pos, np.full((q, pad), -1, dtype=np.int64)], axis=1)
        val = np.concatenate([val, np.full((q, pad), -np.inf, dtype=np.float32)], axis=1)
    return _finish(pos, val, queries)


def _restore(pos: np.ndarray, val: np.ndarray, keep_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map positions into the searched subset back to positions into all texts (order is
    preserved, because ``keep_pos`` is increasing)."""
    out = np.full_like(pos, -1)
    ok = pos >= 0
    out[ok] = keep_pos[pos[ok]]
    return out, val


# ----------------------------------------------------------------------------- label tables


def _check_categories(categories: Sequence[str]) -> list[str]:
    cats = check_names(categories, "category", "categories")
    by_query: dict[str, str] = {}
    for c in cats:
        query = clean_label_name(c)
        if query in by_query:
            raise InputError(
                f"categories {by_query[query]!r} and {c!r} give the same query {query!r}; they cannot be told apart by search"
            )
        by_query[query] = c
    return cats


def search_labels(
    ids: Sequence[str] | np.ndarray | pd.Series,
    texts: Sequence[str] | np.ndarray | pd.Series,
    categories: Sequence[str],
    config: SearchConfig | None = None,
    *,
    text_embeddings: np.ndarray | None = None,
    query_embeddings: np.ndarray | None = None,
    encoder: Encoder | None = None,
    block_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Label items by searching their ``texts`` with each category name.

    Each category is searched with its cleaned name (:func:`clean_label_name`); the top
    ``config.top_r`` results are labelled with the category. Returns a DataFrame with
    columns ``id, label, rank, score, query`` (``rank`` 1-based within its query, 1 = best),
    sorted by label then rank. With ``duplicates="best"`` an id found by several queries
    keeps the row where it ranked best (smallest rank; ties: higher score, then the
    category listed first), so ids are unique; ``"keep"`` keeps every (id, query) row.

    Raises ``ValueError`` on no categories, duplicate or blank category names, ``ids``
    and ``texts`` of different lengths, and duplicate or empty ids. Items with an empty or
    missing text match nothing; a warning names the first few. ``df.attrs["search"]``
    holds counts (searched, empty texts, categories without results).
    """
    config = config or SearchConfig()
    cats = _check_categories(categories)
    ids_list = [_as_text(i).strip() for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
    text_list = list(texts.tolist() if hasattr(texts, "tolist") else texts)
    if len(ids_list) != len(text_list):
        raise InputError(f"{len(ids_list)} ids but {len(text_list)} texts; they must be aligned one to one")
    blank_ids = [i for i, v in enumerate(ids_list) if not v]
    if blank_ids:
        raise InputError(f"empty id at position(s) {', '.join(map(str, blank_ids[:5]))}")
    dup = pd.Index(ids_list).duplicated()
    if dup.any():
        raise InputError(f"duplicate id {ids_list[int(np.flatnonzero(dup)[0])]!r}; ids must be unique ({int(dup.sum())} duplicated)")
    text_list = [_as_text(t) for t in text_list]
    empty = [ids_list[i] for i, t in enumerate(text_list) if not t.strip()]
    if empty:
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        warnings.warn(
            f"{len(empty)} item(s) have an empty text and can match no query: {', '.join(empty[:5])}{more}",
            stacklevel=2,
        )
    queries = [clean_label_name(c) for c in cats]
    res = text_search(
        text_list,
        queries,
        config,
        text_embeddings=text_embeddings,
        query_embeddings=query_embeddings,
        encoder=encoder,
        block_size=block_size,
        progress=progress,
    )
    df = res.to_frame(np.asarray(ids_list, dtype=object), cats)
    n_results = res.counts
    if config.duplicates == "best" and len(df):
        cat_order = pd.Series(np.arange(len(cats)), index=cats)
        order = df.assign(_c=df["label"].map(cat_order).to_numpy(), _s=-df["score"].astype(np.float64))
        order = order.sort_values(["rank", "_s", "_c"], kind="stable")
        df = order.drop_duplicates("id", keep="first").drop(columns=["_c", "_s"])
    df = df.sort_values(["label", "rank"], kind="stable").reset_index(drop=True)
    df["rank"] = df["rank"].astype(np.int64)
    df["score"] = df["score"].astype(np.float32)
    df.attrs["search"] = {
        "method": config.method,
        "top_r": config.top_r,
        "n_items": len(ids_list),
        "n_empty_text": len(empty),
        "categories": cats,
        "results_per_category": dict(zip(cats, map(int, n_results))),
        "categories_without_results": [c for c, k in zip(cats, n_results) if k == 0],
    }
    return df


def build_search_labels(
    catalog: str | os.PathLike | Catalog,
    *,
    categories: Sequence[str] | None = None,
    label_col: str = "label",
    text_col: str = "title",
    config: SearchConfig | None = None,
    out: str | os.PathLike | None = None,
    exclude_ids: Iterable[str] | None = None,
    exclude_split: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Search a catalog's ``text_col`` with each category and return (and write) the labels.

    ``catalog`` is a catalog file (loaded with :func:`simlabel.catalog.load_catalog`) or a
    :class:`~simlabel.catalog.Catalog`. ``categories`` default to the sorted distinct
    non-empty values of ``label_col``. ``exclude_ids`` (e.g. a held-out test split) are
    removed from the searchable pool before searching, so they can never be labelled and
    do not count in the BM25/TF-IDF statistics; ``exclude_split`` (e.g. ``"test"``) adds the
    rows of that catalog split to them. With ``out`` the table is written as CSV
    atomically (``id,label,rank,score,query``), readable by
    :func:`simlabel.labels.io.read_labels`. Missing columns raise
    :class:`~simlabel.catalog.CatalogError` naming the catalog and the column.
    """
    from simlabel.catalog import Catalog, load_catalog

    config = config or SearchConfig()
    if isinstance(catalog, Catalog):
        cat = catalog
        table = cat.table
        name = str(cat.path) if cat.path else "catalog"
        if categories is None and label_col not in table.columns:
            raise CatalogError(
                f"{name}: no label column {label_col!r} to take the categories from; columns are "
                f"{', '.join(map(str, table.columns))}"
            )
    else:
        path = Path(catalog)
        cat = load_catalog(path, columns={"label": label_col} if categories is None else None, require=("id",))
        table = cat.table
        name = str(cat.path)
    if text_col not in table.columns:
        raise CatalogError(
            f"{name}: no text column {text_col!r} to search; columns are {', '.join(map(str, table.columns))}"
        )
    if categories is None:
        values = table[label_col]
        values = values[values.notna()].astype(str).str.strip()
        categories = sorted(set(values[values != ""]))
        if not categories:
            raise CatalogError(f"{name}: column {label_col!r} has no non-empty values to use as categories")
    if exclude_split is not None:
        if "split" not in table.columns:
            raise CatalogError(f"{name}: exclude_split={exclude_split!r} needs a split column")
        split_ids = table.loc[table["split"].astype(str) == exclude_split, "id"].astype(str)
        exclude_ids = set(split_ids) | set(map(str, exclude_ids or ()))
    pool = table
    n_excluded = 0
    if exclude_ids is not None:
        excluded = pd.Index([str(i) for i in exclude_ids])
        mask = table["id"].astype(str).isin(excluded).to_numpy()
        n_excluded = int(mask.sum())
        pool = table[~mask]
    df = search_labels(
        pool["id"].astype(str).to_numpy(dtype=object),
        pool[text_col].to_numpy(dtype=object),
        categories,
        config,
        progress=progress,
    )
    df.attrs["search"].update({"catalog": name, "text_col": text_col, "n_catalog": len(table), "n_excluded": n_excluded})
    if out is not None:
        buf = io.StringIO()
        df[["id", "label", "rank", "score", "query"]].to_csv(buf, index=False)
        with exclusive(out):
            atomic_write_text(out, buf.getvalue())
    return df


# ----------------------------------------------------------------------------- noise report


def _rank_bucket_names(edges: Sequence[int]) -> list[tuple[int, float, str]]:
    out: list[tuple[int, float, str]] = []
    lo = 1
    for hi in edges:
        out.append((lo, hi, f"{lo}-{hi}"))
        lo = hi + 1
    out.append((lo, math.inf, f"{lo}+"))
    return out


def search_noise_report(
    labels: pd.DataFrame,
    truth: Mapping[str, str] | pd.Series,
    *,
    categories: Sequence[str] | None = None,
    rank_buckets: Sequence[int] = DEFAULT_RANK_BUCKETS,
) -> dict:
    """How wrong the search labels are, against the true labels.

    ``labels``: a table from :func:`search_labels` (``id, label`` and ``rank``); ``truth``:
    the true label of every catalog item (id -> label), whose size is the catalog size.
    ``categories`` (default: the searched categories recorded in ``labels.attrs``, else the
    distinct true labels and search labels) are those that count as searched.

    Returns a dict with ``n_rows`` (labelled rows), ``n_labelled`` (distinct ids),
    ``n_catalog``, ``coverage`` (share of the catalog labelled), ``n_unknown`` (labelled
    ids without a true label, left out of the rates), ``n_wrong``, ``noise_rate`` (wrong
    rows / rows with a truth), ``by_rank`` (one dict per rank bucket: ``ranks, n,
    n_wrong, noise_rate``; NaN where empty), ``by_category`` (``label, n, n_wrong,
    noise_rate, top_wrong`` = the most common true label among its wrong rows, sorted by
    noise rate descending, then size), ``n_categories`` and ``categories_without_results``
    (count) with ``empty_categories`` (names).
    """
    missing = [c for c in ("id", "label") if c not in labels.columns]
    if missing:
        raise InputError(f"labels have no column(s) {', '.join(missing)}")
    if isinstance(truth, pd.Series):
        truth_s = truth.copy()
    else:
        truth_s = pd.Series(dict(truth), dtype=object)
    truth_s.index = truth_s.index.astype(str)
    if truth_s.index.duplicated().any():
        raise InputError(f"truth has duplicate id {truth_s.index[truth_s.index.duplicated()][0]!r}")
    truth_s = truth_s.astype(object).where(truth_s.notna(), None)
    ids = labels["id"].astype(str)
    true = ids.map(truth_s)
    known = true.notna().to_numpy()
    lab = labels["label"].astype(str).to_numpy()
    wrong = known & (true.astype(str).to_numpy() != lab)
    n_known = int(known.sum())

    def rate(k: int, n: int) -> float:
        return k / n if n else float("nan")

    by_rank = []
    if "rank" in labels.columns:
        ranks = pd.to_numeric(labels["rank"], errors="coerce").to_numpy(dtype=np.float64)
        for lo, hi, name in _rank_bucket_names(sorted(int(e) for e in rank_buckets)):
            m = known & (ranks >= lo) & (ranks <= hi)
            n, k = int(m.sum()), int((wrong & m).sum())
            by_rank.append({"ranks": name, "n": n, "n_wrong": k, "noise_rate": rate(k, n)})

    if categories is None:
        categories = labels.attrs.get("search", {}).get("categories")
    if categories is None:
        categories = sorted(set(truth_s.dropna().astype(str)) | set(lab))
    categories = list(categories)

    frame = pd.DataFrame({"label": lab, "known": known, "wrong": wrong, "true": true.to_numpy()})
    by_category = []
    for label, g in frame[frame["known"]].groupby("label", sort=False):
        n, k = len(g), int(g["wrong"].sum())
        wrong_true = g.loc[g["wrong"], "true"].astype(str)
        top = wrong_true.value_counts()
        by_category.append(
            {
                "label": label,
                "n": n,
                "n_wrong": k,
                "noise_rate": rate(k, n),
                "top_wrong": (top.index[0] if len(top) else None),
                "top_wrong_n": (int(top.iloc[0]) if len(top) else 0),
            }
        )
    by_category.sort(key=lambda d: (-d["noise_rate"], -d["n"], d["label"]))
    present = set(lab)
    empty_categories = [c for c in categories if c not in present]
    n_labelled = int(ids.nunique())
    n_wrong = int(wrong.sum())
    return {
        "n_rows": len(labels),
        "n_labelled": n_labelled,
        "n_catalog": len(truth_s),
        "coverage": rate(int(ids[known].nunique()), len(truth_s)),
        "n_unknown": int((~known).sum()),
        "n_wrong": n_wrong,
        "noise_rate": rate(n_wrong, n_known),
        "by_rank": by_rank,
        "by_category": by_category,
        "n_categories": len(categories),
        "categories_without_results": len(empty_categories),
        "empty_categories": empty_categories,
    }


def format_search_noise_report(report: Mapping, *, top: int = 10) -> str:
    """A short text rendering of :func:`search_noise_report` (overall, by rank, noisiest categories)."""
    lines = [
        f"search labels: {report['n_labelled']} of {report['n_catalog']} items labelled "
        f"({report['coverage']:.1%}), {report['n_rows']} rows",
        f"noise rate: {report['noise_rate']:.1%} ({report['n_wrong']} wrong)",
        f"categories without results: {report['categories_without_results']} of {report['n_categories']}"
        + (f" ({', '.join(report['empty_categories'][:10])})" if report["empty_categories"] else ""),
    ]
    if report.get("by_rank"):
        lines.append("by rank:")
        for b in report["by_rank"]:
            if b["n"]:
                lines.append(f"  {b['ranks']:>8}  n={b['n']:<6} noise={b['noise_rate']:.1%}")
    if report.get("by_category"):
        lines.append(f"noisiest categories (top {top}):")
        for c in report["by_category"][:top]:
            why = f"  mostly {c['top_wrong']} ({c['top_wrong_n']})" if c["top_wrong"] else ""
            lines.append(f"  {c['label']:<24} n={c['n']:<5} noise={c['noise_rate']:.1%}{why}")
    return "\n".join(lines)
