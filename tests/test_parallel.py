"""Distributed optimizer state on 8 simulated CPU devices (optix.parallel).

The grid: meshes (8,), (2, 4), (4, 2) x Auto/Explicit axis types x optimizers,
on a tree with uneven shapes, a scalar and a bf16 leaf. Each case takes a few
jitted steps with ``shard_state`` and checks them against the unsharded
optimizer, checks that the state keeps its type and sharding through init and
update, and that each device holds 1/N of every evenly divisible state leaf.
To keep CI small a covering subset runs by default (each optimizer in both
modes, each mesh x mode pair several times); ``OPTIX_FULL_GRID=1`` runs the
whole product. A new optimizer is one line in ``OPTIMIZERS``.
"""

import contextlib
import importlib
import inspect
import itertools
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optix
from optix import _sharding, parallel
from registry import ENTRIES, params_for

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _partition():
  labels = lambda params: jax.tree.map(lambda p: "adam" if p.ndim >= 2 else "sgd", params)
  return optix.partition({"adam": optix.adam(1e-2), "sgd": optix.sgd(0.05, momentum=0.9)}, labels)


OPTIMIZERS = {
    "adam": lambda: optix.adam(1e-2),
    "clip_adamw": lambda: optix.chain(optix.clip_by_global_norm(0.5),
                                      optix.adamw(1e-2, weight_decay=0.1)),
    "sgd_momentum": lambda: optix.sgd(0.05, momentum=0.9),
    "lion": lambda: optix.lion(1e-3, weight_decay=0.1),
    "partition": _partition,
    # static_args: inject_hyperparams takes the callable dtype default for a schedule.
    "inject_hyperparams": lambda: optix.inject_hyperparams(
        optix.adamw, static_args=("state_dtype",))(learning_rate=1e-2),
    "adafactor": lambda: optix.adafactor(1e-2, min_dim_size_to_factor=4),
    "muon": lambda: optix.muon(1e-2, adam_learning_rate=1e-3),
    # Newton–Schulz split over the data axis (optix.map_stacked); reference unsplit.
    "muon_split": lambda mesh=None: optix.muon(1e-2, adam_learning_rate=1e-3, mesh=mesh),
    "shampoo": lambda: optix.shampoo(1e-2, preconditioning_interval=2,
                                     start_preconditioning_step=2),
    "accumulation": lambda: optix.multi_steps(optix.adam(1e-2), every_k=2),
    # Not soap: with rank-deficient statistics (few steps, m > n) its eigenbasis is
    # ill-conditioned: a 1e-7 relative change of the gradients moves the params by ~0.06.
}
# Known failures in the transforms themselves (strict: remove the line once fixed).
KNOWN = {}
MESHES = {"8": (8,), "2x4": (2, 4), "4x2": (4, 2)}
MODES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}

if os.environ.get("OPTIX_FULL_GRID"):
  _CASES = list(itertools.product(OPTIMIZERS, MESHES, MODES))
else:  # each optimizer in both modes; meshes rotate so every mesh x mode pair recurs
  _CASES = [(opt, list(MESHES)[(i + j) % len(MESHES)], mode)
            for i, opt in enumerate(OPTIMIZERS) for j, mode in enumerate(MODES)]
GRID = [pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=KNOWN[c[0], c[2]]))
        if (c[0], c[2]) in KNOWN else c for c in _CASES]

SHAPES = {"w": (16, 12), "u": (7, 5), "b": (12,), "h": (24,), "conv": (3, 3, 4, 8), "s": ()}
DTYPES = {"h": jnp.bfloat16}


def _mesh(shape, mode):
  names = ("data", "model")[:len(shape)]
  return jax.make_mesh(shape, names, axis_types=(MODES[mode],) * len(shape))


def _param_specs(mesh):
  if "model" not in mesh.axis_names:
    return {k: P() for k in SHAPES}
  return {"w": P(None, "model"), "u": P(), "b": P("model"), "h": P(),
          "conv": P(None, None, None, "model"), "s": P()}


