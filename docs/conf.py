"""Sphinx configuration for the optix documentation (``make docs``)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))

import optix  # noqa: E402

project = "optix"
author = "the optix developers"
copyright = "2026, the optix developers"
release = optix.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
autosummary_generate = True
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_typehints = "none"  # signatures carry optax/jax aliases that do not cross-reference
napoleon_google_docstring = True
html_theme = "furo"
html_title = f"optix {release}"
html_static_path = []
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
suppress_warnings = ["myst.header"]
nitpicky = False
