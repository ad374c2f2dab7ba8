"""Property-based tests: random tree structures (nested dicts, lists and tuples, None
leaves, scalars, zero-size arrays, mixed float dtypes) and random hyperparameters inside their
valid ranges. init/update never crash, structure/shapes/dtypes are stable, updates are finite."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optix

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
shapes = st.one_of(st.just(()), st.just((0,)), st.just((3, 0)),
                   st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))
class Leaf(tuple):
  """(shape, dtype) of one array; a leaf to jax.tree (not a registered container)."""


leaves = st.one_of(st.none(), st.tuples(shapes, st.sampled_from(DTYPES)).map(Leaf))
trees = st.recursive(
    leaves,
    lambda sub: st.one_of(st.lists(sub, max_size=3), st.lists(sub, max_size=3).map(tuple),
                          st.dictionaries(st.sampled_from("abcdef"), sub, max_size=3)),
    max_leaves=6)
# The whole params tree is a container: params=None means "no params" to update() (as in optax).
trees = st.dictionaries(st.sampled_from("xyz"), trees, max_size=3)


def _materialize(spec, seed):
  """Leaf specs -> random arrays; containers and None kept."""
  specs, treedef = jax.tree.flatten(spec, is_leaf=lambda x: isinstance(x, Leaf))
  keys = jax.random.split(jax.random.key(seed), max(len(specs), 1))
  arrays = [jax.random.normal(k, s).astype(d) for k, (s, d) in zip(keys, specs)]
  return jax.tree.unflatten(treedef, arrays)


unit = st.floats(0.0, 0.999)
lr = st.floats(1e-5, 1.0)
# name -> strategy of a built optimizer with random valid hyperparameters.
OPTIMIZERS = {
    "adamw": st.builds(lambda a, b1, b2, e, wd: optix.adamw(a, b1, b2, e, weight_decay=wd),
                       lr, unit, unit, st.floats(1e-12, 1e-3), st.floats(0.0, 1.0)),
    "nadamw": st.builds(lambda a, b1, b2: optix.nadamw(a, b1, b2), lr, unit, unit),
    "lion": st.builds(lambda a, b1, b2, wd: optix.lion(a, b1, b2, weight_decay=wd),
                      lr, unit, unit, st.floats(0.0, 1.0)),
    "sgd": st.builds(lambda a, m, n: optix.sgd(a, momentum=m, nesterov=n),
                     lr, st.one_of(st.none(), unit), st.booleans()),
    "rmsprop": st.builds(lambda a, d, c, m: optix.rmsprop(a, decay=d, centered=c, momentum=m),
                         lr, unit, st.booleans(), st.one_of(st.none(), unit)),
    "adagrad": st.builds(lambda a, i: optix.adagrad(a, initial_accumulator_value=i),
                         lr, st.floats(0.0, 1.0)),
    "adafactor": st.builds(lambda a, m, f: optix.adafactor(a, momentum=m, min_dim_size_to_factor=f),
                           lr, st.one_of(st.none(), unit), st.integers(0, 4)),
    "clip_adam": st.builds(lambda c, a: optix.chain(optix.clip_by_global_norm(c), optix.adam(a)),
                           st.floats(1e-3, 10.0), lr),
    "guarded_adam": st.builds(lambda k: optix.apply_if_finite(optix.adam(1e-3), k),
                              st.integers(0, 5)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@SETTINGS
@given(data=st.data())
def test_random_trees_and_hyperparameters(name, data):
  spec = data.draw(trees, label="tree")
  tx = data.draw(OPTIMIZERS[name], label="optimizer")
  params = _materialize(spec, 0)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for seed in (1, 2):
    grads = _materialize(spec, seed)
    updates, new_state = step(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(grads)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
    for u in jax.tree.leaves(updates):
      assert np.all(np.isfinite(np.asarray(u, np.float32))), (name, spec)
    params = optix.apply_updates(params, updates)
    state = new_state
  chex.assert_trees_all_equal_shapes_and_dtypes(params, _materialize(spec, 0))
