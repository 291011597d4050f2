"""IPFH (paper 004): coarse hourglass hallucinator, then a REINFORCE patch policy.

Three training stages (paper §III-C "Training"), chosen by ``config.stage``:

``"coarse"``     F_c with pixel MSE (Eq. 2), and the dual-consistency net D
                 learning HR → LR on ground-truth pairs (see `coarse_update`).
``"cognition"``  SphereFace-20 C fine-tuned with A-softmax (Eq. 14) on the
                 training identities.
``"policy"``     policy controller P (REINFORCE) and local restoration net R
                 (patch loss Eq. 16 at every step + image loss Eq. 17 after T
                 steps); F_c, D and C frozen ("We fixed the parameters of
                 coarse visual hallucinator and cognition network").
``"all"``        the three in order in one run: steps [0, c) coarse,
                 [c, c + g) cognition, the rest policy (``config.stage_steps``).
                 The train state holds every network and optimizer, so one
                 state and one checkpoint do it. Each stage is a step variant
                 (``step_variants`` / ``step_variant``): the trainer compiles
                 one program per stage and picks it from the host step number,
                 so no ``lax.switch`` runs on device (on XLA:CPU, convolution
                 gradients inside a conditional run ~10× slower: F_c's backward
                 0.25 s plain vs 3.1 s in ``lax.cond``; cf. jax-ml/jax#12868),
                 and "all" trains as fast as the three single-stage runs.

A single-stage run can start from an earlier run's checkpoint:
``config.weights.coarse`` / ``config.weights.cognition`` name the workdir of
a finished "coarse" / "cognition" (or "all") run, whose latest checkpoint's
F_c + D / C parameters are loaded in ``init_state`` (the network sizes in the
config must match that run's).

The T-step rollout (policy forward, sampling, patch gather with
``lax.dynamic_slice``, restoration, patch scatter with
``lax.dynamic_update_slice``, per-step rewards) is one ``lax.scan`` over a
per-example step function, vmapped over the batch, inside the jitted train
step; its gradient is taken through the scan.

Patch selection at evaluation (and in training, for the ablation of Table VII)
is ``config.policy.selection``: ``"policy"`` (sample in training, arg-max at
test), ``"grid"`` (the (H/P)² non-overlapping patches, 16 for 128² / 32²)
or ``"random"`` (``config.policy.random_patches`` uniform locations, 30).
The arg-max of a near-uniform (undertrained) policy is one location at every
step, so R repairs the same patch T times (README, IPFH: the CPU-scale Table VII).
``config.policy.reward`` picks the short-term reward ("paper", Eq. 10, or
"improvement", `rollout_step`); ``config.policy.exclude_repaired`` (not in the
paper, off by default) makes the test-time arg-max skip repaired patches.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax.models.ipfh import (CoarseHallucinator, DualConsistency, LocalRestoration,
                                  PolicyController, SphereFaceTextureFeatures, bicubic_upsample)
from hallujax.metrics import identity as identity_metrics
from hallujax.metrics import image_quality
from hallujax.models.recognition import SphereFace, a_softmax_logits

STAGES = ("coarse", "cognition", "policy")
SELECTIONS = ("policy", "grid", "random")
REWARDS = ("paper", "improvement")             # config.policy.reward; see `policy_update`
LR_REFERENCES = ("input", "dual_of_target")   # what D(ŷ) is compared with; see `lr_reference`
# Parameter groups each stage's optimizer updates.
STAGE_GROUPS = {"coarse": ("coarse", "dual"), "cognition": ("cognition",),
                "policy": ("policy", "restoration")}


@flax.struct.dataclass
class IPFHState:
  step: jax.Array
  params: dict            # coarse, dual, cognition {backbone, class_weights}, policy, restoration
  optimizer_states: dict  # one per stage: coarse (F_c + D), cognition (C), policy (P + R)


class Networks(NamedTuple):
  coarse: CoarseHallucinator
  dual: DualConsistency
  cognition: SphereFace
  texture: SphereFaceTextureFeatures
  policy: PolicyController
  restoration: LocalRestoration


def build_networks(config) -> Networks:
  return Networks(
      coarse=CoarseHallucinator(target_size=config.data.target_size, **config.coarse.network),
      dual=DualConsistency(widths=tuple(config.dual.widths)),
      cognition=SphereFace(depth=config.cognition.depth, embedding_dim=config.cognition.embedding_dim),
      texture=SphereFaceTextureFeatures(depth=config.cognition.depth,
                                        stages=config.cognition.texture_stages),
      policy=PolicyController(image_widths=tuple(config.policy.image_widths),
                              patch_widths=tuple(config.policy.patch_widths),
                              holistic_features=config.policy.holistic_features,
                              context_features=config.policy.context_features),
      restoration=LocalRestoration(patch_size=config.policy.patch_size, **config.restoration),
  )


def check_config(config) -> None:
  """Errors a user can act on, before anything is traced."""
  stage = config.stage
  if stage not in STAGES + ("all",):
    raise ValueError(f"config.stage={stage!r}; expected one of {', '.join(STAGES + ('all',))}.")
  if config.policy.reward not in REWARDS:
    raise ValueError(f"config.policy.reward={config.policy.reward!r}; expected one of "
                     f"{', '.join(REWARDS)}.")
  if config.policy.selection not in SELECTIONS:
    raise ValueError(f"config.policy.selection={config.policy.selection!r}; expected one of "
                     f"{', '.join(SELECTIONS)}.")
  size, patch = config.data.target_size, config.policy.patch_size
  scale = size // config.data.input_size
  if scale * config.data.input_size != size or scale & (scale - 1) or scale < 2:
    raise ValueError(
        f"config.data.target_size={size} must be a power-of-two multiple of input_size="
        f"{config.data.input_size} (paper: 16 → 128, ×8).")
  if patch > size or size % patch or patch % scale:
    raise ValueError(
        f"config.policy.patch_size={patch} must divide target_size={size} and be a multiple of the "
        f"scale {scale} (paper: 32² patches of a 128² image, 4² in the LR domain).")
  if config.loss.lr_reference not in LR_REFERENCES:
    raise ValueError(f"config.loss.lr_reference={config.loss.lr_reference!r}; expected one of "
                     f"{', '.join(LR_REFERENCES)}.")
  if 2 ** len(config.dual.widths) * 2 != scale:
    raise ValueError(
        f"config.dual.widths={tuple(config.dual.widths)} gives {len(config.dual.widths) + 1} stride-2 "
        f"convolutions (×{2 ** (len(config.dual.widths) + 1)} down), but the data's scale is ×{scale}; "
        f"use {round(math.log2(scale)) - 1} widths.")
  if stage == "all":
    total = sum(int(config.stage_steps[name]) for name in STAGES)
    if total != config.train.steps:
      raise ValueError(
          f"config.stage='all' runs stage_steps {dict(config.stage_steps)} (sum {total}), but "
          f"config.train.steps={config.train.steps}; make them agree.")


# ----------------------------------------------------------------------------- contract


def batch_spec(config) -> dict:
  size, low = config.data.target_size, config.data.input_size
  return {
      "input": jax.ShapeDtypeStruct((low, low, config.data.input_channels), jnp.float32),
      "target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }


def make_optimizers(config) -> dict:
  """One Adam per stage, learning rate decayed exponentially from `learning_rate` to `final_learning_rate`.

  Paper §III-C: coarse "learning rate from 0.1 to 10^-5" (no optimizer named);
  policy "Adam optimizer and set the learning rate from 10^-3 to 10^-5". We use
  Adam for every stage (configs/ipfh.py gives the coarse rate it uses and why).
  """
  steps = stage_steps(config)
  optimizers = {}
  for stage in STAGES:
    settings = config[stage]
    schedule = optax.exponential_decay(
        settings.learning_rate, transition_steps=max(int(steps[stage]), 1),
        decay_rate=settings.final_learning_rate / settings.learning_rate,
        end_value=settings.final_learning_rate)
    optimizers[stage] = optax.adam(schedule)
  return optimizers


def stage_steps(config) -> dict:
  """Steps each stage trains for: config.stage_steps in "all", config.train.steps otherwise."""
  if config.stage == "all":
    return {name: int(config.stage_steps[name]) for name in STAGES}
  return {name: int(config.train.steps) for name in STAGES}


def init_state(config, rng, batch) -> IPFHState:
  check_config(config)
  input_shape = (1,) + tuple(batch["input"].shape[1:])
  # One jitted function (initialising op by op compiles every layer separately), drawing from
  # an "rbg" key made from `rng`'s bits: XLA:CPU compiles threefry's random bits slowly
  # (about 3× longer for this init with jax_threefry_partitionable, the default).
  init_key = jax.random.wrap_key_data(jnp.resize(jax.random.key_data(rng).reshape(-1), (4,)),
                                      impl="rbg")
  state = jax.jit(functools.partial(_initial_state, config, input_shape))(init_key)
  return _load_previous_stages(config, state)


def _initial_state(config, input_shape: tuple, rng) -> IPFHState:
  networks = build_networks(config)
  size, patch, channels = config.data.target_size, config.policy.patch_size, 3
  lr_images = jnp.zeros(input_shape, jnp.float32)
  hr_images = jnp.zeros((1, size, size, channels), jnp.float32)
  keys = jax.random.split(rng, 6)
  params = {
      "coarse": networks.coarse.init(keys[0], lr_images)["params"],
      "dual": networks.dual.init(keys[1], hr_images)["params"],
      "cognition": {
          "backbone": networks.cognition.init(keys[2], hr_images)["params"],
          # A-softmax class centres W (D, N), normalised in the logits (Eq. 14).
          "class_weights": 0.01 * jax.random.normal(
              keys[3], (config.cognition.embedding_dim, config.data.num_identities)),
      },
      "policy": networks.policy.init(keys[4], hr_images[0], hr_images[0, :patch, :patch],
                                     jnp.zeros((size * size,)))["params"],
      "restoration": networks.restoration.init(keys[5], hr_images[0],
                                               hr_images[0, :patch, :patch])["params"],
  }
  optimizers = make_optimizers(config)
  optimizer_states = {stage: optimizers[stage].init(_group(params, stage)) for stage in STAGES}
  return IPFHState(step=jnp.zeros((), jnp.int32), params=params, optimizer_states=optimizer_states)


def _group(params: dict, stage: str) -> dict:
  return {name: params[name] for name in STAGE_GROUPS[stage]}


def _load_previous_stages(config, state: IPFHState) -> IPFHState:
  """Parameters from earlier stages' workdirs (config.weights.coarse / .cognition), if given."""
  params = dict(state.params)
  sources = {"coarse": ("coarse", "dual"), "cognition": ("cognition",)}
  for name, groups in sources.items():
    workdir = config.weights.get(name, "")
    if workdir:
      from hallujax.checkpoint import restore_state  # orbax; only needed when loading.
      previous, step = restore_state(workdir, state)
      for group in groups:
        params[group] = previous.params[group]
      logging.info("IPFH: loaded %s from %s (step %d).", "+".join(groups), workdir, step)
      print(f"IPFH: loaded {' + '.join(groups)} from {workdir} (step {step}).", flush=True)
    elif config.stage == "policy":
      _warn(f"IPFH stage 'policy': config.weights.{name} is empty, so the frozen {name} network "
            f"keeps its random initialization. Point it at the workdir of a finished '{name}' run "
            f"(or use config.stage='all').")
  if config.stage in ("cognition", "all") and not config.weights.get("cognition", ""):
    _warn("IPFH: the cognition network (SphereFace) starts from a random initialization and is "
          "trained on the training identities in the 'cognition' stage; the paper fine-tunes a "
          "pretrained SphereFace, for which hallujax has no weight converter.")
  return state.replace(params=params)


