"""Low-level sharding helpers the transforms use: which mesh axes an array is split
over, gathering and placing arrays, and :func:`map_stacked` (per-matrix work stacked by
shape and split over the devices of a mesh axis).

This module knows no optimizer: ``optix.parallel`` (state sharding) and the matrix
transforms both build on it.
"""

import math
import re
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AxisName = Union[str, Sequence[str]]


def axes_of_entry(entry) -> tuple:
  """The mesh axes of one PartitionSpec entry (None, a name or a tuple of names)."""
  if entry is None or entry is P.UNCONSTRAINED:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def check_axis(mesh, axis: AxisName) -> None:
  """Raises ``ValueError`` unless ``axis`` (a name or tuple of names) are axes of
  ``mesh``; nothing to check when ``mesh`` is None."""
  if mesh is None:
    return
  for name in axes_of_entry(axis):
    if name not in mesh.axis_names:
      raise ValueError(f"axis must be one of the mesh axes {mesh.axis_names}, got {name!r}")


def spec_entry(names: tuple):
  """The PartitionSpec entry naming mesh axes ``names``: None, one name or a tuple."""
  return None if not names else names[0] if len(names) == 1 else names


def explicit_sharding(x):
  """``x``'s sharding if its type carries one on an Explicit mesh, else None."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty or AxisType.Explicit not in mesh.axis_types:
    return None
  return sharding


def explicit_spec(x):
  """The PartitionSpec of ``x`` if it is sharded on an Explicit mesh, else None."""
  sharding = explicit_sharding(x)
  if sharding is None or all(s is None for s in sharding.spec):
    return None
  return sharding.spec


def in_layout_of(x, like):
  """``x`` in the Explicit-mesh layout of ``like`` (sharded or replicated) when ``like`` has
  one, ``x`` as it is otherwise: results computed from gathered operands go back to their
  leaf's layout, and arrays built without a mesh (``jnp.eye``) take the mesh of the state
  they join."""
  sharding = explicit_sharding(like)
  return x if sharding is None else jax.sharding.reshard(x, sharding.spec)


def replicated(x):
  """Gathers an Explicit-mode sharded array (matmuls and reshapes over a sharded
  axis are ambiguous there); a no-op otherwise."""
  return x if explicit_spec(x) is None else jax.sharding.reshard(x, P())


def is_explicit(mesh) -> bool:
  """Whether every axis of ``mesh`` is Explicit."""
  return all(t == AxisType.Explicit for t in mesh.axis_types)


def place(tree, specs, mesh):
  """Puts every leaf of ``tree`` in ``NamedSharding(mesh, spec)``: ``reshard`` on
  an Explicit mesh, ``with_sharding_constraint`` on an Auto mesh; works eagerly
  and under ``jit``. Inside ``pmap``/``shard_map`` (manual axes) each device
  already holds its own values: the tree is returned as it is."""
  if AxisType.Manual in jax.sharding.get_abstract_mesh().axis_types:
    return tree
  move = jax.sharding.reshard if is_explicit(mesh) else jax.lax.with_sharding_constraint
  return jax.tree.map(lambda x, s: x if x is None else move(x, NamedSharding(mesh, s)), tree,
                      specs, is_leaf=lambda x: x is None)


def map_stacked(fn: Callable[..., Any], arrays: Sequence[jax.Array], mesh,
                axis: AxisName = "data", args: Sequence[Any] = ()) -> list:
  """``[fn(a, *args) for a in arrays]``, computed stacked by shape and split over devices.

  Arrays of one shape and dtype are stacked, padded (with copies of the last
  one) to a multiple of the number of devices along ``axis``, sharded over
  ``axis``, mapped with ``vmap(fn)`` inside ``jax.shard_map`` (so each device
  runs ``fn`` on its own slice with no collectives), then gathered back,
  replicated. This is the round-robin pattern of distributed Muon (Keller
  Jordan) and Distributed Shampoo (Anil et al. 2020, arXiv 2002.09018): one
  all-gather per shape group instead of collectives inside every iteration.

  Works eagerly and under ``jit``, on Auto and Explicit meshes. ``fn`` maps one
  array to a pytree of arrays. ``args`` (arrays or scalars, e.g. hyperparameters
  traced by ``inject_hyperparams``) are passed replicated to every call: pass
  traced values there rather than closing over them (closed-over tracers are
  converted with ``jax.closure_convert`` and replayed, which is less robust).

  Args:
    fn: ``fn(array, *args)`` -> a pytree of arrays, for one array (it is
      ``vmap``-ed over a stack); required.
    arrays: the arrays to map, of any shapes and dtypes; required.
    mesh: the ``jax.sharding.Mesh`` whose ``axis`` devices share the work;
      required.
    axis: the mesh axis name (or tuple of names) the stacks are split over.
      Default ``"data"`` (the usual data-parallel axis name). Not validated
      here: a name that is not an axis of ``mesh`` fails in the mesh lookup.
    args: extra arguments passed, replicated, to every call of ``fn``. Default
      ``()``.

  Returns:
    A list: ``fn``'s result for each array of ``arrays``, in their order,
    replicated over ``mesh``.
  """
  names = axes_of_entry(axis)
  n = math.prod(mesh.shape[a] for a in names)
  context = jax.sharding.get_abstract_mesh().axis_types
  if (is_explicit(mesh) and AxisType.Explicit not in context
      and all(explicit_sharding(a) is None for a in arrays)):
    # Untyped inputs outside the mesh's context (e.g. inside shard_state on an Auto
    # mesh): compute on the Auto twin so results carry no Explicit-mesh types.
    mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                             axis_types=(AxisType.Auto,) * len(mesh.axis_names))
  groups = {}
  for i, a in enumerate(arrays):
    groups.setdefault((tuple(jnp.shape(a)), jnp.result_type(a)), []).append(i)
  out = [None] * len(arrays)
  for idx in groups.values():
    stack = jnp.stack([arrays[i] for i in idx])
    pad = -len(idx) % n
    if pad:
      stack = jnp.concatenate([stack, jnp.repeat(stack[-1:], pad, axis=0)])
    stack = place(stack, P(spec_entry(names)), mesh)
    # Values ``fn`` closes over (e.g. hyperparameters traced by inject_hyperparams)
    # become replicated arguments: shard_map cannot close over sharded tracers.
    extra = [place(jnp.asarray(a), P(), mesh) for a in args]
    local, consts = jax.closure_convert(fn, jax.ShapeDtypeStruct(stack.shape[1:], stack.dtype),
                                        *extra)
    consts = [place(c, P(), mesh) for c in consts]
    # Without such values ``fn`` is traced inside the body itself: replaying its
    # jaxpr there skips the implicit casts of replicated constants to "varying"
    # and keeps the outer context's shardings.
    local = local if consts else fn
    extra += consts
    result = jax.tree.map(lambda r: place(r, P(), mesh),
                          _split_map(local, stack, extra, mesh, names))
    for j, i in enumerate(idx):
      out[i] = jax.tree.map(lambda r, j=j: r[j], result)
  return out


def _split_map(fn, stack, extra, mesh, names):
  """``vmap(fn)`` over ``stack`` split on its axis 0 over the mesh axes ``names``, inside
  ``shard_map`` (each device maps its own slice, no collectives inside); ``extra``
  are replicated arguments."""
  return map_local(jax.vmap(fn, in_axes=(0,) + (None,) * len(extra)), [stack], mesh, names,
                   extra)


def map_local(fn: Callable[..., Any], stacks: Sequence[Any], mesh, names: tuple,
              args: Sequence[Any] = ()) -> Any:
  """``fn(*local_stacks, *args)`` on every device's own slices of ``stacks``: no collectives.

  Every array of ``stacks`` (pytrees of arrays) is split on its axis 0 over the mesh axes
  ``names`` (already laid out so: :func:`to_owners`, or state stored that way), ``fn`` maps
  the local slices (the stacks' axis 0 holding ``1/n`` of their rows) to a pytree of arrays
  whose axis 0 is local rows too, and the results come back split the same way.

  Args:
    fn: ``fn(*local_stacks, *args)`` -> a pytree of arrays, traced once inside
      ``jax.shard_map``; required.
    stacks: the stacked operands, each a pytree of arrays whose axis 0 is split over
      ``names``; required.
    mesh: the ``jax.sharding.Mesh`` (or abstract mesh) of the split; required.
    names: the mesh axis names axis 0 is split over, a tuple; required.
    args: arrays or scalars passed replicated to every device. Default ``()``.

  Returns:
    ``fn``'s results, their axis 0 split over ``names``.
  """
  split = P(spec_entry(tuple(names)))
  body = jax.shard_map(fn, mesh=mesh, in_specs=(split,) * len(stacks) + (P(),) * len(args),
                       out_specs=split, check_vma=False)
  return body(*stacks, *args)


def owner_axes(arrays: Sequence[Any]):
  """``(mesh, names)``: the Explicit mesh of the sharded arrays among ``arrays`` and every
  mesh axis any of them is split over (in the mesh's order); None when none is sharded on
  an Explicit mesh or they sit on different meshes."""
  mesh, used = None, set()
  for a in arrays:
    spec = explicit_spec(a)
    if spec is None:
      continue
    m = explicit_sharding(a).mesh
    if mesh is not None and m != mesh:
      return None
    mesh = m
    used.update(n for e in spec for n in axes_of_entry(e))
  if mesh is None:
    return None
  return mesh, tuple(n for n in mesh.axis_names if n in used)


def axes_size(mesh, names: tuple) -> int:
  """The number of devices along the mesh axes ``names``."""
  return math.prod(mesh.shape[a] for a in names)


def to_owners(build: Callable[..., jax.Array], args: Sequence[Any], mesh,
              names: tuple) -> jax.Array:
  """``build(*args)``, a stack ``(B, ...)``, split on its axis 0 over the mesh axes ``names``
  of the current Explicit mesh: each device receives the whole items it owns.

  ``build`` runs with the mesh's axes Auto (its reshapes, pads and concatenations of
  sharded arrays need no sharding annotations) and XLA moves each piece straight to its
  owner: for items that are whole leaves, or blocks that cut no sharded axis, one
  all-to-all, each device receiving ``1/n`` of the bytes. ``B`` must be a multiple of the
  number of devices ``n`` along ``names``.

  Args:
    build: ``build(*args)`` -> the stack; required.
    args: its operands (pytrees of arrays, e.g. sharded leaves); required.
    mesh: the Explicit ``jax.sharding.Mesh`` (or abstract mesh) of the split; required.
    names: the mesh axes to split axis 0 over, a tuple; required.

  Returns:
    The stack, split on axis 0 over ``names``.
  """
  out = NamedSharding(mesh, P(spec_entry(tuple(names))))
  return jax.sharding.auto_axes(build, out_sharding=out)(*args)


def from_owners(split: Callable[..., Any], stack: jax.Array, specs) -> Any:
  """Inverse of :func:`to_owners`: ``split(stack)`` (a pytree of arrays, e.g. one leaf per
  item), computed with the mesh's axes Auto and returned in the layouts ``specs``.

  Args:
    split: ``split(stack)`` -> the results; required.
    stack: a stack split over its owners; required.
    specs: the results' layouts, a pytree of ``NamedSharding`` (or ``PartitionSpec`` under
      ``jax.set_mesh``) matching ``split``'s output; required.

  Returns:
    ``split(stack)`` in the layouts ``specs``.
  """
  return jax.sharding.auto_axes(split, out_sharding=specs)(stack)


def map_owned(fn: Callable[..., jax.Array], arrays: Sequence[jax.Array],
              args: Sequence[Any] = ()) -> list:
  """``[fn(a, *args) for a in arrays]`` where the arrays live, for arrays sharded on an
  Explicit mesh (FSDP params and gradients): owner computes.

  Arrays of one shape, dtype and layout are stacked, padded (with copies of the last one)
  to a multiple of the number of devices ``n`` along the mesh axes they are split over,
  and moved so that each device holds ``1/n`` of the *whole* arrays (an all-to-all: each
  device receives its own arrays' other pieces) instead of ``1/n`` of each. Every device
  then runs ``vmap(fn)`` on the arrays it owns (round-robin, as in distributed Muon and
  Distributed Shampoo, Anil et al. 2020, arXiv 2002.09018), and the results move back
  into the arrays' layout (an all-to-all). Per device and step that is ``2/n`` of the
  arrays' bytes (times the padding) on the wire, where gathering every array costs
  ``(n-1)/n`` of them, and ``1/n`` of the work and of its temporaries. ``fn`` maps an
  array to one of the same shape; ``args`` are passed replicated (see
  :func:`map_stacked`). Arrays not sharded on an Explicit mesh are mapped one by one.
  """
  groups, out = {}, [None] * len(arrays)
  for i, a in enumerate(arrays):
    sharding = explicit_sharding(a)
    spec = explicit_spec(a)
    key = (tuple(jnp.shape(a)), jnp.result_type(a), None if spec is None else tuple(spec))
    groups.setdefault(key, (sharding, []))[1].append(i)
  for (_, _, spec), (sharding, idx) in groups.items():
    if spec is None:
      for i in idx:
        out[i] = fn(arrays[i], *args)
      continue
    mesh = sharding.mesh
    names = tuple(a for e in spec for a in axes_of_entry(e))
    n = math.prod(mesh.shape[a] for a in names)
    stack = jnp.stack([arrays[i] for i in idx])
    pad = -len(idx) % n
    if pad:
      stack = jnp.concatenate([stack, jnp.repeat(stack[-1:], pad, axis=0)])
    stack = jax.sharding.reshard(stack, P(spec_entry(names)))  # whole arrays to owners
    extra = [jax.sharding.reshard(jnp.asarray(a), P()) for a in args]
    local, consts = jax.closure_convert(fn, jax.ShapeDtypeStruct(stack.shape[1:], stack.dtype),
                                        *extra)
    extra += [jax.sharding.reshard(c, P()) for c in consts]
    result = _split_map(local if consts else fn, stack, extra, mesh, names)
    result = jax.sharding.reshard(result, P(None, *spec))  # back to the arrays' layout
    for j, i in enumerate(idx):
      out[i] = result[j]
  return out


_COLLECTIVE = re.compile(
    r"\s(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(-start)?\(")
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")


def collective_bytes(hlo_text: str) -> int:
  """Bytes one device receives per call of a compiled SPMD program: the sum of the output
  sizes of every all-gather, all-reduce, all-to-all, collective-permute and reduce-scatter
  in its optimized HLO (``jax.jit(f).lower(...).compile().as_text()``; an async pair is
  counted once, at its start)."""
  total = 0
  for line in hlo_text.splitlines():
    op = _COLLECTIVE.search(line)
    if op is None or "=" not in line[:op.start()]:
      continue
    for dtype, dims in _ARRAY.findall(line[line.index("=") + 1:op.start()]):
      bits = 1 if dtype == "pred" else int(dtype[1:]) if dtype[0] in "suf" else (
          16 if dtype == "bf16" else int(dtype[1:]))
      total += max(bits // 8, 1) * math.prod(int(d) for d in dims.split(",") if d)
  return total
