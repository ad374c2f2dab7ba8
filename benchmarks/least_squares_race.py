"""The matrix optimizers against tuned Adam on ill-conditioned least squares.

``min_W ‖A W − B‖²`` with ``W`` 32×16 and ``A`` (64×32) of singular values log-spaced over
``[1/κ, 1]`` (κ = 100 by default), ``W₀ = 0``. Every optimizer runs at its shipped defaults,
under a cosine decay over ``--steps`` from each peak learning rate of one grid (the same
trials for every optimizer; Adam also over ``b1`` ∈ {0.5, 0.9}, twice the trials), per seed.
Counted: the step from which the loss stays at or below ``--target`` × the initial loss to the
end (a run that touches the target and leaves it again does not count), at each optimizer's
best learning rate, and its time per step (the jitted run at that rate, timed after a warm-up
run, interleaved across optimizers).

    python -m benchmarks.least_squares_race [--kappa 100] [--steps 500] [--seeds 0,1]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optix

LR_GRID = (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)


def problem(seed, n=64, d=32, k=16, kappa=100.0):
  """``(A, B)``: ``A`` n×d with singular values log-spaced over [1/κ, 1], ``B = A W*``."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(n, d)))
  v, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = (u * np.logspace(0, -np.log10(kappa), d)) @ v.T
  b = a @ rng.normal(size=(d, k))
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def _run(make, a, b, steps):
  """``lr -> loss before each step``: ``make(schedule)``'s run under a cosine decay."""
  w0 = jnp.zeros((a.shape[1], b.shape[1]), jnp.float32)

  def loss(w):
    return jnp.sum(jnp.square(a @ w - b))

  def one(lr):
    tx = make(optix.cosine_decay_schedule(lr, steps))

    def body(carry, _):
      w, s = carry
      value, g = jax.value_and_grad(loss)(w)
      u, s = tx.update(g, s, w)
      return (optax.apply_updates(w, u), s), value

    return jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)[1]
  return one


def curves(make, a, b, steps, grid=LR_GRID):
  """The loss curves at every learning rate of ``grid`` (one vmapped, jitted run)."""
  return np.asarray(jax.jit(jax.vmap(_run(make, a, b, steps)))(jnp.asarray(grid, jnp.float32)))


def stays_from(curve, target):
  """The first step from which ``curve`` stays <= ``target`` to the end (inf: never)."""
  above = np.nonzero(curve > target)[0]
  return 0 if not len(above) else (np.inf if above[-1] == len(curve) - 1 else int(above[-1]) + 1)


OPTIMIZERS = {
    "adam, b1 0.9": optix.adam,
    "adam, b1 0.5": lambda lr: optix.adam(lr, b1=0.5),
    "muon": optix.muon,
    "shampoo": optix.shampoo,
    "soap": optix.soap,
    "psgd_kron": optix.psgd_kron,
}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kappa", type=float, default=100.0)
  ap.add_argument("--steps", type=int, default=500)
  ap.add_argument("--target", type=float, default=1e-4)
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--reps", type=int, default=5)
  args = ap.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  found = {name: [] for name in OPTIMIZERS}  # per seed: (steps, lr)
  timers = {}
  for seed in seeds:
    a, b = problem(seed, kappa=args.kappa)
    target = args.target * float(jnp.sum(b ** 2))
    for name, make in OPTIMIZERS.items():
      at = [stays_from(c, target) for c in curves(make, a, b, args.steps)]
      best = int(np.argmin(at))
      found[name].append((at[best], LR_GRID[best]))
      if seed == seeds[0]:
        timers[name] = jax.jit(_run(make, a, b, args.steps)), jnp.float32(LR_GRID[best])
  for fn, lr in timers.values():  # compile and warm up
    jax.block_until_ready(fn(lr))
  times = {name: [] for name in timers}
  for _ in range(args.reps):
    for name, (fn, lr) in timers.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(lr))
      times[name].append(time.perf_counter() - t)
  adam = [min(found["adam, b1 0.9"][i][0], found["adam, b1 0.5"][i][0])
          for i in range(len(seeds))]
  adam_ms = min(min(times["adam, b1 0.9"]), min(times["adam, b1 0.5"])) / args.steps * 1e3
  print(f"κ = {args.kappa:g} least squares (W 32×16), cosine over {args.steps} steps, peak lr "
        f"grid {LR_GRID}; steps from which the loss stays <= {args.target:g} × the initial loss "
        f"(seeds {args.seeds}); ms/step of the jitted run at the best rate (min of {args.reps})\n")
  print("| optimizer | steps (per seed) | best lr (per seed) | × tuned Adam's steps "
        "| ms / step | × tuned Adam's wall-clock |")
  print("|---|---|---|---|---|---|")
  for name, rows in found.items():
    steps = [s for s, _ in rows]
    ratio = [s / q for s, q in zip(steps, adam)]
    ms = min(times[name]) / args.steps * 1e3
    wall = [r * ms / adam_ms for r in ratio]
    fmt = lambda xs: " / ".join("never" if not np.isfinite(x) else f"{x:.2f}" for x in xs)
    print(f"| {name} | {' / '.join('never' if not np.isfinite(s) else str(s) for s in steps)} "
          f"| {' / '.join(f'{lr:g}' for _, lr in rows)} | {fmt(ratio)} | {ms:.3f} "
          f"| {fmt(wall)} |")


if __name__ == "__main__":
  main()