def _warn(message: str) -> None:
  logging.warning(message)
  print("WARNING: " + message, flush=True)


def step_variants(config) -> tuple[str, ...]:
  """The stages this config trains, in order: all three for stage "all", else just config.stage."""
  return STAGES if config.stage == "all" else (config.stage,)


def step_variant(config, step: int) -> str:
  """The stage that trains step number `step` (host int from 0): see `stage_at`."""
  return config.stage if config.stage != "all" else stage_at(config, step)


def stage_at(config, step: int) -> str:
  """Stage "all": steps [0, c) coarse, [c, c + g) cognition, the rest policy (config.stage_steps)."""
  steps = stage_steps(config)
  if step < steps["coarse"]:
    return "coarse"
  if step < steps["coarse"] + steps["cognition"]:
    return "cognition"
  return "policy"


# Metric names of each stage's update. Every step variant of a config must return the same
# names (the trainer's contract), so in stage "all" each stage reports the union of its
# config's stages, 0 for the ones it does not compute.
STAGE_METRICS = {
    "coarse": ("loss_coarse", "loss_dual", "psnr_coarse"),
    "cognition": ("loss_identity", "identity_accuracy"),
    "policy": ("loss_policy", "loss_restoration", "loss_patch", "loss_image", "return",
               "reward_final", "reward_final_gain", "policy_entropy", "psnr_rollout", "psnr_coarse"),
}


