"""Float32 master weights for bf16/fp16 params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix


def test_small_updates_accumulate_in_the_master_copy():
  """lr·g = 1e-3 is below half a bf16 ulp at 1.0 (2**-8): bf16 params alone never move;
  with master weights they follow the float32 trajectory, rounded."""
  params = {"w": jnp.ones(3, jnp.bfloat16)}
  grads = {"w": jnp.ones(3, jnp.bfloat16)}
  plain, master = optix.sgd(1e-3), optix.with_master_weights(optix.sgd(1e-3))
  p_plain, s_plain = params, plain.init(params)
  p_master, s_master = params, master.init(params)
  step_plain, step_master = jax.jit(plain.update), jax.jit(master.update)
  for _ in range(100):
    u, s_plain = step_plain(grads, s_plain, p_plain)
    p_plain = optix.apply_updates(p_plain, u)
    u, s_master = step_master(grads, s_master, p_master)
    assert u["w"].dtype == jnp.bfloat16
    p_master = optix.apply_updates(p_master, u)
  np.testing.assert_array_equal(p_plain["w"], 1.0)
  np.testing.assert_allclose(s_master.master["w"], 0.9, rtol=1e-5)
  assert s_master.master["w"].dtype == jnp.float32
  np.testing.assert_array_equal(p_master["w"], jnp.asarray(0.9, jnp.float32).astype(jnp.bfloat16))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_params_stay_the_rounded_master_weights(dtype):
  """With Adam's small steps params + u == round(master) exactly, and the master
  trajectory is the float32 one."""
  key = jax.random.key(0)
  params32 = {"a": jax.random.normal(key, (16, 8)), "b": jnp.linspace(-2.0, 2.0, 8)}
  params = jax.tree.map(lambda p: p.astype(dtype), params32)
  tx = optix.with_master_weights(optix.adamw(1e-3, weight_decay=0.1))
  ref = optix.adamw(1e-3, weight_decay=0.1)
  state, ref_state = tx.init(params), ref.init(params)
  ref_p = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  step = jax.jit(tx.update)
  for k in jax.random.split(jax.random.key(1), 10):
    g32 = optix.testing.random_like(k, params32)
    g = jax.tree.map(lambda x: x.astype(dtype), g32)
    u, state = step(g, state, params)
    params = optix.apply_updates(params, u)
    jax.tree.map(lambda p, m: np.testing.assert_array_equal(p, m.astype(dtype)), params,
                 state.master)
    ref_u, ref_state = ref.update(jax.tree.map(lambda x: x.astype(jnp.float32), g), ref_state,
                                  ref_p)
    ref_p = optix.apply_updates(ref_p, ref_u)
  jax.tree.map(lambda m, r: np.testing.assert_allclose(m, r, rtol=1e-5, atol=1e-6),
               state.master, ref_p)


def test_needs_params_and_matching_trees():
  tx = optix.with_master_weights(optix.sgd(0.1))
  params = {"w": jnp.ones(2, jnp.bfloat16)}
  state = tx.init(params)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, state)
  with pytest.raises(ValueError, match="extra"):
    tx.update({"w": params["w"], "extra": jnp.ones(1)}, state, params)
