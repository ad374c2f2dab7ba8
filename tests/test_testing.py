"""optix.testing catches the faults it promises to catch."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import pytest

import optix

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}


class _Count(NamedTuple):
  count: jax.Array


def _transform(update):
  return optix.GradientTransformation(lambda p: _Count(jnp.zeros([], jnp.int32)), update)


def test_accepts_a_correct_transform_with_reference():
  optix.testing.check_transform(optix.adam(1e-3), PARAMS, reference=optax.adam(1e-3))


def test_rejects_state_dtype_drift():
  tx = _transform(lambda u, s, p=None, **kw: (u, _Count(s.count.astype(jnp.float32) + 1)))
  with pytest.raises(AssertionError):
    optix.testing.check_transform(tx, PARAMS)


def test_rejects_non_finite_updates():
  tx = _transform(lambda u, s, p=None, **kw: (jax.tree.map(lambda g: g / 0.0, u), s))
  with pytest.raises(AssertionError):
    optix.testing.check_transform(tx, PARAMS)


def test_rejects_updates_of_another_dtype():
  tx = _transform(lambda u, s, p=None, **kw: (jax.tree.map(lambda g: g.astype(jnp.bfloat16), u), s))
  with pytest.raises(AssertionError):
    optix.testing.check_transform(tx, PARAMS)


def test_rejects_transforms_without_extra_args():
  plain = optax.GradientTransformation(lambda p: optax.EmptyState(),
                                       lambda u, s, p=None: (u, s))
  with pytest.raises(TypeError):
    optix.testing.check_transform(plain, PARAMS)


def test_rejects_a_parity_mismatch():
  with pytest.raises(AssertionError):
    optix.testing.check_transform(optix.adam(1e-3), PARAMS, reference=optax.adam(2e-3))


def test_max_relative_difference():
  assert optix.testing.max_relative_difference({"a": jnp.array([1.0, 2.0])},
                                               {"a": jnp.array([1.0, 2.2])}) == pytest.approx(
                                                   0.2 / 2.2, rel=1e-6)


def test_check_state_stable_rejects_a_state_that_changes_shape_under_cond():
  """A state that grows each step cannot be a lax.cond branch result (nor a scan carry)."""
  grow = optix.GradientTransformation(
      lambda p: jnp.zeros(1), lambda u, s, p=None, **kw: (u, jnp.concatenate([s, s])))
  with pytest.raises((AssertionError, TypeError)):
    optix.testing.check_state_stable(grow, PARAMS)

