"""The reliability matrix: the cells test_contract/test_parity do not cover, over every
registry entry. conftest.py prints the whole (optimizer, cell) table at the end of the run.

Cells here: 8-device sharded (``optix.shard_state`` on an (8,) mesh, equal to unsharded) in fp32
and bf16; extra args accepted and ignored; ``optix.inject_hyperparams``; ``lax.scan``/``lax.cond``
state stability; an unsharded checkpoint restored onto a (2, 4) mesh via ``optix.state_shardings``;
NaN/Inf injection under ``optix.apply_if_finite``. The heaviest cells run for a light subset by
default and for every entry under ``make test-all`` (marker ``slow``).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import AxisType

import optix
from registry import BY_NAME, ENTRIES, params_for
from registry_family import hessian_of_squares

# Entries whose heavy cells also run in the default (not slow) run: one per family.
LIGHT = {"adamw", "lion", "sgd_momentum", "adafactor", "adam8bit", "muon", "apply_if_finite",
         "packed_adamw", "shard_state_adamw"}
# Entries that cannot be wrapped again by shard_state, with the reason.
NOT_SHARDABLE = {}
# Known failures of one cell (test function, entry), with the reason: the cell runs as a strict
# xfail, so the table shows it and a fix fails the run (XPASS strict) until its line is removed.
KNOWN_BUGS = {
}


@pytest.fixture(autouse=True)
def _known_bug(request):
  """Marks the cells listed in KNOWN_BUGS as strict xfails."""
  entry = getattr(request.node, "callspec", None) and request.node.callspec.params.get("entry")
  reason = KNOWN_BUGS.get((request.node.originalname, getattr(entry, "name", None)))
  if reason:
    request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


# Inverse matrix roots and eigenvectors amplify the reduction-order rounding of sharded sums.
ROOT_FAMILIES = ("shampoo", "soap")


def _entries(slow_unless_light: bool):
  return [pytest.param(e, id=e.name,
                       marks=[pytest.mark.slow] if slow_unless_light and e.name not in LIGHT else [])
          for e in ENTRIES]


ALL = _entries(False)
HEAVY = _entries(True)


def _mesh(shape=(8,), names=("data",)):
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def _grads(key, params, scale=1.0):
  return optix.testing.random_like(key, params, scale)


def _step_fn(tx, entry, **more):
  return jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args, **more))


def _run(step, state, params, keys, put=lambda g: g):
  for k in keys:
    updates, state = step(put(_grads(k, params)), state, params)
    params = optix.apply_updates(params, updates)
  return state, params


def _assert_bits(a, b, what):
  chex.assert_trees_all_equal_structs(a, b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=what)


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
  """Close elementwise: |a - b| <= atol + rtol |b| (atol: a few float32 ulps of O(1) params)."""
  chex.assert_trees_all_equal_structs(a, b)
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def _float_state_is_fp32(state):
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, f"state leaf in {leaf.dtype}"


# -- {fp32, bf16} x 8-device sharded ---------------------------------------------------------


def _sharded_vs_plain(entry, dtype):
  if entry.name in NOT_SHARDABLE:
    pytest.skip(NOT_SHARDABLE[entry.name])
  params = params_for(entry, dtype)
  keys = jax.random.split(jax.random.key(11), 3)
  plain = entry.make()
  sharded = optix.shard_state(entry.make(), _mesh())
  s_state, s_params = _run(_step_fn(sharded, entry), sharded.init(params), params, keys)
  p_state, p_params = _run(_step_fn(plain, entry), plain.init(params), params, keys)
  chex.assert_trees_all_equal_dtypes(s_params, params)
  # Same math, only the layout differs: XLA may reorder cross-device sums (global norms).
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  tol = 2e-3 if entry.name.startswith(ROOT_FAMILIES) else tol
  _assert_close(s_params, p_params, rtol=tol, atol=tol / 10)
  _assert_close(s_state, p_state, rtol=10 * tol, atol=tol)
  return s_state


@pytest.mark.parametrize("entry", HEAVY)
def test_sharded_matches_unsharded(entry):
  _sharded_vs_plain(entry, jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ALL)
def test_sharded_bf16(entry):
  if entry.params is not None:
    pytest.skip("the entry's own params are fixed fp32 (bf16 covered by its family)")
  _float_state_is_fp32(_sharded_vs_plain(entry, jnp.bfloat16))


# -- extra args, inject_hyperparams, scan/cond ----------------------------------------------


@pytest.mark.parametrize("entry", HEAVY)
def test_extra_args_accepted(entry):
  """An unknown keyword extra arg (a loss value, another transform's statistics) is accepted and
  changes nothing, bit for bit."""
  tx = entry.make()
  params = params_for(entry)
  grads = _grads(jax.random.key(12), params)

  @jax.jit
  def both(g, s, p):
    plain = tx.update(g, s, p, **entry.extra_args)
    extra = tx.update(g, s, p, **entry.extra_args, loss=jnp.float32(1.5),
                      unrelated_stats={"x": jnp.ones(3)})
    return plain, extra

  plain, extra = both(grads, tx.init(params), params)
  _assert_bits(extra, plain, "extra args changed the update")


def _adam():
  return optix.inject_hyperparams(optix.adam)(1e-2)


_INJ = optix.inject_hyperparams
# entry name -> the same optimizer built through optix.inject_hyperparams (learning rate injected).
INJECT = {
    "sgd": lambda: _INJ(optix.sgd)(0.05),
    "sgd_momentum": lambda: _INJ(optix.sgd)(0.05, momentum=0.9),
    "sgd_nesterov": lambda: _INJ(optix.sgd)(0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: _INJ(optix.adagrad)(0.1),
    "rmsprop": lambda: _INJ(optix.rmsprop)(0.01),
    "rmsprop_centered_momentum":
        lambda: _INJ(optix.rmsprop)(0.01, centered=True, momentum=0.9, nesterov=True),
    "adam": lambda: _INJ(optix.adam)(1e-2),
    "adam_eps_root": lambda: _INJ(optix.adam)(1e-2, eps_root=1e-8),
    "adamw": lambda: _INJ(optix.adamw)(1e-2, weight_decay=0.1),
    "adamw_masked": lambda: _INJ(optix.adamw)(1e-2, weight_decay=0.1, mask=optix.matrices_only),
    "nadam": lambda: _INJ(optix.nadam)(1e-2),
    "nadamw": lambda: _INJ(optix.nadamw)(1e-2, weight_decay=0.1),
    "lion": lambda: _INJ(optix.lion)(1e-3, weight_decay=0.1),
    "adamw_scheduled": lambda: _INJ(optix.adamw)(
        optix.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 30), weight_decay=0.1),
    "kfac": lambda: _INJ(optix.kfac)(0.1, damping=1e-2, inverse_update_period=2, momentum=0.9),
    "shampoo": lambda: _INJ(optix.shampoo)(1e-2, preconditioning_interval=3,
                                           start_preconditioning_step=2, block_size=4,
                                           weight_decay=0.01),
    "shampoo_graft_phase_is_adam": lambda: _INJ(optix.shampoo)(
        1e-2, start_preconditioning_step=10 ** 6),
    # b2 == 1 selects a running sum in Python (kronecker._stat_update): static, not injected.
    "soap": lambda: _INJ(optix.soap, static_args=("b2",))(3e-3, preconditioning_interval=3, block_size=4,
                                     precondition_1d=True, weight_decay=0.01),
    "soap_all_diagonal_is_adam": lambda: _INJ(optix.soap, static_args=("b2",))(1e-2, b1=0.9, b2=0.999,
                                                          max_preconditioner_dim=0),
    "psgd_kron": lambda: _INJ(optix.psgd_kron)(1e-2, weight_decay=0.01),
    "adafactor": lambda: _INJ(optix.adafactor)(1e-2, min_dim_size_to_factor=4),
    "adam8bit": lambda: _INJ(optix.adam8bit)(1e-2),
    "adamw8bit_small_blocks": lambda: _INJ(optix.adamw8bit)(1e-2, weight_decay=0.1,
                                                            block_size=32, min_8bit_size=2),
    "muon": lambda: _INJ(optix.muon)(0.02, adam_learning_rate=1e-3, weight_decay=0.1),
    # Wrappers around an injected optimizer.
    "apply_if_finite": lambda: optix.apply_if_finite(_adam(), 3),
    "zero_nans": lambda: optix.chain(optix.zero_nans(), _adam()),
    "multi_steps": lambda: optix.multi_steps(_adam(), 3),
    "shard_state_adamw": lambda: optix.shard_state(
        _INJ(optix.adamw)(1e-2, weight_decay=0.1), _mesh()),
    "monitor_adamw": lambda: optix.monitor(_INJ(optix.adamw)(1e-2, weight_decay=0.1)),
    "master_weights_adamw": lambda: optix.with_master_weights(
        _INJ(optix.adamw)(1e-2, weight_decay=0.1)),
    "schedule_free_sgd": lambda: _INJ(optix.schedule_free_sgd)(0.1, warmup_steps=3),
    "schedule_free_adamw": lambda: _INJ(optix.schedule_free_adamw)(1e-2, weight_decay=0.1),
    "ademamix": lambda: _INJ(optix.ademamix)(1e-2, b3=0.999, weight_decay=0.1),
    # clip_value_fn is callable: named static, or inject_hyperparams takes it for a schedule.
    "adopt": lambda: _INJ(optix.adopt, static_args=("clip_value_fn",))(1e-2),
    "adopt_nesterov": lambda: _INJ(optix.adopt)(1e-2, nesterov=True, use_clipping=False),
    "mars_adamw": lambda: _INJ(optix.mars_adamw)(1e-3, weight_decay=0.1),
    "cautious_adamw": lambda: _INJ(optix.cautious_adamw)(1e-2, weight_decay=0.1),
    "cautious_wrapper": lambda: optix.cautious(_INJ(optix.sgd)(1e-2, momentum=0.9)),
    "lamb": lambda: _INJ(optix.lamb)(1e-2, weight_decay=0.1),
    "lars": lambda: _INJ(optix.lars)(1e-1, weight_decay=1e-2),
    "prodigy": lambda: _INJ(optix.prodigy)(),
    "radam": lambda: _INJ(optix.radam)(1e-2),
    "adabelief": lambda: _INJ(optix.adabelief)(1e-2),
    "yogi": lambda: _INJ(optix.yogi)(1e-2),
    "amsgrad": lambda: _INJ(optix.amsgrad)(1e-2),
    "adamaxw": lambda: _INJ(optix.adamaxw)(1e-2),
    "signum": lambda: _INJ(optix.signum)(1e-2),
    "adan": lambda: _INJ(optix.adan)(1e-2),
    "cocob": lambda: _INJ(optix.cocob)(),
    "acprop": lambda: _INJ(optix.acprop)(1e-2, weight_decay=0.01),
    "adadelta": lambda: _INJ(optix.adadelta)(1.0),
    "adamax": lambda: _INJ(optix.adamax)(1e-2),
    "fromage": lambda: _INJ(optix.fromage)(1e-2),
    # rank sets state shapes and the refresh gap a Python-side period: static.
    "galore": lambda: _INJ(optix.galore, static_args=("rank", "update_proj_gap"))(
        1e-2, rank=2, update_proj_gap=3),
    "madgrad": lambda: _INJ(optix.madgrad)(1e-2),
    "momo": lambda: _INJ(optix.momo)(1e-2),
    "momo_adam": lambda: _INJ(optix.momo_adam)(1e-2),
    "noisy_sgd": lambda: _INJ(optix.noisy_sgd, static_args=("seed",))(1e-2),
    "novograd": lambda: _INJ(optix.novograd)(1e-2, weight_decay=0.01),
    "optimistic_adam": lambda: _INJ(optix.optimistic_adam)(1e-2),
    "optimistic_adam_v2": lambda: _INJ(optix.optimistic_adam_v2)(1e-2),
    "optimistic_gradient_descent": lambda: _INJ(optix.optimistic_gradient_descent)(1e-2),
    "polyak_sgd": lambda: _INJ(optix.polyak_sgd)(1.0),
    "reduce_on_plateau": lambda: optix.chain(_INJ(optix.sgd)(0.1), optix.reduce_on_plateau(
        patience=2, accumulation_size=2)),
    "rprop": lambda: _INJ(optix.rprop)(1e-2),
    "sam": lambda: optix.sam(_INJ(optix.sgd)(0.1), optix.chain(optix.normalize(),
                                                              optix.sgd(0.05))),
    "sign_sgd": lambda: _INJ(optix.sign_sgd)(1e-2),
    "simplified_ademamix": lambda: _INJ(optix.simplified_ademamix)(1e-3),
    "sm3": lambda: _INJ(optix.sm3)(1e-1),
    "sophia": lambda: _INJ(optix.sophia)(1e-2, update_interval=2,
                                         hessian_diagonal_fn=hessian_of_squares()),
    "split_real_and_imaginary": lambda: optix.split_real_and_imaginary(_adam()),
    "dadapt_adamw": lambda: _INJ(optix.dadapt_adamw)(),
    "dog": lambda: _INJ(optix.dog)(),
    "dowg": lambda: _INJ(optix.dowg)(),
    "mechanize": lambda: optix.mechanize(_adam()),
    "cautious_lion": lambda: _INJ(optix.cautious_lion)(1e-3, weight_decay=0.1),
    # The packed layout around an injected optimizer: hyperparameters are scalars, kept as is.
    "packed_adamw": lambda: optix.packed(_INJ(optix.adamw)(1e-2, weight_decay=0.1)),
    "packed_lion": lambda: optix.packed(_INJ(optix.lion)(1e-3, weight_decay=0.1)),
    "packed_sgd_momentum": lambda: optix.packed(_INJ(optix.sgd)(0.05, momentum=0.9)),
    "packed_clip_adam": lambda: optix.packed(
        optix.chain(optix.clip_by_global_norm(1.0), _INJ(optix.adam)(1e-2))),
    "packed_rmsprop_mixed_sizes": lambda: optix.packed(_INJ(optix.rmsprop)(0.01, momentum=0.9),
                                                       max_leaf_size=20),
}
# Zeroing the injected learning rate does not stop these, by design.
LR_READ_ELSEWHERE = {"rmsprop_centered_momentum",  # momentum after the learning rate (optax order)
                     "packed_rmsprop_mixed_sizes",  # the same: rmsprop's momentum comes last
                     "adamw_scheduled",  # a scheduled rate is recomputed from the step
                     "lars",  # momentum after the learning rate (optax order)
                     # y moves toward the running average x at any rate
                     "schedule_free_sgd", "schedule_free_adamw",
                     "madgrad",  # dual averaging: x moves toward z (= x0 at a zero rate)
                     "rprop",  # the rate only seeds the per-coordinate step sizes kept in state
                     "dadapt_adamw"}  # momentum after the rate (m sums rate-scaled gradients)
NO_INJECT = {
    "lbfgs": "no learning_rate: the step comes from the line search",
    "lbfgs_backtracking": "no learning_rate: the step comes from the line search",
    "adafactor_relative_step": "no learning_rate: relative step size",
    "scale_by_muon_matrices": "a bare transform chain, no factory with learning_rate",
    "clip": "sgd after a clip: sgd's inject cell covers it",
    "clip_by_global_norm": "sgd after a clip: sgd's inject cell covers it",
    "adaptive_grad_clip": "sgd after a clip: sgd's inject cell covers it",
    "normalize_sgd": "sgd after normalize: sgd's inject cell covers it",
    "sophia_hutchinson": "variant of sophia: sophia's inject cell covers it",
}


def _inject_skip_reason(name):
  if name in NO_INJECT:
    return NO_INJECT[name]
  for prefix, why in (("packed_", "variant of packed_adamw: packed_adamw's inject cell covers it"),
                      ("shampoo_", "variant of shampoo: shampoo's inject cell covers it"),
                      ("soap_", "variant of soap: soap's inject cell covers it"),
                      ("psgd_kron_", "variant of psgd_kron: psgd_kron's inject cell covers it"),
                      ("adafactor_", "variant of adafactor: adafactor's inject cell covers it"),
                      ("muon_", "variant of muon: muon's inject cell covers it"),
                      ("spike_guard", "wrapper around adam: apply_if_finite's cell covers it"),
                      ("dynamic_loss", "wrapper around adam: apply_if_finite's cell covers it"),
                      ("shard_state_", "shard_state_adamw's inject cell covers it"),
                      ("monitor_", "monitor_adamw's inject cell covers it")):
    if name.startswith(prefix):
      return why
  return None


def _injected_state(state, replace_with=None):
  """The InjectHyperparamsState at the top of ``state`` or under a wrapper's ``inner`` field
  (packed); with ``replace_with``, ``state`` with that one swapped in."""
  if hasattr(state, "hyperparams"):
    return state if replace_with is None else replace_with
  if hasattr(state, "inner"):
    inner = _injected_state(state.inner, replace_with)
    return inner if replace_with is None or inner is None else state._replace(inner=inner)
  return None


@pytest.mark.parametrize("entry", HEAVY)
def test_inject_hyperparams(entry):
  if entry.name not in INJECT:
    pytest.skip(_inject_skip_reason(entry.name) or "no inject_hyperparams mapping")
  keys = jax.random.split(jax.random.key(13), 3)
  params = params_for(entry)
  tx, ref = INJECT[entry.name](), entry.make()
  state, p = _run(_step_fn(tx, entry), tx.init(params), params, keys)
  _, p_ref = _run(_step_fn(ref, entry), ref.init(params), params, keys)
  _assert_close(p, p_ref, rtol=1e-5, atol=2e-6)
  # bf16 params keep float32 statistics and float32 injected hyperparameters.
  if entry.params is None:
    bf = params_for(entry, jnp.bfloat16)
    b_state, b_p = _run(_step_fn(tx, entry), tx.init(bf), bf, keys[:1])
    chex.assert_trees_all_equal_dtypes(b_p, bf)
    _float_state_is_fp32(b_state)
  # The learning rates really are read from the state: zero them and the params stand still.
  injected = _injected_state(state)
  if (injected is not None and "learning_rate" in injected.hyperparams
      and entry.name not in LR_READ_ELSEWHERE):
    hp = {k: jnp.zeros_like(v) if k.endswith("learning_rate") else v
          for k, v in injected.hyperparams.items()}
    updates, _ = _step_fn(tx, entry)(_grads(keys[0], p),
                                     _injected_state(state, injected._replace(hyperparams=hp)), p)
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(np.asarray(u, np.float32), 0.0)


@pytest.mark.parametrize("entry", HEAVY)
def test_scan_cond_state_stable(entry):
  """Several updates under lax.scan (the carry's types must not drift: weak types, dtypes,
  shapes) equal the same updates taken one jit call at a time; under lax.cond the skipped branch
  leaves the state bit-identical."""
  tx = entry.make()
  params = params_for(entry)
  keys = jax.random.split(jax.random.key(14), 3)
  grads = [_grads(k, params) for k in keys]
  stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)

  def body(carry, g):
    s, p = carry
    u, s = tx.update(g, s, p, **entry.extra_args)
    return (s, optix.apply_updates(p, u)), None

  state0 = tx.init(params)
  (s_scan, p_scan), _ = jax.jit(lambda c, g: jax.lax.scan(body, c, g))((state0, params), stacked)
  s_loop, p_loop = _run(_step_fn(tx, entry), state0, params, keys)
  _assert_close(p_scan, p_loop, rtol=1e-5, atol=2e-6)
  chex.assert_trees_all_equal_shapes_and_dtypes(s_scan, s_loop)

  @jax.jit
  def maybe(pred, g, s, p):
    return jax.lax.cond(pred, lambda: tx.update(g, s, p, **entry.extra_args),
                        lambda: (jax.tree.map(jnp.zeros_like, g), s))

  _, skipped = maybe(False, grads[0], s_loop, p_loop)
  _assert_bits(skipped, s_loop, "the false branch of lax.cond changed the state")
  _, taken = maybe(True, grads[0], s_loop, p_loop)
  chex.assert_trees_all_equal_shapes_and_dtypes(taken, s_loop)


# -- checkpoint restored onto a different mesh ----------------------------------------------


def _zero1_specs(state, n):
  """The PartitionSpec of each state leaf when ZeRO-1 splits it over an axis of size n on an Auto
  mesh with replicated params: the axis on the leaf's first dimension n divides, else replicated."""
  specs = []
  for leaf in jax.tree.leaves(state):
    dims = [i for i, d in enumerate(jnp.shape(leaf)) if d % n == 0]
    spec = [None] * jnp.ndim(leaf)
    if dims:
      spec[dims[0]] = "data"
    specs.append(jax.sharding.PartitionSpec(*spec))
  return specs


@pytest.mark.parametrize("entry", HEAVY)
def test_restore_onto_other_mesh(entry, tmp_path):
  """Saved from an unsharded run, restored straight into the ZeRO-1 layout of a (2, 4) mesh
  (optix.state_shardings as the restore target), continued under shard_state: same trajectory."""
  if entry.name in NOT_SHARDABLE:
    pytest.skip(NOT_SHARDABLE[entry.name])
  params = params_for(entry)
  keys = jax.random.split(jax.random.key(15), 4)
  plain = entry.make()
  state, p = _run(_step_fn(plain, entry), plain.init(params), params, keys[:2])
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", {"state": state, "params": p})
    ckpt.wait_until_finished()
    mesh = _mesh((2, 4), ("data", "model"))
    sharded = optix.shard_state(entry.make(), mesh, axis="data")
    shardings = optix.state_shardings(sharded, p, mesh, axis="data")
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    target = {"state": jax.tree.map(
                  lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings),
              "params": jax.tree.map(
                  lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), p)}
    restored = ckpt.restore(tmp_path / "ckpt", target)
  # The ZeRO-1 layout derived here from the shapes, not read back from state_shardings.
  expected = _zero1_specs(restored["state"], mesh.shape["data"])
  for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(restored["state"]), expected):
    want = jax.sharding.NamedSharding(mesh, spec)
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (jax.tree_util.keystr(path),
                                                             leaf.sharding, want)
  _assert_bits(restored["state"], state, "restored state differs from the saved one")
  expected = _run(_step_fn(plain, entry), state, p, keys[2:])
  resumed = _run(_step_fn(sharded, entry), restored["state"], restored["params"], keys[2:],
                 put=lambda g: jax.device_put(g, replicated))
  tol = 2e-3 if entry.name.startswith(ROOT_FAMILIES) else 1e-5
  _assert_close(resumed[1], expected[1], rtol=tol, atol=tol / 10)


