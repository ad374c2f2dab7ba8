"""L-BFGS and the line searches that choose its step: strong-Wolfe zoom and backtracking.

The protocol and the numbers are optax's (``optax.lbfgs``): the direction is
computed by :func:`scale_by_lbfgs` from the gradient passed as ``updates``, and the
line search receives ``value`` (the objective at ``params``), ``grad`` (its
gradient) and ``value_fn`` (the objective) as keyword extra arguments; further
keyword arguments whose names appear in ``value_fn``'s signature are passed on to
it (data, say). The searches and the two-loop recursion are optax's own, so every
trial step, every accepted step and every stored pair is the one optax takes.
optix adds around them:

* hyperparameters are checked when the transform is built (``ValueError`` naming
  the argument), where optax accepts any value and fails or loops later;
* ``value`` and ``grad`` may be left out: they are then computed from
  ``value_fn`` at ``params``; extra keyword arguments that ``value_fn`` does not
  take are ignored (other links of a chain may need them), where optax raises;
* state follows the dtype policy "at least float32, same kind": bf16/fp16 params
  keep float32 memories, values and step sizes (optax keeps them in bf16),
  float64 and complex params keep their dtype; updates come back in the param
  dtype; every state leaf is its own buffer, so the state can be donated;
* a tree mismatch between ``updates``, ``params`` and the state is named.
"""

import inspect
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from optix import _base, _tree, _validate

# The state types are optax's: a checkpoint moves between the two libraries.
ScaleByLbfgsState = optax.ScaleByLBFGSState
ScaleByZoomLinesearchState = optax.ScaleByZoomLinesearchState
ZoomLinesearchInfo = optax.ZoomLinesearchInfo
ScaleByBacktrackingLinesearchState = optax.ScaleByBacktrackingLinesearchState
# Abstract evaluation: importing optix must not start a JAX backend.
BacktrackingLinesearchInfo = type(jax.eval_shape(
    lambda: optax.scale_by_backtracking_linesearch(1).init(jnp.zeros(1))).info)
# Names kept for code written against earlier optix releases of this module.
ScaleByLinesearchState = ScaleByZoomLinesearchState
LinesearchInfo = ZoomLinesearchInfo


def _real_dtype(dtype):
  """The real dtype of ``dtype``'s precision (complex64 -> float32)."""
  return jnp.real(jnp.zeros([], dtype)).dtype


def _scalar_dtype(params, state_dtype):
  """dtype of a search's step size and value: the real dtype of the first leaf's
  state dtype (optax takes the first leaf's real dtype; the policy lifts bf16 to float32)."""
  leaves = jax.tree.leaves(params)
  return _real_dtype(_tree.state_dtype_for(leaves[0] if leaves else jnp.zeros([]), state_dtype))


def _fresh(x, dtype=None):
  """A new buffer holding ``x`` (in ``dtype``): no two state leaves may alias."""
  x = jnp.asarray(x)
  return jnp.array(x, dtype=dtype or x.dtype, copy=True)


