"""python -m hallujax.experiments TABLE [--seeds 3] [--root runs/experiments] [--output_dir docs/results]

Regenerates one results table: trains every row's config over N seeds,
evaluates each run on at least `Table.eval_examples` held-out faces with an
independent recognizer, and writes ``docs/results/TABLE.md`` (mean ± std and a
95% Student-t interval per cell, the paper's ordering checked seed by seed,
the commands, the software versions and the wall time) and ``TABLE.json``
(every per-seed value).

A table is a file ``configs/tables/TABLE.py`` with ``def table() -> Table``;
``--list`` shows them. Rows name a training config spec (the one variant
grammar of ``hallujax.config_base``); the runner appends ``seed=N``. Rows with
the same spec share runs, also across tables: runs live under
``ROOT/runs/<spec>/seed_N``.

Resumable: a run whose checkpoint is complete is not retrained (``hallujax.train``
answers at once) and a run whose evaluation exists is not re-evaluated, so an
interrupted table picks up where it stopped. An evaluation that lacks a figure the
validity checks read (written before evaluate measured it) is redone, and
``--reevaluate`` redoes every evaluation of the selected rows and seeds, without
retraining. Each run is a subprocess of
``python -m hallujax.train`` / ``python -m hallujax.evaluate``, one at a time:
exactly the commands a user would type, logged next to the run (RUN.train.log, RUN.evaluate.log).

Identity columns come from a recognizer the methods never trained with: an
in-project ArcFace run (``Table.recognizer``, trained once under
``ROOT/runs/`` like any row) whose own held-out figures the report states.

A table can be invalid: ``Table.checks`` name the conditions under which its
comparison means something (outputs that differ across inputs, the compared
component alive, headroom under a ceiling row), each computed from the runs and
printed with its value; a failed check turns the verdict of every comparison it
concerns into "invalid: <check>, <value>". ``--until_decided --max_seeds N``
adds seeds to the rows of undecided comparisons until their 95% interval
excludes zero or N seeds are reached.

The runner owns its children: each train / evaluate subprocess runs in its own
process group, which is killed when the runner stops (SIGTERM, SIGINT or an
exception; on Linux also when the runner is killed outright), so no orphan
finishes a run that the next runner would then reuse.

The runner lives here; the table's declaration (``Row``, ``Table``, where runs live) in
``hallujax.results.table``, the validity checks in ``hallujax.results.checks``, the statistics and the report
in ``hallujax.results.report``. Table files import what they use from here (``from hallujax.experiments import
Row, Table, outputs_vary, ...``), which re-exports it.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import flags

from hallujax import run_files
from hallujax import cli
# Re-exported for the table files and the tests (`from hallujax.experiments import Row, Table, outputs_vary`).
from hallujax.results.checks import (Check, CheckResult, EvalStepBound, OutputsFollowInputs,  # noqa: F401
                                     OutputsVary, PriorDrawsFaces, RowGap, check_table, eval_step_at_least,
                                     eval_step_at_most, face_detection_rate, outputs_follow_inputs, outputs_vary,
                                     prior_draws_faces, prior_face_rates, row_gap_at_least)
from hallujax.results.report import (Comparison, Figures, collect, comparison_line, comparisons,  # noqa: F401
                                     ordering, row_values, seeds_needed, summary_statistics, t_quantile, verdict,
                                     write_report)
from hallujax.results.table import (HIGHER_IS_BETTER, Row, Run, Table, evaluation_path, run_for,  # noqa: F401
                                    slug, with_options)

FLAGS = flags.FLAGS
TABLES_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tables")


# ----------------------------------------------------------------------------- finding and naming


def available_tables() -> list[str]:
  if not os.path.isdir(TABLES_DIRECTORY):
    return []
  return sorted(name[:-3] for name in os.listdir(TABLES_DIRECTORY) if name.endswith(".py") and name != "__init__.py")


def load_table(name: str) -> Table:
  path = os.path.join(TABLES_DIRECTORY, f"{name}.py")
  if not os.path.isfile(path):
    raise cli.UserError(f"No table {name!r}: {path} does not exist; known tables: "
                        f"{', '.join(available_tables()) or 'none'}.")
  spec = importlib.util.spec_from_file_location(f"hallujax_table_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  table = module.table()
  if not isinstance(table, Table):
    raise cli.UserError(f"{path}: table() returned {type(table).__name__}, expected hallujax.experiments.Table.")
  labels = [row.label for row in table.rows]
  unknown = [label for label in table.order if label not in labels]
  if unknown:
    raise cli.UserError(f"{path}: order names {unknown}, which are not row labels ({labels}).")
  for check in table.checks:
    named = [label for label in (*getattr(check, "rows", ()), getattr(check, "better", None),
                                 getattr(check, "worse", None), getattr(check, "against", None) or None)
             if label is not None and label not in labels]
    if named:
      raise cli.UserError(f"{path}: a check names {named}, which are not row labels ({labels}).")
  return table


# ----------------------------------------------------------------------------- running


def die_with_parent() -> None:
  """In the child, before exec (Linux): be killed when the runner dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
  if sys.platform.startswith("linux"):
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG


