"""optix.fused: the single-pass step (a C++ kernel through the XLA FFI) computes
what ``tx.update`` + ``apply_updates`` compute, for every registry optimizer that
has one, on every leaf kind, with schedules, masks, mixed dtypes and packing."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from optix import fused
from registry import ENTRIES, make_params, params_for

FUSED = [e for e in ENTRIES if fused.fusable(e.make())]


def _grads(params, k):
  return jax.tree.map(lambda p: jax.random.normal(jax.random.key(100 + k), jnp.shape(p),
                                                  jnp.result_type(p)), params)


def _run(tx, params, steps, one_pass, fused_arg=True, extra=None, extra_args=None):
  kw = extra_args or {}
  if one_pass:
    step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=fused_arg, **kw))
  else:
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p, **kw)))
  state = tx.init(params)
  for k in range(steps):
    params, state = step(params, state, _grads(params, k) if extra is None else extra(k))
  return params, state


def _assert_close(a, b, rtol=1e-6, atol=1e-7):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.result_type(x) == jnp.result_type(y)
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=rtol, atol=atol)


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_kernels_were_built_with_the_package():
  assert fused._registered() is None  # setup.py builds optix/_fused_kernels*.so


def test_the_registry_has_fused_optimizers():
  names = {e.name for e in FUSED}
  assert {"adam", "adamw", "adamw_masked", "adamw_scheduled", "lion", "sgd_momentum",
          "sgd_nesterov", "packed_adamw"} <= names
  assert "nadam" not in names and "sgd" not in names  # no kernel: the plain chain


@pytest.mark.parametrize("entry", FUSED, ids=str)
def test_fused_step_matches_update(entry):
  """30 steps on the registry's mixed tree (matrices, conv kernel, vectors, a
  scalar): params and state as the chain computes them, to a few float32 ulps
  (XLA may fold a scalar divisor differently from one graph to another)."""
  tx, params = entry.make(), params_for(entry)
  kw = dict(extra_args=entry.extra_args)  # e.g. K-FAC's statistics, passed on every path
  _assert_close(_run(tx, params, 30, True, **kw), _run(tx, params, 30, False, **kw))


_ONE_LEAF = lambda: {"w": jax.random.normal(jax.random.key(0), (3000,))}


@pytest.mark.parametrize("make, make_tree", [
    (lambda: optix.lion(1e-3, weight_decay=0.5), make_params),
    (lambda: optix.sgd(0.05, momentum=0.9), make_params),
    (lambda: optix.sgd(optix.linear_schedule(0.1, 0.01, 5), momentum=0.8, nesterov=True),
     make_params),
    (lambda: optix.lion(optix.linear_schedule(1e-3, 1e-4, 5),
                        weight_decay=optix.linear_schedule(0.1, 0.0, 5)), make_params),
    (lambda: optix.adamw(1e-2, weight_decay=0.3), _ONE_LEAF)],
    ids=["lion", "sgd_momentum", "nesterov_scheduled", "lion_lr_and_decay_scheduled",
         "adamw_one_leaf"])
def test_bit_identical_to_the_jitted_chain(make, make_tree):
  """Same operations in the same order, fused multiply-adds where XLA's LLVM
  backend contracts: bit for bit (AdamW on one leaf, where XLA keeps the bias
  corrections as reciprocals)."""
  tx, params = make(), make_tree()
  _assert_equal(_run(tx, params, 20, True), _run(tx, params, 20, False))


def test_state_is_the_chains_and_each_path_resumes_the_other():
  tx = optix.adamw(1e-2)
  params = make_params()
  p1, s1 = _run(tx, params, 3, True)
  p2, s2 = _run(tx, params, 3, False)
  assert jax.tree.structure(s1) == jax.tree.structure(s2)
  assert isinstance(tx, optax.GradientTransformationExtraArgs)
  assert isinstance(s1[0], optix.ScaleByAdamState) and int(s1[0].count) == 3
  # the fused step resumes from the chain's state and vice versa
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True))
  _assert_close(step(p2, s2, _grads(params, 3)), step(p1, s1, _grads(params, 3)))


def test_ineligible_leaves_take_the_chains_path_in_the_same_step():
  """bf16 params (fp32 state) are not float32 throughout: the chain computes
  them, the float32 leaves go through the kernel, and both are right."""
  params = {"fp32": jnp.ones((64, 8)), "bf16": jnp.ones((16,), jnp.bfloat16)}
  tx = optix.adamw(1e-2, weight_decay=0.1)
  a, b = _run(tx, params, 5, True), _run(tx, params, 5, False)
  _assert_close(a, b)
  np.testing.assert_array_equal(np.asarray(a[0]["bf16"], np.float32),
                                np.asarray(b[0]["bf16"], np.float32))
  hlo = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True)).lower(
      params, tx.init(params), params).as_text()
  assert hlo.count("optix_fused_adam") == 1


def test_one_custom_call_per_max_call_leaves_and_nothing_else_left():
  """200 leaves: ceil(200 / MAX_CALL_LEAVES) calls; XLA drops the chain's
  per-leaf kernels (only scalar fusions remain), no copies."""
  params = {f"p{i}": jnp.ones((16,)) for i in range(200)}
  tx = optix.adamw(1e-3)
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True), donate_argnums=(0, 1))
  text = step.lower(params, tx.init(params), params).compile().as_text()
  calls = -(-200 // fused.MAX_CALL_LEAVES)
  assert text.count('custom_call_target="optix_fused_adam"') == calls
  assert not re.search(r"= f32\[16\]\S* fusion\(", text)
  assert " copy(" not in text


@pytest.mark.parametrize("make", [lambda: optix.adamw(1e-3), lambda: optix.lion(1e-4),
                                  lambda: optix.sgd(1e-2, momentum=0.9)])
def test_the_step_is_not_estimated_cheap(make, monkeypatch):
  """XLA's CPU client runs a program whose cost analysis says < 1000 flops inline
  on the calling thread, and counts each custom call as -1: the one-pass step must
  not look cheap (it did, and blocked Python for the whole step). 300 calls of one
  leaf each: the padding must outweigh every call."""
  monkeypatch.setattr(fused, "MAX_CALL_LEAVES", 1)
  params = {f"p{i}": jnp.ones((4,)) for i in range(300)}
  tx = make()
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True), donate_argnums=(0, 1))
  compiled = step.lower(params, tx.init(params), params).compile()
  assert compiled.as_text().count("custom_call_target") == 300
  assert compiled.cost_analysis()["flops"] >= 1000


def test_without_the_padding_the_step_is_estimated_cheap(monkeypatch):
  """The other half of the mechanism behind ``fused._costed``: unpadded, the same
  one-pass step (one leaf) is estimated under XLA's 1000-flop inline threshold.
  When this fails, XLA no longer counts the custom call as cheap and the padding
  can go."""
  monkeypatch.setattr(fused, "_costed", lambda scalars, calls: scalars)
  params = {"w": jnp.ones((4096,))}
  tx = optix.adamw(1e-3)
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True), donate_argnums=(0, 1))
  compiled = step.lower(params, tx.init(params), params).compile()
  assert "custom_call_target" in compiled.as_text()
  assert compiled.cost_analysis()["flops"] < 1000


@pytest.mark.parametrize("tx, pack", [(optix.lion(1e-3), False),
                                      (optix.packed(optix.adamw(1e-2, weight_decay=0.1)), False),
                                      (optix.packed(optix.adamw(1e-2, weight_decay=0.1)), True)],
                         ids=["lion", "drop_in_packed", "packed_params"])
def test_train_step_runs_the_kernel(tx, pack):
  params = optix.pack(make_params()) if pack else make_params()
  loss = lambda p, x: sum(jnp.sum((leaf * x) ** 2) for leaf in jax.tree.leaves(p))
  results = []
  for one_pass in (True, False):
    step = optix.train_step(loss, tx, fused=one_pass, donate=False)
    assert ("optix_fused" in step.lower(params, tx.init(params), 0.5).as_text()) == one_pass
    p, s = params, tx.init(params)
    for _ in range(5):
      p, s, _ = step(p, s, 0.5)
    results.append((p, s))
  _assert_close(results[0], results[1])


@pytest.mark.parametrize("make, exact", [
    (lambda: optix.packed(optix.adamw(1e-2, weight_decay=0.1)), False),
    (lambda: optix.packed(optix.sgd(1e-2, momentum=0.9)), True),
    (lambda: optix.packed(optix.lion(1e-3, weight_decay=0.1)), True)], ids=["adamw", "sgd", "lion"])
def test_drop_in_packed_step_packs_nothing(make, exact):
  """The drop-in ``packed(tx)`` on an ordinary tree: the kernel reads and writes
  each small leaf's state in its buffer at its offset (300 leaves: 3 buffers,
  each passed in place through several calls) and a large leaf's in its own
  array; params and grads are used where they are: no concatenate but the cost
  padding, no slice, no copy. The packed chain's numbers (bit for bit where the
  plain step is, see test_bit_identical_to_the_jitted_chain)."""
  params = {f"p{i:03d}": jnp.full((100,), 0.5 + i / 300) for i in range(300)}
  params["large"] = jnp.full((70_000,), 0.5)
  tx = make()
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True), donate_argnums=(0, 1))
  text = step.lower(params, tx.init(params), params).compile().as_text()
  assert text.count("custom_call_target") == -(-301 // fused.MAX_CALL_LEAVES)
  assert len(re.findall(r"\s(?:concatenate|slice|copy)\(", text)) == 1, text  # the padding
  grads = lambda k: jax.tree.map(lambda p: jnp.sin(p * (k + 3.0)), params)
  a, b = _run(tx, params, 5, True, extra=grads), _run(tx, params, 5, False, extra=grads)
  _assert_equal(a, b) if exact else _assert_close(a, b)


def test_a_chain_in_packed_runs_its_first_links_packed():
  tx = optix.packed(optix.chain(optix.clip_by_global_norm(1e-3), optix.adamw(1e-2)))
  params = {f"p{i}": jnp.full((64,), 0.5 + i / 40) for i in range(40)}
  params["large"] = jnp.full((70_000,), 0.5)
  grads = lambda k: jax.tree.map(lambda p: jnp.sin(p * (k + 3.0)), params)
  _assert_close(_run(tx, params, 5, True, extra=grads), _run(tx, params, 5, False, extra=grads))


def test_the_kernel_checks_every_leaf_range():
  """A leaf reaching past its operand is refused, not read out of bounds."""
  attrs = {k: np.float32(v) for k, v in dict(b1=0.9, b2=0.999, c1=0.1, c2=0.001, eps=1e-8,
                                             eps_root=0.0).items()}
  x = jnp.ones((8,))
  call = jax.jit(lambda at: fused._call("optix_fused_adam", attrs, jnp.ones((3,)),
                                        jnp.zeros((1, 2)), [x, x + 1, x + 2, x + 3],
                                        [[(0, 0), (1, 0), (2, at), (3, 0)]], [8]),
                 static_argnums=0)
  assert len(call(0)) == 4
  with pytest.raises(Exception, match="leaf outside its operand"):
    jax.block_until_ready(call(1))


def test_masked_packed_decay_matches():
  groups = optix.matrices_only
  tx = optix.packed(optix.adamw(1e-2, weight_decay=0.1, mask=optix.packed_mask(groups)),
                    groups=groups)
  params = optix.pack(make_params(), groups=groups)
  _assert_close(_run(tx, params, 10, True), _run(tx, params, 10, False))


def test_fused_false_and_other_transforms_are_the_chain_exactly():
  params = make_params()
  for tx in (optix.adamw(1e-2), optix.nadam(1e-2), optax.adam(1e-2)):
    _assert_equal(_run(tx, params, 5, True, fused_arg=False), _run(tx, params, 5, False))


def test_auto_mode_is_off_with_several_devices_and_fused_true_raises_without_kernel(monkeypatch):
  assert jax.device_count() == 8  # tests simulate 8 devices: auto (None) keeps the chain
  assert not fused.use_kernel(None)
  assert fused.use_kernel(True)
  monkeypatch.setattr(fused, "_registered", lambda: "optix's fused kernels are unavailable: x")
  assert not fused.use_kernel(None)
  with pytest.raises(RuntimeError, match="unavailable"):
    fused.use_kernel(True)


def test_donated_in_place_and_works_in_optax_chain_and_nnx():
  """The kernel writes params and state into the donated buffers; the transform
  is still an ordinary optax transform for optax.chain and flax.nnx.Optimizer."""
  from flax import nnx
  tx = optix.adamw(1e-2)
  params = {"w": jnp.ones((4096,))}
  step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True), donate_argnums=(0, 1))
  compiled = step.lower(params, tx.init(params), params).compile()
  analysis = compiled.memory_analysis()
  assert analysis.alias_size_in_bytes >= 3 * 4096 * 4
  chained = optax.chain(optax.clip(1.0), tx)
  u, _ = chained.update(params, chained.init(params), params)
  assert jax.tree.structure(u) == jax.tree.structure(params)
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  grads = nnx.state(model, nnx.Param)
  opt.update(model, grads)


def test_a_chain_ending_in_a_fused_optimizer_runs_as_one_pass():
  tx = optix.chain(optix.clip_by_global_norm(1.0), optix.adamw(1e-2, weight_decay=0.1))
  assert fused.plan(tx) is not None and len(fused.plan(tx).prefix) == 1
  assert fused.plan(optix.chain(optix.adamw(1e-2), optix.clip(1.0))) is None
  params = make_params()
  _assert_close(_run(tx, params, 10, True), _run(tx, params, 10, False))


_CONCURRENT_CALLS = """
import jax, jax.numpy as jnp, optix
params = {f"p{i}": jnp.full((16384,), 0.01) for i in range(1000)}
tx = optix.adamw(1e-3)
step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True))
p, s = params, tx.init(params)
for _ in range(10):
  p, s = step(p, s, params)
