"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training
Neural Networks", arXiv 1506.01186; the smoothed-loss form popularised by fastai).

Train for ``steps`` steps while the learning rate grows exponentially from
``min_lr`` to ``max_lr``, record the loss, smooth it, and suggest a fixed
learning rate a safety factor below the edge where the loss stops improving
(Smith's rule). The steepest-descent point (the fastai rule) is reported too.
"""

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _validate


@dataclasses.dataclass
class LRRangeResult:
  """What :func:`lr_range_test` recorded and suggests; :meth:`plot` draws it.

  Args:
    lrs: the learning rate used at each recorded step.
    losses: the raw loss at each step (before that step's update).
    smoothed: the debiased EMA of the loss (β = ``smoothing``).
    suggested_lr: ``min_loss_lr / safety_factor`` (Smith's rule).
    min_loss_lr: the LR at the smoothed-loss minimum: the sweep's edge.
    stopped_early: True when the sweep stopped on divergence.
    steepest_lr: the LR of the steepest descent of the smoothed loss in
      log(lr) (fastai's rule); NaN when too few steps precede the minimum.
  """
  lrs: np.ndarray           # the learning rate used at each recorded step
  losses: np.ndarray        # the raw loss at each step (before that step's update)
  smoothed: np.ndarray      # debiased EMA of the loss (beta = ``smoothing``)
  suggested_lr: float       # min_loss_lr / safety_factor (Smith's rule)
  min_loss_lr: float        # the LR at the smoothed-loss minimum: the sweep's edge
  stopped_early: bool       # True when the sweep stopped on divergence
  steepest_lr: float = float("nan")  # steepest descent of the smoothed loss in log(lr)

  def plot(self, path: str, title: str = "LR range test") -> str:
    """Writes loss vs learning rate (log x) with the suggestion marked; returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(self.lrs, self.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(self.lrs, self.smoothed, lw=1.5, label="smoothed")
    ax.axvline(self.suggested_lr, color="C3", ls="--", label=f"suggested {self.suggested_lr:.2e}")
    ax.axvline(self.min_loss_lr, color="0.4", ls=":", label=f"min loss {self.min_loss_lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=title)
    finite = self.smoothed[np.isfinite(self.smoothed)]
    if finite.size:
      ax.set_ylim(finite.min() - 0.05 * abs(finite.min()), min(finite.max(), 4 * finite[0]) * 1.05)
    ax.legend(fontsize=8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _batch_at(batches, i):
  if callable(batches):
    return batches(i)
  if isinstance(batches, list):
    return batches[i % len(batches)]
  # A pytree of arrays stacked along axis 0.
  n = jax.tree.leaves(batches)[0].shape[0]
  return jax.tree.map(lambda x: x[i % n], batches)


def lr_range_test(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batches: Any,
                  tx_factory: Callable[[_base.ScalarOrSchedule], _base.GradientTransformation],
                  min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 100, *,
                  smoothing: float = 0.9, diverge_factor: float = 4.0,
                  skip_start: int = 5, safety_factor: float = 4.0) -> LRRangeResult:
  r"""Sweeps the learning rate exponentially and suggests one.

  :math:`\eta_t = \eta_{\min} (\eta_{\max} / \eta_{\min})^{t/(T-1)}` (``min_lr``,
  ``max_lr``, T = ``steps``) is passed to ``tx_factory`` as a schedule, so one
  jitted step serves the whole sweep. The smoothed loss is the debiased EMA
  :math:`s_t = a_t/(1-\beta^t)`, :math:`a_t = \beta a_{t-1} + (1-\beta) L_t`;
  the sweep stops once :math:`s_t >` ``diverge_factor`` :math:`\cdot \min s`.

  The suggestion is ``lr(argmin s) / safety_factor``: the LR at the
  smoothed-loss minimum marks the edge past which the iterate stops improving
  (near the stability limit), and Smith's rule of thumb (2017, §3.3) puts a
  good learning rate a factor 3-4 below that maximum. ``steepest_lr`` — the
  most negative slope :math:`ds/d\log\eta` (fastai's rule) — is also returned but
  is not the default: the slope measures ``lr·‖g‖²`` at the *current* iterate, so an
  optimizer that makes most of its progress early in the sweep (heavy-ball
  momentum, which moves ``1/(1-β)`` times faster at small LRs; ill-conditioned
  problems, fitted direction by direction) peaks long before the edge. On a
  logistic regression with SGD + momentum 0.9 the steepest point was 0.09× the
  best fixed LR of a grid search; ``min_loss_lr / 4`` is 0.4×. Caveat: Adam's
  edge is soft (its step is bounded by ``lr``, so the loss need not blow up
  where it stops improving): on that logistic regression the suggestion is
  2.8× Adam's best fixed LR, on an ill-conditioned least squares 12×, where
  ``steepest_lr`` was 0.9× and 2.5× (but it is erratic when the sweep's range
  or length changes). For Adam-type optimizers, check both.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    params: the initial parameters (not modified).
    batches: a callable ``i -> batch``, a Python ``list`` of batches (cycled), or
      any other pytree of arrays stacked along axis 0 (cycled), e.g. ``(x, y)``
      with shapes ``(num_batches, batch, ...)``.
    tx_factory: ``learning_rate -> GradientTransformation``, e.g. ``optix.adam``.
    min_lr: the first learning rate, > 0; 1e-7 (far below any useful one).
    max_lr: the last learning rate, > ``min_lr``; 10 (past most optimizers'
      stability limit, so the edge is inside the sweep).
    steps: int >= 3, steps (and recorded losses) of the sweep; 100.
    smoothing: β of the loss EMA, in [0, 1) (0.9: averages ~10 steps; raise for
      noisy losses).
    diverge_factor: > 1; stop when the smoothed loss exceeds this multiple of its
      minimum; 4.
    skip_start: int >= 0, steps ignored by the steepest-slope rule and by the
      divergence check (the EMA's first values are noisy); 5.
    safety_factor: >= 1; the suggestion is this factor below the smoothed-loss
      minimum; 4 (Smith's 3-4).

  Returns:
    An :class:`LRRangeResult`.
  """
  _validate.positive("min_lr", min_lr)
  _validate.in_range("max_lr", max_lr, min_lr, low_closed=False)
  _validate.integer("steps", steps, 3)
  _validate.unit_interval("smoothing", smoothing)
  _validate.in_range("diverge_factor", diverge_factor, 1.0, low_closed=False)
  _validate.integer("skip_start", skip_start, 0)
  _validate.in_range("safety_factor", safety_factor, 1.0)

  ratio = max_lr / min_lr

  def schedule(step):
    return min_lr * ratio ** (jnp.asarray(step, jnp.float32) / (steps - 1))

  tx = tx_factory(schedule)

  @jax.jit
  def step(p, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(p, batch)
    updates, state = tx.update(grads, state, p)
    return _base.apply_updates(p, updates), state, loss

  p, state = params, tx.init(params)
  losses, smoothed = [], []
  avg, best, stopped = 0.0, np.inf, False
  for i in range(steps):
    p, state, loss = step(p, state, _batch_at(batches, i))
    loss = float(loss)
    losses.append(loss)
    avg = smoothing * avg + (1 - smoothing) * loss
    s = avg / (1 - smoothing ** (i + 1))
    smoothed.append(s)
    if not np.isfinite(s) or (i > skip_start and s > diverge_factor * best):
      stopped = True
      break
    best = min(best, s)
  n = len(losses)
  lrs = np.asarray([min_lr * ratio ** (i / (steps - 1)) for i in range(n)])
  losses, smoothed = np.asarray(losses), np.asarray(smoothed)
  ok = np.isfinite(smoothed)
  min_loss_lr = float(lrs[ok][np.argmin(smoothed[ok])]) if ok.any() else float(min_lr)
  # Slope of the smoothed loss in log(lr), up to the smoothed-loss minimum.
  end = int(np.argmin(np.where(ok, smoothed, np.inf))) + 1
  lo = min(skip_start, max(end - 3, 0))
  if end - lo >= 3:
    slope = np.gradient(smoothed[lo:end], np.log(lrs[lo:end]))
    steepest = float(lrs[lo + int(np.argmin(slope))])
  else:
    steepest = float("nan")
  return LRRangeResult(lrs, losses, smoothed, min_loss_lr / safety_factor, min_loss_lr, stopped,
                       steepest)
