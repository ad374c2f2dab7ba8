"""Property tests (hypothesis) for the schedules optix writes itself."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import optix

values = st.floats(1e-6, 1.0)


@settings(max_examples=40, deadline=None)
@given(peak=values, end_frac=st.floats(0.0, 1.0), warmup=st.integers(0, 50),
       decay=st.integers(1, 100), stable=st.integers(0, 100),
       shape=st.sampled_from(["linear", "cosine", "sqrt"]))
def test_wsd_bounded_and_monotone_after_warmup(peak, end_frac, warmup, decay, stable, shape):
  end = peak * end_frac
  total = warmup + stable + decay
  s = optix.wsd_schedule(peak, warmup, total, decay, end_value=end, decay_shape=shape)
  # One evaluation length for every example (50 + 100 + 100 + 10), sliced: a new length would
  # compile each op again.
  v = np.asarray(jax.vmap(s)(jnp.arange(260)))[:total + 10]
  assert np.all(v >= -1e-12) and np.all(v <= peak * (1 + 1e-6))
  tail = v[warmup:]
  assert np.all(np.diff(tail) <= peak * 1e-6)
  np.testing.assert_allclose(v[total:], end, rtol=1e-5, atol=1e-12)
  if warmup:
    assert np.all(np.diff(v[:warmup + 1]) >= -1e-12)


@settings(max_examples=40, deadline=None)
@given(base=st.floats(0.0, 0.5), amp=st.floats(0.0, 1.0), step_size=st.integers(1, 30),
       mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
       gamma=st.floats(0.9, 1.0))
def test_cyclical_bounded_and_periodic_peaks(base, amp, step_size, mode, gamma):
  s = optix.cyclical_schedule(base, base + amp, step_size, mode, gamma)
  v = np.asarray(jax.vmap(s)(jnp.arange(6 * 30)))[:6 * step_size]  # one length (see above)
  assert np.all(v >= base - 1e-6) and np.all(v <= base + amp + 1e-6)
  np.testing.assert_allclose(v[::2 * step_size], base, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(peak=values, warmup=st.integers(0, 100), t=st.integers(0, 10_000))
def test_inverse_sqrt_never_exceeds_peak(peak, warmup, t):
  s = optix.inverse_sqrt_schedule(peak, warmup)
  assert 0.0 <= float(s(t)) <= peak * (1 + 1e-6)
