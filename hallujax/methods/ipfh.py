"""IPFH (paper 004): coarse hourglass hallucinator, then a REINFORCE patch policy.

Four training stages (paper §III-C "Training" and "Hallucinator"), chosen by
``config.stage``; each is a named step of the `Method` that ``make(config)``
builds, and a phase of its schedule:

``"coarse"``       F_c with pixel MSE (Eq. 2), and the dual-consistency net D
                   learning HR → LR on ground-truth pairs (see `coarse_step`).
``"cognition"``    SphereFace-20 C fine-tuned with A-softmax (Eq. 14) on the
                   training identities ("We then fine-tuned the cognition
                   network"); evaluation logs its held-out identification
                   accuracy (``identity_accuracy``).
``"restoration"``  R pretrained on random patch pairs of (ỹ, y) with L_p (Eq. 16):
                   "We first pre-trained this network on randomly selected patch
                   pairs and fine-tuned it during hallucinator optimization".
``"policy"``       policy controller P (REINFORCE) and R fine-tuned with the
                   patch loss L_p at every step t and the image loss L_im after T
                   steps (Eq. 16, 17); F_c, D and C frozen ("We fixed the
                   parameters of coarse visual hallucinator and cognition network").
``"all"``          the four in order in one run (``config.stage_steps``). The
                   trainer compiles one program per named step and `schedule`
                   picks it from the host step number, so no ``lax.switch`` runs
                   on device (on XLA:CPU, convolution gradients inside a
                   conditional run ~10× slower: F_c's backward 0.25 s plain vs
                   3.1 s in ``lax.cond``; cf. jax-ml/jax#12868).

The three pretraining stages' steps (and the train state) are `hallujax.methods.ipfh_pretraining`, the
policy stage's `hallujax.methods.ipfh_policy`; this module builds the method around them.

The train state holds every network and one optimizer state per trained
network (``config.optim.<network>``) whatever the stage, so a checkpoint of
any stage restores into any other and one checkpoint evaluates on its own.
A single-stage run starts from earlier runs: ``config.weights.coarse`` /
``.cognition`` / ``.restoration`` name the workdir of a finished run whose
latest checkpoint's F_c + D / C / R parameters `load_pretrained` copies in when
training starts (the network sizes in the config must match that run's).
IPFH has no frozen tree.

The losses and rewards (Eq. 12–17) and the REINFORCE surrogates are
`hallujax.methods.ipfh_losses`. The T-step rollout is `hallujax.methods.ipfh_rollout`: one ``lax.scan`` over a
batch-vmapped step inside the jitted policy step. ``config.restoration.update_every``
"step" (the paper: "At each t-step, we update the local restoration network
parameters with patch-level loss Lp ... After T-step, we add the image-level
loss Lim") updates R inside the scan after every step and once more with L_im;
"batch" updates R once per batch with Σ_t L_p + L_im.

Patch selection (``config.policy.selection``) applies in training AND at
evaluation, so each of Table VII's rows is its own trained model ("At the
training stage, we refined the patches with ..."): ``"policy"`` (sample in
training, arg-max at test), ``"grid"`` ((H/P)² non-overlapping patches, 16 for
128² / 32²), ``"random"`` (``config.policy.random_patches`` uniform locations,
30), and ``"oracle"`` (not in the paper: greedy by the ground truth's gain from
R, an upper bound; `ipfh_rollout.oracle_corner`). Evaluation logs the policy's
test-time entropy and the number of distinct patches per face.

Options to make the policy learnable (not in the paper, off by default,
``config.policy``): ``action_stride`` (a coarser action grid), ``head="conv"``
(a fully convolutional score map), ``entropy_bonus``, ``baseline="value"`` (a
learned state value) with ``normalize_advantages``, ``mask_repaired_in_training``
(no probability on repaired patches, in training and test), ``reward="improvement"``,
``discount`` (γ < 1: returns that credit each repair to the step that chose it),
``normalize_per_step`` (advantages scaled per step t: r_l's spread is ~20× the r_s's),
``action_history`` (the context marks every repaired cell; our reading of "context state memorizing
the history action") and the test-time ``exclude_repaired``. docs/ipfh.md has what each measured, and
the recipe with which the policy learned (issue #28: per-step normalized leave-one-out advantages,
γ = 0, the history, a policy rate of 2·10⁻²). Every policy step logs its diagnostics: the spreads of
r_s and r_T and of the advantages, P's gradient and parameter norms, and the logits' spread.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from absl import logging

from hallujax import optim
from hallujax.data.faceworld import DEGRADED, gives_degraded_region
from hallujax.methods import MakeContext, Method, phase_at
from hallujax.methods import ipfh_rollout as rollout_lib
from hallujax.methods.ipfh_rollout import LR_REFERENCES, REWARDS, SELECTIONS, Selection, StepRecord
from hallujax.methods.ipfh_losses import Objective, identified
# The stages' steps and the state they share; imported here too so that `ipfh.<name>` reaches them.
from hallujax.methods.ipfh_pretraining import (STAGE_NETWORKS, IPFHState, coarse_images,  # noqa: F401
                                               coarse_step, cognition_step, random_patch_pairs, restoration_step)
from hallujax.methods.ipfh_policy import policy_loss, policy_outputs, policy_step  # noqa: F401
from hallujax.metrics import identity as identity_metrics
from hallujax.metrics import image_quality
from hallujax.models.ipfh import (CoarseHallucinator, DualConsistency, LocalRestoration, Networks,
                                  PolicyController, SphereFaceTextureFeatures, bicubic_upsample)
from hallujax.models.recognition import SphereFace

STAGES = ("coarse", "cognition", "restoration", "policy")
TRAINED = ("coarse", "dual", "cognition", "policy", "restoration")
BASELINES = ("leave_one_out", "value")        # config.policy.baseline
RESTORATION_UPDATES = ("step", "batch")   # config.restoration.update_every
IMAGE_LR = ("bilinear", "dual")                # config.loss.image_lr
HEADS = ("dense", "conv")                      # config.policy.head


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
                              context_features=config.policy.context_features,
                              action_stride=config.policy.action_stride,
                              head=config.policy.head,
                              value_head=config.policy.baseline == "value"),
      restoration=LocalRestoration(patch_size=config.policy.patch_size,
                                   features=config.restoration.features,
                                   patch_layers=config.restoration.patch_layers,
                                   decoder_layers=config.restoration.decoder_layers,
                                   sees_repaired=bool(config.restoration.sees_repaired)),
  )


def selection_of(config) -> Selection:
  """config.policy.selection and what the rollout needs with it."""
  size = config.data.target_size
  return Selection(kind=config.policy.selection, image_size=size, patch_size=config.policy.patch_size,
                   scale=size // config.data.input_size, policy_steps=config.policy.steps,
                   random_patches=config.policy.random_patches, lr_reference=config.loss.lr_reference,
                   reward=config.policy.reward, exclude_repaired=config.policy.exclude_repaired,
                   mask_in_training=config.policy.mask_repaired_in_training,
                   action_stride=config.policy.action_stride, oracle_stride=config.policy.oracle_stride,
                   update_restoration=(config.restoration.update_every == "step"
                                       and bool(config.restoration.fine_tune)),
                   action_history=bool(config.policy.action_history))


def policy_discount(config) -> float:
  """config.policy.discount; runs saved before the option existed (their config.json, read to restore an
  earlier stage: `restore_parameters`) have none and used the paper's undiscounted return."""
  return float(config.policy.discount)


