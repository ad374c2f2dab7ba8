r"""Moment arithmetic shared by every Adam-like transform: the one copy.

* :func:`ema` -- first moment :math:`m_t = \beta m_{t-1} + (1-\beta) g_t`,
* :func:`ema_sq` -- second moment :math:`v_t = \beta v_{t-1} + (1-\beta) |g_t|^2`, where
  :math:`|g|^2 = \mathrm{Re}(\bar g g)` for complex gradients (a real, non-negative
  statistic, as in Adam's complex extension),
* :func:`debias` -- bias correction :math:`m_t / (1-\beta^t)` of a zero-initialised EMA
  (Kingma & Ba 2015, arXiv 1412.6980, §3),
* :func:`nesterov` -- NAdam's look-ahead :math:`\beta m_t/(1-\beta^{t+1}) + (1-\beta) g_t/(1-\beta^t)`
  (Dozat 2016, "Incorporating Nesterov Momentum into Adam").

Each comes as a function of one array (``*_leaf``, for transforms that loop over
leaves themselves, e.g. quantized state) and of a pytree. The moment's dtype is
the state's (see :func:`optix._tree.state_dtype_for`): the gradient is cast to it
first, so the arithmetic runs in float32 (or wider) whatever the param dtype.
"""

import jax
import jax.numpy as jnp

from optix import _tree


def abs_sq(x: jax.Array) -> jax.Array:
  r""":math:`|x|^2`: ``x * x`` for real ``x``, :math:`\mathrm{Re}(\bar x x)` (real) for complex."""
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    return (jnp.conj(x) * x).real
  return jnp.square(x)


def ema_leaf(decay, moment: jax.Array, value: jax.Array) -> jax.Array:
  """``decay · moment + (1 - decay) · value`` in the moment's dtype (also for an array
  ``decay``, e.g. a float32 one injected by ``optax.inject_hyperparams``, with a bfloat16
  moment)."""
  return ((1 - decay) * value.astype(moment.dtype) + decay * moment).astype(moment.dtype)


def ema_sq_leaf(decay, moment: jax.Array, value: jax.Array) -> jax.Array:
  """``decay · moment + (1 - decay) · |value|²`` in the moment's dtype."""
  return ((1 - decay) * abs_sq(value.astype(moment.dtype)) + decay * moment).astype(moment.dtype)


def correction(decay, count: jax.Array) -> jax.Array:
  """``1 - decay**count``: the mass a zero-initialised EMA has after ``count`` steps.

  In the default float dtype (float32; float64 under ``jax_enable_x64``) for a
  Python ``decay``, in ``decay``'s dtype for an array one, as optax computes it:
  float64 moments then get a float64 correction."""
  return 1 - decay ** count


def debias_leaf(moment: jax.Array, corr: jax.Array) -> jax.Array:
  """``moment / corr``, ``corr = correction(decay, count)`` computed once for all leaves
  (one scalar: XLA then evaluates the power once, as a scalar, for every leaf alike)."""
  return moment / corr.astype(moment.dtype)


def nesterov_leaf(moment: jax.Array, value: jax.Array, decay, corr: jax.Array,
                  corr_ahead: jax.Array) -> jax.Array:
  """NAdam's look-ahead ``decay · moment / corr_ahead + (1 - decay) · value / corr``, with
  ``corr = correction(decay, count)`` and ``corr_ahead`` the same at ``count + 1``."""
  return decay * debias_leaf(moment, corr_ahead) + (1 - decay) * debias_leaf(value, corr)


def ema(decay, moment, value):
  """:func:`ema_leaf` over matching trees."""
  return jax.tree.map(lambda m, x: ema_leaf(decay, m, x), moment, value)


def ema_sq(decay, moment, value):
  """:func:`ema_sq_leaf` over matching trees."""
  return jax.tree.map(lambda m, x: ema_sq_leaf(decay, m, x), moment, value)


def debias(moment, decay, count):
  """``moment / (1 - decay**count)`` over a tree (one correction for all leaves)."""
  corr = correction(decay, count)
  return jax.tree.map(lambda m: debias_leaf(m, corr), moment)


def nesterov(moment, value, decay, count):
  """:func:`nesterov_leaf` over matching trees."""
  corr, ahead = correction(decay, count), correction(decay, _tree.safe_increment(count))
  return jax.tree.map(lambda m, x: nesterov_leaf(m, x, decay, corr, ahead), moment, value)
