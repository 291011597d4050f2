"""python -m hallujax.benchmark --config configs/<method>.py[:variant] | --workdir RUN [--steps 20] [--what ...]

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

from absl import flags
from ml_collections import config_flags

from hallujax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config file, e.g. configs/fhgan.py:smoke.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run whose config.json to benchmark (instead of --config).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls per function (after 2 warm-up calls).")
_WHAT = flags.DEFINE_list("what", ["train_step", "hallucinate"], "Functions to time: train_step, hallucinate.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for MFU (default: known devices' dense peak).")
flags.mark_flags_as_required(["config"])

# Dense peak TFLOP/s per chip: (float32 matmul, bfloat16 matmul). float32 on NVIDIA is TF32 tensor-core peak.


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None and not _WORKDIR.value:
    raise cli.UserError("Give --config=configs/<method>.py[:variant] or --workdir=RUN (see --help).")
  from hallujax import benchmarking
  config = cli.prepare_run(_CONFIG.value if _CONFIG.value is not None else cli.read_run_config(_WORKDIR.value))
  benchmarking.benchmark(config, _STEPS.value, _WHAT.value, _PEAK.value)


if __name__ == "__main__":
  cli.run(main)
