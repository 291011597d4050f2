"""Parameters of the face world: identities, expressions and per-image nuisances.

Everything here is numpy and deterministic: an identity's parameters come from
``(world_seed, identity)`` and an image's nuisances from a numpy Generator the
caller seeds with ``(world_seed, split, index)``. The renderer
(hallujax.data.faceworld_render) turns a dict of these float32 values into
images; it never draws random numbers itself.

Head-frame units: the head is about 1.4 high (crown to chin) and 1.0 wide;
x points to the image right of a frontal face, y up, z towards the camera.
"""

from __future__ import annotations

import functools

import numpy as np

EXPRESSIONS = ("neutral", "smile", "surprise", "anger", "disgust", "fear", "sadness")

# How each expression moves the face at full intensity (added to, or
# multiplied with, the identity's neutral geometry). Hand-tuned after FACS
# descriptions of the prototypical expressions: smile raises the mouth corners
# and cheeks and narrows the eyes; surprise raises the brows, widens the eyes
# and drops the jaw; anger lowers and knits the brows and presses the lips;
# disgust raises the upper lip; fear raises the inner brows and stretches the
# mouth; sadness raises the inner brows and lowers the mouth corners.
_EXPRESSION_EFFECTS = {
    #            eye_open brow_raise brow_inner corner  open  width_scale upper_lip cheek jaw_drop
    "neutral":  (1.00,    0.000,     0.000,     0.000,  0.000, 1.00, 0.000,    0.00, 0.00),
    "smile":    (0.70,    0.005,     0.000,     0.050,  0.014, 1.22, 0.004,    0.03, 0.01),
    "surprise": (1.55,    0.055,     0.005,     0.000,  0.060, 0.80, 0.000,    0.00, 0.06),
    "anger":    (0.75,   -0.030,    -0.045,    -0.010,  0.000, 0.92, 0.000,    0.00, 0.00),
    "disgust":  (0.65,   -0.020,    -0.025,    -0.018,  0.008, 0.95, 0.022,    0.01, 0.00),
    "fear":     (1.40,    0.030,     0.030,    -0.012,  0.030, 1.12, 0.000,    0.00, 0.03),
    "sadness":  (0.85,    0.008,     0.035,    -0.030,  0.000, 0.95, 0.000,    0.00, 0.00),
}
EXPRESSION_FIELDS = ("eye_open", "brow_raise", "brow_inner", "mouth_corner", "mouth_open",
                     "mouth_width_scale", "upper_lip_raise", "cheek_raise", "jaw_drop")

# Skin tones from light to dark (linear RGB-ish albedo, 0..1).
_SKIN_TONES = np.array([
    [0.96, 0.80, 0.69], [0.90, 0.72, 0.60], [0.80, 0.60, 0.46],
    [0.66, 0.46, 0.33], [0.50, 0.33, 0.23], [0.36, 0.24, 0.17],
], np.float32)
_HAIR_COLOURS = np.array([
    [0.05, 0.04, 0.035], [0.16, 0.10, 0.06], [0.33, 0.21, 0.12],
    [0.68, 0.54, 0.32], [0.55, 0.24, 0.10], [0.62, 0.62, 0.60],
], np.float32)
_IRIS_COLOURS = np.array([
    [0.22, 0.13, 0.07], [0.35, 0.22, 0.10], [0.30, 0.42, 0.55],
    [0.35, 0.45, 0.30], [0.12, 0.08, 0.05],
], np.float32)


def identity_parameters(world_seed: int, identity: int) -> dict[str, np.ndarray]:
  """The fixed appearance of one identity (float32 scalars and RGB triples; a new dict, read-only arrays)."""
  return dict(_identity_parameters(int(world_seed), int(identity)))


