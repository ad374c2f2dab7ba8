"""Orthogonalized updates: quintic Newton–Schulz and Muon.

Muon replaces a weight matrix's momentum ``M = U S Vᵀ`` by (approximately) its
polar factor ``U Vᵀ``: every singular direction moves by the same amount. The
polar factor is approximated by a few matrix-only Newton–Schulz iterations.

Matrices of one shape are orthogonalized together: all leaves (and all
stacked layers inside a leaf) whose matrix view has the same ``(rows, cols)``
-- up to a transpose -- are stacked into one ``(B, m, n)`` array and handed to
:func:`_orthogonalize_stack`, a single batched computation. That one function
is the unit of work that is split over devices along ``B`` when
:func:`scale_by_muon` is given a ``mesh`` (:func:`optix.map_stacked`).
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix._sharding import check_axis, explicit_spec, map_owned, map_stacked, replicated

DEFAULT_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
SHAPE_SCALINGS = ("width", "match_adamw_rms", "none")

StackedAxes = Union[int, Any, Callable[[_base.Params], Any]]


def _compute_dtype(compute_dtype):
  """``None`` = bf16 on accelerators, fp32 on CPU (bf16 NS is standard on
  GPU/TPU; fp32 is as fast as bf16 on most CPUs and exact)."""
  if compute_dtype is not None:
    return jnp.dtype(compute_dtype)
  return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)


def _matmul(a, b, contract_b, dtype):
  """``a @ b`` (``contract_b=1``) or ``a @ bᵀ`` (``contract_b=2``) batched on
  axis 0, operands in ``dtype``, accumulated and returned in float32."""
  dims = (((2,), (contract_b,)), ((0,), (0,)))
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), dims,
                             preferred_element_type=jnp.float32)


def _orthogonalize_stack(stack, coefficients=DEFAULT_COEFFICIENTS, steps=5, eps=1e-8,
                         compute_dtype=jnp.float32):
  r"""Quintic Newton–Schulz on a stack of wide matrices ``(B, m, n)``, ``m <= n``.

  .. math::
     X_0 = G / (\|G\|_F + \epsilon), \quad A_k = X_k X_k^\top, \quad
     X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

  Each singular value follows the scalar map ``s ↦ a s + b s³ + c s⁵``. The
  iterate is kept in float32; only the matmul operands are cast to
  ``compute_dtype``. Returns float32.
  """
  a, b, c = coefficients
  x = stack.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
  x = x / (norm + eps)
  for _ in range(steps):
    gram = _matmul(x, x, 2, compute_dtype)                       # A = X Xᵀ   (B, m, m)
    poly = b * gram + c * _matmul(gram, gram, 1, compute_dtype)  # bA + cA²
    x = a * x + _matmul(poly, x, 1, compute_dtype)
  return x


def newton_schulz(G: jax.Array, steps: int = 5,
                  coefficients: Sequence[float] = DEFAULT_COEFFICIENTS, eps: float = 1e-8,
                  compute_dtype=None) -> jax.Array:
  r"""Approximate polar factor ``U Vᵀ`` of ``G = U S Vᵀ`` by quintic Newton–Schulz.

  Batched over leading axes: ``G`` has shape ``(..., m, n)``. Each matrix is
  divided by its Frobenius norm (so every singular value is <= 1), tall ones are
  transposed (the iteration costs ``O(min(m,n)² max(m,n))``), then

  .. math:: X \leftarrow a X + (b\, X X^\top + c\, (X X^\top)^2) X

  is applied ``steps`` times. The default coefficients (Jordan 2024) maximize
  the slope at 0 (3.4445) rather than converge: after 5 steps singular values
  with ``σ/‖G‖_F >= 2.5e-3`` land in about [0.68, 1.13], not exactly at 1,
  which works as well for optimization and needs fewer steps. Zero singular
  values stay zero.

  Args:
    G: array of rank >= 2.
    steps: number of iterations (>= 0).
    coefficients: ``(a, b, c)`` of the quintic.
    eps: added to the Frobenius norm (>= 0), so ``G = 0`` gives 0.
    compute_dtype: matmul operand dtype; ``None`` = bf16 on GPU/TPU, fp32 on
      CPU. Accumulation is always float32.

  Returns:
    An array shaped like ``G`` in ``G``'s dtype.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (kellerjordan.github.io/posts/muon); Bernstein & Newhouse, "Old Optimizer,
    New Norm: An Anthology", arXiv 2409.20325.
  """
  _validate.integer("steps", steps, 0)
  coefficients = _check_coefficients(coefficients)
  _validate.nonnegative("eps", eps)
  if jnp.ndim(G) < 2:
    raise ValueError(f"G must have rank >= 2, got shape {jnp.shape(G)}")
  return _newton_schulz(G, steps, coefficients, float(eps), _compute_dtype(compute_dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _newton_schulz(G, steps, coefficients, eps, compute_dtype):
  *batch, m, n = G.shape
  x = G.reshape((math.prod(batch), m, n))
  if m > n:
    x = jnp.swapaxes(x, -1, -2)
  x = _orthogonalize_stack(x, coefficients, steps, eps, compute_dtype)
  if m > n:
    x = jnp.swapaxes(x, -1, -2)
  return x.reshape(G.shape).astype(G.dtype)


def _check_coefficients(coefficients):
  coefficients = tuple(coefficients)
  if len(coefficients) != 3:
    raise ValueError(f"coefficients must be 3 numbers (a, b, c), got {coefficients!r}")
  for name, v in zip("abc", coefficients):
    _validate.finite(f"coefficients[{'abc'.index(name)}]", v)
  return tuple(float(v) for v in coefficients)


class _MatrixView(NamedTuple):
  """How one leaf is seen as a stack of ``count`` matrices ``(fan_in, fan_out)``."""
  count: int
  fan_in: int
  fan_out: int

  @property
  def wide(self):  # the (m, n), m <= n, shape the stack is orthogonalized in
    return (min(self.fan_in, self.fan_out), max(self.fan_in, self.fan_out))

  @property
  def transposed(self):
    return self.fan_in > self.fan_out


def matrix_view(shape, stacked_axes: int = 0) -> _MatrixView:
  """The documented reshape rule, for a leaf of ``shape``.

  The first ``stacked_axes`` axes index independent matrices (stacked layers,
  e.g. from ``nn.scan``); of the remaining axes the **last is fan-out** and all
  others are flattened into **fan-in** (flax layout). So a dense kernel
  ``(in, out)`` is itself, a conv kernel ``(kh, kw, in, out)`` becomes
  ``(kh·kw·in, out)``, and ``(layers, in, out)`` with ``stacked_axes=1`` is
  ``layers`` matrices ``(in, out)``. At least two axes must remain.
  """
  shape = tuple(shape)
  if len(shape) - stacked_axes < 2:
    raise ValueError(f"a leaf of shape {shape} with stacked_axes={stacked_axes} has no matrix "
                     "view (needs >= 2 non-stacked axes)")
  return _MatrixView(math.prod(shape[:stacked_axes]), math.prod(shape[stacked_axes:-1]),
                     shape[-1])


def resolve_stacked_axes(stacked_axes: StackedAxes, tree) -> list:
  """``stacked_axes`` (an int, a tree of ints like ``tree``, or a callable
  tree -> such a tree) as a list of ints, one per leaf of ``tree``."""
  n = len(jax.tree.leaves(tree))
  if isinstance(stacked_axes, int):
    return [stacked_axes] * n
  spec = stacked_axes(tree) if callable(stacked_axes) else stacked_axes
  return [int(v) for v in broadcast_leaves(spec, tree)]


def broadcast_leaves(spec, tree) -> list:
  """One value per leaf of ``tree`` from ``spec``, a tree whose structure is a
  prefix of ``tree``'s (each spec leaf covers the whole matching subtree)."""
  return jax.tree.leaves(jax.tree.map(lambda s, x: jax.tree.map(lambda _: s, x), spec, tree))


