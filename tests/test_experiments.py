"""The results-table runner: statistics, resumability, the report and the paper-ordering verdict.

Training and evaluation are subprocesses in real use; here `run_logged` is replaced by a fake that
writes what those commands would (a checkpoint directory, an evaluation report), so the runner's
own logic is tested in seconds.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import stats

from hallujax import experiments

SPEC = "configs/arcface.py:smoke,train.steps=3"
OTHER = "configs/arcface.py:smoke,train.steps=3,loss.margin=0.3"


def write_table_file(directory, order=("A", "B")):
  (directory / "toy.py").write_text(f'''
from hallujax.experiments import Row, Table
def table():
  return Table(name="toy", title="Toy table", paper="none", budget="3 steps",
               rows=(Row("A", "{SPEC}"), Row("B", "{OTHER}"), Row("bicubic", "{SPEC}", column="bicubic"),
                     Row("A's own", "{SPEC}", from_eval_step=(("psnr", "own_psnr"),))),
               metrics=("psnr", "rank1"), order={order!r}, order_metric="psnr", eval_examples=40, recognizer="")
''')


class FakeCommands:
  """Stands in for the train / evaluate subprocesses; PSNR is 20 + seed for A, less 1.0, 0.1, 0.1 for B."""

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
      psnr = 20.0 + seed - ((1.0, 0.1, 0.1)[seed] if "margin" in workdir else 0.0)
      report = {"workdir": workdir, "eval_step": {"rank1": 0.5, "own_psnr": 30.0 + seed},
                "rows": {f"seed_{seed}": {"psnr": psnr}, "bicubic": {"psnr": 10.0}}}
      os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
      with open(os.path.join(workdir, "eval", "step_3_test.json"), "w") as f:
        json.dump(report, f)
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
  assert saved["per_seed"]["A"]["rank1"] == [0.5, 0.5, 0.5]   # read from eval_step when the row lacks it


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
  assert "- A seed 1: no evaluation" in markdown and "- B seed 1" not in markdown
  assert "A > B on psnr: one seed: the paper's way — 1/1 seeds, mean paired difference +1.000" in markdown
  with pytest.raises(experiments.cli.UserError, match="'C' is not a row of toy"):
    experiments.selected_rows(table, ["A", "C"])


def test_rows_read_the_columns_evaluate_writes():
  report = {"workdir": "/runs/x/seed_0", "eval_step": {"psnr": 1.0},
            "rows": {"seed_0": {"psnr": 12.0}, "input": {"psnr": 5.0}, "bicubic": {"psnr": 7.0},
                     "seed_0:warped": {"psnr": 9.0}}}
  read = lambda column: experiments.row_values(report, experiments.Row("r", SPEC, column=column), ("psnr",))
  assert [read(c)["psnr"] for c in ("output", "input", "bicubic", "warped")] == [12.0, 5.0, 7.0, 9.0]


def test_verdicts_separate_direction_from_noise():
  assert experiments.verdict([1.0, 1.1, 0.9]) == "holds"
  assert experiments.verdict([-1.0, -1.1, -0.9]) == "reversed"
  assert experiments.verdict([0.1, 2.0, 0.1]) == "holds in every seed, within noise"
  assert experiments.verdict([0.5, -0.5, 0.0]) == "mixed (1 seeds the paper's way, 1 the other, 1 tied)"
  assert experiments.verdict([-0.2]) == "one seed: the other way"   # no spread, no verdict


def test_failed_runs_are_listed_and_retried(toy, monkeypatch):
  root, _ = toy
  table = experiments.load_table("toy")
  failing = FakeCommands(fail={"margin"})
  monkeypatch.setattr(experiments, "run_logged", failing)
  failures = experiments.run_table(table, [0], str(root / "runs_root"))
  assert failures == [f"{OTHER} seed 0"]
  markdown = experiments.write_report(table, [0], str(root / "runs_root"), str(root / "out"), "cmd", None)
  assert "## Missing" in markdown and "B seed 0: no evaluation" in markdown
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


def test_prerequisite_runs_are_trained_first_and_named_in_row_configs(tmp_path, monkeypatch):
  tables = tmp_path / "tables"
  tables.mkdir()
  (tables / "needs.py").write_text(f'''
from hallujax.experiments import Row, Table
def table():
  return Table(name="needs", title="t", paper="none", budget="b", recognizer="",
               prerequisites=(("prior", "{OTHER}"),), rows=(Row("A", "{SPEC},data.data_dir={{prior}}"),))
''')
  monkeypatch.setattr(experiments, "TABLES_DIRECTORY", str(tables))
  fake = FakeCommands()
  monkeypatch.setattr(experiments, "run_logged", fake)
  table = experiments.load_table("needs")
  experiments.run_table(table, [0], str(tmp_path / "root"))
  prerequisite_workdir = str(tmp_path / "root" / "runs" / experiments.slug(OTHER) / "seed_0")
  first, second = fake.commands[0], fake.commands[1]
  assert first[first.index("--workdir") + 1] == prerequisite_workdir
  assert f"data.data_dir={prerequisite_workdir}" in second[second.index("--config") + 1]
  # The row's run directory is named after the spec as written, not after where the prerequisite lives.
  assert second[second.index("--workdir") + 1].endswith("data.data_dir=.prior/seed_0")
