"""VPGAN (paper 000): encoder/MSCA shapes, the γ/β hooks on the frozen prior, the frozen tree, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vpgan as vpgan_config
from hallujax.data import pipeline
from hallujax.methods import vpgan
from hallujax.methods.stylegan2 import bit_generator_key
from hallujax.models.stylegan2 import Generator, channel_table, num_synthesis_layers, num_ws
from hallujax.models.vpgan import MSCA, VPGANEncoder, synthesize

# Training steps of the short run. Measured on this tiny config (one seed): held-out output/target pairwise-distance
# ratio 0.64, L1 0.307 vs the best constant's 0.329 at 120 steps; 0.72, 0.285 at 160; with the input zeroed
# (an input-blind model) 0.000 and 0.428 at 60 steps.
STEPS = 160
PRIOR_CHANNELS = channel_table(64, 1, 32, 512)   # 4² … 64²: (32, 32, 32, 16, 8)


def fast_key(seed: int):
  """An RngBitGenerator key: initializers compile in seconds on a CPU, not tens of seconds (threefry)."""
  return bit_generator_key(jax.random.key(seed))


def tiny_encoder(**overrides) -> VPGANEncoder:
  fields = dict(input_size=16, output_size=64, encoder_channels=(8, 16, 16), decoder_channels=(16, 16, 16, 8, 8),
                prior_channels=PRIOR_CHANNELS, style_dim=16, style_hidden=32)
  return VPGANEncoder(**{**fields, **overrides})


def tiny_config():
  """8² thermal → 32² visible with a tiny prior and tiny loss networks; R1 on every step (one program)."""
  c = vpgan_config.get_config("smoke")
  c.data.update(input_size=8, target_size=32, num_identities=16, train_size=512, eval_size=32)
  c.model.update(encoder_channels=(16, 32), decoder_channels=(32, 32, 16, 16), perceptual_layers=("relu1_2",),
                 style_hidden=64)
  c.model.prior_network.update(style_dim=32, mapping_layers=2, channel_max=16)
  c.model.arcface.update(widths=(8, 8, 8, 8), embedding_dim=16)
  c.loss.r1_every = 1
  # A random 8-channel ArcFace's embedding is noise: at the paper's λc = 100 it drowned L1 for the first
  # hundred steps (measured on raw embeddings, before L_id read the unit embedding: held-out L1 0.61 after
  # 40 steps vs 0.37 with λc = 1). The short run's figures below are measured with λc = 1.
  c.loss.identity = 1.0
  c.train.update(batch_size=8, eval_batches=4)
  return c


@pytest.mark.parametrize("msca", [True, False])
def test_encoder_shapes_at_every_level(msca):
  encoder = tiny_encoder(msca=msca)
  thermal = jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), thermal)
  out = jax.eval_shape(encoder.apply, variables, thermal)
  # 2 stride-2 stages from 16² down to 4² (the paper: 5 from 128²), 4 ×2 stages up to 64² (the paper: 7 to 512²).
  assert [e.shape for e in out["encoder_features"]] == [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 16)]
  assert [f.shape for f in out["features"]] == [(2, 4, 4, 16), (2, 8, 8, 16), (2, 16, 16, 16), (2, 32, 32, 8),
                                                (2, 64, 64, 8)]
  assert out["w"].shape == (2, num_ws(64), 16)
  assert len(out["scale_shift"]) == num_synthesis_layers(64) == 9
  resolutions = [4, 8, 8, 16, 16, 32, 32, 64, 64]
  for layer, (gamma, beta) in enumerate(out["scale_shift"]):
    size, width = resolutions[layer], PRIOR_CHANNELS[(layer + 1) // 2]
    assert gamma.shape == beta.shape == (2, size, size, width)
  has_msca = any(name.startswith("msca_") for name in variables["params"])
  assert has_msca == msca


def test_paper_sizes_5_down_7_up():
  encoder = VPGANEncoder(prior_channels=channel_table(512))
  thermal = jax.ShapeDtypeStruct((1, 128, 128, 1), jnp.float32)
  out = jax.eval_shape(encoder.apply, jax.eval_shape(encoder.init, jax.random.key(0), thermal), thermal)
  assert [e.shape[1] for e in out["encoder_features"]] == [128, 64, 32, 16, 8, 4]
  assert [f.shape[1] for f in out["features"]] == [4, 8, 16, 32, 64, 128, 256, 512]
  assert out["w"].shape == (1, 16, 512) and len(out["scale_shift"]) == 15   # 512²: 16 w, 15 styled layers


def test_msca_reads_every_encoder_scale():
  """Eq. 3: the merged features at one level depend on every encoder scale, each resized to that level."""
  sizes = (16, 8, 4)
  scales = [jax.random.normal(jax.random.key(i), (1, s, s, 4)) for i, s in enumerate(sizes)]

  @jax.jit
  def shapes_and_gradients(scales):
    results = []
    for level_size in sizes:
      msca = MSCA(features=6, size=level_size)
      variables = msca.init(fast_key(7), scales)
      out = msca.apply(variables, scales)
      gradients = jax.grad(lambda s: jnp.sum(msca.apply(variables, s) ** 2))(scales)
      results.append((out, [jnp.sum(jnp.abs(g)) for g in gradients]))
    return results

  for level_size, (out, gradient_sizes) in zip(sizes, shapes_and_gradients(scales)):
    assert out.shape == (1, level_size, level_size, 6)
    assert all(float(g) > 0 for g in gradient_sizes), (level_size, gradient_sizes)


def test_unit_scale_zero_shift_gives_the_priors_own_image():
  encoder = tiny_encoder()
  prior = Generator(resolution=64, channels=PRIOR_CHANNELS, style_dim=16, mapping_layers=2)
  thermal = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1, maxval=1)
  encoder_variables = jax.jit(encoder.init)(fast_key(1), thermal)
  prior_variables = jax.jit(prior.init)(fast_key(2), jnp.zeros((1, 16)))
  prior_variables["buffers"]["mapping"]["w_avg"] = jax.random.normal(jax.random.key(3), (16,))
  # The encoder's head is untrained, but give it styles that are not just w_avg.
  encoder_variables["params"]["style_out"]["bias"] = jax.random.normal(jax.random.key(4), (num_ws(64) * 16,))

  @jax.jit
  def images(encoder_variables, prior_variables, thermal):
    encoded = encoder.apply(encoder_variables, thermal)
    w_plus = prior_variables["buffers"]["mapping"]["w_avg"] + encoded["w"]
    plain = prior.apply(prior_variables, w_plus, input_is_w=True)
    unit = [(jnp.ones_like(g), jnp.zeros_like(b)) for g, b in encoded["scale_shift"]]
    explicit = prior.apply(prior_variables, w_plus, input_is_w=True, scale_shift=unit)
    # γ, β from the untrained (zero-initialized) 1×1 convolutions: exactly 1 and 0.
    hooked = synthesize(prior, prior_variables, encoded)
    # A shift at one pixel of the last styled layer: only that output pixel may change (ToRGB is 1×1).
    last = list(encoded["scale_shift"])
    gamma, beta = last[-1]
    last[-1] = (gamma, beta.at[:, 20, 30, :].add(1.0))
    shifted = synthesize(prior, prior_variables, dict(encoded, scale_shift=tuple(last)))
    return plain, explicit, hooked, shifted

  plain, explicit, hooked, shifted = images(encoder_variables, prior_variables, thermal)
  # Equal up to float rounding: XLA may fuse the two programs differently (measured |Δ| ≈ 2e-6).
  np.testing.assert_allclose(explicit, plain, rtol=0, atol=1e-5)
  np.testing.assert_allclose(hooked, plain, rtol=0, atol=1e-5)
  changed = np.any(np.abs(np.asarray(shifted) - np.asarray(plain)) > 1e-3, axis=(0, 3))
  assert changed[20, 30] and changed.sum() == 1


def test_variants_and_ablation_option():
  assert vpgan_config.get_config("").model.prior and vpgan_config.get_config("").model.msca
  assert not vpgan_config.get_config("wo_vp").model.prior
  assert not vpgan_config.get_config("wo_msca").model.msca
  smoke = vpgan_config.get_config("smoke,ablation=wo_msca,train.steps=7")
  assert (smoke.model.msca, smoke.model.prior, smoke.train.steps, smoke.data.target_size) == (False, True, 7, 64)
  assert not vpgan_config.get_config("smoke,ablation=wo_vp").model.prior
  with pytest.raises(ValueError, match="ablation"):
    vpgan_config.get_config("smoke,ablation=wo_everything")
  # The prior variant trains a StyleGAN2 with exactly the architecture "smoke" reads as its prior.
  prior = vpgan_config.get_config("prior_smoke")
  m = prior.model
  assert prior.method == "stylegan2" and m.resolution == smoke.data.target_size
  assert channel_table(m.resolution, m.channel_multiplier, m.channel_max, m.channel_base) == vpgan.prior_channels(smoke)
  assert m.style_dim == smoke.model.prior_network.style_dim
  paper = vpgan_config.get_config("")
  assert (paper.optim.encoder.boundaries, paper.optim.encoder.rates, paper.train.steps) == ((140_000,), (1e-3,),
                                                                                             150_000)


def test_without_prior_builds_a_u_shaped_generator():
  config = tiny_config()
  config.model.prior = False
  method = vpgan.make(config)
  frozen = jax.eval_shape(method.init_frozen, jax.random.key(1))
  assert "prior" not in frozen
  state = jax.eval_shape(method.init, jax.random.key(0))
  assert "to_rgb" in state.params["encoder"] and "style_out" not in state.params["encoder"]
  batch = {k: jax.ShapeDtypeStruct((8, *s.shape), s.dtype) for k, s in method.batch_spec.items()}
  _, metrics = jax.eval_shape(method.steps["train"], state, frozen, batch, jax.random.key(2))
  assert {"loss_l1", "loss_adversarial", "loss_perceptual", "loss_identity"} <= set(metrics)


@pytest.fixture(scope="module")
def trained():
  """The tiny config trained for a short run with one compiled step, on pairs whose input determines the target.

  The input is the target's own luminance at 8² ("same_view"), not its thermal render: on the face world a
  thermal render cannot show the background's, hair's or skin's colour, which make most of the targets'
  differences, so thermal → visible is bounded far below the targets' diversity by the data (docs/vpgan.md);
  this run checks that the architecture carries its input to its output.
  """
  config = tiny_config()
  config.data.pairing = "same_view"
  method = vpgan.make(config)
  state = jax.jit(method.init)(jax.random.key(0))
  frozen = jax.jit(method.init_frozen)(jax.random.key(1))
  frozen_before = jax.tree.map(np.asarray, frozen)
  step = jax.jit(method.steps[method.schedule(0)])
  evaluate = jax.jit(method.eval_step)
  held_out = pipeline.eval_batches(config)

  def held_out_means(state):
    values = [jax.device_get(evaluate(state, frozen, batch)) for batch in held_out]
    return {name: float(np.mean([v[name] for v in values])) for name in values[0]}

  before = held_out_means(state)
  initial = state
  batches = iter(pipeline.train_dataset(config))
  first_metrics = None
  for index in range(STEPS):
    state, metrics = step(state, frozen, next(batches), jax.random.key(index))
    first_metrics = first_metrics or jax.device_get(metrics)
  return dict(config=config, method=method, initial=initial, state=state, frozen=frozen, frozen_before=frozen_before,
              before=before, after=held_out_means(state), first_metrics=first_metrics)


def test_only_encoder_and_discriminator_are_state_and_the_prior_stays_frozen(trained):
  state, initial, frozen = trained["state"], trained["initial"], trained["frozen"]
  assert set(state.params) == set(state.opt_state) == {"encoder", "discriminator"}
  # The state holds exactly the encoder's and the discriminator's parameters, none of the prior's.
  nets, config = vpgan.networks(trained["config"]), trained["config"]
  size = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
  d = config.data
  own = (size(jax.eval_shape(nets["encoder"].init, jax.random.key(0), jnp.zeros((1, d.input_size, d.input_size, 1))))
         + size(jax.eval_shape(nets["discriminator"].init, jax.random.key(0), jnp.zeros((1, d.target_size,
                                                                                       d.target_size, 3)))))
  assert size(state.params) == own and size(frozen["prior"]["params"]["synthesis"]) > 0
  # Steps never change the frozen tree (the prior, VGG, ArcFace), and they do train both networks.
  jax.tree.map(np.testing.assert_array_equal, trained["frozen_before"], jax.device_get(frozen))
  for name in ("encoder", "discriminator"):
    assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), initial.params[name],
                                                state.params[name])))
  assert set(trained["first_metrics"]) >= {"loss_l1", "loss_adversarial", "loss_perceptual", "loss_identity",
                                           "loss_discriminator", "r1_penalty"}
  assert int(state.step) == STEPS


def mean_pairwise_distance(images) -> float:
  """Mean L1 distance between the images of different examples."""
  flat = np.asarray(images, np.float64).reshape(len(images), -1)
  distances = np.mean(np.abs(flat[:, None] - flat[None]), axis=-1)
  return float(distances[np.triu_indices(len(flat), 1)].mean())


def test_outputs_follow_the_input_not_one_face_for_all(trained):
  """Held-out outputs differ across inputs as the targets do, and L1 beats the best constant image (the held-out
  targets' own per-pixel median); a model that ignores its input can do neither (issue 32: every output was
  one face, pairwise distance 0.011 of the targets')."""
  order = []

  def hallucinate(state, frozen, batch):
    columns = trained["method"].hallucinate(state, frozen, batch)
    order.extend(columns)
    return columns

  run = jax.jit(hallucinate)
  held_out = pipeline.eval_batches(trained["config"])
  columns = [jax.device_get(run(trained["state"], trained["frozen"], batch)) for batch in held_out]
  assert order[:4] == ["input", "bicubic", "output", "target"]
  outputs = np.concatenate([c["output"] for c in columns])
  targets = np.concatenate([np.asarray(batch["target"]) for batch in held_out])
  assert outputs.shape == targets.shape == (32, 32, 32, 3)
  ratio = mean_pairwise_distance(outputs) / mean_pairwise_distance(targets)
  l1 = float(np.mean(np.abs(outputs - targets)))
  constant_l1 = float(np.mean(np.abs(np.median(targets, axis=0) - targets)))
  assert ratio > 0.4, (ratio, l1, constant_l1)
  assert l1 < constant_l1, (ratio, l1, constant_l1)
  assert trained["after"]["l1"] < trained["before"]["l1"]


def test_eval_reports_the_identity_terms_share(trained):
  """identity_loss_share = λc·L_id / L_gen on held-out faces, a fraction (the tables' "identity term alive")."""
  share = trained["after"]["identity_loss_share"]
  assert 0.0 < share < 1.0


@pytest.mark.parametrize("with_prior", [True, False])
def test_both_table5_rows_start_the_discriminator_from_the_prior_file(tmp_path, with_prior):
  """VPGAN and "w/o VP", given the same config.weights.prior, start from the same discriminator (issue 32: w/o VP
  started from random weights, a second difference between the rows)."""
  torch = pytest.importorskip("torch")
  from tests import stylegan2_reference as reference
  config = tiny_config()
  config.model.prior = with_prior
  channels = dict(zip((4, 8, 16, 32), vpgan.prior_channels(config)))
  torch.manual_seed(0)
  p = config.model.prior_network
  generator = reference.Generator(32, p.style_dim, p.mapping_layers, channels)
  discriminator = reference.Discriminator(32, channels)
  path = tmp_path / "prior.pt"
  torch.save({"g_ema": generator.state_dict(), "d": discriminator.state_dict(),
              "latent_avg": torch.randn(p.style_dim)}, path)
  config.weights.prior = str(path)
  method = vpgan.make(config)
  state = method.load_pretrained(jax.jit(method.init)(jax.random.key(0)))
  np.testing.assert_allclose(state.params["discriminator"]["from_rgb"]["kernel"],
                             discriminator.convs[0][0].weight.detach().numpy().transpose(2, 3, 1, 0))
