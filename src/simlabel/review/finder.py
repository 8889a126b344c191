"""Finding more items to label from the review page: "more like this" and a title search.

A labelling queue (``simlabel select``'s output) names the items simlabel chose, but a reviewer who has
just labelled a pair of sandals wants every other sandal too. :class:`Finder` answers both questions
over the whole catalog:

* :meth:`Finder.similar`: an item's nearest neighbours by cosine similarity of its embedding, through the
  one neighbour resolver (:func:`simlabel.graph.neighbour_source`: the graph if given, else an index,
  else one built over the embeddings, once, on the first question);
* :meth:`Finder.search`: the items whose title holds every word of a query at the start of one of its words,
  case-insensitively ("men" finds "Men Shirt", not "Women Shirt"; "shirt" finds "Shirts" and "T-Shirt"). The
  query's words are escaped: no pattern from the page reaches the regular expression engine.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from simlabel.errors import InputError


class Finder:
    """The catalog's items by similarity to one item and by title words.

    Parameters
    ----------
    titles : dict of str to str
        ``id -> title`` of the catalog's items (empty: no search).
    emb : str, os.PathLike or Embeddings, optional
        The catalog's embeddings (``None``: no "more like this").
    graph, index : optional
        A k-NN graph or index of ``emb``, as :func:`~simlabel.graph.neighbour_source` takes them.
    k : int, default 24
        Neighbours per "more like this" (at most the graph's ``k`` when a graph is given).
    """

    def __init__(self, titles: dict[str, str], emb=None, *, graph: str | os.PathLike | None = None,
                 index: str | os.PathLike | None = None, k: int = 24) -> None:
        self.titles = pd.Series(titles, dtype=object).astype(str).str.lower() if titles else pd.Series(dtype=object)
        self.emb = None
        self._graph, self._index, self._source = graph, index, None
        if emb is not None:
            from simlabel.store import as_embeddings

            self.emb = as_embeddings(emb)
        self.k = int(k)

    @property
    def can_search(self) -> bool:
        return len(self.titles) > 0

    @property
    def can_find_similar(self) -> bool:
        return self.emb is not None

    def similar(self, ident: str) -> list[tuple[str, float]]:
        """The nearest neighbours of ``ident`` (itself excluded), best first, as ``(id, similarity)``.

        Raises
        ------
        InputError
            No embeddings were given, or ``ident`` has none.
        """
        if self.emb is None:
            raise InputError("no embeddings were given to the review session (`emb`): no similar items to show")
        if self._source is None:
            from simlabel.graph import as_graph, neighbour_source

            k = min(self.k, len(self.emb.ids) - 1)
            if self._graph is not None:
                self._graph = as_graph(self._graph)
                k = min(k, self._graph.k)  # a graph answers as many neighbours as it holds
            self._source = neighbour_source(self.emb, k, graph=self._graph, index=self._index)
        if not self.emb.has([ident])[0]:
            raise InputError(f"{ident!r} has no embedding in {self.emb.source}")
        nb = self._source(self.emb.positions([ident]))
        keep = nb.neighbors[0] >= 0
        ids = self.emb.ids[nb.neighbors[0][keep]].astype(str)
        return [(i, round(float(s), 4)) for i, s in zip(ids, nb.similarities[0][keep]) if i != ident]

    def search(self, query: str, limit: int = 240) -> tuple[list[str], int]:
        """The ids whose title holds every word of ``query`` at the start of a word (case-insensitive), in
        catalog order, at most ``limit`` of them, and how many match in all."""
        words = str(query).lower().split()
        if not words:
            raise InputError("the search needs at least one word")
        if not self.can_search:
            raise InputError("the catalog has no title column: nothing to search")
        hit = np.ones(len(self.titles), dtype=bool)
        for w in words:
            hit &= self.titles.str.contains(r"(?<!\w)" + re.escape(w), regex=True).to_numpy(dtype=bool)
        found = self.titles.index[hit]
        return [str(i) for i in found[:limit]], int(hit.sum())
