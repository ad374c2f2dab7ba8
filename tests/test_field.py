"""Hand checks and claims for the rest of the field: MARS and cautious updates against the
papers' formulas in numpy, optax parity where the update needs the loss, Lookahead and the
complex split, schedule-free AdamW against a tuned warmup-cosine AdamW, Prodigy's step-size
estimate against a tuned step size, and schedule-free under ``flax.nnx.Optimizer``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from registry import BY_NAME, ENTRIES, make_params


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# -- MARS (arXiv 2411.10438, Algorithm 2, approximate MARS-AdamW) ----------------------------


def _mars_by_hand(theta, grads, lr, b1, b2, eps, gamma, wd, max_norm):
  """The paper's MARS-AdamW on one leaf: c_t = g_t + gamma b1/(1-b1) (g_t - g_{t-1}),
  clipped to norm max_norm, then bias-corrected Adam moments of c and decoupled decay."""
  m = v = np.zeros_like(theta)
  prev = np.zeros_like(theta)
  out = []
  for t, g in enumerate(grads, 1):
    c = g + gamma * b1 / (1 - b1) * (g - prev)
    norm = np.linalg.norm(c)
    if norm > max_norm:
      c = c * max_norm / norm
    m = b1 * m + (1 - b1) * c
    v = b2 * v + (1 - b2) * c * c
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    theta = theta - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * theta)
    prev = g
    out.append(theta)
  return out


def _run(tx, params, grads_seq, **extra):
  state, out = tx.init(params), []
  step = jax.jit(functools.partial(tx.update, **extra))
  for g in grads_seq:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


@pytest.mark.parametrize("max_norm", [1.0, 100.0], ids=["clipped", "unclipped"])
def test_mars_adamw_two_steps_by_hand(max_norm):
  rng = np.random.default_rng(0)
  params = {"a": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=(5,)).astype(np.float32)}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(2)]
  hp = dict(lr=1e-2, b1=0.9, b2=0.99, eps=1e-8, gamma=0.5, wd=0.1)
  tx = optix.mars_adamw(hp["lr"], hp["b1"], hp["b2"], hp["eps"], hp["gamma"], hp["wd"],
                        max_norm=max_norm)
  ours, _ = _run(tx, params, grads)
  for name in params:
    expected = _mars_by_hand(np.float64(params[name]), [np.float64(g[name]) for g in grads],
                             max_norm=max_norm, **hp)
    for t in range(2):
      np.testing.assert_allclose(np.asarray(ours[t][name]), expected[t], rtol=2e-6, atol=1e-7)
  # The variance-reduction term is active: gamma = 0 gives another second step.
  plain, _ = _run(optix.mars_adamw(hp["lr"], hp["b1"], hp["b2"], hp["eps"], 0.0, hp["wd"],
                                   max_norm=max_norm), params, grads)
  assert not np.allclose(np.asarray(plain[1]["a"]), np.asarray(ours[1]["a"]))


# -- Cautious (arXiv 2411.16085, C-AdamW) ---------------------------------------------------


def test_cautious_adamw_two_steps_by_hand():
  rng = np.random.default_rng(1)
  theta0 = rng.normal(size=(16,)).astype(np.float32)
  grads = [rng.normal(size=(16,)).astype(np.float32) for _ in range(2)]
  lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
  ours, _ = _run(optix.cautious_adamw(lr, b1, b2, eps, weight_decay=wd), {"w": theta0},
                 [{"w": g} for g in grads])
  theta, m, v = np.float64(theta0), np.zeros(16), np.zeros(16)
  masked_any = False
  for t, g in enumerate(grads, 1):
    g = np.float64(g)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    phi = (u * g > 0).astype(np.float64)
    masked_any |= bool((phi == 0).any())
    phi = phi * phi.size / (phi.sum() + 1)
    theta = theta - lr * (phi * u + wd * theta)
    np.testing.assert_allclose(np.asarray(ours[t - 1]["w"]), theta, rtol=2e-6, atol=1e-7)
  assert masked_any, "the second step must disagree somewhere for the mask to be tested"


# -- optax parity where the update needs the loss or the objective --------------------------

VALUE_PARITY = {
    "momo": lambda: optax.contrib.momo(1e-2),
    "momo_adam": lambda: optax.contrib.momo_adam(1e-2),
    "polyak_sgd": lambda: optax.polyak_sgd(1.0),
    "reduce_on_plateau": lambda: optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(
        patience=2, accumulation_size=2)),
    "sophia_hutchinson": lambda: optax.contrib.sophia(1e-2, update_interval=2),
}


@pytest.mark.parametrize("name", sorted(VALUE_PARITY))
def test_value_driven_matches_optax(name):
  entry = BY_NAME[name]
  params = make_params(3)
  keys = jax.random.split(jax.random.key(7), 10)
  grads_seq = [optix.testing.random_like(k, params) for k in keys]
  # A loss that plateaus, so reduce_on_plateau really reduces.
  values = [jnp.float32(3.0 / (1 + t) if t < 5 else 0.6) for t in range(10)]
  extra = {k: v for k, v in entry.extra_args.items() if k != "value"}

  def trajectory(tx):
    state, p, out = tx.init(params), params, []
    step = jax.jit(lambda g, s, p, value: tx.update(g, s, p, value=value, **extra))
    for g, value in zip(grads_seq, values):
      updates, state = step(g, state, p, value)
      p = optax.apply_updates(p, updates)
      out.append(p)
    return out

  for t, (a, b) in enumerate(zip(trajectory(entry.make()), trajectory(VALUE_PARITY[name]()))):
    diff = optix.testing.max_relative_difference(a, b)
    assert diff <= 1e-5, f"{name}: step {t}: {diff:.2e}"


def test_value_entries_are_all_checked():
  """Every entry whose update needs the loss or the objective and that optax also has is
  compared here (the shared parity test feeds gradients only)."""
  needs_value = {e.name for e in ENTRIES if e.optax_ref is None
                 and {"value", "obj_fn"} & set(e.extra_args)}
  assert needs_value == set(VALUE_PARITY)


# -- Lookahead -------------------------------------------------------------------------------


def _lookahead_run(tx, params, grads_seq):
  state, step = tx.init(params), jax.jit(tx.update)
  for g in grads_seq:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_lookahead_matches_optax_and_keeps_the_policy():
  fast = make_params(4)
  params = optax.LookaheadParams.init_synced(fast)
  grads_seq = [optix.testing.random_like(k, fast) for k in jax.random.split(jax.random.key(8), 7)]
  ours, _ = _lookahead_run(optix.lookahead(optix.adam(1e-2), 3, 0.5), params, grads_seq)
  theirs, _ = _lookahead_run(optax.lookahead(optax.adam(1e-2), 3, 0.5), params, grads_seq)
  assert optix.testing.max_relative_difference(ours, theirs) <= 1e-6
  # bf16 params: float32 statistics, bf16 updates.
  bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tx = optix.lookahead(optix.adam(1e-2), 2, 0.5)
  state = tx.init(bf)
  updates, state = jax.jit(tx.update)(jax.tree.map(lambda x: x.astype(jnp.bfloat16),
                                                   grads_seq[0]), state, bf)
  assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} \
      == {jnp.dtype(jnp.float32)}
  with pytest.raises(ValueError, match="LookaheadParams"):
    tx.init(fast)
  with pytest.raises(ValueError, match="embed"):
    tx.update({k: v for k, v in grads_seq[0].items() if k != "embed"}, tx.init(params), params)
  with pytest.raises(ValueError, match="sync_period"):
    optix.lookahead(optix.adam(1e-2), 0, 0.5)
  with pytest.raises(ValueError, match="slow_step_size"):
    optix.lookahead(optix.adam(1e-2), 2, 1.5)


# -- complex params through split_real_and_imaginary ----------------------------------------


def test_split_real_and_imaginary_trains_complex_params_as_two_real_ones():
  key_re, key_im, key_g = jax.random.split(jax.random.key(9), 3)
  params = {"w": (jax.random.normal(key_re, (4, 3))
                  + 1j * jax.random.normal(key_im, (4, 3))).astype(jnp.complex64)}
  grads_seq = [jax.tree.map(lambda p, k=k: (jax.random.normal(k, p.shape) + 1j * jax.random.normal(
      jax.random.fold_in(k, 1), p.shape)).astype(jnp.complex64), params)
               for k in jax.random.split(key_g, 5)]
  ours, _ = _run(optix.split_real_and_imaginary(optix.adam(1e-2)), params, grads_seq)
  theirs, _ = _run(optax.contrib.split_real_and_imaginary(optax.adam(1e-2)), params, grads_seq)
  assert optix.testing.max_relative_difference(ours[-1], theirs[-1]) <= 1e-6
  assert ours[-1]["w"].dtype == jnp.complex64
  # The same as Adam on the real and the imaginary parts as separate real params.
  parts = lambda t: {"re": jnp.real(t["w"]), "im": jnp.imag(t["w"])}
  real, _ = _run(optix.adam(1e-2), parts(params), [parts(g) for g in grads_seq])
  np.testing.assert_allclose(np.asarray(ours[-1]["w"]),
                             np.asarray(real[-1]["re"] + 1j * real[-1]["im"]), rtol=1e-6)


# -- claims on a real problem: softmax regression on sklearn's digits ------------------------


@functools.lru_cache(maxsize=None)
def _digits():
  datasets = pytest.importorskip("sklearn.datasets")
  x, y = datasets.load_digits(return_X_y=True)
  return jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)


L2 = 1e-4  # a small ridge term: the problem has a minimizer (digits are separable)


def _loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  nll = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])
  return nll + 0.5 * L2 * jnp.sum(jnp.square(params["w"]))


def _init_params():
  return {"w": jnp.zeros((64, 10), jnp.float32), "b": jnp.zeros((10,), jnp.float32)}


def _train(tx, steps, eval_fn=lambda state, params: params):
  """Full-batch training under lax.scan; the final loss at ``eval_fn(state, params)``."""
  x, y = _digits()

  @jax.jit
  def run(params):
    def body(carry, _):
      params, state = carry
      grads = jax.grad(_loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    (params, state), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return _loss(eval_fn(state, params), x, y), state

  return run(_init_params())


STEPS, WARMUP = 100, 10
GRID = (0.1, 0.3, 1.0)


@pytest.mark.slow
def test_schedule_free_adamw_matches_tuned_warmup_cosine_adamw():
  """Schedule-free AdamW at a constant rate after warmup, evaluated at its average x, ends
  within a few percent of AdamW with a tuned warmup-cosine schedule (same step budget, same
  learning-rate grid)."""
  adamw = min(float(_train(optix.adamw(optix.warmup_cosine_decay_schedule(
      0.0, lr, WARMUP, STEPS), weight_decay=0.0), STEPS)[0]) for lr in GRID)
  free = min(float(_train(optix.schedule_free_adamw(lr, warmup_steps=WARMUP), STEPS,
                          optix.schedule_free_eval_params)[0]) for lr in GRID)
  assert free <= 1.05 * adamw, (free, adamw)


@pytest.mark.slow
def test_prodigy_step_size_approaches_a_tuned_adam_step_size():
  """Prodigy's running estimate d (its effective Adam learning rate) ends within a factor of
  4 of the best Adam learning rate on a grid, from d0 = 1e-6."""
  grid = (1e-2, 3e-2, 0.1, 0.3, 1.0)
  losses = [float(_train(optix.adam(lr), STEPS)[0]) for lr in grid]
  tuned = grid[int(np.argmin(losses))]
  loss, state = _train(optix.prodigy(), STEPS)
  d = float(state.estim_lr)
  assert tuned / 4 <= d <= tuned * 4, (d, tuned, losses)
  assert float(loss) <= 1.2 * min(losses), (float(loss), min(losses))


# -- schedule-free under flax.nnx.Optimizer --------------------------------------------------


def test_schedule_free_in_nnx_optimizer_evaluates_at_the_average():
  nnx = pytest.importorskip("flax.nnx")
  x, y = _digits()
  model = nnx.Linear(64, 10, rngs=nnx.Rngs(0))
  tx = optix.schedule_free_adamw(0.1, warmup_steps=5)
  raw_params = nnx.state(model, nnx.Param)
  raw_state = tx.init(raw_params)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def loss(model):
    logits = model(x)
    return jnp.mean(jax.nn.logsumexp(logits, -1)
                    - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])

  @nnx.jit
  def step(model, opt):
    grads = nnx.grad(loss)(model)
    opt.update(model, grads)
    return grads

  start = float(loss(model))
  for _ in range(30):
    grads = step(model, opt)
    updates, raw_state = jax.jit(tx.update)(grads, raw_state, raw_params)
    raw_params = optax.apply_updates(raw_params, updates)
  y_params = nnx.state(model, nnx.Param)
  x_nnx = optix.schedule_free_eval_params(opt.opt_state, y_params)
  x_raw = optix.schedule_free_eval_params(raw_state, raw_params)
  for a, b in zip(jax.tree.leaves(x_nnx), jax.tree.leaves(x_raw)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # The average is not the interpolated point, and the model evaluated there has learned.
  assert not all(np.allclose(np.asarray(a), np.asarray(b))
                 for a, b in zip(jax.tree.leaves(x_nnx), jax.tree.leaves(y_params)))
  nnx.update(model, x_nnx)
  assert float(loss(model)) < 0.5 * start