jax.block_until_ready(p)
"""


def test_concurrent_calls_do_not_deadlock_the_thread_pool():
  """1000 leaves: 32 independent custom calls, each big enough to split over
  threads (32 x 16384 = 2^19 elements: two threads' worth, see ParallelFor),
  which XLA runs concurrently on its pool. A call must never wait on a
  task that no pool thread is free to run (it did, before chunks were claimed:
  this script hung). One CPU device, as users run it (the tests' 8 simulated
  devices do not reproduce the hang), in its own process with a time limit."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-c", _CONCURRENT_CALLS], env=env, timeout=300,
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("make", [lambda: optix.adam(1e-2), lambda: optix.adamw(1e-2, weight_decay=0.1),
                                  lambda: optix.lion(1e-3), lambda: optix.sgd(1e-2, momentum=0.9)])
def test_a_leaf_the_kernel_cannot_take_keeps_its_packed_buffer_on_the_chains_path(make):
  """One bf16 gradient among float32 leaves that share a packed state buffer:
  the kernel must not write that buffer (it would put back the leaf's old state),
  so the buffer's leaves take the chain's path, and every leaf's state moves."""
  params = {f"p{i}": jnp.linspace(-1.0, 1.0, 8) + i for i in range(3)}
  grads = lambda k: {name: g.astype(jnp.bfloat16) if name == "p1" else g
                     for name, g in _grads(params, k).items()}
  tx = optix.packed(make())
  a, b = _run(tx, params, 5, True, extra=grads), _run(tx, params, 5, False, extra=grads)
  _assert_close(a, b)
  moved = [np.asarray(x) for x in jax.tree.leaves(a[1]) if np.ndim(x) > 0]
  assert moved and all(np.all(x != 0) for x in moved)


