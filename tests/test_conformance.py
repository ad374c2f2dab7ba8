"""optix is a drop-in for optax: every shared name gives optax's numbers.

Names are enumerated from ``optax`` and ``optax.contrib``: each public function
that optix also exports is an optimizer or transform (compared over many
steps), a schedule (compared at many steps), or a utility (compared on sample
inputs); what cannot be compared says why (``NOT_COMPARED``). An optimizer cell
builds the transformation with the *same call* in both libraries
(``lib.adam(0.1)``), runs 20 jitted steps on a small anisotropic quadratic --
``update`` (with ``value``, ``grad``, ``value_fn`` and ``obj_fn`` extra arguments) then
``optax.apply_updates`` -- and compares the parameter trajectories.

Cells: dtype (float32, bfloat16, float64 under ``jax.enable_x64``, complex64)
× wrapper (bare; inside ``optax.inject_hyperparams``, ``optax.MultiSteps``,
``optax.apply_if_finite``, ``optax.masked``, ``optax.chain``). The default run
takes every name bare in float32 (but the line searches, held to optax by
tests/test_linesearch_conformance.py, and all but two of the aliases that run
optax's own function) plus a representative subset of the other cells;
``-m slow`` runs the whole cross product.

Tolerances: float32 and complex64 rtol 2e-5 (a few float32 ulps after 20
steps); float64 rtol 1e-9. bfloat16 params are compared with optax run on the
float32 values of the same params (optix keeps float32 state for bf16 params,
optax bf16 state: see docs/guides/differences_from_optax.md), to bf16's
resolution (rtol 3e-2). Inside ``optax.inject_hyperparams`` they get float32
hyperparameters (``hyperparam_dtype=jnp.float32``, the advice for low-precision
params): optax's default casts them to bf16, where ``b2 = 0.999`` is 1.0
(``test_optax_inject_rounds_bf16_hyperparams``).
"""

import inspect
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import optix

OPTAX = types.SimpleNamespace(**{**vars(optax.contrib), **{
    k: v for k, v in vars(optax).items() if not k.startswith("_")}})
STEPS = 20


class Inner:
  """An argument built per library (an inner optimizer, a schedule)."""

  def __init__(self, build):
    self.build = build


# name -> (args, kwargs): the one call both libraries get. Small trees: w is 4x3, b is 3.
OPTIMIZERS = {
    # aliases
    "adabelief": ((0.1,), {}), "adadelta": ((0.5,), {}),
    "adafactor": ((0.1,), {"min_dim_size_to_factor": 2}),
    "adagrad": ((0.1,), {}), "adam": ((0.1,), {}), "adamax": ((0.1,), {}),
    "adamaxw": ((0.1,), {}), "adamw": ((0.1,), {}), "adan": ((0.1,), {}),
    "amsgrad": ((0.1,), {}), "fromage": ((0.1,), {}), "lamb": ((0.1,), {}),
    "lars": ((0.1,), {}), "lbfgs": ((), {}), "lion": ((0.01,), {}),
    "nadam": ((0.1,), {}), "nadamw": ((0.1,), {}), "noisy_sgd": ((0.1,), {"seed": 0}),
    "novograd": ((0.1,), {}), "optimistic_adam": ((0.1,), {}),
    "optimistic_gradient_descent": ((0.1,), {}), "polyak_sgd": ((), {}),
    "radam": ((0.1,), {}), "rmsprop": ((0.1,), {}), "rprop": ((0.1,), {}),
    "sgd": ((0.1, 0.9), {}), "sign_sgd": ((0.1,), {}), "signum": ((0.1,), {}),
    "sm3": ((0.1,), {}), "yogi": ((0.1,), {}),
    # optax.contrib
    "acprop": ((0.1,), {}), "ademamix": ((0.1,), {}), "adopt": ((0.1,), {}),
    "cocob": ((), {}), "dadapt_adamw": ((), {}), "dog": ((), {}), "dowg": ((), {}),
    "madgrad": ((0.1,), {}), "mechanize": ((Inner(lambda lib: lib.sgd(0.1)),), {}),
    "momo": ((), {}), "momo_adam": ((), {}), "muon": ((0.1,), {}), "prodigy": ((), {}),
    "reduce_on_plateau": ((), {"patience": 2}),
    "schedule_free": ((Inner(lambda lib: lib.sgd(1.0)), 0.1), {}),
    "schedule_free_adamw": ((0.1,), {}), "schedule_free_sgd": ((0.1,), {}),
    "simplified_ademamix": ((0.1,), {}), "scale_by_ademamix": ((), {}),
    "galore": ((0.1,), {"rank": 2, "update_proj_gap": 5}), "sophia": ((0.1,), {}),
    "optimistic_adam_v2": ((0.1,), {}),
    "scale_by_adopt": ((), {}), "scale_by_muon": ((), {}),
    # transforms
    "adaptive_grad_clip": ((0.1,), {}), "add_decayed_weights": ((0.1,), {}),
    "clip": ((0.5,), {}), "clip_by_block_rms": ((0.5,), {}),
    "clip_by_global_norm": ((1.0,), {}), "scale": ((-0.1,), {}),
    "scale_by_adam": ((), {}), "scale_by_lion": ((), {}), "scale_by_rms": ((), {}),
    "scale_by_rss": ((), {}), "scale_by_trust_ratio": ((), {}), "trace": ((0.9,), {}),
    "scale_by_factored_rms": ((), {"min_dim_size_to_factor": 2}),
    "scale_by_lbfgs": ((), {}), "scale_by_learning_rate": ((0.1,), {}),
    "scale_by_param_block_rms": ((), {}), "zero_nans": ((), {}),
    "scale_by_schedule": ((Inner(lambda lib: lib.exponential_decay(0.1, 5, 0.5)),), {}),
    "scale_by_zoom_linesearch": ((), {"max_linesearch_steps": 15}),
    "scale_by_backtracking_linesearch": ((), {"max_backtracking_steps": 15}),
    "identity": ((), {}), "set_to_zero": ((), {}), "normalize": ((), {}),
    "split_real_and_imaginary": ((Inner(lambda lib: lib.scale_by_adam()),), {}),
    # combinators, built from the same library's pieces
    "chain": ((Inner(lambda lib: lib.scale_by_adam()), Inner(lambda lib: lib.scale(-0.1))), {}),
    "named_chain": ((Inner(lambda lib: ("adam", lib.scale_by_adam())),
                     Inner(lambda lib: ("lr", lib.scale(-0.1)))), {}),
    "masked": ((Inner(lambda lib: lib.adam(0.1)), {"w": True, "b": False}), {}),
    "multi_transform": ((Inner(lambda lib: {"a": lib.adam(0.1), "s": lib.sgd(0.1)}),
                         {"w": "a", "b": "s"}), {}),
    "partition": ((Inner(lambda lib: {"a": lib.adam(0.1), "s": lib.sgd(0.1)}),
                   {"w": "a", "b": "s"}), {}),
    "apply_if_finite": ((Inner(lambda lib: lib.adam(0.1)), 3), {}),
    "with_extra_args_support": ((Inner(lambda lib: lib.scale_by_adam()),), {}),
    "inject_hyperparams": ((), {}),  # see BUILDERS; the inject cells wrap every optimizer
}

