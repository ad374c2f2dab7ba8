"""Each issue-7 example end to end in a tiny configuration (subprocesses): outputs
exist and make sense — losses finite and decreasing, PNG written, table printed."""

import importlib.util
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(script, *args):
  proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout


def _png(path):
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_compare_optimizers_tiny(tmp_path):
  out, res = tmp_path / "cmp.png", tmp_path / "cmp.json"
  stdout = _run("compare_optimizers.py", "--optimizers=adamw,lion,not_an_optimizer",
                "--steps=40", "--eval_every=10", "--batch_size=16", "--context=32",
                "--d_model=32", "--layers=1", "--heads=2", "--corpus_mb=0.3", "--eval_batches=2",
                f"--out={out}", f"--results_json={res}")
  assert "steps to adamw val" in stdout and "state bytes" in stdout
  assert "unknown optimizer 'not_an_optimizer'" in stdout
  rows = {line.split()[0]: line.split() for line in stdout.splitlines()
          if line.startswith(("adamw ", "lion ")) and "reached" not in line}
  assert set(rows) == {"adamw", "lion"}
  # AdamW keeps two fp32 moments per parameter, Lion one: about twice the bytes.
  assert 1.8 < int(rows["adamw"][-1].replace(",", "")) / int(rows["lion"][-1].replace(",", "")) < 2.2
  results = json.loads(res.read_text())
  for name, r in results.items():
    assert all(math.isfinite(v) for v in r["train"] + r["val"]), name
    assert r["val"][-1] < r["val"][0] and sum(r["train"][-5:]) < sum(r["train"][:5]), name
    assert len(r["lr"]) == 40 and max(r["lr"]) > 0 and r["ms"] > 0
  _png(out)


@pytest.mark.slow
def test_digits_tiny(tmp_path):
  out = tmp_path / "digits.png"
  stdout = _run("digits.py", "--epochs=3", "--optimizers=sgd_momentum,adam", f"--out={out}")
  accs = {m.group(1): float(m.group(2))
          for m in re.finditer(r"^(\w+)\s+\S+\s+\S+\s+\S+%\s+([\d.]+)%", stdout, re.M)}
  assert set(accs) == {"sgd_momentum", "adam"}, stdout
  assert all(a > 80.0 for a in accs.values()), accs  # 10 classes: chance is 10%
  _png(out)


def test_schedules(tmp_path):
  out = tmp_path / "sched.png"
  stdout = _run("schedules.py", "--steps=200", f"--out={out}")
  for name in ("warmup + cosine", "WSD", "linear decay", "SGDR", "inverse sqrt"):
    assert name in stdout
  _png(out)


def test_grokking_tiny(tmp_path):
  out, res = tmp_path / "grok.png", tmp_path / "grok.json"
  stdout = _run("grokking.py", "--p=23", "--steps=300", "--eval_every=50", "--width=32",
                f"--out={out}", f"--results_json={res}")
  assert "val 99% at" in stdout
  for wd, h in json.loads(res.read_text()).items():
    assert all(math.isfinite(v) for v in h["loss"]), wd
    assert h["loss"][-1] < h["loss"][0] and h["train_acc"][-1] > h["train_acc"][0], wd
  _png(out)


@pytest.mark.slow
def test_checkpointing_is_bit_exact(tmp_path):
  # Saved mid-WSD-decay (decay from step 33) at step 38; Shampoo/SOAP refresh their
  # preconditioners at step 40, after the restore.
  names = ["adamw", "sgd", "adamw8bit", "adafactor", "muon", "shampoo", "soap"]
  stdout = _run("checkpointing.py", "--steps=44", "--save_at=38", f"--optimizers={','.join(names)}",
                f"--ckpt_dir={tmp_path}")
  assert "decay from step 33" in stdout
  for name in names:
    assert re.search(rf"^{name}\s+\S+\s+\S+\s+bit-exact$", stdout, re.M), stdout
  assert "all resumed runs bit-exact" in stdout
  assert (tmp_path / "adamw").is_dir()


def test_rosenbrock_same_lr_observation(tmp_path):
  stdout = _run("rosenbrock_race.py", "--steps=50", "--out=")
  assert re.search(r"sgd\s+diverges", stdout) and re.search(r"adam\s+stable", stdout), stdout


@pytest.mark.slow
def test_diagnose_tiny(tmp_path):
  out = tmp_path / "diag.png"
  stdout = _run("diagnose.py", "--steps=60", "--range_steps=40", "--spike_at=40",
                "--resolution=5", "--log_every=20", f"--out={out}")
  m = re.search(r"minimum at lr ([\d.e+-]+), suggested lr ([\d.e+-]+)", stdout)
  assert m and float(m.group(2)) == pytest.approx(float(m.group(1)) / 4, rel=0.01), stdout
  assert 1e-3 < float(m.group(2)) < 10.0
  # The corrupted batch is flagged by the monitor (read from state), first at its step.
  assert re.search(r"spikes flagged at steps \[40\b", stdout), stdout
  rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s", stdout, re.M)
  losses = {int(i): float(loss) for i, loss, _ in rows}
  assert set(losses) >= {0, 20, 40, 59} and losses[59] < losses[0], stdout
  assert all(math.isfinite(v) for v in losses.values())
  acc = float(re.search(r"val accuracy ([\d.]+)%", stdout).group(1))
  assert acc > 80.0, stdout  # 10 classes: chance is 10%
  assert re.search(r"loss landscape: center_loss [\d.]+, curvature", stdout)
  assert re.search(r"^adamw8bit\s+[\d,]+\s+[\d.]+$", stdout, re.M), stdout
  _png(out)


def test_gallery_page_matches_its_generator_and_pictures_are_small():
  spec = importlib.util.spec_from_file_location("make_gallery",
                                                ROOT / "examples" / "make_gallery.py")
  gallery = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gallery)
  assert (ROOT / "docs" / "gallery.md").read_text() == gallery.page_text(), (
      "docs/gallery.md is stale: run python examples/make_gallery.py")
  for png in gallery.pictures():
    path = ROOT / "docs" / "_static" / "gallery" / f"{png}.png"
    _png(path)
    assert path.stat().st_size <= 150_000, (png, path.stat().st_size)
