"""orbax checkpoints of the whole run: train state, RNG and data-iterator position together.

Each checkpoint is one step directory under ``<workdir>/checkpoints`` with
three items: ``state`` (the method's train state, step included), ``rng``
(the run's base key data) and ``data`` (the grain iterator position, one JSON
file per process). orbax writes into a temporary directory and renames it
when complete, so a crash mid-save leaves the previous checkpoint intact and
an unfinished one is never restored. Frozen networks (pretrained loss
networks, priors) are never part of a checkpoint.

``checkpoints/format.json`` names the layout. Format 2 (Method interface v2)
dropped the frozen networks from the state; a run written before it (no
format file) is refused with that message rather than restored into the
wrong structure.

On resume, a checkpoint that fails to restore is reported in one line, set
aside (renamed ``<step>.unreadable-<time>``, never deleted) and the next
newest is tried. A lock file in the workdir keeps a second run off it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from hallujax import run_files
from hallujax.errors import WorkdirInUseError
from hallujax.data.pipeline import SavedIteratorState

FORMAT = 2
FORMAT_FILE = "format.json"
LOCK_FILE = run_files.LOCK_FILE
# Train-state fields renamed after checkpoints were written under the old name, {old name: name now}. Such a
# checkpoint is restored under its old name and handed back under the new one, so earlier runs keep loading
# (issue 27: IPFH's `optimizer_states` is `opt_state`, the name every method uses).
RENAMED_STATE_FIELDS = {"optimizer_states": "opt_state"}


def checkpoint_directory(workdir) -> epath.Path:
  """`<workdir>/checkpoints`, made absolute for local paths (orbax requires it); URLs like gs:// stay."""
  directory = epath.Path(workdir) / "checkpoints"
  return directory if "://" in str(workdir) else directory.absolute()


class CheckpointFormatError(ValueError):
  """The checkpoints were written in a layout this version cannot restore."""


def check_format(directory: epath.Path) -> None:
  """Refuses checkpoints of another layout with a message saying what changed."""
  steps = [p for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []
  marker = directory / FORMAT_FILE
  if not steps:
    return
  if not marker.exists():
    raise CheckpointFormatError(
        f"{directory} holds checkpoints written before hallujax's Method interface v2 (checkpoint format 1: "
        f"frozen networks such as VGG-19 were stored inside the train state). Format 2 cannot restore "
        f"them; start a new --workdir (or retrain), the old run stays readable with hallujax 0.1.0.")
  found = json.loads(marker.read_text()).get("format")
  if found != FORMAT:
    raise CheckpointFormatError(f"{directory} holds checkpoint format {found}; this hallujax reads format "
                                f"{FORMAT}. Start a new --workdir.")


def short_reason(error: BaseException, limit: int = 160) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return f"{type(error).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


class WorkdirLock:
  """`<workdir>/LOCK` holding host and pid while a run trains there (process 0 only).

  A second run on the same workdir refuses in one line naming the first. A
  lock left by a process that no longer exists on this host is stale and
  taken over; a lock from another host is respected (remove it by hand if
  that run is gone).
  """

  def __init__(self, workdir):
    self.path = epath.Path(workdir) / LOCK_FILE
    self.held = False

  def __enter__(self):
    if jax.process_index() != 0:
      return self
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
      try:
        fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        other = run_files.lock_holder(str(self.path))
        if other is None:
          self.path.unlink(missing_ok=True)   # stale: its process is gone
          continue
        raise WorkdirInUseError(run_files.workdir_in_use_message(str(self.path), other)) from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    raise RuntimeError(f"Could not take {self.path}.")

  def __exit__(self, *exc):
    if self.held:
      self.path.unlink(missing_ok=True)
      self.held = False
    return False


class Checkpointer:
  """Saves asynchronously every call to `save`; keeps the last `keep` checkpoints."""

  def __init__(self, workdir, keep: int):
    self.directory = checkpoint_directory(workdir)
    check_format(self.directory)
    self.keep = keep
    self.manager = self._manager()
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      (self.directory / FORMAT_FILE).write_text(json.dumps({"format": FORMAT}) + "\n")

  def _manager(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=True),
        item_names=("state", "rng", "data"),
    )

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

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
    state, restored = restore_step(self.manager, self.directory / str(step), step, abstract_state,
                                   rng=ocp.args.StandardRestore({"key": rng_data}),
                                   data=grain.checkpoint.CheckpointRestore(SavedIteratorState()))
    return state, restored.rng["key"], restored.data.get_state()

  def set_aside(self, step: int) -> epath.Path:
    """Renames a checkpoint that does not restore out of orbax's sight (never deletes it)."""
    aside = self.directory / f"{step}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(aside)
    self.manager.close()
    self.manager = self._manager()
    return aside

  def restore_latest_good(self, abstract_state, rng_data, resume_step: int | None = None):
    """(state, rng_data, data_state, step) of the newest checkpoint that restores, or None if there is none.

    With `resume_step`, that checkpoint or an error. Each one that fails is
    reported in one line (step and reason) and set aside.
    """
    steps = self.all_steps()
    if resume_step is not None:
      if resume_step not in steps:
        raise ValueError(f"config.train.resume_step={resume_step}: no such checkpoint under {self.directory}; "
                         f"there are {steps or 'none'}.")
      return (*self.restore(resume_step, abstract_state, rng_data), resume_step)
    for step in reversed(steps):
      try:
        return (*self.restore(step, abstract_state, rng_data), step)
      except Exception as error:   # any failure to read it: report, keep it aside, try the previous one
        aside = self.set_aside(step)
        print(f"Checkpoint {step} does not restore ({short_reason(error)}); moved to {aside.name}, "
              f"trying the previous one.", flush=True)
    return None

  def path(self, step: int) -> str:
    return str(self.directory / str(step))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def saved_state_fields(step_directory: epath.Path) -> set[str]:
  """The top-level names of the train state saved in a checkpoint's step directory."""
  metadata = ocp.StandardCheckpointHandler().metadata(step_directory / "state")
  return set(getattr(metadata, "tree", metadata))


