r"""Compare optimizers on your own model, with the same tuning budget for each.

Claimed speedups over AdamW tend to shrink once AdamW gets the same tuning
budget as the new method (Wen et al. 2025, "Fantastic Pretraining Optimizers
and Where to Find Them", arXiv 2509.02046); AlgoPerf (Dahl et al. 2023,
arXiv 2306.07179) scores optimizers by time to a fixed target. This tool does
both, small: every optimizer, the baseline included, gets ``trials`` runs over
a log-spaced learning-rate grid around its default; the best learning rate is
rerun on the other ``seeds``; the target is the tuned baseline's final loss.

    >>> result = optix.tools.compare(params, loss_fn, batches, steps=500,
    ...                              optimizers=["adamw", "muon", "lion"], out="cmp.json")
    >>> print(result.table())          # Markdown
    >>> result.plot("cmp.png")

Grid: ``lr_k = center · ratio^{k - (trials-1)/2}``, ``k = 0 … trials-1``.
The loss curve of a run is the trailing mean of the training loss over
``window = max(1, steps // 20)`` steps (or ``eval_fn`` every ``eval_every``
steps); a run's final loss is the curve's last value; the seed curves are
averaged. Steps to target: the first step at which an optimizer's averaged
curve is at or below the baseline's final averaged loss; time to target: those
steps × ms/step, the fastest step of the run (compilation excluded): on a shared
machine other work only ever adds time to a step, so the minimum is the best
estimate of its cost (wall-clock totals would rank optimizers by the load). The learning rate is an argument of
the jitted step, so each optimizer compiles once for all its runs.
"""

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _validate
from optix.tools.memory import state_memory


class _Named(NamedTuple):
  lr: float                                 # the grid's default centre
  make: Callable[[Any], Any]                # learning rate (or schedule) -> tx
  schedule: Optional[str] = None            # overrides ``compare``'s schedule for this one
  eval_params: Optional[Callable] = None    # (state, params) -> the params to score


def _times_schedule(make):
  """``lr -> make(1) · lr`` for an optimizer whose learning rate must be a Python float (optax's
  SM3): its step is linear in the learning rate, so the product is the optimizer at that
  learning rate (or schedule), and the rate may be traced."""
  import optix

  def build(lr):
    return optix.chain(make(1.0), optix.scale_by_learning_rate(lr, flip_sign=False))
  return build


