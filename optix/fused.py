r"""Single-pass steps: ``update`` and ``apply_updates`` as one loop over memory.

An elementwise optimizer step is memory-bound. AdamW reads
:math:`\theta, g, m, v` and writes :math:`\theta, m, v`: seven arrays' worth of
traffic. XLA's CPU backend emits one kernel per output array (it has no
multi-output loop fusion), so the jitted chain runs three loops -- m, v, then
:math:`\theta` -- that move ten arrays' worth, ~1.5x the memory roofline on a
24M-parameter leaf (``benchmarks/elementwise.py``). PyTorch's fused CPU AdamW
does the step in one pass.

Here the whole step of AdamW/Adam, Lion and SGD with momentum is one C++ loop
per call (``optix/fused_kernels.cc``, an XLA FFI custom call on XLA's intra-op
thread pool, writing params and state in place through donated buffers), over
every eligible leaf at once (up to :data:`MAX_CALL_LEAVES` leaves a call), so
2000 leaves cost 63 calls, not 6000 kernels. The arithmetic is the jitted
chain's, operation for operation (including where XLA contracts into fused
multiply-adds and multiplies by the reciprocal of a bias correction), so
results match ``tx.update`` + ``optax.apply_updates`` under ``jax.jit``: bit
for bit for Lion, SGD and AdamW on one leaf here, to a few float32 ulps where
XLA rewrites the chain's scalar factors differently in a bigger graph
(tests/test_fused.py).

How it fits the Optax protocol: ``optix.adam``, ``adamw``, ``lion`` and ``sgd``
(with momentum) return their usual ``chain`` -- ``init``/``update`` unchanged,
usable anywhere an optax transform is -- with a ``fused_step(grads, state,
params) -> (params, state)`` attached (:class:`FusedTransformation`).
:func:`apply_step` and :func:`optix.train_step` use it; ``tx.update`` alone
cannot (it returns updates, so applying them is a second pass by definition).
Inside ``fused_step`` the chain's own ``update`` still runs, for the small parts
of the new state (step counts, schedule counts); XLA drops the elementwise work
the kernel replaced.

What it cannot remove: JAX dispatches each argument and result array of a
jitted call separately (~2-3 us an array here), so a tree of many leaves pays
that per step (AdamW on 200 leaves: params, gradients, m, v). Fewer arrays is
the cure: ``optix.packed(tx)`` keeps the state in a few buffers, and its
one-pass step reads and writes each leaf's state there at its offset (the
kernels take (operand, offset) locations), packing nothing; keeping the params
packed too (:func:`optix.pack`) leaves a few buffers in all.

Where the kernel is used (``fused=None``, the default): a CPU backend, one
device (with several, XLA's SPMD partitioner would gather sharded operands of a
custom call; inside ``shard_map``/``pmap`` the arrays are per device, so pass
``fused=True`` there), and leaves whose params, gradients and state are all
float32 (others take the chain's path in the same step). The kernels are built
when optix is installed (``setup.py``: an optional extension compiled for the
installing machine's CPU against jaxlib's FFI headers); where they could not be
built, steps take the chain's path (``fused=True`` then raises, saying why).
"""

import ctypes
import functools
import importlib.util
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from optix import _base, _tree

_TARGETS = ("optix_fused_adam", "optix_fused_lion", "optix_fused_momentum")
# Leaves per custom call: XLA's compile time grows faster than linearly with the
# operands one call aliases (one call over 400 leaves: 4.6 s; 2000 leaves in calls of 32: 3.2 s).
MAX_CALL_LEAVES = 32


@functools.cache
def _registered() -> Optional[str]:
  """Loads the kernels built with the package and registers them with XLA; None,
  or why they are unavailable."""
  spec = importlib.util.find_spec("optix._fused_kernels")  # finds, does not import
  if spec is None or not spec.origin:
    return ("optix's fused kernels were not built (no C++ compiler at install time?): "
            "reinstall optix where g++ is available")
  try:
    lib = ctypes.CDLL(spec.origin)
    for target in _TARGETS:
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, target)),
                                  platform="cpu")
  except (OSError, AttributeError) as err:
    return f"optix's fused kernels could not be loaded: {err}"
  return None


def available() -> bool:
  """Whether the single-pass kernels were built with the package and load here."""
  return _registered() is None


