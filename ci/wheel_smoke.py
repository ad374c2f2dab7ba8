"""Run by ci/wheel_smoke.sh from outside the checkout: the installed optix (a wheel) loads its
kernels and takes a fused AdamW step that matches the chain's (to an ulp: bit-exactness, where
XLA gives it, is tests/test_fused.py's business)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optix
from optix import fused

assert "site-packages" in optix.__file__, optix.__file__
assert fused.available(), fused._registered()
tx = optix.adamw(1e-2, weight_decay=1e-2)
params = {"w": jnp.linspace(-1.0, 1.0, 96 * 40).reshape(96, 40), "b": jnp.ones(40)}
grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
state = tx.init(params)
step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True))
assert "optix_fused_adam" in step.lower(params, state, grads).as_text()
chain = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
for a, b in zip(jax.tree.leaves(step(params, state, grads)),
                jax.tree.leaves(chain(params, state, grads))):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
print(f"wheel smoke: optix {optix.__version__} from {optix.__file__}, fused kernel loaded, "
      "step matches the chain")
