"""optix.transforms.moments against the formulas written out here (NumPy, float64): the EMA of
the gradient and of its squared modulus, the bias correction and NAdam's look-ahead, leaf by
leaf and over trees, with the moment's dtype kept."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from optix.transforms import moments

M = np.array([1.0, -2.0, 0.5])
G = np.array([3.0, 4.0, -1.0])
B = 0.9


def _close(x, want, dtype=jnp.float32):
  assert x.dtype == dtype, x.dtype
  np.testing.assert_allclose(np.asarray(x, np.float64), want, rtol=1e-6)


def test_abs_sq_real_and_complex():
  _close(moments.abs_sq(jnp.asarray(G, jnp.float32)), G ** 2)
  z = jnp.asarray([3 + 4j, -1j], jnp.complex64)
  _close(moments.abs_sq(z), [25.0, 1.0])


@pytest.mark.parametrize("value_dtype", [jnp.float32, jnp.bfloat16])
def test_ema_leaf_in_the_moment_dtype(value_dtype):
  out = moments.ema_leaf(B, jnp.asarray(M, jnp.float32), jnp.asarray(G, value_dtype))
  _close(out, B * M + (1 - B) * G)


def test_ema_leaf_complex_keeps_the_imaginary_part():
  z = jnp.asarray([3 + 4j, -1j], jnp.complex64)
  out = moments.ema_leaf(B, jnp.ones(2, jnp.complex64), z)
  assert out.dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(out), B + (1 - B) * np.array([3 + 4j, -1j]), rtol=1e-6)


def test_ema_sq_leaf_real_and_complex():
  out = moments.ema_sq_leaf(B, jnp.asarray(M ** 2, jnp.float32), jnp.asarray(G, jnp.bfloat16))
  _close(out, B * M ** 2 + (1 - B) * G ** 2)
  z = jnp.asarray([3 + 4j, -1j, 2.0], jnp.complex64)
  out = moments.ema_sq_leaf(B, jnp.zeros(3, jnp.complex64), z)
  assert out.dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(out), (1 - B) * np.array([25.0, 1.0, 4.0]), rtol=1e-6)


def test_correction_and_debias():
  count = jnp.asarray(3, jnp.int32)
  _close(moments.correction(B, count), 1 - B ** 3)
  _close(moments.debias_leaf(jnp.asarray(M, jnp.float32), moments.correction(B, count)),
         M / (1 - B ** 3))
  # A bfloat16 moment (state_dtype=bfloat16) stays bfloat16: the correction is cast to it.
  low = moments.debias_leaf(jnp.asarray(M, jnp.bfloat16), moments.correction(B, count))
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float64), M / (1 - B ** 3), rtol=1e-2)
  tree = moments.debias({"a": jnp.asarray(M, jnp.float32), "b": jnp.asarray(G, jnp.float32)},
                        B, count)
  _close(tree["a"], M / (1 - B ** 3))
  _close(tree["b"], G / (1 - B ** 3))


@pytest.mark.parametrize("count", [1, 2, 7])
def test_nesterov_look_ahead(count):
  want = B * M / (1 - B ** (count + 1)) + (1 - B) * G / (1 - B ** count)
  c = jnp.asarray(count, jnp.int32)
  m, g = jnp.asarray(M, jnp.float32), jnp.asarray(G, jnp.float32)
  leaf = moments.nesterov_leaf(m, g, B, moments.correction(B, c), moments.correction(B, c + 1))
  _close(leaf, want)
  tree = moments.nesterov({"w": m, "v": [m * 2]}, {"w": g, "v": [g * 2]}, B, c)
  _close(tree["w"], want)
  _close(tree["v"][0], 2 * want)


def test_nesterov_at_the_saturated_count_stays_finite():
  c = jnp.asarray(2 ** 31 - 1, jnp.int32)
  out = moments.nesterov({"w": jnp.asarray(M, jnp.float32)}, {"w": jnp.asarray(G, jnp.float32)},
                         B, c)
  _close(out["w"], B * M + (1 - B) * G)


def test_tree_emas():
  m = {"a": jnp.asarray(M, jnp.float32), "b": (jnp.asarray(G, jnp.float32),)}
  g = {"a": jnp.asarray(G, jnp.float32), "b": (jnp.asarray(M, jnp.float32),)}
  first, second = moments.ema(B, m, g), moments.ema_sq(B, m, g)
  _close(first["a"], B * M + (1 - B) * G)
  _close(first["b"][0], B * G + (1 - B) * M)
  _close(second["a"], B * M + (1 - B) * G ** 2)
  _close(second["b"][0], B * G + (1 - B) * M ** 2)


def test_an_array_decay_keeps_the_moment_dtype():
  """A float32 array decay (``optax.inject_hyperparams`` traces it) with bfloat16 moments: the
  EMAs come back bfloat16, as the state they are stored in."""
  d = jnp.float32(B)
  m = jnp.asarray(M, jnp.bfloat16)
  first = moments.ema_leaf(d, m, jnp.asarray(G, jnp.float32))
  second = moments.ema_sq_leaf(d, m, jnp.asarray(G, jnp.float32))
  assert first.dtype == jnp.bfloat16 and second.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(first, np.float64), B * M + (1 - B) * G, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(second, np.float64), B * M + (1 - B) * G ** 2, rtol=1e-2)


def test_injected_decay_keeps_a_bfloat16_state_through_a_step():
  p = jnp.asarray(G, jnp.float32)
  tx = optax.inject_hyperparams(optix.scale_by_adam, static_args=("mu_dtype", "state_dtype"))(
      b1=B, mu_dtype=jnp.bfloat16, state_dtype=jnp.bfloat16)
  state = tx.init(p)
  _, new = tx.update(p, state)
  assert new.inner_state.mu.dtype == new.inner_state.nu.dtype == jnp.bfloat16
  assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, state)
