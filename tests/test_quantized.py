"""The block-wise dynamic 8-bit codec (property tests) and Adam on 8-bit state."""

import functools
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix
from optix.transforms.quantized import dequantize, dynamic_map, quantize, quantized_zeros

SETTINGS = hypothesis.settings(max_examples=20, deadline=None, derandomize=True,
                               phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _jit_round_trip(x, signed, block_size):
  q = quantize(x, signed, block_size)
  return q, dequantize(q, signed, block_size)


_jit_quantize = jax.jit(quantize, static_argnums=(1, 2))


def _round_trip(x, signed, block_size):
  q, y = _jit_round_trip(jnp.asarray(x), signed, block_size)
  return q, np.asarray(y)


def _blocks(x, block_size):
  """(n_blocks, block_size) float64 view, zero-padded."""
  flat = np.ravel(x).astype(np.float64)
  return np.pad(flat, (0, -flat.size % block_size)).reshape(-1, block_size)


@st.composite
def tensors(draw, signed=True):
  shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=100))
  magnitude = st.floats(-1e6, 1e6, allow_nan=False, width=32)
  x = draw(hnp.arrays(np.float32, shape, elements=magnitude))
  x = x * np.float32(10.0) ** draw(st.integers(-20, 20))  # any overall scale
  x = x.astype(np.float32)
  x[np.abs(x) < np.finfo(np.float32).tiny] = 0  # XLA on CPU flushes denormals to zero
  return x if signed else np.abs(x)


@pytest.mark.parametrize("signed", [True, False])
def test_map_shape_and_landmarks(signed):
  m = dynamic_map(signed)
  assert m.shape == (256,) and m.dtype == np.float32
  assert np.all(np.diff(m) >= 0) and m[-1] == 1.0 and 0.0 in m
  assert m[0] == (-1.0 if signed else 0.0)
  nonzero = np.abs(m[m != 0])
  assert nonzero.min() == pytest.approx(1e-6 if signed else 1e-7)
  # The finest grid is at the top: spacing 0.9/64 (signed) or 0.9/128 (unsigned).
  assert np.diff(m).max() == pytest.approx(0.9 / (64 if signed else 128), rel=1e-5)


@SETTINGS
@hypothesis.given(x=tensors(), block_size=st.sampled_from([1, 7, 64, 256]),
                  signed=st.booleans())
def test_round_trip_is_the_nearest_code(x, block_size, signed):
  if not signed:
    x = np.abs(x)
  q, y = _round_trip(x, signed, block_size)
  assert q.codes.shape == x.shape and q.codes.dtype == jnp.uint8
  assert q.scales.shape == (math.ceil(x.size / block_size),)
  m = dynamic_map(signed).astype(np.float64)
  xb, yb, scale = _blocks(x, block_size), _blocks(y, block_size), np.asarray(q.scales)[:, None]
  np.testing.assert_array_equal(scale[:, 0], np.abs(xb).max(axis=1))
  # Each value decodes to (within float32 rounding) the nearest representable value...
  best = np.abs(m[None, None, :] * scale[..., None] - xb[..., None]).min(axis=-1)
  assert np.all(np.abs(yb - xb) <= best + 1e-6 * scale + 1e-37)
  # ...hence within half the coarsest spacing of the block's absmax,
  half_gap = 0.9 / (64 if signed else 128) / 2
  assert np.all(np.abs(yb - xb) <= half_gap * scale * (1 + 1e-5) + 1e-37)
  # and never flips a sign.
  assert np.all(yb * xb >= 0)