# Names whose call is not a plain factory call: lib -> transformation.
BUILDERS = {
    "inject_hyperparams": lambda lib: lib.inject_hyperparams(lib.adam)(learning_rate=0.1,
                                                                        b1=0.8),
}

# Shared names whose numbers differ from optax's today (a strict xfail each: the
# cell fails loudly once fixed, and then leaves this list).
KNOWN_GAPS = {}

SCHEDULES = {
    "constant_schedule": ((0.3,), {}),
    "cosine_decay_schedule": ((1.0, 40), {"alpha": 0.1, "exponent": 2.0}),
    "cosine_onecycle_schedule": ((40, 1.0), {}),
    "exponential_decay": ((1.0, 7, 0.5), {"transition_begin": 3, "staircase": True,
                                          "end_value": 0.1}),
    "join_schedules": ((Inner(lambda lib: [lib.constant_schedule(1.0),
                                           lib.linear_schedule(1.0, 0.0, 10)]), [15]), {}),
    "linear_onecycle_schedule": ((40, 1.0), {}),
    "linear_schedule": ((1.0, 0.1, 30, 5), {}),
    "piecewise_constant_schedule": ((1.0, {10: 0.5, 25: 0.1}), {}),
    "piecewise_interpolate_schedule": (("cosine", 1.0, {10: 0.5, 25: 0.1}), {}),
    "polynomial_schedule": ((1.0, 0.1, 2.0, 30, 5), {}),
    "sgdr_schedule": (([dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=12),
                        dict(init_value=0.0, peak_value=0.5, warmup_steps=2,
                             decay_steps=20)],), {}),
    "warmup_constant_schedule": ((0.0, 1.0, 8), {}),
    "warmup_cosine_decay_schedule": ((0.0, 1.0, 8, 40, 0.05), {}),
    "warmup_exponential_decay_schedule": ((0.0, 1.0, 8, 6, 0.5), {"end_value": 0.05}),
}

UTILITIES = {"apply_updates", "global_norm", "safe_increment", "schedule_free_eval_params"}

# Names compared by a test of their own (their state or output is not a params trajectory).
OWN_TESTS = {"monitor": "test_monitor_matches_optax: the measurements, step by step"}

