"""FSDP owner computes: with params sharded over the data axis of an Explicit mesh, each device
orthogonalizes (Muon) or preconditions (Shampoo, SOAP: their blocks, statistics, roots and bases)
the matrices it owns instead of gathering every gradient. Checked on the compiled step: the
collective bytes per device, the temporaries per device, and the numbers; and the same under
``optix.shard_state``, which keeps the statistics split where the optimizer put them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from optax.contrib import MuonDimensionNumbers

import optix
from optix._sharding import collective_bytes

N_PARAMS, SIDE = 8, 512  # 8 × (512×512), sharded by rows


def _params(n=N_PARAMS, shape=(SIDE, SIDE)):
  return {f"w{i}": jax.random.normal(jax.random.key(i), shape) for i in range(n)}


def _compiled(tx, params, devices):
  """The compiled update on a (devices,) Explicit mesh, params and grads sharded by rows."""
  mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])
  with jax.set_mesh(mesh):
    p = jax.device_put(params, NamedSharding(mesh, P("data", None)))
    state = jax.jit(tx.init)(p)
    return jax.jit(tx.update).lower(p, state, p).compile()


def test_collective_bytes_counts_outputs():
  hlo = ("  %a = f32[2,4]{1,0} all-gather(f32[1,4]{1,0} %x), dimensions={0}\n"
         "  %b = (f32[1,8]{1,0}, bf16[3]{0}) all-to-all(%y, %z)\n"
         "  %c = f32[9]{0} add(%u, %v)\n")
  assert collective_bytes(hlo) == 2 * 4 * 4 + 8 * 4 + 3 * 2


@pytest.mark.parametrize("devices", [
    (1, 8), pytest.param((1, 2, 4, 8), marks=pytest.mark.slow)], ids=["1-8", "1-2-4-8"])
@pytest.mark.parametrize("name,make", [
    ("muon", lambda: optix.scale_by_muon()),
    # refresh every step: the step that computes the roots / bases is the one measured
    ("shampoo", lambda: optix.scale_by_shampoo(preconditioning_interval=1,
                                               start_preconditioning_step=0)),
    ("soap", lambda: optix.scale_by_soap(preconditioning_interval=1))])
def test_fsdp_step_moves_only_owned_matrices(name, make, devices):
  """8 × (512×512) params sharded by rows over 8 devices: collectives per device <= 0.4× the
  param bytes (gathering every gradient: >= 1×), temporaries per device shrinking with N."""
  params = _params()
  param_bytes = N_PARAMS * SIDE * SIDE * 4
  temps = []
  for n in devices:
    compiled = _compiled(make(), params, n)
    temps.append(compiled.memory_analysis().temp_size_in_bytes)
    if n == 8:
      traffic = collective_bytes(compiled.as_text())
      assert traffic <= 0.4 * param_bytes, (name, traffic / param_bytes)
  shrink = [a / b for a, b in zip(temps, temps[1:])]
  assert all(r >= 0.75 * m / n for r, n, m in zip(shrink, devices, devices[1:])), (name, temps)


LIGHT = {"a0": (32, 16), "a1": (32, 16), "a2": (32, 16), "r": (8, 12)}
MIXED = {"a0": (64, 32), "a1": (64, 32), "a2": (64, 32), "t": (16, 48), "s": (8, 24, 16),
         "r": (12, 20)}
# "s": 8 stacked (24, 16) layers.
_MIXED_DIMS = {k: MuonDimensionNumbers(1, 2) if k == "s" else MuonDimensionNumbers() for k in MIXED}
# Shampoo, SOAP: one stack of eight (16, 8) blocks, owned ("r", replicated, among them) and one
# of two (8, 32) padded blocks (not a multiple of the device count: gathered).
KRON = {**{f"a{i}": (16, 8) for i in range(7)}, "r": (16, 8), "b0": (8, 24), "b1": (8, 24)}


def _two_steps(tx, params, put=lambda t: t):
  """Two jitted steps on fixed random gradients, params and gradients placed by ``put``: the
  params, the updates and the state."""
  grads = [optix.testing.random_like(jax.random.key(10 + t), params) for t in range(2)]
  p, outs = put(params), []
  state, step = jax.jit(tx.init)(p), jax.jit(lambda g, s, p: tx.update(g, s, p))
  for g in grads:
    u, state = step(put(g), state, p)
    p = optix.apply_updates(p, u)
    outs.append(u)
  return p, outs, state


@pytest.mark.parametrize("name,make,shapes", [
    ("muon", lambda: optix.scale_by_muon(), LIGHT),
    pytest.param("muon", lambda: optix.scale_by_muon(weight_dimension_numbers=_MIXED_DIMS),
                 MIXED, marks=pytest.mark.slow),
    pytest.param("muon_alias", lambda: optix.muon(0.02, adam_learning_rate=1e-3,
                                                  weight_decay=0.1,
                                                  muon_weight_dimension_numbers=_MIXED_DIMS),
                 MIXED,
                 marks=pytest.mark.slow),
    ("shampoo", lambda: optix.scale_by_shampoo(preconditioning_interval=1,
                                               start_preconditioning_step=1), KRON),
    ("soap", lambda: optix.scale_by_soap(preconditioning_interval=1, precondition_1d=True),
     KRON),
    # A traced ridge (inject_hyperparams) reaches the owners' roots as an argument.
    pytest.param("shampoo_inject", lambda: optax.inject_hyperparams(
        optix.shampoo, static_args=("preconditioning_interval", "start_preconditioning_step"))(
            learning_rate=1e-2, ridge_epsilon=1e-5, preconditioning_interval=1,
            start_preconditioning_step=1), KRON, marks=pytest.mark.slow)],
    ids=["muon-light", "muon-mixed", "muon_alias-mixed", "shampoo", "soap", "shampoo_inject"])
def test_fsdp_step_matches_unsharded(name, make, shapes):
  """Leaves sharded by rows (a group not a multiple of the device count: padded; in the mixed
  tree also a transposed view and a stacked-layer leaf) plus a replicated leaf "r": the same
  numbers as the unsharded steps, in the params' layout. Shampoo and SOAP (KRON): the owned
  stack's statistics stay split over the devices."""
  specs = {k: P() if k == "r" else P("data") for k in shapes}
  params = {k: jax.random.normal(jax.random.key(i), s) for i, (k, s) in enumerate(shapes.items())}
  tx = make()
  ref, ref_u, _ = _two_steps(tx, params)
  mesh = jax.make_mesh((8,), ("data",))
  put = lambda t: {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in t.items()}
  with jax.set_mesh(mesh):
    got, got_u, _ = _two_steps(tx, params, put)
  if name in ("shampoo", "soap"):  # the owned group's statistics stay split over the devices
    with jax.set_mesh(mesh):
      state = jax.jit(tx.init)(put(params))
    assert state.stats[0].shape[0] == 8, [s.shape for s in state.stats]
    assert state.stats[0].sharding.spec == P("data", None, None)
  for k in params:
    assert got[k].sharding.is_equivalent_to(NamedSharding(mesh, specs[k]), got[k].ndim), k
    for u, v in zip(got_u, ref_u):
      np.testing.assert_allclose(u[k], v[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _device_bytes(tree):
  """Bytes of ``tree``'s shards on the first device."""
  device = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
             if s.device == device)


@pytest.mark.parametrize("name,make", [
    ("shampoo", lambda: optix.shampoo(1e-2, preconditioning_interval=1,
                                      start_preconditioning_step=1)),
    # SOAP's cell compiles three times as long and checks the same layout rule: make test-all.
    pytest.param("soap", lambda: optix.soap(1e-2, preconditioning_interval=1),
                 marks=pytest.mark.slow)])
def test_shard_state_keeps_owned_statistics_split(name, make):
  """``shard_state`` around Shampoo / SOAP with 8 × (128×128) params sharded by rows: every state
  leaf keeps the layout the optimizer's own init gives it (the statistics, roots and bases split
  over the stack of blocks, ``P('data')``), after init and after every step, and so does
  ``state_shardings``; the compiled step moves and allocates no more than the bare optimizer's,
  the state takes as many bytes per device, and the numbers are the unsharded optimizer's."""
  params = _params(shape=(128, 128))
  grads = [optix.testing.random_like(jax.random.key(20 + t), params) for t in range(3)]
  mesh = jax.make_mesh((8,), ("data",))
  put = lambda t: jax.device_put(t, NamedSharding(mesh, P("data", None)))

  def run(tx, put=lambda t: t):
    p, state, states = put(params), jax.jit(tx.init)(put(params)), []
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    states.append(state)
    for g in grads:
      u, state = step(put(g), state, p)
      p = optix.apply_updates(p, u)
      states.append(state)
    return p, states

  ref, _ = run(make())
  bare, wrapped = make(), optix.shard_state(make(), mesh)
  with jax.set_mesh(mesh):
    _, bare_states = run(bare, put)
    got, got_states = run(wrapped, put)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            put(params))
    restore = optix.state_shardings(wrapped, abstract, mesh)
  specs = lambda state: [x.sharding.spec for x in jax.tree.leaves(state)]
  want = specs(bare_states[0])
  split = [s for x, s in zip(jax.tree.leaves(bare_states[0]), want)
           if x.ndim == 3 and x.shape[0] == N_PARAMS and s == P("data", None, None)]
  assert len(split) >= 2, (name, want)  # the owned statistics the check is about
  for t, state in enumerate(got_states):
    assert specs(state) == want, (name, t)
  assert [s.spec for s in jax.tree.leaves(restore)] == want, name
  assert _device_bytes(got_states[-1]) == _device_bytes(bare_states[-1]), name
  bare_step, wrapped_step = (_compiled(tx, params, 8) for tx in (bare, wrapped))
  assert collective_bytes(wrapped_step.as_text()) <= collective_bytes(bare_step.as_text()), name
  assert (wrapped_step.memory_analysis().temp_size_in_bytes
          <= bare_step.memory_analysis().temp_size_in_bytes), name
  for k in params:
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


