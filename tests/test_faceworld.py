"""The face world: deterministic, paired as each method needs, with landmarks that sit on the face."""

import numpy as np
import pytest

from hallujax.config_base import data_section
from hallujax.data import faceworld, faceworld_params, faceworld_render
from hallujax.data.faceworld_render import render_batch
from hallujax.data.sources import make_source

SIZE = 48


def data_config(**overrides):
  config = data_section(
      source="faceworld", pairing="same_view", input_size=12, input_channels=3, target_size=SIZE,
      downsample="bicubic", num_identities=20, train_size=50, eval_size=10, world_seed=0)
  config.update(overrides)
  return config


def test_same_index_same_image_and_examples_differ():
  source = make_source(data_config(), "train")
  first, again, other = source[3], source[3], source[4]
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["target"], other["target"])
  assert first["input"].dtype == np.uint8 and first["input"].shape == (SIZE, SIZE, 3)
  np.testing.assert_array_equal(first["input"], first["target"])      # same_view: the pipeline downsamples
  assert first["landmarks"].shape == (68, 2) and first["landmarks"].dtype == np.float32
  assert first["visibility"].shape == (68,) and first["visibility"].dtype == bool
  assert first["identity"].dtype == np.int32 and 0 <= first["identity"] < 20


def test_world_seed_changes_the_world_and_splits_share_no_image():
  train = make_source(data_config(), "train")
  assert not np.array_equal(train[0]["target"], make_source(data_config(world_seed=1), "train")[0]["target"])
  validation, test = make_source(data_config(), "validation"), make_source(data_config(), "test")
  assert len(train) == 50 and len(validation) == len(test) == 10
  assert not np.array_equal(train[0]["target"], validation[0]["target"])
  assert not np.array_equal(validation[0]["target"], test[0]["target"])


def test_disjoint_identities_per_split():
  identities = {}
  for split in ("train", "validation", "test"):
    source = faceworld.FaceWorldSource(data_config(identity_split="disjoint"), split)
    identities[split] = {source.parameters(i)[0] for i in range(len(source))}
  assert max(identities["train"]) < 16 <= min(identities["validation"])
  assert max(identities["validation"]) < 18 <= min(identities["test"])


def test_frontalize_target_is_the_frontal_view_of_the_same_face():
  source = make_source(data_config(pairing="frontalize", max_yaw=80.0), "train")
  identity, target, view = source.parameters(1)
  assert target["yaw"] == target["pitch"] == target["roll"] == 0
  assert all(np.array_equal(target[k], view[k]) for k in ("skin_colour", "mouth_corner", "light_azimuth"))
  example = source[1]
  assert example["yaw"] == pytest.approx(view["yaw"])
  landmarks = example["landmarks"]
  # A frontal, upright face is mirror-symmetric: outer eye corners level, nose tip midway.
  assert abs(landmarks[36, 1] - landmarks[45, 1]) < 0.5
  assert abs((landmarks[36, 0] + landmarks[45, 0]) / 2 - landmarks[30, 0]) < 0.5
  assert example["visibility"].all()


@pytest.mark.parametrize("modality", ["thermal", "nir"])
def test_infrared_pairings(modality):
  aligned = make_source(data_config(pairing=f"{modality}_aligned", input_channels=1), "train")
  unaligned = make_source(data_config(pairing=f"{modality}_unaligned", input_channels=1), "train")
  example = aligned[2]
  assert example["input"].shape == (SIZE, SIZE, 1)
  grey = example["target"].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
  assert np.abs(example["input"][..., 0] - grey).mean() > 8     # not just the visible image in grey
  # Pixel-aligned: the face (inside the landmarks' box) stands out from the corners.
  box = example["landmarks"].min(0).astype(int), example["landmarks"].max(0).astype(int)
  face = example["input"][box[0][1]:box[1][1], box[0][0]:box[1][0], 0].astype(float).mean()
  corners = np.concatenate([example["input"][:4, :4, 0].ravel(), example["input"][:4, -4:, 0].ravel()])
  assert face > corners.mean() + 20
  identity, target, view = unaligned.parameters(2)
  assert view["yaw"] != target["yaw"] and np.array_equal(view["skin_colour"], target["skin_colour"])
  other = unaligned[2]
  assert other["identity"] == identity and other["yaw"] == pytest.approx(view["yaw"])
  assert make_source(data_config(pairing=f"{modality}_aligned", input_channels=3), "train")[2]["input"].shape[-1] == 3


def test_modalities_render_the_same_alone_and_packed_together():
  # The shader packs up to four 8-bit channels per output word (visible RGB + one
  # infrared modality); all three modalities take two words. Every combination
  # must give each modality exactly as it renders alone.
  source = make_source(data_config(), "train")
  faces = [faceworld._renderer_inputs(source.parameters(index)[1]) for index in (0, 3)]
  batch = faceworld_params.stack(faces)
  alone = {m: render_batch(batch, size=32, modalities=(m,))[m] for m in faceworld_render.MODALITIES}
  for modalities in [("visible", "thermal"), ("visible", "nir"), faceworld_render.MODALITIES]:
    together = render_batch(batch, size=32, modalities=modalities)
    for modality in modalities:
      np.testing.assert_array_equal(together[modality], alone[modality], err_msg=f"{modality} in {modalities}")
  assert alone["nir"].shape == (2, 32, 32, 1) and alone["thermal"].max() > 128  # the 4th byte is not lost


def test_identity_parameters_are_drawn_once_and_cannot_be_changed_by_callers():
  first = faceworld_params.identity_parameters(0, 7)
  first["head_width"] = np.float32(5.0)
  again = faceworld_params.identity_parameters(0, 7)
  assert again["head_width"] != 5.0
  with pytest.raises(ValueError, match="read-only"):
    again["skin_colour"][0] = 0.0


def test_landmarks_sit_on_the_features_and_hide_at_profile():
  views = [dict(yaw=0.0, pitch=0.0, roll=0.0, expression="neutral"), dict(yaw=90.0, pitch=0.0, roll=0.0)]
  rendered = faceworld.render_examples(0, [3, 3], views, SIZE)
  image, landmarks = rendered["visible"][0].astype(float).mean(-1), rendered["landmarks"][0]
  pupil = landmarks[[37, 38, 40, 41]].mean(0).round().astype(int)
  cheek = ((landmarks[2] + landmarks[31]) / 2).round().astype(int)
  assert image[pupil[1], pupil[0]] < image[cheek[1], cheek[0]] - 20   # the eye is dark, the cheek is not
  assert rendered["visibility"][0].all()
  profile = rendered["visibility"][1]
  # Yaw +90 turns the nose to the image right: the camera sees the subject's right
  # side (right eye 36..41, image left when frontal); the left eye and jaw end hide.
  assert not profile[[14, 15, 16]].any() and not profile[42:48].any() and profile[36:42].sum() >= 3


def test_bad_configs_say_what_is_expected():
  with pytest.raises(ValueError, match="Known pairings"):
    make_source(data_config(pairing="sideways"), "train")
  with pytest.raises(ValueError, match="renders 8..512"):
    make_source(data_config(target_size=1024), "train")
  with pytest.raises(IndexError):
    make_source(data_config(), "validation")[10]
