"""Registry entries for Muon: contract tests and parity with optax.contrib.muon."""

import jax
import optax
from jax.sharding import AxisType
from optax.contrib import MuonDimensionNumbers

import optix
from optix.transforms.muon import flax_dimension_numbers
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


def _matrix_dims():
  """Both leaves of the scale_by_muon parity params are plain matrices."""
  return {"a": MuonDimensionNumbers(), "b": MuonDimensionNumbers()}


def _flax_dims(stacked=0):
  """optix's helper for the same rule (the reference above is written independently)."""
  return flax_dimension_numbers(stacked)


# Newton–Schulz split over the 8 simulated devices (optix.map_stacked).
_MESH = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


_BAD = [("learning_rate", lambda: optix.muon(-0.02)),
        ("adam_learning_rate", lambda: optix.muon(0.02, adam_learning_rate=-1e-3)),
        ("beta", lambda: optix.muon(0.02, beta=1.0)),
        ("weight_decay", lambda: optix.muon(0.02, weight_decay=-0.1)),
        ("ns_steps", lambda: optix.muon(0.02, ns_steps=-1)),
        ("ns_steps", lambda: optix.muon(0.02, ns_coeffs="dion", ns_steps=4)),
        ("ns_coeffs", lambda: optix.muon(0.02, ns_coeffs=(1.0, 2.0))),
        ("ns_coeffs", lambda: optix.muon(0.02, ns_coeffs="polar")),
        ("eps", lambda: optix.muon(0.02, eps=-1.0)),
        ("preconditioning", lambda: optix.muon(0.02, preconditioning="qr")),
        ("consistent_rms", lambda: optix.muon(0.02, consistent_rms=0.0)),
        ("consistent_rms", lambda: optix.muon(0.02, consistent_rms=0.2, shape_scaling=False)),
        ("shape_scaling", lambda: optix.muon(0.02, shape_scaling="width")),
        ("adam_b1", lambda: optix.muon(0.02, adam_b1=1.5)),
        ("adam_b2", lambda: optix.muon(0.02, adam_b2=-0.5)),
        ("adam_eps", lambda: optix.muon(0.02, adam_eps=-1.0)),
        ("adam_weight_decay", lambda: optix.muon(0.02, adam_weight_decay=-1.0)),
        ("mu_dtype", lambda: optix.muon(0.02, mu_dtype=jax.numpy.int32)),
        ("stacked_axes", lambda: flax_dimension_numbers(-1))]

ENTRIES = [
    # optax's arguments only: the same call in both libraries (the conv kernel, the
    # vectors and the scalar go to AdamW, the 2-D leaves to Muon).
    Entry("muon",
          lambda: optix.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          bad=_BAD, tol=1e-4),
    Entry("muon_split",
          lambda: optix.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3, mesh=_MESH),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          bad=[("axis", lambda: optix.muon(0.02, mesh=_MESH, axis="model"))],
          tol=1e-4),
    # The conv kernel as a (3·3·2, 4) matrix.
    # 3e-4: measured 1.4e-4 (conv) and 1.9e-4 (aol + adaptive) at step 6 against
    # optax, float32; the source of the difference is not yet pinned down.
    Entry("muon_conv",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3,
                             muon_weight_dimension_numbers=_flax_dims()),
          lambda: optax.contrib.muon(0.02, adam_learning_rate=1e-3,
                                     muon_weight_dimension_numbers=_optax_dims()),
          tol=3e-4),
    Entry("muon_stacked_rms",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, consistent_rms=0.2,
                             muon_weight_dimension_numbers=_flax_dims(_stacked_axes)),
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, consistent_rms=0.2,
              muon_weight_dimension_numbers=_optax_dims(lambda path: 1 if "layers" in path else 0)),
          # Newton–Schulz rounding: single near-zero elements reach ~2e-4 relative, no drift.
          params=_stacked_params, tol=5e-4),
    Entry("muon_heavy_ball_embed_on_adam",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, nesterov=False, adam_mask=("embed",)),
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, nesterov=False,
              muon_weight_dimension_numbers=lambda p: {
                  **jax.tree.map(lambda x: MuonDimensionNumbers() if x.ndim == 2 else None, p),
                  "embed": None}),
          tol=1e-4),
    Entry("muon_aol_adaptive",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, preconditioning="aol", adaptive=True,
                             ns_coeffs="dion"),
          lambda: optax.contrib.muon(0.02, adam_learning_rate=1e-3, preconditioning="aol",
                                     adaptive=True, ns_coeffs="dion"),
          tol=3e-4),
    # optax's scale_by_muon needs dimension numbers for a tree (None fails on a dict).
    # 3e-4: 1.4e-4 measured at step 13 of 25 (see muon_conv).
    Entry("scale_by_muon_matrices",
          lambda: optix.chain(optix.scale_by_muon(weight_dimension_numbers=_matrix_dims()),
                              optix.scale_by_learning_rate(0.02)),
          lambda: optax.chain(optax.contrib.scale_by_muon(weight_dimension_numbers=_matrix_dims()),
                              optax.scale_by_learning_rate(0.02)),
          tol=3e-4,
          params=lambda: {"a": jax.random.normal(jax.random.key(0), (12, 5)),
                          "b": jax.random.normal(jax.random.key(1), (5, 12))}),
]
