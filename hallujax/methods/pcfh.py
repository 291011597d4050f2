"""PCFH (Yu et al., paper 001): NIR → VIS face hallucination from unaligned pairs.

One named step, ``train``, makes three updates in order (§3, Figure 2):

1. the critic D_A, WGAN-GP: E D(G_A(I_N)) − E D(I_V) + λ_gp·E(‖∇D(x̂)‖ − 1)².
   The paper gives only the generator's side, L_ad = −E D_A(G_A(I_N)) (Eq. 1),
   which is the Wasserstein generator loss; it says nothing of how D_A is
   trained or regularised, so D_A is a WGAN-GP critic (Gulrajani et al. 2017,
   λ_gp = 10, one critic update per generator update, Adam 1e-4, β = (0, 0.9));
2. the mutual-information estimator NE (Eq. 10) on the current G_A(I_N);
3. G_A, the auxiliary G_B and the attention module A together, on
   L_ad + L_rec + L_ID + L_Y + L_AWM + L_MIC (Eqs. 1–5, 8, 9) for G_A and G_B
   and L_A (Eq. 7) for A.

Reading of the paper's open points (each also in configs/pcfh.py):

* I_V is the batch's "target": under the face world's ``nir_unaligned``
  pairing the visible image of the same identity in another pose, expression
  and lighting; I_Warp = W(I_N, I_V) (Eq. 6) warps it onto the NIR input's
  landmarks ("input_landmarks") from its own ("landmarks") with the IDW warp
  (hallujax.nn.warp). Evaluation compares the output with "aligned_target",
  the visible render of the NIR input's own view, which real data lacks.
* Weights on sums or means (§4.2 gives λ1..λ5 = 2.5e-5, 0.002, 0.1, 2.5e-5,
  0.1 and α1..α3 = 3, 0.003, 1e-6). Read on per-pixel means, λ1 = λ4 = 2.5e-5
  would make L_rec and L_AWM 4–5 orders of magnitude smaller than L_ad and
  the paper's ablations could not move; read on per-image sums at 256²×3 they
  are 4.9× the mean, the usual size of a cycle weight. So: L_rec, L_AWM and
  α3|Att|₁ are per-image sums, L_ID a sum over LightCNN's 256 features
  (0.002·256 = 0.51× the mean), and L_Y, α1's term and MIC act on means /
  estimates (L_Y as a sum would weigh 6.5e3× the mean and swamp the rest).
  Sums are taken "as at" ``loss.sum_reference_size``² pixels (the run's own
  size in the paper configs; 256 in the smoke run, so its balance is the
  headline's): a pixel sum is mean × elements at the reference size, the
  nuclear norm (which grows with the side) is scaled by reference/size.
* rank(Att) (Eq. 7) through its convex surrogate, the nuclear norm of each
  (H, W) attention map (sum of singular values), differentiable by SVD.
* A(x) = Att ⊙ (x + 1)/2 with Att = σ(net(I_N, I_Warp)) (models/pcfh.py).
  Each loss trains its own module, as §3.3 assigns them: L_A (Eq. 7, "the
  loss function" of A) trains A only (G_A's output is stop-gradiented there:
  as a generator loss with α1 = 3 it would be an unmasked pixel loss to the
  warped image, which is what the AWM is there to avoid), and L_AWM (Eq. 8)
  trains G_A only (Att is held there). Letting L_AWM train A too drives Att
  to 0 wherever the young generator is far from I_Warp, i.e. everywhere:
  measured in the 64² smoke run, the mean attention fell from 0.5 to 0.02
  within 100 steps, the sigmoid saturated and the output got worse after
  that (held-out L1 to I_Warp 0.42 at step 100, 0.48 at 200). I_Warp in
  Eq. 7 is mapped to [0, 1] like A's output.
* Optional attention warm-up (our addition, off in the configs): for
  ``train.attention_warmup_steps`` steps Att ≡ 1 (L_AWM is the plain L1 to
  I_Warp, named step "warmup"), then A trains (step "train").
* MIC, Eq. 9 prints L_MIC = λ5 (I(G_A(I_N), I_V) − I(G_A(I_N), I_N)) as a term
  of a minimised loss, which would *minimise* the MI with the visible image;
  the text says the opposite ("maximizes the mutual information of the
  synthetic VIS images and the real VIS images, and minimizes that of the
  synthetic VIS images and the NIR images"). We implement the text:
  L_MIC = λ5 (Î(G_A(I_N), I_N) − Î(G_A(I_N), I_V)).
* Eq. 10 as printed, max E_p NE − E_q NE, is unbounded (scaling NE grows it
  without end). We use the Donsker–Varadhan form that MINE (Belghazi et al.
  2018, which §2 cites) maximises, Î = E_p T − log E_q e^T, a lower bound on
  the MI in nats; q's samples are every off-diagonal pair of the batch
  (B·(B−1) of them; no example meets its own pair), and NE takes
  ``train.estimator_steps`` updates on each step's batch (issue 33: one pair
  a example and one update a step left the estimate at ~0.001 nats).
  MINE's moving-average gradient correction is left out (plain minibatch
  gradients). Evaluation reports NE's estimates on held-out pairs
  (``mi_output_nir``, ``mi_output_visible``).
* L_ID uses LightCNN-29's second-to-last FC features (256-D) of I_V and of the
  output, both resized to ``model.identity_size`` (128 for the public
  checkpoint). LightCNN is frozen (the frozen tree), from ``weights.lightcnn``: the
  public checkpoint or an in-project run of configs/lightcnn.py; with none given
  it stays random and the log says so loudly.

Variants (configs/pcfh.py): wo_awm (λ4 = 0: no warp, no A), wo_mic (λ5 = 0:
no NE). The paper's two baselines, trained on the same pairs with their usual
losses, are methods of their own that share this module's networks, state,
initialisation, frozen LightCNN and evaluation (:class:`Parts`):
hallujax/methods/pix2pix.py and hallujax/methods/cyclegan.py
(``configs/pcfh.py:...,ablation=pix2pix`` / ``ablation=cyclegan``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from hallujax import optim
from hallujax.data.faceworld import LUMINANCE
from hallujax.methods import MakeContext, Method, no_restore, phase_at
from hallujax.methods.train_state import TrainState, update_networks
from hallujax.metrics import identity as identity_metrics
from hallujax.metrics import image_quality
from hallujax.models import pcfh as models
from hallujax.models.recognition import LightCNN29
from hallujax.nn.initialization import fast_key, init_variables
from hallujax.nn.warp import idw_warp

# Every network of PCFH and its baselines, in the order that gives each its initialisation key.
NETWORKS = ("generator", "auxiliary", "critic", "attention", "estimator", "discriminator", "critic_nir")

PCFHState = TrainState   # params / opt_state: {network: ...} for the networks of `trained_networks`


# ----------------------------------------------------------------------------- configuration


def trained_networks(config) -> tuple[str, ...]:
  """The networks a PCFH run trains, one ``config.optim`` section each."""
  names = ["generator", "auxiliary", "critic"]
  if config.loss.awm > 0:
    names.append("attention")
  if config.loss.mic > 0:
    names.append("estimator")
  return tuple(names)


def check_config(config) -> None:
  """What PCFH and its baselines need of the config."""
  d = config.data
  if d.input_size != d.target_size:
    raise ValueError(f"PCFH translates at one size: config.data.input_size={d.input_size} must equal "
                     f"target_size={d.target_size}.")
  for name in ("reconstruction", "identity", "luminance", "awm", "mic", "attention_l1", "attention_rank",
               "attention_sparsity"):
    if config.loss[name] < 0:
      raise ValueError(f"config.loss.{name}={config.loss[name]} must be >= 0 (0 switches the term off).")


def check_pcfh_config(config) -> None:
  check_config(config)
  if config.loss.mic > 0 and config.train.estimator_steps < 1:
    raise ValueError(f"config.train.estimator_steps={config.train.estimator_steps}; expected at least 1 update "
                     f"of NE a step (config.loss.mic=0 switches MIC off).")


def resnet_generator(config, channels: int) -> models.ResNetGenerator:
  """G_B, and both of the CycleGAN baseline's generators: CycleGAN's ResNet generator."""
  m = config.model
  return models.ResNetGenerator(channels, m.features, m.downsamplings, m.blocks, jnp.dtype(config.train.compute_dtype))


def patch_critic(config, normalize: bool) -> models.PatchCritic:
  m = config.model
  return models.PatchCritic(m.critic_features, m.critic_layers, normalize, jnp.dtype(config.train.compute_dtype))


def networks(config) -> dict:
  """PCFH's networks; ``lightcnn`` is frozen (L_ID and the evaluation)."""
  m, d = config.model, config.data
  dtype = jnp.dtype(config.train.compute_dtype)
  return {
      "lightcnn": LightCNN29(dtype=dtype),
      "generator": models.MultiPathGenerator(3, m.features, m.downsamplings, m.blocks, m.local_features,
                                             m.local_blocks, m.local_paths, dtype),
      "auxiliary": resnet_generator(config, d.input_channels), "critic": patch_critic(config, False),
      "attention": models.AttentionModule(m.attention_features, m.attention_layers, dtype),
      "estimator": models.MutualInformationEstimator(m.estimator_size, m.estimator_features,
                                                     m.estimator_layers, dtype),
  }


