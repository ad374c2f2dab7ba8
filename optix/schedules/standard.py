"""The schedules optax has, with their arguments checked.

optix takes each one's signature and returns optax's own schedule, and adds what
optax leaves out: every argument is checked when the schedule is built
(``ValueError`` naming the argument and its range, where optax logs and silently
returns a constant or clamps). Zero-length phases keep optax's meaning (a
``transition_steps`` or ``warmup_steps`` of 0 holds the initial value, or skips
the warmup).
"""

from typing import Callable, Mapping, Optional, Sequence

import jax.numpy as jnp
import optax

from optix import _validate as validate

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def constant_schedule(value: float) -> Schedule:
  """The same value at every step.

  Args:
    value: the value returned at every step; required. Valid range: finite
      (ValueError otherwise).

  Returns:
    A schedule: step count -> ``value``.
  """
  validate.finite("value", value)
  return optax.constant_schedule(value)


def polynomial_schedule(init_value: float, end_value: float, power: float,
                        transition_steps: int, transition_begin: int = 0) -> Schedule:
  r"""Power-``p`` interpolation from ``init_value`` (I) to ``end_value`` (E).

  .. math:: \eta_t = (I - E)\,\Big(1 - \frac{\min(\max(t - B, 0), T)}{T}\Big)^p + E

  ``init_value`` until ``transition_begin`` (B), then the interpolation over
  ``transition_steps`` (T), then ``end_value``.
  ``transition_steps=0`` is the constant ``init_value``, as in optax (a warmup of
  zero steps). Negative step counts raise (optax logs and clamps them).

  Args:
    init_value: I, the value up to step B; required. Valid range: finite
      (ValueError otherwise).
    end_value: E, the value from step B + T on; required. Valid range: finite.
    power: p, the exponent of the interpolation (1 is linear; > 1 falls fast
      first); required. Valid range: > 0 (ValueError otherwise).
    transition_steps: T, the length of the interpolation; required. Valid
      range: an integer >= 0 (ValueError otherwise; 0: constant ``init_value``).
    transition_begin: B, steps to hold ``init_value`` first. Default 0 (start at
      once). Valid range: an integer >= 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("init_value", init_value)
  validate.finite("end_value", end_value)
  validate.positive("power", power)
  validate.integer("transition_steps", transition_steps, 0)
  validate.integer("transition_begin", transition_begin, 0)
  return optax.polynomial_schedule(init_value, end_value, power, transition_steps,
                                   transition_begin)


def linear_schedule(init_value: float, end_value: float, transition_steps: int,
                    transition_begin: int = 0) -> Schedule:
  """Linear interpolation from ``init_value`` to ``end_value``:
  :func:`polynomial_schedule` with power 1; ``transition_steps=0`` is the constant
  ``init_value``.

  Args:
    init_value: the value up to ``transition_begin``; required. Valid range:
      finite (ValueError otherwise).
    end_value: the value reached after ``transition_steps`` more steps and kept
      after; required. Valid range: finite (ValueError otherwise).
    transition_steps: length of the ramp; required. Valid range: an integer
      >= 0 (ValueError otherwise).
    transition_begin: steps before the ramp starts. Default 0. Valid range: an
      integer >= 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  return polynomial_schedule(init_value, end_value, 1.0, transition_steps, transition_begin)


