"""python -m hallujax.evaluate --workdir RUN [--config configs/<method>.py[:variant]] [--step N] [--split test]

Restores the run's latest (or given) checkpoint, hallucinates the config's
evaluation split and writes, under ``RUN/eval/``. Without --config the run's
own resolved config (``RUN/config.json``) is used, overrides included:

* ``step_<N>_<split>.json``: every number below, per row;
* ``step_<N>_<split>.md``: a markdown table, one row per output column of the
  method's ``hallucinate`` (its "output", the "bicubic" baseline, and any
  intermediate result such as a coarse stage), plus one row per run given
  with ``--compare`` (other checkpoints of the same config);
* ``step_<N>_<split>_hardest.png`` / ``_easiest.png``: image grids of the
  examples with the lowest and highest output PSNR.

Columns: PSNR and SSIM on 0-255 images, RGB and Y channel
(``hallujax.metrics.image_quality``); LPIPS (VGG, v0.1) with ``--lpips_weights``
and ``--lpips_vgg16`` (local files; nothing is downloaded); with a recognizer (an in-project ArcFace
run, ``--recognizer_config`` + ``--recognizer_workdir``, insightface
arcface_torch weights, ``--arcface_weights``, or LightCNN-29 v2 weights,
``--lightcnn_weights``, the recognizer papers 000 and 001 report with): the mean cosine similarity of
hallucinated and ground-truth embeddings, verification AUC and VR at FAR = 1%
and 0.1% over all (hallucinated, ground truth) pairs, verification accuracy
by LFW's 10-fold protocol on up to 3,000 + 3,000 genuine / impostor pairs, and
Rank-1 / Rank-5 identification of the hallucinated faces against a gallery of
one ground-truth image per identity (``hallujax.metrics.identity``). When the
input is an image at the target's size (PCFH's NIR), the recognizer on the raw
input is a row ("input"), and each result row adds PCFH's fused Rank-1. Where the
data carry a yaw angle, PSNR / SSIM per 15° yaw bucket too (VividGAN's table).
The method's own ``eval_step`` values are averaged and reported as well.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from hallujax import run_files
from hallujax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (so the module imports anywhere)."""
  config_flags.DEFINE_config_file("config", None, "Method config file, e.g. configs/fhgan.py:smoke "
                                  "(default: the run's config.json).", lock_config=False)
  flags.DEFINE_string("workdir", None, "The run to evaluate (its checkpoints/ directory).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Data split to evaluate on.")
  flags.DEFINE_integer("batches", None, "Batches to evaluate (default: config.train.eval_batches).")
  flags.DEFINE_multi_string("compare", [], "Other runs of the same config to add as rows.")
  flags.DEFINE_string("recognizer_config", None, "ArcFace config (configs/arcface.py[:variant]).")
  flags.DEFINE_string("recognizer_workdir", None, "ArcFace run trained with that config.")
  flags.DEFINE_string("arcface_weights", None, "insightface arcface_torch backbone.pth.")
  flags.DEFINE_string("lightcnn_weights", None, "LightCNN_29Layers_V2_checkpoint.pth.tar (papers 000 and 001).")
  flags.DEFINE_list("arcface_stages", ["3", "4", "6", "3"], "iResNet stage sizes of those weights.")
  flags.DEFINE_string("lpips_weights", None, "LPIPS column: the lpips package's weights/v0.1/vgg.pth ...")
  flags.DEFINE_string("lpips_vgg16", None, "... and torchvision's vgg16-397923af.pth.")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise cli.UserError("Give --workdir=RUN, the training run to evaluate (see --help).")
  config = FLAGS.config if FLAGS.config is not None else run_files.read_run_config(FLAGS.workdir)
  cli.prepare_run(config)
  recognizer = None
  from hallujax import scoring
  if FLAGS.recognizer_workdir:
    if not FLAGS.recognizer_config:
      raise cli.UserError("--recognizer_workdir needs --recognizer_config (the config it was trained with).")
    recognizer = scoring.in_project_recognizer(FLAGS.recognizer_config, FLAGS.recognizer_workdir)
  elif FLAGS.arcface_weights:
    recognizer = scoring.arcface_torch_recognizer(FLAGS.arcface_weights, tuple(int(s) for s in FLAGS.arcface_stages))
  elif FLAGS.lightcnn_weights:
    recognizer = scoring.lightcnn_recognizer(FLAGS.lightcnn_weights)
  lpips = scoring.lpips_scorer(FLAGS.lpips_weights, FLAGS.lpips_vgg16) if FLAGS.lpips_weights else None
  report = scoring.evaluate(config, FLAGS.workdir, step=FLAGS.step, split=FLAGS.split, batches=FLAGS.batches,
                               compare=tuple(FLAGS.compare), recognizer=recognizer, lpips=lpips)
  print(open(report["files"] + ".md").read())
  print(f"Wrote {report['files']}.json, .md and image grids.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