def train_step(state: IPFHState, batch: dict, rng, *, config,
               variant: str | None = None) -> tuple[IPFHState, dict]:
  """One update of stage `variant` (default config.stage; required with stage "all").

  With stage "all" the metrics are those of every stage, zeros for the stages
  this step does not train, plus ``stage`` (the stage's index in STAGES).
  """
  stages = step_variants(config)
  if variant is None:
    if config.stage == "all":
      raise ValueError("IPFH train_step with config.stage='all' needs variant= one of "
                       f"{', '.join(STAGES)}; step_variant(config, step) gives the stage of a step.")
    variant = config.stage
  if variant not in stages:
    raise ValueError(f"IPFH train_step variant={variant!r}, but config.stage={config.stage!r} "
                     f"trains {', '.join(stages)}.")
  updates = {"coarse": coarse_update, "cognition": cognition_update, "policy": policy_update}
  new_state, metrics = updates[variant](state, batch, rng, config)
  names = [name for stage in stages for name in STAGE_METRICS[stage]]
  unlisted = set(metrics) - set(names)
  if unlisted:  # a developer error: STAGE_METRICS must list what the update returns
    raise AssertionError(f"IPFH {variant} update returned metrics {sorted(unlisted)} missing "
                         f"from STAGE_METRICS[{variant!r}].")
  metrics = {name: metrics.get(name, jnp.zeros((), jnp.float32)) for name in names}
  if config.stage == "all":
    metrics["stage"] = jnp.float32(STAGES.index(variant))
  return new_state.replace(step=state.step + 1), metrics


def _apply_updates(state: IPFHState, stage: str, grads: dict, config) -> IPFHState:
  optimizer = make_optimizers(config)[stage]
  updates, optimizer_state = optimizer.update(grads, state.optimizer_states[stage],
                                              _group(state.params, stage))
  new_group = optax.apply_updates(_group(state.params, stage), updates)
  return state.replace(params={**state.params, **new_group},
                       optimizer_states={**state.optimizer_states, stage: optimizer_state})


# ----------------------------------------------------------------------------- losses


def mean_squared_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example MSE over the last three axes (Eq. 11's L_mse, averaged over pixels)."""
  return jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))


def gram_matrix(features: jax.Array) -> jax.Array:
  """G(F) = Fᵀ F / (H·W) for (..., H, W, C) features -> (..., C, C) (Eq. 11, normalised by size)."""
  flat = features.reshape(features.shape[:-3] + (-1, features.shape[-1]))
  return jnp.einsum("...nc,...nd->...cd", flat, flat) / flat.shape[-2]


