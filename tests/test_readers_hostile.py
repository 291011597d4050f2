"""The data readers under hostile files: decompression bombs, EXIF orientation, forged file names."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hallujax import photos, prepare
from hallujax.config_base import data_section
from hallujax.data import image_files, record_writing
from hallujax.data.sources import make_source


def png_claiming(width: int, height: int) -> bytes:
  """A tiny PNG whose header claims width × height pixels (its pixel data is one short deflate stream)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
          + chunk(b"IEND", b""))


def jpeg_with_orientation(width: int, height: int, orientation: int) -> bytes:
  """A width × height JPEG (stored pixels) with an EXIF orientation tag; left half dark, right half bright."""
  pixels = np.full((height, width, 3), 30, np.uint8)
  pixels[:, width // 2:] = 220
  exif = Image.Exif()
  exif[image_files.EXIF_ORIENTATION] = orientation
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
  return buffer.getvalue()


def folder_config(data_dir, **overrides):
  config = data_section(source="image_folder", pairing="same_view", target_size=16, data_dir=str(data_dir),
                        strict=False)
  config.update(overrides)
  return config


def hostile_folder(root):
  """train/ with 4 good 40² PNGs, a 100000² header (PIL's own bomb error) and a 13000² header (under PIL's
  error threshold: only the project's limit refuses it)."""
  train = root / "train"
  train.mkdir(parents=True)
  for k in range(4):
    Image.fromarray(np.full((40, 40, 3), 40 * k + 20, np.uint8)).save(train / f"good{k}.png")
  (train / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
  (train / "huge.png").write_bytes(png_claiming(13_000, 13_000))
  return root


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (13_000, 13_000), (50_001, 1000)])
def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, width, height):
  path = tmp_path / "claim.png"
  path.write_bytes(png_claiming(width, height))
  assert path.stat().st_size < 200
  with pytest.raises(image_files.BadImageError, match=r"(max_pixels|unreadable image).*") as error:
    image_files.read_image(str(path))
  assert str(path) in str(error.value)


def test_a_limit_option_refuses_smaller_images_too(tmp_path):
  Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
  assert image_files.read_image(str(tmp_path / "a.png")).shape == (40, 50, 3)
  with pytest.raises(image_files.BadImageError, match=r"50×40 pixels .*max_pixels=1999"):
    image_files.read_image(str(tmp_path / "a.png"), max_pixels=1999)


def test_training_source_skips_and_counts_bombs_or_fails_with_strict(tmp_path):
  root = hostile_folder(tmp_path / "raw")
  source = make_source(folder_config(root), "train")
  assert len(source) == 6
  examples = [source[k] for k in range(len(source))]
  assert all(example["target"].shape == (40, 40, 3) for example in examples)
  assert sorted(name.rsplit("/", 1)[-1] for name in source.bad_files) == ["bomb.png", "huge.png"]
  strict = make_source(folder_config(root, strict=True), "train")
  names = [path.rsplit("/", 1)[-1] for path in strict.items]
  with pytest.raises(image_files.BadImageError):
    strict[names.index("bomb.png")]


def test_prepare_leaves_bombs_out_and_a_strict_failure_leaves_no_partial_shard(tmp_path, capsys):
  root = hostile_folder(tmp_path / "raw")
  arguments = prepare.parse(["--source", "image_folder", "--data_dir", str(root), "--out_dir", str(tmp_path / "out"),
                             "--splits", "train", "--workers", "1"])
  info = record_writing.prepare(arguments, log=lambda line: None)["info"]
  assert info["splits"] == {"train": 4} and info["unusable"] == 2
  strict_out = tmp_path / "strict"
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_:
    prepare.main(["--source", "image_folder", "--data_dir", str(root), "--out_dir", str(strict_out),
                  "--splits", "train", "--workers", "1", "--strict"])
  assert exit_.value.code == 2
  error = capsys.readouterr().err
  assert error.splitlines()[-1].startswith("error: ") and "bomb.png" in error and "Traceback" not in error
  assert not list(strict_out.glob("*.partial")) and not list(strict_out.glob("*.array_record"))
  (root / "train" / "bomb.png").unlink()
  (root / "train" / "huge.png").unlink()
  with pytest.raises(SystemExit):   # the limit option refuses the 40² images too
    prepare.main(["--source", "image_folder", "--data_dir", str(root), "--out_dir", str(tmp_path / "small"),
                  "--splits", "train", "--workers", "1", "--strict", "--max_pixels", "1000"])
  assert "max_pixels=1000" in capsys.readouterr().err


def test_a_file_name_with_a_newline_cannot_forge_lines_of_unusable_txt(tmp_path):
  train = tmp_path / "raw" / "train"
  train.mkdir(parents=True)
  for k in range(3):
    Image.fromarray(np.full((40, 40, 3), 60 * k, np.uint8)).save(train / f"good{k}.png")
  (train / "bad\nforged.png: all is fine.png").write_bytes(b"not an image")
  arguments = prepare.parse(["--source", "image_folder", "--data_dir", str(tmp_path / "raw"),
                             "--out_dir", str(tmp_path / "out"), "--splits", "train", "--workers", "1"])
  info = record_writing.prepare(arguments, log=lambda line: None)["info"]
  lines = (tmp_path / "out" / "unusable.txt").read_text().splitlines()
  assert info["unusable"] == 1 and len(lines) == 1
  assert "bad\\nforged.png" in lines[0]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_training_reader_and_photos_turn_exif_orientation_alike(tmp_path, orientation):
  path = tmp_path / "camera.jpg"
  path.write_bytes(jpeg_with_orientation(96, 64, orientation))
  training = image_files.read_image(str(path))
  photo = photos.read_photo(str(path))
  expected = (96, 64) if orientation in (6, 8) else (64, 96)   # 6 and 8: the camera was held upright
  assert training.shape[:2] == photo.shape[:2] == expected
  assert image_files.image_size(str(path)) == expected
  np.testing.assert_array_equal(training, photo)
