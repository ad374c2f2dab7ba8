r"""The flagship demo: optix optimizers train the same small GPT on Python's own source.

A char-level (byte-level) causal Transformer, written in Flax NNX, learns to
continue the standard library's ``*.py`` files (found with ``sysconfig``; a
fixed train/validation split; nothing downloads). Every optimizer gets the same
model initialisation, the same batches in the same order and the same step
budget; steps are jitted with params and optimizer state donated. Prints a
table (final train/val loss, steps to reach AdamW's final val loss, ms/step,
optimizer-state bytes from ``jax.eval_shape``) and writes a PNG of the loss
curves and learning-rate schedules.

    python examples/compare_optimizers.py                       # the default budget
    python examples/compare_optimizers.py --optimizers=adamw,lion --steps=600 --schedule=wsd
"""

import glob
import json
import math
import os
import sys
import sysconfig
import time
from typing import Callable, NamedTuple, Optional

# LAPACK calls (eigh in Shampoo/SOAP) go through OpenBLAS; its own thread pool can deadlock
# against XLA's CPU threads (seen here: a hang at a preconditioner refresh). One BLAS thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

import optix
from optix.transforms.muon import flax_dimension_numbers

FLAGS = flags.FLAGS
flags.DEFINE_list("optimizers", "adamw,lion,adafactor,adamw8bit,muon,shampoo,soap",
                  "Optimizers to race (names in MENU; missing ones are skipped with a note).")
flags.DEFINE_integer("steps", 300, "Training steps per optimizer.")
flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
flags.DEFINE_integer("context", 64, "Sequence length (bytes).")
flags.DEFINE_integer("d_model", 64, "Model width.")
flags.DEFINE_integer("layers", 2, "Transformer blocks.")
flags.DEFINE_integer("heads", 4, "Attention heads.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "wsd", "constant"],
                  "LR schedule shape (peak LR per optimizer in MENU).")
flags.DEFINE_float("lr_scale", 1.0, "Multiplies every optimizer's peak LR.")
flags.DEFINE_integer("eval_every", 25, "Steps between validation evaluations.")
flags.DEFINE_integer("eval_batches", 4, "Validation batches per evaluation (fixed).")
flags.DEFINE_float("corpus_mb", 4.0, "Megabytes of stdlib source to read.")
flags.DEFINE_integer("seed", 0, "Model init and data-order seed.")
flags.DEFINE_string("out", "out/compare_optimizers.png", "Plot path ('' for none).")
flags.DEFINE_string("results_json", "", "Also write the curves and numbers here ('' for none).")


# -- the optimizer menu ------------------------------------------------------------------------
# name -> Entry(peak learning rate, build(sched)) where sched(peak) is the run's schedule shape at
# that peak. Each builder looks its optimizer up with getattr, so a name that optix does not have
# (yet) is skipped with a note. Peak LRs: a coarse sweep at the default size
# (benchmarks/flagship_tuning.py sweeps them, with the same grid for every optimizer).

class Entry(NamedTuple):
  peak: float
  build: Callable                     # sched -> the optimizer
  schedule: Optional[str] = None      # a schedule shape it always uses (None: --schedule)
  eval_params: Optional[Callable] = None  # (opt_state, params) -> the params to evaluate


def _menu_item(attr, peak, **kw):
  def build(sched):
    fn = getattr(optix, attr, None)
    return None if fn is None else fn(sched(peak), **kw)
  return Entry(peak, build)


def _schedule_free(peak, **kw):
  """Schedule-free AdamW at a constant learning rate after the run's warmup, evaluated at its
  averaged point x (the iterate y it steps is not the point it guarantees)."""
  def build(sched):
    fn = getattr(optix, "schedule_free_adamw", None)
    return None if fn is None else fn(sched(peak), **kw)
  return Entry(peak, build, schedule="constant",
               eval_params=lambda state, params: optix.schedule_free_eval_params(state, params))


def _muon(peak, adam_peak):
  def build(sched):
    fn = getattr(optix, "muon", None)
    return None if fn is None else fn(sched(peak), adam_learning_rate=sched(adam_peak),
                                      weight_decay=0.1, adam_weight_decay=0.1, adam_b2=0.99,
                                      adam_mask=("tok", "pos", "head"), adam_nesterov=False,
                                      muon_weight_dimension_numbers=flax_dimension_numbers())
  return Entry(peak, build)