class Kernel(NamedTuple):
  """One single-pass step: the FFI handler, its static hyperparameters, and where
  its per-parameter state lives in the chain's state.

  ``moments(state)`` gives the state trees the kernel reads and writes (params-
  shaped), ``with_moments(state, trees)`` puts new ones back, and
  ``scalars(state)`` the step-dependent float32 scalars (bias corrections, the
  signed learning rate) from the state *before* the step, computed as the chain
  computes them. ``weight_decay(state)`` is the chain's decoupled decay
  coefficient at this step, applied where ``mask`` allows (None: no decay).
  """
  target: str
  attrs: dict
  moments: Callable[[Any], Sequence[Any]]
  with_moments: Callable[[Any, Sequence[Any]], Any]
  scalars: Callable[[Any], Sequence[jax.Array]]
  weight_decay: Optional[Callable[[Any], jax.Array]] = None
  mask: Any = None


FusedTransformation = _base.FusedTransformation
with_fused_step = _base.with_fused_step


def with_kernel(tx: _base.GradientTransformationBase, kernel: Kernel) -> FusedTransformation:
  """``tx`` with a ``fused_step`` that runs ``kernel`` where it can (see module doc)."""
  return with_fused_step(tx, functools.partial(_kernel_step, tx, kernel))


def use_kernel(fused: Optional[bool] = None) -> bool:
  """Whether a step traced now runs the kernel: ``fused`` True/False forces it
  (True raises if the kernels are not available); None picks it on one CPU device."""
  if fused is False:
    return False
  if fused is None:
    return (jax.default_backend() == "cpu" and jax.device_count() == 1 and available())
  if not available():
    raise RuntimeError(_registered())
  return True


def apply_step(tx: _base.GradientTransformationBase, grads, state, params, *,
               fused: Optional[bool] = None):
  """One optimizer step: ``(params, state)`` after ``tx.update`` and
  ``apply_updates``, in a single pass where ``tx`` has a fused step (see
  :func:`use_kernel` for ``fused``). Donate params and state to the enclosing
  ``jax.jit`` so that the kernel writes them in place."""
  step = getattr(tx, "fused_step", None)
  if step is not None:
    return step(grads, state, params, fused=fused)
  updates, state = tx.update(grads, state, params)
  return _base.apply_updates(params, updates), state


def _call(target, attrs, scalars, decay, operands, rows, sizes):
  """One custom call. ``rows[k]`` = [(operand, offset)] for leaf k's p, g, state...
  (``sizes[k]`` elements each; leaves may share an operand, e.g. a packed state
  buffer, at their offsets). Every operand but the gradients is written in
  place (aliased) and returned; gradients give None."""
  grads = {row[1][0] for row in rows}
  written = [i for i in range(len(operands)) if i not in grads]
  result_of = np.full(len(operands), -1, np.int64)
  result_of[written] = np.arange(len(written))
  outs = jax.ffi.ffi_call(
      target, [jax.ShapeDtypeStruct(jnp.shape(operands[i]), jnp.float32) for i in written],
      input_output_aliases={2 + i: r for r, i in enumerate(written)})(
          scalars, decay, *operands, sizes=np.asarray(sizes, np.int64),
          where=np.asarray(rows, np.int64).ravel(), result_of=result_of, **attrs)
  out = [None] * len(operands)
  for r, i in enumerate(written):
    out[i] = outs[r]
  return out


def _costed(scalars, calls: int):
  """``scalars`` followed by ``1024 + calls`` values that the kernels never read.

  XLA's CPU client runs a program inline, on the calling Python thread, when its
  cost analysis estimates under 1000 flops, and it counts each custom call as -1
  (unknown). A step made of these calls looked free, so the jitted call did not
  return before the step was done and JAX's bookkeeping of the output arrays
  (~2 us each: 1.2 ms for AdamW on 200 leaves) came after it instead of
  alongside it. The padding costs one multiply per element (by a step-dependent
  scalar, so XLA cannot fold it away): the estimate says what the step is,
  expensive, and it runs asynchronously like any real step.
  """
  return jnp.concatenate([scalars, lax.iota(jnp.float32, 1024 + calls) * scalars[-1]])


def _leaf_flags(mask, params) -> list:
  """Per leaf of ``params``: does it decay (``mask`` None: all; a prefix tree
  or a callable of the params otherwise)."""
  leaves = jax.tree.leaves(params)
  if mask is None:
    return [True] * len(leaves)
  tree = mask(params) if callable(mask) else mask
  full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
  return jax.tree.structure(params).flatten_up_to(full)


