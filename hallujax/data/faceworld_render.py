"""The face world's renderer: analytic ray casting of ellipsoids in jax.numpy.

A face is a smooth union of ellipsoids (cranium, jaw, cheeks, brow ridge, nose,
muzzle, ears, hair, neck, shoulders) seen by an orthographic camera. For every
pixel and ellipsoid the front hit depth has a closed form (a quadratic along
the viewing ray), so rendering is a fixed number of fused elementwise
operations per pixel: no loops over pixels, no rasterizer, and it jits and
vmaps on CPU and accelerators alike. Overlapping ellipsoids are blended with
a soft maximum over depth (weights ``(z + 0.6)^16``), which rounds the creases
between parts the way soft tissue does; the normals of the parts (quadric
gradients) are blended with the same weights for shading.

Speed on CPU comes from keeping the whole shader one fused XLA loop: every
per-pixel value is an elementwise expression (parts unrolled in Python, no
reductions over a parts axis), and the image leaves as one packed int32 per
pixel (RGB and one infrared modality, 8 bits each; see _pack).

Anti-aliasing is analytic: every edge (ellipsoid silhouettes, eyes, brows,
lips, hairline) is a signed distance divided by the pixel size and passed
through a clipped ramp, so edges get fractional coverage at any resolution.

Eyes, brows, nostrils and lips are painted on the skin in head coordinates
(x, y of the surface point in the unrotated head frame), so they follow the
surface under any pose and foreshorten correctly; self-occlusion comes from
the depth blend. The 68 iBUG-300W landmarks are defined in the same head
coordinates, lifted onto the surface, rotated with the head and projected.

Conventions: the image shows x in [-EXTENT, EXTENT] and y in
[Y_CENTRE - EXTENT, Y_CENTRE + EXTENT] (y up); pixel centres sit at integer
pixel coordinates, (column, row) = (0, 0) is the centre of the top-left pixel.
Positive yaw turns the nose to the image right, positive pitch looks up,
positive roll turns the face counter-clockwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

EXTENT = 1.0        # half the image width in head units (the head is ~1.0 wide)
Y_CENTRE = -0.02
SKIN, HAIR, CLOTH = 0, 1, 2
MODALITIES = ("visible", "nir", "thermal")


def _rotation(yaw, pitch, roll):
  """Camera-from-head rotation for angles in degrees (pitch, then yaw, then roll)."""
  yaw, pitch, roll = (jnp.deg2rad(a) for a in (yaw, pitch, roll))
  cy, sy, cp, sp, cr, sr = (jnp.cos(yaw), jnp.sin(yaw), jnp.cos(pitch), jnp.sin(pitch),
                            jnp.cos(roll), jnp.sin(roll))
  one, zero = jnp.ones_like(cy), jnp.zeros_like(cy)
  rotate_yaw = jnp.array([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
  rotate_pitch = jnp.array([[one, zero, zero], [zero, cp, sp], [zero, -sp, cp]])
  rotate_roll = jnp.array([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])
  return rotate_roll @ rotate_yaw @ rotate_pitch


def _tilt(angle):
  """Rotation about the x axis by `angle` radians (a part leaning forward)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


# Each part: name, frame ("head" or "body"), material, albedo gain, temperature,
# in the face contour (jaw landmarks), on the skin (landmark lifting).
_PARTS = (
    ("cranium", "head", SKIN, 1.00, 0.70, True, True),
    ("jaw", "head", SKIN, 1.00, 0.72, True, True),
    ("cheek_right", "head", SKIN, 1.00, 0.66, True, True),
    ("cheek_left", "head", SKIN, 1.00, 0.66, True, True),
    ("brow_ridge", "head", SKIN, 1.00, 0.78, False, True),
    ("nose_bridge", "head", SKIN, 1.00, 0.62, False, True),
    ("nose_tip", "head", SKIN, 1.00, 0.45, False, True),
    ("ala_right", "head", SKIN, 0.97, 0.50, False, True),
    ("ala_left", "head", SKIN, 0.97, 0.50, False, True),
    ("muzzle", "head", SKIN, 1.00, 0.72, True, True),
    ("ear_right", "head", SKIN, 0.92, 0.50, False, False),
    ("ear_left", "head", SKIN, 0.92, 0.50, False, False),
    ("hair", "head", HAIR, 1.00, 0.38, False, False),
    ("hair_back", "head", HAIR, 0.90, 0.32, False, False),
    ("neck", "body", SKIN, 0.80, 0.80, False, False),
    ("shoulders", "body", CLOTH, 1.00, 0.45, False, False),
)
_HAIR_INDEX = 12


