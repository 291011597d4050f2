"""NIQE, the "completely blind" image quality evaluator (Mittal et al. 2013), as paper 000 §4 reports it.

A numpy transcription of basicsr 1.4.2's ``basicsr/metrics/niqe.py`` (itself matching the official MATLAB
release to 4 decimals), with the same fitted pristine-image model: ``niqe_pris_params.npz`` ships next to
this file, copied unchanged from basicsr's PyPI package (Apache-2.0; NIQE_PARAMS_LICENSE.txt). Lower is
more natural.

NIQE fits a multivariate Gaussian to features of 96×96 blocks (the block size its pristine model was fitted
with) and needs at least two blocks for a covariance. The face world's images are 32²–112², so images
smaller than 192² are first enlarged to 192² with MATLAB's bicubic ``imresize`` (our choice, stated
in every report that shows NIQE: the same enlargement for every row and for the ground truth, which is the
reference a row's NIQE is read against).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import threadpoolctl
from scipy import ndimage, special

BLOCK_SIZE = 96
MINIMUM_SIDE = 2 * BLOCK_SIZE
PARAMS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "niqe_pris_params.npz")


@functools.cache
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, covariance, 7×7 Gaussian window) of the pristine model."""
  with np.load(PARAMS_PATH) as params:
    return params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"]


@functools.cache
def generalized_gaussian_ratios() -> tuple[np.ndarray, np.ndarray]:
  """The grid of shape parameters and ρ(γ) = Γ(2/γ)² / (Γ(1/γ) Γ(3/γ)) the moment-matching searches over."""
  shapes = np.arange(0.2, 10.001, 0.001)
  reciprocal = np.reciprocal(shapes)
  ratios = np.square(special.gamma(reciprocal * 2)) / (special.gamma(reciprocal) * special.gamma(reciprocal * 3))
  return shapes, ratios


def aggd_parameters(block: np.ndarray) -> tuple[float, float, float]:
  """(α, β_left, β_right) of an asymmetric generalized Gaussian fitted by moment matching (NIQE's Eq. 7)."""
  block = block.ravel()
  shapes, ratios = generalized_gaussian_ratios()
  left_std = np.sqrt(np.mean(block[block < 0] ** 2))
  right_std = np.sqrt(np.mean(block[block > 0] ** 2))
  gamma_hat = left_std / right_std
  r_hat = np.mean(np.abs(block)) ** 2 / np.mean(block ** 2)
  r_hat_normalized = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
  alpha = shapes[np.argmin((ratios - r_hat_normalized) ** 2)]
  scale = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  return alpha, left_std * scale, right_std * scale


def block_features(block: np.ndarray) -> list[float]:
  """The 18 features of one block: the MSCN coefficients' fit and, for 4 neighbour orientations, the fit of
  their pairwise products with its mean (Eq. 8)."""
  alpha, beta_left, beta_right = aggd_parameters(block)
  features = [alpha, (beta_left + beta_right) / 2]
  for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
    alpha, beta_left, beta_right = aggd_parameters(block * np.roll(block, shift, axis=(0, 1)))
    mean = (beta_right - beta_left) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    features += [alpha, mean, beta_left, beta_right]
  return features


def cubic(x: np.ndarray) -> np.ndarray:
  absolute = np.abs(x)
  return ((1.5 * absolute ** 3 - 2.5 * absolute ** 2 + 1) * (absolute <= 1)
          + (-0.5 * absolute ** 3 + 2.5 * absolute ** 2 - 4 * absolute + 2) * ((absolute > 1) & (absolute <= 2)))


def resize_matrix(in_length: int, out_length: int, scale: float) -> np.ndarray:
  """(out, in) weights of MATLAB's bicubic imresize along one axis, antialiased when shrinking, with its
  symmetric edge padding folded in (basicsr's ``calculate_weights_indices``)."""
  kernel_width = 4.0 / scale if scale < 1 else 4.0
  positions = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(positions - kernel_width / 2)
  taps = math.ceil(kernel_width) + 2
  indices = left[:, None] + np.arange(taps)[None, :]
  distances = positions[:, None] - indices
  weights = scale * cubic(distances * scale) if scale < 1 else cubic(distances)
  weights = weights / np.sum(weights, axis=1, keepdims=True)
  # 1-based indices; index 0 mirrors to 1, -1 to 2, ..., in_length + 1 to in_length (MATLAB's "symmetric").
  zero_based = indices.astype(int) - 1
  mirrored = np.where(zero_based < 0, -zero_based - 1, zero_based)
  mirrored = np.where(mirrored >= in_length, 2 * in_length - 1 - mirrored, mirrored)
  matrix = np.zeros((out_length, in_length))
  np.add.at(matrix, (np.repeat(np.arange(out_length), taps), mirrored.ravel()), weights.ravel())
  return matrix


