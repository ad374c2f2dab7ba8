"""Packed multi-tensor engine: many small leaves as a few contiguous buffers.

An elementwise optimizer step is memory-bound, but on a tree of many small
leaves (biases, norm scales, per-head params) every leaf costs its own kernels,
and the per-kernel overhead dominates: optax's AdamW on 2000 leaves of 2000
floats runs at ~15x the memory roofline on a CPU. Packing puts small leaves of
the same dtype (and group) into one 1-D buffer, so the whole chain runs as a few
fused kernels over a few buffers; leaves larger than ``max_leaf_size`` stay as
they are and pay no copy.

Two ways to use it, same numbers, same state::

  # 1. Drop-in: params stay an ordinary tree; state is packed. ``update`` packs
  #    grads and params, runs the chain on the buffers and unpacks the updates;
  #    the one-pass step (``optix.apply_step``/``train_step`` on a CPU) packs
  #    nothing: its kernel reads and writes each leaf's state in its buffer.
  tx = optix.packed(optix.adamw(1e-3))

  # 2. Persistent packing (fastest): keep params packed between steps, unpack
  #    inside the loss. Gradients then arrive packed (the backward pass of
  #    ``unpack`` is one concatenate per buffer), so the optimizer step touches
  #    a few buffers and nothing is copied.
  params = optix.pack(params)
  loss = lambda p, batch: model_loss(optix.unpack(p), batch)
  step = optix.training.train_step(loss, tx)   # jitted, params and state donated

Only elementwise chains can be packed (sgd/momentum, adagrad, rmsprop, adam(w),
lion, clipping by value or global norm, decoupled decay, learning-rate
schedules). Shape- or size-dependent transforms (Adafactor's factoring, Muon,
Shampoo, SOAP, unit-wise clipping, 8-bit Adam's block-wise quantization) give
different numbers on a concatenation than on the
leaves; ``packed`` checks this when the state is built (``check=True``: the chain
runs two steps on a probe with the real small-leaf shapes and buffer sizes,
packed and unpacked, and must agree) and refuses with a ``ValueError`` naming
the first leaf that differs.

Speed and compile time (see ``benchmarks/elementwise.py``; 2000 leaves of 2000
floats, AdamW on a CPU): with params kept packed the step is a few buffers
whatever the leaf count (16 buffers, 1.0-1.5x the memory roofline, 14-17x
faster than optax, compiled in 0.1 s). The drop-in's one-pass step packs
nothing (its kernel reads and writes each leaf's state in its buffer): 2.3x
faster than optax, whose step, like any on 8000 separate arrays, costs what
JAX's dispatch of them costs. The drop-in's chain path (``update``) adds one
kernel per leaf (the split of the updates, fused with the add of
``apply_updates``); XLA's compile time grows with the square of the slices taken
from one buffer, so a buffer holds at most ``max_buffer_leaves`` (128) leaves:
that step compiles in ~5 s (one buffer: 24 s; optax: 13-16 s).

Masks (e.g. weight decay only on matrices) select whole leaves, so a buffer must
not mix masked and unmasked leaves: build the layout with ``groups=`` the same
mask function and wrap the mask given to the chain with :func:`packed_mask`::

  tx = optix.packed(
      optix.adamw(1e-3, weight_decay=0.1, mask=optix.packed_mask(optix.matrices_only)),
      groups=optix.matrices_only)
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix import fused as _fused

DEFAULT_MAX_LEAF_SIZE = 1 << 16
# XLA's compile time grows with the square of the number of slices taken from one
# buffer (2000 slices of one buffer: 15 s; of 20 buffers of 100: 1.1 s, on 2 CPU
# cores), and unpacking takes one slice per packed leaf: so a buffer holds at most
# this many leaves.
DEFAULT_MAX_BUFFER_LEAVES = 128


@dataclasses.dataclass(frozen=True, eq=True)
class _Slot:
  """Where one original leaf lives: ``buffer >= 0`` (packed at ``offset``) or
  ``buffer == -1`` (a large leaf kept as is, child number ``offset``)."""
  shape: tuple
  dtype: str
  buffer: int
  offset: int


@dataclasses.dataclass(frozen=True, eq=True)
class PackLayout:
  """The static description of a packing: hashable, part of the treedef of
  :class:`Packed`, never part of the state's arrays."""
  treedef: Any                 # treedef of the original tree
  paths: tuple                 # keystr of every original leaf
  slots: tuple                 # one _Slot per original leaf
  buffers: tuple               # (dtype name, group label, size) per buffer

  @functools.cached_property
  def _hash(self):
    return hash((self.treedef, self.slots, self.buffers))

  def __hash__(self):
    return self._hash

  @property
  def num_large(self):
    return sum(s.buffer < 0 for s in self.slots)

  def pack(self, tree) -> "Packed":
    """Packs ``tree`` (structured like the layout's tree) into buffers."""
    leaves = self.treedef.flatten_up_to(tree)
    parts = [[] for _ in self.buffers]
    large = []
    for leaf, slot in zip(leaves, self.slots):
      if slot.buffer < 0:
        large.append(leaf)
      else:
        parts[slot.buffer].append(jnp.ravel(leaf).astype(self.buffers[slot.buffer][0]))
    bufs = [p[0] if len(p) == 1 else jnp.concatenate(p) for p in parts]
    return Packed(tuple(bufs) + tuple(large), self)

  def unpack(self, packed: "Packed"):
    """The original tree from ``packed`` (see :func:`unpack`)."""
    nbuf = len(self.buffers)
    bufs, large = packed.children[:nbuf], packed.children[nbuf:]
    members = [[] for _ in self.buffers]
    for i, s in enumerate(self.slots):
      if s.buffer >= 0:
        members[s.buffer].append(i)
    pieces = {}
    for b, idx in enumerate(members):
      sizes = [int(np.prod(self.slots[i].shape, dtype=np.int64)) for i in idx]
      parts = jax.lax.split(bufs[b], sizes) if len(idx) > 1 else [bufs[b]]
      for i, part in zip(idx, parts):
        pieces[i] = part.reshape(self.slots[i].shape).astype(self.slots[i].dtype)
    leaves = [large[s.offset] if s.buffer < 0 else pieces[i] for i, s in enumerate(self.slots)]
    return self.treedef.unflatten(leaves)

  def abstract_tree(self):
    """The original tree as ``ShapeDtypeStruct`` leaves (for mask functions)."""
    return self.treedef.unflatten(
        [jax.ShapeDtypeStruct(s.shape, jnp.dtype(s.dtype)) for s in self.slots])


