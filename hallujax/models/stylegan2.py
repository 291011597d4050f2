"""StyleGAN2 config-f generator and discriminator (Karras et al. 2020), NHWC.

Structure and numbers follow rosinality's `stylegan2-pytorch` model.py so that
its checkpoints (and NVIDIA's stylegan2-ada-pytorch ones, see
hallujax.convert.stylegan2) load and reproduce their images.

Variables: "params" (trained) and "buffers" (not trained: the tracked average
w `mapping/w_avg` and the fixed per-layer noise maps `synthesis/layer_{j}/noise`).
A frozen prior (VPGAN) is simply a "params" tree that no optimizer sees.

Layer indexing, for resolution 2^L: the synthesis has 2L-3 styled convolutions
(`layer_0` at 4², then an upsampling and a plain one per resolution 8² … 2^L)
and L-1 ToRGB layers (`to_rgb_0` at 4² …); it reads a W+ code of
`num_ws = 2L-2` vectors: layer j reads w[j], to_rgb r reads w[2r+1].
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from hallujax.nn.stylegan_layers import (EqualConv, EqualDense, ModulatedConv, fused_leaky_relu,
                                         minibatch_stddev, pixel_norm, upsample_2x)


def channel_table(resolution: int, channel_multiplier: int = 2, channel_max: int = 512,
                  channel_base: int = 16384) -> tuple[int, ...]:
  """Channels at 4², 8², …, resolution²: min(channel_max, channel_base·multiplier / res).

  With the defaults this is the paper's config-f table as rosinality writes
  it (512 up to 32², then 256·m at 64², 128·m at 128², …). Tests shrink
  `channel_max` for tiny networks.
  """
  check_resolution(resolution)
  return tuple(min(channel_max, channel_base * channel_multiplier // 2**i)
               for i in range(2, int(math.log2(resolution)) + 1))


def check_resolution(resolution: int) -> None:
  if resolution < 8 or resolution & (resolution - 1):
    raise ValueError(f"StyleGAN2 resolution must be a power of two ≥ 8, got {resolution}.")


def num_ws(resolution: int) -> int:
  """Length of the W+ code: 2·log2(resolution) - 2."""
  return 2 * int(math.log2(resolution)) - 2


def num_synthesis_layers(resolution: int) -> int:
  """Number of styled convolutions (noise inputs): 2·log2(resolution) - 3."""
  return 2 * int(math.log2(resolution)) - 3


def _check_channels(resolution: int, channels: Sequence[int]) -> None:
  expected = int(math.log2(resolution)) - 1
  if len(channels) != expected:
    raise ValueError(f"channels has {len(channels)} entries; resolution {resolution} needs {expected} "
                     f"(one per resolution 4², 8², …, {resolution}²). Use channel_table().")


class Mapping(nn.Module):
  """z → w: PixelNorm and 8 equalized dense layers with lr multiplier 0.01 (StyleGAN §2)."""
  style_dim: int = 512
  num_layers: int = 8
  lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995

  @nn.compact
  def __call__(self, z: jax.Array, update_w_avg: bool = False) -> jax.Array:
    w = pixel_norm(z)
    for i in range(self.num_layers):
      w = EqualDense(self.style_dim, lr_multiplier=self.lr_multiplier, activation=True,
                     name=f"dense_{i}")(w)
    w_avg = self.variable("buffers", "w_avg", jnp.zeros, (self.style_dim,), jnp.float32)
    if update_w_avg:
      # Running mean of w used for truncation (stylegan2-ada-pytorch `w_avg`, β = 0.995).
      batch_mean = jnp.mean(jax.lax.stop_gradient(w), axis=0)
      w_avg.value = batch_mean + self.w_avg_beta * (w_avg.value - batch_mean)
    return w


class StyledConv(nn.Module):
  """Modulated conv → noise injection (learned scalar) → bias + leaky ReLU (rosinality `StyledConv`)."""
  features: int
  upsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, noise_mode: str) -> jax.Array:
    x = ModulatedConv(self.features, 3, upsample=self.upsample, dtype=self.dtype,
                      name="modulated_conv")(x, w)
    batch, height, width, _ = x.shape
    fixed_noise = self.variable(
        "buffers", "noise", lambda: jax.random.normal(self.make_rng("params"), (height, width)))
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    if noise_mode == "const":
      noise = fixed_noise.value[None, :, :, None]
    elif noise_mode == "random":
      noise = jax.random.normal(self.make_rng("noise"), (batch, height, width, 1))
    elif noise_mode == "none":
      noise = None
    else:
      raise ValueError(f"noise_mode={noise_mode!r}; expected one of const, random, none.")
    if noise is not None:
      x = x + (strength * noise).astype(x.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return fused_leaky_relu(x, bias)


class ToRGB(nn.Module):
  """1×1 modulated conv without demodulation + bias, added to the blur-upsampled skip image."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, skip: jax.Array | None) -> jax.Array:
    rgb = ModulatedConv(3, 1, demodulate=False, dtype=self.dtype, name="modulated_conv")(x, w)
    rgb = rgb + self.param("bias", nn.initializers.zeros, (3,)).astype(rgb.dtype)
    if skip is not None:
      rgb = rgb + upsample_2x(skip.astype(rgb.dtype))
    return rgb


