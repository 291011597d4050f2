"""The face world: procedural faces with identity, pose, expression, modality and landmarks.

``FaceWorldSource(data_config, split)`` is the default data source of every
config (SOURCES["faceworld"]). Example ``index`` of a split is a pure function
of ``(data_config.world_seed, split, index)``: the same index always renders
the same image. Each image draws an identity, a pose (yaw in
[-max_yaw, max_yaw], pitch, roll), an expression (neutral, smile, surprise,
anger, disgust, fear, sadness) with an intensity, illumination, background and
clothing; the identity's appearance (head and face shape, skin tone, eye, brow,
nose, mouth geometry and colour, hair) is fixed by ``(world_seed, identity)``.

``data_config.pairing`` says how "input" relates to "target" (always the
visible RGB render at ``target_size``²):

    same_view           input = the target image itself (the pipeline
                        downsamples it: FH-GAN, IPFH)
    frontalize          input = a non-frontal view; target = the frontal view
                        (yaw = pitch = roll = 0) of the same face, expression
                        and lighting (VividGAN)
    thermal_aligned     input = the thermal render of the target's exact view,
    nir_aligned         or its near-infrared render: pixel-aligned (VPGAN)
    thermal_unaligned   input = a thermal / NIR image of the same identity with
    nir_unaligned       another pose, expression and lighting (PCFH, unaligned)

Examples: "input" uint8 (S, S, input_channels), "target" uint8 (S, S, 3) with
S = target_size, "identity" int32, "landmarks" float32 (68, 2) iBUG-300W
order in target pixel coordinates (pixel centres at integers),
"visibility" bool (68,), "yaw" float32 (the input's yaw, degrees),
"expression" int32 (index into EXPRESSIONS; the target's),
"input_landmarks" float32 (68, 2) the input view's landmarks in input pixel
coordinates (at target_size here; the pipeline rescales them with "input"),
"aligned_target" uint8 (S, S, 3) the visible render of the input's own view
(pose, expression, lighting): the pixel-aligned visible image that the
unaligned pairings do not train on but evaluate against (PCFH). For pairings
whose input is the target's view, input_landmarks == landmarks and
aligned_target == target.

Splits: train, validation and test draw images from different seeds, so they
share no image. Identities are shared across splits by default
(``identity_split="shared"``: recognition-style evaluation on seen people);
``identity_split="disjoint"`` gives train the first 80% of identities,
validation the next 10% and test the last 10%, for verification on unseen
identities.

Optional data_config fields (read with defaults): world_seed (0),
identity_split ("shared"), max_yaw (90), max_pitch (20), max_roll (12),
yaw_set (()): yaw magnitudes in degrees; non-empty, every view's yaw is one
of ±each with equal probability instead of uniform in [-max_yaw, max_yaw]
(VividGAN's discrete poses: faceworld_params.PAPER_YAW_SET); the other
image's other parameters are those it has without the set,
thermal_sensors (()): names of faceworld_params.THERMAL_SENSORS, one per
site (institution, federated runs). With S names, the split is S contiguous
blocks ("sites", example i in site ⌊i·S/N⌋); site s's thermal and NIR inputs
go through sensor s (apply_thermal_sensor: response curve, blur, native
resolution, noise) and every example gets a "site" int32 field. Host rendering
only.
symmetric_frontal (False): every view lit from straight ahead, background
untilted and without waves, gaze centred (SYMMETRIC_SCENE), so frontal targets
are mirror-symmetric scenes (VividGAN's L_sys);
plain_background (False): one flat mid-grey background behind every visible
view (PLAIN_BACKGROUND), for NIR → visible targets a NIR image can predict;
uniform_appearance (False): every face in one scene and one set of colours
(UNIFORM_APPEARANCE: the plain background, one light, one shirt, one skin
tone, hair, eye and lip colour), everything of a visible face that a thermal
image cannot show, so thermal → visible targets are set by what the thermal
input does show (shape, pose, expression);
local_degradation ("": off; "occlusion" | "blur" | "shade"), with
local_degradation_count (3) and local_degradation_radius (0.12 of the side):
discs at random places of the same_view input (LocalDegradation; host only).
With it every example also has "degraded" float32 (S, S, 1) in [0, 1]: the
share of each input pixel that the discs replaced (1 inside, the one-pixel soft
edge in between, 0 outside), at the input's resolution (the pipeline resizes it
with "input": `gives_degraded_region`). Methods may evaluate where they repair
against it; nothing trains on it.
"""

