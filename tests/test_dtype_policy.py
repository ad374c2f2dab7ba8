"""State dtype policy: at least float32, same kind; complex params keep complex moments."""

import jax
import jax.numpy as jnp
import optax
import pytest

import optix
from optix import _tree

TARGET = 0.5 + 0.5j


def _minimize(tx, steps=200):
  """Minimizes |w - TARGET|^2 from w = 1 + 1j (optax's convention: the gradient is conj(dL/dw))."""
  w = jnp.full((3,), 1 + 1j, jnp.complex64)
  state = tx.init(w)
  update = jax.jit(tx.update)
  for _ in range(steps):
    updates, state = update(w - TARGET, state, w)
    w = optax.apply_updates(w, updates)
  return w, state


@pytest.mark.parametrize("name,make,ref", [
    ("adam", lambda: optix.adam(0.05), lambda: optax.adam(0.05)),
    ("nadam", lambda: optix.nadam(0.05), lambda: optax.nadam(0.05)),
    ("sgd_momentum", lambda: optix.sgd(0.05, 0.9), lambda: optax.sgd(0.05, 0.9)),
    ("rmsprop", lambda: optix.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    ("adagrad", lambda: optix.adagrad(0.1), lambda: optax.adagrad(0.1)),
    ("lion", lambda: optix.lion(0.01, weight_decay=0.0), lambda: optax.lion(0.01, weight_decay=0.0)),
])
def test_complex_params_keep_imaginary_part(name, make, ref):
  ours, state = _minimize(make())
  theirs, _ = _minimize(ref())
  assert all(leaf.dtype == jnp.complex64 for leaf in jax.tree.leaves(state)
             if jnp.ndim(leaf) == 1), name
  assert jnp.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (name, ours, theirs)


@pytest.mark.parametrize("param,requested,expected", [
    (jnp.bfloat16, None, jnp.float32), (jnp.float16, None, jnp.float32),
    (jnp.float32, None, jnp.float32), (jnp.complex64, None, jnp.complex64),
    (jnp.int32, None, jnp.float32), (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
    (jnp.complex64, jnp.float32, jnp.complex64), (jnp.complex64, jnp.bfloat16, jnp.complex64),
])
def test_state_dtype_for(param, requested, expected):
  assert _tree.state_dtype_for(jnp.zeros((), param), requested) == jnp.dtype(expected)


def test_float64_params_get_float64_moments():
  with jax.enable_x64(True):
    w = jnp.ones((4,), jnp.float64)
    state = optix.adam(0.1).init(w)
    assert state[0].mu.dtype == jnp.float64 and state[0].nu.dtype == jnp.float64
    assert _tree.state_dtype_for(w) == jnp.float64
    assert _tree.state_dtype_for(jnp.ones((), jnp.complex128)) == jnp.complex128


def test_quantized_adam_rejects_complex_naming_the_leaf():
  params = {"w": jnp.zeros((8,), jnp.complex64), "b": jnp.zeros((2,))}
  with pytest.raises(ValueError, match=r"\['w'\]"):
    optix.scale_by_adam8bit().init(params)


def test_trace_accepts_decay_one():
  tx = optix.trace(1.0)
  state = tx.init(jnp.zeros(2))
  for _ in range(3):
    u, state = tx.update(jnp.ones(2), state)
  assert jnp.allclose(u, 3.0)