def _parts_geometry(p):
  """Centres, radii and forward tilts of the parts in the head or body frame."""
  hw, hh, jw, cl = p["head_width"], p["head_height"], p["jaw_width"], p["chin_length"]
  cheek = p["cheek_size"]
  tip_y = p["eye_y"] - p["nose_length"]
  nw = p["nose_width"]
  vol, length = p["hair_volume"], p["hair_length"]
  ear = p["ear_size"]
  jaw_drop = p["jaw_drop"]
  cheek_y = -0.14 + p["cheek_raise"]
  v = lambda *a: jnp.stack([jnp.asarray(x, jnp.float32) for x in a])
  parts = [
      (v(0, 0.06, -0.02), v(0.5 * hw, 0.66 * hh, 0.58), 0.0),
      (v(0, -0.30 - jaw_drop / 2, 0.05), v(0.40 * jw, 0.40 * cl + jaw_drop / 2, 0.46), 0.0),
      (v(-0.23, cheek_y, 0.2), v(0.18, 0.15, 0.19) * cheek, 0.0),
      (v(0.23, cheek_y, 0.2), v(0.18, 0.15, 0.19) * cheek, 0.0),
      (v(0, p["eye_y"] + 0.08, 0.34), v(0.34, 0.085, 0.22), 0.0),
      (v(0, (p["eye_y"] + tip_y) / 2 + 0.02, 0.45 + p["nose_projection"] / 2),
       v(0.05 * nw, 0.5 * p["nose_length"] + 0.03, 0.115), 0.3),
      (v(0, tip_y + 0.02, 0.575 + p["nose_projection"]), v(0.058 * nw, 0.058, 0.07), 0.0),
      (v(-0.055 * nw, tip_y - 0.005, 0.47), v(0.042 * nw, 0.04, 0.05), 0.0),
      (v(0.055 * nw, tip_y - 0.005, 0.47), v(0.042 * nw, 0.04, 0.05), 0.0),
      (v(0, p["mouth_y"] + 0.02 - jaw_drop / 3, 0.35), v(0.16, 0.13, 0.14), 0.0),
      (v(-0.47 * hw, p["eye_y"] - 0.1, -0.06), v(0.05, 0.13, 0.09) * ear, 0.0),
      (v(0.47 * hw, p["eye_y"] - 0.1, -0.06), v(0.05, 0.13, 0.09) * ear, 0.0),
      (v(0, 0.12 + 0.04 * vol, -0.07 - 0.03 * vol),
       v(0.55 * hw + 0.07 * vol, 0.70 * hh + 0.05 * vol, 0.65 + 0.06 * vol), 0.0),
      (v(0, -0.2 - 0.35 * length, -0.32), v(0.5 + 0.1 * vol, 0.35 + 0.45 * length, 0.25) * (0.3 + 0.7 * length), 0.0),
      (v(0, -0.8, -0.1), v(0.22, 0.45, 0.23), 0.0),
      (v(0, -1.55, -0.25), v(0.95, 0.62, 0.42), 0.0),
  ]
  return parts


_IN_HEAD_FRAME = np.array([part[1] == "head" for part in _PARTS])


def _scene(p, rotation_head, rotation_body):
  """Per-part quadric coefficients in camera space, as a dict of (E,) arrays."""
  geometry = _parts_geometry(p)
  centres = jnp.stack([g[0] for g in geometry])                       # (E, 3)
  radii = jnp.stack([g[1] for g in geometry])
  tilts = jnp.stack([jnp.asarray(g[2], jnp.float32) for g in geometry])
  cos, sin = jnp.cos(tilts), jnp.sin(tilts)
  zero, one = jnp.zeros_like(tilts), jnp.ones_like(tilts)
  tilt = jnp.stack([jnp.stack([one, zero, zero], -1), jnp.stack([zero, cos, sin], -1),
                    jnp.stack([zero, -sin, cos], -1)], -2)               # (E, 3, 3)
  frames = jnp.where(_IN_HEAD_FRAME[:, None, None], rotation_head, rotation_body)
  rotations = frames @ tilt
  quadric = jnp.einsum("eij,ej,ekj->eik", rotations, 1.0 / radii**2, rotations)  # (x-c)^T A (x-c) = 1
  c = jnp.einsum("eij,ej->ei", frames, centres)
  azz = quadric[:, 2, 2]
  ax, ay = quadric[:, 0, 2], quadric[:, 1, 2]
  # The projected outline is the Schur complement of the quadric (orthographic view along z).
  m00, m11 = quadric[:, 0, 0] - ax * ax / azz, quadric[:, 1, 1] - ay * ay / azz
  return dict(cx=c[:, 0], cy=c[:, 1], cz=c[:, 2],
              outline_radius=jnp.sqrt(2.0 / (m00 + m11)), typical_radius=jnp.mean(radii, axis=1),
              a00=quadric[:, 0, 0], a01=quadric[:, 0, 1], a02=ax, a11=quadric[:, 1, 1], a12=ay, a22=azz,
              m00=quadric[:, 0, 0] - ax * ax / azz, m01=quadric[:, 0, 1] - ax * ay / azz,
              m11=quadric[:, 1, 1] - ay * ay / azz, bx=ax / azz, by=ay / azz, inv_azz=1.0 / azz)


def _hair_allowed(p, x, y, z, rotation_head):
  """Where the hair shell may show: above the hairline, at the sides and back (0..1)."""
  u = rotation_head[0, 0] * x + rotation_head[1, 0] * y + rotation_head[2, 0] * z
  v = rotation_head[0, 1] * x + rotation_head[1, 1] * y + rotation_head[2, 1] * z
  w = rotation_head[0, 2] * x + rotation_head[1, 2] * y + rotation_head[2, 2] * z
  hairline = 0.38 + 0.12 * p["hair_line"] - 0.9 * u * u
  above = jnp.clip((v - hairline) * 20.0 + 0.5, 0.0, 1.0)
  sides = jnp.clip((0.08 - w) * 15.0 + 0.5, 0.0, 1.0) * jnp.clip((v + 0.1) * 15.0, 0.0, 1.0)
  return jnp.maximum(above, sides)


