"""A results table's validity checks: the conditions under which its comparison means something.

Each check reads what the runs measured (:class:`hallujax.results.report.Figures`) and gives one
:class:`CheckResult` per subject; a failed one (or one "not measured") makes the comparisons it concerns
"invalid: <check>, <value>", never "within noise".
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from hallujax import run_files
from hallujax.errors import first_line
from hallujax.results.table import HIGHER_IS_BETTER, Table, run_for


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """One check on one subject. A failure (or "not measured") invalidates the comparisons involving `rows`
  (every comparison of the table when `rows` is empty), or, when `pair` is given, only the comparison of those
  two rows (a component that one row adds to the other: dead, it makes only that comparison meaningless)."""
  requirement: str   # what must hold, e.g. "outputs vary (diversity ≥ 0.5 of the targets') on VPGAN"
  failure: str       # the verdict's words when it does not, e.g. "outputs collapsed"
  value: str         # what was measured
  passed: bool
  rows: tuple[str, ...] = ()
  pair: tuple[str, ...] = ()

  def concerns(self, better: str, worse: str) -> bool:
    """Whether the comparison of `better` with `worse` depends on this check."""
    if self.pair:
      return {better, worse} == set(self.pair)
    return not self.rows or bool({better, worse} & set(self.rows))


def checked_labels(table: Table, rows: tuple[str, ...]) -> tuple[str, ...]:
  """The rows a per-row check looks at: those named, else the rows of the paper's ordering (else all)."""
  return rows or table.order or tuple(row.label for row in table.rows)


def measured_image_rows(table: Table, figures: Figures, labels: tuple[str, ...],
                        key: str) -> list[tuple[str, list[dict]]]:
  """(label, its seeds' evaluate entries that have `key`) for each of `labels` except the rows of eval_step
  figures (the method's own figures: evaluate has no images of them)."""
  eval_step_rows = {row.label for row in table.rows if row.from_eval_step}
  return [(label, [entry for entry in figures.entries[label] if entry and key in entry])
          for label in labels if label not in eval_step_rows]


@dataclasses.dataclass(frozen=True)
class OutputsVary:
  min_ratio: float
  max_nearest_share: float
  rows: tuple[str, ...]

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    results = []
    for label, measured in measured_image_rows(table, figures, checked_labels(table, self.rows), "output_diversity"):
      requirement = (f"outputs vary on {label}: diversity ≥ {self.min_ratio:g} of the targets' and ≤ "
                     f"{self.max_nearest_share:.0%} of outputs nearest one target (worst seed)")
      if not measured:
        results.append(CheckResult(requirement, "outputs collapsed", "not measured", False, (label,)))
        continue
      ratio = min(entry["output_diversity"] for entry in measured)
      share = max(entry["nearest_target_share"] for entry in measured)
      passed = ratio >= self.min_ratio and share <= self.max_nearest_share
      value = f"diversity {ratio:.2f} of the targets', {share:.0%} nearest one target ({len(measured)} seeds)"
      results.append(CheckResult(requirement, "outputs collapsed", value, passed, (label,)))
    return results


NOT_METHOD_COLUMNS = ("target", "bicubic", "bilinear", "lr")   # the ground truth, the input's interpolations


def method_rows(table: Table) -> tuple[str, ...]:
  """A table's rows of images a method made (its output, or another of its columns such as a coarse stage) and
  the rows of its ordering, in the table's order; not the rows of eval_step figures (evaluate has no images of
  them)."""
  return tuple(row.label for row in table.rows if not row.from_eval_step and (
      row.column not in NOT_METHOD_COLUMNS or row.label in table.order))


@dataclasses.dataclass(frozen=True)
class OutputsFollowInputs:
  min_times_chance: float
  rows: tuple[str, ...]

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    results = []
    for label, measured in measured_image_rows(table, figures, self.rows or method_rows(table), "own_target_share"):
      requirement = (f"outputs follow their inputs on {label}: the share of outputs whose best-matching target is "
                     f"their own ≥ {self.min_times_chance:g} × chance (1 / examples; worst seed)")
      failure = "outputs do not follow their inputs"
      if not measured:
        results.append(CheckResult(requirement, failure, "own_target_share not measured", False, (label,)))
        continue
      # share / chance = share × N: the number of outputs that match their own target (a count, so rounded).
      times = [round(entry["own_target_share"] * entry["diversity_examples"]) for entry in measured]
      worst = measured[int(np.argmin(times))]
      passed = min(times) >= min(self.min_times_chance, worst["diversity_examples"])
      value = (f"{worst['own_target_share']:.1%} of outputs match their own target best, {min(times)} × chance "
               f"(1/{worst['diversity_examples']}; {len(measured)} seeds)")
      results.append(CheckResult(requirement, failure, value, passed, (label,)))
    return results


