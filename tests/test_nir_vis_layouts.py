"""BUAA-VisNir and Oulu-CASIA NIR-VIS: layouts, the protocols' subject splits, sources and the protocol runner.

Synthetic trees in each layout with the protocols' subject counts: tiny per-subject textures (each file a
distinct brightness shift of its subject's texture, so a file is recognisable by its pixels), and 68
landmarks written straight into landmarks.json (placed on the ArcFace template, so alignment at SIZE² is the
identity and dlib is never needed).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from hallujax import photos
from hallujax.config_base import base_config
from hallujax.data import alignment, nir_vis, pipeline
from hallujax.data.sources import make_source
from hallujax.tools import nir_vis_landmarks
from hallujax.tools import nir_vis_protocol as protocol
from tests.test_nir_vis_protocol import pooled_features   # the same toy recognizer

SIZE = 32
EXPRESSIONS = ("Anger", "Surprise")   # 2 of the release's 6 sequences per subject keep the file fast


def texture(seed: int) -> np.ndarray:
  """A subject's "face": a smooth random colour pattern in 30..130 (room for per-file shifts)."""
  coarse = np.random.default_rng(seed).uniform(30, 130, (4, 4, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.BILINEAR))


def template_landmarks() -> list:
  """68 points whose eye centres, nose tip and mouth corners sit on the ArcFace template at SIZE²."""
  template_size, template = alignment.TEMPLATES["arcface112"]
  five = (template + 0.5) * SIZE / template_size - 0.5
  points = np.repeat(five[2:3], 68, axis=0)
  points[36:42], points[42:48], points[30], points[48], points[54] = five[0], five[1], five[2], five[3], five[4]
  return points.tolist()


def save(root, relative: str, image: np.ndarray, cache: dict) -> None:
  path = os.path.join(root, relative)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)
  cache[relative] = template_landmarks()


def shifted(face: np.ndarray, k: int) -> np.ndarray:
  return (face.astype(np.int16) + 2 * k).astype(np.uint8)   # files of a subject differ by >= 2 levels


@pytest.fixture(scope="module")
def buaa(tmp_path_factory):
  """150 subjects 1..150: VIS/<s>/1.png, 3.png (colour) and NIR/<s>/2.png, 4.png (grey)."""
  root = str(tmp_path_factory.mktemp("buaa") / "BUAA-VisNir")
  cache = {}
  for subject in range(1, 151):
    face = texture(subject)
    for k in (1, 2, 3, 4):
      image = shifted(face, k)
      modality = "VIS" if k % 2 else "NIR"
      save(root, os.path.join(modality, str(subject), f"{k}.png"),
           image if modality == "VIS" else np.asarray(Image.fromarray(image).convert("L")), cache)
  with open(os.path.join(root, nir_vis.CACHE_NAME), "w") as f:
    json.dump(cache, f)
  return root


@pytest.fixture(scope="module")
def oulu(tmp_path_factory):
  """OriginalImg/{NI,VL}/Strong/P001..P042/<expression>/000..008.jpeg, and P043 filmed only in NIR."""
  root = str(tmp_path_factory.mktemp("oulu") / "OriginalImg")
  cache = {}
  for number in range(1, 44):
    face = texture(1000 + number)
    for camera in ("NI", "VL") if number <= 42 else ("NI",):
      for e, expression in enumerate(EXPRESSIONS):
        for frame in range(9):
          image = shifted(face, e * 9 + frame) if camera == "VL" else np.asarray(
              Image.fromarray(shifted(face, e * 9 + frame)).convert("L"))
          save(root, os.path.join(camera, "Strong", f"P{number:03d}", expression, f"{frame:03d}.png"), image, cache)
  with open(os.path.join(root, nir_vis.CACHE_NAME), "w") as f:
    json.dump(cache, f)
  return root


def subjects(images) -> set[str]:
  return {subject for _, subject in images}


def test_buaa_splits_are_subject_disjoint_with_the_protocols_counts(buaa):
  train_nir, train_vis = nir_vis.split_images(buaa, "buaa", "train")
  probes, gallery = nir_vis.split_images(buaa, "buaa", "test")
  assert subjects(train_nir) == subjects(train_vis) == {str(s) for s in range(1, 51)}   # natural order: 1..50
  assert subjects(probes) == subjects(gallery) == {str(s) for s in range(51, 151)}
  assert len(train_nir) == len(train_vis) == 100 and len(probes) == 200
  assert len(gallery) == 100 and all(path.endswith(f"VIS{os.sep}{s}{os.sep}1.png") for path, s in gallery)
  assert all(f"{os.sep}NIR{os.sep}{s}{os.sep}" in path for path, s in train_nir + probes)
  assert nir_vis.split_images(buaa, "buaa", "validation") == (probes, gallery)


