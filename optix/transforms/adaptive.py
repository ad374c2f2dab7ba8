"""Per-coordinate adaptive scaling: AdaGrad, RMSProp and Adam."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optix import _base, _tree, _validate
from optix.transforms import moments
from optix.transforms.moments import debias, ema  # noqa: F401  (re-exported)


def _real(x):
  """The real part of a second-moment statistic (complex moments hold |g|² with zero
  imaginary part), so roots and comparisons see a real number."""
  return x.real if jnp.issubdtype(x.dtype, jnp.complexfloating) else x


class ScaleByRssState(NamedTuple):
  sum_of_squares: _base.Updates


def scale_by_rss(initial_accumulator_value: float = 0.1, eps: float = 1e-7, *,
                 state_dtype=None) -> _base.GradientTransformation:
  r"""AdaGrad's scaling (Duchi et al. 2011, JMLR 12).

  .. math:: s_t = s_{t-1} + |g_t|^2, \qquad u_t = g_t / \sqrt{s_t + \epsilon}

  (and 0 where ``s_t = 0``).

  Args:
    initial_accumulator_value: :math:`s_0`, >= 0; 0.1 (optax's and TensorFlow's:
      it keeps the first steps bounded).
    eps: added to :math:`s_t` inside the root, >= 0; 1e-7 (optax's).
    state_dtype: dtype of ``s``; None (default): at least float32, the params' kind
      (see ``optix._tree.state_dtype_for``).

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByRssState(sum_of_squares)``.
  """
  _validate.nonnegative("initial_accumulator_value", initial_accumulator_value)
  _validate.nonnegative("eps", eps)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    return ScaleByRssState(_tree.full_like(params, initial_accumulator_value, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.sum_of_squares", state.sum_of_squares)
    sos = jax.tree.map(lambda g, s: (moments.abs_sq(g.astype(s.dtype)) + s).astype(s.dtype),
                       updates, state.sum_of_squares)
    out = jax.tree.map(
        lambda g, s: (jnp.where(_real(s) > 0, jax.lax.rsqrt(_real(s) + eps), 0.0)
                      * g.astype(s.dtype)),
        updates, sos)
    return _tree.cast_like(out, updates), ScaleByRssState(sos)

  return _base.described(_base.GradientTransformation(init, update), "scale_by_rss",
                         elementwise=True, initial_accumulator_value=initial_accumulator_value,
                         eps=eps, state_dtype=state_dtype)


class ScaleByRmsState(NamedTuple):
  count: jax.Array      # int32, saturating
  nu: _base.Updates     # EMA of g²
  mu: _base.Updates     # EMA of g (centered only; None otherwise)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0,
                 eps_in_sqrt: bool = True, bias_correction: bool = False, *,
                 centered: bool = False, state_dtype=None
                 ) -> _base.GradientTransformation:
  r"""RMSProp's scaling (Hinton, Coursera lecture 6e, 2012; centered: Graves 2013,
  arXiv 1308.0850).

  .. math::
     \nu_t = \rho \nu_{t-1} + (1-\rho) g_t^2, \qquad
     u_t = g_t / \sqrt{\nu_t - [\mu_t^2] + \epsilon}

  where the bracketed term is present only when ``centered`` (``μ_t`` the EMA
  of g). ``eps_in_sqrt=False`` puts ε outside the root. ``bias_correction``
  divides ν (and μ, when centered) by ``1 - ρ^t`` (off by default, as in optax).
  For complex gradients :math:`g^2` is :math:`|g|^2` and :math:`\mu^2` is
  :math:`|\mu|^2`. ``centered`` is optax's ``scale_by_stddev``.

  Args:
    decay: ρ, the decay of the EMA of :math:`g^2`, in [0, 1); 0.9 (Hinton's).
    eps: ε, >= 0; 1e-8.
    initial_scale: :math:`\nu_0`, >= 0; 0 (optax's).
    eps_in_sqrt: True (default): ε inside the root, :math:`\sqrt{\nu+\epsilon}`;
      False: outside, :math:`\sqrt{\nu}+\epsilon`.
    bias_correction: divide ν (and μ, when ``centered``) by :math:`1-\rho^t`, as
      optax's ``scale_by_rms``/``scale_by_stddev`` do; False (optax's).
    centered: subtract the squared EMA of g (Graves' centered RMSProp); False.
    state_dtype: dtype of ν and μ; None (default): at least float32, the params' kind.

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByRmsState(count, nu, mu)``
    (``mu`` None unless ``centered``).
  """
  _validate.unit_interval("decay", decay)
  _validate.nonnegative("eps", eps)
  _validate.nonnegative("initial_scale", initial_scale)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    return ScaleByRmsState(jnp.zeros([], jnp.int32),
                           _tree.full_like(params, initial_scale, state_dtype),
                           _tree.zeros_like(params, state_dtype) if centered else None)

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.nu", state.nu)
    count = _tree.safe_increment(state.count)
    g = _tree.cast_like(updates, state.nu)  # compute in the state dtype
    nu = moments.ema_sq(decay, state.nu, g)
    mu = moments.ema(decay, state.mu, g) if centered else None
    nu_hat = moments.debias(nu, decay, count) if bias_correction else nu
    mu_hat = moments.debias(mu, decay, count) if centered and bias_correction else mu
    var = (jax.tree.map(lambda n, m: _real(n) - moments.abs_sq(m), nu_hat, mu_hat) if centered
           else jax.tree.map(_real, nu_hat))

    def scale_one(g, v):
      return g * jax.lax.rsqrt(v + eps) if eps_in_sqrt else g / (jnp.sqrt(v) + eps)

    out = jax.tree.map(scale_one, g, var)
    return _tree.cast_like(out, updates), ScaleByRmsState(count, nu, mu)

  return _base.described(_base.GradientTransformation(init, update), "scale_by_rms",
                         elementwise=True, decay=decay, eps=eps, initial_scale=initial_scale,
                         eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction,
                         centered=centered, state_dtype=state_dtype)


class ScaleByAdamState(NamedTuple):
  count: jax.Array      # int32, saturating
  mu: _base.Updates     # first moment
  nu: _base.Updates     # second moment


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  eps_root: float = 0.0, mu_dtype=None, *, nesterov: bool = False,
                  state_dtype=None) -> _base.GradientTransformation:
  r"""Adam's scaling (Kingma & Ba 2015, arXiv 1412.6980; Nesterov form:
  Dozat 2016, "Incorporating Nesterov Momentum into Adam").

  .. math::
     m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
     v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
     \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t), \quad
     u_t = \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

  With ``nesterov`` the numerator is
  :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.
  Defaults are the paper's. ``eps_root > 0`` keeps the gradient of the update
  finite when differentiating through it (meta-learning).

  Args:
    b1: decay of the first moment m, in [0, 1); 0.9 (the paper's).
    b2: decay of the second moment v, in [0, 1); 0.999 (the paper's).
    eps: ε outside the root, >= 0; 1e-8 (the paper's).
    eps_root: :math:`\epsilon_{root}` inside the root, >= 0; 0.
    mu_dtype: dtype of m only (optax's name; overrides ``state_dtype`` for m);
      None: as ``state_dtype``.
    nesterov: NAdam's look-ahead numerator; False.
    state_dtype: dtype of m and v; None (default): at least float32, the params' kind
      (complex params keep complex moments; :math:`g_t^2` is then :math:`|g_t|^2`).

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByAdamState(count, mu, nu)``.
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  _validate.nonnegative("eps_root", eps_root)
  _validate.dtype("mu_dtype", mu_dtype)
  _validate.dtype("state_dtype", state_dtype)

  def init(params):
    return ScaleByAdamState(jnp.zeros([], jnp.int32),
                            _tree.zeros_like(params, mu_dtype or state_dtype),
                            _tree.zeros_like(params, state_dtype))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", updates, "state.mu", state.mu)
    g = _tree.cast_like(updates, state.nu)  # compute in the state dtype
    # optax's order for a narrower ``mu_dtype``: b1·m in m's dtype, the sum in the state
    # dtype, rounded to ``mu_dtype`` only where it is stored.
    mu = jax.tree.map(lambda m, x: (1 - b1) * x + b1 * m, state.mu, g)
    nu = moments.ema_sq(b2, state.nu, g)
    count = _tree.safe_increment(state.count)
    mu_hat = (moments.nesterov(mu, g, b1, count) if nesterov
              else moments.debias(mu, b1, count))
    nu_hat = moments.debias(nu, b2, count)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(_real(v) + eps_root) + eps), mu_hat, nu_hat)
    return (_tree.cast_like(out, updates),
            ScaleByAdamState(count, _tree.cast_like(mu, state.mu), nu))

  return _base.described(_base.GradientTransformation(init, update), "scale_by_adam",
                         elementwise=True, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                         mu_dtype=mu_dtype, nesterov=nesterov, state_dtype=state_dtype)
