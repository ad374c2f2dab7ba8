"""Decoupled weight decay, and the masks that choose which params decay."""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate

MaskOrFn = Optional[Union[Any, Callable[[_base.Params], Any]]]


def add_decayed_weights(weight_decay: _base.ScalarOrSchedule = 0.0,
                        mask: MaskOrFn = None) -> _base.GradientTransformation:
  r"""Decoupled weight decay (Loshchilov & Hutter 2019, arXiv 1711.05101).

  .. math:: u_t \leftarrow u_t + \lambda\, \theta_t

  Placed after the adaptive scaling and before the learning rate, the decay is
  *not* divided by √v (that is what makes AdamW differ from Adam + L2).
  ``mask`` is a pytree of bools like the params, or a callable params → such a
  tree (see :func:`matrices_only`, :func:`exclude_names`); False leaves do not decay.
  Needs ``params``.

  Args:
    weight_decay: λ, a float >= 0 or a schedule of the step count; 0 (optax's:
      no decay).
    mask: which params decay: a tree of bools like the params (or a prefix), or a
      callable params -> such a tree; None (default): all.

  Returns:
    A ``GradientTransformation``; its state counts steps (``ScheduleCount``) when
    ``weight_decay`` is a schedule, else it is empty.
  """
  _validate.nonnegative("weight_decay", weight_decay)

  def init(params):
    del params
    return ScheduleCount(jnp.zeros([], jnp.int32)) if callable(weight_decay) else _base.EmptyState()

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.require_params("add_decayed_weights", params)
    _tree.check_match("updates", updates, "params", params)
    if callable(weight_decay):
      wd, state = weight_decay(state.count), ScheduleCount(_tree.safe_increment(state.count))
    else:
      wd = weight_decay
    out = jax.tree.map(lambda g, p: (g + wd * p.astype(g.dtype)).astype(g.dtype), updates, params)
    return out, state

  tx = _base.GradientTransformation(init, update)
  # A mask function marked ``elementwise`` (optix.packed_mask) gives each packed
  # buffer one value, so the masked decay runs unchanged on packed trees.
  return _base.described(_base.masked(tx, mask) if mask is not None else tx,
                         "add_decayed_weights", weight_decay=weight_decay, mask=mask,
                         elementwise=mask is None or getattr(mask, "elementwise", False) is True)


class ScheduleCount(NamedTuple):
  count: jax.Array  # int32, saturating


def matrices_only(params):
  """Mask: True for params with ndim >= 2 (weights), False for biases, norm
  scales and other scalars/vectors, which conventionally do not decay.

  Args:
    params: the params pytree (pass the function itself as a ``mask``).

  Returns:
    A tree of bools with the structure of ``params``.
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def exclude_names(*names: str) -> Callable[[_base.Params], Any]:
  """Mask factory: False for every leaf whose key path has one of ``names``
  (a path component equal to the name, e.g.
  ``exclude_names("bias", "scale", "embedding")``), True elsewhere.

  Args:
    *names: one or more non-empty strings, compared with each dict key,
      attribute name or sequence index (as a string) along a leaf's path
      (``ValueError`` otherwise).

  Returns:
    A mask function params -> tree of bools.
  """
  names = tuple(names)
  if not names or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"exclude_names needs non-empty strings, got {names!r}")

  def mask(params):
    def keep(path, _):
      parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
      return not any(part in names for part in parts)
    return jax.tree_util.tree_map_with_path(keep, params)

  return mask


def combine_masks(*masks: Callable[[_base.Params], Any]) -> Callable[[_base.Params], Any]:
  """Mask that is True only where every mask is True.

  With no masks the conjunction is empty, so the mask is True for every leaf:
  the same as ``mask=None`` (no restriction), which lets a list of masks built
  at run time be empty (``combine_masks(*masks)``).

  Args:
    *masks: mask functions params -> tree of bools, or such trees themselves
      (each with the params' structure); none: all True.

  Returns:
    A mask function params -> tree of bools.
  """
  def mask(params):
    if not masks:
      return jax.tree.map(lambda _: True, params)
    trees = [m(params) if callable(m) else m for m in masks]
    return jax.tree.map(lambda *bs: all(bs), *trees)
  return mask
