"""The examples run end to end (small settings)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(script, *args):
  proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_rosenbrock_race(tmp_path):
  out = tmp_path / "race.png"
  stdout = _run("rosenbrock_race.py", "--steps=300", f"--out={out}")
  assert "adam" in stdout and "steps to 1e-3" in stdout
  assert out.stat().st_size > 10_000
