"""The flagship race (``examples/compare_optimizers.py``) with Google's JAX Distributed Shampoo
(Anil et al. 2020, arXiv 2002.09018) in the menu as ``distributed_shampoo``, so it trains the
same model on the same batches as ``optix.shampoo``.

    pip install --no-deps --target DIR optax-shampoo==0.0.6
    python -m benchmarks.distributed_shampoo_race --distributed_shampoo=DIR \\
        --optimizers=adamw,shampoo,distributed_shampoo --lr_scale=4
    python -m benchmarks.flagship_tuning --distributed-shampoo DIR \\
        --optimizers=distributed_shampoo --out=out/matrix_tuning     # the same grid as the others

Every other flag is the example's. Distributed Shampoo runs at its defaults (block 1024 here
leaves every matrix whole, as optix's does; statistics and inverse roots every step; the roots
by coupled Newton at HIGHEST precision; preconditioning from step 5; Nesterov momentum) with
three settings brought in line with the menu's ``optix.shampoo``, so that the same learning-rate
grid fits both: ``beta2=0.99`` (statistics and graft, as the menu's ``beta2``/``graft_b2``), the
RMSProp graft (Adam's per-layer step size; its default SGD graft needs an SGD-sized learning
rate), and momentum as an EMA (``moving_average_for_momentum``; its default sums gradients,
which scales the step by 1/(1 - beta1)). No weight decay, as the menu's Shampoo. One shape
setting follows optix's rule: small axes merge while their product stays <= 1024, the block size
(``merge_small_dims_block_size=1024``; its default 4096 turns each 64×64 matrix of this model
into a 4096-long vector with one 4096×4096 statistic, whose coupled-Newton root every step costs
about 5 s here, where the whole step is 1.6 s with the 1024 rule).
"""

import importlib.util
import pathlib

from absl import app, flags

from benchmarks.shampoo_soap import load_distributed_shampoo

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "compare_optimizers", ROOT / "examples" / "compare_optimizers.py")
race = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(race)

flags.DEFINE_string("distributed_shampoo", None,
                    "Directory holding optax_shampoo (pip install --no-deps --target DIR "
                    "optax-shampoo==0.0.6).", required=True)
PEAK = race.MENU["shampoo"].peak  # the same menu peak, so lr_scale means the same for both


def menu_entry(path):
  """The menu's ``distributed_shampoo``: the settings of the module docstring."""
  distributed_shampoo = load_distributed_shampoo(path)
  module = distributed_shampoo.__module__
  graft = importlib.import_module(module).GraftingType.RMSPROP

  def build(sched):
    return distributed_shampoo(sched(PEAK), block_size=1024, beta1=0.9, beta2=0.99,
                               graft_type=graft, moving_average_for_momentum=True,
                               merge_small_dims_block_size=1024)
  return race.Entry(PEAK, build)


def main(argv):
  race.MENU["distributed_shampoo"] = menu_entry(flags.FLAGS.distributed_shampoo)
  race.main(argv)


if __name__ == "__main__":
  app.run(main)
