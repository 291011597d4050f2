"""What every command-line entry point does around its work.

* ``--help`` answers at once and exits 0 (nothing heavy is imported before the
  flags are parsed); ``--helpfull`` also lists every config field with its
  default; ``--print_config`` prints the resolved config and exits.
* A mistake a user can make (a bad flag or config value, a missing file, a
  busy workdir) ends in one line on stderr and exit code 2; the traceback is
  for bugs, and shown for user errors too with ``--verbose`` or
  ``HALLUJAX_DEBUG=1``.
* Library INFO logs (orbax, absl writers) are off unless ``--verbosity`` asks
  for them; processes other than 0 log errors only; the backend probe's
  "Unable to initialize backend 'tpu'" is silenced.
"""

from __future__ import annotations

import importlib.util
import json
import logging as python_logging
import os
import shutil
import sys
import tempfile
from typing import Callable

from absl import app, flags, logging

flags.DEFINE_bool("verbose", False, "Show tracebacks for user errors too (or set HALLUJAX_DEBUG=1).")
flags.DEFINE_bool("print_config", False, "Print the resolved config and exit.")

EXIT_USAGE = 2


class UserError(ValueError):
  """A mistake the user can fix; its message says what was wrong and what to do."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def debugging() -> bool:
  return os.environ.get("HALLUJAX_DEBUG", "") not in ("", "0") or "--verbose" in sys.argv


# ----------------------------------------------------------------------------- configs


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


def unknown_field_message(config, dotted_name: str) -> str | None:
  """Names the first unknown part of `a.b.c` and lists the valid fields at that level (None if all exist)."""
  node, walked = config, []
  for part in dotted_name.split("."):
    if not hasattr(node, "keys") or part not in node:
      level = ".".join(["config", *walked])
      valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none: it is a value)"
      return (f"--config.{dotted_name}: {level} has no field {part!r}. "
              f"Valid fields of {level}: {valid}.")
    node = node[part]
    walked.append(part)
  return None


def flag_argument(argv, name: str) -> str | None:
  """The value of --name in either spelling, `--name=X` or `--name X` (before absl parses anything)."""
  for index, argument in enumerate(argv):
    if argument.startswith(f"--{name}="):
      return argument.split("=", 1)[1]
    if argument == f"--{name}" and index + 1 < len(argv):
      return argv[index + 1]
  return None


def config_argument(argv) -> str | None:
  return flag_argument(argv, "config")


def config_fields(config, prefix: str = "config") -> list[str]:
  """`config.a.b = default` lines for every leaf field (for --helpfull)."""
  lines = []
  for key in sorted(config.keys()):
    value = config[key]
    if hasattr(value, "keys"):
      lines.extend(config_fields(value, f"{prefix}.{key}"))
    else:
      lines.append(f"  --{prefix}.{key}={value!r}")
  return lines


def usage(main_module) -> str:
  doc = (sys.modules[main_module].__doc__ or "").strip() if main_module in sys.modules else ""
  return doc


def print_help(argv, full: bool) -> None:
  print(usage("__main__"))
  print("\nFlags:")
  module_flags = flags.FLAGS.get_key_flags_for_module(sys.argv[0]) or []
  shown = {f.name for f in module_flags}
  for flag in list(module_flags) + [flags.FLAGS[name] for name in ("verbose", "print_config")]:
    if flag.name in shown or flag.name in ("verbose", "print_config"):
      print(f"  --{flag.name}: {flag.help} (default: {flag.default!r})")
      shown.discard(flag.name)
  if full:
    spec = config_argument(argv)
    if spec is None:
      print("\nGive --config=configs/<method>.py[:variant] with --helpfull to list its config fields.")
    else:
      print(f"\nConfig fields of {spec} (override any with --config.<field>=<value>):")
      print("\n".join(config_fields(load_config_file(spec))))


def parse_flags(argv):
  """absl's parser with fast help and one-line errors (see the module docstring)."""
  if "--help" in argv or "-h" in argv or "--helpshort" in argv or "--helpfull" in argv:
    try:
      print_help(argv, full="--helpfull" in argv)
    except UserError as error:
      fail(str(error))
    sys.exit(0)
  config_spec = config_argument(argv)
  if config_spec is not None:   # config_flags would defer a failed load into a generic OSError later
    try:
      load_config_file(config_spec)
    except Exception as error:
      if debugging():
        raise
      fail(first_line(error))
  try:
    remaining = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    if debugging():
      raise
    fail(flag_error_message(argv, error))
  config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  if flags.FLAGS.print_config and config is not None:
    print(config)
    sys.exit(0)
  return remaining