from __future__ import annotations

import numpy as np

from hallujax.data import faceworld_params as params_lib
from hallujax.data.faceworld_render import render_batch

PAIRINGS = ("same_view", "frontalize", "thermal_aligned", "nir_aligned",
            "thermal_unaligned", "nir_unaligned")
SPLITS = {"train": 0, "validation": 1, "test": 2}
EXPRESSIONS = params_lib.EXPRESSIONS
MAX_SIZE = 512


def face_parameters(world_seed: int, identity: int, rng: np.random.Generator, *,
                    max_yaw=90.0, max_pitch=20.0, max_roll=12.0, yaw_set=()) -> dict[str, np.ndarray]:
  """All renderer parameters of one image of `identity`, nuisances drawn from `rng` (yaw_set: draw_yaw)."""
  p = params_lib.identity_parameters(world_seed, identity)
  expression, intensity = params_lib.expression_sample(rng)
  p.update(params_lib.expression_parameters(expression, intensity))
  p.update(params_lib.view_parameters(rng, max_yaw=max_yaw, max_pitch=max_pitch, max_roll=max_roll,
                                      yaw_set=yaw_set))
  p["expression_index"] = np.float32(expression)
  return p


def input_modality(pairing: str) -> str:
  """The modality of "input" under `pairing`: "visible", "thermal" or "nir"."""
  return pairing.split("_")[0] if pairing.startswith(("thermal", "nir")) else "visible"


def rendered_modalities(pairing: str) -> tuple[str, ...]:
  """What one render of a `pairing` example makes: ("visible",) or ("visible", "thermal" | "nir").

  The target's and the input's modality, no more: the shader renders up to
  that in one loop (faceworld_render._pack), and one program per size serves
  every example.
  """
  return tuple(dict.fromkeys(("visible", input_modality(pairing))))


def _renderer_inputs(p):
  return {k: v for k, v in p.items() if k != "expression_index"}


LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R BT.601: RGB -> one channel


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
  """Converts (H, W, 1|3) uint8 to `channels` channels (luminance or repetition)."""
  if image.shape[-1] == channels:
    return image
  if channels == 3:
    return np.repeat(image, 3, axis=-1)
  if channels == 1:
    luminance = image.astype(np.float32) @ LUMINANCE
    return np.round(luminance)[..., None].astype(np.uint8)
  raise ValueError(f"data.input_channels={channels}; expected 1 or 3.")


