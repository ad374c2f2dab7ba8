"""Every execution path of a step computes the reference step.

The reference is ``tx.update`` followed by ``optax.apply_updates`` under ``jax.jit``
(what ``flax.nnx.Optimizer`` runs). The other paths -- ``optix.apply_step`` with
the one-pass kernel on, off or chosen automatically, ``optix.packed(tx)`` through
``update`` and through ``apply_step``, params kept packed with ``optix.pack`` --
must give the same params on random trees (0-d, zero-size and odd-sized leaves,
float32/bf16/fp16 params, gradients of another dtype than their params) and
random chains, to a few ulps of each leaf's dtype (the kernel reproduces the
chain's arithmetic but XLA may rewrite a scalar factor differently in a bigger
graph; a global norm sums its squares in another order when packed).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optix

SHAPES = [(), (0,), (1,), (3,), (7,), (5, 2), (2, 3, 2), (33,)]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
CORES = {
    "adam": lambda lr: optix.adam(lr),
    "adamw": lambda lr: optix.adamw(lr, weight_decay=0.1),
    "adamw_masked": lambda lr: optix.adamw(lr, weight_decay=0.1,
                                           mask=optix.packed_mask(optix.matrices_only)),
    "nadamw": lambda lr: optix.nadamw(lr, weight_decay=0.1),
    "lion": lambda lr: optix.lion(lr, weight_decay=0.1),
    "sgd_momentum": lambda lr: optix.sgd(lr, momentum=0.9),
    "rmsprop": lambda lr: optix.rmsprop(lr),
}
PREFIXES = {
    "clip_by_global_norm": lambda: optix.clip_by_global_norm(1.0),
    "clip": lambda: optix.clip(0.5),
}
STEPS = 3


@st.composite
def trees(draw, max_leaves):
  """A dict of 1..max_leaves leaves and the dtype of each leaf's gradient."""
  n = draw(st.integers(1, max_leaves))
  params, grad_dtypes = {}, {}
  for i in range(n):
    shape = draw(st.sampled_from(SHAPES))
    dtype = draw(st.sampled_from(DTYPES)) if draw(st.booleans()) else jnp.float32
    gdtype = draw(st.sampled_from(DTYPES)) if draw(st.integers(0, 3)) == 0 else dtype
    rng = np.random.default_rng(i)
    params[f"p{i:02d}"] = jnp.asarray(rng.standard_normal(shape), dtype)
    grad_dtypes[f"p{i:02d}"] = gdtype
  return params, grad_dtypes


@st.composite
def chains(draw):
  """(description, tx): a prefix of clipping links, then an optimizer alias with a
  constant or scheduled learning rate."""
  prefix = draw(st.lists(st.sampled_from(sorted(PREFIXES)), max_size=2, unique=True))
  core = draw(st.sampled_from(sorted(CORES)))
  lr = draw(st.sampled_from(["constant", "schedule"]))
  rate = 1e-2 if lr == "constant" else optix.linear_schedule(1e-2, 1e-3, 4)
  links = [PREFIXES[p]() for p in prefix] + [CORES[core](rate)]
  return f"{'+'.join(prefix + [core])}/{lr}", (optix.chain(*links) if prefix else links[0])


def _grads(params, grad_dtypes, k):
  return {name: jnp.asarray(np.random.default_rng(100 + k).standard_normal(jnp.shape(p)),
                            grad_dtypes[name]) for name, p in params.items()}


def _reference(tx, params, grads):
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
      *tx.update(g, s, p)))
  state = tx.init(params)
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def _apply_step(tx, params, grads, fused):
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=fused))
  state = tx.init(params)
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def _packed_params(tx, params, grads, fused):
  """Params kept packed between steps; gradients arrive packed."""
  layout = optix.layout_of(params)
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, layout.pack(g), s, p, fused=fused))
  p, state = layout.pack(params), tx.init(layout.pack(params))
  for g in grads:
    p, state = step(p, state, g)
  return optix.unpack(p), state


