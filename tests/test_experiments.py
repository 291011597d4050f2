"""The results-table runner: statistics, resumability, the report and the paper-ordering verdict.

Training and evaluation are subprocesses in real use; here `run_logged` is replaced by a fake that
writes what those commands would (a checkpoint directory, an evaluation report), so the runner's
own logic is tested in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import ndimage, stats

from hallujax import cli, experiments, run_files
from hallujax.metrics import diversity

SPEC = "configs/arcface.py:smoke,train.steps=3"
OTHER = "configs/arcface.py:smoke,train.steps=3,loss.margin=0.3"
COLLAPSED = "configs/arcface.py:smoke,train.steps=3,loss.scale=32.0"   # FakeCommands: output ignores input
NOISY = "configs/arcface.py:smoke,train.steps=3,loss.scale=16.0"       # FakeCommands: noise of the targets' statistics
BLURRED = "configs/arcface.py:smoke,train.steps=3,loss.scale=8.0"      # FakeCommands: each target blurred


def write_table_file(directory, order=("A", "B")):
  (directory / "toy.py").write_text(f'''
from hallujax.experiments import Row, Table
def table():
  return Table(name="toy", title="Toy table", paper="none", budget="3 steps",
               rows=(Row("A", "{SPEC}"), Row("B", "{OTHER}"), Row("bicubic", "{SPEC}", column="bicubic"),
                     Row("A's own", "{SPEC}", from_eval_step=(("psnr", "own_psnr"),))),
               metrics=("psnr", "rank1"), order={order!r}, order_metric="psnr", eval_examples=40, recognizer="",
               eval_step_metrics=("rank1",))
''')


B_DEFICIT = (1.0, 0.1, 0.1, 0.5, 0.6, 0.4, 0.5, 0.5)   # B's PSNR below A's, per seed


def smooth_images(count, side, seed=0):
  """uint8 random images whose neighbouring pixels are correlated, as in faces (white noise blurred, σ 1.5)."""
  fields = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((count, side, side, 3)), (0, 1.5, 1.5, 0))
  return np.round((fields - fields.min()) / (fields.max() - fields.min()) * 255).astype(np.uint8)


TARGETS = smooth_images(16, 8)


def noise_like(targets, seed):
  """Per-pixel Gaussian noise with the targets' per-pixel mean and spread: as varied as they are, about nothing."""
  values = targets.astype(np.float64)
  noise = np.mean(values, axis=0) + np.std(values, axis=0) * np.random.default_rng(seed).standard_normal(values.shape)
  return np.round(np.clip(noise, 0, 255)).astype(np.uint8)


def blurred(targets):
  return np.round(ndimage.gaussian_filter(targets.astype(np.float64), (0, 1.0, 1.0, 0))).astype(np.uint8)


def figures_of(outputs):
  """evaluate's diversity figures for these outputs against TARGETS (the real function, on real arrays)."""
  return diversity.output_diversity(outputs, TARGETS)


class FakeCommands:
  """Stands in for the train / evaluate subprocesses; PSNR is 20 + seed for A, less B_DEFICIT[seed] for B.

  The COLLAPSED config stands for a method whose output ignores its input: every output is
  the same face, and its diversity figures are those evaluate computes for such outputs. NOISY's outputs are
  noise with the targets' per-pixel statistics (another draw per seed), BLURRED's the targets blurred.
  """

  def __init__(self, fail: set[str] = frozenset()):
    self.commands, self.fail = [], fail

  def __call__(self, command, log_path):
    self.commands.append(command)
    workdir = command[command.index("--workdir") + 1]
    if any(part in workdir for part in self.fail):
      return 1, 0.1
    if "hallujax.train" in command:
      os.makedirs(os.path.join(workdir, "checkpoints", "3"), exist_ok=True)
    else:
      seed = int(workdir.rsplit("_", 1)[1])
      psnr = 20.0 + seed - (B_DEFICIT[seed] if "margin" in workdir else 0.0)
      outputs = (np.broadcast_to(TARGETS[:1], TARGETS.shape) if experiments.slug(COLLAPSED) in workdir else
                 noise_like(TARGETS, seed + 1) if experiments.slug(NOISY) in workdir else
                 blurred(TARGETS) if experiments.slug(BLURRED) in workdir else TARGETS)
      report = {"workdir": workdir, "eval_step": {"rank1": 0.5, "own_psnr": 30.0 + seed},
                "rows": {f"seed_{seed}": {"psnr": psnr, **figures_of(outputs)},
                         "bicubic": {"psnr": 10.0, **figures_of(TARGETS)}}}
      if "--recognizer_workdir" in command:
        report["rows"]["target"] = {"rank1": 1.0}
      os.makedirs(os.path.join(workdir, "eval", "step_3_test_strips"), exist_ok=True)
      with open(os.path.join(workdir, "eval", "step_3_test.json"), "w") as f:
        json.dump(report, f)
      for column in ("output", "bicubic", "target", "lr"):   # evaluate's strips: the first 8 examples per column
        with open(os.path.join(workdir, "eval", "step_3_test_strips", f"{column}.png"), "w") as f:
          f.write(f"{column} of {workdir}")
    return 0, 1.5


@pytest.fixture
def toy(tmp_path, monkeypatch):
  tables = tmp_path / "tables"
  tables.mkdir()
  write_table_file(tables)
  monkeypatch.setattr(experiments, "TABLES_DIRECTORY", str(tables))
  fake = FakeCommands()
  monkeypatch.setattr(experiments, "run_logged", fake)
  return tmp_path, fake


