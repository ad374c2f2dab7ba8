r"""Regenerates every picture of the docs gallery and the gallery page itself.

Runs each example with the exact command listed in ``GALLERY`` (raw PNGs under
``out/gallery/``), shrinks each to a 128-colour palette PNG under
``docs/_static/gallery/`` (small enough to commit), and writes
``docs/gallery.md`` from the same list, so the page cannot drift from the
commands. About 5-8 minutes on 2 quiet CPU cores, most of it the flagship.

    python examples/make_gallery.py                 # everything
    python examples/make_gallery.py --only=digits   # one picture (gallery.md is rewritten in full)
"""

import os
import pathlib
import shlex
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("only", [], "Names of the pictures to regenerate (default: all).")
flags.DEFINE_integer("colors", 128, "Palette size of the committed PNGs.")

ROOT = pathlib.Path(__file__).resolve().parent.parent
RAW = ROOT / "out" / "gallery"
STATIC = ROOT / "docs" / "_static" / "gallery"
PAGE = ROOT / "docs" / "gallery.md"

# name -> (title, command: script and flags without the output paths, {output flag: picture},
#          one sentence on what it shows).
GALLERY = {
    "compare_optimizers": (
        "The flagship: optimizers race on a char-GPT",
        "compare_optimizers.py --steps=300 --optimizers=adamw,lion,adafactor,adamw8bit,muon,"
        "shampoo,soap,psgd,sf_adamw,prodigy,ademamix,mars",
        {"--out": "compare_optimizers"},
        "AdamW, Lion, Adafactor, 8-bit AdamW, Muon, Shampoo, SOAP, PSGD (Kron), schedule-free "
        "AdamW, Prodigy, AdEMAMix and MARS train the same small Flax NNX GPT on Python's "
        "standard-library source with the same data order and budget, each at its menu learning "
        "rate: validation loss (dots; faint lines are smoothed train loss) and each optimizer's "
        "schedule (schedule-free AdamW's is constant after the warmup; Prodigy's multiplies its "
        "own step-size estimate). The same rates tuned over a grid are on the choosing page."),
    "rosenbrock_race": (
        "Rosenbrock race",
        "rosenbrock_race.py --steps=2000",
        {"--out": "rosenbrock_race"},
        "Eight optimizers from (-1.5, 2) on f(x, y) = (1-x)² + 100(y-x²)² for 2000 steps: all "
        "fall into the curved valley; Adam and NAdam reach (1, 1), while SGD with momentum, its "
        "learning rate capped by the valley's curvature, is still 0.27 away."),
    "schedules": (
        "Learning-rate schedules",
        "schedules.py --steps=1000 --peak=3e-4",
        {"--out": "schedules"},
        "Warmup + cosine, WSD (linear and 1-sqrt cooldowns), linear decay, SGDR, inverse-sqrt "
        "and one-cycle at the same peak and budget."),
    "digits": (
        "SGD + momentum vs Adam on handwritten digits",
        "digits.py --model=cnn --epochs=30",
        {"--out": "digits"},
        "A small CNN on sklearn's digits, same init and batches: tuned SGD with momentum matches "
        "Adam/AdamW (here 98.2% vs 97.1% test accuracy), the seeds' \"SGD for CNNs\" "
        "observation."),
    "grokking": (
        "Grokking on modular addition",
        "grokking.py --p=97 --steps=3000",
        {"--out": "grokking"},
        "Modular addition, (a + b) mod 97, from 40% of the pairs, full-batch AdamW: both runs fit "
        "the training pairs by step 100; with weight decay 1 validation accuracy jumps to 99% at "
        "step ~1550, without decay it stays near 0% (log-scaled steps)."),
    "diagnose": (
        "Diagnosing a run: the monitor dashboard",
        "diagnose.py --steps=300 --spike_at=200",
        {"--out": "diagnose", "--lr_plot": "lr_range_test",
         "--landscape_plot": "loss_landscape"},
        "An MLP on digits, SGD + momentum: the LR range test picks the LR, optix.monitor keeps "
        "per-layer gradient norms, update/param ratios and spike flags in the optimizer state "
        "(a corrupted batch at step 200 is flagged), then the loss landscape and state memory. "
        "The chosen LR, 0.39, is 1.2× the best of a 17-point grid of fixed LRs (0.32)."),
}
# Pictures written as by-products of another command: name -> (title, sentence).
EXTRA = {
    "lr_range_test": (
        "LR range test",
        "optix.tools.lr_range_test's own plot (from the diagnose command above): raw and smoothed "
        "loss as the LR grows exponentially, the suggestion 4× below the smoothed-loss minimum."),
    "loss_landscape": (
        "Loss landscape",
        "optix.tools.loss_landscape's own plot (from the diagnose command above): the validation "
        "loss along one and two filter-normalized random directions around the trained params."),
}


def shrink(src: pathlib.Path, dst: pathlib.Path, colors: int) -> int:
  """Saves ``src`` as a palette PNG at ``dst``; returns its size in bytes."""
  from PIL import Image
  img = Image.open(src).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
  dst.parent.mkdir(parents=True, exist_ok=True)
  img.save(dst, optimize=True)
  return dst.stat().st_size


def command_line(name):
  _, cmd, outputs, _ = GALLERY[name]
  paths = " ".join(f"{flag}=out/gallery/{png}.png" for flag, png in outputs.items())
  return f"python examples/{cmd} {paths}"


def page_text() -> str:
  """The Markdown of docs/gallery.md, from ``GALLERY`` (a test checks the file matches)."""
  lines = ["# Gallery", "",
           "Every picture below comes from an example in `examples/`, run with the command "
           "shown (CPU, a few minutes in all). `python examples/make_gallery.py` reruns them all "
           "and rewrites this page.", ""]
  for name, (title, _, outputs, sentence) in GALLERY.items():
    lines += [f"## {title}", "", f"![{title}](_static/gallery/{name}.png)", "", sentence, "",
              "```bash", command_line(name), "```", ""]
    for png in outputs.values():
      if png in EXTRA:
        sub_title, sub_sentence = EXTRA[png]
        lines += [f"### {sub_title}", "", f"![{sub_title}](_static/gallery/{png}.png)", "",
                  sub_sentence, ""]
  return "\n".join(lines)


def pictures() -> list:
  """Every PNG the gallery shows, by name."""
  return [png for _, _, outputs, _ in GALLERY.values() for png in outputs.values()]


def main(argv):
  del argv
  unknown = set(FLAGS.only) - set(GALLERY)
  if unknown:
    raise SystemExit(f"unknown picture(s) {sorted(unknown)}; choose from {sorted(GALLERY)}")
  RAW.mkdir(parents=True, exist_ok=True)
  t_all = time.perf_counter()
  for name in GALLERY:
    if FLAGS.only and name not in FLAGS.only:
      continue
    line = command_line(name)
    print(f"$ {line}", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *shlex.split(line)[1:]], cwd=ROOT, check=True,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    print(f"  ({time.perf_counter() - t0:.0f} s)")
    for png in GALLERY[name][2].values():
      size = shrink(RAW / f"{png}.png", STATIC / f"{png}.png", FLAGS.colors)
      print(f"  docs/_static/gallery/{png}.png: {size / 1e3:.0f} KB")
  PAGE.write_text(page_text())
  print(f"wrote {PAGE.relative_to(ROOT)}; total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
  app.run(main)
