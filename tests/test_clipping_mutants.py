"""optix.transforms.clipping by hand and against optax: the global norm (dtypes, complex leaves,
inside ``shard_map`` with one axis name or several, replicated leaves counted once when JAX
tracks them), clip, clip_by_global_norm (its state, its axis name) and adaptive gradient
clipping with unitwise_norm's rule for every rank, the messages of bad arguments.

No test module here computes at import, so mutmut's fork server can collect it before XLA
starts (``make mutate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import optix
from optix.transforms import clipping


def _np_norm(*arrays):
  return np.sqrt(sum(np.sum(np.abs(np.asarray(a, np.float64)) ** 2) for a in arrays))


def _jit_shard_map(f, **kw):
  """``jax.shard_map`` under ``jax.jit``: one compile (eager shard_map runs op by op)."""
  return jax.jit(jax.shard_map(f, **kw))


def _mesh(shape, names):
  return jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


# -- global_norm ------------------------------------------------------------------------------


def test_global_norm_of_a_tree_and_of_nothing():
  tree = {"a": jnp.asarray([3.0, 4.0]), "b": [jnp.asarray([[12.0]])]}
  np.testing.assert_allclose(np.asarray(optix.global_norm(tree)), 13.0, rtol=1e-6)
  empty = optix.global_norm({})
  assert empty.shape == () and empty.dtype == jnp.float32 and float(empty) == 0.0


def test_float32_state_and_empty_norm_under_x64():
  """With 64-bit types on, the empty tree's norm and clip_by_global_norm's state stay float32
  (the state's dtype never depends on the gradients'); a float64 tree's norm is float64."""
  with jax.enable_x64(True):
    assert optix.global_norm({}).dtype == jnp.float32
    low = {"a": jnp.asarray([3.0, 4.0], jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    assert optix.global_norm(low).dtype == jnp.float32  # at least float32, not wider
    g = {"a": jnp.asarray([3.0, 4.0], jnp.float64)}
    assert optix.global_norm(g).dtype == jnp.float64
    tx = optix.clip_by_global_norm(1.0)
    state = tx.init(g)
    assert state.norm.dtype == jnp.float32
    out, state = tx.update(g, state)
    assert state.norm.dtype == jnp.float32 and out["a"].dtype == jnp.float64


def test_global_norm_sums_squares_in_float32_and_counts_complex_moduli():
  # 300 bfloat16 ones: a bfloat16 running sum would stop at 256.
  ones = jnp.ones(300, jnp.bfloat16)
  out = optix.global_norm({"x": ones})
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.sqrt(300.0), rtol=1e-6)
  z = jnp.asarray([3 + 4j, 1j], jnp.complex64)
  out = optix.global_norm([z, jnp.asarray([1.0])])
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.sqrt(27.0), rtol=1e-6)


@pytest.mark.parametrize("check_vma", [True, False])
def test_global_norm_in_shard_map_is_the_whole_trees(check_vma):
  mesh = _mesh((8,), ("x",))
  a = jnp.arange(16.0).reshape(8, 2) - 5
  b = jnp.arange(8.0) * 0.5
  f = _jit_shard_map(lambda t: optix.global_norm(t, axis_name="x"), mesh=mesh,
                    in_specs=({"a": P("x"), "b": P("x")},), out_specs=P(), check_vma=check_vma)
  np.testing.assert_allclose(np.asarray(f({"a": a, "b": b})), _np_norm(a, b), rtol=1e-6)
  tup = _jit_shard_map(lambda t: optix.global_norm(t, axis_name=("x",)), mesh=mesh,
                      in_specs=({"a": P("x")},), out_specs=P(), check_vma=check_vma)
  np.testing.assert_allclose(np.asarray(tup({"a": a})), _np_norm(a), rtol=1e-6)
  # A name of several letters (a string, not a sequence of one-letter names).
  named = _jit_shard_map(lambda t: optix.global_norm(t, axis_name="batch"),
                         mesh=_mesh((8,), ("batch",)), in_specs=({"a": P("batch")},),
                         out_specs=P(), check_vma=check_vma)
  np.testing.assert_allclose(np.asarray(named({"a": a})), _np_norm(a), rtol=1e-6)


