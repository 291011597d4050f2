"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Layouts are NHWC; convolution kernels are HWIO (kh, kw, in, out) and dense
kernels (in, out). Parameters are stored unscaled, as N(0, 1) draws, and the
equalized learning-rate constant is applied at every call (StyleGAN §B,
"equalized learning rate"), so a PyTorch checkpoint maps onto them by a
transpose. The math follows rosinality's `stylegan2-pytorch` (model.py,
op/upfirdn2d.py, op/fused_act.py) so that its checkpoints give the same images.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

BLUR_KERNEL = (1, 3, 3, 1)
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)
DEMODULATION_EPSILON = 1e-8
_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def fused_leaky_relu(x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """leaky_relu(x + bias, 0.2) · √2: the bias-activation-gain of every StyleGAN2 layer."""
  if bias is not None:
    x = x + bias.astype(x.dtype)
  return jnp.where(x >= 0, x, x * LEAKY_SLOPE) * jnp.asarray(LEAKY_GAIN, x.dtype)


def pixel_norm(z: jax.Array, epsilon: float = 1e-8) -> jax.Array:
  """Normalize each latent to unit mean square (StyleGAN mapping network input)."""
  z = z.astype(jnp.float32)
  return z * lax.rsqrt(jnp.mean(jnp.square(z), axis=-1, keepdims=True) + epsilon)


def make_blur_kernel(taps: Sequence[float] = BLUR_KERNEL, gain: float = 1.0) -> np.ndarray:
  """The separable 2-D FIR kernel outer(taps, taps), normalized to sum `gain`."""
  taps = np.asarray(taps, dtype=np.float32)
  kernel = np.outer(taps, taps)
  return kernel / kernel.sum() * gain


def upfirdn2d(x: jax.Array, kernel: np.ndarray, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> jax.Array:
  """Upsample by zero insertion, pad, convolve with `kernel`, keep every `down`-th pixel.

  Same semantics as rosinality's `upfirdn2d_native` (true convolution; negative
  pads crop), applied per channel on NHWC input.

  Every StyleGAN2 kernel is separable (outer(taps, taps)), so the filter runs
  as two 1-D passes, each a weighted sum of shifted (and, for `down`, strided)
  slices, and upsampling is polyphase: each of the `up` output phases sums only
  the taps that land on real samples, so no inserted zero is ever multiplied.
  On XLA:CPU this is several times faster than the per-channel grouped
  convolution (`upfirdn2d_grouped`) in value and gradient (issue 17; measured
  numbers in docs/benchmarks.md), and it is the same sum. A kernel that is
  not separable takes the grouped form.
  """
  factors = separable_factors(kernel)
  if factors is None:
    return upfirdn2d_grouped(x, kernel, up, down, pad)
  column, row = factors
  x = _upfirdn_1d(x, column, up, down, pad, axis=1)
  return _upfirdn_1d(x, row, up, down, pad, axis=2)


def separable_factors(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """(column, row) with outer(column, row) == kernel (to float32 rounding), or None if rank > 1."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 2 or not np.any(kernel):
    return None
  pivot_row, pivot_column = np.unravel_index(np.argmax(np.abs(kernel)), kernel.shape)
  column = kernel[:, pivot_column]
  row = kernel[pivot_row, :] / kernel[pivot_row, pivot_column]
  if not np.allclose(np.outer(column, row), kernel, rtol=1e-6, atol=1e-7 * np.abs(kernel).max()):
    return None
  return column, row


def _shifted(x: jax.Array, start: int, count: int, stride: int, axis: int) -> jax.Array:
  """x[start : start + stride·(count-1) + 1 : stride] along `axis`."""
  starts = [0] * x.ndim
  limits = list(x.shape)
  strides = [1] * x.ndim
  starts[axis], limits[axis], strides[axis] = start, start + stride * (count - 1) + 1, stride
  return lax.slice(x, starts, limits, strides)


def _pad_axis(x: jax.Array, before: int, after: int, axis: int) -> jax.Array:
  """Zero-pad (negative: crop) `axis` of x."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (before, after, 0)
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def _weighted_sum(x: jax.Array, terms: list[tuple[float, int]], count: int, stride: int,
                  axis: int) -> jax.Array:
  """Σ weight · x[start + stride·i], i < count, for (weight, start) in `terms` (zero weights skipped)."""
  total = None
  for weight, start in terms:
    if weight == 0.0:
      continue
    term = _shifted(x, start, count, stride, axis) * jnp.asarray(weight, x.dtype)
    total = term if total is None else total + term
  if total is None:
    return jnp.zeros_like(_shifted(x, 0, count, stride, axis))
  return total


def _upfirdn_1d(x: jax.Array, taps: np.ndarray, up: int, down: int, pad: tuple[int, int],
                axis: int) -> jax.Array:
  """The 1-D upfirdn along `axis`: y[o] = Σ_t f[k-1-t] · u[o·down + t - pad0], u = x with up-1 zeros after each sample.

  Output length (n·up + pad0 + pad1 - k) // down + 1, as the native op.
  """
  n, k = x.shape[axis], len(taps)
  pad0, pad1 = pad
  length = (n * up + pad0 + pad1 - k) // down + 1
  if length <= 0:
    raise ValueError(f"upfirdn2d: {n} samples, up={up}, down={down}, pad={pad} and a {k}-tap kernel leave "
                     f"no output; expected n·up + pad0 + pad1 ≥ k.")
  correlation = np.asarray(taps, np.float64)[::-1]   # true convolution = correlation with the flipped taps
  if up == 1:
    padded = _pad_axis(x, pad0, pad1, axis)
    return _weighted_sum(padded, [(float(w), t) for t, w in enumerate(correlation)], length, down, axis)
  # Polyphase: output o = up·q + r reads u[up·q + r + t - pad0], a real sample x[q + d] exactly when
  # r + t - pad0 = up·d; the other taps meet inserted zeros and are skipped.
  dense = (length - 1) * down + 1                    # outputs before keeping every `down`-th
  per_phase = -(-dense // up)
  phases = []
  for r in range(up):
    phases.append([(float(w), (r + t - pad0) // up) for t, w in enumerate(correlation)
                   if (r + t - pad0) % up == 0])
  offsets = [d for terms in phases for _, d in terms] or [0]
  before = max(0, -min(offsets))
  after = max(0, per_phase - 1 + max(offsets) - (n - 1))
  padded = _pad_axis(x, before, after, axis)
  outputs = [_weighted_sum(padded, [(w, d + before) for w, d in terms], per_phase, 1, axis)
             for terms in phases]
  stacked = jnp.stack(outputs, axis=axis + 1)        # (..., q, r, ...) -> o = up·q + r
  shape = list(x.shape)
  shape[axis] = per_phase * up
  interleaved = stacked.reshape(shape)
  return _shifted(interleaved, 0, length, down, axis)


def upfirdn2d_grouped(x: jax.Array, kernel: np.ndarray, up: int = 1, down: int = 1,
                      pad: tuple[int, int] = (0, 0)) -> jax.Array:
  """`upfirdn2d` as one depthwise (grouped) convolution of the zero-inserted, padded input.

  The literal form (and the path of non-separable kernels); the tests check
  the separable form against it.
  """
  channels = x.shape[-1]
  pad0, pad1 = pad
  # Interior padding puts up-1 zeros between samples; the extra up-1 at the end
  # makes "one sample followed by up-1 zeros" for every input pixel.
  spatial = (pad0, pad1 + up - 1, up - 1)
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), spatial, spatial, (0, 0, 0)))
  flipped = np.ascontiguousarray(np.asarray(kernel, np.float32)[::-1, ::-1])
  weight = jnp.asarray(np.tile(flipped[:, :, None, None], (1, 1, 1, channels)), x.dtype)
  return lax.conv_general_dilated(
      x, weight, window_strides=(down, down), padding="VALID",
      dimension_numbers=_CONV_DIMENSIONS, feature_group_count=channels)


def upsample_2x(x: jax.Array) -> jax.Array:
  """Blur-upsampling of the ToRGB skip path (rosinality `Upsample`)."""
  factor = 2
  p = len(BLUR_KERNEL) - factor
  return upfirdn2d(x, make_blur_kernel(gain=factor**2), up=factor,
                   pad=((p + 1) // 2 + factor - 1, p // 2))


def blur_before_downsample(x: jax.Array, kernel_size: int) -> jax.Array:
  """The blur in front of a stride-2 convolution of `kernel_size` (rosinality `ConvLayer`)."""
  p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
  return upfirdn2d(x, make_blur_kernel(), pad=((p + 1) // 2, p // 2))


def blur_after_transposed_conv(x: jax.Array, kernel_size: int) -> jax.Array:
  """The blur after a stride-2 transposed convolution (rosinality `ModulatedConv2d(upsample=True)`)."""
  factor = 2
  p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
  return upfirdn2d(x, make_blur_kernel(gain=factor**2),
                   pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv2d(x: jax.Array, weight: jax.Array, stride: int = 1, padding: int = 0,
           groups: int = 1) -> jax.Array:
  """Cross-correlation like torch's conv2d, NHWC / HWIO."""
  return lax.conv_general_dilated(
      x, weight, window_strides=(stride, stride), padding=((padding, padding),) * 2,
      dimension_numbers=_CONV_DIMENSIONS, feature_group_count=groups)


def conv_transpose_2x(x: jax.Array, weight: jax.Array, groups: int = 1) -> jax.Array:
  """torch's conv_transpose2d(stride=2, padding=0) with `weight` given as HWIO (in → out).

  A transposed convolution is the correlation of the zero-dilated input, padded
  by k-1, with the spatially flipped kernel; output size 2n + k - 2.
  """
  k = weight.shape[0]
  return lax.conv_general_dilated(
      x, weight[::-1, ::-1], window_strides=(1, 1), padding=((k - 1, k - 1),) * 2,
      lhs_dilation=(2, 2), dimension_numbers=_CONV_DIMENSIONS, feature_group_count=groups)


def demodulation_scale(weight: jax.Array, style: jax.Array) -> jax.Array:
  """1 / sqrt(Σ_{k,i} (s_i w_{k,i,o})² + ε), per sample and output channel (StyleGAN2 Eq. 3)."""
  weight = weight.astype(jnp.float32)
  style = style.astype(jnp.float32)
  energy = jnp.square(style) @ jnp.sum(jnp.square(weight), axis=(0, 1))  # (B, out)
  return lax.rsqrt(energy + DEMODULATION_EPSILON)


def modulated_conv(x: jax.Array, weight: jax.Array, style: jax.Array, *,
                   demodulate: bool = True, upsample: bool = False) -> jax.Array:
  """Modulated convolution as "scale activations, one shared conv, scale outputs".

  StyleGAN2 Eq. 1-3 modulate the weights per sample, w'_{ijk} = s_i w_{ijk},
  and demodulate them, w'' = w' / sqrt(Σ w'² + ε). Since the convolution is
  linear, conv(x, s ⊙ w) = conv(s ⊙ x, w) and the demodulation is one factor per
  output channel, so we scale the input channels by the style, run a single
  convolution shared by the batch, then scale the output channels (the
  "fused_modconv=False" path of stylegan2-ada-pytorch). Grouped convolutions
  with one group per sample are slow in XLA; `modulated_conv_grouped` keeps the
  per-sample-weight form for the equivalence test.

  x: (B, H, W, in); weight: (k, k, in, out), already multiplied by the
  equalized-lr constant; style: (B, in).
  """
  dtype = x.dtype
  x = x * style.astype(dtype)[:, None, None, :]
  kernel = weight.astype(dtype)
  if upsample:
    out = conv_transpose_2x(x, kernel)
  else:
    out = conv2d(x, kernel, padding=weight.shape[0] // 2)
  if demodulate:
    out = out * demodulation_scale(weight, style).astype(dtype)[:, None, None, :]
  if upsample:
    out = blur_after_transposed_conv(out, weight.shape[0])
  return out


def modulated_conv_grouped(x: jax.Array, weight: jax.Array, style: jax.Array, *,
                           demodulate: bool = True, upsample: bool = False) -> jax.Array:
  """The same modulated convolution with per-sample weights and one conv group per sample.

  The literal form of StyleGAN2 Eq. 1-3 (rosinality's fused path). Used to
  check `modulated_conv`; slower under XLA.
  """
  batch, height, width, in_channels = x.shape
  k, _, _, out_channels = weight.shape
  weights = weight[None] * style[:, None, None, :, None]  # (B, k, k, in, out)
  if demodulate:
    scale = lax.rsqrt(jnp.sum(jnp.square(weights), axis=(1, 2, 3)) + DEMODULATION_EPSILON)
    weights = weights * scale[:, None, None, None, :]
  kernel = jnp.transpose(weights, (1, 2, 3, 0, 4)).reshape(k, k, in_channels, batch * out_channels)
  stacked = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, height, width, batch * in_channels)
  if upsample:
    out = conv_transpose_2x(stacked, kernel, groups=batch)
  else:
    out = conv2d(stacked, kernel, padding=k // 2, groups=batch)
  out_height, out_width = out.shape[1:3]
  out = jnp.transpose(out.reshape(out_height, out_width, batch, out_channels), (2, 0, 1, 3))
  if upsample:
    out = blur_after_transposed_conv(out, k)
  return out


def minibatch_stddev(x: jax.Array, group_size: int = 4, num_features: int = 1) -> jax.Array:
  """Append the group standard deviation as extra channels (Karras et al. 2018 §3).

  Samples i, i + B/G, i + 2B/G, ... form a group (rosinality's `view(group, -1, ...)`).
  """
  batch, height, width, channels = x.shape
  group = min(batch, group_size)
  if batch % group:
    raise ValueError(f"Minibatch stddev needs the batch ({batch}) divisible by the group size ({group}).")
  y = x.astype(jnp.float32).reshape(group, -1, height, width, num_features, channels // num_features)
  y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)           # (B/G, H, W, F, C/F)
  y = jnp.mean(y, axis=(1, 2, 4))                    # (B/G, F)
  y = jnp.tile(y[:, None, None, :], (group, height, width, 1)).astype(x.dtype)
  return jnp.concatenate([x, y], axis=-1)


def _normal_init(scale: float = 1.0):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) * scale
  return init


class EqualDense(nn.Module):
  """Equalized-lr linear layer, optional fused leaky ReLU (rosinality `EqualLinear`).

  Weight N(0, 1/lr_multiplier²), used as W · lr_multiplier/√fan_in; bias used as b · lr_multiplier.
  """
  features: int
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  activation: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    kernel = self.param("kernel", _normal_init(1.0 / self.lr_multiplier), (in_features, self.features))
    bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
    scale = self.lr_multiplier / math.sqrt(in_features)
    y = x.astype(self.dtype) @ (kernel * scale).astype(self.dtype)
    bias = bias * self.lr_multiplier
    if self.activation:
      return fused_leaky_relu(y, bias)
    return y + bias.astype(self.dtype)


class EqualConv(nn.Module):
  """Equalized-lr convolution (+ blur and stride 2 when downsampling), optional fused leaky ReLU.

  rosinality `ConvLayer`: [Blur] → EqualConv2d → FusedLeakyReLU. The bias is
  added before the activation either way, so one "bias" parameter covers both
  `EqualConv2d.bias` and `FusedLeakyReLU.bias`.
  """
  features: int
  kernel_size: int
  downsample: bool = False
  use_bias: bool = True
  activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    k = self.kernel_size
    kernel = self.param("kernel", _normal_init(), (k, k, in_features, self.features))
    weight = (kernel / math.sqrt(in_features * k * k)).astype(self.dtype)
    x = x.astype(self.dtype)
    if self.downsample:
      y = conv2d(blur_before_downsample(x, k), weight, stride=2)
    else:
      y = conv2d(x, weight, padding=k // 2)
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    if self.activation:
      return fused_leaky_relu(y, bias)
    return y if bias is None else y + bias.astype(self.dtype)


class ModulatedConv(nn.Module):
  """Style-modulated convolution: affine style (bias 1) + weight + (de)modulation (StyleGAN2 §2.2)."""
  features: int
  kernel_size: int
  demodulate: bool = True
  upsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    k = self.kernel_size
    # The affine "A" of StyleGAN2 Fig. 2: style s = A(w), initialized to 1.
    style = EqualDense(in_features, bias_init=1.0, name="modulation")(w.astype(jnp.float32))
    kernel = self.param("kernel", _normal_init(), (k, k, in_features, self.features))
    weight = kernel / math.sqrt(in_features * k * k)
    return modulated_conv(x.astype(self.dtype), weight, style,
                          demodulate=self.demodulate, upsample=self.upsample)