def _named():
  """name -> :class:`_Named`: library defaults, one LR knob each."""
  import optix  # the public aliases (a late import: optix imports this package)
  sf_eval = optix.schedule_free_eval_params
  return {
      # Adam and its variants.
      "adamw": _Named(3e-3, optix.adamw),
      "adam": _Named(3e-3, optix.adam),
      "nadam": _Named(3e-3, optix.nadam),
      "nadamw": _Named(3e-3, optix.nadamw),
      "amsgrad": _Named(3e-3, optix.amsgrad),
      "radam": _Named(3e-3, optix.radam),
      "adabelief": _Named(3e-3, optix.adabelief),
      "acprop": _Named(3e-3, optix.acprop),
      # Yogi's eps (1e-3) damps small gradients: its authors' learning rate is 1e-2.
      "yogi": _Named(1e-2, optix.yogi),
      "adamax": _Named(3e-3, optix.adamax),
      "adamaxw": _Named(3e-3, optix.adamaxw),
      "adan": _Named(3e-3, optix.adan),
      "adopt": _Named(3e-3, optix.adopt),
      "cautious_adamw": _Named(3e-3, optix.cautious_adamw),
      "ademamix": _Named(3e-3, optix.ademamix),
      # Its momentum sums gradients without (1 - b1): about 1/(1 - 0.99) = 100x Adam's step.
      "simplified_ademamix": _Named(3e-5, optix.simplified_ademamix),
      "mars_adamw": _Named(3e-3, optix.mars_adamw),
      # Min-max methods (optax deprecates optimistic_adam for its v2).
      "optimistic_adam_v2": _Named(3e-3, optix.optimistic_adam_v2),
      "optimistic_gradient_descent": _Named(0.3, optix.optimistic_gradient_descent),
      # Layer-wise normalised and trust-ratio methods.
      "lamb": _Named(3e-3, optix.lamb),
      "novograd": _Named(1e-2, optix.novograd),
      # The step is about lr × 0.001 (trust coefficient) × 10 (momentum) of each layer's norm.
      "lars": _Named(3.0, optix.lars),
      "fromage": _Named(1e-2, optix.fromage),
      # AdaGrad, RMSProp and their kin.
      "adagrad": _Named(3e-2, optix.adagrad),
      "rmsprop": _Named(1e-3, optix.rmsprop),
      "sm3": _Named(3e-2, _times_schedule(optix.sm3)),
      "madgrad": _Named(1e-2, optix.madgrad),
      # Steps in the params' units: 1 is the method (its default).
      "adadelta": _Named(1.0, optix.adadelta),
      # SGD and sign methods.
      "sgd": _Named(0.1, lambda lr: optix.sgd(lr, momentum=0.9, nesterov=True)),
      "noisy_sgd": _Named(0.3, lambda lr: optix.noisy_sgd(lr, key=0)),
      "lion": _Named(3e-4, optix.lion),
      "cautious_lion": _Named(3e-4, optix.cautious_lion),
      "sign_sgd": _Named(3e-4, optix.sign_sgd),
      "signum": _Named(3e-4, optix.signum),
      # The learning rate is Rprop's first step size, which it then adapts itself: no schedule.
      "rprop": _Named(1e-3, optix.rprop, "constant"),
      # Matrix methods. Both sides of Muon share one AdamW-sized learning rate (Liu et al.
      # 2025, arXiv 2502.16982).
      "muon": _Named(3e-3, lambda lr: optix.muon(
          lr, consistent_rms=0.2, adam_nesterov=False,
          muon_weight_dimension_numbers=optix.transforms.muon.flax_dimension_numbers())),
      "soap": _Named(3e-3, optix.soap),
      "shampoo": _Named(3e-3, optix.shampoo),
      "psgd_kron": _Named(1e-3, optix.psgd_kron),
      "galore": _Named(3e-3, optix.galore),
      # Memory-lean.
      "adafactor": _Named(1e-2, lambda lr: optix.adafactor(lr, multiply_by_parameter_scale=False)),
      "adamw8bit": _Named(3e-3, optix.adamw8bit),
      "adam8bit": _Named(3e-3, optix.adam8bit),
      # Parameter-free: the learning rate multiplies the method's own step-size estimate, so 1
      # is the method.
      "prodigy": _Named(1.0, optix.prodigy),
      "dadapt_adamw": _Named(1.0, optix.dadapt_adamw),
      "dog": _Named(1.0, optix.dog),
      "dowg": _Named(1.0, optix.dowg),
      "cocob": _Named(1.0, optix.cocob),
      # Mechanic learns the scale of Adam's step: Adam's peak learning rate 1 (its authors').
      "mechanize": _Named(1.0, lambda lr: optix.mechanize(optix.adam(lr))),
      # A warmup, then constant (no decay: the averaging replaces it); scored at the average x.
      "schedule_free_adamw": _Named(2.5e-3, optix.schedule_free_adamw, "warmup_constant",
                                    sf_eval),
      "schedule_free_sgd": _Named(1.0, optix.schedule_free_sgd, "warmup_constant", sf_eval),
  }


NAMES = ("adamw", "adam", "nadam", "nadamw", "amsgrad", "radam", "adabelief", "acprop", "yogi",
         "adamax", "adamaxw", "adan", "adopt", "cautious_adamw", "ademamix", "simplified_ademamix",
         "mars_adamw", "optimistic_adam_v2", "optimistic_gradient_descent", "lamb", "novograd",
         "lars", "fromage", "adagrad", "rmsprop", "sm3", "madgrad", "adadelta", "sgd", "noisy_sgd",
         "lion", "cautious_lion", "sign_sgd", "signum", "rprop", "muon", "soap", "shampoo",
         "psgd_kron", "galore", "adafactor", "adamw8bit", "adam8bit", "prodigy", "dadapt_adamw",
         "dog", "dowg", "cocob", "mechanize", "schedule_free_adamw", "schedule_free_sgd")
SCHEDULES = ("cosine", "wsd", "constant", "warmup_constant")


