"""How fast one host prepares and feeds CelebA-like data: ``python -m hallujax.tools.pipeline_benchmark``.

    python -m hallujax.tools.pipeline_benchmark                      # 100k images (the default --count)
    python -m hallujax.tools.pipeline_benchmark --count 20000 --out docs/pipeline_benchmark.md

1. Makes ``--count`` CelebA-like images locally (no download): face-world faces
   rendered at 178², placed in 178×218 frames as in img_align_celeba, with
   mild sensor noise, saved as JPEG (quality 90), plus list_eval_partition.txt,
   identity_CelebA.txt and list_landmarks_align_celeba.txt. Reused if present.
2. Prepares them with ``python -m hallujax.prepare``'s defaults (every
   core; records with the original JPEG bytes) and reports images/s, images/s
   per core (over the workers' CPU time) and bytes per example, next to the
   bytes per example of version 1's .npz records and of PNG records at 178²,
   128² and 112² (measured on a sample).
3. Runs the training input pipeline (hallujax.data.pipeline.train_dataset)
   from the records at FH-GAN's and IPFH's paper sizes (28² → 112² bilinear,
   16² → 128² bicubic, batch 128), with random blur, noise and JPEG on the
   input, in 0, 1, 2, ... grain worker processes, and reports examples/s.
4. With ``--flops``, the XLA cost-analysis FLOPs of each method's paper-size
   training step (lowered on this host, nothing run), so the examples/s an
   H200 could consume at its dense bf16 peak is an upper bound to compare against.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time

import numpy as np

from hallujax.data.pipeline import available_cores
from hallujax.errors import first_line

CELEBA_SPLIT = (0.8034, 0.0981)   # CelebA's list_eval_partition: 162,770 / 19,867 / 19,962 of 202,599
FRAME = (218, 178)                # img_align_celeba's images are 178 wide, 218 high
FACE_TOP = 20                     # the face square starts at row 20 (hallujax.data.folders.CelebAFolder)
# Paper-size pipelines: (name, input size, target size, downsampling kernel, batch size).
PAPER_PIPELINES = (
    ("FH-GAN", 28, 112, "bilinear", 128),   # paper 003 §4.1: bilinear ×4, 28 → 112, batch 128
    ("IPFH", 16, 128, "bicubic", 128),      # §III-C: 128² faces ↓8 to 16², batch 128 for F_c
)
DEGRADATION = dict(blur_sigma=(0.0, 1.5), noise_sigma=(0.0, 5.0), jpeg_quality=(60, 95))
PAPER_STEPS = (("FH-GAN", "fhgan.py"), ("IPFH", "ipfh.py"))   # files in the repository's configs/
H200_BF16_PEAK = 989.4e12   # dense bf16 FLOP/s (hallujax.performance.PEAK_TFLOPS)


# ----- 1. a CelebA-like folder --------------------------------------------------------


def five_points(landmarks: np.ndarray) -> np.ndarray:
  """CelebA's five landmarks (eye centres, nose tip, mouth corners) from the 68 iBUG-300W points."""
  return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]])


def _render_chunk(arguments) -> tuple[int, list]:
  """Renders faces [start, stop) and writes them as CelebA-like JPEGs; (bytes written, [(identity, 5 points)])."""
  directory, start, stop, identities = arguments
  from PIL import Image
  from hallujax.config_base import base_config
  from hallujax.data.faceworld import FaceWorldSource
  import threadpoolctl
  threadpoolctl.threadpool_limits(limits=1, user_api="blas")
  config = base_config().data
  config.update(target_size=178, input_size=178, num_identities=identities, train_size=stop, max_yaw=30.0)
  source = FaceWorldSource(config, "train")
  written, labels = 0, []
  for index in range(start, stop):
    example = source[index]
    face = example["target"]
    labels.append((int(example["identity"]), five_points(example["landmarks"]) + np.array([0, FACE_TOP])))
    rng = np.random.default_rng(index)
    frame = np.pad(face, [(FACE_TOP, FRAME[0] - 178 - FACE_TOP), (0, 0), (0, 0)], mode="edge").astype(np.float32)
    frame = np.clip(np.round(frame + rng.normal(0, 3.0, frame.shape)), 0, 255).astype(np.uint8)   # sensor noise
    path = os.path.join(directory, "img_align_celeba", f"{index + 1:06d}.jpg")
    Image.fromarray(frame).save(path, format="JPEG", quality=90)
    written += os.path.getsize(path)
  return written, labels


