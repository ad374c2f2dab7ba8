"""optix.tools.compare: same trial budget per optimizer, resumable runs, a sane table; and the
benchmark suite's scoring (performance profiles)."""

import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A tiny least squares: y = A·1, minibatches of 16 rows in a seeded order.
A = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
B = A @ np.ones(8, np.float32)


def loss_fn(p, batch):
  a, y = batch
  return jnp.mean((a @ p["w"] - y) ** 2)


def batches(seed):
  rng = np.random.default_rng(seed)
  while True:
    i = rng.integers(0, 64, 16)
    yield A[i], B[i]


PARAMS = {"w": jnp.zeros(8)}


def test_compare_tunes_every_optimizer_equally_and_reports(tmp_path):
  made = []

  def sgd(lr):
    made.append(lr)
    return optix.sgd(lr, momentum=0.9)

  result = optix.tools.compare(PARAMS, loss_fn, batches, steps=40,
                               optimizers={"adamw": "adamw", "sgd": (sgd, 0.05)}, trials=2,
                               seeds=(0, 1), learning_rates={"adamw": 0.1}, progress=False,
                               out=str(tmp_path / "runs.json"))
  # 2 trials each on seed 0, the chosen LR once more on seed 1.
  assert len(result.runs) == 2 * (2 + 1)
  assert made
  assert sorted({r["lr"] for r in result.runs.values() if r["optimizer"] == "sgd"}) == \
      pytest.approx([0.05 / 3 ** 0.5, 0.05 * 3 ** 0.5])
  assert sorted({r["lr"] for r in result.runs.values() if r["optimizer"] == "adamw"}) == \
      pytest.approx([0.1 / 3 ** 0.5, 0.1 * 3 ** 0.5])
  s = result.summary
  for label in ("adamw", "sgd"):
    chosen = s[label]["lr"]
    assert s[label]["sweep"][chosen] == min(s[label]["sweep"].values())
    assert sorted(s[label]["seeds"]) == [0, 1]
    tx = (optix.adamw if label == "adamw" else sgd)(lambda step: 0.1)  # scheduled, as run
    assert s[label]["state_bytes"] == optix.tools.state_memory(tx, PARAMS).total_bytes
  # The target is the baseline's seed-averaged final loss, which the baseline reaches.
  assert result.target == pytest.approx(s["adamw"]["final"])
  assert s["adamw"]["steps_to_target"] is not None
  assert s["adamw"]["final"] < 0.5 * loss_fn(PARAMS, next(batches(0)))
  table = result.table()
  assert table.startswith("| optimizer | lr |") and "| adamw |" in table and "| sgd |" in table
  png = result.plot(str(tmp_path / "cmp.png"))
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_interrupted_comparison_resumes_without_repeating_runs(tmp_path):
  out = str(tmp_path / "runs.json")
  kwargs = dict(steps=20, optimizers=["adamw", "lion"], trials=2, seeds=(0, 1), out=out,
                progress=False)

  def interrupt(record):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    optix.tools.compare(PARAMS, loss_fn, batches, callback=interrupt, **kwargs)
  with open(out) as f:
    assert len(json.load(f)["runs"]) == 1
  done = []
  result = optix.tools.compare(PARAMS, loss_fn, batches, callback=done.append, **kwargs)
  assert len(result.runs) == 2 * (2 + 1)
  assert len(done) == len(result.runs) - 1  # the saved run was not repeated
  again = []
  optix.tools.compare(PARAMS, loss_fn, batches, callback=again.append, **kwargs)
  assert not again
  with pytest.raises(ValueError, match="different comparison"):
    optix.tools.compare(PARAMS, loss_fn, batches, **{**kwargs, "steps": 21})


def test_one_compiled_step_serves_every_learning_rate():
  traces = []

  def counted(p, batch):
    traces.append(1)
    return loss_fn(p, batch)

  result = optix.tools.compare(PARAMS, counted, batches, steps=5, optimizers=["adamw", "lion"],
                               trials=3, seeds=(0, 1), progress=False)
  # Each run traces the loss once (its shape check); a step compiled per run would trace again.
  assert len(result.runs) == 8 and len(traces) < 2 * len(result.runs)


