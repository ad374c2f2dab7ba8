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
  assert binaries == _on_disk("examples/*.py") + _on_disk("benchmarks/*.py")
