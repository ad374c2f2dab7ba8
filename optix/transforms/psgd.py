r"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted on a
Lie group (Li 2015, arXiv 1512.04202; Li 2024, arXiv 2402.11858).

The preconditioner of a tensor leaf with axes ``1..k`` is :math:`P = Q^\top Q` with
:math:`Q = Q_k \otimes \dots \otimes Q_1`: one factor per axis, an upper-triangular matrix or (for
large or skewed axes, vectors and scalars) a diagonal one. Applying ``Q`` to a
tensor ``X`` means applying each ``Q_i`` to axis ``i`` (:func:`apply_factors`).
The factors are fitted to the PSGD criterion :math:`E[h^\top P h + v^\top P^{-1} v]` in
its whitening form (``h`` the gradient or momentum, :math:`v \sim N(0, I)`), whose minimiser
is :math:`P = E[h h^\top]^{-1/2}`: the update ``P h`` whitens the gradient as Adam does
elementwise, here with Kronecker-factored correlations.

Which factors are triangular is decided from the shape alone (:func:`factor_kinds`). The
default rule keeps the factors' memory near the parameters' own: an axis more than twice the
second largest (an embedding's vocabulary, an MLP's wide side) or longer than 8192 gets a
diagonal factor, so every triangular factor holds at most :math:`2 \times` the leaf's size.

Leaves are computed in stacks, not one by one: each axis is zero-padded to a standard size
(:func:`padded_size`: powers of two up to 128, multiples of 128 above), the axes reordered
largest first (:func:`leaf_layout`), and the leaves of one padded layout form one stack
``(B, P_1, ..., P_k)`` whose fit and preconditioning are traced once (:func:`fit_stack`), so
the traced program grows with the number of padded layouts, not of distinct leaf shapes (the
batching Shampoo and SOAP do in :mod:`optix.transforms.blocking`). The padding is exact: a
factor is padded to :math:`\mathrm{diag}(Q_i, I)` (:func:`pad_factor`) and the momentum and
the probes are zero there, so :math:`A = Qh` and :math:`B = Q^{-\top} v` vanish on the padded
coordinates, the Gram matrices are :math:`\mathrm{diag}(G, 0)`, the Lie-group step leaves the
identity block fixed and takes exactly the unpadded step on the real block (the norms are
taken over the real block: :func:`balance_factors` with masks). The state keeps each leaf's
factors unpadded.
"""

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix.transforms import blocking, moments

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
                 min_ndim_triangular: int = 2, max_skew_triangular: Optional[float] = 2.0,
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
      one gets a diagonal factor; 2.0 (default); None: no limit.
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
  r"""``Q x`` (or :math:`Q^\top x`): each factor ``Q_i`` (matrix or diagonal vector) on axis ``i``.

  Args:
    qs: one factor per axis of ``x``: an ``(n_i, n_i)`` matrix or an ``(n_i,)``
      diagonal.
    x: the tensor, of shape ``(n_1, ..., n_k)``.
    transpose: apply :math:`Q^\top` (True) instead of ``Q`` (False, default).

  Returns:
    A ``jax.Array`` of ``x``'s shape.
  """
  for axis, q in enumerate(qs):
    if q.ndim == 1:
      x = x * q.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    else:
      x = jnp.moveaxis(jnp.tensordot(q, x, axes=(0 if transpose else 1, axis), precision=_HI),
                       0, axis)
  return x


def solve_factors_transposed(qs: Sequence[jax.Array], x: jax.Array) -> jax.Array:
  r""":math:`Q^{-\top} x`: a triangular solve with each :math:`Q_i^\top` on axis ``i`` (a
  division for diagonal factors); as cheap as a matmul, and no inverse is ever formed.

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
                                             left_side=True, lower=False, transpose_a=True)
      x = jnp.moveaxis(flat.reshape(moved.shape), 0, axis)
  return x