def matlab_resize(image: np.ndarray, scale: float) -> np.ndarray:
  """MATLAB's ``imresize(image, scale)`` (bicubic, antialiased) of a 2-D image."""
  height, width = image.shape
  rows = resize_matrix(height, math.ceil(height * scale), scale)
  columns = resize_matrix(width, math.ceil(width * scale), scale)
  return rows @ image @ columns.T


def niqe_of_luma(luma: np.ndarray) -> float:
  """NIQE of a 2-D luma image in [0, 255] (basicsr's ``niqe``: 96×96 blocks, no overlap, two scales)."""
  mean_pristine, covariance_pristine, window = pristine_model()
  blocks_down, blocks_across = luma.shape[0] // BLOCK_SIZE, luma.shape[1] // BLOCK_SIZE
  if blocks_down * blocks_across < 2:
    raise ValueError(f"NIQE needs at least two {BLOCK_SIZE}² blocks; got a {luma.shape} image.")
  # float32 as basicsr computes (its image and its imresize output are float32); in float64 the astronaut's
  # NIQE moves by about 1% (3.065 -> 3.09), so the precision is part of the definition being matched.
  image = luma[:blocks_down * BLOCK_SIZE, :blocks_across * BLOCK_SIZE].astype(np.float32)
  per_scale = []
  for scale in (1, 2):
    mu = ndimage.convolve(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.convolve(np.square(image), window, mode="nearest") - np.square(mu)))
    normalized = (image - mu) / (sigma + 1)   # MSCN coefficients, Eq. 1
    size = BLOCK_SIZE // scale
    per_scale.append(np.array([block_features(normalized[down * size:(down + 1) * size,
                                                          across * size:(across + 1) * size])
                               for across in range(blocks_across) for down in range(blocks_down)]))
    if scale == 1:
      image = (matlab_resize(image / 255.0, 0.5).astype(np.float32) * 255.0).astype(np.float32)
  features = np.concatenate(per_scale, axis=1)
  mean_features = np.nanmean(features, axis=0)
  covariance = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
  difference = mean_pristine - mean_features
  inverse = np.linalg.pinv((covariance_pristine + covariance) / 2)
  return float(np.sqrt(np.squeeze(difference @ inverse @ difference.T)))


def luma_of(image: np.ndarray) -> np.ndarray:
  """uint8 RGB (H, W, 3) or grey (H, W, 1) -> ITU-R BT.601 Y in [0, 255], rounded (as basicsr's to_y_channel
  followed by its MATLAB-matching round)."""
  pixels = np.asarray(image, np.float64) / 255.0
  if pixels.shape[-1] == 3:
    luma = (pixels @ np.array([65.481, 128.553, 24.966]) + 16.0) / 255.0
  else:
    luma = pixels[..., 0]
  return np.round(luma * 255.0)


def niqe(image: np.ndarray) -> float:
  """NIQE of one uint8 (H, W, C) image; images smaller than 192² are enlarged to 192² first (module note)."""
  luma = luma_of(image)
  side = min(luma.shape)
  if side < MINIMUM_SIDE:
    luma = matlab_resize(luma / 255.0, MINIMUM_SIDE / side) * 255.0
  return niqe_of_luma(luma)


def mean_niqe(images: np.ndarray) -> float:
  """Mean NIQE over uint8 (N, H, W, C) images."""
  # Its matrices are small (≤ 512²): BLAS threads only contend (a 192² resize took 60 ms with them, 0.7 ms
  # without, on 2 busy cores).
  with threadpoolctl.threadpool_limits(limits=1):
    return float(np.mean([niqe(image) for image in images]))