class Synthesis(nn.Module):
  """W+ → image: constant 4² input, styled convs with transposed-conv upsampling, skip ToRGBs."""
  resolution: int
  channels: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, w_plus: jax.Array, *, noise_mode: str = "const",
               scale_shift: Sequence[tuple[jax.Array, jax.Array] | None] | None = None,
               return_features: bool = False):
    """w_plus: (B, num_ws, style_dim).

    scale_shift: optional sequence of one (γ, β) pair or None per styled conv
    layer; γ, β broadcast against that layer's output (B, H, W, C). The layer
    output S− becomes S+ = γ ⊙ S− + β before it is passed on (VPGAN, paper 000
    Eq. 4: "calibrate the output feature from the i-th StyleGAN layer").
    Returns the image (float32, B, H, W, 3), and with `return_features` also
    the tuple of every styled layer's (calibrated) output.
    """
    _check_channels(self.resolution, self.channels)
    layers = num_synthesis_layers(self.resolution)
    if w_plus.ndim != 3 or w_plus.shape[1] != num_ws(self.resolution):
      raise ValueError(f"w_plus has shape {w_plus.shape}; expected (batch, {num_ws(self.resolution)}, style_dim).")
    if scale_shift is not None and len(scale_shift) != layers:
      raise ValueError(f"scale_shift has {len(scale_shift)} entries; expected one per styled layer ({layers}).")
    batch = w_plus.shape[0]
    constant = self.param("constant", nn.initializers.normal(1.0), (4, 4, self.channels[0]))
    x = jnp.broadcast_to(constant.astype(self.dtype), (batch, *constant.shape))
    features = []

    def styled(index, x, features_out, upsample):
      x = StyledConv(features_out, upsample=upsample, dtype=self.dtype, name=f"layer_{index}")(
          x, w_plus[:, index], noise_mode)
      if scale_shift is not None and scale_shift[index] is not None:
        gamma, beta = scale_shift[index]
        x = gamma.astype(x.dtype) * x + beta.astype(x.dtype)
      features.append(x)
      return x

    x = styled(0, x, self.channels[0], upsample=False)
    skip = ToRGB(dtype=self.dtype, name="to_rgb_0")(x, w_plus[:, 1], None)
    for level, features_out in enumerate(self.channels[1:], start=1):
      x = styled(2 * level - 1, x, features_out, upsample=True)
      x = styled(2 * level, x, features_out, upsample=False)
      skip = ToRGB(dtype=self.dtype, name=f"to_rgb_{level}")(x, w_plus[:, 2 * level + 1], skip)
    image = skip.astype(jnp.float32)
    return (image, tuple(features)) if return_features else image


def truncate(w: jax.Array, w_avg: jax.Array, truncation: float | jax.Array) -> jax.Array:
  """The truncation trick: w_avg + ψ (w - w_avg) (StyleGAN §B)."""
  if isinstance(truncation, (int, float)) and truncation == 1:
    return w
  return w_avg + truncation * (w - w_avg)


def mix_styles(w: jax.Array, w_mix: jax.Array, crossover: jax.Array, length: int) -> jax.Array:
  """W+ that reads w before `crossover` (per sample, (B,) ints) and w_mix from it on (style mixing)."""
  layer = jnp.arange(length)[None, :, None]
  crossover = jnp.broadcast_to(jnp.asarray(crossover), (w.shape[0],))[:, None, None]
  return jnp.where(layer < crossover, w[:, None, :], w_mix[:, None, :])


