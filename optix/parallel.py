"""Distributed optimizer state: ZeRO-1 sharding, state shardings, stacked matrix work.

optix uses JAX's own distributed engine -- ``jax.sharding`` meshes (Auto and
Explicit axis types), ``jax.shard_map``, ``pmap`` with an ``axis_name`` and
``jax.distributed.initialize`` -- and adds what optax lacks:

* :func:`shard_state` wraps any transform so its state is split over the data
  axis of a mesh (ZeRO stage 1, Rajbhandari et al. 2020, arXiv 1910.02054) while
  it stays a pure ``GradientTransformation`` (it composes with ``chain``,
  ``partition``, ``inject_hyperparams``, ...).
* :func:`state_shardings` gives the matching tree of ``NamedSharding`` for
  ``jax.jit(out_shardings=...)`` and for restoring checkpoints sharded.
* :func:`map_stacked` runs a per-matrix function over many matrices stacked by
  shape and split over devices (the round-robin pattern of distributed Muon and
  Shampoo) instead of running collectives inside every iteration.
* Whole-tree reductions (``optix.global_norm``, ``optix.clip_by_global_norm``)
  are correct under ``jit`` with sharded leaves as they are, and take an
  ``axis_name`` inside ``shard_map``/``pmap``.

The path forward is ``jax.jit`` over a mesh (or ``jax.shard_map`` where you
manage the collectives); ``pmap`` still works with every optimizer (maintenance
mode in JAX). Multi-host: call ``jax.distributed.initialize(coordinator_address,
num_processes, process_id)`` in every process before anything else touches JAX
(on CPU also ``jax.config.update("jax_cpu_collectives_implementation", "gloo")``),
build the mesh over ``jax.devices()`` (all processes' devices), build global
arrays with ``jax.make_array_from_process_local_data``, and run the same jitted
step in every process; ``tests/test_multihost.py`` checks two processes on
127.0.0.1 against one 8-device process.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from optix import _base, _tree
from optix._sharding import (  # noqa: F401  (map_stacked, place, ...: public here too)
    AxisName, axes_of_entry, check_axis, explicit_spec, is_explicit, map_stacked, place,
    replicated, spec_entry)


def add_axis(spec: P, shape: Sequence[int], mesh, axis: AxisName = "data") -> P:
  """``spec`` with ``axis`` added to the first dimension it divides evenly.

  The dimension keeps the axes it already has (``('model', 'data')``), and must
  be divisible by the product of all of them. Unchanged when ``spec`` already
  uses ``axis`` (e.g. FSDP params), for scalars, and when no dimension divides.
  """
  entries = list(spec) + [None] * (len(shape) - len(spec))
  used = {a for e in entries for a in axes_of_entry(e)}
  new = tuple(a for a in axes_of_entry(axis) if a not in used)
  if not new:
    return P(*entries)
  for d, size in enumerate(shape):
    names = axes_of_entry(entries[d]) + new
    if size > 0 and size % math.prod(mesh.shape[a] for a in names) == 0:
      entries[d] = spec_entry(names)
      break
  return P(*entries)


def _spec_of(x, mesh) -> P:
  """The PartitionSpec a param already has: concrete arrays and ShapeDtypeStructs
  carry a sharding; traced values on an Explicit mesh carry it in their type.
  Anything else (e.g. traced on an Auto mesh) is taken as replicated."""
  sharding = getattr(x, "sharding", None)
  if isinstance(x, jax.core.Tracer) or sharding is None:
    try:
      sharding = jax.typeof(x).sharding
    except Exception:  # pylint: disable=broad-except
      sharding = None
  if isinstance(sharding, NamedSharding) and set(_spec_axes(sharding.spec)) <= set(mesh.axis_names):
    return sharding.spec
  return P()


def _spec_axes(spec):
  return [a for e in spec for a in axes_of_entry(e)]


def _param_table(params, mesh, param_specs):
  """{path: (shape, spec)} for every param leaf."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  if param_specs is None:
    specs = [_spec_of(x, mesh) for _, x in flat]
  else:
    specs = jax.tree.leaves(param_specs, is_leaf=lambda s: isinstance(s, P))
    if len(specs) != len(flat):
      raise ValueError(f"param_specs has {len(specs)} leaves, params {len(flat)}")
  return {tuple(path): (tuple(jnp.shape(x)), spec) for (path, x), spec in zip(flat, specs)}


def _leaf_spec(path, x, table, mesh, axis) -> P:
  """A state (or gradient) leaf's spec: the spec of the param whose path is the
  longest suffix of the leaf's path with the same shape, plus the data axis."""
  path, shape = tuple(path), tuple(jnp.shape(x))
  for i in range(len(path) + 1):
    hit = table.get(path[i:])
    if hit is not None and hit[0] == shape:
      return add_axis(hit[1], shape, mesh, axis)
  # Not shaped like its param (factored statistics, preconditioners, stacked blocks,
  # counters). An Explicit mesh does not reshard implicitly, and how such a leaf's
  # dimensions line up with the gradient's is the transform's business: the leaf
  # keeps the layout its type carries (the one the transform gave it, e.g.
  # statistics split over the stack of blocks their owners compute).
  return _spec_of(x, mesh) if is_explicit(mesh) else add_axis(P(), shape, mesh, axis)


