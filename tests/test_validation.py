"""Bad hyperparameters are rejected when the transform or schedule is built,
with a ValueError naming the argument and its valid range."""

import re

import jax
import jax.numpy as jnp
import numpy as np
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
    # eps = 0 divides by 0 wherever nu is 0 (NaN in optax too)
    ("eps", r"\(0, inf\]", lambda: optix.adopt(0.1, eps=0.0)),
    ("eps", r"\(0, inf\]", lambda: optix.scale_by_adopt(eps=0.0)),
    # the rate is checked by its own name before the warmup schedule is built
    ("learning_rate", r"\[0, inf\)", lambda: optix.schedule_free_sgd(-0.1, warmup_steps=3)),
    ("learning_rate", r"\[0, inf\)",
     lambda: optix.schedule_free_adamw(float("nan"), warmup_steps=3)),
    # dtype arguments, at construction
    ("mu_dtype", "floating", lambda: optix.scale_by_ademamix(mu_dtype=jnp.int32)),
    ("state_dtype", "floating", lambda: optix.ademamix(0.1, state_dtype="int8")),
    ("mu_dtype", "floating", lambda: optix.scale_by_adopt(mu_dtype=jnp.int32)),
    ("state_dtype", "floating", lambda: optix.adopt(0.1, state_dtype=jnp.uint8)),
    ("state_dtype", "floating", lambda: optix.scale_by_mars(state_dtype=jnp.int32)),
    ("state_dtype", "floating", lambda: optix.ema_momentum(0.9, state_dtype=jnp.bool_)),
    ("state_dtype", "floating", lambda: optix.scale_by_factored_rms(state_dtype=jnp.int16)),
    ("state_dtype", "floating",
     lambda: optix.schedule_free(optix.sgd(1.0), 0.1, state_dtype=jnp.int32)),
    ("precond_dtype", "floating", lambda: optix.scale_by_psgd_kron(precond_dtype=jnp.int32)),
    ("state_dtype", "floating", lambda: optix.psgd_kron(0.1, state_dtype="int32")),
    ("master_dtype", "floating",
     lambda: optix.with_master_weights(optix.sgd(0.1), master_dtype=jnp.int32)),
    ("master_dtype", "floating",
     lambda: optix.with_master_weights(optix.sgd(0.1), master_dtype="not a dtype")),
    # the parameter-free methods' own arguments
    ("betas[1]", r"\[0, 1\)", lambda: optix.dadapt_adamw(betas=(0.9, 1.0))),
    ("betas", "pair", lambda: optix.dadapt_adamw(betas=0.9)),
    ("init_step[1]", r"\(0, inf\)", lambda: optix.dog(init_step=("distance", 0.0))),
    ("init_step[1]", r"\(0, inf\)", lambda: optix.dog(init_step=("heuristic", -1e-6))),
    ("init_step[1]", r"\(0, inf\)",
     lambda: optix.dog(init_step=("learning_rate", float("inf")))),
    ("init_step[0]", "heuristic", lambda: optix.dog(init_step=("distnce", 1e-3))),
    ("init_step", "pair", lambda: optix.dog(init_step=1e-6)),
    ("init_estim_sq_dist", r"\(0, inf\)", lambda: optix.dowg(init_estim_sq_dist=0.0)),
]


@pytest.mark.parametrize("arg,valid,build", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_rejected_with_a_clear_message(arg, valid, build):
  with pytest.raises(ValueError) as err:
    build()
  message = str(err.value)
  assert message.startswith(arg), message
  assert not valid or re.search(valid, message), message
  assert "got" in message, message


@pytest.mark.parametrize("build", [
    lambda: optix.sgd(0.1, momentum=1.0),  # optax's undamped accumulation
    lambda: optix.rmsprop(0.1, momentum=1.0),
    lambda: optix.kfac(0.1, momentum=0.0),
    lambda: optix.schedule_free_sgd(0.0, warmup_steps=0),  # a rate of 0 throughout, as in optax
    lambda: optix.dog(init_step=("learning_rate", 0.1)),
    lambda: optix.dowg(init_estim_sq_dist=None),
    lambda: optix.dadapt_adamw(betas=[0.0, 0.5]),
    lambda: optix.with_master_weights(optix.sgd(0.1), master_dtype="float64"),
    lambda: optix.scale_by_adopt(eps=1e-12, mu_dtype=jnp.bfloat16, state_dtype=jnp.complex64),
], ids=["sgd-momentum-1", "rmsprop-momentum-1", "kfac-momentum-0", "schedule-free-zero-warmup",
        "dog-learning-rate", "dowg-default", "dadapt-betas-list", "master-float64",
        "adopt-dtypes"])
def test_boundary_values_optax_accepts_are_accepted(build):
  build()


def test_traced_values_pass_through_inside_inject_hyperparams():
  """Under jit the injected values are tracers: nothing to check when the transform is built."""
  p = {"w": jnp.ones((2, 3))}
  for factory, static, kwargs in (
      (optix.adopt, ("clip_value_fn",), dict(learning_rate=0.1, eps=1e-6)),
      (optix.schedule_free_sgd, (), dict(learning_rate=0.1, warmup_steps=2)),
      (optix.dadapt_adamw, (), dict(learning_rate=1.0))):
    tx = optix.inject_hyperparams(factory, static_args=static)(**kwargs)
    state = jax.jit(tx.init)(p)
    updates, _ = jax.jit(tx.update)(p, state, p)
    assert jnp.all(jnp.isfinite(updates["w"])), factory.__name__


def test_combine_masks_of_no_masks_is_all_true():
  """The empty conjunction: every leaf, as mask=None (no restriction)."""
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "scale": jnp.ones(())}
  assert optix.combine_masks()(params) == {"dense": {"kernel": True, "bias": True},
                                           "scale": True}
  tx = optix.add_decayed_weights(1.0, optix.combine_masks())
  out, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, out, params)


def test_schedules_may_be_given_where_floats_are():
  tx = optix.adamw(optix.linear_schedule(1e-3, 0.0, 10), weight_decay=optix.constant_schedule(0.1))
  p = {"w": jnp.ones((2, 2))}
  u, s = tx.update(p, tx.init(p), p)
  assert u["w"].shape == (2, 2)