class Generator(nn.Module):
  """Mapping + synthesis. Call with z (B, style_dim), a w (B, style_dim) or a W+ (B, num_ws, style_dim)."""
  resolution: int = 256
  channels: Sequence[int] = channel_table(256)
  style_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  dtype: Any = jnp.float32

  def setup(self):
    self.mapping = Mapping(self.style_dim, self.mapping_layers, self.mapping_lr_multiplier)
    self.synthesis = Synthesis(self.resolution, tuple(self.channels), dtype=self.dtype)

  @property
  def num_ws(self) -> int:
    return num_ws(self.resolution)

  def map(self, z: jax.Array, update_w_avg: bool = False) -> jax.Array:
    return self.mapping(z, update_w_avg=update_w_avg)

  def __call__(self, latents: jax.Array, *, input_is_w: bool = False, truncation: float = 1.0,
               mix_latents: jax.Array | None = None, crossover: jax.Array | None = None,
               noise_mode: str = "const", scale_shift=None, return_features: bool = False,
               update_w_avg: bool = False):
    """Images in about [-1, 1], (B, resolution, resolution, 3) float32.

    latents: z (B, style_dim), or with `input_is_w` a w (B, style_dim) or W+
    (B, num_ws, style_dim). mix_latents + crossover: style mixing, layers from
    `crossover` on read the second code. truncation ψ pulls every w towards
    the tracked `w_avg`. With `return_features`: (image, {"w_plus", "features"}).
    """
    w = latents if input_is_w else self.mapping(latents, update_w_avg=update_w_avg)
    if mix_latents is not None:
      w_mix = mix_latents if input_is_w else self.mapping(mix_latents)
    if not (isinstance(truncation, (int, float)) and truncation == 1):
      w_avg = self.mapping.variables["buffers"]["w_avg"]
      w = truncate(w, w_avg, truncation)
      if mix_latents is not None:
        w_mix = truncate(w_mix, w_avg, truncation)
    if w.ndim == 2:
      if mix_latents is not None:
        w_plus = mix_styles(w, w_mix, crossover, self.num_ws)
      else:
        w_plus = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, w.shape[1]))
    else:
      w_plus = w
    out = self.synthesis(w_plus, noise_mode=noise_mode, scale_shift=scale_shift,
                         return_features=return_features)
    if return_features:
      image, features = out
      return image, {"w_plus": w_plus, "features": features}
    return out


class DiscriminatorBlock(nn.Module):
  """Residual block: conv 3×3, blur + stride-2 conv 3×3, 1×1 blur-downsampled skip, sum / √2."""
  in_features: int
  out_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = EqualConv(self.in_features, 3, dtype=self.dtype, name="conv_0")(x)
    out = EqualConv(self.out_features, 3, downsample=True, dtype=self.dtype, name="conv_1")(out)
    skip = EqualConv(self.out_features, 1, downsample=True, use_bias=False, activation=False,
                     dtype=self.dtype, name="skip")(x)
    return (out + skip) * jnp.asarray(1 / math.sqrt(2), out.dtype)


class Discriminator(nn.Module):
  """Residual discriminator (StyleGAN2 Fig. 7c) with minibatch stddev; returns logits (B,)."""
  resolution: int = 256
  channels: Sequence[int] = channel_table(256)
  stddev_group: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    _check_channels(self.resolution, self.channels)
    if images.shape[1:] != (self.resolution, self.resolution, 3):
      raise ValueError(f"Discriminator input has shape {images.shape}; expected "
                       f"(batch, {self.resolution}, {self.resolution}, 3).")
    channels = tuple(self.channels)
    x = EqualConv(channels[-1], 1, dtype=self.dtype, name="from_rgb")(images.astype(self.dtype))
    for level in range(len(channels) - 1, 0, -1):
      x = DiscriminatorBlock(channels[level], channels[level - 1], dtype=self.dtype,
                             name=f"block_{4 * 2**level}")(x)
    x = minibatch_stddev(x, self.stddev_group)
    x = EqualConv(channels[0], 3, dtype=self.dtype, name="final_conv")(x)
    # Flatten in PyTorch's channel-major order so converted dense weights line up.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = EqualDense(channels[0], activation=True, dtype=self.dtype, name="final_dense")(x)
    x = EqualDense(1, dtype=self.dtype, name="output_dense")(x)
    return x[:, 0].astype(jnp.float32)