def _state_homes(packing, count: int) -> list:
  """Per leaf: where its state lives, (child of the state trees, element offset):
  its own array, or with ``packing`` its buffer at its offset (a large leaf: its
  own array, after the buffers)."""
  if packing is None:
    return [(k, 0) for k in range(count)]
  nbuf = len(packing.buffers)
  return [(s.buffer, s.offset) if s.buffer >= 0 else (nbuf + s.offset, 0) for s in packing.slots]


def _kernel_step(tx, kernel: Kernel, grads, state, params, fused=None, packing=None):
  """``tx``'s step through ``kernel``. ``packing``: the ``PackLayout`` by which the
  chain's state is packed while grads and params are ordinary trees
  (``optix.packed``'s drop-in step): each leaf's state is then read and written
  in its buffer, at its offset, and nothing is packed or unpacked."""
  pack = (lambda tree: tree) if packing is None else packing.pack
  packed_params = pack(params)
  updates, new_state = tx.update(pack(grads), state, packed_params)
  if packing is not None:
    updates = _tree.cast_like(packing.unpack(updates), grads)
  # The chain's params; XLA drops what the kernel's outputs replace.
  out_p, treedef = jax.tree.flatten(_base.apply_updates(params, updates))
  if not use_kernel(fused):
    return treedef.unflatten(out_p), new_state
  leaves, g_leaves = treedef.flatten_up_to(params), treedef.flatten_up_to(grads)
  old = [jax.tree.leaves(t) for t in kernel.moments(state)]
  new = [jax.tree.flatten(t) for t in kernel.moments(new_state)]
  homes = _state_homes(packing, len(leaves))

  def fits(k):
    p, g = leaves[k], g_leaves[k]
    child, _ = homes[k]
    # packed state: the layout was made from these params, so sizes agree
    shapes = packing is not None or all(jnp.shape(m[k]) == jnp.shape(p) for m in old)
    return (shapes and jnp.shape(g) == jnp.shape(p)
            and all(jnp.result_type(x) == jnp.float32 for x in (p, g, *(m[child] for m in old))))

  # A state array (a leaf's own, or a packed buffer shared by several leaves) is
  # written either by the kernel or by the chain, never both: the kernel's output
  # replaces the whole array, so a leaf it cannot take (another dtype, shape) keeps
  # every leaf that shares its state array on the chain's path.
  rejected = {homes[k][0] for k in range(len(leaves)) if not fits(k)}
  eligible = [k for k in range(len(leaves)) if homes[k][0] not in rejected]
  if not eligible:
    return treedef.unflatten(out_p), new_state
  has_decay = kernel.weight_decay is not None
  decays = _leaf_flags(kernel.mask if has_decay else None, packed_params)
  wd = jnp.asarray(kernel.weight_decay(state) if has_decay else 0.0, jnp.float32)
  calls = range(0, len(eligible), MAX_CALL_LEAVES)
  scalars = _costed(jnp.stack([jnp.asarray(s, jnp.float32) for s in kernel.scalars(state)]),
                    len(calls))
  attrs = {name: (v if isinstance(v, bool) else np.float32(v))
           for name, v in kernel.attrs.items()}
  # Every array the kernel touches, by key, in its latest version: a state buffer
  # shared by leaves in several calls passes from one call to the next in place.
  current = {("p", k): leaves[k] for k in eligible}
  current.update({("g", k): g_leaves[k] for k in eligible})
  current.update({("m", j, homes[k][0]): m[homes[k][0]]
                  for k in eligible for j, m in enumerate(old)})
  for start in calls:
    chunk = eligible[start:start + MAX_CALL_LEAVES]
    keys, rows = {}, []
    for k in chunk:
      child, offset = homes[k]
      roles = [(("p", k), 0), (("g", k), 0)] + [(("m", j, child), offset) for j in range(len(old))]
      rows.append([(keys.setdefault(key, len(keys)), at) for key, at in roles])
    flags = np.asarray([has_decay and decays[homes[k][0]] for k in chunk], np.float32)
    decay = jnp.stack([jnp.broadcast_to(wd, flags.shape), flags], axis=1)
    outs = _call(kernel.target, attrs, scalars, decay, [current[key] for key in keys], rows,
                 [int(np.prod(jnp.shape(leaves[k]), dtype=np.int64)) for k in chunk])
    current.update({key: out for key, out in zip(keys, outs) if out is not None})
  for key, array in current.items():
    if key[0] == "p":
      out_p[key[1]] = array
    elif key[0] == "m":
      new[key[1]][0][key[2]] = array
  return (treedef.unflatten(out_p),
          kernel.with_moments(new_state, [d.unflatten(m) for m, d in new]))
