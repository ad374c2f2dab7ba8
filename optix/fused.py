r"""Single-pass steps: ``update`` and ``apply_updates`` as one loop over memory.

An elementwise optimizer step is memory-bound. AdamW reads
:math:`\theta, g, m, v` and writes :math:`\theta, m, v`: seven arrays' worth of
traffic. XLA's CPU backend emits one kernel per output array (it has no
multi-output loop fusion), so the jitted chain runs three loops -- m, v, then
:math:`\theta` -- that move ten arrays' worth, ~1.5x the memory roofline on a
24M-parameter leaf (``benchmarks/elementwise.py``). PyTorch's fused CPU AdamW
does the step in one pass.

Here the whole step of Adam(W), Lion and SGD with momentum is one C++ loop per
call (``optix/fused_kernels.cc``, an XLA FFI custom call on XLA's intra-op
thread pool, writing params and state in place through donated buffers), over
every eligible leaf at once (up to :data:`MAX_CALL_LEAVES` leaves a call), so
2000 leaves cost 63 calls, not 6000 kernels. The arithmetic is the jitted
chain's, operation for operation (including where XLA contracts into fused
multiply-adds and multiplies by the reciprocal of a bias correction), so
results match ``tx.update`` + ``optax.apply_updates`` under ``jax.jit``: bit
for bit for Lion, SGD and AdamW on one leaf here, to a few float32 ulps where
XLA rewrites the chain's scalar factors differently in a bigger graph
(tests/test_fused.py).

Which chains: the aliases are plain chains and know nothing of this module.
:func:`plan` reads the descriptions the transforms carry (``tx.spec``, see
``optix._base.described``) and recognizes a chain -- nested chains flattened --
ending in

    ``[*prefix, scale_by_adam(nesterov=False) | scale_by_lion(mode="hard") | trace,
    add_decayed_weights?, scale_by_learning_rate]``

(``trace`` without decay), whoever built it: ``optix.adamw(...)``,
``optix.chain(optix.scale_by_adam(), optix.add_decayed_weights(0.1),
optix.scale_by_learning_rate(1e-3))`` and ``optix.chain(optix.clip(1.0),
optix.adamw(...))`` all match. The prefix links run their ``update``; the rest
is the kernel. Each link's state is found at its position in the chain's
state, and each schedule is evaluated at its own link's count, as the chain
evaluates it. The chain's own ``update`` still runs for the small parts of the
new state (step counts, schedule counts); XLA drops the elementwise work the
kernel replaced.

:func:`apply_step` takes the step on the fastest valid path. ``tx.update``
alone cannot (it returns updates, so applying them is a second pass by
definition).

What it cannot remove: JAX dispatches each argument and result array of a
jitted call separately, so a tree of many leaves pays
that per step (AdamW on 200 leaves: params, gradients, m, v). Fewer arrays is
the cure: ``optix.packed(tx)`` keeps the state in a few buffers, and the
one-pass step reads and writes each leaf's state there, where the
``PackLayout`` says it lives (the kernels take (operand, offset) locations),
packing nothing; keeping the params packed too (:func:`optix.pack`) leaves a
few buffers in all.

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
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from optix import _base, _tree, packing

_TARGETS = ("optix_fused_adam", "optix_fused_lion", "optix_fused_momentum")
# Leaves per custom call: XLA's compile time grows faster than linearly with the
# operands one call aliases, so many leaves compile faster in calls of 32.
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


# ---------------------------------------------------------------------------
# Recognizing a chain.

def _links(tx, path=()) -> list:
  """``tx``'s links in order, nested chains flattened: ``(link, path)`` where
  ``path`` indexes the link's state inside ``tx``'s state (a chain's state is
  the tuple of its links' states)."""
  spec = _base.spec_of(tx)
  if spec is None or spec.kind != "chain":
    return [(tx, path)]
  return [pair for i, link in enumerate(spec.hyperparams["links"])
          for pair in _links(link, path + (i,))]


def _state_at(state, path):
  for i in path:
    state = state[i]
  return state


def _with_states(state, new: dict, path=()):
  """``state`` with the state at each path of ``new`` replaced."""
  if path in new:
    return new[path]
  return tuple(_with_states(sub, new, path + (i,)) for i, sub in enumerate(state))


def _static(*values) -> bool:
  return all(isinstance(v, (bool, int, float, np.floating, np.integer)) for v in values)


class Plan(NamedTuple):
  """How :func:`apply_step` runs a chain in one pass (see :func:`plan`).

  ``target``/``attrs``: the kernel and its static hyperparameters; ``prefix``:
  the ``(link, path)`` pairs that run their own ``update`` first; ``core``,
  ``decay`` (or None) and ``rate``: the ``(link, path)`` of the moment link,
  the decoupled decay and the learning rate; ``moments``: the fields of the
  core's state that the kernel reads and writes.
  """
  target: str
  attrs: dict
  prefix: tuple
  core: tuple
  decay: Optional[tuple]
  rate: tuple
  moments: tuple


def plan(tx) -> Optional[Plan]:
  """The one-pass plan for ``tx``, or None when its shape is not one the
  kernels compute (see the module doc): a chain, nested chains flattened,
  ending in ``[adam (not Nesterov) | lion (hard sign) | trace, decay?,
  learning rate]`` with static hyperparameters."""
  links = _links(tx)
  if len(links) < 2:
    return None
  rate = _base.spec_of(links[-1][0])
  if (rate is None or rate.kind != "scale_by_learning_rate"
      or rate.hyperparams["learning_rate"] is None):
    return None
  i = len(links) - 2
  decay = _base.spec_of(links[i][0])
  has_decay = decay is not None and decay.kind == "add_decayed_weights"
  i -= has_decay
  core = _base.spec_of(links[i][0]) if i >= 0 else None
  if core is None:
    return None
  h = core.hyperparams
  if core.kind == "scale_by_adam" and not h["nesterov"] and _static(h["b1"], h["b2"], h["eps"],
                                                                       h["eps_root"]):
    target, moments = "optix_fused_adam", ("mu", "nu")
    attrs = dict(b1=h["b1"], b2=h["b2"], c1=1 - h["b1"], c2=1 - h["b2"], eps=h["eps"],
                 eps_root=h["eps_root"])
  elif core.kind == "scale_by_lion" and h.get("mode", "hard") == "hard" and _static(h["b1"], h["b2"]):
    target, moments = "optix_fused_lion", ("mu",)
    attrs = dict(b1=h["b1"], b2=h["b2"], c1=1 - h["b1"], c2=1 - h["b2"])
  elif core.kind == "trace" and not has_decay and _static(h["decay"], h["nesterov"]):
    target, moments = "optix_fused_momentum", ("trace",)  # the kernel has no decay
    attrs = dict(mu=h["decay"], nesterov=h["nesterov"])
  else:
    return None
  return Plan(target, attrs, tuple(links[:i]), links[i], links[i + 1] if has_decay else None,
              links[-1], moments)


def _count(state):
  """The step count of a schedule link's state (a masked link keeps it inside)."""
  return state.count if hasattr(state, "count") else state.inner_state.count


def _scalars(p: Plan, state) -> list:
  """The kernel's step-dependent scalars, from the state *before* the step,
  computed as each link computes them from its own state."""
  rate = _base.spec_of(p.rate[0]).hyperparams
  lr, sign = rate["learning_rate"], -1 if rate["flip_sign"] else 1
  step = sign * lr(_count(_state_at(state, p.rate[1]))) if callable(lr) else sign * lr
  if p.target != "optix_fused_adam":
    return [step]
  h = _base.spec_of(p.core[0]).hyperparams
  t = _tree.safe_increment(_state_at(state, p.core[1]).count).astype(jnp.float32)
  return [1 / (1 - h["b1"] ** t), 1 / (1 - h["b2"] ** t), step]


def _weight_decay(p: Plan, state):
  """(coefficient at this step, mask) of the decoupled decay; (0, None) without."""
  if p.decay is None:
    return jnp.float32(0.0), None
  h = _base.spec_of(p.decay[0]).hyperparams
  wd = h["weight_decay"]
  wd = wd(_count(_state_at(state, p.decay[1]))) if callable(wd) else wd
  return jnp.asarray(wd, jnp.float32), h["mask"]


def fusable(tx) -> bool:
  """Whether :func:`apply_step` can run ``tx`` (or the chain inside
  ``optix.packed(tx)``) as one pass."""
  spec = _base.spec_of(tx)
  if spec is not None and spec.kind == "packed":
    tx = spec.hyperparams["inner"]
  return plan(tx) is not None


# ---------------------------------------------------------------------------
# The step.

def apply_step(tx: _base.GradientTransformationBase, grads, state, params, *,
               layout: Optional[packing.PackLayout] = None, fused: Optional[bool] = None,
               **extra_args):
  """One optimizer step: ``(params, state)`` after ``tx.update`` and
  ``apply_updates``, on the fastest valid path.

  A chain that :func:`plan` recognizes runs as one pass where the kernel is used
  (``fused``: None picks it on one CPU device, True forces it, False never, see
  :func:`use_kernel`); any other ``tx`` is exactly ``tx.update`` +
  ``apply_updates``. ``optix.packed(tx)`` is recognized: its state is packed
  while ``grads`` and ``params`` may be ordinary trees (its layout is then
  passed on as ``layout``) or :class:`optix.Packed` trees.

  Args:
    tx: the optimizer (any ``GradientTransformation``); required.
    grads: the gradients, a pytree like ``params`` (or :class:`optix.Packed`);
      required.
    state: ``tx``'s state, as from ``tx.init(params)``; required.
    params: the current params; required (the step returns the new ones).
    layout: the ``PackLayout`` by which ``state`` is packed while ``grads`` and
      ``params`` are ordinary trees (``optix.packed`` passes it; give it only
      for a state built by ``tx.init(layout.pack(params))``). None (default):
      the state is not packed, or ``tx`` is ``optix.packed(...)``, which knows
      its layout; passing one with a packed ``tx`` raises ValueError.
    fused: run the one-pass kernel for a chain :func:`plan` recognizes: None
      (default) on one CPU device with the kernels built (where it pays), True
      always (RuntimeError if the compiled kernels are unavailable), False
      never (the plain ``tx.update`` + ``apply_updates``).
    **extra_args: keyword extra arguments of ``tx.update`` (e.g. ``value_fn``,
      ``kfac_stats``), passed to every link on every path.

  Donate params and state to the enclosing ``jax.jit`` so that the kernel
  writes them in place.
  """
  spec = _base.spec_of(tx)
  if spec is not None and spec.kind == "packed":
    if layout is not None:
      raise ValueError("optix.apply_step: a packed transformation cannot be packed again")
    inner = spec.hyperparams["inner"]
    if not isinstance(grads, packing.Packed):
      _tree.check_match("grads", grads, "params", params)
      layout = packing.layout_of(params, **spec.hyperparams["options"])
    params, inner_state = apply_step(inner, grads, state.inner, params, layout=layout,
                                     fused=fused, **extra_args)
    return params, packing.PackedState(inner_state)
  if layout is not None and not layout.has_dtypes_of(grads):
    # a gradient of another dtype than its buffer: the chain's path, unpacked
    new, inner = apply_step(tx, grads, packing.unpack_state(state), params, fused=fused,
                            **extra_args)
    return new, packing.repack_state(state, inner)
  p = plan(tx)
  if p is not None and use_kernel(fused):
    return _kernel_step(p, grads, state, params, layout, extra_args)
  links = _links(tx)
  last = _base.spec_of(links[-1][0])
  if last is not None and last.kind == "packed" and layout is None:
    # chain(prefix..., packed(tx)), the prefix possibly empty: it runs, then the packed step
    g, new = grads, {}
    for link, path in links[:-1]:
      g, new[path] = link.update(g, _state_at(state, path), params, **extra_args)
    params, new[links[-1][1]] = apply_step(links[-1][0], g, _state_at(state, links[-1][1]),
                                           params, fused=fused, **extra_args)
    return params, _with_states(state, new)
  if layout is None:
    updates, state = tx.update(grads, state, params, **extra_args)
  else:
    updates, state = tx.update(layout.pack(grads), state, layout.pack(params), **extra_args)
    updates = _tree.cast_like(layout.unpack(updates), grads)
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

  The mechanism: XLA's CPU client runs a program inline, on the calling Python
  thread, when its cost analysis estimates it under 1000 flops, and it counts
  each custom call as -1 flop (unknown cost). A step made only of these calls
  therefore looks free, and the jitted call would not return before the step is
  done, so JAX's per-array bookkeeping of the outputs would follow the step
  instead of overlapping it. The padding (one multiply per element, by a
  step-dependent scalar so that XLA cannot fold it away) makes the estimate
  exceed the threshold, and the step runs asynchronously like any real step.
  Both halves of the mechanism are XLA heuristics: tests/test_fused.py checks
  that the unpadded step is still estimated under the threshold (drop the
  padding when it is not) and that the padded one is not.
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


def _kernel_step(p: Plan, grads, state, params, layout=None, extra_args=None):
  """The step of the chain ``p`` was made from, through the kernel. ``layout``:
  the ``PackLayout`` by which the chain's state is packed while grads and params
  are ordinary trees: each leaf's state is then read and written in its buffer,
  at its offset, and nothing is packed or unpacked (the prefix links, if any,
  run on packed gradients)."""
  pack = (lambda tree: tree) if layout is None else layout.pack
  packed_params = pack(params)
  extra_args = extra_args or {}
  g, new = pack(grads), {}
  for link, path in p.prefix:
    g, new[path] = link.update(g, _state_at(state, path), packed_params, **extra_args)
  if not p.prefix:
    core_grads = grads  # nothing packed for the kernel to read
  else:
    core_grads = g if layout is None else _tree.cast_like(layout.unpack(g), grads)
  for link, path in (pair for pair in (p.core, p.decay, p.rate) if pair is not None):
    g, new[path] = link.update(g, _state_at(state, path), packed_params, **extra_args)
  updates = g if layout is None else _tree.cast_like(layout.unpack(g), grads)
  # The chain's params; XLA drops what the kernel's outputs replace.
  out_p, treedef = jax.tree.flatten(_base.apply_updates(params, updates))
  leaves, g_leaves = treedef.flatten_up_to(params), treedef.flatten_up_to(core_grads)
  core_old, core_new = _state_at(state, p.core[1]), new[p.core[1]]
  old = [jax.tree.leaves(getattr(core_old, name)) for name in p.moments]
  moved = [jax.tree.flatten(getattr(core_new, name)) for name in p.moments]
  homes = ([(k, 0) for k in range(len(leaves))] if layout is None else list(layout.homes()))

  def fits(k):
    param, grad = leaves[k], g_leaves[k]
    child, _ = homes[k]
    # packed state: the layout was made from these params, so sizes agree
    shapes = layout is not None or all(jnp.shape(m[k]) == jnp.shape(param) for m in old)
    return (shapes and jnp.shape(grad) == jnp.shape(param)
            and all(jnp.result_type(x) == jnp.float32 for x in (param, grad,
                                                                  *(m[child] for m in old))))

  # A state array (a leaf's own, or a packed buffer shared by several leaves) is
  # written either by the kernel or by the chain, never both: the kernel's output
  # replaces the whole array, so a leaf it cannot take (another dtype, shape) keeps
  # every leaf that shares its state array on the chain's path.
  rejected = {homes[k][0] for k in range(len(leaves)) if not fits(k)}
  eligible = [k for k in range(len(leaves)) if homes[k][0] not in rejected]
  if not eligible:
    return treedef.unflatten(out_p), _with_states(state, new)
  wd, mask = _weight_decay(p, state)
  decays = _leaf_flags(mask, packed_params) if p.decay is not None else None
  calls = range(0, len(eligible), MAX_CALL_LEAVES)
  scalars = _costed(jnp.stack([jnp.asarray(s, jnp.float32) for s in _scalars(p, state)]),
                    len(calls))
  attrs = {name: (v if isinstance(v, bool) else np.float32(v)) for name, v in p.attrs.items()}
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
    flags = np.asarray([decays is not None and decays[homes[k][0]] for k in chunk], np.float32)
    decay = jnp.stack([jnp.broadcast_to(wd, flags.shape), flags], axis=1)
    outs = _call(p.target, attrs, scalars, decay, [current[key] for key in keys], rows,
                 [int(np.prod(jnp.shape(leaves[k]), dtype=np.int64)) for k in chunk])
    current.update({key: out for key, out in zip(keys, outs) if out is not None})
  for key, array in current.items():
    if key[0] == "p":
      out_p[key[1]] = array
    elif key[0] == "m":
      moved[key[1]][0][key[2]] = array
  new[p.core[1]] = core_new._replace(**{name: d.unflatten(m) for name, (m, d)
                                        in zip(p.moments, moved)})
  return treedef.unflatten(out_p), _with_states(state, new)