def test_global_norm_counts_a_replicated_leaf_once_where_jax_tracks_it():
  mesh = _mesh((8,), ("x",))
  a, r = jnp.arange(8.0) + 1, jnp.asarray([2.0, -1.0])
  specs = ({"a": P("x"), "r": P()},)
  tracked = _jit_shard_map(lambda t: optix.global_norm(t, axis_name="x"), mesh=mesh,
                          in_specs=specs, out_specs=P(), check_vma=True)
  np.testing.assert_allclose(np.asarray(tracked({"a": a, "r": r})), _np_norm(a, r), rtol=1e-6)
  only = _jit_shard_map(lambda t: optix.global_norm(t, axis_name="x"), mesh=mesh,
                       in_specs=({"r": P()},), out_specs=P(), check_vma=True)
  np.testing.assert_allclose(np.asarray(only({"r": r})), _np_norm(r), rtol=1e-6)
  # Untracked (check_vma=False): every device's leaf is a distinct slice, the replicated one too.
  untracked = _jit_shard_map(lambda t: optix.global_norm(t, axis_name="x"), mesh=mesh,
                            in_specs=specs, out_specs=P(), check_vma=False)
  np.testing.assert_allclose(np.asarray(untracked({"a": a, "r": r})),
                             np.sqrt(_np_norm(a) ** 2 + 8 * _np_norm(r) ** 2), rtol=1e-6)


def test_global_norm_over_two_axes_sums_each_leaf_over_the_axes_it_varies_on():
  mesh = _mesh((4, 2), ("x", "y"))
  a = jnp.arange(16.0).reshape(4, 4) - 7   # split over x and y
  c = jnp.arange(4.0) + 0.5               # split over x, replicated over y
  f = _jit_shard_map(lambda t: optix.global_norm(t, axis_name=("x", "y")), mesh=mesh,
                    in_specs=({"a": P("x", "y"), "c": P("x")},), out_specs=P(), check_vma=True)
  np.testing.assert_allclose(np.asarray(f({"a": a, "c": c})), _np_norm(a, c), rtol=1e-6)


# -- clip, clip_by_global_norm ------------------------------------------------------------------


def test_clip_bounds_every_coordinate_both_ways():
  tx = optix.clip(1.5)
  state = tx.init(jnp.zeros(4))
  out, new_state = tx.update(jnp.asarray([-3.0, -1.0, 0.5, 2.0]), state)
  np.testing.assert_array_equal(np.asarray(out), [-1.5, -1.0, 0.5, 1.5])
  assert new_state == state == optax.EmptyState()


def test_clip_by_global_norm_clips_above_and_passes_below():
  tx = optix.clip_by_global_norm(2.5)
  state = tx.init({"a": jnp.zeros(2)})
  assert state.norm.shape == () and state.norm.dtype == jnp.float32 and float(state.norm) == 0.0
  g = {"a": jnp.asarray([3.0, 4.0])}
  out, state = tx.update(g, state)
  np.testing.assert_allclose(np.asarray(out["a"]), [1.5, 2.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.norm), 5.0, rtol=1e-6)
  small = {"a": jnp.asarray([0.3, -0.4])}
  out, state = tx.update(small, state)
  np.testing.assert_array_equal(np.asarray(out["a"]), np.asarray(small["a"]))
  np.testing.assert_allclose(np.asarray(state.norm), 0.5, rtol=1e-6)


def test_clip_by_global_norm_keeps_leaf_dtypes_and_matches_optax():
  g = {"a": jnp.asarray([30.0, -40.0, 7.3, 3.3, -17.7], jnp.bfloat16),
       "b": jnp.asarray([1.0, 2.0, 3.0])}
  out, state = optix.clip_by_global_norm(1.0).update(g, optix.clip_by_global_norm(1.0).init(g))
  assert out["a"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
  assert state.norm.dtype == jnp.float32
  # As optax: the norm is rounded to the leaf's dtype and the leaf divided in it.
  np.testing.assert_array_equal(np.asarray(out["a"], np.float32),
                                np.asarray(g["a"] / state.norm.astype(jnp.bfloat16), np.float32))
  ref, _ = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x, np.float32),
                                                       np.asarray(y, np.float32), rtol=1e-2),
               out, ref)