def make_celeba_like(directory: str, count: int, workers: int, log=print) -> dict:
  """Writes `count` CelebA-like images and CelebA's three text files into `directory` (once)."""
  done_path = os.path.join(directory, "done.json")
  if os.path.isfile(done_path) and json.load(open(done_path)).get("count") == count:
    return json.load(open(done_path))
  import multiprocessing
  shutil.rmtree(directory, ignore_errors=True)
  os.makedirs(os.path.join(directory, "img_align_celeba"))
  identities = max(count // 20, 2)   # CelebA: 10,177 identities for 202,599 images (~20 each)
  started = time.time()
  chunks = [(directory, k * count // (workers * 8), (k + 1) * count // (workers * 8), identities)
            for k in range(workers * 8)]
  with multiprocessing.get_context("fork").Pool(workers) as pool:
    results = pool.map(_render_chunk, chunks)
  written = sum(result[0] for result in results)
  labels = [label for result in results for label in result[1]]
  names = [f"{index + 1:06d}.jpg" for index in range(count)]
  train_end, validation_end = int(CELEBA_SPLIT[0] * count), int((CELEBA_SPLIT[0] + CELEBA_SPLIT[1]) * count)
  with open(os.path.join(directory, "list_eval_partition.txt"), "w") as f:
    f.writelines(f"{name} {0 if k < train_end else 1 if k < validation_end else 2}\n" for k, name in enumerate(names))
  with open(os.path.join(directory, "identity_CelebA.txt"), "w") as f:
    f.writelines(f"{name} {labels[k][0] + 1}\n" for k, name in enumerate(names))
  with open(os.path.join(directory, "list_landmarks_align_celeba.txt"), "w") as f:
    f.write(f"{count}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
            f"rightmouth_x rightmouth_y\n")
    for k, name in enumerate(names):   # five points in frame pixels, whole numbers as CelebA's file has them
      f.write(name + "".join(f" {int(round(v))}" for v in labels[k][1].ravel()) + "\n")
  summary = {"count": count, "seconds": round(time.time() - started, 1), "jpeg_bytes": written,
             "jpeg_bytes_per_image": round(written / count, 1)}
  json.dump(summary, open(done_path, "w"))
  log(f"made {count} CelebA-like JPEGs in {summary['seconds']} s ({summary['jpeg_bytes_per_image']:.0f} bytes each)")
  return summary


# ----- 2. prepare and bytes per example -----------------------------------------------


def prepare_timed(raw_dir: str, out_dir: str, workers: int, log=print) -> dict:
  """Prepares raw_dir into out_dir with prepare's defaults; wall time and the workers' CPU time."""
  from hallujax import prepare
  from hallujax.data import record_writing
  shutil.rmtree(out_dir, ignore_errors=True)
  arguments = prepare.parse(["--source", "celeba_folder", "--data_dir", raw_dir, "--out_dir", out_dir,
                             "--workers", str(workers)])
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  started = time.time()
  result = record_writing.prepare(arguments, log=log)
  wall = time.time() - started
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  if workers <= 1:
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = own.ru_utime + own.ru_stime   # (includes this process's start-up: a slight underestimate of the rate)
  info = result["info"]
  examples = sum(info["splits"].values()) + info["unusable"]
  return {"examples": examples, "wall_s": wall, "cpu_s": cpu, "images_per_s": examples / wall,
          "images_per_core_s": examples / max(cpu, 1e-9), "workers": workers, "info": info}


def legacy_npz_bytes(example: dict) -> int:
  """Bytes of format version 1's record of `example` (every field in an uncompressed .npz)."""
  import io
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in example.items()})
  return len(buffer.getvalue())