def _params(seed=0):
  keys = jax.random.split(jax.random.key(seed), len(SHAPES))
  return {k: jax.random.normal(key, s, jnp.float32).astype(DTYPES.get(k, jnp.float32))
          for key, (k, s) in zip(keys, SHAPES.items())}


def _put(tree, mesh, specs):
  return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in tree.items()}


def _stepper(tx):
  @jax.jit
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optix.apply_updates(p, u), s
  return step


def _assert_close(a, b):
  for k in a:
    tol = 2e-2 if a[k].dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(a[k], np.float32), np.asarray(b[k], np.float32),
                               rtol=tol, atol=tol, err_msg=k)


def _types(tree):
  return jax.tree.map(jax.typeof, tree)


@pytest.mark.parametrize("opt,mesh_name,mode", GRID)
def test_sharded_steps_match_unsharded(opt, mesh_name, mode):
  mesh = _mesh(MESHES[mesh_name], mode)
  specs = _param_specs(mesh)
  params = _params()
  grads_seq = [optix.testing.random_like(k, params) for k in jax.random.split(jax.random.key(1), 3)]

  ref_tx = OPTIMIZERS[opt]()
  ref_p, ref_s, ref_step = params, ref_tx.init(params), _stepper(ref_tx)
  for g in grads_seq:
    ref_p, ref_s = ref_step(ref_p, ref_s, g)

  # On an Auto mesh the params' layout is invisible while tracing: say it.
  make = OPTIMIZERS[opt]
  inner = make(mesh) if "mesh" in inspect.signature(make).parameters else make()
  tx = parallel.shard_state(inner, mesh,
                            param_specs=specs if mode == "auto" else None)
  ctx = jax.set_mesh(mesh) if mode == "explicit" else contextlib.nullcontext()
  with ctx:
    p = _put(params, mesh, specs)
    expected = parallel.state_shardings(tx, p, mesh, param_specs=specs)
    state = jax.jit(tx.init)(p)
    init_types = _types(state)
    step = _stepper(tx)
    for g in grads_seq:
      p, state = step(p, state, _put(g, mesh, specs))
      assert _types(state) == init_types
      jax.tree.map(lambda x, s: _assert_sharding(x, s), state, expected)
  _assert_close(p, ref_p)
  for k in p:  # params keep their own layout
    assert p[k].sharding.is_equivalent_to(NamedSharding(mesh, specs[k]), p[k].ndim), k
  _assert_one_over_n(state, expected, mesh, explicit=mode == "explicit")


def _assert_sharding(x, sharding):
  assert x.sharding.is_equivalent_to(sharding, x.ndim), (x.sharding, sharding)


def _assert_one_over_n(state, expected, mesh, explicit):
  """Every device holds exactly its 1/(product of the spec's mesh axes) block, and
  every leaf with a dimension divisible by the data axis is split over it (on an
  Explicit mesh: every leaf shaped like its param)."""
  n_data = mesh.shape["data"]
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  for (path, x), sharding in zip(leaves, jax.tree.leaves(expected)):
    axes = [a for e in sharding.spec for a in _sharding.axes_of_entry(e)]
    parts = math.prod(mesh.shape[a] for a in axes)
    assert len(x.addressable_shards) == mesh.size
    for shard in x.addressable_shards:
      assert shard.data.size * parts == x.size, (x.shape, sharding.spec)
    name = getattr(path[-1], "key", None) if path else None
    like_param = SHAPES.get(name) == x.shape
    divisible = any(d % n_data == 0 and d > 0 for d in x.shape)
    if divisible and (like_param or not explicit) and "data" not in axes and "model" not in axes:
      raise AssertionError(f"state leaf {jax.tree_util.keystr(path)} {x.shape} not split "
                           f"over data: {sharding.spec}")


def test_state_bytes_per_device_is_one_nth():
  mesh = _mesh((8,), "auto")
  params = {"w": jnp.ones((64, 32)), "v": jnp.ones((128,)), "c": jnp.ones((3, 3, 8, 16))}
  tx = parallel.shard_state(optix.adamw(1e-3), mesh)
  state = tx.init(params)
  arrays = [x for x in jax.tree.leaves(state) if x.ndim]
  total = sum(x.nbytes for x in arrays)
  per_device = sum(x.addressable_shards[0].data.nbytes for x in arrays)
  assert per_device * 8 == total
  assert [x.sharding.spec for x in arrays] == 2 * [P(None, None, "data", None), P("data"),
                                                   P("data", None)]


