"""Do a method's outputs differ across inputs as the ground truths do? (collapse detection)

A generator that draws one face for every probe can still score a "within noise" identity cell, since
every row then matches the same gallery face. Two figures per image column make that visible:

* ``output_diversity``: the mean pairwise distance between outputs of different inputs, divided by the
  same mean over their ground-truth targets (1 = as varied as the targets, 0 = one image for every input);
* ``nearest_target_share``: the share of outputs whose nearest target (over the same examples) is the
  single most common nearest target (1/N when each output is nearest its own target, 1 when collapsed).

Distances are root-mean-square pixel differences in [0, 1] over the first `max_examples` examples
(the evaluation's order is fixed, so every row of a table is measured on the same examples).
"""

from __future__ import annotations

import numpy as np


def flattened(images: np.ndarray, count: int) -> np.ndarray:
  """uint8 or [0, 1] (N, H, W, C) images -> (count, H·W·C) float64 in [0, 1]."""
  array = np.asarray(images[:count])
  scale = 255.0 if array.dtype == np.uint8 else 1.0
  return array.reshape(array.shape[0], -1).astype(np.float64) / scale


def rms_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """(N, D) x (M, D) -> (N, M) root-mean-square differences, through |a|² + |b|² - 2 a·b."""
  squared = (np.sum(first ** 2, axis=1)[:, None] + np.sum(second ** 2, axis=1)[None, :]
             - 2.0 * first @ second.T)
  return np.sqrt(np.maximum(squared, 0.0) / first.shape[1])


def mean_pairwise_distance(images: np.ndarray) -> float:
  """Mean RMS distance over the pairs (i, j), i < j (centred first, so that identical images are exactly 0 apart)."""
  centred = images - np.mean(images, axis=0)
  distances = rms_distances(centred, centred)
  upper = np.triu_indices(len(images), k=1)
  return float(np.mean(distances[upper]))


def output_diversity(outputs: np.ndarray, targets: np.ndarray, max_examples: int = 256) -> dict[str, float]:
  """{"output_diversity", "nearest_target_share"} of `outputs` against their `targets` (same shapes, N ≥ 2)."""
  count = min(len(outputs), len(targets), max_examples)
  if count < 2:
    raise ValueError(f"output_diversity needs at least 2 examples, got {count}.")
  if np.shape(outputs)[1:] != np.shape(targets)[1:]:
    raise ValueError(f"output_diversity: outputs {np.shape(outputs)} and targets {np.shape(targets)} differ in shape.")
  output_vectors, target_vectors = flattened(outputs, count), flattened(targets, count)
  target_spread = mean_pairwise_distance(target_vectors)
  ratio = mean_pairwise_distance(output_vectors) / target_spread if target_spread > 0 else float("nan")
  centre = np.mean(target_vectors, axis=0)
  nearest = np.argmin(rms_distances(output_vectors - centre, target_vectors - centre), axis=1)
  share = float(np.max(np.bincount(nearest, minlength=count))) / count
  return {"output_diversity": float(ratio), "nearest_target_share": share}
