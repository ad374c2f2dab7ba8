"""FSDP owner computes: collective bytes and temporaries per device of one compiled optimizer
step, params 8 × (512×512) sharded by rows over N = 1, 2, 4, 8 simulated CPU devices
(Explicit mesh). Bytes: the output sizes of every collective in the optimized HLO
(optix._sharding.collective_bytes), as a multiple of the param bytes; temporaries:
``compiled.memory_analysis().temp_size_in_bytes``; optimizer state: the bytes of the state's
shards on one device. Target at N=8: <= 0.4× the param bytes, temporaries and state 1/N.

    python benchmarks/fsdp_owner_computes.py [--optimizers=muon,shampoo,soap]
"""

import argparse
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import optix  # noqa: E402
from optix._sharding import collective_bytes  # noqa: E402

MAKERS = {
    "muon": lambda: optix.scale_by_muon(shape_scaling=True),
    # refresh every step: the step that computes roots / bases is the one measured
    "shampoo": lambda: optix.scale_by_shampoo(preconditioning_interval=1,
                                              start_preconditioning_step=0),
    "soap": lambda: optix.scale_by_soap(preconditioning_interval=1),
}


def measure(make, devices, count=8, side=512):
  params = {f"w{i}": jax.random.normal(jax.random.key(i), (side, side)) for i in range(count)}
  mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])
  tx = make()
  with jax.set_mesh(mesh):
    p = jax.device_put(params, NamedSharding(mesh, P("data", None)))
    state = jax.jit(tx.init)(p)
    compiled = jax.jit(tx.update).lower(p, state, p).compile()
  param_bytes = count * side * side * 4
  device = jax.devices()[0]
  state_bytes = sum(s.data.nbytes for x in jax.tree.leaves(state) for s in x.addressable_shards
                    if s.device == device)
  return (collective_bytes(compiled.as_text()) / param_bytes,
          compiled.memory_analysis().temp_size_in_bytes / 2 ** 20, state_bytes / 2 ** 20)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--optimizers", default="muon,shampoo,soap")
  args = ap.parse_args()
  print("| optimizer | N | collective bytes / device (× param bytes) | temp MiB / device "
        "| state MiB / device |")
  print("|---|---|---|---|---|")
  for name in args.optimizers.split(","):
    for n in (1, 2, 4, 8):
      traffic, temp, state = measure(MAKERS[name], n)
      print(f"| {name} | {n} | {traffic:.3f} | {temp:.1f} | {state:.1f} |", flush=True)


if __name__ == "__main__":
  main()
