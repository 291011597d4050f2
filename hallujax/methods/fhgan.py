"""FH-GAN (Bayramli et al., paper 003): DSNet + WGAN-GP critic + a jointly trained ArcFace.

Phases (named steps, chosen on the host by step number; each compiles once):

* ``arcface`` (``train.arcface_steps``, optional), paper §4.1: "To train
  ArcFace ... batch size 256 ... learning rate is started from 0.01 and
  divided by 10 after 15, 18 epochs ... finished at 20 epoch": ArcFace alone
  on the HR faces and their identities, before anything else. Skip it
  (``arcface_steps=0``) when ``weights.arcface`` gives a trained one. Here the
  batch is the run's batch (the paper's ArcFace batch is 256).
* ``gan`` (``train.pretrain_steps``), §4.1 "To train GAN-based DSNet ... The
  learning rate is set to 1e-3 and gradually decreased to 1e-5. Training has
  finished at 56k iterations": DSNet with pixel + perceptual + WGAN terms and
  ``train.n_critic`` WGAN-GP critic updates per generator update (Gulrajani et
  al.'s 5; paper 003 does not give one). The identity term joins in the joint
  phase (Table 1 compares training with and without it). With
  ``train.pretrain_adversarial=False`` this phase is ``pretrain`` instead:
  the pixel loss (Eq. 4) alone, ArcFace learning the HR faces alongside (a
  CPU-friendly shortcut the smoke config uses; not the paper's protocol).
* ``joint``, §4.1 "all networks (DSNet, discriminator and ArcFace) were
  training jointly for 4 epochs and learning rate of 1e-4": per step
  ``n_critic`` critic updates (Eq. 6), one generator update on λ1·pixel +
  λ2·perceptual + λ3·WGAN + λ4·identity (Eq. 10), one ArcFace update on "the
  concatenation of non-paired I_HR and I_SR" (Eq. 8): the SR half is rolled by
  half a batch so no HR image meets its own SR.

Each of a step's critic updates sees the step's real batch with fresh
interpolation coefficients; WGAN-GP draws a new real batch per critic
iteration, which would multiply the input pipeline's load by n_critic. The
penalty interpolates between real images and SR images of other examples (the
SR batch rolled by one), as WGAN-GP's independent real and fake samples.

The perceptual network (VGG-19, Eq. 5) is frozen: it lives in the frozen tree
(never checkpointed), its weights come from ``weights.vgg19`` (torchvision's
checkpoint) or, with none given, stay random and the log says so.
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax import config_base, optim
from hallujax.methods import MakeContext, Method, phase_at
from hallujax.methods.train_state import with_updates
from hallujax.metrics import image_quality
from hallujax.models.dsnet import Critic, DSNet
from hallujax.models.recognition import MarginHead, ResNetFace, additive_angular_margin_from_cosines
from hallujax.models.vgg import VGG19
from hallujax.nn.initialization import init_variables
from hallujax.nn.resampling import upsample_bicubic, upsample_bilinear

TRAINED = ("generator", "critic", "recognizer", "margin_head")


@flax.struct.dataclass
class FHGANState:
  step: jax.Array
  params: dict        # trained networks: generator, critic, recognizer, margin_head
  batch_stats: dict   # recognizer BatchNorm statistics
  opt_state: dict     # one optax state per trained network


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
  """Paper 003 §4.1: Adam for DSNet and the critic, SGD for ArcFace (config.optim; the margin head is
  ArcFace's last layer and shares its section)."""
  opts = optim.make_all(config.optim, ("generator", "critic", "recognizer"))
  return dict(opts, margin_head=opts["recognizer"])


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  d = config.data
  if d.target_size % d.input_size:
    raise ValueError(f"config.data.target_size={d.target_size} must be a multiple of input_size={d.input_size}.")
  return {
      "input": jax.ShapeDtypeStruct((d.input_size, d.input_size, 3), jnp.float32),
      "target": jax.ShapeDtypeStruct((d.target_size, d.target_size, 3), jnp.float32),
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }


# ----------------------------------------------------------------------------- losses


def mean_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def recognizer_features(nets, params, batch_stats, images) -> jax.Array:
  """ArcFace embeddings with frozen BatchNorm statistics (the identity loss, Eq. 9)."""
  return nets["recognizer"].apply({"params": params["recognizer"], "batch_stats": batch_stats["recognizer"]},
                                  images, train=False)


def non_paired(images: jax.Array, shift: int) -> jax.Array:
  """The batch rolled by `shift` examples: image i meets image i - shift of the other batch."""
  return jnp.roll(images, shift, axis=0)


def gradient_penalty(critic_fn, real: jax.Array, fake: jax.Array, rng) -> jax.Array:
  """λ-less WGAN-GP penalty E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates (paper 003, Eq. 6)."""
  epsilon = jax.random.uniform(rng, (real.shape[0], 1, 1, 1))
  interpolates = epsilon * real + (1.0 - epsilon) * fake
  # The critic has no cross-sample normalisation, so the gradient of the sum is per-sample.
  gradients = jax.grad(lambda x: jnp.sum(critic_fn(x)))(interpolates)
  norms = jnp.sqrt(jnp.sum(jnp.square(gradients.astype(jnp.float32)), axis=(1, 2, 3)) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """config.loss, read once: Eq. 10's λ1..λ4, the WGAN-GP coefficient (Eq. 6), VGG's layer, ArcFace's s and m."""
  pixel: float
  perceptual: float
  wgan: float
  identity: float
  gradient_penalty: float
  perceptual_layer: str
  arcface_scale: float
  arcface_margin: float


@dataclasses.dataclass(frozen=True)
class Built:
  """What `make` builds once from the config; every function below is a pure function of it."""
  nets: dict                  # {network: Flax module}: TRAINED and the frozen "perceptual" VGG-19
  optimizers: dict            # {network: optax transformation}, one per TRAINED network
  loss: LossWeights
  n_critic: int               # WGAN-GP critic updates per step
  spec: dict                  # batch_spec(config)
  embedding_dim: int          # ArcFace's embedding length (the margin head's input)
  target_size: int
  vgg_path: str               # config.weights.vgg19
  arcface_path: str           # config.weights.arcface


def build(config) -> Built:
  """The networks, optimizers and loss weights of `config`, checked."""
  t = config.train
  n_critic = int(t.n_critic)
  if n_critic < 1:
    raise ValueError(f"config.train.n_critic={n_critic}; expected at least 1 critic update per step.")
  if t.arcface_steps > 0 and config.weights.arcface:
    logging.warning("config.weights.arcface is given and config.train.arcface_steps=%d: the loaded ArcFace is "
                    "trained further for that many steps (set arcface_steps=0 to skip).", t.arcface_steps)
  return Built(nets=networks(config), optimizers=optimizers(config),
               loss=config_base.read_section(LossWeights, config.loss), n_critic=n_critic, spec=batch_spec(config), embedding_dim=config.model.embedding_dim,
               target_size=config.data.target_size, vgg_path=config.weights.vgg19,
               arcface_path=config.weights.arcface)


# ----------------------------------------------------------------------------- init and weights


def init(built: Built, rng) -> FHGANState:
  nets, spec = built.nets, built.spec
  keys = dict(zip(TRAINED, jax.random.split(rng, len(TRAINED))))
  lr = jnp.zeros((1, *spec["input"].shape))
  hr = jnp.zeros((1, *spec["target"].shape))
  recognizer_variables = init_variables(nets["recognizer"], keys["recognizer"], hr, train=False)
  params = dict(
      generator=init_variables(nets["generator"], keys["generator"], lr)["params"],
      critic=init_variables(nets["critic"], keys["critic"], hr)["params"],
      recognizer=recognizer_variables["params"],
      margin_head=init_variables(nets["margin_head"], keys["margin_head"],
                                 jnp.zeros((1, built.embedding_dim)))["params"],
  )
  opt_state = {name: built.optimizers[name].init(params[name]) for name in TRAINED}
  return FHGANState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=dict(recognizer=recognizer_variables["batch_stats"]), opt_state=opt_state)


def init_frozen(built: Built, rng) -> dict:
  hr = jnp.zeros((1, *built.spec["target"].shape))
  return dict(perceptual=init_variables(built.nets["perceptual"], rng, hr)["params"])


def load_frozen(built: Built, frozen: dict) -> dict:
  if not built.vgg_path:
    logging.warning("config.weights.vgg19 is empty: the perceptual loss (paper 003 Eq. 5) uses a RANDOMLY "
                    "INITIALIZED VGG-19. Give torchvision's vgg19 checkpoint with --config.weights.vgg19=PATH.")
    return frozen
  from hallujax.convert.torchvision import load_vgg19   # pylint: disable=import-outside-toplevel
  logging.info("Perceptual network: VGG-19 weights from %s", built.vgg_path)
  return dict(frozen, perceptual=load_vgg19(built.vgg_path))


def load_pretrained(built: Built, state: FHGANState) -> FHGANState:
  if not built.arcface_path:
    logging.warning("config.weights.arcface is empty: ArcFace starts from random weights and is trained on "
                    "the HR faces during DSNet pretraining.")
    return state
  from hallujax.convert.arcface import load_arcface   # pylint: disable=import-outside-toplevel
  variables = load_arcface(built.arcface_path, built.nets["recognizer"], built.target_size)
  logging.info("Recognizer: ArcFace weights from %s", built.arcface_path)
  return state.replace(params=dict(state.params, recognizer=variables["params"]),
                       batch_stats=dict(recognizer=variables["batch_stats"]))


# ----------------------------------------------------------------------------- the losses of a step


def critic_loss(built: Built, critic_params, real, fake, rng):
  """Eq. 6: E[D(fake)] − E[D(real)] + λ·penalty; (total, (Wasserstein term, penalty))."""
  critic_fn = lambda x: built.nets["critic"].apply({"params": critic_params}, x)
  wasserstein = jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real))
  penalty = gradient_penalty(critic_fn, real, fake, rng)
  return wasserstein + built.loss.gradient_penalty * penalty, (wasserstein, penalty)


