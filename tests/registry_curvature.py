"""Registry entries for K-FAC and L-BFGS (their extra args are fixed callables/arrays,
so every shared contract test applies)."""

import jax
import jax.numpy as jnp
import optax

import optix
from optix.transforms import moments
from registry import Entry


def _quadratic(params):
  """A convex objective over the registry's mixed param tree (any dtype, complex included:
  ``|p - 0.5|²``, real-valued)."""
  def term(p):
    d = p.astype(jnp.promote_types(p.dtype, jnp.float32)) - 0.5
    return 0.5 * jnp.sum(moments.abs_sq(d))
  return sum(term(p) for p in jax.tree.leaves(params))


def _dense_stats():
  """Statistics for the registry tree's dense layer (kernel 8×6 with bias): ā has 9 entries."""
  a = jax.random.normal(jax.random.key(7), (16, 9)).at[:, -1].set(1.0)
  g = 0.1 * jax.random.normal(jax.random.key(8), (16, 6))
  return {"dense": optix.LayerStats(a.T @ a, g.T @ g, jnp.asarray(16.0))}


ENTRIES = [
    Entry("lbfgs", lambda: optix.lbfgs(), lambda: optax.lbfgs(),
          extra_args={"value_fn": _quadratic},
          bad=[("memory_size", lambda: optix.lbfgs(memory_size=0)),
               ("linesearch", lambda: optix.lbfgs(linesearch="armijo")),
               ("curv_rtol", lambda: optix.scale_by_zoom_linesearch(curv_rtol=1.5)),
               ("slope_rtol", lambda: optix.scale_by_zoom_linesearch(slope_rtol=0.0))]),
    Entry("lbfgs_backtracking", lambda: optix.lbfgs(linesearch="backtracking"),
          lambda: optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(
              max_backtracking_steps=15, store_grad=True)),
          extra_args={"value_fn": _quadratic},
          bad=[("decrease_factor",
                lambda: optix.scale_by_backtracking_linesearch(decrease_factor=1.0))]),
    Entry("kfac", lambda: optix.kfac(0.1, damping=1e-2, inverse_update_period=2, momentum=0.9),
          extra_args={"kfac_stats": _dense_stats()},
          bad=[("damping", lambda: optix.kfac(0.1, damping=-1.0)),
               ("ema_decay", lambda: optix.kfac(0.1, ema_decay=1.0)),
               ("inverse_update_period", lambda: optix.kfac(0.1, inverse_update_period=0)),
               ("kl_clip", lambda: optix.kfac(0.1, kl_clip=0.0)),
               ("learning_rate", lambda: optix.scale_by_kfac(kl_clip=1e-3))]),
]