# -- NaN / Inf under the guard --------------------------------------------------------------


def _poison(grads, value):
  leaves, treedef = jax.tree.flatten(grads)
  first = leaves[0]
  leaves[0] = first.reshape(-1).at[0].set(value).reshape(first.shape)
  return jax.tree.unflatten(treedef, leaves)


@pytest.mark.parametrize("entry", HEAVY)
def test_nan_inf_guarded(entry):
  """Under optix.apply_if_finite a NaN or an Inf in one gradient element leaves the params and
  every inner state leaf bit-identical and advances the skip counters; the next finite step
  trains again."""
  tx = optix.apply_if_finite(entry.make(), max_consecutive_errors=3)
  params = params_for(entry)
  step = _step_fn(tx, entry)
  keys = jax.random.split(jax.random.key(16), 5)
  state, p = _run(step, tx.init(params), params, keys[:2])
  for i, bad in enumerate((jnp.nan, jnp.inf, -jnp.inf)):
    updates, new_state = step(_poison(_grads(keys[2], p), bad), state, p)
    new_p = optix.apply_updates(p, updates)
    _assert_bits(new_p, p, f"params moved on a {bad} step")
    _assert_bits(new_state.inner_state, state.inner_state, f"inner state moved on a {bad} step")
    assert int(new_state.total_notfinite) == int(state.total_notfinite) + 1
    assert int(new_state.notfinite_count) == i + 1 and not bool(new_state.last_finite)
    state = new_state
  updates, state = step(_grads(keys[4], p), state, p)
  chex.assert_tree_all_finite(updates)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3


