"""Face-world rendering speed: faces per second at 64², 128², 256² and 512².

    python -m hallujax.tools.faceworld_benchmark [--batch 64] [--repeats 3] [--sizes 64,128,256,512]
    python -m hallujax.tools.faceworld_benchmark --pipeline [--batch 64] [--repeats 3]

Times `render_batch` (visible RGB + 68 landmarks, uint8 out, parameters drawn
on the host included) on whatever device jax uses by default; the first call
per size (compilation) is reported separately and not counted. With
--modalities visible,thermal (or nir) the shader renders both in one loop.

--pipeline times the whole input pipeline instead, as the trainer drives it
(grain batches, then hallujax.data.feed until the batch is on the
devices), for a same_view 128² → 16² config (FH-GAN's fields: input, target,
identity): config.data.render_on="host" (each face rendered and resized in
grain, then copied over) against "device" (grain yields parameters; the
devices render and resize; hallujax.data.device_render).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from hallujax.data import faceworld, faceworld_params
from hallujax.data.faceworld_render import render_batch


IDENTITIES = 1000   # base_config's data.num_identities


def _parameters(batch: int, seed: int):
  rng = np.random.default_rng(seed)
  faces = [faceworld._renderer_inputs(faceworld.face_parameters(0, int(rng.integers(IDENTITIES)), rng))
           for _ in range(batch)]
  return faceworld_params.stack(faces)


def measure(size: int, batch: int, repeats: int, modalities=("visible",)) -> tuple[float, float, float]:
  """(compile seconds, faces per wall-clock second, faces per CPU second) at size².

  The steady state of a training run: every identity has been drawn once
  (faceworld_params caches them), and the next batch's parameters are drawn
  on the host while the device renders the current one, as a pipeline does.
  CPU seconds (this process, all threads) tell the cost on a shared machine:
  on a quiet machine with N cores, wall-clock throughput approaches
  N × (faces per CPU second) when XLA keeps all cores busy.
  """
  for identity in range(IDENTITIES):
    faceworld_params.identity_parameters(0, identity)
  start = time.perf_counter()
  jax.block_until_ready(render_batch(_parameters(batch, 0), size=size, modalities=modalities))
  compile_seconds = time.perf_counter() - start
  start, start_cpu = time.perf_counter(), time.process_time()
  parameters = _parameters(batch, 1)
  for repeat in range(repeats):
    rendered = render_batch(parameters, size=size, modalities=modalities)   # dispatched, not waited for
    parameters = _parameters(batch, repeat + 2)
    jax.block_until_ready(rendered)
  wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
  return compile_seconds, batch * repeats / wall, batch * repeats / cpu


def pipeline_config(render_on: str, batch: int):
  """A same_view 128² → 16² face-world config (bicubic, as IPFH's data)."""
  from hallujax.config_base import base_config
  config = base_config()
  config.data.update(pairing="same_view", target_size=128, input_size=16, downsample="bicubic",
                     render_on=render_on)
  config.train.batch_size = batch
  return config


def measure_pipeline(render_on: str, batch: int, repeats: int) -> tuple[float, float]:
  """(seconds to the first batch on the devices, steady faces per second) of the input pipeline."""
  import jax.numpy as jnp
  from hallujax import sharding
  from hallujax.data import feed as feed_lib, pipeline

  config = pipeline_config(render_on, batch)
  mesh = sharding.make_mesh(config.mesh)
  spec = {"input": jax.ShapeDtypeStruct((16, 16, 3), jnp.float32),
          "target": jax.ShapeDtypeStruct((128, 128, 3), jnp.float32),
          "identity": jax.ShapeDtypeStruct((), jnp.int32)}
  feed = feed_lib.Feed(config.data, mesh, spec, ("batch",), batch)
  start = time.perf_counter()
  batches = feed.prefetch(iter(pipeline.train_dataset(config)), config.data.prefetch)
  jax.block_until_ready(next(batches))
  first_seconds = time.perf_counter() - start
  # grain (4 batches) and the trainer (data.prefetch) filled their buffers during the first
  # batch's compilation; drain them untimed so the rate below is the steady state.
  for _ in range(4 + config.data.prefetch + 2):
    jax.block_until_ready(next(batches))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(next(batches))
  return first_seconds, batch * repeats / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--sizes", default="64,128,256,512")
  parser.add_argument("--modalities", default="visible", help="comma-separated: visible,nir,thermal")
  parser.add_argument("--pipeline", action="store_true",
                      help="time the input pipeline (same_view 128² → 16²) with render_on=host and =device")
  arguments = parser.parse_args(argv)
  if arguments.pipeline:
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {jax.device_count()} devices, "
          f"{os.cpu_count()} CPU cores), batch {arguments.batch}, same_view 128² → 16²; "
          f"load average {os.getloadavg()[0]:.1f}")
    for render_on in ("host", "device"):
      first_seconds, rate = measure_pipeline(render_on, arguments.batch, arguments.repeats)
      print(f"render_on={render_on:6s}: {rate:8.1f} faces/s  (first batch {first_seconds:.1f} s)")
    return
  modalities = tuple(arguments.modalities.split(","))
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}, {os.cpu_count()} CPU cores), "
        f"batch {arguments.batch}, {modalities}; load average {os.getloadavg()[0]:.1f}")
  for size in (int(s) for s in arguments.sizes.split(",")):
    batch = max(1, arguments.batch * 128 * 128 // (size * size)) if size > 128 else arguments.batch
    compile_seconds, rate, per_cpu_second = measure(size, batch, arguments.repeats, modalities)
    print(f"{size:4d}²: {rate:8.1f} faces/s  ({per_cpu_second:.1f} per CPU-second; batch {batch}, "
          f"first call {compile_seconds:.1f} s)")


if __name__ == "__main__":
  main()