def _fast_sqrt(x):
  """sqrt(x) for x >= 0 from the bit-level inverse square root and two Newton steps.

  Relative error < 5e-6. Only cheap integer and float ops: XLA fuses them
  into the surrounding loop, whereas a true sqrt with several consumers is
  materialized as its own pass per part (measured ~2x slower overall on CPU).
  """
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  y = jax.lax.bitcast_convert_type(jnp.int32(0x5F3759DF) - (bits >> 1), jnp.float32)
  half = 0.5 * x
  y = y * (1.5 - half * y * y)
  y = y * (1.5 - half * y * y)
  return x * y


def _soft_max_weight(z):
  """(z + 0.6)^16: a soft maximum over depths, like exp(k z) with k ~ 16 / (z + 0.6),

  i.e. ~15 near the face (parts within ~0.07 head units blend), but four
  multiplications instead of an exp per part and pixel. Parts further back
  than z = -0.6 get no weight.
  """
  w = jnp.maximum(z + 0.6, 0.0)
  for _ in range(4):
    w = w * w
  return w


def _surface(p, scene, x, y, pixel, rotation_head, include=None, normals=False):
  """Soft-max union of the parts at points (x, y): depth, coverage and blended attributes.

  Written as a Python loop over parts of purely elementwise operations, so XLA
  fuses the whole union (and the shading that follows) into one loop over
  pixels: on CPU, every extra materialized stage costs a pass over memory and
  a kernel launch, which measured 4-10x slower than the single fused loop.
  `include` (tuple of bools per part) restricts the union to some parts.
  Returns dict with "z", "coverage", "skin", "hair", "gain", "temperature"
  (and the unit normal "nx", "ny", "nz" if `normals`), each shaped like x.
  """
  total = depth = skin = hair = gain = temperature = coverage = 0.0
  nx = ny = nz = 0.0
  for e, part in enumerate(_PARTS):
    if include is not None and not include[e]:
      continue
    s = {k: c[e] for k, c in scene.items()}
    dx = x - s["cx"]
    dy = y - s["cy"]
    g1 = s["m00"] * dx + s["m01"] * dy
    g2 = s["m01"] * dx + s["m11"] * dy
    inside = 1.0 - (dx * g1 + dy * g2)
    # Signed distance to the outline ~ inside * radius / 2 (exact for a circle at
    # its edge; within the aspect ratio for an ellipse): the edge ramp width.
    alpha = jnp.clip(0.5 + inside * (0.5 * s["outline_radius"] / pixel), 0.0, 1.0)
    dz = _fast_sqrt(jnp.maximum(inside, 0.0) * s["inv_azz"]) - (s["bx"] * dx + s["by"] * dy)
    z = s["cz"] + dz
    if e == _HAIR_INDEX:
      alpha = alpha * _hair_allowed(p, x, y, z, rotation_head)
    weight = alpha * _soft_max_weight(z)
    total = total + weight
    depth = depth + weight * z
    if part[2] == SKIN:
      skin = skin + weight
    elif part[2] == HAIR:
      hair = hair + weight
    gain = gain + weight * part[3]
    temperature = temperature + weight * part[4]
    coverage = jnp.maximum(coverage, alpha)
    if normals:   # gradient of the quadric, A (p - c), normalized per part
      gx = s["a00"] * dx + s["a01"] * dy + s["a02"] * dz
      gy = s["a01"] * dx + s["a11"] * dy + s["a12"] * dz
      gz = s["a02"] * dx + s["a12"] * dy + s["a22"] * dz
      scale = weight * s["typical_radius"]     # |A (p - c)| ~ 1 / radius on the surface
      nx, ny, nz = nx + scale * gx, ny + scale * gy, nz + scale * gz
  norm = 1.0 / (total + 1e-30)
  out = dict(z=depth * norm, coverage=coverage, skin=skin * norm, hair=hair * norm,
             gain=gain * norm, temperature=temperature * norm)
  if normals:
    nz = jnp.maximum(nz, 0.0)
    # The identity max(n, -1e30) gives each summed component one cheap user. A
    # sum with two users (n * n and n * inverse_length) is not fused into the
    # shader loop: XLA:CPU gives it a loop of its own, which recomputes the
    # whole 16-part union once per component: 1.7x the CPU time per face
    # (measured 1.52 vs 0.91 ms at 128²).
    nx, ny = jnp.maximum(nx, -1e30), jnp.maximum(ny, -1e30)
    inverse_length = jax.lax.rsqrt(nx * nx + ny * ny + nz * nz + 1e-30)
    out.update(nx=nx * inverse_length, ny=ny * inverse_length, nz=nz * inverse_length)
  return out


def _ramp(distance, pixel):
  """Anti-aliased inside indicator from a signed distance (positive inside)."""
  return jnp.clip(0.5 + distance / pixel, 0.0, 1.0)


