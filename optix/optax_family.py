"""optax's other optimizer aliases, under optix's names and guarantees.

optix adds no new math to these: each is optax's alias (same signature, same
numbers) built after its hyperparameters are validated, and run through
:func:`optix.transforms.adapter.from_optax` so its state is float32 for bf16/fp16
params (float64 for float64), donation-safe, and its errors name the leaves.
Aliases whose math is defined for real params only reject complex ones.
"""

import jax
import jax.numpy as jnp
import optax

from optix import _base, _tree
from optix import _validate as v
from optix.transforms.adapter import optax_alias, scalars_as_vectors

_lr = v.learning_rate


def _alias(fn, checks, doc, real_only=True, wrap=None):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__,
                     wrap=wrap)


def _adam_checks(**more):
  return dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, eps=v.nonnegative,
              **more)


radam = _alias(optax.radam, _adam_checks(eps_root=v.nonnegative, threshold=v.finite), r"""
RAdam (Liu et al. 2020, arXiv 1908.03265): Adam with the variance of the adaptive
rate rectified; SGD with momentum while :math:`\rho_t \le` ``threshold`` (5).

.. math:: \theta \leftarrow \theta - \eta\, r_t\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9 (the paper's). Valid range:
    [0, 1) (ValueError otherwise).
  b2: decay of the second-moment EMA; it also sets the length
    :math:`\rho_\infty = 2/(1-\beta_2) - 1` of the approximated simple moving
    average. Default 0.999 (the paper's). Valid range: [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat v_t}` in the denominator. Default 1e-8.
    Valid range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`\hat v_t` under the square root; nonzero when
    differentiating through the optimizer. Default 0. Valid range: >= 0.
  threshold: the rectification is used once :math:`\rho_t` reaches it; below
    it the step is momentum SGD. Default 5 (optax's; the paper's variance of the
    adaptive rate is tractable for :math:`\rho_t > 4`). Valid range: finite
    (ValueError otherwise).
  nesterov: use the Nesterov form of the first moment. Default False (plain RAdam).
""", real_only=False)

adabelief = _alias(optax.adabelief, _adam_checks(eps_root=v.nonnegative), r"""
AdaBelief (Zhuang et al. 2020, arXiv 2010.07468): Adam whose second moment tracks
:math:`(g - m)^2`, the "belief" in the gradient; ε = 1e-16, eps_root = 1e-16 as in the paper.

.. math:: s_t = \beta_2 s + (1-\beta_2)(g - m_t)^2, \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA :math:`m`. Default 0.9. Valid range: [0, 1).
  b2: decay of the EMA :math:`s` of :math:`(g - m)^2`. Default 0.999. Valid
    range: [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat s_t}` in the denominator. Default 1e-16 (the
    paper's: :math:`s` already stays away from zero). Valid range: >= 0.
  eps_root: added to :math:`s` before the square root (it keeps gradients through
    the optimizer finite). Default 1e-16 (optax's). Valid range: >= 0.
  nesterov: use a Nesterov look-ahead first moment. Default False (the paper's form).
""")

yogi = _alias(optax.yogi, _adam_checks(), r"""
Yogi (Zaheer et al. 2018, NeurIPS): Adam with an additive second-moment update.

.. math:: v_t = v - (1-\beta_2)\,\mathrm{sign}(v - g^2)\, g^2, \quad
   \theta \leftarrow \theta - \eta\, m_t / (\sqrt{v_t} + \epsilon)

ε = 1e-3 as in the paper.

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1)
    (ValueError otherwise).
  b2: rate of Yogi's additive second-moment update. Default 0.999. Valid range:
    [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{v_t}` in the denominator. Default 1e-3 (the paper's,
    larger than Adam's for stability). Valid range: >= 0 (ValueError otherwise).
""")

amsgrad = _alias(optax.amsgrad, _adam_checks(eps_root=v.nonnegative), r"""
AMSGrad (Reddi et al. 2018, arXiv 1904.09237): Adam dividing by the running maximum of v.

.. math:: \hat v_t = \max(\hat v_{t-1}, v_t), \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the second-moment EMA whose running maximum divides the step.
    Default 0.999. Valid range: [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat v_t}` in the denominator. Default 1e-8. Valid
    range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`\hat v_t` under the square root (nonzero to
    differentiate through the optimizer). Default 0. Valid range: >= 0.
  mu_dtype: dtype of the first moment only; None (default): the state dtype
    (at least float32 for the params' kind). Not validated here.
  bias_correction_mu: debias the first moment. Default True (optax's); False is
    Reddi et al.'s original algorithm.
  bias_correction_nu: debias the second moment before its running maximum.
    Default True (optax's); False is the original algorithm.
""")