def test_statistics_match_student_t():
  values = [1.0, 2.5, 2.0, 4.0]
  summary = experiments.summary_statistics(values)
  half_width = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2.0
  assert summary["mean"] == pytest.approx(2.375)
  assert summary["std"] == pytest.approx(np.std(values, ddof=1))
  assert summary["ci95"] == pytest.approx(half_width, rel=1e-3)


def test_spec_names_keep_the_variant_grammar():
  assert experiments.with_options("configs/pcfh.py:smoke", seed=2) == "configs/pcfh.py:smoke,seed=2"
  assert experiments.with_options("configs/pcfh.py", seed=2) == "configs/pcfh.py:,seed=2"
  assert experiments.slug("configs/pcfh.py:smoke,ablation=wo_mic") == "pcfh.smoke.ablation=wo_mic"


def test_a_long_spec_gets_a_directory_the_file_system_accepts(tmp_path):
  """IPFH's learning recipe is a 300-character spec: its directory name (and the runner's log beside it) must fit
  the 255-byte limit, and specs that differ only past the cut must not share a run."""
  from hallujax.results import table as results_table
  options = ",".join(f"policy.option_{number}=True" for number in range(20))
  long_spec, other = f"configs/ipfh.py:table7_local,{options}", f"configs/ipfh.py:table7_local,{options},seed_offset=1"
  name = experiments.slug(long_spec)
  assert len(name) <= results_table.SLUG_MAX and name.startswith("ipfh.table7_local.policy.option_0=True")
  assert name != experiments.slug(other)
  (tmp_path / name / "seed_0").mkdir(parents=True)
  (tmp_path / f"{name}.evaluate.log").write_text("")


