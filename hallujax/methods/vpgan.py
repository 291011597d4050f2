"""VPGAN (paper 000, §3.1): thermal → visible through a frozen StyleGAN2 prior driven by an MSCA UNet.

Trained: the encoder (UNet, MSCA, style MLP, γ/β 1×1 convs; hallujax.models.vpgan)
and the StyleGAN2 discriminator. Frozen (the `frozen` tree, never in a
checkpoint): the StyleGAN2 prior, VGG-19 (perceptual loss) and ArcFace
(identity loss). With ``model.prior=False`` (Table 5, "w/o VP") the encoder's
own decoder is the generator and no prior is read.

One training step (named "train", or "train_r1" on the lazy-R1 steps):
  1. discriminator: StyleGAN2's non-saturating logistic loss
     softplus(D(G(x))) + softplus(-D(y)) ("The adversarial loss is directly
     inherited from StyleGAN");
  2. on steps 0, k, 2k, … (k = loss.r1_every): lazy R1, γ/2 · k · E‖∇_y D(y)‖²,
     a separate optimizer update as in StyleGAN2 (§B);
  3. encoder: Eq. 5, L_gen = L1 + λa·softplus(-D(G(x))) + λb·L_p + λc·L_id,
     with L_p, L_id from Eq. 6 (mean absolute feature difference per layer).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hallujax import config_base, optim
from hallujax.run_files import read_run_config
from hallujax.methods import MakeContext, Method
from hallujax.methods.train_state import TrainState, with_updates
from hallujax.methods.stylegan2 import bit_generator_key
from hallujax.metrics.image_quality import psnr_from_unit_range, ssim_from_unit_range
from hallujax.models.recognition import ResNetFace
from hallujax.models.stylegan2 import Discriminator, Generator, channel_table
from hallujax.models.vgg import VGG19
from hallujax.models.vpgan import VPGANEncoder, synthesize

TRAINED = ("encoder", "discriminator")
PAPER_IDENTITY_DIM = 512   # the embedding length of the paper's ArcFace, whose scale λc = 100 was set for (Eq. 6)


VPGANState = TrainState   # params / opt_state: {"encoder": ..., "discriminator": ...}


# ----------------------------------------------------------------------------- networks


def prior_channels(config) -> tuple[int, ...]:
  p = config.model.prior_network
  return channel_table(config.data.target_size, p.channel_multiplier, p.channel_max, p.channel_base)


def networks(config) -> dict:
  """Every network VPGAN uses, built once from the config."""
  m, d = config.model, config.data
  dtype = jnp.dtype(config.train.compute_dtype)
  channels = prior_channels(config)
  p = m.prior_network
  nets = dict(
      encoder=VPGANEncoder(
          input_size=d.input_size, output_size=d.target_size, encoder_channels=tuple(m.encoder_channels),
          decoder_channels=tuple(m.decoder_channels), msca=bool(m.msca),
          prior_channels=channels if m.prior else (), style_dim=p.style_dim, w_per_layer=bool(m.w_per_layer),
          style_hidden=m.style_hidden, rgb_output=not m.prior, dtype=dtype),
      # The discriminator has the prior's architecture, so it can start from the prior file's one.
      discriminator=Discriminator(resolution=d.target_size, channels=channels, stddev_group=p.stddev_group,
                                  dtype=dtype),
      vgg=VGG19(dtype=dtype),
      arcface=ResNetFace(stage_sizes=tuple(m.arcface.stage_sizes), widths=tuple(m.arcface.widths),
                         embedding_dim=m.arcface.embedding_dim, dtype=dtype),
  )
  if m.prior:
    nets["prior"] = Generator(resolution=d.target_size, channels=channels, style_dim=p.style_dim,
                              mapping_layers=p.mapping_layers, mapping_lr_multiplier=p.mapping_lr_multiplier,
                              dtype=dtype)
  return nets


def check_config(config) -> None:
  d = config.data
  if d.target_size % d.input_size or d.target_size < d.input_size:
    raise ValueError(f"config.data.target_size={d.target_size} must be a multiple of input_size={d.input_size} "
                     f"(VPGAN hallucinates input_size² thermal → target_size² visible).")
  if config.model.arcface.image_size < 32:
    raise ValueError(f"config.model.arcface.image_size={config.model.arcface.image_size}; ResNetFace needs ≥ 32.")


# ----------------------------------------------------------------------------- frozen networks


def check_prior_architecture(found: dict, config, where: str) -> None:
  p = config.model.prior_network
  expected = dict(resolution=config.data.target_size, channels=tuple(prior_channels(config)),
                  style_dim=p.style_dim, mapping_layers=p.mapping_layers)
  found = dict(resolution=found["resolution"], channels=tuple(found["channels"]), style_dim=found["style_dim"],
               mapping_layers=found.get("mapping_layers", p.mapping_layers))
  if found != expected:
    raise ValueError(f"The prior {where} is {found}; the config builds {expected}. Set config.model.prior_network "
                     f"(channel_multiplier, channel_max, channel_base, style_dim, mapping_layers) and "
                     f"config.data.target_size to match it.")


def read_prior(config, restore: Callable) -> dict:
  """{"generator": variables, "discriminator": params or None, "description": str} from config.weights.prior."""
  path = config.weights.prior
  if os.path.isdir(path):
    run_config = read_run_config(path)
    if run_config.method != "stylegan2":
      raise ValueError(f"config.weights.prior={path} is a {run_config.method!r} run; expected a stylegan2 run "
                       f"(configs/stylegan2.py) or a StyleGAN2 file (.pt / .pkl).")
    m = run_config.model
    check_prior_architecture(dict(resolution=m.resolution, style_dim=m.style_dim, mapping_layers=m.mapping_layers,
                                  channels=channel_table(m.resolution, m.channel_multiplier, m.channel_max,
                                                         m.channel_base)), config, f"run {path}")
    state, step = restore(run_config, path)
    generator = {"params": state.generator_ema, "buffers": state.buffers}
    description = (f"the EMA generator of in-project StyleGAN2 run {path} at step {step} "
                   f"({step * run_config.train.batch_size} images seen)")
    return dict(generator=jax.device_get(generator), discriminator=jax.device_get(state.params["discriminator"]),
                description=description)
  from hallujax.convert.stylegan2 import load_checkpoint
  loaded = load_checkpoint(path)
  if "generator_ema" not in loaded and "generator" not in loaded:
    raise ValueError(f"config.weights.prior={path} holds no StyleGAN2 generator (only {', '.join(loaded)}).")
  check_prior_architecture(loaded["architecture"], config, f"file {path}")
  generator = loaded.get("generator_ema") or loaded["generator"]
  which = "EMA generator" if "generator_ema" in loaded else "generator (no EMA copy in the file)"
  discriminator = loaded["discriminator"]["params"] if "discriminator" in loaded else None
  return dict(generator=generator, discriminator=discriminator,
              description=f"the {which} of {path} (training length not recorded in the file)")


def with_w_avg(prior: Generator, generator: dict) -> dict:
  """The prior's variables with a tracked mean w; estimated from 4096 mapped latents when the file has none."""
  w_avg = np.asarray(generator["buffers"]["mapping"]["w_avg"])
  if np.any(w_avg != 0):
    return generator
  from hallujax.convert.stylegan2 import estimate_w_avg
  logging.warning("The prior has no tracked w_avg: estimating it from 4096 mapped latents (as rosinality's "
                  "mean_latent).")
  estimated = estimate_w_avg(prior, generator["params"], generator["buffers"])
  buffers = dict(generator["buffers"], mapping=dict(generator["buffers"]["mapping"], w_avg=jnp.asarray(estimated)))
  return dict(generator, buffers=buffers)