def bytes_per_example_sample(raw_dir: str, sample: int) -> dict[str, float]:
  """Mean record bytes over `sample` examples: version 1 (.npz), and version 2 with PNG at 178², 128², 112²."""
  from hallujax.config_base import data_section
  from hallujax.data import record_writing, records
  from hallujax.data.sources import make_source
  source = make_source(data_section(source="celeba_folder", data_dir=raw_dir, pairing="same_view", target_size=0),
                       "train")
  indices = np.linspace(0, len(source) - 1, min(sample, len(source))).astype(int)
  sizes = {"v1 npz 178²": [], "v1 npz 128²": [], "v2 jpeg (original)": [], "v2 png 178²": [],
           "v2 png 128²": [], "v2 png 112²": []}
  for index in indices:
    example = source.load(int(index))
    sizes["v1 npz 178²"].append(legacy_npz_bytes(example))
    original = record_writing.original_bytes(source, int(index), example, "jpeg")
    sizes["v2 jpeg (original)"].append(len(records.encode(example, original)))
    sizes["v2 png 178²"].append(len(records.encode(example)))
    for size in (128, 112):
      resized = record_writing.resize_example(example, size)
      if size == 128:
        sizes["v1 npz 128²"].append(legacy_npz_bytes({**resized, "input": resized["target"].copy()}))
      sizes[f"v2 png {size}²"].append(len(records.encode(resized)))
  return {name: float(np.mean(values)) for name, values in sizes.items()}


# ----- 3. the input pipeline ----------------------------------------------------------


def pipeline_config(records_dir: str, input_size: int, target_size: int, downsample: str, batch_size: int,
                    workers: int, degradation: dict | None):
  from hallujax.config_base import base_config
  config = base_config()
  config.data.update(source="prepared", data_dir=records_dir, input_size=input_size, target_size=target_size,
                     downsample=downsample, worker_count=workers)
  config.data.degradation = dict(degradation or {})
  config.train.batch_size = batch_size
  return config


def pipeline_rate(config, batches: int) -> float:
  """Examples/s of train_dataset(config) in steady state.

  The first batches (worker start-up, and every buffer's worth: read_buffer + workers × worker_buffer_size
  + 2) are not timed, so the timed ones are produced while the loop waits, not taken from full buffers;
  at least three times the batches in flight are timed.
  """
  from hallujax.data import pipeline
  options = pipeline.reading_options(config.data)
  in_flight = options["read_buffer"] + options["worker_count"] * options["worker_buffer_size"]
  warmup = in_flight + 2
  batches = max(batches, 3 * in_flight)   # batches finish in groups of those in flight: time several groups
  iterator = iter(pipeline.train_dataset(config))
  for _ in range(warmup):
    next(iterator)
  started = time.time()
  for _ in range(batches):
    batch = next(iterator)
  elapsed = time.time() - started
  assert batch["input"].shape[1] == config.data.input_size
  getattr(iterator, "close", lambda: None)()   # stops grain's worker processes and frees their shared memory
  return batches * config.train.batch_size / elapsed


def per_core_rate(config, examples: int, split: str = "train") -> float:
  """Examples/s of one core doing one example after another: read, decode, resize, degrade (no threads)."""
  import grain
  from hallujax.data import pipeline
  source, prepare_example = pipeline.read_source(config, split)
  dataset = pipeline._transformed(grain.MapDataset.source(source), prepare_example, config, config.seed)
  dataset[0]
  started = time.process_time()
  for index in range(1, examples + 1):
    dataset[index % len(dataset)]
  return examples / (time.process_time() - started)


# ----- 4. what a paper step consumes ----------------------------------------------------