class Packed:
  """A tree stored as a few 1-D buffers plus its large leaves.

  A pytree (its children are the buffers, then the large leaves; the layout is
  static), so it goes through ``jit``, ``grad``, optimizers and checkpoints like
  any tree. :func:`unpack` gives back the original tree.
  """
  __slots__ = ("children", "layout")

  def __init__(self, children, layout: PackLayout):
    self.children = tuple(children)
    self.layout = layout

  def __repr__(self):
    return (f"Packed({len(self.layout.buffers)} buffers, {self.layout.num_large} large leaves, "
            f"{len(self.layout.slots)} leaves in all)")


def _flatten_with_keys(p):
  keys = [jax.tree_util.DictKey(f"packed:{d}:{g}") for d, g, _ in p.layout.buffers]
  keys += [jax.tree_util.DictKey(path) for path, s in zip(p.layout.paths, p.layout.slots)
           if s.buffer < 0]
  return list(zip(keys, p.children)), p.layout


jax.tree_util.register_pytree_with_keys(
    Packed, _flatten_with_keys, lambda layout, children: Packed(children, layout),
    flatten_func=lambda p: (p.children, p.layout))


def _labels(groups, tree):
  """One label per leaf of ``tree`` (None: no groups)."""
  if groups is None:
    return None
  labels = groups(tree) if callable(groups) else groups
  return jax.tree.structure(tree).flatten_up_to(labels)


