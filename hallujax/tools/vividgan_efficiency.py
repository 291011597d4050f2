"""python -m hallujax.tools.vividgan_efficiency --config configs/vividgan.py[:variant] [--batch_sizes 1,64]

VividGAN's Table IV (paper 002 §V-C): parameters and test-time running time of
VividGAN and of VividGAN† (its coarse-level network alone).

* Parameters: counted from ``jax.eval_shape`` of the method's ``init`` (nothing
  computed), per network and for the two test-time generators (VividGAN† =
  coarse; VividGAN = coarse + landmark estimator + touching-up + fine
  integration; discriminators and the frozen ResNet-50 only train). "KB" is
  float32 bytes / 1000, the unit of the paper's column (its 242,089 KB for
  VividGAN is 242 MB of float32 weights).
* Running time: milliseconds per image of the jitted test-time forward (the
  ``output`` column of the method's ``hallucinate``, or its ``coarse`` column
  for VividGAN†; XLA drops the parts a column does not need) on random
  parameters and inputs of the config's sizes, at each batch size: the median
  of --repeats calls after one warm-up call, which compiles (its time is
  reported as "compile").

The paper timed a GPU; on a CPU the figures are CPU figures, and the table
says which device ran them. ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
from absl import flags
from ml_collections import config_flags

from hallujax import cli

FLAGS = flags.FLAGS
GENERATOR_NETWORKS = {"VividGAN† (coarse only)": ("coarse",),
                      "VividGAN": ("coarse", "landmarks", "touching_up", "fine")}
TIMED_COLUMNS = {"VividGAN† (coarse only)": "coarse", "VividGAN": "output"}


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "VividGAN config, e.g. configs/vividgan.py or :smoke.")
  flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes to time (Table IV: ms per image).")
  flags.DEFINE_integer("repeats", 3, "Timed calls per batch size, after one warm-up call.")
  flags.DEFINE_string("json", None, "Also write the numbers to this JSON file.")


def parameter_counts(method) -> dict[str, int]:
  """Trained parameters per network of the method's state (no computation)."""
  import jax  # pylint: disable=import-outside-toplevel
  abstract = jax.eval_shape(method.init, jax.random.key(0))
  return {name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
          for name, tree in abstract.params.items()}


def random_state(method, seed: int = 0):
  """The state's structure with small random values, made on the host (no compiled init)."""
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(method.init, jax.random.key(0))
  def leaf(shape_dtype):
    if np.issubdtype(shape_dtype.dtype, np.floating):
      return np.asarray(0.02 * rng.standard_normal(shape_dtype.shape), shape_dtype.dtype)
    return np.zeros(shape_dtype.shape, shape_dtype.dtype)
  return jax.tree.map(leaf, abstract)


def random_batch(method, batch_size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  batch = {}
  for name, spec in method.batch_spec.items():
    shape = (batch_size, *spec.shape)
    batch[name] = (rng.uniform(0, 31, shape) if name == "landmarks" else rng.uniform(-1, 1, shape)).astype(spec.dtype)
  return batch


def timed_forward(method, state, column: str, batch: dict, repeats: int) -> dict[str, float]:
  """Compile seconds and the median ms per image of the jitted hallucinate()[column] on `batch`."""
  import jax  # pylint: disable=import-outside-toplevel
  forward = jax.jit(lambda state, batch: method.hallucinate(state, {}, batch)[column])
  start = time.perf_counter()
  jax.block_until_ready(forward(state, batch))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(state, batch))
    times.append(time.perf_counter() - start)
  images = next(iter(batch.values())).shape[0]
  return {"compile_s": first, "ms_per_image": 1000.0 * statistics.median(times) / images,
          "ms_per_batch": 1000.0 * statistics.median(times)}


def efficiency_table(config, batch_sizes=(1, 64), repeats: int = 3) -> dict:
  """Table IV's numbers for `config` (a dict, as the JSON file)."""
  import jax  # pylint: disable=import-outside-toplevel
  from hallujax.methods import make_method  # pylint: disable=import-outside-toplevel
  method = make_method(config)
  counts = parameter_counts(method)
  state = jax.device_put(random_state(method))
  rows = {}
  for name, networks in GENERATOR_NETWORKS.items():
    parameters = sum(counts.get(network, 0) for network in networks)
    row = {"parameters": parameters, "kilobytes_float32": 4 * parameters / 1000, "timing": {}}
    for batch_size in batch_sizes:
      row["timing"][str(batch_size)] = timed_forward(method, state, TIMED_COLUMNS[name],
                                                     random_batch(method, int(batch_size)), repeats)
    rows[name] = row
  device = jax.devices()[0]
  return {"config": f"{config.method}, {config.data.input_size}² -> {config.data.target_size}²",
          "device": f"{device.platform} ({device.device_kind}), {jax.device_count()} device(s)",
          "networks": counts, "rows": rows, "repeats": repeats}


def markdown(report: dict) -> str:
  sizes = list(next(iter(report["rows"].values()))["timing"])
  header = "| method | parameters | KB (float32) | " + " | ".join(f"ms/image @ batch {b}" for b in sizes) + " |"
  lines = ["# VividGAN efficiency (paper 002, Table IV)", "", header, "|---" * (3 + len(sizes)) + "|"]
  for name, row in report["rows"].items():
    cells = [f"{row['timing'][b]['ms_per_image']:.2f}" for b in sizes]
    lines.append(f"| {name} | {row['parameters']:,} | {row['kilobytes_float32']:,.0f} | " + " | ".join(cells) + " |")
  lines += ["", f"- {report['config']}; random parameters and inputs; median of {report['repeats']} calls after a "
            f"compiling warm-up; device: {report['device']} (the paper timed a GPU).",
            "- Per network: " + ", ".join(f"{name} {count:,}" for name, count in report["networks"].items()) + "."]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = FLAGS.config
  if config is None:
    raise cli.UserError("Give --config=configs/vividgan.py[:variant].")
  if config.method != "vividgan":
    raise cli.UserError(f"--config names method {config.method!r}; this tool times VividGAN (configs/vividgan.py).")
  cli.prepare_run(config)
  batch_sizes = tuple(int(b) for b in FLAGS.batch_sizes)
  if not batch_sizes or min(batch_sizes) < 1:
    raise cli.UserError(f"--batch_sizes={','.join(FLAGS.batch_sizes)}; expected positive integers, e.g. 1,64.")
  report = efficiency_table(config, batch_sizes, FLAGS.repeats)
  print(markdown(report))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(report, f, indent=2)
    print(f"Wrote {FLAGS.json}.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
