"""Numerical parity with optax: same hyperparameters, same gradients, many steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from registry import ENTRIES, make_params

STEPS = 25
PARITY = [e for e in ENTRIES if e.optax_ref is not None]
# Every entry, on the scale of each leaf's own motion (measured: at most 2e-5, muon's stacked
# and matrix entries; ulp differences of sums over a leaf). The per-element relative measure
# (``entry.tol``) magnifies an absolute 1e-8 on a coordinate that passes near zero.
MOTION_TOL = 3e-5


def _difference_per_motion(a, b, start):
  """Max over leaves of ``max|a - b| / max|b - start|``: the gap on the scale of how far the
  reference leaf has moved (0 for a leaf that matches exactly, even one that did not move)."""
  def leaf(x, y, p):
    x, y, p = (np.asarray(v, np.float64) for v in (x, y, p))
    gap = np.max(np.abs(x - y), initial=0.0)
    return 0.0 if gap == 0 else gap / max(np.max(np.abs(y - p), initial=0.0), 1e-30)
  return max(jax.tree.leaves(jax.tree.map(leaf, a, b, start)), default=0.0)


def _trajectory(tx, params, grads_seq, value_fn=None):
  state = tx.init(params)
  update = jax.jit(tx.update)
  if value_fn is not None:  # a line search: gradients and values are value_fn's, not grads_seq's
    value_and_grad = optax.value_and_grad_from_state(value_fn)

    @jax.jit
    def update(_, state, params):
      value, grad = value_and_grad(params, state=state)
      return tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
  out = []
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


@pytest.mark.parametrize("entry", PARITY, ids=[e.name for e in PARITY])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_optax(entry, seed):
  # An entry's own params (stacked layers, a fixed pair of matrices) are the same for both seeds.
  params = make_params(seed) if entry.params is None else entry.params()
  keys = jax.random.split(jax.random.key(100 + seed), STEPS)
  # Random gradients, independent of the params: the same sequence feeds both optimizers.
  grads_seq = [optix.testing.random_like(k, params) for k in keys]
  value_fn = entry.extra_args.get("value_fn")
  ours = _trajectory(entry.make(), params, grads_seq, value_fn)
  theirs = _trajectory(entry.optax_ref(), params, grads_seq, value_fn)
  for t, (a, b) in enumerate(zip(ours, theirs)):
    diff = optix.testing.max_relative_difference(a, b)
    assert diff <= entry.tol, f"{entry.name}: step {t}: max relative difference {diff:.2e}"
    gap = _difference_per_motion(a, b, params)
    assert gap <= MOTION_TOL, f"{entry.name}: step {t}: difference / motion {gap:.2e}"


# The schedules optix wraps from optax are checked against their formulas in test_formulas.py
# (comparing them with optax would compare optax with itself); SGDR is optix's own composition.


def test_sgdr_matches_optax_cycles():
  ours = optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=3, cycle_mult=2.0,
                             end_value=0.01, warmup_steps=2, init_value=0.0, peak_decay=0.5)
  theirs = optax.sgdr_schedule([
      dict(init_value=0.0, peak_value=1.0 * 0.5 ** k, warmup_steps=2, decay_steps=n,
           end_value=0.01) for k, n in enumerate([10, 20, 40])])
  steps = jnp.arange(0, 90)
  np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(theirs)(steps), rtol=1e-6)


def test_clip_by_global_norm_reports_pre_clip_norm():
  params = make_params(0)
  grads = jax.tree.map(lambda p: 10.0 * p, params)
  tx = optix.clip_by_global_norm(1.0)
  clipped, state = tx.update(grads, tx.init(params))
  np.testing.assert_allclose(state.norm, optax.tree.norm(grads), rtol=1e-6)
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-5)
  ref, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  assert optix.testing.max_relative_difference(clipped, ref) <= 1e-5