adamax = _alias(optax.adamax, _adam_checks(), r"""
AdaMax (Kingma & Ba 2015, arXiv 1412.6980 §7): Adam with the infinity norm.

.. math:: u_t = \max(\beta_2 u, |g|), \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (u_t + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9 (the paper's). Valid range:
    [0, 1) (ValueError otherwise).
  b2: decay applied to the running infinity norm :math:`u` before the max with
    :math:`|g|`. Default 0.999 (the paper's). Valid range: [0, 1).
  eps: added to :math:`u_t` in the denominator. Default 1e-8. Valid range: >= 0
    (ValueError otherwise).
""")

adamaxw = _alias(optax.adamaxw, _adam_checks(weight_decay=v.nonnegative), r"""
AdaMax with decoupled weight decay (arXiv 1412.6980, 1711.05101).

.. math:: \theta \leftarrow \theta - \eta\,(\hat m_t / (u_t + \epsilon) + \lambda\theta)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the running infinity norm :math:`u`. Default 0.999. Valid range:
    [0, 1) (ValueError otherwise).
  eps: added to :math:`u_t` in the denominator. Default 1e-8. Valid range: >= 0.
  weight_decay: the decoupled decay λ, multiplied by the learning rate as in
    AdamW; a float or a schedule. Default 1e-4 (optax's). Valid range: >= 0
    (ValueError otherwise).
  mask: which leaves get weight decay: a pytree of bools shaped like (a prefix
    of) the params, or a function of the params returning one; None (default):
    all leaves. The AdaMax scaling applies to every leaf either way.
""")

novograd = _alias(optax.novograd, _adam_checks(eps_root=v.nonnegative,
                                               weight_decay=v.nonnegative), r"""
NovoGrad (Ginsburg et al. 2019, arXiv 1905.11286): layer-wise second moments.

.. math:: v^l_t = \beta_2 v^l + (1-\beta_2)\lVert g^l\rVert^2, \quad
   m_t = \beta_1 m + (g / \sqrt{v^l_t + \epsilon} + \lambda\theta)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first moment (which accumulates the normalized gradient).
    Default 0.9 (optax's). Valid range: [0, 1) (ValueError otherwise).
  b2: decay of the per-layer squared-norm EMA :math:`v^l`. Default 0.25
    (optax's). Valid range: [0, 1) (ValueError otherwise).
  eps: added to the layer's :math:`\sqrt{v^l_t}`. Default 1e-6 (optax's).
    Valid range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`v^l_t` under the square root. Default 0. Valid
    range: >= 0 (ValueError otherwise).
  weight_decay: the L2 decay λ added to the normalized gradient; a float or a
    schedule. Default 0 (none). Valid range: >= 0 (ValueError otherwise).
""")

sm3 = _alias(optax.sm3, dict(learning_rate=_lr, momentum=v.unit_interval), r"""
SM3 (Anil et al. 2019, arXiv 1901.11150): memory-lean AdaGrad with one accumulator
per row and column (the minimum of their maxima bounds each coordinate's sum).

.. math:: \nu_t(i) = \min_{r \ni i} \mu_{t-1}(r) + g_t(i)^2, \quad
   \theta \leftarrow \theta - \eta\, g / \sqrt{\nu_t}

Scalar leaves are treated as 1-vectors (optax's transform indexes each leaf's axes).

Args:
  learning_rate: the step size η, a float; no default (optax's; optax's SM3
    takes no schedule). Valid range: [0, inf) (ValueError otherwise).
  momentum: decay of the momentum applied to the preconditioned step. Default
    0.9 (the paper's). Valid range: [0, 1) (ValueError otherwise).
""", wrap=scalars_as_vectors)

fromage = _alias(optax.fromage, dict(learning_rate=_lr, min_norm=v.nonnegative), r"""
Fromage (Bernstein et al. 2020, arXiv 2002.03432): the step is a fixed fraction of each
layer's norm.

.. math:: \theta \leftarrow \frac{\theta - \eta \frac{\lVert\theta\rVert}{\lVert g\rVert} g}
   {\sqrt{1 + \eta^2}}

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  min_norm: floor on the norms of the update and of the layer's params in the
    ratio :math:`\lVert\theta\rVert/\lVert g\rVert` (avoids dividing by zero,
    as in LARS). Default 1e-6. Valid range: >= 0 (ValueError otherwise).
""")

