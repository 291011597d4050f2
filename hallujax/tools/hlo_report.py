"""python -m hallujax.tools.hlo_report --config configs/stylegan2.py:smoke --step r1_path_length [--top 15]
python -m hallujax.tools.hlo_report --suite paper|smoke [--stage jaxpr]      # one row per named step

Which parts of one named train step make its program big (and slow to compile)?

Prints the program's size and its largest contributors, grouped one of two ways:

  --by scope   the op's name stack: the Flax module path (Flax runs each module
               method under ``jax.named_scope``) or a ``jax.named_scope``, the
               transforms around it (jvp, transpose, vmap) dropped, cut to
               --depth levels. ``G/block_0`` … ``G/block_7`` as separate lines
               of equal size are a Python loop over blocks.
  --by line    the innermost frame of the project's own source (``hallujax/``,
               ``configs/``, ``tests/``) that made the op, with --depth 2
               also the line that called it: a line inside a Python loop
               shows up with a count that grows with the loop's length.

--stage jaxpr       (default, cheap: tracing only, nothing is lowered or
                    compiled) counts the primitive operations of the traced
                    step, forward and backward, each loop body (scan,
                    fori_loop, while) once, as XLA sees it.
--stage optimized   compiles the step (minutes for big programs) and counts the
                    instructions of XLA's optimized HLO module, grouped by
                    their ``op_name`` / stack-frame metadata. Fusion makes this
                    count smaller than the jaxpr's; the benchmark's ``HLO
                    ops`` column is this module's total.

Inputs are abstract (shapes and shardings of the method's state, frozen tree
and batch): nothing is initialized, no file is read.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import sys
from typing import Iterable

from hallujax.errors import named_first_line
from hallujax.hlo_text import INSTRUCTION, hlo_instructions, program_texts

# Where the project's own frames live: a frame in one of these directories is what --by line reports.
PROJECT_DIRECTORIES = (os.sep + "hallujax" + os.sep, os.sep + "configs" + os.sep, os.sep + "tests" + os.sep)


@dataclasses.dataclass(frozen=True)
class Op:
  """One operation of a program: its primitive, name stack and the project line that made it."""
  primitive: str
  scope: str       # name stack without transforms, e.g. "Generator/block_0/conv"
  line: str        # the innermost project frames that made it (project_frames), "" when none


# ----------------------------------------------------------------------------- grouping


def clean_scope(name_stack: str) -> str:
  """'jit(step)/transpose(jvp(Generator))/block_0/Dense_0' -> 'Generator/block_0/Dense_0'.

  Transforms wrap a scope's name (``jvp(Generator)``); jit levels (``jit(step)``, ``jit(main)``) name
  programs, not modules, so they are dropped, as are empty scopes left by a transform of nothing.
  """
  parts = []
  for part in name_stack.split("/"):
    while True:
      match = re.fullmatch(r"(\w+)\((.*)\)", part)
      if not match or match.group(1) in ("jit", "pjit"):
        break
      part = match.group(2)
    if not part or re.fullmatch(r"p?jit\(.*\)", part):
      continue
    parts.append(part)
  return "/".join(parts)


def contributors(ops: Iterable[Op], by: str = "scope", depth: int = 3) -> list[tuple[str, int]]:
  """[(group, number of ops)], largest first; groups are scopes cut to `depth` levels, or the `depth`
  innermost project lines (1: the line that made the op; 2: and the line that called it)."""
  if by not in ("scope", "line"):
    raise ValueError(f"by={by!r}; expected 'scope' or 'line'.")
  counts = collections.Counter()
  for op in ops:
    if by == "scope":
      key = "/".join(op.scope.split("/")[:depth]) if op.scope else "(no scope)"
    else:
      key = " < ".join(op.line.split(" < ")[:depth]) if op.line else "(outside the project's files)"
    counts[key] += 1
  return counts.most_common()


def project_frames(frames, depth: int = 2) -> str:
  """The `depth` innermost frames in the project's own files, innermost first, as
  'hallujax/models/x.py:12 (Block.__call__) < hallujax/models/x.py:40 (Tower.__call__)' ('' when none).

  The second frame is usually the line that called a layer or function, e.g. the body of a Python loop.
  """
  found = []
  for frame in frames:
    if "site-packages" in frame.file_name:
      continue
    for directory in PROJECT_DIRECTORIES:
      where = frame.file_name.rfind(directory)
      if where >= 0:
        found.append(f"{frame.file_name[where + 1:]}:{frame.start_line} ({frame.function_name})")
        break
    if len(found) == depth:
      break
  return " < ".join(found)


# ----------------------------------------------------------------------------- the traced step (jaxpr)


def sub_jaxprs(value):
  """The jaxprs inside one equation parameter (a jaxpr, a closed jaxpr, or a tuple of them: cond branches)."""
  from jax.extend import core
  if isinstance(value, core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from sub_jaxprs(item)


def jaxpr_ops(jaxpr, prefix: str = "") -> list[Op]:
  """Every primitive of `jaxpr` (a Jaxpr or ClosedJaxpr), recursing into calls and loop bodies once each."""
  from jax._src import source_info_util
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  ops = []
  for equation in jaxpr.eqns:
    name_stack = "/".join(part for part in (prefix, str(equation.source_info.name_stack)) if part)
    inner = [sub for value in equation.params.values() for sub in sub_jaxprs(value)]
    if inner:
      for sub in inner:
        ops += jaxpr_ops(sub, name_stack)
      continue
    frames = source_info_util.user_frames(equation.source_info.traceback)
    ops.append(Op(equation.primitive.name, clean_scope(name_stack), project_frames(frames)))
  return ops


# ----------------------------------------------------------------------------- the optimized HLO module

_OP_NAME = re.compile(r'op_name="([^"]*)"')
_STACK_FRAME = re.compile(r"stack_frame_id=(\d+)")


@dataclasses.dataclass(frozen=True)
class _Frame:
  file_name: str
  function_name: str
  start_line: int


def hlo_stack_frames(hlo_text: str) -> dict[int, list[_Frame]]:
  """{stack_frame_id: frames innermost first}, from the module's FileNames … StackFrames tables."""
  tables, current = collections.defaultdict(dict), None
  for line in hlo_text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      current = line
      continue
    if not line.strip() or line.startswith(("%", "HloModule", "ENTRY")):
      current = None if not line.strip() and current == "StackFrames" else current
      continue
    if current:
      number, _, rest = line.partition(" ")
      if number.isdigit():
        tables[current][int(number)] = rest.strip()
  fields = lambda text: dict(re.findall(r"(\w+)=(\d+)", text))
  frames = {}
  for first in tables["StackFrames"]:
    chain, frame_id, seen = [], first, set()
    while frame_id and frame_id not in seen:
      seen.add(frame_id)
      frame = fields(tables["StackFrames"][frame_id])
      location = fields(tables["FileLocations"].get(int(frame.get("file_location_id", 0)), ""))
      chain.append(_Frame(tables["FileNames"].get(int(location.get("file_name_id", 0)), "").strip('"'),
                          tables["FunctionNames"].get(int(location.get("function_name_id", 0)), "").strip('"'),
                          int(location.get("line", 0))))
      # XLA's text prints a frame's parent one above the parent's id (measured on jax 0.10.2's CPU
      # module: a root frame prints parent_frame_id=1); 0 ends the chain.
      frame_id = int(frame.get("parent_frame_id", 0)) - 1
    frames[first] = chain
  return frames


