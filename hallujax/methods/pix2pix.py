"""The pix2pix-style baseline of PCFH's Table 1 (paper 001, §4.3; Isola et al. 2017), a method of its own.

Trained on PCFH's NIR → VIS pairs with pix2pix's usual losses: a U-Net generator (``model.unet_depth``
levels: unet_256 at 256²) and a conditional PatchGAN that scores (I_N, VIS) pairs with the cross-entropy
GAN loss, and ``loss.pix2pix_l1`` (100, Isola et al.) · L1 to the unaligned VIS image I_V, the only target
the pairs give. Its state, frozen LightCNN, evaluation and image columns are PCFH's
(hallujax.methods.pcfh.Parts), so Table 1's rows compare like with like.

``configs/pcfh.py:...,ablation=pix2pix`` selects it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from hallujax.methods import MakeContext, Method
from hallujax.methods import pcfh
from hallujax.methods.train_state import TrainState, update_networks
from hallujax.models import pcfh as models
from hallujax.models.recognition import LightCNN29

TRAINED = ("generator", "discriminator")


def networks(config) -> dict:
  dtype = jnp.dtype(config.train.compute_dtype)
  return {"lightcnn": LightCNN29(dtype=dtype),   # frozen: the evaluation's identity figures
          "generator": models.UNetGenerator(3, config.model.features, config.model.unet_depth, dtype),
          "discriminator": pcfh.patch_critic(config, True)}


def train_step(l1_weight: float, parts: pcfh.Parts, state: TrainState, frozen, batch, rng):
  """D on real and generated (I_N, VIS) pairs, then G on the GAN loss + λ_L1·L1 to I_V."""
  del frozen, rng
  params, opt_state = state.params, state.opt_state
  discriminator = lambda p, nir, visible: parts.nets["discriminator"].apply(
      {"params": p}, jnp.concatenate([nir, visible], -1))
  fake = jax.lax.stop_gradient(pcfh.generate(parts, params, batch))

  def discriminator_loss(p):
    real_logits = discriminator(p, batch["input"], batch["target"])
    fake_logits = discriminator(p, batch["input"], fake)
    return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
                  + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))))
  loss_d, gradients = jax.value_and_grad(discriminator_loss)(params["discriminator"])
  params, opt_state = update_networks(parts.optimizers, params, opt_state, {"discriminator": gradients})

  def generator_loss(generator_params):
    output = pcfh.generate(parts, dict(params, generator=generator_params), batch)
    logits = discriminator(params["discriminator"], batch["input"], output)
    adversarial = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)))
    l1 = l1_weight * jnp.mean(jnp.abs(output - batch["target"]))
    return adversarial + l1, (adversarial, l1)
  (loss, (adversarial, l1)), gradients = jax.value_and_grad(generator_loss, has_aux=True)(params["generator"])
  params, opt_state = update_networks(parts.optimizers, params, opt_state, {"generator": gradients})
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), {
      "loss_discriminator": loss_d, "loss_generator": loss, "loss_adversarial": adversarial, "loss_l1": l1}


def make(config, context: MakeContext = MakeContext()) -> Method:
  return pcfh.make_baseline(config, context, networks(config), TRAINED, functools.partial(train_step, float(config.loss.pix2pix_l1)))