def _gram(x: jax.Array, axis: int, diagonal: bool) -> jax.Array:
  """``X_(i) X_(i)ᵀ``: the contraction of ``x`` with itself over every axis but ``axis``
  (only its diagonal for a diagonal factor)."""
  others = [i for i in range(x.ndim) if i != axis]
  if diagonal:
    return jnp.sum(jnp.square(x), axis=others)
  return jnp.tensordot(x, x, axes=(others, others), precision=_HI)


def norm_lower_bound(m: jax.Array) -> jax.Array:
  r"""A cheap lower bound of the spectral norm of a symmetric PSD matrix ``m``: one power step
  :math:`\|m y\|`, :math:`y = m c / \|m c\|`, from its largest column ``c`` (within a small
  factor of the norm in practice; an upper bound would make the normalised fit step too
  timid).

  Args:
    m: a symmetric positive semi-definite ``(n, n)`` matrix.

  Returns:
    A scalar ``jax.Array`` in [0, ‖m‖₂] (0 for the zero matrix).
  """
  scale = jnp.max(jnp.abs(m))
  mn = m / jnp.where(scale > 0, scale, 1.0)
  col = jnp.take(mn, jnp.argmax(jnp.sum(jnp.square(mn), axis=0)), axis=1)
  y = jnp.matmul(mn, col, precision=_HI)
  y = y / jnp.maximum(jnp.linalg.norm(y), _TINY)
  return scale * jnp.linalg.norm(jnp.matmul(mn, y, precision=_HI))