def batch_spec(config) -> dict[str, jax.ShapeDtypeStruct]:
  d = config.data
  size, float32 = d.target_size, jnp.float32
  return {
      "input": jax.ShapeDtypeStruct((size, size, d.input_channels), float32),      # I_N
      "input_landmarks": jax.ShapeDtypeStruct((68, 2), float32),
      "target": jax.ShapeDtypeStruct((size, size, 3), float32),                     # I_V (unaligned)
      "landmarks": jax.ShapeDtypeStruct((68, 2), float32),
      "aligned_target": jax.ShapeDtypeStruct((size, size, 3), float32),             # evaluation only
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }


# ----------------------------------------------------------------------------- loss pieces


def luminance(images: jax.Array) -> jax.Array:
  """Y of YCbCr (BT.601, full range, on [-1, 1] images) -> (B, H, W, 1); a 1-channel image is its own Y."""
  if images.shape[-1] == 1:
    return images
  return (images @ jnp.asarray(LUMINANCE, images.dtype))[..., None]


def sum_as_at(values: jax.Array, reference_size: int) -> jax.Array:
  """Per-image sums over (H, W, C) "as at" reference_size² pixels, averaged over the batch."""
  height, width = values.shape[1:3]
  scale = reference_size * reference_size / (height * width)
  return jnp.mean(jnp.sum(values.astype(jnp.float32), axis=tuple(range(1, values.ndim)))) * scale


