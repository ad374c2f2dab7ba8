"""Adafactor's pieces (Shazeer & Stern 2018, arXiv 1804.04235).

A factored second moment (row and column statistics instead of a full ``v``),
the β₂ₜ = 1 − t^−c decay schedule, update clipping by RMS, the relative step
size min(10⁻², 1/√t) and the parameter-scale multiplier max(ε₂, RMS(θ)), and the
optional (undebiased) momentum. ``optix.adafactor`` chains them.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix.transforms.moments import abs_sq


def factored_dims(shape, factored: bool = True, min_dim_size_to_factor: int = 128):
  """The ``(d1, d0)`` axes to factor over (second largest, largest), or None.

  A tensor is factored when it has at least two axes and its second-largest axis
  has size >= ``min_dim_size_to_factor``. Ties go to the later axis (as in optax).
  """
  if not factored or len(shape) < 2:
    return None
  order = np.argsort(shape)  # stable: equal sizes keep their order
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _structure(tree):
  """Every leaf replaced by a shapeless placeholder: compares tree structures only."""
  return jax.tree.map(lambda _: np.zeros(()), tree)


class FactoredRmsState(NamedTuple):
  count: jax.Array        # int32, saturating
  v_row: _base.Updates    # mean of g² over the largest axis (factored leaves; () otherwise)
  v_col: _base.Updates    # mean of g² over the second-largest axis (factored leaves)
  v: _base.Updates        # full EMA of g² (unfactored leaves; () otherwise)


def decay_rate_pow(step, exponent=0.8) -> jax.Array:
  r"""Adafactor's second-moment decay :math:`\hat\beta_{2t} = 1 - t^{-c}`, ``t = step + 1``
  (``step`` counts from 0), in float32 (the 1 is added in float32, so a step count
  saturated at 2**31 - 1 does not wrap)."""
  t = jnp.asarray(step, jnp.float32) + 1.0
  return 1.0 - t ** (-exponent)


def scale_by_factored_rms(factored: bool = True, decay_rate: float = 0.8,
                          step_offset: int = 0, min_dim_size_to_factor: int = 128,
                          epsilon: float = 1e-30, decay_rate_fn=decay_rate_pow, *,
                          state_dtype=None) -> _base.GradientTransformation:
  r"""Adafactor's scaling by a factored estimate of the gradient's RMS.

  With :math:`t` the 1-based step (minus ``step_offset``) and
  :math:`\hat\beta_{2t} = 1 - t^{-c}` (``c = decay_rate``; :math:`\hat\beta_{21} = 0`,
  so no bias correction is needed), for a matrix leaf with rows along the
  second-largest axis and columns along the largest:

  .. math::
     R_t = \hat\beta_{2t} R_{t-1} + (1-\hat\beta_{2t})\,\mathrm{mean}_{cols}(g^2 + \epsilon_1),\quad
     C_t = \hat\beta_{2t} C_{t-1} + (1-\hat\beta_{2t})\,\mathrm{mean}_{rows}(g^2 + \epsilon_1), \\
     \hat V_t = R_t C_t^\top / \mathrm{mean}(R_t), \qquad u_t = g_t / \sqrt{\hat V_t}

  (the paper's :math:`R C / 1^\top R` written with means). Tensors with more axes
  are factored over their two largest; vectors, scalars and matrices whose
  second-largest axis is below ``min_dim_size_to_factor`` keep a full
  :math:`v_t = \hat\beta_{2t} v_{t-1} + (1-\hat\beta_{2t})(g^2+\epsilon_1)`,
  :math:`u_t = g_t/\sqrt{v_t}`. State for an n×m matrix: n + m floats instead of nm.

  Defaults follow the paper and optax: ``decay_rate=0.8``, ``epsilon=1e-30``
  (ε₁), ``min_dim_size_to_factor=128``. ``decay_rate_fn(step, decay_rate)`` gives
  :math:`\hat\beta_{2t}` from the 0-based step (minus ``step_offset``, floored at 0);
  the default is ``decay_rate_pow`` (this module), the paper's; a bounded schedule keeps the
  statistics moving late in training (Zhai et al. 2021, arXiv 2106.04560).

  Statistics are real (:math:`|g|^2` for complex params, whose update keeps its
  phase: :math:`u = g/\sqrt{\hat V}`).

  Args:
    factored: factor the second moment of tensors with >= 2 axes; True. False
      keeps a full ``v`` for every leaf (Adam-sized state).
    decay_rate: the exponent c of :math:`\hat\beta_{2t} = 1 - t^{-c}`, in (0, 1];
      0.8 (the paper's and optax's).
    step_offset: int >= 0 subtracted from the step count before the decay is
      computed (to restart the schedule, e.g. after fine-tuning begins); 0.
    min_dim_size_to_factor: int >= 0; a tensor whose second-largest axis is
      shorter keeps a full ``v``; 128 (optax's).
    epsilon: ε₁ >= 0 added to :math:`g^2`; 1e-30 (the paper's: only keeps the
      statistics positive).
    decay_rate_fn: a callable (0-based step, decay_rate) -> :math:`\hat\beta_{2t}`;
      the default is ``decay_rate_pow`` (this module), the paper's.
    state_dtype: dtype of the statistics (its real counterpart for complex params);
      None (default): at least float32, the params' precision.

  Returns:
    A ``GradientTransformation`` whose state is
    ``FactoredRmsState(count, v_row, v_col, v)``.
  """
  _validate.in_range("decay_rate", decay_rate, 0.0, 1.0, low_closed=False)
  _validate.integer("step_offset", step_offset, 0)
  _validate.integer("min_dim_size_to_factor", min_dim_size_to_factor, 0)
  _validate.nonnegative("epsilon", epsilon)
  _validate.dtype("state_dtype", state_dtype)

  def dims(p):
    return factored_dims(jnp.shape(p), factored, min_dim_size_to_factor)

  def stat_dtype(p):  # the real dtype of the policy's state dtype (complex64 -> float32)
    return jnp.finfo(_tree.state_dtype_for(p, state_dtype)).dtype

  def init(params):
    def init_leaf(p):
      d = dims(p)
      shape = jnp.shape(p)
      dtype = stat_dtype(p)
      none = lambda: jnp.zeros((), dtype)  # a fresh buffer each: state must be donatable
      if d is None:
        return none(), none(), jnp.zeros(shape, dtype)
      d1, d0 = d
      row = jnp.zeros(shape[:d0] + shape[d0 + 1:], dtype)
      col = jnp.zeros(shape[:d1] + shape[d1 + 1:], dtype)
      return row, col, none()

    leaves, treedef = jax.tree.flatten(params)
    rows, cols, vs = zip(*map(init_leaf, leaves)) if leaves else ((), (), ())
    return FactoredRmsState(jnp.zeros([], jnp.int32), *(jax.tree.unflatten(treedef, list(x))
                                                          for x in (rows, cols, vs)))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", _structure(updates), "state.v", _structure(state.v))
    count = _tree.safe_increment(state.count)
    beta = decay_rate_fn(jnp.maximum(state.count - step_offset, 0), decay_rate)

    def update_leaf(g, row, col, v):
      dtype = (row if dims(g) is not None else v).dtype
      g32 = g.astype(_tree.state_dtype_for(g, dtype))
      g2 = abs_sq(g32) + epsilon
      beta_t = jnp.asarray(beta, dtype)
      d = dims(g)
      if d is None:
        v = (beta_t * v + (1 - beta_t) * g2).astype(dtype)
        return (g32 * jax.lax.rsqrt(v)).astype(g.dtype), row, col, v
      d1, d0 = d
      row = (beta_t * row + (1 - beta_t) * jnp.mean(g2, axis=d0)).astype(dtype)
      col = (beta_t * col + (1 - beta_t) * jnp.mean(g2, axis=d1)).astype(dtype)
      row_axis = d1 if d1 < d0 else d1 - 1  # d1's position in ``row`` (d0 removed)
      row_scale = jax.lax.rsqrt(row / jnp.mean(row, axis=row_axis, keepdims=True))
      u = g32 * jnp.expand_dims(row_scale, d0) * jnp.expand_dims(jax.lax.rsqrt(col), d1)
      return u.astype(g.dtype), row, col, v

    leaves, treedef = jax.tree.flatten(updates)
    out = [update_leaf(*args) for args in zip(
        leaves, treedef.flatten_up_to(state.v_row), treedef.flatten_up_to(state.v_col),
        treedef.flatten_up_to(state.v))]
    u, rows, cols, vs = (jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(4))
    return u, FactoredRmsState(count, rows, cols, vs)

  return _base.GradientTransformation(init, update)


def _rms(x):
  """RMS of |x| in ``x``'s precision, at least float32 (complex: the modulus)."""
  x = jnp.asarray(x)
  wide = x.astype(_tree.state_dtype_for(x))
  return jnp.sqrt(jnp.mean(abs_sq(wide)))


def clip_by_block_rms(threshold: float = 1.0) -> _base.GradientTransformation:
  r"""Update clipping: :math:`u \leftarrow u / \max(1, \mathrm{RMS}(u)/d)` per leaf.

  Adafactor's remedy for the too-large updates a slowly decaying second moment
  gives (paper §6). Stateless.

  Args:
    threshold: d > 0, the largest RMS let through; 1.0 (the paper's).

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.positive("threshold", threshold)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    updates = jax.tree.map(
        lambda u: (u / jnp.maximum(1.0, _rms(u) / threshold)).astype(u.dtype), updates)
    return updates, state

  return _base.GradientTransformation(lambda _: _base.EmptyState(), update)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> _base.GradientTransformation:
  r"""Relative step: :math:`u \leftarrow u \cdot \max(\epsilon_2, \mathrm{RMS}(\theta))` per leaf.

  Steps proportional to the parameter's own scale (paper §8); ``min_scale`` (ε₂ =
  10⁻³) lets zero-initialised parameters move. Needs ``params``. Stateless.

  Args:
    min_scale: ε₂ >= 0, the floor of the multiplier; 1e-3 (the paper's).

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.nonnegative("min_scale", min_scale)

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.require_params("scale_by_param_block_rms", params)
    _tree.check_match("updates", updates, "params", params)
    updates = jax.tree.map(
        lambda u, p: (u * jnp.maximum(min_scale, _rms(p))).astype(u.dtype), updates, params)
    return updates, state

  return _base.GradientTransformation(lambda _: _base.EmptyState(), update)


class RelativeStepState(NamedTuple):
  count: jax.Array  # int32, saturating


def scale_by_relative_step(max_step: float = 1e-2) -> _base.GradientTransformation:
  r"""Adafactor's step-size schedule: :math:`u \leftarrow \min(\rho_{max}, 1/\sqrt t)\, u`.

  ``t`` is the 1-based step; with :func:`scale_by_param_block_rms` after it this
  is the paper's relative step :math:`\rho_t = \min(10^{-2}, 1/\sqrt t)\cdot
  \max(\epsilon_2, \mathrm{RMS}(\theta))` (§8), which optax does not provide.

  Args:
    max_step: :math:`\rho_{max}` > 0, the cap of the step size; 1e-2 (the
      paper's, so the first 10⁴ steps are at the cap).

  Returns:
    A ``GradientTransformation`` whose state is ``RelativeStepState(count)``.
  """
  _validate.positive("max_step", max_step)

  def init(params):
    del params
    return RelativeStepState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    count = _tree.safe_increment(state.count)
    rho = jnp.minimum(max_step, jax.lax.rsqrt(count.astype(jnp.float32)))
    return jax.tree.map(lambda u: (rho * u).astype(u.dtype), updates), RelativeStepState(count)

  return _base.GradientTransformation(init, update)


class EmaMomentumState(NamedTuple):
  mu: _base.Updates  # float32 by default


def ema_momentum(decay: float, *, state_dtype=None) -> _base.GradientTransformation:
  r"""Undebiased EMA momentum: :math:`m_t = \beta m_{t-1} + (1-\beta) u_t`, output :math:`m_t`.

  Adafactor's optional momentum (paper §7, β₁); off by default there because it
  costs a full-size buffer.

  Args:
    decay: β, in [0, 1) (no default; 0.9 is the usual value).
    state_dtype: dtype of m; None (default): at least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is ``EmaMomentumState(mu)``.
  """
  _validate.unit_interval("decay", decay)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    return EmaMomentumState(_tree.zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    mu = jax.tree.map(lambda u, m: (1 - decay) * u.astype(m.dtype) + decay * m,
                      updates, state.mu)
    return _tree.cast_like(mu, updates), EmaMomentumState(mu)

  return _base.GradientTransformation(init, update)


def relative_step_default(learning_rate, relative_step: Optional[bool]) -> bool:
  """``relative_step=None`` means: on exactly when no learning rate is given."""
  if relative_step is None:
    return learning_rate is None
  if relative_step and learning_rate is not None:
    raise ValueError("learning_rate must be None when relative_step=True (the relative step "
                     f"is the step size), got {learning_rate!r}")
  return bool(relative_step)