def _mix(a, b, t):
  """Grey-level blend of a and b by t (all broadcastable)."""
  return a + (b - a) * t


# ----- facial features in head coordinates (u, v) ---------------------------------


def _eye_frame(p, u):
  """Local eye coordinates: s outwards from the eye centre, and the lid heights at s."""
  s = jnp.abs(u) - p["eye_x"]
  upper, lower = _lid_heights(p, s)
  return s, upper, lower


def _lid_heights(p, s):
  """Heights of the upper and lower lid above the eye line at s (s = 0: eye centre)."""
  w = p["eye_width"]
  r = jnp.clip(s / w, -1.0, 1.0)
  height = p["eye_height"] * p["eye_open"]
  return (height * (1.0 - r * r) * (1.0 - 0.18 * r),
          -0.55 * p["eye_height"] * jnp.minimum(p["eye_open"], 1.25) * (1.0 - r * r))


def _brow_centre_line(p, r):
  """Height of the brow's centre line at r in [-1 (inner), 1 (outer)]."""
  return (p["eye_y"] + p["brow_gap"] + p["brow_raise"] + p["brow_arch"] * (1.0 - r * r)
          + p["brow_inner"] * (1.0 - r) * 0.5)


def _brow_centre_x(p):
  return p["eye_x"] - 0.01


def _bump(x):
  """A smooth bump, 1 at x = 0 falling to 0 at |x| = 1 (a cheap Gaussian stand-in)."""
  b = jnp.maximum(1.0 - x * x, 0.0)
  return b * b


def _mouth_frame(p, u):
  """Mouth centre line, opening and lip extents at u."""
  mw = p["mouth_width"] * p["mouth_width_scale"]
  r = u / mw
  f = _fast_sqrt(jnp.maximum(1.0 - r * r, 0.0))
  centre = p["mouth_y"] - p["jaw_drop"] * 0.6 + p["mouth_corner"] * r * r
  opening = p["mouth_open"] * f + 0.0015
  # Cupid's bow: peaks either side of the philtrum, a dip at the centre.
  bow = 1.0 + 0.35 * _bump((jnp.abs(r) - 0.3) / 0.3) - 0.25 * _bump(r / 0.17)
  root = _fast_sqrt(f)
  upper_top = opening + (p["upper_lip"] + p["upper_lip_raise"]) * root * bow
  lower_bottom = opening + p["lower_lip"] * root * (0.5 + 0.5 * f)
  return centre, opening, upper_top, lower_bottom, mw


def _nose_base_y(p):
  return p["eye_y"] - p["nose_length"] - 0.05


def _features(p, u, v, pixel):
  """Albedo changes painted on the skin at head coordinates (u, v).

  Returns masks (0..1) and colours used by all three modalities.
  """
  out = {}
  # Eyes (mirrored: s > 0 outwards for both eyes).
  s, upper, lower = _eye_frame(p, u)
  t = v - p["eye_y"] - p["eye_tilt"] * s
  w = p["eye_width"]
  opening = jnp.minimum(jnp.minimum(upper - t, t - lower), w - jnp.abs(s))
  out["eye"] = _ramp(opening, pixel)
  side = jnp.sign(u)
  iris_s = p["gaze_x"] * 0.35 * w * side
  iris_t = p["gaze_y"] * 0.3 * p["eye_height"]
  iris_distance = _fast_sqrt((s - iris_s) ** 2 + (t - iris_t) ** 2)
  radius = p["iris_radius"]
  out["iris"] = _ramp(radius - iris_distance, pixel)
  out["limbus"] = jnp.clip((iris_distance - 0.75 * radius) / (0.25 * radius), 0.0, 1.0)
  out["pupil"] = _ramp(0.42 * radius - iris_distance, pixel)
  glint = _fast_sqrt((s - iris_s + 0.35 * radius * side) ** 2 + (t - iris_t - 0.35 * radius) ** 2)
  out["glint"] = _ramp(0.2 * radius - glint, pixel)
  out["lid_shadow"] = jnp.clip(1.0 - (upper - t) / (0.5 * p["eye_height"] + 1e-6), 0.0, 1.0)
  along = _ramp(w * 1.08 - jnp.abs(s), pixel)
  lash_thickness = 0.005 + 0.005 * jnp.clip(s / w + 1.0, 0.0, 2.0)
  out["lash"] = _ramp(lash_thickness - jnp.abs(t - upper - 0.5 * lash_thickness), pixel) * along
  out["lower_lid"] = _ramp(0.003 - jnp.abs(t - lower + 0.003), pixel) * along
  crease = upper + 0.028 + 0.2 * p["eye_height"]
  out["crease"] = _ramp(0.004 - jnp.abs(t - crease), pixel) * along
  socket = (s / (1.7 * w)) ** 2 + ((t - 0.01) / (2.8 * p["eye_height"] + 0.03)) ** 2
  out["socket"] = jnp.clip(1.0 - socket, 0.0, 1.0)
  out["canthus"] = _bump(_fast_sqrt((s + w) ** 2 + t ** 2) / 0.06)
  # Brows.
  r = (jnp.abs(u) - _brow_centre_x(p)) / p["brow_length"]
  centre_line = _brow_centre_line(p, jnp.clip(r, -1.0, 1.0))
  thickness = p["brow_thickness"] * (1.0 - 0.45 * jnp.clip(r, 0.0, 1.0))
  brow = jnp.minimum(0.5 * thickness - jnp.abs(v - centre_line), (1.0 - jnp.abs(r)) * p["brow_length"] * 0.5)
  out["brow"] = _ramp(brow, pixel) * p["brow_darkness"]
  # Nostrils and the shadow under the nose.
  base = _nose_base_y(p)
  nostril = ((jnp.abs(u) - 0.04 * p["nose_width"]) / (0.022 * p["nose_width"])) ** 2 + ((v - base - 0.014) / 0.011) ** 2
  out["nostril"] = jnp.clip((1.0 - nostril) * 2.0, 0.0, 1.0)
  # Lips and mouth.
  centre, opening, upper_top, lower_bottom, mw = _mouth_frame(p, u)
  tm = v - centre
  across = mw - jnp.abs(u)
  out["mouth"] = _ramp(jnp.minimum(opening - jnp.abs(tm), across), pixel)
  lips = jnp.minimum(jnp.minimum(upper_top - tm, tm + lower_bottom), across)
  out["lips"] = _ramp(lips, pixel)
  out["teeth"] = _ramp(jnp.minimum(opening - jnp.abs(tm), jnp.minimum(tm - opening + 0.6 * opening + 0.012, across - 0.02)), pixel) \
      * (p["mouth_open"] > 0.005)
  out["under_lip"] = jnp.clip(1.0 - jnp.abs(tm + lower_bottom + 0.018) / 0.018, 0.0, 1.0) * _ramp(across, 0.03)
  return out


