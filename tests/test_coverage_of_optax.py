"""optix exports every optimizer and optimizer wrapper that optax and optax.contrib ship,
under the same name and signature.

Which optax callables count is computed, not listed: a public function of ``optax`` or
``optax.contrib`` whose return annotation is a ``GradientTransformation`` and which is

- an *alias*: defined in optax's alias modules (``optax._src.alias``, ``optax._src.lookahead``),
  or any contrib function not named ``scale_by_*`` (contrib's building blocks carry that
  prefix, the rest are its optimizers); or
- a *wrapper*: a top-level function with a parameter annotated as a ``GradientTransformation``
  (it takes an optimizer and returns one: ``apply_if_finite``, ``masked``, ``lookahead``, ...).

Single transforms (``scale_by_*``, ``add_noise``, ``ema``, ...) are building blocks, not
optimizers, and are out of this test's scope.
"""

import inspect

import optax
import optax.contrib

import optix

ALIAS_MODULES = ("optax._src.alias", "optax._src.lookahead")

# Deliberately not exported, with the reason.
EXCLUDED = {
    "dpsgd": "takes per-example gradients (a leading batch axis the params lack): another "
             "update protocol than the one every optix transform keeps; use optax's",
    "differentially_private_aggregate": "per-example gradients, as dpsgd",
    "conditionally_mask": "a combinator with no optimizer math: optix.chain/masked/"
                          "apply_if_finite cover gating; use optax's unchanged",
    "conditionally_transform": "a combinator with no optimizer math, as conditionally_mask",
    "flatten": "a layout combinator: optix.packed is optix's flat layout",
    "selective_transform": "a freezing combinator: optix.partition with set_to_zero does it",
    "with_extra_args_support": "protocol plumbing, not an optimizer: optix.with_extra_args_support "
                               "is re-exported from optix._base",
}


def _returns_transformation(fn):
  try:
    ret = inspect.signature(fn).return_annotation
  except (TypeError, ValueError):
    return False
  return isinstance(ret, type) and issubclass(ret, optax.GradientTransformation)


def _takes_transformation(fn):
  return any("GradientTransformation" in str(p.annotation)
             for p in inspect.signature(fn).parameters.values())


def _public_functions(module):
  for name in dir(module):
    fn = getattr(module, name)
    if not name.startswith("_") and inspect.isfunction(fn) and _returns_transformation(fn):
      yield name, fn


def optax_optimizers():
  """{name: optax callable} for every optax/optax.contrib optimizer and wrapper."""
  found = {}
  for name, fn in _public_functions(optax):
    if fn.__module__ in ALIAS_MODULES or _takes_transformation(fn):
      found[name] = fn
  for name, fn in _public_functions(optax.contrib):
    if not name.startswith("scale_by_"):
      found.setdefault(name, fn)
  return found


def test_the_criterion_finds_the_field():
  """The computed list is the field, not an accident of annotations: known aliases, contrib
  optimizers and wrappers are in it, building blocks are not."""
  found = optax_optimizers()
  for name in ("adamw", "lion", "lamb", "lookahead", "sophia", "prodigy", "schedule_free_adamw",
               "muon", "sam", "apply_if_finite", "masked"):
    assert name in found, name
  for name in ("scale_by_adam", "scale_by_rms", "add_noise", "ema", "scale_by_muon"):
    assert name not in found, name
  assert len(found) >= 60


def test_every_optax_optimizer_is_exported():
  missing = sorted(n for n in optax_optimizers() if n not in EXCLUDED and not hasattr(optix, n))
  assert not missing, f"optix lacks these optax optimizers: {missing}"


def test_exclusions_are_current():
  """Each exclusion names something optax ships and optix really lacks."""
  found = optax_optimizers()
  stale = sorted(n for n in EXCLUDED if n not in found or (
      hasattr(optix, n) and n != "with_extra_args_support"))
  assert not stale, f"remove from EXCLUDED: {stale}"


# Shared names whose signature differs from optax's today, with the reason (owned by other
# areas; test_known_signature_gaps fails loudly once one is fixed, so it leaves this list).
SIGNATURE_GAPS = {}


def _same_default(ours, theirs):
  """Equal defaults; optax transforms and functions compare by kind and behaviour."""
  if ours is theirs or theirs is inspect.Parameter.empty:
    return True  # an optax-required argument with an optix default: every optax call works
  if isinstance(theirs, optax.GradientTransformation):
    return isinstance(ours, optax.GradientTransformation)
  if callable(theirs):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    x = jnp.asarray([0.5, 2.0, 16.0])
    return callable(ours) and bool(jnp.allclose(ours(x), theirs(x)))
  try:
    return bool(ours == theirs)
  except Exception:  # pylint: disable=broad-except
    return type(ours) is type(theirs)


def _signature_problems(name, theirs):
  """What keeps optix.<name> from taking optax's signature (empty when it does)."""
  mine = list(inspect.signature(getattr(optix, name)).parameters.values())
  their = list(inspect.signature(theirs).parameters.values())
  head = mine[:len(their)]
  # A *args parameter cannot be passed by name: its name is free.
  key = lambda p: (None if p.kind is p.VAR_POSITIONAL else p.name, p.kind)
  if [key(p) for p in head] != [key(p) for p in their]:
    return [f"{name}: {[p.name for p in head]} != optax's {[p.name for p in their]}"]
  problems = [f"{name}.{p.name}: default {p.default!r} != optax's {q.default!r}"
              for p, q in zip(head, their) if not _same_default(p.default, q.default)]
  extra = [p.name for p in mine[len(their):] if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
  if extra:
    problems.append(f"{name}: additions not keyword-only: {extra}")
  return problems


def test_shared_names_take_optax_signature():
  """optax's parameters come first, in optax's order, kinds and defaults; optix's additions
  are keyword-only."""
  wrong = []
  for name, theirs in optax_optimizers().items():
    if name not in EXCLUDED and name not in SIGNATURE_GAPS and hasattr(optix, name):
      wrong += _signature_problems(name, theirs)
  assert not wrong, "\n".join(wrong)


def test_known_signature_gaps():
  """Each listed gap is still real: fixing one makes this fail until it leaves the list."""
  found = optax_optimizers()
  fixed = [n for n in SIGNATURE_GAPS if not _signature_problems(n, found[n])]
  assert not fixed, f"remove from SIGNATURE_GAPS: {fixed}"
