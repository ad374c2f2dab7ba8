"""Registry entries for PSGD Kron: the reliability matrix and the contract tests run on them."""

import optix
from registry import Entry


def _bad(fn):
  return [("learning_rate", lambda: fn(-1e-3)),
          ("b1", lambda: fn(1e-3, b1=1.0)),
          ("weight_decay", lambda: fn(1e-3, weight_decay=-0.1)),
          ("preconditioner_update_probability",
           lambda: fn(1e-3, preconditioner_update_probability=1.5)),
          ("max_size_triangular", lambda: fn(1e-3, max_size_triangular=-1)),
          ("min_ndim_triangular", lambda: fn(1e-3, min_ndim_triangular=1.5)),
          ("max_skew_triangular", lambda: fn(1e-3, max_skew_triangular=0.0)),
          ("memory_save_mode", lambda: fn(1e-3, memory_save_mode="some_diag")),
          ("precond_lr", lambda: fn(1e-3, precond_lr=1.5)),
          ("precond_init_scale", lambda: fn(1e-3, precond_init_scale=0.0)),
          ("max_update_rms", lambda: fn(1e-3, max_update_rms=-1.0)),
          ("seed", lambda: fn(1e-3, seed=-1)),
          ("precond_dtype", lambda: fn(1e-3, precond_dtype="int32")),
          ("state_dtype", lambda: fn(1e-3, state_dtype="int32")),
          ("stacked_axes", lambda: fn(1e-3, stacked_axes=-1))]


ENTRIES = [
    # Triangular factors on every axis of the matrices and the conv kernel, diagonal on
    # vectors and the scalar; a fit at every step (the schedule's flat start).
    Entry("psgd_kron", lambda: optix.psgd_kron(1e-2, weight_decay=0.01),
          bad=_bad(optix.psgd_kron)),
    # Both branches of the fit's lax.cond, diagonal factors from the size, skew and
    # memory rules, no momentum, no clipping.
    Entry("psgd_kron_diagonal_rules_half_probability",
          lambda: optix.psgd_kron(1e-2, b1=0.0, preconditioner_update_probability=0.5,
                                  max_size_triangular=8, max_skew_triangular=1.5,
                                  memory_save_mode="one_diag", max_update_rms=None, seed=3)),
]
