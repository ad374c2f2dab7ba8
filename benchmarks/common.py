"""Shared timing harness for the benchmark scripts.

Every library is timed in one process, on the same trees: compile once (timed),
warm up, then ``reps`` rounds in which each candidate runs once in turn
(interleaved, so load spikes hit all of them), buffers donated. Reported: the
minimum (the best estimate of the cost on a shared machine) and the median.
"""

import dataclasses
import os
import re
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Candidate:
  """A step ``fn(*args) -> args`` (same structure: it is fed its own output)."""
  name: str
  fn: Callable
  make_args: Callable[[], tuple]
  donate: tuple = (0, 1)
  compiled: Any = None
  args: Any = None
  compile_s: float = float("nan")
  fusions: int = -1
  times: list = dataclasses.field(default_factory=list)


def machine() -> str:
  load = os.getloadavg()
  return (f"{jax.devices()[0].device_kind} x{jax.device_count()} ({os.cpu_count()} CPUs), "
          f"jax {jax.__version__}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def fusion_count(compiled) -> int:
  """Number of fusion computations in the optimized HLO (kernels, roughly)."""
  text = compiled.as_text()
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = \S+ fusion\(", text, flags=re.M))


def prepare(c: Candidate):
  args = c.make_args()
  t = time.perf_counter()
  c.compiled = jax.jit(c.fn, donate_argnums=c.donate).lower(*args).compile()
  c.compile_s = time.perf_counter() - t
  c.fusions = fusion_count(c.compiled)
  c.args = args


def run(candidates: Sequence[Candidate], reps: int = 15, warmup: int = 3):
  """Compiles, warms up and times the candidates interleaved; fills ``times``."""
  for c in candidates:
    prepare(c)
    for _ in range(warmup):
      c.args = c.compiled(*c.args)
    jax.block_until_ready(c.args)
  for _ in range(reps):
    for c in candidates:
      t = time.perf_counter()
      c.args = c.compiled(*c.args)
      jax.block_until_ready(c.args)
      c.times.append(time.perf_counter() - t)
  for c in candidates:  # free the buffers before the next table
    c.args = c.compiled = None
  return candidates


def roofline_adam_like(n: int, dtype=jnp.float32, reads: int = 4, writes: int = 3) -> Candidate:
  """The floor: one flat buffer of ``n`` elements, ``reads`` arrays read and
  ``writes`` written in one fused kernel (AdamW: reads p, g, m, v; writes p, m, v;
  SGD-momentum and Lion: reads p, g, m; writes p, m). The gradient is an input
  that is read but not written, as in a real step."""
  assert writes <= reads

  def fn(*xs):
    g = xs[1]
    s = sum(xs[i] for i in range(reads)) * 0.5
    outs = [xs[0] + 1e-3 * s] + [0.9 * xs[i] + 1e-3 * s for i in range(2, writes + 1)]
    return (outs[0], g) + tuple(outs[1:]) + tuple(xs[writes + 1:reads])

  def make():
    return tuple(jnp.full((n,), 0.01 * (i + 1), dtype) for i in range(reads))

  donate = (0,) + tuple(range(2, writes + 1))
  return Candidate("roofline", fn, make, donate=donate)


def table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
  cells = [[str(h) for h in header]] + [[_fmt(x) for x in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = [f"\n{title}", "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  lines += ["| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |" for r in cells[1:]]
  return "\n".join(lines)


def _fmt(x):
  if isinstance(x, float):
    return "nan" if np.isnan(x) else (f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}")
  return str(x)


def ms(c: Candidate):
  return 1e3 * min(c.times), 1e3 * float(np.median(c.times))
