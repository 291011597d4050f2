"""FH-GAN's networks (paper 003): the Dense Sparse Network generator and the WGAN-GP critic.

DSNet (paper 003 §3.1, Fig. 3): two low-level feature convs (LLFE, Eqs. 1-2),
sparse blocks whose layers aggregate earlier outputs at exponential offsets
(Eq. 3), every block seeing the low-level features and all earlier blocks, a
1×1 bottleneck to 128 maps, sub-pixel upsampling and a 3×3 reconstruction
conv. With the paper's 6 blocks × 6 layers that is "41 layers including sparse
blocks, low level feature extractors, bottleneck, upsampling and
reconstruction" (§4.1): 2 + 36 + 1 + 1 + 1.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.nn.torch_layers import PReLU

Dtype = Any


def exponential_offsets(layer: int, base: int = 2) -> list[int]:
  """Offsets c⁰, c¹, …, cᵏ with cᵏ ≤ layer (paper 003, Eq. 3)."""
  offsets, offset = [], 1
  while offset <= layer:
    offsets.append(offset)
    offset *= base
  return offsets


def sparse_inputs(outputs: list[jax.Array], layer: int) -> jax.Array:
  """Concatenate outputs y_{l-1}, y_{l-2}, y_{l-4}, … for layer l (paper 003, Eq. 3).

  `outputs[0]` is the block input y_0 and `outputs[i]` the i-th layer's output.
  """
  return jnp.concatenate([outputs[layer - offset] for offset in exponential_offsets(layer)], axis=-1)


def pixel_shuffle(x: jax.Array, scale: int) -> jax.Array:
  """Sub-pixel rearrangement (Shi et al. 2016): (B, H, W, C·s²) -> (B, H·s, W·s, C).

  Channel order matches torch.nn.PixelShuffle (channel-major within each s×s cell).
  """
  batch, height, width, channels = x.shape
  out_channels = channels // (scale * scale)
  x = x.reshape(batch, height, width, out_channels, scale, scale)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(batch, height * scale, width * scale, out_channels)


class SparseBlock(nn.Module):
  """`layers` conv3×3 + PReLU layers with exponential-offset aggregation (paper 003, Fig. 4).

  The paper does not say what a block passes on. As in SparseNet (Zhu et al.,
  its ref. [27]) the block output aggregates the outputs at exponential offsets
  from the position after its last layer: for 6 layers that is y₆, y₅, y₃.
  """

  layers: int = 6
  growth: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    outputs = [x]
    for layer in range(1, self.layers + 1):
      y = nn.Conv(self.growth, (3, 3), dtype=self.dtype, name=f"conv{layer}")(sparse_inputs(outputs, layer))
      outputs.append(PReLU(name=f"prelu{layer}")(y))
    return sparse_inputs(outputs, self.layers + 1)


class DSNet(nn.Module):
  """Dense Sparse Network: LR (B, h, w, 3) in [-1, 1] -> SR (B, h·scale, w·scale, 3).

  Paper 003 §4.1: 6 sparse blocks of 6 layers, growth rate 32, 64 low-level
  filters, 3×3 kernels except the 1×1 bottleneck to 128 maps, PReLU.
  Upsampling is one 3×3 conv to `upsample_features`·scale² maps followed by a
  ×scale pixel shuffle and PReLU (one layer, matching the paper's count of 41).
  The output is not squashed: the pixel loss keeps it in range, and evaluation
  clips it to [-1, 1].
  """

  scale: int = 4
  features: int = 64
  blocks: int = 6
  layers_per_block: int = 6
  growth: int = 32
  bottleneck: int = 128
  upsample_features: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, low_resolution: jax.Array) -> jax.Array:
    x = low_resolution.astype(self.dtype)
    y0 = PReLU(name="llfe0_prelu")(nn.Conv(self.features, (3, 3), dtype=self.dtype, name="llfe0")(x))  # Eq. 1
    y1 = PReLU(name="llfe1_prelu")(nn.Conv(self.features, (3, 3), dtype=self.dtype, name="llfe1")(y0))  # Eq. 2
    seen = [y1]  # each block sees the low-level features and every earlier block (§3.1)
    for block in range(self.blocks):
      block_input = jnp.concatenate(seen, axis=-1)
      seen.append(SparseBlock(self.layers_per_block, self.growth, self.dtype, name=f"block{block}")(block_input))
    x = nn.Conv(self.bottleneck, (1, 1), dtype=self.dtype, name="bottleneck")(jnp.concatenate(seen, axis=-1))
    x = nn.Conv(self.upsample_features * self.scale**2, (3, 3), dtype=self.dtype, name="upsample")(x)
    x = PReLU(name="upsample_prelu")(pixel_shuffle(x, self.scale))
    x = nn.Conv(3, (3, 3), dtype=self.dtype, name="reconstruction")(x)
    return x.astype(jnp.float32)


class Critic(nn.Module):
  """DCGAN discriminator without batch norm (paper 003 §3.2), a WGAN-GP critic.

  4×4 stride-2 convs with LeakyReLU(0.2), doubling the width from `features`
  until the map is at most 8×8 (112² → 56, 28, 14, 7), then one linear output.
  No normalisation: the gradient penalty is per sample (Gulrajani et al.).
  """

  features: int = 64
  max_features: int = 512
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(self.dtype)
    width = self.features
    while x.shape[1] > 8:
      x = nn.leaky_relu(nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype)(x), 0.2)
      width = min(width * 2, self.max_features)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
