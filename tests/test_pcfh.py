"""PCFH (paper 001): the IDW warp, the networks, the losses, the estimator, and learning on the face world."""

import jax
import jax.numpy as jnp
import numpy as np

from hallujax.nn import warp


def random_landmarks(rng, count, size, margin=4):
  return rng.uniform(margin, size - 1 - margin, (count, 2)).astype(np.float32)


def test_idw_maps_each_control_point_onto_its_target_exactly():
  rng = np.random.default_rng(0)
  size = 32
  # Integer target points: the output pixel at t_i must read the source pixel at s_i.
  targets = rng.choice(size * size, 12, replace=False)
  targets = np.stack([targets % size, targets // size], -1).astype(np.float32)
  sources = np.clip(targets + rng.uniform(-3, 3, targets.shape), 0, size - 1).astype(np.float32)
  grid = warp.idw_sampling_grid(size, size, jnp.asarray(targets), jnp.asarray(sources))
  np.testing.assert_array_equal(np.asarray(grid)[targets[:, 1].astype(int), targets[:, 0].astype(int)], sources)
  # Image level, batched: a distinct value at each (integer) source point lands on its target.
  sources = np.round(sources)
  image = np.zeros((size, size, 1), np.float32)
  image[sources[:, 1].astype(int), sources[:, 0].astype(int), 0] = np.arange(1, 13)
  warped = warp.idw_warp(jnp.asarray(np.stack([image, image])), jnp.asarray(np.stack([sources, sources])),
                         jnp.asarray(np.stack([targets, targets])))
  assert warped.shape == (2, size, size, 1)
  np.testing.assert_allclose(np.asarray(warped)[:, targets[:, 1].astype(int), targets[:, 0].astype(int), 0],
                             np.tile(np.arange(1, 13, dtype=np.float32), (2, 1)), atol=1e-6)
  # Between control points the map is smooth: the displacement stays inside the hull of the displacements.
  displacement = np.asarray(grid) - np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1)
  assert np.all(displacement <= (sources - targets).max(0) + 1e-4)
  assert np.all(displacement >= (sources - targets).min(0) - 1e-4)


def test_idw_is_the_identity_when_both_landmark_sets_are_equal():
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (3, 24, 20, 3)).astype(np.float32)
  landmarks = np.stack([random_landmarks(rng, 68, 20) for _ in range(3)])
  warped = warp.idw_warp(jnp.asarray(images), jnp.asarray(landmarks), jnp.asarray(landmarks))
  np.testing.assert_allclose(np.asarray(warped), images, atol=1e-6)
  # A pure translation of every control point translates the image (away from the clamped border).
  shifted = warp.idw_warp(jnp.asarray(images), jnp.asarray(landmarks + [2.0, 1.0]), jnp.asarray(landmarks))
  np.testing.assert_allclose(np.asarray(shifted)[:, :-1, :-2], images[:, 1:, 2:], atol=1e-5)
