"""Aliases for the matrix optimizers: short, visible chains of the pieces in
``optix.transforms.muon`` (and, below, the Kronecker-factored ones of
``optix.transforms.shampoo`` and ``optix.transforms.soap``)."""

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.optimizers import adamw
from optix.transforms.decay import MaskOrFn, add_decayed_weights
from optix.transforms.muon import (
    DEFAULT_NS_COEFFS, MuonDimensionNumbers, WeightDimNumOrFn,
    check_flag, resolve_dimension_numbers, scale_by_muon)
from optix.transforms.scaling import scale_by_learning_rate

AdamMask = Union[None, Sequence[str], Any, Callable[[_base.Params], Any]]


def _name_mask(names):
  """A mask that is True on leaves with a key-path component in ``names``; a name
  that matches no leaf raises ``ValueError`` (a misspelled name must not select
  nothing in silence)."""
  def mask(params):
    parts_of = lambda path: {str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                             for k in path}
    paths = [parts_of(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    seen = set().union(*paths) if paths else set()
    missing = [n for n in names if n not in seen]
    if missing:
      raise ValueError(f"adam_mask names {missing} match no param: the key-path components "
                       f"are {sorted(seen)[:20]}")
    return jax.tree_util.tree_map_with_path(lambda path, _: bool(parts_of(path) & set(names)),
                                            params)
  return mask


def muon_labels(muon_weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
                adam_mask: AdamMask = None):
  r"""The label function of :func:`muon`: params -> a tree of "muon" / "adam".

  .. math::
     \text{label}(p) = \text{"muon"} \iff d(p) \ne \text{None} \wedge \neg\,\text{adam\_mask}(p)

  where :math:`d(p)` is the leaf's dimension numbers (optax's rule); every other
  leaf is "adam". Print it on your params to see where each leaf goes.

  Args:
    muon_weight_dimension_numbers: None (optax's default: every 2-D leaf is a
      matrix, nothing else is); a ``MuonDimensionNumbers`` for every leaf; a tree
      of them like the params (or a prefix), where None marks a non-matrix; or a
      callable params -> such a tree. The same value :func:`muon` takes.
    adam_mask: (optix) leaves to label "adam" although they are matrices: key
      names (any key-path component equal to one of them, e.g.
      ``("embed", "head")``; a name that matches no param raises ``ValueError``
      when the labels are computed), a tree of bools like the params (or a
      prefix), or a callable params -> bools; None selects nothing.

  Returns:
    A function params -> a tree like the params of "muon" / "adam" strings
    (``optax.partition``'s ``param_labels``).
  """
  if isinstance(adam_mask, (list, tuple)) and all(isinstance(n, str) for n in adam_mask):
    adam_mask = _name_mask(tuple(adam_mask))

  def labels(params):
    extra = (jax.tree.map(lambda _: False, params) if adam_mask is None
             else adam_mask(params) if callable(adam_mask) else adam_mask)
    extra = [bool(m) for m in _tree.broadcast_leaves(extra, params)]
    leaves, treedef = jax.tree.flatten(params)
    if muon_weight_dimension_numbers is None:
      matrix = [jnp.ndim(p) == 2 for p in leaves]
    else:
      matrix = [d is not None for d in resolve_dimension_numbers(
          muon_weight_dimension_numbers, params)]
    return jax.tree.unflatten(treedef, [
        "muon" if m and not e else "adam" for m, e in zip(matrix, extra)])

  return labels


def muon(learning_rate: _base.ScalarOrSchedule,
         ns_coeffs: Union[Sequence[float], Sequence[Sequence[float]], str] = DEFAULT_NS_COEFFS,
         ns_steps: int = 5, beta: float = 0.95, eps: float = 1e-8,
         weight_decay: _base.ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None,
         mu_dtype=None, *, nesterov: bool = True, adaptive: bool = False,
         preconditioning: str = "frobenius", adam_b1: float = 0.9, adam_b2: float = 0.999,
         adam_eps_root: float = 0.0, adam_weight_decay: _base.ScalarOrSchedule = 0.0,
         adam_learning_rate: Optional[_base.ScalarOrSchedule] = None,
         muon_weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
         consistent_rms: Optional[float] = None,
         adam_mask: AdamMask = None, adam_eps: Optional[float] = None,
         adam_nesterov: Optional[bool] = None, shape_scaling: bool = True,
         compute_dtype=None, pad_shapes: bool = True, mesh=None,
         axis="data") -> _base.GradientTransformation:
  r"""Muon (Jordan et al. 2024) for matrices, AdamW for everything else (``optax.contrib.muon``).

  Matrix params (2-D leaves, or those ``muon_weight_dimension_numbers`` marks)
  take :func:`optix.scale_by_muon`'s orthogonalized momentum :math:`O_t`, a
  shape factor, decoupled decay and the learning rate:

  .. math::
     \theta \leftarrow \theta - \eta_t\,(s\, O_t + \lambda\, \theta), \qquad
     s = \sqrt{\max(1, d_\text{out}/d_\text{in})} \ \text{(Jordan)} \quad\text{or}\quad
     s = r\,\sqrt{\max(d_\text{in}, d_\text{out})} \ \text{(}\texttt{consistent\_rms}=r\text{)}

  with :math:`d_\text{in}, d_\text{out}` the matrix's reduction and output
  sizes. The first keeps the spectral norm of the step proportional to
  :math:`\sqrt{d_\text{out}/d_\text{in}}` (width transfer); the second (Liu et
  al. 2025) gives every matrix's update the RMS :math:`r` (0.2 matches AdamW's
  typical RMS, so AdamW learning rates and weight decay carry over). Every
  other leaf (biases, norm scales, scalars, and leaves whose dimension numbers
  are None) is stepped by :func:`optix.adamw` with ``adam_b1``, ``adam_b2``,
  ``eps``, ``adam_eps_root``, ``adam_weight_decay``, Nesterov as ``nesterov``,
  and ``adam_learning_rate`` (default: ``learning_rate``), as optax does.
  Embeddings and output heads are 2-D, so by default they take Muon; Muon's
  authors keep them on Adam: give them None dimension numbers or name them in
  ``adam_mask``, and pass an Adam-sized ``adam_learning_rate`` (Muon's ~0.02
  with the width factor is ~10-100× too large for Adam).

  Same-shape matrices are orthogonalized as one batch; ``mesh``/``axis`` split
  the Newton–Schulz work over devices (see :func:`optix.scale_by_muon`; same
  result, ~1/N of the flops per device).

  Args:
    learning_rate: Muon's step size (float >= 0 or schedule); ~0.02 with the
      width factor, AdamW-sized (~1e-3) with ``consistent_rms=0.2``.
    ns_coeffs: the quintic's ``(a, b, c)``, an ``(n, 3)`` table (one row per
      iteration, ``n <= ns_steps``), or a preset name "standard" / "dion";
      Jordan's (3.4445, -4.7750, 2.0315).
    ns_steps: Newton–Schulz iterations, an integer >= 0; 5 (Jordan).
    beta: Muon's momentum decay, in [0, 1); 0.95 (Jordan).
    eps: the Newton–Schulz normalization's eps and AdamW's eps (optax couples
      them; see ``adam_eps``), >= 0; 1e-8.
    weight_decay: decoupled decay on the Muon side, multiplied by the learning
      rate (PyTorch's convention), >= 0 or a schedule; 0.
    weight_decay_mask: which Muon-side params decay: a tree of bools like the
      params (or a prefix) or a callable params -> bools; None: all of them.
    mu_dtype: dtype of both sides' first moments; None: the params' dtype, at
      least float32 (bf16 params keep float32 state).
    nesterov: Nesterov momentum on both sides; True (Muon's default).
    adaptive: scale each Muon update by the dual norm
      :math:`\langle \hat m_t, O_t \rangle` (Bernstein & Newhouse); False.
    preconditioning: rescaling before Newton–Schulz: "frobenius" (default),
      "spectral", "aol" or "schatten" (see :func:`optix.scale_by_muon`).
    adam_b1: the AdamW side's b1, in [0, 1); 0.9.
    adam_b2: the AdamW side's b2, in [0, 1); 0.999.
    adam_eps_root: the AdamW side's eps_root, >= 0; 0.
    adam_weight_decay: the AdamW side's decoupled decay, >= 0 or a schedule; 0.
    adam_learning_rate: the AdamW side's step size (float >= 0 or schedule);
      None: ``learning_rate`` (optax's default).
    muon_weight_dimension_numbers: which leaves are matrices and how: a
      ``MuonDimensionNumbers`` for every leaf, a tree of them like the params
      (a prefix; a None entry sends the leaf to AdamW), or a callable params ->
      such a tree. None: every 2-D leaf is an ``(in, out)`` matrix, all others
      go to AdamW. :func:`optix.transforms.muon.flax_dimension_numbers` covers
      flax conv kernels and stacked (scanned) layers.
    consistent_rms: the target update RMS :math:`r` (> 0) of the
      :math:`r\sqrt{\max(d_\text{in}, d_\text{out})}` factor (0.2: AdamW's RMS,
      Liu et al.); None: the width factor.
    adam_mask: (optix) params to send to AdamW although they are matrices:
      key names (e.g. ``("embed", "head")``; a name matching nothing raises), a
      tree of bools, or a callable params -> bools; None. A leaf goes to AdamW
      when its dimension numbers are None *or* ``adam_mask`` selects it.
    adam_eps: (optix) the AdamW side's own eps, >= 0; None: ``eps`` (optax).
    adam_nesterov: (optix) NAdam on the AdamW side or not, independently of
      ``nesterov``; None: follow ``nesterov`` (optax).
    shape_scaling: (optix) apply the shape factor :math:`s`; True (optax).
      False: :math:`s = 1`; ``consistent_rms`` with ``shape_scaling=False``
      raises ``ValueError``.
    compute_dtype: (optix) Newton–Schulz matmul operand dtype (``jnp.bfloat16``:
      the usual accelerator setting); None: the iterate's dtype (optax's numbers).
    pad_shapes: (optix) zero-pad matrices of nearby shapes to one standard shape so
      they share one Newton–Schulz computation (fewer to compile; exact up to float
      rounding; a side grows by less than 2× up to 128, by at most 127 above); True.
      False: one computation per exact shape. See :func:`optix.scale_by_muon`.
    mesh: (optix) a ``jax.sharding.Mesh`` to split the Newton–Schulz work over; None.
    axis: (optix) the mesh axis (or axes) of that split; "data".

  Returns:
    A ``GradientTransformation`` (an ``optax.partition`` of the two sides).

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (kellerjordan.github.io/posts/muon);
    Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982;
    Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology", arXiv 2409.20325.
  """
  _validate.learning_rate("learning_rate", learning_rate)
  if adam_learning_rate is None:
    adam_learning_rate = learning_rate
  _validate.learning_rate("adam_learning_rate", adam_learning_rate)
  _validate.nonnegative("weight_decay", weight_decay)
  _validate.unit_interval("adam_b1", adam_b1)
  _validate.unit_interval("adam_b2", adam_b2)
  _validate.nonnegative("adam_eps_root", adam_eps_root)
  _validate.nonnegative("adam_weight_decay", adam_weight_decay)
  if adam_eps is not None:
    _validate.nonnegative("adam_eps", adam_eps)
  check_flag("shape_scaling", shape_scaling)
  if consistent_rms is not None and not shape_scaling:
    raise ValueError("consistent_rms must be None with shape_scaling=False (it sets the "
                     f"shape factor), got {consistent_rms!r}")
  labels = muon_labels(muon_weight_dimension_numbers, adam_mask)
  dims = (MuonDimensionNumbers() if muon_weight_dimension_numbers is None
          else muon_weight_dimension_numbers)
  tx = _base.partition(
      {"muon": _base.chain(
          scale_by_muon(ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov,
                        adaptive=adaptive, preconditioning=preconditioning,
                        weight_dimension_numbers=dims, shape_scaling=shape_scaling,
                        consistent_rms=consistent_rms, compute_dtype=compute_dtype,
                        pad_shapes=pad_shapes, mesh=mesh, axis=axis),
          add_decayed_weights(weight_decay, weight_decay_mask),
          scale_by_learning_rate(learning_rate)),
       "adam": adamw(adam_learning_rate, adam_b1, adam_b2, eps if adam_eps is None else adam_eps,
                     adam_eps_root, mu_dtype, weight_decay=adam_weight_decay,
                     nesterov=nesterov if adam_nesterov is None else adam_nesterov)},
      labels)

  def update(updates, state, params=None, **extra_args):
    if params is not None:
      _tree.check_match("updates", updates, "params", params)
    return tx.update(updates, state, params, **extra_args)

  return _base.GradientTransformation(tx.init, update)


# -- Kronecker-factored optimizers: Shampoo and SOAP --

from optix.transforms.shampoo import scale_by_shampoo  # noqa: E402
from optix.transforms.soap import scale_by_soap  # noqa: E402


def shampoo(learning_rate: _base.ScalarOrSchedule, beta2: float = 0.999,
            preconditioning_interval: int = 10, start_preconditioning_step: int = 10,
            b1: float = 0.9, nesterov: bool = False, graft: str = "adam",
            graft_b2: float = 0.999, graft_eps: float = 1e-8, ridge_epsilon: float = 1e-6,
            root_method: str = "eigh", block_size: Optional[int] = None,
            merge_small_dims: bool = True, max_preconditioner_dim: Optional[int] = None,
            weight_decay: _base.ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None,
            *, inverse_exponent_override=None, state_dtype=None, mesh=None,
            axis="data", stacked_axes=None):
  r"""Shampoo with an Adam graft (Gupta et al. 2018, arXiv 1802.09568; Anil et al.
  2020, arXiv 2002.09018), then decoupled weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(u_t + \lambda\theta), \quad
            u_t = \tilde L^{-1/4} \hat m_t \tilde R^{-1/4} \cdot
                  \|\mathrm{adam}_t\| / \|\tilde L^{-1/4} \hat m_t \tilde R^{-1/4}\|

  The learning rate is an Adam-sized one (grafting gives each layer Adam's step norm);
  before ``start_preconditioning_step`` this is exactly AdamW. ``inverse_exponent_override``
  changes the factors' exponents, e.g. ``{2: {0: 0.5, 1: 0.0}}`` for one-sided Shampoo
  :math:`L^{-1/2} \hat m_t` on matrices (input side only; An et al. 2025, arXiv
  2503.20762).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    beta2: the statistics' EMA decay, in (0, 1] (1: running sums); 0.999.
    preconditioning_interval: steps between root computations, an integer >= 1; 10.
    start_preconditioning_step: first preconditioned step, an integer >= 0; 10 (AdamW
      before it, while the statistics fill).
    b1: momentum decay, in [0, 1); 0.9.
    nesterov: Nesterov momentum (an NAdamW graft); False.
    graft: "adam", "rmsprop" or "adagrad", the per-layer step norm; "adam".
    graft_b2: the graft's second-moment decay, in [0, 1); 0.999.
    graft_eps: the graft's denominator ε, >= 0; 1e-8.
    ridge_epsilon: ridge relative to each statistic's largest eigenvalue, >= 0; 1e-6.
    root_method: "eigh" or "newton" (matmuls only, integer roots); "eigh".
    block_size: longest preconditioned block, an integer >= 1; None: 1024 on every
      backend.
    merge_small_dims: merge small adjacent axes into one block axis; True.
    max_preconditioner_dim: longer axes get no factor, an integer >= 0; None (default):
      8192 (a shape-setting argument ``optax.inject_hyperparams`` then leaves alone).
    weight_decay: decoupled decay rate λ, >= 0, or a schedule; 0 (as :func:`optix.adam`).
    weight_decay_mask: which params decay: a tree of bools with the params' structure
      (or a prefix), or a callable params -> such a tree; None: all.
    inverse_exponent_override: (keyword-only) exponents by block order (and axis), each
      in [0, 1]; None: :math:`1/(2k)` for a rank-k block.
    state_dtype: (keyword-only) dtype of the moments, statistics and roots; None
      (default): float32, float64 where the params are float64.
    mesh: (keyword-only) a ``jax.sharding.Mesh`` to split the roots over (same
      result); None. Leaves sharded on an Explicit mesh (FSDP) need none: their blocks
      are owned.
    axis: (keyword-only) the mesh axis (or axes) of that split; "data".
    stacked_axes: (keyword-only) how many leading axes of each leaf index stacked layers
      (e.g. 1 for an ``nn.scan``-ed block's kernels), each layer preconditioned as a leaf
      of its own: an int ``0 <= k <= ndim`` for every leaf, a tree of them like the params
      (or a prefix), or a callable params -> such a tree; None (default): 0, none. Inside
      ``optax.inject_hyperparams`` name a value other than None in ``static_args``.

  Each argument of :func:`optix.scale_by_shampoo` is explained there, with why its
  default; out-of-range values raise ``ValueError`` naming the argument.

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return _base.chain(
      scale_by_shampoo(beta2, preconditioning_interval, start_preconditioning_step, b1,
                       nesterov, graft, graft_b2, graft_eps, ridge_epsilon, root_method,
                       block_size, merge_small_dims, max_preconditioner_dim,
                       inverse_exponent_override=inverse_exponent_override,
                       state_dtype=state_dtype, mesh=mesh, axis=axis,
                       stacked_axes=stacked_axes),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))


def soap(learning_rate: _base.ScalarOrSchedule, b1: float = 0.95, b2: float = 0.95,
         eps: float = 1e-8, shampoo_beta: Optional[float] = None,
         preconditioning_interval: int = 10, block_size: Optional[int] = None,
         merge_small_dims: bool = False, max_preconditioner_dim: Optional[int] = None,
         precondition_1d: bool = False, weight_decay: _base.ScalarOrSchedule = 0.0,
         weight_decay_mask: MaskOrFn = None, *, state_dtype=None, mesh=None,
         axis="data", stacked_axes=None):
  r"""SOAP (Vyas et al. 2024, arXiv 2409.11321): Adam in Shampoo's eigenbasis,
  then decoupled weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(Q_L\, \mathrm{adam}(Q_L^\top G Q_R)\, Q_R^\top
            + \lambda\theta)

  The paper uses ``learning_rate=3e-3`` and ``weight_decay=0.01`` for language models;
  the default decay here is 0 as in :func:`optix.adam`.

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: Adam's first-moment decay, in [0, 1); 0.95 (the paper's).
    b2: Adam's second-moment decay, in [0, 1); 0.95 (the paper's).
    eps: Adam's denominator ε, >= 0; 1e-8.
    shampoo_beta: the statistics' EMA decay, in (0, 1]; None: ``b2``.
    preconditioning_interval: steps between basis refreshes, an integer >= 1; 10.
    block_size: longest rotated block, an integer >= 1; None: 1024 on every backend.
    merge_small_dims: merge small adjacent axes into one block axis; False.
    max_preconditioner_dim: longer axes are not rotated, an integer >= 0; None (default):
      10000, the paper's.
    precondition_1d: rotate 1-D leaves too; False (plain Adam on them, as the paper).
    weight_decay: decoupled decay rate λ, >= 0, or a schedule; 0 (as :func:`optix.adam`).
    weight_decay_mask: which params decay: a tree of bools with the params' structure
      (or a prefix), or a callable params -> such a tree; None: all.
    state_dtype: (keyword-only) dtype of the moments, statistics and bases; None
      (default): float32, float64 where the params are float64.
    mesh: (keyword-only) a ``jax.sharding.Mesh`` to split the eigendecompositions over
      (same result); None. Leaves sharded on an Explicit mesh (FSDP) need none: their
      blocks are owned.
    axis: (keyword-only) the mesh axis (or axes) of that split; "data".
    stacked_axes: (keyword-only) how many leading axes of each leaf index stacked layers
      (e.g. 1 for an ``nn.scan``-ed block's kernels), each layer rotated as a leaf of its
      own: an int ``0 <= k <= ndim`` for every leaf, a tree of them like the params (or a
      prefix), or a callable params -> such a tree; None (default): 0, none. Inside
      ``optax.inject_hyperparams`` name a value other than None in ``static_args``.

  Each argument of :func:`optix.scale_by_soap` is explained there, with why its default;
  out-of-range values raise ``ValueError`` naming the argument.

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return _base.chain(
      scale_by_soap(b1, b2, eps, shampoo_beta, preconditioning_interval, block_size,
                    merge_small_dims, max_preconditioner_dim, precondition_1d,
                    state_dtype=state_dtype, mesh=mesh, axis=axis,
                    stacked_axes=stacked_axes),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))


