"""Sharding is configuration: a named mesh from ``config.mesh`` and rules for the state.

The mesh has two axes, ``data`` and ``model``. Batches are split over
``data``. The train state is replicated by default; with
``config.mesh.fsdp`` every parameter (and its optimizer moments) with at
least ``fsdp_min_size`` elements is split over ``data`` along its largest
dimension that divides evenly (ZeRO-3 style: XLA gathers it for the forward
pass and reduce-scatters its gradient). The ``model`` axis is kept in the mesh
so that model-parallel rules can be added without changing callers; no
current network is large enough to need it, so its size is 1 by default.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A (data, model) mesh over all devices; ``data=-1`` takes what ``model`` leaves."""
  devices = list(devices if devices is not None else jax.devices())
  model = int(mesh_config.model)
  data = int(mesh_config.data)
  if model < 1 or len(devices) % model:
    raise ValueError(
        f"config.mesh.model={model} must be a positive divisor of the {len(devices)} devices.")
  if data == -1:
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(
        f"config.mesh.data={mesh_config.data} × config.mesh.model={model} = {data * model}, "
        f"but {len(devices)} devices are present. Use data=-1 to take all remaining devices.")
  return jax.make_mesh(
      (data, model), (DATA_AXIS, MODEL_AXIS),
      axis_types=(jax.sharding.AxisType.Auto,) * 2,
      devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def parameter_sharding(shape: tuple[int, ...], mesh: Mesh, mesh_config) -> NamedSharding:
  """Replicated, or (FSDP) split over `data` along the largest evenly divisible dimension."""
  data_size = mesh.shape[DATA_AXIS]
  if not mesh_config.fsdp or data_size == 1 or int(np.prod(shape, dtype=np.int64)) < mesh_config.fsdp_min_size:
    return replicated(mesh)
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % data_size == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA_AXIS
      return NamedSharding(mesh, PartitionSpec(*spec))
  return replicated(mesh)


def state_shardings(abstract_state, mesh: Mesh, mesh_config):
  """Shardings for every leaf of a train state (from `jax.eval_shape`)."""
  return jax.tree.map(lambda leaf: parameter_sharding(leaf.shape, mesh, mesh_config), abstract_state)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Per-process host arrays -> one global jax.Array per field, split over `data`."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}