def warmup_constant_schedule(init_value: float, peak_value: float,
                             warmup_steps: int) -> Schedule:
  """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
  ``peak_value``; ``warmup_steps=0`` is ``init_value`` throughout, as in optax.

  Args:
    init_value: the value at step 0; required (0 is the usual warmup start).
      Valid range: finite (ValueError otherwise).
    peak_value: the value held after the warmup; required. Valid range: finite.
    warmup_steps: the warmup's length; required. Valid range: an integer >= 0
      (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("peak_value", peak_value)
  return polynomial_schedule(init_value, peak_value, 1.0, warmup_steps)


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0,
                          exponent: float = 1.0) -> Schedule:
  r"""Cosine decay (Loshchilov & Hutter, arXiv 1608.03983).

  .. math:: \eta_t = I\,\Big[(1-\alpha)\Big(\tfrac12\big(1 + \cos\tfrac{\pi \min(t, T)}{T}\big)\Big)^p
     + \alpha\Big]

  ``alpha`` is the final value as a fraction of ``init_value`` (any finite value:
  a negative one ends below zero). ``decay_steps`` must be positive, as in optax.

  Args:
    init_value: I, the value at step 0; required. Valid range: finite
      (ValueError otherwise).
    decay_steps: T, the steps over which the value falls to ``alpha · I`` (and
      stays); required. Valid range: an integer >= 1 (ValueError otherwise).
    alpha: α, the final value as a fraction of ``init_value``. Default 0 (decay
      to zero, the paper's). Valid range: finite (ValueError otherwise).
    exponent: p, a power on the cosine factor (> 1 decays earlier). Default 1
      (the plain cosine). Valid range: > 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("init_value", init_value)
  validate.integer("decay_steps", decay_steps, 1)
  validate.finite("alpha", alpha)
  validate.positive("exponent", exponent)
  return optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent)


def warmup_cosine_decay_schedule(init_value: float, peak_value: float, warmup_steps: int,
                                 decay_steps: int, end_value: float = 0.0,
                                 exponent: float = 1.0) -> Schedule:
  """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
  cosine decay to ``end_value`` at step ``decay_steps`` (which counts the warmup).

  Example: ``(0, 3e-4, 2_000, 100_000, 3e-5)`` gives 1.5e-4 at step 1k and
  1.6933e-4 at step 50k.

  Args:
    init_value: the value at step 0; required. Valid range: finite (ValueError
      otherwise).
    peak_value: the value at the end of the warmup; required. Valid range: finite.
    warmup_steps: the warmup's length; required. Valid range: an integer >= 0,
      below ``decay_steps`` (ValueError otherwise).
    decay_steps: the step at which the value reaches ``end_value``, warmup
      included (optax's convention); required. Valid range: an integer >= 1.
    end_value: the value after ``decay_steps``. Default 0 (decay to zero).
      Valid range: finite (ValueError otherwise).
    exponent: a power on the cosine factor, as in
      :func:`cosine_decay_schedule`. Default 1 (the plain cosine). Valid range: > 0.

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("init_value", init_value)
  validate.finite("peak_value", peak_value)
  validate.finite("end_value", end_value)
  validate.integer("warmup_steps", warmup_steps, 0)
  validate.integer("decay_steps", decay_steps, 1)
  if warmup_steps >= decay_steps:
    raise ValueError(f"warmup_steps must be < decay_steps ({decay_steps}), got {warmup_steps}")
  validate.positive("exponent", exponent)
  return optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
                                            end_value, exponent)


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value: Optional[float] = None) -> Schedule:
  r""":math:`I\, r^{(t-B)/T}` after ``transition_begin`` (B); ``staircase=True`` floors
  the exponent, which is step decay (multiply by ``decay_rate`` every T steps).
  ``end_value`` bounds the value (below when r < 1, above when r > 1).

  ``transition_steps=0`` is the constant ``init_value``, as in optax. A
  ``decay_rate`` of 0 or below raises (optax logs and returns a constant for 0).

  Args:
    init_value: I, the value up to step B; required. Valid range: finite
      (ValueError otherwise).
    transition_steps: T, the steps over which the value is multiplied by r
      once; required. Valid range: an integer >= 0 (ValueError otherwise; 0:
      constant ``init_value``).
    decay_rate: r, the factor per T steps (< 1 decays, > 1 grows); required.
      Valid range: > 0 (ValueError otherwise).
    transition_begin: B, steps to hold ``init_value`` first. Default 0. Valid
      range: an integer >= 0 (ValueError otherwise).
    staircase: floor :math:`(t-B)/T`, so the value drops in steps. Default False
      (smooth decay).
    end_value: a bound on the value (a floor when r < 1, a ceiling when r > 1);
      None (default): unbounded. Valid range: finite (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("init_value", init_value)
  validate.integer("transition_steps", transition_steps, 0)
  validate.positive("decay_rate", decay_rate)
  validate.integer("transition_begin", transition_begin, 0)
  if end_value is not None:
    validate.finite("end_value", end_value)
  return optax.exponential_decay(init_value, transition_steps, decay_rate, transition_begin,
                                 staircase, end_value)


def warmup_exponential_decay_schedule(init_value: float, peak_value: float, warmup_steps: int,
                                      transition_steps: int, decay_rate: float,
                                      transition_begin: int = 0, staircase: bool = False,
                                      end_value: Optional[float] = None) -> Schedule:
  """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
  :func:`exponential_decay` from ``peak_value`` (counting from the end of the warmup).

  Args:
    init_value: the value at step 0; required. Valid range: finite (ValueError
      otherwise).
    peak_value: the value at the end of the warmup, where the decay starts;
      required. Valid range: finite (ValueError otherwise).
    warmup_steps: the warmup's length; required. Valid range: an integer >= 0.
    transition_steps: steps per factor ``decay_rate`` of the decay, as in
      :func:`exponential_decay`; required. Valid range: an integer >= 0.
    decay_rate: the factor per ``transition_steps``; required. Valid range: > 0
      (ValueError otherwise).
    transition_begin: steps after the warmup that hold ``peak_value`` before
      the decay. Default 0. Valid range: an integer >= 0.
    staircase: step-wise instead of smooth decay. Default False.
    end_value: bound of the decayed value (floor when ``decay_rate`` < 1); None
      (default): none. Valid range: finite.

  Returns:
    A schedule: step count -> value.
  """
  validate.integer("warmup_steps", warmup_steps, 0)
  return join_schedules(
      [linear_schedule(init_value, peak_value, warmup_steps),
       exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase,
                         end_value)], [warmup_steps])


