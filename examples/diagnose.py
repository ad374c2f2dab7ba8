r"""Diagnosing a training run: LR range test, gradient-health monitor, loss landscape, memory.

A small MLP on sklearn's handwritten digits, start to finish with optix's
diagnostics:

1. ``optix.tools.lr_range_test`` sweeps the learning rate of SGD + momentum and
   suggests one (a factor 4 below the smoothed-loss minimum, Smith 2017).
2. Training at that LR with ``optix.monitor(...)`` wrapping the optimizer: the
   per-layer gradient norms, update/param ratios and spike flags live in the
   optimizer state and are read after each step (no host callbacks). One batch
   is deliberately corrupted (inputs ×``spike_scale``) to show the spike flag.
3. ``optix.tools.loss_landscape`` around the trained params (filter-normalized
   directions, Li et al. 2018) with its sharpness summary.
4. ``optix.tools.state_memory``: the optimizer state's bytes, per leaf, and what
   other optimizers would keep for the same params.

Writes one dashboard PNG (and, on request, the tools' own plots).

    python examples/diagnose.py --steps=300 --out=out/diagnose.png
"""

import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import optix
from optix import tools

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 300, "Training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("hidden", 64, "Hidden width of the two-layer MLP.")
flags.DEFINE_float("momentum", 0.9, "Heavy-ball momentum of the SGD optimizer.")
flags.DEFINE_integer("range_steps", 100, "Steps of the LR range test.")
flags.DEFINE_integer("spike_at", 200, "Step whose batch is corrupted (-1: none).")
flags.DEFINE_float("spike_scale", 6.0, "The corrupted batch's inputs are multiplied by this.")
flags.DEFINE_integer("resolution", 21, "Loss-landscape grid points per axis (odd).")
flags.DEFINE_float("span", 0.5, "Loss-landscape half-width (filter-normalized units).")
flags.DEFINE_integer("log_every", 50, "Steps between printed monitor lines.")
flags.DEFINE_integer("seed", 0, "Init and data-order seed.")
flags.DEFINE_string("out", "out/diagnose.png", "Dashboard path ('' for none).")
flags.DEFINE_string("lr_plot", "", "Also write LRRangeResult.plot here ('' for none).")
flags.DEFINE_string("landscape_plot", "", "Also write LandscapeResult.plot here ('' for none).")


def init_params(key, hidden):
  k1, k2 = jax.random.split(key)
  return {"dense1": {"kernel": jax.random.normal(k1, (64, hidden)) / 8.0,
                     "bias": jnp.zeros(hidden)},
          "dense2": {"kernel": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden),
                     "bias": jnp.zeros(10)}}


def logits_fn(params, x):
  h = jax.nn.relu(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  return h @ params["dense2"]["kernel"] + params["dense2"]["bias"]


def loss_fn(params, batch):
  x, y = batch
  logits = logits_fn(params, x)
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def layer_name(path):
  return "/".join(str(getattr(k, "key", k)) for k in path)


def main(argv):
  del argv
  t0 = time.perf_counter()
  x, y = load_digits(return_X_y=True)
  x, y = (x / 16.0).astype(np.float32), y.astype(np.int32)
  rng = np.random.default_rng(FLAGS.seed)
  order = rng.permutation(len(y))
  n_val = len(y) // 5
  val = (jnp.asarray(x[order[:n_val]]), jnp.asarray(y[order[:n_val]]))
  x_tr, y_tr = x[order[n_val:]], y[order[n_val:]]
  idx = rng.integers(0, len(y_tr), size=(max(FLAGS.steps, FLAGS.range_steps), FLAGS.batch_size))
  batches = (jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]))  # (steps, batch, ...) stacked
  params0 = init_params(jax.random.key(FLAGS.seed), FLAGS.hidden)
  factory = lambda lr: optix.sgd(lr, momentum=FLAGS.momentum)

  # 1. LR range test.
  sweep = tools.lr_range_test(loss_fn, params0, batches, factory, 1e-4, 10.0, FLAGS.range_steps)
  lr = sweep.suggested_lr
  print(f"LR range test ({len(sweep.lrs)} of {FLAGS.range_steps} steps, sgd momentum "
        f"{FLAGS.momentum}): smoothed-loss minimum at lr {sweep.min_loss_lr:.3g}, "
        f"suggested lr {lr:.3g} (steepest descent at {sweep.steepest_lr:.3g})")

  # 2. Train with the monitor; its statistics come back from the jitted step as arrays.
  tx = optix.monitor(factory(lr), spike_factor=4.0, warmup_steps=10)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    stats = optix.monitor_stats(opt_state)
    stats["layer_grad_norms"] = opt_state.layer_grad_norms
    stats["layer_update_ratios"] = opt_state.layer_update_ratios
    return optix.apply_updates(params, updates), opt_state, loss, stats

  step = jax.jit(step, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())
  params = jax.tree.map(jnp.copy, params0)
  opt_state = jax.jit(tx.init)(params)
  history = []
  print(f"\n{'step':>5} {'loss':>8} {'‖g‖':>8} {'‖g‖ mean':>9} {'‖u‖/‖θ‖':>9} {'eff. lr':>8} "
        "spike")
  for i in range(FLAGS.steps):
    xb, yb = batches[0][i], batches[1][i]
    if i == FLAGS.spike_at:
      xb = xb * FLAGS.spike_scale  # a corrupted batch: the monitor should flag it
    params, opt_state, loss, stats = step(params, opt_state, (xb, yb))
    stats = jax.device_get(stats)
    stats["loss"] = float(loss)
    history.append(stats)
    if i % FLAGS.log_every == 0 or stats["spike"] or i == FLAGS.steps - 1:
      print(f"{i:>5} {stats['loss']:>8.4f} {stats['grad_norm']:>8.4f} "
            f"{stats['grad_norm_mean']:>9.4f} {stats['update_ratio']:>9.2e} "
            f"{stats['effective_lr']:>8.3f} {'SPIKE' if stats['spike'] else ''}")
  spikes = [i for i, h in enumerate(history) if h["spike"]]
  val_loss = float(loss_fn(params, val))
  val_acc = float(jnp.mean(jnp.argmax(logits_fn(params, val[0]), -1) == val[1]))
  print(f"\nspikes flagged at steps {spikes}; final val loss {val_loss:.4f}, "
        f"val accuracy {100 * val_acc:.2f}%")

  # 3. Loss landscape around the trained params (on the validation set).
  land = tools.loss_landscape(loss_fn, params, val, resolution=FLAGS.resolution,
                             span=FLAGS.span)
  print("loss landscape: " + ", ".join(f"{k} {v:.4g}" for k, v in land.sharpness.items()))

  # 4. Memory of the optimizer state, and of some alternatives for the same params.
  mem = tools.state_memory(tx, params)
  print(f"\noptimizer state (monitor + sgd momentum): {str(mem).splitlines()[-1].split(None, 1)[1]}"
        "\n")
  others = {"monitor(sgd+mom)": tx, "sgd+momentum": factory(lr), "adamw": optix.adamw(lr),
            "lion": optix.lion(lr), "adafactor": optix.adafactor(lr),
            "adamw8bit": optix.adamw8bit(lr)}
  memory = {name: tools.state_memory(t, params) for name, t in others.items()}
  print(f"{'optimizer':<18} {'state bytes':>12} {'bytes/param':>12}")
  for name, m in memory.items():
    print(f"{name:<18} {m.total_bytes:>12,} {m.bytes_per_param:>12.3f}")
  print(f"\ntotal {time.perf_counter() - t0:.1f} s")
  if FLAGS.out:
    dashboard(sweep, history, land, memory, lr, FLAGS.out)
    print(f"wrote {FLAGS.out}")
  if FLAGS.lr_plot:
    print(f"wrote {sweep.plot(FLAGS.lr_plot, title='LR range test: digits MLP, SGD + momentum')}")
  if FLAGS.landscape_plot:
    print(f"wrote {land.plot(FLAGS.landscape_plot, title='loss landscape around the trained MLP')}")