NOT_COMPARED = {
    "lookahead": "its params are a LookaheadParams pair (fast, slow), not the params "
                 "tree this harness steps",
    "sam": "its update protocol needs an adversarial inner loop driven by the caller "
           "(opaque_mode) rather than a plain gradient step",
    "OptState": "type alias", "Params": "type alias", "Updates": "type alias",
    "ScalarOrSchedule": "type alias", "Schedule": "type alias",
}

# optix rejects complex params for these (ValueError naming the leaf) where their
# math is defined for real params only; the complex cells test that it raises.
REJECTS_COMPLEX = {
    "acprop", "adadelta", "cocob", "dadapt_adamw", "dog", "dowg", "fromage", "galore",
    "mechanize", "momo", "momo_adam", "noisy_sgd", "optimistic_adam",
    "optimistic_adam_v2", "polyak_sgd", "prodigy", "sign_sgd", "signum", "simplified_ademamix"}

# bf16 cells that cannot be held to bf16's resolution against a float32 run: the
# step is a sign (or a distance estimate) that bf16 rounding of the params flips
# near the optimum, so the trajectories part by whole steps. Compared in float32.
BF16_ROUNDING = {
    "sign_sgd": "sign of a gradient that bf16 rounding flips near the optimum",
    "signum": "sign of a momentum that bf16 rounding flips near the optimum",
    "rprop": "step sizes grow or shrink on sign changes that bf16 rounding adds",
    "dowg": "its distance estimate follows the bf16-rounded params",
    "muon": "the orthogonalized step keeps its size near the optimum, so bf16 rounding of the "
            "params redirects it (optax's own bf16 run is as far from its float32 run)",
    "scale_by_param_block_rms": "its step g·rms(p) grows with the params (no learning rate "
                                "here): the trajectory runs off to 1e32 by step 6 and bf16's "
                                "rounding grows with it",
}
# Cells of those names whose trajectories happen to stay within tolerance (the
# wrapper changes what is rounded: MultiSteps averages two gradients, masked
# leaves one leaf untouched). The outcome is deterministic (fixed inputs).
BF16_AGREES = {("rprop", "multisteps"), ("sign_sgd", "masked"), ("signum", "multisteps"),
               ("muon", "multisteps"), ("muon", "apply_if_finite"), ("muon", "chain"),
               ("muon", "inject"), ("scale_by_param_block_rms", "masked"),
               ("scale_by_param_block_rms", "chain")}
# Single bf16 cells of the same kind: (name, wrapper) -> why.
BF16_ROUNDING_CELLS = {
    ("acprop", "chain"):
        "near the optimum the float32 reference's steps swing by whole units (its belief "
        "(g - m)² collapses), while the bf16 run stays on the bf16 value next to the target "
        "from step 10 on; in the other wrappers the two agree",
    ("rmsprop", "chain"):
        "near the optimum the float32 reference's steps swing by 0.1 around the target "
        "(its second moment decays with the gradient), while the bf16 run stays on the bf16 "
        "value next to the target from step 15 on; in the other wrappers the two agree",
    ("scale_by_lbfgs", "chain"):
        "without a line search or learning rate the raw L-BFGS direction runs the params off "
        "to 1e19 by step 9, and bf16's rounding grows with them",
    ("sophia", "chain"):
        "near the optimum its step is clipped to ±1 (a sign, as signum's), which bf16 rounding "
        "of the params flips: one entry parts by 0.09 at step 17",
    ("galore", "chain"):
        "the rank-2 projection refreshed at step 10 from the gradient's SVD turns on the last "
        "bf16 bit of the params: optax's own bf16 run is as far from its float32 run (0.29)",
    ("galore", "apply_if_finite"):
        "the rank-2 projection refreshed at step 10 from the gradient's SVD turns on the last "
        "bf16 bit of the params: apply_if_finite's compile moves optix's bf16 params by one "
        "ulp before it, and the trajectory by 0.3 after it (float32 agrees)",
}

# float64 cells that differ from optax beyond float64 rounding (a strict xfail in every
# wrapper: the float32 hyperparameters round every step's arithmetic).
F64_DIFFERENCES = {
    "inject_hyperparams": "deliberate: optix.inject_hyperparams injects float32 values by "
                          "default (optax: the params' dtype); hyperparam_dtype=None is optax's",
}

# Already held to optax's numbers step for step by tests/test_linesearch_conformance.py;
# here only in the slow run (each compiles a line search: the slowest cells).
HEAVY = {"lbfgs", "scale_by_lbfgs", "scale_by_zoom_linesearch",
         "scale_by_backtracking_linesearch", "noisy_sgd"}


def shared_names():
  names = set()
  for module in (optax, optax.contrib):
    for name in dir(module):
      obj = getattr(module, name)
      if (not name.startswith("_") and callable(obj) and not inspect.isclass(obj)
          and hasattr(optix, name)):
        names.add(name)
  return sorted(names)


SHARED = shared_names()

# --- the problem: 0.5 Σ a |p - t|², gradient a (p - t) (conj(dL/dp) for complex) ---