def nuclear_norm(attention: jax.Array) -> jax.Array:
  """Σ singular values of each (H, W) attention map, averaged over the batch: rank's convex surrogate."""
  return jnp.mean(jnp.sum(jnp.linalg.svd(attention[..., 0].astype(jnp.float32), compute_uv=False), axis=-1))


def donsker_varadhan(joint: jax.Array, product: jax.Array) -> jax.Array:
  """Î = E_joint T − log E_product e^T (MINE's lower bound, our reading of Eq. 10), in nats."""
  return jnp.mean(joint) - (jax.nn.logsumexp(product) - math.log(product.shape[0]))


def mutual_information(estimator, estimator_params, output, visible, nir) -> dict:
  """{"visible": Î(G_A(I_N); I_V), "nir": Î(G_A(I_N); I_N)}: NE's Donsker–Varadhan estimates on one batch."""
  scores = estimator.apply({"params": estimator_params}, output, visible, nir)
  return {name: donsker_varadhan(*pair) for name, pair in scores.items()}


def train_estimator(estimator, optimizer, params, opt_state, output, visible, nir, steps: int):
  """`steps` updates of NE on one batch, each ascending Eq. 10's bound for both pairs.

  Returns (params, opt_state, the last update's estimates). Several updates per generator step (our
  choice, ``train.estimator_steps``): "NE is a neural network collaboratively trained with the
  generator" (§3.4) says no more, and one small update a step left the estimate at zero in a
  100-step run (issue 33).
  """
  def one_update(carry, _):
    estimator_params, estimator_state = carry
    def loss(p):
      information = mutual_information(estimator, p, output, visible, nir)
      return -(information["visible"] + information["nir"]), information
    (_, information), gradients = jax.value_and_grad(loss, has_aux=True)(estimator_params)
    return optim.apply_update(optimizer, estimator_params, estimator_state, gradients), information
  (params, opt_state), information = jax.lax.scan(one_update, (params, opt_state), None, length=steps)
  return params, opt_state, jax.tree.map(lambda values: values[-1], information)