MENU = {
    "adamw": _menu_item("adamw", 3e-3, b2=0.99, weight_decay=0.1, mask=optix.matrices_only),
    "lion": _menu_item("lion", 3e-3, weight_decay=1.0, mask=optix.matrices_only),
    "adafactor": _menu_item("adafactor", 1e-2, multiply_by_parameter_scale=False),
    "adamw8bit": _menu_item("adamw8bit", 3e-3, b2=0.99, weight_decay=0.1,
                            mask=optix.matrices_only),
    "muon": _muon(2e-2, 3e-3),
    "shampoo": _menu_item("shampoo", 3e-3, beta2=0.99, graft_b2=0.99),
    "soap": _menu_item("soap", 3e-3, b1=0.9, b2=0.99),
    "psgd": _menu_item("psgd_kron", 1e-3),
    # The field's newer optimizers. Prodigy estimates its own step size: its "peak" is the
    # multiplier of that estimate, 1.0 as its paper recommends, under the run's schedule shape.
    # No safeguard_warmup: it keeps the schedule's multiplier out of the estimate's denominator
    # only, so the warmup and the cosine decay both hold the estimate down (here it stops at
    # about 0.4x the tuned AdamW rate); optix.prodigy keeps its estimate at the warmup's zero
    # rate, where optax.contrib.prodigy's 0/0 makes it NaN.
    # AdEMAMix's slow EMA (b3) is set for a 300-step run (the paper's 0.9999 is for 10^5 steps).
    "sf_adamw": _schedule_free(3e-3, b1=0.9, b2=0.99, weight_decay=0.1),
    "prodigy": _menu_item("prodigy", 1.0, betas=(0.9, 0.99), weight_decay=0.1),
    "ademamix": _menu_item("ademamix", 3e-3, b2=0.99, b3=0.999, alpha=5.0, weight_decay=0.1,
                           mask=optix.matrices_only),
    "mars": _menu_item("mars_adamw", 3e-3, b1=0.95, b2=0.99, weight_decay=0.1,
                       mask=optix.matrices_only),
    "sgd": _menu_item("sgd", 0.3, momentum=0.9),
    "adam": _menu_item("adam", 3e-3, b2=0.99),
}


def make_schedule(kind, peak, steps):
  warmup = max(steps // 20, 1)
  if kind == "cosine":
    return optix.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, peak * 0.1)
  if kind == "wsd":
    return optix.wsd_schedule(peak, warmup, steps, max(steps // 5, 1), peak * 0.01)
  return optix.linear_schedule(0.0, peak, warmup)  # warmup, then constant


# -- data: Python's standard library, bytes ----------------------------------------------------

def load_corpus(megabytes):
  """The stdlib's ``*.py`` (tests and site-packages excluded) in sorted order, as uint8."""
  root = sysconfig.get_paths()["stdlib"]
  files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                 if "site-packages" not in f and "/test" not in f[len(root):])
  chunks, total, limit = [], 0, int(megabytes * 1e6)
  for f in files:
    with open(f, "rb") as fh:
      data = fh.read()
    chunks.append(data)
    total += len(data)
    if total >= limit:
      break
  data = np.frombuffer(b"\n".join(chunks)[:limit], np.uint8)
  split = int(0.9 * len(data))  # fixed split: the last 10% (later files) is validation
  return data[:split], data[split:], len(chunks)


# -- the model: a small GPT in Flax NNX ---------------------------------------------------------

class Block(nnx.Module):

  def __init__(self, d, heads, rngs):
    self.heads = heads
    self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, use_bias=False, rngs=rngs)
    self.proj = nnx.Linear(d, d, use_bias=False, rngs=rngs)
    self.fc1, self.fc2 = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(self.ln1(x)).reshape(b, t, 3 * self.heads, -1), 3, axis=2)
    x = x + self.proj(jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(b, t, d))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class GPT(nnx.Module):

  def __init__(self, vocab, context, d, layers, heads, rngs):
    self.tok = nnx.Embed(vocab, d, rngs=rngs)
    self.pos = nnx.Embed(context, d, rngs=rngs)
    self.blocks = nnx.List([Block(d, heads, rngs) for _ in range(layers)])
    self.ln = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, vocab, use_bias=False, rngs=rngs)

  def __call__(self, tokens):
    x = self.tok(tokens) + self.pos(jnp.arange(tokens.shape[1]))
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln(x))