def generator_loss(built: Built, generator_params, state: FHGANState, frozen, batch, adversarial_terms: bool,
                   identity: bool):
  """Eq. 10: pixel (Eq. 4), + perceptual and WGAN terms (GAN phases), + identity (joint phase)."""
  nets, w = built.nets, built.loss
  lr, hr = batch["input"], batch["target"]
  sr = nets["generator"].apply({"params": generator_params}, lr)
  pixel = mean_squared_error(sr, hr)
  if not adversarial_terms:
    return pixel, dict(loss_pixel=pixel)
  features = nets["perceptual"].apply({"params": frozen["perceptual"]},
                                      jnp.concatenate([sr, hr]))[w.perceptual_layer]
  sr_features, hr_features = jnp.split(features, 2)
  perceptual = mean_squared_error(sr_features, jax.lax.stop_gradient(hr_features))
  adversarial = -jnp.mean(nets["critic"].apply({"params": state.params["critic"]}, sr))
  total = w.pixel * pixel + w.perceptual * perceptual + w.wgan * adversarial
  terms = dict(loss_pixel=pixel, loss_perceptual=perceptual, loss_adversarial=adversarial)
  if identity:
    terms["loss_identity"] = mean_squared_error(
        recognizer_features(nets, state.params, state.batch_stats, sr),
        jax.lax.stop_gradient(recognizer_features(nets, state.params, state.batch_stats, hr)))
    total = total + w.identity * terms["loss_identity"]
  return total, terms