def gradient_penalty(critic_fn, real: jax.Array, fake: jax.Array, rng) -> jax.Array:
  """E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates (WGAN-GP)."""
  epsilon = jax.random.uniform(rng, (real.shape[0], 1, 1, 1))
  interpolates = epsilon * real + (1.0 - epsilon) * fake
  gradients = jax.grad(lambda x: jnp.sum(critic_fn(x)))(interpolates)   # no cross-example layers
  norms = jnp.sqrt(jnp.sum(jnp.square(gradients.astype(jnp.float32)), axis=(1, 2, 3)) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def resize_to(images: jax.Array, size: int) -> jax.Array:
  if images.shape[1] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "linear")


def in_batch_rank1(probe_distances: jax.Array, identities: jax.Array) -> jax.Array:
  """(B,) 1.0 where the nearest gallery image (the batch's I_V, one per example) has the probe's identity."""
  return (identities[jnp.argmin(probe_distances, axis=1)] == identities).astype(jnp.float32)


def cosine_distances(first: jax.Array, second: jax.Array) -> jax.Array:
  return 1.0 - identity_metrics.cosine_similarity_matrix(first, second)


# ----------------------------------------------------------------------------- the method


class Parts(NamedTuple):
  """What PCFH and its baselines (methods/pix2pix.py, methods/cyclegan.py) share, built once."""
  nets: dict                 # {network: Flax module}, "lightcnn" (frozen) included
  optimizers: dict           # {trained network: optax transformation}
  names: tuple               # the trained networks
  spec: dict                 # batch_spec
  generator_reads_landmarks: bool   # G_A(I_N, landmarks) (PCFH's local paths) or G(I_N) (the baselines)
  identity_size: int         # LightCNN's input side
  lightcnn_path: str         # config.weights.lightcnn
  restore: Callable = no_restore   # make's context.restore: an in-project LightCNN run directory


def make_parts(config, nets: dict, names: tuple, generator_reads_landmarks: bool,
               restore: Callable = no_restore) -> Parts:
  return Parts(nets=nets, optimizers=optim.make_all(config.optim, names), names=tuple(names),
               spec=batch_spec(config), generator_reads_landmarks=generator_reads_landmarks,
               identity_size=int(config.model.identity_size), lightcnn_path=config.weights.lightcnn,
               restore=restore)


def init_state(parts: Parts, rng) -> TrainState:
  # One key per network by its place in NETWORKS, so that a variant without one network (w/o AWM,
  # w/o MIC) initialises the others exactly as the full method does.
  keys = {name: fast_key(jax.random.fold_in(rng, NETWORKS.index(name))) for name in parts.names}
  nir = jnp.zeros((1, *parts.spec["input"].shape))
  visible = jnp.zeros((1, *parts.spec["target"].shape))
  landmarks = jnp.zeros((1, 68, 2))
  arguments = {
      "generator": (nir, landmarks) if parts.generator_reads_landmarks else (nir,),
      "auxiliary": (visible,), "critic": (visible,), "critic_nir": (nir,),
      "discriminator": (jnp.concatenate([nir, visible], -1),),
      "attention": (nir, visible),
      "estimator": (jnp.zeros((2, *parts.spec["target"].shape)),) * 2 + (jnp.zeros((2, *parts.spec["input"].shape)),),
  }
  params = {name: init_variables(parts.nets[name], keys[name], *arguments[name])["params"] for name in parts.names}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state={name: parts.optimizers[name].init(params[name]) for name in parts.names})