@pytest.mark.parametrize("fused_arg", [None, True, False])
def test_a_chain_ending_in_packed_has_a_working_one_pass_step(fused_arg):
  """``chain(clip, packed(adamw))``: the chain's step calls the packed step with
  the arguments every one-pass step takes."""
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros((3,))}
  tx = optix.chain(optix.clip(1.0), optix.packed(optix.adamw(1e-2)))
  _assert_close(_run(tx, params, 3, True, fused_arg), _run(tx, params, 3, False))
  step = optix.train_step(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"]), tx, fused=fused_arg)
  new, _, _ = step(dict(params), tx.init(params))
  assert float(new["w"][0, 0]) < 1.0


def test_a_user_built_chain_of_the_shape_runs_the_kernel_bit_for_bit_as_the_alias():
  """fused.plan reads the links' descriptions, not the alias that built them."""
  params = _ONE_LEAF()
  mine = optix.chain(optix.scale_by_adam(), optix.add_decayed_weights(0.3),
                     optix.scale_by_learning_rate(1e-2))
  step = jax.jit(lambda p, s, g: optix.apply_step(mine, g, s, p, fused=True))
  assert "optix_fused_adam" in step.lower(params, mine.init(params), params).as_text()
  _assert_equal(_run(mine, params, 10, True), _run(optix.adamw(1e-2, weight_decay=0.3), params, 10,
                                                    True))
  _assert_equal(_run(mine, params, 10, True), _run(mine, params, 10, False))
  nested = optix.chain(optix.clip(1.0),
                       optix.chain(optix.trace(0.9), optix.scale_by_learning_rate(0.1)))
  assert fused.plan(nested).target == "optix_fused_momentum"
  for tx in (optix.nadamw(1e-2), optix.chain(optix.scale_by_adam(), optix.clip(1.0),
                                             optix.scale_by_learning_rate(0.1)),
             optix.chain(optix.trace(0.9), optix.add_decayed_weights(0.1),
                         optix.scale_by_learning_rate(0.1))):
    assert fused.plan(tx) is None  # no kernel computes these


def test_each_schedule_is_evaluated_at_its_own_links_count():
  """The learning-rate and decay schedules see their own links' counts, as the
  chain evaluates them, even when these differ from the moment link's count (a
  state assembled from several sources, or links resumed separately)."""
  params = {"w": jnp.linspace(-1.0, 1.0, 64)}
  tx = optix.adamw(optix.linear_schedule(1e-2, 1e-3, 10),
                   weight_decay=optix.linear_schedule(0.5, 0.0, 10))
  state = tx.init(params)
  state = (state[0], state[1]._replace(count=jnp.int32(7)), state[2]._replace(count=jnp.int32(4)))
  g = _grads(params, 0)
  kernel = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True))(params, state, g)
  u, s = jax.jit(tx.update)(g, state, params)
  _assert_close(kernel, (optax.apply_updates(params, u), s), rtol=2e-7, atol=0)


def test_packed_accepts_described_elementwise_chains_without_a_probe(monkeypatch):
  """A chain whose links all say they are elementwise is accepted from its
  description; any other link is probed (here: clipping)."""
  from optix import packing
  probed = []
  monkeypatch.setattr(packing, "_check_elementwise", lambda tx, layout: probed.append(tx))
  params = make_params()
  for tx in (optix.adamw(1e-2, weight_decay=0.1, mask=optix.packed_mask(optix.matrices_only)),
             optix.sgd(0.1), optix.rmsprop(0.1, momentum=0.9), optix.lion(1e-3)):
    optix.packed(tx, groups=optix.matrices_only).init(params)
  assert not probed
  optix.packed(optix.chain(optix.clip(1.0), optix.adam(1e-2))).init(params)
  optix.packed(optix.adamw(1e-2, weight_decay=0.1, mask=optix.matrices_only)).init(params)
  assert len(probed) == 2
