"""python -m hallujax.tools.vividgan_expression: VividGAN's Table VII (expression accuracy), in-project.

  python -m hallujax.tools.vividgan_expression \\
      --vividgan_workdir RUN [--vividgan_config configs/vividgan.py:tiny] \\
      --expression_workdir CLASSIFIER_RUN [--expression_config configs/expression.py:tiny] \\
      [--split test] [--batches N]

Paper 002 §VI-B: the expression of faces hallucinated from non-frontal LR
inputs is classified by an expression network trained on frontal HR faces;
the rows are the hallucinated faces, the LR inputs upsampled by bicubic
interpolation and the ground-truth frontal HR faces (Table VII: bicubic
26-28%, VividGAN 88.53%, frontal HR 94.62% on MMI). Here the classifier is an
in-project run of configs/expression.py (trained on another face world's
frontal faces, so the people here are unseen) and the faces are the VividGAN
run's evaluation split; each example's label is the face world's "expression"
(the input's and the target's: frontalize keeps the expression).

Rows: ground truth (frontal HR), VividGAN (the run's output), coarse
(VividGAN†, the coarse-level network alone) and non-frontal LR (bicubic), each
with its accuracy and its confusion matrix (Fig. 14; rows true, columns
predicted, in hallujax.data.faceworld.EXPRESSIONS' order). Faces at another
size than the classifier's are resized bilinearly. Writes
``RUN/eval/expression_step_<N>_<split>.json`` and ``.md`` and prints the table.
Without --*_config each run's own config.json is used.
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from hallujax import run_files
from hallujax import cli
from hallujax.tools import vividgan_runs

FLAGS = flags.FLAGS

# hallucinate() column -> Table VII's row
ROWS = {"target": "frontal HR (ground truth)", "output": "VividGAN", "coarse": "VividGAN† (coarse only)",
        "bicubic": "non-frontal LR (bicubic)"}


def define_flags() -> None:
  flags.DEFINE_string("vividgan_workdir", None, "The VividGAN run whose outputs are classified.")
  flags.DEFINE_string("vividgan_config", None, "Its config (default: the run's config.json).")
  flags.DEFINE_string("expression_workdir", None, "A run of configs/expression.py (the classifier).")
  flags.DEFINE_string("expression_config", None, "Its config (default: the run's config.json).")
  flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "The VividGAN run's data split.")
  flags.DEFINE_integer("batches", None, "Batches of that split (default: its config.train.eval_batches).")


def confusion(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
  """counts[i, j]: examples of class i predicted as j."""
  counts = np.zeros((classes, classes), np.int64)
  np.add.at(counts, (true, predicted), 1)
  return counts


def expression_table(vividgan_config, vividgan_workdir: str, expression_config, expression_workdir: str, *,
                     split: str = "test", batches: int | None = None) -> dict:
  """Table VII's rows for one VividGAN run and one expression classifier run (a dict, as the JSON file)."""
  import jax  # pylint: disable=import-outside-toplevel
  from hallujax import run_setup  # pylint: disable=import-outside-toplevel
  from hallujax.data.faceworld import EXPRESSIONS  # pylint: disable=import-outside-toplevel
  from hallujax.methods import get_method  # pylint: disable=import-outside-toplevel

  module = get_method(expression_config.method)
  if not hasattr(module, "classify_function"):
    raise ValueError(f"--expression_config names method {expression_config.method!r}, which has no "
                     "classify_function(); train configs/expression.py.")
  _, classifier_state, classifier_step = run_setup.restore_run(expression_config, expression_workdir)
  classify = jax.jit(module.classify_function(expression_config))

  if vividgan_config.data.source != "faceworld":
    raise ValueError(f"config.data.source={vividgan_config.data.source!r} gives no 'expression' labels; "
                     "Table VII needs them (the face world has them).")
  labels, predictions = [], {column: [] for column in ROWS}
  for host_batch, columns in vividgan_runs.run_columns(vividgan_config, vividgan_workdir, split, batches):
    labels.append(np.asarray(host_batch["expression"]))
    for column in ROWS:
      logits = classify(classifier_state, columns[column])
      predictions[column].append(np.asarray(jax.device_get(logits)).argmax(axis=-1))
  labels = np.concatenate(labels)
  rows = {}
  for column, name in ROWS.items():
    predicted = np.concatenate(predictions[column])
    rows[name] = {"accuracy": float(np.mean(predicted == labels)),
                  "confusion": confusion(labels, predicted, len(EXPRESSIONS)).tolist()}
  majority = float(np.max(np.bincount(labels, minlength=len(EXPRESSIONS))) / len(labels))
  return {"vividgan_workdir": str(vividgan_workdir), "vividgan_step": vividgan_runs.restored_step(vividgan_workdir),
          "split": split, "examples": int(len(labels)), "expression_workdir": str(expression_workdir),
          "expression_step": classifier_step, "expressions": list(EXPRESSIONS),
          "majority_class_share": majority, "rows": rows}


def markdown(report: dict) -> str:
  lines = ["# Expression classification of VividGAN's outputs (paper 002, Table VII)", "",
           "| row | accuracy |", "|---|---|"]
  lines += [f"| {name} | {100 * row['accuracy']:.2f}% |" for name, row in report["rows"].items()]
  lines += ["", f"- {report['examples']} faces of the {report['split']!r} split of {report['vividgan_workdir']} "
            f"(step {report['vividgan_step']}); classifier {report['expression_workdir']} "
            f"(step {report['expression_step']}).",
            f"- Always naming the most frequent expression scores {100 * report['majority_class_share']:.2f}%.",
            f"- Confusion matrices (rows true, columns predicted; {', '.join(report['expressions'])}) are in "
            "the JSON file."]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.vividgan_workdir or not FLAGS.expression_workdir:
    raise cli.UserError("Give --vividgan_workdir=RUN and --expression_workdir=CLASSIFIER_RUN (see --help).")
  vividgan_config = (run_files.load_config_file(FLAGS.vividgan_config) if FLAGS.vividgan_config
                     else run_files.read_run_config(FLAGS.vividgan_workdir))
  expression_config = (run_files.load_config_file(FLAGS.expression_config) if FLAGS.expression_config
                       else run_files.read_run_config(FLAGS.expression_workdir))
  cli.prepare_run(vividgan_config)
  report = expression_table(vividgan_config, FLAGS.vividgan_workdir, expression_config, FLAGS.expression_workdir,
                            split=FLAGS.split, batches=FLAGS.batches)
  from etils import epath  # pylint: disable=import-outside-toplevel
  directory = epath.Path(FLAGS.vividgan_workdir) / "eval"
  directory.mkdir(parents=True, exist_ok=True)
  stem = directory / f"expression_step_{report['vividgan_step']}_{report['split']}"
  text = markdown(report)
  stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
  stem.with_suffix(".md").write_text(text)
  print(text)
  print(f"Wrote {stem}.json and .md.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
