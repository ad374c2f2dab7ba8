"""The optimizer aliases: each one a short, visible ``chain`` of transforms.

Signatures and defaults mirror optax's, so ``optax.adamw(...)`` becomes
``optix.adamw(...)`` by changing one word. Differences: moments are float32 by
default whatever the param dtype (``state_dtype``), and every hyperparameter is
validated when the optimizer is built.

They know nothing about how a step is executed: :mod:`optix.fused` recognizes a
chain's shape (e.g. ``[scale_by_adam, add_decayed_weights, scale_by_learning_rate]``)
and runs it in one pass, whoever built the chain.
"""

from typing import Optional

from optix import _base, _validate
from optix.transforms.adaptive import scale_by_adam, scale_by_rms, scale_by_rss
from optix.transforms.decay import MaskOrFn, add_decayed_weights
from optix.transforms.momentum import trace
from optix.transforms.scaling import scale_by_learning_rate
from optix.transforms.sign import scale_by_lion

chain = _base.chain


def sgd(learning_rate: _base.ScalarOrSchedule, momentum: Optional[float] = None,
        nesterov: bool = False, accumulator_dtype=None, *, state_dtype=None):
  r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

  .. math:: \theta \leftarrow \theta - \eta\, u, \quad u = g \ \text{or the momentum of} \ g

  ``momentum=None`` keeps no state (plain SGD); with momentum β the direction is
  :math:`m_t = \beta m_{t-1} + g_t` (Nesterov: :math:`g_t + \beta m_t`). Polyak 1964;
  Sutskever et al. 2013 (ICML, "On the importance of initialization and momentum").

  State: 0 bytes/param, or 4 (fp32 momentum).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    momentum: the momentum decay β in [0, 1]; None (default) is plain SGD with
      no state. 0.9 is the usual choice.
    nesterov: Nesterov's look-ahead form of the momentum; False.
    accumulator_dtype: dtype of the momentum buffer (optax's name); None: as
      ``state_dtype``.
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  if momentum is None:  # one output, one kernel already: nothing to fuse
    return chain(_base.identity(), scale_by_learning_rate(learning_rate))
  _validate.momentum("momentum", momentum)  # trace would call it "decay"
  return chain(trace(momentum, nesterov, accumulator_dtype, state_dtype=state_dtype),
               scale_by_learning_rate(learning_rate))


def adagrad(learning_rate: _base.ScalarOrSchedule, initial_accumulator_value: float = 0.1,
            eps: float = 1e-7, *, state_dtype=None):
  r"""AdaGrad (Duchi et al. 2011, JMLR): :math:`\theta \leftarrow \theta - \eta\, g_t/\sqrt{\sum_{s\le t} g_s^2 + \epsilon}`.

  ``initial_accumulator_value=0.1`` as in optax (and TensorFlow). State: 4 bytes/param.

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    initial_accumulator_value: the starting sum of squares, >= 0; 0.1 keeps the
      first steps bounded.
    eps: added under the square root, >= 0; 1e-7 (optax's).
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return chain(scale_by_rss(initial_accumulator_value, eps, state_dtype=state_dtype),
               scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: _base.ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8,
            initial_scale: float = 0.0, eps_in_sqrt: bool = True, centered: bool = False,
            momentum: Optional[float] = None, nesterov: bool = False,
            bias_correction: bool = False, *, state_dtype=None):
  r"""RMSProp (Hinton 2012; centered: Graves 2013, arXiv 1308.0850), optional momentum.

  .. math:: \nu_t = \rho\nu_{t-1} + (1-\rho) g_t^2, \quad
            \theta \leftarrow \theta - \eta\, g_t/\sqrt{\nu_t + \epsilon}

  ``centered`` subtracts the squared mean gradient from ν. State: 4 bytes/param
  (+4 centered, +4 momentum).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    decay: decay ρ of the squared-gradient EMA, in [0, 1); 0.9 (Hinton's).
    eps: the stabilizer ε, >= 0; 1e-8.
    initial_scale: the starting value of ν, >= 0; 0 (optax's; TensorFlow uses 1).
    eps_in_sqrt: ε inside the square root (True, optax's default) or added to it.
    centered: subtract the squared EMA of the gradient (Graves's centered form).
    momentum: heavy-ball momentum in [0, 1] after the scaling; None: none.
    nesterov: Nesterov form of that momentum.
    bias_correction: debias ν like Adam's second moment; False (optax's).
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  if momentum is not None:
    _validate.momentum("momentum", momentum)
  return chain(
      scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=centered,
                   state_dtype=state_dtype),
      scale_by_learning_rate(learning_rate),
      trace(momentum, nesterov, state_dtype=state_dtype) if momentum is not None
      else _base.identity(),
  )


def adam(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None, *, nesterov: bool = False,
         state_dtype=None):
  r"""Adam (Kingma & Ba 2015, arXiv 1412.6980); ``nesterov=True`` is NAdam.

  .. math:: \theta \leftarrow \theta - \eta\, \hat m_t/(\sqrt{\hat v_t} + \epsilon)

  with bias-corrected moments (see :func:`optix.scale_by_adam`). Defaults are the
  paper's. State: 8 bytes/param (fp32 m and v).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: decay of the first-moment EMA, in [0, 1); 0.9 (the paper's).
    b2: decay of the second-moment EMA, in [0, 1); 0.999 (the paper's).
    eps: added to :math:`\sqrt{\hat v}` in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`\hat v` inside the square root, >= 0; 0 (use a
      small value, e.g. 1e-8, when differentiating through the optimizer).
    mu_dtype: dtype of the first moment only (e.g. ``jnp.bfloat16`` to halve its
      memory); None: as ``state_dtype``.
    nesterov: NAdam's look-ahead first moment; False.
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
                             state_dtype=state_dtype),
               scale_by_learning_rate(learning_rate))


def adamw(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None,
          weight_decay: _base.ScalarOrSchedule = 1e-4, mask: MaskOrFn = None, *,
          nesterov: bool = False, state_dtype=None):
  r"""AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101): Adam with decoupled decay.

  .. math:: \theta \leftarrow \theta - \eta\,(\hat m/(\sqrt{\hat v}+\epsilon) + \lambda\theta)

  ``weight_decay=1e-4`` is optax's default; language models usually use 0.01-0.1
  with ``mask=optix.matrices_only`` so biases and norm scales do not decay.
  State: 8 bytes/param (fp32 m and v).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: decay of the first-moment EMA, in [0, 1); 0.9 (the paper's).
    b2: decay of the second-moment EMA, in [0, 1); 0.999 (the paper's).
    eps: added to :math:`\sqrt{\hat v}` in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`\hat v` inside the square root, >= 0; 0 (use a
      small value, e.g. 1e-8, when differentiating through the optimizer).
    mu_dtype: dtype of the first moment only (e.g. ``jnp.bfloat16`` to halve its
      memory); None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ, >= 0, or a schedule; 1e-4 (optax's).
    mask: which params decay: a tree of bools with the params' structure (or a
      prefix), or a callable params -> such a tree (e.g. ``optix.matrices_only``);
      None: all.
    nesterov: NAdamW's look-ahead first moment; False.
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
                             state_dtype=state_dtype),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))


def nadam(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None, *, nesterov: bool = True,
          state_dtype=None):
  r"""NAdam (Dozat 2016, ICLR workshop): Adam with Nesterov momentum.

  .. math:: \hat m_t = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g_t}{1-\beta_1^t},
     \quad \theta \leftarrow \theta - \eta\,\frac{\hat m_t}{\sqrt{v_t/(1-\beta_2^t)} + \varepsilon}

  with Adam's ``m_t``, ``v_t``: the step looks one momentum update ahead. Defaults
  are Adam's (optax's); ``nesterov=False`` is plain Adam, as in optax. State: 8
  bytes/param (fp32 m and v).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: decay of the first-moment EMA, in [0, 1); 0.9 (the paper's).
    b2: decay of the second-moment EMA, in [0, 1); 0.999 (the paper's).
    eps: added to :math:`\sqrt{\hat v}` in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`\hat v` inside the square root, >= 0; 0 (use a
      small value, e.g. 1e-8, when differentiating through the optimizer).
    mu_dtype: dtype of the first moment only (e.g. ``jnp.bfloat16`` to halve its
      memory); None: as ``state_dtype``.
    nesterov: the look-ahead; True (False is Adam, as in optax).
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
              state_dtype=state_dtype)


def nadamw(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None,
           weight_decay: _base.ScalarOrSchedule = 1e-4, mask: MaskOrFn = None, *,
           nesterov: bool = True, state_dtype=None):
  r"""NAdamW: NAdam with decoupled weight decay (arXiv 1711.05101).

  .. math:: \theta \leftarrow \theta - \eta\,\Big(\frac{\hat m_t}{\sqrt{v_t/(1-\beta_2^t)}
     + \varepsilon} + \lambda\theta\Big)

  with :func:`nadam`'s look-ahead :math:`\hat m_t`; ``mask`` chooses the decayed params.
  State: 8 bytes/param.

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: decay of the first-moment EMA, in [0, 1); 0.9 (the paper's).
    b2: decay of the second-moment EMA, in [0, 1); 0.999 (the paper's).
    eps: added to :math:`\sqrt{\hat v}` in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`\hat v` inside the square root, >= 0; 0 (use a
      small value, e.g. 1e-8, when differentiating through the optimizer).
    mu_dtype: dtype of the first moment only (e.g. ``jnp.bfloat16`` to halve its
      memory); None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ, >= 0, or a schedule; 1e-4 (optax's).
    mask: which params decay: a tree of bools with the params' structure (or a
      prefix), or a callable params -> such a tree (e.g. ``optix.matrices_only``);
      None: all.
    nesterov: the look-ahead; True (False is AdamW, as in optax).
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
               nesterov=nesterov, state_dtype=state_dtype)


def lion(learning_rate: _base.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99,
         mu_dtype=None, weight_decay: _base.ScalarOrSchedule = 1e-3, mask: MaskOrFn = None,
         *, state_dtype=None):
  r"""Lion (Chen et al. 2023, arXiv 2302.06675): sign momentum + decoupled decay.

  .. math:: \theta \leftarrow \theta - \eta\,(\operatorname{sign}(\beta_1 m + (1-\beta_1) g) + \lambda\theta)

  Every coordinate moves by η (plus decay): use a 3-10× smaller learning rate and
  a 3-10× larger weight decay than for AdamW. State: 4 bytes/param (fp32 m).

  Args:
    learning_rate: the step size η: a float >= 0 (finite) or a schedule of the
      step count (e.g. :func:`optix.warmup_cosine_decay_schedule`). None applies
      no learning rate (and no sign flip), as in optax.
    b1: interpolation between the momentum and the gradient inside the sign, in
      [0, 1); 0.9 (the paper's).
    b2: decay of the momentum EMA, in [0, 1); 0.99 (the paper's).
    mu_dtype: dtype of the momentum; None: as ``state_dtype``.
    weight_decay: decoupled decay rate λ, >= 0, or a schedule; 1e-3 (optax's).
    mask: which params decay: a tree of bools with the params' structure (or a
      prefix), or a callable params -> such a tree (e.g. ``optix.matrices_only``);
      None: all.
    state_dtype: dtype of the optimizer's statistics; None (default) is the
      policy: at least float32 and the params' kind (bf16/fp16 params get float32
      statistics, float64 keeps float64, complex64 keeps complex64).

  Returns:
    A ``GradientTransformation`` (a ``chain``): ``init(params)``,
    ``update(grads, state, params)``.
  """
  return chain(scale_by_lion(b1, b2, mu_dtype, state_dtype=state_dtype),
               add_decayed_weights(weight_decay, mask),
               scale_by_learning_rate(learning_rate))