def dashboard(sweep, history, land, memory, lr, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  steps = np.arange(len(history))
  spikes = [i for i, h in enumerate(history) if h["spike"]]

  ax = axes[0, 0]
  ax.plot(sweep.lrs, sweep.losses, color="0.75", lw=0.8, label="loss")
  ax.plot(sweep.lrs, sweep.smoothed, lw=1.5, label="smoothed")
  ax.axvline(sweep.min_loss_lr, color="0.4", ls=":", label=f"min {sweep.min_loss_lr:.2g}")
  ax.axvline(lr, color="C3", ls="--", label=f"chosen {lr:.2g}")
  finite = sweep.smoothed[np.isfinite(sweep.smoothed)]
  ax.set_ylim(0.9 * finite.min(), 1.3 * finite[0])
  ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="1. LR range test")
  ax.legend(fontsize=7)

  ax = axes[0, 1]
  ax.plot(steps, [h["loss"] for h in history], lw=0.8)
  for s in spikes:
    ax.axvline(s, color="C3", alpha=0.5)
  ax.set(yscale="log", xlabel="step", ylabel="train loss",
         title=f"2. training (red: {len(spikes)} spike(s) flagged)")

  ax = axes[0, 2]
  flat = [jax.tree_util.tree_flatten_with_path(h["layer_grad_norms"])[0] for h in history]
  for k, (path, _) in enumerate(flat[0]):
    ax.plot(steps, [f[k][1] for f in flat], lw=0.8, label=layer_name(path))
  ax.plot(steps, [h["grad_norm_mean"] for h in history], "k--", lw=1, label="running mean ‖g‖")
  ax.set(yscale="log", xlabel="step", ylabel="‖g‖ per layer", title="gradient norms")
  ax.legend(fontsize=7)

  ax = axes[1, 0]
  flat = [jax.tree_util.tree_flatten_with_path(h["layer_update_ratios"])[0] for h in history]
  for k, (path, _) in enumerate(flat[0]):
    ax.plot(steps, [f[k][1] for f in flat], lw=0.8, label=layer_name(path))
  ax.axhline(1e-3, color="0.5", ls=":", label="1e-3 rule of thumb")
  ax.set(yscale="log", xlabel="step", ylabel="‖u‖ / ‖θ‖", title="update / param ratio")
  ax.legend(fontsize=7)

  ax = axes[1, 1]
  levels = np.geomspace(land.center_loss, land.loss_2d.max(), 12)
  cs = ax.contour(land.alphas, land.alphas, land.loss_2d, levels=levels, cmap="viridis")
  ax.clabel(cs, fontsize=6, fmt="%.2g")
  ax.plot(0, 0, "r*", ms=10)
  ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)",
         title=f"3. loss landscape (val), curvature {land.sharpness['curvature']:.3g}")

  ax = axes[1, 2]
  names = list(memory)
  ax.barh(range(len(names)), [m.bytes_per_param for m in memory.values()],
          color=["C3"] + ["C2"] * (len(names) - 1))
  ax.set_yticks(range(len(names)), names, fontsize=8)
  ax.invert_yaxis()
  mem = memory[names[0]]
  ax.set(xlabel="optimizer-state bytes per parameter",
         title=f"4. state memory (this run: {mem.total_bytes:,} B)")
  fig.suptitle("optix diagnostics: MLP on sklearn digits, SGD + momentum")
  fig.tight_layout()
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=72)
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