def fit_factors(qs: Sequence[jax.Array], h: jax.Array, v: jax.Array,
                precond_lr) -> list:
  r"""One step of the PSGD fit of the factors ``qs`` to the pair (``h``, probe ``v``).

  With :math:`A = Q h` and :math:`B = Q^{-\top} v` (:func:`apply_factors`,
  :func:`solve_factors_transposed`) and, for axis ``i``, the Gram matrices
  :math:`A_i A_i^\top` and :math:`B_i B_i^\top` (contractions over the other axes), each factor
  takes a step on the group of invertible upper-triangular matrices (or of positive
  diagonal ones) with a normalised step size μ = ``precond_lr``:

  .. math::
     Q_i \leftarrow Q_i - \frac{\mu}{\|A_i A_i^\top + B_i B_i^\top\|}\,
       \mathrm{triu}(A_i A_i^\top - B_i B_i^\top)\, Q_i

  (for a diagonal factor: the diagonals, the max-norm, elementwise products). The
  spectral norm is replaced by :func:`norm_lower_bound`. The step vanishes when
  :math:`E[A_i A_i^\top] = E[B_i B_i^\top]`, i.e. at :math:`P h h^\top P = I` in expectation.

  Args:
    qs: the current factors, one per axis of ``h``: upper-triangular
      ``(n_i, n_i)`` matrices or ``(n_i,)`` diagonals.
    h: the tensor the preconditioner whitens (gradient or momentum), shape
      ``(n_1, ..., n_k)``.
    v: the probe, ``N(0, I)`` noise of ``h``'s shape.
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


def balance_factors(qs: Sequence[jax.Array], masks: Optional[Sequence] = None) -> list:
  """Rescales the factors to equal max-abs (their geometric mean) without changing ``Q``:
  keeps them away from overflow and underflow in low precision.

  Args:
    qs: the factors (matrices or diagonals). Fewer than two, or any factor
      with a zero or non-finite max-abs, leave them unchanged.
    masks: None (default), or per factor an ``(n_i,)`` 0/1 vector of its real
      coordinates (None for a factor without padding): the max-abs is taken over the
      real block only, so a zero-padded factor balances as its unpadded block does.

  Returns:
    A list of the rescaled factors, same shapes and dtypes.
  """
  if len(qs) < 2:
    return list(qs)
  masks = [None] * len(qs) if masks is None else masks

  def real_abs(q, m):
    if m is None:
      return jnp.abs(q)
    return jnp.abs(q) * (m if q.ndim == 1 else m[:, None] * m[None, :]).astype(q.dtype)

  norms = jnp.stack([jnp.max(real_abs(q, m)) for q, m in zip(qs, masks)])
  ok = jnp.all(jnp.isfinite(norms) & (norms > 0))
  safe = jnp.where(ok, norms, 1.0)
  gmean = jnp.exp(jnp.mean(jnp.log(safe)))
  return [q * (gmean / n).astype(q.dtype) for q, n in zip(qs, safe)]


# -- padding and stacking across leaves -----------------------------------------------------

_NO_CAP = 1 << 62


def padded_size(n: int) -> int:
  """The standard size an axis of length ``n`` is zero-padded to in the stacks: the next power
  of two up to 128, the next multiple of 128 above
  (:func:`optix.transforms.blocking.standard_size` without a cap).

  Args:
    n: the axis length, an int >= 1.

  Returns:
    An int >= ``n``.
  """
  return blocking.standard_size(n, _NO_CAP)


class LeafLayout(NamedTuple):
  """Where one leaf sits in its stack (static Python values)."""
  shape: tuple   # the leaf's shape, (1,) for a scalar
  kinds: tuple   # per axis of ``shape``: True for a triangular factor
  perm: tuple    # the stack's axis order: the leaf's axes by padded size, largest first
  padded: tuple  # per stack axis (``perm`` order): the padded length


def leaf_layout(shape: Sequence[int], kinds: Sequence[bool]) -> LeafLayout:
  """The stack layout of a leaf: its axes reordered by padded size (largest first, triangular
  before diagonal on ties), each zero-padded to :func:`padded_size`. Leaves with the same
  padded sizes and factor kinds share one stack whatever their real sizes and axis order.

  Args:
    shape: the leaf's shape (``()`` for a scalar).
    kinds: per axis, True for a triangular factor (:func:`factor_kinds`).

  Returns:
    A :class:`LeafLayout`.
  """
  shape = tuple(shape) or (1,)
  sizes = [padded_size(n) for n in shape]
  perm = tuple(sorted(range(len(shape)), key=lambda i: (-sizes[i], not kinds[i], i)))
  return LeafLayout(shape, tuple(kinds), perm, tuple(sizes[i] for i in perm))


def to_stack(x: jax.Array, layout: LeafLayout) -> jax.Array:
  """A leaf in its stack layout: axes in ``layout.perm`` order, zero-padded to
  ``layout.padded``."""
  x = jnp.transpose(x.reshape(layout.shape), layout.perm)
  pad = [(0, p - n) for n, p in zip(x.shape, layout.padded)]
  return jnp.pad(x, pad) if any(hi for _, hi in pad) else x


def from_stack(x: jax.Array, layout: LeafLayout, shape: Sequence[int]) -> jax.Array:
  """Inverse of :func:`to_stack`: drops the padding, restores the axis order and ``shape``."""
  real = tuple(layout.shape[i] for i in layout.perm)
  if tuple(x.shape) != real:
    x = x[tuple(slice(0, n) for n in real)]
  return jnp.transpose(x, np.argsort(layout.perm)).reshape(shape)


def pad_factor(q: jax.Array, size: int) -> jax.Array:
  r"""A factor padded to ``size``: :math:`\mathrm{diag}(Q_i, I)`. With a zero-padded ``h``
  and probe the padded coordinates are decoupled: :func:`fit_factors` leaves the identity
  block fixed and the real block takes exactly its unpadded step.

  Args:
    q: an ``(n, n)`` matrix or an ``(n,)`` diagonal.
    size: the padded length, >= ``n``.

  Returns:
    The ``(size, size)`` or ``(size,)`` padded factor, ``q``'s dtype.
  """
  n = q.shape[0]
  if n == size:
    return q
  if q.ndim == 1:
    return jnp.pad(q, (0, size - n), constant_values=1)
  return jnp.pad(q, ((0, size - n), (0, size - n))) + _padding_identity(
      q.dtype, size, jnp.arange(size) >= n)


def _padding_identity(dtype, size, padding):
  """``diag(padding)``: ones on the padded coordinates (``padding``: ``(..., size)`` bools),
  built from an iota (no ``size × size`` constant in the program)."""
  return jnp.eye(size, dtype=dtype) * jnp.asarray(padding, dtype)[..., None, :]


def crop_factor(q: jax.Array, n: int) -> jax.Array:
  """Inverse of :func:`pad_factor`: the real ``(n, n)`` or ``(n,)`` block."""
  return q[:n] if q.ndim == 1 else q[:n, :n]


class _Group(NamedTuple):
  """Leaves of one layout (padded sizes, kinds, dtypes): one stack ``(B, *padded)``."""
  padded: tuple
  kinds: tuple     # per stack axis
  members: tuple   # leaf indices, in stack order
  real: tuple      # per member: its real sizes in stack-axis order

  def masks(self):
    """Per stack axis: a ``(B, P)`` 0/1 numpy mask of the real coordinates, or None."""
    out = []
    for a, size in enumerate(self.padded):
      lengths = np.array([r[a] for r in self.real])
      out.append(None if np.all(lengths == size)
                 else (np.arange(size)[None, :] < lengths[:, None]).astype(np.float32))
    return out

  def numel(self):
    return np.array([np.prod(r, dtype=np.int64) for r in self.real], np.float32)


def _groups(layouts, dtypes) -> tuple:
  groups = {}
  for j, (lay, dt) in enumerate(zip(layouts, dtypes)):
    kinds = tuple(lay.kinds[i] for i in lay.perm)
    groups.setdefault((lay.padded, kinds, dt), []).append(j)
  return tuple(_Group(padded, kinds, tuple(idx),
                      tuple(tuple(layouts[j].shape[i] for i in layouts[j].perm) for j in idx))
               for (padded, kinds, _), idx in groups.items())


def _full_mask(masks, ndim):
  """The product of the per-axis masks, broadcast to ``(B, P_1, ..., P_k)`` (None: no padding)."""
  full = None
  for a, m in enumerate(masks):
    if m is not None:
      m = jnp.asarray(m).reshape(m.shape[:1] + tuple(m.shape[1] if i == a else 1
                                                    for i in range(ndim)))
      full = m if full is None else full * m
  return full


def gaussian(key: jax.Array, n: int, dtype) -> jax.Array:
  r"""``n`` independent ``N(0, 1)`` samples by the Box–Muller transform of uniform draws:
  :math:`\sqrt{-2 \log(1 - u_1)}\,(\cos 2\pi u_2, \sin 2\pi u_2)`. Its transcendental
  functions keep XLA from copying the generator into every consumer of a piece of the
  draw (``jax.random.normal``'s polynomial inverse error function is copied into each).

  Args:
    key: a PRNG key (typed or raw ``uint32[2]``).
    n: the number of samples, an int >= 0.
    dtype: a floating dtype.

  Returns:
    An ``(n,)`` array.
  """
  half = (n + 1) // 2
  u = jax.random.uniform(key, (2, half), dtype)
  r = jnp.sqrt(-2 * jnp.log1p(-u[0]))
  t = (2 * math.pi) * u[1]
  return jnp.concatenate([r * jnp.cos(t), r * jnp.sin(t)])[:n]


def stack_noise(key: jax.Array, shapes: Sequence[tuple], dtypes: Sequence) -> list:
  """``N(0, I)`` arrays of the given shapes and dtypes from one draw per dtype
  (:func:`gaussian`): the arrays of one dtype are consecutive pieces of a single flat draw
  (from ``key`` for the first dtype, ``fold_in(key, d)`` for the ``d``-th other), so a
  step's probes cost one random-number kernel however many stacks there are.

  Args:
    key: a PRNG key (typed or raw ``uint32[2]``).
    shapes: the arrays' shapes, in order.
    dtypes: their floating dtypes, in order.

  Returns:
    A list of arrays, one per shape.
  """
  out = [None] * len(shapes)
  order = list(dict.fromkeys(jnp.dtype(d) for d in dtypes))
  for d, dt in enumerate(order):
    idx = [i for i, t in enumerate(dtypes) if jnp.dtype(t) == dt]
    sizes = [int(np.prod(shapes[i], dtype=np.int64)) for i in idx]
    flat = gaussian(key if d == 0 else jax.random.fold_in(key, d), sum(sizes), dt)
    cuts = [int(c) for c in np.cumsum(sizes)[:-1]]
    for i, part in zip(idx, jnp.split(flat, cuts) if cuts else [flat]):
      out[i] = part.reshape(shapes[i])
  return out


def _by_shape(fn: Callable, items: Sequence[tuple]) -> list:
  """``fn`` on the concatenation (axis 0) of the items of equal trailing shapes and dtypes.

  ``items``: tuples of arrays ``(B_i, ...)``; ``fn`` maps the concatenated tuple to one
  ``(sum B_i, ...)`` array, split back into one result per item, in order. One trace per
  distinct shape, however many stacks share it."""
  buckets = {}
  for i, arrays in enumerate(items):
    buckets.setdefault(tuple((x.shape[1:], x.dtype) for x in arrays), []).append(i)
  out = [None] * len(items)
  for idx in buckets.values():
    args = [jnp.concatenate([items[i][k] for i in idx]) if len(idx) > 1 else items[idx[0]][k]
            for k in range(len(items[idx[0]]))]
    res = fn(*args)
    cuts = [int(c) for c in np.cumsum([items[i][0].shape[0] for i in idx])[:-1]]
    for i, r in zip(idx, jnp.split(res, cuts) if cuts else [res]):
      out[i] = r
  return out


def _triangular_step(precond_lr):
  """The Lie-group step of a stack of triangular factors given their Gram matrices."""
  def step(q, aa, bb):
    def one(q, aa, bb):
      mu = precond_lr / jnp.maximum(norm_lower_bound(aa + bb), _TINY)
      return q - mu * jnp.matmul(jnp.triu(aa - bb), q, precision=_HI)
    return jax.vmap(one)(q, aa, bb)
  return step


def _inverse(q):
  """:math:`Q^{-1}` of a stack of upper-triangular matrices (a triangular solve with ``I``)."""
  eye = jnp.broadcast_to(jnp.eye(q.shape[-1], dtype=q.dtype), q.shape)
  return jax.lax.linalg.triangular_solve(q, eye, left_side=True, lower=False)


def fit_stacks(stacks: Sequence[Sequence[jax.Array]], hs: Sequence[jax.Array],
               vs: Sequence[jax.Array], precond_lr,
               masks: Optional[Sequence[Sequence]] = None) -> list:
  r""":func:`balance_factors` then :func:`fit_factors` on stacks of padded leaves, the
  per-matrix work batched across stacks.

  Each stack's factors are balanced (norms over the real block) and applied to its ``h`` and
  probe; the inverses :math:`Q_i^{-1}` (for :math:`B = Q^{-\top} v`) and the Lie-group steps
  of the triangular factors (:func:`norm_lower_bound`, ``triu``, the matmul) run once per
  factor size for all stacks together (:math:`Q^{-\top} v` through the inverse rather than a
  solve per stack: the same math, and one triangular solve per size), so the traced
  program grows with the number of distinct factor sizes.

  Args:
    stacks: per stack, per stack axis, the padded factors: ``(B, P, P)`` or ``(B, P)``
      (:func:`pad_factor`).
    hs: per stack, ``(B, P_1, ..., P_k)``, zero on the padding.
    vs: per stack, the probes, same shape, zero on the padding.
    precond_lr: the normalised step size μ of :func:`fit_factors`.
    masks: per stack, per stack axis, a ``(B, P)`` 0/1 mask of the real coordinates, or
      None where no member is padded (default: no padding anywhere).

  Returns:
    Per stack, a list of the updated padded factors, same shapes as in ``stacks``.
  """
  masks = [[None] * len(qs) for qs in stacks] if masks is None else masks
  balanced = []
  for qs, h, ms in zip(stacks, hs, masks):
    ms = [None if m is None else jnp.asarray(m, h.dtype) for m in ms]
    balanced.append(jax.vmap(balance_factors)(list(qs), ms))
  tri = [(g, a) for g, qs in enumerate(balanced) for a, q in enumerate(qs) if q.ndim == 3]
  inverses = dict(zip(tri, _by_shape(_inverse, [(balanced[g][a],) for g, a in tri])))
  steps, out = [], []
  for g, (qs, h, v) in enumerate(zip(balanced, hs, vs)):
    inv = [inverses[(g, a)] if q.ndim == 3 else 1 / q for a, q in enumerate(qs)]
    a_ = jax.vmap(apply_factors)(qs, h)
    b_ = jax.vmap(lambda f, x: apply_factors(f, x, transpose=True))(inv, v)
    new = []
    for a, q in enumerate(qs):
      diagonal = q.ndim == 2
      aa, bb = (jax.vmap(lambda x, a=a, d=diagonal: _gram(x, a, d))(x) for x in (a_, b_))
      if diagonal:
        mu = precond_lr / jnp.maximum(jnp.max(aa + bb, axis=1, keepdims=True), _TINY)
        new.append(q - mu * (aa - bb) * q)
      else:
        steps.append((q, aa, bb))
        new.append(len(steps) - 1)
    out.append(new)
  stepped = _by_shape(_triangular_step(precond_lr), steps)
  return [[stepped[q] if isinstance(q, int) else q for q in qs] for qs in out]


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
  qs: tuple          # per leaf (flattened order): a tuple of factors, (n, n) or (n,)


def scale_by_psgd_kron(b1: float = 0.9,
                       preconditioner_update_probability: Union[None, float, Callable] = None,
                       max_size_triangular: int = 8192, min_ndim_triangular: int = 2,
                       max_skew_triangular: Optional[float] = 2.0,
                       memory_save_mode: Optional[str] = None, precond_lr: float = 0.1,
                       precond_init_scale: float = 1.0, max_update_rms: Optional[float] = 1.1,
                       *, precond_dtype=None, state_dtype=None,
                       seed: int = 0) -> _base.GradientTransformation:
  r"""PSGD Kron (Li 2015, arXiv 1512.04202; Li 2024, "Stochastic Hessian fitting on Lie
  groups", arXiv 2402.11858): the momentum, preconditioned by a Kronecker-factored
  :math:`P = Q^\top Q` fitted to whiten it.

  .. math::
     m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad \hat m_t = m_t / (1 - \beta_1^t), \\
     \text{with probability } p(t):\ Q \leftarrow \mathrm{fit}(Q;\ \hat m_t + \delta z,\ v),
       \quad v, z \sim N(0, I), \\
     u_t = \mathrm{clip}_{\mathrm{rms}}\big(Q^\top Q\, \hat m_t\big), \quad
     \mathrm{clip}_{\mathrm{rms}}(u) = u \cdot \min\Big(1, \frac{\rho}{\mathrm{rms}(u)}\Big)

  per leaf, where ``fit`` is one Lie-group step of every factor (:func:`fit_factors`,
  normalised step size ``precond_lr``),
  :math:`\delta = \sqrt{\epsilon_{f32}} \cdot \mathrm{mean}|\hat m_t|` a small damping
  that keeps the fit well posed for rank-deficient momenta, and ρ = ``max_update_rms``.
  The factors are first rebalanced to equal norms (:func:`balance_factors`: same ``Q``).
  The fit's fixed point is :math:`P = E[\hat m \hat m^\top]^{-1/2}` (restricted to Kronecker
  products), so ``u`` has roughly unit RMS and the learning rate is an Adam-sized one.

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
      largest one gets a diagonal factor. 2.0 (default): a triangular factor then holds at
      most twice the leaf's size (:math:`n^2 \le 2 n m` for an ``n × m`` matrix, ``n`` the
      longer side), so an embedding's vocabulary axis or an MLP's ``4d`` axis is diagonal
      and the default state stays near Adam's size; ``None``: no limit (the reference
      implementation's default, a ``V × V`` factor for a vocabulary of ``V <= 8192``).
    memory_save_mode: ``None``, ``"one_diag"`` (the largest axis of each leaf diagonal)
      or ``"all_diag"`` (every factor diagonal: a fitted elementwise preconditioner).
    precond_lr: normalised step size μ of the fit, in [0, 1] (0.1: the reference's).
    precond_init_scale: s > 0: :math:`Q_0 = s^{1/k} I` per factor, so :math:`P_0 = s^2 I`
      (1.0).
    max_update_rms: ρ > 0 of the RMS clip of each leaf's update (1.1, as in the reference;
      ``None``: no clipping). It bounds the first steps, before ``P`` has adapted.
    precond_dtype: dtype of the factors (``None``: the state dtype policy, at least
      float32; ``jnp.bfloat16`` halves their memory, the fit still runs in float32).
    state_dtype: momentum dtype (``None``: the policy, at least float32, same kind).
    seed: an int >= 0, the PRNG seed of the probes and of the update draws; 0.

  The rule for diagonal factors, from the shape alone (:func:`factor_kinds`): an axis of
  size 1, longer than ``max_size_triangular``, more than ``max_skew_triangular`` times the
  second largest axis, every axis of a leaf with fewer than ``min_ndim_triangular`` axes,
  and those ``memory_save_mode`` names; every other axis gets a triangular factor. Leaves
  are padded to standard sizes and stacked for the computation (exactly: see the module
  docstring); the state keeps them unpadded.

  State: the momentum (4 bytes/param in float32) and :math:`\sum_i n_i^2` (triangular) or
  :math:`n_i` (diagonal) values per leaf. Real params only: complex leaves raise ``ValueError``.

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
  _validate.integer("seed", seed)
  _validate.dtype("precond_dtype", precond_dtype)
  _validate.dtype("state_dtype", state_dtype)
  probability = (update_probability_schedule() if preconditioner_update_probability is None
                 else preconditioner_update_probability)

  def kinds_of(x):
    return factor_kinds(jnp.shape(x), max_size_triangular, min_ndim_triangular,
                        max_skew_triangular, memory_save_mode)

  def q_dtype(x):
    return _tree.state_dtype_for(x, precond_dtype)

  def init_factors(x):
    shape, kinds = jnp.shape(x) or (1,), kinds_of(x)
    s = precond_init_scale ** (1.0 / len(kinds))
    return tuple(s * jnp.eye(n, dtype=q_dtype(x)) if tri else jnp.full((n,), s, q_dtype(x))
                 for n, tri in zip(shape, kinds))

  def init(params):
    _tree.check_real("scale_by_psgd_kron", params)
    leaves = jax.tree.leaves(params)
    return ScaleByPsgdKronState(
        count=jnp.zeros([], jnp.int32), key=jax.random.key_data(jax.random.key(seed)),
        mu=_tree.zeros_like(params, state_dtype),
        qs=tuple(init_factors(x) for x in leaves))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_real("scale_by_psgd_kron", updates)
    _tree.check_match("updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    mu = moments.ema(b1, state.mu, updates)
    g_leaves, treedef = jax.tree.flatten(updates)
    m_leaves = treedef.flatten_up_to(moments.debias(mu, b1, count))
    # keys[0]: the fit draw; keys[1], keys[2]: the probes v and z of every stack.
    keys = jax.random.split(jax.random.fold_in(state.key, state.count), 3)
    p = probability(state.count) if callable(probability) else probability
    do_fit = jax.random.uniform(keys[0]) < p

    layouts = [leaf_layout(jnp.shape(m), tuple(q.ndim == 2 for q in factors))
               for m, factors in zip(m_leaves, state.qs)]
    dtypes = [(jnp.dtype(factors[0].dtype),
               jnp.promote_types(jnp.promote_types(factors[0].dtype, m.dtype), jnp.float32))
              for factors, m in zip(state.qs, m_leaves)]
    groups = _groups(layouts, dtypes)
    # Per group: the momenta (B, *padded), zero on the padding, and per stack axis the padded
    # factors (B, P, P) or (B, P), identity on the padding.
    hs, fs = [], []
    for group in groups:
      dt = dtypes[group.members[0]][1]
      hs.append(jnp.stack([to_stack(m_leaves[j].astype(dt), layouts[j]) for j in group.members]))
      stacks = []
      for a, (size, mask) in enumerate(zip(group.padded, group.masks())):
        factors = [state.qs[j][layouts[j].perm[a]] for j in group.members]
        if mask is None:
          stacks.append(jnp.stack(factors))
        elif factors[0].ndim == 1:
          stacks.append(jnp.stack([pad_factor(q, size) for q in factors]))
        else:
          zero = [jnp.pad(q, ((0, size - q.shape[0]),) * 2) for q in factors]
          stacks.append(jnp.stack(zero) + _padding_identity(zero[0].dtype, size, mask == 0))
      fs.append(tuple(stacks))

    def fit(stacks):
      shapes = [h.shape for h in hs]
      dts = [h.dtype for h in hs]
      vs, zs = stack_noise(keys[1], shapes, dts), stack_noise(keys[2], shapes, dts)
      damped, probes, masks = [], [], []
      for group, h, v, z in zip(groups, hs, vs, zs):
        dt, ms = h.dtype, group.masks()
        full = _full_mask(ms, len(group.padded))
        if full is not None:
          v, z = v * full.astype(dt), z * full.astype(dt)
        axes = tuple(range(1, h.ndim))
        delta = _DAMPING * jnp.sum(jnp.abs(h), axis=axes) / group.numel().astype(dt)
        damped.append(h + delta.reshape((-1,) + (1,) * len(axes)) * z)
        probes.append(v)
        masks.append(ms)
      new = fit_stacks([[q.astype(h.dtype) for q in factors] for factors, h in zip(stacks, hs)],
                       damped, probes, precond_lr, masks)
      return tuple(tuple(n.astype(q.dtype) for n, q in zip(ns, factors))
                   for ns, factors in zip(new, stacks))

    fs = jax.lax.cond(do_fit, fit, lambda stacks: stacks, tuple(fs))
    out, qs = [None] * len(g_leaves), [None] * len(g_leaves)
    for group, h, factors in zip(groups, hs, fs):
      f = [q.astype(h.dtype) for q in factors]
      u = jax.vmap(lambda f, x: apply_factors(f, apply_factors(f, x), transpose=True))(f, h)
      if max_update_rms is not None:
        axes = tuple(range(1, u.ndim))
        rms = jnp.sqrt(jnp.sum(jnp.square(u), axis=axes) / group.numel().astype(u.dtype))
        scale = jnp.minimum(1.0, max_update_rms / (rms + 1e-12)).astype(u.dtype)
        u = u * scale.reshape((-1,) + (1,) * len(axes))
      for b, j in enumerate(group.members):
        lay = layouts[j]
        out[j] = from_stack(u[b], lay, jnp.shape(g_leaves[j])).astype(jnp.result_type(g_leaves[j]))
        real = [None] * len(lay.perm)
        for a, i in enumerate(lay.perm):
          real[i] = crop_factor(factors[a][b], lay.shape[i])
        qs[j] = tuple(real)
    return (jax.tree.unflatten(treedef, out),
            ScaleByPsgdKronState(count, state.key, mu, tuple(qs)))

  return _base.GradientTransformation(init, update)
