"""VividGAN (paper 002): networks, losses, component prior, stages, and a short learning run."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vividgan as vividgan_config
from hallujax import run_setup
from hallujax.data import alignment
from hallujax.data.pipeline import PrepareExample
from hallujax.data.sources import make_source
from hallujax.methods import get_method, vividgan
from hallujax.models import vividgan as networks
from hallujax.nn.initialization import fast_key


def test_spatial_transformer_is_the_identity_at_zero_offsets_and_shifts_with_a_translation():
  features = jax.random.normal(jax.random.key(0), (2, 12, 10, 5))
  layer = networks.SpatialTransformer(features=8)
  variables = jax.jit(layer.init)(jax.random.key(1), features)
  np.testing.assert_allclose(jax.jit(layer.apply)(variables, features), features, atol=1e-5)
  # A translation by one pixel width (2 / W in normalised units) samples the right neighbour.
  theta = networks.identity_theta(2).at[:, 0, 2].set(2.0 / 10)
  shifted = jax.jit(networks.affine_sample)(features, theta)
  np.testing.assert_allclose(shifted[:, :, :-1], features[:, :, 1:], atol=1e-5)
  np.testing.assert_allclose(shifted[:, :, -1], 0.0, atol=1e-6)   # outside the input: zero


def test_coarse_network_upsamples_by_the_power_of_two_and_rejects_other_ratios():
  module = networks.CoarseNetwork(widths=(8, 8, 4), localization_features=4)
  low = jnp.zeros((1, 4, 4, 3))
  assert jax.eval_shape(module.init_with_output, jax.random.key(0), low)[0].shape == (1, 16, 16, 3)
  with pytest.raises(ValueError, match="powers of two"):
    networks.upsampling_steps(16, 96)


def test_mirror_symmetry_loss_is_zero_for_a_symmetric_image_only():
  image = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  symmetric = image + image[:, :, ::-1]
  assert float(vividgan.mirror_symmetry_loss(symmetric)) == pytest.approx(0.0, abs=1e-12)
  assert float(vividgan.mirror_symmetry_loss(image)) > 0.1


def test_landmark_heatmaps_peak_at_the_landmarks():
  rng = np.random.default_rng(0)
  # Landmarks on the heatmap grid's pixel centres (reduction 4: image x = 4·i + 1.5).
  cells = rng.integers(0, 16, (2, 68, 2))
  landmarks = jnp.asarray(4.0 * cells + 1.5, jnp.float32)
  heatmaps = networks.gaussian_heatmaps(landmarks, 64, 16, sigma=1.0)
  assert heatmaps.shape == (2, 16, 16, 68)
  np.testing.assert_allclose(jnp.max(heatmaps, axis=(1, 2)), 1.0, atol=1e-6)
  np.testing.assert_allclose(networks.landmarks_from_heatmaps(heatmaps, 64), landmarks, atol=1e-5)
  # The estimator's soft-argmax read-out of sharp logits lands on the same points.
  interior = jnp.asarray(4.0 * rng.integers(3, 13, (2, 68, 2)) + 1.5, jnp.float32)
  logits = 50.0 * networks.gaussian_heatmaps(interior, 64, 16)
  np.testing.assert_allclose(networks.soft_argmax_landmarks(logits, 64), interior, atol=1e-3)
  # Anywhere in the image the maximum is within half a heatmap pixel (2 image pixels).
  anywhere = jnp.asarray(rng.uniform(0, 63, (2, 68, 2)), jnp.float32)
  recovered = networks.landmarks_from_heatmaps(networks.gaussian_heatmaps(anywhere, 64, 16), 64)
  assert float(jnp.max(jnp.abs(recovered - anywhere))) <= 2.0 + 1e-4


def test_component_crops_follow_the_landmarks_and_match_the_host_crops():
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (128, 128, 3)).astype(np.float32)
  landmarks = rng.uniform(30, 98, (68, 2)).astype(np.float32)
  landmarks[alignment.PARTS_68["mouth"]] = rng.uniform(120, 127, (20, 2))   # a box past the border
  sizes = networks.component_sizes(128)
  assert sizes == alignment.COMPONENT_SIZES["vividgan128"][1]
  crops, boxes = networks.crop_components(jnp.asarray(image)[None], jnp.asarray(landmarks)[None], sizes)
  host_crops, host_boxes = alignment.crop_components(image, landmarks, "vividgan128")
  for part in networks.COMPONENTS:
    assert tuple(np.asarray(boxes[part][0])) == host_boxes[part][:2]
    np.testing.assert_array_equal(np.asarray(crops[part][0]), host_crops[part])
  # Moving the landmarks by (dx, dy) moves every crop with them.
  moved, _ = networks.crop_components(jnp.asarray(image)[None], jnp.asarray(landmarks - [3.0, 5.0])[None], sizes)
  top, left = np.asarray(boxes["nose"][0])
  height, width = sizes["nose"]
  np.testing.assert_array_equal(np.asarray(moved["nose"][0]), image[top - 5:top - 5 + height, left - 3:left - 3 + width])


def test_the_prior_holds_each_component_at_its_box_on_a_black_template():
  sizes = networks.component_sizes(64)
  image = jax.random.uniform(jax.random.key(0), (1, 64, 64, 3), minval=-1, maxval=1)
  landmarks = jnp.zeros((1, 68, 2))
  centres = {"right_eye": (20, 24), "left_eye": (44, 24), "nose": (32, 36), "mouth": (32, 50)}
  for part, centre in centres.items():
    landmarks = landmarks.at[:, jnp.array(alignment.PARTS_68[part])].set(jnp.asarray(centre, jnp.float32))
  crops, boxes = jax.jit(functools.partial(networks.crop_components, sizes=sizes))(image, landmarks)
  prior = jax.jit(functools.partial(networks.stitch_components, image_size=64))(crops, boxes)
  covered = np.zeros((64, 64), bool)
  for part in networks.COMPONENTS:
    top, left = np.asarray(boxes[part][0])
    height, width = sizes[part]
    covered[top:top + height, left:left + width] = True
  # All crops come from one image, so max-out keeps its values where boxes overlap; -1 elsewhere.
  np.testing.assert_allclose(prior[0][covered], image[0][covered])
  np.testing.assert_allclose(prior[0][~covered], -1.0)


def test_integration_block_with_sigma_zero_returns_the_fused_features():
  fused = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  heatmaps = jax.random.uniform(jax.random.key(1), (2, 8, 8, 68))
  for sigma, same in ((0.0, True), (1.0, False)):
    block = networks.IntegrationBlock(embedding=8, sigma=sigma)
    out = jax.jit(block.init_with_output)(jax.random.key(2), fused, heatmaps)[0]
    assert out.shape == fused.shape
    assert np.allclose(out, fused) == same


def test_bce_losses_of_eq_7_and_8():
  logits = jnp.zeros(4)   # D = 1/2 everywhere
  assert float(vividgan.discriminator_loss(logits, logits)) == pytest.approx(2 * np.log(2), rel=1e-6)
  assert float(vividgan.generator_adversarial_loss(logits)) == pytest.approx(np.log(2), rel=1e-6)
  confident = jnp.full(4, 20.0)
  assert float(vividgan.discriminator_loss(confident, -confident)) < 1e-8   # real -> 1, fake -> 0
  assert float(vividgan.generator_adversarial_loss(-confident)) == pytest.approx(20.0, rel=1e-6)


def test_variants_build_the_networks_they_name():
  def trained(variant):
    method = vividgan.make(vividgan_config.get_config(variant))
    return set(jax.eval_shape(method.init, jax.random.key(0)).params), method

  full, method = trained("smoke")
  assert full == {"coarse", "landmarks", "touching_up", "fine", "coarse_discriminator", "fine_discriminator"}
  assert list(method.steps) == ["coarse", "touching_up", "joint"]
  assert [method.schedule(s) for s in (0, 299, 300, 359, 360)] == ["coarse", "coarse", "touching_up",
                                                                    "touching_up", "joint"]
  v_tn, method = trained("smoke,model.prior=none")
  assert "touching_up" not in v_tn and list(method.steps) == ["coarse", "joint"]
  assert vividgan_config.get_config("smoke,model.prior=none").train.steps == 300 + 240
  assert "touching_up" not in trained("smoke,model.prior=ground_truth")[0]
  mse_h, method = trained("smoke,loss.terms=mse_h")
  assert not {"coarse_discriminator", "fine_discriminator"} & mse_h
  assert jax.eval_shape(method.init_frozen, jax.random.key(0)) == {}   # no L_id: no ResNet-50
  assert "fine_discriminator" not in trained("smoke,loss.terms=coarse_adversarial")[0]
  with pytest.raises(ValueError, match="loss.terms"):
    vividgan.make(vividgan_config.get_config("smoke,loss.terms=everything"))
  assert get_method("vividgan") is vividgan


def test_fig8_rows_differ_only_in_the_prior_and_get_the_longer_joint_stage():
  """Fig. 8's rows (configs/tables/vividgan_fig8.py) train the same coarse and joint steps; stage (ii) is
  VividGAN's alone, and the joint stage is the fig8 variant's longer one, not tiny's."""
  def phase_counts(variant):
    config = vividgan_config.get_config(variant)
    method = vividgan.make(config)
    phases = [method.schedule(step) for step in range(config.train.steps)]
    return {phase: phases.count(phase) for phase in vividgan.STAGES}

  estimated = phase_counts("fig8")
  assert estimated["touching_up"] > 0
  for prior in ("none", "ground_truth"):
    assert phase_counts(f"fig8,model.prior={prior}") == dict(estimated, touching_up=0)
  assert estimated["joint"] > phase_counts("tiny")["joint"]
  assert estimated["coarse"] == phase_counts("tiny")["coarse"]


