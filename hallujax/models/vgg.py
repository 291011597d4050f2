"""ImageNet feature networks for perceptual and identity losses.

* ``VGG19`` (and ``VGG16`` for LPIPS): torchvision's layer order, returning
  every conv's pre-activation ("conv3_4") and ReLU output ("relu3_4") by name,
  so ``hallujax.convert.torchvision`` loads torchvision's ``vgg19`` weights.
  Under ``jax.jit`` the layers after the last one a loss reads are removed by
  XLA, so asking for "relu2_2" only costs the first two stages.
* ``ResNet50Features``: torchvision's ResNet-50 up to the 2048-D global
  average pool (VividGAN's identity loss, paper 002).

Inputs are NHWC images in [-1, 1]; the ImageNet mean/std normalisation that
torchvision's weights expect happens inside.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.nn.repeat import sequential_blocks
from hallujax.nn.torch_layers import batch_norm, conv_init, torch_conv, torch_padding

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS' ScalingLayer, applied to images in [-1, 1] (richzhang/PerceptualSimilarity).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

VGG_STAGE_SIZES = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)


def normalize_input(images: jax.Array, normalization: str) -> jax.Array:
  """Map [-1, 1] images to what the torchvision weights were trained on."""
  if normalization == "imagenet":
    unit = (images + 1.0) / 2.0
    return (unit - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  if normalization == "lpips":
    return (images - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(LPIPS_SCALE)
  if normalization == "none":
    return images
  raise ValueError(f"input_normalization={normalization!r} is not one of 'imagenet', 'lpips', 'none'.")


class VGG(nn.Module):
  """torchvision VGG-16/19 ``features`` (no batch norm), without the final max pool.

  ``__call__(images)`` -> {"conv1_1": ..., "relu1_1": ..., ..., "relu5_4": ...}:
  "convS_I" is the I-th convolution of stage S before its ReLU.
  """

  depth: int = 19
  input_normalization: str = "imagenet"  # "imagenet", "lpips" or "none"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    if self.depth not in VGG_STAGE_SIZES:
      raise ValueError(f"VGG(depth={self.depth}) is not defined; known depths: {sorted(VGG_STAGE_SIZES)}.")
    x = normalize_input(images.astype(jnp.float32), self.input_normalization).astype(self.dtype)
    features = {}
    for stage, (size, width) in enumerate(zip(VGG_STAGE_SIZES[self.depth], VGG_WIDTHS), 1):
      if stage > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for index in range(1, size + 1):
        x = nn.Conv(width, (3, 3), padding=torch_padding(1), dtype=self.dtype, name=f"conv{stage}_{index}")(x)
        features[f"conv{stage}_{index}"] = x
        x = nn.relu(x)
        features[f"relu{stage}_{index}"] = x
    return features


class VGG19(VGG):
  """VGG-19 with named features (perceptual losses, e.g. paper 003 Eq. 5)."""

  depth: int = 19


class VGG16(VGG):
  """VGG-16 with named features (the LPIPS backbone)."""

  depth: int = 16


class Bottleneck(nn.Module):
  """torchvision ResNet ``Bottleneck`` (v1.5: the stride sits on the 3x3 conv)."""

  features: int
  strides: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(torch_conv, dtype=self.dtype)
    out = nn.relu(batch_norm(train, self.dtype, "bn1")(conv(self.features, 1, 1, 0, "conv1")(x)))
    out = nn.relu(batch_norm(train, self.dtype, "bn2")(conv(self.features, 3, self.strides, 1, "conv2")(out)))
    out = batch_norm(train, self.dtype, "bn3")(conv(4 * self.features, 1, 1, 0, "conv3")(out))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != 4 * self.features:
      shortcut = conv(4 * self.features, 1, self.strides, 0, "downsample_conv")(x)
      shortcut = batch_norm(train, self.dtype, "downsample_bn")(shortcut)
    return nn.relu(out + shortcut)


class ResNet50Features(nn.Module):
  """torchvision ResNet-50 trunk -> (B, 2048) global-average-pooled features (no classifier).

  ``stage_sizes`` and ``width`` exist to build small variants for tests;
  the defaults are ResNet-50. BatchNorm uses running averages unless
  ``train`` (then pass ``mutable=["batch_stats"]``).
  """

  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = normalize_input(images.astype(jnp.float32), "imagenet").astype(self.dtype)
    x = nn.Conv(self.width, (7, 7), strides=(2, 2), padding=torch_padding(3), use_bias=False,
                kernel_init=conv_init, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=torch_padding(1))
    for stage, size in enumerate(self.stage_sizes):
      features = self.width * 2**stage
      x = Bottleneck(features, 2 if stage > 0 else 1, self.dtype, name=f"layer{stage + 1}_0")(x, train)
      # The stage's other blocks have one shape: traced once (issue 30), parameters still layer{s}_{i}.
      x = sequential_blocks(self, functools.partial(Bottleneck, features, 1, self.dtype),
                            [f"layer{stage + 1}_{index}" for index in range(1, size)], x, train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
