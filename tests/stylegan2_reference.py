"""A compact PyTorch StyleGAN2 with rosinality's state-dict key names, pure torch ops.

Used only as the reference in tests/test_stylegan2.py: it has the module tree
of rosinality's `stylegan2-pytorch` model.py (so its `state_dict()` has the
same keys and shapes as a real checkpoint's `g_ema` / `d`), uses the fused
per-sample-weight modulated convolution and a native upfirdn2d (no CUDA
extension), and takes an explicit channel table so tests can be tiny.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def make_kernel(taps):
  k = torch.tensor(taps, dtype=torch.float32)
  k = k[None, :] * k[:, None]
  return k / k.sum()


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
  """rosinality's upfirdn2d_native, NCHW, same up/down/pad in both directions."""
  batch, channels, height, width = x.shape
  pad0, pad1 = pad
  out = x.reshape(-1, height, 1, width, 1)
  out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
  out = out.reshape(-1, 1, height * up, width * up)
  out = F.pad(out, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
  out = out[:, :, max(-pad0, 0):out.shape[2] - max(-pad1, 0), max(-pad0, 0):out.shape[3] - max(-pad1, 0)]
  weight = torch.flip(kernel, [0, 1])[None, None].to(out.dtype)
  out = F.conv2d(out, weight)
  out = out[:, :, ::down, ::down]
  return out.reshape(batch, channels, out.shape[2], out.shape[3])


def fused_leaky_relu(x, bias):
  shape = [1, -1] + [1] * (x.ndim - 2)
  return F.leaky_relu(x + bias.view(shape), 0.2) * math.sqrt(2)


class FusedLeakyReLU(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.bias = nn.Parameter(torch.randn(channels) * 0.1)

  def forward(self, x):
    return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
  def forward(self, x):
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class Upsample(nn.Module):
  def __init__(self, taps=(1, 3, 3, 1)):
    super().__init__()
    self.register_buffer("kernel", make_kernel(taps) * 4)
    p = len(taps) - 2
    self.pad = ((p + 1) // 2 + 1, p // 2)

  def forward(self, x):
    return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class Blur(nn.Module):
  def __init__(self, taps, pad, upsample_factor=1):
    super().__init__()
    self.register_buffer("kernel", make_kernel(taps) * upsample_factor**2)
    self.pad = pad

  def forward(self, x):
    return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
  def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
    self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
    self.stride, self.padding = stride, padding
    self.bias = nn.Parameter(torch.randn(out_channels) * 0.1) if bias else None

  def forward(self, x):
    return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
  def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=None):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
    self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)) + torch.randn(out_dim) * 0.1)
    self.activation = activation
    self.scale = lr_mul / math.sqrt(in_dim)
    self.lr_mul = lr_mul

  def forward(self, x):
    out = F.linear(x, self.weight * self.scale)
    if self.activation:
      return fused_leaky_relu(out, self.bias * self.lr_mul)
    return out + self.bias * self.lr_mul


class ModulatedConv2d(nn.Module):
  def __init__(self, in_channels, out_channels, kernel_size, style_dim, demodulate=True, upsample=False):
    super().__init__()
    self.kernel_size, self.in_channels, self.out_channels = kernel_size, in_channels, out_channels
    self.upsample, self.demodulate = upsample, demodulate
    if upsample:
      p = (4 - 2) - (kernel_size - 1)
      self.blur = Blur((1, 3, 3, 1), pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
    self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
    self.padding = kernel_size // 2
    self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
    self.modulation = EqualLinear(style_dim, in_channels, bias_init=1)

  def forward(self, x, style):
    batch, in_channels, height, width = x.shape
    k = self.kernel_size
    style = self.modulation(style).view(batch, 1, in_channels, 1, 1)
    weight = self.scale * self.weight * style
    if self.demodulate:
      demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
      weight = weight * demod.view(batch, self.out_channels, 1, 1, 1)
    x = x.reshape(1, batch * in_channels, height, width)
    if self.upsample:
      weight = weight.transpose(1, 2).reshape(batch * in_channels, self.out_channels, k, k)
      out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
      out = out.view(batch, self.out_channels, out.shape[2], out.shape[3])
      return self.blur(out)
    weight = weight.view(batch * self.out_channels, in_channels, k, k)
    out = F.conv2d(x, weight, padding=self.padding, groups=batch)
    return out.view(batch, self.out_channels, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
  def __init__(self):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(1) * 0.1)

  def forward(self, image, noise):
    return image + self.weight * noise


class ConstantInput(nn.Module):
  def __init__(self, channels, size=4):
    super().__init__()
    self.input = nn.Parameter(torch.randn(1, channels, size, size))

  def forward(self, batch):
    return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
  def __init__(self, in_channels, out_channels, kernel_size, style_dim, upsample=False):
    super().__init__()
    self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, upsample=upsample)
    self.noise = NoiseInjection()
    self.activate = FusedLeakyReLU(out_channels)

  def forward(self, x, style, noise):
    return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
  def __init__(self, in_channels, style_dim, upsample=True):
    super().__init__()
    if upsample:
      self.upsample = Upsample()
    self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
    self.bias = nn.Parameter(torch.randn(1, 3, 1, 1) * 0.1)

  def forward(self, x, style, skip=None):
    out = self.conv(x, style) + self.bias
    if skip is not None:
      out = out + self.upsample(skip)
    return out


