"""Shampoo and SOAP step time vs AdamW, and the cost of one preconditioner refresh.

Table 1: 12 × (512 × 512) fp32 params. Each timed call runs 10 optimizer steps
in a ``lax.scan`` (params and state donated), so it contains exactly one refresh
(Shampoo: inverse 4th roots of 24 statistics; SOAP: power iteration + QR of 24
bases) -- the amortized cost at ``preconditioning_interval=10``; the per-step
figure is the call time / 10. Libraries are interleaved (benchmarks/common.py).

Table 2: the FLOP floor. The per-step matmuls (Shampoo: G Gᵀ, Gᵀ G and
L^{-1/4} M R^{-1/4}, 8 n³ flops per n×n matrix; one-sided Shampoo, G Gᵀ and
L^{-1/2} M, 4 n³; SOAP: the two statistics, G into
the eigenbasis and the update back out, 12 n³) divided by this machine's
measured batched-matmul throughput, against the measured per-step time: how close
the implementation is to what its matmuls alone cost. AdamW is memory-bound, so
Shampoo/SOAP ≤ 1.3× AdamW is out of reach on a CPU whenever floor > 1.3× AdamW.

With ``--distributed-shampoo DIR`` (a directory holding the ``optax_shampoo`` package of
Google's JAX Distributed Shampoo, e.g. ``pip install --no-deps --target DIR
optax-shampoo==0.0.6``), Table 1 also times it: at a refresh every 10 steps, and at its own
defaults (a refresh every step; timed one step per call). That 2022 code predates today's JAX;
:func:`load_distributed_shampoo` supplies the renamed APIs it calls, without changing its math.

Table 3: one refresh vs matrix size n (a stack of ``--batch`` n×n statistics):
inverse 4th root by eigh and by coupled Newton, SOAP's eigh and power-iteration+QR.

  python benchmarks/shampoo_soap.py [--layers 12] [--size 512] [--reps 5]
      [--sizes 128,256,512,1024] [--batch 2] [--distributed-shampoo DIR]
"""

import argparse
import importlib
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import optix  # noqa: E402
from optix.transforms import roots  # noqa: E402

INTERVAL = 10
ONE_SIDED = {2: {0: 0.5, 1: 0.0}}  # L^{-1/2} G: one statistic, one root, two matmuls a step


def load_distributed_shampoo(path):
  """``optax_shampoo.distributed_shampoo`` from ``path``, run against today's JAX: the tree
  functions it calls by their old names (``jax.tree_map`` ...), ``pjit.PartitionSpec``, and a
  ``lax.while_loop`` that gives the initial carry the types the loop body returns (its
  coupled-Newton loop starts a float carry from ``True``, which JAX no longer promotes)."""
  for old, new in (("tree_map", jax.tree.map), ("tree_flatten", jax.tree.flatten),
                   ("tree_unflatten", jax.tree.unflatten)):
    if not hasattr(jax, old):
      setattr(jax, old, new)
  from jax.experimental import pjit  # noqa: PLC0415
  if not hasattr(pjit, "PartitionSpec"):
    pjit.PartitionSpec = jax.sharding.PartitionSpec
  sys.path.insert(0, os.path.abspath(path))
  ds = importlib.import_module("optax_shampoo.distributed_shampoo")

  def while_loop(cond_fun, body_fun, init_val):
    out = jax.eval_shape(body_fun, init_val)
    init_val = jax.tree.map(lambda x, o: jnp.asarray(x, o.dtype), init_val, out)
    return jax.lax.while_loop(cond_fun, body_fun, init_val)
  ds.lax = types.SimpleNamespace(**{k: getattr(jax.lax, k) for k in dir(jax.lax)
                                    if not k.startswith("__")})
  ds.lax.while_loop = while_loop
  return ds.distributed_shampoo


def _ten_steps(tx, steps=INTERVAL):
  def fn(params, state, grads):
    def body(carry, i):
      p, s = carry
      g = jax.tree.map(lambda x: x * (1 + 0.01 * i), grads)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (params, state), _ = jax.lax.scan(body, (params, state), jnp.arange(steps, dtype=jnp.float32))
    return params, state, grads
  return fn


def _candidate(name, tx, layers, size, steps=INTERVAL, start=INTERVAL):
  """``steps`` optimizer steps per timed call, after ``start`` steps (one refresh per call at
  ``steps = INTERVAL``)."""
  def make():
    keys = jax.random.split(jax.random.key(0), 2 * layers)
    params = {f"w{i}": 0.02 * jax.random.normal(keys[i], (size, size)) for i in range(layers)}
    grads = {f"w{i}": jax.random.normal(keys[layers + i], (size, size)) for i in range(layers)}
    state = tx.init(params)
    # Past the first step (SOAP's eigh) and aligned so each call holds one refresh.
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p)))
    for _ in range(start):
      params, state = step(params, state, grads)
    return params, state, grads
  c = common.Candidate(name, _ten_steps(tx, steps), make)
  c.steps = steps
  return c