def texture_loss(features_a: jax.Array, features_b: jax.Array) -> jax.Array:
  """L_tex = ‖G(φ(ẑ)) − G(φ(z))‖² (Eq. 11), averaged over the Gram entries; per example."""
  return jnp.mean(jnp.square(gram_matrix(features_a) - gram_matrix(features_b)), axis=(-2, -1))


def lr_reference(params: dict, networks: Networks, kind: str, target: jax.Array,
                 lr_input: jax.Array) -> jax.Array:
  """The LR image D(ŷ) is compared with: the LR input x ("input", paper) or D(y) ("dual_of_target").

  Paper (Eq. 10): "x̂p is generated by ŷp with convolution operations and ...
  xp the corresponding ... LR input patch", i.e. ‖D(ŷ) − x‖². Its minimum is
  at ŷ = y only if D reproduces the degradation exactly (D(y) = x). A D that
  does not (the smoke run's 60 coarse steps leave ‖D(y) − x‖² ≈ 0.06 on
  [-1, 1] images, above ‖ỹ − y‖² ≈ 0.026) makes these terms pull R away
  from y, towards images on which D's error cancels, and biases the short-term
  reward by D's error at each location. "dual_of_target" compares D(ŷ) with
  D(y) instead: zero at ŷ = y for any D, still an LR-domain (low-pass) term.
  """
  if kind == "input":
    return lr_input
  return jax.lax.stop_gradient(networks.dual.apply({"params": params["dual"]}, target))


def dual_domain_loss(params: dict, networks: Networks, generated: jax.Array, target: jax.Array,
                     lr_target: jax.Array) -> jax.Array:
  """L_mse + L_tex in the HR domain and, through D, in the LR domain (Eq. 10 / 16); per example.

  `generated` and `target` are HR (patches or images), `lr_target` the LR
  image D(generated) should match (`lr_reference`: the LR input at the same
  place, or D(target)). Texture features φ are SphereFace's first-stage
  activations ("We extract the convolutional feature maps with the pre-trained
  SphereFace model ... as the texture information").
  """
  generated_lr = networks.dual.apply({"params": params["dual"]}, generated)
  texture = lambda images: networks.texture.apply({"params": params["cognition"]["backbone"]}, images)
  return (mean_squared_error(generated, target) + texture_loss(texture(generated), texture(target))
          + mean_squared_error(generated_lr, lr_target)
          + texture_loss(texture(generated_lr), texture(lr_target)))


def image_level_terms(params: dict, networks: Networks, images: jax.Array, batch: dict,
                      margin: float, lr_kind: str = "input") -> dict:
  """Per-example terms of the long-term reward (Eq. 12) and the image-level loss (Eq. 17).

  mse, texture: L_v = L_mse(ŷ, y) + L_tex(ŷ, y) (Eq. 15);
  lr_mse, lr_texture: the LR-domain terms of Eq. 17 between D(ŷ) (16², D is
  fully convolutional) and the LR input x (Eq. 17 writes "ŷlr, ỹ"; the
  dual-consistency section says the generated LR is compared with the LR
  input, which we follow), or D(y) with lr_kind "dual_of_target" (`lr_reference`);
  feature: L_f = ‖φ(ŷ) − φ(y)‖² (Eq. 13) on SphereFace's embedding (sphere20a
  has no average-pooling layer; its fc5 output is the feature), averaged over
  dimensions;
  identity: L_id, A-softmax cross-entropy (Eq. 14) with margin m; 0 where the
  identity is unknown (-1).
  """
  target = batch["target"]
  texture = lambda x: networks.texture.apply({"params": params["cognition"]["backbone"]}, x)
  generated_lr = networks.dual.apply({"params": params["dual"]}, images)
  lr_target = lr_reference(params, networks, lr_kind, target, batch["input"])
  embed = lambda x: networks.cognition.apply({"params": params["cognition"]["backbone"]}, x)
  embeddings, target_embeddings = embed(images), jax.lax.stop_gradient(embed(target))
  return {
      "mse": mean_squared_error(images, target),
      "texture": texture_loss(texture(images), texture(target)),
      "lr_mse": mean_squared_error(generated_lr, lr_target),
      "lr_texture": texture_loss(texture(generated_lr), texture(lr_target)),
      "feature": jnp.mean(jnp.square(embeddings - target_embeddings), axis=-1),
      "identity": identity_loss(params, embeddings, batch["identity"], margin),
  }


def long_term_reward(terms: dict, weights) -> jax.Array:
  """r_l = −(L_f + L_id + L_v) (Eq. 12), L_v = L_mse + L_tex (Eq. 15); per example, L_f / L_id weighted."""
  return -(weights.feature * terms["feature"] + weights.identity * terms["identity"]
           + terms["mse"] + terms["texture"])


def identity_loss(params: dict, embeddings: jax.Array, identities: jax.Array,
                  margin: float) -> jax.Array:
  """Per-example A-softmax cross-entropy (Eq. 14, paper: m = 1.5); 0 for unknown identities (-1)."""
  known = identities >= 0
  labels = jnp.where(known, identities, 0)
  logits = a_softmax_logits(embeddings, params["cognition"]["class_weights"], labels, margin)
  return jnp.where(known, optax.softmax_cross_entropy_with_integer_labels(logits, labels), 0.0)


