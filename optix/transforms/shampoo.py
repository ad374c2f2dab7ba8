"""Shampoo with grafting (Gupta et al. 2018, arXiv 1802.09568; Anil et al. 2020,
arXiv 2002.09018), on the block views of :mod:`optix.transforms.blocking` and the roots of
:mod:`optix.transforms.roots`; exponent overrides (one-sided Shampoo and others)."""

import numbers
from typing import Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix._sharding import check_axis, replicated
from optix.transforms import moments
from optix.transforms.blocking import (
    block_size_of, check_shapes, check_stacked_axes, contract_axes, gather, group_plans,
    init_stats, make_plan, masks as blocking_masks, owners_of, pad_plan, per_statistic,
    refresh_by_shape, scatter, stacked_of, stat_update, stats_dtype)
from optix.transforms.roots import inverse_pth_root_eigh, inverse_pth_root_newton
from optix.transforms.stacking import sq_norms

GRAFTS = ("adam", "rmsprop", "adagrad")
ROOT_METHODS = ("eigh", "newton")


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


class ScaleByShampooState(NamedTuple):
  count: jax.Array        # int32, saturating: steps taken
  mu: _base.Updates       # momentum of the gradient (EMA), like params
  nu: _base.Updates       # the graft's second moment, like params
  stats: tuple            # Kronecker statistics: one (B, P, P) per factor axis of each group
                          # of leaves with one padded block shape (blocking.group_plans)
  roots: tuple            # their roots L^{-e} (default e = 1/(2·rank)), refreshed every interval


