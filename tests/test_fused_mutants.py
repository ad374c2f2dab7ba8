"""How optix.fused picks a step's path: the chain walk (``_links``), which chains ``plan``
recognizes and what it reads from them (kernel, hyperparameters, the state path of every link),
``fusable``, ``use_kernel``'s choice, and ``apply_step``'s route for each kind of ``tx`` (plain,
packed, packed with packed trees, a layout with gradients of another dtype, a chain ending in a
packed link), each route checked against ``tx.update`` + ``apply_updates``.
tests/test_fused.py and tests/test_paths.py check the kernel's numbers on many trees.

No test module here computes at import, so mutmut's fork server can collect it before XLA
starts (``make mutate``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optix
from optix import fused, packing


def _params():
  return {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]]),
          "b": jnp.asarray([0.1, -0.2])}


def _grads(scale=1.0, dtype=jnp.float32):
  return {"w": jnp.asarray([[0.3, -1.2], [0.8, 0.1], [2.0, -0.5]], dtype) * scale,
          "b": jnp.asarray([-0.4, 0.9], dtype) * scale}


def _reference(tx, grads, state, params):
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


def _close(a, b, rtol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.result_type(x) == jnp.result_type(y)
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol,
                               atol=1e-7)


# -- recognizing a chain ------------------------------------------------------------------------


def test_links_flatten_nested_chains_with_their_state_paths():
  clip, adam = optix.clip(1.0), optix.scale_by_adam()
  decay, lr = optix.add_decayed_weights(0.1), optix.scale_by_learning_rate(1e-3)
  tx = optix.chain(clip, optix.chain(adam, optix.chain(decay)), lr)
  assert fused._links(tx) == [(clip, (0,)), (adam, (1, 0)), (decay, (1, 1, 0)), (lr, (2,))]
  assert fused._links(adam) == [(adam, ())]
  plain = optax.scale(2.0)
  assert fused._links(plain) == [(plain, ())]


def test_static_values():
  assert fused._static(1, 0.5, True, np.float32(0.1), np.int64(3))
  assert fused._static()
  assert not fused._static(jnp.asarray(0.9))
  assert not fused._static(0.9, jnp.asarray(0.9))
  assert not fused._static(0.9, None)


def test_plan_of_an_adam_chain_with_prefix_and_decay():
  b1, b2, eps, eps_root = 0.8, 0.95, 1e-6, 1e-9
  clip, adam = optix.clip(1.0), optix.scale_by_adam(b1, b2, eps, eps_root)
  decay, lr = optix.add_decayed_weights(0.1), optix.scale_by_learning_rate(1e-3)
  p = fused.plan(optix.chain(clip, adam, decay, lr))
  assert p.target == "optix_fused_adam" and p.moments == ("mu", "nu")
  assert p.attrs == dict(b1=b1, b2=b2, c1=1 - b1, c2=1 - b2, eps=eps, eps_root=eps_root)
  assert p.prefix == ((clip, (0,)),)
  assert p.core == (adam, (1,)) and p.decay == (decay, (2,)) and p.rate == (lr, (3,))


def test_plan_of_the_shortest_chains():
  adam, lr = optix.scale_by_adam(), optix.scale_by_learning_rate(1e-3)
  p = fused.plan(optix.chain(adam, lr))
  assert p.prefix == () and p.core == (adam, (0,)) and p.decay is None and p.rate == (lr, (1,))
  trace = optix.trace(0.9, nesterov=True)
  p = fused.plan(optix.chain(trace, lr))
  assert p.target == "optix_fused_momentum" and p.moments == ("trace",)
  assert p.attrs == dict(mu=0.9, nesterov=True) and p.core == (trace, (0,))


def test_plan_of_lion():
  lion, decay = optix.scale_by_lion(0.8, 0.95), optix.add_decayed_weights(0.1)
  lr = optix.scale_by_learning_rate(1e-3)
  p = fused.plan(optix.chain(lion, decay, lr))
  assert p.target == "optix_fused_lion" and p.moments == ("mu",)
  assert p.attrs == dict(b1=0.8, b2=0.95, c1=1 - 0.8, c2=1 - 0.95)
  assert p.core == (lion, (0,)) and p.decay == (decay, (1,)) and p.rate == (lr, (2,))


def test_plan_of_the_aliases():
  assert fused.plan(optix.adamw(1e-3, weight_decay=0.1)).target == "optix_fused_adam"
  assert fused.plan(optix.adam(1e-3)).decay is None
  assert fused.plan(optix.lion(1e-4)).target == "optix_fused_lion"
  assert fused.plan(optix.sgd(0.1, momentum=0.9)).target == "optix_fused_momentum"
  for tx in (optix.nadamw(1e-3), optix.rmsprop(1e-3), optix.sgd(0.1), optix.adagrad(0.1)):
    assert fused.plan(tx) is None


def _adam(**kw):
  return optix.scale_by_adam(**kw)


@pytest.mark.parametrize("chain", [
    lambda: optix.scale_by_adam(),                                          # one link
    lambda: optix.chain(optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(), optax.scale(-1e-3)),                        # no rate link
    lambda: optix.chain(_adam(), optix.scale_by_learning_rate(None)),         # no rate
    lambda: optix.chain(_adam(), optix.scale(-1e-3)),
    lambda: optix.chain(optix.add_decayed_weights(0.1), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optax.scale_by_adam(), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(nesterov=True), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(b1=jnp.asarray(0.9)), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(b2=jnp.asarray(0.9)), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(eps=jnp.asarray(1e-8)), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(eps_root=jnp.asarray(0.0)), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.scale_by_lion(mode="smooth"), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.scale_by_lion(b1=jnp.asarray(0.9)),
                        optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.scale_by_lion(b2=jnp.asarray(0.9)),
                        optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.trace(0.9), optix.add_decayed_weights(0.1),
                        optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.trace(jnp.asarray(0.9)), optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(optix.trace(0.9, nesterov=jnp.asarray(True)),
                        optix.scale_by_learning_rate(1e-3)),
    lambda: optix.chain(_adam(), optix.scale_by_learning_rate(1e-3), optix.clip(1.0)),
])
def test_chains_plan_does_not_take(chain):
  tx = chain()
  assert fused.plan(tx) is None
  assert not fused.fusable(tx)


def test_fusable_sees_through_packed():
  assert fused.fusable(optix.adamw(1e-3))
  assert fused.fusable(optix.packed(optix.adamw(1e-3)))
  assert not fused.fusable(optix.packed(optix.rmsprop(1e-3)))
  assert not fused.fusable(optix.rmsprop(1e-3))


def test_use_kernel_choice(monkeypatch):
  assert fused.use_kernel(False) is False
  assert fused.use_kernel(True) is True
  assert jax.device_count() == 8 and fused.use_kernel(None) is False
  assert fused.use_kernel() is False
  monkeypatch.setattr(jax, "device_count", lambda *a, **k: 1)
  assert fused.use_kernel(None) is True
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert fused.use_kernel(None) is False
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(fused, "_registered", lambda: "the kernels are missing here")
  assert fused.use_kernel(None) is False and fused.available() is False
  assert fused.use_kernel(False) is False
  with pytest.raises(RuntimeError, match="^the kernels are missing here$"):
    fused.use_kernel(True)


# -- the route apply_step takes -----------------------------------------------------------------


class _Calls(list):
  """The kernel targets ``_kernel_step`` was called with, and (``layouts``) its layouts."""
  layouts: list


@pytest.fixture
def kernel_calls(monkeypatch):
  calls, real = _Calls(), fused._kernel_step
  calls.layouts = []

  def spy(*args, **kwargs):
    calls.append(args[0].target)
    calls.layouts.append(args[4] if len(args) > 4 else kwargs.get("layout"))
    return real(*args, **kwargs)

  monkeypatch.setattr(fused, "_kernel_step", spy)
  return calls


@pytest.mark.parametrize("fused_arg, one_device, kernel", [
    (True, False, True), (False, False, False), (None, False, False), (None, True, True),
    (False, True, False)])
def test_apply_step_takes_the_kernel_where_chosen(kernel_calls, monkeypatch, fused_arg,
                                                 one_device, kernel):
  if one_device:
    monkeypatch.setattr(jax, "device_count", lambda *a, **k: 1)
  tx, params = optix.adamw(1e-2, weight_decay=0.1), _params()
  state = tx.init(params)
  want = _reference(tx, _grads(), state, params)
  got = optix.apply_step(tx, _grads(), state, params, fused=fused_arg)
  assert kernel_calls == (["optix_fused_adam"] if kernel else [])
  _close(got, want)


def test_apply_step_of_a_chain_plan_does_not_take_is_the_chain(kernel_calls):
  tx, params = optix.rmsprop(1e-2), _params()
  state = tx.init(params)
  got = optix.apply_step(tx, _grads(), state, params, fused=True)
  assert kernel_calls == []
  _close(got, _reference(tx, _grads(), state, params), rtol=0)


@pytest.mark.parametrize("fused_arg", [True, False])
def test_apply_step_of_packed_with_ordinary_trees(kernel_calls, fused_arg):
  params = {"w": jnp.arange(6.0).reshape(3, 2) / 4, "b": jnp.asarray([0.1, -0.2]),
            "c": jnp.asarray([1.0, 2.0, 3.0])}
  grads = jax.tree.map(lambda p: jnp.cos(p * 3), params)
  # max_leaf_size=2: "w" and "c" keep their own arrays, "b" is in a buffer. The step must build
  # the same layout as the state's.
  tx = optix.packed(optix.adamw(1e-2, weight_decay=0.1), max_leaf_size=2)
  state = tx.init(params)
  new_params, new_state = optix.apply_step(tx, grads, state, params, fused=fused_arg)
  want_params, want_state = _reference(tx, grads, state, params)
  assert isinstance(new_state, packing.PackedState)
  _close(new_params, want_params)
  _close(new_state, want_state)
  assert kernel_calls == (["optix_fused_adam"] if fused_arg else [])
  with pytest.raises(ValueError, match="^grads and params have"):
    optix.apply_step(tx, {"w": grads["w"]}, state, params, fused=fused_arg)
  with pytest.raises(ValueError,
                     match="^optix.apply_step: a packed transformation cannot be packed again$"):
    optix.apply_step(tx, grads, state, params, layout=packing.layout_of(params))


def test_apply_step_of_packed_with_packed_trees():
  params = optix.pack(_params())
  grads = params.layout.pack(_grads())
  tx = optix.packed(optix.adamw(1e-2, weight_decay=0.1))
  state = tx.init(params)
  new_params, new_state = optix.apply_step(tx, grads, state, params, fused=False)
  want_params, want_state = _reference(tx, grads, state, params)
  assert isinstance(new_params, optix.Packed) and isinstance(new_state, packing.PackedState)
  _close(new_params, want_params)
  _close(new_state, want_state)


@pytest.mark.parametrize("fused_arg", [True, False])
def test_apply_step_with_a_layout(kernel_calls, fused_arg):
  """State packed by ``layout`` while grads and params are ordinary trees: the step reads and
  writes the packed state and returns ordinary params, the numbers of the unpacked chain."""
  params = _params()
  layout = packing.layout_of(params)
  tx = optix.adamw(1e-2, weight_decay=0.1)
  state = tx.init(layout.pack(params))
  new_params, new_state = optix.apply_step(tx, _grads(), state, params, layout=layout,
                                           fused=fused_arg)
  want_params, want_state = _reference(tx, _grads(), packing.unpack_state(state), params)
  _close(new_params, want_params)
  _close(packing.unpack_state(new_state), want_state)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert kernel_calls == (["optix_fused_adam"] if fused_arg else [])


def test_apply_step_with_a_layout_and_gradients_of_another_dtype(kernel_calls):
  params = _params()
  layout = packing.layout_of(params)
  tx = optix.adamw(1e-2, weight_decay=0.1)
  state = tx.init(layout.pack(params))
  grads = _grads(dtype=jnp.bfloat16)
  new_params, new_state = optix.apply_step(tx, grads, state, params, layout=layout, fused=True)
  want_params, want_state = _reference(tx, grads, packing.unpack_state(state), params)
  _close(new_params, want_params)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  _close(packing.unpack_state(new_state), want_state)
  # A bf16 gradient: the step of the unpacked state (no layout), where the kernel takes no leaf.
  assert kernel_calls == ["optix_fused_adam"] and kernel_calls.layouts == [None]


# Chains ending in packed: every link before the packed one runs, with the params
# (adaptive_grad_clip clips by them), and the packed link takes its own step (also with no
# link before it: chain(packed(tx)) takes the packed one-pass step, as packed(tx) does).
PACKED_CHAINS = {
    "packed_alone": lambda: optix.chain(optix.packed(optix.adamw(1e-2, weight_decay=0.1))),
    "clip": lambda: optix.chain(optix.clip(0.5),
                                optix.packed(optix.adamw(1e-2, weight_decay=0.1))),
    "agc_then_clip": lambda: optix.chain(optix.adaptive_grad_clip(0.5), optix.clip(0.3),
                                         optix.packed(optix.adamw(1e-2, weight_decay=0.1))),
}


@pytest.mark.parametrize("fused_arg", [True, False])
@pytest.mark.parametrize("chain", sorted(PACKED_CHAINS))
def test_apply_step_of_a_chain_ending_in_packed(kernel_calls, chain, fused_arg):
  tx = PACKED_CHAINS[chain]()
  params = _params()
  state = tx.init(params)
  new_params, new_state = optix.apply_step(tx, _grads(), state, params, fused=fused_arg)
  want_params, want_state = _reference(tx, _grads(), state, params)
  _close(new_params, want_params)
  _close(new_state, want_state)
  assert kernel_calls == (["optix_fused_adam"] if fused_arg else [])


def _probe(seen):
  def record(updates, state, params=None, *, value=None, **extra):
    seen.append(value)
    return updates, state

  return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), record)


def test_apply_step_passes_extra_args_on_every_route():
  seen = []
  probe, params = _probe(seen), _params()
  inner = lambda: optix.packed(optix.chain(probe, optix.adamw(1e-2)), check=False)  # noqa: E731
  for tx in (optix.chain(probe, optix.adamw(1e-2)),
             optix.chain(probe, optix.packed(optix.adamw(1e-2))),
             inner(), optix.chain(optix.clip(1.0), inner())):
    for fused_arg in (True, False):
      seen.clear()
      optix.apply_step(tx, _grads(), tx.init(params), params, fused=fused_arg, value=3.0)
      assert seen and all(v == 3.0 for v in seen), (tx, fused_arg)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("fused_arg", [True, False])
def test_apply_step_with_a_layout_passes_extra_args(dtype, fused_arg):
  seen, params = [], _params()
  layout = packing.layout_of(params)
  tx = optix.chain(_probe(seen), optix.adamw(1e-2))
  state = tx.init(layout.pack(params))
  optix.apply_step(tx, _grads(dtype=dtype), state, params, layout=layout, fused=fused_arg,
                   value=3.0)
  assert seen and all(v == 3.0 for v in seen)
