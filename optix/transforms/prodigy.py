"""Prodigy: Adam whose step size is a running estimate of the distance to the solution."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from optix import _base, _tree, _validate
from optix.transforms.schedule_free import _scalar_dtype


class ProdigyState(NamedTuple):
  """Field names and order are optax's (``optax.contrib.ProdigyState``)."""
  exp_avg: _base.Updates         # m
  exp_avg_sq: _base.Updates      # v
  grad_sum: _base.Updates        # s
  params0: _base.Params          # x_0, in the state dtype
  estim_lr: jax.Array            # d, a scalar
  numerator_weighted: jax.Array  # r, a scalar
  count: jax.Array               # int32, saturating


def prodigy(learning_rate: _base.ScalarOrSchedule = 1.0, betas: tuple = (0.9, 0.999),
            beta3: Optional[float] = None, eps: float = 1e-8, estim_lr0: float = 1e-6,
            estim_lr_coef: float = 1.0, weight_decay: float = 0.0,
            safeguard_warmup: bool = False) -> _base.GradientTransformation:
  r"""Prodigy's step (Mishchenko & Defazio 2024, arXiv 2306.06101), optax's formulas.

  With :math:`\eta_t` the learning rate at step t (0-based), :math:`d_0` =
  ``estim_lr0``, c = ``estim_lr_coef`` and the bias correction
  :math:`b_t = \sqrt{1-\beta_2^{t+1}}/(1-\beta_1^{t+1})`:

  .. math::
     \delta_t = d_t\, \eta_t\, b_t, \qquad
     m_t = \beta_1 m_{t-1} + (1-\beta_1)\, d_t g_t, \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2)\, d_t^2 g_t^2, \\
     s_t = \beta_3 s_{t-1} + \frac{w_t}{d_0} d_t g_t, \\
     r_t = \beta_3 r_{t-1} + \frac{d_t}{d_0}\, \delta_t\, \langle g_t, x_0 - x_t\rangle, \quad
     D_t = \lVert s_t \rVert_1, \\
     d_{t+1} = \begin{cases} \max(d_t,\ c\, r_t / D_t) & D_t > 0 \\
                             d_t & D_t = 0 \end{cases}, \qquad
     u_t = -\delta_t\Big(\frac{m_t}{\sqrt{v_t} + d_{t+1}\epsilon} + \lambda x_t\Big)

  with :math:`w_t = \delta_t`, or :math:`w_t = d_t` under ``safeguard_warmup``
  (the rate then stays out of s); :math:`\beta_3` defaults to
  :math:`\sqrt{\beta_2}`. Where :math:`D_t > 0` this is
  ``optax.contrib.prodigy`` step for step. :math:`D_t = 0` happens when
  the step's rate is 0 (a warmup from 0: :math:`\delta_t = 0`, so s stays 0) or
  when every gradient so far is 0; optax then computes 0/0 and its estimate,
  updates and state are NaN from that step on. Here the estimate is kept (the
  reference PyTorch implementation also leaves d, and the params, unchanged on
  such a step) and the update is :math:`u_t` above, which is 0 at a zero rate.
  The moments update as in optax (PyTorch's skip them at a zero rate).

  State (``ProdigyState``, optax's fields): m, v, s and :math:`x_0` in the state
  dtype (at least float32, the params' kind), d and r as scalars (float64 when
  every param is float64, float32 otherwise). Real params only.

  Args:
    learning_rate: η, a float >= 0 or a schedule of the step count; 1.0.
    betas: (β1, β2), each in [0, 1); (0.9, 0.999).
    beta3: decay of r and s, in [0, 1); None (default): :math:`\sqrt{\beta_2}`.
    eps: ε >= 0; 1e-8.
    estim_lr0: :math:`d_0` > 0; 1e-6.
    estim_lr_coef: c > 0; 1.0.
    weight_decay: λ >= 0; 0.
    safeguard_warmup: :math:`w_t = d_t` instead of :math:`\delta_t` in s; False.

  Returns:
    A ``GradientTransformation`` with state ``ProdigyState``; ``update`` needs ``params``.
  """
  _validate.learning_rate("learning_rate", learning_rate)
  _validate.betas("betas", betas)
  if beta3 is not None:
    _validate.unit_interval("beta3", beta3)
  _validate.nonnegative("eps", eps)
  _validate.positive("estim_lr0", estim_lr0)
  _validate.positive("estim_lr_coef", estim_lr_coef)
  _validate.nonnegative("weight_decay", weight_decay)
  beta1, beta2 = betas
  if beta3 is None:
    beta3 = beta2 ** 0.5

  def init(params):
    _tree.check_real("prodigy", params)
    dtype = _scalar_dtype(params)
    params0 = jax.tree.map(
        lambda p: jnp.array(p, dtype=_tree.state_dtype_for(p), copy=True), params)
    return ProdigyState(_tree.zeros_like(params), _tree.zeros_like(params),
                        _tree.zeros_like(params), params0, jnp.asarray(estim_lr0, dtype),
                        jnp.zeros((), dtype), jnp.zeros((), jnp.int32))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.require_params("prodigy", params)
    _tree.check_real("prodigy", updates)
    _tree.check_match("updates", updates, "state.exp_avg", state.exp_avg)
    g = _tree.cast_like(updates, state.exp_avg)
    x = _tree.cast_like(params, state.exp_avg)
    count_inc = _tree.safe_increment(state.count)
    rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
    d = state.estim_lr
    bc = ((1 - beta2 ** count_inc) ** 0.5) / (1 - beta1 ** count_inc)
    dlr = jnp.asarray(d * rate * bc, dtype=d.dtype)
    dg = jax.tree.map(lambda g: d * g, g)
    numerator_acum = optax.tree.vdot(g, jax.tree.map(lambda p0, p: p0 - p, state.params0, x))
    exp_avg = jax.tree.map(lambda m, dg: beta1 * m + (1 - beta1) * dg, state.exp_avg, dg)
    exp_avg_sq = jax.tree.map(lambda v, dg: beta2 * v + (1 - beta2) * dg * dg,
                              state.exp_avg_sq, dg)
    weight = d if safeguard_warmup else dlr
    grad_sum = jax.tree.map(lambda s, dg: beta3 * s + weight * dg / estim_lr0,
                            state.grad_sum, dg)
    numerator = beta3 * state.numerator_weighted + (d / estim_lr0) * dlr * numerator_acum
    denominator = optax.tree.sum(jax.tree.map(jnp.abs, grad_sum))
    known = denominator > 0
    estimate = estim_lr_coef * numerator / jnp.where(known, denominator, 1)
    new_d = jnp.where(known, jnp.maximum(d, estimate), d)
    out = jax.tree.map(
        lambda m, v, p: -weight_decay * dlr * p - dlr * m / (jnp.sqrt(v) + new_d * eps),
        exp_avg, exp_avg_sq, x)
    new_state = ProdigyState(exp_avg, exp_avg_sq, grad_sum, state.params0,
                             new_d.astype(d.dtype), jnp.asarray(numerator, d.dtype), count_inc)
    new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, state)
    return _tree.cast_like(out, updates), new_state

  return _base.GradientTransformation(init, update)
