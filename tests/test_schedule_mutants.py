"""optix.schedules argument by argument: every checked argument rejected with a message that
names it (and its boundary value accepted, as optax gives it a meaning), and the values of the
schedules and forms that tests/test_formulas.py does not write out (warmup-constant, the
warmup-cosine exponent and end value, warmup-exponential, piecewise interpolation, SGDR's
optax form and every option of its cycle form, inverse-sqrt without warmup).

No test module here computes at import, so mutmut's fork server can collect it before XLA
starts (``make mutate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix

NAN = float("nan")
STEPS = np.arange(0, 64)


def _values(schedule, steps=STEPS):
  return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)), np.float64)


BAD = [
    ("value", lambda: optix.constant_schedule(NAN)),
    ("init_value", lambda: optix.polynomial_schedule(NAN, 0.0, 1.0, 10)),
    ("end_value", lambda: optix.polynomial_schedule(1.0, NAN, 1.0, 10)),
    ("power", lambda: optix.polynomial_schedule(1.0, 0.0, -1.0, 10)),
    ("transition_steps", lambda: optix.polynomial_schedule(1.0, 0.0, 1.0, -1)),
    ("transition_begin", lambda: optix.polynomial_schedule(1.0, 0.0, 1.0, 10, -1)),
    ("init_value", lambda: optix.linear_schedule(NAN, 0.0, 10)),
    ("peak_value", lambda: optix.warmup_constant_schedule(0.0, NAN, 10)),
    ("init_value", lambda: optix.warmup_constant_schedule(NAN, 1.0, 10)),
    ("init_value", lambda: optix.cosine_decay_schedule(NAN, 10)),
    ("decay_steps", lambda: optix.cosine_decay_schedule(1.0, 0)),
    ("alpha", lambda: optix.cosine_decay_schedule(1.0, 10, alpha=NAN)),
    ("exponent", lambda: optix.cosine_decay_schedule(1.0, 10, exponent=0.0)),
    ("init_value", lambda: optix.warmup_cosine_decay_schedule(NAN, 1.0, 2, 10)),
    ("peak_value", lambda: optix.warmup_cosine_decay_schedule(0.0, NAN, 2, 10)),
    ("end_value", lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10, NAN)),
    ("warmup_steps", lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10)),
    ("decay_steps", lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 0, 0)),
    ("warmup_steps", lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10)),
    ("exponent", lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 2, 10, exponent=-1.0)),
    ("init_value", lambda: optix.exponential_decay(NAN, 10, 0.5)),
    ("transition_steps", lambda: optix.exponential_decay(1.0, -1, 0.5)),
    ("decay_rate", lambda: optix.exponential_decay(1.0, 10, 0.0)),
    ("transition_begin", lambda: optix.exponential_decay(1.0, 10, 0.5, -1)),
    ("end_value", lambda: optix.exponential_decay(1.0, 10, 0.5, end_value=NAN)),
    ("warmup_steps", lambda: optix.warmup_exponential_decay_schedule(0.0, 1.0, -1, 10, 0.5)),
    ("init_value", lambda: optix.piecewise_constant_schedule(NAN)),
    ("boundaries_and_scales boundary",
     lambda: optix.piecewise_constant_schedule(1.0, {-1: 0.5})),
    (r"boundaries_and_scales\[10\]", lambda: optix.piecewise_constant_schedule(1.0, {10: -0.5})),
    ("interpolate_type", lambda: optix.piecewise_interpolate_schedule("step", 1.0)),
    ("init_value", lambda: optix.piecewise_interpolate_schedule("linear", NAN)),
    ("boundaries_and_scales boundary",
     lambda: optix.piecewise_interpolate_schedule("linear", 1.0, {-1: 0.5})),
    (r"boundaries_and_scales\[10\]",
     lambda: optix.piecewise_interpolate_schedule("cosine", 1.0, {10: -0.5})),
    ("transition_steps", lambda: optix.cosine_onecycle_schedule(0, 1.0)),
    ("peak_value", lambda: optix.cosine_onecycle_schedule(10, NAN)),
    ("pct_start", lambda: optix.cosine_onecycle_schedule(10, 1.0, pct_start=0.0)),
    ("pct_start", lambda: optix.cosine_onecycle_schedule(10, 1.0, pct_start=1.0)),
    ("div_factor", lambda: optix.cosine_onecycle_schedule(10, 1.0, div_factor=0.0)),
    ("final_div_factor", lambda: optix.cosine_onecycle_schedule(10, 1.0, final_div_factor=0.0)),
    ("transition_steps", lambda: optix.linear_onecycle_schedule(0, 1.0)),
    ("peak_value", lambda: optix.linear_onecycle_schedule(10, NAN)),
    ("pct_start", lambda: optix.linear_onecycle_schedule(10, 1.0, pct_start=1.5)),
    ("div_factor", lambda: optix.linear_onecycle_schedule(10, 1.0, div_factor=0.0)),
    ("final_div_factor", lambda: optix.linear_onecycle_schedule(10, 1.0, final_div_factor=0.0)),
    ("pct_final", lambda: optix.linear_onecycle_schedule(10, 1.0, 0.3, pct_final=0.3)),
    ("pct_final", lambda: optix.linear_onecycle_schedule(10, 1.0, 0.3, pct_final=1.5)),
    (r"boundaries must have len\(schedules\) - 1 = 1 entries, got 2",
     lambda: optix.join_schedules([optix.constant_schedule(1.0)] * 2, [1, 2])),
    (r"boundaries\[0\]", lambda: optix.join_schedules([optix.constant_schedule(1.0)] * 2, [-1])),
    (r"boundaries\[1\]",
     lambda: optix.join_schedules([optix.constant_schedule(1.0)] * 3, [10, 5])),
    ("peak_value", lambda: optix.wsd_schedule(NAN, 1, 10, 2)),
    ("end_value", lambda: optix.wsd_schedule(1.0, 1, 10, 2, end_value=NAN)),
    ("init_value", lambda: optix.wsd_schedule(1.0, 1, 10, 2, init_value=NAN)),
    ("warmup_steps", lambda: optix.wsd_schedule(1.0, -1, 10, 2)),
    ("total_steps", lambda: optix.wsd_schedule(1.0, 0, 0, 1)),
    ("decay_steps", lambda: optix.wsd_schedule(1.0, 1, 10, 0)),
    ("decay_shape", lambda: optix.wsd_schedule(1.0, 1, 10, 2, decay_shape="step")),
    (r"warmup_steps \+ decay_steps must be <= total_steps \(10\), got 5 \+ 6",
     lambda: optix.wsd_schedule(1.0, 5, 10, 6)),
    ("branch_step", lambda: optix.wsd_decay_branch(1.0, 10, 9, 5)),
    ("peak_value", lambda: optix.inverse_sqrt_schedule(NAN, 10)),
    ("init_value", lambda: optix.inverse_sqrt_schedule(1.0, 10, init_value=NAN)),
    ("warmup_steps", lambda: optix.inverse_sqrt_schedule(1.0, -1)),
    ("timescale", lambda: optix.inverse_sqrt_schedule(1.0, 10, timescale=0)),
    ("cosine_kwargs must hold at least one cycle, got none", lambda: optix.sgdr_schedule([])),
    (r"cosine_kwargs\[1\] must give decay_steps, got \['init_value', 'peak_value'\]",
     lambda: optix.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=0,
                                       decay_steps=5), dict(init_value=0.0, peak_value=1.0)])),
    ("peak_value", lambda: optix.sgdr_schedule(NAN, first_cycle_steps=10, num_cycles=2)),
    ("first_cycle_steps", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=0, num_cycles=2)),
    ("num_cycles", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=0)),
    ("cycle_mult", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2,
                                               cycle_mult=0.9)),
    ("end_value", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2,
                                              end_value=NAN)),
    ("warmup_steps", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2,
                                                 warmup_steps=-1)),
    ("peak_decay", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2,
                                               peak_decay=0.0)),
    ("peak_decay", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2,
                                               peak_decay=1.5)),
    (r"warmup_steps must be < first_cycle_steps \(10\), got 10",
     lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2, warmup_steps=10)),
    (r"sgdr_schedule\(peak_value, \.\.\.\) needs first_cycle_steps= and num_cycles=; pass a "
     r"list of warmup_cosine_decay_schedule arguments for optax's form",
     lambda: optix.sgdr_schedule(1.0)),
    (r"sgdr_schedule\(peak_value, \.\.\.\) needs",  # a cycle-form argument on optax's form
     lambda: optix.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=0,
                                       decay_steps=5)], first_cycle_steps=10)),
    ("sgdr_schedule", lambda: optix.sgdr_schedule(jnp.asarray(1.0))),
    ("sgdr_schedule", lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10)),
    ("sgdr_schedule", lambda: optix.sgdr_schedule(1.0, num_cycles=2)),
    ("base_value", lambda: optix.cyclical_schedule(NAN, 1.0, 10)),
    ("max_value", lambda: optix.cyclical_schedule(0.0, NAN, 10)),
    ("step_size", lambda: optix.cyclical_schedule(0.0, 1.0, 0)),
    ("mode", lambda: optix.cyclical_schedule(0.0, 1.0, 10, mode="sine")),
    ("gamma", lambda: optix.cyclical_schedule(0.0, 1.0, 10, "exp_range", 0.0)),
    ("gamma", lambda: optix.cyclical_schedule(0.0, 1.0, 10, "exp_range", 1.5)),
]


def _id(i, name):
  """A node id safe on a command line (mutmut passes the ids it runs to pytest)."""
  return f"{i}-" + "".join(c if c.isalnum() else "_" for c in name[:30])


@pytest.mark.parametrize("name, build", BAD, ids=[_id(i, n) for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_are_named(name, build):
  with pytest.raises(ValueError, match=f"^{name}"):
    build()


GOOD = [
    lambda: optix.polynomial_schedule(1.0, 0.0, 0.5, 0, 0),
    lambda: optix.warmup_constant_schedule(0.0, 1.0, 0),
    lambda: optix.cosine_decay_schedule(1.0, 1),
    lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 0, 1),
    lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 9, 10),
    lambda: optix.exponential_decay(1.0, 0, 0.5, 0),
    lambda: optix.warmup_exponential_decay_schedule(0.0, 1.0, 0, 0, 2.0),
    lambda: optix.piecewise_constant_schedule(1.0, {0: 0.0}),
    lambda: optix.piecewise_interpolate_schedule("linear", 1.0, {0: 0.0}),
    lambda: optix.piecewise_interpolate_schedule("cosine", 1.0, {0: 0.0}),
    lambda: optix.cosine_onecycle_schedule(1, 1.0, pct_start=0.5, div_factor=0.5,
                                           final_div_factor=0.5),
    lambda: optix.linear_onecycle_schedule(1, 1.0, 0.5, pct_final=1.0),
    lambda: optix.join_schedules([optix.constant_schedule(1.0)] * 3, [0, 0]),
    lambda: optix.join_schedules([optix.constant_schedule(1.0)] * 3, [5, 5]),
    lambda: optix.wsd_schedule(1.0, 0, 1, 1),
    lambda: optix.wsd_schedule(1.0, 4, 10, 6),
    lambda: optix.wsd_decay_branch(1.0, 10, 10, 1),
    lambda: optix.inverse_sqrt_schedule(1.0, 0, timescale=1),
    lambda: optix.sgdr_schedule(1.0, first_cycle_steps=1, num_cycles=1, cycle_mult=1.0,
                                warmup_steps=0, peak_decay=1.0),
    lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=2, warmup_steps=9),
    lambda: optix.cyclical_schedule(0.0, 1.0, 1, "triangular2", 1.0),
    lambda: optix.cyclical_schedule(0.0, 1.0, 1, "exp_range", 1.0),
]


@pytest.mark.parametrize("build", GOOD, ids=[str(i) for i in range(len(GOOD))])
def test_boundary_values_are_accepted(build):
  assert callable(build())


def test_warmup_constant_values():
  s = optix.warmup_constant_schedule(0.2, 1.0, 8)
  want = [0.2 + 0.8 * min(t, 8) / 8 for t in STEPS]
  np.testing.assert_allclose(_values(s), want, rtol=1e-6)
  np.testing.assert_allclose(_values(optix.warmup_constant_schedule(0.2, 1.0, 0)), 0.2, rtol=1e-6)


def test_warmup_cosine_exponent_and_end_value():
  s = optix.warmup_cosine_decay_schedule(0.1, 2.0, 8, 40, end_value=0.5, exponent=2.0)

  def by_hand(t):
    if t < 8:
      return 0.1 + 1.9 * t / 8
    x = min(t - 8, 32) / 32
    return 0.5 + 1.5 * (0.5 * (1 + np.cos(np.pi * x))) ** 2

  np.testing.assert_allclose(_values(s), [by_hand(t) for t in STEPS], rtol=1e-5)


@pytest.mark.parametrize("staircase", [False, True])
def test_warmup_exponential_decay_values(staircase):
  s = optix.warmup_exponential_decay_schedule(0.1, 1.0, 10, 5, 0.5, transition_begin=3,
                                              staircase=staircase, end_value=0.2)

  def by_hand(t):
    if t < 10:
      return 0.1 + 0.9 * t / 10
    e = max(t - 10 - 3, 0) / 5
    return max(0.5 ** (np.floor(e) if staircase else e), 0.2)

  np.testing.assert_allclose(_values(s), [by_hand(t) for t in STEPS], rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_piecewise_interpolate_values(kind):
  s = optix.piecewise_interpolate_schedule(kind, 2.0, {10: 0.5, 30: 3.0})
  knots, vals = [0, 10, 30], [2.0, 1.0, 3.0]

  def by_hand(t):
    if t >= 30:
      return 3.0
    k = 0 if t < 10 else 1
    x = (t - knots[k]) / (knots[k + 1] - knots[k])
    w = x if kind == "linear" else 0.5 * (1 - np.cos(np.pi * x))
    return vals[k] + (vals[k + 1] - vals[k]) * w

  np.testing.assert_allclose(_values(s), [by_hand(t) for t in STEPS], rtol=1e-5)


def test_piecewise_constant_values():
  s = optix.piecewise_constant_schedule(2.0, {10: 0.5, 30: 3.0})
  want = [2.0 * (0.5 if t >= 10 else 1.0) * (3.0 if t >= 30 else 1.0) for t in STEPS]
  np.testing.assert_allclose(_values(s), want, rtol=1e-6)


def test_sgdr_optax_form_runs_the_cycles_one_after_the_other():
  cycles = [dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10, end_value=0.1),
            dict(init_value=0.2, peak_value=0.5, warmup_steps=0, decay_steps=20, end_value=0.0,
                 exponent=2.0)]
  got = _values(optix.sgdr_schedule(iter(cycles)))
  want = np.concatenate([_values(optax.warmup_cosine_decay_schedule(**cycles[0]), STEPS[:10]),
                         _values(optax.warmup_cosine_decay_schedule(**cycles[1]), STEPS[:54])])
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("init_value", [None, 0.3])
def test_sgdr_cycle_form_every_option(init_value):
  s = optix.sgdr_schedule(2.0, first_cycle_steps=6, num_cycles=3, cycle_mult=1.5, end_value=0.1,
                          warmup_steps=2, init_value=init_value, peak_decay=0.5)
  lengths = [6, 9, 14]  # round(6 · 1.5^k): 6, 9, 13.5 -> 14
  start = 0.1 if init_value is None else init_value
  want = []
  for k, n in enumerate(lengths):
    cycle = optax.warmup_cosine_decay_schedule(start, 2.0 * 0.5 ** k, 2, n, 0.1)
    want.append(_values(cycle, np.arange(n if k < 2 else 64 - 15)))
  np.testing.assert_allclose(_values(s), np.concatenate(want), rtol=1e-6)


def test_sgdr_single_step_cycles():
  s = optix.sgdr_schedule(1.0, first_cycle_steps=1, num_cycles=3, end_value=0.25)
  np.testing.assert_allclose(_values(s, np.arange(5)), [1.0, 1.0, 1.0, 0.25, 0.25], rtol=1e-6)


def test_inverse_sqrt_without_warmup_and_with_timescale_one():
  s = optix.inverse_sqrt_schedule(2.0, 0)  # timescale max(0, 1) = 1: 2 / √(t + 1)
  np.testing.assert_allclose(_values(s), 2.0 / np.sqrt(STEPS + 1.0), rtol=1e-6)
  s = optix.inverse_sqrt_schedule(2.0, 5, init_value=0.5, timescale=1)
  want = [0.5 + 1.5 * t / 5 if t < 5 else 2.0 / np.sqrt(t - 5 + 1.0) for t in STEPS]
  np.testing.assert_allclose(_values(s), want, rtol=1e-6)


DEFAULTS = [
    # (the schedule built with its defaults, the same with the documented defaults spelled out)
    (lambda: optix.polynomial_schedule(1.0, 0.1, 2.0, 20),
     lambda: optix.polynomial_schedule(1.0, 0.1, 2.0, 20, transition_begin=0)),
    (lambda: optix.linear_schedule(1.0, 0.1, 20),
     lambda: optix.polynomial_schedule(1.0, 0.1, 1.0, 20, 0)),
    (lambda: optix.cosine_decay_schedule(1.0, 20),
     lambda: optix.cosine_decay_schedule(1.0, 20, alpha=0.0, exponent=1.0)),
    (lambda: optix.warmup_cosine_decay_schedule(0.1, 1.0, 5, 30),
     lambda: optix.warmup_cosine_decay_schedule(0.1, 1.0, 5, 30, end_value=0.0, exponent=1.0)),
    (lambda: optix.exponential_decay(1.0, 5, 0.5),
     lambda: optix.exponential_decay(1.0, 5, 0.5, transition_begin=0, staircase=False,
                                     end_value=None)),
    (lambda: optix.warmup_exponential_decay_schedule(0.1, 1.0, 5, 5, 0.5),
     lambda: optix.warmup_exponential_decay_schedule(0.1, 1.0, 5, 5, 0.5, transition_begin=0,
                                                     staircase=False, end_value=None)),
    (lambda: optix.piecewise_constant_schedule(2.0),
     lambda: optix.constant_schedule(2.0)),
    (lambda: optix.piecewise_interpolate_schedule("cosine", 2.0),
     lambda: optix.constant_schedule(2.0)),
    (lambda: optix.cosine_onecycle_schedule(50, 1.0),
     lambda: optix.cosine_onecycle_schedule(50, 1.0, pct_start=0.3, div_factor=25.0,
                                            final_div_factor=1e4)),
    (lambda: optix.linear_onecycle_schedule(50, 1.0),
     lambda: optix.linear_onecycle_schedule(50, 1.0, pct_start=0.3, pct_final=0.85,
                                            div_factor=25.0, final_div_factor=1e4)),
    (lambda: optix.wsd_schedule(1.0, 5, 40, 10),
     lambda: optix.wsd_schedule(1.0, 5, 40, 10, end_value=0.0, init_value=0.0,
                                decay_shape="linear")),
    (lambda: optix.wsd_decay_branch(1.0, 5, 20, 10),
     lambda: optix.wsd_decay_branch(1.0, 5, 20, 10, end_value=0.0, init_value=0.0,
                                    decay_shape="linear")),
    (lambda: optix.inverse_sqrt_schedule(1.0, 4),
     lambda: optix.inverse_sqrt_schedule(1.0, 4, init_value=0.0, timescale=4)),
    (lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=3),
     lambda: optix.sgdr_schedule(1.0, first_cycle_steps=10, num_cycles=3, cycle_mult=1.0,
                                 end_value=0.0, warmup_steps=0, init_value=0.0,
                                 peak_decay=1.0)),
    (lambda: optix.cyclical_schedule(0.1, 1.0, 5),
     lambda: optix.cyclical_schedule(0.1, 1.0, 5, mode="triangular", gamma=1.0)),
    (lambda: optix.cyclical_schedule(0.1, 1.0, 5, "exp_range"),
     lambda: optix.cyclical_schedule(0.1, 1.0, 5, mode="exp_range", gamma=1.0)),
]


@pytest.mark.parametrize("defaults, spelled", DEFAULTS, ids=[str(i) for i in range(len(DEFAULTS))])
def test_defaults_are_the_documented_ones(defaults, spelled):
  np.testing.assert_array_equal(_values(defaults()), _values(spelled()))


def test_own_schedules_return_float32_under_x64():
  """optix's own schedules compute in float32 whatever the default float (the step is cast)."""
  with jax.enable_x64(True):
    for s in (optix.inverse_sqrt_schedule(1.0, 4), optix.wsd_schedule(1.0, 2, 10, 3),
              optix.cyclical_schedule(0.1, 1.0, 5)):
      assert s(jnp.asarray(3, jnp.int32)).dtype == jnp.float32
      assert s(7).dtype == jnp.float32