A = {"w": np.linspace(0.5, 2.0, 12).reshape(4, 3), "b": np.array([0.7, 1.3, 1.9])}
T = {"w": np.full((4, 3), 0.2), "b": np.array([-0.1, 0.0, 0.3])}


def initial_params(dtype):
  p = {"w": np.linspace(-1.5, 2.0, 12).reshape(4, 3), "b": np.array([0.3, -0.7, 1.1])}
  if jnp.issubdtype(dtype, jnp.complexfloating):
    p = {k: v + 1j * v[::-1] if v.ndim == 1 else v + 1j * v[::-1, ::-1] for k, v in p.items()}
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), p)


def _coefficients(x, a, t):
  """``a`` (real) and ``t`` as arrays of ``x``'s precision, made explicitly: mixing
  numpy float64 constants into jax ops would depend on the x64 mode."""
  return jnp.asarray(a, jnp.finfo(x.dtype).dtype), jnp.asarray(t, x.dtype)


def loss(p):
  def term(x, a, t):
    a, t = _coefficients(x, a, t)
    return 0.5 * jnp.sum(a * jnp.abs(x - t) ** 2)
  return sum(jax.tree.leaves(jax.tree.map(term, p, A, T)))


def grads(p):
  def grad(x, a, t):
    a, t = _coefficients(x, a, t)
    return (a * (x - t)).astype(x.dtype)
  return jax.tree.map(grad, p, A, T)


def trajectory(tx, params):
  """Params after each of STEPS jitted steps (one compile: a scan)."""
  tx = optax.with_extra_args_support(tx)

  def run(p):
    def step(carry, _):
      p, s = carry
      g = grads(p)
      u, s = tx.update(g, s, p, value=loss(p), grad=g, value_fn=loss, obj_fn=loss)
      p = optax.apply_updates(p, u)
      return (p, s), p
    return jax.lax.scan(step, (p, tx.init(p)), None, length=STEPS)[1]

  return jax.jit(run)(params)


def build(lib, name, args, kwargs, wrapper="bare", hyperparam_dtype=None):
  args = [a.build(lib) if isinstance(a, Inner) else a for a in args]
  factory = getattr(lib, name)
  if wrapper == "inject":
    return optax.inject_hyperparams(factory, hyperparam_dtype=hyperparam_dtype)(*args, **kwargs)
  tx = BUILDERS[name](lib) if name in BUILDERS else factory(*args, **kwargs)
  if wrapper == "multisteps":
    return optax.MultiSteps(tx, every_k_schedule=2).gradient_transformation()
  if wrapper == "apply_if_finite":
    return optax.apply_if_finite(tx, max_consecutive_errors=2)
  if wrapper == "masked":
    return optax.masked(tx, {"w": True, "b": False})
  if wrapper == "chain":
    return optax.chain(optax.clip_by_global_norm(1.0), tx)
  return tx


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64,
          "complex64": jnp.complex64}
TOLERANCE = {"float32": (2e-5, 2e-6), "complex64": (2e-5, 2e-6), "float64": (1e-9, 1e-11),
             "bfloat16": (3e-2, 3e-2)}
WRAPPERS = ("bare", "inject", "multisteps", "apply_if_finite", "masked", "chain")
# Not inside optax.inject_hyperparams: their arguments are transformations or label trees.
NO_INJECT = {"chain", "named_chain", "masked", "multi_transform", "partition",
             "apply_if_finite", "with_extra_args_support", "mechanize", "schedule_free",
             "inject_hyperparams", "identity", "set_to_zero", "scale_by_schedule"}
REPRESENTATIVE = ("adam", "sgd", "adafactor", "lion")
# Aliases that run optax's own function behind optix's checks (optix/optax_family.py,
# optax_contrib.py, optax_wrappers.py):
# the default run samples two of them, the slow run takes all.
ADAPTERS = {n for n in OPTIMIZERS
            if getattr(getattr(optix, n), "__module__", "") in (
                "optix.optax_family", "optix.optax_contrib", "optix.optax_wrappers")}
ADAPTER_SAMPLE = ("radam", "rprop")


