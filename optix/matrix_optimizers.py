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
    DEFAULT_COEFFICIENTS, StackedAxes, broadcast_leaves, resolve_stacked_axes, scale_by_muon)
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


def muon_labels(adam_mask: AdamMask = None, stacked_axes: StackedAxes = 0):
  """Label function for :func:`muon`: "muon" for leaves with a matrix view
  (>= 2 axes besides the stacked ones) unless ``adam_mask`` is True there, else
  "adam". ``adam_mask``: names (any key-path component equal to one of them,
  e.g. ``("embed", "head")``), a tree of bools, or a callable params -> bools."""
  if isinstance(adam_mask, (list, tuple)) and all(isinstance(n, str) for n in adam_mask):
    adam_mask = _name_mask(tuple(adam_mask))

  def labels(params):
    extra = (jax.tree.map(lambda _: False, params) if adam_mask is None
             else adam_mask(params) if callable(adam_mask) else adam_mask)
    extra = [bool(m) for m in broadcast_leaves(extra, params)]
    leaves, treedef = jax.tree.flatten(params)
    ks = resolve_stacked_axes(stacked_axes, params)
    return jax.tree.unflatten(treedef, [
        "muon" if jnp.ndim(p) - k >= 2 and not e else "adam"
        for p, k, e in zip(leaves, ks, extra)])

  return labels


