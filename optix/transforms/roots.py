"""Inverse p-th roots and eigenbases of stacks of symmetric PSD matrices: the numerics
of Shampoo (:mod:`optix.transforms.shampoo`) and SOAP (:mod:`optix.transforms.soap`).

Every function takes a stack ``(..., n, n)`` and works in float32 at least (float64 stays
float64 when x64 is enabled); nothing here knows about leaves, blocks or devices. The ones
whose result is not a spectral function of the whole matrix (the Newton iteration's stopping
rule, the eigenbases) take an optional ``mask`` ``(..., n)``: 1 on the coordinates that are
real, 0 on zero padding (rows and columns of the input that are exactly zero by
construction, appended after the real ones). The real block of the result is then what the
unpadded matrix gives (up to float32 rounding) and the padded coordinates get the identity.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST


def _sym(a):
  """Symmetrized, in float32 (float64 stays float64 when x64 is enabled)."""
  a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
  return (a + jnp.swapaxes(a, -1, -2)) / 2


def _ridge_scale(lmax):
  """The ridge is relative to λ_max; a zero matrix gets an absolute ε."""
  return jnp.where(lmax > 0, lmax, 1.0)


def inverse_pth_root_eigh(a: jax.Array, p: float, ridge_epsilon: float = 1e-6) -> jax.Array:
  r"""``(A + ε λ_max I)^{-1/p}`` for a stack of symmetric PSD matrices ``(..., n, n)``,
  ``p > 0`` (not necessarily an integer: ``p = 1/e`` for an exponent override ``e``).

  .. math:: A = V \Lambda V^\top, \quad
            X = V\, (\max(\Lambda, 0) + \epsilon \lambda_{max})^{-1/p} V^\top

  Exact up to the float32 eigensolver (``‖X^p A - I‖ ≈ κ(A)·2^{-24}``). Singular
  input is fine (its null space gets the ridge); an all-zero matrix gives
  ``ε^{-1/p} I``. Batched over leading axes (one LAPACK/cuSOLVER call).

  Args:
    a: the symmetric positive semi-definite matrices, shape ``(..., n, n)``; only their
      symmetric part is used. Not validated (a low-level routine: the transforms that call it
      check their own arguments).
    p: the root, a float > 0: the result is the ``-1/p`` power. Shampoo passes ``2k`` for a
      rank-``k`` tensor's factors (4 for a matrix), or ``1/e`` for an exponent override ``e``.
      No default. Not validated.
    ridge_epsilon: ε of the ridge ``ε λ_max``, relative to each matrix's largest eigenvalue
      so that it scales with the statistic; default 1e-6 (Shampoo's): small enough to leave a
      well-conditioned matrix's root unchanged, large enough to bound the root of a singular
      one. A float >= 0 (0 makes a singular input's root infinite); not validated here.

  Returns:
    The roots ``(A + ε λ_max I)^{-1/p}``, same shape and dtype as ``a``.
  """
  a = _sym(a)
  w, v = jnp.linalg.eigh(a)
  lmax = jnp.max(w, axis=-1, keepdims=True)
  w = jnp.maximum(w, 0.0) + ridge_epsilon * _ridge_scale(lmax)
  return jnp.matmul(v * w[..., None, :] ** (-1.0 / p), jnp.swapaxes(v, -1, -2), precision=_HI)


def _power_iteration(a, iters=24):
  v = a[0] * 0 + 1 / math.sqrt(a.shape[-1])  # derived from a: same type inside shard_map

  def body(_, v):
    w = jnp.matmul(a, v, precision=_HI)
    return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

  v = jax.lax.fori_loop(0, iters, body, v)
  return jnp.vdot(v, jnp.matmul(a, v, precision=_HI))


def _newton_one(a, p, ridge_epsilon, max_iters, tol, mask=None):
  a = _sym(a)
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  real = eye if mask is None else jnp.diag(mask.astype(a.dtype))
  a = a + ridge_epsilon * _ridge_scale(_power_iteration(a)) * real
  # z·A has its spectrum in (0, (1+p)/2]: ‖A‖_F and the max row sum bound λ_max.
  bound = jnp.minimum(jnp.linalg.norm(a), jnp.max(jnp.sum(jnp.abs(a), axis=-1)))
  z = (1.0 + p) / (2.0 * bound)
  # Padded coordinates start converged (M = I there) and are left out of the residual.
  m, h = z * a + (eye - real), z ** (1.0 / p) * eye
  weight = 1.0 if mask is None else jnp.outer(mask, mask).astype(a.dtype)

  def step(m, h):
    t = (1.0 + 1.0 / p) * eye - m / p
    return jnp.matmul(_power(t, p), m, precision=_HI), jnp.matmul(h, t, precision=_HI)

  def cond(c):
    i, _, _, err, done = c
    return (i < max_iters) & (err > tol) & ~done

  def body(c):
    i, m, h, err, _ = c
    m2, h2 = step(m, h)
    err2 = jnp.max(jnp.abs(m2 - eye) * weight)
    # Diverging, or stalled at float32 rounding near convergence: keep the last iterate.
    worse = ~(err2 <= 1.2 * err) | ((err2 >= err) & (err < 0.1))
    return (i + 1, jnp.where(worse, m, m2), jnp.where(worse, h, h2),
            jnp.where(worse, err, err2), worse)

  err = jnp.max(jnp.abs(m - eye) * weight)
  init = (jnp.zeros([], jnp.int32), m, h, err, err < 0)  # (derived from a: see _power_iteration)
  return jax.lax.while_loop(cond, body, init)[2]


def _power(t, p):
  """``t^p`` by repeated squaring (p a Python int >= 1)."""
  out, base = None, t
  while p:
    if p & 1:
      out = base if out is None else jnp.matmul(out, base, precision=_HI)
    p >>= 1
    if p:
      base = jnp.matmul(base, base, precision=_HI)
  return out


def inverse_pth_root_newton(a: jax.Array, p: int, ridge_epsilon: float = 1e-6,
                            max_iters: int = 100, tol: float = 1e-6,
                            mask: Optional[jax.Array] = None) -> jax.Array:
  r"""``(A + ε λ_max I)^{-1/p}`` by the coupled Newton iteration (Guo & Higham 2006,
  SIAM J. Matrix Anal. Appl. 28(3); used by Anil et al. 2020, arXiv 2002.09018).

  .. math::
     z = \frac{1+p}{2\|A\|}, \quad M_0 = z A, \quad X_0 = z^{1/p} I, \\
     T_k = \tfrac{p+1}{p} I - \tfrac1p M_k, \quad M_{k+1} = T_k^p M_k, \quad X_{k+1} = X_k T_k

  ``M_k → I`` and ``X_k → A^{-1/p}``; the loop stops at ``max|M_k - I| <= tol``, after
  ``max_iters``, when the residual grows by > 20% or stops decreasing once below
  0.1 (float32 rounding), keeping the last good iterate. Matmul-only, so it runs
  well on accelerators; λ_max for the ridge comes from power iteration. Batched over
  leading axes (``vmap``).

  It always starts cold: warm-starting from the previous root ``X_0 = X_{old}``,
  ``M_0 = X_0^p A`` is wrong, because the invariant ``M_k = X_k^p A`` needs ``X_0``
  to commute with ``A``. ``M_k`` still goes to ``I`` (in 3 steps there),
  but ``X_k`` ends at ``X_0 (X_0^p A)^{-1/p} ≠ A^{-1/p}``: a 128×128 EMA statistic
  10 steps after the old root gave ``max|X^4 A - I| = 37`` (cold: 7e-6; the stale
  root itself: 0.2).

  ``mask`` (``(..., n)``, see the module docstring): the ridge goes on the real diagonal
  only, padded coordinates start at ``M = I`` and the residual is taken over the real block,
  so the iteration, its stopping step and the real block of ``X`` are the unpadded ones.

  Args:
    a: the symmetric positive semi-definite matrices, shape ``(..., n, n)``. Not validated
      (a low-level routine: the transforms that call it check their own arguments).
    p: the root, a positive integer (``T_k^p`` is a matrix power): the result is the ``-1/p``
      power. No default. Not validated.
    ridge_epsilon: ε of the ridge ``ε λ_max`` (λ_max by power iteration), relative so that it
      scales with the statistic; default 1e-6, as Shampoo's. A float > 0 keeps a singular input
      invertible; not validated here.
    max_iters: the most Newton steps, an int >= 1; default 100, far more than a well-scaled
      matrix needs (the stopping rules end the loop first). Not validated here.
    tol: the loop stops once ``max|M_k - I| <= tol``; default 1e-6, near float32 rounding of
      an identity. A float >= 0; not validated here.
    mask: None (default: every coordinate is real), or a boolean ``(..., n)`` marking the real
      coordinates of zero-padded matrices, as above.

  Returns:
    The roots ``(A + ε λ_max I)^{-1/p}``, same shape and dtype as ``a``.
  """
  batch = a.shape[:-2]
  flat = a.reshape((-1,) + a.shape[-2:])
  if mask is None:
    out = jax.vmap(lambda x: _newton_one(x, p, ridge_epsilon, max_iters, tol))(flat)
  else:
    out = jax.vmap(lambda x, k: _newton_one(x, p, ridge_epsilon, max_iters, tol, k))(
        flat, mask.reshape((-1, a.shape[-1])))
  return out.reshape(batch + a.shape[-2:])


def finite_or(new, old):
  """Per matrix of a stack: ``new`` where all its entries are finite, else ``old``."""
  ok = jnp.all(jnp.isfinite(new), axis=(-2, -1), keepdims=True)
  return jnp.where(ok, new, old.astype(new.dtype))


NULL_TOL = 1e-5    # eigenvalues <= NULL_TOL·λ_max span the null space of a statistic
POWER_SHIFT = 1e-3  # power iteration on S + POWER_SHIFT·λ_max·I


def eigenbasis_eigh(stats: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  r"""Eigenvectors of a stack of symmetric PSD matrices, by decreasing eigenvalue,
  with a basis of the null space fixed by the null space itself.

  The eigenvectors of eigenvalues ``<= NULL_TOL·λ_max`` (a rank-deficient statistic:
  ``L = Σ G Gᵀ`` after fewer steps than rows) are determined by rounding alone: any
  rotation of them is an eigenbasis, and a 1e-7 change of the input picks another
  one. Adam's per-coordinate normalization is not rotation invariant, so SOAP's update
  would follow that rounding. They are replaced by the Gram–Schmidt basis of the
  first ``k`` columns of the projector on the null space ``P_N`` (which is stable:
  ``k`` its dimension), the range eigenvectors coming first:

  .. math:: S = V \Lambda V^\top, \quad N = \{j: \lambda_j \le \tau \lambda_{max}\}, \quad
            P_N = V_N V_N^\top, \quad Q = \mathrm{qr}([V_{\bar N},\ P_N e_1, .., P_N e_k])

  (signs may differ from ``V``'s: an eigenbasis all the same). An all-zero matrix
  gets the identity (up to signs).

  ``mask`` (``(..., n)``, see the module docstring): the padded coordinates are not part of
  the null space. Their diagonal is set to ``-c`` (``c`` the largest diagonal entry of the
  real block, ``<= λ_max``, so the matrix's norm and the eigensolver's accuracy are
  unchanged), which sorts their eigenvectors last and apart from the real null space; the
  real eigenvectors lose their (rounding) padded entries, and the padded columns of ``Q``
  are exactly the identity's: ``Q = diag(Q_real, I)``.
  """
  s = _sym(stats)
  n = s.shape[-1]
  j = jnp.arange(n)
  if mask is not None:
    mask = mask.astype(s.dtype)
    diag = jnp.diagonal(s, axis1=-2, axis2=-1)
    c = jnp.max(diag * mask, axis=-1, keepdims=True)
    c = jnp.where(c > 0, c, 1.0)
    s = s - (c * (1 - mask))[..., None, :] * jnp.eye(n, dtype=s.dtype)
  w, v = jnp.linalg.eigh(s)
  w, v = w[..., ::-1], v[..., ::-1]  # decreasing: the null space (then the padding) comes last
  real = n if mask is None else jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.int32)
  null = (w <= NULL_TOL * jnp.maximum(w[..., :1], 0.0)) & (j < real)
  if mask is not None:
    v = v * mask[..., :, None]
  v_null = v * null[..., None, :]
  proj = jnp.matmul(v_null, jnp.swapaxes(v_null, -1, -2), precision=_HI)
  ranked = real - jnp.sum(null, axis=-1, keepdims=True)  # the range: V's first columns
  idx = jnp.where(j < ranked, j, n + j - ranked)         # then P_N's first k columns
  cols = [v, proj]
  if mask is not None:                                   # then the identity's padded columns
    idx = jnp.where(j < real, idx, 2 * n + j)
    cols.append(jnp.broadcast_to(jnp.eye(n, dtype=s.dtype), s.shape))
  cols = jnp.concatenate(cols, axis=-1)
  cols = jnp.take_along_axis(cols, jnp.broadcast_to(idx[..., None, :], s.shape), axis=-1)
  return jnp.linalg.qr(cols)[0]


def eigenbasis_power_qr(stats: jax.Array, basis: jax.Array,
                        mask: Optional[jax.Array] = None) -> jax.Array:
  r"""One step of subspace (power) iteration from the previous basis, batched.

  ``Q ← qr((S + c I) Q)``, its columns then sorted by the Rayleigh quotients
  ``diag(Qᵀ S Q)`` of the previous basis (largest first): a warm-started refresh
  costing two matmuls and a QR instead of an eigendecomposition (Vyas et al. 2024,
  Algorithm 4, which sorts before the QR: where two quotients are nearly equal,
  rounding then decides the Gram–Schmidt order and so the basis; a permutation
  after it is harmless, the moments follow it exactly). The shift ``c = POWER_SHIFT·λ_max`` (``λ_max``
  estimated by the largest quotient) leaves the eigenvectors and the convergence of the
  leading ones as they are, but keeps the columns in the null space of ``S`` where they
  were: without it ``S q`` is rounding noise there and the QR turns it into a new,
  arbitrary null-space basis (see :func:`eigenbasis_eigh`).

  ``mask`` (``(..., n)``, see the module docstring; ``basis`` is then ``diag(Q_real, I)``,
  as :func:`eigenbasis_eigh` makes it): the padded columns, exactly the identity's after the
  QR, are sorted after the real ones, so the result keeps that form.
  """
  stats = _sym(stats)
  q = basis.astype(stats.dtype)
  sq = jnp.matmul(stats, q, precision=_HI)
  est = jnp.sum(q * sq, axis=-2)  # diag(Qᵀ S Q)
  shift = POWER_SHIFT * jnp.maximum(jnp.max(est, axis=-1, keepdims=True), 0.0)
  q_new, _ = jnp.linalg.qr(sq + q * shift[..., None, :])
  key = -est if mask is None else jnp.where(mask > 0, -est, jnp.inf)
  order = jnp.argsort(key, axis=-1, stable=True)
  return jnp.take_along_axis(q_new, order[..., None, :], axis=-1)
