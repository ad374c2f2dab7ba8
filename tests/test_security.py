"""Security: optimizer checkpoints go through orbax (tensorstore + JSON metadata), never
pickle; a malformed or tampered checkpoint fails with an error and never runs code from it; the
optix package itself reads no files or configuration (nothing to exploit)."""

import ast
import io
import os
import pathlib
import pickle

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import optix
from registry import make_params

PACKAGE = pathlib.Path(optix.__file__).resolve().parent
PICKLE_MAGIC = tuple(bytes([0x80, proto]) for proto in range(2, 6))


def _state():
  params = make_params(0)
  tx = optix.chain(optix.clip_by_global_norm(1.0),
                   optix.apply_if_finite(optix.adamw8bit(1e-2, block_size=8, min_8bit_size=4)))
  state = tx.init(params)
  grads = optix.testing.random_like(jax.random.key(0), params)
  _, state = jax.jit(tx.update)(grads, state, params)
  return {"params": params, "opt_state": state}


@pytest.fixture
def no_pickle(monkeypatch):
  """Any use of pickle during the test fails loudly."""
  def refuse(*args, **kwargs):
    raise AssertionError("pickle used while saving or restoring a checkpoint")
  for name in ("load", "loads", "dump", "dumps"):
    monkeypatch.setattr(pickle, name, refuse)
  monkeypatch.setattr(pickle, "Unpickler", refuse)


def _save(path, tree):
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, tree)
    ckpt.wait_until_finished()


def _restore(path, like):
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, like))


def test_checkpoint_has_no_pickle_and_restores_without_it(tmp_path, no_pickle):
  tree = _state()
  _save(tmp_path / "ckpt", tree)
  files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
  assert files
  for p in files:
    assert p.suffix not in (".pkl", ".pickle", ".npy", ".npz"), p
    assert not p.read_bytes()[:2] in PICKLE_MAGIC, f"{p} looks like a pickle"
  restored = _restore(tmp_path / "ckpt", tree)
  jax.tree.map(np.testing.assert_array_equal, restored, tree)


def _tamper_targets(root):
  files = sorted(p for p in root.rglob("*") if p.is_file())
  metadata = [p for p in files if "metadata" in p.name.lower()]
  data = [p for p in files if p not in metadata]
  return metadata, data


@pytest.mark.parametrize("how", ["garbage_metadata", "pickle_payload_metadata",
                                 "truncated_data", "deleted_data"])
def test_tampered_checkpoint_raises_and_runs_no_code(tmp_path, how, no_pickle):
  tree = _state()
  root = tmp_path / "ckpt"
  _save(root, tree)
  metadata, data = _tamper_targets(root)
  marker = tmp_path / "pwned"

  class Exploit:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  if how == "garbage_metadata":
    for p in metadata:
      p.write_text("{not json")
  elif how == "pickle_payload_metadata":
    buf = io.BytesIO()
    pickle.Pickler(buf).dump(Exploit())  # the Pickler class itself is not patched
    for p in metadata + data:
      p.write_bytes(buf.getvalue())
  elif how == "truncated_data":
    for p in data:
      p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3])
  else:
    for p in data:
      p.unlink()
  with pytest.raises(Exception) as err:
    restored = _restore(root, tree)
    # Some damage may only show as wrong values: a silent wrong restore is a failure too.
    jax.tree.map(np.testing.assert_array_equal, restored, tree)
  assert not marker.exists(), "restoring a tampered checkpoint executed code"
  assert not isinstance(err.value, AssertionError) or "pickle" not in str(err.value), err.value
  assert str(err.value), "the error has no message"


def test_restoring_onto_another_optimizer_state_is_an_error(tmp_path):
  """A checkpoint of adamw's state restored as lion's (a different tree): orbax refuses."""
  params = make_params(0)
  _save(tmp_path / "ckpt", optix.adamw(1e-2).init(params))
  with pytest.raises((ValueError, KeyError, TypeError)):
    _restore(tmp_path / "ckpt", optix.chain(optix.clip(1.0), optix.lion(1e-3)).init(params))


_FORBIDDEN_BUILTINS = {"open", "eval", "exec", "compile", "__import__"}
_FORBIDDEN_METHODS = {"load", "loads", "fromfile", "loadtxt", "genfromtxt", "read_text",
                      "read_bytes", "system", "popen", "Popen"}
_FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "yaml",
                      "json", "subprocess"}


# The one reader of files in optix: tools.compare keeps its finished runs in the JSON file the
# user names (``out=``) and reads it back to resume. JSON decodes to plain data (no code runs),
# and the test of that module feeds it a malformed file.
_READS_FILES = {"compare.py"}


def test_optix_reads_no_files_or_config():
  """optix reads nothing from disk (checkpoints are the user's orbax calls), so it has no
  parser to feed malformed input: no open/eval/exec/pickle/np.load/json anywhere in optix/,
  except the results file of tools.compare (plain JSON, nothing else)."""
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    if path.name in _READS_FILES:
      text = path.read_text()
      assert not any(m in text for m in ("pickle", "eval(", "exec(", "yaml")), path
      continue
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None)
                                                else [])
        bad = [n for n in names if n.split(".")[0] in _FORBIDDEN_MODULES]
        if bad:
          found.append(f"{path.name}:{node.lineno} imports {bad}")
      elif isinstance(node, ast.Call):
        f = node.func
        if ((isinstance(f, ast.Name) and f.id in _FORBIDDEN_BUILTINS) or
            (isinstance(f, ast.Attribute) and f.attr in _FORBIDDEN_METHODS)):
          found.append(f"{path.name}:{node.lineno} calls {ast.unparse(f)}()")
      elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
        found.append(f"{path.name}:{node.lineno} passes allow_pickle")
  assert not found, "optix reads files/config or uses unsafe loaders:\n" + "\n".join(found)