def read_arcface(config, nets, restore: Callable) -> dict:
  """ArcFace variables from an arcface_torch backbone file or an in-project configs/arcface.py run."""
  path, size = config.weights.arcface, config.model.arcface.image_size
  if os.path.isdir(path):
    run_config = read_run_config(path)
    if run_config.method != "arcface":
      raise ValueError(f"config.weights.arcface={path} is a {run_config.method!r} run; expected an arcface run.")
    if run_config.data.target_size != size:
      raise ValueError(f"config.weights.arcface={path} was trained on {run_config.data.target_size}² faces; set "
                       f"config.model.arcface.image_size={run_config.data.target_size} and its architecture.")
    state, step = restore(run_config, path)
    logging.info("Identity loss: ArcFace from in-project run %s at step %d.", path, step)
    batch_stats = state.batch_stats.get("recognizer", state.batch_stats)   # v2 ArcFace keys it by network
    return jax.device_get({"params": state.params["recognizer"], "batch_stats": batch_stats})
  from hallujax.convert.arcface import load_arcface
  logging.info("Identity loss: ArcFace weights from %s.", path)
  return load_arcface(path, nets["arcface"], size)


# ----------------------------------------------------------------------------- losses


def feature_distance(features_a: dict, features_b: dict, layers) -> jax.Array:
  """Eq. 6: Σ_i 1/(H_i W_i C_i) ‖V_i(a) − V_i(b)‖₁, averaged over the batch."""
  return sum(jnp.mean(jnp.abs(features_a[name].astype(jnp.float32) - features_b[name].astype(jnp.float32)))
             for name in layers)


