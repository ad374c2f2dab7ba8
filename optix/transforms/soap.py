"""SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024, arXiv 2409.11321), on the block
views of :mod:`optix.transforms.blocking` and the eigenbases of :mod:`optix.transforms.roots`."""

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms import moments
from optix._sharding import check_axis
from optix.transforms.blocking import (
    block_size_of, check_shapes, contract_axes, gather, group_plans, init_stats, make_plan,
    crop_blocks, masks as blocking_masks, pad_blocks, refresh_by_shape, scatter, split,
    stat_update)
from optix.transforms.roots import eigenbasis_eigh, eigenbasis_power_qr, finite_or

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
  mu: _base.Updates      # Adam's first moment in the eigenbasis: (N, b..) block stacks
  nu: _base.Updates      # Adam's second moment in the eigenbasis: (N, b..) block stacks
  stats: tuple           # Kronecker statistics (B, P, P), one per factor axis of each group
                         # of leaves with one padded block shape (blocking.group_plans)
  bases: tuple           # their eigenbases Q (B, P, P)


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
  the padding changes no update). State: 2·Σ P² fp32 per padded block (stats + bases) +
  8 bytes/param (the moments, on the real coordinates only).

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
    max_preconditioner_dim: axes longer than this are not rotated, an integer >= 0; 10000
      (the paper's). 0 makes every leaf plain Adam.
    precondition_1d: rotate 1-D leaves too (one basis of size n); False: biases and gains
      use plain Adam, as in the paper.
    state_dtype: (keyword-only) dtype of the moments, statistics and bases;
      ``jnp.float32``: the eigenbases need at least float32 (not validated).
    mesh: (keyword-only) a ``jax.sharding.Mesh`` to split the eigendecompositions and QRs
      over (the same result); None.
    axis: (keyword-only) that split's mesh axis (or axes); "data".

  Returns:
    A ``GradientTransformation``; its state is a :class:`ScaleBySoapState`. An argument out
    of its range raises ``ValueError`` at construction, naming it.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  beta_s = b2 if shampoo_beta is None else shampoo_beta
  _validate.in_range("shampoo_beta", beta_s, 0.0, 1.0, low_closed=False)
  check_shapes(block_size, max_preconditioner_dim, preconditioning_interval)
  check_axis(mesh, axis)
  bs = block_size_of(block_size)
  interval = preconditioning_interval

  def plans_of(leaves):
    return [make_plan(jnp.shape(x), bs, merge_small_dims, max_preconditioner_dim,
                       precondition_1d) for x in leaves]

  def nu_like(x, plan):
    shape = (plan.num_blocks,) + plan.block if plan.rank else jnp.shape(x)
    return jnp.zeros(shape, state_dtype)

  def init(params):
    _tree.check_real("scale_by_soap", params)
    leaves, treedef = jax.tree.flatten(params)
    plans = plans_of(leaves)
    stats, bases = init_stats(group_plans(plans), state_dtype)
    moment = lambda: jax.tree.unflatten(treedef, [
        nu_like(x, p) if p.rank else _tree.zeros_like(x, state_dtype)
        for x, p in zip(leaves, plans)])
    return ScaleBySoapState(jnp.zeros([], jnp.int32), moment(), moment(), stats, bases)

  def rotate_all(mu, nu, plans, groups, old, new):
    """m by the exact change of basis, v by the squared overlaps, one stack per group."""
    mu, nu, it = list(mu), list(nu), 0
    for grp in groups:
      k = sum(grp.precond)
      o, n = old[it:it + k], new[it:it + k]
      it += k
      overlap = [jnp.matmul(jnp.swapaxes(a, -1, -2), b, precision=_HI) for a, b in zip(o, n)]
      stack = lambda xs: jnp.concatenate([pad_blocks(xs[j], plans[j]) for j in grp.members])
      m = split(contract_axes(stack(mu), overlap, grp.precond), grp)
      v = split(rotate_second_moment(stack(nu), o, n, grp.precond), grp)
      for j, mj, vj in zip(grp.members, m, v):
        mu[j], nu[j] = crop_blocks(mj, plans[j]), crop_blocks(vj, plans[j])
    return mu, nu

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_real("scale_by_soap", updates)
    g_leaves, treedef = jax.tree.flatten(updates)
    plans = plans_of(g_leaves)
    groups = group_plans(plans)
    expected = jax.tree.unflatten(treedef, [
        jax.ShapeDtypeStruct(nu_like(x, p).shape if p.rank else jnp.shape(x), state_dtype)
        for x, p in zip(g_leaves, plans)])
    _tree.check_match("updates (in SOAP's block layout)", expected, "state.mu", state.mu)
    step, count = state.count, _tree.safe_increment(state.count)
    g = [x.astype(state_dtype) for x in g_leaves]
    old, mu, nu = tuple(state.bases), jax.tree.leaves(state.mu), jax.tree.leaves(state.nu)

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
    for j, plan in enumerate(plans):
      if not plan.rank:
        out[j], new_mu[j], new_nu[j] = adam(g[j], mu[j], nu[j], *corr[0])
    gb, it = [], 0
    for grp in groups:
      k = sum(grp.precond)
      q = old[it:it + k]
      it += k
      gb.append(gather(g, plans, grp))
      ns = []
      for j, x in zip(grp.members, split(contract_axes(gb[-1], q, grp.precond), grp)):
        # The padded coordinates of G' are exactly 0 (the bases keep them apart): the
        # moments are kept on the real ones only.
        n, m2, v2 = adam(crop_blocks(x, plans[j]), mu[j], nu[j], *corr[1])
        new_mu[j], new_nu[j] = jnp.where(live, m2, mu[j]), jnp.where(live, v2, nu[j])
        ns.append(pad_blocks(n, plans[j]))
      n = contract_axes(ns[0] if len(ns) == 1 else jnp.concatenate(ns),
                        [jnp.swapaxes(b, -1, -2) for b in q], grp.precond)
      for j, u in scatter(n, plans, grp, likes=g_leaves).items():
        out[j] = jnp.where(live, u, jnp.zeros_like(u))

    # Then the statistics, and the basis for the next step: eigh at step 0, a power
    # iteration every ``interval`` steps (moving m and v into it).
    stats, it = [], iter(state.stats)
    for grp, x in zip(groups, gb):
      for i, use in enumerate(grp.precond):
        if use:
          stats.append(stat_update(next(it), x, i, beta_s))
    stats = tuple(stats)
    masks = blocking_masks(plans, groups, state_dtype)

    def first():  # m and v are still zero: nothing to rotate
      new = [finite_or(q, o).astype(o.dtype)
             for q, o in zip(refresh_by_shape(eigenbasis_eigh, stats, masks, mesh=mesh,
                                              axis=axis), old)]
      return tuple(new), new_mu, new_nu

    def refresh():
      new = [finite_or(q, o).astype(o.dtype)
             for q, o in zip(refresh_by_shape(eigenbasis_power_qr, stats, old, masks, mesh=mesh,
                                              axis=axis), old)]
      return (tuple(new),) + tuple(rotate_all(new_mu, new_nu, plans, groups, old, new))

    branch = jnp.where(step == 0, 0, jnp.where(step % interval == 0, 1, 2))
    bases, new_mu, new_nu = jax.lax.switch(branch, [first, refresh,
                                                    lambda: (old, new_mu, new_nu)])
    out = [u.astype(x.dtype) for u, x in zip(out, g_leaves)]
    state = ScaleBySoapState(count, jax.tree.unflatten(treedef, new_mu),
                             jax.tree.unflatten(treedef, new_nu), stats, bases)
    return jax.tree.unflatten(treedef, out), state

  return _base.GradientTransformation(init, update)
