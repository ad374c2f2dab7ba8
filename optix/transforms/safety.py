"""Training-safety guards: skip non-finite steps, skip or clip gradient spikes,
zero NaNs, and the z-loss auxiliary term for logit blow-ups.

The guards wrap an inner transform so that a rejected step leaves *everything*
alone: the updates are zero (params unchanged) and every leaf of the inner
state is the one from before the step, bit for bit (a ``jnp.where`` select,
never arithmetic on the old values).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms.clipping import global_norm


def all_finite(tree) -> jax.Array:
  """True when every element of every leaf is finite (a bool scalar).

  Args:
    tree: any pytree of arrays; an empty tree counts as finite.

  Returns:
    A 0-d bool ``jax.Array``.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def select_tree(pred, on_true, on_false):
  """``on_true`` where the scalar ``pred`` holds, else ``on_false``, leaf by leaf (exact).

  Args:
    pred: a bool scalar (traced or concrete).
    on_true: the tree chosen when ``pred`` holds.
    on_false: the tree chosen otherwise; same structure, shapes and dtypes as
      ``on_true``.

  Returns:
    A tree like ``on_true``: each leaf a ``jnp.where`` select, so the chosen
    values come through bit for bit.
  """
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _zeros_like_updates(updates):
  return jax.tree.map(jnp.zeros_like, updates)


class ApplyIfFiniteState(NamedTuple):
  notfinite_count: jax.Array   # int32: consecutive non-finite steps so far
  last_finite: jax.Array       # bool: was the last step finite
  total_notfinite: jax.Array   # int32, saturating: every skipped step
  inner_state: Any