def init_frozen(parts: Parts, rng) -> dict:
  size = parts.identity_size
  return {"lightcnn": init_variables(parts.nets["lightcnn"], fast_key(rng), jnp.zeros((1, size, size, 1)))["params"]}


def load_frozen(parts: Parts, frozen: dict) -> dict:
  lightcnn_path = parts.lightcnn_path
  if not lightcnn_path:
    logging.warning(
        "config.weights.lightcnn is empty: PCFH's identity loss L_ID (paper 001 Eq. 3) and the "
        "identity evaluation use a RANDOMLY INITIALIZED LightCNN-29. Train one in-project with "
        "`python -m hallujax.train --config configs/lightcnn.py --workdir RUN_DIR` "
        "(configs/lightcnn.py:smoke for model.identity_size=32) and give "
        "--config.weights.lightcnn=RUN_DIR, or give the public "
        "LightCNN_29Layers_V2_checkpoint.pth.tar with --config.weights.lightcnn=PATH.")
    return frozen
  if os.path.isdir(lightcnn_path):   # an in-project run of configs/lightcnn.py, at identity_size²
    from hallujax.methods import lightcnn as lightcnn_method   # pylint: disable=import-outside-toplevel
    return {"lightcnn": lightcnn_method.frozen_params(lightcnn_path, "config.weights.lightcnn",
                                                      frozen["lightcnn"], parts.identity_size, parts.restore)}
  if not os.path.isfile(lightcnn_path):
    raise ValueError(f"config.weights.lightcnn={lightcnn_path} does not exist; expected the public "
                     f"LightCNN_29Layers_V2_checkpoint.pth.tar or a run directory of `python -m "
                     f"hallujax.train --config configs/lightcnn.py --workdir RUN_DIR`.")
  if parts.identity_size != 128:
    raise ValueError(f"config.weights.lightcnn is LightCNN-29 v2 at 128²; config.model.identity_size="
                     f"{parts.identity_size} must be 128.")
  from hallujax.convert.lightcnn import load_lightcnn
  logging.info("LightCNN-29 v2 from %s", lightcnn_path)
  return {"lightcnn": load_lightcnn(lightcnn_path, parts.nets["lightcnn"])["params"]}


def generate(parts: Parts, params, batch) -> jax.Array:
  """The NIR → VIS generator's output for the batch's I_N."""
  generator = parts.nets["generator"]
  if parts.generator_reads_landmarks:
    return generator.apply({"params": params["generator"]}, batch["input"], batch["input_landmarks"])
  return generator.apply({"params": params["generator"]}, batch["input"])


def identity_features(parts: Parts, frozen, images) -> jax.Array:
  return parts.nets["lightcnn"].apply({"params": frozen["lightcnn"]}, resize_to(images, parts.identity_size))


def warped_visible(batch) -> jax.Array:
  """I_Warp = W(I_N, I_V) (Eq. 6): I_V moved from its landmarks onto the NIR input's."""
  return idw_warp(batch["target"], batch["landmarks"], batch["input_landmarks"])