class Generator(nn.Module):
  """channels: {resolution: channels} for 4, 8, ..., size (rosinality's table or a tiny one)."""

  def __init__(self, size, style_dim, n_mlp, channels, lr_mlp=0.01):
    super().__init__()
    self.size, self.style_dim = size, style_dim
    self.style = nn.Sequential(PixelNorm(), *[
        EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
    self.channels = channels
    self.input = ConstantInput(channels[4])
    self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim)
    self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
    self.log_size = int(math.log2(size))
    self.num_layers = (self.log_size - 2) * 2 + 1
    self.convs, self.to_rgbs, self.noises = nn.ModuleList(), nn.ModuleList(), nn.Module()
    for layer in range(self.num_layers):
      resolution = 2 ** ((layer + 5) // 2)
      self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, resolution, resolution))
    in_channels = channels[4]
    for i in range(3, self.log_size + 1):
      out_channels = channels[2**i]
      self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, upsample=True))
      self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim))
      self.to_rgbs.append(ToRGB(out_channels, style_dim))
      in_channels = out_channels
    self.n_latent = self.log_size * 2 - 2

  def forward(self, z, truncation=1.0, truncation_latent=None, input_is_latent=False):
    """Fixed noise buffers (randomize_noise=False); one style, no mixing."""
    w = z if input_is_latent else self.style(z)
    if truncation < 1:
      w = truncation_latent + truncation * (w - truncation_latent)
    latent = w.unsqueeze(1).repeat(1, self.n_latent, 1) if w.ndim == 2 else w
    noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
    out = self.input(latent.shape[0])
    out = self.conv1(out, latent[:, 0], noise[0])
    skip = self.to_rgb1(out, latent[:, 1])
    i = 1
    for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                    noise[2::2], self.to_rgbs):
      out = conv1(out, latent[:, i], noise1)
      out = conv2(out, latent[:, i + 1], noise2)
      skip = to_rgb(out, latent[:, i + 2], skip)
      i += 2
    return skip


class ConvLayer(nn.Sequential):
  def __init__(self, in_channels, out_channels, kernel_size, downsample=False, bias=True, activate=True):
    layers = []
    if downsample:
      p = (4 - 2) + (kernel_size - 1)
      layers.append(Blur((1, 3, 3, 1), pad=((p + 1) // 2, p // 2)))
      stride, padding = 2, 0
    else:
      stride, padding = 1, kernel_size // 2
    layers.append(EqualConv2d(in_channels, out_channels, kernel_size, padding=padding, stride=stride,
                              bias=bias and not activate))
    if activate:
      layers.append(FusedLeakyReLU(out_channels))
    super().__init__(*layers)


class ResBlock(nn.Module):
  def __init__(self, in_channels, out_channels):
    super().__init__()
    self.conv1 = ConvLayer(in_channels, in_channels, 3)
    self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
    self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, activate=False, bias=False)

  def forward(self, x):
    return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
  def __init__(self, size, channels):
    super().__init__()
    convs = [ConvLayer(3, channels[size], 1)]
    log_size = int(math.log2(size))
    in_channels = channels[size]
    for i in range(log_size, 2, -1):
      out_channels = channels[2 ** (i - 1)]
      convs.append(ResBlock(in_channels, out_channels))
      in_channels = out_channels
    self.convs = nn.Sequential(*convs)
    self.stddev_group, self.stddev_feat = 4, 1
    self.final_conv = ConvLayer(in_channels + 1, channels[4], 3)
    self.final_linear = nn.Sequential(
        EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
        EqualLinear(channels[4], 1))

  def forward(self, x):
    out = self.convs(x)
    batch, channel, height, width = out.shape
    group = min(batch, self.stddev_group)
    stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
    stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
    stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
    stddev = stddev.repeat(group, 1, height, width)
    out = self.final_conv(torch.cat([out, stddev], 1))
    return self.final_linear(out.view(batch, -1))
