"""NIQE against basicsr's own value, and output diversity's collapse figures."""

import numpy as np
import pytest
from scipy import ndimage

from hallujax.metrics import diversity, niqe

# basicsr 1.4.2's calculate_niqe(astronaut[..., ::-1], crop_border=0) (it reads BGR), run on its own source
# (torch 2.13 CPU, scipy 1.17) when this file was written: 3.0649476661849033. Ours differs in the 4th
# decimal because basicsr's imresize accumulates in torch float32 and ours in float64.
BASICSR_ASTRONAUT_NIQE = 3.0649476661849033


def test_niqe_matches_basicsr_on_the_astronaut():
  data = pytest.importorskip("skimage.data")
  assert niqe.niqe(data.astronaut()) == pytest.approx(BASICSR_ASTRONAUT_NIQE, abs=1e-3)


def test_niqe_ranks_a_blurred_face_below_the_sharp_one_at_the_face_worlds_sizes():
  data = pytest.importorskip("skimage.data")
  sharp = data.astronaut()[::4, ::4]                                     # 128², enlarged to 192² inside
  blurred = np.repeat(np.repeat(sharp[::4, ::4], 4, axis=0), 4, axis=1)   # the same image, 4× blockier
  assert niqe.niqe(blurred) > niqe.niqe(sharp) + 1.0


def test_diversity_of_collapsed_and_faithful_outputs():
  targets = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
  faithful = diversity.output_diversity(targets, targets)
  assert faithful == {"output_diversity": pytest.approx(1.0), "nearest_target_share": pytest.approx(1 / 40),
                      "own_target_share": 1.0, "diversity_examples": 40}
  one_face = np.broadcast_to(targets[:1], targets.shape)   # a method whose output ignores its input
  collapsed = diversity.output_diversity(one_face, targets)
  assert collapsed["output_diversity"] == 0.0 and collapsed["nearest_target_share"] == 1.0
  assert collapsed["own_target_share"] == 0.0   # not even output 0, whose target it is: it varies with nothing


def smooth_images(count, side, seed=0):
  """uint8 random images whose neighbouring pixels are correlated, as in faces (white noise blurred, σ 2)."""
  fields = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((count, side, side, 3)), (0, 2, 2, 0))
  return np.round((fields - fields.min()) / (fields.max() - fields.min()) * 255).astype(np.uint8)


def test_own_target_share_tells_outputs_that_read_their_input_from_noise_and_from_one_face():
  targets = smooth_images(64, 16)
  values = targets.astype(np.float64)
  mean, spread = np.mean(values, axis=0), np.std(values, axis=0)
  as_uint8 = lambda images: np.round(np.clip(images, 0, 255)).astype(np.uint8)
  noise = as_uint8(mean + spread * np.random.default_rng(1).standard_normal(values.shape))
  blurred = as_uint8(ndimage.gaussian_filter(values, (0, 1, 1, 0)))
  # The L1-best guess of an uncertain target: its blurred input-specific part, shrunk toward the mean face.
  conditional_mean = as_uint8(mean + 0.2 * (ndimage.gaussian_filter(values, (0, 1, 1, 0)) - mean))
  one_face = np.broadcast_to(targets[5:6], targets.shape)
  figures = {name: diversity.output_diversity(images, targets) for name, images in
             (("noise", noise), ("blurred", blurred), ("conditional mean", conditional_mean), ("one face", one_face))}
  # Noise is as varied as the targets, yet matches its own target about as often as chance (1/64) ...
  assert figures["noise"]["output_diversity"] > 0.9 and figures["noise"]["own_target_share"] <= 3 / 64
  # ... while outputs that read their input match their own, however much they shrink toward the mean face
  # (by RMS distance, a shrunk output is nearest the target nearest the mean face, not its own).
  assert figures["blurred"]["own_target_share"] == 1.0
  shrunk = figures["conditional mean"]
  assert shrunk["output_diversity"] < 0.25 and shrunk["own_target_share"] == 1.0
  assert figures["one face"]["own_target_share"] == 0.0


def test_own_target_share_ignores_an_offset_shared_by_every_output():
  """A colour cast, or a cross-spectral input's other brightness, moves every output alike: what varies across
  the outputs still follows the inputs."""
  targets = smooth_images(32, 16)
  cast = np.round(np.clip(targets.astype(np.float64) * [0.5, 0.9, 0.6] + [90, 10, 70], 0, 255)).astype(np.uint8)
  assert diversity.output_diversity(cast, targets)["own_target_share"] == 1.0
  shuffled = cast[np.random.default_rng(0).permutation(32)]   # each output another input's: right images, wrong order
  assert diversity.output_diversity(shuffled, targets)["own_target_share"] <= 2 / 32


def test_evaluate_scores_each_column_against_the_targets_and_flags_a_constant_one():
  from hallujax import scoring
  rng = np.random.default_rng(1)
  targets = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
  kept = {"target": targets, "output": np.broadcast_to(targets[:1], targets.shape),   # ignores its input
          "coarse": targets, "input": targets[..., :1]}                                 # grey, as PCFH's NIR
  summary = {"run": {}, "run:coarse": {}, "input": {}, "target": {}, "other@5": {}}
  scoring.image_figures(summary, kept, "run", niqe_examples=2)
  assert summary["run"]["output_diversity"] == 0.0 and summary["run"]["nearest_target_share"] == 1.0
  assert summary["run:coarse"]["output_diversity"] == pytest.approx(1.0)
  assert 0.0 < summary["input"]["output_diversity"] < 1.0   # the grey copy, spread over 3 channels
  assert summary["run"]["own_target_share"] == 0.0 and summary["run:coarse"]["own_target_share"] == 1.0
  assert summary["input"]["own_target_share"] == 1.0   # the grey copy still varies as its own target does
  assert "output_diversity" not in summary["target"] and np.isfinite(summary["target"]["niqe"])
  assert summary["other@5"] == {}   # a compared run: its images are not kept
