"""L-BFGS and the line searches that choose its step: strong-Wolfe zoom and backtracking.

The protocol is optax's (``optax.lbfgs``): the direction is computed by
:func:`scale_by_lbfgs` from the gradient passed as ``updates``, and the line search
receives ``value`` (the objective at ``params``), ``grad`` (its gradient) and
``value_fn`` (the objective) as keyword extra arguments; further keyword arguments
whose names appear in ``value_fn``'s signature are passed on to it (data, say).
``value`` and ``grad`` may be left out: they are then computed from ``value_fn``.
The line-search state keeps the ``value`` and ``grad`` at the accepted point, so
``optax.value_and_grad_from_state(value_fn)`` reuses them for the next step.

Written here rather than reused from optax so that state stays float32 whatever
the param dtype, tree mismatches are named, and non-finite trial values shrink
the step instead of being accepted.
"""

import inspect
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms.scaling import scale, scale_by_learning_rate

_f32 = jnp.float32


def _vdot(a, b):
  """Real inner product of two trees, accumulated in float32."""
  return sum((jnp.vdot(x.astype(_f32), y.astype(_f32)) for x, y in
              zip(jax.tree.leaves(a), jax.tree.leaves(b))), jnp.zeros([], _f32))


def _axpy(alpha, x, y):
  """``alpha * x + y`` leafwise, in float32."""
  return jax.tree.map(lambda a, b: alpha * a.astype(_f32) + b.astype(_f32), x, y)


def _all_finite(tree):
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# ---------------------------------------------------------------- L-BFGS direction


class ScaleByLbfgsState(NamedTuple):
  count: jax.Array            # int32, saturating: number of updates seen
  prev_params: _base.Params   # w_{k-1}, float32
  prev_grad: _base.Updates    # g_{k-1}, float32
  s_memory: _base.Updates     # stacked s_i = w_{i+1} - w_i, leading axis memory_size
  y_memory: _base.Updates     # stacked y_i = g_{i+1} - g_i
  rho_memory: jax.Array       # 1 / <s_i, y_i>, 0 for empty or skipped slots


