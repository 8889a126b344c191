"""Label files made from a catalog's own columns: seeds, holdouts, clean sets and noisy copies
(``simlabel labels sample``).

Every example of the README starts from files this module (or ``search``, ``flip`` with
``export_basis``) makes, so nobody has to hand-write a label file (:class:`SampleConfig`'s fields):

* **seeds** of a few labels per class: ``frac=0.1`` (or ``n=500``, ``per_class=20``) of the
  labelled rows, stratified by class;
* a **holdout** drawn *first* (``holdout_frac=0.2``) and never sampled, for an honest test;
* a **clean set** of multi-labels (``attributes=("gender", "usage")`` or ``labels_col``) for
  ``flip``'s ``clean``;
* **noisy copies** (``noise=0.3``): single labels replaced by another class drawn uniformly
  (symmetric noise), or, for multi-labels, each positive dropped (the way shops lose them).

The cores are arrays in, arrays out: :func:`sample_mask` and :func:`flip_labels`;
:func:`sample_labels` is the file job.

Stratified quotas: with ``frac`` f, a class of ``n_c`` labelled rows gives ``round(f n_c)`` rows,
at least one when ``f > 0`` (a seed set without a class cannot grow it); with ``n`` the quotas
are ``n n_c / N`` rounded by largest remainder (they add up to ``n``); ``per_class`` k gives
``min(k, n_c)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog, clean_label_values, load_catalog
from simlabel.checks import in_range, positive_int
from simlabel.errors import InputError
from simlabel.files import atomic_write_text
from simlabel.labels.io import labels_csv, read_id_list
from simlabel.labels.multilabel import SEPARATOR, from_attributes, from_labels_column

__all__ = ["SampleConfig", "SampleResult", "flip_labels", "sample_labels", "sample_mask"]


def _largest_remainder(exact: np.ndarray, total: int) -> np.ndarray:
    quota = np.floor(exact).astype(np.int64)
    short = int(total - quota.sum())
    if short > 0:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    return quota


def sample_mask(
    labels: np.ndarray,
    *,
    frac: float | None = None,
    n: int | None = None,
    per_class: int | None = None,
    stratify: bool = True,
    eligible: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Boolean mask of the rows drawn: exactly one of ``frac``, ``n``, ``per_class``.

    Parameters
    ----------
    labels
        ``(n_rows,)`` class of each row (any hashable values); rows with ``""`` or None are
        never drawn.
    stratify
        Draw each class's quota (module docstring) at random from its rows; without it, draw
        ``frac`` / ``n`` of the eligible rows at random regardless of class (``per_class`` is
        stratified by definition).
    eligible
        Rows that may be drawn (e.g. not in a holdout); default all labelled rows.
    """
    given = [v is not None for v in (frac, n, per_class)]
    if sum(given) != 1:
        raise InputError("give exactly one of frac, n and per_class")
    labels = np.asarray(labels, dtype=object)
    ok = np.array([v is not None and v == v and str(v) != "" for v in labels], dtype=bool) if len(labels) else np.zeros(0, bool)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    rows = np.flatnonzero(ok)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    if frac is not None:
        in_range(frac, "frac", 0, 1)
    if n is not None:
        positive_int(n, "n", minimum=0)
        if n > len(rows):
            raise InputError(f"n={n} is more than the {len(rows)} rows that can be drawn")
    if per_class is not None:
        positive_int(per_class, "per_class")
    if not len(rows):
        return mask
    if not stratify and per_class is None:
        k = int(round(frac * len(rows))) if frac is not None else int(n)
        mask[rng.choice(rows, size=k, replace=False)] = True
        return mask
    classes, code, counts = np.unique(labels[rows].astype(str), return_inverse=True, return_counts=True)
    if per_class is not None:
        quota = np.minimum(counts, per_class)
    elif frac is not None:
        quota = np.where(frac > 0, np.maximum(np.round(frac * counts), 1), 0).astype(np.int64)
        quota = np.minimum(quota, counts)
    else:
        quota = _largest_remainder(counts * (n / len(rows)), int(n))
    # rank each row inside its class under a random order; the first `quota` ranks are drawn
    order = np.lexsort((rng.random(len(rows)), code))
    rank = np.empty(len(rows), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(rows)) - np.repeat(starts, counts)
    mask[rows[rank < quota[code]]] = True
    return mask


