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

The engine is :mod:`simlabel.retrieval` (BM25 by default: a search engine ranks by lexical
relevance first; TF-IDF and embedding search as options; the analysis and its reasons are there).

Output. :func:`search_labels` returns one row per (item, query) with columns
``id, label, rank, score, query``; ``rank`` is 1-based within its query (1 = best). With
``duplicates="best"`` (default) an item found by several queries keeps only the query
where it ranked best, so the result is a valid simlabel label file (one label per id)
whose ``rank`` column is the side information Stage 1 uses. Ranks are those of the
original result lists, so after de-duplication a query's ranks can have gaps.

Layers: :func:`simlabel.retrieval.text_search` is the pure core (texts and queries in, ``(Q, R)``
arrays out), :func:`search_labels` turns it into a label table (:func:`results_table`),
:func:`build_search_labels` runs it on a catalog file and writes the CSV atomically.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from simlabel.checks import one_of
from simlabel.errors import CatalogError, InputError
from simlabel.files import atomic_write_text, exclusive
from simlabel.retrieval import Encoder, RetrievalConfig, SearchResults, as_text, text_search
from simlabel.semantics.names import check_names, clean_label_name

if TYPE_CHECKING:
    from simlabel.catalog import Catalog

__all__ = [
    "DEFAULT_RANK_BUCKETS",
    "SearchConfig",
    "SearchLabels",
    "build_search_labels",
    "format_search_noise_report",
    "results_table",
    "search_labels",
    "search_noise_report",
]

DuplicatePolicy = Literal["best", "keep"]

_DUPLICATES = ("best", "keep")
#: upper ends of the rank buckets of :func:`search_noise_report` (the last bucket is open)
DEFAULT_RANK_BUCKETS: tuple[int, ...] = (10, 25, 50, 100)


@dataclass
class SearchConfig(RetrievalConfig):
    """How the catalog is searched and what is made of the results (paper 003's search labels).

    The search settings are those of :class:`~simlabel.retrieval.RetrievalConfig`, which this
    extends with ``duplicates``.

    Parameters
    ----------
    method, top_r, min_score, stem, k1, b, text_model, device
        The search, as :class:`~simlabel.retrieval.RetrievalConfig` defines them (defaults
        ``"bm25"``, ``100``, ``0.0``, ``True``, ``1.5``, ``0.75``, ``"minilm"``, ``"auto"``).
    duplicates : {"best", "keep"}, default "best"
        ``"best"``: an item found by several queries keeps the one where it ranked best (one
        label per id, a valid label file); ``"keep"``: one row per (item, query).

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field), or
        a blank ``text_model``.

    Examples
    --------
    >>> from simlabel import SearchConfig
    >>> cfg = SearchConfig(method="tfidf", top_r=50, duplicates="keep")
    >>> cfg.method, cfg.top_r, cfg.stem, cfg.duplicates
    ('tfidf', 50, True, 'keep')
    """

    duplicates: DuplicatePolicy = "best"

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self.duplicates, _DUPLICATES, "duplicates")


@dataclass
class SearchLabels:
    """What :func:`search_labels` and :func:`build_search_labels` made: the search labels and a summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        ``id, label, rank, score, query``: one row per (item, query), or per item with
        ``duplicates="best"``; ``rank`` is 1-based within its query (1 = best), the side
        information of paper 003's stage 1; sorted by label, then rank.
    summary : dict
        ``method``, ``top_r``, ``n_items``, ``n_empty_text``, ``categories`` (the searched ones, in
        order), ``results_per_category``, ``categories_without_results``; from a catalog also
        ``catalog``, ``text_col``, ``n_catalog`` and ``n_excluded``.

    Examples
    --------
    Built by hand here; :func:`search_labels` makes it.

    >>> import pandas as pd
    >>> from simlabel import SearchLabels
    >>> rows = pd.DataFrame({"id": ["7"], "label": ["Watches"], "rank": [1], "score": [2.1], "query": ["Watches"]})
    >>> made = SearchLabels(rows, {"method": "bm25", "top_r": 100})
    >>> made.labels[["id", "label", "rank"]].values.tolist()
    [['7', 'Watches', 1]]
    """

    labels: pd.DataFrame
    summary: dict


