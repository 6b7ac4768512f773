"""Sphinx configuration for hemoe_sk.

Build from the repository root with::

    python -m sphinx -b html docs docs/_build/html
"""

import os
import sys

# Document the working tree, not an installed copy.
sys.path.insert(0, os.path.abspath(".."))

import hemoe_sk  # noqa: E402

project = "hemoe_sk"
author = "hemoe_sk developers"
copyright = "hemoe_sk developers"
release = hemoe_sk.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

# autodoc / autosummary
autosummary_generate = True
autodoc_typehints = "none"

# numpydoc: one page per class with its methods; no autosummary stubs for
# every inherited sklearn method (set_params, get_metadata_routing, ...).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# No intersphinx: the build must work (and stay warning-free) offline.
nitpicky = False
templates_path = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

html_theme = "alabaster"
html_static_path = []
html_theme_options = {
    "description": (
        "Hierarchical, embedding-routed mixtures of experts for scikit-learn"
    ),
}
