r"""A group's block stack taken from its leaves in two operations, and per-leaf sums over it.

:mod:`optix.transforms.blocking` views each leaf as blocks ``(N_j, b_1, ..., b_k)`` and
stacks the blocks of a :class:`~optix.transforms.blocking.Group` ``(B, P_1, ..., P_k)``
(padded to the group's standard sizes). Built leaf by leaf (pad, reshape, transpose, pad,
then one concatenation), the traced program and the compiled kernels grow with the number of
leaves. Here the members are flattened and concatenated once, with one trailing zero for the
padding, and the stack is one ``gather`` from that vector: entry
``(n, a_1, ..., a_k)`` of the stack, for block ``n`` at block coordinates
``(c_1, ..., c_k)`` of stacked layer ``t`` of a leaf whose layers have the merged shape
``(d_1, ..., d_k)`` and which starts at ``o`` in the vector, reads

.. math:: o + t D + \sum_i (c_i b_i + a_i)\, s_i, \quad s_i = \prod_{l > i} d_l, \quad
          D = \prod_l d_l, \qquad
          \text{if } a_i < \min(b_i,\ d_i - c_i b_i) \text{ for every } i,

and the trailing entry otherwise (``t = 0`` for a leaf without stacked layers). The indices
are computed in the graph from three small per-block tables (``o + t D + Σ c_i b_i s_i``,
``s_i`` and the limits), so the program holds no array of the stack's size. The values are
copies: the stack is the one :func:`optix.transforms.blocking.to_blocks` and
``concatenate`` give, bit for bit.

:func:`sq_norms` sums a stack's squares per member leaf (or per stacked layer): one reduction
per group and one segment sum, instead of one reduction per leaf.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optix._sharding import replicated

# The indices are int32: a group whose members hold more entries than this is stacked leaf by
# leaf (blocking.to_blocks).
MAX_FLAT = np.iinfo(np.int32).max - 1


def flat_size(plans, group) -> int:
  """Entries of ``group``'s members, all together: the length of the flat vector."""
  return sum(int(np.prod(plans[j].shape, dtype=np.int64)) for j in group.members)


def block_tables(plans, group):
  """Per block of ``group`` (stack order): the flat index of its first entry ``(B,)``, the
  strides of its merged axes ``(B, k)`` and the real length of each axis ``(B, k)``
  (numpy int64; see the module docstring)."""
  base, strides, limits, at = [], [], [], 0
  for j in group.members:
    plan = plans[j]
    dims = plan.merged
    stride = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(len(dims))]
    layer = int(np.prod(dims, dtype=np.int64))  # entries of one stacked layer
    for s, *c in np.ndindex(plan.layers, *plan.blocks):  # row-major over layers, then the
      # block coordinates, as to_blocks
      base.append(at + s * layer + sum(ci * b * st for ci, b, st in zip(c, plan.block, stride)))
      strides.append(stride)
      limits.append([min(b, d - ci * b) for ci, b, d in zip(c, plan.block, dims)])
    at += int(np.prod(plan.shape, dtype=np.int64))
  k = len(group.block)
  return (np.asarray(base, np.int64), np.asarray(strides, np.int64).reshape(-1, k),
          np.asarray(limits, np.int64).reshape(-1, k))


def gather_flat(xs: Sequence[jax.Array], plans, group) -> jax.Array:
  """The stack ``(B, *group.block)`` of ``xs`` (one array per member, in member order, of the
  member's shape), zero-padded: one concatenation and one gather."""
  total = flat_size(plans, group)
  flat = jnp.concatenate([x.reshape(-1) for x in xs] + [jnp.zeros((1,), xs[0].dtype)])
  base, strides, limits = block_tables(plans, group)
  shape = (len(base),) + tuple(group.block)
  column = lambda v: jnp.asarray(v, jnp.int32).reshape((len(base),) + (1,) * len(group.block))
  idx, real = column(base), None
  for i in range(len(group.block)):
    a = jax.lax.broadcasted_iota(jnp.int32, shape, i + 1)
    idx = idx + a * column(strides[:, i])
    inside = a < column(limits[:, i])
    real = inside if real is None else real & inside
  idx = jnp.where(real, idx, total)
  return flat.at[idx].get(mode="promise_in_bounds")


def sq_norms(stack: jax.Array, group, plans) -> jax.Array:
  """``(M,)``: the sum of the squares of each layer's blocks in ``stack`` ``(B, ...)``, a
  member leaf being one layer or, with stacked axes, several (member order, then row-major
  layer order; ``M`` the number of layers; the padding must be zero). Replicated where
  ``stack`` is split over a mesh (a group's owners)."""
  counts = [c // plans[j].layers for j, c in zip(group.members, group.counts)
            for _ in range(plans[j].layers)]
  s = replicated(jnp.sum(jnp.square(stack), axis=tuple(range(1, stack.ndim))))
  if all(n == 1 for n in counts):
    return s
  ids = np.repeat(np.arange(len(counts)), counts)
  return jax.ops.segment_sum(s, jnp.asarray(ids, jnp.int32), len(counts),
                             indices_are_sorted=True)
