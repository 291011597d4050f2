"""IPFH's policy stage (paper 004, Eq. 9–17): the rollout, REINFORCE on the policy controller P, and R
fine-tuned with L_p and L_im, with F_c, D and C frozen.

`hallujax.methods.ipfh` builds the method and documents the stage and its options; the rollout is
`hallujax.methods.ipfh_rollout`, the losses, rewards and REINFORCE surrogates `hallujax.methods.ipfh_losses`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from hallujax import optim
from hallujax.methods import ipfh_rollout as rollout_lib
from hallujax.methods.ipfh_losses import (Objective, image_level_terms, image_loss_of, leave_one_out_advantages,
                                          long_term_reward, reinforce_loss, rewards_to_go, value_baseline_loss)
from hallujax.methods.ipfh_pretraining import IPFHState, coarse_images
from hallujax.methods.ipfh_rollout import Selection, StepRecord, dual_domain_loss
from hallujax.methods.train_state import with_updates
from hallujax.metrics import image_quality
from hallujax.models.ipfh import Networks


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def policy_outputs(networks: Networks, selection: Selection, policy_params: dict,
                   records: StepRecord) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(log π(a_t | s_t), entropy, V(s_t), logit spread), each (B, T), of the recorded actions in their
  recorded states, in one batched call (the same values the rollout's policy computed). The logit
  spread is the standard deviation of the logits over the actions (before any mask): 0 is uniform."""
  batch, steps = records.action.shape
  context = jax.vmap(functools.partial(rollout_lib.action_context, stride=selection.action_stride,
                                       history=selection.action_history))(
      _flat(records.last_action), _flat(records.covered))
  logits, values = networks.policy.apply(
      {"params": policy_params}, _flat(records.image), _flat(records.last_patch), context)
  spread = jnp.std(logits, axis=-1)
  if selection.mask_in_training:
    logits = jax.vmap(rollout_lib.masked_logits, in_axes=(0, 0, None))(
        logits, _flat(records.covered), selection.action_stride)
  log_probs = jax.nn.log_softmax(logits)
  chosen = jnp.take_along_axis(log_probs, _flat(records.action)[:, None], axis=1)[:, 0]
  entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  shape = (batch, steps)
  return chosen.reshape(shape), entropy.reshape(shape), values.reshape(shape), spread.reshape(shape)


def policy_loss(networks: Networks, selection: Selection, objective: Objective, policy_params: dict,
                records: StepRecord, rewards: jax.Array, example_baselines: jax.Array | None
                ) -> tuple[jax.Array, dict]:
  """P's loss on recorded episodes: REINFORCE surrogate (+ value loss) − entropy_bonus · H(π).

  rewards (B, T) with r_T the long-term reward; baseline: `reinforce_loss`
  (leave-one-out, the default) or `value_baseline_loss` (config.policy.baseline "value").
  """
  log_probs, entropy, values, spread = policy_outputs(networks, selection, policy_params, records)
  if objective.baseline == "value":
    surrogate, value_loss = value_baseline_loss(log_probs, values, rewards, example_baselines,
                                                objective.normalize_advantages, objective.value_weight,
                                                objective.discount, objective.normalize_per_step)
    advantages = rewards_to_go(rewards, objective.discount) - values
    if example_baselines is not None:
      advantages = advantages - example_baselines[:, None]
  else:
    surrogate = reinforce_loss(log_probs, rewards, example_baselines, objective.normalize_advantages,
                               objective.discount, objective.normalize_per_step)
    advantages = leave_one_out_advantages(rewards, example_baselines, objective.discount)
    value_loss = jnp.zeros(())
  bonus = objective.entropy_bonus * jnp.mean(entropy)
  # Diagnostics (issue 28): the advantages' scale before any normalization, at the steps t < T (short-term
  # rewards) and at T (the long-term reward), and how far the logits are from uniform.
  advantages = jax.lax.stop_gradient(advantages)
  return surrogate + value_loss - bonus, {
      "loss_policy": surrogate, "loss_value": value_loss,
      "advantage_std_short": jnp.std(advantages[:, :-1]), "advantage_std_final": jnp.std(advantages[:, -1]),
      "logit_spread": jnp.mean(jax.lax.stop_gradient(spread))}


