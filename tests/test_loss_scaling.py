"""Dynamic loss scaling: the scale rules, float16 training with and without it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix


def test_adjust_rules_hand_computed():
  ls = optix.DynamicLossScale(initial_scale=8.0, growth_interval=3, min_scale=2.0,
                              max_scale=32.0)
  s = ls.init()
  finite = [True, True, False, False, False, True, True, True, True, True, True,
            True, True, True, True, True]
  want_scale = [8, 8, 4, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
  want_good = [1, 2, 0, 0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
  adjust = jax.jit(ls.adjust)
  for f, scale, good in zip(finite, want_scale, want_good):
    s = adjust(s, jnp.array(f))
    assert (float(s.scale), int(s.good_steps)) == (scale, good)
  assert int(s.skipped) == 3
  for _ in range(9):  # capped at max_scale
    s = adjust(s, jnp.array(True))
  assert float(s.scale) == 32.0


def test_scale_and_unscale():
  ls = optix.DynamicLossScale(initial_scale=1024.0)
  s = ls.init()
  loss = jnp.array(100.0, jnp.float16)
  scaled = ls.scale(loss, s)
  assert scaled.dtype == jnp.float32 and float(scaled) == 102400.0  # > float16 max
  grads = {"a": jnp.array([2048.0, 1.0], jnp.float16), "b": jnp.array([3.0])}
  out = ls.unscale(grads, s)
  assert out["a"].dtype == jnp.float16 and out["b"].dtype == jnp.float32
  np.testing.assert_array_equal(out["a"], np.array([2.0, 1 / 1024], np.float16))
  assert ls.unscale(grads, s, jnp.float32)["a"].dtype == jnp.float32


@pytest.mark.parametrize("kwargs, name", [
    (dict(initial_scale=-1.0), "initial_scale"), (dict(growth_interval=0), "growth_interval"),
    (dict(growth_factor=0.9), "growth_factor"), (dict(backoff_factor=0.0), "backoff_factor"),
    (dict(min_scale=0.0), "min_scale"), (dict(initial_scale=2.0 ** 30), "initial_scale")])
def test_bad_hyperparameters_named(kwargs, name):
  with pytest.raises(ValueError, match=name):
    optix.DynamicLossScale(**kwargs)


def test_unscaling_happens_before_clipping():
  """Clipping inside the wrapper sees the true gradient norm, not S times it."""
  params = {"w": jnp.zeros(4)}
  tx = optix.dynamic_loss_scaling(optix.chain(optix.clip_by_global_norm(1.0), optix.sgd(1.0)),
                                  initial_scale=1024.0)
  true_grads = {"w": jnp.array([0.3, 0.0, 0.4, 0.0])}  # norm 0.5 < max_norm: no clipping
  scaled = jax.tree.map(lambda g: g * optix.current_loss_scale(tx.init(params)), true_grads)
  updates, state = tx.update(scaled, tx.init(params), params)
  np.testing.assert_allclose(state.inner_state[0].norm, 0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["w"], -true_grads["w"], rtol=1e-6)


def test_overflow_skips_step_and_halves_scale():
  params = {"w": jnp.ones(3)}
  tx = optix.dynamic_loss_scaling(optix.adam(0.1), initial_scale=4.0)
  state = tx.init(params)
  updates, new_state = jax.jit(tx.update)({"w": jnp.array([1.0, jnp.inf, 1.0])}, state, params)
  np.testing.assert_array_equal(updates["w"], 0.0)
  jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
  assert float(new_state.loss_scale.scale) == 2.0 and int(new_state.loss_scale.skipped) == 1


def test_current_loss_scale_finds_the_state_inside_a_chain():
  tx = optix.chain(optix.zero_nans(), optix.dynamic_loss_scaling(optix.sgd(0.1), 256.0))
  assert float(optix.current_loss_scale(tx.init({"w": jnp.ones(2)}))) == 256.0
  with pytest.raises(ValueError, match="LossScaleState"):
    optix.current_loss_scale(optix.sgd(0.1).init({"w": jnp.ones(2)}))


# A float16 least-squares problem whose raw gradients overflow float16 (|g| ~ 1e5 > 65504).
def _overflow_problem():
  kx, kw = jax.random.split(jax.random.key(0))
  x = (4.0 * jax.random.normal(kx, (256, 8))).astype(jnp.float16)
  w_true = 10.0 * jax.random.normal(kw, (8,))
  y = (x.astype(jnp.float32) @ w_true).astype(jnp.float16)

  def loss_fn(p):
    return jnp.sum(jnp.square((x @ p["w"] - y).astype(jnp.float32)))
  return loss_fn, {"w": jnp.zeros(8, jnp.float16)}


def _train(tx, loss_fn, params, steps, scaled):
  @jax.jit
  def step(p, s):
    scale = optix.current_loss_scale(s) if scaled else 1.0
    loss, grads = jax.value_and_grad(lambda q: loss_fn(q) * scale)(p)
    updates, s = tx.update(grads, s, p)
    return optix.apply_updates(p, updates), s, loss / scale

  state, losses = tx.init(params), []
  for _ in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return params, state, losses


def test_fp16_training_diverges_without_loss_scaling_and_trains_with_it():
  loss_fn, params = _overflow_problem()
  # Without: the first gradient is inf, Adam's update inf/inf = NaN, and the run is lost.
  p, _, losses = _train(optix.with_master_weights(optix.adam(0.5)), loss_fn, params, 5, False)
  assert np.isnan(np.asarray(p["w"], np.float32)).any() and np.isnan(losses[-1])
  # With: the overflowing steps are skipped while S halves from 2**15 to below 1, then the
  # run trains (unscaled into float32 by the master-weights wrapper outside the scaler).
  tx = optix.with_master_weights(optix.dynamic_loss_scaling(optix.adam(0.5), growth_interval=20))
  p, state, losses = _train(tx, loss_fn, params, 150, True)
  ls = state.inner_state.loss_scale
  assert bool(optix.all_finite(p)) and np.isfinite(losses).all()
  assert int(ls.skipped) >= 15  # 2**15 -> 2**-1 or below
  assert losses[-1] < 1e-3 * losses[0], (losses[0], losses[-1])


def test_fp16_gradients_underflow_without_loss_scaling():
  """Gradients below float16's smallest subnormal (6e-8) flush to zero at S = 1: the
  run stands still; at S = 2**15 the same run trains."""
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (64, 4)).astype(jnp.float16)
  y = (x.astype(jnp.float32) @ jax.random.normal(kw, (4,))).astype(jnp.float16)

  def loss_fn(p):  # tiny loss weight: dL/dr ~ 1e-9, below float16's range
    return 1e-10 * jnp.sum(jnp.square((x @ p["w"] - y).astype(jnp.float32)))

  params = {"w": jnp.zeros(4, jnp.float16)}
  p, _, losses = _train(optix.with_master_weights(optix.adam(0.05)), loss_fn, params, 20, False)
  np.testing.assert_array_equal(p["w"], 0.0)
  tx = optix.with_master_weights(optix.dynamic_loss_scaling(optix.adam(0.05)))
  p, state, scaled_losses = _train(tx, loss_fn, params, 20, True)
  assert int(state.inner_state.loss_scale.skipped) == 0
  assert scaled_losses[-1] < 0.5 * scaled_losses[0]


def test_function_form_training_step():
  """The jmp-style use: scale, unscale, check, select, adjust in the user's step."""
  loss_fn, params = _overflow_problem()
  ls = optix.DynamicLossScale(growth_interval=20)
  tx = optix.with_master_weights(optix.adam(0.5))

  @jax.jit
  def step(params, opt_state, ls_state):
    grads = jax.grad(lambda p: ls.scale(loss_fn(p), ls_state))(params)
    grads = ls.unscale(grads, ls_state, jnp.float32)  # keep gradients above 65504
    finite = optix.all_finite(grads)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    params = optix.select_tree(finite, optix.apply_updates(params, updates), params)
    opt_state = optix.select_tree(finite, new_opt_state, opt_state)
    return params, opt_state, ls.adjust(ls_state, finite)

  opt_state, ls_state, first = tx.init(params), ls.init(), float(loss_fn(params))
  for _ in range(150):
    params, opt_state, ls_state = step(params, opt_state, ls_state)
  assert int(ls_state.skipped) >= 15
  assert float(loss_fn(params)) < 1e-3 * first