# iBUG-300W points 17..67 as (side, position, kind) tables, evaluated at once.
# Brows 17-21 (image-left brow, outer to inner) and 22-26 (inner to outer):
# position r in [-1 inner, 1 outer].
_BROW_SIDE = np.array([-1.0] * 5 + [1.0] * 5, np.float32)
_BROW_R = np.array([1.0, 0.5, 0.0, -0.5, -1.0, -1.0, -0.5, 0.0, 0.5, 1.0], np.float32) * 0.95
# Eyes 36-41 (image-left eye: outer corner, upper lid x2, inner corner, lower lid x2)
# and 42-47 (inner corner, upper x2, outer corner, lower x2): s in eye widths, outwards;
# kind 0 corner, 1 upper lid, 2 lower lid.
_EYE_SIDE = np.array([-1.0] * 6 + [1.0] * 6, np.float32)
_EYE_S = np.array([1, 1 / 3, -1 / 3, -1, -1 / 3, 1 / 3, -1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3], np.float32)
_EYE_KIND = np.array([0, 1, 1, 0, 2, 2, 0, 1, 1, 0, 2, 2])
# Nose base 31-35 (image left to right): u in nose widths, v offset from the base line.
_NOSE_U = np.array([-0.062, -0.032, 0.0, 0.032, 0.062], np.float32)
_NOSE_DV = np.array([0.012, -0.002, -0.005, -0.002, 0.012], np.float32)
# Mouth 48-59 (outer: left corner, upper lip top to the right corner, lower lip
# bottom back) and 60-67 (inner: corner, upper inner edge, corner, lower inner edge):
# u in mouth half-widths; kind 0 corner, 1 upper top, 2 lower bottom,
# 3 upper inner edge, 4 lower inner edge.
_MOUTH_R = np.array([-1, -0.6, -0.28, 0, 0.28, 0.6, 1, 0.6, 0.3, 0, -0.3, -0.6,
                     -0.92, -0.4, 0, 0.4, 0.92, 0.4, 0, -0.4], np.float32)
_MOUTH_KIND = np.array([0, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 0, 3, 3, 3, 0, 4, 4, 4])


def _landmarks_head(p):
  """iBUG-300W landmarks 17..67 in head coordinates (u, v), shape (51, 2)."""
  brow_u = _BROW_SIDE * (_brow_centre_x(p) + _BROW_R * p["brow_length"])
  brow_v = _brow_centre_line(p, _BROW_R) + 0.25 * p["brow_thickness"]
  tip = p["eye_y"] - p["nose_length"]
  bridge_v = p["eye_y"] + (tip - p["eye_y"]) * jnp.arange(4, dtype=jnp.float32) / 3.0
  nose_u = _NOSE_U * p["nose_width"]
  nose_v = _nose_base_y(p) + _NOSE_DV
  s = _EYE_S * p["eye_width"]
  upper, lower = _lid_heights(p, s)
  eye_t = jnp.select([_EYE_KIND == 1, _EYE_KIND == 2], [upper, lower], 0.0)
  eye_u = _EYE_SIDE * (p["eye_x"] + s)
  eye_v = p["eye_y"] + p["eye_tilt"] * s + eye_t
  mw = p["mouth_width"] * p["mouth_width_scale"]
  centre, opening, upper_top, lower_bottom, _ = _mouth_frame(p, _MOUTH_R * mw)
  mouth_t = jnp.select([_MOUTH_KIND == 1, _MOUTH_KIND == 2, _MOUTH_KIND == 3, _MOUTH_KIND == 4],
                       [upper_top, -lower_bottom, opening, -opening], 0.0)
  u = jnp.concatenate([brow_u, jnp.zeros(4), nose_u, eye_u, _MOUTH_R * mw])
  v = jnp.concatenate([brow_v, bridge_v, nose_v, eye_v, centre + mouth_t])
  return jnp.stack([u, v], -1)


