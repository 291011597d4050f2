"""config.data.render_on="device": face-world batches rendered on the devices equal the host pipeline's."""

import chex
import jax
import numpy as np
import pytest

from hallujax import sharding, loop
from hallujax.images import to_uint8
from hallujax.data import device_render, pipeline
from tests.tiny import tiny_config

# One size everywhere, so the tests share compiled renderers.
TARGET, INPUT, BATCH = 32, 8, 8


def faceworld_config(render_on: str, pairing: str = "same_view", input_channels: int = 3):
  """The tiny trainer config reading the face world (32² targets, 8² inputs, batch 8)."""
  config = tiny_config()
  config.data.update(source="faceworld", pairing=pairing, target_size=TARGET, input_size=INPUT,
                     input_channels=input_channels, downsample="bicubic", num_identities=20,
                     train_size=64, eval_size=16, render_on=render_on)
  config.train.update(batch_size=BATCH, eval_batches=1)
  return config


def levels(images) -> np.ndarray:
  """[-1, 1] floats back to the uint8 levels they were made from."""
  return to_uint8(images).astype(np.int32)


def trainer_params(result):
  return jax.device_get(result.state.params)


@pytest.mark.parametrize("pairing, input_channels", [
    ("same_view", 3), ("frontalize", 3), ("thermal_aligned", 1)])
def test_device_batches_equal_host_batches(pairing, input_channels):
  mesh = sharding.make_mesh(faceworld_config("host").mesh)   # 8 devices: each renders one face
  [host] = pipeline.eval_batches(faceworld_config("host", pairing, input_channels))
  device_config = faceworld_config("device", pairing, input_channels)
  [parameters] = pipeline.eval_batches(device_config)
  # Only renderer parameters leave the host: scalars and RGB triples per face, no image.
  assert max(value[0].size for value in parameters.values()) <= 3
  assert any(key.startswith("input/") for key in parameters) == (pairing == "frontalize")
  render = device_render.make_renderer(device_config.data, mesh)
  device = render(sharding.global_batch(parameters, mesh))
  assert all(value.sharding == sharding.batch_sharding(mesh) for value in device.values())
  device = jax.device_get(device)

  assert sorted(device) == sorted(host)
  for name in host:
    assert device[name].shape == host[name].shape and device[name].dtype == host[name].dtype, name
  for name in ("identity", "yaw", "expression", "visibility"):
    np.testing.assert_array_equal(device[name], host[name], err_msg=name)
  np.testing.assert_allclose(device["landmarks"], host["landmarks"], atol=1e-3)
  for name in ("input", "target"):
    # Both paths round to uint8 levels at the same points; XLA sums the resize
    # and the batched shader in another order than numpy and the batch-1 host
    # renders, which may move a value sitting on a rounding boundary to the
    # next level: at most 1 level, on at most 1% of the values.
    difference = np.abs(levels(device[name]) - levels(host[name]))
    assert difference.max() <= 1, name
    assert np.mean(difference > 0) <= 0.01, name
    # The floats themselves are those levels scaled to [-1, 1], up to float32 rounding.
    np.testing.assert_allclose(device[name], host[name], atol=2 / 255 * difference.max() + 1e-6)
  assert np.abs(host["input"] - host["input"][:1]).max() > 0.1, "the batch should hold different faces"


def test_device_rendering_trains_resumes_exactly_and_matches_host_rendering(tmp_path):
  assert jax.device_count() == 8, "conftest.py asks XLA for 8 host devices"
  config = faceworld_config("device")
  config.train.steps = 4
  straight = loop.train(config, tmp_path / "straight")

  config.train.steps = 2
  loop.train(config, tmp_path / "interrupted")
  config.train.steps = 4
  resumed = loop.train(config, tmp_path / "interrupted")  # picks up at step 2, data position included

  assert int(resumed.state.step) == 4
  chex.assert_trees_all_close(trainer_params(straight), trainer_params(resumed), atol=0, rtol=0)
  assert np.isfinite(straight.evaluation["mse"])

  # The same examples in the same order as host rendering; only float32 rounding may differ.
  host_config = faceworld_config("host")
  host_config.train.steps = 4
  host = loop.train(host_config, tmp_path / "host")
  chex.assert_trees_all_close(trainer_params(straight), trainer_params(host), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(straight.evaluation["mse"], host.evaluation["mse"], rtol=1e-5)


def test_device_rendering_of_another_source_fails_clearly(tmp_path):
  config = tiny_config()          # source tests.tiny:TinyFaces, images read from a source
  config.data.render_on = "device"
  with pytest.raises(ValueError, match=r"render_on='device'.*TinyFaces.*render_on='host'"):
    loop.train(config, tmp_path)
  config.data.render_on = "accelerator"
  with pytest.raises(ValueError, match=r"render_on='accelerator'; expected 'host'.*or 'device'"):
    pipeline.train_dataset(config)
