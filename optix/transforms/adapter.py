"""Running an optax transform under optix's guarantees.

Where optix adds no new math, an alias builds on optax's transform and this
adapter gives it what every optix transform promises:

- **state dtype at least float32, same kind**: params and updates are cast to
  :func:`optix._tree.state_dtype_for` of each param leaf before they reach the
  optax transform, so its statistics (``zeros_like(params)``) are float32 for
  bf16/fp16 params, float64 for float64 and complex64 for complex64; updates
  come back in each param's dtype;
- **stable state**: after ``update`` every state leaf keeps the dtype it had
  (a weak-typed scalar in optax's update cannot promote a counter or a norm);
- **donation-safe state**: ``init`` copies every state leaf, so no state leaf
  shares a buffer with the params or with another state leaf;
- **named errors**: an updates/params tree mismatch raises ``ValueError``
  naming the paths; ``real_only=True`` rejects complex params naming the leaves.

Hyperparameters are validated by the alias that builds the optax transform.
"""

import inspect
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from optix import _base, _tree


def cast_to_state_dtype(tree, reference=None, state_dtype=None):
  """Each leaf of ``tree`` in ``state_dtype_for`` of the matching ``reference`` leaf."""
  reference = tree if reference is None else reference
  return jax.tree.map(
      lambda x, r: jnp.asarray(x).astype(_tree.state_dtype_for(r, state_dtype)), tree, reference)


def _keep_dtypes(new, old):
  """``new`` with each array leaf cast to the dtype of the matching ``old`` leaf."""
  try:
    return jax.tree.map(
        lambda n, o: n.astype(o.dtype) if hasattr(n, "astype") and hasattr(o, "dtype") else n,
        new, old)
  except ValueError:  # a state whose structure changes in update: leave it to the transform
    return new


def from_optax(tx: optax.GradientTransformation, name: str, *, real_only: bool = False,
               state_dtype: Optional[Any] = None) -> _base.GradientTransformation:
  """Wraps ``tx`` (an optax transform) with the guarantees listed in the module doc.

  Args:
    tx: any optax ``GradientTransformation``.
    name: the optimizer's name, used in error messages.
    real_only: reject complex params (the transform's math is defined for reals).
    state_dtype: the dtype the transform computes in; None is the policy.
  """
  tx = optax.with_extra_args_support(tx)

  def init(params):
    if real_only:
      _tree.check_real(name, params)
    state = tx.init(cast_to_state_dtype(params, state_dtype=state_dtype))
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if hasattr(x, "dtype") else x, state)

  def update(updates, state, params=None, **extra_args):
    reference = updates
    if params is not None:
      _tree.check_match("updates", updates, "params", params)
      reference = params
      params = cast_to_state_dtype(params, params, state_dtype)
    if real_only:
      _tree.check_real(name, updates)
    g = cast_to_state_dtype(updates, reference, state_dtype)
    out, new_state = tx.update(g, state, params, **extra_args)
    return _tree.cast_like(out, updates), _keep_dtypes(new_state, state)

  return _base.GradientTransformation(init, update)


def optax_alias(optax_fn, name: str, checks: dict, doc: str, *, real_only: bool = False,
                module: Optional[str] = None):
  """An optix alias with ``optax_fn``'s exact signature: the arguments are bound to that
  signature, each in ``checks`` (``{argument: check(name, value)}``, e.g.
  ``optix._validate.unit_interval``) is validated, and optax's optimizer is returned
  wrapped by :func:`from_optax`."""
  signature = inspect.signature(optax_fn)

  def alias(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    for arg, check in checks.items():
      value = bound.arguments[arg]
      if value is not None:
        check(arg, value)
    return from_optax(optax_fn(*bound.args, **bound.kwargs), name, real_only=real_only)

  alias.__signature__ = signature
  alias.__name__ = alias.__qualname__ = name
  alias.__doc__ = doc
  if module is not None:
    alias.__module__ = module
  return alias