def piecewise_constant_schedule(init_value: float,
                                boundaries_and_scales: Optional[Mapping[int, float]] = None
                                ) -> Schedule:
  """``init_value`` times the product of every scale whose boundary step has passed.

  Args:
    init_value: the value before the first boundary; required. Valid range:
      finite (ValueError otherwise).
    boundaries_and_scales: ``{step: scale}``: from ``step`` on, the value is
      multiplied by ``scale`` (e.g. ``{30_000: 0.1, 60_000: 0.1}`` for step
      decay). None (default): constant ``init_value``. Valid range: steps
      integers >= 0, scales >= 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.finite("init_value", init_value)
  for boundary, scale in (boundaries_and_scales or {}).items():
    validate.integer("boundaries_and_scales boundary", boundary, 0)
    validate.nonnegative(f"boundaries_and_scales[{boundary}]", scale)
  return optax.piecewise_constant_schedule(init_value, boundaries_and_scales)


def piecewise_interpolate_schedule(interpolate_type: str, init_value: float,
                                   boundaries_and_scales: Optional[Mapping[int, float]] = None
                                   ) -> Schedule:
  """Like :func:`piecewise_constant_schedule`, but each change is reached by
  ``"linear"`` or ``"cosine"`` interpolation from the previous boundary.

  Args:
    interpolate_type: ``"linear"`` or ``"cosine"``, the curve between two
      boundaries; required (ValueError for any other value).
    init_value: the value at step 0; required. Valid range: finite (ValueError
      otherwise).
    boundaries_and_scales: ``{step: scale}``: the value reaches ``scale`` times
      the previous boundary's value at ``step``. None (default): constant
      ``init_value``. Valid range: steps integers >= 0, scales >= 0 (ValueError
      otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.one_of("interpolate_type", interpolate_type, ("linear", "cosine"))
  validate.finite("init_value", init_value)
  for boundary, scale in (boundaries_and_scales or {}).items():
    validate.integer("boundaries_and_scales boundary", boundary, 0)
    validate.nonnegative(f"boundaries_and_scales[{boundary}]", scale)
  return optax.piecewise_interpolate_schedule(interpolate_type, init_value,
                                              boundaries_and_scales)


def _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor):
  validate.integer("transition_steps", transition_steps, 1)
  validate.finite("peak_value", peak_value)
  validate.in_range("pct_start", pct_start, 0.0, 1.0, low_closed=False, high_closed=False)
  validate.positive("div_factor", div_factor)
  validate.positive("final_div_factor", final_div_factor)