@dataclasses.dataclass(frozen=True)
class EvalStepBound:
  key: str
  bound: float
  at_least: bool
  meaning: str
  rows: tuple[str, ...]
  against: str = ""
  every_seed: bool = False

  def results(self, table: Table, figures: Figures) -> list[CheckResult]:
    results = []
    relation = "≥" if self.at_least else "≤"
    over = "every seed" if self.every_seed else "mean over seeds"
    for label in checked_labels(table, self.rows):
      requirement = f"{self.meaning} on {label}: eval_step's {self.key} {relation} {self.bound:g} ({over})"
      pair = (label, self.against) if self.against else ()
      reports = [(seed, values) for seed, values in zip(figures.seeds, figures.eval_steps[label]) if values is not None]
      if not reports or any(self.key not in values for _, values in reports):
        results.append(CheckResult(requirement, self.meaning, f"{self.key} not measured", False, (label,), pair))
        continue
      measured = {seed: float(values[self.key]) for seed, values in reports}
      mean = float(np.mean(list(measured.values())))
      value = f"{self.key} = {mean:.3g} on {label} ({len(reports)} seeds)"
      if self.every_seed:   # the worst seed decides: a component dead in one seed makes that seed's pair meaningless
        worst_seed = (min if self.at_least else max)(measured, key=measured.get)
        checked = measured[worst_seed]
        value = f"{self.key} = {checked:.3g} on {label} at seed {worst_seed} (mean {mean:.3g}, {len(reports)} seeds)"
      else:
        checked = mean
      passed = checked >= self.bound if self.at_least else checked <= self.bound
      results.append(CheckResult(requirement, self.meaning, value, passed, (label,), pair))
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


def held_out_faces(config, count: int) -> np.ndarray:
  """The first `count` faces (uint8 "target" images) of the test split of `config`'s data, in order.

  The face world's held-out split holds config.data.eval_size faces (64 in the prior's smoke config): it is
  enlarged to `count` (the first faces stay the same, each is a function of its index). A source with a fixed
  test split that holds fewer than `count` faces is an error, never a comparison on fewer."""
  from hallujax import images  # pylint: disable=import-outside-toplevel
  from hallujax.data import pipeline  # pylint: disable=import-outside-toplevel
  held_out = config.copy_and_resolve_references()
  with held_out.unlocked():
    held_out.data.eval_size = max(int(held_out.data.eval_size), count)
    held_out.data.render_on = "host"   # the faces are needed as images here, not as renderer parameters
  examples, prepare = pipeline.read_source(held_out, "test")
  if len(examples) < count:
    raise ValueError(f"the prior's data ({held_out.data.source}) has {len(examples)} test faces, fewer than the "
                     f"{count} the prior check compares its samples with; lower its count or give a larger test split")
  return np.stack([images.to_uint8(prepare.map(examples[index])["target"]) for index in range(count)])


def prior_face_rates(workdir: str, count: int) -> tuple[float, float]:
  """(detection rate on `count` samples of the StyleGAN2 run in `workdir`, detection rate on `count` held-out
  faces of the data it was trained on), cached in workdir/prior_faces.json per checkpoint step and counts."""
  step = run_files.finished_step(workdir)
  if step is None:
    raise FileNotFoundError(f"{workdir} has no finished checkpoint")
  cache = os.path.join(workdir, "prior_faces.json")
  if os.path.isfile(cache):
    saved = json.load(open(cache))
    # Entries written before the counts were recorded compared `count` samples with the 64 faces of the test
    # split whatever the count asked: they carry no "sample_count" and are measured again.
    if saved.get("step") == step and saved.get("sample_count") == count and saved.get("render_count") == count:
      return saved["prior"], saved["renders"]
  from hallujax import generator_samples  # pylint: disable=import-outside-toplevel
  from hallujax import images  # pylint: disable=import-outside-toplevel
  config = run_files.read_run_config(workdir)
  generator, variables = generator_samples.generator_from_run(config, workdir, step)
  samples = images.to_uint8(generator_samples.sample(generator, variables, count, truncation=1.0, seed=0))
  renders = held_out_faces(config, count)
  if len(samples) != count or len(renders) != count:
    raise ValueError(f"the prior check drew {len(samples)} samples and {len(renders)} held-out faces, not {count}")
  rates = face_detection_rate(samples), face_detection_rate(renders)
  with open(cache, "w") as f:
    json.dump({"step": step, "sample_count": len(samples), "render_count": len(renders), "prior": rates[0],
               "renders": rates[1]}, f)
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
      return [CheckResult(requirement, failure, f"not measured ({first_line(error)})", False, self.rows)]
    ratio = prior / renders if renders > 0 else float("nan")
    return [CheckResult(requirement, failure, f"faces in {prior:.0%} of samples, {renders:.0%} of the data's faces "
                        f"(ratio {ratio:.2f})", bool(ratio >= self.min_detection_ratio), self.rows)]


Check = OutputsVary | OutputsFollowInputs | EvalStepBound | RowGap | PriorDrawsFaces