def per_core_by_format(records_dir: str, raw_dir: str, work_dir: str, examples: int) -> list[tuple]:
  """One core's examples/s on the validation split: original-JPEG records (no resize at prepare) against
  PNG records prepared at the method's target size (--target_size), with and without degradations."""
  from hallujax import prepare
  from hallujax.data import record_writing
  rows = []
  for name, input_size, target_size, downsample, batch_size in PAPER_PIPELINES:
    resized = os.path.join(work_dir, f"records_png{target_size}")
    if not os.path.isfile(os.path.join(resized, "info.json")):
      shutil.rmtree(resized, ignore_errors=True)
      record_writing.prepare(prepare.parse(["--source", "celeba_folder", "--data_dir", raw_dir, "--out_dir", resized,
                                     "--splits", "validation", "--target_size", str(target_size)]), log=lambda line: None)
    for label, directory in ((f"original JPEG 178²", records_dir), (f"PNG {target_size}² (--target_size)", resized)):
      for degradation in (DEGRADATION, None):
        config = pipeline_config(directory, input_size, target_size, downsample, batch_size, 0, degradation)
        rows.append((name, label, "yes" if degradation else "no", per_core_rate(config, examples, "validation")))
  return rows


def paper_step_flops(config_file: str, configs_dir: str) -> dict[str, tuple[float, int]]:
  """{step name: (XLA cost-analysis FLOPs, images per step)} of a config's steps, lowered, never run."""
  import jax
  from hallujax import performance
  from hallujax.methods import make_method
  config = performance.load_config(os.path.join(configs_dir, config_file))
  method = make_method(config)
  rng = jax.random.key(0)
  state = jax.eval_shape(method.init, rng)
  frozen = jax.eval_shape(method.init_frozen, rng)
  leading = (config.train.batch_size,)
  batch = {name: jax.ShapeDtypeStruct((*leading, *spec.shape), spec.dtype) for name, spec in method.batch_spec.items()}
  result = {}
  for name, step in method.steps.items():
    analysis = jax.jit(step).lower(state, frozen, batch, rng).cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else {}
    result[name] = (float((analysis or {}).get("flops", 0.0)), config.train.batch_size)
  return result


