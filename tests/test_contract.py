"""Shared contract tests, run over every optimizer in the registry."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import optix
from registry import ENTRIES, params_for

ids = [e.name for e in ENTRIES]


@pytest.fixture(autouse=True)
def _skip_listed(request):
  entry = request.node.callspec.params.get("entry") if hasattr(request.node, "callspec") else None
  if entry is not None and request.node.originalname in entry.skip:
    pytest.skip(entry.skip[request.node.originalname])


def _grads(key, params):
  return optix.testing.random_like(key, params)


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_contract_fp32(entry):
  optix.testing.check_transform(entry.make(), params_for(entry), steps=3,
                                extra_args=entry.extra_args)


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_bf16_params_keep_fp32_state(entry):
  params = params_for(entry, jnp.bfloat16)
  tx = entry.make()
  state = tx.init(params)
  updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args))(
      _grads(jax.random.key(1), params), state, params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  chex.assert_tree_all_finite(updates)
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, f"{entry.name}: state leaf in {leaf.dtype}"


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_tree_mismatch_is_named(entry):
  params = params_for(entry)
  tx = entry.make()
  state = tx.init(params)
  grads = dict(_grads(jax.random.key(2), params))
  grads["extra_leaf"] = jnp.ones(3)
  with pytest.raises(ValueError, match="extra_leaf"):
    tx.update(grads, state, params, **entry.extra_args)


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_checkpoint_round_trip_resumes_bit_exactly(entry, tmp_path):
  params = params_for(entry)
  tx = entry.make()
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args))

  def run(state, p, keys):
    for k in keys:
      updates, state = step(_grads(k, p), state, p)
      p = optix.apply_updates(p, updates)
    return state, p

  keys = jax.random.split(jax.random.key(3), 6)
  state, p = run(tx.init(params), params, keys[:3])
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", {"state": state, "params": p})
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "ckpt",
                            jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                         {"state": state, "params": p}))
  assert jax.tree.structure(restored["state"]) == jax.tree.structure(state)
  expected = run(state, p, keys[3:])
  resumed = run(restored["state"], restored["params"], keys[3:])
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.bad], ids=[e.name for e in ENTRIES if e.bad])
def test_bad_hyperparameters_rejected(entry):
  for arg, build in entry.bad:
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
      build()


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_state_can_be_donated(entry):
  """Training steps donate the optimizer state: no two state leaves may share a buffer."""
  params = params_for(entry)
  tx = entry.make()
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args), donate_argnums=(1,))
  state = tx.init(params)
  for k in jax.random.split(jax.random.key(4), 2):
    _, state = step(_grads(k, params), state, params)
  chex.assert_tree_all_finite(jax.tree.leaves(state))