def outputs_vary(min_ratio: float = 0.5, max_nearest_share: float = 0.5, rows: tuple[str, ...] = ()) -> OutputsVary:
  """Outputs differ across inputs: evaluate's output_diversity (mean pairwise distance of outputs / of their
  targets) ≥ `min_ratio` and nearest_target_share ≤ `max_nearest_share` in every seed of each row."""
  return OutputsVary(min_ratio, max_nearest_share, tuple(rows))


def outputs_follow_inputs(min_times_chance: float = 10.0, rows: tuple[str, ...] = ()) -> OutputsFollowInputs:
  """Each output follows its own input: evaluate's own_target_share (the share of outputs whose best-matching
  target, by the correlation of what varies across examples, is their own; hallujax.metrics.diversity) ≥
  `min_times_chance` × its chance level 1/N in every seed of each row (default: every method row and every row of
  the ordering, `method_rows`). A row without the figure fails as "not measured".

  Why 10 × chance: an output that does not read its input (noise, one face for every input) finds its own target
  as often as any other, about once in N (Poisson(1) hits); 10 or more hits then has probability ~1e-7, so noise
  cannot pass by luck. Measured on the tables' runs (docs/results.md): super-resolution and frontalization
  outputs 70 to 256 × chance; NIR → VIS lower, since NIR does not predict skin or hair colour (the raw NIR input
  26 ×, PCFH 21 ×, CycleGAN 13 ×, a checkerboard-noise PCFH run 8 ×, PCFH w/o AWM 1 ×). Noise passes
  outputs_vary (it is as varied as the targets); the conditional mean (a blurred face shrunk toward the mean
  face) fails outputs_vary and passes this one.
  """
  return OutputsFollowInputs(min_times_chance, tuple(rows))


def eval_step_at_least(key: str, minimum: float, meaning: str, rows: tuple[str, ...] = (),
                       against: str = "", every_seed: bool = False) -> EvalStepBound:
  """The compared component is alive: the method's eval_step `key` (mean over seeds) ≥ `minimum`; a run
  without the key fails as "not measured". With `against` (a row without the component; `rows` then names the
  one row that adds it), a failure invalidates only the comparison of those two rows, e.g. an ablation table
  whose rows add one loss each: a dead loss says nothing about the next row's. `every_seed`: the worst seed
  must meet the bound, for a component that can die in one seed (a policy that stays uniform) while the mean
  over the others hides it."""
  if against and len(rows) != 1:
    raise ValueError(f"eval_step_at_least({key!r}, against={against!r}): name the one row that adds the "
                     f"component in rows=(...), got {rows!r}.")
  return EvalStepBound(key, minimum, True, meaning, tuple(rows), against, every_seed)


def eval_step_at_most(key: str, maximum: float, meaning: str, rows: tuple[str, ...] = (),
                      every_seed: bool = False) -> EvalStepBound:
  """As eval_step_at_least, for figures that must stay below a bound (a policy's entropy under uniform)."""
  return EvalStepBound(key, maximum, False, meaning, tuple(rows), every_seed=every_seed)


def row_gap_at_least(better: str, worse: str, metric: str, minimum: float,
                     meaning: str = "headroom under the ceiling") -> RowGap:
  """A ceiling above the rows: `better` − `worse` on `metric` ≥ `minimum` (e.g. an oracle above the coarse
  face); when it fails, no comparison of the table can show a method winning."""
  return RowGap(better, worse, metric, minimum, meaning)


def prior_draws_faces(min_detection_ratio: float = 0.8, prerequisite: str = "prior", count: int = 512,
                      rows: tuple[str, ...] = ()) -> PriorDrawsFaces:
  """The StyleGAN2 prior (the table's prerequisite run `prerequisite`) draws faces: dlib detects a face in `count`
  of its samples at ≥ `min_detection_ratio` × the rate on `count` held-out faces of the data it was trained on.

  Why 512: the ratio of two detection rates measured on n images each has a binomial standard error of
  ratio × sqrt((1 − p)/(n p) + (1 − q)/(n q)) (delta method; p the samples' rate, q the faces'). At the 0.8
  threshold with q ≈ 0.64 (the face world's renders, docs/vpgan.md), p ≈ 0.51: 0.12 at n = 64, where one face moves
  the ratio by 0.02-0.03 and the threshold is decided by sampling noise; 0.062 at 256; 0.044 at 512. 512 is the
  smallest power of two whose standard error is under 0.05, so a prior 0.1 from the threshold lies on its side by
  more than two standard errors. dlib scored 64 faces in 2.4 s here (the 1,024 images: about 40 s, once per prior
  checkpoint, cached)."""
  return PriorDrawsFaces(prerequisite, min_detection_ratio, count, tuple(rows))


def check_table(table: Table, figures: Figures) -> list[CheckResult]:
  return [result for check in table.checks for result in check.results(table, figures)]

