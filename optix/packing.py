"""The packed layout: many small leaves as a few contiguous buffers.

An elementwise optimizer step is memory-bound, but on a tree of many small
leaves (biases, norm scales, per-head params) every leaf costs its own kernels
and its own dispatched arrays, and that overhead dominates. Packing puts small
leaves of the same dtype (and group) into one 1-D buffer; leaves larger than
``max_leaf_size`` stay as they are and pay no copy. A :class:`PackLayout` says
where each leaf lives (:meth:`PackLayout.homes`: buffer and offset); it is all
that :mod:`optix.fused` knows of packing.

Two ways to use it, same numbers, same state::

  # 1. Drop-in: params stay an ordinary tree; state is packed. ``update`` packs
  #    grads and params, runs the chain on the buffers and unpacks the updates;
  #    ``optix.apply_step`` (and ``train_step``) recognizes ``packed`` and, on a
  #    CPU, its one-pass kernel reads and writes each leaf's state in its buffer.
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
different numbers on a concatenation than on the leaves. ``packed`` accepts a
chain whose links all describe themselves as elementwise, and checks any other
chain with a probe when the state is built (see :func:`packed`).

The chain path of the drop-in (``update``) adds one kernel per leaf (the split
of the updates, fused with the add of ``apply_updates``). XLA's compile time
grows with the square of the slices taken from one buffer, so a buffer holds at
most ``max_buffer_leaves`` (128) leaves.

Masks (e.g. weight decay only on matrices) select whole leaves, so a buffer must
not mix masked and unmasked leaves: build the layout with ``groups=`` the same
mask function and wrap the mask given to the chain with :func:`packed_mask`::

  tx = optix.packed(
      optix.adamw(1e-3, weight_decay=0.1, mask=optix.packed_mask(optix.matrices_only)),
      groups=optix.matrices_only)
"""