@SETTINGS
@hypothesis.given(x=tensors(), block_size=st.sampled_from([3, 256]))
def test_relative_error_is_small_for_values_near_the_block_max(x, block_size):
  _, y = _round_trip(x, True, block_size)
  xb, yb = _blocks(x, block_size), _blocks(y, block_size)
  big = np.abs(xb) >= 0.1 * np.abs(xb).max(axis=1, keepdims=True)
  # The top decade: relative error <= (0.9/64)/2/0.1 ≈ 7%.
  assert np.all(np.abs(yb - xb)[big] <= 0.0704 * np.abs(xb)[big] + 1e-37)


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_code_at_landmarks(signed):
  """Map values, midpoints between neighbours and the floats either side of them:
  the arithmetic code search agrees with brute force (ties may go either way)."""
  from optix.transforms.quantized import _nearest_code
  m = dynamic_map(signed)
  mid = (m[1:] + m[:-1]) / 2
  y = np.concatenate([m, mid, np.nextafter(mid, 2), np.nextafter(mid, -2)]).astype(np.float32)
  y = np.clip(y, m[0], 1)
  got = m[np.asarray(jax.jit(_nearest_code, static_argnums=1)(jnp.asarray(y), signed))]
  best = np.abs(m[None, :].astype(np.float64) - y[:, None]).min(axis=1)
  assert np.all(np.abs(got.astype(np.float64) - y) <= best + 1e-7)
  np.testing.assert_array_equal(got[:256], m)  # map values encode to themselves


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(0,), (1,), (255,), (257,), (3, 100)])
def test_zeros_stay_exact_zeros(signed, shape):
  x = np.zeros(shape, np.float32)
  q, y = _round_trip(x, signed, 256)
  assert np.all(np.asarray(q.scales) == 0)
  np.testing.assert_array_equal(y, x)
  for block_size in (1, 7, 256):  # what an 8-bit init builds without quantizing
    q = _jit_round_trip(jnp.asarray(x), signed, block_size)[0]
    z = quantized_zeros(shape, signed, block_size)
    for got, want in zip(z, q):
      assert got.dtype == want.dtype and got.shape == want.shape
      np.testing.assert_array_equal(got, want)


def test_extremes_and_block_max_round_trip_exactly():
  x = np.array([3e38, -3e38, 1e-30, -1e-38, 0.0, 1.0, -7.5, 2e-45], np.float32)
  _, y = _round_trip(x, True, 4)  # blocks: [3e38, -3e38, 1e-30, -1e-38], [0, 1, -7.5, 2e-45]
  assert np.all(np.isfinite(y))
  np.testing.assert_array_equal(y[[0, 1, 4, 6]], x[[0, 1, 4, 6]])
  assert y[2] == 0 and y[3] == 0 and y[7] == 0  # far below 1e-6 of their block's max
  # Values at the map's landmarks, scaled, come back exactly (up to the float32 multiply).
  m = dynamic_map(True)
  z = (m * np.float32(5.0)).astype(np.float32)
  _, w = _round_trip(z, True, 256)
  np.testing.assert_allclose(w, z, rtol=1e-6)


def test_codec_is_jit_stable():
  x = jax.random.normal(jax.random.key(0), (33, 17)) * 3
  a = jax.jit(lambda x: dequantize(quantize(x, True, 50), True, 50))(x)
  b = dequantize(quantize(x, True, 50), True, 50)
  np.testing.assert_array_equal(a, b)


def _params():
  k = jax.random.split(jax.random.key(0), 2)
  return {"w": jax.random.normal(k[0], (64, 80)), "b": jax.random.normal(k[1], (80,))}


def test_small_leaves_stay_fp32_and_large_ones_quantize():
  state = optix.scale_by_adam8bit().init(_params())
  assert isinstance(state.mu["w"], optix.QuantizedArray)
  assert state.mu["w"].codes.dtype == jnp.uint8 and state.mu["w"].scales.shape == (20,)
  assert state.nu["b"].dtype == jnp.float32 and state.nu["b"].shape == (80,)


