"""VividGAN (paper 002, Zhang et al.): joint ×8 face SR and frontalization, coarse to fine.

A 16² unaligned non-frontal face -> a 128² frontal face (face world pairing
``frontalize``: "input" another pose, "target" the frontal view, "landmarks"
the target's 68 points, "yaw" the input's).

Networks (hallujax/models/vividgan.py): the coarse-level FH network (§III-A),
a landmark estimator on the coarse face, the touching-up U-Nets (§III-B.1),
the fine-integration subnetwork (§III-B.2) and Coarse-D / Fine-D (§III-C);
a frozen ResNet-50 gives the identity features Φ (Eq. 5), or, with
``config.weights.recognizer``, an in-project ArcFace run's embedding network.

Three stages (§III-E), three named steps chosen on the host by ``schedule``:

``coarse``       (i) the coarse network with L_C = L_mse + L_sys + α1·L_id + ψ1·L_adv (Eq. 9)
                 and Coarse-D with L_D (Eq. 7).
``touching_up``  (ii) the U-Nets with L_T = L_mse (Eq. 10) on the "facial component set": crops
                 of the (fixed) coarse faces at the target's landmark boxes -> the same boxes
                 of the frontal ground truth.
``joint``        (iii) everything with L_G = L_C + L_T + L_F (Eq. 12), L_F = L_mse + α2·L_id +
                 γ2·L_h + ψ2·L_adv (Eq. 11), and both discriminators with L_D (Eq. 7).
                 Paper: lr 1e-3 for the fine-integration subnetwork, 1e-4 for the others
                 (configs/vividgan.py's optimizer sections).

Landmarks of the coarse face (open choice; paper §III-B.1: "the landmark
localization can be obtained by a widely-used facial landmark detector [57]"):
a small hourglass landmark estimator with soft-argmax read-out, trained in
stages (i) and (iii) on the frontal ground truth and on the (gradient-stopped)
coarse faces, both against the target's 68 points (L1 on coordinates). The
components are cropped at its predicted landmarks in the joint stage and at
test time (``model.train_crop_landmarks="target"`` crops at the target's
landmarks during training instead); stage (ii) crops at the target's.
Its loss trains only the estimator and is reported as ``loss_landmarks``.

Variants (§IV, Table III): ``model.prior`` = "estimated" (VividGAN),
"none" (V-TN: no touching-up, the fine encoder sees the coarse face alone) or
"ground_truth" (V+GT: the target's components stitched as the prior);
``loss.terms`` = "mse_h" (L⁻_G: L_mse, L_h), "identity" (L†_G: + L_id),
"symmetry" (L‡_G: + L_sys), "coarse_adversarial" (L⋆_G: + L^c_adv) or
"full" (L_G: + L^f_adv).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax import optim
from hallujax.methods import MakeContext, Method, phase_at
from hallujax.methods.train_state import TrainState, with_updates
from hallujax.metrics import image_quality
from hallujax.models import vividgan as networks
from hallujax.models.vgg import ResNet50Features
from hallujax.nn.initialization import init_variables
from hallujax.nn.resampling import upsample_bicubic

PRIORS = ("estimated", "none", "ground_truth")
# Table III's loss combinations, cumulative in this order (paper §V-D).
LOSS_TERMS = ("mse_h", "identity", "symmetry", "coarse_adversarial", "full")
STAGES = ("coarse", "touching_up", "joint")
CROP_LANDMARKS = ("predicted", "target")


# params / opt_state: coarse, landmarks, [touching_up], fine, [coarse_discriminator], [fine_discriminator]
VividGANState = TrainState


# ----------------------------------------------------------------------------- losses


def mean_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """L_mse (Eq. 4) as a mean over pixels and channels (the paper's squared Frobenius norm, scaled)."""
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def mirror_symmetry_loss(images: jax.Array) -> jax.Array:
  """L_sys (Eq. 3): ‖flip(ĥ) − ĥ‖² with flip the horizontal mirror, as a mean over pixels."""
  images = images.astype(jnp.float32)
  return jnp.mean(jnp.square(images[:, :, ::-1] - images))


def heatmap_loss(predicted: list[jax.Array], target: jax.Array) -> jax.Array:
  """L_h (Eq. 6): (1/P) Σ_k ‖H_k(f) − H_k(h)‖²₂ (summed over pixels), averaged over the batch and stacks."""
  per_stack = [jnp.mean(jnp.sum(jnp.square(p - target), axis=(1, 2))) for p in predicted]
  return sum(per_stack) / len(per_stack)


def generator_adversarial_loss(logits: jax.Array) -> jax.Array:
  """L_adv (Eq. 8): −E log D(ĥ), with D(·) = sigmoid(logit)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """L_D (Eq. 7): −E[log D(h) + log(1 − D(ĥ))]."""
  return (jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
          + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))))


def loss_weights(loss_config) -> tuple[dict, dict]:
  """(coarse weights of Eq. 9, fine weights of Eq. 11) for `loss_config.terms` (Table III's rows)."""
  terms = loss_config.terms
  if terms not in LOSS_TERMS:
    raise ValueError(f"config.loss.terms={terms!r}; expected one of {', '.join(LOSS_TERMS)} (Table III).")
  level = LOSS_TERMS.index(terms)
  coarse = dict(mse=1.0,
                identity=loss_config.coarse_identity if level >= 1 else 0.0,
                symmetry=loss_config.symmetry if level >= 2 else 0.0,
                adversarial=loss_config.coarse_adversarial if level >= 3 else 0.0)
  fine = dict(mse=1.0, heatmap=loss_config.heatmap,
              identity=loss_config.fine_identity if level >= 1 else 0.0,
              adversarial=loss_config.fine_adversarial if level >= 4 else 0.0)
  return coarse, fine


# ----------------------------------------------------------------------------- the method

def initialization_random_bits():
  """The context `init` and `init_frozen` draw their random numbers in (see the comment below)."""
  option = getattr(jax, "threefry_partitionable", None)   # a JAX without the option: its default
  return option(False) if option is not None else contextlib.nullcontext()


# initialization_random_bits: `init` and `init_frozen` draw their random numbers with JAX's original
# (non-partitionable) threefry. XLA:CPU compiles the partitionable form (JAX's default) far more
# slowly. Compiling the TouchingUp U-Nets' init took 68.8 s and 89.5 s with it, against 26.4 s and
# 35.0 s without, measured alternately in one process on the 2-core machine under load. For the
# tiny variant the init program was most of a run's compile time. Only which random numbers a
# seed gives changes. Init stays pure and deterministic, and any mesh gives the same values.


class RecognizerFeatures(flax.linen.Module):
  """Φ from an in-project ArcFace run (config.weights.recognizer): its ResNet's embedding of the faces resized
  to the size it was trained on, BatchNorm in inference mode. Called like ResNet50Features (`train=False`)."""

  recognizer: flax.linen.Module
  image_size: int

  @flax.linen.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train   # frozen: always inference mode
    if images.shape[1] != self.image_size:
      images = jax.image.resize(images, (images.shape[0], self.image_size, self.image_size, images.shape[3]),
                                "linear")
    return self.recognizer(images, train=False)


def recognizer_run_config(path: str):
  """The config of the ArcFace run config.weights.recognizer names (its config.json), checked to be one."""
  from hallujax.run_files import read_run_config   # pylint: disable=import-outside-toplevel
  run_config = read_run_config(path)
  if run_config.method != "arcface":
    raise ValueError(f"config.weights.recognizer={path} is a {run_config.method!r} run; expected an ArcFace run "
                     f"(configs/arcface.py).")
  return run_config


def identity_network(config, dtype) -> flax.linen.Module:
  """Φ of Eq. 5: the embedding network of the ArcFace run config.weights.recognizer, or else a ResNet-50
  (config.model.identity; torchvision weights from config.weights.resnet50, or random)."""
  if config.weights.recognizer:
    from hallujax.methods import arcface   # pylint: disable=import-outside-toplevel
    run_config = recognizer_run_config(config.weights.recognizer)
    return RecognizerFeatures(arcface.networks(run_config)[0].clone(dtype=dtype), int(run_config.data.target_size))
  m = config.model
  return ResNet50Features(tuple(m.identity.stage_sizes), m.identity.width, dtype)


def read_recognizer(path: str, restore) -> dict:
  """Φ's variables, {"params": {"recognizer": ...}, "batch_stats": {"recognizer": ...}}, from the ArcFace run's
  latest checkpoint (RecognizerFeatures nests the ResNet as "recognizer"), restored by `restore` (the run
  set-up's, `MakeContext.restore`)."""
  run_config = recognizer_run_config(path)
  state, step = restore(run_config, path)
  logging.info("VividGAN identity features Φ (Eq. 5): the ArcFace of in-project run %s at step %d (%d identities, "
               "%d² faces).", path, step, run_config.data.num_identities, run_config.data.target_size)
  return jax.device_get({"params": {"recognizer": state.params["recognizer"]},
                         "batch_stats": {"recognizer": state.batch_stats["recognizer"]}})


@dataclasses.dataclass(frozen=True)
class Built:
  """What `make` builds once from the config; every step below is a pure function of it."""
  nets: dict                  # {network: Flax module}: coarse, landmarks, fine, [touching_up], [*_discriminator]
  optimizers: dict            # {network: optax transformation}, one per network of `nets`
  identity_net: flax.linen.Module   # Φ (Eq. 5), frozen
  uses_identity: bool         # whether any L_id term is on (else Φ is never built into the frozen tree)
  prior: str                  # model.prior (PRIORS)
  train_crop_landmarks: str   # model.train_crop_landmarks (CROP_LANDMARKS)
  input_size: int
  image_size: int
  heatmap_size: int           # the landmark estimator's heatmap side
  fine_heatmap_size: int      # the fine network's heatmap side
  component_sizes: dict       # {component: (height, width)} of the crops the U-Nets refine
  heatmap_sigma: float
  coarse_weights: dict        # Eq. 9's weights (loss_weights)
  fine_weights: dict          # Eq. 11's weights
  touching_weight: float      # L_T's weight in Eq. 12
  recognizer_path: str        # config.weights.recognizer
  resnet50_path: str          # config.weights.resnet50
  identity_shape: tuple       # (stage sizes, width) of the ResNet-50 Φ, for the log


def build(config) -> Built:
  """The networks, optimizers, sizes and loss weights of `config`, checked."""
  d, m = config.data, config.model
  if d.pairing != "frontalize" and d.source == "faceworld":
    logging.warning("VividGAN hallucinates frontal faces; config.data.pairing=%r, not 'frontalize'.", d.pairing)
  input_size, image_size = int(d.input_size), int(d.target_size)
  networks.upsampling_steps(input_size, image_size)
  if m.prior not in PRIORS:
    raise ValueError(f"config.model.prior={m.prior!r}; expected one of {', '.join(PRIORS)}.")
  if m.train_crop_landmarks not in CROP_LANDMARKS:
    raise ValueError(f"config.model.train_crop_landmarks={m.train_crop_landmarks!r}; expected one of "
                     f"{', '.join(CROP_LANDMARKS)}.")
  dtype = jnp.dtype(config.train.compute_dtype)
  coarse_weights, fine_weights = loss_weights(config.loss)
  heatmap_size = image_size // m.landmarks.reduction
  fine_reduction = 2 ** (len(m.fine.encoder_widths) - 1)
  if heatmap_size * m.landmarks.reduction != image_size or image_size % fine_reduction:
    raise ValueError(f"config.model: the landmark estimator's reduction {m.landmarks.reduction} and the fine "
                     f"encoder's 2**{len(m.fine.encoder_widths) - 1} must divide target_size={image_size}.")

  nets = dict(
      coarse=networks.CoarseNetwork(tuple(m.coarse.widths), m.coarse.localization_features,
                                     bool(m.coarse.bicubic_skip), dtype),
      landmarks=networks.LandmarkEstimator(m.landmarks.features, m.landmarks.num_stacks, m.landmarks.depth,
                                           m.landmarks.reduction, dtype),
      fine=networks.FineIntegration(tuple(m.fine.encoder_widths), m.fine.hourglass_stacks, m.fine.hourglass_depth,
                                    m.fine.embedding, m.fine.sigma, m.coarse.localization_features, dtype),
  )
  if m.prior == "estimated":
    nets["touching_up"] = networks.TouchingUp(tuple(m.touching_up.widths), dtype)
  if coarse_weights["adversarial"] > 0:
    nets["coarse_discriminator"] = networks.Discriminator(tuple(m.discriminator.widths), dtype)
  if fine_weights["adversarial"] > 0:
    nets["fine_discriminator"] = networks.Discriminator(tuple(m.discriminator.widths), dtype)
  return Built(
      nets=nets, optimizers=optim.make_all(config.optim, tuple(nets)), identity_net=identity_network(config, dtype),
      uses_identity=coarse_weights["identity"] > 0 or fine_weights["identity"] > 0, prior=m.prior,
      train_crop_landmarks=m.train_crop_landmarks, input_size=input_size, image_size=image_size,
      heatmap_size=heatmap_size, fine_heatmap_size=image_size // fine_reduction,
      component_sizes=networks.component_sizes(image_size), heatmap_sigma=float(m.heatmap_sigma),
      coarse_weights=coarse_weights, fine_weights=fine_weights, touching_weight=float(config.loss.touching_up),
      recognizer_path=config.weights.recognizer, resnet50_path=config.weights.resnet50,
      identity_shape=(tuple(m.identity.stage_sizes), int(m.identity.width)))


# ----------------------------------------------------------------------------- init


def init(built: Built, rng) -> VividGANState:
  with initialization_random_bits():
    return initial_state(built, rng)


def initial_state(built: Built, rng) -> VividGANState:
  nets, optimizers = built.nets, built.optimizers
  keys = dict(zip(nets, jax.random.split(rng, len(nets))))
  lr = jnp.zeros((1, built.input_size, built.input_size, 3), jnp.float32)
  hr = jnp.zeros((1, built.image_size, built.image_size, 3), jnp.float32)
  params = dict(coarse=nets["coarse"].init(keys["coarse"], lr)["params"],
                landmarks=nets["landmarks"].init(keys["landmarks"], hr)["params"],
                fine=nets["fine"].init(keys["fine"], hr, None if built.prior == "none" else hr)["params"])
  if "touching_up" in nets:
    crops = {part: jnp.zeros((1, *built.component_sizes[part], 3)) for part in networks.COMPONENTS}
    params["touching_up"] = nets["touching_up"].init(keys["touching_up"], crops)["params"]
  for name in ("coarse_discriminator", "fine_discriminator"):
    if name in nets:
      params[name] = nets[name].init(keys[name], hr)["params"]
  opt_state = {name: optimizers[name].init(params[name]) for name in nets}
  return VividGANState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def init_frozen(built: Built, rng) -> dict:
  if not built.uses_identity:
    return {}
  with initialization_random_bits():
    return {"identity": init_variables(built.identity_net, rng,
                                       jnp.zeros((1, built.image_size, built.image_size, 3)))}


def load_frozen(built: Built, restore, frozen: dict) -> dict:
  if not built.uses_identity:
    return frozen
  if built.recognizer_path:
    return dict(frozen, identity=read_recognizer(built.recognizer_path, restore))
  path = built.resnet50_path
  if path:
    from hallujax.convert.torchvision import load_resnet50  # pylint: disable=import-outside-toplevel
    logging.info("VividGAN identity features Φ (Eq. 5): torchvision ResNet-50 weights from %s", path)
    return dict(frozen, identity=load_resnet50(path))
  logging.warning("config.weights.resnet50 is empty: the identity loss L_id (paper 002 Eq. 5) uses a RANDOMLY "
                  "INITIALIZED ResNet-50 (stage sizes %s, width %d). Give torchvision's resnet50 checkpoint "
                  "with --config.weights.resnet50=PATH.", *built.identity_shape)
  return frozen


# ----------------------------------------------------------------------------- forward pieces


def apply(built: Built, params, name, *args):
  return built.nets[name].apply({"params": params[name]}, *args)


def identity_loss(built: Built, frozen, images, target):
  features = built.identity_net.apply(frozen["identity"], jnp.concatenate([images, target]), train=False)
  output_features, target_features = jnp.split(features, 2)
  return mean_squared_error(output_features, jax.lax.stop_gradient(target_features))


def landmark_estimates(built: Built, params, coarse):
  """(B, 68, 2) landmarks of the coarse face (soft-argmax of the last stack); no gradient reaches it."""
  heads = apply(built, params, "landmarks", jax.lax.stop_gradient(coarse))
  return jax.lax.stop_gradient(networks.soft_argmax_landmarks(heads[-1], built.image_size))


def landmark_loss(built: Built, params, coarse, target, landmarks):
  """The estimator's loss, on the ground truth and on the coarse face (it trains only the estimator):
  the mean L1 distance of soft-argmax landmarks to the target's, in heatmap pixels, over every stack."""
  both = jnp.concatenate([target, jax.lax.stop_gradient(coarse)])
  reference = jnp.concatenate([landmarks, landmarks])
  heads = apply(built, params, "landmarks", both)
  scale = built.heatmap_size / built.image_size
  return sum(jnp.mean(jnp.abs(networks.soft_argmax_landmarks(h, built.image_size) - reference)) * scale
             for h in heads) / len(heads)


def component_prior(built: Built, params, coarse, crop_landmarks, target, target_landmarks):
  """(prior image or None, L_T's pieces): the component appearance prior of §III-B.1 / §IV."""
  sizes, image_size = built.component_sizes, built.image_size
  if built.prior == "none":
    return None, None
  if built.prior == "ground_truth":
    crops, boxes = networks.crop_components(target, target_landmarks, sizes)
    return networks.stitch_components(crops, boxes, image_size), None
  crops, boxes = networks.crop_components(coarse, crop_landmarks, sizes)
  refined = apply(built, params, "touching_up", crops)
  target_crops, _ = networks.crop_components(target, crop_landmarks, sizes)
  return networks.stitch_components(refined, boxes, image_size), (refined, target_crops)


def touching_up_loss(refined, target_crops):
  """L_T (Eq. 10): L_mse of each component, averaged over the four."""
  return sum(mean_squared_error(refined[p], target_crops[p]) for p in networks.COMPONENTS) / len(networks.COMPONENTS)


def coarse_terms(built: Built, params, frozen, coarse, target):
  """L_C's terms (Eq. 9) that are switched on, unweighted."""
  weights = built.coarse_weights
  terms = dict(coarse_mse=mean_squared_error(coarse, target))
  if weights["symmetry"] > 0:
    terms["coarse_symmetry"] = mirror_symmetry_loss(coarse)
  if weights["identity"] > 0:
    terms["coarse_identity"] = identity_loss(built, frozen, coarse, target)
  if weights["adversarial"] > 0:
    terms["coarse_adversarial"] = generator_adversarial_loss(apply(built, params, "coarse_discriminator", coarse))
  return terms


def fine_terms(built: Built, params, frozen, out, target, fine_target_heatmaps):
  """L_F's terms (Eq. 11) that are switched on, unweighted."""
  fine = out["fine"]
  terms = dict(fine_mse=mean_squared_error(fine, target),
               fine_heatmap=heatmap_loss(out["fine_heatmaps"], fine_target_heatmaps))
  if built.fine_weights["identity"] > 0:
    terms["fine_identity"] = identity_loss(built, frozen, fine, target)
  if built.fine_weights["adversarial"] > 0:
    terms["fine_adversarial"] = generator_adversarial_loss(apply(built, params, "fine_discriminator", fine))
  return terms


def weighted(terms, weights, prefix):
  return sum(weights[name[len(prefix):]] * value for name, value in terms.items())


def update_discriminator(built: Built, state, name, real, fake):
  def loss_fn(discriminator_params):
    real_logits = built.nets[name].apply({"params": discriminator_params}, real)
    fake_logits = built.nets[name].apply({"params": discriminator_params}, jax.lax.stop_gradient(fake))
    return discriminator_loss(real_logits, fake_logits)
  loss, gradients = jax.value_and_grad(loss_fn)(state.params[name])
  return with_updates(state, built.optimizers, {name: gradients}), loss


def metrics_of(terms, **extra):
  values = {f"loss_{name}": value for name, value in terms.items()}
  values.update({f"loss_{name}": value for name, value in extra.items()})
  return {name: jnp.asarray(value, jnp.float32) for name, value in values.items()}


def forward(built: Built, params, frozen, batch, training: bool):
  """Everything of Fig. 2 for one batch: coarse, prior, fine face, heatmaps (and L_T's pieces)."""
  del frozen
  coarse = apply(built, params, "coarse", batch["input"])
  predicted = landmark_estimates(built, params, coarse)
  crop_landmarks = batch["landmarks"] if training and built.train_crop_landmarks == "target" else predicted
  prior, touching = component_prior(built, params, coarse, crop_landmarks, batch["target"], batch["landmarks"])
  fine, fine_heatmaps = apply(built, params, "fine", coarse, prior)
  return dict(coarse=coarse, prior=prior, fine=fine, fine_heatmaps=fine_heatmaps, touching=touching,
              predicted_landmarks=predicted)


# ----------------------------------------------------------------------------- steps


def coarse_step(built: Built, state, frozen, batch, rng):
  """Stage (i): the coarse network with L_C (Eq. 9), the landmark estimator, Coarse-D (Eq. 7)."""
  del rng
  lr, target = batch["input"], batch["target"]
  trained = ("coarse", "landmarks")

  def loss_fn(trained_params):
    params = dict(state.params, **trained_params)
    coarse = apply(built, params, "coarse", lr)
    terms = coarse_terms(built, params, frozen, coarse, target)
    landmarks = landmark_loss(built, params, coarse, target, batch["landmarks"])
    l_coarse = weighted(terms, built.coarse_weights, "coarse_")
    return l_coarse + landmarks, (terms, l_coarse, landmarks, coarse)

  (_, (terms, l_coarse, landmarks, coarse)), gradients = jax.value_and_grad(loss_fn, has_aux=True)(
      {name: state.params[name] for name in trained})
  new_state = with_updates(state, built.optimizers, {name: gradients[name] for name in trained})
  extra = dict(coarse=l_coarse, landmarks=landmarks)
  if "coarse_discriminator" in built.nets:
    new_state, extra["coarse_discriminator"] = update_discriminator(built, new_state, "coarse_discriminator",
                                                                    target, coarse)
  return new_state.replace(step=state.step + 1), metrics_of(terms, **extra)


def touching_up_step(built: Built, state, frozen, batch, rng):
  """Stage (ii): the U-Nets with L_T (Eq. 10); the coarse network is fixed."""
  del frozen, rng
  target, sizes = batch["target"], built.component_sizes
  coarse = jax.lax.stop_gradient(apply(built, state.params, "coarse", batch["input"]))
  crops, _ = networks.crop_components(coarse, batch["landmarks"], sizes)
  target_crops, _ = networks.crop_components(target, batch["landmarks"], sizes)

  def loss_fn(touching_params):
    refined = built.nets["touching_up"].apply({"params": touching_params}, crops)
    return touching_up_loss(refined, target_crops)

  loss, gradients = jax.value_and_grad(loss_fn)(state.params["touching_up"])
  new_state = with_updates(state, built.optimizers, {"touching_up": gradients})
  baseline = touching_up_loss(crops, target_crops)   # the coarse components' error, for comparison
  return new_state.replace(step=state.step + 1), metrics_of({}, touching_up=loss,
                                                            touching_up_coarse_components=baseline)


def joint_step(built: Built, state, frozen, batch, rng):
  """Stage (iii): L_G = L_C + L_T + L_F (Eq. 12) for the generator networks, L_D for both discriminators."""
  del rng
  target = batch["target"]
  fine_target_heatmaps = networks.gaussian_heatmaps(batch["landmarks"], built.image_size, built.fine_heatmap_size,
                                                    built.heatmap_sigma)
  trained = tuple(name for name in ("coarse", "landmarks", "touching_up", "fine") if name in built.nets)

  def loss_fn(trained_params):
    params = dict(state.params, **trained_params)
    out = forward(built, params, frozen, batch, training=True)
    coarse, fine = out["coarse"], out["fine"]
    terms = coarse_terms(built, params, frozen, coarse, target)
    l_coarse = weighted(terms, built.coarse_weights, "coarse_")
    fine_losses = fine_terms(built, params, frozen, out, target, fine_target_heatmaps)
    l_fine = weighted(fine_losses, built.fine_weights, "fine_")
    l_touching = (touching_up_loss(*out["touching"]) if out["touching"] is not None
                  else jnp.zeros((), jnp.float32))
    landmarks = landmark_loss(built, params, coarse, target, batch["landmarks"])
    total = l_coarse + built.touching_weight * l_touching + l_fine
    return total + landmarks, (dict(terms, **fine_losses), dict(
        generator=total, coarse=l_coarse, touching_up=l_touching, fine=l_fine, landmarks=landmarks),
        coarse, fine)

  (_, (terms, extra, coarse, fine)), gradients = jax.value_and_grad(loss_fn, has_aux=True)(
      {name: state.params[name] for name in trained})
  new_state = with_updates(state, built.optimizers, {name: gradients[name] for name in trained})
  if "touching_up" not in built.nets:
    extra.pop("touching_up")
  for name, fake in (("coarse_discriminator", coarse), ("fine_discriminator", fine)):
    if name in built.nets:
      new_state, extra[name] = update_discriminator(built, new_state, name, target, fake)
  return new_state.replace(step=state.step + 1), metrics_of(terms, **extra)


# ----------------------------------------------------------------------------- evaluation


def clipped_outputs(out):
  """`forward`'s images clipped to the data range [-1, 1], as evaluation and hallucinate show them."""
  return {name: (jnp.clip(out[name], -1.0, 1.0) if name in ("coarse", "fine", "prior") and out[name] is not None
                 else out[name]) for name in out}


def forward_for_evaluation(built: Built, state, frozen, batch):
  return clipped_outputs(forward(built, state.params, frozen, batch, training=False))


# The losses Table III adds one by one, each with the terms of L_G (Eq. 12) that carry it.
ADDED_LOSSES = dict(identity=("coarse_identity", "fine_identity"), symmetry=("coarse_symmetry",),
                    coarse_adversarial=("coarse_adversarial",), fine_adversarial=("fine_adversarial",))


def loss_shares(built: Built, params, frozen, out, batch) -> dict[str, jax.Array]:
  """Each of Table III's added losses' share of the generator loss L_G = L_C + L_T + L_F (Eq. 12) on a
  held-out batch, 0..1 (0 where the run's loss.terms leaves it out): whether a row's added loss is alive,
  i.e. large enough beside L_mse to steer training. Every term is non-negative (MSE, feature distance, BCE)."""
  target = batch["target"]
  heatmaps = networks.gaussian_heatmaps(batch["landmarks"], built.image_size, built.fine_heatmap_size,
                                        built.heatmap_sigma)
  weights = {f"coarse_{name}": value for name, value in built.coarse_weights.items()}
  weights.update({f"fine_{name}": value for name, value in built.fine_weights.items()})
  terms = dict(coarse_terms(built, params, frozen, out["coarse"], target),
               **fine_terms(built, params, frozen, out, target, heatmaps))
  contributions = {name: weights[name] * value for name, value in terms.items()}
  total = sum(contributions.values())
  if out["touching"] is not None:
    total = total + built.touching_weight * touching_up_loss(*out["touching"])
  zero = jnp.zeros((), jnp.float32)
  return {f"{loss}_loss_share": sum((contributions.get(name, zero) for name in names), zero) / (total + 1e-12)
          for loss, names in ADDED_LOSSES.items()}


def eval_step(built: Built, state, frozen, batch):
  """Per-example PSNR / SSIM against the frontal target of the output, the coarse face (VividGAN†) and
  bicubic-of-LR; landmark errors in pixels; the input's yaw (for per-yaw buckets, Table II); and each added
  loss's share of L_G on this batch (`loss_shares`, the same value for every example)."""
  raw = forward(built, state.params, frozen, batch, training=False)
  out = clipped_outputs(raw)
  target = batch["target"]
  bicubic = jnp.clip(upsample_bicubic(batch["input"], built.image_size), -1.0, 1.0)
  values = {}
  for suffix, images in (("", out["fine"]), ("_coarse", out["coarse"]), ("_bicubic", bicubic)):
    values["psnr" + suffix] = image_quality.psnr_from_unit_range(images, target)
    values["ssim" + suffix] = image_quality.ssim_from_unit_range(images, target)
  distance = lambda a, b: jnp.mean(jnp.linalg.norm(a - b, axis=-1), axis=-1)
  values["landmark_error_coarse"] = distance(out["predicted_landmarks"], batch["landmarks"])
  values["landmark_error_fine"] = distance(
      networks.landmarks_from_heatmaps(out["fine_heatmaps"][-1], built.image_size), batch["landmarks"])
  values["yaw"] = batch["yaw"].astype(jnp.float32)
  for name, share in loss_shares(built, state.params, frozen, raw, batch).items():
    values[name] = jnp.full(target.shape[:1], share)
  return values


def hallucinate(built: Built, state, frozen, batch):
  out = forward_for_evaluation(built, state, frozen, batch)
  columns = {"lr": batch["input"],
             "bicubic": jnp.clip(upsample_bicubic(batch["input"], built.image_size), -1.0, 1.0),
             "coarse": out["coarse"]}
  if out["prior"] is not None:
    columns["prior"] = out["prior"]
  columns.update(output=out["fine"], target=batch["target"])
  return columns


def batch_spec(built: Built) -> dict:
  input_size, image_size = built.input_size, built.image_size
  return {
      "input": jax.ShapeDtypeStruct((input_size, input_size, 3), jnp.float32),
      "target": jax.ShapeDtypeStruct((image_size, image_size, 3), jnp.float32),
      "landmarks": jax.ShapeDtypeStruct((networks.NUM_LANDMARKS, 2), jnp.float32),
      "yaw": jax.ShapeDtypeStruct((), jnp.float32),
  }


def make(config, context: MakeContext = MakeContext()) -> Method:
  built = build(config)
  stage_lengths = dict(coarse=int(config.stages.coarse),
                       touching_up=int(config.stages.touching_up) if built.prior == "estimated" else 0,
                       joint=int(config.stages.joint))
  boundaries = (stage_lengths["coarse"], stage_lengths["coarse"] + stage_lengths["touching_up"])
  all_steps = dict(coarse=coarse_step, touching_up=touching_up_step, joint=joint_step)
  steps = ({name: functools.partial(all_steps[name], built) for name in STAGES if stage_lengths[name] > 0}
           or {"joint": functools.partial(joint_step, built)})
  schedule = functools.partial(phase_at, boundaries, STAGES)
  return Method(batch_spec=batch_spec(built), init=functools.partial(init, built),
                init_frozen=functools.partial(init_frozen, built),
                load_frozen=functools.partial(load_frozen, built, context.restore),
                steps=steps, schedule=schedule, phase=schedule, eval_step=functools.partial(eval_step, built),
                hallucinate=functools.partial(hallucinate, built),
                diagnostic_columns=("prior",))   # the estimated prior face (Fig. 2), not an output
