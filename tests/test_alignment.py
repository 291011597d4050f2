"""Similarity alignment recovers known transforms; component crops have the papers' sizes."""

import numpy as np
import pytest

from hallujax.data import alignment


def rotation_scale(angle_degrees, scale, shift):
  angle = np.deg2rad(angle_degrees)
  return np.array([[scale * np.cos(angle), -scale * np.sin(angle), shift[0]],
                   [scale * np.sin(angle), scale * np.cos(angle), shift[1]]])


def test_similarity_transform_recovers_a_known_one():
  _, template = alignment.TEMPLATES["arcface112"]
  truth = rotation_scale(23.0, 1.7, (40.0, -12.0))
  source = alignment.transform_points(truth, template)
  recovered = alignment.similarity_transform(source, template)       # maps source back onto the template
  np.testing.assert_allclose(alignment.transform_points(recovered, source), template, atol=1e-9)
  np.testing.assert_allclose(np.linalg.det(recovered[:, :2]), 1 / 1.7**2, rtol=1e-9)


def test_align_moves_marked_points_onto_the_template():
  _, template = alignment.TEMPLATES["arcface112"]
  forward = rotation_scale(-15.0, 2.0, (30.0, 25.0))
  eyes_and_mouth = alignment.transform_points(forward, template)     # where the points are in the photo
  image = np.zeros((300, 300, 3), np.uint8)
  for x, y in eyes_and_mouth:
    image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
  aligned, matrix, moved = alignment.align(image, eyes_and_mouth, "arcface112")
  assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
  np.testing.assert_allclose(moved, template, atol=1e-6)
  for x, y in template:
    assert aligned[int(round(y)), int(round(x))].min() > 200          # each bright mark lands on its template point
  assert aligned.mean() < 30


def test_68_points_reduce_to_eye_centres_nose_and_mouth_corners():
  landmarks = np.random.default_rng(0).uniform(0, 100, (68, 2))
  five = alignment.five_from_68(landmarks)
  np.testing.assert_allclose(five[0], landmarks[36:42].mean(0))
  np.testing.assert_allclose(five[2:], landmarks[[30, 48, 54]])
  aligned, _, moved = alignment.align(np.zeros((100, 100), np.float32), landmarks, "celeba128")
  assert aligned.shape == (128, 128) and moved.shape == (68, 2)
  with pytest.raises(ValueError, match="known templates"):
    alignment.align(np.zeros((10, 10)), landmarks, "ffhq")


@pytest.mark.parametrize("layout,expected", [
    ("pcfh144", {"right_eye": (32, 32), "nose": (40, 32), "mouth": (28, 52)}),
    ("pcfh256", {"left_eye": (52, 52), "nose": (60, 52), "mouth": (36, 72)}),
    ("vividgan128", {"left_eye": (28, 28), "nose": (36, 28), "mouth": (24, 48)}),
])
def test_component_crops_have_the_papers_sizes_and_follow_the_landmarks(layout, expected):
  size = alignment.COMPONENT_SIZES[layout][0]
  landmarks = np.zeros((68, 2))
  landmarks[36:42] = (0.35 * size, 0.4 * size)
  landmarks[42:48] = (0.65 * size, 0.4 * size)
  landmarks[27:36] = (0.5 * size, 0.55 * size)
  landmarks[48:68] = (0.5 * size, 0.75 * size)
  image = np.zeros((size, size), np.uint8)
  image[int(0.75 * size), int(0.5 * size)] = 255                       # a mark at the mouth centre
  crops, boxes = alignment.crop_components(image, landmarks, layout)
  for part, shape in expected.items():
    assert crops[part].shape == shape
  mouth = crops["mouth"]
  row, column = np.unravel_index(mouth.argmax(), mouth.shape)
  assert abs(row - (mouth.shape[0] - 1) / 2) <= 1 and abs(column - (mouth.shape[1] - 1) / 2) <= 1
  # Crops near the border are padded, not shrunk.
  landmarks[36:42] = (1.0, 1.0)
  assert alignment.crop_components(image, landmarks, layout)[0]["right_eye"].shape == crops["left_eye"].shape