def flip_labels(labels: np.ndarray, rate: float, *, classes: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric label noise: each label replaced, with probability ``rate``, by one of the
    *other* classes drawn uniformly.

    Returns ``(noisy, flipped)``: the new labels and a boolean mask of the rows changed. With
    ``P(flip) = rate`` and a uniform choice among the ``C - 1`` others, ``P(noisy = j | y = i)
    = rate / (C - 1)`` for ``j != i`` (the noise transition matrix of "symmetric" noise).
    """
    in_range(rate, "noise", 0, 1)
    labels = np.asarray(labels).astype(str)
    cls = np.unique(labels) if classes is None else np.unique(np.asarray(classes).astype(str))
    if len(cls) < 2 and rate > 0:
        raise InputError("label noise needs at least two classes")
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(labels)) < rate
    code = np.searchsorted(cls, labels)
    # an offset in 1..C-1 lands on every other class with equal probability
    offset = rng.integers(1, max(len(cls), 2), size=len(labels))
    noisy = labels.copy()
    noisy[flipped] = cls[(code[flipped] + offset[flipped]) % len(cls)]
    return noisy, flipped


@dataclass
class SampleConfig:
    """What :func:`sample_labels` (``simlabel labels sample``) draws from a catalog.

    The labels are single (``label_col``) or multi-labels (``attributes`` or ``labels_col``).
    At most one of ``frac``, ``n`` and ``per_class`` sizes the sample, drawn by class
    (stratified quotas): with ``frac`` f, a class of ``n_c`` labelled rows gives
    ``round(f n_c)`` rows, at least one when ``f > 0`` (a seed set without a class cannot grow
    it); with ``n`` the quotas are ``n n_c / N`` rounded by largest remainder (they add up to
    ``n``); ``per_class`` k gives ``min(k, n_c)``; none of them: every labelled row. Multi-labels
    are stratified by each row's rarest label, so rare labels reach the sample.

    Parameters
    ----------
    label_col : str or None, default "label"
        The catalog column of single labels (``None``: ``label``); unused for multi-labels.
    labels_col : str, optional
        Multi-labels from this column of ``|``-separated labels (e.g. ``gender=Men|usage=Casual``).
    attributes : tuple of str, default ()
        Multi-labels from these columns: one binary label ``attr=value`` per value of each column
        (a clean set for ``simlabel flip``). Not with ``labels_col``.
    frac : float, optional
        Share, in ``[0, 1]``, of each class's labelled rows to draw.
    n : int, optional
        Number of rows to draw (``>= 0``).
    per_class : int, optional
        Rows to draw per class (``>= 1``; every row of a smaller class).
    stratify : bool, default True
        Draw each class's quota at random from its rows; ``False``: draw ``frac`` / ``n`` of the
        eligible rows at random regardless of class (``per_class`` is stratified by definition).
    holdout_frac : float, optional
        Share, in ``[0, 1)``, of each class drawn *first* as a holdout that is never sampled, for
        an honest test (a class of one row stays out of the holdout).
    noise : float, default 0.0
        Rate, in ``[0, 1]``, of label noise put into the sample (the true labels go to the truth
        table): a single label is replaced with probability ``noise`` by one of the ``C - 1``
        other classes drawn uniformly (symmetric noise, ``P(noisy = j | y = i) = noise / (C - 1)``
        for ``j != i``); for multi-labels each positive is dropped with probability ``noise``
        (the way shops lose them).
    keep_columns : bool, default False
        Write every catalog column of the sampled rows (relative image paths made absolute),
        the label column (or, with ``attributes``, the attribute columns) carrying the noisy
        labels, instead of ``id,label`` / ``id,labels`` alone.
    seed : int, default 0
        Seed of the draws: the holdout uses ``seed``, the sample ``seed + 1``, the noise
        ``seed + 2``.

    Attributes
    ----------
    multilabel : bool
        Whether the labels are multi-labels (``attributes`` or ``labels_col`` given).

    Raises
    ------
    InputError
        More than one of ``frac``, ``n`` and ``per_class``; both ``attributes`` and
        ``labels_col``; a value out of its range (a :class:`~simlabel.errors.ConfigError`).

    Examples
    --------
    >>> from simlabel import SampleConfig
    >>> cfg = SampleConfig(per_class=20, holdout_frac=0.2)
    >>> cfg.per_class, cfg.multilabel
    (20, False)
    >>> SampleConfig(attributes=["gender", "usage"]).multilabel
    True
    """

    label_col: str | None = "label"
    labels_col: str | None = None
    attributes: tuple[str, ...] = ()
    frac: float | None = None
    n: int | None = None
    per_class: int | None = None
    stratify: bool = True
    holdout_frac: float | None = None
    noise: float = 0.0
    keep_columns: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        if sum(v is not None for v in (self.frac, self.n, self.per_class)) > 1:
            raise InputError("give at most one of `frac`, `n` and `per_class`")
        if self.frac is not None:
            in_range(self.frac, "frac", 0, 1)
        positive_int(self.n, "n", minimum=0, allow_none=True)
        positive_int(self.per_class, "per_class", allow_none=True)
        if self.holdout_frac is not None:
            in_range(self.holdout_frac, "holdout_frac", 0, 1, hi_open=True)
        in_range(self.noise, "noise", 0, 1)
        if self.attributes and self.labels_col:
            raise InputError("give multi-labels with either `attributes` or `labels_col`, not both")

    @property
    def multilabel(self) -> bool:
        return bool(self.attributes or self.labels_col)


@dataclass
class SampleResult:
    """The tables written (``sample``, ``holdout``, ``truth``) and what was drawn."""

    sample: pd.DataFrame
    holdout: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)
    n_labelled: int = 0
    n_noisy: int = 0


def _absolute_images(table: pd.DataFrame, cat: Catalog) -> pd.DataFrame:
    """A copy saved elsewhere keeps working: relative image paths made absolute."""
    if "image" not in table.columns:
        return table
    out = table.copy()
    paths = out["image"].astype(str)
    rel = (paths != "") & ~paths.map(os.path.isabs)
    out.loc[rel, "image"] = [str((cat.root / p).resolve()) for p in paths[rel]]
    return out


def sample_labels(
    catalog: str | os.PathLike | Catalog,
    config: SampleConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    holdout_out: str | os.PathLike | None = None,
    truth_out: str | os.PathLike | None = None,
    exclude: str | os.PathLike | list[str] | None = None,
) -> SampleResult:
    """Draw a label file (and a holdout) from a catalog's own label columns.

    Seeds of a few labels per class, a holdout drawn first and never sampled, a clean set of
    multi-labels for ``simlabel flip --clean``, or a noisy copy of the labels with its truth:
    the label files every example starts from, so nobody has to write one by hand. The draw is
    described by :class:`SampleConfig` (stratified quotas, noise).

    Parameters
    ----------
    catalog : str, os.PathLike or Catalog
        A catalog file or folder, or a loaded :class:`~simlabel.catalog.Catalog`.
    config : SampleConfig, optional
        What to draw; default ``SampleConfig()``: every labelled row of ``label``.
    out : str or os.PathLike, optional
        Where to write the sample: ``id,label`` (``id,labels`` for multi-labels), or every
        catalog column with ``keep_columns``.
    holdout_out : str or os.PathLike, optional
        Where to write the holdout (``id,label``); needs ``holdout_frac``, and is required by it
        when ``out`` is given.
    truth_out : str or os.PathLike, optional
        With ``noise``: where to write the sample's true labels.
    exclude : str, os.PathLike or list of str, optional
        Ids never drawn (e.g. an earlier holdout): a CSV with an ``id`` column, or a list.

    Returns
    -------
    SampleResult
        ``sample`` (the drawn rows, their labels noisy with ``noise``), ``holdout`` and
        ``truth`` (tables, or ``None`` when not drawn), ``counts`` (rows drawn per class, or per
        rarest label for multi-labels), ``n_labelled`` (labelled rows in the catalog) and
        ``n_noisy`` (rows whose labels the noise changed). Each file asked for is written
        atomically (its folder made if needed).

    Raises
    ------
    InputError
        ``holdout_out`` without ``holdout_frac``, or ``holdout_frac`` with ``out`` but no
        ``holdout_out``; ``truth_out`` without ``noise``; no such label column, or no labelled
        row; ``n`` larger than the rows that can be drawn; noise with fewer than two classes.
    CatalogError
        A catalog that cannot be read, or without the ``attributes`` or ``labels_col`` columns.
    LabelFileError
        An ``exclude`` file that cannot be read.

    Examples
    --------
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> from simlabel import Catalog, SampleConfig, sample_labels
    >>> table = pd.DataFrame({"id": [str(i) for i in range(8)], "label": ["Shirts"] * 4 + ["Shoes"] * 4})
    >>> made = sample_labels(Catalog(table, Path(".")), SampleConfig(per_class=2, holdout_frac=0.25))
    >>> made.counts, len(made.holdout)
    ({'Shirts': 2, 'Shoes': 2}, 2)
    >>> sample_labels("catalog.csv", SampleConfig(frac=0.1), out="seeds.csv")  # doctest: +SKIP
    """
    cfg = config or SampleConfig()
    if holdout_out is not None and not cfg.holdout_frac:
        raise InputError("`holdout_out` needs `holdout_frac` (the share of each class to hold out)")
    if cfg.holdout_frac and holdout_out is None and out is not None:
        raise InputError("`holdout_frac` needs `holdout_out`: a holdout nobody can read cannot keep a test honest")
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, require=("id",))
    table = cat.table.reset_index(drop=True)
    where = str(cat.path) if cat.path else "catalog"

    if cfg.multilabel:
        ml = from_attributes(table, list(cfg.attributes)) if cfg.attributes else from_labels_column(table, cfg.labels_col)
        Y = ml.Y
        # stratify multi-labels by each row's rarest label, so rare labels reach the sample
        freq = Y.sum(axis=0)
        rarest = np.where(Y.any(axis=1), np.argmin(np.where(Y > 0, freq, np.iinfo(np.int64).max), axis=1), -1)
        strata = np.array([ml.labels[j] if j >= 0 else "" for j in rarest], dtype=object)
        value = np.array([SEPARATOR.join(ml.labels[j] for j in np.flatnonzero(row)) for row in Y], dtype=object)
    else:
        col = cfg.label_col or "label"
        if col not in table.columns:
            raise InputError(f"{where}: no label column {col!r}; columns are {', '.join(map(str, table.columns))} "
                             "(choose one with `label_col`)")
        value = clean_label_values(table[col], where).to_numpy(dtype=object)
        strata = value
    labelled = np.array([bool(v) for v in strata], dtype=bool)
    if not labelled.any():
        raise InputError(f"{where}: no row has a label in {cfg.label_col if not cfg.multilabel else 'the label columns'}")
    eligible = labelled.copy()
    if exclude is not None:
        ex = read_id_list(exclude, what="exclude file") if isinstance(exclude, (str, os.PathLike)) else list(exclude)
        eligible &= ~table["id"].isin(set(ex)).to_numpy()

    holdout_mask = np.zeros(len(table), bool)
    if cfg.holdout_frac:
        holdout_mask = sample_mask(strata, frac=cfg.holdout_frac, eligible=eligible, seed=cfg.seed)
        if cfg.holdout_frac > 0 and holdout_mask.any():
            # a class of one row stays out of the holdout: the sample needs it more than the test does
            _, inv, cnt = np.unique(strata[eligible].astype(str), return_inverse=True, return_counts=True)
            single = np.zeros(len(table), bool)
            single[np.flatnonzero(eligible)[cnt[inv] == 1]] = True
            holdout_mask &= ~single
    rest = eligible & ~holdout_mask
    how = dict(frac=cfg.frac, n=cfg.n, per_class=cfg.per_class)
    if all(v is None for v in how.values()):
        how["frac"] = 1.0
    chosen = sample_mask(strata, **how, stratify=cfg.stratify, eligible=rest, seed=cfg.seed + 1)

    rows = np.flatnonzero(chosen)
    true_value = value[rows]
    noisy_value = true_value.copy()
    n_noisy = 0
    if cfg.noise:
        if cfg.multilabel:
            from simlabel.labels.noise import simulate_missing_labels

            Yn, _ = simulate_missing_labels(Y[rows], ml.attribute_of, drop_rate=cfg.noise, drop_rates_range=None,
                                            false_positive_rate=0.0, seed=cfg.seed + 2)
            noisy_value = np.array([SEPARATOR.join(ml.labels[j] for j in np.flatnonzero(r)) for r in Yn], dtype=object)
            n_noisy = int((Yn != Y[rows]).any(axis=1).sum())
        else:
            noisy, flipped = flip_labels(true_value.astype(str), cfg.noise, classes=np.unique(value[labelled].astype(str)),
                                         seed=cfg.seed + 2)
            noisy_value, n_noisy = noisy.astype(object), int(flipped.sum())

    name = "labels" if cfg.multilabel else "label"
    if cfg.keep_columns:
        sample = _absolute_images(table.iloc[rows], cat).reset_index(drop=True)
        if cfg.multilabel and cfg.attributes and cfg.noise:
            # the attribute columns carry the noise too, so `--attributes` on the copy reads it
            kept = [set(str(v).split(SEPARATOR)) - {""} for v in noisy_value]
            for attr in cfg.attributes:
                cells = sample[attr].astype(str).str.strip()
                present = np.array([f"{attr}={c}" in k for c, k in zip(cells, kept)], dtype=bool)
                sample[attr] = cells.where(present, "")
        elif not cfg.multilabel:
            sample[cfg.label_col or "label"] = noisy_value
        sample[name] = noisy_value
    else:
        sample = pd.DataFrame({"id": table["id"].to_numpy()[rows], name: noisy_value})
    holdout = None
    if cfg.holdout_frac:
        hrows = np.flatnonzero(holdout_mask)
        holdout = pd.DataFrame({"id": table["id"].to_numpy()[hrows], name: value[hrows]})
    truth = pd.DataFrame({"id": table["id"].to_numpy()[rows], name: true_value}) if cfg.noise else None
    if truth_out is not None and truth is None:
        raise InputError("`truth_out` is for noisy copies (`noise`): without noise the sample is the truth")
    counts = pd.Series(strata[rows].astype(str)).value_counts().sort_index()
    result = SampleResult(sample, holdout, truth, {str(k): int(v) for k, v in counts.items()}, int(labelled.sum()), n_noisy)
    for path, frame in ((out, sample), (holdout_out, holdout), (truth_out, truth)):
        if path is not None and frame is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, labels_csv(frame))
    return result
