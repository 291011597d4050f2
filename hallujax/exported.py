"""Runs a model written by ``python -m hallujax.export`` with jax and numpy only (no method code, no flax).

    from hallujax import exported
    model = exported.load("model.hlo")          # reads model.hlo, model.params.npz, model.json
    faces = model(inputs)                       # (n, in, in, C) float32 [-1, 1] -> (n, out, out, 3)
    faces = model.hallucinate_uint8(images)     # uint8 in, uint8 out

The model also serves ``hallujax.photos`` as a face model (``input_size``,
``output_size``, ``template``, ``run`` on fixed-size batches), so photos can
be hallucinated from an exported file alone. This module imports nothing from
hallujax, so it can be copied next to the files and used on its own.

A model file is code: loading refuses (ExportedModelError, one line) a file
that does not deserialize, one whose StableHLO calls native code other than
ALLOWED_CUSTOM_CALLS (a host callback would run in this process), and a
model.json whose "parameters" is not a file name in the model's own folder.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np

FORMAT = "hallujax.export/1"

# The custom-call targets a model.hlo may hold: those jax lowers a face model to (the symbolic batch size's
# shape assertions, sharding annotations, the random-bit generators and the linear-algebra kernels of jax's
# stable-export list). A custom call runs native code named by the file, so anything else — a host callback
# (xla_python_cpu_callback, which calls back into Python and crashed the demo), a Pallas or Mosaic kernel, a
# TensorFlow function — is refused before the model is compiled; hallujax.export refuses to write one too.
ALLOWED_CUSTOM_CALLS = frozenset({
    "shape_assertion", "Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "annotate_device_placement",
    "AllocateBuffer", "cu_threefry2x32_ffi", "hip_threefry2x32_ffi", "cu_lu_pivots_to_permutation",
    "hip_lu_pivots_to_permutation", "Eigh", "Qr", "LuDecomposition", "ProductOfElementaryHouseholderReflectors",
    "ApproxTopK", "cusparse_gtsv2_ffi",
})
ALLOWED_CUSTOM_CALL_PATTERN = re.compile(r"(lapack|cusolver|hipsolver)_[a-z0-9]+_ffi")
CUSTOM_CALL_TARGET = re.compile(r'custom_call\s*@([\w.$-]+)|call_target_name\s*=\s*"([^"]*)"')


class ExportedModelError(ValueError):
  """A model.hlo / model.json / model.params.npz that cannot be loaded (the message says which and why)."""


def custom_call_targets(module_text: str) -> set[str]:
  """Every custom-call target named in a StableHLO module's text (pretty or generic form)."""
  return {pretty or generic for pretty, generic in CUSTOM_CALL_TARGET.findall(module_text)}


def refused_custom_calls(exported) -> list[str]:
  """The custom-call targets of a jax.export.Exported that ALLOWED_CUSTOM_CALLS does not allow, sorted."""
  return sorted(target for target in custom_call_targets(exported.mlir_module())
                if target not in ALLOWED_CUSTOM_CALLS and not ALLOWED_CUSTOM_CALL_PATTERN.fullmatch(target))


def parameters_file(model_path: str, name) -> str:
  """model.json's "parameters" entry as a path: a plain file name in the model's own folder, nothing else."""
  if not isinstance(name, str) or not name or name in (".", "..") or os.path.basename(name) != name \
      or "/" in name or "\\" in name or "\0" in name:
    raise ExportedModelError(f"{os.path.splitext(model_path)[0]}.json names the parameters {name!r}; expected a "
                             f"file name in the model's folder (e.g. model.params.npz).")
  return os.path.join(os.path.dirname(model_path), name)


class ExportedModel:
  """A deserialized jax.export model with its parameters on the default device."""

  def __init__(self, path: str, batch_size: int = 8):
    stem = os.path.splitext(path)[0]
    for needed in (path, stem + ".json"):
      if not os.path.isfile(needed):
        raise FileNotFoundError(f"{needed}: no such file (python -m hallujax.export writes model.hlo, "
                                f"model.params.npz and model.json together).")
    try:
      with open(stem + ".json") as f:
        self.metadata = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
      raise ExportedModelError(f"{stem}.json is not a model description ({error}).") from None
    if not isinstance(self.metadata, dict) or self.metadata.get("format") != FORMAT:
      found = self.metadata.get("format") if isinstance(self.metadata, dict) else type(self.metadata).__name__
      raise ExportedModelError(f"{stem}.json has format {found!r}; expected {FORMAT!r}.")
    parameters_path = parameters_file(path, self.metadata.get("parameters"))
    with open(path, "rb") as f:
      serialized = f.read()
    try:
      self.exported = jax.export.deserialize(bytearray(serialized))
      module_refused = refused_custom_calls(self.exported)
    except Exception as error:   # flatbuffers / MLIR raise many kinds for a damaged or foreign file
      # The first line spelled out here, not hallujax.errors.first_line: this module imports nothing from hallujax.
      raise ExportedModelError(f"{path} is not a model written by python -m hallujax.export ({type(error).__name__}"
                               f": {str(error).splitlines()[0] if str(error) else 'no detail'}).") from None
    if module_refused:
      raise ExportedModelError(f"{path} calls native code this loader does not run (custom calls "
                               f"{', '.join(module_refused)}); python -m hallujax.export writes none of these.")
    try:
      with np.load(parameters_path, allow_pickle=False) as stored:
        names = sorted(stored.files)
        self.parameters = [jax.device_put(stored[name]) for name in names]
    except (OSError, ValueError, EOFError) as error:
      raise ExportedModelError(f"{parameters_path}: not the model's parameters ({error}).") from None
    self.reads_landmarks = bool(self.metadata.get("reads_landmarks", False))
    self.data_source = self.metadata.get("data_source")   # None in exports written before the field existed
    expected = len(self.exported.in_avals) - 1 - self.reads_landmarks
    if len(self.parameters) != expected:
      raise ExportedModelError(f"{parameters_path} holds {len(self.parameters)} arrays; {path} reads {expected}.")
    m = self.metadata
    try:
      self.name = f"{m['run']} (exported)"
      self.method_name = m["method"]
      self.input_size, self.input_channels = int(m["input_size"]), int(m["input_channels"])
      self.output_size, self.downsample = int(m["output_size"]), m["downsample"]
      self.template_name, self.template = m["template_name"], np.asarray(m["template"], np.float64)
    except (KeyError, TypeError, ValueError) as error:
      raise ExportedModelError(f"{stem}.json lacks or garbles a field ({type(error).__name__}: {error}).") from None
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
