"""The packed multi-tensor engine (optix.packed, optix.pack) and train_step."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from registry import make_params


def _tree(dtype=jnp.float32):
  p = make_params(0, dtype)
  p["heads"] = [jnp.full((3, 4), 0.1 * i, dtype) for i in range(5)]
  p["big"] = jnp.linspace(-1.0, 1.0, 200).reshape(10, 20).astype(dtype)
  p["half"] = jnp.arange(7, dtype=jnp.bfloat16)
  return p


def _run(tx, params, grads_seq, packed_params=False, groups=None):
  p = optix.pack(params, max_leaf_size=100, groups=groups) if packed_params else params
  state = tx.init(p)
  step = jax.jit(tx.update)
  out = []
  for g in grads_seq:
    g = p.layout.pack(g) if packed_params else g
    updates, state = step(g, state, p)
    p = optix.apply_updates(p, updates)
    out.append(optix.unpack(p) if packed_params else p)
  return out


def _grads(params, n=5):
  return [optix.testing.random_like(k, params) for k in jax.random.split(jax.random.key(7), n)]


def test_pack_unpack_round_trip_groups_dtypes_and_large_leaves():
  params = _tree()
  layout = optix.layout_of(params, max_leaf_size=100, groups=optix.matrices_only)
  # (float32, matrix), (float32, not matrix), (bfloat16, not matrix); "big" has 200 > 100.
  assert [(d, g) for d, g, _ in layout.buffers] == [
      ("float32", "True"), ("float32", "False"), ("bfloat16", "False")]
  assert layout.num_large == 1
  packed = layout.pack(params)
  assert len(jax.tree.leaves(packed)) == 4
  assert sum(b.size for b in packed.children[:3]) + 200 == sum(
      x.size for x in jax.tree.leaves(params))
  back = optix.unpack(packed)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  jax.tree.map(lambda a, b: (a.dtype == b.dtype) or pytest.fail("dtype"), back, params)


def test_grad_through_unpack_is_packed_and_one_concatenate_per_buffer():
  params = {f"w{i}": jnp.full((4,), float(i)) for i in range(50)}
  packed = optix.pack(params)
  loss = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(optix.unpack(p)))
  grads = jax.grad(loss)(packed)
  assert isinstance(grads, optix.Packed) and grads.layout == packed.layout
  np.testing.assert_array_equal(grads.children[0], 2 * packed.children[0])
  jaxpr = str(jax.make_jaxpr(jax.grad(loss))(packed))
  assert jaxpr.count("concatenate") == 1 and " pad" not in jaxpr


_mask = optix.matrices_only
EXACT = {  # elementwise chains: packed == unpacked, bit for bit
    "sgd": lambda: optix.sgd(0.1),
    "sgd_nesterov": lambda: optix.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: optix.adagrad(0.1),
    "rmsprop_centered": lambda: optix.rmsprop(0.01, momentum=0.9, centered=True),
    "adam": lambda: optix.adam(1e-2),
    "nadam": lambda: optix.adam(1e-2, nesterov=True),
    "adamw_masked": lambda: optix.adamw(1e-2, weight_decay=0.1, mask=optix.packed_mask(_mask)),
    "adamw_schedule": lambda: optix.adamw(optix.cosine_decay_schedule(1e-2, 10), weight_decay=0.1),
    "lion": lambda: optix.lion(1e-2, weight_decay=0.1),
    "clip_value_adam": lambda: optix.chain(optix.clip(0.5), optix.adam(1e-2)),
    "decay_masked_sgd": lambda: optix.chain(
        optix.add_decayed_weights(0.1, mask=optix.packed_mask(_mask)), optix.sgd(0.1)),
}


def _assert_equal(plain, ours):
  for a, b in zip(plain, ours):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("name", EXACT)
def test_packed_equals_unpacked_bit_for_bit(name):
  params = _tree()
  grads = _grads(params, 3)
  plain = _run(EXACT[name](), params, grads)
  groups = _mask if "masked" in name else None
  _assert_equal(plain, _run(optix.packed(EXACT[name](), groups=groups), params, grads))
  _assert_equal(plain, _run(optix.packed(EXACT[name](), groups=groups, max_leaf_size=100),
                            params, grads, packed_params=True, groups=groups))


def test_one_leaf_and_two_leaf_trees_are_bit_exact():
  # XLA rewrites x / broadcast(c) as x * broadcast(1 / c) only when the scalar c
  # has one user, so a tree of several leaves is never packed into one array.
  for params in ({"w": jnp.linspace(-1.0, 1.0, 10)},
                 {"a": jnp.linspace(-1.0, 1.0, 10), "b": jnp.linspace(0.5, 2.0, 6)}):
    assert len(optix.pack(params).children) == len(params)
    grads = _grads(params, 3)
    _assert_equal(_run(optix.adam(1e-2), params, grads),
                  _run(optix.packed(optix.adam(1e-2)), params, grads))


def test_one_buffer_for_several_leaves_would_change_the_last_bit():
  """Why layout_of never makes a single array of several leaves: forced into one
  buffer, Adam's packed step differs in the last bit from the chain's on some
  elements (its bias corrections have one user instead of several). When this
  fails, XLA has stopped treating the two differently and the rule can go."""
  rng = np.random.default_rng(0)
  params = {"a": jnp.asarray(rng.standard_normal(1000), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(37), jnp.float32)}
  layout = optix.layout_of(params)
  assert len(layout.buffers) == 2
  a, b = layout.slots
  one = dataclasses.replace(layout, slots=(a, dataclasses.replace(b, buffer=0, offset=1000)),
                            buffers=(("float32", "None", 1037),))
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
           for _ in range(4)]
  tx = optix.adam(1e-2)
  step = jax.jit(_step_of(tx))

  def run(pack):
    p = one.pack(params) if pack else params
    s = tx.init(p)
    for g in grads:
      p, s = step(p, s, one.pack(g) if pack else g)
    return one.unpack(p) if pack else p

  plain, packed = run(False), run(True)
  assert any(np.any(np.asarray(plain[k]) != np.asarray(packed[k])) for k in plain)


def test_global_norm_clipping_matches_to_rounding_of_the_norm():
  # The only non-exact case: the global norm sums squares over one buffer in
  # another order than leaf by leaf (floating-point addition is not associative).
  params = {f"w{i}": jnp.linspace(-1.0, 1.0, 37) * (i + 1) for i in range(9)}
  grads = _grads(params, 3)
  make = lambda: optix.chain(optix.clip_by_global_norm(0.5), optix.adam(1e-2))
  plain = _run(make(), params, grads)
  for a, b in zip(plain, _run(optix.packed(make()), params, grads)):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def test_state_is_packed_fp32():
  params = _tree(jnp.bfloat16)
  state = optix.packed(optix.adam(1e-3), max_leaf_size=100).init(params)
  mu = state.inner[0].mu
  assert isinstance(mu, optix.Packed) and len(mu.children) == 2  # one buffer + "big"
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mu))


@pytest.mark.parametrize("tx, why", [
    (lambda: optax.adafactor(1e-2, min_dim_size_to_factor=2), "not elementwise"),
    (lambda: optax.contrib.muon(1e-2), "not elementwise"),
    (lambda: optix.adaptive_grad_clip(0.1), "not elementwise"),
    (lambda: optix.adam8bit(1e-2, min_8bit_size=64, block_size=16), "not elementwise"),
    (lambda: optix.adamw(1e-2, weight_decay=0.1, mask=optix.matrices_only), "packed_mask"),
], ids=["adafactor", "muon", "unitwise_clip", "adam8bit", "unwrapped_mask"])
def test_shape_dependent_chains_are_refused(tx, why):
  with pytest.raises(ValueError, match=why):
    optix.packed(tx()).init(_tree())


def test_packed_mask_refuses_a_buffer_mixing_masked_and_unmasked_leaves():
  tx = optix.packed(optix.adamw(1e-2, weight_decay=0.1,
                                mask=optix.packed_mask(optix.matrices_only)), check=False)
  with pytest.raises(ValueError, match="groups="):
    tx.init(_tree())


def test_train_step_donates_and_descends_with_plain_and_packed_params():
  x = jax.random.normal(jax.random.key(0), (64, 8))
  y = x @ jnp.arange(8.0) + 1.0

  def loss_fn(p, x, y):
    pred = x @ p["w"] + p["b"]
    return jnp.mean((pred - y) ** 2), pred

  for packed in (False, True):
    params = {"w": jnp.zeros(8), "b": jnp.zeros(())}
    params = optix.pack(params) if packed else params
    tx = optix.packed(optix.adam(0.1))
    step = optix.train_step(loss_fn, tx, has_aux=True)
    state = tx.init(params)
    old = jax.tree.leaves(params) + jax.tree.leaves(state)
    params, state, loss0, _ = step(params, state, x, y)
    assert all(a.is_deleted() for a in old)  # params and state donated
    for _ in range(200):
      params, state, loss, pred = step(params, state, x, y)
    assert pred.shape == (64,) and float(loss) < 1e-2 * float(loss0)
    assert isinstance(params, optix.Packed) == packed


def _step_of(tx):
  """One donated-friendly optimizer step ``(params, state, grads) -> (params, state)``."""
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optix.apply_updates(p, u), s
  return step


def _hlo(step, args, **jit_kwargs):
  return jax.jit(step, donate_argnums=(0, 1), **jit_kwargs).lower(*args).compile().as_text()


def _fusions(step, *args):
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = \S+ fusion\(", _hlo(step, args), flags=re.M))


def test_fusion_counts_of_the_packed_adamw_step():
  """Kernels per step (a count from the compiled HLO, not a time): packed params
  run the whole AdamW step in three fusions per buffer of up to 128 leaves (2000
  leaves: 16 buffers, 51 fusions against optax's 6003); the drop-in path adds one
  kernel per leaf (the split of the updates fused with the add)."""
  tx = optix.packed(optix.adamw(1e-3))
  step = _step_of(tx)
  params = {f"w{i:04d}": jnp.full((4,), 0.1) for i in range(2000)}
  packed = optix.pack(params)
  assert len(packed.layout.buffers) == 16
  assert _fusions(step, packed, tx.init(packed), packed) <= 3 * 16 + 3
  small = {k: v for k, v in list(params.items())[:100]}
  assert _fusions(step, small, tx.init(small), small) <= 100 + 12


def _copies(step, args, **jit_kwargs):
  """Array copies (f32[n]) in the compiled step: each a full extra pass."""
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = f32\[[0-9,]+\]\S* copy\(",
                        _hlo(step, args, **jit_kwargs), flags=re.M))


@pytest.mark.parametrize("make", [lambda: optix.lion(1e-3, weight_decay=1e-2),
                                  lambda: optix.adamw(1e-3, weight_decay=1e-2),
                                  lambda: optix.sgd(1e-2, momentum=0.9, nesterov=True)])
def test_compiler_options_remove_the_donated_state_copy_and_keep_the_numbers(make):
  """Lion's new params read the old momentum that its new momentum overwrites: XLA's
  default CPU copy insertion copies the whole momentum every step; with
  optix.training.compiler_options() (what train_step compiles with) there is no
  array copy, and every optimizer gives bit-identical params and state."""
  tx = make()
  params = {"w": jnp.linspace(-1.0, 1.0, 4096), "b": jnp.full((7,), 0.5)}
  step = _step_of(tx)

  def args():
    p = jax.tree.map(jnp.copy, params)
    return p, tx.init(p), jax.tree.map(lambda x: jnp.cos(3.0 * x), params)

  options = optix.training.compiler_options("cpu")
  assert options and optix.training.compiler_options("gpu") == {}
  assert _copies(step, args(), compiler_options=options) == 0
  outs = []
  for kw in ({}, {"compiler_options": options}):
    f = jax.jit(step, donate_argnums=(0, 1), **kw)
    p, s, g = args()
    for _ in range(5):
      p, s = f(p, s, g)
    outs.append(jax.tree.leaves((p, s)))
  for a, b in zip(*outs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_lion_default_copy_insertion_copies_the_momentum():
  """The fault the options fix, seen in the HLO (if XLA stops copying, drop the option)."""
  tx = optix.lion(1e-3)
  p = {"w": jnp.ones(4096)}
  step = _step_of(tx)
  assert _copies(step, (p, tx.init(p), p)) >= 1
  assert _copies(step, (p, tx.init(p), p),
                 compiler_options=optix.training.compiler_options("cpu")) == 0


def test_buffers_hold_at_most_max_buffer_leaves_and_stay_bit_exact():
  """2000 slices of one buffer take XLA ~15 s to compile (quadratic in the slices of a
  buffer); capped at 128 leaves a buffer, 300 leaves make 3 buffers, same numbers."""
  params = {f"p{i:03d}": jnp.full((5,), 0.1 * (i % 7)) for i in range(300)}
  layout = optix.layout_of(params)
  assert [g for _, g, _ in layout.buffers] == ["None", "None#1", "None#2"]
  assert [n for _, _, n in layout.buffers] == [640, 640, 220]
  assert len(optix.layout_of(params, max_buffer_leaves=1000).buffers) == 2  # + "/last"
  grads = jax.tree.map(lambda p: jnp.sin(p + 1.0), params)
  for tx in (optix.adamw(1e-2, weight_decay=0.1), optix.lion(1e-3)):
    plain_u, _ = tx.update(grads, tx.init(params), params)
    ptx = optix.packed(tx)
    packed_u, _ = ptx.update(grads, ptx.init(params), params)
    for a, b in zip(jax.tree.leaves(plain_u), jax.tree.leaves(packed_u)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="max_buffer_leaves must be an integer >= 1, got 0"):
    optix.packed(optix.sgd(0.1), max_buffer_leaves=0)
