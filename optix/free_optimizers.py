"""Schedule-free and parameter-free optimizers: no decaying schedule, or no learning rate
to tune. Each is a plain ``chain`` of pieces, optix's own transform (Prodigy:
:mod:`optix.transforms.prodigy`), or optax's transform run under optix's guarantees
(:func:`optix.transforms.adapter.from_optax`)."""

import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from optix import _base, _validate, schedules
from optix.transforms.adapter import optax_alias
from optix.transforms.adaptive import scale_by_rms
from optix.transforms.decay import add_decayed_weights
from optix.transforms.prodigy import prodigy as prodigy_transform
from optix.transforms.schedule_free import schedule_free
from optix.transforms.scaling import scale_by_learning_rate

chain = _base.chain


def _warmup(learning_rate, warmup_steps):
  if warmup_steps is None:
    return learning_rate
  _validate.learning_rate("learning_rate", learning_rate)
  _validate.integer("warmup_steps", warmup_steps, 0)
  # optax.warmup_constant_schedule: linear from 0 to the peak, then constant.
  return schedules.linear_schedule(0.0, learning_rate, warmup_steps)


def schedule_free_sgd(learning_rate: float = 1.0, warmup_steps: Optional[int] = None,
                      b1: float = 0.9, weight_decay: Optional[float] = None,
                      weight_lr_power: float = 2.0, state_dtype=None):
  r"""Schedule-free SGD (Defazio et al. 2024, arXiv 2405.15682).

  .. math:: z_{t+1} = z_t - \gamma_t (\nabla f(y_t) + \lambda y_t), \quad
     x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1}, \quad y_{t+1} = \beta x_{t+1} + (1-\beta) z_{t+1}

  (see :func:`optix.schedule_free`); evaluate at
  :func:`optix.schedule_free_eval_params`. ``warmup_steps`` ramps the learning
  rate linearly from 0, after which it stays constant: no decay to tune.
  ``weight_decay`` (None: none) is added to the gradient, so it is multiplied by
  the learning rate, as in PyTorch. Defaults are optax's. State: z (4 bytes/param).

  Args:
    learning_rate: the (peak) step size γ, a float >= 0; 1.0 (optax's). Without
      ``warmup_steps`` a schedule is accepted too. It also sets the averaging
      weights :math:`\gamma_t^r`.
    warmup_steps: int >= 0, steps of the linear ramp from 0 to ``learning_rate``;
      None (default): no warmup. 0 gives a learning rate of 0 throughout (as in
      optax): use None.
    b1: the interpolation β between the average x and z, in (0, 1]; 0.9 (the
      paper's).
    weight_decay: rate λ >= 0 of the decay added to the gradient; None
      (default): no decay.
    weight_lr_power: the exponent r of the averaging weights, any finite float;
      2.0 (the paper's).
    state_dtype: dtype of ``z``; None (default): at least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` with :func:`optix.schedule_free`'s state.
  """
  learning_rate = _warmup(learning_rate, warmup_steps)
  base = scale_by_learning_rate(learning_rate)
  if weight_decay is not None:
    base = chain(add_decayed_weights(weight_decay), base)
  return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(learning_rate: float = 0.0025, warmup_steps: Optional[int] = None,
                        b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                        weight_decay: float = 0.0, weight_lr_power: float = 2.0,
                        state_dtype=None):
  r"""Schedule-free AdamW (Defazio et al. 2024, arXiv 2405.15682).

  .. math:: z_{t+1} = z_t - \gamma_t \Big(\frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}
     + \lambda y_t\Big), \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

  with :func:`optix.schedule_free`'s interpolation and averaging in place of
  Adam's momentum (the base is RMS scaling with bias correction: no first
  moment is stored). Defaults are optax's (η = 0.0025, the reference
  implementation's). State: z and v (8 bytes/param).

  Args:
    learning_rate: the (peak) step size γ, a float >= 0; 0.0025 (optax's).
      Without ``warmup_steps`` a schedule is accepted too. It also sets the
      averaging weights :math:`\gamma_t^r`.
    warmup_steps: int >= 0, steps of the linear ramp from 0; None (default): no
      warmup (0 would keep the learning rate at 0, as in optax).
    b1: the interpolation β, in (0, 1]; 0.9 (the paper's).
    b2: decay of the second moment v, in [0, 1); 0.999 (Adam's).
    eps: added to the debiased :math:`\sqrt{v}`, >= 0; 1e-8.
    weight_decay: rate λ >= 0 of the decay added to the scaled gradient (it is
      evaluated at y); 0.
    weight_lr_power: the exponent r of the averaging weights, any finite float;
      2.0 (the paper's).
    state_dtype: dtype of ``z`` (and of v); None (default): at least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` with :func:`optix.schedule_free`'s state.
  """
  _validate.unit_interval("b2", b2)  # named here: scale_by_rms calls it decay
  _validate.nonnegative("eps", eps)
  learning_rate = _warmup(learning_rate, warmup_steps)
  base = chain(scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True,
                            state_dtype=state_dtype),
               add_decayed_weights(weight_decay),
               scale_by_learning_rate(learning_rate))
  return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def prodigy(learning_rate: _base.ScalarOrSchedule = 1.0, betas: tuple = (0.9, 0.999),
            beta3: Optional[float] = None, eps: float = 1e-8, estim_lr0: float = 1e-6,
            estim_lr_coef: float = 1.0, weight_decay: float = 0.0,
            safeguard_warmup: bool = False):
  r"""Prodigy (Mishchenko & Defazio 2024, arXiv 2306.06101): Adam whose step size
  :math:`d_t` estimates the distance to the solution.

  .. math::
     m_t = \beta_1 m + (1-\beta_1) d_t g_t, \quad
     v_t = \beta_2 v + (1-\beta_2) d_t^2 g_t^2, \\
     r_t = \sqrt{\beta_2} r + (1-\sqrt{\beta_2})\, \eta\, d_t^2 \langle g_t, x_0 - x_t \rangle,
     \quad s_t = \sqrt{\beta_2} s + (1-\sqrt{\beta_2})\, \eta\, d_t^2 g_t, \\
     d_{t+1} = \max(d_t, c\, r_t / \lVert s_t \rVert_1), \quad
     x_{t+1} = x_t - \eta\, d_t (m_t/(\sqrt{v_t} + d_t \epsilon) + \lambda x_t)

  ``learning_rate`` multiplies the estimate (keep 1.0; use a schedule's shape
  only). ``estim_lr0`` is the initial d; ``estim_lr_coef`` c scales the estimate.
  :func:`optix.transforms.prodigy.prodigy` gives ``optax.contrib.prodigy``'s
  numbers, with one deliberate difference: a step whose estimate has a zero
  denominator :math:`\lVert s_t \rVert_1` (a learning rate of 0, as at the
  start of a warmup from 0, or all-zero gradients so far) keeps :math:`d_t`
  where optax's 0/0 makes the estimate, the updates and the state NaN.
  Float32 state for low-precision params; real params only.
  State: m, v, s, x0 (16 bytes/param).

  Under a schedule: ``safeguard_warmup`` keeps η (and the bias correction) in
  the numerator r of the estimate but out of its denominator s, so every step
  below the peak rate (a warmup, a decay) lowers the estimate, and d never
  decreases; without it η cancels in :math:`r/s`. The paper's implementation
  advises the safeguard with a warmup, where small early rates can inflate d;
  on the flagship GPT (a short warmup from 0, then cosine;
  docs/guides/choosing_an_optimizer.md) it held d well below the tuned AdamW
  rate and lost to it, while ``learning_rate=1.0`` without it ended below it.
  Here a warmup from 0 needs no safeguard: d is kept at a zero rate.

  Args:
    learning_rate: η, a float >= 0 or a schedule, multiplying the estimated step
      :math:`d_t`; 1.0 (optax's): use a schedule's shape with peak 1.
    betas: the pair (β1, β2) of Adam's moment decays, each in [0, 1);
      (0.9, 0.999).
    beta3: decay of the estimate's accumulators r and s, in [0, 1); None
      (default): :math:`\sqrt{\beta_2}`, the paper's choice.
    eps: added to the root of v (scaled by :math:`d_t`), >= 0; 1e-8.
    estim_lr0: the initial estimate :math:`d_0` > 0; 1e-6 (an underestimate, as
      the method only grows d).
    estim_lr_coef: c > 0 multiplying the estimate; 1.0.
    weight_decay: decoupled decay rate λ >= 0; 0.
    safeguard_warmup: leave η out of the denominator of the estimate, so a
      warmup from 0 does not inflate d; False (optax's).

  Returns:
    A ``GradientTransformation`` whose state is optax's fields
    (:class:`optix.transforms.prodigy.ProdigyState`); ``update`` needs ``params``.
  """
  return prodigy_transform(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef,
                           weight_decay, safeguard_warmup)


