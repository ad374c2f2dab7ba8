r"""Learning-rate schedules side by side: warmup + cosine, WSD, linear, SGDR, inverse-sqrt, one-cycle.

Every schedule peaks at the same value over the same budget. Prints the LR at
a few milestones and writes one PNG.

    python examples/schedules.py --steps=1000 --peak=3e-4 --out=out/schedules.png
"""

import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import optix

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 1000, "Training budget in steps.")
flags.DEFINE_float("peak", 3e-4, "Peak learning rate.")
flags.DEFINE_float("warmup_frac", 0.05, "Warmup as a fraction of the budget.")
flags.DEFINE_string("out", "out/schedules.png", "Plot path ('' for none).")


def make_schedules(steps, peak, warmup):
  return {
      "warmup + cosine": optix.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, peak / 10),
      "WSD (linear cooldown 20%)": optix.wsd_schedule(peak, warmup, steps, steps // 5, peak / 100),
      "WSD (1-sqrt cooldown 20%)": optix.wsd_schedule(peak, warmup, steps, steps // 5, peak / 100,
                                                      decay_shape="sqrt"),
      "linear decay": optix.join_schedules(
          [optix.linear_schedule(0.0, peak, warmup),
           optix.linear_schedule(peak, peak / 100, steps - warmup)], [warmup]),
      "SGDR (4 cycles, ×1.5)": optix.sgdr_schedule(peak, first_cycle_steps=int(steps / 8.125),
                                                   num_cycles=4, cycle_mult=1.5,
                                                   end_value=peak / 100),
      "inverse sqrt": optix.inverse_sqrt_schedule(peak, warmup),
      "one-cycle (cosine)": optix.cosine_onecycle_schedule(steps, peak),
  }


def main(argv):
  del argv
  steps, peak = FLAGS.steps, FLAGS.peak
  warmup = max(int(FLAGS.warmup_frac * steps), 1)
  schedules = make_schedules(steps, peak, warmup)
  t = jnp.arange(steps + 1)
  curves = {name: np.asarray(jax.jit(jax.vmap(fn))(t)) for name, fn in schedules.items()}
  marks = [0, warmup, steps // 2, int(0.8 * steps), int(0.9 * steps), steps]
  print(f"learning rate at selected steps (peak {peak:g}, warmup {warmup}, budget {steps})\n")
  print(f"{'schedule':<27}" + "".join(f"{'t=' + str(m):>11}" for m in marks) + f"{'mean':>11}")
  for name, c in curves.items():
    assert np.all(np.isfinite(c)), name
    print(f"{name:<27}" + "".join(f"{c[m]:>11.3e}" for m in marks) + f"{c.mean():>11.3e}")
  if FLAGS.out:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, c in curves.items():
      ax.plot(np.asarray(t), c, label=name, lw=1.4)
    ax.set(xlabel="step", ylabel="learning rate", title="optix schedules (same peak, same budget)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    fig.savefig(FLAGS.out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
