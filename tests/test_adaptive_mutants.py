"""optix.transforms.adaptive option by option: scale_by_rss, scale_by_rms (plain and centered)
and scale_by_adam against optax's transforms of the same names over a few jitted steps, the
edge cases written out by hand (a zero accumulator, complex gradients, bfloat16 state), the
state's dtypes, the messages of bad arguments and mismatched trees, and the description
(``tx.spec``) that the one-pass step and ``optix.packed`` read.

No test module here computes at import, so mutmut's fork server can collect it before XLA
starts (``make mutate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from optix import _base

STEPS = 3


def _params(dtype=jnp.float32):
  return {"w": jnp.asarray([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]], dtype),
          "b": jnp.asarray([0.1, -0.2], dtype)}


def _grads(dtype=jnp.float32):
  """Three steps of gradients with a zero entry (the accumulator's zero case) and mixed signs."""
  out = []
  for k in range(STEPS):
    w = np.array([[0.3, -1.2, 0.0], [2.0, -0.5, 0.7]]) * (1.0 + 0.5 * k) + 0.1 * k
    w[0, 2] = 0.0
    b = np.array([-0.4, 0.9]) * (k - 1.5)
    out.append({"w": jnp.asarray(w, dtype), "b": jnp.asarray(b, dtype)})
  return out


def _complex_grads():
  return [{"w": g["w"] + 1j * g["w"][::-1], "b": g["b"] - 0.5j * g["b"]} for g in _grads()]


def _run(tx, params, grads_seq):
  state = tx.init(params)
  update = jax.jit(tx.update)
  outs = []
  for g in grads_seq:
    u, state = update(g, state, params)
    outs.append(u)
  return outs, state


def _assert_same_steps(ours, theirs, rtol=2e-6, atol=1e-7):
  for a, b in zip(ours, theirs):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=rtol, atol=atol), a, b)


# -- scale_by_rss -----------------------------------------------------------------------------


@pytest.mark.parametrize("initial, eps", [(0.1, 1e-7), (2.0, 0.5), (0.0, 0.0)])
def test_rss_matches_optax(initial, eps):
  ours, _ = _run(optix.scale_by_rss(initial, eps), _params(), _grads())
  theirs, _ = _run(optax.scale_by_rss(initial, eps), _params(), _grads())
  _assert_same_steps(ours, theirs)


def test_rss_by_hand_zero_accumulator_gives_zero_and_small_ones_are_scaled():
  """s = s0 + g²; u = g / √(s + ε) where s > 0, 0 where s = 0 (not NaN)."""
  tx = optix.scale_by_rss(0.0, 0.0)
  g = jnp.asarray([0.0, 0.5, -3.0])
  u, state = tx.update(g, tx.init(jnp.zeros(3)))
  np.testing.assert_array_equal(np.asarray(state.sum_of_squares), [0.0, 0.25, 9.0])
  np.testing.assert_allclose(np.asarray(u), [0.0, 1.0, -1.0], rtol=1e-6)
  tx = optix.scale_by_rss(0.25, 0.5)
  u, state = tx.update(g, tx.init(jnp.zeros(3)))
  np.testing.assert_allclose(np.asarray(state.sum_of_squares), [0.25, 0.5, 9.25], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u), [0.0, 0.5, -3.0 / np.sqrt(9.75)], rtol=1e-6)


def test_rss_state_dtype_and_update_dtype():
  tx = optix.scale_by_rss(0.5)
  state = tx.init(_params(jnp.bfloat16))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
  np.testing.assert_array_equal(np.asarray(state.sum_of_squares["b"]), [0.5, 0.5])
  u, state = tx.update(_grads(jnp.bfloat16)[0], state)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
  low = optix.scale_by_rss(0.5, state_dtype=jnp.bfloat16)
  state = low.init(_params())
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state))
  _, state = low.update(_grads()[1], state)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state))


def test_rss_complex_accumulates_the_modulus():
  tx = optix.scale_by_rss(0.0, 0.0)
  g = jnp.asarray([3 + 4j, 0j], jnp.complex64)
  u, state = tx.update(g, tx.init(jnp.zeros(2, jnp.complex64)))
  assert state.sum_of_squares.dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(state.sum_of_squares), [25.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u), [(3 + 4j) / 5, 0.0], rtol=1e-6)


# -- scale_by_rms -----------------------------------------------------------------------------

RMS_OPTIONS = [dict(eps_in_sqrt=e, bias_correction=b) for e in (True, False) for b in (False, True)]


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("options", RMS_OPTIONS, ids=str)
def test_rms_matches_optax(options, centered):
  kw = dict(decay=0.8, eps=0.1, initial_scale=0.5, **options)
  theirs_tx = optax.scale_by_stddev(**kw) if centered else optax.scale_by_rms(**kw)
  ours, state = _run(optix.scale_by_rms(**kw, centered=centered), _params(), _grads())
  theirs, _ = _run(theirs_tx, _params(), _grads())
  _assert_same_steps(ours, theirs)
  assert state.count.dtype == jnp.int32 and int(state.count) == STEPS
  assert (state.mu is None) != centered


