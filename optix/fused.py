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
2000 leaves cost 63 calls, not 6000 kernels. The arithmetic is the jitted chain's, operation for operation
(including where XLA contracts into fused multiply-adds and multiplies by the
reciprocal of a bias correction), so results match ``tx.update`` +
``optax.apply_updates`` under ``jax.jit``: bit for bit for Lion, SGD and AdamW on
one leaf here, to a few float32 ulps where XLA rewrites the chain's scalar
factors differently in a bigger graph (tests/test_fused.py).

How it fits the Optax protocol: ``optix.adam``, ``adamw``, ``lion`` and ``sgd``
(with momentum) return their usual ``chain`` -- ``init``/``update`` unchanged,
usable anywhere an optax transform is -- with a ``fused_step(grads, state,
params) -> (params, state)`` attached (:class:`FusedTransformation`).
:func:`apply_step` and :func:`optix.train_step` use it; ``tx.update`` alone
cannot (it returns updates, so applying them is a second pass by definition).
Inside ``fused_step`` the chain's own ``update`` still runs, for the small parts
of the new state (step counts, schedule counts); XLA drops the elementwise work
the kernel replaced.

What it cannot remove: JAX dispatches each argument array of a jitted call
separately (~4 us per donated array here), so a tree of thousands of small
leaves still pays that per step; keep such params packed (:func:`optix.pack`),
which leaves a few buffers -- the kernel then runs on those.

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
import numpy as np

from optix import _base

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


def _call(target, attrs, scalars, decay, leaves):
  """One custom call over ``leaves`` = [(p, g, *state)]: [(p', *state')], each
  output written in place of its input (aliased)."""
  per_in = len(leaves[0])
  aliases = {2 + i * per_in + j: i * (per_in - 1) + (j - 1 if j else 0)
             for i in range(len(leaves)) for j in range(per_in) if j != 1}
  flat = jax.ffi.ffi_call(
      target, [jax.ShapeDtypeStruct(jnp.shape(leaf[0]), jnp.float32)
               for leaf in leaves for _ in range(per_in - 1)],
      input_output_aliases=aliases)(scalars, decay, *(x for leaf in leaves for x in leaf), **attrs)
  return [flat[i:i + per_in - 1] for i in range(0, len(flat), per_in - 1)]


def _leaf_flags(mask, params, treedef) -> list:
  """Per leaf of ``params``: does it decay (``mask`` None: all; a prefix tree
  or a callable of the params otherwise)."""
  if mask is None:
    return [True] * treedef.num_leaves
  tree = mask(params) if callable(mask) else mask
  full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
  return treedef.flatten_up_to(full)


def _kernel_step(tx, kernel: Kernel, grads, state, params, fused=None):
  updates, new_state = tx.update(grads, state, params)
  if not use_kernel(fused):
    return _base.apply_updates(params, updates), new_state
  leaves, treedef = jax.tree.flatten(params)
  g_leaves = treedef.flatten_up_to(grads)
  old = [treedef.flatten_up_to(t) for t in kernel.moments(state)]
  new = [treedef.flatten_up_to(t) for t in kernel.moments(new_state)]
  # The chain's params and state; XLA drops what the kernel's outputs replace.
  out_p = treedef.flatten_up_to(_base.apply_updates(params, updates))
  eligible = [k for k, (p, g) in enumerate(zip(leaves, g_leaves))
              if all(jnp.result_type(x) == jnp.float32 and jnp.shape(x) == jnp.shape(p)
                     for x in (p, g, *(m[k] for m in old)))]
  if eligible:
    has_decay = kernel.weight_decay is not None
    decays = _leaf_flags(kernel.mask if has_decay else None, params, treedef)
    wd = jnp.asarray(kernel.weight_decay(state) if has_decay else 0.0, jnp.float32)
    scalars = jnp.stack([jnp.asarray(s, jnp.float32) for s in kernel.scalars(state)])
    attrs = {name: (v if isinstance(v, bool) else np.float32(v))
             for name, v in kernel.attrs.items()}
    for start in range(0, len(eligible), MAX_CALL_LEAVES):
      chunk = eligible[start:start + MAX_CALL_LEAVES]
      flags = np.asarray([has_decay and decays[k] for k in chunk], np.float32)
      decay = jnp.stack([jnp.broadcast_to(wd, flags.shape), flags], axis=1)
      results = _call(kernel.target, attrs, scalars, decay,
                      [(leaves[k], g_leaves[k], *(m[k] for m in old)) for k in chunk])
      for k, (p, *moments) in zip(chunk, results):
        out_p[k] = p
        for j, m in enumerate(moments):
          new[j][k] = m
  return (treedef.unflatten(out_p),
          kernel.with_moments(new_state, [treedef.unflatten(m) for m in new]))
