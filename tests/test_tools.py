"""optix.tools (LR range test, loss landscape) and the optix.monitor transform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix
from optix import tools


# A logistic regression whose best fixed learning rate we find by brute force.
def _logistic_problem():
  rng = np.random.default_rng(0)
  d, n, b = 20, 512, 32
  x = rng.normal(size=(n, d)).astype(np.float32) * np.linspace(0.3, 1.5, d).astype(np.float32)
  w = rng.normal(size=(d,)).astype(np.float32)
  y = (x @ w + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
  params = {"w": jnp.zeros(d), "b": jnp.zeros(())}

  def loss_fn(p, batch):
    xb, yb = batch
    z = xb @ p["w"] + p["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - yb * z)

  batches = (jnp.asarray(x.reshape(-1, b, d)), jnp.asarray(y.reshape(-1, b)))
  return loss_fn, params, batches, (jnp.asarray(x), jnp.asarray(y))


def _best_fixed_lr(loss_fn, params, batches, full, factory, lrs, steps=100):
  num = batches[0].shape[0]

  @jax.jit
  def final_loss(lr):
    tx = factory(lr)

    def step(carry, i):
      p, s = carry
      g = jax.grad(loss_fn)(p, jax.tree.map(lambda a: a[i % num], batches))
      u, s = tx.update(g, s, p)
      return (optix.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return loss_fn(p, full)

  losses = np.array([float(final_loss(lr)) for lr in lrs])
  return lrs[np.argmin(np.where(np.isfinite(losses), losses, np.inf))]


def _least_squares_problem():
  # Ill-conditioned (feature scales 0.1..1): fitted direction by direction as the LR grows.
  rng = np.random.default_rng(1)
  d, n, b = 30, 512, 32
  x = rng.normal(size=(n, d)).astype(np.float32) * np.geomspace(0.1, 1.0, d).astype(np.float32)
  y = x @ rng.normal(size=(d,)).astype(np.float32) + 0.1 * rng.normal(size=n).astype(np.float32)
  loss_fn = lambda p, batch: 0.5 * jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2)
  batches = (jnp.asarray(x.reshape(-1, b, d)), jnp.asarray(y.reshape(-1, b)))
  return loss_fn, {"w": jnp.zeros(d)}, batches, (jnp.asarray(x), jnp.asarray(y))


_MOMENTUM = lambda lr: optix.sgd(lr, momentum=0.9)


@pytest.mark.parametrize("problem,name,factory", [
    (_logistic_problem, "sgd", optix.sgd), (_logistic_problem, "momentum", _MOMENTUM),
    (_logistic_problem, "adam", optix.adam), (_least_squares_problem, "sgd", optix.sgd),
    (_least_squares_problem, "momentum", _MOMENTUM)])
def test_lr_range_test_within_3x_of_best_fixed_lr(problem, name, factory, tmp_path):
  loss_fn, params, batches, full = problem()
  result = tools.lr_range_test(loss_fn, params, batches, factory, 1e-4, 100.0, 100)
  best = _best_fixed_lr(loss_fn, params, batches, full, factory, np.logspace(-4, 2, 25))
  assert best / 3 <= result.suggested_lr <= 3 * best, (name, result.suggested_lr, best)
  assert result.suggested_lr == pytest.approx(result.min_loss_lr / 4)
  assert result.stopped_early  # swept into divergence and stopped
  assert np.all(np.diff(result.lrs) > 0) and result.lrs[0] == pytest.approx(1e-4)
  assert result.lrs[0] < result.steepest_lr < result.lrs[-1]
  if problem is _logistic_problem and name == "sgd":
    out = result.plot(str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").stat().st_size > 5_000 and out.endswith("lr.png")


def test_lr_range_test_steepest_rule_misses_with_momentum():
  # Why the suggestion is not the steepest point: heavy-ball momentum makes its progress early
  # in the sweep, so the loss falls fastest at ~0.1x the best fixed LR (1.78 on this grid).
  loss_fn, params, batches, full = _logistic_problem()
  result = tools.lr_range_test(loss_fn, params, batches, _MOMENTUM, 1e-4, 100.0, 100)
  best = _best_fixed_lr(loss_fn, params, batches, full, _MOMENTUM, np.logspace(-4, 2, 25))
  assert result.steepest_lr < best / 3 <= result.suggested_lr


def test_lr_range_test_validates():
  loss_fn, params, batches, _ = _logistic_problem()
  with pytest.raises(ValueError, match="max_lr"):
    tools.lr_range_test(loss_fn, params, batches, optix.sgd, 1e-2, 1e-3, 10)
  with pytest.raises(ValueError, match="steps"):
    tools.lr_range_test(loss_fn, params, batches, optix.sgd, 1e-4, 1.0, 1)
  with pytest.raises(ValueError, match="safety_factor"):
    tools.lr_range_test(loss_fn, params, batches, optix.sgd, 1e-4, 1.0, 10, safety_factor=0.5)


def _mlp():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {"dense1": {"kernel": jax.random.normal(k1, (4, 8)) * 0.5, "bias": jnp.zeros(8)},
            "dense2": {"kernel": jax.random.normal(k2, (8, 1)) * 0.5, "bias": jnp.zeros(1)}}
  x = jax.random.normal(k3, (64, 4))
  y = jnp.sin(x[:, :1])

  def loss_fn(p, data):
    xb, yb = data
    h = jnp.tanh(xb @ p["dense1"]["kernel"] + p["dense1"]["bias"])
    return jnp.mean((h @ p["dense2"]["kernel"] + p["dense2"]["bias"] - yb) ** 2)

  return loss_fn, params, (x, y)


def test_loss_landscape_center_equals_loss(tmp_path):
  loss_fn, params, data = _mlp()
  res = tools.loss_landscape(loss_fn, params, data, resolution=7, span=0.5)
  expected = float(loss_fn(params, data))
  assert res.alphas[3] == 0.0
  np.testing.assert_allclose(res.loss_2d[3, 3], expected, rtol=1e-6)
  np.testing.assert_allclose(res.loss_1d[3], expected, rtol=1e-6)
  np.testing.assert_allclose(res.center_loss, expected, rtol=1e-6)
  assert res.loss_2d.shape == (7, 7) and np.all(np.isfinite(res.loss_2d))
  # Row β = 0 of the surface is the 1-D slice.
  np.testing.assert_allclose(res.loss_2d[3], res.loss_1d, rtol=1e-5)
  s = res.sharpness
  assert s["max_increase"] >= 0 and s["keskar"] >= 0 and 0 < s["flat_fraction"] <= 1
  res.plot(str(tmp_path / "land.png"))
  assert (tmp_path / "land.png").stat().st_size > 5_000


def test_loss_landscape_quadratic_curvature_and_filter_norm():
  # L(θ) = ½ Σ θ², so along any direction d the second difference is exactly ‖d‖².
  params = {"k": jnp.arange(1.0, 7.0).reshape(2, 3), "v": jnp.array([3.0, 4.0])}
  loss_fn = lambda p, _: 0.5 * sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
  res = tools.loss_landscape(loss_fn, params, None, resolution=5, span=1.0)
  d1 = res.directions[0]
  # Filter-normalized: each column of the kernel has the norm of the weights' column.
  np.testing.assert_allclose(jnp.linalg.norm(d1["k"], axis=0),
                             jnp.linalg.norm(params["k"], axis=0), rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(d1["v"]), 5.0, rtol=1e-5)
  dd = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(d1))
  np.testing.assert_allclose(res.sharpness["curvature"], dd, rtol=1e-3)


def test_loss_landscape_validates():
  with pytest.raises(ValueError, match="resolution"):
    tools.loss_landscape(lambda p, d: 0.0, {"a": jnp.ones(2)}, None, resolution=4)
  with pytest.raises(ValueError, match="span"):
    tools.loss_landscape(lambda p, d: 0.0, {"a": jnp.ones(2)}, None, span=0.0)


def test_monitor_norms_equal_hand_values():
  params = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[1.0, 2.0], [2.0, 4.0]])}
  grads = {"a": jnp.array([0.0, 2.0]), "b": jnp.array([[1.0, 0.0], [0.0, 0.0]])}
  tx = optix.monitor(optix.sgd(0.1))
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  # Pass-through: the wrapped SGD's updates.
  np.testing.assert_allclose(updates["a"], [0.0, -0.2], rtol=1e-6)
  stats = optix.monitor_stats(state)
  np.testing.assert_allclose(stats["grad_norm"], np.sqrt(5.0), rtol=1e-6)
  np.testing.assert_allclose(state.layer_grad_norms["a"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(state.layer_grad_norms["b"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(stats["update_norm"], 0.1 * np.sqrt(5.0), rtol=1e-6)
  np.testing.assert_allclose(stats["param_norm"], np.sqrt(25.0 + 25.0), rtol=1e-6)
  np.testing.assert_allclose(stats["update_ratio"], 0.1 * np.sqrt(5.0) / np.sqrt(50.0), rtol=1e-6)
  np.testing.assert_allclose(state.layer_update_ratios["a"], 0.2 / 5.0, rtol=1e-6)
  np.testing.assert_allclose(state.layer_update_ratios["b"], 0.1 / 5.0, rtol=1e-6)
  np.testing.assert_allclose(stats["effective_lr"], 0.1, rtol=1e-6)  # SGD: exactly the LR
  assert int(stats["count"]) == 1 and int(stats["spike"]) == 0


def test_monitor_detects_spikes_in_a_scan():
  params = {"w": jnp.zeros(3)}
  tx = optix.monitor(optix.adam(1e-3), spike_factor=4.0, warmup_steps=5)
  scales = jnp.array([1.0] * 20 + [50.0] + [1.0] * 5 + [jnp.nan] + [1.0] * 3)

  def step(state, s):
    g = {"w": s * jnp.array([1.0, -1.0, 0.5])}
    _, state = tx.update(g, state, params)
    return state, (state.spike, optix.monitor_stats(state)["grad_norm_mean"])

  state, (spikes, means) = jax.jit(lambda st: jax.lax.scan(step, st, scales))(tx.init(params))
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(spikes)), [20, 26])
  assert int(state.num_spikes) == 2
  # Spikes stay out of the running mean: it is the norm of the unit gradient throughout.
  np.testing.assert_allclose(means, np.linalg.norm([1.0, -1.0, 0.5]), rtol=1e-5)


def test_monitor_alone_is_identity_and_validates():
  params = {"w": jnp.ones(2)}
  tx = optix.monitor()
  g = {"w": jnp.array([1.0, 2.0])}
  updates, state = tx.update(g, tx.init(params), params)
  np.testing.assert_array_equal(updates["w"], g["w"])
  np.testing.assert_allclose(state.effective_lr, 1.0)
  with pytest.raises(ValueError, match="spike_factor"):
    optix.monitor(spike_factor=0.5)
  with pytest.raises(ValueError, match="decay"):
    optix.monitor(decay=1.0)
  with pytest.raises(ValueError, match="no MonitorState"):
    optix.monitor_stats(optix.adam(1e-3).init(params))
