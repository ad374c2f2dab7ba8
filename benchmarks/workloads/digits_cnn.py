"""A small CNN on scikit-learn's 8×8 digits: two 3×3 convolutions (16, 32 channels, ReLU, the
second with stride 2), global average pooling, a linear classifier; cross-entropy, batch 64,
scored on held-out digits."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

from benchmarks.workloads import Workload, main


def _conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _xent(params, x, y):
  h = jax.nn.relu(_conv(x, params["c1"], 1) + params["b1"])
  h = jax.nn.relu(_conv(h, params["c2"], 2) + params["b2"])
  logits = h.mean(axis=(1, 2)) @ params["w"] + params["b"]
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def workload(quick: bool = False) -> Workload:
  """CNN on digits, held-out cross-entropy."""
  digits = load_digits()
  x = np.asarray(digits.images / 16.0, np.float32)[..., None]
  y = np.asarray(digits.target, np.int32)
  perm = np.random.default_rng(1234).permutation(len(x))
  x, y = x[perm], y[perm]
  train_x, train_y, val_x, val_y = x[:1400], y[:1400], jnp.asarray(x[1400:]), y[1400:]

  def init(seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {"c1": jax.random.normal(k1, (3, 3, 1, 16)) / 3.0, "b1": jnp.zeros(16),
            "c2": jax.random.normal(k2, (3, 3, 16, 32)) / 12.0, "b2": jnp.zeros(32),
            "w": jax.random.normal(k3, (32, 10)) / np.sqrt(32), "b": jnp.zeros(10)}

  def batches(seed):
    rng = np.random.default_rng(seed)
    while True:
      i = rng.integers(0, len(train_x), 64)
      yield train_x[i], train_y[i]

  return Workload("digits_cnn", "conv16-conv32/2-avgpool-linear on 8×8 sklearn digits, batch 64, "
                  "held-out cross-entropy", init, lambda p, b: _xent(p, *b), batches,
                  steps=150 if quick else 300,
                  learning_rates={"adamw": 3e-2, "lion": 3e-3, "muon": 3e-2, "soap": 1e-2,
                                  "sgd": 0.1,
                                  # Moved 3x from an end of their grid in the first run with them.
                                  "radam": 9e-2, "adamax": 9e-2, "adamaxw": 9e-2, "rmsprop": 3e-2,
                                  "sign_sgd": 9e-3, "lars": 9.0, "fromage": 3e-2, "adadelta": 3.0,
                                  "rprop": 3e-3, "cocob": 0.33, "mechanize": 3.0,
                                  "dadapt_adamw": 3.0},
                  eval_fn=lambda p: _xent(p, val_x, val_y))


if __name__ == "__main__":
  main(workload)
