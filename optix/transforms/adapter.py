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
  naming the paths; ``real_only=True`` rejects complex params naming the leaves;
- **extra arguments accepted**: keyword arguments the optax update does not take
  are dropped (some optax updates list theirs without ``**kwargs``);
- **checkpointable state**: typed PRNG keys in optax's state are kept as their raw
  key data (uint32), which orbax saves and ``jit`` donates like any array.

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


def _accepted(update):
  """The keyword names ``update`` takes, or None when it takes ``**kwargs``."""
  try:
    parameters = inspect.signature(update).parameters.values()
  except (TypeError, ValueError):
    return None
  if any(p.kind is p.VAR_KEYWORD for p in parameters):
    return None
  return {p.name for p in parameters}


def _is_key(x):
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(state):
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _data_to_keys(state, abstract):
  """``state`` with the leaves that are typed keys in ``abstract`` wrapped back into keys."""
  return jax.tree.map(
      lambda x, a: jax.random.wrap_key_data(x, impl=a.dtype._impl) if _is_key(a) else x,  # pylint: disable=protected-access
      state, abstract)


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
  accepted = _accepted(tx.update)

  def init(params):
    if real_only:
      _tree.check_real(name, params)
    state = _keys_to_data(tx.init(cast_to_state_dtype(params, state_dtype=state_dtype)))
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
    if accepted is not None:
      extra_args = {k: v for k, v in extra_args.items() if k in accepted}
    typed = jax.eval_shape(tx.init, cast_to_state_dtype(reference, state_dtype=state_dtype))
    has_keys = any(_is_key(x) for x in jax.tree.leaves(typed))
    if has_keys:
      state = _data_to_keys(state, typed)
    out, new_state = tx.update(g, state, params, **extra_args)
    if has_keys:
      new_state, state = _keys_to_data(new_state), _keys_to_data(state)
    return _tree.cast_like(out, updates), _keep_dtypes(new_state, state)

  return _base.GradientTransformation(init, update)


def scalars_as_vectors(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` seeing every 0-d leaf as a 1-vector (for optax transforms that index a
  leaf's axes, e.g. SM3's per-axis accumulators); updates come back in each leaf's shape."""
  lift = lambda tree: jax.tree.map(lambda x: jnp.reshape(x, (1,)) if jnp.ndim(x) == 0 else x,
                                   tree)
  tx = optax.with_extra_args_support(tx)

  def update(updates, state, params=None, **extra_args):
    out, state = tx.update(lift(updates), state, None if params is None else lift(params),
                           **extra_args)
    return jax.tree.map(lambda o, u: jnp.reshape(o, jnp.shape(u)), out, updates), state

  return _base.GradientTransformation(lambda params: tx.init(lift(params)), update)


def optax_alias(optax_fn, name: str, checks: dict, doc: str, *, real_only: bool = False,
                module: Optional[str] = None, wrap=None):
  """An optix alias with ``optax_fn``'s exact signature: the arguments are bound to that
  signature, each in ``checks`` (``{argument: check(name, value)}``, e.g.
  ``optix._validate.unit_interval``) is validated, and optax's optimizer is returned
  wrapped by :func:`from_optax` (after ``wrap``, a function of the optax transform, when
  given)."""
  signature = inspect.signature(optax_fn)

  def alias(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    for arg, check in checks.items():
      value = bound.arguments[arg]
      if value is not None:
        check(arg, value)
    tx = optax_fn(*bound.args, **bound.kwargs)
    return from_optax(tx if wrap is None else wrap(tx), name, real_only=real_only)

  alias.__signature__ = signature
  alias.__name__ = alias.__qualname__ = name
  alias.__doc__ = doc
  if module is not None:
    alias.__module__ = module
  return alias