import dataclasses
import functools
import types
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate

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
  :class:`Packed`, never part of the state's arrays.

  Built by :func:`layout_of`; its fields are read, not passed by hand.

  Args:
    treedef: the treedef of the original (unpacked) tree.
    paths: the ``jax.tree_util.keystr`` of every original leaf, in leaf order.
    slots: where each original leaf lives, in leaf order: its shape, dtype
      name, buffer number (-1: a large leaf kept as its own array) and offset
      (its first element in the buffer, or its number among the large leaves).
    buffers: one ``(dtype name, group label, size)`` per buffer.
  """
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

  def homes(self):
    """Where each leaf lives, in leaf order: ``(child, offset)``, the child of a
    :class:`Packed` tree of this layout (a buffer, or a large leaf's own array
    after the buffers) and the leaf's first element in it."""
    nbuf = len(self.buffers)
    return tuple((s.buffer, s.offset) if s.buffer >= 0 else (nbuf + s.offset, 0)
                 for s in self.slots)

  def has_dtypes_of(self, tree) -> bool:
    """Whether every leaf of ``tree`` has the dtype of the layout's leaf (so that
    packing it casts nothing).

    Args:
      tree: a pytree structured like the layout's tree.
    """
    leaves = self.treedef.flatten_up_to(tree)
    return all(jnp.dtype(jnp.result_type(x)).name == s.dtype for x, s in zip(leaves, self.slots))

  def pack(self, tree, *, cast: bool = True) -> "Packed":
    """Packs ``tree`` (structured like the layout's tree) into buffers, each of
    its buffer's dtype (``cast=False``: of its leaves' common dtype, e.g. a
    float32 moment of bf16 params).

    Args:
      tree: a pytree structured like the layout's tree.
      cast: cast each leaf to its buffer's dtype. Default True.
    """
    leaves = self.treedef.flatten_up_to(tree)
    parts = [[] for _ in self.buffers]
    large = []
    for leaf, slot in zip(leaves, self.slots):
      if slot.buffer < 0:
        large.append(leaf)
      else:
        flat = jnp.ravel(leaf)
        parts[slot.buffer].append(flat.astype(self.buffers[slot.buffer][0]) if cast else flat)
    bufs = [p[0] if len(p) == 1 else jnp.concatenate(p) for p in parts]
    return Packed(tuple(bufs) + tuple(large), self)

  def unpack(self, packed: "Packed", *, cast: bool = True):
    """The original tree from ``packed`` (see :func:`unpack`; ``cast=False``:
    each leaf keeps its buffer's dtype).

    Args:
      packed: a :class:`Packed` of this layout.
      cast: cast each leaf back to its original dtype. Default True.
    """
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
        part = part.reshape(self.slots[i].shape)
        pieces[i] = part.astype(self.slots[i].dtype) if cast else part
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

  Made by :func:`pack` (or :meth:`PackLayout.pack`) rather than by hand.

  Args:
    children: the 1-D buffers in the layout's buffer order, then the large
      leaves in leaf order (stored as a tuple).
    layout: the :class:`PackLayout` that says where each original leaf lives.
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

  Args:
    tree: the pytree to lay out (arrays or ``jax.ShapeDtypeStruct`` leaves);
      required.
    max_leaf_size: leaves with more elements than this stay unpacked. Default
      65536 (above it a leaf's own kernels cost less than the copy into a
      buffer). Valid range: an integer >= 0 (ValueError otherwise; 0 packs only
      empty leaves).
    groups: leaf labels, a pytree like ``tree`` or a function of ``tree``
      returning one; leaves with different labels go to different buffers.
      None (default): one group.
    max_buffer_leaves: the most leaves one buffer holds. Default 128 (compile
      time grows with the square of the slices of one buffer). Valid range: an
      integer >= 1 (ValueError otherwise).

  Returns:
    The :class:`PackLayout` of ``tree``.
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
    # Never pack a tree of several leaves into a single array. The mechanism:
    # XLA's CPU pipeline treats a division by a traced scalar (Adam's and RMSProp's
    # bias corrections) differently when the scalar has a single user than when it
    # has several (it becomes a multiplication by the reciprocal, which changes
    # the last bit of some elements). A tree of several leaves gives the scalar
    # several users, so its packed form must too: the last leaf gets a buffer of
    # its own (one more tiny kernel, bit-exact results). tests/test_packing.py
    # checks that one buffer still differs; when it no longer does, drop this.
    last = slots[-1]
    slots[-1] = _Slot(last.shape, last.dtype, 1, 0)
    size = int(np.prod(last.shape, dtype=np.int64))
    sizes = [sizes[0] - size, size]
    buffers.append((buffers[0][0], buffers[0][1] + "/last"))
  return PackLayout(treedef, tuple(jax.tree_util.keystr(p) for p, _ in path_leaves),
                    tuple(slots), tuple((d, g, n) for (d, g), n in zip(buffers, sizes)))


def pack(tree, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE, groups=None,
         max_buffer_leaves: int = DEFAULT_MAX_BUFFER_LEAVES) -> Packed:
  """Packs ``tree`` into a :class:`Packed` (the layout is :func:`layout_of`'s).

  Args:
    tree: the pytree of arrays to pack; required.
    max_leaf_size: leaves above this many elements stay as they are. Default
      65536; an integer >= 0 (ValueError otherwise), as in :func:`layout_of`.
    groups: leaf labels (pytree or function of ``tree``) that never share a
      buffer; None (default): one group.
    max_buffer_leaves: leaves per buffer at most. Default 128; an integer >= 1.

  Returns:
    A :class:`Packed` holding ``tree``'s values, each buffer in its leaves' dtype.
  """
  return layout_of(tree, max_leaf_size=max_leaf_size, groups=groups,
                   max_buffer_leaves=max_buffer_leaves).pack(tree)


def unpack(packed: Packed):
  """The original tree from a :class:`Packed`.

  Uses one ``lax.split`` per buffer, whose derivative is one concatenate: so
  ``jax.grad`` of a loss of ``unpack(p)`` returns a :class:`Packed` gradient
  built in a few kernels, not one per leaf.

  Args:
    packed: a :class:`Packed` tree (from :func:`pack`, or a gradient or update
      of one); required.

  Returns:
    The original pytree, each leaf in its own shape and dtype.
  """
  return packed.layout.unpack(packed)


def _is_packed(x) -> bool:
  return isinstance(x, Packed)


