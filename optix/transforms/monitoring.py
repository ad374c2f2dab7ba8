"""Measurements kept in the optimizer state (no host callbacks): optax's dict of
measures, and optix's gradient-health statistics around an optimizer."""

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix.transforms.clipping import global_norm


class MonitorState(NamedTuple):
  count: jax.Array              # int32, saturating: steps seen
  grad_norm: jax.Array          # ‖g_t‖ over the whole tree
  layer_grad_norms: Any         # ‖g_t‖ per leaf (a tree of scalars shaped like params)
  update_norm: jax.Array        # ‖u_t‖ of the updates that leave the monitor
  param_norm: jax.Array         # ‖θ_t‖ (0 when update is called without params)
  update_ratio: jax.Array       # ‖u_t‖ / ‖θ_t‖ (0 without params)
  layer_update_ratios: Any      # ‖u_t‖ / ‖θ_t‖ per leaf
  effective_lr: jax.Array       # ‖u_t‖ / ‖g_t‖
  grad_norm_ema: jax.Array      # running mean of ‖g‖ over non-spike steps (debiased)
  ema_weight: jax.Array         # 1 − decay^k after k non-spike steps (the debiasing factor)
  spike: jax.Array              # int32 1 if this step's ‖g_t‖ was a spike, else 0
  num_spikes: jax.Array         # int32 spikes so far
  inner_state: Any              # the wrapped transformation's state (EmptyState if none)




class MeasurementsState(NamedTuple):
  """State of ``monitor(measures)``: each measure's latest value and its own state."""
  measurements: dict            # name -> the measure's value for the last updates seen
  measure_states: tuple         # each measure's state, in the order of ``measures``


Measure = Union[_base.GradientTransformation, Callable[[_base.Updates], Any]]


def _leaf_norms(tree, axis_name=None):
  return jax.tree.map(lambda x: global_norm(x, axis_name=axis_name), tree)