def test_clip_by_global_norm_with_an_axis_name_clips_by_the_whole_trees_norm():
  mesh = _mesh((8,), ("x",))
  tx = optix.clip_by_global_norm(1.0, axis_name="x")
  g = jnp.arange(8.0) + 1  # norm √204: each device's block alone is far smaller
  f = _jit_shard_map(lambda g: tx.update(g, tx.init(g)), mesh=mesh, in_specs=(P("x"),),
                    out_specs=(P("x"), P()), check_vma=True)
  out, state = f(g)
  np.testing.assert_allclose(np.asarray(state.norm), np.sqrt(204.0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out), np.asarray(g) / np.sqrt(204.0), rtol=1e-6)


# -- unitwise_norm, adaptive_grad_clip ----------------------------------------------------------


@pytest.mark.parametrize("shape, axes", [
    ((), None), ((5,), None), ((1, 5), None), ((3, 4), (0,)), ((3, 2, 4), (0,)),
    ((2, 3, 2, 4), (0, 1, 2)), ((2, 2, 3, 2, 4), (0, 1, 2, 3))])
def test_unitwise_norm_rule_by_rank(shape, axes):
  x = np.arange(1.0, 1.0 + np.prod(shape, dtype=int)).reshape(shape) * (-0.5) ** np.arange(
      np.prod(shape, dtype=int)).reshape(shape)
  got = clipping.unitwise_norm(jnp.asarray(x, jnp.float32))
  axes = tuple(range(len(shape))) if axes is None else axes
  want = np.broadcast_to(np.sqrt(np.sum(x ** 2, axis=axes, keepdims=True)), shape)
  assert got.shape == shape
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_unitwise_norm_explicit_axis_and_unknown_rank():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_allclose(np.asarray(clipping.unitwise_norm(x, axis=1)),
                             np.broadcast_to(np.linalg.norm(np.asarray(x), axis=1,
                                                            keepdims=True), (3, 4)), rtol=1e-6)
  with pytest.raises(ValueError,
                     match=r"unitwise_norm: no default unit for shape \(2, 2, 2, 2, 2, 2\)"):
    clipping.unitwise_norm(jnp.ones((2,) * 6))


@pytest.mark.parametrize("clip, eps, scale", [(0.1, 1e-3, 1.0), (0.5, 0.2, 1e-3), (2.0, 0.0, 1.0),
                                              (1e-4, 1e-3, 1e-2)])
def test_adaptive_grad_clip_matches_optax(clip, eps, scale):
  params = {"w": jnp.asarray([[1.0, 0.0, -2.0], [0.5, 0.0, 1.0]]), "b": jnp.asarray([0.0, 3.0]),
            "k": jnp.arange(24.0).reshape(1, 2, 3, 4) / 10}
  grads = jax.tree.map(lambda p: (jnp.cos(jnp.arange(p.size)).reshape(p.shape) + 0.3) * scale,
                       params)
  ours, state = optix.adaptive_grad_clip(clip, eps).update(grads, optax.EmptyState(), params)
  theirs, _ = optax.adaptive_grad_clip(clip, eps).update(grads, optax.EmptyState(), params)
  assert state == optax.EmptyState()
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6),
               ours, theirs)


@pytest.mark.parametrize("axis", [1, (0, 1)])
def test_adaptive_grad_clip_with_an_axis_other_than_the_ranks(axis):
  p = jnp.asarray([[1.0, 0.0, -2.0], [0.5, 0.0, 1.0]])
  g = jnp.asarray([[0.3, -1.2, 0.0], [2.0, -0.5, 0.7]])
  ours, _ = optix.adaptive_grad_clip(0.3, axis=axis).update(g, optax.EmptyState(), p)
  theirs, _ = optax.adaptive_grad_clip(0.3, axis=axis).update(g, optax.EmptyState(), p)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6)
  rank_rule, _ = optix.adaptive_grad_clip(0.3).update(g, optax.EmptyState(), p)
  assert not np.allclose(np.asarray(ours), np.asarray(rank_rule))