def restore_target(abstract_state, saved_fields: set[str]):
  """(the tree to restore a checkpoint's state into, the function that makes the restored tree a train state
  laid out like `abstract_state`): `abstract_state` itself, or, for a checkpoint that holds a field under its
  old name (RENAMED_STATE_FIELDS), a dict of the state's fields under the names the checkpoint has."""
  fields = [field.name for field in dataclasses.fields(abstract_state)] if dataclasses.is_dataclass(
      abstract_state) else []
  old_names = {new: old for old, new in RENAMED_STATE_FIELDS.items()
               if new in fields and new not in saved_fields and old in saved_fields}
  if not old_names:
    return abstract_state, lambda state: state
  target = {old_names.get(name, name): getattr(abstract_state, name) for name in fields}
  return target, lambda restored: abstract_state.replace(
      **{name: restored[old_names.get(name, name)] for name in fields})


def restore_step(manager: ocp.CheckpointManager, step_directory: epath.Path, step: int, abstract_state,
                 **other_items):
  """(train state laid out like `abstract_state`, the other items restored by their `other_items` args) of
  checkpoint `step`, whose state fields may still have their old names (restore_target)."""
  target, as_state = restore_target(abstract_state, saved_state_fields(step_directory))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), **other_items))
  return as_state(restored.state), restored


class ReadOnlyNotices(logging.Filter):
  """orbax's notice that a read-only manager's directory is read only: asked for, so not news to the user."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


def read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
  """A CheckpointManager that reads a run's checkpoints and writes nothing, without orbax's notices saying so
  (the two options it would otherwise set itself are given; the third notice is filtered)."""
  from absl import logging as absl_logging
  notices, logger = ReadOnlyNotices(), absl_logging.get_absl_logger()
  logger.addFilter(notices)
  try:
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
        item_names=("state", "rng", "data"))
  finally:
    logger.removeFilter(notices)


def restore_state(workdir, abstract_state, step: int | None = None):
  """The train state of a run's latest (or given) checkpoint, for evaluation and sampling."""
  directory = checkpoint_directory(workdir)
  check_format(directory)
  manager = read_only_manager(directory)
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(
        f"No checkpoint under {directory}. Train first: "
        f"python -m hallujax.train --config <config> --workdir {workdir}")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"--step={step}: no checkpoint of step {step} under {directory}; the steps that "
                            f"exist are {', '.join(map(str, steps))}.")
  step = steps[-1] if step is None else step
  state, _ = restore_step(manager, directory / str(step), step, abstract_state)
  manager.close()
  return state, step
