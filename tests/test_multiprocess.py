"""Several JAX processes (launch/local_processes.sh, gloo collectives on CPU) train exactly as one process."""

import os
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
from etils import epath

from hallujax import run_setup, loop
from hallujax.data import pipeline
from tests.tiny import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(processes: int, devices_each: int, workdir, *overrides) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
  result = subprocess.run(["bash", str(REPO / "launch" / "local_processes.sh"), str(processes),
                           str(REPO / "tests" / "tiny.py"), str(workdir), *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def params(state):
  return jax.device_get(state.params)


def test_two_processes_of_four_devices_match_one_process_of_eight_and_resume(tmp_path):
  assert jax.device_count() == 8
  config = tiny_config()
  one = loop.train(config, tmp_path / "one")

  two = tmp_path / "two"
  first = launch(2, 4, two, "--config.train.steps=2")
  second = launch(2, 4, two)   # resumes at step 2 on both processes
  _, state, step = run_setup.restore_run(config, two)
  assert step == 4
  chex.assert_trees_all_close(params(one.state), params(state), atol=1e-5, rtol=1e-5)

  # Written once: one grid per image step, one checkpoint directory per step, one config.json;
  # the data position of each process is kept.
  assert sorted(p.name for p in (epath.Path(two) / "images").iterdir()) == ["step_0000002.png", "step_0000004.png"]
  data_files = sorted(p.name for p in (epath.Path(two) / "checkpoints" / "4" / "data").glob("process_*"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
  # Progress is printed by process 0 only.
  assert first.stdout.count("step 2/2") == 1 and second.stdout.count("step 4/4") == 1
  assert second.stdout.count("Resuming from") == 1


def test_processes_read_disjoint_examples_that_cover_the_split():
  config = tiny_config()
  config.data.train_size = 32
  config.train.batch_size = 8
  per_process = []
  for index in range(2):
    iterator = iter(pipeline.train_dataset(config, process_index=index, process_count=2))
    per_process.append([next(iterator)["index"] for _ in range(4)])   # 4 local batches of 4 = one epoch each
  for step in range(4):   # within every global batch, no example twice
    assert not set(per_process[0][step]) & set(per_process[1][step])
  seen = np.concatenate([np.concatenate(batches) for batches in per_process])
  assert sorted(seen.tolist()) == list(range(32))
