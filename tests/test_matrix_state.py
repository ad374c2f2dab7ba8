"""Matrix optimizers (Muon, Shampoo, SOAP): state shapes that depend on the params only, and
a clear error for complex params."""

import jax
import jax.numpy as jnp
import pytest

import optix

MAKERS = {
    "muon": lambda: optix.scale_by_muon(),
    "shampoo": lambda: optix.scale_by_shampoo(),
    "soap": lambda: optix.scale_by_soap(),
    "muon_alias": lambda: optix.muon(0.02, adam_learning_rate=1e-3),
    "shampoo_alias": lambda: optix.shampoo(1e-3),
    "soap_alias": lambda: optix.soap(1e-3),
}


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("name", ["shampoo", "soap"])
def test_state_shapes_do_not_depend_on_the_backend(name, backend, monkeypatch):
  """A checkpoint written on a CPU restores on an accelerator: the default block size (and so
  every statistic's shape) is the same whatever backend the transform is built on."""
  params = {"w": jax.ShapeDtypeStruct((1030, 8), jnp.float32),
            "e": jax.ShapeDtypeStruct((700, 600), jnp.float32)}
  shapes = lambda: jax.tree.map(lambda x: x.shape, jax.eval_shape(MAKERS[name]().init, params))
  here = shapes()
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert shapes() == here


# Muon takes complex params (X Xᴴ in Newton–Schulz), as optax does: tests/test_muon.py.
@pytest.mark.parametrize("name", [n for n in MAKERS if not n.startswith("muon")])
def test_complex_params_are_rejected_naming_the_leaf(name):
  tx = MAKERS[name]()
  params = {"w": jnp.zeros((4, 3), jnp.complex64), "v": jnp.zeros((4, 3))}
  with pytest.raises(ValueError, match=r"real params only.*\['w'\]"):
    tx.init(params)
  state = tx.init({"w": jnp.zeros((4, 3)), "v": jnp.zeros((4, 3))})
  with pytest.raises(ValueError, match=r"real params only.*\['w'\]"):
    tx.update(params, state, params)


@pytest.mark.parametrize("name", ["shampoo", "shampoo_nesterov", "soap"])
def test_adam_parts_are_optix_adam_bit_for_bit(name):
  """Shampoo's Adam graft (before preconditioning starts) and SOAP's Adam (every axis left
  diagonal) are optix's Adam: one copy of the EMA and bias-correction arithmetic
  (optix.transforms.moments), bit for bit."""
  tx, ref = {
      "shampoo": (optix.scale_by_shampoo(start_preconditioning_step=10 ** 6),
                  optix.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)),
      "shampoo_nesterov": (optix.scale_by_shampoo(start_preconditioning_step=10 ** 6,
                                                  nesterov=True),
                           optix.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, nesterov=True)),
      "soap": (optix.scale_by_soap(b1=0.9, b2=0.99, max_preconditioner_dim=0),
               optix.scale_by_adam(b1=0.9, b2=0.99, eps=1e-8))}[name]
  params = {"w": jnp.zeros((6, 5)), "b": jnp.zeros((5,))}
  s, r = tx.init(params), ref.init(params)
  step, ref_step = jax.jit(tx.update), jax.jit(ref.update)
  for t in range(4):
    g = optix.testing.random_like(jax.random.key(t), params)
    u, s = step(g, s)
    v, r = ref_step(g, r)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
      assert (a == b).all(), (t, float(abs(a - b).max()))