class FaceWorldSource:
  """Random-access source of face-world examples (see the module docstring)."""

  def __init__(self, data_config, split: str):
    if split not in SPLITS:
      raise ValueError(f"split={split!r}; expected one of {', '.join(SPLITS)}.")
    self.pairing = data_config.pairing
    if self.pairing not in PAIRINGS:
      raise ValueError(f"config.data.pairing={self.pairing!r} is not a face-world pairing. "
                       f"Known pairings: {', '.join(PAIRINGS)}.")
    self.size = int(data_config.target_size)
    if not 8 <= self.size <= MAX_SIZE:
      raise ValueError(f"config.data.target_size={self.size}; the face world renders 8..{MAX_SIZE} pixels.")
    self.split = split
    self.world_seed = int(data_config.world_seed)
    self.input_channels = int(data_config.input_channels)
    self.num_identities = int(data_config.num_identities)
    self.length = int(data_config.train_size if split == "train" else data_config.eval_size)
    self.pose_limits = dict(max_yaw=float(data_config.max_yaw),
                            max_pitch=float(data_config.max_pitch),
                            max_roll=float(data_config.max_roll),
                            yaw_set=params_lib.signed_yaws(data_config.yaw_set or ()))
    identity_split = data_config.identity_split
    if identity_split == "shared":
      self.identity_range = (0, self.num_identities)
    elif identity_split == "disjoint":
      bounds = [0, int(0.8 * self.num_identities), int(0.9 * self.num_identities), self.num_identities]
      k = SPLITS[split]
      self.identity_range = (bounds[k], bounds[k + 1])
      if self.identity_range[0] >= self.identity_range[1]:
        raise ValueError(f"identity_split='disjoint' needs num_identities >= 10 "
                         f"(got {self.num_identities}); the {split} split has no identity.")
    else:
      raise ValueError(f"config.data.identity_split={identity_split!r}; expected 'shared' or 'disjoint'.")
    self.symmetric_frontal = bool(data_config.symmetric_frontal)
    self.plain_background = bool(data_config.plain_background)
    self.uniform_appearance = bool(data_config.uniform_appearance)
    self.local_degradation = LocalDegradation.of(data_config, self.pairing)
    self.sensors = tuple(params_lib.thermal_sensor(name) for name in data_config.thermal_sensors)
    if (self.local_degradation is not None) and data_config.render_on == "device":
      raise ValueError("config.data.local_degradation is applied on the host; use config.data.render_on='host' "
                       "with it.")
    if self.sensors and data_config.render_on == "device":
      raise ValueError("config.data.thermal_sensors applies each site's sensor on the host; use "
                       "config.data.render_on='host' with it.")
    if self.sensors and self.length < len(self.sensors):
      raise ValueError(f"The {split} split has {self.length} examples for {len(self.sensors)} thermal sensors.")

  def __len__(self) -> int:
    return self.length

  def __repr__(self) -> str:
    return (f"FaceWorldSource(split={self.split!r}, pairing={self.pairing!r}, size={self.size}, "
            f"identities={self.identity_range}, length={self.length}, world_seed={self.world_seed})")

  def parameters(self, index: int) -> tuple[int, dict, dict]:
    """(identity, target parameters, input parameters) of example `index`."""
    if not 0 <= index < self.length:
      raise IndexError(f"index {index} out of range for {self.split} split of length {self.length}.")
    rng = np.random.default_rng([self.world_seed, SPLITS[self.split], int(index)])
    low, high = self.identity_range
    identity = int(low + rng.integers(high - low))
    target = face_parameters(self.world_seed, identity, rng, **self.pose_limits)
    if self.pairing == "frontalize":
      source = target
      target = dict(source, yaw=np.float32(0), pitch=np.float32(0), roll=np.float32(0))
    elif self.pairing.endswith("_unaligned"):
      source = face_parameters(self.world_seed, identity, rng, **self.pose_limits)
    else:
      source = target
    if self.symmetric_frontal:   # after every draw, so the other parameters stay those of the option off
      same_view = source is target
      target = dict(target, **SYMMETRIC_SCENE)
      source = target if same_view else dict(source, **SYMMETRIC_SCENE)
    if self.plain_background:   # after every draw too: the faces and poses are those of the option off
      same_view = source is target
      target = dict(target, **PLAIN_BACKGROUND)
      source = target if same_view else dict(source, **PLAIN_BACKGROUND)
    if self.uniform_appearance:   # after every draw too: identities, shapes, poses and thermal inputs unchanged
      same_view = source is target
      target = dict(target, **UNIFORM_APPEARANCE)
      source = target if same_view else dict(source, **UNIFORM_APPEARANCE)
    return identity, target, source

  def site(self, index: int) -> int:
    """The site (institution) of example `index`: contiguous blocks, one per thermal sensor."""
    return (int(index) * max(1, len(self.sensors))) // self.length

  def identity(self, index: int) -> int:
    """Example `index`'s identity without drawing the rest of its parameters (the first draw of parameters())."""
    rng = np.random.default_rng([self.world_seed, SPLITS[self.split], int(index)])
    low, high = self.identity_range
    return int(low + rng.integers(high - low))

  def labels(self, name: str) -> np.ndarray:
    """`name` ("identity" or "site") of every example, without rendering (for client partitions)."""
    if name == "identity":
      return np.array([self.identity(i) for i in range(self.length)], np.int32)
    if name == "site":
      return np.array([self.site(i) for i in range(self.length)], np.int32)
    raise ValueError(f"The face world labels examples by 'identity' or 'site' without rendering; got {name!r}.")

  def _input_modality(self) -> str:
    return input_modality(self.pairing)

  def renderer_parameters(self, index: int) -> dict[str, np.ndarray]:
    """Example `index` as what the renderer needs, not rendered (for data.render_on="device").

    A flat dict: "target/<name>" the target view's renderer parameters
    (float32) and, only for pairings whose input is another view (frontalize,
    *_unaligned), "input/<name>" the input view's; plus "identity", "yaw" and
    "expression" exactly as __getitem__ gives them.
    hallujax.data.device_render renders a batch of these on the devices.
    """
    identity, target, source = self.parameters(int(index))
    views = {"target": target} if source is target else {"target": target, "input": source}
    example = {f"{view}/{name}": np.asarray(value, np.float32)
               for view, p in views.items() for name, value in _renderer_inputs(p).items()}
    example.update(identity=np.int32(identity), yaw=np.float32(source["yaw"]),
                   expression=np.int32(target["expression_index"]))
    return example

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    identity, target, source = self.parameters(int(index))
    modality = self._input_modality()
    modalities = rendered_modalities(self.pairing)   # always batch 1: one program per size
    rendered = _render_one(target, self.size, modalities)
    source_rendered = rendered if source is target else _render_one(source, self.size, modalities)
    image = source_rendered[modality]
    optional_fields = {}
    if self.local_degradation is not None:
      blobs = np.random.default_rng([self.world_seed, SPLITS[self.split], int(index), 7])
      image, region = self.local_degradation.apply_with_region(image, blobs)
      optional_fields[DEGRADED] = region
    if self.sensors:
      site = self.site(int(index))
      optional_fields["site"] = np.int32(site)
      if modality != "visible":
        noise = np.random.default_rng([self.world_seed, SPLITS[self.split], int(index), 5])
        image = apply_thermal_sensor(image, self.sensors[site], noise)
    return optional_fields | {
        "input": _channels(image, self.input_channels),
        "target": rendered["visible"],
        "identity": np.int32(identity),
        "landmarks": rendered["landmarks"].astype(np.float32),
        "visibility": rendered["visibility"].astype(bool),
        "yaw": np.float32(source["yaw"]),
        "expression": np.int32(target["expression_index"]),
        "input_landmarks": source_rendered["landmarks"].astype(np.float32),
        "aligned_target": source_rendered["visible"],
    }