def _schedule(kind, peak, steps):
  """The learning rate over ``steps``: ``peak`` × a unit-peak shape, so ``peak`` may be traced."""
  from optix import schedules
  if callable(kind):
    return kind(peak, steps)
  if kind == "constant":
    return peak
  warmup = max(steps // 20, 1)
  if kind == "cosine":
    shape = schedules.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(steps, warmup + 1), 0.1)
  elif kind == "warmup_constant":
    shape = schedules.warmup_constant_schedule(0.0, 1.0, warmup)
  else:
    shape = schedules.wsd_schedule(1.0, warmup, steps, max(steps // 5, 1), 0.01)
  return lambda count: peak * shape(count)


def _resolve(optimizers, learning_rates, default_lr):
  """-> {label: _Named(center lr, factory, schedule, eval_params)}, with errors in the caller's
  words."""
  if isinstance(optimizers, str) or callable(optimizers):
    optimizers = [optimizers]
  if not isinstance(optimizers, dict):
    items = []
    for o in optimizers:
      label = o if isinstance(o, str) else getattr(o, "__name__", None)
      if not label or label == "<lambda>":
        raise ValueError("optimizers: a factory in a list needs a name; pass a dict "
                         "{'label': factory} instead")
      items.append((label, o))
    optimizers = dict(items)
  if not optimizers:
    raise ValueError("optimizers must name at least one optimizer, got none")
  named = _named()
  out = {}
  for label, spec in optimizers.items():
    center, extra = None, {}
    if isinstance(spec, tuple):
      if len(spec) != 2 or not callable(spec[0]):
        raise ValueError(f"optimizers[{label!r}] must be a name, a factory lr -> tx, or "
                         f"(factory, default_lr), got {spec!r}")
      spec, center = spec
      _validate.positive(f"the default learning rate of {label!r}", center)
    if isinstance(spec, str):
      if spec not in named:
        raise ValueError(f"optimizers: unknown name {spec!r}; choose from {list(NAMES)} "
                         f"or pass a factory lr -> GradientTransformation")
      entry = named[spec]
      center, spec = center or entry.lr, entry.make
      extra = dict(schedule=entry.schedule, eval_params=entry.eval_params)
    elif not callable(spec):
      raise ValueError(f"optimizers[{label!r}] must be a name or a factory lr -> tx, "
                       f"got {type(spec).__name__}")
    center = learning_rates.get(label, center or default_lr)
    _validate.positive(f"learning_rates[{label!r}]", center)
    out[label] = _Named(float(center), spec, **extra)
  unknown = set(learning_rates) - set(out)
  if unknown:
    raise ValueError(f"learning_rates names {sorted(unknown)}, which are not among the "
                     f"optimizers {list(out)}")
  return out


def grid(center: float, trials: int, ratio: float) -> list:
  """``trials`` learning rates, log-spaced by ``ratio``, centred (geometrically) on ``center``."""
  return [float(center * ratio ** (k - (trials - 1) / 2)) for k in range(trials)]


def _key(label, lr, seed):
  return f"{label}|lr={lr:.6g}|seed={seed}"


def _curve(run, window):
  """(steps, values) of a run: eval points, or the trailing mean of the training loss."""
  if run["eval_steps"]:
    return np.asarray(run["eval_steps"]), np.asarray(run["eval_losses"], float)
  loss = np.asarray(run["losses"], float)
  c = np.cumsum(np.where(np.isfinite(loss), loss, np.inf))
  n = np.arange(1, len(loss) + 1)
  lagged = np.concatenate([np.zeros(window), c[:-window]]) if len(c) > window else np.zeros(len(c))
  return n, (c - lagged[:len(c)]) / np.minimum(n, window)


@dataclasses.dataclass
class CompareResult:
  """Every run (``runs``: key -> record), the chosen learning rates and the table's numbers.

  ``summary[label]`` holds ``lr`` (chosen), ``final`` and ``final_spread`` (mean
  and half range over seeds), ``best``, ``steps_to_target``, ``time_to_target_s``
  (``None`` when not reached), ``ms_per_step``, ``state_bytes``, ``edge`` (the
  chosen LR is at the end of the grid: widen it), ``steps`` and ``curve``.
  """
  runs: dict
  summary: dict
  baseline: str
  target: float
  steps: int

  def table(self) -> str:
    """The comparison as a Markdown table (ratios are time to target vs the baseline)."""
    base = self.summary[self.baseline]
    lines = ["| optimizer | lr | final loss | best loss | steps to target | time to target (s) "
             "| × baseline time | ms/step | state bytes |", "|---" * 9 + "|"]
    for label, s in self.summary.items():
      lr = f"{s['lr']:.3g}" + (" (grid edge)" if s["edge"] else "")
      final = (f"{s['final']:.4g} ± {s['final_spread']:.2g}" if np.isfinite(s["final"])
               else "diverged")
      if s["steps_to_target"] is None:
        reach, secs, ratio = f"not in {self.steps}", "—", "—"
      else:
        reach, secs = str(s["steps_to_target"]), f"{s['time_to_target_s']:.2f}"
        ratio = (f"{s['time_to_target_s'] / base['time_to_target_s']:.2f}"
                 if base["time_to_target_s"] else "—")
      lines.append(f"| {label} | {lr} | {final} | {s['best']:.4g} | {reach} | {secs} | {ratio} "
                   f"| {s['ms_per_step']:.2f} | {s['state_bytes']:,} |")
    lines.append(f"\nTarget: {self.baseline}'s tuned final loss {self.target:.4g}; "
                 f"{self.steps} steps; loss ± half the range over seeds.")
    return "\n".join(lines)

  __str__ = table

  def plot(self, path: str, title: str = "optimizer comparison",
           top: Optional[int] = None) -> str:
    """Writes the tuned loss curves and the loss-vs-learning-rate sweeps; returns ``path``.

    ``top``: only the baseline and the ``top`` others with the lowest final losses (a plot of
    dozens of curves shows none of them); None (default): every optimizer.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summary = self.summary
    if top is not None and len(summary) > top + 1:
      others = sorted((k for k in summary if k != self.baseline), key=lambda k: summary[k]["final"])
      keep = {self.baseline, *others[:top]}
      summary = {k: s for k, s in summary.items() if k in keep}
      title += f" ({top} lowest final losses of {len(self.summary) - 1}, and {self.baseline})"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    tab20 = plt.get_cmap("tab20")
    colors = [tab20(k) for k in range(0, 20, 2)] + [tab20(k) for k in range(1, 20, 2)]
    for i, (label, s) in enumerate(summary.items()):
      # A colour and a line style per optimizer, distinct for up to 80 of them.
      style = dict(color=colors[i % 20], ls=("-", "--", "-.", ":")[(i // 10 + i // 40) % 4])
      x, y = s["curve"]
      ax1.plot(x, y, label=f"{label} (lr {s['lr']:.2g})", **style)
      lrs = sorted(s["sweep"])
      ax2.plot(lrs, [min(s["sweep"][lr], 1e30) for lr in lrs], marker="o", **style)
    ax1.axhline(self.target, color="0.4", ls=":", lw=1, label="target")
    finite = [v for s in summary.values() for v in np.asarray(s["curve"][1]) if np.isfinite(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) > 100 * min(finite)  # decades
    if finite:
      lo, hi = min(finite), np.percentile(finite, 95)
      ax1.set_ylim((lo / 2, hi) if log else (lo - 0.05 * abs(hi - lo), hi))
    ax1.set(xlabel="step", ylabel="loss", title=title, yscale="log" if log else "linear")
    ax2.set(xscale="log", xlabel="learning rate", ylabel="final loss (first seed)",
            title="learning-rate sweep", yscale="log" if log else "linear")
    if finite:
      ax2.set_ylim(ax1.get_ylim())
    fig.legend(*ax1.get_legend_handles_labels(), fontsize=8, loc="center left",
               bbox_to_anchor=(ax2.get_position().x1 + 0.01, 0.5))  # one legend, for both
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _lowers_traced(cache, lower):
  """Whether a program shared by every learning rate lowers with the rate traced (``lower()``
  tried once, the answer kept in ``cache``): a factory that branches on the rate in Python
  cannot, and then gets one program per rate (a real error resurfaces from that one)."""
  if "traced" not in cache:
    try:
      lower()
      cache["traced"] = True
    except Exception:  # noqa: BLE001
      cache["traced"] = False
  return cache["traced"]


def _stepper(factory, schedule, steps, loss_fn):
  """One jitted step for every learning rate of an optimizer: the peak is an argument, so the
  step compiles once per optimizer instead of once per trial. A factory that needs a concrete
  learning rate (it branches on it in Python) gets a step compiled per learning rate."""
  def make(peak):
    def step(p, state, batch, lr):
      loss, grads = jax.value_and_grad(loss_fn)(p, batch)
      updates, state = factory(_schedule(schedule, lr, steps)).update(grads, state, p)
      return _base.apply_updates(p, updates), state, loss
    return jax.jit(step, donate_argnums=(0, 1), static_argnums=() if peak is None else (3,))

  shared = make(None)
  cache = {}

  def get(lr, params, state, batch):
    if _lowers_traced(cache, lambda: shared.lower(params, state, batch, jnp.float32(lr))):
      return lambda p, st, b: shared(p, st, b, jnp.float32(lr))
    f = cache.setdefault(lr, make(lr))
    return lambda p, st, b: f(p, st, b, lr)

  return get


def _initializer(factory, schedule, steps):
  """``get(lr, tx, params) -> (params -> state)``: like :func:`_stepper`, one jitted ``init`` for
  every learning rate (the peak an argument), or ``tx.init`` jitted per run where the factory
  needs a concrete learning rate (``params`` serve to try the shared one)."""
  shared = jax.jit(lambda p, lr: factory(_schedule(schedule, lr, steps)).init(p))
  cache = {}

  def get(lr, tx, params):
    if _lowers_traced(cache, lambda: shared.lower(params, jnp.float32(lr))):
      return lambda p: shared(p, jnp.float32(lr))
    return jax.jit(tx.init)

  return get


def _train(init_state, stepper, lr, params, loss_fn, batches, steps, evaluate, eval_every, label,
           seed, score=None):
  """One run. ``score(params, state, batch)``, when given, is the loss recorded in place of the
  step's own (e.g. at schedule-free's average): computed before the step, outside its timing;
  ``evaluate(params, state)`` is the held-out loss."""
  params = jax.tree.map(jnp.array, params)  # a copy of the caller's arrays: safe to donate
  state = init_state(params)  # fresh, distinct buffers
  it = iter(batches(seed))
  losses, times, eval_steps, eval_losses, diverged = [], [], [], [], False
  for i in range(steps):
    try:
      batch = next(it)
    except StopIteration:
      raise ValueError(f"batches({seed}) ran out after {i} batches; steps={steps} needs "
                       f"{steps}") from None
    if i == 0:
      shape = jax.eval_shape(loss_fn, params, batch).shape
      if shape != ():
        raise ValueError(f"loss_fn must return a scalar, got shape {shape}")
      step = stepper(lr, params, state, batch)
    scored = None if score is None else float(score(params, state, batch))  # before donation
    t0 = time.perf_counter()
    params, state, loss = step(params, state, batch)
    loss = float(loss)  # blocks: the time covers the whole step
    times.append(time.perf_counter() - t0)
    losses.append(loss if scored is None else scored)
    if evaluate is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
      eval_steps.append(i + 1)
      eval_losses.append(float(evaluate(params, state)))
    if not math.isfinite(loss) or (eval_losses and not math.isfinite(eval_losses[-1])):
      diverged = True
      break
  timed = times[1:] or times  # step 0 compiles
  return {"optimizer": label, "seed": seed, "losses": losses, "eval_steps": eval_steps,
          "eval_losses": eval_losses, "ms_per_step": 1e3 * float(np.min(timed)),
          "diverged": diverged}


def _load(out, config):
  if out is None or not os.path.exists(out):
    return {}
  with open(out) as f:
    saved = json.load(f)
  if saved.get("config") != config:
    raise ValueError(f"out={out!r} holds runs of a different comparison ({saved.get('config')} "
                     f"vs {config}); delete it or choose another path")
  return saved["runs"]


def _save(out, config, runs):
  if out is None:
    return
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"config": config, "runs": runs}, f)
  os.replace(tmp, out)  # atomic: an interrupt never leaves half a file


class _Progress:
  def __init__(self, total, enabled):
    self.enabled, self.bar, self.done, self.total = enabled, None, 0, total
    if enabled:
      try:
        import tqdm
        self.bar = tqdm.tqdm(total=total, desc="compare", unit="run", file=sys.stderr)
      except ImportError:
        pass

  def update(self, text):
    self.done += 1
    if self.bar is not None:
      self.bar.set_postfix_str(text)
      self.bar.update(1)
    elif self.enabled:
      print(f"compare: run {self.done}/{self.total} {text}", file=sys.stderr, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def compare(init_params: Any, loss_fn: Callable[[Any, Any], jax.Array],
            batches: Callable[[int], Iterable], *, steps: int,
            optimizers: Any = ("adamw", "muon", "lion"), trials: int = 3,
            baseline: str = "adamw", seeds: Iterable[int] = (0, 1), out: Optional[str] = None,
            learning_rates: Optional[dict] = None, lr_ratio: float = 3.0,
            default_lr: float = 1e-3, schedule: Any = "cosine",
            eval_fn: Optional[Callable[[Any], jax.Array]] = None, eval_every: int = 0,
            callback: Optional[Callable[[dict], None]] = None,
            progress: bool = True) -> CompareResult:
  r"""Tunes each optimizer's learning rate on the same budget, then races them to a target.

  For each optimizer, ``trials`` runs at ``lr_k = center · lr_ratio^{k-(trials-1)/2}``
  on ``seeds[0]``; the learning rate with the lowest final loss is rerun on
  ``seeds[1:]``. The target is the baseline's seed-averaged final loss; the
  table reports steps and time to it (see the module docstring for the exact
  definitions). Every run jits one step with params and optimizer state donated.

  Args:
    init_params: the initial parameters, or ``seed -> params`` for a
      per-seed initialisation (not modified).
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    batches: ``batches(seed) -> iterable of batches``, at least ``steps`` long;
      called afresh for each run, so every optimizer sees the same data in the
      same order for a given seed.
    steps: training steps per run.
    optimizers: names (see ``NAMES``: ``"adamw"``, ``"muon"``, ``"lion"``,
      ``"sgd"``, ...), or a dict ``label -> name | factory | (factory, default_lr)``
      where ``factory(learning_rate) -> GradientTransformation`` is given a
      schedule (e.g. ``optix.adamw``; a factory without a default uses ``default_lr``).
    trials: learning rates tried per optimizer (the same for every one, the
      baseline included: 3 by default, which brackets the default by 3× each way).
    baseline: the label whose tuned final loss is the target.
    seeds: at least one; two or more (default) average the chosen configurations
      over seeds, so a lucky seed does not pick the winner.
    out: a JSON path; each finished run is saved there at once, and a rerun with
      the same ``out`` skips the runs it holds (an interrupted comparison resumes).
    learning_rates: ``label -> center`` overriding the defaults of the grid.
    lr_ratio: the grid's spacing (> 1).
    default_lr: the center for factories given without one.
    schedule: ``"cosine"`` (5% warmup, decay to 0.1× peak; the default, as most
      runs are scheduled), ``"wsd"``, ``"constant"``, ``"warmup_constant"`` (5%
      warmup), or ``(peak, steps) -> schedule``. A named schedule-free optimizer
      always gets ``"warmup_constant"`` and is scored at its average ``x``
      (:func:`optix.schedule_free_eval_params`), as its users would evaluate it.
    eval_fn: ``eval_fn(params) -> scalar`` (e.g. a validation loss); when given,
      curves and targets use it, every ``eval_every`` steps (default ``steps // 20``).
    callback: called with each finished run's record, after it is saved.
    progress: a progress bar over runs (tqdm if installed, else a line per run).
  """
  _validate.integer("steps", steps, 1)
  _validate.integer("trials", trials, 1)
  _validate.in_range("lr_ratio", lr_ratio, 1.0, low_closed=False)
  if not callable(loss_fn):
    raise ValueError(f"loss_fn must be a function (params, batch) -> loss, got {loss_fn!r}")
  if not callable(batches):
    raise ValueError("batches must be a function seed -> iterable of batches (so that every "
                     f"run sees the same data order), got {type(batches).__name__}")
  seeds = [_validate.integer("seeds", s) for s in
           ([seeds] if isinstance(seeds, int) else list(seeds))]
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be one or more distinct integers, got {seeds}")
  if not (callable(schedule) or schedule in SCHEDULES):
    raise ValueError(f"schedule must be one of {list(SCHEDULES)} or (peak, steps) -> "
                     f"schedule, got {schedule!r}")
  if eval_fn is not None:
    eval_every = _validate.integer("eval_every", eval_every, 0) or max(steps // 20, 1)
  specs = _resolve(optimizers, dict(learning_rates or {}), default_lr)
  if baseline not in specs:
    raise ValueError(f"baseline {baseline!r} is not among the optimizers {list(specs)}")

  config = {"steps": steps, "schedule": schedule if isinstance(schedule, str) else "custom",
            "eval_every": eval_every if eval_fn is not None else 0}
  runs = _load(out, config)
  init = init_params if callable(init_params) else (lambda seed: init_params)
  window = max(1, steps // 20)
  grids = {label: grid(spec.lr, trials, lr_ratio) for label, spec in specs.items()}
  bar = _Progress(len(specs) * (trials + len(seeds) - 1), progress)

  counted, steppers, inits = set(), {}, {}
  plain_eval = None if eval_fn is None else jax.jit(lambda p, state: eval_fn(p))

  def scorers(point):
    """(training-loss scorer or None, held-out evaluator or None) at ``point(state, params)``."""
    if point is None:
      return None, plain_eval
    return (jax.jit(lambda p, state, batch: loss_fn(point(state, p), batch)),
            None if eval_fn is None else jax.jit(lambda p, state: eval_fn(point(state, p))))

  def run(label, lr, seed):
    key = _key(label, lr, seed)
    if key not in runs:
      spec = specs[label]
      kind = spec.schedule or schedule
      tx = spec.make(_schedule(kind, lr, steps))
      if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise ValueError(f"optimizers[{label!r}] must return a GradientTransformation (init, "
                         f"update), got {type(tx).__name__}")
      if seed not in inits:  # each run trains a copy
        inits[seed] = init(seed)
      params = inits[seed]
      if label not in steppers:
        steppers[label] = (_stepper(spec.make, kind, steps, loss_fn),
                           _initializer(spec.make, kind, steps), *scorers(spec.eval_params))
      stepper, initializer, score, evaluate = steppers[label]
      t0 = time.perf_counter()
      rec = _train(initializer(lr, tx, params), stepper, lr, params, loss_fn, batches, steps,
                   evaluate, eval_every, label, seed, score)
      rec.update(lr=lr, state_bytes=state_memory(tx, params).total_bytes,
                 wall_s=time.perf_counter() - t0)
      runs[key] = rec
      _save(out, config, runs)
      if callback is not None:
        callback(rec)
    rec = runs[key]
    if key in counted:  # the first seed's run of the chosen LR is the tuning run itself
      return rec
    counted.add(key)
    bar.update(f"{label} lr={lr:.2g} seed={seed}: "
               + ("diverged" if rec["diverged"] else f"{_curve(rec, window)[1][-1]:.4f}"))
    return rec

  def final(rec):
    return math.inf if rec["diverged"] else float(_curve(rec, window)[1][-1])

  summary = {}
  try:
    for label in specs:
      sweep = {lr: final(run(label, lr, seeds[0])) for lr in grids[label]}
      best_lr = min(grids[label], key=lambda lr: sweep[lr])
      recs = [run(label, best_lr, s) for s in seeds]
      summary[label] = _summarize(recs, window, sweep, best_lr, grids[label])
  finally:
    bar.close()
  target = summary[baseline]["final"]
  for s in summary.values():
    x, y = s["curve"]
    hit = np.flatnonzero(y <= target) if np.isfinite(target) else []
    s["steps_to_target"] = int(x[hit[0]]) if len(hit) else None
    s["time_to_target_s"] = (s["steps_to_target"] * s["ms_per_step"] / 1e3 if len(hit) else None)
  return CompareResult(runs, summary, baseline, float(target), steps)


def _summarize(recs, window, sweep, lr, lrs):
  """Seed-averaged curve (a diverged run counts as inf from where it stopped) and numbers."""
  curves = [_curve(rec, window) for rec in recs]
  x = max((c[0] for c in curves), key=len)
  ys = np.stack([np.pad(y.astype(float), (0, len(x) - len(y)), constant_values=np.inf)
                 for _, y in curves])
  finals = ys[:, -1]
  ok = bool(np.isfinite(finals).all())
  mean = ys.mean(axis=0)
  return {"lr": lr, "edge": len(lrs) > 1 and lr in (lrs[0], lrs[-1]),
          "final": float(finals.mean()) if ok else math.inf,
          "final_spread": float(np.ptp(finals) / 2) if ok else math.inf,
          "best": float(np.min(mean)), "curve": (x, mean), "sweep": sweep,
          "ms_per_step": float(np.min([r["ms_per_step"] for r in recs])),
          "state_bytes": int(recs[0]["state_bytes"]), "seeds": [r["seed"] for r in recs]}
