"""Layers laid out like their PyTorch counterparts, so public checkpoints load without permutation.

Used by the recognizers (``hallujax.models.recognition``), VGG-19, DSNet and
any network whose weights come through ``hallujax.convert``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torchvision / arcface_torch convolutions: He-normal on fan_out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PReLU(nn.Module):
  """Per-channel PReLU as ``torch.nn.PReLU(channels)`` (slope initialised to 0.25)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def torch_padding(padding: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding as PyTorch's ``padding=p`` (Flax's "SAME" pads stride-2 convs asymmetrically)."""
  return ((padding, padding), (padding, padding))


def torch_conv(features: int, kernel: int, strides: int, padding: int, name: str, dtype: Dtype) -> nn.Conv:
  """A bias-free conv laid out like ``torch.nn.Conv2d(..., padding=p, bias=False)`` with He fan-out init."""
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=torch_padding(padding),
                 use_bias=False, kernel_init=conv_init, dtype=dtype, name=name)


def flatten_channel_major(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, C*H*W) in PyTorch's NCHW flatten order."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def batch_norm(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)