def test_add_axis_rule():
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  assert parallel.add_axis(P(), (5, 4), mesh) == P(None, "data")      # first divisible dim
  assert parallel.add_axis(P(), (7, 5), mesh) == P(None, None)        # indivisible: replicated
  assert parallel.add_axis(P(), (), mesh) == P()                      # scalar
  assert parallel.add_axis(P("data"), (8,), mesh) == P("data")        # already uses it (FSDP)
  assert parallel.add_axis(P(None, "model"), (3, 8), mesh) == P(None, ("model", "data"))
  assert parallel.add_axis(P(None, "model"), (3, 4), mesh) == P(None, "model")
  assert parallel.add_axis(P(), (16,), mesh, axis=("data", "model")) == P(("data", "model"))
  with pytest.raises(ValueError, match="axis"):
    parallel.shard_state(optix.adam(1e-3), mesh, axis="batch")


def test_state_shardings_restore_checkpoint_sharded(tmp_path):
  import orbax.checkpoint as ocp
  mesh = _mesh((8,), "auto")
  params = {"w": jnp.ones((16, 4)), "b": jnp.ones((5,))}
  tx = parallel.shard_state(optix.adamw(1e-2), mesh)
  state = tx.init(params)
  shardings = parallel.state_shardings(optix.adamw(1e-2), params, mesh)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "s", state)
    ckpt.wait_until_finished()
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          state, shardings)
    restored = ckpt.restore(tmp_path / "s", target)
  for x, s in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
    _assert_sharding(x, s)
  assert restored[0].mu["w"].addressable_shards[0].data.shape == (2, 4)


def test_composes_inside_chain_and_jit_out_shardings():
  mesh = _mesh((8,), "auto")
  params = _params()
  inner = optix.adam(1e-2)
  tx = optix.chain(optix.clip_by_global_norm(1.0), parallel.shard_state(inner, mesh))
  shardings = parallel.state_shardings(tx, params, mesh)
  state = jax.jit(tx.init, out_shardings=shardings)(params)
  assert state[1][0].mu["w"].sharding.spec == P("data", None)
  ref = optix.chain(optix.clip_by_global_norm(1.0), inner)
  g = optix.testing.random_like(jax.random.key(3), params)
  p1, _ = _stepper(tx)(params, state, g)
  p2, _ = _stepper(ref)(params, ref.init(params), g)
  _assert_close(p1, p2)


