"""Guards: apply_if_finite, spike_guard, zero_nans, z_loss."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from registry import ENTRIES, params_for


def _assert_bit_identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def _poison(grads, value, index=0):
  """Puts ``value`` into one element of the ``index``-th leaf."""
  leaves, treedef = jax.tree.flatten(grads)
  leaf = leaves[index]
  leaves[index] = leaf.reshape(-1).at[0].set(value).reshape(leaf.shape)
  return jax.tree.unflatten(treedef, leaves)


def _guarded_entries():
  """Every base and safety entry, and the first two of every other area: one compile per
  entry (~1 s of CPU each) keeps this file within its CI budget as the registry grows.
  An entry opts out with skip={"test_nan_or_inf_step_leaves_params_and_state_bit_identical": why}.
  """
  areas = sorted(pathlib.Path(__file__).resolve().parent.glob("registry_*.py"))
  other = {e.name for path in areas if path.stem != "registry_safety"
           for e in importlib.import_module(path.stem).ENTRIES}
  chosen = {e.name for e in ENTRIES if e.name not in other}
  for path in areas:
    chosen |= {e.name for e in importlib.import_module(path.stem).ENTRIES[:2]}
  return [e for e in ENTRIES if e.name in chosen
          and "test_nan_or_inf_step_leaves_params_and_state_bit_identical" not in e.skip]


GUARDED = _guarded_entries()


@pytest.mark.parametrize("entry", GUARDED, ids=[e.name for e in GUARDED])
def test_nan_or_inf_step_leaves_params_and_state_bit_identical(entry):
  """Every registry optimizer under apply_if_finite: NaN at step 3 and Inf at step 4
  leave params and every state leaf as they were after step 2; the counters advance."""
  params = params_for(entry)
  tx = optix.apply_if_finite(entry.make(), max_consecutive_errors=5)

  @jax.jit
  def step(grads, state, params):
    updates, state = tx.update(grads, state, params, **entry.extra_args)
    return optix.apply_updates(params, updates), state

  keys = jax.random.split(jax.random.key(7), 5)
  state = tx.init(params)
  for k in keys[:2]:
    params, state = step(optix.testing.random_like(k, params), state, params)
  before = (params, state.inner_state)
  bad = [_poison(optix.testing.random_like(keys[2], params), jnp.nan),
         _poison(optix.testing.random_like(keys[3], params), jnp.inf, index=-1)]
  for n, grads in enumerate(bad, start=1):
    params, state = step(grads, state, params)
    _assert_bit_identical((params, state.inner_state), before)
    assert int(state.notfinite_count) == n and int(state.total_notfinite) == n
    assert not bool(state.last_finite)
  params, state = step(optix.testing.random_like(keys[4], params), state, params)
  assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2
  assert bool(optix.all_finite(params))


def test_apply_if_finite_gives_up_after_max_consecutive_errors():
  params = {"w": jnp.ones(3)}
  tx = optix.apply_if_finite(optix.sgd(0.1), max_consecutive_errors=2)
  state = tx.init(params)
  nan = {"w": jnp.array([1.0, jnp.nan, 1.0])}
  for n in (1, 2):
    updates, state = tx.update(nan, state, params)
    np.testing.assert_array_equal(updates["w"], 0.0)
  updates, state = tx.update(nan, state, params)  # the third in a row goes through
  assert np.isnan(updates["w"][1]) and int(state.notfinite_count) == 3


def _nan_equal(a, b):
  """Same leaves, NaN equal to NaN (the given-up step lets NaNs into the state); the state
  classes differ (optix's and optax's NamedTuples), their leaves in order do not."""
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert np.shape(x) == np.shape(y)
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("inner, ref, pattern", [
    # Adam's moments take the NaN on the given-up step, so its later updates are non-finite and
    # only optix (which checks the inner updates too) would skip them: compare up to that step.
    (lambda: optix.adam(0.1), lambda: optax.adam(0.1), "FNNN"),
    # A count-only state stays finite through a given-up step: compare a long pattern.
    (lambda: optix.scale_by_schedule(optix.linear_schedule(1.0, 0.1, 8)),
     lambda: optax.scale_by_schedule(optax.linear_schedule(1.0, 0.1, 8)), "FNNNFNFNNNNF")],
    ids=["adam", "count_only"])
def test_apply_if_finite_advances_the_inner_state_as_optax_does(inner, ref, pattern):
  """max_consecutive_errors=2: a third non-finite step in a row goes through, and so does the
  inner state's step (its count and moments advance, NaNs included), as in optax."""
  params = {"w": jnp.ones(3), "b": jnp.full(2, 0.5)}
  ours, theirs = optix.apply_if_finite(inner(), 2), optax.apply_if_finite(ref(), 2)
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  keys = jax.random.split(jax.random.key(3), len(pattern))
  for t, (kind, k) in enumerate(zip(pattern, keys)):
    grads = optix.testing.random_like(k, params)
    grads = _poison(grads, jnp.nan) if kind == "N" else grads
    u_ours, s_ours = jax.jit(ours.update)(grads, s_ours, params)
    u_theirs, s_theirs = jax.jit(theirs.update)(grads, s_theirs, params)
    _nan_equal(u_ours, u_theirs)
    _nan_equal(s_ours.inner_state, s_theirs.inner_state)
    assert int(s_ours.notfinite_count) == int(s_theirs.notfinite_count), t
    assert int(s_ours.total_notfinite) == int(s_theirs.total_notfinite), t
    assert bool(s_ours.last_finite) == bool(s_theirs.last_finite), t


