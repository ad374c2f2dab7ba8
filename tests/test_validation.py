"""Bad hyperparameters are rejected when the transform or schedule is built,
with a ValueError naming the argument and its valid range."""

import re

import jax.numpy as jnp
import pytest

import optix

CASES = [
    # (argument named in the message, valid range shown, builder)
    ("b1", r"\[0, 1\)", lambda: optix.scale_by_adam(b1=1.5)),
    ("b2", r"\[0, 1\)", lambda: optix.scale_by_adam(b2=1.0)),
    ("eps", r"\[0, inf\]", lambda: optix.scale_by_adam(eps=-1e-8)),
    ("eps_root", r"\[0, inf\]", lambda: optix.scale_by_adam(eps_root=-1.0)),
    ("b1", r"\[0, 1\)", lambda: optix.scale_by_lion(b1=-0.1)),
    ("decay", r"\[0, 1\]", lambda: optix.trace(decay=1.5)),
    ("decay", r"\[0, 1\)", lambda: optix.scale_by_rms(decay=-0.5)),
    ("initial_accumulator_value", r"\[0, inf\]", lambda: optix.scale_by_rss(-0.1)),
    ("weight_decay", r"\[0, inf\]", lambda: optix.add_decayed_weights(-1e-4)),
    ("weight_decay", r"\[0, inf\]", lambda: optix.adamw(1e-3, weight_decay=-0.01)),
    ("learning_rate", r"\[0, inf\)", lambda: optix.adam(-1e-3)),
    ("learning_rate", r"\[0, inf\)", lambda: optix.adam(float("inf"))),
    ("learning_rate", "schedule", lambda: optix.sgd([0.1])),
    ("state_dtype", "floating", lambda: optix.adam(1e-3, state_dtype=jnp.int32)),
    ("mu_dtype", "floating", lambda: optix.adamw(1e-3, mu_dtype="int8")),
    ("learning_rate", r"\[0, inf\)", lambda: optix.sgd(float("nan"))),
    ("momentum", r"\[0, 1\]", lambda: optix.sgd(0.1, momentum=1.5)),
    ("momentum", r"\[0, 1\]", lambda: optix.rmsprop(0.1, momentum=-0.5)),
    ("momentum", r"\[0, 1\]", lambda: optix.kfac(0.1, momentum=2.0)),
    ("max_norm", r"\(0, inf\]", lambda: optix.clip_by_global_norm(0.0)),
    ("max_delta", r"\(0, inf\]", lambda: optix.clip(-0.5)),
    ("clipping", r"\(0, inf\]", lambda: optix.adaptive_grad_clip(-1.0)),
    ("step_size", "", lambda: optix.scale(float("inf"))),
    ("warmup_steps", "decay_steps", lambda: optix.warmup_cosine_decay_schedule(0, 1, 200, 100)),
    ("warmup_steps", "integer", lambda: optix.warmup_cosine_decay_schedule(0, 1, -1, 100)),
    ("decay_steps", "integer", lambda: optix.cosine_decay_schedule(1.0, 0)),
    ("alpha", r"\(-inf, inf\)", lambda: optix.cosine_decay_schedule(1.0, 10, alpha=float("nan"))),
    ("transition_steps", "integer", lambda: optix.linear_schedule(1.0, 0.0, -1)),
    ("transition_begin", "integer", lambda: optix.linear_schedule(1.0, 0.0, 10, -5)),
    ("power", r"\(0, inf\]", lambda: optix.polynomial_schedule(1.0, 0.0, 0.0, 10)),
    ("decay_rate", r"\(0, inf\]", lambda: optix.exponential_decay(1.0, 10, 0.0)),
    ("boundaries_and_scales", r"\[0, inf\]",
     lambda: optix.piecewise_constant_schedule(1.0, {10: -0.5})),
    ("pct_start", r"\(0, 1\)", lambda: optix.cosine_onecycle_schedule(100, 1.0, pct_start=1.2)),
    ("pct_final", "", lambda: optix.linear_onecycle_schedule(100, 1.0, 0.5, pct_final=0.4)),
    ("div_factor", r"\(0, inf\]", lambda: optix.cosine_onecycle_schedule(100, 1.0, div_factor=0)),
    ("boundaries", "len", lambda: optix.join_schedules([optix.constant_schedule(1.0)], [5])),
    ("boundaries", "integer", lambda: optix.join_schedules(
        [optix.constant_schedule(1.0)] * 3, [10, 5])),
    ("warmup_steps + decay_steps", "total_steps",
     lambda: optix.wsd_schedule(3e-4, 2_000, 10_000, 9_000)),
    ("decay_shape", "linear", lambda: optix.wsd_schedule(1.0, 10, 100, 10, decay_shape="exp")),
    ("branch_step", "integer", lambda: optix.wsd_decay_branch(1.0, 100, 50, 10)),
    ("cycle_mult", r"\[1, inf\]", lambda: optix.sgdr_schedule(
        1.0, first_cycle_steps=10, num_cycles=3, cycle_mult=0.5)),
    ("warmup_steps", "first_cycle_steps", lambda: optix.sgdr_schedule(
        1.0, first_cycle_steps=10, num_cycles=3, warmup_steps=10)),
    ("num_cycles", "integer", lambda: optix.sgdr_schedule(
        1.0, first_cycle_steps=10, num_cycles=0)),
    ("timescale", "integer", lambda: optix.inverse_sqrt_schedule(1.0, 10, timescale=0)),
    ("step_size", "integer", lambda: optix.cyclical_schedule(0.1, 1.0, 0)),
    ("mode", "triangular", lambda: optix.cyclical_schedule(0.1, 1.0, 10, mode="sine")),
    ("gamma", r"\(0, 1\]", lambda: optix.cyclical_schedule(0.1, 1.0, 10, "exp_range", 1.5)),
]


@pytest.mark.parametrize("arg,valid,build", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_rejected_with_a_clear_message(arg, valid, build):
  with pytest.raises(ValueError) as err:
    build()
  message = str(err.value)
  assert message.startswith(arg), message
  assert not valid or re.search(valid, message), message
  assert "got" in message, message


def test_schedules_may_be_given_where_floats_are():
  tx = optix.adamw(optix.linear_schedule(1e-3, 0.0, 10), weight_decay=optix.constant_schedule(0.1))
  p = {"w": jnp.ones((2, 2))}
  u, s = tx.update(p, tx.init(p), p)
  assert u["w"].shape == (2, 2)
