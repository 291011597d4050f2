"""The one path from host batches to the devices: validate, make global arrays, render, prefetch.

Every command that feeds a jitted method function uses it: the trainer,
``evaluate``, ``benchmark``, ``sample`` and the face-world benchmark. Each
process hands over its own slice of the global batch (what its grain
pipeline produced); ``jax.make_array_from_process_local_data`` assembles the
global arrays, split over the mesh axes the method's ``batch_axes`` map to.
With ``config.data.render_on="device"`` the host batch holds face-world
renderer parameters and the devices render the method's fields from them.
"""

from __future__ import annotations

import collections
from typing import Iterator

import jax
import numpy as np

from hallujax import sharding
from hallujax.data import device_render


def zeros_batch(spec: dict, leading: tuple[int, ...]) -> dict:
  """A batch of zeros with the method's fields and the given leading axes (e.g. (batch_size,))."""
  return {name: np.zeros((*leading, *s.shape), s.dtype) for name, s in spec.items()}


def validate_batch(batch: dict, spec: dict, leading: tuple[int, ...]) -> None:
  """Raises a ValueError naming the field, the shape it has and the shape expected."""
  for name, expected in spec.items():
    if name not in batch:
      raise ValueError(
          f"The batch has no field {name!r}; the method reads {sorted(spec)} and the data gives "
          f"{sorted(batch)}. Check config.data.pairing.")
    expected_shape = (*leading, *expected.shape)
    if tuple(batch[name].shape) != expected_shape:
      raise ValueError(
          f"Batch field {name!r} has shape {tuple(batch[name].shape)}; expected {expected_shape} "
          f"(leading batch axes, then the per-example shape from config.data). Check config.data sizes "
          f"and channels against the source.")


class Feed:
  """`feed(host_batch) -> {field: global jax.Array}` for one method on one mesh."""

  def __init__(self, data_config, mesh, spec: dict, batch_axes: tuple[str, ...], global_batch_size: int):
    self.mesh, self.spec, self.batch_axes = mesh, dict(spec), tuple(batch_axes)
    self.global_batch_size = global_batch_size
    self.render = (device_render.make_renderer(data_config, mesh, fields=tuple(spec))
                   if device_render.renders_on_device(data_config) else None)

  def global_leading(self, host_batch: dict) -> tuple[int, ...]:
    """The leading axes of the global batch: (batch,) or (clients, batch)."""
    if self.batch_axes == ("batch",):
      return (self.global_batch_size,)
    clients = next(iter(host_batch.values())).shape[0]
    return (clients, self.global_batch_size)

  def __call__(self, host_batch: dict) -> dict:
    if self.render is None:
      local_leading = self.global_leading(host_batch)[:-1] + (self.global_batch_size // jax.process_count(),)
      validate_batch(host_batch, self.spec, local_leading)
      return sharding.global_batch({name: host_batch[name] for name in self.spec}, self.mesh, self.batch_axes)
    batch = self.render(sharding.global_batch(host_batch, self.mesh, self.batch_axes))
    validate_batch(batch, self.spec, self.global_leading(host_batch))  # global arrays
    return batch

  def prefetch(self, iterator: Iterator, depth: int) -> Iterator[dict]:
    """Keeps `depth` batches in flight to the devices ahead of the one being consumed."""
    queue = collections.deque()
    for _ in range(max(depth, 1)):
      queue.append(self(next(iterator)))
    while True:
      yield queue.popleft()
      queue.append(self(next(iterator)))


def feed_for(config, mesh, method) -> Feed:
  """The Feed of a built method under a config (its data section and global batch size)."""
  return Feed(config.data, mesh, method.batch_spec, method.batch_axes, config.train.batch_size)
