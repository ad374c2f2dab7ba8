"""Schedule-free learning: interpolation and averaging in place of a decaying schedule."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class ScheduleFreeState(NamedTuple):
  """Field names are optax's, so ``optax.contrib.schedule_free_eval_params`` reads it too."""
  b1: jax.Array                     # the interpolation β, a scalar
  weight_sum: jax.Array             # Σ_s max_lr_s ** weight_lr_power
  step_count: jax.Array             # int32, starts at 1, saturating
  max_lr: jax.Array                 # the largest learning rate seen so far
  base_optimizer_state: _base.OptState
  z: _base.Params                   # the base optimizer's iterate


def _scalar_dtype(params):
  """float64 when every param is float64 (or complex128), float32 otherwise."""
  dtypes = {jnp.finfo(_tree.state_dtype_for(p)).dtype for p in jax.tree.leaves(params)}
  return jnp.float64 if dtypes == {jnp.dtype(jnp.float64)} else jnp.float32


def schedule_free(base_optimizer: _base.GradientTransformation,
                  learning_rate: _base.ScalarOrSchedule, b1: float = 0.9,
                  weight_lr_power: float = 2.0, state_dtype=None
                  ) -> _base.GradientTransformation:
  r"""Schedule-free wrapper (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682).

  The base optimizer (without momentum) moves a sequence ``z``; the params the
  model sees are an interpolation ``y`` of ``z`` and the running average ``x``:

  .. math::
     z_{t+1} = z_t + \mathrm{base}(\nabla f(y_t)), \quad
     c_{t+1} = \frac{\gamma_t^{r}}{\sum_{s \le t} \gamma_s^{r}}, \quad
     x_{t+1} = (1 - c_{t+1})\, x_t + c_{t+1} z_{t+1}, \quad
     y_{t+1} = \beta x_{t+1} + (1 - \beta) z_{t+1}

  where :math:`\gamma_t` is the largest learning rate seen so far (so a warmup
  does not weigh its small early steps) and :math:`r` is ``weight_lr_power``.
  ``x`` is not stored: it is recovered from the params as
  :math:`x = (y - (1-\beta) z)/\beta`; evaluate the model at ``x``
  (:func:`schedule_free_eval_params`). The update returned is
  :math:`y_{t+1} - y_t`, so ``update`` needs ``params``.

  Defaults (``b1=0.9``, ``weight_lr_power=2``) are the paper's; 0.95 or 0.98
  can work better on long runs. A constant learning rate (after a warmup)
  replaces a decaying schedule. The learning-rate schedule is evaluated at the
  step count starting from 1, as in optax. Turn off the base optimizer's
  momentum: the interpolation replaces it.

  Args:
    base_optimizer: the transform that moves ``z`` (e.g. ``optix.sgd(lr)``).
    learning_rate: the same learning rate (or schedule) the base optimizer uses;
      it sets the averaging weights.
    b1: β in (0, 1]; 1 evaluates the gradient at the average ``x`` (Polyak averaging
      of ``z`` becomes primal averaging).
    weight_lr_power: the exponent r of the averaging weights.
    state_dtype: dtype of ``z``; None keeps it at least float32, same kind as each param.
  """
  _validate.in_range("b1", b1, 0.0, 1.0, low_closed=False)
  _validate.finite("weight_lr_power", weight_lr_power)
  _validate.learning_rate("learning_rate", learning_rate)
  _validate.dtype("state_dtype", state_dtype)
  base_optimizer = _base.with_extra_args_support(base_optimizer)

  def init(params):
    dtype = _scalar_dtype(params)
    z = jax.tree.map(lambda p: jnp.array(p, dtype=_tree.state_dtype_for(p, state_dtype),
                                         copy=True), params)
    return ScheduleFreeState(b1=jnp.asarray(b1, dtype), weight_sum=jnp.zeros([], dtype),
                             step_count=jnp.ones([], jnp.int32), max_lr=jnp.zeros([], dtype),
                             base_optimizer_state=base_optimizer.init(params), z=z)

  def update(updates, state, params=None, **extra_args):
    _tree.require_params("schedule_free", params)
    _tree.check_match("updates", updates, "params", params)
    _tree.check_match("updates", updates, "state.z", state.z)
    lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
    # optax.inject_hyperparams injects in the params' dtype: complex for complex params
    # (a zero imaginary part); the averaging weights are real.
    real = lambda v: jnp.real(v) if _tree.is_complex(v) else v
    max_lr = jnp.maximum(state.max_lr, jnp.asarray(real(lr), state.max_lr.dtype))
    weight = max_lr ** real(weight_lr_power)
    weight_sum = state.weight_sum + weight
    # 0/0 on the first warmup steps (max_lr = 0) gives c = 0; a NaN weight stays NaN.
    c = jnp.where(jnp.isnan(weight) | jnp.isnan(weight_sum), jnp.nan,
                  jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf))
    base_updates, base_state = base_optimizer.update(updates, state.base_optimizer_state,
                                                     params, **extra_args)
    z = jax.tree.map(lambda z, u: (z + u).astype(z.dtype), state.z, base_updates)

    def step(y, z_old, z_new):
      y32 = y.astype(z_new.dtype)
      x = (y32 - (1.0 - b1) * z_old) / b1
      x = (1.0 - c) * x + c * z_new
      return (b1 * x + (1.0 - b1) * z_new - y32).astype(jnp.result_type(y))

    out = jax.tree.map(step, params, state.z, z)
    return _tree.cast_like(out, updates), ScheduleFreeState(
        state.b1, weight_sum, _tree.safe_increment(state.step_count), max_lr, base_state, z)

  return _base.GradientTransformation(init, update)


def schedule_free_eval_params(state: ScheduleFreeState, params: _base.Params) -> _base.Params:
  r"""The averaged params ``x`` to evaluate (and checkpoint for inference):
  :math:`x = (y - (1-\beta) z)/\beta`, in the params' dtypes.

  ``state`` is the schedule-free state, any state that holds one (inside ``chain``,
  ``apply_if_finite``, ...), an ``nnx.Optimizer``'s ``opt_state`` or the ``nnx.Optimizer``; ``params`` may be
  ``nnx.state(model, nnx.Param)`` (the result holds arrays: ``nnx.update(model, x)``).

  Args:
    state: the optimizer state (see above); ``ValueError`` when it holds no
      schedule-free state.
    params: the current params y, with the structure of the state's ``z``.

  Returns:
    The averaged params x, a pytree like ``params``.
  """
  found = _tree.find_states(state, ScheduleFreeState)
  sf = found[0] if found else _tree.plain_state(state)  # e.g. optax's schedule-free state
  b1, z = getattr(sf, "b1", None), getattr(sf, "z", None)
  if b1 is None or z is None:
    raise ValueError("schedule_free_eval_params needs the state of optix.schedule_free, got "
                     f"{type(state).__name__}")
  return jax.tree.map(
      lambda y, z: ((y.astype(z.dtype) - (1.0 - b1) * z) / b1).astype(jnp.result_type(y)),
      _tree.plain_state(params), z)
