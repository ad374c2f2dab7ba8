"""Block views of a tensor for Kronecker-factored preconditioners (Shampoo, SOAP).

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

A leaf whose first ``s`` axes index stacked layers (the kernels of an ``nn.scan``-ed block:
``stacked_axes``, :func:`stacked_of`) is planned layer by layer: each layer
``shape[s:]`` is viewed as a leaf of its own under the rules above, with its own statistics,
and the layers' blocks follow one another in the leaf's stack (no statistic spans the
stacked axes).

A leaf's gradient is viewed as a stack of blocks ``(N, b_1, ..., b_k)`` (:class:`Plan`,
:func:`to_blocks`), and each preconditioned block length ``b`` is zero-padded up to a
*standard size* (:func:`standard_size`): the next power of two up to 128, the next
multiple of 128 above, never more than ``block_size``. All blocks of one padded shape and
one set of preconditioned axes, across leaves, form one stack ``(B, P_1, ..., P_k)``
(:class:`Group`, :func:`group_plans`, :func:`gather`, :func:`scatter`): the statistics
update, the preconditioning matmuls and the per-matrix work -- inverse roots, ``eigh``,
``QR`` -- run once per padded size (:func:`apply_by_shape`), not once per leaf shape, so
the traced program and its compile time stop growing with the number of distinct leaf
shapes (the batching of Anil et al. 2020, arXiv 2002.09018, section 5, and of Meta's
Distributed Shampoo, Shi et al. 2023, arXiv 2309.06497). With ``mesh=`` the ``B``
matrices are split over the devices of a mesh axis instead (:func:`refresh_by_shape`,
:func:`optix.map_stacked`).

Why that rule: a model's block lengths take any value in ``[1, block_size]``. Padding to
powers of two only would give ``log2(block_size) + 1`` sizes (11 at 1024) but up to 2× per
axis -- 8× the ``eigh`` flops -- on the large blocks, where the work is; multiples of 128
only would pad a 16-long axis to 128 (512× the flops of its ``eigh``). Powers of two below
128 and multiples of 128 above give at most ``8 + block_size/128 - 1`` sizes (15 at 1024),
waste at most 2× per axis where a block is small (cheap anyway) and at most
``1 + 128/b`` (≤ 1.5× from 256 on) where it is large.

Padding is exact. A zero-padded block ``[[G], [0]]`` has statistics
``[[G Gᵀ, 0], [0, 0]]``: the padded coordinates are decoupled. Shampoo's root is a
spectral function of the statistic, ``(L + ε λ_max I)^{-1/p}``, and ``λ_max`` is
unchanged, so the real block of the padded root is the root of the real block (the padded
part, ``(ε λ_max)^{-1/p} I``, only ever multiplies zeros); the coupled Newton iteration and
SOAP's eigenbases, which are not spectral functions of the whole matrix, are told which
coordinates are real (:func:`real_mask`, the ``mask`` of :mod:`optix.transforms.roots`)
and keep the padded coordinates exactly apart. Updates drop the padded coordinates
(:func:`from_blocks`).

On an Explicit-mode mesh with leaves sharded over it (FSDP), a group's blocks are owned:
the stack ``(B, *block)`` is split on its axis 0 over the leaves' mesh axes (device ``d`` of
``n`` holds blocks ``[d B/n, (d+1) B/n)``, their statistics and roots or bases, stored so),
the gradient's blocks move straight to their owners (:func:`owners_of`, :func:`gather` with
``owners``; one all-to-all), every per-block computation runs where the block lives
(:func:`refresh_by_shape` with ``owned``) and only the results move back into the leaves'
layout (:func:`scatter`), as in Distributed Shampoo (Anil et al. 2020, arXiv 2002.09018).
A group takes that path when ``B`` is a multiple of ``n`` (state shapes do not depend on the
device count, and a stored split must be even) and no sharded axis of its leaves is padded
or cut into blocks; otherwise its sharded leaves are gathered before they are cut into
blocks (the statistics replicated) and each update is resharded like its leaf.
"""