def _shape_scale(view: _MatrixView, shape_scaling: str, rms_scale: float) -> float:
  if shape_scaling == "width":
    return math.sqrt(max(1.0, view.fan_out / view.fan_in))
  if shape_scaling == "match_adamw_rms":
    return rms_scale * math.sqrt(max(view.fan_in, view.fan_out))
  return 1.0


def orthogonalize_leaves(leaves, views, orthogonalize_stack):
  """Applies ``orthogonalize_stack`` once per group of same-shape matrices.

  ``leaves[i]`` is seen as ``views[i]``; matrices are transposed to wide form,
  grouped by ``(m, n)``, concatenated to ``(B, m, n)``, orthogonalized in one
  call, then split and put back in each leaf's shape. Returns float32 leaves.
  Leaves sharded on an Explicit mesh (FSDP) are not gathered: each device
  orthogonalizes the whole leaves it owns (``optix._sharding.map_owned``: one all-to-all
  there and one back) and the results come back in the leaf's layout.
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
  groups = {}
  for i, view in enumerate(views):
    if out[i] is None:
      groups.setdefault(view.wide, []).append(i)
  for (m, n), members in groups.items():
    mats = []
    for i in members:
      v = views[i]
      x = replicated(leaves[i]).reshape((v.count, v.fan_in, v.fan_out))
      mats.append(jnp.swapaxes(x, 1, 2) if v.transposed else x)
    stack = mats[0] if len(mats) == 1 else jnp.concatenate(mats, axis=0)
    result = orthogonalize_stack(stack)
    offset = 0
    for i in members:
      v = views[i]
      x = result[offset:offset + v.count]
      offset += v.count
      x = (jnp.swapaxes(x, 1, 2) if v.transposed else x).reshape(leaves[i].shape)
      spec = explicit_spec(leaves[i])
      out[i] = x if spec is None else jax.sharding.reshard(x, spec)  # back to the leaf's layout
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
  mu: _base.Updates   # EMA of the gradients, float32 by default


def scale_by_muon(beta: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                  ns_coefficients: Sequence[float] = DEFAULT_COEFFICIENTS, eps: float = 1e-8,
                  shape_scaling: str = "width", rms_scale: float = 0.2,
                  stacked_axes: StackedAxes = 0, compute_dtype=None, mu_dtype=None, *,
                  state_dtype=jnp.float32, mesh=None, axis="data"
                  ) -> _base.GradientTransformation:
  r"""Muon's scaling: momentum, orthogonalized by Newton–Schulz, shape-scaled.

  .. math::
     m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
     \hat m_t = \frac{\beta\, m_t}{1-\beta^{t+1}} + \frac{(1-\beta)\, g_t}{1-\beta^t}
     \ \text{(Nesterov)} \ \text{or} \ \frac{m_t}{1-\beta^t}, \\
     u_t = s \cdot \mathrm{NS}_5(\hat m_t), \qquad
     s = \sqrt{\max(1, d_\text{out}/d_\text{in})} \ \text{("width")} \ \text{or} \
     0.2\sqrt{\max(d_\text{in}, d_\text{out})} \ \text{("match_adamw_rms")}

  (the bias-corrected Nesterov form is optax's; after the Frobenius
  normalization in NS only the *mix* of ``m_t`` and ``g_t`` matters). With
  flax's ``(in, out)`` kernels, "width" is ``sqrt(max(1, cols/rows))`` -- the
  ``sqrt(max(1, rows/cols))`` of PyTorch's ``(out, in)`` layout. "match_adamw_rms"
  (Liu et al. 2025) gives updates AdamW's typical RMS ≈ 0.2, so AdamW learning
  rates and weight decay carry over. β = 0.95 and 5 steps are Jordan's defaults.

  Every leaf must have a matrix view (see :func:`matrix_view`: conv kernels
  ``(..., in, out)`` -> ``(prod(...)·in, out)``; ``stacked_axes`` leading axes
  are independent layers). Route biases, norms, embeddings and heads elsewhere
  (:func:`optix.muon` does). All matrices of one shape (up to transpose) are
  orthogonalized as one batched computation.

  With a ``mesh``, each such stack of ``B`` matrices is padded to a multiple of
  the device count along ``axis``, split over those devices, orthogonalized with
  ``vmap`` on each device's ``B/N`` matrices and gathered
  (:func:`optix.map_stacked`: one all-gather per shape, no collectives inside
  the iterations; Jordan's distributed Muon does the same round-robin split).
  The result equals the unsplit one; each device does ~1/N of the
  Newton–Schulz flops. Gradients sharded on an Explicit mesh (FSDP) are never
  gathered, ``mesh`` or not: each device orthogonalizes the matrices it owns
  (round-robin over the matrices of one shape and layout) and only the results move
  back, two all-to-alls per group: 8 × (512×512) params sharded by rows over 8
  devices move 0.25× the param bytes per device per step (gathering: 2×).
  Works on Auto and Explicit meshes, under ``jit`` with
  sharded or replicated params; inside ``shard_map``/``pmap`` (manual axes)
  the split is skipped and every device computes all matrices.

  Args:
    beta: momentum decay in [0, 1).
    nesterov: look-ahead momentum (default, as in Muon).
    ns_steps: Newton–Schulz iterations (>= 1).
    ns_coefficients: quintic coefficients ``(a, b, c)``.
    eps: added to the Frobenius norm in NS (>= 0).
    shape_scaling: "width" (default), "match_adamw_rms" or "none".
    rms_scale: the target RMS for "match_adamw_rms" (> 0), 0.2 by default.
    stacked_axes: leading axes that index stacked layers: an int for every
      leaf, a tree of ints like the params, or a callable params -> that tree.
    compute_dtype: NS matmul operands; ``None`` = bf16 on GPU/TPU, fp32 on CPU.
    mu_dtype: optax-compatible name for the momentum dtype (overrides ``state_dtype``).
    state_dtype: momentum dtype, float32 by default whatever the params.
    mesh: optional ``jax.sharding.Mesh`` to split the Newton–Schulz work over.
    axis: the mesh axis (or tuple of axes) to split over, "data" by default.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024;
    Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982;
    Bernstein & Newhouse, arXiv 2409.20325.
  """
  _validate.unit_interval("beta", beta)
  _validate.integer("ns_steps", ns_steps, 1)
  coefficients = _check_coefficients(ns_coefficients)
  _validate.nonnegative("eps", eps)
  _validate.one_of("shape_scaling", shape_scaling, SHAPE_SCALINGS)
  _validate.positive("rms_scale", rms_scale)
  if isinstance(stacked_axes, int):
    _validate.integer("stacked_axes", stacked_axes, 0)
  dtype = mu_dtype or state_dtype
  check_axis(mesh, axis)

  def orthogonalize(stack):
    local = lambda s, e: _orthogonalize_stack(s, coefficients, ns_steps, e,
                                              _compute_dtype(compute_dtype))
    manual = jax.sharding.AxisType.Manual in jax.sharding.get_abstract_mesh().axis_types
    if mesh is None or manual:
      return local(stack, eps)
    # eps as an argument: inject_hyperparams may trace it.
    return jnp.stack(map_stacked(lambda x, e: local(x[None], e)[0], list(stack), mesh, axis,
                                 args=(eps,)))

  def init(params):
    _tree.check_real("scale_by_muon", params)
    return ScaleByMuonState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_real("scale_by_muon", updates)
    _tree.check_match("updates", updates, "state.mu", state.mu)
    count = _tree.safe_increment(state.count)
    mu = jax.tree.map(lambda g, m: beta * m + (1 - beta) * g.astype(m.dtype), updates, state.mu)
    t = count.astype(jnp.float32)
    if nesterov:
      t_next = _tree.safe_increment(count).astype(jnp.float32)
      mu_hat = jax.tree.map(
          lambda m, g: (beta / (1 - beta ** t_next)) * m.astype(jnp.float32)
          + ((1 - beta) / (1 - beta ** t)) * g.astype(jnp.float32), mu, updates)
    else:
      mu_hat = jax.tree.map(lambda m: m.astype(jnp.float32) / (1 - beta ** t), mu)

    leaves, treedef = jax.tree.flatten(mu_hat)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(mu_hat)[0]]
    views = []
    for path, leaf, k in zip(paths, leaves, resolve_stacked_axes(stacked_axes, mu_hat)):
      try:
        views.append(matrix_view(leaf.shape, k))
      except ValueError as e:
        raise ValueError(f"scale_by_muon: leaf {path}: {e}; route non-matrix params to "
                         "another transform (optix.muon sends them to AdamW)") from None
    ortho = orthogonalize_leaves(leaves, views, orthogonalize)
    ortho = [x * _shape_scale(v, shape_scaling, rms_scale) for x, v in zip(ortho, views)]
    out = jax.tree.unflatten(treedef, ortho)
    return _tree.cast_like(out, updates), ScaleByMuonState(count, mu)

  return _base.GradientTransformation(init, update)
