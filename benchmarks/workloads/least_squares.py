"""Least squares with a controlled condition number: ``min_W ‖X W − Y‖² / n``.

The rows of ``X`` have covariance ``Q diag(s) Qᵀ`` with ``s`` log-spaced from 1 to ``1/κ``, so
the Hessian ``Σ_x ⊗ I`` has condition number ``κ`` (default 1e3); ``Y = X W*`` exactly, so the
optimum is 0. Full batch: the problem is deterministic, the seed draws the initial ``W``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.workloads import Workload, main


def workload(quick: bool = False, kappa: float = 1e3, n: int = 512, d: int = 32,
             k: int = 16) -> Workload:
  """kappa-controlled least squares (full batch)."""
  rng = np.random.default_rng(1234)
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  s = np.logspace(0, -np.log10(kappa), d)
  x = (rng.normal(size=(n, d)) * np.sqrt(s)) @ q.T
  y = x @ rng.normal(size=(d, k))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

  def loss_fn(params, batch):
    xb, yb = batch
    return jnp.mean(jnp.sum((xb @ params["w"] + params["b"] - yb) ** 2, axis=-1))

  def batches(seed):
    del seed
    while True:
      yield x, y

  def init(seed):
    return {"w": 0.1 * jax.random.normal(jax.random.key(seed), (d, k)), "b": jnp.zeros(k)}

  return Workload("least_squares", f"X W = Y, {n}×{d} → {k}, condition number {kappa:g}, "
                  "full batch", init, loss_fn, batches, steps=150 if quick else 300,
                  learning_rates={"adamw": 1.0, "lion": 0.1, "muon": 0.3, "soap": 0.1,
                                  "sgd": 0.3, "psgd_kron": 0.1, "ademamix": 3.0, "prodigy": 3.0,
                                  # Moved 3x from an end of their grid in the first run with them.
                                  "adam": 3.0, "amsgrad": 3.0, "radam": 3.0, "adabelief": 3.0,
                                  "adamax": 3.0, "adamaxw": 3.0, "adan": 3.0, "adam8bit": 3.0,
                                  "simplified_ademamix": 3.3e-3, "lamb": 0.33, "novograd": 1.1,
                                  "rmsprop": 0.11, "sm3": 30.0, "fromage": 3e-2, "adadelta": 3.0,
                                  "mechanize": 3.0, "dadapt_adamw": 3.0})


if __name__ == "__main__":
  main(workload)
