r"""Per-device optimizer-state bytes with ``optix.shard_state`` vs unsharded.

For each optimizer, on a transformer-shaped param tree over a mesh of all
devices (8 simulated CPU devices by default), prints:

* state bytes as unsharded arrays, and per device with ``shard_state`` (summed
  over ``addressable_shards`` of device 0), and their ratio (ideal: N);
* from ``compiled.memory_analysis()`` of the jitted training update, the
  per-device argument bytes (params + grads + state) of the replicated-state
  step vs the ZeRO-1 step.

    python benchmarks/sharded_state.py --width 256 --layers 4
"""

from absl import app, flags
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optix

FLAGS = flags.FLAGS
flags.DEFINE_integer("cpu_devices", 8, "Simulated CPU devices (ignored on GPU/TPU).")
flags.DEFINE_integer("width", 256, "Model width d (matrices d x 4d, vocab 1000 x d).")
flags.DEFINE_integer("layers", 4, "Transformer blocks.")

OPTIMIZERS = {  # adafactor, muon, shampoo: one line each when they exist
    "sgd_momentum": lambda: optix.sgd(1e-2, momentum=0.9),
    "adamw": lambda: optix.adamw(1e-3, weight_decay=0.1),
    "clip+adamw": lambda: optix.chain(optix.clip_by_global_norm(1.0),
                                      optix.adamw(1e-3, weight_decay=0.1)),
    "lion": lambda: optix.lion(1e-4),
}


def model_shapes(d, layers, vocab=1000):
  blocks = {f"block{i}": {"ln1": (d,), "qkv": (d, 3 * d), "proj": (d, d), "ln2": (d,),
                          "up": (d, 4 * d), "up_bias": (4 * d,), "down": (4 * d, d),
                          "down_bias": (d,)} for i in range(layers)}
  return {"embed": (vocab, d), "pos": (64, d), **blocks, "ln_f": (d,), "temperature": ()}


def per_device_bytes(tree):
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def total_bytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


def argument_bytes(tx, params, state, mesh):
  """Per-device argument bytes of the compiled update (params, grads, state)."""
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optix.apply_updates(p, u), s
  shardings = jax.tree.map(lambda x: x.sharding, (params, state, params))
  compiled = jax.jit(step, in_shardings=shardings, donate_argnums=(0, 1)).lower(
      params, state, params).compile()
  analysis = compiled.memory_analysis()
  return analysis.argument_size_in_bytes if analysis is not None else float("nan")


def main(argv):
  del argv
  jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  n = mesh.size
  shapes = model_shapes(FLAGS.width, FLAGS.layers)
  replicated = NamedSharding(mesh, P())
  params = jax.tree.map(lambda s: jax.device_put(jnp.zeros(s, jnp.float32), replicated), shapes,
                        is_leaf=lambda s: isinstance(s, tuple))
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"{count:,} params in {len(jax.tree.leaves(params))} leaves, mesh {dict(mesh.shape)}")
  header = (f"{'optimizer':<14}{'state MB':>10}{'per-device MB':>15}{'ratio':>8}"
            f"{'args/dev repl MB':>18}{'args/dev ZeRO-1 MB':>20}")
  print(header)
  print("-" * len(header))
  for name, make in OPTIMIZERS.items():
    plain = make()
    plain_state = jax.jit(plain.init, out_shardings=replicated)(params)
    tx = optix.shard_state(make(), mesh)
    state = jax.jit(tx.init)(params)
    whole, mine = total_bytes(state), per_device_bytes(state)
    repl_args = argument_bytes(plain, params, plain_state, mesh)
    zero_args = argument_bytes(tx, params, state, mesh)
    print(f"{name:<14}{whole / 1e6:>10.3f}{mine / 1e6:>15.3f}{whole / max(mine, 1):>8.2f}"
          f"{repl_args / 1e6:>18.3f}{zero_args / 1e6:>20.3f}")
  print(f"(ideal ratio {n}; scalars and dimensions not divisible by {n} stay replicated)")


if __name__ == "__main__":
  app.run(main)
