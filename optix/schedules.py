r"""Schedules: functions of the integer step that return a hyperparameter value.

Where optax already has the schedule (constant, linear, polynomial, cosine,
warmup-cosine, warmup-constant, exponential/step, warmup-exponential, piecewise,
one-cycle, join, SGDR) optix takes its signature and returns optax's schedule, and
adds what optax leaves out: every argument is checked when the schedule is built
(``ValueError`` naming the argument and its range, where optax logs and silently
returns a constant or clamps). Zero-length phases keep optax's meaning (a
``transition_steps`` or ``warmup_steps`` of 0 holds the initial value, or skips
the warmup). The schedules optax lacks are written here:

* ``wsd_schedule`` — warmup, stable, decay (Hu et al. 2024, MiniCPM,
  arXiv 2404.06395; Hägele et al. 2024, arXiv 2405.18392), with linear, cosine
  or 1-sqrt decay, and ``wsd_decay_branch`` to start the decay from any
  checkpoint of a stable run.
* ``sgdr_schedule`` also takes a cycle form: cosine with warm restarts and a
  cycle-length multiplier (Loshchilov & Hutter 2017, arXiv 1608.03983).
* ``inverse_sqrt_schedule`` — linear warmup then 1/√t (Vaswani et al. 2017,
  arXiv 1706.03762).
* ``cyclical_schedule`` — triangular cyclical learning rates (Smith 2017,
  arXiv 1506.01186).

Every schedule is jit-safe: it takes an int (or int32 array) step and uses only
``jnp`` operations.
"""

import numbers
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


# -- schedules optax does not have ---------------------------------------------------------

_DECAY_SHAPES = {
    # fraction of (peak - end) left after a fraction x in [0, 1] of the decay
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: 0.5 * (1.0 + jnp.cos(jnp.pi * x)),
    "sqrt": lambda x: 1.0 - jnp.sqrt(x),
}


def wsd_schedule(peak_value: float, warmup_steps: int, total_steps: int, decay_steps: int,
                 end_value: float = 0.0, init_value: float = 0.0,
                 decay_shape: str = "linear") -> Schedule:
  r"""Warmup-stable-decay (MiniCPM, arXiv 2404.06395; Hägele et al., arXiv 2405.18392).

  .. math::
     \eta_t = \begin{cases}
       I + (P - I)\, t/W & t < W \\
       P & W \le t < S \\
       E + (P - E)\, f\big((t - S)/D\big) & S \le t < N \\
       E & t \ge N \end{cases}, \qquad S = N - D

  with ``f`` the ``decay_shape``: ``linear`` 1 − x, ``cosine`` ½(1 + cos πx), or
  ``sqrt`` 1 − √x (the "1-sqrt" cooldown Hägele et al. found best). The stable
  phase lets one run serve every budget: decay from any checkpoint with
  :func:`wsd_decay_branch`. Example: ``(3e-4, 2_000, 100_000, 20_000, 3e-5)``
  gives 3e-4 at step 80k and 1.65e-4 at step 90k.

  Args:
    peak_value: P, the stable phase's value; required. Valid range: finite
      (ValueError otherwise).
    warmup_steps: W, steps of the linear warmup from ``init_value``; required
      (0: start at the peak). Valid range: an integer >= 0.
    total_steps: N, the whole schedule's length; after it the value stays
      ``end_value``. Required. Valid range: an integer >= 1.
    decay_steps: D, the length of the final decay; required (10-20% of N is
      the usual choice, Hägele et al.). Valid range: an integer >= 1 with
      W + D <= N (ValueError otherwise).
    end_value: E, the value reached at step N. Default 0 (decay to zero).
      Valid range: finite.
    init_value: I, the value at step 0 of the warmup. Default 0. Valid range:
      finite.
    decay_shape: ``"linear"`` (default, MiniCPM's), ``"cosine"`` or ``"sqrt"``
      (ValueError otherwise).

  Returns:
    A schedule: step count -> float32 value.
  """
  validate.finite("peak_value", peak_value)
  validate.finite("end_value", end_value)
  validate.finite("init_value", init_value)
  validate.integer("warmup_steps", warmup_steps, 0)
  validate.integer("total_steps", total_steps, 1)
  validate.integer("decay_steps", decay_steps, 1)
  validate.one_of("decay_shape", decay_shape, _DECAY_SHAPES)
  if warmup_steps + decay_steps > total_steps:
    raise ValueError(f"warmup_steps + decay_steps must be <= total_steps ({total_steps}), "
                     f"got {warmup_steps} + {decay_steps}")
  shape = _DECAY_SHAPES[decay_shape]
  decay_start = total_steps - decay_steps

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
    x = jnp.clip((t - decay_start) / decay_steps, 0.0, 1.0)
    decay = jnp.where(t >= total_steps, end_value, end_value + (peak_value - end_value) * shape(x))
    return jnp.where(t < warmup_steps, warm, jnp.where(t < decay_start, peak_value, decay))

  return schedule


