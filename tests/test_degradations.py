"""Resizing matches MATLAB imresize; blur, noise and JPEG behave."""

import numpy as np
import pytest
from PIL import Image

from hallujax.data import degradations


def matlab_imresize_reference(image, out_shape, kernel="cubic"):
  """Direct, loop-based transcription of MATLAB imresize's `contributions` and
  `resizeAlongDim` (R2013+), written independently of hallujax for testing."""
  def cubic(x):
    ax = abs(x)
    if ax <= 1:
      return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
      return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0

  def triangle(x):
    return max(0.0, 1 - abs(x))

  k, kernel_width = (cubic, 4.0) if kernel == "cubic" else (triangle, 2.0)

  def along(data, out_length):
    in_length = data.shape[0]
    scale = out_length / in_length
    out = np.zeros((out_length,) + data.shape[1:])
    for i in range(1, out_length + 1):
      u = i / scale + 0.5 * (1 - 1 / scale)
      width = kernel_width / scale if scale < 1 else kernel_width
      left = int(np.floor(u - width / 2))
      weights, rows = [], []
      for j in range(left, left + int(np.ceil(width)) + 2):
        weight = scale * k(scale * (u - j)) if scale < 1 else k(u - j)
        jj = j
        while jj < 1 or jj > in_length:   # symmetric padding
          jj = 1 - jj if jj < 1 else 2 * in_length + 1 - jj
        weights.append(weight)
        rows.append(jj - 1)
      weights = np.array(weights) / np.sum(weights)
      out[i - 1] = np.tensordot(weights, data[rows], axes=1)
    return out

  data = image.astype(np.float64)
  data = along(data, out_shape[0])
  data = np.swapaxes(along(np.swapaxes(data, 0, 1), out_shape[1]), 0, 1)
  return data


def test_bicubic_half_size_weights_are_matlabs():
  # Published MATLAB imresize(…, 0.5, 'bicubic') taps: cubic(a=-0.5) stretched by 2.
  expected = np.array([-0.01171875, -0.03515625, 0.11328125, 0.43359375,
                       0.43359375, 0.11328125, -0.03515625, -0.01171875])
  matrix = degradations.resize_matrix(64, 32, "bicubic")
  np.testing.assert_allclose(matrix[10, 17:25], expected, atol=1e-12)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("method,kernel", [("bicubic", "cubic"), ("bilinear", "triangle")])
@pytest.mark.parametrize("shape,out", [((40, 36, 3), (10, 9)), ((28, 28, 3), (112, 112)), ((33, 20, 1), (16, 7))])
def test_resize_matches_loop_reference(method, kernel, shape, out):
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, shape)
  got = degradations.resize(image.astype(np.float32), out, method)
  want = matlab_imresize_reference(image, out, kernel)
  assert got.shape == out + shape[2:]
  assert np.max(np.abs(got - want)) < 2e-3   # float32 arithmetic vs float64 reference


def test_uint8_bicubic_vs_reference_and_pillow():
  from skimage import data
  image = data.astronaut()[::2, ::2]                       # 256 x 256 x 3 uint8
  got = degradations.resize(image, 64, "bicubic")
  want = np.clip(np.round(matlab_imresize_reference(image, (64, 64))), 0, 255)
  assert got.dtype == np.uint8
  assert np.max(np.abs(got.astype(int) - want)) <= 1       # rounding of float32 vs float64 sums
  # Pillow's antialiased bicubic uses the same kernel but renormalizes at the border
  # instead of mirroring and rounds/clips to uint8 between its two passes, so it
  # agrees closely on average, not exactly.
  pillow = np.asarray(Image.fromarray(image).resize((64, 64), Image.BICUBIC))
  difference = np.abs(got.astype(int) - pillow.astype(int))[4:-4, 4:-4]
  assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 2


def test_resize_keeps_dtype_and_grayscale():
  image = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
  out = degradations.resize(image, (8, 16), "bilinear")
  assert out.shape == (8, 16) and out.dtype == np.float32
  with pytest.raises(ValueError, match="expected one of bicubic, bilinear"):
    degradations.resize(image, 8, "lanczos")


def test_blur_noise_jpeg():
  rng = np.random.default_rng(0)
  image = np.zeros((32, 32, 3), np.uint8)
  image[:, 16:] = 255
  blurred = degradations.blur(image, degradations.gaussian_kernel(1.5))
  assert 0 < blurred[5, 15, 0] < 255 and blurred[5, 0, 0] == 0   # the edge spreads, flat areas stay
  assert degradations.motion_kernel(7, 30.0).sum() == pytest.approx(1.0)
  noisy = degradations.gaussian_noise(image, 10.0, rng)
  assert 5 < np.std(noisy[:, :16].astype(float)) < 15 or np.mean(noisy[:, :16]) > 0
  compressed = degradations.jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), quality=10)
  assert compressed.shape == (32, 32, 3) and compressed.dtype == np.uint8
