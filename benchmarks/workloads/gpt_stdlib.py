"""The flagship's byte-level GPT (``examples/compare_optimizers.py``: its corpus, model and loss)
on Python's standard-library source, made small: 1 block, d = 32, context 32, batch 16, 0.5 MB
of source; scored on a fixed validation set of later files."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.workloads import Workload, main

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "compare_optimizers.py"


def _example():
  spec = importlib.util.spec_from_file_location("compare_optimizers", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def workload(quick: bool = False, context: int = 32, d: int = 32, layers: int = 1,
             batch: int = 16) -> Workload:
  """byte-level GPT on the Python stdlib."""
  from flax import nnx
  ex = _example()
  train, val, _ = ex.load_corpus(0.5)
  vstarts = np.random.default_rng(1234).integers(0, len(val) - context - 1, size=(4, batch))
  val_batches = jnp.asarray(np.stack([[val[s:s + context + 1] for s in row] for row in vstarts]))
  graphdef, state = nnx.split(ex.GPT(256, context, d, layers, 2, nnx.Rngs(0)))

  def init(seed):
    return nnx.to_pure_dict(nnx.split(ex.GPT(256, context, d, layers, 2, nnx.Rngs(seed)))[1])

  def loss_fn(params, tokens):
    s = jax.tree.map(lambda x: x, state)
    nnx.replace_by_pure_dict(s, params)
    logits = nnx.merge(graphdef, s)(tokens[:, :-1])
    return jnp.mean(ex.cross_entropy(logits, tokens[:, 1:].astype(jnp.int32)))

  def batches(seed):
    rng = np.random.default_rng(seed)
    while True:
      starts = rng.integers(0, len(train) - context - 1, batch)
      yield np.stack([train[s:s + context + 1] for s in starts])

  return Workload("gpt_stdlib", f"byte-level GPT ({layers} block, d={d}, context {context}) on "
                  f"the Python stdlib, batch {batch}, validation cross-entropy", init, loss_fn,
                  batches, steps=150 if quick else 300,
                  learning_rates={"adamw": 1e-2, "lion": 1e-3, "muon": 1e-2, "soap": 1e-2,
                                  "sgd": 0.3,
                                  # Moved 3x from an end of their grid in the first run with them.
                                  "radam": 3e-2, "adamax": 3e-2, "adagrad": 0.3, "sign_sgd": 3e-3,
                                  "adadelta": 3.0, "rprop": 3e-3, "cocob": 0.33, "mechanize": 3.0},
                  eval_fn=lambda p: jnp.mean(jax.vmap(lambda t: loss_fn(p, t))(val_batches)))


if __name__ == "__main__":
  main(workload)
