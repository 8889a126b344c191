"""Category semantic relationships (paper 003: Alibaba, "Semi-supervised learning with side
information for large scale web images"), slide "Establish Category Semantic Relationships /
Update WordNet Similarity with Bert Model".

The talk relates its categories in three steps, which this module implements:

1. **Map each category name to a WordNet synset** (:func:`map_categories`). A name like
   ``"Casual Shoes"`` is tried as a whole WordNet compound first (``casual_shoes``,
   ``casual-shoes``), then as ever shorter suffixes down to its head noun, the last word
   (English compounds are head-final: casual shoes are shoes, a body mist is a mist); see
   :func:`candidate_lemmas`. Many head nouns have several senses ("Flats", "Briefs",
   "Ties", "Tops", "Trunk"), so by default the *category set disambiguates itself*: each
   category takes the sense most Wu-Palmer-similar to the senses its closest fellow
   categories took (iterated from WordNet's most frequent senses). Explicit synsets can be
   given per category (``overrides``, :func:`read_overrides`).
2. **Pairwise WordNet similarity** of the mapped synsets (:func:`wordnet_similarity`):
   Wu-Palmer (default), Lin (information content) or path similarity.
3. **Update it with a BERT-like text encoder** (:func:`blend_similarity`): the slides say
   the WordNet similarity is "updated with a BERT model" but show no formula. Our reading
   is a convex blend with the cosine similarity of the category names' text embeddings,

   .. math:: S = (1 - w)\\, S_{wn} + w\\, \\max(S_{text}, 0),

   with ``w = text_weight`` (0.5 by default), and the text similarity alone where a category
   has no synset. Each category then keeps its ``K`` nearest categories
   (:func:`simlabel.semantics.names.nearest_labels`), which paper 003 uses to credit
   visual neighbours whose label is a related category (:mod:`simlabel.labels.side_info`).

:func:`category_semantics` runs the three steps and returns a :class:`CategorySemantics`
(save/load as JSON, a review table with :meth:`CategorySemantics.to_frame`).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simlabel.errors import InputError, LabelFileError
from simlabel.files import atomic_write_json, read_csv_table
from simlabel.semantics.names import (
    check_names,
    embed_label_names,
    label_similarity,
    nearest_labels,
)

if TYPE_CHECKING:  # nltk is imported on first use only
    import pandas as pd
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from simlabel.encoders.base import TextEncoder
    from simlabel.semantics.wordnet import SynsetSimilarity

SENSE_MODES: tuple[str, ...] = ("first", "context")
MAPPING_KINDS: tuple[str, ...] = ("override", "phrase", "head", "unmapped")

__all__ = [
    "CategoryMapping",
    "CategorySemantics",
    "MAPPING_KINDS",
    "SENSE_MODES",
    "blend_similarity",
    "candidate_lemmas",
    "category_semantics",
    "map_categories",
    "read_overrides",
    "wordnet_similarity",
]


# -- names -> candidate lemmas -----------------------------------------------------------------

# "&", ",", "/" and "+" separate conjuncts like the word "and" does
_CONJ_MARKS = re.compile(r"\s*[&,/+]\s*")
_WORD_SPLIT = re.compile(r"[^\w'&]+|_+")  # anything but letters, digits, apostrophes (and the "&" marks)
_QUALIFIERS = re.compile(r"\([^)]*\)|\[[^\]]*\]")  # "T-Shirts (Men)": the bracketed part is no part of the head
_CONJ_WORDS = frozenset({"and", "&"})
_SQUASH = re.compile(r"[\s_\-.']+")


def _reader(reader: WordNetCorpusReader | None) -> WordNetCorpusReader:
    if reader is not None:
        return reader
    from simlabel.semantics.wordnet import wordnet_reader

    return wordnet_reader()


def _conjuncts(name: str) -> tuple[list[str], list[list[str]]]:
    """All words of a name (lower case, ``and`` kept) and its conjuncts (``and`` dropped)."""
    text = _CONJ_MARKS.sub(" & ", _QUALIFIERS.sub(" ", str(name).lower()))
    words = [w.strip("'") for w in _WORD_SPLIT.split(text)]
    words = [w for w in words if w]
    conj: list[list[str]] = [[]]
    for w in words:
        if w in _CONJ_WORDS:
            if conj[-1]:
                conj.append([])
        else:
            conj[-1].append(w)
    conj = [c for c in conj if c]
    words = [w if w != "&" else "and" for w in words]
    # drop leading and trailing conjunctions from the phrase ("& more", "shoes and")
    while words and words[0] == "and":
        words.pop(0)
    while words and words[-1] == "and":
        words.pop()
    return words, conj


def _surface_candidates(name: str) -> list[tuple[str, str]]:
    """``(surface form, how)`` in the order tried: the whole phrase (``_`` then ``-``), then
    for each conjunct (first first) its whole phrase and ever shorter suffixes."""
    words, conj = _conjuncts(name)
    out: list[tuple[str, str]] = []
    if words:
        out += [("_".join(words), "phrase"), ("-".join(words), "phrase")]
    for c in conj:
        starts = range(0 if len(conj) > 1 else 1, len(c))
        for i in starts:
            tail = c[i:]
            out.append(("_".join(tail), "head"))
            if len(tail) > 1:
                out.append(("-".join(tail), "head"))
    seen: set[str] = set()
    uniq = []
    for s, how in out:
        if s not in seen:
            seen.add(s)
            uniq.append((s, how))
    return uniq


@functools.lru_cache(maxsize=4)
def _squashed_noun_index(reader: WordNetCorpusReader) -> dict[str, tuple[str, ...]]:
    """Noun lemmas keyed by their letters only (``"tshirt"`` -> ``("t-shirt",)``): built once per reader."""
    index: dict[str, list[str]] = {}
    for lemma in reader.all_lemma_names("n"):
        index.setdefault(_SQUASH.sub("", lemma), []).append(lemma)
    return {k: tuple(v) for k, v in index.items()}


def _lemma_forms(surface: str, reader: WordNetCorpusReader) -> list[str]:
    """WordNet noun lemmas for one surface form: every analysis of nltk's morphy (a plural
    like ``"shoes"`` is both the lemma ``shoes`` and ``shoe``), else a lemma spelt the same
    up to hyphens, underscores and spaces (``"tshirts"`` -> ``t-shirt``)."""
    morphy = getattr(reader, "_morphy", None)
    if morphy is not None:
        forms = list(dict.fromkeys(morphy(surface, "n")))
    else:  # pragma: no cover - every nltk 3.x reader has _morphy
        f = reader.morphy(surface, "n")
        forms = [f] if f else []
    if forms:
        return forms
    key = _SQUASH.sub("", surface)
    if not key:
        return []
    index = _squashed_noun_index(reader)
    subs = getattr(reader, "MORPHOLOGICAL_SUBSTITUTIONS", {}).get("n", [("s", "")])
    bases = [key] + [key[: -len(old)] + new for old, new in subs if key.endswith(old) and len(key) > len(old)]
    for b in bases:
        if b in index:
            return list(index[b])
    return []


def _candidate_groups(name: str, reader: WordNetCorpusReader) -> list[tuple[str, str, list[str]]]:
    """``(surface, how, lemmas)`` per surface candidate, in the order tried."""
    return [(s, how, _lemma_forms(s, reader)) for s, how in _surface_candidates(name)]


def candidate_lemmas(name: str, *, reader: WordNetCorpusReader | None = None) -> list[str]:
    """The WordNet noun lemmas tried for a category name, in order.

    Tokens: the name lower-cased, bracketed qualifiers dropped (``"T-Shirts (Men)"``), split
    on whitespace, underscores, hyphens and any other character but letters, digits and
    apostrophes; ``and``, ``&``, ``,``, ``/`` and ``+`` separate conjuncts. Surface
    candidates, in order:

    1. the whole phrase joined with ``_`` then with ``-`` (WordNet compounds:
       ``"Flip Flops"`` -> ``flip-flops`` -> ``flip-flop``; ``"Duffel Bag"`` -> ``duffel_bag``);
    2. ever shorter suffixes of it, down to the last word, the **head noun** (English
       compounds are head-final: ``"Casual Shoes"`` -> ``shoes``); for ``"X and Y"`` the
       first conjunct's candidates come first (``"Perfume and Body Mist"`` -> ``perfume``,
       ``body_mist``, ``mist``).

    Each surface form is lemmatised with the reader's noun morphology (nltk's morphy; all
    its analyses, since a plural can be a lemma of its own: ``shoes`` and ``shoe``), or,
    when that finds nothing, matched to a lemma spelt the same up to hyphens, underscores
    and spaces (``"Tshirts"`` -> ``t-shirt``). A surface form with no lemma is listed as is.

    Returns
    -------
        The distinct candidates, e.g. ``["casual_shoes", "casual-shoes", "shoes", "shoe"]``.
    """
    reader = _reader(reader)
    out: list[str] = []
    for surface, _how, forms in _candidate_groups(name, reader):
        for f in forms or [surface]:
            if f not in out:
                out.append(f)
    return out


# -- names -> synsets ----------------------------------------------------------------------------


@dataclass
class CategoryMapping:
    """Category names mapped to WordNet noun synsets.

    Attributes
    ----------
    names
        the category names, in order.
    synsets
        the synset name of each category (``"shoe.n.01"``), ``None`` if unmapped.
    how
        ``"override"`` (given explicitly), ``"phrase"`` (the whole name is a WordNet
        lemma), ``"head"`` (a shorter suffix or a conjunct of it is) or ``"unmapped"``.
    candidates
        the noun synsets considered for each category (the senses of its first
        matching lemma, most frequent first; the override alone; ``[]`` if unmapped).
    """

    names: list[str]
    synsets: list[str | None]
    how: list[str]
    candidates: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.candidates:
            self.candidates = [[s] if s else [] for s in self.synsets]
        if not (len(self.synsets) == len(self.how) == len(self.candidates) == n):
            raise InputError(
                f"CategoryMapping needs one synset, how and candidate list per name; got {n} names, "
                f"{len(self.synsets)} synsets, {len(self.how)} how, {len(self.candidates)} candidate lists"
            )
        bad = [h for h in self.how if h not in MAPPING_KINDS]
        if bad:
            raise InputError(f"unknown mapping kind {bad[0]!r}; use one of {', '.join(MAPPING_KINDS)}")

    @property
    def mapped(self) -> np.ndarray:
        """``(C,)`` bool: which categories have a synset."""
        return np.array([s is not None for s in self.synsets], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "synsets": list(self.synsets),
            "how": list(self.how),
            "candidates": [list(c) for c in self.candidates],
        }


def _lemma_count(synset: Any, form: str) -> int:
    """Tagged-corpus frequency (SemCor, ``cntlist.rev``) of lemma ``form`` in ``synset``; 0 if unknown."""
    total = 0
    for lemma in synset.lemmas():
        if lemma.name().lower() == form:
            try:
                total += int(lemma.count())
            except Exception:  # noqa: BLE001 - a dict dir without cntlist.rev: no counts
                return 0
    return total


def _senses(forms: Sequence[str], reader: WordNetCorpusReader) -> list[str]:
    """Noun synsets of the lemmas ``forms``, most frequent first: sorted by tagged frequency,
    ties in the order of ``forms`` and then WordNet's own sense order. Summing over the forms
    matters for plurals: ``shoes`` alone is "a particular situation" (in your shoes), but
    ``shoe`` in the shoe sense is far more frequent."""
    ranked: dict[str, tuple[int, int, int]] = {}
    for fi, form in enumerate(forms):
        for si, s in enumerate(reader.synsets(form, "n")):
            # reader.synsets() runs morphy again; keep only synsets that have this very lemma
            if not any(lem.name().lower() == form for lem in s.lemmas()):
                continue
            key = (-_lemma_count(s, form), fi, si)
            name = s.name()
            if name not in ranked or key < ranked[name]:
                ranked[name] = key
    return sorted(ranked, key=lambda n: ranked[n])


@functools.lru_cache(maxsize=8)
def _shared_similarity(reader: WordNetCorpusReader, measure: str, ic: str | None) -> SynsetSimilarity:
    """One :class:`~simlabel.semantics.wordnet.SynsetSimilarity` (and its per-pair cache) per reader and measure."""
    from simlabel.semantics.wordnet import SynsetSimilarity

    return SynsetSimilarity(measure, ic, reader=reader)


def _validate_override(category: str, synset: str, reader: WordNetCorpusReader) -> str:
    try:
        s = reader.synset(synset)
    except Exception as e:  # nltk raises WordNetError / ValueError for a bad name
        raise InputError(f"override for category {category!r}: unknown WordNet synset {synset!r} ({e})") from e
    if s is None or s.pos() != "n":
        raise InputError(f"override for category {category!r}: {synset!r} is not a noun synset")
    return s.name()


def map_categories(
    names: Sequence[str],
    *,
    overrides: Mapping[str, str | None] | None = None,
    sense: str = "context",
    max_senses: int | None = 16,
    context_k: int | None = 5,
    rounds: int = 3,
    reader: WordNetCorpusReader | None = None,
) -> CategoryMapping:
    r"""Map category names to WordNet noun synsets (paper 003, "Establish Category Semantic
    Relationships").

    Parameters
    ----------
    names
        the category names (distinct).
    overrides
        an explicit synset name per category (``{"Trunk": "trunk.n.02"}``); an
        empty string or ``None`` leaves that category unmapped. Names not in ``names``
        are ignored (one file can serve several label sets). A synset that does not
        exist or is not a noun raises ``ValueError`` naming the category.
    sense
        which sense of the first matching lemma (:func:`candidate_lemmas`):

        ``"first"``
            WordNet's most frequent sense (by SemCor count over the lemma's forms).
        ``"context"`` (default)
            The category set disambiguates itself. Starting from the first senses, each
            category takes, among its candidate senses :math:`\sigma \in \Sigma_i`, the one
            closest to the senses :math:`s_j` the other mapped categories hold: the mean
            of its ``context_k`` largest Wu-Palmer similarities to them,

            .. math:: s_i \leftarrow \arg\max_{\sigma \in \Sigma_i}
                      \operatorname{mean\,top}_{k}\{\mathrm{wup}(\sigma, s_j) : j \in M, j \ne i\},

            all categories at once (so the result does not depend on their order),
            repeated ``rounds`` times or until nothing changes; ties keep the more
            frequent sense. In a fashion catalog "Flats" become footwear, "Briefs" and
            "Boxers" underpants, "Ties" neckties, "Clutches" clutch bags, "Tops" the
            garment (not the upper part of anything), because those senses sit next to the
            catalog's other garments and accessories. Overridden categories take part as
            fixed context.

            Why the top ``k`` and not the mean over all categories: a catalog has several
            families (garments, footwear, bags, jewellery, cosmetics) and a sense needs
            to fit its own family. The plain mean (``context_k=None``) favours shallow,
            generic senses that are equally far from every family: on the 75
            fashion-products article types it picks "clothing in general" for
            "Dresses", "an outer wrapping or casing" for "Jackets" and "covering for a
            hole" for "Tops"; the top-5 mean picks the garments.
    max_senses
        at most this many senses per category are considered (most frequent
        first; ``None``: all). The garment sense of a polysemous word can be rare
        (``top`` in the sense of a garment is WordNet's 10th sense of ``top``).
    context_k
        how many of the most similar other categories a sense is scored
        against in ``"context"`` mode (clipped to the number of other mapped
        categories; ``None``: all of them, a plain mean).
    rounds
        rounds of the context update.
    reader
        an nltk WordNet reader (default :func:`simlabel.semantics.wordnet.wordnet_reader`).

    Returns
    -------
        A :class:`CategoryMapping`.

    Cost: ``context`` compares every candidate sense with every chosen sense per round,
    ``O(C^2 \cdot senses)`` Wu-Palmer values, each cached per synset pair (a few seconds for
    hundreds of categories; grows quadratically beyond).
    """
    names = check_names(names, "category name")
    if sense not in SENSE_MODES:
        raise InputError(f"unknown sense selection {sense!r}; use one of {', '.join(SENSE_MODES)}")
    if max_senses is not None and max_senses < 1:
        raise InputError(f"max_senses must be >= 1 or None; got {max_senses}")
    if rounds < 0:
        raise InputError(f"rounds must be >= 0; got {rounds}")
    if context_k is not None and context_k < 1:
        raise InputError(f"context_k must be >= 1 or None; got {context_k}")
    reader = _reader(reader)
    overrides = dict(overrides or {})

    synsets: list[str | None] = []
    how: list[str] = []
    candidates: list[list[str]] = []
    for n in names:
        if n in overrides:
            o = overrides[n]
            o = o.strip() if isinstance(o, str) else o
            if o:
                s = _validate_override(n, o, reader)
                synsets.append(s)
                how.append("override")
                candidates.append([s])
            else:
                synsets.append(None)
                how.append("unmapped")
                candidates.append([])
            continue
        for _surface, kind, forms in _candidate_groups(n, reader):
            senses = _senses(forms, reader) if forms else []
            if senses:
                senses = senses[:max_senses] if max_senses is not None else senses
                synsets.append(senses[0])
                how.append(kind)
                candidates.append(senses)
                break
        else:
            synsets.append(None)
            how.append("unmapped")
            candidates.append([])

    if sense == "context":
        synsets = _context_senses(synsets, how, candidates, context_k, rounds, reader)
    return CategoryMapping(names=names, synsets=synsets, how=how, candidates=candidates)


def _context_senses(
    synsets: list[str | None],
    how: list[str],
    candidates: list[list[str]],
    context_k: int | None,
    rounds: int,
    reader: WordNetCorpusReader,
) -> list[str | None]:
    """The context update of :func:`map_categories` (Jacobi iteration over all categories)."""
    chosen = list(synsets)
    mapped = [i for i, s in enumerate(chosen) if s is not None]
    free = [i for i in mapped if how[i] != "override" and len(candidates[i]) > 1]
    if len(mapped) < 2 or not free:
        return chosen
    wup = _shared_similarity(reader, "wup", None)
    k = len(mapped) - 1 if context_k is None else min(context_k, len(mapped) - 1)
    for _ in range(rounds):
        new = list(chosen)
        for i in free:
            others = [chosen[j] for j in mapped if j != i]
            sims = wup.matrix(candidates[i], others)  # (senses, other categories), pairs cached
            top = -np.partition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else sims
            # argmax takes the first of equal scores: the more frequent sense
            new[i] = candidates[i][int(np.argmax(top.mean(axis=1)))]
        if new == chosen:
            break
        chosen = new
    return chosen


def read_overrides(path: str | os.PathLike) -> dict[str, str]:
    """Read synset overrides from a CSV with columns ``category,synset`` (others ignored).

    Values are stripped; an empty synset means "leave this category unmapped". Raises
    :class:`~simlabel.errors.LabelFileError` (a ``ValueError``) naming the file and line
    for a missing file or column, an empty category, a category given twice, or a synset
    that is not of the form ``lemma.n.NN`` (whether it exists is checked by
    :func:`map_categories`, which names the category).
    """
    p = Path(path)
    df = read_csv_table(p, ("category", "synset"), "synset override file")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    synset_form = re.compile(r"^.+\.n\.\d+$")
    for r, (cat, syn) in enumerate(zip(df["category"].str.strip(), df["synset"].str.strip())):
        line = r + 2
        if not cat:
            raise LabelFileError(f"{p}, row {r} (line {line}): empty category")
        if cat in out:
            raise LabelFileError(f"{p}: category {cat!r} is given twice (lines {first_line[cat]} and {line})")
        if syn and not synset_form.match(syn):
            raise LabelFileError(
                f"{p}, row {r} (line {line}): synset {syn!r} of category {cat!r} is not a noun synset name like 'shoe.n.01'"
            )
        out[cat] = syn
        first_line[cat] = line
    return out


# -- similarities --------------------------------------------------------------------------------


def wordnet_similarity(
    mapping: CategoryMapping,
    measure: str = "wup",
    ic: str | dict = "brown",
    *,
    reader: WordNetCorpusReader | None = None,
) -> np.ndarray:
    r"""Pairwise WordNet similarity of the categories' synsets: ``(C, C)`` float64.

    ``measure``: ``"wup"`` (Wu-Palmer, :math:`2\,d(\mathrm{lcs}) / (d(a) + d(b))`, in (0, 1]),
    ``"lin"`` (Lin, :math:`2\,IC(\mathrm{lcs}) / (IC(a) + IC(b))` with the information content
    of corpus ``ic``, see :func:`simlabel.semantics.wordnet.information_content`; a synset unseen in
    that corpus gets ~0 against everything, the ``-add1`` corpora avoid that) or ``"path"``
    (:math:`1 / (1 + \text{hypernym path length})`). Values are nltk's
    (:class:`simlabel.semantics.wordnet.SynsetSimilarity`), clipped to [0, 1].

    Row and column of an unmapped category are NaN (no WordNet evidence, which
    :func:`blend_similarity` fills from the text similarity); the diagonal of a mapped one is
    1, as is every pair of categories mapped to the same synset. Symmetric by construction.
    Cost: one similarity per pair of distinct synsets (cached), a Python loop.
    """
    from simlabel.semantics.wordnet import SynsetSimilarity

    reader = _reader(reader)
    sim = (
        _shared_similarity(reader, measure, ic if measure == "lin" else None)
        if isinstance(ic, str)
        else SynsetSimilarity(measure, ic, reader=reader)
    )
    c = len(mapping.names)
    distinct = sorted({s for s in mapping.synsets if s is not None})
    pos = {s: k for k, s in enumerate(distinct)}
    m = np.ones((len(distinct), len(distinct)), dtype=np.float64)
    for a in range(len(distinct)):
        for b in range(a + 1, len(distinct)):
            m[a, b] = m[b, a] = sim.symmetric(distinct[a], distinct[b])
    m = np.clip(m, 0.0, 1.0)
    out = np.full((c, c), np.nan, dtype=np.float64)
    idx = np.array([pos.get(s, -1) if s is not None else -1 for s in mapping.synsets], dtype=np.int64)
    ok = np.flatnonzero(idx >= 0)
    out[np.ix_(ok, ok)] = m[np.ix_(idx[ok], idx[ok])]
    return out


def blend_similarity(wordnet_sim: np.ndarray, text_sim: np.ndarray, text_weight: float = 0.5) -> np.ndarray:
    r"""WordNet similarity "updated with a BERT model": ``(C, C)`` float64 in [0, 1].

    .. math:: S_{ij} = (1 - w)\, S^{wn}_{ij} + w\, \max(S^{text}_{ij}, 0)

    with ``w = text_weight``; where :math:`S^{wn}_{ij}` is NaN (a category without a synset)
    :math:`S_{ij} = \max(S^{text}_{ij}, 0)`. The result is symmetrised, clipped to [0, 1] and
    given a diagonal of 1. The slides (paper 003, "Update WordNet Similarity with Bert Model")
    show no formula; this convex blend is our reading, with ``text_weight`` the knob
    (0: WordNet only where it has an answer; 1: text only). Negative cosines are cut at 0
    because WordNet similarities are never negative: "unrelated" is 0 on both scales.

    Parameters
    ----------
    wordnet_sim
        ``(C, C)`` WordNet similarity in [0, 1], NaN for unmapped pairs
        (:func:`wordnet_similarity`).
    text_sim
        ``(C, C)`` cosine similarity of the names' text embeddings
        (:func:`simlabel.semantics.names.label_similarity`), finite.
    text_weight
        ``w`` in [0, 1].
    """
    wn = np.asarray(wordnet_sim, dtype=np.float64)
    tx = np.asarray(text_sim, dtype=np.float64)
    if wn.ndim != 2 or wn.shape[0] != wn.shape[1]:
        raise InputError(f"wordnet_sim must be a square (C, C) matrix; got shape {wn.shape}")
    if tx.shape != wn.shape:
        raise InputError(f"text_sim has shape {tx.shape}; wordnet_sim has {wn.shape}")
    if np.isinf(wn).any():
        raise InputError("wordnet_sim has infinite values (use NaN for unmapped categories)")
    if not np.isfinite(tx).all():
        raise InputError("text_sim has non-finite values")
    w = float(text_weight)
    if not (0.0 <= w <= 1.0) or math.isnan(w):
        raise InputError(f"text_weight must lie in [0, 1]; got {text_weight}")
    t = np.maximum(tx, 0.0)
    s = np.where(np.isnan(wn), t, (1.0 - w) * np.nan_to_num(wn, nan=0.0) + w * t)
    s = np.clip(0.5 * (s + s.T), 0.0, 1.0)
    np.fill_diagonal(s, 1.0)
    return s


# -- the whole pipeline -------------------------------------------------------------------------


def _matrix_to_json(a: np.ndarray | None) -> list | None:
    if a is None:
        return None
    return [[None if math.isnan(v) else float(v) for v in row] for row in np.asarray(a, dtype=np.float64).tolist()]


def _matrix_from_json(rows: Any, c: int, what: str, where: str) -> np.ndarray:
    try:
        a = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {what} is not a matrix of numbers: {e}") from e
    if a.shape != (c, c):
        raise InputError(f"{where}: {what} has shape {a.shape}; expected ({c}, {c})")
    return a


@dataclass
class CategorySemantics:
    """Category semantic relationships: the synsets, the similarities and the ``K`` nearest.

    Attributes
    ----------
    names
        the category names.
    mapping
        their WordNet synsets (:func:`map_categories`).
    wordnet
        ``(C, C)`` WordNet similarity, NaN for unmapped categories.
    text
        ``(C, C)`` text-encoder cosine similarity of the names, or ``None``.
    similarity
        ``(C, C)`` the blended similarity in [0, 1] (:func:`blend_similarity`).
    neighbors
        ``(C, K)`` int64, the ``K`` most similar categories of each, most similar
        first (itself excluded).
    params
        how it was made (measure, text_weight, k, sense, text_encoder, ic).
    """

    names: list[str]
    mapping: CategoryMapping
    wordnet: np.ndarray
    text: np.ndarray | None
    similarity: np.ndarray
    neighbors: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def index(self, category: int | str) -> int:
        """Position of a category given by name or position."""
        if isinstance(category, (int, np.integer)):
            i = int(category)
            if not -len(self.names) <= i < len(self.names):
                raise IndexError(f"category {i} out of range for {len(self.names)} categories")
            return i % len(self.names)
        try:
            return self.names.index(category)
        except ValueError:
            raise KeyError(f"unknown category {category!r}") from None

    def related(self, category: int | str) -> list[str]:
        """The names of the ``K`` nearest categories of ``category`` (name or position), most similar first."""
        return [self.names[j] for j in self.neighbors[self.index(category)]]

    def to_frame(self) -> pd.DataFrame:
        """A review table, one row per category: ``category, synset, how``, then
        ``neighbor_1, similarity_1, ..., neighbor_K, similarity_K``."""
        import pandas as pd

        data: dict[str, list] = {
            "category": list(self.names),
            "synset": list(self.mapping.synsets),
            "how": list(self.mapping.how),
        }
        rows = np.arange(len(self.names))[:, None]
        sims = self.similarity[rows, self.neighbors] if self.neighbors.size else np.zeros_like(self.neighbors, dtype=float)
        for r in range(self.neighbors.shape[1]):
            data[f"neighbor_{r + 1}"] = [self.names[j] for j in self.neighbors[:, r]]
            data[f"similarity_{r + 1}"] = sims[:, r].astype(np.float64)
        return pd.DataFrame(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "simlabel.category_semantics",
            "version": 1,
            "names": list(self.names),
            "mapping": self.mapping.to_dict(),
            "wordnet": _matrix_to_json(self.wordnet),
            "text": _matrix_to_json(self.text),
            "similarity": _matrix_to_json(self.similarity),
            "neighbors": np.asarray(self.neighbors, dtype=np.int64).tolist(),
            "params": dict(self.params),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically (NaN stored as ``null``)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CategorySemantics:
        """Read what :meth:`save` wrote; errors name the file."""
        import json

        p = Path(path)
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: category semantics file not found") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read category semantics JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("format") != "simlabel.category_semantics":
            raise InputError(f"{p}: not a category semantics file (no format 'simlabel.category_semantics')")
        try:
            names = list(obj["names"])
            m = obj["mapping"]
            mapping = CategoryMapping(
                names=list(m["names"]),
                synsets=list(m["synsets"]),
                how=list(m["how"]),
                candidates=[list(x) for x in m["candidates"]],
            )
            c = len(names)
            wn = _matrix_from_json(obj["wordnet"], c, "wordnet", str(p))
            text = None if obj.get("text") is None else _matrix_from_json(obj["text"], c, "text", str(p))
            sim = _matrix_from_json(obj["similarity"], c, "similarity", str(p))
            nbr = np.asarray(obj["neighbors"], dtype=np.int64).reshape(c, -1)
        except (KeyError, TypeError) as e:
            raise InputError(f"{p}: malformed category semantics file: {e!r}") from e
        if mapping.names != names:
            raise InputError(f"{p}: the mapping's names differ from the file's names")
        if nbr.size and (nbr.min() < 0 or nbr.max() >= c):
            raise InputError(f"{p}: neighbour indices out of range for {c} categories")
        params = dict(obj.get("params") or {})
        return cls(names=names, mapping=mapping, wordnet=wn, text=text, similarity=sim, neighbors=nbr, params=params)


def category_semantics(
    names: Sequence[str],
    *,
    measure: str = "wup",
    text_weight: float = 0.5,
    k: int = 5,
    text_encoder: TextEncoder | str | Callable[[list[str]], np.ndarray] | None = "minilm",
    text_similarity: np.ndarray | None = None,
    overrides: Mapping[str, str | None] | None = None,
    sense: str = "context",
    ic: str = "brown",
    device: str = "auto",
    reader: WordNetCorpusReader | None = None,
) -> CategorySemantics:
    """Paper 003's category semantic relationships, end to end.

    1. :func:`map_categories` (``overrides``, ``sense``);
    2. :func:`wordnet_similarity` (``measure``, ``ic`` for Lin);
    3. the names' text similarity: ``text_similarity`` if given (``(C, C)``), else the
       cosine of :func:`~simlabel.semantics.names.embed_label_names` with ``text_encoder``
       (a spec such as ``"minilm"`` built on ``device``, an encoder object, or any callable
       ``list[str] -> (C, d)``), blended in with :func:`blend_similarity` (``text_weight``):
       ``S = (1 - w) S_wn + w max(S_text, 0)``, ``max(S_text, 0)`` alone where a category has
       no synset; with ``text_encoder=None`` (and no ``text_similarity``) WordNet alone,
       unmapped pairs 0, the diagonal 1;
    4. the ``k`` nearest categories of each (:func:`~simlabel.semantics.names.nearest_labels`,
       ``k`` clipped to ``C - 1``).

    Parameters
    ----------
    names : sequence of str
        The category names: distinct, none blank.
    measure : {"wup", "lin", "path"}, default "wup"
        The WordNet similarity: Wu-Palmer, Lin (information content of ``ic``) or path.
    text_weight : float, default 0.5
        ``w`` in [0, 1], the weight of the text similarity in the blend (0: WordNet only
        where it has an answer; 1: text only).
    k : int, default 5
        How many nearest categories each keeps, >= 0 (clipped to ``C - 1``).
    text_encoder : TextEncoder, str, callable or None, default "minilm"
        What embeds the names when no ``text_similarity`` is given: a text-encoder spec, an
        encoder object, or a callable ``list[str] -> (C, d)``; ``None``: no text similarity.
    text_similarity : ndarray of shape (C, C), optional
        A precomputed text similarity of the names, in the order of ``names`` (finite).
    overrides : mapping of str to str or None, optional
        An explicit synset name per category (``{"Trunk": "trunk.n.02"}``); an empty string or
        ``None`` leaves that category unmapped (:func:`read_overrides` reads them from a CSV).
    sense : {"first", "context"}, default "context"
        How a category's sense is chosen (:func:`map_categories`): WordNet's most frequent
        sense, or the one closest to the senses of the other categories.
    ic : str, default "brown"
        The information-content corpus of the Lin measure (ignored by the others).
    device : str, default "auto"
        Where a ``text_encoder`` given as a spec runs (``cpu``, ``cuda``, ``auto``).
    reader : WordNetCorpusReader, optional
        An nltk WordNet reader (default :func:`simlabel.semantics.wordnet.wordnet_reader`).

    Returns
    -------
    CategorySemantics
        ``names``, ``mapping`` (the synsets), ``wordnet`` (NaN for unmapped categories),
        ``text`` (``None`` without one), ``similarity`` (``(C, C)`` in [0, 1]), ``neighbors``
        (``(C, k)`` int64, most similar first, itself excluded) and ``params`` (how it was
        made); save and load as JSON, a review table with :meth:`CategorySemantics.to_frame`.

    Raises
    ------
    InputError
        Names that are empty, blank or given twice; ``k`` < 0; an unknown ``sense`` or
        ``measure``; an override that is not a noun synset of WordNet; ``text_similarity``
        not ``(C, C)`` or not finite; ``text_weight`` outside [0, 1]; an unknown
        ``text_encoder`` spec or ``device``; a text encoder that returns other than one
        finite, non-zero row per name.
    ModelError
        The text encoder's model cannot be loaded or run (a missing package or model
        folder, ``cuda`` without a CUDA device).
    TypeError
        ``names`` a single string, or a name that is not a ``str``.
    WordNetUnavailable
        (:class:`~simlabel.semantics.wordnet.WordNetUnavailable`) nltk, WordNet or the
        information-content file ``ic`` cannot be found.

    See Also
    --------
    map_categories, wordnet_similarity, blend_similarity : The three steps.

    Examples
    --------
    WordNet is read from disk (about 1.5 s the first time), so these lines are not run:

    >>> from simlabel import category_semantics
    >>> names = ["Casual Shoes", "Flats", "Handbags", "Tshirts", "Shirts"]
    >>> sem = category_semantics(names, k=2, text_encoder=None)  # doctest: +SKIP
    >>> sem.mapping.synsets  # doctest: +SKIP
    ['shoe.n.01', 'flats.n.01', 'bag.n.04', 'jersey.n.03', 'shirt.n.01']
    >>> sem.related("Tshirts")  # doctest: +SKIP
    ['Shirts', 'Casual Shoes']
    >>> sem.save("categories.json")  # doctest: +SKIP
    """
    names = check_names(names, "category name")
    if k < 0:
        raise InputError(f"k must be >= 0; got {k}")
    reader = _reader(reader)
    mapping = map_categories(names, overrides=overrides, sense=sense, reader=reader)
    wn = wordnet_similarity(mapping, measure, ic, reader=reader)
    text: np.ndarray | None = None
    encoder_name: str | None = None
    if text_similarity is not None:
        text = np.asarray(text_similarity, dtype=np.float64)
        if text.shape != wn.shape:
            raise InputError(f"text_similarity has shape {text.shape}; expected {wn.shape} for {len(names)} categories")
        encoder_name = "precomputed"
    elif text_encoder is not None:
        text = label_similarity(embed_label_names(names, text_encoder, device=device))
        encoder_name = text_encoder if isinstance(text_encoder, str) else type(text_encoder).__name__
    if text is not None:
        sim = blend_similarity(wn, text, text_weight)
    else:
        sim = np.nan_to_num(wn, nan=0.0)
        np.fill_diagonal(sim, 1.0)
    nbr = nearest_labels(sim, k)
    params = {
        "measure": measure,
        "ic": ic if measure == "lin" else None,
        "text_weight": float(text_weight) if text is not None else 0.0,
        "k": int(nbr.shape[1]),
        "sense": sense,
        "text_encoder": encoder_name,
        "overrides": len(overrides or {}),
    }
    return CategorySemantics(
        names=names, mapping=mapping, wordnet=wn, text=text, similarity=sim, neighbors=nbr, params=params
    )
