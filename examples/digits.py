r"""SGD + momentum vs Adam vs AdamW on sklearn's handwritten digits (a small Flax NNX CNN or MLP).

The seeds' rule of thumb is "SGD for CNNs, Adam for transformers": on a small
convolutional net well-tuned SGD with momentum matches Adam's accuracy, while
Adam gets there with less tuning. Same init, same batches; prints an accuracy
table and writes test-accuracy / train-loss curves.

    python examples/digits.py --model=cnn --epochs=30 --out=out/digits.png
"""

import os
import time

from absl import app, flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optix

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "cnn", ["cnn", "mlp"], "Network.")
flags.DEFINE_integer("epochs", 30, "Passes over the training set.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_list("optimizers", "sgd_momentum,adam,adamw", "Optimizers (see OPTIMIZERS).")
flags.DEFINE_integer("seed", 0, "Init, split and shuffling seed.")
flags.DEFINE_string("out", "out/digits.png", "Plot path ('' for none).")

OPTIMIZERS = {  # learning rates from a coarse sweep on this problem, cosine-decayed
    "sgd_momentum": (0.05, lambda lr: optix.sgd(lr, momentum=0.9)),
    "nesterov": (0.05, lambda lr: optix.sgd(lr, momentum=0.9, nesterov=True)),
    "adam": (3e-3, optix.adam),
    "adamw": (3e-3, lambda lr: optix.adamw(lr, weight_decay=1e-2)),
    "lion": (3e-4, lambda lr: optix.lion(lr, weight_decay=1e-1)),
    "rmsprop": (1e-3, optix.rmsprop),
}


class CNN(nnx.Module):

  def __init__(self, rngs):
    self.c1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
    self.c2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
    self.out = nnx.Linear(32 * 16, 10, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.c1(x.reshape(-1, 8, 8, 1)))
    x = jax.nn.relu(self.c2(x))
    return self.out(x.reshape(x.shape[0], -1))


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1, self.l2 = nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


def train(name, data, model):
  x_tr, y_tr, x_te, y_te = data
  graphdef, state = nnx.split(model)
  params = jax.tree.map(jnp.copy, nnx.to_pure_dict(state))

  def logits_fn(p, x):
    s = jax.tree.map(lambda v: v, state)
    nnx.replace_by_pure_dict(s, p)
    return nnx.merge(graphdef, s)(x)

  def loss_fn(p, x, y):
    logits = logits_fn(p, x)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])

  per_epoch = len(y_tr) // FLAGS.batch_size
  peak, factory = OPTIMIZERS[name]
  tx = factory(optix.cosine_decay_schedule(peak, FLAGS.epochs * per_epoch, alpha=0.01))

  def step(p, s, idx):
    loss, g = jax.value_and_grad(loss_fn)(p, x_tr[idx], y_tr[idx])
    p, s = optix.apply_step(tx, g, s, p)
    return p, s, loss

  step = jax.jit(step, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())
  accuracy = jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(logits_fn(p, x), -1) == y))
  opt_state = tx.init(params)
  rng = np.random.default_rng(FLAGS.seed)  # same shuffles for every optimizer
  losses, test_acc = [], []
  for _ in range(FLAGS.epochs):
    order = rng.permutation(len(y_tr))[:per_epoch * FLAGS.batch_size].reshape(per_epoch, -1)
    epoch_loss = 0.0
    for idx in order:
      params, opt_state, loss = step(params, opt_state, jnp.asarray(idx))
      epoch_loss += float(loss) / per_epoch
    losses.append(epoch_loss)
    test_acc.append(float(accuracy(params, x_te, y_te)))
  return {"loss": np.asarray(losses), "test_acc": np.asarray(test_acc),
          "train_acc": float(accuracy(params, x_tr, y_tr))}


def plot(results, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for name, r in results.items():
    epochs = np.arange(1, len(r["loss"]) + 1)
    ax1.plot(epochs, r["loss"], label=name)
    ax2.plot(epochs, 100 * r["test_acc"], label=name)
  ax1.set(xlabel="epoch", ylabel="train loss", yscale="log", title=f"digits, {FLAGS.model}")
  ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="held-out 25%")
  ax1.legend()
  ax2.legend()
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv):
  del argv
  t0 = time.perf_counter()
  x, y = load_digits(return_X_y=True)
  x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.25, random_state=FLAGS.seed,
                                            stratify=y)
  data = tuple(jnp.asarray(a, jnp.float32 if a.ndim == 2 else jnp.int32)
               for a in (x_tr, y_tr, x_te, y_te))
  make = CNN if FLAGS.model == "cnn" else MLP
  results = {name: train(name, data, make(nnx.Rngs(FLAGS.seed))) for name in FLAGS.optimizers}
  print(f"sklearn digits: {len(y_tr)} train / {len(y_te)} test images, {FLAGS.model}, "
        f"{FLAGS.epochs} epochs, batch {FLAGS.batch_size} ({time.perf_counter() - t0:.1f} s)\n")
  print(f"{'optimizer':<14} {'peak lr':>8} {'final loss':>11} {'train acc':>10} {'test acc':>9} "
        f"{'best test':>10}")
  for name, r in results.items():
    print(f"{name:<14} {OPTIMIZERS[name][0]:>8.0e} {r['loss'][-1]:>11.4f} "
          f"{100 * r['train_acc']:>9.2f}% {100 * r['test_acc'][-1]:>8.2f}% "
          f"{100 * r['test_acc'].max():>9.2f}%")
  if FLAGS.out:
    plot(results, FLAGS.out)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
