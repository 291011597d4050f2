"""Image-quality metrics on batches of 0-255 images (B, H, W, C), jitted.

* ``psnr`` / ``ssim``: RGB (all channels) or, with ``y_channel=True``, on the
  luma of ITU-R BT.601 YCbCr (16-235 range, MATLAB's ``rgb2ycbcr`` and
  ``skimage.color.rgb2ycbcr``), the usual face-hallucination convention.
  SSIM matches ``skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``:
  an 11x11 Gaussian window, statistics averaged over the pixels whose window
  lies fully inside the image.
* ``LPIPS``: learned perceptual distance (Zhang et al. 2018, v0.1, VGG
  variant) on images in [-1, 1]; its weights come from
  ``hallujax.convert.lpips`` (with random weights it is not LPIPS, so
  ``lpips_distance`` takes the variables explicitly and has no default).

NIQE is not provided: no package on the registries we can use ships NIQE's
fitted natural-scene model parameters, and we do not fabricate them.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.models.vgg import VGG16

# skimage / MATLAB rgb2ycbcr, for RGB in [0, 255]: Y in [16, 235].
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
Y_OFFSET = 16.0


def to_y_channel(images: jax.Array) -> jax.Array:
  """(B, H, W, 3) RGB in [0, 255] -> (B, H, W, 1) BT.601 luma in [16, 235]."""
  if images.shape[-1] != 3:
    raise ValueError(f"Y-channel metrics need RGB images (B, H, W, 3); got shape {images.shape}.")
  return (images @ jnp.asarray(Y_WEIGHTS, images.dtype))[..., None] + Y_OFFSET


def from_unit_range(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] (the project's convention) -> [0, 255], clipped."""
  return jnp.clip((images + 1.0) * 127.5, 0.0, 255.0)


@functools.partial(jax.jit, static_argnames=("y_channel",))
def psnr(images: jax.Array, references: jax.Array, y_channel: bool = False) -> jax.Array:
  """Peak signal-to-noise ratio (dB) per image, data range 255 -> (B,). Identical images give inf."""
  images, references = images.astype(jnp.float32), references.astype(jnp.float32)
  if y_channel:
    images, references = to_y_channel(images), to_y_channel(references)
  mse = jnp.mean((images - references) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(255.0**2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> jax.Array:
  """1-D Gaussian as ``scipy.ndimage.gaussian_filter`` builds it (radius int(truncate·σ + 0.5): 11 taps for σ=1.5)."""
  radius = int(truncate * sigma + 0.5)
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets / sigma) ** 2)
  return weights / jnp.sum(weights)


def filter_valid(images: jax.Array, window: jax.Array) -> jax.Array:
  """Separable 2-D filtering of each channel of (B, H, W, C), keeping only fully covered pixels."""
  channels = images.shape[-1]
  size = window.shape[0]
  dimension_numbers = ("NHWC", "HWIO", "NHWC")
  vertical = jnp.tile(window.reshape(size, 1, 1, 1), (1, 1, 1, channels))
  horizontal = jnp.tile(window.reshape(1, size, 1, 1), (1, 1, 1, channels))
  out = jax.lax.conv_general_dilated(images, vertical, (1, 1), "VALID", dimension_numbers=dimension_numbers,
                                     feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)
  return jax.lax.conv_general_dilated(out, horizontal, (1, 1), "VALID", dimension_numbers=dimension_numbers,
                                      feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("y_channel",))
def ssim(images: jax.Array, references: jax.Array, y_channel: bool = False) -> jax.Array:
  """Mean structural similarity per image (Wang et al. 2004), data range 255 -> (B,); channels averaged."""
  images, references = images.astype(jnp.float32), references.astype(jnp.float32)
  if y_channel:
    images, references = to_y_channel(images), to_y_channel(references)
  window = gaussian_window()
  if min(images.shape[1:3]) < window.shape[0]:
    raise ValueError(f"SSIM needs images of at least {window.shape[0]}x{window.shape[0]}; got {images.shape}.")
  c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
  blur = lambda x: filter_valid(x, window)
  mean_x, mean_y = blur(images), blur(references)
  variance_x = blur(images * images) - mean_x**2
  variance_y = blur(references * references) - mean_y**2
  covariance = blur(images * references) - mean_x * mean_y
  numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
  denominator = (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
  return jnp.mean(numerator / denominator, axis=(1, 2, 3))


LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def unit_normalize_channels(features: jax.Array, epsilon: float = 1e-10) -> jax.Array:
  """LPIPS' ``normalize_tensor``: divide each pixel's feature vector by its L2 norm."""
  return features / (jnp.sqrt(jnp.sum(features**2, axis=-1, keepdims=True)) + epsilon)


class LPIPS(nn.Module):
  """LPIPS v0.1 (VGG): Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² ) over five VGG-16 ReLU layers.

  ``__call__(images, references)`` with images in [-1, 1] -> (B,) distances.
  Submodules mirror the PyTorch model: "net" (VGG-16 with LPIPS' input
  scaling) and "lin0" ... "lin4" (1x1 convolutions without bias).
  """

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, references: jax.Array) -> jax.Array:
    features = VGG16(input_normalization="lpips", dtype=self.dtype, name="net")(
        jnp.concatenate([images, references], axis=0))
    batch = images.shape[0]
    total = jnp.zeros((batch,), jnp.float32)
    for index, layer in enumerate(LPIPS_LAYERS):
      normalized = unit_normalize_channels(features[layer].astype(jnp.float32))
      difference = (normalized[:batch] - normalized[batch:]) ** 2
      weighted = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{index}")(difference)
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


@jax.jit
def lpips_distance(variables, images: jax.Array, references: jax.Array) -> jax.Array:
  """LPIPS per image pair (B,), images in [-1, 1]; `variables` from ``hallujax.convert.lpips.load_lpips``."""
  return LPIPS().apply(variables, images, references)


def psnr_from_unit_range(images: jax.Array, references: jax.Array, y_channel: bool = False) -> jax.Array:
  """``psnr`` on images in [-1, 1] (quantisation-free: values are mapped, not rounded, to [0, 255])."""
  return psnr(from_unit_range(images), from_unit_range(references), y_channel=y_channel)


def ssim_from_unit_range(images: jax.Array, references: jax.Array, y_channel: bool = False) -> jax.Array:
  """``ssim`` on images in [-1, 1]."""
  return ssim(from_unit_range(images), from_unit_range(references), y_channel=y_channel)


__all__ = ["psnr", "ssim", "to_y_channel", "from_unit_range", "LPIPS", "lpips_distance",
           "psnr_from_unit_range", "ssim_from_unit_range"]
