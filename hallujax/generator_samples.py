"""The sampling behind ``python -m hallujax.sample``: --config configs/stylegan2.py --workdir RUN --num 16 [--truncation 0.7] --out grid.png

Writes a PNG grid of StyleGAN2 samples from the EMA generator of a training
run (its latest checkpoint, or --step), or, with --checkpoint, from a public
PyTorch file (rosinality `.pt` or an exported stylegan2-ada-pytorch state
dict; hallujax.convert.stylegan2), in which case --workdir is not needed and
the architecture is read from the file. Noise maps are the fixed buffers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging


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
  from hallujax import run_setup
  from hallujax.methods import stylegan2
  if config.method != "stylegan2":
    raise ValueError(f"--config names method {config.method!r}; sampling needs a StyleGAN2 config.")
  _, state, restored_step = run_setup.restore_run(config, workdir, step)
  print(f"Sampling {workdir} at step {restored_step}.")
  generator, _ = stylegan2.networks(config)
  return generator, {"params": state.generator_ema, "buffers": state.buffers}


def sample(generator, variables, num: int, truncation: float, seed: int, batch_size: int = 16) -> np.ndarray:
  """`num` images (NHWC, [-1, 1]) from latents drawn with `seed`."""
  z = np.random.default_rng(seed).standard_normal((num, generator.style_dim)).astype(np.float32)
  run = jax.jit(lambda v, z: jnp.clip(generator.apply(v, z, truncation=truncation, noise_mode="const"), -1, 1))
  return np.concatenate([np.asarray(run(variables, z[i:i + batch_size])) for i in range(0, num, batch_size)])
