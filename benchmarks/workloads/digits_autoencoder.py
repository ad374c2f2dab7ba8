"""A deep autoencoder on scikit-learn's digits (the benchmark of Hinton & Salakhutdinov 2006,
small): 64 → 32 → 16 → 8 → 16 → 32 → 64, tanh, squared reconstruction error, batches of 128."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

from benchmarks.workloads import Workload, main

SIZES = (64, 32, 16, 8, 16, 32, 64)


def workload(quick: bool = False) -> Workload:
  """deep autoencoder on digits."""
  x = np.asarray(load_digits().data / 16.0, np.float32)

  def init(seed):
    keys = jax.random.split(jax.random.key(seed), len(SIZES) - 1)
    return [{"w": jax.random.normal(kk, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for kk, a, b in zip(keys, SIZES[:-1], SIZES[1:])]

  def loss_fn(params, xb):
    h = xb
    for i, layer in enumerate(params):
      h = h @ layer["w"] + layer["b"]
      if i < len(params) - 1:
        h = jnp.tanh(h)
    return jnp.mean(jnp.sum((jax.nn.sigmoid(h) - xb) ** 2, axis=-1))

  def batches(seed):
    rng = np.random.default_rng(seed)
    while True:
      yield x[rng.integers(0, len(x), 128)]

  return Workload("digits_autoencoder", "64-32-16-8-16-32-64 tanh autoencoder on sklearn digits, "
                  "batch 128", init, loss_fn, batches, steps=200 if quick else 400,
                  learning_rates={"adamw": 3e-2, "lion": 1e-2, "muon": 0.1, "soap": 3e-2,
                                  "sgd": 0.1,
                                  # Moved 3x from an end of their grid in the first run with them.
                                  "radam": 9e-2, "fromage": 3e-2, "adadelta": 3.0, "cocob": 0.33,
                                  "mechanize": 3.0})


if __name__ == "__main__":
  main(workload)
