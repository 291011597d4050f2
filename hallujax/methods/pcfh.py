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
no NE), and two baselines trained on the same pairs with their usual losses,
``model.kind = "pix2pix"`` (U-Net, conditional PatchGAN with the
cross-entropy GAN loss, 100·L1 to the unaligned VIS image) and
``model.kind = "cyclegan"`` (two ResNet generators, two PatchGANs, least
squares GAN, cycle weight 10 in both directions; no identity loss, which
needs equal channel counts).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax import optim
from hallujax.data.faceworld import LUMINANCE
from hallujax.methods import MakeContext, Method, no_restore, phase_at
from hallujax.metrics import identity as identity_metrics
from hallujax.metrics import image_quality
from hallujax.models import pcfh as models
from hallujax.models.recognition import LightCNN29
from hallujax.nn.initialization import fast_key, init_variables
from hallujax.nn.warp import idw_warp

KINDS = ("pcfh", "pix2pix", "cyclegan")
NETWORKS = ("generator", "auxiliary", "critic", "attention", "estimator", "discriminator", "critic_nir")


@flax.struct.dataclass
class PCFHState:
  step: jax.Array
  params: dict      # {network: parameters}: see `trained_networks`
  opt_state: dict   # {network: optax state}, the same keys


# ----------------------------------------------------------------------------- configuration


def trained_networks(config) -> tuple[str, ...]:
  """The networks a run trains, one ``config.optim`` section each."""
  kind = config.model.kind
  if kind == "pcfh":
    names = ["generator", "auxiliary", "critic"]
    if config.loss.awm > 0:
      names.append("attention")
    if config.loss.mic > 0:
      names.append("estimator")
    return tuple(names)
  if kind == "pix2pix":
    return ("generator", "discriminator")
  if kind == "cyclegan":
    return ("generator", "auxiliary", "critic", "critic_nir")
  raise ValueError(f"config.model.kind={kind!r}; expected one of {', '.join(KINDS)}.")


def check_config(config) -> None:
  d = config.data
  if d.input_size != d.target_size:
    raise ValueError(f"PCFH translates at one size: config.data.input_size={d.input_size} must equal "
                     f"target_size={d.target_size}.")
  for name in ("reconstruction", "identity", "luminance", "awm", "mic", "attention_l1", "attention_rank",
               "attention_sparsity"):
    if config.loss[name] < 0:
      raise ValueError(f"config.loss.{name}={config.loss[name]} must be >= 0 (0 switches the term off).")
  if config.model.kind == "pcfh" and config.loss.mic > 0 and config.train.estimator_steps < 1:
    raise ValueError(f"config.train.estimator_steps={config.train.estimator_steps}; expected at least 1 update "
                     f"of NE a step (config.loss.mic=0 switches MIC off).")


def networks(config) -> dict:
  m, d = config.model, config.data
  dtype = jnp.dtype(config.train.compute_dtype)
  nir_channels = d.input_channels
  resnet = lambda channels: models.ResNetGenerator(channels, m.features, m.downsamplings, m.blocks, dtype)
  patch = lambda normalize: models.PatchCritic(m.critic_features, m.critic_layers, normalize, dtype)
  nets = {"lightcnn": LightCNN29(dtype=dtype)}
  if m.kind == "pcfh":
    nets.update(
        generator=models.MultiPathGenerator(3, m.features, m.downsamplings, m.blocks, m.local_features,
                                            m.local_blocks, m.local_paths, dtype),
        auxiliary=resnet(nir_channels), critic=patch(False),
        attention=models.AttentionModule(m.attention_features, m.attention_layers, dtype),
        estimator=models.MutualInformationEstimator(m.estimator_size, m.estimator_features,
                                                    m.estimator_layers, dtype))
  elif m.kind == "pix2pix":
    nets.update(generator=models.UNetGenerator(3, m.features, m.unet_depth, dtype), discriminator=patch(True))
  else:
    nets.update(generator=resnet(3), auxiliary=resnet(nir_channels), critic=patch(True),
                critic_nir=patch(True))
  return nets


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


class Built(NamedTuple):
  """What ``build`` makes: the Method, and its generator's weighted loss terms for inspection."""
  method: Method
  generator_terms: Callable   # (params, frozen, batch, warmup=False) -> {"loss_<term>": scalar}


def make(config, context: MakeContext = MakeContext()) -> Method:
  """PCFH (or a baseline, by ``config.model.kind``) built once."""
  return build(config, context.restore).method


