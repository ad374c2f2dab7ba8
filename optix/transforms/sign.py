"""Sign momentum: Lion."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate


class ScaleByLionState(NamedTuple):
  count: jax.Array     # int32, saturating
  mu: _base.Updates    # momentum, float32 by default


def scale_by_lion(b1: float = 0.9, b2: float = 0.99, mu_dtype=None, *,
                  mode: str = "hard", smooth_beta: float = 1.0,
                  state_dtype=None) -> _base.GradientTransformation:
  r"""Sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
  Algorithms", arXiv 2302.06675).

  .. math::
     u_t = \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t), \qquad
     m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

  Every coordinate moves by exactly the learning rate, so Lion wants a 3-10x
  smaller learning rate than AdamW. Defaults ``b1=0.9, b2=0.99`` are the paper's.

  Args:
    b1: interpolation between momentum and gradient for the direction, in [0, 1); 0.9.
    b2: momentum decay, in [0, 1); 0.99.
    mu_dtype: optax-compatible name for the momentum dtype (overrides ``state_dtype``);
      None.
    mode: the sign function, as in optax: ``"hard"`` (default: ``sign``, the paper's),
      ``"smooth"`` (``tanh(smooth_beta * x)``) or ``"refined"`` (``x`` where
      ``|x| < 1``, else ``sign(x)``); anything else raises ``ValueError``.
    smooth_beta: the slope of ``tanh`` in ``mode="smooth"``; 1.0 (optax's).
    state_dtype: dtype of the momentum; None: the params' dtype, at least float32.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.dtype("mu_dtype", mu_dtype)
  _validate.dtype("state_dtype", state_dtype)
  signs = {"hard": jnp.sign, "smooth": lambda x: jnp.tanh(smooth_beta * x),
           "refined": lambda x: jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x))}
  if mode not in signs:
    raise ValueError(f"mode must be one of {sorted(signs)}, got {mode!r}")
  sign_fn = signs[mode]
  dtype = mu_dtype or state_dtype

  def init(params):
    return ScaleByLionState(jnp.zeros([], jnp.int32), _tree.zeros_like(params, dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    direction = jax.tree.map(
        lambda g, m: sign_fn((1 - b1) * g.astype(m.dtype) + b1 * m).astype(g.dtype),
        updates, state.mu)
    mu = jax.tree.map(lambda g, m: (1 - b2) * g.astype(m.dtype) + b2 * m, updates, state.mu)
    return direction, ScaleByLionState(_tree.safe_increment(state.count), mu)

  return _base.described(_base.GradientTransformation(init, update), "scale_by_lion",
                         elementwise=True, b1=b1, b2=b2, mu_dtype=mu_dtype, mode=mode,
                         smooth_beta=smooth_beta, state_dtype=state_dtype)
