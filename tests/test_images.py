"""The shared image grid: labels drawn above each column, the shared column order, tile sizes."""

import numpy as np
import pytest
from PIL import Image

from hallujax import images

BACKGROUND = np.asarray(images.BACKGROUND, np.uint8)


def constant_column(value, count=3, size=16, channels=3):
  """float images in [-1, 1] whose uint8 value is `value` everywhere."""
  return np.full((count, size, size, channels), value / 127.5 - 1.0, np.float32)


def column_lefts(grid_width, widths):
  lefts, left = [], images.GAP
  for width in widths:
    lefts.append(left)
    left += width + images.GAP
  assert left == grid_width
  return lefts


def test_order_puts_input_first_ground_truth_last_and_keeps_unknown_names_in_place():
  names = ["target", "output", "bicubic", "lr"]
  assert list(images.order_columns({n: None for n in names})) == ["lr", "bicubic", "output", "target"]
  # PCFH-style: its own intermediates stay where they were, after the input, before the output.
  pcfh = ["input", "visible", "warped", "attention", "output", "target"]
  assert list(images.order_columns({n: None for n in pcfh})) == pcfh
  assert list(images.order_columns({n: None for n in ["output", "extra", "coarse", "lr", "target"]})) == [
      "lr", "coarse", "extra", "output", "target"]
  assert list(images.order_columns({"sample_1": 0, "real": 0, "sample_0": 0})) == ["sample_1", "real", "sample_0"]
  assert images.COLUMN_ORDER[-2:] == ("output", "target") and images.COLUMN_ORDER[0] == "input"


def test_grid_size_order_labels_and_grey_columns():
  columns = {"target": constant_column(200, size=64), "output": constant_column(150, size=64),
             "lr": constant_column(50, size=16, channels=1), "bicubic": constant_column(100, size=64)}
  grid = images.image_grid(columns, max_rows=2, min_tile=128)
  tile = 128                                                   # 64 × 2 (16 × 8): a multiple of the largest side
  assert grid.dtype == np.uint8 and grid.shape == (images.LABEL_HEIGHT + 2 * tile + 3 * images.GAP,
                                                   4 * tile + 5 * images.GAP, 3)
  lefts = column_lefts(grid.shape[1], [tile] * 4)
  top = images.LABEL_HEIGHT + images.GAP
  # Order lr | bicubic | output | target, each tile filled by its column's value on every channel (grey -> RGB).
  for left, value in zip(lefts, (50, 100, 150, 200)):
    for row in range(2):
      tile_pixels = grid[top + row * (tile + images.GAP):top + row * (tile + images.GAP) + tile, left:left + tile]
      assert np.all(tile_pixels == value), (left, value)
  # A label above each column: text-coloured pixels in the band over that column only.
  band = grid[:images.LABEL_HEIGHT]
  for left in lefts:
    over_column = band[:, left:left + tile]
    assert (over_column != BACKGROUND).any(axis=-1).sum() >= 10
  assert np.all(band[:, :images.GAP] == BACKGROUND)
  # Different names draw different labels.
  assert not np.array_equal(band[:, lefts[0]:lefts[0] + tile], band[:, lefts[1]:lefts[1] + tile])


def test_tiles_are_nearest_neighbour_upscaled_to_at_least_min_tile():
  checker = np.indices((8, 8)).sum(axis=0) % 2 * 255
  column = np.repeat(checker[None, ..., None], 3, axis=-1).astype(np.uint8)[:1]
  grid = images.image_grid({"output": column}, min_tile=100)
  tile = grid[images.LABEL_HEIGHT + images.GAP:-images.GAP, images.GAP:-images.GAP]
  assert tile.shape == (104, 104, 3)                           # 8 × 13: the first multiple of 8 ≥ 100
  assert set(np.unique(tile)) == {0, 255}                      # nearest neighbour: no blended values
  np.testing.assert_array_equal(tile[::13, ::13, 0], checker)
  assert np.all(tile[:13, :13] == tile[0, 0])                  # each source pixel a 13 × 13 block


def test_rows_limited_and_written_png_reads_back(tmp_path):
  grid = images.image_grid({"input": constant_column(10, count=12), "output": constant_column(20, count=12)},
                           max_rows=8, min_tile=32)
  assert grid.shape[0] == images.LABEL_HEIGHT + 8 * 32 + 9 * images.GAP
  path = images.write_grid(tmp_path / "nested" / "grid.png", grid)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
  with pytest.raises(ValueError, match="expected \\(N, H, W, 1\\|3\\|4\\)"):
    images.image_grid({"output": np.zeros((2, 8, 8, 2), np.float32)})
