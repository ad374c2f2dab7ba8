"""Scaling by a constant, a schedule, or the learning rate."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class ScaleByScheduleState(NamedTuple):
  count: jax.Array  # int32, saturating


def scale(step_size: float) -> _base.GradientTransformation:
  """``u ← step_size · u``. Stateless.

  Args:
    step_size: any finite real number (a negative one flips the direction).

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.finite("step_size", step_size)

  def init(params):
    del params
    return _base.EmptyState()

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: (step_size * g).astype(g.dtype), updates), state

  return _base.GradientTransformation(init, update)


def scale_by_schedule(step_size_fn: _base.Schedule) -> _base.GradientTransformation:
  """``u ← s(t) · u`` where ``s`` is a schedule of the step count t = 0, 1, ...

  Args:
    step_size_fn: a callable step count (int32 array) -> scalar; a non-callable
      raises ``ValueError``.

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByScheduleState(count)``.
  """
  if not callable(step_size_fn):
    raise ValueError(f"step_size_fn must be callable, got {step_size_fn!r}")

  def init(params):
    del params
    return ScaleByScheduleState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    s = step_size_fn(state.count)
    updates = jax.tree.map(lambda g: (jnp.asarray(s, g.dtype) * g).astype(g.dtype), updates)
    return updates, ScaleByScheduleState(_tree.safe_increment(state.count))

  return _base.GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: Optional[_base.ScalarOrSchedule] = None, *,
                           flip_sign: bool = True) -> _base.GradientTransformation:
  """``u ← -η(t) · u`` (``flip_sign=False``: ``+η(t) · u``).

  The last link of every optimizer chain: descent means moving against the
  gradient, hence the sign flip. When ``params`` are passed, a params/updates tree
  mismatch raises a ``ValueError`` naming the differing paths.

  Args:
    learning_rate: η, a float >= 0 (finite) or a schedule of the step count; None
      (optax's default) scales by nothing: the updates pass through unchanged,
      without the sign flip.
    flip_sign: multiply by -η (True, default: descent) or by +η (False).

  Returns:
    A ``GradientTransformation``: stateless for a constant, counting steps for a
    schedule.
  """
  sign = -1 if flip_sign else 1
  if learning_rate is None:
    inner = _base.identity()
  elif callable(learning_rate):
    inner = scale_by_schedule(lambda count: sign * learning_rate(count))
  else:
    inner = scale(sign * _validate.learning_rate("learning_rate", learning_rate))

  def update(updates, state, params=None, **extra_args):
    if params is not None:  # every alias ends here: one trace-time check for all of them
      _tree.check_match("updates", updates, "params", params)
    return inner.update(updates, state, params, **extra_args)

  return _base.described(_base.GradientTransformation(inner.init, update),
                         "scale_by_learning_rate", elementwise=True,
                         learning_rate=learning_rate, flip_sign=flip_sign)