def muon(learning_rate: _base.ScalarOrSchedule, adam_learning_rate: _base.ScalarOrSchedule,
         beta: float = 0.95, weight_decay: _base.ScalarOrSchedule = 0.0,
         weight_decay_mask: MaskOrFn = None, adam_mask: AdamMask = None, *,
         nesterov: bool = True, ns_steps: int = 5,
         ns_coefficients: Sequence[float] = DEFAULT_COEFFICIENTS, eps: float = 1e-8,
         shape_scaling: str = "width", rms_scale: float = 0.2,
         stacked_axes: StackedAxes = 0, compute_dtype=None,
         adam_b1: float = 0.9, adam_b2: float = 0.999, adam_eps: float = 1e-8,
         adam_eps_root: float = 0.0, adam_weight_decay: _base.ScalarOrSchedule = 0.0,
         adam_nesterov: bool = False, state_dtype=jnp.float32, mesh=None, axis="data"):
  r"""Muon (Jordan et al. 2024) for matrices, AdamW for everything else.

  Matrix params (see :func:`optix.transforms.muon.matrix_view`; conv
  kernels are flattened to ``(prod(kernel)·in, out)``, ``stacked_axes`` leading
  axes are independent layers):

  .. math:: \theta \leftarrow \theta - \eta\,(s\,\mathrm{NS}_5(\hat m_t) + \lambda\theta)

  (:func:`optix.scale_by_muon`, then decoupled decay ``weight_decay`` on
  ``weight_decay_mask``). Biases, norm scales, scalars and every leaf selected by
  ``adam_mask`` get :func:`optix.adamw` with **its own** ``adam_learning_rate``.
  By default (``adam_mask=None``) every leaf with a matrix view goes to Muon,
  embeddings and output heads included; Muon's authors keep those two on Adam:
  pass their names, e.g. ``adam_mask=("embed", "head")`` (a name that matches
  no param raises ``ValueError``). ``adam_learning_rate`` is a required
  argument: Muon's learning rate (~0.02 with "width" scaling) is ~10-100× too
  large for Adam. With ``shape_scaling="match_adamw_rms"`` (Liu et al. 2025,
  arXiv 2502.16982) both sides can share an AdamW-sized learning rate.

  Differences from ``optax.contrib.muon``: adam_learning_rate is explicit; conv
  kernels and stacked layers are orthogonalized (optax sends non-2-D leaves to
  Adam unless given dimension numbers); the Adam side is plain AdamW unless
  ``adam_nesterov`` (optax couples it to ``nesterov``); ``adam_eps`` is separate
  from NS's ``eps``; same-shape matrices are orthogonalized as one batch.

  State: 4 bytes/param on the Muon side (fp32 momentum), 8 on the AdamW side.
  ``mesh``/``axis`` split the Newton–Schulz work over the devices of ``mesh``
  (see :func:`optix.scale_by_muon`; same result, ~1/N of the flops per device).

  Args:
    learning_rate: Muon's step size (float >= 0 or schedule); ~0.02 with
      ``shape_scaling="width"``, AdamW-sized (~1e-3) with "match_adamw_rms".
    adam_learning_rate: the AdamW side's step size (float >= 0 or schedule):
      required, as Muon's rate is far too large for Adam.
    beta: Muon's momentum decay, in [0, 1); 0.95 (Jordan et al.).
    weight_decay: decoupled decay on the Muon side, >= 0 or a schedule; 0.
    weight_decay_mask: which Muon-side params decay (tree of bools or callable);
      None: all of them.
    adam_mask: params to send to AdamW although they have a matrix view: key
      names (e.g. ``("embed", "head")``; a name matching nothing raises), a tree
      of bools, or a callable params -> bools. None: only non-matrices go to AdamW.
    nesterov: Nesterov momentum before orthogonalizing; True (Muon's default).
    ns_steps: Newton–Schulz iterations, >= 1; 5.
    ns_coefficients: the quintic's ``(a, b, c)``: Jordan's tuned
      (3.4445, -4.7750, 2.0315) by default.
    eps: added to the Frobenius norm before Newton–Schulz, >= 0; 1e-8.
    shape_scaling: "width" (``sqrt(max(1, d_out/d_in))``, Muon's), "match_adamw_rms"
      (``rms_scale·sqrt(max(d_in, d_out))``, Liu et al.) or "none".
    rms_scale: target update RMS for "match_adamw_rms", > 0; 0.2 (Liu et al.).
    stacked_axes: leading axes that index stacked layers (an int, a tree of
      ints like the params, or a callable); 0.
    compute_dtype: dtype of the Newton–Schulz matmuls; None: bf16 on GPU/TPU,
      float32 on CPU.
    adam_b1: the AdamW side's b1, in [0, 1); 0.9.
    adam_b2: the AdamW side's b2, in [0, 1); 0.999.
    adam_eps: the AdamW side's eps, >= 0; 1e-8.
    adam_eps_root: the AdamW side's eps_root, >= 0; 0.
    adam_weight_decay: the AdamW side's decoupled decay, >= 0 or a schedule; 0.
    adam_nesterov: NAdam on the AdamW side; False.
    state_dtype: dtype of both sides' moments; float32.
    mesh: a ``jax.sharding.Mesh`` to split the Newton–Schulz work over; None.
    axis: the mesh axis (or axes) of that split; "data".

  Returns:
    A ``GradientTransformation`` (an ``optax.partition`` of the two sides).
  """
  _validate.learning_rate("adam_learning_rate", adam_learning_rate)
  _validate.unit_interval("adam_b1", adam_b1)
  _validate.unit_interval("adam_b2", adam_b2)
  _validate.nonnegative("adam_eps", adam_eps)
  _validate.nonnegative("adam_eps_root", adam_eps_root)
  _validate.nonnegative("adam_weight_decay", adam_weight_decay)
  labels = muon_labels(adam_mask, stacked_axes)
  tx = _base.partition(
      {"muon": _base.chain(
          scale_by_muon(beta, nesterov, ns_steps, ns_coefficients, eps, shape_scaling,
                        rms_scale, stacked_axes, compute_dtype, state_dtype=state_dtype,
                        mesh=mesh, axis=axis),
          add_decayed_weights(weight_decay, weight_decay_mask),
          scale_by_learning_rate(learning_rate)),
       "adam": adamw(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root,
                     weight_decay=adam_weight_decay, nesterov=adam_nesterov,
                     state_dtype=state_dtype)},
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
            merge_small_dims: bool = True, max_preconditioner_dim: int = 8192,
            weight_decay: _base.ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None,
            *, inverse_exponent_override=None, state_dtype=jnp.float32, mesh=None,
            axis="data"):
  r"""Shampoo with an Adam graft (Gupta et al. 2018, arXiv 1802.09568; Anil et al.
  2020, arXiv 2002.09018), then decoupled weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(u_t + \lambda\theta), \quad
            u_t = \tilde L^{-1/4} \hat m_t \tilde R^{-1/4} \cdot
                  \|\mathrm{adam}_t\| / \|\tilde L^{-1/4} \hat m_t \tilde R^{-1/4}\|

  See :func:`optix.scale_by_shampoo` for every argument. The learning rate is an
  Adam-sized one (grafting gives each layer Adam's step norm); before
  ``start_preconditioning_step`` this is exactly AdamW. ``mesh``/``axis`` split
  the root computations over devices (same result). ``inverse_exponent_override``
  changes the factors' exponents, e.g. ``{2: {0: 0.5, 1: 0.0}}`` for one-sided
  Shampoo ``L^{-1/2} \hat m_t`` on matrices (input side only; An et al. 2025, arXiv
  2503.20762): see :func:`optix.scale_by_shampoo`.
  """
  return _base.chain(
      scale_by_shampoo(beta2, preconditioning_interval, start_preconditioning_step, b1,
                       nesterov, graft, graft_b2, graft_eps, ridge_epsilon, root_method,
                       block_size, merge_small_dims, max_preconditioner_dim,
                       inverse_exponent_override=inverse_exponent_override,
                       state_dtype=state_dtype, mesh=mesh, axis=axis),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))


