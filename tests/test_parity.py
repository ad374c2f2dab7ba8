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


def _trajectory(tx, params, grads_seq):
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


@pytest.mark.parametrize("entry", PARITY, ids=[e.name for e in PARITY])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_optax(entry, seed):
  params = make_params(seed)
  keys = jax.random.split(jax.random.key(100 + seed), STEPS)
  # Gradients that move the params around: the params themselves (a quadratic) plus noise.
  grads_seq = [optix.testing.random_like(k, params) for k in keys]
  ours = _trajectory(entry.make(), params, grads_seq)
  theirs = _trajectory(entry.optax_ref(), params, grads_seq)
  for t, (a, b) in enumerate(zip(ours, theirs)):
    diff = optix.testing.max_relative_difference(a, b)
    assert diff <= entry.tol, f"{entry.name}: step {t}: max relative difference {diff:.2e}"


SCHEDULE_PAIRS = {
    "constant": (lambda m: m.constant_schedule(0.3)),
    "linear": (lambda m: m.linear_schedule(1.0, 0.1, 40, transition_begin=10)),
    "polynomial": (lambda m: m.polynomial_schedule(1.0, 0.1, 2.0, 40, transition_begin=5)),
    "cosine_decay": (lambda m: m.cosine_decay_schedule(1.0, 50, alpha=0.1, exponent=1.5)),
    "warmup_cosine_decay": (lambda m: m.warmup_cosine_decay_schedule(0.0, 3e-4, 10, 60, 3e-5)),
    "exponential_decay": (lambda m: m.exponential_decay(1.0, 7, 0.5, 3, False, 0.05)),
    "step_decay": (lambda m: m.exponential_decay(1.0, 10, 0.1, staircase=True)),
    "piecewise_constant": (lambda m: m.piecewise_constant_schedule(1.0, {10: 0.5, 30: 0.1})),
    "cosine_onecycle": (lambda m: m.cosine_onecycle_schedule(60, 1.0, 0.25, 20.0, 100.0)),
    "linear_onecycle": (lambda m: m.linear_onecycle_schedule(60, 1.0, 0.25, 0.8, 20.0, 100.0)),
    "join": (lambda m: m.join_schedules([m.constant_schedule(1.0), m.linear_schedule(1.0, 0.0, 20)],
                                        [15])),
}


@pytest.mark.parametrize("name", SCHEDULE_PAIRS)
def test_schedule_matches_optax(name):
  ours, theirs = SCHEDULE_PAIRS[name](optix), SCHEDULE_PAIRS[name](optax)
  steps = jnp.arange(0, 100, dtype=jnp.int32)
  a, b = jax.jit(jax.vmap(ours))(steps), jax.vmap(theirs)(steps)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


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
