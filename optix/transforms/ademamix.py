"""AdEMAMix: Adam with a second, much slower momentum mixed into the numerator."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


def abs_sq(g):
  """``|g|²``: ``g²`` for real ``g``, ``g·conj(g)`` (real) for complex ``g``."""
  return jnp.square(g) if jnp.isrealobj(g) else jnp.square(g.real) + jnp.square(g.imag)


def _real(x):
  """``x``'s real part: a hyperparameter that ``optax.inject_hyperparams`` injected in a
  complex params' dtype (with a zero imaginary part) stays real for the real ν."""
  return jnp.real(x) if _tree.is_complex(x) else x


def real_zeros_like(tree, dtype=None):
  """Zeros for a statistic of ``|g|²``: real, at the precision of ``state_dtype_for``."""
  return jax.tree.map(
      lambda p: jnp.zeros_like(p, dtype=jnp.finfo(_tree.state_dtype_for(p, dtype)).dtype), tree)


class ScaleByAdemamixState(NamedTuple):
  count: jax.Array      # int32, saturating: the fast EMA's and ν's step
  count_m2: jax.Array   # int32, saturating: the step the b3 and alpha schedules see
  m1: _base.Updates     # fast EMA of g
  m2: _base.Updates     # slow EMA of g
  nu: _base.Updates     # EMA of |g|² (real)


def scale_by_ademamix(b1: float = 0.9, b2: float = 0.999, b3: _base.ScalarOrSchedule = 0.9999,
                      alpha: _base.ScalarOrSchedule = 6.0, eps: float = 1e-8,
                      eps_root: float = 0.0, mu_dtype=None, *, state_dtype=None
                      ) -> _base.GradientTransformation:
  r"""AdEMAMix's scaling (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better,
  Faster, Older", arXiv 2409.03137).

  .. math::
     m_1 \leftarrow \beta_1 m_1 + (1-\beta_1) g, \quad
     m_2 \leftarrow \beta_3 m_2 + (1-\beta_3) g, \quad
     \nu \leftarrow \beta_2 \nu + (1-\beta_2) |g|^2, \\
     u_t = \frac{m_1/(1-\beta_1^t) + \alpha\, m_2}{\sqrt{\nu/(1-\beta_2^t) + \epsilon_{root}}
           + \epsilon}

  The slow EMA ``m_2`` (β3 = 0.9999: a memory of ~10k steps) is not bias
  corrected, so it enters gradually; the paper warms ``alpha`` and ``b3`` up with
  schedules (both may be schedules of the step). Defaults are optax's
  (``alpha=6`` here, 5 in :func:`optix.ademamix`, as in optax). Complex params
  keep complex m1, m2 and a real ν.

  Args:
    b1: decay of the fast EMA :math:`m_1`, in [0, 1); 0.9.
    b2: decay of ν, in [0, 1); 0.999.
    b3: decay of the slow EMA :math:`m_2`, in [0, 1), or a schedule of the step;
      0.9999.
    alpha: the slow EMA's weight α >= 0, or a schedule; 6.0 (optax's default here).
    eps: ε outside the root, >= 0; 1e-8.
    eps_root: :math:`\epsilon_{root}` inside the root, >= 0; 0.
    mu_dtype: dtype of m1 and m2 (optax's name; overrides ``state_dtype``); None:
      as ``state_dtype``.
    state_dtype: dtype of the state (ν is its real counterpart); None (default): at
      least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is
    ``ScaleByAdemamixState(count, count_m2, m1, m2, nu)``.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.unit_interval("b3", b3)
  _validate.nonnegative("alpha", alpha)
  _validate.nonnegative("eps", eps)
  _validate.nonnegative("eps_root", eps_root)
  _validate.dtype("mu_dtype", mu_dtype)
  _validate.dtype("state_dtype", state_dtype)
  m_dtype = mu_dtype or state_dtype

  def init(params):
    return ScaleByAdemamixState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
                                _tree.zeros_like(params, m_dtype),
                                _tree.zeros_like(params, m_dtype),
                                real_zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.m1", state.m1)
    b3_t = _real(b3(state.count_m2) if callable(b3) else b3)
    alpha_t = _real(alpha(state.count_m2) if callable(alpha) else alpha)
    b1_, b2_, eps_, eps_root_ = (_real(h) for h in (b1, b2, eps, eps_root))
    count = _tree.safe_increment(state.count)
    g = _tree.cast_like(updates, state.m1)  # compute in the state dtype
    m1 = jax.tree.map(lambda g, m: (1 - b1_) * g + b1_ * m, g, state.m1)
    m2 = jax.tree.map(lambda g, m: (1 - b3_t) * g + b3_t * m, g, state.m2)
    nu = jax.tree.map(lambda g, v: (1 - b2_) * abs_sq(g).astype(v.dtype) + b2_ * v,
                      g, state.nu)

    def direction(a, b, v):
      t = count.astype(v.dtype)  # bias corrections in the state's float kind (f64 stays f64)
      denom = jnp.sqrt(v / (1 - b2_ ** t) + eps_root_) + eps_
      return (a / (1 - b1_ ** t).astype(a.dtype) + alpha_t * b) / denom

    out = jax.tree.map(direction, m1, m2, nu)
    return _tree.cast_like(out, updates), ScaleByAdemamixState(
        count, _tree.safe_increment(state.count_m2), m1, m2, nu)

  return _base.GradientTransformation(init, update)
