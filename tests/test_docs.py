"""The documentation builds without warnings, documents every public name, and its
guides' code runs."""

import importlib.util
import pathlib
import re
import types

import pytest

import optix

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_API = {"Params", "Updates", "OptState", "Schedule", "ScalarOrSchedule", "EmptyState",
           "GradientTransformationBase"}


def public_names():
  """Functions and classes of the flat namespace a user calls (state NamedTuples and type
  aliases excluded: they are documented with the transform that makes them)."""
  names = []
  for name in dir(optix):
    obj = getattr(optix, name)
    if (name.startswith("_") or isinstance(obj, types.ModuleType) or name in NOT_API
        or name.endswith("State") or not callable(obj)):
      continue
    names.append(name)
  return names


def documented_names():
  found = set()
  for page in (DOCS / "api").glob("*.rst"):
    module = "optix"
    for line in page.read_text().splitlines():
      if line.startswith(".. currentmodule::"):
        module = line.split("::")[1].strip()
      elif re.match(r"^   [A-Za-z_][\w.]*$", line):
        found.add(f"{module}.{line.strip()}")
  return found


def test_every_public_name_is_in_the_api_reference():
  missing = [n for n in public_names() if f"optix.{n}" not in documented_names()]
  assert not missing, f"add to docs/api/*.rst: {missing}"


def test_every_public_name_has_a_docstring():
  bare = [n for n in public_names() if not (getattr(optix, n).__doc__ or "").strip()]
  assert not bare, f"no docstring: {bare}"


@pytest.mark.parametrize("page", sorted((DOCS / "guides").glob("*.md")), ids=lambda p: p.stem)
def test_guide_snippets_run(page):
  scope = {}
  for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
    exec(compile(code, f"{page.name} snippet {i}", "exec"), scope)  # noqa: S102


def optimizer_names():
  """The optimizer aliases listed in docs/api/optimizers.rst (label functions excluded)."""
  names = []
  for line in (DOCS / "api" / "optimizers.rst").read_text().splitlines():
    if re.match(r"^   [a-z]\w*$", line) and not line.strip().endswith("_labels"):
      names.append(line.strip())
  return names


def test_sphinx_builds_without_warnings(tmp_path):
  sphinx_build = pytest.importorskip("sphinx.cmd.build")
  html = tmp_path / "html"
  status = sphinx_build.build_main(["-W", "--keep-going", "-q", "-b", "html",
                                    "-d", str(tmp_path / "doctrees"), str(DOCS), str(html)])
  assert status == 0
  assert (html / "index.html").exists()
  # Every optimizer page carries its measured state size, and the table has every optimizer.
  table = (html / "api" / "optimizers.html").read_text()
  assert "optix-memory-table" in table
  names = optimizer_names()
  assert {"adamw", "adafactor", "muon", "kfac"} <= set(names)
  for name in names:
    assert f"optix.{name}</p>" in table, f"{name} missing from the memory table"
    page = (html / "api" / "generated" / f"optix.{name}.html").read_text()
    assert "Memory per parameter" in page, f"no memory line on the {name} page"
  assert re.search(r"optix\.adamw</p></td>\s*<td><p></p></td>\s*<td><p>8\.00</p>", table)
  # Offline math: with sphinx-mathjax-offline installed (the docs extra), pages load the
  # bundled MathJax, never a CDN.
  page = (html / "api" / "generated" / "optix.adamw.html").read_text()
  if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
  else:
    assert "mathjax" in page.lower()


def test_sources_hold_no_control_characters():
  """A docstring written through a non-raw string turns ``\\beta``/``\\top`` into a backspace
  and a tab, which render as garbage: no control character but newline in optix/ sources."""
  root = DOCS.parent / "optix"
  bad = [f"{p.relative_to(root)}:{i + 1}" for p in sorted(root.rglob("*.py"))
         for i, line in enumerate(p.read_text().splitlines())
         if any(ord(c) < 32 for c in line)]
  assert not bad, bad
