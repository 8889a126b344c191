"""Every public name of ``simlabel`` documents itself in numpydoc: what it takes (every parameter, no
unknown one), what it returns, what it raises, and an example; the examples that run, run."""

from __future__ import annotations

import doctest
import inspect
import re

import pytest
from numpydoc.docscrape import NumpyDocString
from numpydoc.validate import validate

import simlabel
from tests.helpers import ROOT

#: numpydoc's checks that every export passes: a docstring (GL08), a one-line summary (SS01), every
#: parameter documented (PR01) and none unknown (PR02), a Returns section for a function (RT01), an
#: Examples section (EX01), and well-formed parameter entries (PR06, PR10) and layout (GL02, GL03)
CHECKS = {"GL02", "GL03", "GL08", "PR01", "PR02", "PR06", "PR10", "RT01", "SS01", "EX01"}

EXPORTS = [name for name in simlabel.__all__ if name != "__version__"]


def _qualified(name: str) -> str:
    return f"{getattr(simlabel, name).__module__}.{name}"


def test_every_export_is_walked() -> None:
    # the list is simlabel.__all__ itself; a name there that does not resolve is an error too
    assert len(EXPORTS) > 50 and all(getattr(simlabel, n) is not None for n in EXPORTS)


def test_the_api_page_lists_every_export() -> None:
    page = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    listed = re.findall(r"^   (\w+)$", page, flags=re.M)
    assert sorted(listed) == sorted(EXPORTS), "docs/api.rst and simlabel.__all__ differ"


@pytest.mark.parametrize("name", EXPORTS)
def test_numpydoc_sections(name: str) -> None:
    obj = getattr(simlabel, name)
    found = [f"{code}: {message}" for code, message in validate(_qualified(name))["errors"] if code in CHECKS]
    assert not found, f"simlabel.{name}:\n" + "\n".join(found)
    if inspect.isfunction(obj):
        # what a caller must catch: every public function says what it raises
        raises = NumpyDocString(inspect.getdoc(obj))["Raises"]
        assert raises, f"simlabel.{name}: no Raises section"


@pytest.mark.parametrize("name", EXPORTS)
def test_examples_run(name: str) -> None:
    obj = getattr(simlabel, name)
    finder = doctest.DocTestFinder(recurse=False)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples, f"simlabel.{name}: no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"simlabel.{name}: {result.failed} example(s) failed (run with -s to see them)"