def soap(learning_rate: _base.ScalarOrSchedule, b1: float = 0.95, b2: float = 0.95,
         eps: float = 1e-8, shampoo_beta: Optional[float] = None,
         preconditioning_interval: int = 10, block_size: Optional[int] = None,
         merge_small_dims: bool = False, max_preconditioner_dim: int = 10000,
         precondition_1d: bool = False, weight_decay: _base.ScalarOrSchedule = 0.0,
         weight_decay_mask: MaskOrFn = None, *, state_dtype=jnp.float32, mesh=None,
         axis="data"):
  r"""SOAP (Vyas et al. 2024, arXiv 2409.11321): Adam in Shampoo's eigenbasis,
  then decoupled weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(Q_L\, \mathrm{adam}(Q_L^\top G Q_R)\, Q_R^\top
            + \lambda\theta)

  See :func:`optix.scale_by_soap`. The paper uses ``learning_rate=3e-3`` and
  ``weight_decay=0.01`` for language models; the default decay here is 0 as in
  :func:`optix.adam`.
  """
  return _base.chain(
      scale_by_soap(b1, b2, eps, shampoo_beta, preconditioning_interval, block_size,
                    merge_small_dims, max_preconditioner_dim, precondition_1d,
                    state_dtype=state_dtype, mesh=mesh, axis=axis),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))


# -- PSGD Kron --

from optix.transforms.psgd import scale_by_psgd_kron  # noqa: E402


def psgd_kron(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9,
              weight_decay: _base.ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None,
              *, preconditioner_update_probability=None, max_size_triangular: int = 8192,
              min_ndim_triangular: int = 2, max_skew_triangular: Optional[float] = None,
              memory_save_mode: Optional[str] = None, precond_lr: float = 0.1,
              precond_init_scale: float = 1.0, max_update_rms: Optional[float] = 1.1,
              precond_dtype=None, state_dtype=None, seed: int = 0):
  r"""PSGD Kron (Li 2015, arXiv 1512.04202; Li 2024, arXiv 2402.11858): momentum
  preconditioned by a fitted Kronecker-factored :math:`P = Q^\top Q`, then decoupled
  weight decay and the learning rate.

  .. math:: \theta \leftarrow \theta - \eta\,(\mathrm{clip}_{\mathrm{rms}}(Q^\top Q\,\hat m_t)
            + \lambda\theta)

  :func:`optix.scale_by_psgd_kron` explains the preconditioner's arguments in full. The
  preconditioned update has roughly unit RMS, so the learning rate is an Adam-sized one
  (the reference's default is 1e-3); PSGD needs less weight decay than AdamW.

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
      a diagonal factor; None (default): no limit, as in the reference.
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

  Returns:
    A ``chain`` of ``scale_by_psgd_kron``, ``add_decayed_weights``,
    ``scale_by_learning_rate``.
  """
  return _base.chain(
      scale_by_psgd_kron(b1, preconditioner_update_probability, max_size_triangular,
                         min_ndim_triangular, max_skew_triangular, memory_save_mode,
                         precond_lr, precond_init_scale, max_update_rms,
                         precond_dtype=precond_dtype, state_dtype=state_dtype, seed=seed),
      add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_learning_rate(learning_rate))
