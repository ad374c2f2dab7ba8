"""Every execution path of a step computes the reference step.

The reference is ``tx.update`` followed by ``optax.apply_updates`` under ``jax.jit``
(what ``flax.nnx.Optimizer`` runs). The other paths -- ``optix.apply_step`` with
the one-pass kernel on, off or chosen automatically, ``optix.packed(tx)`` through
``update`` and through ``apply_step``, params kept packed with ``optix.pack``,
state sharded over the 8 simulated devices (``optix.shard_state``, of the
chain and of its packed form), the step inside ``jax.shard_map`` (data parallel,
with the kernel on, off or chosen), ``flax.nnx.Optimizer`` (params and state),
and the chain inside ``optax.inject_hyperparams``,
``optax.MultiSteps`` and ``optax.apply_if_finite`` -- must give the same params
on random trees (0-d, zero-size and odd-sized leaves, float32/bf16/fp16 and
complex64 params, gradients of another dtype than their params) and random
chains (aliases and user-built chains of the shape ``optix.fused`` recognizes),
to a few ulps of each leaf's dtype (the kernel reproduces the chain's arithmetic
but XLA may rewrite a scalar factor differently in a bigger graph; a global norm
sums its squares in another order when packed or sharded; an injected learning
rate is a float32 array where the chain multiplies by a Python float).
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
    "adamw_decay_scheduled": lambda lr: optix.adamw(
        lr, weight_decay=optix.linear_schedule(0.2, 0.0, 3)),
    # user-built chains of the fusable shape
    "chain_adam_decay": lambda lr: optix.chain(
        optix.scale_by_adam(b1=0.8), optix.add_decayed_weights(0.05),
        optix.scale_by_learning_rate(lr)),
    "chain_lion": lambda lr: optix.chain(optix.scale_by_lion(), optix.scale_by_learning_rate(lr)),
    "chain_nesterov": lambda lr: optix.chain(optix.trace(0.8, nesterov=True),
                                             optix.scale_by_learning_rate(lr)),
}
PREFIXES = {
    "clip_by_global_norm": lambda: optix.clip_by_global_norm(1.0),
    "clip": lambda: optix.clip(0.5),
    "l2": lambda: optix.add_decayed_weights(0.01),
}
# cores whose transforms take complex params
COMPLEX_CORES = ["adam", "adamw", "chain_adam_decay", "chain_nesterov", "rmsprop", "sgd_momentum"]
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


def _chain(prefix, core, lr):
  """(description, tx, factory): ``factory(learning_rate)`` builds ``tx`` (for
  ``optax.inject_hyperparams``)."""
  rate = 1e-2 if lr == "constant" else optix.linear_schedule(1e-2, 1e-3, 4)

  def factory(learning_rate):
    links = [PREFIXES[p]() for p in prefix] + [CORES[core](learning_rate)]
    return optix.chain(*links) if prefix else links[0]

  return f"{'+'.join(list(prefix) + [core])}/{lr}", factory(rate), (factory, rate)


@st.composite
def chains(draw):
  """A prefix of clipping and decay links, then an optimizer (an alias or a
  user-built chain) with a constant or scheduled learning rate."""
  prefix = draw(st.lists(st.sampled_from(sorted(PREFIXES)), max_size=2, unique=True))
  return _chain(prefix, draw(st.sampled_from(sorted(CORES))),
                draw(st.sampled_from(["constant", "schedule"])))


def _grads(params, grad_dtypes, k):
  def one(name, p):
    rng = np.random.default_rng(100 + k)
    g = rng.standard_normal(jnp.shape(p))
    if jnp.issubdtype(grad_dtypes[name], jnp.complexfloating):
      g = g + 1j * rng.standard_normal(jnp.shape(p))
    return jnp.asarray(g, grad_dtypes[name])
  return {name: one(name, p) for name, p in params.items()}


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


def _packed(name, tx):
  """``optix.packed(tx)``; a masked decay packs its masked and unmasked leaves apart
  (``groups=`` the same mask), as ``optix.packed_mask`` requires."""
  return optix.packed(tx, groups=optix.matrices_only if name.startswith("adamw_masked")
                      else None)


def _assert_close(path, got, want, ulps=8, narrow=None, start=None):
  """Each leaf within ``ulps`` of its dtype. ``narrow``: leaves whose gradient is
  of a narrower dtype than the param; their updates are in the gradient's dtype,
  whose intermediate values XLA may keep in float32 (its excess precision) in one
  compiled graph and round in another, so they agree to ``ulps`` of the
  gradient's dtype, relative to how far the param moved from ``start``."""
  for name in want:
    x, y = got[name], want[name]
    assert jnp.result_type(x) == jnp.result_type(y), (path, name)
    if not jnp.issubdtype(jnp.result_type(y), jnp.inexact):
      np.testing.assert_array_equal(x, y, err_msg=f"path {path}, leaf {name}")
      continue
    eps = float(jnp.finfo(jnp.result_type(y)).eps)
    wide = np.complex128 if jnp.issubdtype(jnp.result_type(y), jnp.complexfloating) else np.float64
    a, b = np.asarray(x, wide), np.asarray(y, wide)
    atol = ulps * eps
    if narrow and name in narrow:
      moved = np.max(np.abs(b - np.asarray(start[name], wide)), initial=0.0)
      atol = max(atol, ulps * float(jnp.finfo(narrow[name]).eps) * moved)
    np.testing.assert_allclose(a, b, rtol=ulps * eps, atol=atol,
                               err_msg=f"path {path}, leaf {name}")


