"""Schedule-free and parameter-free optimizers: no decaying schedule, or no learning rate
to tune. Each is a plain ``chain`` of pieces, or optax's transform run under optix's
guarantees (:func:`optix.transforms.adapter.from_optax`)."""

from typing import Optional

import optax

from optix import _base, _validate, schedules
from optix.transforms.adapter import from_optax, optax_alias
from optix.transforms.adaptive import scale_by_rms
from optix.transforms.decay import add_decayed_weights
from optix.transforms.schedule_free import schedule_free
from optix.transforms.scaling import scale_by_learning_rate

chain = _base.chain


def _warmup(learning_rate, warmup_steps):
  if warmup_steps is None:
    return learning_rate
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
  """
  _validate.unit_interval("b2", b2)  # named here: scale_by_rms calls it decay
  _validate.nonnegative("eps", eps)
  learning_rate = _warmup(learning_rate, warmup_steps)
  base = chain(scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True,
                            state_dtype=state_dtype),
               add_decayed_weights(weight_decay),
               scale_by_learning_rate(learning_rate))
  return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def _betas(name, betas):
  if not isinstance(betas, (tuple, list)) or len(betas) != 2:
    raise ValueError(f"{name} must be a pair (b1, b2), got {betas!r}")
  _validate.unit_interval(f"{name}[0]", betas[0])
  _validate.unit_interval(f"{name}[1]", betas[1])


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
  optax's transform (``optax.contrib.prodigy``) under optix's guarantees:
  validated here, float32 state for low-precision params; real params only.
  State: m, v, s, x0 (16 bytes/param).
  """
  _validate.learning_rate("learning_rate", learning_rate)
  _betas("betas", betas)
  if beta3 is not None:
    _validate.unit_interval("beta3", beta3)
  _validate.nonnegative("eps", eps)
  _validate.positive("estim_lr0", estim_lr0)
  _validate.positive("estim_lr_coef", estim_lr_coef)
  _validate.nonnegative("weight_decay", weight_decay)
  return from_optax(optax.contrib.prodigy(learning_rate, tuple(betas), beta3, eps, estim_lr0,
                                          estim_lr_coef, weight_decay, safeguard_warmup),
                    "prodigy", real_only=True)


_nonneg, _lr = _validate.nonnegative, _validate.learning_rate


def _alias(fn, checks, doc, real_only=True):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__)


dog = _alias(optax.contrib.dog, dict(learning_rate=_lr, eps=_nonneg, weight_decay=_nonneg), r"""
DoG, distance over gradients (Ivgi et al. 2023, arXiv 2302.12022): SGD whose step is
the largest distance travelled over the root of the summed squared gradient norms.

.. math:: \eta_t = \frac{\max_{s \le t} \lVert x_s - x_0 \rVert}
   {\sqrt{\sum_{s \le t} \lVert g_s \rVert^2}}, \quad x_{t+1} = x_t - \eta_t g_t

``init_step`` chooses the first distance (optax's heuristic: 1e-6 (1 + ‖x0‖)).
""")

dowg = _alias(optax.contrib.dowg, dict(learning_rate=_lr, eps=_nonneg, weight_decay=_nonneg),
              r"""
DoWG, distance over weighted gradients (Khaled et al. 2023, arXiv 2305.16284).

.. math:: r_t = \max(r_{t-1}, \lVert x_t - x_0\rVert), \quad v_t = v_{t-1} + r_t^2
   \lVert g_t\rVert^2, \quad x_{t+1} = x_t - \frac{r_t^2}{\sqrt{v_t}} g_t
""")

cocob = _alias(optax.contrib.cocob, dict(learning_rate=_lr, alpha=_nonneg, eps=_nonneg,
                                         weight_decay=_nonneg), r"""
COCOB-Backprop (Orabona & Tommasi 2017, arXiv 1705.07795): coin betting, no learning rate.

.. math:: x_{t+1} = x_1 + \frac{-\sum_s g_s}{L_t \max(G_t + L_t, \alpha L_t)}
   (\mathrm{reward}_t + \sum_s |g_s|)
""")

dadapt_adamw = _alias(optax.contrib.dadapt_adamw,
                      dict(learning_rate=_lr, eps=_nonneg, estim_lr0=_validate.positive,
                           weight_decay=_nonneg), r"""
D-Adaptation AdamW (Defazio & Mishchenko 2023, arXiv 2301.07733): AdamW whose step
size is a running lower bound d on the distance to the solution.

.. math:: \theta \leftarrow \theta - \eta\, d_t\, (m_t / (\sqrt{v_t} + d_t\epsilon)
   + \lambda\theta)
""")

mechanize = _alias(optax.contrib.mechanize,
                   dict(weight_decay=_nonneg, eps=_nonneg, s_init=_validate.positive,
                        num_betas=lambda n, x: _validate.integer(n, x, 1)), r"""
Mechanic (Cutkosky et al. 2023, arXiv 2306.00144): learns a scalar multiplier of any
base optimizer's updates online.

.. math:: x_t = x_0 + s_t \sum_{k<t} u_k, \quad s_t = \sum_\beta s_{t,\beta}
   \ \text{(online learners on } \langle g_t, \textstyle\sum u\rangle)
""")