adan = _alias(optax.adan, dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval,
                               b3=v.unit_interval, eps=v.nonnegative, eps_root=v.nonnegative,
                               weight_decay=v.nonnegative), r"""
Adan (Xie et al. 2022, arXiv 2208.06677): Nesterov momentum estimated from gradient
differences. In optax's convention (each :math:`b` weighs the old value; the paper's β
is :math:`1-b`), with bias-corrected :math:`\hat m, \hat d, \hat n` and decoupled weight
decay:

.. math:: m = b_1 m + (1-b_1) g, \quad d = b_2 d + (1-b_2)(g - g_{-1}), \quad
   n = b_3 n + (1-b_3)(g + (1-b_2)(g - g_{-1}))^2, \\
   \theta \leftarrow \theta - \eta\,\big((\hat m + (1-b_2)\hat d)/(\sqrt{\hat n + \epsilon_r}
   + \epsilon) + \lambda\theta\big)

Args:
  learning_rate: the step size η, a float or a schedule; no default (optax's).
    Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the gradient EMA :math:`m` (optax's convention: the weight of
    the old value; the paper's β1 is ``1 - b1``). Default 0.98 (the paper's
    0.02). Valid range: [0, 1) (ValueError otherwise).
  b2: decay of the EMA :math:`d` of gradient differences. Default 0.92 (the
    paper's 0.08). Valid range: [0, 1) (ValueError otherwise).
  b3: decay of the EMA :math:`n` of the squared corrected gradient. Default
    0.99 (the paper's 0.01). Valid range: [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat n}` in the denominator. Default 1e-8.
    Valid range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`\hat n` under the square root. Default 1e-8.
    Valid range: >= 0 (ValueError otherwise).
  weight_decay: the decoupled decay λ, a float or a schedule. Default 0
    (none). Valid range: >= 0 (ValueError otherwise).
  mask: which leaves get weight decay: a pytree of bools like (a prefix of) the
    params, or a function returning one; None (default): all leaves.
""")

sign_sgd = _alias(optax.sign_sgd, dict(learning_rate=_lr), r"""
signSGD (Bernstein et al. 2018, arXiv 1802.04434): :math:`\theta \leftarrow \theta
- \eta\, \mathrm{sign}(g)`.

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
""")

signum = _alias(optax.signum, dict(learning_rate=_lr, beta=v.unit_interval), r"""
Signum (Bernstein et al. 2018, arXiv 1802.04434): the sign of the gradient's momentum.

.. math:: m = \beta m + (1-\beta) g, \quad \theta \leftarrow \theta - \eta\, \mathrm{sign}(m)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  beta: decay of the momentum EMA whose sign is the step. Default 0.9 (the
    paper's). Valid range: [0, 1) (ValueError otherwise).
  accumulator_dtype: dtype of the momentum; None (default): the state dtype
    (at least float32 for the params' kind). Not validated here.
""")

rprop = _alias(optax.rprop, dict(learning_rate=_lr, eta_minus=v.nonnegative,
                                 eta_plus=v.nonnegative, min_step_size=v.nonnegative,
                                 max_step_size=v.nonnegative), r"""
Rprop (Riedmiller & Braun 1993, ICNN): per-coordinate step sizes grown by ``eta_plus``
while the gradient keeps its sign and shrunk by ``eta_minus`` when it flips.

.. math:: \theta \leftarrow \theta - s_t\, \mathrm{sign}(g_t)

Args:
  learning_rate: the initial per-coordinate step size :math:`s_0`, a float; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  eta_minus: factor applied to a coordinate's step when its gradient changes
    sign. Default 0.5 (Riedmiller & Braun's). Valid range: >= 0 (ValueError
    otherwise; values in (0, 1) shrink the step, as intended).
  eta_plus: factor applied when the gradient keeps its sign. Default 1.2 (the
    paper's). Valid range: >= 0 (values > 1 grow the step, as intended).
  min_step_size: lower clip of the step sizes. Default 1e-6. Valid range: >= 0
    (ValueError otherwise; not checked against ``max_step_size``).
  max_step_size: upper clip of the step sizes. Default 50 (the paper's). Valid
    range: >= 0 (ValueError otherwise).
""")

adadelta = _alias(optax.adadelta, dict(learning_rate=_lr, rho=v.unit_interval,
                                       eps=v.nonnegative, weight_decay=v.nonnegative), r"""
AdaDelta (Zeiler 2012, arXiv 1212.5701): steps in the units of the params.

.. math:: u = \frac{\sqrt{\Delta + \epsilon}}{\sqrt{\nu + \epsilon}} g, \quad
   \nu = \rho\nu + (1-\rho) g^2, \quad \Delta = \rho\Delta + (1-\rho) u^2

Args:
  learning_rate: a float or schedule multiplying the AdaDelta step; None
    (default, optax's) applies no scaling (the paper's unit-free step, as 1).
    Valid range: [0, inf) (ValueError otherwise).
  rho: decay of the EMAs :math:`\nu` and :math:`\Delta`. Default 0.9. Valid
    range: [0, 1) (ValueError otherwise).
  eps: added under both square roots. Default 1e-6 (the paper's order). Valid
    range: >= 0 (ValueError otherwise).
  weight_decay: decoupled decay, a float or a schedule. Default 0 (none).
    Valid range: >= 0 (ValueError otherwise; schedules are not checked).
  weight_decay_mask: which leaves get weight decay: a pytree of bools like (a
    prefix of) the params, or a function returning one; None (default): all.
""")

