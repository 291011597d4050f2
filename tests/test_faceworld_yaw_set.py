"""The face world's discrete yaw set (data.yaw_set): VividGAN's poses instead of a continuous range."""

import numpy as np
import pytest

from hallujax.config_base import data_section
from hallujax.data import faceworld_params
from hallujax.data.sources import make_source

PAPER_SIGNED = {s * v for v in (15, 22, 30, 40, 45, 55, 60, 75, 90) for s in (-1, 1)}


def data_config(**overrides):
  config = data_section(
      source="faceworld", pairing="frontalize", input_size=8, input_channels=3, target_size=16,
      downsample="bicubic", num_identities=20, train_size=400, eval_size=10, world_seed=0)
  config.update(overrides)
  return config


def parameters(config, split="train"):
  source = make_source(config, split)
  return [source.parameters(index) for index in range(len(source))]


def test_yaw_set_yields_only_its_signed_yaws_and_all_of_them():
  examples = parameters(data_config(yaw_set=faceworld_params.PAPER_YAW_SET))
  yaws = [float(source["yaw"]) for _, _, source in examples]
  assert set(yaws) == PAPER_SIGNED   # 400 draws over 18 values: every one appears, nothing else
  counts = np.array([yaws.count(v) for v in sorted(PAPER_SIGNED)])
  assert counts.min() >= 8 and counts.max() <= 45, counts   # about 22 each
  assert all(float(target[k]) == 0.0 for _, target, _ in examples for k in ("yaw", "pitch", "roll"))


def test_the_examples_and_device_parameters_report_the_drawn_yaw():
  source = make_source(data_config(yaw_set=(30, 75), eval_size=4), "validation")
  for index in range(2):
    example, parameters_only = source[index], source.renderer_parameters(index)
    assert float(example["yaw"]) in {-75.0, -30.0, 30.0, 75.0}
    assert float(parameters_only["yaw"]) == float(example["yaw"]) == float(parameters_only["input/yaw"])


def test_a_set_changes_the_yaw_and_nothing_else_and_empty_is_the_continuous_world():
  continuous = parameters(data_config(train_size=60))
  empty = parameters(data_config(train_size=60, yaw_set=()))
  discrete = parameters(data_config(train_size=60, yaw_set=(45,)))
  for (identity, target, source), (identity_e, target_e, source_e), (identity_d, target_d, source_d) in zip(
      continuous, empty, discrete):
    assert identity == identity_e == identity_d
    for name in source:
      np.testing.assert_array_equal(source[name], source_e[name])   # empty set: the world as it was
      np.testing.assert_array_equal(target[name], target_d[name])   # frontal target unchanged
      if name != "yaw":
        np.testing.assert_array_equal(source[name], source_d[name])
    assert abs(float(source_d["yaw"])) == 45.0
  continuous_yaws = np.array([float(source["yaw"]) for _, _, source in continuous])
  assert len(np.unique(np.round(continuous_yaws, 3))) == 60 and np.abs(continuous_yaws).max() <= 90.0


def test_a_yaw_beyond_profile_is_refused_in_one_line():
  with pytest.raises(ValueError, match=r"data.yaw_set=\(100,\); expected yaw magnitudes"):
    make_source(data_config(yaw_set=(100,)), "train")
