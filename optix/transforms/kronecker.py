"""Kronecker-factored preconditioners: Shampoo and SOAP, and inverse p-th roots.

A tensor gradient ``G`` of rank ``k`` keeps one statistic per axis,
``L_i = Σ_t G_(i) G_(i)ᵀ`` (``G_(i)``: ``G`` unfolded along axis ``i``), and is
preconditioned axis by axis. Three shape rules keep the statistics small:

* size-1 axes are dropped and, with ``merge_small_dims``, adjacent axes are merged
  while their product stays ``<= block_size`` and at least two axes remain (a
  3×3×64×128 conv kernel becomes 576×128; a matrix stays a matrix);
* an axis longer than ``block_size`` is cut into equal blocks (zero-padded), each
  block getting its own statistics -- a block-diagonal approximation;
* an axis longer than ``max_preconditioner_dim`` gets no statistic (identity,
  "left diagonal"); a tensor with no preconditioned axis is updated by the graft
  alone (Shampoo) or by plain Adam (SOAP).

A leaf's gradient is viewed as a stack of blocks ``(N, b_1, ..., b_k)``; all
statistics of one size (across blocks, axes and leaves) are concatenated and the
expensive per-matrix work -- inverse roots, ``eigh``, ``QR`` -- runs once per
size on a ``(B, n, n)`` stack (:func:`apply_by_shape`); with ``mesh=`` the
``B`` matrices are split over the devices of a mesh axis instead
(:func:`refresh_by_shape`, :func:`optix.map_stacked`).

On an Explicit-mode mesh, sharded gradient leaves are gathered before they are cut
into blocks (the Kronecker statistics are small and replicated) and each update is
resharded like its leaf.
"""

import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix.parallel import check_axis, explicit_spec, map_stacked, replicated
from optix.transforms.adaptive import debias

_HI = jax.lax.Precision.HIGHEST
GRAFTS = ("adam", "rmsprop", "adagrad")
ROOT_METHODS = ("eigh", "newton")


# ------------------------------------------------------------------ inverse roots

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


def apply_by_shape(fn: Callable, *stacks: Sequence[jax.Array], after: Any = None) -> list:
  """Applies ``fn`` once per shape to concatenated stacks, one shape after another.

  ``stacks``: one or more lists of arrays ``(N_j, n, n)`` (same shapes at the
  same index). Arrays of one shape are concatenated along axis 0, ``fn`` maps
  the ``(B, n, n)`` concatenations to one ``(B, ...)`` array, and the result is
  split back: one array per input index, in order.

  The groups run in sequence, the first after ``after`` (any pytree) is ready
  (``lax.optimization_barrier``), and on CPU ``fn`` runs on one matrix at a time
  (``lax.map``): XLA's CPU runtime deadlocks (every thread idle) on batched eigh
  and matmuls of several shapes inside a ``lax.cond`` branch (jax 0.10.2;
  Shampoo and SOAP hung at their first refresh in the GPT of
  examples/compare_optimizers.py; tests/test_kronecker.py keeps a regression
  test). CPU LAPACK loops over a batch anyway; accelerators keep the batch.
  """
  first = stacks[0]
  groups = {}
  for j, x in enumerate(first):
    groups.setdefault(tuple(x.shape[1:]), []).append(j)
  out, res = [None] * len(first), after
  for idx in groups.values():
    args = [jnp.concatenate([s[j] for j in idx]) if len(idx) > 1 else s[idx[0]] for s in stacks]
    if res is not None:
      args, _ = jax.lax.optimization_barrier((args, res))
    res = _map_on_cpu(fn, args)
    cuts = list(np.cumsum([first[j].shape[0] for j in idx])[:-1])
    for j, r in zip(idx, jnp.split(res, cuts) if cuts else [res]):
      out[j] = r
  return out