def test_every_entry_is_in_the_matrix():
  """A new registry entry gets every cell: the inject table must say what to do with it."""
  missing = [e.name for e in ENTRIES
             if e.name not in INJECT and _inject_skip_reason(e.name) is None]
  assert not missing, f"add these entries to INJECT or NO_INJECT in test_matrix.py: {missing}"
  assert set(LIGHT) <= set(BY_NAME)


# -- load budgets, by counting (benchmarks/load.py has the compile seconds and GiB) ---------


def _many_leaves(n):
  shapes = [(), (8,), (64,), (16, 16), (3, 3, 4, 8), (256,)]
  return {f"l{i:05d}": jax.ShapeDtypeStruct(shapes[i % len(shapes)], jnp.float32)
          for i in range(n)}


def _compiled_step(tx, abstract):
  state = jax.eval_shape(tx.init, abstract)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optix.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1)).lower(abstract, state, abstract).compile()


def _fusions(compiled):
  import re  # noqa: PLC0415
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = \S+ fusion\(", compiled.as_text(), flags=re.M))


@pytest.mark.parametrize("leaves", [pytest.param(300, id="300"),
                                    pytest.param(2000, id="2000", marks=pytest.mark.slow)])
def test_load_budget_many_leaves(leaves):
  """On a tree of many small leaves optix's step compiles to no more kernels than optax's, and
  the packed engine to about one kernel per leaf (its split of the flat update) instead of ~3."""
  import optax  # noqa: PLC0415
  abstract = _many_leaves(leaves)
  plain = _fusions(_compiled_step(optix.adamw(1e-3, weight_decay=0.1), abstract))
  ref = _fusions(_compiled_step(optax.adamw(1e-3, weight_decay=0.1), abstract))
  packed = _fusions(_compiled_step(optix.packed(optix.adamw(1e-3, weight_decay=0.1)), abstract))
  assert plain <= ref, (plain, ref)
  assert packed <= 1.1 * leaves + 32, (packed, leaves)
  assert packed < plain / 2, (packed, plain)


def test_load_budget_big_tree_memory():
  """A transformer-shaped tree (2 blocks, 21M params): optix's adamw step has optax's kernel
  count and no more live memory (arguments + outputs + temporaries, from memory_analysis)."""
  import optax  # noqa: PLC0415
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  tree = {"embed": f32(4000, 1024)}
  for b in range(2):
    tree[f"b{b}"] = {"qkv": f32(1024, 2048), "out": f32(2048, 1024), "norm": f32(1024)}
  ours = _compiled_step(optix.adamw(1e-3, weight_decay=0.1), tree)
  theirs = _compiled_step(optax.adamw(1e-3, weight_decay=0.1), tree)

  def live(c):
    m = c.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes)

  assert _fusions(ours) <= _fusions(theirs)
  assert live(ours) <= 1.01 * live(theirs), (live(ours), live(theirs))
  n = sum(x.size for x in jax.tree.leaves(tree))
  # params + grads + mu + nu, float32, and nothing like a second copy of them.
  assert live(ours) <= 4 * 4 * n * 1.25, (live(ours), n)