def test_oulu_splits_take_40_subjects_and_8_frames_per_expression_and_camera(oulu):
  train_nir, train_vis = nir_vis.split_images(oulu, "oulu", "train")
  probes, gallery = nir_vis.split_images(oulu, "oulu", "test")
  assert subjects(train_nir) == subjects(train_vis) == {f"P{n:03d}" for n in range(1, 21)}
  assert subjects(probes) == subjects(gallery) == {f"P{n:03d}" for n in range(21, 41)}   # P041-43 unused
  assert len(train_nir) == len(train_vis) == len(probes) == len(gallery) == 20 * 2 * 8   # all VIS = gallery
  frames = sorted(os.path.basename(p) for p, s in probes if s == "P021" and f"{os.sep}Surprise{os.sep}" in p)
  assert len(frames) == 8 and frames[0] == "000.png" and frames[-1] == "008.png"      # spread over the sequence
  assert len(nir_vis.protocol_images(oulu, "oulu")) == 40 * 2 * 2 * 8   # what the landmark command detects
  one_each, _ = protocol.protocol_splits(oulu, "oulu", gallery="one")["test"]
  assert len(one_each) == 20 and subjects(one_each) == subjects(gallery)


def test_named_subject_lists_replace_the_default_order(buaa, tmp_path):
  copy = tmp_path / "BUAA-VisNir"
  os.makedirs(copy / "protocols")
  for name in ("NIR", "VIS", nir_vis.CACHE_NAME):
    os.symlink(os.path.join(buaa, name), copy / name)
  (copy / "protocols" / "train_subjects.txt").write_text("7\n9\n")
  (copy / "protocols" / "test_subjects.txt").write_text("150\n")
  probes, gallery = nir_vis.split_images(str(copy), "buaa", "test")
  assert subjects(nir_vis.split_images(str(copy), "buaa", "train")[0]) == {"7", "9"}
  assert subjects(probes) == subjects(gallery) == {"150"}
  (copy / "protocols" / "test_subjects.txt").write_text("150\n9\n")
  with pytest.raises(ValueError, match="share subjects .e.g. '9'.; the protocol's splits are subject-disjoint"):
    nir_vis.split_images(str(copy), "buaa", "train")


def files_by_pixels(root: str, modality: str) -> tuple[list[str], np.ndarray]:
  """Every file under root/modality and its grey pixels, stacked (N, SIZE, SIZE)."""
  paths = sorted(os.path.join(directory, name) for directory, _, names in os.walk(os.path.join(root, modality))
                 for name in names)
  return paths, np.stack([np.asarray(Image.open(path).convert("L")) for path in paths]).astype(np.int16)


def which_file(files: tuple[list[str], np.ndarray], grey: np.ndarray) -> str:
  """The file whose pixels the (aligned = unchanged) image holds, up to resampling rounding."""
  paths, pixels = files
  differences = np.abs(pixels - grey.astype(np.int16)).reshape(len(paths), -1).max(axis=1)
  assert differences.min() <= 1
  return paths[int(np.argmin(differences))]


@pytest.mark.parametrize("name, layout, nir, vis", [("buaa_vis_nir", "buaa", "NIR", "VIS"),
                                                    ("oulu_casia_nir_vis", "oulu", "NI", "VL")])
def test_sources_pair_two_files_of_one_subject(name, layout, nir, vis, request):
  root = request.getfixturevalue(layout)
  config = base_config()
  config.data.update(source=name, data_dir=root, pairing="nir_unaligned", input_channels=1, input_size=SIZE,
                     target_size=SIZE)
  nir_files, vis_files = files_by_pixels(root, nir), files_by_pixels(root, vis)
  subject_folder = 1 if layout == "buaa" else 2    # NIR/<subject>/<image>, NI/<illumination>/<subject>/...
  seen = {}
  for split in ("train", "test"):
    source = make_source(config.data, split)
    seen[split] = set()
    for index in range(0, len(source), 37):
      example = source[index]
      assert example["input"].shape == (SIZE, SIZE, 1) and example["target"].shape == (SIZE, SIZE, 3)
      assert example["input_landmarks"].shape == example["landmarks"].shape == (68, 2)
      nir_file = os.path.relpath(which_file(nir_files, example["input"][..., 0]), root).split(os.sep)
      vis_file = os.path.relpath(which_file(vis_files, np.asarray(Image.fromarray(example["target"]).convert("L"))),
                                 root).split(os.sep)
      assert nir_file[0] == nir and vis_file[0] == vis                       # a NIR file and a VIS file ...
      assert nir_file[subject_folder] == vis_file[subject_folder]            # ... of one subject
      seen[split].add(nir_file[subject_folder])
  assert seen["train"] and seen["test"] and not seen["train"] & seen["test"]   # test subjects are unseen


class GreyToColourModel:
  """Stands in for a NIR → VIS run: 32² grey input, 32² output (the grey repeated over RGB)."""
  input_size, output_size, input_channels, downsample, reads_landmarks = 32, 32, 1, "bicubic", True
  template = photos.template_points("arcface")

  def run(self, inputs, landmarks):
    assert inputs.shape == (16, 32, 32, 1) and landmarks.shape == (16, 68, 2)
    return np.repeat(inputs, 3, axis=-1)


