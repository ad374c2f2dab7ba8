"""First-compile time of one optimizer step vs AdamW, on a model of many distinct leaf shapes.

The model: ``--leaves`` 2-D leaves whose two sizes are drawn (fixed seed) between 16 and 300,
so almost every leaf has its own shape, plus a few 1-D biases and one 3-D leaf. For each
optimizer, ``jax.jit(step).lower(...).compile()`` of one ``tx.update`` + ``apply_updates``
step is timed on a fresh ``jax.jit`` (so nothing is cached between repeats), the optimizers
interleaved in every round so load spikes hit all of them; reported: the median, and the ratio
to AdamW's median *of the same run* (the machine is shared: compare ratios within one run).
With ``--steady`` the compiled step's run time is timed as well (median of 5 calls after one
warm-up call). The state's bytes are reported too (what the optimizer keeps per model).

  python benchmarks/compile_time.py [--leaves 100] [--repeats 3]
      [--optimizers adamw,shampoo,soap,muon,psgd_kron] [--steady] [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import optix  # noqa: E402

OPTIMIZERS = {
    "adamw": lambda: optix.adamw(1e-3),
    "shampoo": lambda: optix.shampoo(1e-3),
    "soap": lambda: optix.soap(1e-3),
    "muon": lambda: optix.muon(0.02, adam_learning_rate=1e-3),
    # one Newton–Schulz computation per exact shape (the default pads nearby shapes to one)
    "muon_unpadded": lambda: optix.muon(0.02, adam_learning_rate=1e-3, pad_shapes=False),
    "psgd_kron": lambda: optix.psgd_kron(1e-3),
}


def model(leaves, seed=0):
  """``leaves`` 2-D shapes with sides in [16, 300], 4 biases and one 3-D leaf (abstract)."""
  rng = np.random.default_rng(seed)
  shapes = {f"w{i:03d}": tuple(int(v) for v in rng.integers(16, 301, size=2))
            for i in range(leaves)}
  shapes.update({f"b{i}": (int(rng.integers(16, 301)),) for i in range(4)})
  shapes["conv"] = (3, 3, int(rng.integers(16, 65)), int(rng.integers(16, 65)))
  return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}


def step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optix.apply_updates(params, updates), state
  return step


def compile_once(tx, params):
  state = jax.eval_shape(tx.init, params)
  t0 = time.perf_counter()
  compiled = jax.jit(step_fn(tx), donate_argnums=(0, 1)).lower(params, state, params).compile()
  return time.perf_counter() - t0, compiled, state


def nbytes(tree):
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def steady(compiled, params, state, reps=5):
  key = jax.random.key(0)
  concrete = lambda tree: jax.tree.map(
      lambda s: jax.random.normal(key, s.shape, s.dtype) * 0.01, tree)
  p, g = concrete(params), concrete(params)
  s = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), state)
  s = jax.tree.map(lambda z, x: z.astype(x.dtype), s, state)
  p, s = compiled(p, s, g)
  jax.block_until_ready(p)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    p, s = compiled(p, s, g)
    jax.block_until_ready((p, s))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--leaves", type=int, default=100)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  ap.add_argument("--steady", action="store_true", help="also time the compiled step")
  ap.add_argument("--json", default=None, help="write the results to this file")
  args = ap.parse_args(argv)
  names = args.optimizers.split(",")
  for n in names:
    if n not in OPTIMIZERS:
      ap.error(f"unknown optimizer {n!r}; choose from {', '.join(OPTIMIZERS)}")
  params = model(args.leaves)
  distinct = len({p.shape for p in params.values()})
  print(f"# compile time: {len(params)} leaves ({distinct} distinct shapes), "
        f"{nbytes(params) / 2 ** 20:.1f} MiB params; {common.machine()}")
  times = {n: [] for n in names}
  result = {n: {} for n in names}
  for r in range(args.repeats):
    for n in names:
      t, compiled, state = compile_once(OPTIMIZERS[n](), params)
      times[n].append(t)
      if r == 0:
        result[n]["state_bytes"] = nbytes(state)
        if args.steady:
          result[n]["step_s"] = steady(compiled, params, state)
      del compiled
  base = statistics.median(times["adamw"]) if "adamw" in times else float("nan")
  head = "| optimizer | compile s (median) | min s | × adamw | state MiB |"
  if args.steady:
    head += " step ms |"
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  for n in names:
    med = statistics.median(times[n])
    result[n].update(compile_s=times[n], compile_median_s=med, ratio_to_adamw=med / base)
    row = (f"| {n} | {med:.2f} | {min(times[n]):.2f} | {med / base:.2f} | "
           f"{result[n]['state_bytes'] / 2 ** 20:.2f} |")
    if args.steady:
      row += f" {result[n]['step_s'] * 1e3:.1f} |"
    print(row)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"leaves": len(params), "distinct_shapes": distinct, "machine": common.machine(),
                 "results": result}, f, indent=1)


if __name__ == "__main__":
  main()
