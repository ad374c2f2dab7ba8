"""Gradient accumulation: k micro-batches take the step of one big batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import optix


def _problem(seed=0, n=48):
  kx, kw, kn = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, 5))
  y = jnp.tanh(x @ jax.random.normal(kw, (5, 3))) + 0.1 * jax.random.normal(kn, (n, 3))
  params = {"w1": 0.5 * jax.random.normal(kw, (5, 8)), "b1": jnp.zeros(8),
            "w2": 0.5 * jax.random.normal(kn, (8, 3))}

  def loss_fn(p, xb, yb):  # a mean loss over the batch
    h = jnp.tanh(xb @ p["w1"] + p["b1"])
    return jnp.mean(jnp.square(h @ p["w2"] - yb))
  return params, x, y, loss_fn


OPTIMIZERS = {"sgd_momentum": lambda: optix.sgd(0.3, momentum=0.9),  # sees a wrong average
              "adamw": lambda: optix.adamw(1e-2, weight_decay=0.1)}


@pytest.mark.parametrize("k, name", [(4, "sgd_momentum"), (4, "adamw"), (1, "sgd_momentum")])
def test_k_micro_batches_equal_one_big_batch(k, name):
  params, x, y, loss_fn = _problem()
  grad = jax.jit(jax.grad(loss_fn))
  big_tx = OPTIMIZERS[name]()
  acc_tx = optix.multi_steps(OPTIMIZERS[name](), k)
  big_p, big_s = params, big_tx.init(params)
  acc_p, acc_s = params, acc_tx.init(params)
  acc_update = jax.jit(acc_tx.update)
  big_update = jax.jit(big_tx.update)
  for _ in range(5):  # five optimizer steps over the same data
    updates, big_s = big_update(grad(big_p, x, y), big_s, big_p)
    big_p = optix.apply_updates(big_p, updates)
    for j, (xb, yb) in enumerate(zip(jnp.split(x, k), jnp.split(y, k))):
      before = acc_s.inner_state
      updates, acc_s = acc_update(grad(acc_p, xb, yb), acc_s, acc_p)
      if j < k - 1:  # waiting: zero updates, inner state untouched
        jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
        jax.tree.map(np.testing.assert_array_equal, acc_s.inner_state, before)
      acc_p = optix.apply_updates(acc_p, updates)
    jax.tree.map(lambda a: np.testing.assert_array_equal(a, 0.0), acc_s.acc_grads)
    chex_tol = dict(rtol=2e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **chex_tol), acc_p, big_p)
  assert int(acc_s.gradient_step) == 5 and int(acc_s.mini_step) == 0


def test_average_false_sums_and_counters():
  params = {"w": jnp.zeros(2)}
  tx = optix.multi_steps(optix.sgd(1.0), 3, average=False)
  state = tx.init(params)
  outs = []
  for g in ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [1.0, 1.0]):
    u, state = tx.update({"w": jnp.array(g)}, state, params)
    outs.append(np.asarray(u["w"]))
  np.testing.assert_array_equal(outs[2], [-9.0, -12.0])
  np.testing.assert_array_equal(outs[3], [0.0, 0.0])
  assert (int(state.mini_step), int(state.gradient_step)) == (1, 1)
  np.testing.assert_array_equal(state.acc_grads["w"], [1.0, 1.0])


def test_accumulator_dtype():
  params = {"w": jnp.ones(4, jnp.bfloat16)}
  grads = {"w": jnp.full(4, 1e-3, jnp.bfloat16)}
  for dtype, expect in ((jnp.float32, jnp.float32), (None, jnp.bfloat16)):
    tx = optix.multi_steps(optix.sgd(1.0), 1000, accumulator_dtype=dtype)
    state = tx.init(params)
    assert state.acc_grads["w"].dtype == expect
    # 1 + 300 * 1e-3: a bf16 sum stalls once 1e-3 is below half its ulp; float32 does not.
    state = state._replace(acc_grads={"w": jnp.ones(4, expect)})
    update = jax.jit(tx.update)
    for _ in range(300):
      _, state = update(grads, state, params)
    total = float(state.acc_grads["w"][0])
    if expect == jnp.float32:
      np.testing.assert_allclose(total, 1.3, rtol=1e-3)
    else:
      assert total < 1.1  # the bf16 accumulator lost the small gradients


def test_complex_and_float64_gradients_keep_their_kind_and_precision():
  """A float32 accumulator takes the gradient's kind and never lowers its precision: complex
  micro-batches sum in complex (optax.MultiSteps casts its sum to float32 on each micro-batch:
  every imaginary part but the last micro-batch's is lost), float64 stays float64."""
  z = jnp.array([1 + 2j, -0.5 + 1j], jnp.complex64)
  tx = optix.multi_steps(optix.sgd(1.0), 2)
  state = tx.init({"w": z})
  assert state.acc_grads["w"].dtype == jnp.complex64
  for g in (z, 3 * z):
    updates, state = tx.update({"w": g}, state)
  np.testing.assert_allclose(updates["w"], -2 * z, rtol=1e-6)
  with jax.enable_x64(True):
    for dtype, expect in ((jnp.float64, jnp.float64), (jnp.complex128, jnp.complex128),
                          (jnp.float32, jnp.float32), (jnp.int32, jnp.float32)):
      acc = tx.init({"w": jnp.zeros(2, dtype)}).acc_grads["w"]
      assert acc.dtype == expect, (dtype, acc.dtype)
    assert optix.multi_steps(optix.sgd(1.0), 2, accumulator_dtype=None).init(
        {"w": z}).acc_grads["w"].dtype == jnp.complex64


def test_matches_optax_multisteps_and_works_in_flax_train_state():
  params, x, y, loss_fn = _problem(1)
  grad = jax.jit(jax.grad(loss_fn))
  ours = train_state.TrainState.create(apply_fn=None, params=params,
                                       tx=optix.multi_steps(optix.adam(1e-2), 2))
  theirs = train_state.TrainState.create(
      apply_fn=None, params=params, tx=optax.MultiSteps(optax.adam(1e-2), 2))
  apply = jax.jit(lambda s, g: s.apply_gradients(grads=g))
  for xb, yb in zip(jnp.split(x, 6), jnp.split(y, 6)):
    ours = apply(ours, grad(ours.params, xb, yb))
    theirs = apply(theirs, grad(theirs.params, xb, yb))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               ours.params, theirs.params)
  assert bool(optix.transforms.accumulation.has_updated(ours.opt_state))


def test_runs_under_scan():
  params, x, y, loss_fn = _problem(2)
  tx = optix.multi_steps(optix.sgd(0.1, momentum=0.9), 3)

  def body(carry, batch):
    p, s = carry
    u, s = tx.update(jax.grad(loss_fn)(p, *batch), s, p)
    return (optix.apply_updates(p, u), s), loss_fn(p, *batch)

  batches = (x.reshape(6, 8, 5), y.reshape(6, 8, 3))
  (p, s), losses = jax.jit(lambda c: jax.lax.scan(body, c, batches))((params, tx.init(params)))
  assert int(s.gradient_step) == 2 and np.isfinite(np.asarray(losses)).all()