def resize_square(images: jax.Array, size: int, method: str = "linear") -> jax.Array:
  if images.shape[1] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), method)


def to_rgb(images: jax.Array) -> jax.Array:
  return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """config.loss, read once: Eq. 5's weights and StyleGAN2's lazy R1 (γ, every k steps)."""
  l1: float
  adversarial: float
  perceptual: float
  identity: float
  r1_gamma: float
  r1_every: int


@dataclasses.dataclass(frozen=True)
class Built:
  """What `make` builds once from the config (also VPFL's local update); every function below is a pure function
  of it."""
  nets: dict                  # {network: Flax module}: encoder, discriminator, vgg, arcface, [prior]
  optimizers: dict            # {network: optax transformation} for TRAINED
  loss: LossWeights
  perceptual_layers: tuple    # VGG-19 layers of L_p (Eq. 6)
  identity_size: int          # ArcFace's input side
  input_size: int
  output_size: int
  input_channels: int
  prior_path: str             # config.weights.prior
  vgg19_path: str             # config.weights.vgg19
  arcface_path: str           # config.weights.arcface

  @property
  def prior(self):
    """The frozen StyleGAN2 synthesis network, or None (model.prior=False, Table 5's "w/o VP")."""
    return self.nets.get("prior")


def build(config) -> Built:
  """VPGAN's networks, optimizers and loss weights for `config`, checked."""
  check_config(config)
  d = config.data
  return Built(nets=networks(config), optimizers=optim.make_all(config.optim, TRAINED),
               loss=config_base.read_section(LossWeights, config.loss),
               perceptual_layers=tuple(config.model.perceptual_layers),
               identity_size=config.model.arcface.image_size, input_size=d.input_size, output_size=d.target_size,
               input_channels=d.input_channels, prior_path=config.weights.prior, vgg19_path=config.weights.vgg19,
               arcface_path=config.weights.arcface)


# ----------------------------------------------------------------------------- networks as functions (Eq. 2–4)


def init_params(built: Built, rng) -> dict:
  """The trained networks' parameters. Initializers draw through XLA's RngBitGenerator: threefry's
  per-parameter hash programs take tens of seconds to compile on a CPU."""
  encoder_key, discriminator_key = jax.random.split(bit_generator_key(rng))
  size, output_size = built.input_size, built.output_size
  return dict(
      encoder=built.nets["encoder"].init(encoder_key, jnp.zeros((1, size, size, built.input_channels)))["params"],
      discriminator=built.nets["discriminator"].init(discriminator_key,
                                                     jnp.zeros((1, output_size, output_size, 3)))["params"])


def encode(built: Built, encoder_params, thermal) -> dict:
  """The encoder's outputs: codes and γ/β features for the prior, or "image" (w/o VP)."""
  return built.nets["encoder"].apply({"params": encoder_params}, thermal)


def image_of(built: Built, encoded, frozen) -> jax.Array:
  """The output image: the frozen prior driven by the codes, or the encoder's own (w/o VP)."""
  return encoded["image"] if built.prior is None else synthesize(built.prior, frozen["prior"], encoded)


def generate(built: Built, encoder_params, frozen, thermal) -> jax.Array:
  return image_of(built, encode(built, encoder_params, thermal), frozen)


def discriminate(built: Built, discriminator_params, images) -> jax.Array:
  return built.nets["discriminator"].apply({"params": discriminator_params}, images)


def identity_features(built: Built, frozen, images) -> jax.Array:
  return built.nets["arcface"].apply(frozen["arcface"], resize_square(images, built.identity_size), train=False)