def reinforce_loss(log_probs: jax.Array, rewards: jax.Array,
                   example_baselines: jax.Array | None = None) -> jax.Array:
  """Surrogate loss whose gradient is the REINFORCE estimate of −∇ E[Σ_t r_t].

  log_probs, rewards: (batch, T). Each log π(a_t | s_t) is weighted by its
  reward-to-go G_t = Σ_{k≥t} r_k minus a baseline. Baseline (the paper names
  none): `example_baselines` (batch,), if given, is subtracted from every G_t
  of its example (it must not depend on that example's actions; `policy_update`
  passes the long-term reward of the coarse image ỹ), then the leave-one-out
  mean of the result over the other examples of the batch,
  b_t,i = (Σ_j G_t,j − G_t,i) / (B − 1). Neither depends on example i's own
  actions, so the estimator stays unbiased, and they need no extra state (a
  plain batch mean would scale the gradient by (B − 1) / B). With B = 1 the
  leave-one-out baseline is 0.
  """
  returns = jnp.flip(jnp.cumsum(jnp.flip(rewards, axis=1), axis=1), axis=1)
  if example_baselines is not None:
    returns = returns - example_baselines[:, None]
  batch_size = returns.shape[0]
  if batch_size > 1:
    baseline = (jnp.sum(returns, axis=0, keepdims=True) - returns) / (batch_size - 1)
  else:
    baseline = jnp.zeros_like(returns)
  advantages = jax.lax.stop_gradient(returns - baseline)
  return -jnp.mean(jnp.sum(log_probs * advantages, axis=1))


# ----------------------------------------------------------------------------- the rollout


class RolloutSettings(NamedTuple):
  """Static settings of a rollout."""
  patch_size: int
  scale: int              # target_size / input_size
  use_policy: bool        # False: actions come from `forced_actions` (grid / random)
  sample: bool            # True: draw from the policy (training); False: arg-max (testing)
  lr_reference: str = "input"   # config.loss.lr_reference (`lr_reference`)
  reward: str = "paper"         # config.policy.reward: the short-term reward (`rollout_step`)
  exclude_repaired: bool = False   # arg-max only: skip centres inside repaired patches (`masked_logits`)


class StepOutput(NamedTuple):
  action: jax.Array       # int32 location index, row · W + column
  log_prob: jax.Array     # log π(a_t | s_t) (0 without the policy)
  patch_loss: jax.Array   # L_p of the repaired patch (Eq. 16)
  reward: jax.Array       # short-term reward r_s: −L_p ("paper", Eq. 10) or L_p before − after
  entropy: jax.Array      # of π(· | s_t), for monitoring


