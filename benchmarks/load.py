"""Load: compile time and peak memory of one optimizer step on big trees, optix vs optax.

  python benchmarks/load.py                 # 10,000 leaves and ~200M params, 5 optimizers
  python benchmarks/load.py --quick         # 2,000 leaves and ~20M params

Trees: LEAVES small arrays of mixed shapes (a model with many tiny parameters: norms,
biases, per-head tensors), and a ~200M-parameter transformer-like tree (24 blocks of
4 matrices 1024x2048 plus norms and a 32000x1024 embedding). Only the step is compiled
(``jit(update + apply_updates).lower(abstract).compile()`` on ``ShapeDtypeStruct``s; the
optix rows step with ``optix.apply_step`` as ``optix.train_step`` does, so on a CPU AdamW,
Lion and SGD-momentum compile to ``optix.fused``'s single-pass calls; params and state
donated): nothing of size 200M is allocated. Columns: compile seconds
(lower + compile, wall clock, one run: a shared machine adds noise), fusions in the compiled
step (kernels), optimized HLO size in kB, peak GiB of the step from
``compiled.memory_analysis()`` (arguments + non-aliased outputs + temporaries: params, grads,
state and scratch), the state size in GiB, and the peak RSS of the process that compiled it
(each step is compiled in a fresh process: XLA keeps compile memory between compiles).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import common  # noqa: E402
import optix  # noqa: E402

GIB = 2.0 ** 30


def many_leaves(n: int, seed: int = 0):
  """n leaves of sizes 1..4096 (shapes like biases, norm scales, small kernels)."""
  rng = np.random.default_rng(seed)
  shapes = [(), (8,), (64,), (16, 16), (3, 3, 4, 8), (256,), (32, 128), (4096,)]
  picks = rng.integers(0, len(shapes), n)
  return {f"layer_{i:05d}": jax.ShapeDtypeStruct(shapes[k], jnp.float32)
          for i, k in enumerate(picks)}


def big_model(blocks: int = 24, d: int = 1024, ff: int = 2048, vocab: int = 32000):
  """~200M params (blocks=24, d=1024, ff=2048, vocab=32000: 234M)."""
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  tree = {"embed": f32(vocab, d), "final_norm": f32(d)}
  for b in range(blocks):
    tree[f"block_{b:02d}"] = {"qkv": f32(d, ff), "out": f32(ff, d), "up": f32(d, ff),
                              "down": f32(ff, d), "norm1": f32(d), "norm2": f32(d)}
  return tree


OPTIMIZERS = {
    "adamw": (lambda m: m.adamw(1e-3, weight_decay=0.1)),
    "adam": (lambda m: m.adam(1e-3)),
    "lion": (lambda m: m.lion(1e-4, weight_decay=0.1)),
    "sgd_momentum": (lambda m: m.sgd(1e-2, momentum=0.9)),
    "adafactor": (lambda m: m.adafactor(1e-3)),
}


def measure(tx, abstract_params, one_pass=False):
  """Compiles one donated step (``one_pass``: ``optix.apply_step``, as
  ``optix.train_step`` runs it); returns a dict of the numbers."""
  state = jax.eval_shape(tx.init, abstract_params)

  def step(params, state, grads):  # without one_pass: exactly update + apply_updates
    return optix.apply_step(tx, grads, state, params, fused=None if one_pass else False)

  t = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(abstract_params, state,
                                                         abstract_params).compile()
  seconds = time.perf_counter() - t
  hlo = compiled.as_text()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return {"compile_s": seconds, "fusions": common.fusion_count(hlo), "hlo_kb": len(hlo) / 1e3,
          "peak_gib": common.peak_mb(compiled) * 1e6 / GIB, "state_gib": state_bytes / GIB}


def _tree(spec: str):
  """"leaves:N" (many_leaves(N)), "transformer:quick" or "transformer:full"."""
  kind, arg = spec.split(":")
  if kind == "leaves":
    return many_leaves(int(arg))
  return big_model(blocks=2, vocab=4000) if arg == "quick" else big_model()


def _transform(name: str, lib: str):
  tx = OPTIMIZERS[name](optax if lib == "optax" else optix)
  return optix.packed(tx) if lib == "optix packed" else tx


def measure_apart(spec: str, name: str, lib: str) -> dict:
  """``measure`` in a fresh process: XLA's compile memory is not returned between
  compiles, and a few 10,000-leaf compiles in one process exceed 24 GiB."""
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", spec, name, lib],
                       capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result["rss_gib"] = result.pop("rss_kib") / 2 ** 20
  return result


def rows_for(tree_name, spec, optimizers, packed):
  n_params = sum(x.size for x in jax.tree.leaves(_tree(spec)))
  rows = []
  for name in optimizers:
    libs = ["optax", "optix"]
    if packed and name != "adafactor":  # adafactor is not elementwise: packed refuses it
      libs.append("optix packed")
    for lib in libs:
      try:
        r = measure_apart(spec, name, lib)
      except subprocess.CalledProcessError as err:  # e.g. SIGKILL by the OOM killer
        why = f"died ({err.returncode})" + (" out of memory?" if err.returncode == -9 else "")
        rows.append([tree_name, f"{n_params / 1e6:.1f}M", name, lib, why] + ["-"] * 5)
        print(" | ".join(map(str, rows[-1])), flush=True)
        continue
      rows.append([tree_name, f"{n_params / 1e6:.1f}M", name, lib, f"{r['compile_s']:.2f}",
                   r["fusions"], f"{r['hlo_kb']:.0f}", f"{r['peak_gib']:.3f}",
                   f"{r['state_gib']:.3f}", f"{r['rss_gib']:.2f}"])
      print(" | ".join(map(str, rows[-1])), flush=True)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="2,000 leaves and ~20M params")
  ap.add_argument("--leaves", type=int, default=None)
  ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  ap.add_argument("--skip-big", action="store_true")
  ap.add_argument("--one", nargs=3, metavar=("TREE", "OPTIMIZER", "LIBRARY"),
                  help=argparse.SUPPRESS)  # one measurement, printed as JSON (measure_apart)
  args = ap.parse_args()
  if args.one:
    spec, name, lib = args.one
    result = measure(_transform(name, lib), _tree(spec), one_pass=lib != "optax")
    result["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))
    return
  leaves = args.leaves or (2000 if args.quick else 10_000)
  optimizers = args.optimizers.split(",")
  print(common.machine())
  rows = rows_for(f"{leaves} leaves", f"leaves:{leaves}", optimizers, packed=True)
  if not args.skip_big:
    rows += rows_for("transformer", "transformer:" + ("quick" if args.quick else "full"),
                     optimizers, packed=False)
  print(common.table("Load: one compiled step (params + state donated)", rows,
                     ["tree", "params", "optimizer", "library", "compile s", "fusions",
                      "HLO kB", "peak GiB", "state GiB", "compile RSS GiB"]))


if __name__ == "__main__":
  main()
