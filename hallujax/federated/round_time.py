"""Round wall time of the one-program VPFL: K vmapped clients against one client, same per-client batch.

    python -m hallujax.federated.round_time --config configs/vpfl.py:smoke --clients 8,1 --steps 3

For each K: the compile time and the steady time of the `local` step (every client's local VPGAN
step, vmapped) and of `local_aggregate` (the same plus Eq. 8), a round's time P·local +
(local_aggregate − local), the train state's bytes per client and XLA's temporary memory for the
step. Batches are random (the step's cost does not depend on the pixels); the data pipeline is not
timed. Per-client time is round time / K.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def measure(config, clients: int, steps: int) -> dict:
  from hallujax.methods import vpfl
  config = config.copy_and_resolve_references()
  config.data.clients = clients
  method = vpfl.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  frozen = jax.jit(method.init_frozen)(jax.random.key(1))
  batch = {name: jax.random.uniform(jax.random.key(2), (clients, config.train.batch_size, *spec.shape),
                                    minval=-1.0, maxval=1.0)
           for name, spec in method.batch_spec.items()}
  result = {"clients": clients,
            "state_bytes_per_client": sum(leaf.nbytes for leaf in jax.tree.leaves((state.params, state.opt_state)))
            / clients}
  for name in ("local", "local_aggregate"):
    if name not in method.steps:
      continue
    program = jax.jit(method.steps[name], donate_argnums=(0,))
    began = time.perf_counter()
    compiled = program.lower(state, frozen, batch, jax.random.key(0)).compile()
    result[f"{name}_compile_s"] = time.perf_counter() - began
    memory = compiled.memory_analysis()
    if memory is not None:
      result[f"{name}_temp_bytes"] = memory.temp_size_in_bytes
    state, metrics = compiled(state, frozen, batch, jax.random.key(0))   # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      began = time.perf_counter()
      state, metrics = compiled(state, frozen, batch, jax.random.key(0))
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - began)
    result[f"{name}_s"] = float(np.median(times))
  local_steps = config.federated.local_steps
  aggregate_extra = result.get("local_aggregate_s", result["local_s"]) - result["local_s"]
  result["round_s"] = local_steps * result["local_s"] + aggregate_extra
  result["round_s_per_client"] = result["round_s"] / clients
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/vpfl.py:smoke")
  parser.add_argument("--clients", default="8,1", help="comma-separated client counts")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per program (median reported)")
  args = parser.parse_args(argv)
  from hallujax import cli
  config = cli.load_config_file(args.config)
  print(f"{jax.devices()[0].device_kind} × {jax.device_count()} | {args.config} | per-client batch "
        f"{config.train.batch_size} | P = {config.federated.local_steps}", flush=True)
  for clients in (int(k) for k in args.clients.split(",")):
    r = measure(config, clients, args.steps)
    print(f"K={clients}: local step {r['local_s']:.3f}s (compile {r['local_compile_s']:.0f}s)"
          + (f", local_aggregate {r['local_aggregate_s']:.3f}s" if "local_aggregate_s" in r else "")
          + f" | round (P steps) {r['round_s']:.1f}s, {r['round_s_per_client']:.2f}s per client"
          + f" | state {r['state_bytes_per_client'] / 2**20:.1f} MiB per client"
          + (f", step temporaries {r['local_temp_bytes'] / 2**20:.0f} MiB" if "local_temp_bytes" in r else ""),
          flush=True)


if __name__ == "__main__":
  main()