def test_apply_if_finite_catches_overflow_inside_the_inner_transform():
  params = {"w": jnp.ones(2, jnp.float16)}
  tx = optix.apply_if_finite(optix.scale(1e5), 3)  # 1 * 1e5 overflows float16
  updates, state = tx.update({"w": jnp.ones(2, jnp.float16)}, tx.init(params), params)
  np.testing.assert_array_equal(updates["w"], 0.0)
  assert int(state.total_notfinite) == 1


def _spike_run(mode, spike_factor=100.0):
  params = {"w": jnp.zeros(4), "b": jnp.zeros(2)}
  inner = optix.sgd(1.0, momentum=0.5)
  tx = optix.spike_guard(inner, threshold=3.0, decay=0.9, warmup_steps=3, mode=mode)
  update = jax.jit(tx.update)
  state = tx.init(params)
  keys = jax.random.split(jax.random.key(0), 6)
  for k in keys[:5]:
    _, state = update(optix.testing.random_like(k, params), state, params)
  spike = optix.testing.random_like(keys[5], params, scale=spike_factor)
  return tx, update, state, spike, params


def test_spike_guard_skip_leaves_state_untouched():
  _, update, state, spike, params = _spike_run("skip")
  updates, new_state = update(spike, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
  _assert_bit_identical(new_state.inner_state, state.inner_state)
  _assert_bit_identical((new_state.avg_norm, new_state.count), (state.avg_norm, state.count))
  assert int(new_state.spike_count) == 1
  np.testing.assert_allclose(new_state.last_norm, optix.global_norm(spike), rtol=1e-6)
  # An ordinary step afterwards goes through.
  updates, after = update(jax.tree.map(lambda g: g / 100.0, spike), new_state, params)
  assert int(after.spike_count) == 1 and int(after.count) == int(state.count) + 1


def test_spike_guard_clip_rescales_to_threshold_times_running_average():
  _, update, state, spike, params = _spike_run("clip")
  avg = state.avg_norm / (1 - 0.9 ** state.count.astype(jnp.float32))
  updates, new_state = update(spike, state, params)
  # sgd(1.0, momentum 0.5): u = -(0.5 m + g_clipped); recover g_clipped.
  g = jax.tree.map(lambda u, m: -u - 0.5 * m, updates, state.inner_state[0].trace)
  np.testing.assert_allclose(optix.global_norm(g), 3.0 * avg, rtol=1e-5)
  assert int(new_state.spike_count) == 1 and int(new_state.count) == int(state.count) + 1


def test_spike_guard_clip_feeds_the_clipped_norm_to_the_average_by_hand():
  """The running average takes min(|g|, k n̄) once the guard is active (the clipped norm,
  not the spike's), debiased by 1 - δ^c; computed here in float64 from the definition."""
  k, delta, warmup = 3.0, 0.5, 2
  tx = optix.spike_guard(optix.sgd(1.0), threshold=k, decay=delta, warmup_steps=warmup,
                         mode="clip")
  params = {"w": jnp.zeros(2)}
  state, update = tx.init(params), jax.jit(tx.update)
  a, c, spikes = 0.0, 0, 0
  for n in (1.0, 2.0, 1.0, 50.0, 1.0, 30.0, 2.0):
    grads = {"w": jnp.asarray([0.6 * n, 0.8 * n], jnp.float32)}
    mean = a / (1.0 - delta ** c) if c else a
    spike = c >= warmup and n > k * mean
    fed = min(n, k * mean) if c >= warmup else n
    a, c, spikes = delta * a + (1 - delta) * fed, c + 1, spikes + spike
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(float(state.avg_norm), a, rtol=1e-6)
    assert int(state.count) == c and int(state.spike_count) == spikes
    np.testing.assert_allclose(float(state.last_norm), n, rtol=1e-6)
    # sgd(1.0): the update is minus the (clipped) gradient, of norm min(n, k n̄) when active.
    np.testing.assert_allclose(float(optix.global_norm(updates)), fed, rtol=1e-5)
  assert spikes == 2


def test_spike_guard_skips_non_finite_even_in_clip_mode():
  _, update, state, spike, params = _spike_run("clip")
  updates, new_state = update(_poison(spike, jnp.nan), state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
  _assert_bit_identical(new_state.inner_state, state.inner_state)


def test_spike_guard_no_false_positives_on_ordinary_noise():
  _, update, state, _, params = _spike_run("skip")
  for k in jax.random.split(jax.random.key(1), 20):
    _, state = update(optix.testing.random_like(k, params), state, params)
  assert int(state.spike_count) == 0


def test_zero_nans_hand_computed():
  tx = optix.zero_nans()
  params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
  grads = {"a": jnp.array([1.0, jnp.nan, -2.0]), "b": jnp.array([jnp.inf, 3.0])}
  out, state = jax.jit(tx.update)(grads, tx.init(params))
  np.testing.assert_array_equal(out["a"], [1.0, 0.0, -2.0])
  np.testing.assert_array_equal(out["b"], [jnp.inf, 3.0])  # only NaNs are zeroed
  assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"])
  assert int(state.nan_steps) == 1


def test_z_loss_hand_computed():
  logits = jnp.array([[0.0, 0.0], [1.0, 2.0]])
  expected = 1e-4 * np.array([np.log(2.0), np.log(np.e + np.e ** 2)]) ** 2
  np.testing.assert_allclose(optix.z_loss(logits), expected, rtol=1e-6)
  # d/dlogits α log²Z = 2α log Z · softmax(logits).
  grad = jax.grad(lambda x: optix.z_loss(x, 0.5).sum())(logits)
  log_z = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  np.testing.assert_allclose(grad, log_z * jax.nn.softmax(logits), rtol=1e-6)
  assert optix.z_loss(logits.astype(jnp.bfloat16)).dtype == jnp.float32
  with pytest.raises(ValueError, match="alpha"):
    optix.z_loss(logits, -1.0)