import numbers
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec as P

from optix import _validate
from optix._tree import broadcast_leaves
from optix._sharding import (axes_of_entry, axes_size, explicit_spec, from_owners, in_layout_of,
                             map_local, map_stacked, owner_axes, replicated, spec_entry,
                             to_owners)
from optix.transforms import stacking
from optix.transforms.roots import finite_or

_HI = jax.lax.Precision.HIGHEST


class Plan(NamedTuple):
  """How one leaf is viewed as a stack of blocks (all static Python ints)."""
  shape: tuple     # the leaf's shape
  merged: tuple    # of one layer: after dropping size-1 axes and merging small neighbours
  blocks: tuple    # number of blocks along each merged axis
  block: tuple     # block length along each merged axis
  precond: tuple   # per merged axis: True if it has a Kronecker factor
  padded: tuple = ()  # per merged axis: block length padded to a standard size (factor axes)
  stacked: tuple = ()  # the leading axes that index stacked layers (their sizes)

  @property
  def layers(self):  # independent layers: each one's blocks, in row-major layer order
    return int(np.prod(self.stacked, dtype=np.int64))

  @property
  def num_blocks(self):
    return self.layers * int(np.prod(self.blocks, dtype=np.int64))

  @property
  def rank(self):  # number of Kronecker factors
    return sum(self.precond)


SMALL_BLOCK = 128  # powers of two up to it, multiples of it above (see the module docstring)


