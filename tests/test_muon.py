"""Newton–Schulz and Muon: spectra, a hand-computed iteration, batching of
same-shape matrices, the reshape rule, optax parity on stacked/conv params,
and a convergence comparison with tuned AdamW."""

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import MuonDimensionNumbers as MDN, _muon
import pytest
from sklearn.datasets import load_digits

import optix
import registry  # noqa: F401  (first: it imports registry_muon)
from registry_muon import _flax_dims, _optax_dims, _stacked_axes, _stacked_params

A, B, C = 3.4445, -4.7750, 2.0315


def _with_spectrum(key, m, n, sigmas):
  """An (m, n) matrix with the given singular values and random singular vectors."""
  k1, k2 = jax.random.split(key)
  r = len(sigmas)
  u, _ = np.linalg.qr(np.asarray(jax.random.normal(k1, (m, r))))
  v, _ = np.linalg.qr(np.asarray(jax.random.normal(k2, (n, r))))
  return jnp.asarray((u * np.asarray(sigmas)) @ v.T, jnp.float32)


def _singular_values(x):
  return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 64), (3, 24, 40)])
def test_random_inputs_have_singular_values_in_band(shape):
  g = jax.random.normal(jax.random.key(0), shape)
  s = _singular_values(optix.newton_schulz(g))
  assert s.min() >= 0.6 and s.max() <= 1.2, (s.min(), s.max())


@pytest.mark.parametrize("m,n", [(48, 32), (20, 50)])
def test_low_rank_inputs_keep_rank_and_band(m, n):
  rank = 4
  g = _with_spectrum(jax.random.key(1), m, n, [10.0, 3.0, 1.0, 0.5])
  s = _singular_values(optix.newton_schulz(g))
  assert np.all((s[:rank] >= 0.6) & (s[:rank] <= 1.2)), s[:rank]
  assert np.all(s[rank:] < 1e-4), s[rank:]  # zero singular values stay zero


@pytest.mark.parametrize("m,n", [(40, 40), (64, 24), (24, 64)])
def test_ill_conditioned_inputs_condition_number_100(m, n):
  # The quintic lifts σ/‖G‖_F >= 2.5e-3 into the band in 5 steps; with
  # condition number 100 over min(m, n) values the smallest is ~4e-3 of ‖G‖_F.
  sig = np.logspace(0, -2, min(m, n))
  g = _with_spectrum(jax.random.key(2), m, n, sig)
  s = _singular_values(optix.newton_schulz(g))
  assert s.min() >= 0.6 and s.max() <= 1.2, (s.min(), s.max())


def test_one_quintic_iteration_by_hand():
  g = np.array([[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 3.0, 2.0], [0.0, 1.0, 1.0, 1.0]])
  x = g / np.sqrt((g ** 2).sum())  # ‖G‖_F = sqrt(23.25)
  gram = x @ x.T
  expected = A * x + (B * gram + C * gram @ gram) @ x
  out = optix.newton_schulz(jnp.asarray(g, jnp.float32), steps=1, eps=0.0)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # Tall input: the same iteration on the transpose.
  out_t = optix.newton_schulz(jnp.asarray(g.T, jnp.float32), steps=1, eps=0.0)
  np.testing.assert_allclose(out_t, expected.T, rtol=1e-5, atol=1e-6)


def test_diagonal_input_follows_the_scalar_map():
  sig = np.array([3.0, 1.0, 0.1])
  x = sig / np.linalg.norm(sig)
  for _ in range(5):
    x = A * x + B * x ** 3 + C * x ** 5
  out = optix.newton_schulz(jnp.diag(jnp.asarray(sig, jnp.float32)), eps=0.0)
  np.testing.assert_allclose(jnp.diag(out), x, rtol=1e-5)
  np.testing.assert_allclose(out - jnp.diag(jnp.diag(out)), 0.0, atol=1e-6)


