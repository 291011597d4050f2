"""python -m hallujax.benchmark --config configs/<method>.py[:variant] | --workdir RUN | --suite paper|smoke|torch

The one place throughput figures come from. For each jitted function, on the
mesh the trainer would use: compile time, compile count, median and spread of
the step time over --steps timed calls (after --warmup calls), images/s, XLA's
FLOP count and achieved TFLOP/s, MFU where the device's peak is known (or
--peak_tflops), the program's and the device's peak memory, and how many times
the function was traced (a step that retraces is a bug: it must be 1). A
method with step variants gets one line per named step. Inputs are random
batches of the method's batch_spec; no weights file is read.

--suite paper   every method with a config, at the paper's sizes, each named
                step, in --dtypes (default float32,bfloat16); --out DIR writes
                suite_paper.md and suite_paper.json (--trace_slowest adds a
                profiler trace of the slowest step under DIR/trace).
--suite smoke   the same with the :smoke variants (CPU; default --steps 3
                --warmup 1 --named_steps first --dtypes float32).
--config X --numerics_steps 100
                trains 100 steps of X in float32 and in bfloat16 from the same
                start and compares the loss curves (no timing).
--suite torch   StyleGAN2's train step in hallujax against the same step in
                PyTorch eager and torch.compile, interleaved in this process
                (hallujax.tools.torch_reference; needs torch).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from hallujax import run_files
from hallujax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config file, e.g. configs/fhgan.py:smoke.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run whose config.json to benchmark (instead of --config).")
_SUITE = flags.DEFINE_enum("suite", None, ["paper", "smoke", "torch"], "Benchmark a whole suite (see above).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls per function, after the warm-up calls (smoke suite: 3).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls before timing (smoke suite: 1).")
_WHAT = flags.DEFINE_list("what", ["train_step", "hallucinate"], "With --config: functions to time: "
                          "train_step, hallucinate.")
_DTYPES = flags.DEFINE_list("dtypes", None, "Compute dtypes (float32, bfloat16). Default: the config's own; "
                            "paper suite float32,bfloat16; smoke suite float32.")
_NAMED = flags.DEFINE_enum("named_steps", None, ["all", "first"], "Every named step of a method, or only the one "
                           "step 0 runs (default: all; smoke suite: first).")
_METHODS = flags.DEFINE_list("methods", [], "Suites: only these methods (default: every method with a config).")
_CONFIGS_DIR = flags.DEFINE_string("configs_dir", "configs", "Suites: where the method config files are.")
_OUT = flags.DEFINE_string("out", None, "Write the markdown table and JSON here.")
_BUDGET = flags.DEFINE_float("budget_seconds", 0.0, "Suites: start no new config after this many seconds "
                             "(0: no limit); what is left is listed in the notes.")
_TRACE = flags.DEFINE_bool("trace_slowest", False, "Suites: write a jax.profiler trace of the slowest step to "
                           "<out>/trace.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for MFU (default: the known devices' dense "
                           "peak, hallujax.performance.PEAK_TFLOPS).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "--suite torch: the StyleGAN2 batch (default: the config's).")
_NUMERICS = flags.DEFINE_integer("numerics_steps", 0, "With --config: instead of timing, train this many steps "
                                 "in float32 and in bfloat16 from the same start and compare the loss curves.")
_TORCH_CONFIG = flags.DEFINE_string("torch_config", "configs/stylegan2.py:smoke", "--suite torch: the StyleGAN2 "
                                    "config to compare.")


def chosen(flag, suite_default):
  """The flag's value when given on the command line, else the suite's default."""
  return flag.value if flags.FLAGS[flag.name].present else suite_default


def run_suite(suite: str) -> None:
  from hallujax import performance
  smoke = suite == "smoke"
  steps, warmup = chosen(_STEPS, 3 if smoke else 20), chosen(_WARMUP, 1 if smoke else 2)
  dtypes = _DTYPES.value or (["float32"] if smoke else ["float32", "bfloat16"])
  named = _NAMED.value or ("first" if smoke else "all")
  if steps < 1 or warmup < 0:
    raise cli.UserError(f"--steps={steps} and --warmup={warmup}; expected steps ≥ 1 and warmup ≥ 0.")
  entries, notes = performance.suite_entries(suite, _CONFIGS_DIR.value, _METHODS.value)
  for note in notes:
    print(note, flush=True)
  rows, run_notes = performance.run_entries(entries, dtypes, steps=steps, warmup=warmup, named_steps=named,
                                             budget_seconds=_BUDGET.value, peak_tflops=_PEAK.value)
  notes += run_notes
  if _TRACE.value and _OUT.value and rows:
    notes.append(performance.trace_slowest(rows, os.path.join(_OUT.value, "trace"), warmup=warmup))
  env = performance.environment()
  title = f"hallujax benchmark suite: {suite}"
  print(performance.markdown_table(rows, notes, env, title), flush=True)
  if _OUT.value:
    for path in performance.write_outputs(_OUT.value, f"suite_{suite}", rows, notes, env, title):
      print(f"wrote {path}", flush=True)


def run_torch() -> None:
  from hallujax.tools import torch_reference
  torch_reference.compare(_TORCH_CONFIG.value, steps=chosen(_STEPS, 5), warmup=chosen(_WARMUP, 1),
                          batch_size=_BATCH.value, out_dir=_OUT.value)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _SUITE.value and (_CONFIG.value is not None or _WORKDIR.value):
    raise cli.UserError("Give either --suite or --config/--workdir, not both.")
  if _SUITE.value == "torch":
    return run_torch()
  if _SUITE.value:
    return run_suite(_SUITE.value)
  if _CONFIG.value is None and not _WORKDIR.value:
    raise cli.UserError("Give --config=configs/<method>.py[:variant], --workdir=RUN or --suite=paper|smoke|torch "
                        "(see --help).")
  from hallujax import performance
  config = cli.prepare_run(_CONFIG.value if _CONFIG.value is not None else run_files.read_run_config(_WORKDIR.value))
  if _NUMERICS.value > 0:
    import json
    report = performance.dtype_numerics(config, _NUMERICS.value)
    if _OUT.value:
      os.makedirs(_OUT.value, exist_ok=True)
      with open(os.path.join(_OUT.value, "numerics.json"), "w") as f:
        json.dump(report, f, indent=1)
    return None
  dtypes = _DTYPES.value or [config.train.compute_dtype]
  spec = cli.config_argument(sys.argv) or _WORKDIR.value
  rows = []
  for dtype in dtypes:
    rows += performance.benchmark(performance.with_dtype(config, dtype), _STEPS.value, _WHAT.value, _PEAK.value,
                                   warmup=_WARMUP.value, named_steps=_NAMED.value or "all", spec=spec)
  if _OUT.value:
    env = performance.environment()
    for path in performance.write_outputs(_OUT.value, "benchmark", rows, [], env, f"hallujax benchmark: {spec}"):
      print(f"wrote {path}", flush=True)


if __name__ == "__main__":
  cli.run(main)