def _ratio(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def monitor(measures: Union[Mapping[str, Measure], _base.GradientTransformation, None] = None,
            *, inner: Optional[_base.GradientTransformation] = None,
            spike_factor: float = 4.0, decay: float = 0.99, warmup_steps: int = 10,
            axis_name=None) -> _base.GradientTransformation:
  r"""Measurements of the updates, kept in state: optax's form and optix's.

  **optax's form**, ``monitor({name: measure, ...})`` (``optax.monitor``): an
  identity on the updates that stores, under each name, the measure's value for
  the updates passing through it. A measure is a callable ``updates -> value``
  (e.g. ``optax.tree.norm``) or a transformation whose *updates* are the value
  and whose state it keeps (e.g. ``optax.measure_with_ema(fn, decay)``). Every
  measure sees the same updates, params and extra arguments. The state is
  ``MeasurementsState(measurements, measure_states)`` (in
  ``optix.transforms.monitoring``), read with ``optax.tree.get(state, name)``;
  the values are optax's. Its ``measurements``
  start as zeros shaped like the first measurement (optax's start as an empty
  dict), so the state keeps one structure from ``init`` on and can be a
  ``lax.scan`` carry; a measure whose update needs extra arguments
  (``value=...``) is left out of the initial dict, as in optax.

  **optix's form**, ``monitor(tx)`` or ``monitor()``: gradient-health
  statistics around an optimizer, read with :func:`monitor_stats`, as follows.
  ``monitor(tx)`` wraps an optimizer: it measures the incoming gradients ``g``,
  runs ``tx``, measures the outgoing updates ``u`` and returns ``u`` unchanged.
  ``monitor()`` alone is an identity that measures whatever passes through it
  (put it at the head of a chain for gradient statistics, ``u = g``). Per step:

  .. math::
     \|g_t\|,\ \|g_t^{(\ell)}\| \text{ per leaf},\quad
     r_t = \|u_t\| / \|\theta_t\|,\ r_t^{(\ell)} \text{ per leaf},\quad
     \eta^{\rm eff}_t = \|u_t\| / \|g_t\|

  (so ``effective_lr`` is exactly the learning rate for plain SGD). Spike
  detection keeps a debiased running mean :math:`\bar n` of :math:`\|g\|` over
  earlier non-spike steps (decay ``decay``); step t is a spike when
  :math:`\|g_t\| > \text{spike\_factor} \cdot \bar n` after ``warmup_steps``
  steps, or when :math:`\|g_t\|` is not finite. Spikes do not enter the running
  mean, so one bad batch does not raise the bar for the next.

  Read the statistics with :func:`monitor_stats` (or from the
  :class:`MonitorState` inside the optimizer state); everything is computed in
  the jitted step, so logging costs a device-to-host copy of a few scalars when
  you choose to log. Under ``jit`` with sharded leaves the norms are exact as
  they are; inside ``jax.shard_map`` or ``pmap``, where each device holds a
  block of each leaf, pass the mapped ``axis_name`` (as for
  :func:`optix.global_norm`, whose rules apply) and every norm, whole-tree and
  per-leaf, is the norm of the whole array. Reference: the "update/param ratio ~1e-3" heuristic from
  Karpathy's CS231n notes; loss-spike monitoring as in Wortsman et al. 2023
  (arXiv 2309.14322).

  Args:
    measures: optax's form: a dict from names to measures (callables of the
      updates, or transformations whose updates are the measurement). optix's
      form: the optimizer (or any transform) to wrap, or None (the default):
      measure the updates passing through an identity.
    inner: (optix) the optimizer to wrap, by keyword (``monitor(inner=tx)``, the
      same as ``monitor(tx)``); None.
    spike_factor: a step whose gradient norm exceeds ``spike_factor`` times the
      running mean is a spike; in (1, inf), default 4: flags the
      order-of-magnitude jumps that precede loss blow-ups without firing on
      normal batch noise.
    decay: decay of the running mean of the gradient norm, in [0, 1); default
      0.99 averages over ~100 steps.
    warmup_steps: steps before spikes are flagged (the mean needs a few values
      first); an integer >= 0, default 10.
    axis_name: the mapped axis name inside ``jax.shard_map``/``pmap`` so that
      every norm is of the whole array (None under ``jit``, the default).

  The remaining arguments belong to optix's form; a dict of measures takes none
  of them.

  Returns:
    A ``GradientTransformation``: its state is a ``MeasurementsState`` for a
    dict of measures, a :class:`MonitorState` otherwise.
  """
  if isinstance(measures, Mapping):
    # Only concrete values count: optax.inject_hyperparams passes the defaults in traced.
    changed = lambda v, default: isinstance(v, (int, float)) and v != default
    extras = {"inner": inner is not None, "spike_factor": changed(spike_factor, 4.0),
              "decay": changed(decay, 0.99), "warmup_steps": changed(warmup_steps, 10),
              "axis_name": axis_name is not None}
    given = [k for k, v in extras.items() if v]
    if given:
      raise ValueError(f"monitor(measures) with a dict of measures takes no {given}: "
                       "those configure monitor(tx), the gradient-health statistics")
    return _measure(measures)
  if measures is not None:
    if inner is not None:
      raise ValueError("monitor: pass the optimizer to wrap once, as monitor(tx) or "
                       "monitor(inner=tx), not both")
    if not isinstance(measures, _base.GradientTransformationBase):
      raise ValueError("monitor: the first argument must be a dict of measures (optax's form) "
                       f"or a transformation to wrap, got {type(measures).__name__}")
    inner = measures
  return _health(inner, spike_factor, decay, warmup_steps, axis_name)


def _as_transformation(name, measure) -> _base.GradientTransformation:
  """A measure as a transformation whose updates are the measurement: a callable of
  the updates keeps no state (it is tried first, as in optax)."""
  if callable(measure):
    def init(params):
      del params
      return _base.EmptyState()

    def update(updates, state, params=None, **extra_args):
      del params, extra_args
      return measure(updates), state
    return _base.GradientTransformation(init, update)
  if isinstance(measure, _base.GradientTransformationBase):
    return _base.with_extra_args_support(measure)
  raise ValueError(f"monitor: measure {name!r} must be a callable of the updates or a "
                   f"gradient transformation, got {type(measure).__name__}")


def _measure(measures) -> _base.GradientTransformation:
  """optax's ``monitor(measures)``: an identity that records each measure's value."""
  for name in measures:
    if not isinstance(name, str):
      raise ValueError(f"monitor: measure names must be strings, got {name!r}")
  names = tuple(measures)
  txs = tuple(_as_transformation(n, measures[n]) for n in names)

  def init(params):
    states = tuple(tx.init(params) for tx in txs)
    measurements = {}
    for name, tx, state in zip(names, txs, states):
      try:  # the shape of the first measurement: the updates have the params' structure
        shape = jax.eval_shape(lambda p, s, tx=tx: tx.update(p, s, p)[0], params, state)
      except Exception:  # pylint: disable=broad-except  # needs extra arguments: optax's way
        continue
      measurements[name] = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shape)
    return MeasurementsState(measurements, states)

  def update(updates, state, params=None, **extra_args):
    measurements, states = {}, []
    for name, tx, s in zip(names, txs, state.measure_states):
      measurements[name], s = tx.update(updates, s, params, **extra_args)
      states.append(s)
    return updates, MeasurementsState(measurements, tuple(states))

  return _base.GradientTransformation(init, update)