# -- training ------------------------------------------------------------------------------------

def state_bytes(tx, params):
  shapes = jax.eval_shape(tx.init, params)
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def train_one(name, tx, schedule, apply_fn, params0, train, val_batches, offsets,
              eval_params=None):
  ctx = FLAGS.context

  def loss_fn(params, tokens):
    logits = apply_fn(params, tokens[:, :-1])
    labels = tokens[:, 1:].astype(jnp.int32)
    return jnp.mean(cross_entropy(logits, labels))

  def batch(data, starts):
    return jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (ctx + 1,)))(starts)

  def step(params, opt_state, data, starts):  # data: the training bytes, an argument (no
    loss, grads = jax.value_and_grad(loss_fn)(params, batch(data, starts))  # baked constant)
    params, opt_state = optix.apply_step(tx, grads, opt_state, params)  # one pass on a CPU
    return params, opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1), compiler_options=optix.training.compiler_options())
  def val_loss(params, opt_state):
    if eval_params is not None:
      params = eval_params(opt_state, params)
    return jnp.mean(jax.vmap(lambda t: loss_fn(params, t))(val_batches))

  evaluate = jax.jit(val_loss)

  params = jax.tree.map(jnp.copy, params0)
  # Initialised under jit: fresh, distinct buffers, safe to donate (an eager init may hand
  # back one array for two state leaves).
  opt_state = jax.jit(tx.init)(params)
  train_losses, val_steps, val_losses = [], [], []
  step_time, timed_steps = 0.0, 0
  bar = tqdm.trange(FLAGS.steps, desc=f"{name:>10}", file=sys.stderr, mininterval=1.0,
                    dynamic_ncols=True)
  for i in bar:
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, train, offsets[i])
    loss = float(loss)  # blocks: the timing covers the whole step
    if i > 0:  # step 0 compiles
      step_time += time.perf_counter() - t0
      timed_steps += 1
    train_losses.append(loss)
    if (i + 1) % FLAGS.eval_every == 0 or i + 1 == FLAGS.steps:
      val_steps.append(i + 1)
      val_losses.append(float(evaluate(params, opt_state)))
      bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_losses[-1]:.3f}")
  bar.close()
  return {"train": np.asarray(train_losses), "val_steps": np.asarray(val_steps),
          "val": np.asarray(val_losses), "ms": 1e3 * step_time / max(timed_steps, 1),
          "lr": np.asarray(jax.vmap(schedule)(jnp.arange(FLAGS.steps)))}


def cross_entropy(logits, labels):
  logz = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
  return logz - jnp.take_along_axis(logits.astype(jnp.float32), labels[..., None], -1)[..., 0]


def results_table(results, reference="adamw"):
  target = results[reference]["val"][-1] if reference in results else None
  head = (f"{'optimizer':<10} {'train loss':>10} {'val loss':>9} "
          f"{'steps to ' + reference + ' val':>18} {'ms/step':>8} {'state bytes':>12}")
  lines = [head, "-" * len(head)]
  for name, r in results.items():
    train = float(np.mean(r["train"][-min(20, len(r["train"])):]))  # last 20 steps' mean
    reach = "—"
    if target is not None:
      hit = np.flatnonzero(r["val"] <= target)
      reach = str(int(r["val_steps"][hit[0]])) if hit.size else "not reached"
    lines.append(f"{name:<10} {train:>10.4f} {r['val'][-1]:>9.4f} {reach:>18} "
                 f"{r['ms']:>8.1f} {r['bytes']:>12,}")
  return "\n".join(lines)