polyak_sgd = _alias(optax.polyak_sgd, dict(max_learning_rate=v.nonnegative, scaling=_lr,
                                           f_min=v.finite, eps=v.nonnegative), r"""
SGD with the Polyak step size (Loizou et al. 2021, arXiv 2002.10542); needs the loss as
the extra argument ``value``.

.. math:: \theta \leftarrow \theta - \min\Big(\frac{f(\theta) - f^*}{\lVert g\rVert^2
   + \epsilon}, \eta_{max}\Big) g

Args:
  max_learning_rate: the cap :math:`\eta_{max}` on the Polyak step. Default 1.
    Valid range: >= 0 (ValueError otherwise).
  scaling: a float or schedule multiplying the step. Default 1 (the plain
    Polyak step). Valid range: [0, inf) (ValueError otherwise).
  f_min: the lower bound :math:`f^*` of the loss. Default 0 (losses such as
    cross-entropy that can reach zero). Valid range: finite (ValueError otherwise).
  eps: added to :math:`\lVert g\rVert^2` in the denominator. Default 0. Valid
    range: >= 0 (ValueError otherwise).
  variant: ``'sps'`` (default, Loizou et al.'s SPS_max) or ``'sps+'``, which
    clips a negative gap :math:`f(\theta) - f^*` to 0. Any other string raises
    ValueError in the first ``update`` (optax's check), not at construction.
""")

optimistic_gradient_descent = _alias(
    optax.optimistic_gradient_descent, dict(learning_rate=_lr, alpha=v.nonnegative,
                                            beta=v.nonnegative), r"""
Optimistic gradient descent (Mokhtari et al. 2019, arXiv 1901.08511), for min-max games.

.. math:: \theta \leftarrow \theta - \eta\,((\alpha + \beta) g_t - \beta g_{t-1})

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  alpha: weight α of the current gradient. Default 1. Valid range: >= 0
    (ValueError otherwise).
  beta: weight β of the correction :math:`g_t - g_{t-1}`. Default 1 (α = β = 1
    is the standard optimistic step). Valid range: >= 0 (ValueError otherwise).
""", real_only=False)

optimistic_adam = _alias(optax.optimistic_adam, _adam_checks(eps_root=v.nonnegative), r"""
Optimistic Adam (Daskalakis et al. 2018, arXiv 1711.00141): Adam's direction with an
optimistic correction, for min-max games.

.. math:: \theta \leftarrow \theta - \eta\,(2 u_t - u_{t-1}), \quad u_t = \hat m_t/(\sqrt{\hat v_t}
   + \epsilon)

Args:
  learning_rate: the step size η, a float; no default. optax's version rejects
    a schedule (use :func:`optix.optimistic_adam_v2`). Valid range: [0, inf)
    (ValueError otherwise).
  optimism: weight of the optimistic correction :math:`u_t - u_{t-1}`; None
    (default): ``learning_rate``, as in the paper. Not validated here.
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the second-moment EMA. Default 0.999. Valid range: [0, 1)
    (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat v_t}`. Default 1e-8. Valid range: >= 0.
  eps_root: added to :math:`\hat v_t` under the square root. Default 0. Valid
    range: >= 0 (ValueError otherwise).
  mu_dtype: dtype of the first moment only; None (default): the state dtype.
  nesterov: Nesterov form of Adam's first moment. Default True (optax's).
""")

noisy_sgd = _alias(optax.noisy_sgd, dict(learning_rate=_lr, eta=v.nonnegative,
                                         gamma=v.nonnegative), r"""
Noisy SGD (Neelakantan et al. 2015, arXiv 1511.06807): annealed Gaussian noise on the
gradient.

.. math:: \theta \leftarrow \theta - \eta\,(g + \mathcal N(0, \eta_n/(1+t)^\gamma))

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  eta: the noise variance at the first step, :math:`\eta_n`. Default 0.01 (one
    of the paper's settings). Valid range: >= 0 (ValueError otherwise).
  gamma: the exponent of the variance's decay :math:`(1+t)^{-\gamma}`. Default
    0.55 (the paper's). Valid range: >= 0 (ValueError otherwise).
  key: the PRNG key (or an int seed) of the noise; None (default): optax warns
    and uses seed 0. Not validated here.
  seed: optax's deprecated spelling of ``key`` (an int); None (default). Passing
    both raises ValueError (optax's check).
""")