def _narrow(params, grad_dtypes):
  """The leaves whose gradient dtype is narrower than their param's."""
  return {k: g for k, g in grad_dtypes.items()
          if jnp.finfo(g).bits < jnp.finfo(jnp.result_type(params[k])).bits}


def _state_moved(path, state, initial):
  """Every non-empty float array of the state changed (the optimizers above all
  move every moment entry on a Gaussian gradient)."""
  for x, x0 in zip(jax.tree.leaves(state), jax.tree.leaves(initial)):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact) and np.size(x):
      assert np.any(np.asarray(x, np.complex128) != np.asarray(x0, np.complex128)), path


def _check(tree, chain):
  (params, grad_dtypes), (name, tx, _) = tree, chain
  grads = [_grads(params, grad_dtypes, k) for k in range(STEPS)]
  close = dict(narrow=_narrow(params, grad_dtypes), start=params)
  want, state = _reference(tx, params, grads)
  _state_moved(f"{name}: reference", state, tx.init(params))
  for fused in (None, True, False):
    got, s = _apply_step(tx, params, grads, fused)
    _assert_close(f"{name}: apply_step(fused={fused})", got, want, **close)
    _state_moved(f"{name}: apply_step(fused={fused})", s, tx.init(params))
  ptx = _packed(name, tx)
  for fused in (None, True, False):
    got, s = _apply_step(ptx, params, grads, fused)
    _assert_close(f"{name}: packed, apply_step(fused={fused})", got, want, **close)
    _state_moved(f"{name}: packed, apply_step(fused={fused})", s, ptx.init(params))
  got, s = _reference(ptx, params, grads)
  _assert_close(f"{name}: packed, update", got, want, **close)
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


def _mesh():
  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def _nnx(tx, params, grads):
  """``flax.nnx.Optimizer`` on a module holding the params: (params, state)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  class Holder(nnx.Module):
    def __init__(self, tree):
      self.p = nnx.data({k: nnx.Param(v) for k, v in tree.items()})

  model = Holder(params)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  step = nnx.jit(lambda model, opt, g: opt.update(model, g))
  for g in grads:
    step(model, opt, nnx.state(Holder(g), nnx.Param))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))["p"], optix._tree.plain_state(opt)


def _assert_state_close(path, got, want, ulps=8):
  """The same arrays in the same order (an ``nnx.Optimizer`` nests them under the
  module's attributes), each within ``ulps`` of its dtype (counters exact)."""
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got_leaves) == len(want_leaves), (path, jax.tree.structure(got),
                                               jax.tree.structure(want))
  _assert_close(path, dict(enumerate(got_leaves)), dict(enumerate(want_leaves)), ulps)


