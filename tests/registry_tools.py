"""Registry entries for the monitoring transform: a pass-through, so
its parity reference is the wrapped optax optimizer itself."""

import optax

import optix
from registry import Entry

ENTRIES = [
    Entry("monitor_adamw", lambda: optix.monitor(optix.adamw(1e-2, weight_decay=0.1)),
          lambda: optax.adamw(1e-2, weight_decay=0.1),
          bad=[("spike_factor", lambda: optix.monitor(spike_factor=1.0)),
               ("decay", lambda: optix.monitor(decay=-0.5)),
               ("warmup_steps", lambda: optix.monitor(warmup_steps=-1))]),
    Entry("monitor_head_sgd", lambda: optix.chain(optix.monitor(), optix.sgd(0.05, momentum=0.9)),
          lambda: optax.sgd(0.05, momentum=0.9)),
]