def kill_process_group(process: subprocess.Popen) -> None:
  """Kills `process` and everything it started (its own process group), then reaps it."""
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.wait()


def run_logged(command: list[str], log_path: str) -> tuple[int, float]:
  """Runs `command` with its output appended to `log_path`; returns (exit code, seconds).

  The command runs in a process group of its own, killed with everything in it if the runner stops before
  it ends (an exception, KeyboardInterrupt, or SIGTERM once `stop_on_signals` is installed).
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  start = time.perf_counter()
  with open(log_path, "a") as log:
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=die_with_parent)
    try:
      code = process.wait()
    except BaseException:
      kill_process_group(process)
      raise
  return code, time.perf_counter() - start


def stop_on_signals() -> None:
  """SIGTERM and SIGINT end the runner through an exception, so that `run_logged` kills its children."""
  def stop(number, _):
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(number).name}")
  signal.signal(signal.SIGTERM, stop)
  signal.signal(signal.SIGINT, stop)


def train_command(run: Run) -> list[str]:
  return [sys.executable, "-m", "hallujax.train", "--config", run.train_spec, "--workdir", run.workdir]


def eval_batch_count(spec: str, examples: int) -> tuple[int, int]:
  """(batches, eval_size) so that at least `examples` held-out examples are scored."""
  config = run_files.load_config_file(spec)
  batch = config.train.batch_size * max(config.data.clients, 1)
  batches = math.ceil(examples / batch)
  return batches, max(config.data.eval_size, batches * batch)


def evaluate_command(run: Run, table: Table, recognizer: Run | None) -> list[str]:
  batches, eval_size = eval_batch_count(run.train_spec, table.eval_examples)
  command = [sys.executable, "-m", "hallujax.evaluate", "--workdir", run.workdir,
             "--config", with_options(run.train_spec, **{"data.eval_size": eval_size}), "--batches", str(batches)]
  if recognizer is not None:
    command += ["--recognizer_config", recognizer.spec, "--recognizer_workdir", recognizer.workdir]
  return command



def execute(run: Run, stage: str, command: list[str]) -> bool:
  """Runs one stage ("train" or "evaluate") of `run`, logged to RUN.<stage>.log and recorded, with its wall
  time, in RUN/experiment.json; False when it failed."""
  print(f"  {stage:8s} {run.workdir}", flush=True)
  log_path = f"{run.workdir}.{stage}.log"
  code, seconds = run_logged(command, log_path)
  os.makedirs(run.workdir, exist_ok=True)
  path = os.path.join(run.workdir, "experiment.json")
  entries = json.load(open(path)) if os.path.isfile(path) else {}
  entries[stage] = {"command": shlex.join(command), "exit_code": code, "seconds": round(seconds, 1),
                    "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  with open(path, "w") as f:
    json.dump(entries, f, indent=2)
  if code != 0:
    print(f"  FAILED   exit {code}, see {log_path}", flush=True)
  return code == 0


def train(run: Run) -> bool:
  """Trains `run` unless its final checkpoint exists; False when the training failed."""
  config = run_files.load_config_file(run.train_spec)
  if (run_files.finished_step(run.workdir) or -1) >= config.train.steps:
    return True
  return execute(run, "train", train_command(run))


def evaluate(run: Run, table: Table, recognizer: Run | None, again: bool = False) -> bool:
  """Evaluates `run` unless its evaluation is current (`evaluation_current`); `again`: evaluate it in any case."""
  if not again and evaluation_path(run) is not None and evaluation_current(run, recognizer):
    return True
  return execute(run, "evaluate", evaluate_command(run, table, recognizer))


def evaluation_current(run: Run, recognizer: Run | None) -> bool:
  """An existing evaluation counts only if it has the image figures the validity checks read (output diversity
  and the own-target share, which evaluations written before it lack) and, for a table with a recognizer,
  identity columns from that same recognizer run."""
  report = json.load(open(evaluation_path(run)))
  if not any({"output_diversity", "own_target_share"} <= set(entry) for entry in report["rows"].values()):
    return False
  if recognizer is None:
    return True
  path = os.path.join(run.workdir, "experiment.json")
  command = json.load(open(path)).get("evaluate", {}).get("command", "") if os.path.isfile(path) else ""
  identity = any("rank1" in entry for entry in report["rows"].values())
  return identity and shlex.quote(recognizer.workdir) in command


# ----------------------------------------------------------------------------- the command


def selected_rows(table: Table, labels: list[str]) -> tuple[Row, ...]:
  """The rows named in `labels` (every row when empty), in the table's order; unknown labels are refused."""
  if not labels:
    return table.rows
  known = [row.label for row in table.rows]
  unknown = [label for label in labels if label not in known]
  if unknown:
    raise cli.UserError(f"--rows: {', '.join(map(repr, unknown))} is not a row of {table.name} "
                        f"(rows: {', '.join(map(repr, known))}).")
  return tuple(row for row in table.rows if row.label in labels)


