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

from optix.schedules.standard import (
    Schedule, constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule,
    exponential_decay, join_schedules, linear_onecycle_schedule, linear_schedule,
    piecewise_constant_schedule, piecewise_interpolate_schedule, polynomial_schedule,
    warmup_constant_schedule, warmup_cosine_decay_schedule, warmup_exponential_decay_schedule)
from optix.schedules.warmup_decay import inverse_sqrt_schedule, wsd_decay_branch, wsd_schedule
from optix.schedules.cyclical import cyclical_schedule, sgdr_schedule

__all__ = [
    "constant_schedule", "polynomial_schedule", "linear_schedule", "warmup_constant_schedule",
    "cosine_decay_schedule", "warmup_cosine_decay_schedule", "exponential_decay",
    "warmup_exponential_decay_schedule", "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "cosine_onecycle_schedule", "linear_onecycle_schedule", "join_schedules", "wsd_schedule",
    "wsd_decay_branch", "sgdr_schedule", "inverse_sqrt_schedule", "cyclical_schedule",
]
