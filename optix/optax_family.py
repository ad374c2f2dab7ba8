"""optax's other optimizer aliases, under optix's names and guarantees.

optix adds no new math to these: each is optax's alias (same signature, same
numbers) built after its hyperparameters are validated, and run through
:func:`optix.transforms.adapter.from_optax` so its state is float32 for bf16/fp16
params (float64 for float64), donation-safe, and its errors name the leaves.
Aliases whose math is defined for real params only reject complex ones.
"""

import optax

from optix import _validate as v
from optix.transforms.adapter import optax_alias

_lr = v.learning_rate


def _alias(fn, checks, doc, real_only=True):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__)


def _adam_checks(**more):
  return dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, eps=v.nonnegative,
              **more)


radam = _alias(optax.radam, _adam_checks(eps_root=v.nonnegative, threshold=v.finite), r"""
RAdam (Liu et al. 2020, arXiv 1908.03265): Adam with the variance of the adaptive
rate rectified; SGD with momentum while :math:`\rho_t \le` ``threshold`` (5).

.. math:: \theta \leftarrow \theta - \eta\, r_t\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)
""", real_only=False)

adabelief = _alias(optax.adabelief, _adam_checks(eps_root=v.nonnegative), r"""
AdaBelief (Zhuang et al. 2020, arXiv 2010.07468): Adam whose second moment tracks
:math:`(g - m)^2`, the "belief" in the gradient; ε = 1e-16, eps_root = 1e-16 as in the paper.

.. math:: s_t = \beta_2 s + (1-\beta_2)(g - m_t)^2, \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)
""")

yogi = _alias(optax.yogi, _adam_checks(), r"""
Yogi (Zaheer et al. 2018, NeurIPS): Adam with an additive second-moment update.

.. math:: v_t = v - (1-\beta_2)\,\mathrm{sign}(v - g^2)\, g^2, \quad
   \theta \leftarrow \theta - \eta\, m_t / (\sqrt{v_t} + \epsilon)

ε = 1e-3 as in the paper.
""")

amsgrad = _alias(optax.amsgrad, _adam_checks(eps_root=v.nonnegative), r"""
AMSGrad (Reddi et al. 2018, arXiv 1904.09237): Adam dividing by the running maximum of v.

.. math:: \hat v_t = \max(\hat v_{t-1}, v_t), \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)
""")

adamax = _alias(optax.adamax, _adam_checks(), r"""
AdaMax (Kingma & Ba 2015, arXiv 1412.6980 §7): Adam with the infinity norm.

.. math:: u_t = \max(\beta_2 u, |g|), \quad
   \theta \leftarrow \theta - \eta\, \hat m_t / (u_t + \epsilon)
""")

adamaxw = _alias(optax.adamaxw, _adam_checks(weight_decay=v.nonnegative), r"""
AdaMax with decoupled weight decay (arXiv 1412.6980, 1711.05101).

.. math:: \theta \leftarrow \theta - \eta\,(\hat m_t / (u_t + \epsilon) + \lambda\theta)
""")

novograd = _alias(optax.novograd, _adam_checks(eps_root=v.nonnegative,
                                               weight_decay=v.nonnegative), r"""
NovoGrad (Ginsburg et al. 2019, arXiv 1905.11286): layer-wise second moments.

.. math:: v^l_t = \beta_2 v^l + (1-\beta_2)\lVert g^l\rVert^2, \quad
   m_t = \beta_1 m + (g / \sqrt{v^l_t + \epsilon} + \lambda\theta)
""")

sm3 = _alias(optax.sm3, dict(learning_rate=_lr, momentum=v.unit_interval), r"""
SM3 (Anil et al. 2019, arXiv 1901.11150): memory-lean AdaGrad with one accumulator
per row and column (the minimum of their maxima bounds each coordinate's sum).

.. math:: \nu_t(i) = \min_{r \ni i} \mu_{t-1}(r) + g_t(i)^2, \quad
   \theta \leftarrow \theta - \eta\, g / \sqrt{\nu_t}
""")

