"""FH-GAN (Bayramli et al., paper 003): DSNet + WGAN-GP critic + a jointly trained ArcFace.

Two phases, two step variants (the trainer compiles each once and picks by step number):

* pretraining (``step < train.pretrain_steps``), paper §4.1: DSNet alone with
  the pixel loss (Eq. 4), Adam, lr 1e-3 decayed to 1e-5. The paper trains
  ArcFace beforehand on HR faces (lr 0.01, SGD); here it trains on the HR
  faces during this phase, unless ``weights.arcface`` gives a trained one.
* joint training, paper §4.1 "all networks (DSNet, discriminator and ArcFace)
  were trained jointly ... learning rate of 1e-4": per step one critic update
  (Eq. 6, WGAN-GP), one generator update on λ1·pixel + λ2·perceptual +
  λ3·WGAN + λ4·identity (Eq. 10), one recognizer update with ArcFace on the
  concatenation of HR and SR images (Eq. 8).

The perceptual network (VGG-19, Eq. 5) is frozen; its weights come from
``weights.vgg19`` (torchvision's checkpoint) or, with none given, stay random
and the log says so.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax.metrics import image_quality
from hallujax.models.dsnet import Critic, DSNet
from hallujax.models.recognition import MarginHead, ResNetFace, additive_angular_margin_from_cosines
from hallujax.models.vgg import VGG19
from hallujax.nn.initialization import init_variables
from hallujax.nn.resampling import upsample_bicubic

TRAINED = ("generator", "critic", "recognizer", "margin_head")


@flax.struct.dataclass
class FHGANState:
  step: jax.Array
  params: dict        # trained networks: generator, critic, recognizer, margin_head
  batch_stats: dict   # recognizer BatchNorm statistics
  opt_state: dict     # one optax state per trained network
  frozen: dict        # perceptual: VGG-19 parameters, never updated


# ----------------------------------------------------------------------------- networks


def networks(config) -> dict[str, nn.Module]:
  dtype = jnp.dtype(config.train.compute_dtype)
  m = config.model
  return dict(
      generator=DSNet(scale=config.data.target_size // config.data.input_size, features=m.features,
                      blocks=m.blocks, layers_per_block=m.layers_per_block, growth=m.growth,
                      bottleneck=m.bottleneck, upsample_features=m.upsample_features, dtype=dtype),
      critic=Critic(features=m.critic_features, dtype=dtype),
      recognizer=ResNetFace(stage_sizes=tuple(m.recognizer_stages), widths=tuple(m.recognizer_widths),
                            embedding_dim=m.embedding_dim, dtype=dtype),
      margin_head=MarginHead(num_classes=config.data.num_identities),
      perceptual=VGG19(dtype=dtype),
  )


def optimizers(config) -> dict[str, optax.GradientTransformation]:
  """Paper 003 §4.1: Adam for DSNet and the critic, SGD for ArcFace; schedules per phase."""
  t = config.train
  pretrain = max(t.pretrain_steps, 1)
  generator_lr = optax.join_schedules(
      [optax.exponential_decay(t.generator_lr, pretrain, t.generator_final_lr / t.generator_lr),
       optax.constant_schedule(t.joint_lr)], [t.pretrain_steps])
  recognizer_lr = optax.join_schedules(
      [optax.constant_schedule(t.recognizer_lr), optax.constant_schedule(t.joint_lr)], [t.pretrain_steps])
  recognizer = optax.chain(optax.add_decayed_weights(t.recognizer_weight_decay),
                           optax.sgd(recognizer_lr, momentum=0.9))
  return dict(
      generator=optax.adam(generator_lr),
      # WGAN-GP's Adam settings (Gulrajani et al.: β1=0, β2=0.9); paper 003 names only Adam.
      critic=optax.adam(t.joint_lr, b1=0.0, b2=0.9),
      recognizer=recognizer,
      margin_head=recognizer,
  )


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  d = config.data
  if d.target_size % d.input_size:
    raise ValueError(f"config.data.target_size={d.target_size} must be a multiple of input_size={d.input_size}.")
  return {
      "input": jax.ShapeDtypeStruct((d.input_size, d.input_size, 3), jnp.float32),
      "target": jax.ShapeDtypeStruct((d.target_size, d.target_size, 3), jnp.float32),
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }


def load_pretrained(config, nets: dict, params: dict, frozen: dict, batch_stats: dict) -> None:
  """Replaces initial weights by the files `config.weights` names; says so loudly when it names none."""
  vgg_path = config.weights.get("vgg19", "")
  if vgg_path:
    from hallujax.convert.torchvision import load_vgg19
    frozen["perceptual"] = load_vgg19(vgg_path)
    logging.info("Perceptual network: VGG-19 weights from %s", vgg_path)
  else:
    logging.warning("config.weights.vgg19 is empty: the perceptual loss (paper 003 Eq. 5) uses a RANDOMLY "
                    "INITIALIZED VGG-19. Give torchvision's vgg19 checkpoint with --config.weights.vgg19=PATH.")
  arcface_path = config.weights.get("arcface", "")
  if arcface_path:
    from hallujax.convert.arcface import load_arcface
    variables = load_arcface(arcface_path, nets["recognizer"], config.data.target_size)
    params["recognizer"], batch_stats["recognizer"] = variables["params"], variables["batch_stats"]
    logging.info("Recognizer: ArcFace weights from %s", arcface_path)
  else:
    logging.warning("config.weights.arcface is empty: ArcFace starts from random weights and is trained on "
                    "the HR faces during DSNet pretraining.")


def init_state(config, rng, batch) -> FHGANState:
  nets = networks(config)
  keys = dict(zip(nets, jax.random.split(rng, len(nets))))
  lr, hr = jnp.asarray(batch["input"]), jnp.asarray(batch["target"])
  recognizer_variables = init_variables(nets["recognizer"], keys["recognizer"], hr, train=False)
  embeddings = jnp.zeros((1, config.model.embedding_dim))
  params = dict(
      generator=init_variables(nets["generator"], keys["generator"], lr)["params"],
      critic=init_variables(nets["critic"], keys["critic"], hr)["params"],
      recognizer=recognizer_variables["params"],
      margin_head=init_variables(nets["margin_head"], keys["margin_head"], embeddings)["params"],
  )
  batch_stats = dict(recognizer=recognizer_variables["batch_stats"])
  frozen = dict(perceptual=init_variables(nets["perceptual"], keys["perceptual"], hr)["params"])
  load_pretrained(config, nets, params, frozen, batch_stats)
  opts = optimizers(config)
  opt_state = {name: opts[name].init(params[name]) for name in TRAINED}
  return FHGANState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, frozen=frozen)


# ----------------------------------------------------------------------------- losses


def mean_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def recognizer_features(nets, state_params, batch_stats, images) -> jax.Array:
  """ArcFace embeddings with frozen BatchNorm statistics (the identity loss, Eq. 9)."""
  return nets["recognizer"].apply({"params": state_params["recognizer"],
                                   "batch_stats": batch_stats["recognizer"]}, images, train=False)


def gradient_penalty(critic_fn, real: jax.Array, fake: jax.Array, rng) -> jax.Array:
  """λ-less WGAN-GP penalty E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates (paper 003, Eq. 6)."""
  epsilon = jax.random.uniform(rng, (real.shape[0], 1, 1, 1))
  interpolates = epsilon * real + (1.0 - epsilon) * fake
  # The critic has no cross-sample normalisation, so the gradient of the sum is per-sample.
  gradients = jax.grad(lambda x: jnp.sum(critic_fn(x)))(interpolates)
  norms = jnp.sqrt(jnp.sum(jnp.square(gradients.astype(jnp.float32)), axis=(1, 2, 3)) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def critic_loss(critic_params, nets, real, fake, rng, config):
  critic_fn = lambda x: nets["critic"].apply({"params": critic_params}, x)
  wasserstein = jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real))
  penalty = gradient_penalty(critic_fn, real, fake, rng)
  return wasserstein + config.loss.gradient_penalty * penalty, (wasserstein, penalty)


def generator_loss(generator_params, state: FHGANState, nets, batch, config, joint: bool):
  """Eq. 10 in the joint phase; the pixel loss (Eq. 4) alone in pretraining."""
  lr, hr = batch["input"], batch["target"]
  sr = nets["generator"].apply({"params": generator_params}, lr)
  pixel = mean_squared_error(sr, hr)
  if not joint:
    return pixel, dict(loss_pixel=pixel)
  layer = config.loss.perceptual_layer
  features = nets["perceptual"].apply({"params": state.frozen["perceptual"]}, jnp.concatenate([sr, hr]))[layer]
  sr_features, hr_features = jnp.split(features, 2)
  perceptual = mean_squared_error(sr_features, jax.lax.stop_gradient(hr_features))
  adversarial = -jnp.mean(nets["critic"].apply({"params": state.params["critic"]}, sr))
  identity = mean_squared_error(
      recognizer_features(nets, state.params, state.batch_stats, sr),
      jax.lax.stop_gradient(recognizer_features(nets, state.params, state.batch_stats, hr)))
  w = config.loss
  total = w.pixel * pixel + w.perceptual * perceptual + w.wgan * adversarial + w.identity * identity
  return total, dict(loss_pixel=pixel, loss_perceptual=perceptual, loss_adversarial=adversarial,
                     loss_identity=identity)


def recognizer_loss(trainable, batch_stats, nets, images, labels, config):
  """ArcFace's additive angular margin loss (Eqs. 7-8)."""
  embeddings, updates = nets["recognizer"].apply(
      {"params": trainable["recognizer"], "batch_stats": batch_stats}, images, train=True,
      mutable=["batch_stats"])
  cosines = nets["margin_head"].apply({"params": trainable["margin_head"]}, embeddings)
  logits = additive_angular_margin_from_cosines(cosines, labels, config.loss.arcface_scale,
                                                config.loss.arcface_margin)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean(jnp.argmax(cosines, axis=-1) == labels)
  return loss, (updates["batch_stats"], accuracy)