def policy_step(networks: Networks, optimizers: dict, objective: Objective, selection: Selection,
                state: IPFHState, frozen: dict, batch: dict, rng) -> tuple[IPFHState, dict]:
  """One batch of episodes: the rollout (R updated with L_p after every step, update_every "step"), then
  REINFORCE on P and L_im (Eq. 17) on R.

  Rewards (Eq. 9): r_t = r_s = −L_p(t) for t < T (Eq. 10) and
  r_T = r_l = −(L_f + L_id + L_v) (Eq. 12) of the rollout's ŷ_T.
  R (update_every "step", the paper): T updates with ∇ L_p inside the rollout, then one
  with ∇ L_im of `replay`'s ŷ (the recorded repairs redone with the updated R);
  "batch": one update with ∇(Σ_t L_p + L_im) of the replay.
  With selection "grid" / "random" / "oracle" only R trains. config.restoration.fine_tune False (not in
  the paper, which fine-tunes R here): R is not updated, only P trains (nothing with a fixed selection).
  REINFORCE baseline (`reinforce_loss`): per example, r_l of the coarse image
  ỹ, which no action changes, then the leave-one-out batch mean; or
  (config.policy.baseline "value") a learned V(s_t).

  config.policy.reward "improvement" (`ipfh_rollout.rollout_step`): r_s = L_p
  before − after the repair, and r_T = r_l(ŷ_T) − r_l(ỹ). Every return-to-go
  contains r_T, so subtracting r_l(ỹ) from it is exactly the "paper"
  estimator's per-example baseline: only the short-term rewards differ.
  """
  del frozen
  batch_size = batch["input"].shape[0]
  plan_key, rollout_key = jax.random.split(rng)
  steps, settings, actions = rollout_lib.selection_plan(selection, batch_size, plan_key)
  keys = jax.random.split(rollout_key, (batch_size, steps))
  fixed = state.params   # F_c, D and C: "We fixed the parameters of coarse visual hallucinator ..."
  coarse = jax.lax.stop_gradient(coarse_images(fixed, networks, batch["input"]))
  examples = {"coarse": coarse, "target": batch["target"], "input": batch["input"]}
  coarse_reward = long_term_reward(image_level_terms(fixed, networks, coarse, batch, objective), objective)
  per_step = objective.restoration_update == "step"
  update = rollout_lib.RestorationUpdate(optimizers["restoration"], optim.apply_update)
  images, records, (restoration, restoration_optimizer) = rollout_lib.rollout(
      fixed, networks, settings, examples, keys, actions, update,
      state.opt_state["restoration"])
  final_reward = long_term_reward(image_level_terms(fixed, networks, images, batch, objective), objective)
  final_reward = jax.lax.stop_gradient(final_reward)

  def restoration_loss(restoration):
    replayed, repaired = rollout_lib.replay(restoration, networks, coarse, records)
    params = {**fixed, "restoration": restoration}
    image_loss = image_loss_of(image_level_terms(params, networks, replayed, batch, objective), objective)
    if per_step:
      return image_loss, image_loss
    patch_losses = dual_domain_loss(params, networks, _flat(repaired), _flat(records.target_patch),
                                    _flat(records.lr_target))
    return image_loss + jnp.sum(patch_losses) / batch_size, image_loss

  if objective.fine_tune_restoration:
    restoration_gradients, image_loss = jax.grad(restoration_loss, has_aux=True)(restoration)
    gradients = {"restoration": restoration_gradients}
  else:   # R kept as pretrained: L_im of ŷ_T only for the log (the rollout did not update R either)
    image_loss = image_loss_of(image_level_terms(fixed, networks, images, batch, objective), objective)
    gradients = {}
  if per_step and objective.fine_tune_restoration:
    # R's update of L_im starts from R after its per-step updates inside the rollout
    state = state.replace(params=dict(state.params, restoration=restoration),
                          opt_state=dict(state.opt_state, restoration=restoration_optimizer))

  if objective.reward == "improvement":
    last_reward, example_baselines = final_reward - coarse_reward, None
  else:
    last_reward, example_baselines = final_reward, coarse_reward
  rewards = records.reward.at[:, -1].set(last_reward)   # Eq. 9: r_t = r_s for t < T, r_T = r_l
  metrics = {}
  if settings.use_policy:
    gradients["policy"], policy_metrics = jax.grad(policy_loss, argnums=3, has_aux=True)(
        networks, selection, objective, state.params["policy"], records, rewards, example_baselines)
    metrics.update(policy_metrics)
    # Diagnostics (issue 28): reward scales and the size of P's update relative to P.
    metrics.update(reward_short_std=jnp.std(rewards[:, :-1]), reward_final_std=jnp.std(rewards[:, -1]),
                   policy_gradient_norm=optax.tree.norm(gradients["policy"]),
                   policy_parameter_norm=optax.tree.norm(state.params["policy"]))
  else:
    metrics.update(loss_policy=jnp.zeros(()), loss_value=jnp.zeros(()))
  patch_loss = jnp.mean(jnp.sum(records.patch_loss, axis=1))
  metrics.update({
      "loss_restoration": patch_loss + image_loss,
      "loss_patch": patch_loss,
      "loss_image": image_loss,
      "return": jnp.mean(jnp.sum(rewards, axis=1)),
      "reward_final": jnp.mean(final_reward),
      "reward_final_gain": jnp.mean(final_reward - coarse_reward),   # r_l(ŷ) − r_l(ỹ)
      "policy_entropy": jnp.mean(records.entropy),
      "distinct_patches": jnp.mean(rollout_lib.distinct_patches(records.corner)),
      "psnr_rollout": jnp.mean(image_quality.psnr_from_unit_range(images, batch["target"])),
      "psnr_coarse": jnp.mean(image_quality.psnr_from_unit_range(coarse, batch["target"])),
  })
  return with_updates(state, optimizers, gradients).replace(step=state.step + 1), metrics