def _jaw_head(p, scene_frontal):
  """17 jaw-line points: the frontal face contour, found by bisection along rays."""
  angles = np.pi + np.pi * np.arange(17) / 16.0
  directions = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1), jnp.float32)
  origin = jnp.stack([jnp.float32(0.0), p["eye_y"] - 0.03])
  include = tuple(part[5] for part in _PARTS)

  def inside(radius):
    q = origin + directions * radius[:, None]
    hit = -1.0
    for e, part in enumerate(_PARTS):
      if not include[e]:
        continue
      dx = q[:, 0] - scene_frontal["cx"][e]
      dy = q[:, 1] - scene_frontal["cy"][e]
      g1 = scene_frontal["m00"][e] * dx + scene_frontal["m01"][e] * dy
      g2 = scene_frontal["m01"][e] * dx + scene_frontal["m11"][e] * dy
      hit = jnp.maximum(hit, 1.0 - (dx * g1 + dy * g2))
    return hit > 0

  def bisect(_, bounds):
    low, high = bounds
    middle = (low + high) / 2
    is_inside = inside(middle)
    return jnp.where(is_inside, middle, low), jnp.where(is_inside, high, middle)

  # A loop, not unrolled: XLA would otherwise duplicate the chain of steps.
  low, _ = jax.lax.fori_loop(0, 14, bisect, (jnp.zeros(17), jnp.full((17,), 1.2)))
  return origin + directions * (low * 0.985)[:, None], include


def _landmarks(p, scene, rotation_head, size):
  """Landmarks (68, 2) in pixel coordinates and their visibility (68,).

  A point is visible when no surface lies in front of it (within 0.025 head units).
  """
  identity = jnp.eye(3, dtype=jnp.float32)
  frontal = _scene(p, identity, identity)
  jaw, contour_parts = _jaw_head(p, frontal)
  face = _landmarks_head(p)
  skin_parts = tuple(part[6] for part in _PARTS)
  jaw_z = _surface(p, frontal, jaw[:, 0], jaw[:, 1], 1e-3, identity, include=contour_parts)["z"]
  face_z = _surface(p, frontal, face[:, 0], face[:, 1], 1e-3, identity, include=skin_parts)["z"]
  head_points = jnp.concatenate([jnp.concatenate([jaw, jaw_z[:, None]], 1),
                                 jnp.concatenate([face, face_z[:, None]], 1)], 0)
  camera = head_points @ rotation_head.T
  seen = _surface(p, scene, camera[:, 0], camera[:, 1], 1e-3, rotation_head)
  visible = (camera[:, 2] >= seen["z"] - 0.025) & (seen["coverage"] > 0.5)
  column = (camera[:, 0] + EXTENT) / (2 * EXTENT) * size - 0.5
  row = (Y_CENTRE + EXTENT - camera[:, 1]) / (2 * EXTENT) * size - 0.5
  return jnp.stack([column, row], -1), visible


def _gaussian_blur(image, sigma_pixels):
  """Separable Gaussian blur of an (H, W) image with edge padding."""
  radius = max(1, int(np.ceil(3 * sigma_pixels)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_pixels) ** 2)
  taps = taps / taps.sum()
  for axis in (0, 1):
    padded = jnp.pad(image, [(radius, radius) if a == axis else (0, 0) for a in range(2)], mode="edge")
    n = image.shape[axis]
    image = sum(float(taps[k]) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis) for k in range(2 * radius + 1))
  return image


