r"""The stacked layout of PSGD Kron (:mod:`optix.transforms.psgd`): leaves padded to standard
sizes and stacked across the tree, so that the fit and the preconditioning are traced once per
padded layout and the per-matrix work once per factor size, not once per leaf shape.

A leaf's axes are reordered largest first and each is zero-padded to :func:`padded_size`
(:func:`leaf_layout`, :func:`to_stack`); leaves of one padded layout and factor kinds form one
stack ``(B, P_1, ..., P_k)`` (:class:`Stack`, :func:`stacks_of`) with factors ``(B, P, P)``
(triangular) or ``(B, P)`` (diagonal). The padding is exact: a factor is
:math:`\mathrm{diag}(Q_i, I)` (:func:`pad_factor`) and the momentum and the probes are zero on the
padded coordinates, so :math:`A = Q h` and :math:`B = Q^{-\top} v` vanish there, the Gram
matrices are :math:`\mathrm{diag}(G, 0)`, and the Lie-group step of
:func:`optix.transforms.psgd.fit_factors` leaves the identity block fixed and takes exactly the
unpadded step on the real block (the norms of the step and of the balancing are taken over
the real block: :func:`mask_stack`, :func:`real_max_abs`, :func:`real_scale`). The
per-stack algebra is batched over the members (:func:`apply_axis`, :func:`gram`) and the
per-factor work over the stacks (:func:`concat`, :func:`split`, :func:`balance_scales`).
"""

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optix.transforms import blocking, moments

_HI = jax.lax.Precision.HIGHEST


def padded_size(n: int) -> int:
  """The standard size an axis of length ``n`` is zero-padded to in the stacks: the next power
  of two up to 128, the next multiple of 128 above
  (:func:`optix.transforms.blocking.standard_size` without a cap).

  Args:
    n: the axis length, an int >= 1.

  Returns:
    An int >= ``n``.
  """
  return blocking.standard_size(n)


class LeafLayout(NamedTuple):
  """Where one leaf (or one slice of a leaf with stacked axes) sits in its stack (static
  Python values)."""
  shape: tuple   # the leaf's shape, (1,) for a scalar
  kinds: tuple   # per axis of ``shape``: True for a triangular factor
  perm: tuple    # the stack's axis order: the leaf's axes by padded size, largest first
  padded: tuple  # per stack axis (``perm`` order): the padded length
  complex: bool = False  # a complex leaf: complex factors, in a stack of complex leaves only


def leaf_layout(shape: Sequence[int], kinds: Sequence[bool],
                is_complex: bool = False) -> LeafLayout:
  """The stack layout of a leaf: its axes reordered by padded size (largest first, triangular
  before diagonal on ties), each zero-padded to :func:`padded_size`. Leaves with the same
  padded sizes, factor kinds and field (real or complex) share one stack whatever their real
  sizes and axis order.

  Args:
    shape: the leaf's shape (``()`` for a scalar); for a leaf with stacked axes, the shape of
      one slice.
    kinds: per axis, True for a triangular factor (:func:`factor_kinds`).
    is_complex: whether the leaf is complex (False, default).

  Returns:
    A :class:`LeafLayout`.
  """
  shape = tuple(shape) or (1,)
  sizes = [padded_size(n) for n in shape]
  perm = tuple(sorted(range(len(shape)), key=lambda i: (-sizes[i], not kinds[i], i)))
  return LeafLayout(shape, tuple(kinds), perm, tuple(sizes[i] for i in perm), bool(is_complex))


def to_stack(x: jax.Array, layout: LeafLayout) -> jax.Array:
  """A leaf in its stack layout: axes in ``layout.perm`` order, zero-padded to
  ``layout.padded`` (one member of :func:`slices_to_stack`)."""
  return slices_to_stack(x, layout, 1)[0]


def from_stack(x: jax.Array, layout: LeafLayout, shape: Sequence[int]) -> jax.Array:
  """Inverse of :func:`to_stack`: drops the padding, restores the axis order and ``shape``."""
  return slices_from_stack(x[None], layout, shape)


