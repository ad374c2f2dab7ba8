"""optix: composable gradient transformations for JAX, in the Optax protocol."""

# The protocol and combinators (from optax).
from optix._base import (
    EmptyState, GradientTransformation, GradientTransformationBase, OptState, Params,
    ScalarOrSchedule, Schedule, Updates, apply_updates, chain, identity, inject_hyperparams,
    masked, multi_transform, named_chain, partition, set_to_zero, with_extra_args_support)
from optix._tree import safe_increment

# First-order pieces.
from optix.transforms.adaptive import (
    ScaleByAdamState, ScaleByRmsState, ScaleByRssState, scale_by_adam, scale_by_rms,
    scale_by_rss)
from optix.transforms.clipping import (
    ClipByGlobalNormState, adaptive_grad_clip, clip, clip_by_global_norm, global_norm)
from optix.transforms.decay import (
    add_decayed_weights, combine_masks, exclude_names, matrices_only)
from optix.transforms.momentum import TraceState, trace
from optix.transforms.scaling import (
    ScaleByScheduleState, scale, scale_by_learning_rate, scale_by_schedule)
from optix.transforms.sign import ScaleByLionState, scale_by_lion

# Optimizer aliases.
from optix.optimizers import adagrad, adam, adamw, lion, nadam, nadamw, rmsprop, sgd

# Schedules (also available as optix.schedules.*).
from optix import schedules
from optix.schedules import (
    constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule, cyclical_schedule,
    exponential_decay, inverse_sqrt_schedule, join_schedules, linear_onecycle_schedule,
    linear_schedule, piecewise_constant_schedule, polynomial_schedule, sgdr_schedule,
    warmup_cosine_decay_schedule, wsd_decay_branch, wsd_schedule)

# -- memory and safety (issue 3) --

# -- matrix optimizers (issue 4) --

# -- distributed (issue 5) --

# -- packed engine (issue 6) --

# -- tools and monitoring (issue 7) --

# -- curvature and quasi-Newton (issue 8) --

from optix import testing  # noqa: E402  (the contract checks, for users)

__version__ = "0.1.0"
