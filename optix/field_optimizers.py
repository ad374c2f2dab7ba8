"""Aliases of recent first-order methods: AdEMAMix, ADOPT, MARS, cautious variants,
and the layer-wise trust-ratio methods LAMB and LARS. Each is a plain ``chain``."""

from typing import Callable, Optional

import jax

from optix import _base
from optix.transforms.ademamix import scale_by_ademamix
from optix.transforms.adaptive import scale_by_adam
from optix.transforms.adopt import _quarter_power, scale_by_adopt
from optix.transforms.cautious import cautious
from optix.transforms.decay import MaskOrFn, add_decayed_weights
from optix.transforms.mars import scale_by_mars
from optix.transforms.momentum import trace
from optix.transforms.scaling import scale_by_learning_rate
from optix.transforms.sign import scale_by_lion
from optix.transforms.trust_ratio import scale_by_trust_ratio

chain = _base.chain


def ademamix(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
             b3: _base.ScalarOrSchedule = 0.9999, alpha: _base.ScalarOrSchedule = 5.0,
             eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None, weight_decay: float = 0.0,
             mask: MaskOrFn = None, *, state_dtype=None):
  r"""AdEMAMix (Pagliardini et al. 2024, arXiv 2409.03137): AdamW whose numerator mixes
  a fast and a very slow EMA of the gradient.

  .. math:: \theta \leftarrow \theta - \eta\Big(\frac{\hat m_1 + \alpha m_2}
     {\sqrt{\hat\nu} + \epsilon} + \lambda\theta\Big)

  (see :func:`optix.scale_by_ademamix`). Defaults are optax's: β3 = 0.9999 and
  α = 5 pay off on long runs; on short ones the paper uses β3 = 0.999 or warms α
  and β3 up with schedules. State: 12 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    b1: decay of the fast EMA :math:`m_1`, in [0, 1); 0.9 (the paper's).
    b2: decay of the second moment ν, in [0, 1); 0.999 (the paper's).
    b3: decay of the slow EMA :math:`m_2`, in [0, 1), or a schedule of the step;
      0.9999 (a memory of ~10k steps).
    alpha: weight α >= 0 of the slow EMA, or a schedule; 5.0 (optax's default
      for this alias).
    eps: added to :math:`\sqrt{\hat\nu}` in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`\hat\nu` inside the root, >= 0; 0.
    mu_dtype: dtype of :math:`m_1` and :math:`m_2`; None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 0 (optax's).
    mask: which params decay: a bool tree like the params, or a callable giving one; None: all.
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``scale_by_ademamix``, ``add_decayed_weights``, ``scale_by_learning_rate``.
  """
  return chain(scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype,
                                 state_dtype=state_dtype),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))


def adopt(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.9999,
          eps: float = 1e-6, mu_dtype=None, *, nesterov: bool = False, use_clipping: bool = True,
          clip_value_fn: Callable[[jax.Array], jax.Array] = _quarter_power, state_dtype=None):
  r"""ADOPT (Taniguchi et al. 2024, arXiv 2411.02853): Adam normalizing each gradient by
  the *previous* second moment, before the momentum.

  .. math:: m_t = \beta_1 m_{t-1} + (1-\beta_1)\,\mathrm{clip}(g_t/\max(\sqrt{\nu_{t-1}},
     \epsilon)), \quad \theta \leftarrow \theta - \eta\, m_t

  (see :func:`optix.scale_by_adopt`). Defaults are the paper's and optax's.
  State: 8 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    b1: decay of the momentum of the normalized gradient, in [0, 1); 0.9.
    b2: decay of the second moment ν, in [0, 1); 0.9999 (the paper's: ADOPT
      converges for any β2, and a long memory suits it).
    eps: floor ε of the normalizer :math:`\max(\sqrt{\nu}, \epsilon)`, > 0;
      1e-6 (the paper's). 0 is rejected: it gives NaN where ν is 0 (in optax too).
    mu_dtype: dtype of the momentum; None: as ``state_dtype``.
    nesterov: return the look-ahead :math:`\beta_1 m_t + (1-\beta_1)\hat g_t`;
      False.
    use_clipping: clip the normalized gradient at ``clip_value_fn(step)``; True
      (the paper's stabilizer for the first steps). Must be False for complex
      params (``init`` raises otherwise).
    clip_value_fn: the clip threshold as a function of the 0-based step count;
      default :math:`t^{1/4}` (the paper's and optax's).
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``scale_by_adopt``, ``scale_by_learning_rate``.
  """
  return chain(scale_by_adopt(b1, b2, eps, mu_dtype, nesterov=nesterov,
                              use_clipping=use_clipping, clip_value_fn=clip_value_fn,
                              state_dtype=state_dtype),
               scale_by_learning_rate(learning_rate))


