"""What every command-line entry point does before its work."""

from __future__ import annotations

import importlib.util
import sys

import jax
from absl import flags


def load_config_file(spec: str):
  """`path.py[:variant]` -> the ConfigDict its get_config(variant) returns."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("hallujax_user_config", path)
  if module_spec is None:
    raise FileNotFoundError(f"--config={spec}: no config file at {path!r}.")
  module = importlib.util.module_from_spec(module_spec)
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


def config_argument(argv) -> str | None:
  """The value of --config in either spelling, `--config=X` or `--config X`."""
  for index, argument in enumerate(argv):
    if argument.startswith("--config="):
      return argument.split("=", 1)[1]
    if argument == "--config" and index + 1 < len(argv):
      return argv[index + 1]
  return None


def parse_flags(argv):
  """absl's parser, with an unknown --config.<field> answered by the list of valid fields."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError):
    config_spec = config_argument(argv)
    if config_spec is None:
      raise
    config = load_config_file(config_spec)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    messages = [m for m in (unknown_field_message(config, name) for name in overrides) if m]
    if not messages:
      raise
    print(f"FATAL Flags parsing error: {messages[0]}", file=sys.stderr)
    sys.exit(2)


def prepare_run(config, *, distributed: bool = False, coordinator_address: str | None = None,
                num_processes: int | None = None, process_id: int | None = None):
  """Initializes multi-process JAX when asked, checks the config, returns it."""
  if distributed:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  if not config.get("method"):
    raise ValueError("The config names no method (config.method is empty).")
  return config
