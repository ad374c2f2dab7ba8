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

Scalar leaves are treated as 1-vectors (optax's transform indexes each leaf's axes).
""", wrap=scalars_as_vectors)

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

optimistic_adam_v2 = _alias(
    optax.optimistic_adam_v2,
    _adam_checks(alpha=v.nonnegative, beta=v.nonnegative, eps_root=v.nonnegative), r"""
Optimistic Adam, the form of optax's ``optimistic_adam_v2`` (Daskalakis et al. 2018,
arXiv 1711.00141): the optimistic correction is applied to the gradient before Adam's
moments, with weights α (current) and β (correction), Nesterov momentum by default.

.. math:: \tilde g_t = (\alpha + \beta) g_t - \beta g_{t-1}, \quad
   \theta \leftarrow \theta - \eta\, \hat m_t(\tilde g) / (\sqrt{\hat v_t(\tilde g)} + \epsilon)
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
""")

split_real_and_imaginary = _alias(optax.contrib.split_real_and_imaginary, {}, r"""
Runs ``inner`` on the real and imaginary parts of complex params as two real leaves and
recombines the updates, so a real-only optimizer (e.g. Adam's per-part moments) trains
complex params. Real leaves pass through unchanged.

.. math:: (\Delta_{re}, \Delta_{im}) = \mathrm{inner}(\Re g, \Im g), \quad
   \Delta = \Delta_{re} + i\,\Delta_{im}
""", real_only=False)

normalize = _alias(optax.contrib.normalize, {}, r"""
Divides the updates by their global norm, :math:`g / \lVert g \rVert_2`: the
``adv_optimizer`` of :func:`optix.sam` is typically ``chain(normalize(), sgd(rho))``.
""", real_only=False)