def unpack_state(state):
  """``state`` with every :class:`Packed` tree in it unpacked, each leaf in its
  buffer's dtype (a float32 moment of a bf16 param stays float32)."""
  return jax.tree.map(lambda x: x.layout.unpack(x, cast=False) if _is_packed(x) else x, state,
                      is_leaf=_is_packed)


def repack_state(packed_state, state):
  """``state`` (a state of ordinary trees, e.g. from :func:`unpack_state`) packed
  again where ``packed_state`` holds :class:`Packed` trees."""
  return jax.tree.map(lambda old, new: old.layout.pack(new, cast=False) if _is_packed(old) else new,
                      packed_state, state, is_leaf=_is_packed)


def packed_mask(mask: Callable[[Any], Any]) -> Callable[[Any], Any]:
  """Makes a leaf mask function (``params -> tree of bools``) work on packed trees.

  On an ordinary tree it is ``mask`` itself. On a :class:`Packed` it evaluates
  ``mask`` on the original (abstract) tree and gives each buffer the common value
  of its leaves; it raises ``ValueError`` when a buffer mixes True and False
  leaves (build the layout with ``groups=`` the same mask).

  Args:
    mask: a function of the params returning a pytree of bools (e.g.
      :func:`optix.matrices_only`); required. A non-callable raises ValueError.

  Returns:
    A mask function that takes ordinary and :class:`Packed` trees.
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

  # One value per buffer: a transform masked by it (add_decayed_weights) runs
  # unchanged on packed trees, and says so in its description.
  apply.elementwise = True
  return apply


class MixedBufferError(ValueError):
  """A leaf mask that differs between leaves of one buffer (see :func:`packed_mask`)."""


class PackedState(NamedTuple):
  inner: Any  # the wrapped chain's state, over a Packed tree


def packed(tx: _base.GradientTransformationBase, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE,
           groups=None, check: bool = True,
           max_buffer_leaves: int = DEFAULT_MAX_BUFFER_LEAVES) -> _base.GradientTransformation:
  r"""Runs an elementwise chain on packed buffers.

  For an elementwise ``tx`` the updates are those of ``tx`` itself, bit for bit
  (tested for sgd/momentum, adagrad, rmsprop, adam(w), nadam, lion, clipping by
  value, masked decay and schedules; a global norm sums the squares in another
  order, so clipping by it agrees to the rounding of the norm), but the
  chain runs on a few buffers instead of one kernel set per leaf, and its state
  (moments) lives packed. ``update`` takes either an ordinary tree (it packs the
  gradients and params and unpacks the updates: drop-in) or a :class:`Packed`
  tree, e.g. params kept packed with :func:`pack` (nothing copied: fastest).
  :func:`optix.apply_step` recognizes the result and runs its one-pass step
  with the state read and written where the layout says each leaf lives.

  A gradient of another dtype than its param (a bf16 gradient of a float32
  param) cannot be computed at its own precision inside its param's buffer: for
  such gradients the step unpacks the state and runs ``tx`` on the ordinary
  trees (the reference's numbers, not the packed speed).

  Args:
    tx: an elementwise transformation or chain; required.
    max_leaf_size: leaves with more elements stay separate. Default 65536 (above
      this, on the chain's path, a leaf's own kernels cost less than copying it
      into a buffer). The one-pass step copies nothing whatever the size, so
      where it runs (a CPU) a larger value puts more of the state in fewer
      buffers and JAX dispatches fewer arrays (see ``benchmarks/elementwise.py``).
      Valid range: an integer >= 0 (ValueError otherwise).
    groups: labels (pytree or callable ``params -> labels``); leaves with
      different labels get different buffers. Pass the same function as a
      weight-decay mask, wrapped with :func:`packed_mask` inside ``tx``. None
      (default): one group.
    check: when the state is built, make sure ``tx`` is elementwise. A chain
      whose every link describes itself as elementwise (the optix pieces of the
      aliases above, ``optix.identity``, decay masked by :func:`packed_mask`) is
      accepted from its description alone. Any other link (clipping, an optax
      transform, a link of unknown kind) is checked by a probe: ``tx`` runs two
      eager steps on random data with the real small-leaf shapes and buffer
      sizes, packed and unpacked, and a ``tx`` whose numbers differ
      (shape-dependent transforms: Adafactor, Muon, Shampoo, ...) or that fails
      on 1-D buffers is refused with a ``ValueError``. ``check=False`` skips
      both. Default True. Must be a bool (ValueError otherwise).
    max_buffer_leaves: at most this many leaves share a buffer. Default 128 (see
      :func:`layout_of`). Valid range: an integer >= 1 (ValueError otherwise).
  """
  _validate.integer("max_leaf_size", max_leaf_size, low=0)
  _validate.integer("max_buffer_leaves", max_buffer_leaves, low=1)
  options = dict(max_leaf_size=max_leaf_size, groups=groups, max_buffer_leaves=max_buffer_leaves)
  if not isinstance(check, bool):
    raise ValueError(f"check must be a bool, got {check!r}")
  declared = getattr(_base.spec_of(tx), "elementwise", False)

  def as_packed(tree):
    if isinstance(tree, Packed):
      return tree
    return layout_of(tree, **options).pack(tree)

  def init(params):
    p = as_packed(params)
    if check and not declared:
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
    if not layout.has_dtypes_of(updates):
      out, inner = tx.update(updates, unpack_state(state.inner), params, **extra_args)
      return out, PackedState(repack_state(state.inner, inner))
    out, inner = tx.update(layout.pack(updates), state.inner,
                           None if params is None else layout.pack(params), **extra_args)
    return _tree.cast_like(unpack(out), updates), PackedState(inner)

  return _base.described(_base.GradientTransformation(init, update), "packed", inner=tx,
                         options=types.MappingProxyType(options), elementwise=declared)


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


def _host(x) -> np.ndarray:
  """``x`` on the host in float32, or complex64 for complex ``x`` (its imaginary part kept)."""
  complex_ = jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)
  return np.asarray(x, np.complex64 if complex_ else np.float32)


def _check_elementwise(tx, layout: PackLayout, steps: int = 2):
  """Raises ValueError unless ``tx`` gives the same numbers packed and unpacked."""
  probe = _probe_layout(layout)
  if not probe.buffers:
    return
  rng = np.random.default_rng(0)

  def rand():
    """A random (plain tree, packed tree) pair, packed with numpy (nothing to compile)."""
    def draw(s):  # complex leaves get imaginary parts too: a check on real values would
      x = rng.standard_normal(s.shape) + 0.5  # miss a chain that drops them
      if jnp.issubdtype(s.dtype, jnp.complexfloating):
        x = x + 1j * rng.standard_normal(s.shape)
      return x.astype(s.dtype)
    leaves = [draw(s) for s in probe.slots]
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
    bufs = [_host(b) for b in packed_tree.children[:nbuf]]
    large = packed_tree.children[nbuf:]
    return [_host(large[s.offset]) if s.buffer < 0 else
            bufs[s.buffer][s.offset:s.offset + int(np.prod(s.shape, dtype=np.int64))]
            .reshape(s.shape) for s in probe.slots]

  # One compiled program per tree (op-by-op dispatch of a shape-dependent chain, such as
  # 8-bit Adam's quantization, takes many times longer).
  update = jax.jit(tx.update)
  with jax.ensure_compile_time_eval():
    params, packed_params = rand()
    try:
      s_packed = tx.init(packed_params)
      s_plain = tx.init(params)
      for t in range(steps):
        g, g_packed = rand()
        u_plain, s_plain = update(g, s_plain, params)
        u_packed, s_packed = update(g_packed, s_packed, packed_params)
        a = probe.treedef.flatten_up_to(u_plain)
        for path, x, y in zip(probe.paths, a, leaves_of(u_packed)):
          x = _host(x)
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
    except (TypeError, ValueError, IndexError) as e:  # the chain failed on a 1-D buffer
      raise ValueError(f"optix.packed: the chain fails on packed 1-D buffers "
                       f"({type(e).__name__}: {e}); pack only elementwise transforms "
                       "(not Adafactor, Muon, Shampoo, SOAP)") from e


class _NotElementwise(Exception):
  pass