def slices_to_stack(x: jax.Array, layout: LeafLayout, count: int) -> jax.Array:
  """A leaf with stacked axes as ``count`` consecutive stack members ``(count, *padded)``:
  :func:`to_stack` on each slice (``layout`` is a slice's), in row-major order of the stacked
  axes."""
  x = jnp.transpose(x.reshape((count,) + layout.shape), (0,) + tuple(i + 1 for i in layout.perm))
  pad = [(0, 0)] + [(0, p - n) for n, p in zip(x.shape[1:], layout.padded)]
  return jnp.pad(x, pad) if any(hi for _, hi in pad) else x


def slices_from_stack(x: jax.Array, layout: LeafLayout, shape: Sequence[int]) -> jax.Array:
  """Inverse of :func:`slices_to_stack`: ``(count, *padded)`` members back to the leaf of
  ``shape``."""
  real = tuple(layout.shape[i] for i in layout.perm)
  if tuple(x.shape[1:]) != real:
    x = x[(slice(None),) + tuple(slice(0, n) for n in real)]
  return jnp.transpose(x, (0,) + tuple(int(i) + 1 for i in np.argsort(layout.perm))).reshape(shape)


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


class Stack(NamedTuple):
  """Leaves of one padded layout and factor kinds: one stack ``(B, *padded)``."""
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
    """``(B,)``: each member's number of real entries (at least 1: an empty leaf gets 0/1)."""
    return np.array([max(np.prod(r, dtype=np.int64), 1) for r in self.real], np.float32)


def stacks_of(layouts) -> tuple:
  """The stacks: leaves of one padded layout, factor kinds and field (real or complex), in
  order of first appearance."""
  groups = {}
  for j, lay in enumerate(layouts):
    groups.setdefault((lay.padded, tuple(lay.kinds[i] for i in lay.perm), lay.complex),
                      []).append(j)
  return tuple(Stack(padded, kinds, tuple(idx),
                      tuple(tuple(layouts[j].shape[i] for i in layouts[j].perm) for j in idx))
               for (padded, kinds, _), idx in groups.items())


def leaf_factors(qs: Sequence[Sequence[jax.Array]], shapes: Sequence[Sequence[int]],
                 kinds: Sequence[Sequence[bool]],
                 complex_leaves: Optional[Sequence[bool]] = None) -> list:
  """Each leaf's unpadded factors, read from the stacked state of :func:`scale_by_psgd_kron`.

  A leaf with stacked axes counts as its slices, each a leaf of the slice's shape, in
  row-major order of the stacked axes (a ``(3, m, n)`` leaf with ``stacked_axes=1``: three
  ``(m, n)`` entries in ``shapes``).

  Args:
    qs: ``ScaleByPsgdKronState.qs``: per stack, per stack axis, the padded factors.
    shapes: the leaves' (or slices') shapes, in flattened order.
    kinds: per leaf, its factor kinds (:func:`factor_kinds` with the transform's rule).
    complex_leaves: per leaf, whether it is complex; None (default): all real.

  Returns:
    Per leaf, a list of its factors in axis order: ``(n_i, n_i)`` or ``(n_i,)``.
  """
  complex_leaves = [False] * len(shapes) if complex_leaves is None else complex_leaves
  layouts = [leaf_layout(s, k, c) for s, k, c in zip(shapes, kinds, complex_leaves)]
  out = [None] * len(layouts)
  for group, stacks in zip(stacks_of(layouts), qs):
    for b, j in enumerate(group.members):
      lay, real = layouts[j], [None] * len(layouts[j].perm)
      for a, i in enumerate(lay.perm):
        real[i] = crop_factor(stacks[a][b], lay.shape[i])
      out[j] = real
  return out


