"""The Bazel BUILD file stays in step with the files on disk."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _targets():
  """Parses BUILD (Starlark is Python syntax here) into {kind: {name: kwargs}}."""
  tree = ast.parse((ROOT / "BUILD").read_text())
  out = {}
  for node in tree.body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
      call = node.value
      if isinstance(call.func, ast.Name) and call.func.id not in ("load", "package"):
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                  if not isinstance(k.value, ast.Call)}
        out.setdefault(call.func.id, {})[kwargs["name"]] = kwargs
  return out


def _on_disk(pattern):
  return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))


def test_library_lists_every_module():
  srcs = sorted(_targets()["py_library"]["optix"]["srcs"])
  assert srcs == _on_disk("optix/**/*.py"), "BUILD py_library(optix) srcs differ from optix/"


def test_one_py_test_per_test_file():
  tests = _targets()["py_test"]
  declared = sorted(src for t in tests.values() for src in t["srcs"])
  assert declared == _on_disk("tests/test_*.py")
  for name, t in tests.items():
    assert name == pathlib.Path(t["srcs"][0]).stem, name
    assert t["args"] == [t["srcs"][0]], name


def test_support_and_examples_declared():
  targets = _targets()
  support = targets["py_library"]["test_support"]["srcs"]
  assert sorted(support) == sorted(set(_on_disk("tests/*.py")) - set(_on_disk("tests/test_*.py")))
  binaries = sorted(src for t in targets.get("py_binary", {}).values() for src in t["srcs"])
  assert binaries == sorted(_on_disk("examples/*.py") + _on_disk("benchmarks/*.py"))


def render() -> str:
  """The BUILD file the tree on disk calls for (``python tests/test_build.py --write``)."""
  lib = _on_disk("optix/**/*.py")
  tests = _on_disk("tests/test_*.py")
  support = sorted(set(_on_disk("tests/*.py")) - set(tests))
  binaries = _on_disk("examples/*.py") + _on_disk("benchmarks/*.py")
  listing = lambda xs: "\n".join(f'        "{x}",' for x in xs)
  out = ["# Bazel targets. tests/test_build.py keeps this file in step with the tree.",
         'load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")', "",
         'package(default_visibility = ["//visibility:public"])', "",
         f'py_library(\n    name = "optix",\n    srcs = [\n{listing(lib)}\n    ],\n'
         f'    data = [\n{listing(_on_disk("optix/**/*.cc"))}\n    ],\n'
         '    imports = ["."],\n)', "",
         f'py_library(\n    name = "test_support",\n    testonly = True,\n    srcs = [\n'
         f'{listing(support)}\n    ],\n    imports = ["tests"],\n    deps = [":optix"],\n)']
  for t in tests:
    out += ["", f'py_test(\n    name = "{pathlib.Path(t).stem}",\n    srcs = ["{t}"],\n'
            f'    args = ["{t}"],\n    main = "tests/pytest_main.py",\n'
            '    deps = [":test_support"],\n)']
  for b in binaries:
    out += ["", f'py_binary(\n    name = "{pathlib.Path(b).stem}",\n    srcs = ["{b}"],\n'
            '    deps = [":optix"],\n)']
  return "\n".join(out) + "\n"


def test_build_file_is_rendered():
  assert (ROOT / "BUILD").read_text() == render(), "run: python tests/test_build.py --write"


if __name__ == "__main__":
  import sys
  if sys.argv[1:] == ["--write"]:
    (ROOT / "BUILD").write_text(render())
