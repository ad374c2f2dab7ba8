"""The flagship race (``examples/compare_optimizers.py``) with the same tuning budget for every
optimizer: each one's peak learning rate times every scale of one grid, over several seeds (each
seed: its own model initialisation and batch order), and a table of the final validation loss.

    python -m benchmarks.flagship_tuning                       # adamw and the field's newer ones
    python -m benchmarks.flagship_tuning --optimizers=adamw,muon --scales=0.5,1,2 --seeds=0,1,2

Each (scale, seed) runs once, as its own process, all optimizers in it; its results file under
``--out`` is kept, so an interrupted sweep resumes where it stopped. The table gives, per
optimizer, the mean final validation loss at each scale and, at its best scale (lowest mean),
mean ± half the spread over seeds and the gap to AdamW's best.
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


def run(optimizers, scale, seed, steps, out):
  """The results of every optimizer at (scale, seed), running only those not on file yet."""
  path = out / f"scale{scale:g}_seed{seed}.json"
  done = json.loads(path.read_text()) if path.exists() else {}
  todo = [n for n in optimizers if n not in done]
  if todo:
    fresh = out / f"scale{scale:g}_seed{seed}.running.json"
    cmd = [sys.executable, str(EXAMPLE), f"--optimizers={','.join(todo)}",
           f"--lr_scale={scale}", f"--seed={seed}", f"--steps={steps}", "--out=",
           f"--results_json={fresh}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done.update(json.loads(fresh.read_text()))
    path.write_text(json.dumps(done))
    fresh.unlink()
  return done


def table(finals, scales, seeds, reference="adamw"):
  """finals[name][scale] -> list of final val losses over seeds."""
  best = {n: min(scales, key=lambda s: np.mean(finals[n][s])) for n in finals}
  ref = np.mean(finals[reference][best[reference]]) if reference in finals else None
  head = ("| optimizer | " + " | ".join(f"× {s:g}" for s in scales)
          + f" | best: val loss (seeds {','.join(map(str, seeds))}) | vs {reference} |")
  lines = [head, "|" + "---|" * (len(scales) + 3)]
  for n, by_scale in finals.items():
    v = np.asarray(by_scale[best[n]])
    cells = [f"{np.mean(by_scale[s]):.4f}" for s in scales]
    gap = f"{100 * (v.mean() / ref - 1):+.2f}%" if ref is not None else "—"
    lines.append(f"| {n} | " + " | ".join(cells)
                 + f" | {v.mean():.4f} ± {(v.max() - v.min()) / 2:.4f} (× {best[n]:g}) | {gap} |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--optimizers", default="adamw,sf_adamw,prodigy,ademamix,mars")
  ap.add_argument("--scales", default="0.5,1,2", help="multipliers of each menu peak LR")
  ap.add_argument("--seeds", default="0,1")
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--out", default="out/flagship_tuning")
  args = ap.parse_args()
  optimizers = args.optimizers.split(",")
  scales = [float(s) for s in args.scales.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  out = pathlib.Path(args.out) / f"steps{args.steps}"
  os.makedirs(out, exist_ok=True)
  finals = {n: {s: [] for s in scales} for n in optimizers}
  for seed in seeds:
    for scale in scales:
      results = run(optimizers, scale, seed, args.steps, out)
      for n in optimizers:
        if n in results:
          finals[n][scale].append(results[n]["val"][-1])
      print(f"done: scale {scale:g}, seed {seed}", file=sys.stderr, flush=True)
  finals = {n: v for n, v in finals.items() if all(v[s] for s in scales)}
  print(table(finals, scales, seeds))


if __name__ == "__main__":
  main()
