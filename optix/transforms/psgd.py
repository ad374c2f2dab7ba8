r"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted on a
Lie group (Li 2015, arXiv 1512.04202; Li 2024, arXiv 2402.11858).

The preconditioner of a tensor leaf with axes ``1..k`` is :math:`P = Q^H Q` (:math:`Q^\top Q`
for real leaves) with :math:`Q = Q_k \otimes \dots \otimes Q_1`: one factor per axis, an
upper-triangular matrix (complex for complex leaves) or (for large or skewed axes, vectors and
scalars) a real positive diagonal one. Applying ``Q`` to a tensor ``X`` means applying each
``Q_i`` to axis ``i`` (:func:`apply_factors`). The factors are fitted to the PSGD criterion
:math:`E[h^H P h + v^H P^{-1} v]` in its whitening form (``h`` the gradient or momentum,
:math:`v \sim N(0, I)`, circular complex for complex leaves), whose minimiser is
:math:`P = E[h h^H]^{-1/2}`: the update ``P h`` whitens the gradient as Adam does
elementwise, here with Kronecker-factored correlations. A leaf whose leading axes index
stacked layers (``stacked_axes``) is preconditioned slice by slice, each slice a leaf of its
own.

Which factors are triangular is decided from the shape alone (:func:`factor_kinds`). The
default rule keeps the factors' memory near the parameters' own: an axis more than twice the
second largest (an embedding's vocabulary, an MLP's wide side) or longer than 8192 gets a
diagonal factor, so every triangular factor holds at most :math:`2 \times` the leaf's size.