def test_paper_config_matches_the_paper():
  config = vividgan_config.get_config("")
  assert (config.data.input_size, config.data.target_size, config.data.pairing) == (16, 128, "frontalize")
  coarse, fine = vividgan.loss_weights(config.loss)
  assert coarse == dict(mse=1.0, identity=0.01, symmetry=1.0, adversarial=0.01)        # Eq. 9
  assert fine == dict(mse=1.0, heatmap=0.01, identity=0.01, adversarial=0.01)           # Eq. 11
  assert config.model.fine.sigma == 1.0                                                 # Eq. 2
  assert config.optim.fine.learning_rate == 1e-3                                        # §III-E
  assert config.optim.coarse.rates == config.optim.touching_up.rates == 1e-4


def faces(config, split, count):
  source, prepare = make_source(config.data, split), PrepareExample(config.data)
  examples = [prepare.map(source[index]) for index in range(count)]
  return {key: np.stack([e[key] for e in examples]) for key in ("input", "target", "landmarks", "yaw")}


def tiny_config():
  """8² -> 32² frontalization, tiny networks, L⁻_G's losses (L_mse, L_h: no ResNet-50, no discriminators)."""
  config = vividgan_config.get_config("smoke,data.input_size=8,data.target_size=32,loss.terms=mse_h")
  config.model.update(
      coarse=dict(widths=(32, 16, 16), localization_features=4, bicubic_skip=True),
      landmarks=dict(features=8, num_stacks=1, depth=1, reduction=4),
      touching_up=dict(widths=(4, 8)),
      fine=dict(encoder_widths=(8, 16), hourglass_stacks=1, hourglass_depth=1, embedding=8, sigma=1.0))
  config.stages.update(coarse=60, touching_up=10, joint=20)
  return config


