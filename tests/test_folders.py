"""On-disk layouts, bad input, array_record preparation and TFDS sources."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from hallujax.config_base import data_section
from hallujax import prepare
from hallujax.data import folders, image_files
from hallujax.data.sources import make_source


def data_config(**overrides):
  config = data_section(
      source="image_folder", pairing="same_view", input_size=8, input_channels=3, target_size=32,
      downsample="bicubic", num_identities=0, train_size=0, eval_size=0, data_dir="", strict=False)
  config.update(overrides)
  return config


def save(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)


def colour(value, size=(218, 178)):
  return np.full(size + (3,), value, np.uint8)


@pytest.fixture
def celeba(tmp_path):
  root = tmp_path / "celeba"
  names = [f"{k:06d}.jpg" for k in range(1, 7)]
  for k, name in enumerate(names):
    save(str(root / "img_align_celeba" / name), colour(40 * k))
  # 000005 is corrupt, 000006 is grayscale.
  (root / "img_align_celeba" / "000005.jpg").write_bytes(b"not a jpeg")
  save(str(root / "img_align_celeba" / "000006.jpg"), np.full((218, 178), 90, np.uint8), "L")
  partition = ["0", "0", "0", "1", "0", "0"]
  (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partition)))
  (root / "identity_CelebA.txt").write_text("".join(f"{n} {k % 2 + 1}\n" for k, n in enumerate(names)))
  landmarks = "".join(f"{n} 69 111 108 111 88 135 72 152 106 152\n" for n in names)
  (root / "list_landmarks_align_celeba.txt").write_text("6\nlefteye_x ...\n" + landmarks)
  return str(root)


def test_celeba_folder_partition_identities_landmarks_and_bad_files(celeba, caplog):
  source = make_source(data_config(source="celeba_folder", data_dir=celeba), "train")
  assert len(source) == 5 and len(make_source(data_config(source="celeba_folder", data_dir=celeba), "validation")) == 1
  example = source[0]
  assert example["target"].shape == (178, 178, 3) and example["identity"] == 0
  np.testing.assert_allclose(example["landmarks5"][0], [69 - 0, 111 - 20])   # follows the 178² crop at row 20
  assert source[4]["target"].shape == (178, 178, 3)                          # grayscale converted to RGB
  corrupt = source[3]                                                        # 000005: skipped, next one returned
  np.testing.assert_array_equal(corrupt["target"], source[4]["target"])
  assert len(source.bad_files) == 1 and "000005.jpg" in next(iter(source.bad_files.values()))
  with caplog.at_level(logging.WARNING):
    for index in range(len(source)):
      source[index]
  assert "skipped 1 unusable image files" in caplog.text
  strict = make_source(data_config(source="celeba_folder", data_dir=celeba, strict=True), "train")
  with pytest.raises(image_files.BadImageError, match="000005.jpg: unreadable"):
    strict[3]


def test_small_images_are_rejected_with_their_name(tmp_path):
  save(str(tmp_path / "imgs" / "big.png"), colour(10, (40, 40)))
  save(str(tmp_path / "imgs" / "tiny.png"), colour(10, (20, 40)))
  strict = folders.ImageFolder(data_config(data_dir=str(tmp_path / "imgs"), strict=True), "train")
  with pytest.raises(image_files.BadImageError, match=r"tiny.png: image is 40×20, smaller than the requested 32×32"):
    [strict[i] for i in range(len(strict))]


def test_missing_directory_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m hallujax.prepare --source celeba_folder"):
    make_source(data_config(source="celeba_folder", data_dir=str(tmp_path / "nowhere")), "train")
  with pytest.raises(FileNotFoundError, match="no train-\\*.array_record shards"):
    make_source(data_config(source="prepared", data_dir=str(tmp_path)), "train")


def test_image_folder_identities_rgba_and_splits(tmp_path):
  rgba = np.zeros((40, 40, 4), np.uint8)
  rgba[..., :3], rgba[..., 3] = 200, 128
  for person in ("alice", "bob"):
    for k in range(20):
      save(str(tmp_path / person / f"{k:02d}.png"), rgba if k == 0 else colour(k, (40, 40)))
  config = data_config(data_dir=str(tmp_path))
  splits = {s: make_source(config, s) for s in ("train", "validation", "test")}
  assert [len(s) for s in splits.values()] == [36, 2, 2]
  assert not set(splits["train"].items) & set(splits["test"].items)
  first = splits["train"][0]
  assert first["identity"] == 0 and first["target"].shape == (40, 40, 3)
  assert abs(int(first["target"][0, 0, 0]) - 100) <= 1                       # RGBA composited on black
  assert {int(splits["train"][i]["identity"]) for i in range(36)} == {0, 1}


def test_paired_folder_matches_names_and_reads_landmarks(tmp_path):
  for k in range(20):
    save(str(tmp_path / "VIS" / f"s{k % 3}_{k:02d}.png"), colour(k, (36, 36)))
    save(str(tmp_path / "TH" / f"s{k % 3}_{k:02d}.png"), np.full((36, 36), 100 + k, np.uint8), "L")
  save(str(tmp_path / "VIS" / "unmatched.png"), colour(1, (36, 36)))
  os.makedirs(tmp_path / "landmarks")
  np.savetxt(tmp_path / "landmarks" / "s0_00.txt", np.arange(136).reshape(68, 2))
  config = data_config(source="paired_folder", pairing="thermal_aligned", input_channels=1, data_dir=str(tmp_path))
  source = make_source(config, "train")
  assert len(source) == 18
  example = source[0]
  assert example["input"].shape == (36, 36, 1) and example["input"][0, 0, 0] == 100
  assert example["target"][0, 0, 0] == 0 and example["landmarks"].shape == (68, 2)
  with pytest.raises(FileNotFoundError, match="VIS/ and TH/"):
    make_source(data_config(source="paired_folder", pairing="nir_aligned", data_dir=str(tmp_path)), "train")


def test_lfw_pairs_and_vggface2_boxes(tmp_path):
  lfw = tmp_path / "lfw"
  for person, count in (("Ann_A", 2), ("Bo_B", 1)):
    for k in range(1, count + 1):
      save(str(lfw / "lfw" / person / f"{person}_{k:04d}.jpg"), colour(50 * k, (250, 250)))
  (lfw / "pairs.txt").write_text("1 1\nAnn_A 1 2\nAnn_A 1 Bo_B 1\n")
  source = make_source(data_config(source="lfw_folder", data_dir=str(lfw)), "test")
  assert source[0]["target"].shape == (150, 150, 3)
  assert source.pairs() == [(0, 1, True), (0, 2, False)]
  vgg = tmp_path / "vgg"
  save(str(vgg / "train" / "n000001" / "0001_01.jpg"), colour(30, (200, 160)))
  os.makedirs(vgg / "bb_landmark")
  (vgg / "bb_landmark" / "loose_bb_train.csv").write_text("NAME_ID,X,Y,W,H\nn000001/0001_01,40,50,60,80\n")
  example = make_source(data_config(source="vggface2_folder", data_dir=str(vgg)), "train")[0]
  assert example["target"].shape == (104, 104, 3)                           # 1.3 × the larger box side


def test_prepare_writes_shards_that_read_back_identically(celeba, tmp_path):
  out = str(tmp_path / "shards")
  prepare.main(["--source", "celeba_folder", "--data_dir", celeba, "--out_dir", out, "--shards", "2",
                "--target_size", "64", "--splits", "train,validation"])
  source = make_source(data_config(source="prepared", data_dir=out), "train")
  assert len(source) == 4                                                    # the corrupt file is left out
  original = make_source(data_config(source="celeba_folder", data_dir=celeba), "train")
  written = sorted(int(source[i]["target"][0, 0, 0]) for i in range(4))
  assert written == sorted(int(original.load(i)["target"][0, 0, 0]) for i in (0, 1, 2, 4))
  example = source[0]
  assert example["target"].shape == (64, 64, 3) and example["landmarks5"].dtype == np.float32


def test_tfds_source_reads_mock_celeb_a():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    source = make_source(data_config(source="celeb_a", target_size=0), "validation")
    assert len(source) == 3
    example = source[1]
  assert example["target"].shape == (218, 178, 3) and example["target"].dtype == np.uint8
  assert example["landmarks5"].shape == (5, 2) and example["identity"] >= 0


def thermal_gradient(height=48, width=40, low=7000, high=9500):
  """A 16-bit thermal-like capture: a left-to-right ramp of raw counts well above 255."""
  ramp = np.linspace(low, high, width)
  return np.repeat(ramp[None, :], height, axis=0).round().astype(np.uint16)


def write_16bit(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if path.endswith(".png"):
    Image.fromarray(array).save(path)            # PIL mode I;16
  else:
    import tifffile
    tifffile.imwrite(path, array)


def assert_spans_range_and_monotone(row, low=0, high=255):
  row = row.astype(np.int32)
  assert row.min() == low and row.max() == high, (row.min(), row.max())
  assert np.all(np.diff(row) >= 0)                                           # monotone, like the raw ramp
  assert (row == 255).mean() < 0.1                                           # not clipped to white


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_16bit_thermal_images_are_scaled_per_image_not_clipped(tmp_path, extension, caplog):
  path = str(tmp_path / f"thermal{extension}")
  raw = thermal_gradient()
  write_16bit(path, raw)
  with Image.open(path) as opened:
    assert opened.mode.startswith("I;16")
  image_files._announced_rules.clear()
  with caplog.at_level(logging.INFO):
    grey = image_files.read_image(path, mode="L")
    rgb = image_files.read_image(path)
  assert grey.shape == (48, 40, 1) and grey.dtype == np.uint8 and rgb.shape == (48, 40, 3)
  assert_spans_range_and_monotone(grey[0, :, 0])
  np.testing.assert_array_equal(rgb[..., 1], grey[..., 0])
  expected = np.round((raw[0] - 7000.0) * 255.0 / 2500.0)
  np.testing.assert_allclose(grey[0, :, 0], expected, atol=1)               # linear min–max rule
  assert caplog.text.count("scaled per image") == 1                         # the choice, logged once


def test_16bit_fixed_dataset_range_from_config(tmp_path):
  for k, (low, high) in enumerate(((7000, 9500), (8000, 8500))):
    write_16bit(str(tmp_path / "TH" / f"s0_{k:02d}.png"), thermal_gradient(36, 36, low, high))
    save(str(tmp_path / "VIS" / f"s0_{k:02d}.png"), colour(k, (36, 36)))
  config = data_config(source="paired_folder", pairing="thermal_aligned", input_channels=1, data_dir=str(tmp_path),
                       target_size=32)
  config.bit_depth_range = (6000, 10000)
  source = folders.PairedFolder(config, "train")
  wide, narrow = source.load(0)["input"][0, :, 0], source.load(1)["input"][0, :, 0]
  # One range for the dataset: raw 7000 -> 63.75, 9500 -> 223.1; the narrow capture stays inside the wide one.
  assert abs(int(wide[0]) - 64) <= 1 and abs(int(wide[-1]) - 223) <= 1
  assert wide[0] < narrow[0] <= narrow[-1] < wide[-1]
  assert np.all(np.diff(wide.astype(int)) >= 0)
  per_image = folders.PairedFolder(data_config(source="paired_folder", pairing="thermal_aligned", input_channels=1,
                                               data_dir=str(tmp_path), target_size=32), "train")
  assert_spans_range_and_monotone(per_image.load(1)["input"][0, :, 0])
  config.bit_depth_range = (5, 5)
  with pytest.raises(ValueError, match="bit_depth_range=.*high > low"):
    folders.PairedFolder(config, "train")


def test_paired_folder_subject_folders_split_by_subject_as_paper_000(tmp_path):
  for subject in range(5):
    for k in range(3):
      save(str(tmp_path / "VIS" / f"subject{subject}" / f"{k:03d}.png"), colour(subject, (36, 36)))
      save(str(tmp_path / "TH" / f"subject{subject}" / f"{k:03d}.png"), np.full((36, 36), 10 * subject, np.uint8), "L")
  config = data_config(source="paired_folder", pairing="thermal_aligned", input_channels=1, data_dir=str(tmp_path),
                       subject_split=(3, 0, 2))
  train, test = folders.PairedFolder(config, "train"), folders.PairedFolder(config, "test")
  subjects = lambda source: {os.path.basename(os.path.dirname(vis)) for vis, _ in source.items}
  assert len(subjects(train)) == 3 and len(subjects(test)) == 2 and not subjects(train) & subjects(test)
  assert len(train) == 9 and len(test) == 6
  # The identity is the subject folder: each example's label names the subject whose pixels it holds.
  for k in range(len(train)):
    subject = int(os.path.basename(os.path.dirname(train.items[k][0]))[-1])
    assert train[k]["identity"] == subject and train[k]["input"][0, 0, 0] == 10 * subject
  with pytest.raises(ValueError, match="subject_split=\\(4, 0, 2\\)"):
    folders.PairedFolder(data_config(source="paired_folder", pairing="thermal_aligned", input_channels=1,
                                     data_dir=str(tmp_path), subject_split=(4, 0, 2)), "train")
