"""Residual blocks and stacked hourglass modules (Newell et al., ECCV 2016).

Shared by IPFH's coarse hallucinator (paper 004, §III-B.1: "two stacked
hourglass modules ... residual blocks with kernel size 3×3, stride 2 down to a
very low resolution with 4×4 ... then begins the upsampling and combination of
features across scales") and VividGAN's landmark-heatmap branch (paper 002).

No normalization layers: the train states stay pure parameter pytrees (no
batch statistics to carry), and both papers train these modules from scratch
with small learning rates (Adam), where normalization is not needed to start.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling of an NHWC tensor by an integer factor."""
  x = jnp.repeat(x, factor, axis=-3)
  return jnp.repeat(x, factor, axis=-2)


class ResidualBlock(nn.Module):
  """Two 3×3 convolutions with a ReLU between, plus a skip connection (He et al. 2016).

  With `strides=2` (or a change of width) the skip is a strided 1×1 projection.
  """

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = nn.Conv(self.features, (3, 3), strides=self.strides, name="conv1")(nn.relu(x))
    residual = nn.Conv(self.features, (3, 3), name="conv2")(nn.relu(residual))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), strides=self.strides, name="skip")(x)
    return x + residual


class Hourglass(nn.Module):
  """One hourglass: `depth` stride-2 residual blocks down, then up with cross-scale sums.

  At every scale the input also goes through a residual block at that scale
  (the "upper" branch); the lower branch is downsampled, processed
  recursively, upsampled ×2 (nearest) and added to it. An input of size S
  reaches S / 2**depth at the bottom (128 → 4 with depth 5).
  """

  depth: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-2] % 2 or x.shape[-3] % 2:
      raise ValueError(
          f"Hourglass got a {x.shape[-3]}×{x.shape[-2]} feature map at depth {self.depth}; "
          "every level halves it, so the input size must be divisible by 2**depth."
      )
    upper = ResidualBlock(self.features, name="upper")(x)
    lower = ResidualBlock(self.features, strides=2, name="down")(x)
    if self.depth > 1:
      lower = Hourglass(self.depth - 1, self.features, name="inner")(lower)
    else:
      lower = ResidualBlock(self.features, name="bottom")(lower)
    lower = ResidualBlock(self.features, name="up")(lower)
    return upper + upsample_nearest(lower)


class StackedHourglass(nn.Module):
  """`num_stacks` hourglasses in sequence with a 1×1 head after each (Newell et al. §3.4).

  Returns the list of head outputs (one per stack, `out_channels` each) so a
  loss can supervise every stack (intermediate supervision); the last one is
  the prediction. Between stacks the features and the head output are mapped
  back to `features` channels by 1×1 convolutions and added to the input.
  `head_init` initialises the heads' kernels (zeros for a residual output
  that should start at 0, as in IPFH's coarse hallucinator).
  """

  num_stacks: int
  depth: int
  features: int
  out_channels: int
  head_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (3, 3), name="stem")(x)
    outputs = []
    for stack in range(self.num_stacks):
      y = Hourglass(self.depth, self.features, name=f"hourglass_{stack}")(x)
      y = ResidualBlock(self.features, name=f"after_{stack}")(y)
      y = nn.relu(nn.Conv(self.features, (1, 1), name=f"features_{stack}")(y))
      head = nn.Conv(self.out_channels, (1, 1), kernel_init=self.head_init, name=f"head_{stack}")(y)
      outputs.append(head)
      if stack + 1 < self.num_stacks:
        x = (x + nn.Conv(self.features, (1, 1), name=f"merge_features_{stack}")(y)
             + nn.Conv(self.features, (1, 1), name=f"merge_head_{stack}")(head))
    return outputs