def test_without_quantization_it_is_adam_exactly():
  params = _params()
  ours, ref = optix.adam8bit(1e-2, min_8bit_size=10**9), optix.adam(1e-2)
  s1, s2 = ours.init(params), ref.init(params)
  for k in jax.random.split(jax.random.key(1), 5):
    g = optix.testing.random_like(k, params)
    u1, s1 = ours.update(g, s1, params)
    u2, s2 = ref.update(g, s2, params)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_first_step_is_adams_then_stays_close():
  """The step uses the float32 moments before requantization: step 1 equals Adam's;
  later steps differ only by the quantization of the stored moments."""
  params = _params()
  ours, ref = optix.adam8bit(1e-2), optix.adam(1e-2)
  s1, s2 = ours.init(params), ref.init(params)
  update = jax.jit(ours.update)
  for t, k in enumerate(jax.random.split(jax.random.key(2), 20)):
    g = optix.testing.random_like(k, params)
    u1, s1 = update(g, s1, params)
    u2, s2 = ref.update(g, s2, params)
    if t == 0:
      np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
    err = np.abs(np.asarray(u1["w"]) - np.asarray(u2["w"])).mean() / np.abs(u2["w"]).mean()
    assert err < 0.05, (t, err)
    np.testing.assert_allclose(u1["b"], u2["b"], rtol=1e-5, atol=1e-7)  # small leaf: float32
  m = dequantize(s1[0].mu["w"], True, 256)
  m_ref = s2[0].mu["w"]
  # Each requantization errs by <= half the top spacing (0.9/64/2 ≈ 0.7%) of the block
  # max, and m forgets old errors at rate b1: accumulated error <= 0.7% / (1 - b1) ≈ 7%.
  np.testing.assert_allclose(m, m_ref, atol=0.0704 * float(np.abs(m_ref).max()))


@SETTINGS
@hypothesis.given(tensors(), st.booleans())
def test_stochastic_rounding_picks_a_neighbour_of_the_nearest(x, signed):
  """Each stochastic code is the nearest code or the one on the value's other side."""
  x = x if signed else np.abs(x)
  q_near = _jit_quantize(jnp.asarray(x), signed, 64)
  q_sr = _jit_quantize(jnp.asarray(x), signed, 64, key=jax.random.key(3))
  near, sr = (np.asarray(q.codes, np.int32) for q in (q_near, q_sr))
  assert np.all(np.abs(near - sr) <= 1)
  np.testing.assert_array_equal(q_near.scales, q_sr.scales)
  # Where they differ, the two map values bracket x / absmax(block).
  qmap = dynamic_map(signed).astype(np.float64)
  scales = np.asarray(q_near.scales, np.float64)
  normed = (_blocks(x, 64) / np.where(scales > 0, scales, 1)[:, None]).ravel()[:x.size]
  a, b = qmap[near.ravel()], qmap[sr.ravel()]
  assert np.all((near.ravel() == sr.ravel()) | ((a - normed) * (b - normed) <= 1e-6))


def test_stochastic_rounding_is_unbiased():
  """Averaged over draws, the decoded value is x (nearest rounding is biased)."""
  x = jnp.concatenate([jnp.ones(1), jnp.linspace(0.0101, 0.0199, 255)])  # one block
  draws = jax.vmap(lambda k: dequantize(quantize(x, False, 256, key=k), False, 256))(
      jax.random.split(jax.random.key(0), 20000))
  mean = np.asarray(draws).mean(0)
  nearest = np.asarray(dequantize(quantize(x, False, 256), False, 256))
  # The decade [0.01, 0.1) has spacing 0.1·0.9/64 ≈ 1.4e-3: nearest errs up to
  # 7e-4; one draw's spread is ≤ 7e-4, the mean of 20000 draws' ≤ 5e-6.
  assert np.abs(nearest - x).max() > 5e-4
  np.testing.assert_allclose(mean, x, atol=2.5e-5)


def test_stochastic_rounding_is_reproducible_and_resumable():
  """Draws depend on the step count and seed only: two runs are bit-identical."""
  params = _params()
  tx = optix.adam8bit(1e-2)
  run = []
  for _ in range(2):
    s = tx.init(params)
    for k in jax.random.split(jax.random.key(4), 3):
      _, s = jax.jit(tx.update)(optix.testing.random_like(k, params), s, params)
    run.append(s)
  jax.tree.map(np.testing.assert_array_equal, *run)
  other = optix.chain(optix.scale_by_adam8bit(seed=1), optix.scale(-1e-2))
  s = other.init(params)
  for k in jax.random.split(jax.random.key(4), 3):
    _, s = jax.jit(other.update)(optix.testing.random_like(k, params), s, params)
  assert not np.array_equal(s[0].nu["w"].codes, run[0][0].nu["w"].codes)
