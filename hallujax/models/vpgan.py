"""VPGAN's networks (paper 000, §3.1): an MSCA UNet encoder that drives a frozen StyleGAN2.

``VPGANEncoder`` maps a thermal face (input_size², 1 or 3 channels) to

* ``w``: the W+ offsets of Eq. 1, w = MLP(UNet_E(I_TH)), one style vector per
  StyleGAN layer (``w_per_layer=True``, the default; pSp-style W+), or one w
  repeated over all layers. They are added to the prior's tracked mean
  ``w_avg`` (see ``synthesize``), so an untrained head queries the prior's
  mean face. The paper says only "global style codes w = MLP(UNet_E(I_TH))".
* ``features``: F_i from every decoder stage, 4² … output_size² (Eq. 2).
* ``scale_shift``: per styled StyleGAN layer i, γ_i = 1 + conv1×1(F) and
  β_i = conv1×1(F), F the decoder feature at that layer's resolution (Eq. 4:
  "pixel-wise scale and shift parameters γi and βi from the i-th multi-scale
  feature Fi via a simple 1 × 1 convolution layer"). Both convolutions start
  at zero, so before training S⁺ = S⁻ and the output is the prior's own image
  (the paper gives no initialization; this one starts from the prior).

The UNet has log2(input_size/4) stride-2 stages down to 4² (paper §4.1: 5 from
128²) and log2(output_size/4) ×2 stages up (7 to 512²). Decoder level k at
resolution r ≤ input_size merges the encoder through

* MSCA (Eq. 3), ``out_i = MSCA(E_1↑, …, E_i, …, E_n↓)``: every encoder scale
  E_j is projected by a 1×1 convolution to the level's width (at its own
  resolution: projection and resizing are both linear, so the order does not
  change the result and the small maps are cheaper), resized to r (bilinear up,
  area average down), and the scales are merged by a per-pixel softmax
  attention over scales whose logits are a 1×1 convolution of the stacked
  projections. The paper says only "adaptively merging multi-scale features";
  per-pixel attention is our reading of "adaptively".
* or, with ``msca=False`` (Table 5, "w/o MSCA"), the plain UNet skip: the
  encoder feature of the same resolution.

Every layer has StyleGAN2's equalized learning rate (hallujax.nn.stylegan_layers:
weights drawn N(0, 1) and scaled by 1/√fan_in at run time, leaky ReLU 0.2 with
gain √2). The paper trains with Adam at 2e-3, StyleGAN2's rate, which is tuned
for such layers; with plain convolutions that rate made the smoke run diverge
(measured: generator loss 1.5e7 at step 175 with an in-project prior).

Decoder levels above the input resolution (256², 512² in the paper) have no
encoder scale of their own and take only the upsampled decoder path.

``rgb_output=True`` adds a 1×1 convolution to RGB on the last decoder feature:
the trainable U-shaped generator of Table 5's "w/o VP" (the paper: "removing
the pre-trained decoder, resulting in a U-Shaped generator").
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hallujax.models.stylegan2 import Generator, num_synthesis_layers, num_ws
from hallujax.nn.stylegan_layers import EqualConv, EqualDense

Dtype = Any


def levels_between(low: int, high: int) -> int:
  """Number of ×2 steps from low² to high² (both powers of two, low ≤ high)."""
  for size, name in ((low, "low"), (high, "high")):
    if size < 4 or size & (size - 1):
      raise ValueError(f"VPGAN sizes must be powers of two ≥ 4; got {name}={size}.")
  if high < low:
    raise ValueError(f"VPGAN needs {low} ≤ {high}.")
  return int(math.log2(high // low))


def layer_level(layer: int) -> int:
  """The resolution level (0 = 4², 1 = 8², …) of StyleGAN2 styled layer `layer`."""
  return (layer + 1) // 2


def resize_to(x: jax.Array, size: int) -> jax.Array:
  """Bilinear ×2^k upsampling or area-average ÷2^k downsampling of square NHWC maps."""
  current = x.shape[1]
  if current == size:
    return x
  if current < size:
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
  factor = current // size
  return nn.avg_pool(x, (factor, factor), strides=(factor, factor))


class ZeroInitLinear(nn.Module):
  """Equalized-lr linear map on the last axis (a 1×1 convolution on NHWC) whose weights start at zero."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.zeros, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    weight = (kernel / math.sqrt(x.shape[-1])).astype(self.dtype)
    return x.astype(self.dtype) @ weight + bias.astype(self.dtype)


