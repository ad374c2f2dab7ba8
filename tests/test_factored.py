"""Adafactor: hand-computed steps, the relative step size, clipping, and optax parity
for tensors the registry's tree does not cover."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from optix.transforms.factored import factored_dims


def test_factored_dims_picks_the_two_largest_axes():
  assert factored_dims((8, 6), True, 4) == (1, 0)
  assert factored_dims((3, 7, 5), True, 4) == (2, 1)
  assert factored_dims((8, 3), True, 4) is None     # second-largest axis too small
  assert factored_dims((8,), True, 1) is None       # vectors are never factored
  assert factored_dims((8, 6), False, 1) is None


def test_first_factored_step_by_hand():
  g = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], np.float32)
  tx = optix.scale_by_factored_rms(min_dim_size_to_factor=1, epsilon=0.0)
  u, state = tx.update(jnp.asarray(g), tx.init(jnp.zeros((2, 3))))
  # beta_1 = 1 - 1**-0.8 = 0: the statistics are this step's means of g².
  row = (g ** 2).mean(axis=1)           # over the largest axis (3): one per row
  col = (g ** 2).mean(axis=0)           # over the other axis: one per column
  v_hat = np.outer(row, col) / row.mean()
  np.testing.assert_allclose(state.v_row, row, rtol=1e-6)
  np.testing.assert_allclose(state.v_col, col, rtol=1e-6)
  np.testing.assert_allclose(u, g / np.sqrt(v_hat), rtol=1e-6)
  assert state.v.shape == ()            # no full-size buffer for a factored leaf


def test_rank_one_squares_are_reconstructed_exactly():
  a, b = np.array([1.0, 2.0, 0.5, 4.0]), np.array([3.0, 0.1, 1.0, 2.0, 0.7])
  g = jnp.asarray(np.outer(a, b), jnp.float32)
  tx = optix.scale_by_factored_rms(min_dim_size_to_factor=1, epsilon=0.0)
  u, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(u, np.ones((4, 5)), rtol=1e-5)  # g / sqrt(g²)


def test_unfactored_second_moment_follows_the_decay_schedule():
  g1, g2 = jnp.array([1.0, -2.0]), jnp.array([3.0, 1.0])
  tx = optix.scale_by_factored_rms(epsilon=0.0)
  state = tx.init(g1)
  u1, state = tx.update(g1, state)
  np.testing.assert_allclose(u1, [1.0, -1.0], rtol=1e-6)     # beta_1 = 0: g / |g|
  u2, state = tx.update(g2, state)
  beta2 = 1 - 2.0 ** -0.8
  v2 = beta2 * np.array([1.0, 4.0]) + (1 - beta2) * np.array([9.0, 1.0])
  np.testing.assert_allclose(state.v, v2, rtol=1e-6)
  np.testing.assert_allclose(u2, np.array([3.0, 1.0]) / np.sqrt(v2), rtol=1e-6)
  assert state.v_row.shape == () and int(state.count) == 2


def test_decay_offset_restarts_the_schedule():
  """optax gives NaN before ``decay_offset`` steps (t <= 0); we hold t at 1 there
  (β₂ = 0: the statistics restart), then count from the offset as optax does."""
  tx = optix.scale_by_factored_rms(step_offset=2, epsilon=0.0)
  state = tx.init(jnp.zeros(2))
  for g in ([1.0, 2.0], [3.0, 1.0], [2.0, 2.0]):
    _, state = tx.update(jnp.array(g), state)
    assert np.all(np.isfinite(state.v))
  np.testing.assert_allclose(state.v, [4.0, 4.0])  # step 3 - offset 2 = t 1: β₂ = 0
  _, state = tx.update(jnp.array([0.0, 0.0]), state)
  np.testing.assert_allclose(state.v, (1 - 2.0 ** -0.8) * 4.0, rtol=1e-6)


def test_relative_step_schedule():
  tx = optix.scale_by_relative_step(max_step=0.5)
  state = tx.init(None)
  got = []
  for _ in range(9):
    u, state = tx.update(jnp.ones(()), state)
    got.append(float(u))
  np.testing.assert_allclose(got, [0.5] * 4 + [1 / np.sqrt(t) for t in range(5, 10)], rtol=1e-6)


def test_paper_defaults_step_by_hand():
  """No learning rate: step t moves by min(1e-2, 1/sqrt t) · max(1e-3, RMS(θ)) · clip(u)."""
  params = {"w": jnp.array([3.0, -4.0, 0.0, 5.0]), "z": jnp.zeros(3)}
  grads = {"w": jnp.array([0.1, -2.0, 5.0, 1.0]), "z": jnp.array([1.0, -1.0, 2.0])}
  tx = optix.adafactor()
  updates, _ = tx.update(grads, tx.init(params), params)
  rms_w = np.sqrt(np.mean(np.square([3.0, 4.0, 0.0, 5.0])))
  # Step 1 of a vector: u = sign(g) (RMS 1, not clipped).
  np.testing.assert_allclose(updates["w"], -1e-2 * rms_w * np.sign(grads["w"]), rtol=1e-5)
  # Zero-initialised params still move, at the ε₂ = 1e-3 floor.
  np.testing.assert_allclose(updates["z"], -1e-2 * 1e-3 * np.sign(grads["z"]), rtol=1e-5)


def test_learning_rate_and_relative_step_are_exclusive():
  with pytest.raises(ValueError, match="learning_rate must be None"):
    optix.adafactor(1e-3, relative_step=True)
  # relative_step=False without a learning rate is optax's learning_rate=None.
  params = {"w": jnp.arange(6.0).reshape(2, 3)}
  grads = {"w": jnp.ones((2, 3))}
  ours = optix.adafactor(relative_step=False, min_dim_size_to_factor=1)
  ref = optax.adafactor(None, min_dim_size_to_factor=1)
  np.testing.assert_allclose(ours.update(grads, ours.init(params), params)[0]["w"],
                             ref.update(grads, ref.init(params), params)[0]["w"], rtol=1e-6)


def test_update_clipping_by_block_rms():
  u = jnp.array([4.0, -4.0, 4.0, -4.0])                 # RMS 4
  out, _ = optix.clip_by_block_rms(2.0).update({"a": u, "b": u / 8}, optax.EmptyState())
  np.testing.assert_allclose(out["a"], u / 2)           # divided by RMS/d = 2
  np.testing.assert_allclose(out["b"], u / 8)           # RMS 0.5 <= d: untouched


@pytest.mark.parametrize("kwargs", [
    dict(min_dim_size_to_factor=2),                       # 3-D tensors factored
    dict(factored=False, clipping_threshold=None),
    dict(decay_rate=0.5, momentum=0.8),
])
def test_matches_optax_on_higher_rank_tensors(kwargs):
  k = jax.random.split(jax.random.key(0), 3)
  params = {"conv": jax.random.normal(k[0], (3, 4, 6, 5)), "w": jax.random.normal(k[1], (7, 9)),
            "b": jax.random.normal(k[2], (9,))}
  ours, ref = optix.adafactor(0.05, **kwargs), optax.adafactor(0.05, **kwargs)
  p1, p2, s1, s2 = params, params, ours.init(params), ref.init(params)
  for key in jax.random.split(jax.random.key(1), 8):
    g = optix.testing.random_like(key, params)
    u1, s1 = ours.update(g, s1, p1)
    u2, s2 = ref.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p2)


def test_factored_state_is_rows_plus_columns():
  params = {"w": jax.ShapeDtypeStruct((1024, 512), jnp.float32),
            "b": jax.ShapeDtypeStruct((512,), jnp.float32)}
  report = optix.tools.state_memory(optix.adafactor(), params)
  # count + relative-step count (int32) + row/col stats + a full v for the vector
  # + three float32 scalar placeholders (v of the matrix, rows and columns of the vector).
  assert report.total_bytes == 4 * (2 + 1024 + 512 + 512 + 3)


def test_relative_step_adafactor_fits_least_squares():
  a = jax.random.normal(jax.random.key(0), (64, 16))
  x_true = jax.random.normal(jax.random.key(1), (16, 4))
  loss = lambda p: jnp.mean(jnp.square(a @ p["x"] - a @ x_true))  # noqa: E731
  params = {"x": 0.1 * jax.random.normal(jax.random.key(2), (16, 4))}
  tx = optix.adafactor(min_dim_size_to_factor=4, max_relative_step=0.1)

  @jax.jit
  def step(params, state):
    g = jax.grad(loss)(params)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  state, start = tx.init(params), loss(params)
  for _ in range(200):
    params, state = step(params, state)
  assert loss(params) < 0.05 * start
