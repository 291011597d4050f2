"""python -m hallujax.tools.vividgan_yaw --workdir RUN [--workdir RUN2 ...]: VividGAN's Table II, per yaw.

Paper 002 Table II: PSNR / SSIM of each method at each out-of-plane rotation
(±22°, ±40°, ±55°, ±75° on CelebA and MMI), VividGAN degrading least as the
angle grows. Here: the evaluation split of each VividGAN run given, scored per
face against its frontal target, grouped by the input's |yaw|, for three
columns of the run's ``hallucinate``: bicubic-of-LR, the coarse face
(VividGAN†, the coarse-level network alone) and VividGAN's output.

With the face world's discrete yaw set (``data.yaw_set``, the VividGAN
configs' default) each |yaw| of the set is a column of its own; with
continuous yaw, 15° buckets (as ``python -m hallujax.evaluate``'s
psnr_by_yaw). Several --workdir (seeds of one config) give mean ± std over
runs of each run's per-yaw mean. Writes ``--output`` (.md and .json) when
given; prints the table.

  python -m hallujax.tools.vividgan_yaw --workdir /tmp/vividgan_tiny [--split test] [--batches 64]
"""

from __future__ import annotations

import collections
import json

import numpy as np
from absl import flags

from hallujax import run_files
from hallujax import cli
from hallujax.scoring import yaw_groups
from hallujax.tools import vividgan_runs

FLAGS = flags.FLAGS
ROWS = {"bicubic": "bicubic", "coarse": "VividGAN† (coarse only)", "output": "VividGAN"}


def define_flags() -> None:
  flags.DEFINE_multi_string("workdir", [], "VividGAN run(s); several = seeds of one config (mean ± std).")
  flags.DEFINE_string("config", None, "Their config (default: each run's config.json).")
  flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Data split.")
  flags.DEFINE_integer("batches", None, "Batches of the split (default: config.train.eval_batches).")
  flags.DEFINE_string("output", None, "Also write OUTPUT.md and OUTPUT.json.")


def per_example_scores(config, workdir: str, split: str, batches: int | None) -> tuple[dict, np.ndarray]:
  """({column: {"psnr": (N,), "ssim": (N,)}}, yaw (N,)) of one run."""
  from hallujax.metrics import image_quality  # pylint: disable=import-outside-toplevel
  scores = {column: collections.defaultdict(list) for column in ROWS}
  yaws = []
  for host_batch, columns in vividgan_runs.run_columns(config, workdir, split, batches):
    yaws.append(np.asarray(host_batch["yaw"]))
    for column in ROWS:
      scores[column]["psnr"].append(np.asarray(image_quality.psnr_from_unit_range(columns[column], columns["target"])))
      scores[column]["ssim"].append(np.asarray(image_quality.ssim_from_unit_range(columns[column], columns["target"])))
  return ({column: {metric: np.concatenate(values) for metric, values in metrics.items()}
           for column, metrics in scores.items()}, np.concatenate(yaws))


def yaw_table(runs: list[tuple[object, str]], split: str = "test", batches: int | None = None) -> dict:
  """Per-yaw PSNR / SSIM of each row over the runs [(config, workdir), ...] (a dict, as the JSON file)."""
  per_run, labels = [], None
  for config, workdir in runs:
    scores, yaw = per_example_scores(config, workdir, split, batches)
    groups, run_labels = yaw_groups(yaw)
    if labels is not None and run_labels != labels:
      raise ValueError(f"{workdir}'s yaws group as {run_labels}, the first run's as {labels}: give runs of one config.")
    labels = run_labels
    per_run.append({ROWS[column]: {metric: [float(np.mean(values[groups == g])) for g in range(len(labels))]
                                   for metric, values in metrics.items()}
                    for column, metrics in scores.items()})
    per_run[-1]["examples per yaw"] = [int(np.sum(groups == g)) for g in range(len(labels))]
  summary = {}
  for name in ROWS.values():
    summary[name] = {}
    for metric in ("psnr", "ssim"):
      values = np.array([run[name][metric] for run in per_run])   # (runs, yaws)
      summary[name][metric] = {"mean": values.mean(axis=0).tolist(),
                               "std": (values.std(axis=0, ddof=1) if len(per_run) > 1 else np.full(len(labels), np.nan)).tolist()}
  return {"workdirs": [workdir for _, workdir in runs], "split": split, "yaws": labels,
          "examples_per_yaw": per_run[0]["examples per yaw"], "per_run": per_run, "rows": summary}


def markdown(report: dict) -> str:
  yaws = report["yaws"]
  lines = ["# VividGAN PSNR / SSIM per yaw (paper 002, Table II)", "",
           "| row | " + " | ".join(yaws) + " |", "|---" * (len(yaws) + 1) + "|"]
  for name, row in report["rows"].items():
    cells = []
    for k in range(len(yaws)):
      cell = f"{row['psnr']['mean'][k]:.2f} / {row['ssim']['mean'][k]:.3f}"
      if not np.isnan(row["psnr"]["std"][k]):
        cell += f" (± {row['psnr']['std'][k]:.2f} dB)"
      cells.append(cell)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", f"- PSNR [dB] / SSIM against the frontal target, {report['split']!r} split; faces per yaw (first "
            f"run): {', '.join(map(str, report['examples_per_yaw']))}.",
            f"- Runs: {', '.join(report['workdirs'])}" + (" (mean; ± is the std of PSNR over runs)."
                                                           if len(report["workdirs"]) > 1 else ".")]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise cli.UserError("Give --workdir=RUN (one or more VividGAN runs).")
  runs = [(run_files.load_config_file(FLAGS.config) if FLAGS.config else run_files.read_run_config(workdir), workdir)
          for workdir in FLAGS.workdir]
  for config, workdir in runs:
    if config.method != "vividgan":
      raise cli.UserError(f"{workdir} is a {config.method!r} run; this tool reads VividGAN runs.")
  cli.prepare_run(runs[0][0])
  report = yaw_table(runs, FLAGS.split, FLAGS.batches)
  text = markdown(report)
  print(text)
  if FLAGS.output:
    with open(FLAGS.output + ".md", "w") as f:
      f.write(text)
    with open(FLAGS.output + ".json", "w") as f:
      json.dump(report, f, indent=2)
    print(f"Wrote {FLAGS.output}.md and .json.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
