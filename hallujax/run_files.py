"""The files of a run that commands read before (or without) JAX: config files, a workdir's `config.json`,
its lock and its checkpoint steps. Light on purpose: `train` answers "already complete" from here without
starting JAX, and `hallujax.checkpoint` takes the lock described here."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile

from hallujax.errors import UserError


def load_config_file(spec: str):
  """`path.py[:variant]` -> the ConfigDict its get_config(variant) returns."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"--config={spec}: no config file at {path!r}.")
  module_spec = importlib.util.spec_from_file_location("hallujax_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[module_spec.name] = module   # dataclasses defined in a config file look their module up
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()



def check_workdir(workdir: str) -> None:
  """The workdir exists or can be made, and is writable (before any model is built)."""
  if "://" in workdir:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise UserError(f"--workdir={workdir} is not writable ({error.strerror or error}). Choose another "
                    f"directory.") from None


def check_free_space(workdir: str, needed_bytes: int) -> None:
  """Room for at least one checkpoint being written next to the last one (orbax writes, then renames)."""
  if "://" in workdir:
    return
  free = shutil.disk_usage(workdir).free
  if free < 2 * needed_bytes:
    raise UserError(f"--workdir={workdir} has {free / 2**20:.0f} MiB free; a checkpoint of this run needs about "
                    f"{needed_bytes / 2**20:.0f} MiB and two must fit while one is written. Free space or choose "
                    f"another directory.")


LOCK_FILE = "LOCK"


def process_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError, OverflowError):
    return True
  return True


def lock_holder(lock_path: str) -> dict | None:
  """Who holds a workdir lock ({host, pid, since}), or None when there is none or it is stale.

  A lock left by a process that no longer exists on this host is stale; a lock
  from another host is respected (its process cannot be checked from here).
  """
  import socket
  try:
    with open(lock_path) as f:
      holder = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    holder = {}
  if holder.get("host") == socket.gethostname() and not process_alive(holder.get("pid", -1)):
    return None
  return holder


def workdir_in_use_message(lock_path: str, holder: dict) -> str:
  return (f"{os.path.dirname(lock_path)} is in use by another run (host {holder.get('host')}, pid "
          f"{holder.get('pid')}, since {holder.get('since')}). Wait for it, use another --workdir, or delete "
          f"{lock_path} if that run is gone.")


def check_workdir_free(workdir: str) -> None:
  """Refuses a workdir another live run holds, before the banner and before JAX starts (the trainer's
  lock then takes it for this run)."""
  if "://" in workdir:
    return
  lock_path = os.path.join(workdir, LOCK_FILE)
  holder = lock_holder(lock_path)
  if holder is not None:
    raise UserError(workdir_in_use_message(lock_path, holder))


def finished_step(workdir: str) -> int | None:
  """The newest complete checkpoint step under `workdir` without importing orbax (None if none)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  return max(steps) if steps else None


def read_run_config(workdir: str, *, check_method: bool = True):
  """The resolved config a run saved as `config.json` (evaluate, sample and benchmark use it).

  config.json is data, not code: with `check_method` the method it names must be registered
  (methods.check_run_method), since using this config imports that module. Pass False only to read the
  file for comparison, never to build a run from it. A checked config reads as today's (fields declared since
  the run was saved take their declared defaults: config_base.saved_run_config)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir} has no config.json (not a hallujax run, or written before it was "
                    f"saved): give --config as well.")
  with open(path) as f:
    try:
      saved = json.load(f)
    except ValueError as error:
      raise UserError(f"{path} is not JSON ({error}).") from None
  if not isinstance(saved, dict):
    raise UserError(f"{path} holds a {type(saved).__name__}, expected a JSON object (a run's resolved config).")
  if check_method:
    from hallujax import methods   # pylint: disable=import-outside-toplevel
    try:
      methods.check_run_method(saved.get("method"), path)
    except ValueError as error:
      raise UserError(str(error)) from None
    from hallujax.config_base import saved_run_config   # pylint: disable=import-outside-toplevel
    return saved_run_config(saved)
  return ml_collections.ConfigDict(saved)