def _specs(tree, table, mesh, axis):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: _leaf_spec(path, x, table, mesh, axis), tree)


def state_shardings(tx: _base.GradientTransformationBase, abstract_params, mesh,
                    axis: AxisName = "data", param_specs=None):
  """The ``NamedSharding`` of every leaf of ``tx``'s state under the ZeRO-1 rule.

  Each state leaf starts from the spec of its param (the param whose tree path
  ends the leaf's path and has the leaf's shape; replicated for anything else:
  counters, factored statistics, preconditioners) and gets ``axis`` on its first
  evenly divisible dimension that does not already use it (:func:`add_axis`).
  On an Explicit mesh, leaves not shaped like their param keep the layout
  ``tx.init`` gives them (read from their types): JAX does not reshard
  implicitly there, and only the transform knows how their dimensions line up
  with the gradient's (replicated for most; Shampoo's and SOAP's statistics of
  FSDP-sharded params split over the stack of blocks their owners compute, and
  so 1/N per device). Trace under ``jax.set_mesh(mesh)`` there so that the
  abstract state carries those types. This is the layout :func:`shard_state`
  keeps; use it as ``jax.jit(tx.init, out_shardings=...)`` or as the target of
  a sharded checkpoint restore.

  Args:
    tx: any transform (plain or wrapped by :func:`shard_state`).
    abstract_params: params or ``jax.ShapeDtypeStruct``s (with ``sharding=``
      where params are not replicated).
    mesh: the ``jax.sharding.Mesh``.
    axis: the mesh axis (or axes) to split state over.
    param_specs: optional tree of ``PartitionSpec`` overriding the params' own.
  """
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  specs = _specs(abstract_state, _param_table(abstract_params, mesh, param_specs), mesh, axis)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda s: isinstance(s, P))


def shard_state(inner: _base.GradientTransformationBase, mesh, axis: AxisName = "data",
                param_specs=None) -> _base.GradientTransformation:
  r"""ZeRO-1: keeps ``inner``'s state split over the ``axis`` of ``mesh``.

  .. math:: (u, s) = \text{inner.update}(\text{split}(g), s, \text{split}(\theta));
     \quad u \leftarrow \text{gather}(u)

  ``init`` places the state as :func:`state_shardings` says. ``update`` moves
  gradients and params into the state layout (each device keeps 1/N: on a
  replicated-gradient step XLA turns this into a reduce-scatter), runs
  ``inner`` there, keeps the new state in the layout of the state passed in
  (so a carried state's types never change) and returns the updates in
  the params' layout (an all-gather). The math is ``inner``'s, unchanged, so
  whole-tree reductions (global norms, trust ratios) stay exact: XLA inserts the
  cross-device sums.

  The params' own layout is read from their shardings (concrete arrays, or the
  types on an Explicit mesh). On an Auto mesh under ``jit`` that layout is not
  visible while tracing, so params are taken as replicated there: pass
  ``param_specs`` (a tree of ``PartitionSpec``) when they are not. On an
  Explicit mesh, trace under ``jax.set_mesh(mesh)`` as JAX requires. Inside
  ``pmap`` or ``shard_map`` it is ``inner`` itself (each device holds the whole
  state; the collectives are the user's).

  Args:
    inner: the transform whose state to shard (any optax/optix transform).
    mesh: a ``jax.sharding.Mesh`` (Auto or Explicit axis types).
    axis: the data axis name, or a tuple of names to split over several axes.
    param_specs: optional tree of ``PartitionSpec``, the params' layout.
  """
  check_axis(mesh, axis)
  inner = _base.with_extra_args_support(inner)

  def init(params):
    state = inner.init(params)
    table = _param_table(params, mesh, param_specs)
    return place(state, _specs(state, table, mesh, axis), mesh)

  def update(updates, state, params=None, **extra_args):
    if params is not None:
      _tree.check_match("updates", updates, "params", params)
    table = _param_table(updates if params is None else params, mesh, param_specs)
    param_layout = jax.tree_util.tree_map_with_path(
        lambda path, x: table.get(tuple(path), ((), P()))[1], updates)
    split = _specs(updates, table, mesh, axis)
    updates = place(updates, split, mesh)
    if params is not None:
      params = place(params, split, mesh)
    # The new state keeps the layout of the state passed in (on an Explicit mesh
    # that of leaves not shaped like their param is read from their types).
    layout = _specs(state, table, mesh, axis)
    updates, state = inner.update(updates, state, params, **extra_args)
    state = place(state, layout, mesh)
    return place(updates, param_layout, mesh), state

  return _base.GradientTransformation(init, update)
