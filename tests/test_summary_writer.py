"""TensorBoard events without TensorFlow: what the writer writes, TensorBoard's own reader reads back."""

import os
import sys
import types

import numpy as np
import pytest

from hallujax.summary_writer import SummaryWriter

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(logdir, monkeypatch):
  # TensorBoard's own switch to its TensorFlow stub: the reader then needs no TensorFlow either.
  monkeypatch.setitem(sys.modules, "tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                  event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def test_scalars_images_and_hparams_read_back_by_tensorboard(tmp_path, monkeypatch):
  grid = np.zeros((20, 30, 3), np.uint8)
  grid[:, :15] = 255
  batch = np.linspace(-1, 1, 2 * 8 * 8).reshape(2, 8, 8, 1).astype(np.float32)
  with SummaryWriter(tmp_path, enabled=True) as writer:
    writer.write_hparams({"train.batch_size": 16, "optim.generator.learning_rate": 1e-3, "method": "fhgan",
                          "data.strict": False, "model.channels": (8, 16)})
    for step, loss in ((10, 0.5), (20, 0.25), (30, np.float32(0.125))):
      writer.write_scalars(step, {"loss_l1": loss, "eval/psnr": 20.0 + step})
    writer.write_images(30, {"hallucinations": grid, "samples": batch})
    writer.flush()
  events = read_events(tmp_path, monkeypatch)
  assert [(e.step, e.value) for e in events.Scalars("loss_l1")] == [(10, 0.5), (20, 0.25), (30, 0.125)]
  assert [e.value for e in events.Scalars("eval/psnr")] == [30.0, 40.0, 50.0]
  image = events.Images("hallucinations")[0]
  assert (image.step, image.width, image.height) == (30, 30, 20)
  from PIL import Image
  import io
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  np.testing.assert_array_equal(decoded[..., :3], grid)
  assert events.Images("samples")[0].step == 30
  hparams = events.summary_metadata["_hparams_/experiment"].plugin_data
  assert hparams.plugin_name == "hparams"
  session = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
  for text in (b"train.batch_size", b"optim.generator.learning_rate", b"fhgan", b"(8, 16)"):
    assert text in session


def test_other_processes_write_nothing(tmp_path):
  writer = SummaryWriter(tmp_path / "run", enabled=False)
  writer.write_hparams({"a": 1})
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_images(1, {"grid": np.zeros((4, 4, 3), np.uint8)})
  writer.flush()
  writer.close()
  assert not os.path.exists(tmp_path / "run")
  default = SummaryWriter(tmp_path / "default")          # enabled=None: process 0 only; this test is process 0
  assert default.enabled
  default.close()


def test_bad_image_is_refused_with_its_name(tmp_path):
  with SummaryWriter(tmp_path, enabled=True) as writer:
    with pytest.raises(ValueError, match="image 'grid': shape \\(4, 4, 2\\)"):
      writer.write_images(0, {"grid": np.zeros((4, 4, 2), np.uint8)})
