"""Loss-landscape slices along filter-normalized random directions (Li et al. 2018,
"Visualizing the Loss Landscape of Neural Nets", arXiv 1712.09913)."""

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from optix import _validate


@dataclasses.dataclass
class LandscapeResult:
  """What :func:`loss_landscape` evaluated; :meth:`plot` draws it.

  Args:
    alphas: the grid coordinates, shape ``(resolution,)``, centre exactly 0.
    loss_1d: L(θ + α d₁), shape ``(resolution,)``.
    loss_2d: L(θ + α d₁ + β d₂), shape ``(resolution, resolution)``, indexed
      ``[β, α]``.
    center_loss: L(θ), computed directly.
    sharpness: the summary numbers (a dict), see :func:`loss_landscape`.
    directions: ``(d₁, d₂)``, pytrees shaped like the params.
  """
  alphas: np.ndarray        # the grid coordinates, shape (resolution,), centre exactly 0
  loss_1d: np.ndarray       # L(θ + α d₁), shape (resolution,)
  loss_2d: np.ndarray       # L(θ + α d₁ + β d₂), shape (resolution, resolution), [β, α]
  center_loss: float        # L(θ), computed directly
  sharpness: dict           # summary numbers, see :func:`loss_landscape`
  directions: tuple         # (d₁, d₂), pytrees shaped like params

  def plot(self, path: str, title: str = "loss landscape") -> str:
    """Writes the 1-D curve and the 2-D contour side by side; returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(self.alphas, self.loss_1d)
    ax1.axvline(0.0, color="0.6", lw=0.8)
    ax1.set(xlabel="α (direction 1)", ylabel="loss", title="1-D slice")
    cs = ax2.contour(self.alphas, self.alphas, self.loss_2d, levels=20, cmap="viridis")
    ax2.clabel(cs, fontsize=6)
    ax2.plot(0, 0, "r*", ms=10)
    ax2.set(xlabel="α (direction 1)", ylabel="β (direction 2)", title="2-D contour")
    fig.suptitle(title)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def filter_normalized_direction(key, params, ignore_vectors: bool = False):
  """A Gaussian direction rescaled filter by filter to the norm of the weights.

  For a leaf with ``ndim >= 2`` a filter is a slice along the last axis (the
  output axis of Flax/Haiku kernels): ``d[..., j] ← d[..., j] · ‖θ[..., j]‖ / ‖d[..., j]‖``.
  Vectors and scalars are one filter each, or zero with ``ignore_vectors``
  (Li et al.'s choice for biases and norm scales).

  Args:
    key: a ``jax.random`` key; split once per leaf.
    params: the weights θ (a pytree of arrays) whose filter norms the
      direction takes.
    ignore_vectors: zero the direction on leaves with ``ndim < 2`` (True) or
      normalize them as one filter (False, default).

  Returns:
    A float32 pytree shaped like ``params``.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = []
  for k, p in zip(keys, leaves):
    p = jnp.asarray(p, jnp.float32)
    d = jax.random.normal(k, p.shape, jnp.float32)
    if p.ndim >= 2:
      axes = tuple(range(p.ndim - 1))
      scale = jnp.linalg.norm(p, axis=axes, keepdims=True) / (
          jnp.linalg.norm(d, axis=axes, keepdims=True) + 1e-10)
      d = d * scale
    elif ignore_vectors:
      d = jnp.zeros_like(p)
    else:
      d = d * jnp.linalg.norm(p) / (jnp.linalg.norm(d) + 1e-10)
    out.append(d)
  return jax.tree.unflatten(treedef, out)


def loss_landscape(loss_fn: Callable[[Any, Any], jax.Array], params: Any, data: Any,
                   resolution: int = 21, span: float = 1.0, *, seed: int = 0,
                   ignore_vectors: bool = False) -> LandscapeResult:
  r"""Evaluates the loss on 1-D and 2-D grids around ``params``.

  .. math:: f(\alpha, \beta) = L(\theta + \alpha d_1 + \beta d_2), \quad
            \alpha, \beta \in [-\text{span}, \text{span}]

  with ``d₁, d₂`` independent filter-normalized Gaussian directions (so the
  picture is comparable across networks and scale-invariant layers). The grid
  is ``resolution`` points per axis (odd, so the centre is exactly θ) and runs
  as one compiled ``lax.map``.

  ``sharpness`` holds: ``center_loss``; ``curvature`` — the second difference
  ``(f(h) − 2f(0) + f(−h))/h²`` along d₁ at the grid step h; ``max_increase`` —
  ``max f − f(0)`` over the 2-D grid; ``keskar`` — ``100·max_increase/(1 + f(0))``
  (the ε-sharpness of Keskar et al. 2017, arXiv 1609.04836, on this grid);
  ``flat_fraction`` — the share of 2-D grid points within 10% of ``f(0)``.

  Args:
    loss_fn: ``loss_fn(params, data) -> scalar``.
    params: the point to look around.
    data: the batch passed to ``loss_fn`` (use a fixed, reasonably large one).
    resolution: grid points per axis, an odd int >= 3; 21.
    span: the grid's half-width (> 0) in units of the (filter-normalized)
      directions; 1.0 (one weight norm each way).
    seed: for the directions; 0.
    ignore_vectors: zero the directions on biases/scales (Li et al.'s variant);
      False.

  Returns:
    A :class:`LandscapeResult` (``resolution`` + ``resolution²`` loss
    evaluations).
  """
  _validate.integer("resolution", resolution, 3)
  if resolution % 2 == 0:
    raise ValueError(f"resolution must be odd (the centre is a grid point), got {resolution}")
  _validate.positive("span", span)
  k1, k2 = jax.random.split(jax.random.key(seed))
  d1 = filter_normalized_direction(k1, params, ignore_vectors)
  d2 = filter_normalized_direction(k2, params, ignore_vectors)
  half = resolution // 2
  alphas = np.concatenate([-span * np.arange(half, 0, -1) / half, [0.0],
                           span * np.arange(1, half + 1) / half]).astype(np.float32)

  @jax.jit
  def grid(coords):
    def at(ab):
      moved = jax.tree.map(lambda p, u, v: (p + ab[0] * u + ab[1] * v).astype(jnp.result_type(p)),
                           params, d1, d2)
      return loss_fn(moved, data).astype(jnp.float32)
    return jax.lax.map(at, coords)

  a = jnp.asarray(alphas)
  line = np.asarray(grid(jnp.stack([a, jnp.zeros_like(a)], axis=1)))
  bb, aa = jnp.meshgrid(a, a, indexing="ij")
  surface = np.asarray(grid(jnp.stack([aa.ravel(), bb.ravel()], axis=1))).reshape(
      resolution, resolution)
  center = float(jax.jit(loss_fn)(params, data))
  h = float(alphas[half + 1])
  increase = float(np.nanmax(surface) - center)
  sharpness = {
      "center_loss": center,
      "curvature": float((line[half + 1] - 2 * line[half] + line[half - 1]) / h**2),
      "max_increase": increase,
      "keskar": 100.0 * increase / (1.0 + center),
      "flat_fraction": float(np.mean(np.abs(surface - center) <= 0.1 * abs(center))),
  }
  return LandscapeResult(alphas, line, surface, center, sharpness, (d1, d2))