def identity_embedding(built: Built, frozen, images) -> jax.Array:
  """V of Eq. 6 for L_id: ArcFace's embedding on its unit hypersphere.

  The paper: "we use ... a simple ArcFace [5] for L_id" with λc = 100 (§4.1) and Eq. 6's mean absolute
  feature difference. ArcFace compares faces by the angle between embeddings (its loss reads only the
  normalized embedding), and the embedding's length is arbitrary: arcface_torch's BN output and our
  in-project ResNetFace give entries of size ~1, where λc·L_id was ~99 of a generator loss of ~101
  (issue 32) and drowned L1. Our choice: Eq. 6 on the L2-normalized embedding, the scale of the network's own
  metric (cosine), rescaled by √(D/512) so that its entries have the size of a unit 512-D embedding's (the
  paper's ArcFace, D = 512) whatever our network's D: the paper's λc = 100 then weighs the same angle alike
  (measured on the smoke config at initialization, D = 64: λc·L_id is 0.93 of L_gen on raw embeddings).
  """
  embedding = identity_features(built, frozen, images).astype(jnp.float32)
  unit = embedding / (jnp.linalg.norm(embedding, axis=-1, keepdims=True) + 1e-8)
  return unit * jnp.sqrt(embedding.shape[-1] / PAPER_IDENTITY_DIM)


# ----------------------------------------------------------------------------- losses (Eq. 5, StyleGAN2's)


def generator_terms(built: Built, output, target, discriminator_params, frozen):
  """Eq. 5: L1 + λa·softplus(−D(G(x))) + λb·L_p + λc·L_id (Eq. 6: mean absolute feature differences)."""
  loss, vgg = built.loss, built.nets["vgg"]
  l1 = jnp.mean(jnp.abs(output - target))
  adversarial = jnp.mean(jax.nn.softplus(-discriminate(built, discriminator_params, output)))
  perceptual = feature_distance(vgg.apply(frozen["vgg"], output),
                                jax.lax.stop_gradient(vgg.apply(frozen["vgg"], target)), built.perceptual_layers)
  identity = jnp.mean(jnp.abs(identity_embedding(built, frozen, output)
                              - jax.lax.stop_gradient(identity_embedding(built, frozen, target))))
  total = (loss.l1 * l1 + loss.adversarial * adversarial + loss.perceptual * perceptual
           + loss.identity * identity)
  return total, dict(loss_l1=l1, loss_adversarial=adversarial, loss_perceptual=perceptual, loss_identity=identity)


def discriminator_loss(built: Built, discriminator_params, real, fake):
  """StyleGAN2's non-saturating logistic loss: softplus(D(G(x))) + softplus(−D(y))."""
  logits = discriminate(built, discriminator_params, jnp.concatenate([real, fake]))
  real_logits, fake_logits = jnp.split(logits, 2)
  value = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
  return value, dict(loss_discriminator=value, real_logit=jnp.mean(real_logits), fake_logit=jnp.mean(fake_logits))


def r1_loss(built: Built, discriminator_params, real):
  """Lazy R1 (StyleGAN2 §B): γ/2 · k · E‖∇_y D(y)‖² on real images."""
  gradients = jax.grad(lambda images: jnp.sum(discriminate(built, discriminator_params, images)))(real)
  penalty = jnp.mean(jnp.sum(jnp.square(gradients.astype(jnp.float32)), axis=(1, 2, 3)))
  return built.loss.r1_gamma / 2 * built.loss.r1_every * penalty, dict(r1_penalty=penalty)


def generator_loss(built: Built, encoder_params, discriminator_params, frozen, batch):
  output = generate(built, encoder_params, frozen, batch["input"])
  total, metrics = generator_terms(built, output, batch["target"], discriminator_params, frozen)
  return total, dict(metrics, loss_generator=total)


def uses_r1(built: Built, step: int) -> bool:
  """Lazy R1 on steps 0, k, 2k, … (k = loss.r1_every; 0: never)."""
  return built.loss.r1_every > 0 and step % built.loss.r1_every == 0


# ----------------------------------------------------------------------------- state and weights


