"""IPFH (paper 004): the scanned rollout, the REINFORCE estimator and the three training stages."""

import functools
import itertools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hallujax import run_setup
from hallujax.methods import Method, get_method, ipfh, ipfh_losses
from hallujax.methods import ipfh_rollout as rollout_lib
from hallujax.models.ipfh import PolicyController, SphereFaceTextureFeatures
from hallujax.models.recognition import SphereFace

BATCH = 2


def load_config(variant=""):
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).parents[1] / "configs" / "ipfh.py"
  spec = importlib.util.spec_from_file_location("ipfh_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def tiny_config(stage="all"):
  """32² HR from 4² LR (×8), 8² patches, T = 3, a few channels per layer."""
  c = load_config("smoke" if stage == "all" else f"smoke,stage={stage}")
  c.data.update(input_size=4, target_size=32, num_identities=5)
  c.stage_steps.update(coarse=2, cognition=1, restoration=1, policy=2)
  c.train.batch_size = BATCH
  c.coarse.network = dict(features=4, num_stacks=2, bottom_size=16)
  c.dual.widths = (4, 4)
  c.cognition.update(depth=4, embedding_dim=8)
  c.policy.update(steps=3, patch_size=8, random_patches=4, image_widths=(4, 8), patch_widths=(4,),
                  holistic_features=8, context_features=8)
  c.restoration.update(features=4, patch_layers=1, decoder_layers=2)
  return c


def random_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  low, high = config.data.input_size, config.data.target_size
  return {"input": rng.uniform(-1, 1, (BATCH, low, low, 3)).astype(np.float32),
          "target": rng.uniform(-1, 1, (BATCH, high, high, 3)).astype(np.float32),
          "identity": np.array([1, 3], np.int32)}


def perturbed_restoration(state, seed=5):
  """`state` with noise added to every restoration parameter, so R changes the patches it repairs.

  An untrained R is the identity (its last convolution starts at zero), under
  which a rollout returns the coarse image whatever patches it picks.
  """
  leaves, tree = jax.tree.flatten(state.params["restoration"])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
  return state.replace(params={**state.params, "restoration": jax.tree.unflatten(tree, noisy)})


def init(config, seed=0):
  return jax.jit(ipfh.make(config).init)(jax.random.key(seed))


def hallucinate(config, state, batch):
  return jax.jit(functools.partial(ipfh.make(config).hallucinate, frozen={}))(state, batch=batch)


@pytest.fixture(scope="module")
def tiny_state():
  config = tiny_config()
  batch = random_batch(config)
  return config, batch, init(config)


def test_ipfh_is_registered_and_follows_the_method_contract():
  assert get_method("ipfh") is ipfh
  method = ipfh.make(tiny_config())
  assert isinstance(method, Method) and set(method.steps) == set(ipfh.STAGES)
  shapes = jax.eval_shape(method.init, jax.random.key(0))   # pure: no file read, nothing computed
  assert shapes.params["coarse"] and set(shapes.opt_state) == set(ipfh.TRAINED)
  assert {name: spec.shape for name, spec in method.batch_spec.items()} == {
      "input": (4, 4, 3), "target": (32, 32, 3), "identity": ()}


def test_patch_corner_reads_every_pixel_as_a_centre_and_clamps_at_borders():
  corner = lambda row, column: tuple(int(v) for v in rollout_lib.patch_corner(jnp.int32(row * 32 + column), 32, 32, 8))
  assert corner(16, 16) == (12, 12)   # centre → top-left = location − P/2
  assert corner(0, 0) == (0, 0)       # clamped at the top-left border
  assert corner(31, 30) == (24, 24)   # clamped at the bottom-right border
  assert corner(3, 29) == (0, 24)


def test_low_resolution_patch_is_an_exact_crop_on_the_lr_grid_and_interpolates_between():
  lr = jnp.arange(4 * 4 * 3, dtype=jnp.float32).reshape(4, 4, 3)
  aligned = rollout_lib.low_resolution_patch(lr, jnp.int32(8), jnp.int32(16), patch_size=16, scale=8)
  np.testing.assert_array_equal(aligned, lr[1:3, 2:4])
  halfway = rollout_lib.low_resolution_patch(lr, jnp.int32(4), jnp.int32(0), patch_size=16, scale=8)
  np.testing.assert_allclose(halfway, (lr[0:2, 0:2] + lr[1:3, 0:2]) / 2)
  last = rollout_lib.low_resolution_patch(lr, jnp.int32(16), jnp.int32(16), patch_size=16, scale=8)
  np.testing.assert_array_equal(last, lr[2:4, 2:4])


def test_grid_selection_covers_the_image_with_non_overlapping_patches():
  config = load_config()
  config.policy.selection = "grid"
  steps, settings, actions = rollout_lib.selection_plan(ipfh.selection_of(config), 1, jax.random.key(0))
  assert steps == 16 and not settings.use_policy   # paper: 128² evenly into 16 patches of 32²
  corners = {tuple(int(v) for v in rollout_lib.patch_corner(a, 128, 128, 32)) for a in actions[0]}
  assert corners == {(row, column) for row in range(0, 128, 32) for column in range(0, 128, 32)}


def test_texture_features_are_sphereface_first_stage_activations():
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  network = SphereFace(depth=20, embedding_dim=8)

  @jax.jit
  def features_and_expected(images):
    params = network.init(jax.random.key(2), images)["params"]
    _, state = network.apply({"params": params}, images, capture_intermediates=True)
    # relu1_3 is the second PReLU of stage 1's residual unit; stage 1's output adds it to relu1_1.
    intermediates = state["intermediates"]
    expected = intermediates["relu1_1"]["__call__"][0] + intermediates["relu1_3"]["__call__"][0]
    return SphereFaceTextureFeatures(depth=20, stages=1).apply({"params": params}, images), expected

  features, expected = features_and_expected(images)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def examples_of(config, state, batch):
  networks = ipfh.build_networks(config)
  coarse = ipfh.coarse_images(state.params, networks, jnp.asarray(batch["input"]))
  return networks, {"coarse": coarse, "target": jnp.asarray(batch["target"]),
                    "input": jnp.asarray(batch["input"])}


def test_scanned_rollout_equals_a_python_loop_over_the_same_step(tiny_state):
  config, batch, state = tiny_state
  networks, examples = examples_of(config, state, batch)
  steps, settings, actions = rollout_lib.selection_plan(ipfh.selection_of(config), BATCH, jax.random.key(3))
  settings = settings._replace(update_restoration=False)
  params = perturbed_restoration(state).params
  keys = jax.random.split(jax.random.key(4), (BATCH, steps))

  scanned = jax.jit(functools.partial(rollout_lib.rollout, networks=networks, settings=settings))
  images, records, _ = scanned(params, examples=examples, keys=keys, forced_actions=actions)

  step = jax.jit(jax.vmap(
      lambda params, example, carry, step_input: rollout_lib.rollout_step(
          params, networks, settings, example, carry, step_input),
      in_axes=(None, 0, 0, 0)))
  carry = jax.vmap(lambda image: rollout_lib.initial_carry(image, settings.patch_size))(examples["coarse"])
  looped_actions = []
  for t in range(steps):
    carry, output = step(params, examples, carry, (keys[:, t], actions[:, t]))
    looped_actions.append(output.action)
  looped_actions = np.stack(looped_actions, axis=1)

  np.testing.assert_array_equal(records.action, looped_actions)
  assert len(np.unique(looped_actions)) > 1                # the check is not vacuous
  np.testing.assert_allclose(images, carry[0], rtol=1e-5, atol=1e-5)
  assert np.max(np.abs(np.asarray(images) - np.asarray(examples["coarse"]))) > 1e-3   # patches were repaired
  # Replaying the recorded repairs with the same R gives the same image (R's image loss reads it).
  replayed, _ = jax.jit(functools.partial(rollout_lib.replay, networks=networks))(
      params["restoration"], coarse=examples["coarse"], records=records)
  np.testing.assert_allclose(replayed, images, rtol=1e-5, atol=1e-5)


def test_an_untrained_restoration_network_returns_the_coarse_image(tiny_state):
  """R starts as the identity (zero last convolution): the rollout starts at ỹ and only training moves it."""
  config, batch, state = tiny_state
  config = config.copy_and_resolve_references()
  for selection in ("policy", "oracle"):
    config.policy.selection = selection
    columns = hallucinate(config, state, batch)
    np.testing.assert_array_equal(columns["output"], columns["coarse"])
  perturbed = hallucinate(config, perturbed_restoration(state), batch)
  assert np.max(np.abs(np.asarray(perturbed["output"]) - np.asarray(perturbed["coarse"]))) > 1e-3


def test_improvement_reward_is_zero_for_an_unchanged_patch_and_positive_for_a_better_one(tiny_state):
  """r_s = L_p before − after the repair: 0 under the identity R, L_p(p_t) when R reaches the target."""
  config, batch, state = tiny_state
  networks = ipfh.build_networks(config)
  _, settings, _ = rollout_lib.selection_plan(ipfh.selection_of(config), 1, jax.random.key(0))
  paper = settings._replace(chooser="forced", reward="paper")   # the forced action below
  settings = paper._replace(reward="improvement")
  example = {"coarse": ipfh.coarse_images(state.params, networks, jnp.asarray(batch["input"]))[0],
             "target": jnp.asarray(batch["target"][0]), "input": jnp.asarray(batch["input"][0])}
  action = jnp.int32(12 * 32 + 20)   # patch corner (8, 16) of 32²
  step = jax.jit(lambda params, settings, example: rollout_lib.rollout_step(
      params, networks, settings, example, rollout_lib.initial_carry(example["coarse"], 8),
      (jax.random.key(0), action)), static_argnums=1)

  (image, *_), unchanged = step(state.params, settings, example)   # untrained R: the identity
  np.testing.assert_array_equal(image, example["coarse"])
  assert float(unchanged.patch_loss) > 1e-3            # the patch is far from the target ...
  assert float(unchanged.reward) == 0.0                 # ... but this repair did nothing
  assert float(step(state.params, paper, example)[1].reward) == -float(unchanged.patch_loss)

  # A target whose patch is exactly R's repair: loss after = 0, so r_s = L_p of the patch before.
  params = perturbed_restoration(state).params
  (image, repaired, *_), _ = step(params, settings, example)
  target = jax.lax.dynamic_update_slice(example["target"], repaired, (8, 16, 0))
  _, improved = step(params, settings, {**example, "target": target})
  before = rollout_lib.dual_domain_loss(params, networks, example["coarse"][8:16, 16:24], repaired,
                                 jax.lax.stop_gradient(networks.dual.apply(
                                     {"params": params["dual"]}, repaired)))
  assert float(improved.patch_loss) < 1e-6
  assert float(improved.reward) > 1e-3
  np.testing.assert_allclose(improved.reward, before - improved.patch_loss, rtol=1e-5)


def _centres_avoid_earlier_patches(actions, stride=1, size=32, patch=8):
  for t in range(1, len(actions)):
    row, column = divmod(int(actions[t]), size // stride)
    row, column = row * stride + stride // 2, column * stride + stride // 2
    for earlier in actions[:t]:
      top, left = (int(v) for v in rollout_lib.patch_corner(earlier, size, size, patch, stride))
      if top <= row < top + patch and left <= column < left + patch:
        return False
  return True


def test_masking_repaired_patches_means_no_patch_is_picked_twice(tiny_state):
  """Unmasked, the untrained policy's arg-max repeats; masked (test-time exclude_repaired, or
  sampled in training with mask_repaired_in_training), no centre lies in a repaired patch."""
  config, batch, state = tiny_state
  networks, examples = examples_of(config, state, batch)
  _, settings, forced = rollout_lib.selection_plan(ipfh.selection_of(config), BATCH, jax.random.key(0))
  settings = settings._replace(update_restoration=False)
  keys = jax.random.split(jax.random.key(1), (BATCH, 3))
  run = jax.jit(lambda settings, keys: rollout_lib.rollout(state.params, networks, settings, examples,
                                                           keys, forced)[1], static_argnums=0)
  plain = np.asarray(run(settings._replace(sample=False), keys).action)
  assert len(set(plain[0])) < 3        # the check below is not vacuous
  masked_argmax = run(settings._replace(sample=False, mask_repaired=True), keys)
  for actions in np.asarray(masked_argmax.action):
    assert _centres_avoid_earlier_patches(actions)
  np.testing.assert_array_equal(rollout_lib.distinct_patches(masked_argmax.corner), [3, 3])
  np.testing.assert_array_equal(rollout_lib.distinct_patches(run(settings._replace(sample=False), keys).corner),
                                [len(set(row)) for row in plain])
  for seed in range(3):   # sampled (training) under the mask, several draws
    sampled = run(settings._replace(mask_repaired=True), jax.random.split(jax.random.key(seed), (BATCH, 3)))
    for actions in np.asarray(sampled.action):
      assert _centres_avoid_earlier_patches(actions)
  # Once everything is repaired nothing is excluded (else the arg-max would be an arbitrary masked cell).
  logits = jnp.array([0.0, 2.0, 1.0, -1.0])
  assert int(jnp.argmax(rollout_lib.masked_logits(logits, jnp.array([[False, True], [False, False]])))) == 2
  assert int(jnp.argmax(rollout_lib.masked_logits(logits, jnp.ones((2, 2), bool)))) == 1


def test_reinforce_gradient_equals_the_exact_gradient_by_enumeration():
  """Batch of 2, T = 2, softmax policy over 3 actions; reward r_2 depends on both actions.

  The expectation of the REINFORCE gradient (with reward-to-go and the
  leave-one-out baseline, with and without fixed per-example baselines),
  summed exactly over all 3⁴ joint actions, must equal ∇ E[r_1 + r_2]
  computed by differentiating the enumerated expectation.
  """
  logits = jnp.array([0.3, -0.5, 1.1])
  first_reward = jnp.array([1.0, -2.0, 0.5])
  second_reward = jnp.array([[0.0, 3.0, -1.0], [2.0, 0.5, 1.0], [-1.5, 0.0, 4.0]])  # [a_1, a_2]

  def expected_return(logits):
    p = jax.nn.softmax(logits)
    return jnp.sum(p[:, None] * p[None, :] * (first_reward[:, None] + second_reward))

  exact = jax.grad(expected_return)(logits)

  @jax.jit
  def weighted_estimate(actions, example_baselines):   # actions (2, 2): [example, step]
    p = jax.nn.softmax(logits)
    (a, b), (c, d) = actions
    rewards = jnp.array([[first_reward[a], second_reward[a, b]], [first_reward[c], second_reward[c, d]]])
    gradient = jax.grad(lambda l: ipfh_losses.reinforce_loss(jax.nn.log_softmax(l)[actions], rewards,
                                                      example_baselines))(logits)
    # reinforce_loss averages over the batch; −gradient estimates ∇ E[return] per example.
    return -p[a] * p[b] * p[c] * p[d] * gradient

  for example_baselines in (None, jnp.array([2.5, -7.0])):
    estimate = sum(weighted_estimate(jnp.array(actions).reshape(2, 2), example_baselines)
                   for actions in itertools.product(range(3), repeat=4))
    np.testing.assert_allclose(estimate, exact, rtol=1e-5, atol=1e-6)

  # A state-value baseline V(s_t) (config.policy.baseline="value") that does not depend on a_t
  # leaves the estimate unbiased: here V depends on the example, the step and, at t = 2, on a_1.
  @jax.jit
  def value_estimate(actions):
    p = jax.nn.softmax(logits)
    (a, b), (c, d) = actions
    rewards = jnp.array([[first_reward[a], second_reward[a, b]], [first_reward[c], second_reward[c, d]]])
    values = jnp.array([[0.7, 1.5 * a - 2.0], [-3.0, 0.25 * c]])
    gradient = jax.grad(lambda l: ipfh_losses.value_baseline_loss(
        jax.nn.log_softmax(l)[actions], values, rewards, None, False, 0.5)[0])(logits)
    return -p[a] * p[b] * p[c] * p[d] * gradient

  estimate = sum(value_estimate(jnp.array(actions).reshape(2, 2))
                 for actions in itertools.product(range(3), repeat=4))
  np.testing.assert_allclose(estimate, exact, rtol=1e-5, atol=1e-6)


def test_discounted_returns_credit_each_step_with_gamma_weighted_later_rewards():
  rewards = jnp.array([[1.0, 2.0, 3.0]])
  np.testing.assert_allclose(ipfh_losses.rewards_to_go(rewards), [[6.0, 5.0, 3.0]])   # the paper's Σ
  np.testing.assert_allclose(ipfh_losses.rewards_to_go(rewards, 0.5), [[2.75, 3.5, 3.0]])
  np.testing.assert_allclose(ipfh_losses.rewards_to_go(rewards, 0.0), rewards)
  # γ = 0 (config.policy.discount=0): by exact enumeration over two steps of a 3-action policy, the
  # estimate is the gradient of the myopic objective E[r_1] + E_{a_1}[E_{a_2}[r_2]] in which each step's
  # probabilities answer only for the reward that follows them directly.
  logits = jnp.array([0.3, -0.5, 1.1])
  first_reward = jnp.array([1.0, -2.0, 0.5])
  second_reward = jnp.array([[0.0, 3.0, -1.0], [2.0, 0.5, 1.0], [-1.5, 0.0, 4.0]])

  def myopic(logits):
    p, fixed = jax.nn.softmax(logits), jax.lax.stop_gradient(jax.nn.softmax(logits))
    return jnp.sum(p * first_reward) + jnp.sum(fixed[:, None] * p[None, :] * second_reward)

  @jax.jit
  def estimate(a, b):
    p = jax.nn.softmax(logits)
    rewards = jnp.array([[first_reward[a], second_reward[a, b]]])
    gradient = jax.grad(lambda l: ipfh_losses.reinforce_loss(jax.nn.log_softmax(l)[jnp.array([[a, b]])], rewards,
                                                             discount=0.0))(logits)
    return -p[a] * p[b] * gradient

  total = sum(estimate(a, b) for a, b in itertools.product(range(3), repeat=2))
  np.testing.assert_allclose(total, jax.grad(myopic)(logits), rtol=1e-5, atol=1e-6)


def _changed(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_the_schedule_picks_the_stage_of_each_step_on_the_host():
  method = ipfh.make(tiny_config())   # stage "all": 2 coarse, 1 cognition, 1 restoration, 2 policy steps
  assert tuple(method.steps) == ("coarse", "cognition", "restoration", "policy")
  assert [method.step_name(step) for step in range(7)] == [
      "coarse", "coarse", "cognition", "restoration", "policy", "policy", "policy"]
  assert [method.phase(step) for step in (0, 2, 3, 4)] == ["coarse", "cognition", "restoration", "policy"]
  for stage in ipfh.STAGES:
    single = ipfh.make(tiny_config(stage))
    assert tuple(single.steps) == (stage,)
    assert single.step_name(0) == single.step_name(10**6) == stage
  no_cognition = tiny_config()
  no_cognition.stage_steps.cognition = 0
  no_cognition.optim.cognition.schedule = "constant"   # an exponential decay needs decay_steps > 0
  assert [ipfh.make(no_cognition).schedule(step) for step in (1, 2, 3)] == ["coarse", "restoration", "policy"]


def test_a_policy_run_starts_from_the_earlier_stages_checkpoints(tiny_state, tmp_path):
  from hallujax.checkpoint import Checkpointer
  config, batch, state = tiny_state
  trained = state.replace(params=jax.tree.map(lambda p: p + 1.0, state.params))
  for name in ("coarse_run", "cognition_run", "restoration_run"):
    checkpointer = Checkpointer(tmp_path / name, keep=1)
    checkpointer.save(7, trained, jax.random.key_data(jax.random.key(0)), b"{}")
    checkpointer.close()
  config = tiny_config("policy")
  config.weights.coarse = str(tmp_path / "coarse_run")
  config.weights.cognition = str(tmp_path / "cognition_run")
  config.weights.restoration = str(tmp_path / "restoration_run")
  loaded = ipfh.make(config, run_setup.make_context()).load_pretrained(state)
  for group in ("coarse", "dual", "cognition", "restoration"):
    chex.assert_trees_all_equal(loaded.params[group], trained.params[group])
  chex.assert_trees_all_equal(loaded.params["policy"], state.params["policy"])
  chex.assert_trees_all_equal(loaded.opt_state, state.opt_state)
  config.weights.coarse = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    ipfh.make(config, run_setup.make_context()).load_pretrained(state)


@flax.struct.dataclass
class StateBeforeIssue27:
  """IPFH's train state as checkpoints written before issue 27 hold it: `optimizer_states`, not `opt_state`."""
  step: jax.Array
  params: dict
  optimizer_states: dict


def test_a_checkpoint_written_with_the_old_optimizer_states_name_resumes_and_restores(tiny_state, tmp_path):
  from hallujax.checkpoint import Checkpointer
  config, _, state = tiny_state
  moved = jax.tree.map(lambda leaf: leaf + 1, state)   # every parameter and optimizer leaf differs from init's
  old = StateBeforeIssue27(step=jnp.asarray(7, jnp.int32), params=moved.params, optimizer_states=moved.opt_state)
  rng_data = jax.random.key_data(jax.random.key(0))
  checkpointer = Checkpointer(tmp_path / "run", keep=1)
  checkpointer.save(7, old, rng_data, b"{}")
  checkpointer.close()
  run = run_setup.build(config)
  checkpointer = Checkpointer(tmp_path / "run", keep=1)
  resumed = checkpointer.restore_latest_good(run.abstract, rng_data)   # the training loop's resume
  checkpointer.close()
  assert resumed is not None and resumed[3] == 7
  restored, step = run.restore(tmp_path / "run")                       # evaluation's and later stages' restore
  for loaded in (resumed[0], restored):
    assert isinstance(loaded, ipfh.IPFHState) and int(loaded.step) == 7
    chex.assert_trees_all_equal(loaded.params, moved.params)
    chex.assert_trees_all_equal(loaded.opt_state, moved.opt_state)


def test_configuration_errors_name_the_field():
  config = tiny_config()
  config.policy.selection = "evenly"
  with pytest.raises(ValueError, match="config.policy.selection='evenly'"):
    ipfh.check_config(config)
  config = tiny_config()
  config.policy.patch_size = 12
  with pytest.raises(ValueError, match="patch_size=12"):
    ipfh.check_config(config)
  config = tiny_config()
  config.train.steps = 3
  with pytest.raises(ValueError, match="stage_steps"):
    ipfh.check_config(config)
  config = tiny_config()
  config.policy.reward = "gain"
  with pytest.raises(ValueError, match="config.policy.reward='gain'.*paper, improvement"):
    ipfh.check_config(config)
  config = tiny_config()
  config.loss.lr_reference = "lr"
  with pytest.raises(ValueError, match="config.loss.lr_reference='lr'.*input, dual_of_target"):
    ipfh.check_config(config)
  for field, value, expected in (("policy.baseline", "critic", "leave_one_out, value"),
                                 ("policy.head", "mlp", "dense, conv"),
                                 ("restoration.update_every", "epoch", "step, batch"),
                                 ("loss.image_lr", "bicubic", "bilinear, dual"),
                                 ("policy.action_stride", 3, "power of two"),
                                 ("restoration.pretrain_repairs", -1, "integer ≥ 0")):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=f"config.{field}={value!r}.*{expected}"):
      ipfh.check_config(config)


def test_lr_terms_against_the_dual_of_the_target_vanish_at_the_ground_truth(tiny_state):
  """With an imperfect D, ‖D(y) − x‖² > 0 (paper's reference x); against D(y) the terms are 0 at ŷ = y."""
  config, batch, state = tiny_state
  networks = ipfh.build_networks(config)
  objective = ipfh.objective_of(config)._replace(image_lr="dual")   # D on whole images (the option)
  terms = jax.jit(lambda reference: ipfh_losses.image_level_terms(
      state.params, networks, jnp.asarray(batch["target"]), batch, objective._replace(lr_reference=reference)),
      static_argnums=0)
  paper, dual = terms("input"), terms("dual_of_target")
  assert np.all(np.asarray(paper["lr_mse"]) > 1e-3)
  np.testing.assert_array_equal(dual["lr_mse"], 0.0)
  np.testing.assert_array_equal(dual["lr_texture"], 0.0)
  np.testing.assert_allclose(dual["mse"], paper["mse"])   # the HR terms do not depend on the choice


def test_paper_config_matches_the_paper():
  config = load_config()
  assert (config.data.input_size, config.data.target_size) == (16, 128)
  assert (config.policy.steps, config.policy.patch_size) == (20, 32)
  assert config.train.steps == sum(config.stage_steps[s] for s in ipfh.STAGES)
  ipfh.check_config(config)
  policy = load_config("policy")
  assert policy.stage == "policy" and policy.train.steps == policy.stage_steps.policy
  # One optimizer section per trained network, decaying over its stage's steps (all: config.stage_steps).
  assert set(config.optim) == set(ipfh.TRAINED)
  assert [config.optim[n].decay_steps for n in ("coarse", "cognition", "policy")] == [
      config.stage_steps.coarse, config.stage_steps.cognition, config.stage_steps.policy]
  # R: its pretraining steps, then T updates with L_p and one with L_im per policy step (paper §III-B.2).
  assert config.restoration.update_every == "step"
  assert config.optim.restoration.decay_steps == (config.stage_steps.restoration
                                                  + config.stage_steps.policy * (config.policy.steps + 1))
  assert config.loss.image_lr == "bilinear" and config.loss.image_lr_size == 32   # 128² → 32² (§III-B.3)
  smoke_policy = load_config("smoke,stage=policy,train.steps=12")
  assert (smoke_policy.stage, smoke_policy.train.steps, smoke_policy.train.batch_size) == ("policy", 12, 8)
  assert smoke_policy.optim.policy.decay_steps == 12   # a single stage decays over the run's steps
  assert smoke_policy.optim.restoration.decay_steps == 12 * (smoke_policy.policy.steps + 1)
  table = load_config("table7,policy.selection=oracle")
  assert (table.data.input_size, table.data.target_size, table.policy.patch_size) == (16, 64, 16)
  assert (table.policy.steps, table.policy.random_patches, table.policy.selection) == (20, 30, "oracle")
  assert table.train.steps == sum(table.stage_steps[s] for s in ipfh.STAGES) and table.stage == "all"
  ipfh.check_config(table)
  local = load_config("table7_local,policy.selection=grid")   # table7 + local degradations + a stronger R
  assert (local.data.local_degradation, local.data.local_degradation_count, local.restoration.features,
          local.stage_steps.restoration) == ("shade", 6, 64, 300)
  assert local.train.steps == table.train.steps + 300 - table.stage_steps.restoration
  assert (local.policy.steps, local.data.target_size) == (table.policy.steps, table.data.target_size)
  assert table.data.local_degradation == ""   # off unless asked for
  # Table VII's setting: table7_alive's R and data, the discs occluded instead of shaded (docs/ipfh.md)
  occluded = load_config("table7_occlusion")
  assert occluded.to_json() == load_config("table7_alive,data.local_degradation=occlusion").to_json()
  assert load_config("coarse").train.batch_size == 128   # §III-C; smoke keeps its batch
  with pytest.raises(ValueError, match="smoke,stage=policy"):
    load_config("smoke+policy")


def test_the_oracle_picks_the_candidate_with_the_largest_true_gain(tiny_state):
  """Greedy by the ground truth: every candidate repaired with R (whole-network calls, so this also
  checks R's encode_image / repair split); the oracle's corner has the largest drop in squared error."""
  config, batch, state = tiny_state
  networks, examples = examples_of(config, state, batch)
  params = perturbed_restoration(state, seed=7).params
  _, settings, _ = rollout_lib.selection_plan(ipfh.selection_of(config)._replace(kind="oracle"), 1,
                                              jax.random.key(0))
  settings = settings._replace(oracle_stride=2)
  image, target = examples["coarse"][0], examples["target"][0]
  corners = np.asarray(rollout_lib.candidate_corners(32, 32, 8, 2))
  assert len(corners) == 13 * 13 and corners.max() == 24
  repair = jax.jit(lambda patch: networks.restoration.apply({"params": params["restoration"]}, image, patch))
  gains = []
  for top, left in corners:
    patch, truth = image[top:top + 8, left:left + 8], target[top:top + 8, left:left + 8]
    gains.append(float(jnp.sum(jnp.square(patch - truth)) - jnp.sum(jnp.square(repair(patch) - truth))))
  chosen = jax.jit(lambda: rollout_lib.oracle_corner(params, networks, settings, image, target))()
  np.testing.assert_array_equal(chosen, corners[int(np.argmax(gains))])
  assert np.max(gains) - np.min(gains) > 1e-3   # the candidates differ, so the choice is not vacuous


def test_per_step_updates_lower_the_patch_loss_within_an_episode(tiny_state):
  """"At each t-step, we update the local restoration network parameters with patch-level loss Lp":
  repairing one patch T times, R's loss on it falls from step to step; without updates it does not."""
  config, batch, state = tiny_state
  networks, examples = examples_of(config, state, batch)
  steps = 6
  _, settings, _ = rollout_lib.selection_plan(ipfh.selection_of(config)._replace(kind="grid"), BATCH,
                                              jax.random.key(0))
  forced = jnp.full((BATCH, steps), 12 * 32 + 12, jnp.int32)   # the patch at (8, 8), every step
  keys = jax.random.split(jax.random.key(0), (BATCH, steps))
  optimizer = ipfh.optim.make(dict(name="sgd", learning_rate=0.05))
  update = rollout_lib.RestorationUpdate(optimizer, ipfh.optim.apply_update)
  run = jax.jit(lambda settings: rollout_lib.rollout(
      state.params, networks, settings, examples, keys, forced, update,
      optimizer.init(state.params["restoration"])), static_argnums=0)
  _, fixed, (unchanged, _) = run(settings._replace(update_restoration=False))
  _, learning, (learnt, _) = run(settings._replace(update_restoration=True))
  chex.assert_trees_all_equal(unchanged, state.params["restoration"])
  assert _changed(state.params["restoration"], learnt)
  fixed_loss, learning_loss = np.mean(fixed.patch_loss, axis=0), np.mean(learning.patch_loss, axis=0)
  np.testing.assert_allclose(fixed_loss, fixed_loss[0], rtol=1e-5)   # identity R: the same patch each time
  assert np.all(np.diff(learning_loss) < 0), learning_loss
  np.testing.assert_allclose(learning_loss[0], fixed_loss[0], rtol=1e-5)   # the first repair precedes any update


def test_the_bilinear_lr_term_vanishes_when_the_input_is_the_bilinear_downsample():
  """§III-B.3: whole faces go to the LR domain by a bilinear resize ("resize the 128 × 128 HR face into
  32× 32 with bilinear interpolation"): at ŷ = y with x = bilinear(y), the LR terms are zero."""
  config = tiny_config()
  config.loss.update(image_lr="bilinear", image_lr_size=4, lr_reference="input")
  networks = ipfh.build_networks(config)
  state = init(config)
  batch = random_batch(config)
  batch["input"] = np.asarray(ipfh_losses.resize_bilinear(jnp.asarray(batch["target"]), 4))
  objective = ipfh.objective_of(config)
  terms = jax.jit(lambda images, image_lr: ipfh_losses.image_level_terms(
      state.params, networks, images, batch, objective._replace(image_lr=image_lr)), static_argnums=1)
  target = jnp.asarray(batch["target"])
  exact = terms(target, "bilinear")
  np.testing.assert_allclose(exact["lr_mse"], 0.0, atol=1e-12)
  np.testing.assert_allclose(exact["lr_texture"], 0.0, atol=1e-12)
  assert np.all(np.asarray(terms(target + 0.3, "bilinear")["lr_mse"]) > 1e-2)   # a brighter ŷ is penalised
  assert np.all(np.asarray(terms(target, "dual")["lr_mse"]) > 1e-3)   # the untrained conv D is not the resize


def sharpened(policy, factor):
  """The policy with its logits layer scaled by `factor` (lower entropy for factor > 1)."""
  return {**policy, "logits": {"kernel": policy["logits"]["kernel"] * factor,
                               "bias": policy["logits"]["bias"] * factor}}


FACTOR = 100.0   # logits ×100: entropy ≈ 2.3 of log 1024 = 6.9 on the tiny config


def test_the_entropy_bonus_raises_the_policy_entropy(tiny_state):
  """Adam steps on P's loss over the same recorded episodes and rewards: with entropy_bonus the policy
  ends with a higher entropy than without (starting from a sharpened, low-entropy policy)."""
  config, batch, state = tiny_state
  networks, examples = examples_of(config, state, batch)
  selection = ipfh.selection_of(config)
  policy = sharpened(state.params["policy"], FACTOR)
  params = {**state.params, "policy": policy}
  steps, settings, forced = rollout_lib.selection_plan(selection, BATCH, jax.random.key(0))
  keys = jax.random.split(jax.random.key(2), (BATCH, steps))
  settings = settings._replace(update_restoration=False)
  _, records, _ = jax.jit(lambda: rollout_lib.rollout(params, networks, settings, examples, keys, forced))()
  rewards = jax.random.normal(jax.random.key(3), records.reward.shape)
  optimizer = ipfh.optim.make(dict(name="adam", learning_rate=1e-2))
  entropy = jax.jit(lambda weights: jnp.mean(ipfh.policy_outputs(networks, selection, weights, records)[1]))

  @jax.jit
  def trained(bonus):
    objective = ipfh.objective_of(config)._replace(entropy_bonus=bonus)
    def train(carry, _):
      weights, optimizer_state = carry
      gradient, _ = jax.grad(ipfh.policy_loss, argnums=3, has_aux=True)(
          networks, selection, objective, weights, records, rewards, None)
      return ipfh.optim.apply_update(optimizer, weights, optimizer_state, gradient), None
    (weights, _), _ = jax.lax.scan(train, (policy, optimizer.init(policy)), None, length=10)
    return weights

  start = float(entropy(policy))
  without, with_bonus = float(entropy(trained(0.0))), float(entropy(trained(1.0)))
  assert start < 0.5 * np.log(32 * 32), start   # a sharpened policy, so entropy has room to rise
  assert with_bonus > without + 0.1 and with_bonus > start, (start, without, with_bonus)


def test_coarser_action_grids_and_the_convolutional_head_score_every_cell():
  """action_stride s: (H/s)² actions centred at s·i + s/2; head "conv": a score map from convolutions
  (no W×H-way fully connected layer); value_head: V(s_t), one number per state."""
  image = jax.random.uniform(jax.random.key(0), (32, 32, 3), minval=-1, maxval=1)
  patch = image[:8, :8]
  for head in ("dense", "conv"):
    network = PolicyController(image_widths=(4, 8), patch_widths=(4,), holistic_features=8,
                               context_features=8, action_stride=4, head=head, value_head=True)
    params = jax.jit(network.init)(jax.random.key(1), image, patch, jnp.zeros(64))
    logits, value = jax.jit(network.apply)(params, image, patch, jnp.zeros(64))
    assert logits.shape == (64,) and value.shape == () and np.all(np.isfinite(logits))
    assert ("logits" in params["params"]) == (head == "dense") and "value" in params["params"]
  assert tuple(int(v) for v in rollout_lib.patch_corner(jnp.int32(9), 32, 32, 8, stride=4)) == (2, 2)  # cell (1, 1)
  assert tuple(int(v) for v in rollout_lib.patch_corner(jnp.int32(63), 32, 32, 8, stride=4)) == (24, 24)


def test_the_action_history_marks_every_repaired_cell_and_the_default_only_the_last_action():
  """config.policy.action_history: the context's action vector is 1 at every cell whose centre is in a
  repaired patch (two patches repaired here); the default is the one-hot of a_{t-1} (zeros at t = 1)."""
  repaired = jnp.zeros((32, 32), bool).at[0:8, 0:8].set(True).at[16:24, 8:16].set(True)
  history = rollout_lib.action_context(jnp.int32(9), repaired, stride=8, history=True)
  np.testing.assert_array_equal(np.flatnonzero(history), [0, 9])          # cells (0, 0) and (2, 1)
  last = rollout_lib.action_context(jnp.int32(9), repaired, stride=8, history=False)
  np.testing.assert_array_equal(np.flatnonzero(last), [9])
  assert not np.any(rollout_lib.action_context(jnp.int32(-1), jnp.zeros((32, 32), bool), 8, False))


def test_degraded_area_and_repairs_on_it_read_corners_as_top_left_rows_then_columns():
  """Hand-built: a degraded 8² block at rows 0-7, columns 8-15 of a 32² image, patches of 8². Only the patch at
  corner (0, 8) holds it: the transposed corner (8, 0), the next patch (0, 16) and the one below (8, 8) do not;
  one pixel off, 7 of its 8 columns."""
  degraded = np.zeros((1, 32, 32), np.float32)
  degraded[0, 0:8, 8:16] = 1.0
  area = lambda *corners: float(rollout_lib.degraded_area_repaired(jnp.array([corners]), degraded, 8)[0])
  on = lambda *corners: float(rollout_lib.repairs_on_degradation(jnp.array([corners]), degraded, 8)[0])
  assert area((0, 8)) == 1.0 and on((0, 8)) == 1.0
  for wrong in ((8, 0), (0, 16), (8, 8), (0, 0)):
    assert area(wrong) == 0.0 and on(wrong) == 0.0, wrong
  assert area((0, 9)) == 7 / 8 and area((0, 9), (0, 1)) == 1.0   # two patches cover it together
  # A patch spans P rows and P columns, no more: with the block's neighbours below and to the right degraded too,
  # the patch at (0, 8) holds a third of the area.
  wider = degraded.copy()
  wider[0, 8:16, 8:16] = wider[0, 0:8, 16:24] = 1.0
  assert float(rollout_lib.degraded_area_repaired(jnp.array([[(0, 8)]]), wider, 8)[0]) == pytest.approx(1 / 3)
  # A share of the T repairs, each repair counted (a patch repaired twice counts twice).
  assert on((0, 8), (0, 8), (24, 24), (16, 0)) == 0.5 and area((0, 8), (0, 8), (24, 24), (16, 0)) == 1.0
  # The threshold: degraded area of 10% of the patch's 64 pixels (6.4) counts; 6 pixels do not.
  grazed = np.zeros((1, 32, 32), np.float32)
  grazed[0, 7, 10:16] = 1.0
  patch = jnp.array([[(0, 8)]])
  assert float(rollout_lib.repairs_on_degradation(patch, grazed, 8)[0]) == 0.0
  grazed[0, 6, 15] = 0.5
  assert float(rollout_lib.repairs_on_degradation(patch, grazed, 8)[0]) == 1.0
  # Per example, and undefined (NaN, not 0) where an example has no degraded area.
  both = rollout_lib.degraded_area_repaired(jnp.array([[(0, 8)], [(0, 8)]]),
                                            np.concatenate([degraded, np.zeros_like(degraded)]), 8)
  assert float(both[0]) == 1.0 and np.isnan(float(both[1]))


def test_the_input_sized_region_spreads_each_pixel_over_the_target_pixels_it_covers():
  region = np.zeros((1, 4, 4, 1), np.float32)
  region[0, 1, 2, 0] = 0.5
  full = np.asarray(rollout_lib.region_at(region, 32))
  assert full.shape == (1, 32, 32)
  np.testing.assert_array_equal(full[0, 8:16, 16:24], 0.5)   # input pixel (row 1, column 2), ×8
  assert full.sum() == 0.5 * 64
  with pytest.raises(ValueError, match="whole pixels"):
    rollout_lib.region_at(region, 30)


def test_the_degraded_region_is_in_the_batch_only_with_the_face_worlds_local_degradation():
  config = tiny_config()
  assert ipfh.DEGRADED not in ipfh.batch_spec(config)
  config.data.local_degradation = "occlusion"
  assert ipfh.batch_spec(config)[ipfh.DEGRADED].shape == (4, 4, 1)   # at the input's resolution
  config.data.source = "celeb_a"   # the option is the face world's: other sources give no region
  assert ipfh.DEGRADED not in ipfh.batch_spec(config)
