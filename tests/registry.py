"""The one registry of optimizers that drives the shared tests.

Each optimizer is registered once, with a small config. ``optax_ref`` builds
optax's version with the same hyperparameters where optax has one (parity
tests); ``bad`` lists, for each validated argument, a call that must raise a
``ValueError`` naming that argument. Each area adds its own entries in a
``tests/registry_<area>.py`` module, collected below.
"""

import dataclasses
import importlib
import pathlib
from typing import Any, Callable, Optional, Sequence

import jax
import optax

import optix


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  make: Callable[[], optix.GradientTransformation]
  optax_ref: Optional[Callable[[], Any]] = None
  bad: Sequence[tuple[str, Callable[[], Any]]] = ()
  extra_args: dict = dataclasses.field(default_factory=dict)
  # Params the optimizer needs (default: a mixed tree of matrices, vectors, scalars).
  params: Optional[Callable[[], Any]] = None
  # Max relative difference allowed against optax_ref (fp32, many steps).
  tol: float = 1e-5
  # Shared tests that do not apply: {test function name: reason}. Keep this empty when possible.
  skip: dict = dataclasses.field(default_factory=dict)

  def __str__(self):
    return self.name


def _adam_bad(fn):
  return [("b1", lambda: fn(1e-3, b1=1.0)), ("b2", lambda: fn(1e-3, b2=-0.1)),
          ("eps", lambda: fn(1e-3, eps=-1e-8)), ("learning_rate", lambda: fn(-1e-3))]


ENTRIES = [
    Entry("sgd", lambda: optix.sgd(0.05), lambda: optax.sgd(0.05),
          bad=[("learning_rate", lambda: optix.sgd(-0.1))]),
    Entry("sgd_momentum", lambda: optix.sgd(0.05, momentum=0.9),
          lambda: optax.sgd(0.05, momentum=0.9),
          bad=[("momentum", lambda: optix.sgd(0.1, momentum=1.5))]),
    Entry("sgd_nesterov", lambda: optix.sgd(0.05, momentum=0.9, nesterov=True),
          lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    Entry("adagrad", lambda: optix.adagrad(0.1), lambda: optax.adagrad(0.1),
          bad=[("initial_accumulator_value", lambda: optix.adagrad(0.1, -1.0)),
               ("eps", lambda: optix.adagrad(0.1, eps=-1.0))]),
    Entry("rmsprop", lambda: optix.rmsprop(0.01), lambda: optax.rmsprop(0.01),
          bad=[("decay", lambda: optix.rmsprop(0.01, decay=1.5)),
               ("eps", lambda: optix.rmsprop(0.01, eps=-1.0))]),
    Entry("rmsprop_centered_momentum",
          lambda: optix.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True),
          lambda: optax.rmsprop(0.01, centered=True, momentum=0.9, nesterov=True)),
    Entry("adam", lambda: optix.adam(1e-2), lambda: optax.adam(1e-2), bad=_adam_bad(optix.adam)),
    Entry("adam_eps_root", lambda: optix.adam(1e-2, eps_root=1e-8),
          lambda: optax.adam(1e-2, eps_root=1e-8),
          bad=[("eps_root", lambda: optix.adam(1e-2, eps_root=-1.0))]),
    Entry("adamw", lambda: optix.adamw(1e-2, weight_decay=0.1),
          lambda: optax.adamw(1e-2, weight_decay=0.1),
          bad=_adam_bad(optix.adamw) + [
              ("weight_decay", lambda: optix.adamw(1e-3, weight_decay=-0.1))]),
    Entry("adamw_masked", lambda: optix.adamw(1e-2, weight_decay=0.1, mask=optix.matrices_only),
          lambda: optax.adamw(1e-2, weight_decay=0.1,
                              mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))),
    Entry("nadam", lambda: optix.nadam(1e-2), lambda: optax.nadam(1e-2)),
    Entry("nadamw", lambda: optix.nadamw(1e-2, weight_decay=0.1),
          lambda: optax.nadamw(1e-2, weight_decay=0.1)),
    Entry("lion", lambda: optix.lion(1e-3, weight_decay=0.1),
          lambda: optax.lion(1e-3, weight_decay=0.1),
          bad=[("b1", lambda: optix.lion(1e-3, b1=2.0)), ("b2", lambda: optix.lion(1e-3, b2=1.0)),
               ("weight_decay", lambda: optix.lion(1e-3, weight_decay=-1.0))]),
    Entry("adamw_scheduled",
          lambda: optix.adamw(optix.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 30), weight_decay=0.1),
          lambda: optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 30),
                              weight_decay=0.1)),
    Entry("clip_by_global_norm", lambda: optix.chain(optix.clip_by_global_norm(1.0), optix.sgd(0.1)),
          lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1)),
          bad=[("max_norm", lambda: optix.clip_by_global_norm(0.0))]),
    Entry("clip", lambda: optix.chain(optix.clip(0.5), optix.sgd(0.1)),
          lambda: optax.chain(optax.clip(0.5), optax.sgd(0.1)),
          bad=[("max_delta", lambda: optix.clip(-1.0))]),
    Entry("adaptive_grad_clip", lambda: optix.chain(optix.adaptive_grad_clip(0.1), optix.sgd(0.1)),
          lambda: optax.chain(optax.adaptive_grad_clip(0.1), optax.sgd(0.1)),
          bad=[("clipping", lambda: optix.adaptive_grad_clip(0.0)),
               ("eps", lambda: optix.adaptive_grad_clip(0.1, eps=-1.0))]),
]

# Each later area registers its optimizers in tests/registry_<area>.py (a list ENTRIES of Entry).
for _path in sorted(pathlib.Path(__file__).resolve().parent.glob("registry_*.py")):
  ENTRIES += importlib.import_module(_path.stem).ENTRIES

BY_NAME = {e.name: e for e in ENTRIES}
assert len(BY_NAME) == len(ENTRIES), "registry names must be unique"


def make_params(seed: int = 0, dtype=jax.numpy.float32):
  """A small tree with the leaf kinds real models have: matrices, a conv kernel,
  vectors (biases, norm scales) and a scalar."""
  shapes = {"dense": {"kernel": (8, 6), "bias": (6,)}, "conv": {"kernel": (3, 3, 2, 4)},
            "norm": {"scale": (6,)}, "embed": (10, 4), "temperature": ()}
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef, [jax.random.normal(k, s, jax.numpy.float32).astype(dtype)
                for k, s in zip(keys, leaves)])


def params_for(entry: Entry, dtype=jax.numpy.float32):
  return entry.params() if entry.params is not None else make_params(0, dtype)