def translation_values(parts: Parts, frozen, batch, output) -> dict[str, jax.Array]:
  """Per example: PSNR / SSIM / L1 of the output against the same-pose VIS image (aligned_target),
  L1 to the warped VIS image, and LightCNN identity figures within the batch (gallery: the batch's I_V)."""
  aligned = batch["aligned_target"]
  warped = warped_visible(batch)
  per_image = lambda x: jnp.mean(jnp.abs(x), axis=(1, 2, 3))
  values = {
      "psnr": image_quality.psnr_from_unit_range(output, aligned),
      "ssim": image_quality.ssim_from_unit_range(output, aligned),
      "l1_aligned": per_image(output - aligned),
      "l1_warped": per_image(output - warped),
      "warp_l1_aligned": per_image(warped - aligned),   # how far I_Warp itself is from the truth
  }
  gallery = identity_features(parts, frozen, batch["target"])
  generated = cosine_distances(identity_features(parts, frozen, output), gallery)
  original = cosine_distances(identity_features(parts, frozen, batch["input"]), gallery)
  identities = batch["identity"]
  values.update(
      rank1_nir=in_batch_rank1(original, identities),
      rank1_output=in_batch_rank1(generated, identities),
      rank1_fused=in_batch_rank1(identity_metrics.fused_distance(original, generated), identities),
      identity_cosine=1.0 - jnp.diagonal(generated))
  return values


def translation_columns(batch, output, attention=None) -> dict[str, jax.Array]:
  """NIR input | unaligned VIS | warped VIS | [attention map] | output | VIS of the input's pose."""
  columns = {"input": batch["input"], "visible": batch["target"], "warped": warped_visible(batch)}
  if attention is not None:
    columns["attention"] = 2.0 * attention - 1.0
  columns["output"] = output
  columns["target"] = batch["aligned_target"]
  return columns


def baseline_eval_step(parts: Parts, state: TrainState, frozen, batch) -> dict[str, jax.Array]:
  """A baseline's evaluation: PCFH's figures of its output (no attention, no estimator)."""
  return translation_values(parts, frozen, batch, generate(parts, state.params, batch))


def baseline_hallucinate(parts: Parts, state: TrainState, frozen, batch) -> dict[str, jax.Array]:
  del frozen
  return translation_columns(batch, generate(parts, state.params, batch))


def make_baseline(config, context, baseline_networks: dict, trained: tuple[str, ...], train_step: Callable
                  ) -> Method:
  """A baseline of Table 1 (pix2pix, CycleGAN) as a Method: its own networks and one ``train`` step over PCFH's
  pairs, state, frozen LightCNN and evaluation."""
  check_config(config)
  parts = make_parts(config, baseline_networks, trained, generator_reads_landmarks=False, restore=context.restore)
  return Method(batch_spec=parts.spec, init=functools.partial(init_state, parts),
                init_frozen=functools.partial(init_frozen, parts), load_frozen=functools.partial(load_frozen, parts),
                steps={"train": functools.partial(train_step, parts)}, schedule=lambda step_number: "train",
                eval_step=functools.partial(baseline_eval_step, parts),
                hallucinate=functools.partial(baseline_hallucinate, parts))


# ----------------------------------------------------------------------------- PCFH


@dataclasses.dataclass(frozen=True)
class PCFH:
  """What `build` makes once from a PCFH config; the steps below are pure functions of it."""
  parts: Parts
  loss: Any                   # config.loss: λ1..λ5, α1..α3, the critic's λ_gp, sum_reference_size
  use_awm: bool               # λ4 > 0: the warp, A and L_AWM
  use_mic: bool               # λ5 > 0: NE and L_MIC
  use_identity: bool          # λ2 > 0: L_ID
  estimator_steps: int        # NE's updates a step (train.estimator_steps)
  warmup_steps: int           # steps with Att ≡ 1 (train.attention_warmup_steps; 0 without AWM)


def build(config, restore: Callable = no_restore) -> PCFH:
  check_pcfh_config(config)
  w = config.loss
  use_awm = w.awm > 0
  return PCFH(parts=make_parts(config, networks(config), trained_networks(config), generator_reads_landmarks=True,
                               restore=restore),
              loss=w, use_awm=use_awm, use_mic=w.mic > 0, use_identity=w.identity > 0,
              estimator_steps=int(config.train.estimator_steps),
              warmup_steps=int(config.train.attention_warmup_steps) if use_awm else 0)