def layout_of(tree, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE, groups=None,
              max_buffer_leaves: int = DEFAULT_MAX_BUFFER_LEAVES) -> PackLayout:
  """The layout that packs ``tree`` (arrays or ``ShapeDtypeStruct`` leaves).

  Leaves with at most ``max_leaf_size`` elements are packed, one buffer per
  (dtype, group label) and per ``max_buffer_leaves`` leaves (default 128: XLA's
  compile time grows with the square of the slices taken from one buffer, and
  a step costs a few kernels per buffer, so 2000 leaves make 16 buffers); larger
  leaves are kept as they are. ``groups`` is a pytree of hashable labels like
  ``tree``, or a callable ``tree -> labels`` (e.g. ``optix.matrices_only``):
  leaves with different labels never share a buffer.
  """
  _validate.integer("max_leaf_size", max_leaf_size, low=0)
  _validate.integer("max_buffer_leaves", max_buffer_leaves, low=1)
  path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  labels = _labels(groups, tree) or [None] * len(path_leaves)
  buffer_index, parts, sizes, counts, buffers, slots = {}, {}, [], [], [], []
  large = 0
  for (path, leaf), label in zip(path_leaves, labels):
    shape, dtype = tuple(jnp.shape(leaf)), jnp.dtype(jnp.result_type(leaf)).name
    size = int(np.prod(shape, dtype=np.int64))
    if size > max_leaf_size:
      slots.append(_Slot(shape, dtype, -1, large))
      large += 1
      continue
    key = (dtype, str(label))
    if key not in buffer_index or counts[buffer_index[key]] == max_buffer_leaves:
      part = parts[key] = parts.get(key, -1) + 1
      buffer_index[key] = len(buffers)
      buffers.append((dtype, str(label) + (f"#{part}" if part else "")))
      sizes.append(0)
      counts.append(0)
    b = buffer_index[key]
    slots.append(_Slot(shape, dtype, b, sizes[b]))
    sizes[b] += size
    counts[b] += 1
  if len(buffers) == 1 and large == 0 and len(slots) >= 2:
    # Never pack a tree of several leaves into a single array: XLA's algebraic
    # simplifier rewrites ``x / broadcast(c)`` (Adam's bias correction, any
    # division by a traced scalar) into ``x * broadcast(1 / c)`` only when the
    # scalar has a single user, which changes the last bit. A tree of several
    # leaves gives the scalar several users, so its packed form must too: the
    # last leaf gets a buffer of its own (one more tiny kernel, bit-exact results).
    last = slots[-1]
    slots[-1] = _Slot(last.shape, last.dtype, 1, 0)
    size = int(np.prod(last.shape, dtype=np.int64))
    sizes = [sizes[0] - size, size]
    buffers.append((buffers[0][0], buffers[0][1] + "/last"))
  return PackLayout(treedef, tuple(jax.tree_util.keystr(p) for p, _ in path_leaves),
                    tuple(slots), tuple((d, g, n) for (d, g), n in zip(buffers, sizes)))


def pack(tree, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE, groups=None,
         max_buffer_leaves: int = DEFAULT_MAX_BUFFER_LEAVES) -> Packed:
  """Packs ``tree`` into a :class:`Packed` (see :func:`layout_of` for the arguments)."""
  return layout_of(tree, max_leaf_size=max_leaf_size, groups=groups,
                   max_buffer_leaves=max_buffer_leaves).pack(tree)


def unpack(packed: Packed):
  """The original tree from a :class:`Packed`.

  Uses one ``lax.split`` per buffer, whose derivative is one concatenate: so
  ``jax.grad`` of a loss of ``unpack(p)`` returns a :class:`Packed` gradient
  built in a few kernels, not one per leaf.
  """
  return packed.layout.unpack(packed)


def packed_mask(mask: Callable[[Any], Any]) -> Callable[[Any], Any]:
  """Makes a leaf mask function (``params -> tree of bools``) work on packed trees.

  On an ordinary tree it is ``mask`` itself. On a :class:`Packed` it evaluates
  ``mask`` on the original (abstract) tree and gives each buffer the common value
  of its leaves; it raises ``ValueError`` when a buffer mixes True and False
  leaves (build the layout with ``groups=`` the same mask).
  """
  if not callable(mask):
    raise ValueError(f"mask must be callable, got {mask!r}")

  def apply(tree):
    if not isinstance(tree, Packed):
      return mask(tree)
    layout = tree.layout
    values = layout.treedef.flatten_up_to(mask(layout.abstract_tree()))
    per_buffer = [set() for _ in layout.buffers]
    large = []
    for value, s, path in zip(values, layout.slots, layout.paths):
      if s.buffer < 0:
        large.append(bool(value))
      else:
        per_buffer[s.buffer].add(bool(value))
    for (dtype, group, _), vals in zip(layout.buffers, per_buffer):
      if len(vals) > 1:
        raise MixedBufferError(
            f"packed_mask: buffer {dtype}:{group} mixes masked and unmasked leaves; build "
            "the packing with groups= the same mask (optix.packed(tx, groups=mask))")
    return Packed([vals.pop() for vals in per_buffer] + large, layout)

  return apply


class MixedBufferError(ValueError):
  """A leaf mask that differs between leaves of one buffer (see :func:`packed_mask`)."""


class PackedState(NamedTuple):
  inner: Any  # the wrapped chain's state, over a Packed tree