class ConvBlock(nn.Module):
  """Two 3×3 equalized-lr convolutions with leaky ReLU; the first blurred and strided with `downsample`."""
  features: int
  downsample: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = EqualConv(self.features, 3, downsample=self.downsample, dtype=self.dtype, name="conv_0")(x)
    return EqualConv(self.features, 3, dtype=self.dtype, name="conv_1")(x)


class MSCA(nn.Module):
  """Multi-Scale Contexts Aggregation (Eq. 3): every encoder scale, resized to `size`, merged by attention."""
  features: int
  size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, encoder_features: Sequence[jax.Array]) -> jax.Array:
    projected = [resize_to(EqualConv(self.features, 1, activation=False, dtype=self.dtype,
                                     name=f"project_{j}")(e), self.size)
                 for j, e in enumerate(encoder_features)]
    stacked = jnp.stack(projected, axis=-2)                                  # (B, r, r, scales, C)
    logits = EqualConv(len(projected), 1, activation=False, dtype=self.dtype, name="attention")(
        jnp.concatenate(projected, axis=-1))                                 # (B, r, r, scales)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(stacked.dtype)
    return jnp.sum(stacked * weights[..., None], axis=-2)


class VPGANEncoder(nn.Module):
  """MSCA UNet (§3.1) returning W+ offsets, decoder features and γ/β per styled layer (see module doc).

  ``encoder_channels``: widths at input_size², input_size/2², …, 4² (levels_between(4, input_size) + 1).
  ``decoder_channels``: widths at 4², 8², …, output_size² (levels_between(4, output_size) + 1).
  ``prior_channels``: the prior's StyleGAN2 channel table (4² … output_size²), or () for no prior.
  """
  input_size: int = 128
  output_size: int = 512
  encoder_channels: Sequence[int] = (64, 128, 256, 512, 512, 512)
  decoder_channels: Sequence[int] = (512, 512, 512, 256, 128, 64, 32, 32)
  msca: bool = True
  prior_channels: Sequence[int] = ()
  style_dim: int = 512
  w_per_layer: bool = True
  style_hidden: int = 512
  rgb_output: bool = False
  dtype: Dtype = jnp.float32

  def check(self) -> None:
    down = levels_between(4, self.input_size)
    up = levels_between(4, self.output_size)
    if self.input_size > self.output_size:
      raise ValueError(f"VPGAN input_size={self.input_size} exceeds output_size={self.output_size}.")
    if len(self.encoder_channels) != down + 1:
      raise ValueError(f"encoder_channels has {len(self.encoder_channels)} widths; input {self.input_size}² "
                       f"needs {down + 1} (at {self.input_size}², …, 4²).")
    if len(self.decoder_channels) != up + 1:
      raise ValueError(f"decoder_channels has {len(self.decoder_channels)} widths; output {self.output_size}² "
                       f"needs {up + 1} (at 4², …, {self.output_size}²).")
    if self.prior_channels and len(self.prior_channels) != up + 1:
      raise ValueError(f"prior_channels has {len(self.prior_channels)} widths; a {self.output_size}² StyleGAN2 "
                       f"has {up + 1} (4², …, {self.output_size}²).")
    if not self.prior_channels and not self.rgb_output:
      raise ValueError("VPGANEncoder needs prior_channels (VPGAN) or rgb_output=True (w/o VP).")

  @nn.compact
  def __call__(self, thermal: jax.Array) -> dict[str, Any]:
    """thermal: (B, input_size, input_size, C) in [-1, 1]."""
    self.check()
    if thermal.shape[1:3] != (self.input_size, self.input_size):
      raise ValueError(f"VPGAN input has shape {thermal.shape}; expected (batch, {self.input_size}, "
                       f"{self.input_size}, channels).")
    x = thermal.astype(self.dtype)
    # Encoder: E_0 at input_size², then one stride-2 stage per level down to 4².
    encoder = [EqualConv(self.encoder_channels[0], 3, dtype=self.dtype, name="stem")(x)]
    for j, width in enumerate(self.encoder_channels[1:], start=1):
      encoder.append(ConvBlock(width, downsample=True, dtype=self.dtype, name=f"down_{j}")(encoder[-1]))
    by_size = {e.shape[1]: e for e in encoder}

    out: dict[str, Any] = {"encoder_features": tuple(encoder)}
    if self.prior_channels:
      out["w"] = self.style_head(encoder[-1])

    # Decoder: level k at 4·2^k; levels that have an encoder scale merge it (MSCA or skip).
    features = []
    for k, width in enumerate(self.decoder_channels):
      size = 4 * 2**k
      parts = []
      if k > 0:
        up = jax.image.resize(features[-1], (x.shape[0], size, size, features[-1].shape[-1]), "nearest")
        parts.append(EqualConv(width, 3, dtype=self.dtype, name=f"up_{k}")(up))
      if size in by_size:
        parts.append(MSCA(width, size, dtype=self.dtype, name=f"msca_{k}")(encoder) if self.msca
                     else by_size[size])
      features.append(ConvBlock(width, dtype=self.dtype, name=f"decode_{k}")(jnp.concatenate(parts, axis=-1)))
    out["features"] = tuple(features)

    if self.prior_channels:
      scale_shift = []
      for layer in range(num_synthesis_layers(self.output_size)):
        level = layer_level(layer)
        gamma = ZeroInitLinear(self.prior_channels[level], dtype=self.dtype, name=f"gamma_{layer}")(features[level])
        beta = ZeroInitLinear(self.prior_channels[level], dtype=self.dtype, name=f"beta_{layer}")(features[level])
        scale_shift.append((1.0 + gamma, beta))
      out["scale_shift"] = tuple(scale_shift)
    if self.rgb_output:
      out["image"] = EqualConv(3, 1, activation=False, dtype=self.dtype, name="to_rgb")(
          features[-1]).astype(jnp.float32)
    return out

  def style_head(self, bottleneck: jax.Array) -> jax.Array:
    """Eq. 1: w = MLP(UNet_E(I_TH)) on the 4² bottleneck → (B, num_ws, style_dim) offsets from w_avg."""
    length = num_ws(self.output_size)
    h = bottleneck.reshape(bottleneck.shape[0], -1)
    h = EqualDense(self.style_hidden, activation=True, dtype=self.dtype, name="style_hidden")(h)
    # Zero-initialized: an untrained encoder asks the prior for its mean face (w = w_avg).
    count = length if self.w_per_layer else 1
    w = ZeroInitLinear(count * self.style_dim, dtype=self.dtype, name="style_out")(h).astype(jnp.float32)
    w = w.reshape(h.shape[0], count, self.style_dim)
    return jnp.broadcast_to(w, (h.shape[0], length, self.style_dim))


def prior_w_avg(prior_variables: dict) -> jax.Array:
  """The prior's tracked mean w (zeros for a prior that never tracked one)."""
  return prior_variables["buffers"]["mapping"]["w_avg"]


def synthesize(prior: Generator, prior_variables: dict, encoded: dict, *, return_features: bool = False):
  """Eq. 2: I_VIS = S(w, {F_i}), S the frozen synthesis with S⁺_i = γ_i ⊙ S⁻_i + β_i after layer i (Eq. 4).

  W+ = w_avg + the encoder's offsets. Noise maps are the prior's fixed
  buffers ("const"): the decoder features play the role of noise injection
  (Fig. 1, "B plays a similar role as that of noise injection"), so the
  output is a deterministic function of the input.
  """
  w_plus = prior_w_avg(prior_variables)[None, None, :] + encoded["w"]
  return prior.apply(prior_variables, w_plus, input_is_w=True, noise_mode="const",
                     scale_shift=list(encoded["scale_shift"]), return_features=return_features)
