"""CASIA NIR-VIS 2.0's protocol runner on a miniature tree in the official layout."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from hallujax import photos
from hallujax.data import nir_vis
from hallujax.tools import nir_vis_protocol as protocol

SUBJECTS = ("10117", "10118", "10119", "10120", "10121")


def texture(seed: int, size: int = 48) -> np.ndarray:
  """A subject's "face": a smooth random colour pattern (distinct per subject)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))


@pytest.fixture
def casia(tmp_path):
  """s1/VIS/<subject>/001.jpg (gallery), s2/NIR/<subject>/00k.bmp (probes: the grey face), 2 folds."""
  root = tmp_path / "NIR-VIS-2.0"
  for index, subject in enumerate(SUBJECTS):
    face = texture(index)
    (root / "s1" / "VIS" / subject).mkdir(parents=True)
    Image.fromarray(face).save(root / "s1" / "VIS" / subject / "001.jpg", quality=98)
    (root / "s2" / "NIR" / subject).mkdir(parents=True)
    for k in range(3):
      Image.fromarray(face).convert("L").save(root / "s2" / "NIR" / subject / f"00{k}.bmp")
  (root / "protocols").mkdir()
  for fold in (1, 2):
    gallery = "".join(f"s1\\VIS\\{subject}\\001.jpg\n" for subject in SUBJECTS)
    # The release lists some NIR images as .jpg although they are .bmp on disk.
    probes = "".join(f"s2\\NIR\\{subject}\\00{k}.jpg\n" for subject in SUBJECTS for k in range(3))
    (root / "protocols" / f"vis_gallery_{fold}.txt").write_text(gallery)
    (root / "protocols" / f"nir_probe_{fold}.txt").write_text(probes + "\n")
  (root / "protocols" / "vis_gallery_3.txt").write_text(gallery)   # no nir_probe_3: not a fold
  return str(root)


class GreyToColourModel:
  """Stands in for a NIR → VIS run: 32² grey input, 32² output (the grey repeated over RGB)."""
  input_size, output_size, input_channels, downsample, reads_landmarks = 32, 32, 1, "bicubic", True
  template = photos.template_points("arcface")
  calls = 0

  def run(self, inputs, landmarks):
    assert inputs.shape == (4, 32, 32, 1) and landmarks.shape == (4, 68, 2)   # one compiled batch size
    GreyToColourModel.calls += 1
    return np.repeat(inputs, 3, axis=-1)


def pooled_features(images):
  """A toy recognizer: the 4×4 average-pooled luminance, flattened and centred."""
  images = np.asarray(images) @ np.array([0.299, 0.587, 0.114], np.float32)
  pooled = images.reshape(len(images), 4, images.shape[1] // 4, 4, images.shape[2] // 4).mean(axis=(2, 4))
  flat = pooled.reshape(len(images), -1)
  return flat - flat.mean(axis=1, keepdims=True)


def test_protocol_files_are_read_as_the_release_writes_them(casia):
  assert nir_vis.protocol_folds(casia) == [1, 2]
  probes = nir_vis.read_list(casia, "nir_probe_1.txt")
  assert len(probes) == 15 and probes[0][1] == "10117"
  assert probes[0][0].endswith(os.path.join("s2", "NIR", "10117", "000.bmp"))   # listed .jpg, found .bmp
  with pytest.raises(FileNotFoundError, match="s9/VIS/1/001.jpg .listed in the protocol. is not under"):
    nir_vis.resolve(casia, "s9\\VIS\\1\\001.jpg")
  with pytest.raises(FileNotFoundError, match="no protocols/ directory"):
    nir_vis.protocol_folds(os.path.dirname(casia))


def test_fused_scores_and_faceless_probes():
  gallery = np.eye(3, dtype=np.float32)
  subjects = np.array(["a", "b", "c"])
  generated = np.array([[1, 0, 0], [0, 1, 0], [np.nan, np.nan, np.nan]], np.float32)   # probe 3: no face
  raw = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
  scores = protocol.fold_scores(raw, generated, subjects, gallery, subjects)
  assert scores["rank1_generated"] == pytest.approx(2 / 3)
  assert scores["rank1_nir"] == pytest.approx(1 / 3)    # the face-less probe is a miss for every row
  assert scores["rank1_fused"] == pytest.approx(2 / 3)


def test_a_fold_runs_end_to_end_on_aligned_crops(casia, tmp_path):
  model = GreyToColourModel()
  faces = protocol.Faces(model, "aligned", str(tmp_path / "eval" / "faces.json"))
  scores = protocol.run_fold(1, casia, model, faces, pooled_features, batch_size=4)
  # Every grey probe is closest to its own subject's colour gallery image, raw or "generated".
  assert scores["rank1_nir"] == 1.0 and scores["rank1_generated"] == 1.0 and scores["rank1_fused"] == 1.0
  assert GreyToColourModel.calls == 4    # 15 probes in batches of 4, the last one padded
  faces.save()
  assert len(protocol.Faces(model, "aligned", str(tmp_path / "eval" / "faces.json")).cache) == 20