def packed(tx: _base.GradientTransformationBase, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE,
           groups=None, check: bool = True,
           max_buffer_leaves: int = DEFAULT_MAX_BUFFER_LEAVES) -> _base.GradientTransformation:
  r"""Runs an elementwise chain on packed buffers (the multi-tensor engine).

  For an elementwise ``tx`` the updates are those of ``tx`` itself, bit for bit
  (tested for sgd/momentum, adagrad, rmsprop, adam(w), nadam, lion, clipping by
  value, masked decay and schedules; a global norm sums the squares in another
  order, so clipping by it agrees to the rounding of the norm), but the
  chain runs on a few buffers instead of one kernel set per leaf, and its state
  (moments) lives packed. ``update`` takes either an ordinary tree (it packs the
  gradients and params and unpacks the updates: drop-in) or a :class:`Packed`
  tree, e.g. params kept packed with :func:`pack` (nothing copied: fastest).

  Args:
    tx: an elementwise transformation or chain.
    max_leaf_size: leaves with more elements stay separate (default 65536: above
      this, on the chain's path, a leaf's own kernels cost less than copying it
      into a buffer). The one-pass step copies nothing whatever the size, so
      where it runs (a CPU) a larger value puts more of the state in fewer
      buffers and JAX dispatches fewer arrays (AdamW, 200 leaves of 120k:
      ``1 << 20`` takes the step from ~1.25x to 1.03-1.09x the memory roofline).
    groups: labels (pytree or callable ``params -> labels``); leaves with
      different labels get different buffers. Pass the same function as a
      weight-decay mask, wrapped with :func:`packed_mask` inside ``tx``.
    check: when the state is built, run ``tx`` two steps on a random probe with
      the real small-leaf shapes, packed and unpacked, and refuse a ``tx`` whose
      numbers differ (shape-dependent transforms: Adafactor, Muon, Shampoo, ...).
    max_buffer_leaves: at most this many leaves share a buffer (see :func:`layout_of`).
  """
  _validate.integer("max_leaf_size", max_leaf_size, low=0)
  _validate.integer("max_buffer_leaves", max_buffer_leaves, low=1)
  options = dict(max_leaf_size=max_leaf_size, groups=groups, max_buffer_leaves=max_buffer_leaves)
  if not isinstance(check, bool):
    raise ValueError(f"check must be a bool, got {check!r}")

  def as_packed(tree):
    if isinstance(tree, Packed):
      return tree
    return layout_of(tree, **options).pack(tree)

  def init(params):
    p = as_packed(params)
    if check:
      _check_elementwise(tx, p.layout)
    return PackedState(tx.init(p))

  def update(updates, state, params=None, **extra_args):
    if isinstance(updates, Packed):
      out, inner = tx.update(updates, state.inner, params, **extra_args)
      return out, PackedState(inner)
    if params is not None:
      _tree.check_match("updates", updates, "params", params)
    reference = updates if params is None else params
    layout = layout_of(reference, **options)
    out, inner = tx.update(layout.pack(updates), state.inner,
                           None if params is None else layout.pack(params), **extra_args)
    return _tree.cast_like(unpack(out), updates), PackedState(inner)

  out = _base.GradientTransformation(init, update)
  if not hasattr(tx, "fused_step"):
    return out

  def fused_step(grads, state, params, fused=None, packing=None):  # tx's single pass
    if packing is not None:
      raise ValueError("optix.packed: a packed transformation cannot be packed again")
    if isinstance(grads, Packed):
      params, inner = tx.fused_step(grads, state.inner, params, fused=fused)
      return params, PackedState(inner)
    _tree.check_match("grads", grads, "params", params)
    # Params and grads stay as they are: the kernel finds each leaf's state in
    # its buffer (nothing is packed or unpacked; the chain's path packs).
    new, inner = tx.fused_step(grads, state.inner, params, fused=fused,
                               packing=layout_of(params, **options))
    return new, PackedState(inner)

  return _fused.with_fused_step(out, fused_step)


