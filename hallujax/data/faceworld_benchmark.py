"""Face-world rendering speed: faces per second at 64², 128², 256² and 512².

    python -m hallujax.data.faceworld_benchmark [--batch 64] [--repeats 3] [--sizes 64,128,256,512]

Times `render_batch` (visible RGB + 68 landmarks, uint8 out, parameters drawn
on the host included) on whatever device jax uses by default; the first call
per size (compilation) is reported separately and not counted.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from hallujax.data import faceworld, faceworld_params
from hallujax.data.faceworld_render import render_batch


def _parameters(batch: int, seed: int):
  rng = np.random.default_rng(seed)
  faces = [faceworld._renderer_inputs(faceworld.face_parameters(0, int(rng.integers(1000)), rng)) for _ in range(batch)]
  return faceworld_params.stack(faces)


def measure(size: int, batch: int, repeats: int, modalities=("visible",)) -> tuple[float, float, float]:
  """(compile seconds, faces per wall-clock second, faces per CPU second) at size².

  CPU seconds (this process, all threads) tell the cost on a shared machine:
  on a quiet machine with N cores, wall-clock throughput approaches
  N × (faces per CPU second) when XLA keeps all cores busy.
  """
  start = time.perf_counter()
  jax.block_until_ready(render_batch(_parameters(batch, 0), size=size, modalities=modalities))
  compile_seconds = time.perf_counter() - start
  start, start_cpu = time.perf_counter(), time.process_time()
  for repeat in range(repeats):
    jax.block_until_ready(render_batch(_parameters(batch, repeat + 1), size=size, modalities=modalities))
  wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
  return compile_seconds, batch * repeats / wall, batch * repeats / cpu


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--sizes", default="64,128,256,512")
  parser.add_argument("--modalities", default="visible", help="comma-separated: visible,nir,thermal")
  arguments = parser.parse_args(argv)
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