@pytest.mark.parametrize("mode", list(MODES))
def test_map_stacked_matches_per_matrix(mode):
  mesh = _mesh((2, 4), mode)
  keys = jax.random.split(jax.random.key(0), 11)
  mats = [jax.random.normal(k, (4, 4)) for k in keys[:5]] + \
         [jax.random.normal(k, (3, 3)) for k in keys[5:]]  # 5 and 6 matrices: padded to 8
  mats = [m @ m.T + jnp.eye(m.shape[0]) for m in mats]      # SPD: eigh and inverse are defined
  # Auto: inverses over all 8 devices; Explicit: eigendecompositions over the data axis.
  fn, axis = (jnp.linalg.inv, ("data", "model")) if mode == "auto" else (jnp.linalg.eigh, "data")
  ctx = jax.set_mesh(mesh) if mode == "explicit" else contextlib.nullcontext()
  with ctx:
    out = jax.jit(lambda ms: parallel.map_stacked(fn, ms, mesh, axis=axis))(mats)
  for m, r in zip(mats, out):
    m = np.asarray(m)
    if mode == "auto":
      np.testing.assert_allclose(r, np.linalg.inv(m), rtol=1e-4, atol=1e-4)
    else:
      w, v = r
      np.testing.assert_allclose(w, np.linalg.eigvalsh(m), rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose((v * w) @ v.T, m, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("check_vma", [True, False])
def test_global_norm_axis_name_under_shard_map(check_vma):
  mesh = _mesh((8,), "explicit")
  tree = {"split": jax.random.normal(jax.random.key(0), (16, 3)),
          "also_split": jax.random.normal(jax.random.key(1), (8,))}
  in_specs = {"split": P("data"), "also_split": P("data")}
  if check_vma:  # a replicated leaf: typed invariant, counted once
    tree["replicated"] = jnp.arange(5.0)
    in_specs["replicated"] = P()

  def body(t):
    clipped, state = optix.clip_by_global_norm(1.0, axis_name="data").update(
        t, optix.clip_by_global_norm(1.0).init(t))
    return optix.global_norm(t, axis_name="data"), state.norm, clipped

  with jax.set_mesh(mesh):
    norm, state_norm, clipped = jax.jit(jax.shard_map(
        body, mesh=mesh, in_specs=(in_specs,), out_specs=(P(), P(), in_specs),
        check_vma=check_vma))(_put(tree, mesh, in_specs))
  ref_clipped, ref_state = optix.clip_by_global_norm(1.0).update(tree, None)
  np.testing.assert_allclose(norm, optix.global_norm(tree), rtol=1e-6)
  np.testing.assert_allclose(state_norm, ref_state.norm, rtol=1e-6)
  _assert_close(clipped, ref_clipped)


def test_global_norm_axis_name_under_pmap():
  x = jax.random.normal(jax.random.key(0), (8, 6))  # row i lives on device i
  norms = jax.pmap(lambda r: optix.global_norm({"r": r}, axis_name="d"), axis_name="d")(x)
  np.testing.assert_allclose(norms, np.full(8, np.linalg.norm(np.asarray(x))), rtol=1e-6)


def _pmap_entries():
  """Every registered optimizer with OPTIX_FULL_GRID=1; by default (CI cost) one
  first-order one and the first entry of each area's tests/registry_<area>.py."""
  entries = [e for e in ENTRIES if "test_pmap_data_parallel" not in e.skip]
  if os.environ.get("OPTIX_FULL_GRID"):
    return entries
  names = {"clip_by_global_norm"}
  for path in sorted(pathlib.Path(__file__).parent.glob("registry_*.py")):
    area = importlib.import_module(path.stem).ENTRIES
    names |= {area[0].name} if area else set()
  return [e for e in entries if e.name in names]


PMAP = _pmap_entries()


@pytest.mark.parametrize("entry", PMAP, ids=[e.name for e in PMAP])
def test_pmap_data_parallel(entry):
  """The classic pmap loop (pmean the gradients over ``axis_name``) equals one
  device stepping with the mean gradient, for every registered optimizer."""
  n = jax.device_count()
  params = params_for(entry)
  local = [optix.testing.random_like(k, jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape),
                                                     params))
           for k in jax.random.split(jax.random.key(5), 2)]
  tx = entry.make()

  def step(p, s, g):
    g = jax.lax.pmean(g, "batch")
    u, s = tx.update(g, s, p, **entry.extra_args)
    return optix.apply_updates(p, u), s

  p_step = jax.pmap(step, axis_name="batch")
  p = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), params)
  s = jax.pmap(tx.init)(p)
  ref_p, ref_s = params, tx.init(params)
  ref_step = jax.jit(lambda p, s, g: _ref(tx, entry, p, s, g))
  for g in local:
    p, s = p_step(p, s, g)
    ref_p, ref_s = ref_step(ref_p, ref_s, jax.tree.map(lambda x: x.mean(0), g))
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p)):
    for i in range(n):
      np.testing.assert_allclose(a[i], b, rtol=max(entry.tol, 1e-4), atol=1e-5)


def _ref(tx, entry, p, s, g):
  u, s = tx.update(g, s, p, **entry.extra_args)
  return optix.apply_updates(p, u), s


