"""Face alignment by similarity transform, and eye / nose / mouth component crops.

Alignment maps 5 landmarks (eye centres, nose tip, mouth corners; from a
detector or reduced from the 68 iBUG-300W points) onto a canonical template
with the least-squares similarity transform (rotation, uniform scale,
translation; Umeyama 1991) and resamples the image bilinearly.

Templates (x, y in output pixels, pixel centres at integers; subject's right
eye first, i.e. the eye on the image left):

    "arcface112"  the 112×112 ArcFace / InsightFace template.
    "celeba128"   CelebA-style 128×128: the mean landmarks of CelebA's
                  img_align_celeba (178×218) after the common 178×178 centre
                  crop (rows 20..197), scaled to 128. Our choice; CelebA
                  publishes the aligned images, not a template.

Component crops (height × width) are centred on the landmarks of each part:

    PCFH (paper 001, §4.2): at 144², eyes 32×32, nose 40×32, mouth 28×52;
    at 256², eyes 52×52, nose 60×52, mouth 36×72.
    VividGAN (paper 002) gives no sizes for its 128² components; we scale
    PCFH's 144² sizes to 128² and round to multiples of 4: eyes 28×28,
    nose 36×28, mouth 24×48.
"""

from __future__ import annotations

import numpy as np

TEMPLATES = {
    "arcface112": (112, np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                  [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)),
    "celeba128": (128, (np.array([[69.0, 111.0], [108.0, 111.0], [88.5, 135.0],
                                  [72.0, 152.0], [106.0, 152.0]], np.float64) - [0.0, 20.0]) * 128.0 / 178.0),
}

COMPONENT_SIZES = {
    # image size -> part -> (height, width)
    "pcfh144": (144, {"right_eye": (32, 32), "left_eye": (32, 32), "nose": (40, 32), "mouth": (28, 52)}),
    "pcfh256": (256, {"right_eye": (52, 52), "left_eye": (52, 52), "nose": (60, 52), "mouth": (36, 72)}),
    "vividgan128": (128, {"right_eye": (28, 28), "left_eye": (28, 28), "nose": (36, 28), "mouth": (24, 48)}),
}

# iBUG-300W index groups. "right" is the subject's right (image left).
PARTS_68 = {
    "right_eye": list(range(36, 42)),
    "left_eye": list(range(42, 48)),
    "nose": list(range(27, 36)),
    "mouth": list(range(48, 68)),
}


def five_from_68(landmarks: np.ndarray) -> np.ndarray:
  """(68, 2) iBUG-300W points -> (5, 2): eye centres, nose tip, mouth corners."""
  landmarks = np.asarray(landmarks, np.float64)
  if landmarks.shape != (68, 2):
    raise ValueError(f"expected (68, 2) landmarks, got shape {landmarks.shape}.")
  return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30],
                   landmarks[48], landmarks[54]])


def similarity_transform(source: np.ndarray, destination: np.ndarray) -> np.ndarray:
  """2×3 matrix M of the least-squares similarity with M @ [x, y, 1] ≈ destination (Umeyama)."""
  source = np.asarray(source, np.float64)
  destination = np.asarray(destination, np.float64)
  if source.shape != destination.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
    raise ValueError(f"need matching (N>=2, 2) point sets, got {source.shape} and {destination.shape}.")
  source_mean, destination_mean = source.mean(0), destination.mean(0)
  a, b = source - source_mean, destination - destination_mean
  covariance = b.T @ a / len(source)
  u, singular, vt = np.linalg.svd(covariance)
  sign = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[-1] = -1
  rotation = u @ np.diag(sign) @ vt
  scale = (singular * sign).sum() / a.var(0).sum()
  translation = destination_mean - scale * rotation @ source_mean
  return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  points = np.asarray(points, np.float64)
  return points @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(image: np.ndarray, matrix: np.ndarray, out_shape, border: str = "edge") -> np.ndarray:
  """Resamples `image` (H, W[, C]) so that out[q] = image[M^-1 q] (bilinear).

  border: "edge" repeats the outermost pixels, "zero" fills with 0.
  Keeps the dtype (uint8 rounded).
  """
  height, width = (out_shape, out_shape) if np.ndim(out_shape) == 0 else tuple(out_shape)
  image = np.asarray(image)
  full = np.vstack([matrix, [0.0, 0.0, 1.0]])
  inverse = np.linalg.inv(full)[:2]
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
  sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
  data = image.astype(np.float32)
  if data.ndim == 2:
    data = data[..., None]
  h, w = data.shape[:2]
  x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
  fx, fy = (sx - x0)[..., None].astype(np.float32), (sy - y0)[..., None].astype(np.float32)

  def tap(yy, xx):
    values = data[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
    if border == "zero":
      inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
      values = values * inside[..., None]
    return values

  out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
         + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
  if image.ndim == 2:
    out = out[..., 0]
  if image.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out.astype(image.dtype)


def align(image: np.ndarray, landmarks: np.ndarray, template: str = "arcface112"):
  """Aligns a face to a template from 5 or 68 landmarks.

  Returns (aligned image, 2×3 matrix from input to aligned pixels, the input
  landmarks mapped into the aligned image).
  """
  if template not in TEMPLATES:
    raise ValueError(f"template={template!r}; known templates: {', '.join(TEMPLATES)}.")
  size, points = TEMPLATES[template]
  landmarks = np.asarray(landmarks, np.float64)
  five = five_from_68(landmarks) if len(landmarks) == 68 else landmarks
  if five.shape != (5, 2):
    raise ValueError(f"expected (5, 2) or (68, 2) landmarks, got shape {landmarks.shape}.")
  matrix = similarity_transform(five, points)
  return warp_affine(image, matrix, size), matrix, transform_points(matrix, landmarks)


def component_boxes(landmarks68: np.ndarray, layout: str = "pcfh144") -> dict[str, tuple[int, int, int, int]]:
  """(top, left, height, width) of each component's box, centred on its landmarks."""
  if layout not in COMPONENT_SIZES:
    raise ValueError(f"layout={layout!r}; known layouts: {', '.join(COMPONENT_SIZES)}.")
  _, sizes = COMPONENT_SIZES[layout]
  landmarks68 = np.asarray(landmarks68, np.float64)
  boxes = {}
  for part, (height, width) in sizes.items():
    centre = landmarks68[PARTS_68[part]].mean(0)
    boxes[part] = (int(round(centre[1] - (height - 1) / 2)), int(round(centre[0] - (width - 1) / 2)), height, width)
  return boxes


def crop_components(image: np.ndarray, landmarks68: np.ndarray, layout: str = "pcfh144"):
  """Crops eyes, nose and mouth at the layout's sizes (edge-padded near borders).

  Returns ({part: crop}, {part: (top, left, height, width)}). The image should
  be at the layout's size (e.g. 144² for "pcfh144"); other sizes work but the
  crops then cover a different fraction of the face.
  """
  image = np.asarray(image)
  boxes = component_boxes(landmarks68, layout)
  pad = max(max(h, w) for _, _, h, w in boxes.values())
  padded = np.pad(image, [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2), mode="edge")
  crops = {part: padded[top + pad: top + pad + h, left + pad: left + pad + w]
           for part, (top, left, h, w) in boxes.items()}
  return crops, boxes
