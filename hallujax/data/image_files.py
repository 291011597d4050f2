"""Reading one image file, and the conversions every image reader shares.

The folder sources (hallujax.data.folders, hallujax.data.nir_vis), the TFDS
source, array_record shards (hallujax.data.records, hallujax.prepare) and
photos (hallujax.data.face_detection) read and convert images with these
helpers, so a file reads the same wherever it comes from.

Bad input: an unreadable or corrupt file raises BadImageError naming the file
(the sources skip and count it, or fail with ``data.strict=True``: see
hallujax.data.folders). Grayscale, palette, CMYK and RGBA images are converted
to RGB (RGBA composited on black). 16-bit (PNG ``I;16``, TIFF) and 32-bit grey
images (thermal and NIR cameras) are read at full precision and scaled to uint8
by a stated rule, never clipped: with ``data.bit_depth_range=(low, high)`` (raw
sensor units, one fixed range for the whole dataset, so intensities compare
across images) [low, high] maps linearly onto [0, 255] and values outside
saturate; with the default (0, 0) each image's own minimum and maximum map onto
0 and 255 (a constant image becomes black). Which rule is used is logged once.
(Pillow itself reduces 16-bit-per-channel RGB files to their high byte, i.e.
the fixed range [0, 65535].)
Images smaller than a requested crop (``check_size``) are BadImageError with
their file name, and so are images of more than ``data.max_pixels`` pixels:
their width and height are read from the file's header before any pixel is
decoded, so a small file that claims 100000² pixels (a decompression bomb)
costs no memory. Every reader (training, prepare, records, hallujax.photos)
turns images upright by one rule, ``upright``: the EXIF orientation tag, as
cameras write it.
"""

from __future__ import annotations

import logging
import threading

import numpy as np


class BadImageError(ValueError):
  """An image file that cannot be used (unreadable, corrupt or too small)."""


DEFAULT_MAX_PIXELS = 50_000_000   # data.max_pixels' default: above the largest phone cameras (48 MP)
EXIF_ORIENTATION = 0x0112         # the EXIF tag of the camera's orientation (1 = upright, 2..8 = turned/mirrored)
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")   # PIL modes of > 8-bit grey images
_announced_rules: set[str] = set()
_announce_lock = threading.Lock()


def check_value_range(value_range) -> tuple[float, float] | None:
  """data.bit_depth_range -> (low, high), or None for per-image min–max ((0, 0), None or empty)."""
  if value_range is None or len(value_range) == 0 or tuple(value_range) == (0, 0):
    return None
  if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
    raise ValueError(f"config.data.bit_depth_range={tuple(value_range)!r}; expected (low, high) with high > low "
                     f"in the sensor's raw units, e.g. (0, 65535), or (0, 0) for per-image min–max.")
  return float(value_range[0]), float(value_range[1])


def _announce(rule: str, level: int = logging.INFO) -> None:
  """Logs the scaling rule once per process."""
  with _announce_lock:
    if rule not in _announced_rules:
      _announced_rules.add(rule)
      logging.log(level, "%s", rule)


def scale_to_uint8(image: np.ndarray, value_range=None, name: str = "") -> np.ndarray:
  """A high-bit-depth (16-bit, 32-bit or float) grey image -> uint8 by the stated rule (module docstring).

  `value_range` (low, high): [low, high] -> [0, 255] linearly, outside saturates.
  None: per-image min–max, [image.min(), image.max()] -> [0, 255].
  """
  values = np.asarray(image, np.float64)
  value_range = check_value_range(value_range)
  if value_range is None:
    _announce("High-bit-depth images are scaled per image: each image's min..max maps onto 0..255 "
              "(set config.data.bit_depth_range=(low, high) for one fixed range across the dataset).",
              logging.WARNING)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
      raise BadImageError(f"{name}: a high-bit-depth image with no finite value.")
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
      return np.zeros(values.shape, np.uint8)
  else:
    low, high = value_range
    _announce(f"High-bit-depth images are scaled with the fixed range config.data.bit_depth_range="
              f"({low:g}, {high:g}) onto 0..255; values outside it saturate.")
  scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
  return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: np.ndarray, name: str = "", value_range=None) -> np.ndarray:
  """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3) uint8.

  uint8 is kept; wider integer images (16/32-bit) are scaled by `scale_to_uint8`
  (fixed `value_range` or per-image min–max), never clipped; float images are
  taken as 0..255 values and clipped.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise BadImageError(f"{name}: expected a grey, RGB or RGBA image, got shape {image.shape}.")
  if image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize > 1:
      image = scale_to_uint8(image, value_range, name)
    else:
      image = np.clip(image, 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    return np.repeat(image, 3, axis=-1)
  if image.shape[-1] == 4:
    alpha = image[..., 3:].astype(np.float32) / 255.0
    return np.round(image[..., :3] * alpha).astype(np.uint8)
  return image


def orientation(image) -> int:
  """The EXIF orientation of an opened PIL image (1 when absent, invalid or its EXIF block is damaged)."""
  try:
    value = image.getexif().get(EXIF_ORIENTATION, 1)
  except Exception:  # pylint: disable=broad-except  (a damaged EXIF block: PIL raises struct, key, type errors)
    return 1
  return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image):
  """The project's one EXIF rule (training readers and hallujax.photos): an image whose EXIF orientation
  is 2..8 is transposed as PIL's ImageOps.exif_transpose does; others are returned unchanged (no copy)."""
  from PIL import ImageOps
  return image if orientation(image) == 1 else ImageOps.exif_transpose(image)