def test_rms_by_hand_one_step():
  """ν = ρν₀ + (1-ρ)g², μ = (1-ρ)g; u = g / √(ν - μ² + ε) (centered) or g/(√ν + ε)."""
  rho, eps, nu0, g = 0.8, 0.1, 0.5, 2.0
  nu, mu = rho * nu0 + (1 - rho) * g * g, (1 - rho) * g
  cases = [(dict(), g / np.sqrt(nu + eps)),
           (dict(eps_in_sqrt=False), g / (np.sqrt(nu) + eps)),
           (dict(centered=True), g / np.sqrt(nu - mu * mu + eps)),
           (dict(bias_correction=True), g / np.sqrt(nu / (1 - rho) + eps)),
           # centered and debiased: μ̂ = g at the first step
           (dict(centered=True, bias_correction=True), g / np.sqrt(nu / (1 - rho) - g * g + eps))]
  for kw, want in cases:
    tx = optix.scale_by_rms(rho, eps, nu0, **kw)
    u, _ = tx.update(jnp.asarray([g]), tx.init(jnp.zeros(1)))
    np.testing.assert_allclose(np.asarray(u), [want], rtol=1e-6, err_msg=str(kw))


def test_rms_state_dtypes():
  for centered in (False, True):
    tx = optix.scale_by_rms(initial_scale=0.25, centered=centered)
    state = tx.init(_params(jnp.bfloat16))
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.nu))
    np.testing.assert_array_equal(np.asarray(state.nu["b"]), [0.25, 0.25])
    assert (state.mu is None) != centered  # no mean kept unless centered
    if centered:
      assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.mu))
      np.testing.assert_array_equal(np.asarray(state.mu["b"]), [0.0, 0.0])
    u, state = tx.update(_grads(jnp.bfloat16)[0], state)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((state.nu, state.mu)))
    low = optix.scale_by_rms(centered=centered, state_dtype=jnp.bfloat16).init(_params())
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves((low.nu, low.mu)))


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_rms_complex_by_hand(centered):
  """Complex gradients: ν holds |g|² (real part), the centered variance |g|²-style ν - |μ|²."""
  rho, eps = 0.5, 0.01
  g = np.asarray([3 + 4j, -1j])
  tx = optix.scale_by_rms(rho, eps, centered=centered)
  u, state = tx.update(jnp.asarray(g, jnp.complex64), tx.init(jnp.zeros(2, jnp.complex64)))
  nu = (1 - rho) * np.abs(g) ** 2
  var = nu - np.abs((1 - rho) * g) ** 2 if centered else nu
  assert u.dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(state.nu), nu, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(u), g / np.sqrt(var + eps), rtol=1e-5)


# -- scale_by_adam ----------------------------------------------------------------------------

ADAM_OPTIONS = [dict(), dict(nesterov=True), dict(eps_root=0.05), dict(mu_dtype=jnp.bfloat16),
                dict(eps_root=0.05, nesterov=True)]


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
def test_adam_matches_optax(options):
  kw = dict(b1=0.8, b2=0.9, eps=0.1, **options)
  ours, state = _run(optix.scale_by_adam(**kw), _params(), _grads())
  theirs, _ = _run(optax.scale_by_adam(**kw), _params(), _grads())
  _assert_same_steps(ours, theirs, rtol=2e-6)
  assert state.count.dtype == jnp.int32 and int(state.count) == STEPS


def test_adam_by_hand_two_steps():
  """m̂ = m/(1-β₁ᵗ), v̂ = v/(1-β₂ᵗ), u = m̂ / (√(v̂ + ε_root) + ε), and NAdam's numerator."""
  b1, b2, eps, eps_root = 0.5, 0.75, 0.1, 0.2
  gs = [2.0, -1.0]
  for nesterov in (False, True):
    tx = optix.scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov)
    state, m, v = tx.init(jnp.zeros(1)), 0.0, 0.0
    for t, g in enumerate(gs, 1):
      u, state = tx.update(jnp.asarray([g]), state)
      m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
      num = (b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t) if nesterov
             else m / (1 - b1 ** t))
      want = num / (np.sqrt(v / (1 - b2 ** t) + eps_root) + eps)
      np.testing.assert_allclose(np.asarray(u), [want], rtol=1e-6, err_msg=f"{nesterov} {t}")


def test_adam_state_dtypes():
  state = optix.scale_by_adam().init(_params(jnp.bfloat16))
  assert state.count.dtype == jnp.int32 and state.count.shape == ()
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((state.mu, state.nu)))
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves((state.mu, state.nu)))
  state = optix.scale_by_adam(mu_dtype=jnp.bfloat16).init(_params())
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state.mu))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.nu))
  state = optix.scale_by_adam(state_dtype=jnp.bfloat16).init(_params())
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves((state.mu, state.nu)))
  tx = optix.scale_by_adam()
  u, state = tx.update(_grads(jnp.bfloat16)[0], tx.init(_params(jnp.bfloat16)))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((state.mu, state.nu)))