Leaves are computed in stacks, not one by one (:mod:`optix.transforms.psgd_stacks`): each
axis is zero-padded to a standard size (powers of two up to 128, multiples of 128 above), the
axes reordered largest first, and the leaves of one padded layout form one stack
``(B, P_1, ..., P_k)`` whose fit and preconditioning are traced once; the balancing, the
triangular inverses and the Lie-group steps run once per factor size for all stacks
(:func:`fit_stacks`). The traced program thus grows with the number of padded layouts, not of
distinct leaf shapes (the batching Shampoo and SOAP do in :mod:`optix.transforms.blocking`).
The padding is exact: the factors are :math:`\mathrm{diag}(Q_i, I)`, the momentum and the
probes are zero on the padded coordinates, and the step leaves the identity block fixed, so
each leaf gets exactly its unpadded update. The state holds the stacked, padded factors
(:func:`optix.transforms.psgd_stacks.leaf_factors` reads one leaf's back).

Params sharded on an Explicit mesh (FSDP) are gathered before they are stacked, as Shampoo's
and SOAP's blocks are (:func:`optix.transforms.blocking.to_blocks`): the stacks and the
factors are replicated, and each update is returned in its leaf's layout.
"""

import itertools
import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix._sharding import in_layout_of, replicated
from optix.transforms import blocking, moments
from optix.transforms.psgd_stacks import (
    apply_axis, balance_scales, concat, from_stack, gram, leaf_layout, mask_stack, real_max_abs,
    real_scale, slices_from_stack, slices_to_stack, split, stack_noise, stacks_of, to_stack)

_HI = jax.lax.Precision.HIGHEST
_TINY = float(np.finfo(np.float32).tiny)
# The probe-independent damping of the fitted gradient: sqrt(float32 eps) times its mean |h|.
_DAMPING = math.sqrt(float(np.finfo(np.float32).eps))
MEMORY_SAVE_MODES = (None, "one_diag", "all_diag")


def update_probability_schedule(max_prob: float = 1.0, min_prob: float = 0.03,
                                decay: float = 0.001, flat_start: int = 500) -> Callable:
  r"""The default probability of a preconditioner update at step ``t`` (steps taken so far):

  .. math:: p(t) = \mathrm{clip}\big(p_{\max}\, e^{-\lambda (t - t_0)},\ p_{\min},\ p_{\max}\big)

  Every step is a fit for the first ``flat_start`` steps, then the probability decays
  to ``min_prob`` = 0.03 by step ~4000 with the defaults: the preconditioner is learned
  early and then only tracked, so a fit (about as many flops as a few matmuls per
  factor) runs once every ~33 steps on average in the long run, as in the reference
  implementation of PSGD Kron.

  Args:
    max_prob: :math:`p_{\max}` in [0, 1], the probability during the flat start
      and the ceiling; 1.0 (fit every step while the preconditioner is learned).
    min_prob: :math:`p_{\min}` in [0, 1], the floor; 0.03 (the reference's).
    decay: the rate λ >= 0 of the exponential decay per step; 0.001.
    flat_start: :math:`t_0`, an int >= 0: steps before the decay starts; 500.

  Returns:
    A schedule: a callable of the step count returning the probability (a
    float32 scalar).
  """
  _validate.in_range("max_prob", max_prob, 0.0, 1.0)
  _validate.in_range("min_prob", min_prob, 0.0, 1.0)
  _validate.nonnegative("decay", decay)
  _validate.integer("flat_start", flat_start)

  def schedule(count):
    p = max_prob * jnp.exp(-decay * (jnp.asarray(count, jnp.float32) - flat_start))
    return jnp.clip(p, min_prob, max_prob)

  return schedule


def factor_kinds(shape: Sequence[int], max_size_triangular: int = 8192,
                 min_ndim_triangular: int = 2, max_skew_triangular: Optional[float] = 2,
                 memory_save_mode: Optional[str] = None) -> tuple:
  """One bool per axis of ``shape``: True for a triangular factor, False for a diagonal one.

  An axis gets a diagonal factor when it has size 1, is larger than
  ``max_size_triangular``, is more than ``max_skew_triangular`` times the second
  largest axis, when the leaf has fewer than ``min_ndim_triangular`` axes (vectors),
  or by ``memory_save_mode`` ("one_diag": the largest axis, "all_diag": every axis).
  A scalar is one diagonal factor of size 1. The ranges are checked by
  :func:`scale_by_psgd_kron`, not here.

  Args:
    shape: the leaf's shape (a sequence of ints; ``()`` for a scalar).
    max_size_triangular: the largest axis size that may get a triangular
      factor; 8192.
    min_ndim_triangular: leaves with fewer axes get only diagonal factors; 2.
    max_skew_triangular: an axis more than this many times the second largest
      one gets a diagonal factor; 2 (default); None: no limit.
    memory_save_mode: None (default), ``"one_diag"`` or ``"all_diag"``.

  Returns:
    A tuple of bools, one per axis (one for a scalar).
  """
  shape = tuple(shape) or (1,)
  forced = [memory_save_mode == "all_diag"] * len(shape)
  if memory_save_mode == "one_diag" and len(shape) > 1:
    forced[int(np.argmax(shape))] = True
  second = sorted(shape)[-2] if len(shape) > 1 else 1
  return tuple(not (n == 1 or n > max_size_triangular or len(shape) < min_ndim_triangular
                    or (max_skew_triangular is not None and n > max_skew_triangular * second)
                    or f)
               for n, f in zip(shape, forced))


def apply_factors(qs: Sequence[jax.Array], x: jax.Array, transpose: bool = False) -> jax.Array:
  r"""``Q x`` (or :math:`Q^H x`): each factor ``Q_i`` (matrix or diagonal vector) on axis ``i``.

  Args:
    qs: one factor per axis of ``x``: an ``(n_i, n_i)`` matrix or an ``(n_i,)``
      diagonal (real: the diagonals are real also for a complex ``x``).
    x: the tensor, of shape ``(n_1, ..., n_k)``.
    transpose: apply the conjugate transpose :math:`Q^H` (:math:`Q^\top` for real
      factors) (True) instead of ``Q`` (False, default).

  Returns:
    A ``jax.Array`` of ``x``'s shape.
  """
  for axis, q in enumerate(qs):
    if q.ndim == 1:
      x = x * q.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    else:
      if transpose and _tree.is_complex(q):
        q = jnp.conj(q)
      x = jnp.moveaxis(jnp.tensordot(q, x, axes=(0 if transpose else 1, axis), precision=_HI),
                       0, axis)
  return x


def solve_factors_transposed(qs: Sequence[jax.Array], x: jax.Array) -> jax.Array:
  r""":math:`Q^{-H} x`: a triangular solve with each :math:`Q_i^H` (:math:`Q_i^\top` for real
  factors) on axis ``i`` (a division for diagonal factors); as cheap as a matmul, and no
  inverse is ever formed.

  Args:
    qs: one factor per axis of ``x``: an upper-triangular ``(n_i, n_i)``
      matrix or an ``(n_i,)`` diagonal, invertible (non-zero diagonal).
    x: the tensor, of shape ``(n_1, ..., n_k)``.

  Returns:
    A ``jax.Array`` of ``x``'s shape.
  """
  for axis, q in enumerate(qs):
    if q.ndim == 1:
      x = x / q.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    else:
      moved = jnp.moveaxis(x, axis, 0)
      flat = jax.lax.linalg.triangular_solve(q, moved.reshape(moved.shape[0], -1),
                                             left_side=True, lower=False, transpose_a=True,
                                             conjugate_a=_tree.is_complex(q))
      x = jnp.moveaxis(flat.reshape(moved.shape), 0, axis)
  return x


def _gram(x: jax.Array, axis: int, diagonal: bool) -> jax.Array:
  """``X_(i) X_(i)ᴴ``: the contraction of ``x`` with its conjugate over every axis but
  ``axis`` (only its real diagonal for a diagonal factor)."""
  others = [i for i in range(x.ndim) if i != axis]
  if diagonal:
    return jnp.sum(moments.abs_sq(x), axis=others)
  return jnp.tensordot(x, jnp.conj(x) if _tree.is_complex(x) else x, axes=(others, others),
                       precision=_HI)


def norm_lower_bound(m: jax.Array) -> jax.Array:
  r"""A cheap lower bound of the spectral norm of a symmetric (or Hermitian) PSD matrix ``m``:
  one power step :math:`\|m y\|`, :math:`y = m c / \|m c\|`, from its largest column ``c``
  (within a small factor of the norm in practice; an upper bound would make the normalised
  fit step too timid).

  Args:
    m: a symmetric (Hermitian) positive semi-definite ``(n, n)`` matrix.

  Returns:
    A scalar ``jax.Array`` in [0, ‖m‖₂] (0 for the zero matrix).
  """
  scale = jnp.max(jnp.abs(m))
  mn = m / jnp.where(scale > 0, scale, 1.0)
  col = jnp.take(mn, jnp.argmax(jnp.sum(moments.abs_sq(mn), axis=0)), axis=1)
  y = jnp.matmul(mn, col, precision=_HI)
  y = y / jnp.maximum(jnp.linalg.norm(y), _TINY)
  return scale * jnp.linalg.norm(jnp.matmul(mn, y, precision=_HI))


def fit_factors(qs: Sequence[jax.Array], h: jax.Array, v: jax.Array,
                precond_lr) -> list:
  r"""One step of the PSGD fit of the factors ``qs`` to the pair (``h``, probe ``v``).

  With :math:`A = Q h` and :math:`B = Q^{-H} v` (:func:`apply_factors`,
  :func:`solve_factors_transposed`) and, for axis ``i``, the Gram matrices
  :math:`A_i A_i^H` and :math:`B_i B_i^H` (contractions over the other axes; :math:`^H` is
  the transpose for real tensors), each factor takes a step on the group of invertible
  upper-triangular matrices (real or complex) or of positive diagonal ones with a
  normalised step size μ = ``precond_lr``:

  .. math::
     Q_i \leftarrow Q_i - \frac{\mu}{\|A_i A_i^H + B_i B_i^H\|}\,
       \mathrm{triu}(A_i A_i^H - B_i B_i^H)\, Q_i

  (for a diagonal factor: the diagonals, real sums of :math:`|a|^2` and :math:`|b|^2`, the
  max-norm, elementwise products, so a diagonal factor stays real and positive). The
  spectral norm is replaced by :func:`norm_lower_bound`. The step vanishes when
  :math:`E[A_i A_i^H] = E[B_i B_i^H]`, i.e. at :math:`P\, E[h h^H]\, P = I` for probes with
  :math:`E[v v^H] = I` (circular complex Gaussians for complex ``h``).

  Args:
    qs: the current factors, one per axis of ``h``: upper-triangular
      ``(n_i, n_i)`` matrices (complex for a complex ``h``) or real ``(n_i,)`` diagonals.
    h: the tensor the preconditioner whitens (gradient or momentum), shape
      ``(n_1, ..., n_k)``, real or complex.
    v: the probe, ``N(0, I)`` noise of ``h``'s shape and field.
    precond_lr: the normalised step size μ, in [0, 1] as
      :func:`scale_by_psgd_kron` checks (a float or a traced scalar).

  Returns:
    A list of the updated factors, same shapes as ``qs``.
  """
  a = apply_factors(qs, h)
  b = solve_factors_transposed(qs, v)
  out = []
  for axis, q in enumerate(qs):
    diagonal = q.ndim == 1
    aa, bb = _gram(a, axis, diagonal), _gram(b, axis, diagonal)
    if diagonal:
      step = precond_lr / jnp.maximum(jnp.max(aa + bb), _TINY)
      out.append(q - step * (aa - bb) * q)
    else:
      step = precond_lr / jnp.maximum(norm_lower_bound(aa + bb), _TINY)
      out.append(q - step * jnp.matmul(jnp.triu(aa - bb), q, precision=_HI))
  return out


def balance_factors(qs: Sequence[jax.Array]) -> list:
  """Rescales the factors to equal max-abs (their geometric mean) without changing ``Q``:
  keeps them away from overflow and underflow in low precision (per leaf; the stacks use
  :func:`balance_scales`, over the real blocks of padded factors).

  Args:
    qs: the factors (matrices or diagonals). Fewer than two, or any factor
      with a zero or non-finite max-abs, leave them unchanged.

  Returns:
    A list of the rescaled factors, same shapes and dtypes.
  """
  if len(qs) < 2:
    return list(qs)
  norms = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])
  ok = jnp.all(jnp.isfinite(norms) & (norms > 0))
  safe = jnp.where(ok, norms, 1.0)
  gmean = jnp.exp(jnp.mean(jnp.log(safe)))
  return [q * (gmean / n).astype(q.dtype) for q, n in zip(qs, safe)]


def _triangular_step(q, aa, bb, precond_lr):
  """The Lie-group step of a batch of triangular factors given their Gram matrices."""
  def one(q, aa, bb):
    mu = precond_lr / jnp.maximum(norm_lower_bound(aa + bb), _TINY)
    return q - mu * jnp.matmul(jnp.triu(aa - bb), q, precision=_HI)
  return jax.vmap(one)(q, aa, bb)


def _inverse_transposed(q):
  r""":math:`Q^{-H}` (:math:`Q^{-\top}` for real ``q``) of a batch of upper-triangular
  matrices: a triangular solve of the lower-triangular :math:`Q^\top` with ``I`` (handed to
  the solver as the transpose of ``q``, the column-major matrix it expects: no copy of ``q``
  in another layout), conjugated for complex ``q``. On a CPU one matrix at a time
  (:func:`optix.transforms.blocking.map_on_cpu`: the batched solve deadlocks XLA's CPU
  runtime under the fit's ``lax.cond``)."""
  def solve(q):
    eye = jnp.broadcast_to(jnp.eye(q.shape[-1], dtype=q.dtype), q.shape)
    return jax.lax.linalg.triangular_solve(jnp.swapaxes(q, 1, 2), eye, left_side=True,
                                           lower=True)
  inv = blocking.map_on_cpu(solve, [q])
  return jnp.conj(inv) if _tree.is_complex(q) else inv


def fit_stacks(stacks: Sequence[Sequence[jax.Array]], hs: Sequence[jax.Array],
               vs: Sequence[jax.Array], precond_lr,
               masks: Optional[Sequence[Sequence]] = None) -> list:
  r""":func:`balance_factors` then :func:`fit_factors` on stacks of padded leaves, the
  per-matrix work batched across stacks.

  The balancing leaves ``Q`` unchanged and rescales each factor's real block by a scalar
  :math:`c_i`, which commutes with the step (the Gram matrices are :math:`\mathrm{diag}(G, 0)`):
  :math:`Q_i \leftarrow c_i\,(Q_i - \mu_i\, \mathrm{triu}(A_i A_i^H - B_i B_i^H) Q_i)`
  with ``A``, ``B`` and the Grams of the unbalanced factors. So the factors form one batch
  per kind, padded size and dtype across the stacks, and the norms, the inverses
  :math:`Q_i^{-H}` (for :math:`B = Q^{-H} v`), the Lie-group steps and the rescalings
  run once per batch (:func:`balance_scales`: every leaf's at once); per stack remain only
  ``A``, ``B`` and their Grams, and the program grows with the number of distinct factor
  sizes, not of stacks.

  Args:
    stacks: per stack, per stack axis, the padded factors: ``(B, P, P)`` or ``(B, P)``
      (:func:`pad_factor`); complex triangular and real diagonal ones for a complex stack.
    hs: per stack, ``(B, P_1, ..., P_k)``, zero on the padding.
    vs: per stack, the probes, same shape and dtype, zero on the padding.
    precond_lr: the normalised step size μ of :func:`fit_factors`.
    masks: per stack, per stack axis, a ``(B, P)`` 0/1 mask of the real coordinates, or
      None where no member is padded (default: no padding anywhere).

  Returns:
    Per stack, a list of the updated padded factors, same shapes as in ``stacks``.
  """
  masks = [[None] * len(qs) for qs in stacks] if masks is None else masks
  # The factors in batches of one kind, size and dtype, across stacks.
  batches = {}
  for g, qs in enumerate(stacks):
    for a, q in enumerate(qs):
      batches.setdefault((q.ndim, q.shape[-1], q.dtype), []).append((g, a))
  batches = list(batches.values())
  sizes = [[stacks[g][a].shape[0] for g, a in refs] for refs in batches]
  cat_q = [concat([stacks[g][a] for g, a in refs]) for refs in batches]
  cat_m = [concat([masks[g][a] for g, a in refs], [stacks[g][a].shape[:2] for g, a in refs])
           for refs in batches]
  # Every factor's balancing scale: one flat vector of the leaves' factors per dtype.
  norms = [real_max_abs(q, m) for q, m in zip(cat_q, cat_m)]
  scales = [None] * len(batches)
  for dt in dict.fromkeys(n.dtype for n in norms):
    mine = [i for i, n in enumerate(norms) if n.dtype == dt]
    offset, at = 0, {}
    for i in mine:
      for (g, a), n in zip(batches[i], sizes[i]):
        at[(g, a)] = offset
        offset += n
    leaves = [[at[(g, a)] + b for a in range(len(stacks[g]))]
              for g in sorted({g for i in mine for g, _ in batches[i]})
              for b in range(stacks[g][0].shape[0])]
    width = max(len(r) for r in leaves)
    flat = balance_scales(jnp.concatenate([norms[i] for i in mine]),
                          np.array([r + [-1] * (width - len(r)) for r in leaves]))
    for i in mine:
      start = at[batches[i][0]]
      scales[i] = flat[start:start + norms[i].shape[0]]
  inverses = {}
  for refs, q, n in zip(batches, cat_q, sizes):
    if q.ndim == 3:
      inverses.update(zip(refs, split(_inverse_transposed(q), n)))
  grams = {}
  for g, (qs, h, v) in enumerate(zip(stacks, hs, vs)):
    a_, b_ = h, v
    for a, q in enumerate(qs):
      a_ = apply_axis(q, a_, a + 1)
      b_ = apply_axis(inverses[(g, a)], b_, a + 1) if q.ndim == 3 else apply_axis(
          q, b_, a + 1, divide=True)
    for a, q in enumerate(qs):
      grams[(g, a)] = gram(a_, a + 1, q.ndim == 2), gram(b_, a + 1, q.ndim == 2)
  out = [list(qs) for qs in stacks]
  for refs, q, m, s, n in zip(batches, cat_q, cat_m, scales, sizes):
    aa, bb = (concat([grams[r][k] for r in refs]) for k in (0, 1))
    if q.ndim == 3:
      new = _triangular_step(q, aa, bb, precond_lr) * real_scale(s, m, q.dtype)[:, :, None]
    else:
      mu = precond_lr / jnp.maximum(jnp.max(aa + bb, axis=1, keepdims=True), _TINY)
      new = (q - mu * (aa - bb) * q) * real_scale(s, m, q.dtype)
    for (g, a), piece in zip(refs, split(new, n)):
      out[g][a] = piece
  return out


def fit_stack(qs: Sequence[jax.Array], h: jax.Array, v: jax.Array, precond_lr,
              masks: Optional[Sequence] = None) -> list:
  """:func:`fit_stacks` on one stack of ``B`` padded leaves.

  Args:
    qs: per stack axis, the padded factors: ``(B, P, P)`` or ``(B, P)``
      (:func:`pad_factor`).
    h: ``(B, P_1, ..., P_k)``, zero on the padding.
    v: the probes, same shape, zero on the padding.
    precond_lr: the normalised step size μ of :func:`fit_factors`.
    masks: per stack axis, a ``(B, P)`` 0/1 mask of the real coordinates, or None
      where no member is padded (default: no padding anywhere).

  Returns:
    A list of the updated padded factors, same shapes as ``qs``.
  """
  return fit_stacks([qs], [h], [v], precond_lr, None if masks is None else [masks])[0]


class ScaleByPsgdKronState(NamedTuple):
  count: jax.Array   # int32, saturating
  key: jax.Array     # uint32[2]: fixed; step t draws from fold_in(key, t)
  mu: _base.Updates  # momentum, shaped like the params
  qs: tuple          # per stack: per stack axis, the padded factors (B, P, P) or (B, P)


def _members(xs, layouts, counts, ks):
  """The stack ``(B, *padded)`` of the leaves ``xs``: one member per leaf without stacked
  axes (:func:`to_stack`), one per slice of a leaf with them (:func:`slices_to_stack`)."""
  if not any(ks):
    return jnp.stack([to_stack(x, lay) for x, lay in zip(xs, layouts)])
  return concat([slices_to_stack(x, lay, n) if k else to_stack(x, lay)[None]
                 for x, lay, n, k in zip(xs, layouts, counts, ks)])


def _as_field(x, dtype):
  """``x`` cast to ``dtype``; its real part when ``dtype`` is real and ``x`` complex (the
  momentum or the factors of real params kept in a complex ``state_dtype`` or
  ``precond_dtype``, whose imaginary parts are 0)."""
  if _tree.is_complex(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
    x = jnp.real(x)
  return x.astype(dtype)


def _factor_dtype(dtype, triangular):
  """A factor's dtype in a stack of ``dtype``: a triangular one takes it, a diagonal one its
  real counterpart (float32 for complex64: a diagonal factor is real and positive)."""
  return jnp.dtype(dtype) if triangular else jnp.finfo(dtype).dtype


def scale_by_psgd_kron(b1: float = 0.9,
                       preconditioner_update_probability: Union[None, float, Callable] = None,
                       max_size_triangular: int = 8192, min_ndim_triangular: int = 2,
                       max_skew_triangular: Optional[float] = 2,
                       memory_save_mode: Optional[str] = None, precond_lr: float = 0.1,
                       precond_init_scale: float = 1.0, max_update_rms: Optional[float] = 1.1,
                       *, precond_dtype=None, state_dtype=None, seed: int = 0,
                       stacked_axes=None) -> _base.GradientTransformation:
  r"""PSGD Kron (Li 2015, arXiv 1512.04202; Li 2024, "Stochastic Hessian fitting on Lie
  groups", arXiv 2402.11858): the momentum, preconditioned by a Kronecker-factored
  :math:`P = Q^H Q` fitted to whiten it (:math:`Q^H = Q^\top` for real params).

  .. math::
     m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad \hat m_t = m_t / (1 - \beta_1^t), \\
     \text{with probability } p(t):\ Q \leftarrow \mathrm{fit}(Q;\ \hat m_t + \delta z,\ v),
       \quad v, z \sim N(0, I), \\
     u_t = \mathrm{clip}_{\mathrm{rms}}\big(Q^H Q\, \hat m_t\big), \quad
     \mathrm{clip}_{\mathrm{rms}}(u) = u \cdot \min\Big(1, \frac{\rho}{\mathrm{rms}(u)}\Big),
     \quad \mathrm{rms}(u) = \sqrt{\mathrm{mean}\,|u|^2}

  per leaf, where ``fit`` is one Lie-group step of every factor (:func:`fit_factors`,
  normalised step size ``precond_lr``),
  :math:`\delta = \sqrt{\epsilon_{f32}} \cdot \mathrm{mean}|\hat m_t|` a small damping
  that keeps the fit well posed for rank-deficient momenta, and ρ = ``max_update_rms``.
  The factors are first rebalanced to equal norms (:func:`balance_factors`: same ``Q``).
  The fit's fixed point is :math:`P = E[\hat m \hat m^H]^{-1/2}` (restricted to Kronecker
  products), so ``u`` has roughly unit RMS and the learning rate is an Adam-sized one.

  Complex params: the same rule over the complex field, the one whose fixed point is
  :math:`P = E[\hat m \hat m^H]^{-1/2}`, as in the reference implementation of PSGD: the
  whitening criterion :math:`E[h^H P h + v^H P^{-1} v]` with circular complex Gaussian
  probes (:math:`E[v v^H] = I`, :math:`E[v v^\top] = 0`), complex upper-triangular
  factors, conjugate transposes wherever a transpose appears (:math:`A = Q h`,
  :math:`B = Q^{-H} v`, Gram matrices :math:`A_i A_i^H`), moduli in every norm and in the
  RMS clip. Diagonal factors stay real and positive (their step multiplies by the real
  diagonal of a Hermitian matrix; a complex phase in a diagonal factor would cancel in
  :math:`Q^H Q`), so a complex leaf's triangular factors are complex (complex64 for
  complex64 params, complex128 for complex128) and its diagonal ones real of the same
  precision; the momentum is complex.

  Args:
    b1: momentum, in [0, 1) (0.9, as in the reference implementation). The momentum is
      also what the preconditioner is fitted on.
    preconditioner_update_probability: probability of a fit at each step, a number in
      [0, 1] or a schedule of the step count; ``None`` (default):
      :func:`update_probability_schedule` (1 for 500 steps, then decaying to 0.03 by step
      ~4000). The draw comes from the key in the state.
    max_size_triangular: an int >= 0; axes larger than this (8192) get a diagonal factor
      (memory ``n²``, a fit costs ``O(n³)``).
    min_ndim_triangular: an int >= 0; leaves with fewer axes (2: vectors) get diagonal
      factors only.
    max_skew_triangular: a float > 0; an axis more than this many times the second
      largest one gets a diagonal factor. 2 (default): a triangular factor then holds at
      most twice the leaf's size (:math:`n^2 \le 2 n m` for an ``n × m`` matrix, ``n`` the
      longer side), so an embedding's vocabulary axis or an MLP's ``4d`` axis is diagonal
      and the default state stays near Adam's size; ``None``: no limit (the reference
      implementation's default, a ``V × V`` factor for a vocabulary of ``V <= 8192``).
      The rule shapes the state: under :func:`optix.inject_hyperparams` an int stays
      static, a float must be named in ``static_args``.
    memory_save_mode: ``None``, ``"one_diag"`` (the largest axis of each leaf diagonal)
      or ``"all_diag"`` (every factor diagonal: a fitted elementwise preconditioner).
    precond_lr: normalised step size μ of the fit, in [0, 1] (0.1: the reference's).
    precond_init_scale: s > 0: :math:`Q_0 = s^{1/k} I` per factor, so :math:`P_0 = s^2 I`
      (1.0).
    max_update_rms: ρ > 0 of the RMS clip of each leaf's update (1.1, as in the reference;
      ``None``: no clipping). It bounds the first steps, before ``P`` has adapted.
    precond_dtype: dtype of the factors (``None``: the state dtype policy, at least
      float32, complex for complex params; ``jnp.bfloat16`` halves their memory, the fit
      still runs in float32).
    state_dtype: momentum dtype (``None``: the policy, at least float32, same kind).
    seed: an int >= 0, the PRNG seed of the probes and of the update draws; 0.
    stacked_axes: how many leading axes of each leaf index stacked layers (the kernels of
      an ``nn.scan``-ed block): an int >= 0 for every leaf, a tree of ints like the params
      (or a prefix of them), or a callable params -> such a tree; each ``k`` must satisfy
      ``0 <= k <=`` the leaf's ndim. A leaf of shape ``(L_1, ..., L_k, n_1, ..., n_d)`` is
      preconditioned as :math:`L_1 \cdots L_k` separate leaves of shape
      ``(n_1, ..., n_d)``: each slice gets its own factors (their kinds from the slice's
      shape), fit and RMS clip, and the slices are consecutive members of one stack, so
      the state grows by :math:`L` slices' factors, not by an :math:`L \times L` factor
      across layers. None (default) or 0: no stacked axes, every leaf one preconditioner.
      It sets the state's shapes: inside ``optax.inject_hyperparams`` a value other than
      None must be named in ``static_args`` (a callable would be taken for a schedule).

  The rule for diagonal factors, from the shape alone (:func:`factor_kinds`): an axis of
  size 1, longer than ``max_size_triangular``, more than ``max_skew_triangular`` times the
  second largest axis, every axis of a leaf with fewer than ``min_ndim_triangular`` axes,
  and those ``memory_save_mode`` names; every other axis gets a triangular factor. These
  three arguments (and ``stacked_axes``) set the state's structure: inside
  ``optax.inject_hyperparams`` name them in ``static_args`` (``optix.inject_hyperparams``
  keeps them static by itself).

  Leaves are padded to standard sizes and stacked across the tree (exactly: see
  :mod:`optix.transforms.psgd_stacks`), so compiling the step costs about the same for a
  model of many distinct shapes as for one of a few. The probes of a fit are one
  Gaussian draw per step and dtype (Box–Muller,
  :func:`optix.transforms.psgd_stacks.gaussian`) from the state's key, cut into the stacks
  in order (a leaf with stacked axes: its slices in row-major order, so it draws exactly
  what its slices would as consecutive separate leaves); whether a step fits is a
  separate uniform draw from the same step key. Real and complex leaves never share a
  stack.

  State: the momentum, shaped like the params (4 bytes/param in float32, 8 in complex64),
  and per stack of ``B`` leaves padded to ``(P_1, ..., P_k)``, :math:`B P_i^2` (triangular) or
  :math:`B P_i` (diagonal) values per axis: :math:`\sum_i n_i^2` or :math:`n_i` per leaf
  when its sizes are standard (powers of two up to 128, multiples of 128), more for
  others (up to 4× a factor's values for a size just above a power of two up to 128,
  at most :math:`(1 + 128/n)^2` above). A stack's factors take the widest dtype of its
  leaves'.

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByPsgdKronState``
    (``count``, ``key``, ``mu``, ``qs``).
  """
  _validate.unit_interval("b1", b1)
  if preconditioner_update_probability is not None and not callable(
      preconditioner_update_probability):
    _validate.in_range("preconditioner_update_probability",
                       preconditioner_update_probability, 0.0, 1.0)
  _validate.integer("max_size_triangular", max_size_triangular)
  _validate.integer("min_ndim_triangular", min_ndim_triangular)
  if max_skew_triangular is not None:
    _validate.positive("max_skew_triangular", max_skew_triangular)
  if memory_save_mode not in MEMORY_SAVE_MODES:
    raise ValueError(f"memory_save_mode must be one of {MEMORY_SAVE_MODES!r}, "
                     f"got {memory_save_mode!r}")
  _validate.in_range("precond_lr", precond_lr, 0.0, 1.0)
  _validate.positive("precond_init_scale", precond_init_scale)
  if max_update_rms is not None:
    _validate.positive("max_update_rms", max_update_rms)
  _validate.integer("seed", seed, static=False)  # read by init only
  _validate.dtype("precond_dtype", precond_dtype)
  _validate.dtype("state_dtype", state_dtype)
  blocking.check_stacked_axes(stacked_axes)  # ints >= 0 here; each leaf's ndim at init
  probability = (update_probability_schedule() if preconditioner_update_probability is None
                 else preconditioner_update_probability)

  def kinds_of(shape):
    return factor_kinds(shape, max_size_triangular, min_ndim_triangular,
                        max_skew_triangular, memory_save_mode)

  def plan(leaves, ks, complex_leaves):
    """Per leaf: its slices' layout and their number; the stacks of the slices; per stack,
    its runs ``(leaf, number of slices)`` in member order (a leaf's slices are consecutive
    members of one stack)."""
    layouts, counts, owner = [], [], []
    for j, (x, k, c) in enumerate(zip(leaves, ks, complex_leaves)):
      shape = tuple(jnp.shape(x))
      layouts.append(leaf_layout(shape[k:], kinds_of(shape[k:]), c))
      counts.append(math.prod(shape[:k]))
      owner += [j] * counts[-1]
    groups = stacks_of([layouts[j] for j in owner])
    runs = [[(j, len(list(us))) for j, us in itertools.groupby(owner[u] for u in g.members)]
            for g in groups]
    return layouts, groups, runs

  def init(params):
    leaves = jax.tree.leaves(params)
    ks = blocking.stacked_of(stacked_axes, params)
    _, groups, runs = plan(leaves, ks, [_tree.is_complex(x) for x in leaves])
    qs = []
    for group, run in zip(groups, runs):
      dt = jnp.result_type(*[_tree.state_dtype_for(leaves[j], precond_dtype) for j, _ in run])
      s = precond_init_scale ** (1.0 / len(group.padded))
      stacks = []
      for size, tri, mask in zip(group.padded, group.kinds, group.masks()):
        fdt = _factor_dtype(dt, tri)
        # s on the real coordinates, 1 on the padding: Q_0 = diag(s I, I).
        diag = jnp.full((len(group.members), size), s, fdt)
        if mask is not None:
          diag = jnp.where(jnp.asarray(mask) > 0, diag, 1).astype(fdt)
        stacks.append(diag[:, :, None] * jnp.eye(size, dtype=fdt) if tri else diag)
      qs.append(tuple(stacks))
    return ScaleByPsgdKronState(
        count=jnp.zeros([], jnp.int32), key=jax.random.key_data(jax.random.key(seed)),
        mu=_tree.zeros_like(params, state_dtype), qs=tuple(qs))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    mu = moments.ema(b1, state.mu, updates)
    g_leaves, treedef = jax.tree.flatten(updates)
    m_leaves = treedef.flatten_up_to(mu)
    corr = moments.correction(b1, count)  # the debiasing 1 - b1^t, applied per stack
    # keys[0]: the fit draw; keys[1], keys[2]: the probes v and z of every stack.
    keys = jax.random.split(jax.random.fold_in(state.key, state.count), 3)
    p = probability(state.count) if callable(probability) else probability
    do_fit = jax.random.uniform(keys[0]) < p

    ks = blocking.stacked_of(stacked_axes, updates)
    # The field of a leaf is its updates' (the params', as in init): a complex state_dtype or
    # precond_dtype on real params keeps a real stack, whose momentum's imaginary part is 0.
    layouts, groups, runs = plan(g_leaves, ks, [_tree.is_complex(g) for g in g_leaves])
    # Per stack: the debiased momenta (B, *padded), zero on the padding. A leaf sharded on an
    # Explicit mesh is gathered first: the stacks and the factors are replicated.
    hs = []
    for run, factors in zip(runs, state.qs):
      dt = jnp.result_type(factors[0].dtype, jnp.float32, *[m_leaves[j].dtype for j, _ in run])
      if not layouts[run[0][0]].complex:
        dt = jnp.finfo(dt).dtype
      h = _members([_as_field(replicated(m_leaves[j]), dt) for j, _ in run],
                   [layouts[j] for j, _ in run], [n for _, n in run], [ks[j] for j, _ in run])
      hs.append(moments.debias_leaf(h, corr))

    def fit(stacks):
      shapes = [h.shape for h in hs]
      dts = [h.dtype for h in hs]
      vs, zs = stack_noise(keys[1], shapes, dts), stack_noise(keys[2], shapes, dts)
      damped, probes, masks = [], [], []
      for group, h, v, z in zip(groups, hs, vs, zs):
        rdt, ms = jnp.finfo(h.dtype).dtype, group.masks()
        v, z = mask_stack(v, ms), mask_stack(z, ms)
        axes = tuple(range(1, h.ndim))
        delta = _DAMPING * jnp.sum(jnp.abs(h), axis=axes) / group.numel().astype(rdt)
        damped.append(h + delta.reshape((-1,) + (1,) * len(axes)) * z)
        probes.append(v)
        masks.append(ms)
      new = fit_stacks([[_as_field(q, _factor_dtype(h.dtype, q.ndim == 3)) for q in factors]
                        for factors, h in zip(stacks, hs)], damped, probes, precond_lr, masks)
      # In the state's dtypes and layouts, so both branches of the cond agree.
      return tuple(tuple(in_layout_of(n.astype(q.dtype), q) for n, q in zip(ns, factors))
                   for ns, factors in zip(new, stacks))

    qs = jax.lax.cond(do_fit, fit, lambda stacks: stacks, state.qs)
    out = [None] * len(g_leaves)
    for group, run, h, factors in zip(groups, runs, hs, qs):
      f, u = [_as_field(q, _factor_dtype(h.dtype, q.ndim == 3)) for q in factors], h
      for a in range(len(f)):                     # Q^H Q h
        u = apply_axis(f[a], u, a + 1)
      for a in range(len(f)):
        u = apply_axis(f[a], u, a + 1, transpose=True)
      if max_update_rms is not None:
        axes, rdt = tuple(range(1, u.ndim)), jnp.finfo(u.dtype).dtype
        rms = jnp.sqrt(jnp.sum(moments.abs_sq(u), axis=axes) / group.numel().astype(rdt))
        scale = jnp.minimum(1.0, max_update_rms / (rms + 1e-12)).astype(rdt)
        u = u * scale.reshape((-1,) + (1,) * len(axes))
      start = 0
      for j, n in run:
        shape, dtype = jnp.shape(g_leaves[j]), jnp.result_type(g_leaves[j])
        piece = (slices_from_stack(u[start:start + n], layouts[j], shape) if ks[j]
                 else from_stack(u[start], layouts[j], shape))
        out[j] = in_layout_of(piece.astype(dtype), g_leaves[j])   # in the leaf's layout
        start += n
    for j, x in enumerate(g_leaves):   # a leaf with no slices (a stacked axis of length 0)
      if out[j] is None:
        out[j] = jnp.zeros_like(x)
    return jax.tree.unflatten(treedef, out), ScaleByPsgdKronState(count, state.key, mu, qs)

  return _base.GradientTransformation(init, update)
