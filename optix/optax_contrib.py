"""optax.contrib's optimizers, under optix's names and guarantees.

As in :mod:`optix.optax_family`: each is optax's function (same signature, same
numbers) built after its hyperparameters are validated and run through
:func:`optix.transforms.adapter.from_optax` (state dtype policy, donation-safe state,
named errors). Aliases whose math is defined for real params only reject complex ones.
"""

import math

import jax
import jax.numpy as jnp
import optax

from optix import _validate as v
from optix.optax_family import adam_checks
from optix.transforms.adapter import optax_alias

_lr = v.learning_rate


def _alias(fn, checks, doc, real_only=True, wrap=None):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__,
                     wrap=wrap)


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

momo_adam = _alias(optax.contrib.momo_adam, adam_checks(weight_decay=v.nonnegative), r"""
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

acprop = _alias(optax.contrib.acprop, adam_checks(eps_root=v.nonnegative,
                                                   weight_decay=v.nonnegative), r"""
ACProp (Zhuang et al. 2021, arXiv 2110.05454): AdaBelief's centered second moment,
applied asynchronously (the previous step's :math:`s` normalizes the current gradient).

.. math:: \theta \leftarrow \theta - \eta\, m_t / (\sqrt{s_{t-1}} + \epsilon)

Args:
  learning_rate: the step size η, a float or a schedule of the step count; no
    default (optax's). Valid range: [0, inf) (ValueError otherwise).
  b1: decay of the first-moment EMA. Default 0.9. Valid range: [0, 1).
  b2: decay of the centered second moment :math:`s`. Default 0.999. Valid
    range: [0, 1) (ValueError otherwise). optax forms :math:`1-\beta_2` of a
    Python float in float64 but :math:`\beta_2^t` of the bias correction in
    float32; for 0.999 they disagree by 1.3e-5 relative, which the step
    :math:`g/\sqrt{\hat s}` carries when s is small. An injected (float32)
    :math:`\beta_2`, or ``float(np.float32(b2))``, uses one value for both.
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

def _without_empty_arrays(tx):
  """``tx`` whose state holds a 0-d zero in place of each zero-size array.

  optax's galore keeps a (0, 0) projector for every leaf it does not project, and orbax
  cannot save zero-size arrays. ``update`` puts the empty arrays back (their shapes and
  dtypes from an abstract ``tx.init`` of the updates) before it calls ``tx``, so the
  updates and the other state leaves are ``tx``'s, bit for bit.

  Args:
    tx: an optax ``GradientTransformation`` whose ``init`` depends on the params' shapes
      and dtypes only.
  """
  tx = optax.with_extra_args_support(tx)
  empty = lambda x: hasattr(x, "shape") and math.prod(x.shape) == 0

  def fill(state):
    return jax.tree.map(lambda x: jnp.zeros((), x.dtype) if empty(x) else x, state)

  def init(params):
    return fill(tx.init(params))

  def update(updates, state, params=None, **extra_args):
    shapes = jax.eval_shape(tx.init, updates)
    state = jax.tree.map(lambda x, a: jnp.zeros(a.shape, a.dtype) if empty(a) else x,
                         state, shapes)
    out, new_state = tx.update(updates, state, params, **extra_args)
    return out, fill(new_state)

  return optax.GradientTransformationExtraArgs(init, update)


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
The state is optax's ``GaLoreState`` except that a leaf without a projector holds a 0-d zero
where optax keeps a (0, 0) array, so the state checkpoints with orbax; the numbers are optax's.

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
""", wrap=_without_empty_arrays)

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