def refresh_by_shape(fn: Callable, *stacks: Sequence[jax.Array], mesh=None, axis="data",
                     after: Any = None) -> list:
  """:func:`apply_by_shape` on one device, or split over the devices of ``mesh``.

  With a ``mesh``, every matrix of every stack becomes one work item; items of one
  shape are stacked, padded to a multiple of the ``axis`` size, sharded over it,
  mapped with ``vmap`` and gathered (:func:`optix.map_stacked`): each device
  computes ``1/n`` of the inverse roots / eigenbases and one all-gather per shape
  brings them back (Anil et al. 2020, arXiv 2002.09018, section 5).
  """
  if mesh is None:
    return apply_by_shape(fn, *stacks, after=after)
  first, k = stacks[0], len(stacks)
  items = [jnp.stack([s[j][i] for s in stacks]) for j in range(len(first))
           for i in range(first[j].shape[0])]
  res = iter(map_stacked(lambda x: fn(*[x[c][None] for c in range(k)])[0], items, mesh, axis))
  return [jnp.stack([next(res) for _ in range(x.shape[0])]) for x in first]


def _map_on_cpu(fn, args):
  if jax.default_backend() != "cpu":
    return fn(*args)
  return jax.lax.map(lambda xs: fn(*[x[None] for x in xs])[0], args)


def _finite_or(new, old):
  """Per matrix of a stack: ``new`` where all its entries are finite, else ``old``."""
  ok = jnp.all(jnp.isfinite(new), axis=(-2, -1), keepdims=True)
  return jnp.where(ok, new, old.astype(new.dtype))


# ------------------------------------------------------------------ block views

class _Plan(NamedTuple):
  """How one leaf is viewed as a stack of blocks (all static Python ints)."""
  shape: tuple     # the leaf's shape
  merged: tuple    # after dropping size-1 axes and merging small neighbours
  blocks: tuple    # number of blocks along each merged axis
  block: tuple     # block length along each merged axis
  precond: tuple   # per merged axis: True if it has a Kronecker factor

  @property
  def num_blocks(self):
    return int(np.prod(self.blocks, dtype=np.int64))

  @property
  def rank(self):  # number of Kronecker factors
    return sum(self.precond)


