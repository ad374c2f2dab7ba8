"""L-BFGS and its line searches: convergence, optax parity, non-finite values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix


def rosenbrock(x):
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


_H = jnp.diag(jnp.logspace(0.0, 3.0, 12))     # condition number 1000
_XSTAR = jnp.linspace(-1.0, 1.0, 12)


def ill_quadratic(x):
  d = x - _XSTAR
  return 0.5 * d @ _H @ d


def _run(opt, fn, x, steps, tol=1e-8):
  """Iterates until fn <= tol; returns (iterations or None, values, states)."""
  value_and_grad = optax.value_and_grad_from_state(fn)

  @jax.jit
  def step(x, state):
    value, grad = value_and_grad(x, state=state)
    updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(x, updates), state

  state, xs = opt.init(x), [x]
  for i in range(steps):
    x, state = step(x, state)
    xs.append(x)
    if fn(x) <= tol:
      return i + 1, xs, state
  return None, xs, state


def _gd_iterations(fn, x, lr, steps):
  """Gradient descent iterations until fn <= 1e-8 (None if not within ``steps``)."""
  def body(c):
    i, x = c
    return i + 1, x - lr * jax.grad(fn)(x)
  i, _ = jax.jit(lambda x: jax.lax.while_loop(
      lambda c: (c[0] < steps) & (fn(c[1]) > 1e-8), body, (0, x)))(x)
  return None if int(i) >= steps else int(i)


@pytest.mark.parametrize("linesearch", ["zoom", "backtracking"])
def test_rosenbrock_to_1e8_faster_than_gradient_descent(linesearch):
  x0 = jnp.array([-1.2, 1.0, -1.2, 1.0])
  iters, _, _ = _run(optix.lbfgs(linesearch=linesearch), rosenbrock, x0, 100)
  assert iters is not None and iters <= 60, iters
  # Gradient descent with its largest stable step is far from 1e-8 after 20x as many steps.
  assert _gd_iterations(rosenbrock, x0, 1e-3, 20 * iters) is None


def test_ill_conditioned_quadratic_to_1e8_faster_than_gradient_descent():
  x0 = jnp.zeros(12)
  iters, _, _ = _run(optix.lbfgs(), ill_quadratic, x0, 200)
  assert iters is not None
  gd = _gd_iterations(ill_quadratic, x0, 1.0 / 1000.0, 20000)  # step 1/L: optimal fixed step
  assert gd is None or gd > 5 * iters, (iters, gd)


def test_matches_optax_lbfgs_iterates_on_convex_problem():
  a = jax.random.normal(jax.random.key(0), (30, 10))
  b = jax.random.normal(jax.random.key(1), (30,))
  fn = lambda x: 0.5 * jnp.sum((a @ x - b) ** 2) + 0.05 * jnp.sum(x ** 2)
  x0 = jnp.zeros(10)
  _, ours, _ = _run(optix.lbfgs(memory_size=5), fn, x0, 12, tol=-1.0)
  _, theirs, _ = _run(optax.lbfgs(memory_size=5), fn, x0, 12, tol=-1.0)
  for t, (p, q) in enumerate(zip(ours, theirs)):
    np.testing.assert_allclose(p, q, rtol=2e-4, atol=2e-5, err_msg=f"iterate {t}")


def test_two_loop_matches_optax_without_linesearch():
  fn = lambda x: jnp.sum(jnp.cosh(x - 1.0)) + 0.5 * jnp.sum(x ** 2)  # strictly convex
  x0 = jnp.array([2.0, -1.0, 0.5, 3.0])
  ours, theirs = optix.lbfgs(0.5, memory_size=3, linesearch=None), \
      optax.lbfgs(0.5, memory_size=3, linesearch=None)
  s1, s2, x1, x2 = ours.init(x0), theirs.init(x0), x0, x0
  step1 = jax.jit(lambda x, s: ours.update(jax.grad(fn)(x), s, x))
  step2 = jax.jit(lambda x, s: theirs.update(jax.grad(fn)(x), s, x))
  for _ in range(10):
    u1, s1 = step1(x1, s1)
    u2, s2 = step2(x2, s2)
    x1, x2 = x1 + u1, x2 + u2
    np.testing.assert_allclose(x1, x2, rtol=1e-5, atol=1e-6)


def test_hand_computed_first_step_and_memory():
  """Step 0: direction -min(1, 1/|g|) g; step 1 stores s, y, rho = 1/<s, y>."""
  tx = optix.scale_by_lbfgs(memory_size=2)
  x0, g0 = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])
  u, state = tx.update(g0, tx.init(x0), x0)
  np.testing.assert_allclose(u, g0 / 5.0, rtol=1e-6)
  x1, g1 = jnp.array([0.5, 1.0]), jnp.array([1.0, 1.0])
  u, state = tx.update(g1, state, x1)
  s, y = x1 - x0, g1 - g0
  rho = 1.0 / (s @ y)
  # H = (I - rho s y^T) gamma I (I - rho y s^T) + rho s s^T, gamma = s.y / y.y
  eye = jnp.eye(2)
  h = (eye - rho * jnp.outer(s, y)) @ ((s @ y) / (y @ y) * eye) @ (eye - rho * jnp.outer(y, s)) \
      + rho * jnp.outer(s, s)
  np.testing.assert_allclose(u, h @ g1, rtol=1e-5)
  np.testing.assert_allclose(state.weights_memory[0], rho, rtol=1e-6)


@pytest.mark.parametrize("linesearch", ["zoom", "backtracking"])
def test_non_finite_value_in_linesearch_shrinks_step_and_keeps_state_finite(linesearch):
  # NaN outside |x| < 1.5: the first trial (a long step) lands there.
  def fn(x):
    q = jnp.sum((x - 1.0) ** 2) * 10.0
    return jnp.where(jnp.max(jnp.abs(x)) < 1.5, q, jnp.nan)
  x0 = jnp.array([-1.0, 0.5])
  opt = optix.lbfgs(linesearch=linesearch)
  # Scale the first direction by hand so the unit trial step jumps into the NaN region.
  big = optix.lbfgs(learning_rate=20.0, linesearch=linesearch)
  for tx in (opt, big):
    state, x = tx.init(x0), x0

    @jax.jit
    def step(x, state, tx=tx):
      value, grad = jax.value_and_grad(fn)(x)
      updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=fn)
      return optax.apply_updates(x, updates), state

    for _ in range(30):
      x, state = step(x, state)
      assert np.isfinite(fn(x)), x
      for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
          assert np.all(np.isfinite(leaf)), state
    assert fn(x) < 1e-4


def test_ascent_direction_is_flagged_and_barely_moves():
  """An uphill direction: the search reports a decrease error and takes the tiny
  step optax takes after halving 20 times."""
  fn = lambda x: jnp.sum(x ** 2)
  tx = optix.scale_by_zoom_linesearch(20)
  x = jnp.array([1.0, 1.0])
  updates, state = tx.update(jnp.array([1.0, 1.0]), tx.init(x), x, value_fn=fn)  # uphill
  assert float(state.info.decrease_error) > 0
  assert float(jnp.max(jnp.abs(updates))) <= 2.0 ** -19
  ref = optax.scale_by_zoom_linesearch(20)
  expected, _ = ref.update(jnp.array([1.0, 1.0]), ref.init(x), x, value=fn(x),
                           grad=jax.grad(fn)(x), value_fn=fn)
  np.testing.assert_array_equal(updates, expected)


def test_value_fn_keyword_arguments_are_passed_through():
  a = jnp.array([[2.0, 0.0], [0.0, 5.0]])
  fn = lambda x, data: 0.5 * x @ data @ x
  tx = optix.lbfgs()
  x, state = jnp.array([1.0, 1.0]), tx.init(jnp.zeros(2))
  for _ in range(5):
    updates, state = tx.update(jax.grad(fn)(x, a), state, x, value_fn=fn, data=a,
                               unrelated=3.0)
    x = x + updates
  assert fn(x, a) < 1e-8


def test_missing_value_fn_is_an_error():
  tx = optix.scale_by_zoom_linesearch()
  with pytest.raises(ValueError, match="value_fn"):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
