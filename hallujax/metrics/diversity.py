"""Do a method's outputs differ across inputs as the ground truths do? (collapse detection)

A generator that draws one face for every probe can still score a "within noise" identity cell, since
every row then matches the same gallery face. Two figures per image column make that visible:

* ``output_diversity``: the mean pairwise distance between outputs of different inputs, divided by the
  same mean over their ground-truth targets (1 = as varied as the targets, 0 = one image for every input);
* ``nearest_target_share``: the share of outputs whose nearest target (over the same examples) is the
  single most common nearest target (1/N when each output is nearest its own target, 1 when collapsed).

Distances are root-mean-square pixel differences in [0, 1] over the first `max_examples` examples
(the evaluation's order is fixed, so every row of a table is measured on the same examples).

Neither figure tells an output that reads its input from noise: noise with the targets' per-pixel statistics
is as varied as the targets (diversity ≈ 1). A third figure asks whether each output's variation is its own
input's:

* ``own_target_share``: the share of outputs whose best-matching target (over the same N examples) is their
  own. Chance is 1/N (1/256 at evaluate's 256 examples): noise matches its own target as often as any other
  (about 1/N), one face for every input matches none (0), and an output that reads its input is well above.

It matches by the cosine between an output's deviation from the outputs' mean and a target's deviation from
the targets' mean (the correlation of what varies across inputs), not by RMS distance, for two measured
reasons (docs/results.md): the nearest target by RMS distance is the one
nearest the mean face for any output pulled toward the mean, so the L1-best predictor of an uncertain target
(the conditional mean: blurred, shrunk toward the mean face) scored 0.01 by RMS and 1.00 by correlation; and
an offset shared by every output (a cross-spectral input's other brightness, a colour cast) moves every
output toward the same target by RMS but cancels in its own mean. The two shares centre differently on
purpose: ``nearest_target_share`` asks where the outputs sit among the targets (a collapsed face sits at one
target, which centring by the outputs' own mean would hide); ``own_target_share`` asks whether what varies
across the outputs follows their inputs. RMS distances do not depend on any centring (it only keeps the
|a|² + |b|² − 2 a·b form accurate), so the first two figures are those computed before.
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


def own_target_matches(output_vectors: np.ndarray, target_vectors: np.ndarray) -> np.ndarray:
  """(N, D) outputs and their (N, D) targets -> (N,) bool: is output i's best-matching target its own?

  Best match: the largest cosine between the output's deviation from the outputs' mean and a target's
  deviation from the targets' mean. An output with no deviation (every output the same) matches no target.
  """
  output_deviations = output_vectors - np.mean(output_vectors, axis=0)
  target_deviations = target_vectors - np.mean(target_vectors, axis=0)
  output_norms = np.linalg.norm(output_deviations, axis=1)
  target_norms = np.maximum(np.linalg.norm(target_deviations, axis=1), 1e-12)
  # Cosine up to the positive factor 1/|output deviation|, which does not change a row's best match.
  similarity = (output_deviations @ target_deviations.T) / target_norms[None, :]
  matches = np.argmax(similarity, axis=1) == np.arange(len(output_vectors))
  # Relative to the outputs' scale: float64 round-off leaves ~1e-16 of "deviation" in identical outputs.
  return matches & (output_norms > 1e-9 * max(float(np.max(np.abs(output_vectors))), 1.0))


def output_diversity(outputs: np.ndarray, targets: np.ndarray, max_examples: int = 256) -> dict[str, float]:
  """{"output_diversity", "nearest_target_share", "own_target_share", "diversity_examples"} of `outputs`
  against their `targets` (same shapes, N ≥ 2 examples); own_target_share's chance level is
  1 / diversity_examples, the examples measured (min(N, max_examples))."""
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
  own = float(np.mean(own_target_matches(output_vectors, target_vectors)))
  return {"output_diversity": float(ratio), "nearest_target_share": share, "own_target_share": own,
          "diversity_examples": count}
