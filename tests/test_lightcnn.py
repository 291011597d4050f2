"""The in-project LightCNN learns identities (held-out images) and is the network PCFH and evaluate load from
its run directory; a bad path is a one-line error."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from configs import lightcnn as lightcnn_configs
from configs import pcfh as pcfh_configs
from hallujax import scoring, run_setup, loop
from hallujax.data import pipeline
from hallujax.methods import lightcnn, pcfh


def lightcnn_config(variant: str):
  return lightcnn_configs.get_config(variant)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """configs/lightcnn.py:tiny trained for its 100 steps: (workdir, TrainResult)."""
  workdir = tmp_path_factory.mktemp("lightcnn_tiny")
  return workdir, loop.train(lightcnn_config("tiny"), workdir, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def pcfh_sized_run(tmp_path_factory):
  """LightCNN-29 v2 at configs/pcfh.py:smoke's identity size (32²), two steps: (workdir, config, TrainResult)."""
  config = lightcnn_config("smoke")
  config.data.update(train_size=64, eval_size=16)
  config.train.update(steps=2, log_every=2, eval_every=2, eval_batches=1, image_every=2, checkpoint_every=2)
  workdir = tmp_path_factory.mktemp("lightcnn_smoke")
  return workdir, config, loop.train(config, workdir, devices=jax.devices()[:1])


def test_tiny_lightcnn_identifies_held_out_images_of_its_identities_above_chance(tiny_run):
  _, result = tiny_run
  config = lightcnn_config("tiny")
  assert config.data.identity_split == "shared"   # validation: other images of the training identities
  # The held-out images are not training images: the splits render from different seeds.
  train_images = next(iter(pipeline.train_dataset(config)))["target"]
  held_out_images = pipeline.eval_batches(config)[0]["target"]
  assert not any(np.array_equal(a, b) for a in held_out_images for b in train_images)
  losses = [window["loss_softmax"] for window in result.history]
  print("tiny LightCNN: softmax by window", [round(x, 2) for x in losses], "held-out", result.evaluation)
  assert losses[-1] < 0.5 * losses[0]
  chance = 1.0 / config.data.num_identities
  assert result.evaluation["class_accuracy"] >= 3 * chance   # 64 held-out images


def test_pcfh_and_evaluate_load_exactly_the_trained_lightcnn_from_its_run_directory(pcfh_sized_run):
  workdir, run_config, result = pcfh_sized_run
  config = pcfh_configs.get_config("smoke")
  assert config.model.identity_size == run_config.data.target_size == 32
  config.weights.lightcnn = str(workdir)
  method = pcfh.make(config, run_setup.make_context())
  frozen = method.load_frozen(jax.eval_shape(method.init_frozen, jax.random.key(0)))
  trained = jax.device_get(result.state.params["lightcnn"])
  assert set(trained) - set(frozen["lightcnn"]) == {"fc2"}   # the classifier stays behind
  chex.assert_trees_all_equal(frozen["lightcnn"], lightcnn.features_only(trained))
  # PCFH's own LightCNN-29 with those parameters gives the features of the run's network (as
  # `python -m hallujax.evaluate --lightcnn_weights=RUN_DIR` builds it from the run's config).
  faces = pipeline.eval_batches(run_config)[0]["target"]
  pcfh_features = jax.jit(pcfh.networks(config)["lightcnn"].apply)({"params": frozen["lightcnn"]}, faces)
  run_features = scoring.lightcnn_recognizer(str(workdir))(faces)
  assert pcfh_features.shape == run_features.shape == (16, 256)
  assert float(np.std(run_features)) > 0
  np.testing.assert_allclose(pcfh_features, run_features, rtol=1e-5, atol=1e-5)


def test_a_bad_lightcnn_path_is_a_one_line_error_saying_what_was_expected(tmp_path, tiny_run):
  config = pcfh_configs.get_config("smoke")
  cases = {str(tmp_path / "missing.pth.tar"): "does not exist; expected the public LightCNN_29Layers_V2",
           str(tmp_path): "has no config.json .*expected a run directory of `python -m hallujax.train "
                          "--config configs/lightcnn.py",
           str(tiny_run[0]): r"widths=\(8, 16, 32, 16, 16\).*public widths \(48, 96, 192, 128, 128\)"}
  for path, expected in cases.items():
    config.weights.lightcnn = path
    method = pcfh.make(config, run_setup.make_context())
    with pytest.raises(ValueError, match=expected) as error:
      method.load_frozen(jax.eval_shape(method.init_frozen, jax.random.key(0)))
    assert "\n" not in str(error.value) and path in str(error.value)


def test_both_spectra_train_only_with_one_channel_inputs_at_the_target_size():
  config = lightcnn_config("tiny")
  assert "input" not in lightcnn.batch_spec(config)   # the default: visible faces only
  config = lightcnn_config("tiny,spectra=nir_vis")
  assert lightcnn.batch_spec(config)["input"].shape == (32, 32, 1)
  config.data.input_size = 16
  with pytest.raises(ValueError, match="input_channels=1 and input_size=target_size"):
    lightcnn.make(config)


def test_a_lightcnn_trained_on_both_spectra_matches_nir_probes_to_visible_faces_above_chance(tmp_path):
  """PCFH's recognizer sees NIR and visible faces of the same people (paper 001 §4.2: it is also the
  NIR-VIS table's baseline recognizer): a NIR probe's nearest visible face in the batch is its own person.

  Frontal faces keep the tiny network to seconds: on PCFH's pose ranges it stayed at ln 8 for 300 steps
  (features collapsed, pair cosine 0.997); frontal, 200 steps reached 0.875 against chance 0.17 (measured).
  """
  config = lightcnn_config("tiny,spectra=nir_vis,train.steps=200,train.eval_every=200,data.max_yaw=0.0,"
                           "data.max_pitch=0.0,data.max_roll=0.0")
  result = loop.train(config, tmp_path, devices=jax.devices()[:1])
  evaluation_values = result.evaluation
  print("tiny NIR-VIS LightCNN, held-out:", evaluation_values)
  assert evaluation_values["cross_spectral_rank1"] >= 3 * evaluation_values["cross_spectral_rank1_chance"]