def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True, *,
                   curvature_eps: float = 0.0, state_dtype=jnp.float32
                   ) -> _base.GradientTransformation:
  r"""The L-BFGS direction :math:`H_k g_k` by the two-loop recursion (Nocedal 1980).

  With the last m pairs :math:`s_i = w_{i+1}-w_i`, :math:`y_i = g_{i+1}-g_i`,
  :math:`\rho_i = 1/\langle s_i, y_i\rangle`:

  .. math::
     q \leftarrow g_k;\ \text{for } i = k-1 \dots k-m:\ \alpha_i = \rho_i \langle s_i, q\rangle,\
     q \leftarrow q - \alpha_i y_i; \quad r \leftarrow \gamma_k q; \\
     \text{for } i = k-m \dots k-1:\ \beta = \rho_i \langle y_i, r\rangle,\
     r \leftarrow r + (\alpha_i - \beta) s_i; \quad u_k = r

  with :math:`\gamma_k = \langle s_{k-1}, y_{k-1}\rangle / \|y_{k-1}\|^2` when
  ``scale_init_precond`` (else 1), and :math:`\gamma_0 = \min(1, 1/\|g_0\|)` so the
  first step has length at most 1 (as in optax). A pair with
  :math:`\langle s, y\rangle \le` ``curvature_eps`` or non-finite entries is not
  stored (its slot is emptied), which keeps :math:`H_k` positive definite and the
  memory finite after a failed line search. The output is a descent direction
  for the sign convention of gradients: chain ``scale(-1)`` and a line search.

  References: Nocedal, "Updating quasi-Newton matrices with limited storage",
  Math. Comp. 35 (1980); Liu & Nocedal, Math. Prog. 45 (1989); Nocedal & Wright,
  *Numerical Optimization* (2006), Algorithm 7.4.

  Args:
    memory_size: m >= 1, the number of stored pairs. State: (2m + 2) floats/param.
    scale_init_precond: use :math:`\gamma_k` above instead of the identity.
    curvature_eps: pairs with :math:`\langle s,y\rangle \le` this are skipped.
    state_dtype: dtype of the stored pairs (float32 by default).
  """
  memory_size = _validate.integer("memory_size", memory_size, low=1)
  _validate.nonnegative("curvature_eps", curvature_eps)

  def init(params):
    stacked = lambda: jax.tree.map(  # fresh buffers: the state must be donatable
        lambda p: jnp.zeros((memory_size,) + jnp.shape(p), state_dtype), params)
    return ScaleByLbfgsState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, state_dtype),
                             _tree.zeros_like(params, state_dtype), stacked(), stacked(),
                             jnp.zeros([memory_size], state_dtype))

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_lbfgs needs params")
    _tree.check_match("updates", updates, "state.prev_grad", state.prev_grad)
    g = _tree.cast_like(updates, state.prev_grad)
    w = _tree.cast_like(params, state.prev_params)
    # 1. Store the pair from the previous step (none at the first call).
    s = jax.tree.map(jnp.subtract, w, state.prev_params)
    y = jax.tree.map(jnp.subtract, g, state.prev_grad)
    sy = _vdot(s, y)
    keep = (state.count > 0) & (sy > curvature_eps) & _all_finite((s, y))
    slot = (state.count + memory_size - 1) % memory_size
    put = lambda mem, new: mem.at[slot].set(jnp.where(keep, new, 0).astype(mem.dtype))
    s_mem = jax.tree.map(put, state.s_memory, s)
    y_mem = jax.tree.map(put, state.y_memory, y)
    rho = state.rho_memory.at[slot].set(jnp.where(keep, 1.0 / jnp.where(keep, sy, 1.0), 0.0))
    # 2. Initial scaling gamma.
    if scale_init_precond:
      yy = _vdot(y, y)
      first = jnp.minimum(1.0, 1.0 / jnp.sqrt(_vdot(g, g)))
      gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), first)
    else:
      gamma = jnp.ones([], _f32)
    # 3. Two-loop recursion, newest pair first; empty slots have rho = 0 (no-ops).
    order = (state.count + jnp.arange(memory_size)) % memory_size  # oldest .. newest
    take = lambda mem, i: jax.tree.map(lambda x: x[i], mem)

    def backward(q, i):
      alpha = rho[i] * _vdot(take(s_mem, i), q)
      return _axpy(-alpha, take(y_mem, i), q), alpha

    q, alphas = jax.lax.scan(backward, g, order, reverse=True)
    r = jax.tree.map(lambda x: gamma * x, q)

    def forward(r, i_alpha):
      i, alpha = i_alpha
      beta = rho[i] * _vdot(take(y_mem, i), r)
      return _axpy(alpha - beta, take(s_mem, i), r), None

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    new_state = ScaleByLbfgsState(_tree.safe_increment(state.count), w, g, s_mem, y_mem,
                                  rho.astype(state.rho_memory.dtype))
    return _tree.cast_like(r, updates), new_state

  return _base.GradientTransformation(init, update)


# ---------------------------------------------------------------- line searches


class LinesearchInfo(NamedTuple):
  num_linesearch_steps: jax.Array   # int32: objective evaluations in the last search
  failed: jax.Array                 # bool: no step met the conditions (a safe step or 0 taken)


class ScaleByLinesearchState(NamedTuple):
  learning_rate: jax.Array   # the accepted step size
  value: jax.Array           # objective at the accepted point (reusable by the next step)
  grad: _base.Updates        # its gradient, float32
  info: LinesearchInfo


def _objective(extra_args):
  """(value_and_grad of value_fn with its keyword arguments bound, value, grad)."""
  if "value_fn" not in extra_args or extra_args["value_fn"] is None:
    raise ValueError("the line search needs the objective as the keyword extra argument "
                     "value_fn (and optionally value, grad at params)")
  fn = extra_args["value_fn"]
  try:
    names = set(list(inspect.signature(fn).parameters)[1:])
  except (TypeError, ValueError):
    names = set()
  kwargs = {k: v for k, v in extra_args.items() if k in names}
  return jax.value_and_grad(lambda p: fn(p, **kwargs))


def _start(updates, params, extra_args, value_and_grad):
  """Value, gradient (float32) at params and the slope along ``updates``."""
  if extra_args.get("value") is None or extra_args.get("grad") is None:
    value, grad = value_and_grad(params)
  else:
    value, grad = extra_args["value"], extra_args["grad"]
  grad = _tree.cast_like(grad, _tree.zeros_like(grad))
  value = jnp.asarray(value, _f32)
  return value, grad, _vdot(grad, updates)


