"""The Optax protocol, re-exported, and the types shared by every transform.

optix does not redefine the protocol: a transform is an
``optax.GradientTransformationExtraArgs`` -- ``init(params) -> state`` and
``update(updates, state, params=None, **extra_args) -> (updates, state)`` -- so
optix and optax pieces mix freely in either library's ``chain``.
"""

import functools
import inspect
import types
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Union

import jax
import numpy as np
import optax

from optix import _tree

GradientTransformation = optax.GradientTransformationExtraArgs
GradientTransformationBase = optax.GradientTransformation
with_extra_args_support = optax.with_extra_args_support
EmptyState = optax.EmptyState
Params = Any
Updates = Any
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]

class Described(optax.GradientTransformationExtraArgs):
  """An optax transform that also says what it is: ``tx.spec`` is a
  :class:`Spec`. To optax, flax and orbax it is the same NamedTuple
  ``(init, update)``; only code that looks for ``spec`` (the one-pass step of
  :mod:`optix.fused`, the structural check of :func:`optix.packed`) reads it."""


class Spec(NamedTuple):
  """What a transform is: ``kind`` (its factory's name), its hyperparameters as
  given, and whether it is ``elementwise`` (every output entry depends on the
  same entry of its inputs only, so it runs unchanged on a concatenation of
  leaves)."""
  kind: str
  hyperparams: Mapping[str, Any]
  elementwise: bool = False


def described(tx: optax.GradientTransformation, kind: str, *, elementwise: bool = False,
              **hyperparams) -> Described:
  """``tx`` (same ``init`` and ``update``) carrying ``Spec(kind, hyperparams,
  elementwise)`` as ``tx.spec``."""
  out = Described(tx.init, with_extra_args_support(tx).update)
  out.spec = Spec(kind, types.MappingProxyType(dict(hyperparams)), elementwise)
  return out


def spec_of(tx) -> Optional[Spec]:
  """``tx.spec``, or None for a transform that does not describe itself."""
  spec = getattr(tx, "spec", None)
  return spec if isinstance(spec, Spec) else None


def chain(*transforms: optax.GradientTransformation) -> GradientTransformation:
  """``optax.chain``, described as ``Spec("chain", {"links": transforms})`` so
  that a reader of the chain (e.g. :func:`optix.fused.plan`) sees its links.

  Args:
    *transforms: the transforms to run in order, each on the previous one's
      updates (optax or optix transforms); none: the identity.

  Returns:
    A ``GradientTransformationExtraArgs`` whose state is the tuple of the links'
    states.
  """
  return described(optax.chain(*transforms), "chain", links=tuple(transforms),
                   elementwise=all(getattr(spec_of(t), "elementwise", False)
                                   for t in transforms))


def identity() -> GradientTransformation:
  """``optax.identity``: the updates unchanged, no state."""
  return described(optax.identity(), "identity", elementwise=True)


# Combinators that already do the job: reused, not rewritten.
named_chain = optax.named_chain


def apply_updates(params, updates):
  """``optax.apply_updates``: ``params + updates`` leaf by leaf, in the params'
  dtypes. Trees that do not match raise ``ValueError`` naming the differing
  paths (optax's error is JAX's raw pytree message).

  Args:
    params: the pytree of parameters; required.
    updates: a pytree with the structure of ``params`` (None leaves where
      ``params`` has None), e.g. the first output of ``tx.update``; required.

  Returns:
    ``params + updates``, each leaf in its param's dtype.
  """
  try:
    return optax.apply_updates(params, updates)
  except (ValueError, TypeError):
    _tree.check_match("updates", updates, "params", params)
    raise


partition = optax.partition
multi_transform = optax.multi_transform
set_to_zero = optax.set_to_zero


