r"""Grokking on modular addition: AdamW with vs without weight decay.

A small network learns ``(a + b) mod p`` from a fraction of all ``p²`` pairs
(Power et al. 2022, arXiv 2201.02177). It fits the training pairs early; with
weight decay the validation accuracy jumps to ~100% much later ("delayed
generalization"), without it the network stays a memorizer over the same
budget. Full-batch AdamW, the same init and split for both runs; prints the
step where each run first reaches 99% train / 99% val accuracy and writes the
curves.

    python examples/grokking.py                                   # full run
    python examples/grokking.py --steps=200 --eval_every=50 --p=23  # a quick look
"""

import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import optix

FLAGS = flags.FLAGS
flags.DEFINE_integer("p", 97, "The modulus.")
flags.DEFINE_float("train_frac", 0.4, "Fraction of the p² pairs used for training.")
flags.DEFINE_integer("steps", 3000, "Full-batch optimizer steps per run.")
flags.DEFINE_integer("eval_every", 50, "Steps between accuracy evaluations.")
flags.DEFINE_integer("width", 128, "Embedding width (the hidden layer is 2× wider).")
flags.DEFINE_float("lr", 3e-3, "AdamW learning rate.")
flags.DEFINE_list("weight_decays", "1.0,0.0", "One run per weight decay.")
flags.DEFINE_integer("seed", 0, "Split and init seed.")
flags.DEFINE_string("out", "out/grokking.png", "Plot path ('' for none).")
flags.DEFINE_string("results_json", "", "Also write the curves here as JSON ('' for none).")


def init_params(key, p, width):
  k1, k2, k3 = jax.random.split(key, 3)
  return {"embed": jax.random.normal(k1, (p, width)) / jnp.sqrt(width),
          "hidden": {"kernel": jax.random.normal(k2, (2 * width, 2 * width)) / jnp.sqrt(2 * width),
                     "bias": jnp.zeros(2 * width)},
          "out": {"kernel": jax.random.normal(k3, (2 * width, p)) / jnp.sqrt(2 * width)}}


def logits_fn(params, pairs):
  x = params["embed"][pairs].reshape(pairs.shape[0], -1)  # concat(E[a], E[b])
  h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  return h @ params["out"]["kernel"]


def make_data(p, frac, seed):
  a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
  pairs = np.stack([a.ravel(), b.ravel()], 1)
  labels = (pairs[:, 0] + pairs[:, 1]) % p
  order = np.random.default_rng(seed).permutation(len(pairs))
  n = int(frac * len(pairs))
  tr, va = order[:n], order[n:]
  return tuple(jnp.asarray(x, jnp.int32) for x in (pairs[tr], labels[tr], pairs[va], labels[va]))


def run(weight_decay, data, params):
  x_tr, y_tr, x_va, y_va = data
  tx = optix.adamw(FLAGS.lr, b1=0.9, b2=0.98, weight_decay=weight_decay)

  def loss_fn(p):
    logits = logits_fn(p, x_tr)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y_tr[:, None], -1)[:, 0])

  def acc(p, x, y):
    return jnp.mean(jnp.argmax(logits_fn(p, x), -1) == y)

  def step(carry, _):
    p, s = carry
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return (optix.apply_updates(p, u), s), loss

  def chunk(p, s):  # eval_every steps in one scan, then the accuracies
    (p, s), losses = jax.lax.scan(step, (p, s), None, length=FLAGS.eval_every)
    return p, s, losses[-1], acc(p, x_tr, y_tr), acc(p, x_va, y_va)

  chunk = jax.jit(chunk, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())
  p, s = jax.tree.map(jnp.copy, params), tx.init(params)
  hist = {"step": [], "loss": [], "train_acc": [], "val_acc": []}
  for i in range(FLAGS.steps // FLAGS.eval_every):
    p, s, loss, tr, va = chunk(p, s)
    for k, v in zip(hist, ((i + 1) * FLAGS.eval_every, loss, tr, va)):
      hist[k].append(float(v))
  return {k: np.asarray(v) for k, v in hist.items()}


def first_step(hist, key, level=0.99):
  hit = np.flatnonzero(hist[key] >= level)
  return int(hist["step"][hit[0]]) if hit.size else None


def main(argv):
  del argv
  if FLAGS.steps < FLAGS.eval_every:
    raise app.UsageError("--steps must be >= --eval_every")
  t0 = time.perf_counter()
  data = make_data(FLAGS.p, FLAGS.train_frac, FLAGS.seed)
  params = init_params(jax.random.key(FLAGS.seed), FLAGS.p, FLAGS.width)
  results = {float(wd): run(float(wd), data, params) for wd in FLAGS.weight_decays}
  print(f"(a + b) mod {FLAGS.p}: {len(data[1])} train / {len(data[3])} val pairs, full-batch "
        f"AdamW lr {FLAGS.lr:g}, {FLAGS.steps} steps ({time.perf_counter() - t0:.1f} s)\n")
  print(f"{'weight decay':>12} {'final loss':>11} {'train acc':>10} {'val acc':>8} "
        f"{'train 99% at':>13} {'val 99% at':>11} {'gap (steps)':>12}")
  for wd, h in results.items():
    tr, va = first_step(h, "train_acc"), first_step(h, "val_acc")
    gap = va - tr if (tr is not None and va is not None) else None
    print(f"{wd:>12g} {h['loss'][-1]:>11.4f} {100 * h['train_acc'][-1]:>9.1f}% "
          f"{100 * h['val_acc'][-1]:>7.1f}% {str(tr or '—'):>13} {str(va or '—'):>11} "
          f"{str(gap if gap is not None else '—'):>12}")
  if FLAGS.results_json:
    with open(FLAGS.results_json, "w") as f:
      json.dump({str(wd): {k: v.tolist() for k, v in h.items()} for wd, h in results.items()}, f)
  if FLAGS.out:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (wd, h) in zip(axes[0], results.items()):
      ax.plot(h["step"], 100 * h["train_acc"], label="train")
      ax.plot(h["step"], 100 * h["val_acc"], label="validation")
      ax.set(xlabel="step", ylabel="accuracy (%)", title=f"AdamW, weight decay {wd:g}",
             xscale="log", ylim=(-2, 102))
      ax.legend()
    fig.suptitle(f"grokking: (a + b) mod {FLAGS.p}, {100 * FLAGS.train_frac:.0f}% of pairs")
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    fig.savefig(FLAGS.out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