def test_schedules_take_a_traced_peak():
  compare_module = sys.modules["optix.tools.compare"]
  for kind in compare_module.SCHEDULES:
    at = jax.jit(lambda lr, kind=kind: jnp.asarray(compare_module._schedule(kind, lr, 100))
                 if kind == "constant" else compare_module._schedule(kind, lr, 100)(50))
    assert float(at(jnp.float32(2.0))) == pytest.approx(2 * float(at(jnp.float32(1.0))))
  # The cosine one: 5% warmup from 0, then down to 0.1 × peak at the end.
  cosine = compare_module._schedule("cosine", 2.0, 100)
  assert [float(cosine(t)) for t in (0, 5, 100)] == pytest.approx([0.0, 2.0, 0.2])


def test_every_named_optimizer_takes_a_schedule_and_steps():
  compare_module = sys.modules["optix.tools.compare"]
  named = compare_module._named()
  assert list(named) == list(compare_module.NAMES)  # one list, in one order
  params = {"w": jnp.full((4, 3), 0.3), "b": jnp.zeros(3)}
  grads = jax.tree.map(lambda x: jnp.cos(x) + 0.1, params)
  for name, entry in named.items():  # traced only (eval_shape): a real step of each is slow
    tx = entry.make(compare_module._schedule(entry.schedule or "cosine", entry.lr, 20))
    updates, _ = jax.eval_shape(lambda p, g, tx=tx: tx.update(g, tx.init(p), p), params, grads)
    assert jax.tree.map(lambda u: (u.shape, u.dtype), updates) == jax.tree.map(
        lambda p: (p.shape, p.dtype), params), name
  # SM3, which optax builds from a Python float only, is SM3 at 1 times the learning rate.
  for lr in (1e-2, 2e-2):
    ours, ref = named["sm3"].make(lr), optix.sm3(lr)
    np.testing.assert_allclose(ours.update(grads, ours.init(params), params)[0]["w"],
                               ref.update(grads, ref.init(params), params)[0]["w"], rtol=1e-6)


def test_schedule_free_is_scored_at_its_average():
  steps, lr = 12, 0.05
  result = optix.tools.compare(PARAMS, loss_fn, batches, steps=steps, trials=1, seeds=(0,),
                               optimizers=["adamw", "schedule_free_adamw"],
                               learning_rates={"schedule_free_adamw": lr}, progress=False)
  run, = [r for r in result.runs.values() if r["optimizer"] == "schedule_free_adamw"]
  # By hand: a 5% warmup (1 step) then constant; the loss of each batch at x before the step.
  tx = optix.schedule_free_adamw(optix.warmup_constant_schedule(0.0, lr, 1))
  p, state, it, expected = PARAMS, tx.init(PARAMS), batches(0), []
  for _ in range(steps):
    batch = next(it)
    expected.append(float(loss_fn(optix.schedule_free_eval_params(state, p), batch)))
    updates, state = tx.update(jax.grad(loss_fn)(p, batch), state, p)
    p = optix.apply_updates(p, updates)
  np.testing.assert_allclose(run["losses"], expected, rtol=1e-5)


