"""ADOPT: Adam's normalization with the previous second moment, applied before the momentum."""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms.ademamix import abs_sq, real_zeros_like


class ScaleByAdoptState(NamedTuple):
  count: jax.Array      # int32, saturating
  mu: _base.Updates     # momentum of the normalized gradient
  nu: _base.Updates     # EMA of |g|² (real)


def _quarter_power(count):
  return count ** 0.25


def scale_by_adopt(b1: float = 0.9, b2: float = 0.9999, eps: float = 1e-6, mu_dtype=None, *,
                   nesterov: bool = False, use_clipping: bool = True,
                   clip_value_fn: Callable[[jax.Array], jax.Array] = _quarter_power,
                   state_dtype=None) -> _base.GradientTransformation:
  r"""ADOPT's scaling (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any
  β2 with the Optimal Rate", arXiv 2411.02853).

  .. math::
     \nu_0 = g_0^2, \quad m_0 = 0, \quad u_0 = 0; \qquad
     m_t = \beta_1 m_{t-1} + (1-\beta_1)\,
       \mathrm{clip}\!\Big(\frac{g_t}{\max(\sqrt{\nu_{t-1}}, \epsilon)}, c_t\Big), \quad
     \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2, \quad u_t = m_t

  The gradient is normalized by the second moment *before* it includes
  :math:`g_t` (which decorrelates the two and gives convergence for any β2), and
  the normalization happens before the momentum. The first step only
  initializes ν (its update is 0). ``use_clipping`` clips the normalized gradient
  at :math:`c_t = t^{1/4}` (``clip_value_fn`` of the 0-based step), the paper's
  stabilizer for the first steps. ``nesterov`` returns
  :math:`\beta_1 m_t + (1-\beta_1) \hat g_t`. Defaults are the paper's and
  optax's (β2 = 0.9999, ε = 1e-6). Complex params are accepted without
  clipping only (clipping a complex ratio has no meaning here).

  Args:
    b1: decay of the momentum m, in [0, 1); 0.9.
    b2: decay of ν, in [0, 1); 0.9999.
    eps: the floor ε of the normalizer, > 0; 1e-6. 0 is rejected: it divides by
      0 wherever ν is 0 (every entry on the first step without clipping, zero
      gradients with it), which is NaN in optax too.
    mu_dtype: dtype of m (optax's name; overrides ``state_dtype``); None: as
      ``state_dtype``.
    nesterov: return the look-ahead :math:`\beta_1 m_t + (1-\beta_1) \hat g_t`;
      False.
    use_clipping: clip the normalized gradient at :math:`c_t`; True (the paper's).
      Complex params need False.
    clip_value_fn: :math:`c_t` as a function of the 0-based step count (an int32
      array); default :math:`t^{1/4}` (the paper's and optax's).
    state_dtype: dtype of the state (ν is its real counterpart); None (default): at
      least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByAdoptState(count, mu, nu)``.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.positive("eps", eps)
  _validate.dtype("mu_dtype", mu_dtype)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    if use_clipping:
      _tree.check_real("scale_by_adopt(use_clipping=True)", params)
    return ScaleByAdoptState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, mu_dtype or
                                                                         state_dtype),
                             real_zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    first = state.count == 0
    b1_t = jnp.where(first, 1.0, b1)
    b2_t = jnp.where(first, 0.0, b2)
    g = _tree.cast_like(updates, state.mu)  # compute in the state dtype
    nu = jax.tree.map(lambda g, v: (1 - b2_t) * abs_sq(g).astype(v.dtype) + b2_t * v,
                      g, state.nu)

    def normalized(g, v):
      x = g / jnp.maximum(jnp.sqrt(v), eps).astype(g.dtype)
      if use_clipping:
        c = clip_value_fn(state.count)
        x = jnp.clip(x, -c, c)
      return x

    x = jax.tree.map(normalized, g, state.nu)
    mu = jax.tree.map(lambda m, x: (b1_t * m + (1 - b1_t) * x).astype(m.dtype), state.mu, x)
    out = (jax.tree.map(lambda m, x: b1_t * m + (1 - b1_t) * x, mu, x) if nesterov else mu)
    return _tree.cast_like(out, updates), ScaleByAdoptState(
        _tree.safe_increment(state.count), mu, nu)

  return _base.GradientTransformation(init, update)