def mars_adamw(learning_rate: _base.ScalarOrSchedule = 3e-3, b1: float = 0.95, b2: float = 0.99,
               eps: float = 1e-8, gamma: float = 0.025, weight_decay: float = 0.0,
               mask: MaskOrFn = None, *, max_norm: float = 1.0, state_dtype=None):
  r"""MARS-AdamW (Yuan et al. 2024, arXiv 2411.10438): AdamW on the variance-reduced,
  clipped gradient :math:`c_t = g_t + \gamma\frac{\beta_1}{1-\beta_1}(g_t - g_{t-1})`.

  .. math:: \theta \leftarrow \theta - \eta\Big(\frac{\hat m_t(c)}{\sqrt{\hat v_t(c)}+\epsilon}
     + \lambda\theta\Big)

  (see :func:`optix.scale_by_mars`). Defaults are the paper's GPT-2 settings
  (η = 3e-3, β = (0.95, 0.99), γ = 0.025). State: 12 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule; 3e-3
      (the paper's GPT-2 value); None: no scaling and no sign flip.
    b1: decay of the first moment, in [0, 1); 0.95. It also sets the weight
      :math:`\gamma\beta_1/(1-\beta_1)` of the gradient difference.
    b2: decay of the second moment, in [0, 1); 0.99.
    eps: added to the root of the second moment, >= 0; 1e-8.
    gamma: strength γ >= 0 of the variance reduction; 0.025. 0 is AdamW on
      clipped gradients.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 0.
    mask: which params decay: a bool tree like the params, or a callable giving one; None: all.
    max_norm: threshold τ > 0 on each leaf's corrected-gradient norm; 1.0 (the
      paper's).
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``scale_by_mars``, ``add_decayed_weights``, ``scale_by_learning_rate``.
  """
  return chain(scale_by_mars(b1, b2, eps, gamma, max_norm, state_dtype=state_dtype),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))


def cautious_adamw(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None,
                   weight_decay: _base.ScalarOrSchedule = 1e-4, mask: MaskOrFn = None, *,
                   state_dtype=None):
  r"""C-AdamW (Liang et al. 2024, arXiv 2411.16085): AdamW whose Adam direction is
  masked where it disagrees in sign with the gradient (decay is not masked).

  .. math:: \theta \leftarrow \theta - \eta\big(\phi \circ \hat m/(\sqrt{\hat v}+\epsilon)
     + \lambda\theta\big)

  with :func:`optix.cautious`'s mask φ. Arguments and defaults are
  :func:`optix.adamw`'s. State: 8 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    b1: first-moment decay, in [0, 1); 0.9 (Adam's).
    b2: second-moment decay, in [0, 1); 0.999 (Adam's).
    eps: added outside the root of the second moment, >= 0; 1e-8.
    eps_root: added inside that root, >= 0; 0.
    mu_dtype: dtype of the first moment; None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 1e-4 (optax's
      ``adamw`` default). The decay is not masked by φ.
    mask: which params decay: a bool tree like the params, or a callable giving one; None: all.
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``cautious(scale_by_adam)``, ``add_decayed_weights``,
      ``scale_by_learning_rate``.
  """
  return chain(cautious(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, state_dtype=state_dtype),
                        direction_sign=1),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))


def cautious_lion(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99,
                  mu_dtype=None, weight_decay: _base.ScalarOrSchedule = 1e-3,
                  mask: MaskOrFn = None, *, state_dtype=None):
  r"""C-Lion (arXiv 2411.16085): Lion's sign step masked where it disagrees with the gradient.

  .. math:: \theta \leftarrow \theta - \eta\big(\phi \circ \mathrm{sign}(\beta_1 m
     + (1-\beta_1) g) + \lambda\theta\big)

  Arguments and defaults are :func:`optix.lion`'s. State: 4 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    b1: weight of the momentum against the gradient inside the sign, in [0, 1);
      0.9 (the Lion paper's).
    b2: decay of the momentum, in [0, 1); 0.99 (the Lion paper's).
    mu_dtype: dtype of the momentum; None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 1e-3 (optax's
      ``lion`` default; a sign step wants more decay than AdamW).
    mask: which params decay: a bool tree like the params, or a callable giving one; None: all.
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``cautious(scale_by_lion)``, ``add_decayed_weights``,
      ``scale_by_learning_rate``.
  """
  return chain(cautious(scale_by_lion(b1, b2, mu_dtype, state_dtype=state_dtype),
                        direction_sign=1),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))