def _evaluate(value_and_grad, params, updates, stepsize):
  """(value, grad, slope) at params + stepsize * updates; non-finite -> value = +inf."""
  trial = jax.tree.map(lambda p, u: (p.astype(_f32) + stepsize * u.astype(_f32)).astype(p.dtype),
                       params, updates)
  value, grad = value_and_grad(trial)
  grad = jax.tree.map(lambda x: x.astype(_f32), grad)
  value = jnp.asarray(value, _f32)
  slope = _vdot(grad, updates)
  bad = ~(jnp.isfinite(value) & jnp.isfinite(slope))
  return jnp.where(bad, jnp.inf, value), grad, jnp.where(bad, jnp.nan, slope)


def _init_state(params, state_dtype):
  return ScaleByLinesearchState(jnp.ones([], state_dtype), jnp.asarray(jnp.inf, state_dtype),
                                _tree.zeros_like(params, state_dtype),
                                LinesearchInfo(jnp.zeros([], jnp.int32), jnp.zeros([], bool)))


def _interpolate(lo, f_lo, d_lo, hi, f_hi, d_hi):
  """Minimizer of the cubic matching values and slopes at lo and hi (Nocedal &
  Wright eq. 3.59), safeguarded to the middle 80% of the interval (else bisection)."""
  d1 = d_lo + d_hi - 3.0 * (f_lo - f_hi) / (lo - hi)
  d2 = jnp.sign(hi - lo) * jnp.sqrt(d1 * d1 - d_lo * d_hi)
  x = hi - (hi - lo) * (d_hi + d2 - d1) / (d_hi - d_lo + 2.0 * d2)
  left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
  margin = 0.1 * (right - left)
  ok = jnp.isfinite(x) & (x > left + margin) & (x < right - margin)
  return jnp.where(ok, x, 0.5 * (lo + hi))


