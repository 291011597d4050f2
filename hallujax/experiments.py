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
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from absl import flags
from scipy import stats as scipy_stats

from hallujax import run_files
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
  checks:  validity checks (``outputs_vary``, ``eval_step_at_least`` ...): a failed one makes the comparisons it
           concerns "invalid".
  eval_step_metrics: metrics that the output rows read from the method's own ``eval_step`` (e.g. IPFH's
           policy_entropy), declared here; any other metric missing from the independent evaluation is an error.
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
  checks: tuple["Check", ...] = ()
  eval_step_metrics: tuple[str, ...] = ()


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
  for check in table.checks:
    named = [label for label in (*getattr(check, "rows", ()), getattr(check, "better", None),
                                 getattr(check, "worse", None)) if label is not None and label not in labels]
    if named:
      raise cli.UserError(f"{path}: a check names {named}, which are not row labels ({labels}).")
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


def evaluation_path(run: Run) -> str | None:
  """The run's evaluation report at its final checkpoint, if written."""
  step = run_files.finished_step(run.workdir)
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
  config = run_files.load_config_file(run.train_spec)
  if (run_files.finished_step(run.workdir) or -1) >= config.train.steps:
    return True
  return execute(run, "train", train_command(run))


def evaluate(run: Run, table: Table, recognizer: Run | None) -> bool:
  if evaluation_path(run) is not None and evaluation_current(run, recognizer):
    return True
  return execute(run, "evaluate", evaluate_command(run, table, recognizer))


def evaluation_current(run: Run, recognizer: Run | None) -> bool:
  """An existing evaluation counts only if it has output diversity (what the validity checks read) and, for a
  table with a recognizer, identity columns from that same recognizer run."""
  report = json.load(open(evaluation_path(run)))
  if not any("output_diversity" in entry for entry in report["rows"].values()):
    return False
  if recognizer is None:
    return True
  path = os.path.join(run.workdir, "experiment.json")
  command = json.load(open(path)).get("evaluate", {}).get("command", "") if os.path.isfile(path) else ""
  identity = any("rank1" in entry for entry in report["rows"].values())
  return identity and shlex.quote(recognizer.workdir) in command


# ----------------------------------------------------------------------------- statistics


def t_quantile(degrees_of_freedom: int, probability: float = 0.975) -> float:
  """The exact Student-t quantile (two-sided 95% interval by default), for any degrees of freedom."""
  return float(scipy_stats.t.ppf(probability, degrees_of_freedom))


def summary_statistics(values: list[float]) -> dict:
  """Mean, sample std and the 95% Student-t interval half-width of per-seed values."""
  array = np.asarray(values, dtype=np.float64)
  count = len(array)
  std = float(np.std(array, ddof=1)) if count > 1 else float("nan")
  half_width = t_quantile(count - 1) * std / math.sqrt(count) if count > 1 else float("nan")
  return {"mean": float(np.mean(array)), "std": std, "ci95": half_width, "n": count}


def seeds_needed(differences: list[float], most: int = 1000) -> int | None:
  """The fewest seeds whose 95% interval would exclude zero if the observed mean and spread held (None when
  the mean is zero or more than `most` would be needed)."""
  if len(differences) < 2:
    return None
  mean, std = abs(float(np.mean(differences))), float(np.std(differences, ddof=1))
  if mean == 0.0:
    return None
  for count in range(2, most + 1):
    if t_quantile(count - 1) * std / math.sqrt(count) < mean:
      return count
  return None


def row_values(report: dict, row: Row, metrics: tuple[str, ...], eval_step_metrics: tuple[str, ...] = (),
               errors: list[str] | None = None) -> dict[str, float]:
  """The table's metrics for `row` from one run's evaluation report.

  The method's own ``eval_step`` figures are read only where declared (the row's ``from_eval_step``, the
  table's ``eval_step_metrics`` for output rows); a metric the independent evaluation lacks for an output row is
  an error (ValueError, or a line appended to `errors` while the other metrics are read), never filled in from
  ``eval_step``. Other columns (bicubic, the ground truth) simply
  have no value for metrics that do not apply to them.
  """
  name = evaluation_row_name(report, row)
  if name not in report["rows"]:
    raise ValueError(f"Row {row.label!r}: the evaluation of {report['workdir']} has no column {row.column!r} "
                     f"(rows: {', '.join(report['rows'])}).")
  entry, renamed = report["rows"][name], dict(row.from_eval_step)
  values = {}
  for metric in metrics:
    if renamed:
      values[metric] = report["eval_step"].get(renamed[metric]) if metric in renamed else None
    elif row.column == "output" and metric in eval_step_metrics:
      values[metric] = report["eval_step"].get(metric)
    elif metric in entry:
      values[metric] = entry[metric]
    elif row.column == "output":
      message = (f"Row {row.label!r}: metric {metric!r} is not in the independent evaluation of "
                 f"{report['workdir']} (its columns: {', '.join(sorted(entry))}); the method's own eval_step "
                 "value is not used unless the table declares it in eval_step_metrics.")
      if errors is None:
        raise ValueError(message)
      errors.append(message)
  return {metric: float(value) for metric, value in values.items() if value is not None}