def test_curves_targets_and_divergence():
  compare_module = sys.modules["optix.tools.compare"]  # the module, not the function
  # The trailing-mean curve, and a diverged run counts as never reaching anything.
  run = {"losses": [4.0, 2.0, 0.0, 2.0], "eval_steps": [], "eval_losses": []}
  x, y = compare_module._curve(run, 2)
  np.testing.assert_allclose(x, [1, 2, 3, 4])
  np.testing.assert_allclose(y, [4.0, 3.0, 1.0, 1.0])
  good = dict(run, seed=0, diverged=False, ms_per_step=1.0, state_bytes=8)
  bad = dict(run, losses=[4.0, math.nan], seed=1, diverged=True, ms_per_step=1.0, state_bytes=8)
  s = compare_module._summarize([good, bad], 2, {0.1: 1.0}, 0.1, [0.1])
  assert s["final"] == math.inf and not s["edge"]
  assert compare_module.grid(1e-2, 3, 10.0) == pytest.approx([1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizers=["adamx"]), "unknown name 'adamx'"),
    (dict(optimizers=["sgd"]), "baseline 'adamw' is not among the optimizers"),
    (dict(optimizers=[lambda lr: optix.sgd(lr)]), "needs a name"),
    (dict(optimizers={"bad": lambda lr: 3}), "must return a GradientTransformation"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(seeds=(0, 0)), "distinct"),
    (dict(lr_ratio=1.0), "lr_ratio must be in"),
    (dict(learning_rates={"lion": 1e-3}), "not among the optimizers"),
    (dict(schedule="linear"), "schedule must be"),
    (dict(steps=200), r"batches\(0\) ran out after 100 batches"),
    (dict(loss=lambda p, b: p["w"] * 2.0), r"loss_fn must return a scalar, got shape \(8,\)"),
])
def test_inputs_are_checked_in_the_callers_words(kwargs, message):
  def short(seed):
    return iter([next(batches(seed))] * 100)

  base = dict(steps=5, optimizers=["adamw"], trials=1, seeds=(0,), progress=False)
  if "bad" in str(kwargs.get("optimizers")):
    base["baseline"] = "bad"
  loss = kwargs.pop("loss", loss_fn)
  with pytest.raises(ValueError, match=message):
    optix.tools.compare(PARAMS, loss, short, **{**base, **kwargs})


def test_batches_must_be_a_factory():
  with pytest.raises(ValueError, match="batches must be a function seed"):
    optix.tools.compare(PARAMS, loss_fn, [1, 2], steps=2, progress=False)


def test_performance_profiles_by_hand(monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT))
  from benchmarks import suite
  times = {"w1": {"adamw": 10.0, "muon": 5.0}, "w2": {"adamw": 4.0, "muon": None},
           "w3": {"adamw": 3.0, "muon": 9.0}}
  prof = suite.profiles(times, taus=(1.0, 2.0, 4.0))
  # muon: fastest on w1; never on w2; 3× on w3.  adamw: fastest on w2, w3; 2× on w1.
  assert prof["muon"] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
  assert prof["adamw"] == pytest.approx([2 / 3, 1.0, 1.0])
  assert "not reached" in suite.ratio_table(times)
  assert suite.profile_table(prof, taus=(1.0, 2.0, 4.0)).splitlines()[2].startswith("| adamw |")


@pytest.mark.slow  # a second process and JAX import; the harness itself runs in-process above
def test_compare_own_model_example_runs(tmp_path):
  script = str(ROOT / "examples" / "compare_own_model.py")
  proc = subprocess.run([sys.executable, script, "15", "1"], capture_output=True, text=True,
                        timeout=600, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| muon |" in proc.stdout and (tmp_path / "out" / "own_model.png").stat().st_size > 10_000


def test_suite_smoke_on_two_workloads_side_by_side(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT))
  from benchmarks import suite, workloads
  w = workloads.load("least_squares", quick=True)
  for o in workloads.OPTIMIZERS:  # every suite optimizer is named in compare and has a centre
    assert o in sys.modules["optix.tools.compare"].NAMES and workloads.centre(w, o) > 0
  assert set(workloads.QUICK_OPTIMIZERS) <= set(workloads.OPTIMIZERS)
  # Two workloads side by side, each in its own process.
  suite.main(["--workloads", "least_squares,noisy_labels", "--quick", "--trials", "1",
              "--seeds", "1", "--optimizers", "adamw,schedule_free_adamw", "--jobs", "2",
              "--out", str(tmp_path)])
  report = (tmp_path / "suite.md").read_text()
  assert "| schedule_free_adamw |" in report and "at the edge of their grid: 0 of 4" in report
  assert report.index("### least_squares") < report.index("### noisy_labels")  # NAMES order
  assert (tmp_path / "profiles.png").stat().st_size > 10_000
  assert (tmp_path / "noisy_labels.png").stat().st_size > 10_000
