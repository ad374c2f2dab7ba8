"""``optix.tools.compare`` on your own model: the same learning-rate trials for each optimizer,
winners rerun on a 2nd seed, a race to AdamW's loss. Usage: compare_own_model.py [steps] [trials]"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

import optix

steps, trials = [int(a) for a in sys.argv[1:3]] + [300, 3][len(sys.argv[1:3]):]
x = np.linspace(-3, 3, 1024, dtype=np.float32)[:, None]
y = np.sin(2 * x) + 0.1 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32)


def init(seed):  # your model: a 1-64-64-1 tanh MLP, initialised per seed
  keys, sizes = jax.random.split(jax.random.key(seed), 3), [(1, 64), (64, 64), (64, 1)]
  return [{"w": jax.random.normal(k, s) / np.sqrt(s[0]), "b": jnp.zeros(s[1])}
          for k, s in zip(keys, sizes)]


def loss_fn(params, batch):
  h, target = batch
  for i, layer in enumerate(params):
    h = h @ layer["w"] + layer["b"]
    h = jnp.tanh(h) if i < len(params) - 1 else h
  return jnp.mean((h - target) ** 2)


def batches(seed):  # the same shuffled minibatches for every optimizer, given a seed
  rng = np.random.default_rng(seed)
  while True:
    i = rng.integers(0, len(x), 64)
    yield x[i], y[i]


result = optix.tools.compare(init, loss_fn, batches, steps=steps, trials=trials,
                             optimizers=["adamw", "muon", "lion", "sgd"], out="out/own_model.json")
print(result.table(), "\nwrote", result.plot("out/own_model.png"))