def test_a_table_runs_once_resumes_without_rework_and_reports(toy):
  root, fake = toy
  table = experiments.load_table("toy")
  seeds = [0, 1, 2]
  assert experiments.run_table(table, seeds, str(root / "runs_root")) == []
  # Two distinct configs (the bicubic row shares A's runs) × 3 seeds, each trained and evaluated once.
  assert len(fake.commands) == 2 * 3 * 2
  evaluate = next(c for c in fake.commands if "hallujax.evaluate" in c)
  assert int(evaluate[evaluate.index("--batches") + 1]) * 16 >= 40   # smoke batch 16: ≥ eval_examples scored
  fake.commands.clear()
  assert experiments.run_table(table, seeds, str(root / "runs_root")) == []
  assert fake.commands == []   # everything finished: nothing is redone
  markdown = experiments.write_report(table, seeds, str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "| A | 21 ± 1 [±2.5] |" in markdown   # PSNR 20, 21, 22: mean 21, std 1, t(2)·1/√3 = 2.48
  assert "| bicubic | 10 ± 0 [±0] | — |" in markdown   # the method's own figures describe its output only
  assert "| A's own | 31 ± 1 [±2.5] | — |" in markdown    # eval_step figures only, and only those named
  assert "A > B on psnr: holds in every seed, within noise — 3/3 seeds, mean paired difference +0.400 ± 1.291 (95%)" in markdown
  saved = json.load(open(root / "out" / "toy.json"))
  assert saved["per_seed"]["B"]["psnr"] == pytest.approx([19.0, 20.9, 21.9])
  assert saved["per_seed"]["A"]["rank1"] == [0.5, 0.5, 0.5]   # declared: eval_step_metrics=("rank1",)
  assert "## Validity checks" in markdown and "- none declared" in markdown
  # One strip per row, all from one seed, the LR input and the ground truth first.
  assert "Seed 0 for every row." in markdown and "- A's own: no images" in markdown
  assert "- A: ![A](toy_strips/A.png)" in markdown and "- ground truth: ![ground truth]" in markdown
  assert (root / "out" / "toy_strips" / "B.png").read_text().endswith("margin=0.3/seed_0")
  assert (root / "out" / "toy_strips" / "input.png").read_text().startswith("lr of")


def test_a_reversed_paper_order_is_reported_as_not_holding(tmp_path, monkeypatch, toy):
  root, _ = toy
  write_table_file(tmp_path / "tables", order=("B", "A"))
  table = experiments.load_table("toy")
  experiments.run_table(table, [0, 1], str(root / "runs_root"))
  markdown = experiments.write_report(table, [0, 1], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "B > A on psnr: reversed in every seed, within noise — 0/2 seeds" in markdown


def test_more_seeds_for_some_rows_train_only_those_and_the_report_says_what_each_row_has(toy):
  root, fake = toy
  table = experiments.load_table("toy")
  experiments.run_table(table, [0], str(root / "runs_root"))
  fake.commands.clear()
  rows = experiments.selected_rows(table, ["B"])
  assert experiments.run_table(table, [1, 2], str(root / "runs_root"), rows) == []
  assert len(fake.commands) == 2 * 2 and all("margin" in " ".join(c) for c in fake.commands)   # B's config only
  markdown = experiments.write_report(table, [0, 1, 2], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "| A | 20 (1 seed) |" in markdown and "| B | 20.6 ± 1.5 [±3.7] |" in markdown
  assert "- A seed 1: not run" in markdown and "- B seed 1" not in markdown
  assert "A > B on psnr: one seed: the paper's way — 1/1 seeds, mean paired difference +1.000" in markdown
  with pytest.raises(experiments.cli.UserError, match="'C' is not a row of toy"):
    experiments.selected_rows(table, ["A", "C"])


def test_rows_read_the_columns_evaluate_writes():
  report = {"workdir": "/runs/x/seed_0", "eval_step": {"psnr": 1.0},
            "rows": {"seed_0": {"psnr": 12.0}, "input": {"psnr": 5.0}, "bicubic": {"psnr": 7.0},
                     "seed_0:warped": {"psnr": 9.0}}}
  read = lambda column: experiments.row_values(report, experiments.Row("r", SPEC, column=column), ("psnr",))
  assert [read(c)["psnr"] for c in ("output", "input", "bicubic", "warped")] == [12.0, 5.0, 7.0, 9.0]


def test_the_recognizer_line_reads_a_run_without_a_log_from_its_events(tmp_path):
  from hallujax.results import report
  from hallujax.summary_writer import SummaryWriter
  workdir = tmp_path / "arcface" / "seed_0"   # trained before the runner wrote <run>.train.log
  with SummaryWriter(workdir, enabled=True) as writer:
    writer.write_scalars(500, {"eval/class_accuracy": 0.25, "eval/pair_cosine": 0.5, "loss_arcface": 30.0})
    writer.write_scalars(1500, {"eval/class_accuracy": 0.78515625, "eval/pair_cosine": 0.0037654920015484095,
                                "loss_arcface": 20.0})
  line = report.recognizer_quality(experiments.Run("arcface", 0, str(workdir)))
  assert line.endswith("its own held-out eval at step 1500: class_accuracy 0.7852  pair_cosine 0.003765"), line
  empty = tmp_path / "other" / "seed_0"
  empty.mkdir(parents=True)
  line = report.recognizer_quality(experiments.Run("other", 0, str(empty)))
  assert line.endswith("; no held-out eval recorded for this run"), line


def test_verdicts_separate_direction_from_noise():
  assert experiments.verdict([1.0, 1.1, 0.9]) == "holds"
  assert experiments.verdict([-1.0, -1.1, -0.9]) == "reversed"
  assert experiments.verdict([0.1, 2.0, 0.1]) == "holds in every seed, within noise"
  assert experiments.verdict([0.5, -0.5, 0.0]) == "mixed (1 seeds the paper's way, 1 the other, 1 tied)"
  assert experiments.verdict([-0.2]) == "one seed: the other way"   # no spread, no verdict
  # "mixed" only when seeds go both ways: ties do not make a direction mixed.
  assert experiments.verdict([0.5, 0.0, 0.1]) == "holds in 2 seeds, 1 tied, within noise"
  # Decided (the 95% interval excludes zero) although one seed goes the other way: a result, not "mixed", as the
  # runner's --until_decided reads it (it adds no seeds to a decided comparison).
  against = [-0.3, -0.25, -0.4, 0.05, -0.35, -0.3, -0.2]
  assert experiments.verdict(against) == "reversed (6 of 7 seeds)"
  assert experiments.Comparison("A", "B", "psnr", tuple(against), ()).decided
  assert experiments.verdict([0.4, 0.5, 0.0, 0.45, 0.5, 0.4]) == "holds (5 of 6 seeds)"
  assert experiments.verdict([0.0, 0.0]) == "tied in every seed"


def test_t_quantile_matches_scipy_for_every_small_sample():
  for degrees_of_freedom in range(1, 31):
    assert experiments.t_quantile(degrees_of_freedom) == pytest.approx(stats.t.ppf(0.975, degrees_of_freedom),
                                                                       rel=1e-9)
  # Printed tables' values: t(1) = 12.706, t(10) = 2.228 (where the old table fell back to 1.96), t(30) = 2.042.
  assert [round(experiments.t_quantile(df), 3) for df in (1, 10, 30)] == [12.706, 2.228, 2.042]


def test_seeds_needed_from_the_observed_effect_and_spread():
  assert experiments.seeds_needed([1.0, 0.1, 0.1]) == 9    # mean 0.4, std 0.52: t(8)·0.52/√9 = 0.399 < 0.4
  assert experiments.seeds_needed([1.0, 1.0]) == 2         # no spread: two seeds decide
  assert experiments.seeds_needed([0.5, -0.5]) is None     # no effect observed


def write_checked_table(directory, checks, specs=(SPEC, OTHER)):
  (directory / "checked.py").write_text(f'''
from hallujax.experiments import Row, Table, outputs_follow_inputs, outputs_vary, eval_step_at_least, row_gap_at_least
def table():
  return Table(name="checked", title="t", paper="none", budget="b", recognizer="",
               rows=(Row("A", "{specs[0]}"), Row("B", "{specs[1]}"), Row("bicubic", "{specs[0]}", column="bicubic")),
               metrics=("psnr",), order=("A", "B"), checks=({checks},))
''')


def test_a_method_whose_output_ignores_its_input_is_invalid_not_within_noise(toy):
  root, _ = toy
  write_checked_table(root / "tables", "outputs_vary(min_ratio=0.5)", specs=(COLLAPSED, OTHER))
  table = experiments.load_table("checked")
  experiments.run_table(table, [0, 1, 2], str(root / "runs_root"))
  markdown = experiments.write_report(table, [0, 1, 2], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert ("A > B on psnr: invalid: outputs collapsed, diversity 0.00 of the targets', 100% nearest one target "
          "(3 seeds)") in markdown
  assert "within noise" not in markdown and "reversed" not in markdown
  assert "- FAILS: outputs vary on A" in markdown and "- passes: outputs vary on B" in markdown


def test_noise_passes_outputs_vary_but_not_outputs_follow_inputs(toy):
  root, _ = toy
  (root / "tables" / "follow.py").write_text(f'''
from hallujax.experiments import Row, Table, outputs_follow_inputs, outputs_vary
def table():
  return Table(name="follow", title="t", paper="none", budget="b", recognizer="",
               rows=(Row("noise", "{NOISY}"), Row("blurred", "{BLURRED}"), Row("one face", "{COLLAPSED}"),
                     Row("bicubic", "{BLURRED}", column="bicubic"), Row("own", "{BLURRED}", from_eval_step=(("psnr", "own_psnr"),))),
               metrics=("psnr",), order=("noise", "blurred"), checks=(outputs_vary(0.5), outputs_follow_inputs()))
''')
  table = experiments.load_table("follow")
  experiments.run_table(table, [0, 1, 2], str(root / "runs_root"))
  markdown = experiments.write_report(table, [0, 1, 2], str(root / "runs_root"), str(root / "out"), "cmd", None)
  # Noise is as varied as the targets, so the diversity check alone lets it through ...
  assert "- passes: outputs vary on noise" in markdown and "- passes: outputs vary on blurred" in markdown
  # ... and it matches its own target no more often than chance (1 in 16): at most 3 of 16 in every seed.
  assert "- FAILS: outputs follow their inputs on noise" in markdown
  assert "noise > blurred on psnr: invalid: outputs do not follow their inputs, " in markdown
  assert "× chance (1/16; 3 seeds)" in markdown
  assert "- passes: outputs follow their inputs on blurred: " in markdown and "100.0% of outputs match" in markdown
  # Every method row is checked, not only the ordering's; the bicubic row (not a method row, not ordered) and the
  # eval_step row (no images) are not.
  assert "- FAILS: outputs follow their inputs on one face: " in markdown
  assert "0.0% of outputs match their own target best, 0 × chance" in markdown
  assert "inputs on bicubic" not in markdown and "inputs on own" not in markdown
  assert "outputs vary on one face" not in markdown   # outputs_vary reads the ordering's rows only


def test_outputs_follow_inputs_asks_ten_own_target_matches_in_every_seed():
  table = experiments.Table(name="t", title="t", paper="p", budget="b", rows=(experiments.Row("A", SPEC),))
  def passes(matches, examples=256):   # per seed: how many of `examples` outputs match their own target
    entries = [{"own_target_share": count / examples, "diversity_examples": examples} for count in matches]
    figures = experiments.Figures(list(range(len(matches))), {}, {"A": entries}, {}, [], [])
    [result] = experiments.outputs_follow_inputs().results(table, figures)
    return result.passed
  assert passes([10, 200]) and not passes([9, 200])   # 10 × chance (1/256), in the worst seed
  assert passes([8], examples=8) and not passes([7], examples=8)   # fewer than 10 examples: every one


def test_a_run_without_the_own_target_share_fails_as_not_measured_and_is_reevaluated(toy):
  root, fake = toy
  write_checked_table(root / "tables", "outputs_follow_inputs(rows=('A',))")
  table = experiments.load_table("checked")
  experiments.run_table(table, [0], str(root / "runs_root"))
  path = experiments.evaluation_path(experiments.run_for(str(root / "runs_root"), SPEC, 0))
  report = json.load(open(path))
  for entry in report["rows"].values():   # an evaluation written before evaluate measured the share
    entry.pop("own_target_share", None)
  json.dump(report, open(path, "w"))
  markdown = experiments.write_report(table, [0], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "- FAILS: outputs follow their inputs on A" in markdown and "own_target_share not measured" in markdown
  assert "A > B on psnr: invalid: outputs do not follow their inputs, own_target_share not measured" in markdown
  trained = lambda: [c for c in fake.commands if "hallujax.train" in c]
  evaluated = lambda: [c for c in fake.commands if "hallujax.evaluate" in c]
  before = len(trained()), len(evaluated())
  experiments.run_table(table, [0], str(root / "runs_root"))   # the old evaluation is stale: evaluated again only
  assert len(trained()) == before[0] and len(evaluated()) == before[1] + 1
  markdown = experiments.write_report(table, [0], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "- passes: outputs follow their inputs on A" in markdown


def test_reevaluate_evaluates_finished_runs_again_without_training(toy):
  root, fake = toy
  table = experiments.load_table("toy")
  experiments.run_table(table, [0, 1], str(root / "runs_root"))
  trained = lambda: [c for c in fake.commands if "hallujax.train" in c]
  evaluated = lambda: [c for c in fake.commands if "hallujax.evaluate" in c]
  assert (len(trained()), len(evaluated())) == (4, 4)   # two configs × two seeds
  experiments.run_table(table, [0, 1], str(root / "runs_root"))
  assert (len(trained()), len(evaluated())) == (4, 4)   # current evaluations are kept
  experiments.run_table(table, [0, 1], str(root / "runs_root"), experiments.selected_rows(table, ["B"]),
                        reevaluate=True)
  assert len(evaluated()) == 6 and all(experiments.slug(OTHER) in " ".join(c) for c in evaluated()[4:])
  # train() answers from the finished checkpoint without starting a training; the fake records only what starts
  assert len(trained()) == 4


def test_eval_step_and_headroom_checks_print_their_values_and_fail_when_not_measured(toy):
  root, _ = toy
  write_checked_table(root / "tables", "eval_step_at_least('own_psnr', 31.0, 'own PSNR above 31', rows=('A',)), "
                      "eval_step_at_least('mi_output_nir', 0.05, 'MI estimate alive', rows=('B',)), "
                      "row_gap_at_least('A', 'bicubic', 'psnr', 0.5)")
  table = experiments.load_table("checked")
  experiments.run_table(table, [0, 1, 2], str(root / "runs_root"))
  markdown = experiments.write_report(table, [0, 1, 2], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "- passes: own PSNR above 31 on A: eval_step's own_psnr ≥ 31 (mean over seeds) — own_psnr = 31 on A" in markdown
  assert "- FAILS: MI estimate alive on B: eval_step's mi_output_nir ≥ 0.05" in markdown
  assert "- passes: headroom under the ceiling: A − bicubic ≥ 0.5 on psnr (mean over seeds) — A − bicubic = +11" in markdown
  assert "A > B on psnr: invalid: MI estimate alive, mi_output_nir not measured" in markdown


def test_a_dead_added_component_invalidates_only_the_comparison_of_the_row_that_adds_it():
  """An ablation where each row adds one loss (VividGAN Table III): C < B < A. B's added loss is dead, so B vs C
  says nothing about it; A vs B (about A's own addition) stays valid and is decided by its figures."""
  table = experiments.Table(name="ablation", title="t", paper="none", budget="b", recognizer="",
                            rows=(experiments.Row("A", SPEC), experiments.Row("B", OTHER), experiments.Row("C", SPEC)),
                            metrics=("psnr",), order=("A", "B", "C"))
  dead = experiments.eval_step_at_least("b_share", 0.05, "B's loss alive", rows=("B",), against="C")
  per_seed = {"A": {"psnr": [22.0, 23.0, 24.0]}, "B": {"psnr": [21.0, 22.1, 22.9]}, "C": {"psnr": [20.0, 21.0, 22.0]}}
  shares = [{"b_share": 0.004}] * 3
  figures = experiments.Figures([0, 1, 2], per_seed, {}, {"A": shares, "B": shares, "C": shares}, [], [])
  results = dead.results(table, figures)
  assert [result.passed for result in results] == [False]
  verdicts = {(c.better, c.worse): c for c in experiments.comparisons(table, per_seed, results)}
  assert verdicts["B", "C"].invalid and not verdicts["A", "B"].invalid
  assert verdicts["A", "B"].decided
  assert "invalid: B's loss alive, b_share = 0.004 on B (3 seeds)" == verdicts["B", "C"].verdict()
  # Without `against`, the same failure concerns every comparison of row B (the default).
  anywhere = experiments.eval_step_at_least("b_share", 0.05, "B's loss alive", rows=("B",)).results(table, figures)
  assert all(c.invalid for c in experiments.comparisons(table, per_seed, anywhere))
  with pytest.raises(ValueError, match="name the one row that adds the component"):
    experiments.eval_step_at_least("b_share", 0.05, "B's loss alive", against="C")


def test_a_component_dead_in_one_seed_fails_an_every_seed_check_that_its_mean_passes():
  """IPFH's learning recipe left uniform in 7 seeds and stayed uniform in one: the mean over seeds (0.86) hides
  the dead seed, whose RL-vs-random pair compares a uniform arg-max with random patches."""
  table = experiments.Table(name="policy", title="t", paper="none", budget="b", recognizer="",
                            rows=(experiments.Row("RL", SPEC), experiments.Row("random", OTHER)),
                            metrics=("psnr",), order=("RL", "random"))
  per_seed = {"RL": {"psnr": [21.0, 21.2, 20.1]}, "random": {"psnr": [20.8, 21.0, 20.9]}}
  fractions = [{"entropy_fraction": 0.80}, {"entropy_fraction": 0.78}, {"entropy_fraction": 1.0}]
  figures = experiments.Figures([4, 5, 6], per_seed, {}, {"RL": fractions, "random": [None] * 3}, [], [])
  on_mean = experiments.eval_step_at_most("entropy_fraction", 0.9, "the policy left uniform", rows=("RL",))
  assert [result.passed for result in on_mean.results(table, figures)] == [True]
  every = experiments.eval_step_at_most("entropy_fraction", 0.9, "the policy left uniform", rows=("RL",),
                                        every_seed=True)
  [result] = every.results(table, figures)
  assert not result.passed
  assert result.value == "entropy_fraction = 1 on RL at seed 6 (mean 0.86, 3 seeds)"
  assert "(every seed)" in result.requirement
  [comparison] = experiments.comparisons(table, per_seed, [result])
  assert comparison.invalid
  # at_least takes the smallest seed's figure
  lowest = experiments.eval_step_at_least("entropy_fraction", 0.79, "x", rows=("RL",), every_seed=True)
  assert "at seed 5" in lowest.results(table, figures)[0].value


def test_a_check_against_a_row_the_table_lacks_is_refused(toy):
  root, _ = toy
  write_checked_table(root / "tables", "eval_step_at_least('x_share', 0.05, 'x alive', rows=('A',), against='Z')")
  with pytest.raises(experiments.cli.UserError, match=r"a check names \['Z'\]"):
    experiments.load_table("checked")


def test_a_metric_missing_from_the_independent_evaluation_is_an_error(toy):
  root, _ = toy
  write_table_file(root / "tables")
  source = (root / "tables" / "toy.py").read_text().replace('eval_step_metrics=("rank1",)', "")
  (root / "tables" / "toy.py").write_text(source)
  table = experiments.load_table("toy")
  experiments.run_table(table, [0], str(root / "runs_root"))
  markdown = experiments.write_report(table, [0], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "## Errors" in markdown and "metric 'rank1' is not in the independent evaluation" in markdown
  assert "| A | 20 (1 seed) | — |" in markdown   # not eval_step's 0.5


def test_until_decided_adds_seeds_to_the_undecided_rows_only(toy):
  root, fake = toy
  table = experiments.load_table("toy")
  experiments.run_table(table, [0, 1, 2], str(root / "runs_root"))
  fake.commands.clear()
  seeds, failures = experiments.run_until_decided(table, [0, 1, 2], str(root / "runs_root"), max_seeds=8)
  # Differences 1.0, 0.1, 0.1, 0.5, 0.6, 0.4: the interval first excludes zero at 6 seeds (0.450 ± 0.356).
  assert seeds == [0, 1, 2, 3, 4, 5] and failures == []
  trained = {command[command.index("--workdir") + 1] for command in fake.commands}
  assert len(trained) == 2 * 3   # A's and B's configs, seeds 3, 4 and 5
  markdown = experiments.write_report(table, seeds, str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "A > B on psnr: holds — 6/6 seeds, mean paired difference +0.450 ± 0.356 (95%)" in markdown
  more = experiments.write_report(table, seeds + [6], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "- A seed 6: not run (its comparisons were decided or invalid with fewer seeds" in more   # not a failure
  capped, _ = experiments.run_until_decided(table, [0, 1, 2], str(root / "runs_root"), max_seeds=3)
  assert capped == [0, 1, 2]
  # --report_only --until_decided reports the seeds that run added (and no seed without an evaluated run).
  assert experiments.evaluated_seeds(table, [0], str(root / "runs_root"), max_seeds=8) == [0, 1, 2, 3, 4, 5]
  assert experiments.evaluated_seeds(table, [0], str(root / "runs_root"), max_seeds=4) == [0, 1, 2, 3]
  tied = experiments.Figures([0, 1], {"A": {"psnr": [1.0, 2.0]}, "B": {"psnr": [1.0, 2.0]}, "bicubic": {"psnr": []},
                                      "A's own": {"psnr": []}}, {}, {}, [], [])
  assert experiments.undecided_rows(table, tied, max_seeds=8) == ()   # identical figures: seeds cannot help


def alive(pid: int) -> bool:
  """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def wait_for(condition, seconds=30.0):
  deadline = time.monotonic() + seconds
  while not condition() and time.monotonic() < deadline:
    time.sleep(0.05)
  return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_runner_leaves_no_training_process_behind(tmp_path, stop):
  pids = tmp_path / "pids"
  # A "training" that starts a worker of its own and then runs for minutes, as hallujax.train would.
  training = (f"import os, subprocess, sys, time; worker = subprocess.Popen([sys.executable, '-c', "
              f"'import time; time.sleep(300)']); open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{worker.pid}}'); "
              f"time.sleep(300)")
  runner = subprocess.Popen([sys.executable, "-c", (
      "import sys; from hallujax import experiments; experiments.stop_on_signals(); "
      f"experiments.run_logged([sys.executable, '-c', {training!r}], {str(tmp_path / 'train.log')!r})")])
  assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
  training_pid, worker_pid = map(int, pids.read_text().split())
  runner.send_signal(stop)
  runner.wait(timeout=30)
  assert wait_for(lambda: not alive(training_pid)), "the training outlived its runner"
  if stop == signal.SIGTERM:   # the whole process group; a SIGKILLed runner can only take its direct child along
    assert wait_for(lambda: not alive(worker_pid)), "the training's worker outlived the runner"
  else:
    os.kill(worker_pid, signal.SIGKILL)


def test_failed_runs_are_listed_and_retried(toy, monkeypatch):
  root, _ = toy
  table = experiments.load_table("toy")
  failing = FakeCommands(fail={"margin"})
  monkeypatch.setattr(experiments, "run_logged", failing)
  failures = experiments.run_table(table, [0], str(root / "runs_root"))
  assert failures == [f"{OTHER} seed 0"]
  markdown = experiments.write_report(table, [0], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "## Seeds a row does not have" in markdown and "B seed 0: no evaluation" in markdown
  retry = FakeCommands()
  monkeypatch.setattr(experiments, "run_logged", retry)
  assert experiments.run_table(table, [0], str(root / "runs_root")) == []
  assert all("margin" in " ".join(command) for command in retry.commands) and len(retry.commands) == 2


def test_unknown_tables_and_orders_are_refused(toy):
  root, _ = toy
  with pytest.raises(Exception, match="No table 'nope'.*known tables: toy"):
    experiments.load_table("nope")
  write_table_file(root / "tables", order=("A", "Z"))
  with pytest.raises(Exception, match="order names \\['Z'\\]"):
    experiments.load_table("toy")


def table_with_prerequisite(tmp_path, monkeypatch, name: str, row_spec: str):
  """(a one-row table whose prerequisite `name` is OTHER's run, the fake that records its commands)."""
  tables = tmp_path / "tables"
  tables.mkdir()
  (tables / "needs.py").write_text(f'''
from hallujax.experiments import Row, Table
def table():
  return Table(name="needs", title="t", paper="none", budget="b", recognizer="",
               prerequisites=(({name!r}, {OTHER!r}),), rows=(Row("A", {row_spec!r}),))
''')
  monkeypatch.setattr(experiments, "TABLES_DIRECTORY", str(tables))
  fake = FakeCommands()
  monkeypatch.setattr(experiments, "run_logged", fake)
  return experiments.load_table("needs"), fake


def test_prerequisite_runs_are_trained_first_and_named_in_row_configs(tmp_path, monkeypatch):
  table, fake = table_with_prerequisite(tmp_path, monkeypatch, "prior", f"{SPEC},data.data_dir={{prior}}")
  experiments.run_table(table, [0], str(tmp_path / "root"))
  prerequisite_workdir = str(tmp_path / "root" / "runs" / experiments.slug(OTHER) / "seed_0")
  first, second = fake.commands[0], fake.commands[1]
  assert first[first.index("--workdir") + 1] == prerequisite_workdir
  assert f"data.data_dir={prerequisite_workdir}" in second[second.index("--config") + 1]
  # The row's run directory is named after the spec as written, not after where the prerequisite lives.
  assert second[second.index("--workdir") + 1].endswith("data.data_dir=.prior/seed_0")

  # A row trained with another prerequisite run (the table's prior changed) is refused, not reused.
  row_workdir = second[second.index("--workdir") + 1]
  os.makedirs(row_workdir, exist_ok=True)
  with open(os.path.join(row_workdir, "config.json"), "w") as f:
    json.dump({"data": {"data_dir": prerequisite_workdir}}, f)
  experiments.run_table(table, [0], str(tmp_path / "root"))
  with open(os.path.join(row_workdir, "config.json"), "w") as f:
    json.dump({"data": {"data_dir": str(tmp_path / "root" / "runs" / "an.older.prior" / "seed_0")}}, f)
  with pytest.raises(cli.UserError, match="an.older.prior.*move that run away"):
    experiments.run_table(table, [0], str(tmp_path / "root"))


def test_a_row_trained_with_the_current_prerequisite_through_a_variant_option_is_reused(tmp_path, monkeypatch):
  """PCFH's ``lightcnn={lightcnn}`` is a variant option that sets weights.lightcnn: the saved config holds the
  prerequisite there, not under the option's name."""
  table, _ = table_with_prerequisite(tmp_path, monkeypatch, "lightcnn", "configs/pcfh.py:smoke,lightcnn={lightcnn}")
  root = str(tmp_path / "root")
  prerequisite_workdir = experiments.run_for(root, OTHER, 0).workdir
  row_workdir = experiments.run_for(root, table.rows[0].config, 0, table).workdir
  os.makedirs(row_workdir)
  with open(os.path.join(row_workdir, "config.json"), "w") as f:
    json.dump({"weights": {"lightcnn": prerequisite_workdir}}, f)
  experiments.run_table(table, [0], root)   # the current LightCNN: no refusal
  with open(os.path.join(row_workdir, "config.json"), "w") as f:
    json.dump({"weights": {"lightcnn": os.path.join(root, "runs", "an.older.lightcnn", "seed_0")}}, f)
  with pytest.raises(cli.UserError, match="weights.lightcnn=.*an.older.lightcnn.*move that run away"):
    experiments.run_table(table, [0], root)


def test_dlib_finds_face_world_faces_and_not_noise():
  pytest.importorskip("dlib")
  from hallujax.tools import realism
  rng = np.random.default_rng(0)
  faces = realism._renders(1234, rng.integers(0, 10_000, 8), rng, 64, 10.0, 10.0, 8.0)["visible"]
  assert experiments.face_detection_rate(faces) >= 0.75
  assert experiments.face_detection_rate(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)) == 0.0


def test_a_prior_that_draws_no_faces_invalidates_the_comparison_about_it(toy):
  root, _ = toy
  (root / "tables" / "prior.py").write_text(f'''
from hallujax.experiments import Row, Table, prior_draws_faces
def table():
  return Table(name="prior", title="t", paper="none", budget="b", recognizer="",
               prerequisites=(("prior", "{OTHER}"),), rows=(Row("A", "{SPEC}"), Row("B", "{OTHER}")),
               metrics=("psnr",), order=("A", "B"), checks=(prior_draws_faces(0.8, rows=("B",)),))
''')
  table = experiments.load_table("prior")
  experiments.run_table(table, [0, 1], str(root / "runs_root"))
  prior = experiments.run_for(str(root / "runs_root"), OTHER, 0).workdir
  # What prior_face_rates caches for the prior's finished checkpoint: dlib found faces in 10% of its samples.
  count = table.checks[0].count
  with open(os.path.join(prior, "prior_faces.json"), "w") as f:
    json.dump({"step": 3, "sample_count": count, "render_count": count, "prior": 0.1, "renders": 0.9}, f)
  markdown = experiments.write_report(table, [0, 1], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert ("A > B on psnr: invalid: the prior draws no faces, faces in 10% of samples, 90% of the data's faces "
          "(ratio 0.11)") in markdown
  with pytest.raises(experiments.cli.UserError, match=r"a check names \['C'\]"):
    (root / "tables" / "prior.py").write_text((root / "tables" / "prior.py").read_text().replace('("B",)', '("C",)'))
    experiments.load_table("prior")


def test_the_prior_check_compares_as_many_held_out_faces_as_samples(tmp_path, monkeypatch):
  """prior_face_rates(workdir, count) scores `count` samples against `count` held-out faces, even when the prior's
  config holds fewer test faces (it used to compare 24 samples with the 8 faces of the split), and records both
  counts so an entry cached under the old rule is measured again."""
  from hallujax import generator_samples, images
  from hallujax.data import pipeline
  from hallujax.results import checks
  from configs import vpgan
  config = vpgan.get_config("prior_smoke")
  config.data.update(eval_size=8, uniform_appearance=True)   # one test batch of the prior's batch size (8)
  workdir = tmp_path / "prior"
  (workdir / "checkpoints" / "3").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(config.to_dict()))
  # An entry of the old rule for 24 "samples", made from the split's 8 faces: not to be reused.
  (workdir / "prior_faces.json").write_text(json.dumps({"step": 3, "count": 24, "prior": 0.9, "renders": 0.1}))
  monkeypatch.setattr(generator_samples, "generator_from_run", lambda config, workdir, step: (None, None))
  monkeypatch.setattr(generator_samples, "sample",
                      lambda generator, variables, num, truncation, seed: np.zeros((num, 64, 64, 3), np.float32))
  scored = []
  def detection_rate(faces):
    scored.append(faces)
    return 0.5
  monkeypatch.setattr(checks, "face_detection_rate", detection_rate)
  assert checks.prior_face_rates(str(workdir), 24) == (0.5, 0.5)
  assert [len(faces) for faces in scored] == [24, 24]
  # The held-out faces start with the split's own 8, in order.
  first_batch = pipeline.eval_batches(config, "test", batches=1)[0]["target"]
  np.testing.assert_array_equal(scored[1][:8], images.to_uint8(first_batch))
  assert len({image.tobytes() for image in scored[1]}) == 24
  saved = json.loads((workdir / "prior_faces.json").read_text())
  assert (saved["sample_count"], saved["render_count"]) == (24, 24)
  checks.prior_face_rates(str(workdir), 24)   # now cached
  assert len(scored) == 2


def test_the_prior_check_refuses_a_test_split_smaller_than_its_count(tmp_path):
  from hallujax.results import checks
  from PIL import Image
  from configs import vpgan
  (tmp_path / "faces" / "test").mkdir(parents=True)
  for index in range(3):
    Image.new("RGB", (64, 64), (index, 0, 0)).save(tmp_path / "faces" / "test" / f"{index}.png")
  config = vpgan.get_config("prior_smoke")
  config.data.update(source="image_folder", data_dir=str(tmp_path / "faces"))
  assert checks.held_out_faces(config, 3).shape == (3, 64, 64, 3)
  with pytest.raises(ValueError, match="has 3 test faces, fewer than the 4 the prior check compares"):
    checks.held_out_faces(config, 4)


def test_evaluations_are_redone_for_another_recognizer_or_without_diversity(tmp_path, monkeypatch):
  tables = tmp_path / "tables"
  tables.mkdir()
  def write(recognizer):
    (tables / "ident.py").write_text(f'''
from hallujax.experiments import Row, Table
def table():
  return Table(name="ident", title="t", paper="none", budget="b", recognizer="{recognizer}",
               rows=(Row("A", "{SPEC}"), Row("ground truth", "{SPEC}", column="target")), metrics=("psnr",))
''')
  monkeypatch.setattr(experiments, "TABLES_DIRECTORY", str(tables))
  fake = FakeCommands()
  monkeypatch.setattr(experiments, "run_logged", fake)
  root = str(tmp_path / "root")
  write(OTHER)
  experiments.run_table(experiments.load_table("ident"), [0], root)
  evaluated = lambda: [c for c in fake.commands if "hallujax.evaluate" in c]
  assert len(evaluated()) == 1
  experiments.run_table(experiments.load_table("ident"), [0], root)
  assert len(evaluated()) == 1   # current: same recognizer, diversity present
  write(COLLAPSED)               # another recognizer run: identity columns from the old one do not count
  experiments.run_table(experiments.load_table("ident"), [0], root)
  assert len(evaluated()) == 2 and experiments.slug(COLLAPSED) in " ".join(evaluated()[-1])
  path = experiments.evaluation_path(experiments.run_for(root, SPEC, 0))
  report = json.load(open(path))
  for entry in report["rows"].values():   # an evaluation written before evaluate measured diversity
    entry.pop("output_diversity", None)
  json.dump(report, open(path, "w"))
  experiments.run_table(experiments.load_table("ident"), [0], root)
  assert len(evaluated()) == 3


def test_every_results_table_names_configs_that_load(tmp_path):
  """Each table in configs/tables: rows, prerequisites and the recognizer are config specs that load (a typo in a
  row's override would otherwise surface hours into a table run; load_table itself refuses checks naming no row)."""
  names = experiments.available_tables()
  assert {"fhgan_table1", "ipfh_table7", "pcfh_table1", "vividgan_fig8", "vpgan_table5"} <= set(names)
  for name in names:
    table = experiments.load_table(name)
    for row in table.rows:
      config = run_files.load_config_file(experiments.run_for(str(tmp_path), row.config, 0, table).train_spec)
      assert config.seed == 0, (name, row.label)
    for _, spec in table.prerequisites + ((("recognizer", table.recognizer),) if table.recognizer else ()):
      run_files.load_config_file(experiments.with_options(spec, seed=0))