# Drawing an identity costs ~0.2 ms of Python (30 generator calls), as much as
# rendering a third of a 128² face; identities recur in every epoch, so they are
# drawn once per process. ~1 KB each: 2^16 identities hold ~64 MB at most.
@functools.lru_cache(maxsize=2**16)
def _identity_parameters(world_seed: int, identity: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([int(world_seed), 7919, int(identity)])
  u = lambda low, high: np.float32(rng.uniform(low, high))
  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  low = int(np.floor(tone))
  skin = _SKIN_TONES[low] * (1 - (tone - low)) + _SKIN_TONES[min(low + 1, len(_SKIN_TONES) - 1)] * (tone - low)
  skin = skin * rng.uniform(0.95, 1.05, 3)
  hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
  iris = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
  lips = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.85, 1.05, 3)
  p = dict(
      head_width=u(0.88, 1.12),     # scales the cranium's x radius
      head_height=u(0.92, 1.08),
      jaw_width=u(0.78, 1.12),
      chin_length=u(0.88, 1.14),
      cheek_size=u(0.9, 1.1),
      eye_x=u(0.17, 0.24),          # half the distance between the eye centres
      eye_y=u(0.07, 0.12),
      eye_width=u(0.075, 0.1),    # half width of the eye opening
      eye_height=u(0.028, 0.044),   # height of the upper lid arc above the eye line
      eye_tilt=u(-0.12, 0.18),      # outer corners up (+) or down (-)
      iris_radius=u(0.028, 0.034),
      brow_gap=u(0.055, 0.085),     # brow above the eye line
      brow_thickness=u(0.01, 0.03),
      brow_length=u(0.09, 0.12),
      brow_arch=u(0.005, 0.025),
      brow_darkness=u(0.55, 0.95),
      nose_length=u(0.15, 0.26),    # eye line to nose tip
      nose_width=u(0.75, 1.35),
      nose_projection=u(-0.04, 0.07),
      mouth_y=u(-0.42, -0.33),
      mouth_width=u(0.10, 0.16),
      upper_lip=u(0.012, 0.03),
      lower_lip=u(0.018, 0.04),
      ear_size=u(0.85, 1.15),
      hair_volume=u(0.0, 1.0),      # 0: close-cropped, 1: voluminous
      hair_line=u(0.0, 1.0),        # 0: low fringe, 1: high / receding
      hair_length=u(0.0, 1.0),      # long hair down the back
      nir_skin=u(0.55, 0.72),       # skin reflectance at ~850 nm
      nir_hair=u(0.15, 0.45),
      face_temperature=u(0.62, 0.74),
  )
  p = {k: np.float32(v) for k, v in p.items()}
  p.update(skin_colour=skin.astype(np.float32), hair_colour=hair.astype(np.float32),
           iris_colour=iris.astype(np.float32), lip_colour=lips.astype(np.float32))
  for colour in ("skin_colour", "hair_colour", "iris_colour", "lip_colour"):
    p[colour].flags.writeable = False   # shared by every caller of the cache
  return p


def expression_parameters(expression: int, intensity: float) -> dict[str, np.float32]:
  """The expression offsets at `intensity` (0 = neutral, 1 = full)."""
  neutral = _EXPRESSION_EFFECTS["neutral"]
  effect = _EXPRESSION_EFFECTS[EXPRESSIONS[expression]]
  return {name: np.float32(base + intensity * (value - base))
          for name, base, value in zip(EXPRESSION_FIELDS, neutral, effect)}


# VividGAN's yaws (paper 002 §IV and §V-A): Multi-PIE's ±15, ±30, ±45, ±60, ±75, ±90 and the
# synthesized CelebA / MMI poses ±22, ±40, ±55, ±75, together.
PAPER_YAW_SET = (15.0, 22.0, 30.0, 40.0, 45.0, 55.0, 60.0, 75.0, 90.0)
MAX_SET_YAW = 90.0


def signed_yaws(yaw_set) -> tuple[float, ...]:
  """The yaws a `yaw_set` of magnitudes stands for: each ±, sorted, without repeats ("±0" is 0)."""
  magnitudes = [abs(float(v)) for v in yaw_set]
  if any(not np.isfinite(v) or v > MAX_SET_YAW for v in magnitudes):
    raise ValueError(f"data.yaw_set={tuple(yaw_set)!r}; expected yaw magnitudes in degrees, 0..{MAX_SET_YAW:g} "
                     f"(e.g. {PAPER_YAW_SET}).")
  return tuple(sorted({s * v for v in magnitudes for s in (-1.0, 1.0)}))