def _probe_layout(layout: PackLayout) -> PackLayout:
  """A cheap stand-in for ``layout`` with the same tree: each large leaf becomes a
  tiny one of the same rank, and a packed leaf whose (shape, dtype, buffer) was
  already seen becomes a single element of the same rank, so the probe has one
  real-shaped leaf per distinct packed shape (eager ops compile once per shape).
  The last such collapsed leaf of each buffer is then stretched (same rank, last
  dimension grown) so that the buffer keeps its real size: transforms whose
  behaviour depends on an array's size (8-bit Adam keeps small arrays in fp32 and
  quantizes large ones in blocks) then act on the probe as on the real step."""
  seen, shapes, stretch = set(), [], {}
  for i, s in enumerate(layout.slots):
    if s.buffer < 0:
      shapes.append(tuple(min(d, 2) for d in s.shape))
      continue
    collapsed = (s.shape, s.dtype, s.buffer) in seen
    seen.add((s.shape, s.dtype, s.buffer))
    shapes.append((1,) * len(s.shape) if collapsed else s.shape)
    if collapsed and s.shape:
      stretch[s.buffer] = i
  sizes = [0] * len(layout.buffers)
  for shape, s in zip(shapes, layout.slots):
    if s.buffer >= 0:
      sizes[s.buffer] += int(np.prod(shape, dtype=np.int64))
  for b, i in stretch.items():
    shapes[i] = shapes[i][:-1] + (1 + layout.buffers[b][2] - sizes[b],)
  slots, sizes = [], [0] * len(layout.buffers)
  for shape, s in zip(shapes, layout.slots):
    if s.buffer < 0:
      slots.append(_Slot(shape, s.dtype, -1, s.offset))
      continue
    slots.append(_Slot(shape, s.dtype, s.buffer, sizes[s.buffer]))
    sizes[s.buffer] += int(np.prod(shape, dtype=np.int64))
  buffers = tuple((d, g, n) for (d, g, _), n in zip(layout.buffers, sizes))
  return dataclasses.replace(layout, slots=tuple(slots), buffers=buffers)


def _check_elementwise(tx, layout: PackLayout, steps: int = 2):
  """Raises ValueError unless ``tx`` gives the same numbers packed and unpacked."""
  probe = _probe_layout(layout)
  if not probe.buffers:
    return
  rng = np.random.default_rng(0)

  def rand():
    """A random (plain tree, packed tree) pair, packed with numpy (nothing to compile)."""
    leaves = [(rng.standard_normal(s.shape).astype(np.float32) + 0.5).astype(s.dtype)
              for s in probe.slots]
    parts = [[] for _ in probe.buffers]
    for x, s in zip(leaves, probe.slots):
      if s.buffer >= 0:
        parts[s.buffer].append(x.ravel())
    children = [jnp.asarray(np.concatenate(p), d) for p, (d, _, _) in zip(parts, probe.buffers)]
    children += [jnp.asarray(x) for x, s in zip(leaves, probe.slots) if s.buffer < 0]
    return (probe.treedef.unflatten([jnp.asarray(x) for x in leaves]),
            Packed(children, probe))

  def leaves_of(packed_tree):  # numpy slicing: no eager split to compile
    nbuf = len(probe.buffers)
    bufs = [np.asarray(b, np.float32) for b in packed_tree.children[:nbuf]]
    large = packed_tree.children[nbuf:]
    return [np.asarray(large[s.offset], np.float32) if s.buffer < 0 else
            bufs[s.buffer][s.offset:s.offset + int(np.prod(s.shape, dtype=np.int64))]
            .reshape(s.shape) for s in probe.slots]

  with jax.ensure_compile_time_eval():
    params, packed_params = rand()
    try:
      s_packed = tx.init(packed_params)
      s_plain = tx.init(params)
      for t in range(steps):
        g, g_packed = rand()
        u_plain, s_plain = tx.update(g, s_plain, params)
        u_packed, s_packed = tx.update(g_packed, s_packed, packed_params)
        a = probe.treedef.flatten_up_to(u_plain)
        for path, x, y in zip(probe.paths, a, leaves_of(u_packed)):
          x = np.asarray(x, np.float32)
          if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True):
            raise _NotElementwise(f"at step {t + 1} the update of leaf {path} differs "
                                  "between the packed and the unpacked chain")
    except _NotElementwise as e:
      raise ValueError(f"optix.packed: the chain is not elementwise on this tree: {e}. Pack "
                       "only elementwise transforms (shape-dependent ones such as Adafactor, "
                       "Muon, Shampoo, SOAP, 8-bit Adam cannot be packed); wrap leaf masks with "
                       "optix.packed_mask and pass groups=") from None
    except MixedBufferError:
      raise
    except Exception as e:  # noqa: BLE001  (the chain failed on a flat buffer)
      raise ValueError(f"optix.packed: the chain fails on packed 1-D buffers "
                       f"({type(e).__name__}: {e}); pack only elementwise transforms "
                       "(not Adafactor, Muon, Shampoo, SOAP)") from e


class _NotElementwise(Exception):
  pass
