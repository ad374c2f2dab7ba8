"""Registry entries for Muon: contract tests and parity with optax.contrib.muon."""

import jax
import optax
from jax.sharding import AxisType
from optax.contrib import MuonDimensionNumbers, _muon

import optix
from registry import Entry


def _optax_dims(stacked=lambda path: 0):
  """optax dimension numbers for optix's reshape rule: the last axis is
  fan-out, the other non-stacked axes fan-in; vectors and scalars -> Adam."""
  def dims(params):
    def one(path, p):
      k = stacked(jax.tree_util.keystr(path))
      if p.ndim - k < 2:
        return None
      return MuonDimensionNumbers(tuple(range(k, p.ndim - 1)), p.ndim - 1)
    return jax.tree_util.tree_map_with_path(one, params)
  return dims


def _stacked_params():
  """Same shapes across leaves, a transposed one, stacked layers and a conv
  kernel (18, 8): exercises the batching of same-shape matrices."""
  shapes = {"w1": (16, 8), "w2": (8, 16), "w3": (16, 8), "layers": (3, 16, 8),
            "conv": (3, 3, 2, 8), "bias": (8,)}
  keys = jax.random.split(jax.random.key(7), len(shapes))
  return {n: jax.random.normal(k, s) for k, (n, s) in zip(keys, shapes.items())}


def _stacked_axes(params):
  return {n: 1 if n == "layers" else 0 for n in params}


# Newton–Schulz split over the 8 simulated devices (optix.map_stacked).
_MESH = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


ENTRIES = [
    Entry("muon",
          lambda: optix.muon(0.02, 1e-3, weight_decay=0.1, adam_nesterov=True),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3,
                                     muon_weight_dimension_numbers=_optax_dims()),
          bad=[("learning_rate", lambda: optix.muon(-0.02, 1e-3)),
               ("adam_learning_rate", lambda: optix.muon(0.02, -1e-3)),
               ("beta", lambda: optix.muon(0.02, 1e-3, beta=1.0)),
               ("weight_decay", lambda: optix.muon(0.02, 1e-3, weight_decay=-0.1)),
               ("ns_steps", lambda: optix.muon(0.02, 1e-3, ns_steps=0)),
               ("eps", lambda: optix.muon(0.02, 1e-3, eps=-1.0)),
               ("shape_scaling", lambda: optix.muon(0.02, 1e-3, shape_scaling="rows")),
               ("rms_scale", lambda: optix.muon(0.02, 1e-3, rms_scale=0.0)),
               ("adam_b1", lambda: optix.muon(0.02, 1e-3, adam_b1=1.5)),
               ("adam_b2", lambda: optix.muon(0.02, 1e-3, adam_b2=-0.5)),
               ("adam_weight_decay", lambda: optix.muon(0.02, 1e-3, adam_weight_decay=-1.0)),
               ("coefficients", lambda: optix.muon(0.02, 1e-3, ns_coefficients=(1.0, 2.0))),
               ("stacked_axes", lambda: optix.muon(0.02, 1e-3, stacked_axes=-1))],
          tol=1e-4),
    Entry("muon_split",
          lambda: optix.muon(0.02, 1e-3, weight_decay=0.1, adam_nesterov=True, mesh=_MESH),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3,
                                     muon_weight_dimension_numbers=_optax_dims()),
          bad=[("axis", lambda: optix.muon(0.02, 1e-3, mesh=_MESH, axis="model"))],
          tol=1e-4),
    Entry("muon_stacked_rms",
          lambda: optix.muon(0.02, 1e-3, stacked_axes=_stacked_axes, adam_nesterov=True,
                             shape_scaling="match_adamw_rms"),
          # consistent_rms=0.2: optax's name for the AdamW-matching RMS of the update.
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, consistent_rms=0.2,
              muon_weight_dimension_numbers=_optax_dims(lambda path: 1 if "layers" in path else 0)),
          # Newton–Schulz rounding: single near-zero elements reach ~2e-4 relative, no drift.
          params=_stacked_params, tol=5e-4),
    Entry("muon_heavy_ball_embed_on_adam",
          lambda: optix.muon(0.02, 1e-3, nesterov=False, adam_mask=("embed",)),
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, nesterov=False,
              muon_weight_dimension_numbers=lambda p: {
                  **_optax_dims()(p), "embed": None}),
          tol=1e-4),
    Entry("scale_by_muon_matrices",
          lambda: optix.chain(optix.scale_by_muon(), optix.scale_by_learning_rate(0.02)),
          lambda: optax.chain(optax.contrib.scale_by_muon(weight_dimension_numbers=_optax_dims()),
                              _muon.scale_by_shape(_optax_dims()),  # private in optax 0.2.8
                              optax.scale_by_learning_rate(0.02)),
          tol=1e-4,
          params=lambda: {"a": jax.random.normal(jax.random.key(0), (12, 5)),
                          "b": jax.random.normal(jax.random.key(1), (5, 12))}),
]
