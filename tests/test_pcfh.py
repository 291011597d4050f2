"""PCFH (paper 001): the IDW warp, the networks, the losses, the estimator, and learning on the face world."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import skimage.draw

from configs.pcfh import get_config
from hallujax import methods, optim, loop, run_setup
from hallujax.data import pipeline
from hallujax.methods import pcfh as pcfh_method
from hallujax.models import pcfh as models
from hallujax.nn import warp

TERMS = ("reconstruction", "identity", "luminance", "awm", "mic", "attention_l1", "attention_rank",
         "attention_sparsity")


def tiny_config(argument: str = "smoke"):
  """32² face-world pairs, 4 per batch, networks a few channels wide: compiles in seconds."""
  config = get_config(argument)
  config.data.update(input_size=32, target_size=32, num_identities=10, train_size=64, eval_size=16)
  config.model.update(features=4, blocks=1, local_features=4, local_blocks=1, critic_features=4,
                      critic_layers=2, attention_features=4, attention_layers=2, estimator_size=8,
                      estimator_features=4, estimator_layers=2, identity_size=32, unet_depth=3)
  config.train.update(batch_size=8, eval_batches=1)   # 8: the tests' 8 host devices
  return config


def random_landmarks(rng, count, size, margin=4):
  return rng.uniform(margin, size - 1 - margin, (count, 2)).astype(np.float32)


def test_idw_maps_each_control_point_onto_its_target_exactly():
  rng = np.random.default_rng(0)
  size = 32
  # Integer target points: the output pixel at t_i must read the source pixel at s_i.
  targets = rng.choice(size * size, 12, replace=False)
  targets = np.stack([targets % size, targets // size], -1).astype(np.float32)
  sources = np.clip(targets + rng.uniform(-3, 3, targets.shape), 0, size - 1).astype(np.float32)
  grid = warp.idw_sampling_grid(size, size, jnp.asarray(targets), jnp.asarray(sources))
  np.testing.assert_array_equal(np.asarray(grid)[targets[:, 1].astype(int), targets[:, 0].astype(int)], sources)
  # Image level, batched: a distinct value at each (integer) source point lands on its target.
  sources = np.round(sources)
  image = np.zeros((size, size, 1), np.float32)
  image[sources[:, 1].astype(int), sources[:, 0].astype(int), 0] = np.arange(1, 13)
  warped = warp.idw_warp(jnp.asarray(np.stack([image, image])), jnp.asarray(np.stack([sources, sources])),
                         jnp.asarray(np.stack([targets, targets])))
  assert warped.shape == (2, size, size, 1)
  np.testing.assert_allclose(np.asarray(warped)[:, targets[:, 1].astype(int), targets[:, 0].astype(int), 0],
                             np.tile(np.arange(1, 13, dtype=np.float32), (2, 1)), atol=1e-6)
  # Between control points the map is smooth: the displacement stays inside the hull of the displacements.
  displacement = np.asarray(grid) - np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1)
  assert np.all(displacement <= (sources - targets).max(0) + 1e-4)
  assert np.all(displacement >= (sources - targets).min(0) - 1e-4)


def test_idw_is_the_identity_when_both_landmark_sets_are_equal():
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (3, 24, 20, 3)).astype(np.float32)
  landmarks = np.stack([random_landmarks(rng, 68, 20) for _ in range(3)])
  warped = warp.idw_warp(jnp.asarray(images), jnp.asarray(landmarks), jnp.asarray(landmarks))
  np.testing.assert_allclose(np.asarray(warped), images, atol=1e-6)
  # A pure translation of every control point translates the image (away from the clamped border).
  shifted = warp.idw_warp(jnp.asarray(images), jnp.asarray(landmarks + [2.0, 1.0]), jnp.asarray(landmarks))
  np.testing.assert_allclose(np.asarray(shifted)[:, :-1, :-2], images[:, 1:, 2:], atol=1e-5)


# ----------------------------------------------------------------------------- data: the warp's inputs


def face_correlation(images, references, landmarks) -> float:
  """Mean correlation of luminance inside each face (the polygon of jaw line and brows)."""
  size = images.shape[1]
  values = []
  for image, reference, points in zip(images, references, landmarks):
    outline = points[list(range(17)) + list(range(26, 16, -1))]
    rows, columns = skimage.draw.polygon(outline[:, 1], outline[:, 0], (size, size))
    first, second = (np.asarray(x)[rows, columns] @ [0.299, 0.587, 0.114] for x in (image, reference))
    values.append(np.corrcoef(first, second)[0, 1])
  return float(np.mean(values))


def test_warping_the_visible_image_onto_the_nir_landmarks_brings_its_face_closer_to_the_same_pose_image():
  config = tiny_config()
  config.data.update(input_size=64, target_size=64)
  config.train.batch_size = 16
  [batch] = pipeline.eval_batches(config)
  assert batch["input_landmarks"].shape == (16, 68, 2) and batch["input_landmarks"].dtype == np.float32
  assert batch["aligned_target"].shape == batch["target"].shape
  # Unaligned: another view of the person, whose landmarks are elsewhere.
  assert np.abs(batch["input_landmarks"] - batch["landmarks"]).mean() > 1.0
  warped = np.asarray(warp.idw_warp(jnp.asarray(batch["target"]), jnp.asarray(batch["landmarks"]),
                                    jnp.asarray(batch["input_landmarks"])))
  # Lighting and background change between the two views too, so compare structure inside the face
  # (measured: correlation 0.45 unwarped, 0.53 warped, on this batch).
  before = face_correlation(batch["target"], batch["aligned_target"], batch["input_landmarks"])
  after = face_correlation(warped, batch["aligned_target"], batch["input_landmarks"])
  assert after > before + 0.04, (before, after)


# ----------------------------------------------------------------------------- networks


def test_max_out_fusion_takes_the_larger_feature_inside_each_box_and_the_global_one_outside():
  rng = np.random.default_rng(2)
  global_features = jnp.asarray(rng.normal(size=(2, 10, 12, 3)), jnp.float32)
  first = jnp.asarray(rng.normal(size=(2, 4, 5, 3)), jnp.float32)
  second = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
  corners = [jnp.asarray([[1, 2], [5, 6]]), jnp.asarray([[3, 4], [0, 0]])]   # overlapping in example 0
  fused = np.asarray(models.max_out_fusion(global_features, [first, second], corners))
  expected = np.asarray(global_features).copy()
  for patch, corner in zip((first, second), corners):
    for b in range(2):
      top, left = np.asarray(corner[b])
      h, w = patch.shape[1:3]
      expected[b, top:top + h, left:left + w] = np.maximum(expected[b, top:top + h, left:left + w], patch[b])
  np.testing.assert_array_equal(fused, expected)
  covered = np.zeros((2, 10, 12), bool)
  covered[0, 1:5, 2:7] = covered[0, 3:6, 4:7] = covered[1, 5:9, 6:11] = covered[1, 0:3, 0:3] = True
  np.testing.assert_array_equal(fused[~covered], np.asarray(global_features)[~covered])


def test_a_local_path_changes_the_output_only_around_its_component():
  size = 32
  generator = models.MultiPathGenerator(features=4, blocks=1, local_features=4, local_blocks=1)
  rng = np.random.default_rng(3)
  images = jnp.asarray(rng.uniform(-1, 1, (1, size, size, 1)), jnp.float32)
  landmarks = jnp.asarray(random_landmarks(rng, 68, size, margin=8)[None])
  variables = jax.jit(generator.init)(jax.random.key(0, impl="rbg"), images, landmarks)
  mouth = models.component_corners(landmarks, models.component_sizes(size), size)["mouth"][0]
  height, width = models.component_sizes(size)["mouth"]

  def output_with_mouth(mouth_params):
    params = dict(variables["params"], mouth_path=mouth_params)
    return generator.apply({"params": params}, images, landmarks)[0]

  # How each output pixel moves along a random direction in the mouth path's parameters (forward mode).
  mouth_params = variables["params"]["mouth_path"]
  leaves, treedef = jax.tree.flatten(mouth_params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  direction = jax.tree.unflatten(treedef, [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])
  change = jax.jit(lambda p, d: jax.jvp(output_with_mouth, (p,), (d,))[1])(mouth_params, direction)
  sensitivity = np.abs(np.asarray(change)).sum(-1)
  top, left = int(mouth[0]), int(mouth[1])
  reach = 3   # the last 7×7 convolution spreads a feature 3 pixels
  outside = np.ones((size, size), bool)
  outside[max(0, top - reach): top + height + reach, max(0, left - reach): left + width + reach] = False
  assert np.all(sensitivity[outside] == 0)
  assert sensitivity[top:top + height, left:left + width].max() > 0


def test_plain_background_gives_every_visible_target_one_grey_background_and_leaves_the_rest():
  """data.plain_background (issue 33): the visible views' background is one flat grey, no longer a random
  colour no NIR input can predict; the NIR inputs, identities and landmarks are those of the option off."""
  plain, default = tiny_config(), tiny_config()
  plain.data.plain_background = True
  plain_batch, default_batch = pipeline.eval_batches(plain)[0], pipeline.eval_batches(default)[0]
  for name in ("input", "identity", "landmarks", "input_landmarks"):
    np.testing.assert_array_equal(plain_batch[name], default_batch[name])
  for name in ("target", "aligned_target"):
    # The top-left corner (hair or shoulders may reach other corners): one grey for every example.
    corners = plain_batch[name][:, :2, :2].reshape(-1, 3)
    np.testing.assert_allclose(corners, np.zeros_like(corners), atol=0.02)
    default_corners = default_batch[name][:, :2, :2].reshape(-1, 3)
    assert np.std(default_corners, axis=0).max() > 0.2   # the default's random colours


# ----------------------------------------------------------------------------- the MI estimator


def test_the_estimator_learns_dependence_and_finds_none_between_independent_images():
  """NE with the smoke config's optimizer, one update a step on every off-diagonal pair (issue 33: with one
  rolled pair a example and Adam 2e-4 its estimates stayed at ~0.001 nats)."""
  rng = np.random.default_rng(4)
  config = get_config("smoke")

  def pairs(dependent: bool):
    # The "output" x and a noisy copy of it (visible, 3 channels; NIR, its first channel), or images
    # drawn independently of x: the MI is large in the first case and 0 in the second.
    x = rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    source = x if dependent else rng.uniform(-1, 1, x.shape).astype(np.float32)
    visible = source + 0.3 * rng.normal(size=x.shape).astype(np.float32)
    nir = source[..., :1] + 0.3 * rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(visible), jnp.asarray(nir)

  estimator = models.MutualInformationEstimator(size=8, features=8, layers=2)
  optimizer = optim.make(config.optim.estimator, "config.optim.estimator")
  update = jax.jit(lambda p, s, batch: pcfh_method.train_estimator(estimator, optimizer, p, s, *batch,
                                                                    steps=config.train.estimator_steps))
  estimate = jax.jit(lambda p, batch: pcfh_method.mutual_information(estimator, p, *batch))

  def held_out_estimates(dependent: bool) -> dict:
    params = jax.jit(estimator.init)(jax.random.key(0, impl="rbg"), *pairs(dependent))["params"]
    opt_state = optimizer.init(params)
    for _ in range(200):
      params, opt_state, _ = update(params, opt_state, pairs(dependent))
    values = [estimate(params, pairs(dependent)) for _ in range(16)]
    return {name: float(np.mean([v[name] for v in values])) for name in ("visible", "nir")}

  dependent, independent = held_out_estimates(True), held_out_estimates(False)
  for name in ("visible", "nir"):
    assert dependent[name] > 0.5, (dependent, independent)
    assert abs(independent[name]) < 0.1, (dependent, independent)


# ----------------------------------------------------------------------------- losses


def random_batch(config, seed=6):
  rng = np.random.default_rng(seed)
  size, count = config.data.target_size, config.train.batch_size
  landmarks = np.stack([random_landmarks(rng, 68, size, margin=6) for _ in range(count)])
  return {
      "input": rng.uniform(-1, 1, (count, size, size, 1)).astype(np.float32),
      "input_landmarks": landmarks,
      "target": rng.uniform(-1, 1, (count, size, size, 3)).astype(np.float32),
      "landmarks": (landmarks + rng.uniform(-2, 2, landmarks.shape)).astype(np.float32),
      "aligned_target": rng.uniform(-1, 1, (count, size, size, 3)).astype(np.float32),
      "identity": np.arange(count, dtype=np.int32) % 2,
  }


def test_each_loss_term_switched_off_by_its_weight_leaves_the_others_unchanged():
  config = tiny_config()
  config.loss.identity = 0.002      # the smoke variant leaves L_ID off (no LightCNN weights)
  batch = {name: jnp.asarray(value) for name, value in random_batch(config).items()}
  # The run's initial networks (no trained model needed), as the short run below builds them: one compile of
  # init and of init_frozen for both tests (the suite's compilation cache), fetched to the host for eager use.
  run = run_setup.build(config)
  params = jax.device_get(run.init_state().params)
  frozen = jax.device_get(run.frozen_networks(load=False)[0])
  # Eager (op by op): one small program per operation, shared by every configuration below.
  everything = {name: float(value) for name, value in
                pcfh_method.generator_terms(pcfh_method.build(config), params, frozen, batch).items()}
  assert set(everything) == {f"loss_{term}" for term in TERMS} | {"loss_adversarial"}
  assert all(value != 0.0 for value in everything.values()), everything
  for term in TERMS:
    switched = tiny_config()
    switched.loss.identity = 0.002
    switched.loss[term] = 0.0
    without = pcfh_method.generator_terms(pcfh_method.build(switched), params, frozen, batch)
    gone = {term} | ({"attention_l1", "attention_rank", "attention_sparsity"} if term == "awm" else set())
    assert set(without) == set(everything) - {f"loss_{t}" for t in gone}, (term, sorted(without))
    for name, value in without.items():
      np.testing.assert_allclose(float(value), everything[name], rtol=1e-5,
                                 err_msg=f"switching off {term} changed {name}")


def test_variants_without_a_network_initialise_the_others_as_the_full_method():
  config = tiny_config()
  full = jax.eval_shape(pcfh_method.make(config).init, jax.random.key(0)).params
  for term, network in (("awm", "attention"), ("mic", "estimator")):
    switched = tiny_config()
    switched.loss[term] = 0.0
    params = jax.eval_shape(pcfh_method.make(switched).init, jax.random.key(0)).params
    assert set(params) == set(full) - {network}
  # Values: the per-network keys do not depend on which networks exist.
  without = tiny_config()
  without.loss.awm = 0.0
  critic = jax.jit(lambda key: pcfh_method.make(without).init(key).params["critic"])(jax.random.key(0))
  reference = jax.jit(lambda key: pcfh_method.make(config).init(key).params["critic"])(jax.random.key(0))
  chex.assert_trees_all_equal(critic, reference)


def test_the_baselines_are_methods_of_their_own_that_train_on_pcfh_pairs():
  """ablation=pix2pix / cyclegan selects a registered method with its own networks; one step moves each."""
  batch = None
  for ablation, trained in (("pix2pix", {"generator", "discriminator"}),
                            ("cyclegan", {"generator", "auxiliary", "critic", "critic_nir"})):
    config = tiny_config(f"smoke,ablation={ablation}")
    assert config.method == ablation
    method = methods.make_method(config)
    batch = batch or {name: jnp.asarray(value) for name, value in random_batch(config).items()}
    state = jax.jit(method.init)(jax.random.key(0))
    assert set(state.params) == trained
    frozen = jax.jit(method.init_frozen)(jax.random.key(1))
    after, metrics = jax.jit(method.steps["train"])(state, frozen, batch, jax.random.key(2))
    assert int(after.step) == 1 and all(np.isfinite(float(v)) for v in metrics.values()), metrics
    for name in trained:
      assert not np.allclose(jax.tree.leaves(after.params[name])[0], jax.tree.leaves(state.params[name])[0]), name
    columns = jax.eval_shape(method.hallucinate, state, frozen, batch)
    assert set(columns) == {"input", "visible", "warped", "output", "target"}   # PCFH's, without the attention


# ----------------------------------------------------------------------------- learning


def held_out_l1_warped(columns, state, frozen, batches) -> float:
  """Mean |output − I_Warp| over held-out batches, from the image columns (cheaper to compile than eval_step)."""
  values = [columns(state, frozen, batch) for batch in batches]
  return float(np.mean([np.mean(np.abs(v["output"] - v["warped"])) for v in values]))


def test_a_short_run_lowers_the_warped_target_l1_on_held_out_pairs(tmp_path):
  config = tiny_config()
  # All 30 steps in the warm-up phase: one step program to compile (the "train" phase's terms are
  # checked above).
  config.train.update(steps=30, attention_warmup_steps=30, log_every=10, eval_every=30, eval_batches=2,
                      image_every=30, checkpoint_every=30)
  for network in ("generator", "auxiliary", "attention"):
    config.optim[network].learning_rate = 1e-3
  # The run's own initial state, frozen networks, held-out batches and image-grid program, built as the loop
  # builds them: the loop's compiles of init, init_frozen and the grid are then the same programs, loaded from
  # the suite's compilation cache instead of compiled a second time.
  run = run_setup.build(config)
  frozen, frozen_shardings = run.frozen_networks()
  feed = run.feed()
  held_out = [feed(batch) for batch in pipeline.eval_batches(config)]
  before = held_out_l1_warped(run.grid_columns(frozen_shardings), run.init_state(), frozen, held_out)
  result = loop.train(config, tmp_path)
  assert int(result.state.step) == 30
  assert result.evaluation["l1_warped"] < 0.8 * before, (before, result.evaluation)
  assert np.isfinite(result.evaluation["psnr"])