def test_stages_train_their_networks_and_a_short_run_beats_bicubic_on_held_out_faces():
  config = tiny_config()
  method = vividgan.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  assert jax.eval_shape(method.init_frozen, jax.random.key(1)) == {}
  steps = {name: jax.jit(functools.partial(step, frozen={})) for name, step in method.steps.items()}
  evaluate = jax.jit(functools.partial(method.eval_step, frozen={}))
  train, held_out = faces(config, "train", 128), faces(config, "validation", 16)
  before = evaluate(state, batch=held_out)
  # The coarse face starts at bicubic(LR), the fine face at the coarse one (zero-initialised residuals).
  np.testing.assert_allclose(before["psnr_coarse"], before["psnr_bicubic"], rtol=1e-5)
  np.testing.assert_allclose(before["psnr"], before["psnr_coarse"], rtol=1e-5)
  changed_in = {}
  for index in range(config.train.steps):
    name = method.schedule(index)
    rows = np.arange(index * 8, index * 8 + 8) % 128
    new_state, metrics = steps[name](state, batch={k: v[rows] for k, v in train.items()},
                                     rng=jax.random.key(index))
    if name not in changed_in:
      changed_in[name] = {net for net in state.params if not all(
          np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params[net]),
                                               jax.tree.leaves(new_state.params[net])))}
      assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    state = new_state
  assert changed_in == {"coarse": {"coarse", "landmarks"}, "touching_up": {"touching_up"},
                        "joint": {"coarse", "landmarks", "touching_up", "fine"}}
  values = evaluate(state, batch=held_out)
  output, coarse, bicubic = (float(np.mean(values[k])) for k in ("psnr", "psnr_coarse", "psnr_bicubic"))
  assert coarse > bicubic + 0.3, f"held-out PSNR: coarse {coarse:.2f} dB vs bicubic {bicubic:.2f} dB"
  assert output > bicubic + 0.3, f"held-out PSNR: VividGAN {output:.2f} dB vs bicubic {bicubic:.2f} dB"
  np.testing.assert_array_equal(values["yaw"], held_out["yaw"])
  order = []   # jit returns dicts in sorted order; the grid keeps the method's, seen while tracing
  columns = jax.eval_shape(lambda s, b: order.extend(method.hallucinate(s, {}, b)) or method.hallucinate(s, {}, b),
                           state, held_out)
  assert order == ["lr", "bicubic", "coarse", "prior", "output", "target"]
  assert all(columns[name].shape == (16, 32, 32, 3) for name in order if name != "lr")


