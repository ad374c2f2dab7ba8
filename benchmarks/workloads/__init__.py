"""AlgoPerf-style workloads: a model, its data, a fixed step budget; the target is tuned AdamW's
final loss (see :func:`optix.tools.compare`).

Each module builds one :class:`Workload` (``workload(quick=False)``) on data every machine has
(the Python standard library's source, scikit-learn's digits, synthetic problems) and runs alone::

    python -m benchmarks.workloads.least_squares --optimizers adamw,muon --trials 3

``benchmarks/suite.py`` runs them all and scores them together.
"""

import argparse
import dataclasses
import os
from typing import Any, Callable, Optional

NAMES = ("least_squares", "digits_autoencoder", "noisy_labels", "digits_cnn", "gpt_stdlib")
QUICK = ("least_squares", "digits_autoencoder", "noisy_labels")
OPTIMIZERS = ("adamw", "sgd", "lion", "muon", "soap")


@dataclasses.dataclass
class Workload:
  name: str
  description: str
  init_params: Callable[[int], Any]     # seed -> params
  loss_fn: Callable[[Any, Any], Any]    # (params, batch) -> scalar
  batches: Callable[[int], Any]         # seed -> iterator of batches (same order per seed)
  steps: int
  learning_rates: dict = dataclasses.field(default_factory=dict)  # grid centers
  eval_fn: Optional[Callable[[Any], Any]] = None  # params -> held-out loss (targets use it)


def load(name: str, quick: bool = False) -> Workload:
  import importlib
  if name not in NAMES:
    raise ValueError(f"workload must be one of {list(NAMES)}, got {name!r}")
  return importlib.import_module(f"benchmarks.workloads.{name}").workload(quick)


def run(w: Workload, optimizers=OPTIMIZERS, trials: int = 3, seeds=(0, 1), out_dir="out/bench",
        progress: bool = True):
  """``optix.tools.compare`` on ``w``; runs are saved to (and resumed from) ``out_dir``."""
  import optix.tools
  out = os.path.join(out_dir, f"{w.name}.json") if out_dir else None
  lrs = {k: v for k, v in w.learning_rates.items() if k in optimizers}
  return optix.tools.compare(w.init_params, w.loss_fn, w.batches, steps=w.steps,
                             optimizers=list(optimizers), trials=trials, seeds=seeds, out=out,
                             learning_rates=lrs, eval_fn=w.eval_fn, progress=progress)


def main(make: Callable[[bool], Workload], argv=None) -> None:
  """The command line of one workload: prints the comparison table, writes its plot."""
  parser = argparse.ArgumentParser(description=make.__doc__)
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--seeds", type=int, default=2, help="seeds for the chosen learning rates")
  parser.add_argument("--quick", action="store_true", help="the smaller configuration")
  parser.add_argument("--out_dir", default="out/bench", help="runs saved here ('' for none)")
  args = parser.parse_args(argv)
  w = make(args.quick)
  result = run(w, args.optimizers.split(","), args.trials, tuple(range(args.seeds)), args.out_dir)
  print(f"## {w.name}: {w.description}\n")
  print(result.table())
  if args.out_dir:
    print(f"\nwrote {result.plot(os.path.join(args.out_dir, w.name + '.png'), title=w.name)}")
