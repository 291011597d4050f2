"""Reading photos and finding faces in them (dlib): the face detection that `hallujax.photos` (hallucinating
faces in photos) and the NIR-VIS landmark cache (`hallujax.data.nir_vis`) share."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from hallujax.data import image_files

DETECTORS = ("hog", "cnn")
EXTRAS_MESSAGE = "pip install dlib-bin face-recognition-models (the project's 'eval' extra)"


class PhotoError(ValueError):
  """A photo that cannot be read (the message names the file and why)."""


# ----------------------------------------------------------------------------- reading


def read_photo(source, name: str | None = None) -> np.ndarray:
  """(H, W, 3) uint8 RGB of an image file (a path or a binary file object), EXIF rotation applied.

  PhotoError naming the file (`name`, else the path) and saying why otherwise.
  16-bit grey images are stretched min–max to 8 bits.
  """
  name = name or str(source)
  try:
    with Image.open(source) as image:
      image = image_files.upright(image)   # the one EXIF rule of every reader (training data too)
      if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, np.float64)
        span = max(float(data.max() - data.min()), 1.0)
        image = Image.fromarray(np.round((data - data.min()) * 255.0 / span).astype(np.uint8))
      return np.asarray(image.convert("RGB"))
  except UnidentifiedImageError:
    raise PhotoError(f"{name}: not an image file PIL can read") from None
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise PhotoError(f"{name}: {str(error) or type(error).__name__}") from None


def decode_photo(data: bytes, name: str = "upload") -> np.ndarray:
  """read_photo of bytes (an upload)."""
  import io
  if not data:
    raise PhotoError(f"{name}: empty file")
  return read_photo(io.BytesIO(data), name)


# ----------------------------------------------------------------------------- detection


@dataclasses.dataclass
class Face:
  box: tuple[float, float, float, float]   # left, top, right, bottom in photo pixels
  score: float | None                      # detector score (None for an aligned input)
  landmarks: np.ndarray                    # (68, 2) or (5, 2) dlib points, photo pixels

  @property
  def area(self) -> float:
    return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def model_file(name: str) -> str:
  """A dlib model file shipped by face-recognition-models (found without importing it: it needs pkg_resources)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"Face detection needs face-recognition-models: {EXTRAS_MESSAGE}.")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
  if not os.path.isfile(path):
    raise ImportError(f"face-recognition-models has no {name} at {path}; reinstall it: {EXTRAS_MESSAGE}.")
  return path


def _dlib():
  try:
    import dlib
  except ImportError:
    raise ImportError(f"Face detection needs dlib: {EXTRAS_MESSAGE}.") from None
  return dlib


def auto_upsample(height: int, width: int) -> int:
  """Upsamplings (×2 each, at most 2) bringing faces of ~max(20 px, side/8) to dlib's 80 px window."""
  smallest = max(20.0, min(height, width) / 8.0)
  return int(min(2, max(0, math.ceil(math.log2(80.0 / smallest)))))


class Detector:
  """dlib face detection and landmarks (see the module docstring for the defaults)."""

  def __init__(self, detector: str = "hog", landmarks: int = 68, upsample: int = -1, min_score: float = 0.5):
    if detector not in DETECTORS:
      raise ValueError(f"detector={detector!r}; expected one of {', '.join(DETECTORS)}.")
    if landmarks not in (5, 68):
      raise ValueError(f"landmarks={landmarks!r}; expected 5 or 68.")
    dlib = _dlib()
    self.kind, self.upsample, self.min_score, self.points = detector, upsample, min_score, landmarks
    if detector == "hog":
      self.detector = dlib.get_frontal_face_detector()
    else:
      self.detector = dlib.cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))
    self.predictor = dlib.shape_predictor(model_file(f"shape_predictor_{landmarks}_face_landmarks.dat"))

  def __call__(self, image: np.ndarray) -> list[Face]:
    """Faces of an (H, W, 3) uint8 image, largest first."""
    image = np.ascontiguousarray(image)
    upsample = auto_upsample(*image.shape[:2]) if self.upsample < 0 else self.upsample
    if self.kind == "hog":
      rectangles, scores, _ = self.detector.run(image, upsample, self.min_score)
      found = list(zip(rectangles, scores))
    else:
      found = [(d.rect, d.confidence) for d in self.detector(image, upsample)]
    faces = []
    for rectangle, score in found:
      if score < self.min_score:
        continue
      shape = self.predictor(image, rectangle)
      points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
      faces.append(Face(box=(float(rectangle.left()), float(rectangle.top()), float(rectangle.right()),
                             float(rectangle.bottom())), score=float(score), landmarks=points))
    return sorted(faces, key=lambda face: -face.area)
