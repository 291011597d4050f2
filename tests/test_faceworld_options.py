"""Face-world options that give a paper's mechanism something to do: symmetric frontal scenes (VividGAN's
L_sys) and local degradations of the input (IPFH's patch selection). Both default off."""

import numpy as np
import pytest

from hallujax.data import faceworld
from hallujax.data.sources import make_source
from tests import test_faceworld

SIZE = 32


def data_config(**overrides):
  """test_faceworld's data section at 8² → 32² (smaller: these tests render many scenes)."""
  return test_faceworld.data_config(**{"input_size": 8, "target_size": SIZE, "train_size": 40, **overrides})


def mirror_error(image: np.ndarray) -> float:
  x = image.astype(np.float32) / 127.5 - 1.0
  return float(np.mean(np.square(x[:, ::-1] - x)))


def test_symmetric_frontal_makes_frontal_targets_near_mirror_images_and_keeps_the_rest():
  plain = make_source(data_config(pairing="frontalize"), "train")
  symmetric = make_source(data_config(pairing="frontalize", symmetric_frontal=True), "train")
  before = np.mean([mirror_error(plain[i]["target"]) for i in range(6)])
  after = np.mean([mirror_error(symmetric[i]["target"]) for i in range(6)])
  assert after < 0.2 * before
  identity, target, view = symmetric.parameters(2)
  identity_plain, target_plain, view_plain = plain.parameters(2)
  assert identity == identity_plain and view["yaw"] == view_plain["yaw"] != 0
  assert target["light_azimuth"] == view["light_azimuth"] == 0 and target["background_angle"] == 0
  assert target["light_elevation"] == target_plain["light_elevation"]   # only the asymmetric parts change
  np.testing.assert_array_equal(symmetric[2]["landmarks"], plain[2]["landmarks"])


@pytest.mark.parametrize("kind", ["occlusion", "blur", "shade"])
def test_local_degradation_changes_only_the_input_inside_discs(kind):
  plain = make_source(data_config(), "train")
  degraded = make_source(data_config(local_degradation=kind, local_degradation_count=2,
                                     local_degradation_radius=0.15), "train")
  changed = []
  for index in range(4):
    example, clean = degraded[index], plain[index]
    np.testing.assert_array_equal(example["target"], clean["target"])      # the target stays clean
    np.testing.assert_array_equal(example["input"], degraded[index]["input"])   # same index, same discs
    difference = np.abs(example["input"].astype(int) - clean["input"].astype(int)).max(-1)
    changed.append(np.mean(difference > 0))
  # Two discs of radius 0.15 × side cover at most 2π · 0.15² ≈ 14% of the image (plus a soft edge).
  assert 0.0 < np.mean(changed) and max(changed) < 0.2
  if kind == "shade":   # the content survives, darkened
    example, clean = degraded[0], plain[0]
    inside = np.abs(example["input"].astype(int) - clean["input"].astype(int)).max(-1) > 0
    ratio = example["input"][inside].sum() / max(clean["input"][inside].sum(), 1)
    assert 0.3 < ratio < 0.5


def test_bad_local_degradation_settings_say_what_is_expected():
  with pytest.raises(ValueError, match="expected one of"):
    make_source(data_config(local_degradation="smudge"), "train")
  with pytest.raises(ValueError, match="same_view"):
    make_source(data_config(local_degradation="blur", pairing="frontalize"), "train")
  with pytest.raises(ValueError, match="local_degradation_radius"):
    make_source(data_config(local_degradation="blur", local_degradation_radius=0.9), "train")
  assert faceworld.FaceWorldSource(data_config(), "train").local_degradation is None
