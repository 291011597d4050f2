"""data.uniform_appearance (issue 32): what a thermal image cannot show is the same for every face, so the
thermal input sets the visible target; what the thermal image does show is that of the option off."""

import numpy as np

from hallujax.data import faceworld, faceworld_params
from hallujax.data.sources import make_source
from tests import test_faceworld

SIZE = 32
# What a view's visible image shares with its thermal one: pose, expression, and the gaze (left as drawn: the
# iris is a pixel or two at these sizes).
VIEW_GEOMETRY = ("yaw", "pitch", "roll", "gaze_x", "gaze_y", "expression_index", *faceworld_params.EXPRESSION_FIELDS)


def source(**options):
  fields = dict(pairing="thermal_aligned", input_size=8, input_channels=1, target_size=SIZE, train_size=40)
  return make_source(test_faceworld.data_config(**fields, **options), "train")


def test_thermal_inputs_identities_and_landmarks_are_those_of_the_option_off():
  default, uniform = source(), source(uniform_appearance=True)
  for index in range(4):
    before, after = default[index], uniform[index]
    for name in ("input", "identity", "landmarks", "yaw", "expression"):
      np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["target"], before["target"])


def test_one_person_in_one_pose_and_expression_is_one_visible_image_whatever_else_was_drawn():
  """Two views of one identity given the same pose, expression and gaze: with the option, nothing else (light,
  background, shirt) tells them apart; without it they differ."""
  def visible(faces, index, geometry_of):
    _, view, _ = faces.parameters(index)
    _, model, _ = faces.parameters(geometry_of)
    view = dict(view, **{name: model[name] for name in VIEW_GEOMETRY})
    # The pairing's own modalities: the program the source already compiled.
    rendered = faceworld._render_one(view, SIZE, faceworld.rendered_modalities(faces.pairing))
    return rendered["visible"].astype(np.float32) / 255.0

  uniform = source(uniform_appearance=True)
  identities = [uniform.identity(i) for i in range(len(uniform))]
  first = next(i for i in range(len(identities)) if identities[i] in identities[i + 1:])
  second = identities.index(identities[first], first + 1)
  differences = {}
  for name, faces in (("default", source()), ("uniform", uniform)):
    differences[name] = np.abs(visible(faces, first, first) - visible(faces, second, first)).mean()
  assert differences["uniform"] == 0.0 and differences["default"] > 0.05


def test_every_visible_target_has_the_same_grey_background_and_the_same_colours():
  default, uniform = source(), source(uniform_appearance=True)
  corners = np.stack([uniform[i]["target"][:2, :2] for i in range(6)]).reshape(-1, 3).astype(int)
  assert np.all(corners == corners[0]) and np.all(np.abs(corners - 128) <= 1)
  default_corners = np.stack([default[i]["target"][:2, :2] for i in range(6)]).reshape(-1, 3)
  assert np.std(default_corners.astype(np.float32), axis=0).max() > 40   # the default's random colours
  skins = {tuple(uniform.parameters(i)[1]["skin_colour"]) for i in range(6)}
  assert len(skins) == 1 and len({tuple(default.parameters(i)[1]["skin_colour"]) for i in range(6)}) > 1


def test_nir_unaligned_pairs_stay_unaligned_with_both_visible_views_uniform():
  """PCFH's pairing (issue 33): the NIR input is that of the option off, both visible views (the other-pose
  target and the input's own-pose aligned_target) get the one background and skin colour, and the target stays
  a view in another pose than the input."""
  def nir_source(**options):
    fields = dict(pairing="nir_unaligned", input_size=SIZE, input_channels=1, target_size=SIZE, train_size=8)
    return make_source(test_faceworld.data_config(**fields, **options), "train")

  default, uniform = nir_source(), nir_source(uniform_appearance=True)
  for index in range(4):
    before, after = default[index], uniform[index]
    for name in ("input", "identity", "landmarks", "input_landmarks"):
      np.testing.assert_array_equal(after[name], before[name])
    for view in ("target", "aligned_target"):
      assert not np.array_equal(after[view], before[view])
      assert np.all(np.abs(after[view][:2, :2].astype(int) - 128) <= 1)   # the flat grey background
    assert np.abs(after["landmarks"] - after["input_landmarks"]).mean() > 0.5   # another pose: unaligned
    _, target_view, input_view = uniform.parameters(index)
    np.testing.assert_array_equal(target_view["skin_colour"], faceworld.UNIFORM_SKIN)
    np.testing.assert_array_equal(input_view["skin_colour"], faceworld.UNIFORM_SKIN)
    assert target_view["yaw"] != input_view["yaw"]
