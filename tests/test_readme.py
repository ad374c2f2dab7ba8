"""README's quick start runs as written, and its set-up commands are the two make targets."""

import pathlib
import re

import numpy as np

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_quick_start_runs_and_trains(capsys):
  """The block runs as pasted, prints its losses, and the loss falls as the text says."""
  code = re.search(r"## Quick start.*?```python\n(.*?)```", README, re.S).group(1)
  exec(compile(code, "README quick start", "exec"), {})  # noqa: S102
  losses = [float(v) for v in re.findall(r"loss (\S+)", capsys.readouterr().out)]
  assert len(losses) == 4 and np.isfinite(losses).all(), losses
  assert 10 < losses[0] < 30 and losses[1] < 0.01 and losses[-1] <= losses[1], losses


def test_two_set_up_commands():
  block = re.search(r"## Set up and run.*?```sh\n(.*?)```", README, re.S).group(1)
  commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
  assert commands == ["make demo", "make test"]
