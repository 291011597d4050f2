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
interrupted table picks up where it stopped. Each run is a subprocess of
``python -m hallujax.train`` / ``python -m hallujax.evaluate``, one at a time:
exactly the commands a user would type, logged next to the run (RUN.train.log, RUN.evaluate.log).

Identity columns come from a recognizer the methods never trained with: an
in-project ArcFace run (``Table.recognizer``, trained once under
``ROOT/runs/`` like any row) whose own held-out figures the report states.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time

import numpy as np
from absl import flags

from hallujax import cli

FLAGS = flags.FLAGS
TABLES_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tables")


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a table.

  label:   the row's name in the table (the paper's, e.g. "PCFH w/o MIC").
  config:  the training config spec, without ``seed=`` (e.g. ``configs/pcfh.py:smoke,ablation=wo_mic``).
  column:  which images of the run the row scores: "output" (the method's result), "bicubic", or
           any other column of the method's ``hallucinate`` (e.g. VividGAN's "coarse").
  from_eval_step: (table metric, key) pairs: the row's figures are the method's own ``eval_step`` means
           under those keys, and only those (e.g. VPFL's "Local Only C1": (("psnr", "client0_psnr"),)); its
           other metrics stay empty, since evaluate's image rows describe other images.
  """
  label: str
  config: str
  column: str = "output"
  from_eval_step: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Table:
  """A results table: rows × metrics, each cell over seeds.

  paper:   what it reproduces (paper, section, table).
  budget:  the training budget in words (steps, sizes, batch), printed above the table.
  order:   labels best first as the paper finds them, checked seed by seed on `order_metric` (one metric
           or a tuple of them).
  recognizer: config spec of the independent ArcFace run ("" = no identity columns).
  prerequisites: (name, config spec) of runs the rows need (a StyleGAN2 prior, a loss network), trained
           once at seed 0 before the rows; a row's spec names one's run directory as ``{name}``, e.g.
           ``configs/vpgan.py:smoke,weights.prior={prior}``.
  """
  name: str
  title: str
  paper: str
  budget: str
  rows: tuple[Row, ...]
  metrics: tuple[str, ...] = ("psnr", "ssim")
  order: tuple[str, ...] = ()
  order_metric: str | tuple[str, ...] = "psnr"
  eval_examples: int = 1000
  recognizer: str = "configs/arcface.py:recognizer"
  prerequisites: tuple[tuple[str, str], ...] = ()
  notes: tuple[str, ...] = ()


HIGHER_IS_BETTER = {"lpips": False, "fid": False, "l1": False}


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
  return table


def slug(spec: str) -> str:
  """configs/pcfh.py:smoke,ablation=wo_mic -> pcfh.smoke.ablation=wo_mic (a directory name)."""
  text = re.sub(r"^configs/", "", spec).replace(".py", "")
  return re.sub(r"[^A-Za-z0-9_.=-]+", ".", text).strip(".")


def with_options(spec: str, **options) -> str:
  """Appends ``key=value`` options to a spec, keeping the variant grammar (``file:variant,k=v``)."""
  extra = ",".join(f"{key}={value}" for key, value in options.items())
  return f"{spec},{extra}" if ":" in spec else f"{spec}:,{extra}"


@dataclasses.dataclass(frozen=True)
class Run:
  spec: str      # with prerequisites' run directories filled in
  seed: int
  workdir: str   # named after the spec as written, so that it does not depend on where ROOT is

  @property
  def train_spec(self) -> str:
    return with_options(self.spec, seed=self.seed)


def run_for(root: str, spec: str, seed: int, table: Table | None = None) -> Run:
  directories = {name: run_for(root, prerequisite, 0).workdir for name, prerequisite in
                 (table.prerequisites if table else ())}
  try:
    resolved = spec.format(**directories)
  except KeyError as error:
    raise cli.UserError(f"Row config {spec!r} names {{{error.args[0]}}}, which is not one of the table's "
                        f"prerequisites ({', '.join(directories) or 'none'}).") from None
  return Run(resolved, seed, os.path.join(root, "runs", slug(spec), f"seed_{seed}"))


# ----------------------------------------------------------------------------- running


def run_logged(command: list[str], log_path: str) -> tuple[int, float]:
  """Runs `command` with its output appended to `log_path`; returns (exit code, seconds)."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  start = time.perf_counter()
  with open(log_path, "a") as log:
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
  return code, time.perf_counter() - start


def train_command(run: Run) -> list[str]:
  return [sys.executable, "-m", "hallujax.train", "--config", run.train_spec, "--workdir", run.workdir]


def eval_batch_count(spec: str, examples: int) -> tuple[int, int]:
  """(batches, eval_size) so that at least `examples` held-out examples are scored."""
  config = cli.load_config_file(spec)
  batch = config.train.batch_size * max(config.data.get("clients", 0), 1)
  batches = math.ceil(examples / batch)
  return batches, max(config.data.eval_size, batches * batch)


def evaluate_command(run: Run, table: Table, recognizer: Run | None) -> list[str]:
  batches, eval_size = eval_batch_count(run.train_spec, table.eval_examples)
  command = [sys.executable, "-m", "hallujax.evaluate", "--workdir", run.workdir,
             "--config", with_options(run.train_spec, **{"data.eval_size": eval_size}), "--batches", str(batches)]
  if recognizer is not None:
    command += ["--recognizer_config", recognizer.spec, "--recognizer_workdir", recognizer.workdir]
  return command


def evaluation_path(run: Run) -> str | None:
  """The run's evaluation report at its final checkpoint, if written."""
  step = cli.finished_step(run.workdir)
  if step is None:
    return None
  path = os.path.join(run.workdir, "eval", f"step_{step}_test.json")
  return path if os.path.isfile(path) else None


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
  config = cli.load_config_file(run.train_spec)
  if (cli.finished_step(run.workdir) or -1) >= config.train.steps:
    return True
  return execute(run, "train", train_command(run))


def evaluate(run: Run, table: Table, recognizer: Run | None) -> bool:
  if evaluation_path(run) is not None and identity_present(run, recognizer):
    return True
  return execute(run, "evaluate", evaluate_command(run, table, recognizer))


def identity_present(run: Run, recognizer: Run | None) -> bool:
  """An existing evaluation counts only if it has the identity columns the table needs."""
  if recognizer is None:
    return True
  report = json.load(open(evaluation_path(run)))
  return any("rank1" in entry for entry in report["rows"].values())


# ----------------------------------------------------------------------------- statistics


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def summary_statistics(values: list[float]) -> dict:
  """Mean, sample std and the 95% Student-t interval half-width of per-seed values."""
  array = np.asarray(values, dtype=np.float64)
  count = len(array)
  std = float(np.std(array, ddof=1)) if count > 1 else float("nan")
  half_width = T_975.get(count - 1, 1.96) * std / math.sqrt(count) if count > 1 else float("nan")
  return {"mean": float(np.mean(array)), "std": std, "ci95": half_width, "n": count}


def row_values(report: dict, row: Row, metrics: tuple[str, ...]) -> dict[str, float]:
  """The table's metrics for `row` from one run's evaluation report."""
  run_name = os.path.basename(os.path.normpath(report["workdir"]))
  # evaluate names the inputs it scores ("input", "bicubic") plainly and the run's other columns "<run>:<column>".
  name = {"output": run_name, "bicubic": "bicubic", "input": "input"}.get(row.column, f"{run_name}:{row.column}")
  if name not in report["rows"]:
    raise ValueError(f"Row {row.label!r}: the evaluation of {report['workdir']} has no column {row.column!r} "
                     f"(rows: {', '.join(report['rows'])}).")
  entry, renamed = report["rows"][name], dict(row.from_eval_step)
  # The method's own eval_step figures describe its output: other columns never borrow them.
  own = report["eval_step"] if row.column == "output" else {}
  values = {}
  for metric in metrics:
    if renamed:
      values[metric] = report["eval_step"].get(renamed[metric]) if metric in renamed else None
    else:
      values[metric] = entry.get(metric, own.get(metric))
  return {metric: float(value) for metric, value in values.items() if value is not None}


def verdict(differences: list[float]) -> str:
  """What per-seed paired differences (positive = the paper's way) say about the paper's claim."""
  up, down = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
  if len(differences) == 1:   # no spread: a direction, not a result
    return "one seed: " + ("the paper's way" if up else "the other way" if down else "tied")
  stats = summary_statistics(differences)
  separated = abs(stats["mean"]) > stats["ci95"]
  if up == len(differences):
    return "holds" if separated else "holds in every seed, within noise"
  if down == len(differences):
    return "reversed" if separated else "reversed in every seed, within noise"
  return f"mixed ({up} seeds the paper's way, {down} the other, {len(differences) - up - down} tied)"


def ordering(table: Table, per_seed: dict[str, dict[str, list[float]]]) -> list[str]:
  """For each adjacent pair of the paper's order and each ordering metric: the seeds' paired differences."""
  metrics = (table.order_metric,) if isinstance(table.order_metric, str) else tuple(table.order_metric)
  lines = []
  for metric in metrics:
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    for better, worse in zip(table.order, table.order[1:]):
      first, second = per_seed[better].get(metric, []), per_seed[worse].get(metric, [])
      pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
      if not pairs:
        lines.append(f"{better} > {worse} on {metric}: not measured")
        continue
      differences = [sign * (a - b) for a, b in pairs]
      stats = summary_statistics(differences)
      interval = f" ± {stats['ci95']:.3f} (95%)" if len(pairs) > 1 else ""
      agree = sum(d > 0 for d in differences)
      lines.append(f"{better} > {worse} on {metric}: {verdict(differences)} — {agree}/{len(pairs)} seeds, "
                   f"mean paired difference {stats['mean']:+.3f}{interval}")
  return lines


# ----------------------------------------------------------------------------- the report


def software_versions() -> str:
  import flax
  import jax
  import optax
  return (f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}, {platform.machine()} {platform.system()}, "
          f"{os.cpu_count()} CPU cores, JAX backend {jax.default_backend()}")


