"""Elementwise optimizers: optix, optix packed, optax and the memory roofline.

  python benchmarks/elementwise.py            # AdamW on every tree, others on 2000 leaves
  python benchmarks/elementwise.py --full     # every optimizer on every tree
  python benchmarks/elementwise.py --scaling  # step time vs parameter and leaf count

Columns: ms (min / median of interleaved donated steps), ratio to the roofline
(one flat buffer with the same memory traffic), compile seconds, fusions in the
compiled step. "optix packed" is the drop-in ``optix.packed(tx)`` on an ordinary
tree (it packs and unpacks inside the step); "optix packed params" keeps the
params packed between steps (``optix.pack``), so gradients arrive packed, as in
``optix.train_step`` with packed params.
"""

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import common  # noqa: E402
import optix  # noqa: E402

OPTIMIZERS = {  # name: (optix, optax, roofline reads, writes)
    "adamw": (lambda: optix.adamw(1e-3, weight_decay=1e-4),
              lambda: optax.adamw(1e-3, weight_decay=1e-4), 4, 3),
    "adam": (lambda: optix.adam(1e-3), lambda: optax.adam(1e-3), 4, 3),
    "lion": (lambda: optix.lion(1e-4, weight_decay=1e-3),
             lambda: optax.lion(1e-4, weight_decay=1e-3), 3, 2),
    "sgd_momentum": (lambda: optix.sgd(1e-2, momentum=0.9),
                     lambda: optax.sgd(1e-2, momentum=0.9), 3, 2),
}


def uniform_tree(n_leaves, total):
  size = total // n_leaves
  return lambda: {f"p{i:05d}": jnp.full((size,), 0.01, jnp.float32) for i in range(n_leaves)}


def transformer_tree(layers=6, dim=256, heads=8, vocab=4096):
  """The param tree of a real Flax NNX decoder (embeddings, attention, MLP, norms)."""
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


def candidates(opt, make_tree):
  make_optix, make_optax, reads, writes = OPTIMIZERS[opt]
  tree = make_tree()
  n = sum(x.size for x in jax.tree.leaves(tree))
  leaves = len(jax.tree.leaves(tree))
  del tree

  def step_for(tx):
    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s, g
    return step

  def args_for(tx, packed_params=False):
    def make():
      p = make_tree()
      g = jax.tree.map(lambda x: jnp.full_like(x, 1e-3), p)
      if packed_params:
        p, g = optix.pack(p), optix.pack(g)
      return p, tx.init(p), g
    return make

  out = [common.roofline_adam_like(n, reads=reads, writes=writes)]
  for name, tx, packed_params in [("optax", make_optax(), False), ("optix", make_optix(), False),
                                  ("optix packed", optix.packed(make_optix()), False),
                                  ("optix packed params", optix.packed(make_optix()), True)]:
    out.append(common.Candidate(name, step_for(tx), args_for(tx, packed_params)))
  return out, n, leaves


def bench(opt, tree_name, reps):
  cs, n, leaves = candidates(opt, TREES[tree_name])
  common.run(cs, reps=reps)
  roof = min(cs[0].times)
  rows = []
  for c in cs:
    lo, med = common.ms(c)
    rows.append([c.name, lo, med, min(c.times) / roof, c.compile_s, c.fusions])
  print(common.table(f"{opt}, {tree_name} ({leaves} leaves, {n / 1e6:.1f}M params), "
                     f"load {os.getloadavg()[0]:.1f}", rows,
                     ["library", "ms min", "ms median", "x roofline", "compile s", "fusions"]),
        flush=True)
  return {c.name: min(c.times) for c in cs}


def scaling(reps):
  rows = []
  for n in (1_000_000, 10_000_000, 100_000_000):
    cs, _, _ = candidates("adamw", uniform_tree(1, n))
    common.run(cs[:3], reps=reps)
    rows.append([f"1 leaf, {n / 1e6:g}M"] + [1e3 * min(c.times) for c in cs[:3]])
  print(common.table("AdamW step (ms, min) vs parameter count", rows,
                     ["tree", "roofline", "optax", "optix"]), flush=True)
  rows = []
  for leaves in (1, 10, 100, 1000, 10_000):
    cs, _, _ = candidates("adamw", uniform_tree(leaves, 4_000_000))
    pick = [cs[0], cs[1], cs[4]] if leaves > 1000 else cs
    common.run(pick, reps=reps)
    t = {c.name: 1e3 * min(c.times) for c in pick}
    rows.append([f"{leaves} leaves, 4M"] + [t.get(k, float("nan")) for k in
                                            ("roofline", "optax", "optix", "optix packed",
                                             "optix packed params")])
  print(common.table("AdamW step (ms, min) vs leaf count (10,000 leaves: optax and packed "
                     "params only, compile time)", rows,
                     ["tree", "roofline", "optax", "optix", "optix packed",
                      "optix packed params"]), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true", help="every optimizer on every tree")
  parser.add_argument("--scaling", action="store_true", help="scaling with params and leaves")
  parser.add_argument("--reps", type=int, default=15)
  parser.add_argument("--trees", default=",".join(TREES), help="comma-separated tree names")
  parser.add_argument("--optimizers", default=None, help="comma-separated (default: see --full)")
  args = parser.parse_args()
  print("machine:", common.machine())
  if importlib.util.find_spec("torch") is None:
    print("PyTorch is not installed: its fused/foreach AdamW rows are omitted.")
  trees = args.trees.split(",")
  for tree_name in trees:
    opts = (args.optimizers.split(",") if args.optimizers else
            list(OPTIMIZERS) if args.full or tree_name == "2000x2k" else ["adamw"])
    for opt in opts:
      bench(opt, tree_name, args.reps)
  if args.scaling:
    scaling(args.reps)
  print("\nmachine at the end:", common.machine())


if __name__ == "__main__":
  main()
