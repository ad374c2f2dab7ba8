"""Hand computations of the formulas from the literature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix


def _run(tx, theta, grad_fn, steps):
  state, out = tx.init(theta), []
  for _ in range(steps):
    updates, state = tx.update(grad_fn(theta), state, theta)
    theta = optix.apply_updates(theta, updates)
    out.append(theta)
  return out, state


def test_adam_on_half_square_from_two():
  # loss θ²/2, grad θ: the first step is -lr·sign(g); bias correction keeps it so.
  out, _ = _run(optix.adam(0.1), jnp.array(2.0), lambda t: t, 3)
  np.testing.assert_allclose(np.array(out), [1.9000, 1.8002, 1.7006], atol=5e-5)


def test_adamw_step_is_decoupled():
  lr, wd, b1, b2, eps = 0.1, 0.5, 0.9, 0.999, 1e-8
  theta, g = jnp.array([1.5, -2.0]), jnp.array([0.3, 0.7])
  tx = optix.adamw(lr, b1, b2, eps, weight_decay=wd)
  updates, _ = tx.update(g, tx.init(theta), theta)
  m_hat = (1 - b1) * g / (1 - b1)
  v_hat = (1 - b2) * g**2 / (1 - b2)
  expected = (1 - lr * wd) * theta - lr * m_hat / (jnp.sqrt(v_hat) + eps)
  np.testing.assert_allclose(theta + updates, expected, rtol=1e-6)


def test_lion_moves_every_coordinate_by_lr():
  lr = 0.01
  theta = jax.random.normal(jax.random.key(0), (50,))
  tx = optix.lion(lr, weight_decay=0.0)
  state = tx.init(theta)
  for k in range(5):
    g = jax.random.normal(jax.random.key(k + 1), (50,))
    updates, state = tx.update(g, state, theta)
    np.testing.assert_allclose(jnp.abs(updates), lr, rtol=1e-6)
    theta = theta + updates


def test_sgd_momentum_and_nesterov_by_hand():
  g = [1.0, 2.0, -1.0]
  tx, tn = optix.sgd(0.1, momentum=0.9), optix.sgd(0.1, momentum=0.9, nesterov=True)
  s, sn, m = tx.init(0.0), tn.init(0.0), 0.0
  for gi in g:
    u, s = tx.update(jnp.array(gi), s)
    un, sn = tn.update(jnp.array(gi), sn)
    m = 0.9 * m + gi
    np.testing.assert_allclose(u, -0.1 * m, rtol=1e-6)
    np.testing.assert_allclose(un, -0.1 * (gi + 0.9 * m), rtol=1e-6)


def test_rmsprop_centered_by_hand():
  g1, g2, rho, eps = 2.0, -1.0, 0.9, 1e-8
  tx = optix.rmsprop(1.0, decay=rho, eps=eps, centered=True)
  s = tx.init(jnp.array(0.0))
  _, s = tx.update(jnp.array(g1), s)
  u, _ = tx.update(jnp.array(g2), s)
  nu = rho * (1 - rho) * g1**2 + (1 - rho) * g2**2
  mu = rho * (1 - rho) * g1 + (1 - rho) * g2
  np.testing.assert_allclose(u, -g2 / np.sqrt(nu - mu**2 + eps), rtol=1e-5)


def test_warmup_cosine_values():
  s = optix.warmup_cosine_decay_schedule(0.0, 3e-4, 2_000, 100_000, 3e-5)
  np.testing.assert_allclose(s(1_000), 1.5e-4, rtol=1e-5)
  np.testing.assert_allclose(s(50_000), 1.6933e-4, rtol=1e-4)
  np.testing.assert_allclose(s(100_000), 3e-5, rtol=1e-5)


@pytest.mark.parametrize("shape,at_90k", [("linear", 1.65e-4), ("cosine", 1.65e-4),
                                          ("sqrt", 3e-5 + 2.7e-4 * (1 - 0.5**0.5))])
def test_wsd_values(shape, at_90k):
  s = optix.wsd_schedule(3e-4, 2_000, 100_000, 20_000, end_value=3e-5, decay_shape=shape)
  np.testing.assert_allclose(s(1_000), 1.5e-4, rtol=1e-5)
  np.testing.assert_allclose(s(80_000), 3e-4, rtol=1e-6)
  np.testing.assert_allclose(s(90_000), at_90k, rtol=1e-5)
  np.testing.assert_allclose(s(100_000), 3e-5, rtol=1e-5)
  np.testing.assert_allclose(s(120_000), 3e-5, rtol=1e-5)


_WSD_SHAPES = {"linear": lambda x: 1.0 - x, "cosine": lambda x: 0.5 * (1.0 + np.cos(np.pi * x)),
               "sqrt": lambda x: 1.0 - np.sqrt(x)}


@pytest.mark.parametrize("shape", sorted(_WSD_SHAPES))
def test_wsd_closed_form_at_many_points(shape):
  """Warmup 10 from 0.1, stable at 2 until step 60, decay over 40 to 0.2: every phase, and
  points of the decay (not only its midpoint, where linear and cosine agree)."""
  p, i, e, w, n, d = 2.0, 0.1, 0.2, 10, 100, 40
  f = _WSD_SHAPES[shape]

  def by_hand(t):
    if t < w:
      return i + (p - i) * t / w
    if t < n - d:
      return p
    return e + (p - e) * f((t - (n - d)) / d) if t < n else e

  steps = [0, 3, 9, 10, 59, 60, 61, 65, 70, 80, 90, 95, 99, 100, 150]
  s = optix.wsd_schedule(p, w, n, d, end_value=e, init_value=i, decay_shape=shape)
  np.testing.assert_allclose([float(s(t)) for t in steps], [by_hand(t) for t in steps],
                             rtol=2e-6)
  b = optix.wsd_decay_branch(p, w, branch_step=n - d, decay_steps=d, end_value=e,
                             init_value=i, decay_shape=shape)
  np.testing.assert_allclose([float(b(t)) for t in steps], [by_hand(t) for t in steps],
                             rtol=2e-6)


def _np_cosine(t, init, steps, alpha=0.0, exponent=1.0):
  x = min(t, steps) / steps
  return init * ((1 - alpha) * (0.5 * (1 + np.cos(np.pi * x))) ** exponent + alpha)


_CLOSED_FORMS = {
    # name -> (optix schedule, its formula written out here)
    "constant": (lambda: optix.constant_schedule(0.3), lambda t: 0.3),
    "linear": (lambda: optix.linear_schedule(1.0, 0.1, 40, transition_begin=10),
               lambda t: 1.0 + (0.1 - 1.0) * min(max(t - 10, 0), 40) / 40),
    "polynomial": (lambda: optix.polynomial_schedule(1.0, 0.1, 2.0, 40, transition_begin=5),
                   lambda t: (1.0 - 0.1) * (1 - min(max(t - 5, 0), 40) / 40) ** 2 + 0.1),
    "cosine_decay": (lambda: optix.cosine_decay_schedule(1.0, 50, alpha=0.1, exponent=1.5),
                     lambda t: _np_cosine(t, 1.0, 50, 0.1, 1.5)),
    "warmup_cosine_decay": (
        lambda: optix.warmup_cosine_decay_schedule(0.0, 3e-4, 10, 60, 3e-5),
        lambda t: 3e-4 * t / 10 if t < 10 else
        3e-5 + (3e-4 - 3e-5) * 0.5 * (1 + np.cos(np.pi * min(t - 10, 50) / 50))),
    "exponential_decay": (lambda: optix.exponential_decay(1.0, 7, 0.5, 3, False, 0.05),
                          lambda t: max(0.5 ** (max(t - 3, 0) / 7), 0.05)),
    "step_decay": (lambda: optix.exponential_decay(1.0, 10, 0.1, staircase=True),
                   lambda t: 0.1 ** (t // 10)),
    "piecewise_constant": (lambda: optix.piecewise_constant_schedule(1.0, {10: 0.5, 30: 0.1}),
                           lambda t: 1.0 * (0.5 if t >= 10 else 1) * (0.1 if t >= 30 else 1)),
    "join": (lambda: optix.join_schedules(
        [optix.constant_schedule(1.0), optix.linear_schedule(1.0, 0.0, 20)], [15]),
             lambda t: 1.0 if t < 15 else 1.0 - min(t - 15, 20) / 20),
    "inverse_sqrt": (lambda: optix.inverse_sqrt_schedule(2.0, 10, init_value=0.5, timescale=4),
                     lambda t: 0.5 + 1.5 * t / 10 if t < 10 else 2.0 * np.sqrt(4 / (t - 10 + 4))),
    "cyclical_exp_range": (
        lambda: optix.cyclical_schedule(0.1, 1.1, 5, "exp_range", 0.9),
        lambda t: 0.1 + 1.0 * max(0.0, 1 - abs(t / 5 - 2 * np.floor(1 + t / 10) + 1)) * 0.9 ** t),
}


def _onecycle_cos(t, n, peak, pct, div, final):
  """Two cosine phases: peak/div -> peak over pct·n steps, then -> peak/(div·final)."""
  up, lo, end = int(pct * n), peak / div, peak / (div * final)
  if t < up:
    return peak + (lo - peak) * 0.5 * (1 + np.cos(np.pi * t / up))
  x = min(t - up, n - up) / (n - up)
  return end + (peak - end) * 0.5 * (1 + np.cos(np.pi * x))


def _onecycle_lin(t, n, peak, pct, pct_final, div, final):
  lo, end = peak / div, peak / (div * final)
  knots = [(0, lo), (int(pct * n), peak), (int(pct_final * n), lo), (n, end)]
  return float(np.interp(t, [k for k, _ in knots], [v for _, v in knots]))


_CLOSED_FORMS["cosine_onecycle"] = (
    lambda: optix.cosine_onecycle_schedule(60, 1.0, 0.25, 20.0, 100.0),
    lambda t: _onecycle_cos(t, 60, 1.0, 0.25, 20.0, 100.0))
_CLOSED_FORMS["linear_onecycle"] = (
    lambda: optix.linear_onecycle_schedule(60, 1.0, 0.25, 0.8, 20.0, 100.0),
    lambda t: _onecycle_lin(t, 60, 1.0, 0.25, 0.8, 20.0, 100.0))


@pytest.mark.parametrize("name", sorted(_CLOSED_FORMS))
def test_schedule_closed_forms(name):
  """Each schedule against its formula written out in numpy, at the phase boundaries and
  points inside each phase (optix's wrapped schedules included: the values are the contract,
  whoever computes them)."""
  make, by_hand = _CLOSED_FORMS[name]
  s = make()
  steps = [0, 1, 2, 5, 7, 9, 10, 11, 14, 15, 16, 20, 25, 29, 30, 31, 37, 45, 50, 55, 59, 60, 61,
           80, 100]
  got = jax.jit(jax.vmap(s))(jnp.asarray(steps, jnp.int32))
  want = np.asarray([by_hand(t) for t in steps])
  # atol: float32 rounding of the schedule's scale (a value that should be 0 comes out ~1e-8).
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7 * np.abs(want).max())


def test_wsd_decay_branch_follows_the_stable_run_then_decays():
  stable = optix.wsd_schedule(1.0, 10, 10_000, 1)  # decays only at the very end
  branch = optix.wsd_decay_branch(1.0, 10, branch_step=500, decay_steps=100, end_value=0.1)
  steps = jnp.arange(0, 501)
  np.testing.assert_array_equal(jax.vmap(branch)(steps), jax.vmap(stable)(steps))
  np.testing.assert_allclose(branch(550), 0.55, rtol=1e-6)
  np.testing.assert_allclose(branch(600), 0.1, rtol=1e-6)


def test_inverse_sqrt_is_the_transformer_schedule():
  s, w, d = optix.inverse_sqrt_schedule(1.0, 400), 400, 1.0
  for t in [1, 200, 400, 1600, 10_000]:
    vaswani = d * min(t**-0.5, t * w**-1.5) / w**-0.5  # normalised to peak 1
    np.testing.assert_allclose(s(t), vaswani, rtol=1e-5)


def test_triangular_cyclical():
  s = optix.cyclical_schedule(0.1, 1.0, step_size=10)
  np.testing.assert_allclose([s(t) for t in (0, 5, 10, 15, 20, 30)],
                             [0.1, 0.55, 1.0, 0.55, 0.1, 1.0], rtol=1e-6)
  s2 = optix.cyclical_schedule(0.0, 1.0, step_size=10, mode="triangular2")
  np.testing.assert_allclose([s2(10), s2(30), s2(50)], [1.0, 0.5, 0.25], rtol=1e-6)


def test_sgdr_restarts_and_cycle_lengths():
  s = optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=3, cycle_mult=2.0)
  np.testing.assert_allclose([s(0), s(5), s(10), s(20), s(30), s(50), s(70)],
                             [1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_step_decay_is_staircase_exponential():
  s = optix.exponential_decay(1.0, 30, 0.1, staircase=True)
  np.testing.assert_allclose([s(0), s(29), s(30), s(65)], [1.0, 1.0, 0.1, 0.01], rtol=1e-5)


def test_agc_clips_to_lambda_times_param_norm():
  p = jnp.array([[3.0], [4.0]])  # unit norm 5
  g = jnp.array([[30.0], [40.0]])  # unit norm 50
  tx = optix.adaptive_grad_clip(0.1)
  out, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(jnp.linalg.norm(out), 0.5, rtol=1e-6)


def test_masks():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
            "embedding": jnp.ones((4, 2))}
  assert optix.matrices_only(params) == {"dense": {"kernel": True, "bias": False},
                                         "embedding": True}
  assert optix.exclude_names("bias", "embedding")(params) == {
      "dense": {"kernel": True, "bias": False}, "embedding": False}
  both = optix.combine_masks(optix.matrices_only, optix.exclude_names("embedding"))
  assert both(params) == {"dense": {"kernel": True, "bias": False}, "embedding": False}
  tx = optix.add_decayed_weights(1.0, both)
  zeros = jax.tree.map(jnp.zeros_like, params)
  out, _ = tx.update(zeros, tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, out,
               jax.tree.map(lambda p, m: p * m, params, both(params)))