# ---------------------------------------------------------------- L-BFGS direction


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True, *,
                   state_dtype=None) -> _base.GradientTransformation:
  r"""The L-BFGS direction :math:`P_k g_k` by the two-loop recursion (Nocedal 1980).

  With the last m pairs :math:`s_i = w_{i+1}-w_i`, :math:`y_i = g_{i+1}-g_i`,
  :math:`\rho_i = 1/\langle s_i, y_i\rangle` (0 when the product is 0):

  .. math::
     q \leftarrow g_k;\ \text{for } i = k-1 \dots k-m:\ \alpha_i = \rho_i \langle s_i, q\rangle,\
     q \leftarrow q - \alpha_i y_i; \quad r \leftarrow \gamma_k q; \\
     \text{for } i = k-m \dots k-1:\ \beta = \rho_i \langle y_i, r\rangle,\
     r \leftarrow r + (\alpha_i - \beta) s_i; \quad u_k = r

  with :math:`\gamma_k = \langle s_{k-1}, y_{k-1}\rangle / \|y_{k-1}\|^2` (1 when
  :math:`y_{k-1} = 0`) if ``scale_init_precond``, else 1, and
  :math:`\gamma_0 = \min(1, 1/\|g_0\|)` so the first step has length at most 1.
  Every pair is stored, as in optax: a line search meeting the Wolfe curvature
  condition keeps :math:`\langle s, y\rangle > 0`. Numbers are optax's
  (``optax.scale_by_lbfgs``), which this wraps. The output is a descent direction
  for the sign convention of gradients: chain ``scale(-1)`` and a line search.

  References: Nocedal, "Updating quasi-Newton matrices with limited storage",
  Math. Comp. 35 (1980); Liu & Nocedal, Math. Prog. 45 (1989); Nocedal & Wright,
  *Numerical Optimization* (2006), Algorithm 7.4.

  Args:
    memory_size: m >= 1, the number of stored pairs. State: (2m + 2) values/param.
    scale_init_precond: use :math:`\gamma_k` above instead of the identity.
    state_dtype: dtype of the stored pairs; None (default) is the policy: at least
      float32, same kind (complex params keep complex pairs).
  """
  memory_size = _validate.integer("memory_size", memory_size, low=1)
  inner = optax.scale_by_lbfgs(memory_size, scale_init_precond)

  def init(params):
    dt = lambda p: _tree.state_dtype_for(p, state_dtype)
    stacked = lambda: jax.tree.map(
        lambda p: jnp.zeros((memory_size,) + jnp.shape(p), dt(p)), params)
    return ScaleByLbfgsState(
        count=jnp.zeros([], jnp.int32), params=_tree.zeros_like(params, state_dtype),
        updates=_tree.zeros_like(params, state_dtype), diff_params_memory=stacked(),
        diff_updates_memory=stacked(), weights_memory=jnp.zeros([memory_size]))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_lbfgs needs params")
    _tree.check_match("updates", updates, "state.updates", state.updates)
    _tree.check_match("params", params, "state.params", state.params)
    direction, new_state = inner.update(updates, state, params)
    return _tree.cast_like(direction, updates), _tree.cast_like(new_state, state)

  return _base.GradientTransformation(init, update)


# ---------------------------------------------------------------- line searches


def _fn_kwargs(fn, extra_args):
  """The extra arguments ``value_fn`` takes (all of them if it has ``**kwargs``)."""
  rest = {k: v for k, v in extra_args.items() if k not in ("value", "grad", "value_fn")}
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return {}
  if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
    return rest
  names = {p.name for p in parameters}
  return {k: v for k, v in rest.items() if k in names}


def _wrap_search(name, inner, init_state, state_dtype):
  """optax's search ``inner`` with optix's checks, optional value/grad and dtype policy."""

  def update(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f"{name} needs params")
    fn = extra_args.get("value_fn")
    if fn is None:
      raise ValueError(f"{name} needs the objective as the keyword extra argument value_fn "
                       "(and optionally value, grad at params)")
    _tree.check_match("updates", updates, "params", params)
    if state.grad is not None:
      _tree.check_match("params", params, "state.grad", state.grad)
    kwargs = _fn_kwargs(fn, extra_args)
    value, grad = extra_args.get("value"), extra_args.get("grad")
    if value is None or grad is None:
      value, grad = jax.value_and_grad(lambda p: fn(p, **kwargs))(params)
    _tree.check_match("grad", grad, "params", params)
    # bf16/fp16 params are searched from their float32 values (optax's trial points
    # p + eta u are float32 for them already); other dtypes pass unchanged.
    lift = lambda tree: jax.tree.map(
        lambda x: x.astype(_tree.state_dtype_for(x, state_dtype)), tree)
    out, new_state = inner.update(updates, state, lift(params), value=value, grad=lift(grad),
                                  value_fn=fn, **kwargs)
    return _tree.cast_like(out, updates), _tree.cast_like(new_state, state)

  return _base.GradientTransformation(init_state, update)


def _check_search(max_steps_name, max_steps, slope_rtol, max_learning_rate):
  _validate.integer(max_steps_name, max_steps, low=0)
  _validate.in_range("slope_rtol", slope_rtol, 0.0, 1.0, low_closed=False, high_closed=False)
  if max_learning_rate is not None:
    _validate.positive("max_learning_rate", max_learning_rate)


