"""optix._validate, the checks every builder calls: what each one accepts (returned unchanged),
what it rejects (a ValueError that names the argument), and where its boundaries sit. Pure
Python and NumPy, no XLA computation: cheap, and safe under mutmut's forked workers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optix import _validate as v


def _schedule(step):
  return 0.1 * step


@pytest.mark.parametrize("value", [_schedule, None, np.ones(3), np.zeros((2, 2), np.float32)],
                         ids=["schedule", "none", "vector", "matrix"])
def test_unknowable_values_pass_through_unchecked(value):
  """A schedule, None and per-element arrays cannot be range-checked when the transform is built."""
  assert v.in_range("eps", value, 0.0, 1.0) is value
  assert v.unit_interval("b1", value) is value


@pytest.mark.parametrize("value", [np.asarray(0.5), np.asarray(0.5, np.float32),
                                   np.asarray(0.5, jnp.bfloat16), np.float64(0.5), 0.5, 0],
                         ids=["f64-array", "f32-array", "bf16-array", "np-scalar", "float", "int"])
def test_concrete_scalars_in_range_are_returned_unchanged(value):
  assert v.unit_interval("b1", value) is value


@pytest.mark.parametrize("value", [np.asarray(1.5), np.asarray(1.5, jnp.bfloat16),
                                   np.asarray(2, np.uint8), np.asarray(-1, np.int32)],
                         ids=["f64-array", "bf16-array", "uint8-array", "int32-array"])
def test_zero_d_arrays_are_checked_like_numbers(value):
  with pytest.raises(ValueError, match=r"^b1 must be in \[0, 1\), got"):
    v.unit_interval("b1", value)


def test_unsigned_zero_d_arrays_in_range_are_accepted():
  value = np.asarray(3, np.uint8)
  assert v.nonnegative("count", value) is value


@pytest.mark.parametrize("value, kind", [(True, "bool"), ("0.1", "string"), (b"0.1", "string"),
                                         ([0.1], "list"), ((0.1,), "tuple"), ({"a": 1}, "dict"),
                                         (np.asarray("0.1"), "0.1"),
                                         (np.asarray([object()], dtype=object), "object")])
def test_non_numbers_are_rejected_naming_the_argument(value, kind):
  with pytest.raises(ValueError, match=r"^weight_decay must be a number") as err:
    v.nonnegative("weight_decay", value)
  assert kind in str(err.value), str(err.value)


@pytest.mark.parametrize("check, value, ok", [
    (v.unit_interval, 0.0, True), (v.unit_interval, 1.0, False), (v.unit_interval, -1e-9, False),
    (v.nonnegative, 0.0, True), (v.nonnegative, math.inf, True), (v.nonnegative, -1e-9, False),
    (v.positive, 0.0, False), (v.positive, 1e-30, True), (v.positive, math.inf, True),
    (v.finite, -1e30, True), (v.finite, math.inf, False), (v.finite, -math.inf, False),
    (v.learning_rate, 0.0, True), (v.learning_rate, math.inf, False),
    (v.learning_rate, math.nan, False), (v.nonnegative, math.nan, False),
    (v.momentum, 0.0, True), (v.momentum, 1.0, True), (v.momentum, 1.0 + 1e-9, False),
    (v.momentum, -1e-9, False), (v.momentum, math.nan, False),
])
def test_range_boundaries(check, value, ok):
  if ok:
    assert check("x", value) == value
  else:
    with pytest.raises(ValueError, match=r"^x must be in "):
      check("x", value)


@pytest.mark.parametrize("check, shown", [(v.unit_interval, "[0, 1)"), (v.positive, "(0, inf]"),
                                          (v.finite, "(-inf, inf)"),
                                          (v.learning_rate, "[0, inf)"),
                                          (v.momentum, "[0, 1]")])
def test_the_message_shows_the_valid_range(check, shown):
  with pytest.raises(ValueError) as err:
    check("x", -math.inf)
  assert f"x must be in {shown}, got" in str(err.value), str(err.value)


def test_in_range_open_and_closed_ends():
  assert v.in_range("x", 2.0, 1.0, 2.0) == 2.0
  with pytest.raises(ValueError, match=r"x must be in \[1, 2\), got 2.0"):
    v.in_range("x", 2.0, 1.0, 2.0, high_closed=False)
  with pytest.raises(ValueError, match=r"x must be in \(1, 2\], got 1.0"):
    v.in_range("x", 1.0, 1.0, 2.0, low_closed=False)


@pytest.mark.parametrize("value", [None, jnp.float32, jnp.bfloat16, "float64", jnp.complex64])
def test_dtype_accepts_none_and_inexact_dtypes(value):
  assert v.dtype("mu_dtype", value) is value


@pytest.mark.parametrize("value, shown", [(jnp.int32, "int32"), ("int8", "int8"),
                                          ("no-such-dtype", "no-such-dtype")])
def test_dtype_rejects_the_rest_naming_the_argument(value, shown):
  with pytest.raises(ValueError, match=r"^mu_dtype must be None or a floating") as err:
    v.dtype("mu_dtype", value)
  assert shown in str(err.value)


def test_integer():
  assert v.integer("steps", 0) == 0 and isinstance(v.integer("steps", np.int64(3)), int)
  assert v.integer("period", 1, low=1) == 1
  for bad in (1.5, True, "3", None):
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 0, got"):
      v.integer("steps", bad)
  with pytest.raises(ValueError, match=r"^period must be an integer >= 1, got 0"):
    v.integer("period", 0, low=1)


def test_integer_takes_what_optax_inject_hyperparams_passes():
  """optax.inject_hyperparams passes ints as int32 arrays: concrete ones are read
  as ints (range-checked); traced ones pass where the transform computes with
  them and are refused, naming static_args, where they set shapes."""
  got = v.integer("block_size", jnp.asarray(256, jnp.int32), 1)
  assert got == 256 and type(got) is int
  with pytest.raises(ValueError, match=r"^block_size must be an integer >= 1, got 0"):
    v.integer("block_size", jnp.asarray(0, jnp.int32), 1)
  for bad in (jnp.asarray(2.0), jnp.asarray([1, 2]), jnp.asarray(True)):
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 0, got"):
      v.integer("steps", bad)
  seen = []
  jax.jit(lambda x: seen.append(v.integer("period", x, 1, static=False)))(jnp.asarray(3))
  assert isinstance(seen[0], jax.core.Tracer)
  with pytest.raises(ValueError, match=r"^block_size must be a static Python int .*"
                                       r"static_args=\('block_size',\)"):
    jax.jit(lambda x: v.integer("block_size", x, 1))(jnp.asarray(3))


def test_one_of():
  assert v.one_of("mode", "a", {"a", "b"}) == "a"
  with pytest.raises(ValueError, match=r"^mode must be one of \['a', 'b'\], got 'c'"):
    v.one_of("mode", "c", {"a", "b"})


def test_at_most():
  assert v.at_most("warmup_steps", 5, "decay_steps", 5) == 5
  with pytest.raises(ValueError, match=r"^warmup_steps must be <= decay_steps \(5\), got 6"):
    v.at_most("warmup_steps", 6, "decay_steps", 5)