def cell(stats: dict | None) -> str:
  if stats is None:
    return "—"
  if stats["n"] < 2:
    return f"{stats['mean']:.4g} (1 seed)"
  return f"{stats['mean']:.4g} ± {stats['std']:.2g} [±{stats['ci95']:.2g}]"


def run_seconds(run: Run) -> float:
  path = os.path.join(run.workdir, "experiment.json")
  if not os.path.isfile(path):
    return float("nan")
  return sum(entry["seconds"] for entry in json.load(open(path)).values())


def recognizer_quality(recognizer: Run | None) -> str:
  """The recognizer's own held-out figures from its last eval in the training log."""
  if recognizer is None:
    return ""
  log = recognizer.workdir + ".train.log"
  lines = [line for line in open(log).read().splitlines() if " eval at step " in line] if os.path.isfile(log) else []
  last = lines[-1].split(" eval at step ", 1)[1] if lines else "(no eval line in its log)"
  return (f"{recognizer.spec} seed {recognizer.seed}, `{os.path.relpath(recognizer.workdir)}`; its own held-out "
          f"eval at step {last}")


def write_report(table: Table, seeds: list[int], root: str, output_dir: str, invocation: str,
                 recognizer: Run | None) -> str:
  per_seed: dict[str, dict[str, list]] = {}
  failures, wall = [], {}
  for row in table.rows:
    per_seed[row.label] = {metric: [] for metric in table.metrics}
    for seed in seeds:
      run = run_for(root, row.config, seed, table)
      path = evaluation_path(run)
      values = row_values(json.load(open(path)), row, table.metrics) if path else {}
      if not path:
        failures.append(f"{row.label} seed {seed}: no evaluation ({run.workdir})")
      for metric in table.metrics:
        per_seed[row.label][metric].append(values.get(metric))
    seconds = [run_seconds(run_for(root, row.config, seed, table)) for seed in seeds]
    measured = [value for value in seconds if not math.isnan(value)]
    wall[row.label] = float(np.mean(measured)) if measured else float("nan")
  stats = {label: {metric: summary_statistics([v for v in values if v is not None]) if any(
      v is not None for v in values) else None for metric, values in metrics.items()}
           for label, metrics in per_seed.items()}

  lines = [f"# {table.title}", "", f"Reproduces: {table.paper}.", "",
           f"Budget: {table.budget}. Seeds: {', '.join(map(str, seeds))}. Evaluated on ≥ {table.eval_examples} "
           "held-out face-world examples per run (test split).", "",
           "Cells: mean ± std over seeds [95% Student-t interval half-width].", ""]
  header = ["row"] + list(table.metrics) + ["train+eval s/run"]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in table.rows:
    cells = [cell(stats[row.label][metric]) for metric in table.metrics]
    seconds = "—" if math.isnan(wall[row.label]) else f"{wall[row.label]:.0f}"
    lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {seconds} |")
  if table.order:
    lines += ["", f"## The paper's ordering ({' > '.join(table.order)})", ""]
    lines += [f"- {line}" for line in ordering(table, per_seed)]
  lines += ["", "## Rows", ""]
  for name, spec in table.prerequisites:
    lines.append(f"- `{{{name}}}`: the run of `{spec}` (seed 0), `{os.path.relpath(run_for(root, spec, 0).workdir)}`")
  for row in table.rows:
    source = "" if row.column == "output" else f", column `{row.column}`"
    renamed = "".join(f", {a} from the method's `{b}`" for a, b in row.from_eval_step)
    lines.append(f"- {row.label}: `{row.config}`{source}{renamed}")
  if recognizer is not None:
    lines += ["", "## Identity", "",
              "Identity columns (rank1, rank5: identification of each output against one ground-truth image "
              "per identity; vr_at_far_*: verification over all output × ground-truth pairs; identity_cosine: "
              "output vs its own ground truth) use a recognizer no method trained with: "
              + recognizer_quality(recognizer) + "."]
  if table.notes:
    lines += ["", "## Notes", ""] + [f"- {note}" for note in table.notes]
  if failures:
    lines += ["", "## Missing", ""] + [f"- {failure}" for failure in failures]
  lines += ["", "## Reproduce", "", "```", invocation, "```", "",
            f"Runs under `{os.path.relpath(root)}/runs/`; each run's exact train and evaluate commands and wall times are in its "
            "`experiment.json`.", "",
            f"Software: {software_versions()}.", "",
            f"Written {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}."]
  os.makedirs(output_dir, exist_ok=True)
  markdown = "\n".join(lines) + "\n"
  with open(os.path.join(output_dir, f"{table.name}.md"), "w") as f:
    f.write(markdown)
  with open(os.path.join(output_dir, f"{table.name}.json"), "w") as f:
    json.dump({"table": table.name, "seeds": seeds, "metrics": list(table.metrics), "per_seed": per_seed,
               "statistics": stats, "seconds_per_run": wall}, f, indent=2)
  return markdown


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


