"""Face-world batches rendered on the accelerator (``config.data.render_on="device"``).

With ``render_on="host"`` (the default) the grain pipeline renders every
example on the host, one face at a time, and resizes it in numpy; at large
sizes or on a fast accelerator the host cannot keep up and the devices wait.
With ``render_on="device"`` grain yields only each example's renderer
parameters (``FaceWorldSource.renderer_parameters``, about 80 numbers), batched,
shuffled, process-sharded and checkpointed exactly as the images would be
(so resuming stays exact), and ``make_renderer`` returns a function that
turns a batch of them, sharded over the mesh's data axis, into the batch the
host path gives: each device renders and resizes its own slice.

It copies the host path step by step: the same renders (``render_batch``,
the renderer's own two programs: the shader, then uint8 unpacking and the
thermal blur), then one jitted program with the same uint8 "input" channel
conversion, the same MATLAB resize matrices
(``degradations.resize_matrix``, float32) rounded to uint8 levels, the same
scaling to [-1, 1]. The face world renders at target_size, so "target" and
"landmarks" never need the host path's target resize. What can differ is
float rounding: XLA sums the resize (and the batched renders) in another
order than numpy and the batch-1 host renders, which can move a value that
sits on a rounding boundary to the neighbouring uint8 level on a few pixels
(tests/test_device_render.py bounds this).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hallujax import sharding
from hallujax.data import degradations, faceworld
from hallujax.data.faceworld_render import render_batch

RENDER_ON = ("host", "device")
FIELDS = ("input", "target", "identity", "landmarks", "visibility", "yaw", "expression",
          "input_landmarks", "aligned_target")


def renders_on_device(data_config) -> bool:
  """Whether `data_config.render_on` asks for device rendering; a clear error for an unknown value."""
  render_on = data_config.render_on
  if render_on not in RENDER_ON:
    raise ValueError(f"config.data.render_on={render_on!r}; expected 'host' (render on the host, "
                     f"the default) or 'device' (face world only: render on the accelerator).")
  return render_on == "device"


def split_views(parameters: dict) -> dict[str, dict]:
  """{"target/skin_colour": ..., "input/yaw": ...} -> {"target": {"skin_colour": ...}, "input": {...}}."""
  views: dict[str, dict] = {}
  for key, value in parameters.items():
    if "/" in key:
      view, name = key.split("/", 1)
      views.setdefault(view, {})[name] = value
  return views


def to_channels(images: jax.Array, channels: int) -> jax.Array:
  """uint8 (B, H, W, 1|3) -> `channels` channels, as faceworld._channels does on the host."""
  if images.shape[-1] == channels:
    return images
  if channels == 3:
    return jnp.repeat(images, 3, axis=-1)
  if channels == 1:
    luminance = jnp.einsum("bhwc,c->bhw", images.astype(jnp.float32), faceworld.LUMINANCE,
                           precision=jax.lax.Precision.HIGHEST)
    return jnp.round(luminance)[..., None].astype(jnp.uint8)
  raise ValueError(f"data.input_channels={channels}; expected 1 or 3.")


def resize_levels(images: jax.Array, size: int, method: str) -> jax.Array:
  """uint8 (B, H, W, C) -> float32 (B, size, size, C) whole uint8 levels, as degradations.resize.

  The same separable MATLAB matrices in float32, rows first, then columns,
  then rounded and clipped to 0..255. HIGHEST precision: an accelerator's
  default float32 matmul may round its inputs to bfloat16.
  """
  height, width = images.shape[1:3]
  rows = jnp.asarray(degradations.resize_matrix(height, size, method).astype(np.float32))
  columns = jnp.asarray(degradations.resize_matrix(width, size, method).astype(np.float32))
  highest = jax.lax.Precision.HIGHEST
  out = jnp.einsum("yh,bhwc->bywc", rows, images.astype(jnp.float32), precision=highest)
  out = jnp.einsum("xw,bywc->byxc", columns, out, precision=highest)
  return jnp.clip(jnp.round(out), 0.0, 255.0)


def to_unit_range(levels: jax.Array) -> jax.Array:
  """uint8 levels [0, 255] -> float32 [-1, 1], as pipeline.to_unit_range."""
  return levels.astype(jnp.float32) * (2.0 / 255.0) - 1.0


class RenderSettings(NamedTuple):
  """The data-config fields the device program depends on (hashable: one program per value)."""
  pairing: str
  target_size: int
  input_size: int
  input_channels: int
  downsample: str

  @classmethod
  def of(cls, data_config) -> "RenderSettings":
    if data_config.pairing not in faceworld.PAIRINGS:
      raise ValueError(f"config.data.pairing={data_config.pairing!r} is not a face-world pairing. "
                       f"Known pairings: {', '.join(faceworld.PAIRINGS)}.")
    return cls(str(data_config.pairing), int(data_config.target_size), int(data_config.input_size),
               int(data_config.input_channels), str(data_config.downsample))


def render_views(parameters: dict, settings: RenderSettings) -> tuple[dict, jax.Array]:
  """(the target view's render, the input image) of a batch of renderer parameters.

  The render dict also holds the input view's "input_landmarks" and
  "input_visible" (the same arrays as the target's when the input is that view).

  Runs the renderer's own programs (render_batch) on the parameters where
  they lie, so a batch split over devices renders split too. Not inside the
  jit of `prepare_batch`: inlined into a larger program, XLA no longer keeps
  the shader one fused loop and renders 2.3× slower (32 faces at 128² on CPU: 60 vs 26 ms).
  """
  modality = faceworld.input_modality(settings.pairing)
  modalities = faceworld.rendered_modalities(settings.pairing)   # as FaceWorldSource.__getitem__
  views = split_views(parameters)
  rendered = render_batch(views["target"], size=settings.target_size, modalities=modalities)
  if "input" in views:   # frontalize, *_unaligned: the input is another view of the face
    source = render_batch(views["input"], size=settings.target_size, modalities=modalities)
  else:
    source = rendered
  rendered = dict(rendered, input_landmarks=source["landmarks"], input_visible=source["visible"])
  return rendered, source[modality]


def prepare_batch(rendered: dict, image: jax.Array, parameters: dict,
                  settings: RenderSettings) -> dict[str, jax.Array]:
  """Renders -> the prepared batch, as FaceWorldSource.__getitem__ and pipeline.PrepareExample make it."""
  image = to_channels(image, settings.input_channels)
  if settings.input_size != settings.target_size:
    levels = resize_levels(image, settings.input_size, settings.downsample)
  else:
    levels = image.astype(jnp.float32)
  return {
      "input": to_unit_range(levels),
      "target": to_unit_range(rendered["visible"]),
      "identity": parameters["identity"].astype(jnp.int32),
      "landmarks": rendered["landmarks"].astype(jnp.float32),
      "visibility": rendered["visibility"].astype(bool),
      "yaw": parameters["yaw"].astype(jnp.float32),
      "expression": parameters["expression"].astype(jnp.int32),
      # Pixel centres at integers: x -> (x + 0.5)·s - 0.5, as pipeline.scale_points.
      "input_landmarks": ((rendered["input_landmarks"].astype(jnp.float32) + 0.5)
                          * (settings.input_size / settings.target_size) - 0.5),
      "aligned_target": to_unit_range(rendered["input_visible"]),
  }


def make_renderer(data_config, mesh, fields=FIELDS):
  """`render(parameters) -> batch` on the devices, batch split over the mesh's data axis.

  `parameters` is a batch of FaceWorldSource.renderer_parameters as global
  arrays (sharding.global_batch); the result holds `fields` (the method's
  batch_spec names) as global arrays sharded like the trainer's batches. Each
  device renders and resizes its own slice: the renderer's two programs, then
  one jitted program that makes the fields (fields the method does not read
  are never computed). All are dispatched asynchronously, so the trainer's
  prefetch overlaps rendering with training.
  """
  unknown = [name for name in fields if name not in FIELDS]
  if unknown:
    raise ValueError(f"The method reads {unknown}, which config.data.render_on='device' does not "
                     f"make; it makes {', '.join(FIELDS)}. Use render_on='host'.")
  settings = RenderSettings.of(data_config)
  prepare = _jitted_prepare(settings, mesh, tuple(fields))

  def render(parameters: dict) -> dict[str, jax.Array]:
    rendered, image = render_views(parameters, settings)
    return prepare(rendered, image, parameters)

  return render


@functools.lru_cache(maxsize=16)
def _jitted_prepare(settings: RenderSettings, mesh, fields: tuple[str, ...]):
  """Cached, so that runs in one process (a resumed run, tests) compile the program once."""

  def prepare(rendered, image, parameters):
    batch = prepare_batch(rendered, image, parameters, settings)
    return {name: batch[name] for name in fields}

  return jax.jit(prepare, out_shardings=sharding.batch_sharding(mesh))