def hlo_ops(hlo_text: str) -> list[Op]:
  """Every instruction of an optimized HLO module with its scope and project line (from its metadata)."""
  frames = hlo_stack_frames(hlo_text)
  ops = []
  for line in hlo_instructions(hlo_text):
    opcode = INSTRUCTION.match(line).group(1)
    name = _OP_NAME.search(line)
    frame = _STACK_FRAME.search(line)
    scope = clean_scope(name.group(1).rpartition("/")[0]) if name else ""
    ops.append(Op(opcode, scope, project_frames(frames.get(int(frame.group(1)), [])) if frame else ""))
  return ops


# ----------------------------------------------------------------------------- a method's named step


def abstract_step_inputs(config):
  """(method, jitted named steps, (state, frozen, batch, rng) as ShapeDtypeStructs with their shardings)."""
  import jax
  import numpy as np
  from hallujax import run_setup, sharding
  run = run_setup.build(config)
  method, mesh, state = run.method, run.mesh, run.abstract
  frozen_shapes = jax.eval_shape(method.init_frozen, jax.random.key(1))
  frozen_shardings = sharding.state_shardings(frozen_shapes, mesh, config.mesh)
  frozen = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                        frozen_shapes, frozen_shardings)
  clients = int(config.data.clients)
  leading = (clients, config.train.batch_size) if method.batch_axes == ("clients", "batch") \
      else (config.train.batch_size,)
  batch_sharding = sharding.batch_sharding(mesh, method.batch_axes)
  batch = {name: jax.ShapeDtypeStruct((*leading, *spec.shape), spec.dtype, sharding=batch_sharding)
           for name, spec in method.batch_spec.items()}
  rng = jax.ShapeDtypeStruct(np.shape(jax.random.key_data(jax.random.key(0))), np.uint32,
                             sharding=sharding.replicated(mesh))
  programs = run.steps(frozen_shardings)
  return method, programs, (state, frozen, batch, rng)


