"""Float32 (or wider) master weights for low-precision (bf16/fp16) params."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class MasterWeightsState(NamedTuple):
  master: _base.Params  # the params in master_dtype: the authoritative copy
  inner_state: Any


def with_master_weights(inner: _base.GradientTransformationBase, master_dtype=None
                        ) -> _base.GradientTransformation:
  r"""Runs ``inner`` on a float32 copy of the params (Micikevicius et al. 2018,
  "Mixed Precision Training", arXiv 1710.03740).

  .. math::
     \theta^{32}_t = \theta^{32}_{t-1} + \text{inner}(g_t^{32}, \theta^{32}_{t-1}), \qquad
     u_t = \text{lowp}(\theta^{32}_t) - \theta_{t-1}

  so after ``apply_updates`` the low-precision params are the rounded master
  weights. An update smaller than half a bf16 ulp of the weight (a
  learning-rate-sized step on a weight of size ~1 often is) is lost when added
  to bf16 params directly, step after step; here it accumulates in the master
  copy until it changes the rounded value. The rounding of ``u`` does not
  accumulate either: each step is anchored on the master copy again.

  ``master_dtype=None`` is the state-dtype policy
  (:func:`optix._tree.state_dtype_for`): float32 for bf16/fp16 params, float64
  for float64, complex64/complex128 for complex params (a real master copy would
  drop the imaginary part); a requested real dtype becomes the complex dtype of
  that precision for complex leaves.

  Costs one master copy of the params in the state (it is kept for float32
  leaves too, so the state layout does not depend on dtypes). The params
  must change only through the returned updates (reload the master copy, i.e.
  re-``init``, after editing params by hand).

  Args:
    inner: the optimizer to run on the master copy (it sees master-dtype
      gradients and params).
    master_dtype: dtype of the master copy, floating or complex; None (default):
      the policy above.

  Returns:
    A ``GradientTransformation`` whose state is
    ``MasterWeightsState(master, inner_state)``; ``update`` needs ``params``.
  """
  _validate.dtype("master_dtype", master_dtype)
  inner = _base.with_extra_args_support(inner)

  def init(params):
    # A copy even where the dtype already matches, so params and state can both be donated.
    master = jax.tree.map(
        lambda p: jnp.array(p, dtype=_tree.state_dtype_for(p, master_dtype), copy=True), params)
    return MasterWeightsState(master, inner.init(master))

  def update(updates, state, params=None, **extra_args):
    _tree.require_params("with_master_weights", params)
    _tree.check_match("updates", updates, "state.master", state.master)
    grads = _tree.cast_like(updates, state.master)
    inner_updates, inner_state = inner.update(grads, state.inner_state, state.master,
                                              **extra_args)
    master = jax.tree.map(lambda m, u: (m + u.astype(m.dtype)).astype(m.dtype),
                          state.master, inner_updates)
    # The difference of two nearby low-precision numbers is exact (Sterbenz), so
    # params + u reproduces the rounded master weights in the usual case.
    out = jax.tree.map(lambda m, p, g: (m.astype(p.dtype) - p).astype(g.dtype),
                       master, params, updates)
    return out, MasterWeightsState(master, inner_state)

  return _base.GradientTransformation(init, update)
