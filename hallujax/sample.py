"""python -m hallujax.sample --config configs/stylegan2.py --workdir RUN --num 16 [--truncation 0.7] --out grid.png

Writes a PNG grid of StyleGAN2 samples from the EMA generator of a training
run (its latest checkpoint, or --step), or, with --checkpoint, from a public
PyTorch file (rosinality `.pt` or an exported stylegan2-ada-pytorch state
dict; hallujax.convert.stylegan2), in which case --workdir is not needed and
the architecture is read from the file. Noise maps are the fixed buffers.
"""

from __future__ import annotations

import math

from absl import flags
from ml_collections import config_flags

from hallujax import run_files
from hallujax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (so the module imports anywhere)."""
  config_flags.DEFINE_config_file("config", None, "StyleGAN2 config, e.g. configs/stylegan2.py "
                                  "(default with --workdir: the run's config.json).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint to sample.")
  flags.DEFINE_string("checkpoint", None, "A rosinality .pt or stylegan2-ada state dict instead.")
  flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the latest).")
  flags.DEFINE_integer("num", 16, "Number of samples.")
  flags.DEFINE_float("truncation", 1.0, "Truncation ψ (1 = none; 0.5-0.7 for cleaner faces).")
  flags.DEFINE_integer("seed", 0, "Seed of the latents.")
  flags.DEFINE_integer("columns", 0, "Images per grid row (0: about √num).")
  flags.DEFINE_string("out", "samples.png", "Output PNG path.")
  flags.DEFINE_bool("allow_pickle", False, "Let torch.load unpickle non-tensor objects "
                    "(training checkpoints with an 'args' entry). Only for files you trust.")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from hallujax import images, generator_samples
  if FLAGS.checkpoint:
    generator, variables = generator_samples.generator_from_checkpoint(FLAGS.checkpoint, FLAGS.config,
                                                              FLAGS.allow_pickle, FLAGS.truncation)
  elif FLAGS.workdir:
    config = FLAGS.config if FLAGS.config is not None else run_files.read_run_config(FLAGS.workdir)
    generator, variables = generator_samples.generator_from_run(config, FLAGS.workdir, FLAGS.step)
  else:
    raise cli.UserError("Give --workdir (a training run), or --checkpoint (a PyTorch file).")
  samples = generator_samples.sample(generator, variables, FLAGS.num, FLAGS.truncation, FLAGS.seed)
  columns = FLAGS.columns or math.ceil(math.sqrt(FLAGS.num))
  out = images.write_grid(FLAGS.out, images.mosaic(samples, columns))
  print(f"Wrote {out} ({FLAGS.num} samples, {generator.resolution}², truncation {FLAGS.truncation}).")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
