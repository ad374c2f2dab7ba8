"""Sphinx configuration for the optix documentation (``make docs``)."""

import importlib.util
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from docutils import nodes  # noqa: E402
from docutils.parsers.rst import Directive  # noqa: E402

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
# Offline math: the `sphinx-mathjax-offline` package (PyPI, in the `docs` extra) ships
# MathJax 3 and its fonts and copies them into _build/html/_static/mathjax, so the pages
# render their formulas with no network. Without it the pages load MathJax from a CDN.
OFFLINE_MATHJAX = importlib.util.find_spec("sphinx-mathjax-offline") is not None
if OFFLINE_MATHJAX:
  extensions.append("sphinx-mathjax-offline")
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
autosummary_generate = True
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_typehints = "none"  # signatures carry optax/jax aliases that do not cross-reference
# Defaults as written in the source (`state_dtype=jnp.float32`, `decay_rate_fn=decay_rate_pow`),
# not their reprs (`<class ...>`, `<function ...>`).
autodoc_preserve_defaults = True
napoleon_google_docstring = True
html_theme = "furo"
html_title = f"optix {release}"
html_static_path = ["_static/css"]  # the stylesheet only (pictures are linked, not copied)
html_css_files = ["optix.css"]
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
suppress_warnings = ["myst.header"]
nitpicky = False


# -- Memory per parameter, measured at build time ---------------------------------------------
# Each optimizer's state is measured with optix.tools.state_memory (jax.eval_shape: nothing is
# allocated, ~3 s for the whole table) on two Flax-shaped float32 decoder trees, so the numbers
# cannot drift from the code. The table goes where `.. optix-memory-table::` stands, and one
# line is appended to each optimizer's own page.

def _decoder(width, layers, vocab):
  """A Flax-style decoder tree (``kernel``/``bias``/``scale``/``embedding``), untied head."""
  leaf = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  dense = lambda i, o: {"kernel": leaf(i, o), "bias": leaf(o)}  # noqa: E731
  layer = {"attn": {k: dense(width, width) for k in ("q", "k", "v", "o")},
           "mlp": {"up": dense(width, 4 * width), "down": dense(4 * width, width)},
           "norm1": {"scale": leaf(width)}, "norm2": {"scale": leaf(width)}}
  return {"embed": {"embedding": leaf(vocab, width)}, "layers": [layer] * layers,
          "norm": {"scale": leaf(width)}, "head": dense(width, vocab)}


MEMORY_MODELS = {
    "small LM (d=256, 4 layers, vocab 4096: 5.3M)": _decoder(256, 4, 4096),
    "GPT-2-small shapes (d=768, 12 layers, vocab 50304: 162M)": _decoder(768, 12, 50304),
}

# Conv kernels and stacked layers as matrices too (optix.muon's default: 2-D leaves only).
_FLAX_DIMS = optix.transforms.muon.flax_dimension_numbers()
MEMORY_OPTIMIZERS = [  # (alias, transform with default arguments, setting shown)
    ("sgd", optix.sgd(0.1), "momentum=None"),
    ("sgd", optix.sgd(0.1, momentum=0.9), "momentum=0.9"),
    ("adagrad", optix.adagrad(0.1), ""),
    ("rmsprop", optix.rmsprop(1e-3), ""),
    ("adam", optix.adam(1e-3), ""),
    ("adamw", optix.adamw(1e-3), ""),
    ("nadam", optix.nadam(1e-3), ""),
    ("nadamw", optix.nadamw(1e-3), ""),
    ("lion", optix.lion(1e-4), ""),
    ("adafactor", optix.adafactor(), "momentum=None"),
    ("adam8bit", optix.adam8bit(1e-3), ""),
    ("adamw8bit", optix.adamw8bit(1e-3), ""),
    ("muon", optix.muon(0.02, adam_learning_rate=1e-3,
                        muon_weight_dimension_numbers=_FLAX_DIMS), "every matrix to Muon"),
    ("muon", optix.muon(0.02, adam_learning_rate=1e-3, muon_weight_dimension_numbers=_FLAX_DIMS,
                        adam_mask=("embed", "head")), 'adam_mask=("embed", "head")'),
    ("shampoo", optix.shampoo(1e-3), "Adam graft"),
    ("soap", optix.soap(1e-3), ""),
    ("psgd_kron", optix.psgd_kron(1e-3), "diagonal factors for long or skewed axes"),
    ("kfac", optix.kfac(1e-3), "factors for every kernel"),
    ("lbfgs", optix.lbfgs(), "memory_size=10"),
]
# The other aliases at their defaults (a learning rate of 1e-3 where they take one).
MEMORY_OPTIMIZERS += [(name, getattr(optix, name)(1e-3), "") for name in (
    "schedule_free_adamw", "schedule_free_sgd", "dadapt_adamw", "dog", "dowg", "ademamix",
    "simplified_ademamix", "adopt", "mars_adamw", "cautious_adamw", "cautious_lion", "lamb",
    "lars", "radam", "adabelief", "yogi", "amsgrad", "adamax", "adamaxw", "novograd", "sm3",
    "fromage", "adan", "sign_sgd", "signum", "rprop", "adadelta", "polyak_sgd",
    "optimistic_gradient_descent", "optimistic_adam", "noisy_sgd", "madgrad", "momo",
    "momo_adam", "acprop", "optimistic_adam_v2", "galore", "sophia")]
