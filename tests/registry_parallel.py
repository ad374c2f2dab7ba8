"""Registry entries for the distributed area: ``shard_state`` (ZeRO-1) wrappers on
an Auto mesh of the 8 simulated devices go through the shared contract tests
(jit, bf16 params, tree mismatch, orbax round trip) and optax parity."""

import jax
import optax
from jax.sharding import AxisType

import optix
from registry import Entry

_MESH = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))

ENTRIES = [
    Entry("shard_state_adamw", lambda: optix.shard_state(optix.adamw(1e-2, weight_decay=0.1), _MESH),
          lambda: optax.adamw(1e-2, weight_decay=0.1),
          bad=[("axis", lambda: optix.shard_state(optix.adamw(1e-2), _MESH, axis="model"))]),
    Entry("shard_state_clip_lion",
          lambda: optix.shard_state(optix.chain(optix.clip_by_global_norm(1.0),
                                                optix.lion(1e-3, weight_decay=0.1)), _MESH),
          lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.lion(1e-3, weight_decay=0.1))),
]
