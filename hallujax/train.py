"""python -m hallujax.train --config configs/<method>.py[:variant] --workdir DIR [--config.a.b=value ...]

Trains a method; run it again on the same --workdir and it resumes from the
last checkpoint (a finished run answers at once). Runs the same on a laptop
CPU and on every host of a pod or GPU cluster (launch/ has the scripts): there
each host runs this command with --distributed, and jax.distributed.initialize
finds the cluster (TPU pods, SLURM) or takes --coordinator_address,
--num_processes and --process_id. Ctrl-C (or SIGTERM) finishes the (at most two) steps already
dispatched to the devices, saves a checkpoint and exits; a second Ctrl-C exits
at once. JAX's compiled programs are cached per user (--compilation_cache), so
a resumed run starts faster than the first.
"""

from __future__ import annotations

import sys
import time

from absl import flags
from ml_collections import config_flags

from hallujax import run_files
from hallujax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config file, e.g. configs/fhgan.py:smoke.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard events and images go.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host). "
                                  "On TPU pods and SLURM the cluster is detected; elsewhere give the three below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process only).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (multi-process only).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process only).")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = _CONFIG.value, _WORKDIR.value
  if config is None or not workdir:
    raise cli.UserError("Give --config=configs/<method>.py[:variant] and --workdir=DIR (see --help).")
  done = run_files.finished_step(workdir)
  if done is not None and done >= config.train.steps:
    print(f"Run already complete at step {done} (config.train.steps={config.train.steps}); results in {workdir}: "
          f"images/, eval/ (python -m hallujax.evaluate --workdir {workdir}), TensorBoard events "
          f"(tensorboard --logdir {workdir}). Raise --config.train.steps to train further.", flush=True)
    return
  run_files.check_workdir(workdir)
  run_files.check_workdir_free(workdir)   # a busy workdir is refused before the banner and before JAX starts
  print(f"{time.strftime('%H:%M:%S')} hallujax.train: {config.method} ({cli.config_argument(sys.argv) or ''}) -> "
        f"{workdir}; starting JAX", flush=True)
  config = cli.prepare_run(config, distributed=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                           num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  from hallujax import loop  # after jax.distributed.initialize
  loop.train(config, workdir)


if __name__ == "__main__":
  cli.run(main)