def test_zero_and_bf16_inputs():
  assert not np.any(optix.newton_schulz(jnp.zeros((4, 6))))
  g = jax.random.normal(jax.random.key(3), (16, 24))
  out = optix.newton_schulz(g.astype(jnp.bfloat16), compute_dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), optix.newton_schulz(g), atol=0.05)
  with pytest.raises(ValueError, match="steps"):
    optix.newton_schulz(g, steps=-1)
  with pytest.raises(ValueError, match="rank"):
    optix.newton_schulz(jnp.ones(3))


def test_matrix_view_rule():
  assert optix.matrix_view((8, 6)) == (1, 8, 6)
  assert optix.matrix_view((3, 3, 2, 4), MDN((0, 1, 2), 3)) == (1, 18, 4)  # conv
  assert optix.matrix_view((5, 16, 8), MDN(1, 2)) == (5, 16, 8)  # stacked layers
  assert optix.matrix_view((16, 5, 8), MDN(-3, -1)) == (5, 16, 8)  # batch axis in the middle
  assert optix.matrix_view((4, 6, 3), MDN()) == (3, 4, 6)  # optax's default: axes 0, 1
  with pytest.raises(ValueError, match="not a matrix"):
    optix.matrix_view((5, 16, 8))  # without dimension numbers only 2-D leaves are
  with pytest.raises(ValueError, match="disjoint"):
    optix.matrix_view((5, 16), MDN(0, -2))
  with pytest.raises(ValueError, match="rank >= 2"):
    optix.matrix_view((5,), MDN(0, 0))
  dims = _flax_dims({"a": 0, "s": 1, "v": 0})({"a": jnp.ones((3, 3, 2, 4)), "s": jnp.ones((2, 4, 5)),
                                                "v": jnp.ones(3)})
  assert dims == {"a": MDN((0, 1, 2), 3), "s": MDN((1,), 2), "v": None}


def test_same_shape_matrices_are_one_batched_computation():
  params = _stacked_params()
  del params["bias"]
  tx = optix.scale_by_muon(weight_dimension_numbers=_flax_dims(_stacked_axes))
  grads = optix.testing.random_like(jax.random.key(4), params)
  step = lambda g: tx.update(g, tx.init(params))[0]
  jaxpr = jax.make_jaxpr(step)(grads)
  n_dots = sum(e.primitive.name == "dot_general" for e in jaxpr.eqns)
  # Two groups ((8, 16): w1, w2, w3 and 3 layers; (8, 18): conv), 3 matmuls x 5 steps each.
  assert n_dots == 2 * 15, n_dots
  # ... with the same result as orthogonalizing each matrix alone (at the first
  # step m̂ is a multiple of g, and NS is scale-invariant).
  out = jax.jit(step)(grads)
  dims = _flax_dims(_stacked_axes)(params)
  for name, g in grads.items():
    view = optix.matrix_view(g.shape, dims[name])
    want = optix.newton_schulz(g.reshape(view)).reshape(g.shape)
    np.testing.assert_allclose(out[name], want, rtol=2e-4, atol=2e-5)


def test_non_matrix_leaf_is_named():
  tx = optix.scale_by_muon()
  params = {"w": jnp.ones((4, 4)), "bias": jnp.ones(4)}
  with pytest.raises(ValueError, match=r"\['bias'\].*optix.muon"):
    tx.update(params, tx.init(params))


def test_labels_route_vectors_embeddings_and_stacked_vectors_to_adam():
  params = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 4)), "b": jnp.ones(4),
            "layers": {"w": jnp.ones((2, 4, 4)), "scale": jnp.ones((2, 4))}}
  labels = optix.muon_labels(adam_mask=("embed",), muon_weight_dimension_numbers=_flax_dims(
      lambda p: {"embed": 0, "w": 0, "b": 0, "layers": 1}))(params)
  assert labels == {"embed": "adam", "w": "muon", "b": "adam",
                    "layers": {"w": "muon", "scale": "adam"}}


