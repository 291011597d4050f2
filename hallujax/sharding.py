"""Sharding is configuration: a named mesh from ``config.mesh`` and rules for the state.

The mesh has three axes, ``clients``, ``data`` and ``model`` (sizes from the
config; ``clients`` and ``model`` are 1 unless a run asks for them). A
method declares its batch's leading axes: ``("batch",)`` batches are split
over ``data``; ``("clients", "batch")`` batches, ``(K, B_k, ...)``, are
split over ``clients`` and ``data``.

Every leaf of the train state gets its sharding from rules, first match wins:
``(regex, spec)`` where the regex is searched in the leaf's path (e.g.
``params/generator/Conv_0/kernel``) and the spec is a tuple with one mesh axis
name (or None) per leading dimension, ``"fsdp"`` (split the largest evenly
divisible dimension over ``data``, ZeRO-3 style, for leaves of at least
``mesh.fsdp_min_size`` elements) or ``"replicated"``. The method's own rules
(``Method.state_rules``, e.g. a stacked-clients state) come first, then
``config.mesh.rules``, then ``(".*", "fsdp")`` when ``config.mesh.fsdp``; an
unmatched leaf is replicated. A ``model`` axis larger than 1 with no rule
using it is refused: it would only repeat work.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CLIENTS_AXIS = "clients"
DATA_AXIS = "data"
MODEL_AXIS = "model"
AXES = (CLIENTS_AXIS, DATA_AXIS, MODEL_AXIS)
# A method's batch axis names -> the mesh axes they are split over.
BATCH_AXIS_TO_MESH = {"clients": CLIENTS_AXIS, "batch": DATA_AXIS}


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A (clients, data, model) mesh over all devices; ``data=-1`` takes what the others leave."""
  devices = list(devices if devices is not None else jax.devices())
  clients = int(mesh_config.clients)
  model = int(mesh_config.model)
  data = int(mesh_config.data)
  for name, size in (("clients", clients), ("model", model)):
    if size < 1 or len(devices) % size:
      raise ValueError(f"config.mesh.{name}={size} must be a positive divisor of the {len(devices)} devices.")
  if data == -1:
    data = len(devices) // (model * clients)
  if data < 1 or clients * data * model != len(devices):
    raise ValueError(
        f"config.mesh.clients={clients} × data={mesh_config.data} × model={model} = {clients * data * model}, "
        f"but {len(devices)} devices are present. Use data=-1 to take all remaining devices.")
  return jax.make_mesh((clients, data, model), AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_partition(batch_axes: tuple[str, ...] = ("batch",)) -> PartitionSpec:
  """The PartitionSpec of a batch field whose leading axes are `batch_axes`."""
  return PartitionSpec(*(BATCH_AXIS_TO_MESH[axis] for axis in batch_axes))


def batch_sharding(mesh: Mesh, batch_axes: tuple[str, ...] = ("batch",)) -> NamedSharding:
  """Leading batch axes split over the mesh axes they map to (see BATCH_AXIS_TO_MESH)."""
  return NamedSharding(mesh, batch_partition(batch_axes))


def batch_divisor(mesh: Mesh, batch_axes: tuple[str, ...] = ("batch",)) -> dict[str, int]:
  """How many devices each leading batch axis is split over, e.g. {"clients": 2, "batch": 4}."""
  return {axis: mesh.shape[BATCH_AXIS_TO_MESH[axis]] for axis in batch_axes}


def leaf_path(path) -> str:
  """A pytree key path as "params/generator/Conv_0/kernel"."""
  parts = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def all_rules(mesh_config, method_rules: Iterable = ()) -> list[tuple[str, Any]]:
  rules = [tuple(rule) for rule in method_rules] + [tuple(rule) for rule in mesh_config.rules]
  if mesh_config.fsdp:
    rules.append((".*", "fsdp"))
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"Sharding rule {rule!r} is not (regex, spec); e.g. ('params/.*kernel', (None, 'model')).")
  return rules


def fsdp_spec(shape: tuple[int, ...], mesh: Mesh, min_size: int) -> PartitionSpec:
  """Split over `data` along the largest evenly divisible dimension; replicated if small or none divides."""
  data_size = mesh.shape[DATA_AXIS]
  if data_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return PartitionSpec()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % data_size == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA_AXIS
      return PartitionSpec(*spec)
  return PartitionSpec()


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules, min_size: int) -> PartitionSpec:
  for pattern, spec in rules:
    if re.search(pattern, path):
      if spec == "replicated":
        return PartitionSpec()
      if spec == "fsdp":
        return fsdp_spec(shape, mesh, min_size)
      spec = tuple(spec)
      if len(spec) > len(shape):
        raise ValueError(f"Sharding rule ({pattern!r}, {spec}) names {len(spec)} dimensions; "
                         f"{path} has shape {shape}.")
      for dimension, axis in enumerate(spec):
        if axis is not None and shape[dimension] % mesh.shape[axis]:
          raise ValueError(f"Sharding rule ({pattern!r}, {spec}): {path} dimension {dimension} of size "
                           f"{shape[dimension]} does not split over the {mesh.shape[axis]} devices of "
                           f"mesh axis {axis!r}.")
      return PartitionSpec(*spec)
  return PartitionSpec()


def state_shardings(abstract_state, mesh: Mesh, mesh_config, method_rules: Iterable = ()):
  """Shardings for every leaf of a train state (arrays or `jax.eval_shape` structs), from the rules."""
  rules = all_rules(mesh_config, method_rules)
  min_size = int(mesh_config.fsdp_min_size)
  specs = jax.tree_util.tree_map_with_path(
      lambda path, leaf: spec_for(leaf_path(path), tuple(leaf.shape), mesh, rules, min_size), abstract_state)
  if mesh.shape[MODEL_AXIS] > 1:
    used = any(MODEL_AXIS in tuple(spec) for spec in jax.tree.leaves(specs, is_leaf=lambda s: isinstance(
        s, PartitionSpec)))
    if not used:
      raise ValueError(
          f"config.mesh.model={mesh.shape[MODEL_AXIS]}, but no sharding rule splits any parameter over the "
          f"'model' axis: every model-axis device would repeat the same work. Add rules to config.mesh.rules, "
          f"e.g. ('params/.*/kernel', (None, None, None, 'model')), or use mesh.model=1.")
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda s: isinstance(s, PartitionSpec))


def global_batch(local_batch: dict, mesh: Mesh, batch_axes: tuple[str, ...] = ("batch",)) -> dict:
  """Per-process host arrays -> one global jax.Array per field, split over the batch's mesh axes."""
  sharding = batch_sharding(mesh, batch_axes)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}
