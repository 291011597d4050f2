"""Runs a model written by ``python -m hallujax.export`` with jax and numpy only (no method code, no flax).

    from hallujax import exported
    model = exported.load("model.hlo")          # reads model.hlo, model.params.npz, model.json
    faces = model(inputs)                       # (n, in, in, C) float32 [-1, 1] -> (n, out, out, 3)
    faces = model.hallucinate_uint8(images)     # uint8 in, uint8 out

The model also serves ``hallujax.photos`` as a face model (``input_size``,
``output_size``, ``template``, ``run`` on fixed-size batches), so photos can
be hallucinated from an exported file alone. This module imports nothing from
hallujax, so it can be copied next to the files and used on its own.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

FORMAT = "hallujax.export/1"


class ExportedModel:
  """A deserialized jax.export model with its parameters on the default device."""

  def __init__(self, path: str, batch_size: int = 8):
    stem = os.path.splitext(path)[0]
    for needed in (path, stem + ".json"):
      if not os.path.isfile(needed):
        raise FileNotFoundError(f"{needed}: no such file (python -m hallujax.export writes model.hlo, "
                                f"model.params.npz and model.json together).")
    with open(stem + ".json") as f:
      self.metadata = json.load(f)
    if self.metadata.get("format") != FORMAT:
      raise ValueError(f"{stem}.json has format {self.metadata.get('format')!r}; expected {FORMAT!r}.")
    with open(path, "rb") as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    parameters_path = os.path.join(os.path.dirname(path), self.metadata["parameters"])
    with np.load(parameters_path) as stored:
      names = sorted(stored.files)
      self.parameters = [jax.device_put(stored[name]) for name in names]
    self.reads_landmarks = bool(self.metadata.get("reads_landmarks", False))
    expected = len(self.exported.in_avals) - 1 - self.reads_landmarks
    if len(self.parameters) != expected:
      raise ValueError(f"{parameters_path} holds {len(self.parameters)} arrays; {path} reads {expected}.")
    m = self.metadata
    self.name = f"{m['run']} (exported)"
    self.method_name = m["method"]
    self.input_size, self.input_channels = int(m["input_size"]), int(m["input_channels"])
    self.output_size, self.downsample = int(m["output_size"]), m["downsample"]
    self.template_name, self.template = m["template_name"], np.asarray(m["template"], np.float64)
    self.batch_size = batch_size
    self._call = jax.jit(self.exported.call)
    self.compiles = 0
    self._shapes: set = set()

  def __call__(self, inputs, landmarks=None) -> np.ndarray:
    """(n, in, in, C) float32 in [-1, 1] -> (n, out, out, 3) float32 in [-1, 1]; any n (one compile per n).

    `landmarks`: for a model that reads them (metadata "reads_landmarks"), (n, 68, 2) iBUG-300W points in
    the aligned crop as fractions of its side; zeros when not given. Ignored otherwise.
    """
    inputs = np.asarray(inputs, np.float32)
    expected = (self.input_size, self.input_size, self.input_channels)
    if inputs.ndim != 4 or inputs.shape[1:] != expected:
      raise ValueError(f"inputs of shape {inputs.shape}; expected (n, {', '.join(map(str, expected))}).")
    if inputs.shape[0] not in self._shapes:
      self._shapes.add(inputs.shape[0])
      self.compiles += 1
    arguments = [self.parameters, inputs]
    if self.reads_landmarks:
      arguments.append(np.zeros((len(inputs), 68, 2), np.float32) if landmarks is None
                       else np.asarray(landmarks, np.float32))
    return np.asarray(self._call(*arguments))

  run = __call__

  def hallucinate_uint8(self, images) -> np.ndarray:
    """uint8 faces (n, in, in, C) -> uint8 faces (n, out, out, 3)."""
    inputs = np.asarray(images, np.float32) * (2.0 / 255.0) - 1.0
    return np.clip(np.round((self(inputs) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def load(path: str, batch_size: int = 8) -> ExportedModel:
  return ExportedModel(path, batch_size)