@dataclasses.dataclass
class Figures:
  """What a table's runs measured, per row label and per seed (None where a run has no evaluation)."""
  seeds: list[int]
  values: dict[str, dict[str, list]]      # label -> metric -> per-seed value or None
  entries: dict[str, list]                # label -> per-seed evaluation row (its every figure) or None
  eval_steps: dict[str, list]             # label -> per-seed eval_step means or None
  failures: list[str]
  errors: list[str]
  root: str = ""                          # where the runs (and the prerequisites' runs) live


def collect(table: Table, seeds: list[int], root: str) -> Figures:
  figures = Figures(list(seeds), {}, {}, {}, [], [], root)
  for row in table.rows:
    figures.values[row.label] = {metric: [] for metric in table.metrics}
    figures.entries[row.label], figures.eval_steps[row.label] = [], []
    for seed in seeds:
      run = run_for(root, row.config, seed, table)
      path = evaluation_path(run)
      report = json.load(open(path)) if path else None
      values, entry = {}, None
      if report is None and not os.path.isdir(run.workdir):
        # --until_decided gives seeds only to the rows of undecided comparisons: the others stop earlier.
        figures.failures.append(f"{row.label} seed {seed}: not run (its comparisons were decided or invalid "
                                f"with fewer seeds, or the run was not asked for)")
      elif report is None:
        figures.failures.append(f"{row.label} seed {seed}: no evaluation ({os.path.relpath(run.workdir)})")
      else:
        try:
          values = row_values(report, row, table.metrics, table.eval_step_metrics, figures.errors)
        except ValueError as error:   # the run's evaluation lacks the row's column
          figures.errors.append(f"seed {seed}: {error}")
        entry = report["rows"].get(evaluation_row_name(report, row))
      for metric in table.metrics:
        figures.values[row.label][metric].append(values.get(metric))
      figures.entries[row.label].append(entry)
      figures.eval_steps[row.label].append(report["eval_step"] if report else None)
  return figures


def evaluation_row_name(report: dict, row: Row) -> str:
  run_name = os.path.basename(os.path.normpath(report["workdir"]))
  # evaluate names the input, its interpolations and the ground truth plainly, the run's other columns
  # "<run>:<column>" (evaluation.PLAIN_ROWS).
  from hallujax.scoring import PLAIN_ROWS   # pylint: disable=import-outside-toplevel (jax: only when reporting)
  if row.column == "output":
    return run_name
  return row.column if row.column in PLAIN_ROWS else f"{run_name}:{row.column}"


# ----------------------------------------------------------------------------- validity checks


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """One check on one subject. A failure (or "not measured") invalidates the comparisons involving `rows`
  (every comparison of the table when `rows` is empty)."""
  requirement: str   # what must hold, e.g. "outputs vary (diversity ≥ 0.5 of the targets') on VPGAN"
  failure: str       # the verdict's words when it does not, e.g. "outputs collapsed"
  value: str         # what was measured
  passed: bool
  rows: tuple[str, ...] = ()


def checked_labels(table: Table, rows: tuple[str, ...]) -> tuple[str, ...]:
  """The rows a per-row check looks at: those named, else the rows of the paper's ordering (else all)."""
  return rows or table.order or tuple(row.label for row in table.rows)


