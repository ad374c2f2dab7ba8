"""Gradient accumulation: k micro-batches, one optimizer step."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


def _zeros(params, dtype):
  # ``None`` keeps each gradient's own dtype here (not the moment policy): the accumulator holds
  # sums of gradients, which the user may want in their native precision. A requested dtype
  # takes the gradient's kind (a real sum of complex gradients would drop their imaginary
  # parts) and never less than the gradient's own precision.
  def zeros(p):
    if dtype is None or not jnp.issubdtype(jnp.result_type(p), jnp.inexact):
      return jnp.zeros_like(p, dtype=dtype)
    return jnp.zeros_like(p, dtype=jnp.promote_types(_tree.state_dtype_for(p, dtype),
                                                     jnp.result_type(p)))
  return jax.tree.map(zeros, params)


class MultiStepsState(NamedTuple):
  mini_step: jax.Array      # int32 in [0, every_k): micro-batches accumulated so far
  gradient_step: jax.Array  # int32, saturating: optimizer steps applied
  acc_grads: _base.Updates  # running sum of micro-batch gradients (accumulator_dtype)
  inner_state: Any


def multi_steps(inner: _base.GradientTransformationBase, every_k: int, *,
                average: bool = True, accumulator_dtype=jnp.float32
                ) -> _base.GradientTransformation:
  r"""Accumulates ``every_k`` micro-batch gradients, then takes one inner step.

  .. math::
     A \leftarrow A + g_j \ (j = 1..k), \qquad
     u = \text{inner}(A / k) \text{ on the } k\text{-th call, } 0 \text{ on the others}

  With a mean loss over equal micro-batches, :math:`A/k` is the gradient of the
  mean loss over their union, so k accumulated micro-batches take the same step
  as one k-times larger batch. ``average=False`` passes the sum :math:`A`
  instead (for sum losses). Between steps the updates are zero, the inner state
  is untouched, and the inner transform is not evaluated at all (a
  ``lax.cond``; ``optax.MultiSteps`` evaluates it on every micro-batch and
  discards the result). The accumulator is float32 by default whatever the
  gradient dtype: summing bf16 gradients in bf16 loses the small ones.

  Args:
    inner: the optimizer to step every ``every_k`` calls.
    every_k: int >= 1 micro-batches per step (1: every call steps, the sum is
      the gradient itself).
    average: divide the sum by ``every_k`` (True, default: the step matches a
      mean loss over the larger batch) or pass the sum (False: sum losses).
    accumulator_dtype: precision of the running sum, in each gradient's kind (complex
      gradients get the complex dtype of that precision) and never below the gradient's
      own (float64 stays float64); float32 (default) keeps small bf16/fp16 gradients from
      rounding away; ``None``: each gradient's own dtype.

  Returns:
    A ``GradientTransformation`` whose state is ``MultiStepsState``
    (``mini_step``, ``gradient_step``, ``acc_grads``, ``inner_state``); see
    :func:`has_updated`.
  """
  every_k = _validate.integer("every_k", every_k, 1)
  inner = _base.with_extra_args_support(inner)

  def init(params):
    return MultiStepsState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
                           _zeros(params, accumulator_dtype), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    _tree.check_match("updates", updates, "state.acc_grads", state.acc_grads)
    acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), state.acc_grads, updates)
    emit = state.mini_step == every_k - 1

    def apply(acc, inner_state):
      grads = jax.tree.map(
          lambda a, g: ((a / every_k) if average else a).astype(g.dtype), acc, updates)
      new_updates, new_inner = inner.update(grads, inner_state, params, **extra_args)
      return (new_updates, new_inner, jax.tree.map(jnp.zeros_like, acc),
              _tree.safe_increment(state.gradient_step))

    def wait(acc, inner_state):
      shapes = jax.eval_shape(lambda: inner.update(updates, inner_state, params, **extra_args)[0])
      # zeros_like keeps the updates' sharding, so both cond branches have one type.
      zeros = jax.tree.map(lambda u, s: jnp.zeros_like(u, dtype=s.dtype), updates, shapes)
      return zeros, inner_state, acc, state.gradient_step

    out, inner_state, acc, gradient_step = jax.lax.cond(emit, apply, wait, acc,
                                                        state.inner_state)
    mini_step = jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32)
    return out, MultiStepsState(mini_step, gradient_step, acc, inner_state)

  return _base.GradientTransformation(init, update)


def has_updated(state) -> jax.Array:
  """True right after a call to :func:`multi_steps`' update that applied a step.

  Args:
    state: the :class:`MultiStepsState`, or any optimizer state holding one (a
      raw state or an ``nnx.Optimizer``'s ``opt_state``); the first one found is
      read.

  Returns:
    A 0-d bool ``jax.Array``.

  Raises:
    ValueError: if ``state`` holds no ``MultiStepsState``.
  """
  found = _tree.find_states(state, MultiStepsState)
  if not found:
    raise ValueError("has_updated needs the state of optix.multi_steps, got "
                     f"{type(state).__name__}")
  state = found[0]
  return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)
