"""Shared contract tests, run over every optimizer in the registry."""

import warnings

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


def _complex(tree, seed=None):
  """``tree`` with complex64 leaves for its floating ones: the leaves plus ``0.5j`` times
  themselves, or (with ``seed``) fresh draws with independent real and imaginary parts."""
  def one(x, key):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      return x
    if key is None:
      return x.astype(jnp.complex64) * (1 + 0.5j)
    re, im = jax.random.normal(key, (2,) + x.shape)
    return (re + 1j * im).astype(jnp.complex64)
  leaves, treedef = jax.tree.flatten(tree)
  keys = [None] * len(leaves) if seed is None else jax.random.split(jax.random.key(seed),
                                                                    len(leaves))
  return jax.tree.unflatten(treedef, [one(x, k) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_complex_params_are_stepped_in_complex_or_refused(entry):
  """Complex params either take complex updates that depend on the gradients' imaginary
  parts, with no complex value cast to a real dtype on the way, or are refused with a
  ValueError that says complex (the state policy: complex keeps complex)."""
  params = _complex(params_for(entry))
  with warnings.catch_warnings():
    warnings.simplefilter("error", np.exceptions.ComplexWarning)
    warnings.filterwarnings("error", message=".*[Cc]asting from complex", category=DeprecationWarning)
    try:
      tx = entry.make()
      state = tx.init(params)
      step = jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args))
      p, imaginary = params, False
      for seed in range(3):
        grads = _complex(params, seed)
        updates, state = step(grads, state, p)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
        chex.assert_tree_all_finite(updates)
        imaginary |= any(bool(jnp.any(jnp.imag(u) != 0)) for u in jax.tree.leaves(updates))
        p = optix.apply_updates(p, updates)
    except ValueError as e:
      assert "complex" in str(e).lower(), f"{entry.name}: refused without saying why: {e}"
      return
  assert imaginary, f"{entry.name}: complex params took updates with no imaginary part"


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_tree_mismatch_is_named(entry):
  params = params_for(entry)
  tx = entry.make()
  state = tx.init(params)
  grads = dict(_grads(jax.random.key(2), params))
  grads["extra_leaf"] = jnp.ones(3)
  with pytest.raises(ValueError, match="extra_leaf"):
    tx.update(grads, state, params, **entry.extra_args)


def _checkpoint_resume(tx, params, extra_args, path):
  """Three steps, save (orbax), restore into the abstract state a fresh process builds
  (``jax.eval_shape(tx.init, params)``, no live array), three more steps from both. Asserts the
  restored state has the saved state's structure, shapes and dtypes and its bits, and that the
  resumed run equals the uninterrupted one bit for bit."""
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra_args))

  def run(state, p, keys):
    for k in keys:
      updates, state = step(_grads(k, p), state, p)
      p = optix.apply_updates(p, updates)
    return state, p

  keys = jax.random.split(jax.random.key(3), 6)
  state, p = run(tx.init(params), params, keys[:3])
  target = {"state": jax.eval_shape(tx.init, params), "params": jax.eval_shape(lambda: params)}
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, {"state": state, "params": p})
    ckpt.wait_until_finished()
    restored = ckpt.restore(path, target)
  # The state after steps must be what init promised: a resume only knows init's shapes.
  chex.assert_trees_all_equal_shapes_and_dtypes(restored["state"], state)
  jax.tree.map(np.testing.assert_array_equal, restored["state"], state)
  expected = run(state, p, keys[3:])
  resumed = run(restored["state"], restored["params"], keys[3:])
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)


@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_checkpoint_round_trip_resumes_bit_exactly(entry, tmp_path):
  _checkpoint_resume(entry.make(), params_for(entry), entry.extra_args, tmp_path / "ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=ids)
def test_complex_state_round_trips_bit_exactly(entry, tmp_path):
  """The checkpoint contract on complex params, for the optimizers that take them."""
  try:
    _checkpoint_resume(entry.make(), _complex(params_for(entry)), entry.extra_args,
                       tmp_path / "ckpt")
  except ValueError as e:
    if "complex" not in str(e).lower():
      raise
    pytest.skip(f"refuses complex params: {e}")


def _drifting(field_after_update):
  """sgd with a counter whose state after an update is ``field_after_update(state)``."""
  def init(params):
    del params
    return {"count": jnp.zeros([], jnp.int32)}

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: -0.1 * g, updates), field_after_update(state)

  return optix.GradientTransformation(init, update)


@pytest.mark.parametrize("drift", [
    pytest.param(lambda s: {"count": s["count"].astype(jnp.float32) + 1}, id="dtype"),
    pytest.param(lambda s: {"count": jnp.stack([s["count"] + 1] * 2)}, id="shape"),
    pytest.param(lambda s: {"count": s["count"] + 1, "extra": jnp.zeros(2)}, id="structure"),
])
def test_checkpoint_check_catches_state_drift(drift, tmp_path):
  """A state whose structure, shape or dtype after an update differs from init's cannot be
  resumed from the abstract target: the round-trip check fails on it."""
  with pytest.raises((AssertionError, ValueError, TypeError)):
    _checkpoint_resume(_drifting(drift), {"w": jnp.ones(3)}, {}, tmp_path / "ckpt")


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
