"""SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024, arXiv 2409.11321), on the block
views of :mod:`optix.transforms.blocking` and the eigenbases of :mod:`optix.transforms.roots`."""

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms import moments
from optix._sharding import check_axis
from optix.transforms.blocking import (
    block_size_of, check_shapes, check_stacked_axes, contract_axes, gather, group_plans,
    init_stats, make_plan, masks as blocking_masks, owners_of, per_statistic, refresh_by_shape,
    scatter, stacked_of, stat_update, stats_dtype)
from optix.transforms.roots import eigenbasis_eigh, eigenbasis_power_qr

_HI = jax.lax.Precision.HIGHEST


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
  return contract_axes(nu, overlap, precond)


class ScaleBySoapState(NamedTuple):
  count: jax.Array       # int32, saturating
  mu: tuple              # Adam's first moment, (blocks, leaves): blocks in the eigenbasis, one
                         # (B, P..) stack per group (blocking.group_plans; 0 on the padding);
                         # leaves a tree like params, the moment of each leaf without a basis
                         # (a 0-d placeholder for the others)
  nu: tuple              # Adam's second moment, laid out as mu
  stats: tuple           # Kronecker statistics (B, P, P), one per factor axis of each group
                         # of leaves with one padded block shape (blocking.group_plans)
  bases: tuple           # their eigenbases Q (B, P, P)