def recognizer_loss(built: Built, trainable, batch_stats, images, labels):
  """ArcFace's additive angular margin loss (Eqs. 7-8)."""
  nets = built.nets
  embeddings, updates = nets["recognizer"].apply(
      {"params": trainable["recognizer"], "batch_stats": batch_stats}, images, train=True,
      mutable=["batch_stats"])
  cosines = nets["margin_head"].apply({"params": trainable["margin_head"]}, embeddings)
  logits = additive_angular_margin_from_cosines(cosines, labels, built.loss.arcface_scale, built.loss.arcface_margin)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean(jnp.argmax(cosines, axis=-1) == labels)
  return loss, (updates["batch_stats"], accuracy)


# ----------------------------------------------------------------------------- updates


def update_recognizer(built: Built, state: FHGANState, images, labels):
  trainable = {name: state.params[name] for name in ("recognizer", "margin_head")}
  (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(
      functools.partial(recognizer_loss, built), has_aux=True)(trainable, state.batch_stats["recognizer"],
                                                              images, labels)
  state = with_updates(state, built.optimizers, {name: grads[name] for name in trainable})
  state = state.replace(batch_stats=dict(recognizer=batch_stats))
  return state, dict(loss_recognizer=loss, recognizer_accuracy=accuracy)


def update_generator(built: Built, state: FHGANState, frozen, batch, adversarial_terms: bool, identity: bool):
  (loss, terms), grads = jax.value_and_grad(generator_loss, argnums=1, has_aux=True)(
      built, state.params["generator"], state, frozen, batch, adversarial_terms, identity)
  return with_updates(state, built.optimizers, {"generator": grads}), dict(terms, loss_generator=loss)


def update_critic(built: Built, state: FHGANState, real, fake, rng):
  """`n_critic` WGAN-GP updates (Eq. 6), one compiled loop; metrics of the last one."""
  fake = non_paired(fake, 1)
  optimizer = built.optimizers["critic"]

  def one_update(carry, key):
    params, opt_state = carry
    (total, (wasserstein, penalty)), grads = jax.value_and_grad(critic_loss, argnums=1, has_aux=True)(
        built, params, real, fake, key)
    params, opt_state = optim.apply_update(optimizer, params, opt_state, grads)
    return (params, opt_state), (total, wasserstein, penalty)

  (params, opt_state), (total, wasserstein, penalty) = jax.lax.scan(
      one_update, (state.params["critic"], state.opt_state["critic"]), jax.random.split(rng, built.n_critic))
  state = state.replace(params=dict(state.params, critic=params), opt_state=dict(state.opt_state, critic=opt_state))
  # Eq. 6 reads E[D(fake)] - E[D(real)]: its negative estimates the Wasserstein distance.
  return state, dict(loss_critic=total[-1], wasserstein_distance=-wasserstein[-1], gradient_penalty=penalty[-1])


def super_resolved(built: Built, state: FHGANState, batch) -> jax.Array:
  return jax.lax.stop_gradient(built.nets["generator"].apply({"params": state.params["generator"]}, batch["input"]))


# ----------------------------------------------------------------------------- steps


def arcface_step(built: Built, state: FHGANState, frozen, batch, rng):
  """§4.1: ArcFace pretrained alone on the HR faces and their identities."""
  del frozen, rng
  state, metrics = update_recognizer(built, state, batch["target"], batch["identity"])
  return state.replace(step=state.step + 1), metrics


def pretrain_step(built: Built, state: FHGANState, frozen, batch, rng):
  """The pixel loss alone (Eq. 4); ArcFace learns the HR faces alongside (train.pretrain_adversarial=False)."""
  del rng
  state, generator_metrics = update_generator(built, state, frozen, batch, adversarial_terms=False, identity=False)
  state, recognizer_metrics = update_recognizer(built, state, batch["target"], batch["identity"])
  return state.replace(step=state.step + 1), dict(generator_metrics, **recognizer_metrics)


def gan_step(built: Built, state: FHGANState, frozen, batch, rng):
  """§4.1 GAN-based DSNet: n_critic critic updates, one generator update on pixel + perceptual + WGAN."""
  state, critic_metrics = update_critic(built, state, batch["target"], super_resolved(built, state, batch), rng)
  state, generator_metrics = update_generator(built, state, frozen, batch, adversarial_terms=True, identity=False)
  return state.replace(step=state.step + 1), dict(generator_metrics, **critic_metrics)


def joint_step(built: Built, state: FHGANState, frozen, batch, rng):
  """n_critic critic updates (Eq. 6), the generator (Eq. 10), ArcFace on non-paired HR and SR (Eq. 8)."""
  hr = batch["target"]
  state, critic_metrics = update_critic(built, state, hr, super_resolved(built, state, batch), rng)
  state, generator_metrics = update_generator(built, state, frozen, batch, adversarial_terms=True, identity=True)
  half = hr.shape[0] // 2
  sr = non_paired(super_resolved(built, state, batch), half)
  labels = jnp.concatenate([batch["identity"], non_paired(batch["identity"], half)])
  state, recognizer_metrics = update_recognizer(built, state, jnp.concatenate([hr, sr]), labels)
  return state.replace(step=state.step + 1), dict(generator_metrics, **recognizer_metrics, **critic_metrics)


STEPS = {"arcface": arcface_step, "pretrain": pretrain_step, "gan": gan_step, "joint": joint_step}


# ----------------------------------------------------------------------------- evaluation


def super_resolve(built: Built, state: FHGANState, low_resolution) -> jax.Array:
  return jnp.clip(built.nets["generator"].apply({"params": state.params["generator"]}, low_resolution), -1.0, 1.0)


def bicubic(built: Built, low_resolution) -> jax.Array:
  return jnp.clip(upsample_bicubic(low_resolution, built.target_size), -1.0, 1.0)


def bilinear(built: Built, low_resolution) -> jax.Array:
  """The paper's baseline (Tables 2-3: "Bilinear upsample")."""
  return jnp.clip(upsample_bilinear(low_resolution, built.target_size), -1.0, 1.0)


def identity_loss_share(built: Built, state: FHGANState, frozen, batch) -> jax.Array:
  """λ4·L_id over the joint phase's generator loss (Eq. 10) on a held-out batch, 0..1.

  The denominator sums the weighted terms' magnitudes: the WGAN term −E D(SR) has no sign of its
  own (a plain sum could be near 0 or below λ4·L_id), so the share is of the loss's total size.
  Measured whatever the phase, with the joint phase's terms (λ4 = 0 gives 0).
  """
  w = built.loss
  _, terms = generator_loss(built, state.params["generator"], state, frozen, batch, adversarial_terms=True,
                            identity=True)
  weighted = {"pixel": w.pixel * terms["loss_pixel"], "perceptual": w.perceptual * terms["loss_perceptual"],
              "wgan": w.wgan * terms["loss_adversarial"], "identity": w.identity * terms["loss_identity"]}
  return jnp.abs(weighted["identity"]) / (sum(jnp.abs(value) for value in weighted.values()) + 1e-12)


def eval_step(built: Built, state: FHGANState, frozen, batch) -> dict[str, jax.Array]:
  """PSNR / SSIM (0-255, RGB) and identity cosine of DSNet, bilinear and bicubic upsampling, per example."""
  nets, hr = built.nets, batch["target"]
  hr_features = recognizer_features(nets, state.params, state.batch_stats, hr)
  values = {}
  for name, images in (("", super_resolve(built, state, batch["input"])),
                       ("_bilinear", bilinear(built, batch["input"])), ("_bicubic", bicubic(built, batch["input"]))):
    values["psnr" + name] = image_quality.psnr_from_unit_range(images, hr)
    values["ssim" + name] = image_quality.ssim_from_unit_range(images, hr)
    features = recognizer_features(nets, state.params, state.batch_stats, images)
    values["identity_cosine" + name] = optax.cosine_similarity(features, hr_features)
  values["identity_loss_share"] = jnp.full(hr.shape[:1], identity_loss_share(built, state, frozen, batch))
  return values


def hallucinate(built: Built, state: FHGANState, frozen, batch) -> dict[str, jax.Array]:
  del frozen
  low_resolution = batch["input"]
  return {"lr": low_resolution, "bilinear": bilinear(built, low_resolution), "bicubic": bicubic(built, low_resolution),
          "output": super_resolve(built, state, low_resolution), "target": batch["target"]}


def make(config, context: MakeContext = MakeContext()) -> Method:
  """FH-GAN built once; its phases (arcface, pretrain or gan, joint) by step number."""
  del context   # FH-GAN reads no earlier run
  built, t = build(config), config.train
  second = "gan" if t.pretrain_adversarial else "pretrain"
  phase = functools.partial(phase_at, (t.arcface_steps, t.arcface_steps + t.pretrain_steps),
                            ("arcface", second, "joint"))
  lengths = {"arcface": t.arcface_steps, second: t.pretrain_steps,
             "joint": t.steps - t.arcface_steps - t.pretrain_steps}
  steps = {name: functools.partial(STEPS[name], built) for name in ("arcface", second, "joint") if lengths[name] > 0}
  return Method(batch_spec=built.spec, init=functools.partial(init, built),
                init_frozen=functools.partial(init_frozen, built), load_frozen=functools.partial(load_frozen, built),
                load_pretrained=functools.partial(load_pretrained, built), steps=steps, schedule=phase, phase=phase,
                eval_step=functools.partial(eval_step, built), hallucinate=functools.partial(hallucinate, built))
