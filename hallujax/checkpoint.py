"""orbax checkpoints of the whole run: train state, RNG and data-iterator position together.

Each checkpoint is one step directory under ``<workdir>/checkpoints`` with
three items: ``state`` (the method's train state, step included), ``rng``
(the run's base key data) and ``data`` (the grain iterator position, one JSON
file per process). orbax writes into a temporary directory and renames it
when complete, so a crash mid-save leaves the previous checkpoint intact and
an unfinished one is never restored.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath
import grain

from hallujax.data.pipeline import SavedIteratorState


def checkpoint_directory(workdir) -> epath.Path:
  """`<workdir>/checkpoints`, made absolute for local paths (orbax requires it); URLs like gs:// stay."""
  directory = epath.Path(workdir) / "checkpoints"
  return directory if "://" in str(workdir) else directory.absolute()


class Checkpointer:
  """Saves asynchronously every call to `save`; keeps the last `keep` checkpoints."""

  def __init__(self, workdir, keep: int):
    self.directory = checkpoint_directory(workdir)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True),
        item_names=("state", "rng", "data"),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, rng_data: jax.Array, data_state: bytes) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        rng=ocp.args.StandardSave({"key": rng_data}),
        data=grain.checkpoint.CheckpointSave(SavedIteratorState(data_state)),
    ))

  def restore(self, step: int, abstract_state, rng_data: jax.Array):
    """(state, rng_data, data_state) of `step`, laid out like `abstract_state`'s shardings."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        rng=ocp.args.StandardRestore({"key": rng_data}),
        data=grain.checkpoint.CheckpointRestore(SavedIteratorState()),
    ))
    return restored.state, restored.rng["key"], restored.data.get_state()

  def path(self, step: int) -> str:
    return str(self.directory / str(step))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_state(workdir, abstract_state, step: int | None = None):
  """The train state of a run's latest (or given) checkpoint, for evaluation and sampling."""
  directory = checkpoint_directory(workdir)
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_names=("state", "rng", "data"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
        f"No checkpoint under {directory}. Train first: "
        f"python -m hallujax.train --config <config> --workdir {workdir}")
  state = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state))).state
  manager.close()
  return state, step
