"""Title retrieval: rank a set of texts (product titles) for each of a set of queries, keeping the top ``R``.

The search engine paper 003's search labels stand on (:mod:`simlabel.labels.search` makes labels from it).
"Search" here means text retrieval only; vector k-NN is :mod:`simlabel.index` and :mod:`simlabel.graph`.

Methods (:class:`RetrievalConfig`):

* ``bm25`` (default; the ``bm25s`` library): the standard lexical ranking function (Lucene / Elasticsearch
  default). Term frequency saturates (``k1``), long titles are discounted (``b``), rare query terms count
  more than common ones (IDF), and a document containing no query term scores 0 and is not returned
  (``min_score=0`` keeps only scores strictly above 0), which is what a real engine does.
* ``tfidf``: scikit-learn's ``TfidfVectorizer`` with sublinear tf and cosine, a simpler lexical baseline.
* ``embedding``: cosine between a text encoder's embeddings of the query and the titles, a "semantic
  search" that also retrieves items whose titles never mention the query.

Analysis (bm25 and tfidf share it, :func:`analyze`): lowercase, scikit-learn's token pattern
(``\\b\\w\\w+\\b``, so one-letter tokens like the "t" of "T-shirt" are dropped), Lucene's 33 English stop
words (``bm25s.stopwords.STOPWORDS_EN``; scikit-learn's 318-word list would drop "top", "bottom", "back",
"front", words that are product types), then the Snowball English stemmer (``stem=True``) so "Tshirts"
matches "Tshirt" and "Watches" matches "Watch".

:func:`text_search` is the pure core: texts and queries in, ``(Q, R)`` arrays of positions and scores out,
scored block by block with a running top ``R`` so that memory stays bounded for millions of texts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError

__all__ = ["RetrievalConfig", "SearchResults", "analyze", "text_search"]

SearchMethod = Literal["bm25", "tfidf", "embedding"]
Encoder = Callable[[list[str]], np.ndarray]

_METHODS = ("bm25", "tfidf", "embedding")
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
#: scores computed at once by the blockwise top-R (queries x texts), ~64 MB of float32
_MAX_BLOCK_CELLS = 1 << 24


@dataclass
class RetrievalConfig:
    """How texts are searched (:func:`text_search`): the method, the results kept and the analysis.

    Parameters
    ----------
    method : {"bm25", "tfidf", "embedding"}, default "bm25"
        ``"bm25"`` (via the ``bm25s`` library: term frequency saturates, long titles are
        discounted, rare query terms count more), ``"tfidf"`` (scikit-learn ``TfidfVectorizer``
        with sublinear tf, and cosine) or ``"embedding"`` (cosine between text embeddings of the
        queries and of the titles, which also finds titles that never mention the query).
    top_r : int, default 100
        Results kept per query (the paper's "top R search results").
    min_score : float, default 0.0
        Keep only results scoring strictly above it. With bm25/tfidf ``0`` means "at least one
        query term matched"; with ``embedding`` it is a cosine (``-inf`` keeps all).
    stem : bool, default True
        Snowball-stem the tokens (bm25/tfidf), so "Watches" matches "Watch".
    k1 : float, default 1.5
        BM25 term-frequency saturation (``>= 0``).
    b : float, default 0.75
        BM25 length normalisation, in ``[0, 1]``.
    text_model : str, default "minilm"
        The ``embedding`` method's encoder spec (:func:`simlabel.encoders.get_text_encoder`),
        used when neither embeddings nor an encoder are passed in.
    device : str, default "auto"
        Where that encoder runs.

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field), or
        a blank ``text_model``.

    Examples
    --------
    >>> from simlabel.retrieval import RetrievalConfig
    >>> RetrievalConfig(method="tfidf", top_r=50).top_r
    50
    """

    method: SearchMethod = "bm25"
    top_r: int = 100
    min_score: float = 0.0
    stem: bool = True
    k1: float = 1.5
    b: float = 0.75
    text_model: str = "minilm"
    device: str = "auto"

    def __post_init__(self) -> None:
        one_of(self.method, _METHODS, "search method")
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
    config: RetrievalConfig,
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
    config: RetrievalConfig,
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
    config: RetrievalConfig,
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


def as_text(value: object) -> str:
    """A table cell as text: ``None``, NaN and other missing values are the empty string."""
    if value is None or (np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def text_search(
    texts: Sequence[str],
    queries: Sequence[str],
    config: RetrievalConfig | None = None,
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
    config = config or RetrievalConfig()
    texts = [as_text(t) for t in texts]
    queries = [as_text(q) for q in queries]
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