def flag_error_message(argv, error: Exception) -> str:
  """One line for a flag-parsing failure: an unknown config field lists the valid ones."""
  config_spec = config_argument(argv)
  if config_spec is not None:
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    try:
      config = load_config_file(config_spec)
    except Exception as load_error:   # the config file itself fails: that is the message
      return first_line(load_error)
    messages = [m for m in (unknown_field_message(config, name) for name in overrides) if m]
    if messages:
      return messages[0]
  return first_line(error)


def first_line(error: BaseException) -> str:
  """The useful line of an exception (absl wraps config errors as 'flag --x=y: <reason>')."""
  text = str(error).strip() or type(error).__name__
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[0] if len(lines) == 1 else " ".join(lines[:2])


# ----------------------------------------------------------------------------- checks before any model is built


def positive(config, names: list[str]) -> None:
  for dotted in names:
    node = config
    for part in dotted.split("."):
      node = node[part]
    if not isinstance(node, int) or isinstance(node, bool) or node <= 0:
      raise UserError(f"config.{dotted}={node!r}; expected a positive integer.")


def check_config(config) -> None:
  """Values validated before any model is built (sizes, schedule, weights files)."""
  if not config.get("method"):
    raise UserError("The config names no method (config.method is empty).")
  positive(config, ["train.batch_size", "train.steps", "train.log_every", "train.eval_every", "train.eval_batches",
                    "train.image_every", "train.checkpoint_every", "train.keep_checkpoints", "data.input_size",
                    "data.target_size"])
  if config.train.on_nonfinite not in ("stop", "skip"):
    raise UserError(f"config.train.on_nonfinite={config.train.on_nonfinite!r}; expected 'stop' or 'skip'.")
  from hallujax.data.sources import source_location
  source_location(config.data.source)
  for name, path in (config.get("weights") or {}).items():
    if isinstance(path, str) and path and "://" not in path:
      if not os.path.exists(path):
        raise UserError(f"config.weights.{name}={path!r}: no such file or directory.")
      if os.path.isfile(path) and not os.access(path, os.R_OK):
        raise UserError(f"config.weights.{name}={path!r} is not readable.")


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


def finished_step(workdir: str) -> int | None:
  """The newest complete checkpoint step under `workdir` without importing orbax (None if none)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  return max(steps) if steps else None


def read_run_config(workdir: str):
  """The resolved config a run saved as `config.json` (evaluate, sample and benchmark use it)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir} has no config.json (not a hallujax run, or written before it was "
                    f"saved): give --config as well.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


# ----------------------------------------------------------------------------- running a command


def quiet_logs() -> None:
  """Library INFO off unless --verbosity asks; the TPU backend probe on CPU/GPU hosts silenced."""
  if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
  for name in ("jax._src.xla_bridge", "absl"):
    python_logging.getLogger(name).setLevel(python_logging.ERROR if name != "absl" else python_logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def after_distributed_start() -> None:
  """Processes other than 0 log errors only (every warning printed once, by process 0)."""
  import jax
  if jax.process_index() > 0:
    logging.set_verbosity(logging.ERROR)


USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def run(main: Callable) -> None:
  """`app.run(main)` with the parser above and user errors ended in one line, exit code 2."""

  def guarded(argv):
    quiet_logs()
    try:
      return main(argv)
    except USER_ERRORS as error:
      if debugging():
        raise
      fail(first_line(error))
    except KeyboardInterrupt:
      fail("interrupted (Ctrl-C twice): nothing saved since the last checkpoint.", 130)
    except BrokenPipeError:
      # stdout's reader went away (`... --list | head`): not an error. Point stdout at /dev/null so
      # Python's exit-time flush does not raise again (the recipe of Python's signal documentation).
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      sys.exit(0)
    except Exception as error:
      from hallujax.checkpoint import WorkdirInUseError
      from hallujax.trainer import Interrupted, NonFiniteError
      if isinstance(error, Interrupted):
        print(str(error), flush=True)
        sys.exit(130)
      if isinstance(error, (WorkdirInUseError, NonFiniteError)) and not debugging():
        fail(first_line(error), 2 if isinstance(error, WorkdirInUseError) else 1)
      raise

  app.run(guarded, flags_parser=parse_flags)


def prepare_run(config, *, distributed: bool = False, coordinator_address: str | None = None,
                num_processes: int | None = None, process_id: int | None = None):
  """Checks the config, initializes multi-process JAX when asked, returns the config."""
  check_config(config)
  if distributed:
    import jax
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  after_distributed_start()
  return config