def test_data_parallel_example():
  proc = subprocess.run([sys.executable, str(ROOT / "examples" / "data_parallel.py"),
                         "--steps=20"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "per-device optimizer state" in proc.stdout
  assert "accuracy" in proc.stdout


# -- optix.inject_hyperparams over every registered optimizer that takes a learning_rate --

def _factories():
  """Public optix factories whose first argument is ``learning_rate``."""
  out = {}
  for name in dir(optix):
    f = getattr(optix, name)
    if callable(f) and not isinstance(f, type):
      try:
        first = next(iter(inspect.signature(f).parameters), None)
      except (TypeError, ValueError):
        continue
      if first == "learning_rate":
        out[name] = f
  return out


def _recorded_call(entry, monkeypatch):
  """(factory, BoundArguments) of the factory call whose result *is* ``entry.make()``,
  or None when the entry wraps or combines an optimizer (the learning rate is
  then inside a combinator: inject the inner factory there)."""
  calls = []
  for name, f in _factories().items():
    def recorder(*args, _f=f, **kwargs):
      tx = _f(*args, **kwargs)
      calls.append((tx, _f, inspect.signature(_f).bind(*args, **kwargs)))
      return tx
    monkeypatch.setattr(optix, name, recorder)
  made = entry.make()
  monkeypatch.undo()
  for _, _, bound in calls:
    bound.apply_defaults()
  hits = [(f, b) for tx, f, b in calls if tx is made]
  return hits[0] if hits else None


# Arguments the test must keep static (a finding, not a wish): kronecker.py picks
# a running sum over an EMA with a Python ``beta == 1``, and SOAP's statistics
# rate defaults to ``b2``, so its b2 cannot be traced.
INJECT_STATIC = {"soap": ("b2",)}


def _inject_entries():
  """Every registered optimizer with OPTIX_FULL_GRID=1; by default (CI cost) a
  few that cover the wrapper's rules: dtype defaults (adamw), int and mask
  arguments (adafactor, muon). Shampoo's static beta2 and SOAP's b2 (13 s of
  compiles here) run in the full grid."""
  if os.environ.get("OPTIX_FULL_GRID"):
    return list(ENTRIES)
  return [e for e in ENTRIES if e.name in {"adamw", "adafactor", "muon"}]


INJECT = _inject_entries()


@pytest.mark.parametrize("entry", INJECT, ids=[e.name for e in INJECT])
def test_inject_hyperparams_learning_rate(entry, monkeypatch):
  """``optix.inject_hyperparams(f)(learning_rate=...)`` for the registry's own
  call of ``f``: a constant schedule gives the plain optimizer's steps, the lr is
  in the state, and changing it there changes the step."""
  hit = _recorded_call(entry, monkeypatch)
  if hit is None:
    pytest.skip("not a direct call of a factory with learning_rate (a combinator or "
                "wrapper around one, or no learning rate)")
  factory, bound = hit
  lr = bound.arguments["learning_rate"]
  if lr is None:
    pytest.skip("no learning rate (a line search or Adafactor's relative step sets the step)")
  if callable(lr):
    pytest.skip("the registry passes a schedule already")
  params = params_for(entry)
  grads = [optix.testing.random_like(k, params) for k in jax.random.split(jax.random.key(4), 2)]

  def build(learning_rate):
    arguments = dict(bound.arguments, learning_rate=learning_rate)
    static = INJECT_STATIC.get(factory.__name__, ())
    return optix.inject_hyperparams(factory, static_args=static)(**arguments)

  plain, injected = entry.make(), build(lambda count: lr)
  step = lambda tx: jax.jit(lambda p, s, g: _ref(tx, entry, p, s, g))
  p1, s1, p2, s2 = params, plain.init(params), params, injected.init(params)
  for g in grads:
    p1, s1 = step(plain)(p1, s1, g)
    p2, s2 = step(injected)(p2, s2, g)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):  # traced hyperparams fuse differently
    np.testing.assert_allclose(a, b, rtol=max(entry.tol, 1e-5), atol=1e-5)
  assert jax.tree.map(lambda x: x.dtype, s2.inner_state) == jax.tree.map(lambda x: x.dtype, s1)

  # A numeric lr lives in state.hyperparams: doubling it there changes the step.
  numeric = build(float(lr))
  state = numeric.init(params)
  update = jax.jit(lambda g, s, p: numeric.update(g, s, p, **entry.extra_args))
  u1, _ = update(grads[0], state, params)
  state.hyperparams["learning_rate"] = 2 * state.hyperparams["learning_rate"]
  u2, _ = update(grads[0], state, params)
  diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
             for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)))
  assert diff > 0, "the injected learning rate does not reach the step"


