"""Faces in real photos: detect, align to a method's template, make its input, paste the result back.

Used by ``python -m hallujax.hallucinate`` (folders), ``hallujax.demo`` (one
upload) and ``hallujax.export``'s models; it knows nothing of any method: a
*face model* is anything with ``input_size``, ``input_channels``,
``output_size``, ``downsample``, ``template`` (5 unit-square points),
``batch_size`` and ``run(inputs) -> outputs`` on fixed-size float batches in
[-1, 1] (see :class:`FaceModel`).

Choices (the issue leaves them to us):

* Detector: dlib's HOG detector by default (its weights ship inside dlib; ~0.3 s
  for a 512² photo on one loaded CPU core, against ~4 s for the CNN (MMOD)
  detector), ``detector="cnn"`` for profile or small faces the HOG misses.
  Both keep detections with score >= ``min_score`` (0.5: on
  ``skimage.data.astronaut()`` the face scores 1.16 and the two false
  detections on the suit 0.12 and -0.15). The image is upsampled
  (``upsample=-1``: automatically) so that faces down to ~max(20 px, side/8)
  reach the detector's 80 px window.
* Landmarks: dlib's 68-point predictor (face-recognition-models) by default,
  reduced to eye centres, nose tip and mouth corners
  (``hallujax.data.alignment.five_from_68``) and aligned by least squares;
  with the 5-point predictor (``landmarks=5``: eye corners and the base of the
  nose) only the two eye centres are used (an exact similarity), since the
  base of the nose is not a template point.
* Template per method, from the data it was trained on: the face world's own
  frontal framing (:data:`TEMPLATES` "faceworld", measured from its renders),
  CelebA's for CelebA sources, ArcFace's for VGGFace2 and other sources.
* Input: "real" (default) feeds the photo's own face pixels, aligned straight
  to the method's input size when the face is no larger than that, else
  resized down to it with the method's training kernel (antialiased);
  "degrade" makes the input from the aligned high-resolution crop with the
  method's training degradation (``config.data.downsample`` at its scale).
  Each face's JSON says which, with the face's size in the photo.
* Paste-back: the output is warped into the photo by the inverse similarity,
  through an elliptical mask over the face (from the template's eyes and
  mouth) feathered over a quarter of the eye distance, after colour matching:
  the low-frequency difference (Gaussian, σ = eye distance / 4) between the
  photo's own aligned face and the output, weighted by the mask, is added to
  the output, so colour and shading follow the photo and detail comes from the
  method ("mean" matches per-channel means only, "none" nothing).
* Grey photos stay grey: the method's output is colour, and its chroma (not
  low-frequency, so colour matching leaves it) would tint a grey photo; the
  output's luma is pasted instead when the photo's channels are equal.
* A face much larger than the model's output (``LARGE_FACE_RATIO`` × its side,
  e.g. 1200 px from a 64 px output) is a blur once pasted back at the face's
  size. Such faces are marked in the JSON and counted in one warning, and
  ``Options.large_faces`` chooses: "paste" (the default: the model's output,
  enlarged to the face) or "skip" (the face is left as it is in the photo).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from hallujax.data import alignment, degradations
from hallujax.data.face_detection import Face, PhotoError, read_photo
from hallujax.images import grey, to_uint8, to_unit_range

# Five points (x, y) as fractions of the crop side, subject's right eye first (image left).
TEMPLATES = {
    # Mean eye centres, nose tip and mouth corners of 32 frontal face-world renders (validation split,
    # yaw = pitch = roll = 0; spread 0.016 of the side): the face world frames the whole head.
    "faceworld": np.array([[0.3950, 0.4367], [0.5972, 0.4367], [0.4961, 0.5434],
                           [0.4291, 0.6753], [0.5631, 0.6753]]),
    "celeba": alignment.TEMPLATES["celeba128"][1] / alignment.TEMPLATES["celeba128"][0],
    "arcface": alignment.TEMPLATES["arcface112"][1] / alignment.TEMPLATES["arcface112"][0],
}
SOURCE_TEMPLATES = {"faceworld": "faceworld", "celeb_a": "celeba", "celeba_folder": "celeba"}
MODES = ("all", "largest", "aligned")
INPUTS = ("real", "degrade")
COLOUR_MATCHES = ("lowpass", "mean", "none")
LARGE_FACES = ("paste", "skip")
# A face more than this many times the model's output side is "much larger" (see the module docstring).
LARGE_FACE_RATIO = 2.0
# Channels differing by at most this (0..255) everywhere: a grey photo (JPEG's chroma rounding stays within it).
GREY_TOLERANCE = 2


def template_for(config) -> str:
  """The template name of a run's config: the framing of the faces it was trained on."""
  return SOURCE_TEMPLATES.get(str(config.data.source), "arcface")


