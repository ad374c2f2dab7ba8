"""Faults and long runs: saturating step counters at 2**31 - 1, schedules out to 1e9
steps, a run SIGKILLed mid-training resumed bit-exactly from its last orbax checkpoint, same-seed
runs bit-identical, and the guards recovering after a burst of bad steps."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix
from registry import ENTRIES, params_for

INT32_MAX = 2 ** 31 - 1
# Run by default (one per family with its own counter logic); the rest under `make test-all`.
LIGHT = {"adamw_scheduled", "adafactor", "shampoo", "kfac", "lbfgs", "apply_if_finite",
         "dynamic_loss_scaling", "multi_steps"}
# int32 fields that are bounded by construction, not step counters (a huge value is not a
# state the transform can reach): multi_steps' position inside the accumulation window.
BOUNDED = {"mini_step"}


def _is_counter(x):
  return isinstance(x, jax.Array) and x.dtype == jnp.int32 and x.ndim == 0


def _field(path):
  names = [getattr(k, "name", None) for k in path]
  return next((n for n in reversed(names) if n is not None), None)


@pytest.mark.parametrize("entry", [
    pytest.param(e, id=e.name, marks=[] if e.name in LIGHT else [pytest.mark.slow])
    for e in ENTRIES])
def test_counter_saturates(entry):
  """Every int32 scalar in the state (step counts, skip counts) set to 2**31 - 2, then three
  steps: the counters end at 2**31 - 1 or stay put, never wrap negative; the updates stay
  finite (bias corrections, schedules and intervals at a huge step)."""
  tx = entry.make()
  params = params_for(entry)
  state = tx.init(params)
  if not any(_is_counter(x) for x in jax.tree.leaves(state)):
    pytest.skip("no int32 step counter in the state")
  state = jax.tree_util.tree_map_with_path(
      lambda path, x: (jnp.full_like(x, INT32_MAX - 1)
                       if _is_counter(x) and _field(path) not in BOUNDED else x), state)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, **entry.extra_args))
  for k in jax.random.split(jax.random.key(0), 3):  # 3: multi_steps(every_k=3) emits once
    updates, state = step(optix.testing.random_like(k, params), state, params)
    chex.assert_tree_all_finite(updates)
    params = optix.apply_updates(params, updates)
  counters = [int(x) for x in jax.tree.leaves(state) if _is_counter(x)]
  assert min(counters) >= 0, f"a counter wrapped: {counters}"
  assert INT32_MAX in counters, f"no counter reached 2**31 - 1: {counters}"


def test_safe_increment_saturates():
  c = jnp.asarray(INT32_MAX - 1, jnp.int32)
  c = optix.safe_increment(optix.safe_increment(optix.safe_increment(c)))
  assert c.dtype == jnp.int32 and int(c) == INT32_MAX


# -- schedules at huge steps ----------------------------------------------------------------

STEPS = jnp.asarray([0, 1, 5, 10, 99, 100, 101, 1000, 10 ** 4, 10 ** 5, 10 ** 6, 10 ** 7,
                     10 ** 8, 10 ** 9, INT32_MAX - 1, INT32_MAX], jnp.int32)
# name -> (schedule, monotone after step `since`: -1 non-increasing, +1 non-decreasing, 0 none).
SCHEDULES = {
    "constant": (lambda: optix.constant_schedule(0.1), 0, -1),
    "linear": (lambda: optix.linear_schedule(1.0, 0.1, 1000), 0, -1),
    "polynomial": (lambda: optix.polynomial_schedule(1.0, 0.0, 2.0, 10 ** 6), 0, -1),
    "cosine": (lambda: optix.cosine_decay_schedule(1.0, 10 ** 5, alpha=0.1), 0, -1),
    "warmup_cosine": (lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 100, 10 ** 8, 1e-3),
                      100, -1),
    "exponential": (lambda: optix.exponential_decay(1.0, 1000, 0.5), 0, -1),
    "exponential_floor": (lambda: optix.exponential_decay(1.0, 10, 0.1, end_value=1e-4), 0, -1),
    "piecewise": (lambda: optix.piecewise_constant_schedule(1.0, {100: 0.5, 10 ** 6: 0.1}), 0, -1),
    "wsd": (lambda: optix.wsd_schedule(1.0, 100, 10 ** 9, 10 ** 7), 100, -1),
    "inverse_sqrt": (lambda: optix.inverse_sqrt_schedule(1.0, 100), 100, -1),
    "cosine_onecycle": (lambda: optix.cosine_onecycle_schedule(10 ** 6, 1.0), 3 * 10 ** 5, -1),
    "linear_onecycle": (lambda: optix.linear_onecycle_schedule(10 ** 6, 1.0), 10 ** 6, -1),
    "sgdr": (lambda: optix.sgdr_schedule(1.0, first_cycle_steps=1000, num_cycles=5), 0, 0),
    "cyclical": (lambda: optix.cyclical_schedule(0.1, 1.0, 1000), 0, 0),
    "join": (lambda: optix.join_schedules([optix.linear_schedule(0.0, 1.0, 100),
                                           optix.cosine_decay_schedule(1.0, 10 ** 9)], [100]),
             100, -1),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_finite_and_monotone_to_1e9(name):
  make, since, direction = SCHEDULES[name]
  values = np.asarray(jax.jit(jax.vmap(make()))(STEPS), np.float64)
  assert np.all(np.isfinite(values)), dict(zip(STEPS.tolist(), values))
  assert np.all(values >= 0), dict(zip(STEPS.tolist(), values))
  tail = values[np.asarray(STEPS) >= since]
  if direction:
    diffs = direction * np.diff(tail)
    assert np.all(diffs >= -1e-7 * np.abs(tail[:-1]).max()), dict(zip(STEPS.tolist(), values))


# -- kill -9 and resume ---------------------------------------------------------------------

_TRAIN = textwrap.dedent('''
    """A tiny training run that checkpoints every 3 steps (orbax) and can resume."""
    import os, sys, time
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    import orbax.checkpoint as ocp
    import optix

    ckpt_dir, out, total, slow = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    tx = optix.chain(optix.clip_by_global_norm(1.0),
                     optix.adamw(optix.warmup_cosine_decay_schedule(0.0, 1e-2, 3, 30),
                                 weight_decay=0.1))
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (16, 8)), "b": jnp.zeros(8)}
    x = jax.random.normal(jax.random.key(1), (64, 16))
    y = jnp.sin(x @ jax.random.normal(jax.random.key(2), (16, 8)))

    def loss(p, xb, yb):
      return jnp.mean((jnp.tanh(xb @ p["w"] + p["b"]) - yb) ** 2)

    @jax.jit
    def step(p, s, i):
      idx = jax.random.permutation(jax.random.fold_in(jax.random.key(3), i), 64)[:16]
      g = jax.grad(loss)(p, x[idx], y[idx])
      u, s = tx.update(g, s, p)
      return optix.apply_updates(p, u), s

    state, start = tx.init(params), 0
    options = ocp.CheckpointManagerOptions(save_interval_steps=3, max_to_keep=2)
    with ocp.CheckpointManager(ckpt_dir, options=options) as mngr:
      latest = mngr.latest_step()
      if latest is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"p": params, "s": state})
        restored = mngr.restore(latest, args=ocp.args.StandardRestore(abstract))
        params, state, start = restored["p"], restored["s"], latest
      for i in range(start, total):
        params, state = step(params, state, jnp.int32(i))
        if mngr.save(i + 1, args=ocp.args.StandardSave({"p": params, "s": state})):
          mngr.wait_until_finished()
          print(f"CKPT {i + 1}", flush=True)
        if slow:
          time.sleep(0.3)
    np.savez(out, **{k: np.asarray(v) for k, v in params.items()})
    print("DONE", flush=True)
''')


def _python(script, *args, **kw):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_mid_run_resumes_bit_exactly(tmp_path):
  script = tmp_path / "train.py"
  script.write_text(_TRAIN)
  total = 12
  # The uninterrupted reference and the run to be killed start together (2 cores).
  ref = _python(script, tmp_path / "ref_ckpt", tmp_path / "ref.npz", total, 0)
  victim = _python(script, tmp_path / "ckpt", tmp_path / "victim.npz", total, 1)
  seen = []
  for line in victim.stdout:
    seen.append(line)
    if line.startswith("CKPT 6"):
      os.kill(victim.pid, signal.SIGKILL)  # mid-run: between checkpoints 6 and 9
      break
  victim.wait(timeout=120)
  assert victim.returncode == -signal.SIGKILL, "".join(seen)
  assert not (tmp_path / "victim.npz").exists()
  ref_out = ref.communicate(timeout=300)[0]
  assert ref.returncode == 0, ref_out
  resumed = _python(script, tmp_path / "ckpt", tmp_path / "resumed.npz", total, 0)
  out = resumed.communicate(timeout=300)[0]
  assert resumed.returncode == 0, out
  assert "CKPT 3\n" not in out, "the resumed run started over instead of from its checkpoint"
  a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
  assert sorted(a.files) == sorted(b.files)
  for k in a.files:
    np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_same_seed_runs_are_bit_identical():
  def run():
    tx = optix.chain(optix.clip_by_global_norm(1.0), optix.adamw(1e-2, weight_decay=0.1))
    params = {"w": jax.random.normal(jax.random.key(0), (32, 16)), "b": jnp.zeros(16)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for k in jax.random.split(jax.random.key(1), 5):
      u, state = step(optix.testing.random_like(k, params), state, params)
      params = optix.apply_updates(params, u)
    return params, state

  a, b = run(), run()
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- guards recover after a burst of bad steps ----------------------------------------------


def _params():
  return {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}


def _train(tx, grads_seq):
  params = _params()
  state = tx.init(params)
  step = jax.jit(tx.update)
  moved = []
  for g in grads_seq:
    u, state = step(g, state, params)
    new = optix.apply_updates(params, u)
    moved.append(any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(new),
                                                          jax.tree.leaves(params))))
    params = new
  return params, state, moved


def _g(scale):
  return jax.tree.map(lambda x: jnp.full_like(x, scale), _params())


def test_loss_scaling_recovers_after_overflow_burst():
  tx = optix.dynamic_loss_scaling(optix.adam(1e-2), initial_scale=2.0 ** 10, growth_interval=3)
  seq = [_g(1.0)] * 2 + [_g(jnp.inf)] * 5 + [_g(1.0)] * 7
  params, state, moved = _train(tx, seq)
  assert moved == [True] * 2 + [False] * 5 + [True] * 7
  ls = state.loss_scale
  # 5 backoffs (2**10 -> 2**5), then growth after every 3 finite steps: 7 // 3 = 2 doublings.
  assert float(ls.scale) == 2.0 ** 7 and int(ls.skipped) == 5
  chex.assert_tree_all_finite(params)


def test_spike_guard_recovers_after_spike_burst():
  tx = optix.spike_guard(optix.adam(1e-2), threshold=3.0, warmup_steps=3)
  seq = [_g(1.0)] * 4 + [_g(100.0)] * 4 + [_g(jnp.nan)] + [_g(1.1)] * 4
  params, state, moved = _train(tx, seq)
  assert moved == [True] * 4 + [False] * 5 + [True] * 4
  assert int(state.spike_count) == 5 and int(state.count) == 8
  chex.assert_tree_all_finite(params)


def test_apply_if_finite_recovers_and_gives_up_on_broken_runs():
  tx = optix.apply_if_finite(optix.adam(1e-2), max_consecutive_errors=3)
  params, state, moved = _train(tx, [_g(1.0)] + [_g(jnp.nan)] * 3 + [_g(1.0)] * 2)
  assert moved == [True, False, False, False, True, True]
  assert int(state.total_notfinite) == 3 and int(state.notfinite_count) == 0
  chex.assert_tree_all_finite(params)
  # A 4th NaN step in a row is let through: a broken run shows NaNs instead of standing still.
  _, _, moved = _train(tx, [_g(jnp.nan)] * 4)
  assert moved == [False, False, False, True]