# ----- the report -----------------------------------------------------------------------


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--count", type=int, default=100_000, help="CelebA-like images to make and prepare")
  parser.add_argument("--work_dir", default=os.path.join("/tmp", "hallujax_pipeline_benchmark"))
  parser.add_argument("--workers", type=int, default=0, help="prepare's worker processes (0: every core)")
  parser.add_argument("--pipeline_workers", default="", help="grain worker counts to measure (default 0,1,2,...,cores)")
  parser.add_argument("--batches", type=int, default=12, help="timed batches per pipeline measurement")
  parser.add_argument("--sample", type=int, default=256, help="examples sampled for the bytes-per-example table")
  parser.add_argument("--flops", action="store_true", help="also lower FH-GAN's and IPFH's paper steps for their FLOPs")
  parser.add_argument("--configs_dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "configs"), help="where fhgan.py and ipfh.py are (--flops)")
  parser.add_argument("--out", default="", help="also write the report (markdown) here")
  arguments = parser.parse_args(argv)
  log = lambda text: print(text, flush=True)
  cores = available_cores()
  workers = arguments.workers or cores
  raw_dir, records_dir = os.path.join(arguments.work_dir, "raw"), os.path.join(arguments.work_dir, "records")
  started = time.time()
  raw = make_celeba_like(raw_dir, arguments.count, workers, log)
  prepared = prepare_timed(raw_dir, records_dir, workers, log)
  sizes = bytes_per_example_sample(raw_dir, arguments.sample)
  counts = ([int(v) for v in arguments.pipeline_workers.split(",")] if arguments.pipeline_workers
            else sorted({0, 1, 2, cores}))
  rows = []
  for name, input_size, target_size, downsample, batch_size in PAPER_PIPELINES:
    for worker_count in counts:
      config = pipeline_config(records_dir, input_size, target_size, downsample, batch_size, worker_count, DEGRADATION)
      rate = pipeline_rate(config, arguments.batches)
      rows.append((name, f"{input_size}² → {target_size}²", worker_count, rate))
      log(f"pipeline {name} {target_size}², {worker_count} workers: {rate:,.0f} examples/s")
  by_format = per_core_by_format(records_dir, raw_dir, arguments.work_dir, 400)
  single = {name: rate for name, label, degraded, rate in by_format if label.startswith("original") and degraded == "yes"}
  flops = {}
  if arguments.flops:
    for name, path in PAPER_STEPS:
      try:
        flops[name] = paper_step_flops(path, arguments.configs_dir)
      except Exception as error:   # a config that cannot be lowered here becomes a note
        flops[name] = {"error": first_line(error)}
  import jax
  load = os.getloadavg()[0]
  lines = [
      f"## Input pipeline benchmark ({arguments.count} CelebA-like images)", "",
      f"`python -m hallujax.tools.pipeline_benchmark {' '.join(argv if argv is not None else sys.argv[1:])}`, "
      f"{cores} cores, jax {jax.__version__} ({jax.default_backend()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"load average {load:.1f} at the end, {time.time() - started:.0f} s in all.", "",
      f"Source: {raw['count']} JPEGs, {raw['jpeg_bytes_per_image']:.0f} bytes each on average (made in {raw['seconds']} s).", "",
      "| prepare | value |", "|---|---|",
      f"| images | {prepared['examples']} ({prepared['info']['unusable']} unusable) |",
      f"| worker processes | {prepared['workers']} |",
      f"| wall time | {prepared['wall_s']:.1f} s |",
      f"| images/s (host) | {prepared['images_per_s']:,.0f} |",
      f"| images/s per core (workers' CPU time) | {prepared['images_per_core_s']:,.0f} |",
      f"| bytes per example (records written, {prepared['info']['encoding']}) | {prepared['info']['bytes_per_example']:,.0f} |",
      "", f"Bytes per example by format (mean of {arguments.sample} examples):", "",
      "| format | bytes/example |", "|---|---|",
      *[f"| {name} | {value:,.0f} |" for name, value in sizes.items()],
      "", f"Pipeline: records → decode → resize (target bicubic, input by the paper's kernel) → blur/noise/JPEG "
      f"{DEGRADATION} → batches of 128, at least {arguments.batches} batches (and 3× those in flight) timed after the buffers' worth:", "",
      "| pipeline | sizes | grain workers | examples/s (host) |", "|---|---|---|---|",
      *[f"| {name} | {sizes_} | {w} | {rate:,.0f} |" for name, sizes_, w, rate in rows],
      "", "One core, one example after another (CPU time, 400 validation examples): read, decode, resize, degrade:", "",
      "| pipeline | records | degradations | examples/s per core |", "|---|---|---|---|",
      *[f"| {name} | {label} | {degraded} | {rate:,.0f} |" for name, label, degraded, rate in by_format],
      "", "A 16-core host with 14 workers (default_worker_count), projected from one core's rate with the default "
      "records and degradations: "
      + ", ".join(f"{name} ~{14 * rate:,.0f} examples/s" for name, rate in single.items()) + ".",
  ]
  if flops:
    lines += ["", "Paper-size steps (XLA cost analysis of the lowered step; consumption ceiling = examples an H200 "
              "could take per second at its dense bf16 peak, 989 TFLOP/s; a real step is slower):", "",
              "| method | step | GFLOP/example | H200 ceiling examples/s | 3× ceiling | cores for 3× ceiling at one core's rate |",
              "|---|---|---|---|---|---|"]
    for name, steps in flops.items():
      if "error" in steps:
        lines.append(f"| {name} | – | {steps['error']} | | | |")
        continue
      for step, (value, images) in steps.items():
        if value <= 0:
          continue
        ceiling = H200_BF16_PEAK / (value / images)
        lines.append(f"| {name} | {step} | {value / images / 1e9:,.1f} | {ceiling:,.0f} | {3 * ceiling:,.0f} | "
                     f"{3 * ceiling / single[name]:,.1f} cores |")
  report = "\n".join(lines) + "\n"
  print(report)
  if arguments.out:
    with open(arguments.out, "w") as f:
      f.write(report)
  return report


if __name__ == "__main__":
  main()