def scale_by_soap(b1: float = 0.95, b2: float = 0.95, eps: float = 1e-8,
                  shampoo_beta: Optional[float] = None, preconditioning_interval: int = 10,
                  block_size: Optional[int] = None, merge_small_dims: bool = False,
                  max_preconditioner_dim: Optional[int] = None, precondition_1d: bool = False,
                  *, state_dtype=None, mesh=None, axis="data",
                  stacked_axes=None) -> _base.GradientTransformation:
  r"""SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024, arXiv 2409.11321).

  For a matrix block ``G`` with Shampoo statistics ``L, R`` (EMA ``shampoo_beta``,
  default ``b2``) and their eigenbases ``Q_L, Q_R``:

  .. math::
     G'_t = Q_L^\top G_t Q_R, \quad
     m'_t = \beta_1 m'_{t-1} + (1-\beta_1) G'_t, \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) G'^{2}_t, \\
     u_t = Q_L \Big(\frac{\hat m'_t}{\sqrt{\hat v_t} + \epsilon}\Big) Q_R^\top

  (hats: Adam's bias corrections; rank-k tensors: one basis per axis). As in the
  authors' code, ``G_t`` is projected on the basis of the statistics of the steps
  before it, and the first step only computes the statistics and a basis (no update;
  Adam's count starts at the second step). The basis of ``G_1 G_1ᵀ`` diagonalizes
  ``G_1`` itself: ``G'_1`` would be its singular values plus rounding noise off the
  diagonal, and Adam's sign-like first step would turn that noise into ±1 (a 1e-7
  change of ``G_1`` changed the update by ~100%). The statistics are then updated
  and the bases computed by ``eigh`` after the first step (with a unique basis for
  the null space of rank-deficient statistics: :func:`eigenbasis_eigh`) and refreshed
  every ``preconditioning_interval`` steps by one shifted power iteration + QR from
  the previous basis (:func:`eigenbasis_power_qr`). Both
  moments live in the eigenbasis and are rotated when the basis changes: ``m'``
  exactly (``m' ← P_Lᵀ m' P_R`` with the overlaps ``P = Q_oldᵀ Q_new``: the same
  ``m`` as if it had been kept in the original coordinates), ``v`` by the squared
  overlaps (:func:`rotate_second_moment`, exact for a permutation, an
  independence approximation otherwise). Keeping ``m'`` rotated costs 2 matmuls
  per refresh instead of 2 per step (12 n³ flops per n×n matrix per step instead of
  16 n³). A non-finite new basis keeps the old one.

  Differences from the authors' code: ``v`` is carried over by the squared-overlap rotation
  rather than only permuted; ε is added to ``sqrt(v̂)`` as in Adam. With every axis
  left diagonal (``max_preconditioner_dim=0``) it is exactly ``optax.adam`` (a leaf
  without a basis makes its Adam step at step 0 too).
  Shapes: see :mod:`optix.transforms.blocking` (blocks zero-padded to a few standard sizes
  and stacked across leaves; the padded coordinates keep the identity in every basis, so
  the padding changes no update). State: 4·Σ P² fp32 per padded block (stats, bases and the
  moments, which live in the group's block stacks) + 8 bytes/param of the leaves without a
  basis. On an Explicit mesh with sharded leaves (FSDP), a group's blocks are owned (see
  :mod:`optix.transforms.blocking`): its statistics, bases and moments stay split over the
  devices and only the gradient's blocks and the updates move.

  Args:
    b1: decay of Adam's first moment :math:`\beta_1`, in [0, 1); 0.95 (the paper's).
    b2: decay of Adam's second moment :math:`\beta_2`, in [0, 1); 0.95 (the paper's).
    eps: added to :math:`\sqrt{\hat v}` in the denominator, >= 0; 1e-8 (Adam's).
    shampoo_beta: decay of the statistics' EMA, in (0, 1]; None (default) uses ``b2``, as
      the paper does (so ``b2=0`` needs an explicit ``shampoo_beta``).
    preconditioning_interval: steps between two basis refreshes (power iteration + QR), an
      integer >= 1; 10 (the paper's).
    block_size: the longest rotated block, an integer >= 1, or None for 1024 on every
      backend (state shapes, and so checkpoints, do not depend on the backend).
    merge_small_dims: merge adjacent axes while their product stays within
      ``block_size``; False (the paper rotates each axis as it is).
    max_preconditioner_dim: axes longer than this are not rotated, an integer >= 0; None
      (default): 10000, the paper's (None, so that ``optax.inject_hyperparams`` does not
      inject this shape-setting argument). 0 makes every leaf plain Adam.
    precondition_1d: rotate 1-D leaves too (one basis of size n); False: biases and gains
      use plain Adam, as in the paper.
    state_dtype: (keyword-only) dtype of the moments, statistics and bases; None
      (default): float32, float64 where the params are float64 (the eigenbases need at
      least float32; a narrower dtype is not validated).
    mesh: (keyword-only) a ``jax.sharding.Mesh`` to split the eigendecompositions and QRs
      over (the same result); None. Leaves sharded on an Explicit mesh (FSDP) need none:
      their blocks are owned.
    axis: (keyword-only) that split's mesh axis (or axes); "data".
    stacked_axes: (keyword-only) how many leading axes of each leaf index stacked layers
      (e.g. 1 for the kernels of an ``nn.scan``-ed block): each layer is rotated exactly
      as a leaf of its own (its own statistics, bases and moments; no basis over the
      stacked axes). An int ``k`` with ``0 <= k <= ndim`` for every leaf, a tree of them
      like the params (or a prefix of them), or a callable params -> such a tree; None
      (default) is 0 everywhere, a leaf is one layer (None, so that
      ``optax.inject_hyperparams`` does not inject this shape-setting argument; a value
      other than None must be named in its ``static_args``, or a callable is taken for a
      schedule).

  Returns:
    A ``GradientTransformation``; its state is a :class:`ScaleBySoapState`. An argument out
    of its range raises ``ValueError`` at construction, naming it.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  beta_s = b2 if shampoo_beta is None else shampoo_beta
  _validate.in_range("shampoo_beta", beta_s, 0.0, 1.0, low_closed=False)
  max_preconditioner_dim = check_shapes(
      block_size, 10000 if max_preconditioner_dim is None else max_preconditioner_dim,
      preconditioning_interval)
  _validate.dtype("state_dtype", state_dtype)
  check_axis(mesh, axis)
  check_stacked_axes(stacked_axes)
  bs = block_size_of(block_size)
  interval = preconditioning_interval

  def plans_of(tree):
    return [make_plan(jnp.shape(x), bs, merge_small_dims, max_preconditioner_dim,
                      precondition_1d, stacked=k)
            for x, k in zip(jax.tree.leaves(tree), stacked_of(stacked_axes, tree))]

  def leaf_shape(x, plan):  # of a leaf's own moment: a placeholder where it has a basis
    return () if plan.rank else jnp.shape(x)

  def zero_moments(leaves, treedef, plans, groups, owners, dtype):
    """Zero moments: one stack per group (split over its owners), and the leaves."""
    stacks = [jnp.zeros((grp.size,) + grp.block, dtype) for grp in groups]
    stacks = [x if own is None else own.place(x) for x, own in zip(stacks, owners)]
    return tuple(stacks), jax.tree.unflatten(treedef, [
        jnp.zeros((), dtype) if p.rank else _tree.zeros_like(x, dtype)
        for x, p in zip(leaves, plans)])

  def init(params):
    _tree.check_real("scale_by_soap", params)
    leaves, treedef = jax.tree.flatten(params)
    plans = plans_of(params)
    groups = group_plans(plans)
    owners = [owners_of(leaves, plans, grp) for grp in groups]
    dtype = stats_dtype(leaves, state_dtype)
    stats, bases = init_stats(groups, dtype, owners)
    zeros = lambda: zero_moments(leaves, treedef, plans, groups, owners, dtype)
    return ScaleBySoapState(jnp.zeros([], jnp.int32), zeros(), zeros(), stats, bases)

  def rotate_all(mu, nu, groups, old, new):
    """m by the exact change of basis, v by the squared overlaps, one stack per group."""
    mu, nu, it = list(mu), list(nu), 0
    for k, grp in enumerate(groups):
      r = sum(grp.precond)
      o, n = old[it:it + r], new[it:it + r]
      it += r
      overlap = [jnp.matmul(jnp.swapaxes(a, -1, -2), b, precision=_HI) for a, b in zip(o, n)]
      mu[k] = contract_axes(mu[k], overlap, grp.precond)
      nu[k] = rotate_second_moment(nu[k], o, n, grp.precond)
    return mu, nu

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_real("scale_by_soap", updates)
    g_leaves, treedef = jax.tree.flatten(updates)
    plans = plans_of(updates)
    groups = group_plans(plans)
    plain = [j for j, p in enumerate(plans) if not p.rank]
    dtype = stats_dtype(jax.tree.leaves(state.mu), state_dtype)
    expected = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(leaf_shape(x, p), dtype)
                                            for x, p in zip(g_leaves, plans)])
    _tree.check_match("updates", expected, "state.mu's leaves", state.mu[1])
    expected = tuple(jax.ShapeDtypeStruct((grp.size,) + grp.block, dtype)
                     for grp in groups)
    _tree.check_match("updates (in SOAP's block layout)", expected, "state.mu's blocks",
                      tuple(state.mu[0]))
    step, count = state.count, _tree.safe_increment(state.count)
    g = [x.astype(dtype) for x in g_leaves]
    # A group of leaves sharded on an Explicit mesh is owned (blocking.owners_of): its
    # blocks move to their owners, where its statistics, bases and moments stay.
    owners = [owners_of(g_leaves, plans, grp) for grp in groups]
    owned = per_statistic(groups, owners)
    place = lambda xs, os: [x if o is None else o.place(x) for x, o in zip(xs, os)]
    old = tuple(place(state.bases, owned))
    at = len(groups)  # mu, nu: the group stacks, then one entry per leaf
    mu = place(state.mu[0], owners) + treedef.flatten_up_to(state.mu[1])
    nu = place(state.nu[0], owners) + treedef.flatten_up_to(state.nu[1])

    def adam(x, m, v, c1, c2):
      m2, v2 = moments.ema_leaf(b1, m, x), moments.ema_sq_leaf(b2, v, x)
      return moments.debias_leaf(m2, c1) / (jnp.sqrt(moments.debias_leaf(v2, c2)) + eps), m2, v2

    # Adam in the basis of the previous steps' statistics: G' = Q_Lᵀ G Q_R, then back, one
    # stack per group of one padded block shape. A rotated leaf makes no update at step 0
    # (it has no basis yet), so its Adam count is one less than the step count; a leaf
    # without a basis is plain Adam.
    live = step > 0
    corr = [(moments.correction(b1, k), moments.correction(b2, k)) for k in (count, step)]
    out, new_mu, new_nu = [None] * len(g), list(mu), list(nu)
    for j in plain:
      k = at + j
      out[j], new_mu[k], new_nu[k] = adam(g[j], mu[k], nu[k], *corr[0])
    gb, it = [], 0
    for k, (grp, own) in enumerate(zip(groups, owners)):
      r = sum(grp.precond)
      q = old[it:it + r]
      it += r
      gb.append(gather(g, plans, grp, own))
      # The padded coordinates of G' are exactly 0 (the bases keep them apart), and so are
      # the moments and the normalized step there.
      n, m2, v2 = adam(contract_axes(gb[-1], q, grp.precond), mu[k], nu[k], *corr[1])
      new_mu[k], new_nu[k] = jnp.where(live, m2, mu[k]), jnp.where(live, v2, nu[k])
      n = contract_axes(n, [jnp.swapaxes(b, -1, -2) for b in q], grp.precond)
      for j, u in scatter(n, plans, grp, likes=g_leaves, owners=own).items():
        out[j] = jnp.where(live, u, jnp.zeros_like(u))

    # Then the statistics, and the basis for the next step: eigh at step 0, a power
    # iteration every ``interval`` steps (moving m and v into it).
    stats, it = [], iter(place(state.stats, owned))
    for grp, x in zip(groups, gb):
      for i, use in enumerate(grp.precond):
        if use:
          stats.append(stat_update(next(it), x, i, beta_s))
    stats = tuple(stats)
    masks = place(blocking_masks(plans, groups, dtype), owned)

    # A basis that is not finite keeps the old one (refresh_by_shape's ``keep``). Only the
    # group stacks of m and v go through the switch (the leaves without a basis do not move).
    stacks = (tuple(new_mu[:at]), tuple(new_nu[:at]))

    def first():  # m and v are still zero: nothing to rotate
      new = refresh_by_shape(eigenbasis_eigh, stats, masks, mesh=mesh, axis=axis, owned=owned,
                             keep=old)
      return (tuple(q.astype(o.dtype) for q, o in zip(new, old)),) + stacks

    def refresh():
      new = refresh_by_shape(eigenbasis_power_qr, stats, old, masks, mesh=mesh, axis=axis,
                             owned=owned, keep=old)
      new = [q.astype(o.dtype) for q, o in zip(new, old)]
      return (tuple(new),) + tuple(map(tuple, rotate_all(*stacks, groups, old, new)))

    branch = jnp.where(step == 0, 0, jnp.where(step % interval == 0, 1, 2))
    bases, gm, gv = jax.lax.switch(branch, [first, refresh, lambda: (old,) + stacks])
    new_mu, new_nu = list(gm) + new_mu[at:], list(gv) + new_nu[at:]
    out = [u.astype(x.dtype) for u, x in zip(out, g_leaves)]
    moment = lambda xs: (tuple(xs[:at]), jax.tree.unflatten(treedef, xs[at:]))
    state = ScaleBySoapState(count, moment(new_mu), moment(new_nu), stats, bases)
    return jax.tree.unflatten(treedef, out), state

  return _base.GradientTransformation(init, update)
