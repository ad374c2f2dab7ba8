r"""Newton–Schulz: the approximate polar factor :math:`U V^H` of a matrix, numerics only.

The quintic iteration :math:`X \leftarrow a X + (b A + c A^2) X`, :math:`A = X X^H`, on a
stack of wide matrices (:func:`_orthogonalize_stack`, the unit of work
:func:`optix.scale_by_muon` batches and splits over devices), its coefficient presets,
the rescalings before it (``preconditioning``), the schedule of coefficients per
iteration (:func:`ns_schedule`) and the public :func:`newton_schulz` on any array of
rank >= 2. Which axes of a leaf form the matrix, and how leaves are grouped, is
``optix.transforms.muon``'s business.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optix import _validate

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# One (a, b, c) per iteration, tuned for 5 steps (Ahn et al., arXiv 2504.05295).
DION_NS_COEFFS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
                  (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
                  (2.8366, -3.0525, 1.2012))
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def _compute_dtype(compute_dtype, iterate_dtype):
  """The matmul operand dtype: ``compute_dtype``, or the iterate's own dtype."""
  if compute_dtype is None:
    return jnp.dtype(iterate_dtype)
  dt = jnp.dtype(compute_dtype)
  if jnp.issubdtype(iterate_dtype, jnp.complexfloating) and not jnp.issubdtype(
      dt, jnp.complexfloating):
    raise ValueError(f"compute_dtype={dt.name} is real but the momentum is complex "
                     f"({jnp.dtype(iterate_dtype).name}); pass compute_dtype=None")
  return dt


def _iterate_dtype(dtype):
  """Newton–Schulz runs in at least float32, in the momentum's kind (complex stays complex)."""
  return jnp.promote_types(dtype, jnp.float32)


def _matmul(a, b, dtype, out_dtype):
  """``a @ b`` batched on axis 0, operands in ``dtype``, accumulated and returned in
  ``out_dtype``."""
  dims = (((2,), (1,)), ((0,), (0,)))
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), dims,
                             preferred_element_type=out_dtype)


def _ns_step(x, coeffs, first, preconditioning, eps, compute_dtype, padded=False):
  r"""One quintic step :math:`X \leftarrow a X + (b A + c A^2) X`, :math:`A = X X^H`;
  on the first step "aol" and "schatten" rescale :math:`X` (and :math:`A`) first."""
  a_, b_, c_ = coeffs
  dt = x.dtype
  # A = X Xᴴ (B, m, m), with Xᴴ formed first: contracting X's last axis with itself
  # takes another matmul kernel on CPU, whose roundings differ from optax's ``x @ x.T``.
  gram = _matmul(x, jnp.conj(jnp.swapaxes(x, 1, 2)), compute_dtype, dt)
  if first and preconditioning == "aol":
    # s_i = (Σ_j |A_ij|)^(-1/2): X <- diag(s) X, A <- diag(s) A diag(s).
    rows = jnp.sum(jnp.abs(gram), axis=-1)
    s = jax.lax.rsqrt(jnp.maximum(rows, eps))[..., None]
    if padded:  # padding rows are zero: keep them so when eps = 0 (0 · inf)
      s = jnp.where(rows[..., None] > 0, s, 0)
    x, gram = x * s, gram * s * jnp.swapaxes(s, -1, -2)
  elif first and preconditioning == "schatten":
    # X <- X / ||X||_S4 with ||X||_S4 = ||X Xᴴ||_F^(1/2).
    norm = jnp.sqrt(jnp.sum(jnp.abs(gram) ** 2, axis=(-2, -1), keepdims=True))
    s = jax.lax.rsqrt(jnp.maximum(norm, eps))
    x, gram = x * s, gram * (s * s)
  # bA + (cA)A: c scales an operand of the product, as optax computes it (the same in
  # exact arithmetic as c(AA); in float32 the roundings, and so optax's numbers, differ).
  poly = b_ * gram + _matmul(c_ * gram, gram, compute_dtype, dt)
  return a_ * x + _matmul(poly, x, compute_dtype, dt)


def _orthogonalize_stack(stack, coeffs=(DEFAULT_NS_COEFFS,) * 5, eps=1e-8,
                         preconditioning="frobenius", compute_dtype=None, steps=None,
                         padded=False):
  r"""Quintic Newton–Schulz on a stack of wide matrices ``(B, m, n)``, ``m <= n``.

  .. math::
     X_0 = G / (\|G\| + \epsilon), \quad A_k = X_k X_k^H, \quad
     X_{k+1} = a_k X_k + (b_k A_k + c_k A_k^2) X_k

  ``coeffs`` holds one ``(a, b, c)`` per iteration; when ``steps`` is given (a
  traced iteration count, inside ``optax.inject_hyperparams``) ``coeffs[0]`` is
  used ``steps`` times. The iterate is kept in at least float32 (complex stays
  complex); only the matmul operands are cast to ``compute_dtype``. ``padded``: the
  stack holds zero-padded matrices (see :func:`optix.transforms.muon.padded_shape`).
  """
  x = stack.astype(_iterate_dtype(stack.dtype))
  cdt = _compute_dtype(compute_dtype, x.dtype)
  if preconditioning == "frobenius":
    norm = jnp.sqrt(jnp.sum(jnp.abs(x) ** 2, axis=(-2, -1), keepdims=True))
    x = x / (norm + eps)
  elif preconditioning == "spectral":
    x = x / (jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True) + eps)
  if steps is None:
    for k, c in enumerate(coeffs):
      x = _ns_step(x, c, k == 0, preconditioning, eps, cdt, padded)
    return x

  def body(i, x):
    if preconditioning in ("aol", "schatten"):
      return jax.lax.cond(i == 0, lambda y: _ns_step(y, coeffs[0], True, preconditioning, eps,
                                                     cdt, padded),
                          lambda y: _ns_step(y, coeffs[0], False, preconditioning, eps, cdt), x)
    return _ns_step(x, coeffs[0], False, preconditioning, eps, cdt)
  return jax.lax.fori_loop(0, steps, body, x)