def _shard_map_step(tx, params, grads, fused):
  """Data parallel: params and state replicated, each device's gradient averaged
  over the mesh, then ``apply_step`` inside ``jax.shard_map``."""
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel

  def local(p, s, g):
    return optix.apply_step(tx, jax.lax.pmean(g, "data"), s, p, fused=fused)

  step = jax.jit(jax.shard_map(local, mesh=_mesh(), in_specs=(P(), P(), P()),
                               out_specs=(P(), P()), check_vma=False))
  state = tx.init(params)
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def _check_wrapped(tree, chain):
  """The sharded, NNX and optax-wrapper paths against the reference."""
  (params, grad_dtypes), (name, tx, (factory, rate)) = tree, chain
  grads = [_grads(params, grad_dtypes, k) for k in range(STEPS)]
  want, want_state = _reference(tx, params, grads)
  close = dict(narrow=_narrow(params, grad_dtypes), start=params)
  sharded = optix.shard_state(tx, _mesh())
  sharded_packed = optix.shard_state(_packed(name, tx), _mesh())
  for path, run in (("update", lambda: _reference(sharded, params, grads)),
                    ("apply_step", lambda: _apply_step(sharded, params, grads, None)),
                    ("packed, update", lambda: _reference(sharded_packed, params, grads)),
                    ("packed, apply_step",
                     lambda: _apply_step(sharded_packed, params, grads, None))):
    got, s = run()
    _assert_close(f"{name}: shard_state, {path}", got, want, **close)
    _state_moved(f"{name}: shard_state, {path}", s,
                 (sharded_packed if path.startswith("packed") else tx).init(params))
  for fused in (None, True, False):
    got, s = _shard_map_step(tx, params, grads, fused)
    _assert_close(f"{name}: shard_map, apply_step(fused={fused})", got, want, **close)
    if not close["narrow"]:
      _assert_state_close(f"{name}: shard_map state, apply_step(fused={fused})", s, want_state)
  got, s = _nnx(tx, params, grads)
  _assert_close(f"{name}: nnx.Optimizer", got, want, **close)
  if not close["narrow"]:
    _assert_state_close(f"{name}: nnx.Optimizer state", s, want_state)
  wrapped = {
      # an injected rate is a float32 array where the chain multiplies by a Python float
      "inject_hyperparams": optax.inject_hyperparams(
          factory, hyperparam_dtype=jnp.float32)(learning_rate=rate),
      "MultiSteps(1)": optax.MultiSteps(tx, every_k_schedule=1).gradient_transformation(),
      "apply_if_finite": optax.apply_if_finite(tx, max_consecutive_errors=2),
  }
  for label, wtx in wrapped.items():
    got, s = _apply_step(wtx, params, grads, None)
    _assert_close(f"{name}: {label}", got, want,
                  ulps=8 if label != "inject_hyperparams" else 16, **close)
    inner = getattr(s, "inner_opt_state", getattr(s, "inner_state", None))
    _state_moved(f"{name}: {label}", inner, jax.tree.map(jnp.zeros_like, inner))


@pytest.mark.parametrize("core", [c if c in ("adamw", "chain_nesterov", "rmsprop")
                                  else pytest.param(c, marks=pytest.mark.slow)
                                  for c in COMPLEX_CORES])
def test_complex_params_take_every_path(core):
  """complex64 params and gradients (the kernel takes float32 only: its leaves
  take the chain's path inside the one-pass step) next to a float32 leaf."""
  params = {"z": jnp.asarray(np.arange(6.0) - 2.5 + 1j * np.linspace(1, -1, 6), jnp.complex64),
            "w": jnp.linspace(-1.0, 1.0, 5)}
  dtypes = {"z": jnp.complex64, "w": jnp.float32}
  _check((params, dtypes), _chain((), core, "constant"))


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


@settings(max_examples=3, **_SETTINGS)
@given(trees(max_leaves=4), chains())
def test_sharded_nnx_and_wrapped_paths_compute_the_reference_step(tree, chain):
  _check_wrapped(tree, chain)


@pytest.mark.slow
@settings(max_examples=60, **_SETTINGS)
@given(trees(max_leaves=40), chains())
def test_sharded_nnx_and_wrapped_paths_compute_the_reference_step_many_trees(tree, chain):
  _check_wrapped(tree, chain)