@dataclasses.dataclass(frozen=True)
class OutputsVary:
  min_ratio: float
  max_nearest_share: float
  rows: tuple[str, ...]

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    results = []
    eval_step_rows = {row.label for row in table.rows if row.from_eval_step}
    for label in checked_labels(table, self.rows):
      if label in eval_step_rows:   # the method's own figures: evaluate has no images of this row
        continue
      requirement = (f"outputs vary on {label}: diversity ≥ {self.min_ratio:g} of the targets' and ≤ "
                     f"{self.max_nearest_share:.0%} of outputs nearest one target (worst seed)")
      measured = [entry for entry in figures.entries[label] if entry and "output_diversity" in entry]
      if not measured:
        results.append(CheckResult(requirement, "outputs collapsed", "not measured", False, (label,)))
        continue
      ratio = min(entry["output_diversity"] for entry in measured)
      share = max(entry["nearest_target_share"] for entry in measured)
      passed = ratio >= self.min_ratio and share <= self.max_nearest_share
      value = f"diversity {ratio:.2f} of the targets', {share:.0%} nearest one target ({len(measured)} seeds)"
      results.append(CheckResult(requirement, "outputs collapsed", value, passed, (label,)))
    return results


@dataclasses.dataclass(frozen=True)
class EvalStepBound:
  key: str
  bound: float
  at_least: bool
  meaning: str
  rows: tuple[str, ...]

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    results = []
    relation = "≥" if self.at_least else "≤"
    for label in checked_labels(table, self.rows):
      requirement = f"{self.meaning} on {label}: eval_step's {self.key} {relation} {self.bound:g} (mean over seeds)"
      reports = [values for values in figures.eval_steps[label] if values is not None]
      if not reports or any(self.key not in values for values in reports):
        results.append(CheckResult(requirement, self.meaning, f"{self.key} not measured", False, (label,)))
        continue
      mean = float(np.mean([values[self.key] for values in reports]))
      passed = mean >= self.bound if self.at_least else mean <= self.bound
      results.append(CheckResult(requirement, self.meaning, f"{self.key} = {mean:.3g} on {label} "
                                 f"({len(reports)} seeds)", passed, (label,)))
    return results


@dataclasses.dataclass(frozen=True)
class RowGap:
  better: str
  worse: str
  metric: str
  minimum: float
  meaning: str

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    requirement = f"{self.meaning}: {self.better} − {self.worse} ≥ {self.minimum:g} on {self.metric} (mean over seeds)"
    pairs = [(a, b) for a, b in zip(figures.values[self.better].get(self.metric, []),
                                    figures.values[self.worse].get(self.metric, [])) if a is not None and b is not None]
    if not pairs:
      return [CheckResult(requirement, self.meaning, f"{self.metric} not measured", False)]
    sign = 1.0 if HIGHER_IS_BETTER.get(self.metric, True) else -1.0
    gap = float(np.mean([sign * (a - b) for a, b in pairs]))
    return [CheckResult(requirement, self.meaning, f"{self.better} − {self.worse} = {gap:+.3g} on {self.metric} "
                        f"({len(pairs)} seeds)", gap >= self.minimum)]


