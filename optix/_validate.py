"""Hyperparameter validation at construction time.

Every check raises ``ValueError`` that names the argument, the valid range and
the value received, e.g. ``b1 must be in [0, 1), got 1.5``. Schedules (callables)
and traced values cannot be checked when the transform is built and pass through.
"""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(name, value):
  """Returns a Python float for a concrete number, or None when unknowable
  (a schedule, a tracer, an array of per-element values)."""
  if callable(value) or value is None:
    return None
  if isinstance(value, bool):
    raise ValueError(f"{name} must be a number, got the bool {value!r}")
  if isinstance(value, (str, bytes)):
    raise ValueError(f"{name} must be a number or a schedule, got the string {value!r}")
  if isinstance(value, numbers.Number):
    return float(value)
  if isinstance(value, (list, tuple, dict, set)):
    raise ValueError(f"{name} must be a number or a schedule, got the "
                     f"{type(value).__name__} {value!r}")
  try:
    arr = np.asarray(value)
  except Exception:  # a tracer or an abstract value: nothing to check here
    return None
  if arr.dtype.kind in "OSU":  # objects, bytes, str: not a hyperparameter
    raise ValueError(f"{name} must be a number or a schedule, got {value!r}")
  if arr.shape == () and jnp.issubdtype(arr.dtype, jnp.number):  # bfloat16 included
    return float(arr)
  return None


def in_range(name, value, low=-math.inf, high=math.inf, *, low_closed=True,
             high_closed=True):
  """Checks ``low <(=) value <(=) high``; returns ``value`` unchanged."""
  v = _concrete(name, value)
  if v is None:
    return value
  ok = (v >= low if low_closed else v > low) and (v <= high if high_closed else v < high)
  if math.isnan(v) or not ok:
    lo = ("[" if low_closed else "(") + _fmt(low)
    hi = _fmt(high) + ("]" if high_closed else ")")
    raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
  return value


def _fmt(x):
  if x == math.inf:
    return "inf"
  if x == -math.inf:
    return "-inf"
  return f"{x:g}"


def unit_interval(name, value):
  """``value`` in [0, 1): decay rates such as b1, b2, momentum."""
  return in_range(name, value, 0.0, 1.0, high_closed=False)


def momentum(name, value):
  """``value`` in [0, 1]: a heavy-ball momentum coefficient. 1 is accepted (optax's
  undamped accumulation of every gradient); None (no momentum) passes through."""
  return in_range(name, value, 0.0, 1.0)


def betas(name, value):
  """A pair ``(b1, b2)`` of decay rates, each in [0, 1) (named ``name[0]``, ``name[1]``)."""
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise ValueError(f"{name} must be a pair (b1, b2), got {value!r}")
  unit_interval(f"{name}[0]", value[0])
  unit_interval(f"{name}[1]", value[1])
  return value


def nonnegative(name, value):
  """``value`` in [0, inf): eps, weight_decay, ..."""
  return in_range(name, value, 0.0)


def positive(name, value):
  """``value`` in (0, inf): max_norm, clipping thresholds, ..."""
  return in_range(name, value, 0.0, low_closed=False)


def finite(name, value):
  """Any finite real number."""
  return in_range(name, value, -math.inf, math.inf, low_closed=False, high_closed=False)


def learning_rate(name, value):
  """Learning rates are finite and non-negative; schedules are checked when called."""
  return in_range(name, value, 0.0, math.inf, high_closed=False)


def dtype(name, value):
  """None (the state-dtype policy) or a floating or complex dtype."""
  if value is None:
    return None
  try:
    dt = jnp.dtype(value)
  except TypeError:
    raise ValueError(f"{name} must be None or a floating dtype such as jnp.float32, "
                     f"got {value!r}") from None
  if not jnp.issubdtype(dt, jnp.inexact):
    raise ValueError(f"{name} must be None or a floating (or complex) dtype such as "
                     f"jnp.float32, got {dt.name}")
  return value


def integer(name, value, low=0, *, static=True):
  """An int ``>= low`` (steps, intervals, sizes), returned as a Python int.

  ``optax.inject_hyperparams`` passes integer hyperparameters as int32 arrays:
  a concrete one is read as its int. A traced one (its ``update`` under ``jit``)
  passes through unchecked when ``static=False`` (the transform computes with it
  in ``jnp``); an argument that sets shapes or Python control flow
  (``static=True``) cannot be traced and says how to keep it static."""
  if isinstance(value, jax.core.Tracer):
    if not static:
      return value
    raise ValueError(
        f"{name} must be a static Python int (it sets shapes or Python control flow), "
        f"got a traced value: inside optax.inject_hyperparams pass "
        f"static_args=({name!r},), or use optix.inject_hyperparams, which keeps it static")
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and not isinstance(value, bool):
    arr = np.asarray(value)
    if arr.shape == () and arr.dtype.kind in "iu":
      value = int(arr)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  if value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  return int(value)


def one_of(name, value, choices):
  """``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices)!r}, got {value!r}")
  return value


def at_most(name, value, other_name, other_value):
  """``value <= other_value`` for two already-checked integers/floats."""
  if value > other_value:
    raise ValueError(f"{name} must be <= {other_name} ({other_value!r}), got {value!r}")
  return value
