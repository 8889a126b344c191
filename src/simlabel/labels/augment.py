"""Semantic-similarity label augmentation (paper 000, section 3).

Seeds grow through the k-nearest-neighbour graph of pretrained embeddings.
With ``n_k(x)`` the k nearest neighbours of ``x`` (other than ``x``) in the
universe of labeled and unlabeled points, and for step ``i >= 1``::

    P'_i = U_{x in P_(i-1)} n_k(x)  \\  U_{j<i} P_j  \\  U_{j<i} N_j
    N'_i = U_{x in N_(i-1)} n_k(x)  \\  U_{j<i} P_j  \\  U_{j<i} N_j
    P_i  = P'_i \\ N'_i \\ H
    N_i  = N'_i \\ P'_i \\ H

(the paper's equation in section 3). The augmented class is the union of all
steps. With more than two classes every class grows by the same recurrence
and a point reached by two or more classes in one step is left unlabeled in
that step (it may be reached again later). Holdout points ``H`` stay in the
universe (they can be neighbours and they can cause a conflict) but are never
labeled.

Stopping. The paper prints "stop as soon as |P_(i-1)| < |P_i| or
|N_(i-1)| < |N_i|", but its reason ("the search henceforth will return
increasingly more points that have appeared before") and its Table 1
(augmented sets 15-42x the seeds with k = 10, which one step cannot reach)
fit the opposite rule. ``stop="shrink"`` (default) stops as soon as some
class's frontier shrinks; ``stop="grow"`` is the rule as printed. In both the
step at which the stop is detected is kept, and the iteration also ends when
no new point is labeled or after ``max_steps``.

Only the frontier (the points labeled at the previous step) is queried, so the
cost follows the augmented set, not the universe.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from simlabel.errors import InputError
from simlabel.files import exclusive, write_set
from simlabel.index import NeighborIndex, Neighbors
from simlabel.labels.io import labels_csv, read_holdout, read_labels
from simlabel.store import Embeddings

if TYPE_CHECKING:
    from simlabel.graph import KnnGraph

StopRule = Literal["shrink", "grow"]
#: ``knn(positions, k) -> Neighbors(neighbour positions (m, k) int64, similarities (m, k) float32)``,
#: self excluded, ``-1`` where fewer than k were found (as ``NeighborIndex.knn_positions``).
KnnFn = Callable[[np.ndarray, int], Neighbors]

UNLABELED = -1
#: the companions of an augmentation's label file OUT: OUT.summary.json (the set's manifest) and OUT.holdout.csv
SUMMARY_SUFFIX = ".summary.json"
HOLDOUT_SUFFIX = ".holdout.csv"


@dataclass
class AugmentResult:
    """Labels made by :func:`augment_positions`, per position of the universe.

    ``label`` is the class code (``-1`` unlabeled), ``step`` the step that labeled
    the point (0 for seeds, ``-1`` unlabeled), ``via`` the position of the point of
    the previous step whose neighbour list reached it (its most similar one;
    ``-1`` for seeds), ``via_similarity`` that cosine.
    """

    label: np.ndarray
    step: np.ndarray
    via: np.ndarray
    via_similarity: np.ndarray
    sizes: np.ndarray  # (n_steps + 1, n_classes): |P_i| per step and class
    conflicts: np.ndarray  # (n_steps + 1,): points reached by 2+ classes per step
    stop_reason: str
    classes: list = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return self.sizes.shape[0] - 1

    def labeled_positions(self) -> np.ndarray:
        return np.flatnonzero(self.label >= 0)

    def size_table(self) -> pd.DataFrame:
        """Sizes per step and class, plus seeds / augmented / total rows (the shape of Table 1)."""
        names = [str(c) for c in self.classes] or [str(i) for i in range(self.sizes.shape[1])]
        df = pd.DataFrame(self.sizes, columns=names, index=[f"step {i}" for i in range(self.sizes.shape[0])])
        df["conflicts"] = self.conflicts
        seeds = self.sizes[0]
        aug = self.sizes[1:].sum(axis=0)
        extra = pd.DataFrame(
            [list(seeds) + [np.nan], list(aug) + [self.conflicts[1:].sum()], list(seeds + aug) + [np.nan]],
            columns=df.columns,
            index=["seeds", "augmented", "total"],
        )
        return pd.concat([df, extra])


def augment_positions(
    knn: KnnFn,
    n: int,
    seed_positions: Sequence[np.ndarray],
    *,
    k: int = 10,
    holdout: np.ndarray | None = None,
    stop: StopRule = "shrink",
    max_steps: int | None = None,
    classes: Sequence | None = None,
) -> AugmentResult:
    """Grow seed sets through k-NN (the paper's recurrence) over a universe of ``n`` points.

    Parameters
    ----------
    knn
        neighbour function over positions (see :data:`KnnFn`), e.g.
        ``NeighborIndex.knn_positions``; called only on each step's frontier.
    n
        size of the universe.
    seed_positions
        one array of positions per class (``P_0``, ``N_0``, ...); disjoint.
    holdout
        positions (or a boolean mask of length ``n``) never to label.
    stop
        ``"shrink"`` (default) or ``"grow"``; see the module docstring.
    max_steps
        upper bound on the number of steps (``None``: until a stop).
    """
    if stop not in ("shrink", "grow"):
        raise InputError(f"stop must be 'shrink' or 'grow'; got {stop!r}")
    if k < 1:
        raise InputError(f"k must be >= 1; got {k}")
    n_classes = len(seed_positions)
    if n_classes < 1:
        raise InputError("at least one class of seeds is needed")
    label = np.full(n, UNLABELED, dtype=np.int32)
    step = np.full(n, UNLABELED, dtype=np.int32)
    via = np.full(n, -1, dtype=np.int64)
    via_sim = np.full(n, np.nan, dtype=np.float32)
    is_holdout = np.zeros(n, dtype=bool)
    if holdout is not None:
        holdout = np.asarray(holdout)
        if holdout.dtype == bool:
            if holdout.shape != (n,):
                raise InputError(f"holdout mask must have length {n}")
            is_holdout = holdout.copy()
        else:
            is_holdout[holdout.astype(np.int64)] = True
    frontiers: list[np.ndarray] = []
    for c, pos in enumerate(seed_positions):
        pos = np.unique(np.asarray(pos, dtype=np.int64))
        if len(pos) and (pos.min() < 0 or pos.max() >= n):
            raise InputError(f"seed positions of class {c} out of range [0, {n})")
        clash = pos[label[pos] != UNLABELED]
        if len(clash):
            raise InputError(f"seed position {int(clash[0])} is a seed of two classes")
        if is_holdout[pos].any():
            raise InputError(f"seed position {int(pos[is_holdout[pos]][0])} is also in the holdout")
        label[pos] = c
        step[pos] = 0
        frontiers.append(pos)
    sizes = [[len(f) for f in frontiers]]
    conflicts = [0]
    stop_reason = "max_steps"
    i = 0
    while max_steps is None or i < max_steps:
        i += 1
        reached_dst: list[np.ndarray] = []
        reached_via: list[np.ndarray] = []
        reached_sim: list[np.ndarray] = []
        for c in range(n_classes):
            f = frontiers[c]
            if len(f) == 0:
                reached_dst.append(np.empty(0, np.int64))
                reached_via.append(np.empty(0, np.int64))
                reached_sim.append(np.empty(0, np.float32))
                continue
            nbr, sim = knn(f, k)
            nbr = np.asarray(nbr, dtype=np.int64)
            src = np.repeat(f, nbr.shape[1])
            dst = nbr.ravel()
            s = np.asarray(sim, dtype=np.float32).ravel()
            # P'_i: reached, minus every earlier P_j and N_j (holdout not yet removed)
            keep = dst >= 0
            keep[keep] &= label[dst[keep]] == UNLABELED
            src, dst, s = src[keep], dst[keep], s[keep]
            # one row per reached point: the most similar frontier point that reached it
            order = np.lexsort((-s, dst))
            dst, src, s = dst[order], src[order], s[order]
            first = np.ones(len(dst), dtype=bool)
            first[1:] = dst[1:] != dst[:-1]
            reached_dst.append(dst[first])
            reached_via.append(src[first])
            reached_sim.append(s[first])
        all_dst = np.concatenate(reached_dst)
        uniq, counts = np.unique(all_dst, return_counts=True)
        contested = uniq[counts > 1]
        new_frontiers = []
        for c in range(n_classes):
            d = reached_dst[c]
            ok = ~np.isin(d, contested, assume_unique=False) & ~is_holdout[d]
            d, v, s = d[ok], reached_via[c][ok], reached_sim[c][ok]
            label[d] = c
            step[d] = i
            via[d] = v
            via_sim[d] = s
            new_frontiers.append(d)
        conflicts.append(int(len(contested)))
        new_sizes = [len(f) for f in new_frontiers]
        sizes.append(new_sizes)
        prev = sizes[-2]
        frontiers = new_frontiers
        if sum(new_sizes) == 0:
            stop_reason = "exhausted"
            break
        if stop == "shrink" and any(b < a for a, b in zip(prev, new_sizes)):
            stop_reason = "shrink"
            break
        if stop == "grow" and any(a < b for a, b in zip(prev, new_sizes)):
            stop_reason = "grow"
            break
    return AugmentResult(
        label=label,
        step=step,
        via=via,
        via_similarity=via_sim,
        sizes=np.asarray(sizes, dtype=np.int64),
        conflicts=np.asarray(conflicts, dtype=np.int64),
        stop_reason=stop_reason,
        classes=list(classes) if classes is not None else list(range(n_classes)),
    )


# -- files in, files out ------------------------------------------------------------------------


def root_seeds(via: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Follow ``via`` chains back to step 0: the seed each labeled point descends from (-1 if none)."""
    root = np.where(step == 0, np.arange(len(step)), via).astype(np.int64)
    for _ in range(int(step.max(initial=0))):
        nxt = np.where((root >= 0) & (step[np.maximum(root, 0)] > 0), via[np.maximum(root, 0)], root)
        if np.array_equal(nxt, root):
            break
        root = nxt
    return np.where(step >= 0, root, -1)


def split_holdout(labels: pd.DataFrame, frac: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified split of a label table into (seeds, holdout), ``frac`` of each class held out."""
    if not 0 <= frac < 1:
        raise InputError(f"holdout fraction must be in [0, 1); got {frac}")
    rng = np.random.default_rng(seed)
    hold = np.zeros(len(labels), dtype=bool)
    for _, idx in labels.groupby("label").indices.items():
        idx = rng.permutation(idx)
        hold[idx[: int(round(frac * len(idx)))]] = True
    return labels[~hold].reset_index(drop=True), labels[hold].reset_index(drop=True)


@dataclass
class Augmented:
    """What :func:`augment` made: the grown labels, the holdout, the recurrence and its summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        ``id, label, step, source, via, via_similarity``: the seeds (``step`` 0, ``source``
        ``"seed"``) first, then the labels they grew (``source`` ``"augmented"``), by step. ``via``
        is the id of the point of the previous step whose neighbour list reached the point (its
        most similar one; empty for seeds), ``via_similarity`` that cosine (NaN for seeds).
    holdout : pandas.DataFrame
        The held-out labels (given, drawn with ``holdout_frac``, or empty): never labelled.
    result : AugmentResult
        The recurrence's arrays per position of the universe (``label``, ``step``, ``via``,
        ``via_similarity``), the sizes ``|P_i|`` per step and class, the conflicts per step and
        the stop reason; ``result.size_table()`` is the shape of paper 000's Table 1.
    summary : dict
        ``k``, the stop rule (``stop``) and why it stopped (``stop_reason``: ``shrink``, ``grow``,
        ``exhausted`` or ``max_steps``), ``n_steps``, the ``universe`` and ``holdout`` sizes, the
        ``classes``, the size table (``sizes``), the embeddings and their fingerprint, the
        ``neighbours`` used and the ``holdout_file``: what ``<out>.summary.json`` holds.

    Attributes
    ----------
    augmented : pandas.DataFrame
        The rows of ``labels`` made by the augmentation (not the seeds).

    Notes
    -----
    Unpacking it as the 3-tuple ``(labels, result, holdout)`` that :func:`augment` returned
    before still works, with a :class:`DeprecationWarning`.

    Examples
    --------
    Built by hand here (``result`` left as ``None``); :func:`augment` makes it.

    >>> import pandas as pd
    >>> from simlabel import Augmented
    >>> labels = pd.DataFrame({"id": ["a", "b", "c"], "label": ["Shirts"] * 3, "step": [0, 1, 1],
    ...                        "source": ["seed", "augmented", "augmented"], "via": ["", "a", "a"],
    ...                        "via_similarity": [float("nan"), 0.99, 0.97]})
    >>> made = Augmented(labels, labels.iloc[:0], None, {"k": 10})
    >>> made.augmented["id"].tolist()
    ['b', 'c']
    """

    labels: pd.DataFrame
    holdout: pd.DataFrame
    result: AugmentResult
    summary: dict

    @property
    def augmented(self) -> pd.DataFrame:
        """The labels made (not the seeds)."""
        return self.labels[self.labels["source"] == "augmented"]

    def __iter__(self):
        # scripts written for the 3-tuple this function returned before (README, issue 23) keep working
        warnings.warn("augment() returns an Augmented (labels, holdout, result, summary); unpacking it as "
                      "(labels, result, holdout) is deprecated", DeprecationWarning, stacklevel=2)
        return iter((self.labels, self.result, self.holdout))


def augment(
    emb: str | os.PathLike | Embeddings | None,
    seeds: str | os.PathLike | pd.DataFrame,
    *,
    k: int = 10,
    holdout: str | os.PathLike | pd.DataFrame | None = None,
    holdout_frac: float | None = None,
    seed: int = 0,
    stop: StopRule = "shrink",
    max_steps: int | None = None,
    index: str | os.PathLike | NeighborIndex | None = None,
    index_kind: str = "auto",
    out: str | os.PathLike | None = None,
    label_col: str = "label",
    graph: "str | os.PathLike | KnnGraph | None" = None,
) -> Augmented:
    r"""Grow seed labels through the k-NN graph of an embedding folder (paper 000, section 3).

    Every class grows by the paper's recurrence over the universe of every embedded point: with
    ``n_k(x)`` the ``k`` nearest neighbours of ``x`` (other than ``x``), at step ``i >= 1``::

        P'_i = U_{x in P_(i-1)} n_k(x)  \  U_{j<i} P_j  \  U_{j<i} N_j     (and N'_i alike)
        P_i  = P'_i \ N'_i \ H                                             (and N_i alike)

    so a point reached by two or more classes in one step is left unlabelled in that step (it
    may be reached again later), and holdout points ``H`` stay in the universe (they can be
    neighbours and cause a conflict) but are never labelled. With more than two classes every
    class grows by the same rule. Only each step's frontier (the points labelled at the previous
    step) is queried, so the cost follows the augmented set, not the universe.

    Parameters
    ----------
    emb : str, os.PathLike, Embeddings or None
        The universe: an embedding folder or loaded :class:`~simlabel.store.Embeddings`. With a ``graph``
        its vectors are never read (:func:`simlabel.graph.graph_rows`: a folder is checked by its footers),
        and it may be ``None``.
    seeds : str, os.PathLike or pandas.DataFrame
        The seed labels: a CSV ``id,label``, a catalog (file or folder) whose ``label_col`` holds
        the labels (both read by :func:`read_labels`, every id must have an embedding), or a
        table with ``id`` and ``label`` used as is.
    k : int, default 10
        Neighbours per frontier point (the paper's ``k``).
    holdout : str, os.PathLike or pandas.DataFrame, optional
        Held-out ids: a file listing them (an ``id`` column; a ``label`` column is kept when
        there is one) or a table. They are removed from the seeds and never labelled.
    holdout_frac : float, optional
        Instead of ``holdout``: draw this share (in ``[0, 1)``) of each class of the seeds as the
        holdout (stratified, rounded per class).
    seed : int, default 0
        Seed of the ``holdout_frac`` draw.
    stop : {"shrink", "grow"}, default "shrink"
        ``"shrink"`` stops as soon as some class's frontier shrinks (what the paper's reason and
        its Table 1 fit); ``"grow"`` as soon as one grows (the rule as printed,
        ``|P_(i-1)| < |P_i|``). In both the step at which the stop is detected is kept; the
        iteration also ends when a step labels no new point.
    max_steps : int, optional
        At most this many steps (``None``: until a stop).
    index : str, os.PathLike or NeighborIndex, optional
        A k-NN index over the same ids (a saved file or a built
        :class:`~simlabel.index.NeighborIndex`) to reuse instead of building one.
    index_kind : str, default "auto"
        With neither ``graph`` nor ``index``: the kind of index built (``flat``, ``ivf``,
        ``hnsw`` or ``auto``, :func:`~simlabel.index.auto_kind`).
    out : str or os.PathLike, optional
        Write the labels there (CSV) as one output set (:func:`simlabel.files.write_set`), under
        a lock on ``out``: ``<out>.holdout.csv`` (a drawn holdout; an older one is removed when
        this run draws none) and ``<out>.summary.json``, the manifest with the summary.
    label_col : str, default "label"
        The label column when ``seeds`` is a file.
    graph : str, os.PathLike or KnnGraph, optional
        A k-NN graph of ``emb`` (a folder made by ``simlabel graph`` or a
        :class:`~simlabel.graph.KnnGraph`) whose neighbours are used with no query at all: the
        same graph gives the same labels as the queries would. ``graph``, ``index`` and
        ``index_kind`` follow :func:`simlabel.graph.neighbour_source`'s one rule.

    Returns
    -------
    Augmented
        ``labels``: ``id, label, step, source, via, via_similarity`` (seeds first, step 0,
        ``source`` ``seed`` or ``augmented``); ``holdout``: the held-out labels (given, drawn or
        empty); ``result``: the recurrence; ``summary``: what ``<out>.summary.json`` records.

    Raises
    ------
    InputError
        ``stop`` not ``shrink`` or ``grow``; ``k < 1``; no seeds; an id seeded with two classes;
        both ``holdout`` and ``holdout_frac``, or ``holdout_frac`` outside ``[0, 1)``; both
        ``graph`` and ``index``, or a graph or index of other embeddings.
    LabelFileError
        A seed or holdout file that cannot be read, or with ids that have no embedding.
    MissingIdsError
        Ids of a seed or holdout table that have no embedding.
    StoreError
        ``emb`` is not a complete embedding folder.
    LockedError
        Another process is writing ``out``.

    See Also
    --------
    propagate : The label-propagation baseline of paper 000.

    Examples
    --------
    >>> from simlabel import augment
    >>> made = augment("emb/", "seeds.csv", k=10, holdout_frac=0.2, out="augmented.csv")  # doctest: +SKIP
    >>> made.result.size_table()  # doctest: +SKIP
    >>> made.augmented.head()  # doctest: +SKIP

    The recurrence itself on a toy neighbour table (two clusters of three points, one seed each):

    >>> import numpy as np
    >>> from simlabel.index import Neighbors
    >>> from simlabel.labels.augment import augment_positions
    >>> table = np.array([[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [4, 3]])
    >>> knn = lambda pos, k: Neighbors(table[pos, :k], np.ones((len(pos), k), np.float32))
    >>> res = augment_positions(knn, 6, [np.array([0]), np.array([3])], k=2)
    >>> res.label.tolist(), res.step.tolist(), res.stop_reason
    ([0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 1, 1], 'exhausted')
    """
    if out is not None:
        with exclusive(out):
            return _augment(emb, seeds, k=k, holdout=holdout, holdout_frac=holdout_frac, seed=seed, stop=stop,
                            max_steps=max_steps, index=index, index_kind=index_kind, out=Path(out), label_col=label_col,
                            graph=graph)
    return _augment(emb, seeds, k=k, holdout=holdout, holdout_frac=holdout_frac, seed=seed, stop=stop,
                    max_steps=max_steps, index=index, index_kind=index_kind, out=None, label_col=label_col, graph=graph)


def _augment(emb, seeds, *, k, holdout, holdout_frac, seed, stop, max_steps, index, index_kind, out: Path | None,
             label_col: str = "label", graph=None):
    from simlabel.graph import graph_rows, neighbour_source

    # with a graph, its rows: the store's vectors are never read (the graph holds every neighbour asked)
    embeddings, graph = graph_rows(emb, graph)
    ids = embeddings.ids
    seed_df = seeds if isinstance(seeds, pd.DataFrame) else read_labels(seeds, known_ids=ids, label_col=label_col)
    if holdout is not None and holdout_frac is not None:
        raise InputError("give either holdout (a file) or holdout_frac, not both")
    if holdout_frac:
        seed_df, hold_df = split_holdout(seed_df, holdout_frac, seed)
    elif holdout is not None:
        hold_df = holdout if isinstance(holdout, pd.DataFrame) else read_holdout(holdout, known_ids=ids)
        seed_df = seed_df[~seed_df["id"].isin(hold_df["id"])].reset_index(drop=True)
    else:
        hold_df = seed_df.iloc[0:0]
    classes = sorted(seed_df["label"].unique())
    knn = neighbour_source(embeddings, k, graph=graph, index=index, kind=index_kind)
    pos_of = embeddings.positions
    seed_pos = [pos_of(seed_df.loc[seed_df["label"] == c, "id"].to_numpy()) for c in classes]
    hold_pos = pos_of(hold_df["id"].to_numpy()) if len(hold_df) else None
    result = augment_positions(
        knn,
        len(ids), seed_pos, k=k, holdout=hold_pos, stop=stop, max_steps=max_steps, classes=classes,
    )
    labeled = result.labeled_positions()
    order = np.lexsort((labeled, result.step[labeled]))
    labeled = labeled[order]
    via = result.via[labeled]
    table = pd.DataFrame(
        {
            "id": ids[labeled],
            "label": np.asarray(classes, dtype=object)[result.label[labeled]],
            "step": result.step[labeled],
            "source": np.where(result.step[labeled] == 0, "seed", "augmented"),
            "via": np.where(via >= 0, ids[np.maximum(via, 0)], ""),
            "via_similarity": np.round(result.via_similarity[labeled], 6),
        }
    )
    summary = {
        "k": k,
        "stop": stop,
        "stop_reason": result.stop_reason,
        "n_steps": result.n_steps,
        "universe": int(len(ids)),
        "holdout": int(len(hold_df)),
        "classes": [str(c) for c in classes],
        "sizes": json.loads(result.size_table().to_json(orient="index")),
        "embeddings": embeddings.source,
        "embeddings_fingerprint": embeddings.fingerprint,
        "neighbours": knn.summary,
        "holdout_file": (out.name + HOLDOUT_SUFFIX if holdout_frac and out is not None else
                         str(Path(holdout).resolve()) if isinstance(holdout, (str, os.PathLike)) else None),
    }
    if out is not None:
        hold_text = labels_csv(hold_df)
        write_set(out.with_name(out.name + SUMMARY_SUFFIX), {
            out: lambda tmp: tmp.write_text(labels_csv(table), encoding="utf-8"),
            out.with_name(out.name + HOLDOUT_SUFFIX): (lambda tmp: tmp.write_text(hold_text, encoding="utf-8")) if holdout_frac else None,
        }, summary)
    return Augmented(table, hold_df, result, summary)