def apply_if_finite(inner: _base.GradientTransformationBase,
                    max_consecutive_errors: int = 5) -> _base.GradientTransformation:
  r"""Skips (and counts) steps whose gradients or updates are not finite.

  .. math::
     \text{ok}_t = \text{finite}(g_t) \wedge \text{finite}(u_t) \vee
                   (n_{t-1} + 1 > N), \quad
     (u, s_t) = \text{ok}_t\ ?\ (\text{inner}(g_t, s_{t-1}))\ :\ (0, s_{t-1})

  where :math:`n` counts consecutive non-finite steps. A skipped step returns
  zero updates and the inner state from before the step, bit for bit, and
  advances ``notfinite_count`` and ``total_notfinite``. After more than
  ``max_consecutive_errors`` non-finite steps in a row the guard gives up and
  lets the step through, so a run that is broken (not just unlucky) shows NaNs
  instead of silently standing still (optax's convention). Unlike
  ``optax.apply_if_finite`` the inner *updates* are checked too, so an overflow
  inside the optimizer is caught as well as one in the gradients.

  Args:
    inner: the transform to guard (usually a whole optimizer).
    max_consecutive_errors: int >= 0; 5 absorbs a short burst of bad batches.
      0 lets every non-finite step through (counted only).

  Returns:
    A ``GradientTransformation`` whose state is ``ApplyIfFiniteState``
    (``notfinite_count``, ``last_finite``, ``total_notfinite``,
    ``inner_state``).
  """
  max_consecutive_errors = _validate.integer("max_consecutive_errors", max_consecutive_errors, 0)
  inner = _base.with_extra_args_support(inner)

  def init(params):
    return ApplyIfFiniteState(jnp.zeros([], jnp.int32), jnp.array(True),
                              jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    finite = jnp.logical_and(all_finite(updates), all_finite(new_updates))
    count = jnp.where(finite, 0, _tree.safe_increment(state.notfinite_count))
    apply = jnp.logical_or(finite, count > max_consecutive_errors)
    total = jnp.where(finite, state.total_notfinite, _tree.safe_increment(state.total_notfinite))
    out = select_tree(apply, new_updates, _zeros_like_updates(new_updates))
    inner_state = select_tree(apply, new_inner, state.inner_state)
    return out, ApplyIfFiniteState(count.astype(jnp.int32), finite, total, inner_state)

  return _base.GradientTransformation(init, update)


class SpikeGuardState(NamedTuple):
  count: jax.Array        # int32, saturating: steps that fed the running average
  avg_norm: jax.Array     # float32: EMA of accepted gradient norms (biased, debiased on use)
  last_norm: jax.Array    # float32: global gradient norm of the last step
  spike_count: jax.Array  # int32, saturating: steps skipped or clipped as spikes
  inner_state: Any


def spike_guard(inner: _base.GradientTransformationBase, threshold: float = 4.0,
                decay: float = 0.99, warmup_steps: int = 10, mode: str = "skip",
                axis_name=None) -> _base.GradientTransformation:
  r"""Skips or clips steps whose gradient norm jumps above ``threshold`` × its
  running average (the loss-spike remedy of PaLM, Chowdhery et al. 2022,
  arXiv 2204.02311 §5.1, and OPT, Zhang et al. 2022, arXiv 2205.01068).

  .. math::
     \bar n_t = \frac{a_t}{1-\delta^{c_t}}, \quad
     a_{t} = \delta a_{t-1} + (1-\delta)\,\min(\lVert g_t\rVert, k \bar n_{t-1}), \\
     \text{spike}_t = c_{t-1} \ge W \wedge \lVert g_t\rVert > k\,\bar n_{t-1}

  On a spike ``mode="skip"`` returns zero updates and leaves the inner state
  (and the running average) untouched; ``mode="clip"`` rescales the gradients
  to norm :math:`k\bar n` and runs the inner transform on them. A non-finite
  norm is always skipped (clipping cannot repair a NaN). The first
  ``warmup_steps`` steps only feed the average. The norm is
  :func:`optix.global_norm`.

  Args:
    inner: the transform to guard.
    threshold: k, a float in (1, inf); 4 leaves ordinary noise alone
      (batch-to-batch norm ratios are rarely above 2-3 once training has
      settled).
    decay: EMA rate δ in [0, 1) of the norm average; 0.99 ≈ the last 100 steps.
    warmup_steps: W, an int >= 1: accepted steps that only feed the average
      before the guard acts; 10 gives the average a few samples first.
    mode: ``"skip"`` (default: drop the step) or ``"clip"`` (rescale it to
      :math:`k\bar n`).
    axis_name: inside ``jax.shard_map``/``pmap`` where each device holds a
      block of the gradients, the mapped axis name(s), so the norm (and with it
      the skip decision) is the whole tree's on every device; see
      :func:`optix.global_norm`. Not needed under ``jit`` with sharded arrays.
      None (default): the local tree is the whole tree.

  Returns:
    A ``GradientTransformation`` whose state is ``SpikeGuardState``
    (``count``, ``avg_norm``, ``last_norm``, ``spike_count``, ``inner_state``).
  """
  _validate.in_range("threshold", threshold, 1.0, low_closed=False)
  _validate.unit_interval("decay", decay)
  warmup_steps = _validate.integer("warmup_steps", warmup_steps, 1)
  _validate.one_of("mode", mode, {"skip", "clip"})
  inner = _base.with_extra_args_support(inner)

  def init(params):
    zero_f, zero_i = lambda: jnp.zeros([], jnp.float32), lambda: jnp.zeros([], jnp.int32)
    # Fresh buffers per field: a donated state must not hold one buffer twice.
    return SpikeGuardState(zero_i(), zero_f(), zero_f(), zero_i(), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    norm = global_norm(updates, axis_name=axis_name)
    correction = 1.0 - decay ** state.count.astype(jnp.float32)
    avg = state.avg_norm / jnp.where(state.count > 0, correction, 1.0)
    limit = threshold * avg
    finite = jnp.isfinite(norm)
    spike = jnp.logical_or(~finite, jnp.logical_and(state.count >= warmup_steps, norm > limit))
    if mode == "clip":
      factor = jnp.where(jnp.logical_and(spike, finite), limit / jnp.maximum(norm, 1e-30), 1.0)
      updates = jax.tree.map(lambda g: (g * factor.astype(g.dtype)).astype(g.dtype), updates)
      accept = finite
      fed = jnp.minimum(norm, jnp.where(state.count >= warmup_steps, limit, norm))
    else:
      accept = ~spike
      fed = norm
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    out = select_tree(accept, new_updates, _zeros_like_updates(new_updates))
    inner_state = select_tree(accept, new_inner, state.inner_state)
    avg_norm = jnp.where(accept, decay * state.avg_norm + (1 - decay) * fed, state.avg_norm)
    count = jnp.where(accept, _tree.safe_increment(state.count), state.count)
    spikes = jnp.where(spike, _tree.safe_increment(state.spike_count), state.spike_count)
    return out, SpikeGuardState(count, avg_norm, norm, spikes, inner_state)

  return _base.GradientTransformation(init, update)


class ZeroNansState(NamedTuple):
  found_nan: _base.Updates  # bool per leaf: did this step's leaf contain a NaN
  nan_steps: jax.Array      # int32, saturating: steps on which any NaN was zeroed


def zero_nans() -> _base.GradientTransformation:
  r"""Replaces NaN gradient entries by 0: :math:`g \leftarrow \text{isnan}(g)\ ?\ 0 : g`.

  Records, per leaf, whether the last step had a NaN (as ``optax.zero_nans``)
  and counts the steps that had any. A blunt tool: it hides the symptom, so
  log ``nan_steps``; prefer :func:`apply_if_finite` to skip the whole step.

  Returns:
    A ``GradientTransformation`` (no parameters) whose state is
    ``ZeroNansState`` (``found_nan`` per leaf, ``nan_steps``).
  """

  def init(params):
    return ZeroNansState(jax.tree.map(lambda _: jnp.array(False), params),
                         jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    found = jax.tree.map(lambda g: jnp.any(jnp.isnan(g)), updates)
    _tree.check_match("updates", found, "state.found_nan", state.found_nan)
    out = jax.tree.map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
    leaves = jax.tree.leaves(found)
    any_nan = jnp.any(jnp.stack(leaves)) if leaves else jnp.array(False)
    steps = jnp.where(any_nan, _tree.safe_increment(state.nan_steps), state.nan_steps)
    return out, ZeroNansState(found, steps)

  return _base.GradientTransformation(init, update)


def z_loss(logits: jax.Array, alpha: float = 1e-4) -> jax.Array:
  r"""The z-loss auxiliary term (PaLM, Chowdhery et al. 2022, arXiv 2204.02311 §5):

  .. math:: \mathcal{L}_z = \alpha \log^2 Z, \quad Z = \textstyle\sum_i e^{\text{logit}_i}

  per example (reduces the last axis; returns ``logits.shape[:-1]`` in float32).
  Add its mean to the loss to keep the softmax normaliser near 1 and the
  logits from drifting upward; PaLM uses α = 1e-4 (the default).

  Args:
    logits: array ``[..., vocab]``, any float dtype (computed in float32).
    alpha: the weight α >= 0; 1e-4 (PaLM's).

  Returns:
    Float32 ``jax.Array`` of shape ``logits.shape[:-1]``: the per-example term.
  """
  _validate.nonnegative("alpha", alpha)
  log_z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
  return alpha * jnp.square(log_z)
