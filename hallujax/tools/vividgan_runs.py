"""What the VividGAN tools share: a trained run's images, batch by batch, over one data split.

``run_columns(config, workdir, split, batches)`` restores the run's latest
checkpoint as ``python -m hallujax.evaluate`` does (same mesh, frozen networks,
feed and evaluation batches) and yields ``(host batch, columns)`` per batch:
the host batch as the pipeline made it (every field the source gives:
"expression", "yaw", ...) and the method's ``hallucinate`` columns as host
arrays in [-1, 1] ("lr", "bicubic", "coarse", ["prior"], "output", "target").
"""

from __future__ import annotations

from typing import Iterator


def run_columns(config, workdir: str, split: str = "test", batches: int | None = None) -> Iterator[tuple[dict, dict]]:
  import jax  # pylint: disable=import-outside-toplevel
  from hallujax import scoring, run_setup  # pylint: disable=import-outside-toplevel
  from hallujax.data import pipeline  # pylint: disable=import-outside-toplevel

  if batches is not None:   # enough of the split for `batches` batches, as hallujax.experiments asks
    config = config.copy_and_resolve_references()
    config.data.eval_size = max(int(config.data.eval_size), batches * int(config.train.batch_size))
  run, state, _ = run_setup.restore_run(config, workdir)
  with scoring.quiet_warnings():   # where the frozen weights come from was said when the run trained
    frozen, frozen_shardings = run.frozen_networks()
  feed = run.feed()
  hallucinate = run.grid_columns(frozen_shardings).jitted
  for host_batch in pipeline.eval_batches(config, split, batches=batches):
    yield host_batch, jax.device_get(hallucinate(state, frozen, feed(host_batch)))


def restored_step(workdir: str) -> int | None:
  """The step of the run's latest finished checkpoint (what run_columns restores)."""
  from hallujax import run_files  # pylint: disable=import-outside-toplevel
  return run_files.finished_step(workdir)
