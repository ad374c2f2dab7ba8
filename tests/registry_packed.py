"""Registry entries for the packed engine: elementwise chains run on
packed buffers must keep the contract and match optax's unpacked optimizers."""

import jax
import optax

import optix
from registry import Entry

_matrices = optix.matrices_only
# Packed chains equal the unpacked ones bit for bit (tests/test_packing.py); here
# they are compared with optax at the registry's default tolerance, like the
# unpacked optix entries.


def _packed_bad(fn):
  return [("max_leaf_size", lambda: optix.packed(fn(), max_leaf_size=-1)),
          ("check", lambda: optix.packed(fn(), check="yes"))]


ENTRIES = [
    Entry("packed_adamw", lambda: optix.packed(optix.adamw(1e-2, weight_decay=0.1)),
          lambda: optax.adamw(1e-2, weight_decay=0.1),
          bad=_packed_bad(lambda: optix.adamw(1e-2))),
    Entry("packed_adamw_masked",
          lambda: optix.packed(optix.adamw(1e-2, weight_decay=0.1,
                                           mask=optix.packed_mask(_matrices)),
                               groups=_matrices),
          lambda: optax.adamw(1e-2, weight_decay=0.1,
                              mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))),
    Entry("packed_lion", lambda: optix.packed(optix.lion(1e-3, weight_decay=0.1)),
          lambda: optax.lion(1e-3, weight_decay=0.1)),
    Entry("packed_sgd_momentum", lambda: optix.packed(optix.sgd(0.05, momentum=0.9)),
          lambda: optax.sgd(0.05, momentum=0.9)),
    Entry("packed_clip_adam",
          lambda: optix.packed(optix.chain(optix.clip_by_global_norm(1.0), optix.adam(1e-2))),
          lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))),
    Entry("packed_rmsprop_mixed_sizes",  # max_leaf_size=20: the matrices stay unpacked
          lambda: optix.packed(optix.rmsprop(0.01, momentum=0.9), max_leaf_size=20),
          lambda: optax.rmsprop(0.01, momentum=0.9)),
]