_nonneg, _lr = _validate.nonnegative, _validate.learning_rate


def _positive_finite(name, value):
  return _validate.in_range(name, value, 0.0, math.inf, low_closed=False, high_closed=False)


_DOG_INIT_KINDS = ("distance", "heuristic", "learning_rate")


def _dog_init_step(name, init_step):
  """DoG's ``(kind, value)``: each kind's value (a distance, a factor of the params'
  norm, a first step size) is > 0 and finite; 0 keeps the params at x0 for good (the
  step is the distance travelled, which stays 0)."""
  if not isinstance(init_step, (tuple, list)) or len(init_step) != 2:
    raise ValueError(f"{name} must be a pair (kind, value), got {init_step!r}")
  _validate.one_of(f"{name}[0]", init_step[0], _DOG_INIT_KINDS)
  _positive_finite(f"{name}[1]", init_step[1])


def _alias(fn, checks, doc, real_only=True, wrap=None):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__,
                     wrap=wrap)


dog = _alias(optax.contrib.dog, dict(learning_rate=_lr, init_step=_dog_init_step, eps=_nonneg,
                                     weight_decay=_nonneg), r"""
DoG, distance over gradients (Ivgi et al. 2023, arXiv 2302.12022): SGD whose step is
the largest distance travelled over the root of the summed squared gradient norms.

.. math:: \eta_t = \frac{\max_{s \le t} \lVert x_s - x_0 \rVert}
   {\sqrt{\sum_{s \le t} \lVert g_s \rVert^2}}, \quad x_{t+1} = x_t - \eta_t g_t

Args:
  learning_rate: a float >= 0 or a schedule multiplying DoG's step; 1.0 (keep 1:
    the method sets the step).
  init_step: the pair ``(kind, value)`` that sets the first step:
    ``("distance", r)`` starts the distance at r, ``("learning_rate", η0)`` takes
    η0 as the first step size, ``("heuristic", α)`` (default, α = 1e-6) starts the
    distance at :math:`\alpha (1 + \lVert x_0\rVert)`, so ``init`` needs the real
    params. Keep it small (optax suggests 1e-4 with batch norm). The value is > 0
    and finite: with 0 the distance, hence the step, stays 0.
  eps: >= 0, added to the summed squared gradient norms; 1e-8.
  weight_decay: rate >= 0 of the decay added to the gradient before DoG's step;
    None (default): no decay.
  mask: which params decay: a bool tree like the params, or a callable giving
    one; None: all.
""")

