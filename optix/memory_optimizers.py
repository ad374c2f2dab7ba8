"""Optimizers that keep less state: Adafactor and 8-bit Adam/AdamW.

Each alias is a short, visible ``chain``. Bytes of state per parameter on a
mixed tree of 1024×1024, 4096×256 and 1024 (``optix.tools.state_memory``):
AdamW 8.0, Adafactor ≈0.014 (no momentum), 8-bit Adam ≈2.03.
"""

from typing import Optional

import jax.numpy as jnp

from optix import _base, _validate
from optix.transforms.decay import MaskOrFn, add_decayed_weights
from optix.transforms.factored import (
    clip_by_block_rms, ema_momentum, relative_step_default, scale_by_factored_rms,
    scale_by_param_block_rms, scale_by_relative_step)
from optix.transforms.quantized import scale_by_adam8bit
from optix.transforms.scaling import scale, scale_by_learning_rate

chain = _base.chain


def adafactor(learning_rate: Optional[_base.ScalarOrSchedule] = None,
              min_dim_size_to_factor: int = 128, decay_rate: float = 0.8,
              decay_offset: int = 0, multiply_by_parameter_scale: bool = True,
              clipping_threshold: Optional[float] = 1.0, momentum: Optional[float] = None,
              dtype_momentum=jnp.float32,
              weight_decay_rate: Optional[_base.ScalarOrSchedule] = None,
              eps: float = 1e-30, factored: bool = True, weight_decay_mask: MaskOrFn = None,
              *, relative_step: Optional[bool] = None, max_relative_step: float = 1e-2,
              min_param_scale: float = 1e-3, state_dtype=None):
  r"""Adafactor (Shazeer & Stern 2018, arXiv 1804.04235).

  .. math::
     u_t = \frac{g_t}{\sqrt{\hat V_t}}, \quad
     \hat u_t = \frac{u_t}{\max(1, \mathrm{RMS}(u_t)/d)}, \quad
     \theta \leftarrow \theta - \alpha_t\, \hat u_t

  with :math:`\hat V_t` the factored second moment (:func:`scale_by_factored_rms`,
  β₂ₜ = 1 − t^−0.8) and, with ``multiply_by_parameter_scale``,
  :math:`\alpha_t = \rho_t \max(\epsilon_2, \mathrm{RMS}(\theta))`. The *relative step*
  :math:`\rho_t = \min(10^{-2}, 1/\sqrt t)` is the paper's schedule (optax lacks
  it); it is on when no ``learning_rate`` is given (``relative_step=None``), and
  otherwise :math:`\rho_t` is ``learning_rate``. Optional EMA momentum
  (``momentum``, β₁; costs a full buffer) and decoupled weight decay follow.

  Arguments before ``*`` are optax's, with optax's defaults: with
  ``relative_step=False`` this matches ``optax.adafactor`` step for step (tested),
  except that statistics are float32 for bf16 params (``state_dtype=None``: the
  params' precision, at least float32; complex params get real statistics of
  :math:`|g|^2` and keep their phase, as in optax).
  State for an n×m matrix: n + m floats (without momentum).

  Args:
    learning_rate: :math:`\rho_t`, a float >= 0 (finite) or a schedule of the
      step count; None (default, optax's): the relative step below, unless
      ``relative_step=False`` (then no learning rate at all, as in optax).
    min_dim_size_to_factor: int >= 0; a tensor is factored when its
      second-largest axis is at least this; 128 (optax's).
    decay_rate: c in (0, 1], the exponent of :math:`\hat\beta_{2t} = 1 - t^{-c}`;
      0.8 (the paper's).
    decay_offset: int >= 0, steps subtracted from t in that schedule (for
      fine-tuning from a checkpoint); 0.
    multiply_by_parameter_scale: scale the step by
      :math:`\max(\epsilon_2, \mathrm{RMS}(\theta))` (True, default: a
      relative step) or not.
    clipping_threshold: d > 0 of the update clip
      :math:`\max(1, \mathrm{RMS}(u_t)/d)`; 1.0 (the paper's); None: no clip.
    momentum: β₁ in [0, 1) of an EMA of the updates; None (default): none,
      the paper's memory-lean choice.
    dtype_momentum: dtype of the momentum buffer; float32.
    weight_decay_rate: decoupled decay rate >= 0 or a schedule, applied to
      θ after the step size (not multiplied by it, as in optax); None
      (default): none.
    eps: ε₁ >= 0, added to :math:`g^2`; 1e-30 (the paper's).
    factored: factor the second moment of matrices (True, default) or keep it
      full (False: Adam-like memory).
    weight_decay_mask: which params decay: a tree of bools (or a prefix), or a
      callable params -> such a tree; None: all.
    relative_step: use ρₜ = min(``max_relative_step``, 1/√t) as the step size
      (requires ``learning_rate=None``); default: on iff ``learning_rate`` is None.
    max_relative_step: the cap > 0 of the relative step; 1e-2 (the paper's).
    min_param_scale: ε₂ >= 0, the floor of RMS(θ) (10⁻³, the paper's).
    state_dtype: dtype of the second-moment statistics; None is the policy:
      the params' precision, at least float32 (real, also for complex params).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  use_relative = relative_step_default(learning_rate, relative_step)
  # Checked here too so that errors name this function's arguments.
  _validate.integer("decay_offset", decay_offset, 0)
  _validate.nonnegative("eps", eps)
  _validate.positive("max_relative_step", max_relative_step)
  _validate.nonnegative("min_param_scale", min_param_scale)
  if momentum is not None:
    _validate.unit_interval("momentum", momentum)
  if clipping_threshold is not None:
    _validate.positive("clipping_threshold", clipping_threshold)
  if weight_decay_rate is not None:
    _validate.nonnegative("weight_decay_rate", weight_decay_rate)
  return chain(
      scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps,
                            state_dtype=state_dtype),
      clip_by_block_rms(clipping_threshold) if clipping_threshold is not None
      else _base.identity(),
      scale_by_relative_step(max_relative_step) if use_relative
      else scale_by_learning_rate(learning_rate, flip_sign=False) if learning_rate is not None
      else _base.identity(),
      scale_by_param_block_rms(min_param_scale) if multiply_by_parameter_scale
      else _base.identity(),
      ema_momentum(momentum, state_dtype=dtype_momentum) if momentum is not None
      else _base.identity(),
      add_decayed_weights(weight_decay_rate, weight_decay_mask)
      if weight_decay_rate is not None else _base.identity(),
      scale(-1.0),
  )


def adam8bit(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
             eps: float = 1e-8, eps_root: float = 0.0, *, block_size: Optional[int] = None,
             min_8bit_size: Optional[int] = None, stochastic_rounding: bool = True):
  r"""Adam with 8-bit block-wise quantized moments (Dettmers et al. 2022, arXiv 2110.02861).

  :math:`\theta \leftarrow \theta - \eta\, \hat m_t/(\sqrt{\hat v_t} + \epsilon)`, the moments
  stored as uint8 codes of a dynamic map with one float32 absmax per block of
  ``block_size`` (see :func:`scale_by_adam8bit`). Leaves smaller than
  ``min_8bit_size`` keep float32 moments; √v is rounded stochastically unless
  ``stochastic_rounding=False``. State: ≈2.03 bytes/param instead of 8.

  Args:
    learning_rate: η, a float >= 0 (finite) or a schedule of the step count;
      None: no learning rate and no sign flip (optax's convention).
    b1: β₁ in [0, 1), the first moment's EMA decay; 0.9 (Adam's).
    b2: β₂ in [0, 1), the second moment's EMA decay; 0.999 (Adam's).
    eps: ε >= 0 outside the root; 1e-8.
    eps_root: >= 0, inside the root; 0 (small and positive to differentiate
      through the step).
    block_size: int >= 1, values sharing one float32 absmax in the 8-bit
      moments; None (default): 256, the paper's (None, so that
      ``optax.inject_hyperparams`` does not inject this shape-setting argument).
    min_8bit_size: int >= 0; smaller leaves (biases, norm scales) keep float32
      moments; None (default): 4096.
    stochastic_rounding: True (default) rounds the stored √v stochastically,
      so v stays unbiased and does not stall; False: nearest.

  Returns:
    A ``chain`` ``GradientTransformation``.
  """
  return chain(scale_by_adam8bit(b1, b2, eps, eps_root, block_size=block_size,
                                 min_8bit_size=min_8bit_size,
                                 stochastic_rounding=stochastic_rounding),
               scale_by_learning_rate(learning_rate))


def adamw8bit(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, eps_root: float = 0.0,
              weight_decay: _base.ScalarOrSchedule = 1e-4, mask: MaskOrFn = None, *,
              block_size: Optional[int] = None, min_8bit_size: Optional[int] = None,
              stochastic_rounding: bool = True):
  r"""AdamW (arXiv 1711.05101) with 8-bit moments: :func:`adam8bit` plus decoupled decay.

  :math:`\theta \leftarrow \theta - \eta\,(\hat m_t/(\sqrt{\hat v_t} + \epsilon) + \lambda\theta)`.
  Defaults as ``optix.adamw``. State: ≈2.03 bytes/param.

  Args:
    learning_rate: as in :func:`adam8bit` (a float >= 0 or a schedule; None: none).
    b1: as in :func:`adam8bit`: in [0, 1); 0.9.
    b2: as in :func:`adam8bit`: in [0, 1); 0.999.
    eps: as in :func:`adam8bit`: >= 0; 1e-8.
    eps_root: as in :func:`adam8bit`: >= 0; 0.
    weight_decay: λ >= 0 (or a schedule), the decoupled decay; 1e-4, the
      default of ``optax.adamw``.
    mask: the params that decay: a bool tree (or prefix) or a callable
      returning one (e.g. ``optix.matrices_only``); None: every leaf.
    block_size: as in :func:`adam8bit`: int >= 1; None (default): 256.
    min_8bit_size: as in :func:`adam8bit`: int >= 0; None (default): 4096.
    stochastic_rounding: as in :func:`adam8bit`; True.

  Returns:
    A ``chain`` ``GradientTransformation``.
  """
  return chain(scale_by_adam8bit(b1, b2, eps, eps_root, block_size=block_size,
                                 min_8bit_size=min_8bit_size,
                                 stochastic_rounding=stochastic_rounding),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))
