"""Small pytree helpers shared by transforms: state allocation, dtype policy,
structure checks and the saturating step counter."""

import jax
import jax.numpy as jnp
import optax

# The step counter is int32 and saturates at 2**31 - 1 instead of wrapping.
safe_increment = optax.safe_int32_increment


def zeros_like(tree, dtype=jnp.float32):
  """Zeros shaped like ``tree``; ``dtype=None`` keeps each leaf's dtype.

  Moments are float32 by default whatever the param dtype (DESIGN §4): bf16
  params with bf16 second moments lose small updates to rounding.
  """
  # zeros_like (not zeros(shape)) so state follows the params' sharding on Explicit meshes.
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype or jnp.result_type(p)), tree)


def full_like(tree, value, dtype=jnp.float32):
  return jax.tree.map(lambda p: jnp.full_like(p, value, dtype=dtype or jnp.result_type(p)), tree)


def cast_like(tree, reference):
  """Casts every leaf of ``tree`` to the dtype of the matching ``reference`` leaf."""
  return jax.tree.map(lambda x, r: jnp.asarray(x).astype(jnp.result_type(r)), tree, reference)


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