fromage = _alias(optax.fromage, dict(learning_rate=_lr, min_norm=v.nonnegative), r"""
Fromage (Bernstein et al. 2020, arXiv 2002.03432): the step is a fixed fraction of each
layer's norm.

.. math:: \theta \leftarrow \frac{\theta - \eta \frac{\lVert\theta\rVert}{\lVert g\rVert} g}
   {\sqrt{1 + \eta^2}}
""")

adan = _alias(optax.adan, dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval,
                               b3=v.unit_interval, eps=v.nonnegative, eps_root=v.nonnegative,
                               weight_decay=v.nonnegative), r"""
Adan (Xie et al. 2022, arXiv 2208.06677): Nesterov momentum estimated from gradient
differences.

.. math:: m = (1-\beta_1) m + \beta_1 g, \quad d = (1-\beta_2) d + \beta_2 (g - g_{-1}), \quad
   n = (1-\beta_3) n + \beta_3 (g + (1-\beta_2)(g - g_{-1}))^2, \\
   \theta \leftarrow (\theta - \eta (m + (1-\beta_2) d)/(\sqrt n + \epsilon)) / (1 + \lambda\eta)
""")

sign_sgd = _alias(optax.sign_sgd, dict(learning_rate=_lr), r"""
signSGD (Bernstein et al. 2018, arXiv 1802.04434): :math:`\theta \leftarrow \theta
- \eta\, \mathrm{sign}(g)`.
""")

signum = _alias(optax.signum, dict(learning_rate=_lr, beta=v.unit_interval), r"""
Signum (Bernstein et al. 2018, arXiv 1802.04434): the sign of the gradient's momentum.

.. math:: m = \beta m + (1-\beta) g, \quad \theta \leftarrow \theta - \eta\, \mathrm{sign}(m)
""")

rprop = _alias(optax.rprop, dict(learning_rate=_lr, eta_minus=v.nonnegative,
                                 eta_plus=v.nonnegative, min_step_size=v.nonnegative,
                                 max_step_size=v.nonnegative), r"""
Rprop (Riedmiller & Braun 1993, ICNN): per-coordinate step sizes grown by ``eta_plus``
while the gradient keeps its sign and shrunk by ``eta_minus`` when it flips.

.. math:: \theta \leftarrow \theta - s_t\, \mathrm{sign}(g_t)
""")

adadelta = _alias(optax.adadelta, dict(learning_rate=_lr, rho=v.unit_interval,
                                       eps=v.nonnegative, weight_decay=v.nonnegative), r"""
AdaDelta (Zeiler 2012, arXiv 1212.5701): steps in the units of the params.

.. math:: u = \frac{\sqrt{\Delta + \epsilon}}{\sqrt{\nu + \epsilon}} g, \quad
   \nu = \rho\nu + (1-\rho) g^2, \quad \Delta = \rho\Delta + (1-\rho) u^2
""")

polyak_sgd = _alias(optax.polyak_sgd, dict(max_learning_rate=v.nonnegative, scaling=_lr,
                                           f_min=v.finite, eps=v.nonnegative), r"""
SGD with the Polyak step size (Loizou et al. 2021, arXiv 2002.10542); needs the loss as
the extra argument ``value``.

.. math:: \theta \leftarrow \theta - \min\Big(\frac{f(\theta) - f^*}{\lVert g\rVert^2
   + \epsilon}, \eta_{max}\Big) g
""")

optimistic_gradient_descent = _alias(
    optax.optimistic_gradient_descent, dict(learning_rate=_lr, alpha=v.nonnegative,
                                            beta=v.nonnegative), r"""
Optimistic gradient descent (Mokhtari et al. 2019, arXiv 1901.08511), for min-max games.

.. math:: \theta \leftarrow \theta - \eta\,((\alpha + \beta) g_t - \beta g_{t-1})
""", real_only=False)

optimistic_adam = _alias(optax.optimistic_adam, _adam_checks(eps_root=v.nonnegative), r"""
Optimistic Adam (Daskalakis et al. 2018, arXiv 1711.00141): Adam's direction with an
optimistic correction, for min-max games.

.. math:: \theta \leftarrow \theta - \eta\,(2 u_t - u_{t-1}), \quad u_t = \hat m_t/(\sqrt{\hat v_t}
   + \epsilon)
""")

