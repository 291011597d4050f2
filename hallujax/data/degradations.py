"""Degradations that make low-resolution inputs: MATLAB-style resizing, blur, noise, JPEG.

``resize(image, size, method)`` is what the input pipeline calls with
``method = config.data.downsample``. "bicubic" reproduces MATLAB's
``imresize(image, [h w], 'bicubic')`` (Keys cubic with a = -0.5, kernel
stretched by 1/scale when shrinking, i.e. antialiased; symmetric boundary),
the downsampling the papers compare against. "bilinear" is MATLAB's
``'bilinear'`` (triangle kernel, stretched the same way; PIL's antialiased
bilinear uses the same kernel). Both are separable: a resize is two small
matrix products with weight matrices cached per (input size, output size).

Images are numpy (H, W, C) or (H, W), uint8 or float; the result has the
input's dtype (uint8 is rounded and clipped like MATLAB).
"""

from __future__ import annotations

import functools
import io

import numpy as np

METHODS = ("bicubic", "bilinear")


def _cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize `cubic`)."""
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
          + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _triangle(x: np.ndarray) -> np.ndarray:
  ax = np.abs(x)
  return (1.0 - ax) * (ax <= 1)


_KERNELS = {"bicubic": (_cubic, 4.0), "bilinear": (_triangle, 2.0)}


@functools.lru_cache(maxsize=256)
def resize_matrix(in_length: int, out_length: int, method: str) -> np.ndarray:
  """(out_length, in_length) float64 weights of MATLAB imresize along one axis.

  Follows MATLAB's `contributions`: output pixel i (1-based) maps to input
  coordinate u = i / scale + 0.5 (1 - 1 / scale); when shrinking the kernel is
  h(x) = scale * k(scale * x) over a support of width / scale; weights are
  normalized to sum to 1 and out-of-range taps are mirrored (symmetric).
  """
  if method not in _KERNELS:
    raise ValueError(f"resize method {method!r}; expected one of {', '.join(METHODS)}.")
  kernel, width = _KERNELS[method]
  scale = out_length / in_length
  if scale < 1:
    kernel_at = lambda x: scale * kernel(scale * x)
    width = width / scale
  else:
    kernel_at = kernel
  i = np.arange(1, out_length + 1, dtype=np.float64)
  u = i / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = int(np.ceil(width)) + 2
  indices = left[:, None] + np.arange(taps)[None, :]          # 1-based input indices
  weights = kernel_at(u[:, None] - indices)
  weights = weights / weights.sum(axis=1, keepdims=True)
  mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
  columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
  matrix = np.zeros((out_length, in_length))
  np.add.at(matrix, (np.repeat(np.arange(out_length), taps), columns.ravel()), weights.ravel())
  return matrix


def resize(image: np.ndarray, size, method: str = "bicubic") -> np.ndarray:
  """Resizes (H, W[, C]) `image` to `size` (int for square, or (height, width)).

  method: "bicubic" (MATLAB imresize bicubic, antialiased) or "bilinear".
  """
  height, width = (size, size) if np.ndim(size) == 0 else tuple(size)
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError(f"resize expects an (H, W) or (H, W, C) image, got shape {image.shape}.")
  if image.shape[:2] == (height, width):
    return image.copy()
  rows = resize_matrix(image.shape[0], height, method).astype(np.float32)
  columns = resize_matrix(image.shape[1], width, method).astype(np.float32)
  data = image.astype(np.float32)
  if image.ndim == 2:
    out = rows @ data @ columns.T
  else:
    # (h, H) x (H, W*C) then per channel along W.
    out = (rows @ data.reshape(image.shape[0], -1)).reshape(height, image.shape[1], -1)
    out = np.einsum("wx,hxc->hwc", columns, out, optimize=True)
  if image.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out.astype(image.dtype)


# ----- robustness degradations -----------------------------------------------------


def gaussian_kernel(sigma: float, radius: int | None = None) -> np.ndarray:
  """Normalized isotropic 2-D Gaussian blur kernel."""
  radius = int(np.ceil(3 * sigma)) if radius is None else radius
  x = np.arange(-radius, radius + 1)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k2 = np.outer(k, k)
  return (k2 / k2.sum()).astype(np.float32)


def motion_kernel(length: int, angle_degrees: float) -> np.ndarray:
  """Normalized linear motion-blur kernel of `length` pixels at `angle_degrees`."""
  size = length if length % 2 else length + 1
  kernel = np.zeros((size, size), np.float32)
  centre = size // 2
  angle = np.deg2rad(angle_degrees)
  for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
    kernel[int(round(centre - t * np.sin(angle))), int(round(centre + t * np.cos(angle)))] += 1
  return kernel / kernel.sum()


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Convolves each channel with `kernel` (symmetric padding); keeps the dtype."""
  from scipy import ndimage
  data = np.asarray(image).astype(np.float32)
  if data.ndim == 3:
    out = np.stack([ndimage.convolve(data[..., c], kernel, mode="mirror") for c in range(data.shape[-1])], -1)
  else:
    out = ndimage.convolve(data, kernel, mode="mirror")
  return _like(out, image)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """Adds N(0, sigma²) noise; sigma in the image's units (0..255 for uint8)."""
  data = np.asarray(image).astype(np.float32)
  return _like(data + rng.normal(0.0, sigma, data.shape).astype(np.float32), image)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """JPEG-compresses and decodes a uint8 (H, W[, 1|3]) image at `quality` (1..95)."""
  from PIL import Image
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"jpeg expects a uint8 image, got {image.dtype}.")
  squeeze = image.ndim == 3 and image.shape[-1] == 1
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if squeeze else image).save(buffer, format="JPEG", quality=int(quality))
  decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
  return decoded[..., None] if squeeze else decoded


def _like(data: np.ndarray, reference: np.ndarray) -> np.ndarray:
  if np.asarray(reference).dtype == np.uint8:
    return np.clip(np.round(data), 0, 255).astype(np.uint8)
  return data.astype(np.asarray(reference).dtype)
