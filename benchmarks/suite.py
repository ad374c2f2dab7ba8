"""The workload suite, scored like AlgoPerf (Dahl et al. 2023, arXiv 2306.07179).

Per workload (``benchmarks/workloads``), ``optix.tools.compare`` tunes every optimizer's
learning rate with the same number of trials and races the tuned configurations (two seeds) to
tuned AdamW's final loss. Per workload we report each optimizer's time to that target as a
ratio to AdamW's; across workloads, the performance profile ``ρ_o(τ)`` = the fraction of
workloads on which optimizer ``o`` reaches the target within ``τ`` × the fastest optimizer's time
(Dolan & Moré 2002, "Benchmarking optimization software with performance profiles"), τ from 1
to 4; a workload not solved counts as never. Writes ``suite.md`` (all tables) and
``profiles.png`` to ``--out``; finished runs are kept there, so an interrupted suite resumes.
Two workloads run side by side (``--jobs``), each in its own process; within a workload every
optimizer runs in the same process, one after another, so they share its conditions.

    python -m benchmarks.suite --out out/bench6                 # make bench
    python -m benchmarks.suite --quick --out out/bench6-quick   # make bench-quick
"""

import argparse
import os
import platform
import resource
import time
from typing import Optional

import numpy as np

from benchmarks import workloads

TAUS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
TOP = 12  # the plots show AdamW and this many others (suite.md's tables show every optimizer)


def profiles(times: dict, taus=TAUS) -> dict:
  """``times[workload][optimizer]`` (seconds, ``None`` = not reached) -> ``{optimizer: [ρ(τ)]}``.

  ``ρ_o(τ) = |{w : t_{w,o} ≤ τ · min_o' t_{w,o'}}| / |W|``; a workload nobody solves counts
  against everyone.
  """
  opts = sorted({o for row in times.values() for o in row})
  out = {o: [] for o in opts}
  for tau in taus:
    for o in opts:
      solved = 0
      for row in times.values():
        best = min((t for t in row.values() if t is not None), default=None)
        t = row.get(o)
        solved += t is not None and best is not None and t <= tau * best * (1 + 1e-12)
      out[o].append(solved / max(len(times), 1))
  return out


