"""Registry entries for Shampoo and SOAP."""

import jax
import optax

import optix
from registry import Entry


def _shampoo_bad(fn):
  return [("learning_rate", lambda: fn(-1e-3)),
          ("beta2", lambda: fn(1e-3, beta2=0.0)),
          ("b1", lambda: fn(1e-3, b1=1.0)),
          ("graft_b2", lambda: fn(1e-3, graft_b2=1.5)),
          ("graft_eps", lambda: fn(1e-3, graft_eps=-1.0)),
          ("ridge_epsilon", lambda: fn(1e-3, ridge_epsilon=-1e-6)),
          ("preconditioning_interval", lambda: fn(1e-3, preconditioning_interval=0)),
          ("start_preconditioning_step", lambda: fn(1e-3, start_preconditioning_step=-1)),
          ("graft", lambda: fn(1e-3, graft="sgd")),
          ("root_method", lambda: fn(1e-3, root_method="svd")),
          ("block_size", lambda: fn(1e-3, block_size=0)),
          ("max_preconditioner_dim", lambda: fn(1e-3, max_preconditioner_dim=-1)),
          ("weight_decay", lambda: fn(1e-3, weight_decay=-0.1)),
          ("inverse_exponent_override", lambda: fn(1e-3, inverse_exponent_override={2: 1.5})),
          ("inverse_exponent_override",
           lambda: fn(1e-3, inverse_exponent_override={2: {2: 0.5}})),
          ("inverse_exponent_override",
           lambda: fn(1e-3, root_method="newton", inverse_exponent_override={2: {0: 0.3}}))]


def _conv_layers(params):
  """One stacked axis for the 4-D leaves (the registry's conv kernel), none elsewhere."""
  return jax.tree.map(lambda x: 1 if x.ndim == 4 else 0, params)


ENTRIES = [
    # Blocks of 4 (the 10×4 embedding is 3 row blocks, padded), small dims merged,
    # roots from step 2 every 3 steps: every shape path and both cond branches.
    Entry("shampoo",
          lambda: optix.shampoo(1e-2, preconditioning_interval=3, start_preconditioning_step=2,
                                block_size=4, weight_decay=0.01),
          bad=_shampoo_bad(optix.shampoo)),
    # The roots split over the 8 simulated devices (optix.map_stacked under lax.cond).
    Entry("shampoo_split_over_devices",
          lambda: optix.shampoo(1e-2, preconditioning_interval=3, start_preconditioning_step=2,
                                block_size=4, mesh=jax.make_mesh((8,), ("data",)))),
    # ridge_epsilon 1e-3: the 6-long bias's running sum has rank <= 3 here, and at the default
    # 1e-6 its root's null-space directions follow the rounding of the sums (condition 1e6),
    # which an 8-device sharded state (its padded 8×8 statistic splits) orders differently.
    Entry("shampoo_newton_nesterov_rmsprop_graft",
          lambda: optix.shampoo(1e-2, beta2=1.0, preconditioning_interval=2,
                                start_preconditioning_step=1, nesterov=True, graft="rmsprop",
                                root_method="newton", merge_small_dims=False,
                                max_preconditioner_dim=6, ridge_epsilon=1e-3)),
    # One-sided on matrices (no right factor: fewer statistics), 1/8 on order-4 blocks.
    Entry("shampoo_one_sided_exponent_override",
          lambda: optix.shampoo(1e-2, preconditioning_interval=2, start_preconditioning_step=1,
                                merge_small_dims=False,
                                inverse_exponent_override={2: {0: 0.5, 1: 0.0}, 4: 0.125})),
    # Before start_preconditioning_step the update is the graft: exactly Adam / NAdam.
    Entry("shampoo_graft_phase_is_adam",
          lambda: optix.shampoo(1e-2, start_preconditioning_step=10 ** 6),
          lambda: optax.adam(1e-2)),
    Entry("shampoo_graft_phase_is_nadamw",
          lambda: optix.shampoo(1e-2, start_preconditioning_step=10 ** 6, nesterov=True,
                                weight_decay=0.1),
          lambda: optax.nadamw(1e-2, weight_decay=0.1)),
    Entry("soap",
          lambda: optix.soap(3e-3, preconditioning_interval=3, block_size=4,
                             precondition_1d=True, weight_decay=0.01),
          bad=[("learning_rate", lambda: optix.soap(-1e-3)),
               ("b1", lambda: optix.soap(1e-3, b1=1.0)),
               ("b2", lambda: optix.soap(1e-3, b2=-0.5)),
               ("eps", lambda: optix.soap(1e-3, eps=-1.0)),
               ("shampoo_beta", lambda: optix.soap(1e-3, shampoo_beta=1.5)),
               ("preconditioning_interval", lambda: optix.soap(1e-3, preconditioning_interval=0)),
               ("block_size", lambda: optix.soap(1e-3, block_size=-4)),
               ("max_preconditioner_dim", lambda: optix.soap(1e-3, max_preconditioner_dim=-1)),
               ("weight_decay", lambda: optix.soap(1e-3, weight_decay=-1.0))]),
    # The conv kernel (3, 3, 2, 4) as three stacked (3, 2, 4) layers, each preconditioned as a
    # leaf of its own (a callable stacked_axes: it sees the params at init, the updates after).
    Entry("shampoo_stacked_layers",
          lambda: optix.shampoo(1e-2, preconditioning_interval=3, start_preconditioning_step=2,
                                block_size=4, stacked_axes=_conv_layers),
          bad=[("stacked_axes", lambda: optix.shampoo(1e-2, stacked_axes=-1))]),
    Entry("soap_stacked_layers",
          lambda: optix.soap(3e-3, preconditioning_interval=3, block_size=4,
                             precondition_1d=True, stacked_axes=_conv_layers),
          bad=[("stacked_axes", lambda: optix.soap(3e-3, stacked_axes=1.5))]),
    # Every axis left diagonal: SOAP is Adam.
    Entry("soap_all_diagonal_is_adam",
          lambda: optix.soap(1e-2, b1=0.9, b2=0.999, max_preconditioner_dim=0),
          lambda: optax.adam(1e-2)),
]
