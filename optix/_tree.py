"""Small pytree helpers shared by transforms: state allocation, dtype policy,
structure checks and the saturating step counter."""

import jax
import jax.numpy as jnp
import optax

# The step counter is int32 and saturates at 2**31 - 1 instead of wrapping.
safe_increment = optax.safe_int32_increment


def state_dtype_for(param, requested=None):
  """The dtype a transform keeps its statistics of ``param`` in: at least float32, same kind.

  ``requested=None`` is the policy: bf16/fp16 params get float32 statistics
  (moments in bf16 lose small updates to rounding), float32 and float64 keep
  their dtype, complex64 and complex128 keep theirs (a real moment of a complex
  gradient would drop its imaginary part), and other params (integers) get
  float32. A requested dtype is taken as is, except that a real one for complex
  params becomes the complex dtype of that precision (float32 -> complex64).
  """
  dtype = jnp.result_type(param)
  if requested is None:
    if jnp.issubdtype(dtype, jnp.complexfloating):
      return dtype
    if jnp.issubdtype(dtype, jnp.floating):
      return jnp.promote_types(dtype, jnp.float32)
    return jnp.dtype(jnp.float32)
  requested = jnp.dtype(requested)
  if not jnp.issubdtype(requested, jnp.inexact):
    raise ValueError("a state dtype (state_dtype, mu_dtype, ...) must be None (the policy) or a "
                     f"floating dtype such as jnp.float32, got {requested.name}")
  if (jnp.issubdtype(dtype, jnp.complexfloating)
      and not jnp.issubdtype(requested, jnp.complexfloating)):
    return jnp.promote_types(requested, jnp.complex64)
  return requested


def zeros_like(tree, dtype=None):
  """Zeros shaped like ``tree``, each leaf in ``state_dtype_for(leaf, dtype)``."""
  # zeros_like (not zeros(shape)) so state follows the params' sharding on Explicit meshes.
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=state_dtype_for(p, dtype)), tree)


def full_like(tree, value, dtype=None):
  """``value`` everywhere, shaped like ``tree``, each leaf in ``state_dtype_for(leaf, dtype)``."""
  return jax.tree.map(lambda p: jnp.full_like(p, value, dtype=state_dtype_for(p, dtype)), tree)


def is_complex(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def check_real(name, tree):
  """Raises ``ValueError`` naming the complex leaves of ``tree``, for transforms
  whose math is defined for real params only. Runs at trace time."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  bad = [jax.tree_util.keystr(path) or "<root>" for path, leaf in leaves if is_complex(leaf)]
  if bad:
    raise ValueError(f"{name} supports real params only; complex leaves at: "
                     + ", ".join(bad[:5]))


def cast_like(tree, reference):
  """Casts every leaf of ``tree`` to the dtype of the matching ``reference`` leaf."""
  return jax.tree.map(lambda x, r: jnp.asarray(x).astype(jnp.result_type(r)), tree, reference)


def require_params(name, params):
  """Raises ``ValueError`` when a transform that reads the params is called without them."""
  if params is None:
    raise ValueError(f"{name} needs params: call update(updates, state, params)")


def _is_variable(x) -> bool:
  """A Flax NNX ``Variable`` (e.g. the ``OptArray`` leaves of ``nnx.Optimizer.opt_state``),
  recognised without importing flax."""
  return callable(getattr(x, "get_value", None)) and type(x).__module__.startswith("flax.")


def plain_state(opt_state):
  """``opt_state`` with Flax NNX variables replaced by their arrays.

  Accepts a raw optimizer state, an ``nnx.Optimizer``'s ``opt_state`` (whose
  leaves are ``OptArray`` variables) or the ``nnx.Optimizer`` itself, so that
  every helper that reads optimizer state works the same under NNX.
  """
  if type(opt_state).__module__.startswith("flax.") and hasattr(opt_state, "opt_state"):
    opt_state = opt_state.opt_state  # an nnx.Optimizer
  return jax.tree.map(lambda x: x.get_value() if _is_variable(x) else x, opt_state,
                      is_leaf=_is_variable)


def find_states(opt_state, cls) -> list:
  """Every ``cls`` state (a NamedTuple type) inside ``opt_state``, outermost first,
  with NNX variables unwrapped (see :func:`plain_state`)."""
  found = jax.tree.leaves(plain_state(opt_state), is_leaf=lambda x: isinstance(x, cls))
  return [x for x in found if isinstance(x, cls)]


def broadcast_leaves(spec, tree) -> list:
  """One value per leaf of ``tree`` from ``spec``, a tree whose structure is a
  prefix of ``tree``'s (each spec leaf covers the whole matching subtree)."""
  return jax.tree.leaves(jax.tree.map(lambda s, x: jax.tree.map(lambda _: s, x), spec, tree))


def _describe(tree):
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): jnp.shape(leaf) for path, leaf in leaves}


def check_match(name, tree, ref_name, reference):
  """Raises ``ValueError`` naming the paths where two trees disagree.

  Runs at trace time only (pure Python on structures and shapes), so it costs
  nothing inside a jitted step.
  """
  if jax.tree.structure(tree) == jax.tree.structure(reference):
    shapes, ref_shapes = _describe(tree), _describe(reference)
    bad = [f"{k}: {shapes[k]} vs {ref_shapes[k]}" for k in shapes if shapes[k] != ref_shapes[k]]
    if bad:
      raise ValueError(f"{name} and {ref_name} have leaves of different shapes: "
                       + "; ".join(bad[:5]))
    return
  a, b = _describe(tree), _describe(reference)
  only_a = sorted(set(a) - set(b))
  only_b = sorted(set(b) - set(a))
  detail = []
  if only_a:
    detail.append(f"only in {name}: {only_a[:5]}")
  if only_b:
    detail.append(f"only in {ref_name}: {only_b[:5]}")
  if not detail:
    detail.append(f"{name} is {jax.tree.structure(tree)}, {ref_name} is "
                  f"{jax.tree.structure(reference)}")
  raise ValueError(f"{name} and {ref_name} have different tree structures ("
                   + "; ".join(detail) + ")")