# -- PSGD Kron --

from optix.transforms.psgd import scale_by_psgd_kron  # noqa: E402


def psgd_kron(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9,
              weight_decay: _base.ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None,
              *, preconditioner_update_probability=None, max_size_triangular: int = 8192,
              min_ndim_triangular: int = 2, max_skew_triangular: Optional[float] = 2,
              memory_save_mode: Optional[str] = None, precond_lr: float = 0.1,
              precond_init_scale: float = 1.0, max_update_rms: Optional[float] = 1.1,
              precond_dtype=None, state_dtype=None, seed: int = 0, stacked_axes=None):
  r"""PSGD Kron (Li 2015, arXiv 1512.04202; Li 2024, arXiv 2402.11858): momentum
  preconditioned by a fitted Kronecker-factored :math:`P = Q^H Q` (:math:`Q^\top Q` for
  real params), then decoupled weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(\mathrm{clip}_{\mathrm{rms}}(Q^H Q\,\hat m_t)
            + \lambda\theta)

  :func:`optix.scale_by_psgd_kron` explains the preconditioner's arguments in full,
  complex params included. The preconditioned update has roughly unit RMS, so the
  learning rate is an Adam-sized one (the reference's default is 1e-3); PSGD needs less
  weight decay than AdamW.

  Args:
    learning_rate: the step size η, a float >= 0 (finite) or a schedule of the step
      count; None: no scaling and no sign flip (optax's meaning).
    b1: momentum decay, in [0, 1); 0.9 (the reference's). The preconditioner is fitted
      on the momentum.
    weight_decay: decoupled decay rate λ >= 0, or a schedule; 0.
    weight_decay_mask: which params decay: a bool tree like the params, or a callable
      giving one; None: all.
    preconditioner_update_probability: chance of a fit per step, in [0, 1], or a
      schedule of the step; None (default): 1 for the first 500 steps, then decaying
      to 0.03 (:func:`optix.transforms.psgd.update_probability_schedule`).
    max_size_triangular: int >= 0; an axis longer than this gets a diagonal factor;
      8192 (a triangular factor costs :math:`n^2` memory and :math:`O(n^3)` per fit).
    min_ndim_triangular: int >= 0; leaves with fewer axes get diagonal factors only;
      2 (vectors and scalars stay diagonal).
    max_skew_triangular: > 0; an axis more than this many times the next largest gets
      a diagonal factor; 2 (default: an embedding's vocabulary axis and an MLP's wide
      axis are diagonal, each triangular factor holds at most twice its leaf's size);
      None: no limit (the reference implementation's default).
    memory_save_mode: None (default), ``"one_diag"`` (each leaf's largest axis
      diagonal) or ``"all_diag"`` (every factor diagonal).
    precond_lr: normalised step size μ of the Lie-group fit, in [0, 1]; 0.1 (the
      reference's).
    precond_init_scale: s > 0, so that :math:`P_0 = s^2 I`; 1.0.
    max_update_rms: ρ > 0, the RMS cap of each leaf's preconditioned update; 1.1 (the
      reference's; it bounds the first steps, before P adapts); None: no cap.
    precond_dtype: dtype of the factors Q; None (default): at least float32, the
      params' precision (``jnp.bfloat16`` halves their memory; the fit runs in
      float32).
    state_dtype: dtype of the momentum; None (default): at least float32, the
      params' kind.
    seed: int >= 0, the PRNG seed of the fit's probes and the update draws; 0.
    stacked_axes: how many leading axes of each leaf index stacked layers (an
      ``nn.scan``-ed block's kernels): an int >= 0 for every leaf, a tree of ints like
      the params (or a prefix), or a callable params -> such a tree, each at most its
      leaf's ndim; every slice gets its own factors, as a separate leaf would. None
      (default) or 0: none. It sets the state's shapes: inside
      ``optax.inject_hyperparams`` a value other than None must be named in
      ``static_args`` (a callable would be taken for a schedule).

  Returns:
    A ``chain`` of ``scale_by_psgd_kron``, ``add_decayed_weights``,
    ``scale_by_learning_rate``.
  """
  return _base.chain(
      scale_by_psgd_kron(b1, preconditioner_update_probability, max_size_triangular,
                         min_ndim_triangular, max_skew_triangular, memory_save_mode,
                         precond_lr, precond_init_scale, max_update_rms,
                         precond_dtype=precond_dtype, state_dtype=state_dtype, seed=seed,
                         stacked_axes=stacked_axes),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))
