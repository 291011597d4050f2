"""A results table's figures, statistics, comparisons and report (TABLE.md and TABLE.json).

Per-seed figures come from each run's evaluation report (:func:`collect`); cells are mean ± std with a 95%
Student-t interval; the paper's ordering is checked seed by seed on paired differences (:func:`comparisons`),
and a comparison a failed validity check concerns (``hallujax.results.checks``) is "invalid".
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil

import numpy as np
from scipy import stats as scipy_stats

from hallujax import progress, summary_writer
from hallujax.results.checks import CheckResult, check_table
from hallujax.results.table import HIGHER_IS_BETTER, Row, Run, Table, evaluation_path, run_for


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


# ----------------------------------------------------------------------------- comparisons


def verdict(differences: list[float]) -> str:
  """What per-seed paired differences (positive = the paper's way) say about the paper's claim."""
  up, down = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
  tied = len(differences) - up - down
  if len(differences) == 1:   # no spread: a direction, not a result
    return "one seed: " + ("the paper's way" if up else "the other way" if down else "tied")
  if not up and not down:
    return "tied in every seed"
  stats = summary_statistics(differences)
  if abs(stats["mean"]) > stats["ci95"]:   # decided (Comparison.decided): the 95% interval excludes zero
    direction = "holds" if stats["mean"] > 0 else "reversed"
    agreeing = up if stats["mean"] > 0 else down
    return direction if agreeing == len(differences) else f"{direction} ({agreeing} of {len(differences)} seeds)"
  if up and down:
    return f"mixed ({up} seeds the paper's way, {down} the other, {tied} tied)"
  direction = "holds" if up else "reversed"
  seeds = "in every seed" if not tied else f"in {max(up, down)} seeds, {tied} tied"
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
      invalid = tuple(result for result in failed if result.concerns(better, worse))
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
  if len(differences) > 1 and not comparison.invalid and not comparison.decided:
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
  """The recognizer's own held-out figures: its last eval in the training log, else in its TensorBoard events.

  A run trained before the runner wrote logs (`<run>.train.log`) still has the events the loop writes at every
  eval (``eval/<name>`` scalars in its workdir).
  """
  if recognizer is None:
    return ""
  where = f"{recognizer.spec} seed {recognizer.seed}, `{os.path.relpath(recognizer.workdir)}`"
  figures = last_evaluation(recognizer.workdir)
  if figures is None:
    return f"{where}; no held-out eval recorded for this run"
  return f"{where}; its own held-out eval at step {figures}"


def last_evaluation(workdir: str) -> str | None:
  """"STEP: name value ..." of the run's last eval, from its training log or else its event files; None if neither has one."""
  log = workdir + ".train.log"
  lines = [line for line in open(log).read().splitlines() if " eval at step " in line] if os.path.isfile(log) else []
  if lines:
    return lines[-1].split(" eval at step ", 1)[1]
  evaluations = summary_writer.read_scalars(workdir, prefix="eval/") if os.path.isdir(workdir) else {}
  if not evaluations:
    return None
  step = max(evaluations)
  return progress.evaluation_figures(step, {tag[len("eval/"):]: value for tag, value in evaluations[step].items()})


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