def init(built: Built, rng) -> VPGANState:
  params = init_params(built, rng)
  opt_state = {name: built.optimizers[name].init(params[name]) for name in TRAINED}
  return VPGANState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def init_frozen(built: Built, rng) -> dict:
  prior_key, vgg_key, arcface_key = jax.random.split(bit_generator_key(rng), 3)
  size, prior = built.identity_size, built.prior
  frozen = dict(
      vgg=built.nets["vgg"].init(vgg_key, jnp.zeros((1, 32, 32, 3))),
      arcface=built.nets["arcface"].init(arcface_key, jnp.zeros((1, size, size, 3)), train=False))
  if prior is not None:
    frozen["prior"] = prior.init(prior_key, jnp.zeros((1, prior.style_dim)))
  return frozen


def load_frozen(built: Built, prior_file: Callable, arcface_file: Callable, random_frozen) -> dict:
  """The frozen networks from config.weights: `prior_file()` (read_prior's, read once) and `arcface_file()`
  (read_arcface's)."""
  frozen = dict(random_frozen)
  prior = built.prior
  if prior is not None:
    if built.prior_path:
      read = prior_file()
      frozen["prior"] = jax.tree.map(jnp.asarray, with_w_avg(prior, read["generator"]))
      logging.info("VPGAN prior: %s.", read["description"])
    else:
      logging.warning("config.weights.prior is empty: the VPGAN prior is a RANDOMLY INITIALIZED StyleGAN2, which "
                      "holds no facial prior. Give a StyleGAN2 file (rosinality .pt, stylegan2-ada .pkl) or a "
                      "configs/stylegan2.py run directory with --config.weights.prior=PATH.")
  else:
    logging.info("model.prior=False (w/o VP): no prior; the encoder's own decoder generates the image.")
  if built.vgg19_path:
    from hallujax.convert.torchvision import load_vgg19   # pylint: disable=import-outside-toplevel
    frozen["vgg"] = {"params": jax.tree.map(jnp.asarray, load_vgg19(built.vgg19_path))}
    logging.info("Perceptual loss: VGG-19 weights from %s.", built.vgg19_path)
  else:
    logging.warning("config.weights.vgg19 is empty: the perceptual loss (Eq. 6) uses a RANDOMLY INITIALIZED "
                    "VGG-19. Give torchvision's vgg19 checkpoint with --config.weights.vgg19=PATH.")
  if built.arcface_path:
    frozen["arcface"] = jax.tree.map(jnp.asarray, arcface_file())
  else:
    logging.warning("config.weights.arcface is empty: the identity loss (Eq. 6) uses a RANDOMLY INITIALIZED "
                    "ArcFace. Give an arcface_torch backbone or a configs/arcface.py run with "
                    "--config.weights.arcface=PATH.")
  for name, random in random_frozen.items():
    if jax.tree.structure(frozen[name]) != jax.tree.structure(random):
      raise ValueError(f"The loaded {name} network does not have the layout config.model builds; set "
                       f"config.model ({name}) to the weights' architecture.")
  return frozen


def load_pretrained(built: Built, prior_file: Callable, state: VPGANState) -> VPGANState:
  """The discriminator starts from the prior file's discriminator when it has one of the same shape.

  Also without the prior (Table 5 "w/o VP", given the same config.weights.prior): the rows then differ in
  the generator only, not also in the discriminator's start (issue 32).
  """
  if not built.prior_path:
    return state
  found = prior_file()["discriminator"]
  if found is None:
    logging.info("The prior file has no discriminator: VPGAN's discriminator starts from random weights.")
    return state
  if jax.tree.map(jnp.shape, found) != jax.tree.map(jnp.shape, state.params["discriminator"]):
    raise ValueError("The prior's discriminator does not have the shape of config.model.prior_network's; set "
                     "config.model.prior_network to the prior's architecture.")
  params = dict(state.params, discriminator=jax.tree.map(jnp.asarray, found))
  logging.info("VPGAN discriminator: started from the prior's discriminator.")
  return state.replace(params=params,
                       opt_state=dict(state.opt_state,
                                      discriminator=built.optimizers["discriminator"].init(params["discriminator"])))


# ----------------------------------------------------------------------------- the step


