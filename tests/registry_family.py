"""Registry entries for optax's other aliases and wrappers (optix.optax_family,
optix.optax_contrib, optix.optax_wrappers), the parameter-free methods not in
registry_field.py, and C-Lion.

Entries whose update needs the loss (``value``) or the objective (``obj_fn``) pass it in
``extra_args``; the shared parity test feeds gradients only, so their optax parity is
checked in tests/test_field.py (``VALUE_PARITY``) with the same extra arguments.
``lookahead`` is not an entry: its gradients have the fast params' structure, not the
params' (``LookaheadParams``); tests/test_field.py checks it on its own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optix
from optix.transforms.adapter import scalars_as_vectors
from registry import Entry


def hessian_of_squares():
  """A diagonal 'Hessian' estimate g*g that needs no objective: Sophia on gradients only."""
  return optax.with_extra_args_support(optax.stateless(lambda g, p: jax.tree.map(
      lambda x: x * x, g)))


def quadratic(params):
  """0.5 * sum of squares of every leaf (its Hessian diagonal is 1)."""
  return 0.5 * sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params))


LOSS = {"value": jnp.float32(2.5)}
ACPROP_B2 = float(np.float32(0.999))

ENTRIES = [
    # b2 is float32(0.999) written as a Python float, the value optax.inject_hyperparams
    # holds: with the Python float 0.999, optax's acprop forms 1 - b2 in float64 (0.001) for
    # the moment but b2**t in float32 for the bias correction (1 - float32(0.999) is 1.3e-5
    # relatively off 0.001), and its second step g / sqrt(s_hat) with a small s carries that
    # into the params; injected, both use the same float32 b2.
    Entry("acprop", lambda: optix.acprop(1e-2, b2=ACPROP_B2, weight_decay=0.01),
          lambda: optax.contrib.acprop(1e-2, b2=ACPROP_B2, weight_decay=0.01),
          bad=[("b2", lambda: optix.acprop(1e-2, b2=1.0)),
               ("eps", lambda: optix.acprop(1e-2, eps=-1.0))]),
    Entry("adadelta", lambda: optix.adadelta(1.0), lambda: optax.adadelta(1.0),
          bad=[("rho", lambda: optix.adadelta(rho=1.5))]),
    Entry("adamax", lambda: optix.adamax(1e-2), lambda: optax.adamax(1e-2),
          bad=[("b1", lambda: optix.adamax(1e-2, b1=-0.5))]),
    Entry("fromage", lambda: optix.fromage(1e-2), lambda: optax.fromage(1e-2),
          bad=[("min_norm", lambda: optix.fromage(1e-2, min_norm=-1.0))]),
    Entry("galore", lambda: optix.galore(1e-2, rank=2, update_proj_gap=3),
          lambda: optax.contrib.galore(1e-2, rank=2, update_proj_gap=3),
          bad=[("rank", lambda: optix.galore(1e-2, rank=0)),
               ("update_proj_gap", lambda: optix.galore(1e-2, update_proj_gap=0))]),
    Entry("madgrad", lambda: optix.madgrad(1e-2), lambda: optax.contrib.madgrad(1e-2),
          bad=[("momentum", lambda: optix.madgrad(1e-2, momentum=1.0))]),
    Entry("momo", lambda: optix.momo(1e-2), bad=[("beta", lambda: optix.momo(beta=1.5))],
          extra_args=LOSS),
    Entry("momo_adam", lambda: optix.momo_adam(1e-2), extra_args=LOSS,
          bad=[("b2", lambda: optix.momo_adam(b2=1.0))]),
    Entry("noisy_sgd", lambda: optix.noisy_sgd(1e-2), lambda: optax.noisy_sgd(1e-2),
          bad=[("eta", lambda: optix.noisy_sgd(1e-2, eta=-1.0))]),
    Entry("normalize_sgd", lambda: optix.chain(optix.normalize(), optix.sgd(0.1)),
          lambda: optax.chain(optax.contrib.normalize(), optax.sgd(0.1))),
    Entry("novograd", lambda: optix.novograd(1e-2, weight_decay=0.01),
          lambda: optax.novograd(1e-2, weight_decay=0.01),
          bad=[("b1", lambda: optix.novograd(1e-2, b1=1.0))]),
    Entry("optimistic_adam", lambda: optix.optimistic_adam(1e-2),
          lambda: optax.optimistic_adam(1e-2),
          bad=[("eps_root", lambda: optix.optimistic_adam(1e-2, eps_root=-1.0))]),
    Entry("optimistic_adam_v2", lambda: optix.optimistic_adam_v2(1e-2),
          lambda: optax.optimistic_adam_v2(1e-2),
          bad=[("beta", lambda: optix.optimistic_adam_v2(1e-2, beta=-1.0))]),
    Entry("optimistic_gradient_descent", lambda: optix.optimistic_gradient_descent(1e-2),
          lambda: optax.optimistic_gradient_descent(1e-2),
          bad=[("alpha", lambda: optix.optimistic_gradient_descent(1e-2, alpha=-1.0))]),
    Entry("polyak_sgd", lambda: optix.polyak_sgd(1.0), extra_args=LOSS,
          bad=[("max_learning_rate", lambda: optix.polyak_sgd(-1.0))]),
    Entry("reduce_on_plateau", lambda: optix.chain(optix.sgd(0.1), optix.reduce_on_plateau(
        patience=2, accumulation_size=2)), extra_args=LOSS,
          bad=[("factor", lambda: optix.reduce_on_plateau(factor=1.5)),
               ("accumulation_size", lambda: optix.reduce_on_plateau(accumulation_size=0))]),
    Entry("rprop", lambda: optix.rprop(1e-2), lambda: optax.rprop(1e-2),
          bad=[("eta_plus", lambda: optix.rprop(1e-2, eta_plus=-1.0))]),
    Entry("sam", lambda: optix.sam(optix.sgd(0.1), optix.chain(optix.normalize(),
                                                               optix.sgd(0.05))),
          lambda: optax.contrib.sam(optax.sgd(0.1), optax.chain(optax.contrib.normalize(),
                                                                optax.sgd(0.05))),
          bad=[("sync_period", lambda: optix.sam(optix.sgd(0.1), optix.sgd(0.1), 0))]),
    Entry("sign_sgd", lambda: optix.sign_sgd(1e-2), lambda: optax.sign_sgd(1e-2),
          bad=[("learning_rate", lambda: optix.sign_sgd(-1.0))]),
    Entry("simplified_ademamix", lambda: optix.simplified_ademamix(1e-3),
          lambda: optax.contrib.simplified_ademamix(1e-3),
          bad=[("alpha", lambda: optix.simplified_ademamix(1e-3, alpha=-1.0))]),
    # optax's sm3 indexes each leaf's axes and fails on a scalar leaf; optix lifts scalars to
    # 1-vectors, so the reference is optax's sm3 behind the same lift.
    Entry("sm3", lambda: optix.sm3(1e-1), lambda: scalars_as_vectors(optax.sm3(1e-1)),
          bad=[("momentum", lambda: optix.sm3(1e-1, momentum=1.0))]),
    Entry("sophia", lambda: optix.sophia(1e-2, update_interval=2,
                                         hessian_diagonal_fn=hessian_of_squares()),
          lambda: optax.contrib.sophia(1e-2, update_interval=2,
                                       hessian_diagonal_fn=hessian_of_squares()),
          bad=[("gamma", lambda: optix.sophia(1e-2, gamma=-1.0)),
               ("clip_threshold", lambda: optix.sophia(1e-2, clip_threshold=0.0)),
               ("update_interval", lambda: optix.sophia(1e-2, update_interval=0))]),
    Entry("sophia_hutchinson", lambda: optix.sophia(1e-2, update_interval=2),
          extra_args={"obj_fn": quadratic}),
    Entry("split_real_and_imaginary",
          lambda: optix.split_real_and_imaginary(optix.adam(1e-2)),
          lambda: optax.contrib.split_real_and_imaginary(optax.adam(1e-2))),
    Entry("dadapt_adamw", lambda: optix.dadapt_adamw(), lambda: optax.contrib.dadapt_adamw(),
          bad=[("estim_lr0", lambda: optix.dadapt_adamw(estim_lr0=0.0)),
               ("betas", lambda: optix.dadapt_adamw(betas=(1.0, 0.999)))]),
    Entry("dog", lambda: optix.dog(), lambda: optax.contrib.dog(),
          bad=[("weight_decay", lambda: optix.dog(weight_decay=-1.0)),
               ("init_step", lambda: optix.dog(init_step=("distance", 0.0)))]),
    Entry("dowg", lambda: optix.dowg(), lambda: optax.contrib.dowg(),
          bad=[("eps", lambda: optix.dowg(eps=-1.0)),
               ("init_estim_sq_dist", lambda: optix.dowg(init_estim_sq_dist=-1.0))]),
    Entry("mechanize", lambda: optix.mechanize(optix.adam(1e-2)),
          lambda: optax.contrib.mechanize(optax.adam(1e-2)),
          bad=[("num_betas", lambda: optix.mechanize(optix.adam(1e-2), num_betas=0)),
               ("s_init", lambda: optix.mechanize(optix.adam(1e-2), s_init=0.0))]),
    Entry("cautious_lion", lambda: optix.cautious_lion(1e-3, weight_decay=0.1)),
]
