"""IPFH (paper 004): coarse hourglass hallucinator, then a REINFORCE patch policy.

Three training stages (paper §III-C "Training"), chosen by ``config.stage``;
each is a named step of the `Method` that ``make(config)`` builds:

``"coarse"``     F_c with pixel MSE (Eq. 2), and the dual-consistency net D
                 learning HR → LR on ground-truth pairs (see `coarse_step`).
``"cognition"``  SphereFace-20 C fine-tuned with A-softmax (Eq. 14) on the
                 training identities.
``"policy"``     policy controller P (REINFORCE) and local restoration net R
                 (patch loss Eq. 16 at every step + image loss Eq. 17 after T
                 steps); F_c, D and C frozen ("We fixed the parameters of
                 coarse visual hallucinator and cognition network").
``"all"``        the three in order in one run: steps [0, c) coarse,
                 [c, c + g) cognition, the rest policy (``config.stage_steps``).
                 The trainer compiles one program per named step and
                 `schedule` picks it from the host step number, so no
                 ``lax.switch`` runs on device (on XLA:CPU, convolution
                 gradients inside a conditional run ~10× slower: F_c's backward
                 0.25 s plain vs 3.1 s in ``lax.cond``; cf. jax-ml/jax#12868),
                 and "all" trains as fast as the three single-stage runs.

The train state holds every network and one optimizer state per trained
network (``config.optim.<network>``) whatever the stage, so a checkpoint of
any stage restores into any other and one checkpoint evaluates on its own.
A single-stage run starts from earlier runs: ``config.weights.coarse`` /
``config.weights.cognition`` name the workdir of a finished "coarse" /
"cognition" (or "all") run, whose latest checkpoint's F_c + D / C parameters
`load_pretrained` copies in when training starts (the network sizes in the
config must match that run's). Choice: they stay in the train state rather
than in the frozen tree (issue 10 suggests the frozen tree for the policy
stage's F_c): stage "all" trains them in the state, one layout serves every
stage with the same step functions, and the policy run's checkpoint needs no
other workdir to evaluate. IPFH has no frozen tree.

The T-step rollout is `hallujax.methods.ipfh_rollout`: one ``lax.scan`` over a
per-example step function, vmapped over the batch, inside the jitted policy
step; its gradient is taken through the scan.

Patch selection at evaluation (and in training, for the ablation of Table VII)
is ``config.policy.selection``: ``"policy"`` (sample in training, arg-max at
test), ``"grid"`` (the (H/P)² non-overlapping patches, 16 for 128² / 32²)
or ``"random"`` (``config.policy.random_patches`` uniform locations, 30).
The arg-max of a near-uniform (undertrained) policy is one location at every
step, so R repairs the same patch T times (README, IPFH: the CPU-scale Table VII).
``config.policy.reward`` picks the short-term reward ("paper", Eq. 10, or
"improvement", `ipfh_rollout.rollout_step`); ``config.policy.exclude_repaired``
(not in the paper, off by default) makes the test-time arg-max skip repaired patches.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging

from hallujax import optim
from hallujax.methods import Method, phase_at
from hallujax.methods import ipfh_rollout as rollout_lib
from hallujax.methods.ipfh_rollout import (LR_REFERENCES, REWARDS, SELECTIONS, Selection,
                                           batched_rollout, lr_reference, mean_squared_error,
                                           texture_loss)
from hallujax.metrics import identity as identity_metrics
from hallujax.metrics import image_quality
from hallujax.models.ipfh import (CoarseHallucinator, DualConsistency, LocalRestoration, Networks,
                                  PolicyController, SphereFaceTextureFeatures, bicubic_upsample)
from hallujax.models.recognition import SphereFace, a_softmax_logits

STAGES = ("coarse", "cognition", "policy")
# The networks each stage trains; each has its own optimizer section, config.optim.<network>.
STAGE_NETWORKS = {"coarse": ("coarse", "dual"), "cognition": ("cognition",),
                  "policy": ("policy", "restoration")}
TRAINED = tuple(name for stage in STAGES for name in STAGE_NETWORKS[stage])


@flax.struct.dataclass
class IPFHState:
  step: jax.Array
  params: dict            # coarse, dual, cognition {backbone, class_weights}, policy, restoration
  optimizer_states: dict  # one per trained network, keyed like `params`


class Objective(NamedTuple):
  """The policy stage's loss and reward settings (config.loss, config.cognition.margin, config.policy)."""
  margin: float           # A-softmax m (Eq. 14)
  feature: float          # weight of L_f in r_l (Eq. 12) and L_im (Eq. 17)
  identity: float         # weight of L_id
  lr_reference: str = "input"   # `ipfh_rollout.lr_reference`
  reward: str = "paper"         # short-term reward (`ipfh_rollout.rollout_step`)


