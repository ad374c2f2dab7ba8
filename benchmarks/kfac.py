"""Per-step cost of K-FAC vs Adam on the digits MLP (full-batch training step).

Times the whole jitted training step (forward + backward with statistics capture +
optimizer update), donated params and state, warm-up then the median of interleaved
repetitions. K-FAC is timed at its refresh interval (amortized) and with inverses
refreshed every step. Usage: python benchmarks/kfac.py [--reps 30]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from sklearn.datasets import load_digits

import optix


class MLP(nnx.Module):

  def __init__(self, sizes, rngs):
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = jnp.tanh(layer(x))
    return self.layers[-1](x)


def loss_fn(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def make_step(tx, sizes, x, y, use_stats):
  model = optix.kfac_tap(MLP(sizes, nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def step(params, state):
    m = nnx.merge(graphdef, params, rest)
    if use_stats:
      loss, grads, stats = optix.kfac_value_and_grad(loss_fn, m, x, y)
      updates, state = tx.update(grads, state, params, kfac_stats=stats)
    else:
      loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), x, y))(
          params)
      updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1)), params, tx.init(params)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--inner", type=int, default=10)
  args = parser.parse_args()
  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  y = jnp.asarray(digits.target)
  configs = {
      "adam": (optix.adam(0.1), False),
      "kfac (inverses every 5)": (optix.kfac(0.3, damping=3e-2, momentum=0.9), True),
      "kfac (inverses every step)": (optix.kfac(0.3, damping=3e-2, momentum=0.9,
                                                inverse_update_period=1), True),
  }
  rows = []
  for sizes in ([64, 64, 10], [64, 256, 256, 10]):
    runs = {name: list(make_step(tx, sizes, x, y, stats)) for name, (tx, stats) in configs.items()}
    times = {name: [] for name in runs}
    for name, r in runs.items():  # warm-up (compile)
      r[1], r[2] = r[0](r[1], r[2])
      jax.block_until_ready(r[1])
    for _ in range(args.reps):  # interleaved repetitions
      for name, r in runs.items():
        t0 = time.perf_counter()
        for _ in range(args.inner):
          r[1], r[2] = r[0](r[1], r[2])
        jax.block_until_ready(r[1])
        times[name].append((time.perf_counter() - t0) / args.inner)
    base = statistics.median(times["adam"])
    for name, ts in times.items():
      med, lo = statistics.median(ts), min(ts)
      spread = (statistics.quantiles(ts, n=4)[2] - statistics.quantiles(ts, n=4)[0]) / med
      rows.append((str(sizes), name, 1e3 * med, 1e3 * lo, spread, med / base))
  print(f"{'MLP':<20}{'optimizer':<30}{'median ms':>10}{'min ms':>9}{'IQR/med':>9}{'vs adam':>9}")
  for r in rows:
    print(f"{r[0]:<20}{r[1]:<30}{r[2]:>10.3f}{r[3]:>9.3f}{r[4]:>9.2f}{r[5]:>8.2f}x")
  print(f"(training step = forward + backward + update on all {x.shape[0]} digits; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s))")


if __name__ == "__main__":
  main()