def _compare_cell(name, dtype_name, wrapper):
  args, kwargs = OPTIMIZERS[name]
  dtype = DTYPES[dtype_name]
  if wrapper == "inject" and name in NO_INJECT:
    pytest.skip(f"{name}'s arguments are transformations or trees, not hyperparameters")
  params = initial_params(dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating) and name in REJECTS_COMPLEX:
    if wrapper == "inject":  # a structural argument traced by optax's wrapper fails first
      try:
        trajectory(build(OPTAX, name, args, kwargs, wrapper), initial_params(jnp.float32))
      except Exception as err:  # pylint: disable=broad-except
        pytest.skip(f"optax itself fails on this cell's float32 params: {type(err).__name__}: "
                    f"{str(err)[:120]}")
    with pytest.raises(ValueError, match=r"\['w'\]|\['b'\]"):
      trajectory(build(optix, name, args, kwargs, wrapper), params)
    return
  ref_params = jax.tree.map(lambda x: x.astype(jnp.float32), params) if (
      dtype_name == "bfloat16") else params
  # bf16 params inside optax.inject_hyperparams: float32 hyperparameters (the advice on
  # the differences page; the float32 reference gets float32 ones either way). optax's
  # default casts them to bf16: test_optax_inject_rounds_bf16_hyperparams.
  hyper = jnp.float32 if dtype_name == "bfloat16" else None
  try:
    theirs = trajectory(build(OPTAX, name, args, kwargs, wrapper, hyper), ref_params)
  except Exception as err:  # pylint: disable=broad-except
    pytest.skip(f"optax itself fails on this cell: {type(err).__name__}: {str(err)[:120]}")
  ours = trajectory(build(optix, name, args, kwargs, wrapper, hyper), params)
  assert jax.tree.map(lambda x: x.dtype, ours) == jax.tree.map(lambda x: x.dtype, params)
  rtol, atol = TOLERANCE[dtype_name]
  for key in ("w", "b"):
    want = np.asarray(theirs[key], np.complex128 if dtype_name == "complex64" else np.float64)
    got = np.asarray(ours[key].astype(jnp.float32) if dtype_name == "bfloat16" else ours[key])
    finite = np.abs(want[np.isfinite(want)])  # non-finite entries must match exactly
    scale = max(1.0, float(np.max(finite))) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale,
                               err_msg=f"{name} {dtype_name} {wrapper} leaf {key}")


def _cells():
  cells = []
  for name in sorted(OPTIMIZERS):
    for dtype_name in DTYPES:
      for wrapper in WRAPPERS:
        sampled = name not in HEAVY and (name not in ADAPTERS or name in ADAPTER_SAMPLE)
        default = ((dtype_name == "float32" and wrapper == "bare" and sampled)
                   or (name in REPRESENTATIVE and wrapper == "bare")
                   or (name == "adam" and dtype_name == "float32"))
        marks = () if default else (pytest.mark.slow,)
        if (dtype_name == "bfloat16" and name in BF16_ROUNDING
            and (name, wrapper) not in BF16_AGREES):
          marks += (pytest.mark.xfail(reason=BF16_ROUNDING[name], strict=True),)
        if dtype_name == "bfloat16" and (name, wrapper) in BF16_ROUNDING_CELLS:
          marks += (pytest.mark.xfail(reason=BF16_ROUNDING_CELLS[name, wrapper], strict=True),)
        if dtype_name == "float64" and name in F64_DIFFERENCES:
          marks += (pytest.mark.xfail(reason=F64_DIFFERENCES[name], strict=True),)
        if name in KNOWN_GAPS:
          marks += (pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True),)
        cells.append(pytest.param(name, dtype_name, wrapper, marks=marks,
                                  id=f"{name}-{dtype_name}-{wrapper}"))
  return cells


@pytest.mark.parametrize("name,dtype_name,wrapper", _cells())
def test_matches_optax(name, dtype_name, wrapper):
  if dtype_name == "float64":
    with jax.enable_x64(True):
      _compare_cell(name, dtype_name, wrapper)
  else:
    _compare_cell(name, dtype_name, wrapper)


def test_every_shared_name_is_covered():
  covered = set(OPTIMIZERS) | set(SCHEDULES) | UTILITIES | set(NOT_COMPARED) | set(OWN_TESTS)
  assert set(SHARED) - covered == set(), sorted(set(SHARED) - covered)
  assert covered - set(SHARED) == set(), sorted(covered - set(SHARED))
  assert all(NOT_COMPARED.values())


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_optax(name):
  args, kwargs = SCHEDULES[name]
  steps = jnp.arange(0, 60)
  values = []
  for lib in (optix, OPTAX):
    built = [a.build(lib) if isinstance(a, Inner) else a for a in args]
    fn = getattr(lib, name)(*built, **kwargs)
    # Python ints (eager) and a traced int32 count (jit + vmap) both.
    values.append((np.array([float(fn(int(s))) for s in steps]),
                   np.asarray(jax.jit(jax.vmap(fn))(steps))))
  for ours, theirs in zip(*values):
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_utilities_match_optax(dtype_name):
  def check():
    p = initial_params(DTYPES[dtype_name])
    g = grads(p)
    rtol = TOLERANCE[dtype_name][0] / 10
    np.testing.assert_allclose(np.asarray(optix.global_norm(g), np.float64),
                               np.asarray(optax.global_norm(g), np.float64), rtol=rtol)
    for a, b in zip(jax.tree.leaves(optix.apply_updates(p, g)),
                    jax.tree.leaves(optax.apply_updates(p, g))):
      assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
  if dtype_name == "float64":
    with jax.enable_x64(True):
      check()
  else:
    check()
  for count in (0, 5, 2 ** 31 - 1):
    c = jnp.asarray(count, jnp.int32)
    assert int(optix.safe_increment(c)) == int(optax.safe_increment(c))


