"""The benchmark behind ``python -m hallujax.benchmark``: --config configs/<method>.py[:variant] | --workdir RUN [--steps 20] [--what ...]

The one place throughput figures come from. For each jitted function, on the
mesh the trainer would use: compile time, median step time over --steps
timed calls (after warm-up), images/s, XLA's FLOP count (cost analysis) and
achieved FLOP/s, MFU where the device's peak is known (or --peak_tflops),
and how many times the function was traced (a step that retraces is a bug:
it must be 1). A method with step variants (training phases, lazy
regularization) gets one line per named step. Inputs are random batches of the
method's batch_spec; frozen networks keep their random initialization (no file
is read: throughput does not depend on the weights).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hallujax import sharding, trainer
from hallujax.data import feed as feed_lib
from hallujax.methods import make_method

PEAK_TFLOPS = {
    "H100": (494.7, 989.4), "H200": (494.7, 989.4), "A100": (156.0, 312.0),
    "TPU v4": (137.5, 275.0), "TPU v5 lite": (98.5, 197.0), "TPU v5e": (98.5, 197.0),
    "TPU v5p": (229.5, 459.0), "TPU v6 lite": (459.0, 918.0), "TPU v6e": (459.0, 918.0),
}


def device_peak_flops(compute_dtype: str, override_tflops: float) -> float | None:
  if override_tflops > 0:
    return override_tflops * 1e12
  kind = jax.devices()[0].device_kind
  for name, (float32, bfloat16) in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return (bfloat16 if compute_dtype == "bfloat16" else float32) * 1e12 * jax.device_count()
  return None


def random_batch(spec: dict, leading: tuple[int, ...], seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  batch = {}
  for name, s in spec.items():
    shape = (*leading, *s.shape)
    if jnp.issubdtype(s.dtype, jnp.integer):
      batch[name] = rng.integers(0, 2, shape).astype(s.dtype)
    else:
      batch[name] = rng.uniform(-1, 1, shape).astype(s.dtype)
  return batch


def flops_of(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per program
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def time_calls(call, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def counting(function, counter: dict, name: str):
  """`function`, counting how often jax traces it."""

  @functools.wraps(function)
  def traced(*args, **kwargs):
    counter[name] = counter.get(name, 0) + 1
    return function(*args, **kwargs)

  return traced


def report(name: str, compile_seconds: float, times: list[float], images: int, flops: float | None,
           peak: float | None, traces: int) -> dict:
  median = statistics.median(times)
  line = (f"{name}: compile {compile_seconds:.2f} s | median {median * 1e3:.2f} ms "
          f"(min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f}, n={len(times)}) | "
          f"{images / median:.1f} images/s")
  if flops:
    line += f" | {flops / 1e9:.2f} GFLOP/call | {flops / median / 1e12:.3f} TFLOP/s"
    line += f" | MFU {100 * flops / median / peak:.1f}%" if peak else " | MFU n/a (unknown peak)"
  line += f" | traced {traces}x"
  print(line, flush=True)
  return dict(name=name, compile_seconds=compile_seconds, median_seconds=median, images_per_second=images / median,
              flops=flops, traces=traces)


def benchmark(config, steps: int, what: list[str], peak_tflops: float = 0.0) -> list[dict]:
  method = make_method(config)
  counter: dict = {}
  counted = dataclasses.replace(
      method, steps={name: counting(fn, counter, name) for name, fn in method.steps.items()},
      hallucinate=counting(method.hallucinate, counter, "hallucinate"))
  mesh = sharding.make_mesh(config.mesh)
  batch_size = config.train.batch_size
  print(f"{config.method} | {jax.device_count()} × {jax.devices()[0].device_kind} | mesh {dict(mesh.shape)} | "
        f"batch {batch_size} | {config.train.compute_dtype}", flush=True)
  state, state_shardings = trainer.init_state(method, config, mesh, jax.random.key(config.seed))
  frozen, frozen_shardings = trainer.frozen_networks(method, config, mesh, jax.random.key(1), load=False)
  clients = int(config.data.get("clients", 0))
  leading = (clients, batch_size) if method.batch_axes == ("clients", "batch") else (batch_size,)
  feed = feed_lib.Feed(config.data.copy_and_resolve_references(), mesh, method.batch_spec, method.batch_axes,
                       batch_size)
  feed.render = None   # random images, not renderer parameters
  batch = feed(random_batch(method.batch_spec, leading))
  rng_data = jax.random.key_data(jax.random.key(1))
  peak = device_peak_flops(config.train.compute_dtype, peak_tflops)
  images = int(np.prod(leading))
  results = []

  if "train_step" in what:
    programs = trainer.jit_steps(counted, config, mesh, state_shardings, frozen_shardings)
    for name, step in programs.items():
      start = time.perf_counter()
      compiled = step.lower(state, frozen, batch, rng_data).compile()
      compile_seconds = time.perf_counter() - start
      holder = {"state": state}

      def call():
        holder["state"], metrics = step(holder["state"], frozen, batch, rng_data)
        return metrics

      time_calls(call, 2)  # warm-up (donation makes the first real call allocate)
      results.append(report(f"train_step[{name}]", compile_seconds, time_calls(call, steps), images,
                            flops_of(compiled), peak, counter.get(name, 0)))
      state = holder["state"]

  if "hallucinate" in what:
    generate = trainer.GridColumns(counted, mesh, state_shardings, frozen_shardings).jitted
    start = time.perf_counter()
    compiled = generate.lower(state, frozen, batch).compile()
    compile_seconds = time.perf_counter() - start
    call = lambda: generate(state, frozen, batch)
    time_calls(call, 2)
    results.append(report("hallucinate", compile_seconds, time_calls(call, steps), images,
                          flops_of(compiled), peak, counter.get("hallucinate", 0)))
  return results