def attention_map(pcfh: PCFH, params, batch, warped) -> jax.Array:
  return pcfh.parts.nets["attention"].apply({"params": params["attention"]}, batch["input"], warped)


def estimates(pcfh: PCFH, estimator_params, output, batch) -> dict:
  return mutual_information(pcfh.parts.nets["estimator"], estimator_params, output, batch["target"], batch["input"])


def generator_losses(pcfh: PCFH, trained, state_params, frozen, batch, warped, warmup: bool):
  """The generator's terms (Eqs. 1–5, 8, 9) and A's (Eqs. 7–8), each weighted: {name: scalar}.

  In the warm-up phase Att ≡ 1: L_AWM is the plain L1 to I_Warp and A is neither used nor trained.
  """
  parts, w = pcfh.parts, pcfh.loss
  nets, reference = parts.nets, int(w.sum_reference_size)
  params = dict(state_params, **trained)
  output = generate(parts, params, batch)
  critic = lambda x: nets["critic"].apply({"params": params["critic"]}, x)
  terms = {"loss_adversarial": -w.adversarial * jnp.mean(critic(output))}                     # Eq. 1
  if w.reconstruction > 0:                                                                     # Eq. 2
    cycled = nets["auxiliary"].apply({"params": params["auxiliary"]}, output)
    terms["loss_reconstruction"] = w.reconstruction * sum_as_at(jnp.abs(cycled - batch["input"]), reference)
  if pcfh.use_identity:                                                                         # Eq. 3
    difference = identity_features(parts, frozen, batch["target"]) - identity_features(parts, frozen, output)
    terms["loss_identity"] = w.identity * jnp.mean(jnp.sum(jnp.abs(difference), axis=-1))
  if w.luminance > 0:                                                                           # Eq. 4
    terms["loss_luminance"] = w.luminance * jnp.mean(jnp.abs(luminance(output) - luminance(batch["input"])))
  if pcfh.use_awm and warmup:
    terms["loss_awm"] = w.awm * sum_as_at(jnp.abs(output - warped) / 2.0, reference)
  elif pcfh.use_awm:
    attention = attention_map(pcfh, params, batch, warped)
    held_attention = jax.lax.stop_gradient(attention)   # L_AWM trains G_A; A learns from L_A alone
    attended_output = models.apply_attention(held_attention, output)
    attended_warp = models.apply_attention(held_attention, warped)
    terms["loss_awm"] = w.awm * sum_as_at(jnp.abs(attended_output - attended_warp), reference)  # Eq. 8
    if w.attention_l1 > 0:                                                                      # Eq. 7
      held = models.apply_attention(attention, jax.lax.stop_gradient(output))
      terms["loss_attention_l1"] = w.attention_l1 * jnp.mean(jnp.abs(held - (warped + 1.0) / 2.0))
    if w.attention_rank > 0:
      side_scale = reference / attention.shape[1]
      terms["loss_attention_rank"] = w.attention_rank * side_scale * nuclear_norm(attention)
    if w.attention_sparsity > 0:
      terms["loss_attention_sparsity"] = w.attention_sparsity * sum_as_at(attention, reference)
  if pcfh.use_mic:                                                                              # Eq. 9
    information = estimates(pcfh, jax.lax.stop_gradient(params["estimator"]), output, batch)
    terms["loss_mic"] = w.mic * (information["nir"] - information["visible"])
  return terms


def generator_terms(pcfh: PCFH, params, frozen, batch, warmup: bool = False) -> dict:
  """The generator's weighted loss terms for `params` (for inspection; the tests read them)."""
  warped = warped_visible(batch) if pcfh.use_awm else None
  return generator_losses(pcfh, {}, params, frozen, batch, warped, warmup)


