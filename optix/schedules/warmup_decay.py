"""Warmup then decay: warmup-stable-decay (with its decay branch from any checkpoint of a
stable run) and the inverse-square-root schedule."""

from typing import Optional

import jax.numpy as jnp

from optix import _validate as validate
from optix.schedules.standard import Schedule


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