def _trajectory(tx, params, steps=10):
  state, update = tx.init(params), jax.jit(tx.update)
  for k in jax.random.split(jax.random.key(5), steps):
    updates, state = update(optix.testing.random_like(k, params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_stacked_conv_and_rms_scaling_match_optax():
  params = _stacked_params()
  ours = optix.muon(0.02, adam_learning_rate=1e-3, consistent_rms=0.2, weight_decay=0.1,
                    muon_weight_dimension_numbers=_flax_dims(_stacked_axes))
  theirs = optax.contrib.muon(
      0.02, adam_learning_rate=1e-3, consistent_rms=0.2, weight_decay=0.1,
      muon_weight_dimension_numbers=_optax_dims(lambda path: 1 if "layers" in path else 0))
  diff = optix.testing.max_relative_difference(_trajectory(ours, params),
                                               _trajectory(theirs, params))
  assert diff <= 1e-4, diff


def test_scale_by_muon_alone_matches_optax():
  params = {"a": jax.random.normal(jax.random.key(0), (12, 5)),
            "b": jax.random.normal(jax.random.key(1), (5, 12))}
  ours = optix.chain(optix.scale_by_muon(shape_scaling=True), optix.scale_by_learning_rate(0.02))
  dims = _optax_dims()
  theirs = optax.chain(optax.contrib.scale_by_muon(weight_dimension_numbers=dims),
                       _muon.scale_by_shape(dims),  # private in optax 0.2.8
                       optax.scale_by_learning_rate(0.02))
  diff = optix.testing.max_relative_difference(_trajectory(ours, params),
                                               _trajectory(theirs, params))
  assert diff <= 1e-4, diff


def test_muon_beats_tuned_adamw_on_an_mlp():
  """Digits (sklearn), MLP 64-64-64-10, 120 minibatch steps, linear decay to 0.
  AdamW's learning rate is tuned over a grid whose best point is interior;
  Muon (hidden and input layers; head and biases on AdamW at 3e-3) uses one lr."""
  x, y = load_digits(return_X_y=True)
  x, y = jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)
  steps = 120
  batches = jax.random.randint(jax.random.key(1), (steps, 128), 0, len(y))
  keys = jax.random.split(jax.random.key(0), 3)
  dense = lambda k, i, o: {"w": jax.random.normal(k, (i, o)) / np.sqrt(i), "b": jnp.zeros(o)}
  params0 = {"l1": dense(keys[0], 64, 64), "l2": dense(keys[1], 64, 64),
             "head": dense(keys[2], 64, 10)}

  def loss(p, xb, yb):
    h = jax.nn.relu(xb @ p["l1"]["w"] + p["l1"]["b"])
    h = jax.nn.relu(h @ p["l2"]["w"] + p["l2"]["b"])
    logits = h @ p["head"]["w"] + p["head"]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

  def final_loss(make, lr):
    tx = make(optix.linear_schedule(lr, 0.0, steps))
    def body(carry, idx):
      p, s = carry
      u, s = tx.update(jax.grad(loss)(p, x[idx], y[idx]), s, p)
      return (optix.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(body, (params0, tx.init(params0)), batches)
    return loss(p, x, y)

  adamw_lrs = jnp.array([3e-3, 1e-2, 3e-2, 1e-1])
  adamw = jax.jit(jax.vmap(lambda lr: final_loss(lambda s: optix.adamw(s, weight_decay=0.0), lr)))
  adamw_losses = np.asarray(adamw(adamw_lrs))
  best = int(np.argmin(adamw_losses))
  assert 0 < best < len(adamw_lrs) - 1, adamw_losses  # tuned: the optimum is inside the grid
  muon = jax.jit(lambda lr: final_loss(
      lambda s: optix.muon(s, adam_learning_rate=optix.linear_schedule(3e-3, 0.0, steps),
                           adam_mask=("head",), adam_nesterov=False,
                           muon_weight_dimension_numbers=_flax_dims()), lr))
  muon_loss = float(muon(0.1))
  assert muon_loss < 0.5 * adamw_losses[best], (muon_loss, adamw_losses)


def test_sharded_params_on_an_explicit_mesh():
  """optax.contrib.muon raises ShardingTypeError here (``x @ x.T`` on a sharded matrix
  in Explicit mode); optix gathers each sharded matrix, orthogonalizes, and reshards
  the update like the param."""
  params = {"a": jnp.ones((16, 8)), "b": jnp.ones((8, 16)), "bias": jnp.ones(8)}
  grads = optix.testing.random_like(jax.random.key(6), params)
  tx = optix.muon(0.02, adam_learning_rate=1e-3)
  expected, _ = tx.update(grads, tx.init(params), params)
  mesh = jax.make_mesh((8,), ("x",))
  specs = {"a": jax.P("x", None), "b": jax.P(None, "x"), "bias": jax.P("x")}
  put = lambda tree: {k: jax.device_put(v, jax.NamedSharding(mesh, specs[k]))
                      for k, v in tree.items()}
  with jax.set_mesh(mesh):
    sp, sg = put(params), put(grads)
    updates, _ = jax.jit(tx.update)(sg, jax.jit(tx.init)(sp), sp)
  for k in params:
    assert updates[k].sharding.spec == specs[k], (k, updates[k].sharding)
    np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5, atol=1e-7)


def _split_case():
  """12 same-shape matrices (one transposed, three as stacked layers) and a bias."""
  keys = jax.random.split(jax.random.key(8), 4)
  params = {"w": jax.random.normal(keys[0], (8, 16, 24)), "t": jax.random.normal(keys[1], (24, 16)),
            "x": jax.random.normal(keys[2], (3, 16, 24)), "bias": jnp.ones(24)}
  return params, optix.testing.random_like(keys[3], params)


def _split_flops(tx, *args):
  analysis = jax.jit(tx.update).lower(*args).compile().cost_analysis()
  return analysis.get("flops") if analysis else None


@pytest.mark.parametrize("mesh_shape,mode,axis", [
    ((8,), jax.sharding.AxisType.Explicit, "data"),
    ((2, 4), jax.sharding.AxisType.Auto, ("data", "model"))])
def test_newton_schulz_split_over_devices(mesh_shape, mode, axis):
  """``mesh=``: the 12 stacked matrices are padded to a multiple of N, split over
  the devices and gathered: same updates as unsplit, params keep their layout,
  and each device's compiled step does ~1/N of the matmul flops."""
  params, grads = _split_case()
  stacked = {"w": 1, "t": 0, "x": 1, "bias": 0}
  mesh = jax.make_mesh(mesh_shape, ("data", "model")[:len(mesh_shape)],
                       axis_types=(mode,) * len(mesh_shape))
  n = math.prod(mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis))
  dims = _flax_dims(stacked)
  ref = optix.muon(0.02, adam_learning_rate=1e-3, muon_weight_dimension_numbers=dims)
  split = optix.muon(0.02, adam_learning_rate=1e-3, muon_weight_dimension_numbers=dims, mesh=mesh,
                     axis=axis)
  expected = ref.update(grads, ref.init(params), params)[0]
  specs = {"w": jax.P(None, "data"), "t": jax.P("data"), "x": jax.P(), "bias": jax.P()}
  put = lambda tree: {k: jax.device_put(v, jax.NamedSharding(mesh, specs[k]))
                      for k, v in tree.items()}
  ctx = jax.set_mesh(mesh) if mode == jax.sharding.AxisType.Explicit else contextlib.nullcontext()
  with ctx:
    sp, sg = put(params), put(grads)
    state = jax.jit(split.init)(sp)
    updates, _ = jax.jit(split.update)(sg, state, sp)
    split_flops = _split_flops(split, sg, state, sp)
  for k in params:
    np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    if mode == jax.sharding.AxisType.Explicit:
      assert updates[k].sharding.is_equivalent_to(
          jax.NamedSharding(mesh, specs[k]), updates[k].ndim), (k, updates[k].sharding)
  ref_flops = _split_flops(ref, grads, ref.init(params), params)
  # 12 matrices -> ceil(12/N) per device. On the Explicit mesh the sharded leaves are
  # orthogonalized where they live, by groups of one shape and layout, each padded to N:
  # "w" (8 matrices), "t" (1) and the replicated "x" (3) cost 1 + 1 + 1 per device.
  per_device = (3 if mode == jax.sharding.AxisType.Explicit else math.ceil(12 / n))
  if split_flops is not None and ref_flops is not None:
    assert split_flops < ref_flops * (per_device / 12 + 0.1), (split_flops, ref_flops)


