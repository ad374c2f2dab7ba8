"""optix.transforms.safety field by field: all_finite and select_tree, apply_if_finite's
counters and its give-up boundary, spike_guard's running average and spike decision by hand in
both modes (at the warmup boundary, at a norm exactly at the limit, for norms below 1, inside
``shard_map``), zero_nans' per-leaf flags and step count, z_loss's reduced axis, and the
messages of bad arguments. tests/test_safety.py runs every registry optimizer under the guard.

No test module here computes at import, so mutmut's fork server can collect it before XLA
starts (``make mutate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import optix


def _jit_shard_map(f, **kw):
  """``jax.shard_map`` under ``jax.jit``: one compile (eager shard_map runs op by op)."""
  return jax.jit(jax.shard_map(f, **kw))


# -- all_finite, select_tree --------------------------------------------------------------------


def test_all_finite():
  assert bool(optix.all_finite({})) is True
  assert bool(optix.all_finite({"a": jnp.ones(2), "b": jnp.zeros(3)})) is True
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    tree = {"a": jnp.ones(2), "b": jnp.asarray([0.0, bad, 1.0])}
    assert bool(optix.all_finite(tree)) is False
  assert optix.all_finite({"a": jnp.ones(2)}).shape == ()


def test_select_tree_picks_whole_trees_exactly():
  a = {"x": jnp.asarray([1.0, 2.0]), "y": jnp.asarray(3, jnp.int32)}
  b = {"x": jnp.asarray([-1.0, jnp.nan]), "y": jnp.asarray(7, jnp.int32)}
  on = optix.select_tree(jnp.asarray(True), a, b)
  off = optix.select_tree(jnp.asarray(False), a, b)
  np.testing.assert_array_equal(np.asarray(on["x"]), [1.0, 2.0])
  assert int(on["y"]) == 3 and int(off["y"]) == 7
  np.testing.assert_array_equal(np.asarray(off["x"]), [-1.0, np.nan])


# -- apply_if_finite ----------------------------------------------------------------------------


def test_apply_if_finite_initial_state():
  inner = optix.sgd(0.1, momentum=0.5)
  params = {"w": jnp.ones(2)}
  state = optix.apply_if_finite(inner, 3).init(params)
  assert state.notfinite_count.dtype == jnp.int32 and int(state.notfinite_count) == 0
  assert state.last_finite.dtype == jnp.bool_ and bool(state.last_finite) is True
  assert state.total_notfinite.dtype == jnp.int32 and int(state.total_notfinite) == 0
  jax.tree.map(np.testing.assert_array_equal, state.inner_state, inner.init(params))


@pytest.mark.parametrize("max_errors", [0, 1, 2])
def test_apply_if_finite_counters_and_give_up_boundary(max_errors):
  """Pattern finite, NaN × 3, finite: a non-finite step is skipped while the consecutive count
  is <= max_consecutive_errors and goes through after; a finite step resets the count."""
  params = {"w": jnp.ones(3)}
  tx = optix.apply_if_finite(optix.sgd(1.0), max_errors)
  state = tx.init(params)
  nan = {"w": jnp.asarray([1.0, jnp.nan, 2.0])}
  ok = {"w": jnp.asarray([1.0, -1.0, 2.0])}
  total = 0
  for step, grads in enumerate([ok, nan, nan, nan, ok]):
    updates, state = tx.update(grads, state, params)
    finite = grads is ok
    consecutive = 0 if finite else (step if step <= 3 else 0)
    total += not finite
    applied = finite or consecutive > max_errors
    if applied:
      np.testing.assert_array_equal(np.asarray(updates["w"]), -np.asarray(grads["w"]))
    else:
      np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0, 0.0])
    assert int(state.notfinite_count) == consecutive, step
    assert int(state.total_notfinite) == total, step
    assert bool(state.last_finite) == finite, step
    assert state.notfinite_count.dtype == jnp.int32


def test_apply_if_finite_checks_gradients_and_inner_updates_each():
  params = {"w": jnp.ones(2, jnp.float16)}
  # Finite gradients, non-finite updates (float16 overflow inside the inner transform).
  tx = optix.apply_if_finite(optix.scale(1e5), 3)
  updates, state = tx.update({"w": jnp.ones(2, jnp.float16)}, tx.init(params), params)
  np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0])
  assert int(state.total_notfinite) == 1 and not bool(state.last_finite)
  # Non-finite gradients, finite updates (the inner transform zeroes them).
  tx = optix.apply_if_finite(optix.zero_nans(), 3)
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.asarray([jnp.nan, 1.0], jnp.float16)}, state, params)
  np.testing.assert_array_equal(np.asarray(updates["w"]), [0.0, 0.0])
  assert int(state.total_notfinite) == 1
  # The skipped step leaves the inner state as it was.
  assert int(state.inner_state.nan_steps) == 0


def test_apply_if_finite_passes_extra_args_to_an_inner_transform_without_them():
  tx = optix.apply_if_finite(optax.scale(2.0), 1)
  g = {"w": jnp.ones(2)}
  updates, _ = tx.update(g, tx.init(g), g, value=jnp.float32(1.0))
  np.testing.assert_array_equal(np.asarray(updates["w"]), [2.0, 2.0])


def test_apply_if_finite_arguments():
  with pytest.raises(ValueError, match="^max_consecutive_errors must"):
    optix.apply_if_finite(optix.sgd(0.1), -1)
  optix.apply_if_finite(optix.sgd(0.1), 0)


# -- spike_guard --------------------------------------------------------------------------------


def _by_hand(norms, k, delta, warmup, mode):
  """(update norm, avg_norm, count, spike_count) after each step, in float64 from the
  definition: n̄ = a / (1 - δ^c) (a when c = 0); spike when c >= W and |g| > k n̄ (or |g| is
  not finite); skip drops a spike, clip rescales it to k n̄ and feeds min(|g|, k n̄)."""
  a, c, spikes, out = 0.0, 0, 0, []
  for n in norms:
    mean = a / (1.0 - delta ** c) if c > 0 else a
    limit = k * mean
    finite = np.isfinite(n)
    spike = (not finite) or (c >= warmup and n > limit)
    if mode == "clip":
      accept, fed = finite, min(n, limit if c >= warmup else n)
      moved = limit if (spike and finite) else n
    else:
      accept, fed, moved = not spike, n, n
    if accept:
      a, c = delta * a + (1 - delta) * fed, c + 1
    spikes += spike
    out.append((moved if accept else 0.0, a, c, spikes))
  return out


SPIKY = {"late": [1.0, 2.0, 1.5, 40.0, 1.0, 9.0, 2.0, 3.5],
         # spikes on the very step the guard starts acting (count == warmup_steps, 1 or 2)
         "at_warmup": [1.0, 9.0, 30.0, 1.5, 40.0, 1.0, 9.0, 2.0, 3.5]}


@pytest.mark.parametrize("pattern", sorted(SPIKY))
@pytest.mark.parametrize("mode", ["skip", "clip"])
@pytest.mark.parametrize("warmup, scale", [(1, 1.0), (2, 1.0), (2, 0.01)], ids=str)
def test_spike_guard_by_hand(mode, warmup, scale, pattern):
  k, delta = 3.0, 0.5
  norms = SPIKY[pattern]
  tx = optix.spike_guard(optix.sgd(1.0), threshold=k, decay=delta, warmup_steps=warmup,
                         mode=mode)
  params = {"w": jnp.zeros(2)}
  state, update = tx.init(params), jax.jit(tx.update)
  want = _by_hand([n * scale for n in norms], k, delta, warmup, mode)
  for n, (moved, a, c, spikes) in zip(norms, want):
    grads = {"w": jnp.asarray([0.6 * n * scale, 0.8 * n * scale], jnp.float32)}
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(float(optix.global_norm(updates)), moved, rtol=1e-5)
    np.testing.assert_allclose(float(state.avg_norm), a, rtol=1e-5)
    assert int(state.count) == c and int(state.spike_count) == spikes
    np.testing.assert_allclose(float(state.last_norm), n * scale, rtol=1e-6)
  assert want[-1][3] >= 2  # the pattern has spikes in it


def test_spike_guard_a_norm_exactly_at_the_limit_is_no_spike():
  # δ = 0.5, norms 1, 1: a = 0.75, debiased 1.0 exactly; limit 2.0 = the third norm.
  tx = optix.spike_guard(optix.sgd(1.0), threshold=2.0, decay=0.5, warmup_steps=2)
  state = tx.init(jnp.zeros(2))
  for g in ([1.0, 0.0], [0.0, 1.0], [2.0, 0.0]):
    updates, state = tx.update(jnp.asarray(g), state)
  assert int(state.spike_count) == 0 and int(state.count) == 3
  np.testing.assert_array_equal(np.asarray(updates), [-2.0, 0.0])


def test_spike_guard_initial_state_and_dtypes():
  inner = optix.sgd(0.1, momentum=0.5)
  state = optix.spike_guard(inner).init({"w": jnp.ones(2)})
  assert state.count.dtype == jnp.int32 and state.spike_count.dtype == jnp.int32
  assert state.avg_norm.dtype == jnp.float32 and state.last_norm.dtype == jnp.float32
  with jax.enable_x64(True):  # float32 whatever the default float
    wide = optix.spike_guard(inner).init({"w": jnp.ones(2)})
    assert wide.avg_norm.dtype == jnp.float32 and wide.last_norm.dtype == jnp.float32
  assert all(int(x) == 0 for x in (state.count, state.spike_count))
  assert all(float(x) == 0.0 for x in (state.avg_norm, state.last_norm))
  for mode in ("skip", "clip"):
    tx = optix.spike_guard(optix.sgd(1.0), threshold=2.0, warmup_steps=1, mode=mode)
    state = tx.init(jnp.zeros(2, jnp.bfloat16))
    _, state = tx.update(jnp.ones(2, jnp.bfloat16), state)
    updates, _ = tx.update(jnp.full(2, 100.0, jnp.bfloat16), state)
    assert updates.dtype == jnp.bfloat16, mode


def test_spike_guard_clip_rescales_in_the_gradients_dtype():
  """The rescale factor is rounded to the gradient's dtype (bfloat16 here) and multiplied
  there: the clipped gradient is g · bf16(k n̄ / ‖g‖)."""
  tx = optix.spike_guard(optix.sgd(1.0), threshold=2.0, warmup_steps=1, mode="clip")
  state = tx.init(jnp.zeros(3, jnp.bfloat16))
  _, state = tx.update(jnp.ones(3, jnp.bfloat16), state)
  g = jnp.asarray([65.0, 47.25, -35.25], jnp.bfloat16)  # where the two roundings differ
  updates, _ = tx.update(g, state)
  limit = 2.0 * (state.avg_norm / (1.0 - 0.99 ** state.count.astype(jnp.float32)))
  factor = limit / optix.global_norm(g)
  np.testing.assert_array_equal(np.asarray(-updates, np.float32),
                                np.asarray(g * factor.astype(jnp.bfloat16), np.float32))


def test_spike_guard_skips_non_finite_in_both_modes():
  for mode in ("skip", "clip"):
    tx = optix.spike_guard(optix.sgd(1.0, momentum=0.5), warmup_steps=1, mode=mode)
    state = tx.init(jnp.zeros(2))
    _, state = tx.update(jnp.ones(2), state)
    updates, new = tx.update(jnp.asarray([jnp.inf, 1.0]), state)
    np.testing.assert_array_equal(np.asarray(updates), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(new.inner_state[0].trace),
                                  np.asarray(state.inner_state[0].trace))
    assert int(new.count) == 1 and int(new.spike_count) == 1
    assert float(new.avg_norm) == float(state.avg_norm)


def test_spike_guard_with_an_axis_name_decides_on_the_whole_trees_norm():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
  tx = optix.spike_guard(optix.sgd(1.0), threshold=2.0, decay=0.5, warmup_steps=1,
                         axis_name="x")

  def two_steps(g):
    state = tx.init(g)
    _, state = tx.update(g, state)
    updates, state = tx.update(2.5 * g, state)
    return updates, state.last_norm, state.spike_count

  f = _jit_shard_map(two_steps, mesh=mesh, in_specs=(P("x"),), out_specs=(P("x"), P(), P()),
                    check_vma=True)
  g = jnp.arange(8.0) + 1  # norm √204; each device's block alone is far smaller
  updates, last_norm, spikes = f(g)
  np.testing.assert_allclose(float(last_norm), 2.5 * np.sqrt(204.0), rtol=1e-6)
  assert int(spikes) == 1
  np.testing.assert_array_equal(np.asarray(updates), np.zeros(8))


def test_spike_guard_passes_extra_args_to_an_inner_transform_without_them():
  tx = optix.spike_guard(optax.scale(2.0))
  updates, _ = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=jnp.float32(1.0))
  np.testing.assert_array_equal(np.asarray(updates), [2.0, 2.0])


BAD = [("threshold", lambda: optix.spike_guard(optix.sgd(0.1), threshold=1.0)),
       ("decay", lambda: optix.spike_guard(optix.sgd(0.1), decay=1.0)),
       ("warmup_steps", lambda: optix.spike_guard(optix.sgd(0.1), warmup_steps=0)),
       ("mode", lambda: optix.spike_guard(optix.sgd(0.1), mode="drop")),
       ("alpha", lambda: optix.z_loss(jnp.zeros((1, 2)), -1.0))]


@pytest.mark.parametrize("name, build", BAD, ids=[n for n, _ in BAD])
def test_bad_arguments_are_named(name, build):
  with pytest.raises(ValueError, match=f"^{name} must"):
    build()


def test_boundary_values_are_accepted():
  for mode in ("skip", "clip"):
    optix.spike_guard(optix.sgd(0.1), threshold=1.5, decay=0.0, warmup_steps=1, mode=mode)
  optix.spike_guard(optix.sgd(0.1), threshold=float("inf"))
  optix.z_loss(jnp.zeros((1, 2)), 0.0)


# -- zero_nans, z_loss --------------------------------------------------------------------------


def test_zero_nans_flags_and_counts():
  tx = optix.zero_nans()
  params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
  state = tx.init(params)
  assert state.nan_steps.dtype == jnp.int32 and int(state.nan_steps) == 0
  assert all(x.dtype == jnp.bool_ and not bool(x) for x in jax.tree.leaves(state.found_nan))
  steps = [({"a": jnp.asarray([1.0, 2.0, 3.0]), "b": jnp.asarray([jnp.nan, 1.0])}, (False, True)),
           ({"a": jnp.ones(3), "b": jnp.ones(2)}, (False, False)),
           ({"a": jnp.asarray([jnp.nan, 2.0, jnp.inf]), "b": jnp.ones(2)}, (True, False))]
  count = 0
  for grads, (nan_a, nan_b) in steps:
    out, state = tx.update(grads, state)
    count += nan_a or nan_b
    assert bool(state.found_nan["a"]) == nan_a and bool(state.found_nan["b"]) == nan_b
    assert int(state.nan_steps) == count
    for key in ("a", "b"):
      g = np.asarray(grads[key])
      np.testing.assert_array_equal(np.asarray(out[key]), np.where(np.isnan(g), 0.0, g))


def test_zero_nans_on_an_empty_tree_and_a_mismatched_one():
  tx = optix.zero_nans()
  out, state = tx.update({}, tx.init({}))
  assert out == {} and int(state.nan_steps) == 0
  with pytest.raises(ValueError, match=r"^updates and state\.found_nan have"):
    tx.update({"b": jnp.ones(2)}, tx.init({"a": jnp.ones(2)}))


def test_z_loss_reduces_the_last_axis_in_float32():
  logits = jnp.arange(24.0).reshape(2, 3, 4) / 7
  out = optix.z_loss(logits, 0.5)
  assert out.shape == (2, 3) and out.dtype == jnp.float32
  x = np.asarray(logits, np.float64)
  want = 0.5 * np.log(np.exp(x).sum(-1)) ** 2
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)
  low = optix.z_loss(logits.astype(jnp.bfloat16))
  assert low.dtype == jnp.float32
  with jax.enable_x64(True):  # float32 whatever the default float
    assert optix.z_loss(logits).dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(optix.z_loss(logits)), 1e-4 / 0.5 * want, rtol=1e-6)


def test_defaults():
  """apply_if_finite skips 5 non-finite steps in a row and lets the 6th through; spike_guard
  takes threshold 4, decay 0.99, 10 warmup steps and skips."""
  tx = optix.apply_if_finite(optix.sgd(1.0))
  state = tx.init(jnp.zeros(2))
  for n in range(1, 7):
    updates, state = tx.update(jnp.asarray([jnp.nan, 1.0]), state)
    assert bool(jnp.all(updates == 0)) == (n <= 5), n
  # 6.0: above 4 × the average (about 1.4), below 5 ×
  norms = [1.0, 2.0, 1.0, 1.5, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 6.0, 3.0, 9.0, 1.0]
  tx = optix.spike_guard(optix.sgd(1.0))
  state = tx.init(jnp.zeros(2))
  for n, (moved, a, c, spikes) in zip(norms, _by_hand(norms, 4.0, 0.99, 10, "skip")):
    updates, state = tx.update(jnp.asarray([0.6 * n, 0.8 * n]), state)
    np.testing.assert_allclose(float(optix.global_norm(updates)), moved, rtol=1e-5)
    np.testing.assert_allclose(float(state.avg_norm), a, rtol=1e-5)
    assert int(state.count) == c and int(state.spike_count) == spikes
  assert spikes == 2


@pytest.mark.parametrize("guard", [lambda tx: optix.apply_if_finite(tx, 2),
                                   lambda tx: optix.spike_guard(tx, mode="skip"),
                                   lambda tx: optix.spike_guard(tx, mode="clip")],
                         ids=["apply_if_finite", "spike_guard_skip", "spike_guard_clip"])
def test_guards_pass_params_and_extra_args_to_the_inner_transform(guard):
  seen = []

  def record(updates, state, params=None, *, value=None, **extra):
    seen.append((params, value))
    return updates, state

  tx = guard(optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), record))
  params = {"w": jnp.asarray([1.0, 2.0])}
  tx.update({"w": jnp.ones(2)}, tx.init(params), params, value=3.0)
  assert len(seen) == 1 and seen[0][0] is params and seen[0][1] == 3.0