def test_optax_inject_hyperparams_injects_no_dtype():
  """optax's inject_hyperparams injects every callable or numeric default: optix's dtype
  defaults are None (the policy), so only real hyperparameters are injected. optax casts
  injected values to the params' dtype (b2 = 0.999 rounds to 1.0 in bf16, which optix
  rejects by name); ``hyperparam_dtype=jnp.float32`` keeps them exact."""
  params = {"w": jnp.ones(3, jnp.bfloat16)}
  theirs = optax.inject_hyperparams(optix.adam)(learning_rate=0.1)
  assert "state_dtype" not in theirs.init({"w": jnp.ones(3)}).hyperparams
  with pytest.raises(ValueError, match="b2"):
    theirs.init(params)
  exact = optax.inject_hyperparams(optix.adam, hyperparam_dtype=jnp.float32)(learning_rate=0.1)
  assert exact.init(params).inner_state[0].mu["w"].dtype == jnp.float32
  good = optix.inject_hyperparams(optix.adam)(learning_rate=0.1)
  state = good.init(params)
  assert "state_dtype" not in state.hyperparams
  assert state.inner_state[0].mu["w"].dtype == jnp.float32   # fp32 moments for bf16 params
  u, _ = jax.jit(good.update)(params, state, params)
  assert u["w"].dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(u["w"])))
  with pytest.raises(ValueError, match="static_args"):
    optix.inject_hyperparams(optix.adam, static_args=("nope",))


@pytest.mark.parametrize("check_vma", [True, False])
def test_monitor_and_spike_guard_norms_under_shard_map(check_vma):
  """With ``axis_name`` the monitor's whole-tree and per-leaf norms (and the
  spike guard's norm and skip decision) inside shard_map equal the unsharded ones."""
  mesh = _mesh((8,), "explicit")
  params = {"w": jax.random.normal(jax.random.key(0), (16, 3)),
            "v": jax.random.normal(jax.random.key(1), (8,))}
  specs = {"w": P("data"), "v": P("data")}
  grads = [optix.testing.random_like(k, params) for k in jax.random.split(jax.random.key(2), 3)]
  grads[2] = jax.tree.map(lambda g: 100 * g, grads[2])  # a spike after 2 warm-up steps

  def run(p, gs, axis_name=None):
    mon = optix.monitor(optix.sgd(0.1), axis_name=axis_name)
    guard = optix.spike_guard(optix.sgd(0.1), warmup_steps=2, axis_name=axis_name)
    ms, gst, outs = mon.init(p), guard.init(p), []
    for g in gs:
      _, ms = mon.update(g, ms, p)
      u, gst = guard.update(g, gst, p)
      stats = (optix.monitor_stats(ms), ms.layer_grad_norms, ms.layer_update_ratios,
               gst.last_norm, gst.spike_count)
      outs.append((stats, u))
    return outs

  ref = run(params, grads)
  out_specs = [(jax.tree.map(lambda _: P(), stats), specs) for stats, _ in ref]
  with jax.set_mesh(mesh):
    sharded = jax.jit(jax.shard_map(
        lambda p, gs: run(p, gs, "data"), mesh=mesh, in_specs=(specs, [specs] * 3),
        out_specs=out_specs, check_vma=check_vma))(_put(params, mesh, specs),
                                                    [_put(g, mesh, specs) for g in grads])
  for (got, got_u), (want, want_u) in zip(sharded, ref):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5)
    _assert_close(got_u, want_u)
  assert [int(stats[4]) for stats, _ in ref] == [0, 0, 1]  # the third step is skipped
  assert float(ref[2][0][0]["grad_norm"]) > 10 * float(ref[1][0][0]["grad_norm"])
