"""CASIA NIR-VIS 2.0 as a training source: protocol lists, the landmark cache, aligned unaligned pairs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from hallujax import images
from hallujax.config_base import base_config
from hallujax.data import alignment, nir_vis, pipeline

SUBJECTS = ("10117", "10118", "10119", "10120")


@pytest.fixture(scope="module")
def casia(tmp_path_factory):
  """Face-world NIR / VIS renders of 4 subjects in CASIA's layout, with their true 68 points as landmarks.json."""
  config = base_config()
  config.data.update(pairing="nir_unaligned", input_channels=1, input_size=64, target_size=64, num_identities=4,
                     eval_size=32, max_yaw=20.0)
  config.train.update(batch_size=32, eval_batches=1)
  batch = pipeline.eval_batches(config, "test")[0]
  root = tmp_path_factory.mktemp("casia") / "NIR-VIS-2.0"
  cache, counts, lists = {}, {}, {name: [] for name in ("nir_train_1", "vis_train_1", "nir_probe_1", "vis_gallery_1")}
  for k in range(len(batch["identity"])):
    subject = SUBJECTS[int(batch["identity"][k]) % len(SUBJECTS)]
    n = counts[subject] = counts.get(subject, 0) + 1
    test = subject in SUBJECTS[2:]
    for modality, image, points, extension in (
        ("NIR", batch["input"][k, ..., 0], batch["input_landmarks"][k], ".bmp"),
        ("VIS", batch["target"][k], batch["landmarks"][k], ".jpg")):
      relative = os.path.join("s1", modality, subject, f"{n:03d}{extension}")
      os.makedirs(root / os.path.dirname(relative), exist_ok=True)
      Image.fromarray(images.to_uint8(image)).save(root / relative)
      cache[relative] = np.asarray(points).tolist()
      kind = ("nir_probe_1" if modality == "NIR" else "vis_gallery_1") if test else f"{modality.lower()}_train_1"
      if not (kind == "vis_gallery_1" and n > 1):   # one gallery image per test subject
        lists[kind].append(relative.replace(os.sep, "\\"))
  os.makedirs(root / "protocols")
  for name, lines in lists.items():
    (root / "protocols" / f"{name}.txt").write_text("\n".join(lines) + "\n")
  (root / "landmarks.json").write_text(json.dumps(cache))
  return str(root)


def casia_config(data_dir: str, size: int = 48):
  config = base_config()
  config.data.update(source="casia_nir_vis", data_dir=data_dir, pairing="nir_unaligned", input_channels=1,
                     input_size=size, target_size=size)
  return config


def test_pairs_are_two_captures_of_one_subject_aligned_to_the_template(casia):
  config = casia_config(casia)
  source = nir_vis.CasiaNirVisFolder(config.data, "train")
  assert {subject for _, subject, _ in source.items} == set(SUBJECTS[:2])
  example = source[0]
  assert example["input"].shape == (48, 48, 1) and example["target"].shape == (48, 48, 3)
  template_size, template = alignment.TEMPLATES["arcface112"]
  expected = (template + 0.5) * 48 / template_size - 0.5
  for points in (example["input_landmarks"], example["landmarks"]):
    # The similarity fit puts the 5 points near the template (exactly only for a similar face).
    assert np.abs(alignment.five_from_68(points) - expected).max() < 4.0
  nir_path, subject, _ = source.items[0]
  assert f"{os.sep}NIR{os.sep}{subject}{os.sep}" in nir_path


def test_test_split_pairs_probes_with_the_gallery_and_feeds_pcfh_shaped_batches(casia):
  config = casia_config(casia)
  config.train.update(batch_size=2, eval_batches=1)
  batch = pipeline.eval_batches(config, "test")[0]
  assert batch["input"].shape == (2, 48, 48, 1) and batch["aligned_target"].shape == (2, 48, 48, 3)
  assert batch["input_landmarks"].shape == (2, 68, 2) and batch["identity"].dtype == np.int32
  assert batch["input"].min() >= -1.0 and batch["input"].max() <= 1.0


def test_missing_or_incomplete_landmarks_say_which_command_makes_them(casia, tmp_path):
  copy = tmp_path / "NIR-VIS-2.0"
  os.makedirs(copy)
  os.symlink(os.path.join(casia, "s1"), copy / "s1")
  os.symlink(os.path.join(casia, "protocols"), copy / "protocols")
  with pytest.raises(FileNotFoundError, match="python -m hallujax.tools.nir_vis_landmarks --data_dir"):
    nir_vis.CasiaNirVisFolder(casia_config(str(copy)).data, "train")
  cache = json.load(open(os.path.join(casia, "landmarks.json")))
  first_training_image = open(os.path.join(casia, "protocols", "nir_train_1.txt")).readline().strip()
  cache.pop(first_training_image.replace("\\", os.sep))
  (copy / "landmarks.json").write_text(json.dumps(cache))
  with pytest.raises(FileNotFoundError, match="have no entry in landmarks.json"):
    nir_vis.CasiaNirVisFolder(casia_config(str(copy)).data, "train")


def test_the_landmark_cache_detects_each_image_once(casia, tmp_path, monkeypatch):
  copy = tmp_path / "NIR-VIS-2.0"
  os.makedirs(copy)
  os.symlink(os.path.join(casia, "s1"), copy / "s1")
  os.symlink(os.path.join(casia, "protocols"), copy / "protocols")
  detected = []
  monkeypatch.setattr(nir_vis, "_detect", lambda path: detected.append(path) or [[0.0, 0.0]] * 68)
  cache = nir_vis.build_cache(str(copy), workers=1, log=lambda _: None)
  listed = sum(len(open(os.path.join(casia, "protocols", name)).read().split()) for name in
               os.listdir(os.path.join(casia, "protocols")))
  assert len(detected) == len(cache) == listed
  detected.clear()
  nir_vis.build_cache(str(copy), workers=1, log=lambda _: None)
  assert detected == []    # every listed image is already in landmarks.json