def test_schedule_free_eval_params_matches_optax():
  params = initial_params(jnp.float32)
  evals = []
  for lib in (optix, OPTAX):
    tx = lib.schedule_free_sgd(0.1)
    state = tx.init(params)
    p = params
    for _ in range(5):
      u, state = tx.update(grads(p), state, p)
      p = optax.apply_updates(p, u)
    evals.append(lib.schedule_free_eval_params(state, p))
  for a, b in zip(jax.tree.leaves(evals[0]), jax.tree.leaves(evals[1])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_jit_of_optax_inject_around_optix_adam():
  """optax's own inject_hyperparams around an optix alias jits (no callable default
  is mistaken for a schedule) and matches optax's adam."""
  params = initial_params(jnp.float32)
  ours = trajectory(optax.inject_hyperparams(optix.adam)(learning_rate=0.1), params)
  theirs = trajectory(optax.inject_hyperparams(optax.adam)(learning_rate=0.1), params)
  for key in ("w", "b"):
    np.testing.assert_allclose(ours[key], theirs[key], rtol=2e-5, atol=2e-6)


def test_optix_inject_takes_an_int_learning_rate():
  tx = optix.inject_hyperparams(optix.sgd)(learning_rate=1)
  state = tx.init(initial_params(jnp.float32))
  assert set(state.hyperparams) == {"learning_rate"}, state.hyperparams
  assert state.hyperparams["learning_rate"].dtype == jnp.float32
  # structural ints stay static: adafactor's min_dim_size_to_factor sizes its state
  tx = optix.inject_hyperparams(optix.adafactor)(learning_rate=1, min_dim_size_to_factor=2)
  state = tx.init(initial_params(jnp.float32))
  assert "min_dim_size_to_factor" not in state.hyperparams
  assert "learning_rate" in state.hyperparams


# --- deliberate differences in behaviour the cells above do not reach ---------------------
# Each is on docs/guides/differences_from_optax.md with its test below; the test also checks
# that optax still behaves as described, so it fails (and the entry leaves) once optax changes.
BEHAVIOUR_DIFFERENCES = {
    "prodigy": "a step whose d-estimate denominator ||s||_1 is 0 (a learning rate of 0, e.g. "
               "the first step of a warmup from 0) keeps d; optax divides 0/0, and its "
               "estimate, updates and state are NaN from then on",
    "dadapt_adamw": "the same for D-Adaptation AdamW's estimate d: kept on a step whose "
                    "denominator (the L1 norm of its weighted gradient sum) is 0; optax's is "
                    "0/0 there and NaN from then on",
}


def _prodigy_run(lib, schedule, steps=25, **kwargs):
  """Params after each of ``steps`` jitted steps of ``lib.prodigy(schedule, **kwargs)``,
  and the final state."""
  tx = lib.prodigy(schedule, **kwargs)

  def step(carry, _):
    p, s = carry
    u, s = tx.update(grads(p), s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p

  params = initial_params(jnp.float32)
  (_, state), path = jax.jit(
      lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))(params)
  return path, state


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1, "beta3": 0.9}],
                         ids=["default", "decay-beta3"])
def test_prodigy_keeps_its_estimate_at_a_zero_rate(kwargs):
  assert "prodigy" in BEHAVIOUR_DIFFERENCES
  warmup = lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 5, 40)  # rate 0 at step 0
  ours, state = _prodigy_run(optix, warmup(optix), **kwargs)
  assert _all_finite((ours, state))
  np.testing.assert_array_equal(ours["w"][0], initial_params(jnp.float32)["w"])  # rate 0: no step
  assert float(state.estim_lr) > 1e-6  # the estimate still grows once the rate is > 0
  assert float(loss(jax.tree.map(lambda x: x[-1], ours))) < float(
      loss(initial_params(jnp.float32)))
  theirs, their_state = _prodigy_run(OPTAX, warmup(optax), **kwargs)
  assert not _all_finite((theirs, their_state)), "optax no longer NaNs: drop the entry"


@pytest.mark.parametrize("kwargs", [{}, {"safeguard_warmup": True}, {"weight_decay": 0.1},
                                    {"beta3": 0.9, "estim_lr_coef": 2.0}],
                         ids=["default", "safeguard", "decay", "beta3-coef"])
