"""Tools for diagnosing and tuning runs: optimizer comparison, LR range test, loss landscapes,
memory report."""

import importlib

from optix.tools.compare import CompareResult, compare
from optix.tools.loss_landscape import LandscapeResult, filter_normalized_direction, loss_landscape
from optix.tools.lr_range_test import LRRangeResult, lr_range_test

# The memory report is also a command (``python -m optix.tools.memory``): imported on first
# use, so that running it as ``__main__`` does not find it already imported by the package.
_MEMORY = ("StateMemory", "memory_table", "model_shapes", "state_memory")
__all__ = ["CompareResult", "compare", "LandscapeResult", "filter_normalized_direction",
           "loss_landscape", "LRRangeResult", "lr_range_test", *_MEMORY]


def __getattr__(name):
  if name in _MEMORY:
    return getattr(importlib.import_module("optix.tools.memory"), name)
  raise AttributeError(f"module 'optix.tools' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_MEMORY))
