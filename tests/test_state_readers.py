"""Helpers that read optimizer state give the same answers on a raw state and
under Flax NNX (``nnx.Optimizer.opt_state`` holds ``OptArray`` variables)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optix
from optix.transforms.accumulation import has_updated

nnx = pytest.importorskip("flax.nnx")


def _loss(model):
  return jnp.mean(model(jnp.ones((4, 3))) ** 2)


def _nnx_and_raw(tx, steps=2):
  """The same steps through ``nnx.Optimizer`` and through ``tx.update`` on a raw state."""
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  raw = tx.init(params)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  for _ in range(steps):
    grads = nnx.grad(_loss)(model)
    updates, raw = tx.update(grads, raw, nnx.state(model, nnx.Param))
    opt.update(model, grads)
  return opt, raw


def _assert_same(a, b):
  assert a.keys() == b.keys() if isinstance(a, dict) else True
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert not hasattr(x, "get_value"), "an NNX variable leaked out of a state reader"
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_monitor_stats_under_nnx():
  opt, raw = _nnx_and_raw(optix.monitor(optix.adamw(1e-3)))
  expected = optix.monitor_stats(raw)
  _assert_same(optix.monitor_stats(opt.opt_state), expected)
  _assert_same(optix.monitor_stats(opt), expected)  # the nnx.Optimizer itself
  assert int(expected["count"]) == 2


def test_current_loss_scale_under_nnx():
  opt, raw = _nnx_and_raw(optix.dynamic_loss_scaling(optix.sgd(0.1), initial_scale=8.0))
  assert float(optix.current_loss_scale(opt.opt_state)) == float(optix.current_loss_scale(raw))
  assert float(optix.current_loss_scale(opt)) == 8.0


def test_has_updated_under_nnx():
  opt, raw = _nnx_and_raw(optix.multi_steps(optix.sgd(0.1), every_k=2), steps=2)
  assert bool(has_updated(raw)) and bool(has_updated(opt.opt_state))
  opt, raw = _nnx_and_raw(optix.multi_steps(optix.sgd(0.1), every_k=2), steps=3)
  assert not bool(has_updated(raw)) and not bool(has_updated(opt.opt_state))


def test_readers_name_what_is_missing():
  opt, _ = _nnx_and_raw(optix.sgd(0.1), steps=1)
  with pytest.raises(ValueError, match="MonitorState"):
    optix.monitor_stats(opt.opt_state)
  with pytest.raises(ValueError, match="LossScaleState"):
    optix.current_loss_scale(opt.opt_state)
  with pytest.raises(ValueError, match="multi_steps"):
    has_updated(opt.opt_state)