def render_face(p, size: int, modalities: tuple[str, ...] = ("visible",)):
  """Renders one face (p: dict of float32 scalars / RGB triples) at size².

  Returns a dict with "packed": the requested modalities' 8-bit channels
  (visible R, G, B, then NIR, then thermal not yet blurred; see _pack and
  _channel_layout) as a tuple of int32 (size, size) words, four channels each,
  "landmarks" (68, 2) float32 pixel coordinates and "visibility" (68,) bool.
  """
  rotation_head = _rotation(p["yaw"], p["pitch"], p["roll"])
  rotation_body = _rotation(0.25 * p["yaw"], 0.0, 0.3 * p["roll"])
  scene = _scene(p, rotation_head, rotation_body)
  pixel = 2 * EXTENT / size
  coordinates = -EXTENT + (jnp.arange(size, dtype=jnp.float32) + 0.5) * pixel
  x = coordinates[None, :]
  y = (Y_CENTRE - coordinates)[:, None]
  x, y = jnp.broadcast_to(x, (size, size)), jnp.broadcast_to(y, (size, size))
  surface = _surface(p, scene, x, y, pixel, rotation_head, normals=True)
  z, nx, ny, nz = surface["z"], surface["nx"], surface["ny"], surface["nz"]
  # Head coordinates of the surface point, for painted features.
  u = rotation_head[0, 0] * x + rotation_head[1, 0] * y + rotation_head[2, 0] * z
  v = rotation_head[0, 1] * x + rotation_head[1, 1] * y + rotation_head[2, 1] * z
  w = rotation_head[0, 2] * x + rotation_head[1, 2] * y + rotation_head[2, 2] * z
  front = jnp.clip((w - 0.15) * 10.0, 0.0, 1.0) * surface["skin"]
  features = {k: m * front for k, m in _features(p, u, v, pixel).items()}
  coverage = surface["coverage"]
  hair = surface["hair"]
  cloth = jnp.clip(1.0 - surface["skin"] - hair, 0.0, 1.0)
  planes = []   # [0, 1] channels in _channel_layout order

  if "visible" in modalities:
    azimuth, elevation = jnp.deg2rad(p["light_azimuth"]), jnp.deg2rad(p["light_elevation"])
    light = jnp.stack([jnp.sin(azimuth) * jnp.cos(elevation), jnp.sin(elevation),
                       jnp.cos(azimuth) * jnp.cos(elevation)])
    lambert = nx * light[0] + ny * light[1] + nz * light[2]
    diffuse = jnp.clip((lambert + 0.25) / 1.25, 0.0, 1.0)
    half = light + jnp.array([0.0, 0.0, 1.0])
    half = half / jnp.linalg.norm(half)
    specular = jnp.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
    specular = specular * specular
    specular = specular * specular
    specular = specular * specular
    specular = specular * specular                                  # (n·h)^16
    occlusion = 1.0 - 0.16 * features["socket"] - 0.25 * features["under_lip"] * 0.5
    shade = (p["ambient"] * (0.6 + 0.4 * nz) + p["light_strength"] * diffuse) * occlusion
    hair_streaks = 0.88 + 0.12 * jnp.sin(28.0 * u / (1.7 - v) + 9.0 * v * (1.0 - 0.5 * v * v))
    shine = (0.10 * surface["skin"] + 0.12 * hair) * specular * p["light_strength"]
    gradient = jnp.clip(0.5 + 0.5 * (jnp.sin(p["background_angle"]) * x + jnp.cos(p["background_angle"]) * y), 0.0, 1.0)
    waves = p["background_waves"] * (1.0 - 2.0 * _bump(0.6 * x + 0.4 * y + 0.3 * x * y))
    channels = []
    for c in range(3):   # one (size, size) expression per channel: the three share one fused loop
      skin = p["skin_colour"][c]
      albedo = skin + 0.0 * x
      albedo = _mix(albedo, skin * 0.8, features["crease"] * 0.4)
      albedo = _mix(albedo, p["hair_colour"][c] * 0.7 + 0.02, features["brow"])
      albedo = _mix(albedo, p["lip_colour"][c], features["lips"])
      albedo = _mix(albedo, (0.22, 0.06, 0.06)[c], features["mouth"])
      albedo = _mix(albedo, (0.86, 0.83, 0.76)[c], features["teeth"])
      albedo = _mix(albedo, skin * 0.25, features["nostril"])
      sclera = (0.88, 0.85, 0.82)[c] * (1.0 - 0.35 * features["lid_shadow"])
      eye = _mix(sclera, p["iris_colour"][c] * (1.0 - 0.55 * features["limbus"]), features["iris"])
      eye = _mix(eye, 0.02, features["pupil"])
      albedo = _mix(albedo, eye, features["eye"])
      albedo = _mix(albedo, (0.04, 0.03, 0.03)[c], features["lash"])
      albedo = _mix(albedo, skin * 0.55, features["lower_lid"] * 0.6)
      albedo = _mix(albedo, p["hair_colour"][c] * hair_streaks, hair)
      albedo = _mix(albedo, p["cloth_colour"][c], cloth)
      colour = albedo * surface["gain"] * shade * p["light_colour"][c] + shine
      colour = colour + 0.9 * features["glint"] * features["eye"]
      background = _mix(p["background_bottom"][c], p["background_top"][c], gradient) + waves
      channels.append(_mix(background, colour, coverage))
    planes.extend(channels)

  if "nir" in modalities:
    # Active near-infrared: a light next to the camera; melanin hardly matters,
    # so skin is bright whatever the tone, dark hair and irises look lighter,
    # lips barely differ from skin.
    reflectance = jnp.full((size, size), 1.0) * p["nir_skin"]
    reflectance = _mix(reflectance, p["nir_hair"] + 0.1, features["brow"])
    reflectance = _mix(reflectance, p["nir_skin"] * 0.92, features["lips"])
    reflectance = _mix(reflectance, 0.12, features["mouth"])
    reflectance = _mix(reflectance, 0.75, features["teeth"])
    reflectance = _mix(reflectance, 0.15, features["nostril"])
    eye_nir = _mix(0.72 * (1.0 - 0.3 * features["lid_shadow"]), 0.42 * (1.0 - 0.3 * features["limbus"]), features["iris"])
    eye_nir = _mix(eye_nir, 0.03, features["pupil"])
    reflectance = _mix(reflectance, eye_nir, features["eye"])
    reflectance = _mix(reflectance, 0.12, features["lash"])
    reflectance = _mix(reflectance, p["nir_hair"], hair)
    reflectance = _mix(reflectance, p["nir_cloth"], cloth)
    nir = reflectance * (0.18 + 0.82 * nz) * (1.0 - 0.12 * features["socket"]) + 0.08 * _specular_nir(nz)
    nir = nir + 0.8 * features["glint"] * features["eye"]
    background_nir = p["nir_background"] * (1.0 - 0.3 * (x * x + y * y))
    planes.append(_mix(background_nir, nir, coverage))

  if "thermal" in modalities:
    # Long-wave infrared: emitted heat. Warm periorbital (inner canthi) and
    # forehead, cool nose tip, ears, hair and background; the limb of the face
    # cools (view angle), and the sensor blurs.
    scale = p["face_temperature"] / 0.7
    heat = surface["temperature"] * scale
    forehead = jnp.clip((v - (p["eye_y"] + p["brow_gap"] + 0.03)) * 8.0, 0.0, 1.0) * front
    heat = heat + 0.06 * forehead
    heat = heat + 0.22 * features["canthus"] + 0.05 * features["eye"]
    heat = heat + 0.18 * features["mouth"] + 0.05 * features["lips"]
    heat = heat * (0.78 + 0.22 * nz)
    heat = heat * p["thermal_gain"]
    background_heat = p["thermal_background"] + 0.05 * jnp.clip(-y, 0.0, 1.0)
    planes.append(_mix(background_heat, heat, coverage))

  out = {"packed": tuple(_pack(planes[k:k + 4]) for k in range(0, len(planes), 4))}
  out["landmarks"], out["visibility"] = _landmarks(p, scene, rotation_head, size)
  return out


