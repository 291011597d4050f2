"""PyTorch side of the StyleGAN2 side-by-side benchmark (issue 17). NOT part of hallujax's runtime.

    python -m hallujax.benchmark --suite torch [--torch_config configs/stylegan2.py:smoke] [--steps 5]
    python -m hallujax.tools.torch_reference --config configs/stylegan2.py:smoke --steps 5

A compact pure-PyTorch StyleGAN2 (rosinality's module structure, as in
tests/stylegan2_reference.py, rewritten here so the library never imports from
tests/) and the same train step as hallujax's "plain" step
(hallujax.methods.stylegan2.train_step without lazy regularizers): one
discriminator update on the non-saturating logistic loss, one generator update
with style mixing and per-pixel noise, the tracked w_avg and the generator EMA,
Adam with the lazy-regularization correction. Same channel table, resolution,
style size, mapping depth and batch as the hallujax config.

The modulated convolution takes stylegan2-ada-pytorch's training path
(fused_modconv=False: scale the activations, one shared convolution, scale the
outputs; the same math hallujax uses) and the FIR filters its reference
upfirdn2d (two depthwise 1-D convolutions for a separable kernel) — the
fastest pure-PyTorch paths; `modulation="grouped"` takes rosinality's
per-sample grouped convolution instead.

The hallujax step, the PyTorch eager step and the `torch.compile`d step run
interleaved in one process on the same device; the report gives each one's
median and hallujax's speed-up over each (PyTorch time / hallujax time).
torch is imported only when this module's functions run (it is the "torch"
extra, not a dependency).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from typing import Callable

from hallujax import errors

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def torch_modules():
  """torch, nn, F: imported here so that importing this file needs no torch.

  On a CPU host with more runnable tasks than cores, OpenMP's default active
  waiting makes PyTorch's threads spin against each other and the other
  processes: here the smoke step took 3.3-8.9 s with it and 0.42 s with
  OMP_WAIT_POLICY=PASSIVE (0.34 s on one thread). So under load, unless the
  user chose a policy, it is set to PASSIVE before torch starts OpenMP; the
  report records the policy.
  """
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
  if "torch" not in sys.modules and load > (os.cpu_count() or 1):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  try:
    import torch
    from torch import nn
    from torch.nn import functional as F
  except ImportError as error:
    raise ImportError("The PyTorch side of the benchmark needs torch (pip install 'hallujax[torch]').") from error
  return torch, nn, F


def build(resolution: int, channels: tuple[int, ...], style_dim: int, mapping_layers: int,
          mapping_lr_multiplier: float = 0.01, stddev_group: int = 4, modulation: str = "shared",
          device: str = "cpu"):
  """(generator, discriminator) as torch modules on `device`; channels as hallujax's channel_table (4², 8², …)."""
  torch, nn, F = torch_modules()
  table = {4 * 2**i: c for i, c in enumerate(channels)}
  taps = torch.tensor(BLUR_TAPS)
  taps = taps / taps.sum()

  def upfirdn2d(x, gain: float, up: int = 1, down: int = 1, pad=(0, 0)):
    """stylegan2-ada-pytorch's _upfirdn2d_ref for the separable blur: zero insertion, pad, two depthwise 1-D
    convolutions, stride `down` (true convolution with the symmetric taps, so no flip is needed)."""
    batch, channels_, height, width = x.shape
    if up > 1:
      x = x.reshape(batch, channels_, height, 1, width, 1)
      x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(batch, channels_, height * up, width * up)
    x = F.pad(x, [max(pad[0], 0), max(pad[1], 0), max(pad[0], 0), max(pad[1], 0)])
    x = x[:, :, max(-pad[0], 0):x.shape[2] - max(-pad[1], 0), max(-pad[0], 0):x.shape[3] - max(-pad[1], 0)]
    f = (taps * math.sqrt(gain)).to(x.device, x.dtype)
    f = f[None, None].repeat(channels_, 1, 1)
    x = F.conv2d(x, f.unsqueeze(2), groups=channels_)
    x = F.conv2d(x, f.unsqueeze(3), groups=channels_)
    return x[:, :, ::down, ::down]

  def fused_leaky_relu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * math.sqrt(2)

  class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=False):
      super().__init__()
      self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
      self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
      self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_dim), lr_mul, activation

    def forward(self, x):
      out = F.linear(x, self.weight * self.scale)
      bias = self.bias * self.lr_mul
      return fused_leaky_relu(out, bias) if self.activation else out + bias

  class ModulatedConv(nn.Module):
    def __init__(self, in_channels, out_channels, k, demodulate=True, upsample=False):
      super().__init__()
      self.weight = nn.Parameter(torch.randn(out_channels, in_channels, k, k))
      self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
      self.scale, self.k, self.demodulate, self.upsample = 1 / math.sqrt(in_channels * k * k), k, demodulate, upsample

    def forward(self, x, w):
      batch, in_channels, height, width = x.shape
      style = self.modulation(w)
      weight = self.weight * self.scale
      if modulation == "grouped":
        per_sample = weight[None] * style[:, None, :, None, None]
        if self.demodulate:
          per_sample = per_sample * torch.rsqrt(per_sample.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
        x = x.reshape(1, batch * in_channels, height, width)
        if self.upsample:
          per_sample = per_sample.transpose(1, 2).reshape(batch * in_channels, -1, self.k, self.k)
          out = F.conv_transpose2d(x, per_sample, stride=2, groups=batch)
        else:
          out = F.conv2d(x, per_sample.reshape(-1, in_channels, self.k, self.k), padding=self.k // 2, groups=batch)
        out = out.reshape(batch, -1, out.shape[2], out.shape[3])
      else:   # stylegan2-ada fused_modconv=False
        x = x * style[:, :, None, None]
        if self.upsample:
          out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
          out = F.conv2d(x, weight, padding=self.k // 2)
        if self.demodulate:
          energy = style.pow(2) @ weight.pow(2).sum([2, 3]).t()
          out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None]
      if self.upsample:
        p = (4 - 2) - (self.k - 1)
        out = upfirdn2d(out, 4.0, pad=((p + 1) // 2 + 1, p // 2 + 1))
      return out

  class StyledConv(nn.Module):
    def __init__(self, in_channels, out_channels, upsample=False):
      super().__init__()
      self.conv = ModulatedConv(in_channels, out_channels, 3, upsample=upsample)
      self.noise_strength = nn.Parameter(torch.zeros(()))
      self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w):
      x = self.conv(x, w)
      noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
      return fused_leaky_relu(x + self.noise_strength * noise, self.bias)

  class ToRGB(nn.Module):
    def __init__(self, in_channels):
      super().__init__()
      self.conv = ModulatedConv(in_channels, 3, 1, demodulate=False)
      self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, w, skip):
      out = self.conv(x, w) + self.bias
      if skip is not None:
        out = out + upfirdn2d(skip, 4.0, up=2, pad=(2, 1))
      return out

  class Generator(nn.Module):
    def __init__(self):
      super().__init__()
      self.mapping = nn.ModuleList([EqualLinear(style_dim, style_dim, lr_mul=mapping_lr_multiplier, activation=True)
                                    for _ in range(mapping_layers)])
      self.register_buffer("w_avg", torch.zeros(style_dim))
      self.constant = nn.Parameter(torch.randn(1, table[4], 4, 4))
      self.convs = nn.ModuleList([StyledConv(table[4], table[4])])
      self.to_rgbs = nn.ModuleList([ToRGB(table[4])])
      in_channels = table[4]
      for size in sorted(table)[1:]:
        self.convs.append(StyledConv(in_channels, table[size], upsample=True))
        self.convs.append(StyledConv(table[size], table[size]))
        self.to_rgbs.append(ToRGB(table[size]))
        in_channels = table[size]
      self.num_ws = 2 * int(math.log2(resolution)) - 2

    def map(self, z):
      w = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
      for layer in self.mapping:
        w = layer(w)
      return w

    def synthesize(self, w_plus):
      x = self.constant.repeat(w_plus.shape[0], 1, 1, 1)
      x = self.convs[0](x, w_plus[:, 0])
      skip = self.to_rgbs[0](x, w_plus[:, 1], None)
      for level in range(1, len(self.to_rgbs)):
        x = self.convs[2 * level - 1](x, w_plus[:, 2 * level - 1])
        x = self.convs[2 * level](x, w_plus[:, 2 * level])
        skip = self.to_rgbs[level](x, w_plus[:, 2 * level + 1], skip)
      return skip

  class ConvLayer(nn.Module):
    """[blur] → equalized conv (stride 2 when downsampling) → [bias + leaky ReLU]."""

    def __init__(self, in_channels, out_channels, k, downsample=False, activate=True):
      super().__init__()
      self.weight = nn.Parameter(torch.randn(out_channels, in_channels, k, k))
      self.bias = nn.Parameter(torch.zeros(out_channels)) if activate else None
      self.scale, self.k, self.downsample = 1 / math.sqrt(in_channels * k * k), k, downsample

    def forward(self, x):
      if self.downsample:
        p = 2 + (self.k - 1)
        x = F.conv2d(upfirdn2d(x, 1.0, pad=((p + 1) // 2, p // 2)), self.weight * self.scale, stride=2)
      else:
        x = F.conv2d(x, self.weight * self.scale, padding=self.k // 2)
      return x if self.bias is None else fused_leaky_relu(x, self.bias)

  class ResBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
      super().__init__()
      self.conv_0 = ConvLayer(in_channels, in_channels, 3)
      self.conv_1 = ConvLayer(in_channels, out_channels, 3, downsample=True)
      self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, activate=False)

    def forward(self, x):
      return (self.conv_1(self.conv_0(x)) + self.skip(x)) / math.sqrt(2)

  class Discriminator(nn.Module):
    def __init__(self):
      super().__init__()
      sizes = sorted(table, reverse=True)
      layers = [ConvLayer(3, table[resolution], 1)]
      for size in sizes[:-1]:
        layers.append(ResBlock(table[size], table[size // 2]))
      self.convs = nn.Sequential(*layers)
      self.final_conv = ConvLayer(table[4] + 1, table[4], 3)
      self.final_dense = EqualLinear(table[4] * 16, table[4], activation=True)
      self.output_dense = EqualLinear(table[4], 1)

    def forward(self, x):
      out = self.convs(x)
      batch, channel, height, width = out.shape
      group = min(batch, stddev_group)
      stddev = out.view(group, -1, 1, channel, height, width)
      stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
      out = torch.cat([out, stddev.repeat(group, 1, height, width)], 1)
      out = self.final_conv(out)
      return self.output_dense(self.final_dense(out.view(batch, -1)))[:, 0]

  return Generator().to(device), Discriminator().to(device)


def lazy_adam(torch, params, section: dict, interval: int):
  """Adam with the lazy-regularization correction (StyleGAN2 §B), as hallujax.methods.stylegan2.lazy_corrected."""
  from hallujax import optim   # pylint: disable=import-outside-toplevel
  c = interval / (interval + 1) if interval > 0 else 1.0
  return torch.optim.Adam(params, lr=section["learning_rate"] * c,
                          betas=(optim.field(section, "b1") ** c, optim.field(section, "b2") ** c),
                          eps=optim.field(section, "eps"))


def make_train_step(config, batch_size: int, modulation: str = "shared", compile_mode: str | None = None,
                    device: str = "cpu"):
  """(step(real) -> (d_loss, g_loss), generator): one plain StyleGAN2 step in PyTorch (see the module docstring).

  compile_mode: None (eager) or a torch.compile mode ("default", "max-autotune-no-cudagraphs", ...) for the
  two loss-and-gradient functions; the optimizer updates stay eager.
  """
  torch, nn, F = torch_modules()
  from hallujax.models.stylegan2 import channel_table
  m, loss, t = config.model, config.loss, config.train
  channels = channel_table(m.resolution, m.channel_multiplier, m.channel_max, m.channel_base)
  generator, discriminator = build(m.resolution, channels, m.style_dim, m.mapping_layers, m.mapping_lr_multiplier,
                                   m.stddev_group, modulation, device)
  ema = [p.detach().clone() for p in generator.parameters()]
  g_opt = lazy_adam(torch, generator.parameters(), dict(config.optim.generator), loss.path_length_every)
  d_opt = lazy_adam(torch, discriminator.parameters(), dict(config.optim.discriminator), loss.r1_every)
  beta = 0.5 ** (batch_size / max(t.ema_half_life_images, 1e-8))
  num_ws = generator.num_ws

  def w_plus_of(z):
    """Mapping of 2B latents, per-sample crossover with probability style_mixing (StyleGAN §3.1)."""
    w = generator.map(z)
    crossover = torch.randint(1, num_ws, (batch_size,), device=device)
    mixed = torch.rand(batch_size, device=device) < loss.style_mixing
    crossover = torch.where(mixed, crossover, torch.full_like(crossover, num_ws))
    layer = torch.arange(num_ws, device=device)[None, :, None]
    return torch.where(layer < crossover[:, None, None], w[:batch_size, None], w[batch_size:, None]), w

  def discriminator_loss(real, z):
    with torch.no_grad():
      fake = generator.synthesize(w_plus_of(z)[0])
    logits = discriminator(torch.cat([real, fake]))
    real_logits, fake_logits = logits.chunk(2)
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()

  def generator_loss(z):
    w_plus, w = w_plus_of(z)
    return F.softplus(-discriminator(generator.synthesize(w_plus))).mean(), w.detach()

  if compile_mode:
    discriminator_loss = torch.compile(discriminator_loss, mode=compile_mode)
    generator_loss = torch.compile(generator_loss, mode=compile_mode)

  def step(real):
    z = torch.randn(2 * batch_size, m.style_dim, device=device)
    discriminator.requires_grad_(True)
    generator.requires_grad_(False)
    d_opt.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(real, z)
    d_loss.backward()
    d_opt.step()
    discriminator.requires_grad_(False)
    generator.requires_grad_(True)
    g_opt.zero_grad(set_to_none=True)
    g_loss, w = generator_loss(torch.randn(2 * batch_size, m.style_dim, device=device))
    g_loss.backward()
    g_opt.step()
    with torch.no_grad():
      batch_mean = w[:batch_size].mean(0)
      generator.w_avg.copy_(batch_mean + 0.995 * (generator.w_avg - batch_mean))
      for e, p in zip(ema, generator.parameters()):
        e.copy_(p + beta * (e - p))
    return d_loss.detach(), g_loss.detach()

  return step, generator


def torch_device(torch, jax_backend: str) -> str:
  """The torch device on which jax runs: "cpu", or "cuda" for jax's GPU backend."""
  if jax_backend == "cpu":
    return "cpu"
  if jax_backend == "gpu" and torch.cuda.is_available():
    return "cuda"
  raise ValueError(f"jax runs on {jax_backend} and torch has no such device here (cuda available: "
                   f"{torch.cuda.is_available()}); the side by side needs both on the same device.")


def hallujax_step(config, batch_size: int):
  """(call() -> metrics, compile seconds): hallujax's jitted 'plain' step as the trainer runs it."""
  import jax
  from hallujax import performance, run_setup
  prepared = performance.prepare(config)
  program = run_setup.jit_steps(prepared.method, config, prepared.mesh, prepared.state_shardings,
                                prepared.frozen_shardings)["plain"]
  rng = jax.random.key_data(jax.random.key(1))
  holder = {"state": prepared.state}
  start = time.perf_counter()
  program.lower(holder["state"], prepared.frozen, prepared.batch, rng).compile()
  compile_seconds = time.perf_counter() - start

  def call():
    holder["state"], metrics = program(holder["state"], prepared.frozen, prepared.batch, rng)
    return jax.block_until_ready(metrics)

  return call, compile_seconds


def timed(call: Callable) -> float:
  start = time.perf_counter()
  call()
  return time.perf_counter() - start


def compare(spec: str = "configs/stylegan2.py:smoke", *, steps: int = 5, warmup: int = 1, batch_size: int = 0,
            modulation: str = "shared", compile_torch: bool = True, out_dir: str | None = None,
            log: Callable[[str], None] = print) -> dict:
  """hallujax vs PyTorch eager vs torch.compile on StyleGAN2's plain train step, interleaved; the report."""
  torch, _, _ = torch_modules()
  import jax
  from hallujax import performance, run_files
  config = run_files.load_config_file(spec)
  if batch_size:
    config.train.batch_size = batch_size
  batch = config.train.batch_size
  size = config.model.resolution
  env = performance.environment()
  log(f"StyleGAN2 {size}², batch {batch}, {spec} | {env['devices']} × {env['device_kind']} | jax {jax.__version__}, "
      f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY "
      f"{os.environ.get('OMP_WAIT_POLICY', '(default)')}) | load {env['load_average_1min']} on "
      f"{env['cpus']} CPUs")
  device = torch_device(torch, jax.default_backend())
  torch.manual_seed(0)
  real = torch.rand(batch, 3, size, size, device=device) * 2 - 1

  def synchronized(step):
    if device == "cuda":
      return lambda: (step(real), torch.cuda.synchronize())
    return lambda: step(real)

  contenders: dict[str, Callable] = {}
  compile_seconds: dict[str, float] = {}
  notes = []
  contenders["hallujax"], compile_seconds["hallujax"] = hallujax_step(config, batch)
  eager, _ = make_train_step(config, batch, modulation, device=device)
  contenders["torch_eager"] = synchronized(eager)
  if compile_torch:
    try:
      compiled, _ = make_train_step(config, batch, modulation, compile_mode="default", device=device)
      contenders["torch_compile"] = synchronized(compiled)
      compile_seconds["torch_compile"] = timed(contenders["torch_compile"])   # the first call compiles
    except Exception as error:   # no C++ compiler, an unsupported op ...: say so, keep the eager figure
      contenders.pop("torch_compile", None)
      notes.append(f"torch.compile failed here: {errors.named_first_line(error)}")
      log(notes[-1])
  for call in contenders.values():
    for _ in range(warmup):
      call()
  times = {name: [] for name in contenders}
  for _ in range(steps):
    for name, call in contenders.items():   # interleaved: load changes hit every contender alike
      times[name].append(timed(call))
  medians = {name: statistics.median(t) for name, t in times.items()}
  rows = []
  for name, t in times.items():
    speedup = medians[name] / medians["hallujax"]
    rows.append(dict(name=name, median_seconds=medians[name], min_seconds=min(t), max_seconds=max(t), steps=len(t),
                     images_per_second=batch / medians[name], compile_seconds=compile_seconds.get(name),
                     time_over_hallujax=speedup))
    log(f"{name:14s} median {medians[name] * 1e3:9.1f} ms (min {min(t) * 1e3:.1f}, max {max(t) * 1e3:.1f}, "
        f"n={len(t)}) | {batch / medians[name]:7.1f} images/s | time / hallujax's {speedup:.2f}")
  report = dict(environment=env, config=spec, resolution=size, batch_size=batch, modulation=modulation, device=device,
                torch=torch.__version__, torch_threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(default)"), rows=rows, notes=notes)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "torch_side_by_side.json"), "w") as f:
      json.dump(report, f, indent=1)
  return report


def main(argv=None) -> None:
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/stylegan2.py:smoke")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=0)
  parser.add_argument("--modulation", choices=("shared", "grouped"), default="shared")
  parser.add_argument("--no_compile", action="store_true", help="Skip the torch.compile contender.")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  compare(args.config, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, modulation=args.modulation,
          compile_torch=not args.no_compile, out_dir=args.out)


if __name__ == "__main__":
  main()
