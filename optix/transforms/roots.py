"""Inverse p-th roots and eigenbases of stacks of symmetric PSD matrices: the numerics
of Shampoo (:mod:`optix.transforms.shampoo`) and SOAP (:mod:`optix.transforms.soap`).

Every function takes a stack ``(..., n, n)`` and works in float32 at least (float64 stays
float64 when x64 is enabled); nothing here knows about leaves, blocks or devices.
"""

import math

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


def _newton_one(a, p, ridge_epsilon, max_iters, tol):
  a = _sym(a)
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  a = a + ridge_epsilon * _ridge_scale(_power_iteration(a)) * eye
  # z·A has its spectrum in (0, (1+p)/2]: ‖A‖_F and the max row sum bound λ_max.
  bound = jnp.minimum(jnp.linalg.norm(a), jnp.max(jnp.sum(jnp.abs(a), axis=-1)))
  z = (1.0 + p) / (2.0 * bound)
  m, h = z * a, z ** (1.0 / p) * eye

  def step(m, h):
    t = (1.0 + 1.0 / p) * eye - m / p
    return jnp.matmul(_power(t, p), m, precision=_HI), jnp.matmul(h, t, precision=_HI)

  def cond(c):
    i, _, _, err, done = c
    return (i < max_iters) & (err > tol) & ~done

  def body(c):
    i, m, h, err, _ = c
    m2, h2 = step(m, h)
    err2 = jnp.max(jnp.abs(m2 - eye))
    # Diverging, or stalled at float32 rounding near convergence: keep the last iterate.
    worse = ~(err2 <= 1.2 * err) | ((err2 >= err) & (err < 0.1))
    return (i + 1, jnp.where(worse, m, m2), jnp.where(worse, h, h2),
            jnp.where(worse, err, err2), worse)

  err = jnp.max(jnp.abs(m - eye))
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
                            max_iters: int = 100, tol: float = 1e-6) -> jax.Array:
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
  """
  fn = lambda x: _newton_one(x, p, ridge_epsilon, max_iters, tol)
  batch = a.shape[:-2]
  flat = a.reshape((-1,) + a.shape[-2:])
  return jax.vmap(fn)(flat).reshape(batch + a.shape[-2:])


def finite_or(new, old):
  """Per matrix of a stack: ``new`` where all its entries are finite, else ``old``."""
  ok = jnp.all(jnp.isfinite(new), axis=(-2, -1), keepdims=True)
  return jnp.where(ok, new, old.astype(new.dtype))


def eigenbasis_eigh(stats: jax.Array) -> jax.Array:
  """Eigenvectors of a stack of symmetric matrices, by decreasing eigenvalue."""
  _, v = jnp.linalg.eigh(_sym(stats))
  return v[..., ::-1]


def eigenbasis_power_qr(stats: jax.Array, basis: jax.Array) -> jax.Array:
  r"""One step of subspace (power) iteration from the previous basis, batched.

  Columns of ``Q`` are first sorted by their Rayleigh quotients
  ``diag(Qᵀ S Q)`` (largest first), then ``Q ← qr(S Q)``: a warm-started
  refresh costing two matmuls and a QR instead of an eigendecomposition
  (Vyas et al. 2024, Algorithm 4).
  """
  stats = _sym(stats)
  q = basis.astype(stats.dtype)
  sq = jnp.matmul(stats, q, precision=_HI)
  est = jnp.sum(q * sq, axis=-2)  # diag(Qᵀ S Q)
  order = jnp.argsort(-est, axis=-1)
  sq = jnp.take_along_axis(sq, order[..., None, :], axis=-1)
  q_new, _ = jnp.linalg.qr(sq)
  return q_new
