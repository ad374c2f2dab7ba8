r"""K-FAC: Kronecker-factored curvature from layer statistics (Martens & Grosse 2015).

Two halves:

* **Capture** (:mod:`optix.contrib.nnx`, needs Flax: ``pip install optix[flax]``).
  :func:`~optix.contrib.nnx.kfac_tap` wraps every ``nnx.Linear`` of a model so
  that one ordinary backward pass gives the gradient and the statistics
  (:class:`LayerStats`) together: :func:`~optix.contrib.nnx.kfac_value_and_grad`.
  Any other source of the same sums works too (they are plain arrays).
* **Preconditioning.** :func:`scale_by_kfac` is a gradient transformation taking
  those statistics as the keyword extra argument ``kfac_stats``.

The training step::

    model = optix.kfac_tap(MLP(..., rngs=nnx.Rngs(0)))   # wraps each nnx.Linear, in place
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optix.kfac(learning_rate=0.2, damping=1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, rest, opt_state, x, y):
      model = nnx.merge(graphdef, params, rest)
      loss, grads, stats = optix.kfac_value_and_grad(loss_fn, model, x, y)  # loss_fn(model, x, y)
      updates, opt_state = tx.update(grads, opt_state, params, kfac_stats=stats)
      return optix.apply_updates(params, updates), opt_state, loss

Statistics of the *empirical* Fisher come from the training loss; for the true
Fisher, call ``kfac_value_and_grad`` a second time on a loss with labels
sampled from the model and pass those ``stats`` (same gradient otherwise).
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


# ---------------------------------------------------------------- statistics


class LayerStats(NamedTuple):
  r"""One layer's statistics from one batch, sums over its rows (batch × positions).

  Args:
    aa: :math:`\sum_n \bar a_n \bar a_n^\top` of the layer's inputs :math:`\bar a_n`
      (with a trailing 1 when the layer has a bias), shape (d_in [+1], d_in [+1]).
    gg: :math:`\sum_n g_n g_n^\top` with :math:`g_n = \partial L/\partial y_n`,
      shape (d_out, d_out).
    count: the number of rows n summed over (a float32 scalar).
  """
  aa: jax.Array
  gg: jax.Array
  count: jax.Array


def _key_name(entry):
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def path_str(path) -> str:
  """``("layers", 0, "layer")`` or a jax key path -> ``"layers/0/layer"`` (a Variable's
  trailing ``.value`` dropped).

  Args:
    path: a sequence of names/indices or of jax key-path entries (``DictKey``,
      ``SequenceKey``, ``GetAttrKey``, ...), e.g. from
      ``jax.tree_util.tree_flatten_with_path``.

  Returns:
    The ``/``-joined path string (the layer names ``kfac_stats`` is keyed by).
  """
  names = [_key_name(e) for e in path
           if not (isinstance(e, jax.tree_util.GetAttrKey) and e.name == "value")]
  return "/".join(names)


# ---------------------------------------------------------------- preconditioning


class ScaleByKfacState(NamedTuple):
  count: jax.Array    # int32, saturating
  a: dict             # per layer: EMA of A = E[ā āᵀ]
  g: dict             # per layer: EMA of G = E[g gᵀ] (n-scaled, see scale_by_kfac)
  a_inv: dict         # per layer: (A + π√λ I)⁻¹, refreshed every inverse_update_period
  g_inv: dict         # per layer: (G + √λ/π I)⁻¹
  diag: _base.Updates  # EMA of g², the diagonal fallback's curvature


def _blocks(params):
  """{layer path: (kernel path, bias path or None)} for every 2-D ``kernel`` leaf."""
  leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  out = {}
  for name, x in leaves.items():
    parent, _, leaf = name.rpartition("/")
    if leaf == "kernel" and jnp.ndim(x) == 2:
      bias = f"{parent}/bias" if parent else "bias"
      has_bias = bias in leaves and jnp.shape(leaves[bias]) == (jnp.shape(x)[1],)
      out[parent] = (name, bias if has_bias else None)
  return out


def _damped_inverse(m, damping):
  """(M + damping·I)⁻¹ for a symmetric PSD M, by Cholesky (several times faster than
  ``eigh`` on CPU; M + damping·I is positive definite)."""
  eye = jnp.eye(m.shape[0], dtype=m.dtype)
  factor = jax.scipy.linalg.cho_factor(m + damping * eye, lower=True)
  return jax.scipy.linalg.cho_solve(factor, eye)


def scale_by_kfac(damping: _base.ScalarOrSchedule = 1e-3, ema_decay: float = 0.95,
                  inverse_update_period: int = 5, kl_clip: Optional[float] = None,
                  learning_rate: Optional[_base.ScalarOrSchedule] = None,
                  min_factor_damping: float = 1e-8, *, state_dtype=None,
                  require_stats: bool = True) -> _base.GradientTransformation:
  r"""K-FAC preconditioning (Martens & Grosse 2015, arXiv 1503.05671).

  For a dense layer with kernel W (d_in × d_out) and bias b, and the statistics of
  one batch (keyword extra argument ``kfac_stats``, from :func:`optix.contrib.nnx.kfac_value_and_grad`):

  .. math::
     \hat A = \tfrac1n \textstyle\sum \bar a \bar a^\top,\quad
     \hat G = n \textstyle\sum g g^\top,\quad
     A_t = \rho A_{t-1} + (1-\rho)\hat A,\quad G_t = \rho G_{t-1} + (1-\rho)\hat G

  (debiased by :math:`1-\rho^t`; with the loss a mean over n rows, :math:`A\otimes G`
  is the Fisher block :math:`E[\bar a\bar a^\top]\otimes E[g_n g_n^\top]`,
  :math:`g_n` the per-example output gradient). Every ``inverse_update_period``
  steps (under ``lax.cond``) the factored Tikhonov damping with the π-correction
  (paper §6.3) is inverted (Cholesky):

  .. math::
     \pi = \sqrt{\frac{\operatorname{tr}A/\dim A}{\operatorname{tr}G/\dim G}},\quad
     U = (A + \pi\sqrt\lambda I)^{-1} \,[\nabla_W; \nabla_b^\top]\, (G + \tfrac{\sqrt\lambda}{\pi} I)^{-1}

  Leaves without statistics (norm scales, conv kernels, embeddings, layers absent
  from ``kfac_stats``, every layer in a step given ``kfac_stats={}``) get the diagonal analogue :math:`u = g / (\hat v + \lambda)`,
  :math:`v` the EMA of :math:`g^2`. With ``kl_clip`` = κ (needs ``learning_rate`` η),
  all updates are scaled by :math:`\min(1, \sqrt{\kappa / (\eta^2 |\sum u\cdot g|)})`,
  bounding the step's predicted KL change (Ba et al. 2017, arXiv 1611.02779).

  Defaults: ``damping=1e-3`` suits mean cross-entropy / squared losses with
  learning rates 0.1-1; ``ema_decay=0.95`` (paper); inverses every 5 steps cost
  one Cholesky inverse per factor per 5 steps, which on small models is most of the cost.
  Blocks: every 2-D leaf named ``kernel`` with its sibling ``bias``. State: the
  factors and their inverses ((d_in+1)² + d_out²)·2 floats per layer, plus one
  float per param for the fallback, each in ``state_dtype`` (None: at least
  float32, the kernel's kind, so float64 params keep float64 factors). Real params
  only: complex leaves raise ``ValueError`` naming them.

  An ``update`` without the ``kfac_stats`` argument, on params that have dense
  layers, raises ``ValueError`` (e.g. ``nnx.Optimizer.update(model, grads)``
  without ``kfac_stats=stats``: K-FAC would silently train as a diagonal
  preconditioner); ``require_stats=False`` allows it, and every layer then takes
  the diagonal fallback for that step.

  Args:
    damping: Tikhonov damping λ >= 0, a float or a schedule of the step count;
      1e-3 (see above). Also the diagonal fallback's denominator offset.
    ema_decay: ρ in [0, 1), decay of the factor EMAs (and the fallback's
      :math:`g^2` EMA); 0.95 (the paper's).
    inverse_update_period: int >= 1, steps between refreshes of the damped
      inverses; 5 (1 inverts every step: exact but the most costly).
    kl_clip: κ > 0, the bound on the step's predicted KL change; None (default)
      disables the clip. Needs ``learning_rate``.
    learning_rate: η, a float >= 0 (finite) or a schedule, used only by
      ``kl_clip`` (it does not scale the updates: chain a learning rate after,
      as :func:`optix.kfac` does); None (default), required when ``kl_clip``
      is given.
    min_factor_damping: floor >= 0 on each factor's traces in π and on its
      damping :math:`\pi\sqrt\lambda`, :math:`\sqrt\lambda/\pi`; 1e-8
      keeps the Cholesky well defined for layers with zero statistics.
    state_dtype: dtype of the factors, inverses and fallback EMA; None is the
      policy: at least float32 and the kernel's kind.
    require_stats: a bool; True (default) raises when ``update`` gets no
      ``kfac_stats`` for params with dense layers; False takes the diagonal
      fallback instead.

  Returns:
    A ``GradientTransformation`` (taking the extra argument ``kfac_stats``: a
    dict of layer path -> :class:`LayerStats`) whose state is
    ``ScaleByKfacState``.
  """
  if not isinstance(require_stats, bool):
    raise ValueError(f"require_stats must be a bool, got {require_stats!r}")
  _validate.nonnegative("damping", damping)
  _validate.unit_interval("ema_decay", ema_decay)
  period = _validate.integer("inverse_update_period", inverse_update_period, low=1,
                             static=False)
  if kl_clip is not None:
    _validate.positive("kl_clip", kl_clip)
    if learning_rate is None:
      raise ValueError("learning_rate must be given with kl_clip, got None")
  if learning_rate is not None:
    _validate.learning_rate("learning_rate", learning_rate)
  _validate.nonnegative("min_factor_damping", min_factor_damping)

  def init(params):
    _tree.check_real("scale_by_kfac", params)
    blocks = _blocks(params)
    leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    dims = {k: (leaves[kp].shape[0] + (bp is not None), leaves[kp].shape[1],
                _tree.state_dtype_for(leaves[kp], state_dtype))
            for k, (kp, bp) in blocks.items()}
    return ScaleByKfacState(jnp.zeros([], jnp.int32),
                            {k: jnp.zeros((i, i), dt) for k, (i, o, dt) in dims.items()},
                            {k: jnp.zeros((o, o), dt) for k, (i, o, dt) in dims.items()},
                            {k: jnp.eye(i, dtype=dt) for k, (i, o, dt) in dims.items()},
                            {k: jnp.eye(o, dtype=dt) for k, (i, o, dt) in dims.items()},
                            _tree.zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params
    _tree.check_real("scale_by_kfac", updates)
    _tree.check_match("updates", updates, "state.diag", state.diag)
    stats = extra_args.get("kfac_stats")
    if stats is None and require_stats and state.a:
      raise ValueError(
          "scale_by_kfac got no kfac_stats for the dense layers "
          f"{sorted(state.a)[:5]}: pass kfac_stats=stats each step (from "
          "optix.contrib.nnx.kfac_value_and_grad; with nnx.Optimizer: "
          "optimizer.update(model, grads, kfac_stats=stats)), or build with "
          "require_stats=False to take the diagonal fallback when they are absent")
    stats = stats or {}
    unknown = sorted(set(stats) - set(state.a))
    if unknown:
      raise ValueError(f"kfac_stats has layers with no 2-D kernel in the params: {unknown}; "
                       f"layers are {sorted(state.a)}")
    count = _tree.safe_increment(state.count)
    lam = damping(count) if callable(damping) else damping
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    names = [path_str(p) for p, _ in flat]
    diag_flat = jax.tree.leaves(state.diag)
    grads = {n: g.astype(v.dtype) for n, (_, g), v in zip(names, flat, diag_flat)}
    blocks = {k: v for k, v in _blocks(updates).items() if k in stats}
    correction = lambda dt: 1.0 - ema_decay ** count.astype(dt)  # EMA debiasing

    # 1. Factor EMAs (only for layers with statistics this step).
    a, g = dict(state.a), dict(state.g)
    for k in blocks:
      s, dt = stats[k], state.a[k].dtype
      n = jnp.maximum(jnp.asarray(s.count, dt), 1.0)
      a[k] = ema_decay * state.a[k] + (1 - ema_decay) * (s.aa.astype(dt) / n)
      g[k] = ema_decay * state.g[k] + (1 - ema_decay) * (s.gg.astype(dt) * n)

    # 2. Damped inverses, every `period` steps (and at the first).
    def refresh(_):
      a_inv, g_inv = dict(state.a_inv), dict(state.g_inv)
      for k in blocks:
        ak, gk = a[k] / correction(a[k].dtype), g[k] / correction(g[k].dtype)
        mean_a = jnp.trace(ak) / ak.shape[0]
        mean_g = jnp.trace(gk) / gk.shape[0]
        pi = jnp.sqrt(jnp.maximum(mean_a, min_factor_damping) /
                      jnp.maximum(mean_g, min_factor_damping))
        root = jnp.sqrt(lam)
        a_inv[k] = _damped_inverse(ak, jnp.maximum(pi * root, min_factor_damping))
        g_inv[k] = _damped_inverse(gk, jnp.maximum(root / pi, min_factor_damping))
      return a_inv, g_inv

    a_inv, g_inv = jax.lax.cond((count - 1) % period == 0, refresh,
                                lambda _: (dict(state.a_inv), dict(state.g_inv)), None)

    # 3. Precondition: U = A⁻¹ [∇W; ∇bᵀ] G⁻¹ per block, diagonal elsewhere.
    out, done = {}, set()
    hi = jax.lax.Precision.HIGHEST
    for k, (kp, bp) in blocks.items():
      m = grads[kp] if bp is None else jnp.concatenate([grads[kp], grads[bp][None]], axis=0)
      m = m.astype(a_inv[k].dtype)
      u = jnp.matmul(jnp.matmul(a_inv[k], m, precision=hi), g_inv[k], precision=hi)
      out[kp] = u[:grads[kp].shape[0]]
      done.add(kp)
      if bp is not None:
        out[bp] = u[-1]
        done.add(bp)
    new_diag = []
    for n, v in zip(names, diag_flat):
      if n in done:
        new_diag.append(v)
        continue
      v = ema_decay * v + (1 - ema_decay) * jnp.square(grads[n]).astype(v.dtype)
      out[n] = grads[n] / (v / correction(v.dtype) + lam)
      new_diag.append(v)

    # 4. Optional KL clipping of the whole step.
    if kl_clip is not None:
      lr = learning_rate(count) if callable(learning_rate) else learning_rate
      quad = jnp.abs(sum(jnp.vdot(out[n], grads[n]) for n in names))
      nu = jnp.minimum(1.0, jnp.sqrt(kl_clip / jnp.maximum(lr * lr * quad, 1e-30)))
      out = {n: nu * u for n, u in out.items()}

    result = jax.tree.unflatten(treedef, [out[n].astype(x.dtype) for n, (_, x) in zip(names, flat)])
    new_state = ScaleByKfacState(count, a, g, a_inv, g_inv,
                                 jax.tree.unflatten(jax.tree.structure(state.diag), new_diag))
    return result, new_state

  return _base.GradientTransformation(init, update)