dowg = _alias(optax.contrib.dowg, dict(learning_rate=_lr, init_estim_sq_dist=_positive_finite,
                                       eps=_nonneg, weight_decay=_nonneg), r"""
DoWG, distance over weighted gradients (Khaled et al. 2023, arXiv 2305.16284).

.. math:: r_t = \max(r_{t-1}, \lVert x_t - x_0\rVert), \quad v_t = v_{t-1} + r_t^2
   \lVert g_t\rVert^2, \quad x_{t+1} = x_t - \frac{r_t^2}{\sqrt{v_t}} g_t

Args:
  learning_rate: a float >= 0 or a schedule multiplying DoWG's step; 1.0 (keep 1).
  init_estim_sq_dist: the initial estimate :math:`r_0^2` > 0 (finite) of the
    squared distance to the solution (0 keeps the step at 0 for good); None
    (default): ``eps``.
  eps: >= 0, added to :math:`\sqrt{v_t}` in the step's denominator (and the
    default :math:`r_0^2`); 1e-4 (optax's).
  weight_decay: rate >= 0 of the decay added to the gradient before DoWG's step;
    None (default): no decay.
  mask: which params decay: a bool tree like the params, or a callable giving
    one; None: all.
""")

cocob = _alias(optax.contrib.cocob, dict(learning_rate=_lr, alpha=_nonneg, eps=_nonneg,
                                         weight_decay=_nonneg), r"""
COCOB-Backprop (Orabona & Tommasi 2017, arXiv 1705.07795): coin betting, no learning rate.

.. math:: x_{t+1} = x_1 + \frac{-\sum_s g_s}{L_t \max(G_t + L_t, \alpha L_t)}
   (L_t + \mathrm{reward}_t)

per coordinate, where :math:`L_t` is the largest gradient magnitude seen and
:math:`G_t = \sum_s |g_s|`.

Args:
  learning_rate: a float >= 0 or a schedule scaling the gradient before the bet
    (no sign flip); 1.0 (keep 1: the method has no learning rate).
  alpha: α >= 0, which bounds the bet early on (the paper's 100, the default).
  eps: >= 0, the initial :math:`L_0` (so the first bet does not divide by 0);
    1e-8.
  weight_decay: rate >= 0 of the L2 decay added to the gradient; 0.
  mask: which params decay: a bool tree like the params, or a callable giving
    one; None: all.
""")

