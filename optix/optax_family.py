"""optax's other optimizer aliases (its main namespace), under optix's names and guarantees.

optix adds no new math to these: each is optax's alias (same signature, same
numbers) built after its hyperparameters are validated, and run through
:func:`optix.transforms.adapter.from_optax` so its state is float32 for bf16/fp16
params (float64 for float64), donation-safe, and its errors name the leaves.
Aliases whose math is defined for real params only reject complex ones.
optax.contrib's optimizers are in :mod:`optix.optax_contrib`; the wrappers of another
optimizer (lookahead, SAM, reduce-on-plateau) in :mod:`optix.optax_wrappers`.
"""

import optax

from optix import _validate as v
from optix.transforms.adapter import optax_alias, scalars_as_vectors

_lr = v.learning_rate


def _alias(fn, checks, doc, real_only=True, wrap=None):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__,
                     wrap=wrap)


def adam_checks(**more):
  """The checks of Adam's shared hyperparameters (learning rate, b1, b2, eps), with ``more``.

  Args:
    **more: further ``{argument: check(name, value)}`` entries.
  """
  return dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, eps=v.nonnegative,
              **more)


radam = _alias(optax.radam, adam_checks(eps_root=v.nonnegative, threshold=v.finite), r"""
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

adabelief = _alias(optax.adabelief, adam_checks(eps_root=v.nonnegative), r"""
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
""", real_only=False)

yogi = _alias(optax.yogi, adam_checks(), r"""
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
""", real_only=False)

amsgrad = _alias(optax.amsgrad, adam_checks(eps_root=v.nonnegative), r"""
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
""", real_only=False)

adamax = _alias(optax.adamax, adam_checks(), r"""
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
""", real_only=False)

adamaxw = _alias(optax.adamaxw, adam_checks(weight_decay=v.nonnegative), r"""
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
""", real_only=False)

novograd = _alias(optax.novograd, adam_checks(eps_root=v.nonnegative,
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
""", real_only=False)

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
""", real_only=False)

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

optimistic_adam = _alias(optax.optimistic_adam, adam_checks(eps_root=v.nonnegative), r"""
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

optimistic_adam_v2 = _alias(
    optax.optimistic_adam_v2,
    adam_checks(alpha=v.nonnegative, beta=v.nonnegative, eps_root=v.nonnegative), r"""
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