# data.symmetric_frontal: every view's scene is mirror-symmetric about the face's vertical axis, so a
# frontal view is (up to the face's own asymmetries) its own mirror image: light from straight ahead
# (azimuth 0; elevation unchanged), an untilted vertical background gradient with no waves, eyes
# gazing straight ahead horizontally. VividGAN's symmetry loss L_sys (paper 002, Eq. 3) assumes such
# targets ("the frontal face is symmetric"); the default scene lights from up to ±60° and tilts the
# background, so its frontal targets are not.
SYMMETRIC_SCENE = dict(light_azimuth=np.float32(0), background_angle=np.float32(0),
                       background_waves=np.float32(0), gaze_x=np.float32(0))
# data.plain_background: one flat mid-grey background behind every visible view (no gradient, no waves).
# The default draws each image's two background colours at random (0.05..0.95 a channel), independent of
# the person and of a NIR input's view, so a NIR → visible model cannot predict them and an L1 model is
# pulled toward the mean (issue 33). Not from a paper: an option for PCFH's face-world runs.
PLAIN_BACKGROUND = dict(background_top=np.full(3, 0.5, np.float32), background_bottom=np.full(3, 0.5, np.float32),
                        background_waves=np.float32(0))
# data.uniform_appearance: what a thermal camera cannot see, the same for every face. A long-wave infrared
# camera images emitted heat, not reflected light: skin emits at ε ≈ 0.98 whatever its pigment, so skin tone,
# hair, eye and lip colour, the colours of clothes and background and the visible illumination leave no trace in
# a thermal frame (the face world's thermal render reads none of them). With them drawn at random, predictors
# that read the 16² thermal input reach only 0.25-0.40 of the 64² visible targets' diversity (ridge regression,
# nearest-neighbour medians; 0.40-0.50 with the plain background alone; docs/vpgan.md), so no thermal → visible
# model can pass a collapse check. Paper 000 assumes the thermal face determines the visible one (its prior
# supplies "face geometry, color and texture", §3.1), and its ARL-VTF pairs vary "only in expressions" (§4).
# With this option the face's shape, pose and expression, which the thermal
# image shows, set the visible target. The values are mid-range draws of faceworld_params (skin tone 2 of 6,
# dark-brown hair, brown eyes; the light at the middle of view_parameters' ranges, frontal). Not from a paper:
# an option for VPGAN's and VPFL's face-world tables (issue 32).
UNIFORM_SKIN = np.array([0.80, 0.60, 0.46], np.float32)
UNIFORM_APPEARANCE = dict(
    PLAIN_BACKGROUND,
    skin_colour=UNIFORM_SKIN, hair_colour=np.array([0.16, 0.10, 0.06], np.float32),
    iris_colour=np.array([0.35, 0.22, 0.10], np.float32),
    lip_colour=UNIFORM_SKIN * np.array([0.85, 0.55, 0.55], np.float32) * np.float32(0.95),
    cloth_colour=np.array([0.35, 0.38, 0.45], np.float32),
    light_azimuth=np.float32(0), light_elevation=np.float32(25), light_strength=np.float32(0.72),
    ambient=np.float32(0.47), light_colour=np.ones(3, np.float32))