def train_step(built: Built, state: VPGANState, frozen, batch, rng, *, r1: bool):
  """The discriminator (StyleGAN2's loss, + lazy R1 when `r1`), then the encoder on Eq. 5."""
  del rng   # every computation is deterministic (fixed noise maps, no dropout)
  real = batch["target"]
  fake = jax.lax.stop_gradient(generate(built, state.params["encoder"], frozen, batch["input"]))
  gradients, metrics = jax.grad(discriminator_loss, argnums=1, has_aux=True)(
      built, state.params["discriminator"], real, fake)
  state = with_updates(state, built.optimizers, {"discriminator": gradients})
  if r1:
    gradients, r1_metrics = jax.grad(r1_loss, argnums=1, has_aux=True)(built, state.params["discriminator"], real)
    state = with_updates(state, built.optimizers, {"discriminator": gradients})
    metrics.update(r1_metrics)
  # Only the encoder's parameters are differentiated: the prior, VGG and ArcFace are constants here.
  gradients, generator_metrics = jax.grad(generator_loss, argnums=1, has_aux=True)(
      built, state.params["encoder"], state.params["discriminator"], frozen, batch)
  state = with_updates(state, built.optimizers, {"encoder": gradients})
  metrics.update(generator_metrics)
  return state.replace(step=state.step + 1), {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def schedule(built: Built, step: int) -> str:
  return "train_r1" if uses_r1(built, step) else "train"


# ----------------------------------------------------------------------------- evaluation


def bicubic(built: Built, thermal) -> jax.Array:
  """The bicubic-of-thermal baseline: the input, grey repeated to RGB, bicubic to the output size."""
  return jnp.clip(resize_square(to_rgb(thermal), built.output_size, "bicubic"), -1.0, 1.0)


def eval_step(built: Built, state: VPGANState, frozen, batch) -> dict:
  target = batch["target"]
  raw = generate(built, state.params["encoder"], frozen, batch["input"])
  outputs = {"": jnp.clip(raw, -1.0, 1.0), "bicubic_": bicubic(built, batch["input"])}
  target_identity = identity_features(built, frozen, target)
  values = {}
  for prefix, images in outputs.items():
    values[f"{prefix}l1"] = jnp.mean(jnp.abs(images - target), axis=(1, 2, 3))
    values[f"{prefix}psnr"] = psnr_from_unit_range(images, target)
    values[f"{prefix}ssim"] = ssim_from_unit_range(images, target)
    features = identity_features(built, frozen, images)
    values[f"{prefix}arcface_cosine"] = jnp.sum(features * target_identity, axis=-1) / (
        jnp.linalg.norm(features, axis=-1) * jnp.linalg.norm(target_identity, axis=-1) + 1e-8)
  # The identity term's share of Eq. 5 on held-out faces (the tables' "identity term alive" check).
  total, terms = generator_terms(built, raw, target, state.params["discriminator"], frozen)
  values["identity_loss_share"] = jnp.broadcast_to(built.loss.identity * terms["loss_identity"] / total,
                                                   target.shape[:1])
  return values


def hallucinate(built: Built, state: VPGANState, frozen, batch) -> dict:
  thermal = batch["input"]
  return {"input": to_rgb(thermal), "bicubic": bicubic(built, thermal),
          "output": jnp.clip(generate(built, state.params["encoder"], frozen, thermal), -1.0, 1.0),
          "target": batch["target"]}


def batch_spec(built: Built) -> dict:
  size, output_size = built.input_size, built.output_size
  return {"input": jax.ShapeDtypeStruct((size, size, built.input_channels), jnp.float32),
          "target": jax.ShapeDtypeStruct((output_size, output_size, 3), jnp.float32)}


def make(config, context: MakeContext = MakeContext()) -> Method:
  built = build(config)
  # The prior file is read once, for load_frozen and load_pretrained.
  prior_file = functools.cache(functools.partial(read_prior, config, context.restore))
  arcface_file = functools.partial(read_arcface, config, built.nets, context.restore)
  return Method(
      batch_spec=batch_spec(built), init=functools.partial(init, built),
      init_frozen=functools.partial(init_frozen, built),
      load_frozen=functools.partial(load_frozen, built, prior_file, arcface_file),
      load_pretrained=functools.partial(load_pretrained, built, prior_file),
      steps={"train": functools.partial(train_step, built, r1=False),
             "train_r1": functools.partial(train_step, built, r1=True)},
      schedule=functools.partial(schedule, built), eval_step=functools.partial(eval_step, built),
      hallucinate=functools.partial(hallucinate, built))
