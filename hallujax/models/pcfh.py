"""PCFH networks (paper 001, Yu et al., "pose-preserving cross-spectral face hallucination").

- ``MultiPathGenerator`` G_A, NIR → VIS (§3.2): a global path and four local
  paths (the two eyes, the nose, the mouth) whose features are "add[ed] to the
  global patch in a max-out way", as TP-GAN [Huang et al. 2017], which §3.2
  follows ("Similiar to [Huang et al., 2017]").
- ``ResNetGenerator``: the global path, and on its own the auxiliary G_B
  (VIS → NIR, §3.2) and the CycleGAN-style baseline's generators.
- ``UNetGenerator``: the pix2pix-style baseline's generator (Isola et al. 2017).
- ``PatchCritic``: D_A (a WGAN-GP critic: no normalisation, one score per
  image) and, with instance normalisation, the baselines' PatchGAN.
- ``AttentionModule`` A (§3.3, Eq. 7): the attention map Att ∈ (0, 1).
- ``MutualInformationEstimator`` NE (§3.4, Eq. 10): a statistics network T(a, b).

Images are NHWC in [-1, 1]. Choices the paper leaves open are stated at each
module; the paper shows no architecture beyond Figure 2's boxes.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.data.alignment import COMPONENT_SIZES, PARTS_68
from hallujax.nn.repeat import sequential_blocks

Dtype = Any
PARTS = ("right_eye", "left_eye", "nose", "mouth")


# --------------------------------------------------------------------------- components (§4.2)


def component_sizes(image_size: int) -> dict[str, tuple[int, int]]:
  """(height, width) of each local path's crop at `image_size`² (§4.2).

  The paper's sizes at 144² and 256² (hallujax.data.alignment.COMPONENT_SIZES);
  other sizes scale the 256² sizes by image_size / 256 and round to a multiple
  of 4 (the local paths downsample twice), at least 8.
  """
  for layout in ("pcfh144", "pcfh256"):
    size, sizes = COMPONENT_SIZES[layout]
    if image_size == size:
      return dict(sizes)
  _, sizes = COMPONENT_SIZES["pcfh256"]
  scale = image_size / 256.0
  return {part: tuple(max(8, 4 * round(extent * scale / 4)) for extent in shape)
          for part, shape in sizes.items()}


def component_corners(landmarks: jax.Array, sizes: dict[str, tuple[int, int]],
                      image_size: int) -> dict[str, jax.Array]:
  """(B, 2) int32 (top, left) of each part's box, centred on its landmarks and kept inside the image."""
  corners = {}
  for part in PARTS:
    height, width = sizes[part]
    centre = jnp.mean(landmarks[:, jnp.asarray(PARTS_68[part])], axis=1)       # (B, 2) as (x, y)
    top = jnp.round(centre[:, 1] - (height - 1) / 2.0)
    left = jnp.round(centre[:, 0] - (width - 1) / 2.0)
    corners[part] = jnp.stack([jnp.clip(top, 0, image_size - height),
                               jnp.clip(left, 0, image_size - width)], axis=-1).astype(jnp.int32)
  return corners


