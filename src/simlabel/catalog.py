"""Catalogs: the input contract every simlabel command starts from.

A catalog is a CSV or Parquet table with one row per image:

========== ======== ==========================================================
column     required meaning
========== ======== ==========================================================
id         yes      unique, non-empty string
image      yes*     path to the image, relative to the catalog's folder or absolute
title      no       product title (text embeddings, text matching)
label      no       single label
labels     no       multi-label, ``|``-separated
split      no       train / validation / test ...
product    no       groups several images of one product
clean      no       the label was verified by a person (true/false)
rank       no       search rank (1 = best)
========== ======== ==========================================================

(*) ``image`` is required only by commands that read images.

Any standard column can come from another name: ``columns={"label": "article_type"}``
(``--label-col article_type`` on the command line). The source column is copied,
not renamed, so the original name stays usable too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.context import NORMALIZE_LABELS
from simlabel.errors import CatalogError
from simlabel.remote import is_url

STANDARD_COLUMNS: tuple[str, ...] = ("id", "image", "title", "label", "labels", "split", "product", "clean", "rank")
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


@dataclass
class Catalog:
    """A validated catalog: its table, and where its relative image paths point.

    Made by :func:`load_catalog`, which checks and normalises the standard columns; the
    constructor itself checks nothing.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per image: the standard columns (``id`` as ``str``; ``rank`` numeric;
        ``clean`` boolean) next to every original column.
    root : pathlib.Path
        The folder relative image paths are resolved against (absolute paths are kept as
        they are).
    path : pathlib.Path or None, default None
        The file the catalog was read from, named in error messages; ``None`` for a catalog
        built in memory.
    columns : dict of str to str, default {}
        The column mapping it was loaded with: standard column name to the file's column it
        was copied from (e.g. ``{"label": "article_type"}``).

    Examples
    --------
    >>> from pathlib import Path
    >>> import pandas as pd
    >>> from simlabel import Catalog
    >>> cat = Catalog(pd.DataFrame({"id": ["a", "b"], "image": ["a.jpg", "/data/b.jpg"]}), Path("/data/shop"))
    >>> len(cat), cat.has("label")
    (2, False)
    >>> cat.image_paths()
    array(['/data/shop/a.jpg', '/data/b.jpg'], dtype=object)
    """

    table: pd.DataFrame
    root: Path
    path: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> np.ndarray:
        """The ``id`` column as an object array, in row order."""
        return self.table["id"].to_numpy(dtype=object)

    def has(self, column: str) -> bool:
        """Whether the table has a column named ``column``."""
        return column in self.table.columns

    def image_paths(self) -> np.ndarray:
        """Absolute image paths (as strings), one per row; URLs (``https://``, ``s3://``...) as they are."""
        if "image" not in self.table.columns:
            raise CatalogError(f"{self._name()}: no 'image' column (map one with `image_col`)")
        root = str(self.root)
        images = self.table["image"].astype(str)
        # os.path.join keeps absolute paths as they are, which is the contract; a URL is fetched as it is
        return np.array([p if is_url(p) else os.path.join(root, p) for p in images], dtype=object)

    def column(self, name: str) -> pd.Series:
        """The column ``name``; a :class:`~simlabel.errors.CatalogError` listing the columns when there is none."""
        if name not in self.table.columns:
            raise CatalogError(
                f"{self._name()}: no column {name!r}; columns are {', '.join(map(str, self.table.columns))}"
            )
        return self.table[name]

    def labels(self, column: str = "label") -> pd.Series:
        """Single labels as strings; missing labels are ``None``."""
        col = self.column(column)
        return col.where(col.astype(str).str.len() > 0, None)

    def texts(self, column: str) -> dict[str, str]:
        """id -> the text of ``column`` (empty string where missing), e.g. titles for keywords."""
        return dict(zip(self.table["id"].astype(str), self.column(column).fillna("").astype(str)))

    def fingerprint(self) -> str:
        """A hash of the ids in order (what a resumable job must match)."""
        return ids_fingerprint(self.table["id"].to_numpy())

    def subset(self, mask: np.ndarray | pd.Series) -> "Catalog":
        """The rows where the boolean ``mask`` is true, as a new catalog (same root, path and mapping)."""
        return Catalog(self.table[np.asarray(mask)].reset_index(drop=True), self.root, self.path, dict(self.columns))

    def head(self, n: int) -> "Catalog":
        """The first ``n`` rows, as a new catalog (same root, path and mapping)."""
        return Catalog(self.table.head(n).reset_index(drop=True), self.root, self.path, dict(self.columns))

    def _name(self) -> str:
        return str(self.path) if self.path else "catalog"


def ids_fingerprint(ids: Sequence[str] | np.ndarray) -> str:
    h = hashlib.sha256()
    for chunk_start in range(0, len(ids), 65536):
        h.update("\n".join(map(str, ids[chunk_start : chunk_start + 65536])).encode())
        h.update(b"\x00")
    return h.hexdigest()


#: columns that hold text; in Parquet they must be strings (ids may also be integers)
_TEXT_COLUMNS = ("id", "image", "title", "label", "labels", "split", "product")


def _check_parquet_types(path: Path, mapping: Mapping[str, str]) -> None:
    """Refuse Parquet columns whose type cannot be the text the contract needs (naming column and type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CatalogError(f"{path}: not a readable Parquet file ({e})") from None
    wanted = {mapping.get(c, c): c for c in _TEXT_COLUMNS}
    for name, standard in wanted.items():
        if name not in schema.names:
            continue
        t = schema.field(name).type
        ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)
        if standard in ("id", "label", "split", "product") and pa.types.is_integer(t):
            ok = True  # integer ids and codes are text without loss
        if standard == "label" and pa.types.is_boolean(t):
            ok = True
        if not ok:
            hint = " (bytes: decode them to text first)" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else ""
            raise CatalogError(f"{path}: column {name!r} ({standard}) must hold text; it holds {t}{hint}")


def catalog_file(path: str | os.PathLike, error: type[Exception] = CatalogError) -> Path:
    """The catalog a path names: the file itself, or a folder's ``catalog.csv`` / ``catalog.parquet``.

    Raises ``error`` (a :class:`~simlabel.errors.CatalogError` by default) when the path does not
    exist or is a folder without a catalog in it.
    """
    p = Path(path)
    if p.is_dir():
        for candidate in ("catalog.csv", "catalog.parquet"):
            if (p / candidate).is_file():
                return p / candidate
        raise error(f"{p}: is a folder with no catalog.csv or catalog.parquet in it; expected a file here")
    if not p.exists():
        raise error(f"{p}: file not found")
    return p


def read_table(path: Path, mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A CSV, TSV or Parquet table with its text columns as ``str`` (missing cells ``""``)."""
    return _read_table(Path(path), mapping)


def _read_table(path: Path, mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        _check_parquet_types(path, mapping or {})
        df = pd.read_parquet(path)
        # Parquet keeps types; ids and paths must be strings for the contract.
        for col in df.columns:
            if df[col].dtype == object or str(df[col].dtype).startswith("string") or pd.api.types.is_integer_dtype(df[col]):
                df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
        return df
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        try:
            # Everything as text: ids like "00123" must not become numbers.
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
        except pd.errors.EmptyDataError:
            raise CatalogError(f"{path}: is empty (no header line)") from None
        except pd.errors.ParserError as e:
            raise CatalogError(f"{path}: cannot parse as CSV: {e}") from e
        except UnicodeDecodeError as e:
            raise CatalogError(f"{path}: not UTF-8 text ({e})") from e
    raise CatalogError(f"{path}: unsupported catalog format {suffix!r}; use .csv, .tsv or .parquet")


def _row_ref(path: Path | None, row: int, is_csv: bool) -> str:
    where = f"{path}, " if path else ""
    # +2: one for the header line, one because people count lines from 1.
    line = f" (line {row + 2})" if is_csv else ""
    return f"{where}row {row}{line}"


def validate_table(
    df: pd.DataFrame,
    *,
    path: Path | None = None,
    require: Sequence[str] = ("id", "image"),
) -> pd.DataFrame:
    """Check and normalise the standard columns of an already mapped table."""
    is_csv = path is not None and path.suffix.lower() in (".csv", ".tsv", ".txt")
    name = str(path) if path else "catalog"
    missing = [c for c in require if c not in df.columns]
    if missing:
        raise CatalogError(
            f"{name}: missing required column(s) {', '.join(missing)}; columns are "
            f"{', '.join(map(str, df.columns))}. Map one with --{missing[0]}-col NAME."
        )
    if "id" in df.columns:
        ids = df["id"].astype(object).where(df["id"].notna(), "").astype(str).str.strip()
        empty = np.flatnonzero((ids == "").to_numpy())
        if len(empty):
            rows = ", ".join(_row_ref(None, int(r), is_csv) for r in empty[:5])
            raise CatalogError(f"{name}: column 'id': empty id at {rows}" + (f" and {len(empty) - 5} more" if len(empty) > 5 else ""))
        dup = ids.duplicated(keep=False).to_numpy()
        if dup.any():
            first = ids[dup].iloc[0]
            rows = np.flatnonzero((ids == first).to_numpy())
            n_dup = int(ids.duplicated().sum())
            raise CatalogError(
                f"{name}: column 'id': duplicate id {first!r} at "
                + ", ".join(_row_ref(None, int(r), is_csv) for r in rows[:5])
                + (f" ({n_dup} duplicated ids in all)" if n_dup > 1 else "")
            )
        df["id"] = ids
    if "image" in df.columns:
        images = df["image"].astype(str).str.strip()
        empty = np.flatnonzero((images == "").to_numpy())
        if len(empty) and "image" in require:
            r = int(empty[0])
            raise CatalogError(f"{_row_ref(path, r, is_csv)}, column 'image': empty path for id {df['id'].iloc[r]!r}")
        df["image"] = images
    if "rank" in df.columns:
        raw = df["rank"].astype(str).str.strip()
        rank = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
        bad = np.flatnonzero((rank.isna() & (raw != "") & (raw.str.lower() != "nan")).to_numpy())
        if len(bad):
            r = int(bad[0])
            raise CatalogError(f"{_row_ref(path, r, is_csv)}, column 'rank': not a number: {raw.iloc[r]!r}")
        df["rank"] = rank
    if "clean" in df.columns:
        raw = df["clean"].astype(str).str.strip().str.lower()
        ok = raw.isin(_TRUE | _FALSE | {"", "nan", "none"})
        if not ok.all():
            r = int(np.flatnonzero(~ok.to_numpy())[0])
            raise CatalogError(
                f"{_row_ref(path, r, is_csv)}, column 'clean': expected true/false/1/0/yes/no, got {df['clean'].iloc[r]!r}"
            )
        df["clean"] = raw.map(lambda v: True if v in _TRUE else (False if v in _FALSE else None)).astype(object)
    for col in ("title", "label", "labels", "split", "product"):
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    if "label" in df.columns:
        df["label"] = clean_label_values(df["label"], name)
    return df






#: cell values that mean "no label", compared stripped and case-insensitively
MISSING_LABELS = frozenset({"", "nan", "none", "null", "n/a", "na", "<na>"})


def clean_label_values(values: pd.Series, source: str, *, normalize: bool | None = None) -> pd.Series:
    """Labels stripped, with the missing-label spellings (NaN, None, NULL, N/A, empty) as ``""``.

    Spellings of one label that differ only in case or inner whitespace (``dress``, ``DRESS``,
    ``dress  ``) give a :class:`~simlabel.errors.SimlabelWarning` naming them; with
    ``normalize`` they are folded into the most frequent spelling (ties: the first seen).
    """
    import warnings

    from simlabel.errors import SimlabelWarning

    normalize = NORMALIZE_LABELS.get() if normalize is None else normalize
    raw = values.astype(object).where(values.notna(), "")
    # each distinct value cleaned once (a catalog of a million rows holds a few hundred labels)
    distinct = pd.unique(raw.to_numpy())
    cleaned = pd.Series(distinct, dtype=object).astype(str).str.strip()
    cleaned = cleaned.where(~cleaned.str.lower().isin(MISSING_LABELS), "")
    codes = pd.Index(distinct, dtype=object).get_indexer(raw.to_numpy())
    text = pd.Series(cleaned.to_numpy(dtype=object)[codes], index=values.index, dtype=object)
    present = text[text != ""]
    if present.empty:
        return text
    # the spellings of each label, most frequent first (ties: the first seen), from the distinct ones' counts
    counts = present.value_counts(sort=False)
    counts = counts.iloc[np.argsort(-counts.to_numpy(), kind="stable")]
    forms = pd.Series(counts.index.to_numpy(dtype=object), dtype=object)
    key = forms.str.casefold().str.split().str.join(" ")
    spellings = forms.groupby(key.to_numpy(), sort=False).agg(list)
    clashes = spellings[spellings.map(len) > 1]
    if len(clashes):
        if normalize:
            fold = {variant: forms[0] for forms in clashes for variant in forms[1:]}
            return text.replace(fold)
        shown = "; ".join(" / ".join(repr(f) for f in forms) for forms in clashes.head(5))
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        warnings.warn(f"{source}: labels spelt more than one way (case or spaces): {shown}{more}; they are different "
                      "classes unless you pass `normalize_labels`", SimlabelWarning, stacklevel=2)
    return text


def load_catalog(
    path: str | os.PathLike,
    *,
    columns: Mapping[str, str | None] | None = None,
    require: Sequence[str] = ("id", "image"),
    root: str | os.PathLike | None = None,
) -> Catalog:
    """Load and validate a catalog file.

    The file is read with every text column as ``str`` (ids like ``"00123"`` stay text),
    mapped columns are copied to their standard names (the original names stay usable),
    and the standard columns are checked and normalised: ids stripped, non-empty and
    unique; image paths stripped and non-empty (when ``image`` is required); ``rank``
    numeric; ``clean`` boolean (true/false, 1/0, yes/no); labels stripped, with the
    missing-label spellings (NaN, None, NULL, N/A, empty) as ``""``. Spellings of one
    label that differ only in case or inner spaces give a
    :class:`~simlabel.errors.SimlabelWarning` (or are folded into the most frequent one
    when label normalisation is switched on, :func:`simlabel.context.modes`).

    Parameters
    ----------
    path : str or os.PathLike
        A CSV, TSV or Parquet file (``.csv``, ``.tsv``, ``.txt``, ``.parquet``, ``.pq``), or a
        folder holding ``catalog.csv`` or ``catalog.parquet``.
    columns : Mapping of str to str or None, optional
        Mapping from standard column name to the column holding it in the file,
        e.g. ``{"label": "article_type", "id": "sku"}``. ``None`` values are ignored.
    require : Sequence of str, default ("id", "image")
        Standard columns that must be present (after mapping).
    root : str or os.PathLike, optional
        Folder relative image paths are resolved against (default: the catalog's folder).

    Returns
    -------
    Catalog
        The validated table, its image root, its path and the column mapping used.

    Raises
    ------
    CatalogError
        Naming the file, row and column of the first problem found: no such file (or a
        folder without a catalog), an unsupported format, an unreadable or empty file, an
        unknown standard column or a mapped column that is not in the file, a missing
        required column, an empty or duplicated id, an empty image path, a ``rank`` that is
        not a number, a ``clean`` value that is not a boolean, a Parquet text column that
        does not hold text.

    Examples
    --------
    >>> from simlabel import CatalogError, load_catalog
    >>> cat = load_catalog("shop/catalog.csv", columns={"label": "article_type"})  # doctest: +SKIP
    >>> labels = cat.labels()  # the article types, None where a row has none  # doctest: +SKIP
    >>> try:
    ...     load_catalog("no-such-catalog.csv")
    ... except CatalogError as e:
    ...     print(e)
    no-such-catalog.csv: file not found
    """
    p = catalog_file(path)
    mapping = {k: v for k, v in (columns or {}).items() if v}
    df = _read_table(p, mapping)
    if df.empty:
        raise CatalogError(f"{p}: has a header ({', '.join(map(str, df.columns))}) but no rows")
    for standard, source in mapping.items():
        if standard not in STANDARD_COLUMNS:
            raise CatalogError(f"unknown standard column {standard!r}; known: {', '.join(STANDARD_COLUMNS)}")
        if source not in df.columns:
            raise CatalogError(
                f"{p}: `{standard}_col` {source!r} is not a column; columns are {', '.join(map(str, df.columns))}"
            )
        df[standard] = df[source]
    df = validate_table(df, path=p, require=require).reset_index(drop=True)
    return Catalog(df, Path(root) if root else p.resolve().parent, p, mapping)



def design_groups(catalog: Catalog | pd.DataFrame, title_col: str = "title", colour_col: str = "base_colour", *,
                  min_colours: int = 2) -> pd.Series:
    """A ``product`` column grouping the colour variants of one design.

    Two rows are one design when their titles are equal once every colour name is removed
    ("Puma Men Heroes Graphic Tshirts" in Green and in Black). The colour names are the values
    of ``colour_col`` across the catalog (multi-word names first, matched as whole words,
    case-insensitively; "NA" and empty values are ignored). A group counts when it holds at
    least ``min_colours`` distinct colours; every other row is a product of its own.

    Returns
    -------
    pandas.Series
        indexed like the table: ``"design-<hash>"`` for a grouped row, the row's ``id`` otherwise.
        On fashion-products: 1,330 groups holding 6,543 images.

    Raises
    ------
    CatalogError
        when a column is missing.
    """
    import re

    table = catalog.table if isinstance(catalog, Catalog) else catalog
    for col in (title_col, colour_col, "id"):
        if col not in table.columns:
            raise CatalogError(f"design_groups: no column {col!r}; columns are {', '.join(map(str, table.columns))}")
    colours = table[colour_col].fillna("").astype(str).str.strip()
    vocab = sorted({c for c in colours if c and c.upper() != "NA"}, key=len, reverse=True)
    titles = table[title_col].fillna("").astype(str)
    if vocab:
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, vocab)) + r")(?!\w)", re.IGNORECASE)
        titles = titles.str.replace(pattern, " ", regex=True)
    keys = titles.str.lower().str.split().str.join(" ")
    n_colours = colours.groupby(keys).transform("nunique")
    grouped = (n_colours >= min_colours) & (keys != "")
    digest = keys.map(lambda k: "design-" + hashlib.blake2b(k.encode(), digest_size=6).hexdigest())
    return pd.Series(np.where(grouped, digest, table["id"].astype(str)), index=table.index, name="product")