# Arguments of optix factories that are never schedules, though their values may
# be callable: dtypes (``jnp.float32`` is a class), masks and label functions,
# tree functions, meshes and inner transforms.
NON_SCHEDULE_ARGS = frozenset({
    "state_dtype", "mu_dtype", "nu_dtype", "dtype", "compute_dtype", "accumulator_dtype",
    "master_dtype", "mask", "weight_decay_mask", "adam_mask", "packed_mask", "labels",
    "param_labels", "label_fn", "transforms", "stacked_axes", "loss_fn", "value_fn",
    "step_size_fn", "should_skip_update_fn", "mesh", "axis", "axis_name", "inner", "opt",
    # Shampoo's statistics rates: 1 selects a running sum instead of an EMA, in Python.
    "beta2", "shampoo_beta",
    # PSGD's factor rule (it sets the state's structure), a float when the user passes one.
    "max_skew_triangular"})


def _is_numeric(parameter: inspect.Parameter) -> bool:
  """Whether a parameter is a numeric hyperparameter (a float or a schedule), judged
  from its signature: a float default, or an annotation naming float or a schedule
  (``ScalarOrSchedule``). Parameters with an int default or annotation are
  structural (steps, intervals, sizes): traced, they could not size arrays or loops."""
  default = parameter.default
  if isinstance(default, float):
    return True
  if isinstance(default, int) or parameter.annotation is inspect.Parameter.empty:
    return False
  text = parameter.annotation if isinstance(parameter.annotation, str) else repr(
      parameter.annotation)
  return "float" in text or "Schedule" in text


def _is_static(name, value, parameter: Optional[inspect.Parameter] = None) -> bool:
  """Whether an argument is passed through as is rather than injected."""
  if name in NON_SCHEDULE_ARGS or isinstance(value, (bool, str, type)) or value is None:
    return True
  # A Python int is injected only where the signature says the parameter is numeric
  # (``learning_rate=1``); elsewhere ints are structural and stay static.
  return isinstance(value, int) and not (parameter is not None and _is_numeric(parameter))


def inject_hyperparams(inner_factory: Callable[..., optax.GradientTransformation],
                       static_args: Union[str, Iterable[str]] = (),
                       hyperparam_dtype: Optional[Any] = jax.numpy.float32
                       ) -> Callable[..., GradientTransformation]:
  """``optax.inject_hyperparams`` that knows which optix arguments are not schedules.

  ``inject_hyperparams(f)(learning_rate=sched, ...)`` builds ``f`` anew at every
  step with the current values of its numeric hyperparameters, which live in
  the state (``state.hyperparams["learning_rate"]``: read it for logging, or
  assign it between steps to change an unscheduled value). Callable arguments
  are taken as schedules of the step. optax's own version takes *every*
  callable for a schedule, and optix's default ``state_dtype=jnp.float32`` is a
  callable class: ``optax.inject_hyperparams(optix.adam)(learning_rate=0.1)``
  then passes ``state_dtype=jnp.float32(step)`` = a number, so moments silently
  follow the param dtype (bf16 moments for bf16 params) and the step fails under
  ``jit`` (a traced "dtype"). This wrapper adds to ``static_args``, for each
  call, every argument that is:

  * named in :data:`NON_SCHEDULE_ARGS` (dtypes, masks, label and tree
    functions, meshes, inner transforms, and Shampoo/SOAP's statistics rates
    ``beta2``/``shampoo_beta``, where 1 switches to a running sum in Python),
  * a class (dtypes such as ``jnp.bfloat16``), a bool, a string or None,
  * a Python ``int`` for a structural parameter (step counts, intervals, sizes:
    those whose default or annotation is an int); an int for a numeric
    hyperparameter (a float default or a float/schedule annotation, e.g.
    ``learning_rate=1``) is injected as a float,

  and leaves the rest to optax: floats and arrays become injected
  hyperparameters, other callables become schedules. With optax's version, pass
  ``static_args=("state_dtype",)`` (and any mask or dtype argument you set).

  The injected values are float32 by default, as optix's statistics are;
  optax's default is the params' dtype, and with bf16 params ``b2=0.999``
  rounds to 1.0, which the validation of ``b2`` then rejects.

  Args:
    inner_factory: an optimizer or transform factory, e.g. ``optix.adamw``;
      required.
    static_args: a name or names of further arguments to pass through
      unchanged (never injected, never called as schedules). Default ``()``:
      only those the rules above find.
    hyperparam_dtype: dtype of the injected floats. Default ``jnp.float32``
      (optix's statistics dtype: a bf16 ``b2=0.999`` would round to 1); None:
      the params' highest dtype, optax's behaviour.

  Returns:
    A function with ``inner_factory``'s arguments that returns a
    ``GradientTransformation`` whose state is an
    ``optax.InjectStatefulHyperparamsState``.
  """
  user_static = {static_args} if isinstance(static_args, str) else set(static_args)
  signature = inspect.signature(inner_factory)
  unknown = user_static - set(signature.parameters)
  if unknown:
    raise ValueError(f"static_args must name arguments of {inner_factory.__name__}"
                     f"{tuple(signature.parameters)}, got {sorted(unknown)}")

  @functools.wraps(inner_factory)
  def build(*args, **kwargs):
    given = signature.bind(*args, **kwargs)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    static = set(user_static)
    for name, value in bound.arguments.items():
      kind = signature.parameters[name].kind
      if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        continue
      if _is_static(name, value, signature.parameters[name]):
        static.add(name)
      elif isinstance(value, int) and name in given.arguments:
        given.arguments[name] = float(value)  # injected as a float, not an int32 array
    return optax.inject_hyperparams(inner_factory, static_args=static,
                                    hyperparam_dtype=hyperparam_dtype)(*given.args,
                                                                       **given.kwargs)

  return build


