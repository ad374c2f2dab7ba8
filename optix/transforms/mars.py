"""MARS: variance reduction of the gradient before an Adam-style scaling."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class ScaleByMarsState(NamedTuple):
  count: jax.Array          # int32, saturating
  mu: _base.Updates         # EMA of the corrected gradient c
  nu: _base.Updates         # EMA of c²
  prev_grad: _base.Updates  # g_{t-1} (0 before the first step)


def scale_by_mars(b1: float = 0.95, b2: float = 0.99, eps: float = 1e-8, gamma: float = 0.025,
                  max_norm: float = 1.0, *, state_dtype=None) -> _base.GradientTransformation:
  r"""MARS-AdamW's scaling (Yuan et al. 2024, "MARS: Unleashing the Power of Variance
  Reduction for Training Large Models", arXiv 2411.10438).

  .. math::
     c_t = g_t + \gamma \frac{\beta_1}{1-\beta_1} (g_t - g_{t-1}), \quad
     c_t \leftarrow c_t \cdot \min(1, \tau / \lVert c_t \rVert), \\
     m_t = \beta_1 m_{t-1} + (1-\beta_1) c_t, \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) c_t^2, \quad
     u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

  The correction term is a scaled STORM-style gradient difference evaluated at
  consecutive iterates (the paper's "approximate" MARS, one gradient per step);
  :math:`g_0 = 0`. The norm :math:`\lVert c_t \rVert` is per leaf, clipped at
  ``max_norm`` τ = 1 as in the paper. Defaults (β1 = 0.95, β2 = 0.99, γ = 0.025)
  are the paper's for language models. The paper applies MARS to matrices and
  AdamW to vectors; mask with ``optix.multi_transform`` for that split. Real
  params only.

  Args:
    b1: decay of m, in [0, 1); 0.95 (the paper's). It also sets the weight
      :math:`\gamma\beta_1/(1-\beta_1)` of the gradient difference.
    b2: decay of v, in [0, 1); 0.99 (the paper's).
    eps: ε outside the root, >= 0; 1e-8.
    gamma: the variance-reduction strength γ >= 0; 0.025 (the paper's). 0 is AdamW's
      scaling with clipped gradients.
    max_norm: τ > 0, the clipping threshold of each leaf's corrected gradient; 1.0.
    state_dtype: dtype of the state (m, v and the previous gradient); None
      (default): at least float32.

  Returns:
    A ``GradientTransformation`` whose state is
    ``ScaleByMarsState(count, mu, nu, prev_grad)``.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  _validate.nonnegative("gamma", gamma)
  _validate.positive("max_norm", max_norm)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    _tree.check_real("scale_by_mars", params)
    return ScaleByMarsState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, state_dtype),
                            _tree.zeros_like(params, state_dtype),
                            _tree.zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    _tree.check_real("scale_by_mars", updates)
    g = _tree.cast_like(updates, state.mu)
    scale = gamma * b1 / (1 - b1)

    def corrected(g, g_prev):
      c = g + scale * (g - g_prev)
      norm = jnp.sqrt(jnp.sum(jnp.square(c)))
      return c * jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(c.dtype).tiny))

    c = jax.tree.map(corrected, g, state.prev_grad)
    mu = jax.tree.map(lambda m, c: b1 * m + (1 - b1) * c, state.mu, c)
    nu = jax.tree.map(lambda v, c: b2 * v + (1 - b2) * jnp.square(c), state.nu, c)
    count = _tree.safe_increment(state.count)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    out = jax.tree.map(lambda m, v: (m / c1.astype(m.dtype))
                       / (jnp.sqrt(v / c2.astype(v.dtype)) + eps), mu, nu)
    return _tree.cast_like(out, updates), ScaleByMarsState(count, mu, nu, g)

  return _base.GradientTransformation(init, update)
