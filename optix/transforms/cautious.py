"""Cautious updates: drop the coordinates where a momentum method disagrees with the gradient."""

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


def cautious_mask(direction, grad):
  r"""The per-leaf mask :math:`\phi = \mathbb{1}[\mathrm{Re}(u \bar g) > 0] \cdot
  \frac{d}{\lVert \phi \rVert_0 + 1}` (d the leaf's size): 1 where the direction and the
  gradient agree, rescaled so the step's size stays that of the unmasked update.

  Args:
    direction: one leaf of the update, oriented so that agreement means a
      positive product with the gradient.
    grad: the gradient leaf, of the same shape.

  Returns:
    φ, an array of ``direction``'s shape in its real precision, at least float32.
  """
  dtype = jnp.finfo(_tree.state_dtype_for(direction)).dtype  # the count in >= float32
  agree = (jnp.real(direction * jnp.conj(grad)) > 0).astype(dtype)
  return agree * (agree.size / (jnp.sum(agree) + 1))


def cautious(inner: _base.GradientTransformation, *, direction_sign: int = -1
             ) -> _base.GradientTransformation:
  r"""Cautious wrapper (Liang et al. 2024, "Cautious Optimizers: Improving Training with
  One Line of Code", arXiv 2411.16085).

  .. math:: u_t \leftarrow u_t \circ \phi_t, \qquad
     \phi_t = \mathbb{1}[s\, u_t \circ g_t > 0] \cdot \frac{d}{\lVert \phi_t \rVert_0 + 1}

  The coordinates where the momentum-driven update points against the current
  gradient are not moved; the others are scaled up by ``d / (nnz + 1)`` per leaf
  (the paper's normalization, so the average step keeps its size). For
  complex params agreement is :math:`\mathrm{Re}(u \bar g) > 0`.

  ``direction_sign`` says which way ``inner``'s updates point: ``-1`` (default)
  for a whole optimizer (``optix.cautious(optix.adamw(1e-3))``: its updates step
  against the gradient), ``+1`` for a scaling placed before the learning rate
  (``chain(cautious(scale_by_adam(), direction_sign=1), add_decayed_weights(wd),
  scale_by_learning_rate(lr))`` is the paper's C-AdamW: decay is not masked).

  Args:
    inner: the transform whose updates are masked: a whole optimizer or a
      scaling such as :func:`optix.scale_by_adam`.
    direction_sign: -1 (default) when ``inner``'s updates point against the
      gradient (a whole optimizer), +1 when they point along it (a scaling
      before the learning rate); any other value raises ``ValueError``.

  Returns:
    A ``GradientTransformation`` with ``inner``'s state.
  """
  _validate.one_of("direction_sign", direction_sign, {-1, 1})
  inner = _base.with_extra_args_support(inner)

  def update(updates, state, params=None, **extra_args):
    if params is not None:
      _tree.check_match("updates", updates, "params", params)
    out, state = inner.update(updates, state, params, **extra_args)
    _tree.check_match("inner updates", out, "updates", updates)
    masked = jax.tree.map(
        lambda u, g: (u * cautious_mask(direction_sign * u, g.astype(u.dtype))).astype(u.dtype),
        out, updates)
    return masked, state

  return _base.GradientTransformation(inner.init, update)
