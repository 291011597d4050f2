"""IPFH's losses and rewards (paper 004, Eq. 12–17) and the REINFORCE surrogates of the policy stage.

Pure functions of parameters, networks and batches; `hallujax.methods.ipfh`'s
stage steps combine them, `hallujax.methods.ipfh_rollout` computes the
per-step patch terms inside the rollout.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hallujax.methods.ipfh_rollout import lr_reference, mean_squared_error, texture_loss
from hallujax.models.ipfh import Networks
from hallujax.models.recognition import a_softmax_logits, normalized_cosines


class Objective(NamedTuple):
  """The policy stage's loss and reward settings (config.loss, config.cognition.margin, config.policy)."""
  margin: float           # A-softmax m (Eq. 14)
  feature: float          # weight of L_f in r_l (Eq. 12) and L_im (Eq. 17)
  identity: float         # weight of L_id
  lr_reference: str = "input"   # `ipfh_rollout.lr_reference`
  reward: str = "paper"         # short-term reward (`ipfh_rollout.rollout_step`)
  image_lr: str = "bilinear"    # the whole image's LR version: bilinear resize (paper) or D
  image_lr_size: int = 32       # its size (paper: "resize the 128 × 128 HR face into 32× 32")
  baseline: str = "leave_one_out"
  normalize_advantages: bool = False
  normalize_per_step: bool = False   # with normalize_advantages: scaled per step t, not over all steps
  entropy_bonus: float = 0.0
  value_weight: float = 0.5
  discount: float = 1.0         # γ of the returns G_t = Σ_k γ^(k−t) r_k (1: the paper's Σ_t r_t)
  restoration_update: str = "step"   # config.restoration.update_every
  fine_tune_restoration: bool = True   # config.restoration.fine_tune: R updated in the policy stage
  pretrain_patches: int = 4     # random patch pairs per face in the "restoration" stage
  pretrain_repairs: int = 0     # ... cut from ỹ after up to this many random repairs by R (0: from ỹ, the paper)


def resize_bilinear(images: jax.Array, size: int) -> jax.Array:
  """(B, H, W, C) → (B, size, size, C), bilinear (antialiased when shrinking)."""
  return jax.image.resize(images, images.shape[:-3] + (size, size, images.shape[-1]), method="bilinear")


def image_lr_pair(params: dict, networks: Networks, objective: Objective, images: jax.Array,
                  batch: dict) -> tuple[jax.Array, jax.Array]:
  """(ŷ_lr, its reference) for the image-level LR terms of Eq. 17.

  "bilinear" (paper §III-B.3): "When processing the whole faces, we first resize
  the 128 × 128 HR face into 32× 32 with bilinear interpolation operation", so
  ŷ_lr = bilinear(ŷ, image_lr_size²). The paper does not say what it is compared
  with at 32² (its LR input is 16²); we compare it with the LR input x resized
  bilinearly to the same size (lr_reference "input"), or with bilinear(y)
  ("dual_of_target": zero at ŷ = y). At 64² faces from 16² (the table7 variant)
  32²/128² is 16², the LR input's own size. "dual": D(ŷ) against x or D(y), as
  the patches (the former default).
  """
  target = batch["target"]
  if objective.image_lr == "dual":
    return (networks.dual.apply({"params": params["dual"]}, images),
            lr_reference(params, networks, objective.lr_reference, target, batch["input"]))
  size = objective.image_lr_size
  reference = (resize_bilinear(batch["input"], size) if objective.lr_reference == "input"
               else resize_bilinear(target, size))
  return resize_bilinear(images, size), reference


def image_level_terms(params: dict, networks: Networks, images: jax.Array, batch: dict,
                      objective: Objective) -> dict:
  """Per-example terms of the long-term reward (Eq. 12) and the image-level loss (Eq. 17).

  mse, texture: L_v = L_mse(ŷ, y) + L_tex(ŷ, y) (Eq. 15);
  lr_mse, lr_texture: the LR-domain terms of Eq. 17 between ŷ_lr and its
  reference (`image_lr_pair`; Eq. 17 writes "ŷlr, ỹ"; the dual-consistency
  section says the generated LR is compared with the LR input, which we follow);
  feature: L_f = ‖φ(ŷ) − φ(y)‖² (Eq. 13) on SphereFace's embedding (sphere20a
  has no average-pooling layer; its fc5 output is the feature), averaged over
  dimensions;
  identity: L_id, A-softmax cross-entropy (Eq. 14) with margin m; 0 where the
  identity is unknown (-1).
  """
  target = batch["target"]
  texture = lambda x: networks.texture.apply({"params": params["cognition"]["backbone"]}, x)
  generated_lr, lr_target = image_lr_pair(params, networks, objective, images, batch)
  embed = lambda x: networks.cognition.apply({"params": params["cognition"]["backbone"]}, x)
  embeddings, target_embeddings = embed(images), jax.lax.stop_gradient(embed(target))
  return {
      "mse": mean_squared_error(images, target),
      "texture": texture_loss(texture(images), texture(target)),
      "lr_mse": mean_squared_error(generated_lr, lr_target),
      "lr_texture": texture_loss(texture(generated_lr), texture(lr_target)),
      "feature": jnp.mean(jnp.square(embeddings - target_embeddings), axis=-1),
      "identity": identity_loss(params, embeddings, batch["identity"], objective.margin),
  }


