"""Image resampling on the accelerator (the host pipeline's is hallujax.data.degradations)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def upsample_bicubic(images: jax.Array, size: int) -> jax.Array:
  """(B, h, w, C) -> (B, size, size, C) with Keys' cubic kernel (a = -0.5, as MATLAB's imresize).

  The papers' "bicubic" baseline and interpolated inputs. Upsampling needs no
  antialiasing, so this equals MATLAB's imresize up to border handling.
  """
  batch, _, _, channels = images.shape
  return jax.image.resize(images.astype(jnp.float32), (batch, size, size, channels), "bicubic")


def upsample_bilinear(images: jax.Array, size: int) -> jax.Array:
  """(B, h, w, C) -> (B, size, size, C) with the triangle kernel (half-pixel centres, as imresize's bilinear)."""
  batch, _, _, channels = images.shape
  return jax.image.resize(images.astype(jnp.float32), (batch, size, size, channels), "bilinear")