def _specular_nir(nz):
  """A soft frontal highlight for the camera-mounted NIR light."""
  s = nz * nz
  s = s * s
  return s * s * s * s


def _channel_layout(modalities: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
  """(modality, channels) in packing order: visible RGB, then NIR, then thermal."""
  return tuple((m, 3 if m == "visible" else 1) for m in MODALITIES if m in modalities)


def _pack(channels):
  """Packs up to four [0, 1] channels into one int32 per pixel, channel k in bits 8k..8k+7.

  One output array keeps the whole shader in a single fused loop: XLA:CPU
  gives every further output (an (H, W, 3) image, or a second modality) a loop
  of its own that recomputes the 16-part union. Visible + NIR or visible +
  thermal fit one word; all three modalities take two.
  """
  word = 0
  for k, channel in enumerate(channels):
    quantized = jnp.round(jnp.clip(channel, 0.0, 1.0) * 255.0).astype(jnp.int32)
    word = word + (quantized << (8 * k))   # k = 3 wraps into the sign bit; _unpack masks it back
  return word


def _unpack(words, count: int) -> list:
  """The `count` uint8 channels of _pack's words.

  A bitcast to bytes (channel k is byte k: little-endian, as on every jax
  platform), not shifts and masks: when render_batch is inlined into a larger
  jit, shifts let XLA fuse the shader into the unpacking, evaluated once per
  channel and unvectorized (14× slower than a direct call on CPU; with the
  bitcast, 2.3×).
  """
  channels = [jax.lax.bitcast_convert_type(word, jnp.uint8) for word in words]   # (..., 4) bytes, low first
  return [channels[k // 4][..., k % 4] for k in range(count)]


@functools.partial(jax.jit, static_argnames=("size", "modalities"))
def _render_raw(params, size: int, modalities: tuple[str, ...]):
  return jax.vmap(lambda q: render_face(q, size, modalities))(params)


@functools.partial(jax.jit, static_argnames=("size", "modalities"))
def _finish(raw, size: int, modalities: tuple[str, ...]):
  """Unpacks uint8 images, blurs thermal (a second program, on purpose: see _pack).

  Thermal is blurred after 8-bit quantization, then quantized again (within
  one grey level of blurring the float image).
  """
  layout = _channel_layout(modalities)
  channels = _unpack(raw["packed"], sum(count for _, count in layout))
  out = {"landmarks": raw["landmarks"], "visibility": raw["visibility"]}
  first = 0
  for modality, count in layout:
    image = jnp.stack(channels[first:first + count], axis=-1)
    first += count
    if modality == "thermal":
      sigma = max(0.6, 0.012 * size)
      blurred = jax.vmap(lambda t: _gaussian_blur(t, sigma))(image[..., 0].astype(jnp.float32))
      image = jnp.round(jnp.clip(blurred, 0.0, 255.0)).astype(jnp.uint8)[..., None]
    out[modality] = image
  return out


def render_batch(params, size: int, modalities: tuple[str, ...] = ("visible",)):
  """Renders a batch of faces (each leaf of `params` has a leading batch axis).

  Returns uint8 images (B, size, size, 3) for "visible" and (B, size, size, 1)
  for "nir" / "thermal", "landmarks" float32 (B, 68, 2) in pixel coordinates
  and "visibility" bool (B, 68). Two jitted programs (the shader, then
  unpacking and the thermal blur); both run wherever jax runs, so parameters
  placed on an accelerator render there.
  """
  modalities = tuple(m for m in MODALITIES if m in modalities)
  return _finish(_render_raw(params, size=size, modalities=modalities), size=size, modalities=modalities)
