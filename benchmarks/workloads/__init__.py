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
# Every optimizer of optix's that trains a model from its gradients alone (``tx.update(grads,
# state, params)``), grouped as in ``optix.tools.compare.NAMES``: Adam and its variants, min-max,
# layer-wise, AdaGrad-like, SGD and sign methods, matrix preconditioners, memory-lean,
# parameter-free and schedule-free ones. Not here, as they need more than the gradient: K-FAC
# (curvature statistics), L-BFGS (a line search on the loss), Sophia (Hessian estimates), MoMo and
# Polyak SGD (the loss value); nor the wrappers of another optimizer (SAM, Lookahead), nor
# optimistic_adam, which optax deprecates for optimistic_adam_v2.
OPTIMIZERS = ("adamw", "adam", "nadam", "nadamw", "amsgrad", "radam", "adabelief", "acprop",
              "yogi", "adamax", "adamaxw", "adan", "adopt", "cautious_adamw", "ademamix",
              "simplified_ademamix", "mars_adamw", "optimistic_adam_v2",
              "optimistic_gradient_descent", "lamb", "novograd", "lars", "fromage", "adagrad",
              "rmsprop", "sm3", "madgrad", "adadelta", "sgd", "noisy_sgd", "lion",
              "cautious_lion", "sign_sgd", "signum", "rprop", "muon", "soap", "shampoo",
              "psgd_kron", "galore", "adafactor", "adamw8bit", "adam8bit", "prodigy",
              "dadapt_adamw", "dog", "dowg", "cocob", "mechanize", "schedule_free_adamw",
              "schedule_free_sgd")
# ``make bench-quick`` (``--quick``) races fewer, to stay within minutes: one or more of each
# family above but the AdaGrad-like and min-max ones.
QUICK_OPTIMIZERS = ("adamw", "adam", "nadamw", "adopt", "cautious_adamw", "ademamix",
                    "simplified_ademamix", "mars_adamw", "lamb", "sgd", "lion", "muon", "soap",
                    "shampoo", "psgd_kron", "galore", "adafactor", "adamw8bit", "prodigy",
                    "dadapt_adamw", "schedule_free_adamw")
# The centre stays put: the learning rate multiplies a step size the method estimates itself
# (parameter-free), is in the params' units (AdaDelta, Rprop's first step), or sets a step
# relative to each layer's norm (LARS, Fromage).
SCALE_FREE = ("prodigy", "dadapt_adamw", "dog", "dowg", "cocob", "mechanize", "adadelta",
              "rprop", "lars", "fromage")
# The centre follows this optimizer's on the workload (default: AdamW's): plain gradient steps
# scale like SGD's, sign steps like Lion's.
ANCHORS = {"noisy_sgd": "sgd", "optimistic_gradient_descent": "sgd", "schedule_free_sgd": "sgd",
           "cautious_lion": "lion", "sign_sgd": "lion", "signum": "lion"}


@dataclasses.dataclass
class Workload:
  name: str
  description: str
  init_params: Callable[[int], Any]     # seed -> params
  loss_fn: Callable[[Any, Any], Any]    # (params, batch) -> scalar
  batches: Callable[[int], Any]         # seed -> iterator of batches (same order per seed)
  steps: int
  # Grid centres; an optimizer not named here is centred at its library default × this
  # workload's centre of its anchor (AdamW's unless ``ANCHORS`` names another) ÷ the anchor's
  # default (the scale-free ones at their default).
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
  if optimizer in SCALE_FREE:
    return named[optimizer].lr
  anchor = ANCHORS.get(optimizer, "adamw")
  return named[optimizer].lr * centre(w, anchor) / named[anchor].lr


def run(w: Workload, optimizers=OPTIMIZERS, trials: int = 5, seeds=(0, 1),
        out_dir="out/bench6", progress: bool = True):
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
  parser.add_argument("--out_dir", default="out/bench6", help="runs saved here ('' for none)")
  args = parser.parse_args(argv)
  w = make(args.quick)
  result = run(w, args.optimizers.split(","), args.trials, tuple(range(args.seeds)), args.out_dir)
  print(f"## {w.name}: {w.description}\n")
  print(result.table())
  if args.out_dir:
    print(f"\nwrote {result.plot(os.path.join(args.out_dir, w.name + '.png'), title=w.name)}")