def scale_by_zoom_linesearch(max_linesearch_steps: int = 20, slope_rtol: float = 1e-4,
                             curv_rtol: float = 0.9, increase_factor: float = 2.0,
                             max_learning_rate: Optional[float] = None,
                             stepsize_precision: float = 1e-6,
                             initial_guess_strategy: str = "one", *,
                             state_dtype=jnp.float32) -> _base.GradientTransformation:
  r"""Scales the direction u by a step η meeting the strong Wolfe conditions.

  .. math::
     f(w + \eta u) \le f(w) + c_1 \eta \langle \nabla f(w), u\rangle, \qquad
     |\langle \nabla f(w + \eta u), u\rangle| \le c_2 |\langle \nabla f(w), u\rangle|

  found by bracketing (η = 1, then ×``increase_factor`` until the conditions hold,
  the value rises or the slope turns non-negative) and zoom (cubic interpolation
  of values and slopes, safeguarded by bisection): Nocedal & Wright, *Numerical
  Optimization* (2006), Algorithms 3.5 and 3.6. Defaults :math:`c_1 = 10^{-4}`,
  :math:`c_2 = 0.9` are theirs for quasi-Newton methods. A trial point whose
  value or slope is not finite counts as failing the decrease condition, so the
  step shrinks. If no step meets both conditions within ``max_linesearch_steps``
  evaluations, the lowest trial meeting the decrease condition is taken, else
  η = 0 (no move; ``info.failed`` is set). ``initial_guess_strategy="keep"``
  starts from the previous accepted step instead of 1.

  Extra args: ``value_fn`` (required), ``value``, ``grad`` (optional).
  """
  max_steps = _validate.integer("max_linesearch_steps", max_linesearch_steps, low=1)
  _validate.in_range("slope_rtol", slope_rtol, 0.0, 1.0, low_closed=False, high_closed=False)
  _validate.in_range("curv_rtol", curv_rtol, slope_rtol, 1.0, low_closed=False,
                     high_closed=False)
  _validate.in_range("increase_factor", increase_factor, 1.0, low_closed=False)
  if max_learning_rate is not None:
    _validate.positive("max_learning_rate", max_learning_rate)
  _validate.nonnegative("stepsize_precision", stepsize_precision)
  _validate.one_of("initial_guess_strategy", initial_guess_strategy, {"one", "keep"})
  eta_max = jnp.inf if max_learning_rate is None else max_learning_rate

  def update(updates, state, params=None, **extra_args):
    _tree.check_match("updates", updates, "state.grad", state.grad)
    value_and_grad = _objective(extra_args)
    f0, g0, d0 = _start(updates, params, extra_args, value_and_grad)
    guess = state.learning_rate if initial_guess_strategy == "keep" else jnp.ones([], _f32)
    zero = jnp.zeros([], _f32)
    # Carry: i, zooming, done, (prev or lo: eta, f, d), (hi: eta, f, d), accepted point,
    # safe point (best trial with sufficient decrease).
    init = dict(i=jnp.zeros([], jnp.int32), zoom=jnp.zeros([], bool), done=jnp.zeros([], bool),
                lo=(zero, f0, d0), hi=(zero, f0, d0), acc=(zero, f0, g0),
                safe=(zero, f0, g0))

    def cond(c):
      return (~c["done"]) & (c["i"] < max_steps)

    def body(c):
      (lo, f_lo, d_lo), (hi, f_hi, d_hi) = c["lo"], c["hi"]
      bracket_eta = jnp.minimum(jnp.where(c["i"] == 0, guess, increase_factor * lo), eta_max)
      eta = jnp.where(c["zoom"], _interpolate(lo, f_lo, d_lo, hi, f_hi, d_hi), bracket_eta)
      f, g, d = _evaluate(value_and_grad, params, updates, eta)
      armijo = f <= f0 + slope_rtol * eta * d0
      wolfe = armijo & (jnp.abs(d) <= curv_rtol * jnp.abs(d0))
      better = armijo & (f < c["safe"][1])
      safe = jax.tree.map(lambda a, b: jnp.where(better, a, b), (eta, f, g), c["safe"])
      new, old_lo, old_hi = (eta, f, d), c["lo"], c["hi"]
      pick = lambda p, a, b: jax.tree.map(lambda x, y: jnp.where(p, x, y), a, b)
      # Bracketing (Algorithm 3.5): lo holds the previous trial.
      rises = (~armijo) | ((c["i"] > 0) & (f >= f_lo))
      b_lo = pick(rises, old_lo, new)
      b_hi = pick(rises, new, old_lo)
      b_zoom = rises | (d >= 0)
      # Zoom (Algorithm 3.6).
      z_high = (~armijo) | (f >= f_lo)
      flip = (~z_high) & (d * (hi - lo) >= 0)
      z_lo = pick(z_high, old_lo, new)
      z_hi = pick(z_high, new, pick(flip, old_lo, old_hi))
      lo_, hi_ = pick(c["zoom"], z_lo, b_lo), pick(c["zoom"], z_hi, b_hi)
      width = jnp.abs(lo_[0] - hi_[0])
      tiny = c["zoom"] & (width <= stepsize_precision * jnp.maximum(lo_[0], hi_[0]))
      capped = (~c["zoom"]) & (~b_zoom) & (eta >= eta_max)
      done = wolfe | tiny | capped
      acc = pick(wolfe, (eta, f, g), c["acc"])
      return dict(i=c["i"] + 1, zoom=c["zoom"] | b_zoom, done=done, lo=lo_, hi=hi_, acc=acc,
                  safe=safe)

    out = jax.lax.while_loop(cond, body, init)
    found = (out["acc"][0] > 0) & jnp.isfinite(out["acc"][1])
    eta, f, g = jax.tree.map(lambda a, b: jnp.where(found, a, b), out["acc"], out["safe"])
    direction = jax.tree.map(lambda u: (eta * u.astype(_f32)).astype(u.dtype), updates)
    info = LinesearchInfo(out["i"], ~found)
    new_state = ScaleByLinesearchState(
        jnp.where(eta > 0, eta, state.learning_rate).astype(state.learning_rate.dtype),
        f.astype(state.value.dtype), _tree.cast_like(g, state.grad), info)
    return direction, new_state

  return _base.GradientTransformation(lambda p: _init_state(p, state_dtype), update)