def train_step(pcfh: PCFH, state: TrainState, frozen, batch, rng, *, warmup: bool = False):
  """D_A (WGAN-GP), then NE (Eq. 10), then G_A, G_B and A (Eqs. 1–9)."""
  parts, w = pcfh.parts, pcfh.loss
  nets, opts = parts.nets, parts.optimizers
  penalty_rng, _ = jax.random.split(rng)
  metrics = {}
  fake = jax.lax.stop_gradient(generate(parts, state.params, batch))
  params, opt_state = state.params, state.opt_state

  def critic_loss(critic_params):
    critic = lambda x: nets["critic"].apply({"params": critic_params}, x)
    distance = jnp.mean(critic(batch["target"])) - jnp.mean(critic(fake))
    penalty = gradient_penalty(critic, batch["target"], fake, penalty_rng)
    return -distance + w.gradient_penalty * penalty, (distance, penalty)
  (loss, (distance, penalty)), gradients = jax.value_and_grad(critic_loss, has_aux=True)(params["critic"])
  params, opt_state = update_networks(opts, params, opt_state, {"critic": gradients})
  metrics.update(loss_critic=loss, wasserstein_distance=distance, gradient_penalty=penalty)

  if pcfh.use_mic:                                                                              # Eq. 10
    estimator_params, estimator_state, information = train_estimator(
        nets["estimator"], opts["estimator"], params["estimator"], opt_state["estimator"], fake,
        batch["target"], batch["input"], pcfh.estimator_steps)
    params, opt_state = dict(params, estimator=estimator_params), dict(opt_state, estimator=estimator_state)
    metrics.update(mi_output_visible=information["visible"], mi_output_nir=information["nir"])

  warped = warped_visible(batch) if pcfh.use_awm else None
  trained_here = ("generator", "auxiliary") if warmup else ("generator", "auxiliary", "attention")
  generator_names = tuple(n for n in trained_here if n in parts.names)

  def total(trained):
    terms = generator_losses(pcfh, trained, params, frozen, batch, warped, warmup)
    return sum(terms.values()), terms
  (loss, terms), gradients = jax.value_and_grad(total, has_aux=True)(
      {name: params[name] for name in generator_names})
  params, opt_state = update_networks(opts, params, opt_state, {name: gradients[name] for name in generator_names})
  metrics.update(terms, loss_generator=loss)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(pcfh: PCFH, state: TrainState, frozen, batch) -> dict[str, jax.Array]:
  """translation_values, and NE's estimates on the held-out pairs."""
  output = generate(pcfh.parts, state.params, batch)
  values = translation_values(pcfh.parts, frozen, batch, output)
  if pcfh.use_mic:
    # NE's estimates on held-out pairs (one value a batch, repeated per example so batches average).
    information = estimates(pcfh, state.params["estimator"], output, batch)
    count = output.shape[0]
    values.update(mi_output_nir=jnp.full((count,), information["nir"]),
                  mi_output_visible=jnp.full((count,), information["visible"]))
  return values


def hallucinate(pcfh: PCFH, state: TrainState, frozen, batch) -> dict[str, jax.Array]:
  """NIR input | unaligned VIS | warped VIS | attention map | output | VIS of the input's pose."""
  del frozen
  attention = attention_map(pcfh, state.params, batch, warped_visible(batch)) if pcfh.use_awm else None
  return translation_columns(batch, generate(pcfh.parts, state.params, batch), attention)


def make(config, context: MakeContext = MakeContext()) -> Method:
  """PCFH built once."""
  pcfh = build(config, context.restore)
  parts = pcfh.parts
  steps = {"train": functools.partial(train_step, pcfh)}
  if pcfh.warmup_steps > 0:
    steps["warmup"] = functools.partial(train_step, pcfh, warmup=True)
  schedule = functools.partial(phase_at, (pcfh.warmup_steps,), ("warmup", "train"))
  return Method(batch_spec=parts.spec, init=functools.partial(init_state, parts),
                init_frozen=functools.partial(init_frozen, parts), load_frozen=functools.partial(load_frozen, parts),
                steps=steps, schedule=schedule, phase=schedule, eval_step=functools.partial(eval_step, pcfh),
                hallucinate=functools.partial(hallucinate, pcfh),
                diagnostic_columns=("attention",))   # the AWM's attention map, not an output
