"""Dynamic loss scaling for float16 training (Micikevicius et al. 2018,
"Mixed Precision Training", arXiv 1710.03740).

float16 has 5 exponent bits: gradients below ~6e-8 flush to zero and above
65504 become inf. Scaling the loss by ``S`` scales every gradient by ``S``,
moving the small ones into range; the optimizer then sees ``g / S``. The scale
is adjusted on line: a non-finite gradient means ``S`` is too large, so the
step is skipped and ``S`` halved; after ``growth_interval`` good steps in a
row ``S`` doubles again.

Two ways to use it, with the same state:

* **Functions** in the training step (what jmp offered)::

    ls = optix.DynamicLossScale()          # hyperparameters, validated once
    ls_state = ls.init()
    def step(params, opt_state, ls_state, batch):
      grads = jax.grad(lambda p: ls.scale(loss_fn(p, batch), ls_state))(params)
      grads = ls.unscale(grads, ls_state, jnp.float32)  # before any clipping
      finite = optix.all_finite(grads)
      updates, new_opt_state = tx.update(grads, opt_state, params)
      params = optix.select_tree(finite, optix.apply_updates(params, updates), params)
      opt_state = optix.select_tree(finite, new_opt_state, opt_state)
      return params, opt_state, ls.adjust(ls_state, finite)

* **A transform** that wraps the optimizer and keeps the scale in the
  optimizer state: ``tx = optix.with_master_weights(optix.dynamic_loss_scaling(
  optix.chain(optix.clip_by_global_norm(1.0), optix.adamw(1e-3))))``; the step
  scales the loss by ``optix.current_loss_scale(opt_state)`` and passes the
  scaled gradients to ``tx.update``. Because the wrapper unscales *before* calling the
  inner chain, clipping inside it sees true gradient norms (clipping scaled
  gradients would clip by ``max_norm · S`` in effect).
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms.safety import all_finite, select_tree


class LossScaleState(NamedTuple):
  scale: jax.Array       # float32: the current loss scale S
  good_steps: jax.Array  # int32: consecutive finite steps since S last changed
  skipped: jax.Array     # int32, saturating: total non-finite (skipped) steps


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
  r"""Hyperparameters of dynamic loss scaling; its methods are pure functions.

  .. math::
     S_{t+1} = \begin{cases}
       \max(S_t \cdot \text{backoff}, S_{min}) & \text{non-finite } g_t \ (\text{step skipped})\\
       \min(S_t \cdot \text{growth}, S_{max}) & N \text{ finite steps in a row}\\
       S_t & \text{otherwise}\end{cases}

  Defaults: ``initial_scale=2**15`` (the largest power of two whose product
  with a loss of ~1 stays in float16), ``growth_interval=2000`` good steps,
  ×2 growth and ×0.5 backoff (Micikevicius et al. 2018; PyTorch's GradScaler
  and jmp use the same). ``min_scale`` may go below 1, for models whose raw
  gradients already overflow float16; ``max_scale=2**24`` stops the scale
  from growing without bound on a model that never overflows.

  Args:
    initial_scale: :math:`S_0`, the scale of the first step. Default
      :math:`2^{15}`. Valid range: > 0 and in [``min_scale``, ``max_scale``]
      (ValueError otherwise).
    growth_interval: N, consecutive finite steps after which the scale grows.
      Default 2000. Valid range: an integer >= 1 (ValueError otherwise).
    growth_factor: the factor of each growth. Default 2 (a power of two keeps
      the scaling exact). Valid range: >= 1 (ValueError otherwise).
    backoff_factor: the factor applied after a non-finite step. Default 0.5.
      Valid range: (0, 1] (ValueError otherwise).
    min_scale: :math:`S_{min}`, the floor of the scale. Default :math:`2^{-14}`
      (float16's smallest normal number). Valid range: > 0 and <= ``max_scale``
      (ValueError otherwise).
    max_scale: :math:`S_{max}`, the ceiling of the scale. Default :math:`2^{24}`.
      Valid range: > 0 (ValueError otherwise).
  """
  initial_scale: float = 2.0 ** 15
  growth_interval: int = 2000
  growth_factor: float = 2.0
  backoff_factor: float = 0.5
  min_scale: float = 2.0 ** -14
  max_scale: float = 2.0 ** 24

  def __post_init__(self):
    _validate.positive("initial_scale", self.initial_scale)
    _validate.integer("growth_interval", self.growth_interval, 1)
    _validate.in_range("growth_factor", self.growth_factor, 1.0)
    _validate.in_range("backoff_factor", self.backoff_factor, 0.0, 1.0, low_closed=False)
    _validate.positive("min_scale", self.min_scale)
    _validate.positive("max_scale", self.max_scale)
    _validate.at_most("min_scale", self.min_scale, "max_scale", self.max_scale)
    _validate.in_range("initial_scale", self.initial_scale, self.min_scale, self.max_scale)

  def init(self) -> LossScaleState:
    return LossScaleState(jnp.asarray(self.initial_scale, jnp.float32),
                          jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32))

  @staticmethod
  def scale(loss: jax.Array, state: LossScaleState) -> jax.Array:
    """``loss · S``, in float32 or wider (a float16 loss times 2**15 would overflow).

    Args:
      loss: the scalar loss (any float dtype).
      state: the current ``LossScaleState`` (from :meth:`init` or :meth:`adjust`).
    """
    return loss.astype(jnp.promote_types(loss.dtype, jnp.float32)) * state.scale

  @staticmethod
  def unscale(grads, state: LossScaleState, dtype=None):
    """``g / S`` per leaf, computed in float32 or wider; returned in each leaf's own
    dtype, or with ``dtype`` given in ``state_dtype_for(leaf, dtype)`` (pass
    ``jnp.float32`` to keep small float16 gradients: complex leaves then come back
    complex64, float64 ones as requested).

    Args:
      grads: the gradients of the scaled loss, any pytree of arrays.
      state: the ``LossScaleState`` whose scale multiplied the loss.
      dtype: None (default): each leaf keeps its dtype; a dtype: each leaf comes
        back in ``state_dtype_for(leaf, dtype)`` (that precision, in the leaf's
        kind: complex stays complex).
    """
    inv = 1.0 / state.scale

    def unscale_one(g):
      wide = g.astype(jnp.promote_types(g.dtype, jnp.float32))
      return (wide * inv).astype(g.dtype if dtype is None else _tree.state_dtype_for(g, dtype))
    return jax.tree.map(unscale_one, grads)

  def adjust(self, state: LossScaleState, finite: jax.Array) -> LossScaleState:
    """The next state after a step whose gradients were (not) ``finite``.

    Args:
      state: the step's ``LossScaleState``.
      finite: a boolean scalar, e.g. :func:`optix.all_finite` of the gradients.
    """
    good = jnp.where(finite, _tree.safe_increment(state.good_steps), 0)
    grow = good >= self.growth_interval
    grown = jnp.minimum(state.scale * self.growth_factor, self.max_scale)
    shrunk = jnp.maximum(state.scale * self.backoff_factor, self.min_scale)
    scale = jnp.where(finite, jnp.where(grow, grown, state.scale), shrunk)
    skipped = jnp.where(finite, state.skipped, _tree.safe_increment(state.skipped))
    return LossScaleState(scale.astype(jnp.float32),
                          jnp.where(grow, 0, good).astype(jnp.int32), skipped)


class LossScalingState(NamedTuple):
  loss_scale: LossScaleState
  inner_state: Any


def dynamic_loss_scaling(inner: _base.GradientTransformationBase,
                         initial_scale: float = 2.0 ** 15, growth_interval: int = 2000,
                         growth_factor: float = 2.0, backoff_factor: float = 0.5,
                         min_scale: float = 2.0 ** -14, max_scale: float = 2.0 ** 24
                         ) -> _base.GradientTransformation:
  r"""Wraps an optimizer for float16 training with a dynamic loss scale.

  ``update`` receives the gradients of the *scaled* loss
  (``loss · current_loss_scale(opt_state)``) and

  .. math::
     \hat g = g / S;\quad \text{finite}(\hat g)\ ?\ (\text{inner}(\hat g), S')\ :\ (0, s_{t-1},
     S \cdot \text{backoff})

  i.e. unscales first (so clipping inside ``inner`` sees true norms), skips a
  non-finite step (zero updates, inner state bit-identical) and adjusts the
  scale as :class:`DynamicLossScale` (same arguments and defaults). Unscaled
  gradients keep the gradient dtype, so a true gradient above 65504 is still
  inf in float16: for float16 params put the scaler *inside* the master-weights
  wrapper, ``with_master_weights(dynamic_loss_scaling(inner))``, which hands it
  float32 gradients to unscale.

  Args:
    inner: the optimizer that receives the unscaled gradients (any
      ``GradientTransformation``, e.g. a ``chain`` with clipping); required.
    initial_scale: the scale of the first step; :class:`DynamicLossScale`'s
      meaning, default (:math:`2^{15}`) and range (ValueError otherwise).
    growth_interval: finite steps in a row before the scale grows; default 2000,
      an integer >= 1, as in :class:`DynamicLossScale`.
    growth_factor: the factor of each growth; default 2, >= 1.
    backoff_factor: the factor after a skipped step; default 0.5, in (0, 1].
    min_scale: the scale's floor; default :math:`2^{-14}`, > 0 and <= ``max_scale``.
    max_scale: the scale's ceiling; default :math:`2^{24}`, > 0.

  Returns:
    A ``GradientTransformation`` whose state is ``LossScalingState(loss_scale,
    inner_state)``.
  """
  loss_scale = DynamicLossScale(initial_scale, growth_interval, growth_factor, backoff_factor,
                                min_scale, max_scale)
  inner = _base.with_extra_args_support(inner)

  def init(params):
    return LossScalingState(loss_scale.init(), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    ls = state.loss_scale
    finite = all_finite(updates)  # inf/NaN in the scaled gradients: the scale is too big
    grads = loss_scale.unscale(updates, ls)
    new_updates, new_inner = inner.update(grads, state.inner_state, params, **extra_args)
    out = select_tree(finite, new_updates, jax.tree.map(jnp.zeros_like, new_updates))
    inner_state = select_tree(finite, new_inner, state.inner_state)
    return out, LossScalingState(loss_scale.adjust(ls, finite), inner_state)

  return _base.GradientTransformation(init, update)


def current_loss_scale(opt_state) -> jax.Array:
  """The loss scale ``S`` held anywhere in ``opt_state`` (e.g. inside a ``chain``;
  a raw state or an ``nnx.Optimizer``'s ``opt_state``).

  Args:
    opt_state: an optimizer state (any pytree) holding exactly one
      ``LossScaleState``, as :func:`dynamic_loss_scaling` makes; required
      (ValueError when it holds none or several).

  Returns:
    The float32 scalar ``S`` to multiply the next loss by.
  """
  found = _tree.find_states(opt_state, LossScaleState)
  if len(found) != 1:
    raise ValueError(f"opt_state must hold exactly one LossScaleState, found {len(found)}")
  return found[0].scale
