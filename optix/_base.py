"""The Optax protocol, re-exported, and the types shared by every transform.

optix does not redefine the protocol: a transform is an
``optax.GradientTransformationExtraArgs`` -- ``init(params) -> state`` and
``update(updates, state, params=None, **extra_args) -> (updates, state)`` -- so
optix and optax pieces mix freely in either library's ``chain``.
"""

from typing import Any, Callable, Union

import jax
import optax

GradientTransformation = optax.GradientTransformationExtraArgs
GradientTransformationBase = optax.GradientTransformation
EmptyState = optax.EmptyState
Params = Any
Updates = Any
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]

# Combinators that already do the job: reused, not rewritten.
chain = optax.chain
named_chain = optax.named_chain
apply_updates = optax.apply_updates
partition = optax.partition
multi_transform = optax.multi_transform
masked = optax.masked
inject_hyperparams = optax.inject_hyperparams
identity = optax.identity
set_to_zero = optax.set_to_zero
with_extra_args_support = optax.with_extra_args_support
