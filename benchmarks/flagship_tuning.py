"""The flagship race (``examples/compare_optimizers.py``) with the same tuning budget for every
optimizer: each one's peak learning rate times every scale of one grid, over several seeds (each
seed: its own model initialisation and batch order), and a table of the final validation loss.

    python -m benchmarks.flagship_tuning                       # adamw and the field's newer ones
    python -m benchmarks.flagship_tuning --optimizers=sf_adamw --scales=32   # extend one row
    python -m benchmarks.flagship_tuning --optimizers=adamw,muon --scales=0.5,1,2 --seeds=0,1,2
    python -m benchmarks.flagship_tuning --flags="--d_model=96 --layers=3"   # a larger model
    python -m benchmarks.flagship_tuning --distributed-shampoo DIR --optimizers=distributed_shampoo

Each (scale, seed) runs once, as its own process, all optimizers in it; its results file under
``--out`` is kept, so an interrupted sweep resumes where it stopped. The table gives, per
optimizer, the mean final validation loss at each scale and, at its best scale (lowest mean),
mean ± half the spread over seeds, the gap to AdamW's best, the first evaluated step at which
each seed's validation loss reaches AdamW's best mean (mean over seeds; "—" where a seed never
does) and the step time (median over seeds, from the same process as the others at that scale).
With ``--distributed-shampoo DIR`` the runs go through :mod:`benchmarks.distributed_shampoo_race`,
whose menu also holds Google's JAX Distributed Shampoo.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "compare_optimizers.py"


def run(optimizers, scale, seed, steps, out, flags=(), distributed_shampoo=None):
  """The results of every optimizer at (scale, seed), running only those not on file yet."""
  path = out / f"scale{scale:g}_seed{seed}.json"
  done = json.loads(path.read_text()) if path.exists() else {}
  todo = [n for n in optimizers if n not in done]
  if todo:
    fresh = out / f"scale{scale:g}_seed{seed}.running.json"
    race = ([str(EXAMPLE)] if distributed_shampoo is None else
            ["-m", "benchmarks.distributed_shampoo_race",
             f"--distributed_shampoo={distributed_shampoo}"])
    cmd = [sys.executable, *race, f"--optimizers={','.join(todo)}",
           f"--lr_scale={scale}", f"--seed={seed}", f"--steps={steps}", "--out=",
           f"--results_json={fresh}", *flags]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    done.update(json.loads(fresh.read_text()))
    path.write_text(json.dumps(done))
    fresh.unlink()
  return done


def first_step_at(result, target):
  """The first evaluated step whose validation loss is <= target (None if none is)."""
  return next((t for t, v in zip(result["val_steps"], result["val"]) if v <= target), None)


def table(runs, scales, seeds, reference="adamw"):
  """runs[name][scale] -> list of result dicts over seeds (val_steps, val, ms)."""
  final = lambda rs: [r["val"][-1] for r in rs]
  best = {n: min(scales, key=lambda s: np.mean(final(runs[n][s]))) for n in runs}
  ref = np.mean(final(runs[reference][best[reference]])) if reference in runs else None
  head = ("| optimizer | " + " | ".join(f"× {s:g}" for s in scales)
          + f" | best: val loss (seeds {','.join(map(str, seeds))}) | vs {reference}"
          + f" | steps to {reference}'s best | ms / step |")
  lines = [head, "|" + "---|" * (len(scales) + 5)]
  for n, by_scale in runs.items():
    v = np.asarray(final(by_scale[best[n]]))
    cells = [f"{np.mean(final(by_scale[s])):.4f}" for s in scales]
    gap, reach = "—", "—"
    if ref is not None:
      gap = f"{100 * (v.mean() / ref - 1):+.2f}%"
      steps = [first_step_at(r, ref) for r in by_scale[best[n]]]
      if n == reference:
        reach = f"{by_scale[best[n]][0]['val_steps'][-1]} (its end)"
      elif all(t is not None for t in steps):
        reach = f"{np.mean(steps):.0f}"
    ms = np.median([r["ms"] for r in by_scale[best[n]]])
    lines.append(f"| {n} | " + " | ".join(cells)
                 + f" | {v.mean():.4f} ± {(v.max() - v.min()) / 2:.4f} (× {best[n]:g}) | {gap}"
                 + f" | {reach} | {ms:.0f} |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--optimizers", default="adamw,sf_adamw,prodigy,ademamix,mars")
  ap.add_argument("--scales", default="0.5,1,2,4,8,16",
                  help="multipliers of each menu peak LR (extend the grid until each best is "
                       "interior)")
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--out", default="out/flagship_tuning")
  ap.add_argument("--flags", default="",
                  help="more flags for examples/compare_optimizers.py (the model's size ...); "
                       "give each setting its own --out")
  ap.add_argument("--distributed-shampoo", metavar="DIR", default=None,
                  help="a directory holding optax_shampoo (pip install --no-deps --target DIR "
                       "optax-shampoo==0.0.6): adds distributed_shampoo to the menu")
  args = ap.parse_args()
  optimizers = args.optimizers.split(",")
  scales = [float(s) for s in args.scales.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  out = pathlib.Path(args.out) / f"steps{args.steps}"
  os.makedirs(out, exist_ok=True)
  runs = {n: {s: [] for s in scales} for n in optimizers}
  for seed in seeds:
    for scale in scales:
      results = run(optimizers, scale, seed, args.steps, out, args.flags.split(),
                    args.distributed_shampoo)
      for n in optimizers:
        if n in results:
          runs[n][scale].append(results[n])
      print(f"done: scale {scale:g}, seed {seed}", file=sys.stderr, flush=True)
  runs = {n: v for n, v in runs.items() if all(v[s] for s in scales)}
  print(table(runs, scales, seeds))


if __name__ == "__main__":
  main()