def mask_stack(x: jax.Array, masks: Sequence) -> jax.Array:
  """``x`` ``(B, P_1, ..., P_k)`` zeroed on the padding: multiplied by each axis's ``(B, P_i)``
  mask in turn (None: that axis has no padding), never by their ``(B, P_1, ..., P_k)``
  product, which XLA would fold into a constant of the stack's size."""
  for a, m in enumerate(masks):
    if m is not None:
      shape = (m.shape[0],) + tuple(m.shape[1] if i == a else 1 for i in range(x.ndim - 1))
      x = x * jnp.asarray(m, x.dtype).reshape(shape)
  return x


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
  r"""``N(0, I)`` arrays of the given shapes and dtypes from one draw per dtype
  (:func:`gaussian`): the arrays of one dtype are consecutive pieces of a single flat draw
  (from ``key`` for the first dtype, ``fold_in(key, d)`` for the ``d``-th other), so a
  step's probes cost one random-number kernel however many stacks there are. A complex
  dtype gets circular complex Gaussians, :math:`(x + i y)/\sqrt 2` with ``x``, ``y`` the
  first and second halves of a real draw of twice the length: :math:`E[v v^H] = I`,
  :math:`E[v v^\top] = 0`.

  Args:
    key: a PRNG key (typed or raw ``uint32[2]``).
    shapes: the arrays' shapes, in order.
    dtypes: their floating or complex dtypes, in order.

  Returns:
    A list of arrays, one per shape.
  """
  out = [None] * len(shapes)
  order = list(dict.fromkeys(jnp.dtype(d) for d in dtypes))
  for d, dt in enumerate(order):
    idx = [i for i, t in enumerate(dtypes) if jnp.dtype(t) == dt]
    sizes = [int(np.prod(shapes[i], dtype=np.int64)) for i in idx]
    k = key if d == 0 else jax.random.fold_in(key, d)
    if jnp.issubdtype(dt, jnp.complexfloating):
      n = sum(sizes)
      pair = gaussian(k, 2 * n, jnp.finfo(dt).dtype) * math.sqrt(0.5)
      flat = jax.lax.complex(pair[:n], pair[n:]).astype(dt)
    else:
      flat = gaussian(k, sum(sizes), dt)
    cuts = [int(c) for c in np.cumsum(sizes)[:-1]]
    for i, part in zip(idx, jnp.split(flat, cuts) if cuts else [flat]):
      out[i] = part.reshape(shapes[i])
  return out


def apply_axis(q: jax.Array, x: jax.Array, axis: int, transpose: bool = False,
               divide: bool = False) -> jax.Array:
  r"""Each member's factor on one axis of a stack: :math:`Q_i` (or :math:`Q_i^H`, the
  transpose for real factors) on axis ``axis`` of ``x``, as
  :func:`optix.transforms.psgd.apply_factors` does per leaf. A matrix
  factor is one batched dot, ``Q`` first on the first axis and ``x`` first on the last, so
  the result needs no transpose there (only a middle axis of a 3-D or larger leaf is moved).

  Args:
    q: ``(B, P, P)`` matrices or ``(B, P)`` diagonals.
    x: ``(B, P_1, ..., P_k)`` with ``P_axis = P``.
    axis: the stack axis, in ``1..k``.
    transpose: apply :math:`Q_i^H` (:math:`Q_i^\top` for real ones) instead of :math:`Q_i`.
    divide: for diagonal factors, apply :math:`Q_i^{-1}` (divide by them) instead.

  Returns:
    An array of ``x``'s shape.
  """
  if q.ndim == 2:
    q = q.reshape(q.shape[:1] + tuple(-1 if i == axis else 1 for i in range(1, x.ndim)))
    return x / q if divide else x * q
  if transpose and jnp.issubdtype(q.dtype, jnp.complexfloating):
    q = jnp.conj(q)
  contract = 1 if transpose else 2   # the axis of q summed against x's
  batch = ((0,), (0,))
  if axis == x.ndim - 1 and x.ndim > 2:
    return jax.lax.dot_general(x, q, (((axis,), (contract,)), batch), precision=_HI)
  y = jax.lax.dot_general(q, x, (((contract,), (axis,)), batch), precision=_HI)
  return y if axis == 1 else jnp.moveaxis(y, 1, axis)