def ns_schedule(ns_coeffs, ns_steps):
  """``(coefficients per iteration, traced count or None)`` from optax's ``ns_coeffs`` and
  ``ns_steps``, validated: a preset name ("standard", "dion"), one ``(a, b, c)`` repeated
  ``ns_steps`` times, or an ``(n, 3)`` table run row by row (``n <= ns_steps``)."""
  if isinstance(ns_coeffs, str):
    _validate.one_of("ns_coeffs", ns_coeffs, tuple(NS_COEFFS_PRESETS))
    ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
  try:
    table = np.asarray(ns_coeffs, dtype=np.float64)
  except (TypeError, ValueError):
    raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {ns_coeffs!r}") from None
  if table.ndim not in (1, 2) or table.shape[-1] != 3 or table.size == 0:
    raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got shape {table.shape}")
  if not np.all(np.isfinite(table)):
    raise ValueError(f"ns_coeffs must be finite, got {ns_coeffs!r}")
  concrete = isinstance(ns_steps, (int, np.integer)) and not isinstance(ns_steps, bool)
  if concrete:
    _validate.integer("ns_steps", ns_steps, 0)
  elif isinstance(ns_steps, (bool, float, str)) or ns_steps is None:
    raise ValueError(f"ns_steps must be an integer >= 0, got {ns_steps!r}")
  rows = tuple(tuple(float(v) for v in r) for r in table.reshape(-1, 3))
  if table.ndim == 2:
    if concrete and len(rows) > ns_steps:
      raise ValueError(f"ns_coeffs has {len(rows)} rows (one per iteration): ns_steps must be "
                       f">= {len(rows)}, got {ns_steps}")
    return rows, None
  if concrete:
    return rows * int(ns_steps), None
  return rows, ns_steps


def newton_schulz(G: jax.Array, steps: int = 5,
                  coefficients: Sequence[float] = DEFAULT_NS_COEFFS, eps: float = 1e-8,
                  compute_dtype=None, *, preconditioning: str = "frobenius") -> jax.Array:
  r"""Approximate polar factor :math:`U V^H` of :math:`G = U S V^H` by quintic Newton–Schulz.

  Batched over leading axes: ``G`` has shape ``(..., m, n)``. Each matrix is
  rescaled (``preconditioning``: by its Frobenius norm by default, so every
  singular value is <= 1), tall ones are transposed (the iteration costs
  :math:`O(\min(m,n)^2 \max(m,n))`), then

  .. math:: X \leftarrow a X + (b\, X X^H + c\, (X X^H)^2) X

  is applied ``steps`` times. The default coefficients (Jordan 2024) maximize
  the slope at 0 (3.4445) rather than converge: after 5 steps singular values
  with :math:`\sigma/\|G\|_F \ge 2.5\cdot 10^{-3}` land in about [0.68, 1.13],
  not exactly at 1, which works as well for optimization and needs fewer steps.
  Zero singular values stay zero.

  Args:
    G: array of rank >= 2 (real or complex).
    steps: number of iterations, an integer >= 0; 5.
    coefficients: ``(a, b, c)`` of the quintic, or an ``(n, 3)`` table with one
      row per iteration (then ``n <= steps``, and ``n`` iterations run), or a
      preset name ("standard", "dion"); Jordan's (3.4445, -4.7750, 2.0315).
    eps: added to the norm (or the floor of the "aol"/"schatten" rescaling),
      >= 0; 1e-8, so ``G = 0`` gives 0.
    compute_dtype: matmul operand dtype; None: the iterate's dtype (float32,
      or float64/complex for such inputs). Accumulation is in the iterate's dtype.
    preconditioning: "frobenius" (default), "spectral", "aol" or "schatten"
      (see :func:`scale_by_muon`).

  Returns:
    An array shaped like ``G`` in ``G``'s dtype.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (kellerjordan.github.io/posts/muon); Bernstein & Newhouse, "Old Optimizer,
    New Norm: An Anthology", arXiv 2409.20325.
  """
  coeffs, traced = ns_schedule(coefficients, steps)
  if traced is not None:
    raise ValueError(f"steps must be a Python int, got {steps!r}")
  _validate.nonnegative("eps", eps)
  _validate.one_of("preconditioning", preconditioning, PRECONDITIONINGS)
  if jnp.ndim(G) < 2:
    raise ValueError(f"G must have rank >= 2, got shape {jnp.shape(G)}")
  cdt = None if compute_dtype is None else jnp.dtype(compute_dtype)
  return _newton_schulz(G, coeffs, float(eps), preconditioning, cdt)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _newton_schulz(G, coeffs, eps, preconditioning, compute_dtype):
  *batch, m, n = G.shape
  x = G.reshape((math.prod(batch), m, n))
  if m > n:
    x = jnp.swapaxes(x, -1, -2)
  x = _orthogonalize_stack(x, coeffs, eps, preconditioning, compute_dtype)
  if m > n:
    x = jnp.swapaxes(x, -1, -2)
  return x.reshape(G.shape).astype(G.dtype)