def run_table(table: Table, seeds: list[int], root: str, rows: tuple[Row, ...] | None = None,
              reevaluate: bool = False) -> list[str]:
  """Trains and evaluates every (row config, seed) of `rows` (default: all) once; returns the failures.
  `reevaluate`: evaluate every such run again, even where its evaluation is current (a finished run is not
  retrained either way)."""
  recognizer = run_for(root, table.recognizer, 0) if table.recognizer else None
  for name, spec in (("recognizer", table.recognizer),) * bool(table.recognizer) + table.prerequisites:
    prerequisite = run_for(root, spec, 0)
    print(f"{table.name}: {name} {spec}", flush=True)
    if not train(prerequisite):
      raise RuntimeError(f"The {name} run {spec} failed to train; see {prerequisite.workdir}.train.log")
  failures = []
  specs = list(dict.fromkeys(row.config for row in rows or table.rows))
  for seed in seeds:
    for spec in specs:
      run = run_for(root, spec, seed, table)
      print(f"{table.name}: {spec} seed {seed}", flush=True)
      refuse_other_prerequisites(run, table, root)
      if not (train(run) and evaluate(run, table, recognizer, again=reevaluate)):
        failures.append(f"{spec} seed {seed}")
  return failures


def refuse_other_prerequisites(run: Run, table: Table, root: str) -> None:
  """A row's directory is named after its spec as written (``weights.prior={prior}``), so when a table's
  prerequisite changes (a prior trained longer), rows trained with the old one sit under the same name and would be
  reused as if current. Refuses such a row: wherever the row's config resolved now holds a prerequisite's run
  directory (a config field, or one a variant option such as PCFH's ``lightcnn=`` sets), its saved config.json must
  name the same run (compared by its directory and seed, wherever the root was)."""
  path = os.path.join(run.workdir, "config.json")
  if not os.path.isfile(path):
    return
  with open(path) as f:
    saved = json.load(f)
  expected = {run_for(root, spec, 0).workdir for _, spec in table.prerequisites}
  resolved = run_files.load_config_file(run.train_spec).to_dict()
  for keys, value in string_fields(resolved):
    if value not in expected:
      continue
    found = saved
    for key in keys:
      found = found.get(key, {}) if isinstance(found, dict) else {}
    if not isinstance(found, str) or run_name(found) != run_name(value):
      raise cli.UserError(f"{run.workdir} was trained with {'.'.join(keys)}={found!r}, but {table.name} now names "
                          f"{value!r} there: move that run away (or delete it) so the row is trained again.")