def check_pixels(image, name: str, max_pixels: int) -> None:
  """BadImageError when an opened (not yet decoded) image has more than `max_pixels` pixels (0: no limit)."""
  width, height = image.size
  if max_pixels and width * height > max_pixels:
    raise BadImageError(f"{name}: image is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels), "
                        f"more than config.data.max_pixels={max_pixels}; it was not decoded.")


def read_image(path: str, mode: str = "RGB", value_range=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Reads an image file as uint8 RGB (H, W, 3) or grey (H, W, 1), turned `upright`; BadImageError if unusable.

  16-bit and 32-bit grey images are read at full precision and scaled with
  `scale_to_uint8` (`value_range` = config.data.bit_depth_range; None or
  (0, 0): per-image min–max), never clipped to white. Images of more than
  `max_pixels` pixels (from the header) are refused before decoding.
  """
  from PIL import Image
  try:
    with Image.open(path) as opened:
      check_pixels(opened, str(path), max_pixels)
      image = upright(opened)
      image.load()
      if image.mode in HIGH_DEPTH_MODES:
        grey = scale_to_uint8(np.asarray(image), value_range, path)
        if grey.ndim != 2:
          raise BadImageError(f"{path}: expected a single-channel {image.mode} image, got shape {grey.shape}.")
        return grey[..., None] if mode == "L" else to_rgb(grey, path)
      if mode == "L":
        return np.asarray(image.convert("L"))[..., None]
      if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return to_rgb(np.asarray(image.convert("RGBA")), path)
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:   # PIL's errors for
    if isinstance(error, BadImageError):                                            # truncated / corrupt /
      raise                                                                         # unknown / huge files
    raise BadImageError(f"{path}: unreadable image ({error}).") from error


def centre_crop(image: np.ndarray, size: int, top: int | None = None, name: str = ""):
  """Square crop of `size` centred horizontally (and vertically unless `top`). Returns (crop, (top, left))."""
  height, width = image.shape[:2]
  check_size(image, size, name)
  top = (height - size) // 2 if top is None else top
  left = (width - size) // 2
  return image[top:top + size, left:left + size], (top, left)


def cut(image: np.ndarray, box) -> np.ndarray:
  """The (top, left, height, width) window of `image`; rows and columns outside it repeat its edge."""
  top, left, height, width = (int(v) for v in box)
  rows = np.clip(np.arange(top, top + height), 0, image.shape[0] - 1)
  columns = np.clip(np.arange(left, left + width), 0, image.shape[1] - 1)
  if rows[0] == top and rows[-1] == top + height - 1 and columns[0] == left and columns[-1] == left + width - 1:
    return image[top:top + height, left:left + width]    # inside the image: a view, no copy
  return image[rows][:, columns]


def image_size(path: str) -> tuple[int, int]:
  """(height, width) of an image file from its header, as `upright` turns it; BadImageError if unreadable."""
  from PIL import Image
  try:
    with Image.open(path) as image:
      width, height = image.size
      return (width, height) if orientation(image) in (5, 6, 7, 8) else (height, width)   # 5..8 swap the sides
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise BadImageError(f"{path}: unreadable image ({error}).") from error


def check_size(image: np.ndarray, minimum: int, name: str) -> None:
  if minimum and (image.shape[0] < minimum or image.shape[1] < minimum):
    raise BadImageError(f"{name}: image is {image.shape[1]}×{image.shape[0]}, smaller than the "
                        f"requested {minimum}×{minimum} crop.")