def _assert_close(path, got, want, ulps=8):
  for name in want:
    x, y = got[name], want[name]
    assert jnp.result_type(x) == jnp.result_type(y), (path, name)
    eps = float(jnp.finfo(jnp.result_type(y)).eps)
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(a, b, rtol=ulps * eps, atol=ulps * eps,
                               err_msg=f"path {path}, leaf {name}")


def _state_moved(path, state, initial):
  """Every non-empty float array of the state changed (the optimizers above all
  move every moment entry on a Gaussian gradient)."""
  for x, x0 in zip(jax.tree.leaves(state), jax.tree.leaves(initial)):
    if jnp.issubdtype(jnp.result_type(x), jnp.floating) and np.size(x):
      assert np.any(np.asarray(x, np.float64) != np.asarray(x0, np.float64)), path


def _check(tree, chain):
  (params, grad_dtypes), (name, tx) = tree, chain
  grads = [_grads(params, grad_dtypes, k) for k in range(STEPS)]
  want, state = _reference(tx, params, grads)
  _state_moved(f"{name}: reference", state, tx.init(params))
  for fused in (None, True, False):
    got, s = _apply_step(tx, params, grads, fused)
    _assert_close(f"{name}: apply_step(fused={fused})", got, want)
    _state_moved(f"{name}: apply_step(fused={fused})", s, tx.init(params))
  ptx = optix.packed(tx)
  for fused in (None, True, False):
    got, s = _apply_step(ptx, params, grads, fused)
    _assert_close(f"{name}: packed, apply_step(fused={fused})", got, want)
    _state_moved(f"{name}: packed, apply_step(fused={fused})", s, ptx.init(params))
  got, s = _reference(ptx, params, grads)
  _assert_close(f"{name}: packed, update", got, want)
  if any(jnp.result_type(params[k]) != grad_dtypes[k] for k in params):
    return  # the gradient of packed params has its buffer's dtype: nothing to compare
  for fused in (True, False):
    got, s = _packed_params(ptx, params, grads, fused)
    _assert_close(f"{name}: packed params, apply_step(fused={fused})", got, want)


@pytest.mark.parametrize("fused", [None, True, False])
def test_packed_gradient_of_another_dtype_is_the_reference_step(fused):
  """A bf16 gradient of a float32 param. The reference (``tx.update``) returns
  updates in the gradient's dtype, each link rounding to bf16; a packed buffer of
  the params' dtype would compute in float32 (1.4e-4 relative apart). The packed
  paths therefore run such a step on the unpacked state: bit for bit the
  reference, and the state stays packed."""
  params = {"p00": jnp.asarray(np.random.default_rng(0).standard_normal(()), jnp.float32),
            "p01": jnp.asarray(np.random.default_rng(1).standard_normal((3,)), jnp.float32)}
  grads = [_grads(params, {"p00": jnp.bfloat16, "p01": jnp.float32}, k) for k in range(STEPS)]
  tx = optix.adam(1e-2)
  want, want_state = _reference(tx, params, grads)
  ptx = optix.packed(tx)
  for got, state in (_apply_step(ptx, params, grads, fused), _reference(ptx, params, grads)):
    _assert_close("packed", got, want, ulps=0)
    assert isinstance(state.inner[0].mu, optix.Packed)
    np.testing.assert_array_equal(optix.unpack(state.inner[0].mu)["p01"], want_state[0].mu["p01"])


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=5, **_SETTINGS)
@given(trees(max_leaves=6), chains())
def test_every_path_computes_the_reference_step(tree, chain):
  _check(tree, chain)


@pytest.mark.slow
@settings(max_examples=200, **_SETTINGS)
@given(trees(max_leaves=60), chains())
def test_every_path_computes_the_reference_step_many_trees(tree, chain):
  _check(tree, chain)