def cosine_onecycle_schedule(transition_steps: int, peak_value: float, pct_start: float = 0.3,
                             div_factor: float = 25.0, final_div_factor: float = 1e4
                             ) -> Schedule:
  """One-cycle (Smith & Topin 2017, arXiv 1708.07120): cosine rise from
  ``peak/div_factor`` to ``peak`` over ``pct_start`` of the steps, then cosine fall
  to ``peak/(div_factor·final_div_factor)``.

  Args:
    transition_steps: the cycle's length; after it the value stays at the
      final one. Required. Valid range: an integer >= 1 (ValueError otherwise).
    peak_value: the maximum, reached at step ``pct_start · transition_steps``;
      required. Valid range: finite (ValueError otherwise).
    pct_start: the fraction of the cycle spent rising. Default 0.3 (optax's and
      PyTorch's). Valid range: (0, 1) (ValueError otherwise).
    div_factor: the start value is ``peak_value / div_factor``. Default 25
      (PyTorch's). Valid range: > 0.
    final_div_factor: the end value is the start value over this. Default 1e4
      (PyTorch's). Valid range: > 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor)
  return optax.cosine_onecycle_schedule(transition_steps, peak_value, pct_start, div_factor,
                                        final_div_factor)


def linear_onecycle_schedule(transition_steps: int, peak_value: float, pct_start: float = 0.3,
                             pct_final: float = 0.85, div_factor: float = 25.0,
                             final_div_factor: float = 1e4) -> Schedule:
  """One-cycle with three linear phases: up to ``peak`` at ``pct_start``, back to
  ``peak/div_factor`` at ``pct_final``, then down to ``peak/div_factor/final_div_factor``.

  Args:
    transition_steps: the cycle's length; after it the value stays at the
      final one. Required. Valid range: an integer >= 1 (ValueError otherwise).
    peak_value: the maximum, at step ``pct_start · transition_steps``; required.
      Valid range: finite (ValueError otherwise).
    pct_start: fraction of the cycle at which the peak is reached. Default 0.3.
      Valid range: (0, 1) (ValueError otherwise).
    pct_final: fraction of the cycle at which the value is back at the start
      value; the last phase anneals below it. Default 0.85 (optax's). Valid
      range: (``pct_start``, 1] (ValueError otherwise).
    div_factor: the start value is ``peak_value / div_factor``. Default 25.
      Valid range: > 0 (ValueError otherwise).
    final_div_factor: the end value is the start value over this. Default 1e4.
      Valid range: > 0 (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor)
  validate.in_range("pct_final", pct_final, pct_start, 1.0, low_closed=False)
  return optax.linear_onecycle_schedule(transition_steps, peak_value, pct_start, pct_final,
                                        div_factor, final_div_factor)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
  """``schedules[i]`` runs from ``boundaries[i-1]``, seeing the steps since that boundary.

  Args:
    schedules: the schedules to run one after the other; required.
    boundaries: the steps at which each next schedule takes over; required.
      Valid range: ``len(schedules) - 1`` integers >= 0 in non-decreasing order
      (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  if len(boundaries) != len(schedules) - 1:
    raise ValueError(f"boundaries must have len(schedules) - 1 = {len(schedules) - 1} "
                     f"entries, got {len(boundaries)}")
  for i, b in enumerate(boundaries):
    validate.integer(f"boundaries[{i}]", b, boundaries[i - 1] if i else 0)
  return optax.join_schedules(schedules, boundaries)
