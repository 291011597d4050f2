"""FH-GAN (paper 003): DSNet's structure, the WGAN-GP penalty, both training phases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import fhgan as fhgan_config
from hallujax import optim
from hallujax.methods import fhgan
from hallujax.models import dsnet
from hallujax.nn.initialization import fast_key


def test_exponential_offsets_follow_eq3():
  # Eq. 3: offsets c^0 .. c^k with c^k <= l, c = 2.
  assert dsnet.exponential_offsets(1) == [1]
  assert dsnet.exponential_offsets(4) == [1, 2, 4]
  assert dsnet.exponential_offsets(7) == [1, 2, 4]
  outputs = [jnp.full((1, 1, 1, 1), float(i)) for i in range(7)]
  # Layer 6 reads y5, y4, y2.
  np.testing.assert_array_equal(dsnet.sparse_inputs(outputs, 6).ravel(), [5.0, 4.0, 2.0])


def test_paper_dsnet_has_41_layers_and_upsamples_28_to_112():
  config = fhgan_config.get_config()
  generator = fhgan.networks(config)["generator"]
  shapes = jax.eval_shape(generator.init, jax.random.key(0), jnp.zeros((1, 28, 28, 3)))
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
             if path[-1].key == "kernel"]
  assert len(kernels) == 41  # §4.1: "depth of face hallucination network size is 41 layers"
  block_layers = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes["params"]["block0"])
                  if path[-1].key == "kernel"]
  assert all(shape[-1] == 32 for shape in block_layers)  # growth rate 32
  bottleneck = shapes["params"]["bottleneck"]["kernel"].shape
  assert bottleneck[:2] == (1, 1) and bottleneck[-1] == 128
  output = jax.eval_shape(generator.apply, shapes, jnp.zeros((2, 28, 28, 3)))
  assert output.shape == (2, 112, 112, 3)


def test_pixel_shuffle_matches_torch():
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4 * 16)).astype(np.float32)
  expected = torch.nn.functional.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), 4)
  np.testing.assert_allclose(dsnet.pixel_shuffle(jnp.asarray(x), 4),
                             expected.permute(0, 2, 3, 1).numpy(), atol=0)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
  # D(x) = <w, x>: its gradient is w everywhere, so the penalty is (‖w‖ - 1)².
  w = jax.random.normal(jax.random.key(1), (4, 4, 3))
  critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  real = jax.random.normal(jax.random.key(2), (5, 4, 4, 3))
  fake = jax.random.normal(jax.random.key(3), (5, 4, 4, 3))
  penalty = fhgan.gradient_penalty(critic, real, fake, jax.random.key(4))
  np.testing.assert_allclose(penalty, (jnp.linalg.norm(w) - 1.0) ** 2, rtol=1e-5)


def tiny_config(pretrain_steps, adversarial=False, n_critic=1):
  config = fhgan_config.get_config("smoke")
  config.train.update(pretrain_adversarial=adversarial, n_critic=n_critic)
  config.data.update(input_size=8, target_size=32, num_identities=4)
  config.model.update(features=8, blocks=2, layers_per_block=3, growth=8, bottleneck=16, upsample_features=8,
                      critic_features=8, recognizer_stages=(1, 1, 1, 1), recognizer_widths=(8, 8, 8, 8),
                      embedding_dim=16)
  config.loss.perceptual_layer = "relu1_2"
  config.train.update(batch_size=4, pretrain_steps=pretrain_steps, steps=pretrain_steps + 10)
  return config


def tiny_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  hr = rng.uniform(-1, 1, (config.train.batch_size, 4, 4, 3)).astype(np.float32)
  hr = np.kron(hr, np.ones((1, config.data.target_size // 4, config.data.target_size // 4, 1), np.float32))
  factor = config.data.target_size // config.data.input_size
  lr = hr.reshape(hr.shape[0], config.data.input_size, factor, config.data.input_size, factor, 3).mean((2, 4))
  return {"input": lr, "target": hr, "identity": np.arange(hr.shape[0], dtype=np.int32) % 4}


PRETRAIN_STEPS = 1000   # long enough that the learning-rate decay stays mild over the steps run here
LEARNING_STEPS = 250


def frozen_key():
  """An rbg key for the frozen tree, a randomly initialized VGG-19 (no weights in the tests): its 20M parameters
  drawn with a threefry key took 42 s to compile here (load 15); no test depends on its particular values."""
  return fast_key(jax.random.key(1))


@pytest.fixture(scope="module")
def tiny():
  """A tiny FH-GAN, its first state and frozen tree, its two phase steps and evaluation, compiled once."""
  config = tiny_config(PRETRAIN_STEPS)
  config.optim.generator.learning_rate = 3e-3
  method = fhgan.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  frozen = jax.jit(method.init_frozen)(frozen_key())
  steps = {name: jax.jit(functools.partial(step, frozen=frozen)) for name, step in method.steps.items()}
  evaluate = jax.jit(functools.partial(method.eval_step, frozen=frozen))
  return config, method, state, steps, evaluate


def run_step(steps, name, state, batch, rng):
  return steps[name](state, batch=batch, rng=rng)


def changed_networks(before, after):
  return {name for name in before.params
          if any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                              before.params[name], after.params[name])))}


def test_pretraining_updates_dsnet_and_arcface_only(tiny):
  config, method, state, steps, _ = tiny
  assert method.schedule(PRETRAIN_STEPS - 1) == "pretrain"
  new_state, metrics = run_step(steps, "pretrain", state, tiny_batch(config), jax.random.key(1))
  assert changed_networks(state, new_state) == {"generator", "recognizer", "margin_head"}
  assert "loss_critic" not in metrics and "loss_perceptual" not in metrics  # only what the phase trains
  assert int(new_state.step) == 1


def test_joint_phase_updates_all_three_networks_with_penalised_critic(tiny):
  config, method, state, steps, _ = tiny
  assert method.schedule(PRETRAIN_STEPS) == "joint" and method.phase(PRETRAIN_STEPS) == "joint"
  new_state, metrics = run_step(steps, "joint", state, tiny_batch(config), jax.random.key(1))
  assert changed_networks(state, new_state) == {"generator", "critic", "recognizer", "margin_head"}
  assert not hasattr(new_state, "frozen")  # VGG-19 lives in the frozen tree, never in the state
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["gradient_penalty"]) > 0 and float(metrics["loss_identity"]) > 0
  np.testing.assert_allclose(
      float(metrics["loss_critic"]),
      -float(metrics["wasserstein_distance"]) + config.loss.gradient_penalty * float(metrics["gradient_penalty"]),
      rtol=1e-4)


def test_paper_phases_run_arcface_then_gan_based_dsnet_then_joint_with_n_critic_updates():
  config = tiny_config(2, adversarial=True, n_critic=3)
  config.train.update(arcface_steps=2, steps=6)
  method = fhgan.make(config)
  assert [method.schedule(step) for step in range(6)] == ["arcface"] * 2 + ["gan"] * 2 + ["joint"] * 2
  state = jax.jit(method.init)(jax.random.key(0))
  frozen = jax.jit(method.init_frozen)(frozen_key())
  batch = tiny_batch(config)
  after_arcface, arcface_metrics = jax.jit(method.steps["arcface"])(state, frozen, batch, jax.random.key(2))
  assert changed_networks(state, after_arcface) == {"recognizer", "margin_head"}
  assert set(arcface_metrics) == {"loss_recognizer", "recognizer_accuracy"}
  after_gan, gan_metrics = jax.jit(method.steps["gan"])(after_arcface, frozen, batch, jax.random.key(3))
  # GAN-based DSNet: the critic trains (3 Adam updates in one step), ArcFace is left as pretrained.
  assert changed_networks(after_arcface, after_gan) == {"generator", "critic"}
  assert int(after_gan.opt_state["critic"][0].count) == 3
  assert "loss_adversarial" in gan_metrics and "loss_identity" not in gan_metrics
  after_joint, joint_metrics = jax.jit(method.steps["joint"])(after_gan, frozen, batch, jax.random.key(4))
  assert changed_networks(after_gan, after_joint) == {"generator", "critic", "recognizer", "margin_head"}
  assert int(after_joint.opt_state["critic"][0].count) == 6 and "loss_identity" in joint_metrics
  values = jax.jit(method.eval_step)(after_joint, frozen, batch)
  assert {"psnr", "psnr_bilinear", "psnr_bicubic"} <= set(values)


def test_non_paired_batches_never_meet_their_own_images():
  labels = jnp.arange(8)
  assert not np.any(np.asarray(fhgan.non_paired(labels, 4)) == np.asarray(labels))
  assert not np.any(np.asarray(fhgan.non_paired(labels, 1)) == np.asarray(labels))


def test_pretraining_beats_bicubic_on_held_out_faces(tiny):
  """Loss goes down and held-out PSNR rises above bicubic upsampling during pixel-loss pretraining."""
  config, _, state, steps, evaluate = tiny
  losses = []
  for i in range(LEARNING_STEPS):
    state, metrics = run_step(steps, "pretrain", state, tiny_batch(config, seed=i), jax.random.key(i))
    losses.append(float(metrics["loss_pixel"]))
  values = evaluate(state, batch=tiny_batch(config, seed=10_000))  # images never trained on
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
  assert float(jnp.mean(values["psnr"])) > float(jnp.mean(values["psnr_bicubic"])) + 1.0


def test_eval_reports_the_identity_terms_share_of_the_generator_loss(tiny):
  """identity_loss_share = λ4·L_id / Σ|weighted terms| on held-out batches: strictly between 0 and 1 with
  λ4 > 0 (the tables' check reads it), and the same for every example of a batch (one loss a batch)."""
  config, _, state, _, evaluate = tiny
  assert config.loss.identity > 0
  share = np.asarray(evaluate(state, batch=tiny_batch(config))["identity_loss_share"])
  assert share.shape == (config.train.batch_size,)
  assert np.all(share == share[0]) and 0.0 < share[0] < 1.0, share


def test_table1_keeps_the_papers_factor_and_trains_jointly_twice_as_long_with_a_larger_identity_weight():
  """configs/fhgan.py:table1 (Table 1's identity comparison): ×4 as §4.1, twice as many joint steps as
  pretraining ones, λ4 above the smoke run's."""
  config = fhgan_config.get_config("table1")
  assert config.data.target_size == 4 * config.data.input_size
  method = fhgan.make(config)
  phases = [method.schedule(step) for step in range(config.train.steps)]
  assert phases.count("joint") == 2 * phases.count("pretrain") > 0
  assert config.loss.identity > fhgan_config.get_config("smoke").loss.identity


def test_table1_arcface_trains_arcface_alone_for_twenty_epochs_then_runs_table1():
  """configs/fhgan.py:table1_arcface: §4.1's ArcFace-only phase (20 epochs, lr 0.01 ÷10 after epochs 15 and 18)
  before table1's pretraining and joint phases, which keep their lengths and DSNet's schedule."""
  table1, config = fhgan_config.get_config("table1"), fhgan_config.get_config("table1_arcface")
  steps_per_epoch = config.data.train_size // config.train.batch_size
  schedule = fhgan.make(config).schedule
  phases = [schedule(step) for step in range(config.train.steps)]
  assert phases.count("arcface") == 20 * steps_per_epoch
  assert phases[:phases.count("arcface")] == ["arcface"] * (20 * steps_per_epoch)
  schedule = fhgan.make(table1).schedule
  table1_phases = [schedule(step) for step in range(table1.train.steps)]
  assert phases[phases.count("arcface"):] == table1_phases
  recognizer_rate = optim.learning_rate_schedule(config.optim.recognizer)
  rates = recognizer_rate(np.array([0, 14, 15, 17, 18, 19, 20, 22]) * steps_per_epoch)   # at these epochs
  np.testing.assert_allclose(rates, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4], rtol=1e-6)
  assert config.optim.generator.to_dict() == table1.optim.generator.to_dict()
  assert config.loss.to_dict() == table1.loss.to_dict() and config.data.to_dict() == table1.data.to_dict()