def lookahead(fast_optimizer: optax.GradientTransformation, sync_period: int,
              slow_step_size: float, reset_state: bool = False) -> _base.GradientTransformation:
  r"""Lookahead (Zhang et al. 2019, arXiv 1907.08610): every ``sync_period`` steps the slow
  weights move a fraction α = ``slow_step_size`` of the way to the fast ones, and the fast
  restart from them.

  .. math:: \phi \leftarrow \phi + \alpha(\theta_k - \phi), \quad \theta \leftarrow \phi

  Params are ``optax.LookaheadParams(fast, slow)`` and the gradients are the fast params'
  (``jax.grad(loss)(params.fast)``); the updates returned are ``LookaheadParams`` in the
  params' dtypes. ``reset_state`` re-initializes the fast optimizer at each
  synchronization. The state is ``fast_optimizer``'s (its dtype policy) and a step count.
  optax's transform, validated here (``sync_period`` an integer >= 1, α in [0, 1]).

  Args:
    fast_optimizer: the transform that steps the fast params every step (any
      optax or optix ``GradientTransformation``); required.
    sync_period: k, fast steps between synchronizations; required (no default,
      as in optax; the paper uses 5 or 10). Valid range: an integer >= 1
      (ValueError otherwise).
    slow_step_size: α, the fraction of the way the slow weights move towards
      the fast ones; required (the paper uses 0.5). Valid range: [0, 1]
      (ValueError otherwise).
    reset_state: re-initialize ``fast_optimizer``'s state at each
      synchronization. Default False (the paper keeps it).
  """
  v.integer("sync_period", sync_period, 1)
  v.in_range("slow_step_size", slow_step_size, 0.0, 1.0)
  tx = optax.lookahead(fast_optimizer, sync_period, slow_step_size, reset_state)

  def init(params):
    if not isinstance(params, optax.LookaheadParams):
      raise ValueError("lookahead's params must be optax.LookaheadParams(fast, slow), got "
                       f"{type(params).__name__}")
    return _copy_arrays(tx.init(params))

  def update(updates, state, params=None, **extra_args):
    del extra_args  # optax's lookahead passes none to the fast optimizer
    _tree.require_params("lookahead", params)
    _tree.check_match("updates", updates, "params.fast", params.fast)
    out, new_state = tx.update(updates, state, params)
    return (optax.LookaheadParams(_tree.cast_like(out.fast, params.fast),
                                  _tree.cast_like(out.slow, params.slow)),
            new_state)

  return _base.GradientTransformation(init, update)


def _copy_arrays(tree):
  """A copy of every array leaf: no state buffer is shared with the params (donation)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True) if hasattr(x, "dtype") else x, tree)


madgrad = _alias(optax.contrib.madgrad, dict(learning_rate=_lr, momentum=v.unit_interval,
                                             weight_decay=v.nonnegative, eps=v.nonnegative),
                 r"""
MADGRAD (Defazio & Jelassi 2021, arXiv 2101.11075): dual averaging with a cube-root
AdaGrad denominator and momentum by averaging.

