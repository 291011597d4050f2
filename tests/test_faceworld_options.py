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


def test_local_degradation_marks_its_region_and_off_there_is_none():
  """The "degraded" field is the share of each input pixel the discs replaced: 0 where the input is the clean
  render, > 0 wherever it changed; with the option off the field is absent. The other fields are the option off's."""
  plain = make_source(data_config(), "train")
  degraded = make_source(data_config(local_degradation="occlusion", local_degradation_count=2,
                                     local_degradation_radius=0.15), "train")
  for index in range(3):
    example, clean = degraded[index], plain[index]
    assert faceworld.DEGRADED not in clean and set(example) == set(clean) | {faceworld.DEGRADED}
    for name in set(clean) - {"input"}:
      np.testing.assert_array_equal(example[name], clean[name])
    region = example[faceworld.DEGRADED]
    assert region.dtype == np.float32 and region.shape == (SIZE, SIZE, 1)
    assert region.min() == 0.0 and region.max() == 1.0
    changed = np.abs(example["input"].astype(int) - clean["input"].astype(int)).max(-1) > 0
    np.testing.assert_array_equal(example["input"][region[..., 0] == 0], clean["input"][region[..., 0] == 0])
    assert np.all(region[changed] > 0)
    # Two discs of radius 0.15 × 32 = 4.8 pixels: at most 2π · 4.8² ≈ 145 pixels, plus the soft edge.
    assert 20 < region.sum() < 2 * np.pi * 5.3 ** 2


def test_the_degraded_region_has_the_soft_edge_the_image_was_blended_with():
  """One shaded disc: each pixel is the clean one times 1 − 0.65 · region, to rounding (so the region is the
  blend weight apply used, soft edge included, not a hard disc)."""
  plain = make_source(data_config(), "train")
  shaded = make_source(data_config(local_degradation="shade", local_degradation_count=1,
                                   local_degradation_radius=0.2), "train")
  example, clean = shaded[1], plain[1]
  region = example[faceworld.DEGRADED]
  assert np.any((region > 0.05) & (region < 0.95))   # the soft edge is in the field
  predicted = clean["input"].astype(np.float32) * (1.0 - 0.65 * region)
  assert np.abs(predicted - example["input"].astype(np.float32)).max() <= 0.51


# sha256 (first 16 hex digits) of LocalDegradation.apply on `_pattern()` with 3 discs of radius 0.2 and the
# generator default_rng([0, 7]), computed before the region was added (commit 2524323): the images, and the
# generator's next draw, must stay what they were.
APPLY_DIGESTS = {"occlusion": ("3cf2a10a85a71ddd", 0.4451782649652226),
                 "blur": ("5ae77bca96a4f42d", 0.12389616250085),
                 "shade": ("e60b3d121490e465", 0.12389616250085)}


def _pattern():
  rows, columns = np.mgrid[0:24, 0:24]
  return np.stack([(rows * 11 + columns * 3) % 256, (rows * 5 + columns * 13) % 256, (rows * columns) % 256],
                  -1).astype(np.uint8)


@pytest.mark.parametrize("kind", ["occlusion", "blur", "shade"])
def test_adding_the_region_left_the_degraded_images_and_the_draws_as_they_were(kind):
  import hashlib
  degradation = faceworld.LocalDegradation(kind, 3, 0.2)
  rng = np.random.default_rng([0, 7])
  image, region = degradation.apply_with_region(_pattern(), rng)
  assert (hashlib.sha256(image.tobytes()).hexdigest()[:16], rng.uniform()) == APPLY_DIGESTS[kind]
  again = degradation.apply(_pattern(), np.random.default_rng([0, 7]))
  np.testing.assert_array_equal(again, image)
  assert region.shape == (24, 24, 1) and 0 < region.mean() < 1


def test_the_pipeline_brings_the_region_to_the_input_size_by_area():
  """PrepareExample: the region follows "input" to input_size² as the share of each input pixel's area (the
  block mean: the degraded area is kept, scaled by 1/factor², and it stays in [0, 1]); the option off, no field."""
  from hallujax.data import pipeline
  config = data_config(local_degradation="occlusion", local_degradation_count=2, local_degradation_radius=0.15)
  example = make_source(config, "train")[0]
  prepared = pipeline.PrepareExample(config).map(example)
  region = prepared[faceworld.DEGRADED]
  assert region.dtype == np.float32 and region.shape == (8, 8, 1) and prepared["input"].shape == (8, 8, 3)
  assert 0.0 <= region.min() and region.max() <= 1.0
  np.testing.assert_allclose(region.sum() * (SIZE // 8) ** 2, example[faceworld.DEGRADED].sum(), rtol=1e-5)
  # Block (i, j) of the full-size region is input pixel (i, j): not transposed, not shifted.
  full = example[faceworld.DEGRADED][..., 0]
  i, j = np.unravel_index(np.argmax(region[..., 0] - region[..., 0].T), (8, 8))
  assert region[i, j, 0] != region[j, i, 0]   # a transposed region would differ here
  np.testing.assert_allclose(region[i, j, 0], full[4 * i:4 * i + 4, 4 * j:4 * j + 4].mean(), rtol=1e-6)
  assert faceworld.DEGRADED not in pipeline.PrepareExample(data_config()).map(make_source(data_config(), "train")[0])
