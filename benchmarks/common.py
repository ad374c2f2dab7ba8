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
  """A step ``fn(*args) -> args[:len(args) - n_const]``, fed its own output; or,
  with ``eager``, a PyTorch optimizer (``make_args() -> (optimizer, params)``, the
  gradients set on the params) stepped in place by ``optimizer.step()``, as
  PyTorch users run it, timed in the same interleaved rounds.

  The last ``n_const`` arguments (gradients) are read only and never returned
  (returning an input would copy it); ``donate`` are the donated argument
  numbers (params and state).
  """
  name: str
  fn: Callable
  make_args: Callable[[], tuple]
  donate: tuple = (0, 1)
  n_const: int = 0
  compiler_options: Any = None   # XLA options for this candidate's jit (None: defaults)
  eager: bool = False            # make_args() -> (torch optimizer, params): step() in place
  compiled: Any = None
  args: Any = None
  compile_s: float = float("nan")
  fusions: int = -1
  peak_mb: float = float("nan")
  hlo: str = ""
  times: list = dataclasses.field(default_factory=list)


def machine() -> str:
  load = os.getloadavg()
  return (f"{jax.devices()[0].device_kind} x{jax.device_count()} ({os.cpu_count()} CPUs), "
          f"jax {jax.__version__}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def fusion_count(compiled) -> int:
  """Number of fusion instructions in the optimized HLO (kernels, roughly)."""
  text = compiled if isinstance(compiled, str) else compiled.as_text()
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = \S+ fusion\(", text, flags=re.M))


def copy_count(compiled) -> int:
  """Number of top-level copies (each an extra pass over an array)."""
  text = compiled if isinstance(compiled, str) else compiled.as_text()
  return len(re.findall(r"^\s*(?:ROOT\s+)?\S+ = \S+ copy\(", text, flags=re.M))


def peak_mb(compiled) -> float:
  """Live bytes of the step from ``memory_analysis()``: arguments + outputs not
  aliased to (donated) arguments + temporaries, in MB."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes) / 1e6


def torch_threads():
  """PyTorch, with as many threads as XLA's CPU backend uses here, or None.

  Its OpenMP threads are made to sleep, not spin, between parallel regions
  (``OMP_WAIT_POLICY=PASSIVE``, read when torch loads): spinning, they take the
  cores from the candidates timed after a PyTorch step in the same round (seen
  here: the roofline kernel and the first JAX rows ~1.3x slower, the later ones
  not, which made ratios to the roofline meaningless)."""
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  try:
    import torch  # noqa: PLC0415  (optional: only where it is installed)
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  return torch


def prepare(c: Candidate):
  if c.eager:
    c.args = c.make_args()
    return
  args = c.make_args()
  t = time.perf_counter()
  c.compiled = jax.jit(c.fn, donate_argnums=c.donate,
                       compiler_options=c.compiler_options or None).lower(*args).compile()
  c.compile_s = time.perf_counter() - t
  c.hlo = c.compiled.as_text()
  c.fusions = fusion_count(c.hlo)
  c.peak_mb = peak_mb(c.compiled)
  c.args = args


def _step(c: Candidate):
  if c.eager:
    c.args[0].step()
    return
  out = c.compiled(*c.args)
  c.args = tuple(out) + tuple(c.args[len(c.args) - c.n_const:]) if c.n_const else out


def run(candidates: Sequence[Candidate], reps: int = 15, warmup: int = 3):
  """Compiles, warms up and times the candidates interleaved; fills ``times``."""
  for c in candidates:
    prepare(c)
    for _ in range(warmup):
      _step(c)
    _ready(c)
  for _ in range(reps):
    for c in candidates:
      t = time.perf_counter()
      _step(c)
      _ready(c)
      c.times.append(time.perf_counter() - t)
  for c in candidates:  # free the buffers before the next table
    c.args = c.compiled = None
  return candidates


def _ready(c: Candidate):
  if not c.eager:  # PyTorch's CPU steps are synchronous
    jax.block_until_ready(c.args)


def roofline_adam_like(n: int, dtype=jnp.float32, state: int = 3) -> Candidate:
  """The floor: the least memory traffic of an elementwise step, in one kernel.

  ``state`` arrays of ``n`` elements are read and written and one gradient of
  ``n`` is read (AdamW: state = p, m, v; SGD-momentum and Lion: p, m). They are
  stored interleaved as one ``(n, state)`` array so that the whole step is a
  single loop fusion that reads ``(state + 1) n`` and writes ``state n``
  elements once (XLA's CPU backend emits three separate arrays as three kernels,
  each re-reading the gradient). Donated; :func:`check_roofline` checks the HLO.
  """
  def fn(x, g):
    return (0.9 * x + 1e-3 * g[:, None],)

  def make():
    return jnp.full((n, state), 0.01, dtype), jnp.full((n,), 1e-3, dtype)

  return Candidate("roofline", fn, make, donate=(0,), n_const=1)


def check_roofline(c: Candidate):
  """Asserts the prepared roofline is one fusion, with no copies, that reads all
  its inputs and writes its output in place (donated)."""
  assert fusion_count(c.hlo) == 1 and copy_count(c.hlo) == 0, c.hlo
  entry = c.hlo[c.hlo.index("ENTRY"):]
  assert re.search(r"fusion\(\S+, \S+\)", entry), entry  # reads state and gradient
  assert "input_output_alias" in c.hlo or "may-alias" in c.hlo or "must-alias" in c.hlo, \
      c.hlo[:400]


def roofline_bytes(n: int, state: int = 3, itemsize: int = 4) -> int:
  return (2 * state + 1) * n * itemsize


def numpy_bandwidth(n: int = 24_000_000, reps: int = 10) -> dict:
  """GB/s of numpy's memcpy (``copyto``: 2 n floats moved) and a two-pass STREAM
  triad ``a = b + s c`` (``multiply`` into a, then ``add``: 5 n floats moved), min
  of ``reps``; the machine's practical memory bandwidth for one thread."""
  a, b, c = (np.full(n, 1.0, np.float32) for _ in range(3))
  out = {}
  for name, moved, f in [
      ("numpy memcpy", 2, lambda: np.copyto(a, b)),
      ("numpy triad", 5, lambda: (np.multiply(c, 3.0, out=a), np.add(a, b, out=a)))]:
    f()
    best = min(_timed(f) for _ in range(reps))
    out[name] = moved * n * 4 / best / 1e9
  return out


def _timed(f):
  t = time.perf_counter()
  f()
  return time.perf_counter() - t


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
