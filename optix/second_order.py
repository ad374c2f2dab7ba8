"""The second-order aliases: K-FAC and L-BFGS as plain chains.

The math lives in :mod:`optix.transforms.curvature` (:func:`scale_by_kfac`) and
:mod:`optix.transforms.linesearch` (:func:`scale_by_lbfgs` and the line
searches); these are the chains that make optimizers of them.
"""

from typing import Optional, Union

from optix import _base, _validate
from optix.transforms.curvature import scale_by_kfac
from optix.transforms.linesearch import (
    scale_by_backtracking_linesearch, scale_by_lbfgs, scale_by_zoom_linesearch)
from optix.transforms.momentum import trace
from optix.transforms.scaling import scale, scale_by_learning_rate


def kfac(learning_rate: _base.ScalarOrSchedule, damping: _base.ScalarOrSchedule = 1e-3,
         ema_decay: float = 0.95, inverse_update_period: int = 5,
         kl_clip: Optional[float] = None, momentum: Optional[float] = None, *,
         state_dtype=None, require_stats: bool = True) -> _base.GradientTransformation:
  r"""K-FAC (Martens & Grosse 2015, arXiv 1503.05671): :math:`\theta \leftarrow
  \theta - \eta\, \nu\, (A+\pi\sqrt\lambda)^{-1} \nabla_W (G+\sqrt\lambda/\pi)^{-1}`.

  A chain of :func:`scale_by_kfac`, optional heavy-ball ``momentum`` and
  ``scale_by_learning_rate``. Pass the layer statistics every step as
  ``tx.update(grads, state, params, kfac_stats=stats)``; see
  :mod:`optix.transforms.curvature` for the training step with Flax NNX. State
  dtypes follow ``state_dtype`` and a missing ``kfac_stats`` raises unless
  ``require_stats=False``, as in :func:`scale_by_kfac`.

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count; also the η of the ``kl_clip`` bound.
    damping: Tikhonov damping λ >= 0, a float or a schedule; 1e-3 suits mean
      cross-entropy / squared losses with learning rates 0.1-1.
    ema_decay: ρ in [0, 1), decay of the factor EMAs; 0.95 (the paper's).
    inverse_update_period: int >= 1, steps between refreshes of the damped
      inverses; 5.
    kl_clip: κ > 0, scales the step by ν so its predicted KL change is at most
      κ; None (default): no clip (ν = 1).
    momentum: heavy-ball momentum in [0, 1] (``optix.trace``'s decay); None
      (default): none, as in the paper's plain K-FAC step.
    state_dtype: dtype of the factors, inverses, fallback EMA and momentum;
      None is the policy: at least float32 and the params' kind.
    require_stats: True (default) raises when ``update`` gets no
      ``kfac_stats`` for params with dense layers; False takes the diagonal
      fallback instead.

  Returns:
    A ``GradientTransformation`` (a ``chain``) taking the extra argument
    ``kfac_stats``.
  """
  if momentum is not None:  # trace would call it "decay"
    _validate.momentum("momentum", momentum)
  return _base.chain(
      scale_by_kfac(damping, ema_decay, inverse_update_period, kl_clip,
                    learning_rate if kl_clip is not None else None, state_dtype=state_dtype,
                    require_stats=require_stats),
      trace(momentum, state_dtype=state_dtype) if momentum is not None else _base.identity(),
      scale_by_learning_rate(learning_rate),
  )


# optax's default line search for L-BFGS: zoom, 20 evaluations, first guess 1.
_DEFAULT_LINESEARCH = scale_by_zoom_linesearch(max_linesearch_steps=20,
                                               initial_guess_strategy="one")


def lbfgs(learning_rate: Optional[_base.ScalarOrSchedule] = None, memory_size: int = 10,
          scale_init_precond: bool = True,
          linesearch: Union[str, None, _base.GradientTransformationBase] = _DEFAULT_LINESEARCH,
          *, max_linesearch_steps: int = 20) -> _base.GradientTransformation:
  r"""L-BFGS with a line search: :math:`w_{k+1} = w_k - \eta_k P_k \nabla f(w_k)`.

  A chain of :func:`scale_by_lbfgs` (two-loop recursion, memory m), ``scale(-1)``
  (or ``scale_by_learning_rate``) and a line search choosing :math:`\eta_k`. The
  default is optax's: :func:`scale_by_zoom_linesearch` (strong Wolfe) with 20
  evaluations and first guess 1. ``linesearch`` also takes ``None`` (fixed step),
  any transform, or the names ``"zoom"`` (the default search with
  ``max_linesearch_steps`` evaluations) and ``"backtracking"``
  (:func:`scale_by_backtracking_linesearch` with ``max_linesearch_steps`` trials
  and ``store_grad=True``). For full-batch, deterministic problems (small models,
  PINNs); the objective is passed at every step::

      value_and_grad = optax.value_and_grad_from_state(f)   # reuses the search's last eval
      value, grad = value_and_grad(params, state=opt_state)
      updates, opt_state = opt.update(grad, opt_state, params, value=value, grad=grad,
                                      value_fn=f)

  Same signature, defaults and numbers as ``optax.lbfgs`` (``max_linesearch_steps``
  is optix's, keyword-only); the first step is capped at unit length
  (:math:`\gamma_0 = \min(1, 1/\|g_0\|)`). State: (2m + 3) values/param.
  References: Liu & Nocedal, Math. Prog. 45 (1989); Nocedal & Wright (2006) §7.2.

  Args:
    learning_rate: a float >= 0 (finite) or a schedule multiplying the step;
      None (default, optax's): a plain ``scale(-1)``, the line search choosing
      the step length.
    memory_size: m, an int >= 1: stored (s, y) pairs; 10 (optax's).
    scale_init_precond: scale the initial inverse Hessian by
      :math:`\gamma_k = s^\top y / y^\top y` (True, default) or use the
      identity (False).
    linesearch: a transform, ``"zoom"``, ``"backtracking"`` or None (fixed
      step); default: zoom (strong Wolfe) with 20 evaluations and first guess 1.
    max_linesearch_steps: int >= 1, evaluations (zoom) or trials
      (backtracking) when ``linesearch`` is a name; 20. Ignored otherwise.

  Returns:
    A ``GradientTransformation`` (a ``chain``) taking the extra arguments
    ``value``, ``grad`` and ``value_fn`` of the line search.
  """
  if isinstance(linesearch, str):
    _validate.one_of("linesearch", linesearch, {"zoom", "backtracking"})
    _validate.integer("max_linesearch_steps", max_linesearch_steps, low=1)
    linesearch = (scale_by_zoom_linesearch(max_linesearch_steps, initial_guess_strategy="one")
                  if linesearch == "zoom" else
                  scale_by_backtracking_linesearch(max_linesearch_steps, store_grad=True))
  return _base.chain(
      scale_by_lbfgs(memory_size, scale_init_precond),
      scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
      linesearch if linesearch is not None else _base.identity(),
  )
