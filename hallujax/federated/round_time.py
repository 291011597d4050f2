"""Round wall time of the one-program VPFL: K vmapped clients against one client, same per-client batch.

    python -m hallujax.federated.round_time --config configs/vpfl.py:smoke --clients 8,1 --steps 3

For each K: the compile time and the steady time of the `local` step (every client's local VPGAN
step, vmapped) and of the aggregation (Eq. 8, jitted alone), a round's time P·local + aggregation, the train state's bytes per client and XLA's temporary memory for the
step. Batches are random (the step's cost does not depend on the pixels); the data pipeline is not
timed. Per-client time is round time / K.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def measure(config, clients: int, steps: int) -> dict:
  from hallujax.methods import vpfl
  config = config.copy_and_resolve_references()
  config.data.clients = clients
  if clients % max(1, len(config.data.thermal_sensors)):
    config.data.thermal_sensors = tuple(config.data.thermal_sensors)[:1]   # batches are random: one site will do
  method = vpfl.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  frozen = jax.jit(method.init_frozen)(jax.random.key(1))
  batch = {name: jax.random.uniform(jax.random.key(2), (clients, config.train.batch_size, *spec.shape),
                                    minval=-1.0, maxval=1.0)
           for name, spec in method.batch_spec.items()}
  result = {"clients": clients,
            "state_bytes_per_client": sum(leaf.nbytes for leaf in jax.tree.leaves((state.params, state.opt_state)))
            / clients}
  program = jax.jit(method.steps["local"], donate_argnums=(0,))
  began = time.perf_counter()
  compiled = program.lower(state, frozen, batch, jax.random.key(0)).compile()
  result["local_compile_s"] = time.perf_counter() - began
  memory = compiled.memory_analysis()
  if memory is not None:
    result["local_temp_bytes"] = memory.temp_size_in_bytes
  state, metrics = compiled(state, frozen, batch, jax.random.key(0))   # warm-up
  jax.block_until_ready(metrics)
  result["local_s"], state = median_time(lambda s: compiled(s, frozen, batch, jax.random.key(0))[0], state, steps)
  # Eq. 8 on its own (the local_aggregate program runs it after the local step).
  aggregate = jax.jit(lambda s: vpfl.aggregate(s, config.federated.optimizer_state))
  result["aggregate_s"], _ = median_time(aggregate, state, steps)
  return finish(result, config, clients)


def median_time(function, state, steps: int) -> tuple[float, object]:
  """(median seconds of `steps` calls after one warm-up, the last state); `function` may donate its input."""
  state = function(state)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    began = time.perf_counter()
    state = function(state)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - began)
  return float(np.median(times)), state


def finish(result: dict, config, clients: int) -> dict:
  local_steps = config.federated.local_steps
  result["round_s"] = local_steps * result["local_s"] + result["aggregate_s"]
  result["round_s_per_client"] = result["round_s"] / clients
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/vpfl.py:smoke")
  parser.add_argument("--clients", default="8,1", help="comma-separated client counts")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per program (median reported)")
  args = parser.parse_args(argv)
  from hallujax import run_files
  config = run_files.load_config_file(args.config)
  print(f"{jax.devices()[0].device_kind} × {jax.device_count()} | {args.config} | per-client batch "
        f"{config.train.batch_size} | P = {config.federated.local_steps}", flush=True)
  for clients in (int(k) for k in args.clients.split(",")):
    r = measure(config, clients, args.steps)
    print(f"K={clients}: local step {r['local_s']:.3f}s (compile {r['local_compile_s']:.0f}s)"
          + f", aggregation {r['aggregate_s'] * 1e3:.1f}ms"
          + f" | round (P steps) {r['round_s']:.1f}s, {r['round_s_per_client']:.2f}s per client"
          + f" | state {r['state_bytes_per_client'] / 2**20:.1f} MiB per client"
          + (f", step temporaries {r['local_temp_bytes'] / 2**20:.0f} MiB" if "local_temp_bytes" in r else ""),
          flush=True)


if __name__ == "__main__":
  main()