def patch_corner(action: jax.Array, height: int, width: int, patch_size: int) -> tuple:
  """Top-left corner of the patch centred at location `action`, clamped inside the image.

  Paper §III-B.2 "Action": "select a patch pt from all possible locations
  lt = {(ltx, lty), ltx ∈ [1,W], lty ∈ [1,H]}" with "a W×H-D vector" of
  probabilities. So every pixel is an action and is read as the patch centre
  (top-left = location − P/2); near the borders the patch is clamped to stay
  inside the image, so border locations map onto the nearest valid patch.
  """
  row, column = action // width, action % width
  top = jnp.clip(row - patch_size // 2, 0, height - patch_size)
  left = jnp.clip(column - patch_size // 2, 0, width - patch_size)
  return top, left


def low_resolution_patch(lr_image: jax.Array, top: jax.Array, left: jax.Array, patch_size: int,
                         scale: int) -> jax.Array:
  """The LR input's patch x_p under the HR patch at (top, left): (P/scale)² pixels, bilinear.

  LR pixel i covers HR pixels [scale·i, scale·(i+1)), so the HR patch's LR
  pixels sit at LR coordinates top/scale + a. When top is a multiple of the
  scale this is an exact crop; otherwise it interpolates between neighbours.
  """
  size = patch_size // scale
  padded = jnp.pad(lr_image, ((0, 1), (0, 1), (0, 0)), mode="edge")
  row, column = top // scale, left // scale
  row_fraction = (top % scale).astype(jnp.float32) / scale
  column_fraction = (left % scale).astype(jnp.float32) / scale
  window = jax.lax.dynamic_slice(padded, (row, column, 0), (size + 1, size + 1, lr_image.shape[-1]))
  window = (1 - row_fraction) * window[:-1] + row_fraction * window[1:]
  return (1 - column_fraction) * window[:, :-1] + column_fraction * window[:, 1:]


def initial_carry(coarse_image: jax.Array, patch_size: int) -> tuple:
  """s_0: the coarse image ỹ, no previous patch (zeros), no previous action (-1: one-hot of zeros)
  and no repaired pixels (an (H, W) bool map, read only with settings.exclude_repaired)."""
  patch = jnp.zeros((patch_size, patch_size, coarse_image.shape[-1]), coarse_image.dtype)
  repaired_pixels = jnp.zeros(coarse_image.shape[:2], bool)
  return coarse_image, patch, jnp.int32(-1), repaired_pixels


def masked_logits(logits: jax.Array, repaired_pixels: jax.Array) -> jax.Array:
  """Logits with every location inside an already repaired patch excluded (−inf).

  Not in the paper, whose arg-max may pick any location ("During testing phase,
  we select the location lt with the highest probability"); an option
  (config.policy.exclude_repaired) for a policy whose arg-max repeats one
  location. A centre outside every repaired patch gives a patch that overlaps
  each of them by at most half. Once every pixel is repaired nothing is excluded.
  """
  covered = repaired_pixels.reshape(-1)
  return jnp.where(jnp.all(covered), logits, jnp.where(covered, -jnp.inf, logits))


def rollout_step(params: dict, networks: Networks, settings: RolloutSettings, example: dict,
                 carry: tuple, step_input: tuple) -> tuple[tuple, StepOutput]:
  """One step t of the visual-semantic hallucinator for one example (Eq. 4).

  carry = (ŷ_{t-1}, p̂_{t-1}, a_{t-1}, repaired pixels); step_input = (rng key, forced action).
  The policy sees the state through stop_gradient: R is trained only by its
  patch and image losses, P only by REINFORCE.

  Short-term reward r_s (settings.reward):
  "paper"        r_s = −L_p(p̂_t) (Eq. 10: "We maximize the rs by minimizing the
                 mean square error and texture loss of all patch pairs"). It
                 mostly measures how hard the chosen place is, not what the
                 repair did: smooth background scores best, and repairing the
                 same patch again scores as well as the first time, so nothing
                 tells the policy to move on (README, IPFH).
  "improvement"  r_s = L_p(p_t) − L_p(p̂_t), the same terms on the patch before
                 and after this step's repair: what R achieved here. Zero for a
                 patch R leaves unchanged (an identity R, or a patch already
                 repaired as far as R can), largest where R helps most. This
                 changes the objective (L_p(p_t) depends on the action, so it is
                 not a baseline): E[Σ r_s] is the expected total patch-loss
                 reduction instead of minus the total patch loss.
  """
  image, last_patch, last_action, repaired_pixels = carry
  key, forced_action = step_input
  height, width, channels = image.shape
  size = settings.patch_size
  if settings.use_policy:
    one_hot = jax.nn.one_hot(last_action, height * width)  # all zeros for a_0 = -1
    logits = networks.policy.apply({"params": params["policy"]}, jax.lax.stop_gradient(image),
                                   jax.lax.stop_gradient(last_patch), one_hot)
    log_probs = jax.nn.log_softmax(logits)
    if settings.sample:
      action = jax.random.categorical(key, logits)
    elif settings.exclude_repaired:
      action = jnp.argmax(masked_logits(logits, repaired_pixels))
    else:
      action = jnp.argmax(logits)
    action = action.astype(jnp.int32)
    log_prob = log_probs[action]
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs)
  else:
    action, log_prob, entropy = forced_action, jnp.zeros(()), jnp.zeros(())
  top, left = patch_corner(action, height, width, size)
  patch = jax.lax.dynamic_slice(image, (top, left, 0), (size, size, channels))
  repaired = networks.restoration.apply({"params": params["restoration"]}, image, patch)
  new_image = jax.lax.dynamic_update_slice(image, repaired, (top, left, 0))
  repaired_pixels = jax.lax.dynamic_update_slice(repaired_pixels, jnp.ones((size, size), bool),
                                                 (top, left))
  target_patch = jax.lax.dynamic_slice(example["target"], (top, left, 0), (size, size, channels))
  lr_patch = low_resolution_patch(example["input"], top, left, size, settings.scale)
  lr_target = lr_reference(params, networks, settings.lr_reference, target_patch, lr_patch)
  patch_loss = dual_domain_loss(params, networks, repaired, target_patch, lr_target)
  if settings.reward == "improvement":
    loss_before = dual_domain_loss(params, networks, jax.lax.stop_gradient(patch), target_patch,
                                   lr_target)
    reward = jax.lax.stop_gradient(loss_before - patch_loss)
  else:
    reward = jax.lax.stop_gradient(-patch_loss)
  return ((new_image, repaired, action, repaired_pixels),
          StepOutput(action, log_prob, patch_loss, reward, entropy))


def rollout(params: dict, networks: Networks, settings: RolloutSettings, example: dict,
            keys: jax.Array, forced_actions: jax.Array) -> tuple[jax.Array, StepOutput]:
  """All T steps for one example as one lax.scan; returns ŷ_T and the stacked step outputs.

  example: {"coarse": ỹ (H, W, 3), "target": y, "input": x}; keys: (T,) keys;
  forced_actions: (T,) int32 (read only when settings.use_policy is False).
  """
  carry = initial_carry(example["coarse"], settings.patch_size)
  step = functools.partial(rollout_step, params, networks, settings, example)
  (image, *_), outputs = jax.lax.scan(step, carry, (keys, forced_actions))
  return image, outputs


def batched_rollout(params, networks, settings, examples, keys, forced_actions):
  """`rollout` vmapped over the batch: examples (B, ...), keys (B, T), forced_actions (B, T)."""
  return jax.vmap(rollout, in_axes=(None, None, None, 0, 0, 0))(
      params, networks, settings, examples, keys, forced_actions)


def selection_plan(config, batch_size: int, key) -> tuple[int, RolloutSettings, jax.Array]:
  """(T, settings, forced actions (B, T)) for config.policy.selection (Table VII's three strategies)."""
  size, patch = config.data.target_size, config.policy.patch_size
  scale = size // config.data.input_size
  selection = config.policy.selection
  if selection == "policy":
    steps = config.policy.steps
    actions = jnp.zeros((batch_size, steps), jnp.int32)
  elif selection == "grid":
    # "we divided the image of 128 × 128 evenly into 16 patches with size of 32 × 32"
    cells = jnp.arange(size // patch) * patch + patch // 2
    centres = (cells[:, None] * size + cells[None, :]).reshape(-1).astype(jnp.int32)
    steps = centres.shape[0]
    actions = jnp.broadcast_to(centres, (batch_size, steps))
  else:
    # "we randomly chosen 30 patches with 32 × 32"
    steps = config.policy.random_patches
    actions = jax.random.randint(key, (batch_size, steps), 0, size * size, jnp.int32)
  settings = RolloutSettings(patch, scale, use_policy=selection == "policy", sample=True,
                             lr_reference=config.loss.lr_reference, reward=config.policy.reward)
  return steps, settings, actions


def coarse_images(params: dict, networks: Networks, lr_images: jax.Array) -> jax.Array:
  return networks.coarse.apply({"params": params["coarse"]}, lr_images)[-1]


# ----------------------------------------------------------------------------- stage updates


def coarse_update(state: IPFHState, batch: dict, rng, config) -> tuple[IPFHState, dict]:
  """F_c with pixel MSE (Eq. 2) on every stack's output, and D on ground-truth pairs.

  Intermediate supervision of both hourglasses follows the hourglass paper
  [66]. D must map HR to LR for the LR-domain rewards; the paper does not say
  how D is trained, so we fit it here to the degradation, D(y) ≈ x on the
  training pairs ("F(G(x)) ≈ x"), and keep it frozen in the policy stage (a
  D trained jointly with R could learn to map anything to x).
  """
  del rng
  networks = build_networks(config)

  def loss_fn(group):
    outputs = networks.coarse.apply({"params": group["coarse"]}, batch["input"])
    loss_coarse = sum(jnp.mean(mean_squared_error(o, batch["target"])) for o in outputs)
    generated_lr = networks.dual.apply({"params": group["dual"]}, batch["target"])
    loss_dual = jnp.mean(mean_squared_error(generated_lr, batch["input"]))
    psnr = jnp.mean(image_quality.psnr_from_unit_range(outputs[-1], batch["target"]))
    return loss_coarse + loss_dual, {"loss_coarse": loss_coarse, "loss_dual": loss_dual,
                                     "psnr_coarse": psnr}

  grads, metrics = jax.grad(loss_fn, has_aux=True)(_group(state.params, "coarse"))
  return _apply_updates(state, "coarse", grads, config), metrics


def cognition_update(state: IPFHState, batch: dict, rng, config) -> tuple[IPFHState, dict]:
  """SphereFace + A-softmax (Eq. 14) on the ground-truth HR faces and their identities."""
  del rng
  networks = build_networks(config)
  known = batch["identity"] >= 0

  def loss_fn(group):
    embeddings = networks.cognition.apply({"params": group["cognition"]["backbone"]}, batch["target"])
    labels = jnp.where(known, batch["identity"], 0)
    logits = a_softmax_logits(embeddings, group["cognition"]["class_weights"], labels,
                              config.cognition.margin)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = jnp.maximum(jnp.sum(known), 1)
    loss = jnp.sum(jnp.where(known, losses, 0.0)) / count
    cosines = embeddings @ group["cognition"]["class_weights"]  # arg-max of cos θ_j = prediction
    accuracy = jnp.sum(jnp.where(known, jnp.argmax(cosines, -1) == labels, False)) / count
    return loss, {"loss_identity": loss, "identity_accuracy": accuracy.astype(jnp.float32)}

  grads, metrics = jax.grad(loss_fn, has_aux=True)(_group(state.params, "cognition"))
  return _apply_updates(state, "cognition", grads, config), metrics


def policy_update(state: IPFHState, batch: dict, rng, config) -> tuple[IPFHState, dict]:
  """REINFORCE on P and the patch + image losses on R through one scanned, vmapped rollout.

  Rewards (Eq. 9): r_t = r_s = −L_p(t) for t < T (Eq. 10) and
  r_T = r_l = −(L_f + L_id + L_v) (Eq. 12). R's loss: Σ_t L_p(t) + L_im (Eq. 16, 17).
  With selection "grid" / "random" (Table VII's baselines) only R trains.
  REINFORCE baseline (`reinforce_loss`): per example, r_l of the coarse image
  ỹ, which no action changes, so the advantage of the last reward is r_l's
  gain over ỹ rather than how hard that face is (in the CPU-scale runs r_l ≈ −2.8,
  mostly L_id of a barely trained recognizer, while r_l(ŷ) − r_l(ỹ), the
  metric reward_final_gain, is ~10⁻⁴); then the leave-one-out batch mean.

  config.policy.reward "improvement" (`rollout_step`): r_s = L_p before − after
  the repair, and r_T = r_l(ŷ_T) − r_l(ỹ), the long-term reward's improvement
  over the coarse image. Every return-to-go G_t contains r_T, so subtracting
  r_l(ỹ) from r_T is exactly the "paper" estimator's per-example baseline:
  the long-term term gives the same (unbiased, since r_l(ỹ) depends on no
  action) gradient either way, and only the short-term rewards differ. The
  leave-one-out batch mean is kept as the baseline for both.
  """
  networks = build_networks(config)
  weights = config.loss
  batch_size = batch["input"].shape[0]
  plan_key, rollout_key = jax.random.split(rng)
  steps, settings, actions = selection_plan(config, batch_size, plan_key)
  keys = jax.random.split(rollout_key, (batch_size, steps))
  frozen = state.params
  examples = {"coarse": jax.lax.stop_gradient(coarse_images(frozen, networks, batch["input"])),
              "target": batch["target"], "input": batch["input"]}
  coarse_reward = jax.lax.stop_gradient(long_term_reward(
      image_level_terms(frozen, networks, examples["coarse"], batch, config.cognition.margin,
                        config.loss.lr_reference), weights))

  def loss_fn(group):
    params = {**frozen, **group}
    images, outputs = batched_rollout(params, networks, settings, examples, keys, actions)
    terms = image_level_terms(params, networks, images, batch, config.cognition.margin,
                              config.loss.lr_reference)
    final_reward = long_term_reward(terms, weights)
    image_loss = jnp.mean(terms["mse"] + terms["texture"] + terms["lr_mse"] + terms["lr_texture"]
                          + weights.feature * terms["feature"] + weights.identity * terms["identity"])
    patch_loss = jnp.mean(jnp.sum(outputs.patch_loss, axis=1))
    if config.policy.reward == "improvement":
      last_reward, example_baselines = final_reward - coarse_reward, None
    else:
      last_reward, example_baselines = final_reward, coarse_reward
    # Eq. 9: r_t = r_s for t < T, r_T = r_l.
    rewards = jax.lax.stop_gradient(outputs.reward.at[:, -1].set(last_reward))
    loss_policy = (reinforce_loss(outputs.log_prob, rewards, example_baselines)
                   if settings.use_policy else jnp.zeros(()))
    metrics = {
        "loss_policy": loss_policy,
        "loss_restoration": patch_loss + image_loss,
        "loss_patch": patch_loss,
        "loss_image": image_loss,
        "return": jnp.mean(jnp.sum(rewards, axis=1)),
        "reward_final": jnp.mean(final_reward),
        "reward_final_gain": jnp.mean(final_reward - coarse_reward),   # r_l(ŷ) − r_l(ỹ)
        "policy_entropy": jnp.mean(outputs.entropy),
        "psnr_rollout": jnp.mean(image_quality.psnr_from_unit_range(images, batch["target"])),
        "psnr_coarse": jnp.mean(image_quality.psnr_from_unit_range(examples["coarse"], batch["target"])),
    }
    return loss_policy + patch_loss + image_loss, metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(_group(state.params, "policy"))
  return _apply_updates(state, "policy", grads, config), metrics


# ----------------------------------------------------------------------------- evaluation


def hallucinate_images(state: IPFHState, batch: dict, config) -> dict:
  """LR → bicubic, coarse ỹ and final ŷ with the configured patch selection (arg-max policy)."""
  networks = build_networks(config)
  batch_size = batch["input"].shape[0]
  # eval_step has no RNG: "random" selection draws from a key fixed by config.seed.
  plan_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  steps, settings, actions = selection_plan(config, batch_size, plan_key)
  settings = settings._replace(sample=False, exclude_repaired=config.policy.exclude_repaired)
  keys = jax.random.split(jax.random.key(0), (batch_size, steps))
  coarse = coarse_images(state.params, networks, batch["input"])
  examples = {"coarse": coarse, "target": batch["target"], "input": batch["input"]}
  images, _ = batched_rollout(state.params, networks, settings, examples, keys, actions)
  bicubic = bicubic_upsample(batch["input"], config.data.target_size)
  return {"lr": batch["input"], "bicubic": jnp.clip(bicubic, -1, 1), "coarse": jnp.clip(coarse, -1, 1),
          "output": jnp.clip(images, -1, 1), "target": batch["target"]}


def eval_step(state: IPFHState, batch: dict, *, config) -> dict:
  """PSNR / SSIM / identity cosine (SphereFace embeddings vs the target's) for bicubic, ỹ and ŷ."""
  networks = build_networks(config)
  images = hallucinate_images(state, batch, config)
  embed = lambda x: networks.cognition.apply({"params": state.params["cognition"]["backbone"]}, x)
  target_embeddings = embed(batch["target"])
  values = {}
  for name, suffix in (("output", ""), ("coarse", "_coarse"), ("bicubic", "_bicubic")):
    generated = jnp.clip(images[name], -1, 1)
    values["psnr" + suffix] = image_quality.psnr_from_unit_range(generated, batch["target"])
    values["ssim" + suffix] = image_quality.ssim_from_unit_range(generated, batch["target"])
    values["identity_cosine" + suffix] = identity_metrics.cosine_similarity(embed(generated),
                                                                            target_embeddings)
  return values


def hallucinate(state: IPFHState, batch: dict, *, config) -> dict:
  return hallucinate_images(state, batch, config)
