"""Layer-wise trust ratio: each leaf's step scaled to the norm of its params (LARS, LAMB)."""

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


def _norm(x, min_norm):
  """``max(‖x‖, min_norm)``."""
  return jnp.maximum(jnp.sqrt(jnp.sum(jnp.real(x * jnp.conj(x)))), min_norm)


def scale_by_trust_ratio(min_norm: float = 0.0, trust_coefficient: float = 1.0,
                         eps: float = 0.0) -> _base.GradientTransformation:
  r"""The trust ratio of LARS (You et al. 2017, arXiv 1708.03888) and LAMB (You et al.
  2020, arXiv 1904.00962), per leaf:

  .. math:: u \leftarrow u \cdot \frac{c\, \max(\lVert\theta\rVert, n_0)}
     {\max(\lVert u \rVert, n_0) + \epsilon}

  and ``u`` unchanged where either norm is 0 (a fresh zero-initialized layer
  would otherwise never move). ``trust_coefficient`` c = 1 (LAMB) and
  ``min_norm`` n0 = 0 are optax's defaults; LARS uses c = 0.001. No state; needs
  ``params``.

  Args:
    min_norm: n0 >= 0, the floor of both norms; 0 (optax's).
    trust_coefficient: c >= 0, the ratio's factor; 1.0 (optax's, LAMB's).
    eps: ε >= 0 added to the update's norm in the denominator; 0 (optax's).

  Returns:
    A ``GradientTransformation`` with an empty state.
  """
  _validate.nonnegative("min_norm", min_norm)
  _validate.nonnegative("trust_coefficient", trust_coefficient)
  _validate.nonnegative("eps", eps)

  def init(params):
    del params
    return _base.EmptyState()

  def update(updates, state, params=None, **extra_args):
    del extra_args
    _tree.require_params("scale_by_trust_ratio", params)
    _tree.check_match("updates", updates, "params", params)

    def one(u, p):
      dtype = _tree.state_dtype_for(p)
      u32, p32 = u.astype(dtype), p.astype(dtype)
      p_norm, u_norm = _norm(p32, min_norm), _norm(u32, min_norm)
      ratio = trust_coefficient * p_norm / (u_norm + eps)
      ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, ratio)
      return (u32 * ratio).astype(u.dtype)

    return jax.tree.map(one, updates, params), state

  return _base.GradientTransformation(init, update)