def profile_table(prof: dict, taus=TAUS) -> str:
  lines = ["| optimizer | " + " | ".join(f"τ = {t:g}" for t in taus) + " |",
           "|---|" + "---|" * len(taus)]
  for o, row in sorted(prof.items(), key=lambda kv: -sum(kv[1])):
    lines.append(f"| {o} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
  return "\n".join(lines)


def ratio_table(times: dict, baseline: str = "adamw") -> str:
  """One row per optimizer (in the order first met), one column per workload."""
  opts = list(dict.fromkeys(o for row in times.values() for o in row))
  lines = ["| optimizer | " + " | ".join(times) + " |", "|---|" + "---|" * len(times)]
  for o in opts:
    cells = []
    for row in times.values():
      t, base = row.get(o), row.get(baseline)
      cells.append("not reached" if t is None else (f"{t / base:.2f}" if base else "—"))
    lines.append(f"| {o} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_profiles(prof: dict, path: str, taus=TAUS, top: Optional[int] = TOP,
                  baseline: str = "adamw") -> str:
  """The profiles of the ``top`` optimizers with the largest area under them, and the
  baseline's (all when ``top`` is None); the table has every one."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7.5, 4))
  ranked = sorted(prof.items(), key=lambda kv: -sum(kv[1]))  # the legend lists the best first
  title = "performance profiles (ties shifted apart slightly)"
  if top is not None and len(ranked) > top + 1:
    ranked = [kv for i, kv in enumerate(ranked) if i < top or kv[0] == baseline]
    title = (f"performance profiles: the {top} best of {len(prof)} and {baseline}\n"
             "(ties shifted apart slightly)")
  tab20 = plt.get_cmap("tab20")
  colors = [tab20(k) for k in range(0, 20, 2)] + [tab20(k) for k in range(1, 20, 2)]  # dark first
  for i, (o, row) in enumerate(ranked):
    # Ties would hide each other: each line is shifted by a hair and drawn in its own style.
    shift = (i - (len(ranked) - 1) / 2) * 0.006
    ax.step(taus, np.asarray(row) + shift, where="post", color=colors[i % 20], label=o, lw=1.8,
            ls=("-", "--", "-.", ":")[(i + i // 20) % 4])  # distinct for up to 80 lines
  ax.set(xlabel="τ (time to target ÷ the fastest optimizer's)", ylabel="fraction of workloads",
         title=title, ylim=(-0.06, 1.06),
         xlim=(taus[0], taus[-1]))
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def machine() -> str:
  import jax
  import optax
  import optix  # noqa: F401  (its version is the checkout's)
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{jax.devices()[0].platform}; Python {platform.python_version()}, jax {jax.__version__},"
          f" optax {optax.__version__}; {time.strftime('%Y-%m-%d', time.gmtime())}")


def race(name: str, quick: bool, optimizers, trials: int, seeds: int, out: str,
         progress: bool = True) -> dict:
  """One workload's comparison (resumed from ``out``), its plot, and the numbers the suite
  scores: run in a worker process when the suite runs workloads side by side."""
  w = workloads.load(name, quick)
  result = workloads.run(w, optimizers, trials, tuple(range(seeds)), out, progress)
  result.plot(os.path.join(out, f"{name}.png"), title=name, top=TOP)
  return {"times": {o: s["time_to_target_s"] for o, s in result.summary.items()},
          "steps": {o: s["steps_to_target"] for o, s in result.summary.items()},
          "edges": [f"{o} on {name}" for o, s in result.summary.items() if s["edge"]],
          "section": f"### {name}\n\n{w.description}; {w.steps} steps.\n\n{result.table()}\n"}


def _race_all(names, jobs, *args):
  """``{name: race(name, *args)}``; with ``jobs`` > 1, that many workloads at a time, each in
  its own process (on a CPU one workload's small steps use about one core), the later ones of
  ``workloads.NAMES`` (the larger models) first."""
  if jobs <= 1 or len(names) <= 1:
    return {name: race(name, *args) for name in names}
  import concurrent.futures
  import multiprocessing
  costliest_first = sorted(names, key=lambda n: -workloads.NAMES.index(n)
                           if n in workloads.NAMES else 0)
  done = {}
  with concurrent.futures.ProcessPoolExecutor(
      jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
    futures = {pool.submit(race, name, *args, False): name for name in costliest_first}
    for future in concurrent.futures.as_completed(futures):
      done[futures[future]] = future.result()
      print(f"{futures[future]} done", flush=True)
  return {name: done[name] for name in names}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help=f"only {', '.join(workloads.QUICK)}")
  parser.add_argument("--workloads", default="", help="comma-separated subset")
  parser.add_argument("--optimizers", default="",
                      help="comma-separated; default: all of workloads.OPTIMIZERS, or "
                      "workloads.QUICK_OPTIMIZERS with --quick")
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--jobs", type=int, default=2,
                      help="workloads run side by side, each in its own process")
  parser.add_argument("--out", default="out/bench6")
  args = parser.parse_args(argv)
  names = (args.workloads.split(",") if args.workloads
           else workloads.QUICK if args.quick else workloads.NAMES)
  optimizers = (args.optimizers.split(",") if args.optimizers
                else workloads.QUICK_OPTIMIZERS if args.quick else workloads.OPTIMIZERS)
  start, cpu = time.perf_counter(), time.process_time()
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  raced = _race_all(names, args.jobs, args.quick, optimizers, args.trials, args.seeds, args.out)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu_s = (time.process_time() - cpu + after.ru_utime + after.ru_stime - children.ru_utime
           - children.ru_stime)
  times = {name: r["times"] for name, r in raced.items()}
  steps = {name: r["steps"] for name, r in raced.items()}
  edges = [e for r in raced.values() for e in r["edges"]]
  sections = [r["section"] for r in raced.values()]
  print(*sections, sep="\n", flush=True)
  prof = profiles(times)
  report = "\n".join([
      f"Machine: {machine()}. {args.trials} learning rates per optimizer, {args.seeds} seeds for "
      f"the chosen one; this invocation {time.perf_counter() - start:.0f} s of wall-clock time, "
      f"{cpu_s:.0f} s of CPU time, {min(args.jobs, len(names))} workload(s) at a time (runs "
      "found in --out are not rerun).\n",
      "### Time to target ÷ tuned AdamW's (lower is better)\n", ratio_table(times), "",
      "### Steps to target ÷ tuned AdamW's (the same, without the cost of a step)\n",
      ratio_table(steps), "",
      f"Learning rates chosen at the edge of their grid: {len(edges)} of "
      f"{sum(len(row) for row in times.values())}" + (f" ({', '.join(edges)})." if edges else "."),
      "",
      "### Performance profiles (fraction of workloads within τ × the fastest)\n",
      profile_table(prof), "", *sections])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "suite.md"), "w") as f:
    f.write(report)
  print(report.split("### " + names[0])[0])
  print(f"wrote {plot_profiles(prof, os.path.join(args.out, 'profiles.png'))} and "
        f"{os.path.join(args.out, 'suite.md')}")


if __name__ == "__main__":
  main()
