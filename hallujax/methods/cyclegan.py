"""The CycleGAN-style baseline of PCFH's Table 1 (paper 001, §4.3; Zhu et al. 2017), a method of its own.

Trained on PCFH's NIR → VIS pairs with CycleGAN's usual losses: two ResNet generators (NIR → VIS and
VIS → NIR, PCFH's G_B), two PatchGANs, the least squares GAN loss (halved for the discriminators, as
CycleGAN does) and ``loss.cycle`` (10, Zhu et al.) · the cycle L1 in both directions; no identity loss,
which needs equal channel counts. Its state, frozen LightCNN, evaluation and image columns are PCFH's
(hallujax.methods.pcfh.Parts), so Table 1's rows compare like with like.

``configs/pcfh.py:...,ablation=cyclegan`` selects it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hallujax.methods import MakeContext, Method
from hallujax.methods import pcfh
from hallujax.methods.train_state import TrainState, update_networks
from hallujax.models.recognition import LightCNN29

TRAINED = ("generator", "auxiliary", "critic", "critic_nir")


def networks(config) -> dict:
  """generator: NIR → VIS, auxiliary: VIS → NIR; critic scores VIS images, critic_nir NIR ones."""
  return {"lightcnn": LightCNN29(dtype=jnp.dtype(config.train.compute_dtype)),   # frozen: the evaluation's
          "generator": pcfh.resnet_generator(config, 3),
          "auxiliary": pcfh.resnet_generator(config, config.data.input_channels),
          "critic": pcfh.patch_critic(config, True), "critic_nir": pcfh.patch_critic(config, True)}


def train_step(cycle_weight: float, parts: pcfh.Parts, state: TrainState, frozen, batch, rng):
  """Both critics, then both generators on the LSGAN loss + λ_cyc·(both cycles' L1)."""
  del frozen, rng
  params, opt_state = state.params, state.opt_state
  nir, visible = batch["input"], batch["target"]
  apply = lambda name, p, x: parts.nets[name].apply({"params": p}, x)
  fake_visible = jax.lax.stop_gradient(apply("generator", params["generator"], nir))
  fake_nir = jax.lax.stop_gradient(apply("auxiliary", params["auxiliary"], visible))

  def critics_loss(critic_params):   # least squares GAN, halved as CycleGAN does
    loss_visible = 0.5 * (jnp.mean(jnp.square(apply("critic", critic_params["critic"], visible) - 1.0))
                          + jnp.mean(jnp.square(apply("critic", critic_params["critic"], fake_visible))))
    loss_nir = 0.5 * (jnp.mean(jnp.square(apply("critic_nir", critic_params["critic_nir"], nir) - 1.0))
                      + jnp.mean(jnp.square(apply("critic_nir", critic_params["critic_nir"], fake_nir))))
    return loss_visible + loss_nir
  loss_d, gradients = jax.value_and_grad(critics_loss)(
      {"critic": params["critic"], "critic_nir": params["critic_nir"]})
  params, opt_state = update_networks(parts.optimizers, params, opt_state, gradients)

  def generators_loss(generator_params):
    to_visible = lambda x: apply("generator", generator_params["generator"], x)
    to_nir = lambda x: apply("auxiliary", generator_params["auxiliary"], x)
    output, nir_output = to_visible(nir), to_nir(visible)
    adversarial = (jnp.mean(jnp.square(apply("critic", params["critic"], output) - 1.0))
                   + jnp.mean(jnp.square(apply("critic_nir", params["critic_nir"], nir_output) - 1.0)))
    cycle = cycle_weight * (jnp.mean(jnp.abs(to_nir(output) - nir)) + jnp.mean(jnp.abs(to_visible(nir_output) - visible)))
    return adversarial + cycle, (adversarial, cycle)
  (loss, (adversarial, cycle)), gradients = jax.value_and_grad(generators_loss, has_aux=True)(
      {"generator": params["generator"], "auxiliary": params["auxiliary"]})
  params, opt_state = update_networks(parts.optimizers, params, opt_state, gradients)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), {
      "loss_critics": loss_d, "loss_generator": loss, "loss_adversarial": adversarial, "loss_cycle": cycle}


def make(config, context: MakeContext = MakeContext()) -> Method:
  return pcfh.make_baseline(config, context, networks(config), TRAINED, functools.partial(train_step, float(config.loss.cycle)))
