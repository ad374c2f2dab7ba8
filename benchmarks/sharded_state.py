r"""Per-device optimizer-state bytes with ``optix.shard_state`` vs unsharded.

For each optimizer (AdamW, Adafactor, Muon, Shampoo, ...), on a
transformer-shaped param tree, on a mesh ``(8,)`` (all devices data-parallel,
params replicated) and a mesh ``(2, 4)`` = data x model (params tensor-parallel:
each split over "model" on its first divisible dimension), prints:

* the state's total bytes = its bytes per device unsharded (what
  ``jax.jit(tx.init)`` gives on an Auto mesh: replicated); the bytes per device
  with ``shard_state`` over all mesh axes (state leaves shaped like their param
  keep its "model" split and add "data"; other leaves split over both), summed
  over ``addressable_shards`` of device 0; and their ratio (ideal: 8);
* from ``compiled.memory_analysis()`` of the jitted training update, the
  per-device argument bytes (params + grads + state) of the two steps.

    python benchmarks/sharded_state.py --width 256 --layers 4
"""

from absl import app, flags
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optix
from optix.transforms.muon import flax_dimension_numbers

FLAGS = flags.FLAGS
flags.DEFINE_integer("cpu_devices", 8, "Simulated CPU devices (ignored on GPU/TPU).")
flags.DEFINE_integer("width", 256, "Model width d (matrices d x 4d, vocab 1000 x d).")
flags.DEFINE_integer("layers", 4, "Transformer blocks.")

OPTIMIZERS = {
    "sgd_momentum": lambda: optix.sgd(1e-2, momentum=0.9),
    "adamw": lambda: optix.adamw(1e-3, weight_decay=0.1),
    "clip+adamw": lambda: optix.chain(optix.clip_by_global_norm(1.0),
                                      optix.adamw(1e-3, weight_decay=0.1)),
    "lion": lambda: optix.lion(1e-4),
    "adafactor": lambda: optix.adafactor(1e-3),
    "muon": lambda: optix.muon(0.02, adam_learning_rate=1e-3, adam_mask=("embed", "pos"),
                               adam_nesterov=False,
                               muon_weight_dimension_numbers=flax_dimension_numbers()),
    "shampoo": lambda: optix.shampoo(1e-3, block_size=256),
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


def table(mesh, shapes):
  tp = "model" in mesh.axis_names
  spec = lambda s: optix.parallel.add_axis(P(), s, mesh, "model") if tp else P()
  is_shape = lambda s: isinstance(s, tuple)
  param_specs = jax.tree.map(spec, shapes, is_leaf=is_shape)
  params = jax.tree.map(lambda s, p: jax.device_put(jnp.zeros(s, jnp.float32),
                                                    NamedSharding(mesh, p)),
                        shapes, param_specs, is_leaf=is_shape)
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"\nmesh {dict(mesh.shape)}: {count:,} params in {len(jax.tree.leaves(params))} leaves, "
        + ("params split over 'model', " if tp else "params replicated, ")
        + f"ZeRO-1 state split over {tuple(mesh.axis_names)}")
  header = (f"{'optimizer':<14}{'state MB':>10}{'unsharded MB/dev':>18}{'ZeRO-1 MB/dev':>15}"
            f"{'ratio':>7}{'args/dev unsharded MB':>23}{'args/dev ZeRO-1 MB':>20}")
  print(header)
  print("-" * len(header))
  axes = tuple(mesh.axis_names)
  for name, make in OPTIMIZERS.items():
    plain = make()
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()),
                              jax.eval_shape(plain.init, params))
    plain_state = jax.jit(plain.init, out_shardings=replicated)(params)
    tx = optix.shard_state(make(), mesh, axes, param_specs=param_specs)
    shardings = optix.state_shardings(tx, params, mesh, axes, param_specs=param_specs)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    whole, theirs, mine = total_bytes(state), per_device_bytes(plain_state), per_device_bytes(state)
    plain_args = argument_bytes(plain, params, plain_state, mesh)
    zero_args = argument_bytes(tx, params, state, mesh)
    print(f"{name:<14}{whole / 1e6:>10.3f}{theirs / 1e6:>18.3f}{mine / 1e6:>15.3f}"
          f"{theirs / max(mine, 1):>7.2f}{plain_args / 1e6:>23.3f}{zero_args / 1e6:>20.3f}")
  print(f"(ideal ratio {mesh.size}; scalars and dimensions not divisible stay replicated)")


def main(argv):
  del argv
  jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  shapes = model_shapes(FLAGS.width, FLAGS.layers)
  n = jax.device_count()
  meshes = [((n,), ("data",))]
  if n % 2 == 0 and n > 2:
    meshes.append(((2, n // 2), ("data", "model")))
  for shape, names in meshes:
    table(jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape)), shapes)


if __name__ == "__main__":
  app.run(main)