.. math:: z_t = x_0 - \frac{\sum_s \lambda_s g_s}{\sqrt[3]{\sum_s \lambda_s g_s^2} + \epsilon},
   \quad x_{t+1} = (1-c) x_t + c\, z_t

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  momentum: the averaging weight :math:`1-c` of the iterate (momentum by
    averaging). Default 0.9 (the paper's). Valid range: [0, 1) (ValueError otherwise).
  weight_decay: L2 decay added to the gradient. Default 0 (none). Valid range:
    >= 0 (ValueError otherwise).
  eps: added to the cube root in the denominator. Default 1e-6 (the paper's).
    Valid range: >= 0 (ValueError otherwise).
""")

momo = _alias(optax.contrib.momo, dict(learning_rate=_lr, beta=v.unit_interval,
                                       weight_decay=v.nonnegative), r"""
MoMo (Schaipp et al. 2023, arXiv 2305.07583): momentum SGD with a Polyak-type
step size from a model of the loss; needs the loss as the extra argument ``value``.

.. math:: \theta \leftarrow \theta - \min\big(\eta, \frac{(\bar f - f^* + \langle \bar d,
   \theta\rangle - \bar\gamma)_+}{\lVert \bar d\rVert^2}\big) \bar d

Args:
  learning_rate: the cap η on MoMo's adaptive step, a float or a schedule.
    Default 1 (optax's: the adaptive term usually binds, so η can be large).
    Valid range: [0, inf) (ValueError otherwise).
  beta: decay of the momentum EMA of gradients and losses. Default 0.9. Valid
    range: [0, 1) (ValueError otherwise).
  lower_bound: the loss lower bound :math:`f^*`. Default 0 (right for losses
    that can reach zero). Not validated here.
  weight_decay: decay λ, applied inside MoMo's step. Default 0 (none). Valid
    range: >= 0 (ValueError otherwise).
  adapt_lower_bound: estimate :math:`f^*` online (MoMo*) instead of using
    ``lower_bound``. Default False.
""")

momo_adam = _alias(optax.contrib.momo_adam, _adam_checks(weight_decay=v.nonnegative), r"""
MoMo-Adam (Schaipp et al. 2023, arXiv 2305.07583): MoMo's step size on Adam's
preconditioned direction; needs the loss as the extra argument ``value``.

Args:
  learning_rate: the cap η on the adaptive step, a float or a schedule.
    Default 1e-2 (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the second-moment EMA. Default 0.999. Valid range: [0, 1)
    (ValueError otherwise).
  eps: Adam's denominator term. Default 1e-8. Valid range: >= 0.
  lower_bound: the loss lower bound :math:`f^*`. Default 0. Not validated here.
  weight_decay: decoupled decay λ, in AdamW's manner. Default 0 (none). Valid
    range: >= 0 (ValueError otherwise).
  adapt_lower_bound: estimate :math:`f^*` online instead of using
    ``lower_bound``. Default False.
""")

acprop = _alias(optax.contrib.acprop, _adam_checks(eps_root=v.nonnegative,
                                                   weight_decay=v.nonnegative), r"""
ACProp (Zhuang et al. 2021, arXiv 2110.05454): AdaBelief's centered second moment,
applied asynchronously (the previous step's :math:`s` normalizes the current gradient).

.. math:: \theta \leftarrow \theta - \eta\, m_t / (\sqrt{s_{t-1}} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the centered second moment :math:`s`. Default 0.999. Valid
    range: [0, 1) (ValueError otherwise).
  eps: added to :math:`\sqrt{s_{t-1}}` in the denominator. Default 1e-16 (as
    AdaBelief's). Valid range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`s` under the square root. Default 1e-16. Valid
    range: >= 0 (ValueError otherwise).
  weight_decay: decay λ multiplied by the learning rate (PyTorch's convention).
    Default 0 (none). Valid range: >= 0 (ValueError otherwise).
  mask: which leaves get weight decay: bools like (a prefix of) the params, or
    a function returning them; None (default): all leaves.
""")

simplified_ademamix = _alias(
    optax.contrib.simplified_ademamix,
    dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, alpha=v.nonnegative,
         eps=v.nonnegative, eps_root=v.nonnegative, weight_decay=v.nonnegative), r"""
Simplified AdEMAMix (Morwani et al. 2024, arXiv 2502.02431): one momentum
accumulated without the (1-β1) factor, mixed with the gradient.

.. math:: m = \beta_1 m + g, \quad \theta \leftarrow \theta - \eta\,\frac{\alpha g + m}
   {\sqrt{\hat v} + \epsilon}

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the momentum :math:`m` (accumulated without :math:`1-\beta_1`).
    Default 0.99 (optax's). Valid range: [0, 1) (ValueError otherwise).
  b2: decay of the second-moment EMA. Default 0.95 (optax's). Valid range:
    [0, 1) (ValueError otherwise).
  alpha: weight α of the current gradient next to :math:`m`, a float or a
    schedule. Default 0 (optax's: the step is the momentum alone). Valid range:
    >= 0 (ValueError otherwise).
  eps: added to :math:`\sqrt{\hat v}` in the denominator. Default 1e-8. Valid
    range: >= 0 (ValueError otherwise).
  eps_root: added to :math:`\hat v` under the square root. Default 0. Valid
    range: >= 0 (ValueError otherwise).
  weight_decay: decay λ multiplied by the learning rate. Default 0 (none).
    Valid range: >= 0 (ValueError otherwise).
  mask: the leaves that get weight decay (bools like the params, or a function
    of them); None (default): all.
""")

sam = _alias(optax.contrib.sam, dict(sync_period=lambda n, x: v.integer(n, x, 1)), r"""
Sharpness-aware minimization (Foret et al. 2021, arXiv 2010.01412): ``adv_optimizer``
takes ``sync_period - 1`` ascent steps to a nearby worst point, then ``optimizer``
steps from the original params with the gradient found there.

.. math:: \tilde\theta = \theta + \rho\, g/\lVert g\rVert, \quad
   \theta \leftarrow \theta - \eta\,\nabla f(\tilde\theta)

Args:
  optimizer: the outer optimizer, which steps from the original params with the
    gradient at the perturbed point. Required.
  adv_optimizer: the inner (adversarial) optimizer taking the ascent steps,
    e.g. ``chain(normalize(), sgd(rho))`` (optax's example). Required.
  sync_period: steps per SAM cycle: ``sync_period - 1`` adversarial steps and
    one outer step. Default 2 (one ascent step, Foret et al.'s SAM). Valid
    range: an integer >= 1 (ValueError otherwise).
  reset_state: re-initialize ``adv_optimizer``'s state after each outer step.
    Default True.
  opaque_mode: run the adversarial steps inside each ``update`` (it then needs
    the extra argument ``grad_fn``), so the caller sees only outer steps; use it
    when anything else the step touches (e.g. BatchNorm statistics) must not see
    the perturbed params. Default False: one optimizer per call.
  batch_axis_name: with ``opaque_mode``, the ``pmap`` axis over which the inner
    gradients are averaged; None (default): no averaging.
""", real_only=False)

reduce_on_plateau = _alias(
    optax.contrib.reduce_on_plateau,
    dict(factor=lambda n, x: v.in_range(n, x, 0.0, 1.0), patience=v.nonnegative,
         rtol=v.nonnegative, atol=v.nonnegative, cooldown=v.nonnegative,
         accumulation_size=lambda n, x: v.in_range(n, x, 1.0), min_scale=v.nonnegative), r"""
Reduce on plateau (as in Keras/PyTorch's ``ReduceLROnPlateau``): multiplies the
updates by a scale that drops by ``factor`` after ``patience`` steps without relative
improvement ``rtol`` of the loss (the extra argument ``value``, averaged over
``accumulation_size`` steps).

Args:
  factor: multiplier of the scale at each reduction. Default 0.1 (Keras's and
    PyTorch's). Valid range: [0, 1] (ValueError otherwise).
  patience: steps without improvement before a reduction. Default 10. Valid
    range: >= 0 (ValueError otherwise; an integer is expected but not checked).
  rtol: relative improvement of the (averaged) loss over the best one that
    counts as progress. Default 1e-4. Valid range: >= 0 (ValueError otherwise).
  atol: absolute improvement that counts as progress. Default 0. Valid range:
    >= 0 (ValueError otherwise).
  cooldown: steps after a reduction before ``patience`` counts again. Default
    0. Valid range: >= 0 (ValueError otherwise).
  accumulation_size: losses averaged before each plateau test (1 for an
    evaluation loss; larger for noisy minibatch losses). Default 1. Valid
    range: >= 1 (ValueError otherwise).
  min_scale: the scale stops decreasing here. Default 0 (no floor). Valid
    range: >= 0 (ValueError otherwise).
""", real_only=False)

optimistic_adam_v2 = _alias(
    optax.optimistic_adam_v2,
    _adam_checks(alpha=v.nonnegative, beta=v.nonnegative, eps_root=v.nonnegative), r"""
Optimistic Adam, the form of optax's ``optimistic_adam_v2`` (Daskalakis et al. 2018,
arXiv 1711.00141): the optimistic correction is applied to the gradient before Adam's
moments, with weights α (current) and β (correction), Nesterov momentum by default.

.. math:: \tilde g_t = (\alpha + \beta) g_t - \beta g_{t-1}, \quad
   \theta \leftarrow \theta - \eta\, \hat m_t(\tilde g) / (\sqrt{\hat v_t(\tilde g)} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  alpha: weight α of the current gradient. Default 1. Valid range: >= 0
    (ValueError otherwise).
  beta: weight β of the optimistic correction :math:`g_t - g_{t-1}`. Default 1.
    Valid range: >= 0 (ValueError otherwise).
  b1: Adam's first-moment decay, applied to the corrected gradient
    :math:`\tilde g`. Default 0.9. Valid range: [0, 1) (ValueError otherwise).
  b2: Adam's second-moment decay, on :math:`\tilde g^2`. Default 0.999. Valid
    range: [0, 1) (ValueError otherwise).
  eps: Adam's denominator term, outside the root. Default 1e-8. Valid range:
    >= 0 (ValueError otherwise).
  eps_root: Adam's term inside the root (nonzero to differentiate through the
    step). Default 0. Valid range: >= 0 (ValueError otherwise).
  mu_dtype: the first moment's dtype; None (default) follows the state dtype.
  nesterov: Nesterov look-ahead for the first moment. Default True (optax's).
""")

galore = _alias(
    optax.contrib.galore,
    dict(learning_rate=_lr, rank=lambda n, x: v.integer(n, x, 1),
         update_proj_gap=lambda n, x: v.integer(n, x, 1), scale=v.finite,
         weight_decay=v.nonnegative), r"""
GaLore (Zhao et al. 2024, arXiv 2403.03507): the base optimizer (Adam by default) runs on
gradients projected onto the top-``rank`` left or right singular vectors of the matrix
gradient, refreshed every ``update_proj_gap`` steps; its statistics have the projected,
rank-``rank`` shape.

.. math:: P = \mathrm{svd}(G)_{:, :r}, \quad R = P^\top G, \quad
   \theta \leftarrow \theta - \eta\,(\alpha\, P\, \mathrm{base}(R) + \lambda\theta)

Leaves that are not matrices (or that ``weight_dimension_numbers`` leaves out) take the
base optimizer unprojected. Real params only (the projector is an SVD).

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). With a ``base_optimizer`` that has its own learning rate, pass 1. Valid range: [0, inf) (ValueError otherwise).
  rank: rank r of the projection. Default 128 (optax's; smaller saves memory and
    may slow convergence). Valid range: an integer >= 1 (ValueError otherwise).
  update_proj_gap: steps between recomputations of the projector from the
    gradient's SVD. Default 200 (the paper's). Valid range: an integer >= 1.
  scale: the factor α on the projected-back update. Default 1. Valid range:
    finite (ValueError otherwise).
  base_optimizer: the transform run in the projected space; it must need no
    params (e.g. ``scale_by_adam()``, not ``adamw``). None (default):
    ``optax.scale_by_adam()``.
  weight_decay: decoupled decay λ, applied to the full (unprojected) params.
    Default 0 (none). Valid range: >= 0 (ValueError otherwise).
  mask: the leaves that get weight decay (bools like the params, or a function
    of them); None (default): all.
  weight_dimension_numbers: how a leaf is seen as a matrix:
    ``optax.contrib.GaLoreDimensionNumbers(reduction_axis, output_axis)``, a
    pytree of them (None for leaves to leave unprojected), or a function of the
    params returning one; None (default): 2-D leaves are projected as they are.
""")

sophia = _alias(
    optax.contrib.sophia,
    dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, eps=v.nonnegative,
         weight_decay=v.nonnegative, gamma=v.nonnegative, clip_threshold=v.positive,
         update_interval=lambda n, x: v.in_range(n, x, 1.0)), r"""
Sophia (Liu et al. 2023, arXiv 2305.14342): momentum divided by an EMA of a diagonal
Hessian estimate, clipped per coordinate.

.. math:: m_t = \beta_1 m + (1-\beta_1) g_t, \quad
   h \leftarrow \beta_2 h + (1-\beta_2)\,\hat h_t \ \text{every k steps}, \\
   \theta \leftarrow \theta - \eta\,\big(\mathrm{clip}(\hat m_t / \max(\gamma h, \epsilon),
   \rho) + \lambda\theta\big)

The default ``hessian_diagonal_fn`` is Hutchinson's estimator
:math:`u \odot (\nabla^2 f\, u)` with Rademacher :math:`u`: pass the loss of the params
as the extra argument ``obj_fn`` to ``update``. Defaults are optax's (γ = 0.01,
ρ = ``clip_threshold`` = 1, k = ``update_interval`` = 10).

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the momentum EMA. Default 0.965 (optax's). Valid range:
    [0, 1) (ValueError otherwise).
  b2: decay of the Hessian-diagonal EMA, applied every ``update_interval``
    steps (per step it acts like :math:`1-(1-\beta_2)/k`). Default 0.99 (optax's,
    with k = 10). Valid range: [0, 1) (ValueError otherwise).
  eps: floor of :math:`\gamma h` in the denominator. Default 1e-8. Valid range:
    >= 0 (ValueError otherwise).
  weight_decay: decoupled decay λ. Default 1e-4 (optax's). Valid range: >= 0.
  weight_decay_mask: the leaves that get weight decay (bools like the params,
    or a function of them); None (default): all.
  gamma: the scale γ of the Hessian estimate. Default 0.01 (optax's). Valid
    range: >= 0 (ValueError otherwise).
  clip_threshold: the per-coordinate clip ρ of the step; None: no clipping.
    Default 1 (optax's). Valid range: > 0 (ValueError otherwise).
  update_interval: k, steps between Hessian estimates. Default 10 (the
    paper's k). Valid range: >= 1 (ValueError otherwise).
  hessian_diagonal_fn: a transform returning the Hessian-diagonal estimate.
    Default: optax's Hutchinson estimator (Sophia-H). On several devices it
    must average its estimate across them.
  mu_dtype: dtype of the momentum only; None (default): the state dtype.
  verbose: print the win rate (the fraction of unclipped coordinates) every
    ``print_win_rate_every_n_steps`` steps. Default False.
  print_win_rate_every_n_steps: the printing period; 0 (default): never. The
    paper keeps the win rate in 0.1-0.5 (raise ``gamma`` if it is low).
""")

split_real_and_imaginary = _alias(optax.contrib.split_real_and_imaginary, {}, r"""
Runs ``inner`` on the real and imaginary parts of complex params as two real leaves and
recombines the updates, so a real-only optimizer (e.g. Adam's per-part moments) trains
complex params. Real leaves pass through unchanged.

.. math:: (\Delta_{re}, \Delta_{im}) = \mathrm{inner}(\Re g, \Im g), \quad
   \Delta = \Delta_{re} + i\,\Delta_{im}

Args:
  inner: the transform run on the real and imaginary parts; required.
""", real_only=False)

normalize = _alias(optax.contrib.normalize, {}, r"""
Divides the updates by their global norm, :math:`g / \lVert g \rVert_2`: the
``adv_optimizer`` of :func:`optix.sam` is typically ``chain(normalize(), sgd(rho))``.
""", real_only=False)
