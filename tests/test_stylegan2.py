"""StyleGAN2 port: layers, converter equivalence with a rosinality-format PyTorch reference, hooks."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hallujax.convert import stylegan2 as convert  # noqa: E402
from hallujax.models import stylegan2 as models  # noqa: E402
from hallujax.nn import stylegan_layers as layers  # noqa: E402
from tests import stylegan2_reference as reference  # noqa: E402

RESOLUTION = 32
STYLE_DIM = 16
MAPPING_LAYERS = 3
CHANNELS = {4: 16, 8: 16, 16: 8, 32: 8}


@pytest.fixture(scope="module")
def torch_generator():
  torch.manual_seed(0)
  return reference.Generator(RESOLUTION, STYLE_DIM, MAPPING_LAYERS, CHANNELS).eval()


@pytest.fixture(scope="module")
def torch_discriminator():
  torch.manual_seed(1)
  return reference.Discriminator(RESOLUTION, CHANNELS).eval()


def flax_generator(architecture):
  return models.Generator(resolution=architecture["resolution"], channels=architecture["channels"],
                          style_dim=architecture["style_dim"], mapping_layers=architecture["mapping_layers"])


def jitted(module, **keywords):
  """module.apply(variables, x, **keywords), compiled (op-by-op execution is slow on CPU)."""
  return jax.jit(lambda variables, x: module.apply(variables, x, **keywords))


def torch_to_nhwc(images):
  return images.detach().numpy().transpose(0, 2, 3, 1)


def test_modulated_conv_activation_scaling_equals_grouped_weights():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 8, 8, 5)).astype(np.float32)
  weight = (rng.normal(size=(3, 3, 5, 7)) / 7).astype(np.float32)
  style = (rng.normal(size=(3, 5)) + 1).astype(np.float32)
  for upsample, demodulate in ((False, True), (True, True), (False, False)):
    options = dict(demodulate=demodulate, upsample=upsample)
    shared = jax.jit(lambda *a: layers.modulated_conv(*a, **options))(x, weight, style)
    grouped = jax.jit(lambda *a: layers.modulated_conv_grouped(*a, **options))(x, weight, style)
    assert shared.shape == ((3, 16, 16, 7) if upsample else (3, 8, 8, 7))
    np.testing.assert_allclose(shared, grouped, atol=1e-5)
    assert float(jnp.max(jnp.abs(shared))) > 0.1


def test_upfirdn2d_matches_native_reference():
  x = np.random.default_rng(0).normal(size=(2, 4, 9, 9)).astype(np.float32)
  kernel = layers.make_blur_kernel(gain=4.0)
  for up, down, pad in ((2, 1, (2, 1)), (1, 2, (2, 2)), (1, 1, (1, 1)), (2, 1, (-1, 3))):
    expected = reference.upfirdn2d(torch.from_numpy(x), torch.from_numpy(kernel), up, down, pad).numpy()
    got = layers.upfirdn2d(jnp.asarray(x.transpose(0, 2, 3, 1)), kernel, up, down, pad)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, atol=1e-5)


def test_channel_table_is_config_f():
  assert models.channel_table(1024) == (512, 512, 512, 512, 512, 256, 128, 64, 32)
  assert models.channel_table(256, channel_multiplier=1) == (512, 512, 512, 512, 256, 128, 64)
  assert models.num_ws(1024) == 18 and models.num_synthesis_layers(1024) == 17


def test_converted_generator_matches_reference(torch_generator):
  state = torch_generator.state_dict()
  architecture, variables = convert.convert_generator(state)
  assert architecture == dict(resolution=RESOLUTION, channels=(16, 16, 8, 8), style_dim=STYLE_DIM,
                              mapping_layers=MAPPING_LAYERS)
  z = np.random.default_rng(0).normal(size=(4, STYLE_DIM)).astype(np.float32)
  with torch.no_grad():
    expected = torch_to_nhwc(torch_generator(torch.from_numpy(z)))
  got = convert.generate_from_state_dict(state, z)
  difference = float(np.max(np.abs(np.asarray(got) - expected)))
  print(f"generator max abs difference: {difference:.2e} (output range ±{np.abs(expected).max():.2f})")
  assert difference <= 1e-3


def test_converted_generator_matches_reference_with_truncation(torch_generator):
  latent_avg = torch.randn(STYLE_DIM)
  checkpoint = {"g_ema": torch_generator.state_dict(), "latent_avg": latent_avg}
  loaded = convert.load_checkpoint(checkpoint)
  assert loaded["w_avg_source"] == "latent_avg"
  z = np.random.default_rng(1).normal(size=(2, STYLE_DIM)).astype(np.float32)
  with torch.no_grad():
    expected = torch_to_nhwc(torch_generator(torch.from_numpy(z), truncation=0.7, truncation_latent=latent_avg))
  got = jitted(flax_generator(loaded["architecture"]), truncation=0.7)(loaded["generator_ema"], jnp.asarray(z))
  np.testing.assert_allclose(got, expected, atol=1e-3)


def test_converted_discriminator_matches_reference(torch_discriminator):
  architecture, variables = convert.convert_discriminator(torch_discriminator.state_dict())
  assert architecture == dict(resolution=RESOLUTION, channels=(16, 16, 8, 8))
  images = np.random.default_rng(2).uniform(-1, 1, size=(8, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_discriminator(torch.from_numpy(images.transpose(0, 3, 1, 2)))[:, 0].numpy()
  got = convert.discriminate_from_state_dict(torch_discriminator.state_dict(), images)
  difference = float(np.max(np.abs(np.asarray(got) - expected)))
  print(f"discriminator max abs difference: {difference:.2e} (logit range ±{np.abs(expected).max():.2f})")
  assert difference <= 1e-3


def _rosinality_to_ada_generator(state, latent_avg):
  """Rename a rosinality generator state dict to stylegan2-ada-pytorch keys and layouts."""
  out = {"mapping.w_avg": latent_avg}
  for key, value in state.items():
    if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
      out[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = value
  out["synthesis.b4.const"] = state["input.input"][0]
  layers_count = 2 * int(math.log2(RESOLUTION)) - 3
  for layer in range(layers_count):
    source = "conv1" if layer == 0 else f"convs.{layer - 1}"
    size = 4 * 2 ** ((layer + 1) // 2)
    target = f"synthesis.b{size}.conv1" if layer % 2 == 0 else f"synthesis.b{size}.conv0"
    weight = state[f"{source}.conv.weight"][0]
    out[f"{target}.weight"] = weight / math.sqrt(weight.shape[1] * 9)  # ada keeps no weight gain here
    out[f"{target}.bias"] = state[f"{source}.activate.bias"]
    out[f"{target}.noise_strength"] = state[f"{source}.noise.weight"][0]
    out[f"{target}.noise_const"] = state[f"noises.noise_{layer}"][0, 0]
    out[f"{target}.affine.weight"] = state[f"{source}.conv.modulation.weight"]
    out[f"{target}.affine.bias"] = state[f"{source}.conv.modulation.bias"]
    out[f"{target}.resample_filter"] = torch.from_numpy(layers.make_blur_kernel())
  for level in range(int(math.log2(RESOLUTION)) - 1):
    source = "to_rgb1" if level == 0 else f"to_rgbs.{level - 1}"
    target = f"synthesis.b{4 * 2**level}.torgb"
    out[f"{target}.weight"] = state[f"{source}.conv.weight"][0]
    out[f"{target}.bias"] = state[f"{source}.bias"].reshape(3)
    out[f"{target}.affine.weight"] = state[f"{source}.conv.modulation.weight"]
    out[f"{target}.affine.bias"] = state[f"{source}.conv.modulation.bias"]
  return out


def test_stylegan2_ada_generator_keys_load_to_the_same_network(torch_generator):
  latent_avg = torch.randn(STYLE_DIM)
  ada_state = _rosinality_to_ada_generator(torch_generator.state_dict(), latent_avg)
  loaded = convert.load_checkpoint(ada_state)
  assert loaded["w_avg_source"] == "w_avg"
  z = np.random.default_rng(3).normal(size=(2, STYLE_DIM)).astype(np.float32)
  with torch.no_grad():
    expected = torch_to_nhwc(torch_generator(torch.from_numpy(z), truncation=0.5, truncation_latent=latent_avg))
  got = jitted(flax_generator(loaded["architecture"]), truncation=0.5)(loaded["generator_ema"], jnp.asarray(z))
  np.testing.assert_allclose(got, expected, atol=1e-3)


def _rosinality_to_ada_discriminator(state):
  """Rename a rosinality discriminator state dict to stylegan2-ada-pytorch keys (resnet architecture)."""
  out = {f"b{RESOLUTION}.fromrgb.weight": state["convs.0.0.weight"],
         f"b{RESOLUTION}.fromrgb.bias": state["convs.0.1.bias"]}
  blocks = int(math.log2(RESOLUTION)) - 2
  for k in range(1, blocks + 1):
    size = RESOLUTION // 2 ** (k - 1)
    out.update({f"b{size}.conv0.weight": state[f"convs.{k}.conv1.0.weight"],
                f"b{size}.conv0.bias": state[f"convs.{k}.conv1.1.bias"],
                f"b{size}.conv1.weight": state[f"convs.{k}.conv2.1.weight"],
                f"b{size}.conv1.bias": state[f"convs.{k}.conv2.2.bias"],
                f"b{size}.skip.weight": state[f"convs.{k}.skip.1.weight"],
                f"b{size}.resample_filter": torch.from_numpy(layers.make_blur_kernel())})
  out.update({"b4.conv.weight": state["final_conv.0.weight"], "b4.conv.bias": state["final_conv.1.bias"],
              "b4.fc.weight": state["final_linear.0.weight"], "b4.fc.bias": state["final_linear.0.bias"],
              "b4.out.weight": state["final_linear.1.weight"], "b4.out.bias": state["final_linear.1.bias"]})
  return out


def test_stylegan2_ada_discriminator_keys_load_to_the_same_network(torch_discriminator):
  ada_state = _rosinality_to_ada_discriminator(torch_discriminator.state_dict())
  images = np.random.default_rng(4).uniform(-1, 1, size=(4, RESOLUTION, RESOLUTION, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_discriminator(torch.from_numpy(images.transpose(0, 3, 1, 2)))[:, 0].numpy()
  np.testing.assert_allclose(convert.discriminate_from_state_dict(ada_state, images), expected, atol=1e-4)


def test_converter_error_lists_missing_unexpected_and_misshaped_keys(torch_generator):
  state = dict(torch_generator.state_dict())
  del state["convs.1.noise.weight"]
  state["convs.2.activate.bias"] = torch.zeros(5)
  state["extra.weight"] = torch.zeros(1)
  del state["to_rgbs.0.upsample.kernel"]  # blur buffers may be absent: not an error
  from hallujax.convert.common import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError) as error:
    convert.convert_generator(state)
  message = str(error.value)
  assert "nothing was loaded" in message
  assert "missing keys (1): convs.1.noise.weight" in message
  assert "unexpected keys (1): extra.weight" in message
  assert "convs.2.activate.bias: got (5,), expected (8,)" in message


def test_w_plus_scale_shift_and_features(torch_generator):
  architecture, variables = convert.convert_generator(torch_generator.state_dict())
  generator = flax_generator(architecture)
  from_w_plus = jax.jit(lambda v, w, scale_shift: generator.apply(
      v, w, input_is_w=True, scale_shift=scale_shift, return_features=True))
  z = jax.random.normal(jax.random.key(0), (2, STYLE_DIM))
  image, extras = jitted(generator, return_features=True)(variables, z)
  w_plus = extras["w_plus"]
  assert w_plus.shape == (2, models.num_ws(RESOLUTION), STYLE_DIM)
  assert [f.shape[1] for f in extras["features"]] == [4, 8, 8, 16, 16, 32, 32]
  count = models.num_synthesis_layers(RESOLUTION)
  # A W+ code given directly reproduces the image; identity calibration (γ = 1, β = 0) changes nothing.
  identity = [(jnp.ones(()), jnp.zeros(())) for _ in range(count)]
  np.testing.assert_allclose(from_w_plus(variables, w_plus, identity)[0], image, atol=1e-5)
  # A shift at one layer changes that layer's output by exactly β (S+ = γ ⊙ S− + β) and the image downstream.
  beta = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
  shifted = [(jnp.ones(()), jnp.zeros(()))] * count
  shifted[3] = (jnp.ones(()), beta)
  image_shifted, extras_shifted = from_w_plus(variables, w_plus, shifted)
  np.testing.assert_allclose(extras_shifted["features"][2], extras["features"][2], atol=1e-5)
  np.testing.assert_allclose(extras_shifted["features"][3] - extras["features"][3],
                             jnp.broadcast_to(beta, extras["features"][3].shape), atol=1e-4)
  assert float(jnp.max(jnp.abs(image_shifted - image))) > 1e-3


def test_style_mixing_switches_codes_at_the_crossover(torch_generator):
  architecture, variables = convert.convert_generator(torch_generator.state_dict())
  generator = flax_generator(architecture)
  z1, z2 = jax.random.normal(jax.random.key(0), (2, 2, STYLE_DIM))
  mixed = jax.jit(lambda v, a, b: generator.apply(v, a, mix_latents=b, crossover=jnp.array([3, 0]),
                                                   return_features=True))
  _, extras = mixed(variables, z1, z2)
  mapping = jax.jit(lambda v, z: generator.apply(v, z, method=generator.map))
  w1, w2 = mapping(variables, z1), mapping(variables, z2)
  w_plus = extras["w_plus"]
  np.testing.assert_allclose(w_plus[0, :3], jnp.broadcast_to(w1[0], (3, STYLE_DIM)), atol=1e-6)
  np.testing.assert_allclose(w_plus[0, 3:], jnp.broadcast_to(w2[0], (w_plus.shape[1] - 3, STYLE_DIM)), atol=1e-6)
  np.testing.assert_allclose(w_plus[1], jnp.broadcast_to(w2[1], w_plus[1].shape), atol=1e-6)


def test_bfloat16_generator_stays_close_to_float32(torch_generator):
  architecture, variables = convert.convert_generator(torch_generator.state_dict())
  z = jax.random.normal(jax.random.key(0), (2, STYLE_DIM))
  full = jitted(flax_generator(architecture))(variables, z)
  half = jitted(models.Generator(**architecture, dtype=jnp.bfloat16))(variables, z)
  assert half.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(half - full))) < 0.1 * float(jnp.max(jnp.abs(full))) + 0.05


# ----------------------------------------------------------------------------- training method


def tiny_training_config():
  from configs.stylegan2 import get_config
  config = get_config("smoke")
  config.model.update(resolution=8, style_dim=16, mapping_layers=2, channel_max=8, channel_base=64)
  config.data.update(input_size=8, target_size=8)
  config.train.batch_size = 4
  config.loss.update(r1_every=2, path_length_every=2)
  return config


def adam_count(opt_state) -> int:
  return int(opt_state[0].count)


def test_step_variant_follows_the_lazy_regularization_schedule():
  from hallujax.methods import stylegan2 as method
  config = tiny_training_config()
  config.loss.update(r1_every=4, path_length_every=2)
  assert [method.step_variant(config, step) for step in range(9)] == [
      "r1_path_length", "plain", "path_length", "plain", "r1_path_length", "plain", "path_length", "plain",
      "r1_path_length"]
  assert method.step_variants(config) == ("plain", "path_length", "r1_path_length")   # 2 | 4: never R1 alone
  config.loss.update(r1_every=16, path_length_every=4)   # config-f
  assert [s for s in range(40) if method.step_variant(config, s).startswith("r1")] == [0, 16, 32]
  assert method.step_variant(config, 4) == "path_length" and method.step_variant(config, 17) == "plain"
  config.loss.update(r1_every=3, path_length_every=2)
  assert method.step_variants(config) == ("plain", "r1", "path_length", "r1_path_length")
  config.loss.update(r1_every=0, path_length_every=1)   # R1 off, path length every step
  assert method.step_variants(config) == ("path_length",)
  assert set(method.make(config).steps) == {"path_length"}
  generator, discriminator = method.networks(config)
  with pytest.raises(ValueError, match="config.loss.r1_every=0"):
    method.train_step_function(generator, discriminator, {}, config, "r1")
  with pytest.raises(ValueError, match="'r2'.*plain, r1, path_length, r1_path_length"):
    method.train_step_function(generator, discriminator, {}, config, "r2")


def test_every_step_keeps_the_state_structure_and_reports_only_the_regularizers_it_ran():
  from hallujax.methods import stylegan2 as method
  config = tiny_training_config()
  config.loss.update(r1_every=3, path_length_every=2)
  built = method.make(config)
  batch = {"target": np.zeros((4, 8, 8, 3), np.float32)}
  state = jax.eval_shape(built.init, jax.random.key(0))
  outputs = {name: jax.eval_shape(lambda s, fn=fn: fn(s, {}, batch, jax.random.key(1)), state)
             for name, fn in built.steps.items()}
  assert len(outputs) == 4
  for name, (new_state, metrics) in outputs.items():   # traced only: compiling all four takes minutes on CPU
    assert jax.tree.structure(new_state) == jax.tree.structure(state), name
    assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), new_state) == jax.tree.map(
        lambda leaf: (leaf.shape, leaf.dtype), state), name
    assert ("r1_penalty" in metrics) == name.startswith("r1"), name
    assert ("path_length" in metrics) == name.endswith("path_length"), name
    assert all(value.shape == () and value.dtype == jnp.float32 for value in metrics.values()), name


def test_train_steps_update_networks_and_run_lazy_regularizers_per_variant():
  from hallujax.methods import stylegan2
  config = tiny_training_config()   # r1_every = path_length_every = 2: step 0 runs both, step 1 neither
  method = stylegan2.make(config)
  batch = {"target": np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)}
  initial = jax.device_get(jax.jit(method.init)(jax.random.key(0)))
  # One program per named step, the state donated, as the trainer does (no buffer may appear twice in the state).
  programs = {name: jax.jit(fn, donate_argnums=(0,)) for name, fn in method.steps.items()}
  assert set(programs) == {"plain", "r1_path_length"}
  state, history = jax.device_put(initial), []
  for step in range(2):
    variant = method.schedule(step)
    state, metrics = programs[variant](state, {}, batch, jax.random.key(step + 1))
    history.append((variant, {name: float(value) for name, value in metrics.items()}))
    assert int(state.step) == step + 1
    # A regularized step is a second Adam update of that network (lazy regularization, StyleGAN2 §B).
    assert adam_count(state.opt_state["discriminator"]) == adam_count(state.opt_state["generator"]) == 2 + step
  (first_variant, regularized), (second_variant, plain) = history
  assert (first_variant, second_variant) == ("r1_path_length", "plain")
  assert set(regularized) - set(plain) == {"r1_penalty", "path_length_penalty", "path_length", "path_length_mean"}
  assert all(np.isfinite(value) for value in [*plain.values(), *regularized.values()])
  assert regularized["r1_penalty"] > 0 and regularized["path_length"] > 0 and regularized["path_length_mean"] > 0
  assert float(state.path_length_mean) == regularized["path_length_mean"]   # a moves only on path-length steps
  trained = jax.device_get(state)
  for name in ("generator", "discriminator"):
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), initial.params[name], trained.params[name])
    assert max(jax.tree.leaves(moved)) > 1e-4
  # EMA lies between the initial and the trained generator; w_avg moved towards the mapped w.
  pick = lambda tree: tree["synthesis"]["layer_0"]["modulated_conv"]["kernel"]
  ema_step = float(jnp.max(jnp.abs(pick(trained.generator_ema) - pick(initial.params["generator"]))))
  full_step = float(jnp.max(jnp.abs(pick(trained.params["generator"]) - pick(initial.params["generator"]))))
  assert 0 < ema_step < full_step
  assert float(jnp.max(jnp.abs(trained.buffers["mapping"]["w_avg"]))) > 0
  evaluation = jax.jit(method.eval_step)(trained, {}, batch)
  assert set(evaluation) >= {"real_logit", "fake_logit"} and evaluation["fake_logit"].shape == (4,)
  columns = jax.jit(method.hallucinate)(trained, {}, batch)
  assert columns["sample_0"].shape == (4, 8, 8, 3) and float(jnp.max(jnp.abs(columns["sample_0"]))) <= 1


def test_lazy_regularization_adam_correction():
  from hallujax.methods import stylegan2 as method
  assert method.lazy_ratio(16) == pytest.approx(16 / 17) and method.lazy_ratio(4) == pytest.approx(0.8)


def test_sample_grid_from_a_saved_rosinality_file(torch_generator, tmp_path):
  from hallujax import images as images_lib, generator_samples as sample
  path = tmp_path / "tiny.pt"
  torch.save({"g_ema": torch_generator.state_dict()}, path)  # no latent_avg: estimated for truncation
  generator, variables = sample.generator_from_checkpoint(str(path), None, allow_pickle=False, truncation=0.7)
  assert float(jnp.max(jnp.abs(variables["buffers"]["mapping"]["w_avg"]))) > 0
  images = sample.sample(generator, variables, num=5, truncation=0.7, seed=0)
  assert images.shape == (5, RESOLUTION, RESOLUTION, 3) and np.abs(images).max() <= 1
  grid = images_lib.mosaic(images, columns=3)
  assert grid.shape == (2 * RESOLUTION, 3 * RESOLUTION, 3) and grid.dtype == np.uint8
  assert grid[RESOLUTION:, 2 * RESOLUTION:].max() == 0   # the missing sixth tile is black


def test_training_starts_from_a_rosinality_checkpoint(tmp_path):
  from hallujax.methods import stylegan2
  config = tiny_training_config()
  torch.manual_seed(3)
  channels = {4: 8, 8: 8}
  g_ema = reference.Generator(8, 16, 2, channels)
  d = reference.Discriminator(8, channels)
  path = tmp_path / "start.pt"
  torch.save({"g_ema": g_ema.state_dict(), "d": d.state_dict(), "latent_avg": torch.randn(16)}, path)
  config.weights.stylegan2 = str(path)
  method = stylegan2.make(config)
  state = method.load_pretrained(jax.jit(method.init)(jax.random.key(0)))
  np.testing.assert_allclose(state.params["discriminator"]["from_rgb"]["kernel"],
                             d.convs[0][0].weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_allclose(state.generator_ema["synthesis"]["constant"],
                             g_ema.input.input.detach().numpy()[0].transpose(1, 2, 0))
  np.testing.assert_allclose(state.params["generator"]["synthesis"]["constant"],
                             state.generator_ema["synthesis"]["constant"])   # no "g": both start from g_ema
  assert int(state.opt_state["generator"][0].count) == 0   # fresh optimizers for the loaded networks
  config.model.style_dim = 32
  method = stylegan2.make(config)
  # The file is refused before any state is read: the state's shapes stand in for a second compiled init.
  with pytest.raises(ValueError, match="style_dim 16"):
    method.load_pretrained(jax.eval_shape(method.init, jax.random.key(0)))


def test_x_flip_mirrors_about_half_of_the_real_images():
  from hallujax.methods import stylegan2
  images = jax.random.normal(jax.random.key(0), (64, 8, 8, 3))
  flipped = stylegan2.random_x_flip(images, jax.random.key(1))
  mirrored = np.all(np.isclose(flipped, images[:, :, ::-1]), axis=(1, 2, 3))
  kept = np.all(np.isclose(flipped, images), axis=(1, 2, 3))
  assert np.all(mirrored | kept) and 16 < mirrored.sum() < 48
