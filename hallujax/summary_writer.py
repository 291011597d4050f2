"""TensorBoard event files without TensorFlow, on tensorboardX.

The trainer, evaluate and benchmark write through ``SummaryWriter``:

    writer = SummaryWriter(workdir)               # only process 0 writes (multi-host runs)
    writer.write_hparams({"train.batch_size": 16, ...})
    writer.write_scalars(step, {"loss_l1": 0.12, "eval/psnr": 24.1})
    writer.write_images(step, {"hallucinations": grid})   # HWC or NHWC uint8
    writer.flush(); writer.close()

View them with `tensorboard --logdir WORKDIR`. tensorboardX writes the same
event protocol TensorBoard reads (scalars, PNG images, the hparams plugin's
summaries), importing in well under a second with no TensorFlow.
:func:`read_scalars` reads the scalars back, also without TensorFlow.
"""

from __future__ import annotations

import glob
import math
import os
import struct
from typing import Any, Mapping

import numpy as np

from hallujax.images import to_uint8


def _to_uint8_images(name: str, image) -> tuple[np.ndarray, str]:
  """(uint8 array, "HWC" | "NHWC") of an image or a batch; grey images are given three channels.

  uint8 is kept; float images are taken in the project's [-1, 1] range
  (hallujax.images.to_uint8).
  """
  array = np.asarray(image)
  if array.dtype != np.uint8:
    if not np.issubdtype(array.dtype, np.floating):
      raise ValueError(f"image {name!r}: dtype {array.dtype}; expected uint8 [0, 255] or float [-1, 1].")
    array = to_uint8(array)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim not in (3, 4) or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {name!r}: shape {array.shape}; expected (H, W[, 1|3|4]) or (N, H, W, 1|3|4).")
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return array, ("HWC" if array.ndim == 3 else "NHWC")


def _hparam_value(value: Any) -> int | float | str | bool:
  if isinstance(value, (bool, int, str)):
    return value
  if isinstance(value, float):
    return value if math.isfinite(value) else str(value)
  if isinstance(value, np.generic):
    return _hparam_value(value.item())
  return str(value)


def read_scalars(logdir: str | os.PathLike, prefix: str = "") -> dict[int, dict[str, float]]:
  """{step: {tag: value}} of the scalars whose tag starts with `prefix` in `logdir`'s event files.

  Event files are TFRecord files (a little-endian uint64 length, its 4-byte CRC, the record, the record's
  4-byte CRC) of ``Event`` protos; tensorboardX ships the proto, so no TensorFlow is needed. The files are
  read in name order (their names start with the creation time, so a resumed run's later value of a step
  wins); a record cut short by a killed writer ends its file. CRCs are not checked.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  scalars: dict[int, dict[str, float]] = {}
  for path in sorted(glob.glob(os.path.join(os.fspath(logdir), "events.out.tfevents.*"))):
    with open(path, "rb") as file:
      data = file.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      record = data[offset + 12:offset + 12 + length]
      offset += 12 + length + 4
      if offset > len(data):
        break
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.tag.startswith(prefix) and value.WhichOneof("value") == "simple_value":
          scalars.setdefault(int(event.step), {})[value.tag] = value.simple_value
  return scalars


class SummaryWriter:
  """Scalars, images and hyperparameters as TensorBoard events in `logdir`.

  `enabled`: whether this process writes; None means "process 0 only"
  (`jax.process_index() == 0`). A disabled writer creates no file and every
  method does nothing, so every process can call it unconditionally.
  """

  def __init__(self, logdir: str | os.PathLike, enabled: bool | None = None, flush_seconds: float = 30.0):
    if enabled is None:
      import jax  # pylint: disable=import-outside-toplevel
      enabled = jax.process_index() == 0
    self.logdir = os.fspath(logdir)
    self.enabled = bool(enabled)
    self._writer = None
    if self.enabled:
      try:
        import tensorboardX  # pylint: disable=import-outside-toplevel
      except ImportError as error:
        raise ImportError("Writing TensorBoard events needs tensorboardX: pip install tensorboardX.") from error
      os.makedirs(self.logdir, exist_ok=True)
      self._writer = tensorboardX.SummaryWriter(logdir=self.logdir, flush_secs=flush_seconds)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """One scalar event per name at `step` (values: Python, numpy or jax scalars)."""
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(np.asarray(value)), global_step=int(step))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """PNG image events: each value (H, W[, C]) or (N, H, W, C), uint8 or float in [-1, 1]."""
    if self._writer is None:
      return
    for name, image in images.items():
      array, layout = _to_uint8_images(name, image)
      if layout == "HWC":
        self._writer.add_image(name, array, global_step=int(step), dataformats="HWC")
      else:
        self._writer.add_images(name, array, global_step=int(step), dataformats="NHWC")

  def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
    """The run's hyperparameters for TensorBoard's HPARAMS tab (in this run, not a sub-run).

    Values other than bool/int/float/str are written as their str().
    `metrics` names scalar tags the HPARAMS tab should show next to them.
    """
    if self._writer is None:
      return
    from tensorboardX.summary import hparams as hparams_summary  # pylint: disable=import-outside-toplevel
    values = {str(name): _hparam_value(value) for name, value in hparams.items()}
    experiment, start, end = hparams_summary(values, dict(metrics or {}))
    file_writer = self._writer._get_file_writer()  # pylint: disable=protected-access
    for summary in (experiment, start, end):
      file_writer.add_summary(summary)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