def template_points(name: str) -> np.ndarray:
  if name not in TEMPLATES:
    raise ValueError(f"template={name!r}; known templates: {', '.join(TEMPLATES)}.")
  return TEMPLATES[name]


# ----------------------------------------------------------------------------- alignment


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
  """(2, 2) eye centres, subject's right eye (image left) first, from dlib's 68 or 5 points."""
  if len(landmarks) == 68:
    return alignment.five_from_68(landmarks)[:2]
  if len(landmarks) == 5:   # dlib's 5-point model: 0-1 the image-right eye's corners, 2-3 the image-left's, 4 nose
    return np.stack([landmarks[2:4].mean(0), landmarks[0:2].mean(0)])
  raise ValueError(f"expected 68 or 5 landmarks, got {len(landmarks)}.")


def face_matrix(landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
  """2×3 similarity from photo pixels to the template at `size`² (pixel centres at integers)."""
  points = template * size
  if len(landmarks) == 68:
    return alignment.similarity_transform(alignment.five_from_68(landmarks), points)
  return alignment.similarity_transform(eye_centres(landmarks), points[:2])


def matrix_scale(matrix: np.ndarray) -> float:
  """Output pixels per photo pixel of a similarity (or the mean of an axis-aligned scaling)."""
  return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def scaled(matrix: np.ndarray, factor: float) -> np.ndarray:
  """The matrix to an aligned image `factor` times as large."""
  return matrix * factor


def inverse(matrix: np.ndarray) -> np.ndarray:
  return np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


@dataclasses.dataclass
class PreparedFace:
  face: Face
  matrix: np.ndarray          # photo -> aligned output pixels (output_size²)
  crop: np.ndarray            # the photo's aligned face at output_size², uint8
  input: np.ndarray           # the method's input, float32 [-1, 1], (input_size, input_size, C)
  input_image: np.ndarray     # the same, uint8 (for the side-by-side)
  description: str
  landmarks: np.ndarray | None = None   # (68, 2) in the aligned crop, fractions of its side; None without 68
  face_side: float = 0.0                # photo pixels across the aligned crop


def unit_landmarks(face: Face, matrix: np.ndarray, size: int) -> np.ndarray | None:
  """The face's 68 points in the aligned crop as fractions of its side (pixel centres at (i + 0.5) / size)."""
  if len(face.landmarks) != 68:
    return None
  return ((alignment.transform_points(matrix, face.landmarks) + 0.5) / size).astype(np.float32)


def is_grey(photo: np.ndarray) -> bool:
  """Whether an (H, W, 3) photo is grey: its channels equal within GREY_TOLERANCE everywhere."""
  channels = photo.astype(np.int16)
  return int(np.abs(channels - channels[..., :1]).max()) <= GREY_TOLERANCE


def luma_rgb(image: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of float (H, W, 3) values, repeated over the three channels."""
  luma = np.asarray(image, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return np.repeat(luma[..., None], 3, axis=-1)


def aligned_crop(photo: np.ndarray, matrix: np.ndarray, size: int, face_side: float) -> np.ndarray:
  """The photo's face at `size`²: a face larger than that is warped at its own size, then resized (antialiased)."""
  native = max(size, int(round(face_side)))
  crop = alignment.warp_affine(photo, scaled(matrix, native / size), native)
  return degradations.resize(crop, size, "bicubic") if native > size else crop


def prepare_face(photo: np.ndarray, face: Face, matrix: np.ndarray, model, input_mode: str) -> PreparedFace:
  """The aligned crop and the method's input of one face (module docstring: "real" and "degrade")."""
  size, low = model.output_size, model.input_size
  face_side = size / matrix_scale(matrix)     # photo pixels across the aligned crop
  crop = aligned_crop(photo, matrix, size, face_side)
  if input_mode == "degrade":
    source = crop
    description = (f"synthetic: the aligned {size}² crop downsampled ×{size / low:g} with {model.downsample} "
                   f"(the training degradation); the face spans {face_side:.0f} px of the photo")
  else:
    native = max(low, int(round(face_side)))
    source = alignment.warp_affine(photo, scaled(matrix, native / size), native)   # the face at its own size
    description = (f"real: the photo's own face ({face_side:.0f} px across the crop)"
                   + (f", resized to {low}² with {model.downsample}" if native > low else
                      f", aligned at {low}² (no resizing beyond alignment)"))
  image = degradations.resize(source, low, model.downsample) if source.shape[0] != low else source
  if model.input_channels == 1:
    image = grey(image)
    description += "; grey luminance (the method reads one channel)"
  landmarks = unit_landmarks(face, matrix, size)
  if model.reads_landmarks and landmarks is None:
    description += "; no 68 landmarks (the method's landmark input is zeros)"
  return PreparedFace(face=face, matrix=matrix, crop=crop, input=to_unit_range(image), input_image=image,
                      description=description, landmarks=landmarks, face_side=face_side)


def aligned_face(photo: np.ndarray, template: np.ndarray) -> tuple[Face, np.ndarray]:
  """An already aligned photo: the whole image is the crop (an axis-aligned scaling to the template)."""
  height, width = photo.shape[:2]
  unit_to_photo = np.array([[width, 0.0, 0.0], [0.0, height, 0.0]])
  landmarks = template @ unit_to_photo[:, :2].T
  face = Face(box=(0.0, 0.0, float(width), float(height)), score=None, landmarks=landmarks)
  return face, np.array([[1.0 / width, 0.0, 0.0], [0.0, 1.0 / height, 0.0]])


# ----------------------------------------------------------------------------- paste-back


@dataclasses.dataclass(frozen=True)
class FaceEllipse:
  """The pasted region in aligned pixels: an ellipse over the face, feathered inward over `feather` px."""
  centre: tuple[float, float]
  radii: tuple[float, float]
  feather: float

  def radius(self, xs, ys):
    return np.sqrt(((xs - self.centre[0]) / self.radii[0]) ** 2 + ((ys - self.centre[1]) / self.radii[1]) ** 2)

  def mask(self, size: int, hard: bool = False) -> np.ndarray:
    """(size, size) float32 weights: 1 inside, smooth to 0 at the ellipse (0.5 on `contour`)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    inside = (1.0 - self.radius(xs, ys)) * min(self.radii) / self.feather   # ~pixels inside the edge / feather
    weight = np.clip(inside, 0.0, 1.0)
    weight = weight * weight * (3.0 - 2.0 * weight)                         # smoothstep
    return (weight > 0.5).astype(np.float32) if hard else weight.astype(np.float32)

  def contour(self, count: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """(count, 2) points where the mask is 0.5 and their outward unit normals, aligned pixels."""
    level = 1.0 - 0.5 * self.feather / min(self.radii)
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    points = np.stack([self.centre[0] + level * self.radii[0] * np.cos(angles),
                       self.centre[1] + level * self.radii[1] * np.sin(angles)], axis=1)
    normals = np.stack([np.cos(angles) / self.radii[0], np.sin(angles) / self.radii[1]], axis=1)
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def face_ellipse(template: np.ndarray, size: int) -> FaceEllipse:
  """From the template's eyes and mouth: eyebrows to chin, cheek to cheek (our proportions).

  Width: 1.05 eye distances each side of the centre; height: half the eye-mouth
  distance plus 0.95 eye distances each way from the eyes-mouth midpoint;
  clipped to the crop; feathered over a quarter of the eye distance.
  """
  points = template * size
  eyes, mouth = points[:2].mean(0), points[3:5].mean(0)
  eye_distance = float(np.linalg.norm(points[1] - points[0]))
  centre = (eyes + mouth) / 2.0
  radius_x = min(1.05 * eye_distance, centre[0], size - 1 - centre[0])
  radius_y = min(0.5 * float(mouth[1] - eyes[1]) + 0.95 * eye_distance, centre[1], size - 1 - centre[1])
  return FaceEllipse(centre=(float(centre[0]), float(centre[1])), radii=(float(radius_x), float(radius_y)),
                     feather=max(1.0, 0.25 * eye_distance))


def colour_match(output: np.ndarray, reference: np.ndarray, weight: np.ndarray, mode: str,
                 sigma: float) -> np.ndarray:
  """`output` (float, 0..255) with the colour of `reference` (the photo's aligned face) where `weight` > 0."""
  if mode == "none":
    return output
  weight = weight[..., None].astype(np.float64)
  difference = (reference.astype(np.float64) - output.astype(np.float64)) * weight
  if mode == "mean":
    return output + difference.sum((0, 1)) / max(weight.sum(), 1e-6)
  if mode != "lowpass":
    raise ValueError(f"colour_match={mode!r}; expected one of {', '.join(COLOUR_MATCHES)}.")
  blur = lambda image: ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="nearest")
  return output + blur(difference) / np.maximum(blur(weight), 1e-3)


def paste(canvas: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> tuple[int, int, int, int]:
  """Blends `face` (aligned, float) into `canvas` (float, in place) by `mask`; `matrix` maps canvas -> aligned.

  Only the canvas region under the warped crop is touched; returns it as (left, top, right, bottom).
  """
  size = face.shape[0]
  to_canvas = inverse(matrix)
  corners = alignment.transform_points(to_canvas, np.array([[0, 0], [size - 1, 0], [0, size - 1],
                                                            [size - 1, size - 1]], np.float64))
  left, top = (max(0, int(np.floor(v)) - 1) for v in corners.min(0))
  right = min(canvas.shape[1], int(np.ceil(corners[:, 0].max())) + 2)
  bottom = min(canvas.shape[0], int(np.ceil(corners[:, 1].max())) + 2)
  if right <= left or bottom <= top:
    return (0, 0, 0, 0)
  local = matrix.copy()
  local[:, 2] = matrix[:, :2] @ np.array([left, top], np.float64) + matrix[:, 2]   # region pixels -> aligned
  region_from_aligned = inverse(local)
  shape = (bottom - top, right - left)
  warped = alignment.warp_affine(face.astype(np.float32), region_from_aligned, shape, border="zero")
  alpha = alignment.warp_affine(mask.astype(np.float32), region_from_aligned, shape, border="zero")[..., None]
  region = canvas[top:bottom, left:right]
  canvas[top:bottom, left:right] = alpha * warped + (1.0 - alpha) * region
  changed = np.nonzero(alpha[..., 0] > 0)
  if not len(changed[0]):
    return (0, 0, 0, 0)
  return (left + int(changed[1].min()), top + int(changed[0].min()),
          left + int(changed[1].max()) + 1, top + int(changed[0].max()) + 1)


def upscale_photo(photo: np.ndarray, factor: int) -> np.ndarray:
  if factor == 1:
    return photo.astype(np.float32)
  height, width = photo.shape[:2]
  image = Image.fromarray(photo).resize((width * factor, height * factor), Image.BICUBIC)
  return np.asarray(image, np.float32)


def across_contour(photo: np.ndarray, matrix: np.ndarray, ellipse: FaceEllipse, distance: float = 2.0):
  """(colour inside − colour outside, kept) at points of the pasted ellipse's 0.5 contour, (K, 3) and (K,).

  Pairs of points `distance` photo pixels inside and outside the contour along
  its normal, sampled bilinearly from `photo` (H, W, 3); `matrix` maps photo ->
  aligned pixels; points too near the photo's border are not kept.
  """
  points, normals = ellipse.contour()
  to_photo = inverse(matrix)
  photo_points = alignment.transform_points(to_photo, points)
  photo_normals = normals @ to_photo[:, :2].T
  photo_normals /= np.linalg.norm(photo_normals, axis=1, keepdims=True)
  sample = lambda xy: np.stack([ndimage.map_coordinates(photo[..., c].astype(np.float64), [xy[:, 1], xy[:, 0]],
                                                        order=1, mode="nearest") for c in range(3)], axis=1)
  difference = sample(photo_points - distance * photo_normals) - sample(photo_points + distance * photo_normals)
  kept = ((photo_points[:, 0] >= distance) & (photo_points[:, 0] < photo.shape[1] - distance)
          & (photo_points[:, 1] >= distance) & (photo_points[:, 1] < photo.shape[0] - distance))
  return difference, kept


def seam_difference(photo: np.ndarray, matrix: np.ndarray, ellipse: FaceEllipse, distance: float = 2.0) -> float:
  """Mean |colour inside − colour outside| (0..255) across the pasted ellipse's 0.5 contour.

  On the unchanged photo this is the photo's own contrast there (hair, jaw line).
  """
  difference, kept = across_contour(photo, matrix, ellipse, distance)
  return float(np.abs(difference[kept]).mean()) if kept.any() else float("nan")


def seam_excess(result: np.ndarray, photo: np.ndarray, matrix: np.ndarray, ellipse: FaceEllipse,
                distance: float = 2.0) -> float:
  """Mean |jump across the contour in `result` − the same jump in the original `photo`| (0..255): the seam
  the paste added (0 when the result continues the photo's own colours there)."""
  after, kept = across_contour(result, matrix, ellipse, distance)
  before, _ = across_contour(photo, matrix, ellipse, distance)
  return float(np.abs(after - before)[kept].mean()) if kept.any() else float("nan")


def side_by_side(prepared: PreparedFace, output: np.ndarray) -> np.ndarray:
  """One labelled row: the method's input | the photo's aligned face | the output (hallujax.images grid)."""
  from hallujax import images
  input_image = prepared.input_image
  if input_image.shape[-1] == 1:
    input_image = np.repeat(input_image, 3, axis=-1)
  columns = {"input": input_image[None], "photo": prepared.crop[None], "output": output[None]}
  return images.image_grid(columns, max_rows=1, min_tile=max(128, prepared.crop.shape[0]))


# ----------------------------------------------------------------------------- the pipeline


class FaceModel(Protocol):
  """`reads_landmarks`: `run(inputs, landmarks)` also takes (batch, 68, 2) points (else `run(inputs)`)."""
  reads_landmarks: bool
  input_size: int
  input_channels: int
  output_size: int
  downsample: str
  template: np.ndarray
  batch_size: int

  def run(self, inputs: np.ndarray) -> np.ndarray:
    """(batch_size, in, in, C) float32 [-1, 1] -> (batch_size, out, out, 3) float32 [-1, 1]."""


@dataclasses.dataclass
class Options:
  mode: str = "all"              # MODES
  input: str = "real"            # INPUTS
  upscale: int = 1               # output photo scale; 0: automatic (up to the method's scale, faces at its size)
  colour_match: str = "lowpass"  # COLOUR_MATCHES
  hard_paste: bool = False       # a binary mask (for the seam measure)
  max_side: int = 4096           # automatic upscaling stops here
  large_faces: str = "paste"     # LARGE_FACES: faces > LARGE_FACE_RATIO × the output side, pasted enlarged or skipped

  def __post_init__(self):
    for name, value, known in (("mode", self.mode, MODES), ("input", self.input, INPUTS),
                               ("colour_match", self.colour_match, COLOUR_MATCHES),
                               ("large_faces", self.large_faces, LARGE_FACES)):
      if value not in known:
        raise ValueError(f"{name}={value!r}; expected one of {', '.join(known)}.")
    if self.upscale < 0:
      raise ValueError(f"upscale={self.upscale}; expected 0 (automatic) or a positive integer.")


@dataclasses.dataclass
class PhotoResult:
  name: str
  photo: np.ndarray | None                    # the input (None if unreadable)
  output: np.ndarray | None = None            # the output photo, uint8 (None: no face / unreadable)
  faces: list = dataclasses.field(default_factory=list)    # per face: dict for the JSON
  side_by_side: list = dataclasses.field(default_factory=list)
  error: str | None = None
  upscale: int = 1

  @property
  def status(self) -> str:
    return "unreadable" if self.error else ("no_face" if not self.faces else "ok")

  def record(self) -> dict:
    """The JSON entry of this photo."""
    entry = {"file": self.name, "status": self.status, "faces": self.faces}
    if self.error:
      entry["error"] = self.error
    if self.photo is not None:
      entry.update(height=int(self.photo.shape[0]), width=int(self.photo.shape[1]), upscale=self.upscale)
    return entry


class Pending:
  """A photo waiting for its faces' outputs."""

  def __init__(self, result: PhotoResult, prepared: list[PreparedFace]):
    self.result, self.prepared = result, prepared
    self.outputs: list[np.ndarray | None] = [None] * len(prepared)
    self.remaining = len(prepared)


class Hallucinator:
  """Photos in, photos out: faces of many photos go through the model in fixed-size batches.

  ``feed(name, photo_or_error)`` queues one photo and returns the photos
  finished so far (a batch runs each time ``batch_size`` faces are waiting);
  ``finish()`` pads and runs the last batch. The model sees only
  ``(batch_size, ...)`` arrays, so it compiles once.
  """

  def __init__(self, model: FaceModel, detector: Callable | None, options: Options):
    self.model, self.detector, self.options = model, detector, options
    self.template = np.asarray(model.template, np.float64)
    self.ellipse = face_ellipse(self.template, model.output_size)
    self.mask = self.ellipse.mask(model.output_size, hard=options.hard_paste)
    self.sigma = max(1.0, float(np.linalg.norm(self.template[1] - self.template[0])) * model.output_size / 4)
    self.queue: list[tuple[Pending, int]] = []
    self.faces_done = 0
    self.batches = 0
    self.padded = 0
    self.model_seconds = 0.0
    self.large_faces: list[float] = []   # the side (photo pixels) of every face much larger than the output

  # -- host side
  def faces_of(self, photo: np.ndarray) -> list[Face]:
    if self.options.mode == "aligned":
      return [aligned_face(photo, self.template)[0]]
    if self.detector is None:
      raise ValueError("No detector: give one, or mode='aligned'.")
    faces = self.detector(photo)
    return faces[:1] if self.options.mode == "largest" else faces

  def matrix_of(self, photo: np.ndarray, face: Face) -> np.ndarray:
    size = self.model.output_size
    if self.options.mode == "aligned":
      return aligned_face(photo, self.template)[1] * size
    return face_matrix(face.landmarks, self.template, size)

  def feed(self, name: str, photo: np.ndarray | PhotoError) -> list[PhotoResult]:
    if isinstance(photo, PhotoError):
      return [PhotoResult(name=name, photo=None, error=str(photo))]
    result = PhotoResult(name=name, photo=photo)
    faces = self.faces_of(photo)
    if not faces:
      return [result]
    prepared = [prepare_face(photo, face, self.matrix_of(photo, face), self.model, self.options.input)
                for face in faces]
    pending = Pending(result, prepared)
    self.queue.extend((pending, index) for index in range(len(prepared)))
    finished = []
    while len(self.queue) >= self.model.batch_size:
      finished.extend(self.run_batch())
    return finished

  def finish(self) -> list[PhotoResult]:
    finished = []
    while self.queue:
      finished.extend(self.run_batch())
    return finished

  # -- the model
  def run_batch(self) -> list[PhotoResult]:
    import time
    size = self.model.batch_size
    taken, self.queue = self.queue[:size], self.queue[size:]
    inputs = np.stack([pending.prepared[index].input for pending, index in taken])
    landmarks = np.stack([pending.prepared[index].landmarks if pending.prepared[index].landmarks is not None
                          else np.zeros((68, 2), np.float32) for pending, index in taken])
    if len(taken) < size:   # pad with copies of the first face: the same shape, so no recompilation
      inputs = np.concatenate([inputs, np.repeat(inputs[:1], size - len(taken), axis=0)])
      landmarks = np.concatenate([landmarks, np.repeat(landmarks[:1], size - len(taken), axis=0)])
      self.padded += size - len(taken)
    start = time.perf_counter()
    if self.model.reads_landmarks:
      outputs = np.asarray(self.model.run(inputs, landmarks))
    else:
      outputs = np.asarray(self.model.run(inputs))
    self.model_seconds += time.perf_counter() - start
    self.batches += 1
    finished = []
    for (pending, index), output in zip(taken, outputs):
      pending.outputs[index] = output
      pending.remaining -= 1
      self.faces_done += 1
      if pending.remaining == 0:
        finished.append(self.compose(pending))
    return finished

  # -- paste-back
  def upscale_for(self, photo: np.ndarray, prepared: list[PreparedFace]) -> int:
    if self.options.upscale:
      return self.options.upscale
    largest_scale = max(matrix_scale(p.matrix) for p in prepared)    # output px per photo px
    method_scale = max(1, self.model.output_size // self.model.input_size)
    factor = int(min(method_scale, max(1, math.ceil(largest_scale - 1e-6))))
    while factor > 1 and max(photo.shape[:2]) * factor > self.options.max_side:
      factor -= 1
    return factor

  def compose(self, pending: Pending) -> PhotoResult:
    result, photo = pending.result, pending.result.photo
    factor = self.upscale_for(photo, pending.prepared)
    canvas = upscale_photo(photo, factor)
    grey_photo = is_grey(photo)
    for number, (prepared, output) in enumerate(zip(pending.prepared, pending.outputs)):
      face_image = to_uint8(output)
      matched = colour_match((np.asarray(output, np.float32) + 1.0) * 127.5, prepared.crop, self.mask,
                             "none" if self.options.hard_paste else self.options.colour_match, self.sigma)
      if grey_photo:
        matched = luma_rgb(matched)
      large = prepared.face_side > LARGE_FACE_RATIO * self.model.output_size
      if large:
        self.large_faces.append(prepared.face_side)
      canvas_matrix = scaled_input(prepared.matrix, factor)
      if large and self.options.large_faces == "skip":
        region = (0, 0, 0, 0)
      else:
        region = paste(canvas, np.clip(matched, 0, 255), self.mask, canvas_matrix)
      face = prepared.face
      extra = {}
      if grey_photo:
        extra["grey"] = "grey photo: the output's luma was pasted"
      if large:
        extra["large_face"] = (f"{prepared.face_side:.0f} px face from a {self.model.output_size} px output: "
                               + ("left unchanged (large_faces=skip)" if self.options.large_faces == "skip"
                                  else "pasted enlarged (a blur at that size)"))
      result.faces.append({
          "index": number,
          "box": [round(v, 2) for v in face.box],
          "score": None if face.score is None else round(face.score, 4),
          "landmarks": np.round(face.landmarks, 2).tolist(),
          "paste_box": [round(v / factor, 2) for v in region],
          "input": prepared.description,
          "scale": round(matrix_scale(prepared.matrix), 4),
          **extra,
      })
      result.side_by_side.append(side_by_side(prepared, face_image))
    result.output = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    result.upscale = factor
    return result


def scaled_input(matrix: np.ndarray, factor: int) -> np.ndarray:
  """photo -> aligned becomes (photo upscaled by `factor`) -> aligned."""
  out = matrix.copy()
  out[:, :2] = matrix[:, :2] / factor
  return out


def photo_files(path: str) -> list[str]:
  """A file, or the files of a folder (sorted, hidden ones left out, not recursive)."""
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    return sorted(os.path.join(path, name) for name in os.listdir(path)
                  if not name.startswith(".") and os.path.isfile(os.path.join(path, name)))
  raise FileNotFoundError(f"--input={path}: no such file or folder.")


def read_photos(paths: Sequence[str]) -> Iterator[tuple[str, np.ndarray | PhotoError]]:
  for path in paths:
    try:
      yield path, read_photo(path)
    except PhotoError as error:
      yield path, error
