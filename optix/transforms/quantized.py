"""Block-wise dynamic 8-bit quantization of optimizer state, and Adam on top of it.

8-bit optimizers (Dettmers et al. 2022, arXiv 2110.02861): each moment tensor is
cut into blocks of ``block_size`` values; a block keeps one float32 scale (its
absmax) and one uint8 code per value, an index into a fixed 256-entry *dynamic*
("tree") quantization map whose values span six or seven decades, so both the
large and the tiny entries of a block keep a few significant digits. The update
dequantizes, works in float32 and requantizes, all inside one jitted ``update``.
"""

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optix import _base, _tree, _validate
from optix.transforms import moments


@functools.lru_cache(maxsize=None)
def dynamic_map(signed: bool) -> np.ndarray:
  """The 256 sorted float32 values of the dynamic quantization map, in [-1, 1] or [0, 1].

  A code's bits (after the sign bit, for the signed map) read as ``k`` zeros, a
  one, then ``b - 1 - k`` fraction bits, ``b`` being the bits left (7 signed,
  8 unsigned): the zeros pick the decade ``10^-k``, the fraction bits one of
  ``n = 2^(b-1-k)`` linearly spaced values ``10^-k · (0.1 + 0.9·j/n)``,
  ``j = 1..n``. The all-zero code is 0. So 1.0 and 0.0 are exact, the top decade
  has the finest grid (spacing 0.9/64 signed, 0.9/128 unsigned) and the smallest
  non-zero magnitude is 1e-6 (signed) or 1e-7 (unsigned).

  Args:
    signed: True for the map over [-1, 1] (a sign bit and 7 bits), False for
      the one over [0, 1] (8 bits, for non-negative tensors).

  Returns:
    A sorted float32 ``np.ndarray`` of shape ``(256,)`` (cached: do not modify).
  """
  bits = 7 if signed else 8
  mags = [0.0]
  for k in range(bits):
    n = 2 ** (bits - 1 - k)
    mags += [10.0 ** -k * (0.1 + 0.9 * j / n) for j in range(1, n + 1)]
  mags = np.asarray(mags)
  values = np.concatenate([-mags, mags]) if signed else mags  # signed: ±0 both map to 0
  assert values.size == 256
  return np.sort(values).astype(np.float32)


class QuantizedArray(NamedTuple):
  """A blockwise 8-bit tensor, as :func:`quantize` makes it; :func:`dequantize` decodes it.

  Args:
    codes: uint8 indices into the dynamic map, with the tensor's shape.
    scales: float32 absmax of each block of the flattened tensor, shape
      ``(ceil(size / block_size),)``.
  """
  codes: jax.Array   # uint8, the tensor's shape: indices into the dynamic map
  scales: jax.Array  # float32, (ceil(size / block_size),): each block's absmax


def _blocks(flat, block_size):
  pad = -flat.size % block_size
  return jnp.pad(flat, (0, pad)).reshape(-1, block_size)


def quantize(x: jax.Array, signed: bool = True, block_size: int = 256,
             key: jax.Array | None = None) -> QuantizedArray:
  """Rounds ``x / absmax(block)`` to the nearest value of the dynamic map.

  With a PRNG ``key`` it rounds stochastically instead: to one of the two map
  values around ``x / absmax``, the farther one with probability proportional
  to the distance to the nearer, so the decoded value is unbiased (E = x).

  Zeros stay exactly zero and each block's largest magnitude round-trips exactly
  (it maps to ±1). Sizes that are not a multiple of ``block_size`` are padded
  with zeros for the computation only. Use ``signed=False`` for non-negative
  tensors (Adam's ``v``): one more bit of resolution.

  Args:
    x: the real array to quantize, any shape and float dtype (computed in
      float32).
    signed: use the signed map (True, default) or the unsigned one (False:
      only for ``x >= 0``); see :func:`dynamic_map`.
    block_size: int >= 1, values per absmax block; 256 (the paper's).
    key: a PRNG key for stochastic rounding; None (default): nearest rounding.

  Returns:
    A ``QuantizedArray``: ``codes`` (uint8, ``x``'s shape) and ``scales``
    (float32, ``ceil(x.size / block_size)`` block absmaxes).
  """
  blocks = _blocks(jnp.ravel(x).astype(jnp.float32), block_size)
  absmax = jnp.max(jnp.abs(blocks), axis=1)
  # x / absmax as (x · 2^-e) / mantissa: a reciprocal of a huge absmax would be a
  # denormal, which XLA on CPU flushes to zero.
  mantissa, exponent = jnp.frexp(absmax)
  normed = (jnp.ldexp(blocks, -exponent[:, None])
            / jnp.where(mantissa > 0, mantissa, 1.0)[:, None])
  codes = (_nearest_code(normed, signed) if key is None
           else _stochastic_code(normed, signed, key))
  return QuantizedArray(codes.ravel()[:x.size].reshape(jnp.shape(x)), absmax)


