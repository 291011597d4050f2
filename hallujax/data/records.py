"""The compact record format of prepared datasets (``python -m hallujax.prepare``), version 2.

One record is one example:

    b"HJX" + version byte + CRC-32 of the payload (4 bytes, little endian) + payload

and the payload is a msgpack map ``{"images": {...}, "arrays": {...}}``:

    images  name -> {"format": "png" | "jpeg", "data": encoded bytes, "channels": 1 | 3,
                     "box": [top, left, height, width] or None}
            or name -> {"same_as": other name}: a same-view example ("input" is the
            "target" picture) stores the picture once.
    arrays  name -> [dtype, shape, raw bytes]: labels, landmarks, yaw, ... (small).

"jpeg" holds a source file's original bytes and "box" the crop the source
takes from the decoded file (rows and columns outside the file repeat its
edge, as the VGGFace2 loose crops do); decoding applies it, so the example
equals the folder source's pixel for pixel. "png" holds the example's own
pixels, lossless. Nothing derived is stored: the low-resolution input, its
degradations and bicubic baselines are made by the input pipeline.

Version 1 (before issue 20) stored every field, both images included, as an
uncompressed ``.npz``; it is refused with the command that rewrites it.
"""

from __future__ import annotations

import io
import zlib

import msgpack
import numpy as np

from hallujax.data import image_files

FORMAT_VERSION = 2
MAGIC = b"HJX"
ENCODINGS = ("png", "jpeg")
IMAGE_FIELDS = ("input", "target", "aligned_target")


class RecordVersionError(ValueError):
  """Records written in another format version than this hallujax reads."""


class CorruptRecordError(ValueError):
  """A record whose bytes do not match their checksum or do not decode."""


def version_message(found, where: str) -> str:
  return (f"{where} holds hallujax records of format version {found}; this hallujax reads version "
          f"{FORMAT_VERSION}. Prepare the dataset again with this version: python -m hallujax.prepare "
          f"--source SOURCE --data_dir RAW_DIR --out_dir NEW_DIR (see docs/data.md).")


def record_version(record: bytes):
  """The format version a record was written in (1: the old .npz records; None: not a hallujax record)."""
  if record[:3] == MAGIC and len(record) >= 8:
    return record[3]
  if record[:2] == b"PK":   # a zip archive: version 1's np.savez
    return 1
  return None


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
  """uint8 (H, W, 1 | 3) -> PNG bytes (lossless)."""
  from PIL import Image
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"A record image must be uint8 (H, W, 1 | 3); got {image.dtype} {image.shape}.")
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
      buffer, format="PNG", compress_level=compress_level)
  return buffer.getvalue()


def decode_image(entry: dict) -> np.ndarray:
  """An "images" entry -> uint8 (H, W, channels), cropped by its box."""
  mode = "L" if entry["channels"] == 1 else "RGB"
  image = image_files.read_image(io.BytesIO(entry["data"]), mode)
  if image.ndim == 2:
    image = image[..., None]
  if entry.get("box") is not None:
    image = image_files.cut(image, entry["box"])
  return image


def encode(example: dict, originals: dict | None = None, compress_level: int = 6) -> bytes:
  """An example (dict of arrays) -> one record.

  `originals` maps an image field to (file bytes, box) to store instead of its
  pixels (the source file's JPEG); the caller has checked that decoding them
  gives the field's pixels. Other image fields are stored as PNG. "input" is
  stored as a reference when it is the same picture as "target".
  """
  originals = originals or {}
  images, arrays = {}, {}
  for name, value in example.items():
    value = np.asarray(value)
    if name not in IMAGE_FIELDS:
      arrays[name] = [value.dtype.str, list(value.shape), value.tobytes()]
      continue
    if value.ndim == 2:
      value = value[..., None]
    if (name == "input" and "target" in example and np.shape(example["target"]) == value.shape
        and np.array_equal(example["target"], value)):
      images[name] = {"same_as": "target"}
    elif name in originals:
      data, box = originals[name]
      images[name] = {"format": "jpeg", "data": data, "channels": int(value.shape[-1]),
                      "box": None if box is None else [int(v) for v in box]}
    else:
      images[name] = {"format": "png", "data": encode_png(value, compress_level),
                      "channels": int(value.shape[-1]), "box": None}
  payload = msgpack.packb({"images": images, "arrays": arrays}, use_bin_type=True)
  return MAGIC + bytes([FORMAT_VERSION]) + zlib.crc32(payload).to_bytes(4, "little") + payload


def decode(record: bytes, where: str = "this record") -> dict[str, np.ndarray]:
  """One record -> the example it holds (images uint8 (H, W, C), arrays as written)."""
  version = record_version(record)
  if version is None:
    raise CorruptRecordError(f"{where} is not a hallujax record (it starts with {bytes(record[:4])!r}).")
  if version != FORMAT_VERSION:
    raise RecordVersionError(version_message(version, where))
  payload = memoryview(record)[8:]
  if zlib.crc32(payload) != int.from_bytes(record[4:8], "little"):
    raise CorruptRecordError(f"{where}: checksum mismatch (the record's bytes were altered).")
  try:
    content = msgpack.unpackb(payload, raw=False)
    example = {name: np.frombuffer(data, np.dtype(dtype)).reshape(shape).copy()
               for name, (dtype, shape, data) in content["arrays"].items()}
    references = {}
    for name, entry in content["images"].items():
      if "same_as" in entry:
        references[name] = entry["same_as"]
      else:
        example[name] = decode_image(entry)
    for name, other in references.items():
      example[name] = example[other]
  except (image_files.BadImageError, ValueError, KeyError, TypeError) as error:
    raise CorruptRecordError(f"{where}: does not decode ({error}).") from error
  return example
