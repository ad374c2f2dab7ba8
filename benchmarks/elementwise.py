"""Elementwise optimizers: optix, optix packed, optax and the memory roofline.

  python -m benchmarks.elementwise --quick    # a fast smoke run (~1-2 min)
  python -m benchmarks.elementwise            # every optimizer on every tree + scaling (~10 min)

Columns: ms (min / median of interleaved donated steps), ratio to the roofline
(one kernel with the least memory traffic of the step on one flat buffer of the
same total size: see ``common.roofline_adam_like``), effective GB/s (the
roofline's bytes over the step time), compile seconds, fusions in the compiled
step (kernels: regressions show here) and the step's live memory from
``compiled.memory_analysis()``. "optix" is the step as ``optix.train_step`` runs
it, ``optix.apply_step``: on a CPU, AdamW/Adam/Lion/SGD-momentum in one pass
(``optix.fused``, a C++ kernel over all leaves); "optix update" is the chain's
``update`` then ``apply_updates``, as ``flax.nnx.Optimizer`` runs it (XLA's
kernels: m, v and p separately). "optix packed" is the drop-in
``optix.packed(tx)`` on an ordinary tree: its state lives packed (leaves up to
65,536 elements in a few buffers), and the one-pass step reads and writes each
leaf's state in its buffer (nothing is packed or unpacked; the chain's path
packs the gradients and params and splits the updates); "optix packed 2^20"
packs the state of leaves up to 2^20 elements; "optix packed params" keeps the
params packed between steps (``optix.pack``), so gradients arrive packed, as in
``optix.train_step`` with packed params. "dispatch floor" computes nothing: it
is what JAX's dispatch of the step's arrays costs. Gradients are read-only inputs; params
and state are donated. The optix rows are compiled as ``optix.train_step``
compiles them, with ``optix.training.compiler_options()`` (on a CPU: region-based
copy insertion, so a donated buffer read by one kernel and overwritten by
another is not copied first); "optax" is ``jax.jit`` with XLA's defaults, as an
optax user runs it, and "optax+options" is optax with the same options (an
XLA setting, not optix's math: it shows how much of a gap the option closes).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import common  # noqa: E402
import optix  # noqa: E402

OPTIMIZERS = {  # name: (optix, optax, state arrays incl. params for the roofline)
    "adamw": (lambda: optix.adamw(1e-3, weight_decay=1e-4),
              lambda: optax.adamw(1e-3, weight_decay=1e-4), 3),
    "adam": (lambda: optix.adam(1e-3), lambda: optax.adam(1e-3), 3),
    "lion": (lambda: optix.lion(1e-4, weight_decay=1e-3),
             lambda: optax.lion(1e-4, weight_decay=1e-3), 2),
    "sgd_momentum": (lambda: optix.sgd(1e-2, momentum=0.9),
                     lambda: optax.sgd(1e-2, momentum=0.9), 2),
}
LIBRARIES = ("optax", "optax+options", "optix update", "optix", "optix packed",
             "optix packed 2^20", "optix packed params", "dispatch floor")
SCALING = ("optax", "optix", "optix packed", "optix packed params")


def uniform_tree(n_leaves, total):
  size = total // n_leaves
  return lambda: {f"p{i:05d}": jnp.full((size,), 0.01, jnp.float32) for i in range(n_leaves)}


def transformer_tree(layers=6, dim=256, heads=8, vocab=4096):
  """The param tree of a real Flax NNX decoder (embeddings, attention, MLP, norms):
  101 leaves, 6.8M params, 14 leaves above 65,536 elements (kept unpacked)."""
  from flax import nnx

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.ln1, self.ln2 = nnx.LayerNorm(dim, rngs=rngs), nnx.LayerNorm(dim, rngs=rngs)
      self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
      self.up, self.down = nnx.Linear(dim, 4 * dim, rngs=rngs), nnx.Linear(4 * dim, dim, rngs=rngs)

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(vocab, dim, rngs=rngs)
      self.blocks = nnx.List([Block(rngs) for _ in range(layers)]) if hasattr(nnx, "List") \
          else [Block(rngs) for _ in range(layers)]
      self.ln = nnx.LayerNorm(dim, rngs=rngs)
      self.head = nnx.Linear(dim, vocab, rngs=rngs)

  def make():
    state = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    return nnx.to_pure_dict(state)
  return make


TREES = {
    "1x24M": uniform_tree(1, 24_000_000),
    "200x120k": uniform_tree(200, 24_000_000),
    "2000x2k": uniform_tree(2000, 4_000_000),
    "nnx_transformer": transformer_tree(),
}


def candidates(opt, make_tree, libraries=LIBRARIES, torch_rows=False):
  make_optix, make_optax, state = OPTIMIZERS[opt]
  tree = make_tree()
  n = sum(x.size for x in jax.tree.leaves(tree))
  leaves = len(jax.tree.leaves(tree))
  del tree

  def step_for(tx, one_pass):
    # one_pass: as optix.train_step runs it (the single-pass kernel on a CPU); else
    # exactly tx.update + apply_updates
    return lambda p, s, g: optix.apply_step(tx, g, s, p, fused=None if one_pass else False)

  def args_for(tx, packed_params=False):
    def make():
      p = make_tree()
      g = jax.tree.map(lambda x: jnp.full_like(x, 1e-3), p)
      if packed_params:
        p, g = optix.pack(p), optix.pack(g)
      return p, tx.init(p), g
    return make

  out = [common.roofline_adam_like(n, state=state)]
  options = optix.training.compiler_options()
  txs = {"optax": (make_optax, False, None), "optax+options": (make_optax, False, options),
         "optix update": (make_optix, False, options),
         "optix": (make_optix, False, options),
         "optix packed": (lambda: optix.packed(make_optix()), False, options),
         "optix packed 2^20": (lambda: optix.packed(make_optix(), max_leaf_size=1 << 20), False,
                               options),
         "optix packed params": (lambda: optix.packed(make_optix()), True, options)}
  for name in libraries:
    if name == "dispatch floor":
      out.append(dispatch_floor(args_for(make_optix())))
      continue
    make_tx, packed_params, opts = txs[name]
    tx = make_tx()
    one_pass = name.startswith("optix") and name != "optix update"
    out.append(common.Candidate(name, step_for(tx, one_pass), args_for(tx, packed_params),
                                n_const=1, compiler_options=opts))
  if torch_rows:
    out += torch_candidates(opt, make_tree)
  return out, n, leaves


def dispatch_floor(make_args):
  """A step that computes nothing on the same tree: params and state (optix's
  unpacked optimizer's) donated and returned, gradients read. Its time is what JAX's
  dispatch of the step's arrays costs (~2-3 us an array here), which any jitted
  step on this tree pays on top of its memory traffic; the packed rows pass
  fewer arrays."""
  return common.Candidate("dispatch floor", lambda p, s, g: (p, s), make_args, n_const=1)


# What PyTorch users pick instead: torch.optim's fused (one multi-tensor kernel set)
# and foreach (horizontal ops over the tensor list) implementations, same
# hyperparameters; PyTorch has no Lion.
TORCH = {
    "adamw": lambda t, ps, **k: t.optim.AdamW(ps, lr=1e-3, weight_decay=1e-4, **k),
    "adam": lambda t, ps, **k: t.optim.Adam(ps, lr=1e-3, **k),
    "sgd_momentum": lambda t, ps, **k: t.optim.SGD(ps, lr=1e-2, momentum=0.9, **k),
}


def torch_candidates(opt, make_tree):
  torch = common.torch_threads()
  if torch is None or opt not in TORCH:
    return []

  def make(**kind):
    def build():
      sizes = [x.size for x in jax.tree.leaves(make_tree())]
      ps = [torch.full((s,), 0.01, requires_grad=True) for s in sizes]
      for p in ps:
        p.grad = torch.full_like(p, 1e-3)
      optimizer = TORCH[opt](torch, ps, **kind)
      optimizer.step()  # builds the state
      return optimizer, ps
    return build
  return [common.Candidate("torch fused", None, make(fused=True), eager=True),
          common.Candidate("torch foreach", None, make(foreach=True), eager=True)]


def bench(opt, tree_name, reps, warmup, libraries=LIBRARIES):
  cs, n, leaves = candidates(opt, TREES[tree_name], libraries, torch_rows=True)
  common.run(cs, reps=reps, warmup=warmup)
  roof = min(cs[0].times)
  nbytes = common.roofline_bytes(n, OPTIMIZERS[opt][2])
  rows = []
  for c in cs:
    lo, med = common.ms(c)
    rows.append([c.name, lo, med, min(c.times) / roof, nbytes / min(c.times) / 1e9,
                 c.compile_s, c.fusions, c.peak_mb])
  print(common.table(f"{opt}, {tree_name} ({leaves} leaves, {n / 1e6:.1f}M params), "
                     f"load {os.getloadavg()[0]:.1f}", rows,
                     ["library", "ms min", "ms median", "x roofline", "GB/s", "compile s",
                      "fusions", "live MB"]), flush=True)
  return {c.name: min(c.times) for c in cs}


def bandwidth(sizes, reps, warmup):
  """The roofline kernel's time must grow linearly with size; GB/s vs numpy's."""
  rows = []
  for n in sizes:
    c = common.roofline_adam_like(n)
    common.run([c], reps=reps, warmup=warmup)
    common.check_roofline(c)  # one fusion, no copy, donated: nothing elided
    t = min(c.times)
    rows.append([f"{n / 1e6:g}M", 1e3 * t, 1e9 * t / n, common.roofline_bytes(n) / t / 1e9])
  bw = common.numpy_bandwidth(sizes[-1], reps)
  rows += [[f"{name}, {sizes[-1] / 1e6:g}M", float("nan"), float("nan"), gbs]
           for name, gbs in bw.items()]
  print(common.table("Roofline kernel (AdamW traffic: reads p, g, m, v; writes p, m, v; one "
                     "fusion, donated) vs numpy", rows, ["size", "ms min", "ns/param", "GB/s"]),
        flush=True)


def scaling(reps, warmup, quick):
  rows = []
  totals = (1_000_000, 10_000_000) if quick else (1_000_000, 10_000_000, 100_000_000)
  for leaves in (1, 200):
    for n in totals:
      cs, _, _ = candidates("adamw", uniform_tree(leaves, n),
                            ("optax", "optix", "optix packed params"))
      common.run(cs, reps=reps, warmup=warmup)
      rows.append([f"{leaves} x {n // leaves:,}"] + [1e3 * min(c.times) for c in cs])
  print(common.table("AdamW step (ms, min) vs parameter count", rows,
                     ["tree", "roofline", "optax", "optix", "optix packed params"]), flush=True)
  rows = []
  counts = (1, 100, 1000) if quick else (1, 10, 100, 1000, 10_000)
  for leaves in counts:
    libs = ("optax", "optix packed params") if leaves > 2000 else SCALING
    cs, _, _ = candidates("adamw", uniform_tree(leaves, 4_000_000), libs)
    common.run(cs, reps=reps, warmup=warmup)
    t = {c.name: (1e3 * min(c.times), c.compile_s) for c in cs}
    nan = (float("nan"),) * 2
    rows.append([f"{leaves} leaves"] + [x for k in ("roofline",) + SCALING
                                        for x in t.get(k, nan)])
  print(common.table("AdamW step vs leaf count at 4M params: ms (min) and compile s (10,000 "
                     "leaves: optax and packed params only)", rows,
                     ["tree"] + [f"{k} {u}" for k in ("roofline",) + SCALING
                                 for u in ("ms", "compile")]), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="few reps, AdamW on every tree plus the other optimizers on "
                           "2000 leaves, short scaling sweeps")
  parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 15; 5 quick)")
  parser.add_argument("--trees", default=",".join(TREES), help="comma-separated tree names")
  parser.add_argument("--optimizers", default=None, help="comma-separated (default: all)")
  parser.add_argument("--no-scaling", action="store_true", help="skip the scaling sweeps")
  args = parser.parse_args()
  reps = args.reps or (5 if args.quick else 15)
  warmup = 1 if args.quick else 3
  print("machine:", common.machine())
  torch = common.torch_threads()
  print(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads): fused and foreach "
        "rows" if torch else "PyTorch not installed: no torch rows (pip install torch)")
  print("optix rows compiled with", optix.training.compiler_options() or "XLA's defaults")
  bandwidth((1_000_000, 4_000_000, 24_000_000), reps, warmup)
  for tree_name in args.trees.split(","):
    opts = (args.optimizers.split(",") if args.optimizers else
            ["adamw"] if args.quick and tree_name != "2000x2k" else list(OPTIMIZERS))
    for opt in opts:  # quick: the drop-in's compile (~1 min on 2000 leaves) for AdamW only
      libs = LIBRARIES if opt == "adamw" or not args.quick else (
          "optax", "optix", "optix packed params")
      bench(opt, tree_name, reps, warmup, libs)
  if not args.no_scaling:
    scaling(reps, warmup, args.quick)
  print("\nmachine at the end:", common.machine())


if __name__ == "__main__":
  main()
