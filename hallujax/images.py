"""The one image grid of the project: labelled columns, one row per example.

Training (TensorBoard and ``WORKDIR/images/step_*.png``), ``evaluate`` and
``sample`` all draw grids with ``image_grid`` and save them with ``write_grid``,
so every grid reads the same way:

  * columns in the shared order ``COLUMN_ORDER``: what the method sees first
    (the input / low-resolution face), then baselines (bicubic), then the
    method's intermediate images (coarse, prior ...), then its output, and the
    ground truth ("target") last; names not in the list (a method's own
    intermediates, other runs' outputs) keep their given order, before "output";
  * each column's name written in a band above it;
  * every tile scaled with nearest neighbour (pixels stay visible, no blur) to
    the same side, at least ``min_tile`` pixels: the smallest multiple of the
    largest image side that reaches ``min_tile`` (16² and 64² columns with
    min_tile=128 give 128² tiles, ×8 and ×2);
  * grey images shown as RGB; float images taken in [-1, 1]
    (``to_uint8``), uint8 images as they are.

The conversions between uint8 images and the float [-1, 1] range every network
reads (``to_unit_range``, ``to_uint8``, ``grey``) live here, once, for the data
pipeline, the photos path, grids and event files alike.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return image.astype(np.float32) * (2.0 / 255.0) - 1.0


def to_uint8(image) -> np.ndarray:
  """float [-1, 1] -> uint8 [0, 255], rounding and clipping."""
  return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of (H, W, 3) uint8 RGB, (H, W, 1) uint8."""
  luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]

# The shared column order (LR/input first, baselines, intermediate, output, ground truth last).
COLUMN_ORDER = (
    "input",       # what the network receives (LR face, thermal or NIR image)
    "lr",          # the low-resolution face, when "input" is something else
    "bicubic",     # baseline: bicubic upsampling of the input
    "coarse",      # intermediate: a first-stage hallucination (IPFH, VividGAN)
    "prior",       # intermediate: a facial prior (VividGAN touch-up, VPGAN's prior image)
    "output",      # the method's result
    "target",      # ground truth
)
LABEL_HEIGHT = 16           # pixels of the label band above the columns
GAP = 2                     # pixels between tiles
BACKGROUND = (24, 24, 24)   # label band and gaps
TEXT_COLOUR = (255, 255, 255)


def order_columns(columns: Mapping[str, Any]) -> dict[str, Any]:
  """`columns` re-ordered by COLUMN_ORDER; unknown names keep their given place, before "output".

  An unknown name stays right after the known column it followed (or first,
  if none came before it). Works on any values (arrays, tracers): only the
  names are read.
  """
  output_rank = COLUMN_ORDER.index("output")
  keys, anchor = [], -1.0
  for position, name in enumerate(columns):
    if name in COLUMN_ORDER:
      anchor = float(COLUMN_ORDER.index(name))
      keys.append(((anchor, 0, position), name))
    else:
      keys.append(((min(anchor, output_rank - 0.5), 1, position), name))
  return {name: columns[name] for _, name in sorted(keys)}


def _as_uint8_batch(name: str, images) -> np.ndarray:
  """(N, H, W, 3) uint8 from (N, H, W, C) / (N, H, W), float in [-1, 1] or uint8."""
  array = np.asarray(images)
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"grid column {name!r}: shape {array.shape}; expected (N, H, W, 1|3|4) or (N, H, W).")
  if array.dtype != np.uint8:
    if not (np.issubdtype(array.dtype, np.floating) or array.dtype == np.dtype("bfloat16")):
      raise ValueError(f"grid column {name!r}: dtype {array.dtype}; expected float in [-1, 1] or uint8.")
    array = to_uint8(array.astype(np.float32))
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return array[..., :3]


def tile_side(sides, min_tile: int) -> int:
  """The smallest multiple of the largest side that is at least `min_tile`."""
  largest = max(sides)
  return largest * max(1, math.ceil(min_tile / largest))


def _nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize by index lookup (exact pixel repetition for integer factors)."""
  rows = (np.arange(height) * image.shape[0]) // height
  cols = (np.arange(width) * image.shape[1]) // width
  return image[rows][:, cols]


def _label_font():
  from PIL import ImageFont  # pylint: disable=import-outside-toplevel
  try:
    return ImageFont.load_default(size=12)
  except TypeError:          # Pillow < 10.1: the fixed bitmap font
    return ImageFont.load_default()


def _draw_labels(grid: np.ndarray, names: list[str], lefts: list[int], widths: list[int]) -> np.ndarray:
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  canvas = Image.fromarray(grid)
  draw = ImageDraw.Draw(canvas)
  font = _label_font()
  for name, left, width in zip(names, lefts, widths):
    text = name
    while len(text) > 1 and draw.textlength(text, font=font) > width - 4:
      text = text[:-2] + "…"
    draw.text((left + 2, 1), text, fill=TEXT_COLOUR, font=font)
  return np.asarray(canvas)


def image_grid(columns: Mapping[str, Any], max_rows: int = 8, min_tile: int = 128) -> np.ndarray:
  """One uint8 (H, W, 3) image: a labelled column per entry of `columns`, one row per example.

  `columns`: {name: (N, H, W, C) images}, float in [-1, 1] or uint8, any C in
  (1, 3, 4) and any size per column. Columns are put in COLUMN_ORDER; the
  first min(max_rows, shortest N) examples are shown; tiles are square-ish,
  all scaled (nearest neighbour) to the same height, at least `min_tile`.
  """
  if not columns:
    raise ValueError("image_grid needs at least one column.")
  ordered = {name: _as_uint8_batch(name, images) for name, images in order_columns(columns).items()}
  rows = min(max_rows, min(images.shape[0] for images in ordered.values()))
  if rows < 1:
    raise ValueError(f"image_grid: a column has no images (sizes {[v.shape[0] for v in ordered.values()]}).")
  height = tile_side([images.shape[1] for images in ordered.values()], min_tile)
  widths = [max(1, round(images.shape[2] * height / images.shape[1])) for images in ordered.values()]
  total_width = sum(widths) + GAP * (len(widths) + 1)
  total_height = LABEL_HEIGHT + rows * height + GAP * (rows + 1)
  grid = np.empty((total_height, total_width, 3), np.uint8)
  grid[...] = np.asarray(BACKGROUND, np.uint8)
  lefts = []
  left = GAP
  for (name, images), width in zip(ordered.items(), widths):
    lefts.append(left)
    for row in range(rows):
      top = LABEL_HEIGHT + GAP + row * (height + GAP)
      grid[top:top + height, left:left + width] = _nearest(images[row], height, width)
    left += width + GAP
  return _draw_labels(grid, list(ordered), lefts, widths)


def write_grid(path, grid: np.ndarray) -> str:
  """Saves `grid` (uint8 HWC) as PNG at `path` (local or any etils.epath location); returns the path."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  grid = np.asarray(grid)
  if grid.dtype != np.uint8 or grid.ndim != 3 or grid.shape[-1] not in (3, 4):
    raise ValueError(f"write_grid: got {grid.dtype} {grid.shape}; expected uint8 (H, W, 3), e.g. from image_grid.")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as file:
    Image.fromarray(grid).save(file, format="PNG")
  return str(path)


def mosaic(images, columns: int) -> np.ndarray:
  """uint8 tiling of NHWC images in [-1, 1], `columns` per row, black where the last row is short (samples of
  one kind, where `image_grid` shows columns of different kinds)."""
  images = to_uint8(images)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.zeros((rows * height, columns * width, channels), np.uint8)
  for index, image in enumerate(images):
    row, column = divmod(index, columns)
    grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
  return grid
