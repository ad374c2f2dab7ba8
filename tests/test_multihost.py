"""Multi-host: two processes on 127.0.0.1 (4 CPU devices each, gloo collectives)
train with ``shard_state`` over one 8-device mesh and get exactly what a single
8-device process gets.

The test starts this file twice as a worker (``python test_multihost.py worker
PROCESS_ID PORT OUT``); each calls ``jax.distributed.initialize`` and runs
:func:`train`; process 0 writes the result, which the test compares with
:func:`train` run here on the 8 simulated devices of ``conftest.py``.
"""

import os
import socket
import subprocess
import sys

import numpy as np

STEPS = 4


def train():
  """A few AdamW steps (clipped, state sharded) on a least-squares problem with
  the batch split over the ``data`` axis of a mesh of every process's devices."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  import optix  # pylint: disable=import-outside-toplevel

  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  rng = np.random.default_rng(0)  # the same host values in every process
  host = {"w": rng.normal(size=(16, 4)).astype(np.float32),
          "b": rng.normal(size=(4,)).astype(np.float32)}
  xs = rng.normal(size=(STEPS, 32, 16)).astype(np.float32)
  ys = rng.normal(size=(STEPS, 32, 4)).astype(np.float32)

  def global_array(value, spec):
    return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec),
                                        lambda idx: value[idx])

  tx = optix.shard_state(optix.chain(optix.clip_by_global_norm(1.0),
                                     optix.adamw(1e-2, weight_decay=0.1)), mesh)

  def loss_fn(p, x, y):
    return jnp.mean(jnp.square(x @ p["w"] + p["b"] - y))

  @jax.jit
  def step(p, s, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    u, s = tx.update(g, s, p)
    return optix.apply_updates(p, u), s, loss

  with jax.set_mesh(mesh):
    params = {k: global_array(v, P()) for k, v in host.items()}
    state = jax.jit(tx.init)(params)
    losses = []
    for x, y in zip(xs, ys):
      params, state, loss = step(params, state, global_array(x, P("data")),
                                 global_array(y, P("data")))
      losses.append(loss)
  mu = state[1][0].mu["w"]
  assert mu.sharding.spec == P("data", None) and len(mu.addressable_shards) == 8 // jax.process_count()
  gathered = multihost_utils.process_allgather({"mu_w": mu, "params": params,
                                                "losses": jnp.stack(losses)}, tiled=True)
  return {"w": gathered["params"]["w"], "b": gathered["params"]["b"],
          "mu_w": gathered["mu_w"], "losses": gathered["losses"],
          "processes": np.array(jax.process_count())}


def _worker(process_id, port, out):
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 4)
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
  result = train()
  if process_id == 0:
    np.savez(out, **result)
  jax.distributed.shutdown()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_of_eight_devices(tmp_path):
  out = tmp_path / "two_processes.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if "device_count" not in f))
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, __file__, "worker", str(i), str(port), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  two = np.load(out)
  one = train()
  assert int(two["processes"]) == 2 and int(one["processes"]) == 1
  for k in ("w", "b", "mu_w", "losses"):
    np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-7, err_msg=k)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