def _keep_estimate_when_nothing_is_summed(tx):
  """optax's D-Adaptation AdamW, except that its estimate d stays as it was on a step where the
  estimate's denominator (the L1 norm of the weighted gradient sum s) is 0, as in the reference
  PyTorch implementation; optax divides 0/0 there (a first step at a learning rate of 0, as in a
  warmup from 0) and its d, and every update after it, is NaN. Other steps are optax's.

  Args:
    tx: ``optax.contrib.dadapt_adamw(...)``.
  """
  def update(updates, state, params=None, **extra_args):
    updates, new_state = tx.update(updates, state, params, **extra_args)
    summed = optax.tree.sum(jax.tree.map(jnp.abs, new_state.grad_sum))
    estim_lr = jnp.where(summed == 0, state.estim_lr, new_state.estim_lr)
    return updates, new_state._replace(estim_lr=estim_lr)

  return optax.GradientTransformationExtraArgs(tx.init, update)


dadapt_adamw = _alias(optax.contrib.dadapt_adamw,
                      dict(learning_rate=_lr, betas=_validate.betas, eps=_nonneg,
                           estim_lr0=_validate.positive, weight_decay=_nonneg), r"""
D-Adaptation AdamW (Defazio & Mishchenko 2023, arXiv 2301.07733): AdamW whose step
size is a running lower bound d on the distance to the solution.

.. math:: m_t = \beta_1 m_{t-1} + (1-\beta_1)\, \eta d_t g_t, \quad
   \theta \leftarrow \theta - m_t / (\sqrt{v_t} + \epsilon) - \eta d_t \lambda\theta

(:math:`\eta d_t` includes Adam's bias correction).

Args:
  learning_rate: η, a float >= 0 or a schedule multiplying the estimate
    :math:`d_t`; 1.0 (optax's): a schedule with peak 1, e.g. a linear decay after
    a short warmup.
  betas: the pair (β1, β2) of Adam's moment decays, each in [0, 1); (0.9, 0.999).
  eps: added to :math:`\sqrt{v_t}`, >= 0; 1e-8.
  estim_lr0: the initial estimate :math:`d_0` > 0; 1e-6 (an underestimate: d
    only grows).
  weight_decay: decoupled decay rate λ >= 0; 0.

On a step whose learning rate is 0 before any other (the first step of a warmup from 0) d
stays as it was, as in the reference implementation; optax's estimate is 0/0 (NaN) there.
""", wrap=_keep_estimate_when_nothing_is_summed)

mechanize = _alias(optax.contrib.mechanize,
                   dict(weight_decay=_nonneg, eps=_nonneg, s_init=_validate.positive,
                        num_betas=lambda n, x: _validate.integer(n, x, 1)), r"""
Mechanic (Cutkosky et al. 2023, arXiv 2306.00144): learns a scalar multiplier of any
base optimizer's updates online.

.. math:: x_t = x_0 + s_t \sum_{k<t} u_k, \quad s_t = \sum_\beta s_{t,\beta}
   \ \text{(online learners on } \langle g_t, \textstyle\sum u\rangle)

Args:
  base_optimizer: the optimizer whose updates are rescaled (e.g.
    ``optix.adam(1.0)`` or one with a schedule of peak 1).
  weight_decay: λ >= 0 of the decay Mechanic adds to the gradient it learns s
    from (scaled by :math:`s\,\lVert g\rVert/\lVert x\rVert`; independent of the base
    optimizer's decay); 0.01 (optax's).
  eps: >= 0, for numerical safety in the scale's denominators; 1e-8.
  s_init: each learner's initial scale, > 0; 1e-6 (optax's: the first steps are
    tiny and the learners grow s from there).
  num_betas: int >= 1, the number of online learners, with decays
    :math:`1 - 10^{-k}`, k = 1..``num_betas``; 6.
""")