LOCAL_DEGRADATIONS = ("", "occlusion", "blur", "shade")
DEGRADED = "degraded"   # the example field of data.local_degradation's region (LocalDegradation.apply_with_region)


def gives_degraded_region(data_config) -> bool:
  """Whether batches of this data config carry DEGRADED: face-world examples with data.local_degradation on.
  In a batch it is float32 (input_size, input_size, 1), resized with "input" (pipeline.PrepareExample)."""
  return data_config.source == "faceworld" and bool(data_config.local_degradation)


class LocalDegradation:
  """data.local_degradation: `count` discs of radius `radius` × side at uniformly random places of the
  input image (same_view only; the target stays clean), inside which the input is
  "occlusion": replaced by one flat random colour; "blur": a box blur of width radius × side;
  "shade": darkened to 35% (the content survives, so a local network can undo it).
  Not in any paper: it gives IPFH's patch selection (paper 004) places that matter more than others.
  Drawn per example from (world_seed, split, index, 7), so an index is always degraded the same way."""

  def __init__(self, kind: str, count: int, radius: float):
    self.kind, self.count, self.radius = kind, count, radius

  @classmethod
  def of(cls, data_config, pairing: str):
    kind = data_config.local_degradation or ""
    if kind not in LOCAL_DEGRADATIONS:
      raise ValueError(f"config.data.local_degradation={kind!r}; expected one of {LOCAL_DEGRADATIONS}.")
    if not kind:
      return None
    if pairing != "same_view":
      raise ValueError(f"config.data.local_degradation degrades the input of the same_view pairing; the pairing "
                       f"is {pairing!r}.")
    count = int(data_config.local_degradation_count)
    radius = float(data_config.local_degradation_radius)
    if count < 1 or not 0 < radius <= 0.5:
      raise ValueError(f"config.data.local_degradation_count={count} must be ≥ 1 and local_degradation_radius="
                       f"{radius} in (0, 0.5] (a fraction of the image side).")
    return cls(kind, count, radius)

  def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.apply_with_region(image, rng)[0]

  def apply_with_region(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the degraded image, its region: float32 (S, S, 1) in [0, 1]).

    Each disc blends its degraded content in with weight `inside` (a one-pixel soft edge), so after all
    discs the share of a pixel that is still the clean image is Π(1 − inside_k); the region is one minus
    that, the union of the discs with the same soft edge. Computing it draws nothing from `rng`.
    """
    size = image.shape[0]
    x = image.astype(np.float32)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    radius = self.radius * size
    clean = np.ones((size, size, 1), np.float32)
    for _ in range(self.count):
      centre = rng.uniform(0, size, 2)
      distance = np.hypot(rows - centre[0], columns - centre[1])
      inside = np.clip(radius - distance + 0.5, 0.0, 1.0)[..., None]   # one-pixel soft edge
      if self.kind == "occlusion":
        degraded = np.broadcast_to(rng.uniform(0, 255, image.shape[-1]).astype(np.float32), x.shape)
      elif self.kind == "shade":
        degraded = 0.35 * x
      else:
        degraded = box_blur(x, max(1, int(round(radius))))
      x = inside * degraded + (1.0 - inside) * x
      clean = clean * (1.0 - inside)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), (1.0 - clean).astype(np.float32)


def box_blur(x: np.ndarray, width: int) -> np.ndarray:
  """(S, S, C) float image blurred by a (2·width + 1)² box, edges replicated."""
  for axis in (0, 1):
    padded = np.pad(x, [(width, width) if a == axis else (0, 0) for a in range(3)], mode="edge")
    cumulative = np.cumsum(padded, axis=axis, dtype=np.float64)
    cumulative = np.concatenate([np.zeros_like(np.take(cumulative, [0], axis=axis)), cumulative], axis=axis)
    n = x.shape[axis]
    x = ((np.take(cumulative, np.arange(2 * width + 1, 2 * width + 1 + n), axis=axis)
          - np.take(cumulative, np.arange(n), axis=axis)) / (2 * width + 1)).astype(np.float32)
  return x


def apply_thermal_sensor(image: np.ndarray, sensor: dict, rng: np.random.Generator) -> np.ndarray:
  """A site's camera applied to a rendered (S, S, 1) uint8 heat image (faceworld_params.THERMAL_SENSORS)."""
  if sensor == params_lib.THERMAL_SENSORS["reference"]:
    return image
  size = image.shape[0]
  x = image[..., 0].astype(np.float32) / 255.0
  x = 255.0 * sensor["gain"] * np.power(x, sensor["gamma"]) + sensor["offset"]
  if sensor["blur"] > 0:
    sigma = sensor["blur"] * size
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
      padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(2)], mode="edge")
      x = sum(taps[k] * np.take(padded, np.arange(k, k + size), axis=axis) for k in range(2 * radius + 1))
  factor = int(round(1.0 / sensor["resolution"]))
  if factor > 1:
    if size % factor:
      raise ValueError(f"A thermal sensor at resolution {sensor['resolution']} needs the render size ({size}) "
                       f"to be a multiple of {factor}.")
    blocks = x.reshape(size // factor, factor, size // factor, factor).mean(axis=(1, 3))
    x = np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)
  if sensor["noise"] > 0:
    x = x + rng.normal(0.0, sensor["noise"], x.shape).astype(np.float32)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)[..., None]