noisy_sgd = _alias(optax.noisy_sgd, dict(learning_rate=_lr, eta=v.nonnegative,
                                         gamma=v.nonnegative), r"""
Noisy SGD (Neelakantan et al. 2015, arXiv 1511.06807): annealed Gaussian noise on the
gradient.

.. math:: \theta \leftarrow \theta - \eta\,(g + \mathcal N(0, \eta_n/(1+t)^\gamma))
""")

lookahead = _alias(optax.lookahead, dict(sync_period=lambda n, x: v.integer(n, x, 1),
                                         slow_step_size=lambda n, x: v.in_range(n, x, 0.0, 1.0)),
                   r"""
Lookahead (Zhang et al. 2019, arXiv 1907.08610): every ``sync_period`` steps the slow
weights move a fraction α of the way to the fast ones, and the fast restart from them.

.. math:: \phi \leftarrow \phi + \alpha(\theta_k - \phi), \quad \theta \leftarrow \phi

Params are ``optax.LookaheadParams(fast, slow)``.
""", real_only=False)

madgrad = _alias(optax.contrib.madgrad, dict(learning_rate=_lr, momentum=v.unit_interval,
                                             weight_decay=v.nonnegative, eps=v.nonnegative),
                 r"""
MADGRAD (Defazio & Jelassi 2021, arXiv 2101.11075): dual averaging with a cube-root
AdaGrad denominator and momentum by averaging.

.. math:: z_t = x_0 - \frac{\sum_s \lambda_s g_s}{\sqrt[3]{\sum_s \lambda_s g_s^2} + \epsilon},
   \quad x_{t+1} = (1-c) x_t + c\, z_t
""")

momo = _alias(optax.contrib.momo, dict(learning_rate=_lr, beta=v.unit_interval,
                                       weight_decay=v.nonnegative), r"""
MoMo (Schaipp et al. 2023, arXiv 2305.07583): momentum SGD with a Polyak-type
step size from a model of the loss; needs the loss as the extra argument ``value``.

.. math:: \theta \leftarrow \theta - \min\big(\eta, \frac{(\bar f - f^* + \langle \bar d,
   \theta\rangle - \bar\gamma)_+}{\lVert \bar d\rVert^2}\big) \bar d
""")

momo_adam = _alias(optax.contrib.momo_adam, _adam_checks(weight_decay=v.nonnegative), r"""
MoMo-Adam (Schaipp et al. 2023, arXiv 2305.07583): MoMo's step size on Adam's
preconditioned direction; needs the loss as the extra argument ``value``.
""")

acprop = _alias(optax.contrib.acprop, _adam_checks(eps_root=v.nonnegative,
                                                   weight_decay=v.nonnegative), r"""
ACProp (Zhuang et al. 2021, arXiv 2110.05454): AdaBelief's centered second moment,
applied asynchronously (the previous step's :math:`s` normalizes the current gradient).

.. math:: \theta \leftarrow \theta - \eta\, m_t / (\sqrt{s_{t-1}} + \epsilon)
""")

simplified_ademamix = _alias(
    optax.contrib.simplified_ademamix,
    dict(learning_rate=_lr, b1=v.unit_interval, b2=v.unit_interval, alpha=v.nonnegative,
         eps=v.nonnegative, eps_root=v.nonnegative, weight_decay=v.nonnegative), r"""
Simplified AdEMAMix (Morwani et al. 2024, arXiv 2502.02431): one momentum
accumulated without the (1-β1) factor, mixed with the gradient.

.. math:: m = \beta_1 m + g, \quad \theta \leftarrow \theta - \eta\,\frac{\alpha g + m}
   {\sqrt{\hat v} + \epsilon}
""")

sam = _alias(optax.contrib.sam, dict(sync_period=lambda n, x: v.integer(n, x, 1)), r"""
Sharpness-aware minimization (Foret et al. 2021, arXiv 2010.01412): ``adv_optimizer``
takes ``sync_period - 1`` ascent steps to a nearby worst point, then ``optimizer``
steps from the original params with the gradient found there.

.. math:: \tilde\theta = \theta + \rho\, g/\lVert g\rVert, \quad
   \theta \leftarrow \theta - \eta\,\nabla f(\tilde\theta)
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
""", real_only=False)
