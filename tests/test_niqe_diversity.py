"""NIQE against basicsr's own value, and output diversity's collapse figures."""

import numpy as np
import pytest

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
  assert faithful == {"output_diversity": pytest.approx(1.0), "nearest_target_share": pytest.approx(1 / 40)}
  one_face = np.broadcast_to(targets[:1], targets.shape)   # a method whose output ignores its input
  collapsed = diversity.output_diversity(one_face, targets)
  assert collapsed["output_diversity"] == 0.0 and collapsed["nearest_target_share"] == 1.0


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
  assert "output_diversity" not in summary["target"] and np.isfinite(summary["target"]["niqe"])
  assert summary["other@5"] == {}   # a compared run: its images are not kept
