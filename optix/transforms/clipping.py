"""Gradient clipping: by value, by global norm, and adaptive (unit-wise)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


def global_norm(updates, *, axis_name=None) -> jax.Array:
  """√(Σ_leaves Σ x̄·x), the 2-norm of every entry of the tree (complex entries count
  their modulus, as in optax), accumulated in each leaf's dtype, at least float32.

  Under ``jit`` with sharded leaves XLA inserts the cross-device sum itself, so
  the value is the true global norm whatever the sharding.

  Inside ``jax.shard_map`` or ``pmap``, where each device sees only its block,
  pass the mapped ``axis_name`` (a name or a tuple of names): the blocks are
  taken as slices of one tree and their squared sums are ``psum``-ed. Under
  ``shard_map(check_vma=True)`` a leaf typed as invariant over the axis is a
  replicated copy and counts once; under ``pmap`` or ``check_vma=False`` (where
  JAX does not track this) every leaf is taken as a distinct slice. For
  data-parallel gradients, ``pmean`` them first and leave ``axis_name`` unset.

  Args:
    updates: any pytree of arrays (real or complex); an empty tree has norm 0.
    axis_name: None (default): the leaves are whole arrays (plain code or ``jit``);
      a mapped axis name or a tuple of names inside ``shard_map``/``pmap``, as above.

  Returns:
    A scalar array, float32 or wider (float64 for float64 leaves).
  """
  leaves = jax.tree.leaves(updates)
  if not leaves:
    return jnp.zeros([], jnp.float32)
  squares = [jnp.sum(_abs_sq(x)) for x in leaves]
  if axis_name is None:
    return jnp.sqrt(sum(squares))
  names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)

  def varying(x):  # the set of mapped axes this value is typed as varying over
    return jax.typeof(x).manual_axis_type.varying

  tracked = all(n in varying(jax.lax.axis_index(n)) for n in names)
  groups = {}  # the axes each leaf's squared sum must be summed over -> partial sums
  for sq in squares:
    axes = tuple(n for n in names if not tracked or n in varying(sq))
    groups[axes] = groups.get(axes, 0.0) + sq
  return jnp.sqrt(sum(jax.lax.psum(v, axes) if axes else v for axes, v in groups.items()))


def _abs_sq(x):
  """|x|² in the real dtype of ``x``'s precision, at least float32."""
  x = jnp.asarray(x)
  real = jnp.abs(x) if _tree.is_complex(x) else x
  real = real.astype(jnp.promote_types(real.dtype, jnp.float32))
  return jnp.square(real)


def clip(max_delta: float) -> _base.GradientTransformation:
  """Clips every coordinate to [-max_delta, max_delta] (optax's ``clip``). Stateless.

  Args:
    max_delta: the bound, > 0 (no default: it depends on the gradients' scale).

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.positive("max_delta", max_delta)

  def init(params):
    del params
    return _base.EmptyState()

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state

  return _base.GradientTransformation(init, update)


class ClipByGlobalNormState(NamedTuple):
  norm: jax.Array  # the global norm of the last gradient, before clipping


def clip_by_global_norm(max_norm: float, *, axis_name=None) -> _base.GradientTransformation:
  r"""Rescales the whole update tree when its global norm exceeds ``max_norm``
  (Pascanu et al. 2013, arXiv 1211.5063).

  .. math:: u \leftarrow u \cdot \min(1, \text{max\_norm} / \lVert u \rVert_2)

  The pre-clip norm is kept in the state (``state.norm``) so a training loop can
  log it without recomputing it (optax's state is empty).

  Args:
    max_norm: the largest global norm let through, > 0 (1.0 is a common choice
      for transformers; no default, as in optax).
    axis_name: None (default) for whole leaves; inside ``shard_map``/``pmap`` over
      split leaves, the mapped axis name(s), as in :func:`global_norm`.

  Returns:
    A ``GradientTransformation`` whose state is ``ClipByGlobalNormState(norm)``.
  """
  _validate.positive("max_norm", max_norm)

  def init(params):
    del params
    return ClipByGlobalNormState(jnp.zeros([], jnp.float32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    norm = global_norm(updates, axis_name=axis_name)
    trigger = norm < max_norm
    out = jax.tree.map(
        lambda g: jnp.where(trigger, g, (g / norm.astype(g.dtype)) * max_norm).astype(g.dtype),
        updates)
    return out, ClipByGlobalNormState(norm.astype(jnp.float32))

  return _base.GradientTransformation(init, update)


_UNIT_AXES = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}


def unitwise_norm(x: jax.Array, axis=None) -> jax.Array:
  """Norm per unit, broadcast back to ``x``'s shape (optax's conventions).

  Scalars and vectors are one unit; matrices (in, out) and multi-head kernels
  (in, heads, head_dim) reduce over axis 0; conv kernels (HWIO, DHWIO) over
  every axis but the last. ``axis`` overrides the rule.
  """
  sq = _abs_sq(x)
  if axis is None:
    if jnp.squeeze(x).ndim <= 1:
      axis = tuple(range(x.ndim))
    elif x.ndim in _UNIT_AXES:
      axis = _UNIT_AXES[x.ndim]
    else:
      raise ValueError(f"unitwise_norm: no default unit for shape {x.shape}; pass axis=")
  return jnp.broadcast_to(jnp.sqrt(jnp.sum(sq, axis=axis, keepdims=True)), x.shape)


def adaptive_grad_clip(clipping: float, eps: float = 1e-3,
                       axis=None) -> _base.GradientTransformation:
  r"""Adaptive gradient clipping (Brock et al. 2021, NFNets, arXiv 2102.06171).

  Per unit i: :math:`g_i \leftarrow g_i \cdot \min(1, \lambda \max(\lVert\theta_i\rVert,
  \epsilon) / \lVert g_i\rVert)`, so the clip threshold follows the size of the
  weights. Needs ``params``; stateless.

  Args:
    clipping: λ > 0, the largest ratio of a unit's gradient norm to its weight
      norm (no default, as in optax; the paper uses 0.01 for large batches).
    eps: ε >= 0, the floor of the weight norm, so zero-initialized units can
      move; 1e-3 (optax's and the paper's).
    axis: the axes of one unit: None (default) uses :func:`unitwise_norm`'s rules
      by rank; an int or tuple of ints applies to every leaf.

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.positive("clipping", clipping)
  _validate.nonnegative("eps", eps)

  def init(params):
    del params
    return _base.EmptyState()

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.require_params("adaptive_grad_clip", params)
    _tree.check_match("updates", updates, "params", params)

    def clip_one(g, p):
      g_norm = unitwise_norm(g, axis)
      max_norm = jnp.maximum(unitwise_norm(p, axis), eps) * clipping
      wide = g.astype(_tree.state_dtype_for(g))  # float32 or wider; complex stays complex
      clipped = wide * (max_norm / jnp.maximum(g_norm, 1e-6))
      return jnp.where(g_norm < max_norm, wide, clipped).astype(g.dtype)

    return jax.tree.map(clip_one, updates, params), state

  return _base.GradientTransformation(init, update)