@pytest.mark.parametrize("layout, probes, gallery", [("buaa", 200, 100), ("oulu", 320, 320)])
def test_the_protocol_runs_on_the_single_split(layout, probes, gallery, request, tmp_path):
  root = request.getfixturevalue(layout)
  splits = protocol.protocol_splits(root, layout)
  assert list(splits) == ["test"]
  gallery_list, probe_list = splits["test"]
  assert (len(probe_list), len(gallery_list)) == (probes, gallery)
  model = GreyToColourModel()
  faces = protocol.Faces(model, "detect", str(tmp_path / "faces.json"), root)   # landmarks.json: no dlib
  scores = protocol.run_split(layout, gallery_list, probe_list, model, faces, pooled_features, batch_size=16)
  assert faces.missing == []
  for name in ("nir", "generated", "fused"):   # every probe is nearest to its own subject's texture
    assert scores[f"rank1_{name}"] == 1.0 and scores[f"vr_at_far_1e-2_{name}"] == 1.0
  text = protocol.markdown(protocol.summary_over_folds({"test": scores}), {"test": scores}, [], layout)
  assert protocol.TITLES[layout] in text and "| fused (paper) | 1.0000 | 1.0000 |" in text and "±" not in text


def one_line(error) -> str:
  message = str(error.value)
  assert "\n" not in message
  return message


def test_wrong_or_missing_layouts_say_what_was_expected(buaa, oulu, tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    nir_vis.split_images(str(tmp_path), "buaa", "train")
  assert "(no NIR/ or VIS/ directory)" in one_line(error) and "NIR/<subject>/<image> and VIS/" in one_line(error)
  os.symlink(buaa, tmp_path / "BUAA-VisNir")
  with pytest.raises(FileNotFoundError, match="BUAA-VisNir has them: give that as the data directory"):
    nir_vis.split_images(str(tmp_path), "buaa", "train")
  few = tmp_path / "few"
  for modality in ("NIR", "VIS"):
    for subject in ("1", "2"):
      os.makedirs(few / modality / subject)
      (few / modality / subject / "1.png").write_bytes(b"")
  with pytest.raises(FileNotFoundError) as error:
    nir_vis.split_images(str(few), "buaa", "test")
  assert "2 subjects have both NIR and VIS images; the protocol needs 150: 50 train + 100 test" in one_line(error)
  with pytest.raises(FileNotFoundError) as error:
    nir_vis.split_images(oulu, "oulu", "train", illumination="Bright")
  assert "no NI/Bright/ or VL/Bright/ directory (illuminations found: Strong)" in one_line(error)
  with pytest.raises(FileNotFoundError, match="OriginalImg has them: give that as the data directory"):
    nir_vis.split_images(os.path.dirname(oulu), "oulu", "train")
  with pytest.raises(ValueError) as error:
    nir_vis.split_images(buaa, "lamp_hq", "train")
  assert "layout='lamp_hq' is not a known NIR-VIS layout; expected one of casia, buaa, oulu" in one_line(error)


def test_missing_landmarks_name_the_command_for_the_layout(buaa, tmp_path):
  copy = tmp_path / "BUAA-VisNir"
  os.makedirs(copy)
  for name in ("NIR", "VIS"):
    os.symlink(os.path.join(buaa, name), copy / name)
  config = base_config()
  config.data.update(source="buaa_vis_nir", data_dir=str(copy), pairing="nir_unaligned", target_size=SIZE)
  with pytest.raises(FileNotFoundError,
                     match=r"python -m hallujax.tools.nir_vis_landmarks --data_dir \S+ --layout buaa\.$"):
    make_source(config.data, "train")


def test_the_cache_command_detects_each_protocol_image_once(buaa, tmp_path, monkeypatch, capsys):
  copy = tmp_path / "BUAA-VisNir"
  os.makedirs(copy)
  for name in ("NIR", "VIS"):
    os.symlink(os.path.join(buaa, name), copy / name)
  detected = []
  monkeypatch.setattr(nir_vis, "_detect", lambda path: detected.append(path) or template_landmarks())
  nir_vis_landmarks.main(["--data_dir", str(copy), "--layout", "buaa", "--workers", "1"])
  assert len(detected) == len(set(detected)) == 150 * 4   # every image of the protocol's 150 subjects
  assert len(json.load(open(copy / nir_vis.CACHE_NAME))) == 150 * 4
  nir_vis_landmarks.main(["--data_dir", str(copy), "--layout", "buaa", "--workers", "1"])
  assert len(detected) == 150 * 4                          # nothing new to detect
  with pytest.raises(SystemExit) as exit_:
    nir_vis_landmarks.main(["--data_dir", str(tmp_path / "nowhere"), "--layout", "buaa"])
  assert exit_.value.code == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith("error: config.data.data_dir=") and "\n" not in error and "no NIR/ or VIS/" in error
