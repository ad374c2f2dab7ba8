"""How many bytes does an optimizer keep? Exact, from ``jax.eval_shape`` (no allocation).

    >>> report = optix.tools.state_memory(optix.adamw(1e-3), params)
    >>> report.bytes_per_param
    8.0

From the command line, a table for a named model size (a LLaMA-shaped decoder;
params, grads, Adam's m and v in each precision, then the measured state of
each memory-saving optimizer)::

    python -m optix.tools.memory --model 7B
"""

import argparse
import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from optix import _base


@dataclasses.dataclass(frozen=True)
class StateMemory:
  """What :func:`state_memory` measured; ``str()`` prints it as a table.

  Args:
    per_leaf: key path of each state leaf -> its bytes.
    total_bytes: bytes of the whole optimizer state.
    num_params: elements in the params tree (``bytes_per_param`` divides by it).
    param_bytes: bytes of the params themselves.
  """
  per_leaf: dict           # key path of each state leaf -> bytes
  total_bytes: int         # bytes of the whole optimizer state
  num_params: int          # elements in the params tree
  param_bytes: int         # bytes of the params themselves

  @property
  def bytes_per_param(self) -> float:
    return self.total_bytes / max(self.num_params, 1)

  def __str__(self):
    width = max([len(k) for k in self.per_leaf] + [10])
    lines = [f"{k:<{width}}  {v:>14,d}" for k, v in self.per_leaf.items()]
    lines.append(f"{'total':<{width}}  {self.total_bytes:>14,d} bytes "
                 f"({self.bytes_per_param:.3f} bytes/param over {self.num_params:,d} params)")
    return "\n".join(lines)


def _nbytes(x) -> int:
  # Typed PRNG keys (noisy_sgd's state) are not numpy dtypes; their dtype knows its own size.
  return int(math.prod(x.shape)) * x.dtype.itemsize


