"""Load public PyTorch StyleGAN2 weights into hallujax.models.stylegan2 variables.

Two formats:
  * rosinality `stylegan2-pytorch` checkpoints (`.pt` with "g_ema", optional
    "g", "d", "latent_avg"; or a bare generator/discriminator state dict).
  * NVIDIA `stylegan2-ada-pytorch` state dicts a user exported with
    `torch.save(G.state_dict(), ...)` (keys `mapping.fc{i}`, `synthesis.b{res}.conv0/conv1/torgb`,
    `noise_const`, `noise_strength`, `affine`, `resample_filter`; D: `b{res}.fromrgb/conv0/conv1/skip`,
    `b4.conv/fc/out`). Differences: ada's `conv_clamp` (activation clamping at
    ±256, only active in its fp16 layers) is not applied.

Resolution, channel table, style size and mapping depth are read from the
tensor shapes. Every key is accounted for: a key the architecture needs and
the file lacks, a key the file has and the architecture does not use, or a
tensor of the wrong shape raises one ValueError that lists them all, each by
name; so does a tensor holding NaN or inf. The blur kernel buffers may be
absent; when present each must be the 4×4 [1, 3, 3, 1] kernel (a wrong one is
named with its shape or values). A rosinality `latent_avg` must have shape
(style_dim,).

Files: `.pt`/`.pth` are read by hallujax.convert.common.read_torch_file (one
clear error for a missing, empty, truncated or foreign file; `allow_pickle`
suggested only for a real pickle of non-tensor objects); an NVIDIA network
pickle (`.pkl`) is read without NVIDIA's code by hallujax.convert.stylegan2_pkl.

torch is imported only to read files (optional extra `hallujax[torch]`); the
conversion functions also accept dicts of numpy arrays.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Mapping

import numpy as np

from hallujax.convert import common, stylegan2_pkl
from hallujax.convert.common import CheckpointMismatchError
from hallujax.nn.stylegan_layers import make_blur_kernel

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Entry:
  """One source tensor: its expected shape, where it goes and how it is transformed."""
  key: str
  shape: tuple[int, ...]
  target: tuple[str, ...] | None          # ("params" | "buffers", module path..., name); None: check only
  transform: Callable[[Array], Array] = lambda a: a
  optional: bool = False
  expected_value: Array | None = None      # buffers that must hold a fixed value (blur kernels)


def _to_numpy(value) -> Array:
  if hasattr(value, "detach"):
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, dtype=np.float32)


def _assign(tree: dict, path: tuple[str, ...], value: Array) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def apply_entries(state_dict: Mapping[str, Any], entries: list[Entry], what: str) -> dict:
  """Variables {"params": ..., "buffers": ...} from `state_dict`, or one error naming every problem.

  The error is hallujax.convert.common's CheckpointMismatchError (a ValueError),
  as for every converter; the tables here also carry transforms (equalized-lr
  rescaling, reshapes) and fixed-value checks of the blur buffers.
  """
  state = {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}
  known = {entry.key for entry in entries}
  missing = [e.key for e in entries if e.key not in state and not e.optional]
  unexpected = sorted(key for key in state if key not in known)
  misshaped, wrong_blur, non_finite = [], [], []
  variables: dict = {}
  for entry in entries:
    if entry.key not in state:
      continue
    value = _to_numpy(state[entry.key])
    if entry.expected_value is not None:      # a blur kernel: named with what is wrong about it
      expected = entry.expected_value
      if tuple(value.shape) != tuple(expected.shape):
        wrong_blur.append(f"{entry.key}: shape {tuple(value.shape)}, expected {tuple(expected.shape)}")
      elif not np.allclose(value, expected, atol=1e-6):
        wrong_blur.append(f"{entry.key}: holds {value.round(4).tolist()}, expected {expected.round(4).tolist()}")
      continue
    if tuple(value.shape) != tuple(entry.shape):
      misshaped.append(f"{entry.key}: got {tuple(value.shape)}, expected {tuple(entry.shape)}")
      continue
    if not np.all(np.isfinite(value)):
      non_finite.append(f"{entry.key} ({int(np.size(value) - np.isfinite(value).sum())} of {np.size(value)})")
      continue
    if entry.target is not None:
      _assign(variables, entry.target, np.array(entry.transform(value), dtype=np.float32))
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
  if unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
  if misshaped:
    problems.append(f"mis-shaped tensors ({len(misshaped)}): {'; '.join(misshaped)}")
  if wrong_blur:
    problems.append(f"wrong blur kernels ({len(wrong_blur)}; this network supports only the [1, 3, 3, 1] "
                    f"kernel): {'; '.join(wrong_blur)}")
  if non_finite:
    problems.append(f"tensors holding NaN or inf ({len(non_finite)}): {', '.join(non_finite)}")
  if problems:
    raise CheckpointMismatchError(f"Cannot load {what}; nothing was loaded.\n  " + "\n  ".join(problems))
  return variables


def _conv_kernel(weight: Array) -> Array:
  """torch (out, in, kh, kw) → HWIO."""
  return weight.transpose(2, 3, 1, 0)


def _modulated_kernel(weight: Array) -> Array:
  """rosinality (1, out, in, kh, kw) → HWIO."""
  return weight[0].transpose(2, 3, 1, 0)


def _dense_kernel(weight: Array) -> Array:
  """torch (out, in) → (in, out)."""
  return weight.T


def _require(state: Mapping[str, Any], keys: list[str], what: str) -> None:
  absent = [key for key in keys if key not in state]
  if absent:
    raise ValueError(f"Cannot read the {what} architecture: missing keys {', '.join(absent)}. "
                     f"Is this the right file / format? It has keys like {', '.join(list(state)[:6])}.")


def _shape(value) -> tuple[int, ...]:
  return tuple(value.shape)


# ----------------------------------------------------------------------------- rosinality

def rosinality_generator_architecture(state: Mapping[str, Any]) -> dict:
  """resolution, channels, style_dim, mapping_layers read from a rosinality generator state dict."""
  _require(state, ["style.1.weight", "input.input"], "rosinality generator")
  mapping_layers = sum(1 for key in state if re.fullmatch(r"style\.\d+\.weight", key))
  num_to_rgbs = sum(1 for key in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", key))
  resolution = 2 ** (num_to_rgbs + 2)
  channels = [_shape(state["input.input"])[1]]
  _require(state, [f"convs.{2 * i}.conv.weight" for i in range(num_to_rgbs)], "rosinality generator")
  channels += [_shape(state[f"convs.{2 * i}.conv.weight"])[1] for i in range(num_to_rgbs)]
  return dict(resolution=resolution, channels=tuple(channels),
              style_dim=_shape(state["style.1.weight"])[0], mapping_layers=mapping_layers)


def rosinality_generator_entries(resolution: int, channels, style_dim: int, mapping_layers: int) -> list[Entry]:
  entries = []
  for i in range(mapping_layers):
    target = ("params", "mapping", f"dense_{i}")
    entries += [Entry(f"style.{i + 1}.weight", (style_dim, style_dim), target + ("kernel",), _dense_kernel),
                Entry(f"style.{i + 1}.bias", (style_dim,), target + ("bias",))]
  entries.append(Entry("input.input", (1, channels[0], 4, 4), ("params", "synthesis", "constant"),
                       lambda a: a[0].transpose(1, 2, 0)))
  upsample_kernel = make_blur_kernel(gain=4.0)
  for layer in range(2 * len(channels) - 1):
    prefix = "conv1" if layer == 0 else f"convs.{layer - 1}"
    level = (layer + 1) // 2
    in_channels = channels[max(level - 1, 0)] if layer % 2 == 1 else channels[level]
    out_channels, size = channels[level], 4 * 2**level
    target = ("params", "synthesis", f"layer_{layer}")
    entries += [
        Entry(f"{prefix}.conv.weight", (1, out_channels, in_channels, 3, 3),
              target + ("modulated_conv", "kernel"), _modulated_kernel),
        Entry(f"{prefix}.conv.modulation.weight", (in_channels, style_dim),
              target + ("modulated_conv", "modulation", "kernel"), _dense_kernel),
        Entry(f"{prefix}.conv.modulation.bias", (in_channels,), target + ("modulated_conv", "modulation", "bias")),
        Entry(f"{prefix}.noise.weight", (1,), target + ("noise_strength",), lambda a: a.reshape(())),
        Entry(f"{prefix}.activate.bias", (out_channels,), target + ("bias",)),
        Entry(f"noises.noise_{layer}", (1, 1, size, size), ("buffers", "synthesis", f"layer_{layer}", "noise"),
              lambda a: a[0, 0]),
    ]
    if layer % 2 == 1:
      entries.append(Entry(f"{prefix}.conv.blur.kernel", (4, 4), None, optional=True,
                           expected_value=upsample_kernel))
  for level, in_channels in enumerate(channels):
    prefix = "to_rgb1" if level == 0 else f"to_rgbs.{level - 1}"
    target = ("params", "synthesis", f"to_rgb_{level}")
    entries += [
        Entry(f"{prefix}.conv.weight", (1, 3, in_channels, 1, 1), target + ("modulated_conv", "kernel"),
              _modulated_kernel),
        Entry(f"{prefix}.conv.modulation.weight", (in_channels, style_dim),
              target + ("modulated_conv", "modulation", "kernel"), _dense_kernel),
        Entry(f"{prefix}.conv.modulation.bias", (in_channels,), target + ("modulated_conv", "modulation", "bias")),
        Entry(f"{prefix}.bias", (1, 3, 1, 1), target + ("bias",), lambda a: a.reshape(3)),
    ]
    if level > 0:
      entries.append(Entry(f"{prefix}.upsample.kernel", (4, 4), None, optional=True,
                           expected_value=upsample_kernel))
  return entries


def rosinality_discriminator_architecture(state: Mapping[str, Any]) -> dict:
  _require(state, ["convs.0.0.weight", "final_conv.0.weight"], "rosinality discriminator")
  num_blocks = sum(1 for key in state if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", key))
  resolution = 2 ** (num_blocks + 2)
  by_level = [_shape(state["final_conv.0.weight"])[0]]
  _require(state, [f"convs.{k}.conv2.1.weight" for k in range(1, num_blocks + 1)], "rosinality discriminator")
  # Block k (from the top) maps channels[levels - k + 1] → channels[levels - k].
  by_level += [_shape(state[f"convs.{k}.conv2.1.weight"])[1] for k in range(num_blocks, 0, -1)]
  return dict(resolution=resolution, channels=tuple(by_level))


def rosinality_discriminator_entries(resolution: int, channels) -> list[Entry]:
  blur = make_blur_kernel()
  top = len(channels) - 1
  entries = [Entry("convs.0.0.weight", (channels[top], 3, 1, 1), ("params", "from_rgb", "kernel"), _conv_kernel),
             Entry("convs.0.1.bias", (channels[top],), ("params", "from_rgb", "bias"))]
  for k, level in enumerate(range(top, 0, -1), start=1):
    in_channels, out_channels = channels[level], channels[level - 1]
    target = ("params", f"block_{4 * 2**level}")
    entries += [
        Entry(f"convs.{k}.conv1.0.weight", (in_channels, in_channels, 3, 3), target + ("conv_0", "kernel"),
              _conv_kernel),
        Entry(f"convs.{k}.conv1.1.bias", (in_channels,), target + ("conv_0", "bias")),
        Entry(f"convs.{k}.conv2.0.kernel", (4, 4), None, optional=True, expected_value=blur),
        Entry(f"convs.{k}.conv2.1.weight", (out_channels, in_channels, 3, 3), target + ("conv_1", "kernel"),
              _conv_kernel),
        Entry(f"convs.{k}.conv2.2.bias", (out_channels,), target + ("conv_1", "bias")),
        Entry(f"convs.{k}.skip.0.kernel", (4, 4), None, optional=True, expected_value=blur),
        Entry(f"convs.{k}.skip.1.weight", (out_channels, in_channels, 1, 1), target + ("skip", "kernel"),
              _conv_kernel),
    ]
  c = channels[0]
  entries += [
      Entry("final_conv.0.weight", (c, channels[0] + 1, 3, 3), ("params", "final_conv", "kernel"), _conv_kernel),
      Entry("final_conv.1.bias", (c,), ("params", "final_conv", "bias")),
      Entry("final_linear.0.weight", (c, c * 16), ("params", "final_dense", "kernel"), _dense_kernel),
      Entry("final_linear.0.bias", (c,), ("params", "final_dense", "bias")),
      Entry("final_linear.1.weight", (1, c), ("params", "output_dense", "kernel"), _dense_kernel),
      Entry("final_linear.1.bias", (1,), ("params", "output_dense", "bias")),
  ]
  return entries


# ----------------------------------------------------------------------------- stylegan2-ada-pytorch

def ada_generator_architecture(state: Mapping[str, Any]) -> dict:
  _require(state, ["mapping.fc0.weight", "synthesis.b4.const"], "stylegan2-ada-pytorch generator")
  mapping_layers = sum(1 for key in state if re.fullmatch(r"mapping\.fc\d+\.weight", key))
  sizes = sorted({int(m.group(1)) for key in state if (m := re.fullmatch(r"synthesis\.b(\d+)\..*", key))})
  resolution = sizes[-1]
  channels = [_shape(state["synthesis.b4.const"])[0]]
  _require(state, [f"synthesis.b{4 * 2**i}.conv1.weight" for i in range(1, len(sizes))],
           "stylegan2-ada-pytorch generator")
  channels += [_shape(state[f"synthesis.b{4 * 2**i}.conv1.weight"])[0] for i in range(1, len(sizes))]
  return dict(resolution=resolution, channels=tuple(channels),
              style_dim=_shape(state["mapping.fc0.weight"])[0], mapping_layers=mapping_layers)


def ada_generator_entries(resolution: int, channels, style_dim: int, mapping_layers: int) -> list[Entry]:
  filter_ = make_blur_kernel()
  entries = [Entry("mapping.w_avg", (style_dim,), ("buffers", "mapping", "w_avg"))]
  for i in range(mapping_layers):
    target = ("params", "mapping", f"dense_{i}")
    entries += [Entry(f"mapping.fc{i}.weight", (style_dim, style_dim), target + ("kernel",), _dense_kernel),
                Entry(f"mapping.fc{i}.bias", (style_dim,), target + ("bias",))]
  entries.append(Entry("synthesis.b4.const", (channels[0], 4, 4), ("params", "synthesis", "constant"),
                       lambda a: a.transpose(1, 2, 0)))

  def affine(prefix, in_channels, target):
    return [Entry(f"{prefix}.affine.weight", (in_channels, style_dim),
                  target + ("modulated_conv", "modulation", "kernel"), _dense_kernel),
            Entry(f"{prefix}.affine.bias", (in_channels,), target + ("modulated_conv", "modulation", "bias"))]

  for layer in range(2 * len(channels) - 1):
    level = (layer + 1) // 2
    size = 4 * 2**level
    prefix = f"synthesis.b{size}.conv1" if layer % 2 == 0 else f"synthesis.b{size}.conv0"
    in_channels = channels[level - 1] if layer % 2 == 1 else channels[level]
    out_channels = channels[level]
    fan_in = in_channels * 9
    target = ("params", "synthesis", f"layer_{layer}")
    # ada's SynthesisLayer leaves out the 1/sqrt(fan_in) weight gain (demodulation
    # cancels it); storing w·sqrt(fan_in) makes our scaled weight equal to theirs exactly.
    entries += [
        Entry(f"{prefix}.weight", (out_channels, in_channels, 3, 3), target + ("modulated_conv", "kernel"),
              lambda a, f=fan_in: _conv_kernel(a) * math.sqrt(f)),
        Entry(f"{prefix}.bias", (out_channels,), target + ("bias",)),
        Entry(f"{prefix}.noise_strength", (), target + ("noise_strength",)),
        Entry(f"{prefix}.noise_const", (size, size), ("buffers", "synthesis", f"layer_{layer}", "noise")),
        Entry(f"{prefix}.resample_filter", (4, 4), None, optional=True, expected_value=filter_),
        *affine(prefix, in_channels, target),
    ]
  for level, in_channels in enumerate(channels):
    size = 4 * 2**level
    prefix = f"synthesis.b{size}.torgb"
    target = ("params", "synthesis", f"to_rgb_{level}")
    entries += [
        Entry(f"{prefix}.weight", (3, in_channels, 1, 1), target + ("modulated_conv", "kernel"), _conv_kernel),
        Entry(f"{prefix}.bias", (3,), target + ("bias",)),
        *affine(prefix, in_channels, target),
    ]
    # Every ada SynthesisBlock registers a resample_filter buffer, the 4×4 block's too (unused there).
    entries.append(Entry(f"synthesis.b{size}.resample_filter", (4, 4), None, optional=True, expected_value=filter_))
  return entries


def ada_discriminator_architecture(state: Mapping[str, Any]) -> dict:
  _require(state, ["b4.conv.weight"], "stylegan2-ada-pytorch discriminator")
  sizes = sorted({int(m.group(1)) for key in state if (m := re.fullmatch(r"b(\d+)\..*", key))})
  resolution = sizes[-1]
  channels = [_shape(state["b4.conv.weight"])[0]]
  _require(state, [f"b{4 * 2**i}.conv0.weight" for i in range(1, len(sizes))], "stylegan2-ada-pytorch discriminator")
  channels += [_shape(state[f"b{4 * 2**i}.conv0.weight"])[0] for i in range(1, len(sizes))]
  return dict(resolution=resolution, channels=tuple(channels))


def ada_discriminator_entries(resolution: int, channels) -> list[Entry]:
  filter_ = make_blur_kernel()
  top = len(channels) - 1
  entries = [Entry(f"b{resolution}.fromrgb.weight", (channels[top], 3, 1, 1), ("params", "from_rgb", "kernel"),
                   _conv_kernel),
             Entry(f"b{resolution}.fromrgb.bias", (channels[top],), ("params", "from_rgb", "bias")),
             Entry(f"b{resolution}.fromrgb.resample_filter", (4, 4), None, optional=True, expected_value=filter_)]
  for level in range(top, 0, -1):
    size = 4 * 2**level
    in_channels, out_channels = channels[level], channels[level - 1]
    target = ("params", f"block_{size}")
    entries += [
        Entry(f"b{size}.conv0.weight", (in_channels, in_channels, 3, 3), target + ("conv_0", "kernel"), _conv_kernel),
        Entry(f"b{size}.conv0.bias", (in_channels,), target + ("conv_0", "bias")),
        Entry(f"b{size}.conv1.weight", (out_channels, in_channels, 3, 3), target + ("conv_1", "kernel"), _conv_kernel),
        Entry(f"b{size}.conv1.bias", (out_channels,), target + ("conv_1", "bias")),
        Entry(f"b{size}.skip.weight", (out_channels, in_channels, 1, 1), target + ("skip", "kernel"), _conv_kernel),
    ] + [Entry(f"b{size}.{name}resample_filter", (4, 4), None, optional=True, expected_value=filter_)
         for name in ("", "conv0.", "conv1.", "skip.")]
  c = channels[0]
  entries += [
      Entry("b4.conv.weight", (c, c + 1, 3, 3), ("params", "final_conv", "kernel"), _conv_kernel),
      Entry("b4.conv.bias", (c,), ("params", "final_conv", "bias")),
      Entry("b4.conv.resample_filter", (4, 4), None, optional=True, expected_value=filter_),
      Entry("b4.fc.weight", (c, c * 16), ("params", "final_dense", "kernel"), _dense_kernel),
      Entry("b4.fc.bias", (c,), ("params", "final_dense", "bias")),
      Entry("b4.out.weight", (1, c), ("params", "output_dense", "kernel"), _dense_kernel),
      Entry("b4.out.bias", (1,), ("params", "output_dense", "bias")),
  ]
  return entries


# ----------------------------------------------------------------------------- public API

def is_ada_state_dict(state: Mapping[str, Any]) -> bool:
  return any(key.startswith(("mapping.fc", "synthesis.b", "b4.")) for key in state)


def convert_generator(state: Mapping[str, Any]) -> tuple[dict, dict]:
  """(architecture, variables) of a rosinality or stylegan2-ada generator state dict.

  architecture: resolution, channels, style_dim, mapping_layers (the
  `Generator` fields); variables: {"params", "buffers"}. A rosinality
  generator carries no `w_avg`: it is zero here (see `load_checkpoint`).
  """
  if is_ada_state_dict(state):
    architecture = ada_generator_architecture(state)
    variables = apply_entries(state, ada_generator_entries(**architecture), "the stylegan2-ada-pytorch generator")
  else:
    architecture = rosinality_generator_architecture(state)
    variables = apply_entries(state, rosinality_generator_entries(**architecture), "the rosinality generator")
    _assign(variables, ("buffers", "mapping", "w_avg"), np.zeros(architecture["style_dim"], np.float32))
  return architecture, variables


def convert_discriminator(state: Mapping[str, Any]) -> tuple[dict, dict]:
  """(architecture, variables) of a rosinality or stylegan2-ada discriminator state dict."""
  if is_ada_state_dict(state):
    architecture = ada_discriminator_architecture(state)
    variables = apply_entries(state, ada_discriminator_entries(**architecture),
                              "the stylegan2-ada-pytorch discriminator")
  else:
    architecture = rosinality_discriminator_architecture(state)
    variables = apply_entries(state, rosinality_discriminator_entries(**architecture),
                              "the rosinality discriminator")
  return architecture, variables


def read_torch_file(path: str, allow_pickle: bool = False):
  """torch.load a checkpoint on the CPU, tensors only unless `allow_pickle` (torch is needed only here).

  A missing path raises FileNotFoundError; a directory, an empty, truncated or
  foreign file raises hallujax.convert.common.TorchFileError (a ValueError)
  saying which; `allow_pickle=True` is suggested only for a real pickle of
  non-tensor objects (e.g. rosinality's training 'args' Namespace).
  """
  return common.read_torch_file(path, allow_pickle)


def _check_latent_avg(value, style_dim: int) -> Array:
  latent_avg = _to_numpy(value)
  if tuple(latent_avg.shape) != (style_dim,):
    raise CheckpointMismatchError(f"Cannot load latent_avg; nothing was loaded: got shape {tuple(latent_avg.shape)}, "
                                  f"expected ({style_dim},) (the generator's style size).")
  if not np.all(np.isfinite(latent_avg)):
    raise CheckpointMismatchError("Cannot load latent_avg; nothing was loaded: it holds NaN or inf.")
  return latent_avg


def converted_generators(networks: Mapping, names: tuple[str, str], where: str) -> dict:
  """{"generator_ema", "generator"} converted from `networks`' entries `names` (EMA first, e.g. ("g_ema", "g")),
  with the "architecture" both share; a file whose two generators differ is refused."""
  result: dict = {}
  for source, name in zip(names, ("generator_ema", "generator")):
    if source in networks:
      architecture, result[name] = convert_generator(networks[source])
      if result.get("architecture", architecture) != architecture:
        raise CheckpointMismatchError(f"{where}: {names[1]!r} and {names[0]!r} describe different generators "
                                      f"({architecture} vs {result['architecture']}).")
      result["architecture"] = architecture
  return result


def load_pickle_checkpoint(path: str | os.PathLike) -> dict:
  """An NVIDIA network pickle (read by hallujax.convert.stylegan2_pkl) converted like `load_checkpoint`'s result.

  "architecture" and "generator_ema" from G_ema (or G when the pickle has no
  G_ema), "generator" from G, "discriminator_architecture" and
  "discriminator" from D; the truncation centre is the mapping's `w_avg`.
  """
  networks = stylegan2_pkl.load_network_pickle(path)
  result = converted_generators(networks, ("G_ema", "G"), repr(os.fspath(path)))
  if "generator_ema" not in result and "generator" in result:
    result["generator_ema"] = result["generator"]
  if "D" in networks:
    result["discriminator_architecture"], result["discriminator"] = convert_discriminator(networks["D"])
  result["w_avg_source"] = "w_avg"
  return result


def load_checkpoint(path_or_dict, allow_pickle: bool = False) -> dict:
  """Everything a StyleGAN2 file holds, converted.

  Accepts a rosinality checkpoint {"g_ema", "g"?, "d"?, "latent_avg"?}, a
  bare generator or discriminator state dict of either format, or the path of
  an NVIDIA stylegan2-ada-pytorch network pickle (`.pkl`, read by
  hallujax.convert.stylegan2_pkl without NVIDIA's code). Returns a dict
  with "architecture" (Generator fields) and whichever of "generator_ema",
  "generator", "discriminator" (each {"params", "buffers"} or {"params"}) the
  file has; "w_avg_source" says where the truncation centre came from:
  "latent_avg", "w_avg" (ada), or "none" (zero; call `estimate_w_avg`).
  """
  if isinstance(path_or_dict, (str, os.PathLike)):
    if common.is_nvidia_network_pickle(path_or_dict):
      return load_pickle_checkpoint(path_or_dict)
    content = read_torch_file(os.fspath(path_or_dict), allow_pickle)
    where = repr(os.fspath(path_or_dict))
  else:
    content, where = path_or_dict, "the checkpoint"
  if not isinstance(content, Mapping):
    raise CheckpointMismatchError(f"{where} holds a {type(content).__name__}; expected a dict (a rosinality "
                                  f"checkpoint or a generator/discriminator state dict).")
  result: dict = {}
  if "g_ema" in content or "g" in content or "d" in content:
    result.update(converted_generators(content, ("g_ema", "g"), where))
    if "d" in content:
      result["discriminator_architecture"], result["discriminator"] = convert_discriminator(content["d"])
    if "latent_avg" in content:
      if "architecture" not in result:
        raise CheckpointMismatchError(f"{where} has a latent_avg but no generator ('g_ema' or 'g').")
      latent_avg = _check_latent_avg(content["latent_avg"], result["architecture"]["style_dim"])
      for name in ("generator_ema", "generator"):
        if name in result:
          result[name]["buffers"]["mapping"]["w_avg"] = latent_avg
      result["w_avg_source"] = "latent_avg"
    else:
      result["w_avg_source"] = "none"
  elif any(key.startswith(("style.", "mapping.")) for key in content):
    result["architecture"], result["generator_ema"] = convert_generator(content)
    result["w_avg_source"] = "w_avg" if is_ada_state_dict(content) else "none"
  elif any(str(key).startswith(("convs.", "b4.", "final_")) for key in content):
    result["discriminator_architecture"], result["discriminator"] = convert_discriminator(content)
  else:
    raise CheckpointMismatchError(
        f"{where} is not a StyleGAN2 checkpoint: expected a rosinality checkpoint ('g_ema', 'g', 'd', 'latent_avg'), "
        f"a generator ('style.*' or 'mapping.*' keys) or a discriminator ('convs.*' or 'b4.*'); it has keys like "
        f"{', '.join(map(str, list(content)[:6]))}.")
  return result


def estimate_w_avg(generator, params: dict, buffers: dict, num_samples: int = 4096, seed: int = 0):
  """Mean of mapped random z: the truncation centre when a file has none (rosinality `mean_latent`)."""
  import jax
  z = jax.random.normal(jax.random.key(seed), (num_samples, generator.style_dim))
  w = generator.apply({"params": params, "buffers": buffers}, z, method=generator.map)
  return np.asarray(w.mean(axis=0))


def generate_from_state_dict(state_dict: Mapping[str, Any], z, truncation: float = 1.0,
                             latent_avg=None) -> Array:
  """Images (B, H, W, 3) of a generator state dict for latents z (B, style_dim), fixed noise buffers.

  The Flax side of an equivalence check: compare with rosinality's
  `g([z], randomize_noise=False, truncation=ψ, truncation_latent=latent_avg)[0]`
  (NCHW: transpose it to NHWC) or stylegan2-ada's `G(z, None, truncation_psi=ψ, noise_mode="const")`.
  """
  import jax
  from hallujax.models.stylegan2 import Generator
  architecture, variables = convert_generator(state_dict)
  if latent_avg is not None:
    variables["buffers"]["mapping"]["w_avg"] = _to_numpy(latent_avg).reshape(-1)
  generator = Generator(**architecture)
  run = jax.jit(lambda v, z: generator.apply(v, z, truncation=truncation, noise_mode="const"))
  return np.asarray(run(variables, np.asarray(_to_numpy(z))))


def discriminate_from_state_dict(state_dict: Mapping[str, Any], images) -> Array:
  """Logits (B,) of a discriminator state dict for NHWC images in [-1, 1]."""
  import jax
  from hallujax.models.stylegan2 import Discriminator
  architecture, variables = convert_discriminator(state_dict)
  discriminator = Discriminator(**architecture)
  return np.asarray(jax.jit(discriminator.apply)(variables, np.asarray(_to_numpy(images))))