def step_table(layers, size, reps, distributed_shampoo=None):
  cands = [
      _candidate("optax.adamw", optax.adamw(1e-3, weight_decay=0.01), layers, size),
      _candidate("optix.adamw", optix.adamw(1e-3, weight_decay=0.01), layers, size),
      _candidate("optix.shampoo (defaults)", optix.shampoo(1e-3), layers, size),
      _candidate("optix.shampoo (eigh)",
                 optix.shampoo(1e-3, preconditioning_interval=INTERVAL,
                               start_preconditioning_step=0, weight_decay=0.01), layers, size),
      _candidate("optix.shampoo (newton)",
                 optix.shampoo(1e-3, preconditioning_interval=INTERVAL,
                               start_preconditioning_step=0, root_method="newton",
                               weight_decay=0.01), layers, size),
      _candidate("optix.shampoo one-sided",
                 optix.shampoo(1e-3, preconditioning_interval=INTERVAL,
                               start_preconditioning_step=0, weight_decay=0.01,
                               inverse_exponent_override=ONE_SIDED), layers, size),
      _candidate("optix.soap", optix.soap(3e-3, preconditioning_interval=INTERVAL,
                                          weight_decay=0.01), layers, size),
  ]
  if distributed_shampoo is not None:
    # block_size is required; any >= size leaves these matrices whole, as optix's 1024 does.
    cands += [
        _candidate("distributed_shampoo, refresh every 10",
                   distributed_shampoo(1e-3, block_size=1024,
                                       preconditioning_compute_steps=INTERVAL), layers, size),
        _candidate("distributed_shampoo (its defaults: refresh every step)",
                   distributed_shampoo(1e-3, block_size=1024), layers, size, steps=1, start=5),
    ]
  common.run(cands, reps=reps, warmup=1)
  base = min(cands[0].times) / INTERVAL
  rows = []
  for c in cands:
    lo, med = common.ms(c)
    rows.append([c.name, lo / c.steps, med / c.steps, min(c.times) / c.steps / base, c.compile_s])
  table = common.table(
      f"Optimizer step, {layers} x ({size} x {size}) fp32, refresh every {INTERVAL} steps "
      "(amortized: one 10-step scan / 10)",
      rows, ["optimizer", "min ms/step", "median ms/step", "x optax.adamw", "compile s"])
  return table, {c.name: min(c.times) / c.steps for c in cands}


def matmul_gflops(layers, size, reps):
  """Measured fp32 throughput of a batched (layers, n, n) @ (layers, n, n) matmul."""
  c = common.Candidate(
      "matmul", lambda a, b: (jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST) * 1e-3, b),
      lambda: (jnp.ones((layers, size, size)), jnp.ones((layers, size, size))), donate=(0,))
  common.run([c], reps=reps, warmup=1)
  return 2 * layers * size ** 3 / min(c.times) / 1e9


def floor_table(times, layers, size, reps):
  gflops = matmul_gflops(layers, size, reps)
  adamw = times["optax.adamw"]
  rows = []
  for name, per_matrix in [("optix.shampoo (defaults)", 8), ("optix.shampoo (eigh)", 8),
                           ("optix.shampoo (newton)", 8),
                           ("optix.shampoo one-sided", 4), ("optix.soap", 12)]:
    floor = per_matrix * layers * size ** 3 / (gflops * 1e9)
    rows.append([name, per_matrix, 1e3 * floor, floor / adamw, 1e3 * times[name],
                 times[name] / floor])
  return common.table(
      f"FLOP floor of the per-step matmuls (measured matmul throughput {gflops:.1f} GFLOP/s, "
      f"optax.adamw {1e3 * adamw:.2f} ms/step)",
      rows, ["optimizer", "n³ flops/matrix/step", "floor ms/step", "floor x adamw",
             "measured ms/step", "measured / floor"])


def refresh_table(sizes, batch, reps):
  fns = {
      "shampoo root, eigh": lambda a, q: roots.inverse_pth_root_eigh(a, 4),
      "shampoo root, newton": lambda a, q: roots.inverse_pth_root_newton(a, 4),
      "soap basis, eigh": lambda a, q: roots.eigenbasis_eigh(a),
      "soap basis, power+QR": lambda a, q: roots.eigenbasis_power_qr(a, q),
  }
  rows = []
  for n in sizes:
    cands = []
    for name, f in fns.items():
      def make(n=n):
        g = jax.random.normal(jax.random.key(n), (batch, n, 2 * n)) / np.sqrt(2 * n)
        a = g @ jnp.swapaxes(g, -1, -2)           # a Gram matrix, like a statistic
        q = roots.eigenbasis_eigh(a + 0.01 * jnp.eye(n))
        return a, q
      cands.append(common.Candidate(name, lambda a, q, f=f: (a, f(a, q)), make, donate=()))
    common.run(cands, reps=reps, warmup=1)
    rows.append([n] + [common.ms(c)[0] / batch for c in cands])
  return common.table(f"One refresh, ms per n×n matrix (min over reps, stacks of {batch})",
                      rows, ["n"] + list(fns))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--sizes", default="128,256,512,1024")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--distributed-shampoo", default=None, metavar="DIR",
                      help="directory holding the optax_shampoo package (timed beside optix)")
  args = parser.parse_args()
  print(common.machine())
  print("(shared machine: other jobs may be running; min over interleaved reps is reported)")
  ds = None if args.distributed_shampoo is None else load_distributed_shampoo(
      args.distributed_shampoo)
  table, times = step_table(args.layers, args.size, args.reps, ds)
  print(table)
  print(floor_table(times, args.layers, args.size, args.reps))
  print(refresh_table([int(s) for s in args.sizes.split(",")], args.batch, max(2, args.reps // 2)))


if __name__ == "__main__":
  main()
