r"""Flax NNX capture of K-FAC's layer statistics (``pip install optix[flax]``).

:func:`kfac_tap` wraps every ``nnx.Linear`` of a model in a :class:`KFACTap` whose
output passes through a ``jax.custom_vjp`` identity. Its backward pass sees the
layer input ``a`` and the output gradient ``g = dL/dy`` and returns
:math:`\sum \bar a \bar a^\top` and :math:`\sum g g^\top` (``ā = [a, 1]`` when the
layer has a bias) as the *gradients* of zero-valued :class:`KFACProbe` variables.
So one ordinary backward pass gives the gradient and the statistics together,
with no tracing of JAX internals: :func:`kfac_value_and_grad`, whose ``stats`` are
what :func:`optix.scale_by_kfac` takes as ``kfac_stats`` (public Flax APIs only).

``optix.kfac_tap``, ``optix.KFACTap``, ``optix.KFACProbe`` and
``optix.kfac_value_and_grad`` name the same objects; this module, and with it
Flax, is imported the first time one of them is used, so ``import optix`` and
every other optimizer work without Flax installed.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from optix.transforms.curvature import LayerStats, path_str

_f32 = jnp.float32


class KFACProbe(nnx.Variable):
  """A zero-valued variable whose gradient is a layer's Kronecker statistic."""


@jax.custom_vjp
def _tap(x, y, aa_probe, gg_probe, count_probe):
  del x, aa_probe, gg_probe, count_probe
  return y


def _tap_fwd(x, y, aa_probe, gg_probe, count_probe):
  return y, (x, aa_probe, gg_probe, count_probe)


def _tap_bwd(res, gy):
  x, aa_probe, gg_probe, count_probe = res
  rows = x.reshape(-1, x.shape[-1]).astype(_f32)
  if aa_probe.shape[0] == rows.shape[1] + 1:  # bias: augment a with 1
    rows = jnp.concatenate([rows, jnp.ones((rows.shape[0], 1), _f32)], axis=1)
  g = gy.reshape(-1, gy.shape[-1]).astype(_f32)
  hi = jax.lax.Precision.HIGHEST
  return (jnp.zeros_like(x), gy,
          jnp.matmul(rows.T, rows, precision=hi).astype(aa_probe.dtype),
          jnp.matmul(g.T, g, precision=hi).astype(gg_probe.dtype),
          jnp.asarray(rows.shape[0], count_probe.dtype))


_tap.defvjp(_tap_fwd, _tap_bwd)


class KFACTap(nnx.Module):
  """Wraps an ``nnx.Linear``: same output, plus K-FAC statistics in the backward pass.

  The wrapped layer's params live under ``<path>/layer/{kernel,bias}``; the probes
  (zeros, never trained) under ``<path>/kfac_{aa,gg,count}``.
  """

  def __init__(self, layer: nnx.Linear):
    self.layer = layer
    d_in = layer.in_features + (1 if layer.use_bias else 0)
    self.kfac_aa = KFACProbe(jnp.zeros((d_in, d_in), _f32))
    self.kfac_gg = KFACProbe(jnp.zeros((layer.out_features,) * 2, _f32))
    self.kfac_count = KFACProbe(jnp.zeros([], _f32))

  def __call__(self, x, *args, **kwargs):
    y = self.layer(x, *args, **kwargs)
    return _tap(x, y, self.kfac_aa[...], self.kfac_gg[...], self.kfac_count[...])


def _get(obj, key):
  return getattr(obj, key) if isinstance(key, str) and hasattr(obj, key) else obj[key]


def _set(obj, key, value):
  if isinstance(key, str) and hasattr(obj, key):
    setattr(obj, key, value)
  else:
    obj[key] = value


def kfac_tap(model: nnx.Module) -> nnx.Module:
  """Wraps every ``nnx.Linear`` in ``model`` (in place) in a :class:`KFACTap`; returns it.

  Idempotent (tapped layers are not wrapped twice). ``nnx.Conv`` and ``nnx.Embed``
  are left alone: :func:`scale_by_kfac` treats their params with its diagonal
  fallback.

  Args:
    model: the ``nnx.Module`` whose ``nnx.Linear`` layers to tap; required. A
      bare ``nnx.Linear`` raises ValueError (wrap it with ``KFACTap(layer)``).

  Returns:
    ``model`` itself, modified in place.
  """
  found = [path for path, node in nnx.iter_graph(model)
           if isinstance(node, nnx.Linear) and path and path[-1] != "layer"]
  if isinstance(model, nnx.Linear):
    raise ValueError("kfac_tap needs a model containing nnx.Linear layers, not a bare layer; "
                     "use KFACTap(layer)")
  for path in found:
    parent = model
    for key in path[:-1]:
      parent = _get(parent, key)
    if isinstance(parent, KFACTap):
      continue
    _set(parent, path[-1], KFACTap(_get(parent, path[-1])))
  return model


def kfac_value_and_grad(loss_fn: Callable[..., Any], model: nnx.Module, *args,
                        has_aux: bool = False, **kwargs):
  """``loss_fn(model, *args, **kwargs)``'s value, its gradient w.r.t. ``nnx.Param`` and
  the K-FAC statistics of every :class:`KFACTap` layer.

  Returns ``(loss, grads, stats)`` (``((loss, aux), grads, stats)`` with ``has_aux``):
  ``grads`` an ``nnx.State`` of the params, ``stats`` a dict mapping each tapped
  layer's param-path prefix (``"layers/0/layer"``) to its :class:`LayerStats`,
  the form :func:`scale_by_kfac` takes as ``kfac_stats``.

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs)`` -> a scalar loss (or ``(loss,
      aux)`` with ``has_aux``); required.
    model: the ``nnx.Module``, tapped by :func:`kfac_tap`; required. State the
      loss mutates (batch statistics, RNG counts) is written back to it.
    *args: positional arguments passed to ``loss_fn`` after ``model``.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; aux is returned with the loss
      and not differentiated. Default False, as in ``jax.value_and_grad``.
    **kwargs: keyword arguments passed to ``loss_fn``.
  """
  graphdef, params, probes, rest = nnx.split(model, nnx.Param, KFACProbe, ...)

  def f(params, probes):
    m = nnx.merge(graphdef, params, probes, rest)
    out = loss_fn(m, *args, **kwargs)
    loss, aux = out if has_aux else (out, None)
    return loss, (aux, nnx.state(m, nnx.Not(nnx.Any(nnx.Param, KFACProbe))))

  (loss, (aux, new_rest)), (param_grads, probe_grads) = jax.value_and_grad(
      f, argnums=(0, 1), has_aux=True)(params, probes)
  nnx.update(model, new_rest)  # batch statistics, RNG counts, ... mutated by the loss
  out = (loss, aux) if has_aux else loss
  by_layer = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(probe_grads)[0]:
    names = path_str(path).split("/")
    by_layer.setdefault("/".join(names[:-1] + ["layer"]), {})[names[-1]] = leaf
  stats = {k: LayerStats(v["kfac_aa"], v["kfac_gg"], v["kfac_count"])
           for k, v in by_layer.items()}
  return out, param_grads, stats