def objective_of(config) -> Objective:
  return Objective(margin=config.cognition.margin, feature=config.loss.feature,
                   identity=config.loss.identity, lr_reference=config.loss.lr_reference,
                   reward=config.policy.reward, image_lr=config.loss.image_lr,
                   image_lr_size=config.loss.image_lr_size, baseline=config.policy.baseline,
                   normalize_advantages=config.policy.normalize_advantages,
                   normalize_per_step=bool(config.policy.normalize_per_step),
                   entropy_bonus=config.policy.entropy_bonus, value_weight=config.policy.value_weight,
                   discount=policy_discount(config),
                   restoration_update=config.restoration.update_every,
                   fine_tune_restoration=bool(config.restoration.fine_tune),
                   pretrain_patches=config.restoration.pretrain_patches,
                   pretrain_repairs=config.restoration.pretrain_repairs)


def _one_of(value, known, field: str) -> None:
  if value not in known:
    raise ValueError(f"{field}={value!r}; expected one of {', '.join(known)}.")


def check_config(config) -> None:
  """Errors a user can act on, before anything is traced."""
  _one_of(config.stage, STAGES + ("all",), "config.stage")
  _one_of(config.policy.reward, REWARDS, "config.policy.reward")
  _one_of(config.policy.selection, SELECTIONS, "config.policy.selection")
  _one_of(config.policy.baseline, BASELINES, "config.policy.baseline")
  _one_of(config.policy.head, HEADS, "config.policy.head")
  _one_of(config.restoration.update_every, RESTORATION_UPDATES, "config.restoration.update_every")
  _one_of(config.loss.image_lr, IMAGE_LR, "config.loss.image_lr")
  _one_of(config.loss.lr_reference, LR_REFERENCES, "config.loss.lr_reference")
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
  stride = config.policy.action_stride
  if stride < 1 or stride & (stride - 1) or stride > size:
    raise ValueError(f"config.policy.action_stride={stride} must be a power of two ≤ target_size={size} "
                     f"(1: every pixel is an action, the paper).")
  discount = policy_discount(config)
  if not 0.0 <= discount <= 1.0:
    raise ValueError(f"config.policy.discount={discount} must be in [0, 1] (1: the paper's undiscounted return).")
  repairs = config.restoration.pretrain_repairs
  if not isinstance(repairs, int) or repairs < 0:
    raise ValueError(f"config.restoration.pretrain_repairs={repairs!r} must be an integer ≥ 0 (0: R's pretraining "
                     f"pairs are cut from ỹ, the paper).")
  if not 0 < config.loss.image_lr_size <= size:
    raise ValueError(f"config.loss.image_lr_size={config.loss.image_lr_size} must be in (0, {size}] "
                     f"(paper: 32 for 128² faces).")
  if 2 ** len(config.dual.widths) * 2 != scale:
    raise ValueError(
        f"config.dual.widths={tuple(config.dual.widths)} gives {len(config.dual.widths) + 1} stride-2 "
        f"convolutions (×{2 ** (len(config.dual.widths) + 1)} down), but the data's scale is ×{scale}; "
        f"use {round(math.log2(scale)) - 1} widths.")
  if config.stage == "all":
    total = sum(int(config.stage_steps[name]) for name in STAGES)
    if total != config.train.steps:
      raise ValueError(
          f"config.stage='all' runs stage_steps {dict(config.stage_steps)} (sum {total}), but "
          f"config.train.steps={config.train.steps}; make them agree.")