def test_split_is_skipped_under_pmap_and_rejects_unknown_axis():
  params, grads = _split_case()
  params, grads = {"t": params["t"]}, {"t": grads["t"]}
  mesh = jax.make_mesh((8,), ("data",))
  tx = optix.scale_by_muon(mesh=mesh)
  expected = optix.scale_by_muon().update(grads, tx.init(params))[0]
  rows = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), grads)
  out = jax.pmap(lambda g: tx.update(g, tx.init(g))[0], axis_name="batch")(rows)
  np.testing.assert_allclose(out["t"][5], expected["t"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="axis must be one of the mesh axes"):
    optix.muon(0.02, adam_learning_rate=1e-3, mesh=mesh, axis="model")


def test_split_with_fewer_matrices_than_devices_replicated_params():
  """Fewer same-shape matrices (3) than devices (8), replicated params under jit on an
  Auto mesh: the split passes shard_map's vma check and matches the unsplit step."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  params = [jax.random.normal(jax.random.key(i), (16, 16)) for i in range(3)]
  ref = optix.muon(0.02, adam_learning_rate=1e-3)
  split = optix.muon(0.02, adam_learning_rate=1e-3, mesh=mesh)
  expected = ref.update(params, ref.init(params), params)[0]
  replicated = jax.NamedSharding(mesh, jax.P())
  sp = jax.device_put(params, replicated)
  state = jax.jit(split.init, out_shardings=replicated)(sp)
  updates = jax.jit(split.update)(sp, state, sp)[0]
  for a, b in zip(updates, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_split_under_inject_hyperparams_on_an_explicit_mesh():
  """inject_hyperparams traces Newton–Schulz's ``eps``: it reaches the split
  computation as a replicated argument of map_stacked, not a closure."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  params = [jax.random.normal(jax.random.key(i), (16, 24)) for i in range(3)]
  ref = optix.inject_hyperparams(optix.muon)(0.02, adam_learning_rate=1e-3)
  split = optix.inject_hyperparams(optix.muon)(0.02, adam_learning_rate=1e-3, mesh=mesh)
  expected = jax.jit(ref.update)(params, ref.init(params), params)[0]
  with jax.set_mesh(mesh):
    sp = jax.device_put(params, jax.NamedSharding(mesh, jax.P()))
    state = jax.jit(split.init)(sp)
    assert "eps" in state.hyperparams
    updates = jax.jit(split.update)(sp, state, sp)[0]
  for a, b in zip(updates, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adam_mask_name_that_matches_nothing_raises():
  params = {"embed": jnp.ones((8, 4)), "dense": {"kernel": jnp.ones((4, 4))}}
  labels = optix.muon_labels(adam_mask=("embed",))(params)
  assert labels == {"embed": "adam", "dense": {"kernel": "muon"}}
  tx = optix.muon(0.02, adam_learning_rate=1e-3, adam_mask=("embedding",))
  with pytest.raises(ValueError, match=r"\['embedding'\] match no param.*'embed'"):
    tx.init(params)


_OPTION_CASES = {
    "default": {}, "heavy_ball": {"nesterov": False}, "adaptive": {"adaptive": True},
    "spectral": {"preconditioning": "spectral"}, "aol": {"preconditioning": "aol"},
    "schatten": {"preconditioning": "schatten"}, "table": {"ns_coeffs": _muon._DION_NS_COEFFS},
    "short_table": {"ns_coeffs": ((3.4, -4.7, 2.0), (3.0, -3.2, 1.2)), "ns_steps": 3},
    "no_steps": {"ns_steps": 0}, "beta": {"beta": 0.5, "eps": 1e-3},
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
@pytest.mark.parametrize("case", sorted(_OPTION_CASES))
def test_scale_by_muon_matches_optax_for_each_option(case, dtype):
  """optax's arguments only, on a 2-D, a tall and a stacked 3-D leaf (batch axis in the
  middle): the same updates as optax.contrib.scale_by_muon over 4 steps."""
  kwargs = _OPTION_CASES[case]
  if dtype == "complex64" and case == "schatten":
    pytest.skip("optax's Schatten step uses X Xᵀ for complex X (see the phase test below)")
  dims = {"a": MDN(), "t": MDN(), "s": MDN(0, 2)}
  with jax.enable_x64(dtype == "float64"):
    keys = jax.random.split(jax.random.key(11), 3)
    params = {"a": jax.random.normal(keys[0], (6, 9)), "t": jax.random.normal(keys[1], (10, 4)),
              "s": jax.random.normal(keys[2], (5, 3, 7))}
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    if dtype == "complex64":
      params = jax.tree.map(lambda x: x * (1 + 0.5j), params)
    outs = []
    for tx in (optix.scale_by_muon(weight_dimension_numbers=dims, **kwargs),
               optax.contrib.scale_by_muon(weight_dimension_numbers=dims, **kwargs)):
      state, update, p, got = tx.init(params), jax.jit(tx.update), params, []
      for t in range(4):
        g = jax.tree.map(lambda x: (jnp.sin(x * (t + 1.5)) + 0.2 * x).astype(x.dtype), p)
        u, state = update(g, state)
        p = optax.apply_updates(p, jax.tree.map(lambda v: -0.05 * v, u))
        got.append(u)
      outs.append(got)
  rtol = 1e-10 if dtype == "float64" else 3e-5
  if case == "adaptive" and dtype != "float64":
    rtol = 1e-3  # the dual-norm factor multiplies float32 rounding of NS by ~|m̂|·|O|
  for ours, theirs in zip(*outs):
    for k in params:
      assert ours[k].dtype == params[k].dtype
      scale = float(np.max(np.abs(np.asarray(theirs[k]))))
      np.testing.assert_allclose(np.asarray(ours[k]), np.asarray(theirs[k]), rtol=rtol,
                                 atol=rtol * scale, err_msg=f"{case} {dtype} {k}")


@pytest.mark.parametrize("case", ["default", "heavy_ball", "adaptive", "spectral", "aol",
                                  "schatten", "table"])
@pytest.mark.parametrize("shape,dims", [((6, 9), MDN()), ((10, 4), MDN()),
                                        ((5, 3, 7), MDN(0, 2))], ids=["wide", "tall", "stacked"])
def test_one_leaf_is_optax_bit_for_bit(case, shape, dims):
  """A tree of one matrix leaf (float32): 25 steps of optix.scale_by_muon give optax's
  updates bit for bit. Newton–Schulz forms Xᴴ before X Xᴴ and scales an operand of A·A
  by c, as optax does (the other orders round differently).
  With several leaves in one jitted update, optax's own numbers for a leaf change by a few
  ulps with the other leaves present (XLA compiles its per-leaf iterations together),
  which bounds the registry's muon parity entries (tests/registry_muon.py)."""
  kwargs = _OPTION_CASES[case]
  params = {"a": jax.random.normal(jax.random.key(21), shape)}
  outs = []
  for tx in (optix.scale_by_muon(weight_dimension_numbers={"a": dims}, **kwargs),
             optax.contrib.scale_by_muon(weight_dimension_numbers={"a": dims}, **kwargs)):
    state, update, got = tx.init(params), jax.jit(tx.update), []
    for t in range(25):
      u, state = update(optix.testing.random_like(jax.random.key(t), params), state)
      got.append(np.asarray(u["a"]))
    outs.append(got)
  for t, (ours, theirs) in enumerate(zip(*outs)):
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{case} step {t}")


def test_traced_ns_steps_under_optax_inject_hyperparams():
  """optax.inject_hyperparams traces the int ns_steps: the iterations run in a loop (the
  first one rescaling for "aol") and give the unrolled numbers."""
  params = {"a": jax.random.normal(jax.random.key(12), (6, 9))}
  g = optix.testing.random_like(jax.random.key(13), params)
  for precond in ("frobenius", "aol"):
    outs = []
    for tx in (optax.inject_hyperparams(optix.scale_by_muon)(preconditioning=precond),
               optix.scale_by_muon(preconditioning=precond)):
      outs.append(jax.jit(tx.update)(g, tx.init(params))[0]["a"])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6, err_msg=precond)


def test_complex_schatten_is_phase_equivariant():
  """Deliberate difference: optix's Schatten-4 rescaling uses X Xᴴ, so a global phase of the
  momentum comes out as the same phase of the update (optax's X Xᵀ breaks that for complex X)."""
  g = (jax.random.normal(jax.random.key(14), (5, 8))
       + 1j * jax.random.normal(jax.random.key(15), (5, 8))).astype(jnp.complex64)
  phase = jnp.exp(0.7j).astype(jnp.complex64)
  out = optix.newton_schulz(g, preconditioning="schatten")
  np.testing.assert_allclose(optix.newton_schulz(phase * g, preconditioning="schatten"),
                             phase * out, rtol=1e-4, atol=1e-5)
  s = _singular_values(out)
  assert s.min() >= 0.3 and s.max() <= 1.3, s  # orthogonal-ish: 5 steps from ||XXᴴ||_F^½


def test_aol_and_schatten_floor_is_the_callers_eps():
  """Deliberate difference: the floor of the "aol"/"schatten" rescaling is ``eps`` (optax
  fixes it at 1e-8). A gradient far below the floor is scaled by 1/sqrt(eps), not normalized."""
  g = jnp.full((3, 4), 1e-6, jnp.float32)  # Gram row sums 4 * 4e-12 ≈ 1.6e-11
  for precond in ("aol", "schatten"):
    tiny = optix.newton_schulz(g, steps=1, eps=1e-2, preconditioning=precond)
    default = optix.newton_schulz(g, steps=1, preconditioning=precond)
    assert float(jnp.max(jnp.abs(tiny))) < 1e-4 < float(jnp.max(jnp.abs(default))), precond


def test_extras_default_to_optax_and_combine():
  """adam_eps=None is eps, adam_nesterov=None follows nesterov, shape_scaling=True is
  optax's factor; set, they change only their own side."""
  params = registry.make_params()
  run = lambda tx: _trajectory(tx, params, steps=4)
  base = run(optix.muon(0.02, adam_learning_rate=1e-3))
  same = run(optix.muon(0.02, adam_learning_rate=1e-3, adam_eps=1e-8, adam_nesterov=True,
                        shape_scaling=True))
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), base, same))
  other = run(optix.muon(0.02, adam_learning_rate=1e-3, adam_eps=1e-2, adam_nesterov=False))
  changed = jax.tree.map(lambda a, b: not bool(jnp.array_equal(a, b)), base, other)
  assert changed["dense"] == {"kernel": False, "bias": True} and changed["embed"] is False
  unscaled = run(optix.muon(0.02, adam_learning_rate=1e-3, shape_scaling=False))
  # (10, 4): width factor sqrt(max(1, 4/10)) = 1: unchanged; (8, 6) likewise; the AdamW side too.
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), base, unscaled))
  wide = {"w": jax.random.normal(jax.random.key(16), (4, 9))}
  g = optix.testing.random_like(jax.random.key(17), wide)
  on = optix.scale_by_muon(shape_scaling=True)
  off = optix.scale_by_muon()
  np.testing.assert_allclose(on.update(g, on.init(wide))[0]["w"],
                             1.5 * off.update(g, off.init(wide))[0]["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="consistent_rms"):
    optix.scale_by_muon(consistent_rms=0.2)


def test_bf16_params_keep_float32_momentum():
  """Deliberate difference (the state dtype policy): bf16 params keep float32 momentum on
  both sides (optax: bf16); mu_dtype=jnp.bfloat16 asks for optax's."""
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), registry.make_params())
  dtypes = lambda tx: {x.dtype for x in jax.tree.leaves(tx.init(params))
                       if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes(optix.muon(0.02)) == {jnp.dtype(jnp.float32)}
  assert jnp.dtype(jnp.bfloat16) in dtypes(optix.muon(0.02, mu_dtype=jnp.bfloat16))
  # optax's MuonState also holds ns_coeffs; optix keeps them static in the transformation.
  assert optix.ScaleByMuonState._fields == ("count", "mu")


@pytest.mark.parametrize("precond,eps", [("frobenius", 1e-8), ("spectral", 1e-8), ("aol", 0.0),
                                         ("schatten", 1e-8)])
def test_padding_to_standard_shapes_is_exact_and_shares_stacks(precond, eps):
  """pad_shapes (the default): nearby shapes share one zero-padded stack (fewer Newton–Schulz
  computations to compile) and give the unpadded updates to float32 rounding ("aol" with
  eps = 0: the zero padding rows stay zero); a shape whose padded shape no other shape shares
  keeps its own, and a one-leaf tree is the unpadded step bit for bit."""
  shapes = {"a": (5, 7), "b": (6, 8), "c": (7, 5), "d": (9, 12), "e": (11, 12), "f": (4, 4),
            "g": (17, 20)}
  params = {k: jax.random.normal(jax.random.key(20 + i), s) for i, (k, s) in
            enumerate(shapes.items())}
  pad = optix.transforms.muon.padded_shape
  assert pad((5, 7)) == (8, 8) and pad((13, 20)) == (16, 32) and pad((129, 300)) == (256, 384)
  plain = optix.scale_by_muon(preconditioning=precond, eps=eps, pad_shapes=False)
  padded = optix.scale_by_muon(preconditioning=precond, eps=eps)
  grads = optix.testing.random_like(jax.random.key(30), params)
  step = lambda tx: (lambda g: tx.update(g, tx.init(params))[0])
  eqns = lambda tx: jax.make_jaxpr(step(tx))(grads).eqns
  dots = lambda tx: sum(e.primitive.name == "dot_general" for e in eqns(tx))
  # groups (5,7) (6,8) (5,7)ᵀ (9,12) (11,12) (4,4) (17,20) -> (8,8) (16,16) (4,4) (17,20)
  assert dots(plain) == 6 * 3 * 5 and dots(padded) == 4 * 3 * 5, (dots(plain), dots(padded))
  assert not any(e.primitive.name == "pad" and e.outvars[0].aval.shape[1:] == (32, 32)
                 for e in eqns(padded))  # (17, 20) alone: not padded
  want, got = jax.jit(step(plain))(grads), jax.jit(step(padded))(grads)
  for k in ("f", "g"):  # alone in their stacks: the same computation
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  one = {"a": params["a"]}
  one_step = lambda tx: jax.jit(lambda g: tx.update(g, tx.init(g))[0]["a"])(one)
  np.testing.assert_array_equal(one_step(padded), one_step(plain))
  for k in params:
    assert got[k].shape == params[k].shape
    np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)
