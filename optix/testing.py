"""Contract checks for any GradientTransformation, for use in users' unit tests.

One call checks what every optix optimizer is tested for::

    def test_my_transform():
      optix.testing.check_transform(my_tx(), params)

It verifies that ``init``/``update`` trace under ``jit``; that the state keeps its
tree structure, shapes and dtypes through ``update`` and through both branches of
``lax.cond``; that unknown keyword extra arguments are accepted; that updates
have the structure, shapes and dtypes of the gradients and are finite; and,
with ``reference=``, that the updates match another transform's (e.g. optax's)
step after step.
"""

from typing import Any, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from optix import _base


def random_like(key, tree, scale=1.0):
  """Standard-normal arrays (times ``scale``) shaped and typed like ``tree``.

  Args:
    key: a ``jax.random`` key; split once per leaf.
    tree: a pytree of arrays (or ``ShapeDtypeStruct``) giving shapes and dtypes.
    scale: the standard deviation; 1.0.

  Returns:
    A tree like ``tree``: draws made in float32, then cast to each leaf's dtype.
  """
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(treedef, [
      (scale * jax.random.normal(k, jnp.shape(x), jnp.float32)).astype(jnp.result_type(x))
      for k, x in zip(keys, leaves)])


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def check_state_stable(tx: _base.GradientTransformation, params, grads=None, **extra_args):
  """The state after ``update`` (and after either ``lax.cond`` branch) has the
  same tree structure, shapes and dtypes as the state from ``init``.

  Args:
    tx: the transform under test.
    params: example params (any pytree of arrays).
    grads: the gradients to update with; None (default): :func:`random_like`
      ``params`` (key 0).
    **extra_args: keyword extra arguments passed to ``update``.

  Returns:
    The state from ``tx.init(params)``.

  Raises:
    AssertionError: if a structure, shape or dtype changes, or the skipped
      ``lax.cond`` branch does not return the input state bit for bit.
  """
  grads = random_like(jax.random.key(0), params) if grads is None else grads
  state = tx.init(params)
  new_state = jax.eval_shape(lambda g, s, p: tx.update(g, s, p, **extra_args)[1],
                             grads, state, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(_abstract(state), new_state)

  def cond_step(pred, g, s, p):
    return jax.lax.cond(pred, lambda: tx.update(g, s, p, **extra_args)[1], lambda: s)

  # One compiled cond, run with each predicate: the taken branch's state keeps the types, the
  # skipped branch's state is the input state, bit for bit.
  cond_step = jax.jit(cond_step)
  for pred in (True, False):
    out = cond_step(jnp.asarray(pred), grads, state, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(out, state)
    if not pred:
      chex.assert_trees_all_equal(out, state)
  return state


def check_transform(tx: _base.GradientTransformation, params: Any, *, steps: int = 3,
                    reference: Optional[_base.GradientTransformationBase] = None,
                    rtol: float = 1e-5, atol: float = 1e-6, seed: int = 0,
                    extra_args: Optional[dict] = None) -> None:
  """Runs the whole contract; raises ``AssertionError`` on the first failure.

  Args:
    tx: the transform under test.
    params: example params (any pytree of arrays).
    steps: jitted update steps taken with random gradients.
    reference: optional transform expected to give the same updates (parity).
    rtol: relative tolerance of the parity check; 1e-5.
    atol: absolute tolerance of the parity check; 1e-6.
    seed: seeds the random gradients.
    extra_args: keyword extra arguments passed to every ``update`` (e.g. ``value``).

  Returns:
    None.
  """
  extra_args = dict(extra_args or {})
  check_state_stable(tx, params, **extra_args)
  init = jax.jit(tx.init)
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, unknown_extra_arg=1.0, **extra_args))
  state = init(params)
  ref_state = reference.init(params) if reference is not None else None
  key = jax.random.key(seed)
  p = params
  for _ in range(steps):
    key, sub = jax.random.split(key)
    grads = random_like(sub, params)
    updates, state = update(grads, state, p)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    chex.assert_tree_all_finite(updates)
    if reference is not None:
      ref_updates, ref_state = reference.update(grads, ref_state, p, **extra_args)
      chex.assert_trees_all_close(updates, ref_updates, rtol=rtol, atol=atol)
    p = _base.apply_updates(p, updates)


def max_relative_difference(a, b) -> float:
  """Max over leaves and elements of ``abs(a - b) / max(abs(b), tiny)``, in float64 on the host.

  Args:
    a: a pytree of arrays (the values under test).
    b: a pytree of the same structure (the reference: the denominator);
      ``tiny`` is 1e-30.

  Returns:
    A Python float (0.0 for empty trees).
  """
  diffs = jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                                / np.maximum(np.abs(np.asarray(y, np.float64)), 1e-30),
                                initial=0.0)), a, b)
  return max(jax.tree.leaves(diffs), default=0.0)