# ----------------------------------------------------------------------------- built once


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


def selection_of(config) -> Selection:
  """config.policy.selection and what the rollout needs with it."""
  size = config.data.target_size
  return Selection(kind=config.policy.selection, image_size=size, patch_size=config.policy.patch_size,
                   scale=size // config.data.input_size, policy_steps=config.policy.steps,
                   random_patches=config.policy.random_patches, lr_reference=config.loss.lr_reference,
                   reward=config.policy.reward, exclude_repaired=config.policy.exclude_repaired)


def objective_of(config) -> Objective:
  return Objective(margin=config.cognition.margin, feature=config.loss.feature,
                   identity=config.loss.identity, lr_reference=config.loss.lr_reference,
                   reward=config.policy.reward)


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


def batch_spec(config) -> dict:
  size, low = config.data.target_size, config.data.input_size
  return {
      "input": jax.ShapeDtypeStruct((low, low, config.data.input_channels), jnp.float32),
      "target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }


def stages_of(stage: str) -> tuple[str, ...]:
  """The stages config.stage trains, in order: all three for "all", else just that one."""
  return STAGES if stage == "all" else (stage,)


def stage_schedule(stage: str, stage_steps: dict) -> Callable[[int], str]:
  """Stage of step number `step` (host int from 0): "all" runs [0, c) coarse, [c, c + g) cognition,
  the rest policy (config.stage_steps); a single-stage run is that stage throughout."""
  if stage != "all":
    return lambda step: stage
  boundaries = (stage_steps["coarse"], stage_steps["coarse"] + stage_steps["cognition"])
  return functools.partial(phase_at, boundaries, STAGES)


def make(config) -> Method:
  """IPFH built once for `config`: networks, optimizers and settings are closed over."""
  check_config(config)
  networks = build_networks(config)
  # Every trained network's optimizer, whatever the stage: one state layout for all stages.
  optimizers = optim.make_all(config.optim, TRAINED)
  selection, objective = selection_of(config), objective_of(config)
  spec = batch_spec(config)
  stages = stages_of(config.stage)
  step_functions = {
      "coarse": functools.partial(coarse_step, networks, optimizers),
      "cognition": functools.partial(cognition_step, networks, optimizers, objective.margin),
      "policy": functools.partial(policy_step, networks, optimizers, objective, selection),
  }
  schedule = stage_schedule(config.stage, {name: int(config.stage_steps[name]) for name in STAGES})
  # eval_step has no RNG: "random" selection draws from a key fixed by config.seed.
  evaluation = functools.partial(hallucinate_images, networks, selection, config.seed)
  previous_runs = {name: config.weights.get(name, "") for name in ("coarse", "cognition")}
  return Method(
      batch_spec=spec,
      init=functools.partial(init, networks, optimizers, spec, config.data.num_identities),
      steps={stage: step_functions[stage] for stage in stages},
      schedule=schedule,
      phase=schedule,
      eval_step=functools.partial(eval_step, networks, evaluation),
      hallucinate=lambda state, frozen, batch: evaluation(state, batch),
      load_pretrained=functools.partial(
          load_previous_stages, config.stage, previous_runs,
          functools.partial(restore_parameters, config)),
  )


# ----------------------------------------------------------------------------- state


def init(networks: Networks, optimizers: dict, spec: dict, num_identities: int, rng) -> IPFHState:
  """Every network's parameters and every trained network's optimizer state. Pure: no file I/O."""
  # Drawn from an "rbg" key made from `rng`'s bits: XLA:CPU compiles threefry's random bits
  # slowly (about 3× longer for this init with jax_threefry_partitionable, the default).
  rng = jax.random.wrap_key_data(jnp.resize(jax.random.key_data(rng).reshape(-1), (4,)), impl="rbg")
  size, patch = spec["target"].shape[0], networks.restoration.patch_size
  lr_images = jnp.zeros((1,) + spec["input"].shape, jnp.float32)
  hr_images = jnp.zeros((1, size, size, 3), jnp.float32)
  keys = jax.random.split(rng, 6)
  params = {
      "coarse": networks.coarse.init(keys[0], lr_images)["params"],
      "dual": networks.dual.init(keys[1], hr_images)["params"],
      "cognition": {
          "backbone": networks.cognition.init(keys[2], hr_images)["params"],
          # A-softmax class centres W (D, N), normalised in the logits (Eq. 14).
          "class_weights": 0.01 * jax.random.normal(
              keys[3], (networks.cognition.embedding_dim, num_identities)),
      },
      "policy": networks.policy.init(keys[4], hr_images[0], hr_images[0, :patch, :patch],
                                     jnp.zeros((size * size,)))["params"],
      "restoration": networks.restoration.init(keys[5], hr_images[0],
                                               hr_images[0, :patch, :patch])["params"],
  }
  optimizer_states = {name: optimizers[name].init(params[name]) for name in TRAINED}
  return IPFHState(step=jnp.zeros((), jnp.int32), params=params, optimizer_states=optimizer_states)


def restore_parameters(config, workdir: str) -> tuple[dict, int]:
  """(parameters, step) of the latest checkpoint of the run in `workdir` (sizes as `config`'s)."""
  from hallujax.trainer import restore_run   # the trainer imports the methods
  _, state, step, _ = restore_run(config, workdir)
  return state.params, step


def load_previous_stages(stage: str, workdirs: dict, restore: Callable, state: IPFHState) -> IPFHState:
  """Parameters from earlier stages' workdirs (config.weights.coarse / .cognition), if given.

  `restore(workdir) -> (params, step)`. Runs when training starts at step 0.
  """
  params = dict(state.params)
  sources = {"coarse": ("coarse", "dual"), "cognition": ("cognition",)}
  for name, groups in sources.items():
    workdir = workdirs.get(name, "")
    if workdir:
      previous, step = restore(workdir)
      for group in groups:
        params[group] = previous[group]
      logging.info("IPFH: loaded %s from %s (step %d).", "+".join(groups), workdir, step)
      print(f"IPFH: loaded {' + '.join(groups)} from {workdir} (step {step}).", flush=True)
    elif stage == "policy":
      _warn(f"IPFH stage 'policy': config.weights.{name} is empty, so the frozen {name} network "
            f"keeps its random initialization. Point it at the workdir of a finished '{name}' run "
            f"(or use config.stage='all').")
  if stage in ("cognition", "all") and not workdirs.get("cognition", ""):
    _warn("IPFH: the cognition network (SphereFace) starts from a random initialization and is "
          "trained on the training identities in the 'cognition' stage; the paper fine-tunes a "
          "pretrained SphereFace, for which hallujax has no weight converter.")
  return state.replace(params=params)


def _warn(message: str) -> None:
  logging.warning(message)
  print("WARNING: " + message, flush=True)


def updated(state: IPFHState, optimizers: dict, gradients: dict) -> IPFHState:
  """One optimizer update of each network in `gradients` ({network: gradient}); step + 1."""
  params, optimizer_states = dict(state.params), dict(state.optimizer_states)
  for name, gradient in gradients.items():
    params[name], optimizer_states[name] = optim.apply_update(
        optimizers[name], state.params[name], state.optimizer_states[name], gradient)
  return state.replace(step=state.step + 1, params=params, optimizer_states=optimizer_states)


def _networks_of(params: dict, stage: str) -> dict:
  return {name: params[name] for name in STAGE_NETWORKS[stage]}


# ----------------------------------------------------------------------------- losses


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
  of its example (it must not depend on that example's actions; `policy_step`
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


def coarse_images(params: dict, networks: Networks, lr_images: jax.Array) -> jax.Array:
  return networks.coarse.apply({"params": params["coarse"]}, lr_images)[-1]


# ----------------------------------------------------------------------------- stage steps


def coarse_step(networks: Networks, optimizers: dict, state: IPFHState, frozen: dict, batch: dict,
                rng) -> tuple[IPFHState, dict]:
  """F_c with pixel MSE (Eq. 2) on every stack's output, and D on ground-truth pairs.

  Intermediate supervision of both hourglasses follows the hourglass paper
  [66]. D must map HR to LR for the LR-domain rewards; the paper does not say
  how D is trained, so we fit it here to the degradation, D(y) ≈ x on the
  training pairs ("F(G(x)) ≈ x"), and keep it frozen in the policy stage (a
  D trained jointly with R could learn to map anything to x).
  """
  del frozen, rng

  def loss_fn(trained):
    outputs = networks.coarse.apply({"params": trained["coarse"]}, batch["input"])
    loss_coarse = sum(jnp.mean(mean_squared_error(o, batch["target"])) for o in outputs)
    generated_lr = networks.dual.apply({"params": trained["dual"]}, batch["target"])
    loss_dual = jnp.mean(mean_squared_error(generated_lr, batch["input"]))
    psnr = jnp.mean(image_quality.psnr_from_unit_range(outputs[-1], batch["target"]))
    return loss_coarse + loss_dual, {"loss_coarse": loss_coarse, "loss_dual": loss_dual,
                                     "psnr_coarse": psnr}

  gradients, metrics = jax.grad(loss_fn, has_aux=True)(_networks_of(state.params, "coarse"))
  return updated(state, optimizers, gradients), metrics


def cognition_step(networks: Networks, optimizers: dict, margin: float, state: IPFHState,
                   frozen: dict, batch: dict, rng) -> tuple[IPFHState, dict]:
  """SphereFace + A-softmax (Eq. 14) on the ground-truth HR faces and their identities."""
  del frozen, rng
  known = batch["identity"] >= 0

  def loss_fn(trained):
    cognition = trained["cognition"]
    embeddings = networks.cognition.apply({"params": cognition["backbone"]}, batch["target"])
    labels = jnp.where(known, batch["identity"], 0)
    logits = a_softmax_logits(embeddings, cognition["class_weights"], labels, margin)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = jnp.maximum(jnp.sum(known), 1)
    loss = jnp.sum(jnp.where(known, losses, 0.0)) / count
    cosines = embeddings @ cognition["class_weights"]  # arg-max of cos θ_j = prediction
    accuracy = jnp.sum(jnp.where(known, jnp.argmax(cosines, -1) == labels, False)) / count
    return loss, {"loss_identity": loss, "identity_accuracy": accuracy.astype(jnp.float32)}

  gradients, metrics = jax.grad(loss_fn, has_aux=True)(_networks_of(state.params, "cognition"))
  return updated(state, optimizers, gradients), metrics


def policy_step(networks: Networks, optimizers: dict, objective: Objective, selection: Selection,
                state: IPFHState, frozen: dict, batch: dict, rng) -> tuple[IPFHState, dict]:
  """REINFORCE on P and the patch + image losses on R through one scanned, vmapped rollout.

  Rewards (Eq. 9): r_t = r_s = −L_p(t) for t < T (Eq. 10) and
  r_T = r_l = −(L_f + L_id + L_v) (Eq. 12). R's loss: Σ_t L_p(t) + L_im (Eq. 16, 17).
  With selection "grid" / "random" (Table VII's baselines) only R trains.
  REINFORCE baseline (`reinforce_loss`): per example, r_l of the coarse image
  ỹ, which no action changes, so the advantage of the last reward is r_l's
  gain over ỹ rather than how hard that face is (in the CPU-scale runs r_l ≈ −2.8,
  mostly L_id of a barely trained recognizer, while r_l(ŷ) − r_l(ỹ), the
  metric reward_final_gain, is ~10⁻⁴); then the leave-one-out batch mean.

  config.policy.reward "improvement" (`ipfh_rollout.rollout_step`): r_s = L_p
  before − after the repair, and r_T = r_l(ŷ_T) − r_l(ỹ), the long-term reward's
  improvement over the coarse image. Every return-to-go G_t contains r_T, so
  subtracting r_l(ỹ) from r_T is exactly the "paper" estimator's per-example
  baseline: the long-term term gives the same (unbiased, since r_l(ỹ) depends
  on no action) gradient either way, and only the short-term rewards differ.
  The leave-one-out batch mean is kept as the baseline for both.
  """
  del frozen
  batch_size = batch["input"].shape[0]
  plan_key, rollout_key = jax.random.split(rng)
  steps, settings, actions = rollout_lib.selection_plan(selection, batch_size, plan_key)
  keys = jax.random.split(rollout_key, (batch_size, steps))
  fixed = state.params   # F_c, D and C: "We fixed the parameters of coarse visual hallucinator ..."
  examples = {"coarse": jax.lax.stop_gradient(coarse_images(fixed, networks, batch["input"])),
              "target": batch["target"], "input": batch["input"]}
  coarse_reward = jax.lax.stop_gradient(long_term_reward(
      image_level_terms(fixed, networks, examples["coarse"], batch, objective.margin,
                        objective.lr_reference), objective))

  def loss_fn(trained):
    params = {**fixed, **trained}
    images, outputs = batched_rollout(params, networks, settings, examples, keys, actions)
    terms = image_level_terms(params, networks, images, batch, objective.margin,
                              objective.lr_reference)
    final_reward = long_term_reward(terms, objective)
    image_loss = jnp.mean(terms["mse"] + terms["texture"] + terms["lr_mse"] + terms["lr_texture"]
                          + objective.feature * terms["feature"]
                          + objective.identity * terms["identity"])
    patch_loss = jnp.mean(jnp.sum(outputs.patch_loss, axis=1))
    if objective.reward == "improvement":
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

  gradients, metrics = jax.grad(loss_fn, has_aux=True)(_networks_of(state.params, "policy"))
  return updated(state, optimizers, gradients), metrics


# ----------------------------------------------------------------------------- evaluation


def hallucinate_images(networks: Networks, selection: Selection, seed: int, state: IPFHState,
                       batch: dict) -> dict:
  """LR → bicubic, coarse ỹ and final ŷ with the configured patch selection (arg-max policy)."""
  batch_size = batch["input"].shape[0]
  plan_key = jax.random.fold_in(jax.random.key(seed), 1)
  steps, settings, actions = rollout_lib.selection_plan(selection, batch_size, plan_key)
  settings = rollout_lib.evaluation_settings(selection, settings)
  keys = jax.random.split(jax.random.key(0), (batch_size, steps))
  coarse = coarse_images(state.params, networks, batch["input"])
  examples = {"coarse": coarse, "target": batch["target"], "input": batch["input"]}
  images, _ = batched_rollout(state.params, networks, settings, examples, keys, actions)
  bicubic = bicubic_upsample(batch["input"], selection.image_size)
  return {"lr": batch["input"], "bicubic": jnp.clip(bicubic, -1, 1), "coarse": jnp.clip(coarse, -1, 1),
          "output": jnp.clip(images, -1, 1), "target": batch["target"]}


def eval_step(networks: Networks, hallucinate: Callable, state: IPFHState, frozen: dict,
              batch: dict) -> dict:
  """PSNR / SSIM / identity cosine (SphereFace embeddings vs the target's) for bicubic, ỹ and ŷ.

  `hallucinate(state, batch)` gives the image columns (`hallucinate_images`).
  """
  del frozen
  images = hallucinate(state, batch)
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