def scale_by_shampoo(beta2: float = 0.999, preconditioning_interval: int = 10,
                     start_preconditioning_step: int = 10, b1: float = 0.9,
                     nesterov: bool = False, graft: str = "adam", graft_b2: float = 0.999,
                     graft_eps: float = 1e-8, ridge_epsilon: float = 1e-6,
                     root_method: str = "eigh", block_size: Optional[int] = None,
                     merge_small_dims: bool = True, max_preconditioner_dim: Optional[int] = None,
                     *, inverse_exponent_override: ExponentOverride = None,
                     state_dtype=None, mesh=None, axis="data",
                     stacked_axes=None) -> _base.GradientTransformation:
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

  where :math:`\tilde L^{-1/4} = (L + \epsilon \lambda_{max} I)^{-1/4}` is recomputed
  (``root_method`` "eigh" or "newton") every ``preconditioning_interval`` steps from step
  ``start_preconditioning_step`` on, under ``lax.cond``; a root that is not finite
  keeps the previous one. :math:`a_t` is the graft, whose per-layer norm :math:`u_t`
  inherits: ``graft="adam"`` (:math:`v` an EMA of :math:`g^2` with ``graft_b2``,
  bias-corrected), ``"rmsprop"`` (same, uncorrected) or ``"adagrad"`` (:math:`v` a running
  sum). Before ``start_preconditioning_step`` the update is the graft itself, i.e. exactly
  Adam (``optax.adam``; ``nesterov``: ``optax.nadam``). Leaves with no preconditioned
  axis (scalars; axes longer than ``max_preconditioner_dim``) always use the graft.

  Momentum is taken before preconditioning (the preconditioner is applied to
  :math:`\hat m_t`), which makes the graft an exact Adam. Shapes: see
  :mod:`optix.transforms.blocking` (blocks zero-padded to a few standard sizes and stacked
  across leaves, exactly: the padding changes no update). State: statistics and roots
  8·Σ P² bytes per padded block (fp32), + 8 bytes/param. On an Explicit mesh with sharded
  leaves (FSDP), a group's blocks are owned (see :mod:`optix.transforms.blocking`): each
  device keeps the statistics and roots of its share of the blocks and preconditions those,
  and only the blocks of the gradient and of :math:`\hat m_t` and the preconditioned
  results move, one all-to-all each.

  ``inverse_exponent_override`` (modelled on the argument of that name in Meta's
  Distributed Shampoo, Shi et al. 2023, arXiv 2309.06497) replaces the default exponent
  :math:`1/(2k)` of the factors, :math:`P_t = \tilde L^{-e_0} \hat m_t \tilde R^{-e_1}`
  for a matrix: ``{order: e}`` gives every factor of a block of that order the exponent
  ``e``, ``{order: {axis: e}}`` only the named axes (the others keep :math:`1/(2k)`);
  orders no block has are ignored. ``order`` and ``axis`` refer to the block view (size-1
  axes dropped, small axes merged: a matrix has order 2, axis 0 its rows, the input side of
  ``x @ W``); ``k`` is the number of axes that have a factor before the override (an axis
  longer than ``max_preconditioner_dim`` has none, whatever the override says). ``e = 0``
  leaves that axis without a factor: no statistic, no root, no memory; a block left with
  none is updated by the graft. The graft sets the norm of :math:`u_t`, so the exponents
  only shape its direction.

  One-sided Shampoo, ``{2: {0: 0.5, 1: 0.0}}``, is :math:`u \propto L^{-1/2} \hat m`:
  full-matrix AdaGrad on each column, all columns sharing one statistic (An et al.
  2025, "ASGO", arXiv 2503.20762; Xie et al. 2025, arXiv 2503.10537, prove a better
  rate for it than for two-sided Shampoo). It is the right structure when the
  curvature sits on one side, as for a linear layer whose loss Hessian is
  :math:`\Sigma_x \otimes I` (:math:`\Sigma_x` the input covariance): there
  :math:`G = 2 \Sigma_x (W - W^*)`, the output side needs no preconditioning, yet
  :math:`R = \sum G^\top G` has the same nonzero spectrum as :math:`L`, so the default
  :math:`R^{-1/4}` adds conditioning the loss does not have. On the κ = 100
  least-squares problem of tests/test_kronecker.py its loss stays below the target from step
  19, two-sided Shampoo's from step 48 and tuned Adam's from step 139.

  Args:
    beta2: decay of the statistics' EMA :math:`\beta_2`, in (0, 1]; 0.999 (Anil et al.).
      1 keeps running sums (the original Shampoo's AdaGrad-like statistics).
    preconditioning_interval: steps between two root computations, an integer >= 1; 10
      amortizes the roots, the expensive part, over ten steps.
    start_preconditioning_step: the first step that computes roots and preconditions, an
      integer >= 0; 10: the first steps run the graft alone while the statistics fill.
    b1: decay of the momentum :math:`\beta_1`, in [0, 1); 0.9 (Adam's).
    nesterov: Nesterov's look-ahead momentum (the graft is then NAdam); False.
    graft: the update whose per-layer norm the preconditioned direction takes, one of
      "adam", "rmsprop", "adagrad"; "adam" (Anil et al.).
    graft_b2: decay of the graft's second-moment EMA, in [0, 1); 0.999 (Adam's).
      Unused by the "adagrad" graft.
    graft_eps: added to :math:`\sqrt{\hat v}` in the graft's denominator, >= 0; 1e-8
      (Adam's).
    ridge_epsilon: the ridge :math:`\epsilon`, relative to :math:`\lambda_{max}` of each
      statistic, >= 0; 1e-6 (Anil et al.): it bounds the root's condition number where
      the statistic is rank-deficient.
    root_method: "eigh" (one eigendecomposition) or "newton" (the coupled Newton
      iteration, matmuls only, integer roots only); "eigh": exact up to float32.
    block_size: the longest preconditioned block, an integer >= 1, or None for 1024 on
      every backend (state shapes, and so checkpoints, do not depend on the backend; on a
      CPU a 1024-block's eigh is slow: 512 is a good choice there).
    merge_small_dims: merge adjacent axes while their product stays within ``block_size``
      (a conv kernel 3×3×64×128 becomes 576×128); True.
    max_preconditioner_dim: axes longer than this get no factor, an integer >= 0; None
      (default): 8192 (a larger statistic costs more than it helps; None, so that
      ``optax.inject_hyperparams`` does not inject this shape-setting argument). 0 turns
      every factor off.
    inverse_exponent_override: (keyword-only) None, or exponents by block order (and axis),
      each in [0, 1]; with ``root_method="newton"`` every nonzero one must be ``1/p``,
      ``p`` an integer; None: :math:`1/(2k)` everywhere.
    state_dtype: (keyword-only) dtype of the moments, statistics and roots; None
      (default): float32, float64 where the params are float64 (the roots need at
      least float32; a narrower dtype is not validated).
    mesh: (keyword-only) a ``jax.sharding.Mesh`` to split each refresh's roots over
      (:func:`refresh_by_shape`; the same result); None: every device computes them all.
      Leaves sharded on an Explicit mesh (FSDP) need none: their blocks are owned.
    axis: (keyword-only) the mesh axis (or axes) of that split, one of ``mesh``'s;
      "data".
    stacked_axes: (keyword-only) how many leading axes of each leaf index stacked layers
      (e.g. 1 for the kernels of an ``nn.scan``-ed block): each layer is preconditioned
      exactly as a leaf of its own (its own statistics, roots and graft norm; no
      statistic over the stacked axes; ``inverse_exponent_override``'s orders and axes
      are the layer's). An int ``k`` with ``0 <= k <= ndim`` for every leaf, a tree of
      them like the params (or a prefix of them), or a callable params -> such a tree;
      None (default) is 0 everywhere, a leaf is one layer (None, so that
      ``optax.inject_hyperparams`` does not inject this shape-setting argument; a value
      other than None must be named in its ``static_args``, or a callable is taken for a
      schedule).

  Returns:
    A ``GradientTransformation`` whose state is a :class:`ScaleByShampooState`.

  Raises:
    ValueError: at construction, naming the argument, when one is out of the range above.
  """
  _validate.in_range("beta2", beta2, 0.0, 1.0, low_closed=False)
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("graft_b2", graft_b2)
  _validate.nonnegative("graft_eps", graft_eps)
  _validate.nonnegative("ridge_epsilon", ridge_epsilon)
  _validate.integer("start_preconditioning_step", start_preconditioning_step, low=0,
                    static=False)
  _validate.one_of("graft", graft, GRAFTS)
  _validate.one_of("root_method", root_method, ROOT_METHODS)
  override = _check_exponent_override(inverse_exponent_override, root_method)
  max_preconditioner_dim = check_shapes(
      block_size, 8192 if max_preconditioner_dim is None else max_preconditioner_dim,
      preconditioning_interval)
  _validate.dtype("state_dtype", state_dtype)
  check_axis(mesh, axis)
  check_stacked_axes(stacked_axes)
  bs = block_size_of(block_size)
  interval, start = preconditioning_interval, start_preconditioning_step

  def plans_of(tree):
    """Plans with ``precond`` False where the exponent is 0 (blocks padded for that), their
    groups, and each statistic's exponent (group order, then axis order)."""
    plans, leaf_exps = [], []
    for x, k in zip(jax.tree.leaves(tree), stacked_of(stacked_axes, tree)):
      plan = make_plan(jnp.shape(x), bs, merge_small_dims, max_preconditioner_dim, stacked=k)
      e = _exponents(plan, override)
      plans.append(pad_plan(plan._replace(precond=tuple(v > 0 for v in e)), bs))
      leaf_exps.append(e)
    groups = group_plans(plans)  # one group: one order and one set of factor axes
    for grp in groups:  # (an axis without a factor has a different block length)
      assert all(leaf_exps[j] == leaf_exps[grp.members[0]] for j in grp.members), grp
    exps = [v for grp in groups for v in leaf_exps[grp.members[0]] if v > 0]
    return plans, groups, exps

  def root_fn(p):
    if root_method == "eigh":  # a spectral function: exact on padded statistics as it is
      return lambda a, mask, eps: inverse_pth_root_eigh(a, p, eps)
    return lambda a, mask, eps: inverse_pth_root_newton(a, p, eps, mask=mask)

  def refresh(stats, roots, exponents, masks, owned):
    new, out = list(roots), None
    for p in sorted(set(exponents)):
      idx = [j for j, e in enumerate(exponents) if e == p]
      out = refresh_by_shape(root_fn(p), [stats[j] for j in idx], [masks[j] for j in idx],
                             mesh=mesh, axis=axis, after=out, owned=[owned[j] for j in idx],
                             args=(ridge_epsilon,), keep=[roots[j] for j in idx])
      for j, r in zip(idx, out):
        new[j] = r.astype(roots[j].dtype)
    return tuple(new)

  def init(params):
    _tree.check_real("scale_by_shampoo", params)
    leaves = jax.tree.leaves(params)
    plans, groups, _ = plans_of(params)
    dtype = stats_dtype(leaves, state_dtype)
    stats, roots = init_stats(groups, dtype, [owners_of(leaves, plans, grp) for grp in groups])
    return ScaleByShampooState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, dtype),
                               _tree.zeros_like(params, dtype), stats, roots)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_real("scale_by_shampoo", updates)
    _tree.check_match("updates", updates, "state.mu", state.mu)
    g_leaves, treedef = jax.tree.flatten(updates)
    plans, groups, exps = plans_of(updates)
    exponents = [_root_order(e) for e in exps]  # p of L^{-1/p}, one per statistic
    step, count = state.count, _tree.safe_increment(state.count)
    dtype = stats_dtype(jax.tree.leaves(state.mu), state_dtype)
    g = [x.astype(dtype) for x in g_leaves]

    # Statistics, every step: one stack per group of one padded block shape; a group of
    # leaves sharded on an Explicit mesh is owned (blocking.owners_of): its blocks move to
    # their owners, and its statistics and roots stay split over them.
    owners = [owners_of(g_leaves, plans, grp) for grp in groups]
    owned = per_statistic(groups, owners)
    place = lambda xs: [x if o is None else o.place(x) for x, o in zip(xs, owned)]
    stats, it, xbs = [], iter(place(state.stats)), []
    for grp, own in zip(groups, owners):
      xb = gather(g, plans, grp, own)
      xbs.append(xb)
      for i, use in enumerate(grp.precond):
        if use:
          stats.append(stat_update(next(it), xb, i, beta2))
    stats = tuple(stats)
    masks = place(blocking_masks(plans, groups, dtype))
    old_roots = tuple(place(state.roots))
    do_refresh = (step >= start) & ((step - start) % interval == 0)
    roots = jax.lax.cond(do_refresh, lambda: refresh(stats, old_roots, exponents, masks, owned),
                         lambda: old_roots)

    # Momentum and graft.
    # (optix.transforms.moments: the arithmetic of optix.adam / optix.nadam, bit for bit)
    mu = [moments.ema_leaf(b1, m, x) for m, x in zip(jax.tree.leaves(state.mu), g)]
    nu_old = jax.tree.leaves(state.nu)
    if graft == "adagrad":
      nu = [v + jnp.square(x) for v, x in zip(nu_old, g)]
    else:
      nu = [moments.ema_sq_leaf(graft_b2, v, x) for v, x in zip(nu_old, g)]
    c1, c2 = moments.correction(b1, count), moments.correction(graft_b2, count)
    ahead = moments.correction(b1, _tree.safe_increment(count))

    def m_hat_of(m, x):
      return moments.nesterov_leaf(m, x, b1, c1, ahead) if nesterov else moments.debias_leaf(m, c1)

    def graft_of(m_hat, v):
      return m_hat / (jnp.sqrt(moments.debias_leaf(v, c2) if graft == "adam" else v) + graft_eps)

    grafted = [graft_of(m_hat_of(m, x), v) for m, x, v in zip(mu, g, nu)]

    # Preconditioned direction with the graft's per-layer norm. Under the cond (a step before
    # ``start`` stacks nothing but the gradient, for the statistics): m̂ stacked once per
    # group, the direction's stacks and one ratio per layer (a leaf, or each stacked layer of
    # one; ``pos``: a leaf's index into the ratios); the graft's squares are summed per layer
    # where the leaf is, the direction's in the stack (one reduction per group; the padding
    # is zero). Only the stacks and the ratios leave the cond (zeros before ``start``, shaped
    # like the gradient's stacks): the leaves are cut from them outside it, so the branches
    # do not carry every leaf.
    members = [j for grp in groups for j in grp.members]
    starts = np.cumsum([0] + [plans[j].layers for j in members]).tolist()
    pos = dict(zip(members, starts))

    def graft_sq(j):  # the graft's squares summed per layer: (layers,)
      sq, k = jnp.square(grafted[j]), len(plans[j].stacked)
      if not k:
        return jnp.sum(sq)[None]
      return replicated(jnp.sum(sq, axis=tuple(range(k, sq.ndim)))).reshape(-1)

    def preconditioned():
      ds, d_sq, a_sq, it = [], [], [], iter(roots)
      for grp, own in zip(groups, owners):
        mb = gather({j: m_hat_of(mu[j], g[j]) for j in grp.members}, plans, grp, own)
        a_sq.append(jnp.concatenate([graft_sq(j) for j in grp.members]))
        ds.append(contract_axes(mb, [next(it) for use in grp.precond if use], grp.precond))
        d_sq.append(sq_norms(ds[-1], grp, plans))
      d_norm, a_norm = (jnp.sqrt(jnp.concatenate(x)) for x in (d_sq, a_sq))
      return tuple(ds), jnp.where(d_norm > 0, a_norm / jnp.where(d_norm > 0, d_norm, 1), 0.0)

    def not_yet():
      return tuple(jnp.zeros_like(x) for x in xbs), jnp.zeros((starts[-1],), dtype)

    def ratio_of(j):  # leaf j's ratio, one per stacked layer broadcast over the layer
      plan = plans[j]
      if not plan.stacked:
        return ratio[pos[j]]
      r = ratio[pos[j]:pos[j] + plan.layers]
      return r.reshape(plan.stacked + (1,) * (len(plan.shape) - len(plan.stacked)))

    on = step >= start
    ds, ratio = jax.lax.cond(on, preconditioned, not_yet) if groups else ((), None)
    out = list(grafted)
    for grp, own, d in zip(groups, owners, ds):
      for j, dj in scatter(d, plans, grp, likes=grafted, owners=own).items():
        out[j] = jnp.where(on, dj * ratio_of(j), grafted[j])
    out = [u.astype(x.dtype) for u, x in zip(out, g_leaves)]
    state = ScaleByShampooState(count, jax.tree.unflatten(treedef, mu),
                                jax.tree.unflatten(treedef, nu), stats, roots)
    return jax.tree.unflatten(treedef, out), state

  return _base.GradientTransformation(init, update)