# ----------------------------------------------------------------------------- updates


def apply_update(optimizer, params, opt_state, gradients):
  updates, opt_state = optimizer.update(gradients, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def update_recognizer(state: FHGANState, nets, opts, images, labels, config):
  trainable = {name: state.params[name] for name in ("recognizer", "margin_head")}
  (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(recognizer_loss, has_aux=True)(
      trainable, state.batch_stats["recognizer"], nets, images, labels, config)
  params, opt_state = dict(state.params), dict(state.opt_state)
  for name in trainable:
    params[name], opt_state[name] = apply_update(opts[name], trainable[name], state.opt_state[name], grads[name])
  state = state.replace(params=params, opt_state=opt_state, batch_stats=dict(recognizer=batch_stats))
  return state, dict(loss_recognizer=loss, recognizer_accuracy=accuracy)


def update_generator(state: FHGANState, nets, opts, batch, config, joint: bool):
  (loss, terms), grads = jax.value_and_grad(generator_loss, has_aux=True)(
      state.params["generator"], state, nets, batch, config, joint)
  generator, opt_state = apply_update(opts["generator"], state.params["generator"],
                                      state.opt_state["generator"], grads)
  state = state.replace(params=dict(state.params, generator=generator),
                        opt_state=dict(state.opt_state, generator=opt_state))
  return state, dict(terms, loss_generator=loss)


def pretrain_step(state: FHGANState, batch, rng, config):
  nets, opts = networks(config), optimizers(config)
  state, generator_metrics = update_generator(state, nets, opts, batch, config, joint=False)
  state, recognizer_metrics = update_recognizer(state, nets, opts, batch["target"], batch["identity"], config)
  zero = jnp.zeros((), jnp.float32)
  return state, dict(generator_metrics, **recognizer_metrics, loss_perceptual=zero, loss_adversarial=zero,
                     loss_identity=zero, loss_critic=zero, wasserstein_distance=zero, gradient_penalty=zero)


def joint_step(state: FHGANState, batch, rng, config):
  nets, opts = networks(config), optimizers(config)
  hr = batch["target"]
  sr = jax.lax.stop_gradient(nets["generator"].apply({"params": state.params["generator"]}, batch["input"]))
  # 1. critic (Eq. 6)
  (critic_total, (wasserstein, penalty)), grads = jax.value_and_grad(critic_loss, has_aux=True)(
      state.params["critic"], nets, hr, sr, rng, config)
  critic, critic_opt = apply_update(opts["critic"], state.params["critic"], state.opt_state["critic"], grads)
  state = state.replace(params=dict(state.params, critic=critic),
                        opt_state=dict(state.opt_state, critic=critic_opt))
  # 2. generator (Eq. 10)
  state, generator_metrics = update_generator(state, nets, opts, batch, config, joint=True)
  # 3. recognizer on the concatenation of HR and SR faces (Eq. 8)
  labels = jnp.concatenate([batch["identity"], batch["identity"]])
  state, recognizer_metrics = update_recognizer(state, nets, opts, jnp.concatenate([hr, sr]), labels, config)
  # Eq. 6 reads E[D(fake)] - E[D(real)]: its negative estimates the Wasserstein distance.
  return state, dict(generator_metrics, **recognizer_metrics, loss_critic=critic_total,
                     wasserstein_distance=-wasserstein, gradient_penalty=penalty)


def step_variants(config) -> tuple[str, ...]:
  return ("pretrain", "joint") if config.train.pretrain_steps > 0 else ("joint",)


def step_variant(config, step: int) -> str:
  return "pretrain" if step < config.train.pretrain_steps else "joint"


def train_step(state: FHGANState, batch, rng, *, config, variant: str) -> tuple[FHGANState, dict]:
  """One step of the phase `variant` ("pretrain" or "joint")."""
  phase_step = {"pretrain": pretrain_step, "joint": joint_step}[variant]
  state, metrics = phase_step(state, batch, rng, config)
  metrics["phase"] = jnp.asarray(variant == "joint", jnp.float32)
  return state.replace(step=state.step + 1), metrics


# ----------------------------------------------------------------------------- evaluation


def super_resolve(state: FHGANState, low_resolution, config) -> jax.Array:
  sr = networks(config)["generator"].apply({"params": state.params["generator"]}, low_resolution)
  return jnp.clip(sr, -1.0, 1.0)


def eval_step(state: FHGANState, batch, *, config) -> dict[str, jax.Array]:
  """PSNR / SSIM (0-255, RGB) and identity cosine of DSNet and of bicubic upsampling, per example."""
  nets = networks(config)
  hr = batch["target"]
  sr = super_resolve(state, batch["input"], config)
  bicubic = jnp.clip(upsample_bicubic(batch["input"], config.data.target_size), -1.0, 1.0)
  hr_features = recognizer_features(nets, state.params, state.batch_stats, hr)
  values = {}
  for name, images in (("", sr), ("_bicubic", bicubic)):
    values["psnr" + name] = image_quality.psnr_from_unit_range(images, hr)
    values["ssim" + name] = image_quality.ssim_from_unit_range(images, hr)
    features = recognizer_features(nets, state.params, state.batch_stats, images)
    values["identity_cosine" + name] = optax.cosine_similarity(features, hr_features)
  return values


def hallucinate(state: FHGANState, batch, *, config) -> dict[str, jax.Array]:
  return {
      "lr": batch["input"],
      "bicubic": jnp.clip(upsample_bicubic(batch["input"], config.data.target_size), -1.0, 1.0),
      "output": super_resolve(state, batch["input"], config),
      "target": batch["target"],
  }
