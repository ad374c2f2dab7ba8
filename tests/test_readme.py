"""README's quick start runs as written, and its set-up commands are the two make targets."""

import pathlib
import re

import jax
import numpy as np

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_quick_start_runs_and_trains():
  code = re.search(r"## Quick start.*?```python\n(.*?)```", README, re.S).group(1)
  scope = {}
  exec(compile(code, "README quick start", "exec"), scope)  # noqa: S102
  x = jax.random.normal(jax.random.key(0), (64, 16))
  y = 0.1 * x @ jax.random.normal(jax.random.key(1), (16, 1))
  losses = [float(scope["train_step"](scope["model"], scope["optimizer"], x, y))
            for _ in range(300)]
  assert np.isfinite(losses).all() and losses[-1] < 0.1 * losses[0]


def test_two_set_up_commands():
  block = re.search(r"## Set up and run.*?```sh\n(.*?)```", README, re.S).group(1)
  commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
  assert commands == ["make demo", "make test"]