def _health(inner, spike_factor, decay, warmup_steps, axis_name):
  """optix's ``monitor(tx)``: the gradient-health statistics of :class:`MonitorState`."""
  _validate.in_range("spike_factor", spike_factor, 1.0, low_closed=False)
  _validate.unit_interval("decay", decay)
  _validate.integer("warmup_steps", warmup_steps, 0)
  inner = _base.with_extra_args_support(inner if inner is not None else _base.identity())

  def init(params):
    # Fresh buffers per field: a donated state must not hold one buffer twice.
    zero = lambda: jnp.zeros([], jnp.float32)
    izero = lambda: jnp.zeros([], jnp.int32)
    scalars = lambda: jax.tree.map(lambda _: zero(), params)
    return MonitorState(izero(), zero(), scalars(), zero(), zero(), zero(), scalars(), zero(),
                        zero(), zero(), izero(), izero(), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    # Structure check at trace time (numpy placeholders: nothing is traced).
    _tree.check_match("updates", jax.tree.map(lambda _: np.zeros(()), updates),
                      "state.layer_grad_norms", state.layer_grad_norms)
    grad_norm = global_norm(updates, axis_name=axis_name)
    layer_grad_norms = _leaf_norms(updates, axis_name)
    new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    update_norm = global_norm(new_updates, axis_name=axis_name)
    if params is None:
      param_norm = jnp.zeros([], jnp.float32)
      layer_ratios = jax.tree.map(jnp.zeros_like, state.layer_update_ratios)
    else:
      param_norm = global_norm(params, axis_name=axis_name)
      layer_ratios = jax.tree.map(_ratio, _leaf_norms(new_updates, axis_name),
                                  _leaf_norms(params, axis_name))
    count = _tree.safe_increment(state.count)
    mean = _ratio(state.grad_norm_ema, state.ema_weight)
    spike = jnp.logical_not(jnp.isfinite(grad_norm)) | (
        (state.count >= warmup_steps) & (state.ema_weight > 0)
        & (grad_norm > spike_factor * mean))
    ema = jnp.where(spike, state.grad_norm_ema, decay * state.grad_norm_ema
                    + (1 - decay) * grad_norm)
    weight = jnp.where(spike, state.ema_weight, decay * state.ema_weight + (1 - decay))
    new_state = MonitorState(
        count, grad_norm, layer_grad_norms, update_norm, param_norm,
        _ratio(update_norm, param_norm), layer_ratios, _ratio(update_norm, grad_norm),
        ema, weight, spike.astype(jnp.int32), state.num_spikes + spike.astype(jnp.int32),
        inner_state)
    return new_updates, new_state

  return _base.GradientTransformation(init, update)


def monitor_stats(opt_state) -> dict:
  """The scalar statistics of the first :class:`MonitorState` found in ``opt_state``.

  ``opt_state`` is a raw optimizer state or an ``nnx.Optimizer``'s
  ``opt_state`` (or the ``nnx.Optimizer`` itself)::

    optimizer = nnx.Optimizer(model, optix.monitor(optix.adamw(1e-3)), wrt=nnx.Param)
    ...
    stats = optix.monitor_stats(optimizer.opt_state)

  Returns ``{"grad_norm", "update_norm", "param_norm", "update_ratio",
  "effective_lr", "grad_norm_mean", "spike", "num_spikes", "count"}`` as
  arrays (jit-friendly; call ``float(...)`` on the host to log). Raises
  ``ValueError`` when the state holds no monitor.

  Args:
    opt_state: any optimizer state that holds a :class:`MonitorState` (nested in
      chains and wrappers is fine), an ``nnx.Optimizer``'s ``opt_state``, or the
      ``nnx.Optimizer`` itself.

  Returns:
    A dict of scalar arrays, keyed as above.
  """
  found = _tree.find_states(opt_state, MonitorState)
  if not found:
    raise ValueError("opt_state holds no MonitorState: wrap the optimizer in optix.monitor(...)")
  s = found[0]
  return {"grad_norm": s.grad_norm, "update_norm": s.update_norm, "param_norm": s.param_norm,
          "update_ratio": s.update_ratio, "effective_lr": s.effective_lr,
          "grad_norm_mean": _ratio(s.grad_norm_ema, s.ema_weight), "spike": s.spike,
          "num_spikes": s.num_spikes, "count": s.count}
