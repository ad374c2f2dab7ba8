r"""Orthogonalized updates: Muon, on the Newton–Schulz numerics of
``optix.transforms.newton_schulz``.

Muon replaces a weight matrix's momentum :math:`M = U S V^\top` by
(approximately) its polar factor :math:`U V^\top`: every singular direction
moves by the same amount. The polar factor is approximated by a few
matrix-only Newton–Schulz iterations.

Which axes of a leaf form the matrix is said by optax's
``MuonDimensionNumbers(reduction_axis, output_axis)``: the reduction (fan-in)
axes are flattened into rows, the output (fan-out) axes into columns, and every
other axis indexes independent matrices. Matrices of one shape are
orthogonalized together: all leaves (and all batch entries inside a leaf) whose
matrix has the same ``(rows, cols)`` -- up to a transpose -- are stacked into
one ``(B, m, n)`` array and handed to :func:`_orthogonalize_stack`, a single
batched computation. That one function is the unit of work that is split over
devices along ``B`` when :func:`scale_by_muon` is given a ``mesh``
(:func:`optix.map_stacked`).
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib import MuonDimensionNumbers

from optix import _base, _tree, _validate
from optix._sharding import (check_axis, explicit_spec, in_layout_of, map_owned, map_stacked,
                             replicated)
from optix.transforms.blocking import check_stacked_axes, stacked_of, standard_size
from optix.transforms.newton_schulz import (  # noqa: F401  (re-exported)
    DEFAULT_NS_COEFFS, DION_NS_COEFFS, NS_COEFFS_PRESETS, PRECONDITIONINGS,
    _iterate_dtype, _orthogonalize_stack, newton_schulz, ns_schedule)


# A MuonDimensionNumbers for every leaf, a tree of them (None: not a matrix), or
# a callable params -> such a tree.
WeightDimNumOrFn = Union[MuonDimensionNumbers, Any, Callable[[_base.Params], Any]]


def _is_dims(x) -> bool:
  return x is None or isinstance(x, MuonDimensionNumbers)


class _MatrixView(NamedTuple):
  """How one leaf, its axes put in (batch, reduction, output) order, is seen as a
  stack of ``count`` matrices ``(fan_in, fan_out)``."""
  count: int
  fan_in: int
  fan_out: int

  @property
  def wide(self):  # the (m, n), m <= n, shape the stack is orthogonalized in
    return (min(self.fan_in, self.fan_out), max(self.fan_in, self.fan_out))

  @property
  def transposed(self):
    return self.fan_in > self.fan_out


def _axes(dimension_numbers, ndim):
  def norm(axes):
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    return tuple(int(a) % ndim for a in axes)
  return norm(dimension_numbers.reduction_axis), norm(dimension_numbers.output_axis)


def matrix_layout(shape, dimension_numbers: Optional[MuonDimensionNumbers] = None):
  """``(perm, view)``: the axis order (batch, reduction, output) that puts a leaf
  of ``shape`` in matrix form, and its :func:`matrix_view`."""
  shape = tuple(shape)
  if dimension_numbers is None:
    if len(shape) != 2:
      raise ValueError(f"a leaf of shape {shape} is not a matrix: without dimension numbers "
                       "only 2-D leaves are; pass MuonDimensionNumbers for it")
    dimension_numbers = MuonDimensionNumbers()
  if len(shape) < 2:
    raise ValueError(f"a leaf of shape {shape} has no matrix view (needs rank >= 2)")
  red, out = _axes(dimension_numbers, len(shape))
  if set(red) & set(out) or not red or not out:
    raise ValueError(f"reduction axes {red} and output axes {out} must be disjoint and "
                     f"non-empty (shape {shape}, {dimension_numbers})")
  batch = tuple(a for a in range(len(shape)) if a not in red and a not in out)
  view = _MatrixView(math.prod(shape[a] for a in batch), math.prod(shape[a] for a in red),
                     math.prod(shape[a] for a in out))
  return batch + red + out, view


def matrix_view(shape, dimension_numbers: Optional[MuonDimensionNumbers] = None
                ) -> _MatrixView:
  """``(count, fan_in, fan_out)``: a leaf of ``shape`` as a stack of matrices.

  optax's rule: ``dimension_numbers`` (a ``MuonDimensionNumbers``) names the
  reduction (fan-in) axes, flattened into rows, and the output (fan-out) axes,
  flattened into columns; every other axis indexes independent matrices (e.g.
  stacked layers from ``nn.scan``), ``count`` of them. Negative axes count from
  the end. ``None`` accepts 2-D leaves only, as ``(rows, cols) = (in, out)``.
  So ``(in, out)`` is itself, a conv kernel ``(kh, kw, in, out)`` with
  ``MuonDimensionNumbers((0, 1, 2), 3)`` is ``(kh·kw·in, out)``, and
  ``(layers, in, out)`` with ``MuonDimensionNumbers(1, 2)`` is ``layers``
  matrices ``(in, out)``.

  Args:
    shape: the leaf's shape (a tuple of ints, rank >= 2).
    dimension_numbers: a ``MuonDimensionNumbers(reduction_axis, output_axis)``
      (ints or tuples of ints, disjoint and non-empty), or None: the leaf must be
      2-D (optax's default, ``MuonDimensionNumbers(0, 1)``).

  Returns:
    ``(count, fan_in, fan_out)``, a NamedTuple: the leaf is ``count`` matrices of
    ``fan_in`` rows (the product of the reduction sizes) and ``fan_out`` columns.
    Shape and RMS factors (:func:`optix.muon`) read ``fan_in`` and ``fan_out``.

  Raises:
    ValueError: rank < 2, overlapping or empty axis sets, or a non-2-D leaf
      without dimension numbers.
  """
  return matrix_layout(shape, dimension_numbers)[1]


def flax_dimension_numbers(stacked_axes=0):
  """Dimension numbers for flax-layout kernels, as a callable params -> tree.

  The first ``stacked_axes`` axes of a leaf index stacked layers; of the
  remaining axes the last is fan-out and the others fan-in, so conv kernels
  ``(..., in, out)`` are ``(prod(...)·in, out)`` matrices. Leaves with fewer
  than two remaining axes get ``None`` (not a matrix: :func:`optix.muon` sends
  them to AdamW). ``stacked_axes``: an int >= 0 for every leaf, a tree of ints
  like the params (or a prefix of them), or a callable params -> such a tree.
  Pass the result as ``muon_weight_dimension_numbers`` (or
  ``weight_dimension_numbers``).

  Args:
    stacked_axes: how many leading axes of each leaf index stacked layers: an
      int >= 0 for every leaf (0: none, the default, for plain flax modules), a
      tree of ints like the params (or a prefix of them), or a callable params ->
      such a tree (e.g. 1 for the kernels of an ``nn.scan``-ed block).

  Returns:
    A callable params -> a tree like the params of ``MuonDimensionNumbers``
    (reduction axes ``stacked_axes .. ndim-2``, output axis ``ndim-1``) or None.
  """
  check_stacked_axes(stacked_axes)

  def dims(params):
    ks = stacked_of(stacked_axes, params)
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [
        MuonDimensionNumbers(tuple(range(k, jnp.ndim(p) - 1)), jnp.ndim(p) - 1)
        if jnp.ndim(p) - k >= 2 else None for p, k in zip(leaves, ks)])
  return dims


def resolve_dimension_numbers(weight_dimension_numbers: WeightDimNumOrFn, tree) -> list:
  """One ``MuonDimensionNumbers`` (or None: the 2-D default) per leaf of ``tree``."""
  spec = (weight_dimension_numbers(tree) if callable(weight_dimension_numbers)
          else weight_dimension_numbers)
  n = len(jax.tree.leaves(tree))
  if spec is None or isinstance(spec, MuonDimensionNumbers):
    return [spec] * n
  out = jax.tree.leaves(jax.tree.map(
      lambda s, x: jax.tree.map(lambda _: _Box(s), x), spec, tree, is_leaf=_is_dims))
  return [b.value for b in out]


class _Box:
  """An opaque leaf (so a None or a NamedTuple survives ``jax.tree.leaves``)."""
  __slots__ = ("value",)

  def __init__(self, value):
    self.value = value


def _shape_scale(view: _MatrixView, consistent_rms):
  """optax.contrib.muon's shape factor: ``sqrt(max(1, fan_out/fan_in))`` (Jordan), or
  ``consistent_rms·sqrt(max(fan_in, fan_out))`` (Liu et al.)."""
  if consistent_rms is None:
    return math.sqrt(max(1.0, view.fan_out / view.fan_in))
  return math.sqrt(max(view.fan_in, view.fan_out)) * consistent_rms


def padded_shape(wide):
  """``(m, n)`` with each side rounded up to its standard size
  (:func:`optix.transforms.blocking.standard_size` without a cap: the next power of two up to
  128, the next multiple of 128 above), as the blocks of Shampoo, SOAP and PSGD are.

  A matrix zero-padded to this shape orthogonalizes to its own result padded with zeros:
  :math:`X = [G, 0; 0, 0]` has :math:`X X^H = [G G^H, 0; 0, 0]` and the same Frobenius,
  spectral and Schatten-4 norms as :math:`G`, and every Newton–Schulz step keeps the
  block structure (exact in exact arithmetic; in floating point the sums see extra zeros
  only). Distinct nearby shapes then share one stack, one compiled computation.
  """
  return tuple(standard_size(d) for d in wide)


def orthogonalize_leaves(leaves, views, orthogonalize_stack, pad=False):
  """Applies ``orthogonalize_stack`` once per group of same-shape matrices.

  ``leaves[i]`` (its axes already in (batch, reduction, output) order) is seen as
  ``views[i]``; matrices are transposed to wide form, grouped by ``(m, n)``,
  concatenated to ``(B, m, n)``, orthogonalized in one call, then split and put
  back in each leaf's shape. ``pad``: matrices are zero-padded to
  :func:`padded_shape` first where another shape pads to the same one, so nearby shapes
  share a group (and are sliced back after).
  Leaves sharded on an Explicit mesh (FSDP) are not gathered: each device orthogonalizes the whole matrices it owns
  (``optix._sharding.map_owned``: one all-to-all there and one back) and the
  results come back in the leaf's layout.
  """
  out = [None] * len(leaves)
  owned, units = {}, []  # units: (leaf index, view of one unit, arrays of that unit)
  for i, view in enumerate(views):
    spec = explicit_spec(leaves[i])
    if spec is None:
      continue
    x, k = leaves[i], _unsharded_stack_axes(leaves[i].shape, view.count, spec)
    if k is None:  # a sharded stacked axis: the whole leaf is one unit
      units.append((i, view, [x]))
    else:  # stacked layers on unsharded axes: each matrix is a unit of its own
      x = x.reshape((view.count,) + x.shape[k:]) if k != 1 else x
      units.append((i, view._replace(count=1), [x[j] for j in range(view.count)]))
  for u, (_, v, xs) in enumerate(units):
    owned.setdefault(v, []).extend((u, j) for j in range(len(xs)))
  results = {}
  for v, members in owned.items():
    def one(x, v=v):
      y = x.reshape((v.count, v.fan_in, v.fan_out))
      y = orthogonalize_stack(jnp.swapaxes(y, 1, 2) if v.transposed else y)
      return (jnp.swapaxes(y, 1, 2) if v.transposed else y).reshape(x.shape)
    for key, r in zip(members, map_owned(one, [units[u][2][j] for u, j in members])):
      results[key] = r
  for u, (i, _, xs) in enumerate(units):
    parts = [results[u, j] for j in range(len(xs))]
    out[i] = parts[0] if len(parts) == 1 and views[i].count == 1 else (
        jnp.stack(parts).reshape(leaves[i].shape))
  # A padded shape that only one exact shape maps to is not used: padding would add work
  # and change roundings without sharing a computation.
  rest = [i for i in range(len(views)) if out[i] is None]
  key = lambda i, wide: (wide, jnp.dtype(leaves[i].dtype))
  sharing = {}
  for i in rest if pad else ():
    sharing.setdefault(key(i, padded_shape(views[i].wide)), set()).add(views[i].wide)
  groups = {}
  for i in rest:
    wide = views[i].wide
    if pad and len(sharing[key(i, padded_shape(wide))]) > 1:
      wide = padded_shape(wide)
    groups.setdefault(key(i, wide), []).append(i)
  for ((pm, pn), _), members in groups.items():
    mats = []
    for i in members:
      v = views[i]
      x = replicated(leaves[i]).reshape((v.count, v.fan_in, v.fan_out))
      x = jnp.swapaxes(x, 1, 2) if v.transposed else x
      if x.shape[1:] != (pm, pn):
        x = jnp.pad(x, ((0, 0), (0, pm - x.shape[1]), (0, pn - x.shape[2])))
      mats.append(x)
    stack = mats[0] if len(mats) == 1 else jnp.concatenate(mats, axis=0)
    result = orthogonalize_stack(stack)
    offset = 0
    for i in members:
      v = views[i]
      m, n = v.wide
      x = result[offset:offset + v.count, :m, :n]
      offset += v.count
      x = (jnp.swapaxes(x, 1, 2) if v.transposed else x).reshape(leaves[i].shape)
      out[i] = in_layout_of(x, leaves[i])
  return out


def _unsharded_stack_axes(shape, count, spec):
  """``k`` such that the first ``k`` axes of ``shape`` hold the ``count`` stacked matrices
  and none of them is sharded in ``spec``; None when there is no such prefix."""
  entries = tuple(spec) + (None,) * (len(shape) - len(spec))
  size = 1
  for k in range(len(shape)):
    if size == count:
      return k if count > 1 and all(e is None for e in entries[:k]) else None
    size *= shape[k]
  return None


class ScaleByMuonState(NamedTuple):
  count: jax.Array    # int32, saturating
  mu: _base.Updates   # EMA of the gradients (mu_dtype; by default at least float32)


def check_flag(name, value):
  """``value`` is a bool (a string such as "width" must not pass as True)."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _bias_correction(beta, count, dtype):
  """``1 - beta**count`` in ``dtype`` (the real dtype of the momentum arithmetic)."""
  return 1 - jnp.asarray(beta, dtype) ** count.astype(dtype)


def scale_by_muon(ns_coeffs: Union[Sequence[float], Sequence[Sequence[float]], str]
                  = DEFAULT_NS_COEFFS,
                  ns_steps: int = 5, beta: float = 0.95, eps: float = 1e-8,
                  mu_dtype=None, *, nesterov: bool = True, adaptive: bool = False,
                  preconditioning: str = "frobenius",
                  weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
                  shape_scaling: bool = False, consistent_rms: Optional[float] = None,
                  compute_dtype=None, pad_shapes: bool = True, mesh=None, axis="data"
                  ) -> _base.GradientTransformation:
  r"""Muon's scaling: momentum, orthogonalized by Newton–Schulz (``optax.contrib.scale_by_muon``).

  With :math:`g_t` the gradient and :math:`t` the step (from 1):

  .. math::
     m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
     \hat m_t = \beta \frac{m_t}{1-\beta^{t+1}} + (1-\beta) \frac{g_t}{1-\beta^t}
     \ \text{(Nesterov)} \quad \text{or} \quad \frac{m_t}{1-\beta^t}, \\
     O_t = \mathrm{NS}(\hat m_t), \qquad
     u_t = O_t \ \text{or, with} \ \texttt{adaptive}, \
     \langle \hat m_t, O_t \rangle\, O_t \ (\text{the dual-norm step:}\
     \langle A, B \rangle = \textstyle\sum \bar A \odot B \ \text{over the leaf})

  where :math:`\mathrm{NS}` rescales each matrix view of :math:`\hat m_t`
  (``preconditioning``) and runs the quintic
  :math:`X \leftarrow a X + (b A + c A^2) X`, :math:`A = X X^H`, on it (on
  :math:`X^H` for tall matrices), approximating the polar factor :math:`U V^H`
  of :math:`\hat m_t = U S V^H`. With ``shape_scaling=True`` the update is then
  multiplied by :func:`optix.muon`'s shape factor :math:`s` (see below); optax's
  ``scale_by_muon`` has no shape factor, and neither has this one by default.

  Every leaf must have a matrix view (:func:`matrix_view`; without
  ``weight_dimension_numbers`` only 2-D leaves do): route biases, norms and
  scalars elsewhere (:func:`optix.muon` sends them to AdamW). All matrices of
  one shape (up to transpose) are orthogonalized as one batched computation.
  Complex leaves are supported (:math:`X^H` is the conjugate transpose).

  With a ``mesh``, each such stack of ``B`` matrices is padded to a multiple of
  the device count along ``axis``, split over those devices, orthogonalized with
  ``vmap`` on each device's ``B/N`` matrices and gathered
  (:func:`optix.map_stacked`: one all-gather per shape, no collectives inside
  the iterations; Jordan's distributed Muon does the same round-robin split).
  The result equals the unsplit one; each device does ~1/N of the
  Newton–Schulz flops. Gradients sharded on an Explicit mesh (FSDP) are never
  gathered, ``mesh`` or not: each device orthogonalizes the matrices it owns
  (round-robin over the matrices of one shape and layout) and only the results
  move back, two all-to-alls per group: 8 × (512×512) params sharded by rows
  over 8 devices move 0.25× the param bytes per device per step (gathering:
  2×). Works on Auto and Explicit meshes, under ``jit`` with sharded or
  replicated params; inside ``shard_map``/``pmap`` (manual axes) the split is
  skipped and every device computes all matrices.

  Args:
    ns_coeffs: the quintic's ``(a, b, c)``, used every iteration; or an
      ``(n, 3)`` table, one row per iteration (``n`` iterations run; ``n`` must
      be <= ``ns_steps``); or a preset name, "standard" (the default
      coefficients) or "dion" (Ahn et al.'s 5-row table). Default Jordan's
      (3.4445, -4.7750, 2.0315), which maximize the slope at 0 rather than
      converge (singular values land in about [0.7, 1.1] after 5 steps).
    ns_steps: Newton–Schulz iterations, an integer >= 0 (0: just the
      rescaling); 5 (Jordan). Ignored beyond that check for a table.
    beta: momentum decay, in [0, 1); 0.95 (Jordan).
    eps: added to the norm before Newton–Schulz ("frobenius", "spectral"), and
      the floor of the "aol"/"schatten" rescaling, >= 0; 1e-8, so a zero
      gradient gives a zero update.
    mu_dtype: the momentum's dtype; None: the params' dtype, at least float32
      (bf16 params keep float32 momentum; complex stays complex).
    nesterov: Nesterov look-ahead before orthogonalizing; True (Muon's).
    adaptive: multiply each leaf's update by :math:`\langle \hat m_t, O_t\rangle`,
      the dual norm of the momentum (Bernstein & Newhouse); False.
    preconditioning: how each matrix is rescaled before the iterations:
      "frobenius" (default: divide by the Frobenius norm, cheap and safe),
      "spectral" (by the largest singular value, an SVD: costly but the
      tightest), "aol" (the first iteration rescales rows by
      :math:`(\sum_j |A_{ij}|)^{-1/2}`, Boissin et al., arXiv 2512.04632: often
      saves an iteration) or "schatten" (divide by the Schatten-4 norm
      :math:`\|X X^H\|_F^{1/2}` in the first iteration, Grishina et al., arXiv
      2506.10935).
    weight_dimension_numbers: how each leaf is a matrix: a
      ``MuonDimensionNumbers`` for all leaves, a tree of them like the params
      (a prefix of it; ``None`` entries are 2-D leaves), or a callable
      updates -> such a tree. None: every leaf is a 2-D ``(in, out)`` matrix.
      :func:`flax_dimension_numbers` builds one for flax conv and stacked kernels.
    shape_scaling: (optix) multiply by :func:`optix.muon`'s shape factor; False
      (optax's scale_by_muon has none).
    consistent_rms: (optix) with ``shape_scaling``, the target update RMS
      :math:`r` of :math:`s = r \sqrt{\max(d_\text{in}, d_\text{out})}`, > 0;
      None: :math:`s = \sqrt{\max(1, d_\text{out}/d_\text{in})}`. Given without
      ``shape_scaling`` it raises ``ValueError``.
    compute_dtype: (optix) dtype of the Newton–Schulz matmul operands (e.g.
      ``jnp.bfloat16``, the usual choice on GPU/TPU); None: the iterate's
      dtype (optax's numbers). Accumulation is in the iterate's dtype.
    pad_shapes: (optix) zero-pad each side of a matrix's wide shape ``(m, n)`` to its
      standard size, the next power of two up to 128 and the next multiple of 128 above
      (:func:`padded_shape`), where a matrix of another shape pads to the same one, so
      that nearby shapes share one batched Newton–Schulz computation; True: a model of
      many distinct shapes compiles a few computations instead of one per shape (the
      compile time of the matrix optimizers then stops growing with the number of
      shapes). Exact in exact arithmetic, the same numbers up to float rounding. The
      padded matrices cost more flops: a side grows by less than 2× up to 128 and by
      at most 127 above, so large matrices are nearly free of it. A matrix whose padded
      shape no other shape shares, and a tree of one shape, keep their shape (optax's
      numbers bit for bit). False: one computation per exact shape. Leaves sharded on
      an Explicit mesh are not padded.
    mesh: (optix) a ``jax.sharding.Mesh`` to split the Newton–Schulz work over; None.
    axis: (optix) the mesh axis (or tuple of axes) to split over; "data".

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (kellerjordan.github.io/posts/muon);
    Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology", arXiv 2409.20325;
    Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982;
    Ahn et al., "Dion: Distributed Orthonormalized Updates", arXiv 2504.05295.
  """
  coeffs, traced_steps = ns_schedule(ns_coeffs, ns_steps)
  _validate.unit_interval("beta", beta)
  _validate.nonnegative("eps", eps)
  _validate.dtype("mu_dtype", mu_dtype)
  _validate.one_of("preconditioning", preconditioning, PRECONDITIONINGS)
  check_flag("shape_scaling", shape_scaling)
  check_flag("pad_shapes", pad_shapes)
  if consistent_rms is not None:
    if not shape_scaling:
      raise ValueError("consistent_rms must be None unless shape_scaling=True (it sets the "
                       f"RMS of the shape factor), got {consistent_rms!r}")
    _validate.positive("consistent_rms", consistent_rms)
  if compute_dtype is not None:
    _validate.dtype("compute_dtype", compute_dtype)
  check_axis(mesh, axis)

  def orthogonalize(stack):
    local = lambda s, e: _orthogonalize_stack(s, coeffs, e, preconditioning, compute_dtype,
                                              traced_steps, pad_shapes)
    manual = jax.sharding.AxisType.Manual in jax.sharding.get_abstract_mesh().axis_types
    if mesh is None or manual:
      return local(stack, eps)
    # eps as an argument: inject_hyperparams may trace it.
    return jnp.stack(map_stacked(lambda x, e: local(x[None], e)[0], list(stack), mesh, axis,
                                 args=(eps,)))

  def init(params):
    return ScaleByMuonState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, mu_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)

    def moment(g, m):  # in the wider of the two dtypes; stored in m's
      dt = jnp.promote_types(g.dtype, m.dtype)
      return (1 - beta) * g.astype(dt) + beta * m.astype(dt)
    mu = jax.tree.map(moment, updates, state.mu)

    def look_ahead(m, g):
      dt = _iterate_dtype(jnp.result_type(m, g))
      real = jnp.finfo(dt).dtype
      m, g = m.astype(dt), g.astype(dt)
      if nesterov:
        return (beta * (m / _bias_correction(beta, _tree.safe_increment(count), real))
                + (1 - beta) * (g / _bias_correction(beta, count, real)))
      return m / _bias_correction(beta, count, real)
    mu_hat = jax.tree.map(look_ahead, mu, updates)

    leaves, treedef = jax.tree.flatten(mu_hat)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(mu_hat)[0]]
    perms, views, canon = [], [], []
    for path, leaf, dims in zip(paths, leaves,
                                resolve_dimension_numbers(weight_dimension_numbers, mu_hat)):
      try:
        perm, view = matrix_layout(leaf.shape, dims)
      except ValueError as e:
        raise ValueError(f"scale_by_muon: leaf {path}: {e}; route non-matrix params to "
                         "another transform (optix.muon sends them to AdamW)") from None
      identity = perm == tuple(range(leaf.ndim))
      perms.append(None if identity else perm)
      views.append(view)
      canon.append(leaf if identity else jnp.transpose(leaf, perm))
    ortho = orthogonalize_leaves(canon, views, orthogonalize, pad=pad_shapes)
    ortho = [o if p is None else jnp.transpose(o, np.argsort(p)) for o, p in zip(ortho, perms)]
    if adaptive:
      ortho = [jnp.sum(jnp.conj(m) * o) * o for m, o in zip(leaves, ortho)]
    if shape_scaling:
      ortho = [o * _shape_scale(v, consistent_rms) for o, v in zip(ortho, views)]
    out = jax.tree.unflatten(treedef, ortho)
    mu = _tree.cast_like(mu, state.mu)
    return _tree.cast_like(out, updates), ScaleByMuonState(count, mu)

  return _base.GradientTransformation(init, update)
