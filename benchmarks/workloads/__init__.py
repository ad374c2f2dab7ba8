"""AlgoPerf-style workloads: a model, its data, a fixed step budget; the target is tuned AdamW's
final loss (see :func:`optix.tools.compare`).

Each module builds one :class:`Workload` (``workload(quick=False)``) on data every machine has
(the Python standard library's source, scikit-learn's digits, synthetic problems) and runs alone::

    python -m benchmarks.workloads.least_squares --optimizers adamw,muon --trials 5

``benchmarks/suite.py`` runs them all and scores them together.
"""

import argparse
import dataclasses
import os
from typing import Any, Callable, Optional

NAMES = ("least_squares", "digits_autoencoder", "noisy_labels", "digits_cnn", "gpt_stdlib")
QUICK = ("least_squares", "digits_autoencoder", "noisy_labels")
# Every family a user choosing an optimizer weighs: Adam and its variants, sign and momentum
# methods, matrix preconditioners, memory-lean, schedule-free and parameter-free ones.
OPTIMIZERS = ("adamw", "sgd", "lion", "muon", "soap", "shampoo", "psgd_kron", "adafactor",
              "adamw8bit", "ademamix", "mars_adamw", "schedule_free_adamw", "prodigy")
# Their learning rate multiplies a step size they estimate themselves: the centre stays put.
SCALE_FREE = ("prodigy",)


@dataclasses.dataclass
class Workload:
  name: str
  description: str
  init_params: Callable[[int], Any]     # seed -> params
  loss_fn: Callable[[Any, Any], Any]    # (params, batch) -> scalar
  batches: Callable[[int], Any]         # seed -> iterator of batches (same order per seed)
  steps: int
  # Grid centres; an optimizer not named here is centred at its library default × this
  # workload's AdamW centre ÷ AdamW's default (the scale-free ones at their default).
  learning_rates: dict = dataclasses.field(default_factory=dict)
  eval_fn: Optional[Callable[[Any], Any]] = None  # params -> held-out loss (targets use it)


def load(name: str, quick: bool = False) -> Workload:
  import importlib
  if name not in NAMES:
    raise ValueError(f"workload must be one of {list(NAMES)}, got {name!r}")
  return importlib.import_module(f"benchmarks.workloads.{name}").workload(quick)


def centre(w: Workload, optimizer: str) -> float:
  """The grid centre of a named optimizer on ``w`` (see ``Workload.learning_rates``)."""
  import importlib
  if optimizer in w.learning_rates:
    return w.learning_rates[optimizer]
  named = importlib.import_module("optix.tools.compare")._named()  # the module, not the function
  scale = 1.0 if optimizer in SCALE_FREE else w.learning_rates["adamw"] / named["adamw"].lr
  return named[optimizer].lr * scale


def run(w: Workload, optimizers=OPTIMIZERS, trials: int = 5, seeds=(0, 1),
        out_dir="out/bench5", progress: bool = True):
  """``optix.tools.compare`` on ``w``; runs are saved to (and resumed from) ``out_dir``."""
  import optix.tools
  out = os.path.join(out_dir, f"{w.name}.json") if out_dir else None
  lrs = {o: centre(w, o) for o in optimizers}
  return optix.tools.compare(w.init_params, w.loss_fn, w.batches, steps=w.steps,
                             optimizers=list(optimizers), trials=trials, seeds=seeds, out=out,
                             learning_rates=lrs, eval_fn=w.eval_fn, progress=progress)


def main(make: Callable[[bool], Workload], argv=None) -> None:
  """The command line of one workload: prints the comparison table, writes its plot."""
  parser = argparse.ArgumentParser(description=make.__doc__)
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--seeds", type=int, default=2, help="seeds for the chosen learning rates")
  parser.add_argument("--quick", action="store_true", help="the smaller configuration")
  parser.add_argument("--out_dir", default="out/bench5", help="runs saved here ('' for none)")
  args = parser.parse_args(argv)
  w = make(args.quick)
  result = run(w, args.optimizers.split(","), args.trials, tuple(range(args.seeds)), args.out_dir)
  print(f"## {w.name}: {w.description}\n")
  print(result.table())
  if args.out_dir:
    print(f"\nwrote {result.plot(os.path.join(args.out_dir, w.name + '.png'), title=w.name)}")