def build(config, restore: Callable = no_restore) -> Built:
  """make's body; also returns the PCFH generator's loss terms (Eqs. 1–9), which the tests read."""
  check_config(config)
  nets = networks(config)
  names = trained_networks(config)
  opts = optim.make_all(config.optim, names)
  spec = batch_spec(config)
  w, m = config.loss, config.model
  kind, reference = m.kind, int(w.sum_reference_size)
  use_awm = kind == "pcfh" and w.awm > 0
  use_mic = kind == "pcfh" and w.mic > 0
  use_identity = kind == "pcfh" and w.identity > 0
  estimator_steps = int(config.train.estimator_steps)
  lightcnn_path = config.weights.get("lightcnn", "")

  # ---- initialisation

  def init(rng) -> PCFHState:
    # One key per network by its place in NETWORKS, so that a variant without one network (w/o AWM,
    # w/o MIC) initialises the others exactly as the full method does.
    keys = {name: fast_key(jax.random.fold_in(rng, NETWORKS.index(name))) for name in names}
    nir = jnp.zeros((1, *spec["input"].shape))
    visible = jnp.zeros((1, *spec["target"].shape))
    landmarks = jnp.zeros((1, 68, 2))
    arguments = {
        "generator": (nir, landmarks) if kind == "pcfh" else (nir,),
        "auxiliary": (visible,), "critic": (visible,), "critic_nir": (nir,),
        "discriminator": (jnp.concatenate([nir, visible], -1),),
        "attention": (nir, visible),
        "estimator": (jnp.zeros((2, *spec["target"].shape)),) * 2 + (jnp.zeros((2, *spec["input"].shape)),),
    }
    params = {name: init_variables(nets[name], keys[name], *arguments[name])["params"] for name in names}
    return PCFHState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state={name: opts[name].init(params[name]) for name in names})

  def init_frozen(rng) -> dict:
    size = m.identity_size
    return {"lightcnn": init_variables(nets["lightcnn"], fast_key(rng), jnp.zeros((1, size, size, 1)))["params"]}

  def load_frozen(frozen: dict) -> dict:
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
                                                        frozen["lightcnn"], m.identity_size, restore)}
    if not os.path.isfile(lightcnn_path):
      raise ValueError(f"config.weights.lightcnn={lightcnn_path} does not exist; expected the public "
                       f"LightCNN_29Layers_V2_checkpoint.pth.tar or a run directory of `python -m "
                       f"hallujax.train --config configs/lightcnn.py --workdir RUN_DIR`.")
    if m.identity_size != 128:
      raise ValueError(f"config.weights.lightcnn is LightCNN-29 v2 at 128²; config.model.identity_size="
                       f"{m.identity_size} must be 128.")
    from hallujax.convert.lightcnn import load_lightcnn
    logging.info("LightCNN-29 v2 from %s", lightcnn_path)
    return {"lightcnn": load_lightcnn(lightcnn_path, nets["lightcnn"])["params"]}

  # ---- pieces

  def generate(params, batch) -> jax.Array:
    if kind == "pcfh":
      return nets["generator"].apply({"params": params["generator"]}, batch["input"], batch["input_landmarks"])
    return nets["generator"].apply({"params": params["generator"]}, batch["input"])

  def identity_features(frozen, images) -> jax.Array:
    return nets["lightcnn"].apply({"params": frozen["lightcnn"]}, resize_to(images, m.identity_size))

  def warped_visible(batch) -> jax.Array:
    """I_Warp = W(I_N, I_V) (Eq. 6): I_V moved from its landmarks onto the NIR input's."""
    return idw_warp(batch["target"], batch["landmarks"], batch["input_landmarks"])

  def attention_map(params, batch, warped) -> jax.Array:
    return nets["attention"].apply({"params": params["attention"]}, batch["input"], warped)

  def estimates(estimator_params, output, batch) -> dict:
    return mutual_information(nets["estimator"], estimator_params, output, batch["target"], batch["input"])

  def update(state_params, opt_state, gradients, network_names):
    params, opt_state = dict(state_params), dict(opt_state)
    for name in network_names:
      params[name], opt_state[name] = optim.apply_update(opts[name], params[name], opt_state[name],
                                                         gradients[name])
    return params, opt_state

  # ---- PCFH

  def generator_losses(trained, state_params, frozen, batch, warped, warmup: bool):
    """The generator's terms (Eqs. 1–5, 8, 9) and A's (Eqs. 7–8), each weighted: {name: scalar}.

    In the warm-up phase Att ≡ 1: L_AWM is the plain L1 to I_Warp and A is neither used nor trained.
    """
    params = dict(state_params, **trained)
    output = generate(params, batch)
    critic = lambda x: nets["critic"].apply({"params": params["critic"]}, x)
    terms = {"loss_adversarial": -w.adversarial * jnp.mean(critic(output))}                     # Eq. 1
    if w.reconstruction > 0:                                                                     # Eq. 2
      cycled = nets["auxiliary"].apply({"params": params["auxiliary"]}, output)
      terms["loss_reconstruction"] = w.reconstruction * sum_as_at(jnp.abs(cycled - batch["input"]), reference)
    if use_identity:                                                                              # Eq. 3
      difference = identity_features(frozen, batch["target"]) - identity_features(frozen, output)
      terms["loss_identity"] = w.identity * jnp.mean(jnp.sum(jnp.abs(difference), axis=-1))
    if w.luminance > 0:                                                                           # Eq. 4
      terms["loss_luminance"] = w.luminance * jnp.mean(jnp.abs(luminance(output) - luminance(batch["input"])))
    if use_awm and warmup:
      terms["loss_awm"] = w.awm * sum_as_at(jnp.abs(output - warped) / 2.0, reference)
    elif use_awm:
      attention = attention_map(params, batch, warped)
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
    if use_mic:                                                                                   # Eq. 9
      information = estimates(jax.lax.stop_gradient(params["estimator"]), output, batch)
      terms["loss_mic"] = w.mic * (information["nir"] - information["visible"])
    return terms

  def pcfh_step(state: PCFHState, frozen, batch, rng, *, warmup: bool = False):
    penalty_rng, _ = jax.random.split(rng)
    metrics = {}
    fake = jax.lax.stop_gradient(generate(state.params, batch))
    params, opt_state = state.params, state.opt_state

    def critic_loss(critic_params):
      critic = lambda x: nets["critic"].apply({"params": critic_params}, x)
      distance = jnp.mean(critic(batch["target"])) - jnp.mean(critic(fake))
      penalty = gradient_penalty(critic, batch["target"], fake, penalty_rng)
      return -distance + w.gradient_penalty * penalty, (distance, penalty)
    (loss, (distance, penalty)), gradients = jax.value_and_grad(critic_loss, has_aux=True)(params["critic"])
    params, opt_state = update(params, opt_state, {"critic": gradients}, ("critic",))
    metrics.update(loss_critic=loss, wasserstein_distance=distance, gradient_penalty=penalty)

    if use_mic:                                                                                   # Eq. 10
      estimator_params, estimator_state, information = train_estimator(
          nets["estimator"], opts["estimator"], params["estimator"], opt_state["estimator"], fake,
          batch["target"], batch["input"], estimator_steps)
      params, opt_state = dict(params, estimator=estimator_params), dict(opt_state, estimator=estimator_state)
      metrics.update(mi_output_visible=information["visible"], mi_output_nir=information["nir"])

    warped = warped_visible(batch) if use_awm else None
    trained_here = ("generator", "auxiliary") if warmup else ("generator", "auxiliary", "attention")
    generator_names = tuple(n for n in trained_here if n in names)

    def total(trained):
      terms = generator_losses(trained, params, frozen, batch, warped, warmup)
      return sum(terms.values()), terms
    (loss, terms), gradients = jax.value_and_grad(total, has_aux=True)(
        {name: params[name] for name in generator_names})
    params, opt_state = update(params, opt_state, gradients, generator_names)
    metrics.update(terms, loss_generator=loss)
    return PCFHState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  # ---- baselines

  def pix2pix_step(state: PCFHState, frozen, batch, rng):
    del frozen, rng
    params, opt_state = state.params, state.opt_state
    discriminator = lambda p, nir, visible: nets["discriminator"].apply(
        {"params": p}, jnp.concatenate([nir, visible], -1))
    fake = jax.lax.stop_gradient(generate(params, batch))

    def discriminator_loss(p):
      real_logits = discriminator(p, batch["input"], batch["target"])
      fake_logits = discriminator(p, batch["input"], fake)
      return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
                    + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))))
    loss_d, gradients = jax.value_and_grad(discriminator_loss)(params["discriminator"])
    params, opt_state = update(params, opt_state, {"discriminator": gradients}, ("discriminator",))

    def generator_loss(generator_params):
      output = generate(dict(params, generator=generator_params), batch)
      logits = discriminator(params["discriminator"], batch["input"], output)
      adversarial = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.ones_like(logits)))
      l1 = w.pix2pix_l1 * jnp.mean(jnp.abs(output - batch["target"]))
      return adversarial + l1, (adversarial, l1)
    (loss, (adversarial, l1)), gradients = jax.value_and_grad(generator_loss, has_aux=True)(params["generator"])
    params, opt_state = update(params, opt_state, {"generator": gradients}, ("generator",))
    return PCFHState(step=state.step + 1, params=params, opt_state=opt_state), {
        "loss_discriminator": loss_d, "loss_generator": loss, "loss_adversarial": adversarial, "loss_l1": l1}

  def cyclegan_step(state: PCFHState, frozen, batch, rng):
    del frozen, rng
    params, opt_state = state.params, state.opt_state
    nir, visible = batch["input"], batch["target"]
    apply = lambda name, p, x: nets[name].apply({"params": p}, x)
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
    params, opt_state = update(params, opt_state, gradients, ("critic", "critic_nir"))

    def generators_loss(generator_params):
      to_visible = lambda x: apply("generator", generator_params["generator"], x)
      to_nir = lambda x: apply("auxiliary", generator_params["auxiliary"], x)
      output, nir_output = to_visible(nir), to_nir(visible)
      adversarial = (jnp.mean(jnp.square(apply("critic", params["critic"], output) - 1.0))
                     + jnp.mean(jnp.square(apply("critic_nir", params["critic_nir"], nir_output) - 1.0)))
      cycle = w.cycle * (jnp.mean(jnp.abs(to_nir(output) - nir)) + jnp.mean(jnp.abs(to_visible(nir_output) - visible)))
      return adversarial + cycle, (adversarial, cycle)
    (loss, (adversarial, cycle)), gradients = jax.value_and_grad(generators_loss, has_aux=True)(
        {"generator": params["generator"], "auxiliary": params["auxiliary"]})
    params, opt_state = update(params, opt_state, gradients, ("generator", "auxiliary"))
    return PCFHState(step=state.step + 1, params=params, opt_state=opt_state), {
        "loss_critics": loss_d, "loss_generator": loss, "loss_adversarial": adversarial, "loss_cycle": cycle}

  # ---- evaluation and images

  def eval_step(state: PCFHState, frozen, batch) -> dict[str, jax.Array]:
    """Per example: PSNR / SSIM / L1 of the output against the same-pose VIS image (aligned_target),
    L1 to the warped VIS image, and LightCNN identity figures within the batch (gallery: the batch's I_V)."""
    output = generate(state.params, batch)
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
    gallery = identity_features(frozen, batch["target"])
    generated = cosine_distances(identity_features(frozen, output), gallery)
    original = cosine_distances(identity_features(frozen, batch["input"]), gallery)
    identities = batch["identity"]
    values.update(
        rank1_nir=in_batch_rank1(original, identities),
        rank1_output=in_batch_rank1(generated, identities),
        rank1_fused=in_batch_rank1(identity_metrics.fused_distance(original, generated), identities),
        identity_cosine=1.0 - jnp.diagonal(generated))
    if use_mic:
      # NE's estimates on held-out pairs (one value a batch, repeated per example so batches average).
      information = estimates(state.params["estimator"], output, batch)
      count = output.shape[0]
      values.update(mi_output_nir=jnp.full((count,), information["nir"]),
                    mi_output_visible=jnp.full((count,), information["visible"]))
    return values

  def hallucinate(state: PCFHState, frozen, batch) -> dict[str, jax.Array]:
    """NIR input | unaligned VIS | warped VIS | attention map | output | VIS of the input's pose."""
    del frozen
    columns = {"input": batch["input"], "visible": batch["target"]}
    warped = warped_visible(batch)
    columns["warped"] = warped
    if use_awm:
      columns["attention"] = 2.0 * attention_map(state.params, batch, warped) - 1.0
    columns["output"] = generate(state.params, batch)
    columns["target"] = batch["aligned_target"]
    return columns

  steps = {"train": {"pcfh": pcfh_step, "pix2pix": pix2pix_step, "cyclegan": cyclegan_step}[kind]}
  warmup_steps = int(config.train.get("attention_warmup_steps", 0)) if use_awm else 0
  if warmup_steps > 0:
    steps["warmup"] = functools.partial(pcfh_step, warmup=True)
  schedule = lambda step_number: phase_at((warmup_steps,), ("warmup", "train"), step_number)
  method = Method(batch_spec=spec, init=init, init_frozen=init_frozen, load_frozen=load_frozen,
                  steps=steps, schedule=schedule, phase=schedule, eval_step=eval_step, hallucinate=hallucinate,
                  diagnostic_columns=("attention",))   # the AWM's attention map, not an output

  def generator_terms(params, frozen, batch, warmup: bool = False) -> dict:
    if kind != "pcfh":
      raise ValueError(f"generator_terms are PCFH's; config.model.kind={kind!r}.")
    warped = warped_visible(batch) if use_awm else None
    return generator_losses({}, params, frozen, batch, warped, warmup)

  return Built(method, generator_terms)