def state_memory(tx: _base.GradientTransformationBase, params: Any) -> StateMemory:
  """Exact bytes of ``tx``'s state for ``params``, per leaf and in total.

  ``params`` may be arrays or ``jax.ShapeDtypeStruct`` leaves: only shapes and
  dtypes are used (``tx.init`` runs under ``jax.eval_shape``), so a 70B-shaped
  tree costs nothing. Counts every array in the state: step counters, scales,
  placeholders.

  Args:
    tx: the transform (any ``GradientTransformation``).
    params: a pytree of arrays or ``jax.ShapeDtypeStruct`` leaves.

  Returns:
    A :class:`StateMemory` (``bytes_per_param`` = total / params).
  """
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(jnp.shape(p), jnp.result_type(p)),
                          params)
  state = jax.eval_shape(tx.init, abstract)
  per_leaf = {jax.tree_util.keystr(path): _nbytes(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
  leaves = jax.tree.leaves(abstract)
  return StateMemory(per_leaf, sum(per_leaf.values()),
                     sum(int(math.prod(p.shape)) for p in leaves),
                     sum(_nbytes(p) for p in leaves))


# Decoder-only transformers shaped like GPT-2 / LLaMA: (layers, width, ffn, vocab, gated MLP).
MODELS = {
    "125M": (12, 768, 3072, 50304, False),
    "350M": (24, 1024, 4096, 50304, False),
    "1.3B": (24, 2048, 8192, 50304, False),
    "7B": (32, 4096, 11008, 32000, True),
    "13B": (40, 5120, 13824, 32000, True),
    "70B": (80, 8192, 28672, 32000, True),  # without grouped-query attention: ~78B
}


def model_shapes(name: str, dtype=jnp.bfloat16) -> dict:
  """A ``ShapeDtypeStruct`` tree of a named model size (see ``MODELS``); allocates nothing.

  Args:
    name: one of ``"125M"``, ``"350M"``, ``"1.3B"``, ``"7B"``, ``"13B"``,
      ``"70B"`` (GPT-2 / LLaMA-shaped decoders).
    dtype: the params' dtype; bfloat16 (how such models train).

  Returns:
    A dict tree (``embed``, ``layers``, ``final_norm``, ``lm_head``) of
    ``jax.ShapeDtypeStruct`` leaves.

  Raises:
    ValueError: if ``name`` is not one of these.
  """
  if name not in MODELS:
    raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
  layers, d, ffn, vocab, gated = MODELS[name]
  s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
  mlp = {"up": s(d, ffn), "down": s(ffn, d)}
  if gated:
    mlp["gate"] = s(d, ffn)
  layer = {"attn": {k: s(d, d) for k in ("q", "k", "v", "o")}, "mlp": mlp,
           "norm1": s(d), "norm2": s(d)}
  return {"embed": s(vocab, d), "layers": [dict(layer) for _ in range(layers)],
          "final_norm": s(d), "lm_head": s(vocab, d)}


def _default_optimizers():
  import optix  # the public aliases (a late import: optix imports this package)
  return {"adamw": optix.adamw(1e-3), "lion": optix.lion(1e-4),
          "adafactor": optix.adafactor(), "adam8bit": optix.adam8bit(1e-3)}


def memory_table(model: Any = "7B", optimizers: dict = None) -> str:
  """A text table of training memory for a named model size (or a params tree).

  First the four big buffers (params, grads, Adam's m and v) at 4, 2 and 1
  byte(s) per element (8-bit: plus one float32 absmax per 256 values); then the
  state of each optimizer in ``optimizers`` (default: adamw, lion, adafactor,
  adam8bit) measured with :func:`state_memory`, and the total with bf16
  params and grads. GB are 10⁹ bytes.

  Args:
    model: a name as in :func:`model_shapes` (default ``"7B"``) or a params
      tree (arrays or ``ShapeDtypeStruct`` leaves).
    optimizers: a dict label -> transform; None (default): adamw, lion,
      adafactor and adam8bit.

  Returns:
    The table as a string.
  """
  tree = model_shapes(model) if isinstance(model, str) else model
  n = sum(int(math.prod(jnp.shape(p))) for p in jax.tree.leaves(tree))
  gb = lambda b: f"{b / 1e9:9.2f} GB"  # noqa: E731
  name = model if isinstance(model, str) else "params tree"
  lines = [f"{name}: {n:,d} parameters", "",
           f"{'buffer':<16}{'fp32':>12}{'bf16':>12}{'8-bit':>12}"]
  for buf, has_8bit in (("params", False), ("grads", False), ("Adam m", True), ("Adam v", True)):
    eight = gb(n * (1 + 4 / 256)) if has_8bit else f"{'-':>12}"
    lines.append(f"{buf:<16}{gb(4 * n):>12}{gb(2 * n):>12}{eight:>12}")
  lines += ["", f"{'optimizer':<16}{'state':>12}{'bytes/param':>12}{'+ bf16 p, g':>12}"]
  for opt_name, tx in (optimizers or _default_optimizers()).items():
    report = state_memory(tx, tree)
    lines.append(f"{opt_name:<16}{gb(report.total_bytes):>12}{report.bytes_per_param:>12.3f}"
                 f"{gb(report.total_bytes + 4 * n):>12}")
  return "\n".join(lines)


def main(argv: Sequence[str] = None) -> None:
  """The command line: prints :func:`memory_table` for ``--model`` (default 7B).

  Args:
    argv: the arguments (without the program name); None: ``sys.argv[1:]``.

  Returns:
    None.
  """
  parser = argparse.ArgumentParser(
      prog="python -m optix.tools.memory",
      description="Training memory of a named model size: params, grads, optimizer state.")
  parser.add_argument("--model", default="7B", choices=sorted(MODELS))
  args = parser.parse_args(argv)
  print(memory_table(args.model))


if __name__ == "__main__":
  main()