def batch_spec(config) -> dict:
  size, low = config.data.target_size, config.data.input_size
  spec = {
      "input": jax.ShapeDtypeStruct((low, low, config.data.input_channels), jnp.float32),
      "target": jax.ShapeDtypeStruct((size, size, 3), jnp.float32),
      "identity": jax.ShapeDtypeStruct((), jnp.int32),
  }
  if gives_degraded_region(config.data):
    # Read by eval_step only (where the repairs go against the degraded region); no training step reads it.
    spec[DEGRADED] = jax.ShapeDtypeStruct((low, low, 1), jnp.float32)
  return spec


def stages_of(stage: str) -> tuple[str, ...]:
  """The stages config.stage trains, in order: all four for "all", else just that one."""
  return STAGES if stage == "all" else (stage,)


def stage_schedule(stage: str, stage_steps: dict) -> Callable[[int], str]:
  """Stage of step number `step` (host int from 0): "all" runs config.stage_steps of each stage in
  the order of STAGES (zero-length stages skipped); a single-stage run is that stage throughout."""
  if stage != "all":
    return lambda step: stage
  boundaries, total = [], 0
  for name in STAGES[:-1]:
    total += stage_steps[name]
    boundaries.append(total)
  return functools.partial(phase_at, tuple(boundaries), STAGES)


