"""K-FAC: captured statistics equal hand computations; fewer steps than tuned Adam on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
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


def _xent(model, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def test_captured_factors_equal_hand_computation():
  model = optix.kfac_tap(MLP([3, 4, 2], nnx.Rngs(0)))
  x = jax.random.normal(jax.random.key(1), (5, 3))
  y = jnp.array([0, 1, 1, 0, 1])
  loss, grads, stats = optix.kfac_value_and_grad(_xent, model, x, y)
  assert sorted(stats) == ["layers/0/layer", "layers/1/layer"]

  # By hand: forward with explicit pre-activations, backward by jax.vjp on them.
  w0, b0 = model.layers[0].layer.kernel[...], model.layers[0].layer.bias[...]
  w1, b1 = model.layers[1].layer.kernel[...], model.layers[1].layer.bias[...]
  h = jnp.tanh(x @ w0 + b0)

  def loss_from(s0, s1):  # s0, s1: perturbations of the two layers' outputs
    out = jnp.tanh(x @ w0 + b0 + s0) @ w1 + b1 + s1
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

  g0, g1 = jax.grad(loss_from, argnums=(0, 1))(jnp.zeros((5, 4)), jnp.zeros((5, 2)))
  aug = lambda a: jnp.concatenate([a, jnp.ones((a.shape[0], 1))], 1)
  for key, a, g in [("layers/0/layer", x, g0), ("layers/1/layer", h, g1)]:
    np.testing.assert_allclose(stats[key].aa, aug(a).T @ aug(a), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[key].gg, g.T @ g, rtol=1e-5, atol=1e-9)
    assert float(stats[key].count) == 5.0
  # The gradient is the ordinary one, and sum_n a_n g_n^T = dL/dW.
  np.testing.assert_allclose(grads["layers"][1]["layer"]["kernel"][...], h.T @ g1, rtol=1e-5)
  np.testing.assert_allclose(loss, loss_from(0.0, 0.0), rtol=1e-6)


def test_preconditioned_update_hand_computed():
  """One step, period 1, no EMA history: U = (A + π√λ)⁻¹ [∇W; ∇b] (G + √λ/π)⁻¹."""
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}, "scale": jnp.ones(4)}
  a = jnp.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])
  g = jnp.array([[0.1, 0.0, -0.2], [0.3, 0.1, 0.0], [0.0, -0.1, 0.2]])
  ab = jnp.concatenate([a, jnp.ones((3, 1))], 1)
  stats = {"dense": optix.LayerStats(ab.T @ ab, g.T @ g, jnp.asarray(3.0))}
  grads = {"dense": {"kernel": a.T @ g, "bias": g.sum(0)}, "scale": jnp.array([0.1, -0.2, 0., 1.])}
  lam = 0.01
  tx = optix.scale_by_kfac(damping=lam, ema_decay=0.5, inverse_update_period=1)
  u, _ = tx.update(grads, tx.init(params), params, kfac_stats=stats)
  big_a, big_g = ab.T @ ab / 3.0, g.T @ g * 3.0
  pi = jnp.sqrt((jnp.trace(big_a) / 3) / (jnp.trace(big_g) / 3))
  m = jnp.concatenate([grads["dense"]["kernel"], grads["dense"]["bias"][None]], 0)
  want = jnp.linalg.solve(big_a + pi * jnp.sqrt(lam) * jnp.eye(3), m) @ \
      jnp.linalg.inv(big_g + jnp.sqrt(lam) / pi * jnp.eye(3))
  np.testing.assert_allclose(u["dense"]["kernel"], want[:2], rtol=2e-4)
  np.testing.assert_allclose(u["dense"]["bias"], want[2], rtol=2e-4)
  # Diagonal fallback: g / (g² + λ) after one debiased EMA step.
  s = grads["scale"]
  np.testing.assert_allclose(u["scale"], s / (s * s + lam), rtol=1e-5)


def test_inverses_refresh_only_every_period_steps():
  params = {"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
  tx = optix.scale_by_kfac(inverse_update_period=3)
  state = tx.init(params)
  step = jax.jit(lambda s, k: tx.update(params, s, params, kfac_stats={"d": optix.LayerStats(
      k * jnp.eye(3), k * jnp.eye(2), jnp.asarray(1.0))}))
  invs = []
  for k in [1.0, 2.0, 3.0, 4.0]:
    _, state = step(state, k)
    invs.append(state.a_inv["d"])
  np.testing.assert_array_equal(invs[0], invs[1])
  np.testing.assert_array_equal(invs[0], invs[2])
  assert not np.allclose(invs[2], invs[3])


def test_unknown_layer_in_stats_is_named():
  params = {"d": {"kernel": jnp.ones((2, 2))}}
  tx = optix.scale_by_kfac()
  with pytest.raises(ValueError, match="nope"):
    tx.update(params, tx.init(params), params,
              kfac_stats={"nope": optix.LayerStats(jnp.eye(2), jnp.eye(2), jnp.asarray(1.0))})


def test_missing_stats_raise_instead_of_a_silent_diagonal_fallback():
  params = {"d": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros((2,))}, "scale": jnp.ones((2,))}
  grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
  tx = optix.kfac(0.1)
  with pytest.raises(ValueError, match=r"kfac_stats.*\['d'\].*require_stats=False"):
    tx.update(grads, tx.init(params), params)
  # Under nnx.Optimizer, the same call without statistics is refused by name.
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optix.kfac(0.1), wrt=nnx.Param)
  g = nnx.grad(lambda m: jnp.mean(m(jnp.ones((4, 3))) ** 2))(model)
  with pytest.raises(ValueError, match="kfac_stats"):
    opt.update(model, g)
  # Explicitly empty statistics, or require_stats=False: the diagonal fallback, as documented.
  explicit, _ = tx.update(grads, tx.init(params), params, kfac_stats={})
  lenient = optix.kfac(0.1, require_stats=False)
  allowed, _ = lenient.update(grads, lenient.init(params), params)
  for a, b in zip(jax.tree.leaves(explicit), jax.tree.leaves(allowed)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="require_stats"):
    optix.kfac(0.1, require_stats="no")


# ----------------------------------------------------------------- digits: steps to target

_DIGITS = load_digits()
_X = jnp.asarray(_DIGITS.data / 16.0, jnp.float32)
_Y = jnp.asarray(_DIGITS.target)


def _ae_loss(model, x, y):
  del y
  return jnp.mean(jnp.sum((jax.nn.sigmoid(model(x)) - x) ** 2, -1))


def _steps_to_target(sizes, loss_fn, tx, target, max_steps, use_stats):
  """Full-batch training on digits; steps until the training loss is below target."""
  model = optix.kfac_tap(MLP(sizes, nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = tx.init(params)

  @jax.jit
  def run(params, state):
    def body(c):
      i, params, state, _ = c
      loss, grads, stats = optix.kfac_value_and_grad(loss_fn, nnx.merge(graphdef, params, rest),
                                                     _X, _Y)
      extra = {"kfac_stats": stats} if use_stats else {}
      updates, state = tx.update(grads, state, params, **extra)
      return i + 1, optax.apply_updates(params, updates), state, loss
    return jax.lax.while_loop(lambda c: (c[0] < max_steps) & (c[3] >= target), body,
                              (0, params, state, jnp.inf))

  i, _, _, loss = run(params, state)
  return int(i) - 1 if float(loss) < target else None  # the loss is that of the step before


TASKS = {
    # name: (sizes, loss, target, K-FAC config, Adam learning rates tried)
    "classifier": ([64, 64, 10], _xent, 0.01,
                   dict(learning_rate=0.3, damping=3e-2, momentum=0.9), (0.01, 0.03, 0.1)),
    "autoencoder": ([64, 32, 16, 8, 16, 32, 64], _ae_loss, 2.0,
                    dict(learning_rate=0.1, damping=1e-2, momentum=0.9, kl_clip=1e-3),
                    (0.01, 0.03, 0.1)),
}


@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.slow) if t == "autoencoder"
                                  else t for t in TASKS])
def test_kfac_reaches_target_in_far_fewer_steps_than_tuned_adam(task):
  sizes, loss_fn, target, config, adam_lrs = TASKS[task]
  kfac_steps = _steps_to_target(sizes, loss_fn, optix.kfac(**config), target, 100, True)
  adam_steps = [_steps_to_target(sizes, loss_fn, optix.adam(lr), target, 300, False)
                for lr in adam_lrs]
  best_adam = min(s if s is not None else 10 ** 9 for s in adam_steps)
  print(f"{task}: K-FAC {kfac_steps} steps, Adam {dict(zip(adam_lrs, adam_steps))}")
  assert kfac_steps is not None
  assert 2 * kfac_steps <= best_adam, (kfac_steps, adam_steps)


def test_state_dtype_policy_float64_stays_float64():
  """At least float32, same kind: float64 params keep float64 factors, inverses and fallback."""
  with jax.enable_x64(True):
    dense = {"kernel": jnp.ones((3, 2), jnp.float64), "bias": jnp.zeros(2, jnp.float64)}
    params = {"dense": dense, "scale": jnp.ones(2, jnp.bfloat16)}
    tx = optix.kfac(0.1, momentum=0.9)
    state = tx.init(params)
    kfac_state = state[0]
    for tree in (kfac_state.a, kfac_state.g, kfac_state.a_inv, kfac_state.g_inv):
      assert tree["dense"].dtype == jnp.float64
    assert kfac_state.diag["dense"]["kernel"].dtype == jnp.float64
    assert kfac_state.diag["scale"].dtype == jnp.float32  # bf16 -> float32
    a = jnp.ones((4, 4), jnp.float64)
    stats = {"dense": optix.LayerStats(a.T @ a + jnp.eye(4), jnp.eye(2), jnp.asarray(4.0))}
    u, new_state = jax.jit(lambda s: tx.update(params, s, params, kfac_stats=stats))(state)
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
    assert u["dense"]["kernel"].dtype == jnp.float64 and u["scale"].dtype == jnp.bfloat16
    f32 = optix.scale_by_kfac(state_dtype=jnp.float32).init(params)
    assert f32.a["dense"].dtype == jnp.float32 and f32.diag["dense"]["kernel"].dtype == jnp.float32


def test_complex_params_raise_naming_the_leaf():
  params = {"dense": {"kernel": jnp.ones((3, 2))}, "phase": jnp.ones(2, jnp.complex64)}
  with pytest.raises(ValueError, match="phase"):
    optix.kfac(0.1).init(params)


def test_capture_module_is_the_public_one():
  from optix.contrib import nnx as capture
  assert optix.kfac_tap is capture.kfac_tap and optix.KFACTap is capture.KFACTap
  assert optix.KFACProbe is capture.KFACProbe
  assert optix.kfac_value_and_grad is capture.kfac_value_and_grad