def enlarged(image: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def face_detection_rate(images: np.ndarray, size: int = 256) -> float:
  """Share of uint8 RGB images in which dlib's HOG frontal detector (one upsampling, as face_recognition and
  hallujax.tools.realism run it) finds a face, each enlarged to `size`² first (HOG needs faces of ~80 px)."""
  import dlib  # pylint: disable=import-outside-toplevel
  detector = dlib.get_frontal_face_detector()
  return float(np.mean([len(detector(enlarged(image, size), 1)) > 0 for image in images]))


def prior_face_rates(workdir: str, count: int) -> tuple[float, float]:
  """(detection rate on `count` samples of the StyleGAN2 run in `workdir`, detection rate on as many of the
  held-out faces it was trained to draw), cached in workdir/prior_faces.json per checkpoint step."""
  step = run_files.finished_step(workdir)
  if step is None:
    raise FileNotFoundError(f"{workdir} has no finished checkpoint")
  cache = os.path.join(workdir, "prior_faces.json")
  if os.path.isfile(cache):
    saved = json.load(open(cache))
    if saved.get("step") == step and saved.get("count") == count:
      return saved["prior"], saved["renders"]
  from hallujax import generator_samples  # pylint: disable=import-outside-toplevel
  from hallujax import images  # pylint: disable=import-outside-toplevel
  from hallujax.data import pipeline  # pylint: disable=import-outside-toplevel
  config = run_files.read_run_config(workdir)
  generator, variables = generator_samples.generator_from_run(config, workdir, step)
  samples = images.to_uint8(generator_samples.sample(generator, variables, count, truncation=1.0, seed=0))
  batches = math.ceil(count / config.train.batch_size)
  renders = np.concatenate([images.to_uint8(batch["target"])
                            for batch in pipeline.eval_batches(config, "test", batches=batches)])
  rates = face_detection_rate(samples), face_detection_rate(renders[:count])
  with open(cache, "w") as f:
    json.dump({"step": step, "count": count, "prior": rates[0], "renders": rates[1]}, f)
  return rates


@dataclasses.dataclass(frozen=True)
class PriorDrawsFaces:
  prerequisite: str
  min_detection_ratio: float
  count: int
  rows: tuple[str, ...]

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    requirement = (f"the prior `{{{self.prerequisite}}}` draws faces: dlib finds faces in {self.count} of its samples "
                   f"at ≥ {self.min_detection_ratio:g} × its rate on as many held-out faces of the prior's data")
    failure = "the prior draws no faces"
    specs = dict(table.prerequisites)
    if self.prerequisite not in specs:
      return [CheckResult(requirement, failure, f"not measured: no prerequisite {self.prerequisite!r}", False,
                          self.rows)]
    try:
      prior, renders = prior_face_rates(run_for(figures.root, specs[self.prerequisite], 0).workdir, self.count)
    except (ImportError, OSError, ValueError) as error:
      return [CheckResult(requirement, failure, f"not measured ({cli.first_line(error)})", False, self.rows)]
    ratio = prior / renders if renders > 0 else float("nan")
    return [CheckResult(requirement, failure, f"faces in {prior:.0%} of samples, {renders:.0%} of the data's faces "
                        f"(ratio {ratio:.2f})", bool(ratio >= self.min_detection_ratio), self.rows)]


Check = OutputsVary | EvalStepBound | RowGap | PriorDrawsFaces


def outputs_vary(min_ratio: float = 0.5, max_nearest_share: float = 0.5, rows: tuple[str, ...] = ()) -> OutputsVary:
  """Outputs differ across inputs: evaluate's output_diversity (mean pairwise distance of outputs / of their
  targets) ≥ `min_ratio` and nearest_target_share ≤ `max_nearest_share` in every seed of each row."""
  return OutputsVary(min_ratio, max_nearest_share, tuple(rows))


def eval_step_at_least(key: str, minimum: float, meaning: str, rows: tuple[str, ...] = ()) -> EvalStepBound:
  """The compared component is alive: the method's eval_step `key` (mean over seeds) ≥ `minimum`; a run
  without the key fails as "not measured"."""
  return EvalStepBound(key, minimum, True, meaning, tuple(rows))


def eval_step_at_most(key: str, maximum: float, meaning: str, rows: tuple[str, ...] = ()) -> EvalStepBound:
  """As eval_step_at_least, for figures that must stay below a bound (a policy's entropy under uniform)."""
  return EvalStepBound(key, maximum, False, meaning, tuple(rows))


def row_gap_at_least(better: str, worse: str, metric: str, minimum: float,
                     meaning: str = "headroom under the ceiling") -> RowGap:
  """A ceiling above the rows: `better` − `worse` on `metric` ≥ `minimum` (e.g. an oracle above the coarse
  face); when it fails, no comparison of the table can show a method winning."""
  return RowGap(better, worse, metric, minimum, meaning)


def prior_draws_faces(min_detection_ratio: float = 0.8, prerequisite: str = "prior", count: int = 64,
                      rows: tuple[str, ...] = ()) -> PriorDrawsFaces:
  """The StyleGAN2 prior (the table's prerequisite run `prerequisite`) draws faces: dlib detects a face in its
  samples at ≥ `min_detection_ratio` × the rate on the held-out faces of the data it was trained on."""
  return PriorDrawsFaces(prerequisite, min_detection_ratio, count, tuple(rows))


def check_table(table: Table, figures: Figures) -> list[CheckResult]:
  return [result for check in table.checks for result in check.results(table, figures)]


# ----------------------------------------------------------------------------- comparisons


def verdict(differences: list[float]) -> str:
  """What per-seed paired differences (positive = the paper's way) say about the paper's claim."""
  up, down = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
  tied = len(differences) - up - down
  if len(differences) == 1:   # no spread: a direction, not a result
    return "one seed: " + ("the paper's way" if up else "the other way" if down else "tied")
  if up and down:
    return f"mixed ({up} seeds the paper's way, {down} the other, {tied} tied)"
  if not up and not down:
    return "tied in every seed"
  stats = summary_statistics(differences)
  separated = abs(stats["mean"]) > stats["ci95"]
  direction = "holds" if up else "reversed"
  seeds = "in every seed" if not tied else f"in {max(up, down)} seeds, {tied} tied"
  if separated:
    return direction if not tied else f"{direction} ({seeds})"
  return f"{direction} {seeds}, within noise"


@dataclasses.dataclass(frozen=True)
class Comparison:
  better: str
  worse: str
  metric: str
  differences: tuple[float, ...]      # per seed, positive = the paper's way
  invalid: tuple[CheckResult, ...]    # failed checks that concern it

  @property
  def decided(self) -> bool:
    """Valid and its 95% interval excludes zero."""
    if self.invalid or len(self.differences) < 2:
      return False
    stats = summary_statistics(list(self.differences))
    return abs(stats["mean"]) > stats["ci95"]

  def verdict(self) -> str:
    if self.invalid:
      return "; ".join(f"invalid: {result.failure}, {result.value}" for result in self.invalid)
    return verdict(list(self.differences))


def comparisons(table: Table, per_seed: dict[str, dict[str, list]], results: list[CheckResult] = ()
                ) -> list[Comparison]:
  """Each adjacent pair of the paper's order on each ordering metric, with its seeds' paired differences."""
  metrics = (table.order_metric,) if isinstance(table.order_metric, str) else tuple(table.order_metric)
  failed = [result for result in results if not result.passed]
  found = []
  for metric in metrics:
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    for better, worse in zip(table.order, table.order[1:]):
      first, second = per_seed[better].get(metric, []), per_seed[worse].get(metric, [])
      differences = tuple(sign * (a - b) for a, b in zip(first, second) if a is not None and b is not None)
      invalid = tuple(result for result in failed if not result.rows or {better, worse} & set(result.rows))
      found.append(Comparison(better, worse, metric, differences, invalid))
  return found


def comparison_line(comparison: Comparison) -> str:
  head = f"{comparison.better} > {comparison.worse} on {comparison.metric}"
  differences = list(comparison.differences)
  if not differences:
    return f"{head}: not measured"
  stats = summary_statistics(differences)
  interval = f" ± {stats['ci95']:.3f} (95%)" if len(differences) > 1 else ""
  agree = sum(d > 0 for d in differences)
  line = (f"{head}: {comparison.verdict()} — {agree}/{len(differences)} seeds, mean paired difference "
          f"{stats['mean']:+.3f}{interval}")
  if len(differences) > 1 and not comparison.invalid:
    needed = seeds_needed(differences)
    line += ("; no difference observed, no number of seeds decides it" if needed is None else
             f"; the observed effect and spread would need {needed} seeds")
  return line


def ordering(table: Table, per_seed: dict[str, dict[str, list]], results: list[CheckResult] = ()) -> list[str]:
  """For each adjacent pair of the paper's order and each ordering metric: the verdict line."""
  return [comparison_line(comparison) for comparison in comparisons(table, per_seed, results)]


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


def strip_path(root: str, table: Table, spec: str, seed: int, column: str) -> str | None:
  """The PNG evaluate wrote for `column`'s first examples in the run of (`spec`, `seed`), if any."""
  path = evaluation_path(run_for(root, spec, seed, table))
  strip = path and os.path.join(path[:-len(".json")] + "_strips", f"{column}.png")
  return strip if strip and os.path.isfile(strip) else None


def copy_strips(table: Table, figures: Figures, root: str, output_dir: str) -> list[str]:
  """One image strip per row (its column's first 8 held-out examples), copied next to the report; markdown lines.

  Every strip comes from one seed, the first whose runs all have strips, so that every row shows the same
  held-out inputs (evaluate's order is fixed; a seed may change the degradations). The input and the ground
  truth lead, from the first row's run.
  """
  image_rows = [row for row in table.rows if not row.from_eval_step]
  leading = [(label, column) for label, column in (("input", "input"), ("input", "lr"), ("ground truth", "target"))
             if not any(row.column == column for row in table.rows)]
  complete = [seed for seed in figures.seeds
              if all(strip_path(root, table, row.config, seed, row.column) for row in image_rows)]
  lines = [f"Seed {complete[0]} for every row." if complete else
           "No seed has strips for every row: each row shows its first seed that has one (inputs may differ)."]
  directory = os.path.join(output_dir, f"{table.name}_strips")
  shown = set()
  entries = [(label, table.rows[0].config, column, ()) for label, column in leading] + [
      (row.label, row.config, row.column, row.from_eval_step) for row in table.rows]
  for label, spec, column, from_eval_step in entries:
    if label in shown:   # "input" is the input column, or else the LR column
      continue
    if from_eval_step:
      lines.append(f"- {label}: no images (the method's own eval_step figures)")
      continue
    seeds = complete[:1] or figures.seeds
    found = next(((seed, path) for seed in seeds if (path := strip_path(root, table, spec, seed, column))), None)
    if found is None:
      if (label, column) not in leading:
        lines.append(f"- {label}: no strip (no evaluation with images of column `{column}`)")
      continue
    shown.add(label)
    os.makedirs(directory, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") + ".png"
    shutil.copyfile(found[1], os.path.join(directory, name))
    seed_note = "" if complete else f" (seed {found[0]})"
    lines.append(f"- {label}{seed_note}: ![{label}]({table.name}_strips/{name})")
  return lines


def write_report(table: Table, seeds: list[int], root: str, output_dir: str, invocation: str,
                 recognizer: Run | None) -> str:
  figures = collect(table, seeds, root)
  per_seed, failures = figures.values, figures.failures
  wall = {}
  for row in table.rows:
    seconds = [run_seconds(run_for(root, row.config, seed, table)) for seed in seeds]
    measured = [value for value in seconds if not math.isnan(value)]
    wall[row.label] = float(np.mean(measured)) if measured else float("nan")
  stats = {label: {metric: summary_statistics([v for v in values if v is not None]) if any(
      v is not None for v in values) else None for metric, values in metrics.items()}
           for label, metrics in per_seed.items()}
  results = check_table(table, figures)
  found = comparisons(table, per_seed, results)

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
  lines += ["", "## Validity checks", ""]
  if results:
    lines += [f"- {'passes' if result.passed else 'FAILS'}: {result.requirement} — {result.value}"
              for result in results]
  else:
    lines.append("- none declared: nothing here says whether the comparison can mean something")
  if table.order:
    lines += ["", f"## The paper's ordering ({' > '.join(table.order)})", ""]
    lines += [f"- {comparison_line(comparison)}" for comparison in found]
  lines += ["", "## Rows", ""]
  for name, spec in table.prerequisites:
    lines.append(f"- `{{{name}}}`: the run of `{spec}` (seed 0), `{os.path.relpath(run_for(root, spec, 0).workdir)}`")
  for row in table.rows:
    source = "" if row.column == "output" else f", column `{row.column}`"
    renamed = "".join(f", {a} from the method's `{b}`" for a, b in row.from_eval_step)
    lines.append(f"- {row.label}: `{row.config}`{source}{renamed}")
  if table.eval_step_metrics:
    lines.append(f"- {', '.join(table.eval_step_metrics)}: the method's own eval_step means (output rows only)")
  if recognizer is not None:
    lines += ["", "## Identity", "",
              "Identity columns (rank1, rank5: identification of each output against one ground-truth image "
              "per identity; vr_at_far_*: verification over all output × ground-truth pairs; identity_cosine: "
              "output vs its own ground truth) use a recognizer no method trained with: "
              + recognizer_quality(recognizer) + ". The ground-truth row (column `target`) is the ceiling: the "
              "ground truth itself through the same recognizer and gallery."]
  lines += ["", "## Image strips (the first 8 held-out examples of the test split)", ""]
  lines += copy_strips(table, figures, root, output_dir)
  if table.notes:
    lines += ["", "## Notes", ""] + [f"- {note}" for note in table.notes]
  if figures.errors:
    lines += ["", "## Errors", ""] + [f"- {error}" for error in figures.errors]
  if failures:
    lines += ["", "## Seeds a row does not have", ""] + [f"- {failure}" for failure in failures]
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
               "statistics": stats, "seconds_per_run": wall,
               "checks": [dataclasses.asdict(result) for result in results],
               "comparisons": [{"better": c.better, "worse": c.worse, "metric": c.metric,
                                "differences": list(c.differences), "verdict": c.verdict(),
                                "seeds_needed": seeds_needed(list(c.differences))} for c in found],
               "errors": figures.errors}, f, indent=2)
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
  failures = [] if FLAGS.report_only else run_table(table, seeds, root, rows)
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
