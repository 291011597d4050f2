"""IPFH's train state and the steps of its three pretraining stages (paper 004, §III-C).

``coarse_step`` trains F_c and D, ``cognition_step`` C, ``restoration_step`` R on random patch pairs. The
policy stage that follows is `hallujax.methods.ipfh_policy`; `hallujax.methods.ipfh` builds the method
around both (config, networks, schedule, init, evaluation) and says what each stage does.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from hallujax.methods import ipfh_rollout as rollout_lib
from hallujax.methods.ipfh_losses import Objective
from hallujax.methods.ipfh_rollout import Selection, dual_domain_loss, lr_reference, mean_squared_error
from hallujax.methods.train_state import with_updates
from hallujax.metrics import image_quality
from hallujax.models.ipfh import Networks
from hallujax.models.recognition import a_softmax_logits, normalized_cosines

# The networks each stage trains; each has its own optimizer section, config.optim.<network>.
STAGE_NETWORKS = {"coarse": ("coarse", "dual"), "cognition": ("cognition",),
                  "restoration": ("restoration",), "policy": ("policy", "restoration")}


@flax.struct.dataclass
class IPFHState:
  step: jax.Array
  params: dict            # coarse, dual, cognition {backbone, class_weights}, policy, restoration
  opt_state: dict        # one optax state per trained network, keyed like `params`


def _networks_of(params: dict, stage: str) -> dict:
  return {name: params[name] for name in STAGE_NETWORKS[stage]}


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
  return with_updates(state, optimizers, gradients).replace(step=state.step + 1), metrics


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
    cosines = normalized_cosines(embeddings, cognition["class_weights"])  # arg-max of cos θ_j = prediction
    accuracy = jnp.sum(jnp.where(known, jnp.argmax(cosines, -1) == labels, False)) / count
    return loss, {"loss_identity": loss, "identity_accuracy": accuracy.astype(jnp.float32)}

  gradients, metrics = jax.grad(loss_fn, has_aux=True)(_networks_of(state.params, "cognition"))
  return with_updates(state, optimizers, gradients).replace(step=state.step + 1), metrics


def random_patch_pairs(coarse: jax.Array, batch: dict, patch_size: int, scale: int, count: int,
                       rng, states: tuple[jax.Array, jax.Array] | None = None) -> dict:
  """`count` random patch pairs per face: ỹ patch, y patch and the LR input's patch, flattened to (B·count, ...).

  Every corner of the valid range is equally likely (uniform top-left in [0, H − P]). With `states`
  (`random_repair_states`: images (B, S, H, W, 3) and their repaired pixels (B, S, H, W)) each pair is cut
  from one of a face's S image states, each equally likely, and that state is R's image input; without,
  from ỹ. "repaired" is the patch's map of pixels repaired before (all False on ỹ).
  """
  batch_size, height, width, _ = coarse.shape
  tops = jax.random.randint(jax.random.fold_in(rng, 0), (batch_size, count), 0, height - patch_size + 1)
  lefts = jax.random.randint(jax.random.fold_in(rng, 1), (batch_size, count), 0, width - patch_size + 1)
  if states is None:
    images = jnp.broadcast_to(coarse[:, None], (batch_size, count) + coarse.shape[1:])
    covered = jnp.zeros(images.shape[:-1], bool)
  else:
    picks = jax.random.randint(jax.random.fold_in(rng, 2), (batch_size, count), 0, states[0].shape[1])
    images, covered = (x[jnp.arange(batch_size)[:, None], picks] for x in states)

  def cut(image, covered, lr_image, target, top, left):
    return {"image": image, "patch": rollout_lib.slice_patch(image, top, left, patch_size),
            "target_patch": rollout_lib.slice_patch(target, top, left, patch_size),
            "repaired": rollout_lib.patch_repaired(covered, (top, left), patch_size),
            "lr_patch": rollout_lib.low_resolution_patch(lr_image, top, left, patch_size, scale)}

  per_patch = jax.vmap(jax.vmap(cut, in_axes=(0, 0, None, None, 0, 0)))
  pairs = per_patch(images, covered, batch["input"], batch["target"], tops, lefts)
  return jax.tree.map(lambda x: x.reshape((batch_size * count,) + x.shape[2:]), pairs)


def random_repair_states(restoration_params: dict, networks: Networks, coarse: jax.Array, patch_size: int,
                         repairs: int, rng) -> tuple[jax.Array, jax.Array]:
  """(images (B, repairs + 1, H, W, 3), repaired pixels (B, repairs + 1, H, W) bool): ỹ and the image state
  after each of `repairs` repairs by R (these parameters, no gradient) of patches at uniformly random
  corners, each written into the image in turn as the hallucinator's rollout does (ŷ_t, Eq. 4), so later
  repairs overlap earlier ones.

  Not in the paper (config.restoration.pretrain_repairs, docs/ipfh.md "R alive"): the states R repairs
  after the first step hold its own earlier repairs; pretrained on ỹ alone, R overshoots there.
  """
  batch_size, height, width, _ = coarse.shape
  tops = jax.random.randint(jax.random.fold_in(rng, 3), (repairs, batch_size), 0, height - patch_size + 1)
  lefts = jax.random.randint(jax.random.fold_in(rng, 4), (repairs, batch_size), 0, width - patch_size + 1)
  cut = jax.vmap(lambda image, top, left: rollout_lib.slice_patch(image, top, left, patch_size))
  cut_mask = jax.vmap(lambda covered, top, left: rollout_lib.patch_repaired(covered, (top, left), patch_size))
  write = jax.vmap(lambda image, patch, top, left: jax.lax.dynamic_update_slice(image, patch, (top, left, 0)))
  mark = jax.vmap(lambda covered, top, left: jax.lax.dynamic_update_slice(
      covered, jnp.ones((patch_size, patch_size), bool), (top, left)))

  def repair(state, corner):
    images, covered = state
    top, left = corner
    repaired = networks.restoration.apply({"params": restoration_params}, images, cut(images, top, left),
                                          cut_mask(covered, top, left))
    state = (write(images, repaired, top, left), mark(covered, top, left))
    return state, state

  start = (coarse, jnp.zeros(coarse.shape[:-1], bool))
  _, later = jax.lax.scan(repair, start, (tops, lefts))
  images, covered = (jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
                     for first, rest in zip(start, later))
  return jax.lax.stop_gradient(images), covered


def restoration_step(networks: Networks, optimizers: dict, objective: Objective, selection: Selection,
                     state: IPFHState, frozen: dict, batch: dict, rng) -> tuple[IPFHState, dict]:
  """R pretrained on random patch pairs with L_p (Eq. 16) (§III-C: "We first pre-trained this network
  on randomly selected patch pairs and fine-tuned it during hallucinator optimization").

  A pair is a patch of the coarse image ỹ (R's input, with ỹ as the image
  state) and the ground truth's patch at the same place; L_p's LR terms
  compare D(p̂) with the LR input's patch (or D(y_p), `lr_reference`). With
  config.restoration.pretrain_repairs = n > 0 (not in the paper) the patch is
  cut from ỹ or from ỹ after k ≤ n of R's own repairs at random places
  (`random_repair_states`), so R also learns the states it meets after the
  first step of a rollout.
  """
  del frozen
  coarse = jax.lax.stop_gradient(coarse_images(state.params, networks, batch["input"]))
  states = None
  if objective.pretrain_repairs:
    states = random_repair_states(state.params["restoration"], networks, coarse, selection.patch_size,
                                  objective.pretrain_repairs, rng)
  pairs = random_patch_pairs(coarse, batch, selection.patch_size, selection.scale,
                             objective.pretrain_patches, rng, states)
  fixed = state.params
  lr_target = jax.vmap(lambda target_patch, lr_patch: lr_reference(
      fixed, networks, objective.lr_reference, target_patch, lr_patch))(pairs["target_patch"], pairs["lr_patch"])

  def loss_fn(restoration):
    repaired = networks.restoration.apply({"params": restoration}, pairs["image"], pairs["patch"],
                                          pairs["repaired"])
    losses = dual_domain_loss({**fixed, "restoration": restoration}, networks, repaired,
                              pairs["target_patch"], lr_target)
    mse_after = jnp.mean(mean_squared_error(repaired, pairs["target_patch"]))
    return jnp.mean(losses), {"loss_patch": jnp.mean(losses), "patch_mse": mse_after}

  gradients, metrics = jax.grad(loss_fn, has_aux=True)(state.params["restoration"])
  metrics["patch_mse_coarse"] = jnp.mean(mean_squared_error(pairs["patch"], pairs["target_patch"]))
  return with_updates(state, optimizers, {"restoration": gradients}).replace(step=state.step + 1), metrics