def run_table(table: Table, seeds: list[int], root: str, rows: tuple[Row, ...] | None = None) -> list[str]:
  """Trains and evaluates every (row config, seed) of `rows` (default: all) once; returns the failures."""
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
      if not (train(run) and evaluate(run, table, recognizer)):
        failures.append(f"{spec} seed {seed}")
  return failures


def define_flags() -> None:
  flags.DEFINE_integer("seeds", 3, "Seeds per row (0 .. N-1).")
  flags.DEFINE_integer("first_seed", 0, "First seed.")
  flags.DEFINE_string("root", "runs/experiments", "Where runs are trained (shared across tables).")
  flags.DEFINE_string("output_dir", "docs/results", "Where TABLE.md and TABLE.json are written.")
  flags.DEFINE_list("rows", [], "Train and evaluate only these rows (labels, comma-separated), e.g. more seeds "
                    "for the rows a claim is about; the report shows every row with the seeds it has.")
  flags.DEFINE_bool("report_only", False, "Write the report from the runs that exist; train nothing.")
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
  rows = selected_rows(table, FLAGS.rows)
  failures = [] if FLAGS.report_only else run_table(table, seeds, root, rows)
  recognizer = run_for(root, table.recognizer, 0) if table.recognizer else None
  invocation = f"python -m hallujax.experiments {table.name} --seeds {FLAGS.seeds}"
  if FLAGS.first_seed:
    invocation += f" --first_seed {FLAGS.first_seed}"
  if FLAGS.rows:
    invocation += f" --rows '{','.join(FLAGS.rows)}'"
  print(write_report(table, seeds, root, FLAGS.output_dir, invocation, recognizer))
  print(f"Wrote {FLAGS.output_dir}/{table.name}.md and .json")
  if failures:
    raise cli.UserError(f"{len(failures)} runs failed ({'; '.join(failures)}); their logs are next to the runs. "
                        "Rerun the same command to retry them (finished runs are kept).")


if __name__ == "__main__":
  # Run the imported module's main, so that table files (which import hallujax.experiments) and the
  # runner share one Table class rather than the __main__ copy's.
  from hallujax import experiments as library
  library.define_flags()
  cli.run(library.main)
