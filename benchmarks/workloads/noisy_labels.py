"""An MLP on scikit-learn's digits with 30% of the training labels replaced by random ones,
scored by the cross-entropy on clean held-out digits: label noise rewards an optimizer that fits
the signal before the noise (Zhang et al. 2017, arXiv 1611.03530, on memorizing random labels)."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

from benchmarks.workloads import Workload, main


def _xent(params, x, y):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = h @ params["w2"] + params["b2"]
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def workload(quick: bool = False, noise: float = 0.3, hidden: int = 128) -> Workload:
  """MLP with label noise on digits, clean held-out loss."""
  digits = load_digits()
  x, y = np.asarray(digits.data / 16.0, np.float32), np.asarray(digits.target, np.int32)
  perm = np.random.default_rng(1234).permutation(len(x))
  x, y = x[perm], y[perm]
  train_x, train_y, val_x, val_y = x[:1400], y[:1400].copy(), jnp.asarray(x[1400:]), y[1400:]
  flip = np.random.default_rng(5678).random(len(train_y)) < noise
  train_y[flip] = np.random.default_rng(91).integers(0, 10, flip.sum())

  def init(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w1": jax.random.normal(k1, (64, hidden)) / 8.0, "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden), "b2": jnp.zeros(10)}

  def loss_fn(params, batch):
    return _xent(params, *batch)

  def batches(seed):
    rng = np.random.default_rng(seed)
    while True:
      i = rng.integers(0, len(train_x), 64)
      yield train_x[i], train_y[i]

  return Workload("noisy_labels", f"64-{hidden}-10 tanh MLP, digits, {noise:.0%} random "
                  "training labels, clean held-out cross-entropy, batch 64", init, loss_fn,
                  batches, steps=200 if quick else 400,
                  learning_rates={"adamw": 3e-2, "lion": 1e-3, "muon": 1e-2, "soap": 1e-2,
                                  "sgd": 0.3, "adafactor": 1e-2, "prodigy": 3.0,
                                  # Moved 3x from an end of their grid in the first run with them.
                                  "amsgrad": 9e-2, "sign_sgd": 3e-3, "signum": 3e-3,
                                  "fromage": 3e-2, "adadelta": 3.0, "rprop": 3e-3, "cocob": 0.33},
                  eval_fn=lambda p: _xent(p, val_x, val_y))


if __name__ == "__main__":
  main(workload)