def lamb(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-6, eps_root: float = 0.0, weight_decay: _base.ScalarOrSchedule = 0.0,
         mask: MaskOrFn = None, *, state_dtype=None):
  r"""LAMB (You et al. 2020, arXiv 1904.00962): AdamW's step rescaled per layer by the
  trust ratio :math:`\lVert\theta\rVert / \lVert u \rVert`.

  .. math:: u = \frac{\hat m}{\sqrt{\hat v}+\epsilon} + \lambda\theta, \quad
     \theta \leftarrow \theta - \eta \frac{\lVert\theta\rVert}{\lVert u\rVert} u

  Defaults are optax's (ε = 1e-6 as in the paper). State: 8 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    b1: first-moment decay, in [0, 1); 0.9.
    b2: second-moment decay, in [0, 1); 0.999.
    eps: added to :math:`\sqrt{\hat v}`, >= 0; 1e-6 (the paper's).
    eps_root: added to :math:`\hat v` inside the root, >= 0; 0.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 0 (optax's). It
      is added before the trust ratio, so it enters :math:`\lVert u\rVert`.
    mask: which params decay: a bool tree like the params, or a callable giving one; None: all.
    state_dtype: dtype of the statistics; None (default): at least float32, the params' kind.

  Returns:
    A ``chain`` of ``scale_by_adam``, ``add_decayed_weights``, ``scale_by_trust_ratio``,
      ``scale_by_learning_rate``.
  """
  return chain(scale_by_adam(b1, b2, eps, eps_root, state_dtype=state_dtype),
               add_decayed_weights(weight_decay, mask),
               scale_by_trust_ratio(),
               scale_by_learning_rate(learning_rate))


def lars(learning_rate: _base.ScalarOrSchedule, weight_decay: _base.ScalarOrSchedule = 0.0,
         weight_decay_mask: MaskOrFn = True, trust_coefficient: float = 0.001, eps: float = 0.0,
         trust_ratio_mask: MaskOrFn = True, momentum: float = 0.9, nesterov: bool = False, *,
         state_dtype=None):
  r"""LARS (You et al. 2017, arXiv 1708.03888): SGD with momentum on the layer-wise
  trust-ratio-scaled gradient.

  .. math:: u = g + \lambda\theta, \quad
     v \leftarrow \mu v + \eta\, c \frac{\lVert\theta\rVert}{\lVert u\rVert + \epsilon} u, \quad
     \theta \leftarrow \theta - v

  ``trust_coefficient`` c = 0.001 is the paper's; the masks choose which params
  decay and which get the trust ratio (optax's defaults: all). State: 4 bytes/param.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the
      step count; None: no scaling and no sign flip (optax's meaning).
    weight_decay: decay rate λ >= 0 added to the gradient, or a schedule; 0.
    weight_decay_mask: which params decay: True (default): all, or a tree of
      bools like the params, or a callable params -> such a tree.
    trust_coefficient: c >= 0, the trust ratio's factor; 0.001 (the paper's).
    eps: >= 0, added to :math:`\lVert u\rVert` in the ratio; 0 (optax's).
    trust_ratio_mask: which params get the trust ratio, as ``weight_decay_mask``;
      True (default): all. Biases and norm scales are often excluded.
    momentum: the momentum μ, in [0, 1]; 0.9 (the paper's).
    nesterov: Nesterov's look-ahead form of the momentum; False.
    state_dtype: dtype of the momentum buffer; None (default): the policy, at
      least float32 and the params' kind.

  Returns:
    A ``chain`` of ``add_decayed_weights``, ``scale_by_trust_ratio`` (masked),
      ``scale_by_learning_rate``, ``trace``.
  """
  return chain(add_decayed_weights(weight_decay, None if weight_decay_mask is True
                                   else weight_decay_mask),
               _masked_or_all(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
                              trust_ratio_mask),
               scale_by_learning_rate(learning_rate),
               trace(momentum, nesterov, state_dtype=state_dtype))


def _masked_or_all(tx, mask: Optional[MaskOrFn]):
  return tx if mask is True or mask is None else _base.masked(tx, mask)
