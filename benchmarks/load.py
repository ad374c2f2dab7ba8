"""Load: compile time and peak memory of one optimizer step on big trees, optix vs optax.

  python benchmarks/load.py                 # 10,000 leaves and ~200M params, 5 optimizers
  python benchmarks/load.py --quick         # 2,000 leaves and ~20M params

Trees: LEAVES small arrays of mixed shapes (a model with many tiny parameters: norms,
biases, per-head tensors), and a ~200M-parameter transformer-like tree (24 blocks of
4 matrices 1024x2048 plus norms and a 32000x1024 embedding). Only the step is compiled
(``jit(update + apply_updates).lower(abstract).compile()`` on ``ShapeDtypeStruct``s, params
and state donated): nothing of size 200M is allocated. Columns: compile seconds
(lower + compile, wall clock, one run: a shared machine adds noise), fusions in the compiled
step (kernels), optimized HLO size in kB, peak GiB of the step from
``compiled.memory_analysis()`` (arguments + non-aliased outputs + temporaries: params, grads,
state and scratch) and the state size in GiB. Process peak RSS is printed at the end.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import common  # noqa: E402
import optix  # noqa: E402

GIB = 2.0 ** 30


def many_leaves(n: int, seed: int = 0):
  """n leaves of sizes 1..4096 (shapes like biases, norm scales, small kernels)."""
  rng = np.random.default_rng(seed)
  shapes = [(), (8,), (64,), (16, 16), (3, 3, 4, 8), (256,), (32, 128), (4096,)]
  picks = rng.integers(0, len(shapes), n)
  return {f"layer_{i:05d}": jax.ShapeDtypeStruct(shapes[k], jnp.float32)
          for i, k in enumerate(picks)}


def big_model(blocks: int = 24, d: int = 1024, ff: int = 2048, vocab: int = 32000):
  """~200M params (blocks=24, d=1024, ff=2048, vocab=32000: 234M)."""
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  tree = {"embed": f32(vocab, d), "final_norm": f32(d)}
  for b in range(blocks):
    tree[f"block_{b:02d}"] = {"qkv": f32(d, ff), "out": f32(ff, d), "up": f32(d, ff),
                              "down": f32(ff, d), "norm1": f32(d), "norm2": f32(d)}
  return tree


OPTIMIZERS = {
    "adamw": (lambda m: m.adamw(1e-3, weight_decay=0.1)),
    "adam": (lambda m: m.adam(1e-3)),
    "lion": (lambda m: m.lion(1e-4, weight_decay=0.1)),
    "sgd_momentum": (lambda m: m.sgd(1e-2, momentum=0.9)),
    "adafactor": (lambda m: m.adafactor(1e-3)),
}


def measure(tx, abstract_params):
  """Compiles one donated step; returns a dict of the numbers."""
  state = jax.eval_shape(tx.init, abstract_params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  t = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(abstract_params, state,
                                                         abstract_params).compile()
  seconds = time.perf_counter() - t
  hlo = compiled.as_text()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return {"compile_s": seconds, "fusions": common.fusion_count(hlo), "hlo_kb": len(hlo) / 1e3,
          "peak_gib": common.peak_mb(compiled) * 1e6 / GIB, "state_gib": state_bytes / GIB}


def rows_for(tree_name, abstract, optimizers, packed):
  n_params = sum(x.size for x in jax.tree.leaves(abstract))
  rows = []
  for name in optimizers:
    libs = [("optax", OPTIMIZERS[name](optax)), ("optix", OPTIMIZERS[name](optix))]
    if packed and name != "adafactor":  # adafactor is not elementwise: packed refuses it
      libs.append(("optix packed", optix.packed(OPTIMIZERS[name](optix))))
    for lib, tx in libs:
      r = measure(tx, abstract)
      rows.append([tree_name, f"{n_params / 1e6:.1f}M", name, lib, f"{r['compile_s']:.2f}",
                   r["fusions"], f"{r['hlo_kb']:.0f}", f"{r['peak_gib']:.3f}",
                   f"{r['state_gib']:.3f}"])
      print(" | ".join(map(str, rows[-1])), flush=True)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="2,000 leaves and ~20M params")
  ap.add_argument("--leaves", type=int, default=None)
  ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  ap.add_argument("--skip-big", action="store_true")
  args = ap.parse_args()
  leaves = args.leaves or (2000 if args.quick else 10_000)
  optimizers = args.optimizers.split(",")
  print(common.machine())
  rows = rows_for(f"{leaves} leaves", many_leaves(leaves), optimizers, packed=True)
  if not args.skip_big:
    big = big_model(blocks=2, vocab=4000) if args.quick else big_model()
    rows += rows_for("transformer", big, optimizers, packed=False)
  print(common.table("Load: one compiled step (params + state donated)", rows,
                     ["tree", "params", "optimizer", "library", "compile s", "fusions",
                      "HLO kB", "peak GiB", "state GiB"]))
  print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB")


if __name__ == "__main__":
  main()