def _check_mask(mask_tree, tree):
  """``mask_tree`` is a tree of bools shaped like ``tree`` (or a prefix of it)."""
  try:
    jax.tree.map(lambda m, _: None, mask_tree, tree)
  except (ValueError, TypeError) as err:
    try:
      _tree.check_match("mask", mask_tree, "params", tree)
      detail = str(err)
    except ValueError as mismatch:
      detail = str(mismatch)
    raise ValueError("mask must be a tree of bools with the params' structure (or a prefix "
                     f"of it): {detail}") from None
  bad = [leaf for leaf in jax.tree.leaves(mask_tree)
         if not (isinstance(leaf, (bool, np.bool_))
                 or (isinstance(leaf, (np.ndarray, jax.Array)) and leaf.shape == ()
                     and leaf.dtype == bool and not isinstance(leaf, jax.core.Tracer)))]
  if bad:
    raise ValueError(f"mask leaves must be Python bools (static), got {bad[0]!r}")


def masked(inner: GradientTransformationBase, mask, *,
           mask_compatible_extra_args: bool = False) -> GradientTransformation:
  """``optax.masked``, with the mask checked: ``inner`` runs on the leaves where
  ``mask`` is True, the others pass through unchanged.

  ``mask`` is a tree of bools with the params' structure (or a prefix of it), or a
  callable params -> such a tree. A mask of another kind raises ``ValueError`` at
  construction, and a mask tree unlike the params raises ``ValueError`` naming
  the paths at ``init``/``update`` (optax fails deep inside ``jax.tree_util``).

  Args:
    inner: the transform applied to the masked-in leaves; required.
    mask: a pytree of bools shaped like (a prefix of) the params, or a function
      of the params returning one; required. True: ``inner`` updates the leaf.
    mask_compatible_extra_args: also mask the extra arguments of ``update``
      that have the params' structure, so ``inner`` sees them restricted like
      the updates. Default False (optax's: extra arguments pass whole).

  Returns:
    A ``GradientTransformationExtraArgs``.
  """
  if not callable(mask):
    _check_mask(mask, mask)  # leaves are bools

  def resolve(tree):
    mask_tree = mask(tree) if callable(mask) else mask
    _check_mask(mask_tree, tree)
    return mask_tree

  return optax.masked(inner, resolve, mask_compatible_extra_args=mask_compatible_extra_args)