def wsd_decay_branch(peak_value: float, warmup_steps: int, branch_step: int, decay_steps: int,
                     end_value: float = 0.0, init_value: float = 0.0,
                     decay_shape: str = "linear") -> Schedule:
  """The WSD schedule of a run that branches off a stable run at ``branch_step``.

  Identical to the stable run (warmup then ``peak_value``) up to ``branch_step``,
  then decays to ``end_value`` over ``decay_steps``: restore the checkpoint taken
  at ``branch_step``, swap in this schedule, and train ``decay_steps`` more steps
  ("apply the decay retroactively to any checkpoint").

  Args:
    peak_value: the stable phase's value, as in :func:`wsd_schedule`; required.
      Valid range: finite (ValueError otherwise).
    warmup_steps: the stable run's warmup length; required. Valid range: an
      integer >= 0.
    branch_step: the step of the checkpoint the decay starts from; required.
      Valid range: an integer >= ``warmup_steps`` (ValueError otherwise).
    decay_steps: the decay's length; the schedule ends at ``branch_step +
      decay_steps``. Required. Valid range: an integer >= 1.
    end_value: the value the decay reaches. Default 0. Valid range: finite.
    init_value: the warmup's start value. Default 0. Valid range: finite.
    decay_shape: ``"linear"`` (default, MiniCPM's), ``"cosine"`` or ``"sqrt"``
      (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  validate.integer("branch_step", branch_step, warmup_steps)
  return wsd_schedule(peak_value, warmup_steps, branch_step + decay_steps, decay_steps,
                      end_value, init_value, decay_shape)


def _sgdr_from_cosine_kwargs(cosine_kwargs) -> Schedule:
  """optax's form: one ``warmup_cosine_decay_schedule`` per dict, each lasting its
  ``decay_steps``."""
  cycles = [dict(kwargs) for kwargs in cosine_kwargs]
  if not cycles:
    raise ValueError("cosine_kwargs must hold at least one cycle, got none")
  schedules, boundaries, step = [], [], 0
  for i, kwargs in enumerate(cycles):
    if "decay_steps" not in kwargs:
      raise ValueError(f"cosine_kwargs[{i}] must give decay_steps, got {sorted(kwargs)}")
    schedules.append(warmup_cosine_decay_schedule(**kwargs))
    step += kwargs["decay_steps"]
    boundaries.append(step)
  return optax.join_schedules(schedules, boundaries[:-1])


def sgdr_schedule(cosine_kwargs, *, first_cycle_steps: Optional[int] = None,
                  num_cycles: Optional[int] = None, cycle_mult: float = 1.0,
                  end_value: float = 0.0, warmup_steps: int = 0,
                  init_value: Optional[float] = None, peak_decay: float = 1.0) -> Schedule:
  r"""SGDR: cosine decay with warm restarts (Loshchilov & Hutter 2017, arXiv 1608.03983).

  Two forms. optax's, ``sgdr_schedule(cosine_kwargs)``: an iterable of dicts, each
  the arguments of one :func:`warmup_cosine_decay_schedule` cycle, which lasts its
  ``decay_steps``; the cycles run one after the other.

  The cycle form, ``sgdr_schedule(peak_value, first_cycle_steps=..., num_cycles=..., ...)``
  (the first argument is then a number; the others keyword-only, as optax has none): cycle k (k = 0 … ``num_cycles``−1) lasts
  ``round(first_cycle_steps · cycle_mult^k)`` steps, warms up linearly from
  ``init_value`` (default ``end_value``) over ``warmup_steps``, and cosine-decays
  from ``peak_value · peak_decay^k`` to ``end_value``. After the last cycle the
  value stays at ``end_value``.

  Args:
    cosine_kwargs: optax's form: an iterable of dicts of
      :func:`warmup_cosine_decay_schedule` arguments, one per cycle, each with
      ``decay_steps`` (ValueError if empty or missing it). The cycle form: a
      number, the first cycle's peak value (finite). Required.
    first_cycle_steps: the cycle form's first cycle length; None (default) in
      optax's form. Valid range: an integer >= 1 (ValueError otherwise, or if
      absent in the cycle form).
    num_cycles: the number of cycles of the cycle form; None (default) in
      optax's form. Valid range: an integer >= 1.
    cycle_mult: each cycle is this many times longer than the previous.
      Default 1 (equal cycles). Valid range: >= 1 (ValueError otherwise).
    end_value: the value each cycle decays to, and after the last one. Default
      0. Valid range: finite (ValueError otherwise).
    warmup_steps: a linear warmup at the start of each cycle. Default 0 (a
      plain restart at the peak). Valid range: an integer >= 0, below
      ``first_cycle_steps`` (ValueError otherwise).
    init_value: each warmup's start value; None (default): ``end_value``. Not
      validated (optax's ``warmup_cosine_decay_schedule`` takes any float).
    peak_decay: factor on the peak from one cycle to the next. Default 1 (same
      peak every cycle). Valid range: (0, 1] (ValueError otherwise).

  Returns:
    A schedule: step count -> value.
  """
  cycle_form = (first_cycle_steps is not None or num_cycles is not None
                or isinstance(cosine_kwargs, numbers.Number) or hasattr(cosine_kwargs, "shape"))
  if not cycle_form:
    return _sgdr_from_cosine_kwargs(cosine_kwargs)
  peak_value = cosine_kwargs
  if first_cycle_steps is None or num_cycles is None:
    raise ValueError("sgdr_schedule(peak_value, ...) needs first_cycle_steps= and num_cycles=; "
                     "pass a list of warmup_cosine_decay_schedule arguments for optax's form")
  validate.finite("peak_value", peak_value)
  validate.integer("first_cycle_steps", first_cycle_steps, 1)
  validate.integer("num_cycles", num_cycles, 1)
  validate.in_range("cycle_mult", cycle_mult, 1.0)
  validate.finite("end_value", end_value)
  validate.integer("warmup_steps", warmup_steps, 0)
  validate.in_range("peak_decay", peak_decay, 0.0, 1.0, low_closed=False)
  if warmup_steps >= first_cycle_steps:
    raise ValueError(f"warmup_steps must be < first_cycle_steps ({first_cycle_steps}), "
                     f"got {warmup_steps}")
  init_value = end_value if init_value is None else init_value
  cycles = [max(int(round(first_cycle_steps * cycle_mult ** k)), 1) for k in range(num_cycles)]
  return _sgdr_from_cosine_kwargs(
      dict(init_value=init_value, peak_value=peak_value * peak_decay ** k,
           warmup_steps=warmup_steps, decay_steps=steps, end_value=end_value)
      for k, steps in enumerate(cycles))


def inverse_sqrt_schedule(peak_value: float, warmup_steps: int, init_value: float = 0.0,
                          timescale: Optional[int] = None) -> Schedule:
  r"""Linear warmup to ``peak_value``, then ``P·√(τ/(t − W + τ))`` (Vaswani et al. 2017,
  arXiv 1706.03762). With the default ``timescale`` τ = W this is ``P·√(W/t)``,
  the Transformer schedule.

  Args:
    peak_value: P, the value at the end of the warmup; required. Valid range:
      finite (ValueError otherwise).
    warmup_steps: W, the warmup's length; required. Valid range: an integer
      >= 0 (ValueError otherwise).
    init_value: the value at step 0. Default 0. Valid range: finite.
    timescale: τ, how fast the tail decays (larger is slower); None (default):
      ``max(warmup_steps, 1)``, the Transformer schedule. Valid range: an
      integer >= 1 (ValueError otherwise).

  Returns:
    A schedule: step count -> float32 value.
  """
  validate.finite("peak_value", peak_value)
  validate.finite("init_value", init_value)
  validate.integer("warmup_steps", warmup_steps, 0)
  if timescale is None:
    timescale = max(warmup_steps, 1)
  validate.integer("timescale", timescale, 1)

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
    tail = peak_value * jnp.sqrt(timescale / jnp.maximum(t - warmup_steps + timescale, 1.0))
    return jnp.where(t < warmup_steps, warm, tail)

  return schedule


def cyclical_schedule(base_value: float, max_value: float, step_size: int,
                      mode: str = "triangular", gamma: float = 1.0) -> Schedule:
  r"""Cyclical learning rates (Smith 2017, arXiv 1506.01186).

  .. math:: c = \lfloor 1 + t/2s \rfloor,\quad x = |t/s - 2c + 1|,\quad
            \eta_t = b + (m - b)\max(0, 1 - x)\,\sigma(c, t)

  where ``step_size`` s is half a cycle and σ = 1 (``triangular``),
  :math:`2^{1-c}` (``triangular2``: the amplitude halves every cycle) or :math:`\gamma^t`
  (``exp_range``).

  Args:
    base_value: b, the value at the start and end of each cycle; required.
      Valid range: finite (ValueError otherwise).
    max_value: m, the value at mid-cycle (before the ``mode``'s scaling);
      required. Valid range: finite (ValueError otherwise).
    step_size: s, half a cycle in steps (Smith suggests 2-10 epochs); required.
      Valid range: an integer >= 1 (ValueError otherwise).
    mode: ``"triangular"`` (default, constant amplitude), ``"triangular2"`` or
      ``"exp_range"`` (ValueError otherwise).
    gamma: the per-step decay γ of the amplitude in ``exp_range``. Default 1 (no
      decay). Valid range: (0, 1] (ValueError otherwise).

  Returns:
    A schedule: step count -> float32 value.
  """
  validate.finite("base_value", base_value)
  validate.finite("max_value", max_value)
  validate.integer("step_size", step_size, 1)
  validate.one_of("mode", mode, ("triangular", "triangular2", "exp_range"))
  validate.in_range("gamma", gamma, 0.0, 1.0, low_closed=False)

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    cycle = jnp.floor(1.0 + t / (2 * step_size))
    x = jnp.abs(t / step_size - 2.0 * cycle + 1.0)
    scale = {"triangular": 1.0, "triangular2": 2.0 ** (1.0 - cycle),
             "exp_range": gamma ** t}[mode]
    return base_value + (max_value - base_value) * jnp.maximum(0.0, 1.0 - x) * scale

  return schedule


__all__ = [
    "constant_schedule", "polynomial_schedule", "linear_schedule", "warmup_constant_schedule",
    "cosine_decay_schedule", "warmup_cosine_decay_schedule", "exponential_decay",
    "warmup_exponential_decay_schedule", "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "cosine_onecycle_schedule", "linear_onecycle_schedule", "join_schedules", "wsd_schedule",
    "wsd_decay_branch", "sgdr_schedule", "inverse_sqrt_schedule", "cyclical_schedule",
]