def plot(results, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, (name, r) in enumerate(results.items()):
    color, style = f"C{i % 10}", "-" if i < 10 else "--"  # ten colours, then dashed
    k = max(len(r["train"]) // 30, 1)
    smooth = np.convolve(r["train"], np.ones(k) / k, mode="valid")
    ax1.plot(np.arange(len(smooth)) + k, smooth, color=color, ls=style, alpha=0.35, lw=0.8)
    ax1.plot(r["val_steps"], r["val"], color=color, ls=style, marker="o", ms=3,
             label=f"{name} (val)")
    ax2.plot(r["lr"], color=color, ls=style, label=name)
  ax1.set(xlabel="step", ylabel="cross-entropy (nats/byte)",
          title="char-GPT on the Python stdlib (faint: train)")
  ax1.legend(fontsize=7, ncol=2)
  ax2.set(xlabel="step", ylabel="learning rate", yscale="log", title=f"{FLAGS.schedule} schedules")
  ax2.legend(fontsize=7, ncol=2)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=100, bbox_inches="tight")
  plt.close(fig)


def main(argv):
  del argv
  t_start = time.perf_counter()
  train, val, num_files = load_corpus(FLAGS.corpus_mb)
  ctx = FLAGS.context
  rng = np.random.default_rng(FLAGS.seed)
  offsets = rng.integers(0, len(train) - ctx - 1, size=(FLAGS.steps, FLAGS.batch_size))
  vstarts = np.random.default_rng(1234).integers(
      0, len(val) - ctx - 1, size=(FLAGS.eval_batches, FLAGS.batch_size))
  val_batches = jnp.asarray(np.stack([[val[s:s + ctx + 1] for s in row] for row in vstarts]))
  train = jnp.asarray(train)

  model = GPT(256, ctx, FLAGS.d_model, FLAGS.layers, FLAGS.heads, nnx.Rngs(FLAGS.seed))
  graphdef, state = nnx.split(model)
  params0 = nnx.to_pure_dict(state)
  n_params = sum(x.size for x in jax.tree.leaves(params0))
  print(f"corpus: {len(train) + len(val):,} bytes of stdlib source from {num_files} files "
        f"(train {len(train):,} / val {len(val):,}); model: {n_params:,} params, "
        f"{FLAGS.layers} layers, d={FLAGS.d_model}, context {ctx}; {FLAGS.steps} steps, "
        f"batch {FLAGS.batch_size}, {FLAGS.schedule} schedule; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)")

  def apply_fn(params, tokens):  # the optimizers (and checkpoints) see a pure dict of arrays
    s = jax.tree.map(lambda x: x, state)
    nnx.replace_by_pure_dict(s, params)
    return nnx.merge(graphdef, s)(tokens)

  results = {}
  for name in FLAGS.optimizers:
    if name not in MENU:
      print(f"note: unknown optimizer {name!r} (choose from {sorted(MENU)}), skipped")
      continue
    entry = MENU[name]
    kind = entry.schedule or FLAGS.schedule
    sched = lambda p: make_schedule(kind, p * FLAGS.lr_scale, FLAGS.steps)
    schedule = sched(entry.peak)
    try:
      tx = entry.build(sched)
    except Exception as e:  # an optimizer still being written elsewhere in the tree
      print(f"note: optix.{name} could not be built ({type(e).__name__}: {e}), skipped")
      continue
    if tx is None:
      print(f"note: optix.{name} does not exist yet, skipped")
      continue
    r = train_one(name, tx, schedule, apply_fn, params0, train, val_batches, offsets,
                  entry.eval_params)
    r["bytes"] = state_bytes(tx, params0)
    results[name] = r
  if not results:
    print("no optimizer ran")
    return
  print()
  print(results_table(results))
  if "adamw" in results:
    target = results["adamw"]["val"][-1]
    for name, r in results.items():
      hit = np.flatnonzero(r["val"] <= target)
      if name != "adamw" and hit.size:
        print(f"{name} reached AdamW's final val loss {target:.4f} at step "
              f"{int(r['val_steps'][hit[0]])} of {FLAGS.steps}")
  if FLAGS.results_json:
    with open(FLAGS.results_json, "w") as f:
      json.dump({name: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}
                 for name, r in results.items()}, f)
  if FLAGS.out:
    plot(results, FLAGS.out)
    print(f"\nwrote {FLAGS.out}")
  print(f"total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
  app.run(main)
