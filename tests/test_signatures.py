"""Every name optix shares with optax takes optax's signature.

For each public function of ``optax`` and ``optax.contrib`` that optix also
exports, every optax parameter must be accepted by optix under the same name,
at the same position (positional parameters) or as keyword-only (keyword-only
ones), with the same default; parameters optix adds must be keyword-only, so
that any call written for optax means the same thing to optix.
"""

import inspect

import jax.numpy as jnp
import optax
import optax.contrib
import pytest

import optix

P = inspect.Parameter
_POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)


def shared_functions():
  """(qualified optax name, optax function, optix function) for every shared function."""
  out = []
  for prefix, module in (("optax", optax), ("optax.contrib", optax.contrib)):
    for name in sorted(dir(module)):
      obj = getattr(module, name)
      if (name.startswith("_") or inspect.isclass(obj) or inspect.ismodule(obj)
          or not callable(obj) or not hasattr(optix, name)):
        continue
      try:
        inspect.signature(obj)
      except (TypeError, ValueError):  # typing aliases (optax.Schedule): not functions
        continue
      out.append((f"{prefix}.{name}", obj, getattr(optix, name)))
  return out


SHARED = shared_functions()
IDS = [name for name, _, _ in SHARED]

# Deliberate deviations: (name, parameter) -> why. Each is also on
# docs/guides/differences_from_optax.md. None of them changes what an optax call means.
DEVIATIONS = {
    ("optax.apply_if_finite", "max_consecutive_errors"):
        "optix gives the required argument a default (5); every optax call is accepted",
    ("optax.clip_by_block_rms", "threshold"):
        "optix gives the required argument Adafactor's default d = 1",
    ("optax.scale_by_zoom_linesearch", "max_linesearch_steps"):
        "optix gives the required step budget a default (20, the budget optax.lbfgs uses)",
    ("optax.scale_by_backtracking_linesearch", "max_backtracking_steps"):
        "optix gives the required step budget a default (20)",
    ("optax.monitor", "measures"):
        "optix gives the required argument a default (None): monitor() records gradient-"
        "health statistics of the updates through an identity; every optax call is accepted",
    ("optax.inject_hyperparams", "hyperparam_dtype"):
        "injected floats are float32 by default (optax: the params' dtype, where bf16 rounds "
        "b2=0.999 to 1.0); pass hyperparam_dtype=None for optax's behaviour",
}

# Shared names whose optix signature is a different design, not yet optax's: the
# test for each is a strict xfail, so it turns into a failure once fixed.
NOT_YET = {}


def _same_callable_default(ours, theirs):
  """Defaults that are functions (decay-rate and clip functions) or transformations
  (line searches) are equal when they agree on sample inputs / are of the same kind."""
  if isinstance(theirs, optax.GradientTransformation):
    return isinstance(ours, optax.GradientTransformation)
  for args in ((3, 0.8), (7, 0.5)):
    try:
      want = theirs(*args)
    except TypeError:
      want, args = theirs(args[0]), args[:1]
    if not jnp.allclose(jnp.asarray(ours(*args)), jnp.asarray(want)):
      return False
  return True


def _same_default(ours, theirs) -> bool:
  if ours is theirs:
    return True
  if isinstance(theirs, optax.GradientTransformation) or (
      callable(theirs) and callable(ours) and not isinstance(theirs, type)):
    return _same_callable_default(ours, theirs)
  try:
    return bool(ours == theirs) and type(ours) is type(theirs)
  except (TypeError, ValueError):
    return False


def signature_problems(name, theirs_fn, ours_fn):
  theirs = inspect.signature(theirs_fn).parameters
  ours = inspect.signature(ours_fn).parameters
  order = list(ours)
  problems = []
  for index, (pname, p) in enumerate(theirs.items()):
    if p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
      if not any(q.kind == p.kind for q in ours.values()):
        problems.append(f"{pname}: optix takes no {p.kind.description}")
      continue
    q = ours.get(pname)
    if q is None:
      problems.append(f"{pname}: missing")
      continue
    if p.kind in _POSITIONAL:
      if q.kind not in _POSITIONAL or order.index(pname) != index:
        problems.append(f"{pname}: position {index} in optax, {order.index(pname)} "
                        f"({q.kind.description}) in optix")
    elif q.kind != P.KEYWORD_ONLY:
      problems.append(f"{pname}: keyword-only in optax, {q.kind.description} in optix")
    if (name, pname) in DEVIATIONS:
      continue
    if p.default is P.empty and q.default is not P.empty:
      problems.append(f"{pname}: required in optax, default {q.default!r} in optix")
    elif p.default is not P.empty and not _same_default(q.default, p.default):
      problems.append(f"{pname}: default {p.default!r} in optax, {q.default!r} in optix")
  for pname, q in ours.items():
    if (pname not in theirs and q.kind in _POSITIONAL and (name, pname) not in DEVIATIONS):
      problems.append(f"{pname}: optix's addition must be keyword-only")
  return problems


def test_enumeration_finds_the_shared_names():
  names = set(IDS)
  assert len(names) >= 90, len(names)
  for expected in ("optax.adamw", "optax.scale_by_lion", "optax.sgdr_schedule",
                   "optax.contrib.prodigy", "optax.inject_hyperparams"):
    assert expected in names


@pytest.mark.parametrize("name,theirs,ours", SHARED, ids=IDS)
def test_signature_matches_optax(name, theirs, ours):
  problems = signature_problems(name, theirs, ours)
  if name in NOT_YET:
    assert problems, f"{name} now takes optax's signature: remove it from NOT_YET"
    pytest.xfail(NOT_YET[name])
  assert not problems, f"{name}: " + "; ".join(problems)


def test_not_yet_list_is_current():
  """An entry of NOT_YET whose signature has since been fixed must leave the list."""
  found = {n: (t, o) for n, t, o in SHARED}
  for name in NOT_YET:
    assert name in found, name
    assert signature_problems(name, *found[name]), f"{name} now matches: drop it from NOT_YET"


def test_deviations_are_current():
  found = {n: (t, o) for n, t, o in SHARED}
  for (name, pname), why in DEVIATIONS.items():
    assert why and name in found, name
    theirs = inspect.signature(found[name][0]).parameters
    ours = inspect.signature(found[name][1]).parameters
    assert pname in ours, (name, pname)
    if pname in theirs:
      assert ours[pname].default != theirs[pname].default, (name, pname, "now matches")


def test_the_check_catches_a_reordered_or_renamed_signature():
  def theirs(a, b=1, *, c=2):
    del a, b, c

  def swapped(b=1, a=None, *, c=2):
    del a, b, c

  def renamed(a, bb=1, *, c=2):
    del a, bb, c

  def other_default(a, b=2, *, c=2):
    del a, b, c

  def positional_extra(a, b=1, d=0, *, c=2):
    del a, b, c, d

  def good(a, b=1, *, c=2, d=0):
    del a, b, c, d

  assert signature_problems("x", theirs, swapped)
  assert signature_problems("x", theirs, renamed)
  assert signature_problems("x", theirs, other_default)
  assert signature_problems("x", theirs, positional_extra)
  assert not signature_problems("x", theirs, good)