def results_table(results: SearchResults, ids: Sequence[str] | np.ndarray, categories: Sequence[str]) -> pd.DataFrame:
    """Long table ``id, label, rank, score, query``: one row per result, ``rank`` 1-based,
    rows in query order then rank order. ``ids`` are aligned with the searched texts and
    ``categories`` with the queries."""
    ids_arr = np.asarray(ids, dtype=object)
    cats = list(categories)
    if len(cats) != results.doc.shape[0]:
        raise InputError(f"{len(cats)} categories for {results.doc.shape[0]} queries")
    qs, rs = np.nonzero(results.doc >= 0)  # row-major: query order, then rank order
    pos = results.doc[qs, rs]
    if len(pos) and int(pos.max()) >= len(ids_arr):
        raise InputError(f"{len(ids_arr)} ids for results at position up to {int(pos.max())}")
    queries = results.queries if len(results.queries) == len(cats) else [clean_label_name(c) for c in cats]
    return pd.DataFrame(
        {
            "id": ids_arr[pos] if len(pos) else np.array([], dtype=object),
            "label": np.asarray(cats, dtype=object)[qs] if len(qs) else np.array([], dtype=object),
            "rank": (rs + 1).astype(np.int64),
            "score": results.score[qs, rs].astype(np.float32),
            "query": np.asarray(queries, dtype=object)[qs] if len(qs) else np.array([], dtype=object),
        }
    )


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
) -> SearchLabels:
    """Label items by searching their ``texts`` with each category name (paper 003's web labels).

    Each category is searched with its cleaned name (:func:`clean_label_name`,
    ``"Flip_Flops"`` -> ``"Flip Flops"``); the top ``config.top_r`` results (:func:`text_search`)
    are labelled with the category, keeping their rank and score. The noise is whatever the
    retrieval gets wrong. With ``duplicates="best"`` an id found by several queries keeps the row
    where it ranked best (smallest rank; ties: higher score, then the category listed first), so
    ids are unique; ``"keep"`` keeps every (id, query) row. Items with an empty or missing text
    match nothing; a warning names the first few.

    Parameters
    ----------
    ids : sequence of str, numpy.ndarray or pandas.Series
        The items' ids (stripped; non-empty and unique), aligned with ``texts``.
    texts : sequence of str, numpy.ndarray or pandas.Series
        The searchable text of each item (e.g. the product title).
    categories : sequence of str
        The category names, each one query.
    config : SearchConfig, optional
        How to search and what to keep; default ``SearchConfig()`` (BM25, top 100, best rank).
    text_embeddings : numpy.ndarray, optional
        ``method="embedding"``: the texts' embeddings ``(n, d)``, computed with the encoder when
        not given.
    query_embeddings : numpy.ndarray, optional
        ``method="embedding"``: the cleaned category names' embeddings ``(Q, d)``, likewise.
    encoder : callable, optional
        ``method="embedding"``: ``list[str] -> (m, d)`` array for what is not given above;
        default ``get_text_encoder(config.text_model, config.device)``.
    block_size : int, optional
        Texts scored at a time with a running top R (default: about 2^24 scores per block), so
        memory stays bounded for millions of texts.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    SearchLabels
        ``labels``: ``id, label, rank, score, query`` (``rank`` 1-based within its query,
        1 = best), sorted by label then rank; ``summary``: the counts (items, empty texts,
        results per category, categories without results) and the categories searched.

    Raises
    ------
    InputError
        No categories, a blank category name or one given twice, two categories with the same
        cleaned query; ``ids`` and ``texts`` of different lengths; an empty or duplicate id; a
        ``block_size`` below 1; embeddings whose shapes do not fit the texts and queries; an
        unknown encoder spec.
    TypeError
        ``categories`` given as one string, or a category name that is not a ``str``.
    ModelError
        The ``embedding`` method's encoder cannot be loaded.

    Examples
    --------
    >>> from simlabel import SearchConfig, search_labels
    >>> titles = ["Men Blue Slim Fit Shirt", "Steel Analog Watch", "Running Shoes"]
    >>> made = search_labels(["1", "2", "3"], titles, ["Shirt", "Watch"], SearchConfig(stem=False))
    >>> made.labels[["id", "label", "rank"]].values.tolist()
    [['1', 'Shirt', 1], ['2', 'Watch', 1]]
    >>> made.summary["categories_without_results"]
    []
    """
    config = config or SearchConfig()
    cats = _check_categories(categories)
    ids_list = [as_text(i).strip() for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
    text_list = list(texts.tolist() if hasattr(texts, "tolist") else texts)
    if len(ids_list) != len(text_list):
        raise InputError(f"{len(ids_list)} ids but {len(text_list)} texts; they must be aligned one to one")
    blank_ids = [i for i, v in enumerate(ids_list) if not v]
    if blank_ids:
        raise InputError(f"empty id at position(s) {', '.join(map(str, blank_ids[:5]))}")
    dup = pd.Index(ids_list).duplicated()
    if dup.any():
        raise InputError(f"duplicate id {ids_list[int(np.flatnonzero(dup)[0])]!r}; ids must be unique ({int(dup.sum())} duplicated)")
    text_list = [as_text(t) for t in text_list]
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
    df = results_table(res, np.asarray(ids_list, dtype=object), cats)
    n_results = res.counts
    if config.duplicates == "best" and len(df):
        cat_order = pd.Series(np.arange(len(cats)), index=cats)
        order = df.assign(_c=df["label"].map(cat_order).to_numpy(), _s=-df["score"].astype(np.float64))
        order = order.sort_values(["rank", "_s", "_c"], kind="stable")
        df = order.drop_duplicates("id", keep="first").drop(columns=["_c", "_s"])
    df = df.sort_values(["label", "rank"], kind="stable").reset_index(drop=True)
    df["rank"] = df["rank"].astype(np.int64)
    df["score"] = df["score"].astype(np.float32)
    return SearchLabels(df, {
        "method": config.method,
        "top_r": config.top_r,
        "n_items": len(ids_list),
        "n_empty_text": len(empty),
        "categories": cats,
        "results_per_category": dict(zip(cats, map(int, n_results))),
        "categories_without_results": [c for c, k in zip(cats, n_results) if k == 0],
    })


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
) -> SearchLabels:
    """Search a catalog's ``text_col`` with each category and return (and write) the search labels.

    :func:`search_labels` on a catalog: its ids and texts, the categories taken from its label
    column by default, and held-out rows kept out of the search.

    Parameters
    ----------
    catalog : str, os.PathLike or Catalog
        A catalog file or folder (loaded with :func:`simlabel.catalog.load_catalog`) or a loaded
        :class:`~simlabel.catalog.Catalog`.
    categories : sequence of str, optional
        The category names to search; default the sorted distinct non-empty values of
        ``label_col``.
    label_col : str, default "label"
        The column the categories are taken from when ``categories`` is not given.
    text_col : str, default "title"
        The column searched.
    config : SearchConfig, optional
        How to search and what to keep; default ``SearchConfig()``.
    out : str or os.PathLike, optional
        Write the table there as CSV (``id,label,rank,score,query``), atomically and under a lock
        on ``out``; readable by :func:`simlabel.labels.io.read_labels`.
    exclude_ids : iterable of str, optional
        Ids (e.g. a held-out test split) removed from the searchable pool before searching, so
        they can never be labelled and do not count in the BM25/TF-IDF statistics.
    exclude_split : str, optional
        Also exclude the rows whose ``split`` column equals it (e.g. ``"test"``).
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    SearchLabels
        As :func:`search_labels`, its ``summary`` with ``catalog``, ``text_col``, ``n_catalog``
        and ``n_excluded`` added.

    Raises
    ------
    CatalogError
        A catalog that cannot be read; no ``text_col`` column; no ``label_col`` column or no
        non-empty value in it when the categories come from it; ``exclude_split`` without a
        ``split`` column.
    InputError
        As :func:`search_labels` (bad categories, empty or duplicate ids).
    LockedError
        Another process is writing ``out``.

    Examples
    --------
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> from simlabel import Catalog, SearchConfig, build_search_labels
    >>> table = pd.DataFrame({"id": ["1", "2", "3"], "title": ["Blue Shirt", "Steel Watch", "Leather Watch"],
    ...                       "label": ["Shirt", "Watch", "Shirt"], "split": ["train", "train", "test"]})
    >>> made = build_search_labels(Catalog(table, Path(".")), config=SearchConfig(stem=False), exclude_split="test",
    ...                            progress=False)
    >>> made.labels[["id", "label"]].values.tolist(), made.summary["n_excluded"]
    ([['1', 'Shirt'], ['2', 'Watch']], 1)
    >>> build_search_labels("catalog.csv", label_col="article_type", out="search.csv")  # doctest: +SKIP
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
    made = search_labels(
        pool["id"].astype(str).to_numpy(dtype=object),
        pool[text_col].to_numpy(dtype=object),
        categories,
        config,
        progress=progress,
    )
    made.summary.update({"catalog": name, "text_col": text_col, "n_catalog": len(table), "n_excluded": n_excluded})
    df = made.labels
    if out is not None:
        buf = io.StringIO()
        df[["id", "label", "rank", "score", "query"]].to_csv(buf, index=False)
        with exclusive(out):
            atomic_write_text(out, buf.getvalue())
    return made


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
    labels: "SearchLabels | pd.DataFrame",
    truth: Mapping[str, str] | pd.Series,
    *,
    categories: Sequence[str] | None = None,
    rank_buckets: Sequence[int] = DEFAULT_RANK_BUCKETS,
) -> dict:
    """How wrong the search labels are, against the true labels.

    ``labels``: what :func:`search_labels` made, or a table of its columns (``id, label`` and
    ``rank``); ``truth``: the true label of every catalog item (id -> label), whose size is the
    catalog size. ``categories`` (default: the searched categories of a :class:`SearchLabels`, else
    the distinct true labels and search labels) are those that count as searched.

    Returns a dict with ``n_rows`` (labelled rows), ``n_labelled`` (distinct ids),
    ``n_catalog``, ``coverage`` (share of the catalog labelled), ``n_unknown`` (labelled
    ids without a true label, left out of the rates), ``n_wrong``, ``noise_rate`` (wrong
    rows / rows with a truth), ``by_rank`` (one dict per rank bucket: ``ranks, n,
    n_wrong, noise_rate``; NaN where empty), ``by_category`` (``label, n, n_wrong,
    noise_rate, top_wrong`` = the most common true label among its wrong rows, sorted by
    noise rate descending, then size), ``n_categories`` and ``categories_without_results``
    (count) with ``empty_categories`` (names).
    """
    searched = labels if isinstance(labels, SearchLabels) else None
    labels = labels.labels if searched is not None else labels
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

    if categories is None and searched is not None:
        categories = searched.summary.get("categories")
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
