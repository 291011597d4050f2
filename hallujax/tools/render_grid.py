"""The README picture: face-world identities × poses × modalities in one PNG.

    python -m hallujax.tools.render_grid --out docs/faceworld.png [--size 128] [--identities 4]

Rows are identities (each with a different expression); columns are yaw
-90, -45, 0, +45, +90 in visible light, then the frontal view in near-infrared
and thermal, then the frontal view with its 68 ground-truth landmarks
(green: visible, red: self-occluded).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from hallujax.data import faceworld

YAWS = (-90.0, -45.0, 0.0, 45.0, 90.0)


def _mark(image: np.ndarray, landmarks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
  image = image.copy()
  size = image.shape[0]
  for (x, y), visible in zip(landmarks, visibility):
    column, row = int(round(x)), int(round(y))
    colour = (0, 255, 0) if visible else (255, 0, 0)
    image[max(row - 1, 0):min(row + 2, size), max(column - 1, 0):min(column + 2, size)] = colour
  return image


def grid(identities=(3, 17, 42, 64), size: int = 128, world_seed: int = 0) -> np.ndarray:
  """(rows × size, 8 × size, 3) uint8 grid (see the module docstring)."""
  rows = []
  expressions = faceworld.EXPRESSIONS
  for row, identity in enumerate(identities):
    base = dict(pitch=0.0, roll=0.0, expression=expressions[row % len(expressions)], intensity=0.9,
                light_azimuth=-25.0, light_elevation=25.0)
    views = [dict(base, yaw=yaw) for yaw in YAWS]
    rendered = faceworld.render_examples(world_seed, [identity] * len(YAWS), views, size,
                                         modalities=("visible", "nir", "thermal"))
    frontal = YAWS.index(0.0)
    cells = list(rendered["visible"])
    cells.append(np.repeat(rendered["nir"][frontal], 3, axis=-1))
    cells.append(np.repeat(rendered["thermal"][frontal], 3, axis=-1))
    cells.append(_mark(rendered["visible"][frontal], rendered["landmarks"][frontal], rendered["visibility"][frontal]))
    rows.append(np.concatenate(cells, axis=1))
  return np.concatenate(rows, axis=0)


def main(argv=None):
  from PIL import Image
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="docs/faceworld.png")
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--identities", type=int, default=4)
  parser.add_argument("--world_seed", type=int, default=0)
  arguments = parser.parse_args(argv)
  identities = tuple(int(i) for i in np.random.default_rng(arguments.world_seed).choice(1000, arguments.identities, replace=False))
  image = grid(identities, arguments.size, arguments.world_seed)
  os.makedirs(os.path.dirname(arguments.out) or ".", exist_ok=True)
  Image.fromarray(image).save(arguments.out)
  print(f"wrote {arguments.out} ({image.shape[1]}×{image.shape[0]})")


if __name__ == "__main__":
  main()
