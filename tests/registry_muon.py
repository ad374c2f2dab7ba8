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

# Tolerances. For a tree of one matrix leaf optix's updates are optax's bit for bit
# (tests/test_muon.py::test_one_leaf_is_optax_bit_for_bit). With several matrix leaves in
# one jitted update, optax's own update of a leaf changes by a few float32 ulps when other
# leaves are present (XLA compiles its per-leaf Newton–Schulz iterations together); optix
# orthogonalizes same-shape matrices as one batched stack, whose batched matmuls round
# differently again. The params then differ by 1-3 ulps of the leaf's largest entry
# (measured: at most 1.2e-6 absolute on params of size ~3, 25 steps, seeds 0 and 1), and the
# elementwise relative difference that test_parity measures is that over the smallest
# param an update passes near (1e-4 to 2e-4 in size): each tolerance below is about twice
# the largest measured.
ENTRIES = [
    # optax's arguments only: the same call in both libraries (the conv kernel, the
    # vectors and the scalar go to AdamW, the 2-D leaves to Muon). Measured 4.9e-6.
    Entry("muon",
          lambda: optix.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          bad=_BAD, tol=1e-5),
    Entry("muon_split",
          lambda: optix.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3, mesh=_MESH),
          lambda: optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3),
          bad=[("axis", lambda: optix.muon(0.02, mesh=_MESH, axis="model"))],
          tol=1e-5),
    # The conv kernel as a (3·3·2, 4) matrix. Measured 2.7e-5.
    Entry("muon_conv",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3,
                             muon_weight_dimension_numbers=_flax_dims()),
          lambda: optax.contrib.muon(0.02, adam_learning_rate=1e-3,
                                     muon_weight_dimension_numbers=_optax_dims()),
          tol=6e-5),
    Entry("muon_stacked_rms",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, consistent_rms=0.2,
                             muon_weight_dimension_numbers=_flax_dims(_stacked_axes)),
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, consistent_rms=0.2,
              muon_weight_dimension_numbers=_optax_dims(lambda path: 1 if "layers" in path else 0)),
          # Measured 1.9e-4 (a param of size 1.8e-5), no drift.
          params=_stacked_params, tol=4e-4),
    Entry("muon_heavy_ball_embed_on_adam",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, nesterov=False, adam_mask=("embed",)),
          lambda: optax.contrib.muon(
              0.02, adam_learning_rate=1e-3, nesterov=False,
              muon_weight_dimension_numbers=lambda p: {
                  **jax.tree.map(lambda x: MuonDimensionNumbers() if x.ndim == 2 else None, p),
                  "embed": None}),
          tol=1e-6),  # one matrix leaf on Muon: optax's numbers bit for bit (measured 0)
    Entry("muon_aol_adaptive",
          lambda: optix.muon(0.02, adam_learning_rate=1e-3, preconditioning="aol", adaptive=True,
                             ns_coeffs="dion"),
          lambda: optax.contrib.muon(0.02, adam_learning_rate=1e-3, preconditioning="aol",
                                     adaptive=True, ns_coeffs="dion"),
          # Measured 5.5e-4: 1.1e-7 absolute on a param of size 1.9e-4 (step 6); the
          # dual-norm factor, a sum over the leaf, scales the ulp differences up.
          tol=1e-3),
    # optax's scale_by_muon needs dimension numbers for a tree (None fails on a dict).
    # Measured 1.9e-4 (a param of size 1.3e-4, step 13).
    Entry("scale_by_muon_matrices",
          lambda: optix.chain(optix.scale_by_muon(weight_dimension_numbers=_matrix_dims()),
                              optix.scale_by_learning_rate(0.02)),
          lambda: optax.chain(optax.contrib.scale_by_muon(weight_dimension_numbers=_matrix_dims()),
                              optax.scale_by_learning_rate(0.02)),
          tol=4e-4,
          params=lambda: {"a": jax.random.normal(jax.random.key(0), (12, 5)),
                          "b": jax.random.normal(jax.random.key(1), (5, 12))}),
]