def test_prodigy_matches_optax_when_no_rate_is_zero(kwargs):
  """A warmup from 0.1: every step's rate is > 0, and 25 steps agree with optax."""
  warmup = lambda lib: lib.warmup_cosine_decay_schedule(0.1, 1.0, 5, 40)
  ours, state = _prodigy_run(optix, warmup(optix), **kwargs)
  theirs, their_state = _prodigy_run(OPTAX, warmup(optax), **kwargs)
  for key in ("w", "b"):
    np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-7, err_msg=key)
  np.testing.assert_allclose(state.estim_lr, their_state.estim_lr, rtol=1e-6)


def _dadapt_run(lib, schedule, steps=25, **kwargs):
  tx = lib.dadapt_adamw(schedule, **kwargs)
  p, path = initial_params(jnp.float32), []
  state = tx.init(p)
  for _ in range(steps):
    u, state = jax.jit(tx.update)(grads(p), state, p)
    p = optax.apply_updates(p, u)
    path.append(p)
  return path, state


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1}], ids=["default", "decay"])
def test_dadapt_adamw_keeps_its_estimate_at_a_zero_rate(kwargs):
  assert "dadapt_adamw" in BEHAVIOUR_DIFFERENCES
  warmup = lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 5, 40)  # rate 0 at step 0
  ours, state = _dadapt_run(optix, warmup(optix), **kwargs)
  assert _all_finite((ours, state))
  np.testing.assert_array_equal(ours[0]["w"], initial_params(jnp.float32)["w"])  # rate 0: no step
  assert float(state.estim_lr) > 1e-6  # the estimate grows once the rate is > 0
  assert float(loss(ours[-1])) < float(loss(initial_params(jnp.float32)))
  theirs, their_state = _dadapt_run(optax.contrib, warmup(optax), **kwargs)
  assert not _all_finite((theirs, their_state)), "optax no longer NaNs: drop the entry"


def test_dadapt_adamw_matches_optax_when_no_rate_is_zero():
  warmup = lambda lib: lib.warmup_cosine_decay_schedule(0.1, 1.0, 5, 40)
  ours, state = _dadapt_run(optix, warmup(optix), weight_decay=0.1)
  theirs, their_state = _dadapt_run(optax.contrib, warmup(optax), weight_decay=0.1)
  for key in ("w", "b"):
    np.testing.assert_allclose(ours[-1][key], theirs[-1][key], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(state.estim_lr, their_state.estim_lr, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "ademamix", "scale_by_ademamix"])
def test_optax_inject_rounds_bf16_hyperparams(name):
  """optax.inject_hyperparams injects in the params' dtype: on bf16 params ``b2 = 0.999``
  (and AdEMAMix's ``b3 = 0.9999``) round to 1.0, the bias correction ``1 - b2**t`` is 0 and
  the second moment over it 0/0. optax's own optimizer and optix's are NaN alike there.
  With float32 hyperparameters (``hyperparam_dtype=jnp.float32``, the default of
  optix.inject_hyperparams) optix gives the float32 run's numbers to bf16's resolution."""
  assert float(jnp.asarray(0.999, jnp.bfloat16)) == 1.0
  params = initial_params(jnp.bfloat16)
  args, kwargs = OPTIMIZERS[name]
  for lib in (OPTAX, optix):
    assert not _all_finite(trajectory(build(lib, name, args, kwargs, "inject"), params)), lib
  want = trajectory(build(OPTAX, name, args, kwargs), jax.tree.map(
      lambda x: x.astype(jnp.float32), params))
  for ours in (trajectory(build(optix, name, args, kwargs, "inject", jnp.float32), params),
               trajectory(optix.inject_hyperparams(getattr(optix, name))(*args, **kwargs),
                          params)):
    for key in ("w", "b"):
      np.testing.assert_allclose(np.asarray(ours[key].astype(jnp.float32)), want[key],
                                 rtol=3e-2, atol=3e-2 * float(np.max(np.abs(want[key]))))


# --- monitor: optax's dict of measures ----------------------------------------------------


def _measures(lib):
  del lib  # the measures are the user's: the same objects for both libraries
  return {"norm": optax.tree.norm,
          "leaf_max": lambda u: jax.tree.map(lambda x: jnp.max(jnp.abs(x)), u),
          "norm_ema": optax.measure_with_ema(optax.tree.norm, decay=0.9)}


def _prefilled_optax_monitor(measures):
  """optax.monitor whose initial measurements are zeros shaped like the first ones (optix's
  start) instead of an empty dict; every later value is optax's own."""
  tx = optax.monitor(measures)

  def init(params):
    state = tx.init(params)
    first = jax.eval_shape(lambda p, s: tx.update(p, s, p)[1].measurements, params, state)
    return state._replace(measurements=jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                                    first))
  return tx._replace(init=init)


