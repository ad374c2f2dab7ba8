"""Registry entries for the safety wrappers: guards, loss scaling, accumulation, master weights."""

import optax

import optix
from registry import Entry


def _adam():
  return optix.adam(1e-2)


ENTRIES = [
    Entry("apply_if_finite", lambda: optix.apply_if_finite(_adam(), 3),
          lambda: optax.apply_if_finite(optax.adam(1e-2), 3),
          bad=[("max_consecutive_errors", lambda: optix.apply_if_finite(_adam(), -1))]),
    Entry("spike_guard_skip", lambda: optix.spike_guard(_adam(), threshold=3.0, warmup_steps=2),
          bad=[("threshold", lambda: optix.spike_guard(_adam(), threshold=1.0)),
               ("decay", lambda: optix.spike_guard(_adam(), decay=1.0)),
               ("warmup_steps", lambda: optix.spike_guard(_adam(), warmup_steps=0)),
               ("mode", lambda: optix.spike_guard(_adam(), mode="drop"))]),
    Entry("spike_guard_clip",
          lambda: optix.spike_guard(_adam(), threshold=1.5, warmup_steps=1, mode="clip")),
    Entry("zero_nans", lambda: optix.chain(optix.zero_nans(), _adam()),
          lambda: optax.chain(optax.zero_nans(), optax.adam(1e-2))),
    # Scale 1: the shared tests feed unscaled random gradients.
    Entry("dynamic_loss_scaling",
          lambda: optix.dynamic_loss_scaling(
              optix.chain(optix.clip_by_global_norm(1.0), _adam()), initial_scale=1.0),
          lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
          bad=[("initial_scale", lambda: optix.dynamic_loss_scaling(_adam(), initial_scale=0.0)),
               ("growth_interval",
                lambda: optix.dynamic_loss_scaling(_adam(), growth_interval=0)),
               ("growth_factor", lambda: optix.dynamic_loss_scaling(_adam(), growth_factor=0.5)),
               ("backoff_factor",
                lambda: optix.dynamic_loss_scaling(_adam(), backoff_factor=1.5)),
               ("min_scale", lambda: optix.dynamic_loss_scaling(_adam(), min_scale=-1.0)),
               ("max_scale",
                lambda: optix.dynamic_loss_scaling(_adam(), min_scale=4.0, max_scale=2.0))]),
    Entry("multi_steps", lambda: optix.multi_steps(_adam(), 3),
          lambda: optax.MultiSteps(optax.adam(1e-2), 3).gradient_transformation(),
          bad=[("every_k", lambda: optix.multi_steps(_adam(), 0))]),
    Entry("master_weights_adamw",
          lambda: optix.with_master_weights(optix.adamw(1e-2, weight_decay=0.1)),
          lambda: optax.adamw(1e-2, weight_decay=0.1)),
]