def gram(x: jax.Array, axis: int, diagonal: bool) -> jax.Array:
  """Each member's ``X_(i) X_(i)ᴴ`` of a stack ``x`` ``(B, P_1, ..., P_k)``: the contraction
  with its conjugate over every stack axis but ``axis`` (``(B, P, P)``, Hermitian), or only
  its diagonal (``(B, P)``, real: the sums of ``|x|²``)."""
  others = tuple(i for i in range(1, x.ndim) if i != axis)
  if diagonal:
    return jnp.sum(moments.abs_sq(x), axis=others)
  y = jnp.conj(x) if jnp.issubdtype(x.dtype, jnp.complexfloating) else x
  return jax.lax.dot_general(x, y, ((others, others), ((0,), (0,))), precision=_HI)


def balance_scales(norms: jax.Array, leaves: np.ndarray) -> jax.Array:
  r"""The rescalings :func:`optix.transforms.psgd.balance_factors` applies, for the factors of
  many leaves at once: factor ``f`` of a leaf with factor norms :math:`n_1, \dots, n_k` is
  multiplied by :math:`(\prod_j n_j)^{1/k} / n_f`; by 1 when the leaf has a single factor or
  a zero or non-finite norm.

  Args:
    norms: ``(F,)``, the max-abs of every factor (of its real block).
    leaves: a static ``(L, k_max)`` int array: per leaf, the positions in ``norms`` of its
      factors, -1 after the last.

  Returns:
    ``(F,)``: each factor's rescaling.
  """
  k = np.sum(leaves >= 0, axis=1)
  per_leaf = jnp.concatenate([norms, jnp.ones((1,), norms.dtype)])[leaves]  # -1: a 1
  ok = jnp.all(jnp.isfinite(per_leaf) & (per_leaf > 0), axis=1, keepdims=True)
  safe = jnp.where(ok, per_leaf, 1.0)
  gmean = jnp.exp(jnp.sum(jnp.log(safe), axis=1, keepdims=True) / k[:, None])
  scale = jnp.where((k >= 2)[:, None], gmean / safe, 1.0)
  where = np.argsort(np.where(leaves >= 0, leaves, norms.shape[0]), axis=None, kind="stable")
  return scale.reshape(-1)[where[:norms.shape[0]]]


def real_max_abs(q, m):
  """Per member, the max-abs of the real block of padded factors ``(N, P, P)`` or ``(N, P)``
  (``m``: their ``(N, P)`` mask, None without padding): a real row's max, as the coupling
  blocks are zero. Real (the moduli) for complex factors."""
  r = jnp.abs(q) if q.ndim == 2 else jnp.max(jnp.abs(q), axis=2)
  return jnp.max(r if m is None else r * jnp.asarray(m, r.dtype), axis=1)


def real_scale(s, m, dtype):
  """``(N, P)`` row scales: ``s`` on the real coordinates, 1 on the padding."""
  return (s[:, None] if m is None else jnp.where(jnp.asarray(m) > 0, s[:, None], 1)).astype(dtype)


def concat(parts: Sequence, shapes: Optional[Sequence[tuple]] = None):
  """``parts`` concatenated on axis 0; numpy when every part is numpy (a static mask stays a
  constant of the program). With ``shapes``, None parts are masks without padding: all ones
  of that shape, and the result is None when every part is."""
  if shapes is not None:
    if all(p is None for p in parts):
      return None
    parts = [np.ones(s, np.float32) if p is None else p for p, s in zip(parts, shapes)]
  if len(parts) == 1:
    return parts[0]
  if all(isinstance(p, np.ndarray) for p in parts):
    return np.concatenate(parts)
  return jnp.concatenate([jnp.asarray(p) for p in parts])


def split(x: jax.Array, sizes: Sequence[int]) -> list:
  """``x`` cut on axis 0 into consecutive pieces of the given lengths."""
  if len(sizes) == 1:
    return [x]
  return jnp.split(x, [int(c) for c in np.cumsum(sizes)[:-1]])