def _monitored(lib, wrapper, prefilled=False):
  """sgd, then ``lib.monitor(measures)`` (an identity) inside ``wrapper``."""
  if wrapper == "inject":
    mon = optax.inject_hyperparams(lib.monitor)(_measures(lib))
  else:
    mon = (_prefilled_optax_monitor(_measures(lib)) if prefilled
           else lib.monitor(_measures(lib)))
    if wrapper == "multisteps":
      mon = optax.MultiSteps(mon, every_k_schedule=2).gradient_transformation()
    elif wrapper == "apply_if_finite":
      mon = optax.apply_if_finite(mon, max_consecutive_errors=2)
    elif wrapper == "masked":
      mon = optax.masked(mon, {"w": True, "b": False})
    elif wrapper == "chain":
      mon = optax.chain(optax.clip_by_global_norm(1.0), mon)
  return optax.chain(optax.sgd(0.1), mon)


def _monitor_steps(lib, wrapper, params, steps=6, prefilled=False):
  """(updates, measurements) after each of ``steps`` jitted steps. Per-step jit, no scan:
  optax's state changes structure after its first update."""
  tx = _monitored(lib, wrapper, prefilled)
  state, update, out = tx.init(params), jax.jit(tx.update), []
  for _ in range(steps):
    u, state = update(grads(params), state, params)
    params = optax.apply_updates(params, u)
    out.append((u, {k: optax.tree.get(state, k) for k in ("norm", "leaf_max", "norm_ema")}))
  return out


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_monitor_matches_optax(dtype_name, wrapper):
  """``lib.monitor(measures)`` in both libraries: the same updates and the same
  measurements at every step, on the same params (bf16 included: no state of its own
  keeps a dtype). Inside MultiSteps and apply_if_finite, whose ``lax.cond`` needs one
  state structure, optax's monitor fails on its empty initial measurements (optix's
  start as zeros: test_monitor_state_keeps_one_structure); there the reference is optax's
  monitor started from those zeros."""
  def check():
    params = initial_params(DTYPES[dtype_name])
    ours = _monitor_steps(optix, wrapper, params)
    try:
      theirs = _monitor_steps(OPTAX, wrapper, params)
    except (TypeError, ValueError) as err:  # a cond's branches differ in structure
      assert wrapper in ("multisteps", "apply_if_finite"), err
      theirs = _monitor_steps(OPTAX, wrapper, params, prefilled=True)
    rtol, atol = TOLERANCE[dtype_name]
    for t, (a, b) in enumerate(zip(ours, theirs)):
      assert jax.tree.structure(a) == jax.tree.structure(b), t
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert jnp.result_type(x) == jnp.result_type(y), (t, x, y)
        np.testing.assert_allclose(np.asarray(x, np.complex128), np.asarray(y, np.complex128),
                                   rtol=rtol, atol=atol, err_msg=f"step {t}")
  if dtype_name == "float64":
    with jax.enable_x64(True):
      check()
  else:
    check()


def test_monitor_state_keeps_one_structure():
  """optix's measurements start as zeros shaped like the first measurement, so the state
  is a ``lax.scan`` carry; optax's start as an empty dict (a deliberate difference: the
  check on optax fails, and the entry on the differences page goes, once optax changes)."""
  params = initial_params(jnp.float32)
  tx = optix.monitor(_measures(optix))
  state = tx.init(params)
  assert set(state.measurements) == {"norm", "leaf_max", "norm_ema"}
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state.measurements))
  path = trajectory(optax.chain(optax.sgd(0.1), tx), params)
  assert _all_finite(path)
  assert optax.monitor(_measures(optax)).init(params).measurements == {}
  # A measure that needs an extra argument is left out of the initial dict, as in optax.
  needs_value = optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(), lambda u, s, p=None, *, value: (value, s))
  state = optix.monitor({"value": needs_value}).init(params)
  assert state.measurements == {}
  _, state = optix.monitor({"value": needs_value}).update(grads(params), state, params,
                                                           value=jnp.float32(2.0))
  assert float(state.measurements["value"]) == 2.0


def test_monitor_takes_both_forms():
  """A dict is optax's form; a transformation (or nothing) is optix's statistics."""
  params = initial_params(jnp.float32)
  assert isinstance(optix.monitor({"n": optax.tree.norm}).init(params),
                    optix.transforms.monitoring.MeasurementsState)
  for tx in (optix.monitor(optix.sgd(0.1)), optix.monitor(inner=optix.sgd(0.1)),
             optix.monitor(), optix.monitor(None, spike_factor=2.0)):
    assert isinstance(tx.init(params), optix.MonitorState)
  for bad in (lambda: optix.monitor({"n": optax.tree.norm}, spike_factor=2.0),
              lambda: optix.monitor({"n": optax.tree.norm}, inner=optix.sgd(0.1)),
              lambda: optix.monitor(optix.sgd(0.1), inner=optix.sgd(0.1)),
              lambda: optix.monitor({"n": 3.0}), lambda: optix.monitor({1: optax.tree.norm}),
              lambda: optix.monitor(42)):
    with pytest.raises(ValueError, match="monitor"):
      bad()
