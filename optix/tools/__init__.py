"""Tools for diagnosing and tuning runs: LR range test, loss landscapes, memory report."""

from optix.tools.loss_landscape import LandscapeResult, filter_normalized_direction, loss_landscape
from optix.tools.lr_range_test import LRRangeResult, lr_range_test
from optix.tools.memory import StateMemory, memory_table, model_shapes, state_memory