def standard_size(b: int, block_size: Optional[int] = None) -> int:
  """The padded length of a preconditioned block of length ``b <= block_size``: the next power
  of two up to :data:`SMALL_BLOCK`, the next multiple of it above, at most ``block_size``
  (None: no cap)."""
  p = 1 << (b - 1).bit_length() if b <= SMALL_BLOCK else -(-b // SMALL_BLOCK) * SMALL_BLOCK
  return max(b, p if block_size is None else min(p, block_size))


def pad_plan(plan: Plan, block_size: int) -> Plan:
  """``plan`` with ``padded`` set for its current ``precond`` (axes without a factor are
  not padded)."""
  return plan._replace(padded=tuple(standard_size(b, block_size) if use else b
                                    for b, use in zip(plan.block, plan.precond)))


def make_plan(shape, block_size, merge_small_dims, max_dim, precondition_1d=True,
              stacked: int = 0) -> Plan:
  """The block view of a leaf of ``shape`` under the three rules of the module docstring,
  blocks padded to standard sizes (:func:`pad_plan`); a 1-D leaf gets no factor unless
  ``precondition_1d``. The first ``stacked`` axes index independent layers: each layer
  ``shape[stacked:]`` is planned as a leaf of its own and its blocks follow the previous
  layer's (``num_blocks`` = layers × blocks per layer)."""
  dims = [d for d in shape[stacked:] if d != 1]
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
  plan = Plan(tuple(shape), tuple(dims), tuple(blocks), tuple(block), tuple(precond),
              stacked=tuple(shape[:stacked]))
  return pad_plan(plan, block_size)


def _stacked_int(k, x=None, path=None) -> int:
  """``k`` (one leaf's number of stacked axes) as an int, checked: ``0 <= k <= ndim`` of its
  leaf ``x`` at ``path`` (any ``k >= 0`` without one). A traced ``k``
  (``optax.inject_hyperparams``) raises, saying how to keep it static: it sets the state's
  shapes."""
  if isinstance(k, jax.core.Tracer):
    return _validate.integer("stacked_axes", k)
  if isinstance(k, (jax.Array, np.ndarray, np.generic)) and np.ndim(k) == 0:
    k = np.asarray(k).item()
  high = None if x is None else jnp.ndim(x)
  if (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0
      or (high is not None and k > high)):
    where = ("each leaf's ndim" if x is None else
             f"ndim {high} of the leaf at {path or '<root>'} of shape {jnp.shape(x)}")
    raise ValueError(f"stacked_axes must be an integer k with 0 <= k <= ndim ({where}), "
                     f"got {k!r}")
  return int(k)


def stacked_of(stacked_axes, tree) -> list:
  """One number of stacked axes per leaf of ``tree``: ``stacked_axes`` is None (none), an int
  for every leaf, a tree of ints like ``tree`` (or a prefix of it), or a callable tree ->
  such a tree (:func:`optix._tree.broadcast_leaves`). Raises ``ValueError`` naming the leaf
  unless each is an integer ``k`` with ``0 <= k <= ndim`` of its leaf."""
  paths = jax.tree_util.tree_flatten_with_path(tree)[0]
  if stacked_axes is None:
    return [0] * len(paths)
  spec = stacked_axes(tree) if callable(stacked_axes) else stacked_axes
  try:
    ks = broadcast_leaves(spec, tree)
  except (ValueError, TypeError) as e:
    raise ValueError("stacked_axes must be an int, a tree of ints whose structure is a prefix "
                     f"of the params', or a callable params -> such a tree: {e}") from None
  return [_stacked_int(k, x, jax.tree_util.keystr(path))
          for k, (path, x) in zip(ks, paths)]


def check_stacked_axes(stacked_axes):
  """Construction-time check of ``stacked_axes``: None, an int >= 0, a tree of them, or a
  callable (the values are checked against the leaves' ranks by :func:`stacked_of`)."""
  if not callable(stacked_axes) and stacked_axes is not None:
    for k in jax.tree.leaves(stacked_axes, is_leaf=lambda v: v is None):
      _stacked_int(k)
  return stacked_axes


def to_blocks(x, plan):
  """``x`` (plan.shape) -> ``(N, P_1, ..., P_k)`` (``plan.padded``), zero-padded. A leaf sharded on
  an Explicit mesh is gathered first: the blocks and their (small) statistics are
  replicated, and :func:`from_blocks` puts the result back in the leaf's layout."""
  k = len(plan.merged)
  x = replicated(x).reshape((plan.layers,) + plan.merged)  # layers first, then their blocks
  pad = [(0, n * b - d) for d, n, b in zip(plan.merged, plan.blocks, plan.block)]
  if any(hi for _, hi in pad):
    x = jnp.pad(x, [(0, 0)] + pad)
  x = x.reshape([plan.layers] + [v for nb in zip(plan.blocks, plan.block) for v in nb])
  x = x.transpose([0] + list(range(1, 2 * k + 1, 2)) + list(range(2, 2 * k + 1, 2)))
  return pad_blocks(x.reshape((plan.num_blocks,) + plan.block), plan)


def pad_blocks(x, plan):
  """A block stack ``(N, *plan.block)`` zero-padded to ``(N, *plan.padded)``."""
  padded = plan.padded or plan.block
  if padded == plan.block:
    return x
  return jnp.pad(x, [(0, 0)] + [(0, p - b) for b, p in zip(plan.block, padded)])


def crop_blocks(x, plan):
  """Inverse of :func:`pad_blocks`: ``(N, *plan.padded)`` -> ``(N, *plan.block)``."""
  if tuple(x.shape[1:]) == plan.block:
    return x
  return x[(slice(None),) + tuple(slice(0, b) for b in plan.block)]


def from_blocks(x, plan, like=None):
  """Inverse of :func:`to_blocks` (drops the padding), in the Explicit-mesh
  layout of ``like`` (the leaf) if it has one."""
  k = len(plan.merged)
  x = crop_blocks(x, plan).reshape((plan.layers,) + plan.blocks + plan.block)
  x = x.transpose([0] + [1 + i for j in range(k) for i in (j, k + j)])
  x = x.reshape([plan.layers] + [n * b for n, b in zip(plan.blocks, plan.block)])
  x = x[(slice(None),) + tuple(slice(0, d) for d in plan.merged)]
  x = x.reshape(plan.shape)
  return x if like is None else in_layout_of(x, like)


class Group(NamedTuple):
  """The leaves whose blocks share one padded shape and one set of factor axes: their blocks
  form one stack ``(B, *block)``, ``B = sum(counts)``, in member order."""
  block: tuple     # the padded block shape
  precond: tuple   # per axis: True if it has a Kronecker factor
  members: tuple   # leaf indices (into the plans)
  counts: tuple    # blocks per member

  @property
  def size(self):
    return sum(self.counts)


def group_plans(plans: Sequence[Plan]) -> tuple:
  """The :class:`Group` s of the leaves that have a factor, in order of first appearance."""
  groups = {}
  for j, p in enumerate(plans):
    if p.rank:
      groups.setdefault((p.padded, p.precond), []).append(j)
  return tuple(Group(block, precond, tuple(idx), tuple(plans[j].num_blocks for j in idx))
               for (block, precond), idx in groups.items())


class Owners(NamedTuple):
  """Where a group's stack lives when its blocks are owned: split on axis 0 over the mesh
  axes ``names`` of ``mesh`` (:func:`owners_of`)."""
  mesh: Any
  names: tuple

  def place(self, x):
    """``x`` (a stack ``(B, ...)``) split on axis 0 over the owners (a local slice when it
    is replicated; nothing moves when it is already so)."""
    return jax.sharding.reshard(x, NamedSharding(self.mesh, P(spec_entry(self.names))))


def _cuts_no_sharded_axis(plan, spec) -> bool:
  """Whether no axis of a leaf that ``spec`` shards is padded or cut into blocks by ``plan``:
  the blocks then reach their owners in one all-to-all (a stacked axis is never cut)."""
  merged_of, m, prod = {}, 0, 1
  for i, d in enumerate(plan.shape):
    if d == 1 or i < len(plan.stacked):
      continue
    merged_of[i] = m
    prod *= d
    if m < len(plan.merged) and prod == plan.merged[m]:
      m, prod = m + 1, 1
  padded = plan.padded or plan.block
  for i, entry in enumerate(spec):
    if axes_of_entry(entry) and i in merged_of:
      a = merged_of[i]
      if plan.blocks[a] != 1 or padded[a] != plan.merged[a]:
        return False
  return True


def owners_of(leaves, plans, group) -> Any:
  """The :class:`Owners` of ``group``'s blocks when its leaves are sharded on an Explicit mesh
  and the owned path applies (see the module docstring), else None."""
  members = [leaves[j] for j in group.members]
  found = owner_axes(members)
  if found is None:
    return None
  mesh, names = found
  if group.size % axes_size(mesh, names):
    return None
  for j in group.members:
    spec = explicit_spec(leaves[j])
    if spec is not None and not _cuts_no_sharded_axis(plans[j], spec):
      return None
  return Owners(mesh, names)


def gather(leaves, plans, group, owners=None):
  """The padded blocks of ``group``'s leaves, stacked: ``(B, *group.block)``; with ``owners``
  split over them (each block moved straight to
  its owner, no leaf gathered). Without owners the stack is one concatenation and one
  gather (:func:`optix.transforms.stacking.gather_flat`), so the program does not grow with
  the number of leaves."""
  if owners is None and stacking.flat_size(plans, group) <= stacking.MAX_FLAT:
    return stacking.gather_flat([replicated(leaves[j]) for j in group.members], plans, group)

  def build(*xs):
    xs = [to_blocks(x, plans[j]) for j, x in zip(group.members, xs)]
    return xs[0] if len(xs) == 1 else jnp.concatenate(xs)
  members = [leaves[j] for j in group.members]
  return build(*members) if owners is None else to_owners(build, members, owners.mesh,
                                                                  owners.names)


def split(x, group):
  """A group stack ``(B, ...)`` -> one ``(N_j, ...)`` per member, in member order."""
  cuts = [int(c) for c in np.cumsum(group.counts)[:-1]]
  return jnp.split(x, cuts) if cuts else [x]


def scatter(x, plans, group, likes=None, owners=None):
  """Inverse of :func:`gather`: ``{leaf index: leaf}``, padding dropped, each leaf in the
  Explicit-mesh layout of ``likes[j]`` if given (with ``owners``: ``x`` is split over them
  and each leaf's pieces move straight from their owners into that layout)."""
  if owners is None:
    return {j: from_blocks(part, plans[j], like=None if likes is None else likes[j])
            for j, part in zip(group.members, split(x, group))}
  specs = [(explicit_spec(likes[j]) if likes is not None else None) or P()
           for j in group.members]
  leaves = from_owners(lambda s: [from_blocks(part, plans[j])
                                  for j, part in zip(group.members, split(s, group))], x,
                      [NamedSharding(owners.mesh, spec) for spec in specs])
  return dict(zip(group.members, leaves))


def real_mask(plans, group, i, dtype=jnp.float32):
  """``(B, P_i)``: 1 on the real (not padding) coordinates of axis ``i`` of each block of
  ``group``, 0 on the padding. None if axis ``i`` of the group is not padded."""
  size = group.block[i]
  if all(plans[j].block[i] == size for j in group.members):
    return None
  rows = [np.broadcast_to(np.arange(size) < plans[j].block[i], (n, size))
          for j, n in zip(group.members, group.counts)]
  return jnp.asarray(np.concatenate(rows), dtype)


def masks(plans, groups, dtype=jnp.float32) -> list:
  """Per statistic (group order, then axis order): :func:`real_mask`, or ones where the axis
  is not padded -- the ``mask`` argument of :mod:`optix.transforms.roots`."""
  out = []
  for group in groups:
    for i, use in enumerate(group.precond):
      if use:
        m = real_mask(plans, group, i, dtype)
        out.append(jnp.ones((group.size, group.block[i]), dtype) if m is None else m)
  return out


def gram(x, i):
  """Statistic of axis ``i`` of a block stack: ``(N, b_i, b_i)``."""
  axes = tuple(a for a in range(1, x.ndim) if a != i + 1)
  return jax.lax.dot_general(x, x, ((axes, axes), ((0,), (0,))), precision=_HI)


def contract_axes(x, mats, precond):
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


def stat_update(stat, g_blocks, i, beta):
  """EMA (``beta < 1``) or running sum (``beta == 1``) of the axis-``i`` statistic."""
  new = gram(g_blocks, i).astype(stat.dtype)
  if isinstance(beta, jax.core.Tracer):  # injected: the choice is made in the graph
    return jnp.where(beta == 1, new + stat, beta * stat + (1 - beta) * new)
  return new + stat if beta == 1 else beta * stat + (1 - beta) * new


DEFAULT_BLOCK_SIZE = 1024


def block_size_of(block_size):
  """``block_size``, or :data:`DEFAULT_BLOCK_SIZE` for None: one value on every backend,
  so the state's shapes depend on the params only and checkpoints move between CPU and
  accelerators (on a CPU a 1024-block's ``eigh`` is slow: pass ``block_size=512``)."""
  return DEFAULT_BLOCK_SIZE if block_size is None else block_size


def check_shapes(block_size, max_preconditioner_dim, preconditioning_interval):
  """Checks the blocking arguments; returns ``max_preconditioner_dim`` as an int. The
  interval may be traced (``optax.inject_hyperparams``); the sizes set shapes."""
  _validate.integer("preconditioning_interval", preconditioning_interval, low=1,
                    static=False)
  if block_size is not None:
    _validate.integer("block_size", block_size, low=1)
  return _validate.integer("max_preconditioner_dim", max_preconditioner_dim, low=0)


def stats_dtype(leaves, state_dtype=None):
  """``state_dtype``, or for None the state-dtype policy over the whole tree (the
  statistics of all leaves are stacked together): float32, float64 where a leaf is
  float64."""
  if state_dtype is not None:
    return jnp.dtype(state_dtype)
  return jnp.result_type(jnp.float32, *[jnp.result_type(x) for x in leaves
                                        if jnp.issubdtype(jnp.result_type(x), jnp.floating)])


def init_stats(groups, dtype, owners=None):
  """Zero statistics and identity roots / bases: one ``(B, P, P)`` each per factor axis of
  each group, in group order; split over the group's owners where ``owners`` (one
  :class:`Owners` or None per group) names them."""
  stats, roots = [], []
  for k, group in enumerate(groups):
    own = None if owners is None else owners[k]
    place = (lambda x: x) if own is None else own.place
    for use, b in zip(group.precond, group.block):
      if use:
        stats.append(place(jnp.zeros((group.size, b, b), dtype)))
        roots.append(place(jnp.broadcast_to(jnp.eye(b, dtype=dtype), (group.size, b, b))))
  return tuple(stats), tuple(roots)


def per_statistic(groups, owners) -> list:
  """``owners`` (one per group) repeated for each factor axis: one per statistic."""
  return [own for group, own in zip(groups, owners) for use in group.precond if use]


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
    res = map_on_cpu(fn, args)
    cuts = list(np.cumsum([first[j].shape[0] for j in idx])[:-1])
    for j, r in zip(idx, jnp.split(res, cuts) if cuts else [res]):
      out[j] = r
  return out


def refresh_by_shape(fn: Callable, *stacks: Sequence[jax.Array], mesh=None, axis="data",
                     after: Any = None, owned: Optional[Sequence[Any]] = None,
                     args: Sequence[Any] = (), keep: Optional[Sequence[jax.Array]] = None
                     ) -> list:
  """:func:`apply_by_shape` on one device, or split over the devices of ``mesh``, or where
  the stacks live.

  ``keep`` (one stack per index, like the results): a result matrix that is not finite is
  replaced by the matrix of ``keep`` (:func:`optix.transforms.roots.finite_or`). On one
  device the check runs once per shape, on the concatenated stacks; on the other paths once
  per index, on the results (no copy of ``keep`` is concatenated where memory is split).

  With ``owned`` (one :class:`Owners` or None per index of the stacks), the stacks at an
  index with owners are split over them already: each device maps its own matrices
  (:func:`optix._sharding.map_local`), nothing moves, and the results stay split so. The
  other indices take the path below. ``args`` (scalars or arrays, e.g. hyperparameters traced
  by ``inject_hyperparams``) are passed to every call, ``fn(*matrices, *args)``: pass traced
  values there rather than closing over them (``shard_map`` cannot close over them).

  With a ``mesh``, every matrix of every stack becomes one work item (its entries in all
  ``stacks``, flattened into one vector: the stacks may differ in trailing shape, e.g. a
  ``(N, n)`` mask next to ``(N, n, n)`` statistics); items of one shape are stacked, padded
  to a multiple of the ``axis`` size, sharded over it, mapped with ``vmap`` and gathered
  (:func:`optix.map_stacked`): each device computes ``1/n`` of the inverse roots /
  eigenbases and one all-gather per shape brings them back (Anil et al. 2020, arXiv
  2002.09018, section 5).
  """
  if keep is not None and mesh is None and (owned is None or all(o is None for o in owned)):
    fn_keep = lambda *a: finite_or(fn(*a[:len(stacks)], *a[len(stacks) + 1:]), a[len(stacks)])
    return refresh_by_shape(fn_keep, *stacks, keep, after=after, args=args)
  if keep is not None:
    out = refresh_by_shape(fn, *stacks, mesh=mesh, axis=axis, after=after, owned=owned,
                           args=args)
    return [finite_or(r, k) for r, k in zip(out, keep)]
  if owned is not None and any(o is not None for o in owned):
    return _refresh_owned(fn, stacks, mesh, axis, after, owned, args)
  if args:
    fn = lambda *a, fn=fn: fn(*a, *args)
  if mesh is None:
    return apply_by_shape(fn, *stacks, after=after)
  first = stacks[0]
  layouts = {}
  for j in range(len(first)):
    shapes = tuple(tuple(s[j].shape[1:]) for s in stacks)
    size = sum(int(np.prod(t, dtype=np.int64)) for t in shapes)
    if layouts.setdefault(size, shapes) != shapes:
      raise ValueError(f"refresh_by_shape: two item layouts of {size} entries: "
                       f"{layouts[size]} and {shapes}")

  def item_fn(x):
    parts, at = [], 0
    for t in layouts[x.shape[0]]:
      n = int(np.prod(t, dtype=np.int64))
      parts.append(x[at:at + n].reshape((1,) + t))
      at += n
    return fn(*parts)[0]

  dtype = jnp.result_type(*[s[j] for s in stacks for j in range(len(first))])
  items = [jnp.concatenate([s[j][i].reshape(-1).astype(dtype) for s in stacks])
           for j in range(len(first)) for i in range(first[j].shape[0])]
  res = iter(map_stacked(item_fn, items, mesh, axis))
  return [jnp.stack([next(res) for _ in range(x.shape[0])]) for x in first]


def _refresh_owned(fn, stacks, mesh, axis, after, owned, extra):
  """:func:`refresh_by_shape` with some indices owned: those run where they live, one
  ``shard_map`` per shape and layout (local slices concatenated), the others as usual."""
  first, out = stacks[0], [None] * len(stacks[0])
  rest = [j for j, o in enumerate(owned) if o is None]
  buckets = {}
  for j, o in enumerate(owned):
    if o is not None:
      buckets.setdefault((tuple(first[j].shape[1:]), o), []).append(j)
  res = after
  for (_, own), idx in buckets.items():
    n = axes_size(own.mesh, own.names)
    local = [first[j].shape[0] // n for j in idx]
    consts = [jax.sharding.reshard(jnp.asarray(c), NamedSharding(own.mesh, P())) for c in extra]

    def body(*parts, local=local, k=len(consts)):
      parts, cs = parts[:len(parts) - k], parts[len(parts) - k:]
      args = [jnp.concatenate(p) if len(p) > 1 else p[0] for p in parts]
      r = map_on_cpu(lambda *a: fn(*a, *cs), args)
      cuts = list(np.cumsum(local)[:-1])
      return jnp.split(r, cuts) if cuts else [r]

    args = [[s[j] for j in idx] for s in stacks]
    if res is not None:
      args, _ = jax.lax.optimization_barrier((args, res))
    res = map_local(body, args, own.mesh, own.names, consts)
    for j, r in zip(idx, res):
      out[j] = r
  if rest:
    done = refresh_by_shape(fn, *[[s[j] for j in rest] for s in stacks], mesh=mesh, axis=axis,
                            after=res, args=extra)
    for j, r in zip(rest, done):
      out[j] = r
  return out


def map_on_cpu(fn, args):
  """``fn`` on the stacks ``args`` (a sequence of ``(B, ...)`` arrays), on a CPU one matrix at
  a time (``lax.map``): XLA's CPU runtime deadlocks when a batched LAPACK call (eigh, a
  triangular solve) inside a ``lax.cond`` branch waits for its batch on the thread pool that
  runs the branch; elsewhere ``fn(*args)``, batched."""
  if jax.default_backend() != "cpu":
    return fn(*args)
  return jax.lax.map(lambda xs: fn(*[x[None] for x in xs])[0], args)