MEMORY_OPTIMIZERS += [
    ("prodigy", optix.prodigy(), ""),
    ("cocob", optix.cocob(), ""),
    ("reduce_on_plateau", optix.reduce_on_plateau(), "the scale alone"),
    ("mechanize", optix.mechanize(optix.adamw(1e-3)), "around adamw"),
    ("sam", optix.sam(optix.sgd(1e-3), optix.sgd(1e-3)), "sgd and sgd"),
]

_memory_cache = []


def memory_rows():
  """[(alias, setting, [bytes/param per model])], computed once per build."""
  if not _memory_cache:
    for name, tx, setting in MEMORY_OPTIMIZERS:
      _memory_cache.append((name, setting, [optix.tools.state_memory(tx, tree).bytes_per_param
                                            for tree in MEMORY_MODELS.values()]))
  return _memory_cache


def _fmt(x):
  return f"{x:.2f}" if x >= 0.1 or x == 0 else f"{x:.3f}"


class MemoryTable(Directive):
  """``.. optix-memory-table::``: optimizer state in bytes per parameter, measured."""

  def run(self):
    table = nodes.table(classes=["optix-memory-table"])
    group = nodes.tgroup(cols=2 + len(MEMORY_MODELS))
    table += group
    for _ in range(2 + len(MEMORY_MODELS)):
      group += nodes.colspec(colwidth=1)

    def row(cells):
      r = nodes.row()
      for c in cells:
        r += nodes.entry("", nodes.paragraph(text=c))
      return r

    head = nodes.thead()
    head += row(["optimizer", "setting"] + list(MEMORY_MODELS))
    group += head
    body = nodes.tbody()
    for name, setting, values in memory_rows():
      body += row([f"optix.{name}", setting] + [_fmt(v) for v in values])
    group += body
    return [table]


def add_memory_line(app, what, name, obj, options, lines):
  """Appends the measured state size to each optimizer's own page."""
  del app, obj, options
  short = name.rsplit(".", 1)[-1]
  rows = [(setting, values) for alias, setting, values in memory_rows() if alias == short]
  if what != "function" or not name.startswith("optix.") or not rows:
    return
  sizes = "; ".join(f"{_fmt(v)} on the {model}" + (f" ({setting})" if len(rows) > 1 else "")
                    for setting, values in rows for model, v in zip(MEMORY_MODELS, values))
  lines += ["", f"**Memory per parameter** (optimizer state in bytes, default arguments, "
            f"measured by :func:`optix.tools.state_memory` at build time): {sizes}. "
            f"See the table in :doc:`/api/optimizers`.", ""]


def setup(app):
  app.add_directive("optix-memory-table", MemoryTable)
  app.connect("autodoc-process-docstring", add_memory_line)
  return {"parallel_read_safe": True}
