"""Error messages: every user-facing error we can trigger names the argument or tree path
and the expected value, and is raised by optix itself at construction (or at the first
``init``/``update`` for tree errors), not deep inside JAX."""

import pathlib
import re
import traceback

import jax
import jax.numpy as jnp
import pytest

import optix
from registry import ENTRIES, make_params

PACKAGE = str(pathlib.Path(optix.__file__).resolve().parent)
_P = make_params(0)


def _mesh():
  return jax.make_mesh((8,), ("data",))


def _raised_by_optix(err):
  """The innermost frame of the traceback is optix code."""
  frames = traceback.extract_tb(err.__traceback__)
  return frames and frames[-1].filename.startswith(PACKAGE), frames[-1].filename


def _check(build, exc_type, *must_contain):
  with pytest.raises(exc_type) as info:
    build()
  message = str(info.value)
  for text in must_contain:
    assert re.search(text, message), f"{text!r} not in error message: {message}"
  ok, where = _raised_by_optix(info.value)
  assert ok, f"raised from {where}, not optix: {message}"
  return message


BAD = [pytest.param(arg, build, id=f"{e.name}-{arg}-{i}")
       for e in ENTRIES for i, (arg, build) in enumerate(e.bad)]


@pytest.mark.parametrize("arg,build", BAD)
def test_registry_bad_hyperparameter_message(arg, build):
  """The registry's bad lists: ValueError naming the argument, raised by optix's validation,
  with the offending value or the valid choices in the message."""
  message = _check(build, ValueError, rf"\b{arg}\b")
  assert re.search(r"got|must|expected|one of", message), message


# name -> (build, exception type, regexes the message must contain).
CASES = {
    "mask_wrong_type": (lambda: optix.adamw(1e-2, mask=123), ValueError, r"mask", r"bools"),
    "mask_tree_mismatch": (
        lambda: (lambda tx: tx.update(_P, tx.init(_P), _P))(optix.adamw(1e-2, mask={"a": True})),
        ValueError, r"mask", r"structure"),
    "learning_rate_string": (lambda: optix.adam("0.1"), ValueError, r"learning_rate", r"'0.1'"),
    "tree_mismatch_names_paths": (
        lambda: (lambda tx: tx.update(dict(_P, extra=jnp.ones(2)), tx.init(_P), _P))(
            optix.adamw(1e-2)), ValueError, r"\['extra'\]", r"updates"),
    "multi_steps_tree_mismatch": (
        lambda: (lambda tx: tx.update({"x": jnp.ones(2)}, tx.init(_P), _P))(
            optix.multi_steps(optix.adam(1e-2), 2)), ValueError, r"\['x'\]"),
    "schedule_linear_steps": (lambda: optix.linear_schedule(1.0, 0.0, -5), ValueError,
                              r"transition_steps", r">= 0", r"-5"),
    "schedule_cosine_steps": (lambda: optix.cosine_decay_schedule(1.0, 0), ValueError,
                              r"decay_steps", r"0"),
    "schedule_warmup_after_decay": (
        lambda: optix.warmup_cosine_decay_schedule(0.0, 1.0, 100, 50), ValueError,
        r"warmup_steps", r"decay_steps", r"100"),
    "schedule_join_boundaries": (
        lambda: optix.join_schedules([optix.constant_schedule(1.0)], [10, 20]), ValueError,
        r"boundaries", r"2"),
    "schedule_piecewise_negative": (
        lambda: optix.piecewise_constant_schedule(1.0, {-1: 0.5}), ValueError,
        r"boundar", r"-1"),
    "schedule_wsd_too_long": (lambda: optix.wsd_schedule(1.0, 10, 5, 2), ValueError,
                              r"total_steps", r"warmup_steps"),
    "schedule_exponential_steps": (lambda: optix.exponential_decay(1.0, -1, 0.5), ValueError,
                                   r"transition_steps"),
    "nan_learning_rate": (lambda: optix.sgd(float("nan")), ValueError, r"learning_rate", r"nan"),
    "integer_argument_as_float": (lambda: optix.multi_steps(optix.adam(1e-2), 2.5), ValueError,
                                  r"every_k", r"integer", r"2\.5"),
    "shard_state_bad_axis": (lambda: optix.shard_state(optix.adam(1e-2), _mesh(), axis="model"),
                             ValueError, r"axis", r"data", r"model"),
    "packed_shape_dependent": (lambda: optix.packed(optix.adafactor(1e-2)).init(_P), ValueError,
                               r"elementwise", r"\['conv'\]\['kernel'\]"),
    "packed_muon": (lambda: optix.packed(optix.muon(0.02, adam_learning_rate=1e-3)).init(_P), ValueError,
                    r"elementwise"),
    "inject_unknown_static_arg": (
        lambda: optix.inject_hyperparams(optix.adam, static_args=("nope",)), ValueError,
        r"static_args", r"nope"),
    "loss_scale_missing": (lambda: optix.current_loss_scale(optix.adam(1e-2).init(_P)),
                           ValueError, r"LossScaleState"),
    "spike_guard_mode": (lambda: optix.spike_guard(optix.adam(1e-2), mode="drop"), ValueError,
                         r"mode", r"drop", r"skip"),
}


@pytest.mark.parametrize("name", CASES)
def test_user_error_message(name):
  build, exc, *texts = CASES[name]
  _check(build, exc, *texts)




def test_apply_updates_names_the_mismatched_paths():
  params = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}}
  with pytest.raises(ValueError, match=r"only in updates: \[\"\['x'\]\"\]"):
    optix.apply_updates(params, {"x": jnp.ones(2), "b": {"c": jnp.ones(3)}})
  with pytest.raises(ValueError, match=r"\['b'\]\['c'\]: \(2,\) vs \(3,\)"):
    optix.apply_updates(params, {"a": jnp.ones(2), "b": {"c": jnp.ones(2)}})