def test_eval_step_reports_the_share_of_each_added_loss_for_the_rows_that_train_it():
  """Table III's "component alive" figures: a row's added losses have a share of L_G, the losses it leaves
  out have none, and a loss's share grows with its weight."""
  def shares(variant):
    config = vividgan_config.get_config(variant)
    method = vividgan.make(config)
    state = jax.jit(method.init)(jax.random.key(0))
    frozen = jax.jit(method.init_frozen)(jax.random.key(1))
    values = jax.jit(method.eval_step)(state, frozen, faces(config, "validation", 8))
    return {loss: float(np.mean(values[f"{loss}_loss_share"])) for loss in vividgan.ADDED_LOSSES}

  symmetry = shares("tiny,loss.terms=symmetry")
  assert symmetry["identity"] > 0 and symmetry["symmetry"] > 0
  assert symmetry["coarse_adversarial"] == symmetry["fine_adversarial"] == 0
  full = shares("tiny")
  assert all(0 < share < 1 for share in full.values()), full
  assert sum(full.values()) < 1   # L_mse, L_h and L_T carry the rest
  assert shares("tiny,loss.symmetry=10.0")["symmetry"] > full["symmetry"]


def test_identity_features_come_from_an_in_project_arcface_run(tmp_path):
  from configs import arcface as arcface_config
  from hallujax import checkpoint, loop
  from hallujax.methods import arcface
  # An ArcFace run directory as training leaves it (config.json and a checkpoint), without the training.
  recognizer = arcface_config.get_config("smoke")
  workdir = str(tmp_path / "arcface")
  # The project's rbg init key (XLA on CPU compiles the ResNet's parameter draws in a third of threefry's time;
  # any values do here).
  state = jax.jit(arcface.make(recognizer).init)(fast_key(jax.random.key(5)))
  os.makedirs(workdir)
  loop.write_run_config(recognizer, workdir)
  saver = checkpoint.Checkpointer(workdir, keep=1)
  saver.save(1, state, jax.random.key_data(jax.random.key(0)), b"{}")
  saver.close()
  config = vividgan_config.get_config("tiny,loss.terms=identity")
  config.weights.recognizer = workdir
  method = vividgan.make(config, run_setup.make_context())
  random_phi = method.init_frozen(jax.random.key(0))
  frozen = method.load_frozen(random_phi)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  phi = vividgan.identity_network(config, jnp.float32)
  loaded = phi.apply(frozen["identity"], images, train=False)
  np.testing.assert_allclose(loaded, arcface.embed_function(recognizer)(state, images), rtol=1e-4, atol=1e-5)
  assert not np.allclose(loaded, phi.apply(random_phi["identity"], images, train=False), atol=1e-3)
  not_arcface = tmp_path / "vividgan_run"
  not_arcface.mkdir()
  (not_arcface / "config.json").write_text(config.to_json())
  config.weights.recognizer = str(not_arcface)
  with pytest.raises(ValueError, match="expected an ArcFace run"):
    vividgan.make(config)