def test_adam_complex_by_hand():
  """Complex moments: m keeps the phase, v holds |g|², u = m̂ / (√v̂ + ε)."""
  b1, b2, eps = 0.5, 0.75, 0.1
  g = np.asarray([3 + 4j, -1j])
  tx = optix.scale_by_adam(b1, b2, eps)
  u, state = tx.update(jnp.asarray(g, jnp.complex64), tx.init(jnp.zeros(2, jnp.complex64)))
  assert u.dtype == jnp.complex64 and state.mu.dtype == jnp.complex64
  np.testing.assert_allclose(np.asarray(u), g / (np.abs(g) + eps), rtol=1e-5)


# -- shared: messages, descriptions -------------------------------------------------------------

BAD = [
    ("initial_accumulator_value", lambda: optix.scale_by_rss(-0.1)),
    ("eps", lambda: optix.scale_by_rss(eps=-1.0)),
    ("state_dtype", lambda: optix.scale_by_rss(state_dtype=jnp.int32)),
    ("decay", lambda: optix.scale_by_rms(decay=1.0)),
    ("eps", lambda: optix.scale_by_rms(eps=-1.0)),
    ("initial_scale", lambda: optix.scale_by_rms(initial_scale=-1.0)),
    ("state_dtype", lambda: optix.scale_by_rms(state_dtype=jnp.int32)),
    ("b1", lambda: optix.scale_by_adam(b1=1.0)),
    ("b2", lambda: optix.scale_by_adam(b2=-0.1)),
    ("eps", lambda: optix.scale_by_adam(eps=-1.0)),
    ("eps_root", lambda: optix.scale_by_adam(eps_root=-1.0)),
    ("mu_dtype", lambda: optix.scale_by_adam(mu_dtype=jnp.int32)),
    ("state_dtype", lambda: optix.scale_by_adam(state_dtype=jnp.int32)),
]


@pytest.mark.parametrize("name, build", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_are_named(name, build):
  with pytest.raises(ValueError, match=f"^{name} must"):
    build()


def test_boundary_values_are_accepted():
  optix.scale_by_rss(0.0, 0.0)
  optix.scale_by_rms(0.0, 0.0, 0.0)
  optix.scale_by_adam(0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("build, ref_name", [
    (lambda: optix.scale_by_rss(), "state.sum_of_squares"),
    (lambda: optix.scale_by_rms(), "state.nu"),
    (lambda: optix.scale_by_adam(), "state.mu")])
def test_mismatched_updates_are_named(build, ref_name):
  tx = build()
  state = tx.init({"a": jnp.zeros(2)})
  with pytest.raises(ValueError, match=f"^updates and {ref_name} have"):
    tx.update({"b": jnp.zeros(2)}, state)


def test_descriptions_carry_the_arguments():
  dt = jnp.bfloat16
  cases = [
      (optix.scale_by_rss(0.3, 0.2, state_dtype=dt), "scale_by_rss",
       dict(initial_accumulator_value=0.3, eps=0.2, state_dtype=dt)),
      (optix.scale_by_rms(0.7, 0.2, 0.3, False, True, centered=True, state_dtype=dt),
       "scale_by_rms", dict(decay=0.7, eps=0.2, initial_scale=0.3, eps_in_sqrt=False,
                            bias_correction=True, centered=True, state_dtype=dt)),
      (optix.scale_by_adam(0.7, 0.8, 0.2, 0.3, dt, nesterov=True, state_dtype=dt),
       "scale_by_adam", dict(b1=0.7, b2=0.8, eps=0.2, eps_root=0.3, mu_dtype=dt, nesterov=True,
                             state_dtype=dt)),
  ]
  for tx, kind, hyperparams in cases:
    spec = _base.spec_of(tx)
    assert spec.kind == kind and spec.elementwise is True
    assert dict(spec.hyperparams) == hyperparams


@pytest.mark.parametrize("name, defaults", [
    ("scale_by_rss", dict(initial_accumulator_value=0.1, eps=1e-7)),
    ("scale_by_rms", dict(decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt=True,
                          bias_correction=False)),
    ("scale_by_adam", dict(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
                           nesterov=False))])
def test_defaults_are_optaxs(name, defaults):
  """The defaults, called without arguments, against optax's transform given them spelled out
  (the documented values)."""
  ours, _ = _run(getattr(optix, name)(), _params(), _grads())
  theirs, _ = _run(getattr(optax, name)(**defaults), _params(), _grads())
  _assert_same_steps(ours, theirs)
  extra = {"centered": False} if name == "scale_by_rms" else {}
  spec = _base.spec_of(getattr(optix, name)())
  assert dict(spec.hyperparams) == {**defaults, **extra, "state_dtype": None}
