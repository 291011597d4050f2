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
  "Unable to initialize backend 'tpu'" is silenced. Warnings print as the
  project's own lines do (``16:26:40 warning: ...``), not in absl's
  ``W1206 16:26:40.237004 140358803331968 fhgan.py:175]`` format.
* JAX's persistent compilation cache is on by default, in a per-user directory
  (``$XDG_CACHE_HOME/hallujax/jax``, else ``~/.cache/hallujax/jax``), so a
  resumed run, ``evaluate`` or a second benchmark loads the programs the last
  command compiled. ``--compilation_cache=DIR`` (or ``JAX_COMPILATION_CACHE_DIR``)
  moves it; ``--compilation_cache=off`` turns it off.
"""

from __future__ import annotations

import logging as python_logging
import os
import sys
from typing import Callable

from absl import app, flags, logging

from hallujax.errors import EXIT_USAGE, Interrupted, NonFiniteError, UserError, WorkdirInUseError
from hallujax.run_files import load_config_file

flags.DEFINE_bool("verbose", False, "Show tracebacks for user errors too (or set HALLUJAX_DEBUG=1).")
flags.DEFINE_bool("print_config", False, "Print the resolved config and exit.")
flags.DEFINE_string("compilation_cache", None, "JAX's persistent compilation cache: a directory, or 'off' (default: "
                    "$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/hallujax/jax or ~/.cache/hallujax/jax).")
COMMON_FLAGS = ("verbose", "print_config", "compilation_cache")

def fail(message: str, code: int = EXIT_USAGE) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def debugging() -> bool:
  return os.environ.get("HALLUJAX_DEBUG", "") not in ("", "0") or "--verbose" in sys.argv


# ----------------------------------------------------------------------------- configs


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
  for flag in list(module_flags) + [flags.FLAGS[name] for name in COMMON_FLAGS]:
    if flag.name in shown or flag.name in COMMON_FLAGS:
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
    print(plain_config_text(config), end="")
    sys.exit(0)
  return remaining


def plain_values(value):
  """A config's values as YAML's plain types: tuples as lists, anything else unknown as its text."""
  if hasattr(value, "items"):
    return {str(key): plain_values(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain_values(item) for item in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def plain_config_text(config) -> str:
  """The resolved config as plain YAML: no `&id001` anchors for repeated values, no `!!python/tuple` tags."""
  import yaml

  class NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
      return True

  return yaml.dump(plain_values(config.to_dict()), Dumper=NoAliases, default_flow_style=False)


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
  """A command's one line for a user error: its message without the type's name, blank lines skipped.

  Unlike hallujax.errors.first_line it keeps a second line, on purpose: a converter's CheckpointMismatchError (a
  ValueError, so a user error) heads its list with "Cannot load <what>; nothing was loaded." and the next line
  names the first problem, which is what the user must fix. (absl's flag errors are one line:
  "flag --config.train.steps=abc: invalid literal for int() ...".)
  """
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
  from hallujax.config_base import COMPUTE_DTYPES, ON_NONFINITE   # pylint: disable=import-outside-toplevel
  for field, choices in (("on_nonfinite", ON_NONFINITE), ("compute_dtype", COMPUTE_DTYPES)):
    if config.train[field] not in choices:
      raise UserError(f"config.train.{field}={config.train[field]!r}; expected one of {', '.join(choices)}.")
  from hallujax.data.sources import source_location
  source_location(config.data.source)
  for name, path in (config.get("weights") or {}).items():
    if isinstance(path, str) and path and "://" not in path:
      if not os.path.exists(path):
        raise UserError(f"config.weights.{name}={path!r}: no such file or directory.")
      if os.path.isfile(path) and not os.access(path, os.R_OK):
        raise UserError(f"config.weights.{name}={path!r} is not readable.")


# ----------------------------------------------------------------------------- running a command


class PlainFormatter(python_logging.Formatter):
  """`16:26:40 warning: text`: a log record shaped like the project's own lines (INFO without a level word)."""

  def format(self, record: python_logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
      text += "\n" + self.formatException(record.exc_info)
    level = "" if record.levelno == python_logging.INFO else f"{record.levelname.lower()}: "
    return f"{self.formatTime(record, '%H:%M:%S')} {level}{text}"


def quiet_logs() -> None:
  """Library INFO off unless --verbosity asks; the TPU backend probe on CPU/GPU hosts silenced; log lines in
  the project's format (absl's own header, with thread id and source line, only with --verbosity)."""
  verbosity_given = any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:])
  if not verbosity_given:
    logging.set_verbosity(logging.WARNING)
    logging.get_absl_handler().setFormatter(PlainFormatter())
  for name in ("jax._src.xla_bridge", "absl"):
    python_logging.getLogger(name).setLevel(python_logging.ERROR if name != "absl" else python_logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def default_cache_directory() -> str:
  """The per-user compilation cache: $XDG_CACHE_HOME/hallujax/jax, else ~/.cache/hallujax/jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "hallujax", "jax")


def compilation_cache_directory(flag_value: str | None) -> str | None:
  """The cache directory a command uses (None: off): the flag, else off if JAX_ENABLE_COMPILATION_CACHE says
  false, else $JAX_COMPILATION_CACHE_DIR, else the per-user default."""
  if flag_value is not None:
    return None if flag_value.strip().lower() in ("off", "none", "") else flag_value
  if os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").strip().lower() in ("false", "0", "no", "off"):
    return None
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_directory()


def set_up_compilation_cache(flag_value: str | None) -> str | None:
  """Points JAX's persistent compilation cache at its directory (or turns it off) before anything compiles.

  Before jax is imported the environment carries the setting (JAX reads it on import, which keeps `train`'s
  "already complete" answer free of JAX); after, jax.config does. A directory that cannot be made turns the
  cache off with one line: it is a speed-up, never a reason to fail.
  """
  directory = compilation_cache_directory(flag_value)
  if directory is not None:
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as error:
      print(f"warning: the compilation cache {directory} cannot be made ({error.strerror or error}); "
            f"compiling without it.", file=sys.stderr, flush=True)
      directory = None
  os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "true" if directory else "false"
  if directory:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
  if "jax" in sys.modules:
    import jax
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory:
      jax.config.update("jax_compilation_cache_dir", directory)
  return directory


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
    set_up_compilation_cache(flags.FLAGS.compilation_cache)
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

