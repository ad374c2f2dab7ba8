"""Every optix optimizer alias inside ``optax.inject_hyperparams`` (and optix's own aliases
inside optax's other wrappers).

Users and libraries wrap optimizers in optax's own ``inject_hyperparams`` (to read
or change the learning rate during training). optax binds the factory's
signature, applies its defaults and injects every number among them as an array
(ints as int32, floats in the params' dtype) and every callable as a schedule. So
an alias must take its numeric arguments as arrays (traced in ``update``), keep
shape-setting ints out of injection (a ``None`` default), and never have a
callable-looking default. Each alias here is built with only its learning rate
given, run for three jitted steps, and compared with the plain alias.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix

# Shared with optax, where optax's own alias fails the same way inside its wrapper
# (checked below): a structural int or a callable default that optax injects.
OPTAX_FAILS_TOO = {
    "adafactor": lambda: optax.adafactor,
    "adopt": lambda: optax.contrib.adopt,
    "galore": lambda: optax.contrib.galore,
    "lbfgs": lambda: optax.lbfgs,
}
# Known failures (strict: each turns into a failure once fixed).
KNOWN = {}
# Arguments that set the state's structure and have numeric defaults with a meaning of
# their own (None already means "no limit"): optax's wrapper takes them as static_args,
# and without that the step says so by name.
STATIC = {"psgd_kron": ("max_size_triangular", "min_ndim_triangular", "max_skew_triangular")}
# Decay rates that float32 holds exactly, for optimizers whose steps on this problem
# follow the last bit of a hyperparameter: SOAP's rank-deficient statistics (the
# 6x6 Gram matrix of a 6x4 gradient) leave directions whose rotated gradient is
# rounding noise, which Adam's normalization scales to a full step, so b2 = 0.95 as
# a Python float and as optax's injected float32 part within three steps.
EXACT = {"soap": dict(b1=0.9375, b2=0.9375)}
# Need arguments beyond a learning rate to build or step.
NOT_HERE = {"sophia": "its update takes a loss function (obj_fn) the harness does not give"}


def _aliases():
  names = []
  for name in sorted(dir(optix)):
    fn = getattr(optix, name)
    if inspect.isfunction(fn) and list(inspect.signature(fn).parameters)[:1] == ["learning_rate"]:
      names.append(name)
  return names


PARAMS = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((6, 4)), jnp.float32),
          "b": jnp.asarray(np.random.default_rng(1).standard_normal((4,)), jnp.float32)}
GRADS = jax.tree.map(lambda x: 0.1 * x + 0.05, PARAMS)
EXTRA = dict(value=jnp.float32(1.0), grad=GRADS, value_fn=lambda p: jnp.float32(1.0),
             loss=jnp.float32(1.0))


def _run(tx, steps=3):
  def step(p, s):
    updates, s = tx.update(GRADS, s, p, **EXTRA)
    return optax.apply_updates(p, updates), s
  step = jax.jit(step)
  params, state = PARAMS, tx.init(PARAMS)
  for _ in range(steps):
    params, state = step(params, state)
  return params


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN else n
    for n in _aliases()])
def test_alias_inside_optax_inject_hyperparams(name):
  if name in NOT_HERE:
    pytest.skip(NOT_HERE[name])
  factory = getattr(optix, name)
  kwargs = EXACT.get(name, {})
  if name in STATIC:
    with pytest.raises(ValueError, match=r"must be a static Python int.*static_args"):
      _run(optax.inject_hyperparams(factory)(learning_rate=0.01, **kwargs))
  wrapped = optax.inject_hyperparams(factory, static_args=STATIC.get(name, ()))(
      learning_rate=0.01, **kwargs)
  if name in OPTAX_FAILS_TOO:
    with pytest.raises(Exception):
      _run(optax.inject_hyperparams(OPTAX_FAILS_TOO[name]())(learning_rate=0.01))
    with pytest.raises(Exception):
      _run(wrapped)
    return
  want = _run(factory(0.01, **kwargs))
  got = _run(wrapped)
  for key in PARAMS:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
  state = wrapped.init(PARAMS)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.01)


# optix's own aliases (no optax counterpart, so tests/test_conformance.py does not wrap
# them): each of optax's other wrappers around them gives the plain alias's numbers.
OWN = [n for n in _aliases()
       if not hasattr(optax, n) and not hasattr(optax.contrib, n) and n not in NOT_HERE]
WRAPPERS = {
    "MultiSteps(1)": lambda tx: optax.MultiSteps(tx, every_k_schedule=1).gradient_transformation(),
    "apply_if_finite": lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=2),
    "masked(all)": lambda tx: optax.masked(tx, jax.tree.map(lambda _: True, PARAMS)),
    "chain": lambda tx: optax.chain(optax.identity(), tx),
}


# Strict known failures: (name, wrapper) -> reason.
WRAPPED_KNOWN = {}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("name", OWN)
def test_own_alias_inside_optax_wrappers(name, wrapper, request):
  if (name, wrapper) in WRAPPED_KNOWN:
    request.applymarker(pytest.mark.xfail(reason=WRAPPED_KNOWN[name, wrapper], strict=True))
  factory = getattr(optix, name)
  kwargs = EXACT.get(name, {})
  want = _run(factory(0.01, **kwargs))
  got = _run(WRAPPERS[wrapper](factory(0.01, **kwargs)))
  for key in PARAMS:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
