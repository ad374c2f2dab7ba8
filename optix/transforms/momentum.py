"""Momentum: heavy ball and Nesterov."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class TraceState(NamedTuple):
  trace: _base.Updates  # the velocity, float32 by default


def trace(decay: float, nesterov: bool = False, accumulator_dtype=None, *,
          state_dtype=None) -> _base.GradientTransformation:
  r"""Momentum (Polyak 1964; Nesterov form as in Sutskever et al. 2013).

  .. math::
     v_t = g_t + \mu v_{t-1}, \qquad
     u_t = v_t \ \text{(heavy ball)} \quad\text{or}\quad u_t = g_t + \mu v_t \ \text{(Nesterov)}

  Args:
    decay: the momentum coefficient μ in [0, 1] (1: plain accumulation); no default,
      as in optax (0.9 is the usual choice).
    nesterov: look-ahead form; False.
    accumulator_dtype: optax-compatible name for the velocity dtype (overrides
      ``state_dtype``); None.
    state_dtype: velocity dtype; ``None``: at least float32, the params' kind (complex
      params keep a complex velocity).
  """
  _validate.in_range("decay", decay, 0.0, 1.0)
  _validate.dtype("accumulator_dtype", accumulator_dtype)
  _validate.dtype("state_dtype", state_dtype)
  dtype = accumulator_dtype or state_dtype

  def init(params):
    return TraceState(_tree.zeros_like(params, dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.trace", state.trace)
    velocity = jax.tree.map(lambda g, t: g.astype(t.dtype) + decay * t, updates, state.trace)
    out = (jax.tree.map(lambda g, v: g.astype(v.dtype) + decay * v, updates, velocity)
           if nesterov else velocity)
    return _tree.cast_like(out, updates), TraceState(velocity)

  return _base.described(_base.GradientTransformation(init, update), "trace", elementwise=True,
                         decay=decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype,
                         state_dtype=state_dtype)
