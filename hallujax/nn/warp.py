"""2-D global inverse-distance-weighted (IDW) warping of images by landmarks, batched and jittable.

PCFH's Attention Warping Module (paper 001, §3.3, Eq. 6) warps the visible
image onto the near-infrared image's geometry "with a 2D global inverse
distance weighed warping [Ruprecht and Muller, 1995]. It fixes the points by
the correspondence of a set of control points and uses a bilinear
interpolation to generate warped images. The control points are selected as
68 facial landmarks".

The warp is backward (every output pixel looks up where to read):
``out[p] = image[f(p)]``, with f the global IDW (Shepard) interpolant of the
control-point displacements (Ruprecht & Müller 1995, §3, the "global"
variant: every control point influences every pixel)::

    f(p) = p + Σ_i w_i(p) (s_i − t_i) / Σ_i w_i(p),   w_i(p) = ‖p − t_i‖^(−μ)

t_i are the target landmarks (where the points must land: the NIR image's),
s_i the source landmarks (where they are in the image being warped: the VIS
image's). At a control point f(t_i) = s_i exactly (the limit of the weights;
computed exactly by selecting that point's displacement), so each source
landmark's pixel lands on its target. μ = 2 (Shepard's usual exponent; the
paper gives none). The local functions are constant displacements (Shepard's
original form); Ruprecht & Müller also allow locally fitted linear functions,
which the paper does not ask for. When both landmark sets are equal every
displacement is 0 and the warp is the identity.

Coordinates are (x, y) pixels with pixel centres at integers, as the face
world's landmarks. Sampling is bilinear with edge clamping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_POWER = 2.0


def idw_displacement(points: jax.Array, target_landmarks: jax.Array, source_landmarks: jax.Array,
                     power: float = DEFAULT_POWER) -> jax.Array:
  """Global IDW interpolation of the displacements s_i − t_i at `points`.

  points (P, 2); target_landmarks, source_landmarks (N, 2) -> (P, 2). A point
  that coincides with a control point t_i gets exactly s_i − t_i (the first
  such i if several coincide).
  """
  points = points.astype(jnp.float32)
  target_landmarks = target_landmarks.astype(jnp.float32)
  displacements = source_landmarks.astype(jnp.float32) - target_landmarks           # (N, 2)
  squared = jnp.sum(jnp.square(points[:, None, :] - target_landmarks[None, :, :]), axis=-1)  # (P, N)
  coincides = squared == 0.0
  # w = d^-μ = (d²)^(-μ/2); coinciding points are handled exactly below, so clamp their d² away from 0.
  weights = jnp.power(jnp.where(coincides, 1.0, squared), -0.5 * power)
  weights = jnp.where(coincides, 0.0, weights)
  blended = (weights @ displacements) / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-30)
  exact = displacements[jnp.argmax(coincides, axis=-1)]
  return jnp.where(jnp.any(coincides, axis=-1, keepdims=True), exact, blended)


def idw_sampling_grid(height: int, width: int, target_landmarks: jax.Array, source_landmarks: jax.Array,
                      power: float = DEFAULT_POWER) -> jax.Array:
  """(H, W, 2) source coordinates (x, y) that each output pixel reads: f(p) of the module docstring."""
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                        indexing="ij")
  pixels = jnp.stack([xs, ys], axis=-1).reshape(-1, 2)
  coordinates = pixels + idw_displacement(pixels, target_landmarks, source_landmarks, power)
  return coordinates.reshape(height, width, 2)


def bilinear_sample(image: jax.Array, coordinates: jax.Array) -> jax.Array:
  """image (H, W, C) read at coordinates (..., 2) as (x, y), bilinear, edges clamped -> (..., C)."""
  height, width = image.shape[:2]
  x = jnp.clip(coordinates[..., 0], 0.0, width - 1.0)
  y = jnp.clip(coordinates[..., 1], 0.0, height - 1.0)
  x0 = jnp.clip(jnp.floor(x), 0, width - 2 if width > 1 else 0).astype(jnp.int32)
  y0 = jnp.clip(jnp.floor(y), 0, height - 2 if height > 1 else 0).astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, width - 1), jnp.minimum(y0 + 1, height - 1)
  fx = (x - x0)[..., None].astype(image.dtype)
  fy = (y - y0)[..., None].astype(image.dtype)
  top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
  bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
  return (1 - fy) * top + fy * bottom


def idw_warp_one(image: jax.Array, source_landmarks: jax.Array, target_landmarks: jax.Array,
                 power: float = DEFAULT_POWER) -> jax.Array:
  """Warps one image (H, W, C) so that source_landmarks (N, 2) move onto target_landmarks (N, 2)."""
  grid = idw_sampling_grid(image.shape[0], image.shape[1], target_landmarks, source_landmarks, power)
  return bilinear_sample(image, grid)


@jax.jit
def idw_warp(images: jax.Array, source_landmarks: jax.Array, target_landmarks: jax.Array) -> jax.Array:
  """PCFH's W (Eq. 6), batched: images (B, H, W, C) whose landmarks are source_landmarks (B, N, 2),
  warped so that they sit on target_landmarks (B, N, 2) (the NIR image's) -> (B, H, W, C)."""
  if images.ndim != 4 or source_landmarks.shape != target_landmarks.shape or source_landmarks.ndim != 3:
    raise ValueError(f"idw_warp expects images (B, H, W, C) and two (B, N, 2) landmark sets; got "
                     f"{images.shape}, {source_landmarks.shape}, {target_landmarks.shape}.")
  return jax.vmap(idw_warp_one)(images, source_landmarks, target_landmarks)