def step_ops(config, step: str, stage: str = "jaxpr") -> list[Op]:
  """The ops of one named train step of `config`, traced (stage 'jaxpr') or compiled ('optimized')."""
  method, programs, inputs = abstract_step_inputs(config)
  if step not in programs:
    raise KeyError(step, sorted(programs))
  traced = programs[step].trace(*inputs)
  if stage == "jaxpr":
    return jaxpr_ops(traced.jaxpr)
  if stage == "optimized":
    return [op for text in program_texts(traced.lower().compile()) for op in hlo_ops(text)]
  raise ValueError(f"stage={stage!r}; expected 'jaxpr' or 'optimized'.")


def report(ops: list[Op], by: str, depth: int, top: int) -> str:
  groups = contributors(ops, by, depth)
  total = len(ops)
  width = max([len(name) for name, _ in groups[:top]] + [10])
  lines = [f"{total} ops in {len(groups)} groups (by {by}, depth {depth})"]
  for name, count in groups[:top]:
    lines.append(f"{name:<{width}}  {count:>7}  {100 * count / total:5.1f}%")
  rest = sum(count for _, count in groups[top:])
  if rest:
    lines.append(f"{'(the other ' + str(len(groups) - top) + ' groups)':<{width}}  {rest:>7}  "
                 f"{100 * rest / total:5.1f}%")
  return "\n".join(lines)


def suite_table(suite: str, stage: str, log=print) -> list[str]:
  """One markdown row per named step of every config of a benchmark suite: its op count and largest line."""
  from hallujax import cli, performance
  entries, notes = performance.suite_entries(suite)
  rows = ["| config | step | ops | largest contributor (project line) |", "|---|---|---|---|"]
  for row in rows:
    log(row)
  for entry in entries:
    try:
      config = cli.prepare_run(cli.load_config_file(entry.spec))
      from hallujax.methods import make_method
      for step in make_method(config).steps:
        ops = step_ops(config, step, stage)
        (line, count), = contributors(ops, "line", 1)[:1]
        rows.append(f"| {entry.spec} | {step} | {len(ops)} | {line} ({100 * count / len(ops):.0f}%) |")
        log(rows[-1])
    except Exception as error:   # one failing config must not end the table
      notes.append(f"{entry.spec}: failed, {named_first_line(error)}")
  for note in notes:
    log(f"- {note}")
  return rows + [""] + [f"- {note}" for note in notes]


def main(argv):
  from absl import flags
  from hallujax import cli
  del argv
  FLAGS = flags.FLAGS
  if FLAGS.suite:
    suite_table(FLAGS.suite, FLAGS.stage, log=lambda line: print(line, flush=True))   # rows as they come
    return
  if FLAGS.config is None:
    raise cli.UserError("Give --config=configs/<method>.py[:variant] or --suite=paper|smoke.")
  config = cli.prepare_run(FLAGS.config)
  from hallujax.methods import make_method
  names = list(make_method(config).steps)
  steps = names if FLAGS.step == "all" else [FLAGS.step or make_method(config).step_name(0)]
  for step in steps:
    if step not in names:
      raise cli.UserError(f"--step={step}: {config.method} has no such named step; expected one of "
                          f"{', '.join(names)} or all.")
    print(f"== {cli.config_argument(sys.argv) or config.method} step {step} ({FLAGS.stage})", flush=True)
    depth = FLAGS.depth or (3 if FLAGS.by == "scope" else 1)
    print(report(step_ops(config, step, FLAGS.stage), FLAGS.by, depth, FLAGS.top), flush=True)


def define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Method config, e.g. configs/stylegan2.py:smoke.")
  flags.DEFINE_string("step", None, "The named train step (default: the one step 0 runs; 'all': every one).")
  flags.DEFINE_enum("stage", "jaxpr", ["jaxpr", "optimized"], "Count traced primitives (cheap) or the "
                    "optimized HLO's instructions (compiles).")
  flags.DEFINE_enum("by", "scope", ["scope", "line"], "Group by name stack or by project source line.")
  flags.DEFINE_integer("depth", 0, "--by scope: levels of the name stack to keep (default 3); --by line: "
                       "project frames to keep, innermost first (default 1; 2 adds the calling line).")
  flags.DEFINE_integer("top", 15, "Groups to print.")
  flags.DEFINE_enum("suite", None, ["paper", "smoke"], "Instead of --config: a table of every named step of "
                    "the benchmark suite's configs (op count and largest project line).")


if __name__ == "__main__":
  from hallujax import cli
  define_flags()
  cli.run(main)
