"""python -m hallujax.sample --config configs/stylegan2.py --workdir RUN --num 16 [--truncation 0.7] --out grid.png

Writes a PNG grid of StyleGAN2 samples from the EMA generator of a training
run (its latest checkpoint, or --step), or, with --checkpoint, from a public
PyTorch file (rosinality `.pt` or an exported stylegan2-ada-pytorch state
dict; hallujax.convert.stylegan2), in which case --workdir is not needed and
the architecture is read from the file. Noise maps are the fixed buffers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags
from PIL import Image

from hallujax.cli import parse_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined only when it runs as a command (so the module imports anywhere)."""
  config_flags.DEFINE_config_file("config", None, "StyleGAN2 config, e.g. configs/stylegan2.py.",
                                  lock_config=True)
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


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
  """uint8 grid of NHWC images in [-1, 1], `columns` per row, black where the last row is short."""
  from hallujax.data.pipeline import to_uint8
  images = to_uint8(images)
  count, height, width, channels = images.shape
  rows = math.ceil(count / columns)
  grid = np.zeros((rows * height, columns * width, channels), np.uint8)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
  return grid


def generator_from_checkpoint(path: str, config, allow_pickle: bool, truncation: float):
  """(Generator, variables) of a PyTorch file, w_avg estimated when the file carries none."""
  from hallujax.convert.stylegan2 import estimate_w_avg, load_checkpoint
  from hallujax.models.stylegan2 import Generator
  loaded = load_checkpoint(path, allow_pickle=allow_pickle)
  if "architecture" not in loaded:
    raise ValueError(f"{path} holds a discriminator only; sampling needs a generator ('g_ema' or 'g').")
  dtype = jnp.dtype(config.train.compute_dtype) if config is not None else jnp.float32
  generator = Generator(**loaded["architecture"], dtype=dtype)
  variables = loaded.get("generator_ema") or loaded["generator"]
  if loaded["w_avg_source"] == "none" and truncation != 1:
    logging.warning("%s has no latent_avg: estimating the truncation centre from 4096 mapped latents.", path)
    variables["buffers"]["mapping"]["w_avg"] = estimate_w_avg(generator, variables["params"], variables["buffers"])
  return generator, variables


def generator_from_run(config, workdir: str, step: int | None):
  """(Generator, EMA variables) of a training run's checkpoint."""
  from hallujax import trainer
  from hallujax.methods import stylegan2
  if config.method != "stylegan2":
    raise ValueError(f"--config names method {config.method!r}; sampling needs a StyleGAN2 config.")
  _, state, restored_step, _ = trainer.restore_run(config, workdir, step)
  print(f"Sampling {workdir} at step {restored_step}.")
  generator, _ = stylegan2.networks(config)
  return generator, {"params": state.generator_ema, "buffers": state.buffers}


def sample(generator, variables, num: int, truncation: float, seed: int, batch_size: int = 16) -> np.ndarray:
  """`num` images (NHWC, [-1, 1]) from latents drawn with `seed`."""
  z = np.random.default_rng(seed).standard_normal((num, generator.style_dim)).astype(np.float32)
  run = jax.jit(lambda v, z: jnp.clip(generator.apply(v, z, truncation=truncation, noise_mode="const"), -1, 1))
  return np.concatenate([np.asarray(run(variables, z[i:i + batch_size])) for i in range(0, num, batch_size)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.checkpoint:
    generator, variables = generator_from_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.allow_pickle,
                                                     FLAGS.truncation)
  elif FLAGS.workdir and FLAGS.config is not None:
    generator, variables = generator_from_run(FLAGS.config, FLAGS.workdir, FLAGS.step)
  else:
    raise app.UsageError("Give --config and --workdir (a training run), or --checkpoint (a PyTorch file).")
  images = sample(generator, variables, FLAGS.num, FLAGS.truncation, FLAGS.seed)
  columns = FLAGS.columns or math.ceil(math.sqrt(FLAGS.num))
  out = epath.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("wb") as f:
    Image.fromarray(image_grid(images, columns)).save(f, format="PNG")
  print(f"Wrote {out} ({FLAGS.num} samples, {generator.resolution}², truncation {FLAGS.truncation}).")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