def scale_by_zoom_linesearch(max_linesearch_steps: int = 20,
                             max_learning_rate: Optional[float] = None,
                             tol: float = 0.0, increase_factor: float = 2.0,
                             slope_rtol: float = 1e-4, curv_rtol: float = 0.9,
                             approx_dec_rtol: Optional[float] = 1e-6,
                             stepsize_precision: float = 1e-5,
                             initial_guess_strategy: str = "keep", verbose: bool = False, *,
                             state_dtype=None) -> _base.GradientTransformation:
  r"""Scales the direction u by a step η meeting the strong Wolfe conditions.

  .. math::
     f(w + \eta u) \le f(w) + c_1 \eta \langle \nabla f(w), u\rangle + \epsilon, \qquad
     |\langle \nabla f(w + \eta u), u\rangle| \le c_2 |\langle \nabla f(w), u\rangle|

  (:math:`c_1` = ``slope_rtol``, :math:`c_2` = ``curv_rtol``, :math:`\epsilon` =
  ``tol``), found by bracketing (from 1 or the previous step,
  ``initial_guess_strategy`` ``"one"``/``"keep"``, times ``increase_factor`` until
  the conditions hold or the value rises, capped at ``max_learning_rate``) and
  zoom (cubic, then quadratic interpolation, then bisection, until the interval
  is shorter than ``stepsize_precision``): Nocedal & Wright, *Numerical
  Optimization* (2006), Algorithms 3.5 and 3.6. ``approx_dec_rtol`` accepts the
  approximate Wolfe decrease of Hager & Zhang (2006) near the minimum (None turns
  it off). If no step meets both conditions within ``max_linesearch_steps``
  evaluations, the best step with sufficient decrease is taken, else a safe small
  one or 0; non-finite trial values count as failures. ``verbose`` prints the
  search's diagnostics. Defaults :math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9` are
  Nocedal & Wright's for quasi-Newton methods; signature, defaults and numbers are
  ``optax.scale_by_zoom_linesearch``'s, which this wraps.

  Extra args: ``value_fn`` (required), ``value``, ``grad`` (computed from
  ``value_fn`` when left out). ``state_dtype`` (keyword-only): dtype of the stored
  gradient, None for the policy (at least float32, same kind). optax requires
  ``max_linesearch_steps``; optix defaults it to 20, the value ``optax.lbfgs`` uses.

  Args:
    max_linesearch_steps: int >= 0, the most function evaluations per search; 20.
    max_learning_rate: cap of the step η, > 0; None (default): no cap.
    tol: ε >= 0 of the sufficient-decrease condition; 0.
    increase_factor: > 1, the bracketing growth of η; 2.0.
    slope_rtol: :math:`c_1`, in (0, 1); 1e-4.
    curv_rtol: :math:`c_2`, in (``slope_rtol``, 1); 0.9.
    approx_dec_rtol: >= 0, the relative tolerance of the approximate Wolfe
      decrease; 1e-6; None turns it off.
    stepsize_precision: >= 0, the interval length at which zoom stops; 1e-5.
    initial_guess_strategy: ``"keep"`` (default, optax's: start from the previous
      accepted step) or ``"one"`` (start from 1).
    verbose: print the search's diagnostics; False.
    state_dtype: dtype of the stored gradient (keyword-only); None (default): at
      least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is optax's
    ``ScaleByZoomLinesearchState`` (so checkpoints move between the libraries).
  """
  _check_search("max_linesearch_steps", max_linesearch_steps, slope_rtol, max_learning_rate)
  _validate.in_range("curv_rtol", curv_rtol, slope_rtol, 1.0, low_closed=False,
                     high_closed=False)
  _validate.nonnegative("tol", tol)
  _validate.in_range("increase_factor", increase_factor, 1.0, low_closed=False)
  if approx_dec_rtol is not None:
    _validate.nonnegative("approx_dec_rtol", approx_dec_rtol)
  _validate.nonnegative("stepsize_precision", stepsize_precision)
  _validate.one_of("initial_guess_strategy", initial_guess_strategy, {"one", "keep"})
  inner = optax.scale_by_zoom_linesearch(
      max_linesearch_steps, max_learning_rate, tol, increase_factor, slope_rtol, curv_rtol,
      approx_dec_rtol, stepsize_precision, initial_guess_strategy, verbose)

  def init(params):
    scalar = _scalar_dtype(params, state_dtype)
    template = inner.init(params).info
    return ScaleByZoomLinesearchState(
        learning_rate=jnp.ones([], scalar), value=jnp.full([], jnp.inf, scalar),
        grad=_tree.zeros_like(params, state_dtype),
        info=jax.tree.map(_fresh, template))

  return _wrap_search("scale_by_zoom_linesearch", inner, init, state_dtype)