def crop(images: jax.Array, corners: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) images, (B, 2) (top, left) -> (B, h, w, C) crops."""
  def one(image, corner):
    return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (*shape, image.shape[-1]))
  return jax.vmap(one)(images, corners)


def paste(patches: jax.Array, corners: jax.Array, height: int, width: int, fill: float) -> jax.Array:
  """(B, h, w, C) patches placed at (B, 2) (top, left) on (B, height, width, C) canvases of `fill`."""
  def one(patch, corner):
    canvas = jnp.full((height, width, patch.shape[-1]), fill, patch.dtype)
    return jax.lax.dynamic_update_slice(canvas, patch, (corner[0], corner[1], 0))
  return jax.vmap(one)(patches, corners)


def max_out_fusion(global_features: jax.Array, local_features: Sequence[jax.Array],
                   corners: Sequence[jax.Array]) -> jax.Array:
  """The element-wise max of the global features and each local path's features where its box lies (§3.2).

  Outside every box the result is the global features; inside, the max over
  the global features and the local paths covering that pixel (TP-GAN's
  "max-out" fusion of overlapping patches, extended to the global path).
  """
  height, width = global_features.shape[1:3]
  fused = global_features
  for patch, corner in zip(local_features, corners):
    fused = jnp.maximum(fused, paste(patch, corner, height, width, -jnp.inf))
  return fused


# --------------------------------------------------------------------------- building blocks


def instance_norm(dtype: Dtype) -> nn.Module:
  return nn.InstanceNorm(epsilon=1e-5, use_bias=True, use_scale=True, dtype=dtype)


class ResidualBlock(nn.Module):
  """conv3-IN-ReLU-conv3-IN plus identity (Johnson et al. 2016; CycleGAN's resnet block)."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(instance_norm(self.dtype)(nn.Conv(self.features, (3, 3), dtype=self.dtype)(x)))
    y = instance_norm(self.dtype)(nn.Conv(self.features, (3, 3), dtype=self.dtype)(y))
    return x + y


class EncoderDecoder(nn.Module):
  """conv7 → `downsamplings` stride-2 convs (×2 width) → residual blocks → as many upsamplings → features.

  Upsampling is nearest ×2 then a 3×3 conv (no checkerboard of transposed
  convolutions). Returns the full-resolution `features`-channel map.
  """

  features: int = 64
  downsamplings: int = 2
  blocks: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(instance_norm(self.dtype)(nn.Conv(self.features, (7, 7), dtype=self.dtype)(x)))
    for level in range(1, self.downsamplings + 1):
      x = nn.Conv(self.features * 2**level, (3, 3), strides=(2, 2), dtype=self.dtype)(x)
      x = nn.relu(instance_norm(self.dtype)(x))
    # Traced once, not `blocks` times (issue 30); the parameters stay ResidualBlock_0 … ResidualBlock_{n-1}.
    x = sequential_blocks(self, functools.partial(ResidualBlock, x.shape[-1], self.dtype),
                          [f"ResidualBlock_{index}" for index in range(self.blocks)], x)
    for level in reversed(range(self.downsamplings)):
      batch, height, width, channels = x.shape
      x = jax.image.resize(x, (batch, 2 * height, 2 * width, channels), "nearest")
      x = nn.Conv(self.features * 2**level, (3, 3), dtype=self.dtype)(x)
      x = nn.relu(instance_norm(self.dtype)(x))
    return x


def to_image(x: jax.Array, channels: int, dtype: Dtype, name: str) -> jax.Array:
  """The last conv7 and tanh, in float32."""
  return jnp.tanh(nn.Conv(channels, (7, 7), dtype=dtype, name=name)(x).astype(jnp.float32))


# --------------------------------------------------------------------------- generators


class ResNetGenerator(nn.Module):
  """The global path alone: G_B (VIS → NIR, §3.2) and the CycleGAN-style baseline's generators."""

  out_channels: int = 3
  features: int = 64
  downsamplings: int = 2
  blocks: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = EncoderDecoder(self.features, self.downsamplings, self.blocks, self.dtype, name="path")(
        images.astype(self.dtype))
    return to_image(x, self.out_channels, self.dtype, "to_image")


class MultiPathGenerator(nn.Module):
  """G_A: NIR → VIS with a global path and eye / nose / mouth local paths fused by max-out (§3.2).

  ``__call__(images, landmarks)``: images (B, S, S, C_in), landmarks (B, 68, 2)
  of the input image (its iBUG-300W points, pixel centres at integers) ->
  (B, S, S, out_channels). Each local path is a smaller encoder-decoder
  (`local_features` wide, `local_blocks` residual blocks) on its crop
  (component_sizes(S)); its full-resolution features are max-fused with the
  global path's last features inside its box; one conv7 + tanh makes the image.
  Choice: fusion at the last feature map (TP-GAN fuses features, not images);
  local features are widened to the global width by a 1×1 conv.
  """

  out_channels: int = 3
  features: int = 64
  downsamplings: int = 2
  blocks: int = 6
  local_features: int = 32
  local_blocks: int = 2
  use_local_paths: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, landmarks: jax.Array) -> jax.Array:
    size = images.shape[1]
    if images.shape[2] != size:
      raise ValueError(f"MultiPathGenerator takes square images; got {images.shape}.")
    x = images.astype(self.dtype)
    global_features = EncoderDecoder(self.features, self.downsamplings, self.blocks, self.dtype,
                                     name="global_path")(x)
    fused = global_features
    if self.use_local_paths:
      sizes = component_sizes(size)
      corners = component_corners(landmarks, sizes, size)
      local = []
      for part in PARTS:
        patch = crop(x, corners[part], sizes[part])
        y = EncoderDecoder(self.local_features, 2, self.local_blocks, self.dtype, name=f"{part}_path")(patch)
        local.append(nn.Conv(self.features, (1, 1), dtype=self.dtype, name=f"{part}_to_global")(y))
      fused = max_out_fusion(global_features, local, [corners[part] for part in PARTS])
    return to_image(fused, self.out_channels, self.dtype, "to_image")