def draw_yaw(rng: np.random.Generator, max_yaw: float, yaw_set=()) -> np.float32:
  """Uniform in [-max_yaw, max_yaw], or, with a `yaw_set`, one of its ± values with equal probability.

  Both forms take one number from `rng`, so a set changes an image's yaw and nothing else
  (pitch, roll, light, expression ... are the draws that follow).
  """
  if not len(yaw_set):
    return np.float32(rng.uniform(-max_yaw, max_yaw))
  yaws = signed_yaws(yaw_set)
  position = rng.uniform(0.0, 1.0)
  return np.float32(yaws[min(int(position * len(yaws)), len(yaws) - 1)])


def view_parameters(rng: np.random.Generator, *, max_yaw: float = 90.0, max_pitch: float = 20.0,
                    max_roll: float = 12.0, yaw_set=()) -> dict[str, np.ndarray]:
  """Pose, illumination, background and clothing of one image (`yaw_set`: see draw_yaw)."""
  u = lambda low, high: np.float32(rng.uniform(low, high))
  background = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
  yaw = draw_yaw(rng, max_yaw, yaw_set)   # drawn after the background, as before yaw_set existed
  return dict(
      yaw=yaw, pitch=u(-max_pitch, max_pitch), roll=u(-max_roll, max_roll),
      light_azimuth=u(-60, 60), light_elevation=u(0, 55),
      light_strength=u(0.55, 0.9), ambient=u(0.4, 0.55),
      light_colour=(1 + rng.uniform(-0.08, 0.08, 3)).astype(np.float32),
      gaze_x=u(-0.25, 0.25), gaze_y=u(-0.15, 0.15),
      background_top=background[0], background_bottom=background[1],
      background_angle=u(-0.6, 0.6), background_waves=u(0.0, 0.08),
      cloth_colour=rng.uniform(0.05, 0.9, 3).astype(np.float32),
      nir_background=u(0.05, 0.3), nir_cloth=u(0.2, 0.8),
      thermal_background=u(0.05, 0.2), thermal_gain=u(0.9, 1.1),
  )


def expression_sample(rng: np.random.Generator) -> tuple[int, float]:
  """An expression index and intensity; about a quarter of images are neutral."""
  expression = int(rng.integers(len(EXPRESSIONS))) if rng.uniform() > 0.2 else 0
  intensity = float(rng.uniform(0.5, 1.0)) if expression else 0.0
  return expression, intensity


def stack(parameter_dicts: list[dict]) -> dict[str, np.ndarray]:
  """Stacks per-face parameter dicts into a batch (leading axis)."""
  # np.asarray of a list builds each field in one pass (~10x faster than np.stack of 0-d arrays).
  return {k: np.asarray([d[k] for d in parameter_dicts], np.float32) for k in parameter_dicts[0]}


# Thermal sensors (data.thermal_sensors): how one institution's camera turns the rendered heat image into
# its 8-bit frame, applied after rendering in this order (hallujax.data.faceworld.apply_thermal_sensor):
#   response    out = 255 · gain · (in / 255)^gamma + offset     (the camera's radiometric curve and AGC)
#   blur        extra Gaussian blur, σ = blur · image size       (optics / focus)
#   resolution  native resolution as a fraction of the render: area-average to it, nearest back up
#   noise       Gaussian noise, σ in grey levels (NETD), seeded per example
# "reference" leaves the render as it is (bit for bit); the others make institutions visibly different,
# as VIS-TH's dual-sensor LWIR camera and ARL-VTF's FLIR Boson are (paper 000, §4).
THERMAL_SENSORS = {
    "reference": dict(gamma=1.0, gain=1.0, offset=0.0, blur=0.0, resolution=1.0, noise=0.0),
    "uncooled": dict(gamma=0.75, gain=0.8, offset=30.0, blur=0.01, resolution=0.5, noise=4.0),
    "cooled": dict(gamma=1.4, gain=1.1, offset=-8.0, blur=0.0, resolution=1.0, noise=1.5),
}


def thermal_sensor(name: str) -> dict[str, float]:
  if name not in THERMAL_SENSORS:
    raise ValueError(f"data.thermal_sensors names {name!r}; known sensors: {', '.join(THERMAL_SENSORS)}.")
  return dict(THERMAL_SENSORS[name])
