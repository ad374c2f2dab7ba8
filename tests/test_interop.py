"""optix objects in flax and optax; optax objects in optix."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state

import optix


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.hidden = nnx.Linear(2, 16, rngs=rngs)
    self.out = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


def _xor_data():
  x = jax.random.uniform(jax.random.key(0), (128, 2), minval=-1, maxval=1)
  return x, (x[:, :1] * x[:, 1:] > 0).astype(jnp.float32)


def test_nnx_optimizer_trains_with_optix_adamw():
  model = MLP(nnx.Rngs(0))
  opt = nnx.Optimizer(model, optix.adamw(3e-2, weight_decay=1e-4, mask=optix.matrices_only),
                      wrt=nnx.Param)
  x, y = _xor_data()

  @nnx.jit
  def step(model, opt):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    opt.update(model, grads)
    return loss

  losses = [float(step(model, opt)) for _ in range(300)]
  assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


def test_train_state_with_optix():
  x, y = _xor_data()
  params = {"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}
  apply = lambda p, x: x @ p["w"] + p["b"]
  state = train_state.TrainState.create(apply_fn=apply, params=params,
                                        tx=optix.sgd(0.1, momentum=0.9))
  loss = lambda p: jnp.mean((apply(p, x) - (x @ jnp.array([[1.0], [-2.0]]) + 0.5)) ** 2)
  for _ in range(200):
    state = state.apply_gradients(grads=jax.grad(loss)(state.params))
  assert loss(state.params) < 1e-4


def test_optix_inside_optax_chain_and_back():
  params = {"a": jnp.ones((3, 2)), "b": jnp.ones(2)}
  grads = jax.tree.map(lambda p: 2.0 * p, params)
  mixed = optax.chain(optix.clip_by_global_norm(1.0), optax.scale_by_adam(), optix.scale(-0.1))
  pure = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.1))
  back = optix.chain(optax.clip_by_global_norm(1.0), optix.scale_by_adam(),
                     optix.scale_by_learning_rate(0.1))
  outs = [tx.update(grads, tx.init(params), params)[0] for tx in (mixed, pure, back)]
  chex.assert_trees_all_close(outs[0], outs[1], rtol=1e-6)
  chex.assert_trees_all_close(outs[2], outs[1], rtol=1e-6)


def test_combinators_are_optax_s():
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  tx = optix.multi_transform({"fast": optix.sgd(1.0), "frozen": optix.set_to_zero()},
                             {"w": "fast", "b": "frozen"})
  u, _ = tx.update(params, tx.init(params), params)
  np.testing.assert_array_equal(u["b"], 0.0)
  np.testing.assert_array_equal(u["w"], -1.0)
  injected = optix.inject_hyperparams(optix.adamw)(learning_rate=0.1, weight_decay=0.0)
  state = injected.init(params)
  assert float(state.hyperparams["learning_rate"]) == np.float32(0.1)
  u1, _ = injected.update(params, state, params)
  u2, _ = optix.adam(0.1).update(params, optix.adam(0.1).init(params), params)
  chex.assert_trees_all_close(u1, u2, rtol=1e-5)  # b1, b2 become float32 arrays