def make(config, context: MakeContext = MakeContext()) -> Method:
  """IPFH built once for `config`: networks, optimizers and settings are closed over; a later stage restores
  the earlier stages' runs with `context.restore`."""
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
      "restoration": functools.partial(restoration_step, networks, optimizers, objective, selection),
      "policy": functools.partial(policy_step, networks, optimizers, objective, selection),
  }
  schedule = stage_schedule(config.stage, {name: int(config.stage_steps[name]) for name in STAGES})
  # eval_step has no RNG: "random" selection draws from a key fixed by config.seed.
  evaluation = functools.partial(evaluation_rollout, networks, selection, config.seed)
  previous_runs = {name: config.weights[name] for name in ("coarse", "cognition", "restoration")}
  return Method(
      batch_spec=spec,
      init=functools.partial(init, networks, optimizers, spec, config.data.num_identities,
                             config.policy.action_stride),
      steps={stage: step_functions[stage] for stage in stages},
      schedule=schedule,
      phase=schedule,
      eval_step=functools.partial(eval_step, networks, evaluation, selection),
      hallucinate=lambda state, frozen, batch: evaluation(state, batch)[0],
      load_pretrained=functools.partial(
          load_previous_stages, config.stage, previous_runs,
          functools.partial(restore_parameters, config, context.restore)),
  )


# ----------------------------------------------------------------------------- state


