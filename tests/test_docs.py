"""The documentation builds without warnings, documents every public name, and its
guides' code runs."""

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


def test_sphinx_builds_without_warnings(tmp_path):
  sphinx_build = pytest.importorskip("sphinx.cmd.build")
  status = sphinx_build.build_main(["-W", "--keep-going", "-q", "-b", "html",
                                    "-d", str(tmp_path / "doctrees"), str(DOCS),
                                    str(tmp_path / "html")])
  assert status == 0
  assert (tmp_path / "html" / "index.html").exists()
