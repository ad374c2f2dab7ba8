"""Cyclical schedules: cosine with warm restarts (SGDR) and triangular cyclical rates."""

import numbers
from typing import Optional

import jax.numpy as jnp
import optax

from optix import _validate as validate
from optix.schedules.standard import Schedule, warmup_cosine_decay_schedule


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