def scale_by_backtracking_linesearch(max_backtracking_steps: int = 20,
                                     slope_rtol: float = 1e-4, decrease_factor: float = 0.5,
                                     max_learning_rate: float = 1.0, *,
                                     state_dtype=jnp.float32) -> _base.GradientTransformation:
  r"""Scales the direction u by the first η in max_lr·{1, τ, τ², ...} meeting Armijo's
  sufficient decrease :math:`f(w+\eta u) \le f(w) + c_1 \eta \langle\nabla f(w), u\rangle`.

  Cheaper than the zoom search (no curvature condition, so no guarantee that
  L-BFGS pairs have positive curvature; skipped pairs make up for it). Non-finite
  trial values count as failures; after ``max_backtracking_steps`` failures η = 0.
  Armijo 1966 (Pacific J. Math. 16); Nocedal & Wright (2006) Algorithm 3.1.
  """
  max_steps = _validate.integer("max_backtracking_steps", max_backtracking_steps, low=1)
  _validate.in_range("slope_rtol", slope_rtol, 0.0, 1.0, low_closed=False, high_closed=False)
  _validate.in_range("decrease_factor", decrease_factor, 0.0, 1.0, low_closed=False,
                     high_closed=False)
  _validate.positive("max_learning_rate", max_learning_rate)

  def update(updates, state, params=None, **extra_args):
    _tree.check_match("updates", updates, "state.grad", state.grad)
    value_and_grad = _objective(extra_args)
    f0, g0, d0 = _start(updates, params, extra_args, value_and_grad)

    def cond(c):
      return (~c[1]) & (c[0] < max_steps)

    def body(c):
      i, _, _, _, _ = c
      eta = max_learning_rate * decrease_factor ** i.astype(_f32)
      f, g, _ = _evaluate(value_and_grad, params, updates, eta)
      return i + 1, f <= f0 + slope_rtol * eta * d0, eta, f, g

    zero = jnp.zeros([], _f32)
    i, ok, eta, f, g = jax.lax.while_loop(cond, body, (jnp.zeros([], jnp.int32),
                                                       jnp.zeros([], bool), zero, f0, g0))
    eta, f, g = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (eta, f, g), (zero, f0, g0))
    direction = jax.tree.map(lambda u: (eta * u.astype(_f32)).astype(u.dtype), updates)
    new_state = ScaleByLinesearchState(
        jnp.where(ok, eta, state.learning_rate).astype(state.learning_rate.dtype),
        f.astype(state.value.dtype), _tree.cast_like(g, state.grad), LinesearchInfo(i, ~ok))
    return direction, new_state

  return _base.GradientTransformation(lambda p: _init_state(p, state_dtype), update)


# ---------------------------------------------------------------- the alias


def lbfgs(learning_rate: Optional[_base.ScalarOrSchedule] = None, memory_size: int = 10,
          scale_init_precond: bool = True,
          linesearch: Union[str, None, _base.GradientTransformationBase] = "zoom",
          max_linesearch_steps: int = 20) -> _base.GradientTransformation:
  r"""L-BFGS with a line search: :math:`w_{k+1} = w_k - \eta_k H_k \nabla f(w_k)`.

  A chain of :func:`scale_by_lbfgs` (two-loop recursion, memory m), ``scale(-1)``
  (or ``scale_by_learning_rate``) and a line search choosing :math:`\eta_k`:
  ``"zoom"`` (strong Wolfe, :func:`scale_by_zoom_linesearch`, the default, as in
  optax), ``"backtracking"`` (Armijo, :func:`scale_by_backtracking_linesearch`),
  ``None`` (fixed step) or any transform. For full-batch, deterministic problems
  (small models, PINNs); the objective is passed at every step::

      value_and_grad = optax.value_and_grad_from_state(f)   # reuses the search's last eval
      value, grad = value_and_grad(params, state=opt_state)
      updates, opt_state = opt.update(grad, opt_state, params, value=value, grad=grad,
                                      value_fn=f)

  Same signature and defaults as ``optax.lbfgs``; the first step is capped at
  unit length (:math:`\gamma_0 = \min(1, 1/\|g_0\|)`). State: (2m + 4) floats/param.
  References: Liu & Nocedal, Math. Prog. 45 (1989); Nocedal & Wright (2006) §7.2.
  """
  if isinstance(linesearch, str):
    _validate.one_of("linesearch", linesearch, {"zoom", "backtracking"})
    linesearch = (scale_by_zoom_linesearch(max_linesearch_steps) if linesearch == "zoom"
                  else scale_by_backtracking_linesearch(max_linesearch_steps))
  return _base.chain(
      scale_by_lbfgs(memory_size, scale_init_precond),
      scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
      linesearch if linesearch is not None else _base.identity(),
  )