def quantized_zeros(shape, signed: bool = True, block_size: int = 256) -> QuantizedArray:
  """``quantize(jnp.zeros(shape), signed, block_size)``, built without computing anything:
  every value takes the code of zero (128 on the signed map, 0 on the unsigned one) and every
  block a scale of 0. An optimizer's ``init`` then costs no quantization (op by op, outside
  ``jit``, that is a compile per operation).

  Args:
    shape: the tensor's shape.
    signed: the signed map (True, default) or the unsigned one (False).
    block_size: int >= 1, values per absmax block; 256.

  Returns:
    A ``QuantizedArray`` equal to ``quantize`` of zeros.
  """
  code = len(dynamic_map(signed)) // 2 if signed else 0
  blocks = -(-int(np.prod(shape, dtype=np.int64)) // block_size)
  return QuantizedArray(jnp.full(shape, code, jnp.uint8), jnp.zeros((blocks,), jnp.float32))


def _nearest_code(y, signed):
  """Index of the map value nearest to each ``y`` in [-1, 1], computed from the map's
  structure (decade, then linear step) and refined among the three neighbours: a few
  elementwise ops instead of a binary search (~3× faster on CPU)."""
  qmap = jnp.asarray(dynamic_map(signed))
  bits = 7 if signed else 8
  mag = jnp.abs(y)
  k = jnp.clip(jnp.floor(-jnp.log10(jnp.maximum(mag, 1e-30))), 0, bits - 1).astype(jnp.int32)
  # Decade k holds n = 2^(bits-1-k) values; the zero and the smaller decades hold
  # 1 + (n - 1) = n, so decade k's j-th value (j = 1..n) is sorted magnitude n + j - 1.
  n = jnp.left_shift(1, bits - 1 - k)
  scale = jnp.asarray(10.0 ** np.arange(bits), jnp.float32)[k]    # a table: pow is slow
  j = jnp.clip(jnp.round((mag * scale - 0.1) / 0.9 * n), 0, n).astype(jnp.int32)
  idx = n + j - 1                                                    # into the sorted magnitudes
  if signed:  # sorted map: -1 .. -0 at 0..127, +0 .. 1 at 128..255
    idx = jnp.where(y < 0, 127 - idx, 128 + idx)
  best = jnp.clip(idx, 0, 255)
  for cand in (jnp.clip(idx - 1, 0, 255), jnp.clip(idx + 1, 0, 255)):
    best = jnp.where(jnp.abs(qmap[cand] - y) < jnp.abs(qmap[best] - y), cand, best)
  return best.astype(jnp.uint8)


def _uniform(key, shape):
  """Uniform [0, 1) floats: one threefry draw seeds a counter hash of each element's index.

  The hash (xor-shift-multiply rounds, "lowbias32" constants, C. Wellons 2018)
  is ~40× cheaper than ``jax.random.uniform`` on CPU, which doubled the 8-bit step,
  and mixes well enough for dithering.
  """
  x = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  x = x * jnp.uint32(0x9E3779B9) + jax.random.bits(key, (), jnp.uint32)
  for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
    x = (x ^ (x >> shift)) * jnp.uint32(mult)
  x = x ^ (x >> 16)
  return (x >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)


def _stochastic_code(y, signed, key):
  """The nearest code or its neighbour on ``y``'s other side, drawn so E[map[code]] = y."""
  qmap = jnp.asarray(dynamic_map(signed))
  near = _nearest_code(y, signed).astype(jnp.int32)
  other = jnp.clip(jnp.where(qmap[near] > y, near - 1, near + 1), 0, 255)
  gap = jnp.abs(qmap[other] - qmap[near])
  p_other = jnp.abs(y - qmap[near]) / jnp.where(gap > 0, gap, 1.0)  # 0 where gap is 0
  return jnp.where(_uniform(key, jnp.shape(y)) < p_other, other, near).astype(jnp.uint8)


def dequantize(q: QuantizedArray, signed: bool = True, block_size: int = 256) -> jax.Array:
  """float32 values ``map[code] · absmax(block)``, in the codes' shape.

  Args:
    q: a ``QuantizedArray`` from :func:`quantize`.
    signed: the map it was quantized with; True (default) as in :func:`quantize`.
    block_size: the block size it was quantized with (int >= 1); 256.

  Returns:
    A float32 ``jax.Array`` of shape ``q.codes.shape``.
  """
  qmap = jnp.asarray(dynamic_map(signed))
  blocks = _blocks(jnp.ravel(q.codes), block_size)
  values = qmap[blocks] * q.scales[:, None]
  return values.ravel()[:q.codes.size].reshape(q.codes.shape)


def is_quantized(x) -> bool:
  """Whether ``x`` is a :class:`QuantizedArray` (the leaf test for its trees).

  Args:
    x: any value (a pytree node or leaf).

  Returns:
    A Python bool.
  """
  return isinstance(x, QuantizedArray)


def _structure(tree):
  """Every leaf (a QuantizedArray counts as one) replaced by a shapeless placeholder."""
  return jax.tree.map(lambda _: np.zeros(()), tree, is_leaf=is_quantized)


class ScaleByAdam8bitState(NamedTuple):
  count: jax.Array     # int32, saturating
  mu: _base.Updates    # QuantizedArray (signed map) per large leaf, float32 array otherwise
  nu: _base.Updates    # QuantizedArray of √v (unsigned map) per large leaf, float32 v otherwise


def scale_by_adam8bit(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                      eps_root: float = 0.0, *, block_size: Optional[int] = None,
                      min_8bit_size: Optional[int] = None, stochastic_rounding: bool = True,
                      seed: int = 0, state_dtype=None
                      ) -> _base.GradientTransformation:
  r"""Adam's scaling with 8-bit block-wise quantized moments (arXiv 2110.02861).

  .. math::
     m_t = \beta_1 \tilde m_{t-1} + (1-\beta_1) g_t, \quad
     v_t = \beta_2 \tilde v_{t-1} + (1-\beta_2) g_t^2, \quad
     u_t = \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon}

  where :math:`\tilde m, \tilde v` are the dequantized stored moments; the step
  uses the float32 :math:`m_t, v_t`, which are then requantized in blocks of
  ``block_size`` (256, the paper's): ``m`` with the signed dynamic map, and
  :math:`\sqrt{v_t}` (not :math:`v_t`, unlike the paper) with the unsigned one.
  The root halves the decades a block of ``v`` spans, so its small entries are
  not rounded onto the map's coarse low decades. And √v is rounded
  *stochastically* by default (``stochastic_rounding``; the draws come from
  ``seed``, the step count and the leaf's index, so runs are reproducible and
  resume bit-exactly): with nearest rounding an EMA increment smaller than half
  a code's spacing (β₂ = 0.999 moves ``v`` by 0.1% a step) rounds away every
  step, ``v`` stalls and the steps it scales drift. On the digits MLP
  (tests/test_memory.py, 200 steps) the final loss differs from fp32 AdamW's by
  -5% storing ``v``, -1.1% storing √v with nearest rounding, and +0.09% with
  stochastic rounding. ``m`` keeps nearest rounding (stochastic rounding of
  ``m`` measured -0.15%). Leaves with fewer than ``min_8bit_size`` (4096) elements
  (biases, norm scales) stay in ``state_dtype``: quantizing them saves little and
  the paper keeps them in 32 bits. State: 2 bytes + 8/block_size per quantized
  parameter (≈2.03), 8 for the small leaves. ``state_dtype=None``: small leaves at
  least float32, the params' float kind. Complex params raise ``ValueError`` (the
  codecs are real).

  Args:
    b1: decay of the first-moment EMA, in [0, 1); 0.9 (the paper's).
    b2: decay of the second-moment EMA, in [0, 1); 0.999 (the paper's).
    eps: added to the root in the denominator, >= 0; 1e-8.
    eps_root: added to :math:`v_t/(1-\beta_2^t)` inside the root, >= 0; 0 (use
      a small value when differentiating through the optimizer).
    block_size: int >= 1, values per absmax block; None (default): 256, the
      paper's. Smaller blocks track local magnitudes better at 4 bytes of scale
      per block. It sets the state's shapes, so it is static: None keeps
      ``optax.inject_hyperparams`` from injecting it.
    min_8bit_size: int >= 0; leaves with fewer elements stay unquantized; None
      (default): 4096. 0 quantizes every non-empty leaf. Static, as
      ``block_size``.
    stochastic_rounding: round the stored √v stochastically (True, default:
      see above) or to nearest (False).
    seed: int >= 0, seeds the stochastic rounding draws; 0. May be traced
      (injected).
    state_dtype: dtype of the unquantized (small) leaves' moments; None is the
      policy: at least float32 and the params' float kind.

  Returns:
    A ``GradientTransformation`` whose state is ``ScaleByAdam8bitState``
    (``count``, ``mu``, ``nu``).
  """
  _validate.unit_interval("b1", b1)
  _validate.unit_interval("b2", b2)
  _validate.nonnegative("eps", eps)
  _validate.nonnegative("eps_root", eps_root)
  block_size = _validate.integer("block_size", 256 if block_size is None else block_size, 1)
  min_8bit_size = _validate.integer("min_8bit_size",
                                    4096 if min_8bit_size is None else min_8bit_size, 0)
  seed = _validate.integer("seed", seed, 0, static=False)

  def big(p):
    return np.size(p) >= min_8bit_size and np.size(p) > 0

  def init(params):
    _tree.check_real("scale_by_adam8bit", params)

    def init_moment(p, signed):
      if big(p):
        return quantized_zeros(jnp.shape(p), signed, block_size)
      return jnp.zeros(jnp.shape(p), _tree.state_dtype_for(p, state_dtype))
    return ScaleByAdam8bitState(jnp.zeros([], jnp.int32),
                                jax.tree.map(lambda p: init_moment(p, True), params),
                                jax.tree.map(lambda p: init_moment(p, False), params))

  def update(updates, state, params=None, **extra_args):
    del params, extra_args
    _tree.check_match("updates", _structure(updates), "state.mu", _structure(state.mu))
    _tree.check_real("scale_by_adam8bit", updates)
    count = _tree.safe_increment(state.count)
    c1, c2 = moments.correction(b1, count), moments.correction(b2, count)

    step_key = jax.random.fold_in(jax.random.key(seed), count)

    def update_leaf(i, g, mu, nu):
      quantized = is_quantized(mu)
      m = dequantize(mu, True, block_size) if quantized else mu
      v = jnp.square(dequantize(nu, False, block_size)) if quantized else nu
      m = moments.ema_leaf(b1, m, g)
      v = moments.ema_sq_leaf(b2, v, g)
      u = moments.debias_leaf(m, c1) / (jnp.sqrt(moments.debias_leaf(v, c2) + eps_root) + eps)
      if quantized:
        key = jax.random.fold_in(step_key, i) if stochastic_rounding else None
        m, v = quantize(m, True, block_size), quantize(jnp.sqrt(v), False, block_size, key)
      return u, m, v

    leaves, treedef = jax.tree.flatten(updates)
    out = [update_leaf(*a) for a in zip(range(len(leaves)), leaves, treedef.flatten_up_to(state.mu),
                                         treedef.flatten_up_to(state.nu))]
    u, mu, nu = (jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))
    return _tree.cast_like(u, updates), ScaleByAdam8bitState(count, mu, nu)

  return _base.GradientTransformation(init, update)