def _render_one(p: dict, size: int, modalities) -> dict[str, np.ndarray]:
  batch = {k: np.asarray(v, np.float32)[None] for k, v in _renderer_inputs(p).items()}
  return {k: np.asarray(v)[0] for k, v in render_batch(batch, size=size, modalities=modalities).items()}


def render_examples(world_seed: int, identities, views: list[dict], size: int,
                    modalities=("visible",)) -> dict[str, np.ndarray]:
  """Renders given identities with given view overrides (yaw, expression, ...).

  `views[k]` may hold any parameter (e.g. {"yaw": 30.0}, or "expression" as
  a name with "intensity"); the rest are drawn from seed (world_seed, 99, k).
  Used by the grid and the realism scripts.
  """
  batch = []
  for k, (identity, view) in enumerate(zip(identities, views)):
    rng = np.random.default_rng([world_seed, 99, k])
    p = face_parameters(world_seed, int(identity), rng)
    view = dict(view)
    if "expression" in view:
      expression = EXPRESSIONS.index(view.pop("expression"))
      p.update(params_lib.expression_parameters(expression, view.pop("intensity", 1.0)))
      p["expression_index"] = np.float32(expression)
    p.update({k2: np.asarray(v, np.float32) for k2, v in view.items()})
    batch.append(p)
  # One face per call: batch 1 is the program the sources compile too.
  rendered = [_render_one(p, size, tuple(modalities)) for p in batch]
  return {k: np.stack([r[k] for r in rendered]) for k in rendered[0]}
