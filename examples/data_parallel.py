r"""Data-parallel Flax NNX training with sharded AdamW state (ZeRO-1).

An MLP classifies scikit-learn's handwritten digits (shipped with sklearn,
nothing downloads). The batch is split over the ``data`` axis of a mesh of all
devices (8 simulated CPU devices by default), the params are replicated, and
``optix.shard_state`` keeps AdamW's moments split 1/N per device. The step is
one ``jax.jit`` with params and optimizer state donated.

    python examples/data_parallel.py --steps 300

Multi-host: start the same command in every process with
``--coordinator_address=HOST:PORT --num_processes=K --process_id=i``; each
process feeds its slice of the batch (``jax.make_array_from_process_local_data``)
and the mesh spans every process's devices.
"""

import functools

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import optix

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 200, "Training steps.")
flags.DEFINE_integer("batch_size", 256, "Global batch size (a multiple of the device count).")
flags.DEFINE_integer("hidden", 128, "MLP width.")
flags.DEFINE_float("learning_rate", 3e-3, "AdamW learning rate.")
flags.DEFINE_float("weight_decay", 1e-2, "AdamW decoupled weight decay (matrices only).")
flags.DEFINE_integer("cpu_devices", 8, "Simulated CPU devices (ignored on GPU/TPU).")
flags.DEFINE_enum("axis_types", "explicit", ["explicit", "auto"], "Mesh axis types.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", 0, "Multi-host: this process's index.")


class MLP(nnx.Module):

  def __init__(self, din, hidden, dout, *, rngs):
    self.l1 = nnx.Linear(din, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, dout, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.gelu(self.l2(nnx.gelu(self.l1(x)))))


def load_digits(seed):
  from sklearn.datasets import load_digits as sk_digits  # pylint: disable=import-outside-toplevel
  x, y = sk_digits(return_X_y=True)
  order = np.random.default_rng(seed).permutation(len(x))
  x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
  return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def state_bytes(tree):
  """(bytes on the first device, bytes of the whole arrays) over the leaves of ``tree``."""
  leaves = jax.tree.leaves(tree)
  return (sum(x.addressable_shards[0].data.nbytes for x in leaves),
          sum(x.nbytes for x in leaves))


def main(argv):
  del argv
  if FLAGS.coordinator_address:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  axis_type = AxisType.Explicit if FLAGS.axis_types == "explicit" else AxisType.Auto
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(axis_type,))
  (x_train, y_train), (x_test, y_test) = load_digits(FLAGS.seed)

  graphdef, state = nnx.split(MLP(64, FLAGS.hidden, 10, rngs=nnx.Rngs(FLAGS.seed)))
  replicated = NamedSharding(mesh, P())
  params = jax.device_put(nnx.to_pure_dict(state), replicated)
  tx = optix.shard_state(
      optix.adamw(FLAGS.learning_rate, weight_decay=FLAGS.weight_decay,
                  mask=optix.matrices_only), mesh)

  def loss_fn(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

  @functools.partial(jax.jit, donate_argnums=(0, 1),
                     compiler_options=optix.training.compiler_options())
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optix.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(nnx.merge(graphdef, params)(x), -1) == y)

  batch_sharding = NamedSharding(mesh, P("data"))
  per_process = FLAGS.batch_size // jax.process_count()
  rng = np.random.default_rng(FLAGS.seed)

  def global_batch():  # every process draws the same indices and keeps its own slice
    idx = rng.choice(len(x_train), FLAGS.batch_size, replace=False)
    mine = idx[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    return (jax.make_array_from_process_local_data(batch_sharding, x_train[mine]),
            jax.make_array_from_process_local_data(batch_sharding, y_train[mine]))

  with jax.set_mesh(mesh):
    opt_state = jax.jit(tx.init)(params)
    device, whole = state_bytes(opt_state)
    print(f"mesh {dict(mesh.shape)} ({FLAGS.axis_types}), params "
          f"{sum(x.size for x in jax.tree.leaves(params)):,}")
    print(f"per-device optimizer state: {device:,} bytes of {whole:,} unsharded "
          f"({whole / device:.2f}x smaller)")
    for step in range(1, FLAGS.steps + 1):
      params, opt_state, loss = train_step(params, opt_state, *global_batch())
      if step % max(1, FLAGS.steps // 5) == 0 or step == 1:
        print(f"step {step:4d}  loss {float(loss):.4f}")
    x_eval = jax.device_put(x_test, replicated)
    acc = accuracy(params, x_eval, jax.device_put(y_test, replicated))
  print(f"test accuracy {float(acc):.3f} on {len(y_test)} held-out digits")


if __name__ == "__main__":
  app.run(main)