class UNetGenerator(nn.Module):
  """pix2pix's U-Net (Isola et al. 2017): conv4 stride-2 encoder, mirrored decoder with skips.

  `depth` halvings (pix2pix's unet_256 has 8; fewer for small images), widths
  features·(1, 2, 4, 8, 8, ...); LeakyReLU(0.2) down, ReLU up, instance norm,
  dropout omitted (pix2pix uses it as its only noise source; our runs are
  deterministic).
  """

  out_channels: int = 3
  features: int = 64
  depth: int = 6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.shape[1] % 2**self.depth:
      raise ValueError(f"UNetGenerator(depth={self.depth}) needs sizes divisible by {2**self.depth}; "
                       f"got {images.shape[1:3]}.")
    widths = [self.features * min(2**level, 8) for level in range(self.depth)]
    x = images.astype(self.dtype)
    skips = []
    for level, width in enumerate(widths):
      x = nn.Conv(width, (4, 4), strides=(2, 2), dtype=self.dtype)(nn.leaky_relu(x, 0.2) if level else x)
      if 0 < level < self.depth - 1:
        x = instance_norm(self.dtype)(x)
      skips.append(x)
    for level in reversed(range(self.depth - 1)):
      x = nn.relu(x)
      batch, height, width, channels = x.shape
      x = jax.image.resize(x, (batch, 2 * height, 2 * width, channels), "nearest")
      x = instance_norm(self.dtype)(nn.Conv(widths[level], (3, 3), dtype=self.dtype)(x))
      x = jnp.concatenate([x, skips[level]], axis=-1)
    x = nn.relu(x)
    batch, height, width, channels = x.shape
    x = jax.image.resize(x, (batch, 2 * height, 2 * width, channels), "nearest")
    return jnp.tanh(nn.Conv(self.out_channels, (3, 3), dtype=self.dtype, name="to_image")(x).astype(jnp.float32))


# --------------------------------------------------------------------------- critics and estimators


class PatchCritic(nn.Module):
  """PatchGAN (70×70 receptive field at 3 layers): conv4 s2 ×`layers`, conv4 s1, conv4 s1 → 1 channel.

  ``normalize=False`` is D_A, the WGAN-GP critic of Eq. 1 (a gradient penalty
  needs per-example gradients, so no batch statistics; no normalisation as in
  Gulrajani et al.); it returns one score per image, the mean of its patch
  scores. ``normalize=True`` (instance norm) is the baselines' PatchGAN and
  returns the (B, h, w) patch logits.
  """

  features: int = 64
  layers: int = 3
  normalize: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(self.dtype)
    for level in range(self.layers + 1):
      strides = (2, 2) if level < self.layers else (1, 1)
      x = nn.Conv(self.features * min(2**level, 8), (4, 4), strides=strides, dtype=self.dtype)(x)
      if self.normalize and level > 0:
        x = instance_norm(self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    x = nn.Conv(1, (4, 4), dtype=self.dtype, name="score")(x)[..., 0].astype(jnp.float32)
    return x if self.normalize else jnp.mean(x, axis=(1, 2))


class AttentionModule(nn.Module):
  """A (§3.3, Eq. 7): the attention map Att = σ(net(I_N, I_Warp)) ∈ (0, 1), (B, H, W, 1).

  The paper: an attention module "to adaptively decide which parts of the
  warped VIS images can be regarded as the pixel-aligned ground truth". It
  does not say what A sees; ours sees the NIR input and the warped VIS image
  (the deformations it must find are between those two), through a small
  conv stack at half resolution, upsampled bilinearly. Applying A to an image
  x is Att ⊙ (x + 1)/2 (`apply_attention`), so that Eq. 7's first term pushes
  Att towards 1 as the paper says it should ("prevent[s] the attention map
  converging to 0").
  """

  features: int = 32
  layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, nir: jax.Array, warped: jax.Array) -> jax.Array:
    x = jnp.concatenate([nir, warped], axis=-1).astype(self.dtype)
    batch, height, width, _ = x.shape
    x = nn.leaky_relu(nn.Conv(self.features, (4, 4), strides=(2, 2), dtype=self.dtype)(x), 0.2)
    for _ in range(self.layers - 1):
      x = nn.leaky_relu(nn.Conv(self.features, (3, 3), dtype=self.dtype)(x), 0.2)
    logits = nn.Conv(1, (3, 3), dtype=self.dtype, name="logits")(x).astype(jnp.float32)
    logits = jax.image.resize(logits, (batch, height, width, 1), "bilinear")
    return jax.nn.sigmoid(logits)


