"""The training step done right: one jitted function, params and state donated.

An optimizer step reads params, gradients and state and writes params and
state: it is memory-bound. Without donation XLA must keep the old params and
state alive while it writes the new ones, so every step allocates and copies
them (optax's AdamW on one 24M-parameter leaf is ~8x slower on a CPU without
donation). ``donate_argnums`` lets XLA update them in place. The pattern::

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    params, opt_state = optix.apply_step(tx, grads, opt_state, params)
    return params, opt_state, loss

  params, opt_state, loss = step(params, opt_state, batch)   # rebind: the old
                                                             # buffers are gone

``optix.apply_step`` is ``tx.update`` followed by ``apply_updates``, done in
one pass over memory for the chains :mod:`optix.fused` recognizes (AdamW, Adam,
Lion, SGD with momentum, and any chain of their shape, on a CPU), with packed
state where ``tx`` is ``optix.packed(...)``; for any other ``tx`` it is exactly
those two calls.

:func:`train_step` builds exactly this, compiled with :func:`compiler_options`
(on a CPU: XLA's region-based copy insertion, which lets a donated buffer be
read by one kernel and overwritten by another without a defensive copy, see
``benchmarks/elementwise.py``). Pass the same options to your own jit::

  jax.jit(step, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())

After a call the arrays passed as
``params`` and ``opt_state`` are deleted (donated); always rebind the names to
the returned values, and do not keep other references to them.

With params packed (:func:`optix.pack`), ``loss_fn`` still receives the ordinary
tree: the step unpacks it inside the differentiated function, so gradients come
out packed and the optimizer runs on a few buffers.
"""

from typing import Any, Callable, Dict, Optional

import jax

from optix import _base, packing
from optix.fused import apply_step


# XLA's CPU copy insertion by default copies a donated buffer that one kernel
# reads while another kernel overwrites it in place (Lion: the new params read
# the old momentum, which the new momentum replaces): a full extra pass and a
# fresh buffer every step. Its region-based analysis orders the two kernels
# instead. Same HLO semantics, bit-identical results (tests/test_packing.py).
_CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


def compiler_options(backend: str = None) -> Dict[str, Any]:
  """The XLA options optix compiles training steps with, for ``backend``
  (default: JAX's default backend): on a CPU, region-based copy insertion (no
  defensive copies of donated state); elsewhere none. Pass them as
  ``jax.jit(..., compiler_options=optix.training.compiler_options())``."""
  backend = backend or jax.default_backend()
  return dict(_CPU_OPTIONS) if backend == "cpu" else {}


def train_step(loss_fn: Callable[..., Any], tx: _base.GradientTransformationBase, *,
               has_aux: bool = False, donate: bool = True, jit: bool = True,
               fused: Optional[bool] = None) -> Callable:
  """A training step ``(params, opt_state, *batch) -> (params, opt_state, loss[, aux])``.

  Args:
    loss_fn: ``loss_fn(params, *batch) -> loss`` (or ``(loss, aux)`` with
      ``has_aux``); ``params`` is always the ordinary tree, even when the step
      is given packed params.
    tx: the optimizer.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns aux last.
    donate: donate params and state (``donate_argnums=(0, 1)``). Keep True
      unless the caller must keep the old params (e.g. an EMA of weights held
      outside the step).  The jitted step also uses :func:`compiler_options`.
    jit: return the jitted step (False: the plain function, to be composed
      into a larger jitted function, e.g. under ``lax.scan``).
    fused: run the optimizer's single-pass kernel (:mod:`optix.fused`: AdamW,
      Adam, Lion, SGD with momentum, chains of their shape): None (default) where it applies -- one
      CPU device, buffers donated --, True always (e.g. inside ``shard_map``),
      False never. Without donation the kernel would work on copies of params
      and state (XLA copies an operand a custom call overwrites): 13 passes over
      memory instead of the chain's 10, so None then means False.
  """
  if not callable(loss_fn):
    raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
  if fused is None and not (donate and jit):
    fused = False

  def objective(params, *batch):
    return loss_fn(packing.unpack(params) if isinstance(params, packing.Packed) else params,
                   *batch)

  def step(params, opt_state, *batch):
    out, grads = jax.value_and_grad(objective, has_aux=has_aux)(params, *batch)
    params, opt_state = apply_step(tx, grads, opt_state, params, fused=fused)
    if has_aux:
      loss, aux = out
      return params, opt_state, loss, aux
    return params, opt_state, out

  if not jit:
    return step
  return jax.jit(step, donate_argnums=(0, 1) if donate else (),
                 compiler_options=compiler_options() or None)