def _make_plan(shape, block_size, merge_small_dims, max_dim, precondition_1d=True):
  dims = [d for d in shape if d != 1]
  if merge_small_dims:  # greedy, but a tensor with >= 2 axes keeps >= 2 (a matrix stays one)
    merged, keep = [], min(2, len(dims))
    for i, d in enumerate(dims):
      if merged and merged[-1] * d <= block_size and len(merged) + len(dims) - i - 1 >= keep:
        merged[-1] *= d
      else:
        merged.append(d)
    dims = merged
  blocks, block, precond = [], [], []
  for d in dims:
    n = -(-d // block_size) if block_size < d <= max_dim else 1
    blocks.append(n)
    block.append(-(-d // n))  # balanced blocks: 1025 -> 2 × 513
    precond.append(d <= max_dim)
  if len(dims) == 1 and not precondition_1d:
    precond = [False]
  return _Plan(tuple(shape), tuple(dims), tuple(blocks), tuple(block), tuple(precond))


def _to_blocks(x, plan):
  """``x`` (plan.shape) -> ``(N, b_1, ..., b_k)``, zero-padded. A leaf sharded on
  an Explicit mesh is gathered first: the blocks and their (small) statistics are
  replicated, and :func:`_from_blocks` puts the result back in the leaf's layout."""
  k = len(plan.merged)
  x = replicated(x).reshape(plan.merged)
  pad = [(0, n * b - d) for d, n, b in zip(plan.merged, plan.blocks, plan.block)]
  if any(hi for _, hi in pad):
    x = jnp.pad(x, pad)
  x = x.reshape([v for nb in zip(plan.blocks, plan.block) for v in nb])
  x = x.transpose(list(range(0, 2 * k, 2)) + list(range(1, 2 * k, 2)))
  return x.reshape((plan.num_blocks,) + plan.block)


def _from_blocks(x, plan, like=None):
  """Inverse of :func:`_to_blocks` (drops the padding), in the Explicit-mesh
  layout of ``like`` (the leaf) if it has one."""
  k = len(plan.merged)
  x = x.reshape(plan.blocks + plan.block)
  x = x.transpose([i for j in range(k) for i in (j, k + j)])
  x = x.reshape([n * b for n, b in zip(plan.blocks, plan.block)])
  x = x[tuple(slice(0, d) for d in plan.merged)]
  x = x.reshape(plan.shape)
  spec = None if like is None else explicit_spec(like)
  return x if spec is None else jax.sharding.reshard(x, spec)


def _gram(x, i):
  """Statistic of axis ``i`` of a block stack: ``(N, b_i, b_i)``."""
  axes = tuple(a for a in range(1, x.ndim) if a != i + 1)
  return jax.lax.dot_general(x, x, ((axes, axes), ((0,), (0,))), precision=_HI)


def _contract_axes(x, mats, precond):
  """``x[n, a_1..a_k] -> Σ x[n, a] Π_i M_i[n, a_i, c_i]`` over the preconditioned
  axes (``M_i`` from ``mats`` in order; other axes untouched). Contracting axis 1
  and appending the result last, k times, brings the axes back in order."""
  mats = iter(mats)
  for use in precond:
    if use:
      x = jax.lax.dot_general(x, next(mats), (((1,), (1,)), ((0,), (0,))), precision=_HI)
    else:
      x = jnp.moveaxis(x, 1, -1)
  return x


def _stat_update(stat, g_blocks, i, beta):
  """EMA (``beta < 1``) or running sum (``beta == 1``) of the axis-``i`` statistic."""
  new = _gram(g_blocks, i).astype(stat.dtype)
  return new + stat if beta == 1 else beta * stat + (1 - beta) * new


def _block_size(block_size):
  if block_size is None:  # one 1024-block costs ~10 s of eigh on a 2-core CPU
    return 512 if jax.default_backend() == "cpu" else 1024
  return block_size


def _check_shapes(block_size, max_preconditioner_dim, preconditioning_interval):
  _validate.integer("preconditioning_interval", preconditioning_interval, low=1)
  if block_size is not None:
    _validate.integer("block_size", block_size, low=1)
  _validate.integer("max_preconditioner_dim", max_preconditioner_dim, low=0)


def _init_stats(plans, dtype, eye_roots):
  stats, roots = [], []
  for plan in plans:
    for use, b in zip(plan.precond, plan.block):
      if use:
        stats.append(jnp.zeros((plan.num_blocks, b, b), dtype))
        eye = jnp.broadcast_to(jnp.eye(b, dtype=dtype), (plan.num_blocks, b, b))
        roots.append(eye if eye_roots else jnp.zeros((plan.num_blocks, b, b), dtype))
  return tuple(stats), tuple(roots)


# ------------------------------------------------------------------ exponents

ExponentOverride = Optional[Mapping[int, Union[float, Mapping[int, float]]]]


def _check_exponent_override(override, root_method):
  """``{order: e}`` or ``{order: {axis: e}}`` with ``e`` in [0, 1]; with the Newton
  root every nonzero ``e`` must be ``1/p`` for an integer ``p``."""
  name = "inverse_exponent_override"
  if override is None:
    return {}
  if not isinstance(override, Mapping):
    raise ValueError(f"{name} must be None or a dict {{order: exponent or {{axis: exponent}}}}, "
                     f"got {override!r}")
  out = {}
  for order, value in override.items():
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
      raise ValueError(f"{name} keys must be tensor orders, integers >= 1, got {order!r}")
    per_axis = value if isinstance(value, Mapping) else {a: value for a in range(order)}
    out[int(order)] = {}
    for a, e in per_axis.items():
      if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not 0 <= a < order:
        raise ValueError(f"{name}[{order}] axes must be integers in [0, {order - 1}], got {a!r}")
      where = f"{name}[{order}]" + (f"[{a}]" if isinstance(value, Mapping) else "")
      if isinstance(e, bool) or not isinstance(e, numbers.Real):
        raise ValueError(f"{where} must be a number in [0, 1], got {e!r}")
      _validate.in_range(where, e, 0.0, 1.0)
      e = float(e)
      if root_method == "newton" and e > 0 and abs(1 / e - round(1 / e)) > 1e-6:
        raise ValueError(f"{where} must be 0 or 1/p for an integer p with root_method='newton' "
                         f"(the coupled Newton iteration computes integer roots), got {e!r}")
      out[int(order)][int(a)] = e
  return out


def _exponents(plan, override):
  """Per merged axis of ``plan``: the exponent ``e`` of its factor (``L_i^{-e}``), 0 for an
  axis without one. Default ``1/(2k)``, ``k`` the number of preconditioned axes; ``override``
  (checked) is keyed by ``len(plan.merged)``, axes are merged axes."""
  default = 1.0 / (2 * plan.rank) if plan.rank else 0.0
  given = override.get(len(plan.merged), {})
  return tuple(given.get(i, default) if use else 0.0 for i, use in enumerate(plan.precond))


def _root_order(e):
  """The ``p`` of ``A^{-1/p}`` for an exponent ``e``: an exact int when ``1/e`` is one (the
  defaults 1/4, 1/6, ... and 1/2), so default roots are bit-identical to ``p = 2k``."""
  p = 1.0 / e
  return int(round(p)) if abs(p - round(p)) <= 1e-6 else p


# ------------------------------------------------------------------ Shampoo

class ScaleByShampooState(NamedTuple):
  count: jax.Array        # int32, saturating: steps taken
  mu: _base.Updates       # momentum of the gradient (EMA), like params
  nu: _base.Updates       # the graft's second moment, like params
  stats: tuple            # Kronecker statistics: one (N, b, b) per preconditioned axis, leaf order
  roots: tuple            # their roots L^{-e} (default e = 1/(2·rank)), refreshed every interval


def scale_by_shampoo(beta2: float = 0.999, preconditioning_interval: int = 10,
                     start_preconditioning_step: int = 10, b1: float = 0.9,
                     nesterov: bool = False, graft: str = "adam", graft_b2: float = 0.999,
                     graft_eps: float = 1e-8, ridge_epsilon: float = 1e-6,
                     root_method: str = "eigh", block_size: Optional[int] = None,
                     merge_small_dims: bool = True, max_preconditioner_dim: int = 8192,
                     *, inverse_exponent_override: ExponentOverride = None,
                     state_dtype=jnp.float32, mesh=None,
                     axis="data") -> _base.GradientTransformation:
  r"""Shampoo with grafting (Gupta et al. 2018, arXiv 1802.09568; Anil et al. 2020,
  "Scalable second order optimization for deep learning", arXiv 2002.09018).

  For a matrix block ``G`` (rank-k tensors: one factor per axis, exponent ``1/(2k)``;
  other exponents: ``inverse_exponent_override`` below):

  .. math::
     L_t = \beta_2 L_{t-1} + (1-\beta_2) G_t G_t^\top, \quad
     R_t = \beta_2 R_{t-1} + (1-\beta_2) G_t^\top G_t \quad (\beta_2 = 1:\ \text{sums}), \\
     m_t = \beta_1 m_{t-1} + (1-\beta_1) G_t, \quad \hat m_t = m_t / (1-\beta_1^t), \\
     P_t = \tilde L^{-1/4}\, \hat m_t\, \tilde R^{-1/4}, \quad
     a_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon_g), \quad
     u_t = P_t\, \|a_t\|_F / \|P_t\|_F

  where ``\tilde L^{-1/4}`` is ``(L + ε λ_max I)^{-1/4}`` recomputed (``root_method``
  "eigh" or "newton") every ``preconditioning_interval`` steps from step
  ``start_preconditioning_step`` on, under ``lax.cond``; a root that is not finite
  keeps the previous one. ``a_t`` is the graft, whose per-layer norm ``u_t``
  inherits: ``graft="adam"`` (v an EMA of g² with ``graft_b2``, bias-corrected),
  ``"rmsprop"`` (same, uncorrected) or ``"adagrad"`` (v a running sum). Before
  ``start_preconditioning_step`` the update is the graft itself, i.e. exactly Adam
  (``optax.adam``; ``nesterov``: ``optax.nadam``). Leaves with no preconditioned
  axis (scalars; axes longer than ``max_preconditioner_dim``) always use the graft.

  Momentum is taken before preconditioning (the preconditioner is applied to
  ``\hat m_t``), which makes the graft an exact Adam. Shapes: see the module
  docstring (``block_size`` default 512 on CPU, 1024 elsewhere).

  Defaults: ``beta2=0.999``, ``ridge_epsilon=1e-6`` and the Adam graft follow Anil
  et al.; ``preconditioning_interval=10`` amortizes the roots (the expensive part).
  State: statistics and roots 8·Σ b² bytes per block (fp32), + 8 bytes/param.

  ``mesh``/``axis``: when given, each refresh splits the roots over the devices
  along ``axis`` (:func:`refresh_by_shape`); the result is the same.

  ``inverse_exponent_override`` (keyword-only; modelled on the argument of that name
  in Meta's Distributed Shampoo, Shi et al. 2023, arXiv 2309.06497) replaces the
  default exponent ``1/(2k)`` of the factors, ``P_t = \tilde L^{-e_0} \hat m_t
  \tilde R^{-e_1}`` for a matrix: ``{order: e}`` gives every factor of a block of that
  order the exponent ``e``, ``{order: {axis: e}}`` only the named axes (the others keep
  ``1/(2k)``), ``e`` in [0, 1]; orders no block has are ignored. ``order`` and
  ``axis`` refer to the block view (size-1 axes dropped, small axes merged: a matrix
  has order 2, axis 0 its rows, the input side of ``x @ W``); ``k`` is the number of
  axes that have a factor before the override (an axis longer than
  ``max_preconditioner_dim`` has none, whatever the override says). ``e = 0`` leaves
  that axis without a factor: no statistic, no root, no memory; a block left with none
  is updated by the graft. The graft sets the norm of ``u_t``, so the exponents only
  shape its direction. With
  ``root_method="newton"`` every nonzero ``e`` must be ``1/p``, ``p`` an integer.

  One-sided Shampoo, ``{2: {0: 0.5, 1: 0.0}}``, is ``u ∝ L^{-1/2} \hat m``:
  full-matrix AdaGrad on each column, all columns sharing one statistic (An et al.
  2025, "ASGO", arXiv 2503.20762; Xie et al. 2025, arXiv 2503.10537, prove a better
  rate for it than for two-sided Shampoo). It is the right structure when the
  curvature sits on one side, as for a linear layer whose loss Hessian is
  ``Σ_x ⊗ I`` (``Σ_x`` the input covariance): there ``G = 2 Σ_x (W - W^*)``, the
  output side needs no preconditioning, yet ``R = Σ GᵀG`` has the same nonzero
  spectrum as ``L`` (``GGᵀ`` and ``GᵀG`` do), so the default ``R^{-1/4}`` adds
  conditioning the loss does not have. On the κ = 100 least-squares problem of
  tests/test_kronecker.py it reaches the target in 19 steps where two-sided Shampoo
  takes 48 and tuned Adam 81.
  """
  _validate.in_range("beta2", beta2, 0.0, 1.0, low_closed=False)
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("graft_b2", graft_b2)
  _validate.nonnegative("graft_eps", graft_eps)
  _validate.nonnegative("ridge_epsilon", ridge_epsilon)
  _validate.integer("start_preconditioning_step", start_preconditioning_step, low=0)
  _validate.one_of("graft", graft, GRAFTS)
  _validate.one_of("root_method", root_method, ROOT_METHODS)
  override = _check_exponent_override(inverse_exponent_override, root_method)
  _check_shapes(block_size, max_preconditioner_dim, preconditioning_interval)
  check_axis(mesh, axis)
  bs = _block_size(block_size)
  interval, start = preconditioning_interval, start_preconditioning_step

  def plans_of(leaves):
    """Plans with ``precond`` False where the exponent is 0, and each factor's exponent."""
    plans, exps = [], []
    for x in leaves:
      plan = _make_plan(jnp.shape(x), bs, merge_small_dims, max_preconditioner_dim)
      e = _exponents(plan, override)
      plans.append(plan._replace(precond=tuple(v > 0 for v in e)))
      exps.extend(v for v in e if v > 0)
    return plans, exps

  def root_fn(p):
    if root_method == "eigh":
      return lambda a: inverse_pth_root_eigh(a, p, ridge_epsilon)
    return lambda a: inverse_pth_root_newton(a, p, ridge_epsilon)

  def refresh(stats, roots, exponents):
    new, out = list(roots), None
    for p in sorted(set(exponents)):
      idx = [j for j, e in enumerate(exponents) if e == p]
      out = refresh_by_shape(root_fn(p), [stats[j] for j in idx], mesh=mesh, axis=axis,
                             after=out)
      for j, r in zip(idx, out):
        new[j] = _finite_or(r, roots[j]).astype(roots[j].dtype)
    return tuple(new)

  def init(params):
    leaves = jax.tree.leaves(params)
    stats, roots = _init_stats(plans_of(leaves)[0], state_dtype, eye_roots=True)
    return ScaleByShampooState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, state_dtype),
                               _tree.zeros_like(params, state_dtype), stats, roots)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    g_leaves, treedef = jax.tree.flatten(updates)
    plans, exps = plans_of(g_leaves)
    exponents = [_root_order(e) for e in exps]  # p of L^{-1/p}, one per statistic
    step, count = state.count, _tree.safe_increment(state.count)
    g = [x.astype(state_dtype) for x in g_leaves]

    # Statistics, every step.
    stats, it = [], iter(state.stats)
    for x, plan in zip(g, plans):
      if plan.rank:
        xb = _to_blocks(x, plan)
        for i, use in enumerate(plan.precond):
          if use:
            stats.append(_stat_update(next(it), xb, i, beta2))
    stats = tuple(stats)
    do_refresh = (step >= start) & ((step - start) % interval == 0)
    roots = jax.lax.cond(do_refresh, lambda: refresh(stats, state.roots, exponents),
                         lambda: tuple(state.roots))

    # Momentum and graft.
    mu = [(1 - b1) * x + b1 * m for m, x in zip(jax.tree.leaves(state.mu), g)]
    if nesterov:
      m_hat = [b1 * m / (1 - b1 ** (count.astype(jnp.float32) + 1))
               + (1 - b1) * x / (1 - b1 ** count.astype(jnp.float32)) for m, x in zip(mu, g)]
    else:
      m_hat = jax.tree.leaves(debias(mu, b1, count))
    nu_old = jax.tree.leaves(state.nu)
    if graft == "adagrad":
      nu = [v + jnp.square(x) for v, x in zip(nu_old, g)]
    else:
      nu = [(1 - graft_b2) * jnp.square(x) + graft_b2 * v for v, x in zip(nu_old, g)]
    nu_hat = jax.tree.leaves(debias(nu, graft_b2, count)) if graft == "adam" else nu
    grafted = [m / (jnp.sqrt(v) + graft_eps) for m, v in zip(m_hat, nu_hat)]

    # Preconditioned direction with the graft's per-layer norm.
    def preconditioned():
      out, it = [], iter(roots)
      for m, a, plan in zip(m_hat, grafted, plans):
        if not plan.rank:
          out.append(a)
          continue
        mats = [next(it) for use in plan.precond if use]
        d = _from_blocks(_contract_axes(_to_blocks(m, plan), mats, plan.precond), plan, like=a)
        d_norm, a_norm = (jnp.sqrt(jnp.sum(jnp.square(x))) for x in (d, a))  # no reshape: sharded
        ratio = jnp.where(d_norm > 0, a_norm / jnp.where(d_norm > 0, d_norm, 1), 0.0)
        out.append(d * ratio)
      return out

    out = jax.lax.cond(step >= start, preconditioned, lambda: grafted)
    out = [u.astype(x.dtype) for u, x in zip(out, g_leaves)]
    state = ScaleByShampooState(count, jax.tree.unflatten(treedef, mu),
                                jax.tree.unflatten(treedef, nu), stats, roots)
    return jax.tree.unflatten(treedef, out), state

  return _base.GradientTransformation(init, update)


# ------------------------------------------------------------------ SOAP

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


def rotate_second_moment(nu: jax.Array, old: Sequence[jax.Array], new: Sequence[jax.Array],
                         precond: Sequence[bool]) -> jax.Array:
  r"""Carries Adam's second moment (a stack ``(N, b_1..b_k)`` of per-coordinate
  variances in the basis ``old``) over to the basis ``new``.

  With ``P_i = Q_{old,i}^\top Q_{new,i}`` and independent coordinates,
  ``E[y_c²] = Σ_a v_a Π_i P_i[a_i, c_i]²``. A pure reordering of the basis (the
  SOAP paper's sorting step) is the special case of a permutation ``P``.
  """
  overlap = [jnp.square(jnp.matmul(jnp.swapaxes(o, -1, -2), n, precision=_HI))
             for o, n in zip(old, new)]
  return _contract_axes(nu, overlap, precond)


class ScaleBySoapState(NamedTuple):
  count: jax.Array       # int32, saturating
  mu: _base.Updates      # Adam's first moment in the eigenbasis: (N, b..) block stacks
  nu: _base.Updates      # Adam's second moment in the eigenbasis: (N, b..) block stacks
  stats: tuple           # Kronecker statistics (N, b, b), one per preconditioned axis
  bases: tuple           # their eigenbases Q (N, b, b)


def scale_by_soap(b1: float = 0.95, b2: float = 0.95, eps: float = 1e-8,
                  shampoo_beta: Optional[float] = None, preconditioning_interval: int = 10,
                  block_size: Optional[int] = None, merge_small_dims: bool = False,
                  max_preconditioner_dim: int = 10000, precondition_1d: bool = False,
                  *, state_dtype=jnp.float32, mesh=None,
                  axis="data") -> _base.GradientTransformation:
  r"""SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024, arXiv 2409.11321).

  For a matrix block ``G`` with Shampoo statistics ``L, R`` (EMA ``shampoo_beta``,
  default ``b2``) and their eigenbases ``Q_L, Q_R``:

  .. math::
     G'_t = Q_L^\top G_t Q_R, \quad
     m'_t = \beta_1 m'_{t-1} + (1-\beta_1) G'_t, \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) G'^{2}_t, \\
     u_t = Q_L \Big(\frac{\hat m'_t}{\sqrt{\hat v_t} + \epsilon}\Big) Q_R^\top

  (hats: Adam's bias corrections; rank-k tensors: one basis per axis). The
  statistics are updated first each step; the bases are computed by ``eigh`` at the
  first step and refreshed every ``preconditioning_interval`` steps by one power
  iteration + QR from the previous basis (:func:`eigenbasis_power_qr`). Both
  moments live in the eigenbasis and are rotated when the basis changes: ``m'``
  exactly (``m' ← P_Lᵀ m' P_R`` with the overlaps ``P = Q_oldᵀ Q_new``: the same
  ``m`` as if it had been kept in the original coordinates), ``v`` by the squared
  overlaps (:func:`rotate_second_moment`, exact for a permutation, an
  independence approximation otherwise). Keeping ``m'`` rotated costs 2 matmuls
  per refresh instead of 2 per step (12 n³ flops per n×n matrix per step instead of
  16 n³). A non-finite new basis keeps the old one.

  Differences from the authors' code: no skipped first step (the basis from
  ``G_1`` is used at once); ``v`` is carried over by the squared-overlap rotation
  rather than only permuted; ε is added to ``sqrt(v̂)`` as in Adam. With every axis
  left diagonal (``max_preconditioner_dim=0``) it is exactly ``optax.adam``.
  Defaults are the paper's (β = 0.95, 0.95, interval 10, 1-D params on Adam,
  axes > 10000 not rotated). State: 2·Σ b² fp32 per block (stats + bases) + 8 bytes/param.
  ``mesh``/``axis``: split the eigendecompositions / QRs over devices, as in
  :func:`scale_by_shampoo`.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  beta_s = b2 if shampoo_beta is None else shampoo_beta
  _validate.in_range("shampoo_beta", beta_s, 0.0, 1.0, low_closed=False)
  _check_shapes(block_size, max_preconditioner_dim, preconditioning_interval)
  check_axis(mesh, axis)
  bs = _block_size(block_size)
  interval = preconditioning_interval

  def plans_of(leaves):
    return [_make_plan(jnp.shape(x), bs, merge_small_dims, max_preconditioner_dim,
                       precondition_1d) for x in leaves]

  def nu_like(x, plan):
    shape = (plan.num_blocks,) + plan.block if plan.rank else jnp.shape(x)
    return jnp.zeros(shape, state_dtype)

  def init(params):
    leaves, treedef = jax.tree.flatten(params)
    plans = plans_of(leaves)
    stats, bases = _init_stats(plans, state_dtype, eye_roots=True)
    moment = lambda: jax.tree.unflatten(treedef, [
        nu_like(x, p) if p.rank else _tree.zeros_like(x, state_dtype)
        for x, p in zip(leaves, plans)])
    return ScaleBySoapState(jnp.zeros([], jnp.int32), moment(), moment(), stats, bases)

  def rotate_all(mu, nu, plans, old, new):
    """m by the exact change of basis, v by the squared overlaps."""
    out_m, out_v, it = [], [], 0
    for m, v, plan in zip(mu, nu, plans):
      if plan.rank:
        o, n = old[it:it + plan.rank], new[it:it + plan.rank]
        it += plan.rank
        overlap = [jnp.matmul(jnp.swapaxes(a, -1, -2), b, precision=_HI) for a, b in zip(o, n)]
        out_m.append(_contract_axes(m, overlap, plan.precond))
        out_v.append(rotate_second_moment(v, o, n, plan.precond))
      else:
        out_m.append(m)
        out_v.append(v)
    return out_m, out_v

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    g_leaves, treedef = jax.tree.flatten(updates)
    plans = plans_of(g_leaves)
    expected = jax.tree.unflatten(treedef, [
        jax.ShapeDtypeStruct(nu_like(x, p).shape if p.rank else jnp.shape(x), state_dtype)
        for x, p in zip(g_leaves, plans)])
    _tree.check_match("updates (in SOAP's block layout)", expected, "state.mu", state.mu)
    step, count = state.count, _tree.safe_increment(state.count)
    g = [x.astype(state_dtype) for x in g_leaves]
    gb = [_to_blocks(x, p) if p.rank else x for x, p in zip(g, plans)]

    stats, it = [], iter(state.stats)
    for x, plan in zip(gb, plans):
      for i, use in enumerate(plan.precond):
        if use and plan.rank:
          stats.append(_stat_update(next(it), x, i, beta_s))
    stats, old = tuple(stats), tuple(state.bases)
    mu, nu = jax.tree.leaves(state.mu), jax.tree.leaves(state.nu)

    def first():
      new = [_finite_or(q, o).astype(o.dtype)
             for q, o in zip(refresh_by_shape(eigenbasis_eigh, stats, mesh=mesh, axis=axis), old)]
      return tuple(new), mu, nu  # m and v are zero at the first step: nothing to rotate

    def refresh():
      new = [_finite_or(q, o).astype(o.dtype)
             for q, o in zip(refresh_by_shape(eigenbasis_power_qr, stats, old, mesh=mesh,
                                              axis=axis), old)]
      return (tuple(new),) + rotate_all(mu, nu, plans, old, new)

    branch = jnp.where(step == 0, 0, jnp.where(step % interval == 0, 1, 2))
    bases, mu, nu = jax.lax.switch(branch, [first, refresh, lambda: (old, mu, nu)])

    c1 = 1 - b1 ** count.astype(jnp.float32)
    c2 = 1 - b2 ** count.astype(jnp.float32)
    out, new_mu, new_nu, it = [], [], [], 0
    for x, m, v, plan, leaf in zip(gb, mu, nu, plans, g_leaves):
      if plan.rank:  # Adam in the eigenbasis: G' = Q_Lᵀ G Q_R, then back
        q = bases[it:it + plan.rank]
        it += plan.rank
        x = _contract_axes(x, q, plan.precond)
      m = (1 - b1) * x + b1 * m
      v = (1 - b2) * jnp.square(x) + b2 * v  # the order of optix.adam: bit-identical
      n = (m / c1) / (jnp.sqrt(v / c2) + eps)
      if plan.rank:
        n = _from_blocks(_contract_axes(n, [jnp.swapaxes(b, -1, -2) for b in q], plan.precond),
                         plan, like=leaf)
      out.append(n)
      new_mu.append(m)
      new_nu.append(v)
    out = [u.astype(x.dtype) for u, x in zip(out, g_leaves)]
    state = ScaleBySoapState(count, jax.tree.unflatten(treedef, new_mu),
                             jax.tree.unflatten(treedef, new_nu), stats, bases)
    return jax.tree.unflatten(treedef, out), state

  return _base.GradientTransformation(init, update)