def string_fields(tree: dict, keys: tuple[str, ...] = ()):
  """(path of keys, value) for every string in a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from string_fields(value, keys + (key,))
    elif isinstance(value, str):
      yield keys + (key,), value


def run_name(workdir: str) -> tuple[str, ...]:
  """A run directory's last two parts (the spec's slug and the seed): the run, whatever root it was under."""
  return tuple(os.path.normpath(workdir).split(os.sep)[-2:])


def undecided_rows(table: Table, figures: Figures, max_seeds: int) -> tuple[Row, ...]:
  """The rows of valid, still undecided comparisons whose runs have fewer than `max_seeds` seeds (an exact tie in
  every seed is left alone: the two rows give the same figures, which more seeds will not change)."""
  labels = set()
  for comparison in comparisons(table, figures.values, check_table(table, figures)):
    if comparison.invalid or comparison.decided or len(comparison.differences) >= max_seeds:
      continue
    if comparison.differences and not any(comparison.differences):   # the same figures in every seed: no noise
      continue                                                        # for seeds to average out
    labels |= {comparison.better, comparison.worse}
  return tuple(row for row in table.rows if row.label in labels)


def run_until_decided(table: Table, seeds: list[int], root: str, max_seeds: int) -> tuple[list[int], list[str]]:
  """Adds one seed at a time to the rows of undecided comparisons (`undecided_rows`); returns every seed the
  table now has and the failures. An invalid comparison gets no seeds: more seeds do not revive a dead part."""
  seeds, failures = list(seeds), []
  while True:
    rows = undecided_rows(table, collect(table, seeds, root), max_seeds)
    if not rows or len(seeds) >= max_seeds:
      return seeds, failures
    seeds.append(seeds[-1] + 1)
    print(f"{table.name}: undecided ({', '.join(row.label for row in rows)}): seed {seeds[-1]}", flush=True)
    failures += run_table(table, [seeds[-1]], root, rows)


def evaluated_seeds(table: Table, seeds: list[int], root: str, max_seeds: int) -> list[int]:
  """`seeds` and the further consecutive seeds (up to `max_seeds` in all) that an earlier --until_decided run
  added: those with an evaluated run for at least one row. The report of --report_only --until_decided then
  shows every seed the table has, as the run that added them did."""
  seeds = list(seeds)
  while len(seeds) < max_seeds and any(evaluation_path(run_for(root, row.config, seeds[-1] + 1, table))
                                       for row in table.rows):
    seeds.append(seeds[-1] + 1)
  return seeds


def define_flags() -> None:
  flags.DEFINE_integer("seeds", 3, "Seeds per row (0 .. N-1).")
  flags.DEFINE_integer("first_seed", 0, "First seed.")
  flags.DEFINE_string("root", "runs/experiments", "Where runs are trained (shared across tables).")
  flags.DEFINE_string("output_dir", "docs/results", "Where TABLE.md and TABLE.json are written.")
  flags.DEFINE_list("rows", [], "Train and evaluate only these rows (labels, comma-separated), e.g. more seeds "
                    "for the rows a claim is about; the report shows every row with the seeds it has.")
  flags.DEFINE_bool("report_only", False, "Write the report from the runs that exist; train nothing.")
  flags.DEFINE_bool("reevaluate", False, "Evaluate the --seeds runs of the rows again (all, or --rows) even where "
                    "their evaluation is current, e.g. after evaluate gained a figure; finished runs are not "
                    "retrained. (An evaluation without a figure the checks read is redone anyway.)")
  flags.DEFINE_bool("until_decided", False, "After the --seeds runs, add seeds (one at a time) to the rows of "
                    "every valid comparison whose 95% interval still includes zero, until it excludes zero or the "
                    "rows have --max_seeds seeds.")
  flags.DEFINE_integer("max_seeds", 10, "With --until_decided: the most seeds a row gets.")
  flags.DEFINE_bool("list", False, "List the tables and exit.")


def main(argv):
  if FLAGS.list:
    for name in available_tables():
      table = load_table(name)
      print(f"{name:24s} {table.title} ({len(table.rows)} rows)")
    return
  if len(argv) != 2:
    raise cli.UserError(f"Give one table name (known: {', '.join(available_tables()) or 'none'}); "
                        "e.g. python -m hallujax.experiments pcfh_table1.")
  if FLAGS.seeds < 1:
    raise cli.UserError(f"--seeds={FLAGS.seeds}: need at least 1 seed (3 for a results claim).")
  table = load_table(argv[1])
  seeds = list(range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds))
  root = os.path.abspath(FLAGS.root)
  # Seeds change data and initial values, not programs: with a persistent compilation cache only the first
  # seed of each config compiles (minutes per step kind on a CPU). The subprocesses inherit the setting.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax_cache"))
  if FLAGS.until_decided and FLAGS.max_seeds < len(seeds):
    raise cli.UserError(f"--max_seeds={FLAGS.max_seeds} is below --seeds={FLAGS.seeds}; give at least as many.")
  stop_on_signals()
  rows = selected_rows(table, FLAGS.rows)
  if FLAGS.reevaluate and FLAGS.report_only:
    raise cli.UserError("--reevaluate evaluates runs and --report_only evaluates none: give one of them.")
  failures = [] if FLAGS.report_only else run_table(table, seeds, root, rows, reevaluate=FLAGS.reevaluate)
  if FLAGS.until_decided and not FLAGS.report_only:
    seeds, more_failures = run_until_decided(table, seeds, root, FLAGS.max_seeds)
    failures += more_failures
  elif FLAGS.until_decided:
    seeds = evaluated_seeds(table, seeds, root, FLAGS.max_seeds)
  recognizer = run_for(root, table.recognizer, 0) if table.recognizer else None
  invocation = f"python -m hallujax.experiments {table.name} --seeds {FLAGS.seeds}"
  if FLAGS.first_seed:
    invocation += f" --first_seed {FLAGS.first_seed}"
  if FLAGS.rows:
    invocation += f" --rows '{','.join(FLAGS.rows)}'"
  if FLAGS.reevaluate:
    invocation += " --reevaluate"
  if FLAGS.until_decided:
    invocation += f" --until_decided --max_seeds {FLAGS.max_seeds}"
  print(write_report(table, seeds, root, FLAGS.output_dir, invocation, recognizer))
  print(f"Wrote {FLAGS.output_dir}/{table.name}.md and .json")
  errors = collect(table, seeds, root).errors
  if errors:
    raise cli.UserError(f"{len(errors)} errors in the table's figures (listed in the report), e.g. {errors[0]}")
  if failures:
    raise cli.UserError(f"{len(failures)} runs failed ({'; '.join(failures)}); their logs are next to the runs. "
                        "Rerun the same command to retry them (finished runs are kept).")


if __name__ == "__main__":
  # Run the imported module's main, so that table files (which import hallujax.experiments) and the
  # runner share one Table class rather than the __main__ copy's.
  from hallujax import experiments as library
  library.define_flags()
  cli.run(library.main)
