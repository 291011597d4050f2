"""IPFH (paper 004, issue 28): the REINFORCE patch policy learns where a repair pays.

A tiny synthetic instance of what the face world's shaded discs ask of the policy: each face has one
darkened cell at a random place, and only a repair there improves the patch (the target there is R's
own repair; everywhere else the target is the image itself, so any change costs). The policy is
trained with the policy stage's own pieces (the sampled scanned rollout, its short-term rewards,
`ipfh.policy_loss`, Adam) and must then, on held-out faces with new places, be far from uniform and
pick the darkened cell first. The last step's reward is replaced by a long-term-like term 100× the
short-term rewards' scale that no action changes (measured in the policy stage: r_l's spread is about
100× r_s's, docs/ipfh.md), which one normalization over all steps turns into noise that buries the
short-term signal.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hallujax.methods import ipfh
from hallujax.methods import ipfh_rollout as rollout_lib
from tests.test_ipfh import perturbed_restoration, tiny_config

FACES = 16        # faces per training batch
CELLS = 16        # 32² images, action_stride 8: a 4 × 4 action grid of 8² patches (non-overlapping)
ITERATIONS = 60


def learning_config(**policy_options):
  config = tiny_config("policy")
  options = dict(action_stride=8, head="conv", reward="improvement", discount=0.0,
                 normalize_advantages=True)
  config.policy.update(**{**options, **policy_options})
  return config


def shaded_faces(state, networks, key, size=32, patch=8):
  """{"coarse", "target", "input"} with one darkened cell per face (random place) whose target is R's
  repair of it, and the darkened cell's index."""
  image_key, cell_key = jax.random.split(key)
  smooth = jax.image.resize(jax.random.uniform(image_key, (FACES, 8, 8, 3), minval=-0.5, maxval=0.5),
                            (FACES, size, size, 3), "bilinear")
  cells = jax.random.randint(cell_key, (FACES,), 0, CELLS)
  restoration = {"params": state.params["restoration"]}

  def one(image, cell):
    top, left = (cell // (size // patch)) * patch, (cell % (size // patch)) * patch
    shaded = jax.lax.dynamic_update_slice(
        image, jax.lax.dynamic_slice(image, (top, left, 0), (patch, patch, 3)) - 0.6, (top, left, 0))
    repaired = networks.restoration.apply(
        restoration, shaded, jax.lax.dynamic_slice(shaded, (top, left, 0), (patch, patch, 3)))
    return shaded, jax.lax.dynamic_update_slice(shaded, repaired, (top, left, 0))

  coarse, target = jax.vmap(one)(smooth, cells)
  return {"coarse": coarse, "target": target, "input": jnp.zeros((FACES, 4, 4, 3))}, cells


def trained_policy(config, state, networks, seed=0):
  selection, objective = ipfh.selection_of(config), ipfh.objective_of(config)
  steps, settings, forced = rollout_lib.selection_plan(selection, FACES, jax.random.key(0))
  settings = settings._replace(update_restoration=False)
  optimizer = ipfh.optim.make(dict(name="adam", learning_rate=1e-2))   # the recipe's policy rate

  def iteration(carry, key):
    policy, optimizer_state = carry
    face_key, rollout_key, noise_key = jax.random.split(key, 3)
    examples, _ = shaded_faces(state, networks, face_key)
    params = {**state.params, "policy": policy}
    _, records, _ = rollout_lib.rollout(params, networks, settings, examples,
                                        jax.random.split(rollout_key, (FACES, steps)), forced)
    scale = jnp.std(records.reward[:, :-1])
    rewards = records.reward.at[:, -1].set(100 * scale * jax.random.normal(noise_key, (FACES,)))
    gradient, _ = jax.grad(ipfh.policy_loss, argnums=3, has_aux=True)(
        networks, selection, objective, policy, records, rewards, None)
    return ipfh.optim.apply_update(optimizer, policy, optimizer_state, gradient), None

  policy = state.params["policy"]
  keys = jax.random.split(jax.random.key(seed + 1), ITERATIONS)
  (policy, _), _ = jax.jit(lambda: jax.lax.scan(iteration, (policy, optimizer.init(policy)), keys))()
  return policy


def held_out(config, state, networks, policy):
  """(entropy fraction of the arg-max rollout, mean over T and faces; fraction of faces whose first
  repair is the darkened cell) on new faces."""
  selection = ipfh.selection_of(config)
  steps, settings, forced = rollout_lib.selection_plan(selection, FACES, jax.random.key(0))
  settings = rollout_lib.evaluation_settings(selection, settings)
  examples, cells = shaded_faces(state, networks, jax.random.key(1234))
  params = {**state.params, "policy": policy}
  _, records, _ = jax.jit(lambda: rollout_lib.rollout(params, networks, settings, examples,
                                                      jax.random.split(jax.random.key(0), (FACES, steps)),
                                                      forced))()
  fraction = float(jnp.mean(records.entropy) / np.log(CELLS))
  return fraction, float(jnp.mean(records.action[:, 0] == cells))


def test_the_policy_learns_to_repair_the_place_that_pays():
  config = learning_config(normalize_per_step=True)
  state = perturbed_restoration(jax.jit(ipfh.make(config).init)(jax.random.key(0)))
  networks = ipfh.build_networks(config)
  start_fraction, start_hits = held_out(config, state, networks, state.params["policy"])
  assert start_fraction > 0.95 and start_hits < 0.5   # untrained: near uniform, and the check can fail
  fraction, hits = held_out(config, state, networks, trained_policy(config, state, networks))
  assert fraction < 0.6, fraction
  assert hits > 0.8, hits