# "s": 8 stacked (16, 8) layers sharded on the stacked axis, "u": 8 more sharded on their rows
# (16 rows, not cut or padded): one stack of sixteen (16, 8) blocks, owned. "t": two (32, 8)
# layers sharded on their rows: a stack of two, not a multiple of the devices: gathered.
STACKED = {"s": ((8, 16, 8), P("data")), "u": ((8, 16, 8), P(None, "data")),
           "t": ((2, 32, 8), P(None, "data"))}


@pytest.mark.parametrize("name,make", [
    ("shampoo", lambda: optix.scale_by_shampoo(preconditioning_interval=1,
                                               start_preconditioning_step=1, stacked_axes=1)),
    ("soap", lambda: optix.scale_by_soap(preconditioning_interval=1, stacked_axes=1))])
def test_fsdp_stacked_layers_match_unsharded(name, make):
  """Stacked layers (``stacked_axes=1``) sharded on the stacked axis or on a layer's axis: the
  layers' blocks are owned where their group splits evenly (statistics split over the
  devices), gathered where it does not, and the numbers are the unsharded steps'."""
  params = {k: jax.random.normal(jax.random.key(i), s) for i, (k, (s, _)) in
            enumerate(STACKED.items())}
  tx = make()
  _, ref_u, _ = _two_steps(tx, params)
  mesh = jax.make_mesh((8,), ("data",))
  put = lambda t: {k: jax.device_put(v, NamedSharding(mesh, STACKED[k][1])) for k, v in t.items()}
  with jax.set_mesh(mesh):
    _, got_u, state = _two_steps(tx, params, put)
  assert [s.shape for s in state.stats] == [(16, 16, 16), (16, 8, 8), (2, 32, 32), (2, 8, 8)]
  assert state.stats[0].sharding.spec == P("data", None, None)
  for k in params:
    assert got_u[-1][k].sharding.is_equivalent_to(NamedSharding(mesh, STACKED[k][1]), 3), k
    for u, v in zip(got_u, ref_u):
      np.testing.assert_allclose(u[k], v[k], rtol=1e-5, atol=1e-6, err_msg=k)
