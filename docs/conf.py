"""Sphinx configuration: the API pages come from the docstrings (numpydoc), the CLI page from each
command's ``--help`` (``cli_reference.py``), the guides from Markdown (MyST).

``make docs`` builds it with warnings as errors; ``make test`` runs it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # cli_reference.py
sys.path.insert(0, str(HERE.parent / "src"))

import simlabel  # noqa: E402

logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every fallback at INFO

project = "simlabel"
author = "the simlabel developers"
release = version = simlabel.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
# no network while building: cross-references to other projects stay plain text
intersphinx_mapping: dict = {}

autosummary_generate = True
templates_path = ["_templates"]  # a class page is its docstring: the methods scikit-learn adds are its to document
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# the numpydoc checks tests/test_docstrings.py runs, also at build time
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01", "EX01", "SS01"}
numpydoc_validation_exclude = {r"\.__\w+__$", r"^(?!simlabel\.)"}

myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]  # links to files of the repository (benchmarks/RESULTS.md) are not pages

html_theme = "furo"
html_title = f"simlabel {release}"


def _write_cli_page(app) -> None:
    import cli_reference

    cli_reference.write_page(HERE / "cli.md")


def setup(app) -> None:
    app.connect("builder-inited", _write_cli_page)