def scale_by_backtracking_linesearch(max_backtracking_steps: int = 20, slope_rtol: float = 1e-4,
                                     decrease_factor: float = 0.8,
                                     increase_factor: float = 1.5,
                                     max_learning_rate: float = 1.0, atol: float = 0.0,
                                     rtol: float = 0.0, store_grad: bool = False,
                                     verbose: bool = False, *,
                                     state_dtype=None) -> _base.GradientTransformation:
  r"""Scales the direction u by the first η in η₀·{1, τ, τ², ...} meeting Armijo's
  sufficient decrease

  .. math::
     f(w+\eta u) \le (1 + \epsilon_r) f(w) + c_1 \eta \langle\nabla f(w), u\rangle
     + \epsilon_a,

  starting from :math:`\eta_0 = \min(\kappa\,\eta_{k-1}, \eta_{\max})` (κ =
  ``increase_factor``, τ = ``decrease_factor``, :math:`c_1` = ``slope_rtol``,
  :math:`\epsilon_r` = ``rtol``, :math:`\epsilon_a` = ``atol``). Cheaper than the
  zoom search (no curvature condition). A non-finite trial value counts as a
  failure; if the last trial is non-finite the step is 0. ``store_grad`` keeps the
  gradient at the accepted point for ``optax.value_and_grad_from_state``;
  ``verbose`` prints diagnostics. Signature, defaults and numbers are
  ``optax.scale_by_backtracking_linesearch``'s, which this wraps. References:
  Armijo 1966 (Pacific J. Math. 16); Nocedal & Wright (2006) Algorithm 3.1.

  Extra args: ``value_fn`` (required), ``value``, ``grad`` (computed from
  ``value_fn`` when left out). ``state_dtype`` (keyword-only): dtype of the stored
  gradient, None for the policy (at least float32, same kind). optax requires
  ``max_backtracking_steps``; optix defaults it to 20.

  Args:
    max_backtracking_steps: int >= 0, the most trials per step; 20.
    slope_rtol: :math:`c_1`, in (0, 1); 1e-4 (Nocedal & Wright's).
    decrease_factor: τ, in (0, 1), the shrink per failed trial; 0.8 (optax's).
    increase_factor: κ >= 1, the growth of the next step's start; 1.5 (optax's).
    max_learning_rate: :math:`\eta_{\max}` > 0, the cap of the starting step;
      1.0.
    atol: :math:`\epsilon_a` >= 0 of the decrease condition; 0.
    rtol: :math:`\epsilon_r` >= 0 of the decrease condition; 0.
    store_grad: keep the gradient at the accepted point in the state; False.
    verbose: print diagnostics; False.
    state_dtype: dtype of the stored gradient (keyword-only); None (default): at
      least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is optax's
    ``ScaleByBacktrackingLinesearchState``.
  """
  _check_search("max_backtracking_steps", max_backtracking_steps, slope_rtol,
                max_learning_rate)
  _validate.in_range("decrease_factor", decrease_factor, 0.0, 1.0, low_closed=False,
                     high_closed=False)
  _validate.in_range("increase_factor", increase_factor, 1.0)
  _validate.nonnegative("atol", atol)
  _validate.nonnegative("rtol", rtol)
  inner = optax.scale_by_backtracking_linesearch(
      max_backtracking_steps, slope_rtol, decrease_factor, increase_factor, max_learning_rate,
      atol, rtol, store_grad, verbose)

  def init(params):
    scalar = _scalar_dtype(params, state_dtype)
    template = inner.init(params).info
    return ScaleByBacktrackingLinesearchState(
        learning_rate=jnp.ones([], scalar), value=jnp.full([], jnp.inf, scalar),
        grad=_tree.zeros_like(params, state_dtype) if store_grad else None,
        info=BacktrackingLinesearchInfo(_fresh(template.num_linesearch_steps),
                                        jnp.full([], jnp.inf, scalar)))

  return _wrap_search("scale_by_backtracking_linesearch", inner, init, state_dtype)