def init(networks: Networks, optimizers: dict, spec: dict, num_identities: int, action_stride: int,
         rng) -> IPFHState:
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
                                     jnp.zeros(((size // action_stride) ** 2,)))["params"],
      "restoration": networks.restoration.init(keys[5], hr_images[0], hr_images[0, :patch, :patch],
                                               jnp.zeros((patch, patch), bool))["params"],
  }
  opt_state = {name: optimizers[name].init(params[name]) for name in TRAINED}
  return IPFHState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def restore_parameters(config, restore: Callable, workdir: str) -> tuple[dict, int]:
  """(parameters, step) of the latest checkpoint of the run in `workdir` (`restore`: the run set-up's).

  The state's layout comes from that run's own config.json when it has one (so its policy options,
  e.g. a different head or action grid, need not match this run's: only the networks copied from it
  must), else from `config`.
  """
  import os
  from hallujax import run_files
  if os.path.isfile(os.path.join(workdir, "config.json")):
    config = run_files.read_run_config(workdir)
  state, step = restore(config, workdir)
  return state.params, step


PREVIOUS_STAGE_NETWORKS = {"coarse": ("coarse", "dual"), "cognition": ("cognition",),
                           "restoration": ("restoration",)}


def load_previous_stages(stage: str, workdirs: dict, restore: Callable, state: IPFHState) -> IPFHState:
  """Parameters from earlier stages' workdirs (config.weights.coarse / .cognition / .restoration).

  `restore(workdir) -> (params, step)`. Runs when training starts at step 0.
  """
  params = dict(state.params)
  later = {"coarse": ("cognition", "restoration", "policy"), "cognition": ("restoration", "policy"),
           "restoration": ("policy",)}
  for name, groups in PREVIOUS_STAGE_NETWORKS.items():
    workdir = workdirs.get(name, "")
    if workdir:
      previous, step = restore(workdir)
      for group in groups:
        params[group] = previous[group]
      logging.info("IPFH: loaded %s from %s (step %d).", "+".join(groups), workdir, step)
      print(f"IPFH: loaded {' + '.join(groups)} from {workdir} (step {step}).", flush=True)
    elif stage in later[name] and not (name == "cognition" and stage == "restoration"):
      what = ("keeps its random initialization" if name != "restoration" else
              "starts as the identity, not pretrained on random patch pairs (paper §III-C)")
      _warn(f"IPFH stage {stage!r}: config.weights.{name} is empty, so the {name} network {what}. "
            f"Point it at the workdir of a finished '{name}' run (or use config.stage='all').")
  if stage in ("cognition", "all") and not workdirs.get("cognition", ""):
    _warn("IPFH: the cognition network (SphereFace) starts from a random initialization and is "
          "trained on the training identities in the 'cognition' stage; the paper fine-tunes a "
          "pretrained SphereFace, for which hallujax has no weight converter.")
  return state.replace(params=params)


def _warn(message: str) -> None:
  logging.warning(message)
  print("WARNING: " + message, flush=True)


# ----------------------------------------------------------------------------- evaluation


def evaluation_rollout(networks: Networks, selection: Selection, seed: int, state: IPFHState,
                       batch: dict) -> tuple[dict, StepRecord]:
  """(image columns: LR → bicubic, coarse ỹ, final ŷ, target; the rollout's step records), with the
  configured patch selection at test time (arg-max policy, no R update)."""
  batch_size = batch["input"].shape[0]
  plan_key = jax.random.fold_in(jax.random.key(seed), 1)
  steps, settings, actions = rollout_lib.selection_plan(selection, batch_size, plan_key)
  settings = rollout_lib.evaluation_settings(selection, settings)
  keys = jax.random.split(jax.random.key(0), (batch_size, steps))
  coarse = coarse_images(state.params, networks, batch["input"])
  examples = {"coarse": coarse, "target": batch["target"], "input": batch["input"]}
  images, records, _ = rollout_lib.rollout(state.params, networks, settings, examples, keys, actions)
  bicubic = bicubic_upsample(batch["input"], selection.image_size)
  columns = {"lr": batch["input"], "bicubic": jnp.clip(bicubic, -1, 1), "coarse": jnp.clip(coarse, -1, 1),
             "output": jnp.clip(images, -1, 1), "target": batch["target"]}
  return columns, records


def eval_step(networks: Networks, evaluation: Callable, selection: Selection, state: IPFHState,
              frozen: dict, batch: dict) -> dict:
  """Per example: PSNR / SSIM / identity cosine (SphereFace embeddings vs the target's) for bicubic, ỹ
  and ŷ; C's identification accuracy on the held-out targets (``identity_accuracy``) and on ŷ
  (``identity_accuracy_output``); the test-time policy entropy (mean over the T steps; 0 for the fixed
  selections) and its fraction of the uniform policy's (``policy_entropy_fraction``); the number of distinct patches repaired.
  With the face world's degraded region in the batch (data.local_degradation): the share of the degraded area
  inside the repaired patches (``degraded_area_repaired``) and the share of the T repairs on it
  (``repairs_on_degradation``; `ipfh_rollout.ON_DEGRADATION_SHARE`); without it these are absent.

  `evaluation(state, batch)` gives the image columns and step records (`evaluation_rollout`).
  """
  del frozen
  images, records = evaluation(state, batch)
  embed = lambda x: networks.cognition.apply({"params": state.params["cognition"]["backbone"]}, x)
  target_embeddings = embed(batch["target"])
  values = {}
  for name, suffix in (("output", ""), ("coarse", "_coarse"), ("bicubic", "_bicubic")):
    generated = jnp.clip(images[name], -1, 1)
    values["psnr" + suffix] = image_quality.psnr_from_unit_range(generated, batch["target"])
    values["ssim" + suffix] = image_quality.ssim_from_unit_range(generated, batch["target"])
    values["identity_cosine" + suffix] = identity_metrics.cosine_similarity(embed(generated),
                                                                            target_embeddings)
  values["identity_accuracy"] = identified(state.params, networks, batch["target"], batch["identity"])
  values["identity_accuracy_output"] = identified(state.params, networks, images["output"], batch["identity"])
  actions = (selection.image_size // selection.action_stride) ** 2
  entropy = jnp.mean(records.entropy, axis=1)
  values["policy_entropy"] = entropy
  values["policy_entropy_fraction"] = entropy / math.log(actions)   # 1: uniform over the action grid
  values["distinct_patches"] = rollout_lib.distinct_patches(records.corner)
  if DEGRADED in batch:   # the face world's data.local_degradation: where the repairs went against the discs
    degraded = rollout_lib.region_at(batch[DEGRADED], selection.image_size)
    values["degraded_area_repaired"] = rollout_lib.degraded_area_repaired(records.corner, degraded,
                                                                          selection.patch_size)
    values["repairs_on_degradation"] = rollout_lib.repairs_on_degradation(records.corner, degraded,
                                                                          selection.patch_size)
  return values
