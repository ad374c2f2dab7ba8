"""Muon step time: optix.muon vs optax.contrib.muon on 12 x (512 x 512) fp32.

One process, every step jitted with params and state donated; after a warm-up
the libraries are timed in interleaved repetitions (so machine noise hits all
of them alike) and the min and median are printed, with the achieved GFLOP/s
of the Newton–Schulz matmuls (5 steps x 3 matmuls of 2·n³ per matrix) and the
fp32 matmul rate measured in the same process right before.

With ``--devices N`` (8 by default; simulated CPU devices on a CPU host) it also
times ``optix.muon(..., mesh=mesh)``, whose Newton–Schulz work is split over the
N devices (params and grads replicated), and prints each compiled step's flops
per device from ``compiled.cost_analysis()``. Simulated CPU devices share the
host's cores, so expect no speedup there: the point is the per-device work.

  python benchmarks/muon.py [--layers 12] [--size 512] [--reps 15] [--devices 8]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import optix


def _step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def _matmul_rate(n, batch, reps=5):
  x = jax.random.normal(jax.random.key(9), (batch, n, n))
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(x))
  best = min(_timed(lambda: f(x)) for _ in range(reps))
  return 2 * batch * n ** 3 / best / 1e9


def _timed(thunk):
  t0 = time.perf_counter()
  jax.block_until_ready(thunk())
  return time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--layers", type=int, default=12)
  ap.add_argument("--size", type=int, default=512)
  ap.add_argument("--reps", type=int, default=15)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--devices", type=int, default=8,
                  help="simulated CPU devices for the split run (0: no split run)")
  args = ap.parse_args()
  if args.devices:  # affects only the CPU backend
    jax.config.update("jax_num_cpu_devices", args.devices)
  n, L = args.size, args.layers

  keys = jax.random.split(jax.random.key(0), L)
  make = lambda: {f"layer{i}": jax.random.normal(k, (n, n)) / n ** 0.5
                  for i, k in enumerate(keys)}
  grads = optix.testing.random_like(jax.random.key(1), make())
  candidates = {
      "optax.contrib.muon": optax.contrib.muon(0.02, adam_learning_rate=1e-3),
      "optix.muon (fp32)": optix.muon(0.02, adam_learning_rate=1e-3, compute_dtype=jnp.float32),
      "optix.muon (bf16 matmuls)": optix.muon(0.02, adam_learning_rate=1e-3,
                                              compute_dtype=jnp.bfloat16),
  }
  split = None
  if args.devices and jax.device_count() > 1:
    mesh = jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    split = f"optix.muon (fp32, split /{mesh.size})"
    candidates[split] = optix.muon(0.02, adam_learning_rate=1e-3, compute_dtype=jnp.float32,
                                   mesh=mesh)
    replicated = NamedSharding(mesh, P())
    split_grads = jax.device_put(grads, replicated)
  runs, flops_per_device = {}, {}
  for name, tx in candidates.items():
    params = make()
    g = grads
    if name == split:
      params, g = jax.device_put(params, replicated), split_grads
      runs[name] = [_step_fn(tx), params, jax.jit(tx.init, out_shardings=replicated)(params), g]
    else:
      runs[name] = [_step_fn(tx), params, tx.init(params), g]

  def one(name):
    step, params, state, g = runs[name]
    t0 = time.perf_counter()
    params, state = step(params, state, g)
    jax.block_until_ready((params, state))
    runs[name][1:3] = [params, state]
    return time.perf_counter() - t0

  compile_s = {}
  for name in runs:
    compile_s[name] = one(name)
    for _ in range(args.warmup - 1):
      one(name)
  peak_before = _matmul_rate(n, L)
  times = {name: [] for name in runs}
  for _ in range(args.reps):
    for name in runs:  # interleaved
      times[name].append(one(name))
  peak_after = _matmul_rate(n, L)
  for name, (step, *step_args) in runs.items():
    cost = step.lower(*step_args).compile().cost_analysis()
    flops_per_device[name] = (cost or {}).get("flops", float("nan"))

  flops = L * 5 * 3 * 2 * n ** 3
  ref = "optax.contrib.muon"
  ref_min, ref_med = min(times[ref]), float(np.median(times[ref]))
  print(f"Muon step, {L} x ({n} x {n}) fp32, donated, {args.reps} interleaved reps "
        f"({jax.devices()[0].platform}, jax {jax.__version__}, optax {optax.__version__})")
  print(f"fp32 batched matmul rate in this process: {peak_before:.0f} GFLOP/s before, "
        f"{peak_after:.0f} after (the machine's ~450 GFLOP/s peak when idle)")
  print(f"{'':28s}{'min ms':>9s}{'median ms':>11s}{'max ms':>9s}{'x optax (min)':>15s}"
        f"{'x optax (med)':>15s}{'GFLOP/s':>9s}{'first call s':>14s}{'GFLOP/dev':>11s}")
  for name, ts in times.items():
    lo, med, hi = min(ts), float(np.median(ts)), max(ts)
    print(f"{name:28s}{lo * 1e3:9.1f}{med * 1e3:11.1f}{hi * 1e3:9.1f}{lo / ref_min:15.2f}"
          f"{med / ref_med:15.2f}{flops / lo / 1e9:9.0f}{compile_s[name]:14.2f}"
          f"{flops_per_device[name] / 1e9:11.2f}")
  print(f"NS flops by formula: {flops / 1e9:.2f} GFLOP per step; GFLOP/dev is the compiled "
        "step's cost_analysis() (one device's program)")
  spread = {name: (max(ts) - min(ts)) / min(ts) for name, ts in times.items()}
  print("noise (max-min)/min: " + ", ".join(f"{k} {v:.0%}" for k, v in spread.items()))


if __name__ == "__main__":
  main()
