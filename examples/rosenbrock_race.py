r"""The Rosenbrock race: optix optimizers on f(x, y) = (1 - x)² + 100 (y - x²)².

Every optimizer starts at (-1.5, 2.0) and takes the same number of jitted steps
(one ``lax.scan``). Prints a table (final loss, distance to the minimum (1, 1),
first step within 1e-3 of it) and writes a PNG of the paths over the contours.
Then the seeds' observation at one shared learning rate, lr = 0.01: plain SGD
diverges (the valley's curvature is ~1000, so any step above ~2e-3 overshoots)
while Adam, whose steps are normalized per coordinate, stays stable.

    python examples/rosenbrock_race.py --steps 2000 --out out/rosenbrock_race.png
"""

import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import optix

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 2000, "Optimizer steps per racer.")
flags.DEFINE_string("out", "out/rosenbrock_race.png", "Where to write the plot ('' for none).")

START = jnp.array([-1.5, 2.0])
RACERS = {  # learning rates tuned by a coarse sweep on this problem
    "sgd+momentum": lambda: optix.sgd(2e-4, momentum=0.9),
    "nesterov": lambda: optix.sgd(2e-4, momentum=0.9, nesterov=True),
    "adagrad": lambda: optix.adagrad(0.5),
    "rmsprop": lambda: optix.rmsprop(3e-3),
    "adam": lambda: optix.adam(3e-2),
    "nadam": lambda: optix.nadam(3e-2),
    "adamw": lambda: optix.adamw(3e-2, weight_decay=1e-4),
    "lion": lambda: optix.lion(3e-3, weight_decay=0.0),
}


def rosenbrock(p):
  x, y = p[0], p[1]
  return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def race(tx, steps):
  """Returns the path (steps + 1, 2) of one optimizer, as a single jitted scan."""

  def step(carry, _):
    p, state = carry
    updates, state = tx.update(jax.grad(rosenbrock)(p), state, p)
    p = optix.apply_updates(p, updates)
    return (p, state), p

  @jax.jit
  def run(p):
    _, path = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return jnp.concatenate([p[None], path])

  return run(START)


def results_table(paths):
  rows = []
  for name, path in paths.items():
    dist = np.linalg.norm(path - np.array([1.0, 1.0]), axis=1)
    hit = np.flatnonzero(dist < 1e-3)
    rows.append((name, float(rosenbrock(path[-1])), float(dist[-1]),
                 int(hit[0]) if hit.size else None))
  rows.sort(key=lambda r: (r[3] is None, r[3] or 0, r[1]))
  lines = [f"{'optimizer':<14} {'final loss':>12} {'dist to (1,1)':>14} {'steps to 1e-3':>14}"]
  for name, loss, dist, hit in rows:
    lines.append(f"{name:<14} {loss:>12.3e} {dist:>14.3e} {str(hit or '—'):>14}")
  return "\n".join(lines)


def same_lr_observation(lr=0.01, steps=200):
  """Plain SGD vs Adam at the same learning rate; returns printable lines."""
  lines = [f"Same learning rate for both, lr = {lr:g}, from (-1.5, 2.0), {steps} steps:"]
  for name, tx in (("sgd", optix.sgd(lr)), ("adam", optix.adam(lr))):
    path = np.asarray(race(tx, steps))
    with np.errstate(over="ignore", invalid="ignore"):
      losses = np.asarray([float(rosenbrock(p)) for p in path])
    bad = np.flatnonzero(~np.isfinite(losses) | (losses > 1e6))
    if bad.size:
      lines.append(f"  {name:<5} diverges: loss {losses[1]:.3g} after one step, "
                   f"> 1e6 or non-finite from step {int(bad[0])}")
    else:
      lines.append(f"  {name:<5} stable: loss {losses[0]:.3g} -> {losses[-1]:.3g}, "
                   f"max {np.max(losses):.3g}")
  return lines


def plot(paths, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  xs, ys = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
  zs = (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2
  fig, ax = plt.subplots(figsize=(7, 6))
  ax.contour(xs, ys, np.log10(zs + 1e-3), levels=25, cmap="Greys", linewidths=0.5)
  for name, path in paths.items():
    ax.plot(path[:, 0], path[:, 1], lw=1.2, label=name)
  ax.plot(1, 1, "k*", ms=12)
  ax.set(title="Rosenbrock race (optix)", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-1, 3))
  ax.legend(fontsize=8)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=120, bbox_inches="tight")
  plt.close(fig)


def main(argv):
  del argv
  t0 = time.perf_counter()
  paths = {name: np.asarray(race(make(), FLAGS.steps)) for name, make in RACERS.items()}
  print(f"Rosenbrock race from (-1.5, 2.0), {FLAGS.steps} steps each "
        f"({time.perf_counter() - t0:.1f} s on {jax.devices()[0].platform})\n")
  print(results_table(paths))
  print()
  print("\n".join(same_lr_observation()))
  if FLAGS.out:
    plot(paths, FLAGS.out)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
