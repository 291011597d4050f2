"""A results table's declaration and where its runs live: rows, the table, one run of a row and its evaluation.

A table file (``configs/tables/TABLE.py``) builds a :class:`Table` of :class:`Row` s; the runner
(``python -m hallujax.experiments``) trains each row's config once per seed under
``ROOT/runs/<slug of the spec>/seed_N`` (:func:`run_for`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

from hallujax import cli
from hallujax import run_files


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



SLUG_MAX = 160   # characters: a run directory's name and its ".evaluate.log" sibling stay under 255 bytes


def slug(spec: str) -> str:
  """configs/pcfh.py:smoke,ablation=wo_mic -> pcfh.smoke.ablation=wo_mic (a directory name). A longer spec (IPFH's
  learning recipe is 300 characters) keeps its first characters and gets a hash of the whole spec, so two specs
  never share a directory."""
  text = re.sub(r"^configs/", "", spec).replace(".py", "")
  name = re.sub(r"[^A-Za-z0-9_.=-]+", ".", text).strip(".")
  if len(name) <= SLUG_MAX:
    return name
  return f"{name[:SLUG_MAX - 11]}.{hashlib.sha256(spec.encode()).hexdigest()[:10]}"


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



def evaluation_path(run: Run) -> str | None:
  """The run's evaluation report at its final checkpoint, if written."""
  step = run_files.finished_step(run.workdir)
  if step is None:
    return None
  path = os.path.join(run.workdir, "eval", f"step_{step}_test.json")
  return path if os.path.isfile(path) else None

