r"""Save and restore params + optimizer state with orbax mid-run, and continue bit-exactly.

A small Flax NNX MLP learns sklearn's digits with a WSD schedule. Run A trains
straight through. Run B saves a checkpoint mid-run (by default inside the WSD
decay phase), drops everything, restores params, optimizer state and the data
position from disk and finishes. The final params of A and B must be
bitwise identical: optimizer state is a pytree of arrays (including the int32
step counter that drives the schedule), so orbax saves it like any other value.

    python examples/checkpointing.py --steps=200 --save_at=170 --optimizers=adamw,lion,sgd,muon
"""

import os
import tempfile

from absl import app, flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from sklearn.datasets import load_digits

import optix
from optix.transforms.muon import flax_dimension_numbers

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 200, "Total training steps.")
flags.DEFINE_integer("save_at", 170, "Step at which run B checkpoints (and restarts).")
flags.DEFINE_list("optimizers", "adamw,lion,sgd,adamw8bit,adafactor,muon,shampoo,soap",
                "Optimizers to check (see OPTIMIZERS).")
flags.DEFINE_string("ckpt_dir", "", "Checkpoint directory (default: a fresh temp dir).")
flags.DEFINE_integer("seed", 0, "Init and data-order seed.")

OPTIMIZERS = {  # name -> (peak learning rate, factory taking the schedule)
    "adamw": (3e-3, lambda lr: optix.adamw(lr, weight_decay=1e-4)),
    "adam": (3e-3, optix.adam),
    "lion": (1e-3, lambda lr: optix.lion(lr, weight_decay=1e-3)),
    "sgd": (0.1, lambda lr: optix.sgd(lr, momentum=0.9, nesterov=True)),
    "rmsprop": (1e-3, optix.rmsprop),
    # State beyond plain moments: block-quantized moments with stochastic rounding seeded by the
    # step, factored second moments, Newton-Schulz momentum with an AdamW side for vectors,
    # Kronecker-factor preconditioners refreshed every 10 steps.
    "adamw8bit": (3e-3, lambda lr: optix.adamw8bit(lr, weight_decay=1e-4)),
    "adafactor": (1e-2, lambda lr: optix.adafactor(lr, multiply_by_parameter_scale=False)),
    "muon": (2e-2, lambda lr: optix.muon(
        lr, adam_learning_rate=lambda t: 0.15 * lr(t), adam_nesterov=False,
        muon_weight_dimension_numbers=flax_dimension_numbers())),
    "shampoo": (3e-3, optix.shampoo),
    "soap": (3e-3, optix.soap),
}


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(64, 64, rngs=rngs)
    self.l2 = nnx.Linear(64, 10, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


def make_problem(seed):
  x, y = load_digits(return_X_y=True)
  x = jnp.asarray(x / 16.0, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  graphdef, state = nnx.split(MLP(nnx.Rngs(seed)))
  params = nnx.to_pure_dict(state)

  def loss_fn(p, idx):
    s = jax.tree.map(lambda v: v, state)
    nnx.replace_by_pure_dict(s, p)
    logits = nnx.merge(graphdef, s)(x[idx])
    return jnp.mean(optix_ce(logits, y[idx]))

  return params, loss_fn, len(y)


def optix_ce(logits, labels):
  return jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]


def run_segment(step, params, opt_state, batches, start, stop):
  for i in range(start, stop):
    params, opt_state, _ = step(params, opt_state, batches[i])
  return params, opt_state


def check(name, ckpt_root):
  params0, loss_fn, n = make_problem(FLAGS.seed)
  batches = jnp.asarray(np.random.default_rng(FLAGS.seed).integers(0, n, (FLAGS.steps, 64)))
  peak, factory = OPTIMIZERS[name]
  schedule = optix.wsd_schedule(peak, warmup_steps=FLAGS.steps // 10, total_steps=FLAGS.steps,
                                decay_steps=FLAGS.steps // 4, end_value=peak / 100)
  tx = factory(schedule)

  def _step(p, s, idx):
    loss, g = jax.value_and_grad(loss_fn)(p, idx)
    p, s = optix.apply_step(tx, g, s, p)
    return p, s, loss

  step = jax.jit(_step, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())
  copy = lambda t: jax.tree.map(jnp.copy, t)

  # Run A: straight through.
  params_a, state_a = run_segment(step, copy(params0), tx.init(params0), batches, 0, FLAGS.steps)

  # Run B: train to save_at, checkpoint, forget, restore, finish.
  params_b, state_b = run_segment(step, copy(params0), tx.init(params0), batches, 0, FLAGS.save_at)
  path = os.path.join(ckpt_root, name)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, {"params": params_b, "opt_state": state_b, "step": FLAGS.save_at})
    ckpt.wait_until_finished()
  lr_at_save = float(schedule(state_count(state_b)))
  del params_b, state_b
  # To restore, describe what to expect: shapes and dtypes from a fresh init, no data.
  abstract = {"params": jax.eval_shape(lambda: params0),
              "opt_state": jax.eval_shape(tx.init, params0), "step": 0}
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(path, abstract)
  params_b, state_b = run_segment(step, restored["params"], restored["opt_state"], batches,
                                  int(restored["step"]), FLAGS.steps)

  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((params_a, state_a)),
                                                  jax.tree.leaves((params_b, state_b))))
  final = float(loss_fn(params_a, jnp.arange(n)))
  return same, lr_at_save, final


def state_count(opt_state):
  """The first int32 step counter in an optimizer state (drives the schedule)."""
  counts = [x for x in jax.tree.leaves(opt_state) if x.dtype == jnp.int32 and x.ndim == 0]
  return counts[0] if counts else 0


def main(argv):
  del argv
  if not 0 < FLAGS.save_at < FLAGS.steps:
    raise app.UsageError(f"--save_at must be in (0, --steps), got {FLAGS.save_at}")
  if FLAGS.ckpt_dir:
    run_all(os.path.abspath(FLAGS.ckpt_dir))
  else:
    with tempfile.TemporaryDirectory(prefix="optix_ckpt_") as root:
      run_all(root)


def run_all(root):
  print(f"WSD schedule over {FLAGS.steps} steps (decay from step {FLAGS.steps - FLAGS.steps // 4}); "
        f"checkpoint at step {FLAGS.save_at}; checkpoints under {root}\n")
  print(f"{'optimizer':<10} {'lr at save':>11} {'final loss':>11}  resumed == uninterrupted")
  all_same = True
  for name in FLAGS.optimizers:
    same, lr, final = check(name, root)
    all_same &= same
    print(f"{name:<10} {lr:>11.3e} {final:>11.4f}  {'bit-exact' if same else 'DIFFERENT'}")
  print("\nall resumed runs bit-exact" if all_same else "\nSOME RESUMED RUNS DIFFER")
  if not all_same:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