def image_loss_of(terms: dict, weights) -> jax.Array:
  """L_im (Eq. 17), batch mean: HR and LR MSE + texture, L_f and L_id weighted."""
  return jnp.mean(terms["mse"] + terms["texture"] + terms["lr_mse"] + terms["lr_texture"]
                  + weights.feature * terms["feature"] + weights.identity * terms["identity"])


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


def identified(params: dict, networks: Networks, images: jax.Array, identities: jax.Array) -> jax.Array:
  """Per example 1.0 where C's nearest class centre (largest cos θ_j, Eq. 14) is the true identity."""
  embeddings = networks.cognition.apply({"params": params["cognition"]["backbone"]}, images)
  cosines = normalized_cosines(embeddings, params["cognition"]["class_weights"])
  return (jnp.argmax(cosines, axis=-1) == identities).astype(jnp.float32)


def rewards_to_go(rewards: jax.Array, discount: float = 1.0) -> jax.Array:
  """G_t = Σ_{k≥t} γ^(k−t) r_k of (batch, T) rewards, γ = `discount` (1: the paper's undiscounted sum).

  γ < 1 is an option (config.policy.discount, not in the paper): with γ = 0 each step's advantage is
  its own short-term reward (the last step's is r_T), so the credit for a repair goes to the step that
  chose it instead of being buried under the long-term reward every G_t shares."""
  if discount == 1.0:
    return jnp.flip(jnp.cumsum(jnp.flip(rewards, axis=1), axis=1), axis=1)
  returns, following = [], jnp.zeros_like(rewards[:, 0])
  for step in reversed(range(rewards.shape[1])):
    following = rewards[:, step] + discount * following
    returns.append(following)
  return jnp.stack(returns[::-1], axis=1)


def normalized(advantages: jax.Array, per_step: bool = False) -> jax.Array:
  """(batch, T) advantages scaled to zero mean and unit standard deviation over the batch and the steps,
  or (`per_step`) over the batch separately for each step t.

  Per step (an option, config.policy.normalize_per_step, not in the paper): the short-term rewards
  r_s (Eq. 10) of one repair and the long-term reward r_l (Eq. 12) of the whole face differ in scale by
  about 100× (docs/ipfh.md, "Why the policy did not learn"), so one standard deviation over all steps is
  r_l's and the steps t < T get advantages near zero; per step each t gets unit scale.
  """
  axis = 0 if per_step else None
  mean = jnp.mean(advantages, axis=axis, keepdims=per_step)
  return (advantages - mean) / (jnp.std(advantages, axis=axis, keepdims=per_step) + 1e-8)


def reinforce_loss(log_probs: jax.Array, rewards: jax.Array,
                   example_baselines: jax.Array | None = None, normalize: bool = False,
                   discount: float = 1.0, per_step: bool = False) -> jax.Array:
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
  leave-one-out baseline is 0. `normalize` (an option) rescales the advantages
  (`normalized`, over all steps or `per_step`), which changes the gradient's scale per batch.
  `discount`: `rewards_to_go`.
  """
  advantages = leave_one_out_advantages(rewards, example_baselines, discount)
  if normalize:
    advantages = normalized(advantages, per_step)
  return -jnp.mean(jnp.sum(log_probs * jax.lax.stop_gradient(advantages), axis=1))


def leave_one_out_advantages(rewards: jax.Array, example_baselines: jax.Array | None = None,
                             discount: float = 1.0) -> jax.Array:
  """(batch, T) advantages of `reinforce_loss` before any normalization: G_t − example baseline −
  the leave-one-out batch mean of that."""
  returns = rewards_to_go(rewards, discount)
  if example_baselines is not None:
    returns = returns - example_baselines[:, None]
  batch_size = returns.shape[0]
  if batch_size > 1:
    baseline = (jnp.sum(returns, axis=0, keepdims=True) - returns) / (batch_size - 1)
  else:
    baseline = jnp.zeros_like(returns)
  return returns - baseline


def value_baseline_loss(log_probs: jax.Array, values: jax.Array, rewards: jax.Array,
                        example_baselines: jax.Array | None, normalize: bool,
                        value_weight: float, discount: float = 1.0, per_step: bool = False
                        ) -> tuple[jax.Array, jax.Array]:
  """(REINFORCE surrogate with A_t = G_t − V(s_t), value regression loss ½‖V − G‖²·weight).

  An option (config.policy.baseline="value"): V(s_t) is the policy's value
  head on the state it acted in, so it does not depend on a_t and the
  estimator stays unbiased; G_t (`rewards_to_go` with `discount`) is taken after subtracting
  `example_baselines`.
  """
  returns = rewards_to_go(rewards, discount)
  if example_baselines is not None:
    returns = returns - example_baselines[:, None]
  advantages = jax.lax.stop_gradient(returns - values)
  if normalize:
    advantages = normalized(advantages, per_step)
  surrogate = -jnp.mean(jnp.sum(log_probs * advantages, axis=1))
  value_loss = value_weight * 0.5 * jnp.mean(jnp.square(values - jax.lax.stop_gradient(returns)))
  return surrogate, value_loss
