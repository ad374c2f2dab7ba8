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

# The field's newer optimizers: schedule-free, parameter-free, AdEMAMix, ADOPT, MARS,
# cautious, trust ratio (LAMB, LARS), and optax's other aliases and wrappers.
from optix.transforms.schedule_free import (
    ScheduleFreeState, schedule_free, schedule_free_eval_params)
from optix.transforms.ademamix import ScaleByAdemamixState, scale_by_ademamix
from optix.transforms.adopt import ScaleByAdoptState, scale_by_adopt
from optix.transforms.mars import ScaleByMarsState, scale_by_mars
from optix.transforms.cautious import cautious, cautious_mask
from optix.transforms.trust_ratio import scale_by_trust_ratio
from optix.transforms.adapter import from_optax
from optix.free_optimizers import (
    cocob, dadapt_adamw, dog, dowg, mechanize, prodigy, schedule_free_adamw, schedule_free_sgd)
from optix.field_optimizers import (
    ademamix, adopt, cautious_adamw, cautious_lion, lamb, lars, mars_adamw)
from optix.optax_family import (
    adabelief, adadelta, adamax, adamaxw, adan, amsgrad, fromage, novograd, noisy_sgd,
    optimistic_adam, optimistic_adam_v2, optimistic_gradient_descent, polyak_sgd, radam, rprop,
    sign_sgd, signum, sm3, yogi)
from optix.optax_contrib import (
    acprop, galore, madgrad, momo, momo_adam, simplified_ademamix, sophia)
from optix.optax_wrappers import (
    lookahead, normalize, reduce_on_plateau, sam, split_real_and_imaginary)

# Schedules (also available as optix.schedules.*).
from optix import schedules
from optix.schedules import (
    constant_schedule, cosine_decay_schedule, cosine_onecycle_schedule, cyclical_schedule,
    exponential_decay, inverse_sqrt_schedule, join_schedules, linear_onecycle_schedule,
    linear_schedule, piecewise_constant_schedule, piecewise_interpolate_schedule,
    polynomial_schedule, sgdr_schedule, warmup_constant_schedule, warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule, wsd_decay_branch, wsd_schedule)

# Memory-lean optimizers, loss scaling, accumulation and safety guards.
from optix.memory_optimizers import adafactor, adam8bit, adamw8bit
from optix.transforms.factored import (
    EmaMomentumState, FactoredRmsState, RelativeStepState, clip_by_block_rms, ema_momentum,
    scale_by_factored_rms, scale_by_param_block_rms, scale_by_relative_step)
from optix.transforms.quantized import (
    QuantizedArray, ScaleByAdam8bitState, dequantize, quantize, scale_by_adam8bit)
from optix import loss_scaling
from optix.loss_scaling import (
    DynamicLossScale, LossScaleState, LossScalingState, current_loss_scale,
    dynamic_loss_scaling)
from optix.transforms.accumulation import MultiStepsState, multi_steps
from optix.transforms.precision import MasterWeightsState, with_master_weights
from optix.transforms.safety import (
    ApplyIfFiniteState, SpikeGuardState, ZeroNansState, all_finite, apply_if_finite,
    select_tree, spike_guard, z_loss, zero_nans)

# Matrix optimizers (Shampoo, SOAP, Muon).
from optix.matrix_optimizers import shampoo, soap
from optix.transforms.roots import inverse_pth_root_eigh, inverse_pth_root_newton
from optix.transforms.shampoo import ScaleByShampooState, scale_by_shampoo
from optix.transforms.soap import ScaleBySoapState, scale_by_soap
from optix.matrix_optimizers import psgd_kron
from optix.transforms.psgd import ScaleByPsgdKronState, scale_by_psgd_kron
from optix.matrix_optimizers import muon, muon_labels
from optix.transforms.muon import ScaleByMuonState, matrix_view, scale_by_muon
from optix.transforms.newton_schulz import newton_schulz

# Distributed: sharded optimizer state.
from optix import parallel
from optix.parallel import map_stacked, shard_state, state_shardings

# The engine: the one-pass step (optix.apply_step), the packed layout and the jitted,
# donated train step.
from optix import fused
from optix.fused import apply_step
from optix import training
from optix.packing import (
    Packed, PackedState, PackLayout, layout_of, pack, packed, packed_mask, unpack)
from optix.training import train_step

# Monitoring and tools (optix.tools.compare, lr_range_test, loss_landscape, memory).
from optix import tools
from optix.transforms.monitoring import MeasurementsState, MonitorState, monitor, monitor_stats

# Curvature (K-FAC) and quasi-Newton (L-BFGS, line searches).
from optix.transforms.curvature import LayerStats, ScaleByKfacState, scale_by_kfac
from optix.transforms.linesearch import (
    LinesearchInfo, ScaleByBacktrackingLinesearchState, ScaleByLbfgsState,
    ScaleByLinesearchState, ScaleByZoomLinesearchState, ZoomLinesearchInfo,
    scale_by_backtracking_linesearch, scale_by_lbfgs, scale_by_zoom_linesearch)
from optix.second_order import kfac, lbfgs


__version__ = "0.1.0"

# Imported on first use, so that `import optix` needs neither Flax nor chex: K-FAC's Flax NNX
# capture (`pip install optix[flax]`) and the contract checks for users (optix.testing, on chex).
_LAZY = {"KFACProbe": "optix.contrib.nnx", "KFACTap": "optix.contrib.nnx",
         "kfac_tap": "optix.contrib.nnx", "kfac_value_and_grad": "optix.contrib.nnx",
         "contrib": "optix.contrib", "testing": "optix.testing"}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'optix' has no attribute {name!r}")
  import importlib  # pylint: disable=import-outside-toplevel
  module = importlib.import_module(_LAZY[name])
  value = module if _LAZY[name] == f"optix.{name}" else getattr(module, name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
