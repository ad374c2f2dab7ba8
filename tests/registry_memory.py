"""Registry entries for the memory-lean optimizers: Adafactor and 8-bit Adam/AdamW."""

import jax
import optax

import optix
from registry import Entry


def _params_with_big_leaves():
  """A tree where the 8-bit path is taken (sizes >= min_8bit_size, one not a multiple
  of the block size) next to small leaves that stay float32."""
  k = jax.random.split(jax.random.key(7), 4)
  return {"dense": {"kernel": jax.random.normal(k[0], (72, 64)),
                    "bias": jax.random.normal(k[1], (64,))},
          "embed": jax.random.normal(k[2], (61, 73)),
          "scale": jax.random.normal(k[3], ())}


ENTRIES = [
    # Relative step off: step for step optax.adafactor (min_dim 4 so the test tree factors).
    Entry("adafactor", lambda: optix.adafactor(1e-2, min_dim_size_to_factor=4),
          lambda: optax.adafactor(1e-2, min_dim_size_to_factor=4),
          bad=[("decay_rate", lambda: optix.adafactor(1e-2, decay_rate=0.0)),
               ("clipping_threshold", lambda: optix.adafactor(1e-2, clipping_threshold=0.0)),
               ("momentum", lambda: optix.adafactor(1e-2, momentum=1.0)),
               ("eps", lambda: optix.adafactor(1e-2, eps=-1.0)),
               ("decay_offset", lambda: optix.adafactor(1e-2, decay_offset=-1)),
               ("min_dim_size_to_factor", lambda: optix.adafactor(1e-2, min_dim_size_to_factor=-1)),
               ("learning_rate", lambda: optix.adafactor(-1e-2)),
               ("learning_rate", lambda: optix.adafactor(1e-2, relative_step=True)),
               ("weight_decay_rate", lambda: optix.adafactor(1e-2, weight_decay_rate=-1.0))]),
    Entry("adafactor_momentum_decay",
          lambda: optix.adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.9,
                                  weight_decay_rate=0.1, multiply_by_parameter_scale=False),
          lambda: optax.adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.9,
                                  weight_decay_rate=0.1, multiply_by_parameter_scale=False),
          # Same math; rsqrt vs optax's x**-0.5 leaves ~1e-8 absolute differences, which the
          # relative measure magnifies on coordinates crossing zero after ~20 steps.
          tol=1e-4),
    # The paper's defaults: relative step min(1e-2, 1/sqrt t) · max(1e-3, RMS(θ)); no optax twin.
    Entry("adafactor_relative_step", lambda: optix.adafactor(min_dim_size_to_factor=4),
          bad=[("max_relative_step", lambda: optix.adafactor(max_relative_step=0.0)),
               ("min_param_scale", lambda: optix.adafactor(min_param_scale=-1.0))]),
    Entry("adam8bit", lambda: optix.adam8bit(1e-2), params=_params_with_big_leaves,
          bad=[("b1", lambda: optix.adam8bit(1e-2, b1=1.0)),
               ("b2", lambda: optix.adam8bit(1e-2, b2=-0.1)),
               ("eps", lambda: optix.adam8bit(1e-2, eps=-1.0)),
               ("block_size", lambda: optix.adam8bit(1e-2, block_size=0)),
               ("min_8bit_size", lambda: optix.adam8bit(1e-2, min_8bit_size=-1)),
               ("learning_rate", lambda: optix.adam8bit(-1e-2))]),
    # Every leaf of the default test tree quantized, in blocks of 32 (sizes 6, 36, 40, 48, 72).
    Entry("adamw8bit_small_blocks",
          lambda: optix.adamw8bit(1e-2, weight_decay=0.1, block_size=32, min_8bit_size=2),
          bad=[("weight_decay", lambda: optix.adamw8bit(1e-2, weight_decay=-0.1))]),
]