def apply_attention(attention: jax.Array, images: jax.Array) -> jax.Array:
  """A(x) of Eqs. 7–8: the attention map times the image mapped to [0, 1]."""
  return attention * (images + 1.0) / 2.0


class StatisticsNetwork(nn.Module):
  """T(a, b) -> (B,): conv4 stride-2 layers on [a, b] stacked on channels, global mean, linear."""

  features: int = 32
  layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, first: jax.Array, second: jax.Array) -> jax.Array:
    x = jnp.concatenate([first, second], axis=-1).astype(self.dtype)
    for level in range(self.layers):
      x = nn.leaky_relu(nn.Conv(self.features * 2**level, (4, 4), strides=(2, 2), dtype=self.dtype)(x), 0.2)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.leaky_relu(nn.Dense(self.features * 2**self.layers, dtype=self.dtype)(x), 0.2)
    return nn.Dense(1, dtype=self.dtype, name="score")(x)[..., 0].astype(jnp.float32)


class MutualInformationEstimator(nn.Module):
  """NE (§3.4, Eq. 10): one statistics network per constrained pair, at `size`² (area-downsampled).

  ``__call__(output, visible, nir)`` -> {"visible": (T_joint, T_product),
  "nir": (T_joint, T_product)}: T_joint (B,) on the batch's own pairs (samples
  of the joint distribution p) and T_product (B·(B−1),) on every off-diagonal
  pair (output i, second image j ≠ i), the batch's samples of the product of
  marginals q. All B − 1 negatives per example, not one: with a roll by one
  (B = 8, 8 product samples) the estimate stayed at ~0.001 nats in the face
  world's smoke runs (issue 33); MINE (Belghazi et al. 2018) draws q's samples
  by shuffling the batch, of which the off-diagonal pairs are every draw.
  """

  size: int = 32
  features: int = 32
  layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, output: jax.Array, visible: jax.Array, nir: jax.Array) -> dict:
    scores = {}
    output = downsample(output, self.size)
    count = output.shape[0]
    for name, second in (("visible", visible), ("nir", nir)):
      network = StatisticsNetwork(self.features, self.layers, self.dtype, name=name)
      second = downsample(second, self.size)
      # Output i against second image (i + shift) mod B for every shift 1..B−1: all off-diagonal pairs.
      shifted = jnp.concatenate([jnp.roll(second, shift, axis=0) for shift in range(1, count)], axis=0)
      repeated = jnp.tile(output, (count - 1, 1, 1, 1))
      scores[name] = (network(output, second), network(repeated, shifted))
    return scores


def downsample(images: jax.Array, size: int) -> jax.Array:
  """Area (box) downsampling of (B, S, S, C) to size², S a multiple of size; unchanged when equal."""
  factor = images.shape[1] // size
  if factor * size != images.shape[1]:
    raise ValueError(f"Cannot area-downsample {images.shape[1]}² images to {size}² (not a divisor).")
  if factor == 1:
    return images
  return nn.avg_pool(images, (factor, factor), strides=(factor, factor))
