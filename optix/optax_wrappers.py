"""optax's wrappers of another optimizer or of the update, under optix's guarantees:
lookahead, sharpness-aware minimization (with its ``normalize``), reduce-on-plateau and
the real/imaginary split for complex params.

Each is optax's function (same signature, same numbers) with its hyperparameters
validated; :func:`lookahead` checks its ``LookaheadParams`` and keeps the updates in the
params' dtypes, the others run through :func:`optix.transforms.adapter.from_optax`.
"""

import jax
import jax.numpy as jnp
import optax

from optix import _base, _tree
from optix import _validate as v
from optix.transforms.adapter import optax_alias


def _alias(fn, checks, doc, real_only=True, wrap=None):
  return optax_alias(fn, fn.__name__, checks, doc, real_only=real_only, module=__name__,
                     wrap=wrap)


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