def test_adaptive_grad_clip_by_hand():
  """A unit with ‖g‖ < λ max(‖θ‖, ε) passes; one above is scaled to it; a zero unit's floor
  is ε; a tiny gradient norm divides by at least 1e-6."""
  tx = optix.adaptive_grad_clip(0.5, eps=0.1, axis=0)
  p = jnp.asarray([[3.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
  g = jnp.asarray([[1.0, 0.3, 3e-8], [1.0, 0.4, 4e-8]])
  out, _ = tx.update(g, tx.init(p), p)
  want = np.asarray(g).copy()
  want[:, 1] *= 0.05 / 0.5
  want[:, 2] = want[:, 2]  # norm 5e-8 < 0.05: passes
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)
  tiny = optix.adaptive_grad_clip(1e-9, eps=1e-3, axis=0)
  g = jnp.asarray([[3e-7], [4e-7]])  # norm 5e-7 > 1e-12, below 1e-6
  out, _ = tiny.update(g, tiny.init(p[:, :1]), jnp.zeros((2, 1)))
  np.testing.assert_allclose(np.asarray(out), np.asarray(g) * 1e-12 / 1e-6, rtol=1e-5)


def test_adaptive_grad_clip_at_the_limit_below_the_norm_floor_is_optaxs():
  """A unit whose gradient norm equals its limit, both below the 1e-6 floor of the divisor:
  clipped (scaled by limit / 1e-6), as optax does."""
  p = g = jnp.asarray([1e-7])
  ours, _ = optix.adaptive_grad_clip(1.0, eps=0.0).update(g, optax.EmptyState(), p)
  theirs, _ = optax.adaptive_grad_clip(1.0, eps=0.0).update(g, optax.EmptyState(), p)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
  np.testing.assert_allclose(np.asarray(ours), [1e-8], rtol=1e-5)


def test_adaptive_grad_clip_keeps_dtypes_and_complex_leaves():
  tx = optix.adaptive_grad_clip(0.01)
  p = {"a": jnp.ones((3, 2), jnp.bfloat16), "z": jnp.ones(2, jnp.complex64)}
  g = {"a": jnp.full((3, 2), 7.0, jnp.bfloat16), "z": jnp.asarray([3 + 4j, 0j], jnp.complex64)}
  out, _ = tx.update(g, tx.init(p), p)
  assert out["a"].dtype == jnp.bfloat16 and out["z"].dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(out["a"], np.float32),
                             np.full((3, 2), 0.01 * np.sqrt(3.0) / np.sqrt(3 * 49) * 7.0),
                             rtol=1e-2)
  np.testing.assert_allclose(np.asarray(out["z"]), np.asarray([3 + 4j, 0]) * 0.01 * np.sqrt(2) / 5,
                             rtol=1e-5)


def test_adaptive_grad_clip_needs_params_and_matching_trees():
  tx = optix.adaptive_grad_clip(0.1)
  g = {"a": jnp.ones(2)}
  with pytest.raises(ValueError, match="^adaptive_grad_clip needs params"):
    tx.update(g, tx.init(g))
  with pytest.raises(ValueError, match="^updates and params have"):
    tx.update(g, tx.init(g), {"b": jnp.ones(2)})


BAD = [("max_delta", lambda: optix.clip(0.0)),
       ("max_norm", lambda: optix.clip_by_global_norm(-1.0)),
       ("clipping", lambda: optix.adaptive_grad_clip(0.0)),
       ("eps", lambda: optix.adaptive_grad_clip(0.1, eps=-1.0))]


@pytest.mark.parametrize("name, build", BAD, ids=[n for n, _ in BAD])
def test_bad_arguments_are_named(name, build):
  with pytest.raises(ValueError, match=f"^{name} must"):
    build()


def test_boundary_values_are_accepted():
  optix.adaptive_grad_clip(0.1, eps=0.0)


def test_adaptive_grad_clip_defaults():
  """eps = 1e-3 (the floor of a zero unit's norm) and the rank rules by default."""
  p = {"w": jnp.zeros((2, 3)), "b": jnp.asarray([0.0, 1e-4])}
  g = {"w": jnp.ones((2, 3)), "b": jnp.asarray([1.0, 1.0])}
  out, _ = optix.adaptive_grad_clip(0.5).update(g, optax.EmptyState(), p)
  # every unit's weight norm is below eps: each unit is scaled to norm 0.5 · 1e-3
  np.testing.assert_allclose(np.asarray(out["w"]), np.full((2, 3), 5e-4 / np.sqrt(2)),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out["b"]), np.full(2, 5e-4 / np.sqrt(2)), rtol=1e-5)
