"""python -m hallujax.train --config configs/<method>.py[:variant] --workdir DIR [--config.a.b=value ...]

Runs the same on a laptop CPU and on every host of a pod or GPU cluster
(launch/ has the scripts): there each host runs this command with
--distributed, and jax.distributed.initialize finds the cluster (TPU pods,
SLURM) or takes --coordinator_address/--num_processes/--process_id.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from hallujax.cli import parse_flags, prepare_run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config file, e.g. configs/fhgan.py:smoke.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard events and images go.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host). "
                                  "On TPU pods and SLURM the cluster is detected; elsewhere give the three below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process only).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (multi-process only).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process only).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = prepare_run(_CONFIG.value, distributed=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                       num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  from hallujax import trainer  # after jax.distributed.initialize
  trainer.train(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
